#!/usr/bin/env python3
"""The zero-downtime proof on a real Kubernetes 1.20 (built from Debian's sources): a single-node
cluster in a network namespace of its own, the project's deploy/kubernetes/ classic-sidecar
manifests with the seed's naive app, load against the Service's ClusterIP, N `kubectl rollout
restart`s, every failed request counted; a control without ebb must fail requests. Everything
it started is torn down at the end, on failure and on Ctrl-C too.

    k8s_proof.py [--restarts N] [--scenarios control-naive,ebb-classic] [--keep]
    k8s_proof.py --clean      (removes what a killed run left behind)"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import cluster as k8s  # noqa: E402
import images  # noqa: E402
from zd_procs import _wrap as with_pdeathsig  # noqa: E402  (children die with us, even on SIGKILL)

manifests = None
REPLICAS = 2
SCENARIOS = ("control-naive", "ebb-classic")
PHASES = []  # (name, seconds)


class Interrupted(Exception):
    pass


def phase(name, t0):
    PHASES.append((name, time.monotonic() - t0))
    k8s.log(f"phase {name}: {PHASES[-1][1]:.1f}s")


def build_cluster_binaries():
    """build-k8s.sh: Debian's packages and the 1.20 binaries (cached); returns their folder."""
    t0 = time.monotonic()
    subprocess.run(["bash", str(HERE / "build-k8s.sh")], check=True)
    phase("k8s-build", t0)
    cache = Path(os.environ.get("EBB_K8S_CACHE", "/var/cache/ebb-k8s"))
    return Path((cache / "current").read_text().strip())


