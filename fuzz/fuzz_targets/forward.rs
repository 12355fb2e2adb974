//! The forward pipeline: one Forwarder (32-flow table) and a snapshot with
//! a full-NAT and a DSR service, fed a sequence of frames (raw bytes, or
//! TCP segments built from a few fields so that flows, replies and table
//! pressure are reached), clock steps and sweeps, all decoded from the input.
//!
//! Invariants, after every frame: no panic; `flows.len() <= capacity`;
//! each frame is counted exactly once as what its verdict says (drop
//! reason, ignored, or one ARP reply / ICMP reply / backend packet for a
//! Tx; nothing for a Punt); a Tx frame has the same length, is a
//! well-formed Ethernet frame from podlb's MAC carrying a valid ARP reply,
//! or IPv4 with a correct header checksum and a correct ICMP checksum, or a
//! TCP checksum that is correct if it was on input (full checksums), is
//! complete (partial checksum and no vnet header on TX: PacketMeta's
//! contract) or is the new pseudo-header sum (partial kept for the device).
#![no_main]
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use podlb_core::flow::{FlowTable, Timeouts};
use podlb_core::forward::{Forwarder, NatPorts, PacketMeta, RefusalQueue, Verdict};
use podlb_core::neighbor::NeighborTable;
use podlb_core::service::Snapshot;
use podlb_core::stats::{BackendCounter, DropReason, Event, WorkerStats};
use podlb_core::model::{BackendConfig, Mode, Protocol, ServiceConfig};
use podlb_wire::{arp, ethernet, icmp, ipv4, tcp, udp, MacAddr};
use podlb_fuzz::{l4_ok, ones_eq, ones_sum, pseudo, sums_to_ones, Reader};

/// Small, so that a short input fills it (eviction, `flow_table_full`, NAT
/// port reuse) and each input is cheap: 6 buckets of 8 ways, two choices.
const CAPACITY: usize = 32;
/// Frames per input at most (a burst of SYNs, below, is up to 47).
const MAX_FRAMES: u64 = 128;
const LB: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const OWN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);
const OWN_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const VIP_NAT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP_DSR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const NAT_BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 0, 21),
    Ipv4Addr::new(198, 18, 0, 22),
    Ipv4Addr::new(198, 18, 0, 23),
];
const DSR_BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 31), Ipv4Addr::new(198, 18, 0, 32)];
const TIMEOUTS: Timeouts = Timeouts {
    syn_ms: 2_000,
    established_ms: 60_000,
    fin_ms: 5_000,
    close_ms: 1_000,
    udp_unanswered_ms: 30_000,
    udp_answered_ms: 120_000,
};

fn bmac(ip: Ipv4Addr) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, ip.octets()[3]])
}
fn client(i: u8) -> (Ipv4Addr, MacAddr) {
    let i = i % 4;
    (
        Ipv4Addr::new(198, 18, 0, 10 + i),
        MacAddr([2, 0, 0, 0, 2, i]),
    )
}

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let svc = |name: &str, vip: Ipv4Addr, port, mode, backends: &[Ipv4Addr], bport| ServiceConfig {
            name: name.into(),
            vip: vip.into(),
            port,
            mode,
            backends: backends
                .iter()
                .map(|b| BackendConfig {
                    addr: SocketAddrV4::new(*b, bport).into(),
                    weight: 1 + u32::from(b.octets()[3] % 2),
                    vtep: None,
                    vtep_mac: None,
                })
                .collect(),
            table_size: 1009,
            health_check: None,
            vxlan_port: podlb_core::model::DEFAULT_VXLAN_PORT,
            vni: podlb_core::model::DEFAULT_VNI,
            mss_clamp: None,
            source_ranges: Vec::new(),
            affinity: Default::default(),
            udp_hash: Default::default(),
            protocol: Default::default(),
        };
        let services = [
            svc("web", VIP_NAT, 80, Mode::Nat, &NAT_BACKENDS, 8080),
            svc("direct", VIP_DSR, 443, Mode::Dsr, &DSR_BACKENDS, 443),
            // UDP on the TCP service's VIP and port.
            ServiceConfig {
                protocol: Protocol::Udp,
                ..svc("dns", VIP_NAT, 80, Mode::Nat, &NAT_BACKENDS, 5353)
            },
        ];
        Snapshot::build(1, &services, |_, a| match a.ip() {
            std::net::IpAddr::V4(ip) => u16::from(ip.octets()[3]),
            std::net::IpAddr::V6(ip) => u16::from(ip.octets()[15]),
        })
        .unwrap()
    })
}

