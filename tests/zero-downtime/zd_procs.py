"""Processes of the rolling-deploy harness: spawning and stopping by pid, building the Go apps,
and a pod (one app process, optionally one ebb in front of it) with its own ports and timeline.
Helper processes report readiness by a printed line, never by a sleep."""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# If the harness itself is killed (a CTest timeout sends SIGKILL), nothing it started may outlive
# it: setpriv sets the parent-death signal and then execs, so the pid stays the one we stop.
_SETPRIV = shutil.which("setpriv")


def _wrap(argv):
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(argv)
    return list(argv)


def child_env(extra=None):
    """The environment for ebb and the apps: no EBB_* variable, since ebb reads every one of
    them as a config key (EBB_BIN or EBB_ZD_RESTARTS must not reach it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
    env.update(extra or {})
    return env


class Proc:
    """A child process. With capture, stdout and stderr lines are kept with their arrival time
    (and copied to a log file) so that callers can wait for a line; without it, both go straight
    to the log file (HAProxy's per-connection log is too busy for a Python reader)."""

    def __init__(self, name, argv, logdir, capture=True, env=None, pass_fds=()):
        self.name = name
        self.argv = list(argv)
        self.lines = []  # (wall time, "out" | "err", text)
        self._cond = threading.Condition()
        self._open_streams = 0
        self.log_path = Path(logdir) / f"{name}.log"
        self._log = open(self.log_path, "w", buffering=1)
        if capture:
            out = err = subprocess.PIPE
        else:
            out, err = self._log, subprocess.STDOUT
        self.popen = subprocess.Popen(_wrap(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      env=env if env is not None else child_env(),
                                      pass_fds=pass_fds, start_new_session=False)
        self.pid = self.popen.pid
        self.started = time.time()
        self.exited_at = None
        self.killed = False  # needed SIGKILL
        self._readers = []
        if capture:
            for stream, tag in ((self.popen.stdout, "out"), (self.popen.stderr, "err")):
                self._open_streams += 1
                t = threading.Thread(target=self._read, args=(stream, tag), daemon=True)
                t.start()
                self._readers.append(t)

    def _read(self, stream, tag):
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            now = time.time()
            with self._cond:
                self.lines.append((now, tag, text))
                self._cond.notify_all()
            try:
                self._log.write(f"{now:.3f} {tag} {text}\n")
            except ValueError:
                pass  # log closed after the process was reaped
        with self._cond:
            self._open_streams -= 1
            self._cond.notify_all()

    def wait_line(self, predicate, timeout, what):
        """The first captured line (text) for which predicate(text) is true, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for _, _, text in self.lines[seen:]:
                    if predicate(text):
                        return text
                seen = len(self.lines)
                if self._open_streams == 0 and self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before {what}; "
                                       f"log: {self.log_path}\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no {what} within {timeout}s; log: {self.log_path}\n"
                                       f"{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def tail(self, n=15):
        with self._cond:
            return "\n".join(f"    {t}" for _, _, t in self.lines[-n:])

    def alive(self):
        return self.popen.poll() is None

    def send(self, sig):
        # Popen.send_signal does nothing once the child is reaped, so a recycled pid is never hit.
        self.popen.send_signal(sig)

    def wait(self, timeout):
        """The exit code, or None if still running after timeout seconds."""
        try:
            rc = self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None
        if self.exited_at is None:
            self.exited_at = time.time()
        return rc

    def stop(self, grace=3.0, sig=signal.SIGTERM):
        """Stop by pid: sig, then SIGKILL after grace seconds. Idempotent."""
        if self.alive():
            self.send(sig)
            if self.wait(grace) is None:
                self.killed = True
                self.send(signal.SIGKILL)
                self.wait(10)
        else:
            self.wait(0)
        for t in self._readers:
            t.join(timeout=2)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream:
                stream.close()
        self._log.close()


def build_apps(outdir):
    """Builds the Go apps (naive, graceful) into outdir with Go's caches in temp dirs, offline.
    Returns {"naive": path, "graceful": path, "splitwrite": argv of the Python app}."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    gohome = Path(tempfile.mkdtemp(prefix="ebb-zd-go-"))
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(gohome), "GOCACHE": str(gohome / "cache"), "GOPATH": str(gohome / "gopath"),
            "GOFLAGS": "", "GOPROXY": "off", "GO111MODULE": "on", "GOWORK": "off",
            "GOTOOLCHAIN": "local", "GOENV": "off",
        }
        # With cgo as Debian's Go was built, its precompiled standard library is used (about 1 s);
        # without a C compiler, CGO_ENABLED=0 rebuilds the packages it needs (about 10 s).
        for extra in ({}, {"CGO_ENABLED": "0"}):
            r = subprocess.run(["go", "build", "-o", str(outdir) + "/", "./naive", "./graceful"],
                               cwd=HERE / "apps", env={**env, **extra}, capture_output=True, text=True,
                               timeout=300)
            if r.returncode == 0:
                break
        else:
            raise RuntimeError(f"go build failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    finally:
        shutil.rmtree(gohome, ignore_errors=True)
    return {"naive": outdir / "naive", "graceful": outdir / "graceful",
            "splitwrite": [sys.executable, "-u", str(HERE / "apps" / "splitwrite.py")]}


class Pod:
    """One pod: the app on its own port and, when ebb_bin is given, ebb in front of it with its
    own proxy and admin ports. The balancer sends traffic to serve_port and health-checks
    /readyz on check_port (ebb's admin port; the app's own port when there is no ebb)."""

    def __init__(self, name, workdir, app_bin, app_args=(), ebb_bin=None, ebb_shutdown=None, ebb_workers=1):
        self.name = name
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True)
        self.app_bin = app_bin
        self.app_args = list(app_args)
        self.ebb_bin = ebb_bin
        self.ebb_shutdown = ebb_shutdown or {}
        self.ebb_workers = ebb_workers
        self.app = self.ebb = None
        self.app_port = self.serve_port = self.check_port = self.admin_port = None
        self.events = []  # (wall time, text)
        self.prestop = None  # what the preStop hook got: dict
        self.in_flight_at_delete = None

    def event(self, text):
        self.events.append((time.time(), text))

    def start(self, timeout=15.0):
        cmd = list(self.app_bin) if isinstance(self.app_bin, (list, tuple)) else [str(self.app_bin)]
        self.app = Proc(f"{self.name}-app", cmd + ["-addr", "127.0.0.1:0"] + self.app_args, self.dir)
        line = self.app.wait_line(lambda t: t.startswith("listening "), timeout, "'listening' line")
        self.app_port = int(line.rsplit(":", 1)[1])
        self.serve_port = self.check_port = self.app_port
        if self.ebb_bin:
            cfg = self.dir / "ebb.yaml"
            sd = {"propagation_delay": "1s", "quiet_period": "300ms", "propagation_max": "3s",
                  "drain_timeout": "10s"}
            sd.update(self.ebb_shutdown)
            cfg.write_text(
                "listen: 127.0.0.1:0\n"
                f"upstream: 127.0.0.1:{self.app_port}\n"
                "admin: {listen: 127.0.0.1:0}\n"
                "readiness: {upstream_check: tcp, interval: 200ms, failure_threshold: 1}\n"
                "shutdown: {" + ", ".join(f"{k}: {v}" for k, v in sd.items()) + "}\n"
                "log: {format: json}\n"
                f"workers: {self.ebb_workers}\n")
            self.ebb = Proc(f"{self.name}-ebb", [str(self.ebb_bin), "--config", str(cfg)], self.dir)
            line = self.ebb.wait_line(lambda t: _json_msg(t) == "listening", timeout, "'listening' log line")
            rec = json.loads(line)
            self.serve_port = int(rec["proxy"].rsplit(":", 1)[1])
            self.admin_port = self.check_port = int(rec["admin"].rsplit(":", 1)[1])
        self.event(f"started app pid {self.app.pid} :{self.app_port}"
                   + (f", ebb pid {self.ebb.pid} proxy :{self.serve_port} admin :{self.admin_port}"
                      if self.ebb else ""))

    def procs(self):
        return [p for p in (self.ebb, self.app) if p is not None]

    def ebb_in_flight(self):
        """ebb_requests_in_flight from /metrics, or None (diagnostics only)."""
        if not self.admin_port:
            return None
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1)
            c.request("GET", "/metrics")
            body = c.getresponse().read().decode("utf-8", "replace")
            c.close()
        except (OSError, http.client.HTTPException):
            return None
        for line in body.splitlines():
            if line.startswith("ebb_requests_in_flight"):
                try:
                    return int(float(line.split()[-1]))
                except ValueError:
                    return None
        return None

    def delete(self, prestop, grace, classic_sidecar=False):
        """What the kubelet does to a deleted pod: the app container's preStop httpGet of
        /drain?wait=true (blocking, bounded only by the grace period), then SIGTERM to ebb and
        the app at the same time, then SIGKILL to whatever is left when the grace period ends.
        With classic_sidecar, ebb is an ordinary container without a hook, and the kubelet sends
        it SIGTERM at once, while the app container's preStop is still waiting on /drain."""
        t0 = time.time()
        deadline = time.monotonic() + grace
        self.in_flight_at_delete = self.ebb_in_flight()
        self.event("delete" + (f" (ebb in flight: {self.in_flight_at_delete})"
                               if self.in_flight_at_delete is not None else ""))
        if classic_sidecar and self.ebb:
            self.ebb.send(signal.SIGTERM)
            self.event(f"SIGTERM to {self.ebb.name} (no hook on its container)")
        if prestop and self.admin_port:
            self.prestop = {}
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                               timeout=max(0.1, deadline - time.monotonic()))
                c.request("GET", "/drain?wait=true")
                r = c.getresponse()
                body = r.read().decode("utf-8", "replace")
                c.close()
                self.prestop = {"status": r.status, "body": body.strip()}
                try:
                    self.prestop.update(json.loads(body))
                except ValueError:
                    pass
            except (OSError, http.client.HTTPException) as e:
                self.prestop = {"error": repr(e)}  # the kubelet ignores a failed hook too
            self.prestop["seconds_waited"] = round(time.time() - t0, 3)
            self.event(f"preStop answered {self.prestop}")
        targets = [self.app] if classic_sidecar and self.ebb else self.procs()
        for p in targets:
            p.send(signal.SIGTERM)
        self.event("SIGTERM to " + " and ".join(p.name for p in targets))
        for p in self.procs():
            rc = p.wait(deadline - time.monotonic())
            if rc is None:
                p.killed = True
                p.send(signal.SIGKILL)
                rc = p.wait(10)
                self.event(f"{p.name} SIGKILLed at the end of the grace period")
            else:
                self.event(f"{p.name} exited {rc}")
        self.stop()

    def stop(self):
        for p in self.procs():
            p.stop(grace=2.0, sig=signal.SIGKILL)

    def exit_codes(self):
        return {p.name: p.popen.returncode for p in self.procs()}

    def ebb_log(self):
        """ebb's parsed JSON log lines (dicts)."""
        out = []
        if self.ebb:
            for _, _, text in list(self.ebb.lines):
                try:
                    out.append(json.loads(text))
                except ValueError:
                    out.append({"msg": text, "level": "raw"})
        return out


def _json_msg(text):
    try:
        return json.loads(text).get("msg")
    except (ValueError, AttributeError):
        return None
