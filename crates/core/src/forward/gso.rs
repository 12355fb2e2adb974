//! TCP segmentation in software, for GSO frames that are about to be
//! VXLAN-encapsulated: once inside UDP, no device or kernel on the way can
//! segment them from a virtio-net header.

use super::vxlan::Outer;
use super::{ethernet, ipv4, tcp, OutFrames};
use podlb_wire::vxlan;

/// Cuts the IPv4/TCP frame `inner` (an untagged Ethernet frame, without
/// padding) into segments of at most `mss` payload bytes, each
/// VXLAN-encapsulated by `outer` into `out`. Per segment, as a NIC's TSO
/// would (and Linux's `tcp_gso_segment`): IPv4 total length, Identification
/// (+1 per segment) and header checksum; TCP sequence number (+ offset),
/// FIN and PSH on the last segment only, CWR on the first only, full
/// checksum (RFC 9293 §3.1). Returns the segment count, or `None` if `out`
/// has no room or `mss` is 0.
pub(super) fn segment_into(
    out: &mut OutFrames,
    inner: &[u8],
    mss: u16,
    outer: &Outer,
) -> Option<usize> {
    let eth = ethernet::Frame::new_checked(inner).ok()?;
    let ip = ipv4::Packet::new_checked(eth.into_payload()).ok()?;
    let t = tcp::Packet::new_checked(ip.payload()).ok()?;
    let (src, dst) = (ip.src(), ip.dst());
    let (mut ident, mut seq, flags0) = (ip.ident(), t.seq(), t.flags());
    // Everything before the TCP payload is copied into every segment.
    let (headers, payload) = inner.split_at(inner.len() - t.payload().len());
    if mss == 0 {
        return None;
    }
    let chunks = payload.chunks(usize::from(mss));
    let count = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        let outer_ident = out.ident;
        out.ident = outer_ident.wrapping_add(1);
        let b = out.next(vxlan::OVERHEAD + headers.len() + chunk.len())?;
        outer.emit(b, outer_ident, |f| {
            let (h, p) = f.split_at_mut(headers.len());
            h.copy_from_slice(headers);
            p.copy_from_slice(chunk);
            let eth = ethernet::Frame::new_checked(f).ok()?;
            // IPv4 Total Length and Identification (RFC 791 §3.1;
            // consecutive IDs per segment as Linux does, RFC 6864 §4.1
            // allows any).
            let mut ip = ipv4::Packet::new_resized(eth.into_payload_mut()).ok()?;
            ip.set_ident(ident);
            ip.fill_checksum();
            let mut t = tcp::Packet::new_checked(ip.payload_mut()).ok()?;
            t.set_seq(seq);
            let mut flags = flags0;
            if i + 1 < count {
                flags &= !(tcp::FIN | tcp::PSH);
            }
            if i > 0 {
                flags &= !tcp::CWR;
            }
            t.set_flags(flags);
            t.fill_checksum(src, dst);
            Some(())
        })?;
        ident = ident.wrapping_add(1);
        seq = seq.wrapping_add(u32::from(mss));
    }
    Some(count)
}

#[cfg(test)]
mod tests {

    use crate::forward::*;

    use crate::stats::Event;
    use crate::testlab::*;
    use etherparse::PacketBuilder;
    use podlb_wire::checksum;

    #[test]
    fn gso_frame_is_segmented_then_encapsulated() {
        let (mut f, snap) = vxlan_setup();
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        f.forward(&snap, &mut syn, PacketMeta::default(), 1);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut big = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB)
            .ipv4(CLIENT, VIP, 64)
            .tcp(40000, 80, 0xffff_f000, 64240)
            .ack(77)
            .psh()
            .fin()
            .write(&mut big, &payload)
            .unwrap();
        // IPv4 Identification 0xfff0 (IDs wrap across the segments).
        big[18..20].copy_from_slice(&0xfff0u16.to_be_bytes());
        big[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::internet(&big[14..34]);
        big[24..26].copy_from_slice(&c.to_be_bytes());
        // As a veth hands it over: partial checksum, gso_size from the header.
        make_partial(&mut big);
        let meta = PacketMeta {
            csum_partial: true,
            tx_keeps_partial: true,
            gso_size: 1398,
            ..Default::default()
        };
        assert_eq!(f.forward(&snap, &mut big, meta, 2), Verdict::TxOut);
        assert_eq!(f.out.len(), 4, "5000 = 3 x 1398 + 806");
        let mut joined = Vec::new();
        let mut ids = Vec::new();
        for (k, frame) in f.out.frames().enumerate() {
            let (_, _, inner) = vxlan_outer(frame);
            verify_full(inner);
            let s = etherparse::SlicedPacket::from_ethernet(inner).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
                panic!("not IPv4")
            };
            ids.push(ip.header().identification());
            let Some(etherparse::TransportSlice::Tcp(t)) = &s.transport else {
                panic!("not TCP")
            };
            assert_eq!(
                t.sequence_number(),
                0xffff_f000u32.wrapping_add(1398 * u32::try_from(k).unwrap()),
                "seq advances (and wraps)"
            );
            let last = k == 3;
            assert_eq!(t.fin(), last, "FIN on the last segment only");
            assert_eq!(t.psh(), last, "PSH on the last segment only");
            assert!(t.ack());
            assert_eq!(t.payload().len(), if last { 806 } else { 1398 });
            assert!(
                inner.len() - 14 <= 1450,
                "fits a 1500 underlay with 50 of VXLAN"
            );
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, payload);
        assert_eq!(ids, vec![0xfff0, 0xfff1, 0xfff2, 0xfff3]);
        assert_eq!(f.stats.events(Event::GsoSegmented), 1);
        assert_eq!(f.stats.events(Event::GsoSegments), 4);
        assert_eq!(f.stats.events(Event::VxlanEncapsulated), 4 + 1);
        // Without a virtio-net header (gso_size unknown) an oversized frame
        // is cut at the clamp.
        let mut big2 = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB)
            .ipv4(CLIENT, VIP, 64)
            .tcp(40000, 80, 1, 64240)
            .ack(77)
            .write(&mut big2, &payload)
            .unwrap();
        assert_eq!(
            f.forward(&snap, &mut big2, PacketMeta::default(), 3),
            Verdict::TxOut
        );
        assert_eq!(f.out.len(), 4, "5000 = 3 x 1410 + 770");
        for frame in f.out.frames() {
            verify_full(vxlan_outer(frame).2);
        }
    }
}
