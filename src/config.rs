//! Typed, validated configuration.
//!
//! The file is TOML. Parsing happens in two steps: serde reads the raw shape
//! (unknown keys are rejected, so a typo is an error rather than a silent
//! default), then [`Config::validate`] turns it into typed values and checks
//! everything that serde cannot. Every error names the key it is about and
//! says what would be right.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::balance::maglev;
use crate::wire::MacAddr;

/// A configuration error: the key it is about and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `service[0].vip`; empty for
    /// errors about the whole file (IO or TOML syntax).
    pub key: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Forwarding mode of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Full NAT: destination → backend, source → VIP with an allocated port.
    Nat,
    /// Direct server return: only the MAC is rewritten; backends hold the VIP.
    Dsr,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Dsr => "dsr",
        }
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

/// How AF_PACKET transmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxMode {
    /// `sendmmsg` of the rewritten frames straight out of the RX ring.
    Sendmmsg,
    /// A PACKET_TX_RING: frames copied into a mapped ring, one `send` per batch.
    Ring,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSettings {
    /// TPACKET_V3 block size in bytes (a power of two, multiple of the page size).
    pub block_size: u32,
    /// Number of blocks in the RX ring.
    pub block_count: u32,
    /// Block retire timeout in milliseconds (TPACKET_V3 `tp_retire_blk_tov`).
    pub block_timeout_ms: u32,
    pub tx: TxMode,
    pub rx_ring: crate::io::packet::RxRing,
    /// Receive and send whole GSO frames with a virtio-net header.
    pub vnet_hdr: bool,
    /// How long a worker busy-polls after the last packet before it sleeps.
    pub busy_poll: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSettings {
    /// Most flows held at once; new flows beyond it evict per the policy in
    /// docs/architecture.md or are dropped.
    pub capacity: usize,
    pub syn_timeout: Duration,
    pub established_timeout: Duration,
    /// One side sent FIN.
    pub fin_timeout: Duration,
    /// Both sides sent FIN, or a RST was seen.
    pub close_timeout: Duration,
    /// Accept mid-stream TCP segments of unknown flows (after a restart or a
    /// failover) and give them the Maglev choice.
    pub pickup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub addr: SocketAddrV4,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub mode: Mode,
    pub backends: Vec<BackendConfig>,
    /// Maglev table size (prime).
    pub table_size: u32,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub attach: Attach,
    pub workers: usize,
    pub admin: SocketAddr,
    pub flows: FlowSettings,
    pub io: IoSettings,
    pub services: Vec<ServiceConfig>,
}

// ---- raw serde shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Option<String>,
    tap: Option<RawTap>,
    workers: Option<i64>,
    admin: Option<String>,
    flows: Option<RawFlows>,
    io: Option<RawIo>,
    #[serde(default)]
    service: Vec<RawService>,
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
struct RawFlows {
    capacity: Option<i64>,
    syn_timeout_s: Option<u64>,
    established_timeout_s: Option<u64>,
    fin_timeout_s: Option<u64>,
    close_timeout_s: Option<u64>,
    pickup: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIo {
    block_size: Option<u32>,
    block_count: Option<u32>,
    block_timeout_ms: Option<u32>,
    tx: Option<TxMode>,
    rx_ring: Option<crate::io::packet::RxRing>,
    vnet_hdr: Option<bool>,
    busy_poll_us: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: String,
    port: i64,
    mode: Option<Mode>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    table_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBackend {
    Addr(String),
    Table {
        addr: String,
        #[serde(default = "default_weight")]
        weight: i64,
    },
}

fn default_weight() -> i64 {
    1
}

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";
pub const DEFAULT_CAPACITY: usize = 1_000_000;
pub const MAX_WORKERS: usize = 64;
/// Backends of one service at most (Maglev entries are u16 indices).
pub const MAX_BACKENDS: usize = 4096;

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
        let admin: SocketAddr = admin_s.parse().map_err(|_| {
            err(
                "admin",
                format!("{admin_s:?} is not an address like 127.0.0.1:9100"),
            )
        })?;

        let f = raw.flows.unwrap_or_default();
        let capacity = f.capacity.unwrap_or(DEFAULT_CAPACITY as i64);
        if !(1024..=1 << 26).contains(&capacity) {
            return Err(err(
                "flows.capacity",
                format!("{capacity} is out of range: use 1024..=67108864"),
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
            syn_timeout: secs("syn_timeout_s", f.syn_timeout_s, 10)?,
            established_timeout: secs("established_timeout_s", f.established_timeout_s, 3600)?,
            fin_timeout: secs("fin_timeout_s", f.fin_timeout_s, 60)?,
            close_timeout: secs("close_timeout_s", f.close_timeout_s, 10)?,
            pickup: f.pickup.unwrap_or(true),
        };

        let r = raw.io.unwrap_or_default();
        let io = IoSettings {
            block_size: r.block_size.unwrap_or(1 << 18),
            block_count: r.block_count.unwrap_or(32),
            block_timeout_ms: r.block_timeout_ms.unwrap_or(1),
            tx: r.tx.unwrap_or(TxMode::Sendmmsg),
            rx_ring: r.rx_ring.unwrap_or(crate::io::packet::RxRing::V2),
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

        let services = validate_services(raw.service)?;
        Ok(Config {
            attach,
            workers: workers as usize,
            admin,
            flows,
            io,
            services,
        })
    }
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
        let vip: Ipv4Addr = s
            .vip
            .parse()
            .map_err(|_| err(key("vip"), format!("{:?} is not an IPv4 address", s.vip)))?;
        if vip.is_unspecified() || vip.is_multicast() || vip.is_broadcast() || vip.is_loopback() {
            return Err(err(
                key("vip"),
                format!(
                    "{vip} cannot be a virtual IP (unspecified, loopback, multicast or broadcast)"
                ),
            ));
        }
        if !(1..=65535).contains(&s.port) {
            return Err(err(
                key("port"),
                format!("{} is out of range: use 1..=65535", s.port),
            ));
        }
        let port = s.port as u16;
        if !listeners.insert((vip, port)) {
            return Err(err(
                key("port"),
                format!("{vip}:{port} is already served by another service"),
            ));
        }
        let mode = s.mode.unwrap_or(Mode::Nat);
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
            let (addr_s, weight) = match b {
                RawBackend::Addr(a) => (a, 1),
                RawBackend::Table { addr, weight } => (addr, weight),
            };
            let addr: SocketAddrV4 = addr_s.parse().map_err(|_| {
                err(
                    &bkey,
                    format!("{addr_s:?} is not an address like 198.18.0.21:80"),
                )
            })?;
            if addr.ip().is_unspecified()
                || addr.ip().is_multicast()
                || addr.ip().is_broadcast()
                || addr.port() == 0
            {
                return Err(err(&bkey, format!("{addr} cannot be a backend")));
            }
            if *addr.ip() == vip {
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
            backends.push(BackendConfig {
                addr,
                weight: weight as u32,
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
        out.push(ServiceConfig {
            name: s.name,
            vip,
            port,
            mode,
            backends,
            table_size,
        });
    }
    Ok(out)
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

    #[test]
    fn tap_table() {
        let c = Config::parse("[tap]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:09\"\n").unwrap();
        assert!(matches!(c.attach, Attach::Tap { ref name, .. } if name == "podlb0"));
    }

    fn key_of(text: &str) -> String {
        Config::parse(text).unwrap_err().key
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
    fn unknown_keys_are_rejected() {
        let e = Config::parse(&GOOD.replace("workers", "wrokers")).unwrap_err();
        assert!(e.to_string().contains("wrokers"), "{e}");
    }
}
