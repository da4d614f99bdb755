"""Issue 11, `workers: N`: N event loops behind one listener. Connections spread evenly (50
concurrent clients, kept open or one request each: no worker takes more than 60%, by
ebb_worker_connections_accepted_total), /metrics sums the workers (requests counted equal the
requests sent, wherever they landed), a reload reaches every worker, limits.max_connections holds
over all of them, upstream_limits.max_concurrency is the pod's (split, never multiplied), probes
on the proxy port follow the one lifecycle, and `workers: auto` starts and says why. The drains
and the listener close at workers: 4 are the drain tests themselves, run again with
EBB_TEST_WORKERS=4 (CMakeLists.txt)."""

import threading
import unittest

from harness.admin import admin_request, scrape, wait_metric
from harness.case import LifecycleCase
from harness.client import HttpClient
from harness.config import rewrite_config
from harness.handlers import answer_target, ok
from harness.http import build_request
from harness.wait import dl, wait_until

CLIENTS = 50
SHARE_MAX = 0.6  # issue 11: under c50 no worker takes more than 60% of the connections


def per_worker(ebb) -> list:
    """ebb_worker_connections_accepted_total by worker index."""
    ex = scrape(ebb)
    got = {int(l["worker"]): v for l, v in ex.labelled("ebb_worker_connections_accepted_total")}
    return [got[i] for i in sorted(got)]


def requests_200(ebb) -> float:
    return scrape(ebb).value("ebb_requests_total", {"code": "200", "source": "app"}) or 0


