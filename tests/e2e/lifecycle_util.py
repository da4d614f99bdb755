"""Helpers for the lifecycle, admin, WebSocket and metrics e2e tests (issue 3), on top of ebbtest.

- Short lifecycle durations (`SHORT`, `shutdown_config`), `wait_ready` (ebb logs `listening`
  before it installs its signal handlers: signal it only after `ready`).
- Admin calls: `admin_request`, `readyz`, `healthz`, `scrape`, `wait_metric`, and `poll_readyz`
  (polls until the answer matches, returns the monotonic time it first did).
- `Gate`: a fake-app handler that holds a request until the test releases it (no sleep).
- `Client` (an HttpClient that closes its socket when the connect fails) and `try_connect`
  (a connect that reports "refused" instead of raising).
- `parse_prometheus`: a strict reader of the Prometheus text format 0.0.4 that fails on any
  line that does not parse, on HELP/TYPE after a family's samples, on interleaved families, on
  duplicate samples, and on a histogram whose buckets are not cumulative.
- WebSocket (RFC 6455) framing for a client (`ws_connect`, `ws_send`, `ws_read_frame`) and a
  minimal echo app (`WsEchoApp`) that can stop in the middle of a large frame on request.
- `rewrite_config` for SIGHUP tests, `run_drain_cli` for `ebb drain`, `non_loopback_ipv4`.
- `wait_exit` / `exit_timed` (read the whole log too), `assert_lifecycle_once` (each lifecycle
  log line exactly once, checked after ebb exited), `log_time` (ebb's own clock).
- `BlockedStderrEbb`: ebb frozen inside the write(2) of its first log line by a full stderr
  pipe, to signal it at a known point of its startup.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time

from ebbtest import (CLOSE, EBB_BIN, Ebb, EbbTestCase, HarnessError, HttpClient, PeerGone, WaitTimeout,
                     build_request, build_response, deep_merge, dl, ok, to_yaml, wait_until)

# Short durations: propagation at least 1s, then until 300ms without a new connection, at most
# 2.5s; the drain phase at most 1.5s.
PROPAGATION_DELAY = 1.0
QUIET_PERIOD = 0.3
PROPAGATION_MAX = 2.5
DRAIN_TIMEOUT = 1.5
SHORT = {"shutdown": {"propagation_delay": "1s", "quiet_period": "300ms",
                      "propagation_max": "2500ms", "drain_timeout": "1500ms"}}

# How early an ebb timer may appear to fire, seen from the test's clock: libuv caches the loop
# time at the start of an iteration and counts timers in whole milliseconds.
EARLY = 0.03

LIFECYCLE_LINES = ("listening", "ready", "drain started", "listener closed", "drained", "exiting")


def shutdown_config(delay: float, quiet: float, pmax: float, drain: float) -> dict:
    ms = lambda s: f"{int(round(s * 1000))}ms"
    return {"shutdown": {"propagation_delay": ms(delay), "quiet_period": ms(quiet),
                         "propagation_max": ms(pmax), "drain_timeout": ms(drain)}}


# --------------------------------------------------------------------------------------------
# Admin endpoints.

def admin_request(ebb: Ebb, method: str = "GET", path: str = "/healthz", headers=(), *,
                  host: str = "127.0.0.1", timeout: float | None = None):
    """One request to the admin listener on a fresh connection; returns the Response."""
    c = Client(ebb.admin_port, host=host, timeout=timeout if timeout is not None else dl(5))
    try:
        return c.request(method, path, headers, host=f"{host}:{ebb.admin_port}")
    finally:
        c.close()


def readyz(ebb: Ebb) -> tuple:
    r = admin_request(ebb, "GET", "/readyz")
    return r.status, r.body.decode("latin-1").strip()


def healthz(ebb: Ebb) -> tuple:
    r = admin_request(ebb, "GET", "/healthz")
    return r.status, r.body.decode("latin-1").strip()


def poll_readyz(ebb: Ebb, status: int, body: str, timeout: float, interval: float = 0.005) -> float:
    """Polls /readyz until it answers (status, body); returns time.monotonic() of that answer."""
    seen = []

    def check():
        got = readyz(ebb)
        if not seen or seen[-1] != got:
            seen.append(got)
        return got == (status, body)
    try:
        wait_until(check, timeout, f"/readyz to answer {status} {body!r}", interval)
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; answers seen, in order: {seen}") from None
    return time.monotonic()


def scrape(ebb: Ebb) -> "Exposition":
    r = admin_request(ebb, "GET", "/metrics")
    if r.status != 200:
        raise HarnessError(f"/metrics answered {r!r}")
    return parse_prometheus(r.body.decode("utf-8"))


def wait_metric(ebb: Ebb, name: str, labels: dict | None, pred, timeout: float, what: str = ""):
    """Scrapes until pred(value of the sample) is true; returns the last Exposition."""
    last = {}

    def check():
        ex = scrape(ebb)
        last["v"] = ex.value(name, labels)
        return ex if pred(last["v"]) else None
    try:
        return wait_until(check, timeout, what or f"{name}{labels or ''}", 0.01)
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; last value {last.get('v')}") from None


# --------------------------------------------------------------------------------------------
# Sockets.

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


class Client(HttpClient):
    """HttpClient whose socket is closed when the connect fails (refused, timeout)."""

    def __init__(self, port: int, host: str = "127.0.0.1", **kw):
        try:
            super().__init__(port, host, **kw)
        except BaseException:
            sock = getattr(self, "sock", None)
            if sock is not None:
                sock.close()
            raise


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


# --------------------------------------------------------------------------------------------
# Fake-app handlers.

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


# --------------------------------------------------------------------------------------------
# Prometheus text exposition 0.0.4.

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\[\\"n])*)"[ \t]*')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Exposition:
    def __init__(self):
        self.families: dict = {}  # name -> {"type", "help", "samples": [(name, labels, value)]}
        self.samples: list = []   # (name, labels, value) in order

    def value(self, name: str, labels: dict | None = None):
        """The value of the sample `name` whose labels include `labels`; None if absent;
        raises if several match."""
        hits = [v for n, l, v in self.samples
                if n == name and all(l.get(k) == str(x) for k, x in (labels or {}).items())]
        if len(hits) > 1:
            raise HarnessError(f"{len(hits)} samples match {name}{labels}")
        return hits[0] if hits else None

    def labelled(self, name: str) -> list:
        return [(l, v) for n, l, v in self.samples if n == name]


def _parse_labels(s: str, where: str) -> dict:
    out = {}
    pos = 0
    while pos < len(s):
        m = _LABEL_RE.match(s, pos)
        if not m:
            raise AssertionError(f"{where}: bad label set {{{s}}} at offset {pos}")
        if m.group(1) in out:
            raise AssertionError(f"{where}: label {m.group(1)} twice")
        out[m.group(1)] = m.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        pos = m.end()
        if pos < len(s):
            if s[pos] != ",":
                raise AssertionError(f"{where}: expected ',' between labels in {{{s}}}")
            pos += 1
    return out


def _parse_value(s: str, where: str) -> float:
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s):
        raise AssertionError(f"{where}: value {s!r} is not a float")
    return float(s)


def _family_of(name: str, families: dict) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[:-len(suffix)]
            if families.get(base, {}).get("type") in ("histogram", "summary"):
                return base
    return name


def parse_prometheus(text: str) -> Exposition:
    """Parses and validates; raises AssertionError naming the line on any violation."""
    if text and not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    ex = Exposition()
    fams = ex.families
    closed = set()      # families whose group of lines has ended
    current = None
    seen = set()
    for no, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {no} {line!r}"
        if line.strip() == "":
            continue
        if line.startswith("#"):
            m = re.match(r"^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$", line)
            if not m:
                continue  # a plain comment
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            if not re.fullmatch(_NAME, name):
                raise AssertionError(f"{where}: bad metric name")
            fam = fams.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam["samples"]:
                raise AssertionError(f"{where}: {kind} after samples of {name}")
            if name in closed or (current is not None and current != name and name in fams
                                  and fams[name]["samples"]):
                raise AssertionError(f"{where}: {name} appears in two groups")
            if current is not None and current != name:
                closed.add(current)
            current = name
            key = kind.lower()
            if fam[key] is not None:
                raise AssertionError(f"{where}: second {kind} for {name}")
            if kind == "TYPE":
                if rest.strip() not in _TYPES:
                    raise AssertionError(f"{where}: unknown type {rest!r}")
                fam["type"] = rest.strip()
            else:
                fam["help"] = rest
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"{where}: not a sample line")
        name, lab, val = m.group(1), m.group(2), m.group(3)
        labels = _parse_labels(lab, where) if lab else {}
        value = _parse_value(val, where)
        famname = _family_of(name, fams)
        fam = fams.get(famname)
        if fam is None or fam["type"] is None:
            raise AssertionError(f"{where}: sample of {famname} before its # TYPE line")
        if famname in closed:
            raise AssertionError(f"{where}: {famname} appears in two groups")
        if current != famname:
            if current is not None:
                closed.add(current)
            current = famname
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise AssertionError(f"{where}: duplicate sample")
        seen.add(key)
        if fam["type"] == "counter" and not value >= 0:
            raise AssertionError(f"{where}: a counter must be >= 0")
        fam["samples"].append((name, labels, value))
        ex.samples.append((name, labels, value))
    for famname, fam in fams.items():
        if fam["type"] is not None and not fam["samples"]:
            raise AssertionError(f"family {famname} has HELP/TYPE but no sample")
        if fam["type"] == "histogram":
            _check_histogram(famname, fam["samples"])
    return ex


def _check_histogram(name: str, samples: list):
    groups: dict = {}
    for n, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if n == name + "_bucket":
            if "le" not in labels:
                raise AssertionError(f"{name}_bucket without le: {labels}")
            g["buckets"].append((_parse_value(labels["le"], f"{name} le"), v))
        elif n == name + "_sum":
            g["sum"] = v
        elif n == name + "_count":
            g["count"] = v
        else:
            raise AssertionError(f"histogram {name} has a sample named {n}")
    for rest, g in groups.items():
        b = g["buckets"]
        if not b or b[-1][0] != math.inf:
            raise AssertionError(f"histogram {name}{rest}: the last bucket must be le=\"+Inf\"")
        if [x for x, _ in b] != sorted(x for x, _ in b):
            raise AssertionError(f"histogram {name}{rest}: buckets not in increasing le order")
        counts = [c for _, c in b]
        if counts != sorted(counts):
            raise AssertionError(f"histogram {name}{rest}: bucket counts not cumulative: {b}")
        if g["count"] is None or g["sum"] is None:
            raise AssertionError(f"histogram {name}{rest}: _sum or _count missing")
        if g["count"] != b[-1][1]:
            raise AssertionError(f"histogram {name}{rest}: _count {g['count']} != +Inf bucket {b[-1][1]}")


# --------------------------------------------------------------------------------------------
# WebSocket (RFC 6455).

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


# --------------------------------------------------------------------------------------------
# Config reloads, the drain client, log checks.

def rewrite_config(ebb: Ebb, over: dict) -> None:
    """Rewrites ebb's config file with `over` merged in (for a SIGHUP)."""
    ebb.config = deep_merge(ebb.config, over)
    tmp = ebb.config_path + ".new"
    with open(tmp, "w") as f:
        f.write(to_yaml(ebb.config) + "\n")
    os.replace(tmp, ebb.config_path)


