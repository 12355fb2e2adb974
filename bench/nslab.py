#!/usr/bin/env python3
"""Helpers shared by the netns benchmarks (bench/netns_bench.py, faults.py, scale.py, soak.py).

The lab itself (namespaces, bridge, veths, addresses, sysctls) is the Rust lab of
crates/lab, built and owned by a `podlb-lab up SPEC --json` process (class Lab): this module
writes the spec, reads the lab's description (namespace, address, MAC and bridge port per
role) and closes the process's standard input to remove the lab. podlb-lab also removes the lab
when this script dies in any way (its stdin closes with it), so nothing is left behind even on
SIGKILL. Namespaces are `plb-<podlb-lab pid>-<n>-<role>`, the prefix of every lab of the
repository (netns tests, `podlb demo`); `podlb-lab sweep` removes those of dead runs.

Here remain the measurement side: process bookkeeping (everything a run starts is stopped
exactly once, also on error or Ctrl-C), running commands inside a namespace, wrk's and
loadgen's output parsers, and the nginx backend config.  Python 3 standard library only.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "plb-"  # of every lab namespace: plb-<podlb-lab pid>-<n>-<role>
TMP_PREFIX = "plb-bench-"  # temp dirs (configs, logs) of the benches
SUBNET = "198.18.0"  # 198.18.0.0/15 is the benchmarking range (RFC 2544); we use a /24 of it

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_BIN = "target/release/podlb-lab"  # $PODLB_LAB_BIN overrides; relative: see resolve_bin

# Small programs run inside a namespace with `ip netns exec NS python3 -c ...`
# (Python 3.11 has no os.setns, and this keeps the main process in its own netns).
PY_TCP_CONNECT = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))\n"
    "s.close()\n"
)
PY_HTTP_GET = (
    "import sys,urllib.request\n"
    "r=urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2]))\n"
    "sys.stdout.write(r.read().decode('utf-8','replace'))\n"
)


class Interrupted(BaseException):
    """Raised from signal handlers (Ctrl-C, SIGTERM, SIGHUP, time limit)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class BenchError(Exception):
    """A step failed; the message says which."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# process and namespace bookkeeping
# --------------------------------------------------------------------------------------


class Lab:
    """A lab built and owned by `podlb-lab up SPEC --json` (crates/lab/src/cli.rs).

    `spec` is a lab spec (crates/lab/src/topo.rs LabSpec): {"hosts": [{"role", "addr",
    "prefix_len", "extra_addrs", "sysctls"}], "sysctls"}. The description podlb-lab prints
    (LabInfo) gives each role's namespace, address, MAC and bridge port. close() closes
    podlb-lab's standard input: it then kills whatever still runs in the namespaces and deletes
    them; it does the same if this process dies without calling close()."""

    def __init__(self, spec: dict, binary: Path, logdir: Path, timeout: float = 120.0):
        self.binary = binary
        spec_path = logdir / "lab-spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        self.log = logdir / "podlb-lab.log"
        with open(self.log, "ab") as logf:
            # its own session: Ctrl-C reaches this script, which then closes the lab in order
            self.proc = subprocess.Popen([str(binary), "up", str(spec_path), "--json"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=logf, start_new_session=True)
        self.info: dict = {}
        line = b""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.close()
                raise BenchError(f"podlb-lab up: no lab within {timeout:.0f}s: {self.log_tail()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self.close()
                raise BenchError(f"podlb-lab up failed: {self.log_tail()}")
            line += chunk
        self.info = json.loads(line)
        self.id: str = self.info["id"]
        self.node: str = self.info["node"]
        self.hosts: dict[str, dict] = self.info["hosts"]

    def host(self, role: str) -> dict:
        try:
            return self.hosts[role]
        except KeyError:
            raise BenchError(f"no host {role!r} in lab {self.id}") from None

    def ns(self, role: str) -> str:
        """Namespace of `role` ("node": the bridge's)."""
        return self.node if role == "node" else self.host(role)["ns"]

    def port(self, role: str) -> str:
        """`role`'s bridge port (its veth end in the node namespace)."""
        return self.host(role)["port"]

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self, timeout: float = 60.0) -> None:
        """Removes the lab: end of podlb-lab's input; SIGTERM, SIGKILL and `podlb-lab down`
        if it does not finish in time."""
        p = self.proc
        if p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass
        for sig, wait in ((None, timeout), (signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            if sig is not None and p.poll() is None:
                log(f"lab {getattr(self, 'id', '?')}: podlb-lab still running; {sig.name}")
                p.send_signal(sig)
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if p.stdout is not None:
            p.stdout.close()
        if getattr(self, "id", None) and any(n.startswith(self.id + "-") for n in list_netns()):
            run([str(self.binary), "down", self.id], timeout=90, check=False)


class Resources:
    """Everything this run created, removed by cleanup() exactly once."""

    def __init__(self) -> None:
        self.lab: Lab | None = None
        self.labs_seen: list[str] = []  # "<lab id>-" of every lab this run built
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.tmpdir: Path | None = None
        self.keep_tmp = False
        self.cleaned = False

    def add_proc(self, name: str, proc: subprocess.Popen) -> None:
        self.procs.append((name, proc))

    def stop_proc(self, proc: subprocess.Popen, grace: float = 3.0) -> None:
        """Stop a process we started (and its process group, which is its own session)."""
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # leftover members of its process group (e.g. nginx workers) go too
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)

    def reset(self) -> None:
        """Stops the processes and removes the lab (the temp dir stays): a fresh lab can be
        built."""
        self._release()

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        # no interruption of the cleanup itself
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                signal.signal(s, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
        signal.alarm(0)
        self._release()
        if self.tmpdir is not None:
            if self.keep_tmp:
                log(f"kept logs and configs in {self.tmpdir}")
            else:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self.labs_seen:
            leftovers = [n for n in list_netns() if n.startswith(tuple(self.labs_seen))]
            if leftovers:
                log(f"cleanup: WARNING namespaces left: {leftovers}")

    def _release(self) -> None:
        for _name, proc in reversed(self.procs):
            try:
                self.stop_proc(proc, grace=2.0)
            except Exception as e:  # keep going: namespaces must still go
                log(f"cleanup: stopping pid {proc.pid}: {e}")
        self.procs.clear()
        # podlb-lab kills what still runs in the namespaces, then deletes them
        if self.lab is not None:
            lab, self.lab = self.lab, None
            try:
                lab.close()
            except Exception as e:
                log(f"cleanup: removing lab {getattr(lab, 'id', '?')}: {e}")


RES = Resources()


def list_netns() -> list[str]:
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             timeout=10).stdout
    except Exception:
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def run(cmd: list[str], timeout: float = 20, check: bool = True,
        input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion with a timeout; the child is killed on timeout."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           input=input_text, stdin=None if input_text is not None
                           else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from e
    except FileNotFoundError as e:
        raise BenchError(f"not found: {cmd[0]}") from e
    if check and r.returncode != 0:
        raise BenchError(f"exit {r.returncode}: {' '.join(cmd)}\n{(r.stderr or r.stdout).strip()}")
    return r


def lab() -> Lab:
    if RES.lab is None:
        raise BenchError("no lab: build_bridge_topology() first")
    return RES.lab


def ns_name(role: str) -> str:
    """Namespace of `role` in the current lab ("node": the bridge's)."""
    return lab().ns(role)


def nsx(role: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns_name(role), *cmd]


def sysctl(role: str, key: str, value: str) -> None:
    run(nsx(role, "sysctl", "-q", "-w", f"{key}={value}"))


def start_proc(name: str, cmd: list[str]) -> subprocess.Popen:
    """Start a long-running process in its own session, output to a log file."""
    assert RES.tmpdir is not None
    logf = open(RES.tmpdir / f"{name}.log", "ab")
    try:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        logf.close()
    RES.add_proc(name, proc)
    return proc


def stop_named(name: str) -> None:
    keep = []
    for n, p in RES.procs:
        if n == name:
            RES.stop_proc(p)
        else:
            keep.append((n, p))
    RES.procs = keep


def log_tail(name: str, lines: int = 15) -> str:
    assert RES.tmpdir is not None
    p = RES.tmpdir / f"{name}.log"
    try:
        text = p.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def wait_tcp(role: str, host: str, port: int, proc: subprocess.Popen | None, name: str,
             timeout: float = 10.0) -> None:
    """Wait until host:port accepts a TCP connection from inside namespace `role`."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{log_tail(name)}")
        r = run(nsx(role, sys.executable, "-c", PY_TCP_CONNECT, host, str(port), "0.5"),
                timeout=5, check=False)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: {host}:{port} not accepting after {timeout:.0f}s")
        time.sleep(0.1)


def http_get(role: str, url: str, timeout: float = 2.0) -> str:
    r = run(nsx(role, sys.executable, "-c", PY_HTTP_GET, url, str(timeout)),
            timeout=timeout + 5, check=False)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"GET {url} from {role}: {last}")
    return r.stdout


def http_ok(role: str, url: str, within: float = 5.0) -> None:
    """The case works at all: one GET through the path answers `ok`."""
    deadline = time.monotonic() + within
    while True:
        try:
            body = http_get(role, url)
            if body.strip() == "ok":
                return
            err = f"unexpected body {body[:60]!r}"
        except BenchError as e:
            err = str(e)
        if time.monotonic() > deadline:
            raise BenchError(f"sanity check failed: {err}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------

_DUR_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_COUNT = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_duration_ms(tok: str) -> float:
    """wrk prints durations as 812.00us, 1.23ms, 2.01s, 1.50m."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)(us|ms|s|m|h)\s*", tok)
    if not m:
        raise ValueError(f"not a wrk duration: {tok!r}")
    return float(m.group(1)) * _DUR_MS[m.group(2)]


def parse_count(tok: str) -> float:
    """wrk prints counts as 1234, 12.34k, 1.20M."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)([kKMG]?)\s*", tok)
    if not m:
        raise ValueError(f"not a wrk count: {tok!r}")
    return float(m.group(1)) * _COUNT[m.group(2)]


def parse_wrk(text: str) -> dict:
    res: dict = {"errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}}
    m = re.search(r"^Requests/sec:\s*(\S+)", text, re.M)
    if not m:
        raise ValueError("no 'Requests/sec:' line in wrk output")
    res["rps"] = parse_count(m.group(1))
    for pct, key in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)\s*$", text, re.M)
        if m:
            res[key] = parse_duration_ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", text, re.M)
    if m:
        res["requests"] = int(m.group(1))
        res["duration_s"] = parse_duration_ms(m.group(2)) / 1e3
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            res["errors"][k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res["errors"]["non2xx"] = int(m.group(1))
    res["error_total"] = sum(res["errors"].values())
    return res



NGINX_BACKEND_CONF = """\
daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {d}/{name}.pid;
error_log {d}/{name}.error.log warn;
events {{ worker_connections {wconn}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    default_type text/plain;
    client_body_temp_path {d}/{name}-tmp/body;
    proxy_temp_path {d}/{name}-tmp/proxy;
    fastcgi_temp_path {d}/{name}-tmp/fastcgi;
    uwsgi_temp_path {d}/{name}-tmp/uwsgi;
    scgi_temp_path {d}/{name}-tmp/scgi;
    server {{
        listen 80 backlog=4096;{listen6}
        location / {{ return 200 "{body}\\n"; }}
    }}
}}
"""



NOFILE = 20000  # updated by raise_nofile() to what the children really get


def raise_nofile() -> None:
    """haproxy (maxconn), nginx and wrk inherit this: as many descriptors as allowed."""
    global NOFILE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = 1 << 20
    want = min(nr_open, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        # no CAP_SYS_RESOURCE (e.g. in a container): the hard limit is the ceiling
        want = hard if hard != resource.RLIM_INFINITY else soft
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def resolve_bin(arg: str) -> Path:
    """A binary given on the command line: absolute, or relative to the current directory,
    then to the repository root."""
    p = Path(arg)
    if p.is_absolute():
        return p
    for base in (Path.cwd(), REPO_ROOT):
        if (base / p).exists():
            return (base / p).resolve()
    return REPO_ROOT / p


LOADGEN_HELP = "cargo build --release --example loadgen"


def parse_loadgen(text: str) -> dict:
    """The JSON line bench/loadgen.rs prints; latencies converted to ms."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                j = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"loadgen output is not JSON: {line[:200]!r}") from e
            break
    else:
        raise ValueError(f"no JSON from loadgen: {text[-200:]!r}")
    for k in ("p50", "p90", "p99", "p999", "max", "mean"):
        j[f"{k}_ms"] = j[f"{k}_us"] / 1e3
    j["error_total"] = j["errors"] + j["timeouts"] + j["non2xx"] + j["unsent"]
    return j


def loadgen(role: str, binary: Path, target: str, rate: float, seconds: int,
            conns: int = 32) -> dict:
    """Open-loop load (bench/loadgen.rs) from `role` at `rate` req/s for `seconds`."""
    r = run(nsx(role, str(binary), "--rate", f"{max(1.0, rate):.0f}", "--duration",
                str(seconds), "--connections", str(conns), "--timeout", "2", target),
            timeout=seconds + 30, check=False)
    try:
        return parse_loadgen(r.stdout)
    except ValueError as e:
        raise BenchError(f"loadgen (exit {r.returncode}): {e}: {(r.stderr or r.stdout)[-300:]}")


# Tuned for many short connections: wide port range, TIME_WAIT reuse, deep accept queues.
HOST_SYSCTLS = {
    "net.ipv4.ip_local_port_range": "1024 65535",
    "net.ipv4.tcp_tw_reuse": "1",
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_max_syn_backlog": "4096",
}


def lab_bin() -> Path:
    b = resolve_bin(os.environ.get("PODLB_LAB_BIN", LAB_BIN))
    if not b.is_file():
        raise BenchError(f"{b} not found: cargo build --release (or set PODLB_LAB_BIN)")
    return b


def build_bridge_topology(hosts: dict[str, str], prefix_len: int = 24,
                          extra_addrs: dict[str, list[str]] | None = None,
                          sysctls: dict[str, dict[str, str]] | None = None) -> Lab:
    """The lab (`podlb-lab up`): a namespace `node` with bridge br0, and one namespace per host
    in `hosts` (role -> address) whose eth0 is a veth on br0 with `address/prefix_len`, plus
    `extra_addrs` ("a.b.c.d/len") and `sysctls` per role; HOST_SYSCTLS on every host."""
    assert RES.tmpdir is not None and RES.lab is None
    extra_addrs, sysctls = extra_addrs or {}, sysctls or {}
    spec = {"sysctls": HOST_SYSCTLS,
            "hosts": [{"role": r, "addr": a, "prefix_len": prefix_len,
                       "extra_addrs": extra_addrs.get(r, []), "sysctls": sysctls.get(r, {})}
                      for r, a in hosts.items()]}
    RES.lab = Lab(spec, lab_bin(), RES.tmpdir)
    RES.labs_seen.append(RES.lab.id + "-")
    return RES.lab


def podlb_config(spec: dict) -> str:
    """podlb's TOML config for a config spec (crates/lab/src/demo.rs ConfigSpec as JSON:
    {"attach": {"af_packet": {"interface"}} | {"tap": {"bridge", "name"}}, "workers", "admin",
    "services": [{"name", "vip", "port", "mode", "backends", "health_check"}], "vrrp", "extra"}),
    rendered by `podlb-lab config`, which has podlb's parser check it."""
    return run([str(lab_bin()), "config", "-"], input_text=json.dumps(spec)).stdout


def start_nginx_backend(role: str, host: str, body: str = "ok", label: str = "",
                        ipv6: bool = False) -> subprocess.Popen:
    """nginx (NGINX_BACKEND_CONF, port 80 on every address) answering `body` in namespace
    `role`, logging to `<label>nginx-<role>.log`; waits until `host`:80 accepts from the client
    namespace. `ipv6`: port 80 on every IPv6 address too (`listen [::]:80`)."""
    assert RES.tmpdir is not None
    d = RES.tmpdir
    (d / f"{role}-tmp").mkdir(exist_ok=True)
    conf = d / f"{role}-nginx.conf"
    listen6 = "\n        listen [::]:80 backlog=4096;" if ipv6 else ""
    conf.write_text(NGINX_BACKEND_CONF.format(d=d, name=role, nofile=NOFILE, body=body,
                                              wconn=max(1024, min(16384, NOFILE - 100)),
                                              listen6=listen6))
    elog = str(d / f"{role}.error.log")
    run(nsx(role, "nginx", "-t", "-q", "-p", str(d), "-e", elog, "-c", str(conf)))
    name = f"{label}nginx-{role}"
    p = start_proc(name, nsx(role, "nginx", "-p", str(d), "-e", elog, "-c", str(conf)))
    wait_tcp("client", host, 80, p, name)
    return p


def run_info(binary: Path, command: list[str]) -> dict:
    """What a result file says about its run: UTC date, CPUs, kernel, load, podlb's version and
    the repository revision ("-dirty" with uncommitted changes)."""
    dirty = "-dirty" if run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                             "--untracked-files=no"], check=False).stdout.strip() else ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "kernel": platform.release(),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "podlb": run([str(binary), "--version"], check=False).stdout.strip(),
        "git": run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                   check=False).stdout.strip() + dirty,
        "command": " ".join(command),
    }


def run_main(body, keep_tmp: bool = False) -> int:
    """Runs `body()` (returns the exit status) with cleanup on exit, on error, on Ctrl-C,
    SIGTERM, SIGHUP and SIGALRM (the time limit): 124 on the time limit, 128+N on signal N,
    2 on a BenchError."""
    def on_signal(signum, _frame):
        raise Interrupted(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    atexit.register(RES.cleanup)
    RES.keep_tmp = keep_tmp
    try:
        return body()
    except Interrupted as e:
        name = "time limit" if e.signum == signal.SIGALRM else signal.Signals(e.signum).name
        log(f"interrupted ({name}); cleaning up")
        return 124 if e.signum == signal.SIGALRM else 128 + e.signum
    except BenchError as e:
        log(f"error: {e}")
        return 2
    finally:
        RES.cleanup()
