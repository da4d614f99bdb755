"""Issue 8: keep-alive requests in flight when the drain starts are answered, never silently lost.

The rule (SPEC §2): a client connection is closed only after an answer that announced it
(`Connection: close`), or when it is idle at the end of propagation (or by a timeout or limit). An
answer whose head went out before the drain started leaves its connection open: the client's next
request on it is read and answered, with the close announced then. And whatever the cause, a
request a client sent and ebb did not answer is logged and counted in
`ebb_requests_unanswered_total{reason}`.

The app here writes the head and the body of its answer separately, with the drain starting in
between: that is what an ordinary app (head and body in two writes, Nagle on its socket) does to a
keep-alive client at every deploy."""

import signal
import threading
import time
import unittest

from harness.admin import admin_request, scrape, wait_metric
from harness.case import LifecycleCase
from harness.config import shutdown_config
from harness.handlers import close_mid_body, never_answer, ok, route
from harness.http import build_request
from harness.lifecycle import wait_exit
from harness.upstream_conn import KEEP
from harness.wait import dl

REASONS = ("client_closed", "upstream_broken", "request_error", "drain_timeout", "client_send_timeout",
           "after_close", "exit")


class SplitAnswer:
    """An app that sends its answer's head at once and its body only when the test releases it."""

    def __init__(self, body: bytes = b"body after the drain started"):
        self.body = body
        self.head_sent = threading.Event()
        self._release = threading.Event()

    def release(self):
        self._release.set()

    def __call__(self, req, conn):
        req.read_body()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body))
        self.head_sent.set()
        if not self._release.wait(dl(30)):
            raise AssertionError("SplitAnswer: the test never released the body")
        conn.send(self.body)
        return KEEP


def unanswered(ebb) -> dict:
    m = scrape(ebb)
    return {r: m.value("ebb_requests_unanswered_total", {"reason": r}) for r in REASONS}


