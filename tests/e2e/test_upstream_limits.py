"""SPEC §5 / issue 14, upstream_limits: at most max_concurrency requests at the app, the others in
a FIFO queue bounded by queue_size and queue_timeout; a full queue or a timeout is ebb's 503 with
Retry-After and X-Ebb-Error, counted; a client that leaves while queued leaves the queue; queued
requests are served during the drain; probes never queue; every ending of an exchange (answer,
502, app closing mid-response, client gone, tunnel closed) gives its slot back once; the config
from the file, the environment and a reload. The `auto` mode against an app whose latency grows
with concurrency is in AutoLimit at the end."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness.admin import scrape, wait_metric
from harness.case import EbbTestCase, LifecycleCase
from harness.client import unused_port
from harness.config import rewrite_config, shutdown_config
from harness.ebb import run_cli
from harness.handlers import (close_idle_when_next_request_arrives, close_mid_body,
                              close_without_answer, ok, route, upgrade_echo)
from harness.http import build_request
from harness.lifecycle import EARLY, exit_timed, wait_ready
from harness.wait import dl, wait_until


class Turnstile:
    """A fake-app handler that holds each request until the test lets that one through (by
    target), and records the order requests reached the app and how many were there at once."""

    def __init__(self):
        self.cond = threading.Condition()
        self.arrived = []
        self.released = set()
        self.everything = False
        self.at_app = 0
        self.peak = 0

    def __call__(self, req, conn):
        req.read_body()
        with self.cond:
            self.arrived.append(req.target)
            self.at_app += 1
            self.peak = max(self.peak, self.at_app)
            self.cond.notify_all()
            go = self.cond.wait_for(lambda: self.everything or req.target in self.released, dl(60))
            self.at_app -= 1
        if not go:
            raise AssertionError(f"Turnstile: {req.target} was never let through")
        return conn.respond(200, req.target.encode())

    def wait_arrivals(self, n: int, timeout: float) -> list:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.arrived) >= n, timeout):
                raise AssertionError(f"Turnstile: {len(self.arrived)} of {n} requests arrived: {self.arrived}")
            return list(self.arrived)

    def let_through(self, target: str):
        with self.cond:
            self.released.add(target)
            self.cond.notify_all()

    def open(self):
        with self.cond:
            self.everything = True
            self.cond.notify_all()


def limits(max_concurrency, queue_size=100, queue_timeout="10s") -> dict:
    return {"upstream_limits": {"max_concurrency": max_concurrency, "queue_size": queue_size,
                                "queue_timeout": queue_timeout}}


class LimitCase(EbbTestCase):
    def turnstile(self):
        t = Turnstile()
        self.on_teardown(t.open)
        return t

    def hold_one(self, config: dict, target: str = "/held"):
        """A Turnstile app behind an ebb with `config`, and one request (GET `target`) held at
        it: (turnstile, ebb, that request's client)."""
        t = self.turnstile()
        fake, ebb = self.proxy(t, config)
        c = self.send(ebb, target)
        t.wait_arrivals(1, dl(5))
        return t, ebb, c

    def send(self, ebb, target: str):
        c = self.connect(ebb)
        c.send(build_request("GET", target))
        return c

    def metric(self, ebb, name: str, labels=None) -> float:
        return scrape(ebb).value(name, labels)

    def wait_queued(self, ebb, n: int):
        wait_metric(ebb, "ebb_upstream_queue_depth", None, lambda v: v == n, dl(5), f"{n} queued")

    def wait_idle(self, ebb):
        """Nothing in flight, no slot held, nobody queued: the accounting came back to zero."""
        wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 0, dl(5), "no request in flight")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_active_requests"), 0, "a slot was never given back")
        self.assertEqual(ex.value("ebb_upstream_queue_depth"), 0)

    def assertShed(self, r, what: str):
        self.assertEbbError(r, 503, what)
        self.assertEqual(r.header("Retry-After"), "1", f"{what}: {r!r}")


