"""Issue 12, the environment of a real pod: Kubernetes injects service links (`EBB_PORT=tcp://...`,
`EBB_SERVICE_HOST`, `EBB_PORT_80_TCP_ADDR`, `EBB_METRICS_SERVICE_PORT`...) for a Service named
`ebb` or `ebb-metrics`. They never stop ebb (debug note); another unknown `EBB_*` variable is a
warning naming the closest key, never fatal at run time, and fails `--check-config` (exit 2) so
CI catches a misspelt key. Wrong values of real keys stay fatal, naming the key.
`--check-config` without a file says `config OK (built-in defaults)`."""

import signal
import subprocess
import unittest

from harness.admin import readyz, scrape
from harness.case import EbbTestCase
from harness.ebb import run_cli
from harness.handlers import ok
from harness.lifecycle import wait_ready
from harness.wait import dl

# What the kubelet puts into every pod of a namespace with `Service ebb` (port 80, named http)
# and `Service ebb-metrics` (port 9901).
SERVICE_LINKS = {
    "EBB_SERVICE_HOST": "10.96.0.12",
    "EBB_SERVICE_PORT": "80",
    "EBB_SERVICE_PORT_HTTP": "80",
    "EBB_PORT": "tcp://10.96.0.12:80",
    "EBB_PORT_80_TCP": "tcp://10.96.0.12:80",
    "EBB_PORT_80_TCP_PROTO": "tcp",
    "EBB_PORT_80_TCP_PORT": "80",
    "EBB_PORT_80_TCP_ADDR": "10.96.0.12",
    "EBB_METRICS_SERVICE_HOST": "10.96.0.13",
    "EBB_METRICS_SERVICE_PORT": "9901",
    "EBB_METRICS_PORT": "tcp://10.96.0.13:9901",
    "EBB_METRICS_PORT_9901_TCP": "tcp://10.96.0.13:9901",
    "EBB_METRICS_PORT_9901_TCP_PROTO": "tcp",
    "EBB_METRICS_PORT_9901_TCP_PORT": "9901",
    "EBB_METRICS_PORT_9901_TCP_ADDR": "10.96.0.13",
}


def run_ebb(args, env_over: dict, timeout: float = 10) -> subprocess.CompletedProcess:
    return run_cli(args, dl(timeout), env_over)


class ServiceLinks(EbbTestCase):
    def test_ebb_starts_serves_and_drains_with_service_links_in_its_environment(self):
        fake = self.start_fake(ok(b"served"))
        env = dict(SERVICE_LINKS, EBB_SHUTDOWN_DRAIN_TIMEOUT="1500ms")
        ebb = self.start_ebb(fake, env=env)
        wait_ready(ebb)
        self.assertOk(self.connect(ebb).request("GET", "/"), b"served")
        self.assertEqual(readyz(ebb), (200, "ready"))
        notes = ebb.logs("environment variable ignored")
        self.assertEqual(sorted(n["reason"].split(":")[0] for n in notes),
                         sorted(f"env {k}" for k in SERVICE_LINKS), notes)
        self.assertTrue(all(n["level"] == "debug" and "service link" in n["reason"] for n in notes), notes)
        # A real key beside them still applies.
        self.assertEqual(scrape(ebb).value("ebb_lifecycle_state", {"state": "ready"}), 1)
        ebb.signal(signal.SIGTERM)
        self.assertEqual(ebb.wait_log("drain started", dl(5)).get("drain_timeout_s"), 1.5)
        self.assertEqual(ebb.wait_exit(dl(10)), 0)

    def test_a_misspelt_key_warns_with_the_closest_key_and_ebb_runs(self):
        fake = self.start_fake(ok(b"served"))
        ebb = self.start_ebb(fake, env={"EBB_SHUTDOWN_DRAIN_TIMOUT": "3s"})
        wait_ready(ebb)
        self.assertOk(self.connect(ebb).request("GET", "/"), b"served")
        warns = ebb.logs("environment variable ignored")
        self.assertEqual(len(warns), 1, warns)
        self.assertEqual(warns[0]["level"], "warn", warns)
        self.assertIn("EBB_SHUTDOWN_DRAIN_TIMOUT", warns[0]["reason"])
        self.assertIn("did you mean EBB_SHUTDOWN_DRAIN_TIMEOUT?", warns[0]["reason"])

    def test_a_wrong_value_of_a_real_key_stays_fatal_and_names_it(self):
        p = run_ebb([], dict(SERVICE_LINKS, EBB_SHUTDOWN_DRAIN_TIMEOUT="soon",
                             EBB_LISTEN="127.0.0.1:0", EBB_ADMIN_LISTEN="127.0.0.1:0"))
        self.assertEqual(p.returncode, 2, p)
        self.assertIn("env EBB_SHUTDOWN_DRAIN_TIMEOUT: expected a duration", p.stderr)


class CheckConfig(unittest.TestCase):
    def test_built_in_defaults_wording(self):
        p = run_ebb(["--check-config"], {})
        self.assertEqual(p.returncode, 0, p)
        first = p.stdout.splitlines()[0]
        self.assertTrue(first.endswith("config OK (built-in defaults)"), first)
        self.assertNotIn("((", p.stdout)

    def test_service_links_pass_and_are_listed(self):
        p = run_ebb(["--check-config"], SERVICE_LINKS)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("config OK", p.stdout)
        self.assertIn("ebb: note: env EBB_PORT: a Kubernetes service link", p.stderr)
        self.assertNotIn("warning", p.stderr)

    def test_a_misspelt_key_fails_the_check_with_exit_2(self):
        p = run_ebb(["--check-config"], dict(SERVICE_LINKS, EBB_ADMIN_DRAIN_TOKN="x"))
        self.assertEqual(p.returncode, 2, p)
        self.assertIn("ebb: warning: env EBB_ADMIN_DRAIN_TOKN: unknown key (did you mean EBB_ADMIN_DRAIN_TOKEN?)",
                      p.stderr)
        self.assertNotIn("config OK", p.stdout)


if __name__ == "__main__":
    unittest.main()
