#!/usr/bin/env python3
"""Runs one libFuzzer target over its committed corpus for a while (make fuzz, and the short run
of make test). New inputs go to a scratch dir, never into the committed corpus; a crash stops the
run, and the reproducer's path is printed."""
import argparse
import os
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    # make test: run every committed corpus input once, no mutation, so the result never depends
    # on luck (a random search in CI would fail it at random); `make fuzz` does the searching.
    ap.add_argument("--replay", action="store_true")
    ap.add_argument("--scratch", required=True, help="dir for new corpus entries and crash files")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("target")
    ap.add_argument("corpus")
    a = ap.parse_args()

    name = os.path.basename(a.target)
    new = os.path.join(a.scratch, name, "corpus")
    crashes = os.path.join(a.scratch, name, "crashes") + "/"
    os.makedirs(new, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    if not os.path.isdir(a.corpus) or not os.listdir(a.corpus):
        print(f"{name}: no seed corpus at {a.corpus}", file=sys.stderr)
        return 2
    # The first corpus dir receives the new inputs: the scratch one.
    cmd = [a.target, new, a.corpus, f"-max_total_time={a.seconds}", f"-artifact_prefix={crashes}",
           "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]
    if a.replay:
        cmd = [a.target, a.corpus, "-runs=0", f"-artifact_prefix={crashes}", "-timeout=10", "-rss_limit_mb=2048",
               "-print_final_stats=1"]
    if a.jobs > 1:
        cmd += [f"-jobs={a.jobs}", f"-workers={a.jobs}"]
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    out = p.stdout
    runs = re.findall(r"^#(\d+)\s", out, re.M)
    done = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    execs = done.group(1) if done else (runs[-1] if runs else "?")
    if p.returncode != 0:
        sys.stdout.write(out[-20000:])
        m = re.search(r"Test unit written to (\S+)", out)
        where = m.group(1) if m else "(no reproducer written)"
        print(f"{name}: FAILED after {execs} executions (exit {p.returncode}); reproducer: {where}")
        print(f"  replay: {a.target} {where}")
        return 1
    how = "replayed" if a.replay else f"in {a.seconds} s"
    print(f"{name}: {execs} executions clean, {how} (corpus {a.corpus})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
