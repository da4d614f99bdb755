"""Load during the deploy: wrk on keep-alive connections; a Python client that opens a new
connection per request and mixes fast GETs, POSTs whose echo is checked, and slow requests
(0.3-3 s) so that requests are always in flight when a pod is deleted; and a keep-alive client
that never retries and checks every answer. Every failure is counted by kind: connect, reset
(the connection broke or closed before a whole answer), timeout, non2xx, wrong_body."""

import http.client
import json
import random
import re
import select
import signal
import socket
import threading
import time

from zd_procs import GRPC_PYTHON, HERE, Proc

KINDS = ("connect", "reset", "timeout", "non2xx", "wrong_body")


class Wrk:
    """wrk -t1 -c16 on keep-alive connections. It runs with a duration longer than any deploy and
    is stopped with SIGINT when the deploy is done (wrk then prints its summary as usual)."""

    def __init__(self, url, workdir, connections=16, timeout_s=10, max_seconds=900):
        self.url = url
        self.workdir = workdir
        self.connections = connections
        self.timeout_s = timeout_s
        self.max_seconds = max_seconds
        self.proc = None
        self.summary = None

    def start(self):
        self.proc = Proc("wrk", ["wrk", "-t1", f"-c{self.connections}", f"-d{self.max_seconds}s",
                                 "--timeout", f"{self.timeout_s}s", self.url], self.workdir,
                         capture=False)

    def stop(self):
        """Stops wrk and returns its parsed summary. Raises if wrk ended before it was told to:
        then the load did not cover the whole deploy."""
        ran_to_the_end = self.proc.alive()
        self.proc.stop(grace=10.0, sig=signal.SIGINT)
        text = self.proc.log_path.read_text(errors="replace")
        if not ran_to_the_end:
            raise RuntimeError(f"wrk ended before the deploy did (exit {self.proc.popen.returncode}):\n{text}")
        m = re.search(r"(\d+) requests in ", text)
        if not m:
            raise RuntimeError(f"no summary in wrk's output:\n{text}")
        s = {"requests": int(m.group(1)), "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        if m:
            s.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)),
                     timeout=int(m.group(4)))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            s["non2xx"] = int(m.group(1))
        self.summary = s
        return s

    @staticmethod
    def kinds(s):
        """wrk's counts in the harness's kinds (read and write errors are broken connections)."""
        return {"connect": s["connect"], "reset": s["read"] + s["write"], "timeout": s["timeout"],
                "non2xx": s["non2xx"], "wrong_body": 0}


class GrpcLoad:
    """The gRPC clients (zd_grpc_load.py, its own process under Debian's python3 with grpcio):
    unary RPCs on long-lived channels and long server streams, against the service port. It
    prints `busy` once the load runs, and on SIGTERM ends its RPCs in flight and prints
    `result {json}`."""

    STOP_GRACE = 45.0  # RPCs in flight end first: streams of up to 6 s, unary deadlines of 10 s

    def __init__(self, port, workdir, unary_channels=12, stream_workers=8, max_seconds=900):
        self.argv = [GRPC_PYTHON, "-u", str(HERE / "zd_grpc_load.py"), "--target", f"127.0.0.1:{port}",
                     "--unary-channels", str(unary_channels), "--stream-workers", str(stream_workers),
                     "--max-seconds", str(max_seconds)]
        self.workdir = workdir
        self.proc = None
        self.result = None

    def start(self):
        self.proc = Proc("grpc-load", self.argv, self.workdir)

    def wait_busy(self, timeout):
        line = self.proc.wait_line(lambda t: t == "busy" or t.startswith("error:"), timeout,
                                   "`busy` line from the gRPC clients")
        if line != "busy":
            raise RuntimeError(f"gRPC load: {line}")

    def stop(self):
        """Stops the clients and returns their result. Raises if they ended before they were
        told to (the load did not cover the whole deploy) or did not report."""
        if self.result is not None:
            return self.result
        ran_to_the_end = self.proc.alive()
        self.proc.send(signal.SIGTERM)
        if self.proc.wait(self.STOP_GRACE) is None:
            self.proc.send(signal.SIGUSR1)  # its threads' stacks go to its log, then SIGKILL
            self.proc.wait(2)
        self.proc.stop(grace=0)
        lines = [t for _, tag, t in self.proc.lines if tag == "out" and t.startswith("result ")]
        if not ran_to_the_end or self.proc.killed or not lines:
            raise RuntimeError(f"gRPC load ended badly (ran to the end: {ran_to_the_end}, exit "
                               f"{self.proc.popen.returncode}, killed: {self.proc.killed}):\n{self.proc.tail()}")
        self.result = json.loads(lines[-1][len("result "):])
        if self.result["threads_left"]:
            raise RuntimeError(f"gRPC load: {self.result['threads_left']} client threads did not stop")
        return self.result


