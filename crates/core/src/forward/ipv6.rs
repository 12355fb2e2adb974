//! IPv6: classify, Neighbor Discovery for the VIPs (RFC 4861), ICMPv6 echo,
//! and the IPv6 side of the full-NAT rewrite ([`Family`] for `u128`).
//!
//! ```text
//! IPv6 ─┬─ ICMPv6 ─┬─ NS for a VIP / own address ─► NA built in `out` ─► TxOut
//!       │          ├─ NS / NA from a tracked neighbor ─► learn its MAC
//!       │          └─ echo to a VIP ─► reply in place ─► Tx
//!       ├─ VRRP (112) ─► control thread
//!       └─ TCP / UDP to a VIP ─► Segment<u128> ─► l4 (nat.rs, as IPv4)
//! ```
//! Extension headers are walked (bounded, `ipv6::Packet::upper_layer`) to
//! find the transport header; fragments are not steered (decisions §67).
//! IPv6 has no header checksum: a full-NAT rewrite changes the addresses
//! and folds the change into the transport checksum only (RFC 1624 over
//! the pseudo-header's eight 32-bit address words, RFC 8200 §8.1).

use std::net::Ipv6Addr;

use super::family::Family;
use super::nat::Nat;
use super::{Eth, Forwarder, Segment, Verdict};
use crate::bits::Low;
use crate::flow::{Flow, FlowTable};
use crate::hash::flow_hash6;
use crate::neighbor::NeighborTable;
use crate::service::{Snapshot, Vtep};
use crate::stats::{DropReason, Event};
use crate::sync::SyncEvent;
use podlb_wire::peek::FourTuple;
use podlb_wire::{checksum, ethernet, icmpv6, ipv6, ndp, ports::Ports, tcp, udp};
use podlb_wire::{MacAddr, PacketMeta};

/// IPv6 next header 112: VRRP (RFC 9568 §5.1.2.3).
const PROTO_VRRP: u8 = 112;
/// ff02::1, all nodes (RFC 4291 §2.7.1).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The four 32-bit words of an address, for checksum updates.
#[inline(always)]
fn words(a: u128) -> [u32; 4] {
    [(a >> 96).low(), (a >> 64).low(), (a >> 32).low(), a.low()]
}

/// The address-word replacements of a change of `gone` into `came`.
#[inline(always)]
fn word_pairs(gone: u128, came: u128) -> [(u32, u32); 4] {
    let (g, c) = (words(gone), words(came));
    [(g[0], c[0]), (g[1], c[1]), (g[2], c[2]), (g[3], c[3])]
}

/// The IPv6 packet and where its transport header starts, or `None`.
#[inline(always)]
fn l4_of(eth: &Eth) -> Option<(usize, u8, bool)> {
    let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
    let up = ip.upper_layer().ok()?;
    let whole = up.fragment.is_none_or(|f| f.is_atomic());
    Some((up.offset, up.protocol, whole))
}

impl Family for u128 {
    #[inline(always)]
    fn flows(fw: &Forwarder) -> &FlowTable<u128> {
        &fw.flows6
    }
    #[inline(always)]
    fn neighbors(fw: &Forwarder) -> &NeighborTable<u128> {
        &fw.neighbors6
    }
    #[inline(always)]
    fn mac(fw: &Forwarder) -> MacAddr {
        fw.mac6
    }
    #[inline(always)]
    fn flow_hash(src: u128, sport: u16, dst: u128, dport: u16, proto: u8) -> u64 {
        flow_hash6(src, sport, dst, dport, proto)
    }

