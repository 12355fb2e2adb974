#!/usr/bin/env python3
"""netns load benchmark for podlb.

Builds one network-namespace topology (a bridge namespace, a client, an lb host
and three nginx backends, all in 198.18.0.0/24) and measures, for each way of
reaching the backends from the client:

  * wrk keep-alive          (req/s, p50, p99)
  * wrk `Connection: close` (new connections/s, p99)
  * iperf3                  (Gbit/s)

Cases: `direct` (client -> backend 1, the limit), `iptables` (kube-proxy style
DNAT + MASQUERADE in the lb namespace), `haproxy` (mode tcp), `nginx` (stream)
and podlb variants (AF_PACKET / TAP, nat / dsr, 1 / 2 workers).  Cases
alternate within a round (order rotated every round); medians over rounds and
ratios (to iptables and to direct) are printed and written as markdown.

With --udp (or --only-udp) a UDP phase follows in the same run: iperf3 -u at fixed
offered rates (received Gbit/s, datagrams/s, loss %) and DNS queries/s
(bench/dnsload.py against dnsmasq on the backends) through direct, iptables (-p udp
DNAT), nginx (stream, listen ... udp) and podlb (protocol = "udp" services); haproxy
has no UDP and is listed as skipped.

With --ipv6 (or --only-ipv6) every host also gets an address of 2001:2::/64 (RFC 5180's
benchmarking range) and IPv6 cases join the same rounds: direct, ip6tables (the same
kube-proxy chains in ip6tables -t nat, IPv6 forwarding on in the lb only while it runs),
haproxy and nginx on IPv6 addresses, and podlb on an IPv6 VIP (--ipv6-podlb, default AF_PACKET
nat and dsr, 1 worker); the same measurements over IPv6, with ratios ÷ ip6tables beside the
IPv4 ratios ÷ iptables of the same run.

Python 3 standard library only; run as root.  See bench/README.md.
The namespaces are the Rust lab's (`podlb-lab up`, via bench/nslab.py), named
plb-<pid>-<n>-*. Everything it creates (namespaces, processes, a temp dir) is
removed on exit, on error, on Ctrl-C / SIGTERM / SIGHUP and on the global time
limit; the namespaces even if the script is killed.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nslab  # noqa: E402  (bench/ is on sys.path when this file runs)
from nslab import (  # noqa: E402
    SUBNET, REPO_ROOT, RES, BenchError, log, run, nsx, sysctl,
    start_proc, stop_named, log_tail, wait_tcp, http_get, http_ok,
    parse_duration_ms, parse_count, parse_wrk, raise_nofile, resolve_bin, parse_loadgen,
    loadgen, LOADGEN_HELP,
)

HOSTS = {
    "client": f"{SUBNET}.10",
    "lb": f"{SUBNET}.2",
    "b1": f"{SUBNET}.21",
    "b2": f"{SUBNET}.22",
    "b3": f"{SUBNET}.23",
}
BACKENDS = ["b1", "b2", "b3"]
VIP_PODLB = f"{SUBNET}.100"
VIP_IPTABLES = f"{SUBNET}.101"
VIP_HAPROXY = f"{SUBNET}.102"
VIP_NGINX = f"{SUBNET}.103"
# Source addresses the proxies use towards the backends.  iptables MASQUERADE uses the lb's
# primary address (.2); the proxies get their own, so TIME_WAIT sockets one case leaves on the
# backends never share a 4-tuple with another case's connections (PAWS would reject them).
SRC_HAPROXY = f"{SUBNET}.4"
SRC_NGINX = f"{SUBNET}.5"
HTTP_PORT = 80
IPERF_PORT = 5201
ADMIN = "127.0.0.1:9100"
# UDP phase (--udp): dnsmasq on every backend answers DNS_NAME with the backend's own address
DNS_PORT = 53
DNS_NAME = "who.podlb.test"
DNSLOAD = Path(__file__).resolve().parent / "dnsload.py"
UDP_IPERF_DEFAULT = "1400@500M,64@20M,64@100M"

# IPv6 (--ipv6): the same hosts on one /64 of 2001:2::/48 (RFC 5180's benchmarking range), the
# same roles for the lb's extra addresses; podlb's IPv6 VIPs are 2001:2::110 + variant index.
HOSTS6 = {
    "client": "2001:2::10",
    "lb": "2001:2::2",
    "b1": "2001:2::21",
    "b2": "2001:2::22",
    "b3": "2001:2::23",
}
VIP6_IPTABLES = "2001:2::101"
VIP6_HAPROXY = "2001:2::102"
VIP6_NGINX = "2001:2::103"
SRC6_HAPROXY = "2001:2::4"
SRC6_NGINX = "2001:2::5"
IPV6_PODLB_DEFAULT = "afpacket-nat-w1,afpacket-dsr-w1"


def url_host(ip: str) -> str:
    """An address as the host part of a URL or of `host:port` (IPv6 in brackets)."""
    return f"[{ip}]" if ":" in ip else ip


class Fam:
    """What a case needs to know about its address family: the hosts' addresses, the lb's
    extra addresses (kernel and proxy VIPs, proxy sources), the kernel NAT tool and the
    forwarding sysctl. FAM4 is what the bench always ran; FAM6 is --ipv6."""

    def __init__(self, version: int, hosts: dict[str, str], vip_iptables: str, vip_haproxy: str,
                 vip_nginx: str, src_haproxy: str, src_nginx: str):
        self.version = version
        self.hosts = hosts
        self.vip_iptables, self.vip_haproxy, self.vip_nginx = vip_iptables, vip_haproxy, vip_nginx
        self.src_haproxy, self.src_nginx = src_haproxy, src_nginx
        self.host_len = 32 if version == 4 else 128
        self.iptables = "iptables" if version == 4 else "ip6tables"
        self.forwarding = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
        # names of the processes and files of a case: the IPv4 ones as before, "-v6" appended
        self.tag = "" if version == 4 else "-v6"

    def hostport(self, ip: str, port: int) -> str:
        return f"{url_host(ip)}:{port}"

    def podlb_vip(self, index: int) -> str:
        return f"{SUBNET}.{110 + index}" if self.version == 4 else f"2001:2::{110 + index}"


FAM4 = Fam(4, HOSTS, VIP_IPTABLES, VIP_HAPROXY, VIP_NGINX, SRC_HAPROXY, SRC_NGINX)
FAM6 = Fam(6, HOSTS6, VIP6_IPTABLES, VIP6_HAPROXY, VIP6_NGINX, SRC6_HAPROXY, SRC6_NGINX)


def parse_iperf(text: str) -> dict:
    try:
        j = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"iperf3 output is not JSON: {text[:200]!r}") from e
    if j.get("error"):
        raise ValueError(f"iperf3: {j['error']}")
    end = j.get("end", {})
    recv = end.get("sum_received", {}).get("bits_per_second")
    sent = end.get("sum_sent", {})
    if recv is None:
        raise ValueError("iperf3 JSON has no end.sum_received.bits_per_second")
    return {"gbps": recv / 1e9, "retransmits": sent.get("retransmits")}


def parse_iperf_udp(text: str) -> dict:
    """`iperf3 -u -J` (client side): what the server received. iperf3 >= 3.? has
    end.sum_sent / end.sum_received; older ones only end.sum (the same loss figures)."""
    try:
        j = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"iperf3 output is not JSON: {text[:200]!r}") from e
    if j.get("error"):
        raise ValueError(f"iperf3: {j['error']}")
    end = j.get("end", {})
    rx = end.get("sum_received") or end.get("sum")
    tx = end.get("sum_sent") or end.get("sum")
    if not rx or "packets" not in rx or "lost_packets" not in rx:
        raise ValueError("iperf3 JSON has no end.sum_received (or end.sum) packet counts")
    start = j.get("start", {}).get("test_start", {})
    blk = start.get("blksize")
    secs = rx.get("seconds") or tx.get("seconds") or 0
    if not secs:
        raise ValueError("iperf3 JSON: a test of 0 seconds")
    sent = tx.get("packets", rx["packets"])
    got = max(0, rx["packets"] - rx["lost_packets"])
    if blk:
        gbps = got * blk * 8 / secs / 1e9
    else:
        gbps = rx.get("bits_per_second", 0) / 1e9
    return {"gbps": gbps, "pps": got / secs, "sent_pps": sent / tx.get("seconds", secs),
            "packets": sent, "lost": rx["lost_packets"], "received": got,
            "loss_pct": rx.get("lost_percent", 100.0 * rx["lost_packets"] / sent if sent else 0),
            "jitter_ms": rx.get("jitter_ms"), "seconds": secs, "blksize": blk,
            "offered_bps": start.get("target_bitrate")}


def parse_rate(tok: str) -> float:
    """iperf3-style rate: 500M, 1.5G, 200k, 1000000 (bits/s)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kKmMgG]?)\s*", tok)
    if not m:
        raise ValueError(f"not a rate: {tok!r} (e.g. 500M)")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]


