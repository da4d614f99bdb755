"""SPEC §5, the limits and client timeouts, one test per row: 431, 414, 413 (Content-Length and
chunked), 408 (and a trickled head), client_idle, max_connections. The upstream rows (502, 504,
breaks mid-response) are in test_proxy_upstream.py, client_send in test_proxy_streaming.py,
malformed requests in test_proxy_malformed.py."""

import time
import unittest

from harness.admin import scrape, wait_metric
from harness.case import EbbTestCase
from harness.handlers import answer_target, ok
from harness.http import build_request, chunked_body
from harness.wait import HarnessError, WaitTimeout, dl, wait_until


class Limits(EbbTestCase):
    def test_headers_over_max_header_bytes_get_431(self):
        fake, ebb = self.proxy(answer_target, {"limits": {"max_header_bytes": 4096}})
        r = self.connect(ebb).request("GET", "/small", [("X-Fill", "a" * 2000)])
        self.assertOk(r, b"/small", "a head under the limit passes")
        r = self.connect(ebb).request("GET", "/one-big", [("X-Fill", "a" * 6000)])
        self.assertEbbError(r, 431, "one 6000-byte field, limit 4096")
        many = [(f"X-Fill-{i}", "b" * 50) for i in range(120)]
        r = self.connect(ebb).request("GET", "/many", many)
        self.assertEbbError(r, 431, "120 fields of ~60 bytes, limit 4096")
        self.assertEqual([q.target for q in fake.requests], ["/small"])

    def test_target_over_max_uri_bytes_gets_414(self):
        fake, ebb = self.proxy(answer_target, {"limits": {"max_uri_bytes": 1024}})
        short = "/" + "a" * 500
        self.assertOk(self.connect(ebb).request("GET", short), short.encode())
        r = self.connect(ebb).request("GET", "/" + "a" * 2000)
        self.assertEbbError(r, 414)
        self.assertEqual([q.target for q in fake.requests], [short])

    def test_content_length_over_max_body_bytes_gets_413_before_upload(self):
        fake, ebb = self.proxy(answer_target, {"limits": {"max_body_bytes": 1000}})
        fits = self.connect(ebb)
        self.assertOk(fits.request("POST", "/fits", body=b"x" * 1000), b"/fits")
        c = self.connect(ebb)
        # Only the head: the answer must come before any of the body is sent.
        c.send(build_request("POST", "/too-big", [("Content-Length", "2000")]))
        r = c.read_response(timeout=dl(3))
        self.assertEbbError(r, 413)
        self.assertEqual([q.target for q in fake.requests], ["/fits"],
                         "nothing of the oversized request may reach the app")
        # The client sends its body anyway, as one without `Expect: 100-continue` does: that is the
        # answered request's body, read and dropped, not a request ebb failed to answer.
        c.send(b"z" * 2000)
        c.close()
        wait_metric(ebb, "ebb_connections_active", None, lambda v: v == 1, dl(5), "the 413's connection closed")
        self.assertEqual(sum(v for _, v in scrape(ebb).labelled("ebb_requests_unanswered_total")), 0,
                         ebb.logs("request arrived after the connection was closed"))

    def test_chunked_body_over_max_body_bytes_gets_413(self):
        fake, ebb = self.proxy(answer_target, {"limits": {"max_body_bytes": 1000}})
        c = self.connect(ebb)
        c.send(build_request("POST", "/too-big", [("Transfer-Encoding", "chunked")])
               + chunked_body([b"y" * 500] * 4))
        r = c.read_response(timeout=dl(3))
        self.assertEbbError(r, 413)
        done = [q for q in fake.requests if q.complete]
        self.assertEqual(done, [], "the app got a complete (truncated?) oversized request")
        self.assertTrue(all(q.body_len <= 1000 for q in fake.requests),
                        f"more than max_body_bytes reached the app: {fake.requests}")


