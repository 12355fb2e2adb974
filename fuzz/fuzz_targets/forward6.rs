//! The IPv6 forward pipeline (issue 17): one Forwarder with a 32-flow IPv6
//! table and a snapshot with an IPv6 full-NAT and an IPv6 DSR service, fed
//! a sequence of frames decoded from the input: raw bytes, client TCP/UDP
//! segments (optionally behind a Hop-by-Hop header), backends' replies to
//! live flows, Neighbor Solicitations (valid or not), Packet Too Big
//! errors quoting live flows (corrupted or not), clock steps and sweeps.
//!
//! Invariants, after every frame: no panic; the frame keeps its length;
//! `flows6.len() <= capacity`; a Tx frame is from podlb's MAC and is IPv6
//! whose transport checksum (TCP, UDP) is right if it was on input (full
//! checksums) and whose ICMPv6 checksum is right; a TxOut frame is a
//! Neighbor Advertisement with hop limit 255 and a right checksum.
#![no_main]
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use podlb_core::flow::{FlowTable, Timeouts};
use podlb_core::forward::{Forwarder, NatPorts, PacketMeta, Verdict};
use podlb_core::model::{BackendConfig, Mode, Protocol, ServiceConfig};
use podlb_core::neighbor::NeighborTable;
use podlb_core::service::Snapshot;
use podlb_core::stats::WorkerStats;
use podlb_fuzz::{ones_sum, pseudo_v6, sums_to_ones, Reader};
use podlb_wire::MacAddr;

const CAPACITY: usize = 32;
const MAX_FRAMES: u64 = 128;
const LB: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const TIMEOUTS: Timeouts = Timeouts {
    syn_ms: 2_000,
    established_ms: 60_000,
    fin_ms: 5_000,
    close_ms: 1_000,
    udp_unanswered_ms: 30_000,
    udp_answered_ms: 120_000,
};

fn a6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last)
}
const VIP_NAT: u16 = 0x100;
const VIP_DSR: u16 = 0x101;
const NAT_BACKENDS: [u16; 3] = [0x21, 0x22, 0x23];
const DSR_BACKENDS: [u16; 2] = [0x31, 0x32];

fn bmac(b: u16) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, b as u8])
}

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let svc = |name: &str, vip: u16, port, mode, backends: &[u16], bport, protocol| ServiceConfig {
            name: name.into(),
            vip: IpAddr::V6(a6(vip)),
            port,
            protocol,
            mode,
            backends: backends
                .iter()
                .map(|&b| BackendConfig {
                    addr: SocketAddr::new(IpAddr::V6(a6(b)), bport),
                    weight: 1,
                    vtep: None,
                    vtep_mac: None,
                })
                .collect(),
            table_size: 1009,
            health_check: None,
            vxlan_port: podlb_core::model::DEFAULT_VXLAN_PORT,
            vni: podlb_core::model::DEFAULT_VNI,
            mss_clamp: Some(1200),
            source_ranges: Vec::new(),
            affinity: Default::default(),
            udp_hash: Default::default(),
        };
        let services = [
            svc("web6", VIP_NAT, 80, Mode::Nat, &NAT_BACKENDS, 8080, Protocol::Tcp),
            svc("dns6", VIP_NAT, 80, Mode::Nat, &NAT_BACKENDS, 5353, Protocol::Udp),
            svc("direct6", VIP_DSR, 443, Mode::Dsr, &DSR_BACKENDS, 443, Protocol::Tcp),
        ];
        Snapshot::build(1, &services, |_, a| match a.ip() {
            IpAddr::V6(ip) => u16::from(ip.octets()[15]),
            IpAddr::V4(ip) => u16::from(ip.octets()[3]),
        })
        .unwrap()
    })
}

