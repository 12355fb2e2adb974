"""The two-instance VRRP lab of netns-tests/failover.rs, for bench/faults.py and bench/soak.py.

Built by `podlb-lab up` (bench/nslab.py Lab): a bridge namespace (`node`, bridge br0) with a
client (198.18.0.10), lb1 (198.18.0.2, VRRP priority 200), lb2 (198.18.0.3, priority 100) and
three nginx backends b1..b3 (198.18.0.21-23), each on a veth whose bridge-side end is the role's
`port` in the lab's description (cutting a link = setting that port down).
VIP 198.18.0.100:80, VRID 51, full NAT, connection sync on (podlb's default sync_port), HTTP
health checks on the backends. Each nginx answers its own name ("b1\\n"), so a connection can
tell whether it stayed on its backend.

Also the client-side programs, run with `ip netns exec <ns> python3 -c ...`:
PROBER (new connection every 10 ms + N keep-alive connections) and HAMMER (concurrent
admin-endpoint requests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nslab
from nslab import RES, BenchError, http_get, log, log_tail, nsx, run, start_proc

SUBNET = nslab.SUBNET
HOSTS = {
    "client": f"{SUBNET}.10",
    "lb1": f"{SUBNET}.2",
    "lb2": f"{SUBNET}.3",
    "b1": f"{SUBNET}.21",
    "b2": f"{SUBNET}.22",
    "b3": f"{SUBNET}.23",
}
BACKENDS = ["b1", "b2", "b3"]
LBS = {"lb1": 200, "lb2": 100}
VIP = f"{SUBNET}.100"
VRID = 51
ADMIN = "127.0.0.1:9100"
HEALTH_CHECK = ('{ kind = "http", path = "/", interval_ms = 200, timeout_ms = 100, '
                'rise = 2, fall = 2 }')


def build() -> None:
    """Namespaces, bridge and veths (`podlb-lab up`; the hosts of crates/lab demo.rs
    vrrp_lab_topology, the backends named b1..b3)."""
    nslab.build_bridge_topology(HOSTS, sysctls={lb: {"net.ipv4.ip_forward": "0"} for lb in LBS})


def set_port_up(role: str, up: bool) -> None:
    """Cut (or restore) `role`'s link: its bridge port goes down (up)."""
    lab = nslab.lab()
    run(["ip", "-n", lab.node, "link", "set", lab.port(role), "up" if up else "down"])


def start_backend(b: str, label: str = "") -> subprocess.Popen:
    """nginx in backend `b`, answering its own name."""
    return nslab.start_nginx_backend(b, HOSTS[b], body=b, label=label)


def podlb_config(role: str, advert_ms: int, unicast: bool, preempt_delay_ms: int = 0) -> str:
    other = "lb2" if role == "lb1" else "lb1"
    vrrp = {"vrid": VRID, "priority": LBS[role], "advert_interval_ms": advert_ms,
            "preempt": True, "unicast_peers": [HOSTS[other]] if unicast else []}
    if preempt_delay_ms:
        vrrp["preempt_delay_ms"] = preempt_delay_ms
    return nslab.podlb_config({
        "attach": {"af_packet": {"interface": "eth0"}}, "workers": 1, "admin": ADMIN,
        "services": [{"name": "web", "vip": VIP, "port": 80, "mode": "nat",
                      "backends": [f"{HOSTS[b]}:80" for b in BACKENDS],
                      "health_check": HEALTH_CHECK}],
        "vrrp": vrrp,
    })


def config_path(role: str) -> Path:
    assert RES.tmpdir is not None
    return RES.tmpdir / f"{role}.toml"


def start_lb(binary: Path, role: str, advert_ms: int, unicast: bool, label: str = "",
             timeout: float = 15.0, preempt_delay_ms: int = 0) -> subprocess.Popen:
    """Writes `role`'s config and starts podlb in its namespace; waits for /status.
    `ip netns exec` execs podlb, so the Popen's pid is podlb's."""
    path = config_path(role)
    path.write_text(podlb_config(role, advert_ms, unicast, preempt_delay_ms))
    name = f"{label}{role}"
    p = start_proc(name, nsx(role, str(binary), "run", "--config", str(path)))
    deadline = time.monotonic() + timeout
    while True:
        if p.poll() is not None:
            raise BenchError(f"{name}: podlb exited with {p.returncode}:\n{log_tail(name)}")
        try:
            status(role)
            return p
        except BenchError as e:
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: /status did not answer in {timeout:.0f}s: {e}")
            time.sleep(0.2)


def status(role: str, timeout: float = 2.0) -> dict:
    return json.loads(http_get(role, f"http://{ADMIN}/status", timeout=timeout))


