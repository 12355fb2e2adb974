#!/usr/bin/env python3
"""Helpers shared by the netns benchmarks (bench/netns_bench.py, bench/faults.py, bench/soak.py).

Process and namespace bookkeeping (everything a run creates is removed exactly once, also on
error or Ctrl-C), running commands inside a namespace, wrk's output parser, and the nginx
backend config.  Python 3 standard library only.

Namespaces are named PREFIX + role; PREFIX is "plbb-<pid>-" unless a script calls
set_prefix() first.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PID = os.getpid()
PREFIX = f"plbb-{PID}-"
SUBNET = "198.18.0"  # 198.18.0.0/15 is the benchmarking range (RFC 2544); we use a /24 of it


def set_prefix(tag: str) -> None:
    """Namespaces of this run are named `<tag>-<pid>-<role>` (e.g. plbf-1234-client)."""
    global PREFIX
    PREFIX = f"{tag}-{PID}-"

REPO_ROOT = Path(__file__).resolve().parent.parent

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


class Resources:
    """Everything this run created, removed by cleanup() exactly once."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
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
        """Stops the processes and removes the namespaces so far (the temp dir stays): a
        fresh lab can be built with the same names."""
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
        leftovers = [n for n in list_netns() if n.startswith(PREFIX)]
        if leftovers:
            log(f"cleanup: WARNING namespaces left: {leftovers}")

    def _release(self) -> None:
        for _name, proc in reversed(self.procs):
            try:
                self.stop_proc(proc, grace=2.0)
            except Exception as e:  # keep going: namespaces must still go
                log(f"cleanup: stopping pid {proc.pid}: {e}")
        self.procs.clear()
        # processes still inside our namespaces were started by us (via ip netns exec)
        for ns in reversed(self.namespaces):
            try:
                out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                     text=True, timeout=10).stdout
                for pid in out.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
            except Exception as e:
                log(f"cleanup: listing pids of {ns}: {e}")
        time.sleep(0.1)
        for ns in reversed(self.namespaces):
            try:
                r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                                   timeout=20)
                if r.returncode != 0 and "No such file" not in r.stderr:
                    log(f"cleanup: ip netns del {ns}: {r.stderr.strip()}")
            except Exception as e:
                log(f"cleanup: ip netns del {ns}: {e}")
        self.namespaces.clear()


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


def ns_name(role: str) -> str:
    return PREFIX + role


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
        listen 80 backlog=4096;
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


def build_bridge_topology(hosts: dict[str, str], prefix_len: int = 24) -> None:
    """A namespace `node` with bridge br0, and one namespace per host in `hosts` (role ->
    address) whose eth0 is a veth on br0 with `address/prefix_len`. Tuned for many short
    connections: wide port range, TIME_WAIT reuse, deep accept queues."""
    node = ns_name("node")
    for role in ["node", *hosts]:
        run(["ip", "netns", "add", ns_name(role)])
        RES.namespaces.append(ns_name(role))
        run(["ip", "-n", ns_name(role), "link", "set", "lo", "up"])
    run(["ip", "-n", node, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", node, "link", "set", "br0", "up"])
    for role, addr in hosts.items():
        ns = ns_name(role)
        peer = f"v{role}"
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth",
             "peer", "name", peer, "netns", node])
        run(["ip", "-n", node, "link", "set", peer, "master", "br0"])
        run(["ip", "-n", node, "link", "set", peer, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{addr}/{prefix_len}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        sysctl(role, "net.ipv4.ip_local_port_range", "1024 65535")
        sysctl(role, "net.ipv4.tcp_tw_reuse", "1")
        sysctl(role, "net.core.somaxconn", "4096")
        sysctl(role, "net.ipv4.tcp_max_syn_backlog", "4096")


def start_nginx_backend(role: str, host: str, body: str = "ok") -> subprocess.Popen:
    """nginx (NGINX_BACKEND_CONF, port 80 on every address) in namespace `role`; waits until
    `host`:80 accepts from the client namespace."""
    assert RES.tmpdir is not None
    d = RES.tmpdir
    (d / f"{role}-tmp").mkdir(exist_ok=True)
    conf = d / f"{role}-nginx.conf"
    conf.write_text(NGINX_BACKEND_CONF.format(d=d, name=role, nofile=NOFILE, body=body,
                                              wconn=max(1024, min(16384, NOFILE - 100))))
    elog = str(d / f"{role}.error.log")
    run(nsx(role, "nginx", "-t", "-q", "-p", str(d), "-e", elog, "-c", str(conf)))
    p = start_proc(f"nginx-{role}", nsx(role, "nginx", "-p", str(d), "-e", elog, "-c", str(conf)))
    wait_tcp("client", host, 80, p, f"nginx-{role}")
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
