//! Typed, validated configuration.
//!
//! The file is TOML. Parsing happens in two steps: serde reads the raw shape
//! (unknown keys are rejected, so a typo is an error rather than a silent
//! default), then [`Config::validate`] turns it into typed values and checks
//! everything that serde cannot. Every error names the key it is about and
//! says what would be right.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use podlb_core::health;
use podlb_core::maglev;
pub use podlb_core::model::{
    Affinity, BackendConfig, CheckKind, ConfigError, FlowSettings, HealthCheck, Mode, Prefix,
    Protocol, ServiceConfig, UdpHash, DEFAULT_VNI, DEFAULT_VXLAN_MSS, DEFAULT_VXLAN_PORT,
};
pub use podlb_io::{IoBackend, RxRing, TxMode};
use podlb_wire::MacAddr;

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// How the engine attaches to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// AF_PACKET rings on an existing interface; podlb uses its MAC.
    AfPacket { interface: String },
    /// A TAP device enslaved to a bridge; podlb is its own L2 host with `mac`.
    Tap {
        bridge: String,
        name: String,
        mac: Option<MacAddr>,
    },
}

impl Attach {
    pub fn mode_str(&self) -> &'static str {
        match self {
            Attach::AfPacket { .. } => "af_packet",
            Attach::Tap { .. } => "tap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSettings {
    pub backend: IoBackend,
    /// TPACKET_V3 block size in bytes (a power of two, multiple of the page size).
    pub block_size: u32,
    /// Number of blocks in the RX ring.
    pub block_count: u32,
    /// Block retire timeout in milliseconds (TPACKET_V3 `tp_retire_blk_tov`).
    pub block_timeout_ms: u32,
    pub tx: TxMode,
    pub rx_ring: RxRing,
    /// Receive and send whole GSO frames with a virtio-net header.
    pub vnet_hdr: bool,
    /// How long a worker busy-polls after the last packet before it sleeps.
    pub busy_poll: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub attach: Attach,
    pub workers: usize,
    /// The admin endpoint: every route (`/status` and `/flows` too). Keep it
    /// on the loopback.
    pub admin: SocketAddr,
    /// A second, public listener (the kubelet's probes, Prometheus):
    /// `/healthz`, `/livez`, `/readyz`, `/metrics` only, unless
    /// `admin_public_reports`.
    pub admin_public: Option<SocketAddr>,
    /// Serve `/status` and `/flows` on `admin_public` too (they show client
    /// addresses, backends and NAT ports).
    pub admin_public_reports: bool,
    /// Reload when the config file changes (as on SIGHUP).
    pub watch_config: bool,
    pub probes: ProbeSettings,
    pub flows: FlowSettings,
    pub io: IoSettings,
    pub services: Vec<ServiceConfig>,
    /// Active–backup redundancy; `None`: this instance always serves.
    pub vrrp: Option<VrrpSettings>,
    /// Services from the Kubernetes API (in addition to `services`).
    pub kubernetes: Option<KubernetesSettings>,
    /// Move the VIP's cloud address to the master (`None`: plain L2).
    pub cloud: Option<CloudSettings>,
}

/// The `[probes]` table: what the admin endpoint's `/livez` and `/readyz`
/// judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// `/livez` fails once the control loop or a worker has not made
    /// progress for this long.
    pub liveness_stall: Duration,
}

/// `probes.liveness_stall_s` by default: far above the longest legitimate
/// pause of the control loop (a pass every 20 ms) or a worker (an idle wait
/// of 100 ms), and short enough that a wedged instance is restarted within
/// a minute with the Deployment's liveness probe.
pub const DEFAULT_LIVENESS_STALL_S: u64 = 10;

/// The `[cloud]` table: make the cloud send the VIP's traffic to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSettings {
    pub provider: CloudProvider,
    /// How often the master checks that the addresses are still its own.
    pub reconcile_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudProvider {
    /// The EC2 API: secondary private IPs and/or an Elastic IP to this
    /// instance's ENI.
    Aws(AwsSettings),
    /// Run a command on every transition (`PODLB_STATE`, `PODLB_VIP`,
    /// `PODLB_VRID`), e.g. a gcloud or az script.
    Exec { command: Vec<String> },
}

impl CloudProvider {
    pub fn name(&self) -> &'static str {
        match self {
            CloudProvider::Aws(_) => "aws",
            CloudProvider::Exec { .. } => "exec",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// `https://ec2.<region>.amazonaws.com` unless overridden.
    pub endpoint_url: String,
    pub region: String,
    /// This instance's ENI; `None`: found from the instance metadata (so
    /// one ConfigMap serves replicas on different nodes).
    pub network_interface_id: Option<String>,
    pub allocation_id: Option<String>,
    /// The secondary private IP to hold; `None`: every `[[service]]` VIP.
    pub private_ip: Option<Ipv4Addr>,
}

/// The `[kubernetes]` table: serve Services of type LoadBalancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// A kubeconfig file; `None`: in-cluster service account, else
    /// `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Class, VIP pools, default mode.
    pub reconcile: crate::k8s::KubeSettings,
    /// podlb's own namespace (peers Service, Lease, Events about podlb);
    /// `None`: `$POD_NAMESPACE`, else `default`.
    pub namespace: Option<String>,
    /// The headless Service whose endpoints are the podlb Pods; `None`: no
    /// peer discovery.
    pub peers_service: Option<String>,
    /// This Pod's address (left out of the peer list); `None`: `$POD_IP`,
    /// else the VRRP source address.
    pub pod_ip: Option<Ipv4Addr>,
    /// Who this instance is in Events and the Lease; `None`: `$POD_NAME`,
    /// else the host name.
    pub identity: Option<String>,
    /// `election = "lease"`: a coordination.k8s.io/v1 Lease decides who is
    /// active instead of VRRP.
    pub lease: Option<LeaseSettings>,
    /// `vip_pool_crd = true`: VIPPool objects (`podlb.io/v1alpha1`) add pools
    /// (deploy/kubernetes/crd-vippool.yaml must be installed; podlb waits
    /// for their first list before it serves Kubernetes Services).
    pub vip_pool_crd: bool,
}

/// A connection-sync key: at least 16 bytes from a file (surrounding
/// whitespace trimmed), so it never appears in the config or the logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey(pub Vec<u8>);

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncKey({} bytes)", self.0.len())
    }
}

impl SyncKey {
    /// Reads the key file named by config key `key`.
    pub fn load(key: &str, path: &str) -> Result<SyncKey, ConfigError> {
        if !path.starts_with('/') {
            return Err(err(key, format!("{path:?} must be an absolute path")));
        }
        let bytes =
            std::fs::read(path).map_err(|e| err(key, format!("cannot read {path}: {e}")))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < 16 {
            return Err(err(
                key,
                format!(
                    "{path} holds {} bytes; use at least 16 random bytes (e.g. `head -c 32 /dev/urandom | base64 > {path}`)",
                    trimmed.len()
                ),
            ));
        }
        Ok(SyncKey(trimmed.to_vec()))
    }
}

/// `[kubernetes.lease]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub duration: Duration,
    /// How often the holder renews and the others try.
    pub retry: Duration,
    /// Gratuitous ARPs per VIP on becoming active.
    pub garp_count: u32,
    /// Authenticates connection sync, as `vrrp.sync_key_file`.
    pub sync_key: Option<SyncKey>,
    pub on_master: Option<String>,
    pub on_backup: Option<String>,
    pub on_fault: Option<String>,
}

/// How VRRP adverts are checksummed when sent (both forms are accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VrrpChecksum {
    /// With the IPv4 pseudo-header, as keepalived sends by default.
    PseudoHeader,
    /// Over the VRRP message only, as RFC 9568 §5.2.8 specifies for IPv4.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpSettings {
    pub vrid: u8,
    /// 1..=254, or 255 for the address owner.
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Answer ICMP echo for the VIP while master (RFC 9568 Accept_Mode).
    pub accept_mode: bool,
    /// Empty: multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Check TTL = 255 on received adverts (turn off for routed unicast peers).
    pub check_ttl: bool,
    pub checksum: VrrpChecksum,
    /// Source of adverts and of sync datagrams; default: the interface's IPv4 address.
    pub address: Option<Ipv4Addr>,
    /// The IPv6 virtual router's link-local address, the first of its
    /// advert's address list (RFC 9568 §5.2.9); `None`: the virtual MAC's
    /// EUI-64 one, `podlb_wire::vrrp::virtual_link_local(vrid)`.
    pub link_local_v6: Option<std::net::Ipv6Addr>,
    /// UDP port of connection sync between instances.
    pub sync_port: u16,
    /// Shared key authenticating connection-sync datagrams (HMAC-SHA-256),
    /// read from `sync_key_file`; `None`: unauthenticated.
    pub sync_key: Option<SyncKey>,
    /// Gratuitous ARPs per VIP on becoming master.
    pub garp_count: u32,
    /// While master, re-announce every VIP this often (`garp_refresh_s`;
    /// zero: never).
    pub garp_refresh: Duration,
    /// After becoming master, also answer each client in the flow table
    /// with a unicast ARP reply for its VIP (`garp_unicast_clients`).
    pub garp_unicast_clients: bool,
    /// How long a master stopped by SIGTERM keeps forwarding after its priority-0 advert.
    pub drain: Duration,
    /// Priority subtracted while the interface is down / while no backend is usable.
    pub track_interface_weight: u8,
    pub track_backends_weight: u8,
    pub on_master: Option<String>,
    pub on_backup: Option<String>,
    pub on_fault: Option<String>,
}