class Workers(LifecycleCase):
    ebb_config = {**LifecycleCase.ebb_config, "workers": 4, "log": {"access": False}}

    def assertSpread(self, counts: list, total: int, what: str):
        self.assertEqual(len(counts), 4, f"{what}: one series per worker: {counts}")
        self.assertEqual(sum(counts), total, f"{what}: per-worker counts {counts} should sum to {total}")
        self.assertLessEqual(max(counts), SHARE_MAX * total,
                             f"{what}: one worker took {max(counts)} of {total} connections: {counts}")

    def test_concurrent_keepalive_clients_spread_over_the_workers(self):
        fake, ebb = self.proxy(answer_target)
        clients = [self.connect(ebb) for _ in range(CLIENTS)]
        for rnd in range(3):
            for i, c in enumerate(clients):
                c.send(build_request("GET", f"/c{i}/{rnd}", host="t"))
            for i, c in enumerate(clients):
                self.assertOk(c.read_response(), f"/c{i}/{rnd}".encode(), f"client {i} round {rnd}")
        self.assertSpread(per_worker(ebb), CLIENTS, "50 keep-alive clients")
        self.assertEqual(requests_200(ebb), 3 * CLIENTS, "/metrics sums the requests of all workers")

    def test_short_connections_from_50_threads_spread_and_sum(self):
        fake, ebb = self.proxy(ok(b"hi"))
        per_thread = 8
        errors = []

        def client(n):
            try:
                for k in range(per_thread):
                    with HttpClient(ebb.proxy_port) as c:
                        r = c.request("GET", f"/t{n}/{k}", headers=[("Connection", "close")])
                        if r.status != 200 or r.body != b"hi":
                            errors.append(f"thread {n} request {k}: {r!r} {r.body[:100]!r}")
            except Exception as e:  # noqa: BLE001 - reported below with the thread's number
                errors.append(f"thread {n}: {e!r}")

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(dl(60))
        self.assertFalse([t for t in threads if t.is_alive()], "client threads still running")
        self.assertEqual(errors, [])
        total = CLIENTS * per_thread
        self.assertSpread(per_worker(ebb), total, f"{total} connections from 50 threads")
        counts = per_worker(ebb)
        self.assertTrue(all(c > 0 for c in counts), f"every worker served some: {counts}")
        self.assertEqual(requests_200(ebb), total, "/metrics sums the requests of all workers")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_connections_accepted_total"), total)

    def test_a_reload_reaches_every_worker(self):
        fake, ebb = self.proxy(ok(b"hi"))
        big = [("X-Big", "b" * 2000)]

        def all_fresh_connections(expect: int):
            # Eight connections held open together: two on each worker (least connections).
            before = per_worker(ebb)
            clients = [self.connect(ebb) for _ in range(8)]
            for c in clients:
                c.send(build_request("GET", "/big", headers=big, host="t"))
            got = [c.read_response().status for c in clients]
            after = per_worker(ebb)
            self.assertTrue(all(a > b for a, b in zip(after, before)),
                            f"every worker took a connection: {before} -> {after}")
            self.assertEqual(got, [expect] * 8)
            for c in clients:
                c.close()

        all_fresh_connections(200)  # the control: the header fits the running config
        rewrite_config(ebb, {"limits": {"max_header_bytes": 1024}})
        r = admin_request(ebb, "POST", "/reload")
        self.assertEqual(r.status, 200, r.body)
        all_fresh_connections(431)

    def test_max_concurrency_is_the_pods_split_among_the_workers(self):
        gate = self.gate()
        fake, ebb = self.proxy(gate, {"upstream_limits": {"max_concurrency": 4}})
        clients = [self.connect(ebb) for _ in range(8)]  # two on each worker
        for i, c in enumerate(clients):
            c.send(build_request("GET", f"/h{i}", host="t"))
        ex = wait_metric(ebb, "ebb_upstream_queue_depth", None, lambda v: v == 4, dl(5), "four requests queued")
        self.assertEqual(ex.value("ebb_upstream_concurrency_limit"), 4, "the workers' shares sum to the limit")
        self.assertEqual(ex.value("ebb_upstream_active_requests"), 4)
        wait_until(lambda: gate.count == 4, dl(5), "the four requests with a slot at the app")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_queue_depth"), 4, "the other four still wait")
        self.assertEqual(gate.count, 4, "the app never holds more than max_concurrency requests")
        gate.release()
        for i, c in enumerate(clients):
            self.assertOk(c.read_response(), b"released", f"/h{i}")

    def test_changing_workers_takes_a_restart(self):
        fake, ebb = self.proxy(ok())
        rewrite_config(ebb, {"workers": 2})
        r = admin_request(ebb, "POST", "/reload")
        self.assertEqual(r.status, 409, r.body)
        self.assertIn(b"workers cannot change without a restart", r.body)

    def test_max_connections_holds_over_all_workers(self):
        fake, ebb = self.proxy(ok(), {"limits": {"max_connections": 6}})
        clients = [self.connect(ebb) for _ in range(6)]
        for c in clients:
            self.assertOk(c.request("GET", "/"))
        over = [self.connect(ebb) for _ in range(3)]
        for c in over:
            self.assertClosed(c, msg="a connection over limits.max_connections")
        self.assertEqual(scrape(ebb).value("ebb_connections_rejected_total"), 3)
        for c in clients:  # the six in force are still served
            self.assertOk(c.request("GET", "/"))

    def test_probes_on_the_proxy_port_follow_the_one_lifecycle(self):
        fake, ebb = self.proxy(ok(), {"probes": {"on_proxy_listener": True},
                                      "shutdown": {"propagation_delay": "3s", "propagation_max": "3s"}})
        clients = [self.connect(ebb) for _ in range(8)]  # on every worker
        for c in clients:
            r = c.request("GET", "/readyz")
            self.assertEqual((r.status, r.body), (200, b"ready\n"))
        r = admin_request(ebb, "POST", "/drain")
        self.assertIn(r.status, (200, 202), r.body)
        for c in clients:
            r = c.request("GET", "/readyz")
            self.assertEqual((r.status, r.body), (503, b"draining\n"))


class Auto(LifecycleCase):
    def test_auto_starts_with_a_count_it_explains(self):
        fake, ebb = self.proxy(ok(b"hi"), {"workers": "auto"})
        n = ebb.listening.get("workers")
        self.assertIsInstance(n, int)
        self.assertTrue(1 <= n <= 8, ebb.listening)
        self.assertIn("cap 8", ebb.listening.get("workers_from", ""))
        self.assertOk(self.connect(ebb).request("GET", "/"), b"hi")
        self.assertEqual(len(per_worker(ebb)), n)


if __name__ == "__main__":
    unittest.main()