    /// The addresses in the fixed header; the transport ports and checksum
    /// (found past any extension headers) updated for the ports and for the
    /// one address of the pseudo-header pair that changed, or recomputed
    /// for a partial checksum nothing downstream completes.
    #[inline]
    fn apply(nat: &Nat<u128>, eth: &mut Eth, meta: PacketMeta) {
        let Some((off, proto, whole)) = l4_of(eth) else {
            return;
        };
        let Ok(mut ip) = ipv6::Packet::new_checked(eth.payload_mut()) else {
            return;
        };
        ip.set_src(Ipv6Addr::from(nat.src));
        ip.set_dst(Ipv6Addr::from(nat.dst));
        if !whole {
            return;
        }
        let Some(l4) = ip.into_inner().get_mut(off..) else {
            return;
        };
        if meta.csum_partial {
            partial_l4(
                l4,
                proto,
                (nat.sport, nat.dport),
                (nat.src, nat.dst),
                meta.tx_keeps_partial.then_some((nat.gone, nat.came)),
            );
        } else if let Ok(mut p) = Ports::new_checked(l4, proto) {
            p.translate(nat.sport, nat.dport, &word_pairs(nat.gone, nat.came));
        }
    }

    #[inline]
    fn complete_partial(eth: &mut Eth, src: u128, dst: u128) {
        let Some((off, proto, true)) = l4_of(eth) else {
            return;
        };
        let Some(l4) = eth.payload_mut().get_mut(off..) else {
            return;
        };
        let ports = match Ports::new_checked(&*l4, proto) {
            Ok(p) => (p.src_port(), p.dst_port()),
            Err(_) => return,
        };
        partial_l4(l4, proto, ports, (src, dst), None);
    }

    #[inline]
    fn tcp_in<'e>(eth: &'e mut Eth) -> Option<tcp::Packet<&'e mut [u8]>> {
        let (off, proto, whole) = l4_of(eth)?;
        if proto != ipv6::PROTO_TCP || !whole {
            return None;
        }
        tcp::Packet::new_checked(eth.payload_mut().get_mut(off..)?).ok()
    }

    /// VXLAN carries IPv4 inner packets only so far (docs/decisions.md §67).
    fn tunnel(
        _fw: &mut Forwarder,
        _eth: &mut Eth,
        _seg: &Segment<u128>,
        _flow: &Flow<u128>,
        _to: (Vtep, MacAddr),
        _clamp: Option<u16>,
    ) -> Verdict {
        Verdict::Drop(DropReason::VxlanNoVtep)
    }

    /// The IPv6 form of `errors::rewrite` (RFC 4443 §2.4: the invoking
    /// packet is quoted from its first byte; RFC 5508 §4.2 for a NAT's
    /// translation of it): outer addresses, the quoted fixed header's
    /// addresses and the quoted ports with their checksum (when quoted),
    /// the MTU of a Packet Too Big less `mtu_cut` (never below 1280,
    /// RFC 8200 §5), and the ICMPv6 checksum over the new pseudo-header.
    fn rewrite_error(
        eth: &mut Eth,
        (outer_src, outer_dst): (u128, u128),
        (src, dst, sport, dport): (u128, u128, u16, u16),
        mtu_cut: u16,
    ) {
        let Some((off, ..)) = l4_of(eth) else {
            return;
        };
        let Ok(mut ip) = ipv6::Packet::new_checked(eth.payload_mut()) else {
            return;
        };
        let (o_src, o_dst) = (Ipv6Addr::from(outer_src), Ipv6Addr::from(outer_dst));
        ip.set_src(o_src);
        ip.set_dst(o_dst);
        let Some(msg) = ip.into_inner().get_mut(off..) else {
            return;
        };
        let Ok(mut m) = icmpv6::Packet::new_checked(msg) else {
            return;
        };
        if mtu_cut != 0 && m.msg_type() == icmpv6::TYPE_PACKET_TOO_BIG {
            let mtu = m.mtu().saturating_sub(u32::from(mtu_cut)).max(1280);
            m.set_word(mtu);
        }
        let quote = m.payload_mut();
        if quote.len() >= ipv6::HEADER_LEN {
            let (old_src, old_dst) = (ip6_at(quote, 8), ip6_at(quote, 24));
            quote[8..24].copy_from_slice(&src.to_be_bytes());
            quote[24..40].copy_from_slice(&dst.to_be_bytes());
            let proto = quote[6];
            if let Ok(mut p) = Ports::new_checked(&mut quote[ipv6::HEADER_LEN..], proto) {
                let mut pairs = [(0, 0); 8];
                pairs[..4].copy_from_slice(&word_pairs(old_src, src));
                pairs[4..].copy_from_slice(&word_pairs(old_dst, dst));
                p.translate(sport, dport, &pairs);
            }
        }
        m.fill_checksum(o_src, o_dst);
    }

    /// IPv6 flows travel to the backups like IPv4 ones, in their own
    /// datagrams (wire version 2, `sync.rs`).
    #[inline]
    fn sync_upsert(fw: &Forwarder, flow: &Flow<u128>, now_ms: u32) {
        if let Some(q) = &fw.sync {
            // A full queue drops the event (counted there); the sweeper's
            // periodic refresh sends the flow later.
            q.push(SyncEvent::upsert(flow, now_ms));
        }
    }
    #[inline]
    fn sync_remove(fw: &Forwarder, flow: &Flow<u128>) {
        if let Some(q) = &fw.sync {
            q.push(SyncEvent::remove(flow));
        }
    }
}

