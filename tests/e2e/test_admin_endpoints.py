"""SPEC §3 / issue 3, the admin endpoints: /healthz, /readyz, /metrics, and /drain (GET and POST,
`?wait=true` answered when drained with the JSON summary). After a /drain ebb stays up in
`drained` (healthz 200, readyz 503 drained) and exits at once on the following SIGTERM; waiters
are answered whatever triggered the drain."""

import json
import signal
import time
import unittest

from harness.admin import admin_request, healthz, poll_readyz, readyz, scrape
from harness.case import LifecycleCase
from harness.client import HttpClient, try_connect
from harness.config import DRAIN_TIMEOUT, PROPAGATION_DELAY
from harness.handlers import never_answer, ok
from harness.http import build_request
from harness.lifecycle import EARLY, assert_lifecycle_once, exit_timed
from harness.wait import dl


class AdminCase(LifecycleCase):
    def admin_client(self, ebb) -> HttpClient:
        return self.connect(ebb.admin_port, timeout=dl(10))

    def assert_sigterm_exits_at_once(self, ebb, msg: str):
        """ebb drained (by /drain) and waits: a SIGTERM now ends it at once, exit 0."""
        t1 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        code, elapsed = exit_timed(ebb, t1, dl(10))
        self.assertEqual(code, 0)
        self.assertLessEqual(elapsed, dl(1.5), msg)
        assert_lifecycle_once(self, ebb)

    def summary(self, resp) -> dict:
        self.assertEqual(resp.status, 200, f"{resp!r} {resp.body!r}")
        self.assertIn("application/json", resp.header("Content-Type", ""), resp)
        doc = json.loads(resp.body)
        self.assertEqual(set(doc), {"drained_requests", "cut_requests", "unanswered_requests", "seconds"}, doc)
        return doc


