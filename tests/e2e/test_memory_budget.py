"""Issue 14, bounded memory: the per-connection buffer budget (limits.connection_buffer) holds
ebb's RSS under N slow readers; limits.max_memory stops reading and sheds the largest holders
while a normal client is still answered; and proxy buffering: an answer that fits in the budget
frees the app (its slot and connection) however slowly its client reads.

A stalled reader here is harness.client.stalled_socket (the smallest receive buffer, a 536-byte
MSS) asking for a large answer and never reading it."""

import socket
import struct
import time
import unittest

from harness.admin import scrape, wait_metric
from harness.case import EbbTestCase
from harness.client import stalled_socket
from harness.data import KIB, MIB
from harness.h2raw import END_HEADERS, END_STREAM, HEADERS, PREFACE, SETTINGS, WINDOW_UPDATE, frame, header_block
from harness.handlers import ok, route, send_huge
from harness.http import build_request
from harness.wait import SANITIZED, dl, wait_stable

BIG = 512 * KIB
BUDGET = 32 * KIB  # limits.connection_buffer's default


def stalled_get(port: int, target: str) -> socket.socket:
    return stalled_socket(port, build_request("GET", target))


def stalled_h2(port: int, streams: int, target: str = "/big") -> socket.socket:
    """An HTTP/2 client as small as stalled_get that grants ebb every window (so flow control
    holds nothing back) and opens `streams` streams for `target`, then never reads."""
    s = stalled_socket(port)
    top = 2**31 - 1
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, top))  # INITIAL_WINDOW_SIZE
              + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", top - 65535)))
    for i in range(streams):
        s.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, header_block("GET", target)))
    return s


class StalledReaders(EbbTestCase):
    def app(self):
        return route({"/big": send_huge(BIG, chunk=64 * KIB), "/small": ok(b"small")})

    def stall(self, ebb, n: int, target: str = "/big") -> list:
        socks = self.stalled = []
        self.on_teardown(lambda: [s.close() for s in socks])
        for _ in range(n):
            socks.append(stalled_get(ebb.proxy_port, target))
        return socks

    def buffered(self, ebb) -> float:
        return scrape(ebb).value("ebb_buffered_bytes")

    def settle(self, fake, ebb, n: int):
        """Every stalled request reached the app, and what ebb holds no longer moves."""
        fake.wait_requests(n, dl(20))
        return wait_stable(lambda: self.buffered(ebb), 0.5, dl(30), "ebb_buffered_bytes")