/// The transport header of a `CHECKSUM_PARTIAL` IPv6 frame, readdressed to
/// ports `(sport, dport)` and addresses `(src, dst)`: with `keep` (a device
/// that completes the sum on transmit), the pseudo-header sum in the field
/// is updated for the address change `keep` = (gone, came); otherwise the
/// checksum is computed over the pseudo-header (RFC 8200 §8.1) and data.
fn partial_l4(
    l4: &mut [u8],
    proto: u8,
    (sport, dport): (u16, u16),
    (src, dst): (u128, u128),
    keep: Option<(u128, u128)>,
) {
    let csum_at = match proto {
        ipv6::PROTO_TCP => 16,
        ipv6::PROTO_UDP => 6,
        _ => return,
    };
    if l4.len() < csum_at + 2 {
        return;
    }
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    let field = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let c = match keep {
        Some((gone, came)) => word_pairs(gone, came)
            .iter()
            .fold(field, |c, &(o, n)| checksum::update_partial_u32(c, o, n)),
        None => {
            l4[csum_at..csum_at + 2].fill(0);
            let len = u32::try_from(l4.len()).unwrap_or(u32::MAX);
            let ph =
                checksum::pseudo_header_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), proto, len);
            let c = !checksum::fold(u64::from(checksum::sum(l4, ph)));
            // RFC 768 / RFC 8200 §8.1: a computed UDP checksum of 0 is sent
            // as all ones (0 means "none", which IPv6 forbids).
            if c == 0 && proto == ipv6::PROTO_UDP {
                0xffff
            } else {
                c
            }
        }
    };
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
}

