"""SPEC §4 and §5 on the upstream side: replay on a pooled connection the app had closed (only
when safe, at most once), connect retries while the app restarts, 502/504 for refused, unreachable
and hung apps, an app breaking mid-response, and Upgrade (101 tunnel, or declined)."""

import select
import socket
import threading
import time
import unittest

from harness.admin import scrape
from harness.case import EbbTestCase
from harness.client import unused_port
from harness.data import pattern_bytes
from harness.handlers import (answer_target, close_at_once, close_idle_when_next_request_arrives,
                              close_mid_body, never_answer, ok, upgrade_echo)
from harness.http import build_request, build_response
from harness.upstream_conn import CLOSE
from harness.wait import dl


def close_at_second_request(prefix: bytes):
    """Reads every request; on the first connection, closes cleanly (EOF) without a byte of
    answer at its second request; answers every other one with `prefix` + its target."""
    def handler(req, conn):
        req.read_body()
        if conn.index == 0 and req.index == 1:
            conn.close()
            return CLOSE
        return conn.respond(200, prefix + req.target.encode())
    return handler


class Replay(EbbTestCase):
    def test_get_on_pooled_connection_reset_by_app_is_replayed(self):
        fake, ebb = self.proxy(close_idle_when_next_request_arrives)
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/first"), b"/first")
        r = c.request("GET", "/second")
        self.assertOk(r, b"/second", "a GET on a dead pooled connection must be replayed")
        self.assertEqual(fake.accepts, 2)
        self.assertEqual([q.target for q in fake.conns[1].requests], ["/second"])

    def test_get_on_pooled_connection_closed_by_app_is_replayed(self):
        # Variant: the app reads the request, then closes cleanly (EOF) without a byte of answer.
        fake, ebb = self.proxy(close_at_second_request(b""))
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/first"), b"/first")
        self.assertOk(c.request("GET", "/second"), b"/second")
        self.assertEqual(fake.accepts, 2)
        self.assertEqual([q.target for q in fake.requests], ["/first", "/second", "/second"])

    def test_replay_happens_at_most_once(self):
        # Every request after the first one is met by a close: the replay on a fresh
        # connection fails too, and then ebb must answer 502 rather than retry again.
        def handler(req, conn):
            req.read_body()
            if conn.index == 0 and req.index == 0:
                return conn.respond(200, b"first")
            conn.close()
            return CLOSE
        fake, ebb = self.proxy(handler)
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/first"), b"first")
        r = c.request("GET", "/second", timeout=dl(5))
        self.assertEbbError(r, 502, "the replay failed too")
        self.assertEqual(fake.accepts, 2, f"more than one replay:\n{fake.summary()}")
        self.assertEqual([q.target for q in fake.requests].count("/second"), 2)

    def post_after_a_pooled_get(self, handler):
        """GET /first, then POST /pay on the same client connection (so on the pooled app
        connection): (fake, the POST's response, the POSTs the app received)."""
        fake, ebb = self.proxy(handler)
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/first"))
        r = c.request("POST", "/pay", [("Content-Type", "text/plain")], b"amount=100")
        return fake, r, [q for q in fake.requests if q.target == "/pay"]

    def test_post_on_pooled_connection_closed_by_app_is_not_replayed(self):
        # The app reads the whole POST and closes without answering: it may have acted on it,
        # so ebb must not send it again. A replay would be answered 200 by connection 1.
        fake, r, posts = self.post_after_a_pooled_get(close_at_second_request(b"done "))
        self.assertEqual(len(posts), 1, f"the app received the POST {len(posts)} times:\n"
                                        f"{fake.summary()}")
        self.assertEbbError(r, 502, "the app closed without answering the POST")

    def test_post_on_pooled_connection_reset_by_app_is_not_replayed(self):
        # Variant with the reset: the app never read the POST, but ebb cannot know that.
        def handler(req, conn):
            req.read_body()
            if conn.index == 0 and req.index == 0:
                conn.respond(200, b"first")
                select.select([conn.sock], [], [], dl(20))
                conn.close()
                return CLOSE
            return conn.respond(200, b"done " + req.target.encode())
        fake, r, posts = self.post_after_a_pooled_get(handler)
        self.assertEqual(posts, [], f"the POST was replayed on a fresh connection:\n{fake.summary()}")
        self.assertEbbError(r, 502)


