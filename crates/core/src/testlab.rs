//! Test fixtures shared by the forward-pipeline and connection-sync tests:
//! one NAT service on 198.18.0.100:80 over three backends, a `Forwarder`
//! with the backends resolved, and TCP frames built and checked by
//! etherparse (an independent implementation, so a bug cannot cancel
//! itself).

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{Ipv4Header, PacketBuilder, TcpHeader};

use crate::flow::{FlowTable, Timeouts};
use crate::forward::{Forwarder, NatPorts};
use crate::model::{BackendConfig, Mode, ServiceConfig};
use crate::neighbor::NeighborTable;
use crate::service::Snapshot;
use crate::stats::WorkerStats;
use crate::sync::SyncQueue;
use podlb_wire::{checksum, vxlan, MacAddr};

pub const LB: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
pub const CLIENT: [u8; 4] = [198, 18, 0, 10];
pub const VIP: [u8; 4] = [198, 18, 0, 100];
pub const BACKENDS: [[u8; 4]; 3] = [[198, 18, 0, 21], [198, 18, 0, 22], [198, 18, 0, 23]];
/// podlb's own interface address (outer source of VXLAN frames).
pub const LB_IP: [u8; 4] = [198, 18, 0, 2];
/// The gateway towards the VTEPs' subnet, and its MAC.
pub const ROUTER: [u8; 4] = [198, 18, 0, 1];
pub const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
/// vxlan pods and the nodes (VTEPs) they live on.
pub const PODS: [[u8; 4]; 2] = [[198, 19, 10, 2], [198, 19, 20, 2]];
pub const VTEPS: [[u8; 4]; 2] = [[198, 19, 0, 11], [198, 19, 0, 12]];
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;

/// The VXLAN device MAC of node `i`.
pub fn vtep_mac(i: usize) -> MacAddr {
    let i = u8::try_from(i).expect("a node of the test lab");
    MacAddr([2, 0, 0, 0, 1, 0x11 + i])
}

/// The service VIP:80 in `mode = "vxlan"` over the two pods (port 8080),
/// MSS clamp 1410, VTEPs routed via [`ROUTER`].
pub fn vxlan_snapshot() -> Snapshot {
    vxlan_snapshot_of(1, &[0, 1])
}

/// [`vxlan_snapshot`] with generation `generation` and only the pods
/// `pods` (indexes into [`PODS`]).
pub fn vxlan_snapshot_of(generation: u64, pods: &[usize]) -> Snapshot {
    let backends = pods
        .iter()
        .map(|&i| BackendConfig {
            addr: (Ipv4Addr::from(PODS[i]), 8080).into(),
            weight: 1,
            vtep: Some(Ipv4Addr::from(VTEPS[i])),
            vtep_mac: Some(vtep_mac(i)),
        })
        .collect();
    let svc = ServiceConfig {
        name: "web".into(),
        vip: Ipv4Addr::from(VIP).into(),
        port: 80,
        mode: Mode::Vxlan,
        backends,
        table_size: 65537,
        health_check: None,
        vxlan_port: VXLAN_PORT,
        vni: VNI,
        mss_clamp: Some(crate::model::DEFAULT_VXLAN_MSS),
        source_ranges: Vec::new(),
        affinity: Default::default(),
        udp_hash: Default::default(),
        protocol: Default::default(),
    };
    let mut snap = build(generation, &[svc]);
    let routes = crate::route::Routes::new(Ipv4Addr::from(LB_IP), 24, Some(Ipv4Addr::from(ROUTER)));
    snap.route_vteps(|ip| routes.next_hop(ip));
    snap
}

/// A forwarder for [`vxlan_snapshot`]: the router resolved.
pub fn vxlan_setup() -> (Forwarder, Snapshot) {
    let f = forwarder(true, 0, None);
    f.neighbors.track(u32::from_be_bytes(ROUTER));
    f.neighbors
        .learn(u32::from_be_bytes(ROUTER), MacAddr(ROUTER_MAC), 0);
    (f, vxlan_snapshot())
}
pub const T: Timeouts = Timeouts {
    syn_ms: 10_000,
    established_ms: 3_600_000,
    fin_ms: 60_000,
    close_ms: 10_000,
    udp_unanswered_ms: 30_000,
    udp_answered_ms: 120_000,
};

/// The MAC backend `ip` answers ARP with.
pub fn bmac(ip: [u8; 4]) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, ip[3]])
}

/// The service VIP:80 in `mode` over the three backends on `backend_port`;
/// stats slot = the backend's last octet.
pub fn snapshot(mode: Mode, backend_port: u16) -> Snapshot {
    snapshot_of(mode, backend_port, &BACKENDS)
}