impl Segment<u128> {
    /// The TCP segment or UDP datagram at `off` of a checked IPv6 packet.
    #[inline(always)]
    fn parse6(
        ip: &ipv6::Packet<&[u8]>,
        (off, proto): (usize, u8),
        src_mac: MacAddr,
        meta: PacketMeta,
    ) -> Result<Segment<u128>, DropReason> {
        let l4 = ip.as_ref().get(off..).unwrap_or_default();
        let (sport, dport, flags) = if proto == ipv6::PROTO_TCP {
            let t = tcp::Packet::new_checked(l4).map_err(|_| DropReason::TcpMalformed)?;
            (t.src_port(), t.dst_port(), t.flags())
        } else {
            let u = udp::Packet::new_checked(l4).map_err(|_| DropReason::UdpMalformed)?;
            (u.src_port(), u.dst_port(), 0)
        };
        Ok(Segment {
            tuple: FourTuple {
                src: ip.src_u128(),
                dst: ip.dst_u128(),
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

/// The address at `at` of a buffer known to hold 16 bytes there.
fn ip6_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_be_bytes(a)
}

impl Forwarder {
    /// An ICMPv6 error (RFC 4443 §3: destination unreachable, packet too
    /// big, time exceeded, parameter problem) to a VIP: translated and
    /// sent on to the flow its quote names, as `errors.rs` does for ICMP.
    /// Packet Too Big above all: IPv6 routers never fragment (RFC 8200 §5),
    /// so a flow whose path narrows stalls without it.
    fn icmp6_error(&mut self, snap: &Snapshot, eth: &mut Eth, off: usize) -> Verdict {
        let q = {
            let Ok(ip) = ipv6::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv6Malformed);
            };
            let msg = ip.as_ref().get(off..).unwrap_or_default();
            let Ok(m) = icmpv6::Packet::new_checked(msg) else {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            };
            if !m.verify_checksum(ip.src(), ip.dst()) {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            }
            // The quote: a fixed IPv6 header, then (no extension headers
            // walked in a quote) the transport header's first 8 bytes.
            let quote = m.payload();
            let proto = quote.get(6).copied().unwrap_or(0);
            let Some(l4) = quote.get(ipv6::HEADER_LEN..) else {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            };
            let Ok(p) = Ports::new_checked(l4, proto) else {
                return Verdict::Drop(DropReason::IcmpNoFlow);
            };
            super::errors::Quote {
                outer_src: ip.src_u128(),
                src: ip6_at(quote, 8),
                dst: ip6_at(quote, 24),
                sport: p.src_port(),
                dport: p.dst_port(),
                proto,
            }
        };
        self.error_of_flow(snap, eth, &q)
    }

    /// An IPv6 packet to podlb's MAC (`to_us`) or to a multicast group:
    /// NDP and the VRRP group from either, flows only to podlb's MAC.
    #[inline]
    pub(super) fn ipv6(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        meta: PacketMeta,
        now_ms: u32,
        to_us: bool,
    ) -> Verdict {
        let src_mac = eth.src();
        let seg = {
            let Ok(ip) = ipv6::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv6Malformed);
            };
            let Ok(up) = ip.upper_layer() else {
                return Verdict::Drop(DropReason::Ipv6Malformed);
            };
            let whole = up.fragment.is_none_or(|f| f.is_atomic());
            match up.protocol {
                ipv6::PROTO_ICMPV6 if whole => return self.icmpv6(snap, eth, up.offset, now_ms),
                PROTO_VRRP if whole => return Verdict::Punt,
                _ if !to_us => return Verdict::Ignore,
                _ => {}
            }
            if !snap.is_vip(ip.dst_u128()) {
                return Verdict::Ignore;
            }
            if !self.active6 {
                return Verdict::Drop(DropReason::NotMaster);
            }
            match up.protocol {
                _ if !whole => return Verdict::Drop(DropReason::Ipv6Fragment),
                ipv6::PROTO_TCP | ipv6::PROTO_UDP => {
                    match Segment::parse6(&ip, (up.offset, up.protocol), src_mac, meta) {
                        Ok(seg) => seg,
                        Err(r) => return Verdict::Drop(r),
                    }
                }
                _ => return Verdict::Drop(DropReason::NoService),
            }
        };
        self.l4(snap, eth, &seg, now_ms)
    }

