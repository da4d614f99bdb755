"""gRPC load during a rolling deploy, run as its own process with Debian's /usr/bin/python3
(python3-grpcio): unary workers, each on a long-lived channel of its own, send RPCs back to back
(1-50 ms of server time, 1 B-4 KiB echoed and compared); stream workers, each on a channel of
its own, keep a server stream of 2-6 s open all the time and check every message. A gRPC channel
keeps one HTTP/2 connection and moves to a new one only on GOAWAY or a broken connection. Every
RPC that ends in a non-OK status, a wrong answer or an incomplete stream is a failure; nothing is
retried by this client (grpcio's own transparent retry of an RPC that never left the client
stays on, as in real clients).

Prints `busy` once the load runs (RPCs answered, every stream worker inside a stream); on
SIGTERM lets the RPCs in flight end, then prints `result {json}` and exits."""

import argparse
import faulthandler
import json
import random
import signal
import sys
import threading
import time

import grpc

UNARY = "/zd.Echo/Unary"
STREAM = "/zd.Echo/Stream"
STREAM_INTERVAL_MS = 100
MAX_FAILURES = 200  # detailed; every failure is counted by kind


class Load:
    def __init__(self, target, unary_channels, stream_workers, seed, max_seconds):
        self.target = target
        self.unary_channels = unary_channels
        self.stream_workers = stream_workers
        self.seed = seed
        self.end = time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.unary = self.unary_ok = 0
        self.streams = self.streams_ok = self.messages = 0
        self.in_stream = set()   # stream workers with a stream open that has sent a message
        self.connections = 0     # channel transitions to READY: connections made and used
        self.kinds = {}          # failure kind (a status code name, wrong_body, incomplete_stream) -> count
        self.failures = []       # the first MAX_FAILURES: dicts t, end, kind, method, path, cport, detail

    def channel(self):
        # A subchannel pool of its own, so that each channel holds its own HTTP/2 connection
        # (channels with equal arguments otherwise share one).
        ch = grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])

        def seen(state):
            if state == grpc.ChannelConnectivity.READY:
                with self.lock:
                    self.connections += 1
        ch.subscribe(seen, try_to_connect=False)
        return ch

    def fail(self, t, kind, method, detail):
        with self.lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if len(self.failures) < MAX_FAILURES:
                self.failures.append({"t": t, "end": time.time(), "kind": kind, "method": "gRPC",
                                      "path": method, "cport": None, "detail": detail})

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.end

    def unary_worker(self, idx):
        rng = random.Random(self.seed * 100 + idx)
        ch = self.channel()
        call = ch.unary_unary(UNARY)
        try:
            while self.running():
                ms = rng.randint(1, 50)
                payload = rng.randbytes(rng.randint(1, 4096))
                t = time.time()
                try:
                    got = call(f"{ms}\n".encode() + payload, timeout=10)
                except grpc.RpcError as e:
                    self.fail(t, e.code().name, UNARY, f"{e.code().name}: {e.details()}")
                    # A channel with no connection fails each RPC at once; pacing the next one keeps
                    # the count to about one failure per channel per outage, not thousands.
                    time.sleep(0.1)
                else:
                    if got != payload:
                        self.fail(t, "wrong_body", UNARY, f"{len(got)} bytes, expected {len(payload)}")
                    else:
                        with self.lock:
                            self.unary_ok += 1
                with self.lock:
                    self.unary += 1
        finally:
            ch.close()

    def stream_worker(self, idx):
        rng = random.Random(self.seed * 100 + 50 + idx)
        ch = self.channel()
        call = ch.unary_stream(STREAM)
        try:
            while self.running():
                count = rng.randint(20, 60)  # 2-6 s at 100 ms
                t = time.time()
                got = 0
                try:
                    for msg in call(f"{count} {STREAM_INTERVAL_MS}".encode(), timeout=30):
                        if msg != f"{got} {count}".encode():
                            raise ValueError(f"message {got} was {msg[:40]!r}")
                        got += 1
                        with self.lock:
                            self.messages += 1
                            self.in_stream.add(idx)
                    if got != count:
                        self.fail(t, "incomplete_stream", STREAM, f"{got} of {count} messages, status OK")
                    else:
                        with self.lock:
                            self.streams_ok += 1
                except grpc.RpcError as e:
                    self.fail(t, e.code().name, STREAM, f"{e.code().name}: {e.details()} after {got} of "
                                                        f"{count} messages")
                    time.sleep(0.1)  # paced as for unary RPCs
                except ValueError as e:
                    self.fail(t, "wrong_body", STREAM, str(e))
                with self.lock:
                    self.streams += 1
                    self.in_stream.discard(idx)
        finally:
            ch.close()

    def busy(self):
        with self.lock:
            return self.unary_ok >= 20 and len(self.in_stream) == self.stream_workers

    def result(self):
        with self.lock:
            return {"unary": self.unary, "unary_ok": self.unary_ok, "streams": self.streams,
                    "streams_ok": self.streams_ok, "messages": self.messages,
                    "connections": self.connections, "unary_channels": self.unary_channels,
                    "stream_workers": self.stream_workers, "kinds": dict(self.kinds),
                    "failures": list(self.failures)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="host:port of the service")
    ap.add_argument("--unary-channels", type=int, default=12)
    ap.add_argument("--stream-workers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--busy-timeout", type=float, default=30)
    args = ap.parse_args()
    faulthandler.register(signal.SIGUSR1)  # the harness asks for every thread's stack before a SIGKILL
    # SIGTERM is blocked in every thread (grpcio's too, which inherit the mask) and taken with
    # sigtimedwait: a Python handler that sets an Event can deadlock on the Event's own lock when
    # it interrupts the main thread inside Event.wait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    stopping = lambda timeout: signal.sigtimedwait({signal.SIGTERM}, timeout) is not None
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    load = Load(args.target, args.unary_channels, args.stream_workers, seed, args.max_seconds)
    threads = [threading.Thread(target=load.unary_worker, args=(i,), daemon=True)
               for i in range(args.unary_channels)]
    threads += [threading.Thread(target=load.stream_worker, args=(i,), daemon=True)
                for i in range(args.stream_workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + args.busy_timeout
    while not load.busy():
        if stopping(0) or time.monotonic() > deadline:
            print(f"error: load did not start: {json.dumps(load.result())[:2000]}", flush=True)
            break
        time.sleep(0.02)  # polling the workers' own counters
    else:
        print("busy", flush=True)
        stopping(args.max_seconds)
    load.stop.set()
    for t in threads:
        t.join(timeout=40)
    left = sum(t.is_alive() for t in threads)
    out = load.result()
    out["threads_left"] = left
    print("result " + json.dumps(out), flush=True)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
