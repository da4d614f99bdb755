"""The client side's sockets: `HttpClient`, a raw HTTP/1.x client on one TCP connection (every
read has a deadline; Content-Length, chunked, close-delimited and bodiless responses; streaming
reads; `wait_closed`), `try_connect` (refused is an answer), `unused_port`, `non_loopback_ipv4`.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time

from harness.data import KIB, MIB
from harness.http import Headers, build_request, parse_fields
from harness.wait import ConnectionClosed, HarnessError, WaitTimeout, dl


def stalled_socket(port: int, first: bytes = b"") -> socket.socket:
    """A client as slow as a reader gets, connected to `port`, having sent `first`: the smallest
    receive buffer and a 536-byte MSS, and nothing read until the test reads. The small MSS
    matters: on loopback the 64 KiB MSS makes the kernel give ebb's socket a send buffer of
    megabytes at once, which would hide what ebb itself holds; with a phone-sized MSS the kernel
    takes about 100 KiB and the rest is ebb's."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(dl(3))
    s.connect(("127.0.0.1", port))
    if first:
        s.sendall(first)
    return s


def unused_port() -> int:
    """A loopback port on which nothing listens (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Response(Headers):
    """A response as the client read it: status line, fields, body, framing."""

    def __init__(self, version, status, reason, headers, raw_head):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""
        self.framing = "none"   # none | length | chunked | close
        self.complete = False

    def __repr__(self):
        return (f"<Response {self.status} {self.reason!r} {self.framing} body={len(self.body)}B "
                f"{'' if self.complete else 'TRUNCATED'} headers={self.headers}>")


class HttpClient:
    """A raw HTTP/1.x client on one TCP connection. Every read has a deadline."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, timeout: float | None = None,
                 rcvbuf: int | None = None, sndbuf: int | None = None):
        self.timeout = timeout if timeout is not None else dl(5)
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(dl(3))
        try:
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()  # a refused (or timed-out) connect must not leak the socket
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False            # the server closed (EOF) or reset the connection
        self.eof_how = ""
        self.after_close = b""      # bytes that wait_closed() read and dropped
        self._big = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Closes with a RST (SO_LINGER 0), not a FIN: after a FIN an answer is still delivered."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending ----------------------------------------------------------------------------
    def send(self, data, timeout: float | None = None) -> None:
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise WaitTimeout(f"send blocked for {timeout or self.timeout:.2f}s")

    def request(self, method: str = "GET", target: str = "/", headers=(), body: bytes = b"",
                timeout: float | None = None, **kw) -> Response:
        """Sends one request (see build_request) and reads its response."""
        self.send(build_request(method, target, headers, body, **kw))
        return self.read_response(method, timeout=timeout)

    # -- receiving --------------------------------------------------------------------------
    def _recv(self, deadline: float, what: str) -> bool:
        """Reads more into buf; False on EOF/reset; raises WaitTimeout at the deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"timed out waiting for {what}; got so far: {bytes(self.buf[:400])!r}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(256 * KIB)
        except socket.timeout:
            raise WaitTimeout(f"timed out waiting for {what}; got so far: {bytes(self.buf[:400])!r}")
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as e:
            self.eof, self.eof_how = True, f"reset ({e.__class__.__name__})"
            return False
        if not data:
            self.eof, self.eof_how = True, "eof"
            return False
        self.buf += data
        return True

    def _deadline(self, timeout):
        return time.monotonic() + (timeout if timeout is not None else self.timeout)

    def read_until(self, delim: bytes, timeout: float | None = None, what: str = "",
                   limit: int = 4 * MIB) -> bytes:
        deadline = self._deadline(timeout)
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise HarnessError(f"no {delim!r} in {limit} bytes: {bytes(self.buf[:200])!r}")
            if not self._recv(deadline, what or repr(delim)):
                raise ConnectionClosed(f"connection closed ({self.eof_how}) while waiting for "
                                       f"{what or repr(delim)}; got: {bytes(self.buf[:400])!r}")

    def read_exact(self, n: int, timeout: float | None = None, what: str = "") -> bytes:
        deadline = self._deadline(timeout)
        while len(self.buf) < n:
            if not self._recv(deadline, what or f"{n} bytes"):
                raise ConnectionClosed(f"connection closed ({self.eof_how}) with {len(self.buf)} "
                                       f"of {n} bytes ({what})")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self, timeout: float | None = None, skip_1xx: bool = True) -> Response:
        """The next response head; 1xx (except 101) are skipped unless skip_1xx is False."""
        deadline = self._deadline(timeout)
        while True:
            raw = self.read_until(b"\r\n\r\n", max(deadline - time.monotonic(), 0.001),
                                  "a response head")
            lines = raw[:-4].split(b"\r\n")
            m = re.fullmatch(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?", lines[0])
            if not m:
                raise HarnessError(f"bad status line {lines[0]!r} (head {raw[:400]!r})")
            resp = Response(m.group(1).decode(), int(m.group(2)),
                            (m.group(3) or b"").decode("latin-1"),
                            parse_fields(lines[1:], False, "response head"), raw)
            if skip_1xx and 100 <= resp.status < 200 and resp.status != 101:
                continue
            return resp

    def body_framing(self, resp: Response, method: str) -> str:
        if method == "HEAD" or 100 <= resp.status < 200 or resp.status in (204, 304):
            return "none"
        if resp.has_header("Transfer-Encoding"):
            return "chunked" if resp.header_tokens("Transfer-Encoding")[-1:] == ["chunked"] else "close"
        if resp.has_header("Content-Length"):
            vals = set(resp.header_list("Content-Length"))
            if len(vals) != 1 or not next(iter(vals)).isdigit():
                raise HarnessError(f"bad Content-Length in response: {resp!r}")
            return "length"
        return "close"

    def read_body_into(self, resp: Response, sink, method: str = "GET",
                       timeout: float | None = None, allow_truncated: bool = False) -> Response:
        """Streams the body to sink(bytes-like); sets resp.framing and resp.complete.
        A connection closed before the body ended raises, unless allow_truncated."""
        deadline = self._deadline(timeout)
        resp.framing = self.body_framing(resp, method)
        try:
            if resp.framing == "none":
                pass
            elif resp.framing == "length":
                self._stream_exact(int(resp.header_list("Content-Length")[0]), sink, deadline)
            elif resp.framing == "chunked":
                while True:
                    line = self.read_until(b"\r\n", max(deadline - time.monotonic(), 0.001),
                                           "a chunk-size line")
                    size = line[:-2].split(b";", 1)[0].strip()
                    if not re.fullmatch(rb"[0-9A-Fa-f]+", size):
                        raise HarnessError(f"bad chunk-size line from ebb: {line!r}")
                    n = int(size, 16)
                    if n == 0:
                        break
                    self._stream_exact(n, sink, deadline)
                    if self.read_exact(2, max(deadline - time.monotonic(), 0.001), "chunk CRLF") != b"\r\n":
                        raise HarnessError("chunk data from ebb not followed by CRLF")
                resp.trailers = []  # the trailer section's field lines, as (name, value)
                while (line := self.read_until(b"\r\n", max(deadline - time.monotonic(), 0.001),
                                               "trailers")) != b"\r\n":
                    name, _, value = line[:-2].decode("latin-1").partition(":")
                    resp.trailers.append((name.strip(), value.strip()))
            else:  # close-delimited
                while True:
                    if self.buf:
                        sink(bytes(self.buf))
                        self.buf.clear()
                    if not self._recv(deadline, "the end of a close-delimited body"):
                        break
        except ConnectionClosed:
            if not allow_truncated:
                raise
            return resp
        resp.complete = True
        return resp

    def _stream_exact(self, n: int, sink, deadline: float):
        take = min(n, len(self.buf))
        if take:
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take
        if not n:
            return
        if self._big is None:
            self._big = bytearray(MIB)
        mv = memoryview(self._big)
        while n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"timed out with {n} body bytes still to come")
            self.sock.settimeout(left)
            try:
                k = self.sock.recv_into(mv, min(len(mv), n))
            except socket.timeout:
                raise WaitTimeout(f"timed out with {n} body bytes still to come")
            except (ConnectionResetError, ConnectionAbortedError) as e:
                self.eof, self.eof_how = True, f"reset ({e.__class__.__name__})"
                k = 0
            if k == 0:
                self.eof = True
                self.eof_how = self.eof_how or "eof"
                raise ConnectionClosed(f"connection closed ({self.eof_how}) with {n} body bytes "
                                       f"still to come")
            sink(mv[:k])
            n -= k

    def read_response(self, method: str = "GET", timeout: float | None = None,
                      skip_1xx: bool = True, allow_truncated: bool = False) -> Response:
        deadline = self._deadline(timeout)
        resp = self.read_head(deadline - time.monotonic(), skip_1xx)
        body = bytearray()
        self.read_body_into(resp, body.extend, method, max(deadline - time.monotonic(), 0.001),
                            allow_truncated)
        resp.body = bytes(body)
        return resp

    def wait_closed(self, timeout: float) -> bool:
        """True once the server closed (EOF or reset) within `timeout`; False if the connection
        is still open then. Bytes that arrive meanwhile are dropped into `after_close`."""
        deadline = time.monotonic() + timeout
        if self.buf:
            self.after_close += bytes(self.buf)
            self.buf.clear()
        while not self.eof:
            try:
                if not self._recv(deadline, "close"):
                    break
            except WaitTimeout:
                return False
            if len(self.after_close) < 64 * KIB:
                self.after_close += bytes(self.buf[:64 * KIB])
            self.buf.clear()
        return True


def try_connect(port: int, host: str = "127.0.0.1", timeout: float | None = None):
    """A connected socket, or the string "refused" when nothing listens."""
    s = socket.socket()
    s.settimeout(timeout if timeout is not None else dl(3))
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        s.close()
        return "refused"
    except BaseException:
        s.close()
        raise
    return s


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks a source address
        ip = s.getsockname()[0]
    except OSError:
        ip = None
    finally:
        s.close()
    if ip and not ip.startswith("127.") and ip != "0.0.0.0":
        return ip
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for tok in out.split():
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", tok) and not tok.startswith("127."):
            return tok
    return None
