//! What podlb answers itself rather than forwards: ARP for the VIPs (and
//! for its own address in TAP mode), with the learning of tracked senders
//! and RFC 5227 conflict detection on the way; ICMP echo to the VIPs.

use super::{ipv4, ipv4_in, set_macs, Eth, Forwarder, Verdict};
use crate::service::Snapshot;
use crate::stats::{DropReason, Event};
use podlb_wire::{arp, checksum, icmp};

impl Forwarder {
    /// RFC 826 §"Packet Reception": learn the sender if we track it, and
    /// answer a request for an address we serve (a VIP).
    pub(super) fn arp(&mut self, snap: &Snapshot, eth: &mut Eth, now_ms: u32) -> Verdict {
        let Ok(mut p) = arp::Packet::new_checked(eth.payload_mut()) else {
            return Verdict::Drop(DropReason::ArpMalformed);
        };
        let sender_ip = u32::from(p.sender_ip());
        let sender_hw = p.sender_hw();
        if self.neighbors.learn(sender_ip, sender_hw, now_ms) {
            self.stats.event(Event::ArpLearned, 1);
        }
        // RFC 5227 §2.4 ongoing address conflict detection: any ARP (request
        // or reply) whose sender address is a VIP we serve but whose sender
        // MAC is not ours means another host claims the VIP. Counted, and
        // the pair left in this worker's conflict slot (lock-free, see
        // `ConflictSlot`) for the control thread, which logs it and defends
        // (RFC 5227 §2.4 (b)). A backup serves nothing: not its conflict.
        if self.active
            && sender_hw != self.mac
            && sender_hw != self.own_mac
            && snap.is_vip(sender_ip)
        {
            self.stats.conflict.record(sender_ip, sender_hw.0);
            return Verdict::Drop(DropReason::VipConflict);
        }
        let target_ip = p.target_ip();
        let for_own = self.own_ip == Some(u32::from(target_ip));
        if p.operation() != arp::OP_REQUEST {
            return Verdict::Ignore;
        }
        if !(for_own || (self.active && snap.is_vip(u32::from(target_ip)))) {
            self.stats.event(Event::ArpOtherTarget, 1);
            return Verdict::Ignore;
        }
        // The VIPs are answered with the serving (virtual) MAC, our own
        // address with the device's MAC.
        let mac = if for_own { self.own_mac } else { self.mac };
        // Another host announcing the VIP as its own (sender == target) is
        // not a question; answering would only add to the conflict.
        if sender_ip == u32::from(target_ip) || !sender_hw.is_unicast() {
            return Verdict::Ignore;
        }
        // RFC 826: swap sender and target, fill in our hardware address, set
        // the opcode to reply, send to the requester's hardware address.
        p.set_operation(arp::OP_REPLY);
        p.set_target_hw(sender_hw);
        p.set_target_ip(p.sender_ip());
        p.set_sender_hw(mac);
        p.set_sender_ip(target_ip);
        set_macs(eth, sender_hw, mac);
        self.stats.event(Event::ArpRepliesSent, 1);
        Verdict::Tx
    }

