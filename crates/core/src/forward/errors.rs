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
//! (RFC 5508 §3.2: an error does not refresh the mapping's timer; a
//! router's stream of errors must not keep a dead flow alive).
//! An error that quotes no flow is dropped and counted (`icmp_no_flow`).
//!
//! Fragmentation needed (type 3 code 4) towards a vxlan backend reports an
//! MTU 50 bytes smaller: the backend's packets for this flow also cross a
//! VXLAN leg, and a backend whose device MTU already allows for it loses
//! nothing by the margin.

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
struct Quote {
    outer_src: u32,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
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
        let key = FlowKey {
            client: q.dst,
            vip: q.src,
            client_port: q.dport,
            vport: q.sport,
            proto: q.proto,
        };
        if let Some((_, f)) = self.flows.lookup(&key) {
            return self.error_to_backend(snap, eth, &q, &f);
        }
        let rk = ReverseKey {
            backend: q.dst,
            vip: q.src,
            backend_port: q.dport,
            nat_port: q.sport,
            proto: q.proto,
        };
        if let Some((_, f)) = self.flows.lookup_reverse(&rk) {
            return self.error_to_client(eth, &q, &f);
        }
        Verdict::Drop(DropReason::IcmpNoFlow)
    }

    /// A client-side error about flow `f`: to its backend, translated as
    /// the backend sent the quoted packet (full NAT), or as it came (DSR:
    /// the backend sent it from the VIP itself).
    fn error_to_backend(&mut self, snap: &Snapshot, eth: &mut Eth, q: &Quote, f: &Flow) -> Verdict {
        let path = path_of(snap, f);
        if f.nat_port != 0 {
            let outer_src = if q.outer_src == f.key.client {
                f.key.vip
            } else {
                q.outer_src
            };
            let mtu_cut = if path.0 == Mode::Vxlan {
                // 50: fits.
                u16::try_from(vxlan::OVERHEAD).unwrap_or(u16::MAX)
            } else {
                0
            };
            rewrite(
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
    fn error_to_client(&mut self, eth: &mut Eth, q: &Quote, f: &Flow) -> Verdict {
        let outer_src = if q.outer_src == f.backend {
            f.key.vip
        } else {
            q.outer_src
        };
        rewrite(
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
fn rewrite(
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
