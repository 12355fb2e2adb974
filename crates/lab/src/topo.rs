//! Labs described as data: what `podlb-lab up` builds for the Python benches
//! (bench/nslab.py) and for people at a shell.
//!
//! A [`LabSpec`] lists the hosts of a [`Topology`] (role, address and prefix
//! of `eth0`, extra addresses, sysctls); [`build`] turns it into namespaces
//! with the lab's own builder, so the benches, the netns tests and
//! `podlb demo` share one lab and one namespace prefix (`plb-`). [`LabInfo`]
//! is the JSON description `podlb-lab up --json` prints: the lab's id, its
//! directory and, per role, the namespace, address, MAC and bridge port.
//! [`remove`] takes a lab down by id (`podlb-lab down`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::demo;
use crate::netns::{self, NetnsError, Topology};

/// Errors of describing, building and removing labs.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The spec file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spec is not valid JSON of the expected shape.
    #[error("spec {what}: {source}")]
    Parse {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The spec parses but cannot be built.
    #[error("spec: {0}")]
    Invalid(String),
    /// Not a lab id (`plb-<pid>-<n>`).
    #[error("{0:?} is not a lab id (plb-<pid>-<n>)")]
    BadId(String),
    /// The lab's owner is alive but is not a `podlb-lab` process.
    #[error("lab {id} belongs to running process {pid} ({comm}), not to `podlb-lab up`")]
    NotOwner { id: String, pid: u32, comm: String },
    /// The owner did not exit in time after SIGTERM.
    #[error("the owner of lab {id} (pid {pid}) did not exit within {timeout:?}")]
    OwnerStuck {
        id: String,
        pid: u32,
        timeout: Duration,
    },
    /// Building or removing namespaces failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// A lab: hosts around the bridge `br0` of one node namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// The hosts, in order (bridge ports `v0`, `v1`, ...).
    pub hosts: Vec<HostSpec>,
    /// Sysctls set in every host namespace, before each host's own.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

/// One host namespace of a [`LabSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Role: the namespace is `<lab id>-<role>`.
    pub role: String,
    /// Address of `eth0`.
    pub addr: Ipv4Addr,
    /// Prefix length of `addr` (default 24).
    #[serde(default = "default_prefix_len")]
    pub prefix_len: u8,
    /// More addresses on `eth0`, as "a.b.c.d/len".
    #[serde(default)]
    pub extra_addrs: Vec<String>,
    /// Sysctls of this host (after the lab-wide ones).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

fn default_prefix_len() -> u8 {
    24
}

impl HostSpec {
    /// `role` at `addr/24`, nothing else.
    pub fn new(role: &str, addr: Ipv4Addr) -> HostSpec {
        HostSpec {
            role: role.to_string(),
            addr,
            prefix_len: default_prefix_len(),
            extra_addrs: Vec::new(),
            sysctls: BTreeMap::new(),
        }
    }

    /// This host with a sysctl set.
    pub fn sysctl(mut self, key: &str, value: &str) -> HostSpec {
        self.sysctls.insert(key.to_string(), value.to_string());
        self
    }
}

/// Names of the presets [`LabSpec::preset`] knows.
pub const PRESETS: [&str; 2] = ["lab", "vrrp"];

impl LabSpec {
    /// A preset: "lab" is `podlb demo`'s topology with AF_PACKET
    /// ([`demo::lab_topology`]: client, lb, be1..be3), "vrrp" its two-instance
    /// one ([`demo::vrrp_lab_topology`]: client, lb1, lb2, be1..be3).
    pub fn preset(name: &str) -> Option<LabSpec> {
        let lbs: &[(&str, Ipv4Addr)] = match name {
            "lab" => &[("lb", demo::LB)],
            "vrrp" => &[("lb1", demo::LB), ("lb2", demo::LB2)],
            _ => return None,
        };
        let mut hosts = vec![HostSpec::new("client", demo::CLIENT)];
        hosts.extend(
            lbs.iter()
                .map(|(role, a)| HostSpec::new(role, *a).sysctl("net.ipv4.ip_forward", "0")),
        );
        hosts.extend(
            demo::BACKENDS
                .iter()
                .enumerate()
                .map(|(i, a)| HostSpec::new(&format!("be{}", i + 1), *a)),
        );
        Some(LabSpec {
            hosts,
            sysctls: BTreeMap::new(),
        })
    }

    /// A preset name, or the path of a JSON spec.
    pub fn load(arg: &str) -> Result<LabSpec, LabError> {
        if let Some(spec) = LabSpec::preset(arg) {
            return Ok(spec);
        }
        let text = std::fs::read_to_string(arg).map_err(|source| LabError::Read {
            path: PathBuf::from(arg),
            source,
        })?;
        LabSpec::parse(&text, arg)
    }

    /// Parses and validates a JSON spec; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<LabSpec, LabError> {
        let spec: LabSpec = serde_json::from_str(text).map_err(|source| LabError::Parse {
            what: what.to_string(),
            source,
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what would otherwise fail halfway through [`build`] (or write
    /// outside /proc/sys).
    pub fn validate(&self) -> Result<(), LabError> {
        let bad = |m: String| Err(LabError::Invalid(m));
        if self.hosts.is_empty() {
            return bad("no hosts".into());
        }
        let mut seen = std::collections::HashSet::new();
        for h in &self.hosts {
            let ok_role = !h.role.is_empty()
                && h.role.len() <= 16
                && h.role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok_role || h.role == "node" {
                return bad(format!(
                    "role {:?}: 1 to 16 of [A-Za-z0-9_], not \"node\"",
                    h.role
                ));
            }
            if !seen.insert(h.role.as_str()) {
                return bad(format!("role {:?} appears twice", h.role));
            }
            if !(1..=32).contains(&h.prefix_len) {
                return bad(format!("{}: prefix_len {}", h.role, h.prefix_len));
            }
            if let Some(a) = h.extra_addrs.iter().find(|a| parse_cidr(a).is_none()) {
                return bad(format!(
                    "{}: extra address {a:?} is not a.b.c.d/len",
                    h.role
                ));
            }
        }
        let keys = self
            .sysctls
            .keys()
            .chain(self.hosts.iter().flat_map(|h| h.sysctls.keys()));
        for k in keys {
            let ok = !k.is_empty()
                && !k.starts_with('.')
                && !k.contains("..")
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return bad(format!("sysctl key {k:?}"));
            }
        }
        Ok(())
    }
}

/// "a.b.c.d/len" with len 0..=32.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok()?;
    (len <= 32).then_some((a.parse().ok()?, len))
}

/// Builds the lab of `spec` (validated first). On error everything built so
/// far is removed (the [`Topology`] drops).
pub fn build(spec: &LabSpec) -> Result<Topology, LabError> {
    spec.validate()?;
    let mut t = Topology::new()?;
    for h in &spec.hosts {
        let ns = t.add_host_prefix(&h.role, h.addr, h.prefix_len)?;
        if !h.extra_addrs.is_empty() {
            // One `ip -batch` per host: a scale lab adds hundreds.
            let batch = t.dir().join(format!("{}.addrs", h.role));
            let lines: String = h
                .extra_addrs
                .iter()
                .map(|a| format!("addr add {a} dev eth0\n"))
                .collect();
            std::fs::write(&batch, lines).map_err(|source| NetnsError::Io {
                what: format!("writing {}", batch.display()),
                source,
            })?;
            netns::exec_ok(&ns, &["ip", "-batch", &batch.to_string_lossy()])?;
        }
        for (k, v) in spec.sysctls.iter().chain(&h.sysctls) {
            netns::set_sysctl(&ns, k, v)?;
        }
    }
    Ok(t)
}

/// What `podlb-lab up --json` prints: everything a client needs to use the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInfo {
    /// The lab's id, `plb-<owner pid>-<n>`: every namespace is `<id>-<role>`.
    pub id: String,
    /// The owning process (`podlb-lab up`).
    pub pid: u32,
    /// Temporary directory of the lab (removed with it).
    pub dir: PathBuf,
    /// The node namespace, holding the bridge.
    pub node: String,
    /// The bridge in the node namespace.
    pub bridge: String,
    /// Per role.
    pub hosts: BTreeMap<String, HostInfo>,
}

/// One host of a [`LabInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Namespace name.
    pub ns: String,
    /// Address of `eth0`.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// MAC of `eth0`.
    pub mac: String,
    /// The interface: `eth0`.
    pub ifname: String,
    /// Its bridge port (veth peer) in the node namespace; down = link cut.
    pub port: String,
}