class Queue(LimitCase):
    def test_two_reach_the_app_the_rest_wait_and_go_in_fifo_order(self):
        t = self.turnstile()
        fake, ebb = self.proxy(t, limits(2))
        first = [self.send(ebb, "/1"), self.send(ebb, "/2")]
        t.wait_arrivals(2, dl(5))
        waiting = []
        for i, target in enumerate(["/3", "/4", "/5"]):
            waiting.append(self.send(ebb, target))
            self.wait_queued(ebb, i + 1)  # one at a time, so the queue's order is known
        ex = scrape(ebb)
        self.assertEqual(sorted(t.arrived), ["/1", "/2"], "only max_concurrency requests reach the app")
        self.assertEqual(ex.value("ebb_upstream_active_requests"), 2)
        self.assertEqual(ex.value("ebb_upstream_concurrency_limit"), 2)
        self.assertEqual(ex.value("ebb_requests_in_flight"), 5, "queued requests count as in flight")
        # Each slot freed lets the oldest waiter in, whichever slot it was.
        t.let_through("/2")
        self.assertOk(first[1].read_response(timeout=dl(5)), b"/2")
        self.assertEqual(t.wait_arrivals(3, dl(5))[2], "/3")
        t.let_through("/3")
        self.assertOk(waiting[0].read_response(timeout=dl(5)), b"/3")
        self.assertEqual(t.wait_arrivals(4, dl(5))[3], "/4")
        t.let_through("/1")
        self.assertOk(first[0].read_response(timeout=dl(5)), b"/1")
        self.assertEqual(t.wait_arrivals(5, dl(5))[4], "/5")
        t.let_through("/4")
        t.let_through("/5")
        self.assertOk(waiting[1].read_response(timeout=dl(5)), b"/4")
        self.assertOk(waiting[2].read_response(timeout=dl(5)), b"/5")
        self.assertEqual(t.peak, 2, "never more than 2 at the app")
        self.wait_idle(ebb)
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_queue_wait_seconds_count"), 3, "three requests queued")
        self.assertEqual(ex.value("ebb_requests_total", {"code": "200", "source": "app"}), 5)

    def test_without_a_limit_the_same_load_reaches_the_app_at_once(self):
        # Negative control: the same five requests with max_concurrency 0 (the default).
        t = self.turnstile()
        fake, ebb = self.proxy(t, limits(0))
        clients = [self.send(ebb, f"/{i}") for i in range(1, 6)]
        t.wait_arrivals(5, dl(5))
        self.assertEqual(t.peak, 5)
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_concurrency_limit"), 0, "0 = unlimited")
        self.assertEqual(ex.value("ebb_upstream_queue_depth"), 0)
        self.assertEqual(ex.value("ebb_upstream_active_requests"), 5)
        t.open()
        for i, c in enumerate(clients, 1):
            self.assertOk(c.read_response(timeout=dl(5)), f"/{i}".encode())

    def test_full_queue_is_503_with_retry_after_counted(self):
        t, ebb, held = self.hold_one(limits(1, queue_size=1))
        queued = self.send(ebb, "/queued")
        self.wait_queued(ebb, 1)
        t0 = time.monotonic()
        r = self.connect(ebb).request("GET", "/over", timeout=dl(5))
        self.assertShed(r, "a request finding the queue full")
        self.assertLess(time.monotonic() - t0, dl(1.0), "a full queue answers at once")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_queue_rejected_total", {"reason": "full"}), 1)
        self.assertEqual(ex.value("ebb_upstream_queue_rejected_total", {"reason": "timeout"}), 0)
        self.assertEqual(ex.value("ebb_requests_total", {"code": "503", "source": "ebb"}), 1)
        ebb.wait_log("request turned away: queue full", dl(5))  # the log reader may lag the answer
        t.open()
        self.assertOk(held.read_response(timeout=dl(5)), b"/held")
        self.assertOk(queued.read_response(timeout=dl(5)), b"/queued")
        self.assertEqual(len(ebb.logs("request turned away: queue full")), 1)
        self.assertEqual(ebb.logs("bad request"), [], "a full queue is not the client's fault")
        self.assertNotIn("/over", t.arrived, "a refused request never reaches the app")
        self.wait_idle(ebb)

    def test_queue_timeout_is_503_with_retry_after_counted(self):
        t, ebb, held = self.hold_one(limits(1, queue_timeout="300ms"))
        t0 = time.monotonic()
        r = self.connect(ebb).request("GET", "/late", timeout=dl(5))
        waited = time.monotonic() - t0
        self.assertShed(r, "a request queued longer than queue_timeout")
        self.assertGreaterEqual(waited, 0.3 - EARLY, "answered before queue_timeout")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_queue_rejected_total", {"reason": "timeout"}), 1)
        self.assertEqual(ex.value("ebb_upstream_queue_wait_seconds_count"), 1)
        self.assertGreaterEqual(ex.value("ebb_upstream_queue_wait_seconds_sum"), 0.3 - EARLY)
        self.assertEqual(ex.value("ebb_upstream_queue_depth"), 0)
        t.open()
        self.assertOk(held.read_response(timeout=dl(5)), b"/held")
        self.assertOk(self.connect(ebb).request("GET", "/after", timeout=dl(5)), b"/after")
        self.assertEqual(t.arrived, ["/held", "/after"])
        self.wait_idle(ebb)

    def test_client_leaving_the_queue_is_removed_and_the_count_stays_right(self):
        t, ebb, held = self.hold_one(limits(1))
        clients = {}
        for i, target in enumerate(["/a", "/gone-fin", "/b", "/gone-rst", "/c"]):
            clients[target] = self.send(ebb, target)
            self.wait_queued(ebb, i + 1)
        clients["/gone-fin"].close()  # a FIN: the client gave up
        clients["/gone-rst"].reset()
        self.wait_queued(ebb, 3)
        wait_metric(ebb, "ebb_requests_unanswered_total", {"reason": "client_closed"}, lambda v: v == 2, dl(5),
                    "both departures counted")
        self.assertEqual(self.metric(ebb, "ebb_requests_in_flight"), 4)
        t.open()
        self.assertOk(held.read_response(timeout=dl(5)), b"/held")
        for target in ("/a", "/b", "/c"):
            self.assertOk(clients[target].read_response(timeout=dl(5)), target.encode())
        self.assertEqual(t.arrived, ["/held", "/a", "/b", "/c"], "those who left never reach the app")
        self.wait_idle(ebb)
        # The slots all came back: two at once still pass one by one, none is refused.
        more = [self.send(ebb, "/d"), self.send(ebb, "/e")]
        for c, body in zip(more, (b"/d", b"/e")):
            self.assertOk(c.read_response(timeout=dl(5)), body)
        self.wait_idle(ebb)

    def test_probes_never_queue(self):
        t, ebb, held = self.hold_one({**limits(1, queue_size=0), "probes": {"on_proxy_listener": True}})
        self.assertShed(self.connect(ebb).request("GET", "/app", timeout=dl(5)), "no queue: refused")
        for path in ("/healthz", "/readyz"):
            r = self.connect(ebb).request("GET", path, timeout=dl(5))
            self.assertIn(r.status, (200, 503), r)
            self.assertIsNone(r.header("Retry-After"), f"{path} was turned away by the limit: {r!r}")
            self.assertNotEqual(r.header("X-Ebb-Error"), "app at its concurrency limit and the queue is full")
        self.assertEqual(self.metric(ebb, "ebb_upstream_queue_rejected_total", {"reason": "full"}), 1)
        t.open()
        self.assertOk(held.read_response(timeout=dl(5)), b"/held")


