//! The service snapshot the data plane reads: services, their backends and
//! Maglev tables. Built by the control plane off the hot path and published
//! atomically (see `dataplane::Shared`); never mutated once published.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::bits::Low;
use crate::family::{self, Addr};
use crate::hash::mix64;
use crate::maglev::{MaglevError, MaglevTable};
use crate::model::{Mode, ServiceConfig};
use podlb_wire::MacAddr;

/// Where a `mode = "vxlan"` backend lives: its node's VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    /// The node's address: outer IPv4 destination.
    pub ip: u32,
    /// The node's VXLAN device MAC: inner Ethernet destination.
    pub mac: MacAddr,
    /// The address whose MAC is the outer Ethernet destination: `ip` itself
    /// when on-link, else the gateway (`control::route::Routes::next_hop`).
    pub next_hop: u32,
    /// Outer UDP destination port and VNI of the backend's service.
    pub port: u16,
    pub vni: u32,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    /// The address in wide form (`crate::family`): IPv4 backends of IPv4
    /// services, IPv6 ones of IPv6 services.
    pub ip: u128,
    pub port: u16,
    pub weight: u32,
    /// Stats slot of (service, backend).
    pub stat: u16,
    /// `mode = "vxlan"` only.
    pub vtep: Option<Vtep>,
}

impl Backend {
    /// The address podlb needs the MAC of to reach this backend: the VTEP's
    /// next hop for vxlan, the backend itself otherwise (wide form).
    #[inline]
    pub fn l2_target(&self) -> u128 {
        self.vtep.map_or(self.ip, |v| v.next_hop.wide())
    }
}

#[derive(Debug)]
pub struct Service {
    pub name: String,
    /// Wide form (`crate::family`).
    pub vip: u128,
    pub port: u16,
    /// IPv4 protocol number: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub mode: Mode,
    pub backends: Vec<Backend>,
    pub maglev: MaglevTable,
    /// Clamp the MSS option of SYN and SYN-ACK to at most this.
    pub mss_clamp: Option<u16>,
    /// Clients admitted to new flows as (network, mask) of wide addresses
    /// (an IPv4 range's mask covers the IPv4-mapped prefix too, so it never
    /// admits an IPv6 client); empty: all.
    pub source_ranges: Vec<(u128, u128)>,
    /// Backend choice by the client's address alone (`affinity =
    /// "client_ip"`, or `udp_hash = "src_ip"` on UDP).
    pub client_affinity: bool,
}

impl Service {
    /// Whether a new flow from `client` is admitted (`source_ranges`).
    #[inline]
    pub fn admits<A: Addr>(&self, client: A) -> bool {
        self.source_ranges.is_empty()
            || self.source_ranges.iter().any(|&(net, mask)| {
                // An IPv4 client is admitted by IPv4 ranges only: an IPv6
                // range short enough to cover the IPv4-mapped prefix (`::/0`
                // .. `::/80`) would otherwise admit every IPv4 client.
                client.wide() & mask == net && (A::V6 || mask & V4_RANGE_MASK == V4_RANGE_MASK)
            })
    }
}

/// The bits every IPv4 range's wide mask has set: the 96 of the
/// IPv4-mapped prefix.
const V4_RANGE_MASK: u128 = u128::MAX << 32;

/// Everything a worker needs to classify and steer a packet.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub services: Vec<Service>,
    /// (wide vip, port, protocol number) → service index.
    by_listener: HashMap<(u128, u16, u8), u16, BuildHasherDefault<WordHasher>>,
    /// Distinct VIPs (wide), sorted.
    vips: Vec<u128>,
    /// vxlan backends (wide pod address) → their VTEP. Flows carry only
    /// the backend address; this finds the tunnel for them.
    vteps: HashMap<u128, Vtep, BuildHasherDefault<WordHasher>>,
    /// (UDP port, VNI) pairs of the vxlan services: replies podlb decapsulates.
    vxlan_ids: Vec<(u16, u32)>,
}