def parse_udp_specs(text: str) -> list[dict]:
    """`--udp-iperf`: comma list of PAYLOAD@RATE (bytes @ iperf3 -b), e.g. 1400@500M,64@20M."""
    out = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        m = re.fullmatch(r"(\d+)@(\S+)", part)
        if not m:
            raise ValueError(f"--udp-iperf: {part!r} is not PAYLOAD@RATE (e.g. 1400@500M)")
        length, rate = int(m.group(1)), m.group(2)
        if not 16 <= length <= 1472:
            raise ValueError(f"--udp-iperf: payload {length} outside 16..1472 bytes")
        bps = parse_rate(rate)
        out.append({"key": f"{length}@{rate}", "len": length, "rate": rate, "bps": bps,
                    "label": f"{length} B @ {rate}bit/s"})
    return out


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: `name{labels} value` -> {"name{labels}": value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


# --------------------------------------------------------------------------------------
# topology
# --------------------------------------------------------------------------------------


def build_topology() -> None:
    nslab.build_bridge_topology(
        HOSTS,
        # the lb holds one /32 VIP per kernel/proxy case so it answers ARP for them
        extra_addrs={"lb": [f"{a}/32" for a in (VIP_IPTABLES, VIP_HAPROXY, VIP_NGINX,
                                                 SRC_HAPROXY, SRC_NGINX)]},
        sysctls={"lb": {
            "net.ipv4.ip_forward": "0",
            # when forwarding (iptables case) the lb sends packets back out of the interface
            # they came in on; no ICMP redirects to the client for that
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.eth0.send_redirects": "0",
        }})


def add_ipv6() -> None:
    """--ipv6: every host's IPv6 address (a /64 on eth0) and the lb's extra ones (/128), all
    without Duplicate Address Detection (the lab's addresses are unique; DAD would only hold
    them tentative for a second or two). The lb's extras are added deprecated (preferred
    lifetime 0): they still answer Neighbor Solicitations and take explicit binds (the proxies'
    sources), but source address selection (RFC 6724 rule 3) avoids them, so ip6tables
    MASQUERADE leaves from 2001:2::2 as iptables' does from .2. Forwarding stays off but in
    the ip6tables case."""
    for role, a in HOSTS6.items():
        run(nsx(role, "ip", "-6", "addr", "add", f"{a}/64", "dev", "eth0", "nodad"))
    for a in (VIP6_IPTABLES, VIP6_HAPROXY, VIP6_NGINX, SRC6_HAPROXY, SRC6_NGINX):
        run(nsx("lb", "ip", "-6", "addr", "add", f"{a}/128", "dev", "eth0", "nodad",
                "preferred_lft", "0"))
    sysctl("lb", "net.ipv6.conf.all.forwarding", "0")


def start_backends(udp: bool = False, ipv6: bool = False) -> None:
    for b in BACKENDS:
        nslab.start_nginx_backend(b, HOSTS[b], ipv6=ipv6)
    start_iperf_server()
    for b in BACKENDS:
        http_ok("client", f"http://{HOSTS[b]}/")
        if ipv6:
            http_ok("client", f"http://[{HOSTS6[b]}]/")
    if udp:
        for b in BACKENDS:
            start_dnsmasq(b)


def dnsmasq_bin() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def start_dnsmasq(b: str) -> None:
    """dnsmasq on backend `b`, port 53 on every address (a wildcard socket: in DSR the
    queries are for the VIP on lo, and dnsmasq answers from the address asked), answering
    DNS_NAME with the backend's own address; no upstream, no hosts file, no config file,
    no logging of queries."""
    name = f"dnsmasq-{b}"
    p = start_proc(name, nsx(b, dnsmasq_bin(), "--keep-in-foreground", "--conf-file=/dev/null",
                             "--no-resolv", "--no-hosts", "--no-poll", "--pid-file=",
                             "--user=root", "--group=root", "--log-facility=-",
                             f"--port={DNS_PORT}", "--cache-size=10000",
                             f"--address=/{DNS_NAME}/{HOSTS[b]}"))
    got = dns_once(HOSTS[b], within=5.0, proc=p, name=name)
    if got != HOSTS[b]:
        raise BenchError(f"{name}: {DNS_NAME} answered {got}, not {HOSTS[b]}")


def dns_once(server: str, within: float = 5.0, proc=None, name: str = "dns") -> str:
    """One query for DNS_NAME from the client to server:53 (retried for `within` s): the A
    record of the answer."""
    deadline = time.monotonic() + within
    while True:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{log_tail(name)}")
        r = run(nsx("client", sys.executable, str(DNSLOAD), "--once", "--server", server,
                    "--port", str(DNS_PORT), "--name", DNS_NAME, "--timeout", "1"),
                timeout=10, check=False)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
        if time.monotonic() > deadline:
            raise BenchError(f"DNS sanity check via {server}:{DNS_PORT} failed: "
                             f"{(r.stderr or r.stdout).strip()[-200:]}")
        time.sleep(0.2)


IPERF_BIND: list[str] = []  # the address iperf3 -s is bound to (-B), empty: all


def start_iperf_server(bind: str | None = None) -> None:
    """(Re)starts iperf3 -s on backend 1; `bind` (a DSR VIP on its lo): bound to that address
    (-B) until the next call without it. iperf3's UDP test socket answers from its bound
    address, so in DSR, where the client talks to the VIP, it must be bound to the VIP."""
    if bind is not None:
        IPERF_BIND[:] = [bind] if bind else []
    stop_named("iperf3-server")
    extra = ["-B", IPERF_BIND[0]] if IPERF_BIND else []
    p = start_proc("iperf3-server", nsx("b1", "iperf3", "-s", "-p", str(IPERF_PORT), *extra))
    if IPERF_BIND:  # from b1 itself: the VIP is on its lo
        wait_tcp("b1", IPERF_BIND[0], IPERF_PORT, p, "iperf3-server")
    else:
        wait_tcp("client", HOSTS["b1"], IPERF_PORT, p, "iperf3-server")


def iperf_server_alive() -> bool:
    return any(n == "iperf3-server" and p.poll() is None for n, p in RES.procs)


WATCH = ("TCPSynRetrans", "PAWSActive", "PAWSEstab", "PAWSTimewait", "TWRecycled", "TCPTimeWaitOverflow",
         "ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPBacklogDrop", "RetransSegs",
         "AttemptFails", "EstabResets", "OutRsts", "InErrs")


def tcp_counters(role: str) -> dict[str, int]:
    """TCP counters of a namespace (/proc/net/snmp and /proc/net/netstat), plus the
    conntrack statistics (/proc/net/stat/nf_conntrack, summed over CPUs) when present."""
    text = run(nsx(role, "sh", "-c", "cat /proc/net/snmp /proc/net/netstat; "
                   "cat /proc/net/stat/nf_conntrack 2>/dev/null || true")).stdout
    out: dict[str, int] = {}
    lines = text.splitlines()
    i = 0
    while i + 1 < len(lines):
        a, b = lines[i].split(), lines[i + 1].split()
        if a and a[0].endswith(":") and b and b[0] == a[0] and len(a) == len(b):
            for k, v in zip(a[1:], b[1:]):
                try:
                    out[k] = int(v)
                except ValueError:
                    pass
            i += 2
        elif a and a[0] == "entries":  # conntrack stat: header, then one hex row per CPU
            rows = [r.split() for r in lines[i + 1:] if r.split() and len(r.split()) == len(a)]
            for j, k in enumerate(a):
                if k != "entries":
                    out["ct_" + k] = sum(int(r[j], 16) for r in rows)
            break
        else:
            i += 1
    return out


def counter_delta(before: dict, after: dict) -> dict[str, int]:
    keys = [k for k in after if k in WATCH or (k.startswith("ct_") and k in (
        "ct_insert_failed", "ct_drop", "ct_early_drop", "ct_invalid", "ct_clashres",
        "ct_search_restart", "ct_error"))]
    return {k: after[k] - before.get(k, 0) for k in keys if after[k] - before.get(k, 0)}


# --------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------


class Case:
    name = "?"
    vip = ""
    description = ""
    fam = FAM4

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Direct(Case):
    name = "direct"
    vip = HOSTS["b1"]
    description = "client → backend 1 directly (the limit)"

    def __init__(self, fam: Fam = FAM4):
        self.fam = fam
        self.vip = fam.hosts["b1"]


class Iptables(Case):
    """The kube-proxy iptables-mode path: statistic-random DNAT chains + MASQUERADE mark."""

    name = "iptables"
    vip = VIP_IPTABLES
    description = "kernel DNAT + MASQUERADE, kube-proxy style chains (iptables-nft)"

    def __init__(self, udp: bool = False, fam: Fam = FAM4):
        self.udp = udp
        self.fam = fam
        self.vip = fam.vip_iptables
        if fam.version == 6:
            self.name = "ip6tables"
            self.description = ("kernel DNAT + MASQUERADE, kube-proxy style chains "
                                "(ip6tables-nft), net.ipv6.conf.all.forwarding = 1")

    def rules(self) -> list[list[str]]:
        r: list[list[str]] = []
        chains = ["PLBB-SERVICES", "PLBB-MARK-MASQ", "PLBB-POSTROUTING",
                  "PLBB-SVC-WEB", "PLBB-SVC-IPERF"] + [f"PLBB-SEP-{b.upper()}" for b in BACKENDS] \
            + ["PLBB-SEP-IPERF"]
        for c in chains:
            r.append(["-N", c])
        r.append(["-A", "PREROUTING", "-j", "PLBB-SERVICES"])
        r.append(["-A", "POSTROUTING", "-j", "PLBB-POSTROUTING"])
        r.append(["-A", "PLBB-MARK-MASQ", "-j", "MARK", "--set-xmark", "0x4000/0x4000"])
        r.append(["-A", "PLBB-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000",
                  "-j", "RETURN"])
        r.append(["-A", "PLBB-POSTROUTING", "-j", "MARK", "--xor-mark", "0x4000"])
        r.append(["-A", "PLBB-POSTROUTING", "-j", "MASQUERADE", "--random-fully"])
        f = self.fam
        vip = f"{f.vip_iptables}/{f.host_len}"
        r.append(["-A", "PLBB-SERVICES", "-d", vip, "-p", "tcp",
                  "--dport", str(HTTP_PORT), "-j", "PLBB-SVC-WEB"])
        r.append(["-A", "PLBB-SERVICES", "-d", vip, "-p", "tcp",
                  "--dport", str(IPERF_PORT), "-j", "PLBB-SVC-IPERF"])
        n = len(BACKENDS)
        for i, b in enumerate(BACKENDS):
            rule = ["-A", "PLBB-SVC-WEB"]
            if i < n - 1:  # 1/3, then 1/2 of the rest, then the rest: as kube-proxy writes it
                rule += ["-m", "statistic", "--mode", "random", "--probability",
                         f"{1.0 / (n - i):.11f}"]
            r.append(rule + ["-j", f"PLBB-SEP-{b.upper()}"])
            r.append(["-A", f"PLBB-SEP-{b.upper()}", "-j", "PLBB-MARK-MASQ"])
            r.append(["-A", f"PLBB-SEP-{b.upper()}", "-p", "tcp", "-j", "DNAT",
                      "--to-destination", f.hostport(f.hosts[b], HTTP_PORT)])
        r.append(["-A", "PLBB-SVC-IPERF", "-j", "PLBB-SEP-IPERF"])
        r.append(["-A", "PLBB-SEP-IPERF", "-j", "PLBB-MARK-MASQ"])
        r.append(["-A", "PLBB-SEP-IPERF", "-p", "tcp", "-j", "DNAT",
                  "--to-destination", f.hostport(f.hosts["b1"], IPERF_PORT)])
        if self.udp:
            r += self.udp_rules()
        return r

    def udp_rules(self) -> list[list[str]]:
        """--udp: the UDP ports as kube-proxy writes a Service's UDP ports (one SVC chain per
        service port, one SEP chain per endpoint of it, `-p udp` DNAT): DNS over the three
        backends, iperf3's UDP port (its control connection uses the TCP rule) to backend 1."""
        r: list[list[str]] = []
        seps = [f"PLBB-SEP-DNS-{b.upper()}" for b in BACKENDS]
        for c in ["PLBB-SVC-DNS", "PLBB-SVC-IPERF-UDP", *seps, "PLBB-SEP-IPERF-UDP"]:
            r.append(["-N", c])
        r.append(["-A", "PLBB-SERVICES", "-d", f"{VIP_IPTABLES}/32", "-p", "udp",
                  "--dport", str(DNS_PORT), "-j", "PLBB-SVC-DNS"])
        r.append(["-A", "PLBB-SERVICES", "-d", f"{VIP_IPTABLES}/32", "-p", "udp",
                  "--dport", str(IPERF_PORT), "-j", "PLBB-SVC-IPERF-UDP"])
        n = len(BACKENDS)
        for i, (b, sep) in enumerate(zip(BACKENDS, seps)):
            rule = ["-A", "PLBB-SVC-DNS"]
            if i < n - 1:
                rule += ["-m", "statistic", "--mode", "random", "--probability",
                         f"{1.0 / (n - i):.11f}"]
            r.append(rule + ["-j", sep])
            r.append(["-A", sep, "-j", "PLBB-MARK-MASQ"])
            r.append(["-A", sep, "-p", "udp", "-j", "DNAT",
                      "--to-destination", f"{HOSTS[b]}:{DNS_PORT}"])
        r.append(["-A", "PLBB-SVC-IPERF-UDP", "-j", "PLBB-SEP-IPERF-UDP"])
        r.append(["-A", "PLBB-SEP-IPERF-UDP", "-j", "PLBB-MARK-MASQ"])
        r.append(["-A", "PLBB-SEP-IPERF-UDP", "-p", "udp", "-j", "DNAT",
                  "--to-destination", f"{HOSTS['b1']}:{IPERF_PORT}"])
        return r

    def start(self) -> None:
        self.flush()
        for rule in self.rules():
            run(nsx("lb", self.fam.iptables, "-w", "5", "-t", "nat", *rule))
        sysctl("lb", self.fam.forwarding, "1")

    def flush(self) -> None:
        run(nsx("lb", self.fam.iptables, "-w", "5", "-t", "nat", "-F"), check=False)
        run(nsx("lb", self.fam.iptables, "-w", "5", "-t", "nat", "-X"), check=False)

    def stop(self) -> None:
        # Forwarding and the rules exist only while this case runs, so the other
        # cases in the lb namespace are not routed by the kernel behind their back.
        sysctl("lb", self.fam.forwarding, "0")
        self.flush()


HAPROXY_CONF = """\
global
    nbthread 1
    maxconn {maxconn}
    pidfile {d}/{pid}.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    maxconn {maxconn}
frontend web
    bind {vip}:{http}
    default_backend web
backend web
    balance roundrobin
    source {src}
{servers}
frontend iperf
    bind {vip}:{iperf}
    default_backend iperf
backend iperf
    source {src}
    server b1 {b1}:{iperf}
"""


def haproxy_maxconn() -> int:
    """High, but within the descriptor limit (haproxy needs about 2 per connection)."""
    return max(1000, min(100000, (nslab.NOFILE - 100) // 2))


def haproxy_config(fam: Fam, d: Path, maxconn: int) -> str:
    """HAPROXY_CONF for `fam`; IPv6 addresses in brackets (haproxy reads a bare IPv6 `source`
    as address:port)."""
    h = fam.hosts
    servers = "\n".join(f"    server {b} {fam.hostport(h[b], HTTP_PORT)}" for b in BACKENDS)
    return HAPROXY_CONF.format(d=d, vip=url_host(fam.vip_haproxy), http=HTTP_PORT,
                               iperf=IPERF_PORT, servers=servers, b1=url_host(h["b1"]),
                               maxconn=maxconn, src=url_host(fam.src_haproxy),
                               pid=f"haproxy{fam.tag}")


class Haproxy(Case):
    name = "haproxy"
    vip = VIP_HAPROXY
    description = "haproxy `mode tcp`, roundrobin, nbthread 1"

    def __init__(self, fam: Fam = FAM4):
        self.fam = fam
        self.vip = fam.vip_haproxy
        self.pname = f"haproxy{fam.tag}"

    def start(self) -> None:
        assert RES.tmpdir is not None
        d = RES.tmpdir
        conf = d / f"{self.pname}.cfg"
        conf.write_text(haproxy_config(self.fam, d, haproxy_maxconn()))
        run(nsx("lb", "haproxy", "-c", "-q", "-f", str(conf)))
        p = start_proc(self.pname, nsx("lb", "haproxy", "-db", "-f", str(conf)))
        wait_tcp("client", self.vip, HTTP_PORT, p, self.pname)

    def stop(self) -> None:
        stop_named(self.pname)


NGINX_STREAM_CONF = """\
{load}
daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {d}/{pname}.pid;
error_log {d}/{pname}.error.log warn;
events {{ worker_connections {wconn}; }}
stream {{
    proxy_bind {src};
    upstream web {{
{servers}
    }}
    server {{
        listen {vip}:{http} backlog=4096;
        proxy_pass web;
    }}
    server {{
        listen {vip}:{iperf};
        proxy_pass {b1}:{iperf};
    }}
{udp}}}
"""

# --udp: the UDP ports (DNS over the three backends, one answer per query; iperf3's UDP port)
NGINX_STREAM_UDP = """\
    upstream dns {{
{servers}
    }}
    server {{
        listen {vip}:{dns} udp;
        proxy_pass dns;
        proxy_responses 1;
        proxy_timeout 2s;
    }}
    server {{
        listen {vip}:{iperf} udp;
        proxy_pass {b1}:{iperf};
    }}
"""


def nginx_stream_load_line() -> str:
    """`load_module` line if this nginx has the stream module as a dynamic module."""
    v = run(["nginx", "-V"], check=False).stderr
    if "--with-stream=dynamic" not in v:
        return ""
    for cand in ("/usr/lib/nginx/modules/ngx_stream_module.so",
                 "/usr/share/nginx/modules/ngx_stream_module.so"):
        if os.path.exists(cand):
            return f"load_module {cand};"
    raise BenchError("nginx has no stream module: install it "
                     "(Debian: apt-get install libnginx-mod-stream)")


def nginx_stream_config(fam: Fam, d: Path, load: str, udp: bool) -> str:
    """NGINX_STREAM_CONF (with NGINX_STREAM_UDP if `udp`) for `fam`."""
    h = fam.hosts
    servers = "\n".join(f"        server {fam.hostport(h[b], HTTP_PORT)};" for b in BACKENDS)
    vip, b1 = url_host(fam.vip_nginx), url_host(h["b1"])
    udp_conf = ""
    if udp:
        udp_conf = NGINX_STREAM_UDP.format(
            servers="\n".join(f"        server {fam.hostport(h[b], DNS_PORT)};" for b in BACKENDS),
            vip=vip, dns=DNS_PORT, iperf=IPERF_PORT, b1=b1)
    return NGINX_STREAM_CONF.format(
        udp=udp_conf, load=load, d=d, servers=servers, vip=vip, pname=f"lbnginx{fam.tag}",
        http=HTTP_PORT, iperf=IPERF_PORT, b1=b1, nofile=nslab.NOFILE, src=fam.src_nginx,
        wconn=max(1024, min(65536, (nslab.NOFILE - 100) // 2)))


class NginxStream(Case):
    name = "nginx"
    vip = VIP_NGINX
    description = "nginx `stream {}` proxy, worker_processes 1"

    def __init__(self, udp: bool = False, fam: Fam = FAM4):
        self.udp = udp
        self.fam = fam
        self.vip = fam.vip_nginx
        self.pname = f"lbnginx{fam.tag}"

    def start(self) -> None:
        assert RES.tmpdir is not None
        d = RES.tmpdir
        conf = d / f"{self.pname}.conf"
        conf.write_text(nginx_stream_config(self.fam, d, nginx_stream_load_line(), self.udp))
        elog = str(d / f"{self.pname}.error.log")
        run(nsx("lb", "nginx", "-t", "-q", "-p", str(d), "-e", elog, "-c", str(conf)))
        p = start_proc(self.pname, nsx("lb", "nginx", "-p", str(d), "-e", elog, "-c", str(conf)))
        wait_tcp("client", self.vip, HTTP_PORT, p, self.pname)

    def stop(self) -> None:
        stop_named(self.pname)


def udp_service_toml(name: str, vip: str, port: int, mode: str, backends: list[str]) -> str:
    bl = ", ".join(json.dumps(b) for b in backends)
    return (f'[[service]]\nname = "{name}"\nvip = "{vip}"\nport = {port}\n'
            f'protocol = "udp"\nmode = "{mode}"\nbackends = [{bl}]\n\n')


class Podlb(Case):
    """podlb itself: AF_PACKET on the lb's eth0, or TAP on the bridge (in the node ns)."""

    vip = VIP_PODLB  # replaced per instance in __init__

    def __init__(self, binary: Path, io: str, mode: str, workers: int, timeout: float, index: int = 0,
                 rx_ring: str | None = None, udp: bool = False, fam: Fam = FAM4):
        self.binary = binary
        self.udp = udp
        self.fam = fam
        self.rx_ring = rx_ring
        # One VIP per variant: full NAT uses the VIP as the source towards the
        # backends, and variants run back to back, so with a shared VIP each
        # variant would meet the TIME_WAIT entries the previous one left on the
        # backends (PAWS rejects, 1 s SYN retransmits). The kernel and proxy
        # cases each have their own source address for the same reason.
        self.vip = fam.podlb_vip(index)
        self.io = io
        self.mode = mode
        self.workers = workers
        self.ready_timeout = timeout
        self.name = f"podlb-{io}-{mode}-w{workers}"
        where = {
            "afpacket": "AF_PACKET on lb eth0",
            "xdp": "AF_XDP (VIP frames) + AF_PACKET on lb eth0",
        }.get(io, "TAP on br0 (node ns)")
        self.description = f"podlb {mode}, {where}, workers = {workers}"
        if rx_ring:
            self.name += f"-{rx_ring}"
            self.description += f', io.rx_ring = "{rx_ring}"'
        if fam.version == 6:
            self.description += f", IPv6 VIP {self.vip}"
        self.pname = self.name + fam.tag  # its process, log and config file
        self.role = "node" if io == "tap" else "lb"
        self.broken: str | None = None

    def config(self) -> str:
        attach = ({"tap": {"bridge": "br0", "name": "podlb0"}} if self.io == "tap"
                  else {"af_packet": {"interface": "eth0"}})
        io_keys = []
        if self.io == "xdp":
            io_keys.append('backend = "af_xdp"')
        if self.rx_ring:
            io_keys.append(f'rx_ring = "{self.rx_ring}"')
        extra = ""
        if self.udp:
            # The lab's ConfigSpec has no `protocol` key: the UDP services go in as TOML
            # (podlb-lab config still has podlb's parser check the whole file).
            extra += udp_service_toml("dns", self.vip, DNS_PORT, self.mode,
                                      [f"{HOSTS[b]}:{DNS_PORT}" for b in BACKENDS])
            extra += udp_service_toml("iperf-udp", self.vip, IPERF_PORT, self.mode,
                                      [f"{HOSTS['b1']}:{IPERF_PORT}"])
        if io_keys:
            extra += "[io]\n" + "\n".join(io_keys) + "\n"
        # In DSR the backends hold the VIP on lo, so a full-NAT flow whose source is the
        # VIP could not be answered; the iperf service follows the variant's mode.
        return nslab.podlb_config({
            "attach": attach, "workers": self.workers, "admin": ADMIN,
            "services": [
                {"name": "web", "vip": self.vip, "port": HTTP_PORT, "mode": self.mode,
                 "backends": [self.fam.hostport(self.fam.hosts[b], HTTP_PORT)
                              for b in BACKENDS]},
                {"name": "iperf", "vip": self.vip, "port": IPERF_PORT, "mode": self.mode,
                 "backends": [self.fam.hostport(self.fam.hosts["b1"], IPERF_PORT)]},
            ],
            "extra": extra,
        })

    def metrics(self) -> dict[str, float]:
        return parse_metrics(http_get(self.role, f"http://{ADMIN}/metrics", timeout=2.0))

    def dsr_backends(self, on: bool) -> None:
        if self.fam.version == 6:
            # The VIP on lo: accepted, never announced (Linux answers Neighbor Solicitations
            # only for addresses of the receiving interface), so no arp_ignore counterpart.
            for b in BACKENDS:
                if on:
                    run(nsx(b, "ip", "-6", "addr", "replace", f"{self.vip}/128", "dev", "lo",
                            "nodad"))
                else:
                    run(nsx(b, "ip", "-6", "addr", "del", f"{self.vip}/128", "dev", "lo"),
                        check=False)
            return
        for b in BACKENDS:
            if on:
                run(nsx(b, "ip", "addr", "replace", f"{self.vip}/32", "dev", "lo"))
            else:
                run(nsx(b, "ip", "addr", "del", f"{self.vip}/32", "dev", "lo"), check=False)
            sysctl(b, "net.ipv4.conf.all.arp_ignore", "1" if on else "0")
            sysctl(b, "net.ipv4.conf.all.arp_announce", "2" if on else "0")

    def flush_neigh(self) -> None:
        for role in ["client", *BACKENDS]:
            run(nsx(role, "ip", "neigh", "flush", "to", self.vip), check=False)

    def start(self) -> None:
        if self.broken:
            raise BenchError(self.broken)
        assert RES.tmpdir is not None
        conf = RES.tmpdir / f"{self.pname}.toml"
        conf.write_text(self.config())
        if self.mode == "dsr":
            self.dsr_backends(True)
        self.flush_neigh()
        p = start_proc(self.pname, nsx(self.role, str(self.binary), "run", "--config", str(conf)))
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://{ADMIN}/status"
        while True:
            if p.poll() is not None:
                self.broken = f"{self.name}: podlb exited with {p.returncode}: " \
                              f"{log_tail(self.pname, 8)}"
                raise BenchError(self.broken)
            try:
                http_get(self.role, url, timeout=1.0)
                break
            except BenchError as e:
                if time.monotonic() > deadline:
                    self.broken = f"{self.name}: {url} did not answer within " \
                                  f"{self.ready_timeout:.0f}s ({e})"
                    raise BenchError(self.broken)
                time.sleep(0.2)
        self.flush_neigh()

    def stop(self) -> None:
        stop_named(self.pname)
        if self.mode == "dsr":
            self.dsr_backends(False)
        self.flush_neigh()


# --------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------


def wrk(vip: str, seconds: int, close: bool) -> dict:
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "--timeout", "2s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://{url_host(vip)}:{HTTP_PORT}/")
    r = run(nsx("client", *cmd), timeout=seconds + 20, check=False)
    try:
        res = parse_wrk(r.stdout)
    except ValueError as e:
        raise BenchError(f"wrk (exit {r.returncode}): {e}: {(r.stderr or r.stdout)[-300:]}")
    return res


def iperf(vip: str, seconds: int, extra: tuple[str, ...] = (), parser=parse_iperf) -> dict:
    last = ""
    for attempt in range(3):
        if not iperf_server_alive():
            start_iperf_server()
        r = run(nsx("client", "iperf3", "-c", vip, "-p", str(IPERF_PORT), "-t", str(seconds),
                    *extra, "-J", "--connect-timeout", "3000"), timeout=seconds + 25, check=False)
        try:
            return parser(r.stdout)
        except ValueError as e:
            last = str(e)
            if "busy" in last:  # previous test still finishing on the server
                time.sleep(1.0)
                continue
            if attempt == 0:
                start_iperf_server()  # a stuck server is restarted once
                continue
            break
    raise BenchError(last)


def run_case(c: Case, rnd: int, body) -> dict:
    """Starts case `c`, runs `body()` (its result goes into the round's entry) and stops
    the case again, also when something fails (the entry then has an `error`)."""
    entry: dict = {"round": rnd + 1}
    try:
        c.start()
        entry.update(body())
    except BenchError as e:
        entry["error"] = str(e)
        log(f"  {c.name}: FAILED: {e}")
    finally:
        try:
            c.stop()
        except BenchError as e:
            log(f"  {c.name}: stop: {e}")
    return entry


def measure(case: Case, args: argparse.Namespace) -> dict:
    d = args.duration
    out: dict = {}
    http_ok("client", f"http://{url_host(case.vip)}:{HTTP_PORT}/")
    ka = wrk(case.vip, d, close=False)
    out["ka"] = ka
    roles = ["client", "lb", *BACKENDS]
    before = {r: tcp_counters(r) for r in roles}
    cc = wrk(case.vip, d, close=True)
    after = {r: tcp_counters(r) for r in roles}
    cc["accepted"] = {b: after[b]["PassiveOpens"] - before[b]["PassiveOpens"] for b in BACKENDS}
    # kernel counters that explain odd figures (SYN retransmits, PAWS rejects, conntrack drops)
    cc["counters"] = {r: counter_delta(before[r], after[r]) for r in roles}
    cc["syn_retrans"] = cc["counters"]["client"].get("TCPSynRetrans", 0)
    cc["paws_tw_rejects"] = sum(cc["counters"][b].get("PAWSTimewait", 0) for b in BACKENDS)
    out["cc"] = cc
    if not args.no_iperf:
        try:
            out["iperf"] = iperf(case.vip, d)
        except BenchError as e:
            out["iperf_error"] = str(e)
    try:
        out["conntrack_lb"] = int(run(nsx("lb", "cat", "/proc/sys/net/netfilter/"
                                          "nf_conntrack_count"), check=False).stdout or 0)
    except ValueError:
        pass
    return out


# --------------------------------------------------------------------------------------
# UDP (--udp): iperf3 -u and DNS through each case
# --------------------------------------------------------------------------------------

UDP_ROLES = ["client", "lb", *BACKENDS]
UDP_WATCH = ("InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors",
             "SndbufErrors", "InCsumErrors", "MemErrors")
# haproxy (community) proxies TCP, and QUIC on its frontends, but not arbitrary UDP
HAPROXY_UDP_SKIP = ("haproxy cannot proxy plain UDP (the community edition has no UDP "
                    "proxying; only QUIC frontends and syslog `log-forward`)")


def parse_snmp_udp(text: str) -> dict[str, int]:
    """The `Udp:` header and value lines of /proc/net/snmp (not UdpLite's)."""
    lines = [ln.split() for ln in text.splitlines()]
    for a, b in zip(lines, lines[1:]):
        if len(a) > 1 and a[0] == "Udp:" and a[1] == "InDatagrams" and b and b[0] == "Udp:":
            return {k: int(v) for k, v in zip(a[1:], b[1:])}
    return {}


# the Udp: counters, then "IF <name> <rx_dropped> <tx_dropped>" per interface (a TAP's queue
# to podlb, veth and bridge ports)
SH_UDP_COUNTERS = ("cat /proc/net/snmp; for d in /sys/class/net/*; do "
                   "echo IF ${d##*/} $(cat $d/statistics/rx_dropped $d/statistics/tx_dropped); "
                   "done")


def parse_udp_counters(text: str) -> dict[str, int]:
    out = parse_snmp_udp(text)
    for line in text.splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == "IF" and f[2].isdigit() and f[3].isdigit():
            out[f"{f[1]}.rx_dropped"], out[f"{f[1]}.tx_dropped"] = int(f[2]), int(f[3])
    return out


def udp_counters(roles: list[str] = UDP_ROLES + ["node"]) -> dict[str, dict[str, int]]:
    """Per namespace: the Udp: counters of /proc/net/snmp and every interface's drops."""
    return {r: parse_udp_counters(run(nsx(r, "sh", "-c", SH_UDP_COUNTERS)).stdout) for r in roles}


def udp_delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    out = {}
    for role, a in after.items():
        d = {k: a[k] - before.get(role, {}).get(k, 0) for k in a
             if k in UDP_WATCH or k.endswith("_dropped")}
        d = {k: v for k, v in d.items() if v}
        if d:
            out[role] = d
    return out


def podlb_delta(m0: dict[str, float], m1: dict[str, float]) -> dict:
    """podlb's UDP datagrams forwarded and its drops by reason between two /metrics scrapes."""
    drops = {}
    for k, v in m1.items():
        mm = re.fullmatch(r'podlb_drops_total\{reason="([^"]+)"\}', k)
        if mm and v - m0.get(k, 0):
            drops[mm.group(1)] = int(v - m0.get(k, 0))
    return {"udp_datagrams": int(m1.get("podlb_udp_datagrams_total", 0)
                                 - m0.get("podlb_udp_datagrams_total", 0)),
            "drops": drops}


def dnsload(vip: str, args: argparse.Namespace) -> dict:
    d = args.duration
    r = run(nsx("client", sys.executable, str(DNSLOAD), "--server", vip, "--port", str(DNS_PORT),
                "--name", DNS_NAME, "--duration", str(d), "--sockets", str(args.dns_sockets),
                "--outstanding", str(args.dns_outstanding), "--procs", str(args.dns_procs),
                "--timeout", "1"), timeout=d + 30, check=False)
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise BenchError(f"dnsload (exit {r.returncode}): {(r.stderr or r.stdout)[-300:]}")


def measure_udp(case: Case, args: argparse.Namespace, specs: list[dict]) -> dict:
    """One DNS query through the case (the sanity check), then iperf3 -u per spec to backend 1
    (one flow), then the DNS load; with the UDP counters of every namespace around each, and
    for podlb its own counters (/metrics) around each."""
    out: dict = {"dns_check": dns_once(case.vip, within=5.0)}
    scrape = case.metrics if isinstance(case, Podlb) else None
    m_first = m0 = scrape() if scrape else {}
    if not args.no_iperf:
        dsr = isinstance(case, Podlb) and case.mode == "dsr"
        try:
            if dsr:  # iperf3 -u's server must answer from the VIP (see start_iperf_server)
                start_iperf_server(bind=case.vip)
            m0 = iperf_udp_runs(case, args, specs, out, scrape, m0)
        finally:
            if dsr:
                start_iperf_server(bind="")
    before = udp_counters()
    dns = dnsload(case.vip, args)
    after = udp_counters()
    dns["counters"] = udp_delta(before, after)
    dns["backend_datagrams"] = {b: after[b].get("InDatagrams", 0) - before[b].get("InDatagrams", 0)
                                for b in BACKENDS}
    if scrape:
        m1 = scrape()
        dns["podlb"] = podlb_delta(m0, m1)
        out["podlb"] = podlb_delta(m_first, m1)
    out["dns"] = dns
    return out


def iperf_udp_runs(case: Case, args: argparse.Namespace, specs: list[dict], out: dict,
                   scrape, m0: dict) -> dict:
    """iperf3 -u per spec into out["iperf"] (failures into out["iperf_errors"]). With `scrape`
    (podlb's /metrics; `m0` the last scrape), podlb's counters around each run; returns the
    last scrape."""
    out["iperf"] = {}
    win = ("-w", args.udp_window) if args.udp_window not in ("", "0") else ()
    for spec in specs:
        before = udp_counters()
        try:
            res = iperf(case.vip, args.duration,
                        ("-u", "-b", spec["rate"], "-l", str(spec["len"]), *win),
                        parse_iperf_udp)
        except BenchError as e:
            out.setdefault("iperf_errors", {})[spec["key"]] = str(e)
            continue
        res["counters"] = udp_delta(before, udp_counters())
        if scrape:
            m1 = scrape()
            res["podlb"], m0 = podlb_delta(m0, m1), m1
        out["iperf"][spec["key"]] = res
    return m0


def udp_cases(cases: list[Case], skipped: dict[str, str]) -> tuple[list[Case], dict[str, str]]:
    """The cases of the UDP phase (haproxy cannot take part) and the ones skipped, with why."""
    run_: list[Case] = []
    skip: dict[str, str] = {}
    for c in cases:
        if c.name in skipped:
            skip[c.name] = skipped[c.name]
        elif isinstance(c, Haproxy):
            skip[c.name] = HAPROXY_UDP_SKIP
        else:
            run_.append(c)
    return run_, skip


def udp_phase(ucases: list[Case], uskip: dict[str, str], specs: list[dict],
              args: argparse.Namespace) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {c.name: [] for c in ucases}
    active = list(ucases)
    for rnd in range(args.rounds):
        if not active:
            break
        k = rnd % len(active)
        order = active[k:] + active[:k]
        log(f"UDP round {rnd + 1}/{args.rounds}: {' '.join(c.name for c in order)} "
            f"(load {os.getloadavg()[0]:.2f})")
        for c in order:
            def body(c: Case = c) -> dict:
                e = measure_udp(c, args, specs)
                parts = []
                for spec in specs:
                    r = e.get("iperf", {}).get(spec["key"])
                    if r:
                        parts.append(f"{spec['key']} {r['gbps']:.3f} Gbit/s {r['pps'] / 1e3:,.1f}"
                                     f" kpps loss {r['loss_pct']:.2f}%")
                d = e["dns"]
                parts.append(f"dns {d['qps']:,.0f} q/s unanswered {d['unanswered']}")
                log(f"  {c.name:24s} " + " | ".join(parts))
                for key, err in e.get("iperf_errors", {}).items():
                    log(f"    iperf3 -u {key}: {err}")
                if "podlb" in e:
                    log(f"    podlb: udp_datagrams {e['podlb']['udp_datagrams']:,} drops "
                        f"{e['podlb']['drops'] or 'none'}")
                return e
            results[c.name].append(run_case(c, rnd, body))
        for c in active:
            if isinstance(c, Podlb) and c.broken and all("error" in r for r in results[c.name]):
                uskip[c.name] = c.broken.splitlines()[0][:200]
        active = [c for c in active if c.name not in uskip]
    return results


def udp_medians(rounds: list[dict], specs: list[dict]) -> dict:
    ok = [r for r in rounds if "error" not in r]
    m: dict = {"n": len(ok)}

    def med(vals: list[float]) -> tuple[float | None, float | None]:
        if not vals:
            return None, None
        md = statistics.median(vals)
        spread = (max(vals) - min(vals)) / md if len(vals) > 1 and md else None
        return md, spread

    for spec in specs:
        k = spec["key"]
        rs = [r["iperf"][k] for r in ok if k in r.get("iperf", {})]
        for f in ("gbps", "pps", "sent_pps", "loss_pct"):
            m[f"{k}:{f}"], m[f"{k}:{f}_spread"] = med([x[f] for x in rs])
        m[f"{k}:lost"] = sum(x["lost"] for x in rs)
    # where datagrams were dropped, per measurement (summed over rounds): UDP receive-buffer
    # overflows per namespace, podlb's drops by reason
    m["rcvbuf"], m["podlb_drops"] = {}, {}
    per = [(s["key"], r["iperf"][s["key"]]) for s in specs for r in ok
           if s["key"] in r.get("iperf", {})] + [("dns", r["dns"]) for r in ok if "dns" in r]
    m["ifdrops"] = {}
    for key, x in per:
        for role, c in x.get("counters", {}).items():
            if c.get("RcvbufErrors"):
                d = m["rcvbuf"].setdefault(key, {})
                d[role] = d.get(role, 0) + c["RcvbufErrors"]
            for k, v in c.items():
                if k.endswith("_dropped"):
                    d = m["ifdrops"].setdefault(key, {})
                    d[f"{role} {k}"] = d.get(f"{role} {k}", 0) + v
        for reason, n in x.get("podlb", {}).get("drops", {}).items():
            d = m["podlb_drops"].setdefault(key, {})
            d[reason] = d.get(reason, 0) + n
    dns = [r["dns"] for r in ok if "dns" in r]
    m["dns_qps"], m["dns_qps_spread"] = med([d["qps"] for d in dns])
    m["dns_p99"], _ = med([d["p99_ms"] for d in dns if d.get("p99_ms") is not None])
    m["dns_unanswered"] = sum(d["unanswered"] for d in dns)
    m["dns_late_bad"] = sum(d["late"] + d["bad"] for d in dns)
    acc = {b: sum(d["backend_datagrams"].get(b, 0) for d in dns) for b in BACKENDS}
    tot = sum(acc.values())
    m["dns_spread"] = "/".join(f"{100 * acc[b] / tot:.0f}" for b in BACKENDS) if tot else "–"
    m["failures"] = [r["error"] for r in rounds if "error" in r]
    m["iperf_failures"] = [f"{k}: {v}" for r in ok for k, v in r.get("iperf_errors", {}).items()]
    pl = [r["podlb"] for r in ok if "podlb" in r]
    if pl:
        drops: dict[str, int] = {}
        for x in pl:
            for reason, n in x["drops"].items():
                drops[reason] = drops.get(reason, 0) + n
        m["podlb"] = {"udp_datagrams": sum(x["udp_datagrams"] for x in pl), "drops": drops}
    return m


def udp_rx_cell(m: dict, spec: dict) -> str:
    """Received Gbit/s for full-size payloads, kpps for small ones."""
    k = spec["key"]
    if spec["len"] >= 512:
        return fmt(m[f"{k}:gbps"], "{:.3f}")
    v = m[f"{k}:pps"]
    return fmt(None if v is None else v / 1e3, "{:,.1f}")


def render_udp(udp: dict, cases: list[Case], args: argparse.Namespace) -> str:
    specs = udp["specs"]
    results, uskip = udp["results"], udp["skipped"]
    names = [c.name for c in cases if c.name in results or c.name in uskip]
    meds = {n: udp_medians(results.get(n, []), specs) for n in names}
    L = ["## UDP", ""]
    L.append(f"- iperf3 -u: one flow from the client to backend 1's `iperf3 -s` (its TCP "
             f"control connection takes the TCP path of the case) for {args.duration} s at a "
             "fixed offered rate (`-b`, UDP payload bits) and payload size (`-l`): "
             + ", ".join(f"`-l {s['len']} -b {s['rate']}`" for s in specs) +
             (f", each with `-w {args.udp_window}` (the server's socket buffer)"
              if args.udp_window not in ("", "0") else "") +
             ". Received = datagrams the server got (sent − lost) ÷ time: Gbit/s of payload "
             "for payloads ≥ 512 B, thousands of datagrams/s (kpps) below; loss % as iperf3 "
             "reports it (server side, from sequence numbers). A single iperf3 sender cannot "
             "offer more than its own ceiling, so a rate above it measures the path at the "
             "sender's maximum; received below offered at 0% loss means the sender fell short "
             "(`sent_pps` in the JSON).")
    L.append(f"- DNS: `bench/dnsload.py` from the client, {args.dns_sockets} UDP sockets "
             f"(source ports, so flows), {args.dns_outstanding} queries in flight"
             f"{f' per process × {args.dns_procs} processes' if args.dns_procs > 1 else ''} "
             "(closed loop: an answer sends the next query), a query unanswered after 1 s is "
             f"counted and replaced; for {args.duration} s. Servers: `dnsmasq` on each backend "
             f"answering `{DNS_NAME}` A from `--address` (no upstream, no logging). q/s counts "
             "answers; zero loss means `unanswered` 0. `direct` is backend 1 alone, the "
             "balanced cases spread the sockets over three dnsmasq; `DNS spread` is each "
             "backend's share of the UDP datagrams received during the DNS load.")
    L.append("- the case's UDP ports: iptables `-p udp` DNAT chains (kube-proxy style: "
             "statistic over the 3 backends for :53, backend 1 for :5201, MASQUERADE); nginx "
             "`listen … udp` (`proxy_responses 1` for DNS); podlb `protocol = \"udp\"` services "
             "for :53 and :5201 in the variant's mode. Medians over rounds; `unanswered` summed.")
    L.append("")
    hdr = []
    for s in specs:
        unit = "Gbit/s" if s["len"] >= 512 else "kpps"
        hdr += [f"{s['len']} B @ {s['rate']} {unit}", "loss %"]
    hdr += ["DNS q/s", "unanswered", "DNS p99 ms", "DNS spread b1/b2/b3 %", "rounds"]
    L.append("| case | " + " | ".join(hdr) + " |")
    L.append("|---|" + "---:|" * len(hdr))
    for n in names:
        if n in uskip:
            L.append(f"| {n} | " + " | ".join("–" for _ in hdr[:-1]) + " | skipped |")
            continue
        m = meds[n]
        cells = []
        for s in specs:
            cells += [udp_rx_cell(m, s), fmt(m[f"{s['key']}:loss_pct"], "{:.2f}")]
        cells += [fmt(m["dns_qps"], "{:,.0f}"), str(m["dns_unanswered"]),
                  fmt(m["dns_p99"], "{:.3f}"), m["dns_spread"], str(m["n"])]
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Ratios (median ÷ median of the reference case in the same run; received "
             "datagrams/s and DNS q/s, higher is better):")
    L.append("")
    rk = [(f"{s['key']}:pps", f"{s['len']} B @ {s['rate']}") for s in specs] + \
        [("dns_qps", "DNS q/s")]
    hdr = []
    for _k, h in rk:
        hdr += [f"{h} ÷ iptables", f"{h} ÷ direct"]
    L.append("| case | " + " | ".join(hdr) + " |")
    L.append("|---|" + "---:|" * len(hdr))
    for n in names:
        if n in uskip:
            continue
        m, cells = meds[n], []
        for k, _h in rk:
            for ref in ("iptables", "direct"):
                rm = meds.get(ref)
                if rm is None or ref in uskip or m.get(k) is None or not rm.get(k):
                    cells.append("–")
                else:
                    cells.append(f"{m[k] / rm[k]:.2f}×")
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    notes = []
    for n in names:
        if n in uskip:
            notes.append(f"- `{n}` skipped: {uskip[n]}")
            continue
        m = meds[n]
        for f in m["failures"]:
            notes.append(f"- `{n}` round failed: {f.splitlines()[0][:300]}")
        for f in m["iperf_failures"]:
            notes.append(f"- `{n}` iperf3 -u failed: {f.splitlines()[0][:300]}")
        if m["rcvbuf"]:
            notes.append(f"- `{n}`: UDP receive-buffer overflows (`RcvbufErrors`, summed over "
                         "rounds; b1 = the iperf3 server, lb = the proxy's sockets, client = "
                         "the load generator): " + "; ".join(
                             f"{key} " + ", ".join(f"{role} {v:,}" for role, v in d.items())
                             for key, d in m["rcvbuf"].items()))
        if m["ifdrops"]:
            notes.append(f"- `{n}`: interface drops (`rx_dropped`/`tx_dropped`, namespace and "
                         "interface, summed over rounds): " + "; ".join(
                             f"{key} " + ", ".join(f"{k} {v:,}" for k, v in d.items())
                             for key, d in m["ifdrops"].items()))
        spreads = [f"{s['key']} ±{100 * m[s['key'] + ':pps_spread'] / 2:.0f}%" for s in specs
                   if (m.get(s["key"] + ":pps_spread") or 0) > 0.2]
        if (m.get("dns_qps_spread") or 0) > 0.2:
            spreads.append(f"DNS q/s ±{100 * m['dns_qps_spread'] / 2:.0f}%")
        if spreads:
            notes.append(f"- `{n}` noisy across rounds (half of max−min over median): "
                         + ", ".join(spreads))
        if "podlb" in m:
            pl = m["podlb"]
            drops = "; ".join(f"{key} " + ", ".join(f"{r} {v:,}" for r, v in sorted(d.items()))
                              for key, d in m["podlb_drops"].items()) or "none"
            notes.append(f"- `{n}`: podlb forwarded {pl['udp_datagrams']:,} UDP datagrams "
                         f"(`podlb_udp_datagrams_total`, both directions, all UDP measurements "
                         f"and rounds); its drops (`podlb_drops_total`): {drops}")
    if notes:
        L += ["", "Notes from this run:", *notes]
    L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------------------
# latency at load (open-loop, bench/loadgen.rs)
# --------------------------------------------------------------------------------------

LOADS = (10, 50, 90)  # percent of the direct case's keep-alive capacity
LAT_KEYS = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))


def latency_cases(cases: list[Case], skipped: dict[str, str], args: argparse.Namespace
                  ) -> list[tuple[Case, tuple[int, ...]]]:
    """Every case that runs, at every load, plus podlb with `io.rx_ring = "v3"` (AF_PACKET,
    nat, 1 worker) at 10%: V3 hands a block to userspace when it is full or at the 1 ms
    retire timeout, and a block fills slowly at low load, so that is where it shows."""
    out: list[tuple[Case, tuple[int, ...]]] = [(c, LOADS) for c in cases if c.name not in skipped]
    if "podlb" in args.cases and not args.no_podlb and any(isinstance(c, Podlb) for c, _ in out):
        v3 = Podlb(resolve_bin(args.podlb_bin), "afpacket", "nat", 1, args.podlb_timeout,
                   index=20, rx_ring="v3")
        out.append((v3, (10,)))
    return out


def direct_capacity(results: dict, args: argparse.Namespace) -> tuple[float, str]:
    """The direct case's keep-alive req/s: the median of this run's rounds, or measured now."""
    rps = [r["ka"]["rps"] for r in results.get("direct", []) if "ka" in r]
    if rps:
        return statistics.median(rps), f"median of {len(rps)} `direct` keep-alive round(s) above"
    vals = [wrk(HOSTS["b1"], args.duration, close=False)["rps"] for _ in range(args.rounds)]
    return statistics.median(vals), f"`wrk -t1 -c32` keep-alive to backend 1, median of {len(vals)}"


def latency_phase(lcases: list[tuple[Case, tuple[int, ...]]], capacity: float,
                  args: argparse.Namespace, lg: Path) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {c.name: [] for c, _ in lcases}
    for rnd in range(args.rounds):
        k = rnd % len(lcases)
        order = lcases[k:] + lcases[:k]
        log(f"latency round {rnd + 1}/{args.rounds} at {', '.join(f'{p}%' for p in LOADS)} of "
            f"{capacity:,.0f} req/s (load {os.getloadavg()[0]:.2f})")
        for c, loads in order:
            def body(c: Case = c, loads: tuple[int, ...] = loads) -> dict:
                http_ok("client", f"http://{c.vip}:{HTTP_PORT}/")
                out: dict = {}
                for pct in loads:
                    r = loadgen("client", lg, f"{c.vip}:{HTTP_PORT}", capacity * pct / 100,
                                args.duration)
                    out[str(pct)] = r
                    log(f"  {c.name:27s} {pct:3d}% {r['achieved_rate']:>9,.0f} req/s  p50 "
                        f"{r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f}  p99.9 {r['p999_ms']:.3f} ms"
                        f"  errors {r['error_total']}")
                return {"loads": out}
            results[c.name].append(run_case(c, rnd, body))
    return results


def latency_medians(rounds: list[dict], pct: int) -> dict | None:
    rs = [r["loads"][str(pct)] for r in rounds if str(pct) in r.get("loads", {})]
    if not rs:
        return None
    m = {k: statistics.median(r[k] for r in rs) for k in
         ("achieved_rate", "p50_ms", "p99_ms", "p999_ms", "max_ms")}
    m["errors"] = sum(r["error_total"] for r in rs)
    m["n"] = len(rs)
    return m


def render_latency(lat: dict, capacity: float, cap_note: str, chart: str | None,
                   chart_note: str, args: argparse.Namespace) -> str:
    L = ["## Latency at load (open loop)", ""]
    L.append(f"- load: `target/release/examples/loadgen` (bench/loadgen.rs) from the client, "
             f"32 keep-alive connections, a fixed total rate for {args.duration} s at "
             f"{', '.join(f'{p}%' for p in LOADS)} of the direct capacity, "
             f"{capacity:,.0f} req/s ({cap_note}); each request's latency runs from its "
             "*scheduled* send time to the end of its response (coordinated omission "
             "corrected), so a stall counts in every request it delays")
    L.append("- medians over rounds of each round's percentile; `errors` sums errors, "
             "timeouts (2 s), non-2xx and requests never sent over the rounds. A case whose "
             "capacity is below the offered rate builds a queue: its latency then grows with "
             "the run's length and achieved req/s stays below the target")
    L.append("")
    L.append("| case | load | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | "
             "max ms | errors | rounds |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rounds in lat["results"].items():
        for pct in LOADS:
            m = latency_medians(rounds, pct)
            if m is None:
                continue
            L.append(f"| {name} | {pct}% | {capacity * pct / 100:,.0f} | "
                     f"{m['achieved_rate']:,.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
                     f"{m['p999_ms']:.3f} | {m['max_ms']:.1f} | {m['errors']} | {m['n']} |")
    fails = [f"- `{n}` round {r['round']} failed: {r['error'].splitlines()[0][:300]}"
             for n, rs in lat["results"].items() for r in rs if "error" in r]
    if fails:
        L += ["", "Failures:", *fails]
    L.append("")
    if chart:
        L.append(f"![latency at load: p50 and p99 per case per load]({chart})")
    else:
        L.append(f"(latency chart: {chart_note})")
    L.append("")
    return "\n".join(L)


def make_latency_chart(path: Path, lat: dict) -> tuple[str | None, str]:
    try:
        import matplotlib  # type: ignore
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore
    except Exception:
        return None, "skipped: matplotlib is not importable"
    try:
        names = [n for n, rs in lat["results"].items()
                 if any(latency_medians(rs, p) for p in LOADS)]
        if not names:
            return None, "skipped: no latency results"
        fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(names)), 4.5))
        width = 0.8 / len(LOADS)
        colors = {10: "tab:green", 50: "tab:orange", 90: "tab:red"}
        for j, pct in enumerate(LOADS):
            xs, p99, p50 = [], [], []
            for i, n in enumerate(names):
                m = latency_medians(lat["results"][n], pct)
                if m:
                    xs.append(i + (j - 1) * width)
                    p99.append(m["p99_ms"])
                    p50.append(m["p50_ms"])
            ax.bar(xs, p99, width, color=colors[pct], alpha=0.8, label=f"p99 at {pct}%")
            ax.scatter(xs, p50, marker="_", s=120, color="black", zorder=3,
                       label="p50" if j == 0 else None)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"open-loop latency at % of direct capacity ({lat['capacity']:,.0f} req/s); "
                     "bars p99, ticks p50", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path.name, ""
    except Exception as e:
        return None, f"skipped: chart failed: {e}"


# --------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------

METRICS = [
    # key, header, getter, higher_is_better, format
    ("ka_rps", "keep-alive req/s", lambda r: r["ka"]["rps"], True, "{:,.0f}"),
    ("ka_p50", "p50 ms", lambda r: r["ka"].get("p50_ms"), False, "{:.3f}"),
    ("ka_p99", "p99 ms", lambda r: r["ka"].get("p99_ms"), False, "{:.3f}"),
    ("cc_cps", "new conn/s", lambda r: r["cc"]["rps"], True, "{:,.0f}"),
    ("cc_p99", "close p99 ms", lambda r: r["cc"].get("p99_ms"), False, "{:.3f}"),
    ("cc_synrtx", "close SYN rtx", lambda r: r["cc"].get("syn_retrans"), False, "{:,.0f}"),
    ("gbps", "iperf3 Gbit/s", lambda r: r.get("iperf", {}).get("gbps"), True, "{:.2f}"),
]


def medians(results: dict, case: str) -> dict:
    rounds = [r for r in results.get(case, []) if "error" not in r]
    med: dict = {"n": len(rounds)}
    for key, _h, get, _hib, _f in METRICS:
        vals = []
        for r in rounds:
            try:
                v = get(r)
            except KeyError:
                v = None
            if v is not None:
                vals.append(v)
        med[key] = statistics.median(vals) if vals else None
        med[key + "_spread"] = (max(vals) - min(vals)) / statistics.median(vals) \
            if len(vals) > 1 and statistics.median(vals) else None
    med["ka_err"] = sum(r["ka"]["error_total"] for r in rounds)
    med["cc_err"] = sum(r["cc"]["error_total"] for r in rounds)
    acc = {b: sum(r["cc"].get("accepted", {}).get(b, 0) for r in rounds) for b in BACKENDS}
    tot = sum(acc.values())
    med["spread"] = "/".join(f"{100 * acc[b] / tot:.0f}" for b in BACKENDS) if tot else "–"
    med["failures"] = [r["error"] for r in results.get(case, []) if "error" in r]
    med["iperf_failures"] = [r["iperf_error"] for r in rounds if "iperf_error" in r]
    return med


def fmt(v, f: str) -> str:
    return "–" if v is None else f.format(v)


def header_lines(info: dict, args: argparse.Namespace, title: str) -> list[str]:
    return [
        "<!-- generated by bench/netns_bench.py; rerun it rather than editing -->",
        f"## {title}",
        "",
        f"- date: {info['date']}; {info['rounds']} round(s), {args.duration} s per "
        f"measurement{' (--quick)' if args.quick else ''}; total {info['elapsed']}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, "
        f"load average {info['load_start']} at start, {info['load_end']} at end",
        f"- tools: {info['tools']}",
        f"- podlb: {info['podlb']}",
        f"- command: `{info['command']}`",
    ]


RATIO_KEYS = [("ka_rps", "req/s"), ("cc_cps", "conn/s"), ("gbps", "Gbit/s"), ("ka_p99", "p99")]


def ratio(m: dict | None, rm: dict | None, k: str) -> str:
    """m[k] ÷ rm[k] as `1.23×`, or `–`."""
    if m is None or rm is None or m.get(k) is None or not rm.get(k):
        return "–"
    return f"{m[k] / rm[k]:.2f}×"


def case_tables(cases: list[Case], results: dict, skipped: dict[str, str], ref: str) -> list[str]:
    """The medians table, the ratios table (÷ `ref` and ÷ direct), the case list and the notes
    of one set of cases (one address family)."""
    L = []
    L.append("| case | " + " | ".join(h for _k, h, *_ in METRICS) +
             " | errors ka/close | close spread b1/b2/b3 % | rounds |")
    L.append("|---|" + "---:|" * len(METRICS) + "---:|---:|---:|")
    meds = {c.name: medians(results, c.name) for c in cases}
    for c in cases:
        m = meds[c.name]
        if c.name in skipped:
            L.append(f"| {c.name} | " + " | ".join("–" for _ in METRICS) + " | – | – | skipped |")
            continue
        L.append(f"| {c.name} | " + " | ".join(fmt(m[k], f) for k, _h, _g, _b, f in METRICS) +
                 f" | {m['ka_err']}/{m['cc_err']} | {m['spread']} | {m['n']} |")
    L.append("")
    L.append("Ratios (median ÷ median of the reference case in the same run; for req/s, conn/s "
             "and Gbit/s higher is better, for p99 lower is better):")
    L.append("")
    hdr = []
    for _k, h in RATIO_KEYS:
        hdr += [f"{h} ÷ {ref}", f"{h} ÷ direct"]
    L.append("| case | " + " | ".join(hdr) + " |")
    L.append("|---|" + "---:|" * len(hdr))
    for c in cases:
        if c.name in skipped:
            continue
        m = meds[c.name]
        cells = [ratio(m, meds.get(r), k) for k, _h in RATIO_KEYS for r in (ref, "direct")]
        L.append(f"| {c.name} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Cases:")
    for c in cases:
        note = f" — skipped: {skipped[c.name]}" if c.name in skipped else ""
        L.append(f"- `{c.name}`: {c.description}{note}")
    notes = []
    for c in cases:
        if c.name in skipped:
            continue
        m = meds[c.name]
        for f in m["failures"]:
            notes.append(f"- `{c.name}` round failed: {f.splitlines()[0][:300]}")
        for f in m["iperf_failures"]:
            notes.append(f"- `{c.name}` iperf3 failed: {f.splitlines()[0][:300]}")
        spreads = [f"{h} ±{100 * m[k + '_spread'] / 2:.0f}%" for k, h, *_ in METRICS
                   if m.get(k + "_spread") is not None and m[k + "_spread"] > 0.2]
        if spreads:
            notes.append(f"- `{c.name}` noisy across rounds (half of max−min over median): "
                         + ", ".join(spreads))
    if notes:
        L.append("")
        L.append("Notes from this run:")
        L.extend(notes)
    return L


def v4_name(c: Case) -> str:
    """The IPv4 case an IPv6 case is compared with."""
    return "iptables" if c.name == "ip6tables" else c.name


def render_ipv6(cases: list[Case], results: dict, skipped: dict[str, str], cases4: list[Case],
                results4: dict, skipped4: dict[str, str]) -> str:
    """The IPv6 section: its own tables (ratios ÷ ip6tables), then each IPv6 case beside the
    IPv4 case of the same kind from the same run (when the run had IPv4 cases)."""
    L = ["## IPv6", ""]
    L.append("- the same topology with an IPv6 address on every host's eth0 (one /64 of "
             "2001:2::/48, RFC 5180's benchmarking range, added `nodad`): client 2001:2::10, "
             "lb 2001:2::2, backends 2001:2::21–23; the lb also holds the ip6tables, haproxy "
             "and nginx VIPs 2001:2::101–103 and the proxies' sources 2001:2::4, ::5 (/128, "
             "deprecated so that MASQUERADE's source is 2001:2::2); podlb's VIPs are "
             "2001:2::110 + variant index, resolved by the client and backends through podlb's "
             "Neighbor Advertisements. Backends' nginx also `listen [::]:80`, `iperf3 -s` is "
             "dual-stack.")
    L.append("- measurements as for IPv4 (wrk keep-alive, wrk `Connection: close`, iperf3 to "
             "backend 1), all over IPv6" + (
                 "; the IPv6 cases run in the same rounds as the IPv4 ones (one rotated order "
                 "over both), so both families see the same machine. " if cases4 else ". ") +
             "`ip6tables` is the kube-proxy chain layout of the IPv4 case in `ip6tables -t nat` "
             "with `net.ipv6.conf.all.forwarding=1` in the lb namespace only while it runs.")
    L.append("")
    L += case_tables(cases, results, skipped, "ip6tables")
    L.append("")
    if not cases4:
        return "\n".join(L)
    meds4 = {c.name: medians(results4, c.name) for c in cases4 if c.name not in skipped4}
    meds6 = {c.name: medians(results, c.name) for c in cases if c.name not in skipped}
    L.append("IPv6 beside IPv4, same run: each family's ratio to its own kernel path (÷ ip6tables, "
             "÷ iptables), and the IPv6 median ÷ the IPv4 median of the same kind of case:")
    L.append("")
    hdr = []
    for _k, h in RATIO_KEYS:
        hdr += [f"{h} IPv6 ÷ ip6tables", f"{h} IPv4 ÷ iptables", f"{h} IPv6 ÷ IPv4"]
    L.append("| case | " + " | ".join(hdr) + " |")
    L.append("|---|" + "---:|" * len(hdr))
    for c in cases:
        if c.name not in meds6:
            continue
        m6, m4 = meds6[c.name], meds4.get(v4_name(c))
        cells = []
        for k, _h in RATIO_KEYS:
            cells += [ratio(m6, meds6.get("ip6tables"), k), ratio(m4, meds4.get("iptables"), k),
                      ratio(m6, m4, k)]
        name = c.name if v4_name(c) == c.name else f"{c.name} / {v4_name(c)}"
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L.append("")
    return "\n".join(L)


def render(info: dict, cases: list[Case], results: dict, skipped: dict[str, str],
           args: argparse.Namespace, chart: str | None, chart_note: str) -> str:
    L = header_lines(info, args, "netns load benchmark")
    L.append("- method: one topology (bridge ns + client, lb, 3 nginx backends on veth, "
             "198.18.0.0/24); per case `wrk -t1 -c32 --latency` keep-alive, the same with "
             "`-H 'Connection: close'`, `iperf3 -t N` to backend 1; cases alternate within a "
             "round, order rotated each round; medians over rounds. The machine is shared: "
             "compare ratios from one run, not absolute numbers across runs.")
    L.append("- wrk's latency starts when a request is written, so it leaves out connection "
             "setup: `close SYN rtx` (client SYN retransmissions during the `Connection: close` "
             "run, each one stalls a connection for 1 s or more) is where setup stalls show. "
             "`close spread` is each backend's share of the connections it accepted then.")
    L.append("")
    L += case_tables(cases, results, skipped, "iptables")
    L.append("")
    if chart:
        L.append(f"![netns benchmark: medians per case, labelled with the ratio to direct]({chart})")
    else:
        L.append(f"(charts: {chart_note})")
    L.append("")
    return "\n".join(L)


def make_chart(path: Path, cases: list[Case], results: dict, skipped: dict) -> tuple[str | None, str]:
    try:
        import matplotlib  # type: ignore
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore
    except Exception:
        return None, "skipped: matplotlib is not importable"
    try:
        names = [c.name for c in cases if c.name not in skipped]
        meds = {n: medians(results, n) for n in names}
        panels = [("ka_rps", "keep-alive req/s"), ("cc_cps", "new conn/s"),
                  ("gbps", "iperf3 Gbit/s"), ("ka_p99", "keep-alive p99 ms")]
        panels = [(k, t) for k, t in panels if any(meds[n][k] is not None for n in names)]
        if not names or not panels:
            return None, "skipped: nothing to draw"
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        axes = axes[0]
        for ax, (k, title) in zip(axes, panels):
            vals = [meds[n][k] or 0 for n in names]
            bars = ax.bar(range(len(names)), vals, color="tab:blue")
            ref = meds.get("direct", {}).get(k)
            if ref:  # label each bar with its ratio to direct
                for bar, v in zip(bars, vals):
                    ax.annotate(f"{v / ref:.2f}×", (bar.get_x() + bar.get_width() / 2, v),
                                ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{title} (medians; labels ÷ direct)", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path.name, ""
    except Exception as e:
        return None, f"skipped: chart failed: {e}"


def first_line(cmd: list[str], stream: str = "any") -> str:
    try:
        r = run(cmd, timeout=10, check=False)
    except BenchError:
        return "?"
    text = (r.stdout + "\n" + r.stderr) if stream == "any" else getattr(r, stream)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "?"


def machine_info(args: argparse.Namespace, podlb_bin: Path) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_v = first_line(["wrk", "-v"])
    m = re.search(r"wrk (\S+)", wrk_v)
    tools = [
        first_line(["nginx", "-v"]).replace("nginx version: ", ""),
        "HAProxy " + (re.search(r"version (\S+)", first_line(["haproxy", "-v"])) or
                      re.search(r"(.*)", "?")).group(1),
        "wrk " + (m.group(1) if m else "?"),
        first_line(["iperf3", "-v"]).split(" (")[0],
        first_line(["iptables", "-V"]),
        f"Python {platform.python_version()}",
    ]
    git = "?"
    try:
        rev = run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], timeout=5,
                  check=False).stdout.strip()
        dirty = run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"], timeout=10,
                    check=False).stdout.strip()
        git = (rev or "?") + ("-dirty" if dirty else "")
    except BenchError:
        pass
    if podlb_bin.exists():
        podlb = f"{podlb_bin} ({first_line([str(podlb_bin), '--version'])}), repo at {git}"
    else:
        podlb = f"{podlb_bin} not found, repo at {git}"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "tools": ", ".join(tools),
        "podlb": podlb,
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join(["bench/netns_bench.py", *sys.argv[1:]]),
    }