class RssBound(StalledReaders):
    N = 200

    def run_readers(self, config):
        fake = self.start_fake(self.app())
        ebb = self.start_ebb(fake, {"log": {"level": "info", "access": False},
                                    "timeouts": {"client_send": "120s"}, **config})
        c = self.connect(ebb)  # warm: the first request's allocations belong to the base
        self.assertOk(c.request("GET", "/small"), b"small")
        base = ebb.rss_kib()
        self.stall(ebb, self.N)
        held = self.settle(fake, ebb, self.N)
        return ebb, base, held, ebb.rss_kib() - base

    def test_slow_readers_hold_at_most_their_budget(self):
        ebb, base, held, grew = self.run_readers({})
        print(f"\n  {self.N} stalled readers, budget {BUDGET // KIB} KiB: ebb holds {held / MIB:.1f} MiB"
              f" in buffers, VmRSS {base} KiB + {grew} KiB", flush=True)
        # The budget itself, from ebb's own account: the queue each reader has is full, no more.
        self.assertLessEqual(held, self.N * (BUDGET + 1 * KIB), "a reader holds more than its budget")
        self.assertGreaterEqual(held, self.N * BUDGET // 2, "the readers were not stalled on ebb")
        if not SANITIZED:  # ASan's quarantine and redzones make RSS meaningless there
            limit = self.N * (BUDGET + 16 * KIB) + 4 * 1024
            self.assertLess(grew, limit, f"VmRSS grew {grew} KiB for {self.N} readers (limit {limit} KiB)")
        self.assertEqual(scrape(ebb).value("ebb_memory_shed_connections_total"), 0)
        # The account comes back to zero once the readers are gone: every byte counted in was
        # counted out (cancelled writes included).
        for s in self.stalled:
            s.close()
        wait_metric(ebb, "ebb_buffered_bytes", None, lambda v: v == 0, dl(10), "the account back at 0")

    def test_control_a_larger_budget_shows_as_growth(self):
        # The same readers with an eight times larger budget (and a cap far above it): the test
        # sees what ebb holds, so the bound above is the budget's doing.
        ebb, base, held, grew = self.run_readers(
            {"limits": {"connection_buffer": 8 * BUDGET, "max_memory": 1024 * MIB}})
        print(f"\n  control, budget {8 * BUDGET // KIB} KiB: ebb holds {held / MIB:.1f} MiB,"
              f" VmRSS {base} KiB + {grew} KiB", flush=True)
        self.assertGreaterEqual(held, self.N * 4 * BUDGET)
        if not SANITIZED:
            self.assertGreater(grew, self.N * 4 * BUDGET // KIB)


class GlobalCap(StalledReaders):
    N = 60  # 60 x 32 KiB is almost twice the 1 MiB cap

    def test_at_max_memory_ebb_sheds_the_largest_holders_and_still_answers(self):
        cap = 1 * MIB
        fake = self.start_fake(self.app())
        ebb = self.start_ebb(fake, {"limits": {"max_memory": cap}, "log": {"access": False},
                                    "timeouts": {"client_send": "120s"}})
        normal = self.connect(ebb)
        self.stall(ebb, self.N)
        fake.wait_requests(self.N, dl(20))
        samples = []
        wait_metric(ebb, "ebb_memory_shed_connections_total", None, lambda v: v >= 1, dl(10), "a shed")
        # The normal client is answered while the stalled ones press on the cap; ebb's total never
        # passes the cap by more than one read (a budget, plus framing).
        for i in range(20):
            samples.append(self.buffered(ebb))
            self.assertOk(normal.request("GET", "/small", timeout=dl(2)), b"small",
                          f"normal request {i} while ebb is at its memory cap")
        samples.append(self.settle(fake, ebb, self.N))
        self.assertLessEqual(max(samples), cap + BUDGET + 1 * KIB, f"ebb_buffered_bytes samples {samples}")
        rec = ebb.wait_log("connection shed: buffers at limits.max_memory")
        self.assertEqual(rec.get("level"), "warn", rec)
        self.assertGreater(rec.get("held_bytes", 0), 0, rec)
        ex = scrape(ebb)
        self.assertGreaterEqual(ex.value("ebb_requests_unanswered_total", {"reason": "memory_shed"}), 1)
        self.assertGreater(ex.value("ebb_memory_pauses_total"), 0)
        self.assertGreaterEqual(ex.value("ebb_memory_shed_connections_total"), 1)

    def test_control_without_the_cap_the_same_readers_hold_more(self):
        fake = self.start_fake(self.app())
        ebb = self.start_ebb(fake, {"log": {"access": False}, "timeouts": {"client_send": "120s"}})
        self.stall(ebb, self.N)
        held = self.settle(fake, ebb, self.N)
        self.assertGreater(held, 1 * MIB + BUDGET + 1 * KIB, "the readers alone would pass the 1 MiB cap")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_memory_shed_connections_total"), 0)
        self.assertEqual(ex.value("ebb_requests_unanswered_total", {"reason": "memory_shed"}), 0)


class Http2Streams(StalledReaders):
    """An HTTP/2 stream's answer waits in ebb until the client's flow control and socket take it:
    those bytes count in ebb_buffered_bytes and in limits.max_memory like an HTTP/1 queue, and a
    connection whose streams hold the most is the one shed."""
    STREAMS = 20

    def stall_h2(self, ebb, conns: int) -> list:
        socks = self.stalled = []
        self.on_teardown(lambda: [s.close() for s in socks])
        for _ in range(conns):
            socks.append(stalled_h2(ebb.proxy_port, self.STREAMS))
        return socks

    def test_stream_answers_count_and_stay_within_their_budget(self):
        fake = self.start_fake(self.app())
        ebb = self.start_ebb(fake, {"log": {"access": False}, "timeouts": {"client_send": "120s"}})
        self.stall_h2(ebb, 1)
        held = self.settle(fake, ebb, self.STREAMS)
        print(f"\n  {self.STREAMS} stalled HTTP/2 streams: ebb holds {held / KIB:.0f} KiB", flush=True)
        # Each stream's answer fills its budget, no more; the connection's socket queue adds one
        # read buffer (32 KiB) at most.
        self.assertGreaterEqual(held, self.STREAMS * BUDGET // 2, "the streams' answers are not counted")
        self.assertLessEqual(held, self.STREAMS * (BUDGET + 1 * KIB) + 64 * KIB, "a stream holds more than its budget")
        for s in self.stalled:
            s.close()
        wait_metric(ebb, "ebb_buffered_bytes", None, lambda v: v == 0, dl(10), "the account back at 0")

    def test_at_max_memory_the_largest_http2_connection_is_shed(self):
        cap = 1 * MIB  # three connections of 20 streams hold about twice that
        fake = self.start_fake(self.app())
        ebb = self.start_ebb(fake, {"limits": {"max_memory": cap}, "log": {"access": False},
                                    "timeouts": {"client_send": "120s"}})
        normal = self.connect(ebb)
        self.stall_h2(ebb, 3)
        wait_metric(ebb, "ebb_memory_shed_connections_total", None, lambda v: v >= 1, dl(20), "a shed")
        self.assertOk(normal.request("GET", "/small", timeout=dl(2)), b"small")
        held = wait_stable(lambda: self.buffered(ebb), 0.5, dl(30), "ebb_buffered_bytes")
        self.assertLessEqual(held, cap + BUDGET + 1 * KIB)
        rec = ebb.wait_log("connection shed: buffers at limits.max_memory")
        self.assertGreater(rec.get("held_bytes", 0), 0, rec)
        self.assertGreaterEqual(scrape(ebb).value("ebb_requests_unanswered_total", {"reason": "memory_shed"}), 1)


class ProxyBuffering(StalledReaders):
    N = 20
    BODY = 192 * KIB  # past what the kernel takes for a stalled reader (about 100 KiB)

    def app(self):
        return route({"/big": send_huge(self.BODY, chunk=64 * KIB), "/16k": ok(b"x" * 16 * KIB),
                      "/small": ok(b"small")})

    def start(self, budget: int, target: str = "/big"):
        fake = self.start_fake(self.app())
        ebb = self.start_ebb(fake, {
            "limits": {"connection_buffer": budget},
            # Two requests at the app at once; others wait at most 1s, then 503.
            "upstream_limits": {"max_concurrency": 2, "queue_size": 100, "queue_timeout": "1s"},
            "log": {"access": False}, "timeouts": {"client_send": "120s"}})
        self.stall(ebb, self.N, target)
        return fake, ebb

    def test_small_answers_never_pin_the_app_with_the_default_budget(self):
        # 16 KiB answers to readers that never read, two slots at the app: every one gets through.
        fake, ebb = self.start(BUDGET, "/16k")
        fake.wait_requests(self.N, dl(10))
        wait_metric(ebb, "ebb_upstream_active_requests", None, lambda v: v == 0, dl(5), "free slots")
        self.assertOk(self.connect(ebb).request("GET", "/small", timeout=dl(2)), b"small")

    def test_answers_that_fit_the_budget_free_the_app_whatever_the_reader(self):
        fake, ebb = self.start(256 * KIB)
        # Each answer is read whole from the app and its slot given back, although no client
        # reads: all N get through two slots, one after the other.
        held = self.settle(fake, ebb, self.N)
        wait_metric(ebb, "ebb_upstream_active_requests", None, lambda v: v == 0, dl(5), "free slots")
        self.assertGreaterEqual(held, self.N * (self.BODY - 128 * KIB), "ebb holds the answers")
        ex = scrape(ebb)
        self.assertEqual(ex.value("ebb_upstream_queue_depth"), 0)
        # And a normal client is served at once, on a pooled connection the readers gave back.
        opened = ex.value("ebb_upstream_connections_opened_total")
        c = self.connect(ebb)
        t0 = time.monotonic()
        self.assertOk(c.request("GET", "/small", timeout=dl(2)), b"small")
        self.assertLess(time.monotonic() - t0, dl(0.5), "the normal client waited")
        self.assertEqual(scrape(ebb).value("ebb_upstream_connections_opened_total"), opened,
                         "the app connections of the stalled answers were not back in the pool")

    def test_control_answers_past_the_budget_pin_the_app(self):
        # The same answers with the default 32 KiB budget do not fit: the first two readers keep
        # their slots (and app connections), the rest queue, and a normal client times out.
        fake, ebb = self.start(BUDGET)
        wait_metric(ebb, "ebb_upstream_queue_depth", None, lambda v: v == self.N - 2, dl(10), "the rest queued")
        self.assertEqual(scrape(ebb).value("ebb_upstream_active_requests"), 2)
        c = self.connect(ebb)
        self.assertEbbError(c.request("GET", "/small", timeout=dl(5)), 503)


if __name__ == "__main__":
    unittest.main()
