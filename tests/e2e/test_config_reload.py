"""Issue 12, config reload the Kubernetes way (SPEC §8). A ConfigMap volume updates by writing a new
`..<timestamp>` directory and swapping the `..data` symlink (the file is `ebb.yaml -> ..data/ebb.yaml`):
ebb watches the file's directory and reloads as SIGHUP does, only when the content changed. POST
/reload does the same on demand (token rules as /drain) and answers with the result. Every reload
logs a line with its trigger and result and sets `ebb_config_last_reload_success`,
`ebb_config_last_reload_timestamp_seconds` and `ebb_config_reloads_total{result}`; a broken file
is refused, the running config kept."""

import os
import shutil
import signal
import tempfile
import time
import unittest

from harness.admin import admin_request, readyz, scrape, wait_metric
from harness.case import LifecycleCase
from harness.config import DEFAULT_CONFIG, SHORT, deep_merge, rewrite_config, to_yaml
from harness.handlers import ok
from harness.wait import dl

TOKEN = "s3cret-Token_42"


class ConfigMapDir:
    """A directory laid out as the kubelet's atomic writer does for a ConfigMap volume."""

    def __init__(self, config: dict):
        self.dir = tempfile.mkdtemp(prefix="ebb-configmap-")
        self.n = 0
        self.current = None
        self.publish(to_yaml(config) + "\n")
        os.symlink("..data/ebb.yaml", os.path.join(self.dir, "ebb.yaml"))
        self.path = os.path.join(self.dir, "ebb.yaml")

    def publish(self, text: str) -> None:
        """A new ..<ts> directory, `..data` swapped to it atomically, the old one removed."""
        self.n += 1
        ts = f"..2026_11_29_12_00_0{self.n}.{1000 + self.n}"
        os.mkdir(os.path.join(self.dir, ts))
        with open(os.path.join(self.dir, ts, "ebb.yaml"), "w") as f:
            f.write(text)
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink(ts, tmp)
        os.replace(tmp, os.path.join(self.dir, "..data"))  # rename(2): what `mv -T` does
        if self.current:
            shutil.rmtree(os.path.join(self.dir, self.current))
        self.current = ts

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Watch(LifecycleCase):
    def start_from_configmap(self, over: dict | None = None):
        fake = self.start_fake(ok())
        config = deep_merge(deep_merge(self.base_config(fake), SHORT), over or {})
        cm = ConfigMapDir(config)
        self.addCleanup(cm.remove)
        # The harness writes its own file; the later --config wins, as on any command line.
        ebb = self.start_ebb(fake, over, args=["--config", cm.path])
        ebb.wait_log("ready", dl(5))
        return cm, ebb, config

    def base_config(self, fake):
        return deep_merge(DEFAULT_CONFIG, {"upstream": f"127.0.0.1:{fake.port}"})

    def reloads(self, ebb, result: str):
        return scrape(ebb).value("ebb_config_reloads_total", {"result": result})

    def test_a_configmap_symlink_swap_reloads_and_a_broken_one_is_refused(self):
        cm, ebb, config = self.start_from_configmap()
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_config_last_reload_success"), 1)
        started = ex.value("ebb_config_last_reload_timestamp_seconds")
        self.assertAlmostEqual(started, time.time(), delta=dl(30))
        self.assertEqual((self.reloads(ebb, "success"), self.reloads(ebb, "failure")), (0, 0))

        # The same content republished (the kubelet resyncs): seen, and no reload.
        n = len(ebb.records)
        cm.publish(to_yaml(config) + "\n")
        ebb.wait_log("config watch: content unchanged", dl(5), since=n)
        self.assertEqual(ebb.logs("config reloaded"), [])

        # A changed drain_timeout and log level.
        changed = deep_merge(config, {"shutdown": {"drain_timeout": "700ms"}, "log": {"level": "info"}})
        cm.publish(to_yaml(changed) + "\n")
        rec = ebb.wait_log("config reloaded", dl(5))
        self.assertEqual((rec.get("trigger"), rec.get("result"), rec.get("drain_timeout_s")),
                         ("watch", "success", 0.7), rec)
        ex = scrape(ebb)
        self.assertEqual((self.reloads(ebb, "success"), ex.value("ebb_config_last_reload_success")), (1, 1))
        self.assertGreaterEqual(ex.value("ebb_config_last_reload_timestamp_seconds"), started)
        self.assertEqual(len(ebb.logs("config reloaded")), 1, "one swap, one reload")
        n = len(ebb.records)  # from here on, log level info is in force: no debug line

        # A broken file: refused, the running config kept, the metric at 0.
        cm.publish("shutdown:\n  drain_timeout: soon\n")
        rec = ebb.wait_log("reload failed; keeping the running config", dl(5))
        self.assertEqual((rec.get("trigger"), rec.get("result"), rec.get("level")), ("watch", "failure", "error"), rec)
        self.assertIn("shutdown.drain_timeout", rec.get("error"))
        wait_metric(ebb, "ebb_config_last_reload_success", None, lambda v: v == 0, dl(2))
        self.assertEqual((self.reloads(ebb, "success"), self.reloads(ebb, "failure")), (1, 1))
        self.assertEqual([r for r in ebb.records[n:] if r.get("level") == "debug"], [],
                         "log.level info from the reloaded file still applies")
        self.assertEqual(readyz(ebb), (200, "ready"))

        # The config in force is the last good one: its drain_timeout shows in the drain.
        r = admin_request(ebb, "POST", "/drain")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(ebb.wait_log("drain started", dl(2)).get("drain_timeout_s"), 0.7)

    def test_a_fixed_file_after_a_broken_one_reloads_and_sets_the_metric_back(self):
        cm, ebb, config = self.start_from_configmap()
        cm.publish("listen: [oops\n")
        ebb.wait_log("reload failed; keeping the running config", dl(5))
        wait_metric(ebb, "ebb_config_last_reload_success", None, lambda v: v == 0, dl(2))
        cm.publish(to_yaml(deep_merge(config, {"shutdown": {"drain_timeout": "900ms"}})) + "\n")
        self.assertEqual(ebb.wait_log("config reloaded", dl(5)).get("drain_timeout_s"), 0.9)
        wait_metric(ebb, "ebb_config_last_reload_success", None, lambda v: v == 1, dl(2))


