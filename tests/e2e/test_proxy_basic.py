"""SPEC §4, the data path's basics through the real binary: round trips with bytes intact,
keep-alive and the upstream pool, message framing (chunked, close-delimited, HTTP/1.0),
pipelining, Expect: 100-continue, and bodiless responses (HEAD, 204, 304)."""

import time
import unittest

from harness.case import EbbTestCase
from harness.data import pattern_bytes
from harness.handlers import answer_target, continue_then, echo, ok, route, slow
from harness.http import build_request, chunked_body
from harness.upstream_conn import CLOSE
from harness.wait import dl


class RoundTrip(EbbTestCase):
    def test_get_round_trip(self):
        fake, ebb = self.proxy(ok(b"hello from the app"))
        c = self.connect(ebb)
        r = c.request("GET", "/hello?x=1")
        self.assertOk(r, b"hello from the app")
        (req,) = fake.requests
        self.assertEqual((req.method, req.target, req.version), ("GET", "/hello?x=1", "HTTP/1.1"))

    def test_post_round_trip(self):
        fake, ebb = self.proxy(echo())
        c = self.connect(ebb)
        body = pattern_bytes(5000)
        r = c.request("POST", "/submit", [("Content-Type", "application/octet-stream")], body)
        self.assertOk(r, body)
        (req,) = fake.requests
        self.assertEqual((req.method, req.target, req.body), ("POST", "/submit", body))

    def test_request_bytes_intact(self):
        fake, ebb = self.proxy(ok())
        target = "/p/a%20b/%7Euser;x=1?q=a+b&r=%2F&s=%C3%A9&empty=&flag"
        body = bytes(range(256)) * 64
        headers = [("X-Mixed", "Mixed Case  Value\twith tab"), ("X-Empty", ""),
                   ("Cookie", "a=b; c=d"), ("X-Multi", "one"), ("X-Multi", "two"),
                   ("X-Quoted", '"quoted, with comma"'), ("X-Obs-Text", "caf\xe9"),
                   ("Content-Type", "application/octet-stream")]
        c = self.connect(ebb)
        self.assertOk(c.request("PUT", target, headers, body, host="intact.test"))
        (req,) = fake.requests
        self.assertEqual((req.method, req.target, req.version), ("PUT", target, "HTTP/1.1"))
        self.assertEqual(req.body, body)
        self.assertEqual(req.header_values("X-Mixed"), ["Mixed Case  Value\twith tab"])
        self.assertEqual(req.header_values("X-Empty"), [""])
        self.assertEqual(req.header_values("Cookie"), ["a=b; c=d"])
        self.assertEqual(", ".join(req.header_values("X-Multi")), "one, two",
                         "repeated fields must keep their order")
        self.assertEqual(req.header_values("X-Quoted"), ['"quoted, with comma"'])
        self.assertEqual(req.header_values("X-Obs-Text"), ["caf\xe9"], "obs-text is opaque data")
        self.assertEqual(req.header_values("Content-Type"), ["application/octet-stream"])

    def test_response_bytes_intact(self):
        body = pattern_bytes(100_000)
        fake, ebb = self.proxy(ok(body, 201, [("X-Resp", "Some  Value"),
                                              ("Set-Cookie", "a=1; Path=/"),
                                              ("Set-Cookie", "b=2; Path=/; HttpOnly"),
                                              ("Cache-Control", "no-cache"),
                                              ("X-Obs-Text", "caf\xe9"),
                                              ("ETag", '"v1"')]))
        c = self.connect(ebb)
        r = c.request("GET", "/resp")
        self.assertEqual(r.status, 201, r)
        self.assertNotEbbError(r)
        self.assertEqual(r.body, body)
        self.assertEqual(r.header_values("X-Resp"), ["Some  Value"])
        self.assertEqual(r.header_values("Set-Cookie"), ["a=1; Path=/", "b=2; Path=/; HttpOnly"],
                         "Set-Cookie lines must stay separate (RFC 9110 §5.3)")
        self.assertEqual(r.header_values("Cache-Control"), ["no-cache"])
        self.assertEqual(r.header_values("X-Obs-Text"), ["caf\xe9"])
        self.assertEqual(r.header_values("ETag"), ['"v1"'])


