#!/usr/bin/env python3
"""Send malformed and truncated frames at a MAC address (netns tests only).

usage: badframes.py IFNAME DST_MAC VIP COUNT SEED [--kinds K1,K2,...]
                      [--vrrp-src IP] [--vrrp-dst IP] [--vrid N]
       badframes.py --recv IFNAME SRC_MAC COUNT SECONDS

Runs inside a test namespace (`ip netns exec <client> python3 badframes.py ...`)
and sends COUNT frames, round-robin over the kinds below, each with random
lengths from a seeded generator, out of IFNAME with a raw AF_PACKET socket.
Every frame is addressed to DST_MAC and, where it carries IPv4, to VIP, and
every one of them is malformed: a correct parser must drop each.

Without --kinds it sends the KINDS below. --kinds picks from KINDS and
EXTRA_KINDS; the extra ones need podlb set up for them:
  vrrp_unknown_vrid   VRRPv3 advert (RFC 9568 §5.1, §5.2) for VRID N+1 from
                      --vrrp-src (a configured peer) to --vrrp-dst: §7.1
                      "VRID not configured" (vrid_mismatch)
  vrrp_low_ttl        valid advert for VRID N with IPv4 TTL 1..254 (§7.1
                      TTL must be 255: bad_ttl)
  vrrp_bad_checksum   advert for VRID N whose checksum is wrong (bad_checksum)
  vrrp_stranger       valid advert for VRID N from this host's address, which
                      is not a configured unicast peer (unknown_peer)
  jumbo               a 9000-byte IPv4 frame to the VIP: bigger than the
                      device MTU, which the sending kernel refuses (EMSGSIZE,
                      reported as "rejected"); a larger MTU on the sender only
                      moves the refusal to the receiving veth.
VRRP adverts go to DST_MAC as unicast (RFC 9568 §6.1 unicast peers).

Prints one JSON object: {"sent": N, "rejected": N, "kinds": {kind: {...}}}.
"rejected" counts frames the local kernel refused to send (e.g. Ethernet
runts shorter than 14 bytes, which AF_PACKET never puts on the wire); they
never reach the peer. Python standard library only.

With --recv it is the other end used to test the harness itself: it counts
frames from SRC_MAC arriving at IFNAME on a packet socket (what podlb sees)
until COUNT have arrived or SECONDS passed, and prints {"received": N}.
"""

import json
import random
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