class ReloadEndpoint(LifecycleCase):
    def test_post_reload_applies_the_file_and_answers_the_result(self):
        fake, ebb = self.proxy(ok(), {"admin": {"drain_token": TOKEN}})
        rewrite_config(ebb, {"shutdown": {"drain_timeout": "800ms"}})
        # Token rules as /drain: refused without it, logged and counted.
        r = admin_request(ebb, "POST", "/reload")
        self.assertEbbError(r, 403, "POST /reload without the token")
        rec = ebb.wait_log("reload request refused", dl(2))
        self.assertEqual((rec.get("level"), rec.get("caller")), ("warn", "127.0.0.1"), rec)
        self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), 1)
        r = admin_request(ebb, "POST", f"//reload?token={TOKEN}")
        self.assertEqual(r.status, 200, f"{r!r} {r.body!r}")
        self.assertIn(b"config reloaded from " + ebb.config_path.encode(), r.body)
        rec = ebb.wait_log("config reloaded", dl(2), trigger="admin")
        self.assertEqual(rec.get("drain_timeout_s"), 0.8, rec)
        self.assertNotIn(TOKEN, "\n".join(ebb.lines))
        self.assertEqual(scrape(ebb).value("ebb_config_last_reload_success"), 1)

        # A broken file: 422 with the reason, the old config kept, the metric at 0.
        with open(ebb.config_path, "w") as f:
            f.write("shutdown:\n  drain_timeout: 1s\n  no_such_key: 1\n")
        r = admin_request(ebb, "POST", "/reload", [("Authorization", "Bearer " + TOKEN)])
        self.assertEbbError(r, 422, "a broken file")
        self.assertIn(b"shutdown.no_such_key: unknown key", r.body)
        wait_metric(ebb, "ebb_config_last_reload_success", None, lambda v: v == 0, dl(2))

        # A listen change: 409, refused.
        rewrite_config(ebb, {"listen": "127.0.0.1:1"})
        r = admin_request(ebb, "POST", "/reload", [("Authorization", "Bearer " + TOKEN)])
        self.assertEbbError(r, 409, "a listen change")
        self.assertIn(b"listen addresses cannot change", r.body)
        self.assertEqual(readyz(ebb), (200, "ready"))
        r = admin_request(ebb, "POST", "/drain", [("Authorization", "Bearer " + TOKEN)])
        self.assertEqual(ebb.wait_log("drain started", dl(2)).get("drain_timeout_s"), 0.8,
                         "the last good config is in force")

    def test_sighup_is_counted_like_the_others(self):
        fake, ebb = self.proxy(ok())
        # os.kill, not ebb.signal: SIGHUP must not end ebb, and teardown fails the test if it did.
        os.kill(ebb.pid, signal.SIGHUP)
        self.assertEqual(ebb.wait_log("config reloaded", dl(5)).get("trigger"), "SIGHUP")
        wait_metric(ebb, "ebb_config_reloads_total", {"result": "success"}, lambda v: v == 1, dl(2))


if __name__ == "__main__":
    unittest.main()
