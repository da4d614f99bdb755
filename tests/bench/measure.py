"""What the benchmark reads from the kernel and from wrk: CPU time and memory of a process tree,
pinning (affinity of every thread), the machine's busy time for the noise guard, and wrk's report.
Python 3 stdlib only; Linux /proc."""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness.ebb import status_kib  # noqa: E402  (/proc/PID/status, as the e2e harness reads it)

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU sets --------------------------------------------------------------------------------

def parse_cpus(text: str) -> list[int]:
    """"0-2,5" -> [0, 1, 2, 5] (the kernel's list format, as in Cpus_allowed_list)."""
    cpus = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (expected e.g. 0 or 0-1 or 0,2)")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    if not cpus:
        raise ValueError(f"empty CPU list: {text!r}")
    return sorted(cpus)


def cpus_text(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


# -- process trees ---------------------------------------------------------------------------

def tasks(pid: int) -> list[int]:
    """Thread ids of a process ([] once it is gone)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError):
        return []


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx: master and workers), from /proc/*/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        for t in tasks(p):
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def cpu_seconds(pids) -> float:
    """utime + stime of these processes (all their threads, dead ones included), in seconds.
    A process that is gone counts 0: callers re-list trees before each reading."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kib(pids) -> int:
    return sum(status_kib(p, "VmRSS") for p in pids)


def peak_rss_kib(pids) -> int:
    return sum(status_kib(p, "VmHWM") for p in pids)


def reset_peak_rss(pids) -> bool:
    """Resets VmHWM to the current RSS (clear_refs 5, Linux 4.0+); False where not allowed."""
    try:
        for p in pids:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        return True
    except OSError:
        return False


# -- pinning ---------------------------------------------------------------------------------

def pin(pids, cpus) -> None:
    """Sets the affinity of every thread of these processes (threads made later inherit it)."""
    for pid in pids:
        for tid in tasks(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                pass


def pinning_problems(pids, cpus) -> list[str]:
    """Every thread of these processes whose Cpus_allowed_list is not exactly `cpus`."""
    want, problems = sorted(cpus), []
    for pid in pids:
        for tid in tasks(pid):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    line = next(l for l in f if l.startswith("Cpus_allowed_list:"))
            except (FileNotFoundError, ProcessLookupError):
                continue
            have = parse_cpus(line.split(":", 1)[1])
            if have != want:
                problems.append(f"pid {pid} thread {tid} may run on CPUs {cpus_text(have)}, "
                                f"not {cpus_text(want)}")
    return problems


# -- the noise guard -------------------------------------------------------------------------

def _busy(fields: list) -> tuple[float, float, float]:
    """(busy, irq + softirq, steal) in seconds from one cpu line of /proc/stat."""
    v = [int(x) / CLK_TCK for x in fields] + [0.0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    # Busy time that processes are charged for, plus steal (the hypervisor gave our CPU to someone
    # else). irq and softirq are kept apart: loopback TCP of the benchmark's own traffic lands
    # there and no process is charged for it, so it cannot be told from other load.
    return user + nice + system + steal, irq + softirq, steal


def _machine_cpu(proxy_cpus) -> dict:
    """The machine's CPU time by kind, in seconds, from /proc/stat: all CPUs, and the proxy's."""
    out = {"busy": 0.0, "irq": 0.0, "steal": 0.0, "busy_proxy_cpus": 0.0}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name == "cpu":
                out["busy"], out["irq"], out["steal"] = _busy(fields)
            elif name.startswith("cpu") and int(name[3:]) in proxy_cpus:
                out["busy_proxy_cpus"] += _busy(fields)[0]
    return out


@dataclass
class CpuSnapshot:
    t: float
    machine: dict
    own: float
    kthreads: float
    proxies: float


@dataclass
class Noise:
    """CPU that processes other than the benchmark's own took during a window."""
    wall_s: float
    busy_s: float     # the whole machine (user + nice + system + steal)
    own_s: float      # the benchmark's processes, the harness and its reaped children (wrk)
    kthreads_s: float  # kernel threads (ksoftirqd, kworkers): apart, like irq, for the same reason
    irq_s: float      # irq + softirq, reported apart (see _busy)
    steal_s: float
    proxy_cpus_other_s: float  # of the other load, what ran on the proxy CPUs (busy there - proxies)

    @property
    def other_s(self) -> float:
        return max(0.0, self.busy_s - self.own_s - self.kthreads_s)

    @property
    def other_cores(self) -> float:
        """Other load as a fraction of one core."""
        return self.other_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "machine_busy_s": round(self.busy_s, 3),
                "own_s": round(self.own_s, 3), "kernel_threads_s": round(self.kthreads_s, 3),
                "other_s": round(self.other_s, 3),
                "other_cores": round(self.other_cores, 4), "irq_softirq_s": round(self.irq_s, 3),
                "steal_s": round(self.steal_s, 3),
                "other_on_proxy_cpus_s": round(max(0.0, self.proxy_cpus_other_s), 3)}


class CpuLedger:
    """Tells the benchmark's own CPU time from everyone else's. `own_pids()` lists the processes
    the benchmark keeps running (proxies, upstream); the harness itself and the children it has
    reaped (wrk, curl, helpers) come from getrusage."""

    def __init__(self, own_pids, proxy_pids, proxy_cpus):
        self.own_pids, self.proxy_pids, self.proxy_cpus = own_pids, proxy_pids, set(proxy_cpus)

    def take(self) -> CpuSnapshot:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (cpu_seconds(self.own_pids()) + me.ru_utime + me.ru_stime
               + kids.ru_utime + kids.ru_stime)
        kthreads = cpu_seconds(process_tree(2))  # kthreadd and its children
        return CpuSnapshot(time.monotonic(), _machine_cpu(self.proxy_cpus), own, kthreads,
                           cpu_seconds(self.proxy_pids()))

    @staticmethod
    def between(a: CpuSnapshot, b: CpuSnapshot) -> Noise:
        return Noise(wall_s=b.t - a.t, busy_s=b.machine["busy"] - a.machine["busy"],
                     own_s=b.own - a.own, kthreads_s=b.kthreads - a.kthreads,
                     irq_s=b.machine["irq"] - a.machine["irq"],
                     steal_s=b.machine["steal"] - a.machine["steal"],
                     proxy_cpus_other_s=(b.machine["busy_proxy_cpus"] - a.machine["busy_proxy_cpus"])
                     - (b.proxies - a.proxies))


# -- wrk -------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int


def parse_wrk(out: str) -> WrkResult:
    """wrk --latency's report; raises ValueError when it is not one (wrk failed to run)."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise ValueError(f"not a wrk report:\n{out}")

    def pct(p):
        q = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        return float(q.group(1)) * _UNITS_MS[q.group(2)] if q else float("nan")

    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(requests=int(m.group(1)),
                     seconds=float(m.group(2)) * _UNITS_MS[m.group(3)] / 1000.0,
                     rps=float(rps.group(1)), p50_ms=pct(50), p99_ms=pct(99),
                     socket_errors=sum(int(x) for x in errs.groups()) if errs else 0,
                     non_2xx=int(non2xx.group(1)) if non2xx else 0)


# -- h2load ----------------------------------------------------------------------------------

def parse_h2load(out: str, log_lines) -> WrkResult:
    """h2load's report, with p50/p99 from its --log-file (one line per request: start time,
    status, duration in µs; h2load prints no percentiles). Raises ValueError when it is not one.
    Errors: requests that failed, errored or timed out, and answers outside 2xx."""
    fin = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not fin or not req or not codes:
        raise ValueError(f"not an h2load report:\n{out}")
    durations = sorted(int(f[2]) for f in (line.split("\t") for line in log_lines) if len(f) >= 3)

    def pct(p):
        return durations[min(len(durations) - 1, int(len(durations) * p / 100))] / 1000.0 if durations \
            else float("nan")

    succeeded = int(req.group(4))
    return WrkResult(requests=succeeded, seconds=float(fin.group(1)) * _UNITS_MS[fin.group(2)] / 1000.0,
                     rps=float(fin.group(3)), p50_ms=pct(50), p99_ms=pct(99),
                     socket_errors=int(req.group(5)) + int(req.group(6)) + int(req.group(7)),
                     non_2xx=int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)))