class KeepAliveAndPool(EbbTestCase):
    def test_20_requests_on_one_client_connection_use_one_upstream_connection(self):
        fake, ebb = self.proxy(answer_target)
        c = self.connect(ebb)
        for i in range(20):
            self.assertOk(c.request("GET", f"/k{i}"), f"/k{i}".encode(), f"request {i}")
        self.assertEqual(fake.accepts, 1, f"20 keep-alive requests opened {fake.accepts} "
                                          f"upstream connections:\n{fake.summary()}")
        self.assertEqual([r.target for r in fake.conns[0].requests], [f"/k{i}" for i in range(20)])

    def test_idle_upstream_connection_reused_across_client_connections(self):
        fake, ebb = self.proxy(answer_target)
        for i in range(5):
            c = self.connect(ebb)
            self.assertOk(c.request("GET", f"/c{i}"), f"/c{i}".encode())
            c.close()
        self.assertEqual(fake.accepts, 1, f"5 client connections in turn opened {fake.accepts} "
                                          f"upstream connections:\n{fake.summary()}")

    def test_upstream_idle_timeout_drops_pooled_connection(self):
        fake, ebb = self.proxy(answer_target, {"timeouts": {"upstream_idle": "500ms"}})
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/1"))
        self.assertOk(c.request("GET", "/2"))
        t0 = time.monotonic()
        self.assertEqual(fake.accepts, 1, "the connection must be pooled before it idles out")
        conn = fake.wait_conn_closed(0, dl(3))
        idle = conn.peer_closed_at - t0
        self.assertGreaterEqual(idle, 0.3, f"pooled connection closed after {idle:.3f}s, "
                                           f"before upstream_idle (500ms)")
        self.assertOk(c.request("GET", "/3"), b"/3")
        self.assertEqual(fake.accepts, 2)

    def test_app_connection_close_is_not_pooled(self):
        # The app says `Connection: close` but leaves the socket open: if ebb pooled it anyway,
        # the next request would arrive on it.
        def handler(req, conn):
            req.read_body()
            if req.target == "/bye":
                conn.respond(200, b"bye", [("Connection", "close")])
                conn.wait_peer_close()
                return CLOSE
            return conn.respond(200, b"hi")
        fake, ebb = self.proxy(handler)
        c = self.connect(ebb)
        r = c.request("GET", "/bye")
        self.assertOk(r, b"bye")
        if "close" in r.header_tokens("Connection"):
            r = self.connect(ebb).request("GET", "/after")
        else:
            r = c.request("GET", "/after")
        self.assertOk(r, b"hi")
        self.assertEqual([len(x.requests) for x in fake.conns], [1, 1],
                         f"a request went to a connection the app had closed:\n{fake.summary()}")
        fake.wait_conn_closed(0, dl(2))


