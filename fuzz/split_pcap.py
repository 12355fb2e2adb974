#!/usr/bin/env python3
"""Splits the lab captures (fuzz/seeds/*.pcap, from capture-seeds.sh) into
seed files, one per distinct frame, at the layer each fuzz target reads:

  ethernet  the whole frame            arp   the Ethernet payload
  ipv4      the Ethernet payload       tcp / udp / icmp   the IPv4 payload
  vrrp      the IPv4 packet of a VRRP advert (so its TTL and addresses count)
  forward   the forward target's input: a config prefix, then each frame as
            a raw-frame record; one seed per frame and one per capture (the
            whole conversation in order)
  vrrp_pair schedules that inject the captured adverts' fields

Plain pcap parsing (no scapy): a 24-byte global header, then 16-byte record
headers. Writes fuzz/corpus/<target>/seed-<name>; existing seeds are replaced.
"""
import glob
import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1" or magic == b"\x4d\x3c\xb2\xa1":
        end = "<"
    elif magic == b"\xa1\xb2\xc3\xd4" or magic == b"\xa1\xb2\x3c\x4d":
        end = ">"
    else:
        sys.exit(f"{path}: not a pcap file")
    linktype = struct.unpack(end + "I", data[20:24])[0]
    if linktype != 1:
        sys.exit(f"{path}: link type {linktype}, want 1 (Ethernet)")
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off : off + 16])
        off += 16
        yield data[off : off + incl]
        off += incl


def layers(frame):
    """(ethertype, ipv4 packet or None, ip proto, ip payload)."""
    if len(frame) < 14:
        return None, None, None, None
    et = struct.unpack("!H", frame[12:14])[0]
    if et != 0x0800 or len(frame) < 34:
        return et, None, None, None
    ip = frame[14:]
    hl = (ip[0] & 15) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    ip = ip[:total]
    return et, ip, ip[9], ip[hl:]


def main():
    corpus = os.path.join(HERE, "corpus")
    out = {}

    def add(target, name, blob):
        d = out.setdefault(target, {})
        h = hashlib.sha1(blob).hexdigest()[:10]
        d.setdefault(h, (name, blob))

    # forward input prefix: cfg (serving, accept mode, all backends
    # resolved), NAT port seed, pickup on, clock.
    fwd_prefix = bytes([0]) + struct.pack("!I", 7) + bytes([1]) + struct.pack("!I", 1000)

    def fwd_record(frame):
        return bytes([0]) + struct.pack("!H", len(frame)) + frame

    for path in sorted(glob.glob(os.path.join(HERE, "seeds", "*.pcap"))):
        cap = os.path.splitext(os.path.basename(path))[0]
        conv = bytearray(fwd_prefix)
        for frame in frames(path):
            et, ip, proto, l4 = layers(frame)
            kind = {0x0806: "arp", 0x0800: "ipv4"}.get(et, "eth")
            if ip is not None:
                kind = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 112: "vrrp"}.get(proto, "ip")
            add("ethernet", f"{cap}-{kind}", frame)
            add("forward", f"{cap}-{kind}", fwd_prefix + fwd_record(frame))
            conv += fwd_record(frame)
            if et == 0x0806:
                add("arp", cap, frame[14:])
            if ip is not None:
                add("ipv4", f"{cap}-{kind}", frame[14:])
                if proto in (1, 6, 17):
                    add({1: "icmp", 6: "tcp", 17: "udp"}[proto], cap, l4)
                if proto == 112:
                    add("vrrp", cap, frame[14:])
                    # vrrp_pair: prio A 200, B 100, preempt both, 3 cs;
                    # B starts 1 s later; then: inject this advert's
                    # fields (VRID, priority, its interval) from a third
                    # party to each router, run, cut A->B, run, heal.
                    vrid, prio = l4[1], l4[2]
                    intvl = struct.unpack("!H", l4[4:6])[0] & 0x0FFF
                    sched = bytes([200, 100, 0x03]) + struct.pack("!H", 1000)
                    for who in (0, 1):
                        op = 2 | who << 2 | 8 | 16
                        sched += bytes([op, 0, vrid, prio]) + struct.pack("!H", intvl)
                        sched += bytes([3]) + struct.pack("!H", 700)
                    sched += bytes([0, 3]) + struct.pack("!H", 2000) + bytes([8])
                    add("vrrp_pair", f"{cap}-prio{prio}", sched)
        add("forward", f"{cap}-conversation", bytes(conv))

    # Hand-made schedules for the pair: partition and heal; priority flips.
    add("vrrp_pair", "partition", bytes([200, 100, 0x03, 0, 0, 0, 4, 3, 0x13, 0x88, 8, 12, 3, 0x03, 0xE8]))
    add("vrrp_pair", "priority", bytes([150, 150, 0x07, 0, 10, 1, 250, 3, 0x07, 0xD0, 5, 1, 3, 0x07, 0xD0]))
    # forward: SYN to each service, a reply to the NAT flow, a FIN, a burst,
    # time passing with sweeps.
    fwd = bytearray(fwd_prefix)
    fwd += bytes([2, 0, 1, 0x02, 4]) + b"GET " + bytes([0])  # SYN to NAT, payload 4
    fwd += bytes([3, 0, 0, 0x12, 0])  # backend SYN-ACK via the reverse flow
    fwd += bytes([2, 0, 1, 0x10, 0, 0])  # client ACK
    fwd += bytes([2 | 8, 1, 2, 0x02, 0, 0])  # SYN to DSR
    fwd += bytes([2, 0, 1, 0x11, 0, 0])  # FIN
    fwd += bytes([3, 0, 0, 0x11, 0])  # backend FIN
    fwd += bytes([5, 2, 20]) + struct.pack("!H", 30000)  # 160 SYNs
    fwd += bytes([4 | 8]) + struct.pack("!HH", 700, 0)  # 70 s on, sweep
    fwd += bytes([2, 0, 1, 0x02, 0, 0x03])  # SYN, partial checksum kept
    fwd += bytes([2, 0, 3, 0x02, 0, 0x01])  # SYN, partial, completed on TX
    add("forward", "synthetic", bytes(fwd))

    for target, seeds in sorted(out.items()):
        d = os.path.join(corpus, target)
        os.makedirs(d, exist_ok=True)
        for old in glob.glob(os.path.join(d, "seed-*")):
            os.remove(old)
        for h, (name, blob) in sorted(seeds.items()):
            with open(os.path.join(d, f"seed-{name}-{h}"), "wb") as f:
                f.write(blob)
        print(f"{target}: {len(seeds)} seeds, {sum(len(b) for _, b in seeds.values())} bytes")


if __name__ == "__main__":
    main()
