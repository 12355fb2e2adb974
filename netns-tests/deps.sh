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

# validate_deploy.py (the `deploy` test) checks deploy/kubernetes against the
# Kubernetes schemas that this PyPI package ships; pinned so CI is repeatable.
KUBERNETES_VALIDATE=1.37.0
# The `cloud` tests run moto's EC2 emulator (moto_server; boto3 comes with it).
MOTO=5.2.1
py_ok() {
    python3 -c "import sys, yaml, kubernetes_validate as k; sys.exit(k.__version__ != '$KUBERNETES_VALIDATE')" \
        >/dev/null 2>&1 || return 1
    python3 -c "import sys, flask, boto3, moto; sys.exit(moto.__version__ != '$MOTO')" >/dev/null 2>&1 \
        && command -v moto_server >/dev/null 2>&1
}
install_python_deps() {
    py_ok && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing kubernetes-validate==$KUBERNETES_VALIDATE or moto[server]==$MOTO; run as root to install them" >&2
        return 1
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends python3-pip
    fi
    echo "deps.sh: installing kubernetes-validate==$KUBERNETES_VALIDATE and moto[server]==$MOTO (pip)"
    local pip=(python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==$KUBERNETES_VALIDATE "moto[server]==$MOTO")
    # Debian's own python3 refuses pip installs into it (PEP 668) unless told.
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" 2>/dev/null \
        || PIP_ROOT_USER_ACTION=ignore "${pip[@]}" --break-system-packages
    py_ok || { echo "deps.sh: kubernetes-validate or moto did not install" >&2; return 1; }
}

# The fuzz smoke run (fuzz/smoke.sh, run by run-all.sh) needs cargo-fuzz,
# from crates.io.
install_cargo_fuzz() {
    cargo fuzz --version >/dev/null 2>&1 && return 0
    echo "deps.sh: installing cargo-fuzz (cargo install, crates.io)"
    cargo install cargo-fuzz --locked --quiet
}

if [ ${#need[@]} -eq 0 ]; then
    install_python_deps
    install_cargo_fuzz
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
