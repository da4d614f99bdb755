"""Issue 12 / SPEC §6: the access log line says what users look for first, and says it truly for
the answers ebb makes itself (a garbage request has no method; an error answer has bytes). The
metrics that go with it: ebb's own answers apart from the app's (`source`), bytes both ways, and
the app's time to first byte."""

import unittest

from harness.admin import scrape
from harness.case import EbbTestCase
from harness.client import unused_port
from harness.handlers import ok, slow
from harness.http import build_request
from harness.wait import dl, wait_until


class AccessLog(EbbTestCase):
    def access(self, ebb, n=1):
        return wait_until(lambda: ebb.logs("access") if len(ebb.logs("access")) >= n else None, dl(5),
                          f"{n} access line(s)")

    def test_proxied_request_fields(self):
        fake, ebb = self.proxy(slow(0.05, ok(b"hello")))
        c = self.connect(ebb)
        req = build_request("POST", "/path?q=1", [("Host", "shop.example"), ("User-Agent", "probe-test/1.0")],
                            b"0123456789")
        c.send(req)
        r = c.read_response(timeout=dl(5))
        self.assertOk(r, b"hello")
        received = len(r.raw_head) + len(r.body)
        rec = self.access(ebb)[0]
        app_req = fake.wait_requests(1)[0]
        self.assertEqual(rec.get("request_id"), app_req.header("X-Request-Id"), rec)
        self.assertTrue(rec.get("request_id"), rec)
        expect = {"protocol": "HTTP/1.1", "method": "POST", "target": "/path?q=1", "host": "shop.example",
                  "user_agent": "probe-test/1.0", "status": 200, "answered_by": "app", "ebb_error": "",
                  "bytes_in": len(req), "bytes_out": received, "client": "127.0.0.1"}
        self.assertEqual({k: rec.get(k) for k in expect}, expect, rec)
        self.assertGreaterEqual(rec["upstream_ms"], 50 * 0.9, rec)  # the app took 50 ms to answer
        self.assertGreaterEqual(rec["ms"], rec["upstream_ms"], rec)
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_requests_total", {"code": "200", "source": "app"}), 1)
        self.assertEqual(m.value("ebb_upstream_response_duration_seconds_count"), 1)
        self.assertEqual(m.value("ebb_upstream_response_duration_seconds_bucket", {"le": "0.025"}), 0)
        self.assertEqual(m.value("ebb_request_bytes_total"), len(req))
        self.assertEqual(m.value("ebb_response_bytes_total"), received)

    def test_clients_own_request_id_is_logged(self):
        fake, ebb = self.proxy(ok(b"x"))
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/", [("X-Request-Id", "abc-123")]), b"x")
        self.assertEqual(self.access(ebb)[0].get("request_id"), "abc-123")

    def test_garbage_request_has_no_method_and_counts_its_answer(self):
        fake, ebb = self.proxy(ok(b"never"))
        c = self.connect(ebb)
        c.send(b"\x16\x03\x01 garbage that is not HTTP\r\n\r\n")
        r = c.read_response(timeout=dl(5))
        self.assertEqual(r.status, 400)
        rec = self.access(ebb)[0]
        expect = {"method": "", "target": "", "protocol": "", "status": 400, "answered_by": "ebb",
                  "bytes_out": len(r.raw_head) + len(r.body)}
        self.assertEqual({k: rec.get(k) for k in expect}, expect, rec)
        self.assertEqual(rec.get("ebb_error"), r.header("X-Ebb-Error"), rec)
        self.assertEqual(rec.get("upstream_ms"), -1, rec)
        self.assertEqual(fake.accepts, 0)
        self.assertEqual(scrape(ebb).value("ebb_requests_total", {"code": "400", "source": "ebb"}), 1)

    def test_upstream_refused_is_ebbs_502_with_its_bytes(self):
        ebb = self.start_ebb(unused_port(), {"upstream_retry": {"connect_retry_budget": "0s"}})
        c = self.connect(ebb)
        r = c.request("GET", "/down", timeout=dl(5))
        self.assertEqual(r.status, 502)
        rec = self.access(ebb)[0]
        expect = {"method": "GET", "target": "/down", "status": 502, "answered_by": "ebb",
                  "ebb_error": r.header("X-Ebb-Error"), "bytes_out": len(r.raw_head) + len(r.body)}
        self.assertEqual({k: rec.get(k) for k in expect}, expect, rec)
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_requests_total", {"code": "502", "source": "ebb"}), 1)
        self.assertIsNone(m.value("ebb_requests_total", {"code": "502", "source": "app"}))


if __name__ == "__main__":
    unittest.main()
