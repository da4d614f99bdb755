"""SPEC §2 / issue 3, the propagation phase of a drain: /readyz turns 503 `draining` at once while
/healthz stays 200; the proxy listener keeps accepting, every response carries `Connection: close`
and its connection closes after it; the phase lasts at least propagation_delay, then until no new
connection for quiet_period, at most propagation_max; then the listener is closed (connections are
refused) and idle keep-alive connections are closed. Durations are short (harness.config.SHORT);
lower bounds are tight, upper bounds loose."""

import signal
import time
import unittest

from harness.admin import healthz, poll_readyz, readyz
from harness.case import LifecycleCase
from harness.client import HttpClient, try_connect, unused_port
from harness.config import (DRAIN_TIMEOUT, PROPAGATION_DELAY, PROPAGATION_MAX, QUIET_PERIOD,
                            shutdown_config)
from harness.data import pattern_bytes
from harness.handlers import answer_target, ok, route
from harness.lifecycle import (EARLY, assert_lifecycle_once, exit_timed, log_time, wait_exit,
                               wait_ready)
from harness.wait import ConnectionClosed, dl


class Propagation(LifecycleCase):
    def _probe_until_exit(self, ebb, deadline: float) -> list:
        """Polls /healthz and /readyz until ebb exits; returns [(t, healthz, readyz)]."""
        seen = []
        while ebb.alive() and time.monotonic() < deadline:
            try:
                h = healthz(ebb)
                r = readyz(ebb)
            except (ConnectionRefusedError, ConnectionResetError, ConnectionClosed):
                # Refused only once ebb is exiting. Its `exiting` line is written before the
                # admin listener closes, but the thread reading ebb's stderr may not have it yet.
                if ebb.alive():
                    ebb.wait_log("exiting", dl(2))
                break
            seen.append((time.monotonic(), h, r))
            time.sleep(0.02)
        return seen

    def test_readyz_503_draining_at_once_while_healthz_stays_200(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate)
        self.assertEqual(readyz(ebb), (200, "ready"))
        self.assertEqual(healthz(ebb), (200, "ok"))
        busy = self.hold(ebb, gate, "/hold")  # keeps the drain phase going until released
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        answers = []
        while not answers or answers[-1][1] != (503, "draining"):
            self.assertLess(time.monotonic() - t0, dl(2), f"/readyz after SIGTERM: {answers}")
            answers.append((round(time.monotonic() - t0, 4), readyz(ebb)))
        # "At once": ebb handles the signal in the loop turn it arrives in, so at most one probe
        # (already queued in the same epoll batch) may still see the old state. Counting
        # answers, not seconds, keeps this exact on a loaded machine.
        self.assertLessEqual(len(answers), 2, f"/readyz kept answering after SIGTERM: {answers}")
        self.assertLess(answers[-1][0], dl(1.0), f"/readyz after SIGTERM: {answers}")
        rec = ebb.wait_log("drain started", dl(1))
        self.assertEqual(rec.get("trigger"), "SIGTERM", rec)
        # Probes through propagation and into the drain phase, then let the request finish.
        seen = []
        while not (ebb.logs("listener closed") and time.monotonic() - t0 > PROPAGATION_DELAY + 0.3):
            self.assertLess(time.monotonic() - t0, dl(5), "the listener never closed")
            seen.append((time.monotonic(), healthz(ebb), readyz(ebb)))
            time.sleep(0.02)
        gate.release()
        self.assertOk(busy.read_response(timeout=dl(5)), b"released")
        seen += self._probe_until_exit(ebb, time.monotonic() + dl(10))
        code, elapsed = exit_timed(ebb, t0, dl(5))
        self.assertEqual(code, 0)
        span = f"{len(seen)} probes from {seen[0][0] - t0:.3f}s to {seen[-1][0] - t0:.3f}s"
        self.assertGreater(len(seen), 10, f"the admin listener must keep answering: {span}")
        bad = [(round(t - t0, 3), h, r) for t, h, r in seen if h != (200, "ok")]
        self.assertFalse(bad, f"/healthz must stay 200 ok during the drain: {bad}")
        # readyz never goes back to ready: draining, then (once drained, briefly) drained.
        states = [r for _, _, r in seen]
        self.assertTrue(all(r in ((503, "draining"), (503, "drained")) for r in states),
                        f"/readyz during the drain: {sorted(set(states))}")
        self.assertTrue(any(t - t0 > PROPAGATION_DELAY + 0.2 and r == (503, "draining")
                            for t, _, r in seen),
                        f"/readyz must say draining in the drain phase too ({span})")
        assert_lifecycle_once(self, ebb)

    def test_new_connection_during_propagation_is_served_with_connection_close(self):
        fake, ebb = self.proxy(answer_target)
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        c = self.connect(ebb)
        r = c.request("GET", "/during-propagation")
        self.assertOk(r, b"/during-propagation", "a new connection during propagation")
        self.assertIn("close", r.header_tokens("Connection"),
                      f"a response during propagation must carry Connection: close: {r!r}")
        self.assertClosed(c, dl(1), "the connection must close after that response")
        self.assertEqual(ebb.logs("listener closed"), [],
                         "this all happened during propagation (1s): the test is too slow")
        self.assertEqual([q.target for q in fake.requests], ["/during-propagation"])
        self.assertEqual(wait_exit(ebb, dl(5)), 0)
        rec = ebb.logs("listener closed")[0]
        self.assertEqual(rec.get("accepted_during_propagation"), 1, rec)
        assert_lifecycle_once(self, ebb)

    def test_keepalive_client_next_response_carries_close_and_connection_closes(self):
        fake, ebb = self.proxy(answer_target)
        c = self.connect(ebb)
        r = c.request("GET", "/before")
        self.assertOk(r, b"/before")
        self.assertNotIn("close", r.header_tokens("Connection"), "keep-alive before the drain")
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        self.assertTrue(ebb.alive())
        r = c.request("GET", "/after-sigterm")
        self.assertOk(r, b"/after-sigterm", "the pooled connection's next request is served")
        self.assertIn("close", r.header_tokens("Connection"),
                      f"the next response on a keep-alive connection must say Connection: close: {r!r}")
        self.assertClosed(c, dl(1), "the keep-alive connection must close after that response")
        self.assertEqual(ebb.logs("listener closed"), [], "still in propagation")
        # The client reconnects, as a pooled client does: still served during propagation.
        c2 = self.connect(ebb)
        r = c2.request("GET", "/reconnected")
        self.assertOk(r, b"/reconnected")
        self.assertIn("close", r.header_tokens("Connection"))
        self.assertClosed(c2, dl(1))
        self.assertEqual(wait_exit(ebb, dl(5)), 0)
        assert_lifecycle_once(self, ebb)

    def _stream_connections(self, ebb, t_start: float, interval: float, until: float) -> list:
        """From t_start, opens a connection every `interval` (on a fixed schedule) until `until`
        or until a connect is refused, and sends one request on each. Returns
        [(connect time, outcome)] where outcome is a Response or "refused"."""
        out = []
        k = 0
        while True:
            t_next = t_start + k * interval
            if t_next >= until:
                break
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the cadence of arriving connections is the behaviour
            k += 1
            t = time.monotonic()
            try:
                c = HttpClient(ebb.proxy_port)
            except ConnectionRefusedError:
                out.append((t, "refused"))
                break
            try:
                r = c.request("GET", f"/c{k}", timeout=dl(3))
            except ConnectionClosed as e:
                self.fail(f"connection {k}, accepted {t - t_start:.3f}s into the drain, was "
                          f"closed without an answer ({e}): a connection taken by the listener "
                          f"must be served (issue 3: the accept backlog trap)")
            finally:
                c.close()
            out.append((t, r))
        return out

    def _with_cadence(self, scenario, quiet: float, attempts: int = 3):
        """Runs scenario() -> (t_d, connects, result) until the test kept its cadence: no gap
        between two connects (from t_d) within 0.15s of quiet_period. A longer gap means this
        process was stalled (a loaded machine), and ebb would be right to end propagation; such
        a run proves nothing either way and is repeated with a fresh ebb."""
        gaps = []
        for _ in range(attempts):
            t_d, got, result = scenario()
            times = [t_d] + [t for t, _ in got]
            gap = max(b - a for a, b in zip(times, times[1:]))
            if gap < quiet - 0.15:
                return result
            gaps.append(round(gap, 3))
        self.skipTest(f"the test process could not open a connection every 0.1s (largest gaps "
                      f"{gaps}s against quiet_period {quiet}s): machine too loaded")

    def test_quiet_period_extends_propagation_while_connections_arrive(self):
        quiet = 0.6   # connections every 0.1s: headroom against a stalled test process
        pmax = 3.0
        stop_after = 1.6  # past propagation_delay (1s): close expected at ~2.2s, before pmax

        def scenario():
            fake, ebb = self.proxy(answer_target, shutdown_config(PROPAGATION_DELAY, quiet, pmax,
                                                                  DRAIN_TIMEOUT))
            t0 = time.monotonic()
            ebb.signal(signal.SIGTERM)
            t_d = poll_readyz(ebb, 503, "draining", dl(2))
            got = self._stream_connections(ebb, t_d, 0.1, t0 + stop_after)
            return t_d, got, (fake, ebb, t0, t_d, got)

        fake, ebb, t0, t_d, got = self._with_cadence(scenario, quiet)
        refused = [round(t - t0, 3) for t, r in got if r == "refused"]
        self.assertFalse(refused, f"connections refused at {refused}s although one arrived every "
                                  f"0.1s (quiet_period {quiet}s); connects at "
                                  f"{[round(t - t0, 3) for t, _ in got]}")
        for t, r in got:
            self.assertOk(r, None, f"connection at {t - t0:.3f}s")
            self.assertIn("close", r.header_tokens("Connection"), r)
        last = got[-1][0]
        self.assertGreater(last - t0, PROPAGATION_DELAY + 0.3,
                           "the last connection must come well after propagation_delay")
        rec = ebb.wait_log("listener closed", dl(5))
        t_log = time.monotonic()
        p = rec.get("propagation_s")
        self.assertIsInstance(p, (int, float), rec)
        # The listener stayed open for quiet_period after the last connection ...
        self.assertGreaterEqual(t_log - last, quiet - EARLY,
                                f"listener closed {t_log - last:.3f}s after the last connection")
        self.assertGreaterEqual(p, (last - t_d) + quiet - EARLY, rec)
        # ... and not much longer, and never past propagation_max.
        self.assertLessEqual(p, (last - t0) + quiet + dl(1.0), rec)
        self.assertLessEqual(p, pmax + dl(1.0), rec)
        self.assertEqual(rec.get("accepted_during_propagation"), len(got), rec)
        self.assertEqual(try_connect(ebb.proxy_port), "refused")
        self.assertEqual(wait_exit(ebb, dl(5)), 0)
        assert_lifecycle_once(self, ebb)

    def test_propagation_stops_at_propagation_max_while_connections_keep_arriving(self):
        quiet = 0.6

        def scenario():
            fake, ebb = self.proxy(answer_target, shutdown_config(PROPAGATION_DELAY, quiet,
                                                                  PROPAGATION_MAX, DRAIN_TIMEOUT))
            t0 = time.monotonic()
            ebb.signal(signal.SIGTERM)
            t_d = poll_readyz(ebb, 503, "draining", dl(2))
            got = self._stream_connections(ebb, t_d, 0.1, t0 + PROPAGATION_MAX + dl(3))
            return t_d, got, (fake, ebb, t0, t_d, got)

        fake, ebb, t0, t_d, got = self._with_cadence(scenario, quiet)
        self.assertEqual(got[-1][1], "refused",
                         f"connections were still accepted {got[-1][0] - t0:.2f}s after SIGTERM "
                         f"(propagation_max {PROPAGATION_MAX}s)")
        t_refused = got[-1][0]
        served = got[:-1]
        for t, r in served:
            self.assertOk(r, None, f"connection at {t - t0:.3f}s")
            self.assertIn("close", r.header_tokens("Connection"), r)
        self.assertGreaterEqual(t_refused - t0, PROPAGATION_MAX - EARLY,
                                "refused before propagation_max although connections kept coming")
        self.assertLessEqual(t_refused - t_d, PROPAGATION_MAX + dl(2.0))
        rec = ebb.wait_log("listener closed", dl(2))
        self.assertGreaterEqual(rec.get("propagation_s"), PROPAGATION_MAX - EARLY, rec)
        self.assertLessEqual(rec.get("propagation_s"), PROPAGATION_MAX + dl(1.0), rec)
        self.assertEqual(rec.get("accepted_during_propagation"), len(served), rec)
        self.assertEqual(wait_exit(ebb, dl(5)), 0)
        assert_lifecycle_once(self, ebb)

    def test_after_propagation_connections_are_refused_and_idle_keepalive_closed(self):
        gate = self.gate()
        # drain_timeout 10s: closing the idle connection at the deadline instead would be late.
        fake, ebb = self.proxy(route({"/hold": gate}, default=answer_target),
                               shutdown_config(PROPAGATION_DELAY, QUIET_PERIOD, PROPAGATION_MAX, 10.0))
        idle = self.connect(ebb)
        self.assertOk(idle.request("GET", "/warm"), b"/warm")
        busy = self.hold(ebb, gate, "/hold")
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        # The idle keep-alive connection stays open through propagation, and is closed when the
        # listener closes.
        self.assertTrue(idle.wait_closed(dl(5) + PROPAGATION_DELAY),
                        "an idle keep-alive connection must be closed when propagation ends")
        t_eof = time.monotonic()
        self.assertEqual(idle.after_close, b"", "nothing may be sent on the idle connection")
        self.assertGreaterEqual(t_eof - t0, PROPAGATION_DELAY - EARLY,
                                "an idle keep-alive connection was closed during propagation")
        self.assertLessEqual(t_eof - t0, PROPAGATION_DELAY + dl(3.0),
                             "the idle connection must be closed when the listener closes")
        ebb.wait_log("listener closed", dl(1))
        idle.close()
        # The listener is closed: new connections are refused while the drain goes on.
        self.assertTrue(ebb.alive())
        self.assertEqual(readyz(ebb), (503, "draining"))
        for _ in range(3):
            self.assertEqual(try_connect(ebb.proxy_port), "refused",
                             "the proxy listener must be closed after propagation")
        gate.release()
        r = busy.read_response(timeout=dl(5))
        self.assertOk(r, b"released", "the in-flight request completes")
        self.assertIn("close", r.header_tokens("Connection"))
        self.assertClosed(busy, dl(2))
        self.assertEqual(wait_exit(ebb, dl(5)), 0)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut")), (1, 0), rec)
        assert_lifecycle_once(self, ebb)

    def test_probes_on_the_proxy_listener_say_draining_with_connection_close(self):
        fake, ebb = self.proxy(answer_target, {"probes": {"on_proxy_listener": True}})
        c = self.connect(ebb)
        r = c.request("GET", "/readyz")
        self.assertEqual((r.status, r.body.strip()), (200, b"ready"), r)
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        r = c.request("GET", "/readyz")
        self.assertEqual((r.status, r.body.strip()), (503, b"draining"), r)
        self.assertIn("close", r.header_tokens("Connection"), r)
        self.assertClosed(c, dl(1))
        self.assertEqual(fake.requests, [], "probes are not forwarded to the app")
        self.assertEqual(wait_exit(ebb, dl(5)), 0)

    def test_ebb_own_error_during_propagation_carries_connection_close(self):
        # Every response during propagation, ebb's own 502 too.
        ebb = self.start_ebb(unused_port(), {"upstream_retry": {"connect_retry_budget": "0s"}})
        wait_ready(ebb)
        c = self.connect(ebb)
        r = c.request("GET", "/before")
        self.assertEbbError(r, 502, "nothing listens upstream")
        self.assertNotIn("close", r.header_tokens("Connection"), "a 502 keeps the connection")
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        r = c.request("GET", "/during")
        self.assertEbbError(r, 502, "nothing listens upstream")
        self.assertIn("close", r.header_tokens("Connection"), r)
        self.assertClosed(c, dl(1))
        self.assertEqual(wait_exit(ebb, dl(5)), 0)

    def test_http10_keepalive_client_gets_no_keepalive_during_propagation(self):
        fake, ebb = self.proxy(answer_target)
        c = self.connect(ebb)
        r = c.request("GET", "/one", [("Connection", "keep-alive")], version="HTTP/1.0")
        self.assertOk(r, b"/one")
        self.assertIn("keep-alive", r.header_tokens("Connection"), "HTTP/1.0 keep-alive before")
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        r = c.request("GET", "/two", [("Connection", "keep-alive")], version="HTTP/1.0")
        self.assertOk(r, b"/two")
        self.assertNotIn("keep-alive", r.header_tokens("Connection"),
                         f"no keep-alive promised during propagation: {r!r}")
        self.assertClosed(c, dl(1))
        self.assertEqual(wait_exit(ebb, dl(5)), 0)

    def test_last_response_survives_unread_request_bytes_at_close(self):
        # Issue 3 / RFC 9112 §9.6: closing a socket that still has unread request bytes sends a
        # reset, which discards response bytes not yet delivered. Here the client sends a second
        # request (with a body) behind the first once the first's answer has begun (requests
        # already waiting when an answer starts are answered before the close is announced,
        # issue 8), keeps a small receive window and reads late, so most of a 1 MiB response is
        # still on ebb's side when ebb decides to close.
        body = pattern_bytes(1 << 20)
        fake, ebb = self.proxy(route({"/first": ok(body)}, default=answer_target))
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        c = self.connect(ebb, rcvbuf=32 * 1024)
        second = b"POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n"
        c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        fake.wait_for(lambda: fake.bytes_sent_total() >= len(body), dl(5),
                      "the app to have sent the whole response")
        r = c.read_head(timeout=dl(5))
        c.send(second + b"x" * 100_000)
        time.sleep(0.3)  # a client that reads late: the delay is the behaviour
        got = bytearray()
        c.read_body_into(r, got.extend, timeout=dl(10))
        r.body = bytes(got)
        self.assertOk(r, None, "the last response before the close")
        self.assertEqual(len(r.body), len(body))
        self.assertTrue(r.body == body, "the last response must reach the client whole")
        self.assertIn("close", r.header_tokens("Connection"))
        self.assertTrue(c.wait_closed(dl(5)))
        self.assertEqual([q.target for q in fake.requests], ["/first"],
                         "nothing after a Connection: close response may be forwarded")
        self.assertEqual(wait_exit(ebb, dl(5)), 0)
        dropped = [r for r in ebb.logs() if r.get("reason") == "after_close"]
        self.assertEqual(len(dropped), 1, "the request sent after the close is logged as unanswered, once")
        self.assertEqual(ebb.logs("drained")[0].get("unanswered"), 1)

    def test_silent_connection_opened_during_propagation_does_not_hold_the_drain(self):
        # drain_timeout 10s: holding the silent connection until the deadline would be late.
        fake, ebb = self.proxy(answer_target, shutdown_config(PROPAGATION_DELAY, QUIET_PERIOD,
                                                              PROPAGATION_MAX, 10.0))
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        poll_readyz(ebb, 503, "draining", dl(2))
        silent = self.connect(ebb)    # never sends a byte
        talker = self.connect(ebb)    # sends its request only once the listener is closed
        ebb.wait_log("listener closed", dl(5))
        t_closed = time.monotonic()
        r = talker.request("GET", "/late-first-request")
        self.assertOk(r, b"/late-first-request",
                      "a connection accepted during propagation is served in the drain phase")
        self.assertIn("close", r.header_tokens("Connection"))
        self.assertTrue(silent.wait_closed(dl(5)),
                        "a connection that never sends a request must not stay open")
        self.assertEqual(silent.after_close, b"")
        talker.close()
        code, elapsed = exit_timed(ebb, t0, dl(15))
        self.assertEqual(code, 0, "nothing was in flight: exit 0")
        self.assertLessEqual(t0 + elapsed - t_closed, 2.0 + dl(3.0),
                             "the silent connection held the drain toward drain_timeout (10s)")
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut")), (1, 0), rec)

    def test_idle_process_exits_right_after_propagation(self):
        # drain_timeout 10s: an ebb that waited for the deadline would exit at 11s, not ~1s.
        fake, ebb = self.proxy(ok(), shutdown_config(PROPAGATION_DELAY, QUIET_PERIOD,
                                                     PROPAGATION_MAX, 10.0))
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        code, elapsed = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 0)
        self.assertGreaterEqual(elapsed, PROPAGATION_DELAY - EARLY,
                                "exited before propagation_delay")
        self.assertLessEqual(elapsed, PROPAGATION_DELAY + dl(3.0),
                             f"an idle ebb must exit right after propagation "
                             f"({PROPAGATION_DELAY}s), it took {elapsed:.3f}s")
        lc = ebb.logs("listener closed")[0]
        self.assertGreaterEqual(lc.get("propagation_s"), PROPAGATION_DELAY - EARLY, lc)
        # On ebb's own clock: nothing to wait for once the listener is closed.
        self.assertLessEqual(log_time(ebb.logs("exiting")[0]) - log_time(lc), 0.1,
                             "ebb lingered between closing its listener and exiting")
        self.assertEqual(lc.get("accepted_during_propagation"), 0, lc)
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut")), (0, 0), rec)
        self.assertEqual(ebb.logs("exiting")[0].get("code"), 0)
        assert_lifecycle_once(self, ebb)


if __name__ == "__main__":
    unittest.main()
