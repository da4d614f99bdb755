#!/usr/bin/env python3
# Every manifest in deploy/kubernetes/ passes `ebb check-k8s` with the real binary: all of them
# read together (the Services are matched against the Deployments, ebb's config is the mounted
# ConfigMap), and each one beside configmap.yaml, in both output formats.
#
#   python3 tests/k8s/test_check_deploy.py [BINARY]     (default: $EBB_BIN)
import glob
import json
import os
import sys

from k8s_util import Tally, ebb_binary, run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")


def main():
    binary = ebb_binary()
    t = Tally()

    def check_k8s(*args):
        return run([binary, "check-k8s", *args])
    manifests = sorted(glob.glob(os.path.join(DEPLOY, "*.yaml")))
    configmap = os.path.join(DEPLOY, "configmap.yaml")
    if len(manifests) < 5 or configmap not in manifests:
        print("FAIL: expected the five manifests in %s, found %s" % (DEPLOY, manifests))
        sys.exit(1)

    r = check_k8s(*manifests)
    # The three Deployments (the demo twice, the gRPC one) must have been recognised as running
    # ebb, or "clean" means nothing.
    t.expect("all manifests together", r.returncode == 0 and "ok: 3 workload(s)" in r.stdout, r)

    r = check_k8s(*manifests, "--json")
    try:
        parsed = json.loads(r.stdout)
    except ValueError:
        parsed = None
    t.expect("all manifests together, --json",
           r.returncode == 0 and parsed is not None and parsed["findings"] == [] and
           parsed["workloads"] == 3, r)

    for m in manifests:
        args = [m] if m == configmap else [m, configmap]
        r = check_k8s(*args)
        t.expect("%s (with configmap.yaml)" % os.path.relpath(m, ROOT), r.returncode == 0, r)

    t.finish()


if __name__ == "__main__":
    main()
