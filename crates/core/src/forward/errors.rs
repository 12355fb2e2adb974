//! ICMP errors of flows (RFC 792; RFC 1191 path MTU discovery; RFC 5508
//! for what a NAT does with them). A router that cannot deliver a packet
//! podlb sent, or that needs it smaller, answers its source, which is a
//! VIP; the error quotes the packet's IPv4 header and first transport bytes,
//! and those name the flow:
//!
//! ```text
//! client side:  quoted VIP:vport → client:cport   (a reply podlb sent)
//!               ─► flow by key ─► quoted becomes backend:bport → VIP:nat
//!               ─► to the backend (nat, vxlan; dsr: as it came)
//! backend side: quoted VIP:nat → backend:bport    (a segment podlb sent)
//!               ─► flow by reverse key ─► quoted becomes client:cport → VIP:vport
//!               ─► to the client
//! ```
//! The outer destination becomes the flow's peer; the outer source is kept
//! (the router's address: traceroute shows the hop), unless it is the peer
//! on the other side itself, which becomes the VIP as every packet from it
//! does. Checksums: the quoted IPv4 header and quoted transport checksum
//! incrementally (RFC 1624), the outer IPv4 header incrementally, the ICMP
//! message recomputed (it covers the quote). Errors do not refresh the flow
//! (as RFC 5508 asks of NATs: an error does not refresh the mapping; a
//! router's stream of errors must not keep a dead flow alive).
//! An error that quotes no flow is dropped and counted (`icmp_no_flow`).
//!
//! Fragmentation needed (type 3 code 4) towards a vxlan backend reports an
//! MTU 50 bytes smaller: the backend's packets for this flow also cross a
//! VXLAN leg, and a backend whose device MTU already allows for it loses
//! nothing by the margin.

use super::family::Family;
use super::nat::path_of;
use super::{icmp, ipv4, ipv4_in, Eth, Forwarder, Segment, Verdict};
use crate::flow::{Flow, FlowKey, ReverseKey};
use crate::model::Mode;
use crate::service::Snapshot;
use crate::stats::{DropReason, Event};
use podlb_wire::{checksum, vxlan, PacketMeta};

/// The smallest MTU a router may report (RFC 791: every host accepts 68).
const MIN_MTU: u16 = 68;

/// What the error is about, read before the frame is rewritten.
pub(super) struct Quote<A = u32> {
    pub(super) outer_src: A,
    pub(super) src: A,
    pub(super) dst: A,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) proto: u8,
}

