#!/usr/bin/env python3
"""Soak run (issue 7 part 6): the two-instance VRRP lab under steady traffic for an hour, with
backend churn and repeated failovers, sampled every 10 s.

Lab: bench/vrrplab.py (lb1 priority 200, lb2 priority 100, VRID 51, 100 ms adverts, sync on,
three nginx backends with HTTP health checks), the same as bench/faults.py.

Traffic (rate-limited, from the client namespace): the PROBER of bench/vrrplab.py in reconnect
mode: a new connection + GET started every 10 ms (100/s, 1 s timeout) and 20 keep-alive
connections sending a GET every 50 ms each (400/s, 5 s timeout; a failed one is reopened).
Debian's wrk has no -R (rate) option, so this is a Python client.

Events:
  * backend churn every --churn-every s (default 30): the next backend's nginx gets SIGTERM,
    and is started again --churn-down s later (default 8); health checks take it out and in;
  * a failover every --failover-every s (default 180), alternating: SIGTERM to the master
    (podlb hands over with a priority-0 advert) and a restart of it --restore-after s later
    (it preempts back), then a cut of the master's link (bridge port down) and its restore.

Every --sample-every s (default 10): podlb RSS of both instances (/proc/<pid>/status VmRSS),
/status flows.active, drops by reason, VRRP state, the traffic's requests and errors in the
window, and "panicked" lines in the podlb logs. At the end a summary is printed and written as
JSON (--out, default docs/reliability-soak.json) and a PNG chart next to it (if matplotlib can
be imported).

    sudo python3 bench/soak.py                 # one hour
    sudo python3 bench/soak.py --seconds 600   # ten minutes

Everything it creates (the lab of `podlb-lab up`, namespaces plb-<pid>-<n>-*, processes, a temp
dir) is removed on exit, on error and on Ctrl-C; the namespaces even if the script is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nslab  # noqa: E402
import vrrplab as lab  # noqa: E402
from nslab import RES, BenchError, log  # noqa: E402



def schedule(args: argparse.Namespace) -> list[tuple[float, str, str]]:
    """(time, action, argument), sorted by time."""
    ev: list[tuple[float, str, str]] = []
    t, i = args.churn_every, 0
    while t + args.churn_down < args.seconds - 5:
        b = lab.BACKENDS[i % len(lab.BACKENDS)]
        ev.append((t, "churn_stop", b))
        ev.append((t + args.churn_down, "churn_start", b))
        t += args.churn_every
        i += 1
    # failovers offset by half a churn period so they do not coincide with a churn event
    t, k = args.failover_every + args.churn_every / 2, 0
    while t + args.restore_after < args.seconds - 5:
        kind = "sigterm" if k % 2 == 0 else "linkcut"
        ev.append((t, f"failover_{kind}", "lb1"))
        ev.append((t + args.restore_after, f"restore_{kind}", "lb1"))
        t += args.failover_every
        k += 1
    return sorted(ev)


class Soak:
    def __init__(self, binary: Path, args: argparse.Namespace):
        self.binary = binary
        self.args = args
        self.nginx: dict = {}
        self.lbs: dict = {}
        self.lb_logs: list[str] = ["lb1", "lb2"]
        self.restarts = 0
        self.events: list[dict] = []

    def act(self, t: float, action: str, arg: str) -> None:
        a = self.args
        rec: dict = {"t": round(t, 1), "action": action, "target": arg,
                     "mono": time.monotonic()}
        try:
            if action == "churn_stop":
                lab.kill_group(self.nginx[arg], signal.SIGTERM)
            elif action == "churn_start":
                self.nginx[arg] = lab.start_backend(arg, label=f"c{int(t)}-")
            elif action == "failover_sigterm":
                p = self.lbs["lb1"]
                lab.kill_proc(p, signal.SIGTERM)
                rec["lb2_master_after_ms"] = round(1e3 * lab.wait_until(
                    "lb2 master", lambda: lab.vrrp_state("lb2") == "master", 10, 0.05))
                p.wait(timeout=30)
                rec["lb1_exit"] = p.returncode
            elif action == "restore_sigterm":
                self.restarts += 1
                label = f"r{self.restarts}-"
                self.lbs["lb1"] = lab.start_lb(self.binary, "lb1", a.advert_ms, a.unicast, label)
                self.lb_logs.append(f"{label}lb1")
                rec["lb1_master_after_ms"] = round(1e3 * lab.wait_until(
                    "lb1 master again", lambda: lab.vrrp_state("lb1") == "master", 15, 0.05))
            elif action == "failover_linkcut":
                lab.set_port_up("lb1", False)
                rec["lb2_master_after_ms"] = round(1e3 * lab.wait_until(
                    "lb2 master", lambda: lab.vrrp_state("lb2") == "master", 10, 0.05))
            elif action == "restore_linkcut":
                lab.set_port_up("lb1", True)
                rec["lb1_master_after_ms"] = round(1e3 * lab.wait_until(
                    "lb1 master again", lambda: lab.vrrp_state("lb1") == "master", 15, 0.05))
        except BenchError as e:
            rec["error"] = str(e).splitlines()[0][:300]
            log(f"  event {action} {arg}: {rec['error']}")
        self.events.append(rec)
        log(f"  t={t:6.0f}s {action} {arg} " + " ".join(
            f"{k}={v}" for k, v in rec.items() if k not in ("t", "action", "target", "mono")))

    def sample(self, t: float, counters: dict, prev: dict, phase: str) -> dict:
        s: dict = {"t": round(t, 1), "phase": phase}
        for role in ("lb1", "lb2"):
            p = self.lbs.get(role)
            r: dict = {"rss_kb": lab.rss_kb(p.pid) if p is not None and p.poll() is None
                       else None}
            try:
                st = lab.status(role, timeout=2.0)
                r["flows"] = st["flows"]["active"]
                r["drops"] = {k: v for k, v in st.get("drops", {}).items() if v}
                r["state"] = (st.get("vrrp") or {}).get("state")
            except (BenchError, ValueError, KeyError):
                r["flows"], r["drops"], r["state"] = None, None, "unreachable"
            s[role] = r
        d = {k: counters.get(k, 0) - prev.get(k, 0)
             for k in ("probe_ok", "probe_fail", "ka_ok", "ka_fail")}
        s["requests"] = sum(d.values())
        s["errors"] = d["probe_fail"] + d["ka_fail"]
        s["traffic"] = d
        s["panics"] = len(lab.panics(self.lb_logs))
        return s


def last_counters(path: Path) -> dict:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def event_errors(stream: Path, events: list[dict], after: float = 6.0) -> None:
    """Adds to each event the requests that failed within `after` s of it (from the traffic's
    per-second counters), so each kind of event can be charged with its own errors."""
    rows = []
    try:
        for line in stream.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    except OSError:
        return
    fail = lambda r: r.get("probe_fail", 0) + r.get("ka_fail", 0)  # noqa: E731
    for e in events:
        m = e.pop("mono", None)
        if m is None or not rows:
            continue
        before = [r for r in rows if r["t"] <= m]
        upto = [r for r in rows if r["t"] <= m + after]
        if before and upto:
            e[f"errors_{after:.0f}s"] = fail(upto[-1]) - fail(before[-1])


def by_event(events: list[dict]) -> dict:
    out: dict = {}
    for e in events:
        for k, v in e.items():
            if k.startswith("errors_"):
                o = out.setdefault(e["action"], {"n": 0, "errors": [], "window": k})
                o["n"] += 1
                o["errors"].append(v)
    return out


def summarize(samples: list[dict], events: list[dict], panics: list[str]) -> dict:
    out: dict = {}
    for role in ("lb1", "lb2"):
        rss = [s[role]["rss_kb"] for s in samples if s[role].get("rss_kb")]
        fl = [s[role]["flows"] for s in samples if s[role].get("flows") is not None]
        out[role] = {
            "rss_mb_min": round(min(rss) / 1024, 1) if rss else None,
            "rss_mb_max": round(max(rss) / 1024, 1) if rss else None,
            "rss_mb_first": round(rss[0] / 1024, 1) if rss else None,
            "rss_mb_last": round(rss[-1] / 1024, 1) if rss else None,
            "flows_min": min(fl) if fl else None,
            "flows_max": max(fl) if fl else None,
            "drops_last": samples[-1][role].get("drops") if samples else None,
        }
    phases: dict = {}
    for s in samples:
        p = phases.setdefault(s["phase"], {"windows": 0, "requests": 0, "errors": 0})
        p["windows"] += 1
        p["requests"] += s["requests"]
        p["errors"] += s["errors"]
    for p in phases.values():
        p["error_pct"] = round(100 * p["errors"] / p["requests"], 3) if p["requests"] else None
    out["phases"] = phases
    out["requests"] = sum(s["requests"] for s in samples)
    out["errors"] = sum(s["errors"] for s in samples)
    out["events"] = len(events)
    out["event_failures"] = [e for e in events if "error" in e]
    out["errors_after_event"] = by_event(events)
    out["panics"] = panics
    return out


def chart(path: Path, samples: list[dict], events: list[dict]) -> str:
    try:
        import matplotlib  # type: ignore
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore
    except Exception:
        return "skipped: matplotlib is not importable"
    try:
        t = [s["t"] / 60 for s in samples]
        fig, ax = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
        for role, c in (("lb1", "tab:blue"), ("lb2", "tab:orange")):
            ax[0].plot(t, [(s[role]["rss_kb"] or 0) / 1024 if s[role]["rss_kb"] else None
                           for s in samples], label=role, color=c)
            ax[1].plot(t, [s[role]["flows"] for s in samples], label=role, color=c)
        ax[0].set_ylabel("RSS MiB")
        ax[1].set_ylabel("flows.active")
        ax[2].bar(t, [s["requests"] for s in samples], width=0.12, color="tab:green",
                  label="requests / window")
        ax2 = ax[2].twinx()
        ax2.plot(t, [s["errors"] for s in samples], "r.-", label="errors / window")
        ax2.set_ylabel("errors", color="r")
        ax[2].set_ylabel("requests")
        ax[2].set_xlabel("minutes")
        for e in events:
            if e["action"].startswith("failover"):
                for a in ax:
                    a.axvline(e["t"] / 60, color="r" if "sigterm" in e["action"] else "m",
                              alpha=0.4, lw=1)
        ax[0].legend(loc="upper left", fontsize=8)
        ax[1].legend(loc="upper left", fontsize=8)
        ax[0].set_title("podlb soak (vertical lines: failovers, red SIGTERM, magenta link cut)",
                        fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return ""
    except Exception as e:
        return f"skipped: chart failed: {e}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=3600, help="run length (default 3600)")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--churn-every", type=float, default=30.0)
    ap.add_argument("--churn-down", type=float, default=8.0)
    ap.add_argument("--failover-every", type=float, default=180.0)
    ap.add_argument("--restore-after", type=float, default=10.0)
    ap.add_argument("--advert-ms", type=int, default=100)
    ap.add_argument("--unicast", action="store_true", help="unicast VRRP peers (default multicast)")
    ap.add_argument("--podlb-bin", default="target/release/podlb")
    ap.add_argument("--out", default="docs/reliability-soak.json",
                    help="summary + samples JSON (relative to the repository root); the chart "
                         "goes next to it as .png")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 60 s, a sample every 5 s, churn every 12 s (4 s down), a "
                         "failover every 20 s (restored after 6 s): both kinds once")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.sample_every = 60, 5.0
        args.churn_every, args.churn_down = 12.0, 4.0
        args.failover_every, args.restore_after = 20.0, 6.0

    return nslab.run_main(lambda: soak_run(args, argv), args.keep_tmp)


def soak_run(args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces)")
    binary = nslab.resolve_bin(args.podlb_bin)
    if not binary.is_file():
        raise BenchError(f"{binary} not found: cargo build --release")
    missing = [t for t in ("ip", "nginx") if not nslab.shutil.which(t)]
    if missing:
        raise BenchError(f"missing {missing}: sudo ./netns-tests/deps.sh --bench")
    nslab.raise_nofile()
    signal.alarm(int(args.seconds * 1.3 + 180))
    nslab.lab_bin()
    RES.tmpdir = Path(tempfile.mkdtemp(prefix=nslab.TMP_PREFIX))
    info = nslab.run_info(binary, ["bench/soak.py", *argv])
    info["seconds"] = args.seconds
    soak = Soak(binary, args)
    lab.build()
    soak.nginx = {b: lab.start_backend(b) for b in lab.BACKENDS}
    soak.lbs = lab.start_pair(binary, args.advert_ms, args.unicast)
    stream = RES.tmpdir / "traffic.jsonl"
    lab.start_prober("prober", args.seconds + 2, RES.tmpdir / "prober.json", ka=20,
                     ka_every=0.05, reconnect=True, stream=stream)
    events = schedule(args)
    log(f"soak: {args.seconds} s, {len(events)} events, sample every {args.sample_every} s; "
        f"namespaces {RES.lab.id}-*")
    t0 = time.monotonic()
    samples: list[dict] = []
    prev: dict = {}
    next_sample = args.sample_every
    window_events: list[str] = []
    ei = 0
    while True:
        now = time.monotonic() - t0
        if now >= args.seconds:
            break
        nxt = min(next_sample, events[ei][0] if ei < len(events) else 1e18)
        if nxt > now:
            time.sleep(min(nxt - now, args.seconds - now))
            continue
        if ei < len(events) and events[ei][0] <= now:
            _, action, arg = events[ei]
            ei += 1
            soak.act(now, action, arg)
            window_events.append(action)
            continue
        cnt = last_counters(stream)
        if any(e.startswith(("failover", "restore")) for e in window_events):
            phase = "failover " + ("SIGTERM" if any("sigterm" in e for e in window_events)
                                   else "link cut")
        elif window_events:
            phase = "backend churn"
        else:
            phase = "steady"
        s = soak.sample(now, cnt, prev, phase)
        prev = cnt or prev
        samples.append(s)
        window_events = []
        next_sample += args.sample_every
        log(f"  t={now:6.0f}s {phase:18s} req {s['requests']:6d} err {s['errors']:4d} | "
            f"lb1 {s['lb1']['state']} {fmt_kb(s['lb1']['rss_kb'])} flows {s['lb1']['flows']}"
            f" | lb2 {s['lb2']['state']} {fmt_kb(s['lb2']['rss_kb'])} flows "
            f"{s['lb2']['flows']} | panics {s['panics']}")
    panics = lab.panics(soak.lb_logs)
    time.sleep(1.5)  # the prober's last per-second line
    event_errors(stream, soak.events)
    summary = summarize(samples, soak.events, panics)
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = Path(args.out)
    if not out.is_absolute():
        out = nslab.REPO_ROOT / out
    note = chart(out.with_suffix(".png"), samples, soak.events)
    info["chart"] = note or out.with_suffix(".png").name
    out.write_text(json.dumps({"info": info, "summary": summary, "events": soak.events,
                               "samples": samples}, indent=1))
    print(json.dumps({"info": info, "summary": summary}, indent=1))
    log(f"wrote {out}" + (f"; chart {note}" if note else f" and {out.with_suffix('.png')}"))
    if panics:
        log("podlb PANICKED")
        return 1
    return 0


def fmt_kb(kb) -> str:
    return "rss –" if kb is None else f"rss {kb / 1024:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