/// Ethernet + IPv6 (+ an 8-byte Hop-by-Hop header with `hbh`) + `l4`
/// (next header `proto`), whose checksum field at `csum_at` is filled
/// right (or, with `partial`, with the pseudo-header sum a device that
/// offloads would leave).
fn frame6(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    (proto, mut l4, csum_at): (u8, Vec<u8>, Option<usize>),
    hbh: bool,
    partial: bool,
) -> Vec<u8> {
    if let Some(at) = csum_at {
        if l4.len() >= at + 2 {
            l4[at..at + 2].fill(0);
            let p = pseudo_v6(src, dst, proto, l4.len());
            let c = if partial { ones_sum(&[], p) } else { !ones_sum(&l4, p) };
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    let ext: &[u8] = if hbh { &[0, 0, 1, 4, 0, 0, 0, 0] } else { &[] };
    let mut f = Vec::with_capacity(14 + 40 + ext.len() + l4.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(ext.len() + l4.len()).unwrap().to_be_bytes());
    f.push(if hbh { 0 } else { proto });
    f.push(64);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    if hbh {
        let mut e = ext.to_vec();
        e[0] = proto;
        f.extend_from_slice(&e);
    }
    f.extend_from_slice(&l4);
    f
}

fn tcp(sport: u16, dport: u16, flags: u8, mss: bool, payload: &[u8]) -> Vec<u8> {
    let opt: &[u8] = if mss { &[2, 4, 0x05, 0xb4] } else { &[] };
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 9]);
    t.push(((20 + opt.len()) as u8 / 4) << 4);
    t.push(flags);
    t.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(opt);
    t.extend_from_slice(payload);
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// The upper layer of an IPv6 frame (after at most a Hop-by-Hop header).
fn upper(f: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr, u8, &[u8])> {
    if f.len() < 54 || f[12..14] != [0x86, 0xdd] {
        return None;
    }
    let ip = &f[14..];
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let end = (40 + plen).min(ip.len());
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
    let (nh, off) = if ip[6] == 0 { (*ip.get(40)?, 48) } else { (ip[6], 40) };
    Some((src, dst, nh, ip.get(off..end)?))
}

fn l4_ok(f: &[u8]) -> Option<bool> {
    let (src, dst, nh, l4) = upper(f)?;
    match nh {
        6 | 17 | 58 => Some(sums_to_ones(l4, pseudo_v6(src, dst, nh, l4.len()))),
        _ => None,
    }
}

fn check_tx(frame: &[u8], meta: PacketMeta, ok_before: Option<bool>) {
    assert_eq!(&frame[6..12], &LB.0, "Tx from podlb's MAC");
    let (_, _, nh, _) = upper(frame).expect("Tx: IPv6");
    let ok = l4_ok(frame).expect("Tx: TCP, UDP or ICMPv6");
    match nh {
        58 => assert!(ok, "Tx: ICMPv6 checksum"),
        _ if !meta.csum_partial && ok_before == Some(true) => {
            assert!(ok, "Tx: transport checksum")
        }
        _ if meta.csum_partial && !meta.tx_keeps_partial && ok_before.is_some() => {
            assert!(ok, "Tx: completed partial checksum")
        }
        _ => {}
    }
}

fn meta(bits: u8) -> PacketMeta {
    PacketMeta {
        csum_partial: bits & 1 != 0,
        tx_keeps_partial: bits & 2 != 0,
        vlan_stripped: false,
        truncated: false,
        gso_size: 0,
    }
}

fn feed(f: &mut Forwarder, frame: &mut [u8], m: PacketMeta, now: u32) {
    let len = frame.len();
    let before = l4_ok(frame);
    let v = f.forward(snapshot(), frame, m, now);
    assert_eq!(frame.len(), len);
    match v {
        Verdict::Tx => check_tx(frame, m, before),
        Verdict::TxOut => {
            for o in f.out.frames() {
                let (_, _, nh, l4) = upper(o).expect("TxOut: IPv6");
                assert_eq!((nh, o[21], l4[0]), (58, 255, 136), "a Neighbor Advertisement");
                assert_eq!(l4_ok(o), Some(true), "NA checksum");
            }
        }
        _ => {}
    }
    assert!(f.flows6.len() <= f.flows6.capacity());
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let cfg = r.u8();
    let neighbors6 = Arc::new(NeighborTable::new(16));
    for (i, &b) in NAT_BACKENDS.iter().chain(&DSR_BACKENDS).enumerate() {
        let ip = u128::from(a6(b));
        neighbors6.track(ip);
        if cfg >> 3 & (1 << i) == 0 {
            neighbors6.learn(ip, bmac(b), 0);
        }
    }
    neighbors6.track(u128::from(a6(0x10)));
    let mut f = Forwarder {
        mac: LB,
        own_mac: LB,
        own_ip: None,
        active: cfg & 1 == 0,
        accept_mode: cfg & 2 == 0,
        mac6: LB,
        active6: cfg & 1 == 0,
        flows: Arc::new(FlowTable::new(CAPACITY, TIMEOUTS)),
        neighbors: Arc::new(NeighborTable::new(16)),
        flows6: Arc::new(FlowTable::new(CAPACITY, TIMEOUTS)),
        neighbors6,
        own_ip6: (cfg & 4 != 0).then_some(u128::from(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2))),
        stats: Arc::new(WorkerStats::default()),
        ports: NatPorts::new(0, 1, r.u32()),
        pickup: r.bool(),
        sync: None,
        local_ip: 0,
        out: Default::default(),
        refused: None,
        icmp_errors: r.bool(),
        frags: Default::default(),
    };
    let mut now = r.u32();
    let mut frames = 0u64;
    while !r.is_empty() && frames < MAX_FRAMES {
        frames += 1;
        let op = r.u8();
        let m = meta(op >> 5);
        match op % 6 {
            0 => {
                let len = usize::from(r.u16() % 1500);
                let mut frame = r.take(len).to_vec();
                feed(&mut f, &mut frame, m, now);
            }
            1 => {
                let client = a6(0x10 + u16::from(r.u8() % 4));
                let sport = 40000 + u16::from(r.u8() % 32);
                let (vip, port) = if op & 8 == 0 { (VIP_NAT, 80) } else { (VIP_DSR, 443) };
                let n = usize::from(r.u8() % 48);
                let payload = r.take(n).to_vec();
                let l4 = if op & 16 == 0 {
                    (6, tcp(sport, port, r.u8(), r.bool(), &payload), Some(16))
                } else {
                    (17, udp(sport, port, &payload), Some(6))
                };
                let mut frame = frame6((CLIENT_MAC, LB.0), (client, a6(vip)), l4, r.bool(), m.csum_partial);
                feed(&mut f, &mut frame, m, now);
            }
            2 | 3 => {
                // A live NAT flow: its backend answers (2), or a router
                // sends Packet Too Big about it from either side (3).
                let mut live = Vec::new();
                f.flows6.for_each(|fl| {
                    live.push(*fl);
                    true
                });
                let pick = usize::from(r.u8());
                let Some(fl) = live.get(pick % live.len().max(1)).copied() else {
                    continue;
                };
                let (b, vip, c) = (Ipv6Addr::from(fl.backend), Ipv6Addr::from(fl.key.vip), Ipv6Addr::from(fl.key.client));
                let reply = if fl.key.proto == 6 {
                    (6, tcp(fl.backend_port, fl.nat_port, r.u8(), false, b"ok"), Some(16))
                } else {
                    (17, udp(fl.backend_port, fl.nat_port, b"ok"), Some(6))
                };
                if op % 6 == 2 {
                    let mut frame = frame6((bmac(0x21).0, LB.0), (b, vip), reply, false, m.csum_partial);
                    feed(&mut f, &mut frame, m, now);
                    continue;
                }
                // The quoted packet: a reply podlb sent the client, or a
                // segment it sent the backend.
                let quoted = if r.bool() {
                    frame6((LB.0, CLIENT_MAC), (vip, c), (fl.key.proto, tcp(fl.key.vport, fl.key.client_port, 0x10, false, b""), Some(16)), false, false)
                } else {
                    frame6((LB.0, bmac(0x21).0), (vip, b), (fl.key.proto, tcp(fl.nat_port, fl.backend_port, 0x10, false, b""), Some(16)), false, false)
                };
                let cut = 14 + usize::from(r.u8() % 80);
                let mut body = vec![2, 0, 0, 0, 0, 0, 5, 0];
                body.extend_from_slice(&quoted[14..cut.min(quoted.len())]);
                if let Some(x) = body.get_mut(usize::from(r.u8()) % 64) {
                    if r.bool() {
                        *x ^= r.u8();
                    }
                }
                let router = a6(0x9001);
                let mut frame = frame6(([2, 0, 0, 0, 0, 0x99], LB.0), (router, vip), (58, body, Some(2)), false, false);
                feed(&mut f, &mut frame, PacketMeta::default(), now);
            }
            4 => {
                // A Neighbor Solicitation for a VIP (or another address),
                // to its solicited-node group, with hop limit and code
                // sometimes wrong.
                let target = a6([VIP_NAT, VIP_DSR, 0x21, 0x77][usize::from(r.u8() % 4)]);
                let mut ns = vec![135, r.u8() % 2, 0, 0, 0, 0, 0, 0];
                ns.extend_from_slice(&target.octets());
                if r.bool() {
                    ns.extend_from_slice(&[1, 1]);
                    ns.extend_from_slice(&CLIENT_MAC);
                }
                let o = target.octets();
                let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
                let src = if r.bool() { Ipv6Addr::UNSPECIFIED } else { a6(0x10) };
                let mac = [0x33, 0x33, 0xff, o[13], o[14], o[15]];
                let mut frame = frame6((CLIENT_MAC, mac), (src, group), (58, ns, Some(2)), false, false);
                if r.bool() {
                    frame[21] = 255; // the hop limit NDP requires
                }
                feed(&mut f, &mut frame, PacketMeta::default(), now);
            }
            _ => {
                now = now.wrapping_add(u32::from(r.u16()) * 4);
                f.flows6.sweep(0, f.flows6.slot_count(), now, |_| {});
            }
        }
    }
});