def metrics(role: str) -> str:
    return http_get(role, f"http://{ADMIN}/metrics")


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name):len(name) + 1] in (" ", "{")):
            try:
                total += float(line.rsplit(None, 1)[1])
            except (ValueError, IndexError):
                pass
    return total


def vrrp_state(role: str) -> str | None:
    try:
        return (status(role, timeout=1.0).get("vrrp") or {}).get("state")
    except (BenchError, ValueError):
        return None


def wait_until(what: str, cond, timeout: float, every: float = 0.02) -> float:
    """Polls cond() until true; returns the seconds it took (raises after `timeout`)."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise BenchError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


def health_up(role: str) -> dict[str, bool]:
    """backend address -> health check up, from `role`'s /status."""
    try:
        st = status(role, timeout=1.0)
    except (BenchError, ValueError):
        return {}
    return {h["addr"]: bool(h["up"]) and h.get("checks", 0) > 0 for h in st.get("health", [])}


def all_backends_up(role: str) -> bool:
    h = health_up(role)
    return len(h) == len(BACKENDS) and all(h.values())


def start_pair(binary: Path, advert_ms: int, unicast: bool, label: str = "",
               preempt_delay_ms: int = 0) -> dict:
    """lb1 master, lb2 backup, lb1 knows lb2 as a sync peer, all backends healthy."""
    procs = {"lb1": start_lb(binary, "lb1", advert_ms, unicast, label,
                             preempt_delay_ms=preempt_delay_ms)}
    wait_until("lb1 master", lambda: vrrp_state("lb1") == "master", 10, 0.05)
    procs["lb2"] = start_lb(binary, "lb2", advert_ms, unicast, label,
                            preempt_delay_ms=preempt_delay_ms)
    wait_until("lb2 backup", lambda: vrrp_state("lb2") == "backup", 10, 0.05)
    wait_until("lb1 sync peer", lambda: metric_sum(metrics("lb1"), "podlb_sync_peers") >= 1, 10,
               0.1)
    wait_until("backends healthy on lb1", lambda: all_backends_up("lb1"), 10, 0.1)
    wait_until("backends healthy on lb2", lambda: all_backends_up("lb2"), 10, 0.1)
    wait_until("HTTP through the VIP", lambda: vip_answers(), 10, 0.1)
    return procs


def vip_answers() -> bool:
    try:
        return http_get("client", f"http://{VIP}/", timeout=1.0).strip() in BACKENDS
    except BenchError:
        return False


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def panics(names: list[str]) -> list[str]:
    """Lines mentioning "panicked" in the logs of the named processes."""
    assert RES.tmpdir is not None
    out = []
    for n in names:
        try:
            for line in (RES.tmpdir / f"{n}.log").read_text(errors="replace").splitlines():
                if "panicked" in line:
                    out.append(f"{n}: {line.strip()[:300]}")
        except OSError:
            pass
    return out


# --------------------------------------------------------------------------------------
# client-side programs (run inside a namespace: ip netns exec NS python3 -c PROG ARGS)
# --------------------------------------------------------------------------------------

