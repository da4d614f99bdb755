"""HTTP/1 message bytes, shared by the raw client and the fake app: building requests, responses
and chunked bodies, reading field lines (strictly, as the app checks what ebb sends it), and the
`Headers` lookups both sides' messages offer.
"""

from __future__ import annotations

import re

from harness.wait import HarnessError

_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class FakeParseError(Exception):
    """What ebb sent the app is not valid HTTP/1.1."""


class Headers:
    """Mixin over `self.headers`, a list of (name, value) str pairs in wire order."""

    headers: list

    def header_values(self, name: str) -> list:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name: str, default=None):
        v = self.header_values(name)
        return v[0] if v else default

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))

    def header_list(self, name: str) -> list:
        """All values of a list-valued field, split on commas, stripped."""
        out = []
        for v in self.header_values(name):
            out.extend(p.strip() for p in v.split(",") if p.strip())
        return out

    def header_tokens(self, name: str) -> list:
        return [t.lower() for t in self.header_list(name)]


def parse_fields(lines: list, strict: bool, where: str) -> list:
    """(name, value) pairs of field lines; `strict` (the app's side) also rejects what RFC 9112
    forbids, raising FakeParseError instead of HarnessError."""
    out = []
    for line in lines:
        if strict:
            if line[:1] in (b" ", b"\t"):
                raise FakeParseError(f"{where}: obs-fold / leading whitespace line {line!r}")
            if b"\r" in line or b"\n" in line:
                raise FakeParseError(f"{where}: bare CR/LF in field line {line!r}")
        if b":" not in line:
            raise (FakeParseError if strict else HarnessError)(f"{where}: field line without colon {line!r}")
        name, value = line.split(b":", 1)
        if strict and not _TOKEN_RE.match(name):
            raise FakeParseError(f"{where}: invalid field name {name!r}")
        value = value.strip(b" \t")
        if strict and _FIELD_VALUE_BAD.search(value):
            raise FakeParseError(f"{where}: CTL in field value {line!r}")
        out.append((name.decode("latin-1").strip(), value.decode("latin-1")))
    return out


def build_request(method: str = "GET", target: str = "/", headers=(), body: bytes = b"", *,
                  version: str = "HTTP/1.1", host: str | None = "test.local",
                  length: bool | None = None) -> bytes:
    """A request's bytes. Host is added unless `host` is None; Content-Length is added when there
    is a body and no framing header was given (or when `length` is True)."""
    hs = list(headers)
    names = {k.lower() for k, _ in hs}
    if host is not None and "host" not in names:
        hs.insert(0, ("Host", host))
    if length is None:
        length = bool(body) and "content-length" not in names and "transfer-encoding" not in names
    if length:
        hs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + body


def chunked_body(parts, ext: str = "", trailers=()) -> bytes:
    """Chunked encoding of `parts` (a list of bytes), each chunk-size line followed by `ext`."""
    out = bytearray()
    for p in parts:
        if p:
            out += f"{len(p):x}{ext}\r\n".encode() + p + b"\r\n"
    out += b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n"
    return bytes(out)


def build_response(status: int = 200, body: bytes = b"", headers=(), *, reason: str | None = None,
                   framing: str = "length", chunk_sizes=None, chunk_ext: str = "",
                   head_only: bool = False, version: str = "HTTP/1.1") -> bytes:
    """A response's bytes. framing: "length" (Content-Length added unless given), "chunked",
    "close" (no framing: the body ends with the connection), "none" (no body, nothing added).
    `head_only` keeps the framing headers but leaves the body out (the answer to a HEAD)."""
    reason = reason if reason is not None else _REASONS.get(status, "Whatever")
    hs = list(headers)
    names = {k.lower() for k, _ in hs}
    payload = body
    if framing == "length":
        if "content-length" not in names:
            hs.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        hs.append(("Transfer-Encoding", "chunked"))
        parts = []
        rest = body
        for size in (chunk_sizes or []):
            parts.append(rest[:size])
            rest = rest[size:]
        if rest:
            parts.append(rest)
        payload = chunked_body(parts, ext=chunk_ext)
    elif framing == "none":
        payload = b""
    elif framing != "close":
        raise ValueError(framing)
    head = f"{version} {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + (b"" if head_only else payload)


_REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
            204: "No Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            500: "Internal Server Error"}
