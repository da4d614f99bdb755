#!/usr/bin/env python3
# `ebb inject` through the real binary on plain app manifests (tests/k8s/fixtures/inject/): its
# output passes `ebb check-k8s` (exit 0) and the strict schema test (validate.js), classic and
# --native; injecting the output again changes nothing byte for byte; stdin; --config's token
# and timing reach the pod; exit 2 for unreadable input and usage errors.
#
#   python3 tests/k8s/test_inject.py [BINARY]     (default: $EBB_BIN)
import glob
import os
import shutil
import sys
import tempfile

from k8s_util import Tally, ebb_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures", "inject")


def main():
    binary = ebb_binary()
    t = Tally()
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        print("FAIL: no node (make deps)")
        sys.exit(1)
    fixtures = sorted(glob.glob(os.path.join(FIX, "*.yaml")) + glob.glob(os.path.join(FIX, "*.json")))
    fixtures.append(os.path.join(HERE, "..", "..", "deploy", "examples", "app.yaml"))  # README's
    if len(fixtures) < 5:
        print("FAIL: expected the inject fixtures in %s" % FIX)
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="ebb-test-inject-")
    try:
        for f in fixtures:
            for extra in ([], ["--native"]):
                name = os.path.basename(f) + (" " + extra[0] if extra else "")
                before = run([binary, "check-k8s", f])
                once = run([binary, "inject", f, *extra])
                t.expect(name + ": inject exits 0", once.returncode == 0 and once.stdout, once)
                out = os.path.join(tmp, "out.yaml")
                with open(out, "w") as fh:
                    fh.write(once.stdout)
                r = run([binary, "check-k8s", out])
                t.expect(name + ": check-k8s passes on the output (and saw no ebb before)",
                       r.returncode == 0 and "ok: 1 workload(s)" in r.stdout and
                       "ok: 0 workload(s)" in before.stdout, r)
                r = run([node, os.path.join(HERE, "validate.js"), out])
                t.expect(name + ": strict schema", r.returncode == 0, r)
                twice = run([binary, "inject", "-", *extra], stdin=once.stdout)
                t.expect(name + ": injecting the output (from stdin) changes nothing",
                       twice.returncode == 0 and twice.stdout == once.stdout, twice)

        cfg = os.path.join(tmp, "ebb.yaml")
        with open(cfg, "w") as fh:
            fh.write("admin: {drain_token: s3cret}\nshutdown: {propagation_max: 20s, drain_timeout: 40s}\n")
        r = run([binary, "inject", os.path.join(FIX, "catalog-rollout.yaml"), "--config", cfg,
                 "--image", "registry.example.com/ebb:1.2.3"])
        t.expect("--config: token in the hook and ebb's env, grace 65s, --image",
               r.returncode == 0 and "path: \"/drain?wait=true&token=s3cret\"" in r.stdout and
               "{name: EBB_ADMIN_DRAIN_TOKEN, value: s3cret}" in r.stdout and
               "terminationGracePeriodSeconds: 65" in r.stdout and
               "image: registry.example.com/ebb:1.2.3" in r.stdout and
               "generated" not in r.stderr, r)
        r = run([binary, "inject", os.path.join(FIX, "catalog-rollout.yaml")])
        t.expect("no token configured: one is generated and said so",
               r.returncode == 0 and "generated one" in r.stderr, r)

        r = run([binary, "inject", "-"], stdin="kind: Deployment\nspec: [unclosed\n")
        t.expect("broken YAML: exit 2", r.returncode == 2 and "not valid YAML" in r.stderr, r)
        r = run([binary, "inject", os.path.join(FIX, "no-such.yaml")])
        t.expect("missing file: exit 2", r.returncode == 2 and "cannot read" in r.stderr, r)
        r = run([binary, "inject", FIX])
        t.expect("a directory: exit 2", r.returncode == 2 and "is a directory" in r.stderr, r)
        r = run([binary, "inject", "--frobnicate"])
        t.expect("unknown option: exit 2", r.returncode == 2, r)
        r = run([binary, "inject", os.path.join(FIX, "catalog-rollout.yaml"), "--config",
                 os.path.join(HERE, "fixtures", "config", "ebb-bad.yaml")])
        t.expect("invalid config: exit 2", r.returncode == 2 and "drain_timeout" in r.stderr, r)
        r = run([binary, "--help"])
        t.expect("--help lists inject", r.returncode == 0 and "ebb inject" in r.stdout, r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
