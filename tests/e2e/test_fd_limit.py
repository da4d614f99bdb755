"""Issue 14 / SPEC §5: descriptor exhaustion. With `ulimit -n 256` and 1000 clients at once, ebb
neither crashes nor spins nor hangs a client: it serves as many as its descriptor budget holds
(two descriptors per client, the pool and the admin port kept aside), closes the others at once
(counted), keeps its admin port, probes and metrics answering, accepts again as descriptors free
up, and still drains."""

import resource
import selectors
import signal
import socket
import time
import unittest

from harness.admin import healthz, readyz, scrape
from harness.case import LifecycleCase
from harness.handlers import ok
from harness.http import build_request
from harness.lifecycle import wait_exit, wait_ready
from harness.wait import dl, wait_until

NOFILE = 256
CLIENTS = 1000


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class Flood:
    """CLIENTS non-blocking connections, each sending one GET; each ends served (a whole 200
    answer) or closed by ebb before any byte of an answer."""

    def __init__(self, port: int):
        self.sel = selectors.DefaultSelector()
        self.state = {}
        for _ in range(CLIENTS):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.state[s] = {"sent": False, "buf": b"", "end": None}
            self.sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)

    def run(self, timeout: float):
        deadline = time.monotonic() + timeout
        req = build_request("GET", "/")
        while any(st["end"] is None for st in self.state.values()):
            if time.monotonic() > deadline:
                left = sum(st["end"] is None for st in self.state.values())
                raise AssertionError(f"{left} of {CLIENTS} clients neither served nor closed: a hang")
            for key, ev in self.sel.select(0.2):
                s, st = key.fileobj, self.state[key.fileobj]
                try:
                    if ev & selectors.EVENT_WRITE and not st["sent"]:
                        s.send(req)
                        st["sent"] = True
                        self.sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    st["end"] = "closed" if not st["buf"] else "truncated"
                    self.sel.unregister(s)
                    continue
                st["buf"] += data
                if st["buf"].startswith(b"HTTP/1.1 200") and st["buf"].endswith(b"\r\n\r\nx"):
                    st["end"] = "served"  # the connection stays open (keep-alive), holding its fds
                    self.sel.unregister(s)
        return {k: sum(st["end"] == k for st in self.state.values()) for k in ("served", "closed", "truncated")}

    def close(self):
        for s in self.state:
            s.close()
        self.sel.close()


class FdLimit(LifecycleCase):
    def test_1000_clients_at_256_descriptors(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < CLIENTS + 512:  # the test's own sockets
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
            self.on_teardown(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
        fake = self.start_fake(ok(b"x"))
        ebb = wait_ready(self.start_ebb(fake, {"shutdown": {"drain_timeout": "5s"}}, nofile=NOFILE))
        cap = ebb.listening.get("max_connections")
        self.assertEqual(ebb.listening.get("fd_limit"), NOFILE, ebb.listening)
        self.assertTrue(0 < cap < NOFILE // 2, f"the client budget leaves descriptors aside: {ebb.listening}")
        self.assertEqual(ebb.listening.get("max_connections"), (NOFILE - 32 - 64) // 2, ebb.listening)

        flood = Flood(ebb.proxy_port)
        self.on_teardown(flood.close)
        ends = flood.run(dl(30))
        self.assertEqual(ends["truncated"], 0, ends)
        self.assertGreaterEqual(ends["served"], 1, ends)
        self.assertLessEqual(ends["served"], cap, ends)
        self.assertEqual(ends["served"] + ends["closed"], CLIENTS, ends)
        self.assertTrue(ebb.alive(), "ebb survived")

        # With every client slot taken, the admin port still answers.
        self.assertEqual(healthz(ebb), (200, "ok"))
        self.assertEqual(readyz(ebb), (200, "ready"))
        m = scrape(ebb)
        self.assertGreaterEqual(m.value("ebb_connections_rejected_total"), ends["closed"])
        self.assertEqual(m.value("ebb_connections_active"), ends["served"])

        # Held connections, nothing to do: ebb must not spin on a listener it cannot serve.
        before = cpu_ticks(ebb.pid)
        time.sleep(1.0)  # the idle second is the behaviour under test
        self.assertLess(cpu_ticks(ebb.pid) - before, 20, "ebb burned CPU while idle at its limit")

        flood.close()
        wait_until(lambda: scrape(ebb).value("ebb_connections_active") == 0, dl(10), "the clients to be gone")
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/again"), b"x", "accepting again once descriptors are free")
        c.close()

        ebb.signal(signal.SIGTERM)
        self.assertEqual(wait_exit(ebb, dl(15)), 0)
        self.assertEqual(ebb.logs("drained")[0].get("unanswered"), 0)


if __name__ == "__main__":
    unittest.main()