# --------------------------------------------------------------------------------------
# self-test of the parsers (no root needed)
# --------------------------------------------------------------------------------------

WRK_SAMPLE = """\
Running 5s test @ http://198.18.0.21:80/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   312.45us  120.10us   8.20ms   91.00%
    Req/Sec   101.23k     5.01k  110.00k    80.00%
  Latency Distribution
     50%  290.00us
     75%  340.00us
     90%  410.00us
     99%    1.21ms
  503912 requests in 5.00s, 73.05MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec: 100782.40
Transfer/sec:     14.61MB
"""


def self_test() -> int:
    r = parse_wrk(WRK_SAMPLE)
    assert abs(r["rps"] - 100782.40) < 1e-6, r
    assert abs(r["p50_ms"] - 0.29) < 1e-9 and abs(r["p99_ms"] - 1.21) < 1e-9, r
    assert r["requests"] == 503912 and abs(r["duration_s"] - 5.0) < 1e-9, r
    assert r["errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 2, "non2xx": 7}, r
    assert r["error_total"] == 12
    assert parse_duration_ms("2.00s") == 2000.0 and parse_duration_ms("1.50m") == 90000.0
    assert parse_count("12.5k") == 12500.0 and parse_count("1.2M") == 1.2e6
    r2 = parse_wrk(WRK_SAMPLE.replace("  Socket errors: connect 0, read 3, write 0, timeout 2\n",
                                      "").replace("  Non-2xx or 3xx responses: 7\n", ""))
    assert r2["error_total"] == 0
    for bad in ("", "unable to connect to 198.18.0.9:80 Connection refused\n"):
        try:
            parse_wrk(bad)
            raise AssertionError("parsed garbage")
        except ValueError:
            pass
    ip = parse_iperf(json.dumps({"end": {"sum_received": {"bits_per_second": 1.5e10},
                                         "sum_sent": {"retransmits": 4}}}))
    assert abs(ip["gbps"] - 15.0) < 1e-9 and ip["retransmits"] == 4
    try:
        parse_iperf(json.dumps({"error": "the server is busy running a test. try again later"}))
        raise AssertionError("iperf error not raised")
    except ValueError as e:
        assert "busy" in str(e)
    lg = parse_loadgen('noise\n{"achieved_rate":1000.0,"p50_us":88.0,"p90_us":366.5,'
                       '"p99_us":5996.5,"p999_us":13172.7,"max_us":16139.2,"mean_us":398.1,'
                       '"errors":1,"timeouts":2,"non2xx":3,"unsent":4}\n')
    assert abs(lg["p99_ms"] - 5.9965) < 1e-9 and lg["error_total"] == 10, lg
    for bad in ("", "connect 198.18.0.9:80: refused\n", "{not json\n"):
        try:
            parse_loadgen(bad)
            raise AssertionError("parsed garbage")
        except ValueError:
            pass
    # iperf3 3.12 `-u -J`, trimmed
    iu = parse_iperf_udp(json.dumps({
        "start": {"test_start": {"protocol": "UDP", "blksize": 64, "target_bitrate": 100000000}},
        "end": {"sum_sent": {"seconds": 1.0, "bytes": 5657024, "packets": 88391,
                             "lost_packets": 0, "lost_percent": 0},
                "sum_received": {"seconds": 1.0, "bytes": 4045568, "packets": 88391,
                                 "lost_packets": 25179, "lost_percent": 28.4859,
                                 "jitter_ms": 0.002}}}))
    assert iu["received"] == 63212 and abs(iu["pps"] - 63212) < 1e-6, iu
    assert abs(iu["gbps"] - 63212 * 64 * 8 / 1e9) < 1e-12 and iu["loss_pct"] == 28.4859, iu
    iu2 = parse_iperf_udp(json.dumps({"end": {"sum": {
        "seconds": 2.0, "packets": 100, "lost_packets": 10, "lost_percent": 10.0,
        "bits_per_second": 1e6}}}))
    assert iu2["pps"] == 45.0 and iu2["gbps"] == 1e-3 and iu2["sent_pps"] == 50.0, iu2
    specs = parse_udp_specs("1400@500M, 64@1.5G")
    assert [(x["len"], x["bps"]) for x in specs] == [(1400, 5e8), (64, 1.5e9)], specs
    for bad in ("1400", "9000@1G", "64@fast"):
        try:
            parse_udp_specs(bad)
            raise AssertionError(f"accepted --udp-iperf {bad!r}")
        except ValueError:
            pass
    snmp = ("Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
            "Udp: 10 1 2 20 3 0\nUdpLite: InDatagrams NoPorts InErrors OutDatagrams "
            "RcvbufErrors SndbufErrors\nUdpLite: 0 0 0 0 0 0\n")
    assert parse_snmp_udp(snmp) == {"InDatagrams": 10, "NoPorts": 1, "InErrors": 2,
                                    "OutDatagrams": 20, "RcvbufErrors": 3, "SndbufErrors": 0}
    uc = parse_udp_counters(snmp + "IF podlb0 0 12\nIF lo 0 0\n")
    assert uc["podlb0.tx_dropped"] == 12 and uc["InDatagrams"] == 10, uc
    assert udp_delta({"node": {"podlb0.tx_dropped": 2, "InDatagrams": 1}},
                     {"node": {"podlb0.tx_dropped": 12, "InDatagrams": 1, "NoPorts": 0}}) == \
        {"node": {"podlb0.tx_dropped": 10}}
    m0 = parse_metrics('# HELP x\npodlb_udp_datagrams_total 5\n'
                       'podlb_drops_total{reason="no_flow"} 1\n'
                       'podlb_drops_total{reason="rx_ring_full"} 0\n')
    m1 = parse_metrics('podlb_udp_datagrams_total 105\npodlb_drops_total{reason="no_flow"} 1\n'
                       'podlb_drops_total{reason="rx_ring_full"} 7\n')
    assert podlb_delta(m0, m1) == {"udp_datagrams": 100, "drops": {"rx_ring_full": 7}}
    toml = udp_service_toml("dns", "198.18.0.110", 53, "nat", ["198.18.0.21:53"])
    assert 'protocol = "udp"' in toml and 'backends = ["198.18.0.21:53"]' in toml, toml
    # IPv6 (--ipv6): addresses in URLs and host:port, the ip6tables rules, the proxies' configs
    assert url_host("2001:2::21") == "[2001:2::21]" and url_host("198.18.0.21") == "198.18.0.21"
    assert FAM6.hostport("2001:2::21", 80) == "[2001:2::21]:80"
    assert FAM4.hostport(HOSTS["b1"], 80) == f"{HOSTS['b1']}:80"
    assert FAM6.podlb_vip(1) == "2001:2::111" and FAM4.podlb_vip(1) == f"{SUBNET}.111"
    r6 = Iptables(fam=FAM6).rules()
    assert ["-A", "PLBB-SERVICES", "-d", "2001:2::101/128", "-p", "tcp", "--dport", "80",
            "-j", "PLBB-SVC-WEB"] in r6, r6
    assert ["-A", "PLBB-SEP-B2", "-p", "tcp", "-j", "DNAT", "--to-destination",
            "[2001:2::22]:80"] in r6, r6
    assert not any("198.18." in x for rule in r6 for x in rule), r6
    assert Iptables().rules() == [[x.replace("2001:2::101/128", f"{VIP_IPTABLES}/32")
                                   .replace("[2001:2::21]:", f"{HOSTS['b1']}:")
                                   .replace("[2001:2::22]:", f"{HOSTS['b2']}:")
                                   .replace("[2001:2::23]:", f"{HOSTS['b3']}:") for x in rule]
                                  for rule in r6]
    h6 = haproxy_config(FAM6, Path("/d"), 1000)
    assert "bind [2001:2::102]:80" in h6 and "source [2001:2::4]" in h6, h6
    assert "server b3 [2001:2::23]:80" in h6 and "pidfile /d/haproxy-v6.pid" in h6, h6
    h4 = haproxy_config(FAM4, Path("/d"), 1000)
    assert f"bind {VIP_HAPROXY}:80" in h4 and f"source {SRC_HAPROXY}\n" in h4, h4
    n6 = nginx_stream_config(FAM6, Path("/d"), "", False)
    assert "listen [2001:2::103]:80 backlog=4096;" in n6 and "proxy_bind 2001:2::5;" in n6, n6
    assert "server [2001:2::21]:80;" in n6 and "pid /d/lbnginx-v6.pid;" in n6, n6
    assert "198.18." not in n6 and "198.18." not in h6
    assert parse_podlb_variants("afpacket-nat-w1, tap-dsr-w2") == [("afpacket", "nat", 1),
                                                                  ("tap", "dsr", 2)]
    for bad in ("afpacket-nat", "afpacket-snat-w1", "ebpf-nat-w1"):
        try:
            parse_podlb_variants(bad)
            raise AssertionError(f"accepted --ipv6-podlb {bad!r}")
        except ValueError:
            pass
    print("self-test: 28 passed, 0 failed")
    return 0


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3; medians reported)")
    p.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s measurements")
    p.add_argument("--out", default=None,
                   help="markdown output; relative paths are relative to the repository root "
                        "(default docs/benchmarks-netns.md, with --only-latency "
                        "docs/benchmarks-latency.md). Raw results go to the same name with .json")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip the open-loop latency phase (p50/p99/p99.9 at 10/50/90%% of the "
                        "direct capacity, after the throughput rounds)")
    p.add_argument("--only-latency", action="store_true",
                   help="only the latency phase (the direct capacity is measured first)")
    p.add_argument("--loadgen-bin", default="target/release/examples/loadgen",
                   help="the open-loop load generator (" + LOADGEN_HELP + ")")
    p.add_argument("--cases", default="direct,iptables,haproxy,nginx,podlb",
                   help="comma list of: direct, iptables, haproxy, nginx, podlb (default all)")
    p.add_argument("--no-podlb", action="store_true", help="same as leaving podlb out of --cases")
    p.add_argument("--podlb-bin", default="target/release/podlb",
                   help="podlb binary (relative: to the current directory, then to the "
                        "repository root; default target/release/podlb)")
    p.add_argument("--podlb-io", default="afpacket,tap,xdp",
                   help="podlb IO variants: afpacket,tap,xdp (xdp: [io] backend = \"af_xdp\")")
    p.add_argument("--podlb-mode", default="nat,dsr", help="podlb forwarding modes: nat,dsr")
    p.add_argument("--podlb-workers", default="1,2", help="podlb worker counts (default 1,2)")
    p.add_argument("--podlb-timeout", type=float, default=15.0,
                   help="seconds to wait for podlb's /status (default 15)")
    p.add_argument("--no-iperf", action="store_true",
                   help="skip the iperf3 measurements (TCP, and UDP with --udp)")
    p.add_argument("--udp", action="store_true",
                   help="add the UDP phase after the TCP rounds: iperf3 -u (--udp-iperf) and "
                        "DNS q/s (bench/dnsload.py against dnsmasq on the backends) through "
                        "direct, iptables, nginx (listen udp) and podlb (protocol = \"udp\" "
                        "services); haproxy is listed as skipped (no UDP)")
    p.add_argument("--only-udp", action="store_true",
                   help="only the UDP phase (no TCP rounds, no latency phase); default --out "
                        "docs/benchmarks-udp.md")
    p.add_argument("--ipv6", action="store_true",
                   help="add IPv6 cases to the TCP rounds (same rounds, same measurements, "
                        "addresses of 2001:2::/48): direct, ip6tables (DNAT + MASQUERADE), "
                        "haproxy and nginx as far as --cases has them, and the podlb variants "
                        "of --ipv6-podlb; reported in an `IPv6` section with ratios ÷ ip6tables "
                        "beside the IPv4 ones")
    p.add_argument("--only-ipv6", action="store_true",
                   help="only the IPv6 cases (no IPv4 rounds, no latency or UDP phase); "
                        "default --out docs/benchmarks-ipv6.md")
    p.add_argument("--ipv6-podlb", default=IPV6_PODLB_DEFAULT,
                   help="podlb variants of the IPv6 cases, comma list of IO-MODE-wN (IO: "
                        "afpacket, tap, xdp; MODE: nat, dsr), default " + IPV6_PODLB_DEFAULT)
    p.add_argument("--udp-iperf", default=UDP_IPERF_DEFAULT,
                   help="iperf3 -u runs of the UDP phase, comma list of PAYLOAD@RATE (-l bytes, "
                        f"-b bits/s; default {UDP_IPERF_DEFAULT})")
    p.add_argument("--udp-window", default="4M",
                   help="iperf3 -w of the UDP runs: the iperf3 server's socket buffer, so the "
                        "receiver's scheduling hiccups do not count as path loss (default 4M, "
                        "capped by net.core.rmem_max; 0: iperf3's default)")
    p.add_argument("--dns-sockets", type=int, default=32,
                   help="UDP sockets (flows) of the DNS load (default 32)")
    p.add_argument("--dns-outstanding", type=int, default=64,
                   help="DNS queries in flight per load process (default 64)")
    p.add_argument("--dns-procs", type=int, default=1,
                   help="DNS load processes (default 1)")
    p.add_argument("--no-chart", action="store_true", help="do not try to draw a PNG chart")
    p.add_argument("--time-limit", type=int, default=0,
                   help="abort (and clean up) after this many seconds; default: estimated "
                        "run time x2 + 120")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs (temp dir)")
    p.add_argument("--self-test", action="store_true", help="test the output parsers and exit")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration = 1, 2
    if sum((a.only_latency, a.only_udp, a.only_ipv6)) > 1:
        p.error("--only-latency, --only-udp and --only-ipv6 exclude each other")
    if a.only_ipv6 and a.udp:
        p.error("--only-ipv6 has no UDP phase (--udp measures IPv4)")
    if a.ipv6 and (a.only_latency or a.only_udp):
        p.error("--ipv6 adds to the TCP rounds, which --only-latency and --only-udp leave out")
    if a.only_latency:
        a.latency = True
    if a.only_udp:
        a.udp, a.latency = True, False
    if a.only_ipv6:
        a.ipv6, a.latency = True, False
    if a.out is None:
        a.out = ("docs/benchmarks-latency.md" if a.only_latency else
                 "docs/benchmarks-udp.md" if a.only_udp else
                 "docs/benchmarks-ipv6.md" if a.only_ipv6 else "docs/benchmarks-netns.md")
    try:
        a.ipv6_variants = parse_podlb_variants(a.ipv6_podlb)
    except ValueError as e:
        p.error(str(e))
    if a.rounds < 1 or a.duration < 1:
        p.error("--rounds and --duration must be >= 1")
    if a.dns_sockets < 1 or a.dns_outstanding < 1 or a.dns_procs < 1:
        p.error("--dns-sockets, --dns-outstanding and --dns-procs must be >= 1")
    try:
        a.udp_specs = parse_udp_specs(a.udp_iperf)
    except ValueError as e:
        p.error(str(e))
    if a.udp and not a.udp_specs and not a.no_iperf:
        p.error("--udp-iperf: no PAYLOAD@RATE given")
    return a