/// One WorkerStats for every input: it is 320 KiB of counters, and the
/// checks only look at how each frame changes them.
fn stats() -> Arc<WorkerStats> {
    static STATS: OnceLock<Arc<WorkerStats>> = OnceLock::new();
    STATS
        .get_or_init(|| Arc::new(WorkerStats::default()))
        .clone()
}

const STAT_SLOTS: [u16; 5] = [21, 22, 23, 31, 32];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Counts {
    drops: [u64; DropReason::ALL.len()],
    ignored: u64,
    tx_kinds: u64,
    others: [u64; 3],
}

fn counts(s: &WorkerStats) -> Counts {
    let mut drops = [0; DropReason::ALL.len()];
    for (d, r) in drops.iter_mut().zip(DropReason::ALL) {
        *d = s.drops(r);
    }
    let backend = |c| {
        STAT_SLOTS
            .iter()
            .map(|&k| s.backend_value(k, c))
            .sum::<u64>()
    };
    Counts {
        drops,
        ignored: s.events(Event::Ignored),
        tx_kinds: s.events(Event::ArpRepliesSent)
            + s.events(Event::IcmpEchoReplies)
            + backend(BackendCounter::PacketsToBackend)
            + backend(BackendCounter::PacketsToClient),
        // Counters forward() never touches: the device counts RX and TX.
        others: [
            s.events(Event::RxPackets),
            s.events(Event::TxPackets),
            s.events(Event::RxBytes),
        ],
    }
}

/// What the input frame's TCP checksum was, if it is IPv4/TCP.
struct TcpIn {
    full_ok: bool,
    partial_ok: bool,
}

fn tcp_in(frame: &[u8]) -> Option<TcpIn> {
    let e = ethernet::Frame::new_checked(frame).ok()?;
    let ip = ipv4::Packet::new_checked(e.payload()).ok()?;
    if ip.is_fragment() {
        return None;
    }
    if ip.protocol() == ipv4::PROTO_UDP {
        let u = udp::Packet::new_checked(ip.payload()).ok()?;
        let full_ok = u.checksum() == 0 || l4_ok(ip.payload(), ip.src(), ip.dst(), 17);
        return Some(TcpIn {
            full_ok,
            partial_ok: false,
        });
    }
    if ip.protocol() != ipv4::PROTO_TCP {
        return None;
    }
    let seg = ip.payload();
    let t = tcp::Packet::new_checked(seg).ok()?;
    let want = ones_sum(&[], pseudo(ip.src(), ip.dst(), 6, seg.len()));
    Some(TcpIn {
        full_ok: l4_ok(seg, ip.src(), ip.dst(), 6),
        partial_ok: ones_eq(t.checksum(), want),
    })
}

