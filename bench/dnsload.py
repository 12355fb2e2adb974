#!/usr/bin/env python3
"""Closed-loop DNS load generator (Python 3 standard library only).

Keeps a fixed number of queries outstanding over many UDP sockets (one source port
each, so a balancer sees as many flows) for a fixed time, and prints one JSON line:

  {"answered", "unanswered", "late", "bad", "sent", "qps", "duration_s",
   "p50_ms", "p99_ms", "max_ms", "sockets", "outstanding", "procs", ...}

* every socket is connect()ed to SERVER:PORT and keeps `outstanding / sockets` queries
  in flight (type A for NAME, a new 16-bit id each); an answer (QR set, RCODE 0, at
  least one answer record, the id of a query in flight) is `answered`, and its socket
  sends the next query at once;
* a query not answered within `--timeout` seconds is `unanswered`, and a new one takes
  its place, so the load stays at the window; an answer that comes after that is `late`;
  an answer with another RCODE, no answer record, or an unknown id is `bad`;
* after `--duration` no new query is sent; the ones in flight get `--timeout` to be
  answered (counted, but not in `qps`), the rest are `unanswered`;
* `qps` = answers received during the run ÷ its length; latency is from a query's send
  to its answer (percentiles over all answers).

Zero loss means `unanswered` = 0: the figure to compare is `qps` at that point. `--procs N`
forks N copies (each with the sockets and window given), summed.

`--once` sends one query (retried until `--timeout`) and prints the A record of the answer,
or exits 1: a sanity check of the path.

Used by bench/netns_bench.py (`--udp`); usable alone, e.g.
  python3 bench/dnsload.py --server 198.18.0.21 --name who.podlb.test --duration 5
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import struct
import sys
import time

QTYPE_A = 1
QCLASS_IN = 1


def encode_query_tail(name: str) -> bytes:
    """Everything of a query after its id: flags (RD), counts, the question."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.strip(".").split(".") if p)
    return struct.pack(">HHHHH", 0x0100, 1, 0, 0, 0) + labels + b"\x00" + \
        struct.pack(">HH", QTYPE_A, QCLASS_IN)


def skip_name(msg: bytes, i: int) -> int:
    while True:
        if i >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def parse_answer(msg: bytes) -> tuple[int, int, int, list[str]]:
    """(id, rcode, ancount, A records) of a response; ValueError if it is not one."""
    if len(msg) < 12:
        raise ValueError("short message")
    qid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", msg[:12])
    if not flags & 0x8000:
        raise ValueError("not a response")
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    addrs = []
    for _ in range(an):
        i = skip_name(msg, i)
        if i + 10 > len(msg):
            raise ValueError("truncated answer")
        rtype, _rclass, _ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
        i += 10
        if rtype == QTYPE_A and rdlen == 4:
            addrs.append(socket.inet_ntoa(msg[i:i + 4]))
        i += rdlen
    return qid, flags & 0x000F, an, addrs


def once(args: argparse.Namespace) -> int:
    tail = encode_query_tail(args.name)
    deadline = time.monotonic() + args.timeout
    last = "no answer"
    qid = os.getpid() & 0xFFFF
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(min(0.5, max(0.05, deadline - time.monotonic())))
            s.connect((args.server, args.port))
            qid = (qid + 1) & 0xFFFF
            s.send(struct.pack(">H", qid) + tail)
            msg = s.recv(4096)
            rid, rcode, an, addrs = parse_answer(msg)
            if rid == qid and rcode == 0 and addrs:
                print(addrs[0])
                return 0
            last = f"id {rid} rcode {rcode} answers {an}"
        except (OSError, ValueError) as e:
            last = str(e) or type(e).__name__
        finally:
            s.close()
        time.sleep(0.05)
    print(f"no answer from {args.server}:{args.port} for {args.name} within "
          f"{args.timeout:.1f}s: {last}", file=sys.stderr)
    return 1


