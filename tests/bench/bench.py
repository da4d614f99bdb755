#!/usr/bin/env python3
"""Side-by-side benchmark: wrk through ebb, nginx and HAProxy to one nginx upstream, and
directly to that upstream, in one run. The figure of merit is the proxy's CPU time per request
(on 2 cores the load generator saturates first, so req/s alone flatters nobody).

usage: bench.py EBB_BIN [--duration 10] [--connections 50]
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} never opened")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except FileNotFoundError:
        return []


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return rps, total, p99_ms, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ebb")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ebb-bench-")
    ports = {k: free_port() for k in ("up", "nginx", "haproxy", "ebb", "ebb_admin")}
    procs = []

    def start(cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p

    nginx_common = f"worker_processes 1;\ndaemon off;\nerror_log {tmp}/%s.err;\npid {tmp}/%s.pid;\nevents {{ worker_connections 4096; }}\n"
    with open(f"{tmp}/up.conf", "w") as f:
        f.write(nginx_common % ("up", "up") + f"""http {{ access_log off; keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{ports['up']}; location / {{ return 200 "hello world\\n"; }} }} }}\n""")
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(nginx_common % ("nginx", "nginx") + f"""http {{ access_log off; keepalive_requests 10000000;
  upstream app {{ server 127.0.0.1:{ports['up']}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ports['nginx']};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }} }}\n""")
    with open(f"{tmp}/haproxy.cfg", "w") as f:
        f.write(f"""global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  option forwardfor
frontend fe
  bind 127.0.0.1:{ports['haproxy']}
  default_backend be
backend be
  http-reuse always
  server app 127.0.0.1:{ports['up']}
""")
    with open(f"{tmp}/ebb.yaml", "w") as f:
        f.write(f"""listen: 127.0.0.1:{ports['ebb']}
upstream: 127.0.0.1:{ports['up']}
admin: {{listen: 127.0.0.1:{ports['ebb_admin']}}}
log: {{level: warn}}
shutdown: {{propagation_delay: 0s, quiet_period: 0s, propagation_max: 0s, drain_timeout: 1s}}
""")
    try:
        up = start(["nginx", "-c", f"{tmp}/up.conf", "-p", tmp])
        ng = start(["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp])
        hp = start(["haproxy", "-db", "-f", f"{tmp}/haproxy.cfg"])
        eb = start([args.ebb, "--config", f"{tmp}/ebb.yaml"])
        for k in ("up", "nginx", "haproxy", "ebb"):
            wait_port(ports[k])
        time.sleep(0.2)  # let nginx fork its worker before pids are collected
        targets = [
            ("direct", ports["up"], []),
            ("ebb", ports["ebb"], [eb.pid]),
            ("nginx", ports["nginx"], children(ng.pid) or [ng.pid]),
            ("haproxy", ports["haproxy"], [hp.pid]),
        ]
        rows = []
        for name, port, pids in targets:
            url = f"http://127.0.0.1:{port}/"
            subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True)  # warm pools
            cpu0 = cpu_seconds(pids) if pids else 0
            out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url],
                                 capture_output=True, text=True).stdout
            cpu1 = cpu_seconds(pids) if pids else 0
            rps, total, p99, errors = parse_wrk(out)
            us = (cpu1 - cpu0) / total * 1e6 if pids and total else float("nan")
            rows.append((name, rps, p99, us, rss_kib(pids) if pids else 0, errors))
        print(f"wrk -t1 -c{args.connections} -d{args.duration}s, upstream nginx 'return 200', one run")
        print(f"{'target':10} {'req/s':>10} {'p99 ms':>8} {'cpu us/req':>11} {'rss KiB':>8} {'errors':>7}")
        for r in rows:
            print(f"{r[0]:10} {r[1]:10.0f} {r[2]:8.2f} {r[3]:11.2f} {r[4]:8d} {r[5]:7d}")
        base = {r[0]: r for r in rows}
        for other in ("nginx", "haproxy"):
            print(f"ebb/{other}: req/s x{base['ebb'][1] / base[other][1]:.2f}, "
                  f"cpu per request x{base['ebb'][3] / base[other][3]:.2f} (lower is better)")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if eb.poll() is None:
            eb.kill()


if __name__ == "__main__":
    sys.exit(main())