fn check_tx(frame: &[u8], meta: PacketMeta, before: Option<TcpIn>) {
    let e = ethernet::Frame::new_checked(frame).expect("Tx: Ethernet");
    assert!(e.src() == LB || e.src() == OWN_MAC, "Tx from podlb's MAC");
    match e.ethertype() {
        ethernet::ETHERTYPE_ARP => {
            let p = arp::Packet::new_checked(e.payload()).expect("Tx: ARP");
            assert_eq!(p.operation(), arp::OP_REPLY);
            assert_eq!(p.sender_hw(), e.src());
            assert_eq!(p.target_hw(), e.dst());
        }
        ethernet::ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::new_checked(e.payload()).expect("Tx: IPv4");
            assert!(sums_to_ones(ip.header(), 0), "Tx: IPv4 header checksum");
            if ip.frag_offset() != 0 {
                // A later fragment, steered after its first: no header to check.
                assert!(matches!(ip.protocol(), ipv4::PROTO_TCP | ipv4::PROTO_UDP));
                return;
            }
            match ip.protocol() {
                ipv4::PROTO_ICMP => {
                    let p = icmp::Packet::new_checked(ip.payload()).expect("Tx: ICMP");
                    assert!(sums_to_ones(ip.payload(), 0), "Tx: ICMP checksum");
                    if p.is_error() {
                        // A translated error: the quote is whole and its
                        // header checksum right if it was before.
                        let q = icmp::Quoted::new_checked(p.payload()).expect("Tx: quote");
                        assert!(ipv4::PROTO_TCP == q.protocol() || ipv4::PROTO_UDP == q.protocol());
                    } else {
                        assert_eq!(p.msg_type(), icmp::TYPE_ECHO_REPLY);
                    }
                }
                ipv4::PROTO_UDP if ip.more_frags() => {}
                ipv4::PROTO_UDP => {
                    let u = udp::Packet::new_checked(ip.payload()).expect("Tx: UDP");
                    let before = before.expect("UDP out, UDP in");
                    if !meta.csum_partial && before.full_ok && u.checksum() != 0 {
                        assert!(l4_ok(ip.payload(), ip.src(), ip.dst(), 17), "Tx: UDP checksum");
                    }
                }
                ipv4::PROTO_TCP if ip.more_frags() => {}
                ipv4::PROTO_TCP => {
                    let seg = ip.payload();
                    let t = tcp::Packet::new_checked(seg).expect("Tx: TCP");
                    let before = before.expect("TCP out, TCP in");
                    if !meta.csum_partial {
                        if before.full_ok {
                            assert!(l4_ok(seg, ip.src(), ip.dst(), 6), "Tx: TCP checksum");
                        }
                    } else if !meta.tx_keeps_partial {
                        // PacketMeta: "When false, a partial checksum is
                        // completed in software before the frame is sent."
                        assert!(
                            l4_ok(seg, ip.src(), ip.dst(), 6),
                            "Tx: completed partial checksum"
                        );
                    } else if before.partial_ok {
                        let want = ones_sum(&[], pseudo(ip.src(), ip.dst(), 6, seg.len()));
                        assert!(
                            ones_eq(t.checksum(), want),
                            "Tx: partial = pseudo-header sum"
                        );
                    }
                }
                p => panic!("Tx of IPv4 protocol {p}"),
            }
        }
        t => panic!("Tx of EtherType {t:#06x}"),
    }
}

/// One end of a TCP segment.
#[derive(Clone, Copy)]
struct End {
    mac: MacAddr,
    ip: Ipv4Addr,
    port: u16,
}

/// A TCP segment from `from` to `to` built from fields (with an MSS option
/// if `mss`), with a correct checksum (or, with `partial`, the
/// pseudo-header sum a device that offloads would leave), summed here
/// rather than by `podlb_wire`.
fn tcp_frame(from: End, to: End, flags: u8, mss: bool, payload: &[u8], partial: bool) -> Vec<u8> {
    let t = tcp::Repr {
        src_port: from.port,
        dst_port: to.port,
        seq: 0x0102_0304,
        ack: 0x0a0b_0c0d,
        flags,
        window: 64240,
        mss: mss.then_some(1460),
    };
    let seg_len = t.header_len() + payload.len();
    let ip = ipv4::Repr {
        src: from.ip,
        dst: to.ip,
        protocol: ipv4::PROTO_TCP,
        ttl: 64,
        ident: 0,
        payload_len: u16::try_from(seg_len).unwrap(),
    };
    let eth = ethernet::Repr {
        dst: to.mac,
        src: from.mac,
        ethertype: ethernet::ETHERTYPE_IPV4,
    };
    let mut f = vec![0u8; eth.header_len() + ip.buffer_len()];
    let mut e = eth.emit(&mut f).unwrap();
    let mut i = ip.emit(e.payload_mut()).unwrap();
    let mut seg = t.emit(i.payload_mut()).unwrap();
    seg.payload_mut().copy_from_slice(payload);
    let p = pseudo(from.ip, to.ip, 6, seg_len);
    let c = if partial {
        ones_sum(&[], p)
    } else {
        !ones_sum(seg.as_ref(), p)
    };
    seg.set_checksum(c);
    f
}

struct Lab {
    f: Forwarder,
    now: u32,
    frames: u64,
    /// The counters after the last frame: only `forward` changes them, so
    /// they are the next frame's "before" (read once a frame, not twice).
    counts: Counts,
}