/// [`snapshot`] over the backends `backends` only.
pub fn snapshot_of(mode: Mode, backend_port: u16, backends: &[[u8; 4]]) -> Snapshot {
    build(1, &[service(mode, backend_port, backends)])
}

/// A snapshot of `services`, generation `generation`; a backend's stats
/// slot is its address's last octet.
pub fn build(generation: u64, services: &[ServiceConfig]) -> Snapshot {
    Snapshot::build(generation, services, |_, a| match a.ip() {
        std::net::IpAddr::V4(ip) => u16::from(ip.octets()[3]),
        std::net::IpAddr::V6(ip) => u16::from(ip.octets()[15]),
    })
    .unwrap()
}

/// The service VIP:80 in `mode` over `backends` on `backend_port`.
pub fn service(mode: Mode, backend_port: u16, backends: &[[u8; 4]]) -> ServiceConfig {
    let backends = backends
        .iter()
        .map(|b| BackendConfig {
            addr: (Ipv4Addr::from(*b), backend_port).into(),
            weight: 1,
            vtep: None,
            vtep_mac: None,
        })
        .collect();
    ServiceConfig {
        name: "web".into(),
        vip: Ipv4Addr::from(VIP).into(),
        port: 80,
        mode,
        backends,
        table_size: 65537,
        health_check: None,
        vxlan_port: crate::model::DEFAULT_VXLAN_PORT,
        vni: crate::model::DEFAULT_VNI,
        mss_clamp: None,
        source_ranges: Vec::new(),
        affinity: Default::default(),
        udp_hash: Default::default(),
        protocol: Default::default(),
    }
}

/// A serving worker with its own 4096-flow table and the backends resolved.
pub fn forwarder(pickup: bool, port_seed: u32, sync: Option<Arc<SyncQueue>>) -> Forwarder {
    let neighbors = Arc::new(NeighborTable::new(16));
    for b in BACKENDS {
        neighbors.track(u32::from_be_bytes(b));
        neighbors.learn(u32::from_be_bytes(b), bmac(b), 0);
    }
    let neighbors6 = Arc::new(NeighborTable::new(16));
    for b in BACKENDS6 {
        neighbors6.track(b);
        neighbors6.learn(b, bmac6(b), 0);
    }
    Forwarder {
        mac: MacAddr(LB),
        own_mac: MacAddr(LB),
        own_ip: None,
        active: true,
        accept_mode: true,
        mac6: MacAddr(LB),
        active6: true,
        flows: Arc::new(FlowTable::new(4096, T)),
        neighbors,
        flows6: Arc::new(FlowTable::new(4096, T)),
        neighbors6,
        own_ip6: None,
        stats: Arc::new(WorkerStats::default()),
        ports: NatPorts::new(0, 1, port_seed),
        pickup,
        sync,
        local_ip: u32::from_be_bytes(LB_IP),
        out: Default::default(),
        refused: None,
        icmp_errors: true,
        frags: Default::default(),
    }
}

/// The usual pair: a forwarder with pickup on and the service in `mode`.
pub fn setup(mode: Mode, backend_port: u16) -> (Forwarder, Snapshot) {
    (forwarder(true, 0, None), snapshot(mode, backend_port))
}

/// A TCP segment with a small payload; `flags` holds S, A, F, R.
pub fn tcp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: &str,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(77);
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    v
}

/// Parses with etherparse and checks both checksums; returns (dst MAC,
/// src, dst, sport, dport).
pub fn verify_full(frame: &[u8]) -> ([u8; 6], [u8; 4], [u8; 4], u16, u16) {
    let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
    let want = tcp
        .calc_checksum_ipv4_raw(ip.source, ip.destination, payload)
        .unwrap();
    assert_eq!(tcp.checksum, want, "TCP checksum");
    (
        frame[0..6].try_into().unwrap(),
        ip.source,
        ip.destination,
        tcp.source_port,
        tcp.destination_port,
    )
}

/// [`verify_full`] without the MAC: (src, dst, sport, dport).
pub fn verify(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let (_, s, d, sp, dp) = verify_full(frame);
    (s, d, sp, dp)
}

/// A client SYN to VIP:80 carrying an MSS option.
pub fn syn_with_mss(sport: u16, mss: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, 80, 1000, 64240)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(mss)])
        .unwrap()
        .write(&mut v, &[])
        .unwrap();
    v
}

