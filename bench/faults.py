#!/usr/bin/env python3
"""Faults under load (issue 7 part 3): one fault per scenario, each in a fresh two-instance lab.

The lab is netns-tests/failover.rs's (bench/vrrplab.py): lb1 (198.18.0.2, priority 200) and
lb2 (198.18.0.3, priority 100) with VRRP VRID 51 (100 ms adverts), connection sync, three nginx
backends with HTTP health checks (200 ms interval, 100 ms timeout, rise 2, fall 2), the client
198.18.0.10 and the VIP 198.18.0.100. In every scenario the client runs, at the same time:

  * `wrk -t1 -c32 -d<before+after>s --latency --timeout 2s` through the VIP (load; its socket
    errors and non-2xx responses are the "failed" requests);
  * a prober (bench/vrrplab.py PROBER): a new connection + GET started every 10 ms (each
    in its own thread, 1 s timeout), and 20 keep-alive connections opened before the fault, each sending a GET
    every 200 ms (5 s timeout; a connection that fails once is counted lost).

The fault is injected `--before` seconds in; the run goes on `--after` seconds more.
wrk never counts a connection that just stops getting answers, so the script also counts the
client's connections through the VIP with data queued and nothing received for >= 1 s
(`ss -i` lastrcv) in two snapshots 1 s apart, 2 s before the end ("stalled"). Recovery = from the fault to the end of the first successful probe started after the last
failed one started.

Scenarios: baseline (no fault), link_cut (lb1's bridge port down), master_kill (SIGKILL lb1),
backend_kill (SIGKILL b2's nginx), backend_blackhole (iptables DROP of tcp/80 in b2: no RST),
master_return (lb1 stopped with SIGTERM before the traffic starts, so lb2 is master and every
connection goes through it; the fault is lb1 starting again and preempting), reload_bad (a bad
config on lb1 + SIGHUP), admin_hammer (64 threads GETting /metrics and
/status on lb1).

Run as root after `cargo build --release` and `sudo ./netns-tests/deps.sh --bench`:
    sudo python3 bench/faults.py            # writes docs/reliability-faults.json
Everything it creates (the labs of `podlb-lab up`, namespaces plb-<pid>-<n>-*, processes, a temp
dir) is removed on exit, on error and on Ctrl-C; the namespaces even if the script is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nslab  # noqa: E402
import vrrplab as lab  # noqa: E402
from nslab import (RES, BenchError, log, nsx, parse_wrk, run,  # noqa: E402
                   start_proc)


SCENARIOS = ["baseline", "link_cut", "master_kill", "master_return", "backend_kill",
             "backend_blackhole", "reload_bad", "admin_hammer"]
VICTIM = "b2"  # the backend the backend faults hit
BAD_CONFIG_TAIL = ('\n[[service]]\nname = "broken"\nvip = "1.2.3"\nport = 80\n'
                   'mode = "nat"\nbackends = ["198.18.0.21:80"]\n')


def inject(name: str, nginx: dict, lbs: dict, args: argparse.Namespace) -> dict:
    """Injects the scenario's fault; returns what was done and what the control plane did."""
    victim = f"{lab.HOSTS[VICTIM]}:80"
    out: dict = {}
    if name == "baseline":
        out["what"] = "none"
    elif name in ("link_cut", "master_kill"):
        if name == "link_cut":
            lab.set_port_up("lb1", False)
            out["what"] = "lb1's bridge port set down"
        else:
            lab.kill_proc(lbs["lb1"], signal.SIGKILL)
            out["what"] = "SIGKILL to lb1's podlb"
        try:
            out["lb2_master_after_ms"] = round(1e3 * lab.wait_until(
                "lb2 master", lambda: lab.vrrp_state("lb2") == "master", 5), 0)
        except BenchError as e:
            out["error"] = str(e)
    elif name == "master_return":
        lbs["lb1"] = lab.start_lb(args.binary, "lb1", args.advert_ms, args.unicast,
                                  label="master_return-again-", preempt_delay_ms=args.preempt_delay_ms)
        out["what"] = "lb1 (priority 200) started again while lb2 is master; it preempts"
        try:
            out["lb1_master_after_ms"] = round(1e3 * lab.wait_until(
                "lb1 master", lambda: lab.vrrp_state("lb1") == "master",
                10 + args.preempt_delay_ms / 1e3), 0)
        except BenchError as e:
            out["error"] = str(e)
    elif name in ("backend_kill", "backend_blackhole"):
        if name == "backend_kill":
            lab.kill_group(nginx[VICTIM])
            out["what"] = f"SIGKILL to {VICTIM}'s nginx (master and worker)"
        else:
            run(nsx(VICTIM, "iptables", "-w", "5", "-I", "INPUT", "-p", "tcp", "--dport", "80",
                    "-j", "DROP"))
            out["what"] = f"iptables -I INPUT -p tcp --dport 80 -j DROP in {VICTIM}"
        try:
            out["health_down_after_ms"] = round(1e3 * lab.wait_until(
                f"{VICTIM} health down on lb1",
                lambda: lab.health_up("lb1").get(victim) is False, 5), 0)
        except BenchError as e:
            out["error"] = str(e)
    elif name == "reload_bad":
        before = lab.status("lb1")
        p = lab.config_path("lb1")
        p.write_text(p.read_text() + BAD_CONFIG_TAIL)
        lab.kill_proc(lbs["lb1"], signal.SIGHUP)
        out["what"] = "lb1's config gets a service with vip = \"1.2.3\"; SIGHUP to lb1"
        try:
            out["reload_error_after_ms"] = round(1e3 * lab.wait_until(
                "last_reload_error on lb1",
                lambda: lab.status("lb1").get("last_reload_error") is not None, 5), 0)
        except BenchError as e:
            out["error"] = str(e)
        after = lab.status("lb1")
        out["last_reload_error"] = after.get("last_reload_error")
        out["config_generation"] = [before.get("config_generation"),
                                    after.get("config_generation")]
        out["reload_errors_total"] = lab.metric_sum(lab.metrics("lb1"),
                                                    "podlb_config_reload_errors_total")
    elif name == "admin_hammer":
        assert RES.tmpdir is not None
        hout = RES.tmpdir / "hammer.json"
        cfg = {"url_base": f"http://{lab.ADMIN}", "threads": args.hammer_threads,
               "seconds": max(1.0, args.after - 1.5), "out": str(hout)}
        out["proc"] = start_proc("admin_hammer-hammer",
                                 nsx("lb1", sys.executable, "-c", lab.HAMMER, json.dumps(cfg)))
        out["what"] = (f"{args.hammer_threads} threads GET /metrics and /status on lb1 "
                       f"(new connection each) for {cfg['seconds']:.1f} s")
        out["hammer_out"] = hout
    return out


