"""ebbtest: the end-to-end harness for ebb (Python 3.11 stdlib only).

It drives the real binary, as STYLE.md asks: ebb is spawned on port 0 with a YAML config written
into a temp dir, its bound ports are read from the `listening` log line, real sockets talk to it,
and a scripted fake app stands behind it. Nothing here sleeps in place of a condition: every wait
polls a condition against a deadline, and every deadline is stretched by `SLOW` under sanitizers.

The pieces:
- `Ebb`: one ebb process. Collects its stderr (JSON lines) in a thread; `wait_log(msg)`;
  `proxy_port`, `admin_port`, `pid`, `rss_kib()`, `rss_peak_kib()`, `signal()`, `wait_exit()`,
  `stop()` (SIGTERM, then SIGKILL by pid). Never leaves a process behind.
- `FakeUpstream`: the app. A threaded TCP server on 127.0.0.1 that counts accepts, records every
  request it receives (raw head, raw and decoded body) and answers through a handler
  `handler(req, conn) -> None | KEEP | CLOSE`, called right after the request head arrived (so a
  handler can send `100 Continue` before reading the body). Keep-alive, Content-Length and chunked
  request bodies are understood, so its accept count proves connection reuse. It also checks
  that what ebb sends it is valid HTTP/1.1: anything else lands in `parse_errors`.
  Ready-made handlers: `ok`, `echo`, `answer_target`, `route`, `slow`, `never_answer`, `close_without_answer`,
  `send_huge`, `close_mid_body`, `upgrade_echo`, `continue_then`, and `close_at_once` for
  `on_accept`.
- `HttpClient`: a raw-socket client: `send` bytes, `read_response` (Content-Length, chunked,
  close-delimited, HEAD/1xx/204/304), `read_head` + `read_body_into` for streaming,
  `wait_closed` (EOF or ECONNRESET).
- `EbbTestCase`: a `unittest.TestCase` whose `start_fake`, `start_ebb` and `connect` register
  their own teardown (clients, then fakes, then ebb processes), which dumps the ebb log and the
  fake's records when a test fails, and which fails a test whose ebb crashed, printed a sanitizer
  report, or sent the fake bytes that are not valid HTTP.

Environment: `EBB_BIN` (default `build/ebb` under the repo root), `EBB_TEST_SANITIZED=1` for an
ASan/UBSan build.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal as _signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EBB_BIN = os.environ.get("EBB_BIN") or str(REPO_ROOT / "build" / "ebb")
SANITIZED = os.environ.get("EBB_TEST_SANITIZED", "0") == "1"
# Deadlines (never lower bounds) are multiplied by this: ASan+UBSan code runs 2-5x slower.
SLOW = 4.0 if SANITIZED else 1.0

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# ebb's memory bound for streaming (SPEC §4: "a flat memory footprint"; issue 2: VmHWM under
# 32 MiB). Under ASan+UBSan the same process keeps up to 256 MiB of freed blocks in ASan's
# quarantine (quarantine_size_mb default), plus shadow memory (1/8 of what is mapped) and
# allocator metadata, none of which is ebb's footprint; there the bound is relaxed 12x, to
# 384 MiB, which still catches a proxy that buffers a 1 GiB body.
FOOTPRINT_LIMIT_KIB = (384 if SANITIZED else 32) * 1024

KEEP = "keep"    # handler result: keep the connection for the next request
CLOSE = "close"  # handler result: close the connection now


def dl(seconds: float) -> float:
    """A deadline of `seconds`, stretched under sanitizers."""
    return seconds * SLOW


class HarnessError(AssertionError):
    """A test-visible failure raised by the harness (a timeout, an unexpected close...)."""


class WaitTimeout(HarnessError):
    pass


class ConnectionClosed(HarnessError):
    pass


def wait_until(pred, timeout: float, what: str, interval: float = 0.005):
    """Polls `pred()` until it returns a truthy value (returned) or `timeout` passes (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.2f}s waiting for {what}")
        time.sleep(interval)