/// The lab id of a topology: its prefix without the trailing dash.
pub fn lab_id(topo: &Topology) -> String {
    topo.prefix().trim_end_matches('-').to_string()
}

/// Describes a lab built by [`build`] from `spec`.
pub fn describe(topo: &Topology, spec: &LabSpec) -> Result<LabInfo, LabError> {
    let mut hosts = BTreeMap::new();
    for h in topo.hosts() {
        let prefix_len = spec
            .hosts
            .iter()
            .find(|s| s.role == h.role)
            .map_or(default_prefix_len(), |s| s.prefix_len);
        hosts.insert(
            h.role.clone(),
            HostInfo {
                ns: h.ns.clone(),
                addr: h.addr,
                prefix_len,
                mac: netns::mac_of(&h.ns, "eth0")?,
                ifname: "eth0".into(),
                port: h.port.clone(),
            },
        );
    }
    Ok(LabInfo {
        id: lab_id(topo),
        pid: std::process::id(),
        dir: topo.dir().to_path_buf(),
        node: topo.node().to_string(),
        bridge: "br0".into(),
        hosts,
    })
}

/// The owner pid of lab `id` (`plb-<pid>-<n>`).
pub fn parse_id(id: &str) -> Result<u32, LabError> {
    let bad = || LabError::BadId(id.to_string());
    let rest = id.strip_prefix("plb-").ok_or_else(bad)?;
    let (pid, n) = rest.split_once('-').ok_or_else(bad)?;
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    pid.parse().map_err(|_| bad())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Takes lab `id` down: a live `podlb-lab up` owner gets SIGTERM and is
/// waited for (up to `timeout`; it removes its lab itself), then whatever is
/// left (the owner was killed) is removed here. Refuses a lab whose owner is
/// alive but another program (a running test). Returns the namespaces
/// removed here.
pub fn remove(id: &str, timeout: Duration) -> Result<Vec<String>, LabError> {
    let pid = parse_id(id)?;
    if pid != std::process::id() && netns::pid_alive(pid) {
        let comm = comm(pid);
        if comm != "podlb-lab" {
            return Err(LabError::NotOwner {
                id: id.to_string(),
                pid,
                comm,
            });
        }
        netns::send_signal(pid, "TERM")?;
        let deadline = Instant::now() + timeout;
        while netns::pid_alive(pid) {
            if Instant::now() >= deadline {
                return Err(LabError::OwnerStuck {
                    id: id.to_string(),
                    pid,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let prefix = format!("{id}-");
    let mut removed = Vec::new();
    for ns in netns::list_netns() {
        if ns.starts_with(&prefix) {
            netns::delete_netns(&ns)?;
            removed.push(ns);
        }
    }
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(Path::new(id)));
    Ok(removed)
}

/// Removes the directories `plb-<pid>-<n>` in the temporary directory
/// whose pid is dead (a lab owner that was killed). Returns their paths.
pub fn sweep_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dead = parse_id(&name).is_ok_and(|pid| !netns::pid_alive(pid));
        if dead && e.path().is_dir() && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_spec_with_defaults() {
        let s = LabSpec::parse(
            r#"{"hosts": [
                {"role": "client", "addr": "198.18.0.10"},
                {"role": "lb", "addr": "198.18.0.2", "prefix_len": 16,
                 "extra_addrs": ["198.18.0.101/32"], "sysctls": {"net.ipv4.ip_forward": "0"}}],
              "sysctls": {"net.core.somaxconn": "4096"}}"#,
            "test",
        )
        .unwrap();
        assert_eq!(s.hosts[0].prefix_len, 24);
        assert_eq!(s.hosts[1].prefix_len, 16);
        assert_eq!(s.hosts[1].extra_addrs, ["198.18.0.101/32"]);
        assert_eq!(s.sysctls["net.core.somaxconn"], "4096");
    }

    #[test]
    fn rejects_bad_specs() {
        let bad = [
            r#"{"hosts": []}"#,
            r#"{"hosts": [{"role": "node", "addr": "198.18.0.1"}]}"#,
            r#"{"hosts": [{"role": "a-b", "addr": "198.18.0.1"}]}"#,
            r#"{"hosts": [{"role": "a", "addr": "198.18.0.1"}, {"role": "a", "addr": "198.18.0.2"}]}"#,
            r#"{"hosts": [{"role": "a", "addr": "198.18.0.1", "prefix_len": 33}]}"#,
            r#"{"hosts": [{"role": "a", "addr": "198.18.0.1", "extra_addrs": ["1.2.3.4"]}]}"#,
            r#"{"hosts": [{"role": "a", "addr": "198.18.0.1", "sysctls": {"../x": "1"}}]}"#,
            r#"{"hosts": [{"role": "a", "addr": "198.18.0.1", "color": "red"}]}"#,
            r#"{"hosts": [{"role": "a", "addr": "198.18.0.300"}]}"#,
        ];
        for b in bad {
            assert!(LabSpec::parse(b, "test").is_err(), "accepted {b}");
        }
    }

    #[test]
    fn presets_are_the_demo_labs() {
        for p in PRESETS {
            LabSpec::preset(p).unwrap().validate().unwrap();
        }
        let v = LabSpec::preset("vrrp").unwrap();
        let roles: Vec<&str> = v.hosts.iter().map(|h| h.role.as_str()).collect();
        assert_eq!(roles, ["client", "lb1", "lb2", "be1", "be2", "be3"]);
        assert_eq!(v.hosts[2].addr, demo::LB2);
        assert_eq!(v.hosts[1].sysctls["net.ipv4.ip_forward"], "0");
        assert!(LabSpec::preset("nope").is_none());
    }

    #[test]
    fn parses_ids() {
        assert_eq!(parse_id("plb-1234-0").unwrap(), 1234);
        for bad in [
            "plb-1234",
            "plb-x-0",
            "plbb-1-0",
            "plb-1-0-client",
            "plb-1-",
        ] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}
