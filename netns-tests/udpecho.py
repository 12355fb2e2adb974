#!/usr/bin/env python3
"""A UDP backend for the netns tests (issue 16); stdlib only.

usage: udpecho.py NAME PORT
Answers every datagram with "NAME IP:PORT SEQ", where IP:PORT is the
source the datagram came from (with full NAT: the VIP and podlb's NAT port)
and SEQ is the datagram's own text. Prints "ready" once bound.
"""

import socket
import sys


def main():
    name, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, (ip, sport) = s.recvfrom(2048)
        seq = data.decode("ascii", "replace").strip()
        s.sendto(f"{name} {ip}:{sport} {seq}".encode(), (ip, sport))


if __name__ == "__main__":
    main()
