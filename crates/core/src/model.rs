//! The model every layer above the wire shares: services, backends,
//! forwarding modes, health-check specs and flow limits. The config file,
//! the Kubernetes reconcile and the snapshot builder all produce or consume
//! these types; this module imports nothing of them, so none of them
//! depends on another (docs/architecture.md §1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use std::fmt;
use std::str::FromStr;

use podlb_wire::MacAddr;

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

/// Forwarding mode of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Full NAT: destination → backend, source → VIP with an allocated port.
    Nat,
    /// Direct server return: only the MAC is rewritten; backends hold the VIP.
    Dsr,
    /// Full NAT as `Nat`, then carried in VXLAN (RFC 7348) to the backend's
    /// node (its VTEP), for backends on other nodes and subnets.
    Vxlan,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Dsr => "dsr",
            Mode::Vxlan => "vxlan",
        }
    }
}

/// The transport protocol of a service.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IPv4 protocol number (RFC 790): 6 or 17.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol of IPv4 protocol number `n`, if podlb serves it.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" | "TCP" => Ok(Protocol::Tcp),
            "udp" | "UDP" => Ok(Protocol::Udp),
            other => Err(format!("{other:?} is not \"tcp\" or \"udp\"")),
        }
    }
}

/// What a UDP service's backend choice hashes (`udp_hash`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UdpHash {
    /// The 5-tuple: each client socket is its own flow.
    #[default]
    FiveTuple,
    /// The client's address alone, for protocols whose clients change
    /// source port mid-exchange (some VoIP and game clients). QUIC
    /// connection migration changes the address too, which no L4 hash
    /// follows (docs/decisions.md).
    SrcIp,
}

impl UdpHash {
    pub fn as_str(self) -> &'static str {
        match self {
            UdpHash::FiveTuple => "5tuple",
            UdpHash::SrcIp => "src_ip",
        }
    }
}

impl FromStr for UdpHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "5tuple" => Ok(UdpHash::FiveTuple),
            "src_ip" => Ok(UdpHash::SrcIp),
            other => Err(format!("{other:?} is not \"5tuple\" or \"src_ip\"")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSettings {
    /// Most flows held at once; new flows beyond it evict per the policy in
    /// docs/architecture.md or are dropped.
    pub capacity: usize,
    /// The same for IPv6 flows (a table of their own).
    pub capacity_ipv6: usize,
    pub syn_timeout: Duration,
    pub established_timeout: Duration,
    /// One side sent FIN.
    pub fin_timeout: Duration,
    /// Both sides sent FIN, or a RST was seen.
    pub close_timeout: Duration,
    /// Accept mid-stream TCP segments of unknown flows (after a restart or a
    /// failover) and give them the Maglev choice.
    pub pickup: bool,
    /// How long a backend that answered a SYN with a RST is left out of
    /// new connections (its RST withheld so the client's retransmitted SYN
    /// goes to another backend); zero: RSTs pass to the client and no
    /// backend is held out.
    pub refused_hold: Duration,
    /// A UDP flow the backend has not answered yet (one-way traffic, or a
    /// query whose answer is late).
    pub udp_unanswered_timeout: Duration,
    /// A UDP flow the backend has answered.
    pub udp_answered_timeout: Duration,
    /// Translate and forward ICMP errors (destination unreachable, time
    /// exceeded, parameter problem) that belong to a flow (RFC 5508 §4);
    /// off: they are dropped and counted, as before.
    pub icmp_errors: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub addr: SocketAddr,
    pub weight: u32,
    /// `mode = "vxlan"`: the VTEP (node address) behind which `addr` lives.
    pub vtep: Option<Ipv4Addr>,
    /// `mode = "vxlan"`: the MAC of that VTEP's VXLAN device (inner
    /// Ethernet destination).
    pub vtep_mac: Option<MacAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    /// IPv4 or IPv6; the backends are of the same family.
    pub vip: IpAddr,
    pub port: u16,
    /// TCP or UDP; a TCP and a UDP service may share VIP and port.
    pub protocol: Protocol,
    pub mode: Mode,
    pub backends: Vec<BackendConfig>,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// podlb's own health check of the backends; `None`: every configured
    /// backend is used.
    pub health_check: Option<HealthCheck>,
    /// `mode = "vxlan"`: outer UDP destination port (default 8472).
    pub vxlan_port: u16,
    /// `mode = "vxlan"`: the 24-bit VXLAN Network Identifier (default 1).
    pub vni: u32,
    /// Clamp the TCP MSS option of SYN and SYN-ACK to at most this. Default
    /// for vxlan: 1410 (1500 - 50 VXLAN overhead - 40); none for nat/dsr.
    pub mss_clamp: Option<u16>,
    /// Clients that may open flows; empty: every client. A new flow from
    /// elsewhere is dropped (`source_not_allowed`); flows already open when
    /// the list changes run on. (`source_ranges`;
    /// `spec.loadBalancerSourceRanges` in Kubernetes mode.)
    pub source_ranges: Vec<Prefix>,
    /// What the backend choice hashes (`affinity`; `spec.sessionAffinity`).
    pub affinity: Affinity,
    /// UDP services: what the backend choice hashes (`udp_hash`).
    pub udp_hash: UdpHash,
}

/// What a new flow's backend is chosen by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Affinity {
    /// The flow's 5-tuple: connections spread over the backends.
    #[default]
    None,
    /// The client's address alone: every connection of a client goes to the
    /// same backend while the backend set is unchanged (Maglev's minimal
    /// disruption moves few clients when it changes). Kubernetes'
    /// `sessionAffinity: ClientIP`; its `timeoutSeconds` has no counterpart:
    /// the stickiness needs no per-client state, so it does not expire.
    ClientIp,
}