class SlotRelease(LimitCase):
    """Each ending of an exchange gives its slot back. With max_concurrency 1 and a short
    queue_timeout, a leaked slot turns the next request into a 503."""
    CONFIG = limits(1, queue_size=10, queue_timeout="500ms")

    def assertNextPasses(self, ebb, fake_target="/ok"):
        r = self.connect(ebb).request("GET", fake_target, timeout=dl(5))
        self.assertOk(r, None, "the slot was not given back")
        self.wait_idle(ebb)

    def test_app_closing_without_answer_502(self):
        fake, ebb = self.proxy(route({"/fail": close_without_answer()}, default=ok()), self.CONFIG)
        for _ in range(3):
            r = self.connect(ebb).request("POST", "/fail", body=b"x", timeout=dl(5))
            self.assertEbbError(r, 502)
        self.assertNextPasses(ebb)

    def test_replay_on_a_fresh_connection_keeps_its_one_slot(self):
        # The app closes the pooled connection as the second request arrives: ebb replays it on a
        # new connection within the same slot (a second slot would be over the limit of 1).
        fake, ebb = self.proxy(close_idle_when_next_request_arrives, self.CONFIG)
        c = self.connect(ebb)
        self.assertOk(c.request("GET", "/first", timeout=dl(5)), b"/first")
        self.assertOk(c.request("GET", "/second", timeout=dl(5)), b"/second")
        self.assertEqual(fake.accepts, 2, "the second request was replayed on a fresh connection")
        self.assertEqual(self.metric(ebb, "ebb_upstream_errors_total", {"kind": "stale_retried"}), 1)
        self.assertEqual(self.metric(ebb, "ebb_upstream_queue_wait_seconds_count"), 0, "nothing queued")
        self.wait_idle(ebb)

    def test_app_refusing_connections_502(self):
        port = unused_port()
        ebb = self.start_ebb(port, {**self.CONFIG, "upstream_retry": {"connect_retry_budget": "0s"}})
        for _ in range(3):
            self.assertEbbError(self.connect(ebb).request("GET", "/x", timeout=dl(5)), 502)
        self.wait_idle(ebb)
        self.assertEqual(self.metric(ebb, "ebb_upstream_queue_rejected_total", {"reason": "timeout"}), 0)

    def test_app_closing_mid_response(self):
        fake, ebb = self.proxy(route({"/cut": close_mid_body(10_000, 100)}, default=ok()), self.CONFIG)
        c = self.connect(ebb)
        c.send(build_request("GET", "/cut"))
        head = c.read_head(timeout=dl(5))
        self.assertEqual(head.status, 200)
        self.assertClosed(c, dl(5), "a truncated answer ends with a close")
        self.assertNextPasses(ebb)

    def test_client_resetting_while_its_request_is_at_the_app(self):
        t, ebb, c = self.hold_one(self.CONFIG, "/left")
        c.reset()
        wait_metric(ebb, "ebb_upstream_active_requests", None, lambda v: v == 0, dl(5), "slot given back")
        t.open()
        self.assertNextPasses(ebb)

    def test_client_half_closing_keeps_its_slot_until_the_answer(self):
        # A FIN after a complete request still wants the answer (SPEC §4): the slot stays taken
        # while the app works on it, and comes back when the answer is out.
        t, ebb, c = self.hold_one(self.CONFIG, "/half")
        c.sock.shutdown(socket.SHUT_WR)
        wait_metric(ebb, "ebb_requests_in_flight", None, lambda v: v == 1, dl(5))
        self.assertEqual(self.metric(ebb, "ebb_upstream_active_requests"), 1)
        t.open()
        self.assertOk(c.read_response(timeout=dl(5)), b"/half")
        self.assertNextPasses(ebb)

    def test_a_tunnel_holds_its_slot_while_open(self):
        fake, ebb = self.proxy(route({"/ws": upgrade_echo()}, default=ok()), self.CONFIG)
        ws = self.connect(ebb)
        ws.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                             ("Sec-WebSocket-Version", "13")]))
        self.assertEqual(ws.read_head(timeout=dl(5)).status, 101)
        self.assertEqual(self.metric(ebb, "ebb_upstream_active_requests"), 1, "an open tunnel holds a slot")
        self.assertShed(self.connect(ebb).request("GET", "/x", timeout=dl(5)), "behind an open tunnel")
        ws.close()
        wait_metric(ebb, "ebb_upstream_active_requests", None, lambda v: v == 0, dl(5), "tunnel slot back")
        self.assertNextPasses(ebb)