/// Parses an encapsulated frame: checks the outer headers (RFC 7348 §5)
/// and returns (vtep, outer UDP source port, inner frame).
pub fn vxlan_outer(frame: &[u8]) -> ([u8; 4], u16, &[u8]) {
    assert_eq!(&frame[0..6], &ROUTER_MAC, "outer dst = the next hop's MAC");
    assert_eq!(&frame[6..12], &LB);
    let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(ip.source, LB_IP);
    assert_eq!(ip.time_to_live, 64);
    assert!(ip.dont_fragment);
    assert_eq!(ip.protocol, etherparse::IpNumber::UDP);
    assert_eq!(ip.total_len as usize, frame.len() - 14);
    let (udp, rest) = etherparse::UdpHeader::from_slice(rest).unwrap();
    assert_eq!(udp.destination_port, VXLAN_PORT);
    assert!(udp.source_port >= 49152);
    assert_eq!(udp.length as usize, rest.len() + 8);
    assert_eq!(udp.checksum, 0, "RFC 7348 §5: zero over IPv4");
    let vx = vxlan::Packet::new_checked(rest).unwrap();
    assert_eq!(vx.flags(), vxlan::FLAG_I);
    assert_eq!(vx.vni(), VNI);
    assert_eq!(&rest[1..4], &[0, 0, 0], "reserved bits zero");
    (ip.destination, udp.source_port, &rest[8..])
}

/// The folded pseudo-header sum (RFC 9293 §3.1) of the TCP segment in an
/// untagged IPv4 frame: what a device with checksum offload leaves in the
/// checksum field.
pub fn pseudo_sum(frame: &[u8]) -> u16 {
    let (ip, seg) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    let len = u16::try_from(seg.len()).unwrap();
    checksum::fold(checksum::pseudo_header_v4(
        ip.source.into(),
        ip.destination.into(),
        6,
        len,
    ))
}

/// Makes the TCP checksum of an untagged IPv4 frame without options
/// partial, as a veth with offload hands it over: the field holds the
/// folded pseudo-header sum, not complemented.
pub fn make_partial(frame: &mut [u8]) {
    let p = pseudo_sum(frame);
    frame[50..52].copy_from_slice(&p.to_be_bytes());
}

/// [`service`] for UDP: the same backends and mode, `protocol = "udp"`.
pub fn udp_service(mode: Mode, backend_port: u16, backends: &[[u8; 4]]) -> ServiceConfig {
    ServiceConfig {
        name: "web-udp".into(),
        protocol: crate::model::Protocol::Udp,
        ..service(mode, backend_port, backends)
    }
}

/// A UDP datagram with `payload`, checksum computed (etherparse).
#[allow(clippy::too_many_arguments)]
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Parses a UDP frame with etherparse and checks the IPv4 header checksum
/// and the UDP checksum (0 allowed: none); returns (src, dst, sport, dport).
pub fn verify_udp(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (udp, payload) = etherparse::UdpHeader::from_slice(rest).unwrap();
    if udp.checksum != 0 {
        let want = udp
            .calc_checksum_ipv4_raw(ip.source, ip.destination, payload)
            .unwrap();
        assert_eq!(udp.checksum, want, "UDP checksum");
    }
    (
        ip.source,
        ip.destination,
        udp.source_port,
        udp.destination_port,
    )
}