impl Snapshot {
    /// Builds a snapshot; `stat_slot` gives the stable stats slot of a
    /// (service name, backend) pair. Flows name their service by a `u16`
    /// index, so a snapshot holds the first 65,536 services at most.
    pub fn build(
        generation: u64,
        services: &[ServiceConfig],
        mut stat_slot: impl FnMut(&str, SocketAddr) -> u16,
    ) -> Result<Snapshot, MaglevError> {
        let mut out = Vec::with_capacity(services.len());
        let mut by_listener = HashMap::default();
        let mut vips = Vec::new();
        let mut vteps = HashMap::default();
        let mut vxlan_ids = Vec::new();
        for (i, s) in (0..=u16::MAX).zip(services) {
            let backends: Vec<Backend> = s
                .backends
                .iter()
                .map(|b| Backend {
                    addr: b.addr,
                    ip: family::wide(b.addr.ip()),
                    port: b.addr.port(),
                    weight: b.weight,
                    stat: stat_slot(&s.name, b.addr),
                    vtep: match (s.mode, b.vtep, b.vtep_mac) {
                        (Mode::Vxlan, Some(ip), Some(mac)) => Some(Vtep {
                            ip: u32::from(ip),
                            mac,
                            next_hop: u32::from(ip),
                            port: s.vxlan_port,
                            vni: s.vni,
                        }),
                        _ => None,
                    },
                })
                .collect();
            if s.mode == Mode::Vxlan {
                vxlan_ids.push((s.vxlan_port, s.vni));
                for b in &backends {
                    if let Some(v) = b.vtep {
                        vteps.insert(b.ip, v);
                    }
                }
            }
            let keys: Vec<(String, u32)> = backends
                .iter()
                .map(|b| (b.addr.to_string(), b.weight))
                .collect();
            let maglev = MaglevTable::build(&keys, s.table_size)?;
            let vip = family::wide(s.vip);
            let proto = s.protocol.number();
            by_listener.insert((vip, s.port, proto), i);
            vips.push(vip);
            out.push(Service {
                name: s.name.clone(),
                vip,
                port: s.port,
                proto,
                mode: s.mode,
                backends,
                maglev,
                mss_clamp: s.mss_clamp,
                source_ranges: s
                    .source_ranges
                    .iter()
                    .map(|r| {
                        let (net, mask) = (family::wide(r.base), wide_mask(r));
                        (net & mask, mask)
                    })
                    .collect(),
                client_affinity: s.hashes_client_only(),
            });
        }
        vips.sort_unstable();
        vips.dedup();
        vxlan_ids.sort_unstable();
        vxlan_ids.dedup();
        Ok(Snapshot {
            generation,
            services: out,
            by_listener,
            vips,
            vteps,
            vxlan_ids,
        })
    }

    /// Sets every VTEP's next hop to `next_hop(vtep)` (the control plane
    /// passes `Routes::next_hop`); before publishing.
    pub fn route_vteps(&mut self, next_hop: impl Fn(Ipv4Addr) -> Ipv4Addr) {
        for s in &mut self.services {
            for b in &mut s.backends {
                if let Some(v) = &mut b.vtep {
                    v.next_hop = u32::from(next_hop(Ipv4Addr::from(v.ip)));
                }
            }
        }
        for v in self.vteps.values_mut() {
            v.next_hop = u32::from(next_hop(Ipv4Addr::from(v.ip)));
        }
    }

    /// Keeps the VTEPs `old` knew for vxlan backends that this snapshot no
    /// longer has, while those backends may still carry flows: the ones
    /// `old` served (removed by this change) and the ones `carries_flows`
    /// names (the control loop's last flow sweep). A draining flow is then
    /// tunnelled on to its pod like a NAT-mode flow goes on to its removed
    /// backend, instead of being dropped as `vxlan_no_vtep`; an entry is let
    /// go by a later build once no flow uses it. A backend address that is
    /// in this snapshot keeps this snapshot's VTEP.
    pub fn carry_vteps(&mut self, old: &Snapshot, carries_flows: impl Fn(u128) -> bool) {
        let served: HashSet<u128> = old
            .services
            .iter()
            .flat_map(|s| s.backends.iter())
            .filter(|b| b.vtep.is_some())
            .map(|b| b.ip)
            .collect();
        for (&ip, v) in &old.vteps {
            if !self.vteps.contains_key(&ip) && (served.contains(&ip) || carries_flows(ip)) {
                self.vteps.insert(ip, *v);
            }
        }
    }

