"""SPEC §3 / issue 3, who may drain: with admin.drain_token set, every caller needs
`Authorization: Bearer <token>`; without one, loopback callers only; anything else is 403 with
X-Ebb-Error, a `drain refused` warning naming the caller, and ebb_admin_refused_total + 1, and
starts no drain. `ebb drain [--admin] [--wait] [--token]` (SPEC §8): exit 0 when drained (the
JSON summary on stdout), 1 when refused."""

import json
import signal
import subprocess
import time
import unittest

from harness.admin import admin_request, poll_readyz, readyz, scrape
from harness.case import LifecycleCase
from harness.client import unused_port
from harness.ebb import EBB_BIN, child_env, run_cli
from harness.handlers import ok
from harness.lifecycle import assert_lifecycle_once, exit_timed
from harness.wait import dl, wait_until

TOKEN = "s3cret-Token_42"


class AuthCase(LifecycleCase):
    def refused_total(self, ebb):
        return scrape(ebb).value("ebb_admin_refused_total")

    def assertRefused(self, ebb, resp, caller: str, n_before: int, msg: str):
        self.assertEbbError(resp, 403, msg)
        self.assertEqual(self.refused_total(ebb), n_before + 1, f"{msg}: ebb_admin_refused_total")
        # The line is written before the answer, but read from ebb's stderr by another thread.
        recs = wait_until(lambda: len(ebb.logs("drain refused")) > n_before and
                          ebb.logs("drain refused"), dl(2), f"{msg}: a `drain refused` line")
        self.assertEqual(len(recs), n_before + 1, f"{msg}: one `drain refused` line per refusal")
        self.assertEqual(recs[-1].get("level"), "warn", recs[-1])
        self.assertEqual(recs[-1].get("caller"), caller, recs[-1])
        self.assertEqual(readyz(ebb), (200, "ready"), f"{msg}: a refused /drain starts no drain")


class Token(AuthCase):
    def test_token_is_required_from_every_caller_even_loopback(self):
        fake, ebb = self.proxy(ok(), {"admin": {"drain_token": TOKEN}})
        self.assertEqual(self.refused_total(ebb), 0)
        cases = [("no Authorization", []),
                 ("wrong token", [("Authorization", "Bearer wrong")]),
                 ("token prefix", [("Authorization", "Bearer " + TOKEN[:-1])]),
                 ("token plus more", [("Authorization", "Bearer " + TOKEN + "x")]),
                 ("not Bearer", [("Authorization", "Basic " + TOKEN)]),
                 ("token without scheme", [("Authorization", TOKEN)])]
        for i, (what, headers) in enumerate(cases):
            for method, path in (("GET", "/drain"), ("POST", "/drain?wait=true")):
                n = self.refused_total(ebb)
                t = time.monotonic()
                r = admin_request(ebb, method, path, headers)
                self.assertLess(time.monotonic() - t, dl(2), "a refusal is answered at once")
                self.assertRefused(ebb, r, "127.0.0.1", n, f"{what} ({method} {path})")
        self.assertEqual(ebb.logs("drain started"), [])
        r = admin_request(ebb, "GET", "/drain", [("Authorization", "Bearer " + TOKEN)])
        self.assertEqual(r.status, 202, r)
        rec = ebb.wait_log("drain started", dl(2))
        self.assertEqual(rec.get("trigger"), "admin")
        self.assertEqual(readyz(ebb), (503, "draining"))

    def test_lowercase_bearer_scheme_is_accepted(self):
        # RFC 9110 §11.1: the auth scheme is case-insensitive.
        fake, ebb = self.proxy(ok(), {"admin": {"drain_token": TOKEN}})
        r = admin_request(ebb, "POST", "/drain", [("Authorization", "bearer " + TOKEN)])
        self.assertEqual(r.status, 202, r)

    def test_non_loopback_caller_with_the_token_may_drain(self):
        ip = self.non_loopback_ip()
        fake, ebb = self.proxy(ok(), {"admin": {"listen": "0.0.0.0:0", "drain_token": TOKEN}})
        r = admin_request(ebb, "GET", "/drain", host=ip)
        self.assertRefused(ebb, r, ip, 0, f"no token from {ip}")
        # The kubelet's preStop httpGet: from the node's address, with the token.
        r = admin_request(ebb, "GET", "/drain", [("Authorization", "Bearer " + TOKEN)], host=ip)
        self.assertEqual(r.status, 202, r)
        poll_readyz(ebb, 503, "draining", dl(2))


