#!/usr/bin/env python3
# `ebb check-k8s` through the real binary on the realistic fixtures: exit codes 0/1/2, a
# directory, stdin ("-"), a `kubectl get -o yaml` List piped in, and --json with its notes.
#
#   python3 tests/k8s/test_check_k8s_cli.py [BINARY]     (default: $EBB_BIN)
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
failures = []
passes = 0


def check_k8s(binary, *args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
    return subprocess.run([binary, "check-k8s", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, env=env)


def expect(name, ok, r):
    global passes
    if ok:
        passes += 1
        print("ok   " + name)
    else:
        failures.append(name)
        print("FAIL %s\nexit %d\n%s%s" % (name, r.returncode, r.stdout, r.stderr))


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EBB_BIN", "")
    if not binary or not os.access(binary, os.X_OK):
        print("FAIL: no ebb binary (pass its path or set EBB_BIN)")
        sys.exit(1)
    shop = os.path.join(FIX, "shop")
    listing = os.path.join(FIX, "kubectl", "get-o-yaml.yaml")

    r = check_k8s(binary, shop)
    expect("a directory of clean manifests: exit 0, 7 workloads",
           r.returncode == 0 and "ok: 7 workload(s)" in r.stdout, r)

    with open(listing) as f:
        text = f.read()
    r = check_k8s(binary, "-", stdin=text)
    expect("kubectl get -o yaml on stdin: exit 1, its findings named by object and path",
           r.returncode == 1 and
           "-: Deployment/checkout container server: spec.template.spec.containers[0]"
           ".lifecycle.preStop: no preStop drain" in r.stdout and
           "Service/checkout container server: spec.ports[0].targetPort" in r.stdout and
           "5 finding(s) in 1 workload(s)" in r.stdout, r)

    r = check_k8s(binary, "-", "--json", stdin=text)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    expect("--json: findings, notes and the workload count",
           r.returncode == 1 and doc is not None and len(doc["findings"]) == 5 and
           doc["workloads"] == 1 and
           any("built-in defaults" in n for n in doc["notes"]) and
           {f["rule"] for f in doc["findings"]} ==
           {"grace-period", "readiness-slow", "prestop-drain", "max-unavailable",
            "service-target"}, r)

    r = check_k8s(binary, shop, "-", stdin=text)
    expect("a directory and stdin together: the List's findings, the shop still clean",
           r.returncode == 1 and "5 finding(s) in 8 workload(s)" in r.stdout, r)

    r = check_k8s(binary, "-", stdin="kind: Deployment\nspec: [unclosed\n")
    expect("broken YAML on stdin: exit 2, named", r.returncode == 2 and "check-k8s: -:" in r.stdout and
           "not valid YAML" in r.stdout, r)

    r = check_k8s(binary, os.path.join(FIX, "no-such-dir") + "/")
    expect("a missing path: exit 2", r.returncode == 2, r)

    r = check_k8s(binary, os.path.join(shop, "ad.json"), os.path.join(shop, "configmap.yaml"))
    expect("a JSON manifest: exit 0", r.returncode == 0 and "ok: 1 workload(s)" in r.stdout, r)

    print("%d passed, %d failed" % (passes, len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