class ClientTimeouts(EbbTestCase):
    def test_slow_head_gets_408_and_close(self):
        fake, ebb = self.proxy(ok(), {"timeouts": {"client_header": "500ms"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        c.send(b"GET /slow HTTP/1.1\r\nHost: slow.test\r\n")  # half a head, then nothing
        r = c.read_response(timeout=dl(5))
        elapsed = time.monotonic() - t0
        self.assertEbbError(r, 408)
        self.assertGreaterEqual(elapsed, 0.48, f"408 after {elapsed:.3f}s < client_header")
        self.assertLess(elapsed, dl(3))
        self.assertClosed(c)
        self.assertEqual(fake.total_bytes_received(), 0, "a partial head reached the app")

    def test_trickled_head_gets_408_at_client_header_deadline(self):
        # One byte every 100 ms (slowloris): client_header bounds the whole head, not a gap.
        fake, ebb = self.proxy(ok(), {"timeouts": {"client_header": "500ms"}})
        c = self.connect(ebb)
        head = b"GET /trickle HTTP/1.1\r\nHost: slow.test\r\nX-Pad: " + b"p" * 200
        t0 = time.monotonic()
        r = None
        for i in range(len(head)):
            if time.monotonic() - t0 > dl(5):
                break
            try:
                c.send(head[i:i + 1])
            except OSError:
                break  # ebb closed: its answer, if any, is waiting in our buffer
            try:
                r = c.read_head(timeout=0.1)  # the trickle's pace is the behaviour
                break
            except WaitTimeout:
                continue
            except HarnessError:
                break
        if r is None:
            r = c.read_head(timeout=dl(1))
        elapsed = time.monotonic() - t0
        self.assertEbbError(r, 408, "a head trickled for longer than client_header")
        self.assertLess(elapsed, dl(3), f"408 only after {elapsed:.2f}s of trickling")
        self.assertClosed(c)
        self.assertEqual(fake.total_bytes_received(), 0)

    def test_idle_keepalive_client_closed_after_client_idle(self):
        fake, ebb = self.proxy(ok(), {"timeouts": {"client_idle": "500ms"}})
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/"))
        t0 = time.monotonic()
        self.assertClosed(c, dl(3), "an idle keep-alive client must be closed after client_idle")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.45, f"closed {elapsed:.3f}s after the response: "
                                               f"before client_idle (500ms)")

    def test_max_connections_extra_one_closed_at_once_then_served_again(self):
        fake, ebb = self.proxy(answer_target, {"limits": {"max_connections": 5}})
        held = [self.connect(ebb) for _ in range(5)]
        for i, c in enumerate(held):
            self.assertOk(c.request("GET", f"/held{i}"), f"/held{i}".encode())
        extra = self.connect(ebb)
        try:
            extra.send(build_request("GET", "/extra"))
        except OSError:
            pass
        self.assertClosed(extra, dl(2), "the 6th connection must be accepted and closed at once")
        self.assertNotIn("/extra", [q.target for q in fake.requests])

        held.pop(0).close()
        # ebb sees that close asynchronously: try new connections until one is served.
        wait_until(lambda: self._served_on_new(ebb, "/again", held), dl(3),
                   "a new connection to be served once one of the 5 closed")
        for i, c in enumerate(held):
            self.assertOk(c.request("GET", f"/still{i}"), f"/still{i}".encode())

        for c in held:
            c.close()
        fresh = []
        for i in range(5):
            wait_until(lambda: self._served_on_new(ebb, f"/fresh{i}", fresh), dl(3),
                       f"fresh connection {i} to be served after all the others closed")

    def _served_on_new(self, ebb, target, keep):
        """Opens a connection and sends one request; keeps the connection if it was served."""
        c = self.connect(ebb)
        try:
            r = c.request("GET", target, timeout=dl(1))
            if r.status == 200 and r.body == target.encode():
                keep.append(c)
                return True
        except (HarnessError, OSError):
            pass
        c.close()
        return False


if __name__ == "__main__":
    unittest.main()
