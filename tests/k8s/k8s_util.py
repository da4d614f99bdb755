# Shared by the tests/k8s/ scripts that drive `ebb check-k8s` and `ebb inject`: the binary, a
# run without the caller's EBB_* variables (they would change the verdict), and the tally.
import os
import subprocess
import sys


def ebb_binary():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EBB_BIN", "")
    if not binary or not os.access(binary, os.X_OK):
        print("FAIL: no ebb binary (pass its path or set EBB_BIN)")
        sys.exit(1)
    return binary


def run(cmd, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBB_")}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)


class Tally:
    def __init__(self):
        self.passes = 0
        self.failures = []

    def expect(self, name, ok, r=None):
        if ok:
            self.passes += 1
            print("ok   " + name)
            return
        self.failures.append(name)
        detail = "" if r is None else "\nexit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
        print("FAIL " + name + detail)

    def finish(self):
        print("%d passed, %d failed" % (self.passes, len(self.failures)))
        sys.exit(1 if self.failures else 0)
