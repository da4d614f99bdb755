"""The processes a benchmark run keeps up: the upstream (nginx, `return 200` and static bodies)
and the targets wrk is pointed at: ebb, nginx as a reverse proxy, HAProxy in mode http, and the
upstream itself (the floor); each of the three proxies also serves h2c (prior knowledge) to the
same HTTP/1 upstream on its `h2c_port`. For the gRPC cells, a gRPC-shaped h2c upstream (nginx
answering a framed message and a `grpc-status` trailer) and the proxies in front of it over h2c
end to end: ebb with `upstream_protocol: h2c`, nginx `grpc_pass`, HAProxy `proto h2`. Each is
started on a free port under `taskset` with its CPU set, so every thread and forked worker
inherits the pinning from its first instruction, and is stopped by pid."""

from __future__ import annotations

import http.client
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness.client import unused_port  # noqa: E402  (the e2e harness)
from harness.config import DEFAULT_CONFIG, deep_merge, write_config  # noqa: E402
from harness.ebb import Ebb, child_env  # noqa: E402

import measure  # noqa: E402

SMALL_BODY = b"ebb-bench small\n"                  # 16 bytes
BIG_BODY = b"0123456789abcdef" * 1024               # 16 KiB
PATHS = {"small": "/small", "16k": "/16k", "stream": "/stream"}
# The gRPC cells: one unary call, as a gRPC client sends it. The message is gRPC's framing (a
# compressed flag, a 4-byte length) around the small body; the upstream answers the same bytes.
GRPC_PATH = "/bench.Echo/Call"
GRPC_MESSAGE = b"\x00" + len(SMALL_BODY).to_bytes(4, "big") + SMALL_BODY
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


class StartError(RuntimeError):
    pass


