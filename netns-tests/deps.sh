#!/usr/bin/env bash
# Installs what the netns tests need, only if something is missing.
# With --bench, also what bench/netns_bench.py compares against (haproxy,
# nginx's stream module).
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

if [ ${#need[@]} -eq 0 ]; then
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
