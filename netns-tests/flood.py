#!/usr/bin/env python3
"""Floods for the netns tests (198.18.0.0/15 only). Python standard library.

usage: flood.py syn IFNAME DST_MAC VIP[,VIP...] COUNT SECONDS [PPS]
       flood.py arp IFNAME VIP COUNT
       flood.py garp IFNAME VIP COUNT INTERVAL_MS

syn:  spoofed TCP SYNs to port 80 of the VIPs in turn from 198.19.0.0/16
      with source ports 1024..65535: COUNT frames or SECONDS, whichever
      ends first, at most PPS a second if given (bench/scale.py fills the
      table with it; a receiver that drops what it cannot take loses fewer
      when paced). One frame
      is built once; per frame only the source address and port and the two
      checksums change (RFC 1071 sums, the constant part precomputed), so
      the loop is three struct.pack_into and one send. (address, port) pairs
      come from i * 2654435761 mod 2^32 (a permutation): no pair repeats
      within 2^32 frames.
arp:  an ARP storm from this host (its own address and MAC): COUNT
      broadcast requests, every fourth one for VIP, the others for
      198.18.200.0/24 addresses nobody has. Paced at ~20,000 a second.
garp: another host claiming VIP (RFC 5227 §2.4 conflict): COUNT gratuitous
      ARP announcements (sender = target = VIP, sender MAC = this host's),
      INTERVAL_MS apart.

Prints one JSON object with what was sent, and for syn the rate.
"""

import json
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def own(ifname):
    with open("/sys/class/net/%s/address" % ifname) as f:
        mac = mac_bytes(f.read().strip())
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("198.18.0.1", 9))
        ip = socket.inet_aton(probe.getsockname()[0])
    finally:
        probe.close()
    return mac, ip


def words(b):
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def send(sock, frame):
    for attempt in range(100):
        try:
            sock.send(frame)
            return True
        except OSError as e:
            if e.errno == 105:  # ENOBUFS: back off
                time.sleep(0.0005 * (attempt + 1))
                continue
            raise
    return False


def syn(ifname, dst, vips, count, seconds, pps=0.0):
    """Spoofed SYNs to port 80 of `vips` (comma list) in turn; at most `pps` a second if > 0."""
    src_mac, _ = own(ifname)
    vips = [socket.inet_aton(v) for v in vips.split(",")]
    zero = b"\0" * 4
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, zero, zero))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 0, 80, 0x12345678, 0, 5 << 4, 0x02, 64240, 0, 0))
    frame = bytearray(mac_bytes(dst) + src_mac + struct.pack("!H", ETH_P_IP) + ip + tcp)
    ip_base = words(bytes(ip))  # both addresses zero
    tcp_base = words(bytes(tcp)) + 6 + 20  # pseudo-header minus the addresses
    vip_words = [words(v) for v in vips]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((ifname, 0))
    pack = struct.pack_into
    sent = failed = 0
    start = time.monotonic()
    deadline = start + seconds
    hi = 19 | (198 << 8)  # 198.19.x.y
    nv = len(vips)
    i = 0
    while i < count:
        h = (i * 2654435761) & 0xFFFFFFFF
        lo = h & 0xFFFF
        sport = 1024 + (h >> 16) % 64512
        v = i % nv
        frame[30:34] = vips[v]
        pack("!HHH", frame, 24, fold(ip_base + vip_words[v] + hi + lo), hi, lo)
        pack("!H", frame, 34, sport)
        pack("!H", frame, 50, fold(tcp_base + vip_words[v] + hi + lo + sport))
        if send(sock, frame):
            sent += 1
        else:
            failed += 1
        i += 1
        if i & 0x3FF == 0:
            now = time.monotonic()
            if now >= deadline:
                break
            if pps and i / pps > now - start:
                time.sleep(i / pps - (now - start))
    took = time.monotonic() - start
    return {"sent": sent, "failed": failed, "seconds": round(took, 3), "pps": int(sent / took) if took > 0 else 0}


def arp_frame(src_mac, sender_ip, target_ip, dst=b"\xff" * 6, op=1, target_mac=b"\0" * 6):
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, src_mac, sender_ip, target_mac, target_ip)
    return dst + src_mac + struct.pack("!H", ETH_P_ARP) + body + b"\0" * 18


def arp(ifname, vip, count):
    src_mac, src_ip = own(ifname)
    vip = socket.inet_aton(vip)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    for_vip = for_other = 0
    start = time.monotonic()
    for i in range(count):
        if i % 4 == 0:
            target, for_vip = vip, for_vip + 1
        else:
            target, for_other = bytes([198, 18, 200, i % 251 + 1]), for_other + 1
        send(sock, arp_frame(src_mac, src_ip, target))
        if i % 20 == 19:
            # ~20k/s at most: the point is many per second, not a rate test.
            time.sleep(max(0.0, start + (i + 1) / 20000 - time.monotonic()))
    took = time.monotonic() - start
    return {"for_vip": for_vip, "for_other": for_other, "seconds": round(took, 3)}


def garp(ifname, vip, count, interval_ms):
    src_mac, _ = own(ifname)
    vip = socket.inet_aton(vip)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    for i in range(count):
        send(sock, arp_frame(src_mac, vip, vip))
        if i + 1 < count:
            time.sleep(interval_ms / 1000.0)
    return {"sent": count, "mac": ":".join("%02x" % b for b in src_mac)}


def main(argv):
    if len(argv) in (7, 8) and argv[1] == "syn":
        pps = float(argv[7]) if len(argv) == 8 else 0.0
        out = syn(argv[2], argv[3], argv[4], int(argv[5]), float(argv[6]), pps)
    elif len(argv) == 5 and argv[1] == "arp":
        out = arp(argv[2], argv[3], int(argv[4]))
    elif len(argv) == 6 and argv[1] == "garp":
        out = garp(argv[2], argv[3], int(argv[4]), float(argv[5]))
    else:
        sys.stderr.write(__doc__)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
