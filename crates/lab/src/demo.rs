//! `podlb demo`: a whole load balancer in network namespaces, in one command.
//!
//! Builds a topology (client 198.18.0.10, podlb host 198.18.0.2, backends
//! 198.18.0.21-23 answering `backend-N` from a built-in HTTP server), runs
//! `podlb run` with VIP 198.18.0.100:80, sends HTTP connections through the
//! VIP, prints how they spread and the flow table; with AF_PACKET it then
//! shows a VRRP failover (a second podlb on lb2 198.18.0.3 as backup,
//! keep-alive connections open, lb1's link cut, a probe every 10 ms), then
//! removes everything.
//! Needs root, iproute2 and the podlb binary, nothing else.
//!
//! The pieces ([`ConfigSpec`], [`Podlb`], [`lab_topology`], the metrics
//! parsers) are public: the netns tests drive podlb with them too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::netns::{self, HttpConn, HttpServer, NetnsError, Prober, Proc, Topology};
use podlb::status::{FlowsReport, StatusReport};

/// The VIP used by the demo and the tests.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The podlb host's address (AF_PACKET mode).
pub const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The second podlb host's address (the VRRP backup in the failover demo and tests).
pub const LB2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// VRID of the lab's virtual router (virtual MAC 00:00:5e:00:01:33).
pub const VRID: u8 = 51;
/// Backend addresses; backend i (1-based) is `BACKENDS[i-1]`, role `be<i>`.
pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 21),
    Ipv4Addr::new(198, 18, 0, 22),
    Ipv4Addr::new(198, 18, 0, 23),
];
/// Admin endpoint of podlb inside its namespace.
pub const ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100));
/// How long podlb may take to bring its admin endpoint up.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of `podlb demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of new HTTP connections sent through the VIP.
    pub connections: usize,
    /// "nat" or "dsr".
    pub mode: String,
    /// "af_packet" or "tap".
    pub attach: String,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            connections: 300,
            mode: "nat".into(),
            attach: "af_packet".into(),
        }
    }
}

/// Errors of the demo and of driving podlb.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The demo creates network namespaces: run it as root (e.g. `sudo podlb demo`).
    #[error("the demo creates network namespaces: run it as root (e.g. `sudo podlb demo`)")]
    NotRoot,
    /// An option has a value the demo does not know.
    #[error("option {option}: {value:?} is not one of {allowed}")]
    BadOption {
        option: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// Building or using the namespaces failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// podlb misbehaved (did not start, bad admin answer, ...).
    #[error("podlb: {0}")]
    Podlb(String),
    /// Interrupted by a signal; everything created was removed.
    #[error("interrupted; everything the demo created has been removed")]
    Interrupted,
    /// A file could not be written or read.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// How podlb attaches to the network. In JSON (`podlb-lab config`):
/// `{"af_packet": {"interface": "eth0"}}` or `{"tap": {"bridge": "br0", "name": "podlb0"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Attach {
    /// AF_PACKET on an existing interface (podlb runs in the "lb" namespace).
    AfPacket {
        /// Interface name, "eth0" in the lab.
        interface: String,
    },
    /// A TAP device enslaved to a bridge (podlb runs in the node namespace).
    Tap {
        /// Bridge name, "br0" in the lab.
        bridge: String,
        /// TAP device name.
        name: String,
    },
}

impl Attach {
    /// Parses "af_packet" / "tap" into the lab's attachment.
    pub fn from_name(name: &str) -> Result<Attach, DemoError> {
        match name {
            "af_packet" | "af-packet" | "afpacket" => Ok(Attach::AfPacket {
                interface: "eth0".into(),
            }),
            "tap" => Ok(Attach::Tap {
                bridge: "br0".into(),
                name: "podlb0".into(),
            }),
            other => Err(DemoError::BadOption {
                option: "attach",
                value: other.into(),
                allowed: "af_packet, tap",
            }),
        }
    }
    /// Whether this is TAP mode.
    pub fn is_tap(&self) -> bool {
        matches!(self, Attach::Tap { .. })
    }
}

