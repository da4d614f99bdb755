"""ebb's lifecycle seen from a test: waiting for `ready` (ebb logs `listening` before it installs
its signal handlers: signal it only after `ready`), for its exit with its whole log read, each
lifecycle line exactly once, and ebb's own clock in its log.
"""

from __future__ import annotations

import time
from datetime import datetime

from harness.ebb import Ebb
from harness.wait import dl

# How early an ebb timer may appear to fire, seen from the test's clock: libuv caches the loop
# time at the start of an iteration and counts timers in whole milliseconds.
EARLY = 0.03

LIFECYCLE_LINES = ("listening", "ready", "drain started", "listener closed", "drained", "exiting")


def wait_stderr_eof(ebb: Ebb, timeout: float = 5.0) -> None:
    """After ebb exited: waits until its stderr has been read to the end."""
    ebb.read_log_to_end(timeout)


def assert_lifecycle_once(test, ebb: Ebb, lines=LIFECYCLE_LINES) -> None:
    """Each lifecycle log line exactly once (SPEC §6). Call after ebb exited."""
    wait_stderr_eof(ebb)
    counts = {m: len(ebb.logs(m)) for m in lines}
    bad = {m: n for m, n in counts.items() if n != 1}
    test.assertFalse(bad, f"lifecycle log lines must appear exactly once; counts {counts}")


def assert_drained_clean(test, ebb: Ebb, t0: float, timeout: float | None = None) -> None:
    """A drain begun at t0 ended well: ebb exits 0, its `drained` line cut nothing, and each
    lifecycle line appeared once."""
    code, _ = exit_timed(ebb, t0, timeout if timeout is not None else dl(10))
    test.assertEqual(code, 0)
    test.assertEqual(ebb.logs("drained")[0].get("cut"), 0)
    assert_lifecycle_once(test, ebb)


def log_time(rec: dict) -> float:
    """A log record's `ts` (RFC 3339, UTC, milliseconds) as seconds since the epoch: ebb's own
    clock, for intervals between two of its lines that a loaded test process cannot blur."""
    return datetime.strptime(rec["ts"].replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def exit_timed(ebb: Ebb, t0: float, timeout: float) -> tuple:
    """Waits for ebb to exit; returns (exit code, seconds since t0). Its whole log has been
    read when this returns."""
    code = ebb.wait_exit(timeout)
    elapsed = time.monotonic() - t0
    wait_stderr_eof(ebb)
    return code, elapsed


def wait_exit(ebb: Ebb, timeout: float) -> int:
    """ebb.wait_exit, then reads its log to the end (so every line it wrote can be checked)."""
    code = ebb.wait_exit(timeout)
    wait_stderr_eof(ebb)
    return code


def wait_ready(ebb: Ebb, timeout: float | None = None) -> Ebb:
    """Waits for the `ready` log line, so that /readyz answers 200 before the test acts."""
    ebb.wait_log("ready", timeout if timeout is not None else dl(5))
    return ebb
