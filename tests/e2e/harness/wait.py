"""Deadlines and waiting: every wait in the e2e tests polls a condition against a deadline, and
every deadline is stretched by `SLOW` under sanitizers (`EBB_TEST_SANITIZED=1`). Also the
harness's own failures (`HarnessError` and its kinds), which a test sees as assertion failures.
"""

from __future__ import annotations

import os
import time

SANITIZED = os.environ.get("EBB_TEST_SANITIZED", "0") == "1"
# Deadlines (never lower bounds) are multiplied by this: ASan+UBSan code runs 2-5x slower.
SLOW = 4.0 if SANITIZED else 1.0


def dl(seconds: float) -> float:
    """A deadline of `seconds`, stretched under sanitizers."""
    return seconds * SLOW


class HarnessError(AssertionError):
    """A test-visible failure raised by the harness (a timeout, an unexpected close...)."""


class WaitTimeout(HarnessError):
    pass


class ConnectionClosed(HarnessError):
    pass


def wait_until(pred, timeout: float, what: str, interval: float = 0.005):
    """Polls `pred()` until it returns a truthy value (returned) or `timeout` passes (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.2f}s waiting for {what}")
        time.sleep(interval)


def wait_stable(fn, quiet: float, timeout: float, what: str):
    """Polls fn() until its value has not changed for `quiet` seconds; returns that value."""
    deadline = time.monotonic() + timeout
    last, since = fn(), time.monotonic()
    while True:
        time.sleep(0.02)
        v = fn()
        now = time.monotonic()
        if v != last:
            last, since = v, now
        elif now - since >= quiet:
            return v
        if now >= deadline:
            raise WaitTimeout(f"{what} still changing after {timeout:.2f}s (last value {v})")