class Gen:
    def __init__(self, dst, src, src_ip, vip, rng):
        self.dst, self.src = dst, src
        self.src_ip, self.vip = src_ip, vip
        self.rng = rng

    def eth(self, ethertype, payload):
        return self.dst + self.src + struct.pack("!H", ethertype) + payload

    def ipv4(self, proto, payload, *, ihl=5, tot_len=None, flags_frag=0, bad_csum=False):
        tot = tot_len if tot_len is not None else 20 + len(payload)
        ident = self.rng.randrange(0x10000)
        hdr = struct.pack(
            "!BBHHHBBH4s4s",
            (4 << 4) | ihl, 0, tot & 0xFFFF, ident, flags_frag, 64, proto, 0,
            self.src_ip, self.vip,
        )
        csum = checksum(hdr)
        if bad_csum:
            csum ^= 1 + self.rng.randrange(0xFFFF)
        hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
        return hdr + payload

    def tcp(self, *, doff=5, flags=0x02):
        sport = self.rng.randrange(1024, 65536)
        seq = self.rng.randrange(1 << 32)
        return struct.pack("!HHIIBBHHH", sport, 80, seq, 0, doff << 4, flags, 65535, 0, 0)

    # --- the kinds; each returns one malformed frame -----------------------

    def eth_runt(self):
        # Shorter than an Ethernet header: the sending kernel refuses these.
        return (self.dst + self.src + b"\x08\x00")[: self.rng.randrange(1, 14)]

    def vlan_truncated(self):
        # A complete 802.1Q tag (VLAN 100) followed by a truncated IPv4 or ARP
        # header. A frame cut inside the tag, or with fewer than 2 bytes after
        # it, never reaches a packet socket or a bridge port: the receiving
        # kernel drops it while untagging (skb_vlan_untag), before any tap.
        # Note the receiver sees these frames with the tag already removed
        # (it is in the packet socket's auxiliary data).
        if self.rng.random() < 0.5:
            inner, body = ETH_P_IP, self.ipv4(6, self.tcp())[: self.rng.randrange(2, 20)]
        else:
            arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, self.src, self.src_ip, b"\0" * 6, self.vip)
            inner, body = ETH_P_ARP, arp[: self.rng.randrange(2, 28)]
        return self.eth(ETH_P_8021Q, struct.pack("!HH", 0x0064, inner) + body)

    def arp_truncated(self):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, self.src, self.src_ip, b"\0" * 6, self.vip)
        return self.eth(ETH_P_ARP, arp[: self.rng.randrange(0, 28)])

    def arp_bad_hlen(self):
        hlen = self.rng.choice([0, 1, 4, 8, 16, 255])
        plen = self.rng.choice([4, 4, 0, 6, 16])
        arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, hlen, plen, 1, self.src, self.src_ip, b"\0" * 6, self.vip)
        return self.eth(ETH_P_ARP, arp + bytes(self.rng.randrange(0, 8)))

    def ipv4_truncated(self):
        full = self.ipv4(6, self.tcp())
        return self.eth(ETH_P_IP, full[: self.rng.randrange(0, 20)])

    def ipv4_bad_ihl(self):
        ihl = self.rng.randrange(0, 5)
        return self.eth(ETH_P_IP, self.ipv4(6, self.tcp(), ihl=ihl))

    def ipv4_bad_total_length(self):
        payload = self.tcp()
        tot = 20 + len(payload) + self.rng.randrange(1, 1400)
        return self.eth(ETH_P_IP, self.ipv4(6, payload, tot_len=tot))

    def ipv4_bad_checksum(self):
        return self.eth(ETH_P_IP, self.ipv4(6, self.tcp(), bad_csum=True))

    def ipv4_fragment(self):
        # A later fragment (offset > 0) whose first never comes: podlb steers
        # first fragments like any segment and later ones after their first,
        # so these are counted as fragment_unmatched.
        flags_frag = self.rng.randrange(1, 0x2000) | self.rng.choice([0, 0x2000])
        payload = self.tcp() + bytes(self.rng.randrange(0, 64))
        return self.eth(ETH_P_IP, self.ipv4(6, payload, flags_frag=flags_frag))

    def tcp_bad_offset(self):
        return self.eth(ETH_P_IP, self.ipv4(6, self.tcp(doff=self.rng.randrange(0, 5))))

    def tcp_truncated(self):
        return self.eth(ETH_P_IP, self.ipv4(6, self.tcp()[: self.rng.randrange(0, 20)]))

    def udp_truncated(self):
        udp = struct.pack("!HHHH", self.rng.randrange(1024, 65536), 80, 8, 0)
        return self.eth(ETH_P_IP, self.ipv4(17, udp[: self.rng.randrange(0, 8)]))

    # --- extra kinds (opt-in with --kinds) --------------------------------

    def vrrp_advert(self, src, vrid, ttl=255, bad_csum=False):
        addrs = self.vip
        msg = bytearray(struct.pack("!BBBBHH", 0x31, vrid, 100, 1, 100, 0) + addrs)
        pseudo = src + self.vrrp_dst + struct.pack("!BBH", 0, 112, len(msg))
        csum = checksum(pseudo + bytes(msg))
        if bad_csum:
            csum ^= 1 + self.rng.randrange(0xFFFF)
        struct.pack_into("!H", msg, 6, csum)
        ident = self.rng.randrange(0x10000)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(msg), ident, 0, ttl, 112, 0, src, self.vrrp_dst)
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        return self.eth(ETH_P_IP, hdr + bytes(msg))

    def vrrp_unknown_vrid(self):
        return self.vrrp_advert(self.vrrp_src, (self.vrid % 255) + 1)

    def vrrp_low_ttl(self):
        return self.vrrp_advert(self.vrrp_src, self.vrid, ttl=self.rng.randrange(1, 255))

    def vrrp_bad_checksum(self):
        return self.vrrp_advert(self.vrrp_src, self.vrid, bad_csum=True)

    def vrrp_stranger(self):
        return self.vrrp_advert(self.src_ip, self.vrid)

    def jumbo(self):
        payload = self.tcp() + bytes(9000 - 14 - 20 - 20)
        return self.eth(ETH_P_IP, self.ipv4(6, payload))

    def icmp_truncated(self):
        icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1)
        return self.eth(ETH_P_IP, self.ipv4(1, icmp[: self.rng.randrange(0, 8)]))


