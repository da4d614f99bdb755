"""SPEC §4 streaming and §5's client_send row: 1 GiB each way with a flat footprint (VmHWM under
32 MiB), backpressure from a client that stops reading, the client_send timeout releasing both
sides, and a slow but moving download that must not be cut."""

import time
import unittest

from harness.case import EbbTestCase
from harness.data import GIB, KIB, MIB, StreamCheck, pattern_chunks
from harness.ebb import FOOTPRINT_LIMIT_KIB
from harness.handlers import send_huge
from harness.http import build_request
from harness.wait import SANITIZED, dl, wait_stable


def count_upload(req, conn):
    """Streams the request body through a StreamCheck, answers "<count> <crc>"."""
    req.check = StreamCheck()
    req.read_body(sink=req.check.update)
    return conn.respond(200, b"%d %d" % (req.check.count, req.check.crc))


class OneGiB(EbbTestCase):
    def assertFootprint(self, ebb, what):
        peak = ebb.rss_peak_kib()
        self.assertLess(peak, FOOTPRINT_LIMIT_KIB,
                        f"{what}: ebb's VmHWM is {peak} KiB, over {FOOTPRINT_LIMIT_KIB} KiB"
                        f"{' (sanitized build)' if SANITIZED else ''}")
        return peak

    def test_1gib_upload_streams_with_flat_footprint(self):
        fake, ebb = self.proxy(count_upload)
        c = self.connect(ebb, timeout=dl(60))
        t0 = time.monotonic()
        c.send(build_request("POST", "/upload", [("Content-Length", str(GIB)),
                                                 ("Content-Type", "application/octet-stream")]))
        sent = StreamCheck()
        for chunk in pattern_chunks(GIB):
            c.send(chunk)
            sent.update(chunk)
        r = c.read_response(timeout=dl(30))
        secs = time.monotonic() - t0
        self.assertOk(r, b"%d %d" % (GIB, sent.crc), "the app's count and CRC of the upload")
        (req,) = fake.requests
        self.assertTrue(req.complete)
        peak = self.assertFootprint(ebb, "1 GiB upload")
        print(f"\n  1 GiB upload through ebb: {secs:.2f}s, VmHWM {peak} KiB", flush=True)

    def test_1gib_download_streams_with_flat_footprint(self):
        fake, ebb = self.proxy(send_huge(GIB))
        c = self.connect(ebb, timeout=dl(60))
        t0 = time.monotonic()
        c.send(build_request("GET", "/download"))
        r = c.read_head()
        self.assertOk(r)
        got = StreamCheck()
        c.read_body_into(r, got.update, timeout=dl(60))
        secs = time.monotonic() - t0
        self.assertEqual(got.count, GIB)
        (req,) = fake.requests
        fake.wait_for(lambda: req.response_check.count == GIB, dl(5), "the app's send to finish")
        self.assertEqual(got.crc, req.response_check.crc, "downloaded bytes differ from the app's")
        peak = self.assertFootprint(ebb, "1 GiB download")
        print(f"\n  1 GiB download through ebb: {secs:.2f}s, VmHWM {peak} KiB", flush=True)


class SlowClients(EbbTestCase):
    # Small client receive buffer, so that the stall reaches ebb quickly and kernel buffers
    # between the app and the client stay small next to 1 GiB.
    RCVBUF = 256 * KIB

    def _start_download(self, config):
        fake, ebb = self.proxy(send_huge(GIB, chunk=64 * KIB), config)
        c = self.connect(ebb, rcvbuf=self.RCVBUF)
        c.send(build_request("GET", "/huge"))
        r = c.read_head()
        self.assertOk(r)
        return fake, ebb, c

    def test_stalled_reader_does_not_grow_memory(self):
        fake, ebb, c = self._start_download({"timeouts": {"client_send": "30s"}})
        c.read_exact(64 * KIB)  # ... and from here on the client reads nothing
        sent = wait_stable(fake.bytes_sent_total, 0.3, dl(10), "bytes the app managed to send")
        # Backpressure: ebb stopped reading the app. What the app got rid of fits in socket
        # buffers (up to 32 MiB receive + 4 MiB send on this kernel, per side) and ebb's own
        # bounded buffer, nowhere near the 1 GiB it wants to send.
        self.assertLess(sent, 128 * MIB, f"the app sent {sent} bytes to a client that reads "
                                         f"nothing: ebb does not stop reading the app")
        samples = []
        for _ in range(6):  # sampled over 0.5 s: whether it grows over time is the behaviour
            samples.append(ebb.rss_kib())
            time.sleep(0.1)
        self.assertLessEqual(max(samples) - min(samples), 2048,
                             f"ebb's VmRSS grows while the client is stalled: {samples} KiB")
        self.assertLess(max(samples), FOOTPRINT_LIMIT_KIB, f"VmRSS samples {samples} KiB")
        self.assertLess(ebb.rss_peak_kib(), FOOTPRINT_LIMIT_KIB)
        self.assertEqual(fake.bytes_sent_total(), sent, "ebb resumed reading the app")
        self.assertFalse(fake.conns[0].peer_closed, "cut long before client_send (30s)")

    def test_client_send_timeout_closes_stalled_reader_and_releases_upstream(self):
        fake, ebb, c = self._start_download({"timeouts": {"client_send": "1s"}})
        t_stop = time.monotonic()  # the client reads nothing from here on
        conn = fake.wait_conn_closed(0, dl(8))
        released = conn.peer_closed_at - t_stop
        self.assertGreaterEqual(released, 0.9, f"upstream released {released:.3f}s after the "
                                               f"client stopped reading: before client_send (1s)")
        self.assertLess(released, 1.0 + dl(3), "the upstream side was released too late")
        self.assertClosed(c, dl(5), "the stalled client must be closed once client_send passed")

    def test_slow_but_moving_download_is_not_cut(self):
        # 512 KiB every 200 ms (2.5 MiB/s) for 4.5 s, more than twice client_send (2s). Each read
        # opens the client's window; the kernel wakes ebb's writer once a third of its send
        # buffer (at most 4 MiB here) drained, i.e. at least every ~0.6 s: always progress.
        fake, ebb, c = self._start_download({"timeouts": {"client_send": "2s"}})
        got = 0
        t_end = time.monotonic() + 4.5
        while time.monotonic() < t_end:
            got += len(c.read_exact(512 * KIB, dl(2), "the next piece of a moving download"))
            time.sleep(0.2)  # the slow reader's pace is the behaviour under test
        self.assertFalse(fake.conns[0].peer_closed,
                         f"the app's side was closed ({fake.conns[0].peer_closed_how}) during a "
                         f"moving download")
        self.assertFalse(c.eof)
        self.assertGreater(got, 8 * MIB)


if __name__ == "__main__":
    unittest.main()
