//! The forward pipeline: one frame in, rewritten in place, one verdict out.
//!
//! ```text
//! frame ─► Ethernet ─┬─ ARP ─► request for a VIP? ─► reply in place ─► Tx
//!                    │         sender tracked?     ─► learn its MAC
//!                    └─ IPv4 to a VIP ─┬─ ICMP echo  ─► reply in place ─► Tx
//!                                      └─ TCP ─┬─ VIP:port of a service ─► flow lookup / Maglev
//!                                              │     ─► rewrite to backend ─► Tx
//!                                              └─ VIP:nat_port (reply)   ─► reverse lookup
//!                                                    ─► rewrite to client  ─► Tx
//! ```
//! Everything else addressed to podlb is dropped with a reason; frames that
//! are not podlb's business (not to its MAC, not to a VIP) are ignored and
//! left to the kernel. No allocation, no IO, no clock: `now_ms` comes in.
//!
//! One concern per file: this one classifies and dispatches (and holds the
//! worker's state and the look-ahead); `local.rs` answers for podlb itself
//! (ARP for the VIPs, ICMP echo); `nat.rs` steers segments to backends and
//! replies back to clients, with the full-NAT rewrite; `vxlan.rs`
//! encapsulates and decapsulates (RFC 7348); `gso.rs` cuts GSO frames into
//! segments; `mss.rs` clamps the MSS option. Classify parses a TCP segment
//! once into a `Segment` that travels through the handlers; they read and
//! write the frame only through the `podlb_wire` views.

#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod errors;
mod family;
mod frag;
mod gso;
mod ipv6;
mod local;
mod mss;
mod nat;
mod vxlan;

use std::sync::Arc;

use crate::flow::{FlowKey, FlowTable, ReverseKey};
use crate::neighbor::NeighborTable;
use crate::service::Snapshot;
use crate::stats::{DropReason, Event, WorkerStats};
use crate::sync::SyncQueue;
use family::Family;
pub use frag::Fragments;
pub use nat::{NatPorts, NAT_PORT_MIN};
use podlb_wire::peek::{self, FourTuple};
pub use podlb_wire::PacketMeta;
use podlb_wire::{ethernet, icmp, ipv4, ports, tcp, udp, MacAddr};

/// A backend that answered a client's SYN with a RST: reported by a worker
/// to the control loop, which holds the backend out of the snapshot for a
/// while (`flows.refused_hold_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Wide form (`crate::family`).
    pub backend: u128,
    pub port: u16,
}

/// Where workers report refusals: bounded and lock-free; a full queue drops
/// the report (the control loop has enough to act on already).
pub type RefusalQueue = crossbeam_queue::ArrayQueue<Refusal>;

/// What to do with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The frame was rewritten in place: send it out of the same device.
    Tx,
    /// Not podlb's business; left alone (the kernel may handle it).
    Ignore,
    /// Addressed to podlb but dropped, for this reason (counted).
    Drop(DropReason),
    /// A control-plane frame (a VRRP advert): hand a copy to the control thread.
    Punt,
    /// Send the frames in [`Forwarder::out`] (built there, e.g. VXLAN
    /// encapsulated or decapsulated) instead of the received frame, whose
    /// slot has no room for a frame 50 bytes longer.
    TxOut,
}

/// Bytes of [`OutFrames`]: a 64 KiB GSO frame cut into MSS-sized segments,
/// each with 50 bytes of VXLAN headers and its own copy of the inner
/// Ethernet/IPv4/TCP headers, stays well below this.
pub const OUT_BYTES: usize = 256 * 1024;
/// Frames in [`OutFrames`] at most.
pub const OUT_FRAMES: usize = 1024;

/// A worker's scratch space for frames it builds rather than rewrites in
/// place: allocated once, reused for every frame (no allocation per packet).
pub struct OutFrames {
    buf: Box<[u8]>,
    ends: Vec<usize>,
    /// The outer IPv4 Identification of the next encapsulated frame.
    ident: u16,
}

impl Default for OutFrames {
    fn default() -> Self {
        OutFrames {
            buf: vec![0u8; OUT_BYTES].into_boxed_slice(),
            ends: Vec::with_capacity(OUT_FRAMES),
            ident: 0,
        }
    }
}

impl OutFrames {
    #[inline]
    pub fn clear(&mut self) {
        self.ends.clear();
    }

