"""A single-node Kubernetes 1.20 inside a network namespace of its own: etcd, the control plane,
containerd, kubelet and kube-proxy, all started by pid from this process, which enters the
namespace first (setns, like `nsenter --net`: `ip netns exec` would remount /sys and hide the
cgroup mounts from runc). Pod and Service addresses exist only in there; the namespace's one
route leads to a bridge without ports, so no packet can leave it. down() undoes everything."""

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "zero-downtime"))
from zd_procs import Proc  # noqa: E402

NETNS = "ebb-k8s"
NODE = "ebb-node"
NODE_BRIDGE = "node0"
NODE_IP = "10.213.0.2"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"
STATE = Path("/var/lib/ebb-k8s")  # etcd, containerd, kubelet, certificates: removed by down()
RUN = Path("/run/ebb-k8s")        # sockets and containerd's state
TOKEN = "ebb-proof-admin-token"
CLONE_NEWNET = 0x40000000
CGROUP_NAMES = re.compile(r"k8s\.io|kubepods.*|[0-9a-f]{64}")
# Outside our folders, the 1.20 kubelet, containerd's shims and the CNI plugins write to fixed
# paths; what they create there during a run is removed by down().
FIXED_PATHS = [Path("/var/log/pods"), Path("/var/log/containers"), Path("/run/containerd"),
               Path("/var/lib/cni")]
# The kubelet sets these host-wide on start (protect-kernel-defaults would make it fail instead);
# down() puts the values it found back.
KERNEL_SYSCTLS = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                  "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"]


def log(msg):
    print(f"[k8s-proof] {msg}", flush=True)


