"""No connection is lost when the listener closes (issue 11): a flood of new connections runs
through the end of propagation, and every one of them is either refused at connect or answered in
full, never reset after its handshake. Closing a listening socket resets what is in its accept
queue and the handshakes in flight, so ebb first drops new SYNs (the client retries, then meets a
closed port), accepts what completes for a moment, then takes the queue and closes.

The flood is many threads each connecting, sending one request and reading its answer, as fast
as they can, from before the drain until connections are refused; the outcome of each connection
is classified. The negative control floods a server that closes its listener the naive way (a
plain close(2) while connections wait in its queue): the same flood must see resets there."""

import os
import signal
import socket
import threading
import time
import unittest

from harness.case import LifecycleCase
from harness.config import shutdown_config
from harness.handlers import ok
from harness.lifecycle import wait_exit
from harness.wait import dl, wait_until

THREADS = 12
REQUEST = b"GET /flood HTTP/1.1\r\nHost: flood\r\n\r\n"


class Flood:
    def __init__(self, port: int):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"served": 0, "refused": 0, "reset": 0}
        self.resets = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def count(self, kind, detail=""):
        with self.lock:
            self.counts[kind] += 1
            if kind == "reset" and len(self.resets) < 5:
                self.resets.append(detail)

    def run(self):
        refused_in_a_row = 0
        while not self.stop.is_set() and refused_in_a_row < 20:
            s = socket.socket()
            s.settimeout(dl(10))
            try:
                s.connect(("127.0.0.1", self.port))
            except ConnectionRefusedError:
                s.close()
                refused_in_a_row += 1
                self.count("refused")
                continue
            except OSError as e:
                # A reset that lands between the handshake and connect's return (SO_ERROR is
                # ECONNRESET) is a connection lost after its handshake too.
                s.close()
                self.count("reset", f"at connect: {e!r}")
                continue
            refused_in_a_row = 0
            got = b""
            try:
                s.sendall(REQUEST)
                while b"flood-ok" not in got:
                    data = s.recv(4096)
                    if not data:
                        raise ConnectionError("EOF before the answer")
                    got += data
                self.count("served")
            except (OSError, ConnectionError) as e:
                self.count("reset", f"{e!r} after {got[:60]!r}")
            finally:
                s.close()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        return not any(t.is_alive() for t in self.threads)


class NaiveServer:
    """Answers like the app above, one connection at a time, then closes its listener as it is."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.closing = threading.Event()
        self.served = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.closing.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                try:
                    c.recv(4096)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nflood-ok")
                    self.served += 1
                except OSError:
                    pass

    def close(self):
        # It stops accepting (after the connection it may be taking), and closes its listener
        # only once connections wait in the accept queue: those are what a naive close resets.
        # Waiting for them, not for time, keeps the control from passing on a quiet queue.
        self.closing.set()
        if self.sock.fileno() < 0:
            return
        wait_until(lambda: accept_queue(self.port) > 0, dl(10), "connections in the naive server's accept queue")
        self.sock.close()  # what waits in the queue is reset
        self.thread.join(dl(5))


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listener on 127.0.0.1:`port` (for a
    listening socket, /proc/net/tcp's rx_queue is that count)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return int(fields[4].split(":")[1], 16)
    return 0


class ListenerClose(LifecycleCase):
    def flood_through_the_close(self):
        fake, ebb = self.proxy(ok(b"flood-ok"), shutdown_config(0.3, 0.1, 0.6, 10.0))
        flood = Flood(ebb.proxy_port)
        self.on_teardown(flood.stop.set)
        flood.start()
        # Let it run before the drain, so the close meets a busy accept queue.
        deadline = time.monotonic() + dl(5)
        while flood.counts["served"] < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        ebb.signal(signal.SIGTERM)
        self.assertTrue(flood.join(dl(30)), "every flood thread ends once connections are refused")
        self.assertEqual(wait_exit(ebb, dl(15)), 0)
        return flood, ebb

    def test_every_connection_is_refused_or_served_never_reset(self):
        flood, ebb = self.flood_through_the_close()
        self.assertGreater(flood.counts["served"], 200, flood.counts)
        self.assertGreater(flood.counts["refused"], 0, flood.counts)
        self.assertEqual(flood.counts["reset"], 0, f"{flood.counts} {flood.resets}")
        rec = ebb.logs("listener closed")[0]
        self.assertIn("accepted_during_propagation", rec)

    def test_control_the_flood_sees_a_naive_close(self):
        server = NaiveServer()
        self.on_teardown(server.close)
        flood = Flood(server.port)
        self.on_teardown(flood.stop.set)
        flood.start()
        deadline = time.monotonic() + dl(5)
        while server.served < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.close()
        self.assertTrue(flood.join(dl(30)))
        self.assertGreater(flood.counts["reset"], 0, f"the flood must see the naive close: {flood.counts}")


if __name__ == "__main__":
    unittest.main()