/// One `[[service]]` of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Virtual IP.
    pub vip: std::net::IpAddr,
    /// Port on the VIP.
    pub port: u16,
    /// "nat" or "dsr".
    pub mode: String,
    /// Backend addresses.
    pub backends: Vec<SocketAddr>,
    /// The `health_check` value as TOML, e.g. `{ kind = "tcp" }`; `None`: no key.
    #[serde(default)]
    pub health_check: Option<String>,
}

/// A podlb config, rendered to TOML by [`ConfigSpec::to_toml`]. Also read as
/// JSON by `podlb-lab config` (the benches' configs): `workers` defaults to
/// 1, `admin` to [`ADMIN`], `vrrp` to none, `extra` to empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Attachment.
    pub attach: Attach,
    /// Data-plane workers.
    #[serde(default = "one")]
    pub workers: usize,
    /// Admin endpoint.
    #[serde(default = "admin")]
    pub admin: SocketAddr,
    /// Services.
    pub services: Vec<ServiceSpec>,
    /// The `[vrrp]` section; `None`: always serve.
    #[serde(default)]
    pub vrrp: Option<VrrpSpec>,
    /// More TOML appended verbatim (e.g. a `[kubernetes]` table).
    #[serde(default)]
    pub extra: String,
    /// More top-level keys, put before the first table (e.g.
    /// `admin_public = "..."`).
    #[serde(default)]
    pub top: String,
}

fn one() -> usize {
    1
}
fn admin() -> SocketAddr {
    ADMIN
}
fn vrid() -> u8 {
    VRID
}
fn yes() -> bool {
    true
}

/// The `[vrrp]` section of a [`ConfigSpec`] (the keys the lab uses). In
/// JSON, `priority` and `advert_interval_ms` are required; the rest default
/// as in [`VrrpSpec::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpSpec {
    /// Virtual router id.
    #[serde(default = "vrid")]
    pub vrid: u8,
    /// 1..=254 (255: address owner).
    pub priority: u8,
    /// Advert interval, a multiple of 10 ms.
    pub advert_interval_ms: u64,
    /// Preempt a lower-priority master.
    #[serde(default = "yes")]
    pub preempt: bool,
    /// Empty: multicast to 224.0.0.18.
    #[serde(default)]
    pub unicast_peers: Vec<Ipv4Addr>,
    /// UDP port of connection sync; `None`: podlb's default.
    #[serde(default)]
    pub sync_port: Option<u16>,
    /// One script for on_master, on_backup and on_fault.
    #[serde(default)]
    pub hook: Option<String>,
    /// Check TTL = 255 on adverts (off for peers behind a router).
    #[serde(default = "yes")]
    pub check_ttl: bool,
    /// `preempt_delay_ms`; `None`: podlb's default.
    #[serde(default)]
    pub preempt_delay_ms: Option<u64>,
}

impl VrrpSpec {
    /// VRID [`VRID`], `priority`, `advert_interval_ms`, preempt, multicast.
    pub fn new(priority: u8, advert_interval_ms: u64) -> VrrpSpec {
        VrrpSpec {
            vrid: VRID,
            priority,
            advert_interval_ms,
            preempt: true,
            unicast_peers: Vec::new(),
            sync_port: None,
            hook: None,
            check_ttl: true,
            preempt_delay_ms: None,
        }
    }
}

/// The VRRP virtual MAC of `vrid` (RFC 9568 §7.3), as "00:00:5e:00:01:xx".
pub fn virtual_mac(vrid: u8) -> String {
    format!("00:00:5e:00:01:{vrid:02x}")
}