class KeepAliveDrain(LifecycleCase):
    def split_then_next(self, phase_log: str):
        """A head out before the drain, its body after `phase_log`; then the next request."""
        split = SplitAnswer()
        self.on_teardown(split.release)
        fake, ebb = self.proxy(route({"/split": split}, default=ok(b"next")),
                               shutdown_config(1.0, 0.3, 2.5, 5.0))
        c = self.connect(ebb)
        c.send(build_request("GET", "/split"))
        self.assertTrue(split.head_sent.wait(dl(5)))
        head = c.read_head(timeout=dl(5))
        self.assertEqual(head.status, 200)
        self.assertNotIn("close", head.header_tokens("Connection"), "the head left before the drain")
        ebb.signal(signal.SIGTERM)
        ebb.wait_log(phase_log, dl(5))
        split.release()
        self.assertEqual(c.read_exact(len(split.body), timeout=dl(5)), split.body)
        # The client was never told to go: its next request on this connection must be answered.
        r = c.request("GET", "/next", timeout=dl(5))
        self.assertOk(r, b"next", "the request after an unannounced answer must be answered")
        self.assertIn("close", r.header_tokens("Connection"), f"now the close is announced: {r!r}")
        self.assertClosed(c, dl(3), "closed after the answer that announced it")
        self.assertEqual(unanswered(ebb), dict.fromkeys(REASONS, 0))
        self.assertEqual(wait_exit(ebb, dl(10)), 0)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut"), rec.get("unanswered")), (2, 0, 0), rec)

    def test_head_before_drain_body_in_propagation_next_request_answered(self):
        self.split_then_next("drain started")

    def test_head_before_drain_body_in_drain_phase_next_request_answered(self):
        # The answer ends after the listener closed: the connection still waits for the next
        # request (a short grace), instead of closing under a client that was never told.
        self.split_then_next("listener closed")

    def test_pipelined_requests_in_propagation_all_answered_last_announces_close(self):
        fake, ebb = self.proxy(ok(b"p"))
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/warm"), b"p")
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("drain started", dl(5))
        c.send(build_request("GET", "/1") + build_request("GET", "/2") + build_request("GET", "/3"))
        for i in range(3):
            r = c.read_response(timeout=dl(5))
            self.assertOk(r, b"p", f"pipelined request {i + 1} of 3 must be answered")
            closing = "close" in r.header_tokens("Connection")
            self.assertEqual(closing, i == 2, f"only the last answer announces the close: {i + 1} {r!r}")
        self.assertClosed(c, dl(3))
        self.assertEqual(unanswered(ebb)["after_close"], 0)
        self.assertEqual(wait_exit(ebb, dl(10)), 0)

    def assert_late_request_counted(self, ebb, c, closed_because: str):
        """ebb closed `c` in the drain; a client that had not yet seen the FIN sends a request:
        ebb reads it while it lingers, cannot answer it, and says so (never a reset)."""
        self.assertClosed(c, dl(5), closed_because)
        try:
            c.sock.sendall(build_request("GET", "/late"))
        except OSError:
            self.fail("ebb reset the connection instead of lingering after its FIN")
        ebb.wait_log("request arrived after the connection was closed", dl(5), reason="after_close")
        self.assertEqual(unanswered(ebb)["after_close"], 1)
        wait_exit(ebb, dl(10))

    def test_request_racing_an_idle_close_is_counted_and_logged(self):
        fake, ebb = self.proxy(ok(b"x"))
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/first"), b"x")
        ebb.signal(signal.SIGTERM)
        # Idle through the whole propagation: closed when the drain phase begins (SPEC §2).
        self.assert_late_request_counted(ebb, c, "an idle keep-alive connection is closed at the end of propagation")

    def test_request_racing_the_close_of_a_fresh_connection_is_counted_and_logged(self):
        # The same race on a connection that never sent a request: it gets the drain's grace,
        # then a FIN and the linger like an idle one, not a reset that would lose its request
        # without a trace.
        fake, ebb = self.proxy(ok(b"x"))
        c = self.connect(ebb)
        wait_metric(ebb, "ebb_connections_active", None, lambda v: v == 1, dl(5), "the connection accepted")
        ebb.signal(signal.SIGTERM)
        self.assert_late_request_counted(ebb, c, "a connection that sent nothing is closed after the drain's grace")

    def test_a_first_request_begun_in_the_drain_grace_gets_its_whole_head_time(self):
        # A connection opened before the drain sends its first request slowly, starting within
        # the drain's 1 s grace: once begun, its head has client_header to arrive, not what was
        # left of the grace (before, it got a 408 at the grace's end).
        fake, ebb = self.proxy(ok(b"slow head"), shutdown_config(1.0, 0.3, 2.5, 5.0))
        c = self.connect(ebb)
        wait_metric(ebb, "ebb_connections_active", None, lambda v: v == 1, dl(5), "the connection accepted")
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        req = build_request("GET", "/slow-head")
        c.send(req[:5])
        t0 = time.monotonic()
        for b in req[5:-1]:  # the rest a byte at a time, over more than the grace
            time.sleep(1.5 / len(req))  # the pace of the trickle, not a wait for a condition
            c.send(bytes([b]))
        self.assertGreater(time.monotonic() - t0, 1.2)
        c.send(req[-1:])
        r = c.read_response(timeout=dl(5))
        self.assertOk(r, b"slow head", "a request begun in the drain's grace must be answered")
        self.assertIn("close", r.header_tokens("Connection"))
        self.assertEqual(unanswered(ebb), dict.fromkeys(REASONS, 0))
        self.assertEqual(wait_exit(ebb, dl(10)), 0)

    def test_client_leaving_before_its_answer_is_counted_and_logged(self):
        gate = self.gate(ok(b"late"))
        fake, ebb = self.proxy(gate)
        c = self.hold(ebb, gate, "/abandoned")
        # A reset, not a FIN: after a FIN the answer is still delivered (a half-close).
        c.reset()
        rec = ebb.wait_log("client left before its answer", dl(5))
        self.assertEqual((rec.get("reason"), rec.get("target")), ("client_closed", "/abandoned"), rec)
        self.assertEqual(unanswered(ebb)["client_closed"], 1)

    def test_cut_at_drain_timeout_is_counted_as_unanswered(self):
        fake, ebb = self.proxy(route({"/hang": never_answer}), shutdown_config(0.2, 0.1, 0.5, 0.5))
        c = self.connect(ebb)
        c.send(build_request("GET", "/hang"))
        fake.wait_requests(1, dl(5))
        ebb.signal(signal.SIGTERM)
        self.assertEqual(wait_exit(ebb, dl(10)), 1)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("cut"), rec.get("unanswered")), (1, 1), rec)
        self.assertTrue(any(r.get("reason") == "drain_timeout" for r in ebb.logs("request unanswered")))

    def test_app_breaking_mid_answer_is_counted_as_unanswered(self):
        fake, ebb = self.proxy(close_mid_body(1000, 10))
        c = self.connect(ebb)
        c.send(build_request("GET", "/broken"))
        self.assertEqual(c.read_head(timeout=dl(5)).status, 200)
        self.assertClosed(c, dl(5))
        ebb.wait_log("request unanswered", dl(5), reason="upstream_broken")
        self.assertEqual(unanswered(ebb)["upstream_broken"], 1)

    def test_drain_wait_summary_reports_unanswered(self):
        fake, ebb = self.proxy(ok(b"x"), shutdown_config(0.2, 0.1, 0.5, 1.0))
        r = admin_request(ebb, "GET", "/drain?wait=true", timeout=dl(10))
        self.assertEqual(r.status, 200, r)
        self.assertIn('"unanswered_requests":0', r.body.decode())


if __name__ == "__main__":
    unittest.main()
