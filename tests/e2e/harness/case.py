"""unittest glue: `EbbTestCase`, whose start_fake / start_ebb / connect clean up after
themselves and which fails a test whose ebb crashed, printed a sanitizer report or sent the app
invalid HTTP; `LifecycleCase`, the same with the short shutdown durations and a ready ebb.
"""

from __future__ import annotations

import sys
import traceback
import unittest

from harness.client import HttpClient, Response, non_loopback_ipv4
from harness.config import SHORT, deep_merge
from harness.ebb import Ebb
from harness.handlers import Gate
from harness.http import build_request
from harness.lifecycle import wait_ready
from harness.upstream import FakeUpstream
from harness.wait import dl


class EbbTestCase(unittest.TestCase):
    """Base class: start_fake / start_ebb / connect clean up after themselves, in the order
    clients, fakes, ebb processes; a failing test gets the ebb log and the app's records
    printed; a crash, a sanitizer report, a fake-handler exception or invalid HTTP sent to the
    app fails the test even if its own asserts passed."""

    ebb_config: dict = {}  # per-class config overrides, merged under each start_ebb's

    def _h(self):
        if not hasattr(self, "_harness"):
            self._harness = {"clients": [], "fakes": [], "ebbs": [], "other": []}
            self.addCleanup(self._teardown_harness)
        return self._harness

    def start_fake(self, handler=None, **kw) -> FakeUpstream:
        fake = FakeUpstream(handler, **kw)
        self._h()["fakes"].append(fake)
        return fake.start()

    def start_ebb(self, upstream, config: dict | None = None, **kw) -> Ebb:
        ebb = Ebb(upstream, deep_merge(self.ebb_config, config or {}), **kw)
        self._h()["ebbs"].append(ebb)
        return ebb.start()

    def proxy(self, handler=None, config: dict | None = None, **fake_kw):
        """A fake app with `handler` and an ebb in front of it: (fake, ebb)."""
        fake = self.start_fake(handler, **fake_kw)
        return fake, self.start_ebb(fake, config)

    def connect(self, ebb_or_port, **kw) -> HttpClient:
        port = ebb_or_port.proxy_port if isinstance(ebb_or_port, Ebb) else ebb_or_port
        c = HttpClient(port, **kw)
        self._h()["clients"].append(c)
        return c

    def gate(self, then=None) -> Gate:
        """A `Gate` handler, released at teardown at the latest so that its app thread ends."""
        g = Gate(then)
        self.on_teardown(g.release)
        return g

    def hold(self, ebb_or_client, gate: Gate, target: str = "/held") -> HttpClient:
        """Sends `GET target` (on a new connection to ebb, or on the client given) and waits until
        the app holds it at `gate`; returns the client."""
        c = self.connect(ebb_or_client) if isinstance(ebb_or_client, Ebb) else ebb_or_client
        c.send(build_request("GET", target, host="t"))
        self.assertTrue(gate.arrived.wait(dl(5)), f"GET {target} never reached the app's gate")
        return c

    def non_loopback_ip(self) -> str:
        """An IPv4 address of this machine that is not loopback; skips the test if there is none."""
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("this machine has no non-loopback IPv4 address to call from")
        return ip

    def on_teardown(self, fn):
        """Runs fn() at teardown, before the clients are closed."""
        self._h()["other"].append(fn)

    def _teardown_harness(self):
        h = self._harness
        for fn in reversed(h["other"]):
            try:
                fn()
            except Exception:
                traceback.print_exc()
        for c in h["clients"]:
            c.close()
        for f in h["fakes"]:
            f.stop()
        for e in h["ebbs"]:
            e.stop()
        problems = []
        for e in h["ebbs"]:
            if e.unexpected_exit is not None:
                problems.append(f"ebb (pid {e.proc.pid}) exited on its own during the test with "
                                f"code {e.unexpected_exit}")
            rep = e.sanitizer_report()
            if rep:
                problems.append(f"sanitizer report from ebb (pid {e.proc.pid}):\n{rep}")
        for f in h["fakes"]:
            for err in f.parse_errors:
                problems.append(f"ebb sent the app invalid HTTP: {err}")
            for err in f.handler_errors:
                problems.append(f"fake app handler error: {err}")
        if problems:
            self.fail("\n".join(problems))

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            self._dump()
        return out

    def _dump(self):
        h = getattr(self, "_harness", None)
        if not h:
            return
        w = sys.stderr.write
        for e in h["ebbs"]:
            pid = e.proc.pid if e.proc else "-"
            w(f"\n---- ebb log (pid {pid}, exit {e.returncode}) for {self.id()} ----\n")
            w(e.log_text(300) + "\n")
        for f in h["fakes"]:
            w(f"---- fake app {f.name} (port {f.port}) ----\n{f.summary()}\n")
        w("---- end ----\n")
        sys.stderr.flush()

    # -- assertions ------------------------------------------------------------------------
    def assertEbbError(self, resp: Response, statuses, msg: str = ""):
        """resp is an answer that ebb made itself: one of `statuses`, with X-Ebb-Error."""
        if isinstance(statuses, int):
            statuses = (statuses,)
        self.assertIn(resp.status, tuple(statuses),
                      f"{msg}: expected status {statuses}, got {resp!r} body={resp.body[:200]!r}")
        reason = resp.header("X-Ebb-Error")
        self.assertTrue(reason and reason.strip(),
                        f"{msg}: ebb's own {resp.status} lacks a non-empty X-Ebb-Error: {resp!r}")

    def assertNotEbbError(self, resp: Response, msg: str = ""):
        self.assertFalse(resp.has_header("X-Ebb-Error"),
                         f"{msg}: an app answer carries X-Ebb-Error: {resp!r}")

    def assertClosed(self, client: HttpClient, timeout: float | None = None, msg: str = ""):
        timeout = timeout if timeout is not None else dl(2)
        if not client.wait_closed(timeout):
            self.fail(f"{msg}: connection still open {timeout:.2f}s later "
                      f"(bytes received meanwhile: {client.after_close[:300]!r})")

    def assertOk(self, resp: Response, body: bytes | None = None, msg: str = ""):
        self.assertEqual(resp.status, 200, f"{msg}: {resp!r} body={resp.body[:300]!r}")
        self.assertNotEbbError(resp, msg)
        if body is not None:
            self.assertEqual(resp.body, body, msg)


class LifecycleCase(EbbTestCase):
    """An EbbTestCase with the SHORT shutdown durations, whose proxy() returns a ready ebb."""
    ebb_config = SHORT

    def proxy(self, handler=None, config=None, **kw):
        fake, ebb = super().proxy(handler, config, **kw)
        wait_ready(ebb)
        return fake, ebb