/// The IPv6 VRRP virtual MAC of `vrid` (RFC 9568 §7.3), as
/// "00:00:5e:00:02:xx".
pub fn virtual_mac_v6(vrid: u8) -> String {
    format!("00:00:5e:00:02:{vrid:02x}")
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl ConfigSpec {
    /// The lab config: one service "web" on VIP:80 over the three backends.
    pub fn lab(attach: Attach, mode: &str) -> ConfigSpec {
        ConfigSpec {
            attach,
            workers: 1,
            admin: ADMIN,
            services: vec![ServiceSpec {
                name: "web".into(),
                vip: VIP.into(),
                port: 80,
                mode: mode.into(),
                backends: BACKENDS
                    .iter()
                    .map(|a| SocketAddr::V4(SocketAddrV4::new(*a, 80)))
                    .collect(),
                health_check: None,
            }],
            vrrp: None,
            extra: String::new(),
            top: String::new(),
        }
    }

    /// This config with a `[vrrp]` section.
    pub fn with_vrrp(mut self, vrrp: VrrpSpec) -> ConfigSpec {
        self.vrrp = Some(vrrp);
        self
    }

    /// TOML text in the format `podlb run --config` reads.
    pub fn to_toml(&self) -> String {
        let mut s = String::from("# written by podlb's netns harness\n");
        match &self.attach {
            Attach::AfPacket { interface } => {
                let _ = writeln!(s, "interface = {}", toml_str(interface));
            }
            Attach::Tap { .. } => {}
        }
        let _ = writeln!(s, "workers = {}", self.workers);
        let _ = writeln!(s, "admin = {}", toml_str(&self.admin.to_string()));
        if !self.top.is_empty() {
            let _ = writeln!(s, "{}", self.top.trim_end());
        }
        if let Attach::Tap { bridge, name } = &self.attach {
            let _ = writeln!(
                s,
                "\n[tap]\nbridge = {}\nname = {}",
                toml_str(bridge),
                toml_str(name)
            );
        }
        for svc in &self.services {
            let backends: Vec<String> = svc
                .backends
                .iter()
                .map(|b| toml_str(&b.to_string()))
                .collect();
            let _ = writeln!(
                s,
                "\n[[service]]\nname = {}\nvip = {}\nport = {}\nmode = {}\nbackends = [{}]",
                toml_str(&svc.name),
                toml_str(&svc.vip.to_string()),
                svc.port,
                toml_str(&svc.mode),
                backends.join(", ")
            );
            if let Some(h) = &svc.health_check {
                let _ = writeln!(s, "health_check = {h}");
            }
        }
        if let Some(v) = &self.vrrp {
            let peers: Vec<String> = v
                .unicast_peers
                .iter()
                .map(|p| toml_str(&p.to_string()))
                .collect();
            let _ = writeln!(
                s,
                "\n[vrrp]\nvrid = {}\npriority = {}\nadvert_interval_ms = {}\npreempt = {}\nunicast_peers = [{}]",
                v.vrid,
                v.priority,
                v.advert_interval_ms,
                v.preempt,
                peers.join(", ")
            );
            if let Some(p) = v.sync_port {
                let _ = writeln!(s, "sync_port = {p}");
            }
            if let Some(d) = v.preempt_delay_ms {
                let _ = writeln!(s, "preempt_delay_ms = {d}");
            }
            if !v.check_ttl {
                let _ = writeln!(s, "check_ttl = false");
            }
            if let Some(h) = &v.hook {
                for k in ["on_master", "on_backup", "on_fault"] {
                    let _ = writeln!(s, "{k} = {}", toml_str(h));
                }
            }
        }
        if !self.extra.is_empty() {
            s.push('\n');
            s.push_str(&self.extra);
        }
        s
    }
}

/// Builds the lab: node namespace with `br0`, "client" (198.18.0.10),
/// "lb" (198.18.0.2, AF_PACKET mode only, `ip_forward=0`), and backends
/// "be1".."be3" (198.18.0.21-23).
pub fn lab_topology(attach: &Attach) -> Result<Topology, NetnsError> {
    let mut t = Topology::new()?;
    t.add_host("client", CLIENT)?;
    if !attach.is_tap() {
        let lb = t.add_host("lb", LB)?;
        netns::set_sysctl(&lb, "net.ipv4.ip_forward", "0")?;
    }
    for (i, a) in BACKENDS.iter().enumerate() {
        t.add_host(&format!("be{}", i + 1), *a)?;
    }
    Ok(t)
}

/// Builds the two-instance lab: like [`lab_topology`] (AF_PACKET) but with
/// two podlb hosts, "lb1" ([`LB`], 198.18.0.2) and "lb2" ([`LB2`],
/// 198.18.0.3), both with `ip_forward=0`.
pub fn vrrp_lab_topology() -> Result<Topology, NetnsError> {
    let mut t = Topology::new()?;
    t.add_host("client", CLIENT)?;
    for (role, addr) in [("lb1", LB), ("lb2", LB2)] {
        let ns = t.add_host(role, addr)?;
        netns::set_sysctl(&ns, "net.ipv4.ip_forward", "0")?;
    }
    for (i, a) in BACKENDS.iter().enumerate() {
        t.add_host(&format!("be{}", i + 1), *a)?;
    }
    Ok(t)
}

/// A running `podlb run` inside a namespace of a [`Topology`]; the topology
/// kills it on drop, [`Podlb::stop`] stops it cleanly.
pub struct Podlb {
    proc: Proc,
    ns: String,
    admin: SocketAddr,
    config_path: PathBuf,
}

impl Podlb {
    /// Writes `config` to `<topology dir>/podlb.toml`, starts `exe run
    /// --config ...` inside `ns`, and waits (up to [`START_TIMEOUT`]) for its
    /// admin endpoint.
    pub fn start(
        topo: &Topology,
        ns: &str,
        exe: &Path,
        config: &ConfigSpec,
    ) -> Result<Podlb, DemoError> {
        Podlb::start_as(topo, ns, exe, config, "podlb")
    }

    /// Like [`Podlb::start`], with config `<dir>/<label>.toml` and log
    /// `<dir>/<label>.log`, so several instances can share a topology.
    pub fn start_as(
        topo: &Topology,
        ns: &str,
        exe: &Path,
        config: &ConfigSpec,
        label: &str,
    ) -> Result<Podlb, DemoError> {
        let config_path = topo.dir().join(format!("{label}.toml"));
        write_file(&config_path, &config.to_toml())?;
        let exe_s = exe.to_string_lossy();
        let cfg_s = config_path.to_string_lossy();
        let proc = topo.spawn(ns, label, &[&exe_s, "run", "--config", &cfg_s])?;
        let p = Podlb {
            proc,
            ns: ns.to_string(),
            admin: config.admin,
            config_path,
        };
        netns::wait_tcp(ns, p.admin, START_TIMEOUT, Some(&p.proc))?;
        Ok(p)
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }
    /// Namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }
    /// Path of its config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Rewrites the config file and sends SIGHUP.
    pub fn reload(&self, config: &ConfigSpec) -> Result<(), DemoError> {
        write_file(&self.config_path, &config.to_toml())?;
        self.proc.signal("HUP")?;
        Ok(())
    }

    /// `GET path` on the admin endpoint; fails on a non-200 status.
    pub fn admin_get(&self, path: &str) -> Result<String, DemoError> {
        let r = netns::http_request(&self.ns, self.admin, path)?;
        if r.status != 200 {
            return Err(DemoError::Podlb(format!(
                "GET {path}: status {}: {}",
                r.status, r.body
            )));
        }
        Ok(r.body)
    }
    /// `GET /metrics`.
    pub fn metrics(&self) -> Result<String, DemoError> {
        self.admin_get("/metrics")
    }
    /// `GET /status`.
    pub fn status(&self) -> Result<StatusReport, DemoError> {
        parse_json("/status", &self.admin_get("/status")?)
    }
    /// `GET /flows?limit=N`.
    pub fn flows(&self, limit: usize) -> Result<FlowsReport, DemoError> {
        parse_json("/flows", &self.admin_get(&format!("/flows?limit={limit}"))?)
    }
    /// podlb's own MAC address, from /status `interface.mac`.
    pub fn mac(&self) -> Result<String, DemoError> {
        Ok(self.status()?.interface.mac)
    }
    /// VRRP state from /status (`vrrp.state`: "initialize", "backup",
    /// "master", "fault"); `None` without a `[vrrp]` section.
    pub fn vrrp_state(&self) -> Result<Option<String>, DemoError> {
        Ok(self.status()?.vrrp.map(|v| v.state.as_str().to_string()))
    }
    /// The IPv6 VRRP instance's state from /status (`vrrp_ipv6.state`);
    /// `None` when no IPv6 instance runs.
    pub fn vrrp6_state(&self) -> Result<Option<String>, DemoError> {
        Ok(self
            .status()?
            .vrrp_ipv6
            .map(|v| v.state.as_str().to_string()))
    }
    /// SIGTERM and wait up to `grace`; SIGKILL after. Returns the exit status
    /// of a clean exit.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.proc.stop(grace)
    }
    /// The last `max` bytes of its stderr/stdout.
    pub fn log_tail(&self, max: usize) -> String {
        self.proc.log_tail(max)
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), DemoError> {
    // Write then rename, so a reload never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| DemoError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, DemoError> {
    serde_json::from_str(body)
        .map_err(|e| DemoError::Podlb(format!("{what} is not JSON ({e}): {body}")))
}

/// One Prometheus sample: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text exposition into samples (comments skipped; label
/// values with escaped quotes are handled).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let Some(close) = line.rfind('}') else {
                    continue;
                };
                (
                    &line[..open],
                    parse_labels(&line[open + 1..close]),
                    &line[close + 1..],
                )
            }
            None => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, BTreeMap::new(), r),
                None => continue,
            },
        };
        let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push((name.to_string(), labels, v));
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_string();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(o) => val.push(o),
                    None => break,
                },
                '"' => break,
                o => val.push(o),
            }
        }
        m.insert(key, val);
    }
    m
}

