"""One ebb process: spawned on port 0 with its config in a temp dir, its ports read from the
`listening` log line, its stderr (JSON lines) collected by a thread so a test can wait for a
line, its memory read from /proc, and stopped by pid (SIGTERM, then SIGKILL): never left behind.
"""

from __future__ import annotations

import json
import os
import resource
import signal as _signal
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from harness.config import DEFAULT_CONFIG, deep_merge, duration_seconds, write_config
from harness.upstream import FakeUpstream
from harness.wait import SANITIZED, HarnessError, WaitTimeout, dl

REPO_ROOT = Path(__file__).resolve().parents[3]
EBB_BIN = os.environ.get("EBB_BIN") or str(REPO_ROOT / "build" / "ebb")
# EBB_TEST_WORKERS=N runs every ebb a test starts with `workers: N` unless the test sets its own
# (the TSan suite and the multi-worker runs of the drain tests); unset, ebb's default applies.
TEST_WORKERS = os.environ.get("EBB_TEST_WORKERS")

# ebb's memory bound for streaming (SPEC §4: "a flat memory footprint"; issue 2: VmHWM under
# 32 MiB). Under ASan+UBSan the same process keeps up to 256 MiB of freed blocks in ASan's
# quarantine (quarantine_size_mb default), plus shadow memory (1/8 of what is mapped) and
# allocator metadata, none of which is ebb's footprint; there the bound is relaxed 12x, to
# 384 MiB, which still catches a proxy that buffers a 1 GiB body.
FOOTPRINT_LIMIT_KIB = (384 if SANITIZED else 32) * 1024


_SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                      "runtime error:", "ThreadSanitizer")


def status_kib(pid: int, key: str) -> int:
    """A KiB figure of /proc/PID/status (VmRSS, VmHWM...); KeyError if the kernel has none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def child_env() -> dict:
    """The environment for an ebb the test starts: this one without EBB_* variables. Only the
    test's own EBB_* variables may reach ebb (the environment wins over the file), and EBB_BIN /
    EBB_TEST_SANITIZED are not config keys."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}


def run_cli(args, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the ebb binary with `args` (`drain ...`, `--check-config ...`) from a directory without
    config, with no EBB_* variable but those of `env`; killed at the timeout."""
    return subprocess.run([EBB_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**child_env(), **(env or {})}, stdin=subprocess.DEVNULL,
                          cwd=tempfile.gettempdir())


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
        if TEST_WORKERS:
            over.setdefault("workers", int(TEST_WORKERS))
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
        write_config(self.config_path, self.config)
        env = child_env()
        env.update(self.env)
        self._stdout = open(os.path.join(self.tmpdir, "stdout"), "wb")
        limit = None
        if self.nofile:
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
                self.proc.wait(timeout=dl(duration_seconds(self.config.get("shutdown", {})
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
    def read_log_to_end(self, timeout: float = 5.0) -> None:
        """After ebb exited: waits until its stderr has been read to the end."""
        if self._reader is not None:
            self._reader.join(timeout)

    def wait_log(self, msg: str, timeout: float = 5.0, since: int = 0, **fields) -> dict:
        """Waits for a log record with this `msg` (and these field values) at index >= since."""
        return self._wait_record(
            lambda rec: rec.get("msg") == msg and all(rec.get(k) == v for k, v in fields.items()),
            timeout, since, f"msg={msg!r}{' ' + str(fields) if fields else ''}")

    def wait_log_prefix(self, prefix: str, timeout: float = 5.0) -> dict:
        """Waits for a log record whose `msg` starts with `prefix` (e.g. "reload failed: ...")."""
        return self._wait_record(lambda rec: str(rec.get("msg", "")).startswith(prefix),
                                 timeout, 0, f"msg starting {prefix!r}")

    def _wait_record(self, match, timeout: float, since: int, what: str) -> dict:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for rec in self.records[since:]:
                    if match(rec):
                        return rec
                left = deadline - time.monotonic()
                if self._eof:
                    code = self.proc.wait(timeout=5)
                    raise HarnessError(f"ebb exited (code {code}) without logging {what}; its log:\n"
                                       + self.log_text(80))
                if left <= 0:
                    raise WaitTimeout(f"no log line {what} within {timeout:.2f}s; ebb log:\n"
                                      + self.log_text(80))
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
    def rss_kib(self) -> int:
        """Current resident set size (VmRSS) in KiB."""
        return status_kib(self.proc.pid, "VmRSS")

    def rss_peak_kib(self) -> int:
        """Peak resident set size since start (VmHWM) in KiB."""
        return status_kib(self.proc.pid, "VmHWM")


def _port_of(addr, what, rec) -> int:
    if not isinstance(addr, str) or ":" not in addr:
        raise HarnessError(f"`listening` log line has no usable {what!r} address: {rec}")
    return int(addr.rsplit(":", 1)[1])
