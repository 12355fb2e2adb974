//! Network-namespace topologies for the demo and the netns tests.
//!
//! A [`Topology`] is one "node" namespace holding the bridge `br0` (the cbr0
//! stand-in) plus host namespaces, each joined to `br0` by a veth pair whose
//! host end is `eth0`. Every link is created directly inside the namespaces
//! (`ip -n <node> link add vN type veth peer name eth0 netns <host>`), so
//! nothing is created in the root namespace and topologies built in parallel
//! cannot collide: each has its own bridge and may reuse the same addresses.
//!
//! The bridge forwards like a plain L2 switch: if `br_netfilter` is loaded,
//! `bridge-nf-call-{iptables,ip6tables,arptables}` are turned off in the node
//! namespace, so malformed IPv4 crosses it untouched.
//!
//! Names are `plb-<pid>-<counter>-<role>`. Creating the first topology in a
//! process sweeps away `plb-<pid>-*` namespaces whose pid is dead (left by a
//! killed run). Dropping a topology kills the processes it spawned and every
//! process left in its namespaces, then deletes the namespaces and its
//! temporary directory. Every wait in this module is bounded by a timeout.
//!
//! Everything here is safe code: namespace switching uses `nix::sched::setns`
//! on a fresh thread ([`in_netns`]), everything else shells out to `ip`.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use podlb::http::{self, client::BlockingConn, server, server::Limits};

/// Default timeout for one short command (`ip`, `sysctl`, ...).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of one HTTP request made by the helpers here.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default overall deadline of [`http_get_many`].
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(40);

