"""Ready-made fake-app handlers, `handler(req, conn) -> None | KEEP | CLOSE`: answer, echo,
route, wait, never answer, close early, send a huge body, close mid-body, 100 Continue, a 101
tunnel, close an idle connection as ebb reuses it, and `Gate`, which holds a request until the
test releases it (no sleep).
"""

from __future__ import annotations

import select
import threading
import time

from harness.data import MIB, StreamCheck, pattern_bytes
from harness.http import build_response
from harness.upstream_conn import CLOSE, PeerGone, Stopping
from harness.wait import dl

# -- ready-made handlers ----------------------------------------------------------------------

def ok(body: bytes = b"ok", status: int = 200, headers=(), **kw):
    """Reads the body, answers `status` with `body` (HEAD: head only)."""
    def handler(req, conn):
        req.read_body()
        return conn.respond(status, body, headers, head_only=req.method == "HEAD", **kw)
    return handler


def echo(status: int = 200, **kw):
    """Answers with the request body; X-Echo-Target/-Method carry the request line."""
    def handler(req, conn):
        body = req.read_body()
        return conn.respond(status, body, [("X-Echo-Method", req.method),
                                           ("X-Echo-Target", req.target)], **kw)
    return handler


def route(table: dict, default=None):
    """Dispatches on the request target's path (before '?')."""
    default = default or ok(b"not found", 404)

    def handler(req, conn):
        return table.get(req.target.split("?", 1)[0], default)(req, conn)
    return handler


def slow(delay: float, then):
    """Sleeps `delay` (that is the behaviour) before `then` answers."""
    def handler(req, conn):
        time.sleep(delay)
        return then(req, conn)
    return handler


def never_answer(req, conn):
    """Reads the request and never answers; returns when ebb closes the connection."""
    try:
        req.read_body()
    except PeerGone:
        return CLOSE
    conn.wait_peer_close()
    return CLOSE


def close_without_answer(read_body: bool = True, reset: bool = False):
    def handler(req, conn):
        if read_body:
            req.read_body()
        conn.close(reset=reset)
        return CLOSE
    return handler


def send_huge(total: int, framing: str = "length", chunk: int = MIB):
    """Answers 200 with `total` pattern bytes, generated, never held; req.response_check gets
    the count and CRC of what was sent."""
    def handler(req, conn):
        req.read_body()
        check = StreamCheck()
        req.response_check = check
        if framing == "length":
            conn.send(build_response(200, b"", [("Content-Length", str(total))], framing="none"))
            conn.send_pattern(total, chunk, check)
            return None
        conn.send(build_response(200, b"", [("Content-Type", "application/octet-stream")],
                                 framing="close"))
        conn.send_pattern(total, chunk, check)
        return CLOSE
    return handler


def close_mid_body(declared: int, sent: int):
    """Announces Content-Length `declared`, sends `sent` bytes of it, then closes."""
    def handler(req, conn):
        req.read_body()
        conn.send(build_response(200, b"", [("Content-Length", str(declared))], framing="none"))
        conn.send(pattern_bytes(sent))
        conn.close()
        return CLOSE
    return handler


def continue_then(then):
    """Sends `100 Continue` when the request asks for it, then lets `then` answer."""
    def handler(req, conn):
        if "100-continue" in req.header_tokens("Expect"):
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return then(req, conn)
    return handler


def upgrade_echo(first: bytes = b""):
    """Answers 101 (with `first` in the same write), then echoes every byte until EOF."""
    def handler(req, conn):
        conn.send(build_response(101, b"", [("Upgrade", req.header("Upgrade") or "websocket"),
                                             ("Connection", "Upgrade")], framing="none") + first)
        if conn.buf:
            data = bytes(conn.buf)
            conn.buf.clear()
            conn.send(data)
        try:
            while conn._recv():
                data = bytes(conn.buf)
                conn.buf.clear()
                conn.send(data)
        except Stopping:
            pass
        return CLOSE
    return handler


def close_idle_when_next_request_arrives(req, conn):
    """Answers, then behaves like an app whose keep-alive timer fires just as ebb reuses the
    connection: it closes as soon as the next request arrives, without reading it (so the
    kernel answers with a reset), and without ever having sent `Connection: close`."""
    req.read_body()
    conn.respond(200, req.target.encode())
    if conn.index == 0:
        readable, _, _ = select.select([conn.sock], [], [], dl(20))
        conn.close()
        return CLOSE
    return None


def answer_target(req, conn):
    """Answers 200 with the request target as the body (HEAD: head only)."""
    req.read_body()
    return conn.respond(200, req.target.encode("latin-1"), head_only=req.method == "HEAD")


def close_at_once(conn):
    """For on_accept: close every connection as soon as it is accepted."""
    conn.close()
    return CLOSE


class Gate:
    """A handler that reads the request, sets `arrived`, and answers (through `then`) only once
    the test calls release(). `count` counts requests that reached it."""

    def __init__(self, then=None):
        self.then = then or ok(b"released")
        self.arrived = threading.Event()
        self._released = threading.Event()
        self.count = 0
        self._lock = threading.Lock()

    def release(self):
        self._released.set()

    def __call__(self, req, conn):
        req.read_body()
        with self._lock:
            self.count += 1
        self.arrived.set()
        if not self._released.wait(dl(60)):
            raise AssertionError("Gate: the test never released the request")
        return self.then(req, conn)