def stalled_sockets() -> set[str]:
    """Local addresses of the client's connections to the VIP that have data in flight and
    have received nothing for at least 1 s (`ss -i` lastrcv): answers stopped coming."""
    r = run(nsx("client", "ss", "-Htni", "state", "established", "dst", lab.VIP), check=False)
    out, cur = set(), None
    for line in r.stdout.splitlines():
        f = line.split()
        if not line[:1].isspace() and len(f) >= 4 and f[1].isdigit():
            cur = f[2] if int(f[1]) > 0 else None
        elif cur is not None:
            m = re.search(r"lastrcv:(\d+)", line)
            if m and int(m.group(1)) >= 1000:
                out.add(cur)
            cur = None
    return out


def analyse_probes(data: dict, tf: float) -> dict:
    probes = data["probes"]
    after = [p for p in probes if p[0] >= tf]
    fails_before = sum(1 for p in probes if p[0] < tf and not p[2])
    fails_after = [p for p in after if not p[2]]
    res: dict = {"sent": len(probes), "failed": fails_before + len(fails_after),
                 "failed_before_fault": fails_before}
    if fails_after:
        last = max(p[0] for p in fails_after)
        first_ok = min((p[1] for p in after if p[2] and p[0] > last), default=None)
        res["recovery_ms"] = round(1e3 * (first_ok - tf), 0) if first_ok else None
        res["first_failure_after_fault_ms"] = round(1e3 * (fails_after[0][0] - tf), 0)
        errs: dict[str, int] = {}
        for p in fails_after:
            errs[p[3]] = errs.get(p[3], 0) + 1
        res["failure_kinds"] = errs
    else:
        res["recovery_ms"] = 0.0
    oks = sorted(p[1] for p in probes if p[2])
    res["longest_gap_ms"] = round(1e3 * max((b - a for a, b in zip(oks, oks[1:])), default=0), 0)
    kas = [k for k in data["ka"] if k["first"] is not None]
    lost = [k for k in kas if not k["alive"]]
    res["ka_opened"] = len(kas)
    res["ka_lost"] = len(lost)
    res["ka_lost_before_fault"] = sum(1 for k in lost if k["died"] is not None and k["died"] < tf)
    res["ka_moved"] = sum(1 for k in kas if k["alive"] and k["last"] != k["first"])
    res["ka_lost_backends"] = sorted({k["first"] for k in lost})
    res["ka_errors"] = sorted({(k["err"] or "").split(":")[0] for k in lost})
    return res