    /// The frames built for the last [`Verdict::TxOut`].
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&e| {
            let f = &self.buf[start..e];
            start = e;
            f
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Room for one more frame of `len` bytes; `None` when full.
    #[inline]
    fn next(&mut self, len: usize) -> Option<&mut [u8]> {
        let start = self.ends.last().copied().unwrap_or(0);
        if self.ends.len() >= OUT_FRAMES || start + len > self.buf.len() {
            return None;
        }
        self.ends.push(start + len);
        Some(&mut self.buf[start..start + len])
    }
}

/// One worker's forwarding state. Sans-IO.
pub struct Forwarder {
    /// The MAC podlb answers with and sends from.
    pub mac: MacAddr,
    /// The device's own MAC. Equal to `mac` without VRRP; with VRRP, `mac` is
    /// the virtual MAC (RFC 9568 §7.3) and this one is for the instance's own
    /// traffic (unicast adverts, ARP answers to its probes).
    pub own_mac: MacAddr,
    /// The instance's own address, answered in ARP by podlb itself (TAP mode,
    /// where no kernel owns it); `None` when the kernel owns it.
    pub own_ip: Option<u32>,
    /// Serving the VIPs (VRRP master, or no VRRP). A backup answers no ARP
    /// for the VIPs and forwards nothing (RFC 9568 §6.4.2).
    pub active: bool,
    /// Answer ICMP echo for the VIPs (VRRP Accept_Mode; always without VRRP).
    pub accept_mode: bool,
    /// `mac` and `active` of the IPv6 VIPs: with VRRP, the IPv6 instance's
    /// virtual MAC (00-00-5E-00-02-{VRID}) and mastership, which RFC 9568
    /// keeps apart from the IPv4 instance's.
    pub mac6: MacAddr,
    pub active6: bool,
    pub flows: Arc<FlowTable>,
    /// IPv6 flows: a table of their own, sized to their larger slots.
    pub flows6: Arc<FlowTable<u128>>,
    pub neighbors: Arc<NeighborTable>,
    /// IPv6 neighbors (resolved by Neighbor Solicitation).
    pub neighbors6: Arc<NeighborTable<u128>>,
    /// The instance's own IPv6 link-local address, answered in NDP by
    /// podlb itself in TAP mode; `None` when the kernel owns it.
    pub own_ip6: Option<u128>,
    pub stats: Arc<WorkerStats>,
    pub ports: NatPorts,
    /// Adopt mid-stream segments of unknown flows.
    pub pickup: bool,
    /// Where new and recycled flows are announced for connection sync to
    /// the backups (the VRRP master's workers); `None` when not syncing.
    pub sync: Option<Arc<SyncQueue>>,
    /// podlb's own interface address: outer source of VXLAN frames and the
    /// address VXLAN replies come to; 0 when unknown (no vxlan then).
    pub local_ip: u32,
    /// Frames built for [`Verdict::TxOut`].
    pub out: OutFrames,
    /// Where a backend's refusal of a SYN is reported; `None`: refusals are
    /// passed to the client like any RST (`flows.refused_hold_s = 0`).
    pub refused: Option<Arc<RefusalQueue>>,
    /// Translate and forward ICMP errors of flows (`flows.icmp_errors`).
    pub icmp_errors: bool,
    /// Where the first fragments of datagrams went, for their later
    /// fragments (this worker's; fanout keeps a datagram's fragments on
    /// one worker).
    pub frags: Fragments,
}

/// 01-00-5E-00-00-12: the Ethernet group of 224.0.0.18 (RFC 9568 §5.1.1.2).
const VRRP_MULTICAST_MAC: MacAddr = podlb_wire::vrrp::MULTICAST_MAC;

/// One IPv4 TCP segment or UDP datagram to a VIP as classify parsed it
/// (after checking the IPv4 header checksum): built once, then passed to
/// the handlers, which rewrite the frame through the views. A first
/// fragment is parsed from its header prefix; later fragments get a
/// segment made from their flow ([`Segment::of_flow`]).
#[derive(Debug, Clone, Copy)]
struct Segment<A = u32> {
    /// Addresses and ports.
    tuple: FourTuple<A>,
    /// IPv4 protocol number: TCP or UDP.
    proto: u8,
    /// The TCP control bits; 0 for UDP.
    flags: u8,
    /// The frame is already translated for its backend (an ICMP error
    /// podlb rewrote itself): addressed and sent, not rewritten again.
    translated: bool,
    /// The Ethernet source: a client's MAC, for a segment from a client.
    src_mac: MacAddr,
    /// Checksum state and GSO size, as the device reported them.
    meta: PacketMeta,
}

impl Segment {
    /// Parses the TCP segment or UDP datagram in `ip`, a checked IPv4
    /// packet (no later fragment) of an untagged frame from `src_mac`.
    #[inline(always)]
    fn parse(
        ip: &ipv4::Packet<&[u8]>,
        src_mac: MacAddr,
        meta: PacketMeta,
    ) -> Result<Segment, DropReason> {
        let proto = ip.protocol();
        let malformed = if proto == ipv4::PROTO_UDP {
            DropReason::UdpMalformed
        } else {
            DropReason::TcpMalformed
        };
        let (sport, dport, flags) = if ip.more_frags() {
            // A first fragment: the transport header may not be whole (a
            // UDP Length covers the datagram), the ports are.
            let p = ports::Ports::new_checked(ip.payload(), proto).map_err(|_| malformed)?;
            let flags = match proto {
                ipv4::PROTO_TCP => ip.payload().get(13).copied().unwrap_or(0),
                _ => 0,
            };
            (p.src_port(), p.dst_port(), flags)
        } else if proto == ipv4::PROTO_TCP {
            let t = tcp::Packet::new_checked(ip.payload()).map_err(|_| malformed)?;
            (t.src_port(), t.dst_port(), t.flags())
        } else {
            let u = udp::Packet::new_checked(ip.payload()).map_err(|_| malformed)?;
            (u.src_port(), u.dst_port(), 0)
        };
        Ok(Segment {
            tuple: FourTuple {
                src: ip.src_u32(),
                dst: ip.dst_u32(),
                sport,
                dport,
            },
            proto,
            flags,
            translated: false,
            src_mac,
            meta,
        })
    }
}

impl<A: Copy> Segment<A> {
    /// A segment for a frame of flow `f` that has no transport header of
    /// its own (a later fragment, an ICMP error): the client's tuple towards
    /// the backend, or the backend's reply tuple back to the client.
    #[inline]
    fn of_flow(
        f: &crate::flow::Flow<A>,
        to_backend: bool,
        src_mac: MacAddr,
        meta: PacketMeta,
    ) -> Segment<A> {
        let tuple = if to_backend {
            FourTuple {
                src: f.key.client,
                dst: f.key.vip,
                sport: f.key.client_port,
                dport: f.key.vport,
            }
        } else {
            FourTuple {
                src: f.backend,
                dst: f.key.vip,
                sport: f.backend_port,
                dport: f.nat_port,
            }
        };
        Segment {
            tuple,
            proto: f.key.proto,
            flags: 0,
            translated: false,
            src_mac,
            meta,
        }
    }

