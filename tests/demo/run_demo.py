#!/usr/bin/env python3
"""`make run`: the demo app on 127.0.0.1:3000 with ebb in front of it, ebb's log on the terminal.

Usage: run_demo.py EBB_BIN CONFIG

Ctrl-C sends SIGTERM to ebb, which drains (in-flight requests finish) and exits; then the app is
stopped. A second Ctrl-C sends SIGINT to ebb, which then exits at once. Both children run in their
own process group, so the terminal's Ctrl-C reaches only this script and the order stays ours.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_APP_PORT = 3000
START_TIMEOUT = 20.0
APP_STOP_TIMEOUT = 5.0

out_lock = threading.Lock()


def say(text, stream=None):
    stream = stream or sys.stdout
    with out_lock:
        stream.write(text + "\n")
        stream.flush()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def app_port_from(config):
    """The upstream port when the config points at loopback, else the demo app's default."""
    try:
        text = Path(config).read_text()
    except OSError:
        return DEFAULT_APP_PORT
    m = re.search(r"""^upstream:\s*["']?(?:127\.0\.0\.1|localhost):(\d+)""", text, re.M)
    return int(m.group(1)) if m else DEFAULT_APP_PORT


def listening_ports(line):
    """(proxy port, admin port) from ebb's `listening` line, JSON or text; None when it is not one."""
    line = line.strip()
    if line.startswith("{"):
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if rec.get("msg") != "listening":
            return None
        fields = {k: str(v) for k, v in rec.items()}
    elif re.search(r"\blistening\b", line):
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
    else:
        return None

    def port(key, default):
        m = re.search(r":(\d+)\"?$", fields.get(key, ""))
        return int(m.group(1)) if m else default

    return port("proxy", 8080), port("admin", 9901)


class Relay(threading.Thread):
    """Copies ebb's stderr to ours, and notices the `listening` line."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.listening = threading.Event()
        self.ports = (8080, 9901)

    def run(self):
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            say("ebb | " + line, sys.stderr)
            if not self.listening.is_set():
                ports = listening_ports(line)
                if ports:
                    self.ports = ports
                    self.listening.set()


def die_with_parent():
    """Runs in each child before exec: if this script is killed outright, the child gets SIGTERM."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def stop_app(app):
    if app.poll() is not None:
        return
    app.send_signal(signal.SIGTERM)
    try:
        app.wait(APP_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        app.kill()
        app.wait()


def main():
    if len(sys.argv) != 3:
        say(__doc__.strip(), sys.stderr)
        return 2
    ebb_bin, config = sys.argv[1], sys.argv[2]
    if not os.access(ebb_bin, os.X_OK):
        say(f"run_demo: {ebb_bin} is not an executable; run `make build` first", sys.stderr)
        return 2
    app_port = app_port_from(config)
    if port_open(app_port):
        say(f"run_demo: something already listens on 127.0.0.1:{app_port}; stop it first", sys.stderr)
        return 1

    signals = []  # SIGINT/SIGTERM received here, handled by the main loop
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: signals.append(signum))

    app = subprocess.Popen([sys.executable, str(HERE / "app.py"), str(app_port)], start_new_session=True,
                           preexec_fn=die_with_parent)
    ebb = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(app_port):
            if app.poll() is not None or signals or time.monotonic() > deadline:
                say(f"run_demo: the demo app did not start on 127.0.0.1:{app_port}", sys.stderr)
                return 1
            time.sleep(0.05)

        # Only the demo's config reaches ebb: an EBB_* variable of the caller's (EBB_BIN) is no key.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
        ebb = subprocess.Popen([ebb_bin, "--config", config], stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=die_with_parent, env=env)
        relay = Relay(ebb.stderr)
        relay.start()
        while not relay.listening.wait(0.05):
            if ebb.poll() is not None or signals or time.monotonic() > deadline:
                break
        if not relay.listening.is_set():
            if ebb.poll() is None:
                ebb.send_signal(signal.SIGINT if signals else signal.SIGTERM)
            code = ebb.wait()
            relay.join(2)
            say(f"run_demo: ebb did not report `listening` (exit code {code})", sys.stderr)
            return 1

        proxy, admin = relay.ports
        say(f"""
ebb is up (pid {ebb.pid}) in front of the demo app (pid {app.pid}). Try, in another terminal:
  curl -i localhost:{proxy}/
  curl localhost:{admin}/readyz
  curl localhost:{admin}/metrics
  curl -i 'localhost:{proxy}/slow?s=3'
  curl 'localhost:{admin}/drain?wait=true'
Ctrl-C here drains ebb and stops both (a second Ctrl-C makes ebb exit at once).
""")
        handled = 0
        while ebb.poll() is None:
            time.sleep(0.05)
            while handled < len(signals):
                handled += 1
                if handled == 1:
                    say("run_demo: sending SIGTERM to ebb; it drains, then exits", sys.stderr)
                    ebb.send_signal(signal.SIGTERM)
                else:
                    say("run_demo: sending SIGINT to ebb: exit now", sys.stderr)
                    ebb.send_signal(signal.SIGINT)
        code = ebb.returncode
        relay.join(2)
        if not signals:
            say(f"run_demo: ebb exited by itself (code {code}); stopping the app", sys.stderr)
        if code != 0:
            say(f"run_demo: ebb exited with {'signal ' + str(-code) if code < 0 else 'code ' + str(code)}",
                sys.stderr)
        return 0 if code == 0 else 1
    finally:
        if ebb is not None and ebb.poll() is None:
            ebb.kill()
            ebb.wait()
        stop_app(app)


if __name__ == "__main__":
    sys.exit(main())
