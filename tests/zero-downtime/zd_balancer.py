"""The stand-in for the Kubernetes Service: HAProxy in TCP mode, like kube-proxy a layer-4
balancer (a connection stays on the pod it was routed to; only new connections follow
readiness), health-checking each pod's /readyz and driven through its runtime API as pods come
and go. It never retries or redispatches, so every refused connection reaches the client."""

import csv
import io
import re
import resource
import socket
import time
from pathlib import Path

from zd_procs import Proc

BACKEND = "pods"

# One line per TCP session: accept time, client port, server, connect time (ms, -1 = failed),
# total time, bytes up, bytes down, termination state (e.g. "--" clean, "SC" connect refused,
# "SD" server aborted during data).
_LOG_FORMAT = "sess %Ts.%ms %cp %s %Tc %Tt %U %B %ts"
_LOG_RE = re.compile(r"sess (\d+)\.(\d+) (\d+) (\S+) (-?\d+) (-?\d+) (\d+) (\d+) (\S\S)")


class Balancer:
    def __init__(self, workdir, check_interval_ms=200, check_fall=1, check="http"):
        self.dir = Path(workdir)
        # "http": GET /readyz, answered 200 (ebb's admin port, or an HTTP app's own); "tcp": a
        # connect, for a gRPC app with no ebb, which answers no HTTP/1 request (as a Kubernetes
        # tcpSocket probe would check it).
        self.check = check
        self.sock_path = self.dir / "haproxy.sock"
        self.check_interval_ms = check_interval_ms
        self.check_fall = check_fall
        self.proc = None
        self.port = None
        self.up_at = {}  # server name -> wall time HAProxy first saw it UP

    def start(self, timeout=10.0):
        # The harness binds the service port (port 0, no race) and hands the socket to HAProxy.
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1024)
        self.port = lsock.getsockname()[1]
        cfg = self.dir / "haproxy.cfg"
        # HAProxy needs about two descriptors per connection and refuses to start above the hard
        # limit; the load here uses a few dozen connections.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        maxconn = 1000 if hard == resource.RLIM_INFINITY else max(100, min(1000, (hard - 100) // 2))
        cfg.write_text(f"""global
    stats socket {self.sock_path} mode 600 level admin
    stats timeout 30s
    log stderr format raw local0 info
    maxconn {maxconn}

defaults
    mode tcp
    log global
    log-format "{_LOG_FORMAT}"
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 0

frontend service
    bind fd@{lsock.fileno()}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
""" + ("""    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host service
    http-check expect status 200
""" if self.check == "http" else ""))
        try:
            self.proc = Proc("haproxy", ["haproxy", "-db", "-f", str(cfg)], self.dir, capture=False,
                             pass_fds=(lsock.fileno(),))
        finally:
            lsock.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if "Name: HAProxy" in self.cmd("show info"):
                    return
            except OSError:
                pass
            if not self.proc.alive():
                raise RuntimeError(f"haproxy exited ({self.proc.popen.returncode}):\n"
                                   + self.proc.log_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise TimeoutError("haproxy's runtime API did not answer")
            time.sleep(0.02)  # polling the runtime API socket until it answers

    def stop(self):
        if self.proc:
            self.proc.stop(grace=3.0)

    def cmd(self, line):
        """One runtime API command (or several separated by ';'); returns the answer text."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(self.sock_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        finally:
            s.close()
        return b"".join(chunks).decode("utf-8", "replace")

    def add(self, name, port, check_port):
        """Adds a pod's server. It enters with weight 0 and forced DOWN (HAProxy otherwise treats a
        server leaving maintenance as UP before any check), so it gets traffic only after a check of
        /readyz has passed; wait_up() then gives it its weight."""
        i = self.check_interval_ms
        out = self.cmd(f"add server {BACKEND}/{name} 127.0.0.1:{port} check port {check_port} "
                       f"inter {i}ms fastinter {i}ms downinter {i}ms fall {self.check_fall} rise 1 weight 0")
        if "New server registered" not in out:
            raise RuntimeError(f"add server {name}: {out.strip()}")
        out = self.cmd(f"enable health {BACKEND}/{name}; enable server {BACKEND}/{name}; "
                       f"set server {BACKEND}/{name} health down")
        if out.strip():
            raise RuntimeError(f"enabling server {name}: {out.strip()}")

    def servers(self):
        """{server name: row of `show stat`} for the pods backend."""
        text = self.cmd("show stat")
        if text.startswith("# "):
            text = text[2:]
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows
                if r.get("pxname") == BACKEND and r.get("svname") not in ("BACKEND", "FRONTEND")}

    def status(self, name):
        row = self.servers().get(name)
        return row["status"] if row else None

    def wait_up(self, name, timeout):
        """Waits until a health check of the server has passed, then lets traffic in."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.servers().get(name)
            if row and row["status"] == "UP" and row.get("check_status") == ("L7OK" if self.check == "http"
                                                                             else "L4OK"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {name} not UP after {timeout}s: "
                                   f"{row and (row['status'], row.get('check_status'), row.get('last_chk'))}")
            time.sleep(0.02)  # polling HAProxy's view; the condition is the check result
        self.up_at[name] = time.time()
        out = self.cmd(f"set server {BACKEND}/{name} weight 1")
        if out.strip():
            raise RuntimeError(f"set weight {name}: {out.strip()}")

    def all_up(self, names):
        rows = self.servers()
        return all(rows.get(n, {}).get("status") == "UP" for n in names)

    def remove(self, name, timeout=10.0):
        """Removes a pod that is gone. Returns True if deleted (HAProxy refuses while sessions
        through it are still being closed; then it stays in maintenance, which is harmless)."""
        self.cmd(f"disable server {BACKEND}/{name}")
        deadline = time.monotonic() + timeout
        while True:
            out = self.cmd(f"del server {BACKEND}/{name}")
            if "Server deleted" in out:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)  # waiting for HAProxy to finish closing the dead pod's sessions

    def sessions(self):
        """Parsed per-session log lines: dicts with t (accept time), cport, server, tc, tt, up,
        down, ts (termination state)."""
        out = []
        if not self.proc:
            return out
        try:
            text = self.proc.log_path.read_text(errors="replace")
        except OSError:
            return out
        for m in _LOG_RE.finditer(text):
            srv = m.group(4)
            out.append({"t": int(m.group(1)) + int(m.group(2)) / 1000.0, "cport": int(m.group(3)),
                        "server": srv.split("/", 1)[-1], "tc": int(m.group(5)),
                        "tt": int(m.group(6)), "up": int(m.group(7)), "down": int(m.group(8)),
                        "ts": m.group(9)})
        return out