    #[inline]
    fn is_udp(&self) -> bool {
        self.proto == ipv4::PROTO_UDP
    }

    /// SYN without ACK: a client opening a connection.
    #[inline]
    fn is_syn(&self) -> bool {
        self.flags & (tcp::SYN | tcp::ACK) == tcp::SYN
    }

    /// SYN and ACK: a backend accepting one.
    #[inline]
    fn is_syn_ack(&self) -> bool {
        self.flags & (tcp::SYN | tcp::ACK) == tcp::SYN | tcp::ACK
    }
}

/// The flow key of a client's segment (or datagram) to a service.
#[inline]
fn flow_key<A: Copy>(t: &FourTuple<A>, proto: u8) -> FlowKey<A> {
    FlowKey {
        client: t.src,
        vip: t.dst,
        client_port: t.sport,
        vport: t.dport,
        proto,
    }
}

/// The reverse key of a backend's segment (or datagram) to VIP:nat_port
/// (a full-NAT reply).
#[inline]
fn reverse_key<A: Copy>(t: &FourTuple<A>, proto: u8) -> ReverseKey<A> {
    ReverseKey {
        backend: t.src,
        vip: t.dst,
        backend_port: t.sport,
        nat_port: t.dport,
        proto,
    }
}

/// The view of the frame being forwarded: checked once in classify, then
/// passed to the handlers, which reach the IPv4 and TCP headers through it.
type Eth<'f> = ethernet::Frame<&'f mut [u8]>;

/// The IPv4 packet of the frame, to rewrite. Checked again (a few
/// compares) rather than trusted from classify.
#[inline(always)]
fn ipv4_in<'e>(eth: &'e mut Eth) -> Option<ipv4::Packet<&'e mut [u8]>> {
    ipv4::Packet::new_checked(eth.payload_mut()).ok()
}