impl Affinity {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::None => "none",
            Affinity::ClientIp => "client_ip",
        }
    }
}

impl FromStr for Affinity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Affinity::None),
            "client_ip" => Ok(Affinity::ClientIp),
            other => Err(format!("{other:?} is not \"none\" or \"client_ip\"")),
        }
    }
}

impl ServiceConfig {
    /// Whether a new flow from `client` is admitted (`source_ranges`).
    pub fn admits(&self, client: IpAddr) -> bool {
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|r| r.contains(client))
    }

    /// Whether a new flow's backend is chosen by the client's address
    /// alone: `affinity = "client_ip"`, or `udp_hash = "src_ip"` on UDP.
    pub fn hashes_client_only(&self) -> bool {
        self.affinity == Affinity::ClientIp
            || (self.protocol == Protocol::Udp && self.udp_hash == UdpHash::SrcIp)
    }
}

/// VXLAN UDP port when not configured: the Linux and flannel default.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_VNI: u32 = 1;
/// 1500 - 50 (VXLAN overhead) - 40 (IPv4 + TCP headers).
pub const DEFAULT_VXLAN_MSS: u16 = 1410;

/// Probe interval when none is configured.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(1000);
/// Probe timeout (connect, and for HTTP also request and status line).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Consecutive successes that bring a down target up.
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that bring an up target down.
pub const DEFAULT_FALL: u32 = 3;

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// The TCP handshake completes within the timeout.
    Tcp,
    /// `GET path` answers with status `expect_status` within the timeout.
    Http { path: String, expect_status: u16 },
    /// A UDP datagram `send` is answered (by a datagram that starts with
    /// `expect`, when given) within the timeout; an ICMP port unreachable
    /// is a failure at once.
    Udp {
        send: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// A DNS query (RFC 1035 §4.1) for `name`, type A, over UDP, is
    /// answered with its ID and RCODE NOERROR or NXDOMAIN.
    Dns { name: String },
}

impl CheckKind {
    /// The protocol of the backends this kind checks: TCP for `tcp` and
    /// `http`, UDP for `udp` and `dns`. A service's check must match the
    /// service's protocol.
    pub fn protocol(&self) -> Protocol {
        match self {
            CheckKind::Tcp | CheckKind::Http { .. } => Protocol::Tcp,
            CheckKind::Udp { .. } | CheckKind::Dns { .. } => Protocol::Udp,
        }
    }

