#!/usr/bin/env bash
# Captures real frames for the fuzz seed corpora (run as root; writes
# fuzz/seeds/*.pcap, then run fuzz/split_pcap.py). A small network-namespace
# lab on a bridge, with podlb's test addresses and MACs (the forward
# target's LB MAC 02:00:00:00:00:02 holds the VIPs 198.18.0.100/.101, so
# the client's frames are exactly what podlb would receive):
#   phase 1: ARP, ICMP echo, TCP handshakes, data, FIN and RST to the VIP
#            (the kernel stack answers in place of podlb), UDP;
#   phase 2: two keepalived routers (VRRPv3, VRID 51): election, a graceful
#            stop of the master (priority 0 advert) and the take-over.
set -euo pipefail
cd "$(dirname "$0")"
out=seeds
mkdir -p "$out"
ns=(fzs-sw fzs-c fzs-lb fzs-k1 fzs-k2)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
for n in "${ns[@]}"; do ip netns add "$n"; done
ip -n fzs-sw link add br0 type bridge
ip -n fzs-sw link set br0 up
# name, ns, mac, addresses
attach() {
    local name=$1 n=$2 mac=$3; shift 3
    ip link add "$name" netns "$n" address "$mac" type veth peer name "p-$name" netns fzs-sw
    ip -n fzs-sw link set "p-$name" master br0 up
    ip -n "$n" link set lo up
    ip -n "$n" link set "$name" up
    # Complete checksums on the wire, as a NIC without offload would send.
    ip netns exec "$n" ethtool -K "$name" tx off >/dev/null
    for a in "$@"; do ip -n "$n" addr add "$a" dev "$name"; done
}
attach c0 fzs-c 02:00:00:00:02:00 198.18.0.10/24
attach lb0 fzs-lb 02:00:00:00:00:02 198.18.0.100/24 198.18.0.101/24
attach k1 fzs-k1 02:00:00:00:03:01 198.18.0.1/24
attach k2 fzs-k2 02:00:00:00:03:02 198.18.0.2/24

# Phase 1.
ip netns exec fzs-sw tcpdump -i br0 -U -s 0 -w "$out/lab-tcp.pcap" 'not ip6' 2>/dev/null &
pids+=($!)
ip netns exec fzs-lb python3 -m http.server 80 --bind 198.18.0.100 >/dev/null 2>&1 &
pids+=($!)
sleep 1
ip netns exec fzs-c python3 - <<'PY'
import socket, struct, time
# ICMP echo (no ping binary needed): two requests, the kernel answers.
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
ic = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ic.settimeout(1)
for seq in (1, 2):
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"podlb-fuzz-seed!" * 3
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    ic.sendto(body, ("198.18.0.100", 0))
    try:
        ic.recv(2048)
    except OSError:
        pass
# Two full HTTP exchanges: SYN, SYN-ACK, ACK, data, FIN.
for _ in range(2):
    s = socket.create_connection(("198.18.0.100", 80), timeout=3)
    s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
# The client aborts: RST to VIP:80.
s = socket.create_connection(("198.18.0.100", 80), timeout=3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
# A closed port: RST from the VIP.
try:
    socket.create_connection(("198.18.0.100", 81), timeout=1)
except OSError:
    pass
# UDP to the VIP (no service: podlb drops it as no_service).
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03vip\x00\x00\x01\x00\x01", ("198.18.0.100", 53))
time.sleep(0.5)
PY
sleep 0.5
kill "${pids[0]}" "${pids[1]}"
pids=()
sleep 0.5

# Phase 2.
ip netns exec fzs-sw tcpdump -i br0 -U -s 0 -w "$out/lab-vrrp.pcap" 'not ip6' 2>/dev/null &
pids+=($!)
tmp=$(mktemp -d)
for i in 1 2; do
    prio=$(( i == 1 ? 200 : 100 ))
    cat > "$tmp/k$i.conf" <<CONF
global_defs {
    router_id fzs-k$i
    enable_script_security
}
vrrp_instance VI_51 {
    version 3
    state BACKUP
    interface k$i
    virtual_router_id 51
    priority $prio
    advert_int 0.3
    virtual_ipaddress {
        198.18.0.200/24
    }
}
CONF
    ip netns exec "fzs-k$i" keepalived -n -l -D -f "$tmp/k$i.conf" -p "$tmp/k$i.pid" \
        -r "$tmp/k$i.vrrp.pid" -c "$tmp/k$i.chk.pid" >/dev/null 2>&1 &
    pids+=($!)
done
sleep 4
# Graceful stop of the master (k1): priority 0 advert, then k2 takes over.
kill -TERM "${pids[1]}"
sleep 3
kill "${pids[@]}" 2>/dev/null || true
pids=()
rm -rf "$tmp"
sleep 0.3
ls -l "$out"