/// The TCP segment of the frame (up to the IPv4 Total Length), to rewrite.
#[inline(always)]
fn tcp_in<'e>(eth: &'e mut Eth) -> Option<tcp::Packet<&'e mut [u8]>> {
    tcp::Packet::new_checked(ipv4_in(eth)?.into_payload_mut()).ok()
}

/// Readdresses the frame on the link: to `dst`, from `src`.
#[inline(always)]
fn set_macs(eth: &mut Eth, dst: MacAddr, src: MacAddr) {
    eth.set_dst(dst);
    eth.set_src(src);
}

impl Forwarder {
    /// Processes one frame in place.
    #[inline]
    pub fn forward(
        &mut self,
        snap: &Snapshot,
        frame: &mut [u8],
        meta: PacketMeta,
        now_ms: u32,
    ) -> Verdict {
        let v = self.classify(snap, frame, meta, now_ms);
        match v {
            Verdict::Drop(r) => self.stats.dropped(r),
            Verdict::Ignore => self.stats.event(Event::Ignored, 1),
            Verdict::Tx | Verdict::Punt | Verdict::TxOut => {}
        }
        v
    }

    /// Starts loading the flow-table lines [`forward`](Self::forward) will
    /// read for `frame`: the flow index for a segment to a service, the
    /// reverse index for one to any other port of a VIP (a full-NAT reply).
    /// Pass 0 loads the index lines; pass 1, run over the batch after pass 0,
    /// reads them and loads the matching slots. Reads only the headers,
    /// checks nothing and changes nothing. The worker runs both passes over a
    /// whole RX batch before forwarding it, so the batch's flow-table misses
    /// overlap instead of each packet waiting out two of its own.
    #[inline]
    pub fn prefetch<H: Fn(*const u8)>(
        flows: &FlowTable,
        snap: &Snapshot,
        frame: &[u8],
        pass: u8,
        hint: &H,
    ) {
        let Some((t, proto)) = peek::ports4(frame) else {
            return;
        };
        if snap.service(t.dst, t.dport, proto).is_some() {
            let k = flow_key(&t, proto);
            match pass {
                0 => flows.prefetch(hint, &k),
                _ => flows.prefetch_slot(hint, &k),
            }
        } else if snap.is_vip(t.dst) {
            let k = reverse_key(&t, proto);
            match pass {
                0 => flows.prefetch_reverse(hint, &k),
                _ => flows.prefetch_reverse_slot(hint, &k),
            }
        }
    }

    #[inline]
    fn classify(
        &mut self,
        snap: &Snapshot,
        frame: &mut [u8],
        meta: PacketMeta,
        now_ms: u32,
    ) -> Verdict {
        self.out.clear();
        let Ok(mut eth) = ethernet::Frame::new_checked(frame) else {
            return Verdict::Drop(DropReason::EthTruncated);
        };
        let dst = eth.dst();
        let to_us = dst == self.mac || dst == self.own_mac || dst == self.mac6;
        if !to_us && !dst.is_broadcast() {
            if dst == VRRP_MULTICAST_MAC {
                return vrrp(eth.payload());
            }
            // 33-33-xx: IPv6 multicast (RFC 2464 §7): Neighbor
            // Solicitations to solicited-node groups, VRRP to ff02::12.
            if dst.0[..2] == [0x33, 0x33]
                && !meta.truncated
                && eth.outer_ethertype() == ethernet::ETHERTYPE_IPV6
            {
                return self.ipv6(snap, &mut eth, meta, now_ms, false);
            }
            return Verdict::Ignore;
        }
        if to_us && meta.vlan_stripped {
            return Verdict::Drop(DropReason::VlanTagged);
        }
        if meta.truncated {
            return if to_us {
                Verdict::Drop(DropReason::Oversize)
            } else {
                Verdict::Ignore
            };
        }
        match eth.outer_ethertype() {
            ethernet::ETHERTYPE_ARP => self.arp(snap, &mut eth, now_ms),
            ethernet::ETHERTYPE_IPV4 if to_us => self.ipv4(snap, &mut eth, meta, now_ms),
            ethernet::ETHERTYPE_IPV6 if to_us => self.ipv6(snap, &mut eth, meta, now_ms, true),
            ethernet::ETHERTYPE_VLAN | ethernet::ETHERTYPE_QINQ if to_us => {
                Verdict::Drop(DropReason::VlanTagged)
            }
            _ => Verdict::Ignore,
        }
    }