def build_cases(args: argparse.Namespace) -> tuple[list[Case], dict[str, str]]:
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    known = {"direct", "iptables", "haproxy", "nginx", "podlb"}
    bad = set(wanted) - known
    if bad:
        raise BenchError(f"unknown case(s) {sorted(bad)}; choose from {sorted(known)}")
    cases: list[Case] = []
    skipped: dict[str, str] = {}
    table = {"direct": Direct, "iptables": lambda: Iptables(udp=args.udp), "haproxy": Haproxy,
             "nginx": lambda: NginxStream(udp=args.udp)}
    for w in wanted:
        if w in table:
            cases.append(table[w]())
    if "podlb" in wanted and not args.no_podlb:
        binary = resolve_bin(args.podlb_bin)
        ios = [x.strip() for x in args.podlb_io.split(",") if x.strip()]
        modes = [x.strip() for x in args.podlb_mode.split(",") if x.strip()]
        workers = [int(x) for x in args.podlb_workers.split(",") if x.strip()]
        for io in ios:
            if io not in ("afpacket", "tap", "xdp"):
                raise BenchError(f"--podlb-io: unknown {io!r} (afpacket, tap, xdp)")
        for m in modes:
            if m not in ("nat", "dsr"):
                raise BenchError(f"--podlb-mode: unknown {m!r} (nat, dsr)")
        for i, (io, mode, w) in enumerate(itertools.product(ios, modes, workers)):
            c = Podlb(binary, io, mode, w, args.podlb_timeout, index=i, udp=args.udp)
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                skipped[c.name] = f"podlb binary {binary} not found (cargo build --release)"
            cases.append(c)
    return cases, skipped




