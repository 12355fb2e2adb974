#!/usr/bin/env python3
"""Ask who has an IPv4 address, and list every MAC that answers (netns tests only).

usage: arpwho.py IFNAME TARGET_IP [SECONDS]

Runs inside a test namespace. Sends an ARP request for TARGET_IP out of
IFNAME (from IFNAME's own MAC and first IPv4 address) three times, 100 ms
apart, with a raw AF_PACKET socket, and collects ARP replies about
TARGET_IP for SECONDS (default 0.6). Prints one JSON object:
{"macs": [sender hardware addresses, sorted], "eth_src": [Ethernet sources]}.
Python standard library only.
"""

import json
import socket
import struct
import subprocess
import sys
import time

ETH_P_ARP = 0x0806


def mac_text(b):
    return ":".join("%02x" % x for x in b)


def own_ipv4(ifname):
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", ifname],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return out[out.index("inet") + 1].split("/")[0]


def main():
    ifname, target = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.6
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((ifname, ETH_P_ARP))
    own_mac = s.getsockname()[4][:6]
    spa = socket.inet_aton(own_ipv4(ifname))
    tpa = socket.inet_aton(target)
    req = (b"\xff" * 6 + own_mac + struct.pack("!H", ETH_P_ARP)
           + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
           + own_mac + spa + b"\0" * 6 + tpa)
    macs, eth_src = set(), set()
    start = time.monotonic()
    sent = 0
    s.settimeout(0.02)
    while time.monotonic() - start < seconds:
        if sent < 3 and time.monotonic() - start >= sent * 0.1:
            s.send(req)
            sent += 1
        try:
            frame = s.recv(2048)
        except socket.timeout:
            continue
        if len(frame) < 42 or frame[12:14] != b"\x08\x06":
            continue
        op = struct.unpack("!H", frame[20:22])[0]
        if op == 2 and frame[28:32] == tpa and frame[38:42] == spa:
            macs.add(mac_text(frame[22:28]))
            eth_src.add(mac_text(frame[6:12]))
    print(json.dumps({"macs": sorted(macs), "eth_src": sorted(eth_src)}))


if __name__ == "__main__":
    main()