    /// An IPv4 packet to podlb's MAC: the checks, then to the handler of
    /// what it is.
    #[inline]
    fn ipv4(&mut self, snap: &Snapshot, eth: &mut Eth, meta: PacketMeta, now_ms: u32) -> Verdict {
        let src_mac = eth.src();
        let (seg, first_fragment) = {
            let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv4Malformed);
            };
            let dst = ip.dst_u32();
            if ip.protocol() == ipv4::PROTO_VRRP {
                // A unicast advert (RFC 9568 §6.1 unicast peers, keepalived's
                // unicast_peer) to this instance.
                return Verdict::Punt;
            }
            if !snap.is_vip(dst) {
                if ip.protocol() == ipv4::PROTO_UDP && dst == self.local_ip && dst != 0 {
                    return self.vxlan_in(snap, eth.as_ref(), meta, now_ms);
                }
                return Verdict::Ignore;
            }
            if let Some(r) = self.refuse(&ip) {
                return Verdict::Drop(r);
            }
            match ip.protocol() {
                ipv4::PROTO_TCP | ipv4::PROTO_UDP if ip.frag_offset() != 0 => {
                    return self.later_fragment(snap, eth, meta, now_ms);
                }
                ipv4::PROTO_TCP | ipv4::PROTO_UDP => match Segment::parse(&ip, src_mac, meta) {
                    Ok(seg) => (seg, ip.more_frags().then(|| frag::Id::of(&ip))),
                    Err(r) => return Verdict::Drop(r),
                },
                ipv4::PROTO_ICMP if ip.is_fragment() => {
                    return Verdict::Drop(DropReason::Ipv4Fragment)
                }
                ipv4::PROTO_ICMP => {
                    let Ok(m) = icmp::Packet::new_checked(ip.payload()) else {
                        return Verdict::Drop(DropReason::IcmpMalformed);
                    };
                    if m.is_error() && self.icmp_errors {
                        return self.icmp_error(snap, eth);
                    }
                    // RFC 9568 §6.4.3: a non-owner master accepts packets
                    // for the VIPs only with Accept_Mode; echo is the one
                    // podlb answers itself.
                    if self.accept_mode && !m.is_error() {
                        return self.icmp(eth);
                    }
                    return Verdict::Drop(DropReason::IcmpUnhandled);
                }
                _ => return Verdict::Drop(DropReason::NoService),
            }
        };
        let v = self.l4(snap, eth, &seg, now_ms);
        if let (Some(id), Verdict::Tx | Verdict::TxOut) = (first_fragment, v) {
            self.remember_fragment(id, &seg, now_ms);
        }
        v
    }

    /// Why an IPv4 packet podlb would serve is dropped, if it is: podlb is
    /// a backup (RFC 9568 §6.4.2) or the header checksum is wrong.
    #[inline]
    fn refuse(&self, ip: &ipv4::Packet<&[u8]>) -> Option<DropReason> {
        if !self.active {
            return Some(DropReason::NotMaster);
        }
        if !ip.verify_checksum() {
            return Some(DropReason::Ipv4BadChecksum);
        }
        None
    }

    /// A segment or datagram to a VIP: to a service port from a client, or
    /// to a NAT port from a backend (the reverse half of a flow).
    #[inline]
    fn l4<A: Family>(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        seg: &Segment<A>,
        now_ms: u32,
    ) -> Verdict {
        if let Some(svc) = snap.service(seg.tuple.dst, seg.tuple.dport, seg.proto) {
            return self.steer_to_backend(snap, svc, eth, seg, now_ms);
        }
        if let Some((r, f)) = A::flows(self).lookup_reverse(&reverse_key(&seg.tuple, seg.proto)) {
            return self.steer_to_client(snap, (r, &f), eth, seg, now_ms);
        }
        Verdict::Drop(DropReason::NoService)
    }
}