// ---- raw serde shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Option<String>,
    tap: Option<RawTap>,
    workers: Option<i64>,
    admin: Option<String>,
    admin_public: Option<String>,
    admin_public_reports: Option<bool>,
    watch_config: Option<bool>,
    probes: Option<RawProbes>,
    flows: Option<RawFlows>,
    io: Option<RawIo>,
    #[serde(default)]
    service: Vec<RawService>,
    vrrp: Option<RawVrrp>,
    kubernetes: Option<RawKubernetes>,
    cloud: Option<RawCloud>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    provider: Option<String>,
    endpoint_url: Option<String>,
    region: Option<String>,
    network_interface_id: Option<String>,
    allocation_id: Option<String>,
    private_ip: Option<String>,
    reconcile_interval_ms: Option<u64>,
    command: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: Option<String>,
    load_balancer_class: Option<String>,
    #[serde(default)]
    vip_pools: Vec<String>,
    default_mode: Option<Mode>,
    namespace: Option<String>,
    peers_service: Option<String>,
    pod_ip: Option<String>,
    identity: Option<String>,
    election: Option<String>,
    lease: Option<RawLease>,
    health_check: Option<RawHealthCheck>,
    #[serde(default)]
    vip_pool_crd: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLease {
    name: Option<String>,
    duration_ms: Option<u64>,
    retry_ms: Option<u64>,
    garp_count: Option<u32>,
    sync_key_file: Option<String>,
    on_master: Option<String>,
    on_backup: Option<String>,
    on_fault: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVrrp {
    vrid: i64,
    priority: Option<i64>,
    advert_interval_ms: Option<u64>,
    preempt: Option<bool>,
    preempt_delay_ms: Option<u64>,
    accept_mode: Option<bool>,
    #[serde(default)]
    unicast_peers: Vec<String>,
    check_ttl: Option<bool>,
    checksum: Option<VrrpChecksum>,
    address: Option<String>,
    link_local_v6: Option<String>,
    sync_port: Option<i64>,
    sync_key_file: Option<String>,
    garp_count: Option<u32>,
    garp_refresh_s: Option<u64>,
    garp_unicast_clients: Option<bool>,
    drain_ms: Option<u64>,
    track_interface_weight: Option<u8>,
    track_backends_weight: Option<u8>,
    on_master: Option<String>,
    on_backup: Option<String>,
    on_fault: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTap {
    bridge: String,
    name: Option<String>,
    mac: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProbes {
    liveness_stall_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    capacity: Option<i64>,
    capacity_ipv6: Option<i64>,
    syn_timeout_s: Option<u64>,
    established_timeout_s: Option<u64>,
    fin_timeout_s: Option<u64>,
    close_timeout_s: Option<u64>,
    pickup: Option<bool>,
    refused_hold_s: Option<u64>,
    udp_unanswered_timeout_s: Option<u64>,
    udp_answered_timeout_s: Option<u64>,
    icmp_errors: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIo {
    backend: Option<IoBackend>,
    block_size: Option<u32>,
    block_count: Option<u32>,
    block_timeout_ms: Option<u32>,
    tx: Option<TxMode>,
    rx_ring: Option<RxRing>,
    vnet_hdr: Option<bool>,
    busy_poll_us: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: String,
    port: i64,
    protocol: Option<String>,
    mode: Option<Mode>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    table_size: Option<u32>,
    health_check: Option<RawHealthCheck>,
    vxlan_port: Option<i64>,
    vni: Option<i64>,
    mss_clamp: Option<i64>,
    #[serde(default)]
    source_ranges: Vec<String>,
    affinity: Option<String>,
    udp_hash: Option<String>,
}

/// The keys of a health-check table (`[service.health_check]`, and the
/// Kubernetes defaults table), read by [`parse_health_check`].
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<i64>,
    /// kind udp: the datagram to send, as text ...
    pub send: Option<String>,
    /// ... or as hex digits.
    pub send_hex: Option<String>,
    /// kind udp: what the reply must start with, as text ...
    pub expect: Option<String>,
    /// ... or as hex digits.
    pub expect_hex: Option<String>,
    /// kind dns: the name queried (type A).
    pub name: Option<String>,
    pub port: Option<i64>,
    pub interval_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBackend {
    Addr(String),
    Table {
        addr: String,
        #[serde(default = "default_weight")]
        weight: i64,
        vtep: Option<String>,
        vtep_mac: Option<String>,
    },
}

fn default_weight() -> i64 {
    1
}

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";
pub const DEFAULT_CAPACITY: usize = 1_000_000;
/// `flows.refused_hold_s` by default: long enough for a restarting backend
/// to come back, short enough that a backend refusing one odd SYN is not
/// missed for long.
pub const DEFAULT_REFUSED_HOLD_S: u64 = 10;
pub const MAX_WORKERS: usize = 64;
/// Backends of one service at most (Maglev entries are u16 indices).
pub const MAX_BACKENDS: usize = 4096;

/// What says a config file changed: the identity, size and times of the
/// file its path leads to (symlinks followed, so the kubelet's swap of a
/// mounted ConfigMap's `..data` link shows as another inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of `path` now; `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message names the line and the key; keep it whole.
            err("", format!("invalid TOML: {}", e.to_string().trim_end()))
        })?;
        Config::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let attach = match (raw.interface, raw.tap) {
            (Some(_), Some(_)) => {
                return Err(err("tap", "set either `interface` (AF_PACKET) or a [tap] table, not both"))
            }
            (None, None) => {
                return Err(err(
                    "interface",
                    "missing: set `interface = \"eth0\"` to attach with AF_PACKET, or a [tap] table with `bridge = \"cbr0\"`",
                ))
            }
            (Some(i), None) => {
                check_ifname("interface", &i)?;
                Attach::AfPacket { interface: i }
            }
            (None, Some(t)) => {
                check_ifname("tap.bridge", &t.bridge)?;
                let name = t.name.unwrap_or_else(|| "podlb0".to_string());
                check_ifname("tap.name", &name)?;
                let mac = match t.mac {
                    None => None,
                    Some(m) => {
                        let mac: MacAddr = m
                            .parse()
                            .map_err(|_| err("tap.mac", format!("{m:?} is not a MAC address like 02:00:00:00:00:01")))?;
                        if !mac.is_unicast() || mac == MacAddr::ZERO {
                            return Err(err("tap.mac", format!("{mac} must be a unicast, non-zero MAC")));
                        }
                        Some(mac)
                    }
                };
                Attach::Tap { bridge: t.bridge, name, mac }
            }
        };

        let workers = raw.workers.unwrap_or(1);
        if workers < 1 || workers as usize > MAX_WORKERS {
            return Err(err(
                "workers",
                format!("{workers} is out of range: use 1..={MAX_WORKERS}"),
            ));
        }
        let admin_s = raw.admin.unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let admin = parse_listen("admin", &admin_s, DEFAULT_ADMIN)?;
        let admin_public = raw
            .admin_public
            .map(|a| parse_listen("admin_public", &a, "0.0.0.0:9101"))
            .transpose()?;
        if let Some(p) = admin_public {
            let clash = p.port() == admin.port()
                && (p.ip() == admin.ip() || p.ip().is_unspecified() || admin.ip().is_unspecified());
            if clash {
                return Err(err(
                    "admin_public",
                    format!("{p} overlaps admin = {admin}: use another port"),
                ));
            }
        }
        let admin_public_reports = raw.admin_public_reports.unwrap_or(false);
        if admin_public_reports && admin_public.is_none() {
            return Err(err(
                "admin_public_reports",
                "needs admin_public (the listener to serve /status and /flows on too)",
            ));
        }
        let p = raw.probes.unwrap_or_default();
        let probes = ProbeSettings {
            liveness_stall: match p.liveness_stall_s.unwrap_or(DEFAULT_LIVENESS_STALL_S) {
                v @ 1..=3600 => Duration::from_secs(v),
                v => {
                    return Err(err(
                        "probes.liveness_stall_s",
                        format!("{v} is out of range: use 1..=3600 seconds"),
                    ))
                }
            },
        };

        let f = raw.flows.unwrap_or_default();
        let capacity = f.capacity.unwrap_or(DEFAULT_CAPACITY as i64);
        if !(1024..=1 << 26).contains(&capacity) {
            return Err(err(
                "flows.capacity",
                format!("{capacity} is out of range: use 1024..=67108864"),
            ));
        }
        // IPv6 flows have a table of their own (80-byte slots); a quarter
        // of the IPv4 capacity by default.
        let capacity_ipv6 = f.capacity_ipv6.unwrap_or((capacity / 4).max(1024));
        if !(1024..=1 << 26).contains(&capacity_ipv6) {
            return Err(err(
                "flows.capacity_ipv6",
                format!("{capacity_ipv6} is out of range: use 1024..=67108864"),
            ));
        }
        let secs = |key: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v == 0 || v > 30 * 86_400 {
                return Err(err(
                    format!("flows.{key}"),
                    format!("{v} is out of range: use 1..=2592000 seconds"),
                ));
            }
            Ok(Duration::from_secs(v))
        };
        let flows = FlowSettings {
            capacity: capacity as usize,
            capacity_ipv6: capacity_ipv6 as usize,
            syn_timeout: secs("syn_timeout_s", f.syn_timeout_s, 10)?,
            established_timeout: secs("established_timeout_s", f.established_timeout_s, 3600)?,
            fin_timeout: secs("fin_timeout_s", f.fin_timeout_s, 60)?,
            close_timeout: secs("close_timeout_s", f.close_timeout_s, 10)?,
            pickup: f.pickup.unwrap_or(true),
            refused_hold: match f.refused_hold_s.unwrap_or(DEFAULT_REFUSED_HOLD_S) {
                v @ 0..=3600 => Duration::from_secs(v),
                v => {
                    return Err(err(
                        "flows.refused_hold_s",
                        format!("{v} is out of range: use 0..=3600 seconds (0 turns it off)"),
                    ))
                }
            },
            udp_unanswered_timeout: secs(
                "udp_unanswered_timeout_s",
                f.udp_unanswered_timeout_s,
                30,
            )?,
            udp_answered_timeout: secs("udp_answered_timeout_s", f.udp_answered_timeout_s, 120)?,
            icmp_errors: f.icmp_errors.unwrap_or(true),
        };

        let r = raw.io.unwrap_or_default();
        let io = IoSettings {
            backend: r.backend.unwrap_or_default(),
            block_size: r.block_size.unwrap_or(1 << 18),
            block_count: r.block_count.unwrap_or(32),
            block_timeout_ms: r.block_timeout_ms.unwrap_or(1),
            tx: r.tx.unwrap_or(TxMode::Sendmmsg),
            rx_ring: r.rx_ring.unwrap_or(RxRing::V2),
            vnet_hdr: r.vnet_hdr.unwrap_or(true),
            busy_poll: Duration::from_micros(r.busy_poll_us.unwrap_or(200)),
        };
        if !io.block_size.is_power_of_two() || !(1 << 12..=1 << 24).contains(&io.block_size) {
            return Err(err(
                "io.block_size",
                format!(
                    "{} must be a power of two between 4096 and 16777216",
                    io.block_size
                ),
            ));
        }
        if !(2..=4096).contains(&io.block_count) {
            return Err(err(
                "io.block_count",
                format!("{} is out of range: use 2..=4096", io.block_count),
            ));
        }
        if !(1..=1000).contains(&io.block_timeout_ms) {
            return Err(err(
                "io.block_timeout_ms",
                format!("{} is out of range: use 1..=1000", io.block_timeout_ms),
            ));
        }
        if io.busy_poll > Duration::from_secs(1) {
            return Err(err("io.busy_poll_us", "at most 1000000 microseconds"));
        }
        if let (IoBackend::AfXdp, Attach::Tap { .. }) = (io.backend, &attach) {
            return Err(err(
                "io.backend",
                "\"af_xdp\" needs an interface to attach an XDP program to; TAP mode ([tap]) reads its own device: use backend = \"af_packet\" or set interface instead of [tap]",
            ));
        }

        let services = validate_services(raw.service)?;
        let vrrp = raw.vrrp.map(validate_vrrp).transpose()?;
        if let (Some(v), Attach::Tap { .. }) = (&vrrp, &attach) {
            if v.address.is_none() {
                return Err(err(
                    "vrrp.address",
                    "required in TAP mode: the TAP device has no address to send adverts from",
                ));
            }
        }
        let kubernetes = raw.kubernetes.map(validate_kubernetes).transpose()?;
        if let Some(k) = &kubernetes {
            for (i, s) in services.iter().enumerate() {
                if k.reconcile.in_pool(s.vip) {
                    return Err(err(
                        format!("service[{i}].vip"),
                        format!("{} is inside kubernetes.vip_pools, which belong to Kubernetes Services; use an address outside the pools", s.vip),
                    ));
                }
            }
            if k.lease.is_some() && vrrp.is_some() {
                return Err(err(
                    "kubernetes.election",
                    "\"lease\" replaces VRRP: remove the [vrrp] table, or use election = \"vrrp\"",
                ));
            }
        }
        let cloud = raw.cloud.map(validate_cloud).transpose()?;
        Ok(Config {
            attach,
            workers: workers as usize,
            admin,
            admin_public,
            admin_public_reports,
            watch_config: raw.watch_config.unwrap_or(true),
            probes,
            flows,
            io,
            services,
            vrrp,
            kubernetes,
            cloud,
        })
    }
}