class MixClient:
    """Threads that each open a new connection per request: slow workers keep requests of
    0.3-3 s in flight all the time; mix workers send fast GETs, POSTs with bodies of 1 B-64 KiB
    (the echo is compared), and short slow requests. Bounded in time and in count."""

    def __init__(self, port, slow_workers=12, mix_workers=3, timeout_s=10.0, max_seconds=900,
                 max_requests_per_worker=200000, seed=None, host="127.0.0.1"):
        self.host = host
        self.port = port
        self.slow_workers = slow_workers
        self.mix_workers = mix_workers
        self.timeout_s = timeout_s
        self.max_seconds = max_seconds
        self.max_requests = max_requests_per_worker
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self.requests = 0
        self.ok = 0
        self.in_flight = 0
        self.failures = []  # dicts: t (sent), end (failed), kind, method, path, cport, detail

    def start(self):
        for i in range(self.slow_workers):
            self._threads.append(threading.Thread(target=self._run, args=("slow", i), daemon=True))
        for i in range(self.mix_workers):
            self._threads.append(threading.Thread(target=self._run, args=("mix", i), daemon=True))
        for t in self._threads:
            t.start()

    def stop(self):
        """Lets every request in flight finish (each is bounded by the timeout), then returns."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)
        if any(t.is_alive() for t in self._threads):
            raise RuntimeError("load client threads did not stop")

    def wait_busy(self, completed, in_flight, timeout):
        """Waits until `completed` requests have been answered and `in_flight` are in flight."""
        deadline = time.monotonic() + timeout
        while not (self.requests >= completed and self.in_flight >= in_flight):
            if time.monotonic() > deadline:
                raise TimeoutError(f"load did not start: {self.requests} requests, "
                                   f"{self.in_flight} in flight, failures {self.failures[:3]}")
            time.sleep(0.02)  # polling the client's own counters

    def kinds(self):
        k = dict.fromkeys(KINDS, 0)
        for f in self.failures:
            k[f["kind"]] += 1
        return k

    def _run(self, role, idx):
        rng = random.Random(self.seed * 100 + idx * 2 + (role == "slow"))
        end = time.monotonic() + self.max_seconds
        n = 0
        while not self._stop.is_set() and time.monotonic() < end and n < self.max_requests:
            n += 1
            if role == "slow":
                ms = rng.randint(300, 3000)
                self._one("GET", f"/slow?ms={ms}", None, f"slept {ms}\n".encode())
                continue
            r = rng.random()
            if r < 0.45:
                self._one("GET", "/", None, b"ok\n")
            elif r < 0.9:
                body = rng.randbytes(rng.randint(1, 65536))
                self._one("POST", "/echo", body, body)
            else:
                ms = rng.randint(300, 1000)
                self._one("GET", f"/slow?ms={ms}", None, f"slept {ms}\n".encode())

    def _fail(self, t, kind, method, path, cport, detail):
        with self._lock:
            self.failures.append({"t": t, "end": time.time(), "kind": kind, "method": method,
                                  "path": path, "cport": cport, "detail": detail})

    def _one(self, method, path, body, expect):
        t = time.time()
        cport = None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        with self._lock:
            self.in_flight += 1
        try:
            try:
                conn.connect()
            except TimeoutError as e:
                return self._fail(t, "timeout", method, path, cport, f"connect: {e!r}")
            except OSError as e:
                return self._fail(t, "connect", method, path, cport, repr(e))
            cport = conn.sock.getsockname()[1]
            headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if not 200 <= resp.status < 300:
                err = resp.getheader("X-Ebb-Error")
                return self._fail(t, "non2xx", method, path, cport,
                                  f"{resp.status} X-Ebb-Error={err} body={data[:100]!r}")
            if data != expect:
                return self._fail(t, "wrong_body", method, path, cport,
                                  f"{len(data)} bytes, expected {len(expect)}: {data[:60]!r}")
            with self._lock:
                self.ok += 1
        except TimeoutError as e:
            self._fail(t, "timeout", method, path, cport, repr(e))
        except (OSError, http.client.HTTPException) as e:
            self._fail(t, "reset", method, path, cport, repr(e))
        finally:
            conn.close()
            with self._lock:
                self.in_flight -= 1
                self.requests += 1


class KeepAliveClient(MixClient):
    """Threads that each keep one keep-alive connection (http.client, which never retries) and
    send requests back to back on it, checking every status and body: fast GETs, POSTs of
    1 B-64 KiB and now and then uploads of 1-4 MiB (Content-Length or chunked, the echo
    compared), short slow requests, and chunked streams when the app has them. A connection is
    left when a response says `Connection: close`, or when the server's FIN is already readable
    before a send (as Go's client checks); any other close before a whole answer is a failure."""

    def __init__(self, port, workers=12, stream=False, **kw):
        super().__init__(port, slow_workers=0, mix_workers=workers, **kw)
        self.stream = stream
        self.reused = 0           # requests sent on a connection that had answered before
        self.closed_by_server = 0  # connections found closed (FIN readable) before a send
        self.announced = 0        # answers that said Connection: close

    def start(self):
        for i in range(self.mix_workers):
            self._threads.append(threading.Thread(target=self._keepalive, args=(i,), daemon=True))
        for t in self._threads:
            t.start()

    @staticmethod
    def _fin_readable(sock):
        if not select.select([sock], [], [], 0)[0]:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _pick(self, rng):
        r = rng.random()
        if r < 0.5:
            return "GET", "/", None, b"ok\n"
        if r < 0.75:
            size = rng.randint(1 << 20, 4 << 20) if rng.random() < 0.04 else rng.randint(1, 65536)
            body = rng.randbytes(size)
            return "POST", "/echo", body, body
        if r < 0.85 or not self.stream:
            ms = rng.randint(1, 200)
            return "GET", f"/slow?ms={ms}", None, f"slept {ms}\n".encode()
        n = rng.randint(1, 10)
        return "GET", f"/stream?n={n}", None, b"".join(f"chunk {i}\n".encode() for i in range(n))

    def _keepalive(self, idx):
        rng = random.Random(self.seed * 100 + 50 + idx)
        end = time.monotonic() + self.max_seconds
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        answered_on_conn = 0
        try:
            while not self._stop.is_set() and time.monotonic() < end:
                if conn.sock is not None and self._fin_readable(conn.sock):
                    conn.close()  # the server closed first: nothing was sent, nothing lost
                    with self._lock:
                        self.closed_by_server += 1
                if conn.sock is None:
                    answered_on_conn = 0
                method, path, body, expect = self._pick(rng)
                answered_on_conn = self._ka_one(conn, method, path, body, expect, answered_on_conn,
                                                chunked=body is not None and rng.random() < 0.3)
        finally:
            conn.close()

    def _ka_one(self, conn, method, path, body, expect, answered_on_conn, chunked):
        """One request on the kept connection; returns how many it has answered (0: left)."""
        t = time.time()
        cport = None
        with self._lock:
            self.in_flight += 1
            self.requests += 1
            self.reused += answered_on_conn > 0
        try:
            try:
                if conn.sock is None:
                    conn.connect()
            except TimeoutError as e:
                self._fail(t, "timeout", method, path, cport, f"connect: {e!r}")
                return 0
            except OSError as e:
                self._fail(t, "connect", method, path, cport, repr(e))
                return 0
            cport = conn.sock.getsockname()[1]
            headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
            if chunked:
                conn.request(method, path, body=iter([body]), headers=headers, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            closing = resp.will_close
            if not 200 <= resp.status < 300:
                self._fail(t, "non2xx", method, path, cport,
                           f"{resp.status} X-Ebb-Error={resp.getheader('X-Ebb-Error')} body={data[:100]!r}")
            elif data != expect:
                self._fail(t, "wrong_body", method, path, cport,
                           f"{len(data)} bytes, expected {len(expect)}: {data[:60]!r}")
            else:
                with self._lock:
                    self.ok += 1
            if closing:
                with self._lock:
                    self.announced += 1
                conn.close()
                return 0
            return answered_on_conn + 1
        except TimeoutError as e:
            self._fail(t, "timeout", method, path, cport, f"{e!r} (answered before on this connection: "
                                                        f"{answered_on_conn})")
        except (OSError, http.client.HTTPException) as e:
            self._fail(t, "reset", method, path, cport, f"{e!r} (answered before on this connection: "
                                                      f"{answered_on_conn})")
        finally:
            with self._lock:
                self.in_flight -= 1
        conn.close()
        return 0