/// IPv4 protocol 112 to the VRRP group goes to the control thread; checks
/// happen there.
fn vrrp(ip: &[u8]) -> Verdict {
    match ipv4::Packet::new_checked(ip) {
        Ok(ip) if ip.protocol() == ipv4::PROTO_VRRP => Verdict::Punt,
        Ok(_) => Verdict::Ignore,
        Err(_) => Verdict::Drop(DropReason::Ipv4Malformed),
    }
}

#[cfg(test)]
mod tests {

    use crate::forward::*;
    use crate::model::Mode;

    use crate::stats::{DropReason, Event};
    use crate::testlab::*;

    /// The look-ahead reads headers of frames nobody has checked yet: any
    /// prefix of a segment or a reply, in either pass, must be harmless and
    /// leave the verdicts unchanged.
    #[test]
    fn prefetch_takes_any_prefix_and_changes_nothing() {
        let (mut f, snap) = setup(Mode::Nat, 8080);
        let every_prefix = |f: &Forwarder, frame: &[u8]| {
            for pass in 0..2 {
                for n in 0..=frame.len() {
                    Forwarder::prefetch(&f.flows, &snap, &frame[..n], pass, &|_| {});
                }
            }
        };
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40001, 80, "S");
        every_prefix(&f, &syn);
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (dst, sport) = (verify(&syn).1, verify(&syn).2);
        let mut synack = tcp_frame(bmac(dst).0, LB, dst, VIP, 8080, sport, "SA");
        every_prefix(&f, &synack);
        assert_eq!(
            f.forward(&snap, &mut synack, PacketMeta::default(), 2),
            Verdict::Tx
        );
        assert_eq!(verify(&synack), (VIP, CLIENT, 80, 40001));
    }

    #[test]
    fn unknown_flows_rst_and_unresolved_backends_are_counted_drops() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut rst = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "R");
        assert_eq!(
            f.forward(&snap, &mut rst, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::NoFlow)
        );
        // Mid-stream ACK of an unknown flow: picked up (pickup on) ...
        let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "A");
        assert_eq!(
            f.forward(&snap, &mut ack, PacketMeta::default(), 1),
            Verdict::Tx
        );
        assert_eq!(f.stats.events(Event::FlowPickups), 1);
        // ... or dropped with pickup off.
        f.pickup = false;
        let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40009, 80, "A");
        assert_eq!(
            f.forward(&snap, &mut ack, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::NoFlow)
        );
        let mut other = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 81, "S");
        assert_eq!(
            f.forward(&snap, &mut other, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::NoService)
        );
        for b in BACKENDS {
            f.neighbors.invalidate(u32::from_be_bytes(b));
        }
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40100, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::NeighborUnresolved)
        );
        assert!(f.neighbors.entries().iter().any(|e| e.wanted));
        // Not to our MAC: ignored.
        let mut x = tcp_frame(
            CLIENT_MAC,
            [2, 0, 0, 0, 0, 0x77],
            CLIENT,
            VIP,
            40000,
            80,
            "S",
        );
        assert_eq!(
            f.forward(&snap, &mut x, PacketMeta::default(), 1),
            Verdict::Ignore
        );
        assert_eq!(f.stats.drops(DropReason::NoFlow), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes (and mutations of a valid frame) never panic, and
        /// the table never holds more flows than frames seen.
        #[test]
        fn forward_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), cut in 0usize..120, flip in 0usize..120, val in proptest::prelude::any::<u8>()) {
            let (mut f, snap) = setup(Mode::Nat, 80);
            let mut b = bytes.clone();
            let _ = f.forward(&snap, &mut b, PacketMeta::default(), 1);
            let mut v = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
            if flip < v.len() { v[flip] = val; }
            v.truncate(cut.max(1));
            let meta = PacketMeta { csum_partial: val & 1 == 1, tx_keeps_partial: val & 2 == 2, vlan_stripped: val & 4 == 4, truncated: val & 8 == 8, gso_size: if val & 16 == 16 { 7 } else { 0 } };
            let _ = f.forward(&snap, &mut v, meta, 1);
            proptest::prop_assert!(f.flows.len() <= 1);
        }
    }
}