class Config(LimitCase):
    def test_environment_sets_the_limit(self):
        t = self.turnstile()
        fake = self.start_fake(t)
        ebb = self.start_ebb(fake, env={"EBB_UPSTREAM_LIMITS_MAX_CONCURRENCY": "1",
                                        "EBB_UPSTREAM_LIMITS_QUEUE_SIZE": "0"})
        self.assertEqual(self.metric(ebb, "ebb_upstream_concurrency_limit"), 1)
        held = self.send(ebb, "/held")
        t.wait_arrivals(1, dl(5))
        self.assertShed(self.connect(ebb).request("GET", "/x", timeout=dl(5)), "limit 1, no queue, from env")
        t.open()
        self.assertOk(held.read_response(timeout=dl(5)), b"/held")

    def test_bad_value_names_the_key_and_line(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "ebb.yaml")
            with open(path, "w") as f:
                f.write("upstream: 127.0.0.1:3000\nupstream_limits:\n  max_concurrency: lots\n")
            p = run_cli(["--config", path, "--check-config"], dl(10))
        self.assertEqual(p.returncode, 2, p)
        self.assertIn(f"{path}:3: upstream_limits.max_concurrency: expected a non-negative integer "
                      f"(0 = unlimited) or auto, got \"lots\"", p.stderr + p.stdout)

    def test_reload_applies_new_limits_to_new_requests(self):
        t = self.turnstile()
        fake, ebb = self.proxy(t, limits(1, queue_size=0))
        wait_ready(ebb)
        held = self.send(ebb, "/held")
        t.wait_arrivals(1, dl(5))
        self.assertShed(self.connect(ebb).request("GET", "/refused", timeout=dl(5)), "limit 1")
        rewrite_config(ebb, limits(2, queue_size=0))
        ebb.signal(signal.SIGHUP)
        wait_metric(ebb, "ebb_upstream_concurrency_limit", None, lambda v: v == 2, dl(5), "reloaded limit")
        second = self.send(ebb, "/second")
        t.wait_arrivals(2, dl(5))
        self.assertShed(self.connect(ebb).request("GET", "/third", timeout=dl(5)), "limit 2 reached")
        t.open()
        self.assertOk(held.read_response(timeout=dl(5)), b"/held")
        self.assertOk(second.read_response(timeout=dl(5)), b"/second")
        self.assertEqual(t.arrived, ["/held", "/second"])