/// Sum of every sample of metric `name` (0 if absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// The sample of `name` whose labels include all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_metrics(text)
        .into_iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
}

// ---------------------------------------------------------------------------
// The demo itself

struct Interrupt {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Interrupt {
    fn register() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        let ids = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
            .into_iter()
            .filter_map(|s| signal_hook::flag::register(s, flag.clone()).ok())
            .collect();
        Interrupt { flag, ids }
    }
    fn check(&self) -> Result<(), DemoError> {
        if self.flag.load(Ordering::SeqCst) {
            Err(DemoError::Interrupted)
        } else {
            Ok(())
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Runs the demo and prints its report on stdout. Everything it creates is
/// removed before it returns, on success, error, panic or Ctrl-C.
pub fn run_demo(opts: &DemoOptions) -> Result<(), DemoError> {
    if !netns::is_root() {
        return Err(DemoError::NotRoot);
    }
    if !matches!(opts.mode.as_str(), "nat" | "dsr") {
        return Err(DemoError::BadOption {
            option: "mode",
            value: opts.mode.clone(),
            allowed: "nat, dsr",
        });
    }
    let attach = Attach::from_name(&opts.attach)?;
    let exe = crate::podlb_binary();
    if !exe.is_file() {
        return Err(DemoError::Io {
            what: format!("finding the podlb executable ({})", exe.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let interrupt = Interrupt::register();

    // With AF_PACKET the demo also shows a VRRP failover: two podlb hosts.
    let failover = !attach.is_tap();
    println!(
        "podlb demo: building namespaces (client, {}3 backends, bridge br0)",
        if failover { "lb1, lb2, " } else { "" }
    );
    let topo = if failover {
        vrrp_lab_topology()?
    } else {
        lab_topology(&attach)?
    };
    // Declared after `topo`, so dropped before it: servers stop, then the namespaces go.
    let mut servers: Vec<HttpServer> = Vec::new();
    for i in 1..=BACKENDS.len() {
        let ns = topo.ns(&format!("be{i}")).to_string();
        if opts.mode == "dsr" {
            netns::configure_dsr_backend(&ns, VIP)?;
        }
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80));
        servers.push(netns::serve_http(&ns, addr, &format!("backend-{i}\n"))?);
    }
    interrupt.check()?;

    let mut config = ConfigSpec::lab(attach.clone(), &opts.mode);
    if failover {
        config = config.with_vrrp(VrrpSpec::new(200, DEMO_ADVERT_MS));
    }
    let lb_ns = if attach.is_tap() {
        topo.node().to_string()
    } else {
        topo.ns("lb1").to_string()
    };
    println!(
        "podlb demo: starting `{} run` ({} mode, {}{})",
        exe.display(),
        opts.mode,
        opts.attach,
        if failover {
            format!(", VRRP VRID {VRID} priority 200 on lb1 {LB}")
        } else {
            String::new()
        }
    );
    let podlb = Podlb::start(&topo, &lb_ns, &exe, &config).map_err(|e| with_log(e, &topo))?;
    if failover {
        wait_vrrp_state(&podlb, "master", Duration::from_secs(5))?;
    }
    interrupt.check()?;

    let vip = SocketAddr::V4(SocketAddrV4::new(VIP, 80));
    println!(
        "podlb demo: {} new HTTP connections from client {CLIENT} to VIP {vip}",
        opts.connections
    );
    let counts = netns::http_get_many(topo.ns("client"), vip, opts.connections, 8, true)?;
    interrupt.check()?;

    println!();
    println!(
        "  {:<10} {:<16} {:>8} {:>7}",
        "backend", "address", "requests", "share"
    );
    let total: usize = counts.values().sum();
    for (i, a) in BACKENDS.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        let n = counts.get(&name).copied().unwrap_or(0);
        let share = if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        };
        println!(
            "  {name:<10} {:<16} {n:>8} {share:>6.1}%  {}",
            format!("{a}:80"),
            "#".repeat((share / 2.0).round() as usize)
        );
    }
    let unknown: usize = counts
        .iter()
        .filter(|(k, _)| !k.starts_with("backend-"))
        .map(|(_, v)| v)
        .sum();
    if unknown > 0 {
        println!("  (unexpected bodies: {unknown})");
    }

    print_flows(&podlb)?;
    print_status(&podlb)?;
    interrupt.check()?;

    let lb2 = if failover {
        Some(demo_failover(&topo, &exe, &podlb, &config, &interrupt)?)
    } else {
        println!();
        println!("podlb demo: (the VRRP failover part needs --attach af_packet; skipped)");
        None
    };

    println!();
    if let Some(lb2) = &lb2 {
        let _ = lb2.stop(Duration::from_secs(5));
    }
    match podlb.stop(Duration::from_secs(5)) {
        Some(st) if st.success() => {
            println!("podlb demo: podlb stopped cleanly; removing namespaces")
        }
        Some(st) => println!("podlb demo: podlb exited with {st}; removing namespaces"),
        None => println!(
            "podlb demo: podlb did not stop on SIGTERM within 5 s (killed); removing namespaces"
        ),
    }
    drop(servers);
    drop(topo);
    println!("podlb demo: done, nothing left behind");
    Ok(())
}

/// Advert interval of the demo's VRRP instances.
const DEMO_ADVERT_MS: u64 = 100;

fn wait_vrrp_state(p: &Podlb, want: &str, timeout: Duration) -> Result<Duration, DemoError> {
    let t0 = Instant::now();
    loop {
        let st = p.vrrp_state().ok().flatten();
        if st.as_deref() == Some(want) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return Err(DemoError::Podlb(format!(
                "{} not {want} within {timeout:?} (state {st:?})\n{}",
                p.proc().label(),
                p.log_tail(3000)
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The failover phase: lb2 (priority 100) joins as backup, keep-alive
/// connections open through lb1, lb1's link is cut, a probe every 10 ms
/// measures the outage, and the open connections are tried again.
fn demo_failover(
    topo: &Topology,
    exe: &Path,
    lb1: &Podlb,
    config: &ConfigSpec,
    interrupt: &Interrupt,
) -> Result<Podlb, DemoError> {
    const CONNS: usize = 20;
    let mut c2 = config.clone();
    c2.vrrp = Some(VrrpSpec::new(100, DEMO_ADVERT_MS));
    println!();
    println!(
        "podlb demo: failover: starting a second podlb on lb2 {LB2} (VRRP priority 100, adverts every {DEMO_ADVERT_MS} ms)"
    );
    let lb2 =
        Podlb::start_as(topo, topo.ns("lb2"), exe, &c2, "lb2").map_err(|e| with_log(e, topo))?;
    wait_vrrp_state(&lb2, "backup", Duration::from_secs(5))?;
    // lb1 streams its flows to the backups it knows (lb2 says hello every 500 ms).
    let t0 = Instant::now();
    while metric_sum(&lb1.metrics()?, "podlb_sync_peers") < 1.0
        && t0.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt.check()?;

    let client = topo.ns("client").to_string();
    let vip = SocketAddr::V4(SocketAddrV4::new(VIP, 80));
    let mut conns = netns::in_netns(&client, || {
        (0..CONNS)
            .map(|_| {
                let mut c = HttpConn::connect(vip, netns::HTTP_TIMEOUT)?;
                let r = c.get("/", false)?;
                Ok((c, r.body.trim().to_string()))
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?
    .map_err(|e| {
        DemoError::Podlb(format!(
            "opening keep-alive connections through the VIP: {e}"
        ))
    })?;
    println!(
        "podlb demo: failover: {CONNS} keep-alive connections open through lb1 (one request each)"
    );
    // Let the new flows reach lb2 (sync is batched).
    let t0 = Instant::now();
    while metric_sum(&lb2.metrics()?, "podlb_sync_installed_total") < CONNS as f64
        && t0.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(20));
    }

    let probe = Prober::start(
        &client,
        vip,
        Duration::from_millis(10),
        Duration::from_millis(250),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    println!("podlb demo: failover: cutting lb1's link (its bridge port down); probing the VIP every 10 ms");
    topo.set_port_up("lb1", false)?;
    let took = wait_vrrp_state(&lb2, "master", Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(700));
    let report = probe.finish()?;
    interrupt.check()?;

    let mut survived = 0;
    let mut moved = 0;
    for (c, body) in conns.iter_mut() {
        match c.get("/", false) {
            Ok(r) if r.status == 200 && r.body.trim() == body => survived += 1,
            Ok(_) => moved += 1,
            Err(_) => {}
        }
    }
    let m = lb2.metrics()?;
    let takeover_ms = 1e3 * metric_sum(&m, "podlb_takeover_seconds_sum")
        / metric_sum(&m, "podlb_takeover_seconds_count").max(1.0);
    println!();
    println!(
        "  lb2 became master {:.0} ms after the cut (seen on its /status)",
        took.as_secs_f64() * 1e3
    );
    println!(
        "  probe: {} ok, {} failed; longest gap between successful requests {:.0} ms",
        report.ok,
        report.failed,
        report.longest_gap.as_secs_f64() * 1e3
    );
    println!("  lb2 takeover (master-down detected -> first frame forwarded): {takeover_ms:.1} ms");
    println!(
        "  flows synced to lb2 before the cut: {}",
        metric_sum(&m, "podlb_sync_installed_total")
    );
    println!(
        "  open connections after the failover: {survived}/{CONNS} answered on the same backend{}",
        if moved > 0 {
            format!(", {moved} answered differently")
        } else {
            String::new()
        }
    );
    Ok(lb2)
}

fn with_log(e: DemoError, topo: &Topology) -> DemoError {
    let log = std::fs::read_to_string(topo.dir().join("podlb.log")).unwrap_or_default();
    if log.is_empty() {
        e
    } else {
        DemoError::Podlb(format!("{e}\n--- podlb log ---\n{log}"))
    }
}

fn print_flows(podlb: &Podlb) -> Result<(), DemoError> {
    let flows = podlb.flows(10)?.flows;
    println!();
    println!("flow table (up to 10 flows; closed connections may already be gone):");
    println!(
        "  {:<22} {:<18} {:>8} {:<12} {:>8}",
        "client", "backend", "nat_port", "state", "idle_ms"
    );
    if flows.is_empty() {
        println!("  (no flows)");
    }
    for f in &flows {
        println!(
            "  {:<22} {:<18} {:>8} {:<12} {:>8}",
            f.client,
            f.backend,
            f.nat_port
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            f.state,
            f.idle_ms
        );
    }
    Ok(())
}

fn print_status(podlb: &Podlb) -> Result<(), DemoError> {
    let st = podlb.status()?;
    let i = &st.interface;
    println!();
    println!(
        "interface: {} {} mac {} workers {}",
        i.mode, i.name, i.mac, i.workers
    );
    println!(
        "flows: {} active of {} capacity",
        st.flows.active, st.flows.capacity
    );
    let nonzero: Vec<String> = st
        .drops
        .iter()
        .filter(|(_, &v)| v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if nonzero.is_empty() {
        println!("drops: none");
    } else {
        println!("drops: {}", nonzero.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lab_config() {
        let c = ConfigSpec::lab(Attach::from_name("af_packet").unwrap(), "nat");
        let t = c.to_toml();
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["interface"].as_str(), Some("eth0"));
        assert_eq!(v["admin"].as_str(), Some("127.0.0.1:9100"));
        assert_eq!(v["service"][0]["vip"].as_str(), Some("198.18.0.100"));
        assert_eq!(v["service"][0]["backends"].as_array().unwrap().len(), 3);
        let tap = ConfigSpec::lab(Attach::from_name("tap").unwrap(), "dsr").to_toml();
        let v: toml::Value = toml::from_str(&tap).unwrap();
        assert!(v.get("interface").is_none());
        assert_eq!(v["tap"]["bridge"].as_str(), Some("br0"));
        assert_eq!(v["service"][0]["mode"].as_str(), Some("dsr"));
        let mut hc = ConfigSpec::lab(Attach::from_name("af_packet").unwrap(), "nat");
        hc.services[0].health_check = Some("{ kind = \"http\", rise = 3 }".into());
        let cfg = podlb::config::Config::parse(&hc.to_toml()).unwrap();
        assert_eq!(
            cfg.services[0].health_check.as_ref().map(|h| h.rise),
            Some(3)
        );
    }

    #[test]
    fn reads_config_specs_from_json() {
        let c: ConfigSpec = serde_json::from_str(
            r#"{"attach": {"af_packet": {"interface": "eth0"}},
                "services": [{"name": "web", "vip": "198.18.0.100", "port": 80, "mode": "nat",
                              "backends": ["198.18.0.21:80"]}],
                "vrrp": {"priority": 200, "advert_interval_ms": 100, "preempt_delay_ms": 500}}"#,
        )
        .unwrap();
        assert_eq!((c.workers, c.admin), (1, ADMIN));
        let mut want = VrrpSpec::new(200, 100);
        want.preempt_delay_ms = Some(500);
        assert_eq!(c.vrrp.as_ref(), Some(&want));
        let cfg = podlb::config::Config::parse(&c.to_toml()).unwrap();
        assert_eq!(cfg.services[0].backends.len(), 1);
        // The lab's own specs survive the trip through JSON.
        let lab = ConfigSpec::lab(Attach::from_name("tap").unwrap(), "dsr")
            .with_vrrp(VrrpSpec::new(100, 1000));
        let back: ConfigSpec = serde_json::from_str(&serde_json::to_string(&lab).unwrap()).unwrap();
        assert_eq!(back, lab);
        assert!(
            serde_json::from_str::<ConfigSpec>(r#"{"attach": {"xdp": {}}, "services": []}"#)
                .is_err()
        );
    }

    #[test]
    fn parses_metrics() {
        let text = "# HELP x\n# TYPE podlb_drops_total counter\n\
            podlb_drops_total{reason=\"runt\"} 3\n\
            podlb_drops_total{reason=\"bad \\\"q\\\"\"} 4\n\
            podlb_flows_active 7\n\
            podlb_backend_new_flows_total{service=\"web\",backend=\"198.18.0.21:80\"} 11\n";
        assert_eq!(metric_sum(text, "podlb_drops_total"), 7.0);
        assert_eq!(metric_sum(text, "podlb_flows_active"), 7.0);
        assert_eq!(
            metric_value(
                text,
                "podlb_backend_new_flows_total",
                &[("backend", "198.18.0.21:80")]
            ),
            Some(11.0)
        );
        assert_eq!(
            metric_value(text, "podlb_drops_total", &[("reason", "bad \"q\"")]),
            Some(4.0)
        );
        assert_eq!(metric_sum(text, "absent"), 0.0);
    }

    #[test]
    fn rejects_bad_options() {
        assert!(matches!(
            Attach::from_name("xdp"),
            Err(DemoError::BadOption { .. })
        ));
    }
}