# argv[1]: JSON {vip, seconds, interval, probe_timeout, ka, ka_every, ka_timeout, reconnect,
# out, stream}. Probes: a new connection + GET (Connection: close) started every `interval` s,
# each in its own thread (so one lost SYN does not hold up the next probes). Keep-alive: `ka` connections opened first, each sending a GET every `ka_every` s;
# without `reconnect` a connection that fails once is dead (that is what "established flow
# lost" means), with it a new one is opened. `stream`: a file getting one JSON line per second
# of counters. `out`: the final JSON (every probe, every keep-alive connection).
PROBER = r'''
import json, socket, sys, threading, time
cfg = json.loads(sys.argv[1])
VIP = cfg["vip"]; END = time.monotonic() + cfg["seconds"]
REQ_KA = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"
REQ_CL = b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n"
lock = threading.Lock()
cnt = {"probe_ok": 0, "probe_fail": 0, "ka_ok": 0, "ka_fail": 0}

def get(s, req):
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise OSError("closed before the response")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    n = 0
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            n = int(v)
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            raise OSError("closed in the body")
        body += d
    return code, body[:n].decode("latin-1").strip()

def bump(k):
    with lock:
        cnt[k] += 1

probes = []
def probe(t0):
    ok, err = False, ""
    try:
        s = socket.create_connection((VIP, 80), timeout=cfg["probe_timeout"])
        try:
            s.settimeout(max(0.05, cfg["probe_timeout"] - (time.monotonic() - t0)))
            code, _ = get(s, REQ_CL)
            ok = code == 200
            err = "" if ok else f"status {code}"
        finally:
            s.close()
    except Exception as e:
        err = type(e).__name__
    t1 = time.monotonic()
    with lock:
        probes.append((round(t0, 4), round(t1, 4), ok, err))
    bump("probe_ok" if ok else "probe_fail")

def prober():
    # one probe started every `interval`, each in its own thread: a probe hanging on a lost
    # SYN does not delay the next ones
    nxt = time.monotonic()
    running = []
    while True:
        now = time.monotonic()
        if now >= END:
            break
        if nxt > now:
            time.sleep(nxt - now)
        t = threading.Thread(target=probe, args=(time.monotonic(),), daemon=True)
        t.start()
        running.append(t)
        running = [r for r in running if r.is_alive()]
        nxt += cfg["interval"]
        if nxt < time.monotonic() - 0.1:  # fell behind (CPU starved): do not burst
            nxt = time.monotonic()
    for r in running:
        r.join(timeout=cfg["probe_timeout"] + 1)

kas = []
def keepalive(i):
    rec = {"i": i, "opened": False, "alive": False, "requests": 0, "first": None, "last": None,
           "died": None, "err": None, "reconnects": 0}
    kas.append(rec)
    s = None
    while time.monotonic() < END:
        t = time.monotonic()
        try:
            if s is None:
                s = socket.create_connection((VIP, 80), timeout=cfg["ka_timeout"])
                s.settimeout(cfg["ka_timeout"])
            code, body = get(s, REQ_KA)
            if code != 200:
                raise OSError(f"status {code}")
            rec["requests"] += 1
            rec["opened"] = True
            rec["alive"] = True
            rec["first"] = rec["first"] or body
            rec["last"] = body
            bump("ka_ok")
        except Exception as e:
            bump("ka_fail")
            rec["alive"] = False
            if rec["died"] is None:
                rec["died"] = round(t, 4)
                rec["err"] = f"{type(e).__name__}: {e}"[:120]
            try:
                s and s.close()
            except Exception:
                pass
            s = None
            if not cfg.get("reconnect"):
                return
            rec["reconnects"] += 1
        time.sleep(max(0.0, cfg["ka_every"] - (time.monotonic() - t)))

def streamer():
    with open(cfg["stream"], "a") as f:
        while time.monotonic() < END + 0.5:
            time.sleep(1.0)
            with lock:
                f.write(json.dumps(dict(cnt, t=round(time.monotonic(), 3))) + "\n")
            f.flush()

threads = [threading.Thread(target=keepalive, args=(i,), daemon=True) for i in range(cfg["ka"])]
for t in threads:
    t.start()
    time.sleep(0.01)
pt = threading.Thread(target=prober, daemon=True)
pt.start()
if cfg.get("stream"):
    threading.Thread(target=streamer, daemon=True).start()
pt.join()
for t in threads:
    t.join(timeout=cfg["ka_timeout"] + 2)
with lock:
    res = {"probes": probes, "ka": kas, "counters": dict(cnt)}
with open(cfg["out"], "w") as f:
    json.dump(res, f)
'''

# argv[1]: JSON {url_base, threads, seconds, out}: `threads` threads each GETting /metrics and
# /status alternately (a new connection each time) until `seconds` have passed.
HAMMER = r'''
import json, sys, threading, time, urllib.request
cfg = json.loads(sys.argv[1])
END = time.monotonic() + cfg["seconds"]
lat, errs = [], []
lock = threading.Lock()
def run(i):
    n = 0
    while time.monotonic() < END:
        path = "/metrics" if (n + i) % 2 == 0 else "/status"
        n += 1
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(cfg["url_base"] + path, timeout=5) as r:
                r.read()
            with lock:
                lat.append(time.monotonic() - t0)
        except Exception as e:
            with lock:
                errs.append(type(e).__name__)
ts = [threading.Thread(target=run, args=(i,)) for i in range(cfg["threads"])]
for t in ts: t.start()
for t in ts: t.join()
lat.sort()
q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3, 2) if lat else None
with open(cfg["out"], "w") as f:
    json.dump({"ok": len(lat), "failed": len(errs), "errors": sorted(set(errs)),
               "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)}, f)
'''


def start_prober(name: str, seconds: float, out: Path, ka: int = 20, interval: float = 0.01,
                 probe_timeout: float = 1.0, ka_every: float = 0.2, ka_timeout: float = 5.0,
                 reconnect: bool = False, stream: Path | None = None) -> subprocess.Popen:
    cfg = {"vip": VIP, "seconds": seconds, "interval": interval, "probe_timeout": probe_timeout,
           "ka": ka, "ka_every": ka_every, "ka_timeout": ka_timeout, "reconnect": reconnect,
           "out": str(out), "stream": str(stream) if stream else None}
    return start_proc(name, nsx("client", sys.executable, "-c", PROBER, json.dumps(cfg)))


def kill_proc(proc: subprocess.Popen, sig: int) -> None:
    """Signals a process we started (its pid; `ip netns exec` exec'd into it)."""
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signals the process group (nginx master and workers) of a process we started."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} did not exit after signal {sig}")
