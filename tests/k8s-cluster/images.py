"""The proof's container images, built here as OCI archives (nothing is pulled): a static pause,
ebb (the release build, which links everything but glibc statically, plus the glibc files it
loads) and the seed's naive app (static Go). `ctr images import` takes them as they are."""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
APPS = REPO / "tests" / "zero-downtime" / "apps"

PAUSE = "docker.io/ebb-proof/pause:local"
EBB = "docker.io/ebb-proof/ebb:local"
NAIVE = "docker.io/ebb-proof/naive:local"


def _layer(files):
    """An uncompressed, reproducible tar layer. files: {path in image: (bytes, mode)}; the
    directories above each file are added with mode 0755."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for path in files:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_oci(out, name, files, entrypoint, user="0:0"):
    """Writes an OCI image archive with one layer; its index names the image for containerd."""
    layer = _layer(files)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/",
                   "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    with tarfile.open(out, "w") as tar:
        lay = _blob(tar, layer)
        cfg = _blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **lay}]}
        man = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **man,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}
        for fname, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                            ("index.json", json.dumps(index).encode())):
            info = tarfile.TarInfo(fname)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out


def _read(path):
    return Path(path).read_bytes()


def glibc_files(binary):
    """What the dynamic loader brings in for binary (ldd), at the paths it looks for them, so the
    image holds exactly what the binary needs. Fails on anything but glibc: the release build
    must link the rest statically (the same rule as the static smoke test)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    files = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)(?:\s+=>\s+(\S+))?\s+\(0x", line)
        if not m or m.group(1).startswith("linux-vdso"):
            continue
        target = m.group(2) or m.group(1)
        base = os.path.basename(target)
        if not (base.startswith(("libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux"))):
            raise RuntimeError(f"{binary} loads {target}: only glibc may stay dynamic (ldd: {line.strip()})")
        files[target] = (_read(os.path.realpath(target)), 0o755)
        if m.group(2) and m.group(1).startswith("/"):
            files[m.group(1)] = files[target]
    if not files:
        raise RuntimeError(f"ldd found nothing for {binary}: {out}")
    return files


def build_pause(workdir):
    out = Path(workdir) / "pause"
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(HERE / "pause.c")], check=True)
    return out


def build_naive(workdir):
    """The seed's naive app, static (no cgo) so that its image is the binary alone."""
    out = Path(workdir) / "naive"
    gohome = Path(workdir) / "gohome"
    # Go's build cache beside the cluster binaries: without cgo the standard library is rebuilt,
    # about 30 s the first time.
    gocache = Path(os.environ.get("EBB_K8S_CACHE", "/var/cache/ebb-k8s")) / "go-apps-cache"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(gohome),
           "GOCACHE": str(gocache), "GOPATH": str(gohome / "gopath"), "GOFLAGS": "",
           "GOPROXY": "off", "GO111MODULE": "on", "GOWORK": "off", "GOTOOLCHAIN": "local",
           "GOENV": "off", "CGO_ENABLED": "0"}
    r = subprocess.run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "./naive"],
                       cwd=APPS, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"go build of the naive app failed:\n{r.stdout}{r.stderr}")
    shutil.rmtree(gohome, ignore_errors=True)
    return out


def build_all(workdir, ebb_bin):
    """Builds the three archives into workdir; returns {image name: archive path}."""
    workdir = Path(workdir)
    pause = build_pause(workdir)
    naive = build_naive(workdir)
    ebb_files = {"/usr/local/bin/ebb": (_read(ebb_bin), 0o755),
                 "/etc/ebb/ebb.yaml": (_read(REPO / "config" / "ebb.yaml"), 0o644),
                 "/etc/passwd": (b"root:x:0:0:root:/root:/sbin/nologin\n"
                                 b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644),
                 "/etc/group": (b"root:x:0:\nnonroot:x:65532:\n", 0o644)}
    ebb_files.update(glibc_files(ebb_bin))
    return {
        PAUSE: write_oci(workdir / "pause.oci.tar", PAUSE, {"/pause": (_read(pause), 0o755)}, ["/pause"]),
        EBB: write_oci(workdir / "ebb.oci.tar", EBB, ebb_files, ["/usr/local/bin/ebb"], user="65532:65532"),
        NAIVE: write_oci(workdir / "naive.oci.tar", NAIVE, {"/app": (_read(naive), 0o755)}, ["/app"],
                         user="65532:65532"),
    }