class Loopback(AuthCase):
    def test_without_token_a_non_loopback_caller_is_refused(self):
        ip = self.non_loopback_ip()
        fake, ebb = self.proxy(ok(), {"admin": {"listen": "0.0.0.0:0"}})
        # Probes and metrics are for everyone; only /drain is guarded.
        r = admin_request(ebb, "GET", "/readyz", host=ip)
        self.assertEqual(r.status, 200, r)
        r = admin_request(ebb, "GET", "/drain", host=ip)
        self.assertRefused(ebb, r, ip, 0, f"GET /drain from {ip}")
        r = admin_request(ebb, "POST", "/drain?wait=true", host=ip)
        self.assertRefused(ebb, r, ip, 1, f"POST /drain?wait=true from {ip}")
        # A token in the request does not help when none is configured.
        r = admin_request(ebb, "GET", "/drain", [("Authorization", "Bearer anything")], host=ip)
        self.assertRefused(ebb, r, ip, 2, f"GET /drain with a token from {ip}")
        self.assertEqual(ebb.logs("drain started"), [])
        r = admin_request(ebb, "GET", "/drain")  # from loopback
        self.assertEqual(r.status, 202, r)
        self.assertEqual(ebb.wait_log("drain started", dl(2)).get("trigger"), "admin")

    def test_without_token_loopback_may_drain(self):
        fake, ebb = self.proxy(ok())
        r = admin_request(ebb, "POST", "/drain")
        self.assertEqual((r.status, r.body.strip()), (202, b"draining"), r)
        self.assertEqual(self.refused_total(ebb), 0)
        poll_readyz(ebb, 503, "draining", dl(1))


class DrainCommand(AuthCase):
    def test_ebb_drain_wait_returns_0_when_drained_with_the_summary(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate)
        c = self.hold(ebb, gate)
        proc = subprocess.Popen([EBB_BIN, "drain", "--admin", f"127.0.0.1:{ebb.admin_port}",
                                 "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=child_env())

        def kill():
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=5)
        self.on_teardown(kill)
        ebb.wait_log("listener closed", dl(5))
        self.assertIsNone(proc.poll(), "`ebb drain --wait` returned before the drain ended")
        gate.release()
        self.assertOk(c.read_response(timeout=dl(5)), b"released")
        c.close()
        out, err = proc.communicate(timeout=dl(10))
        self.assertEqual(proc.returncode, 0, f"stdout {out!r} stderr {err!r}")
        doc = json.loads(out)
        self.assertEqual((doc["drained_requests"], doc["cut_requests"]), (1, 0), doc)
        self.assertEqual(readyz(ebb), (503, "drained"))
        t1 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        code, elapsed = exit_timed(ebb, t1, dl(10))
        self.assertEqual(code, 0)
        self.assertLessEqual(elapsed, dl(1.5))
        assert_lifecycle_once(self, ebb)

    def test_ebb_drain_with_a_wrong_token_exits_1_and_starts_nothing(self):
        fake, ebb = self.proxy(ok(), {"admin": {"drain_token": TOKEN}})
        admin = f"127.0.0.1:{ebb.admin_port}"
        for args in (["--token", "wrong"], ["--token", "wrong", "--wait"], []):
            p = run_cli(["drain", "--admin", admin, *args], dl(10))
            self.assertEqual(p.returncode, 1, f"ebb drain {args}: {p!r}")
            self.assertIn("403", p.stderr, p.stderr)
            self.assertEqual(readyz(ebb), (200, "ready"), "nothing started")
        self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), 3)
        p = run_cli(["drain", "--admin", admin, "--token", TOKEN, "--wait"], dl(10))
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(json.loads(p.stdout)["cut_requests"], 0, p.stdout)
        self.assertEqual(readyz(ebb), (503, "drained"))

    def test_ebb_drain_without_wait_returns_at_once(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate)
        c = self.hold(ebb, gate)
        p = run_cli(["drain", "--admin", f"127.0.0.1:{ebb.admin_port}"], dl(5))
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(readyz(ebb), (503, "draining"), "the drain runs on without the client")
        gate.release()
        self.assertOk(c.read_response(timeout=dl(5)), b"released")

    def test_ebb_drain_with_nothing_listening_exits_1(self):
        p = run_cli(["drain", "--admin", f"127.0.0.1:{unused_port()}", "--wait"], dl(5))
        self.assertEqual(p.returncode, 1, p)


if __name__ == "__main__":
    unittest.main()
