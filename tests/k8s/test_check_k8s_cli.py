#!/usr/bin/env python3
# `ebb check-k8s` through the real binary on the realistic fixtures: exit codes 0/1/2, a
# directory, stdin ("-"), a `kubectl get -o yaml` List piped in, and --json with its notes.
#
#   python3 tests/k8s/test_check_k8s_cli.py [BINARY]     (default: $EBB_BIN)
import json
import os

from k8s_util import Tally, ebb_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")


def main():
    binary = ebb_binary()
    t = Tally()

    def check_k8s(*args, stdin=None):
        return run([binary, "check-k8s", *args], stdin=stdin)

    shop = os.path.join(FIX, "shop")
    listing = os.path.join(FIX, "kubectl", "get-o-yaml.yaml")

    r = check_k8s(shop)
    t.expect("a directory of clean manifests: exit 0, 7 workloads",
           r.returncode == 0 and "ok: 7 workload(s)" in r.stdout, r)

    with open(listing) as f:
        text = f.read()
    r = check_k8s("-", stdin=text)
    t.expect("kubectl get -o yaml on stdin: exit 1, its findings named by object and path",
           r.returncode == 1 and
           "-: Deployment/checkout container server: spec.template.spec.containers[0]"
           ".lifecycle.preStop: no preStop drain" in r.stdout and
           "Service/checkout container server: spec.ports[0].targetPort" in r.stdout and
           "5 finding(s) in 1 workload(s)" in r.stdout, r)

    r = check_k8s("-", "--json", stdin=text)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    t.expect("--json: findings, notes and the workload count",
           r.returncode == 1 and doc is not None and len(doc["findings"]) == 5 and
           doc["workloads"] == 1 and
           any("built-in defaults" in n for n in doc["notes"]) and
           {f["rule"] for f in doc["findings"]} ==
           {"grace-period", "readiness-slow", "prestop-drain", "max-unavailable",
            "service-target"}, r)

    r = check_k8s(shop, "-", stdin=text)
    t.expect("a directory and stdin together: the List's findings, the shop still clean",
           r.returncode == 1 and "5 finding(s) in 8 workload(s)" in r.stdout, r)

    r = check_k8s("-", stdin="kind: Deployment\nspec: [unclosed\n")
    t.expect("broken YAML on stdin: exit 2, named", r.returncode == 2 and "check-k8s: -:" in r.stdout and
           "not valid YAML" in r.stdout, r)

    r = check_k8s(os.path.join(FIX, "no-such-dir") + "/")
    t.expect("a missing path: exit 2", r.returncode == 2, r)

    r = check_k8s(os.path.join(shop, "ad.json"), os.path.join(shop, "configmap.yaml"))
    t.expect("a JSON manifest: exit 0", r.returncode == 0 and "ok: 1 workload(s)" in r.stdout, r)

    t.finish()


if __name__ == "__main__":
    main()
