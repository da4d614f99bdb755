"""SPEC §5's first row: malformed requests and smuggling shapes get 400 (505 for an unsupported
major version, 501 for an unknown transfer coding), with X-Ebb-Error, the connection closed, and
nothing sent upstream. The framing rules are RFC 9112 §2.2, §3, §6.1, §6.3, §7.1; field syntax
is RFC 9110 §5. One test per shape (generated from the tables below), each with its own ebb.

How "nothing reached the app" is proven: after the rejection a marker request goes through the
same ebb, and the app's bytes, over all its connections, must be exactly the marker's.

Body-framing errors (a bad chunk) can only be seen after the head was forwarded, so for those the
rule is: the client gets 400, the app sees at most an incomplete request, and never the complete
smuggled request hidden in the body (`GET /admin`)."""

import unittest

from harness.case import EbbTestCase
from harness.handlers import ok
from harness.http import build_request
from harness.wait import dl

HOST = b"Host: mal.test"
SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: mal.test\r\n\r\n"


def head(start: bytes, lines=(), body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n" + body


def post(lines, body=b""):
    return head(b"POST /form HTTP/1.1", [HOST, *lines], body)


def get(lines=(HOST,), start=b"GET / HTTP/1.1"):
    return head(start, lines)


B400 = (400,)
# (name, bytes, statuses allowed)
HEAD_SHAPES = [
    ("cl_and_te", post([b"Content-Length: 6", b"Transfer-Encoding: chunked"],
                       b"0\r\n\r\n" + SMUGGLED), B400),
    ("te_and_cl", post([b"Transfer-Encoding: chunked", b"Content-Length: 41"],
                       b"0\r\n\r\n" + SMUGGLED), B400),
    ("two_differing_content_length", post([b"Content-Length: 5", b"Content-Length: 45"],
                                          b"hello" + SMUGGLED), B400),
    ("content_length_plus_sign", post([b"Content-Length: +5"], b"hello"), B400),
    ("content_length_negative", post([b"Content-Length: -5"], b"hello"), B400),
    ("content_length_non_digits", post([b"Content-Length: 5a"], b"hello"), B400),
    ("content_length_hex", post([b"Content-Length: 0x5"], b"hello"), B400),
    ("content_length_list_of_different_values", post([b"Content-Length: 5, 45"],
                                                      b"hello" + SMUGGLED), B400),
    ("content_length_exponent", post([b"Content-Length: 1e3"], b"x" * 1000), B400),
    ("content_length_inner_space", post([b"Content-Length: 1 0"], b"x" * 10), B400),
    ("content_length_empty", post([b"Content-Length: "], b"hello"), B400),
    ("content_length_overflow", post([b"Content-Length: 99999999999999999999999"], b"x"),
     (400, 413)),
    ("te_chunked_not_final", post([b"Transfer-Encoding: chunked, gzip"],
                                  b"0\r\n\r\n" + SMUGGLED), (400, 501)),
    ("te_gzip_only", post([b"Transfer-Encoding: gzip"], b"0\r\n\r\n" + SMUGGLED), (400, 501)),
    ("te_chunked_then_identity_in_two_fields",
     post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"],
          b"0\r\n\r\n" + SMUGGLED), (400, 501)),
    ("te_space_before_colon", post([b"Transfer-Encoding : chunked"], b"0\r\n\r\n" + SMUGGLED),
     B400),
    ("te_vertical_tab_before_value", post([b"Transfer-Encoding:\x0bchunked"],
                                          b"0\r\n\r\n" + SMUGGLED), B400),
    # A lenient app would read this as Content-Length: 41 while llhttp sees no body: the
    # body would then be parsed by ebb as a second request (RFC 9112 §5.1: MUST 400).
    ("cl_space_before_colon_smuggling", post([b"Content-Length : 41"], SMUGGLED), B400),
    ("obs_fold", get([HOST, b"X-Folded: a", b" b"]), B400),
    ("obs_fold_with_tab", get([HOST, b"X-Folded: a", b"\tb"]), B400),
    ("whitespace_line_before_first_field", get([b" Host: mal.test"]), B400),
    ("space_before_colon_in_field_name", get([HOST, b"X-Foo : 1"]), B400),
    ("invalid_char_in_field_name", get([HOST, b"Fo(o: 1"]), B400),
    ("space_inside_field_name", get([HOST, b"X Foo: 1"]), B400),
    ("empty_field_name", get([HOST, b": value"]), B400),
    ("field_line_without_colon", get([HOST, b"X-Foo 1"]), B400),
    ("bare_lf_line_endings", b"GET / HTTP/1.1\nHost: mal.test\nX-A: 1\n\n", B400),
    ("bare_lf_after_request_line", b"GET / HTTP/1.1\nHost: mal.test\r\n\r\n", B400),
    ("bare_lf_ending_head", b"GET / HTTP/1.1\r\nHost: mal.test\r\n\n", B400),
    ("bare_cr_in_value", get([HOST, b"X-Foo: a\rb"]), B400),
    ("bare_cr_as_line_ending", b"GET / HTTP/1.1\rHost: mal.test\r\n\r\n", B400),
    ("nul_in_value", get([HOST, b"X-Foo: a\x00b"]), B400),
    ("ctl_0x01_in_value", get([HOST, b"X-Foo: a\x01b"]), B400),
    ("del_0x7f_in_value", get([HOST, b"X-Foo: a\x7fb"]), B400),
    ("missing_host_in_http11", get([b"X-Foo: 1"]), B400),
    ("two_host_fields", get([HOST, b"Host: other.test"]), B400),
    ("two_identical_host_fields", get([HOST, HOST]), B400),
    ("host_with_space", get([b"Host: mal test"]), B400),
    ("host_with_userinfo", get([b"Host: user@mal.test"]), B400),
    ("host_with_bad_port", get([b"Host: mal.test:80x"]), B400),
    ("invalid_method_chars", get(start=b"G(ET / HTTP/1.1"), B400),
    ("two_spaces_in_request_line", get(start=b"GET  / HTTP/1.1"), B400),
    ("trailing_space_after_version", get(start=b"GET / HTTP/1.1 "), B400),
    ("http_2_0_request_line", get(start=b"GET / HTTP/2.0"), (400, 505)),
    ("lowercase_http_name", get(start=b"GET / http/1.1"), B400),
    ("two_digit_major_version", get(start=b"GET / HTTP/11.1"), (400, 505)),
    ("target_with_space", get(start=b"GET /a b HTTP/1.1"), B400),
    ("target_with_ctl", get(start=b"GET /a\x01b HTTP/1.1"), B400),
    ("target_with_nul", get(start=b"GET /a\x00b HTTP/1.1"), B400),
    ("garbage_bytes_tls_client_hello",
     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n", B400),
]

CHUNKED_POST = b"POST /upload HTTP/1.1\r\nHost: mal.test\r\nTransfer-Encoding: chunked\r\n\r\n"
# (name, body after a valid chunked head)
BODY_SHAPES = [
    ("bad_chunk_size", b"5\r\nhello\r\nzz\r\n" + SMUGGLED),
    ("chunk_size_overflow", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    ("chunk_size_0x_prefix", b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    ("chunk_size_negative", b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    ("chunk_data_without_crlf", b"5\r\nhello0\r\n\r\n" + SMUGGLED),
    ("chunk_data_longer_than_size", b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    ("chunk_extension_with_ctl", b"5;a\x01b\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    ("chunk_extension_with_space_in_name", b"5;a b=c\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    ("chunk_lines_bare_lf", b"5\nhello\n0\n\n" + SMUGGLED),
    ("last_chunk_bare_lf", b"5\r\nhello\r\n0\n\n" + SMUGGLED),
]


class Malformed(EbbTestCase):
    def _send_bad(self, ebb, fake, raw, allowed):
        c = self.connect(ebb)
        try:
            c.send(raw)
        except OSError:
            pass  # ebb may close before taking it all: its answer is read below
        r = c.read_response(timeout=dl(3))
        if r.status not in allowed:
            got = fake.raw_received()
            self.fail(f"expected {allowed} with X-Ebb-Error for {raw[:100]!r}, got {r!r} "
                      f"body={r.body[:100]!r}; the app received {got[:500]!r}")
        self.assertEbbError(r, allowed, f"request {raw[:100]!r}")
        self.assertClosed(c, msg=f"the connection after rejecting {raw[:60]!r}")

    def _marker(self, ebb, fake):
        """Sends a valid request through the same ebb; returns the app's record of it."""
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/__marker"), b"ok", "ebb must still serve others")
        marker = [q for q in fake.requests if q.target == "/__marker"]
        self.assertEqual(len(marker), 1, fake.summary())
        return marker[0]

    def check_head_rejected(self, raw, allowed):
        fake, ebb = self.proxy(ok())
        self._send_bad(ebb, fake, raw, allowed)
        marker = self._marker(ebb, fake)
        self.assertEqual(fake.raw_received(), marker.raw_head,
                         f"bytes of the malformed request reached the app:\n{fake.summary()}\n"
                         f"raw: {fake.raw_received()[:400]!r}")

    def check_body_rejected(self, body):
        fake, ebb = self.proxy(ok())
        self._send_bad(ebb, fake, CHUNKED_POST + body, B400)
        self._marker(ebb, fake)
        raw = fake.raw_received()
        self.assertNotIn(b"/admin", raw, f"the smuggled request reached the app: {raw[:600]!r}")
        done = [q.target for q in fake.requests if q.complete]
        self.assertEqual(done, ["/__marker"],
                         f"the app got a complete request out of a broken one:\n{fake.summary()}")

    # -- well-formed controls, so that a blanket rejection fails -----------------------------
    def test_00_control_valid_requests_pass(self):
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/"))
        self.assertOk(c.request("POST", "/form", body=b"hello"))
        c.send(CHUNKED_POST + b"5\r\nhello\r\n0\r\n\r\n")
        self.assertOk(c.read_response())
        self.assertEqual([q.body for q in fake.requests], [b"", b"hello", b"hello"])

    def test_00_http_1_2_is_served_as_http_1_1(self):
        # RFC 9110 §2.5: a recipient SHOULD process a higher minor version as the highest it
        # implements; 505 is for an unsupported *major* version (§15.6.6), and the request is
        # well-formed per RFC 9112 §2.3 (HTTP-version = "HTTP/" DIGIT "." DIGIT).
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        c.send(get(start=b"GET /v12 HTTP/1.2"))
        self.assertOk(c.read_response(), b"ok", "HTTP/1.2 request line")
        self.assertEqual([(q.target, q.version) for q in fake.requests], [("/v12", "HTTP/1.1")])

    def test_00_empty_line_before_request_line_is_ignored(self):
        # RFC 9112 §2.2: a server SHOULD ignore at least one empty line received before the
        # request-line (clients that add CRLF after a POST body).
        fake, ebb = self.proxy(ok())
        c = self.connect(ebb)
        c.send(b"\r\n" + build_request("GET", "/after-crlf"))
        self.assertOk(c.read_response(), b"ok")
        self.assertEqual([q.target for q in fake.requests], ["/after-crlf"])


def _head_test(raw, allowed):
    def test(self):
        self.check_head_rejected(raw, allowed)
    test.__doc__ = f"{allowed} for {raw[:70]!r}"
    return test


def _body_test(body):
    def test(self):
        self.check_body_rejected(body)
    test.__doc__ = f"400 for chunked body {body[:50]!r}"
    return test


for _i, (_name, _raw, _allowed) in enumerate(HEAD_SHAPES, 1):
    setattr(Malformed, f"test_h{_i:02d}_{_name}", _head_test(_raw, _allowed))
for _i, (_name, _body) in enumerate(BODY_SHAPES, 1):
    setattr(Malformed, f"test_b{_i:02d}_{_name}", _body_test(_body))


if __name__ == "__main__":
    unittest.main()
