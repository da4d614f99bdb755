#!/usr/bin/env python3
"""Runs one libFuzzer target over its committed corpus (make fuzz, and make test's bounded run).
New inputs go to a scratch dir, never into the committed corpus; a crash stops the run, and the
reproducer's path is printed."""
import argparse
import os
import re
import shutil
import subprocess
import sys

# Longest input each target is given. The YAML targets parse several times per input under ASan,
# at a cost that grows with the input: config files and manifests that exercise every rule fit
# in these (a Deployment with its ebb sidecar is 2-3 KB), and a larger seed is cut to the limit.
MAX_LEN = {"config": 2048, "k8s": 4096, "inject": 4096, "request": 4096, "response": 4096, "websocket": 4096, "h2": 4096}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    # make test: the corpus replayed, then a fixed number of mutations from a fixed seed, so the
    # result never depends on luck or on the machine's speed (a random search for N seconds in CI
    # would fail it at random); `make fuzz` does the open-ended searching.
    ap.add_argument("--runs", type=int, help="a bounded, repeatable run: this many executions")
    ap.add_argument("--seed", type=int, default=1, help="the mutation seed of a --runs run")
    ap.add_argument("--scratch", required=True, help="dir for new corpus entries and crash files")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("target")
    ap.add_argument("corpus")
    a = ap.parse_args()

    name = os.path.basename(a.target)
    new = os.path.join(a.scratch, name, "corpus")
    crashes = os.path.join(a.scratch, name, "crashes") + "/"
    if a.runs is not None:
        # The scratch corpus is read too: a bounded run starts from the committed corpus alone,
        # or the next run would not repeat this one.
        shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    if not os.path.isdir(a.corpus) or not os.listdir(a.corpus):
        print(f"{name}: no seed corpus at {a.corpus}", file=sys.stderr)
        return 2
    short = re.sub(r"^fuzz_", "", name)
    # The first corpus dir receives the new inputs: the scratch one.
    cmd = [a.target, new, a.corpus, f"-artifact_prefix={crashes}", "-timeout=10", "-rss_limit_mb=2048",
           "-print_final_stats=1"]
    if short in MAX_LEN:
        cmd.append(f"-max_len={MAX_LEN[short]}")
    if a.runs is not None:
        # Repeatable only if nothing but the seed steers the mutations: no reloading of the corpus
        # dirs on a timer, and the same addresses (libFuzzer mutates with the values the code
        # compared, pointers included), so no address randomisation.
        cmd += [f"-runs={a.runs}", f"-seed={a.seed}", "-reload=0"]
        if shutil.which("setarch"):
            cmd = ["setarch", "-R"] + cmd
    else:
        cmd.append(f"-max_total_time={a.seconds}")
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
    how = f"seed {a.seed}" if a.runs is not None else f"in {a.seconds} s"
    rate = re.search(r"stat::average_exec_per_sec:\s*(\d+)", out)
    print(f"{name}: {execs} executions clean, {how}, {rate.group(1) if rate else '?'}/s (corpus {a.corpus})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
