"""An answer ebb has read whole from the app, but not yet written to a slow client, is delivered
at the client's pace when the connection closes after it (`Connection: close`, and every answer
of a drain): the 2 s linger after a close starts with the FIN, not while the answer's tail is
still queued; until then the send timeout (timeouts.client_send, restarted by progress) guards
it, as it guards any answer. When such an answer is cut anyway (the client stopped reading for
client_send, the drain's deadline), it counts as unanswered, with a warn line, like a request in
flight: for HTTP/1, and for an HTTP/2 stream whose rest the client's flow control holds.

The reader is harness.client.stalled_socket. With limits.connection_buffer at 256 KiB, ebb reads
the 192 KiB answer whole (the exchange ends, ebb_requests_in_flight is 0) and holds what the
kernel does not take; each test checks that it does, so none can pass by never stalling ebb."""

import json
import socket
import time
import unittest

from harness.admin import scrape, wait_metric
from harness.case import LifecycleCase
from harness.client import stalled_socket
from harness.data import KIB, pattern_bytes
from harness.h2raw import END_HEADERS, END_STREAM, HEADERS, PREFACE, SETTINGS, frame, header_block
from harness.handlers import route, send_huge
from harness.http import build_request
from harness.wait import dl, wait_stable, wait_until

BODY = 192 * KIB
LINGER = 2.0  # ClientConn::kLingerMs


