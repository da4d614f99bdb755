"""ebb with a stderr that blocks: a pipe that is already full when ebb starts, so that ebb stops
inside the write(2) of its first log line (`listening`) until the test reads the pipe. That
freezes ebb at a known point of its startup without a sleep.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time

from harness.config import DEFAULT_CONFIG, deep_merge, write_config
from harness.ebb import EBB_BIN, child_env


class BlockedStderrEbb:
    """ebb started with a full stderr pipe; `read_all` unblocks it, `stop` kills it by pid."""

    def __init__(self, upstream_port: int, config: dict):
        self.config = deep_merge(DEFAULT_CONFIG, {"upstream": f"127.0.0.1:{upstream_port}",
                                                  **config})
        self.tmpdir = tempfile.mkdtemp(prefix="ebb-e2e-blocked-")
        self.config_path = os.path.join(self.tmpdir, "ebb.yaml")
        write_config(self.config_path, self.config)
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
        self.proc = subprocess.Popen([EBB_BIN, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=w, env=child_env(), cwd=self.tmpdir)
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
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.r], [], [], 0.05)
            if r:
                chunk = os.read(self.r, 65536)
                if not chunk:
                    break
                buf += chunk
        self.output += bytes(buf)
        return bytes(buf)

    def log_lines(self) -> list:
        out = []
        for line in self.output.split(b"\n"):
            line = line.lstrip(b"#")
            if line.startswith(b"{"):
                try:
                    out.append(json.loads(line))
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
        shutil.rmtree(self.tmpdir, ignore_errors=True)