    /// ICMP echo to a VIP (RFC 792): answered in place.
    pub(super) fn icmp(&mut self, eth: &mut Eth) -> Verdict {
        {
            let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv4Malformed);
            };
            let Ok(p) = icmp::Packet::new_checked(ip.payload()) else {
                return Verdict::Drop(DropReason::IcmpMalformed);
            };
            if !p.verify_checksum() {
                return Verdict::Drop(DropReason::IcmpMalformed);
            }
            if p.msg_type() != icmp::TYPE_ECHO_REQUEST || p.code() != 0 {
                return Verdict::Drop(DropReason::IcmpUnhandled);
            }
        }
        let client_mac = eth.src();
        set_macs(eth, client_mac, self.mac);
        let Some(mut ip) = ipv4_in(eth) else {
            return Verdict::Drop(DropReason::Ipv4Malformed);
        };
        let (s, d) = (ip.src(), ip.dst());
        // Swapping source and destination leaves the header sum unchanged;
        // the new TTL is folded in incrementally (RFC 1624).
        ip.set_src(d);
        ip.set_dst(s);
        let old = u16::from_be_bytes([ip.ttl(), ip.protocol()]);
        ip.set_ttl(64);
        let new = u16::from_be_bytes([64, ip.protocol()]);
        let c = checksum::update_u16(ip.checksum(), old, new);
        ip.set_checksum(c);
        let Ok(mut p) = icmp::Packet::new_checked(ip.payload_mut()) else {
            return Verdict::Drop(DropReason::IcmpMalformed);
        };
        let c = checksum::update_u16(
            p.checksum(),
            u16::from(icmp::TYPE_ECHO_REQUEST) << 8,
            u16::from(icmp::TYPE_ECHO_REPLY) << 8,
        );
        p.set_msg_type(icmp::TYPE_ECHO_REPLY);
        p.set_checksum(c);
        if c == 0 {
            // RFC 1624 eqn. 3 never yields 0xFFFF, which is the checksum of a
            // message that is all zeros (an echo reply with identifier,
            // sequence and data zero). Recount: echo is not the hot path.
            p.fill_checksum();
        }
        self.stats.event(Event::IcmpEchoReplies, 1);
        Verdict::Tx
    }
}

#[cfg(test)]
mod tests {

    use crate::forward::*;
    use crate::model::Mode;

    use crate::stats::{DropReason, Event};
    use crate::testlab::*;
    use etherparse::PacketBuilder;
    use podlb_wire::{arp, checksum, icmp, MacAddr};
    use std::net::Ipv4Addr;