def run(argv, check=True, timeout=120, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def wait_for(what, predicate, timeout, proc=None, interval=0.25):
    """Polls predicate (a condition of the cluster: no event tells us) until true; fails early if
    proc died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, subprocess.SubprocessError, RuntimeError, ValueError):
            pass
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before {what}; "
                               f"log: {proc.log_path}\n{Path(proc.log_path).read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        time.sleep(interval)


def ns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def mounts_under(prefixes):
    """Mount points under any of prefixes, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if any(mp == str(p) or mp.startswith(str(p) + "/") for p in prefixes):
                found.append(mp)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def cgroup_dirs():
    """The cgroup directories the runtime may create for pods, directly under each controller:
    "k8s.io" (containerd's namespace), "kubepods*", or a container id. Nothing else under
    /sys/fs/cgroup is ours to remove."""
    found = set()
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        try:
            found.update(d for d in ctrl.iterdir() if d.is_dir() and CGROUP_NAMES.fullmatch(d.name))
        except OSError:
            continue
    return found


class Cluster:
    def __init__(self, bindir, logdir, images):
        self.bin = Path(bindir)
        self.logdir = Path(logdir)
        self.images = images  # {name: OCI archive}
        self.procs = []  # started order; stopped in reverse
        self.kubeconfig = STATE / "admin.kubeconfig"
        self.containerd_sock = RUN / "containerd" / "containerd.sock"
        self.netns_inode = None
        self.host_ns = None
        self.before = {}
        self.owned = False  # down() touches nothing unless this run set the cluster up

    # ---- helpers -------------------------------------------------------------------------
    def kubectl(self, *args, check=True, timeout=120, input=None):
        return run([self.bin / "kubectl", "--kubeconfig", self.kubeconfig, *args], check=check,
                   timeout=timeout, input=input)

    def ctr(self, *args, check=True, timeout=120):
        return run(["ctr", "--address", self.containerd_sock, "-n", "k8s.io", *args], check=check,
                   timeout=timeout)

    def _start(self, name, argv):
        p = Proc(name, [str(a) for a in argv], self.logdir, capture=False,
                 env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      "HOME": str(STATE), "TMPDIR": str(STATE / "tmp")})
        self.procs.append(p)
        return p

    # ---- bring-up ------------------------------------------------------------------------
    def _record_host(self):
        self.before["fixed"] = {p: (set(os.listdir(p)) if p.is_dir() else None) for p in FIXED_PATHS}
        self.before["netns"] = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        # `ip netns add` makes /run/netns a mount point of its own the first time.
        self.before["netns_dir"] = ("mounted" if mounts_under([Path("/run/netns")]) else
                                    "dir" if os.path.isdir("/run/netns") else "none")
        self.before["cgroups"] = cgroup_dirs()
        self.before["sysctl"] = {}
        for k in KERNEL_SYSCTLS:
            try:
                self.before["sysctl"][k] = Path("/proc/sys", k).read_text().strip()
            except OSError:
                pass

    def _enter_netns(self):
        run(["ip", "netns", "add", NETNS])
        self.netns_inode = ns_inode(f"/run/netns/{NETNS}")
        libc = ctypes.CDLL(None, use_errno=True)
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{NETNS}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the cluster's network namespace")
        os.close(fd)
        if ns_inode("/proc/self/ns/net") != self.netns_inode:
            raise RuntimeError("setns did not take: still in the host's network namespace")
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", NODE_BRIDGE, "type", "bridge"],
                    ["ip", "addr", "add", f"{NODE_IP}/24", "dev", NODE_BRIDGE],
                    ["ip", "link", "set", NODE_BRIDGE, "up"],
                    # A port-less bridge: ClusterIP connects find a route (and so reach
                    # kube-proxy's DNAT) while anything else goes nowhere.
                    ["ip", "route", "add", "default", "dev", NODE_BRIDGE]):
            run(cmd)
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")  # this namespace's own copy

    def _certs(self):
        d = STATE / "pki"
        d.mkdir(parents=True)
        sans = (f"subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:{API_SERVICE_IP},DNS:localhost,"
                "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc")
        (d / "san.ext").write_text(sans + "\n")
        for cmd in (
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key",
             "-out", d / "ca.crt", "-days", "7", "-subj", "/CN=ebb-proof-ca"],
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "apiserver.key",
             "-out", d / "apiserver.csr", "-subj", "/CN=kube-apiserver"],
            ["openssl", "x509", "-req", "-in", d / "apiserver.csr", "-CA", d / "ca.crt", "-CAkey",
             d / "ca.key", "-CAcreateserial", "-out", d / "apiserver.crt", "-days", "7",
             "-extfile", d / "san.ext"],
            ["openssl", "genrsa", "-out", d / "sa.key", "2048"],
            ["openssl", "rsa", "-in", d / "sa.key", "-pubout", "-out", d / "sa.pub"],
        ):
            run(cmd)
        # 1.20 has no insecure port: everyone (us, the kubelet, the controllers) uses one admin token.
        (d / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "proof",
            "clusters": [{"name": "proof", "cluster": {"server": "https://127.0.0.1:6443",
                                                       "certificate-authority": str(d / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "proof", "context": {"cluster": "proof", "user": "admin"}}]}))

    def _containerd_config(self):
        cni = STATE / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-ebb-proof.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "ebb-proof",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "dataDir": str(cni / "ipam"),
                                  "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}}]},
            indent=1))
        conf = STATE / "containerd.toml"
        pause = next(n for n in self.images if "/pause:" in n)
        conf.write_text(f"""version = 2
root = "{STATE}/containerd"
state = "{RUN}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.containerd_sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{STATE}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Without CAP_SYS_RESOURCE runc cannot lower a container's oom_score_adj below ours and fails
  # with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}/net.d"
""")
        return conf

    def up(self):
        if os.path.exists(f"/run/netns/{NETNS}") or STATE.exists() or RUN.exists():
            raise RuntimeError(f"a previous run's cluster is still there (/run/netns/{NETNS}, {STATE} "
                               f"or {RUN}): another run is going on, or a killed one left it: "
                               "`make k8s-proof-clean` removes it")
        self.owned = True
        self._record_host()
        for d in (STATE / "tmp", RUN / "containerd"):
            d.mkdir(parents=True)
        # What the host had before, for `--clean` after a run that was killed outright.
        (STATE / "host-before.json").write_text(json.dumps({
            "fixed": {str(p): (sorted(v) if v is not None else None) for p, v in self.before["fixed"].items()},
            "netns": sorted(self.before["netns"]), "netns_dir": self.before["netns_dir"], "cgroups": sorted(map(str, self.before["cgroups"])),
            "sysctl": self.before["sysctl"]}))
        self._enter_netns()
        self._certs()
        pki = STATE / "pki"
        b = self.bin

        etcd = self._start("etcd", [
            "etcd", "--name", "proof", "--data-dir", STATE / "etcd",
            "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "proof=http://127.0.0.1:2380", "--listen-metrics-urls", "",
            "--log-level", "warn"])
        wait_for("etcd health", lambda: b'"health":"true"' in run(
            ["curl", "-sf", "http://127.0.0.1:2379/health"], check=False).stdout.encode(), 60, etcd)

        api = self._start("kube-apiserver", [
            b / "kube-apiserver", "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", "0.0.0.0", "--advertise-address", NODE_IP, "--secure-port", "6443",
            "--service-cluster-ip-range", SERVICE_CIDR, "--token-auth-file", pki / "tokens.csv",
            "--tls-cert-file", pki / "apiserver.crt", "--tls-private-key-file", pki / "apiserver.key",
            "--client-ca-file", pki / "ca.crt",
            "--service-account-key-file", pki / "sa.pub", "--service-account-signing-key-file", pki / "sa.key",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--authorization-mode", "Node,RBAC", "--allow-privileged=true",
            "--cert-dir", STATE / "apiserver-certs",
            # `kubectl logs` reaches the kubelet by the node's address, never by a name to resolve.
            "--kubelet-preferred-address-types", "InternalIP", "--v", "1"])
        wait_for("API server ready", lambda: self.kubectl("get", "--raw", "/readyz", check=False,
                                                          timeout=10).stdout.strip() == "ok", 120, api)

        self._start("kube-controller-manager", [
            b / "kube-controller-manager", "--kubeconfig", self.kubeconfig, "--leader-elect=false",
            "--service-account-private-key-file", pki / "sa.key", "--root-ca-file", pki / "ca.crt",
            "--use-service-account-credentials=false", "--bind-address", "127.0.0.1", "--port", "0",
            "--flex-volume-plugin-dir", STATE / "volume-plugins", "--v", "1"])
        self._start("kube-scheduler", [
            b / "kube-scheduler", "--kubeconfig", self.kubeconfig, "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--port", "0", "--v", "1"])

        conf = self._containerd_config()
        containerd = self._start("containerd", ["containerd", "--config", conf, "--log-level", "warn"])
        wait_for("containerd", lambda: self.ctr("version", check=False, timeout=10).returncode == 0,
                 60, containerd)
        for name, archive in self.images.items():
            self.ctr("images", "import", "--no-unpack=false", archive, timeout=300)
        listed = self.ctr("images", "ls", "-q").stdout.split()
        missing = [n for n in self.images if n not in listed]
        if missing:
            raise RuntimeError(f"images not imported: {missing} (have {listed})")

        kubelet = self._start("kubelet", [
            b / "kubelet", "--kubeconfig", self.kubeconfig, "--hostname-override", NODE,
            "--node-ip", NODE_IP, "--root-dir", STATE / "kubelet", "--cert-dir", STATE / "kubelet-pki",
            "--container-runtime", "remote", "--container-runtime-endpoint", f"unix://{self.containerd_sock}",
            "--containerd", self.containerd_sock, "--runtime-request-timeout", "5m",
            # Pods' cgroups as containerd makes them; no QoS hierarchy or allocatable enforcement
            # (this sandbox cannot set them up).
            "--cgroups-per-qos=false", "--enforce-node-allocatable=", "--cgroup-driver", "cgroupfs",
            "--fail-swap-on=false", "--read-only-port", "0", "--address", NODE_IP,
            "--resolv-conf", "",  # pods get no name server: there is none in here
            "--volume-plugin-dir", STATE / "volume-plugins", "--image-gc-high-threshold", "100",
            "--eviction-hard", "memory.available<1Mi,nodefs.available<1%,imagefs.available<1%",
            # The 1.20 kubelet notices a pod whose containers exited by themselves only at its
            # next sync: 10 s instead of a minute keeps the naive control's rollouts short.
            "--sync-frequency", "10s", "--node-status-update-frequency", "2s", "--v", "1"])
        wait_for("node Ready", lambda: self.kubectl(
            "get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False, timeout=10).stdout.strip() == "True", 180, kubelet, interval=0.5)

        self._start("kube-proxy", [
            b / "kube-proxy", "--kubeconfig", self.kubeconfig, "--hostname-override", NODE,
            "--proxy-mode", "iptables", "--cluster-cidr", POD_CIDR,
            # Leave the host-wide conntrack sysctls alone.
            "--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0",
            "--conntrack-tcp-timeout-close-wait", "0", "--oom-score-adj", "0",
            "--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256",
            "--v", "2"])  # 2: each rules sync and how long it took
        wait_for("kube-proxy's service rules", lambda: "KUBE-SERVICES" in run(
            ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], check=False).stdout and API_SERVICE_IP in run(
            ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], check=False).stdout, 60, self.procs[-1])
        wait_for("default service account", lambda: self.kubectl(
            "get", "serviceaccount", "default", check=False, timeout=10).returncode == 0, 60)

    def check_alive(self):
        dead = [p for p in self.procs if not p.alive()]
        if dead:
            p = dead[0]
            raise RuntimeError(f"{p.name} exited ({p.popen.returncode}); log: {p.log_path}\n"
                               f"{Path(p.log_path).read_text()[-3000:]}")

    # ---- teardown ------------------------------------------------------------------------
    @classmethod
    def clean(cls):
        """down() for a run that could not do it itself (killed outright)."""
        cl = cls("/nonexistent", "/nonexistent", {})  # starts nothing, so logs nothing
        saved = STATE / "host-before.json"
        if saved.exists():
            b = json.loads(saved.read_text())
            cl.before = {"fixed": {Path(p): (set(v) if v is not None else None) for p, v in b["fixed"].items()},
                         "netns": set(b["netns"]), "netns_dir": b["netns_dir"], "cgroups": set(map(Path, b["cgroups"])),
                         "sysctl": b["sysctl"]}
        cl.netns_inode = ns_inode(f"/run/netns/{NETNS}")
        cl.owned = True
        return cl.down()

    def _pids_in(self, inodes):
        pids = []
        for e in os.listdir("/proc"):
            if e.isdigit() and int(e) != os.getpid():
                if ns_inode(f"/proc/{e}/ns/net") in inodes:
                    pids.append(int(e))
        return pids

    def _pod_netns_inodes(self):
        new = set(os.listdir("/run/netns")) - self.before.get("netns", set()) - {NETNS} \
            if os.path.isdir("/run/netns") else set()
        return {n: ns_inode(f"/run/netns/{n}") for n in new}

    def down(self):
        """Undoes up(), whatever state it reached. Returns a list of what it could not undo."""
        problems = []
        if not self.owned:
            return problems

        def step(what, fn):
            t = time.monotonic()
            try:
                fn()
            except Exception as e:  # teardown goes on whatever one step met
                problems.append(f"{what}: {e}")
            if time.monotonic() - t > 2:
                log(f"teardown: {what} took {time.monotonic() - t:.1f}s")

        by_name = {p.name: p for p in self.procs}
        # Pods first, while the kubelet and containerd still run: the kubelet stops them and
        # containerd tears their network down (CNI DEL) and removes their namespaces.
        if "kubelet" in by_name and by_name["kubelet"].alive():
            step("delete pods", lambda: self.kubectl(
                "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=true",
                "--timeout=20s", check=False, timeout=40))
        for name in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager",
                     "kube-apiserver", "etcd"):
            if name in by_name:
                step(f"stop {name}", lambda p=by_name[name]: p.stop(grace=10))
                if by_name[name].killed:
                    log(f"teardown: {name} needed SIGKILL")
        if "containerd" in by_name and by_name["containerd"].alive():
            def remove_containers():
                for task in self.ctr("tasks", "ls", "-q", check=False, timeout=20).stdout.split():
                    self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False, timeout=20)
                    self.ctr("tasks", "delete", "-f", task, check=False, timeout=20)
                for c in self.ctr("containers", "ls", "-q", check=False, timeout=20).stdout.split():
                    self.ctr("containers", "delete", c, check=False, timeout=20)
            step("containerd: containers", remove_containers)
            step("stop containerd", lambda: by_name["containerd"].stop(grace=10))
        # Whatever is still in our namespace or a pod's (shims, containers) goes by pid.
        pod_ns = self._pod_netns_inodes()
        inodes = {i for i in pod_ns.values() if i} | ({self.netns_inode} if self.netns_inode else set())
        for sig in (signal.SIGKILL,):
            for pid in self._pids_in(inodes):
                step(f"kill {pid}", lambda pid=pid: os.kill(pid, sig))
        deadline = time.monotonic() + 10
        while self._pids_in(inodes) and time.monotonic() < deadline:
            time.sleep(0.1)  # the kernel reaps them; nothing to wait on but /proc
        left = self._pids_in(inodes)
        if left:
            problems.append(f"processes still in the cluster's namespaces: {left}")
        if self.host_ns is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(self.host_ns, CLONE_NEWNET) != 0:
                problems.append(f"setns back to the host: errno {ctypes.get_errno()}")
            os.close(self.host_ns)
            self.host_ns = None
        pod_ns_paths = [Path("/run/netns") / n for n in pod_ns]
        for mp in mounts_under([STATE, RUN, *pod_ns_paths]):
            r = run(["umount", "-l", mp], check=False)
            if r.returncode != 0 and mounts_under([Path(mp)]):
                problems.append(f"umount {mp}: {r.stderr.strip()}")
        for p in pod_ns_paths:
            step(f"remove {p}", lambda p=p: p.unlink(missing_ok=True))
        if os.path.exists(f"/run/netns/{NETNS}"):
            r = run(["ip", "netns", "del", NETNS], check=False)
            if r.returncode != 0:
                problems.append(f"ip netns del {NETNS}: {r.stderr.strip()}")
        nd = self.before.get("netns_dir")
        if nd in ("dir", "none") and os.path.isdir("/run/netns") and not os.listdir("/run/netns"):
            if mounts_under([Path("/run/netns")]):
                step("umount /run/netns", lambda: run(["umount", "/run/netns"]))
            if nd == "none":
                step("rmdir /run/netns", lambda: os.rmdir("/run/netns"))
        # Pods' cgroups that the runtime left (deepest first; rmdir only removes empty ones).
        if "cgroups" in self.before:
            for d in sorted(cgroup_dirs() - self.before["cgroups"], key=lambda d: len(d.parts), reverse=True):
                for sub in sorted((x for x in d.rglob("*") if x.is_dir()), key=lambda x: len(x.parts),
                                  reverse=True):
                    step(f"rmdir {sub}", lambda sub=sub: sub.rmdir())
                step(f"rmdir {d}", lambda d=d: d.rmdir())
        for p, had in self.before.get("fixed", {}).items():
            if not p.exists():
                continue
            if had is None:
                step(f"remove {p}", lambda p=p: shutil.rmtree(p))
            else:
                for e in set(os.listdir(p)) - had:
                    q = p / e
                    step(f"remove {q}", lambda q=q: shutil.rmtree(q) if q.is_dir() and not q.is_symlink()
                         else q.unlink())
        for k, v in self.before.get("sysctl", {}).items():
            try:
                if Path("/proc/sys", k).read_text().strip() != v:
                    Path("/proc/sys", k).write_text(v + "\n")
            except OSError as e:
                problems.append(f"restore sysctl {k}={v}: {e}")
        for d in (STATE, RUN):
            if d.exists():
                if mounts_under([d]):
                    problems.append(f"{d} still has mounts: {mounts_under([d])}")
                else:
                    step(f"remove {d}", lambda d=d: shutil.rmtree(d))
        return problems