def grpc_call(port: int, message_path: str, timeout: float = 2.0) -> bool:
    """True if one gRPC-shaped call over h2c (nghttp, prior knowledge) gets the message back and
    the trailer `grpc-status: 0`."""
    cmd = ["nghttp", "-v", "-t", f"{int(timeout * 1000)}ms", "-d", message_path,
           *(a for h in GRPC_HEADERS for a in ("-H", h)), f"http://127.0.0.1:{port}{GRPC_PATH}"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False
    out = r.stdout + r.stderr
    return (r.returncode == 0 and b":status: 200" in out and GRPC_MESSAGE in out
            and re.search(rb"recv \(stream_id=\d+\) grpc-status: 0", out) is not None)


def h2c_get(port: int, path: str, timeout: float = 2.0) -> bytes | None:
    """The body of one GET over h2c (nghttp, prior knowledge), or None."""
    try:
        r = subprocess.run(["nghttp", "-t", f"{int(timeout * 1000)}ms", f"http://127.0.0.1:{port}{path}"],
                           capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout if r.returncode == 0 else None


def http_get(port: int, path: str, timeout: float = 2.0):
    """(status, body) of one GET, or None if nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Daemon:
    """One server process under `taskset -c CPUS` (taskset execs, so the pid is the server's)."""

    def __init__(self, name: str, cmd: list, cpus, workdir: str):
        self.name, self.cmd, self.cpus, self.workdir = name, cmd, list(cpus), workdir
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self._seen: set[int] = set()

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["taskset", "-c", measure.cpus_text(self.cpus), *self.cmd],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        if not self.alive():
            return []
        tree = measure.process_tree(self.proc.pid)
        self._seen.update(tree)
        return tree

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        """SIGTERM to the root; SIGKILL to it and to every descendant ever seen if it lingers."""
        if self.proc is None:
            return
        self.pids()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        for pid in self._seen - {self.proc.pid}:
            if os.path.exists(f"/proc/{pid}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class Target:
    """A server wrk is pointed at. `proxy` targets have processes whose CPU and memory count.
    `families` are the cell families it serves: http1 (wrk), h2c (h2load to the same HTTP/1
    upstream, on h2c_port) and grpc (h2load, h2c end to end to the gRPC upstream)."""
    name = "?"
    proxy = True
    families = ("http1", "h2c")
    kind = ""  # "-grpc" for the gRPC family's targets: their own work dir beside the HTTP/1 one

    def __init__(self, workers: int, cpus, workdir: str, upstream_port: int, max_conns: int):
        self.workers, self.cpus, self.upstream_port = workers, list(cpus), upstream_port
        self.max_conns = max_conns
        self.workdir = os.path.join(workdir, f"{self.name}{self.kind}-w{workers}")
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # nginx workers run as nobody when the harness is root
        self.port: int | None = None
        self.h2c_port: int | None = None
        self.daemon: Daemon | None = None

    @property
    def label(self) -> str:
        return f"{self.name} w{self.workers}" if self.proxy else self.name

    @property
    def key(self) -> str:
        """The label, told apart from the same proxy's gRPC-family process."""
        return self.label + (" grpc" if self.kind else "")

    def ready(self, port: int) -> bool:
        """Our own answer through this port (HTTP/1 /small; the gRPC targets override it)."""
        return http_get(port, PATHS["small"], timeout=0.5) == (200, SMALL_BODY)

    def pids(self) -> list[int]:
        return self.daemon.pids() if self.daemon else []

    def log_tail(self) -> str:
        return self.daemon.log_tail() if self.daemon else ""

    def capacity(self) -> int:
        """Client connections this target was configured to hold at once."""
        return self.max_conns + 512

    def config(self, port: int) -> tuple[str, str]:
        """(file name, text) of the config for this port."""
        raise NotImplementedError

    def command(self, conf_path: str) -> list:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> "Target":
        """Probes free ports: another process may take a port between the probe and the bind, so
        ready means our process is alive and answers our own body through that port."""
        for _ in range(5):
            port = unused_port()
            if "h2c" in self.families:
                self.h2c_port = unused_port()
            name, text = self.config(port)
            conf = os.path.join(self.workdir, name)
            with open(conf, "w") as f:
                f.write(text)
            self.daemon = Daemon(self.label.replace(" ", "-"), self.command(conf), self.cpus,
                                 self.workdir)
            self.daemon.start()
            deadline = time.monotonic() + timeout
            while self.daemon.alive() and time.monotonic() < deadline:
                if self.ready(port):
                    self.port = port
                    if self.h2c_port and h2c_get(self.h2c_port, PATHS["small"]) != SMALL_BODY:
                        log = self.daemon.log_tail()
                        self.daemon.stop()  # the caller may hold no reference to stop it by
                        raise StartError(f"{self.label} does not answer /small over h2c on port "
                                         f"{self.h2c_port}:\n{log}")
                    return self
                time.sleep(0.02)
            log = self.daemon.log_tail()
            self.daemon.stop()
            if "in use" not in log:
                raise StartError(f"{self.label} did not start on port {port}:\n{log}")
        raise StartError(f"{self.label}: no free port after 5 tries")

    def stop(self):
        if self.daemon:
            self.daemon.stop()


def _hard_nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class NginxTarget(Target):
    """An nginx process: the bench's apps, and nginx as the proxy compared. `conf` puts the
    shared head (processes, limits, logs) and `http` block preamble around a target's own part."""

    def conf(self, http_body: str) -> tuple[str, str]:
        # worker_connections counts upstream connections too; the descriptor limit must hold both.
        return "nginx.conf", (
            f"worker_processes {self.workers};\ndaemon off;\nmaster_process on;\n"
            f"error_log {self.workdir}/error.log warn;\npid {self.workdir}/nginx.pid;\n"
            f"worker_rlimit_nofile {min(2 * self.max_conns + 256, _hard_nofile())};\n"
            f"events {{ worker_connections {self.max_conns + 512}; }}\n"
            "\nhttp {\n  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;\n"
            + http_body + "}\n")

    def upstream_app(self) -> str:
        """The kept-alive pool to the app, as the nginx proxies name it (`app`)."""
        return (f"  upstream app {{ server 127.0.0.1:{self.upstream_port}; keepalive 64; "
                "keepalive_requests 100000000; }\n")

    def command(self, conf):
        return ["nginx", "-p", self.workdir + "/", "-c", conf]


class Upstream(NginxTarget):
    """The app: nginx, 1 worker by default, keep-alive, answering from memory or the page cache."""
    name = "upstream"
    families = ("http1",)

    def __init__(self, cpus, workdir: str, stream_bytes: int, workers: int = 1):
        self.stream_bytes = stream_bytes
        super().__init__(workers, cpus, workdir, 0, 4096)

    def config(self, port):
        big = os.path.join(self.workdir, "16k.bin")
        stream = os.path.join(self.workdir, "stream.bin")
        with open(big, "wb") as f:
            f.write(BIG_BODY)
        with open(stream, "wb") as f:
            f.truncate(self.stream_bytes)  # sparse: no disk used, served as zeros
        for p in (big, stream):
            os.chmod(p, 0o644)
        return self.conf(f"""  default_type application/octet-stream; open_file_cache max=16;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /small {{ return 200 "{SMALL_BODY.decode().rstrip()}\\n"; }}
    location = /16k {{ alias {big}; }}
    location = /stream {{ alias {stream}; }}
  }}
""")


class Direct(Target):
    """wrk straight at the upstream: the floor, with no proxy process to charge."""
    name = "direct"
    proxy = False
    families = ("http1",)

    def __init__(self, upstream: Upstream):
        self.workers, self.cpus, self.upstream = 0, [], upstream
        self.port, self.daemon = upstream.port, None

    def pids(self):
        return []

    def start(self, timeout=0):
        self.port = self.upstream.port
        return self

    def stop(self):
        pass


class NginxProxy(NginxTarget):
    name = "nginx"

    def config(self, port):
        # proxy_max_temp_file_size 0: a 1 GiB response streams through memory buffers instead of
        # being spooled to disk, as ebb and HAProxy stream it.
        return self.conf(self.upstream_app() + f"""  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.1:{self.h2c_port} http2 backlog=4096;
    location / {{
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_max_temp_file_size 0;
    }}
  }}
""")


class HaproxyProxy(Target):
    name = "haproxy"

    def maxconn(self) -> int:
        # HAProxy reserves a server descriptor for every client connection and refuses to start
        # when 2 x maxconn passes the hard RLIMIT_NOFILE (idle clients hold no server connection,
        # but it counts them anyway), so under a hard limit of 20000 it holds at most ~9960.
        return min(self.max_conns + 512, (_hard_nofile() - 64) // 2)

    def capacity(self) -> int:
        return self.maxconn() - 16

    def head(self) -> str:
        """The global and defaults sections every HAProxy target of the bench shares."""
        return f"""global
  nbthread {self.workers}
  maxconn {self.maxconn()}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
"""

    def config(self, port):
        return "haproxy.cfg", self.head() + f"""  option forwardfor
frontend fe
  bind 127.0.0.1:{port}
  bind 127.0.0.1:{self.h2c_port} proto h2
  default_backend be
backend be
  http-reuse always
  server app 127.0.0.1:{self.upstream_port}
"""

    def command(self, conf):
        return ["haproxy", "-db", "-f", conf]


class _Affinity:
    """Runs a block with the calling thread pinned to `cpus` (a fork inherits it), then restores."""

    def __init__(self, cpus):
        self.cpus = cpus

    def __enter__(self):
        self.saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cpus)

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.saved)


class EbbProxy(Target):
    name = "ebb"
    h2c_optional = False  # the binary under test must serve h2c
    note = ""             # what the run should say about this target

    def __init__(self, binary: str, *args, **kw):
        self.binary = binary
        self.ebb: Ebb | None = None
        super().__init__(*args, **kw)

    def ebb_config(self) -> dict:
        return {"upstream": f"127.0.0.1:{self.upstream_port}", "workers": self.workers,
                "log": {"format": "json", "level": "info", "access": False},
                "timeouts": {"client_idle": "300s"},
                "limits": {"max_connections": self.max_conns + 512}}

    def refusal(self) -> str | None:
        """ebb's own words if it refuses this config (e.g. `workers: 2` before multi-core)."""
        path = os.path.join(self.workdir, "check.yaml")
        write_config(path, deep_merge(DEFAULT_CONFIG, self.ebb_config()))
        r = subprocess.run([self.binary, "--check-config", "--config", path],
                           capture_output=True, text=True, env=child_env())
        return None if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")

    def start(self, timeout=15.0):
        # ebb binds port 0 and logs the port (at info: the harness waits for that line); it is started with the proxy CPUs as its affinity
        # so that `workers: auto` sees the cores it will get.
        self.ebb = Ebb(None, self.ebb_config(), binary=self.binary, start_timeout=timeout)
        with _Affinity(self.cpus):
            self.ebb.start()
        self.port = self.ebb.proxy_port
        if not self.ready(self.port):
            raise StartError(f"{self.label} does not answer through port {self.port}:\n{self.ebb.log_text(20)}")
        if "h2c" in self.families:
            self.h2c_port = self.port  # ebb tells HTTP/2 by its preface on the same listener
            if h2c_get(self.port, PATHS["small"]) != SMALL_BODY:
                if not self.h2c_optional:
                    raise StartError(f"ebb does not proxy /small over h2c:\n{self.ebb.log_text(20)}")
                self.families = ("http1",)
                self.note = f"{self.label} does not answer h2c (a binary from before HTTP/2): no h2c figures"
        return self

    def pids(self):
        return [self.ebb.pid] if self.ebb and self.ebb.alive() else []

    def log_tail(self) -> str:
        return self.ebb.log_text(20) if self.ebb else ""

    def capacity(self) -> int:
        # ebb caps client connections to half its descriptors (one app connection each) and
        # says the cap in force in its `listening` line.
        return int(self.ebb.listening.get("max_connections", 0)) if self.ebb else 0

    def stop(self):
        if self.ebb:
            self.ebb.stop()


# -- the gRPC family: h2c end to end ------------------------------------------------------------

class GrpcUpstream(NginxTarget):
    """The gRPC-shaped app: nginx, 1 worker, h2c (prior knowledge) only, answering every call
    with status 200, `content-type: application/grpc`, the framed message from memory or the page
    cache, and the trailer `grpc-status: 0`. A POST to a static file is 405 in nginx, so the 405
    is turned into that answer (error_page's internal redirect is a GET)."""
    name = "upstream"
    kind = "-grpc"
    families = ("grpc",)

    def __init__(self, cpus, workdir: str, workers: int = 1):
        super().__init__(workers, cpus, workdir, 0, 4096)
        self.message_path = os.path.join(self.workdir, "message.bin")

    def ready(self, port):
        return grpc_call(port, self.message_path, timeout=0.5)

    def config(self, port):
        with open(self.message_path, "wb") as f:
            f.write(GRPC_MESSAGE)
        os.chmod(self.message_path, 0o644)
        return self.conf(f"""  server {{
    listen 127.0.0.1:{port} http2 backlog=4096;
    location = {GRPC_PATH} {{
      mirror /read-body; mirror_request_body on;
      default_type application/grpc;
      alias {self.message_path};
      add_trailer grpc-status 0;
      error_page 405 =200 $uri;
    }}
    location = /read-body {{ internal; return 204; }}
  }}
""")


class _GrpcFamily:
    """Mixin of the proxies in front of the gRPC upstream: ready when a call through them works."""
    kind = "-grpc"
    families = ("grpc",)
    message_path = ""

    def ready(self, port):
        return grpc_call(port, self.message_path, timeout=0.5)


class DirectGrpc(_GrpcFamily, Direct):
    """h2load straight at the gRPC upstream: the floor of the gRPC cells."""

    def __init__(self, upstream: GrpcUpstream):
        super().__init__(upstream)
        self.message_path = upstream.message_path


class NginxGrpc(_GrpcFamily, NginxTarget):
    """nginx's gRPC proxy: `listen ... http2` and `grpc_pass` with upstream keepalive."""
    name = "nginx"

    def __init__(self, message_path: str, *args, **kw):
        self.message_path = message_path
        super().__init__(*args, **kw)

    def config(self, port):
        return self.conf(self.upstream_app() + f"""  server {{
    listen 127.0.0.1:{port} http2 backlog=4096;
    location / {{ grpc_pass grpc://app; }}
  }}
""")


class HaproxyGrpc(_GrpcFamily, HaproxyProxy):
    """HAProxy with HTTP/2 on both sides: `bind ... proto h2`, `server ... proto h2`."""

    def __init__(self, message_path: str, *args, **kw):
        self.message_path = message_path
        super().__init__(*args, **kw)

    def config(self, port):
        return "haproxy.cfg", self.head() + f"""frontend fe
  bind 127.0.0.1:{port} proto h2
  default_backend be
backend be
  http-reuse always
  server app 127.0.0.1:{self.upstream_port} proto h2
"""


class EbbGrpc(_GrpcFamily, EbbProxy):
    """ebb with `upstream_protocol: h2c` in front of the gRPC upstream."""

    def __init__(self, message_path: str, *args, **kw):
        self.message_path = message_path
        super().__init__(*args, **kw)

    def ebb_config(self) -> dict:
        return {**super().ebb_config(), "upstream_protocol": "h2c"}


def versions(ebb_binary: str) -> dict:
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"
    return {"ebb": first([ebb_binary, "--version"]), "nginx": first(["nginx", "-v"]),
            "haproxy": first(["haproxy", "-v"]), "wrk": first(["wrk", "-v"]),
            "h2load": first(["h2load", "--version"]),
            "curl": first(["curl", "--version"])}


def need_tools():
    missing = [t for t in ("nginx", "haproxy", "wrk", "curl", "taskset", "h2load", "nghttp")
               if not shutil.which(t)]
    if missing:
        raise StartError(f"missing {', '.join(missing)}: `make deps` installs them")


class EbbBaseline(EbbProxy):
    """Another ebb binary (--baseline), run beside the one under test: a change's before/after in one run."""
    name = "ebb-base"
    h2c_optional = True  # a baseline from before HTTP/2 still gives the HTTP/1 cells
