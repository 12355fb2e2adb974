#!/usr/bin/env python3
"""DNS load over UDP for the netns tests (issue 16); stdlib only.

Opens SOCKETS UDP sockets (each its own source port: a 5-tuple of its
own), and sends QUERIES A queries for NAME to SERVER:PORT on each, one at
a time per socket, with at most CONCURRENCY queries outstanding overall.
No retries: a query unanswered within TIMEOUT seconds counts as
unanswered. Says "sending" on stderr when the sockets are open and the
first query goes out, then prints one JSON object: sent, answered, unanswered, bad
(answers that did not parse or did not match), per-address answer counts
(`answers`), per-address counts of sockets (`sockets_by_answer`) and the
elapsed seconds.

usage: dnsload.py SERVER PORT NAME SOCKETS QUERIES CONCURRENCY TIMEOUT
"""

import json
import random
import selectors
import socket
import struct
import sys
import time


def query(qid, name):
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD, one question
    qname = b"".join(
        bytes([len(p)]) + p.encode("ascii") for p in name.strip(".").split(".")
    )
    return header + qname + b"\x00" + struct.pack("!HH", 1, 1)  # A, IN


def skip_name(msg, off):
    while True:
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def parse_answer(msg):
    """(id, rcode, [A addresses]) of a DNS response, or None."""
    if len(msg) < 12:
        return None
    qid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if not flags & 0x8000:
        return None
    off = 12
    try:
        for _ in range(qd):
            off = skip_name(msg, off) + 4
        addrs = []
        for _ in range(an):
            off = skip_name(msg, off)
            rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off : off + 10])
            off += 10
            if rtype == 1 and rdlen == 4:
                addrs.append(socket.inet_ntoa(msg[off : off + 4]))
            off += rdlen
    except (IndexError, struct.error):
        return None
    return qid, flags & 0xF, addrs


def main():
    server, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    nsock, per, conc = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    timeout = float(sys.argv[7])
    dst = (server, port)
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(nsock):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("0.0.0.0", 0))
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, i)
    left = [per] * nsock  # queries still to send, per socket
    pending = {}  # socket index -> (query id, deadline)
    ready = list(range(nsock))  # sockets with nothing outstanding
    random.shuffle(ready)
    sent = answered = unanswered = bad = 0
    answers = {}
    sock_answer = {}  # socket index -> address (its backend)
    start = time.monotonic()
    print("sending", file=sys.stderr, flush=True)
    while ready or pending:
        now = time.monotonic()
        while ready and len(pending) < conc:
            i = ready.pop()
            qid = random.getrandbits(16)
            try:
                socks[i].sendto(query(qid, name), dst)
            except BlockingIOError:
                ready.append(i)
                break
            sent += 1
            left[i] -= 1
            pending[i] = (qid, now + timeout)
        wait = min(d for _, d in pending.values()) - now if pending else 0
        for key, _ in sel.select(max(wait, 0)):
            i = key.data
            while True:
                try:
                    msg = socks[i].recv(4096)
                except BlockingIOError:
                    break
                except OSError:  # e.g. ICMP port unreachable
                    break
                p = parse_answer(msg)
                if i not in pending or p is None or p[0] != pending[i][0]:
                    bad += 1
                    continue
                del pending[i]
                if p[1] != 0 or len(p[2]) != 1:
                    bad += 1
                else:
                    answered += 1
                    a = p[2][0]
                    answers[a] = answers.get(a, 0) + 1
                    sock_answer.setdefault(i, a)
                if left[i] > 0:
                    ready.append(i)
        now = time.monotonic()
        for i, (_, deadline) in list(pending.items()):
            if deadline <= now:
                del pending[i]
                unanswered += 1
                if left[i] > 0:
                    ready.append(i)
    by_sock = {}
    for a in sock_answer.values():
        by_sock[a] = by_sock.get(a, 0) + 1
    print(
        json.dumps(
            {
                "sent": sent,
                "answered": answered,
                "unanswered": unanswered,
                "bad": bad,
                "answers": answers,
                "sockets_by_answer": by_sock,
                "elapsed_s": round(time.monotonic() - start, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
