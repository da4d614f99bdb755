"""The rolling-deploy proof (issue 4): every scenario is a rolling deploy of two pods under load
behind HAProxy, and one line per scenario says how many requests failed. An ebb scenario fails on
a single failed request; a negative control fails if it shows none, since then the harness could
not see drops at all. EBB_ZD_RESTARTS sets the restarts per scenario (default 2; `make
zero-downtime` runs 20)."""

import shutil
import signal
import tempfile
import unittest
from pathlib import Path

from zd_procs import build_apps
from zd_rollout import BY_NAME, ebb_bin_from_env, ebb_refusal, restarts_from_env, run_scenario


class RollingDeployTest(unittest.TestCase):
    lines = []
    failed = False

    @classmethod
    def setUpClass(cls):
        cls.ebb_bin = ebb_bin_from_env()
        if not cls.ebb_bin.exists():
            raise RuntimeError(f"no ebb binary at {cls.ebb_bin} (set EBB_BIN)")
        cls.restarts = restarts_from_env()
        cls.workdir = Path(tempfile.mkdtemp(prefix="ebb-zd-"))
        cls.bins = build_apps(cls.workdir / "bin")  # built once, used by every scenario

    @classmethod
    def tearDownClass(cls):
        print("\n" + "\n".join(cls.lines), flush=True)
        if cls.failed:
            print(f"logs kept in {cls.workdir}", flush=True)
        else:
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def run_named(self, name):
        sc = BY_NAME[name]
        refused = ebb_refusal(sc, self.ebb_bin)
        if refused:
            # grpc-prestop needs `upstream_protocol: h2c`; an ebb without it says so and is skipped.
            self.lines.append(f"scenario={name} SKIPPED: this ebb refuses its config: {refused}")
            self.skipTest(self.lines[-1])
        try:
            res = run_scenario(sc, self.restarts, self.bins, self.ebb_bin, self.workdir)
        except BaseException:
            type(self).failed = True
            raise
        self.lines.append(res.line())
        print("\n" + res.line() + "\n" + res.details(), flush=True)
        if sc.control:
            blind = res.control_blind_spots()
            if blind:
                type(self).failed = True
                self.fail(f"{name}: " + "; ".join(blind))
            return
        if res.errors or res.problems:
            type(self).failed = True
            print(res.analysis(), flush=True)
        self.assertEqual(res.errors, 0, res.line())
        self.assertEqual(res.problems, [], "\n".join(res.problems))

    # Named so that unittest's alphabetical order runs the control first.
    def test_0_control_naive_direct(self):
        self.run_named("control-naive-direct")

    def test_1_naive_prestop(self):
        self.run_named("naive-prestop")

    def test_2_graceful_prestop(self):
        self.run_named("graceful-prestop")

    def test_3_graceful_no_prestop(self):
        self.run_named("graceful-no-prestop")

    def test_4_naive_prestop_classic_sidecar(self):
        self.run_named("naive-prestop-classic-sidecar")

    def test_5_control_ebb_nodrain(self):
        self.run_named("control-ebb-nodrain")

    def test_6_control_splitwrite_direct(self):
        self.run_named("control-splitwrite-direct")

    def test_7_splitwrite_prestop(self):
        self.run_named("splitwrite-prestop")

    def test_8_splitwrite_prestop_classic_sidecar(self):
        self.run_named("splitwrite-prestop-classic-sidecar")

    def test_9a_control_grpc_direct(self):
        self.run_named("control-grpc-direct")

    def test_9b_grpc_prestop(self):
        self.run_named("grpc-prestop")

    def test_9c_splitwrite_prestop_workers4(self):
        self.run_named("splitwrite-prestop-workers4")


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # so that every finally stops what it started


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    unittest.main()
