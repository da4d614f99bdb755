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
import ebbtest  # noqa: E402
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
        self.failures = 0
        self.stop_event = threading.Event()

    def run(self):
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
            else:
                self.failures += 1
                conn.close()
                conn = None
            self.stop_event.wait(self.pace)
        if conn is not None:
            conn.close()


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_mode(mode: str, ebb_bin: str, conns: int, seconds: int, extra: dict, workdir: str) -> dict:
    up = App(range(os.cpu_count() or 1), workdir, stream_bytes=MIB)
    up.start()
    config = ebbtest.deep_merge({"log": {"level": "info", "access": False},
                                 "limits": {"max_connections": conns + 512},
                                 "timeouts": {"client_send": "120s"}}, extra)
    ebb = ebbtest.Ebb(up.port, config, binary=ebb_bin)
    client = None
    slow = None
    try:
        ebb.start()
        base_rss = ebb.rss_kib()
        client = NormalClient(ebb.proxy_port)
        client.start()
        path = {"slow-read": targets.PATHS["stream"], "slow-body": "/upload"}.get(mode, "/small")
        url = f"http://127.0.0.1:{ebb.proxy_port}{path}"
        load0 = os.getloadavg()[0]
        out = open(os.path.join(workdir, "slowhttptest.out"), "w")
        slow = subprocess.Popen(["slowhttptest", *MODES[mode], "-c", str(conns), "-r", "500",
                                 "-l", str(seconds), "-p", "10", "-u", url],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
        peak_sampled = base_rss
        deadline = time.monotonic() + seconds + 30
        while slow.poll() is None and time.monotonic() < deadline:
            peak_sampled = max(peak_sampled, ebb.rss_kib())
            time.sleep(0.25)  # a sampling period, not a wait for a condition
        hwm = ebb.rss_peak_kib()
        out.close()
        with open(out.name, errors="replace") as f:
            # slowhttptest's last status line: the most of its connections ebb held open at once.
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
        ebb.stop()
        up.stop()
    load1 = os.getloadavg()[0]
    return {"mode": mode, "base_kib": base_rss, "hwm_kib": hwm, "rss_kib": peak_sampled,
            "n": len(client.latencies), "p50_ms": pct(client.latencies, 50) * 1e3,
            "p99_ms": pct(client.latencies, 99) * 1e3, "max_ms": max(client.latencies, default=0) * 1e3,
            "failures": client.failures, "held": held, "load": f"{load0:.1f}/{load1:.1f}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ebb", help="path to the ebb binary (a release build)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--max-memory", help="limits.max_memory for ebb (default: ebb's own)")
    args = ap.parse_args()
    for tool in ("slowhttptest", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: `make deps` installs it")
    raise_nofile()
    extra = {"limits": {"max_memory": args.max_memory}} if args.max_memory else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ebb-slow-") as work:
        os.chmod(work, 0o755)
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, args.ebb, args.conns, args.seconds, extra, os.path.join(work, mode)))
            r = rows[-1]
            print(f"{r['mode']:<13} ebb RSS base {r['base_kib'] / 1024:6.1f} MiB  peak {r['hwm_kib'] / 1024:6.1f} MiB"
                  f"  | normal client n={r['n']:<5} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                  f"  max {r['max_ms']:7.1f} ms  failures {r['failures']}  | attack held {r['held']}  | load {r['load']}", flush=True)


if __name__ == "__main__":
    main()
