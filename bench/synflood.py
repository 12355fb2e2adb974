#!/usr/bin/env python3
"""SYN sender that fills podlb's connection table (bench/scale.py). Standard library only.

usage: synflood.py IFNAME DST_MAC COUNT SECONDS VIP[,VIP...] [PPS]

Sends COUNT TCP SYNs (or for SECONDS, whichever ends first) out of IFNAME to DST_MAC, to
port 80 of the VIPs in turn, from spoofed sources in 198.19.0.0/16 (the benchmarking range)
with source ports 1024..65535, at most PPS frames a second if given (a receiver that
drops what it cannot take loses fewer when paced). Frame i's (address, port) pair comes from i * 2654435761 mod
2^32, a permutation, so no 5-tuple repeats within 2^32 frames. The frame is built once; per
frame only the source address and port, the destination and the two checksums change
(RFC 1071 sums with the constant part precomputed). Prints one JSON object: sent, failed,
seconds, pps.
"""

import json
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800


def words(b: bytes) -> int:
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def main(argv: list[str]) -> int:
    if len(argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    ifname, dst, count, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    vips = [socket.inet_aton(v) for v in argv[4].split(",")]
    pps = float(argv[5]) if len(argv) == 6 else 0.0
    with open(f"/sys/class/net/{ifname}/address") as f:
        src_mac = bytes(int(x, 16) for x in f.read().strip().split(":"))
    dst_mac = bytes(int(x, 16) for x in dst.split(":"))
    zero = b"\0" * 4
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, zero, zero))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 0, 80, 0x12345678, 0, 5 << 4, 0x02, 64240, 0, 0))
    frame = bytearray(dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + tcp)
    ip_base = words(bytes(ip))  # addresses zero
    tcp_base = words(bytes(tcp)) + 6 + 20  # pseudo-header minus the addresses
    vip_words = [words(v) for v in vips]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((ifname, 0))
    pack = struct.pack_into
    sent = failed = 0
    start = time.monotonic()
    deadline = start + seconds
    hi = 19 | (198 << 8)
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
        for attempt in range(100):
            try:
                sock.send(frame)
                sent += 1
                break
            except OSError as e:
                if e.errno != 105:  # ENOBUFS: back off and retry
                    raise
                time.sleep(0.0005 * (attempt + 1))
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
    print(json.dumps({"sent": sent, "failed": failed, "seconds": round(took, 3),
                      "pps": int(sent / took) if took > 0 else 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
