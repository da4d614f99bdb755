#!/usr/bin/env python3
# Every manifest in deploy/kubernetes/ passes `ebb check-k8s` with the real binary: all of them
# read together (the Services are matched against the Deployments, ebb's config is the mounted
# ConfigMap), and each one beside configmap.yaml, in both output formats.
#
#   python3 tests/k8s/test_check_deploy.py [BINARY]     (default: $EBB_BIN)
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
failures = []
passes = 0


def check_k8s(binary, *args):
    # A clean environment: an EBB_* variable of the caller must not change the verdict.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
    return subprocess.run([binary, "check-k8s", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def expect(name, ok, detail):
    global passes
    if ok:
        passes += 1
        print("ok   " + name)
    else:
        failures.append(name)
        print("FAIL " + name + "\n" + detail)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EBB_BIN", "")
    if not binary or not os.access(binary, os.X_OK):
        print("FAIL: no ebb binary (pass its path or set EBB_BIN)")
        sys.exit(1)
    manifests = sorted(glob.glob(os.path.join(DEPLOY, "*.yaml")))
    configmap = os.path.join(DEPLOY, "configmap.yaml")
    if len(manifests) < 5 or configmap not in manifests:
        print("FAIL: expected the five manifests in %s, found %s" % (DEPLOY, manifests))
        sys.exit(1)

    r = check_k8s(binary, *manifests)
    # Both Deployments must have been recognised as running ebb, or "clean" means nothing.
    expect("all manifests together", r.returncode == 0 and "ok: 2 workload(s)" in r.stdout,
           "exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr))

    r = check_k8s(binary, *manifests, "--json")
    try:
        parsed = json.loads(r.stdout)
    except ValueError:
        parsed = None
    expect("all manifests together, --json",
           r.returncode == 0 and parsed is not None and parsed["findings"] == [] and
           parsed["workloads"] == 2,
           "exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr))

    for m in manifests:
        args = [m] if m == configmap else [m, configmap]
        r = check_k8s(binary, *args)
        expect("%s (with configmap.yaml)" % os.path.relpath(m, ROOT), r.returncode == 0,
               "exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr))

    print("%d passed, %d failed" % (passes, len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