class Framing(EbbTestCase):
    def test_chunked_request_body_reaches_app_intact(self):
        fake, ebb = self.proxy(echo())
        parts = [b"a", pattern_bytes(1000), pattern_bytes(70_000, 1000), b"xyz"]
        body = b"".join(parts)
        c = self.connect(ebb)
        c.send(build_request("POST", "/chunked", [("Transfer-Encoding", "chunked")]))
        wire = chunked_body(parts, ext=";foo=bar")
        for i in range(0, len(wire), 9000):  # several sends: chunk lines split across reads
            c.send(wire[i:i + 9000])
        self.assertOk(c.read_response(), body)
        (req,) = fake.requests
        self.assertTrue(req.complete)
        self.assertEqual(req.body, body)

    def test_chunked_response_body_reaches_client_intact(self):
        body = pattern_bytes(200_000)
        fake, ebb = self.proxy(ok(body, framing="chunked", chunk_sizes=[1, 15, 4096, 70_000, 2],
                                  chunk_ext=";x=y"))
        c = self.connect(ebb)
        r = c.request("GET", "/chunked")
        self.assertOk(r)
        self.assertTrue(r.complete)
        self.assertEqual(len(r.body), len(body))
        self.assertEqual(r.body, body)
        self.assertOk(c.request("GET", "/again"), body, "the connection must stay usable")

    def test_close_delimited_response(self):
        body = pattern_bytes(300_000)
        fake, ebb = self.proxy(route({"/close": ok(body, framing="close"),
                                      "/next": ok(b"next")}))
        c = self.connect(ebb)
        r = c.request("GET", "/close")
        self.assertOk(r)
        self.assertTrue(r.complete)
        self.assertEqual(r.body, body)
        if r.framing == "close":
            self.assertTrue(c.eof)
        elif "close" in r.header_tokens("Connection"):
            self.assertClosed(c)
        else:
            # Re-framed (Content-Length or chunked): the connection may live on, correctly.
            self.assertOk(c.request("GET", "/next"), b"next")

    def test_http10_client_gets_answer_and_close(self):
        fake, ebb = self.proxy(ok(b"old client"))
        c = self.connect(ebb)
        c.send(b"GET /old HTTP/1.0\r\nHost: old.test\r\n\r\n")
        r = c.read_response()
        self.assertOk(r, b"old client")
        self.assertIn(r.version, ("HTTP/1.0", "HTTP/1.1"))
        self.assertClosed(c, msg="an HTTP/1.0 request without keep-alive ends the connection")
        self.assertEqual(fake.requests[0].version, "HTTP/1.1", "ebb speaks HTTP/1.1 to the app")

    def test_http10_client_gets_chunked_app_answer_without_chunked(self):
        body = pattern_bytes(50_000)
        fake, ebb = self.proxy(ok(body, framing="chunked", chunk_sizes=[100, 10_000]))
        c = self.connect(ebb)
        c.send(b"GET /old HTTP/1.0\r\nHost: old.test\r\n\r\n")
        r = c.read_response()
        self.assertOk(r)
        self.assertNotIn("chunked", r.header_tokens("Transfer-Encoding"),
                         "RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client")
        self.assertEqual(r.body, body)
        self.assertClosed(c)

    def test_http10_keepalive(self):
        fake, ebb = self.proxy(answer_target)
        c = self.connect(ebb)
        c.send(b"GET /ka1 HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        self.assertOk(r, b"/ka1")
        if "keep-alive" in r.header_tokens("Connection") and r.framing == "length":
            c.send(b"GET /ka2 HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n")
            self.assertOk(c.read_response(), b"/ka2")
        else:
            # Without `Connection: keep-alive` in the answer an HTTP/1.0 client waits for the
            # close: the connection must not stay open silently.
            self.assertClosed(c, msg=f"answer {r!r} does not keep the connection alive")


class Sequencing(EbbTestCase):
    def test_pipelined_requests_answered_in_order(self):
        fake, ebb = self.proxy(route({
            "/p1": slow(0.2, ok(b"first")),
            "/p2": lambda req, conn: conn.respond(200, b"second:" + req.read_body()),
            "/p3": ok(b"third"),
        }))
        c = self.connect(ebb)
        c.send(build_request("GET", "/p1") + build_request("POST", "/p2", body=b"abc")
               + build_request("GET", "/p3"))
        for expected in (b"first", b"second:abc", b"third"):
            self.assertOk(c.read_response(), expected)
        self.assertEqual(sorted(r.target for r in fake.requests), ["/p1", "/p2", "/p3"])

    def test_expect_100_continue_relayed(self):
        fake, ebb = self.proxy(continue_then(lambda req, conn: conn.respond(
            200, b"got:" + req.read_body())))
        c = self.connect(ebb)
        c.send(build_request("POST", "/upload", [("Expect", "100-continue"),
                                                 ("Content-Length", "11")]))
        interim = c.read_response(skip_1xx=False, timeout=dl(3))
        self.assertEqual(interim.status, 100, f"expected the app's 100 Continue before sending "
                                              f"the body, got {interim!r}")
        (req,) = fake.wait_requests(1)
        self.assertIn("100-continue", req.header_tokens("Expect"), "Expect must reach the app")
        self.assertEqual(req.early_body_bytes, 0)
        c.send(b"hello world")
        self.assertOk(c.read_response(), b"got:hello world")


class Bodiless(EbbTestCase):
    def _bodiless_then_next(self, method, target, expect_status):
        fake, ebb = self.proxy(route({
            "/head": ok(b"x" * 1234),
            "/204": lambda req, conn: conn.respond(204, framing="none"),
            "/304": lambda req, conn: conn.respond(304, headers=[("ETag", '"v1"'),
                                                                 ("Content-Length", "1234")],
                                                   framing="none"),
            "/next": ok(b"next"),
        }))
        c = self.connect(ebb)
        c.send(build_request(method, target))
        r = c.read_response(method)
        self.assertEqual(r.status, expect_status, r)
        self.assertEqual(r.body, b"")
        # A leaked body (or ebb waiting for one) breaks the next exchange on this connection.
        r2 = c.request("GET", "/next")
        self.assertOk(r2, b"next", f"the request after a {expect_status} to {method}")
        self.assertEqual([q.target for q in fake.requests], [target, "/next"])
        self.assertEqual(fake.requests[0].method, method)

    def test_head_response_has_no_body(self):
        self._bodiless_then_next("HEAD", "/head", 200)

    def test_204_response_has_no_body(self):
        self._bodiless_then_next("GET", "/204", 204)

    def test_304_response_has_no_body(self):
        self._bodiless_then_next("GET", "/304", 304)


if __name__ == "__main__":
    unittest.main()