class Delivery(LifecycleCase):
    def start(self, config: dict | None = None):
        base = {"limits": {"connection_buffer": 256 * KIB}, "log": {"access": False}}
        for k, v in (config or {}).items():
            base[k] = {**base.get(k, {}), **v}
        return self.proxy(route({"/big": send_huge(BODY, chunk=64 * KIB)}), base)

    def stall(self, ebb, first: bytes) -> socket.socket:
        s = stalled_socket(ebb.proxy_port, first)
        self.on_teardown(s.close)
        return s

    def held(self, fake, ebb) -> float:
        """The answer is whole in ebb (its exchange ended) and its tail waits there for the client."""
        fake.wait_requests(1, dl(5))
        wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 0, dl(5), "the answer read whole")
        held = wait_stable(lambda: scrape(ebb).value("ebb_buffered_bytes"), 0.3, dl(10), "ebb_buffered_bytes")
        self.assertGreater(held, 16 * KIB, "ebb holds none of the answer: the client is not slow enough to test")
        return held

    def read_all(self, s: socket.socket) -> bytes:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * KIB)
        s.settimeout(dl(10))
        out = bytearray()
        while True:
            try:
                b = s.recv(256 * KIB)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
        return bytes(out)

    def unanswered(self, ebb, reason: str) -> float:
        return scrape(ebb).value("ebb_requests_unanswered_total", {"reason": reason})

    def test_a_closing_answer_outlasts_the_linger_for_a_slow_reader(self):
        fake, ebb = self.start()
        s = self.stall(ebb, build_request("GET", "/big", [("Connection", "close")]))
        self.held(fake, ebb)
        # Past the linger, the tail must still be in ebb and the connection open: before the fix
        # the linger started with the close decision and cut the tail at 2 s, counting nothing.
        until = time.monotonic() + LINGER + 1.0
        while time.monotonic() < until:
            self.assertGreater(scrape(ebb).value("ebb_buffered_bytes"), 0,
                               "the answer's tail left ebb before the client read it")
            time.sleep(0.05)  # a sampling period over a span of time, not a wait for a condition
        data = self.read_all(s)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        self.assertIn(b"connection: close", head.lower(), head)
        self.assertEqual(len(body), BODY, "the answer arrived cut")
        self.assertEqual(body, pattern_bytes(BODY), "the answer arrived corrupted")
        ex = scrape(ebb)
        self.assertEqual(sum(v for _, v in ex.labelled("ebb_requests_unanswered_total")), 0)
        self.assertEqual(ex.value("ebb_client_send_timeouts_total"), 0)

    def assert_whole_after_half_close(self, half_close_first: bool):
        # A client that half-closes (it has nothing more to send) and reads slowly: its FIN is no
        # reason to drop the answer's tail. Before the fix, the linger's reads met the FIN (again)
        # and closed at once.
        fake, ebb = self.start()
        close = [] if half_close_first else [("Connection", "close")]
        s = self.stall(ebb, build_request("GET", "/big", close))
        if half_close_first:
            s.shutdown(socket.SHUT_WR)  # seen before the answer: the answer then closes
        self.held(fake, ebb)
        if not half_close_first:
            s.shutdown(socket.SHUT_WR)  # seen while ebb lingers with the tail queued
            wait_until(lambda: ebb.logs("client half-closed during the linger")
                       or scrape(ebb).value("ebb_buffered_bytes") == 0, dl(5), "ebb to see the FIN")
            self.assertGreater(scrape(ebb).value("ebb_buffered_bytes"), 0, "ebb dropped the tail at the client's FIN")
        data = self.read_all(s)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        self.assertEqual(len(body), BODY, "the answer arrived cut")
        self.assertEqual(body, pattern_bytes(BODY), "the answer arrived corrupted")
        self.assertEqual(sum(v for _, v in scrape(ebb).labelled("ebb_requests_unanswered_total")), 0)

    def test_a_client_half_closed_after_its_request_gets_its_whole_answer(self):
        self.assert_whole_after_half_close(True)

    def test_a_client_half_closing_while_ebb_lingers_gets_its_whole_answer(self):
        self.assert_whole_after_half_close(False)

    def test_control_a_reader_stopped_past_client_send_is_cut_and_counted(self):
        # The same answer to a client that stops reading for longer than client_send: ebb cuts it,
        # and the cut answer is counted, logged, and visibly short at the client.
        send_timeout = dl(2)  # long enough for held() to see the stall first, even under ASan
        fake, ebb = self.start({"timeouts": {"client_send": f"{int(send_timeout * 1000)}ms"}})
        s = self.stall(ebb, build_request("GET", "/big", [("Connection", "close")]))
        self.held(fake, ebb)
        wait_metric(ebb, "ebb_requests_unanswered_total", {"reason": "client_send_timeout"},
                    lambda v: v == 1, send_timeout + dl(5), "the cut answer counted")
        rec = ebb.wait_log("answer cut before it was delivered", dl(2))
        self.assertEqual((rec.get("level"), rec.get("reason"), rec.get("target")),
                         ("warn", "client_send_timeout", "/big"), rec)
        self.assertEqual(scrape(ebb).value("ebb_client_send_timeouts_total"), 1)
        _, _, body = self.read_all(s).partition(b"\r\n\r\n")
        self.assertLess(len(body), BODY, "the client got the whole answer: the reader did not stall ebb")

    def drain(self, ebb) -> dict:
        w = self.connect(ebb.admin_port, timeout=dl(10))
        w.send(build_request("POST", "/drain?wait=true", body=b""))
        r = w.read_response(timeout=dl(15))
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body)

    def test_the_drain_deadline_counts_an_undelivered_http1_answer(self):
        fake, ebb = self.start()
        # Keep-alive: its head left before the drain, so the drain waits for this connection.
        self.stall(ebb, build_request("GET", "/big"))
        self.held(fake, ebb)
        doc = self.drain(ebb)
        self.assertEqual((doc["cut_requests"], doc["unanswered_requests"]), (1, 1), doc)
        self.assertEqual(self.unanswered(ebb, "drain_timeout"), 1)
        self.assertEqual(scrape(ebb).value("ebb_drain_cut_requests_total"), 1)
        rec = ebb.wait_log("request cut at drain timeout", dl(2))
        self.assertGreater(rec.get("undelivered_bytes", 0), 0, rec)
        self.assertEqual(ebb.wait_log("answer cut before it was delivered", dl(2)).get("reason"), "drain_timeout")

    def test_the_drain_deadline_counts_an_http2_answer_held_by_flow_control(self):
        fake, ebb = self.start()
        # An HTTP/2 client with the default 64 KiB windows that never opens them: the stream's
        # answer is whole in ebb, 128 KiB of it waiting for a WINDOW_UPDATE that never comes.
        self.stall(ebb, PREFACE + frame(SETTINGS, 0, 0)
                   + frame(HEADERS, END_HEADERS | END_STREAM, 1, header_block("GET", "/big")))
        held = self.held(fake, ebb)
        self.assertGreaterEqual(held, BODY - 64 * KIB - 16 * KIB, "flow control does not hold the answer")
        doc = self.drain(ebb)
        self.assertEqual((doc["cut_requests"], doc["unanswered_requests"]), (1, 1), doc)
        self.assertEqual(self.unanswered(ebb, "drain_timeout"), 1)
        rec = ebb.wait_log("request cut at drain timeout", dl(2))
        self.assertEqual(rec.get("stream"), 1, rec)
        self.assertGreater(rec.get("undelivered_bytes", 0), 0, rec)
        self.assertEqual(ebb.wait_log("answer cut before it was delivered", dl(2)).get("reason"), "drain_timeout")


if __name__ == "__main__":
    unittest.main()
