"""HTTP/2 from clients (h2c with prior knowledge, issue 10): the same listener serves HTTP/1 and
HTTP/2; each stream is one exchange with an HTTP/1 app; the drain tells every HTTP/2 connection
with the two-step GOAWAY of RFC 9113 §6.8 as soon as it starts, lets open streams finish, and cuts
the rest at the deadline; errors ebb makes for a gRPC request are gRPC-shaped; the protocol's
known floods end the offending connection, never ebb. Real peers (curl, nghttp's h2load) for
requests, and a raw frame client (harness/h2raw.py) where the frames themselves are the point."""

import shutil
import signal
import subprocess
import threading
import unittest

from harness import h2raw
from harness.h2raw import NGHTTP, nghttp_fields
from harness.admin import scrape, wait_metric
from harness.case import LifecycleCase
from harness.client import unused_port
from harness.config import shutdown_config
from harness.data import MIB
from harness.handlers import echo, never_answer, ok, route, send_huge
from harness.lifecycle import wait_exit
from harness.upstream_conn import KEEP
from harness.wait import dl

CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")
MAX_STREAM = 2**31 - 1


def curl_h2(port: int, path: str = "/", *args) -> tuple:
    """(status, headers dict, body) of one request over h2c with prior knowledge."""
    p = subprocess.run([CURL, "-s", "-S", "-i", "--http2-prior-knowledge", "--max-time", str(dl(10)), *args,
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=dl(20))
    if p.returncode != 0:
        raise AssertionError(f"curl failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/2 "), lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


class Held:
    """An app handler that answers only when the test releases it."""

    def __init__(self, body: bytes = b"held answer"):
        self.body = body
        self.arrived = threading.Event()
        self._go = threading.Event()

    def release(self):
        self._go.set()

    def __call__(self, req, conn):
        req.read_body()
        self.arrived.set()
        if not self._go.wait(dl(30)):
            raise AssertionError("Held: never released")
        conn.respond(200, self.body)
        return KEEP


@unittest.skipUnless(CURL and H2LOAD and NGHTTP, "curl, nghttp and h2load (nghttp2-client) are needed")
class Http2(LifecycleCase):
    def raw(self, ebb, **kw) -> h2raw.H2Raw:
        c = h2raw.H2Raw(ebb.proxy_port, **kw)
        self.on_teardown(c.close)
        return c

    def test_h2c_and_http1_share_the_listener(self):
        fake, ebb = self.proxy(route({"/echo": echo()}, default=ok(b"hello h2")))
        status, headers, body = curl_h2(ebb.proxy_port, "/x?q=1", "-H", "x-custom: yes")
        self.assertEqual((status, body), (200, b"hello h2"))
        self.assertNotIn("connection", headers)
        req = fake.requests[-1]
        self.assertEqual((req.method, req.target, req.version), ("GET", "/x?q=1", "HTTP/1.1"))
        self.assertEqual(req.header("x-custom"), "yes")
        self.assertEqual(req.header("host"), f"127.0.0.1:{ebb.proxy_port}")
        self.assertEqual(req.header("x-forwarded-for"), "127.0.0.1")
        status, _, body = curl_h2(ebb.proxy_port, "/echo", "--data-binary", "a body of 23 bytes here")
        self.assertEqual((status, body), (200, b"a body of 23 bytes here"))
        r = self.connect(ebb).request("GET", "/after")
        self.assertOk(r, b"hello h2", "HTTP/1 on the same port")
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_http2_connections_total"), 2)
        self.assertEqual(m.value("ebb_requests_total", {"code": "200", "source": "app"}), 3)

    def test_many_streams_over_few_connections(self):
        _, ebb = self.proxy(ok(b"x" * 1000))
        p = subprocess.run([H2LOAD, "-n", "3000", "-c", "4", "-m", "20", f"http://127.0.0.1:{ebb.proxy_port}/"],
                           capture_output=True, text=True, timeout=dl(60))
        self.assertIn("3000 succeeded, 0 failed", p.stdout, p.stdout)
        self.assertIn("status codes: 3000 2xx", p.stdout, p.stdout)
        self.assertEqual(scrape(ebb).value("ebb_requests_total", {"code": "200", "source": "app"}), 3000)

    def test_drain_sends_two_goaways_and_the_open_stream_finishes(self):
        held = Held()
        self.on_teardown(held.release)
        fake, ebb = self.proxy(route({"/held": held}), shutdown_config(1.0, 0.3, 3.0, 10.0))
        c = self.raw(ebb)
        c.request(1, path="/held")
        self.assertTrue(held.arrived.wait(dl(5)))
        ebb.signal(signal.SIGTERM)
        first = c.wait_for(lambda f: f.type == h2raw.GOAWAY, dl(5), "the shutdown notice")
        self.assertEqual(first.goaway, (MAX_STREAM, 0), "step one: last-stream-id 2^31-1, NO_ERROR")
        second = c.wait_for(lambda f: f.type == h2raw.GOAWAY and f is not first, dl(5), "the final GOAWAY")
        self.assertEqual(second.goaway, (1, 0), "step two: the last stream ebb saw")
        # A stream opened after the final GOAWAY is above its last-stream-id: never sent to the app.
        c.request(3, path="/held")
        held.release()
        c.wait_for(lambda f: f.type == h2raw.DATA and f.stream == 1 and f.flags & h2raw.END_STREAM, dl(5),
                   "the open stream's answer")
        self.assertEqual(c.body(1), held.body)
        c.read_until_closed(dl(10))
        self.assertEqual(len(fake.requests), 1, "stream 3 must not reach the app")
        self.assertEqual(wait_exit(ebb, dl(15)), 0)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("cut"), rec.get("unanswered")), (0, 0), rec)

    def test_a_connection_arriving_in_propagation_is_served_and_told(self):
        _, ebb = self.proxy(ok(b"served"), shutdown_config(3.0, 0.5, 6.0, 5.0))
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("drain started", dl(5))
        c = self.raw(ebb)
        c.request(1, path="/")
        c.wait_for(lambda f: f.type == h2raw.DATA and f.stream == 1 and f.flags & h2raw.END_STREAM, dl(5), "the answer")
        self.assertEqual(c.body(1), b"served")
        c.wait_for(lambda f: f.type == h2raw.GOAWAY and f.goaway[0] == 1, dl(5), "the final GOAWAY")
        self.assertIn((MAX_STREAM, 0), c.goaways(), "told at once, with the shutdown notice first")
        self.assertEqual(wait_exit(ebb, dl(15)), 0)

    def test_deadline_cuts_open_streams_with_cancel(self):
        fake, ebb = self.proxy(route({"/never": never_answer}), shutdown_config(0.3, 0.1, 1.0, 1.0))
        c = self.raw(ebb)
        c.request(1, path="/never")
        fake.wait_requests(1, dl(5))
        ebb.signal(signal.SIGTERM)
        frames = c.read_until_closed(dl(10))
        rst = [f for f in frames if f.type == h2raw.RST_STREAM and f.stream == 1]
        self.assertTrue(rst, f"the cut stream gets RST_STREAM: {frames}")
        self.assertEqual(int.from_bytes(rst[0].payload, "big"), 8, "CANCEL")
        self.assertEqual(wait_exit(ebb, dl(10)), 1, "a request was cut at drain_timeout: exit 1")
        rec = ebb.logs("drained")[0]
        self.assertEqual(rec.get("cut"), 1, rec)

    def test_a_stream_that_is_not_read_holds_back_its_app_not_its_siblings(self):
        # Stream 1 asks for 32 MiB and never opens its window beyond the first 64 KiB; the
        # connection's window is opened wide, so stream 3 can only be held up by ebb itself.
        fake, ebb = self.proxy(route({"/huge": send_huge(32 * MIB), "/small": ok(b"small answer")}))
        c = self.raw(ebb)
        c.send(h2raw.frame(h2raw.WINDOW_UPDATE, 0, 0, (1 << 30).to_bytes(4, "big")))
        c.request(1, path="/huge")
        # ebb stops reading the app once what it holds for the stream reaches its watermark.
        wait_metric(ebb, "ebb_backpressure_pauses_total", {"side": "upstream"}, lambda v: v >= 1, dl(10),
                    "ebb stops reading the app for the stream nobody reads")
        c.request(3, path="/small")
        c.wait_for(lambda f: f.type == h2raw.DATA and f.stream == 3 and f.flags & h2raw.END_STREAM, dl(5),
                   "the sibling's whole answer")
        self.assertEqual(c.body(3), b"small answer")
        got = len(c.body(1))
        self.assertLessEqual(got, 65535, "no more than the stream's window was sent")
        self.assertLess(ebb.rss_kib(), 64 * 1024, "ebb holds a window and a watermark, not the 32 MiB")
        self.assertFalse(c.ended(1))

    def test_max_connection_age_sends_the_goaways_without_a_drain(self):
        _, ebb = self.proxy(ok(b"young"), {"http2": {"max_connection_age": "400ms"}})
        c = self.raw(ebb)
        c.request(1, path="/")
        c.wait_for(lambda f: f.type == h2raw.DATA and f.stream == 1 and f.flags & h2raw.END_STREAM, dl(5), "the answer")
        c.wait_for(lambda f: f.type == h2raw.GOAWAY and f.goaway[0] == 1, dl(5), "the final GOAWAY at its age")
        self.assertEqual(c.goaways()[0], (MAX_STREAM, 0), "the shutdown notice came first")
        c.read_until_closed(dl(5))
        self.assertEqual(curl_h2(ebb.proxy_port, "/")[0], 200, "ebb is not draining: a new connection is served")
        self.assertGreaterEqual(scrape(ebb).value("ebb_http2_goaway_total"), 1)

    def test_a_connection_idle_after_its_last_stream_is_closed_at_client_idle(self):
        # One request, its answer read, then silence: no WINDOW_UPDATE, no PING. client_idle
        # counts from the end of the last stream, and ends the connection with a GOAWAY.
        _, ebb = self.proxy(ok(b"once"), {"timeouts": {"client_idle": "500ms"}})
        c = self.raw(ebb)
        # ebb's SETTINGS read and acknowledged first, so that nothing follows the request.
        c.wait_for(lambda f: f.type == h2raw.SETTINGS and not f.flags & h2raw.ACK, dl(5), "ebb's SETTINGS")
        c.request(1, path="/")
        c.wait_for(lambda f: f.type == h2raw.DATA and f.stream == 1 and f.flags & h2raw.END_STREAM, dl(5), "the answer")
        c.wait_for(lambda f: f.type == h2raw.GOAWAY, dl(5), "the idle GOAWAY")
        self.assertEqual(c.goaways()[-1], (1, 0), "NO_ERROR, and stream 1 was processed")
        c.read_until_closed(dl(5))
        wait_metric(ebb, "ebb_connections_active", None, lambda v: v == 0, dl(5), "the connection closed")

    def test_errors_for_grpc_requests_are_grpc_shaped(self):
        dead = unused_port()
        _, ebb = self.proxy(None, {"upstream": f"127.0.0.1:{dead}",
                                   "upstream_retry": {"connect_retry_budget": "0ms"},
                                   "readiness": {"upstream_check": "none"}})
        headers = nghttp_fields(ebb.proxy_port, "/pkg.Svc/Method", b"\x00\x00\x00\x00\x00",
                                ["content-type: application/grpc", "te: trailers"])
        self.assertEqual(headers.get(":status"), "200", headers)
        self.assertEqual(headers.get("grpc-status"), "14", headers)
        self.assertTrue(headers.get("grpc-message"), headers)
        self.assertTrue(headers.get("x-ebb-error"), headers)
        status, headers, _ = curl_h2(ebb.proxy_port, "/plain")
        self.assertEqual(status, 502, headers)
        self.assertIn("refused", headers.get("x-ebb-error", ""), headers)

    def test_rapid_reset_ends_the_connection_not_ebb(self):
        fake, ebb = self.proxy(ok(b"fine"))
        c = self.raw(ebb)
        burst = b"".join(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS | h2raw.END_STREAM, s,
                                     h2raw.header_block(path="/rr")) +
                         h2raw.frame(h2raw.RST_STREAM, 0, s, (8).to_bytes(4, "big"))
                         for s in range(1, 2 * 3000, 2))
        try:
            c.send(burst)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames = c.read_until_closed(dl(10))
        goaway = [f.goaway for f in frames if f.type == h2raw.GOAWAY]
        self.assertTrue(goaway, f"a GOAWAY says why: {frames[-5:]}")
        self.assertNotEqual(goaway[-1][1], 0, "an error code, not NO_ERROR")
        self.assertLess(len(fake.requests), 3000, "not every reset stream became work for the app")
        status, _, body = curl_h2(ebb.proxy_port, "/")
        self.assertEqual((status, body), (200, b"fine"), "ebb still serves")
        self.assertGreaterEqual(scrape(ebb).value("ebb_http2_protocol_errors_total"), 1)

    def test_garbage_after_the_preface_is_a_protocol_error(self):
        _, ebb = self.proxy(ok(b"fine"))
        c = self.raw(ebb)
        c.send(b"\x00\x00\x04\xff\x00\x00\x00\x00\x00garbage that is not a frame at all" * 3)
        frames = c.read_until_closed(dl(10))
        self.assertTrue(any(f.type == h2raw.GOAWAY for f in frames), frames)
        self.assertEqual(curl_h2(ebb.proxy_port, "/")[0], 200)


if __name__ == "__main__":
    unittest.main()
