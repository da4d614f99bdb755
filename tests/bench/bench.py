#!/usr/bin/env python3
"""`make bench`: what a proxied request costs in ebb next to nginx and HAProxy, measured as their
own published benchmarks do. The proxy under test is pinned to its own core(s); the upstream
(nginx, 1 worker), wrk (-t1) and every helper run on the others, so the figure measures the proxy
and not the scheduler. Rounds are interleaved (each round runs every target through every cell),
and medians and min-max over the rounds are reported. The headline is CPU time per request of all
the proxy's processes and threads (utime + stime from /proc, over the requests wrk completed).
Two cell families run with h2load (-m10) instead of wrk: h2c-cN, h2c (prior knowledge) from the
clients to the same HTTP/1 upstream, and grpc-cN, a gRPC unary call over h2c end to end to a
gRPC-shaped h2c upstream (ebb `upstream_protocol: h2c`, nginx `grpc_pass`, HAProxy `proto h2`).

Noise guard: during each cell, the CPU that processes other than the benchmark's own took is
measured (/proc/stat busy time minus the benchmark's processes, the harness and wrk); above
--noise-limit of one core the cell is refused and run again, and a cell that still fails marks
the run INVALID in the table and the JSON, with the figure. An INVALID run is not a result.

usage: bench.py [EBB_BIN] [--rounds 3] [--seconds 5] [--cells small-c50,16k-c50,small-c1,h2c-c50,grpc-c50]
                [--proxy-cpus 0] [--other-cpus 1] [--workers 1] [--json build/bench.json] ...
       bench.py --selftest [EBB_BIN]    (each target 1 s at c1: the harness reads sane numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402
import targets as tg  # noqa: E402
from harness.wait import WaitTimeout, wait_stable, wait_until  # noqa: E402  (on the path targets set)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CELLS = "small-c50,16k-c50,small-c1,h2c-c50,grpc-c50"
H2_STREAMS = 10  # h2load -m: concurrent streams per connection in the h2c and grpc cells
FD_RESERVE = 512  # descriptors beyond the idle connections: listeners, upstream pool, logs


def parse_cell(name: str) -> dict:
    body, _, conns = name.partition("-c")
    if body not in ("small", "16k", "h2c", "grpc") or not conns.isdigit() or int(conns) < 1:
        raise ValueError(f"cell {name!r}: expected small-cN, 16k-cN, h2c-cN or grpc-cN (N connections, "
                         f"e.g. small-c50)")
    if body == "grpc":
        return {"name": name, "family": "grpc", "path": tg.GRPC_PATH, "conns": int(conns),
                "body_bytes": len(tg.GRPC_MESSAGE)}
    return {"name": name, "family": "h2c" if body == "h2c" else "http1",
            "path": tg.PATHS["16k" if body == "16k" else "small"], "conns": int(conns),
            "body_bytes": len(tg.BIG_BODY if body == "16k" else tg.SMALL_BODY)}


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}
    num = text.rstrip("kKmMgGiIbB")
    unit = text[len(num):].lower()
    if not num.isdigit() or unit not in units:
        raise ValueError(f"size {text!r}: expected e.g. 1GiB, 64MiB, 1048576")
    return int(num) * units[unit]


def int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return out


def wait_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line the process prints, or '' at EOF or timeout."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        return proc.stdout.readline() if sel.select(timeout) else ""
    finally:
        sel.close()


# -- the idle keep-alive connection helper (a separate process, pinned with the load side) -----

def hold_connections(port: int, n: int, path: str) -> int:
    """Opens n connections, makes one keep-alive request on each and reads its answer, prints
    `held N`, and holds them until stdin closes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if n + 64 > hard:
        print(f"error: {n} connections need {n + 64} descriptors; the hard limit is {hard}", flush=True)
        return 2
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    socks = []
    try:
        for start in range(0, n, 256):  # a batch stays under the listeners' backlog
            batch = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(min(256, n - start))]
            for s in batch:
                s.sendall(req)
            for s in batch:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before answering")
                    buf += chunk
                head, _, body = buf.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(f"answered {head.splitlines()[0]!r}")
                length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:]
                               if l.lower().startswith(b"content-length:")), None)
                if length is None:
                    raise ConnectionError("answer without Content-Length")
                while len(body) < length:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed mid-body")
                    body += chunk
            socks.extend(batch)
    except OSError as e:
        print(f"error: after {len(socks)} connections: {e}", flush=True)
        return 1
    print(f"held {len(socks)}", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()
    return 0


# -- the run ---------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.cells = [parse_cell(c) for c in args.cells.split(",") if c]
        self.tmp = tempfile.mkdtemp(prefix="ebb-bench-")
        os.chmod(self.tmp, 0o755)
        self.upstream: tg.Upstream | None = None
        self.grpc_upstream: tg.GrpcUpstream | None = None
        self.targets: list[tg.Target] = []
        self.results: dict = {}     # label -> cell -> [record per round]
        self.memory: dict = {}      # label -> memory figures
        self.pinning: dict = {}     # label -> problems
        self.notes: list[str] = []
        self.ledger = measure.CpuLedger(self.own_pids, self.proxy_pids, args.proxy_cpus)
        self.load_at_start = os.getloadavg()

    def own_pids(self) -> list[int]:
        pids = self.upstream.pids() if self.upstream else []
        pids += self.grpc_upstream.pids() if self.grpc_upstream else []
        for t in self.targets:
            pids += t.pids()
        return pids

    def proxy_pids(self) -> list[int]:
        return [p for t in self.proxies() for p in t.pids()]

    def say(self, msg: str):
        print(msg, flush=True)

    # -- setup -------------------------------------------------------------------------------
    def setup(self):
        a = self.args
        tg.need_tools()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = max(a.idle_conns, default=0) + FD_RESERVE
        if need > hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            except (ValueError, OSError):
                raise SystemExit(f"bench: --idle-conns {max(a.idle_conns)} needs {need} descriptors and the "
                                 f"hard limit is {hard} (raise it with `ulimit -Hn`, or lower --idle-conns)")
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every server
        measure.pin([os.getpid()], a.other_cpus)
        # nginx proxies each HTTP/2 stream on an upstream connection of its own (proxy_pass and
        # grpc_pass alike), so an h2load cell may hold connections x streams of them.
        max_conns = max(max(a.idle_conns, default=0),
                        max(c["conns"] * (1 if c["family"] == "http1" else H2_STREAMS) for c in self.cells))
        for w in a.workers if "ebb" in a.targets else []:
            # Asked before anything starts: `workers: 2` is refused until ebb's multi-core work lands.
            refused = tg.EbbProxy(a.ebb, w, a.proxy_cpus, self.tmp, 1, max_conns).refusal()
            if refused:
                raise SystemExit(f"bench: ebb refuses `workers: {w}`: {refused}\n"
                                 f"(nginx and HAProxy can run it: --targets nginx,haproxy,direct)")
        for w in a.workers:
            if w > len(a.proxy_cpus):
                self.notes.append(f"{w} workers share {len(a.proxy_cpus)} proxy CPU(s)")
        self.upstream = tg.Upstream(a.other_cpus, self.tmp, a.stream_bytes).start()
        for w in a.workers:
            for name in a.targets:
                if name == "ebb":
                    t = tg.EbbProxy(a.ebb, w, a.proxy_cpus, self.tmp, self.upstream.port, max_conns)
                elif name == "ebb-base":
                    t = tg.EbbBaseline(a.baseline, w, a.proxy_cpus, self.tmp, self.upstream.port, max_conns)
                elif name == "nginx":
                    t = tg.NginxProxy(w, a.proxy_cpus, self.tmp, self.upstream.port, max_conns)
                elif name == "haproxy":
                    t = tg.HaproxyProxy(w, a.proxy_cpus, self.tmp, self.upstream.port, max_conns)
                else:
                    continue
                self.targets.append(t)
                t.start()
                if getattr(t, "note", ""):
                    self.notes.append(t.note)
                    self.say(f"note: {t.note}")
        if "direct" in a.targets:
            self.targets.append(tg.Direct(self.upstream))
        if any(c["family"] == "grpc" for c in self.cells):
            self.setup_grpc(max_conns)
        measure.pin([os.getpid()], a.other_cpus)  # ebb's log reader thread was born on the proxy CPUs
        self.pinning["upstream"] = measure.pinning_problems(self.upstream.pids(), a.other_cpus)
        if self.grpc_upstream:
            self.pinning["upstream grpc"] = measure.pinning_problems(self.grpc_upstream.pids(), a.other_cpus)
        self.pinning["harness"] = measure.pinning_problems([os.getpid()], a.other_cpus)
        for t in self.proxies():
            self.pinning[t.key] = measure.pinning_problems(t.pids(), a.proxy_cpus)
            if "http1" in t.families:  # memory is measured on the HTTP/1 process of each proxy
                self.memory[t.label] = {"processes": len(t.pids()), "rss_idle_kib": measure.rss_kib(t.pids()),
                                        "rss_idle_kib_by_pid": {p: measure.rss_kib([p]) for p in t.pids()}}
        for label, problems in self.pinning.items():
            for p in problems:
                self.say(f"PINNING FAILED ({label}): {p}")

    def setup_grpc(self, max_conns: int):
        """The gRPC family: its upstream and, for each asked target, the proxy in front of it over
        h2c end to end. An ebb that refuses `upstream_protocol: h2c` is left out, and said so."""
        a = self.args
        self.grpc_upstream = tg.GrpcUpstream(a.other_cpus, self.tmp).start()
        up, msg = self.grpc_upstream.port, self.grpc_upstream.message_path
        for w in a.workers:
            for name in a.targets:
                if name == "ebb":
                    t = tg.EbbGrpc(msg, a.ebb, w, a.proxy_cpus, self.tmp, up, max_conns)
                    refused = t.refusal()
                    if refused:
                        note = f"grpc cells: no ebb figure, this ebb refuses `upstream_protocol: h2c`: {refused}"
                        self.notes.append(note)
                        self.say(f"SKIPPED: {note}")
                        continue
                elif name == "nginx":
                    t = tg.NginxGrpc(msg, w, a.proxy_cpus, self.tmp, up, max_conns)
                elif name == "haproxy":
                    t = tg.HaproxyGrpc(msg, w, a.proxy_cpus, self.tmp, up, max_conns)
                else:
                    continue
                self.targets.append(t)
                t.start()
        if "direct" in a.targets:
            self.targets.append(tg.DirectGrpc(self.grpc_upstream))

    def proxies(self):
        return [t for t in self.targets if t.proxy]

    def cells_of(self, t: tg.Target) -> list[dict]:
        return [c for c in self.cells if c["family"] in t.families]

    # -- load --------------------------------------------------------------------------------
    def wrk(self, port: int, cell: dict, seconds: int) -> measure.WrkResult:
        url = f"http://127.0.0.1:{port}{cell['path']}"
        cmd = ["taskset", "-c", measure.cpus_text(self.args.other_cpus), "wrk", "-t1",
               f"-c{cell['conns']}", f"-d{seconds}s", "--latency", url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        return measure.parse_wrk(r.stdout + r.stderr)

    def h2load(self, t: tg.Target, cell: dict, seconds: int) -> measure.WrkResult:
        """h2load -t1 -cN -m10 for `seconds`, pinned like wrk: GET /small over h2c, or gRPC calls."""
        grpc = cell["family"] == "grpc"
        port = t.port if grpc else t.h2c_port
        log = os.path.join(self.tmp, "h2load.log")
        cmd = ["taskset", "-c", measure.cpus_text(self.args.other_cpus), "h2load", "-t1", f"-c{cell['conns']}",
               f"-m{H2_STREAMS}", f"-D{seconds}", f"--log-file={log}"]
        if grpc:
            cmd += ["-d", t.message_path] + [a for h in tg.GRPC_HEADERS for a in ("-H", h)]
        r = subprocess.run(cmd + [f"http://127.0.0.1:{port}{cell['path']}"], capture_output=True, text=True,
                           timeout=seconds + 60)
        try:
            with open(log) as f:
                return measure.parse_h2load(r.stdout + r.stderr, f)
        finally:
            os.unlink(log)

    def load(self, t: tg.Target, cell: dict, seconds: int) -> measure.WrkResult:
        if cell["family"] == "http1":
            return self.wrk(t.port, cell, seconds)
        return self.h2load(t, cell, seconds)

    def warm_up(self):
        if self.args.warmup <= 0:
            return
        for t in self.targets:
            for cell in self.cells_of(t):
                self.load(t, cell, self.args.warmup)

    def cell(self, t: tg.Target, cell: dict) -> dict:
        a, attempts = self.args, []
        for _ in range(1 + a.retries):
            pids = t.pids()
            s0, c0 = self.ledger.take(), measure.cpu_seconds(pids)
            w = self.load(t, cell, a.seconds)
            c1, s1 = measure.cpu_seconds(pids), self.ledger.take()
            if t.proxy and not t.pids():
                raise RuntimeError(f"{t.label} exited during {cell['name']}: {t.log_tail()}")
            noise = measure.CpuLedger.between(s0, s1)
            rec = {"requests": w.requests, "rps": w.rps, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                   "errors": w.socket_errors + w.non_2xx,
                   "cpu_us_per_req": (c1 - c0) / w.requests * 1e6 if t.proxy and w.requests else None,
                   "proxy_cpu_s": round(c1 - c0, 3) if t.proxy else None,
                   "noise": noise.as_dict(), "valid": noise.other_cores <= a.noise_limit}
            attempts.append(rec)
            if rec["valid"]:
                break
            self.say(f"  refused {t.label} {cell['name']}: other load took {noise.other_cores:.0%} of a core "
                     f"({noise.proxy_cpus_other_s / noise.wall_s:.0%} on the proxy CPUs; limit {a.noise_limit:.0%})" + ("; repeating" if len(attempts) <= a.retries else ""))
        rec = dict(attempts[-1])
        rec["attempts"] = len(attempts)
        rec["refused_other_cores"] = [x["noise"]["other_cores"] for x in attempts[:-1]]
        return rec

    def rounds(self):
        self.warm_up()
        n = len(self.targets)
        for r in range(self.args.rounds):
            # Each round starts with the next target, so no target always runs first or last.
            for t in self.targets[r % n:] + self.targets[:r % n]:
                for cell in self.cells_of(t):
                    rec = self.cell(t, cell)
                    self.results.setdefault(t.label, {}).setdefault(cell["name"], []).append(rec)
                    cpu = f"{rec['cpu_us_per_req']:.2f} µs/req" if rec["cpu_us_per_req"] is not None else "-"
                    self.say(f"round {r + 1}/{self.args.rounds} {t.label:12} {cell['name']:10} "
                             f"{rec['rps']:>10,.0f} req/s  {cpu:>14}  other load {rec['noise']['other_cores']:.0%}"
                             f"{'' if rec['valid'] else '  INVALID'}")
        for t in self.proxies():
            if "http1" in t.families:
                self.memory[t.label]["rss_after_load_kib"] = measure.rss_kib(t.pids())
            # Again at the end: a worker nginx or HAProxy re-forked must still be on the proxy CPUs.
            late = measure.pinning_problems(t.pids(), self.args.proxy_cpus)
            self.pinning[t.key] += [p for p in late if p not in self.pinning[t.key]]
            for p in late:
                self.say(f"PINNING FAILED ({t.key}, after the rounds): {p}")

    # -- memory ------------------------------------------------------------------------------
    def idle_connections(self, t: tg.Target, n: int) -> dict:
        if n > t.capacity():
            note = (f"{t.label} holds at most {t.capacity()} connections under the hard descriptor limit "
                    f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}: no figure for {n} (raise `ulimit -Hn`)")
            self.notes.append(note)
            return {"error": note}
        cmd = ["taskset", "-c", measure.cpus_text(self.args.other_cpus), sys.executable, __file__,
               "--hold-connections", str(t.port), str(n)]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = wait_line(p, 120).strip()
            if not line.startswith("held "):
                return {"error": line or "the helper printed nothing"}
            try:
                rss = wait_stable(lambda: measure.rss_kib(t.pids()), quiet=0.3, timeout=5,
                                  what="RSS with idle connections")
                settled = True
            except WaitTimeout:
                rss, settled = measure.rss_kib(t.pids()), False
            return {"held": int(line.split()[1]), "rss_kib": rss, "settled": settled}
        finally:
            p.stdin.close()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stream(self, t: tg.Target) -> dict:
        pids = t.pids()
        reset = measure.reset_peak_rss(pids)
        sampled, done = [measure.rss_kib(pids)], threading.Event()

        def sample():
            while not done.wait(0.01):
                try:
                    sampled.append(measure.rss_kib(t.pids()))
                except (OSError, KeyError):
                    pass
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        url = f"http://127.0.0.1:{t.port}{tg.PATHS['stream']}"
        try:
            r = subprocess.run(["taskset", "-c", measure.cpus_text(self.args.other_cpus), "curl", "-sS",
                                "-o", "/dev/null", "-w", "%{size_download} %{http_code}", url],
                               capture_output=True, text=True, timeout=600)
        finally:
            done.set()
            th.join()
        got, _, code = r.stdout.strip().partition(" ")
        return {"bytes": int(got or 0), "status": code, "complete": got == str(self.args.stream_bytes),
                "peak_kib": measure.peak_rss_kib(pids) if reset else max(sampled),
                "method": "VmHWM after clear_refs" if reset else "VmRSS sampled every 10 ms",
                "sampled_max_kib": max(sampled)}

    def memory_phase(self):
        # The stream goes first: clear_refs resets the peak to the current RSS, and memory that
        # 10000 connections left in the allocator would otherwise count as the stream's.
        for t in self.proxies():
            if "http1" not in t.families:
                continue
            m = self.memory[t.label]
            if self.args.stream_bytes:
                m["stream"] = self.stream(t)
                self.say(f"memory {t.label:12} {self.args.stream_bytes} B stream: {m['stream']}")
            m["idle_conns"] = {}
            m["rss_before_idle_conns_kib"] = base = measure.rss_kib(t.pids())
            for n in self.args.idle_conns:
                r = self.idle_connections(t, n)
                if "rss_kib" in r:
                    r["kib_per_conn"] = round((r["rss_kib"] - base) / n, 3)
                elif not r["error"].startswith(t.label):
                    self.notes.append(f"{t.label}, {n} idle connections: {r['error']}")
                m["idle_conns"][str(n)] = r
                self.say(f"memory {t.label:12} {n} idle keep-alive connections: {r}")

    def teardown(self):
        for t in reversed(self.targets):
            t.stop()
        for u in (self.upstream, self.grpc_upstream):
            if u:
                u.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- report ------------------------------------------------------------------------------
    def summary(self) -> dict:
        out = {}
        for label, cells in self.results.items():
            for name, recs in cells.items():
                s = {"rounds": len(recs), "valid": all(r["valid"] for r in recs),
                     "other_cores_max": max(r["noise"]["other_cores"] for r in recs),
                     "errors": sum(r["errors"] for r in recs)}
                for k in ("cpu_us_per_req", "rps", "p50_ms", "p99_ms"):
                    v = [r[k] for r in recs if r[k] is not None]
                    s[k] = ({"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None)
                out.setdefault(label, {})[name] = s
        return out

    def ratios(self, summary: dict) -> dict:
        out = {}
        for w in self.args.workers:
            ebb = f"ebb w{w}"
            if ebb not in summary:
                continue
            for other in (f"nginx w{w}", f"haproxy w{w}", f"ebb-base w{w}"):
                if other not in summary:
                    continue
                r = {}
                for cell, s in summary[ebb].items():
                    o = summary[other].get(cell)
                    for k in ("cpu_us_per_req", "rps", "p50_ms", "p99_ms"):
                        if s[k] and o and o[k] and o[k]["median"]:
                            r[f"{cell}.{k}"] = s[k]["median"] / o[k]["median"]
                me, them = self.memory.get(ebb, {}), self.memory.get(other, {})
                for k, v in _memory_figures(me).items():
                    ov = _memory_figures(them).get(k)
                    if v and ov:
                        r[f"memory.{k}"] = v / ov
                out.setdefault(ebb, {})[other] = r
        return out

    def machine(self) -> dict:
        model = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        return {"cpu_model": model, "cpus_online": os.cpu_count(), "kernel": platform.release(),
                "loadavg_at_start": self.load_at_start, "loadavg_at_end": os.getloadavg(),
                "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}

    def report(self) -> dict:
        a = self.args
        summary = self.summary()
        ratios = self.ratios(summary)
        invalid = [f"{label} {cell}: other load {s['other_cores_max']:.0%} of a core"
                   for label, cells in summary.items() for cell, s in cells.items() if not s["valid"]]
        pin_failed = [f"{k}: {len(v)} thread(s) not pinned" for k, v in self.pinning.items() if v]
        valid = not invalid and not pin_failed
        data = {
            "valid": valid, "invalid_cells": invalid, "pinning_failures": pin_failed,
            "method": {"proxy_cpus": a.proxy_cpus, "other_cpus": a.other_cpus, "rounds": a.rounds,
                       "seconds": a.seconds, "warmup_seconds": a.warmup, "cells": self.cells,
                       "workers": a.workers, "noise_limit_cores": a.noise_limit, "retries": a.retries,
                       "idle_conns": a.idle_conns, "stream_bytes": a.stream_bytes,
                       "cpu": "utime+stime of every process of the proxy (all threads) / requests wrk completed",
                       "load": "wrk -t1 --latency, pinned with the upstream (nginx, 1 worker) to other_cpus",
                       "load_h2": f"h2c and grpc cells: h2load -t1 -m{H2_STREAMS} (p50/p99 from its --log-file), "
                                  f"pinned like wrk; grpc cells against a gRPC-shaped h2c upstream (nginx, "
                                  f"1 worker: the framed message and a grpc-status trailer)"},
            "machine": self.machine(), "versions": tg.versions(a.ebb), "pinning": self.pinning,
            "summary": summary, "ratios": ratios, "memory": self.memory, "rounds": self.results,
            "notes": self.notes,
        }
        self.print_table(data)
        if a.json:
            os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
            with open(a.json, "w") as f:
                json.dump(data, f, indent=1)
            self.say(f"JSON: {a.json}")
        return data

    def print_table(self, d: dict):
        a, m = self.args, d["machine"]
        say = self.say
        say("")
        say(f"proxy on CPU {measure.cpus_text(a.proxy_cpus)}; upstream, wrk -t1 and helpers on CPU "
            f"{measure.cpus_text(a.other_cpus)}; {a.rounds} interleaved round(s) x {a.seconds} s per cell "
            f"after {a.warmup} s warm-up; medians (min-max)")
        say(f"{m['cpu_model']}, {m['cpus_online']} CPUs, Linux {m['kernel']}, load average "
            f"{m['loadavg_at_start'][0]:.2f} at start; " + ", ".join(f"{v}" for v in d["versions"].values()
                                                                       if v != "unknown" and "curl" not in v))
        for cell in self.cells:
            name = cell["name"]
            say(f"\n{name}: " + _cell_text(cell))
            say(f"{'target':12} {'CPU µs/req':>22} {'req/s':>28} {'p50 ms':>7} {'p99 ms':>7}  other load")
            for label, cells in d["summary"].items():
                s = cells.get(name)
                if not s:
                    continue
                say(f"{label:12} {_spread(s['cpu_us_per_req'], '{:.2f}'):>22} {_spread(s['rps'], '{:,.0f}'):>28} "
                    f"{_num(s['p50_ms'], '{:.2f}'):>7} {_num(s['p99_ms'], '{:.2f}'):>7}  "
                    f"max {s['other_cores_max']:.0%}" + ("" if s["valid"] else " INVALID")
                    + (f"  {s['errors']} errors" if s["errors"] else ""))
            for ebb, others in d["ratios"].items():
                for other, r in others.items():
                    parts = [f"{k}x{r[f'{name}.{k}']:.2f}" for k in ("cpu_us_per_req", "rps", "p99_ms")
                             if f"{name}.{k}" in r]
                    if parts:
                        say(f"  {ebb} / {other}: " + "  ".join(p.replace("cpu_us_per_req", "CPU/req ")
                                                              .replace("rps", "req/s ").replace("p99_ms", "p99 ")
                                                              for p in parts))
        if self.memory:
            cols = list(_memory_figures(next(iter(self.memory.values()))).keys())
            say("\nmemory: RSS of every process of the proxy; KiB/conn: its rise per idle keep-alive connection")
            say(f"{'target':12} " + " ".join(f"{c:>15}" for c in cols))
            for label, mem in self.memory.items():
                f = _memory_figures(mem)
                say(f"{label:12} " + " ".join(f"{f[c]:>15.1f}" if f.get(c) is not None else f"{'n/a':>15}"
                                              for c in cols))

            for ebb, others in d["ratios"].items():
                for other, r in others.items():
                    say(f"  {ebb} / {other}: " + "  ".join(f"{c} x{r['memory.' + c]:.2f}" for c in cols
                                                          if 'memory.' + c in r))
        for note in self.notes:
            say(f"note: {note}")
        say("")
        if d["valid"]:
            say(f"VALID: every cell ran with other load at most {a.noise_limit:.0%} of a core, every proxy pinned")
        else:
            for line in d["invalid_cells"] + d["pinning_failures"]:
                say(f"INVALID: {line}")
            say(f"INVALID RUN: other processes took more than {a.noise_limit:.0%} of a core during "
                f"{len(d['invalid_cells'])} cell(s) after {a.retries} retries, or pinning failed. "
                f"These figures are not results.")


def _cell_text(cell: dict) -> str:
    if cell["family"] == "h2c":
        return (f"GET {cell['path']} ({cell['body_bytes']} B body) over h2c to the HTTP/1 upstream, "
                f"h2load {cell['conns']} connection(s) x {H2_STREAMS} streams")
    if cell["family"] == "grpc":
        return (f"gRPC unary POST {cell['path']} ({cell['body_bytes']} B message each way, grpc-status "
                f"trailer), h2c end to end, h2load {cell['conns']} connection(s) x {H2_STREAMS} streams")
    return f"GET {cell['path']} ({cell['body_bytes']} B body), {cell['conns']} connection(s)"


def _memory_figures(mem: dict) -> dict:
    """Column -> value: RSS in MiB, and KiB per idle connection (the rise over the RSS before)."""
    mib = lambda kib: kib / 1024 if kib else None
    out = {"idle MiB": mib(mem.get("rss_idle_kib")), "after load MiB": mib(mem.get("rss_after_load_kib"))}
    if mem.get("stream"):
        out["stream peak MiB"] = mib(mem["stream"]["peak_kib"])
    for n, v in (mem.get("idle_conns") or {}).items():
        out[f"{n} conns MiB"] = mib(v.get("rss_kib"))
        out[f"KiB/conn@{n}"] = v.get("kib_per_conn")
    return out


def _num(v, fmt):
    return fmt.format(v["median"]) if v else "-"


def _spread(v, fmt):
    if not v:
        return "-"
    return f"{fmt.format(v['median'])} ({fmt.format(v['min'])}-{fmt.format(v['max'])})"


# -- self-test -------------------------------------------------------------------------------

def selftest(args) -> int:
    """Each target 1 s at c1 in each cell family, a few idle connections and a short stream:
    checks that the harness reads sane numbers, that pinning took effect, and that the noise
    guard sees foreign load. Asserts nothing about performance."""
    args.rounds, args.seconds, args.warmup, args.retries = 1, 1, 0, 0
    args.cells, args.idle_conns, args.stream_bytes = "small-c1,h2c-c1,grpc-c1", [50], 8 << 20
    # The guard measures and reports as in a real run, but a refused cell is not repeated: the
    # machine may be busy, and the self-test asserts only that the harness works.
    results = []

    def check(ok, what):
        results.append(bool(ok))
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    jdir = tempfile.mkdtemp(prefix="ebb-bench-selftest-")
    args.json = os.path.join(jdir, "bench.json")
    b = Bench(args)
    try:
        b.setup()
        for label, problems in b.pinning.items():
            check(not problems, f"{label} pinned: {problems or 'every thread'}")
        for t in b.proxies():
            for pid in t.pids():
                with open(f"/proc/{pid}/status") as f:
                    allowed = next(l for l in f if l.startswith("Cpus_allowed_list:")).split(":")[1].strip()
                check(measure.parse_cpus(allowed) == args.proxy_cpus,
                      f"{t.label} pid {pid} Cpus_allowed_list {allowed}")
        if args.proxy_cpus != args.other_cpus:  # negative control: the check can fail
            check(measure.pinning_problems(b.upstream.pids(), args.proxy_cpus),
                  "negative control: the upstream is reported as not on the proxy CPUs")
        b.rounds()
        b.memory_phase()
        d = b.report()
        with open(args.json) as f:
            check(json.load(f)["summary"] == json.loads(json.dumps(d["summary"])), "JSON written and readable")
        for t in b.targets:
            for cell in b.cells_of(t):
                rec = b.results[t.label][cell["name"]][0]
                what = f"{t.label} {cell['name']}"
                check(rec["requests"] > 0 and rec["rps"] > 0 and rec["errors"] == 0,
                      f"{what}: {rec['requests']} requests, {rec['errors']} errors")
                check(rec["p50_ms"] > 0 and rec["p99_ms"] >= rec["p50_ms"], f"{what}: p50/p99 read")
                check(rec["noise"]["wall_s"] > 0 and rec["noise"]["machine_busy_s"] > 0,
                      f"{what}: noise read ({rec['noise']['other_cores']:.0%} of a core)")
            rec = b.results[t.label][b.cells_of(t)[0]["name"]][0]
            if t.proxy:
                # CPU times come in clock ticks (10 ms): on a starved machine a 1 s cell can end
                # before the proxy used one, so more cells run until it has used a few.
                reqs, cpu = rec["requests"], rec["proxy_cpu_s"]
                for _ in range(10):
                    if cpu >= 3 / measure.CLK_TCK:
                        break
                    more = b.cell(t, b.cells_of(t)[0])
                    reqs, cpu = reqs + more["requests"], cpu + more["proxy_cpu_s"]
                check(reqs and cpu / reqs > 0, f"{t.key}: {cpu / reqs * 1e6 if reqs else 0:.2f} CPU µs/request "
                                               f"({cpu:.2f} s over {reqs} requests)")
                if "http1" not in t.families:
                    continue
                mem = b.memory[t.label]
                check(mem["rss_idle_kib"] > 0 and mem["rss_after_load_kib"] > 0, f"{t.label}: RSS read")
                held = mem["idle_conns"]["50"]
                check(held.get("held") == 50 and held.get("rss_kib", 0) > 0, f"{t.label}: idle connections {held}")
                check(mem["stream"]["complete"] and mem["stream"]["peak_kib"] > 0,
                      f"{t.label}: stream {mem['stream']}")
        # The guard must see load that is not the benchmark's: a CPU burner it does not own.
        burner = subprocess.Popen(["taskset", "-c", measure.cpus_text(args.other_cpus), sys.executable,
                                   "-c", "while True: pass"])
        try:
            s0, c0 = b.ledger.take(), measure.cpu_seconds([burner.pid])
            wait_until(lambda: measure.cpu_seconds([burner.pid]) - c0 >= 0.3, 30, "the burner to run")
            s1, c1 = b.ledger.take(), measure.cpu_seconds([burner.pid])
        finally:
            burner.kill()
            burner.wait()
        noise = measure.CpuLedger.between(s0, s1)
        check(noise.other_s >= (c1 - c0) - 0.05,
              f"negative control: guard counts a foreign burner as other load "
              f"({noise.other_s:.2f} s other >= {c1 - c0:.2f} s burned)")
    finally:
        b.teardown()
        shutil.rmtree(jdir, ignore_errors=True)
    check(not os.path.exists(b.tmp), "temp dir removed")
    left = [p for t in b.targets + [b.upstream, b.grpc_upstream] if t and t.daemon for p in t.daemon._seen
            if os.path.exists(f"/proc/{p}") and not _is_zombie(p)]
    check(not left, f"every process stopped {left or ''}")
    failed = results.count(False)
    print(f"bench selftest: {results.count(True)} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hold-connections"]:
        return hold_connections(int(argv[1]), int(argv[2]), tg.PATHS["small"])
    avail = sorted(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ebb", nargs="?", default=os.environ.get("EBB_BIN") or str(REPO_ROOT / "build" / "ebb"),
                    help="the ebb binary (default $EBB_BIN, else build/ebb)")
    ap.add_argument("--baseline", default=None,
                    help="another ebb binary to run beside EBB_BIN as target ebb-base (a change's before/after)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--seconds", type=int, default=5, help="wrk duration of one cell, whole seconds (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target and cell (default 2)")
    ap.add_argument("--cells", default=DEFAULT_CELLS, help=f"BODY-cCONNS list (default {DEFAULT_CELLS})")
    ap.add_argument("--targets", default="ebb,nginx,haproxy,direct",
                    help="any of ebb, nginx, haproxy, direct (the upstream alone: the floor)")
    ap.add_argument("--workers", type=int_list, default=[1],
                    help="worker counts, e.g. 1,2: ebb `workers`, nginx worker_processes, HAProxy nbthread")
    ap.add_argument("--proxy-cpus", type=measure.parse_cpus, default=avail[:1],
                    help=f"CPUs of the proxy under test, e.g. 0-1 on a bigger machine (default {avail[0]})")
    ap.add_argument("--other-cpus", type=measure.parse_cpus, default=avail[1:] or avail,
                    help="CPUs of the upstream, wrk and helpers (default: the rest)")
    ap.add_argument("--idle-conns", type=int_list, default=[2000, 10000],
                    help="idle keep-alive connection counts to measure RSS with (default 2000,10000)")
    ap.add_argument("--stream-bytes", type=parse_size, default=1 << 30, help="default 1GiB; 0 skips")
    ap.add_argument("--noise-limit", type=float, default=0.10,
                    help="other load allowed during a cell, in cores (default 0.10)")
    ap.add_argument("--retries", type=int, default=3, help="repeats of a refused cell (default 3)")
    ap.add_argument("--json", default=str(REPO_ROOT / "build" / "bench.json"), help="default build/bench.json")
    ap.add_argument("--selftest", action="store_true",
                    help="each target 1 s at c1: checks the harness, asserts no performance")
    args = ap.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.ebb = os.path.abspath(args.ebb)  # ebb runs in its own temp dir
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if "ebb-base" not in args.targets:
            args.targets.insert(args.targets.index("ebb") + 1 if "ebb" in args.targets else 0, "ebb-base")
    bad = set(args.targets) - {"ebb", "ebb-base", "nginx", "haproxy", "direct"}
    for c in args.cells.split(","):
        try:
            parse_cell(c)
        except ValueError as e:
            ap.error(str(e))
    if bad:
        ap.error(f"unknown target(s) {', '.join(sorted(bad))}: choose from ebb, nginx, haproxy, direct")
    if args.rounds < 1 or args.seconds < 1 or args.warmup < 0 or args.retries < 0:
        ap.error("--rounds and --seconds must be at least 1, --warmup and --retries at least 0")
    for cpus in (args.proxy_cpus, args.other_cpus):
        if not set(cpus) <= set(avail):
            ap.error(f"CPUs {measure.cpus_text(cpus)} are not all available (available: {measure.cpus_text(avail)})")
    if set(args.proxy_cpus) & set(args.other_cpus):
        print(f"bench: WARNING: proxy and load share CPU(s) {measure.cpus_text(set(args.proxy_cpus) & set(args.other_cpus))}:"
              f" the figures then measure the scheduler too", flush=True)
    if "ebb" in args.targets and not os.access(args.ebb, os.X_OK):
        ap.error(f"ebb binary {args.ebb} not found: `make build`, or give its path")
    if args.selftest:
        return selftest(args)
    b = Bench(args)
    try:
        b.setup()
        b.rounds()
        b.memory_phase()
        d = b.report()
    finally:
        b.teardown()
    return 0 if d["valid"] else 3


if __name__ == "__main__":
    sys.exit(main())
