"""A rolling deploy under load, as a Deployment with replicas 2, maxSurge 1, maxUnavailable 0
does it: start a new pod, wait until the balancer has seen it pass /readyz (and minReadySeconds),
then delete the oldest pod the way the kubelet does. Like the Deployment controller, the rollout
does not wait for a terminating pod to be gone before it goes on; the kubelet's work on each
deleted pod runs on its own thread.

Run by hand: python3 zd_rollout.py [--restarts N] [--keep] [SCENARIO ...]"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from zd_balancer import Balancer
from zd_load import KINDS, GrpcLoad, KeepAliveClient, MixClient, Wrk
from zd_procs import HERE, Pod, build_apps, child_env

REPLICAS = 2
MIN_READY_SECONDS = 1.0  # the Deployment's minReadySeconds: a new pod serves a while before an old one goes
READY_TIMEOUT = 15.0

# ebb's shutdown settings in the ebb scenarios (zd_procs.Pod writes them into each pod's config).
PROPAGATION_MAX = 3
DRAIN_TIMEOUT = 10
# terminationGracePeriodSeconds: what `ebb check-k8s` asks for, propagation_max + drain_timeout + 5s.
GRACE_SECONDS = PROPAGATION_MAX + DRAIN_TIMEOUT + 5
# The graceful app keeps serving after SIGTERM for longer than ebb's propagation phase can last.
GRACEFUL_ARGS = ["-keep-serving", f"{PROPAGATION_MAX + 1}s", "-shutdown-timeout", f"{DRAIN_TIMEOUT}s"]


@dataclass
class Scenario:
    name: str
    app: str                 # "naive", "graceful" (Go), "splitwrite" (Python http.server) or "grpc"
    ebb: bool                # ebb in front of the app
    prestop: bool            # the app container's preStop httpGet /drain?wait=true
    control: bool = False    # a negative control: must show errors
    classic_sidecar: bool = False  # ebb gets SIGTERM when deletion starts, beside the app's preStop
    check_interval_ms: int = 200   # the balancer's health-check interval
    check_fall: int = 1            # failed checks before the balancer stops sending new connections
    ebb_shutdown: dict = field(default_factory=dict)
    # A control that must show failures in the keep-alive client itself, not only in wrk: proof
    # that this client sees a keep-alive request lost in flight.
    control_keepalive: bool = False
    ebb_extra: dict = field(default_factory=dict)  # more top-level ebb config keys
    # A gRPC control that must show a failed unary call and a cut stream both: proof that the
    # clients see each kind of RPC lost.
    control_grpc_kinds: bool = False

    @property
    def grpc(self):
        return self.app == "grpc"


SCENARIOS = [
    Scenario("control-naive-direct", "naive", ebb=False, prestop=False, control=True),
    Scenario("naive-prestop", "naive", ebb=True, prestop=True),
    Scenario("graceful-prestop", "graceful", ebb=True, prestop=True),
    Scenario("graceful-no-prestop", "graceful", ebb=True, prestop=False),
    # deploy/kubernetes' classic sidecar: ebb's container has no hook and is signalled at once.
    Scenario("naive-prestop-classic-sidecar", "naive", ebb=True, prestop=True, classic_sidecar=True),
    # ebb with no propagation and no drain: the harness must see drops through ebb too.
    Scenario("control-ebb-nodrain", "naive", ebb=True, prestop=False, control=True,
             ebb_shutdown={"propagation_delay": "0s", "quiet_period": "0s", "propagation_max": "0s",
                           "drain_timeout": "0s"}),
    # An app as frameworks behave (head and body in separate writes, 1-200 ms, chunked streams,
    # closes some keep-alive connections itself), naive on SIGTERM like the seed's Go app.
    Scenario("control-splitwrite-direct", "splitwrite", ebb=False, prestop=False, control=True,
             control_keepalive=True),
    Scenario("splitwrite-prestop", "splitwrite", ebb=True, prestop=True),
    Scenario("splitwrite-prestop-classic-sidecar", "splitwrite", ebb=True, prestop=True,
             classic_sidecar=True),
    # gRPC: unary RPCs on long-lived channels and long server streams, to a gRPC app that exits at
    # SIGTERM. Its channels keep one HTTP/2 connection each and move only on GOAWAY or a broken
    # connection; the balancer checks the app with a TCP connect when there is no ebb.
    Scenario("control-grpc-direct", "grpc", ebb=False, prestop=False, control=True, control_grpc_kinds=True),
    Scenario("grpc-prestop", "grpc", ebb=True, prestop=True, ebb_extra={"upstream_protocol": "h2c"}),
    # splitwrite-prestop with four event loops in each ebb: one drain over all of them.
    Scenario("splitwrite-prestop-workers4", "splitwrite", ebb=True, prestop=True, ebb_extra={"workers": 4}),
]
# By hand only, both expected to drop: a naive app signalled while ebb still routes to it (what
# the seed warns of), and a balancer slower to notice /readyz than ebb's propagation_delay (every
# 1 s, 2 failures: up to 2-3 s), where the quiet period helps only while connections keep coming.
EXTRA = [Scenario("naive-no-prestop", "naive", ebb=True, prestop=False, control=True),
         Scenario("naive-prestop-slow-lb", "naive", ebb=True, prestop=True, control=True,
                  check_interval_ms=1000, check_fall=2)]
BY_NAME = {s.name: s for s in SCENARIOS + EXTRA}


@dataclass
class Result:
    scenario: Scenario
    restarts: int
    requests: int = 0
    kinds: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    wrk: dict = field(default_factory=dict)
    client_requests: int = 0
    keepalive: dict = field(default_factory=dict)
    grpc: dict = field(default_factory=dict)  # the gRPC clients' result
    unanswered_checked: int = 0  # deleted pods whose ebb's `drained` line said unanswered 0
    failures: list = field(default_factory=list)
    pods: list = field(default_factory=list)
    sessions: list = field(default_factory=list)
    t0: float = 0.0
    seconds: float = 0.0
    deploy_seconds: float = 0.0
    workdir: str = ""
    problems: list = field(default_factory=list)  # pod-level faults in ebb scenarios (SIGKILL, exit code)

    @property
    def errors(self):
        return sum(self.kinds.values())

    def control_blind_spots(self):
        """What a negative control failed to show (each makes it fail): no failure at all, or none
        in a client that must see its own kind of loss."""
        sc, out = self.scenario, []
        if self.errors == 0:
            out.append("the negative control dropped nothing, so this harness cannot see dropped requests")
        if sc.control_keepalive and self.keepalive["failed"] == 0:
            out.append("the keep-alive client saw no failure, so it cannot see a keep-alive request lost in flight")
        if sc.control_grpc_kinds:
            g = self.grpc
            if g["unary"] == g["unary_ok"]:
                out.append("no unary RPC failed, so the gRPC clients cannot see a unary call lost")
            if g["streams"] == g["streams_ok"]:
                out.append("no server stream was cut, so the gRPC clients cannot see a stream lost")
        return out

    def line(self):
        s = (f"scenario={self.scenario.name} restarts={self.restarts} requests={self.requests} "
             f"errors={self.errors}")
        if self.errors:
            s += " " + " ".join(f"{k}={v}" for k, v in self.kinds.items() if v)
        return s

    def details(self):
        w, g = self.wrk, self.grpc
        if g:
            lines = [f"  deploy {self.deploy_seconds:.1f}s of {self.seconds:.1f}s; gRPC: {g['unary']} unary RPCs on "
                     f"{g['unary_channels']} channels, {g['unary'] - g['unary_ok']} failed; {g['streams']} server "
                     f"streams of 2-6 s on {g['stream_workers']} channels, {g['streams'] - g['streams_ok']} "
                     f"failed, {g['messages']} messages; the channels made {g['connections']} connections"]
        else:
            lines = [f"  deploy {self.deploy_seconds:.1f}s of {self.seconds:.1f}s; wrk: {w.get('requests')} requests, connect {w.get('connect')} "
                     f"read {w.get('read')} write {w.get('write')} timeout {w.get('timeout')} "
                     f"non2xx {w.get('non2xx')}; client: {self.client_requests} requests, "
                     f"{len(self.failures) - self.keepalive.get('failed', 0)} failed"]
        k = self.keepalive
        if k:
            lines.append(f"  keep-alive client: {k['requests']} requests ({k['reused']} on a reused connection), "
                         f"{k['failed']} failed; {k['announced']} answers said Connection: close, "
                         f"{k['closed_by_server']} connections found closed before a send")
        drained = [p.prestop for p in self.pods if p.prestop]
        if drained:
            dr = sum(d.get("drained_requests", 0) for d in drained)
            cut = sum(d.get("cut_requests", 0) for d in drained)
            waited = max(d.get("seconds_waited", 0) for d in drained)
            lines.append(f"  preStop /drain?wait=true: {len(drained)} answered, drained_requests={dr} "
                         f"cut_requests={cut}, longest wait {waited}s")
        if self.scenario.ebb:
            lines.append(f"  ebb `drained` lines with unanswered 0: {self.unanswered_checked} of "
                         f"{max(0, len(self.pods) - REPLICAS)} deleted pods")
        aborts = sum(1 for s in self.sessions if s["ts"][0] in "SPRI")
        lines.append(f"  HAProxy: {len(self.sessions)} sessions, {aborts} ended on the server side or in HAProxy")
        inflight = [p.in_flight_at_delete for p in self.pods if p.in_flight_at_delete is not None]
        if inflight:
            lines.append(f"  ebb requests in flight when a pod was deleted: min {min(inflight)} "
                         f"max {max(inflight)}")
        label = "as a control should" if self.scenario.control else "PROBLEM"
        for p in self.problems[:5]:
            lines.append(f"  {label}: {p}")
        if len(self.problems) > 5:
            lines.append(f"  ... and {len(self.problems) - 5} more")
        return "\n".join(lines)

    def analysis(self, max_failures=25):
        """The evidence for failures: each failed client request with the pod HAProxy sent it to
        and how HAProxy saw the session end, the server-side session aborts, and pod timelines."""
        rel = lambda t: f"+{t - self.t0:7.3f}s"
        by_port = {}
        for s in self.sessions:
            by_port.setdefault(s["cport"], []).append(s)
        out = ["  failed client requests (sent, failed, kind, request, client port -> HAProxy session):"]
        for f in self.failures[:max_failures]:
            sess = [s for s in by_port.get(f["cport"], []) if abs(s["t"] - f["t"]) < 15]
            # A gRPC channel's connection carries many RPCs, and grpcio does not tell its port.
            where = "a gRPC channel's connection" if f["cport"] is None else ", ".join(f"{s['server']} ts={s['ts']} Tc={s['tc']} Tt={s['tt']} up={s['up']} down={s['down']}"
                              for s in sess) or "no session logged"
            out.append(f"    {rel(f['t'])} {rel(f['end'])} {f['kind']} {f['method']} {f['path']} port={f['cport']} -> {where}; "
                       f"{f['detail']}")
        if len(self.failures) > max_failures:
            out.append(f"    ... {len(self.failures) - max_failures} more")
        aborted = [s for s in self.sessions if s["ts"][0] in "SPRI"]
        counts = {}
        for s in aborted:
            counts[(s["server"], s["ts"])] = counts.get((s["server"], s["ts"]), 0) + 1
        out.append("  HAProxy sessions that ended on the server side or in HAProxy (server, state: count): "
                   + (", ".join(f"{k[0]} {k[1]}: {v}" for k, v in sorted(counts.items())) or "none"))
        for s in aborted[:10]:
            out.append(f"    accepted {rel(s['t'])} {s['server']} ts={s['ts']} Tc={s['tc']} Tt={s['tt']} "
                       f"up={s['up']} down={s['down']}")
        out.append("  pod timelines:")
        for p in self.pods:
            for t, text in p.events:
                out.append(f"    {rel(t)} {p.name}: {text}")
            for rec in p.ebb_log():
                if rec.get("msg") not in ("listening",) or rec.get("level") in ("warn", "error", "raw"):
                    fields = {k: v for k, v in rec.items() if k not in ("ts", "level", "msg")}
                    out.append(f"        ebb {rec.get('ts', '')} {rec.get('level')} {rec.get('msg')} {fields}")
        out.append(f"  logs kept in {self.workdir}")
        return "\n".join(out)


def run_scenario(sc, restarts, bins, ebb_bin, workdir):
    """Runs one scenario; returns its Result. Everything it starts is stopped by pid, always."""
    wd = Path(tempfile.mkdtemp(prefix=f"{sc.name}-", dir=workdir))
    res = Result(sc, restarts, workdir=str(wd))
    lb = Balancer(wd, check_interval_ms=sc.check_interval_ms, check_fall=sc.check_fall,
                  check="tcp" if sc.grpc and not sc.ebb else "http")
    deleting, counter = [], [0]
    load_wrk = load_client = load_ka = load_grpc = None

    def new_pod():
        counter[0] += 1
        pod = Pod(f"p{counter[0]}", wd, bins[sc.app],
                  GRACEFUL_ARGS if sc.app == "graceful" else [],
                  ebb_bin if sc.ebb else None, sc.ebb_shutdown, sc.ebb_extra)
        res.pods.append(pod)
        pod.start()
        lb.add(pod.name, pod.serve_port, pod.check_port)
        lb.wait_up(pod.name, READY_TIMEOUT)
        pod.event("UP in the balancer")
        return pod

    def kubelet_delete(pod):
        try:
            pod.delete(prestop=sc.prestop, grace=GRACE_SECONDS, classic_sidecar=sc.classic_sidecar)
        except Exception as e:  # noqa: BLE001 - reported with the result, not lost in a thread
            res.problems.append(f"deleting {pod.name}: {e!r}")
        finally:
            if not lb.remove(pod.name):
                pod.event("HAProxy refused to delete the server; left in maintenance")
            pod.event("removed from the balancer")

    try:
        res.t0 = time.time()
        lb.start()
        live = [new_pod() for _ in range(REPLICAS)]
        if sc.grpc:
            load_grpc = GrpcLoad(lb.port, wd)
            load_grpc.start()
            load_grpc.wait_busy(timeout=30)
        else:
            load_wrk = Wrk(f"http://127.0.0.1:{lb.port}/", wd)
            load_client = MixClient(lb.port)
            load_ka = KeepAliveClient(lb.port, stream=sc.app == "splitwrite")
            load_wrk.start()
            load_client.start()
            load_ka.start()
            load_client.wait_busy(completed=10, in_flight=load_client.slow_workers, timeout=15)
            load_ka.wait_busy(completed=10, in_flight=0, timeout=15)
        t_deploy = time.time()
        for _ in range(restarts):
            pod = new_pod()
            live.append(pod)
            # maxUnavailable 0: an old pod goes only while all the others are available.
            deadline = time.monotonic() + READY_TIMEOUT
            while not lb.all_up([p.name for p in live]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pods not all UP: {lb.servers()}")
                time.sleep(0.02)  # polling the balancer's view
            time.sleep(MIN_READY_SECONDS)  # minReadySeconds: the pacing of the rollout is the behaviour
            old = live.pop(0)
            t = threading.Thread(target=kubelet_delete, args=(old,), daemon=True)
            t.start()
            deleting.append(t)
        for t in deleting:
            t.join(GRACE_SECONDS + 30)
            if t.is_alive():
                raise RuntimeError("a pod deletion did not finish")
        res.deploy_seconds = time.time() - t_deploy
        if sc.grpc:
            res.grpc = load_grpc.stop()
        else:
            res.wrk = load_wrk.stop()
            load_client.stop()
            load_ka.stop()
    finally:
        # Stop everything by pid, whatever happened: load first, then pods, then the balancer.
        if load_wrk and load_wrk.proc:
            load_wrk.proc.stop(grace=5.0)
        if load_grpc and load_grpc.proc:
            load_grpc.proc.stop(grace=GrpcLoad.STOP_GRACE)
        for c in (load_client, load_ka):
            if c:
                try:
                    c.stop()
                except RuntimeError as e:
                    res.problems.append(str(e))
        for t in deleting:
            t.join(GRACE_SECONDS + 30)
        for pod in res.pods:
            pod.stop()
        lb.stop()
    res.seconds = time.time() - res.t0
    res.sessions = lb.sessions()
    if sc.grpc:
        # Failures by kind: the status code of an RPC that did not end OK, wrong_body, incomplete_stream.
        res.failures = res.grpc["failures"]
        res.kinds = dict(sorted(res.grpc["kinds"].items()))
        res.requests = res.grpc["unary"] + res.grpc["streams"]
    else:
        res.client_requests = load_client.requests
        res.keepalive = {"requests": load_ka.requests, "reused": load_ka.reused, "failed": len(load_ka.failures),
                         "announced": load_ka.announced, "closed_by_server": load_ka.closed_by_server}
        res.failures = sorted(load_client.failures + load_ka.failures, key=lambda f: f["t"])
        k = Wrk.kinds(res.wrk)
        for c in (load_client, load_ka):
            for name, v in c.kinds().items():
                k[name] += v
        res.kinds = k
        res.requests = res.wrk["requests"] + load_client.requests + load_ka.requests
    if sc.ebb:
        for pod in res.pods[:-REPLICAS]:  # the deleted ones; the last REPLICAS were stopped at the end
            for p in pod.procs():
                if p.killed:
                    res.problems.append(f"{p.name} needed SIGKILL after {GRACE_SECONDS}s")
            if pod.ebb and pod.ebb.popen.returncode != 0:
                res.problems.append(f"{pod.ebb.name} exited {pod.ebb.popen.returncode}")
            if pod.ebb:
                # ebb's own account of the drain: nothing it read went unanswered, whatever the cause.
                drained = [r for r in pod.ebb_log() if r.get("msg") == "drained"]
                if len(drained) != 1 or drained[0].get("unanswered") != 0:
                    res.problems.append(f"{pod.ebb.name}: `drained` lines {drained}, expected one with unanswered 0")
                else:
                    res.unanswered_checked += 1
            if sc.prestop and (not pod.prestop or pod.prestop.get("status") != 200):
                res.problems.append(f"{pod.name} preStop /drain?wait=true: {pod.prestop}")
    return res


def ebb_refusal(sc, ebb_bin):
    """ebb's own words if it refuses this scenario's extra config (`upstream_protocol: h2c`
    before ebb speaks HTTP/2 to apps), else None: such a scenario is reported as skipped."""
    if not sc.ebb or not sc.ebb_extra:
        return None
    with tempfile.TemporaryDirectory(prefix="ebb-zd-check-") as d:
        cfg = Path(d) / "ebb.yaml"
        cfg.write_text("listen: 127.0.0.1:0\nupstream: 127.0.0.1:1\n"
                       + "".join(f"{k}: {v}\n" for k, v in sc.ebb_extra.items()))
        r = subprocess.run([str(ebb_bin), "--check-config", "--config", str(cfg)], capture_output=True,
                           text=True, env=child_env(), timeout=30)
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")


def restarts_from_env():
    return int(os.environ.get("EBB_ZD_RESTARTS", "2"))


def ebb_bin_from_env():
    return Path(os.environ.get("EBB_BIN", HERE.parent.parent / "build" / "ebb"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restarts", type=int, default=restarts_from_env())
    ap.add_argument("--keep", action="store_true", help="keep the logs")
    ap.add_argument("scenarios", nargs="*", default=[s.name for s in SCENARIOS])
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="ebb-zd-")
    failed = False
    try:
        bins = build_apps(Path(workdir) / "bin")
        for name in args.scenarios:
            refused = ebb_refusal(BY_NAME[name], ebb_bin_from_env())
            if refused:
                print(f"scenario={name} SKIPPED: this ebb refuses its config: {refused}", flush=True)
                continue
            res = run_scenario(BY_NAME[name], args.restarts, bins, ebb_bin_from_env(), workdir)
            print(res.line(), flush=True)
            print(res.details(), flush=True)
            sc = res.scenario
            blind = res.control_blind_spots() if sc.control else []
            for b in blind:
                print(f"  FAILED: {b}", flush=True)
            bad = bool(blind) if sc.control else (res.errors > 0 or res.problems)
            if bad or res.errors:
                print(res.analysis(), flush=True)
            failed |= bool(bad)
    finally:
        if args.keep or failed:
            print(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