/// An ICMP error (`icmp_type`, `code`, RFC 1191 next-hop MTU `mtu`) from
/// `src` to `dst` quoting the first `quote` bytes of the IPv4 packet in
/// `about` (an Ethernet frame), with both checksums right.
pub fn icmp_error_frame(
    src_mac: [u8; 6],
    (src, dst): ([u8; 4], [u8; 4]),
    (icmp_type, code, mtu): (u8, u8, u16),
    about: &[u8],
    quote: usize,
) -> Vec<u8> {
    let ip_pkt = &about[14..];
    let q = &ip_pkt[..quote.min(ip_pkt.len())];
    let mut icmp = vec![icmp_type, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(q);
    let c = checksum::internet(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, LB)
        .ipv4(src, dst, 64)
        .write(&mut v, etherparse::IpNumber::ICMP, &icmp)
        .unwrap();
    v
}

/// What a translated ICMP error says, all its checksums checked: (outer
/// src, outer dst, quoted src, quoted dst, quoted sport, quoted dport,
/// next-hop MTU). The quoted transport checksum is checked too when the
/// whole quoted UDP datagram is there.
pub struct IcmpSeen {
    pub outer: ([u8; 4], [u8; 4]),
    pub quoted: ([u8; 4], [u8; 4], u16, u16),
    pub mtu: u16,
}

pub fn verify_icmp_error(frame: &[u8]) -> IcmpSeen {
    let (ip, icmp) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "outer IPv4 checksum"
    );
    let icmp = &icmp[..usize::from(ip.total_len) - ip.header_len()];
    assert_eq!(checksum::internet(icmp), 0, "ICMP checksum");
    let mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
    let (qip, ql4) = Ipv4Header::from_slice(&icmp[8..]).unwrap();
    assert_eq!(
        qip.header_checksum,
        qip.calc_header_checksum(),
        "quoted IPv4 checksum"
    );
    let (sport, dport) = (
        u16::from_be_bytes([ql4[0], ql4[1]]),
        u16::from_be_bytes([ql4[2], ql4[3]]),
    );
    if qip.protocol == etherparse::IpNumber::UDP && ql4.len() >= 8 {
        let (u, payload) = etherparse::UdpHeader::from_slice(ql4).unwrap();
        if u.checksum != 0 && usize::from(u.length) == ql4.len() {
            let want = u
                .calc_checksum_ipv4_raw(qip.source, qip.destination, payload)
                .unwrap();
            assert_eq!(u.checksum, want, "quoted UDP checksum");
        }
    }
    IcmpSeen {
        outer: (ip.source, ip.destination),
        quoted: (qip.source, qip.destination, sport, dport),
        mtu,
    }
}

/// The IPv6 lab (2001:2::/48, RFC 5180): a client, the VIP and three
/// backends on one link, as `u128` addresses.
pub const CLIENT6: u128 = 0x2001_0002_0000_0000_0000_0000_0000_0010;
pub const VIP6: u128 = 0x2001_0002_0000_0000_0000_0000_0000_0100;
pub const BACKENDS6: [u128; 3] = [
    0x2001_0002_0000_0000_0000_0000_0000_0021,
    0x2001_0002_0000_0000_0000_0000_0000_0022,
    0x2001_0002_0000_0000_0000_0000_0000_0023,
];

/// The MAC of IPv6 backend `ip`.
pub fn bmac6(ip: u128) -> MacAddr {
    MacAddr([2, 0, 0, 0, 6, ip.to_be_bytes()[15]])
}

/// The service [`VIP6`]:80 in `mode` over [`BACKENDS6`] on `backend_port`.
pub fn service6(mode: Mode, backend_port: u16) -> ServiceConfig {
    ServiceConfig {
        name: "web6".into(),
        vip: std::net::Ipv6Addr::from(VIP6).into(),
        backends: BACKENDS6
            .iter()
            .map(|&b| BackendConfig {
                addr: (std::net::Ipv6Addr::from(b), backend_port).into(),
                weight: 1,
                vtep: None,
                vtep_mac: None,
            })
            .collect(),
        ..service(mode, backend_port, &[])
    }
}

/// A TCP segment over IPv6; `flags` as [`tcp_frame`].
pub fn tcp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    (src, dst): (u128, u128),
    sport: u16,
    dport: u16,
    flags: &str,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(src.to_be_bytes(), dst.to_be_bytes(), 64)
        .tcp(sport, dport, 1000, 64240);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(77);
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    v
}

/// A UDP datagram over IPv6.
pub fn udp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    (src, dst): (u128, u128),
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(src.to_be_bytes(), dst.to_be_bytes(), 64)
        .udp(sport, dport)
        .write(&mut v, b"query")
        .unwrap();
    v
}

/// Parses an IPv6 TCP or UDP frame with etherparse and checks its
/// transport checksum; returns (src, dst, sport, dport).
pub fn verify6(frame: &[u8]) -> (u128, u128, u16, u16) {
    use etherparse::{Ipv6Header, UdpHeader};
    let (ip, rest) = Ipv6Header::from_slice(&frame[14..]).unwrap();
    let (s, d) = (
        u128::from_be_bytes(ip.source),
        u128::from_be_bytes(ip.destination),
    );
    if ip.next_header == etherparse::IpNumber::UDP {
        let (u, payload) = UdpHeader::from_slice(rest).unwrap();
        let want = u
            .calc_checksum_ipv6_raw(ip.source, ip.destination, payload)
            .unwrap();
        assert_eq!(u.checksum, want, "UDP checksum");
        return (s, d, u.source_port, u.destination_port);
    }
    let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
    let want = tcp
        .calc_checksum_ipv6_raw(ip.source, ip.destination, payload)
        .unwrap();
    assert_eq!(tcp.checksum, want, "TCP checksum");
    (s, d, tcp.source_port, tcp.destination_port)
}