def run_drain_cli(args, timeout: float) -> subprocess.CompletedProcess:
    """Runs `ebb drain ARGS` with no EBB_* variable in its environment; killed at the timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
    return subprocess.run([EBB_BIN, "drain", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def wait_stderr_eof(ebb: Ebb, timeout: float = 5.0) -> None:
    """After ebb exited: waits until its stderr has been read to the end."""
    if ebb._reader is not None:
        ebb._reader.join(timeout)


def assert_lifecycle_once(test, ebb: Ebb, lines=LIFECYCLE_LINES) -> None:
    """Each lifecycle log line exactly once (SPEC §6). Call after ebb exited."""
    wait_stderr_eof(ebb)
    counts = {m: len(ebb.logs(m)) for m in lines}
    bad = {m: n for m, n in counts.items() if n != 1}
    test.assertFalse(bad, f"lifecycle log lines must appear exactly once; counts {counts}")


def log_time(rec: dict) -> float:
    """A log record's `ts` (RFC 3339, UTC, milliseconds) as seconds since the epoch: ebb's own
    clock, for intervals between two of its lines that a loaded test process cannot blur."""
    from datetime import datetime
    return datetime.strptime(rec["ts"].replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def exit_timed(ebb: Ebb, t0: float, timeout: float) -> tuple:
    """Waits for ebb to exit; returns (exit code, seconds since t0). Its whole log has been
    read when this returns."""
    code = ebb.wait_exit(timeout)
    elapsed = time.monotonic() - t0
    wait_stderr_eof(ebb)
    return code, elapsed


def wait_exit(ebb: Ebb, timeout: float) -> int:
    """ebb.wait_exit, then reads its log to the end (so every line it wrote can be checked)."""
    code = ebb.wait_exit(timeout)
    wait_stderr_eof(ebb)
    return code


def wait_ready(ebb: Ebb, timeout: float | None = None) -> Ebb:
    """Waits for the `ready` log line, so that /readyz answers 200 before the test acts."""
    ebb.wait_log("ready", timeout if timeout is not None else dl(5))
    return ebb


class LifecycleCase(EbbTestCase):
    """An EbbTestCase with the SHORT shutdown durations, whose proxy() returns a ready ebb."""
    ebb_config = SHORT

    def proxy(self, handler=None, config=None, **kw):
        fake, ebb = super().proxy(handler, config, **kw)
        wait_ready(ebb)
        return fake, ebb


# --------------------------------------------------------------------------------------------
# ebb with a stderr that blocks: a pipe that is already full when ebb starts, so that ebb stops
# inside the write(2) of its first log line (`listening`) until the test reads the pipe. That
# freezes ebb at a known point of its startup without a sleep.

class BlockedStderrEbb:
    def __init__(self, upstream_port: int, config: dict):
        import fcntl
        from ebbtest import DEFAULT_CONFIG
        self.config = deep_merge(DEFAULT_CONFIG, {"upstream": f"127.0.0.1:{upstream_port}",
                                                  **config})
        self.tmpdir = tempfile.mkdtemp(prefix="ebb-e2e-blocked-")
        self.config_path = os.path.join(self.tmpdir, "ebb.yaml")
        with open(self.config_path, "w") as f:
            f.write(to_yaml(self.config) + "\n")
        self.r, w = os.pipe()
        F_SETPIPE_SZ = 1031
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
        except OSError:
            pass
        os.set_blocking(w, False)
        self.filler = 0
        try:
            while True:
                self.filler += os.write(w, b"#" * 4096)
        except BlockingIOError:
            pass
        os.set_blocking(w, True)  # shared with ebb: its write(2) must block, not fail
        env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
        self.proc = subprocess.Popen([EBB_BIN, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=w, env=env, cwd=self.tmpdir)
        os.close(w)
        self.output = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def listening_ports(self) -> list:
        """[(fd, port)] of ebb's listening TCP sockets, in fd order (from /proc)."""
        inodes = {}
        try:
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                except OSError:
                    continue
                m = re.fullmatch(r"socket:\[(\d+)\]", link)
                if m:
                    inodes[m.group(1)] = int(fd)
        except OSError:
            return []
        out = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                    out.append((inodes[parts[9]], int(parts[1].rsplit(":", 1)[1], 16)))
        return sorted(out)

    def wchan(self) -> str:
        try:
            with open(f"/proc/{self.pid}/wchan") as f:
                return f.read().strip()
        except OSError:
            return ""

    def read_all(self, timeout: float) -> bytes:
        """Reads the pipe (unblocking ebb) until EOF or the timeout; returns ebb's output."""
        import select as _select
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while time.monotonic() < deadline:
            r, _, _ = _select.select([self.r], [], [], 0.05)
            if r:
                chunk = os.read(self.r, 65536)
                if not chunk:
                    break
                buf += chunk
        self.output += bytes(buf)
        return bytes(buf)

    def log_lines(self) -> list:
        import json as _json
        out = []
        for line in self.output.split(b"\n"):
            line = line.lstrip(b"#")
            if line.startswith(b"{"):
                try:
                    out.append(_json.loads(line))
                except ValueError:
                    pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.close(self.r)
        except OSError:
            pass
        import shutil
        shutil.rmtree(self.tmpdir, ignore_errors=True)
