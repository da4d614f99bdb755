"""gRPC through ebb (issue 10, the app side): ebb in front of an h2c app (`upstream_protocol: h2c`)
with real gRPC peers (python3-grpcio: harness/grpc_app.py as the app, channels as clients) for the
four kinds of call, trailers and status, messages of several MiB both ways, cancellation,
grpc-timeout, the app dying mid-stream and the drain; a scripted HTTP/2 app (harness/h2app.py) for
the app's GOAWAY (with its control), its concurrency limit and HTTP/1 clients; nghttp and h2load
through ebb. python3-grpcio is Debian's, so this file runs itself under /usr/bin/python3."""

import os
import sys

try:
    import grpc
except ImportError:  # the CTest interpreter may be another Python than Debian's
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", "-u", *sys.argv])
    raise

import hashlib
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import unittest

from harness import h2raw
from harness.admin import scrape, wait_metric
from harness.case import LifecycleCase
from harness.config import deep_merge, shutdown_config
from harness.grpc_app import OPTIONS, GrpcApp
from harness.h2app import H2App
from harness.h2raw import NGHTTP, nghttp_fields
from harness.http import build_request
from harness.lifecycle import wait_exit, wait_ready
from harness.wait import dl, wait_until

H2LOAD = shutil.which("h2load")
MIB = 1 << 20
H2C = {"upstream_protocol": "h2c"}


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class GrpcCase(LifecycleCase):
    def grpc_proxy(self, config: dict | None = None):
        app = GrpcApp()
        self.on_teardown(app.stop)
        ebb = self.start_ebb(app.port, deep_merge(H2C, config or {}))
        wait_ready(ebb)
        return app, ebb

    def h2_proxy(self, app: H2App, config: dict | None = None):
        self.on_teardown(app.stop)
        ebb = self.start_ebb(app.port, deep_merge(H2C, config or {}))
        wait_ready(ebb)
        return ebb

    def channel(self, ebb) -> grpc.Channel:
        ch = grpc.insecure_channel(f"127.0.0.1:{ebb.proxy_port}", options=OPTIONS)
        self.on_teardown(ch.close)
        return ch


