//! The VXLAN paths (RFC 7348): encapsulation of a client's segment towards
//! its backend's VTEP, and decapsulation of the replies that come back
//! through the tunnel.

use super::gso::segment_into;
use super::nat::Nat;
use super::{ethernet, ipv4, reverse_key, set_macs, tcp, udp, Eth, Forwarder, Segment, Verdict};
use crate::flow::Flow;
use crate::service::{Snapshot, Vtep};
use crate::stats::{BackendCounter, DropReason, Event};
use podlb_wire::{vxlan, MacAddr, PacketMeta};

/// The outer headers of one VXLAN frame towards a VTEP (RFC 7348 §5).
#[derive(Debug, Clone, Copy)]
pub(super) struct Outer {
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    pub src: u32,
    pub vtep: Vtep,
    pub sport: u16,
}

impl Outer {
    /// Writes outer Ethernet, IPv4 (TTL 64, DF, header checksum), UDP
    /// (checksum 0, allowed over IPv4 by RFC 7348 §5) and VXLAN headers
    /// into `b`, whose last `b.len() - vxlan::OVERHEAD` bytes `inner` then
    /// fills with the inner frame. `None` if `b` is too short for the
    /// headers or too long for the UDP length, or if `inner` says so.
    #[inline]
    pub(super) fn emit(
        &self,
        b: &mut [u8],
        ident: u16,
        inner: impl FnOnce(&mut [u8]) -> Option<()>,
    ) -> Option<()> {
        let inner_len = b.len().checked_sub(vxlan::OVERHEAD)?;
        let udp = udp::Repr {
            src_port: self.sport,
            dst_port: self.vtep.port,
            payload_len: u16::try_from(vxlan::HEADER_LEN + inner_len).ok()?,
        };
        let ip = ipv4::Repr {
            src: self.src.into(),
            dst: self.vtep.ip.into(),
            protocol: ipv4::PROTO_UDP,
            ttl: 64,
            ident,
            payload_len: u16::try_from(udp.buffer_len()).ok()?,
        };
        let eth = ethernet::Repr {
            dst: self.dst_mac,
            src: self.src_mac,
            ethertype: ethernet::ETHERTYPE_IPV4,
        };
        let mut f = eth.emit(b).ok()?;
        let mut p = ip.emit(f.payload_mut()).ok()?;
        let mut u = udp.emit(p.payload_mut()).ok()?;
        let mut vx = vxlan::Repr { vni: self.vtep.vni }
            .emit(u.payload_mut())
            .ok()?;
        inner(vx.payload_mut())
    }
}

/// What became of a decapsulated inner frame.
enum Inner {
    /// Rewritten in place; send its first `usize` bytes.
    Tx(usize),
    Drop(DropReason),
}