class Drain(LifecycleCase, LimitCase):
    def test_queued_requests_are_served_during_the_drain(self):
        t = Turnstile()
        self.on_teardown(t.open)
        fake, ebb = self.proxy(t, {**limits(1), **shutdown_config(0.3, 0.1, 1.0, 10.0)})
        held = self.send(ebb, "/held")
        t.wait_arrivals(1, dl(5))
        queued = []
        for i, target in enumerate(["/q1", "/q2", "/q3"]):
            queued.append(self.send(ebb, target))
            self.wait_queued(ebb, i + 1)
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        ebb.wait_log("listener closed", dl(5))
        t.open()
        for c, target in zip([held] + queued, ["/held", "/q1", "/q2", "/q3"]):
            r = c.read_response(timeout=dl(5))
            self.assertOk(r, target.encode(), "a queued request must be served during the drain")
            self.assertIn("close", r.header_tokens("Connection"))
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 0, "nothing was cut")
        rec = ebb.logs("drained")[0]
        self.assertEqual((rec.get("requests"), rec.get("cut")), (4, 0), rec)
        self.assertEqual(t.arrived, ["/held", "/q1", "/q2", "/q3"])
        self.assertEqual(t.peak, 1)

    def test_requests_still_queued_at_drain_timeout_are_cut_and_counted(self):
        t = Turnstile()
        self.on_teardown(t.open)
        fake, ebb = self.proxy(t, {**limits(1), **shutdown_config(0.3, 0.1, 1.0, 1.0)})
        held = self.send(ebb, "/held")  # never let through: the app hangs
        t.wait_arrivals(1, dl(5))
        queued = []
        for i, target in enumerate(["/q1", "/q2"]):
            queued.append(self.send(ebb, target))
            self.wait_queued(ebb, i + 1)
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 1, "requests were cut at drain_timeout: exit 1")
        rec = ebb.logs("drained")[0]
        self.assertEqual(rec.get("cut"), 3, f"the one at the app and both queued are cut: {rec}")
        for c in [held] + queued:
            self.assertClosed(c, dl(2))
        self.assertEqual(t.arrived, ["/held"], "a cut queued request never reaches the app")

    def test_the_slot_freed_by_the_cut_goes_to_no_queued_request(self):
        # The same with the queued requests on connections older than the one at the app: the cut
        # reaches the request at the app first, and its freed slot must not send a queued one to
        # the app only to cut it a moment later (a POST the app would run for a client told nothing).
        t = Turnstile()
        self.on_teardown(t.open)
        drain = shutdown_config(0.3, 0.1, 1.0, 1.0)
        fake, ebb = self.proxy(t, {**limits(2), **drain})
        # Two app connections left idle in the pool, so that a freed slot could send a queued
        # request on one at once; then the limit goes down to 1.
        warm = [self.send(ebb, "/warm1"), self.send(ebb, "/warm2")]
        t.wait_arrivals(2, dl(5))
        t.let_through("/warm1")
        t.let_through("/warm2")
        for c in warm:
            self.assertEqual(c.read_response(timeout=dl(5)).status, 200)
        self.assertEqual(self.metric(ebb, "ebb_upstream_connections_opened_total"), 2)
        rewrite_config(ebb, {**limits(1), **drain})
        ebb.signal(signal.SIGHUP)
        wait_metric(ebb, "ebb_upstream_concurrency_limit", None, lambda v: v == 1, dl(5), "reloaded limit")
        queued = [self.connect(ebb) for _ in range(2)]
        held = self.send(ebb, "/held")
        t.wait_arrivals(3, dl(5))
        for i, (c, target) in enumerate(zip(queued, ["/q1", "/q2"])):
            c.send(build_request("POST", target, body=b"once"))
            self.wait_queued(ebb, i + 1)
        t0 = time.monotonic()
        ebb.signal(signal.SIGTERM)
        code, _ = exit_timed(ebb, t0, dl(10))
        self.assertEqual(code, 1, "requests were cut at drain_timeout: exit 1")
        self.assertEqual(ebb.logs("drained")[0].get("cut"), 3)
        for c in [held] + queued:
            self.assertClosed(c, dl(2))
        # ebb is gone: every app connection but the held request's reads its EOF, or a request
        # sent at the cut first (the app records an arrival before it could see the EOF).
        wait_until(lambda: len(t.arrived) > 3 or sum(c.peer_closed for c in fake.conns) >= len(fake.conns) - 1,
                   dl(5), "the app to see every idle connection close")
        self.assertEqual(t.arrived[2:], ["/held"], "a queued request reached the app at the cut")