/// A listen address (`key`), like `example`.
fn parse_listen(key: &str, s: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| err(key, format!("{s:?} is not an address like {example}")))
}

/// A Kubernetes object name (RFC 1123 label or subdomain).
fn check_k8s_name(key: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            format!("{s:?} is not a Kubernetes name (lowercase letters, digits, '-', '.')"),
        ))
    }
}

fn absolute_hook(key: &str, h: Option<String>) -> Result<Option<String>, ConfigError> {
    match h {
        Some(p) if !p.starts_with('/') => Err(err(key, format!("{p:?} must be an absolute path"))),
        other => Ok(other),
    }
}

fn validate_kubernetes(k: RawKubernetes) -> Result<KubernetesSettings, ConfigError> {
    let mut reconcile = crate::k8s::KubeSettings::new(
        k.load_balancer_class.as_deref(),
        &k.vip_pools,
        k.default_mode,
    )?;
    if let Some(h) = k.health_check {
        reconcile.health_check = parse_health_check(h, "kubernetes.health_check")?;
        // The default applies to every Service, whose TCP ports podlb
        // serves; a UDP check is chosen per Service, by annotation.
        if let Some(c) = &reconcile.health_check {
            if c.kind.protocol() != Protocol::Tcp {
                return Err(err(
                    "kubernetes.health_check.kind",
                    format!(
                        "{:?} checks UDP backends; the default check is for Services' TCP ports: use \"tcp\", \"http\" or \"none\" (a UDP check goes in a Service's podlb.io/health-check annotation)",
                        c.kind.as_str()
                    ),
                ));
            }
        }
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let namespace = nonempty(k.namespace);
    if let Some(ns) = &namespace {
        check_k8s_name("kubernetes.namespace", ns)?;
    }
    // Absent: the default name; empty: discovery off.
    let peers_service = match k.peers_service {
        None => Some(crate::k8s::DEFAULT_PEERS_SERVICE.to_string()),
        Some(s) if s.is_empty() => None,
        Some(s) => {
            check_k8s_name("kubernetes.peers_service", &s)?;
            Some(s)
        }
    };
    let pod_ip = match nonempty(k.pod_ip) {
        None => None,
        Some(a) => Some(
            a.parse::<Ipv4Addr>()
                .map_err(|_| err("kubernetes.pod_ip", format!("{a:?} is not an IPv4 address")))?,
        ),
    };
    let lease = match k.election.as_deref().unwrap_or("vrrp") {
        "vrrp" => {
            if k.lease.is_some() {
                return Err(err(
                    "kubernetes.lease",
                    "only used with election = \"lease\"",
                ));
            }
            None
        }
        "lease" => {
            let l = k.lease.unwrap_or_default();
            let name = l.name.unwrap_or_else(|| "podlb".to_string());
            check_k8s_name("kubernetes.lease.name", &name)?;
            let duration = l.duration_ms.unwrap_or(4000);
            if !(1000..=600_000).contains(&duration) {
                return Err(err(
                    "kubernetes.lease.duration_ms",
                    format!("{duration} is out of range: use 1000..=600000"),
                ));
            }
            let retry = l.retry_ms.unwrap_or(duration / 4);
            if retry < 100 || retry * 2 > duration {
                return Err(err(
                    "kubernetes.lease.retry_ms",
                    format!(
                        "{retry} must be at least 100 and at most half of duration_ms ({duration})"
                    ),
                ));
            }
            let garp_count = l.garp_count.unwrap_or(3);
            if !(1..=100).contains(&garp_count) {
                return Err(err(
                    "kubernetes.lease.garp_count",
                    format!("{garp_count} is out of range: use 1..=100"),
                ));
            }
            Some(LeaseSettings {
                name,
                duration: Duration::from_millis(duration),
                retry: Duration::from_millis(retry),
                garp_count,
                sync_key: l
                    .sync_key_file
                    .as_deref()
                    .map(|f| SyncKey::load("kubernetes.lease.sync_key_file", f))
                    .transpose()?,
                on_master: absolute_hook("kubernetes.lease.on_master", l.on_master)?,
                on_backup: absolute_hook("kubernetes.lease.on_backup", l.on_backup)?,
                on_fault: absolute_hook("kubernetes.lease.on_fault", l.on_fault)?,
            })
        }
        other => {
            return Err(err(
                "kubernetes.election",
                format!("{other:?} is not an election: use \"vrrp\" or \"lease\""),
            ))
        }
    };
    Ok(KubernetesSettings {
        kubeconfig: nonempty(k.kubeconfig).map(PathBuf::from),
        reconcile,
        namespace,
        peers_service,
        pod_ip,
        identity: nonempty(k.identity),
        lease,
        vip_pool_crd: k.vip_pool_crd,
    })
}

fn validate_cloud(c: RawCloud) -> Result<CloudSettings, ConfigError> {
    let ms = c.reconcile_interval_ms.unwrap_or(5000);
    if !(500..=600_000).contains(&ms) {
        return Err(err(
            "cloud.reconcile_interval_ms",
            format!("{ms} is out of range: use 500..=600000"),
        ));
    }
    let nonempty = |key: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.trim().is_empty() => Err(err(format!("cloud.{key}"), "must not be empty")),
            other => Ok(other),
        }
    };
    let provider = match c.provider.as_deref() {
        None => {
            return Err(err(
                "cloud.provider",
                "missing: set provider = \"aws\" or \"exec\"",
            ))
        }
        Some("aws") => {
            if c.command.is_some() {
                return Err(err("cloud.command", "only for provider = \"exec\""));
            }
            let eni = nonempty("network_interface_id", c.network_interface_id)?;
            if let Some(eni) = eni.as_ref().filter(|e| !e.starts_with("eni-")) {
                return Err(err(
                    "cloud.network_interface_id",
                    format!("{eni:?} is not an ENI id like eni-0123456789abcdef0"),
                ));
            }
            let region = match nonempty("region", c.region)? {
                Some(r) => r,
                None => crate::cloud::aws::region_from_env().ok_or_else(|| {
                    err(
                        "cloud.region",
                        "missing: set region = \"us-east-1\" (or AWS_REGION in the environment)",
                    )
                })?,
            };
            if !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err(
                    "cloud.region",
                    format!("{region:?} is not a region name like us-east-1"),
                ));
            }
            let endpoint_url = nonempty("endpoint_url", c.endpoint_url)?
                .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
            crate::cloud::http::Endpoint::parse(&endpoint_url)
                .map_err(|e| err("cloud.endpoint_url", e))?;
            let allocation_id = nonempty("allocation_id", c.allocation_id)?;
            if let Some(a) = &allocation_id {
                if !a.starts_with("eipalloc-") {
                    return Err(err(
                        "cloud.allocation_id",
                        format!("{a:?} is not an allocation id like eipalloc-0123456789abcdef0"),
                    ));
                }
            }
            let private_ip = match c.private_ip {
                None => None,
                Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                    err("cloud.private_ip", format!("{s:?} is not an IPv4 address"))
                })?),
            };
            CloudProvider::Aws(AwsSettings {
                endpoint_url,
                region,
                network_interface_id: eni,
                allocation_id,
                private_ip,
            })
        }
        Some("exec") => {
            for (key, set) in [
                ("endpoint_url", c.endpoint_url.is_some()),
                ("region", c.region.is_some()),
                ("network_interface_id", c.network_interface_id.is_some()),
                ("allocation_id", c.allocation_id.is_some()),
                ("private_ip", c.private_ip.is_some()),
            ] {
                if set {
                    return Err(err(format!("cloud.{key}"), "only for provider = \"aws\""));
                }
            }
            let command = c.command.unwrap_or_default();
            match command.first() {
                None => {
                    return Err(err(
                        "cloud.command",
                        "missing: set command = [\"/usr/local/bin/move-vip\", ...] with provider = \"exec\"",
                    ))
                }
                Some(p) if !p.starts_with('/') => {
                    return Err(err(
                        "cloud.command",
                        format!("{p:?} must be an absolute path"),
                    ))
                }
                Some(_) => {}
            }
            CloudProvider::Exec { command }
        }
        Some(other) => {
            return Err(err(
                "cloud.provider",
                format!("{other:?} is not a provider: use \"aws\" or \"exec\""),
            ))
        }
    };
    Ok(CloudSettings {
        provider,
        reconcile_interval: Duration::from_millis(ms),
    })
}