impl Forwarder {
    /// An ICMP error to a VIP: translated and sent on to the flow it is
    /// about, or a counted drop.
    pub(super) fn icmp_error(&mut self, snap: &Snapshot, eth: &mut Eth) -> Verdict {
        let q = {
            let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv4Malformed);
            };
            let Ok(m) = icmp::Packet::new_checked(ip.payload()) else {
                return Verdict::Drop(DropReason::IcmpMalformed);
            };
            if !m.verify_checksum() {
                return Verdict::Drop(DropReason::IcmpMalformed);
            }
            let Ok(quoted) = icmp::Quoted::new_checked(m.payload()) else {
                return Verdict::Drop(DropReason::IcmpMalformed);
            };
            Quote {
                outer_src: ip.src_u32(),
                src: quoted.src_u32(),
                dst: quoted.dst_u32(),
                sport: quoted.src_port(),
                dport: quoted.dst_port(),
                proto: quoted.protocol(),
            }
        };
        self.error_of_flow(snap, eth, &q)
    }

    /// An ICMP or ICMPv6 error whose quote `q` was read: to the flow it
    /// quotes (either side), or a counted drop.
    pub(super) fn error_of_flow<A: Family>(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        q: &Quote<A>,
    ) -> Verdict {
        let key = FlowKey {
            client: q.dst,
            vip: q.src,
            client_port: q.dport,
            vport: q.sport,
            proto: q.proto,
        };
        if let Some((_, f)) = A::flows(self).lookup(&key) {
            return self.error_to_backend(snap, eth, q, &f);
        }
        let rk = ReverseKey {
            backend: q.dst,
            vip: q.src,
            backend_port: q.dport,
            nat_port: q.sport,
            proto: q.proto,
        };
        if let Some((_, f)) = A::flows(self).lookup_reverse(&rk) {
            return self.error_to_client(eth, q, &f);
        }
        Verdict::Drop(DropReason::IcmpNoFlow)
    }

    /// A client-side error about flow `f`: to its backend, translated as
    /// the backend sent the quoted packet (full NAT), or as it came (DSR:
    /// the backend sent it from the VIP itself).
    fn error_to_backend<A: Family>(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        q: &Quote<A>,
        f: &Flow<A>,
    ) -> Verdict {
        let path = path_of(snap, f);
        if f.nat_port != 0 {
            let outer_src = if q.outer_src == f.key.client {
                f.key.vip
            } else {
                q.outer_src
            };
            let mtu_cut = if path.0 == Mode::Vxlan {
                u16::try_from(vxlan::OVERHEAD).unwrap_or(u16::MAX)
            } else {
                0
            };
            A::rewrite_error(
                eth,
                (outer_src, f.backend),
                (f.backend, f.key.vip, f.backend_port, f.nat_port),
                mtu_cut,
            );
        }
        let seg = Segment {
            translated: true,
            ..Segment::of_flow(f, true, eth.src(), PacketMeta::default())
        };
        let v = self.send_to_backend(snap, path, f, eth, &seg);
        if matches!(v, Verdict::Tx | Verdict::TxOut) {
            self.stats.event(Event::IcmpErrorsToBackend, 1);
        }
        v
    }

    /// A backend-side error about flow `f`: to its client, translated as
    /// the client sent the quoted packet.
    fn error_to_client<A: Family>(&mut self, eth: &mut Eth, q: &Quote<A>, f: &Flow<A>) -> Verdict {
        let outer_src = if q.outer_src == f.backend {
            f.key.vip
        } else {
            q.outer_src
        };
        A::rewrite_error(
            eth,
            (outer_src, f.key.client),
            (f.key.client, f.key.vip, f.key.client_port, f.key.vport),
            0,
        );
        let seg = Segment {
            translated: true,
            ..Segment::of_flow(f, false, eth.src(), PacketMeta::default())
        };
        let v = self.send_to_client(f, eth, &seg);
        if v == Verdict::Tx {
            self.stats.event(Event::IcmpErrorsToClient, 1);
        }
        v
    }
}

/// Rewrites an ICMP error in place: the outer addresses to `outer`, the
/// quoted datagram to `(src, dst, sport, dport)`, a fragmentation-needed
/// MTU reduced by `mtu_cut`, and every checksum.
pub(super) fn rewrite(
    eth: &mut Eth,
    (outer_src, outer_dst): (u32, u32),
    (src, dst, sport, dport): (u32, u32, u16, u16),
    mtu_cut: u16,
) {
    let Some(mut ip) = ipv4_in(eth) else {
        return;
    };
    let (old_src, old_dst) = (ip.src_u32(), ip.dst_u32());
    ip.set_src(outer_src.into());
    ip.set_dst(outer_dst.into());
    let mut c = checksum::update_u32(ip.checksum(), old_src, outer_src);
    c = checksum::update_u32(c, old_dst, outer_dst);
    ip.set_checksum(c);
    let Ok(mut m) = icmp::Packet::new_checked(ip.payload_mut()) else {
        return;
    };
    if mtu_cut != 0 && m.is_frag_needed() && m.next_hop_mtu() != 0 {
        let mtu = m.next_hop_mtu().saturating_sub(mtu_cut).max(MIN_MTU);
        m.set_next_hop_mtu(mtu);
    }
    if let Ok(mut quoted) = icmp::Quoted::new_checked(m.payload_mut()) {
        quoted.translate(src, dst, sport, dport);
    }
    m.fill_checksum();
}

