"""`make slow-clients`: ebb in front of a plain app (nginx serving a 1 MiB body and a small one)
under slowhttptest's three attacks (slow read -X, slow headers -H, slow body -B), each with
CONNS connections, while one normal keep-alive client requests the small body and times every
answer. Prints ebb's RSS (peak VmHWM and the highest VmRSS sampled) and the normal client's
p50/p99/failures per mode. A benchmark, not a test: it times things on a shared machine, so the
load average is printed with each row."""

from __future__ import annotations

import argparse
import http.client
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness.config import deep_merge  # noqa: E402
from harness.ebb import Ebb  # noqa: E402
import measure  # noqa: E402
import targets  # noqa: E402

MIB = 1024 * 1024

MODES = {
    # Each of CONNS connections asks for the 1 MiB body with a 10-20 byte receive window and
    # reads 32 bytes a second from it.
    "slow-read": ["-X", "-k", "1", "-n", "1", "-w", "10", "-y", "20", "-z", "32"],
    # Slowloris: a header line every 10 s, never the end of the head.
    "slow-headers": ["-H", "-i", "10"],
    # R-U-Dead-Yet: a POST announcing 1 MiB, a few bytes of it every 10 s.
    "slow-body": ["-B", "-i", "10", "-s", str(MIB)],
}


class App(targets.Upstream):
    """The bench upstream plus /upload, which nginx answers only once it has read the whole
    request body (it buffers a proxied body first), so a slow body holds the app as it would."""

    def config(self, port):
        name, text = super().config(port)
        upload = f"    location = /upload {{ proxy_pass http://127.0.0.1:{port}/small; }}\n"
        return name, text.replace("    location = /small", upload + "    location = /small", 1)


class NormalClient(threading.Thread):
    """One keep-alive client asking for the small body every `pace` seconds; a failed request
    (error, timeout, wrong answer) is counted and the connection is made again."""

    def __init__(self, port: int, pace: float = 0.01, timeout: float = 10.0):
        super().__init__(daemon=True)
        self.port, self.pace, self.timeout = port, pace, timeout
        self.latencies: list[float] = []
        self.slowest: list[tuple[float, float]] = []  # (seconds, when since start) of the slowest
        self.failures = 0
        self.stop_event = threading.Event()

    def run(self):
        self.t_start = time.monotonic()
        conn = None
        while not self.stop_event.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            t0 = time.monotonic()
            try:
                conn.request("GET", targets.PATHS["small"])
                r = conn.getresponse()
                body = r.read()
                ok = r.status == 200 and body == targets.SMALL_BODY
            except (OSError, http.client.HTTPException):
                ok = False
            dt = time.monotonic() - t0
            if ok:
                self.latencies.append(dt)
                self.slowest = sorted(self.slowest + [(dt, t0 - self.t_start)], reverse=True)[:3]
            else:
                self.failures += 1
                conn.close()
                conn = None
            self.stop_event.wait(self.pace)
        if conn is not None:
            conn.close()


def kernel_counters() -> dict:
    """Machine-wide: packets the loopback's input backlog dropped (net.core.netdev_max_backlog),
    TCP retransmissions and retransmission timeouts. Other processes count in them too."""
    out = {"backlog_drops": 0}
    with open("/proc/net/softnet_stat") as f:
        for line in f:
            out["backlog_drops"] += int(line.split()[1], 16)
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            for k, v in zip(names.split()[1:], values.split()[1:]):
                if k in ("RetransSegs", "TCPTimeouts"):
                    out[k] = int(v)
    return out


def tcp_pressure_pages() -> int:
    """The kernel's TCP memory pressure mark in pages (net.ipv4.tcp_mem, global; a network
    namespace of our own does not show it, so --mtu reads it before entering one)."""
    if "EBB_SLOW_TCP_MEM" in os.environ:
        return int(os.environ["EBB_SLOW_TCP_MEM"])
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return int(f.read().split()[1])