# --------------------------------------------------------------------------------------------
# `max_concurrency: auto` against an app whose latency grows with the requests it holds.

# A fake app in its own process (its own GIL, so the load generator's work does not slow it): each
# request sleeps BASE + K * (requests at the app, itself included). /peak answers, at once, the
# most requests it has held at once since the last /peak.
SLOW_APP = r"""
import asyncio, sys
BASE, K = float(sys.argv[1]), float(sys.argv[2])
at_app = peak = 0
async def handle(reader, writer):
    global at_app, peak
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.split(b" ", 2)[1] == b"/peak":
                body, peak = str(peak).encode(), 0
            else:
                at_app += 1
                peak = max(peak, at_app)
                try:
                    await asyncio.sleep(BASE + K * at_app)
                finally:
                    at_app -= 1
                body = b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

BASE, K = 0.010, 0.010  # 20 ms alone; the app's throughput approaches 1/K = 100 per second
WARM_RATE, WARM_SECONDS = 20, 2.0    # normal traffic: ~one request at the app
SPIKE_RATE, SPIKE_SECONDS = 200, 5.0  # twice what the app can ever do: unlimited, its latency grows
                                      # by ~1 s per second of spike


async def one_request(port: int, target: str, timeout: float):
    """(seconds, status) of one request on a fresh connection; status 0 if it failed."""
    t0 = time.monotonic()
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        status = 0
    finally:
        if writer is not None:
            writer.close()
    return time.monotonic() - t0, status


async def open_loop(port: int, rate: float, seconds: float, timeout: float):
    """Requests started at a fixed rate whatever the answers do (a real spike does not wait for
    the app); returns [(seconds, status)]."""
    tasks = []
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one_request(port, f"/load/{i}", timeout)))
    return await asyncio.gather(*tasks)


def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("inf")


class AutoLimit(EbbTestCase):
    def start_slow_app(self) -> int:
        p = subprocess.Popen([sys.executable, "-c", SLOW_APP, str(BASE), str(K)], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)

        def stop():
            p.kill()
            p.wait()
            p.stdout.close()
        self.on_teardown(stop)
        return int(p.stdout.readline())

    def app_peak(self, port: int) -> int:
        """The most requests the app held at once since the last call (asked of it directly)."""
        with socket.create_connection(("127.0.0.1", port), timeout=dl(5)) as s:
            s.sendall(b"GET /peak HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while True:
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and body:  # the app writes head and body at once
                    return int(body)
                chunk = s.recv(4096)
                if not chunk:
                    raise AssertionError(f"the slow app closed before answering /peak: {data!r}")
                data += chunk

    def spike(self, max_concurrency) -> dict:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a few hundred sockets at once
        app = self.start_slow_app()
        ebb = self.start_ebb(app, {**limits(max_concurrency, queue_size=20, queue_timeout="100ms"),
                                   "log": {"level": "info", "access": False}})
        timeout = dl(30)
        warm = asyncio.run(open_loop(ebb.proxy_port, WARM_RATE, WARM_SECONDS, timeout))
        self.assertTrue(all(s == 200 for _, s in warm), f"the app must be healthy at normal load: {warm}")
        self.app_peak(app)  # reset: the peak of the spike alone
        limit_before = scrape(ebb).value("ebb_upstream_concurrency_limit")
        spike = asyncio.run(open_loop(ebb.proxy_port, SPIKE_RATE, SPIKE_SECONDS, timeout))
        ex = scrape(ebb)
        served = [t for t, s in spike if s == 200]
        shed = [t for t, s in spike if s == 503]
        return {"p99": p99([t for t, _ in spike]), "p99_served": p99(served), "n": len(spike),
                "served": len(served), "shed": len(shed), "failed": len(spike) - len(served) - len(shed),
                "app_peak": self.app_peak(app), "limit_before": limit_before,
                "limit_after": ex.value("ebb_upstream_concurrency_limit"),
                "rejected": ex.value("ebb_upstream_queue_rejected_total", {"reason": "full"})
                + ex.value("ebb_upstream_queue_rejected_total", {"reason": "timeout"})}

    def test_auto_keeps_p99_bounded_under_a_spike_where_unlimited_does_not(self):
        unlimited = self.spike(0)
        auto = self.spike("auto")
        print(f"\nspike of {SPIKE_RATE}/s for {SPIKE_SECONDS}s, app {BASE * 1000:.0f} ms + "
              f"{K * 1000:.0f} ms per request at it:\n  unlimited: {unlimited}\n  auto:      {auto}",
              file=sys.stderr)
        # Unlimited: every request reaches the app, which slows down for all of them.
        self.assertEqual(unlimited["served"], unlimited["n"], unlimited)
        self.assertGreater(unlimited["app_peak"], 60, unlimited)
        self.assertGreater(unlimited["p99"], 3.0, unlimited)
        # Auto: the limit comes down from where it stood, the app holds few requests, what is
        # served is served fast and the excess is told at once (503 + Retry-After) to go elsewhere.
        # Measured: p99 0.26-0.40 s against 5.1-5.2 s unlimited (a 3 s spike under ASan on a busy
        # machine once gave 0.9 s): the bounds leave room for a machine shared with builds.
        self.assertEqual(auto["failed"], 0, auto)
        self.assertLess(auto["limit_after"], auto["limit_before"], auto)
        self.assertLessEqual(auto["app_peak"], 25, auto)
        self.assertLess(auto["p99"], 1.5, auto)
        self.assertLess(auto["p99_served"], 1.5, auto)
        self.assertGreaterEqual(auto["served"], auto["n"] * 0.25, f"auto shed nearly everything: {auto}")
        self.assertEqual(auto["shed"], auto["rejected"], auto)
        self.assertGreater(unlimited["p99"], 3 * auto["p99"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
