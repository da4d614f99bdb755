"""ebb's admin endpoints as a test calls them: one request on a fresh connection, the probes
(`readyz`, `healthz`, `poll_readyz`), and `/metrics` parsed (`scrape`, `wait_metric`).
"""

from __future__ import annotations

import time

from harness.client import HttpClient
from harness.ebb import Ebb
from harness.prometheus import Exposition, parse_prometheus
from harness.wait import HarnessError, WaitTimeout, dl, wait_until


def admin_request(ebb: Ebb, method: str = "GET", path: str = "/healthz", headers=(), *,
                  host: str = "127.0.0.1", timeout: float | None = None):
    """One request to the admin listener on a fresh connection; returns the Response."""
    c = HttpClient(ebb.admin_port, host=host, timeout=timeout if timeout is not None else dl(5))
    try:
        return c.request(method, path, headers, host=f"{host}:{ebb.admin_port}")
    finally:
        c.close()


def readyz(ebb: Ebb) -> tuple:
    r = admin_request(ebb, "GET", "/readyz")
    return r.status, r.body.decode("latin-1").strip()


def healthz(ebb: Ebb) -> tuple:
    r = admin_request(ebb, "GET", "/healthz")
    return r.status, r.body.decode("latin-1").strip()


def poll_readyz(ebb: Ebb, status: int, body: str, timeout: float, interval: float = 0.005) -> float:
    """Polls /readyz until it answers (status, body); returns time.monotonic() of that answer."""
    seen = []

    def check():
        got = readyz(ebb)
        if not seen or seen[-1] != got:
            seen.append(got)
        return got == (status, body)
    try:
        wait_until(check, timeout, f"/readyz to answer {status} {body!r}", interval)
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; answers seen, in order: {seen}") from None
    return time.monotonic()


def scrape(ebb: Ebb) -> "Exposition":
    r = admin_request(ebb, "GET", "/metrics")
    if r.status != 200:
        raise HarnessError(f"/metrics answered {r!r}")
    return parse_prometheus(r.body.decode("utf-8"))


def wait_metric(ebb: Ebb, name: str, labels: dict | None, pred, timeout: float, what: str = ""):
    """Scrapes until pred(value of the sample) is true; returns the last Exposition."""
    last = {}

    def check():
        ex = scrape(ebb)
        last["v"] = ex.value(name, labels)
        return ex if pred(last["v"]) else None
    try:
        return wait_until(check, timeout, what or f"{name}{labels or ''}", 0.01)
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; last value {last.get('v')}") from None
