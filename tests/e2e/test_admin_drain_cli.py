"""Issue 12, `ebb drain` (SPEC §8) finds ebb the way ebb finds its own config: the admin address and
the token come from the flags, else from `--config FILE` (default /etc/ebb/ebb.yaml), else from the
`EBB_*` environment (EBB_ADMIN_LISTEN, EBB_ADMIN_DRAIN_TOKEN), the environment over the file and
flags over both. A listener on 0.0.0.0 is dialled on loopback."""

import json
import os
import subprocess
import tempfile
import unittest

from harness.admin import readyz, scrape
from harness.case import LifecycleCase
from harness.client import unused_port
from harness.config import to_yaml
from harness.ebb import run_cli
from harness.handlers import ok
from harness.wait import dl

TOKEN = "s3cret-Token_42"


def drain_cli(args, env_over: dict, timeout: float = 10) -> subprocess.CompletedProcess:
    """`ebb drain ARGS` with only `env_over`'s EBB_* variables, from a directory without config."""
    return run_cli(["drain", *args], dl(timeout), env_over)


class DrainCliConfig(LifecycleCase):
    def ebb_on_fixed_admin_port(self, listen_host: str = "127.0.0.1", token: str | None = None):
        # A real port, not 0: the client must be told where ebb is.
        port = unused_port()
        admin = {"listen": f"{listen_host}:{port}"}
        if token:
            admin["drain_token"] = token
        fake, ebb = self.proxy(ok(), {"admin": admin})
        return ebb, port

    def assertDrained(self, p, ebb):
        self.assertEqual(p.returncode, 0, f"stdout {p.stdout!r} stderr {p.stderr!r}")
        self.assertEqual(json.loads(p.stdout)["cut_requests"], 0, p.stdout)
        self.assertEqual(readyz(ebb), (503, "drained"))

    def test_admin_address_from_the_environment(self):
        ebb, port = self.ebb_on_fixed_admin_port()
        p = drain_cli(["--wait"], {"EBB_ADMIN_LISTEN": f"127.0.0.1:{port}"})
        self.assertDrained(p, ebb)

    def test_address_and_token_from_a_config_file_listening_on_every_address(self):
        ebb, port = self.ebb_on_fixed_admin_port("0.0.0.0", TOKEN)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "ebb.yaml")
            with open(path, "w") as f:
                f.write(to_yaml({"admin": {"listen": f"0.0.0.0:{port}", "drain_token": TOKEN}}) + "\n")
            # Negative control: the same file with another token is refused by ebb.
            bad = os.path.join(d, "bad.yaml")
            with open(bad, "w") as f:
                f.write(to_yaml({"admin": {"listen": f"0.0.0.0:{port}", "drain_token": "other"}}) + "\n")
            p = drain_cli(["--config", bad], {})
            self.assertEqual(p.returncode, 1, p)
            self.assertIn("403", p.stderr)
            self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), 1)
            p = drain_cli(["--config", path, "--wait"], {})
        self.assertDrained(p, ebb)

    def test_environment_over_file_and_flags_over_both(self):
        ebb, port = self.ebb_on_fixed_admin_port(token=TOKEN)
        wrong = unused_port()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "ebb.yaml")
            with open(path, "w") as f:
                f.write(to_yaml({"admin": {"listen": f"127.0.0.1:{wrong}", "drain_token": "file-token"}}) + "\n")
            # The environment wins over the file (as for ebb itself)...
            p = drain_cli(["--config", path, "--token", "flag-wrong"],
                          {"EBB_ADMIN_LISTEN": f"127.0.0.1:{port}"})
            self.assertEqual(p.returncode, 1, p)  # reached ebb: refused for the flag's token
            self.assertIn("403", p.stderr)
            # ...and the flags win over both.
            p = drain_cli(["--config", path, "--admin", f"127.0.0.1:{port}", "--token", TOKEN, "--wait"],
                          {"EBB_ADMIN_LISTEN": f"127.0.0.1:{wrong}", "EBB_ADMIN_DRAIN_TOKEN": "env-wrong"})
        self.assertDrained(p, ebb)

    def test_a_token_from_the_environment_reaches_ebb(self):
        ebb, port = self.ebb_on_fixed_admin_port(token=TOKEN)
        p = drain_cli(["--wait"], {"EBB_ADMIN_LISTEN": f"127.0.0.1:{port}", "EBB_ADMIN_DRAIN_TOKEN": TOKEN})
        self.assertDrained(p, ebb)

    def test_unusable_config_is_a_clear_error(self):
        p = drain_cli([], {"EBB_ADMIN_LISTEN": "nonsense"})
        self.assertEqual(p.returncode, 2, p)
        self.assertIn("EBB_ADMIN_LISTEN", p.stderr)
        p = drain_cli([], {"EBB_ADMIN_LISTEN": "127.0.0.1:0"})
        self.assertEqual(p.returncode, 2, p)
        self.assertIn("--admin", p.stderr)
        p = drain_cli(["--admin", f"127.0.0.1:{unused_port()}"], {})
        self.assertEqual(p.returncode, 1, "nothing listens there")


if __name__ == "__main__":
    unittest.main()
