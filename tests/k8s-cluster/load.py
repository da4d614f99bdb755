#!/usr/bin/env python3
"""The proof's load, run inside the cluster's network namespace against a Service's ClusterIP
until SIGTERM, then one JSON summary on stdout. Keep-alive clients reuse one connection each and
never retry: a request that gets no whole, correct answer is a failure, whatever the reason (a
connection the server closes while idle included); they reconnect only after an answer said
`Connection: close` or after a failure. Beside them, the rolling-deploy proof's new-connection
client (fast GETs, POSTs of 1 B-64 KiB whose echo is compared, and slow requests of 0.3-3 s).

    load.py HOST PORT [--keepalive 32] [--newconn 8] [--slow 4]"""

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "zero-downtime"))
from zd_load import KINDS, MixClient  # noqa: E402


class KeepAliveClient(MixClient):
    """Threads with one persistent connection each: GET / (answer "ok\\n") and POST /echo with
    1 B-16 KiB (the echo is compared). No retry, ever. Stopping and counting as MixClient."""

    def __init__(self, host, port, workers, timeout_s=10.0, seed=None):
        super().__init__(port, slow_workers=0, mix_workers=0, timeout_s=timeout_s, seed=seed, host=host)
        self.workers = workers
        self.connections = 0  # connections opened (the first, and after each close or failure)
        self.crashed = []  # tracebacks of workers that died

    def start(self):
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self):
        super().stop()
        if self.crashed:
            raise RuntimeError(f"{len(self.crashed)} keep-alive worker(s) died:\n{self.crashed[0]}")

    def _fail(self, t, kind, method, path, cport, served, detail):
        with self._lock:
            self.failures.append({"t": t, "end": time.time(), "kind": kind, "method": method,
                                  "path": path, "cport": cport, "served_before": served,
                                  "detail": detail})

    def _run(self, idx):
        try:
            self._loop(idx)
        except BaseException:  # a dead worker would quietly shrink the load: the run must fail
            with self._lock:
                self.crashed.append(traceback.format_exc())

    def _loop(self, idx):
        rng = random.Random(self.seed * 100 + idx)
        conn = None
        served = 0  # answers on the current connection
        while not self._stop.is_set():
            if conn is None or conn.sock is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
                served = 0
            if rng.random() < 0.7:
                method, path, body, expect = "GET", "/", None, b"ok\n"
            else:
                body = rng.randbytes(rng.randint(1, 16384))
                method, path, expect = "POST", "/echo", body
            t = time.time()
            fresh = conn.sock is None
            cport = None
            try:
                if fresh:
                    try:
                        conn.connect()
                    except TimeoutError as e:
                        self._fail(t, "timeout", method, path, None, 0, f"connect: {e!r}")
                        conn.close()
                        continue
                    except OSError as e:
                        self._fail(t, "connect", method, path, None, 0, repr(e))
                        conn.close()
                        continue
                    with self._lock:
                        self.connections += 1
                cport = conn.sock.getsockname()[1]
                headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if not 200 <= resp.status < 300:
                    self._fail(t, "non2xx", method, path, cport, served,
                               f"{resp.status} X-Ebb-Error={resp.getheader('X-Ebb-Error')} body={data[:80]!r}")
                elif data != expect:
                    self._fail(t, "wrong_body", method, path, cport, served,
                               f"{len(data)} bytes, expected {len(expect)}")
                else:
                    with self._lock:
                        self.ok += 1
                served += 1
            except TimeoutError as e:
                self._fail(t, "timeout", method, path, cport, served, repr(e))
                conn.close()
            except (OSError, http.client.HTTPException) as e:
                self._fail(t, "reset", method, path, cport, served, repr(e))
                conn.close()
            finally:
                with self._lock:
                    self.requests += 1
        if conn is not None:
            conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--keepalive", type=int, default=32)
    ap.add_argument("--newconn", type=int, default=8)
    ap.add_argument("--slow", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ka = KeepAliveClient(a.host, a.port, a.keepalive, a.timeout)
    mix = MixClient(a.port, slow_workers=a.slow, mix_workers=a.newconn, timeout_s=a.timeout,
                    max_seconds=3600, host=a.host)
    ka.start()
    mix.start()
    # Busy means answers from every kind of client and slow requests in flight.
    deadline = time.monotonic() + 60
    while not ka.crashed and not (ka.ok >= a.keepalive and mix.ok >= a.newconn and mix.in_flight >= min(a.slow, 1)):
        if time.monotonic() > deadline or stop.is_set():
            break
        time.sleep(0.05)  # polling the clients' own counters
    print(json.dumps({"busy": ka.ok >= a.keepalive and mix.ok >= a.newconn and not ka.crashed,
                      "keepalive_ok": ka.ok, "newconn_ok": mix.ok}), flush=True)
    while not stop.wait(1.0):
        pass
    ka.stop()
    mix.stop()
    failures = sorted([dict(f, client="keepalive") for f in ka.failures] + [dict(f, client="newconn") for f in mix.failures], key=lambda f: f["t"])
    kinds = {k: ka.kinds()[k] + mix.kinds()[k] for k in KINDS}
    print(json.dumps({
        "requests": ka.requests + mix.requests, "failed": len(failures), "kinds": kinds,
        "keepalive": {"requests": ka.requests, "failed": len(ka.failures), "connections": ka.connections},
        "newconn": {"requests": mix.requests, "failed": len(mix.failures)},
        "failures": failures[:5000]}), flush=True)


if __name__ == "__main__":
    main()
