"""Self-test of the harness package, needing no ebb: the client talks to FakeUpstream directly, and the Ebb
fixture runs a stand-in script that logs like ebb. Not a CTest test (its name does not start
with test_); run it after changing the harness: `python3 tests/e2e/harness_selftest.py`."""

import os
import signal
import socket
import stat
import tempfile
import time
import unittest

from harness.case import EbbTestCase
from harness.data import GIB, StreamCheck, pattern_bytes, pattern_chunks
from harness.ebb import Ebb
from harness.handlers import (close_at_once, close_mid_body, continue_then, echo, never_answer, ok,
                              route, send_huge, upgrade_echo)
from harness.http import build_request, chunked_body
from harness.wait import HarnessError, dl

STANDIN = r"""#!/usr/bin/env python3
import json, signal, socket, sys, time
cfg = open(sys.argv[2]).read()
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
a = socket.socket(); a.bind(("127.0.0.1", 0)); a.listen(8)
def term(*_):
    log("exiting", code=0); sys.exit(0)
signal.signal(signal.SIGTERM, term)  # before `listening`: a test may signal right after it
def log(msg, **kw):
    sys.stderr.write(json.dumps({"ts": "t", "level": "info", "msg": msg, **kw}) + "\n"); sys.stderr.flush()
log("listening", proxy="127.0.0.1:%d" % s.getsockname()[1], admin="127.0.0.1:%d" % a.getsockname()[1])
sys.stderr.write("not json\n"); sys.stderr.flush()
log("config", text=cfg)
while True: time.sleep(1)
"""


class FakeUpstreamSelfTest(EbbTestCase):
    def test_keepalive_counts_one_accept(self):
        fake = self.start_fake(echo())
        c = self.connect(fake.port)
        for i in range(20):
            r = c.request("POST", f"/r{i}", body=b"x%d" % i)
            self.assertEqual((r.status, r.body), (200, b"x%d" % i))
        c.close()
        self.assertEqual(fake.accepts, 1)
        self.assertEqual([q.target for q in fake.requests], [f"/r{i}" for i in range(20)])

    def test_chunked_request_and_response(self):
        fake = self.start_fake(lambda req, conn: conn.respond(200, req.read_body(), framing="chunked",
                                                              chunk_sizes=[1, 7, 100]))
        c = self.connect(fake.port)
        body = pattern_bytes(300000)
        c.send(build_request("POST", "/c", [("Transfer-Encoding", "chunked")],
                             chunked_body([body[:10], body[10:70000], body[70000:]], ext=";a=b")))
        r = c.read_response()
        self.assertEqual(r.framing, "chunked")
        self.assertEqual(r.body, body)
        self.assertEqual(fake.requests[0].body, body)
        self.assertTrue(fake.requests[0].complete)

    def test_close_delimited_head_and_continue(self):
        fake = self.start_fake(route({
            "/close": ok(b"until close", framing="close"),
            "/head": ok(b"x" * 1234),
            "/cont": continue_then(echo()),
        }))
        c = self.connect(fake.port)
        r = c.request("HEAD", "/head")
        self.assertEqual((r.status, r.body, r.header("Content-Length")), (200, b"", "1234"))
        c.send(build_request("POST", "/cont", [("Expect", "100-continue"), ("Content-Length", "5")]))
        r = c.read_response(skip_1xx=False)
        self.assertEqual(r.status, 100)
        c.send(b"hello")
        self.assertEqual(c.read_response().body, b"hello")
        r = c.request("GET", "/close")
        self.assertEqual((r.framing, r.body), ("close", b"until close"))
        self.assertTrue(c.eof)

    def test_mid_body_close_and_never_answer(self):
        fake = self.start_fake(route({"/mid": close_mid_body(100000, 5000), "/hang": never_answer}))
        c2 = self.connect(fake.port)
        c2.send(build_request("GET", "/mid"))
        r = c2.read_response(allow_truncated=True)
        self.assertFalse(r.complete)
        self.assertEqual(len(r.body), 5000)
        c3 = self.connect(fake.port)
        c3.send(build_request("GET", "/hang"))
        fake.wait_requests(2)
        c3.close()
        idx = fake.requests[1].conn.index
        fake.wait_conn_closed(idx, 2)

    def test_close_at_once(self):
        fake = self.start_fake(ok(), on_accept=close_at_once)
        c = self.connect(fake.port)
        self.assertClosed(c)
        self.assertEqual(fake.accepts, 1)
        self.assertEqual(fake.requests, [])

    def test_upgrade_echo(self):
        fake = self.start_fake(upgrade_echo(first=b"hi"))
        c = self.connect(fake.port)
        c.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket")]))
        r = c.read_head()
        self.assertEqual(r.status, 101)
        self.assertEqual(c.read_exact(2), b"hi")
        c.send(b"ping\x00\xff")
        self.assertEqual(c.read_exact(6), b"ping\x00\xff")

    def test_huge_download_and_upload_speed(self):
        fake = self.start_fake(route({"/down": send_huge(GIB), "/up": lambda req, conn: (
            setattr(req, "check", StreamCheck()), req.read_body(sink=req.check.update),
            conn.respond(200, b"%d %d" % (req.check.count, req.check.crc)))[-1]}))
        c = self.connect(fake.port, timeout=dl(60))
        t = time.monotonic()
        c.send(build_request("GET", "/down"))
        r = c.read_head()
        got = StreamCheck()
        c.read_body_into(r, got.update)
        self.assertEqual(got.count, GIB)
        self.assertEqual(got.crc, fake.requests[0].response_check.crc)
        down = time.monotonic() - t
        t = time.monotonic()
        c.send(build_request("POST", "/up", [("Content-Length", str(GIB))]))
        sent = StreamCheck()
        for ch in pattern_chunks(GIB):
            c.send(ch)
            sent.update(ch)
        r = c.read_response()
        self.assertEqual(r.body, b"%d %d" % (GIB, sent.crc))
        print(f"\n  1 GiB direct: download {down:.2f}s, upload {time.monotonic() - t:.2f}s")


class EbbFixtureSelfTest(EbbTestCase):
    def test_missing_binary_fails_clearly(self):
        with self.assertRaises(HarnessError) as cm:
            Ebb(1234, binary="/nonexistent/ebb").start()
        self.assertIn("not found", str(cm.exception))

    def test_standin_lifecycle(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "fake-ebb")
        with open(path, "w") as f:
            f.write(STANDIN)
        os.chmod(path, stat.S_IRWXU)
        ebb = self.start_ebb(4321, {"limits": {"max_body_bytes": 1000}}, binary=path)
        self.assertTrue(ebb.proxy_port and ebb.admin_port)
        socket.create_connection(("127.0.0.1", ebb.proxy_port), 2).close()
        rec = ebb.wait_log("config")
        self.assertIn("upstream: 127.0.0.1:4321", rec["text"])
        self.assertIn("max_body_bytes: 1000", rec["text"])
        self.assertGreater(ebb.rss_peak_kib(), 0)
        ebb.signal(signal.SIGTERM)
        self.assertEqual(ebb.wait_exit(5), 0)
        ebb.wait_log("exiting", code=0)
        self.assertIn("not json", ebb.log_text())


if __name__ == "__main__":
    unittest.main()