def parse_podlb_variants(text: str) -> list[tuple[str, str, int]]:
    """`--ipv6-podlb`: IO-MODE-wN items, e.g. afpacket-nat-w1 -> ("afpacket", "nat", 1)."""
    out = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        m = re.fullmatch(r"(afpacket|tap|xdp)-(nat|dsr)-w([1-9][0-9]*)", part)
        if not m:
            raise ValueError(f"--ipv6-podlb: {part!r} is not IO-MODE-wN (e.g. afpacket-nat-w1)")
        out.append((m.group(1), m.group(2), int(m.group(3))))
    return out


def build_cases6(args: argparse.Namespace) -> tuple[list[Case], dict[str, str]]:
    """The IPv6 cases: those of --cases (iptables as ip6tables), podlb as --ipv6-podlb."""
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    cases: list[Case] = []
    skipped: dict[str, str] = {}
    table = {"direct": lambda: Direct(FAM6), "iptables": lambda: Iptables(fam=FAM6),
             "haproxy": lambda: Haproxy(FAM6), "nginx": lambda: NginxStream(fam=FAM6)}
    for w in wanted:
        if w in table:
            cases.append(table[w]())
    if "podlb" in wanted and not args.no_podlb:
        binary = resolve_bin(args.podlb_bin)
        for i, (io, mode, w) in enumerate(args.ipv6_variants):
            c = Podlb(binary, io, mode, w, args.podlb_timeout, index=i, fam=FAM6)
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                skipped[c.name] = f"podlb binary {binary} not found (cargo build --release)"
            cases.append(c)
    return cases, skipped