def run_scenario(name: str, binary: Path, args: argparse.Namespace) -> dict:
    label = f"{name}-"
    RES.reset()
    lab.build()
    nginx = {b: lab.start_backend(b, label) for b in lab.BACKENDS}
    lbs = lab.start_pair(binary, args.advert_ms, args.unicast, label,
                         preempt_delay_ms=args.preempt_delay_ms)
    if name == "master_return":  # lb2 master before any traffic
        lab.kill_proc(lbs["lb1"], signal.SIGTERM)
        lab.wait_until("lb2 master", lambda: lab.vrrp_state("lb2") == "master", 10)
        lbs["lb1"].wait(timeout=30)
    total = args.before + args.after
    assert RES.tmpdir is not None
    pout = RES.tmpdir / f"{name}-probe.json"
    prober = lab.start_prober(f"{label}prober", total, pout, ka=args.ka)
    wrk = start_proc(f"{label}wrk", nsx("client", "wrk", "-t1", f"-c{args.wrk_conns}",
                                        f"-d{int(total)}s", "--latency", "--timeout", "2s",
                                        f"http://{lab.VIP}/"))
    time.sleep(args.before)
    res: dict = {"scenario": name}
    res["lb2_synced_before"] = lab.metric_sum(lab.metrics("lb2"), "podlb_sync_installed_total")
    tf = time.monotonic()
    fault = inject(name, nginx, lbs, args)
    res["inject_ms"] = round(1e3 * (time.monotonic() - tf), 0)
    # wrk does not count a connection whose response never comes as an error: count the client
    # connections through the VIP stalled (data queued, nothing received for >= 1 s) in two
    # snapshots 1 s apart, shortly before the end of the run
    time.sleep(max(0.0, tf + args.after - 2.0 - time.monotonic()))
    first = stalled_sockets()
    time.sleep(1.0)
    res["stalled_connections_at_end"] = len(first & stalled_sockets())
    for p, what in ((prober, "prober"), (wrk, "wrk")):
        try:
            p.wait(timeout=max(1.0, tf + args.after - time.monotonic()) + 30)
        except Exception:
            raise BenchError(f"{name}: {what} did not finish")
    hproc = fault.pop("proc", None)
    if hproc is not None:
        hproc.wait(timeout=30)
        fault["hammer"] = json.loads(Path(fault.pop("hammer_out")).read_text())
    res["fault"] = fault
    try:
        res["probe"] = analyse_probes(json.loads(pout.read_text()), tf)
    except (OSError, ValueError) as e:
        raise BenchError(f"{name}: prober left no result ({e}): {nslab.log_tail(label + 'prober')}")
    text = (RES.tmpdir / f"{label}wrk.log").read_text(errors="replace")
    try:
        w = parse_wrk(text)
        res["wrk"] = {"requests": w.get("requests"), "rps": round(w["rps"]),
                      "errors": w["errors"], "failed": w["error_total"],
                      "p99_ms": w.get("p99_ms")}
    except ValueError as e:
        res["wrk"] = {"error": f"{e}: {text[-300:]}"}
    for role in ("lb1", "lb2"):
        try:
            st = lab.status(role)
            v = st.get("vrrp") or {}
            res[role] = {"state": v.get("state"), "takeovers": v.get("takeovers"),
                         "takeover_mean_ms": v.get("takeover_mean_ms"),
                         "flows_active": st["flows"]["active"],
                         "drops": {k: n for k, n in st.get("drops", {}).items() if n}}
        except (BenchError, ValueError, KeyError) as e:
            res[role] = {"unreachable": str(e).splitlines()[0][:200]}
    res["panics"] = lab.panics([f"{label}lb1", f"{label}lb2", f"{label}again-lb1"])
    return res


def row(r: dict) -> str:
    p, w, f = r.get("probe", {}), r.get("wrk", {}), r.get("fault", {})
    notes = []
    for k, t in (("lb2_master_after_ms", "lb2 master after {:.0f} ms"),
                 ("lb1_master_after_ms", "lb1 master again after {:.0f} ms"),
                 ("health_down_after_ms", "b2 marked down after {:.0f} ms"),
                 ("reload_error_after_ms", "last_reload_error set after {:.0f} ms")):
        if f.get(k) is not None:
            notes.append(t.format(f[k]))
    if f.get("config_generation"):
        notes.append("config_generation {} → {}".format(*f["config_generation"]))
    if "hammer" in f:
        h = f["hammer"]
        notes.append(f"admin: {h['ok']} ok / {h['failed']} failed, p99 {h['p99_ms']} ms")
    if f.get("error"):
        notes.append(f"ERROR {f['error']}")
    if r.get("panics"):
        notes.append(f"{len(r['panics'])} panic line(s)")
    wf = "–" if "failed" not in w else (
        f"{w['failed']} (" + ", ".join(f"{k} {v}" for k, v in w["errors"].items() if v) + ")"
        if w["failed"] else "0")
    if r.get("stalled_connections_at_end"):
        wf += f"; {r['stalled_connections_at_end']} stalled"
    rec = p.get("recovery_ms")
    return (f"| {r['scenario']} | {w.get('requests', '–')} | {wf} | {p.get('sent', '–')} / "
            f"{p.get('failed', '–')} | {'never' if rec is None and 'sent' in p else fmt(rec)} | "
            f"{fmt(p.get('longest_gap_ms'))} | {p.get('ka_lost', '–')} / {p.get('ka_opened', '–')}"
            f" | {'; '.join(notes)} |")