    /// ICMPv6 at `off` of the frame's IPv6 packet: NDP, and echo to a VIP.
    fn icmpv6(&mut self, snap: &Snapshot, eth: &mut Eth, off: usize, now_ms: u32) -> Verdict {
        let (src, dst, hop_limit, ty) = {
            let Ok(ip) = ipv6::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv6Malformed);
            };
            let msg = ip.as_ref().get(off..).unwrap_or_default();
            let Ok(m) = icmpv6::Packet::new_checked(msg) else {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            };
            (ip.src(), ip.dst(), ip.hop_limit(), m.msg_type())
        };
        let to_vip = eth.dst() == self.mac6 && snap.is_vip(u128::from(dst));
        match ty {
            icmpv6::TYPE_DEST_UNREACH
            | icmpv6::TYPE_PACKET_TOO_BIG
            | icmpv6::TYPE_TIME_EXCEEDED
            | icmpv6::TYPE_PARAM_PROBLEM
                if to_vip =>
            {
                if !self.active6 {
                    return Verdict::Drop(DropReason::NotMaster);
                }
                if !self.icmp_errors {
                    return Verdict::Drop(DropReason::IcmpUnhandled);
                }
                self.icmp6_error(snap, eth, off)
            }
            icmpv6::TYPE_NEIGHBOR_SOLICIT => {
                self.solicit(snap, eth, off, (src, dst, hop_limit), now_ms)
            }
            icmpv6::TYPE_NEIGHBOR_ADVERT => {
                self.advert(snap, eth, off, (src, dst, hop_limit), now_ms)
            }
            icmpv6::TYPE_ECHO_REQUEST if to_vip => {
                if !self.active6 {
                    return Verdict::Drop(DropReason::NotMaster);
                }
                if !self.accept_mode {
                    return Verdict::Drop(DropReason::IcmpUnhandled);
                }
                self.echo6(eth, off)
            }
            _ => Verdict::Ignore,
        }
    }

    /// A Neighbor Solicitation (RFC 4861 §7.2.3): learn the solicitor if
    /// tracked; answer for a VIP we serve (or our own address in TAP mode)
    /// with a Neighbor Advertisement (§7.2.4).
    fn solicit(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        off: usize,
        (src, dst, hop_limit): (Ipv6Addr, Ipv6Addr, u8),
        now_ms: u32,
    ) -> Verdict {
        let ns = {
            let msg = eth.payload().get(off..).unwrap_or_default();
            let Ok(ns) = ndp::NeighborSolicit::new_checked(msg) else {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            };
            // RFC 4861 §7.1.1: hop limit 255, checksum, code 0, options.
            if !ns.valid_for(src, dst, hop_limit) || !ns.verify_checksum(src, dst) {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            }
            let Ok(r) = ndp::SolicitRepr::parse(&ns) else {
                return Verdict::Drop(DropReason::Icmpv6Malformed);
            };
            r
        };
        if let Some(mac) = ns.source_ll {
            if self.neighbors6.learn(u128::from(src), mac, now_ms) {
                self.stats.event(Event::NdpLearned, 1);
            }
        }
        let target = u128::from(ns.target);
        let for_own = self.own_ip6 == Some(target);
        let for_vip = self.active6 && snap.is_vip(target);
        if !for_own && !for_vip {
            self.stats.event(Event::NdpOtherTarget, 1);
            return Verdict::Ignore;
        }
        if src.is_unspecified() && for_vip {
            // RFC 4862 §5.4.3: another node's Duplicate Address Detection
            // for a VIP we serve: it is about to claim it. Counted as the
            // conflict it is; the answer below (to all nodes) defends it.
            self.stats.dropped(DropReason::VipConflict);
        }
        let mac = if for_own { self.own_mac } else { self.mac6 };
        // §7.2.4: to the solicitor, or to all nodes for DAD (from ::).
        let (to_ip, to_mac) = if src.is_unspecified() {
            (ALL_NODES, ndp::multicast_mac(ALL_NODES))
        } else {
            (src, eth.src())
        };
        let na = ndp::AdvertRepr::answer(ns.target, mac, src);
        let to = ndp::Envelope {
            src_mac: mac,
            dst_mac: to_mac,
            src: ns.target,
            dst: to_ip,
        };
        if self.emit_ndp(&na, &to) {
            self.stats.event(Event::NdpAdvertsSent, 1);
            Verdict::TxOut
        } else {
            Verdict::Drop(DropReason::TxError)
        }
    }

    /// A Neighbor Advertisement (RFC 4861 §7.2.5): learn the target's MAC
    /// if tracked; another MAC announcing a VIP we serve is a conflict.
    fn advert(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        off: usize,
        (src, dst, hop_limit): (Ipv6Addr, Ipv6Addr, u8),
        now_ms: u32,
    ) -> Verdict {
        let msg = eth.payload().get(off..).unwrap_or_default();
        let Ok(na) = ndp::NeighborAdvert::new_checked(msg) else {
            return Verdict::Drop(DropReason::Icmpv6Malformed);
        };
        if !na.valid_for(dst, hop_limit) || !na.verify_checksum(src, dst) {
            return Verdict::Drop(DropReason::Icmpv6Malformed);
        }
        let target = u128::from(na.target());
        let mac = na.target_ll_addr().unwrap_or(eth.src());
        if self.active6 && mac != self.mac6 && mac != self.own_mac && snap.is_vip(target) {
            return Verdict::Drop(DropReason::VipConflict);
        }
        if self.neighbors6.learn(target, mac, now_ms) {
            self.stats.event(Event::NdpLearned, 1);
        }
        Verdict::Ignore
    }

    /// Builds the NDP frame in `out`. False if no room.
    fn emit_ndp(&mut self, na: &ndp::AdvertRepr, to: &ndp::Envelope) -> bool {
        let len = ethernet::HEADER_LEN + ipv6::HEADER_LEN + na.buffer_len();
        self.out
            .next(len)
            .is_some_and(|buf| na.emit_frame(buf, to).is_ok())
    }

    /// ICMPv6 echo request to a VIP (RFC 4443 §4.2): answered in place.
    /// Swapping the addresses leaves the pseudo-header sum unchanged; only
    /// the type changes in the checksum.
    fn echo6(&mut self, eth: &mut Eth, off: usize) -> Verdict {
        let client_mac = eth.src();
        let mac = self.mac6;
        let Ok(mut ip) = ipv6::Packet::new_checked(eth.payload_mut()) else {
            return Verdict::Drop(DropReason::Ipv6Malformed);
        };
        let (s, d) = (ip.src(), ip.dst());
        {
            let msg = ip.as_ref().get(off..).unwrap_or_default();
            match icmpv6::Packet::new_checked(msg) {
                Ok(m) if m.verify_checksum(s, d) && m.code() == 0 => {}
                _ => return Verdict::Drop(DropReason::Icmpv6Malformed),
            }
        }
        ip.set_src(d);
        ip.set_dst(s);
        ip.set_hop_limit(64);
        let Some(msg) = ip.into_inner().get_mut(off..) else {
            return Verdict::Drop(DropReason::Icmpv6Malformed);
        };
        let Ok(mut m) = icmpv6::Packet::new_checked(msg) else {
            return Verdict::Drop(DropReason::Icmpv6Malformed);
        };
        let c = checksum::update_u16(
            m.checksum(),
            u16::from(icmpv6::TYPE_ECHO_REQUEST) << 8,
            u16::from(icmpv6::TYPE_ECHO_REPLY) << 8,
        );
        m.set_msg_type(icmpv6::TYPE_ECHO_REPLY);
        m.set_checksum(c);
        eth.set_dst(client_mac);
        eth.set_src(mac);
        self.stats.event(Event::IcmpEchoReplies, 1);
        Verdict::Tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;
    use crate::model::Mode;
    use crate::testlab::*;

    fn setup6(mode: Mode) -> (Forwarder, Snapshot) {
        let snap = build(
            1,
            &[service(Mode::Nat, 8080, &BACKENDS), service6(mode, 8080)],
        );
        (forwarder(true, 0, None), snap)
    }

    /// Full NAT over IPv6: the SYN leaves from the VIP to a backend with a
    /// NAT port, the SYN-ACK comes back to the client; checksums verified
    /// by etherparse; the flow is in the IPv6 table, none in the IPv4 one.
    #[test]
    fn nat66_round_trip() {
        let (mut f, snap) = setup6(Mode::Nat);
        let mut syn = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (src, dst, sport, dport) = verify6(&syn);
        assert_eq!(src, VIP6);
        assert!(BACKENDS6.contains(&dst));
        assert_eq!(dport, 8080);
        assert_eq!(&syn[0..6], &bmac6(dst).0);
        let mut synack = tcp6_frame(bmac6(dst).0, LB, (dst, VIP6), 8080, sport, "SA");
        assert_eq!(
            f.forward(&snap, &mut synack, PacketMeta::default(), 2),
            Verdict::Tx
        );
        assert_eq!(verify6(&synack), (VIP6, CLIENT6, 80, 40000));
        assert_eq!(&synack[0..6], &CLIENT_MAC);
        assert_eq!((f.flows6.len(), f.flows.len()), (1, 0));
        let key = FlowKey {
            client: CLIENT6,
            vip: VIP6,
            client_port: 40000,
            vport: 80,
            proto: 6,
        };
        assert!(f.flows6.lookup(&key).is_some());
    }

    #[test]
    fn nat66_udp_and_dsr6() {
        let (mut f, _) = setup6(Mode::Nat);
        let mut q = udp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), 5353, 80);
        let snap_udp = build(
            1,
            &[crate::model::ServiceConfig {
                protocol: crate::model::Protocol::Udp,
                ..service6(Mode::Nat, 8080)
            }],
        );
        assert_eq!(
            f.forward(&snap_udp, &mut q, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (src, dst, _, dport) = verify6(&q);
        assert_eq!((src, dport), (VIP6, 8080));
        assert!(BACKENDS6.contains(&dst));

        let (mut f, snap) = setup6(Mode::Dsr);
        let orig = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), 40001, 80, "S");
        let mut syn = orig.clone();
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        assert_eq!(&syn[12..], &orig[12..], "DSR: IP and TCP untouched");
        assert!(BACKENDS6.iter().any(|&b| syn[0..6] == bmac6(b).0));
        drop(f);
    }

    /// An NS for the VIP (to its solicited-node group) gets a solicited NA
    /// with the Override flag and podlb's MAC; an NS for another address is
    /// left to the kernel; a bad hop limit is a counted drop; a tracked
    /// neighbor's MAC is learned from its NS.
    #[test]
    fn neighbor_solicitation_for_the_vip_is_answered() {
        let (mut f, snap) = setup6(Mode::Nat);
        let ns = |target: u128, hop: u8| {
            let target = Ipv6Addr::from(target);
            let group = ndp::solicited_node(target);
            let r = ndp::SolicitRepr {
                target,
                source_ll: Some(MacAddr(CLIENT_MAC)),
            };
            let mut m = vec![0u8; r.buffer_len()];
            r.emit(Ipv6Addr::from(CLIENT6), group, &mut m).unwrap();
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2(CLIENT_MAC, ndp::multicast_mac(group).0)
                .ipv6(CLIENT6.to_be_bytes(), group.octets(), hop)
                .write(&mut v, etherparse::IpNumber::IPV6_ICMP, &m)
                .unwrap();
            v
        };
        f.neighbors6.track(CLIENT6);
        let mut q = ns(VIP6, 255);
        assert_eq!(
            f.forward(&snap, &mut q, PacketMeta::default(), 1),
            Verdict::TxOut
        );
        assert_eq!(f.neighbors6.lookup(CLIENT6), Some(MacAddr(CLIENT_MAC)));
        let out: Vec<u8> = f.out.frames().next().unwrap().to_vec();
        assert_eq!(&out[0..6], &CLIENT_MAC);
        assert_eq!(&out[6..12], &LB);
        let ip = ipv6::Packet::new_checked(&out[14..]).unwrap();
        assert_eq!(
            (ip.hop_limit(), ip.dst_u128(), ip.src_u128()),
            (255, CLIENT6, VIP6)
        );
        let na = ndp::NeighborAdvert::new_checked(ip.payload()).unwrap();
        assert!(na.verify_checksum(ip.src(), ip.dst()));
        let r = ndp::AdvertRepr::parse(&na).unwrap();
        assert!(r.solicited && r.override_flag && !r.router);
        assert_eq!(
            (r.target, r.target_ll),
            (Ipv6Addr::from(VIP6), Some(MacAddr(LB)))
        );

        let mut other = ns(VIP6 + 7, 255);
        assert_eq!(
            f.forward(&snap, &mut other, PacketMeta::default(), 1),
            Verdict::Ignore
        );
        let mut bad = ns(VIP6, 64);
        assert_eq!(
            f.forward(&snap, &mut bad, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::Icmpv6Malformed)
        );
        // A backup answers nothing for the VIP.
        f.active6 = false;
        let mut q = ns(VIP6, 255);
        assert_eq!(
            f.forward(&snap, &mut q, PacketMeta::default(), 1),
            Verdict::Ignore
        );
    }

    #[test]
    fn echo6_to_the_vip_is_answered() {
        let (mut f, snap) = setup6(Mode::Nat);
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB)
            .ipv6(CLIENT6.to_be_bytes(), VIP6.to_be_bytes(), 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut v, b"ping")
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut v, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let ip = ipv6::Packet::new_checked(&v[14..]).unwrap();
        assert_eq!((ip.src_u128(), ip.dst_u128()), (VIP6, CLIENT6));
        let m = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(m.msg_type(), icmpv6::TYPE_ECHO_REPLY);
        assert!(m.verify_checksum(ip.src(), ip.dst()));
    }

    /// A Packet Too Big from a router towards the client, quoting a reply
    /// podlb sent (VIP:80 → client), reaches the backend as if about the
    /// backend's own packet (backend:8080 → VIP:nat): outer destination,
    /// quoted addresses and ports translated, the quoted TCP checksum and
    /// the ICMPv6 checksum right (checked by etherparse); an error quoting
    /// no flow is a counted drop.
    #[test]
    fn packet_too_big_through_nat66_reaches_the_backend() {
        let (mut f, snap) = setup6(Mode::Nat);
        let mut syn = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (_, b, nat, _) = verify6(&syn);
        let mut synack = tcp6_frame(bmac6(b).0, LB, (b, VIP6), 8080, nat, "SA");
        assert_eq!(
            f.forward(&snap, &mut synack, PacketMeta::default(), 2),
            Verdict::Tx
        );
        let router: u128 = 0x2001_0002_0000_0009_0000_0000_0000_0001;
        let ptb = |quote: &[u8]| {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x99], LB)
                .ipv6(router.to_be_bytes(), VIP6.to_be_bytes(), 64)
                .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
                .write(&mut v, quote)
                .unwrap();
            v
        };
        let mut e = ptb(&synack[14..]);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 3),
            Verdict::Tx
        );
        assert_eq!(&e[0..6], &bmac6(b).0, "to the backend's MAC");
        let (ip, rest) = etherparse::Ipv6Header::from_slice(&e[14..]).unwrap();
        assert_eq!(
            u128::from_be_bytes(ip.source),
            router,
            "the router stays the source"
        );
        assert_eq!(u128::from_be_bytes(ip.destination), b);
        let icmp = etherparse::Icmpv6Slice::from_slice(rest).unwrap();
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 }
        );
        let want = icmp
            .header()
            .icmp_type
            .calc_checksum(ip.source, ip.destination, icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), want, "ICMPv6 checksum");
        let (qip, qrest) = etherparse::Ipv6Header::from_slice(icmp.payload()).unwrap();
        assert_eq!(
            (
                u128::from_be_bytes(qip.source),
                u128::from_be_bytes(qip.destination)
            ),
            (b, VIP6)
        );
        let (qt, qpay) = etherparse::TcpHeader::from_slice(qrest).unwrap();
        assert_eq!((qt.source_port, qt.destination_port), (8080, nat));
        let c = qt
            .calc_checksum_ipv6_raw(qip.source, qip.destination, qpay)
            .unwrap();
        assert_eq!(qt.checksum, c, "quoted TCP checksum");
        assert_eq!(f.stats.events(crate::stats::Event::IcmpErrorsToBackend), 1);

        // Quoting a flow podlb does not hold.
        let stray = tcp6_frame(LB, CLIENT_MAC, (VIP6, CLIENT6), 80, 41999, "A");
        let mut e = ptb(&stray[14..]);
        assert_eq!(
            f.forward(&snap, &mut e, PacketMeta::default(), 4),
            Verdict::Drop(DropReason::IcmpNoFlow)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any mutation or cut of an IPv6 SYN or NS never panics.
        #[test]
        fn ipv6_frames_never_panic(cut in 0usize..140, flip in 0usize..140, val in proptest::prelude::any::<u8>()) {
            let (mut f, snap) = setup6(Mode::Nat);
            let mut v = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), 40000, 80, "S");
            if flip < v.len() { v[flip] = val; }
            v.truncate(cut.max(1));
            let meta = PacketMeta { csum_partial: val & 1 == 1, tx_keeps_partial: val & 2 == 2, ..Default::default() };
            let _ = f.forward(&snap, &mut v, meta, 1);
            proptest::prop_assert!(f.flows6.len() <= 1);
        }
    }
}
