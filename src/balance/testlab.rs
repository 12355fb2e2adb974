//! Test fixtures shared by the forward-pipeline and connection-sync tests:
//! one NAT service on 198.18.0.100:80 over three backends, a `Forwarder`
//! with the backends resolved, and TCP frames built and checked by
//! etherparse (an independent implementation, so a bug cannot cancel
//! itself).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use etherparse::{Ipv4Header, PacketBuilder, TcpHeader};

use crate::balance::flow::{FlowTable, Timeouts};
use crate::balance::forward::{Forwarder, NatPorts};
use crate::balance::neighbor::NeighborTable;
use crate::balance::service::Snapshot;
use crate::balance::stats::WorkerStats;
use crate::balance::sync::SyncQueue;
use crate::config::{BackendConfig, Mode, ServiceConfig};
use crate::wire::MacAddr;

pub const LB: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
pub const CLIENT: [u8; 4] = [198, 18, 0, 10];
pub const VIP: [u8; 4] = [198, 18, 0, 100];
pub const BACKENDS: [[u8; 4]; 3] = [[198, 18, 0, 21], [198, 18, 0, 22], [198, 18, 0, 23]];
pub const T: Timeouts = Timeouts {
    syn_ms: 10_000,
    established_ms: 3_600_000,
    fin_ms: 60_000,
    close_ms: 10_000,
};

/// The MAC backend `ip` answers ARP with.
pub fn bmac(ip: [u8; 4]) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, ip[3]])
}

/// The service VIP:80 in `mode` over the three backends on `backend_port`;
/// stats slot = the backend's last octet.
pub fn snapshot(mode: Mode, backend_port: u16) -> Snapshot {
    let backends = BACKENDS
        .iter()
        .map(|b| BackendConfig {
            addr: SocketAddrV4::new(Ipv4Addr::from(*b), backend_port),
            weight: 1,
        })
        .collect();
    let svc = ServiceConfig {
        name: "web".into(),
        vip: Ipv4Addr::from(VIP),
        port: 80,
        mode,
        backends,
        table_size: 65537,
        health_check: None,
    };
    Snapshot::build(1, &[svc], |_, a| a.ip().octets()[3] as u16).unwrap()
}

/// A serving worker with its own 4096-flow table and the backends resolved.
pub fn forwarder(pickup: bool, port_seed: u32, sync: Option<Arc<SyncQueue>>) -> Forwarder {
    let neighbors = Arc::new(NeighborTable::new(16));
    for b in BACKENDS {
        neighbors.track(u32::from_be_bytes(b));
        neighbors.learn(u32::from_be_bytes(b), bmac(b), 0);
    }
    Forwarder {
        mac: MacAddr(LB),
        own_mac: MacAddr(LB),
        own_ip: None,
        active: true,
        accept_mode: true,
        flows: Arc::new(FlowTable::new(4096, T)),
        neighbors,
        stats: Arc::new(WorkerStats::default()),
        ports: NatPorts::new(0, 1, port_seed),
        pickup,
        sync,
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
