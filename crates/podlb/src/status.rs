//! The typed reports of the admin endpoint: [`StatusReport`] (`GET /status`)
//! and [`FlowsReport`] (`GET /flows`). The admin server builds them, `podlb
//! status`, the demo and the tests parse them back; the JSON field names are
//! the contract (docs/architecture.md §9).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use podlb_core::stats::DropReason;

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub uptime_s: u64,
    pub interface: InterfaceStatus,
    /// Generation of the snapshot being served.
    pub config_generation: u64,
    pub last_reload_error: Option<String>,
    pub flows: FlowTableStatus,
    /// The IPv6 flow table (its own, `flows.capacity_ipv6`).
    #[serde(default)]
    pub flows_ipv6: FlowTableStatus,
    pub services: Vec<ServiceStatus>,
    /// The ARP cache: tracked neighbors and their MAC once resolved.
    pub neighbors: Vec<NeighborStatus>,
    /// Dropped frames by [`DropReason`] name (every reason, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// Health-checked backends.
    pub health: Vec<HealthStatus>,
    /// Services whose backends are all down and all kept (fail open).
    pub health_fail_open: Vec<String>,
    /// Backends held out of new connections after refusing one.
    pub refused_held: Vec<RefusedHold>,
    /// The IPv4 VRRP instance (with no IPv6 instance, the IPv6 VIPs
    /// follow it too).
    pub vrrp: Option<VrrpStatus>,
    /// The IPv6 VRRP instance (RFC 9568 §5.1.2), when one runs: there are
    /// IPv6 VIPs and the adverts are multicast (absent from older podlb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_ipv6: Option<VrrpStatus>,
    pub kubernetes: Option<KubeStatus>,
    pub cloud: Option<CloudStatus>,
    pub arp: ArpStatus,
    /// Hosts that claimed a VIP (RFC 5227 §2.4), most recent first.
    pub conflicts: Vec<ConflictStatus>,
    pub packets: PacketStatus,
    /// What `/livez` and `/readyz` say (absent from older podlb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbesStatus>,
}

/// `/livez` and `/readyz`, with their reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbesStatus {
    pub live: bool,
    pub ready: bool,
    /// Why not live: each thread that has not made progress for longer
    /// than `liveness_stall_ms`.
    pub stalled: Vec<String>,
    /// Why not ready.
    pub not_ready: Vec<String>,
    pub liveness_stall_ms: u64,
    /// Milliseconds since each thread's last heartbeat (`control`,
    /// `worker0`, ...; absent: not started).
    pub heartbeat_age_ms: BTreeMap<String, u64>,
}

