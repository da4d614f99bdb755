"""One connection the fake app accepted: reading request heads and bodies (Content-Length and
chunked, strictly: what is not valid HTTP/1.1 raises `FakeParseError`), sending responses and
big bodies, and recording what passed and whether ebb closed it.
"""

from __future__ import annotations

import re
import socket
import time

from harness.data import KIB, MIB, StreamCheck, pattern_chunks
from harness.http import FakeParseError, Headers, build_response, parse_fields

KEEP = "keep"    # handler result: keep the connection for the next request
CLOSE = "close"  # handler result: close the connection now


class PeerGone(ConnectionError):
    """ebb closed (or reset) the upstream connection."""


class Stopping(Exception):
    """The fake app is stopping: a connection's reader gives up quietly."""


_RAW_CAP = 4 * MIB  # raw bytes kept per fake connection (big uploads are only counted)


class Request(Headers):
    """A request as the fake app received it."""

    def __init__(self, conn: "FakeConn", seq: int, index: int, method: str, target: str,
                 version: str, headers: list, raw_head: bytes):
        self.conn, self.seq, self.index = conn, seq, index
        self.method, self.target, self.version = method, target, version
        self.headers = headers
        self.raw_head = raw_head
        self.body: bytes | None = None      # decoded body, once read (not with a sink)
        self.body_raw = bytearray()         # the body bytes as framed on the wire
        self.body_len = 0                   # decoded body bytes seen so far
        self.complete = False               # the whole body (per its framing) arrived
        self.received_at = time.monotonic()
        self.early_body_bytes = 0           # bytes already buffered when the head was parsed
        self.framing = self._framing()
        self.response_check: StreamCheck | None = None  # set by send_huge

    def __repr__(self):
        return (f"<Request #{self.seq} conn={self.conn.index}/{self.index} {self.method} "
                f"{self.target} {self.version} body={self.body_len}B "
                f"{'complete' if self.complete else 'INCOMPLETE'}>")

    def _framing(self):
        te = self.header_values("Transfer-Encoding")
        cl = self.header_values("Content-Length")
        if te and cl:
            raise FakeParseError(f"app got both Transfer-Encoding and Content-Length: {self.raw_head!r}")
        if te:
            codings = self.header_tokens("Transfer-Encoding")
            if not codings or codings[-1] != "chunked" or codings.count("chunked") != 1:
                raise FakeParseError(f"app got Transfer-Encoding {te!r}")
            return "chunked"
        if cl:
            vals = set(self.header_list("Content-Length"))
            if len(vals) != 1 or not re.fullmatch(r"\d+", next(iter(vals))):
                raise FakeParseError(f"app got Content-Length {cl!r}")
            self.content_length = int(next(iter(vals)))
            return "length"
        return "none"

    @property
    def wants_close(self) -> bool:
        tokens = self.header_tokens("Connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens

    def read_body(self, sink=None, keep_raw: bool = True) -> bytes:
        """Reads the whole body (idempotent). With `sink`, decoded bytes go to sink(memoryview)
        and are not kept (1 GiB uploads)."""
        if self.complete or self.body is not None:
            return self.body if self.body is not None else b""
        conn = self.conn
        acc = bytearray() if sink is None else None

        def deliver(data):
            self.body_len += len(data)
            if acc is not None:
                acc.extend(data)
            else:
                sink(data)

        if self.framing == "length":
            conn.read_exact_into(self.content_length, deliver,
                                 self.body_raw if keep_raw and sink is None else None)
        elif self.framing == "chunked":
            while True:
                line = conn.read_line()
                self.body_raw += line
                size_part = line[:-2].split(b";", 1)[0]
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_part):
                    raise FakeParseError(f"app got a bad chunk-size line {line!r}")
                ext = line[:-2][len(size_part):]
                if ext and not re.fullmatch(rb'(;[!#$%&\'*+\-.^_`|~0-9A-Za-z]+'
                                            rb'(=([!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"[^"\x00-\x1f\x7f]*"))?)*', ext):
                    raise FakeParseError(f"app got a bad chunk extension {line!r}")
                n = int(size_part, 16)
                if n == 0:
                    break
                conn.read_exact_into(n, deliver, self.body_raw if keep_raw and sink is None else None)
                crlf = conn.read_exact(2)
                self.body_raw += crlf
                if crlf != b"\r\n":
                    raise FakeParseError(f"app got chunk data not followed by CRLF: {crlf!r}")
            trailers = []
            while True:
                line = conn.read_line()
                self.body_raw += line
                if line == b"\r\n":
                    break
                trailers.append(line[:-2])
            self.trailers = parse_fields(trailers, True, "trailer")
        self.body = bytes(acc) if acc is not None else None
        self.complete = True
        conn.server._notify()
        return self.body if self.body is not None else b""


