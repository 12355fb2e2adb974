#!/usr/bin/env python3
"""Scale benchmark for podlb (issue 6 item 6): 100 services x 10 backends, 1M flows.

Topology (all in 198.18.0.0/16; the lab of `podlb-lab up`, namespaces plb-<pid>-<n>-*): a bridge namespace, a
client (.0.10), the lb (.0.2, podlb on AF_PACKET eth0, full NAT, 1 worker) and four nginx
backend hosts (.0.21-.0.24) that hold the 1,000 backend addresses 198.18.4.1-198.18.7.250
as extra addresses (nginx listens on all of them). podlb serves 100 VIPs 198.18.1.1-100,
port 80, 10 backends each.

Measured:
  * startup: podlb start -> /status answers (config, 1.5M-flow table, 100 Maglev builds,
    ARP for 1,000 backends), and podlb's RSS then;
  * keep-alive req/s and new connections/s spread over all 100 VIPs (bench/loadgen.rs with
    100 connections, one per VIP, offered far above capacity so achieved = capacity), and the
    same directly to 100 of the backend addresses (the reference);
  * the table filled with >= 1M flows: spoofed SYNs (netns-tests/flood.py syn, sources in
    198.19.0.0/16) to the 100 VIPs; podlb_flows_active, RSS and drops before and after;
  * keep-alive and new conn/s again with the table full (established vs SYN-heavy load at
    1M flows).

Run as root from the repository root after `cargo build --release --examples`:
    sudo python3 bench/scale.py [--rounds 2] [--duration 4] [--flows 1300000] [--syn-pps 25000]
Writes docs/benchmarks-scale.json (--out). Everything it creates is removed on exit, error,
Ctrl-C, SIGTERM, SIGHUP and the time limit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nslab  # noqa: E402
from nslab import (  # noqa: E402
    REPO_ROOT, RES, BenchError, log, run, nsx, start_proc,
    log_tail, http_get, http_ok, raise_nofile, resolve_bin, LOADGEN_HELP,
)

HOSTS = {"client": "198.18.0.10", "lb": "198.18.0.2", "b1": "198.18.0.21",
         "b2": "198.18.0.22", "b3": "198.18.0.23", "b4": "198.18.0.24"}
BHOSTS = ["b1", "b2", "b3", "b4"]
SERVICES, PER = 100, 10
ADMIN = "127.0.0.1:9100"
CAPACITY = 1_500_000


def vip(s: int) -> str:
    return f"198.18.1.{1 + s}"


def backend(i: int) -> str:
    return f"198.18.{4 + i // 250}.{1 + i % 250}"


def setup() -> None:
    nslab.build_bridge_topology(HOSTS, prefix_len=16, extra_addrs={
        h: [f"{backend(i)}/16" for i in range(SERVICES * PER) if i % len(BHOSTS) == k]
        for k, h in enumerate(BHOSTS)})
    for h in BHOSTS:
        nslab.start_nginx_backend(h, HOSTS[h])
    http_ok("client", f"http://{backend(SERVICES * PER - 1)}/")


def podlb_config() -> str:
    return nslab.podlb_config({
        "attach": {"af_packet": {"interface": "eth0"}}, "workers": 1, "admin": ADMIN,
        "services": [{"name": f"svc{s}", "vip": vip(s), "port": 80, "mode": "nat",
                      "backends": [f"{backend(s * PER + j)}:80" for j in range(PER)]}
                     for s in range(SERVICES)],
        # the SYN-filled flows must outlive the fill and the measurements after it
        "extra": f"[flows]\ncapacity = {CAPACITY}\nsyn_timeout_s = 600\n",
    })


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError("no VmRSS")


def metrics() -> dict[str, float]:
    text = http_get("lb", f"http://{ADMIN}/metrics", timeout=5.0)
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^(podlb_flows_\w+|podlb_drops_total\{reason="([^"]+)"\}) (\S+)$', line)
        if m:
            key = f"drops_{m.group(2)}" if m.group(2) else m.group(1)
            out[key] = float(m.group(3))
    return out


def lb_mac() -> str:
    return run(nsx("lb", "cat", "/sys/class/net/eth0/address")).stdout.strip()


def load(lg: Path, targets: list[str], seconds: int, close: bool) -> dict:
    """Offered far above capacity (open loop): the achieved rate is the capacity."""
    cmd = [str(lg), "--rate", "300000" if not close else "60000", "--duration", str(seconds),
           "--connections", str(len(targets)), "--timeout", "2"]
    if close:
        cmd.append("--close")
    r = run(nsx("client", *cmd, ",".join(f"{t}:80" for t in targets)), timeout=seconds + 30,
            check=False)
    try:
        return nslab.parse_loadgen(r.stdout)
    except ValueError as e:
        raise BenchError(f"loadgen: {e}: {r.stderr[-300:]}")


def phase(lg: Path, name: str, targets: list[str], seconds: int) -> dict:
    ka = load(lg, targets, seconds, close=False)
    cc = load(lg, targets, seconds, close=True)
    # offered above capacity on purpose: requests never sent ("unsent") are not errors here
    log(f"  {name:22s} keep-alive {ka['achieved_rate']:>9,.0f} req/s (errors "
        f"{ka['errors']}) | new conn {cc['achieved_rate']:>8,.0f}/s (errors {cc['errors']})")
    return {"ka_rps": ka["achieved_rate"], "cc_cps": cc["achieved_rate"], "ka": ka, "cc": cc}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=int, default=4, help="seconds per load measurement")
    p.add_argument("--flows", type=int, default=1_300_000,
                   help="SYNs sent to fill the table (default 1.3M; podlb's RX ring drops "
                        "some when the machine is loaded)")
    p.add_argument("--syn-pps", type=int, default=25_000,
                   help="pace the SYNs (default 25,000/s; 0: as fast as possible)")
    p.add_argument("--podlb-bin", default="target/release/podlb")
    p.add_argument("--loadgen-bin", default="target/release/examples/loadgen")
    p.add_argument("--out", default="docs/benchmarks-scale.json")
    p.add_argument("--time-limit", type=int, default=900)
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 2 s per load, 30,000 SYNs instead of 1.3M")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.flows = 1, 2, 30_000
    return nslab.run_main(lambda: measure(args), args.keep_tmp)


def measure(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces)")
    raise_nofile()
    binary, lg = resolve_bin(args.podlb_bin), resolve_bin(args.loadgen_bin)
    for b, hint in ((binary, "cargo build --release"), (lg, LOADGEN_HELP)):
        if not b.is_file():
            raise BenchError(f"{b} not found: {hint}")
    signal.alarm(args.time_limit)
    nslab.lab_bin()
    RES.tmpdir = Path(tempfile.mkdtemp(prefix=nslab.TMP_PREFIX))
    res: dict = {"date": datetime.datetime.now(datetime.timezone.utc)
                 .strftime("%Y-%m-%d %H:%M UTC"),
                 "load_start": os.getloadavg(), "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
                 "services": SERVICES, "backends": SERVICES * PER, "capacity": CAPACITY}
    setup()
    log("topology up: 1,000 backend addresses on 4 nginx hosts")
    conf = RES.tmpdir / "podlb.toml"
    conf.write_text(podlb_config())
    t0 = time.monotonic()
    proc = start_proc("podlb", nsx("lb", str(binary), "run", "--config", str(conf)))
    while True:
        if proc.poll() is not None:
            raise BenchError(f"podlb exited: {log_tail('podlb', 8)}")
        try:
            http_get("lb", f"http://{ADMIN}/status", timeout=1.0)
            break
        except BenchError:
            if time.monotonic() - t0 > 60:
                raise
            time.sleep(0.05)
    res["startup_s"] = time.monotonic() - t0
    time.sleep(1.0)
    res["rss_start_kib"] = rss_kib(proc.pid)
    res["metrics_start"] = metrics()
    log(f"podlb up in {res['startup_s']:.2f} s, RSS {res['rss_start_kib'] / 1024:.0f} MiB, "
        f"capacity {res['metrics_start'].get('podlb_flows_capacity')}")
    vips = [vip(s) for s in range(SERVICES)]
    direct = [backend(s * PER) for s in range(SERVICES)]
    http_ok("client", f"http://{vips[-1]}/")
    rounds: list[dict] = []
    for rnd in range(args.rounds):
        log(f"round {rnd + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f})")
        rounds.append({"direct": phase(lg, "direct, 100 addresses", direct, args.duration),
                       "podlb": phase(lg, "podlb, 100 VIPs", vips, args.duration)})
    res["rounds"] = rounds
    before = metrics()
    rss_before = rss_kib(proc.pid)
    r = run(nsx("client", sys.executable, str(REPO_ROOT / "netns-tests" / "flood.py"), "syn",
                "eth0", lb_mac(), ",".join(vips), str(args.flows), "150", str(args.syn_pps)),
            timeout=180)
    flood = json.loads(r.stdout)
    time.sleep(1.0)
    after = metrics()
    res["fill"] = {"synflood": flood, "metrics_before": before, "metrics_after": after,
                   "rss_before_kib": rss_before, "rss_after_kib": rss_kib(proc.pid)}
    fa = after.get("podlb_flows_active", 0)
    log(f"filled: sent {flood['sent']:,} SYNs at {flood['pps']:,}/s; flows "
        f"{before.get('podlb_flows_active', 0):,.0f} -> {fa:,.0f}; RSS "
        f"{rss_before / 1024:.0f} -> {res['fill']['rss_after_kib'] / 1024:.0f} MiB")
    full = []
    for rnd in range(args.rounds):
        full.append({"podlb": phase(lg, "podlb, table full", vips, args.duration)})
    res["rounds_full"] = full
    res["metrics_end"] = metrics()
    res["load_end"] = os.getloadavg()

    def med(rs: list[dict], case: str, k: str) -> float:
        return statistics.median(x[case][k] for x in rs)

    res["summary"] = {
        "startup_s": res["startup_s"],
        "rss_start_mib": res["rss_start_kib"] / 1024,
        "direct_ka_rps": med(rounds, "direct", "ka_rps"),
        "direct_cc_cps": med(rounds, "direct", "cc_cps"),
        "podlb_ka_rps": med(rounds, "podlb", "ka_rps"),
        "podlb_cc_cps": med(rounds, "podlb", "cc_cps"),
        "flows_after_fill": fa,
        "rss_after_fill_mib": res["fill"]["rss_after_kib"] / 1024,
        "podlb_full_ka_rps": med(full, "podlb", "ka_rps"),
        "podlb_full_cc_cps": med(full, "podlb", "cc_cps"),
    }
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO_ROOT / out
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res["summary"], indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