def wait_stable(fn, quiet: float, timeout: float, what: str):
    """Polls fn() until its value has not changed for `quiet` seconds; returns that value."""
    deadline = time.monotonic() + timeout
    last, since = fn(), time.monotonic()
    while True:
        time.sleep(0.02)
        v = fn()
        now = time.monotonic()
        if v != last:
            last, since = v, now
        elif now - since >= quiet:
            return v
        if now >= deadline:
            raise WaitTimeout(f"{what} still changing after {timeout:.2f}s (last value {v})")


def unused_port() -> int:
    """A loopback port on which nothing listens (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------------------------
# Test data: a pseudo-random pattern whose period (1 MiB + 13) is not a power of two, so a lost,
# repeated or reordered buffer of any usual size changes the CRC.

_PATTERN = random.Random(0xEBB).randbytes(MIB + 13)
_PATTERN2 = memoryview(_PATTERN + _PATTERN)
_PERIOD = len(_PATTERN)


def pattern_chunks(total: int, chunk: int = MIB, start: int = 0):
    """Yields `total` bytes of the pattern (from offset `start`) as zero-copy memoryviews."""
    assert chunk <= MIB
    off = start
    end = start + total
    while off < end:
        n = min(chunk, end - off)
        p = off % _PERIOD
        yield _PATTERN2[p:p + n]
        off += n


def pattern_bytes(n: int, start: int = 0) -> bytes:
    return b"".join(bytes(c) for c in pattern_chunks(n, start=start))


class StreamCheck:
    """Counts bytes and folds them into a CRC-32 (zlib releases the GIL on big buffers)."""

    def __init__(self):
        self.count = 0
        self.crc = 0

    def update(self, data) -> None:
        self.count += len(data)
        self.crc = zlib.crc32(data, self.crc)


def pattern_crc(total: int) -> int:
    sc = StreamCheck()
    for c in pattern_chunks(total):
        sc.update(c)
    return sc.crc


# --------------------------------------------------------------------------------------------
# HTTP message helpers shared by the client and the fake app.

_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


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


def _parse_fields(lines: list, strict: bool, where: str) -> list:
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


# --------------------------------------------------------------------------------------------
# The ebb process.

DEFAULT_CONFIG = {
    "listen": "127.0.0.1:0",
    "admin": {"listen": "127.0.0.1:0"},
    "readiness": {"upstream_check": "none"},
    "log": {"format": "json", "level": "debug", "access": True},
    "shutdown": {"propagation_delay": "0s", "quiet_period": "0s", "propagation_max": "0s",
                 "drain_timeout": "2s"},
}

_SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                      "runtime error:", "ThreadSanitizer")


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`; a None value in `over` deletes the key."""
    out = {k: (deep_merge(v, {}) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./:-]+$")


def to_yaml(d: dict, indent: int = 0) -> str:
    """Block-style YAML for nested dicts of str/int/bool (enough for ebb's config)."""
    lines = []
    for k, v in d.items():
        pad = " " * indent
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines.append(to_yaml(v, indent + 2))
        elif isinstance(v, bool):
            lines.append(f"{pad}{k}: {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{pad}{k}: {v}")
        else:
            s = str(v)
            special = s.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~", "")
            lines.append(f"{pad}{k}: {s if _PLAIN_SCALAR.match(s) and not special else json.dumps(s)}")
    return "\n".join(lines)


class Ebb:
    """One ebb process. Use as a context manager or through EbbTestCase.start_ebb."""

    def __init__(self, upstream, config: dict | None = None, *, env: dict | None = None,
                 binary: str | None = None, args=(), start_timeout: float | None = None,
                 nofile: int | None = None):
        if isinstance(upstream, FakeUpstream):
            upstream = f"127.0.0.1:{upstream.port}"
        elif isinstance(upstream, int):
            upstream = f"127.0.0.1:{upstream}"
        over = dict(config or {})
        if upstream is not None:
            over.setdefault("upstream", upstream)
        self.config = deep_merge(DEFAULT_CONFIG, over)
        self.env = dict(env or {})
        self.binary = binary or EBB_BIN
        self.args = list(args)
        self.start_timeout = start_timeout if start_timeout is not None else dl(10)
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) for the ebb process
        self.proc: subprocess.Popen | None = None
        self.tmpdir: str | None = None
        self.lines: list[str] = []        # every stderr line, raw
        self.records: list[dict] = []     # the same, parsed (non-JSON lines: {"raw": line})
        self._cv = threading.Condition()
        self._eof = False
        self._reader: threading.Thread | None = None
        self._exit_expected = False
        self._stopped = False
        self.returncode: int | None = None
        self.proxy_port: int | None = None
        self.admin_port: int | None = None
        self.listening: dict | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Ebb":
        if not os.path.isfile(self.binary) or not os.access(self.binary, os.X_OK):
            raise HarnessError(f"ebb binary not found (or not executable) at {self.binary}: "
                               f"build it with `make build`, or point EBB_BIN at it")
        self.tmpdir = tempfile.mkdtemp(prefix="ebb-e2e-")
        self.config_path = os.path.join(self.tmpdir, "ebb.yaml")
        with open(self.config_path, "w") as f:
            f.write(to_yaml(self.config) + "\n")
        # Only the test's own EBB_* variables reach ebb: the environment wins over the file, and
        # EBB_BIN / EBB_TEST_SANITIZED are not config keys.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
        env.update(self.env)
        self._stdout = open(os.path.join(self.tmpdir, "stdout"), "wb")
        limit = None
        if self.nofile:
            import resource
            limit = lambda n=self.nofile: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.proc = subprocess.Popen([self.binary, "--config", self.config_path, *self.args],
                                     stdin=subprocess.DEVNULL, stdout=self._stdout,
                                     stderr=subprocess.PIPE, env=env, cwd=self.tmpdir, preexec_fn=limit)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True,
                                        name=f"ebb-stderr-{self.proc.pid}")
        self._reader.start()
        rec = self.wait_log("listening", self.start_timeout)
        self.listening = rec
        self.proxy_port = _port_of(rec.get("proxy"), "proxy", rec)
        self.admin_port = _port_of(rec.get("admin"), "admin", rec) if rec.get("admin") else None
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    rec = {"raw": line}
            except ValueError:
                rec = {"raw": line}
            with self._cv:
                self.lines.append(line)
                self.records.append(rec)
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def signal(self, sig) -> None:
        """Sends `sig` to ebb (by pid). The test now owns ebb's exit: it is not a crash."""
        self._exit_expected = True
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        self._exit_expected = True
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"ebb (pid {self.pid}) still running after {timeout:.2f}s")
        return self.returncode

    def stop(self) -> None:
        """SIGTERM, wait for the drain, then SIGKILL; idempotent. Never raises."""
        if self.proc is None or self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is not None and not self._exit_expected:
            self.unexpected_exit = self.proc.returncode
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, _signal.SIGTERM)
                self.proc.wait(timeout=dl(_seconds(self.config.get("shutdown", {})
                                                   .get("drain_timeout", "2s")) + 5))
            except subprocess.TimeoutExpired:
                self.killed = True
                os.kill(self.proc.pid, _signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.returncode = self.proc.returncode
        if self._reader is not None:
            self._reader.join(timeout=5)
        try:
            self.proc.stderr.close()
        except OSError:
            pass
        self._stdout.close()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    unexpected_exit = None  # set by stop(): the exit code if ebb died before the test ended
    killed = False          # set by stop(): SIGTERM did not end ebb in time

    # -- logs -------------------------------------------------------------------------------
    def wait_log(self, msg: str, timeout: float = 5.0, since: int = 0, **fields) -> dict:
        """Waits for a log record with this `msg` (and these field values) at index >= since."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for rec in self.records[since:]:
                    if rec.get("msg") == msg and all(rec.get(k) == v for k, v in fields.items()):
                        return rec
                left = deadline - time.monotonic()
                if self._eof:
                    code = self.proc.wait(timeout=5)
                    raise HarnessError(f"ebb exited (code {code}) without logging msg={msg!r}"
                                       f"{' ' + str(fields) if fields else ''}; its log:\n"
                                       + self.log_text(80))
                if left <= 0:
                    raise WaitTimeout(f"no log line msg={msg!r} {fields or ''} within "
                                      f"{timeout:.2f}s; ebb log:\n" + self.log_text(80))
                self._cv.wait(min(left, 0.1))

    def logs(self, msg: str | None = None) -> list:
        with self._cv:
            return [r for r in self.records if msg is None or r.get("msg") == msg]

    def log_text(self, last: int | None = None) -> str:
        with self._cv:
            lines = self.lines[-last:] if last else list(self.lines)
        return "\n".join("    " + l for l in lines)

    def sanitizer_report(self) -> str | None:
        with self._cv:
            hits = [i for i, l in enumerate(self.lines) if any(m in l for m in _SANITIZER_MARKERS)]
            if not hits:
                return None
            return "\n".join(self.lines[hits[0]:hits[0] + 60])

    # -- memory -----------------------------------------------------------------------------
    def _status_kib(self, key: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise HarnessError(f"{key} not in /proc/{self.proc.pid}/status")

    def rss_kib(self) -> int:
        """Current resident set size (VmRSS) in KiB."""
        return self._status_kib("VmRSS")

    def rss_peak_kib(self) -> int:
        """Peak resident set size since start (VmHWM) in KiB."""
        return self._status_kib("VmHWM")


def _port_of(addr, what, rec) -> int:
    if not isinstance(addr, str) or ":" not in addr:
        raise HarnessError(f"`listening` log line has no usable {what!r} address: {rec}")
    return int(addr.rsplit(":", 1)[1])


def _seconds(d) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(d))
    if not m:
        return 2.0
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": n * 60}[m.group(2)]


# --------------------------------------------------------------------------------------------
# The fake app.

class FakeParseError(Exception):
    """What ebb sent the app is not valid HTTP/1.1."""


class PeerGone(ConnectionError):
    """ebb closed (or reset) the upstream connection."""


class _Stopping(Exception):
    pass


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
            self.trailers = _parse_fields(trailers, True, "trailer")
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
        """Reads more into buf. False on EOF/reset (recorded), raises _Stopping on stop."""
        try:
            data = self.sock.recv(256 * KIB)
        except OSError as e:
            if self.server._stopping.is_set():
                raise _Stopping()
            self._mark_peer_gone(f"read: {e}")
            return False
        if not data:
            if self.server._stopping.is_set():
                raise _Stopping()
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
                    raise _Stopping()
                self._mark_peer_gone(f"read: {e}")
                raise PeerGone(f"reset with {n} body bytes missing")
            if k == 0:
                if self.server._stopping.is_set():
                    raise _Stopping()
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
        headers = _parse_fields(lines[1:], True, "request head")
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
                raise _Stopping()
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
        except _Stopping:
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


class FakeUpstream:
    """A scripted HTTP/1.1 app on 127.0.0.1 (port 0 unless given). See the module doc."""

    def __init__(self, handler=None, *, port: int = 0, on_accept=None, name: str = "app"):
        self.handler = handler or ok()
        self.on_accept = on_accept
        self.name = name
        self._want_port = port
        self.conns: list[FakeConn] = []
        self.requests: list[Request] = []
        self.parse_errors: list[str] = []
        self.handler_errors: list[str] = []
        self._cv = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lsock: socket.socket | None = None
        self.port: int | None = None

    def start(self) -> "FakeUpstream":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self._want_port))
        s.listen(128)
        s.settimeout(0.2)  # the accept loop also checks _stopping this often
        self._lsock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True, name=f"{self.name}-accept")
        t.start()
        self._threads.append(t)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _notify(self):
        with self._cv:
            self._cv.notify_all()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                s, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cv:
                conn = FakeConn(self, s, len(self.conns))
                self.conns.append(conn)
                self._cv.notify_all()
                if self._stopping.is_set():
                    conn.close()
                    break
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                     name=f"{self.name}-conn{conn.index}")
                self._threads.append(t)
            t.start()

    def _serve(self, conn: FakeConn):
        try:
            if self.on_accept is not None and self.on_accept(conn) == CLOSE:
                return
            while not self._stopping.is_set():
                req = conn.read_request()
                if req is None:
                    return
                result = self.handler(req, conn)
                if result == CLOSE or conn.closed:
                    return
                req.read_body()
                if req.wants_close:
                    return
        except (PeerGone, _Stopping):
            pass
        except FakeParseError as e:
            with self._cv:
                self.parse_errors.append(f"conn {conn.index}: {e}")
                self._cv.notify_all()
        except OSError as e:
            if not self._stopping.is_set():
                conn._mark_peer_gone(f"os error: {e}")
        except Exception:
            with self._cv:
                self.handler_errors.append(f"conn {conn.index}: {traceback.format_exc()}")
                self._cv.notify_all()
        finally:
            conn.close()
            self._notify()

    def stop(self) -> None:
        """Closes the listener and every connection, and joins every thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._lsock is not None:
            try:
                self._lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._lsock.close()
        with self._cv:
            conns = list(self.conns)
            threads = list(self._threads)
            self._cv.notify_all()
        for c in conns:
            c._shutdown()
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        for c in conns:
            c.close()
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.handler_errors.append(f"threads still running after stop: {stuck}")

    # -- observations ------------------------------------------------------------------------
    @property
    def accepts(self) -> int:
        with self._cv:
            return len(self.conns)

    def wait_for(self, pred, timeout: float, what: str):
        """Waits (on the fake's condition variable) until pred() is truthy; returns it."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"timed out after {timeout:.2f}s waiting for {what}; "
                                      f"app state: {self.summary()}")
                self._cv.wait(min(left, 0.05))

    def wait_requests(self, n: int, timeout: float = 5.0) -> list:
        return self.wait_for(lambda: len(self.requests) >= n and self.requests[:n],
                             timeout, f"{n} request(s) at the app")

    def wait_conn_closed(self, index: int, timeout: float) -> FakeConn:
        """Waits until ebb closed (EOF/reset/write error) fake connection `index`."""
        return self.wait_for(lambda: len(self.conns) > index and self.conns[index].peer_closed
                             and self.conns[index], timeout, f"ebb to close app connection {index}")

    def total_bytes_received(self) -> int:
        with self._cv:
            return sum(c.bytes_received for c in self.conns)

    def bytes_sent_total(self) -> int:
        with self._cv:
            return sum(c.bytes_sent for c in self.conns)

    def raw_received(self) -> bytes:
        """Everything every connection received, concatenated in accept order (capped)."""
        with self._cv:
            return b"".join(bytes(c.raw) for c in self.conns)

    def summary(self) -> str:
        with self._cv:
            out = [f"accepts={len(self.conns)}"]
            for c in self.conns:
                out.append(f"  {c!r} first bytes: {bytes(c.raw[:160])!r}")
            for r in self.requests[-30:]:
                out.append(f"  {r!r}")
            for e in self.parse_errors:
                out.append(f"  PARSE ERROR {e}")
            for e in self.handler_errors:
                out.append(f"  HANDLER ERROR {e}")
            return "\n".join(out)


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
        except _Stopping:
            pass
        return CLOSE
    return handler


def answer_target(req, conn):
    """Answers 200 with the request target as the body (HEAD: head only)."""
    req.read_body()
    return conn.respond(200, req.target.encode("latin-1"), head_only=req.method == "HEAD")


def close_at_once(conn):
    """For on_accept: close every connection as soon as it is accepted."""
    conn.close()
    return CLOSE


# --------------------------------------------------------------------------------------------
# The raw client.

class Response(Headers):
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
        except OSError:
            self.sock.close()  # a refused connect must not leak the socket
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
                            _parse_fields(lines[1:], False, "response head"), raw)
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
                while self.read_until(b"\r\n", max(deadline - time.monotonic(), 0.001),
                                      "trailers") != b"\r\n":
                    pass
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


# --------------------------------------------------------------------------------------------
# unittest glue.

class EbbTestCase(unittest.TestCase):
    """Base class: start_fake / start_ebb / connect clean up after themselves, in the order
    clients, fakes, ebb processes; a failing test gets the ebb log and the app's records
    printed; a crash, a sanitizer report, a fake-handler exception or invalid HTTP sent to the
    app fails the test even if its own asserts passed."""

    ebb_config: dict = {}  # per-class config overrides, merged under each start_ebb's

    def _h(self):
        if not hasattr(self, "_harness"):
            self._harness = {"clients": [], "fakes": [], "ebbs": [], "other": []}
            self.addCleanup(self._teardown_harness)
        return self._harness

    def start_fake(self, handler=None, **kw) -> FakeUpstream:
        fake = FakeUpstream(handler, **kw)
        self._h()["fakes"].append(fake)
        return fake.start()

    def start_ebb(self, upstream, config: dict | None = None, **kw) -> Ebb:
        ebb = Ebb(upstream, deep_merge(self.ebb_config, config or {}), **kw)
        self._h()["ebbs"].append(ebb)
        return ebb.start()

    def proxy(self, handler=None, config: dict | None = None, **fake_kw):
        """A fake app with `handler` and an ebb in front of it: (fake, ebb)."""
        fake = self.start_fake(handler, **fake_kw)
        return fake, self.start_ebb(fake, config)

    def connect(self, ebb_or_port, **kw) -> HttpClient:
        port = ebb_or_port.proxy_port if isinstance(ebb_or_port, Ebb) else ebb_or_port
        c = HttpClient(port, **kw)
        self._h()["clients"].append(c)
        return c

    def on_teardown(self, fn):
        """Runs fn() at teardown, before the clients are closed."""
        self._h()["other"].append(fn)

    def _teardown_harness(self):
        h = self._harness
        for fn in reversed(h["other"]):
            try:
                fn()
            except Exception:
                traceback.print_exc()
        for c in h["clients"]:
            c.close()
        for f in h["fakes"]:
            f.stop()
        for e in h["ebbs"]:
            e.stop()
        problems = []
        for e in h["ebbs"]:
            if e.unexpected_exit is not None:
                problems.append(f"ebb (pid {e.proc.pid}) exited on its own during the test with "
                                f"code {e.unexpected_exit}")
            rep = e.sanitizer_report()
            if rep:
                problems.append(f"sanitizer report from ebb (pid {e.proc.pid}):\n{rep}")
        for f in h["fakes"]:
            for err in f.parse_errors:
                problems.append(f"ebb sent the app invalid HTTP: {err}")
            for err in f.handler_errors:
                problems.append(f"fake app handler error: {err}")
        if problems:
            self.fail("\n".join(problems))

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            self._dump()
        return out

    def _dump(self):
        h = getattr(self, "_harness", None)
        if not h:
            return
        w = sys.stderr.write
        for e in h["ebbs"]:
            pid = e.proc.pid if e.proc else "-"
            w(f"\n---- ebb log (pid {pid}, exit {e.returncode}) for {self.id()} ----\n")
            w(e.log_text(300) + "\n")
        for f in h["fakes"]:
            w(f"---- fake app {f.name} (port {f.port}) ----\n{f.summary()}\n")
        w("---- end ----\n")
        sys.stderr.flush()

    # -- assertions ------------------------------------------------------------------------
    def assertEbbError(self, resp: Response, statuses, msg: str = ""):
        """resp is an answer that ebb made itself: one of `statuses`, with X-Ebb-Error."""
        if isinstance(statuses, int):
            statuses = (statuses,)
        self.assertIn(resp.status, tuple(statuses),
                      f"{msg}: expected status {statuses}, got {resp!r} body={resp.body[:200]!r}")
        reason = resp.header("X-Ebb-Error")
        self.assertTrue(reason and reason.strip(),
                        f"{msg}: ebb's own {resp.status} lacks a non-empty X-Ebb-Error: {resp!r}")

    def assertNotEbbError(self, resp: Response, msg: str = ""):
        self.assertFalse(resp.has_header("X-Ebb-Error"),
                         f"{msg}: an app answer carries X-Ebb-Error: {resp!r}")

    def assertClosed(self, client: HttpClient, timeout: float | None = None, msg: str = ""):
        timeout = timeout if timeout is not None else dl(2)
        if not client.wait_closed(timeout):
            self.fail(f"{msg}: connection still open {timeout:.2f}s later "
                      f"(bytes received meanwhile: {client.after_close[:300]!r})")

    def assertOk(self, resp: Response, body: bytes | None = None, msg: str = ""):
        self.assertEqual(resp.status, 200, f"{msg}: {resp!r} body={resp.body[:300]!r}")
        self.assertNotEbbError(resp, msg)
        if body is not None:
            self.assertEqual(resp.body, body, msg)