    /// The kind's name in the config (`kind = "..."`).
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Udp { .. } => "udp",
            CheckKind::Dns { .. } => "dns",
        }
    }
}

/// How one backend is checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Port probed; `None`: the backend's own port.
    pub port: Option<u16>,
    pub interval: Duration,
    /// At most `interval` (the config enforces it).
    pub timeout: Duration,
    /// 1..=100.
    pub rise: u32,
    /// 1..=100.
    pub fall: u32,
}

impl Default for HealthCheck {
    /// A TCP check with the default interval, timeout, rise and fall.
    fn default() -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            port: None,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// An IPv4 or IPv6 prefix `base/prefix`, e.g. `198.18.0.100/30` or
/// `2001:2::100/124`: a VIP pool (`kubernetes.vip_pools`), or a source
/// range a service admits (`source_ranges`,
/// `spec.loadBalancerSourceRanges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// First address; its host bits (beyond `prefix`) are zero.
    pub base: IpAddr,
    /// Prefix length, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub prefix: u8,
}

/// An address as a 128-bit number and its family's width in bits.
fn bits_of(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn addr_of(v: u128, like: IpAddr) -> IpAddr {
    match like {
        // The value came from a 32-bit family: it fits.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl Prefix {
    /// Whether the prefix is of IPv6 addresses.
    pub fn is_ipv6(&self) -> bool {
        self.base.is_ipv6()
    }

    /// Number of addresses in the prefix (saturating at `u64::MAX` for
    /// IPv6 prefixes shorter than /64).
    pub fn size(&self) -> u64 {
        let (_, width) = bits_of(self.base);
        let host = width - u32::from(self.prefix);
        if host >= 64 {
            u64::MAX
        } else {
            1u64 << host
        }
    }

    /// The prefix as a netmask of its family's width.
    fn mask_bits(&self) -> u128 {
        let (_, width) = bits_of(self.base);
        let full = if width == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        let host = width - u32::from(self.prefix);
        if host >= 128 {
            0
        } else {
            full & !((1u128 << host) - 1)
        }
    }

    /// The IPv4 prefix as a netmask; 0 for an IPv6 prefix.
    pub fn mask(&self) -> u32 {
        match self.base {
            IpAddr::V4(_) => u32::try_from(self.mask_bits()).unwrap_or(0),
            IpAddr::V6(_) => 0,
        }
    }

    /// Whether `ip` is inside the prefix (never for the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv6() != self.base.is_ipv6() {
            return false;
        }
        bits_of(ip).0 & self.mask_bits() == bits_of(self.base).0
    }

    /// The prefix's addresses, lowest first (lazily: an IPv6 pool may be
    /// huge; callers take what they need).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        let base = bits_of(self.base).0;
        let last = base | !self.mask_bits() & bits_of_full(self.base);
        let like = self.base;
        (0u128..)
            .map(move |i| base.checked_add(i))
            .take_while(move |a| a.is_some_and(|a| a <= last))
            .map(move |a| addr_of(a.unwrap_or(base), like))
    }

    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.contains(other.base) || other.contains(self.base)
    }
}

/// Every bit of `ip`'s family set.
fn bits_of_full(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(_) => u128::from(u32::MAX),
        IpAddr::V6(_) => u128::MAX,
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// Parses `a.b.c.d/len` or `x:y::z/len`; a bare address means the
    /// whole width (`/32`, `/128`). The message says what would be right.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let base: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{s:?} is not an IP prefix; write it like \"198.18.0.100/30\" or \"2001:2::100/124\""
            )
        })?;
        let width: u8 = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={width}"))?,
            None => width,
        };
        let pool = Prefix { base, prefix };
        let aligned = addr_of(bits_of(base).0 & pool.mask_bits(), base);
        if aligned != base {
            return Err(format!(
                "{s:?} has host bits set; the prefix starting at a /{prefix} boundary is \"{aligned}/{prefix}\""
            ));
        }
        Ok(pool)
    }
}
