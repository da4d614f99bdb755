"""SPEC §2 / issue 3, readiness: `starting` (503) until the upstream check passes, then `ready`;
`upstream unavailable` (503) after readiness.failure_threshold failed checks at
readiness.interval, `ready` again when the app is back; /healthz 200 throughout. Both check
kinds: `tcp` (connect) and `http` (GET readiness.http_path, 2xx/3xx is ready)."""

import signal
import threading
import time
import unittest

from harness.admin import healthz, poll_readyz, readyz, scrape
from harness.case import EbbTestCase
from harness.client import unused_port
from harness.handlers import answer_target, ok, route
from harness.lifecycle import EARLY, wait_exit
from harness.wait import dl

INTERVAL = 0.2
THRESHOLD = 3


def readiness(kind: str, **extra) -> dict:
    return {"readiness": {"upstream_check": kind, "interval": f"{int(INTERVAL * 1000)}ms",
                          "failure_threshold": THRESHOLD, **extra},
            "upstream_retry": {"connect_retry_budget": "0s"}}


class Switch:
    """An app health endpoint whose status the test sets."""

    def __init__(self, status: int):
        self.status = status
        self.hits = 0
        self.lock = threading.Lock()

    def __call__(self, req, conn):
        req.read_body()
        with self.lock:
            self.hits += 1
            status = self.status
        return conn.respond(status, b"health %d" % status)