def preflight(cases: list[Case], args: argparse.Namespace) -> None:
    if args.latency and not resolve_bin(args.loadgen_bin).is_file():
        raise BenchError(f"{args.loadgen_bin} not found: {LOADGEN_HELP} (or --no-latency)")
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, iptables)")
    raise_nofile()
    need = {"ip", "nginx", "wrk", "iperf3"}
    names = {c.name for c in cases}
    if "iptables" in names:
        need.add("iptables")
    if "ip6tables" in names:
        need.add("ip6tables")
    if "haproxy" in names:
        need.add("haproxy")
    if args.udp and not os.access(dnsmasq_bin(), os.X_OK):
        raise BenchError("--udp needs dnsmasq (Debian: apt-get install dnsmasq-base)")
    missing = sorted(t for t in need if shutil.which(t) is None)
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)}")
    if "nginx" in names:
        nginx_stream_load_line()
    nslab.lab_bin()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.self_test:
        return self_test()

    return nslab.run_main(lambda: bench(args), args.keep_tmp)


def bench(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    rc = 0
    cases, skipped = build_cases(args)
    cases6, skipped6 = build_cases6(args) if args.ipv6 else ([], {})
    if args.only_ipv6:  # no IPv4 case runs
        cases, skipped = [], {}
    preflight(cases + cases6, args)
    active = [c for c in cases if c.name not in skipped] + \
        [c for c in cases6 if c.name not in skipped6]
    for fam_label, sk in (("", skipped), ("IPv6 ", skipped6)):
        for why in sorted(set(sk.values())):
            names = [n for n, w in sk.items() if w == why]
            log(f"skip {fam_label}{', '.join(names)}: {why}")
    if not active:
        raise BenchError("no case to run")
    per_case = 0 if args.only_latency or args.only_udp else 3 * args.duration + 12
    if args.latency:
        per_case += len(LOADS) * (args.duration + 2) + 8
    if args.udp:
        per_case += (0 if args.no_iperf else len(args.udp_specs) * (args.duration + 3)) \
            + args.duration + 8
    estimate = args.rounds * (len(active) + 1) * per_case + 20
    limit = args.time_limit or (2 * estimate + 120)
    signal.alarm(limit)
    log(f"{len(active)} case(s) x {args.rounds} round(s), about {estimate // 60} min "
        f"{estimate % 60} s; time limit {limit} s")

    info = machine_info(args, resolve_bin(args.podlb_bin))
    RES.tmpdir = Path(tempfile.mkdtemp(prefix=nslab.TMP_PREFIX))
    build_topology()
    if args.ipv6:
        add_ipv6()
    start_backends(udp=args.udp, ipv6=args.ipv6)
    log(f"topology up (namespaces {RES.lab.id}-*); backends answer")

    # the IPv6 cases share the rounds (one rotated order over both families), not the tables
    results: dict[str, list[dict]] = {c.name: [] for c in active if c.fam is FAM4}
    results6: dict[str, list[dict]] = {c.name: [] for c in active if c.fam is FAM6}

    def res_of(c: Case) -> dict[str, list[dict]]:
        return results6 if c.fam is FAM6 else results

    def skip_of(c: Case) -> dict[str, str]:
        return skipped6 if c.fam is FAM6 else skipped

    def label(c: Case) -> str:
        return c.name + ("/v6" if c.fam is FAM6 else "")

    for rnd in range(0 if args.only_latency or args.only_udp else args.rounds):
        k = rnd % len(active)
        order = active[k:] + active[:k]
        log(f"round {rnd + 1}/{args.rounds}: {' '.join(label(c) for c in order)} "
            f"(load {os.getloadavg()[0]:.2f})")
        for c in order:
            def body(c: Case = c) -> dict:
                entry = measure(c, args)
                ka, cc = entry["ka"], entry["cc"]
                gb = entry.get("iperf", {}).get("gbps")
                log(f"  {label(c):24s} ka {ka['rps']:>10,.0f} req/s p99 "
                    f"{fmt(ka.get('p99_ms'), '{:.3f}')} ms | close {cc['rps']:>8,.0f}/s"
                    f" | iperf3 {fmt(gb, '{:.2f}')} Gbit/s"
                    f" | errors {ka['error_total']}/{cc['error_total']}")
                if "iperf_error" in entry:
                    log(f"    iperf3: {entry['iperf_error']}")
                return entry
            res_of(c)[c.name].append(run_case(c, rnd, body))
        # a podlb variant that never started is reported as skipped, not as zeros
        for c in active:
            if isinstance(c, Podlb) and c.broken and c.name not in skip_of(c):
                if all("error" in r for r in res_of(c)[c.name]):
                    skip_of(c)[c.name] = c.broken.splitlines()[0][:200]
        active = [c for c in active if c.name not in skip_of(c) or not isinstance(c, Podlb)]
        if not active:
            break

    udp = None
    if args.udp:
        ucases, uskip = udp_cases(cases, skipped)
        udp = {"specs": args.udp_specs,
               "dns": {"sockets": args.dns_sockets, "outstanding": args.dns_outstanding,
                       "procs": args.dns_procs, "name": DNS_NAME, "timeout_s": 1.0},
               "skipped": uskip, "results": udp_phase(ucases, uskip, args.udp_specs, args)}

    lat = None
    if args.latency:
        lcases = latency_cases(cases, skipped, args)
        capacity, cap_note = direct_capacity(results, args)
        lat = {"capacity": capacity, "capacity_note": cap_note, "loads_pct": list(LOADS),
               "results": latency_phase(lcases, capacity, args,
                                        resolve_bin(args.loadgen_bin))}

    info["rounds"] = args.rounds
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    el = int(time.monotonic() - t0)
    info["elapsed"] = f"{el // 60} min {el % 60} s"
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO_ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    chart, note = (None, "disabled (--no-chart)")
    if not args.no_chart and not args.only_latency and not args.only_udp and not args.only_ipv6:
        chart, note = make_chart(out.with_suffix(".png"), cases, results, skipped)
        if chart is None:
            log(f"chart {note}")
    if args.only_latency:
        text = "\n".join(header_lines(info, args, "netns latency benchmark")) + "\n"
    elif args.only_udp:
        text = "\n".join(header_lines(info, args, "netns UDP benchmark")) + "\n"
    elif args.only_ipv6:
        text = "\n".join(header_lines(info, args, "netns IPv6 benchmark")) + "\n"
    else:
        text = render(info, cases, results, skipped, args, chart, note)
    ipv6 = None
    if args.ipv6:
        text += "\n" + render_ipv6(cases6, results6, skipped6, cases, results, skipped)
        ipv6 = {"hosts": HOSTS6, "cases": {c.name: c.description for c in cases6},
                "skipped": skipped6, "results": results6}
    if udp is not None:
        text += "\n" + render_udp(udp, cases, args)
    if lat is not None:
        lchart, lnote = (None, "disabled (--no-chart)")
        if not args.no_chart:
            lpath = out.with_name(out.stem + ("" if args.only_latency else "-latency") + ".png")
            lchart, lnote = make_latency_chart(lpath, lat)
        text += "\n" + render_latency(lat, lat["capacity"], lat["capacity_note"], lchart,
                                      lnote, args)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"info": info, "skipped": skipped, "results": results, "latency": lat, "udp": udp,
         "ipv6": ipv6},
        indent=1))
    print(text)
    log(f"wrote {out} and {out.with_suffix('.json')}")
    if any("error" in r for name, rs in results.items() if name not in skipped for r in rs):
        rc = 1
    if any("error" in r for name, rs in results6.items() if name not in skipped6 for r in rs):
        rc = 1
    if lat and any("error" in r for rs in lat["results"].values() for r in rs):
        rc = 1
    if udp and any("error" in r for name, rs in udp["results"].items()
                   if name not in udp["skipped"] for r in rs):
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
