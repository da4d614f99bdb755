"""A raw HTTP/2 client for the tests that look at frames: the connection preface, requests with a
hand-made HPACK block (no dynamic table, no Huffman), and every frame ebb sends, read as it comes.
It answers PINGs and SETTINGS like a real client, unless told not to. Response header blocks are
not decoded (nghttp and curl, real peers, check those); DATA, GOAWAY, RST_STREAM and PING are.
`nghttp_fields` asks nghttp itself (a real peer) and reads every field it received."""

import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

from harness.wait import dl

NGHTTP = shutil.which("nghttp")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
         6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}


def nghttp_fields(port: int, path: str, body: bytes | None = None, headers=(), seconds: float = 10) -> dict:
    """Every header and trailer field nghttp received for its one request (":status" included).
    nghttp takes an answer that comes before its upload ended (curl 7.88 hangs on that).
    `seconds` is nghttp's own timeout; the process gets 10 s more (both stretched by dl)."""
    args = [NGHTTP, "-v", "-t", str(int(dl(seconds)))]
    for h in headers:
        args += ["-H", h]
    with tempfile.NamedTemporaryFile() as f:
        if body is not None:
            f.write(body)
            f.flush()
            args += ["-d", f.name]
        p = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                           timeout=dl(seconds + 10))
    fields = {}
    for m in re.finditer(r"recv \(stream_id=\d+\) ([^:\s][^:]*|:status): (.*)", p.stdout):
        fields[m.group(1).strip()] = m.group(2).strip()
    if ":status" not in fields:
        raise AssertionError(f"nghttp got no answer ({p.returncode}): {p.stdout[-2000:]} {p.stderr}")
    return fields


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _str(b: bytes) -> bytes:
    assert len(b) < 127
    return bytes([len(b)]) + b


def header_block(method: str = "GET", path: str = "/", authority: str = "localhost", headers=()) -> bytes:
    """HPACK: :method/:path/:authority as literals with indexed names, :scheme http indexed."""
    m = {"GET": b"\x82", "POST": b"\x83"}.get(method) or b"\x02" + _str(method.encode())
    out = m + b"\x86" + b"\x04" + _str(path.encode()) + b"\x01" + _str(authority.encode())
    for name, value in headers:
        out += b"\x00" + _str(name.encode()) + _str(value.encode())
    return out


class Frame:
    def __init__(self, ftype, flags, stream, payload):
        self.type, self.flags, self.stream, self.payload = ftype, flags, stream, payload

    def __repr__(self):
        return f"<{NAMES.get(self.type, self.type)} flags={self.flags:#x} stream={self.stream} len={len(self.payload)}>"

    @property
    def goaway(self):
        last, code = struct.unpack(">II", self.payload[:8])
        return last & 0x7FFFFFFF, code


class H2Raw:
    def __init__(self, port: int, *, answer_pings: bool = True, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.answer_pings = answer_pings
        self.buf = b""
        self.frames: list[Frame] = []
        self.closed = False
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def request(self, stream: int, method="GET", path="/", headers=(), body: bytes | None = None):
        end = END_STREAM if body is None else 0
        self.send(frame(HEADERS, END_HEADERS | end, stream, header_block(method, path, headers=headers)))
        if body is not None:
            self.send(frame(DATA, END_STREAM, stream, body))

    def _read_one(self, deadline: float) -> Frame | None:
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame in time; got so far {self.frames}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return None
            self.buf += data
        n = int.from_bytes(self.buf[:3], "big")
        f = Frame(self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF, self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        self.frames.append(f)
        if f.type == PING and not f.flags & ACK and self.answer_pings:
            self.send(frame(PING, ACK, 0, f.payload))
        elif f.type == SETTINGS and not f.flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        return f

    def wait_for(self, pred, timeout: float, what: str) -> Frame:
        deadline = time.monotonic() + timeout
        for f in self.frames:
            if pred(f):
                return f
        while True:
            f = self._read_one(deadline)
            if f is None:
                raise AssertionError(f"connection closed before {what}; frames {self.frames}")
            if pred(f):
                return f

    def read_until_closed(self, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while not self.closed:
            self._read_one(deadline)
        return self.frames

    def body(self, stream: int) -> bytes:
        return b"".join(f.payload for f in self.frames if f.type == DATA and f.stream == stream)

    def ended(self, stream: int) -> bool:
        return any(f.stream == stream and f.type in (DATA, HEADERS) and f.flags & END_STREAM for f in self.frames)

    def goaways(self) -> list:
        return [f.goaway for f in self.frames if f.type == GOAWAY]