impl Forwarder {
    /// Full NAT of a client segment (as `mode = "nat"`), then VXLAN
    /// encapsulation into [`Forwarder::out`]. A GSO frame is cut into TCP
    /// segments first: once inside UDP, no device or kernel on the way can
    /// segment it from a virtio-net header.
    pub(super) fn encapsulate(
        &mut self,
        eth: &mut Eth,
        seg: &Segment,
        flow: &Flow,
        outer: Outer,
        clamp: Option<u16>,
    ) -> Verdict {
        let (ip_len, opts_len, payload_len) = {
            let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
                return Verdict::Drop(DropReason::Ipv4Malformed);
            };
            if ip.protocol() != ipv4::PROTO_TCP || ip.is_fragment() {
                // UDP, fragments and ICMP errors travel as one frame each.
                (ip.total_len(), 0, 0)
            } else {
                match tcp::Packet::new_checked(ip.payload()) {
                    Ok(t) => (ip.total_len(), t.options().len(), t.payload().len()),
                    Err(_) => return Verdict::Drop(DropReason::TcpMalformed),
                }
            }
        };
        // Segment size: the device's gso_size; without a virtio-net header a
        // frame above 1500 bytes of IPv4 can only be a GSO frame whose size
        // we do not know, so the clamp (what the backend accepts) minus the
        // TCP options is used.
        let mss = if seg.meta.gso_size != 0 {
            seg.meta.gso_size
        } else if ip_len > 1500 {
            let opts = u16::try_from(opts_len).unwrap_or(u16::MAX);
            clamp
                .unwrap_or(crate::model::DEFAULT_VXLAN_MSS)
                .saturating_sub(opts)
        } else {
            0
        };
        let segment = mss != 0 && payload_len > usize::from(mss);
        // Segments get full checksums computed each; a single frame leaves
        // without a virtio-net header, so a partial checksum is completed.
        let nat_meta = if segment {
            PacketMeta {
                csum_partial: true,
                tx_keeps_partial: true,
                ..seg.meta
            }
        } else {
            PacketMeta {
                tx_keeps_partial: false,
                ..seg.meta
            }
        };
        // Inner Ethernet: from podlb to the node's VXLAN device.
        set_macs(eth, outer.vtep.mac, self.mac);
        if !seg.translated {
            Nat::to_backend(flow).apply(eth, nat_meta);
        }
        // The frame without Ethernet padding.
        let len = eth.header_len() + usize::from(ip_len);
        let Some(inner) = eth.as_ref().get(..len) else {
            return Verdict::Drop(DropReason::Oversize);
        };
        let sent = if segment {
            let Some(n) = segment_into(&mut self.out, inner, mss, &outer) else {
                self.out.clear();
                return Verdict::Drop(DropReason::Oversize);
            };
            self.stats.event(Event::GsoSegmented, 1);
            self.stats.event(Event::GsoSegments, n as u64);
            n
        } else {
            let ident = self.out.ident;
            let emitted = self.out.next(vxlan::OVERHEAD + inner.len()).and_then(|b| {
                outer.emit(b, ident, |f| {
                    f.copy_from_slice(inner);
                    Some(())
                })
            });
            if emitted.is_none() {
                self.out.clear();
                return Verdict::Drop(DropReason::Oversize);
            }
            self.out.ident = ident.wrapping_add(1);
            1
        };
        self.stats.event(Event::VxlanEncapsulated, sent as u64);
        self.stats
            .backend(flow.stat, BackendCounter::PacketsToBackend, sent as u64);
        self.stats
            .backend(flow.stat, BackendCounter::BytesToBackend, len as u64);
        Verdict::TxOut
    }

    /// UDP to podlb's own address: a VXLAN reply on a vxlan service's port
    /// is decapsulated and its inner packet reverse-NATed to the client;
    /// anything else is the kernel's.
    pub(super) fn vxlan_in(
        &mut self,
        snap: &Snapshot,
        frame: &[u8],
        meta: PacketMeta,
        now_ms: u32,
    ) -> Verdict {
        let ip = ethernet::Frame::new_checked(frame)
            .and_then(|eth| ipv4::Packet::new_checked(eth.into_payload()));
        let Ok(ip) = ip else {
            return Verdict::Ignore;
        };
        if ip.frag_offset() != 0 {
            // Not the first piece of a datagram: no UDP header to judge by.
            return Verdict::Ignore;
        }
        let Ok(u) = udp::Packet::new_checked(ip.payload()) else {
            return Verdict::Ignore;
        };
        let port = u.dst_port();
        if !snap.is_vxlan_port(port) {
            return Verdict::Ignore;
        }
        if let Some(r) = self.refuse(&ip) {
            return Verdict::Drop(r);
        }
        if ip.is_fragment() {
            // A fragmented VXLAN datagram is not reassembled.
            return Verdict::Drop(DropReason::Ipv4Fragment);
        }
        // RFC 7348 §5: the I flag must be set; reserved bits are ignored.
        let Ok(vx) = vxlan::Packet::new_checked(u.payload()) else {
            return Verdict::Drop(DropReason::VxlanMalformed);
        };
        if !snap.is_vxlan_id(port, vx.vni()) {
            return Verdict::Drop(DropReason::VxlanUnknownVni);
        }
        let inner = vx.payload();
        let n = inner.len();
        let mut buf = std::mem::take(&mut self.out.buf);
        let v = match buf.get_mut(..n) {
            Some(b) => {
                b.copy_from_slice(inner);
                // The packet leaves without a virtio-net header: a partial
                // checksum (inner or outer) is completed in software.
                let meta = PacketMeta {
                    tx_keeps_partial: false,
                    gso_size: 0,
                    ..meta
                };
                self.decapsulated(snap, b, meta, now_ms)
            }
            None => Inner::Drop(DropReason::Oversize),
        };
        self.out.buf = buf;
        match v {
            Inner::Tx(len) => {
                self.out.ends.push(len);
                self.stats.event(Event::VxlanDecapsulated, 1);
                Verdict::TxOut
            }
            Inner::Drop(r) => Verdict::Drop(r),
        }
    }

    /// The inner frame of a VXLAN reply, copied to the scratch buffer: must
    /// be TCP or UDP from a backend to VIP:nat_port (the reverse half of a
    /// flow), or an ICMP error about a packet podlb sent to a backend.
    fn decapsulated(
        &mut self,
        snap: &Snapshot,
        frame: &mut [u8],
        meta: PacketMeta,
        now_ms: u32,
    ) -> Inner {
        let malformed = Inner::Drop(DropReason::VxlanMalformed);
        let Ok(mut eth) = ethernet::Frame::new_checked(frame) else {
            return malformed;
        };
        if eth.outer_ethertype() != ethernet::ETHERTYPE_IPV4 {
            return malformed;
        }
        let (seg, len) = {
            let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
                return malformed;
            };
            if !ip.verify_checksum() {
                return malformed;
            }
            if !snap.is_vip(ip.dst_u32()) {
                return Inner::Drop(DropReason::NoService);
            }
            if ip.is_fragment() {
                return Inner::Drop(DropReason::Ipv4Fragment);
            }
            // Sent without Ethernet padding.
            let len = eth.header_len() + usize::from(ip.total_len());
            match ip.protocol() {
                ipv4::PROTO_TCP | ipv4::PROTO_UDP => {}
                ipv4::PROTO_ICMP if self.icmp_errors => {
                    return match self.icmp_error(snap, &mut eth) {
                        Verdict::Tx => Inner::Tx(len),
                        Verdict::Drop(r) => Inner::Drop(r),
                        _ => Inner::Drop(DropReason::IcmpUnhandled),
                    };
                }
                _ => return Inner::Drop(DropReason::NoService),
            }
            let Ok(seg) = Segment::parse(&ip, eth.src(), meta) else {
                return malformed;
            };
            (seg, len)
        };
        let Some((r, f)) = self
            .flows
            .lookup_reverse(&reverse_key(&seg.tuple, seg.proto))
        else {
            return Inner::Drop(DropReason::NoService);
        };
        match self.steer_to_client(snap, (r, &f), &mut eth, &seg, now_ms) {
            Verdict::Tx => Inner::Tx(len),
            Verdict::Drop(r) => Inner::Drop(r),
            _ => Inner::Drop(DropReason::NoService),
        }
    }
}

