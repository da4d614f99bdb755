#!/usr/bin/env python3
# `ebb check-k8s` through the real binary on the realistic fixtures: exit codes 0/1/2, a
# directory, stdin ("-"), a `kubectl get -o yaml` List piped in, and --json with its notes; and
# aliases kubectl refuses (a cycle, plain or through a merge key; aliases repeating a huge tree;
# absurd nesting) refused with file:line and the key, by check-k8s and inject alike.
#
#   python3 tests/k8s/test_check_k8s_cli.py [BINARY]     (default: $EBB_BIN)
import json
import os
import tempfile

from k8s_util import Tally, ebb_binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")


def with_line_after(text, anchor_line, new_line):
    """`text` with `new_line` inserted after the line `anchor_line`, and the new line's number."""
    lines = text.splitlines(keepends=True)
    at = lines.index(anchor_line) + 1
    lines.insert(at, new_line)
    return "".join(lines), at + 1


def check_aliases(t, binary, check_k8s):
    with open(os.path.join(FIX, "shop", "helm-recommendation.yaml")) as f:
        helm = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        def write(name, text):
            path = os.path.join(tmp, name)
            with open(path, "w") as fh:
                fh.write(text)
            return path

        # The Helm output, its probe anchor now merging itself: yaml-cpp builds the cycle.
        text, line = with_line_after(helm, "          startupProbe: &ebbprobe\n", "            <<: *ebbprobe\n")
        cyc = write("merge-cycle.yaml", text)
        r = check_k8s(cyc)
        t.expect("a merge key inside the map it merges: exit 2, file:line and the key",
                 r.returncode == 2 and "%s:%d:" % (cyc, line) in r.stdout and
                 "key spec.template.spec.containers[1].startupProbe.<<:" in r.stdout and
                 "alias cycle" in r.stdout, r)
        r = run([binary, "inject", cyc])
        t.expect("inject refuses the same cycle the same way",
                 r.returncode == 2 and "%s:%d:" % (cyc, line) in r.stderr and "alias cycle" in r.stderr and
                 r.stdout == "", r)

        text, line = with_line_after(helm, "  labels: &labels\n", "    again: *labels\n")
        plain = write("alias-cycle.yaml", text)
        r = check_k8s(plain)
        t.expect("a plain alias inside the map it names: exit 2, file:line and the key",
                 r.returncode == 2 and "%s:%d:" % (plain, line) in r.stdout and
                 "key metadata.labels.again:" in r.stdout and "alias cycle" in r.stdout, r)

        # Ten levels of ten aliases: 10^10 nodes once expanded, a few hundred bytes written.
        laughs = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\nl0: &l0 [lol]\n"
        for i in range(1, 11):
            laughs += "l%d: &l%d [%s]\n" % (i, i, ", ".join(["*l%d" % (i - 1)] * 10))
        r = check_k8s(write("laughs.yaml", laughs))
        t.expect("aliases repeating a huge tree: exit 2, said so",
                 r.returncode == 2 and "laughs.yaml:" in r.stdout and "aliases repeat more than" in r.stdout, r)

        # yaml-cpp stops nesting at its own limit as it parses, but aliases nest without one:
        # six anchors of 100 levels, each holding the one before, make 600.
        deep = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nd0: &d0 leaf\n"
        for i in range(1, 7):
            deep += "d%d: &d%d %s*d%d%s\n" % (i, i, "[" * 100, i - 1, "]" * 100)
        r = check_k8s(write("deep.yaml", deep))
        t.expect("600 levels of nesting through aliases: exit 2, said so",
                 r.returncode == 2 and "deep.yaml:" in r.stdout and "nested more than 512 levels deep" in r.stdout, r)

        flat = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata: " + "[" * 600 + "]" * 600 + "\n"
        r = check_k8s(write("flat-deep.yaml", flat))
        t.expect("600 levels of nesting as written: exit 2, said so (yaml-cpp's limit, not 'bad file')",
                 r.returncode == 2 and "flat-deep.yaml:4:" in r.stdout and "nested more than 499 levels deep" in r.stdout, r)

        # Merges that share maps but make no cycle still read: the shop's Helm output as it is.
        r = check_k8s(write("helm.yaml", helm), os.path.join(FIX, "shop", "configmap.yaml"))
        t.expect("the same Helm output without the cycle: exit 0", r.returncode == 0 and "ok: 1 workload(s)" in r.stdout, r)


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

    check_aliases(t, binary, check_k8s)

    t.finish()


if __name__ == "__main__":
    main()