/// Errors of the namespace helpers.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Could not start a command.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran past its timeout and was killed.
    #[error("`{cmd}` did not finish within {timeout:?} (killed)")]
    Timeout { cmd: String, timeout: Duration },
    /// A command exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: ExitStatus,
        stderr: String,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {ns}: {reason}")]
    Setns { ns: String, reason: String },
    /// A closure run inside a namespace panicked.
    #[error("thread inside namespace {0} panicked")]
    Panicked(String),
    /// An I/O error with context.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP exchange went wrong.
    #[error("HTTP to {addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
    /// Some requests of a batch failed.
    #[error("{failed} of {total} HTTP requests to {addr} failed; first error: {first}")]
    Batch {
        addr: SocketAddr,
        failed: usize,
        total: usize,
        first: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    WaitTimeout { what: String, timeout: Duration },
    /// A process exited while something was waited for.
    #[error("{label} exited ({status}) while waiting for {what}; log tail:\n{log}")]
    Exited {
        label: String,
        status: ExitStatus,
        what: String,
        log: String,
    },
    /// Unexpected output from a tool.
    #[error("cannot parse output of {what}: {output}")]
    Parse { what: String, output: String },
    /// No host with that role in the topology.
    #[error("no host named {0} in this topology")]
    NoSuchHost(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Io { what, source }
}

/// Result alias of this module.
pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Commands

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, killing it after `timeout`. Output is captured.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| NetnsError::Spawn {
        cmd: what.clone(),
        source,
    })?;
    // Drain both pipes on threads so a chatty child cannot block on a full
    // pipe; collect them with a bound, since a daemon the child left behind
    // may hold the pipes open.
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, mut pipe) in [
        (0, Box::new(out) as Box<dyn Read + Send>),
        (1, Box::new(err)),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            let _ = tx.send((i, v));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child
            .try_wait()
            .map_err(io_err(format!("waiting for {what}")))?
        {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetnsError::Timeout { cmd: what, timeout });
            }
            None => thread::sleep(Duration::from_millis(5)),
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let pipes_deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        let left = pipes_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((0, v)) => stdout = v,
            Ok((_, v)) => stderr = v,
            Err(_) => break,
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn ns_command(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// Runs `args` inside namespace `ns` with the default timeout; returns its
/// output whatever the exit status.
pub fn exec(ns: &str, args: &[&str]) -> Result<Output> {
    exec_timeout(ns, args, EXEC_TIMEOUT)
}

/// Like [`exec`] with an explicit timeout.
pub fn exec_timeout(ns: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    run_with_timeout(ns_command(ns, args), timeout)
}

fn check(cmd: String, out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Failed {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `args` inside `ns` and fails unless it exits 0; returns stdout.
pub fn exec_ok(ns: &str, args: &[&str]) -> Result<String> {
    let out = exec(ns, args)?;
    check(format!("[{ns}] {}", args.join(" ")), out)
}

/// Runs `ip <args>` in the current (root) namespace and fails unless it exits 0.
fn ip(args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    c.args(args);
    let what = describe(&c);
    check(what, run_with_timeout(c, EXEC_TIMEOUT)?)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // Without unsafe: /proc/self/status has "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Checks that network namespaces can be created here (root, `ip netns`
/// available and working). Returns the reason when they cannot.
pub fn netns_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not running as root".into());
    }
    if let Err(e) = ip(&["netns", "list"]) {
        return Some(format!("`ip netns` unavailable: {e}"));
    }
    None
}

/// Sends signal `sig` (a name such as "TERM" or "HUP") to process `pid`.
pub fn send_signal(pid: u32, sig: &str) -> Result<()> {
    // `kill` is a builtin of every /bin/sh, so this needs no extra package.
    let mut c = Command::new("sh");
    c.args(["-c", "kill -s \"$0\" \"$1\"", sig, &pid.to_string()]);
    let what = format!("kill -s {sig} {pid}");
    check(what, run_with_timeout(c, EXEC_TIMEOUT)?).map(drop)
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; treat "Z" state as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Pids of the processes inside namespace `ns` (never includes this process).
pub fn ns_pids(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    ip(&["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in `ns` (SIGKILL), waiting up to `timeout` for them to go.
pub fn kill_all_in(ns: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for p in pids {
            let _ = send_signal(p, "KILL");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Names of all network namespaces known to `ip netns`.
pub fn list_netns() -> Vec<String> {
    ip(&["netns", "list"])
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes `plb-<pid>-*` namespaces whose pid is dead (left by a killed run).
/// Returns the names deleted.
pub fn sweep_stale() -> Vec<String> {
    let me = std::process::id();
    let mut removed = Vec::new();
    for name in list_netns() {
        let Some(rest) = name.strip_prefix("plb-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            continue;
        }
        if delete_netns(&name).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// Kills every process in namespace `ns` (waiting up to 2 s), then deletes it.
pub fn delete_netns(ns: &str) -> Result<()> {
    kill_all_in(ns, Duration::from_secs(2));
    ip(&["netns", "del", ns]).map(drop)
}

// ---------------------------------------------------------------------------
// Running Rust code inside a namespace

/// Runs `f` on a fresh thread that first enters network namespace `ns` (by
/// `setns`), and returns its result. Sockets opened by `f`, and threads it
/// spawns, live in `ns`. The calling thread is not affected.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let file = open_netns(ns)?;
    thread::scope(|s| {
        s.spawn(move || {
            enter(ns, &file)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(NetnsError::Panicked(ns.to_string())))
    })
}

fn open_netns(ns: &str) -> Result<File> {
    File::open(format!("/var/run/netns/{ns}")).map_err(|e| NetnsError::Setns {
        ns: ns.to_string(),
        reason: e.to_string(),
    })
}

fn enter(ns: &str, file: &File) -> Result<()> {
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Setns {
        ns: ns.to_string(),
        reason: e.to_string(),
    })
}

/// Spawns a detached (joinable) thread that runs inside namespace `ns`.
fn spawn_in_netns<T, F>(ns: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let file = open_netns(ns)?;
    let name = ns.to_string();
    Ok(thread::spawn(move || {
        enter(&name, &file)?;
        Ok(f())
    }))
}

// ---------------------------------------------------------------------------
// Small per-namespace helpers

/// MAC address of interface `ifname` in `ns`, as "02:ab:..".
pub fn mac_of(ns: &str, ifname: &str) -> Result<String> {
    let out = exec_ok(ns, &["ip", "-o", "link", "show", "dev", ifname])?;
    let mut it = out.split_whitespace();
    while let Some(w) = it.next() {
        if w == "link/ether" {
            if let Some(mac) = it.next() {
                return Ok(mac.to_string());
            }
        }
    }
    Err(NetnsError::Parse {
        what: format!("ip link show {ifname} in {ns}"),
        output: out,
    })
}

/// Writes a sysctl (e.g. "net.ipv4.ip_forward", "0") inside `ns`. Uses
/// /proc/sys from a thread in the namespace, so needs no `sysctl` binary.
pub fn set_sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_netns(ns, move || {
        std::fs::write(&path, value.as_bytes()).map_err(io_err(path))
    })?
}

/// Adds `vip/32` to `lo` in `ns`.
pub fn add_vip_on_lo(ns: &str, vip: Ipv4Addr) -> Result<()> {
    exec_ok(
        ns,
        &["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"],
    )
    .map(drop)
}

/// Prepares a DSR backend: the VIP on `lo`, and the kernel told neither to
/// answer ARP for it (`arp_ignore=1`) nor to use it as ARP source
/// (`arp_announce=2`), on `all` and on `eth0`.
pub fn configure_dsr_backend(ns: &str, vip: Ipv4Addr) -> Result<()> {
    add_vip_on_lo(ns, vip)?;
    for dev in ["all", "eth0"] {
        set_sysctl(ns, &format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
        set_sysctl(ns, &format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
    }
    Ok(())
}

/// Waits until a TCP connect to `addr` from inside `ns` succeeds. If `proc`
/// is given and exits first, fails at once (with its log tail).
pub fn wait_tcp(ns: &str, addr: SocketAddr, timeout: Duration, proc: Option<&Proc>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = in_netns(ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        })?;
        if ok {
            return Ok(());
        }
        if let Some(p) = proc {
            if let Some(st) = p.try_wait() {
                return Err(NetnsError::Exited {
                    label: p.label().to_string(),
                    status: st,
                    what: format!("TCP {addr} in {ns}"),
                    log: p.log_tail(2000),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(NetnsError::WaitTimeout {
                what: format!("TCP {addr} in {ns}"),
                timeout,
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something listens on TCP `port` inside `ns` (checked with
/// `ss`, so nothing connects to it).
pub fn wait_listening(ns: &str, port: u16, timeout: Duration, proc: Option<&Proc>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let filter = format!("sport = :{port}");
    loop {
        let out = exec_ok(ns, &["ss", "-Hltn", &filter])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if let Some(p) = proc {
            if let Some(st) = p.try_wait() {
                return Err(NetnsError::Exited {
                    label: p.label().to_string(),
                    status: st,
                    what: format!("a listener on port {port} in {ns}"),
                    log: p.log_tail(2000),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(NetnsError::WaitTimeout {
                what: format!("a listener on port {port} in {ns}"),
                timeout,
            });
        }
        thread::sleep(Duration::from_millis(30));
    }
}

/// Packet counters of an interface: (rx_packets, tx_packets).
pub fn link_packets(ns: &str, ifname: &str) -> Result<(u64, u64)> {
    let out = exec_ok(ns, &["ip", "-j", "-s", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|_| NetnsError::Parse {
        what: format!("ip -j -s link show {ifname}"),
        output: out.clone(),
    })?;
    let get = |dir: &str| {
        v.pointer(&format!("/0/stats64/{dir}/packets"))
            .and_then(|p| p.as_u64())
    };
    match (get("rx"), get("tx")) {
        (Some(rx), Some(tx)) => Ok((rx, tx)),
        _ => Err(NetnsError::Parse {
            what: format!("ip -j -s link show {ifname}"),
            output: out,
        }),
    }
}

// ---------------------------------------------------------------------------
// Processes

/// A long-running process started in a namespace by [`Topology::spawn`].
/// Its stdout and stderr go to a log file in the topology's directory. The
/// topology kills it on drop; dropping the handle does not.
#[derive(Clone)]
pub struct Proc {
    pid: u32,
    label: String,
    log: PathBuf,
    child: Arc<Mutex<Child>>,
}

impl Proc {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// The label given at spawn time.
    pub fn label(&self) -> &str {
        &self.label
    }
    /// Path of the file holding its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// The last `max` bytes of its log.
    pub fn log_tail(&self, max: usize) -> String {
        let s = std::fs::read(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(max);
        String::from_utf8_lossy(&s[start..]).into_owned()
    }
    /// Sends a signal by name ("TERM", "HUP", "INT", "KILL").
    pub fn signal(&self, sig: &str) -> Result<()> {
        if self.try_wait().is_some() {
            return Err(NetnsError::Failed {
                cmd: format!("kill -s {sig} {}", self.pid),
                status: self.try_wait().expect("exited"),
                stderr: format!("{} already exited", self.label),
            });
        }
        send_signal(self.pid, sig)
    }
    /// Exit status if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child.lock().ok()?.try_wait().ok().flatten()
    }
    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }
    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the
    /// exit status of a clean exit (None if it had to be killed).
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_wait() {
            return Some(st);
        }
        let _ = send_signal(self.pid, "TERM");
        if let Some(st) = self.wait_timeout(grace) {
            return Some(st);
        }
        self.kill();
        None
    }
    /// SIGKILL and reap.
    pub fn kill(&self) {
        if let Ok(mut c) = self.child.lock() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Topology

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// One host namespace of a [`Topology`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Role given to [`Topology::add_host`], e.g. "client".
    pub role: String,
    /// Namespace name.
    pub ns: String,
    /// Address of its `eth0` (a /24 unless added by [`Topology::add_host_prefix`]).
    pub addr: Ipv4Addr,
    /// Name of the bridge port (veth peer) in the node namespace.
    pub port: String,
}

/// A bridge namespace and host namespaces around it; removed on drop.
pub struct Topology {
    prefix: String,
    node: String,
    hosts: Vec<Host>,
    namespaces: Vec<String>,
    procs: Mutex<Vec<Proc>>,
    dir: PathBuf,
}

impl Topology {
    /// Creates the node namespace with bridge `br0` (up, no address) and a
    /// temporary directory. Sweeps stale namespaces of dead runs first.
    pub fn new() -> Result<Topology> {
        SWEEP.call_once(|| {
            sweep_stale();
        });
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("plb-{}-{}-", std::process::id(), n);
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let node = format!("{prefix}node");
        let mut t = Topology {
            prefix,
            node: node.clone(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            procs: Mutex::new(Vec::new()),
            dir,
        };
        // From here on, Drop cleans up whatever was created.
        t.add_netns(&node)?;
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &node, "link", "set", "br0", "up"])?;
        // With br_netfilter loaded, bridged IPv4 goes through iptables and its
        // sanity checks, which drop malformed headers before they reach a
        // port. The bridge is a plain L2 switch here: turn that off.
        for key in ["iptables", "ip6tables", "arptables"] {
            let k = format!("net.bridge.bridge-nf-call-{key}");
            if t.has_sysctl(&node, &k) {
                set_sysctl(&node, &k, "0")?;
            }
        }
        Ok(t)
    }

    fn has_sysctl(&self, ns: &str, key: &str) -> bool {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        in_netns(ns, move || Path::new(&path).exists()).unwrap_or(false)
    }

    fn add_netns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Adds host namespace `role` joined to `br0`, with `addr/24` on its
    /// `eth0`. Returns the namespace name.
    pub fn add_host(&mut self, role: &str, addr: Ipv4Addr) -> Result<String> {
        self.add_host_prefix(role, addr, 24)
    }

    /// [`Topology::add_host`] with `addr/prefix_len` on `eth0`.
    pub fn add_host_prefix(
        &mut self,
        role: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<String> {
        let ns = format!("{}{}", self.prefix, role);
        self.add_netns(&ns)?;
        let port = format!("v{}", self.hosts.len());
        let node = self.node.clone();
        ip(&[
            "-n", &node, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &node, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/{prefix_len}"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        self.hosts.push(Host {
            role: role.to_string(),
            ns: ns.clone(),
            addr,
            port,
        });
        Ok(ns)
    }

    /// Name of the node (bridge) namespace.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// Prefix of every namespace name of this topology.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Every namespace of this topology (node first).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
    /// The hosts, in the order added.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    /// The host of role `role`.
    pub fn host(&self, role: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .ok_or_else(|| NetnsError::NoSuchHost(role.to_string()))
    }
    /// Namespace name of host `role` (panics if there is none: a caller bug).
    pub fn ns(&self, role: &str) -> &str {
        &self
            .host(role)
            .unwrap_or_else(|_| panic!("no host {role}"))
            .ns
    }
    /// Temporary directory, removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets host `role`'s bridge port (its veth end in the node namespace)
    /// up or down: down cuts the host's link (its `eth0` loses carrier).
    pub fn set_port_up(&self, role: &str, up: bool) -> Result<()> {
        let port = self.host(role)?.port.clone();
        ip(&[
            "-n",
            &self.node,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }

    /// Sets bridge port isolation of host `role`: isolated ports cannot
    /// reach each other but still reach every other port.
    pub fn set_port_isolated(&self, role: &str, isolated: bool) -> Result<()> {
        let port = self.host(role)?.port.clone();
        ip(&[
            "-n",
            &self.node,
            "link",
            "set",
            "dev",
            &port,
            "type",
            "bridge_slave",
            "isolated",
            if isolated { "on" } else { "off" },
        ])?;
        Ok(())
    }

    /// The processes started so far (their logs, for a failing test).
    pub fn procs(&self) -> Vec<Proc> {
        self.procs.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Starts `args` inside `ns`, stdout and stderr to `<dir>/<label>.log`.
    /// The process is killed when the topology drops.
    pub fn spawn(&self, ns: &str, label: &str, args: &[&str]) -> Result<Proc> {
        let log = self.dir.join(format!("{label}.log"));
        let f = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let f2 = f.try_clone().map_err(io_err("dup log file"))?;
        let mut c = ns_command(ns, args);
        c.stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        let what = describe(&c);
        let child = c
            .spawn()
            .map_err(|source| NetnsError::Spawn { cmd: what, source })?;
        let p = Proc {
            // `ip netns exec` execs the command, so this is the command's pid.
            pid: child.id(),
            label: label.to_string(),
            log,
            child: Arc::new(Mutex::new(child)),
        };
        if let Ok(mut v) = self.procs.lock() {
            v.push(p.clone());
        }
        Ok(p)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let procs = match self.procs.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for p in &procs {
            p.kill();
        }
        for ns in self.namespaces.iter().rev() {
            kill_all_in(ns, Duration::from_secs(3));
        }
        // Hosts first (their veths vanish with them), then the node.
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// HTTP server and client (podlb's own stack, `podlb::http`)

/// What a lab HTTP server lets a client hold: no deadlines (tests keep
/// connections open across failovers), room for every connection a test
/// opens.
const SERVER_LIMITS: Limits = Limits {
    max_connections: 65_536,
    max_per_peer: None,
    header_timeout: None,
    connection_timeout: None,
    max_head: 64 * 1024,
    keep_alive: true,
};

/// An HTTP/1.1 server running on a thread inside a namespace; every request
/// gets `200` with a fixed body. Keep-alive (closes when the client asks
/// `Connection: close`). Stops when dropped.
pub struct HttpServer {
    stop: Arc<tokio::sync::Notify>,
    thread: Option<JoinHandle<Result<()>>>,
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Number of requests answered so far.
    pub fn requests_served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts an HTTP server inside `ns` on `addr` answering `body` to every
/// request. Returns once it listens.
pub fn serve_http(ns: &str, addr: SocketAddr, body: &str) -> Result<HttpServer> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let served = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let body = http::Bytes::copy_from_slice(body.as_bytes());
    let (stop2, served2) = (stop.clone(), served.clone());
    let thread = spawn_in_netns(ns, move || {
        let started = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(|l| Ok((l, http::runtime()?)));
        let (listener, rt) = match started {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = tx.send(Ok(()));
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let handler = move |_req| {
                // Count before answering: a client that has its answer
                // must see the count include it.
                served2.fetch_add(1, Ordering::Relaxed);
                let r = server::full(http::StatusCode::OK, "text/plain", body.clone());
                async move { r }
            };
            let stats = Arc::new(server::Stats::default());
            server::serve(listener, SERVER_LIMITS, stats, handler, stop2.notified()).await;
        });
    })?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(HttpServer {
            stop,
            thread: Some(thread),
            addr,
            served,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(NetnsError::Http {
                addr,
                reason: format!("bind in {ns}: {e}"),
            })
        }
        Err(_) => {
            stop.notify_one();
            let reason = match thread.join() {
                Ok(Err(e)) => e.to_string(),
                _ => "server thread did not start".into(),
            };
            Err(NetnsError::Http { addr, reason })
        }
    }
}

/// One HTTP response as read by [`http_request`] / [`HttpConn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body (raw).
    pub body: String,
    /// Whether the server said it closes the connection.
    pub close: bool,
}

/// A keep-alive HTTP client connection. Create it inside a namespace with
/// [`in_netns`]; once connected it can be used from any thread.
pub struct HttpConn(BlockingConn);

impl HttpConn {
    /// Connects to `addr` (from the calling thread's namespace); `timeout`
    /// bounds the connect and each request.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<HttpConn> {
        BlockingConn::connect(addr, timeout)
            .map(HttpConn)
            .map_err(io_error)
    }
    /// Local address of the connection.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
    /// Sends `GET path` (asking to close the connection after it when
    /// `close`) and reads the response.
    pub fn get(&mut self, path: &str, close: bool) -> std::io::Result<HttpResponse> {
        let mut headers = vec![("user-agent", "podlb-netns")];
        if close {
            headers.push(("connection", "close"));
        }
        let r = self.0.get(path, &headers).map_err(io_error)?;
        Ok(HttpResponse {
            status: r.status.as_u16(),
            body: r.text(),
            close: r.closes(),
        })
    }
}

fn io_error(e: http::client::Error) -> std::io::Error {
    match e {
        http::client::Error::Connect { source, .. } => source,
        http::client::Error::Timeout(_) => {
            std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string())
        }
        e => std::io::Error::other(e.to_string()),
    }
}

/// One `GET path` on a fresh connection from inside `ns`, with [`HTTP_TIMEOUT`].
pub fn http_request(ns: &str, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let path = path.to_string();
    in_netns(ns, move || {
        HttpConn::connect(addr, HTTP_TIMEOUT).and_then(|mut c| c.get(&path, true))
    })?
    .map_err(|e| NetnsError::Http {
        addr,
        reason: e.to_string(),
    })
}

/// Sends `count` `GET /` requests to `addr` from inside `ns` over
/// `concurrency` parallel workers; with `new_connection` every request uses
/// a fresh TCP connection, otherwise each worker keeps one connection alive.
/// Returns how many responses carried each body (trimmed). Fails if any
/// request fails or has a non-200 status (each has [`HTTP_TIMEOUT`]).
pub fn http_get_many(
    ns: &str,
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    new_connection: bool,
) -> Result<HashMap<String, usize>> {
    let deadline = Instant::now() + BATCH_TIMEOUT;
    http_get_many_until(ns, addr, count, concurrency, new_connection, deadline)
}

/// [`http_get_many`] with an explicit overall deadline. Stops at the first
/// failed request or at the deadline, whichever comes first.
pub fn http_get_many_until(
    ns: &str,
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    new_connection: bool,
    deadline: Instant,
) -> Result<HashMap<String, usize>> {
    let abort = AtomicBool::new(false);
    let concurrency = concurrency.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let results = in_netns(ns, || {
        thread::scope(|s| {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (next, abort) = (&next, &abort);
                    // Threads spawned here inherit the namespace of this thread.
                    s.spawn(move || {
                        let mut counts: HashMap<String, usize> = HashMap::new();
                        let mut errors: Vec<String> = Vec::new();
                        let mut conn: Option<HttpConn> = None;
                        while !abort.load(Ordering::Relaxed)
                            && next.fetch_add(1, Ordering::Relaxed) < count
                        {
                            if Instant::now() >= deadline {
                                errors.push("batch deadline passed".into());
                                abort.store(true, Ordering::Relaxed);
                                break;
                            }
                            let r = (|| {
                                if new_connection || conn.is_none() {
                                    conn = Some(HttpConn::connect(addr, HTTP_TIMEOUT)?);
                                }
                                let c = conn.as_mut().expect("connected");
                                let resp = c.get("/", new_connection);
                                if resp.as_ref().map_or(true, |r| r.close) {
                                    conn = None;
                                }
                                resp
                            })();
                            match r {
                                Ok(resp) if resp.status == 200 => {
                                    *counts.entry(resp.body.trim().to_string()).or_default() += 1
                                }
                                Ok(resp) => {
                                    errors.push(format!("status {}", resp.status));
                                    abort.store(true, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    errors.push(e.to_string());
                                    abort.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        (counts, errors)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| (HashMap::new(), vec!["worker panicked".into()]))
                })
                .collect::<Vec<_>>()
        })
    })?;
    let mut total: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (counts, errs) in results {
        for (k, v) in counts {
            *total.entry(k).or_default() += v;
        }
        errors.extend(errs);
    }
    let done: usize = total.values().sum();
    if errors.is_empty() && done == count {
        Ok(total)
    } else {
        Err(NetnsError::Batch {
            addr,
            failed: count - done,
            total: count,
            first: errors
                .into_iter()
                .next()
                .unwrap_or_else(|| "requests missing".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_root_reads_proc() {
        // Only checks that it does not panic and agrees with /proc.
        let _ = is_root();
    }
}

// ---------------------------------------------------------------------------
// Availability probe

/// Start time (since the prober started) and outcome of each probe.
type ProbeLog = Vec<(Duration, bool)>;

/// What a [`Prober`] measured.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Probes that got a 200.
    pub ok: usize,
    /// Probes that failed (refused, reset, timed out, non-200).
    pub failed: usize,
    /// Longest time between the starts of two successive successful probes
    /// (with no success in between): the outage a client saw.
    pub longest_gap: Duration,
    /// When that gap began, relative to the prober's start.
    pub gap_began: Duration,
}

/// Starts a fresh HTTP request (new connection, `Connection: close`) every
/// `interval` from inside a namespace, each on its own thread with its own
/// timeout, and records which succeeded; [`Prober::finish`] reports the
/// longest gap between successes.
///
/// Keep the timeout well below TCP's initial SYN retransmission timeout
/// (1 s): a probe whose first SYN was lost during the outage and whose
/// retransmission got through later would otherwise count as a success
/// dated from its start, and shorten the measured gap.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<ProbeLog>>>,
    started: Instant,
}

impl Prober {
    /// Starts probing `addr` from `ns`.
    pub fn start(
        ns: &str,
        addr: SocketAddr,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let started = Instant::now();
        let thread = spawn_in_netns(ns, move || {
            let results: Arc<Mutex<Vec<(Duration, bool)>>> = Arc::new(Mutex::new(Vec::new()));
            let mut workers = Vec::new();
            let mut next = Instant::now();
            // Bounded: at most 10 minutes of probing whatever the caller does.
            let limit = started + Duration::from_secs(600);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < limit {
                let results = results.clone();
                workers.push(thread::spawn(move || {
                    let t = started.elapsed();
                    let ok = HttpConn::connect(addr, timeout)
                        .and_then(|mut c| c.get("/", true))
                        .map(|r| r.status == 200)
                        .unwrap_or(false);
                    if let Ok(mut v) = results.lock() {
                        v.push((t, ok));
                    }
                }));
                next += interval;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
                workers.retain(|w| !w.is_finished());
            }
            for w in workers {
                let _ = w.join();
            }
            let v = results.lock().map(|v| v.clone()).unwrap_or_default();
            v
        })?;
        Ok(Prober {
            stop,
            thread: Some(thread),
            started,
        })
    }

    /// Time since the prober started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops probing, waits for the probes in flight (each bounded by its
    /// timeout) and reports.
    pub fn finish(mut self) -> Result<ProbeReport> {
        self.stop.store(true, Ordering::SeqCst);
        let mut v = match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| NetnsError::Panicked("prober".into()))??,
            None => Vec::new(),
        };
        v.sort_by_key(|(t, _)| *t);
        let mut r = ProbeReport::default();
        let mut last_ok: Option<Duration> = None;
        for (t, ok) in v {
            if ok {
                r.ok += 1;
                if let Some(prev) = last_ok {
                    if t - prev > r.longest_gap {
                        r.longest_gap = t - prev;
                        r.gap_began = prev;
                    }
                }
                last_ok = Some(t);
            } else {
                r.failed += 1;
            }
        }
        Ok(r)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