#[cfg(test)]
mod tests {

    use crate::forward::*;

    use crate::stats::{DropReason, Event};
    use crate::testlab::*;
    use etherparse::{Ipv4Header, PacketBuilder};
    use podlb_wire::tcp;

    /// A VXLAN frame from node `i` to podlb carrying `inner`.
    fn vxlan_frame(i: usize, dport: u16, vx: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut payload = vx.to_vec();
        payload.extend_from_slice(inner);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(ROUTER_MAC, LB)
            .ipv4(VTEPS[i], LB_IP, 64)
            .udp(50000, dport)
            .write(&mut v, &payload)
            .unwrap();
        v
    }

    const VX1: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 1, 0];

    #[test]
    fn vxlan_syn_is_natted_clamped_and_encapsulated() {
        let (mut f, snap) = vxlan_setup();
        let mut syn = syn_with_mss(40000, 1460);
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::TxOut
        );
        assert_eq!(f.out.len(), 1);
        let frame = f.out.frames().next().unwrap();
        assert_eq!(frame.len(), syn.len() + 50, "50 bytes of VXLAN overhead");
        let (vtep, sport, inner) = vxlan_outer(frame);
        let (dmac, src, dst, nat_port, dport) = verify_full(inner);
        let i = PODS.iter().position(|p| *p == dst).expect("a pod");
        assert_eq!(vtep, VTEPS[i], "to the pod's node");
        assert_eq!(dmac, vtep_mac(i).0, "inner dst = the node's VXLAN MAC");
        assert_eq!(&inner[6..12], &LB);
        assert_eq!((src, dport), (VIP, 8080), "full NAT inside");
        assert!(nat_port as u32 >= NAT_PORT_MIN);
        let (_, rest) = Ipv4Header::from_slice(&inner[14..]).unwrap();
        let t = tcp::Packet::new_checked(rest).unwrap();
        assert_eq!(t.mss(), Some(1410), "MSS clamped");
        assert_eq!(f.stats.events(Event::MssClamped), 1);
        assert_eq!(f.stats.events(Event::VxlanEncapsulated), 1);
        // The same flow keeps its outer source port (ECMP stickiness).
        let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "A");
        assert_eq!(
            f.forward(&snap, &mut ack, PacketMeta::default(), 2),
            Verdict::TxOut
        );
        let (_, sport2, inner) = vxlan_outer(f.out.frames().next().unwrap());
        assert_eq!(sport2, sport);
        assert_eq!(verify(inner).1, dst);
        // A small MSS is left alone.
        let mut syn = syn_with_mss(40001, 1200);
        f.forward(&snap, &mut syn, PacketMeta::default(), 3);
        let (_, _, inner) = vxlan_outer(f.out.frames().next().unwrap());
        verify(inner);
        let (_, rest) = Ipv4Header::from_slice(&inner[14..]).unwrap();
        assert_eq!(tcp::Packet::new_checked(rest).unwrap().mss(), Some(1200));
    }

    #[test]
    fn vxlan_replies_routed_or_encapsulated_reach_the_client() {
        let (mut f, snap) = vxlan_setup();
        let mut syn = syn_with_mss(40000, 1460);
        f.forward(&snap, &mut syn, PacketMeta::default(), 1);
        let (_, _, inner) = vxlan_outer(f.out.frames().next().unwrap());
        let (_, _, pod, nat_port, _) = verify_full(inner);
        let i = PODS.iter().position(|p| *p == pod).unwrap();

        // (a) Routed: plain IPv4 from the pod via the router, MSS 1460.
        let mut synack = Vec::new();
        PacketBuilder::ethernet2(ROUTER_MAC, LB)
            .ipv4(pod, VIP, 63)
            .tcp(8080, nat_port, 5000, 64240)
            .syn()
            .ack(1001)
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap()
            .write(&mut synack, &[])
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut synack, PacketMeta::default(), 2),
            Verdict::Tx
        );
        assert_eq!(verify_full(&synack), (CLIENT_MAC, VIP, CLIENT, 80, 40000));
        let (_, rest) = Ipv4Header::from_slice(&synack[14..]).unwrap();
        assert_eq!(
            tcp::Packet::new_checked(rest).unwrap().mss(),
            Some(1410),
            "SYN-ACK clamped"
        );

        // (b) Through the tunnel: VXLAN from the node to podlb's address.
        let mut data = Vec::new();
        PacketBuilder::ethernet2(vtep_mac(i).0, LB)
            .ipv4(pod, VIP, 64)
            .tcp(8080, nat_port, 5001, 64240)
            .ack(1001)
            .psh()
            .write(&mut data, b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap();
        let mut frame = vxlan_frame(i, VXLAN_PORT, &VX1, &data);
        assert_eq!(
            f.forward(&snap, &mut frame, PacketMeta::default(), 3),
            Verdict::TxOut
        );
        let out = f.out.frames().next().unwrap();
        assert_eq!(out.len(), data.len());
        assert_eq!(verify_full(out), (CLIENT_MAC, VIP, CLIENT, 80, 40000));
        assert_eq!(&out[6..12], &LB);
        assert_eq!(f.stats.events(Event::VxlanDecapsulated), 1);

        // A partial inner checksum (the node's kernel offloading it) is
        // completed in software: nothing downstream would.
        let mut data2 = data.clone();
        make_partial(&mut data2);
        let mut frame = vxlan_frame(i, VXLAN_PORT, &VX1, &data2);
        let meta = PacketMeta {
            csum_partial: true,
            tx_keeps_partial: true,
            ..Default::default()
        };
        assert_eq!(f.forward(&snap, &mut frame, meta, 4), Verdict::TxOut);
        verify_full(f.out.frames().next().unwrap());
    }

    #[test]
    fn malformed_vxlan_is_a_counted_drop() {
        let (mut f, snap) = vxlan_setup();
        let inner = tcp_frame([2, 0, 0, 0, 1, 0x11], LB, PODS[0], VIP, 8080, 5000, "A");
        let cases: [(&[u8], &[u8], u16, Verdict); 7] = [
            (
                &VX1[..5],
                &[],
                VXLAN_PORT,
                Verdict::Drop(DropReason::VxlanMalformed),
            ),
            (
                &[0, 0, 0, 0, 0, 0, 1, 0],
                &inner,
                VXLAN_PORT,
                Verdict::Drop(DropReason::VxlanMalformed),
            ),
            (
                &[0x08, 0, 0, 0, 0, 0, 9, 0],
                &inner,
                VXLAN_PORT,
                Verdict::Drop(DropReason::VxlanUnknownVni),
            ),
            (
                &VX1,
                &inner[..5],
                VXLAN_PORT,
                Verdict::Drop(DropReason::VxlanMalformed),
            ),
            (
                &VX1,
                &[0xff; 40],
                VXLAN_PORT,
                Verdict::Drop(DropReason::VxlanMalformed),
            ),
            // Well-formed but no such flow.
            (
                &VX1,
                &inner,
                VXLAN_PORT,
                Verdict::Drop(DropReason::NoService),
            ),
            // Another UDP port on podlb's address: the kernel's.
            (&VX1, &inner, 8473, Verdict::Ignore),
        ];
        for (k, (vx, inner, port, want)) in cases.iter().enumerate() {
            let mut frame = vxlan_frame(0, *port, vx, inner);
            assert_eq!(
                f.forward(&snap, &mut frame, PacketMeta::default(), 1),
                *want,
                "case {k}"
            );
        }
        assert_eq!(f.stats.drops(DropReason::VxlanMalformed), 4);
        assert_eq!(f.stats.drops(DropReason::VxlanUnknownVni), 1);
        // Inner IPv4 with a bad header checksum.
        let mut bad = inner.clone();
        bad[24] ^= 0xff;
        let mut frame = vxlan_frame(0, VXLAN_PORT, &VX1, &bad);
        assert_eq!(
            f.forward(&snap, &mut frame, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::VxlanMalformed)
        );
    }

    /// A vxlan backend removed by a reload keeps its tunnel while its flows
    /// drain (the control loop carries its VTEP into the new snapshot), and
    /// new flows never pick it.
    #[test]
    fn vxlan_draining_flow_keeps_its_tunnel() {
        let (mut f, snap) = vxlan_setup();
        let mut on = [None, None];
        for port in 40000..40064u16 {
            let mut syn = syn_with_mss(port, 1460);
            assert_eq!(
                f.forward(&snap, &mut syn, PacketMeta::default(), 1),
                Verdict::TxOut
            );
            let (_, _, inner) = vxlan_outer(f.out.frames().next().unwrap());
            let i = PODS.iter().position(|p| *p == verify(inner).1).unwrap();
            on[i].get_or_insert(port);
        }
        let (Some(p0), Some(p1)) = (on[0], on[1]) else {
            panic!("64 flows all on one pod: {on:?}")
        };
        // Pod 1 is removed: without its VTEP its flow could not be sent.
        let bare = vxlan_snapshot_of(2, &[0]);
        let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, p1, 80, "A");
        assert_eq!(
            f.forward(&bare, &mut ack, PacketMeta::default(), 2),
            Verdict::Drop(DropReason::VxlanNoVtep)
        );
        let mut next = vxlan_snapshot_of(2, &[0]);
        next.carry_vteps(&snap, |_| false);
        for (port, pod) in [(p1, 1), (p0, 0)] {
            let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, port, 80, "A");
            assert_eq!(
                f.forward(&next, &mut ack, PacketMeta::default(), 3),
                Verdict::TxOut
            );
            let (vtep, _, inner) = vxlan_outer(f.out.frames().next().unwrap());
            assert_eq!((vtep, verify(inner).1), (VTEPS[pod], PODS[pod]));
        }
        for port in 50000..50032u16 {
            let mut syn = syn_with_mss(port, 1460);
            f.forward(&next, &mut syn, PacketMeta::default(), 4);
            let (_, _, inner) = vxlan_outer(f.out.frames().next().unwrap());
            assert_eq!(verify(inner).1, PODS[0], "new flows only to pod 0");
        }
        // A later change, pod 1 still carrying flows: kept; once the sweep
        // no longer sees them: let go.
        let mut later = vxlan_snapshot_of(3, &[0]);
        later.carry_vteps(&next, |ip| {
            ip == crate::family::Addr::wide(u32::from_be_bytes(PODS[1]))
        });
        assert!(later.vtep(u32::from_be_bytes(PODS[1])).is_some());
        let mut gone = vxlan_snapshot_of(4, &[0]);
        gone.carry_vteps(&later, |_| false);
        assert!(gone.vtep(u32::from_be_bytes(PODS[1])).is_none());
        assert_eq!(gone.vtep_next_hops().count(), 1);
    }

    #[test]
    fn vxlan_waits_for_the_next_hop_mac() {
        let (mut f, snap) = vxlan_setup();
        f.neighbors.invalidate(u32::from_be_bytes(ROUTER));
        let mut syn = syn_with_mss(40000, 1460);
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::NeighborUnresolved)
        );
        let e = f.neighbors.entries();
        assert!(e
            .iter()
            .any(|n| n.ip == u32::from_be_bytes(ROUTER) && n.wanted));
        // Without a local address there is nothing to send from.
        let (mut f, snap) = vxlan_setup();
        f.local_ip = 0;
        let mut syn = syn_with_mss(40000, 1460);
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::VxlanNoVtep)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Arbitrary VXLAN payloads and GSO sizes never panic.
        #[test]
        fn vxlan_never_panics(inner in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), flags in proptest::prelude::any::<u8>(), gso in 0u16..2000, cut in 0usize..200) {
            let (mut f, snap) = vxlan_setup();
            let mut frame = vxlan_frame(0, VXLAN_PORT, &[flags, 0, 0, 0, 0, 0, 1, 0], &inner);
            let _ = f.forward(&snap, &mut frame, PacketMeta::default(), 1);
            let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
            let _ = f.forward(&snap, &mut syn, PacketMeta::default(), 1);
            let mut v = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "A");
            v.truncate(cut.max(14));
            let meta = PacketMeta { gso_size: gso, csum_partial: gso & 1 == 1, ..Default::default() };
            let _ = f.forward(&snap, &mut v, meta, 2);
        }
    }
}