class Load:
    """load.py in a child process (it inherits the cluster's network namespace from us)."""

    def __init__(self, ip, port, logdir, name):
        self.err = open(Path(logdir) / f"load-{name}.log", "w")
        self.proc = subprocess.Popen(with_pdeathsig([sys.executable, "-u", str(HERE / "load.py"), ip, str(port)]),
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.lines = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def _line(self, n, timeout, what):
        deadline = time.monotonic() + timeout
        while len(self.lines) < n:
            if self.proc.poll() is not None and len(self.lines) < n:
                self._t.join(2)
                if len(self.lines) >= n:
                    break
                raise RuntimeError(f"load exited ({self.proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"load: no {what} within {timeout}s")
            time.sleep(0.05)  # the reader thread appends; nothing else to wait on
        return json.loads(self.lines[n - 1])

    def wait_busy(self):
        busy = self._line(1, 90, "busy line")
        if not busy["busy"]:
            raise RuntimeError(f"the load never got answers from the Service: {busy}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        summary = self._line(2, 60, "summary")
        self.proc.wait(10)
        self.err.close()
        return summary

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class PodLogs:
    """Follows ebb's log in every pod of a namespace (`kubectl logs -f`, one child per pod) so that
    what each pod said during its drain outlives the pod: how the drain started (the preStop
    hook's admin call, or SIGTERM), what it drained and cut."""

    def __init__(self, cl, ns, container, outdir):
        self.cl, self.ns, self.container = cl, ns, container
        self.dir = Path(outdir) / f"pods-{ns}"
        self.dir.mkdir()
        self.procs = {}

    def follow_new(self):
        for p in pods(self.cl, self.ns):
            name = p["metadata"]["name"]
            if name in self.procs or p["metadata"].get("deletionTimestamp"):
                continue
            out = open(self.dir / f"{name}.log", "w")
            self.procs[name] = (subprocess.Popen(with_pdeathsig(
                [str(self.cl.bin / "kubectl"), "--kubeconfig", str(self.cl.kubeconfig), "-n", self.ns,
                 "logs", "-f", name, "-c", self.container]), stdout=out, stderr=subprocess.STDOUT), out)

    def stop(self):
        for proc, out in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            out.close()

    def drains(self):
        """{"pods": n that drained, "triggers": {trigger: n}, "refused": n, "drained": requests,
        "cut": requests} from the logs of the pods that drained."""
        d = {"pods": 0, "triggers": {}, "refused": 0, "drained": 0, "cut": 0}
        for f in self.dir.glob("*.log"):
            for line in f.read_text(errors="replace").splitlines():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                msg = e.get("msg")
                if msg == "drain started":
                    d["pods"] += 1
                    d["triggers"][e.get("trigger")] = d["triggers"].get(e.get("trigger"), 0) + 1
                elif msg == "drain refused":
                    d["refused"] += 1
                elif msg == "drained":
                    d["drained"] += int(e.get("requests", 0))
                    d["cut"] += int(e.get("cut", 0))
        return d


def pods(cl, ns):
    out = cl.kubectl("-n", ns, "get", "pods", "-o", "json", timeout=30).stdout
    return json.loads(out)["items"]


def run_scenario(cl, name, files, deployment, service, restarts, workdir, ebb):
    ns = f"proof-{name}"
    t0 = time.monotonic()
    cl.kubectl("create", "namespace", ns)
    for f in files:
        cl.kubectl("-n", ns, "apply", "-f", f)
    cl.kubectl("-n", ns, "rollout", "status", f"deployment/{deployment}", "--timeout=180s", timeout=200)
    ip = cl.kubectl("-n", ns, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    # The load starts once kube-proxy routes the Service to every ready pod: before that its
    # rules REJECT connections, which would count as failures of the deploy.
    k8s.wait_for("kube-proxy's rules for the Service", lambda: k8s.run(["iptables-save", "-t", "nat"]).stdout.count(
        f'--comment "{ns}/{service}:http" -m tcp -j DNAT') == REPLICAS, 60, interval=0.25)
    k8s.log(f"{name}: {deployment} ready, Service {service} at {ip}:80")
    phase(f"{name}:apply", t0)

    t0 = time.monotonic()
    logs = PodLogs(cl, ns, "ebb", workdir) if ebb else None
    load = Load(ip, 80, workdir, name)
    try:
        if logs:
            logs.follow_new()
        load.wait_busy()
        rollouts = []
        for i in range(restarts):
            t = time.monotonic()
            cl.kubectl("-n", ns, "rollout", "restart", f"deployment/{deployment}")
            k8s.log(f"{name}: restart {i + 1}/{restarts} at {time.strftime('%H:%M:%S', time.gmtime())}")
            cl.kubectl("-n", ns, "rollout", "status", f"deployment/{deployment}", "--timeout=300s", timeout=320)
            rollouts.append(time.monotonic() - t)
            if logs:
                logs.follow_new()
            cl.check_alive()
            k8s.log(f"{name}: restart {i + 1}/{restarts} rolled out in {rollouts[-1]:.1f}s")
        # The load goes on until every old pod is gone, drains included.
        t = time.monotonic()
        k8s.wait_for("old pods gone", lambda: (lambda ps: len(ps) == REPLICAS and not any(
            p["metadata"].get("deletionTimestamp") for p in ps))(pods(cl, ns)), 180, interval=0.5)
        settle = time.monotonic() - t
        summary = load.stop()
        (Path(workdir) / f"load-{name}.json").write_text(json.dumps(summary, indent=1))
    except BaseException:
        load.kill()
        raise
    finally:
        if logs:
            logs.stop()
    phase(f"{name}:restarts", t0)
    events = json.loads(cl.kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
    hooks = {}
    for e in events:
        if e.get("reason") in ("FailedPreStopHook", "Killing", "Unhealthy", "BackOff", "Failed"):
            hooks[e["reason"]] = hooks.get(e["reason"], 0) + e.get("count", 1)
    hook_msgs = sorted({e.get("message", "")[:160] for e in events if e.get("reason") == "FailedPreStopHook"})
    t0 = time.monotonic()
    cl.kubectl("-n", ns, "delete", "deployment", deployment, "--wait=true", timeout=120)
    # The ReplicaSets go in the background; until they are gone they would replace deleted pods.
    k8s.wait_for("ReplicaSets gone", lambda: not cl.kubectl(
        "-n", ns, "get", "replicasets", "-o", "name", timeout=30).stdout.strip(), 60)
    cl.kubectl("-n", ns, "delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=90s",
               timeout=120)
    phase(f"{name}:cleanup", t0)
    return {"name": name, "restarts": restarts, "summary": summary, "rollouts": rollouts,
            "settle": settle, "events": hooks, "hook_msgs": hook_msgs,
            "drains": logs.drains() if logs else None}


def report(r):
    s = r["summary"]
    kinds = " ".join(f"{k}={v}" for k, v in s["kinds"].items() if v)
    lines = [f"scenario={r['name']} restarts={r['restarts']} requests={s['requests']} failed={s['failed']}"
             + (f" {kinds}" if kinds else "")]
    ro = r["rollouts"]
    if ro:
        lines.append(f"  rollouts: min {min(ro):.1f}s median {statistics.median(ro):.1f}s max {max(ro):.1f}s; "
                     f"old pods gone {r['settle']:.1f}s after the last")
    ka = s["keepalive"]
    lines.append(f"  keep-alive: {ka['requests']} requests ({ka['reused']} on a reused connection), "
                 f"{ka['failed']} failed, {ka['announced']} answers announced a close, "
                 f"{ka['closed_by_server']} idle connections closed by the server; "
                 f"new-connection: {s['newconn']['requests']} requests, {s['newconn']['failed']} failed")
    if r["drains"]:
        d = r["drains"]
        lines.append(f"  ebb: {d['pods']} drains started by " + (", ".join(
            f"{k} {v}" for k, v in sorted(d["triggers"].items())) or "nothing")
            + f"; {d['refused']} drain calls refused; {d['drained']} requests drained, {d['cut']} cut")
    if r["events"]:
        lines.append("  events: " + " ".join(f"{k}={v}" for k, v in sorted(r["events"].items())))
    for m in r["hook_msgs"][:3]:
        lines.append(f"  preStop: {m}")
    for f in s["failures"][:8]:
        at = time.strftime("%H:%M:%S", time.gmtime(f["t"])) + f".{int(f['t'] * 1000) % 1000:03d}"
        lines.append(f"  failed: {at} {f['client']} {f['method']} {f['path'][:20]} after {f['end'] - f['t']:.3f}s "
                     f"{f['kind']} {f['detail'][:160]}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restarts", type=int, default=int(os.environ.get("EBB_K8S_RESTARTS", "10")))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--ebb-bin", default=os.environ.get("EBB_BIN", str(REPO / "build" / "ebb")))
    ap.add_argument("--keep", action="store_true", help="keep the logs folder")
    ap.add_argument("--clean", action="store_true", help="only remove what a killed run left behind")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("k8s_proof: needs root (network namespace, containerd, kubelet)")
    chosen = [s for s in a.scenarios.split(",") if s]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        sys.exit(f"k8s_proof: unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")

    def interrupt(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    if a.clean:
        problems = k8s.Cluster.clean()
        for p in problems:
            print(f"k8s_proof --clean: {p}")
        sys.exit(1 if problems else 0)

    total = time.monotonic()
    ebb_bin = Path(a.ebb_bin).resolve()
    if not ebb_bin.is_file():
        sys.exit(f"k8s_proof: no ebb binary at {ebb_bin} (make build)")
    bindir = build_cluster_binaries()
    global manifests
    import manifests  # needs PyYAML, which build-k8s.sh installs
    workdir = Path(tempfile.mkdtemp(prefix="ebb-k8s-proof-"))
    k8s.log(f"logs in {workdir}")
    t0 = time.monotonic()
    archives = images.build_all(workdir, ebb_bin)
    phase("images", t0)
    names = {"naive": images.NAIVE, "ebb": images.EBB}
    applied, diff = manifests.ebb_manifests(workdir, names, REPLICAS)
    print("deploy/kubernetes/ as applied (every change from the shipped files):\n" + diff, flush=True)

    # ebb check-k8s on exactly what is applied.
    t0 = time.monotonic()
    chk = subprocess.run([str(ebb_bin), "check-k8s", *map(str, applied)], capture_output=True, text=True)
    print(f"ebb check-k8s {' '.join(p.name for p in applied)}: exit {chk.returncode}\n"
          + (chk.stdout + chk.stderr).rstrip(), flush=True)
    phase("check-k8s", t0)

    results, error = [], None
    cl = k8s.Cluster(bindir, workdir, archives)
    try:
        t0 = time.monotonic()
        cl.up()
        phase("bring-up", t0)
        for name in chosen:
            if name == "control-naive":
                files = manifests.control_manifests(workdir, names, REPLICAS)
                r = run_scenario(cl, name, files, "control-naive", "control-naive", a.restarts, workdir, False)
            else:
                r = run_scenario(cl, name, applied, manifests.CLASSIC, "demo", a.restarts, workdir, True)
            results.append(r)
            print(report(r), flush=True)
    except (Exception, Interrupted) as e:
        error = e
        import traceback
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        t0 = time.monotonic()
        problems = cl.down()
        phase("teardown", t0)
        for p in problems:
            print(f"teardown: {p}", flush=True)

    print("\n== k8s-proof: Kubernetes v1.20.2 (Debian's sources), classic sidecar, "
          f"{REPLICAS} replicas, {a.restarts} rollout restarts ==")
    verdicts = []
    for r in results:
        print(report(r).splitlines()[0])
        failed = r["summary"]["failed"]
        if r["name"].startswith("control"):
            verdicts.append((r["name"], failed > 0, "the control must fail requests (else the load cannot see failures)"))
        else:
            verdicts.append((r["name"], failed == 0, "no request may fail with ebb"))
    verdicts.append(("check-k8s", chk.returncode == 0, "ebb check-k8s on the applied manifests"))
    verdicts.append(("teardown", not problems, "nothing left behind"))
    if error is not None:
        verdicts.append(("run", False, f"{type(error).__name__}: {error}"[:300]))
    print("phases: " + " ".join(f"{n}={s:.0f}s" for n, s in PHASES) + f" total={time.monotonic() - total:.0f}s")
    bad = [v for v in verdicts if not v[1]]
    for n, _, why in bad:
        print(f"FAIL {n}: {why}")
    if not a.keep and not bad:
        subprocess.run(["rm", "-rf", str(workdir)])
    else:
        print(f"logs kept in {workdir}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