KINDS = [
    "eth_runt",
    "vlan_truncated",
    "arp_truncated",
    "arp_bad_hlen",
    "ipv4_truncated",
    "ipv4_bad_ihl",
    "ipv4_bad_total_length",
    "ipv4_bad_checksum",
    "ipv4_fragment",
    "tcp_bad_offset",
    "tcp_truncated",
    "udp_truncated",
    "icmp_truncated",
]

EXTRA_KINDS = ["vrrp_unknown_vrid", "vrrp_low_ttl", "vrrp_bad_checksum", "vrrp_stranger", "jumbo"]


def recv(ifname, src_mac, count, seconds):
    want = mac_bytes(src_mac)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((ifname, 0x0003))
    sock.settimeout(0.2)
    print(json.dumps({"ready": True}), flush=True)
    got = 0
    deadline = time.monotonic() + seconds
    try:
        while got < count and time.monotonic() < deadline:
            try:
                frame = sock.recv(65536)
            except socket.timeout:
                continue
            if frame[6:12] == want:
                got += 1
    except KeyboardInterrupt:  # SIGINT: report what arrived so far
        pass
    print(json.dumps({"received": got}), flush=True)
    return 0


def main(argv):
    if len(argv) == 6 and argv[1] == "--recv":
        return recv(argv[2], argv[3], int(argv[4]), float(argv[5]))
    opts = {"--kinds": ",".join(KINDS), "--vrrp-src": "198.18.0.3", "--vrrp-dst": "198.18.0.2", "--vrid": "51"}
    pos = []
    args = argv[1:]
    while args:
        a = args.pop(0)
        if a in opts and args:
            opts[a] = args.pop(0)
        else:
            pos.append(a)
    kinds = opts["--kinds"].split(",")
    if len(pos) != 5 or any(k not in KINDS + EXTRA_KINDS for k in kinds):
        sys.stderr.write(__doc__)
        return 2
    ifname, dst, vip, count, seed = pos[0], pos[1], pos[2], int(pos[3]), int(pos[4])
    with open("/sys/class/net/%s/address" % ifname) as f:
        src = mac_bytes(f.read().strip())
    src_ip = None
    # The source address only has to look plausible; use the host's if known.
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((vip, 9))
        src_ip = socket.inet_aton(probe.getsockname()[0])
        probe.close()
    except OSError:
        src_ip = socket.inet_aton("198.18.0.10")
    gen = Gen(mac_bytes(dst), src, src_ip, socket.inet_aton(vip), random.Random(seed))
    gen.vrrp_src = socket.inet_aton(opts["--vrrp-src"])
    gen.vrrp_dst = socket.inet_aton(opts["--vrrp-dst"])
    gen.vrid = int(opts["--vrid"])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    stats = {k: {"sent": 0, "rejected": 0} for k in kinds}
    deadline = time.monotonic() + 30
    for i in range(count):
        kind = kinds[i % len(kinds)]
        frame = getattr(gen, kind)()
        for attempt in range(50):
            try:
                sock.send(frame)
                stats[kind]["sent"] += 1
                break
            except OSError as e:
                if e.errno == 105 and time.monotonic() < deadline:  # ENOBUFS: back off
                    time.sleep(0.002 * (attempt + 1))
                    continue
                stats[kind]["rejected"] += 1
                stats[kind]["error"] = e.strerror
                break
        else:
            stats[kind]["rejected"] += 1
            stats[kind]["error"] = "ENOBUFS persisted"
        if i % 8 == 7:
            time.sleep(0.001)  # pace (~8k frames/s): do not overrun backlogs and rings
    print(json.dumps({
        "sent": sum(s["sent"] for s in stats.values()),
        "rejected": sum(s["rejected"] for s in stats.values()),
        "kinds": stats,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