fn validate_vrrp(v: RawVrrp) -> Result<VrrpSettings, ConfigError> {
    if !(1..=255).contains(&v.vrid) {
        return Err(err(
            "vrrp.vrid",
            format!("{} is out of range: use 1..=255 (RFC 9568 §5.2.3)", v.vrid),
        ));
    }
    let priority = v.priority.unwrap_or(100);
    if !(1..=255).contains(&priority) {
        return Err(err(
            "vrrp.priority",
            format!("{priority} is out of range: use 1..=254, or 255 for the address owner (RFC 9568 §5.2.4)"),
        ));
    }
    let interval = v.advert_interval_ms.unwrap_or(1000);
    // The field is 12 bits of centiseconds (RFC 9568 §5.2.7): 10 ms .. 40.95 s.
    if !(10..=40_950).contains(&interval) || !interval.is_multiple_of(10) {
        return Err(err(
            "vrrp.advert_interval_ms",
            format!("{interval} must be a multiple of 10 between 10 and 40950 (centiseconds on the wire)"),
        ));
    }
    let mut peers = Vec::new();
    for (i, p) in v.unicast_peers.iter().enumerate() {
        let ip: Ipv4Addr = p.parse().map_err(|_| {
            err(
                format!("vrrp.unicast_peers[{i}]"),
                format!("{p:?} is not an IPv4 address"),
            )
        })?;
        if ip.is_multicast() || ip.is_unspecified() || ip.is_broadcast() {
            return Err(err(
                format!("vrrp.unicast_peers[{i}]"),
                format!("{ip} cannot be a peer"),
            ));
        }
        if peers.contains(&ip) {
            return Err(err(
                format!("vrrp.unicast_peers[{i}]"),
                format!("{ip} is listed twice"),
            ));
        }
        peers.push(ip);
    }
    let address = match v.address {
        None => None,
        Some(a) => Some(
            a.parse::<Ipv4Addr>()
                .map_err(|_| err("vrrp.address", format!("{a:?} is not an IPv4 address")))?,
        ),
    };
    // RFC 9568 §5.2.9: "For IPv6, the first address MUST be the IPv6
    // link-local address associated with the Virtual Router."
    let link_local_v6 = match v.link_local_v6 {
        None => None,
        Some(a) => match a.parse::<std::net::Ipv6Addr>() {
            Ok(ip) if ip.is_unicast_link_local() => Some(ip),
            _ => {
                return Err(err(
                    "vrrp.link_local_v6",
                    format!("{a:?} is not an IPv6 link-local address (fe80::/10, RFC 9568 §5.2.9)"),
                ))
            }
        },
    };
    let sync_port = v.sync_port.unwrap_or(8899);
    if !(1..=65535).contains(&sync_port) {
        return Err(err(
            "vrrp.sync_port",
            format!("{sync_port} is out of range: use 1..=65535"),
        ));
    }
    let garp_count = v.garp_count.unwrap_or(3);
    if !(1..=100).contains(&garp_count) {
        return Err(err(
            "vrrp.garp_count",
            format!("{garp_count} is out of range: use 1..=100"),
        ));
    }
    let garp_refresh = v.garp_refresh_s.unwrap_or(0);
    if garp_refresh > 86_400 {
        return Err(err(
            "vrrp.garp_refresh_s",
            format!("{garp_refresh} is out of range: use 0 (off) ..=86400"),
        ));
    }
    let drain = v.drain_ms.unwrap_or(2000);
    if drain > 600_000 {
        return Err(err(
            "vrrp.drain_ms",
            format!("{drain} is out of range: use 0..=600000"),
        ));
    }
    let hook = |key: &str, h: Option<String>| -> Result<Option<String>, ConfigError> {
        match h {
            Some(p) if !p.starts_with('/') => Err(err(
                format!("vrrp.{key}"),
                format!("{p:?} must be an absolute path"),
            )),
            other => Ok(other),
        }
    };
    Ok(VrrpSettings {
        vrid: v.vrid as u8,
        priority: priority as u8,
        advert_interval: Duration::from_millis(interval),
        preempt: v.preempt.unwrap_or(true),
        preempt_delay: Duration::from_millis(v.preempt_delay_ms.unwrap_or(0).min(600_000)),
        accept_mode: v.accept_mode.unwrap_or(true),
        check_ttl: v.check_ttl.unwrap_or(true),
        checksum: v.checksum.unwrap_or(VrrpChecksum::PseudoHeader),
        unicast_peers: peers,
        address,
        link_local_v6,
        sync_port: sync_port as u16,
        sync_key: v
            .sync_key_file
            .as_deref()
            .map(|f| SyncKey::load("vrrp.sync_key_file", f))
            .transpose()?,
        garp_count,
        garp_refresh: Duration::from_secs(garp_refresh),
        garp_unicast_clients: v.garp_unicast_clients.unwrap_or(false),
        drain: Duration::from_millis(drain),
        track_interface_weight: v.track_interface_weight.unwrap_or(50),
        track_backends_weight: v.track_backends_weight.unwrap_or(50),
        on_master: hook("on_master", v.on_master)?,
        on_backup: hook("on_backup", v.on_backup)?,
        on_fault: hook("on_fault", v.on_fault)?,
    })
}

fn check_ifname(key: &str, name: &str) -> Result<(), ConfigError> {
    // IFNAMSIZ is 16 including the NUL.
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(err(
            key,
            format!("{name:?} is not a valid interface name (1-15 characters, no '/' or spaces)"),
        ));
    }
    Ok(())
}

fn validate_services(raw: Vec<RawService>) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut listeners = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("service[{i}].{k}");
        if s.name.is_empty()
            || s.name.len() > 63
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(err(
                key("name"),
                format!("{:?} must be 1-63 characters of [A-Za-z0-9-_.]", s.name),
            ));
        }
        if !names.insert(s.name.clone()) {
            return Err(err(
                key("name"),
                format!(
                    "{:?} is used by another service; names must be unique",
                    s.name
                ),
            ));
        }
        let vip = parse_vip(&s.vip).map_err(|m| err(key("vip"), m))?;
        if !(1..=65535).contains(&s.port) {
            return Err(err(
                key("port"),
                format!("{} is out of range: use 1..=65535", s.port),
            ));
        }
        let port = s.port as u16;
        let protocol: Protocol = match s.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(p) => p.parse().map_err(|m| err(key("protocol"), m))?,
        };
        if !listeners.insert((vip, port, protocol)) {
            return Err(err(
                key("port"),
                format!(
                    "{vip}:{port}/{} is already served by another service",
                    protocol.as_str()
                ),
            ));
        }
        let mode = s.mode.unwrap_or(Mode::Nat);
        if vip.is_ipv6() && mode == Mode::Vxlan {
            return Err(err(
                key("mode"),
                "mode vxlan carries IPv4 services only so far; use nat or dsr for an IPv6 VIP",
            ));
        }
        if s.backends.len() > MAX_BACKENDS {
            return Err(err(
                key("backends"),
                format!("{} backends; at most {MAX_BACKENDS}", s.backends.len()),
            ));
        }
        let mut seen = HashSet::new();
        let mut backends = Vec::with_capacity(s.backends.len());
        for (j, b) in s.backends.into_iter().enumerate() {
            let bkey = format!("service[{i}].backends[{j}]");
            let (addr_s, weight, vtep_s, vtep_mac_s) = match b {
                RawBackend::Addr(a) => (a, 1, None, None),
                RawBackend::Table {
                    addr,
                    weight,
                    vtep,
                    vtep_mac,
                } => (addr, weight, vtep, vtep_mac),
            };
            let addr = parse_backend(&addr_s, vip).map_err(|m| err(&bkey, m))?;
            if addr.ip() == vip {
                return Err(err(&bkey, format!("{addr} is the service's own VIP")));
            }
            if !(1..=1000).contains(&weight) {
                return Err(err(
                    format!("{bkey}.weight"),
                    format!("{weight} is out of range: use 1..=1000"),
                ));
            }
            if mode == Mode::Dsr && addr.port() != port {
                return Err(err(
                    &bkey,
                    format!("mode dsr cannot change ports: backend port {} must equal the service port {port}", addr.port()),
                ));
            }
            if !seen.insert(addr) {
                return Err(err(&bkey, format!("{addr} is listed twice")));
            }
            let (vtep, vtep_mac) = backend_vtep(mode, &bkey, vtep_s, vtep_mac_s)?;
            backends.push(BackendConfig {
                addr,
                weight: weight as u32,
                vtep,
                vtep_mac,
            });
        }
        let table_size = s.table_size.unwrap_or(maglev::DEFAULT_TABLE_SIZE);
        if !maglev::is_prime(table_size) || !(7..=maglev::MAX_TABLE_SIZE).contains(&table_size) {
            return Err(err(
                key("table_size"),
                format!(
                    "{table_size} must be a prime up to {}, e.g. 65537 or 655373",
                    maglev::MAX_TABLE_SIZE
                ),
            ));
        }
        if (table_size as usize) < backends.len() {
            return Err(err(
                key("table_size"),
                format!("{table_size} is smaller than the number of backends"),
            ));
        }
        let (vxlan_port, vni) = match mode {
            Mode::Vxlan => {
                let p = s.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT as i64);
                if !(1..=65535).contains(&p) {
                    return Err(err(
                        key("vxlan_port"),
                        format!("{p} is out of range: use 1..=65535 (8472 for flannel, 4789 IANA)"),
                    ));
                }
                let v = s.vni.unwrap_or(DEFAULT_VNI as i64);
                if !(0..=podlb_wire::vxlan::MAX_VNI as i64).contains(&v) {
                    return Err(err(
                        key("vni"),
                        format!("{v} is out of range: a VNI has 24 bits (0..=16777215)"),
                    ));
                }
                (p as u16, v as u32)
            }
            _ => {
                for (k, set) in [
                    ("vxlan_port", s.vxlan_port.is_some()),
                    ("vni", s.vni.is_some()),
                ] {
                    if set {
                        return Err(err(key(k), "only for mode = \"vxlan\""));
                    }
                }
                (DEFAULT_VXLAN_PORT, DEFAULT_VNI)
            }
        };
        let mss_clamp = match (s.mss_clamp, mode) {
            (Some(m), _) if !(88..=65495).contains(&m) => {
                return Err(err(
                    key("mss_clamp"),
                    format!(
                        "{m} is out of range: use 88..=65495 (1410 for VXLAN over a 1500-byte MTU)"
                    ),
                ))
            }
            (Some(m), _) => Some(m as u16),
            (None, Mode::Vxlan) => Some(DEFAULT_VXLAN_MSS),
            (None, _) => None,
        };
        let mut source_ranges = Vec::with_capacity(s.source_ranges.len());
        for (j, r) in s.source_ranges.iter().enumerate() {
            let p: Prefix = r
                .trim()
                .parse()
                .map_err(|m| err(key(&format!("source_ranges[{j}]")), m))?;
            source_ranges.push(p);
        }
        let affinity = match s.affinity.as_deref() {
            None => Affinity::None,
            Some(a) => a.parse().map_err(|m| err(key("affinity"), m))?,
        };
        let udp_hash = match (s.udp_hash.as_deref(), protocol) {
            (None, _) => UdpHash::FiveTuple,
            (Some(h), Protocol::Udp) => h.parse().map_err(|m| err(key("udp_hash"), m))?,
            (Some(_), Protocol::Tcp) => {
                return Err(err(key("udp_hash"), "only for protocol = \"udp\""))
            }
        };
        if protocol == Protocol::Udp && s.mss_clamp.is_some() {
            return Err(err(key("mss_clamp"), "only for protocol = \"tcp\""));
        }
        let kind_given = s.health_check.as_ref().is_some_and(|h| h.kind.is_some());
        let health_check = s
            .health_check
            .map(|h| parse_health_check(h, &key("health_check")))
            .transpose()?
            .flatten();
        if let Some(c) = &health_check {
            check_fits(c, protocol, kind_given, &key("health_check.kind"))?;
        }
        out.push(ServiceConfig {
            name: s.name,
            vip,
            port,
            protocol,
            mode,
            backends,
            table_size,
            vxlan_port,
            vni,
            mss_clamp,
            source_ranges,
            affinity,
            udp_hash,
            health_check,
        });
    }
    Ok(out)
}

/// Refuses a check of another protocol's backends than the service's
/// (`key` names the check's `kind`; `kind_given`: the kind was written
/// rather than defaulted to tcp).
fn check_fits(
    check: &HealthCheck,
    protocol: Protocol,
    kind_given: bool,
    key: &str,
) -> Result<(), ConfigError> {
    if check.kind.protocol() == protocol {
        return Ok(());
    }
    let kinds = match protocol {
        Protocol::Tcp => "\"tcp\", \"http\"",
        Protocol::Udp => "\"udp\", \"dns\"",
    };
    let kind = check.kind.as_str();
    let what = if kind_given {
        format!(
            "{kind:?} checks {} backends",
            check.kind.protocol().as_str().to_uppercase()
        )
    } else {
        format!("the default kind {kind:?} checks TCP backends")
    };
    Err(err(
        key,
        format!(
            "{what}; a protocol = \"{}\" service needs kind {kinds} or \"none\"",
            protocol.as_str()
        ),
    ))
}