class GrpcCalls(GrpcCase):
    def test_unary_status_and_trailers_pass_through(self):
        app, ebb = self.grpc_proxy()
        unary = self.channel(ebb).unary_unary("/test.Svc/Unary")
        resp, call = unary.with_call(b"hello", timeout=dl(10))
        self.assertEqual(resp, b"hello")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertIn(("x-trailer", "yes"), tuple(call.trailing_metadata()), "the app's custom trailer")
        with self.assertRaises(grpc.RpcError) as cm:
            unary(b"fail:no such thing", timeout=dl(10))
        err = cm.exception
        self.assertEqual((err.code(), err.details()), (grpc.StatusCode.NOT_FOUND, "no such thing"))
        self.assertIn(("x-detail", "details here"), tuple(err.trailing_metadata()))
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_grpc_requests_total", {"grpc_status": "0"}), 1)
        self.assertEqual(m.value("ebb_grpc_requests_total", {"grpc_status": "5"}), 1, "NOT_FOUND")
        self.assertEqual(m.value("ebb_upstream_connections_opened_total"), 1, "both calls on one app connection")

    def test_streaming_calls_with_messages_of_several_mib(self):
        app, ebb = self.grpc_proxy()
        ch = self.channel(ebb)
        big = os.urandom(8 * MIB)
        self.assertEqual(ch.unary_unary("/test.Svc/Unary")(big, timeout=dl(30)), big, "8 MiB each way")
        got = list(ch.unary_stream("/test.Svc/ServerStream")(b"4:3145728:0", timeout=dl(30)))
        self.assertEqual([bytes([i]) * 3145728 for i in range(4)], got, "server streaming: 4 x 3 MiB")
        msgs = [os.urandom(MIB) for _ in range(6)]
        want = f"6:{6 * MIB}:{hashlib.sha256(b''.join(msgs)).hexdigest()}".encode()
        self.assertEqual(ch.stream_unary("/test.Svc/ClientStream")(iter(msgs), timeout=dl(30)), want,
                         "client streaming: 6 x 1 MiB")
        msgs = [os.urandom(2 * MIB) for _ in range(5)]
        self.assertEqual(list(ch.stream_stream("/test.Svc/Bidi")(iter(msgs), timeout=dl(30))), msgs,
                         "bidi: 5 x 2 MiB echoed")
        self.assertEqual(scrape(ebb).value("ebb_grpc_requests_total", {"grpc_status": "0"}), 4)
        self.assertLess(ebb.rss_peak_kib(), 96 * 1024 * (4 if os.environ.get("EBB_TEST_SANITIZED") == "1" else 1),
                        "ebb streams the messages; it does not hold them")

    def test_a_client_that_does_not_read_holds_back_its_stream_not_its_siblings(self):
        # Stream 1 asks for 64 MiB and never opens its window beyond the first 64 KiB (the
        # connection's is opened wide): ebb stops acknowledging the app's DATA for that stream
        # alone, so the app's window closes and stream 3 on the same connections still flows.
        app, ebb = self.grpc_proxy()
        c = h2raw.H2Raw(ebb.proxy_port)
        self.on_teardown(c.close)
        c.send(h2raw.frame(h2raw.WINDOW_UPDATE, 0, 0, (1 << 30).to_bytes(4, "big")))
        grpc_fields = [("content-type", "application/grpc"), ("te", "trailers")]
        c.request(1, "POST", "/test.Svc/ServerStream", grpc_fields, grpc_frame(b"64:1048576:0"))
        wait_metric(ebb, "ebb_backpressure_pauses_total", {"side": "upstream"}, lambda v: v >= 1, dl(10),
                    "ebb to hold the app back for the stream nobody reads")
        c.request(3, "POST", "/test.Svc/Unary", grpc_fields, grpc_frame(b"sibling"))
        c.wait_for(lambda f: f.stream == 3 and f.type == h2raw.HEADERS and f.flags & h2raw.END_STREAM, dl(10),
                   "the sibling's whole answer, trailers included")
        self.assertEqual(c.body(3), grpc_frame(b"sibling"))
        self.assertLessEqual(len(c.body(1)), 65535, "no more than the stream's window")
        self.assertFalse(c.ended(1))
        self.assertLess(ebb.rss_kib(), 64 * 1024 * (4 if os.environ.get("EBB_TEST_SANITIZED") == "1" else 1) // 2,
                        "ebb holds a window and a watermark, not the 64 MiB")

    def test_client_cancel_reaches_the_app(self):
        app, ebb = self.grpc_proxy()
        it = self.channel(ebb).unary_stream("/test.Svc/ServerStream")(b"1000:10:20", timeout=dl(60))
        next(it)
        it.cancel()
        # The app's stream would run 20 s; it ends now only if ebb passed the cancel on.
        app.wait_line(lambda l: l == "cancelled ServerStream", dl(10), "the app to see the cancel")
        self.assertEqual(app.count("done ServerStream"), 0)
        wait_until(lambda: scrape(ebb).value("ebb_requests_unanswered_total", {"reason": "client_closed"}) == 1,
                   dl(5), "the cancelled call counted as the client's")

    def test_grpc_timeout_bounds_the_wait_for_the_app(self):
        app, ebb = self.grpc_proxy()
        headers = [":method: POST", "content-type: application/grpc", "te: trailers"]
        t0 = time.monotonic()
        fields = nghttp_fields(ebb.proxy_port, "/test.Svc/Unary", grpc_frame(b"sleep:3000"),
                               headers + ["grpc-timeout: 300m"], seconds=20)
        self.assertLess(time.monotonic() - t0, 2.5, "answered at the client's deadline, not the app's 3 s")
        self.assertEqual((fields[":status"], fields.get("grpc-status")), ("200", "4"), fields)
        app.wait_line(lambda l: l == "cancelled Unary", dl(10), "ebb to cancel the app's stream")
        self.assertEqual(scrape(ebb).value("ebb_grpc_requests_total", {"grpc_status": "4"}), 1)
        # Control: without grpc-timeout the same call waits for the app and succeeds.
        fields = nghttp_fields(ebb.proxy_port, "/test.Svc/Unary", grpc_frame(b"sleep:500"), headers,
                               seconds=20)
        self.assertEqual(fields.get("grpc-status"), "0", fields)
        # A real client with a deadline gets DEADLINE_EXCEEDED.
        with self.assertRaises(grpc.RpcError) as cm:
            self.channel(ebb).unary_unary("/test.Svc/Unary")(b"sleep:3000", timeout=0.3)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_the_app_dying_mid_stream_gives_unavailable_at_once(self):
        app, ebb = self.grpc_proxy({"upstream_retry": {"connect_retry_budget": "200ms"}})
        ch = self.channel(ebb)
        it = ch.unary_stream("/test.Svc/ServerStream")(b"1000:100:20", timeout=dl(60))
        next(it)
        app.kill()
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in it:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception)
        self.assertLess(time.monotonic() - t0, dl(3), "promptly, not at a timeout")
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_requests_unanswered_total", {"reason": "upstream_broken"}), 1)
        # With the app gone, a new call is ebb's own answer: UNAVAILABLE, counted as a 502.
        with self.assertRaises(grpc.RpcError) as cm:
            ch.unary_unary("/test.Svc/Unary")(b"x", timeout=dl(10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_requests_total", {"code": "502", "source": "ebb"}), 1)
        self.assertEqual(m.value("ebb_grpc_requests_total", {"grpc_status": "14"}), 1)


class GrpcDrain(GrpcCase):
    def test_an_open_stream_finishes_and_a_later_call_goes_nowhere(self):
        app, ebb = self.grpc_proxy(shutdown_config(0.3, 0.1, 1.0, 10.0))
        ch = self.channel(ebb)
        it = ch.unary_stream("/test.Svc/ServerStream")(b"20:100:100", timeout=dl(30))
        first = next(it)
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        with self.assertRaises(grpc.RpcError) as cm:
            ch.unary_unary("/test.Svc/Unary")(b"late", timeout=dl(5))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(app.count("start Unary"), 0, "the call after the GOAWAY never reached this app")
        rest = list(it)
        self.assertEqual([first] + rest, [bytes([i]) * 100 for i in range(20)], "the whole stream, in order")
        self.assertEqual(wait_exit(ebb, dl(15)), 0)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("cut"), rec.get("unanswered")), (0, 0), rec)

    def test_the_deadline_cuts_the_rest_with_unavailable(self):
        app, ebb = self.grpc_proxy(shutdown_config(0.2, 0.1, 0.5, 1.0))
        it = self.channel(ebb).unary_stream("/test.Svc/ServerStream")(b"1000:100:50", timeout=dl(60))
        next(it)
        ebb.signal(signal.SIGTERM)
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in it:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                         "a status the client may retry on, not CANCELLED")
        self.assertLess(time.monotonic() - t0, dl(5))
        self.assertEqual(wait_exit(ebb, dl(10)), 1, "a call was cut at drain_timeout: exit 1")
        self.assertEqual(ebb.logs("drained")[0].get("cut"), 1)