class Endpoints(AdminCase):
    def test_healthz_readyz_metrics_and_unknown_paths(self):
        fake, ebb = self.proxy(ok())
        r = admin_request(ebb, "GET", "/healthz")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        r = admin_request(ebb, "GET", "/readyz")
        self.assertEqual((r.status, r.body.strip()), (200, b"ready"))
        r = admin_request(ebb, "GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("Content-Type", "").startswith("text/plain"), r)
        self.assertIn(b"ebb_requests_total", r.body)
        r = admin_request(ebb, "GET", "/nope")
        self.assertEbbError(r, 404, "an unknown admin path")
        r = admin_request(ebb, "POST", "/healthz")
        self.assertEbbError(r, 405, "POST /healthz")
        r = admin_request(ebb, "PUT", "/drain")
        self.assertEbbError(r, 405, "PUT /drain")
        self.assertEqual(readyz(ebb), (200, "ready"), "a refused method starts no drain")

    def test_get_drain_then_stays_drained_until_sigterm_exits_at_once(self):
        fake, ebb = self.proxy(ok())
        t0 = time.monotonic()
        r = admin_request(ebb, "GET", "/drain")
        self.assertEqual((r.status, r.body.strip()), (202, b"draining"), r)
        self.assertEqual(readyz(ebb), (503, "draining"))
        rec = ebb.wait_log("drain started", dl(2))
        self.assertEqual(rec.get("trigger"), "admin", rec)
        t_drained = poll_readyz(ebb, 503, "drained", dl(5))
        self.assertGreaterEqual(t_drained - t0, PROPAGATION_DELAY - EARLY)
        self.assertEqual(try_connect(ebb.proxy_port), "refused", "drained: no proxy listener")
        # It stays up in drained: probes answer, nothing exits by itself.
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            self.assertEqual(healthz(ebb), (200, "ok"))
            self.assertEqual(readyz(ebb), (503, "drained"))
            time.sleep(0.05)
        self.assertTrue(ebb.alive(), "after /drain ebb must stay up until SIGTERM")
        self.assertEqual(ebb.logs("exiting"), [])
        self.assertEqual(scrape(ebb).value("ebb_lifecycle_state", {"state": "drained"}), 1)
        self.assert_sigterm_exits_at_once(ebb, "SIGTERM after /drain must exit at once")

    def test_drain_wait_answers_after_the_drain_with_the_summary(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate)
        c = self.hold(ebb, gate)
        w = self.admin_client(ebb)
        t0 = time.monotonic()
        w.send(build_request("GET", "/drain?wait=true"))
        ebb.wait_log("listener closed", dl(5))
        self.assertFalse(w.wait_closed(0.2), "/drain?wait=true answered before the drain ended: "
                                             f"{w.after_close!r}")
        t_release = time.monotonic()
        gate.release()
        self.assertOk(c.read_response(timeout=dl(5)), b"released")
        c.close()
        resp = w.read_response(timeout=dl(10))
        t_answer = time.monotonic()
        doc = self.summary(resp)
        self.assertGreaterEqual(t_answer, t_release)
        self.assertEqual((doc["drained_requests"], doc["cut_requests"]), (1, 0), doc)
        self.assertGreaterEqual(doc["seconds"], t_release - t0 - 0.05, doc)
        self.assertLessEqual(doc["seconds"], t_answer - t0 + 0.05, doc)
        self.assertEqual(readyz(ebb), (503, "drained"))
        self.assertTrue(ebb.alive())
        self.assert_sigterm_exits_at_once(ebb, "SIGTERM after the drain must exit at once")

    def test_post_drain_wait_reports_a_cut_request(self):
        fake, ebb = self.proxy(never_answer)
        c = self.connect(ebb)
        c.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        fake.wait_requests(1, dl(5))
        w = self.admin_client(ebb)
        t0 = time.monotonic()
        w.send(build_request("POST", "/drain?wait=true", body=b""))
        doc = self.summary(w.read_response(timeout=dl(15)))
        self.assertEqual((doc["drained_requests"], doc["cut_requests"]), (0, 1), doc)
        self.assertGreaterEqual(doc["seconds"], PROPAGATION_DELAY + DRAIN_TIMEOUT - EARLY, doc)
        self.assertGreaterEqual(time.monotonic() - t0, PROPAGATION_DELAY + DRAIN_TIMEOUT - EARLY)
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_drain_cut_requests_total"), 1)
        self.assertEqual(ex.value("ebb_lifecycle_state", {"state": "drained"}), 1)
        self.assertEqual(ex.value("ebb_requests_in_flight"), 0)
        self.assertTrue(c.wait_closed(dl(2)))
        self.assertEqual(ebb.wait_log("drained", dl(2)).get("cut"), 1)
        t1 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        code, elapsed = exit_timed(ebb, t1, dl(10))
        self.assertLessEqual(elapsed, dl(1.5))
        self.assertEqual(code, 1, "a request was cut during this drain: exit 1")
        assert_lifecycle_once(self, ebb)

    def test_waiter_is_answered_when_sigterm_started_the_drain(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate)
        c = self.hold(ebb, gate)
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("drain started", dl(2))
        w = self.admin_client(ebb)
        w.send(build_request("GET", "/drain?wait=true"))
        ebb.wait_log("listener closed", dl(5))
        gate.release()
        self.assertOk(c.read_response(timeout=dl(5)), b"released")
        c.close()
        doc = self.summary(w.read_response(timeout=dl(10)))
        self.assertEqual((doc["drained_requests"], doc["cut_requests"]), (1, 0), doc)
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 0)
        self.assertEqual(ebb.logs("drain started")[0].get("trigger"), "SIGTERM")
        assert_lifecycle_once(self, ebb)

    def test_sigterm_during_an_admin_drain_exits_when_drained_after_answering(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate)
        c = self.hold(ebb, gate)
        w = self.admin_client(ebb)
        w.send(build_request("GET", "/drain?wait=true"))
        ebb.wait_log("drain started", dl(2))
        ebb.signal(signal.SIGTERM)  # the kubelet's SIGTERM, while the preStop hook still waits
        ebb.wait_log("listener closed", dl(5))
        self.assertTrue(ebb.alive(), "SIGTERM during a drain does not cut it short")
        gate.release()
        self.assertOk(c.read_response(timeout=dl(5)), b"released")
        c.close()
        doc = self.summary(w.read_response(timeout=dl(10)))
        self.assertEqual((doc["drained_requests"], doc["cut_requests"]), (1, 0), doc)
        code, _ = exit_timed(ebb, time.monotonic(), dl(10))
        self.assertEqual(code, 0, "drained after a SIGTERM: exit without waiting for another")
        assert_lifecycle_once(self, ebb)

    def test_waiter_is_answered_before_a_second_sigint_exits(self):
        fake, ebb = self.proxy(never_answer, {"shutdown": {"drain_timeout": "10s"}})
        c = self.connect(ebb)
        c.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        fake.wait_requests(1, dl(5))
        w = self.admin_client(ebb)
        w.send(build_request("GET", "/drain?wait=true"))
        ebb.wait_log("drain started", dl(2))
        ebb.signal(signal.SIGINT)   # the first SIGINT during a drain is the "second" one
        code, _ = exit_timed(ebb, time.monotonic(), dl(5))
        # SPEC §3: waiters are answered before the process exits, whatever ended the drain.
        resp = w.read_response(timeout=dl(2))
        self.assertIn(resp.status, (200, 503), f"the waiter got {resp!r} {resp.body!r}")
        if resp.status == 200:
            doc = self.summary(resp)
            self.assertEqual(doc["cut_requests"], 1, doc)
        self.assertEqual(code, 1)

    def test_drain_again_once_drained(self):
        fake, ebb = self.proxy(ok())
        self.assertEqual(admin_request(ebb, "POST", "/drain").status, 202)
        poll_readyz(ebb, 503, "drained", dl(5))
        t = time.monotonic()
        doc = self.summary(admin_request(ebb, "GET", "/drain?wait=true"))
        self.assertLess(time.monotonic() - t, dl(1), "already drained: answered at once")
        self.assertEqual((doc["drained_requests"], doc["cut_requests"]), (0, 0), doc)
        r = admin_request(ebb, "GET", "/drain")
        self.assertIn(r.status, (200, 202), r)
        ebb.wait_log("drain started", dl(2))
        self.assertEqual(len(ebb.logs("drain started")), 1, "a drain starts once")
        self.assertEqual(readyz(ebb), (503, "drained"))


if __name__ == "__main__":
    unittest.main()