#[cfg(test)]
mod tests {
    use crate::forward::*;
    use crate::model::Mode;
    use crate::stats::{DropReason, Event};
    use crate::testlab::*;
    use podlb_wire::icmp::{CODE_FRAG_NEEDED, TYPE_DEST_UNREACH, TYPE_TIME_EXCEEDED};

    const ROUTER_C: [u8; 4] = [198, 18, 9, 1];
    const HOP_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];

    /// A NAT flow set up by a client SYN and the backend's SYN-ACK; returns
    /// (backend, nat port, the SYN-ACK as the client got it).
    fn tcp_flow(f: &mut Forwarder, snap: &crate::service::Snapshot) -> ([u8; 4], u16, Vec<u8>) {
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (_, b, nat, _) = verify(&syn);
        let mut synack = tcp_frame(bmac(b).0, LB, b, VIP, 8080, nat, "SA");
        assert_eq!(
            f.forward(snap, &mut synack, PacketMeta::default(), 2),
            Verdict::Tx
        );
        (b, nat, synack)
    }

    #[test]
    fn frag_needed_for_a_reply_reaches_the_backend_translated() {
        let (mut f, snap) = setup(Mode::Nat, 8080);
        let (b, nat, synack) = tcp_flow(&mut f, &snap);
        // A router towards the client cannot forward the (translated)
        // reply: it tells its source, the VIP, quoting VIP:80 → client.
        for quote in [28, 60] {
            let mut e = icmp_error_frame(
                HOP_MAC,
                (ROUTER_C, VIP),
                (TYPE_DEST_UNREACH, CODE_FRAG_NEEDED, 1280),
                &synack,
                quote,
            );
            assert_eq!(
                f.forward(&snap, &mut e, PacketMeta::default(), 3),
                Verdict::Tx
            );
            assert_eq!(&e[0..6], &bmac(b).0, "to the backend's MAC");
            let seen = verify_icmp_error(&e);
            assert_eq!(seen.outer, (ROUTER_C, b), "the router stays the source");
            assert_eq!(seen.quoted, (b, VIP, 8080, nat), "as the backend sent it");
            assert_eq!(seen.mtu, 1280);
        }
        assert_eq!(f.stats.events(Event::IcmpErrorsToBackend), 2);
    }

    #[test]
    fn errors_from_the_backend_side_reach_the_client_and_unknown_ones_drop() {
        let (mut f, snap) = setup(Mode::Nat, 8080);
        let (b, nat, _) = tcp_flow(&mut f, &snap);
        // What podlb sent the backend: VIP:nat → backend:8080.
        let sent = tcp_frame(LB, bmac(b).0, VIP, b, nat, 8080, "A");
        let hop = [198, 18, 0, 7];
        let mut e = icmp_error_frame(HOP_MAC, (hop, VIP), (TYPE_TIME_EXCEEDED, 0, 0), &sent, 28);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 3),
            Verdict::Tx
        );
        assert_eq!(&e[0..6], &CLIENT_MAC);
        let seen = verify_icmp_error(&e);
        assert_eq!(seen.outer, (hop, CLIENT), "traceroute sees the hop");
        assert_eq!(seen.quoted, (CLIENT, VIP, 40000, 80));
        // The backend itself (port unreachable): its address becomes the VIP.
        let mut e = icmp_error_frame(bmac(b).0, (b, VIP), (TYPE_DEST_UNREACH, 3, 0), &sent, 28);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 3),
            Verdict::Tx
        );
        assert_eq!(verify_icmp_error(&e).outer, (VIP, CLIENT));
        assert_eq!(f.stats.events(Event::IcmpErrorsToClient), 2);

        // Quoting no flow: dropped; a broken checksum: malformed.
        let other = tcp_frame(LB, bmac(b).0, VIP, b, nat.wrapping_add(1), 8080, "A");
        let mut e = icmp_error_frame(HOP_MAC, (hop, VIP), (TYPE_TIME_EXCEEDED, 0, 0), &other, 28);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 3),
            Verdict::Drop(DropReason::IcmpNoFlow)
        );
        let mut e = icmp_error_frame(HOP_MAC, (hop, VIP), (TYPE_TIME_EXCEEDED, 0, 0), &sent, 28);
        let n = e.len();
        e[n - 1] ^= 0xff;
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 3),
            Verdict::Drop(DropReason::IcmpMalformed)
        );
        // Turned off: not forwarded.
        f.icmp_errors = false;
        let mut e = icmp_error_frame(HOP_MAC, (hop, VIP), (TYPE_TIME_EXCEEDED, 0, 0), &sent, 28);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 3),
            Verdict::Drop(DropReason::IcmpUnhandled)
        );
    }

    #[test]
    fn udp_port_unreachable_with_the_whole_datagram_quoted() {
        let (mut f, _) = setup(Mode::Nat, 53);
        let snap = build(1, &[udp_service(Mode::Nat, 5353, &BACKENDS)]);
        let mut q = udp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, b"query");
        assert_eq!(
            f.forward(&snap, &mut q, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (_, b, nat, _) = verify_udp(&q);
        // The backend has nothing on 5353: port unreachable, quoting all.
        let mut e = icmp_error_frame(bmac(b).0, (b, VIP), (TYPE_DEST_UNREACH, 3, 0), &q, 1000);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 2),
            Verdict::Tx
        );
        let seen = verify_icmp_error(&e);
        assert_eq!(seen.quoted, (CLIENT, VIP, 40000, 80));
        let _ = nat;
    }

    #[test]
    fn dsr_passes_client_side_errors_to_the_backend_as_they_came() {
        let (mut f, snap) = setup(Mode::Dsr, 80);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let b = BACKENDS
            .iter()
            .copied()
            .find(|b| syn[0..6] == bmac(*b).0)
            .unwrap();
        let reply = tcp_frame(bmac(b).0, CLIENT_MAC, VIP, CLIENT, 80, 40000, "SA");
        let orig = icmp_error_frame(
            HOP_MAC,
            (ROUTER_C, VIP),
            (TYPE_DEST_UNREACH, CODE_FRAG_NEEDED, 1280),
            &reply,
            28,
        );
        let mut e = orig.clone();
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 2),
            Verdict::Tx
        );
        assert_eq!(&e[0..6], &bmac(b).0);
        assert_eq!(&e[12..], &orig[12..], "IP and ICMP untouched");
    }

    #[test]
    fn vxlan_backends_learn_an_mtu_less_the_tunnel() {
        let mut f = forwarder(true, 0, None);
        f.neighbors.track(u32::from_be_bytes(ROUTER));
        f.neighbors.learn(
            u32::from_be_bytes(ROUTER),
            podlb_wire::MacAddr(ROUTER_MAC),
            0,
        );
        let snap = vxlan_snapshot();
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::TxOut
        );
        let (pod, nat) = {
            let fr = f.out.frames().next().unwrap().to_vec();
            let (_, _, inner) = vxlan_outer(&fr);
            let (_, d, s, _) = verify(inner);
            (d, s)
        };
        let reply = tcp_frame(ROUTER_MAC, CLIENT_MAC, VIP, CLIENT, 80, 40000, "SA");
        let mut e = icmp_error_frame(
            HOP_MAC,
            (ROUTER_C, VIP),
            (TYPE_DEST_UNREACH, CODE_FRAG_NEEDED, 1400),
            &reply,
            28,
        );
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 2),
            Verdict::TxOut
        );
        let fr = f.out.frames().next().unwrap().to_vec();
        let (_, _, inner) = vxlan_outer(&fr);
        let seen = verify_icmp_error(inner);
        assert_eq!(seen.quoted, (pod, VIP, 8080, nat));
        assert_eq!(seen.mtu, 1350, "1400 less 50 bytes of VXLAN");
    }
}
