#!/usr/bin/env python3
"""The proof's load, run inside the cluster's network namespace against a Service's ClusterIP
until SIGTERM, then one JSON summary on stdout: the rolling-deploy proof's clients
(tests/zero-downtime/zd_load.py). Keep-alive clients that never retry and check every answer
(GETs, POSTs up to 4 MiB whose echo is compared, short slow requests); they leave a connection
only after `Connection: close` or when the server's FIN is already there before a send (as Go's
client does), and any other close before a whole answer is a failure. Beside them, clients with
a new connection per request: fast GETs, POSTs of 1 B-64 KiB, and slow requests of 0.3-3 s.

    load.py HOST PORT [--keepalive 32] [--newconn 8] [--slow 4]"""

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "zero-downtime"))
from zd_load import KINDS, KeepAliveClient, MixClient  # noqa: E402


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
    ka = KeepAliveClient(a.port, workers=a.keepalive, timeout_s=a.timeout, max_seconds=3600, host=a.host)
    mix = MixClient(a.port, slow_workers=a.slow, mix_workers=a.newconn, timeout_s=a.timeout,
                    max_seconds=3600, host=a.host)
    ka.start()
    mix.start()
    # Busy means answers from every kind of client and slow requests in flight.
    deadline = time.monotonic() + 60
    while not (ka.ok >= a.keepalive and mix.ok >= a.newconn and mix.in_flight >= min(a.slow, 1)):
        if time.monotonic() > deadline or stop.is_set():
            break
        time.sleep(0.05)  # polling the clients' own counters
    print(json.dumps({"busy": ka.ok >= a.keepalive and mix.ok >= a.newconn,
                      "keepalive_ok": ka.ok, "newconn_ok": mix.ok}), flush=True)
    while not stop.wait(1.0):
        pass
    ka.stop()
    mix.stop()
    failures = sorted([dict(f, client="keepalive") for f in ka.failures] + [dict(f, client="newconn") for f in mix.failures], key=lambda f: f["t"])
    kinds = {k: ka.kinds()[k] + mix.kinds()[k] for k in KINDS}
    print(json.dumps({
        "requests": ka.requests + mix.requests, "failed": len(failures), "kinds": kinds,
        "keepalive": {"requests": ka.requests, "failed": len(ka.failures), "reused": ka.reused,
                      "closed_by_server": ka.closed_by_server, "announced": ka.announced},
        "newconn": {"requests": mix.requests, "failed": len(mix.failures)},
        "failures": failures[:5000]}), flush=True)


if __name__ == "__main__":
    main()