def fmt(v) -> str:
    return "–" if v is None else f"{v:.0f}"


def table(results: list[dict]) -> str:
    lines = ["| scenario | wrk requests | wrk failed | probes sent / failed | recovery ms | "
             "longest probe gap ms | keep-alive lost / opened | control plane |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [row(r) if "error" not in r else f"| {r['scenario']} | FAILED: {r['error']} |"
              for r in results]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma list (default all): {','.join(SCENARIOS)}")
    ap.add_argument("--before", type=float, default=4.0, help="seconds of load before the fault")
    ap.add_argument("--after", type=float, default=8.0, help="seconds of load after the fault")
    ap.add_argument("--advert-ms", type=int, default=100, help="VRRP advert interval (ms)")
    ap.add_argument("--unicast", action="store_true", help="unicast VRRP peers (default multicast)")
    ap.add_argument("--preempt-delay-ms", type=int, default=0,
                    help="vrrp.preempt_delay_ms of both instances (default 0, podlb's default)")
    ap.add_argument("--ka", type=int, default=20, help="keep-alive connections of the prober")
    ap.add_argument("--wrk-conns", type=int, default=32, help="wrk -c (default 32)")
    ap.add_argument("--hammer-threads", type=int, default=64, help="admin_hammer threads")
    ap.add_argument("--podlb-bin", default="target/release/podlb")
    ap.add_argument("--out", default="docs/reliability-faults.json",
                    help="raw results (relative to the repository root)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: --before 2 --after 5 (every scenario, about 2 min)")
    args = ap.parse_args(argv)
    if args.quick:
        args.before, args.after = 2.0, 5.0
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenario(s) {bad}")

    return nslab.run_main(lambda: run_all(names, args, argv), args.keep_tmp)


def run_all(names: list[str], args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces)")
    binary = nslab.resolve_bin(args.podlb_bin)
    args.binary = binary
    if not binary.is_file():
        raise BenchError(f"{binary} not found: cargo build --release")
    missing = [t for t in ("ip", "nginx", "wrk", "iptables") if not nslab.shutil.which(t)]
    if missing:
        raise BenchError(f"missing {missing}: sudo ./netns-tests/deps.sh --bench")
    nslab.raise_nofile()
    signal.alarm(int(len(names) * (args.before + args.after + 90) + 60))
    nslab.lab_bin()
    RES.tmpdir = Path(tempfile.mkdtemp(prefix=nslab.TMP_PREFIX))
    info = nslab.run_info(binary, ["bench/faults.py", *argv])
    info.update({
        "vrrp": f"VRID {lab.VRID}, adverts {args.advert_ms} ms, "
                f"preempt_delay_ms {args.preempt_delay_ms}, "
                f"{'unicast' if args.unicast else 'multicast'}, connection sync on",
        "health_check": lab.HEALTH_CHECK,
        "load": f"wrk -t1 -c{args.wrk_conns} --timeout 2s for {args.before + args.after:.0f} s; "
                f"prober: new connection started every 10 ms (1 s timeout) + {args.ka} keep-alive "
                "connections, a GET every 200 ms each (5 s timeout); fault at "
                f"{args.before:.0f} s",
    })
    rc = 0
    results = []
    for n in names:
        log(f"scenario {n}: building a fresh lab")
        try:
            r = run_scenario(n, binary, args)
        except BenchError as e:
            log(f"scenario {n} FAILED: {e}")
            r = {"scenario": n, "error": str(e).splitlines()[0][:300]}
            rc = 1
        results.append(r)
        p = r.get("probe", {})
        log(f"  {n}: wrk {r.get('wrk', {}).get('requests')} req, "
            f"{r.get('wrk', {}).get('failed')} failed; probes {p.get('sent')}/"
            f"{p.get('failed')} failed; recovery {p.get('recovery_ms')} ms; keep-alive lost "
            f"{p.get('ka_lost')}/{p.get('ka_opened')}; {r.get('fault', {})}")
    RES.reset()
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = Path(args.out)
    if not out.is_absolute():
        out = nslab.REPO_ROOT / out
    out.write_text(json.dumps({"info": info, "results": results}, indent=1, default=str))
    print(table(results))
    log(f"wrote {out}")
    if any(r.get("panics") for r in results):
        log("podlb PANICKED: see 'panics' in the JSON")
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
