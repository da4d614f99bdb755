#!/usr/bin/env python3
# Smoke test of the static binary the Dockerfile ships (`make static` = `make build`: build/ebb). No
# Docker engine runs here, so this stands in for the image: the binary may need nothing beyond
# what the final image (distroless, glibc only) provides, and it must proxy and drain cleanly.
#
#   python3 tests/k8s/test_static_smoke.py [BINARY]     (default: $EBB_STATIC_BIN)
import http.server
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

# The libc6 package of the final image's base (gcr.io/distroless/base-nossl-debian12): glibc
# and its loader. libstdc++, libgcc_s, libuv and yaml-cpp must be linked in.
ALLOWED = {
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}
TIMEOUT = 20.0


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check_dynamic_deps(binary):
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)
    if not needed:
        fail("readelf found no NEEDED entries: is %s a dynamic executable at all?" % binary)
    extra = sorted(set(needed) - ALLOWED)
    if extra:
        fail("%s needs %s, which the final image does not provide" % (binary, ", ".join(extra)))
    # ldd also follows what the loader would load, and says "not found" for what is missing.
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
    for line in ldd.stdout.splitlines():
        name = line.strip().split(" ")[0]
        if "not found" in line:
            fail("ldd: " + line.strip())
        base = os.path.basename(name)
        if base and base not in ALLOWED and not base.startswith("linux-vdso") \
                and not base.startswith("linux-gate"):
            fail("ldd: %s loads %s, which the final image does not provide" % (binary, base))
    print("ok: dynamic dependencies are only %s" % ", ".join(sorted(set(needed))))


class Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from upstream\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def read_stderr(proc, lines):
    for raw in proc.stderr:
        lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    lines.put(None)


def wait_for_line(lines, seen, predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            fail("ebb exited while waiting for %s; stderr:\n%s" % (what, "\n".join(seen)))
        seen.append(line)
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if predicate(obj):
            return obj
    fail("no %s within %.0fs; stderr:\n%s" % (what, TIMEOUT, "\n".join(seen)))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EBB_STATIC_BIN", "")
    if not binary:
        fail("no binary: pass its path or set EBB_STATIC_BIN (make static builds build/ebb)")
    if not os.access(binary, os.X_OK):
        fail("%s is missing or not executable: run `make static`" % binary)
    check_dynamic_deps(binary)

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proc = None
    try:
        with tempfile.TemporaryDirectory(prefix="ebb-static-smoke-") as tmp:
            config = os.path.join(tmp, "ebb.yaml")
            with open(config, "w") as f:
                f.write("listen: 127.0.0.1:0\n"
                        "upstream: 127.0.0.1:%d\n"
                        "admin: {listen: 127.0.0.1:0}\n"
                        "shutdown: {propagation_delay: 0s, quiet_period: 0s, drain_timeout: 2s}\n"
                        "log: {format: json, level: info}\n" % upstream.server_address[1])
            # ebb reads every EBB_* variable as config and refuses unknown ones (EBB_STATIC_BIN).
            env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
            proc = subprocess.Popen([binary, "--config", config], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            lines, seen = queue.Queue(), []
            threading.Thread(target=read_stderr, args=(proc, lines), daemon=True).start()
            listening = wait_for_line(lines, seen, lambda o: o.get("msg") == "listening",
                                      "\"listening\" log line")
            proxy, admin = listening["proxy"], listening["admin"]
            print("ok: listening, proxy %s admin %s" % (proxy, admin))

            with urllib.request.urlopen("http://%s/hello" % proxy, timeout=TIMEOUT) as r:
                body = r.read()
                if r.status != 200 or body != b"hello from upstream\n":
                    fail("proxied answer %d %r" % (r.status, body))
            print("ok: proxied GET /hello -> 200 from the upstream")
            print("measured: idle RSS after one request: %d KiB" % rss_kib(proc.pid))

            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                fail("ebb did not exit within %.0fs of SIGTERM; stderr:\n%s" % (TIMEOUT, "\n".join(seen)))
            if code != 0:
                fail("ebb exited %d after SIGTERM, want 0; stderr:\n%s" % (code, "\n".join(seen)))
            print("ok: SIGTERM -> exit 0")
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        upstream.shutdown()
        upstream.server_close()
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
