"""WebSocket (RFC 6455) for the tests: framing, a client through ebb (`ws_connect`, `ws_send`,
`ws_read_frame`) and a minimal echo app (`WsEchoApp`) that can stop in the middle of a large
frame on request.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import threading
import time

from harness.client import HttpClient
from harness.ebb import Ebb
from harness.http import build_request, build_response
from harness.upstream_conn import CLOSE, PeerGone
from harness.wait import dl

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GOING_AWAY = b"\x88\x02\x03\xe9"  # FIN + close, payload length 2, status 1001


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None, fin: bool = True) -> bytes:
    """One frame; `mask` (4 bytes) masks it, as a client must (§5.3)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + _xor(payload, mask)


def _xor(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    m = (mask * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(len(data), "big")


def frame_header_len(first2: bytes) -> int:
    n = 2
    l7 = first2[1] & 0x7F
    n += 2 if l7 == 126 else 8 if l7 == 127 else 0
    n += 4 if first2[1] & 0x80 else 0
    return n


def parse_frame_header(head: bytes) -> tuple:
    """(fin, opcode, masked, payload length, mask or None) of a complete frame header."""
    fin = bool(head[0] & 0x80)
    if head[0] & 0x70:
        raise AssertionError(f"WebSocket frame with RSV bits set: {head!r}")
    opcode = head[0] & 0x0F
    masked = bool(head[1] & 0x80)
    l7 = head[1] & 0x7F
    off = 2
    if l7 == 126:
        n = struct.unpack("!H", head[2:4])[0]
        off = 4
    elif l7 == 127:
        n = struct.unpack("!Q", head[2:10])[0]
        off = 10
    else:
        n = l7
    mask = head[off:off + 4] if masked else None
    return fin, opcode, masked, n, mask


def ws_read_frame(c: HttpClient, timeout: float | None = None) -> tuple:
    """Reads one server frame from the client: (fin, opcode, payload, raw header). A server
    frame must not be masked (§5.1)."""
    deadline = time.monotonic() + (timeout if timeout is not None else dl(5))
    left = lambda: max(deadline - time.monotonic(), 0.001)
    first2 = c.read_exact(2, left(), "a WebSocket frame header")
    rest = c.read_exact(frame_header_len(first2) - 2, left(), "a WebSocket frame header")
    head = first2 + rest
    fin, opcode, masked, n, _ = parse_frame_header(head)
    if masked:
        raise AssertionError(f"a frame from the server is masked: header {head!r}")
    payload = c.read_exact(n, left(), f"a WebSocket payload of {n} bytes") if n else b""
    return fin, opcode, payload, head


def ws_send(c: HttpClient, opcode: int, payload: bytes) -> None:
    c.send(ws_frame(opcode, payload, os.urandom(4)))


def ws_connect(test, ebb: Ebb, path: str = "/ws") -> HttpClient:
    """Opens a WebSocket through ebb (client registered with the test) and checks the 101."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    c = test.connect(ebb)
    c.send(build_request("GET", path, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                       ("Sec-WebSocket-Key", key),
                                       ("Sec-WebSocket-Version", "13")]))
    r = c.read_head(timeout=dl(5))
    test.assertEqual(r.status, 101, f"WebSocket handshake through ebb: {r!r}")
    test.assertIn("websocket", r.header_tokens("Upgrade"), r)
    test.assertIn("upgrade", r.header_tokens("Connection"), r)
    test.assertEqual(r.header("Sec-WebSocket-Accept"), ws_accept(key),
                     "Sec-WebSocket-Accept must reach the client unchanged")
    return c


class WsEchoApp:
    """A minimal WebSocket app for FakeUpstream: answers the handshake (Sec-WebSocket-Accept per
    §4.2.2), checks that every client frame is masked, echoes text/binary frames unmasked, and
    answers a close frame with a close frame, then closes. The message b"big" makes it send one
    binary frame of `big_size` bytes: the header and `big_first` bytes of payload (a negative
    `big_first` stops that many bytes short of the end of the 10-byte header), then it sets
    `mid_frame` and waits for `release()`, then sends the rest of the frame followed by a text
    frame b"after" in the same write."""

    def __init__(self, big_size: int = 200_000, big_first: int = 1000):
        self.big_size, self.big_first = big_size, big_first
        self.big_payload = os.urandom(big_size)
        self.mid_frame = threading.Event()
        self._released = threading.Event()
        self.handshakes = 0
        self.messages: list = []
        self.peer_closed = threading.Event()   # ebb closed (or reset) the app side
        self.closed_by_client = threading.Event()

    def release(self):
        self._released.set()

    def _read_frame(self, conn) -> tuple:
        first2 = conn.read_exact(2)
        head = first2 + conn.read_exact(frame_header_len(first2) - 2)
        fin, opcode, masked, n, mask = parse_frame_header(head)
        if not masked:
            raise AssertionError(f"the app got an unmasked client frame (§5.1): {head!r}")
        payload = _xor(conn.read_exact(n), mask) if n else b""
        return fin, opcode, payload

    def __call__(self, req, conn):
        key = req.header("Sec-WebSocket-Key")
        if "websocket" not in req.header_tokens("Upgrade") or not key:
            req.read_body()
            return conn.respond(400, b"not a websocket handshake")
        self.handshakes += 1
        conn.send(build_response(101, b"", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                            ("Sec-WebSocket-Accept", ws_accept(key))],
                                 framing="none"))
        try:
            while True:
                fin, opcode, payload = self._read_frame(conn)
                if opcode == 0x8:
                    self.closed_by_client.set()
                    conn.send(ws_frame(0x8, payload[:2]))
                    return CLOSE
                if opcode in (0x9,):
                    conn.send(ws_frame(0xA, payload))
                    continue
                self.messages.append(payload)
                if payload == b"big":
                    frame = ws_frame(0x2, self.big_payload)
                    cut = len(frame) - self.big_size + self.big_first
                    conn.send(frame[:cut])
                    self.mid_frame.set()
                    if not self._released.wait(dl(60)):
                        raise AssertionError("WsEchoApp: never released")
                    conn.send(frame[cut:] + ws_frame(0x1, b"after"))
                    continue
                conn.send(ws_frame(opcode, payload))
        except PeerGone:
            self.peer_closed.set()
            return CLOSE
