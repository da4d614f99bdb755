"""Test data for big transfers: a pseudo-random pattern generated, never held, and `StreamCheck`,
which counts and CRCs what passed, so a lost, repeated or reordered buffer shows.
"""

from __future__ import annotations

import random
import zlib

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


# A pseudo-random pattern whose period (1 MiB + 13) is not a power of two, so a lost,
# repeated or reordered buffer of any usual size changes the CRC.
_PATTERN = random.Random(0xEBB).randbytes(MIB + 13)
_PATTERN2 = memoryview(_PATTERN + _PATTERN)
_PERIOD = len(_PATTERN)


def pattern_chunks(total: int, chunk: int = MIB, start: int = 0):
    """Yields `total` bytes of the pattern (from offset `start`) as zero-copy memoryviews."""
    assert chunk <= MIB
    off = start
    end = start + total
    while off < end:
        n = min(chunk, end - off)
        p = off % _PERIOD
        yield _PATTERN2[p:p + n]
        off += n


def pattern_bytes(n: int, start: int = 0) -> bytes:
    return b"".join(bytes(c) for c in pattern_chunks(n, start=start))


class StreamCheck:
    """Counts bytes and folds them into a CRC-32 (zlib releases the GIL on big buffers)."""

    def __init__(self):
        self.count = 0
        self.crc = 0

    def update(self, data) -> None:
        self.count += len(data)
        self.crc = zlib.crc32(data, self.crc)


def pattern_crc(total: int) -> int:
    sc = StreamCheck()
    for c in pattern_chunks(total):
        sc.update(c)
    return sc.crc
