"""SPEC §4, what ebb changes in the heads it forwards: hop-by-hop fields stripped both ways
(RFC 9110 §7.6.1), X-Forwarded-For/-Proto/-Host and X-Request-Id added, Host kept."""

import unittest

from harness.case import EbbTestCase
from harness.handlers import ok
from harness.http import build_request


class HopByHop(EbbTestCase):
    def test_request_hop_by_hop_fields_not_forwarded(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        c.send(build_request("GET", "/hop", [
            ("Connection", "close, X-Foo"),
            ("X-Foo", "1"),
            ("Keep-Alive", "timeout=5, max=77"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers, deflate"),
            # `Upgrade` without the `upgrade` connection option is no upgrade request
            # (RFC 9110 §7.8): SPEC §4 strips Upgrade "outside an upgrade".
            ("Upgrade", "h2c"),
            ("X-Keep", "yes"),
        ]))
        self.assertOk(c.read_response())
        (req,) = fake.requests
        self.assertEqual(req.header_values("X-Keep"), ["yes"], "end-to-end fields must pass")
        self.assertEqual(req.header_values("X-Foo"), [], "a field named by Connection leaked")
        self.assertNotIn("x-foo", req.header_tokens("Connection"))
        self.assertNotIn("close", req.header_tokens("Connection"),
                         "the client's `Connection: close` is about the client connection")
        self.assertFalse(any("max=77" in v for v in req.header_values("Keep-Alive")),
                         f"Keep-Alive leaked: {req.headers}")
        self.assertEqual(req.header_values("Proxy-Connection"), [])
        self.assertFalse(any("deflate" in v for v in req.header_values("TE")),
                         f"the client's TE leaked: {req.headers}")
        self.assertEqual(req.header_values("Upgrade"), [], "Upgrade outside an upgrade leaked")

    def test_response_hop_by_hop_fields_not_forwarded(self):
        fake, ebb = self.proxy(ok(b"ok", headers=[
            ("Connection", "X-Bar"),
            ("X-Bar", "1"),
            ("Keep-Alive", "timeout=5, max=77"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "foo"),
            ("X-Kept", "yes"),
        ]))
        c = self.connect(ebb)
        r = c.request("GET", "/hop")
        self.assertOk(r, b"ok")
        self.assertEqual(r.header_values("X-Kept"), ["yes"])
        self.assertEqual(r.header_values("X-Bar"), [], "a field named by the app's Connection leaked")
        self.assertNotIn("x-bar", r.header_tokens("Connection"))
        self.assertFalse(any("max=77" in v for v in r.header_values("Keep-Alive")),
                         f"the app's Keep-Alive leaked: {r.headers}")
        self.assertEqual(r.header_values("Proxy-Connection"), [])
        self.assertEqual(r.header_values("Upgrade"), [], "Upgrade outside an upgrade leaked")
        self.assertOk(c.request("GET", "/again"), b"ok")

    def test_client_connection_close_honoured(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        c.send(build_request("GET", "/", [("Connection", "close")]))
        self.assertOk(c.read_response())
        self.assertClosed(c, msg="RFC 9112 §9.6: the server closes after answering `close`")


class Added(EbbTestCase):
    def test_x_forwarded_headers_added(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/xf", host="shop.example:8443"))
        (req,) = fake.requests
        self.assertEqual(req.header_list("X-Forwarded-For"), ["127.0.0.1"])
        self.assertEqual(req.header_values("X-Forwarded-Proto"), ["http"])
        self.assertEqual(req.header_values("X-Forwarded-Host"), ["shop.example:8443"])

    def test_x_forwarded_for_appended_to_existing(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/xff", [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")]))
        (req,) = fake.requests
        self.assertEqual(req.header_list("X-Forwarded-For"),
                         ["203.0.113.7", "198.51.100.2", "127.0.0.1"])

    def test_x_request_id_added_when_absent(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/a"))
        self.assertOk(c.request("GET", "/b"))
        ids = [r.header_values("X-Request-Id") for r in fake.requests]
        self.assertTrue(all(len(i) == 1 and i[0].strip() for i in ids), f"ids: {ids}")
        self.assertNotEqual(ids[0], ids[1], "two requests got the same X-Request-Id")

    def test_x_request_id_kept_when_present(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/a", [("X-Request-Id", "abc-123-from-client")]))
        self.assertEqual(fake.requests[0].header_values("X-Request-Id"), ["abc-123-from-client"])

    def test_host_kept_unchanged(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/h", host="Example.TEST:8443"))
        self.assertEqual(fake.requests[0].header_values("Host"), ["Example.TEST:8443"])


if __name__ == "__main__":
    unittest.main()
