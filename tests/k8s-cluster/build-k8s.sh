#!/usr/bin/env bash
# Builds the Kubernetes 1.20 binaries of the proof from Debian 12's own source package, once, into a cache
# folder outside the source tree keyed by the source version; later runs reuse them. Also installs the
# Debian packages the cluster runs on (etcd, containerd, runc, CNI plugins, the matching kubectl).
set -euo pipefail

CACHE=${EBB_K8S_CACHE:-/var/cache/ebb-k8s}
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# file:package pairs, installed only when the file is missing (like the Makefile's deps target).
PKGS=(/usr/bin/etcd:etcd-server /usr/bin/containerd:containerd /usr/sbin/runc:runc
      /usr/lib/cni/bridge:containernetworking-plugins /usr/bin/go:golang-go /usr/bin/dpkg-source:dpkg-dev
      /usr/bin/nsenter:util-linux /usr/sbin/iptables:iptables /usr/sbin/ip:iproute2 /usr/sbin/conntrack:conntrack
      /usr/bin/rsync:rsync /usr/bin/openssl:openssl /usr/bin/curl:curl /usr/bin/gcc:gcc
      /usr/bin/python3:python3 /usr/lib/python3/dist-packages/yaml/__init__.py:python3-yaml)

log() { printf '[k8s-build] %s\n' "$*"; }

apt_updated=
apt_update() { [ -n "$apt_updated" ] || { apt-get -o DPkg::Lock::Timeout=900 update -qq; apt_updated=1; }; }

# apt-get source needs a deb-src line; ours names bookworm explicitly and is written only once.
SRC_LIST=/etc/apt/sources.list.d/ebb-k8s-bookworm-src.sources
if [ ! -f "$SRC_LIST" ]; then
  log "adding $SRC_LIST"
  cat >"$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=
  apt_update
fi

missing=()
for d in "${PKGS[@]}"; do [ -e "${d%%:*}" ] || missing+=("${d#*:}"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The source version keys the cache: a new Debian upload means a new build, never a stale binary.
version=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2; exit}')
if [ -z "$version" ]; then apt_update; version=$(apt-cache showsrc kubernetes | awk '/^Version:/{print $2; exit}'); fi
[ -n "$version" ] || { echo "k8s-build: no source package 'kubernetes' (is the deb-src line there?)" >&2; exit 1; }
DEST="$CACHE/$version"
mkdir -p "$DEST/bin"

# kubectl of the cluster's own version: Debian's kubernetes-client, unpacked (not installed) so it cannot
# shadow or conflict with a kubectl the machine already has.
if [ ! -x "$DEST/bin/kubectl" ]; then
  log "fetching kubernetes-client $version"
  apt_update
  tmp=$(mktemp -d); chmod 755 "$tmp"  # apt downloads as the _apt user
  (cd "$tmp" && apt-get download -qq "kubernetes-client=$version" && dpkg-deb -x kubernetes-client_*.deb x)
  install -m 0755 "$tmp/x/usr/bin/kubectl" "$DEST/bin/kubectl"; rm -rf "$tmp"
fi

need=()
for c in "${COMPONENTS[@]}"; do [ -x "$DEST/bin/$c" ] || need+=("$c"); done
if [ ${#need[@]} -eq 0 ]; then log "cached: $DEST/bin"; echo "$DEST/bin" >"$CACHE/current"; exit 0; fi

start=$(date +%s)
if [ ! -d "$DEST/src" ]; then
  log "apt-get source kubernetes=$version"
  apt_update
  rm -rf "$DEST/src.tmp"; mkdir -p "$DEST/src.tmp"
  (cd "$DEST/src.tmp" && apt-get source -qq "kubernetes=$version" >/dev/null)
  tree=$(find "$DEST/src.tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
  mv "$tree" "$DEST/src"; rm -rf "$DEST/src.tmp"
fi

# Debian's Go (1.19), the vendor/ tree only, nothing from the network.
export GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on GOTOOLCHAIN=local
export GOPATH="$DEST/gopath" GOCACHE="$DEST/gocache" KUBE_BUILD_PLATFORMS=linux/amd64
whats=$(printf 'cmd/%s ' "${need[@]}")
log "building ${need[*]} (nice -n 10; 13-19 min on 2 cores)"
(cd "$DEST/src" && nice -n 10 make WHAT="${whats% }" KUBE_VERBOSE=0)
for c in "${need[@]}"; do
  built=$(find "$DEST/src/_output" -type f -name "$c" -perm -u+x | head -1)
  [ -n "$built" ] || { echo "k8s-build: $c not found under _output" >&2; exit 1; }
  install -m 0755 "$built" "$DEST/bin/$c"
done
log "built ${need[*]} in $(( $(date +%s) - start ))s"
# The source tree with its build caches is about 3.5 GB; only the binaries (about 400 MB) are kept.
rm -rf "$DEST/src" "$DEST/gopath" "$DEST/gocache"
echo "$DEST/bin" >"$CACHE/current"
