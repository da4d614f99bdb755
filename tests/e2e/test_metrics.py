"""SPEC §6 / issue 3, /metrics: valid Prometheus text exposition (every line parses, HELP and TYPE
before each family's samples, one group per family, cumulative histogram) with the SPEC's
families, and figures that move as requests flow: requests by code, in flight during a slow
request, active connections, upstream errors after a 502/504, the duration histogram, the
lifecycle state through a drain, cut requests, build info with the git commit, process_* figures
that match /proc, the last drain's phases, and Debian's `promtool check metrics` on a real scrape
(issue 12)."""

import os
import resource
import subprocess
import time
import unittest

from harness.admin import admin_request, poll_readyz, scrape, wait_metric
from harness.case import LifecycleCase
from harness.client import unused_port
from harness.ebb import REPO_ROOT
from harness.handlers import answer_target, never_answer, ok, route, slow
from harness.lifecycle import wait_ready
from harness.prometheus import parse_prometheus
from harness.wait import dl

FAMILIES = {
    "ebb_requests_total": "counter",
    "ebb_requests_in_flight": "gauge",
    "ebb_connections_active": "gauge",
    "ebb_upstream_errors_total": "counter",
    "ebb_request_duration_seconds": "histogram",
    "ebb_lifecycle_state": "gauge",
    "ebb_drain_cut_requests_total": "counter",
    "ebb_build_info": "gauge",
    "ebb_admin_refused_total": "counter",
    "ebb_admin_unknown_total": "counter",
    "ebb_config_last_reload_success": "gauge",
    "ebb_config_last_reload_timestamp_seconds": "gauge",
    "ebb_config_reloads_total": "counter",
    "ebb_drain_propagation_seconds": "gauge",
    "ebb_drain_phase_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus package; `make deps` installs it
STATES = ("starting", "ready", "draining", "drained")


class Metrics(LifecycleCase):
    def code(self, ex, code: int) -> float:
        return ex.value("ebb_requests_total", {"code": str(code)}) or 0

    def errors(self, ex) -> dict:
        return {l["kind"]: v for l, v in ex.labelled("ebb_upstream_errors_total")}

    def assertState(self, ex, state: str):
        got = {s: ex.value("ebb_lifecycle_state", {"state": s}) for s in STATES}
        self.assertEqual(got, {s: (1 if s == state else 0) for s in STATES},
                         f"ebb_lifecycle_state should be {state}")

    def test_exposition_is_valid_prometheus_text(self):
        fake, ebb = self.proxy(route({"/404": ok(b"no", 404), "/500": ok(b"bad", 500)},
                                     default=answer_target))
        r = admin_request(ebb, "GET", "/metrics")
        self.assertEqual(r.status, 200)
        ctype = r.header("Content-Type", "")
        self.assertTrue(ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype)
        for when in ("idle", "after traffic"):
            text = admin_request(ebb, "GET", "/metrics").body.decode("utf-8")
            ex = parse_prometheus(text)  # raises on any line that is not valid exposition
            for name, kind in FAMILIES.items():
                fam = ex.families.get(name)
                self.assertIsNotNone(fam, f"{when}: family {name} missing:\n{text}")
                self.assertEqual(fam["type"], kind, f"{when}: # TYPE of {name}")
                self.assertTrue(fam["help"], f"{when}: # HELP of {name}")
            if when == "idle":
                c = self.connect(ebb)
                for path in ("/a", "/404", "/500", "/b"):
                    c.request("GET", path)
        self.assertEqual(ex.value("ebb_build_info", {"version": ebb.listening.get("version")}), 1,
                         "ebb_build_info{version} carries the running version")
        self.assertState(ex, "ready")
        buckets = [l["le"] for l, _ in ex.labelled("ebb_request_duration_seconds_bucket")]
        self.assertIn("+Inf", buckets)

    def test_parser_rejects_invalid_exposition(self):
        # The checker itself must be able to fail.
        good = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n"
        parse_prometheus(good)
        for bad in ("a_total 1\n",                                       # no TYPE first
                    good + "# TYPE a_total counter\n",                   # TYPE after samples
                    good.replace("a_total 1", "a_total{x=\"1} 1"),       # broken label
                    good.replace("a_total 1", "a_total one"),            # not a number
                    good + "# HELP b x\n# TYPE b gauge\nb 1\na_total{y=\"2\"} 1\n",  # two groups
                    good + "a_total 2\n",                                # duplicate sample
                    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                    "h_sum 1\nh_count 1\n"):                             # not cumulative
            with self.assertRaises(AssertionError, msg=repr(bad)):
                parse_prometheus(bad)

    def test_requests_total_by_code_and_duration_histogram(self):
        fake, ebb = self.proxy(route({"/404": ok(b"no", 404), "/500": ok(b"bad", 500),
                                      "/20ms": slow(0.02, ok(b"slowish"))},
                                     default=answer_target))
        before = scrape(ebb)
        c = self.connect(ebb)
        for path in ("/a", "/b", "/c", "/404", "/404", "/500"):
            c.request("GET", path)
        after = scrape(ebb)
        self.assertEqual(self.code(after, 200) - self.code(before, 200), 3)
        self.assertEqual(self.code(after, 404) - self.code(before, 404), 2)
        self.assertEqual(self.code(after, 500) - self.code(before, 500), 1)
        dc = lambda ex: ex.value("ebb_request_duration_seconds_count")
        self.assertEqual(dc(after) - dc(before), 6, "one duration observation per request")
        # Requests of at least 20ms each (the app's delay is the behaviour): the sum grows by
        # at least their total (less 1ms each for a millisecond clock), and none of them is in
        # a bucket below 20ms.
        before = after
        for _ in range(5):
            self.assertOk(c.request("GET", "/20ms"), b"slowish")
        after = scrape(ebb)
        le = lambda e, b: e.value("ebb_request_duration_seconds_bucket", {"le": b})
        self.assertEqual(dc(after) - dc(before), 5)
        grew = (after.value("ebb_request_duration_seconds_sum")
                - before.value("ebb_request_duration_seconds_sum"))
        self.assertGreaterEqual(grew, 5 * (0.02 - 0.001),
                                f"5 requests of >= 20ms added only {grew:.4f}s to the sum")
        self.assertEqual(le(after, "0.01") - le(before, "0.01"), 0,
                         "a request of >= 20ms counted in the le=0.01 bucket")
        self.assertEqual(le(after, "+Inf") - le(before, "+Inf"), 5)

    def test_in_flight_and_connections_active_follow_requests(self):
        gate = self.gate()
        fake, ebb = self.proxy(route({"/slow": gate}, default=answer_target))
        ex = scrape(ebb)
        self.assertEqual((ex.value("ebb_requests_in_flight"), ex.value("ebb_connections_active")),
                         (0, 0))
        before = ex
        c1, c2 = self.connect(ebb), self.connect(ebb)
        idle = self.connect(ebb)
        wait_metric(ebb, "ebb_connections_active", None, lambda v: v == 3, dl(5))
        t_start = time.monotonic()
        c1.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 1, dl(5))
        c2.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 2, dl(5))
        fake.wait_for(lambda: gate.count == 2, dl(5), "both slow requests at the app")
        # Held at least 0.3s: the duration is the behaviour observed by the histogram below.
        time.sleep(max(0.0, t_start + 0.3 - time.monotonic()))
        gate.release()
        self.assertOk(c1.read_response(timeout=dl(5)), b"released")
        self.assertOk(c2.read_response(timeout=dl(5)), b"released")
        ex = wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 0, dl(5))
        self.assertEqual(self.code(ex, 200) - self.code(before, 200), 2)
        le = lambda e, b: e.value("ebb_request_duration_seconds_bucket", {"le": b})
        self.assertEqual(le(ex, "0.25") - le(before, "0.25"), 0,
                         "requests that took over 0.3s are not in the le=0.25 bucket")
        self.assertEqual(le(ex, "+Inf") - le(before, "+Inf"), 2)
        self.assertGreaterEqual(ex.value("ebb_request_duration_seconds_sum")
                                - before.value("ebb_request_duration_seconds_sum"), 0.6 - 0.02)
        for c in (c1, c2, idle):
            c.close()
        wait_metric(ebb, "ebb_connections_active", None, lambda v: v == 0, dl(5))

    def test_upstream_errors_after_502_and_504(self):
        ebb = self.start_ebb(unused_port(), {"upstream_retry": {"connect_retry_budget": "0s"}})
        wait_ready(ebb)
        before = scrape(ebb)
        self.assertEqual(sum(self.errors(before).values()), 0)
        r = self.connect(ebb).request("GET", "/x")
        self.assertEbbError(r, 502, "nothing listens upstream")
        ex = scrape(ebb)
        self.assertEqual(self.code(ex, 502), 1)
        grew = {k: v for k, v in self.errors(ex).items() if v}
        self.assertEqual(sum(grew.values()), 1, grew)
        self.assertIn("refused", next(iter(grew)), f"the kind names the cause: {grew}")
        # A hung app: 504 and a timeout kind.
        fake = self.start_fake(never_answer)
        ebb2 = self.start_ebb(fake, {"timeouts": {"upstream_response": "300ms"}})
        wait_ready(ebb2)
        r = self.connect(ebb2).request("GET", "/hang", timeout=dl(5))
        self.assertEbbError(r, 504, "the app never answers")
        ex = scrape(ebb2)
        self.assertEqual(self.code(ex, 504), 1)
        grew = {k: v for k, v in self.errors(ex).items() if v}
        self.assertEqual(sum(grew.values()), 1, grew)
        self.assertIn("timeout", next(iter(grew)), grew)

    def test_lifecycle_state_and_cut_requests_through_a_drain(self):
        gate = self.gate()
        fake, ebb = self.proxy(route({"/slow": gate, "/hang": never_answer}))
        self.assertState(scrape(ebb), "ready")
        self.assertEqual(scrape(ebb).value("ebb_drain_cut_requests_total"), 0)
        held = self.connect(ebb)
        held.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        hung = self.connect(ebb)
        hung.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        fake.wait_requests(2, dl(5))
        self.assertEqual(admin_request(ebb, "GET", "/drain").status, 202)
        self.assertState(scrape(ebb), "draining")
        ebb.wait_log("listener closed", dl(5))
        self.assertState(scrape(ebb), "draining")
        gate.release()
        self.assertOk(held.read_response(timeout=dl(5)), b"released")
        poll_readyz(ebb, 503, "drained", dl(10))
        ex = scrape(ebb)
        self.assertState(ex, "drained")
        self.assertEqual(ex.value("ebb_drain_cut_requests_total"), 1, "the hung request was cut")
        self.assertEqual(ex.value("ebb_requests_in_flight"), 0)
        self.assertEqual(ex.value("ebb_connections_active"), 0)
        self.assertEqual(self.code(ex, 200), 1)

    def test_promtool_check_metrics_passes_on_a_real_scrape(self):
        self.assertTrue(os.access(PROMTOOL, os.X_OK), f"{PROMTOOL} missing: `make deps` installs prometheus")

        def promtool(text: str) -> subprocess.CompletedProcess:
            return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                                  text=True, timeout=dl(30))
        # Negative control: promtool's linter does fail on a fault ebb could make.
        bad = promtool("# HELP ebb_x_seconds x\n# TYPE ebb_x_seconds counter\nebb_x_seconds 1\n")
        self.assertNotEqual(bad.returncode, 0, bad)
        # Every family populated: requests of several codes, an upstream error, a refused and an
        # unknown admin call, a reload, then a drain.
        fake, ebb = self.proxy(route({"/404": ok(b"no", 404)}, default=answer_target),
                               {"admin": {"drain_token": "t0k"}})
        c = self.connect(ebb)
        for path in ("/a", "/404", "/b"):
            c.request("GET", path)
        c.close()
        self.assertEqual(admin_request(ebb, "GET", "/drain").status, 403)
        self.assertEqual(admin_request(ebb, "GET", "/nope").status, 404)
        self.assertEqual(admin_request(ebb, "POST", "/reload?token=t0k").status, 200)
        for when in ("ready", "drained"):
            if when == "drained":
                self.assertEqual(admin_request(ebb, "GET", "/drain?wait=true&token=t0k").status, 200)
            text = admin_request(ebb, "GET", "/metrics").body.decode("utf-8")
            for name in FAMILIES:
                self.assertIn(f"# TYPE {name} ", text)
            p = promtool(text)
            self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""), f"{when}: promtool on\n{text}")

    def test_build_info_carries_the_git_commit(self):
        fake, ebb = self.proxy(ok())
        commit = ebb.listening.get("commit")
        self.assertTrue(commit, ebb.listening)
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_build_info", {"version": ebb.listening["version"], "commit": commit}), 1)
        if (REPO_ROOT / ".git").exists():
            # Built from this checkout: a commit git knows (not necessarily HEAD: the binary may be
            # older than the last commit).
            self.assertRegex(commit, r"^[0-9a-f]{12}$")
            p = subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", commit + "^{commit}"],
                               capture_output=True, timeout=dl(10))
            self.assertEqual(p.returncode, 0, f"ebb_build_info commit {commit} is not a commit of this repo")
        else:
            self.assertEqual(commit, "unknown")

    def test_process_metrics_match_proc(self):
        t0 = time.time()
        fake, ebb = self.proxy(answer_target)
        c = self.connect(ebb)
        for i in range(200):
            c.request("GET", f"/{i}")
        ex = scrape(ebb)
        pid = ebb.pid
        ticks = os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        self.assertAlmostEqual(ex.value("process_cpu_seconds_total"), cpu, delta=0.1)
        rss = ebb.rss_kib() * 1024
        self.assertAlmostEqual(ex.value("process_resident_memory_bytes"), rss, delta=rss * 0.25)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        # The scrape's own admin connection is open while ebb counts.
        self.assertIn(ex.value("process_open_fds") - fds, (0, 1, 2), (ex.value("process_open_fds"), fds))
        self.assertEqual(ex.value("process_max_fds"), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        start = ex.value("process_start_time_seconds")
        self.assertGreaterEqual(start, t0 - 1.5, "started before the test began")
        self.assertLessEqual(start, time.time() + 0.5)
        # More open connections show.
        more = [self.connect(ebb) for _ in range(5)]
        for m in more:
            m.request("GET", "/x")
        self.assertGreaterEqual(scrape(ebb).value("process_open_fds"), ex.value("process_open_fds") + 5 - 1)

    def test_last_drain_phases_as_gauges(self):
        fake, ebb = self.proxy(ok())
        ex = scrape(ebb)
        self.assertEqual((ex.value("ebb_drain_propagation_seconds"), ex.value("ebb_drain_phase_seconds")), (0, 0))
        self.assertEqual(admin_request(ebb, "GET", "/drain?wait=true").status, 200)
        closed = ebb.wait_log("listener closed", dl(2))
        drained = ebb.wait_log("drained", dl(2))
        ex = scrape(ebb)
        self.assertAlmostEqual(ex.value("ebb_drain_propagation_seconds"), closed["propagation_s"], delta=0.0015)
        self.assertGreaterEqual(ex.value("ebb_drain_propagation_seconds"), 1.0 - 0.03, "SHORT propagation_delay")
        self.assertAlmostEqual(ex.value("ebb_drain_phase_seconds"), drained["drain_s"], delta=0.0015)

    def test_starting_state(self):
        ebb = self.start_ebb(unused_port(), {"readiness": {"upstream_check": "tcp",
                                                           "interval": "100ms"}})
        self.assertState(scrape(ebb), "starting")


if __name__ == "__main__":
    unittest.main()