class ConnectFailures(EbbTestCase):
    def test_connect_refused_retried_until_app_is_back(self):
        port = unused_port()
        ebb = self.start_ebb(port, {"upstream_retry": {"connect_retry_budget": "2s"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        c.send(build_request("GET", "/restart"))
        time.sleep(0.3)  # the app is restarting: this delay is the behaviour under test
        fake = self.start_fake(ok(b"back"), port=port)
        r = c.read_response(timeout=dl(5))
        elapsed = time.monotonic() - t0
        self.assertOk(r, b"back", "the request must wait for the app within the retry budget")
        self.assertLess(elapsed, 2.0 + dl(0.5), "answered later than the 2s retry budget")
        self.assertEqual([q.target for q in fake.requests], ["/restart"])

    def test_nothing_listening_gives_502_after_retry_budget(self):
        ebb = self.start_ebb(unused_port(), {"upstream_retry": {"connect_retry_budget": "1s"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        r = c.request("GET", "/", timeout=dl(5))
        elapsed = time.monotonic() - t0
        self.assertEbbError(r, 502)
        self.assertTrue(r.body.strip(), "SPEC §5: a short text body naming the cause")
        self.assertGreaterEqual(elapsed, 0.5, f"502 after {elapsed:.3f}s: the 1s connect retry "
                                              f"budget was not used")
        self.assertLess(elapsed, 1.0 + dl(1.5))

    def _blackhole_port(self):
        """A loopback port whose accept queue is full (listen(0), never accepted), so that
        Linux drops further SYNs and a connect to it hangs: a connect timeout on loopback."""
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        socks = [lsock]
        self.on_teardown(lambda: [s.close() for s in socks])
        addr = lsock.getsockname()
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            socks.append(s)
            _, writable, _ = select.select([], [s], [], 0.3)
            if not writable:
                return addr[1]  # this SYN was dropped: the queue is full
        self.skipTest("cannot fill a loopback accept queue here: no way to make connect() hang")

    def test_upstream_connect_timeout_gives_504(self):
        port = self._blackhole_port()
        ebb = self.start_ebb(port, {"timeouts": {"upstream_connect": "500ms"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        r = c.request("GET", "/", timeout=dl(6))
        elapsed = time.monotonic() - t0
        self.assertEbbError(r, 504, "connect timed out")
        self.assertGreaterEqual(elapsed, 0.48, f"504 after {elapsed:.3f}s < upstream_connect")
        self.assertLess(elapsed, dl(5))


class AppFailures(EbbTestCase):
    def test_app_closing_right_after_accept_gives_502(self):
        fake, ebb = self.proxy(ok(), on_accept=close_at_once)
        c = self.connect(ebb)
        r = c.request("GET", "/", timeout=dl(6))
        self.assertEbbError(r, 502, "the app accepts and closes before reading the request")
        self.assertTrue(r.body.strip(), "SPEC §5: a short text body naming the cause")
        self.assertGreaterEqual(fake.accepts, 1)

    def test_status_outside_100_599_gives_502_counted_once(self):
        # SPEC §5: an answer that is not HTTP is ebb's 502, never forwarded; counted once.
        for raw in (b"HTTP/1.1 999 Nope\r\nContent-Length: 2\r\n\r\nno",
                    b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nno"):
            def bad(req, conn, raw=raw):
                req.read_body()
                conn.send(raw)
                return CLOSE
            fake, ebb = self.proxy(bad)
            c = self.connect(ebb)
            r = c.request("GET", "/", timeout=dl(5))
            self.assertEbbError(r, 502, f"the app answered {raw[:16]!r}")
            m = scrape(ebb)
            total = sum(v for _, v in m.labelled("ebb_requests_total"))
            self.assertEqual(total, 1, "counted once in ebb_requests_total")
            self.assertEqual(m.value("ebb_requests_total", {"code": "502", "source": "ebb"}), 1)
            self.assertEqual(m.value("ebb_request_duration_seconds_count"), 1, "and once in the histogram")
            self.assertEqual(m.value("ebb_upstream_errors_total", {"kind": "bad_response"}), 1)

    def test_hung_app_gives_504_after_upstream_response_timeout(self):
        fake, ebb = self.proxy(never_answer, {"timeouts": {"upstream_response": "500ms"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        r = c.request("GET", "/hang", timeout=dl(6))
        elapsed = time.monotonic() - t0
        self.assertEbbError(r, 504)
        # 20 ms of slack: libuv timers run on the loop's cached clock.
        self.assertGreaterEqual(elapsed, 0.48, f"504 after {elapsed:.3f}s < upstream_response")
        self.assertLess(elapsed, dl(5) if dl(5) > 5 else 5.0)
        fake.wait_conn_closed(0, dl(2))  # the hung upstream connection is released

    def test_app_that_stops_reading_an_upload_gives_504_after_upstream_response(self):
        # The app takes the head and then nothing: the upload fills the buffers between, ebb stops
        # reading the client, and only a deadline on the app taking the body ends the wait.
        stuck = threading.Event()
        self.on_teardown(stuck.set)

        def takes_no_body(req, conn):
            stuck.wait(dl(30))
            return CLOSE

        fake, ebb = self.proxy(takes_no_body, {"timeouts": {"upstream_response": "500ms"}})
        c = self.connect(ebb)
        size = 64 * 1024 * 1024  # past every buffer on the way

        def upload():
            try:
                c.sock.sendall(build_request("POST", "/upload", [("Content-Length", str(size))]))
                chunk = b"u" * (1024 * 1024)
                for _ in range(size // len(chunk)):
                    c.sock.sendall(chunk)
            except OSError:
                pass  # ebb answered and closed: the rest of the upload has nowhere to go

        t = threading.Thread(target=upload, daemon=True)
        t.start()
        self.on_teardown(lambda: t.join(dl(10)))
        fake.wait_requests(1, dl(5))
        t0 = time.monotonic()
        r = c.read_response(timeout=dl(10))
        self.assertEbbError(r, 504)
        self.assertGreaterEqual(time.monotonic() - t0 + 0.05, 0.45)
        self.assertEqual(scrape(ebb).value("ebb_upstream_errors_total", {"kind": "response_timeout"}), 1)

    def test_an_upload_after_100_continue_may_outlast_upstream_response(self):
        # The app says 100 Continue and reads the body as the client sends it, over longer than
        # upstream_response: the 1xx starts no deadline (before, a 504 cut the upload at 0.5 s).
        def reads_then_counts(req, conn):
            if "100-continue" in req.header_tokens("Expect"):
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            return conn.respond(200, b"got %d" % len(req.read_body()))

        fake, ebb = self.proxy(reads_then_counts, {"timeouts": {"upstream_response": "500ms"}})
        c = self.connect(ebb)
        parts = [b"p" * 1000] * 6
        c.send(build_request("POST", "/upload", [("Expect", "100-continue"),
                                                 ("Content-Length", str(sum(map(len, parts))))]))
        self.assertEqual(c.read_response(skip_1xx=False, timeout=dl(3)).status, 100)
        for part in parts:
            time.sleep(0.25)  # the client's pace: 1.5 s in all, three times upstream_response
            c.send(part)
        self.assertOk(c.read_response(timeout=dl(5)), b"got 6000")

    def test_an_answer_begun_before_the_upload_ended_still_has_a_deadline(self):
        # The app answers early (head and a little body) while the upload waits in ebb's queue
        # for it, then takes the whole body and goes silent: the answer's deadline runs from the
        # end of the request, and the client is told (a cut answer) instead of waiting forever.
        def early_then_silent(req, conn):
            time.sleep(0.3)  # the app's pace: the upload fills the buffers and waits in ebb's queue
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"e" * 10)
            req.read_body()
            conn.wait_peer_close()
            return CLOSE

        fake, ebb = self.proxy(early_then_silent, {"timeouts": {"upstream_response": "500ms"}})
        c = self.connect(ebb)
        size = 16 * 1024 * 1024
        t = threading.Thread(target=lambda: c.sock.sendall(
            build_request("POST", "/upload", [("Content-Length", str(size))]) + b"u" * size), daemon=True)
        t.start()
        self.on_teardown(lambda: t.join(dl(10)))
        head = c.read_head(timeout=dl(5))
        self.assertEqual(head.status, 200)
        self.assertClosed(c, dl(5), "the client of a stalled answer must not wait forever")
        m = scrape(ebb)
        self.assertEqual(m.value("ebb_upstream_errors_total", {"kind": "response_timeout"}), 1)
        self.assertEqual(m.value("ebb_requests_unanswered_total", {"reason": "upstream_broken"}), 1)

    def test_app_closing_mid_body_closes_client_promptly(self):
        fake, ebb = self.proxy(close_mid_body(1_000_000, 100_000),
                               {"timeouts": {"upstream_response": "30s", "client_send": "30s",
                                             "client_idle": "30s"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        c.send(build_request("GET", "/big"))
        r = c.read_response(timeout=dl(5), allow_truncated=True)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 200, "the status line was already sent: no error answer")
        self.assertFalse(r.complete, f"the client got a complete message from a broken one: {r!r}")
        self.assertTrue(c.eof)
        self.assertLessEqual(len(r.body), 100_000)
        self.assertEqual(r.body, pattern_bytes(len(r.body)), "the body bytes that came are wrong")
        self.assertLess(elapsed, dl(2), "closing took too long: a timeout fired, not the break")

    def test_app_closing_mid_chunked_body_closes_client_promptly(self):
        def handler(req, conn):
            conn.send(build_response(200, b"", [("Transfer-Encoding", "chunked")], framing="none")
                      + b"5\r\nhello\r\n1000\r\n" + b"x" * 100)
            conn.close()
            return CLOSE
        fake, ebb = self.proxy(handler, {"timeouts": {"upstream_response": "30s"}})
        c = self.connect(ebb)
        t0 = time.monotonic()
        c.send(build_request("GET", "/chunky"))
        r = c.read_response(timeout=dl(5), allow_truncated=True)
        self.assertEqual(r.status, 200)
        self.assertFalse(r.complete, f"ebb ended a broken chunked body cleanly: {r!r}, "
                                     f"body {r.body[:120]!r}")
        self.assertTrue(c.eof)
        self.assertLess(time.monotonic() - t0, dl(2))


class Upgrade(EbbTestCase):
    WS_HEADERS = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                  ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                  ("Sec-WebSocket-Version", "13")]

    def test_upgrade_101_becomes_two_way_tunnel(self):
        fake, ebb = self.proxy(upgrade_echo(first=b"server-hello"))
        c = self.connect(ebb)
        c.send(build_request("GET", "/ws", self.WS_HEADERS))
        r = c.read_head(timeout=dl(3))
        self.assertEqual(r.status, 101, r)
        self.assertEqual(r.header_tokens("Upgrade"), ["websocket"])
        self.assertIn("upgrade", r.header_tokens("Connection"))
        (req,) = fake.requests
        self.assertEqual(req.header_tokens("Upgrade"), ["websocket"], "the Upgrade request is relayed")
        self.assertIn("upgrade", req.header_tokens("Connection"))
        self.assertEqual(c.read_exact(12, dl(3), "bytes the app sent with its 101"), b"server-hello")
        for size in (1, 100, 65_536, 300_000):
            payload = pattern_bytes(size, size)
            c.send(payload)
            self.assertEqual(c.read_exact(size, dl(5), f"{size} echoed bytes"), payload)
        c.sock.shutdown(socket.SHUT_WR)
        fake.wait_conn_closed(0, dl(3))  # the client's end travels through the tunnel
        self.assertClosed(c)

    def test_upgrade_declined_with_200_keeps_http(self):
        fake, ebb = self.proxy(answer_target)
        c = self.connect(ebb)
        c.send(build_request("GET", "/maybe-ws", self.WS_HEADERS))
        r = c.read_response(timeout=dl(3))
        self.assertOk(r, b"/maybe-ws")
        self.assertNotEqual(r.status, 101)
        if "close" in r.header_tokens("Connection"):
            # Closing after a declined upgrade is allowed, if announced (RFC 9112 §9.6).
            self.assertClosed(c)
            c = self.connect(ebb)
        self.assertOk(c.request("GET", "/plain"), b"/plain",
                      "after a declined upgrade the connection is still HTTP")
        self.assertEqual([q.target for q in fake.requests], ["/maybe-ws", "/plain"])


if __name__ == "__main__":
    unittest.main()