impl Lab {
    fn feed(&mut self, frame: &mut [u8], meta: PacketMeta) {
        let snap = snapshot();
        let before = self.counts;
        let tcp_before = tcp_in(frame);
        let len = frame.len();
        // The worker's look-ahead runs on unchecked frames: both passes must
        // take anything and change nothing (the counters are compared below).
        for pass in 0..2 {
            Forwarder::prefetch(&self.f.flows, snap, frame, pass, &|_| {});
        }
        let v = self.f.forward(snap, frame, meta, self.now);
        self.frames += 1;
        assert_eq!(frame.len(), len);
        let after = counts(&self.f.stats);
        let mut want = before;
        match v {
            Verdict::Drop(r) => {
                let i = DropReason::ALL.iter().position(|&x| x == r).unwrap();
                want.drops[i] += 1;
            }
            Verdict::Ignore => want.ignored += 1,
            Verdict::Tx => {
                want.tx_kinds += 1;
                check_tx(frame, meta, tcp_before);
            }
            Verdict::Punt => {}
            // Built in the worker's scratch (VXLAN encapsulation or
            // decapsulation; this snapshot has no vxlan service, so rare):
            // at least one frame, and each at least an Ethernet header.
            Verdict::TxOut => {
                assert!(self.f.out.len() > 0);
                assert!(self.f.out.frames().all(|f| f.len() >= 14));
                want = after;
            }
        }
        assert_eq!(after, want, "counted once, as {v:?}");
        self.counts = after;
        assert!(self.f.flows.len() <= self.f.flows.capacity());
        assert!(self.f.flows.capacity() == CAPACITY);
    }
}