    #[test]
    fn arp_request_for_vip_answered_in_place() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut buf = [0u8; 64];
        let ask = arp::Repr::request(MacAddr(CLIENT_MAC), CLIENT.into(), VIP.into());
        let n = ask.emit_frame(&mut buf).unwrap();
        let mut frame = buf[..n].to_vec();
        assert_eq!(
            f.forward(&snap, &mut frame, PacketMeta::default(), 1),
            Verdict::Tx
        );
        assert_eq!(&frame[0..6], &CLIENT_MAC);
        assert_eq!(&frame[6..12], &LB);
        let p = arp::Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(p.operation(), arp::OP_REPLY);
        assert_eq!(
            (p.sender_hw(), p.sender_ip()),
            (MacAddr(LB), Ipv4Addr::from(VIP))
        );
        assert_eq!(
            (p.target_hw(), p.target_ip()),
            (MacAddr(CLIENT_MAC), Ipv4Addr::from(CLIENT))
        );
        // Requests for other addresses are not ours.
        let n = arp::Repr::request(
            MacAddr(CLIENT_MAC),
            CLIENT.into(),
            Ipv4Addr::new(198, 18, 0, 99),
        )
        .emit_frame(&mut buf)
        .unwrap();
        assert_eq!(
            f.forward(&snap, &mut buf[..n], PacketMeta::default(), 1),
            Verdict::Ignore
        );
        // A backend's ARP reply teaches its (new) MAC.
        let newmac = MacAddr([2, 9, 9, 9, 9, 9]);
        let reply = arp::Repr {
            operation: arp::OP_REPLY,
            sender_hw: newmac,
            sender_ip: BACKENDS[0].into(),
            target_hw: MacAddr(LB),
            target_ip: Ipv4Addr::UNSPECIFIED,
        };
        let n = reply.emit_frame(&mut buf).unwrap();
        f.forward(&snap, &mut buf[..n], PacketMeta::default(), 5);
        assert_eq!(
            f.neighbors.lookup(u32::from_be_bytes(BACKENDS[0])),
            Some(newmac)
        );
    }

    #[test]
    fn arp_claiming_a_vip_from_another_mac_is_a_conflict() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let stranger = MacAddr([2, 0xee, 0, 0, 0, 7]);
        let mut buf = [0u8; 64];
        // A gratuitous ARP (RFC 5227 §2.3 announcement) for the VIP ...
        let n = arp::Repr::gratuitous(stranger, VIP.into())
            .emit_frame(&mut buf)
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut buf[..n], PacketMeta::default(), 1),
            Verdict::Drop(DropReason::VipConflict)
        );
        let (g1, vip, mac) = f.stats.conflict.read().unwrap();
        assert_eq!((vip, mac), (u32::from_be_bytes(VIP), stranger.0));
        // ... and an ARP reply from the VIP (RFC 826), unicast to us.
        let reply = arp::Repr {
            operation: arp::OP_REPLY,
            sender_hw: stranger,
            sender_ip: VIP.into(),
            target_hw: MacAddr(LB),
            target_ip: CLIENT.into(),
        };
        let n = reply.emit_frame(&mut buf).unwrap();
        assert_eq!(
            f.forward(&snap, &mut buf[..n], PacketMeta::default(), 2),
            Verdict::Drop(DropReason::VipConflict)
        );
        assert_ne!(f.stats.conflict.read().unwrap().0, g1);
        assert_eq!(f.stats.drops(DropReason::VipConflict), 2);
        // Our own announcements (the serving MAC) are no conflict.
        let n = arp::Repr::gratuitous(MacAddr(LB), VIP.into())
            .emit_frame(&mut buf)
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut buf[..n], PacketMeta::default(), 3),
            Verdict::Ignore
        );
        // Neither is an address that is not a VIP.
        let n = arp::Repr::gratuitous(stranger, CLIENT.into())
            .emit_frame(&mut buf)
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut buf[..n], PacketMeta::default(), 3),
            Verdict::Ignore
        );
        // A backup does not serve the VIP: the claim is not its conflict.
        f.active = false;
        let n = arp::Repr::gratuitous(stranger, VIP.into())
            .emit_frame(&mut buf)
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut buf[..n], PacketMeta::default(), 4),
            Verdict::Ignore
        );
        assert_eq!(f.stats.drops(DropReason::VipConflict), 2);
    }

    #[test]
    fn arp_requests_for_other_addresses_are_counted() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            let n = arp::Repr::request(
                MacAddr(CLIENT_MAC),
                CLIENT.into(),
                Ipv4Addr::new(198, 18, 1, i),
            )
            .emit_frame(&mut buf)
            .unwrap();
            assert_eq!(
                f.forward(&snap, &mut buf[..n], PacketMeta::default(), 1),
                Verdict::Ignore
            );
        }
        assert_eq!(f.stats.events(Event::ArpOtherTarget), 100);
        assert_eq!(f.stats.events(Event::ArpRepliesSent), 0);
    }

    #[test]
    fn icmp_echo_to_vip_answered() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB)
            .ipv4(CLIENT, VIP, 7)
            .icmpv4_echo_request(1, 2)
            .write(&mut v, b"ping")
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut v, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let s = etherparse::SlicedPacket::from_ethernet(&v).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), VIP);
        assert_eq!(ip.header().destination(), CLIENT);
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = s.transport else {
            panic!("not ICMP")
        };
        assert!(matches!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::EchoReply(_)
        ));
        assert_eq!(checksum::internet(icmp.slice()), 0, "ICMP checksum");
    }

    /// Found by the `icmp` fuzz target (an 8-byte all-zero reply): the
    /// incremental type update gave checksum 0x0000 to the reply of an echo
    /// request with identifier, sequence and data all zero, whose only
    /// correct checksum is 0xFFFF; the client dropped the reply.
    #[test]
    fn icmp_echo_reply_of_all_zero_request_has_checksum_ffff() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB)
            .ipv4(CLIENT, VIP, 64)
            .icmpv4_echo_request(0, 0)
            .write(&mut v, &[])
            .unwrap();
        assert_eq!(&v[34..], &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
        assert_eq!(
            f.forward(&snap, &mut v, PacketMeta::default(), 1),
            Verdict::Tx
        );
        assert_eq!(&v[34..], &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(checksum::internet(&v[34..]), 0, "ICMP checksum");
        // Other replies keep the incremental update (and stay correct).
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB)
            .ipv4(CLIENT, VIP, 64)
            .icmpv4_echo_request(0, 0)
            .write(&mut v, &[0, 1])
            .unwrap();
        f.forward(&snap, &mut v, PacketMeta::default(), 1);
        assert_eq!(v[34], icmp::TYPE_ECHO_REPLY);
        assert_eq!(checksum::internet(&v[34..]), 0, "ICMP checksum");
    }
}