class H2cApp(GrpcCase):
    def concurrent_gets(self, ebb, n: int) -> list:
        clients = [self.connect(ebb) for _ in range(n)]
        for i, c in enumerate(clients):
            c.send(build_request("GET", f"/r{i}", host="t"))
        return [c.read_response(timeout=dl(10)) for c in clients]

    def test_streams_above_the_apps_goaway_go_again_on_a_fresh_connection(self):
        # The app takes two streams on its first connection, answers stream 1, says GOAWAY with
        # last-stream-id 1 and closes: stream 3 never reached it, so ebb sends it again.
        app = H2App(goaway_after=2, goaway_last=1)
        ebb = self.h2_proxy(app)
        r1, r2 = self.concurrent_gets(ebb, 2)
        self.assertEqual((r1.status, r2.status), (200, 200), (r1, r2))
        self.assertEqual(app.connections, 2)
        seen = sorted((r.conn_no, r.stream) for r in app.requests)
        self.assertEqual(seen, [(1, 1), (1, 3), (2, 1)], "stream 3 of connection 1 went again on connection 2")
        self.assertEqual(scrape(ebb).value("ebb_upstream_errors_total", {"kind": "stale_retried"}), 1)

    def test_a_refused_stream_goes_again(self):
        # REFUSED_STREAM says the app did nothing with it (RFC 9113 §8.7): a POST with a body is
        # sent again, body included, where a seen one would be ebb's 502.
        refused = []

        def refuse_first(req):
            if not refused:
                refused.append(req.body)
                return "refuse"
            return 200, [], b"took " + req.body, []
        app = H2App(refuse_first)
        ebb = self.h2_proxy(app)
        r = self.connect(ebb).request("POST", "/once", body=b"the body", host="t", timeout=dl(10))
        self.assertEqual((r.status, r.body), (200, b"took the body"))
        self.assertEqual(refused, [b"the body"])
        self.assertEqual(scrape(ebb).value("ebb_upstream_errors_total", {"kind": "stale_retried"}), 1)

    def test_control_a_stream_the_app_saw_is_not_sent_again(self):
        # The same app, but its GOAWAY says it saw stream 3: ebb must not send it twice.
        app = H2App(goaway_after=2, goaway_last=3, answer_upto=1)
        ebb = self.h2_proxy(app)
        statuses = sorted(r.status for r in self.concurrent_gets(ebb, 2))
        self.assertEqual(statuses, [200, 502])
        self.assertEqual(app.connections, 1)
        self.assertEqual(scrape(ebb).value("ebb_upstream_errors_total", {"kind": "stale_retried"}), 0)

    def test_http1_clients_over_an_h2c_app(self):
        app = H2App()
        ebb = self.h2_proxy(app)
        c = self.connect(ebb)
        c.send(build_request("POST", "/path?q=1", [("Connection", "keep-alive, x-hop"), ("X-Hop", "1"),
                                                  ("TE", "trailers"), ("Transfer-Encoding", "chunked"),
                                                  ("X-Custom", "kept")],
                             b"5\r\nhello\r\n0\r\n\r\n", host="example.com"))
        r = c.read_response(timeout=dl(10))
        self.assertEqual((r.status, r.body), (200, b"from h2 app: hello"))
        self.assertEqual(r.framing, "chunked")
        self.assertIn(("x-app-trailer", "done"), r.trailers, "the app's trailers in the trailer section")
        req = app.requests[-1]
        fields = dict(req.headers)
        self.assertEqual((fields[":method"], fields[":path"], fields[":authority"], fields[":scheme"]),
                         ("POST", "/path?q=1", "example.com", "http"))
        for dropped in ("host", "connection", "x-hop", "transfer-encoding", "keep-alive"):
            self.assertNotIn(dropped, fields, f"{dropped} is not sent to an HTTP/2 app")
        self.assertEqual(fields.get("te"), "trailers")
        self.assertEqual(fields.get("x-custom"), "kept")
        self.assertEqual(fields.get("x-forwarded-for"), "127.0.0.1")
        self.assertEqual(fields.get("x-forwarded-host"), "example.com")
        self.assertTrue(fields.get("x-request-id"))
        # The connection stays usable, and so does the app's.
        r = c.request("GET", "/again", host="example.com")
        self.assertEqual(r.status, 200)
        self.assertEqual(app.connections, 1)

    def test_an_app_that_does_not_answer_gets_a_504_and_a_cancel(self):
        app = H2App(lambda req: None if req.header(":path") == "/silent" else (200, [], b"ok", []))
        ebb = self.h2_proxy(app, {"timeouts": {"upstream_response": "300ms"}})
        c = self.connect(ebb)
        r = c.request("GET", "/silent", host="t", timeout=dl(10))
        self.assertEqual((r.status, r.header("x-ebb-error")), (504, "upstream response timeout"))
        wait_until(lambda: app.resets, dl(5), "the app to get the stream's reset")
        self.assertEqual(app.resets, [(1, 1, 8)], "RST_STREAM(CANCEL) for the stream timed out")
        self.assertEqual(c.request("GET", "/next", host="t", timeout=dl(10)).status, 200,
                         "the app's connection serves the next stream")
        self.assertEqual(app.connections, 1)

    def test_an_answer_head_over_the_limit_is_a_502(self):
        app = H2App(lambda req: (200, [("x-big", "b" * (3000 if req.header(":path") == "/big" else 10))], b"x", []))
        ebb = self.h2_proxy(app, {"limits": {"max_header_bytes": 2048}})
        c = self.connect(ebb)
        r = c.request("GET", "/big", host="t", timeout=dl(10))
        self.assertEqual((r.status, r.header("x-ebb-error")), (502, "upstream sent a malformed response"))
        self.assertEqual(self.connect(ebb).request("GET", "/small", host="t", timeout=dl(10)).status, 200)

    def test_an_http1_app_behind_h2c_is_a_clear_502(self):
        # A misconfiguration: the app speaks HTTP/1 only. Its answer to the preface is not HTTP/2.
        ls = socket.create_server(("127.0.0.1", 0))
        self.on_teardown(ls.close)

        def app():
            while True:
                try:
                    c = ls.accept()[0]
                except OSError:
                    return
                with c:
                    c.recv(65536)
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    c.recv(65536)  # ebb closes
        threading.Thread(target=app, daemon=True).start()
        ebb = self.start_ebb(ls.getsockname()[1], deep_merge(H2C, {"readiness": {"upstream_check": "none"}}))
        r = self.connect(ebb).request("GET", "/", host="t", timeout=dl(10))
        self.assertEqual((r.status, r.header("x-ebb-error")), (502, "upstream sent a malformed response"))
        ebb.wait_log("bad HTTP/2 from the app", dl(5))

    @unittest.skipUnless(NGHTTP and H2LOAD, "nghttp and h2load (nghttp2-client) are needed")
    def test_h2load_and_nghttp_through_ebb_respect_the_apps_stream_limit(self):
        app = H2App(max_streams=4)
        ebb = self.h2_proxy(app)
        fields = nghttp_fields(ebb.proxy_port, "/x", seconds=20)
        self.assertEqual((fields[":status"], fields.get("x-app-trailer")), ("200", "done"), fields)
        p = subprocess.run([H2LOAD, "-n", "400", "-c", "2", "-m", "10", f"http://127.0.0.1:{ebb.proxy_port}/"],
                           capture_output=True, text=True, timeout=dl(120))
        self.assertIn("400 succeeded, 0 failed", p.stdout, p.stdout)
        self.assertLessEqual(app.max_open_seen, 4, "never more streams than the app allows")
        self.assertGreaterEqual(app.connections, 2, "another connection once one is full")
        self.assertEqual(app.errors, [])


if __name__ == "__main__":
    unittest.main()