fn meta(bits: u8) -> PacketMeta {
    PacketMeta {
        csum_partial: bits & 1 != 0,
        tx_keeps_partial: bits & 2 != 0,
        vlan_stripped: bits & 4 != 0,
        truncated: bits & 8 != 0,
        gso_size: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let cfg = r.u8();
    let neighbors = Arc::new(NeighborTable::new(16));
    for (i, b) in NAT_BACKENDS.iter().chain(&DSR_BACKENDS).enumerate() {
        neighbors.track(u32::from(*b));
        // Bits 4..7 leave some backends unresolved.
        if cfg >> 3 & (1 << i) == 0 {
            neighbors.learn(u32::from(*b), bmac(*b), 0);
        }
    }
    let f = Forwarder {
        mac: LB,
        own_mac: if cfg & 8 != 0 { OWN_MAC } else { LB },
        own_ip: (cfg & 4 != 0).then_some(u32::from(OWN_IP)),
        active: cfg & 1 == 0,
        accept_mode: cfg & 2 == 0,
        mac6: LB,
        active6: cfg & 1 == 0,
        flows: Arc::new(FlowTable::new(CAPACITY, TIMEOUTS)),
        neighbors,
        flows6: Arc::new(FlowTable::new(CAPACITY, TIMEOUTS)),
        neighbors6: Arc::new(NeighborTable::new(16)),
        own_ip6: None,
        stats: stats(),
        ports: NatPorts::new(0, 1, r.u32()),
        pickup: r.bool(),
        sync: None,
        local_ip: u32::from(OWN_IP),
        out: Default::default(),
        // Small, so that it also fills up.
        refused: Some(Arc::new(RefusalQueue::new(4))),
        icmp_errors: r.bool(),
        frags: Default::default(),
    };
    let mut lab = Lab {
        counts: counts(&f.stats),
        f,
        now: r.u32(),
        frames: 0,
    };
    while !r.is_empty() && lab.frames < MAX_FRAMES {
        let op = r.u8();
        match op % 8 {
            // Raw bytes, e.g. a captured frame.
            0 | 1 => {
                let len = usize::from(r.u16() % 2048);
                let mut frame = r.take(len).to_vec();
                lab.feed(&mut frame, meta(op >> 4));
            }
            // Client -> VIP.
            2 => {
                let (cip, cmac) = client(r.u8());
                let (vip, port) = if op & 8 == 0 {
                    (VIP_NAT, 80)
                } else {
                    (VIP_DSR, 443)
                };
                let sport = 40000 + u16::from(r.u8() % 64);
                let flags = r.u8();
                let plen = usize::from(r.u8() % 64);
                let payload = r.take(plen);
                let m = meta(r.u8());
                let dst_mac = if op & 16 == 0 { LB } else { OWN_MAC };
                let from = End {
                    mac: cmac,
                    ip: cip,
                    port: sport,
                };
                let to = End {
                    mac: dst_mac,
                    ip: vip,
                    port,
                };
                let mut frame = tcp_frame(from, to, flags, op & 32 != 0, payload, m.csum_partial);
                lab.feed(&mut frame, m);
            }
            // A backend answers one of the live NAT flows (its reverse tuple).
            3 => {
                let pick = usize::from(r.u16());
                let flags = r.u8();
                let m = meta(r.u8());
                let mut flows = Vec::new();
                lab.f.flows.for_each(|fl| {
                    if fl.nat_port != 0 {
                        flows.push(*fl);
                    }
                    true
                });
                if let Some(fl) = flows.get(pick % flows.len().max(1)) {
                    let b = Ipv4Addr::from(fl.backend);
                    let from = End {
                        mac: bmac(b),
                        ip: b,
                        port: fl.backend_port,
                    };
                    let to = End {
                        mac: LB,
                        ip: Ipv4Addr::from(fl.key.vip),
                        port: fl.nat_port,
                    };
                    let body = b"HTTP/1.1 200 OK\r\n";
                    let mut frame = tcp_frame(from, to, flags, false, body, m.csum_partial);
                    lab.feed(&mut frame, m);
                }
            }
            // The clock moves; the control thread sweeps part of the table.
            4 => {
                let step = u32::from(r.u16());
                lab.now = lab
                    .now
                    .wrapping_add(if op & 8 != 0 { step * 100 } else { step });
                let from = usize::from(r.u16());
                let n = lab.f.flows.slot_count() / 4;
                lab.f.flows.sweep(from, n, lab.now, |_| {});
                assert!(lab.f.flows.len() <= CAPACITY);
            }
            // A UDP datagram from a client to the UDP service, or from a
            // backend to a live UDP flow's NAT port; whole or as fragments.
            6 => {
                let (cip, cmac) = client(r.u8());
                let sport = 40000 + u16::from(r.u8() % 64);
                let plen = usize::from(r.u16() % 3000);
                let payload = r.take(plen).to_vec();
                let frag = r.u8();
                let mut frame = udp_frame(cmac, cip, sport, VIP_NAT, 80, &payload);
                for mut f in fragments(&mut frame, frag) {
                    lab.feed(&mut f, PacketMeta::default());
                }
            }
            // An ICMP error quoting a live flow (either side), or bytes
            // shaped like one.
            7 => {
                let pick = usize::from(r.u16());
                let kind = r.u8();
                let quote = usize::from(r.u8() % 64);
                let mut flows = Vec::new();
                lab.f.flows.for_each(|fl| {
                    flows.push(*fl);
                    true
                });
                if let Some(fl) = flows.get(pick % flows.len().max(1)) {
                    let vip = Ipv4Addr::from(fl.key.vip);
                    // What podlb sent: a reply to the client, or a segment
                    // to the backend.
                    let (src, dst, sport, dport) = if kind & 1 == 0 {
                        (vip, Ipv4Addr::from(fl.key.client), fl.key.vport, fl.key.client_port)
                    } else {
                        (vip, Ipv4Addr::from(fl.backend), fl.nat_port, fl.backend_port)
                    };
                    let mut about = if fl.key.proto == ipv4::PROTO_UDP {
                        udp_frame(LB, src, sport, dst, dport, b"quoted datagram")
                    } else {
                        let from = End { mac: LB, ip: src, port: sport };
                        let to = End { mac: LB, ip: dst, port: dport };
                        tcp_frame(from, to, tcp::ACK, false, b"quoted", false)
                    };
                    if kind & 2 != 0 {
                        let n = about.len();
                        about[n - 1] ^= r.u8();
                    }
                    let mut e = icmp_error(kind, &about, quote);
                    lab.feed(&mut e, PacketMeta::default());
                }
            }
            // A burst of SYNs from one client: table pressure and eviction.
            _ => {
                let (cip, cmac) = client(r.u8());
                // Up to half again the capacity: past it, into eviction.
                let n = usize::from(r.u8() % 48);
                let base = r.u16();
                let vip = if op & 8 == 0 {
                    (VIP_NAT, 80)
                } else {
                    (VIP_DSR, 443)
                };
                for k in 0..n {
                    let from = End {
                        mac: cmac,
                        ip: cip,
                        port: base.wrapping_add(k as u16),
                    };
                    let to = End {
                        mac: LB,
                        ip: vip.0,
                        port: vip.1,
                    };
                    let mut frame = tcp_frame(from, to, tcp::SYN, true, &[], false);
                    lab.feed(&mut frame, PacketMeta::default());
                }
            }
        }
    }
});

