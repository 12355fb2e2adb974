#!/usr/bin/env bash
# Installs what the netns tests need, only if something is missing.
# With --bench, also what bench/netns_bench.py compares against (haproxy,
# nginx's stream module). bench/faults.py and bench/soak.py need only the base
# set (ip, ss, nginx, wrk, iptables, python3); their charts need matplotlib,
# which is optional (the scripts say when they skip a chart).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
if [ "${1:-}" = "--bench" ]; then
    have haproxy || need+=(haproxy)
    [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
fi
have ip      || need+=(iproute2)
have ss      || need+=(iproute2)
have nginx   || need+=(nginx-light)
have wrk     || need+=(wrk)
have iperf3  || need+=(iperf3)
have ethtool || need+=(ethtool)
have iptables || need+=(iptables)
have python3 || need+=(python3)
have sysctl  || need+=(procps)
have keepalived || need+=(keepalived)
have curl    || need+=(curl)
# The realkube DNS test: dnsmasq as the backends' DNS server (the binary
# only, no system service) and dig as the client.
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
have dig     || need+=(bind9-dnsutils)
have openssl || need+=(openssl)
# The UDP tests (netns-tests/udp.rs) use the same dnsmasq and dig, and
# traceroute through the VIP.
have traceroute || need+=(traceroute)
# The `image` test builds the container image (deploy/image/build.sh) and
# runs it once: buildah, podman, and runc as podman's runtime.
have buildah || need+=(buildah)
have podman  || need+=(podman)
have runc    || need+=(runc)
# promtool checks and unit-tests deploy/prometheus/podlb-rules.yaml (netns-tests/ops.rs).
have promtool || need+=(prometheus)

# validate_deploy.py (the `deploy` test) cross-checks deploy/kubernetes; it
# reads YAML with PyYAML (the schemas are checked by the real kube-apiserver
# in the realkube tests). Pinned so CI is repeatable.
PYYAML=6.0.3
# The `cloud` tests run moto's EC2 emulator (moto_server; boto3 comes with it).
MOTO=5.2.1
py_ok() {
    python3 -c "import sys, yaml; sys.exit(yaml.__version__ != '$PYYAML')" \
        >/dev/null 2>&1 || return 1
    python3 -c "import sys, flask, boto3, moto; sys.exit(moto.__version__ != '$MOTO')" >/dev/null 2>&1 \
        && command -v moto_server >/dev/null 2>&1
}
install_python_deps() {
    py_ok && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing PyYAML==$PYYAML or moto[server]==$MOTO; run as root to install them" >&2
        return 1
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends python3-pip
    fi
    echo "deps.sh: installing PyYAML==$PYYAML and moto[server]==$MOTO (pip)"
    local pip=(python3 -m pip install --quiet --disable-pip-version-check PyYAML==$PYYAML "moto[server]==$MOTO")
    # Debian's own python3 refuses pip installs into it (PEP 668) unless told.
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" 2>/dev/null \
        || PIP_ROOT_USER_ACTION=ignore "${pip[@]}" --break-system-packages
    py_ok || { echo "deps.sh: PyYAML or moto did not install" >&2; return 1; }
}

# The fuzz smoke run (fuzz/smoke.sh, run by run-all.sh) needs cargo-fuzz,
# from crates.io.
install_cargo_fuzz() {
    cargo fuzz --version >/dev/null 2>&1 && return 0
    echo "deps.sh: installing cargo-fuzz (cargo install, crates.io)"
    cargo install cargo-fuzz --locked --quiet
}

# The real Kubernetes control plane of the Kubernetes tests (issue 14):
# kube-apiserver, kube-controller-manager, kube-proxy and kubectl in one
# multi-call binary, and etcd, built from the upstream Go modules at the
# releases pinned in netns-tests/kube/go.mod and netns-tests/kube/etcd/go.mod,
# into a cache outside the repository keyed by those versions, so a second
# run on the same machine builds nothing. The first build downloads ~0.8 GB
# of modules and takes ~10-15 min on 2 cores (netns-tests/kube/README.md).
# The version of module $1 required in go.mod $2.
pinned() { awk -v m="$1" '{ for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' "$2"; }
kube_dir() {
    local here k8s etcd
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    k8s=$(pinned k8s.io/kubernetes "$here/kube/go.mod")
    etcd=$(pinned go.etcd.io/etcd/server/v3 "$here/kube/etcd/go.mod")
    echo "${PODLB_KUBE_CACHE:-/var/cache/podlb}/kube-$k8s-etcd-$etcd"
}
build_kube() {
    local here out k8s minor start
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    out=$(kube_dir)
    if [ -x "$out/kube" ] && [ -x "$out/etcd" ]; then
        echo "deps.sh: Kubernetes control plane present in $out"
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "deps.sh: Go is needed to build the Kubernetes control plane (go.dev toolchain, 1.26)" >&2
        return 1
    fi
    mkdir -p "$out"
    k8s=$(pinned k8s.io/kubernetes "$here/kube/go.mod")
    minor=$(echo "$k8s" | cut -d. -f2)
    start=$(date +%s)
    echo "deps.sh: building the Kubernetes control plane $k8s and etcd into $out (first run: ~10-15 min)"
    # The version the binaries report (/version, kubectl version): Go's build
    # of a module has no git tree to read it from.
    local v=k8s.io/component-base/version cv=k8s.io/client-go/pkg/version
    local ldflags="-s -w -X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $cv.gitVersion=$k8s -X $cv.gitMajor=1 -X $cv.gitMinor=$minor -X $v.gitTreeState=clean"
    (cd "$here/kube" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$out/kube.tmp" .) \
        && (cd "$here/kube/etcd" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" .) \
        || { echo "deps.sh: building the Kubernetes control plane failed" >&2; return 1; }
    mv "$out/kube.tmp" "$out/kube" && mv "$out/etcd.tmp" "$out/etcd"
    echo "deps.sh: Kubernetes control plane built in $(( $(date +%s) - start )) s"
}

if [ ${#need[@]} -eq 0 ]; then
    install_python_deps
    install_cargo_fuzz
    build_kube
    echo "deps.sh: all netns test tools present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing ${need[*]}; run as root to install them" >&2
    exit 1
fi
echo "deps.sh: installing (missing: ${need[*]})"
# Keep package scripts from starting services (nginx on :80) in the root namespace.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends iproute2 nginx-light wrk iperf3 ethtool iptables python3 procps keepalived "${need[@]}"
install_python_deps
install_cargo_fuzz
build_kube