def tcp_mem_pages() -> int:
    """Pages the kernel's TCP stack holds now (all sockets), from /proc/net/sockstat."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class EbbUnderTest:
    def __init__(self, binary: str, app_port: int, conns: int, extra: dict, explain_ms: float):
        config = deep_merge({"log": {"level": "info", "access": explain_ms > 0},
                                     "limits": {"max_connections": conns + 512},
                                     "timeouts": {"client_send": "120s"}}, extra)
        self.ebb = Ebb(app_port, config, binary=binary)

    def start(self):
        self.ebb.start()
        self.port = self.ebb.proxy_port

    def pids(self):
        return [self.ebb.pid]

    def stop(self):
        self.ebb.stop()

    def logs(self, msg):
        return self.ebb.logs(msg)


class NginxUnderTest:
    """nginx as the proxy in ebb's place (the bench's reverse-proxy config: memory buffers only),
    to tell what the machine does to any proxy from what ebb does."""

    def __init__(self, app_port: int, conns: int, workdir: str):
        self.nginx = targets.NginxProxy(1, range(os.cpu_count() or 1), workdir, app_port, conns + 512)

    def start(self):
        self.nginx.start()
        self.port = self.nginx.port

    def pids(self):
        return self.nginx.pids()

    def stop(self):
        self.nginx.stop()

    def logs(self, msg):
        return []


def run_mode(mode: str, proxy_name: str, ebb_bin: str, conns: int, seconds: int, extra: dict,
             workdir: str, explain_ms: float = 0) -> dict:
    up = App(range(os.cpu_count() or 1), workdir, stream_bytes=MIB)
    up.start()
    if proxy_name == "nginx":
        proxy = NginxUnderTest(up.port, conns, workdir)
    else:
        proxy = EbbUnderTest(ebb_bin, up.port, conns, extra, explain_ms)
    client = None
    slow = None
    try:
        proxy.start()
        base_rss = measure.rss_kib(proxy.pids())
        measure.reset_peak_rss(proxy.pids())
        client = NormalClient(proxy.port)
        client.start()
        path = {"slow-read": targets.PATHS["stream"], "slow-body": "/upload"}.get(mode, "/small")
        url = f"http://127.0.0.1:{proxy.port}{path}"
        load0 = os.getloadavg()[0]
        k0 = kernel_counters()
        t0, cpu0, app0 = time.monotonic(), measure.cpu_seconds(proxy.pids()), measure.cpu_seconds(up.pids())
        out = open(os.path.join(workdir, "slowhttptest.out"), "w")
        slow = subprocess.Popen(["slowhttptest", *MODES[mode], "-c", str(conns), "-r", "500",
                                 "-l", str(seconds), "-p", "10", "-u", url],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
        peak_sampled = base_rss
        tcp_pages = tcp_mem_pages()
        deadline = time.monotonic() + seconds + 30
        while slow.poll() is None and time.monotonic() < deadline:
            peak_sampled = max(peak_sampled, measure.rss_kib(proxy.pids()))
            tcp_pages = max(tcp_pages, tcp_mem_pages())
            time.sleep(0.25)  # a sampling period, not a wait for a condition
        hwm = measure.peak_rss_kib(proxy.pids())
        wall = time.monotonic() - t0
        ebb_cpu = (measure.cpu_seconds(proxy.pids()) - cpu0) / wall
        app_cpu = (measure.cpu_seconds(up.pids()) - app0) / wall
        k1 = kernel_counters()
        kernel = ", ".join(f"{k} {k1.get(k, 0) - v}" for k, v in k0.items())
        pressure = tcp_pressure_pages()
        kernel += f", TCP memory peak {tcp_pages * 4 // 1024} MiB (pressure at {pressure * 4 // 1024} MiB)"
        out.close()
        with open(out.name, errors="replace") as f:
            # slowhttptest's last status line: the most of its connections the proxy held open at once.
            held = max((int(m) for m in re.findall(r"connected:\s+(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", f.read()))), default=-1)
    finally:
        if slow is not None and slow.poll() is None:
            slow.terminate()
            try:
                slow.wait(timeout=10)
            except subprocess.TimeoutExpired:
                slow.kill()
                slow.wait()
        if client is not None:
            client.stop_event.set()
            client.join(timeout=15)
        proxy.stop()
        up.stop()
    if explain_ms > 0:
        # ebb's own account of the normal client's slowest answers: time at the app (upstream_ms)
        # against the whole exchange (ms).
        for rec in proxy.logs("access"):
            if rec.get("target") == targets.PATHS["small"] and rec.get("ms", 0) >= explain_ms:
                print(f"{'':<13} slow answer: ms={rec.get('ms'):.1f} upstream_ms={rec.get('upstream_ms'):.1f}"
                      f" at {rec.get('ts')}", flush=True)
    load1 = os.getloadavg()[0]
    return {"mode": mode, "proxy": proxy_name, "base_kib": base_rss, "hwm_kib": hwm, "rss_kib": peak_sampled,
            "n": len(client.latencies), "p50_ms": pct(client.latencies, 50) * 1e3,
            "p99_ms": pct(client.latencies, 99) * 1e3, "max_ms": max(client.latencies, default=0) * 1e3,
            "failures": client.failures, "held": held,
            "ebb_cpu": ebb_cpu, "app_cpu": app_cpu, "kernel": kernel,
            "slowest": ", ".join(f"{d * 1e3:.0f} ms at {t:.1f}s" for d, t in client.slowest), "load": f"{load0:.1f}/{load1:.1f}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ebb", help="path to the ebb binary (a release build)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--proxy", choices=("ebb", "nginx"), default="ebb",
                    help="the proxy under test: ebb, or nginx in its place for comparison")
    ap.add_argument("--max-memory", help="limits.max_memory for ebb (default: ebb's own)")
    ap.add_argument("--explain-ms", type=float, default=0,
                    help="turn ebb's access log on and print its lines for normal requests this slow")
    ap.add_argument("--mtu", type=int, default=0,
                    help="run everything in a network namespace of its own whose loopback has this MTU "
                         "(1500: a real network's 1460-byte segments, not loopback's 64 KiB); root only")
    args = ap.parse_args()
    if args.mtu and os.environ.get("EBB_SLOW_NETNS") != str(args.mtu):
        # The namespace lives as long as this command: nothing to clean up afterwards.
        sys.exit(subprocess.call(
            ["unshare", "--net", "--", "sh", "-c", f'ip link set lo mtu {args.mtu} up && exec "$@"', "sh",
             sys.executable, "-u", os.path.abspath(__file__), *sys.argv[1:]],
            env=dict(os.environ, EBB_SLOW_NETNS=str(args.mtu), EBB_SLOW_TCP_MEM=str(tcp_pressure_pages()))))
    args.ebb = os.path.abspath(args.ebb)  # ebb runs in a directory of its own
    for tool in ("slowhttptest", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: `make deps` installs it")
    raise_nofile()
    extra = {"limits": {"max_memory": args.max_memory}} if args.max_memory else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ebb-slow-") as work:
        os.chmod(work, 0o755)
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, args.proxy, args.ebb, args.conns, args.seconds, extra, os.path.join(work, mode),
                                 args.explain_ms))
            r = rows[-1]
            print(f"{r['mode']:<13} {r['proxy']} RSS base {r['base_kib'] / 1024:6.1f} MiB  peak {r['hwm_kib'] / 1024:6.1f} MiB"
                  f"  | normal client n={r['n']:<5} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                  f"  max {r['max_ms']:7.1f} ms  failures {r['failures']}  | attack held {r['held']}  | load {r['load']}", flush=True)
            print(f"{'':<13} slowest normal requests: {r['slowest']} (the attack starts at about 0.5s);"
                  f" CPU {r['proxy']} {r['ebb_cpu'] * 100:.0f}%, app {r['app_cpu'] * 100:.0f}%; kernel: {r['kernel']}", flush=True)


if __name__ == "__main__":
    main()
