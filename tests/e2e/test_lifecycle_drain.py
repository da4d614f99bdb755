"""SPEC §2 / issue 3, the drain phase after SIGTERM: in-flight requests (a slow app, a slow upload,
a long response) run to completion and ebb exits 0 as soon as they are done; a request longer than
drain_timeout is cut, counted, and ebb exits 1 at the deadline. Lower bounds tight, upper bounds
loose."""

import signal
import time
import unittest

from harness.admin import readyz
from harness.case import LifecycleCase
from harness.config import PROPAGATION_DELAY, PROPAGATION_MAX, QUIET_PERIOD, shutdown_config
from harness.data import pattern_bytes
from harness.handlers import echo, never_answer, ok, route, slow
from harness.http import build_response
from harness.lifecycle import EARLY, assert_drained_clean, assert_lifecycle_once, exit_timed
from harness.wait import dl


class Drain(LifecycleCase):
    def test_3s_request_started_before_sigterm_completes_with_200_then_exit_0(self):
        drain_timeout = 10.0  # 3s fit with room; waiting for this deadline would be obvious
        fake, ebb = self.proxy(slow(3.0, ok(b"slow done")),
                               shutdown_config(PROPAGATION_DELAY, QUIET_PERIOD, PROPAGATION_MAX,
                                               drain_timeout))
        c = self.connect(ebb)
        ts = time.monotonic()
        c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        fake.wait_requests(1, dl(5))
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        r = c.read_response(timeout=dl(10))
        t_resp = time.monotonic()
        self.assertOk(r, b"slow done", "a request in flight at SIGTERM must complete")
        self.assertGreaterEqual(t_resp - ts, 3.0 - EARLY)
        self.assertIn("close", r.header_tokens("Connection"),
                      f"a response sent during the drain carries Connection: close: {r!r}")
        self.assertClosed(c, dl(2), "the connection closes after the last response")
        c.close()
        code, elapsed = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 0, "nothing was cut: exit 0")
        t_exit = t0 + elapsed
        # Exit when the last request is done, not at the deadline (~8s later).
        self.assertLessEqual(t_exit - t_resp, dl(3.0),
                             f"ebb exited {t_exit - t_resp:.3f}s after the last response")
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut")), (1, 0), rec)
        self.assertGreaterEqual(rec.get("seconds"), 3.0 - (t0 - ts) - EARLY, rec)
        self.assertEqual(ebb.logs("exiting")[0].get("code"), 0)
        assert_lifecycle_once(self, ebb)

    def test_request_longer_than_drain_timeout_is_cut_counted_and_exit_1(self):
        gate = self.gate(ok(b"quick"))
        fake, ebb = self.proxy(route({"/hang": never_answer, "/quick": gate}))
        hang = self.connect(ebb)
        hang.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        fake.wait_requests(1, dl(5))
        quick = self.hold(ebb, gate, "/quick")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        gate.release()  # this one finishes within drain_timeout
        r = quick.read_response(timeout=dl(5))
        self.assertOk(r, b"quick")
        self.assertIn("close", r.header_tokens("Connection"))
        code, elapsed = exit_timed(ebb, t0, dl(15))
        self.assertEqual(code, 1, "a request was cut at drain_timeout: exit 1")
        deadline = PROPAGATION_DELAY + 1.5
        self.assertGreaterEqual(elapsed, deadline - EARLY,
                                f"exited {elapsed:.3f}s after SIGTERM, before propagation + drain_timeout")
        self.assertLessEqual(elapsed, deadline + dl(3.0))
        self.assertTrue(hang.wait_closed(dl(2)), "the cut request's connection must be closed")
        self.assertEqual(hang.after_close, b"", "the cut request got no (partial) answer")
        rec = ebb.logs("drained")[0]
        self.assertEqual(rec.get("cut"), 1, f"the cut request must be counted: {rec}")
        self.assertEqual(rec.get("requests"), 1, f"the quick request completed in the drain: {rec}")
        self.assertEqual(ebb.logs("exiting")[0].get("code"), 1)
        fake.wait_conn_closed(0, dl(2))  # the app side of the cut request is released too
        assert_lifecycle_once(self, ebb)

    def test_slow_upload_started_before_sigterm_completes(self):
        fake, ebb = self.proxy(echo())
        body = pattern_bytes(200_000)
        c = self.connect(ebb)
        c.send(f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
               + body[:50_000])
        fake.wait_for(lambda: fake.requests and fake.total_bytes_received() > 50_000 // 2,
                      dl(5), "the upload's first bytes at the app")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))  # the rest of the body comes in the drain phase
        c.send(body[50_000:])
        r = c.read_response(timeout=dl(10))
        self.assertOk(r, body, "an upload in flight at SIGTERM completes")
        self.assertIn("close", r.header_tokens("Connection"))
        self.assertClosed(c, dl(2))
        c.close()
        assert_drained_clean(self, ebb, t0)

    def test_long_response_started_before_sigterm_completes_and_connection_closes(self):
        first, rest = pattern_bytes(100_000), pattern_bytes(400_000, start=100_000)
        gate = self.gate(lambda req, conn: conn.send(rest))

        def handler(req, conn):
            req.read_body()
            conn.send(build_response(200, b"", [("Content-Length", str(len(first) + len(rest)))],
                                     framing="none") + first)
            return gate(req, conn)
        fake, ebb = self.proxy(handler)
        c = self.connect(ebb)
        c.send(b"GET /long HTTP/1.1\r\nHost: t\r\n\r\n")
        head = c.read_head(timeout=dl(5))
        self.assertEqual(head.status, 200)
        self.assertNotIn("close", head.header_tokens("Connection"), "sent before the drain")
        got = bytearray(c.read_exact(len(first), dl(5)))
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        self.assertEqual(readyz(ebb), (503, "draining"))
        gate.release()
        got += c.read_exact(len(rest), dl(10), "the rest of the long response")
        self.assertEqual(bytes(got), first + rest)
        # Its head promised keep-alive, but the drain closes the connection after it.
        self.assertClosed(c, dl(2), "the connection must close after the response ends")
        c.close()
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 0)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut")), (1, 0), rec)
        assert_lifecycle_once(self, ebb)


if __name__ == "__main__":
    unittest.main()
