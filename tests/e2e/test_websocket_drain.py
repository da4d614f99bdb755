"""SPEC §2, §4 / issue 3, WebSocket through ebb: after the app's 101 the connection is a two-way
tunnel (frames of every length encoding pass intact, counted in flight); a tunnel may finish on
its own during the drain; one still open at the drain deadline gets a close frame with code 1001
(0x88 0x02 0x03 0xE9) at a frame boundary, never inside a frame the app is still sending, and
nothing after it; then the connection closes. Other upgrades are just closed at the deadline."""

import json
import os
import select
import signal
import time
import unittest

from harness.admin import scrape, wait_metric
from harness.case import EbbTestCase
from harness.config import shutdown_config
from harness.handlers import upgrade_echo
from harness.http import build_request
from harness.lifecycle import EARLY, assert_lifecycle_once, exit_timed, wait_ready
from harness.wait import dl
from harness.websocket import (GOING_AWAY, WsEchoApp, parse_frame_header, ws_connect,
                               ws_read_frame, ws_send)

PROPAGATION = 0.5
DEADLINE = 1.0
WS_CONFIG = shutdown_config(PROPAGATION, 0.1, 1.0, DEADLINE)


class WebSocket(EbbTestCase):
    def start(self, config=None, **app_kw):
        self.app = WsEchoApp(**app_kw)
        self.on_teardown(self.app.release)
        fake = self.start_fake(self.app)
        ebb = self.start_ebb(fake, config or WS_CONFIG)
        wait_ready(ebb)
        return fake, ebb

    def echo(self, c, opcode: int, payload: bytes, what: str = ""):
        ws_send(c, opcode, payload)
        fin, op, got, head = ws_read_frame(c, dl(5))
        self.assertEqual((fin, op), (True, opcode), f"{what}: header {head!r}")
        self.assertEqual(got, payload, f"{what}: {len(payload)}-byte payload changed in the tunnel")

    def assertNothingReadable(self, c, seconds: float, msg: str):
        self.assertEqual(bytes(c.buf), b"", msg)
        r, _, _ = select.select([c.sock], [], [], seconds)
        if r:
            data = c.sock.recv(65536)
            self.fail(f"{msg}: got {data[:64]!r}")

    def test_echo_through_ebb(self):
        fake, ebb = self.start()
        c = ws_connect(self, ebb)
        self.echo(c, 0x1, b"hello", "a small text frame")
        self.echo(c, 0x1, b"", "an empty frame")
        self.echo(c, 0x2, os.urandom(125), "7-bit length")
        self.echo(c, 0x2, os.urandom(300), "16-bit length")
        self.echo(c, 0x2, os.urandom(70_000), "64-bit length")
        ws_send(c, 0x9, b"ping!")
        self.assertEqual(ws_read_frame(c)[1:3], (0xA, b"ping!"), "ping answered with pong")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_requests_in_flight"), 1, "an open tunnel is in flight")
        self.assertEqual(ex.value("ebb_connections_active"), 1)
        self.assertEqual(self.app.handshakes, 1)
        # A normal close handshake ends the tunnel.
        ws_send(c, 0x8, b"\x03\xe8")
        self.assertEqual(ws_read_frame(c)[1:3], (0x8, b"\x03\xe8"))
        self.assertClosed(c, dl(2), "the tunnel ends when the app closes")
        wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 0, dl(5))
        self.assertEqual(scrape(ebb).value("ebb_requests_total", {"code": "101"}), 1)

    def test_tunnel_may_finish_during_the_drain(self):
        fake, ebb = self.start(shutdown_config(PROPAGATION, 0.1, 1.0, 10.0))
        c = ws_connect(self, ebb)
        self.echo(c, 0x1, b"before")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        self.echo(c, 0x1, b"in the drain phase", "the tunnel keeps working in the drain")
        self.echo(c, 0x2, os.urandom(50_000), "the tunnel keeps working in the drain")
        ws_send(c, 0x8, b"\x03\xe8")
        self.assertEqual(ws_read_frame(c)[1:3], (0x8, b"\x03\xe8"))
        self.assertClosed(c, dl(2))
        c.close()
        t_done = time.monotonic()
        code, elapsed = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 0, "the tunnel finished by itself: nothing cut")
        self.assertLessEqual(t0 + elapsed - t_done, dl(3.0),
                             "ebb must exit when the tunnel ends, not at the deadline (10s)")
        rec = ebb.logs("drained")[0]
        self.assertEqual(rec.get("cut"), 0, rec)
        assert_lifecycle_once(self, ebb)

    def test_open_tunnel_gets_a_1001_close_frame_at_the_deadline(self):
        fake, ebb = self.start()
        c = ws_connect(self, ebb)
        self.echo(c, 0x1, b"hello")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        self.echo(c, 0x1, b"still open in the drain phase")
        fin, opcode, payload, head = ws_read_frame(c, dl(10))
        t_close = time.monotonic()
        self.assertEqual((fin, opcode, payload), (True, 0x8, b"\x03\xe9"),
                         f"expected a close frame with code 1001, got header {head!r} "
                         f"payload {payload[:20]!r}")
        self.assertEqual(head + payload, GOING_AWAY)
        self.assertGreaterEqual(t_close - t0, PROPAGATION + DEADLINE - EARLY,
                                "the close frame came before the drain deadline")
        self.assertLessEqual(t_close - t0, PROPAGATION + DEADLINE + dl(3.0))
        ws_send(c, 0x8, b"\x03\xe9")  # the client answers the close, as RFC 6455 §5.5.1 says
        self.assertClosed(c, dl(3), "the connection closes after the close frame")
        self.assertEqual(c.after_close, b"", "nothing may follow the close frame")
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 1, "a tunnel open at the deadline is cut: exit 1")
        self.assertEqual(ebb.logs("drained")[0].get("cut"), 1)
        self.assertTrue(self.app.peer_closed.wait(dl(2)), "the app side is closed too")
        assert_lifecycle_once(self, ebb)

    def test_figures_after_a_tunnel_is_cut_by_an_admin_drain(self):
        fake, ebb = self.start()
        c = ws_connect(self, ebb)
        self.echo(c, 0x1, b"hello")
        ex = scrape(ebb)
        self.assertEqual((ex.value("ebb_requests_in_flight"), ex.value("ebb_connections_active")),
                         (1, 1))
        w = self.connect(ebb.admin_port)
        w.send(build_request("GET", "/drain?wait=true"))
        fin, opcode, payload, head = ws_read_frame(c, dl(10))
        self.assertEqual(head + payload, GOING_AWAY)
        ws_send(c, 0x8, b"\x03\xe9")
        self.assertClosed(c, dl(3))
        resp = w.read_response(timeout=dl(10))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(json.loads(resp.body)["cut_requests"], 1, resp.body)
        # ebb stays up (drained): its figures must add up after the cut.
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_requests_in_flight"), 0)
        self.assertEqual(ex.value("ebb_connections_active"), 0)
        self.assertEqual(ex.value("ebb_drain_cut_requests_total"), 1)
        self.assertEqual(ex.value("ebb_lifecycle_state", {"state": "drained"}), 1)

    def _frame_in_progress_at_deadline(self, first: int):
        """The app has sent its frame's header and `first` payload bytes (a negative `first`
        stops inside the 10-byte header) when the deadline passes; it finishes the frame only
        after ebb cut the tunnel, then sends one more frame."""
        size = 200_000
        fake, ebb = self.start(big_size=size, big_first=first)
        c = ws_connect(self, ebb)
        self.echo(c, 0x1, b"hello")
        ws_send(c, 0x1, b"big")
        self.assertTrue(self.app.mid_frame.wait(dl(5)))
        early = c.read_exact(10 + first, dl(5), "the start of the large frame")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        # The deadline passes while the app is in the middle of its frame.
        wait_metric(ebb, "ebb_drain_cut_requests_total", None, lambda v: v == 1, dl(10),
                    "the tunnel to be cut at the deadline")
        self.assertGreaterEqual(time.monotonic() - t0, PROPAGATION + DEADLINE - EARLY)
        self.assertNothingReadable(c, 0.1, "ebb sent bytes inside the app's unfinished frame")
        self.app.release()  # the app finishes its frame, then sends another one
        rest = c.read_exact(size - first, dl(5), "the rest of the large frame")
        frame = early + rest
        fin, opcode, masked, n, _ = parse_frame_header(frame[:10])
        self.assertEqual((fin, opcode, masked, n), (True, 0x2, False, size), frame[:10])
        self.assertEqual(frame[10:], self.app.big_payload,
                         "the large frame must arrive whole, with no close frame inside it")
        fin, opcode, payload, head = ws_read_frame(c, dl(5))
        self.assertEqual(head + payload, GOING_AWAY,
                         f"right after the large frame: the 1001 close frame, got {head!r} "
                         f"{payload[:20]!r}")
        self.assertClosed(c, dl(3), "the connection closes after the close frame")
        self.assertEqual(c.after_close, b"",
                         "no frame may follow the close frame (RFC 6455 §5.5.1)")
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 1)
        assert_lifecycle_once(self, ebb)

    def test_close_frame_waits_for_the_end_of_a_large_frame_in_progress(self):
        self._frame_in_progress_at_deadline(first=1000)

    def test_close_frame_waits_for_a_frame_header_in_progress(self):
        self._frame_in_progress_at_deadline(first=-9)  # one header byte sent

    def test_other_upgrade_is_closed_at_the_deadline_without_a_frame(self):
        fake = self.start_fake(upgrade_echo())
        ebb = self.start_ebb(fake, WS_CONFIG)
        wait_ready(ebb)
        c = self.connect(ebb)
        c.send(build_request("GET", "/tunnel", [("Upgrade", "custom-proto/1"),
                                                ("Connection", "Upgrade")]))
        r = c.read_head(timeout=dl(5))
        self.assertEqual(r.status, 101, r)
        c.send(b"ping-bytes")
        self.assertEqual(c.read_exact(10, dl(5)), b"ping-bytes")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        self.assertTrue(c.wait_closed(PROPAGATION + DEADLINE + dl(3)),
                        "an upgraded connection must be closed at the deadline")
        self.assertGreaterEqual(time.monotonic() - t0, PROPAGATION + DEADLINE - EARLY)
        self.assertEqual(c.after_close, b"", "no WebSocket close frame on a non-WebSocket tunnel")
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 1)
        self.assertEqual(ebb.logs("drained")[0].get("cut"), 1)


if __name__ == "__main__":
    unittest.main()
