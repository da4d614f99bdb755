"""The manifests the proof applies: deploy/kubernetes/ as shipped, with only what a local,
pull-less, 2-replica run must change, patched line by line (so the diff shows every change and
anything else in deploy/ reaches the cluster as it is), plus the no-ebb control of our own."""

import difflib
import re
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent.parent / "deploy" / "kubernetes"
# Applied as shipped apart from the patches below. Not applied: deployment-native.yaml (native
# sidecars need 1.28+) and pdb.yaml (policy/v1 needs 1.21+; a rollout does not consult it).
SHIPPED = ["configmap.yaml", "deployment-classic.yaml", "service.yaml"]
CLASSIC = "demo-classic"


def _replace_line(lines, pattern, new, what):
    hits = [i for i, l in enumerate(lines) if re.fullmatch(pattern, l)]
    if len(hits) != 1:
        raise RuntimeError(f"deploy/ changed: expected one line for {what} ({pattern!r}), found {len(hits)}")
    i = hits[0]
    indent = re.match(r"\s*(- )?", lines[i]).group(0).replace("- ", "  ")
    lines[i:i + 1] = [re.match(r"\s*(- )?", lines[i]).group(0) + new[0]] + [indent + n for n in new[1:]]


def patch_classic(text, images, replicas):
    """deployment-classic.yaml for this cluster: local images that are never pulled, the naive
    app's own flag for the address the demo app's args give, and `replicas`."""
    doc = yaml.safe_load(text)
    containers = {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}
    app, ebb = containers["app"], containers["ebb"]
    listen = [a for a in app.get("args", []) if a.startswith("-listen=")]
    if len(listen) != 1:
        raise RuntimeError(f"deploy/ changed: the app's args {app.get('args')} give no -listen= address")
    lines = text.splitlines()
    for c, image in ((app, images["naive"]), (ebb, images["ebb"])):
        _replace_line(lines, r"\s*(- )?image: " + re.escape(c["image"]) + r"(\s+#.*)?",
                      [f"image: {image}", "imagePullPolicy: Never"], f"{c['name']}'s image")
    # http-echo's flags (-listen, -text) -> the naive app's (-addr).
    _replace_line(lines, r"\s*args: \[.*" + re.escape(listen[0]) + r".*\]",
                  [f'args: ["-addr={listen[0].split("=", 1)[1]}"]'], "the app's args")
    _replace_line(lines, r"\s*replicas: \d+", [f"replicas: {replicas}"], "replicas")
    return "\n".join(lines) + "\n"


def ebb_manifests(outdir, images, replicas):
    """Writes the manifests to apply into outdir; returns (paths, unified diff against deploy/)."""
    out, diff = [], []
    for name in SHIPPED:
        src = (DEPLOY / name).read_text()
        text = patch_classic(src, images, replicas) if name == "deployment-classic.yaml" else src
        p = Path(outdir) / name
        p.write_text(text)
        out.append(p)
        diff += difflib.unified_diff(src.splitlines(), text.splitlines(), f"deploy/kubernetes/{name}",
                                     f"applied/{name}", lineterm="", n=1)
    return out, "\n".join(diff)


def control_manifests(outdir, images, replicas):
    """The negative control: the same naive app, the same rollout strategy and grace period, no
    ebb: the Service targets the app, whose readiness probe is its own `/`."""
    shipped = yaml.safe_load((DEPLOY / "deployment-classic.yaml").read_text())["spec"]
    text = f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: control-naive
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: control-naive}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {shipped['strategy']['rollingUpdate']['maxSurge']}, maxUnavailable: {shipped['strategy']['rollingUpdate']['maxUnavailable']}}}
  template:
    metadata:
      labels: {{app: control-naive}}
    spec:
      terminationGracePeriodSeconds: {shipped['template']['spec']['terminationGracePeriodSeconds']}
      containers:
        - name: app
          image: {images['naive']}
          imagePullPolicy: Never
          args: ["-addr=0.0.0.0:3000"]
          ports: [{{name: http, containerPort: 3000}}]
          readinessProbe:
            httpGet: {{path: /, port: http}}
            periodSeconds: 1
            failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: control-naive
spec:
  selector: {{app: control-naive}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""
    p = Path(outdir) / "control-naive.yaml"
    p.write_text(text)
    return [p]