/// The `vtep` and `vtep_mac` of a backend: both required in mode vxlan,
/// rejected otherwise.
fn backend_vtep(
    mode: Mode,
    bkey: &str,
    vtep: Option<String>,
    vtep_mac: Option<String>,
) -> Result<(Option<Ipv4Addr>, Option<MacAddr>), ConfigError> {
    if mode != Mode::Vxlan {
        for (k, v) in [("vtep", &vtep), ("vtep_mac", &vtep_mac)] {
            if v.is_some() {
                return Err(err(format!("{bkey}.{k}"), "only for mode = \"vxlan\""));
            }
        }
        return Ok((None, None));
    }
    let Some(v) = vtep else {
        return Err(err(
            format!("{bkey}.vtep"),
            "required in mode vxlan: the address of the backend's node (its VTEP)",
        ));
    };
    let ip: Ipv4Addr = v.parse().map_err(|_| {
        err(
            format!("{bkey}.vtep"),
            format!("{v:?} is not an IPv4 address"),
        )
    })?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(err(
            format!("{bkey}.vtep"),
            format!("{ip} cannot be a VTEP"),
        ));
    }
    let Some(m) = vtep_mac else {
        return Err(err(
            format!("{bkey}.vtep_mac"),
            "required in mode vxlan: the MAC of the node's VXLAN device",
        ));
    };
    let mac: MacAddr = m.parse().map_err(|_| {
        err(
            format!("{bkey}.vtep_mac"),
            format!("{m:?} is not a MAC address like 02:00:00:00:01:02"),
        )
    })?;
    if !mac.is_unicast() || mac == MacAddr::ZERO {
        return Err(err(
            format!("{bkey}.vtep_mac"),
            format!("{mac} is not a unicast MAC"),
        ));
    }
    Ok((Some(ip), Some(mac)))
}

/// Validates a health-check table whose dotted path is `key` (e.g.
/// `service[0].health_check`); errors name `key.<field>`. `Ok(None)` for
/// `kind = "none"`. Missing keys take the defaults of
/// [`crate::health`]; `kind` defaults to `"tcp"`. Whether the kind suits
/// the service's protocol is the caller's to check
/// ([`CheckKind::protocol`]).
pub fn parse_health_check(
    raw: RawHealthCheck,
    key: &str,
) -> Result<Option<HealthCheck>, ConfigError> {
    let k = |f: &str| format!("{key}.{f}");
    let kind = raw.kind.as_deref().unwrap_or("tcp");
    match kind {
        "none" => return Ok(None),
        "tcp" | "http" | "udp" | "dns" => {}
        other => {
            return Err(err(
                k("kind"),
                format!("{other:?} is not a check kind: use \"tcp\", \"http\", \"udp\", \"dns\" or \"none\""),
            ))
        }
    }
    // Each kind's own keys, refused in the others.
    for (name, set, owner) in [
        ("path", raw.path.is_some(), "http"),
        ("expect_status", raw.expect_status.is_some(), "http"),
        ("send", raw.send.is_some(), "udp"),
        ("send_hex", raw.send_hex.is_some(), "udp"),
        ("expect", raw.expect.is_some(), "udp"),
        ("expect_hex", raw.expect_hex.is_some(), "udp"),
        ("name", raw.name.is_some(), "dns"),
    ] {
        if set && owner != kind {
            return Err(err(k(name), format!("only for kind = \"{owner}\"")));
        }
    }
    let check_kind = match kind {
        "http" => {
            let path = raw.path.unwrap_or_else(|| health::DEFAULT_PATH.to_string());
            health::check_path(&path).map_err(|e| err(k("path"), e))?;
            let expect_status = raw
                .expect_status
                .unwrap_or(health::DEFAULT_EXPECT_STATUS as i64);
            if !(100..=599).contains(&expect_status) {
                return Err(err(
                    k("expect_status"),
                    format!("{expect_status} is out of range: use 100..=599"),
                ));
            }
            CheckKind::Http {
                path,
                expect_status: expect_status as u16,
            }
        }
        "udp" => {
            let send = udp_payload(key, "send", raw.send, raw.send_hex)?.ok_or_else(|| {
                err(
                    k("send"),
                    "required for kind = \"udp\": the datagram to send, as text (or as hex in send_hex)",
                )
            })?;
            let expect = udp_payload(key, "expect", raw.expect, raw.expect_hex)?;
            CheckKind::Udp { send, expect }
        }
        "dns" => {
            let name = raw.name.ok_or_else(|| {
                err(
                    k("name"),
                    "required for kind = \"dns\": the name to query (type A), e.g. \"example.com\"",
                )
            })?;
            health::dns::check_name(&name).map_err(|e| err(k("name"), e))?;
            CheckKind::Dns { name }
        }
        _ => CheckKind::Tcp,
    };
    let port = match raw.port {
        None => None,
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => {
            return Err(err(
                k("port"),
                format!("{p} is out of range: use 1..=65535"),
            ))
        }
    };
    let interval = raw
        .interval_ms
        .unwrap_or(health::DEFAULT_INTERVAL.as_millis() as i64);
    if !(10..=3_600_000).contains(&interval) {
        return Err(err(
            k("interval_ms"),
            format!("{interval} is out of range: use 10..=3600000"),
        ));
    }
    let timeout = raw
        .timeout_ms
        .unwrap_or((health::DEFAULT_TIMEOUT.as_millis() as i64).min(interval));
    if timeout < 1 || timeout > interval {
        return Err(err(
            k("timeout_ms"),
            format!("{timeout} is out of range: use 1..=interval_ms ({interval})"),
        ));
    }
    let count = |name: &str, v: Option<i64>, default: u32| -> Result<u32, ConfigError> {
        let v = v.unwrap_or(default as i64);
        if !(1..=100).contains(&v) {
            return Err(err(k(name), format!("{v} is out of range: use 1..=100")));
        }
        Ok(v as u32)
    };
    Ok(Some(HealthCheck {
        kind: check_kind,
        port,
        interval: Duration::from_millis(interval as u64),
        timeout: Duration::from_millis(timeout as u64),
        rise: count("rise", raw.rise, health::DEFAULT_RISE)?,
        fall: count("fall", raw.fall, health::DEFAULT_FALL)?,
    }))
}

/// A UDP check's payload `name` (`send` or `expect`), given as text in
/// `name` or as hex in `<name>_hex` (one of them): `None` if neither. An
/// `expect` may not be empty (leaving it out accepts any reply); either
/// is at most [`health::MAX_UDP_PAYLOAD`] bytes.
fn udp_payload(
    key: &str,
    name: &str,
    text: Option<String>,
    hex: Option<String>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let (field, bytes) = match (text, hex) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{key}.{name}_hex"),
                format!("give {name} or {name}_hex, not both"),
            ))
        }
        (Some(t), None) => (name.to_string(), t.into_bytes()),
        (None, Some(h)) => {
            let field = format!("{name}_hex");
            let b = parse_hex(&h).map_err(|e| err(format!("{key}.{field}"), e))?;
            (field, b)
        }
    };
    if bytes.len() > health::MAX_UDP_PAYLOAD {
        return Err(err(
            format!("{key}.{field}"),
            format!(
                "{} bytes; at most {} (one datagram in a 1500-byte frame)",
                bytes.len(),
                health::MAX_UDP_PAYLOAD
            ),
        ));
    }
    if name == "expect" && bytes.is_empty() {
        return Err(err(
            format!("{key}.{field}"),
            "empty: leave it out to accept any reply",
        ));
    }
    Ok(Some(bytes))
}

/// Bytes written as hex digits, two per byte; whitespace between them is
/// ignored (`"de ad be ef"`).
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(c) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} contains {c:?}: write bytes as pairs of hex digits, e.g. \"00ff\""
        ));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "{s:?} has an odd number of hex digits: two per byte"
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|p| {
            let d = |c: char| c.to_digit(16).unwrap_or(0) as u8;
            d(p[0]) << 4 | d(p[1])
        })
        .collect())
}

/// A service's `vip`: an IPv4 or IPv6 address a host may hold. The message
/// says what is wrong.
fn parse_vip(s: &str) -> Result<IpAddr, String> {
    let vip: IpAddr = s.trim().parse().map_err(|_| {
        format!("{s:?} is not an IP address; write it like \"198.18.0.100\" or \"2001:2::100\"")
    })?;
    let bad = match vip {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.is_unicast_link_local()
                || podlb_core::family::is_v4_mapped(a)
        }
    };
    if bad {
        return Err(format!(
            "{vip} cannot be a virtual IP (unspecified, loopback, multicast, broadcast, link-local or IPv4-mapped)"
        ));
    }
    Ok(vip)
}