    /// The outer next hops of every VTEP, carried ones included: the
    /// neighbors the control loop keeps resolved for vxlan flows.
    pub fn vtep_next_hops(&self) -> impl Iterator<Item = u32> + '_ {
        self.vteps.values().map(|v| v.next_hop)
    }

    /// The VTEP of vxlan backend `ip`.
    #[inline]
    pub fn vtep<A: Addr>(&self, ip: A) -> Option<&Vtep> {
        if self.vteps.is_empty() {
            return None;
        }
        self.vteps.get(&ip.wide())
    }

    /// Whether some vxlan service uses UDP `port`.
    #[inline]
    pub fn is_vxlan_port(&self, port: u16) -> bool {
        self.vxlan_ids.iter().any(|&(p, _)| p == port)
    }

    /// Whether some vxlan service uses (`port`, `vni`).
    #[inline]
    pub fn is_vxlan_id(&self, port: u16, vni: u32) -> bool {
        self.vxlan_ids.contains(&(port, vni))
    }

    /// The distinct UDP ports of the vxlan services.
    pub fn vxlan_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.vxlan_ids.iter().map(|&(p, _)| p).collect();
        v.dedup();
        v
    }

    /// The service listening on `vip:port` for IPv4 protocol `proto`.
    #[inline]
    pub fn service<A: Addr>(&self, vip: A, port: u16, proto: u8) -> Option<(u16, &Service)> {
        let &i = self.by_listener.get(&(vip.wide(), port, proto))?;
        Some((i, &self.services[i as usize]))
    }

    /// Whether podlb serves `ip` (answers ARP and ICMP echo for it).
    #[inline]
    pub fn is_vip<A: Addr>(&self, ip: A) -> bool {
        let ip = ip.wide();
        match self.vips.len() {
            0 => false,
            1..=8 => self.vips.contains(&ip),
            _ => self.vips.binary_search(&ip).is_ok(),
        }
    }

    /// Whether `port` is a service port of protocol `proto` on `vip`
    /// (never handed out as a NAT port of that protocol).
    #[inline]
    pub fn is_listener<A: Addr>(&self, vip: A, port: u16, proto: u8) -> bool {
        self.by_listener.contains_key(&(vip.wide(), port, proto))
    }

    /// Every VIP, of both families.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips.iter().map(|&v| family::unwide(v))
    }

    /// The VIPs of family `A`.
    pub fn vips_of<A: Addr>(&self) -> impl Iterator<Item = A> + '_ {
        self.vips.iter().filter_map(|&v| A::from_wide(v))
    }

    /// The IPv4 VIPs.
    pub fn vips4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.vips_of::<u32>().map(Ipv4Addr::from)
    }
}

/// The netmask of a prefix over wide addresses: an IPv4 prefix's covers
/// the IPv4-mapped prefix as well.
fn wide_mask(r: &crate::model::Prefix) -> u128 {
    let host = if r.is_ipv6() { 128 } else { 32 } - u32::from(r.prefix);
    if host >= 128 {
        0
    } else {
        u128::MAX << host
    }
}

/// A hasher for small integer keys: a few ns instead of SipHash's tens.
/// Keys are VIP:port pairs from the config, not attacker-chosen.
#[derive(Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = self.0.rotate_left(16) ^ n as u64;
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = self.0.rotate_left(32) ^ n as u64;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = self.0.rotate_left(32) ^ Low::<u64>::low(n >> 64);
        self.0 = mix64(self.0) ^ Low::<u64>::low(n);
    }
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Prefix;

    #[test]
    fn source_ranges_admit_clients_of_their_own_family_only() {
        let mut cfg = crate::testlab::service(Mode::Nat, 80, &[[198, 18, 0, 21]]);
        let ranges =
            |list: &[&str]| -> Vec<Prefix> { list.iter().map(|r| r.parse().unwrap()).collect() };
        let v4 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let v6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        cfg.source_ranges = ranges(&["::/0", "198.18.1.0/24"]);
        let snap = crate::testlab::build(1, std::slice::from_ref(&cfg));
        let s = &snap.services[0];
        assert!(s.admits(v4("198.18.1.7")));
        assert!(!s.admits(v4("198.19.0.1")), "::/0 admitted an IPv4 client");
        assert!(s.admits(v6("2001:2::1")));
        // IPv4 ranges never admit an IPv6 client, not even a mapped one.
        cfg.source_ranges = ranges(&["0.0.0.0/0"]);
        let snap = crate::testlab::build(2, std::slice::from_ref(&cfg));
        assert!(snap.services[0].admits(v4("203.0.113.1")));
        assert!(!snap.services[0].admits(v6("2001:2::1")));
    }
}