class Readiness(EbbTestCase):
    def _states_until(self, ebb, until: float) -> set:
        """Polls /readyz and /healthz until `until`; returns the set of readyz answers (and
        fails on any healthz answer other than 200 ok)."""
        seen = set()
        while time.monotonic() < until:
            seen.add(readyz(ebb))
            self.assertEqual(healthz(ebb), (200, "ok"))
            time.sleep(0.02)
        return seen

    def test_tcp_starting_until_the_app_listens_then_ready(self):
        port = unused_port()
        ebb = self.start_ebb(port, readiness("tcp"))
        self.assertEqual(readyz(ebb), (503, "starting"))
        seen = self._states_until(ebb, time.monotonic() + 4 * INTERVAL)
        self.assertEqual(seen, {(503, "starting")}, "no app yet: starting, and only that")
        self.assertEqual(scrape(ebb).value("ebb_lifecycle_state", {"state": "starting"}), 1)
        self.assertEqual(ebb.logs("ready"), [])
        t_up = time.monotonic()
        self.start_fake(ok(), port=port)
        t_ready = poll_readyz(ebb, 200, "ready", dl(5))
        self.assertLessEqual(t_ready - t_up, INTERVAL + dl(1.0),
                             "ready within about one check interval of the app listening")
        ebb.wait_log("ready", dl(1))
        self.assertEqual(scrape(ebb).value("ebb_lifecycle_state", {"state": "ready"}), 1)
        self.assertEqual(len(ebb.logs("ready")), 1)

    def test_tcp_app_down_then_back(self):
        fake = self.start_fake(answer_target)
        port = fake.port
        ebb = self.start_ebb(fake, readiness("tcp"))
        poll_readyz(ebb, 200, "ready", dl(5))
        fake.stop()
        t_down = time.monotonic()
        t_unavail = poll_readyz(ebb, 503, "upstream unavailable", dl(5))
        # failure_threshold checks in a row, one per interval: not before (threshold-1) intervals.
        self.assertGreaterEqual(t_unavail - t_down, (THRESHOLD - 1) * INTERVAL - EARLY,
                                f"unavailable after {t_unavail - t_down:.3f}s: fewer than "
                                f"{THRESHOLD} failed checks {INTERVAL}s apart")
        self.assertLessEqual(t_unavail - t_down, THRESHOLD * INTERVAL + dl(1.5))
        rec = ebb.wait_log("upstream unavailable", dl(1))
        self.assertEqual(rec.get("level"), "warn", rec)
        self.assertEqual(healthz(ebb), (200, "ok"), "healthz stays 200 while the app is down")
        seen = self._states_until(ebb, time.monotonic() + 2 * INTERVAL)
        self.assertEqual(seen, {(503, "upstream unavailable")})
        # The app comes back on the same port.
        t_back = time.monotonic()
        fake2 = self.start_fake(answer_target, port=port)
        t_ready = poll_readyz(ebb, 200, "ready", dl(5))
        self.assertLessEqual(t_ready - t_back, INTERVAL + dl(1.0),
                             "one good check is enough to be ready again")
        ebb.wait_log("upstream available again", dl(1))
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/again"), b"/again")
        self.assertEqual(len(ebb.logs("upstream unavailable")), 1)
        self.assertEqual(len(ebb.logs("upstream available again")), 1)
        self.assertEqual(len(ebb.logs("ready")), 1, "`ready` is logged once per process")

    def test_http_check_uses_http_path_status_decides(self):
        health = Switch(503)
        fake = self.start_fake(route({"/custom/health": health}, default=answer_target))
        ebb = self.start_ebb(fake, readiness("http", http_path="/custom/health"))
        # The app answers, but its health endpoint says 503: still starting.
        fake.wait_for(lambda: health.hits >= 2, dl(5), "two health checks at the app")
        self.assertEqual(readyz(ebb), (503, "starting"))
        # Requests are forwarded while starting (SPEC §2).
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/while-starting"), b"/while-starting")
        checks = [r for r in fake.requests if r.target == "/custom/health"]
        self.assertTrue(checks and all(r.method == "GET" for r in checks), checks)
        health.status = 200
        poll_readyz(ebb, 200, "ready", dl(5))
        # 500 from the health endpoint: unavailable after exactly the threshold of failures.
        with health.lock:
            health.status = 500
            t_bad = time.monotonic()
            n_before = health.hits
        t_unavail = poll_readyz(ebb, 503, "upstream unavailable", dl(5))
        with health.lock:
            failed = health.hits - n_before
        self.assertGreaterEqual(t_unavail - t_bad, (THRESHOLD - 1) * INTERVAL - EARLY)
        # One check may have been on its way when the status changed (it may fail another
        # way, e.g. its 200ms timeout on a loaded machine); every later one got a 500.
        self.assertGreaterEqual(failed, THRESHOLD - 1,
                                f"unavailable after {failed} failed checks (failure_threshold {THRESHOLD})")
        rec = ebb.wait_log("upstream unavailable", dl(2))
        self.assertEqual(rec.get("failures"), THRESHOLD, rec)
        # Checks come one per interval, not faster. Timestamps taken by the fake's threads
        # can each be late on a loaded machine, so the count over the whole span is checked.
        times = [r.received_at for r in fake.requests if r.target == "/custom/health"]
        span = times[-1] - times[0]
        self.assertLessEqual((len(times) - 1) * INTERVAL, span + 0.15,
                             f"{len(times)} health checks in {span:.3f}s (interval {INTERVAL}s)")
        self.assertEqual(healthz(ebb), (200, "ok"))
        # A 3xx counts as healthy (SPEC: 2xx or 3xx).
        health.status = 302
        poll_readyz(ebb, 200, "ready", dl(5))
        ebb.wait_log("upstream available again", dl(2))
        self.assertEqual(len(ebb.logs("upstream unavailable")), 1)
        self.assertEqual(len(ebb.logs("upstream available again")), 1)

    def test_http_check_app_down_and_back(self):
        health = Switch(200)
        fake = self.start_fake(route({"/healthz": health}, default=answer_target))
        port = fake.port
        ebb = self.start_ebb(fake, readiness("http"))  # default http_path: /healthz
        poll_readyz(ebb, 200, "ready", dl(5))
        self.assertGreater(health.hits, 0, "the default http_path is /healthz")
        fake.stop()
        t_down = time.monotonic()
        t_unavail = poll_readyz(ebb, 503, "upstream unavailable", dl(5))
        self.assertGreaterEqual(t_unavail - t_down, (THRESHOLD - 1) * INTERVAL - EARLY)
        self.start_fake(route({"/healthz": health}, default=answer_target), port=port)
        poll_readyz(ebb, 200, "ready", dl(5))

    def test_hung_app_is_unavailable(self):
        # An app that accepts but never answers its health check (hung): each check times out.
        gate_hit = threading.Event()
        stop = threading.Event()
        self.on_teardown(stop.set)

        def hang(req, conn):
            req.read_body()
            gate_hit.set()
            stop.wait(dl(30))
            return "close"
        health = Switch(200)
        state = {"hung": False}

        def healthz_route(req, conn):
            return hang(req, conn) if state["hung"] else health(req, conn)
        fake = self.start_fake(route({"/healthz": healthz_route}, default=answer_target))
        ebb = self.start_ebb(fake, readiness("http"))
        poll_readyz(ebb, 200, "ready", dl(5))
        state["hung"] = True
        poll_readyz(ebb, 503, "upstream unavailable", dl(5))
        self.assertTrue(gate_hit.is_set())
        state["hung"] = False
        poll_readyz(ebb, 200, "ready", dl(5))

    def test_sigterm_while_starting_drains(self):
        health = Switch(503)  # the app answers, but is not healthy: ebb stays starting
        fake = self.start_fake(route({"/healthz": health}, default=answer_target))
        ebb = self.start_ebb(fake, {**readiness("http"), "shutdown": {
            "propagation_delay": "300ms", "quiet_period": "100ms", "propagation_max": "1s",
            "drain_timeout": "1s"}})
        # ebb installs its signal handlers before its first check: a check at the app proves
        # they are in place (`listening` is logged before them).
        fake.wait_for(lambda: health.hits >= 1, dl(5), "the first readiness check")
        self.assertEqual(readyz(ebb), (503, "starting"))
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        self.assertEqual(wait_exit(ebb, dl(10)), 0)
        self.assertEqual(ebb.logs("ready"), [], "never ready")
        for msg in ("drain started", "listener closed", "drained", "exiting"):
            self.assertEqual(len(ebb.logs(msg)), 1, msg)

    def test_check_none_is_ready_at_once(self):
        ebb = self.start_ebb(unused_port(), {"readiness": {"upstream_check": "none"}})
        ebb.wait_log("ready", dl(5))
        self.assertEqual(readyz(ebb), (200, "ready"))


if __name__ == "__main__":
    unittest.main()