/// A UDP datagram from a client with its checksum.
fn udp_frame(mac: MacAddr, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp::Repr {
        src_port: sport,
        dst_port: dport,
        payload_len: u16::try_from(payload.len()).unwrap(),
    };
    let ip = ipv4::Repr {
        src,
        dst,
        protocol: ipv4::PROTO_UDP,
        ttl: 64,
        ident: 7,
        payload_len: u16::try_from(u.buffer_len()).unwrap(),
    };
    let eth = ethernet::Repr {
        dst: LB,
        src: mac,
        ethertype: ethernet::ETHERTYPE_IPV4,
    };
    let mut v = vec![0u8; 14 + 20 + u.buffer_len()];
    let mut f = eth.emit(&mut v).unwrap();
    let mut p = ip.emit(f.payload_mut()).unwrap();
    let mut d = u.emit(p.payload_mut()).unwrap();
    d.payload_mut().copy_from_slice(payload);
    d.fill_checksum(src, dst);
    v
}

/// `frame` cut into IPv4 fragments of `8 * (1 + bits % 128)` bytes (all of
/// it as one when bits is 0), in order, or with the first last when bits
/// is odd.
fn fragments(frame: &mut [u8], bits: u8) -> Vec<Vec<u8>> {
    if bits == 0 {
        return vec![frame.to_vec()];
    }
    let size = 8 * (1 + usize::from(bits % 128));
    let hdr = frame[..34].to_vec();
    let body = frame[34..].to_vec();
    let mut out: Vec<Vec<u8>> = body
        .chunks(size)
        .enumerate()
        .map(|(i, c)| {
            let mut v = hdr.clone();
            v.extend_from_slice(c);
            let mut p = ipv4::Packet::new_resized(&mut v[14..]).unwrap();
            p.set_total_len(u16::try_from(20 + c.len()).unwrap());
            let more = (i + 1) * size < body.len();
            let off = u16::try_from(i * size / 8).unwrap() | if more { 0x2000 } else { 0 };
            v[14 + 6..14 + 8].copy_from_slice(&off.to_be_bytes());
            let mut p = ipv4::Packet::new_resized(&mut v[14..]).unwrap();
            p.fill_checksum();
            v
        })
        .collect();
    if bits & 1 == 1 {
        out.rotate_left(1);
    }
    out
}

/// An ICMP error from a router to the VIP quoting `about`'s IPv4 packet
/// (its header and `8 + quote` more bytes), type by `kind`.
fn icmp_error(kind: u8, about: &[u8], quote: usize) -> Vec<u8> {
    let (t, code) = match kind >> 2 & 3 {
        0 => (icmp::TYPE_DEST_UNREACH, icmp::CODE_FRAG_NEEDED),
        1 => (icmp::TYPE_TIME_EXCEEDED, 0),
        2 => (icmp::TYPE_PARAM_PROBLEM, 0),
        _ => (icmp::TYPE_DEST_UNREACH, 3),
    };
    let ip_in = &about[14..];
    let q = &ip_in[..(28 + quote).min(ip_in.len())];
    let mut m = vec![t, code, 0, 0, 0, 0, 0x05, 0x00];
    m.extend_from_slice(q);
    let mut view = icmp::Packet::new_checked(&mut m[..]).unwrap();
    view.fill_checksum();
    let dst = Ipv4Addr::new(ip_in[12], ip_in[13], ip_in[14], ip_in[15]);
    let ip = ipv4::Repr {
        src: Ipv4Addr::new(198, 18, 9, 1),
        dst,
        protocol: ipv4::PROTO_ICMP,
        ttl: 64,
        ident: 9,
        payload_len: u16::try_from(m.len()).unwrap(),
    };
    let eth = ethernet::Repr {
        dst: LB,
        src: MacAddr([2, 0, 0, 0, 9, 9]),
        ethertype: ethernet::ETHERTYPE_IPV4,
    };
    let mut v = vec![0u8; 14 + 20 + m.len()];
    let mut f = eth.emit(&mut v).unwrap();
    let mut p = ip.emit(f.payload_mut()).unwrap();
    p.payload_mut().copy_from_slice(&m);
    v
}