/// A backend `addr`: `198.18.0.21:80` or `[2001:2::21]:80`, of the VIP's
/// family.
fn parse_backend(s: &str, vip: IpAddr) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.trim().parse().map_err(|_| {
        format!("{s:?} is not an address like \"198.18.0.21:80\" or \"[2001:2::21]:80\"")
    })?;
    let bad = match addr.ip() {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => {
            a.is_unspecified() || a.is_multicast() || podlb_core::family::is_v4_mapped(a)
        }
    };
    if bad || addr.port() == 0 {
        return Err(format!("{addr} cannot be a backend"));
    }
    if addr.is_ipv6() != vip.is_ipv6() {
        return Err(format!(
            "{addr} is not of the VIP's family ({vip}): podlb does not translate between IPv4 and IPv6; use a VIP of each family"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
interface = "eth0"
workers = 2
admin = "127.0.0.1:9100"
[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
mode = "nat"
backends = ["198.18.0.21:80", { addr = "198.18.0.22:80", weight = 3 }]
"#;

    #[test]
    fn parses_the_contract_example() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            c.attach,
            Attach::AfPacket {
                interface: "eth0".into()
            }
        );
        assert_eq!(c.workers, 2);
        assert_eq!(c.services[0].backends[1].weight, 3);
        assert_eq!(c.services[0].table_size, 65537);
        assert_eq!(c.flows.capacity, 1_000_000);
    }

    const VXLAN: &str = r#"
interface = "eth0"

[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
mode = "vxlan"
backends = [
  { addr = "198.19.10.2:80", vtep = "198.19.1.2", vtep_mac = "02:00:00:00:01:02" },
  { addr = "198.19.20.2:80", vtep = "198.19.1.3", vtep_mac = "02:00:00:00:01:03" },
]
"#;

    #[test]
    fn vxlan_service() {
        let c = Config::parse(VXLAN).unwrap();
        let s = &c.services[0];
        assert_eq!(s.mode, Mode::Vxlan);
        assert_eq!(s.mode.as_str(), "vxlan");
        assert_eq!((s.vxlan_port, s.vni, s.mss_clamp), (8472, 1, Some(1410)));
        assert_eq!(s.backends[1].vtep, Some(Ipv4Addr::new(198, 19, 1, 3)));
        assert_eq!(
            s.backends[1].vtep_mac,
            Some("02:00:00:00:01:03".parse().unwrap())
        );
        let c = Config::parse(&VXLAN.replace(
            "mode = \"vxlan\"",
            "mode = \"vxlan\"\nvxlan_port = 4789\nvni = 16777215\nmss_clamp = 1360",
        ))
        .unwrap();
        let s = &c.services[0];
        assert_eq!(
            (s.vxlan_port, s.vni, s.mss_clamp),
            (4789, 0xff_ffff, Some(1360))
        );
        // nat/dsr: no clamp unless set.
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.services[0].mss_clamp, None);
        assert_eq!(c.services[0].backends[0].vtep, None);
    }

    #[test]
    fn vxlan_errors_name_the_key() {
        assert_eq!(
            key_of(&VXLAN.replace(", vtep = \"198.19.1.3\"", "")),
            "service[0].backends[1].vtep"
        );
        assert_eq!(
            key_of(&VXLAN.replace(", vtep_mac = \"02:00:00:00:01:03\"", "")),
            "service[0].backends[1].vtep_mac"
        );
        assert_eq!(
            key_of(&VXLAN.replace("02:00:00:00:01:03", "01:00:00:00:01:03")),
            "service[0].backends[1].vtep_mac"
        );
        assert_eq!(
            key_of(&VXLAN.replace("198.19.1.3\"", "198.19.1\"")),
            "service[0].backends[1].vtep"
        );
        assert_eq!(
            key_of(&VXLAN.replace("mode = \"vxlan\"", "mode = \"vxlan\"\nvni = 16777216")),
            "service[0].vni"
        );
        assert_eq!(
            key_of(&VXLAN.replace("mode = \"vxlan\"", "mode = \"vxlan\"\nvxlan_port = 0")),
            "service[0].vxlan_port"
        );
        assert_eq!(
            key_of(&VXLAN.replace("mode = \"vxlan\"", "mode = \"vxlan\"\nmss_clamp = 10")),
            "service[0].mss_clamp"
        );
        // VTEPs only in mode vxlan.
        assert_eq!(
            key_of(&VXLAN.replace("mode = \"vxlan\"", "mode = \"nat\"")),
            "service[0].backends[0].vtep"
        );
        assert_eq!(
            key_of(&GOOD.replace("mode = \"nat\"", "mode = \"nat\"\nvni = 2")),
            "service[0].vni"
        );
    }

    #[test]
    fn tap_table() {
        let c = Config::parse("[tap]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:09\"\n").unwrap();
        assert!(matches!(c.attach, Attach::Tap { ref name, .. } if name == "podlb0"));
    }

    fn key_of(text: &str) -> String {
        Config::parse(text).unwrap_err().key
    }

    #[test]
    fn udp_services_share_vip_and_port_with_tcp() {
        let dns = |extra: &str| {
            format!(
                "{GOOD}[[service]]\nname = \"dns-udp\"\nvip = \"198.18.0.100\"\nport = 80\nprotocol = \"udp\"\nbackends = [\"198.18.0.21:53\"]\n{extra}"
            )
        };
        let c = Config::parse(&dns("udp_hash = \"src_ip\"\n")).unwrap();
        let (t, u) = (&c.services[0], &c.services[1]);
        assert_eq!((t.protocol, u.protocol), (Protocol::Tcp, Protocol::Udp));
        assert_eq!(u.udp_hash, UdpHash::SrcIp);
        assert!(u.hashes_client_only() && !t.hashes_client_only());
        assert_eq!(c.flows.udp_unanswered_timeout, Duration::from_secs(30));
        assert_eq!(c.flows.udp_answered_timeout, Duration::from_secs(120));
        assert!(c.flows.icmp_errors);
        // The same port and protocol twice is a conflict; the key says where.
        let twice =
            dns("").replace("dns-udp", "x") + &dns("").replace(GOOD, "").replace("dns-udp", "y");
        assert_eq!(key_of(&twice), "service[2].port");
        assert_eq!(
            key_of(&dns("").replace("\"udp\"", "\"sctp\"")),
            "service[1].protocol"
        );
        assert_eq!(
            key_of(&GOOD.replace("port = 80", "port = 80\nudp_hash = \"src_ip\"")),
            "service[0].udp_hash"
        );
        assert_eq!(
            key_of(&dns("udp_hash = \"ports\"\n")),
            "service[1].udp_hash"
        );
        assert_eq!(key_of(&dns("mss_clamp = 1400\n")), "service[1].mss_clamp");
        let flows = format!("{GOOD}[flows]\nudp_unanswered_timeout_s = 5\nudp_answered_timeout_s = 600\nicmp_errors = false\n");
        let c = Config::parse(&flows).unwrap();
        assert_eq!(c.flows.udp_unanswered_timeout, Duration::from_secs(5));
        assert_eq!(c.flows.udp_answered_timeout, Duration::from_secs(600));
        assert!(!c.flows.icmp_errors);
        assert_eq!(
            key_of(&format!("{GOOD}[flows]\nudp_answered_timeout_s = 0\n")),
            "flows.udp_answered_timeout_s"
        );
    }

    #[test]
    fn admin_listeners_and_probes() {
        let c = Config::parse("interface = \"eth0\"\n").unwrap();
        assert_eq!(c.admin, DEFAULT_ADMIN.parse().unwrap());
        assert_eq!(c.admin_public, None);
        assert!(!c.admin_public_reports);
        assert!(c.watch_config);
        assert_eq!(
            c.probes.liveness_stall,
            Duration::from_secs(DEFAULT_LIVENESS_STALL_S)
        );
        let c = Config::parse(
            "interface = \"eth0\"\nadmin_public = \"0.0.0.0:9101\"\nadmin_public_reports = true\nwatch_config = false\n[probes]\nliveness_stall_s = 3\n",
        )
        .unwrap();
        assert_eq!(c.admin_public, Some("0.0.0.0:9101".parse().unwrap()));
        assert!(c.admin_public_reports);
        assert!(!c.watch_config);
        assert_eq!(c.probes.liveness_stall, Duration::from_secs(3));
        for (text, key) in [
            ("admin_public = \"nope\"", "admin_public"),
            ("admin_public = \"0.0.0.0:9100\"", "admin_public"),
            ("admin_public = \"127.0.0.1:9100\"", "admin_public"),
            ("admin_public_reports = true", "admin_public_reports"),
            ("[probes]\nliveness_stall_s = 0", "probes.liveness_stall_s"),
            (
                "[probes]\nliveness_stall_s = 3601",
                "probes.liveness_stall_s",
            ),
        ] {
            assert_eq!(
                key_of(&format!("interface = \"eth0\"\n{text}\n")),
                key,
                "{text}"
            );
        }
        // Another address on the same port is fine.
        let c =
            Config::parse("interface = \"eth0\"\nadmin_public = \"198.18.0.2:9100\"\n").unwrap();
        assert_eq!(c.admin_public.unwrap().port(), 9100);
    }

    #[test]
    fn io_backend() {
        assert_eq!(
            Config::parse("interface = \"eth0\"\n").unwrap().io.backend,
            IoBackend::AfPacket
        );
        let c = Config::parse("interface = \"eth0\"\n[io]\nbackend = \"af_xdp\"\n").unwrap();
        assert_eq!(c.io.backend, IoBackend::AfXdp);
        let e = Config::parse("[tap]\nbridge = \"br0\"\n[io]\nbackend = \"af_xdp\"\n").unwrap_err();
        assert_eq!(e.key, "io.backend");
        assert!(e.message.contains("TAP"), "{}", e.message);
        let e = Config::parse("interface = \"eth0\"\n[io]\nbackend = \"xdp\"\n").unwrap_err();
        assert!(e.to_string().contains("af_xdp"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            key_of(&GOOD.replace("198.18.0.100", "198.18.0.300")),
            "service[0].vip"
        );
        assert_eq!(
            key_of(&GOOD.replace("workers = 2", "workers = 0")),
            "workers"
        );
        assert_eq!(
            key_of(&GOOD.replace("port = 80", "port = 70000")),
            "service[0].port"
        );
        assert_eq!(
            key_of(&GOOD.replace("198.18.0.21:80", "198.18.0.21")),
            "service[0].backends[0]"
        );
        assert_eq!(
            key_of(&GOOD.replace("weight = 3", "weight = 0")),
            "service[0].backends[1].weight"
        );
        assert_eq!(
            key_of(
                &GOOD
                    .replace("\"nat\"\n", "\"dsr\"\n")
                    .replace(":80\", {", ":81\", {")
            ),
            "service[0].backends[0]"
        );
        assert_eq!(key_of("workers = 1"), "interface");
        assert_eq!(
            key_of(&format!("{GOOD}table_size = 65536\n")),
            "service[0].table_size"
        );
        let dup = format!("{GOOD}[[service]]\nname = \"web\"\nvip = \"198.18.0.101\"\nport = 80\n");
        assert_eq!(key_of(&dup), "service[1].name");
        let clash =
            format!("{GOOD}[[service]]\nname = \"web2\"\nvip = \"198.18.0.100\"\nport = 80\n");
        assert_eq!(key_of(&clash), "service[1].port");
    }

    #[test]
    fn vrrp_table() {
        let c = Config::parse(&format!("{GOOD}[vrrp]\nvrid = 51\npriority = 200\nadvert_interval_ms = 100\nunicast_peers = [\"198.18.0.3\"]\n")).unwrap();
        let v = c.vrrp.unwrap();
        assert_eq!(
            (v.vrid, v.priority, v.advert_interval),
            (51, 200, Duration::from_millis(100))
        );
        assert!(v.preempt);
        assert_eq!(v.unicast_peers, vec![Ipv4Addr::new(198, 18, 0, 3)]);
        assert_eq!(key_of(&format!("{GOOD}[vrrp]\nvrid = 0\n")), "vrrp.vrid");
        assert_eq!(
            key_of(&format!(
                "{GOOD}[vrrp]\nvrid = 1\nadvert_interval_ms = 15\n"
            )),
            "vrrp.advert_interval_ms"
        );
        assert_eq!(
            key_of(&format!(
                "{GOOD}[vrrp]\nvrid = 1\nunicast_peers = [\"x\"]\n"
            )),
            "vrrp.unicast_peers[0]"
        );
        assert_eq!(
            key_of(&format!("{GOOD}[vrrp]\nvrid = 1\non_master = \"rel\"\n")),
            "vrrp.on_master"
        );
        assert_eq!(
            key_of("[tap]\nbridge = \"br0\"\n[vrrp]\nvrid = 1\n"),
            "vrrp.address"
        );
        // The IPv6 instance's link-local address: fe80::/10 only.
        assert_eq!(v.link_local_v6, None);
        let c = Config::parse(&format!(
            "{GOOD}[vrrp]\nvrid = 1\nlink_local_v6 = \"fe80::1\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.vrrp.unwrap().link_local_v6,
            Some("fe80::1".parse().unwrap())
        );
        for bad in ["2001:2::1", "ff02::12", "198.18.0.1", "x"] {
            assert_eq!(
                key_of(&format!(
                    "{GOOD}[vrrp]\nvrid = 1\nlink_local_v6 = \"{bad}\"\n"
                )),
                "vrrp.link_local_v6",
                "{bad}"
            );
        }
        // GARP refresh: off unless asked for; bounded.
        assert_eq!(v.garp_refresh, Duration::ZERO);
        assert!(!v.garp_unicast_clients);
        let c = Config::parse(&format!(
            "{GOOD}[vrrp]\nvrid = 1\ngarp_refresh_s = 30\ngarp_unicast_clients = true\n"
        ))
        .unwrap();
        let v = c.vrrp.unwrap();
        assert_eq!(v.garp_refresh, Duration::from_secs(30));
        assert!(v.garp_unicast_clients);
        assert_eq!(
            key_of(&format!(
                "{GOOD}[vrrp]\nvrid = 1\ngarp_refresh_s = 100000\n"
            )),
            "vrrp.garp_refresh_s"
        );
    }

    fn hc(table: &str) -> Result<Option<HealthCheck>, ConfigError> {
        Config::parse(&format!("{GOOD}health_check = {{ {table} }}\n"))
            .map(|c| c.services[0].health_check.clone())
    }

    #[test]
    fn health_check_table() {
        assert_eq!(Config::parse(GOOD).unwrap().services[0].health_check, None);
        assert_eq!(hc("kind = \"none\""), Ok(None));
        assert_eq!(
            hc(""),
            Ok(Some(HealthCheck::default())),
            "tcp with defaults"
        );
        let h = hc("kind = \"http\", path = \"/healthz\", expect_status = 204, port = 8081, interval_ms = 200, timeout_ms = 100, rise = 1, fall = 5")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            HealthCheck {
                kind: CheckKind::Http {
                    path: "/healthz".into(),
                    expect_status: 204
                },
                port: Some(8081),
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(100),
                rise: 1,
                fall: 5,
            }
        );
        let h = hc("kind = \"http\"").unwrap().unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/".into(),
                expect_status: 200
            }
        );
        // A short interval lowers the default timeout with it.
        let h = hc("interval_ms = 100").unwrap().unwrap();
        assert_eq!(h.timeout, Duration::from_millis(100));
        // The table form.
        let c = Config::parse(&format!(
            "{GOOD}[service.health_check]\nkind = \"http\"\npath = \"/ready\"\n"
        ))
        .unwrap();
        assert!(
            matches!(&c.services[0].health_check, Some(HealthCheck { kind: CheckKind::Http { path, .. }, .. }) if path == "/ready")
        );
    }

    #[test]
    fn health_check_errors_name_the_key() {
        let k = |t: &str| hc(t).unwrap_err().key;
        let p = "service[0].health_check";
        assert_eq!(k("kind = \"icmp\""), format!("{p}.kind"));
        assert_eq!(
            k("kind = \"udp\", send = \"a\""),
            format!("{p}.kind"),
            "a TCP service"
        );
        assert_eq!(
            k("kind = \"http\", path = \"healthz\""),
            format!("{p}.path")
        );
        assert_eq!(k("kind = \"http\", path = \"/a b\""), format!("{p}.path"));
        assert_eq!(
            k("kind = \"http\", path = \"/a\\r\\nX: y\""),
            format!("{p}.path")
        );
        assert_eq!(k("path = \"/\""), format!("{p}.path"), "tcp has no path");
        assert_eq!(k("expect_status = 200"), format!("{p}.expect_status"));
        assert_eq!(
            k("kind = \"http\", expect_status = 99"),
            format!("{p}.expect_status")
        );
        assert_eq!(
            k("kind = \"http\", expect_status = 600"),
            format!("{p}.expect_status")
        );
        assert_eq!(k("port = 0"), format!("{p}.port"));
        assert_eq!(k("port = 65536"), format!("{p}.port"));
        assert_eq!(k("interval_ms = 9"), format!("{p}.interval_ms"));
        assert_eq!(k("timeout_ms = 0"), format!("{p}.timeout_ms"));
        assert_eq!(
            k("interval_ms = 100, timeout_ms = 101"),
            format!("{p}.timeout_ms")
        );
        assert_eq!(k("rise = 0"), format!("{p}.rise"));
        assert_eq!(k("rise = 101"), format!("{p}.rise"));
        assert_eq!(k("fall = 0"), format!("{p}.fall"));
        assert_eq!(k("fall = 101"), format!("{p}.fall"));
        let e = hc("intervall_ms = 100").unwrap_err();
        assert!(e.to_string().contains("intervall_ms"), "{e}");
        // The second service's key is named.
        let two = format!("{GOOD}[[service]]\nname = \"b\"\nvip = \"198.18.0.101\"\nport = 80\nhealth_check = {{ rise = 0 }}\n");
        assert_eq!(key_of(&two), "service[1].health_check.rise");
    }

    /// The health check of a `protocol = "udp"` service.
    fn udp_hc(table: &str) -> Result<Option<HealthCheck>, ConfigError> {
        Config::parse(&format!(
            "{GOOD}protocol = \"udp\"\nhealth_check = {{ {table} }}\n"
        ))
        .map(|c| c.services[0].health_check.clone())
    }

    #[test]
    fn udp_and_dns_checks() {
        let kind = |t: &str| udp_hc(t).unwrap().unwrap().kind;
        assert_eq!(
            kind("kind = \"udp\", send = \"ping\""),
            CheckKind::Udp {
                send: b"ping".to_vec(),
                expect: None
            }
        );
        assert_eq!(
            kind("kind = \"udp\", send = \"ping\", expect = \"pong\""),
            CheckKind::Udp {
                send: b"ping".to_vec(),
                expect: Some(b"pong".to_vec())
            }
        );
        assert_eq!(
            kind("kind = \"udp\", send_hex = \"00 ff\\tDE\\nad\", expect_hex = \"0a\""),
            CheckKind::Udp {
                send: vec![0x00, 0xff, 0xde, 0xad],
                expect: Some(vec![0x0a])
            }
        );
        assert_eq!(
            kind("kind = \"udp\", send = \"\""),
            CheckKind::Udp {
                send: Vec::new(),
                expect: None
            },
            "an empty datagram, if asked for"
        );
        assert_eq!(
            kind("kind = \"udp\", send = \"é\\u0000\""),
            CheckKind::Udp {
                send: vec![0xc3, 0xa9, 0],
                expect: None
            },
            "text goes out as UTF-8"
        );
        let max = "x".repeat(health::MAX_UDP_PAYLOAD);
        assert!(udp_hc(&format!("kind = \"udp\", send = \"{max}\"")).is_ok());
        let h = udp_hc("kind = \"dns\", name = \"example.com.\", port = 53, interval_ms = 200, timeout_ms = 100, rise = 1, fall = 5")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            HealthCheck {
                kind: CheckKind::Dns {
                    name: "example.com.".into()
                },
                port: Some(53),
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(100),
                rise: 1,
                fall: 5,
            }
        );
        assert_eq!(udp_hc("kind = \"none\""), Ok(None));
        // The table form.
        let c = Config::parse(&format!(
            "{GOOD}protocol = \"udp\"\n[service.health_check]\nkind = \"dns\"\nname = \"_ns.example\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.services[0].health_check.as_ref().map(|h| &h.kind),
            Some(&CheckKind::Dns {
                name: "_ns.example".into()
            })
        );
    }

    #[test]
    fn udp_and_dns_check_errors_name_the_key() {
        let p = "service[0].health_check";
        let err_of = |t: &str| udp_hc(t).unwrap_err();
        let cases: &[(&str, &str, &str)] = &[
            ("kind = \"udp\"", "send", "required for kind = \"udp\""),
            (
                "kind = \"udp\", send = \"a\", send_hex = \"61\"",
                "send_hex",
                "not both",
            ),
            (
                "kind = \"udp\", send = \"a\", expect = \"b\", expect_hex = \"62\"",
                "expect_hex",
                "not both",
            ),
            ("kind = \"udp\", send_hex = \"abc\"", "send_hex", "odd number"),
            ("kind = \"udp\", send_hex = \"0x00\"", "send_hex", "contains 'x'"),
            ("kind = \"udp\", send_hex = \"zz\"", "send_hex", "contains 'z'"),
            (
                "kind = \"udp\", send = \"a\", expect = \"\"",
                "expect",
                "leave it out",
            ),
            (
                "kind = \"udp\", send = \"a\", expect_hex = \" \"",
                "expect_hex",
                "leave it out",
            ),
            ("kind = \"udp\", send = \"a\", path = \"/\"", "path", "only for kind = \"http\""),
            (
                "kind = \"udp\", send = \"a\", expect_status = 200",
                "expect_status",
                "only for kind = \"http\"",
            ),
            ("kind = \"udp\", send = \"a\", name = \"x\"", "name", "only for kind = \"dns\""),
            ("kind = \"dns\"", "name", "required for kind = \"dns\""),
            ("kind = \"dns\", name = \"\"", "name", "empty"),
            ("kind = \"dns\", name = \"a..b\"", "name", "empty label"),
            ("kind = \"dns\", name = \"a b\"", "name", "contains ' '"),
            ("kind = \"dns\", name = \"x\", send = \"a\"", "send", "only for kind = \"udp\""),
            ("kind = \"dns\", name = \"x\", expect = \"a\"", "expect", "only for kind = \"udp\""),
            ("kind = \"dns\", name = \"x\", path = \"/\"", "path", "only for kind = \"http\""),
            ("kind = \"icmp\"", "kind", "not a check kind"),
            // A UDP service needs a UDP kind.
            ("kind = \"tcp\"", "kind", "\"tcp\" checks TCP backends; a protocol = \"udp\" service needs kind \"udp\", \"dns\" or \"none\""),
            ("kind = \"http\"", "kind", "\"http\" checks TCP backends"),
            ("interval_ms = 200", "kind", "the default kind \"tcp\" checks TCP backends"),
        ];
        for (table, field, says) in cases {
            let e = err_of(table);
            assert_eq!(e.key, format!("{p}.{field}"), "{table}");
            assert!(e.message.contains(says), "{table}: {e}");
        }
        let long = "x".repeat(health::MAX_UDP_PAYLOAD + 1);
        let e = err_of(&format!("kind = \"udp\", send = \"{long}\""));
        assert_eq!(e.key, format!("{p}.send"));
        assert!(e.message.contains("at most 1472"), "{e}");
        let e = err_of(&format!(
            "kind = \"udp\", send = \"a\", expect_hex = \"{}\"",
            "00".repeat(health::MAX_UDP_PAYLOAD + 1)
        ));
        assert_eq!(e.key, format!("{p}.expect_hex"));

        // And a TCP service refuses the UDP kinds; `send` is still checked
        // first against the kind.
        for (table, field, says) in [
            ("kind = \"udp\", send = \"a\"", "kind", "\"udp\" checks UDP backends; a protocol = \"tcp\" service needs kind \"tcp\", \"http\" or \"none\""),
            ("kind = \"dns\", name = \"example.com\"", "kind", "\"dns\" checks UDP backends"),
            ("send = \"a\"", "send", "only for kind = \"udp\""),
            ("kind = \"http\", name = \"a\"", "name", "only for kind = \"dns\""),
        ] {
            let e = hc(table).unwrap_err();
            assert_eq!(e.key, format!("{p}.{field}"), "{table}");
            assert!(e.message.contains(says), "{table}: {e}");
        }
    }

    #[test]
    fn kubernetes_default_check_is_for_tcp() {
        let k = |t: &str| {
            Config::parse(&format!(
                "{GOOD}[kubernetes]\nvip_pools = [\"198.18.0.200/30\"]\nhealth_check = {{ {t} }}\n"
            ))
        };
        for t in [
            "kind = \"udp\", send = \"a\"",
            "kind = \"dns\", name = \"a\"",
        ] {
            let e = k(t).unwrap_err();
            assert_eq!(e.key, "kubernetes.health_check.kind", "{t}");
            assert!(e.message.contains("annotation"), "{e}");
        }
        let c = k("kind = \"http\"").unwrap();
        assert!(matches!(
            c.kubernetes.unwrap().reconcile.health_check,
            Some(HealthCheck {
                kind: CheckKind::Http { .. },
                ..
            })
        ));
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex(""), Ok(Vec::new()));
        assert_eq!(parse_hex("00"), Ok(vec![0]));
        assert_eq!(parse_hex("DeadBEEF"), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(parse_hex(" 01 02\n03 "), Ok(vec![1, 2, 3]));
        for bad in ["0", "0g", "é0", "0x00", "01:02", "-1"] {
            assert!(parse_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deploy_example_parses() {
        let text = include_str!("../../../deploy/podlb.toml");
        let c = Config::parse(text).unwrap();
        // The commented UDP example parses too, with either check.
        let start = text.find("# [[service]]\n# name = \"dns\"").unwrap();
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let udp = Config::parse(&format!("{text}\n{block}\n")).unwrap();
        let dns = udp.services.iter().find(|s| s.name == "dns").unwrap();
        assert_eq!(dns.protocol, Protocol::Udp);
        assert!(matches!(
            dns.health_check.as_ref().map(|h| &h.kind),
            Some(CheckKind::Dns { .. })
        ));
        // The "or:" line instead of the dns check.
        let (before, or) = block.split_once("\n# or: ").unwrap();
        let before = before.rsplit_once('\n').unwrap().0;
        let udp = Config::parse(&format!("{text}\n{before}\n{or}\n")).unwrap();
        let dns = udp.services.iter().find(|s| s.name == "dns").unwrap();
        assert!(matches!(
            dns.health_check.as_ref().map(|h| &h.kind),
            Some(CheckKind::Udp { .. })
        ));
        assert!(matches!(
            &c.services[0].health_check,
            Some(HealthCheck {
                kind: CheckKind::Http { .. },
                ..
            })
        ));
    }

    #[test]
    fn parse_health_check_is_reusable() {
        let raw = RawHealthCheck {
            kind: Some("http".into()),
            timeout_ms: Some(5000),
            ..RawHealthCheck::default()
        };
        let e = parse_health_check(raw, "kubernetes.health_check").unwrap_err();
        assert_eq!(e.key, "kubernetes.health_check.timeout_ms");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = Config::parse(&GOOD.replace("workers", "wrokers")).unwrap_err();
        assert!(e.to_string().contains("wrokers"), "{e}");
    }

    #[test]
    fn kubernetes_table() {
        let c = Config::parse(&format!(
            "{GOOD}[kubernetes]\nvip_pools = [\"198.18.0.200/30\"]\nnamespace = \"podlb-system\"\n"
        ))
        .unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!(k.reconcile.load_balancer_class, "podlb.io/vip");
        assert_eq!(k.namespace.as_deref(), Some("podlb-system"));
        assert_eq!(k.peers_service.as_deref(), Some("podlb-peers"));
        assert!(k.lease.is_none() && k.kubeconfig.is_none() && k.pod_ip.is_none());
        let c = Config::parse(&format!(
            "{GOOD}[kubernetes]\nvip_pools = [\"198.18.0.200/30\"]\npeers_service = \"\"\nelection = \"lease\"\n[kubernetes.lease]\nduration_ms = 3000\n"
        ))
        .unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!(k.peers_service, None);
        let l = k.lease.unwrap();
        assert_eq!(
            (l.name.as_str(), l.duration, l.retry),
            (
                "podlb",
                Duration::from_millis(3000),
                Duration::from_millis(750)
            )
        );
    }

    #[test]
    fn cloud_table() {
        let c = Config::parse(&format!(
            "{GOOD}[cloud]\nprovider = \"aws\"\nregion = \"eu-west-1\"\nnetwork_interface_id = \"eni-1\"\nallocation_id = \"eipalloc-2\"\n"
        ))
        .unwrap();
        let cl = c.cloud.unwrap();
        assert_eq!(cl.reconcile_interval, Duration::from_secs(5));
        match cl.provider {
            CloudProvider::Aws(a) => {
                assert_eq!(a.endpoint_url, "https://ec2.eu-west-1.amazonaws.com");
                assert_eq!(a.allocation_id.as_deref(), Some("eipalloc-2"));
                assert_eq!(a.private_ip, None);
                assert_eq!(a.network_interface_id.as_deref(), Some("eni-1"));
            }
            p => panic!("{p:?}"),
        }
        let c = Config::parse(&format!(
            "{GOOD}[cloud]\nprovider = \"exec\"\ncommand = [\"/bin/mv-vip\", \"x\"]\nreconcile_interval_ms = 500\n"
        ))
        .unwrap();
        assert_eq!(
            c.cloud.unwrap().provider,
            CloudProvider::Exec {
                command: vec!["/bin/mv-vip".into(), "x".into()]
            }
        );
    }

    #[test]
    fn cloud_errors_name_the_key() {
        let k = |extra: &str| key_of(&format!("{GOOD}[cloud]\n{extra}\n"));
        let aws = "provider = \"aws\"\nregion = \"us-east-1\"\nnetwork_interface_id = \"eni-1\"";
        assert_eq!(k("region = \"us-east-1\""), "cloud.provider");
        assert_eq!(k("provider = \"gcp\""), "cloud.provider");
        // Without an ENI it is found from the instance metadata.
        assert!(Config::parse(&format!(
            "{GOOD}[cloud]\nprovider = \"aws\"\nregion = \"us-east-1\"\n"
        ))
        .is_ok());
        assert_eq!(
            k("provider = \"aws\"\nregion = \"us-east-1\"\nnetwork_interface_id = \"x\""),
            "cloud.network_interface_id"
        );
        assert_eq!(
            k(&format!("{aws}\nallocation_id = \"x\"")),
            "cloud.allocation_id"
        );
        assert_eq!(
            k(&format!("{aws}\nprivate_ip = \"10.0.0.300\"")),
            "cloud.private_ip"
        );
        assert_eq!(
            k(&format!("{aws}\nendpoint_url = \"ftp://x\"")),
            "cloud.endpoint_url"
        );
        assert_eq!(
            k(&format!("{aws}\nreconcile_interval_ms = 499")),
            "cloud.reconcile_interval_ms"
        );
        assert_eq!(
            k(&format!("{aws}\nreconcile_interval_ms = 600001")),
            "cloud.reconcile_interval_ms"
        );
        assert_eq!(
            k(&format!("{aws}\ncommand = [\"/bin/x\"]")),
            "cloud.command"
        );
        assert_eq!(k("provider = \"exec\""), "cloud.command");
        assert_eq!(k("provider = \"exec\"\ncommand = []"), "cloud.command");
        assert_eq!(
            k("provider = \"exec\"\ncommand = [\"mv-vip\"]"),
            "cloud.command"
        );
        assert_eq!(
            k("provider = \"exec\"\ncommand = [\"/x\"]\nregion = \"us-east-1\""),
            "cloud.region"
        );
        assert_eq!(k("provider = \"aws\"\nbogus = 1"), "");
    }

    #[test]
    fn kubernetes_errors_name_the_key() {
        let k = |extra: &str| key_of(&format!("{GOOD}[kubernetes]\n{extra}\n"));
        assert_eq!(k(""), "kubernetes.vip_pools");
        assert_eq!(k("vip_pools = [\"198.18.0.100/30\"]"), "service[0].vip");
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\"]\nelection = \"raft\""),
            "kubernetes.election"
        );
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\"]\nnamespace = \"Bad_NS\""),
            "kubernetes.namespace"
        );
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\"]\npod_ip = \"x\""),
            "kubernetes.pod_ip"
        );
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\"]\n[kubernetes.lease]\nname = \"a\""),
            "kubernetes.lease"
        );
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\"]\nelection = \"lease\"\n[kubernetes.lease]\nduration_ms = 4000\nretry_ms = 3000"),
            "kubernetes.lease.retry_ms"
        );
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\"]\nelection = \"lease\"\n[kubernetes.lease]\non_master = \"x\""),
            "kubernetes.lease.on_master"
        );
        assert_eq!(
            key_of(&format!("{GOOD}[vrrp]\nvrid = 1\n[kubernetes]\nvip_pools = [\"198.18.1.0/30\"]\nelection = \"lease\"\n")),
            "kubernetes.election"
        );
        // IPv6 pools: unusable addresses named; a file service's IPv6 VIP
        // inside one is the pools'.
        assert_eq!(
            k("vip_pools = [\"198.18.1.0/30\", \"fe80::/64\"]"),
            "kubernetes.vip_pools[1]"
        );
        let v6 = GOOD.replace("198.18.0.100", "2001:2::100").replace(
            "backends = [\"198.18.0.21:80\", { addr = \"198.18.0.22:80\", weight = 3 }]",
            "backends = [\"[2001:2::21]:80\"]",
        );
        assert_eq!(
            key_of(&format!(
                "{v6}[kubernetes]\nvip_pools = [\"198.18.1.0/30\", \"2001:2::/64\"]\n"
            )),
            "service[0].vip"
        );
    }

    #[test]
    fn kubernetes_vip_pools_of_both_families() {
        let c = Config::parse(&format!(
            "{GOOD}[kubernetes]\nvip_pools = [\"198.18.1.0/30\", \"2001:2::/64\", \"2001:2:0:1::100/120\"]\n"
        ))
        .unwrap();
        let pools: Vec<String> = c
            .kubernetes
            .unwrap()
            .reconcile
            .vip_pools
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            pools,
            ["198.18.1.0/30", "2001:2::/64", "2001:2:0:1::100/120"]
        );
    }

    #[test]
    fn sync_key_file() {
        let dir = std::env::temp_dir().join(format!("podlb-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  c2VjcmV0LXNoYXJlZC1rZXktMTIzNDU2Nzg5MA==\n").unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tiny").unwrap();
        let c = Config::parse(&format!(
            "{GOOD}[vrrp]\nvrid = 1\nsync_key_file = {:?}\n",
            good.display().to_string()
        ))
        .unwrap();
        let k = c.vrrp.unwrap().sync_key.unwrap();
        assert_eq!(k.0, b"c2VjcmV0LXNoYXJlZC1rZXktMTIzNDU2Nzg5MA==");
        assert_eq!(format!("{k:?}"), "SyncKey(40 bytes)", "never printed");
        let e = Config::parse(&format!(
            "{GOOD}[vrrp]\nvrid = 1\nsync_key_file = {:?}\n",
            short.display().to_string()
        ))
        .unwrap_err();
        assert_eq!(e.key, "vrrp.sync_key_file");
        assert!(e.message.contains("at least 16"), "{e}");
        assert_eq!(
            key_of(&format!(
                "{GOOD}[vrrp]\nvrid = 1\nsync_key_file = \"rel\"\n"
            )),
            "vrrp.sync_key_file"
        );
        assert_eq!(
            key_of(&format!(
                "{GOOD}[vrrp]\nvrid = 1\nsync_key_file = \"/nonexistent/k\"\n"
            )),
            "vrrp.sync_key_file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