class FakeConn:
    """One connection accepted by the fake app."""

    def __init__(self, server: "FakeUpstream", sock: socket.socket, index: int):
        self.server, self.sock, self.index = server, sock, index
        self.accepted_at = time.monotonic()
        self.buf = bytearray()
        self.raw = bytearray()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.requests: list[Request] = []
        self.peer_closed = False          # ebb closed or reset it (EOF, ECONNRESET, EPIPE)
        self.peer_closed_at: float | None = None
        self.peer_closed_how = ""
        self.closed = False               # the fake closed it
        self._big = None

    def __repr__(self):
        return (f"<FakeConn {self.index} rx={self.bytes_received} tx={self.bytes_sent} "
                f"requests={len(self.requests)} peer_closed={self.peer_closed_how or False}>")

    # -- receiving --------------------------------------------------------------------------
    def _mark_peer_gone(self, how: str):
        with self.server._cv:
            if not self.peer_closed:
                self.peer_closed = True
                self.peer_closed_at = time.monotonic()
                self.peer_closed_how = how
            self.server._cv.notify_all()

    def _recv(self) -> bool:
        """Reads more into buf. False on EOF/reset (recorded), raises Stopping on stop."""
        try:
            data = self.sock.recv(256 * KIB)
        except OSError as e:
            if self.server._stopping.is_set():
                raise Stopping()
            self._mark_peer_gone(f"read: {e}")
            return False
        if not data:
            if self.server._stopping.is_set():
                raise Stopping()
            self._mark_peer_gone("eof")
            return False
        self._took(data)
        self.buf += data
        return True

    def _took(self, data):
        with self.server._cv:
            self.bytes_received += len(data)
            if len(self.raw) < _RAW_CAP:
                self.raw += data[:_RAW_CAP - len(self.raw)]
            self.server._cv.notify_all()

    def read_line(self, limit: int = 64 * KIB) -> bytes:
        """A line ending in CRLF (a bare LF is a parse error)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                    raise FakeParseError(f"app got a line with bare LF/CR: {line!r}")
                return line
            if len(self.buf) > limit:
                raise FakeParseError(f"app got an overlong line: {bytes(self.buf[:200])!r}...")
            if not self._recv():
                raise PeerGone(f"closed mid-line after {bytes(self.buf[:200])!r}")

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._recv():
                raise PeerGone(f"closed with {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_exact_into(self, n: int, deliver, raw: bytearray | None):
        """Streams exactly n bytes to deliver(); big bodies go straight from recv_into."""
        take = min(n, len(self.buf))
        if take:
            chunk = bytes(self.buf[:take])
            del self.buf[:take]
            if raw is not None:
                raw += chunk
            deliver(chunk)
            n -= take
        if n == 0:
            return
        if self._big is None:
            self._big = bytearray(MIB)
        mv = memoryview(self._big)
        while n:
            try:
                k = self.sock.recv_into(mv, min(len(mv), n))
            except OSError as e:
                if self.server._stopping.is_set():
                    raise Stopping()
                self._mark_peer_gone(f"read: {e}")
                raise PeerGone(f"reset with {n} body bytes missing")
            if k == 0:
                if self.server._stopping.is_set():
                    raise Stopping()
                self._mark_peer_gone("eof")
                raise PeerGone(f"closed with {n} body bytes missing")
            self._took(mv[:k])
            if raw is not None:
                raw += mv[:k]
            deliver(mv[:k])
            n -= k

    def read_request(self) -> Request | None:
        """The next request head (the body is left to the handler), or None on a clean EOF."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > 1 * MIB:
                raise FakeParseError("app got a head over 1 MiB")
            if not self._recv():
                if self.buf:
                    raise PeerGone(f"closed mid-head after {bytes(self.buf[:300])!r}")
                return None
        raw_head = bytes(self.buf[:i + 4])
        del self.buf[:i + 4]
        lines = raw_head[:-4].split(b"\r\n")
        m = re.fullmatch(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e\x80-\xff]+) (HTTP/\d\.\d)",
                         lines[0])
        if not m:
            raise FakeParseError(f"app got a bad request line {lines[0]!r}")
        headers = parse_fields(lines[1:], True, "request head")
        with self.server._cv:
            seq = len(self.server.requests)
            req = Request(self, seq, len(self.requests), m.group(1).decode(),
                          m.group(2).decode("latin-1"), m.group(3).decode(), headers, raw_head)
            req.early_body_bytes = len(self.buf)
            self.requests.append(req)
            self.server.requests.append(req)
            self.server._cv.notify_all()
        return req

    # -- sending ----------------------------------------------------------------------------
    def send(self, data) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            if self.server._stopping.is_set():
                raise Stopping()
            self._mark_peer_gone(f"write: {e}")
            raise PeerGone(f"write failed: {e}")
        with self.server._cv:
            self.bytes_sent += len(data)
            self.server._cv.notify_all()

    def respond(self, status: int = 200, body: bytes = b"", headers=(), **kw) -> str | None:
        """Sends a response (see build_response). Returns CLOSE for a close-delimited one."""
        self.send(build_response(status, body, headers, **kw))
        return CLOSE if kw.get("framing") == "close" else None

    def send_pattern(self, total: int, chunk: int = MIB, check: StreamCheck | None = None):
        for c in pattern_chunks(total, chunk):
            if check is not None:
                check.update(c)  # before the send: the reader may get the last byte first
            self.send(c)

    def wait_peer_close(self) -> bool:
        """Reads (and keeps) whatever comes until ebb closes: True, or the fake stops: False."""
        try:
            while self._recv():
                pass
        except Stopping:
            return False
        return True

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.sock.close()
        except OSError:
            pass

    def _shutdown(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