impl ProbesStatus {
    /// Live and ready, with nothing to say.
    pub fn ok() -> ProbesStatus {
        ProbesStatus {
            live: true,
            ready: true,
            stalled: Vec::new(),
            not_ready: Vec::new(),
            liveness_stall_ms: 0,
            heartbeat_age_ms: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// `af_packet`, `af_xdp` or `tap`.
    pub mode: String,
    pub name: String,
    /// The MAC the VIPs are served with (the IPv4 ones, with an IPv6 VRRP
    /// instance).
    pub mac: String,
    /// The MAC the IPv6 VIPs are served with (absent from older podlb: the
    /// same as `mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_ipv6: Option<String>,
    pub workers: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableStatus {
    pub active: usize,
    pub capacity: usize,
    pub evictions: u64,
    pub memory_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: std::net::IpAddr,
    pub port: u16,
    /// `tcp` or `udp` (absent before UDP services: `tcp`).
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `nat`, `dsr` or `vxlan`.
    pub mode: String,
    /// Configured backends, then draining ones.
    pub backends: Vec<BackendStatus>,
}

/// A backend in the snapshot (`active`) or removed with flows left
/// (`draining`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Active,
    Draining,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub addr: SocketAddr,
    /// The MAC frames to it go to (its VTEP's next hop for vxlan), once
    /// resolved.
    pub mac: Option<String>,
    pub vtep: Option<Ipv4Addr>,
    pub vtep_mac: Option<String>,
    pub next_hop: Option<Ipv4Addr>,
    pub state: BackendState,
    pub active_flows: u32,
    pub new_flows: u64,
    pub packets_to_backend: u64,
    pub packets_to_client: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborStatus {
    pub ip: std::net::IpAddr,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    pub service: String,
    /// The backend.
    pub addr: SocketAddr,
    /// The address probed (None until the monitor knows the target).
    pub target: Option<SocketAddr>,
    /// The check, summarised.
    pub check: Option<String>,
    /// Passing, or not checked yet.
    pub up: bool,
    pub checks: u64,
    pub failures: u64,
    pub transitions: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedHold {
    pub backend: SocketAddr,
    /// Time left in the hold.
    pub left_ms: u64,
}

/// A VRRP router's state (also the Lease election's and the cloud mover's
/// role, which use the same four names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterState {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl RouterState {
    /// In the order of the views' state numbers (0 initialize .. 3 fault).
    pub const ALL: [RouterState; 4] = [
        RouterState::Initialize,
        RouterState::Backup,
        RouterState::Master,
        RouterState::Fault,
    ];

    /// The state of number `n` (as the views store it); out of range is
    /// `fault`.
    pub fn from_index(n: u8) -> RouterState {
        Self::ALL
            .get(usize::from(n))
            .copied()
            .unwrap_or(RouterState::Fault)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            RouterState::Initialize => "initialize",
            RouterState::Backup => "backup",
            RouterState::Master => "master",
            RouterState::Fault => "fault",
        }
    }
}

impl fmt::Display for RouterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpStatus {
    pub vrid: u8,
    pub state: RouterState,
    pub priority: u8,
    /// The instance's family: an IPv4 address, or an IPv6 link-local one.
    pub master: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub takeovers: u64,
    pub takeover_mean_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeStatus {
    pub namespace: String,
    pub identity: String,
    /// Services and EndpointSlices have been listed.
    pub synced: bool,
    pub services: u64,
    pub ignored: u64,
    pub allocations: Vec<Allocation>,
    pub problems: Vec<ProblemStatus>,
    pub draining: Vec<DrainingStatus>,
    /// Peers discovered from the peers Service (None: discovery off).
    pub peers: Option<Vec<Ipv4Addr>>,
    pub watch_events: u64,
    pub watch_errors: u64,
    pub relists: u64,
    pub status_writes: u64,
    pub status_errors: u64,
    pub events_sent: u64,
    pub last_error: Option<String>,
    /// API events that reached the data plane, and their mean latencies.
    pub updates: u64,
    pub update_mean_ms: Option<f64>,
    pub publish_mean_ms: Option<f64>,
    pub lease: Option<LeaseStatus>,
}

/// A VIP allocated to a Service (`namespace/name`): one entry per VIP, so
/// a dual-stack Service has two (its primary family's first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub service: String,
    pub vip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemStatus {
    pub service: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainingStatus {
    pub service: String,
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub state: RouterState,
    pub holder: Option<String>,
    pub acquired: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudStatus {
    pub provider: String,
    pub role: RouterState,
    /// `claimed`, `claiming` or `released`.
    pub state: String,
    pub calls: u64,
    pub errors: u64,
    pub last_ok: Option<String>,
    pub last_error: Option<String>,
    /// AWS: where the credentials come from, and when they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// AWS: the ENI claimed for (configured, or from the instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpStatus {
    pub replies_sent: u64,
    pub requests_sent: u64,
    pub garp_sent: u64,
    pub garp_unicast_sent: u64,
    pub vip_defences: u64,
    pub other_target_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictStatus {
    pub vip: Ipv4Addr,
    pub mac: String,
    pub last_seen_s: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketStatus {
    pub rx: u64,
    pub tx: u64,
    pub ignored: u64,
}

impl StatusReport {
    /// Drops of one reason (0 if the report lacks it).
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops.get(r.as_str()).copied().unwrap_or(0)
    }

    /// The backends of every service.
    pub fn backends(&self) -> impl Iterator<Item = &BackendStatus> {
        self.services.iter().flat_map(|s| &s.backends)
    }

    /// The health entry of backend `addr`.
    pub fn health_of(&self, addr: SocketAddr) -> Option<&HealthStatus> {
        self.health.iter().find(|h| h.addr == addr)
    }

    /// What `podlb status` prints: who this instance is, whether it is
    /// healthy, its role and peers, the Kubernetes sync and the cloud
    /// mover, then the services and drops.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let i = &self.interface;
        let _ = writeln!(
            o,
            "podlb {}  {} {} mac {}  workers {}  up {} s",
            self.version, i.mode, i.name, i.mac, i.workers, self.uptime_s
        );
        if let Some(p) = &self.probes {
            let mut line = format!(
                "health: {}, {}",
                if p.live { "live" } else { "NOT LIVE" },
                if p.ready { "ready" } else { "NOT READY" }
            );
            for why in p.stalled.iter().chain(&p.not_ready) {
                let _ = write!(line, "; {why}");
            }
            let _ = writeln!(o, "{line}");
        }
        self.summary_role(&mut o);
        if let Some(k) = &self.kubernetes {
            let _ = writeln!(
                o,
                "kubernetes: {} {}/{}  {} services ({} ignored), {} problems, {} draining, watch errors {}",
                if k.synced { "synced" } else { "NOT SYNCED" },
                k.namespace,
                k.identity,
                k.services,
                k.ignored,
                k.problems.len(),
                k.draining.len(),
                k.watch_errors
            );
            if let Some(e) = &k.last_error {
                let _ = writeln!(o, "  last error: {e}");
            }
        }
        if let Some(c) = &self.cloud {
            let _ = writeln!(
                o,
                "cloud: {} {} {}  calls {} errors {}",
                c.provider, c.role, c.state, c.calls, c.errors
            );
            if let Some(e) = &c.last_error {
                let _ = writeln!(o, "  last error: {e}");
            }
        }
        if let Some(e) = &self.last_reload_error {
            let _ = writeln!(o, "last reload error: {e}");
        }
        let _ = writeln!(o, "flows {} / {}", self.flows.active, self.flows.capacity);
        for s in &self.services {
            let _ = writeln!(
                o,
                "service {} {}:{}/{} ({})",
                s.name, s.vip, s.port, s.protocol, s.mode
            );
            for b in &s.backends {
                // (The counts were never padded: the JSON values ignored
                // the widths; kept so the output stays as it was.)
                let _ = writeln!(
                    o,
                    "  {:<22} {:<9} mac {:<17} active {}  new {}",
                    b.addr,
                    b.state,
                    b.mac.as_deref().unwrap_or("-"),
                    b.active_flows,
                    b.new_flows
                );
            }
        }
        for h in self.health.iter().filter(|h| !h.up) {
            let _ = writeln!(
                o,
                "backend down: {} {} ({})",
                h.service,
                h.addr,
                h.last_error.as_deref().unwrap_or("failing")
            );
        }
        if !self.health_fail_open.is_empty() {
            let _ = writeln!(
                o,
                "fail open (every backend down, all kept): {}",
                self.health_fail_open.join(" ")
            );
        }
        let drops: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(
            o,
            "drops: {}",
            if drops.is_empty() {
                "none".to_string()
            } else {
                drops.join(" ")
            }
        );
        o
    }

    /// The role line: VRRP, the Lease, or always serving; and the peers.
    fn summary_role(&self, o: &mut String) {
        fn list<T: fmt::Display>(ips: &[T]) -> String {
            if ips.is_empty() {
                "none".to_string()
            } else {
                ips.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
        let lease = self.kubernetes.as_ref().and_then(|k| k.lease.as_ref());
        if let Some(v) = &self.vrrp {
            for (what, v) in [("vrrp", Some(v)), ("vrrp ipv6", self.vrrp_ipv6.as_ref())] {
                let Some(v) = v else { continue };
                let _ = writeln!(
                    o,
                    "role: {what} vrid {} {} (priority {}, master {}), takeovers {}, peers {}",
                    v.vrid,
                    v.state,
                    v.priority,
                    v.master.map_or("-".to_string(), |m| m.to_string()),
                    v.takeovers,
                    list(&v.unicast_peers)
                );
            }
        } else if let Some(l) = lease {
            let _ = writeln!(
                o,
                "role: lease {} (holder {}), acquired {}, errors {}",
                l.state,
                l.holder.as_deref().unwrap_or("-"),
                l.acquired,
                l.errors
            );
        } else {
            let _ = writeln!(o, "role: always serving (no [vrrp], no Lease)");
        }
        if let Some(peers) = self.kubernetes.as_ref().and_then(|k| k.peers.as_ref()) {
            let _ = writeln!(o, "peers discovered: {}", list(peers));
        }
    }
}

fn tcp() -> String {
    "tcp".into()
}

/// `GET /flows?limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsReport {
    /// Up to `limit` flows of the table.
    pub flows: Vec<FlowStatus>,
    /// Flows in the table.
    pub total: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatus {
    pub service: String,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub backend: SocketAddr,
    /// The source port towards the backend (nat modes).
    pub nat_port: Option<u16>,
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// The phase (`syn`, `established`, ... ; UDP: `udp_unanswered`,
    /// `udp_answered`).
    pub state: String,
    pub idle_ms: u64,
}

/// A `/status` as podlb wrote it before the typed report (abridged):
/// what the typed report must read and write alike.
#[cfg(test)]
pub(crate) const SAMPLE_JSON: &str = r#"{"arp":{"garp_sent":6,"garp_unicast_sent":0,"other_target_requests":0,"replies_sent":0,"requests_sent":33,"vip_defences":0},"cloud":{"calls":2,"errors":0,"last_error":null,"last_ok":"exec at 1796290947","provider":"exec","role":"master","state":"claimed"},"config_generation":2,"conflicts":[{"vip":"10.77.0.100","mac":"02:00:00:00:00:66","last_seen_s":1,"count":3}],"drops":{"arp_malformed":0,"no_flow":4},"flows":{"active":0,"capacity":1000000,"evictions":0,"memory_bytes":106666880},"flows_ipv6":{"active":0,"capacity":250000,"evictions":0,"memory_bytes":32000000},"health":[{"addr":"10.77.0.21:80","check":"http GET /hz expect 200 every 200ms timeout 100ms rise 2 fall 3","checks":18,"failures":18,"last_error":"timeout after 100 ms","service":"web","target":"10.77.0.21:80","transitions":1,"up":false}],"health_fail_open":["web"],"interface":{"mac":"00:00:5e:00:01:07","mode":"af_packet","name":"veth0","workers":1},"kubernetes":{"allocations":[{"service":"default/web","vip":"10.77.0.100"},{"service":"default/web","vip":"2001:2::100"}],"draining":[{"service":"web","endpoints":["10.77.0.30:80"]}],"events_sent":0,"identity":"vm","ignored":0,"last_error":"watch: x","lease":{"acquired":0,"errors":4,"holder":null,"last_error":"y","state":"fault"},"namespace":"podlb","peers":null,"problems":[{"service":"default/x","reason":"VIPOutsidePool","message":"m"}],"publish_mean_ms":null,"relists":0,"services":0,"status_errors":0,"status_writes":0,"synced":false,"update_mean_ms":1.5,"updates":0,"watch_errors":9,"watch_events":9},"last_reload_error":null,"neighbors":[{"ip":"10.77.0.22","mac":null}],"packets":{"ignored":5,"rx":5,"tx":0},"refused_held":[{"backend":"10.77.0.21:80","left_ms":900}],"services":[{"backends":[{"active_flows":0,"addr":"10.77.0.21:80","mac":null,"new_flows":7,"next_hop":null,"packets_to_backend":0,"packets_to_client":0,"state":"active","vtep":null,"vtep_mac":null},{"active_flows":2,"addr":"10.77.0.22:80","mac":"02:00:00:00:00:22","new_flows":0,"next_hop":"10.77.0.1","packets_to_backend":0,"packets_to_client":0,"state":"draining","vtep":"10.77.0.9","vtep_mac":"02:00:00:00:00:09"}],"mode":"nat","name":"web","port":80,"protocol":"tcp","vip":"10.77.0.100"}],"uptime_s":3,"version":"0.1.0","vrrp":{"adverts_received":0,"adverts_sent":25,"master":"10.77.0.1","priority":100,"state":"master","takeover_mean_ms":null,"takeovers":0,"unicast_peers":["10.77.0.2"],"vrid":7}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_json_and_writes_the_same_fields() {
        let r: StatusReport = serde_json::from_str(SAMPLE_JSON).unwrap();
        assert_eq!(r.vrrp.as_ref().unwrap().state, RouterState::Master);
        assert_eq!(r.services[0].backends[1].state, BackendState::Draining);
        assert_eq!(r.drops_of(DropReason::NoFlow), 4);
        assert_eq!(r.drops_of(DropReason::TxError), 0);
        assert!(!r.health_of("10.77.0.21:80".parse().unwrap()).unwrap().up);
        assert_eq!(r.backends().count(), 2);
        // Written back, it is the same JSON value (field names and types).
        let old: serde_json::Value = serde_json::from_str(SAMPLE_JSON).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), old);
    }

    /// Who it is, health, role and peers, Kubernetes, cloud, then the
    /// services, what is down and the drops.
    #[test]
    fn summary_says_health_role_kubernetes_and_cloud() {
        let mut r: StatusReport = serde_json::from_str(SAMPLE_JSON).unwrap();
        assert_eq!(
            r.summary(),
            "podlb 0.1.0  af_packet veth0 mac 00:00:5e:00:01:07  workers 1  up 3 s\n\
             role: vrrp vrid 7 master (priority 100, master 10.77.0.1), takeovers 0, peers 10.77.0.2\n\
             kubernetes: NOT SYNCED podlb/vm  0 services (0 ignored), 1 problems, 1 draining, watch errors 9\n  \
             last error: watch: x\n\
             cloud: exec master claimed  calls 2 errors 0\n\
             flows 0 / 1000000\n\
             service web 10.77.0.100:80/tcp (nat)\n  \
             10.77.0.21:80          active    mac -                 active 0  new 7\n  \
             10.77.0.22:80          draining  mac 02:00:00:00:00:22 active 2  new 0\n\
             backend down: web 10.77.0.21:80 (timeout after 100 ms)\n\
             fail open (every backend down, all kept): web\n\
             drops: no_flow=4\n"
        );
        // With the probes (a newer podlb), the health line comes second.
        r.probes = Some(ProbesStatus {
            live: false,
            ready: false,
            stalled: vec!["control loop: no progress for 12000 ms (limit 10000 ms)".into()],
            not_ready: vec!["draining: stopping after SIGTERM".into()],
            ..ProbesStatus::ok()
        });
        let s = r.summary();
        assert_eq!(
            s.lines().nth(1),
            Some("health: NOT LIVE, NOT READY; control loop: no progress for 12000 ms (limit 10000 ms); draining: stopping after SIGTERM")
        );
        // An IPv6 instance: a role line of its own, after the IPv4 one.
        r.vrrp_ipv6 = Some(VrrpStatus {
            state: RouterState::Backup,
            master: Some("fe80::2".parse().unwrap()),
            unicast_peers: Vec::new(),
            ..r.vrrp.clone().unwrap()
        });
        let s = r.summary();
        let roles: Vec<&str> = s.lines().filter(|l| l.starts_with("role:")).collect();
        assert_eq!(
            roles,
            [
                "role: vrrp vrid 7 master (priority 100, master 10.77.0.1), takeovers 0, peers 10.77.0.2",
                "role: vrrp ipv6 vrid 7 backup (priority 100, master fe80::2), takeovers 0, peers none"
            ]
        );
        // Written and read back alike; an older report without it reads.
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"vrrp_ipv6\":{"), "{j}");
        assert_eq!(serde_json::from_str::<StatusReport>(&j).unwrap(), r);
        r.vrrp = None;
        r.vrrp_ipv6 = None;
        r.kubernetes = None;
        assert!(r
            .summary()
            .contains("\nrole: always serving (no [vrrp], no Lease)\n"));
    }

    #[test]
    fn flows_report_round_trips() {
        let j = r#"{"flows":[{"service":"web","client":"10.0.0.1:40000","vip":"10.77.0.100:80","backend":"10.77.0.21:80","nat_port":null,"protocol":"tcp","state":"established","idle_ms":5}],"total":1}"#;
        let r: FlowsReport = serde_json::from_str(j).unwrap();
        assert_eq!(r.flows[0].client.port(), 40000);
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
    }
}