def percentile(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def load(args: argparse.Namespace, seed: int) -> dict:
    """One process's run: a dict of counts and the latencies (seconds)."""
    tail = encode_query_tail(args.name)
    nsock = max(1, args.sockets)
    per = max(1, args.outstanding // nsock)
    socks: dict[int, socket.socket] = {}
    pending: dict[int, dict[int, float]] = {}
    next_id: dict[int, int] = {}
    ep = select.epoll()
    for _ in range(nsock):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.connect((args.server, args.port))
        s.setblocking(False)
        fd = s.fileno()
        socks[fd] = s
        pending[fd] = {}
        next_id[fd] = (seed * 7919 + fd * 104729) & 0xFFFF
        ep.register(fd, select.EPOLLIN)
    c = {"sent": 0, "answered": 0, "answered_in_run": 0, "unanswered": 0, "late": 0, "bad": 0,
         "send_errors": 0}
    lat: list[float] = []
    pack = struct.Struct(">H").pack
    unpack_from = struct.Struct(">HH").unpack_from

    def send(fd: int, now: float) -> None:
        p = pending[fd]
        qid = next_id[fd]
        while qid in p:
            qid = (qid + 1) & 0xFFFF
        next_id[fd] = (qid + 1) & 0xFFFF
        try:
            socks[fd].send(pack(qid) + tail)
        except OSError as e:
            # ECONNREFUSED: an ICMP port unreachable came back on this socket (the query
            # is then counted as unanswered when it times out); ENOBUFS/EAGAIN: full
            c["send_errors"] += 1
            if e.errno not in (errno.ECONNREFUSED, errno.ENOBUFS, errno.EAGAIN):
                raise
        p[qid] = now
        c["sent"] += 1

    t0 = time.monotonic()
    for fd in socks:
        for _ in range(per):
            send(fd, t0)
    end = t0 + args.duration
    stop_at = end + args.timeout
    running = True
    next_scan = t0 + 0.05
    timeout = args.timeout
    while True:
        now = time.monotonic()
        if running and now >= end:
            running = False
        if not running and (now >= stop_at or not any(pending.values())):
            break
        for fd, _ev in ep.poll(0.02):
            s = socks[fd]
            p = pending[fd]
            while True:
                try:
                    msg = s.recv(2048)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue
                now = time.monotonic()
                if len(msg) < 12:
                    c["bad"] += 1
                    continue
                qid, flags = unpack_from(msg, 0)
                sent_at = p.pop(qid, None)
                if sent_at is None:
                    c["late"] += 1
                    continue
                ancount = (msg[6] << 8) | msg[7]
                if flags & 0x8000 and flags & 0x000F == 0 and ancount:
                    c["answered"] += 1
                    if now < end:
                        c["answered_in_run"] += 1
                    lat.append(now - sent_at)
                else:
                    c["bad"] += 1
                if running and now < end:
                    send(fd, now)
        now = time.monotonic()
        if now >= next_scan:
            next_scan = now + 0.05
            for fd, p in pending.items():
                old = [q for q, t in p.items() if now - t > timeout]
                for q in old:
                    del p[q]
                    c["unanswered"] += 1
                    if running and now < end:
                        send(fd, now)
    for p in pending.values():
        c["unanswered"] += len(p)
    c["duration_s"] = min(time.monotonic(), end) - t0
    for s in socks.values():
        s.close()
    ep.close()
    c["lat"] = lat
    return c


def run_load(args: argparse.Namespace) -> dict:
    if args.procs <= 1:
        parts = [load(args, 0)]
    else:
        kids = []
        for i in range(args.procs):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: run, write the result, exit without cleanup handlers
                os.close(r)
                try:
                    res = load(args, i)
                    data = json.dumps(res).encode()
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    data = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
                with os.fdopen(w, "wb") as f:
                    f.write(data)
                os._exit(0)
            os.close(w)
            kids.append((pid, r))
        parts = []
        for pid, r in kids:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            os.waitpid(pid, 0)
            part = json.loads(data or b'{"error": "child died"}')
            if "error" in part:
                raise RuntimeError(part["error"])
            parts.append(part)
    out: dict = {k: sum(p[k] for p in parts) for k in
                 ("sent", "answered", "answered_in_run", "unanswered", "late", "bad",
                  "send_errors")}
    dur = max(p["duration_s"] for p in parts)
    lat = sorted(x for p in parts for x in p["lat"])
    out["duration_s"] = dur
    out["qps"] = out["answered_in_run"] / dur if dur > 0 else 0.0
    for name, pct in (("p50_ms", 50), ("p99_ms", 99), ("p999_ms", 99.9)):
        v = percentile(lat, pct)
        out[name] = None if v is None else v * 1e3
    out["max_ms"] = lat[-1] * 1e3 if lat else None
    out.update(sockets=args.sockets, outstanding=args.outstanding, procs=args.procs,
               timeout_s=args.timeout, server=f"{args.server}:{args.port}", name=args.name)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="DNS server address (IPv4)")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--name", default="who.podlb.test", help="name queried (type A)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    p.add_argument("--sockets", type=int, default=32,
                   help="UDP sockets, i.e. source ports / flows (default 32)")
    p.add_argument("--outstanding", type=int, default=64,
                   help="queries in flight per process, spread over the sockets (default 64)")
    p.add_argument("--timeout", type=float, default=1.0,
                   help="seconds before a query counts as unanswered (default 1)")
    p.add_argument("--procs", type=int, default=1, help="processes (default 1)")
    p.add_argument("--once", action="store_true",
                   help="one query (retried until --timeout); print the A record or exit 1")
    a = p.parse_args(argv)
    if a.once:
        return once(a)
    if a.duration <= 0 or a.sockets < 1 or a.outstanding < 1 or a.procs < 1:
        p.error("--duration, --sockets, --outstanding and --procs must be positive")
    print(json.dumps(run_load(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
