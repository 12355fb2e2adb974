//! VRRPv3 advertisements over IPv4 and IPv6 (RFC 9568). The input is tried
//! as an IPv4 packet and as an IPv6 packet (so the receive checks see its
//! source, destination and TTL or Hop Limit; for IPv6 through the
//! extension-header walk of `parse_advert_ipv6`), and the same bytes alone
//! as a VRRP message of either family, multicast and unicast.
//!
//! Invariants: no panic; the view agrees with `parse_advert` on what it
//! accepts; the checksum verdict agrees with a sum written from the RFCs
//! (`podlb_fuzz`, independent of `wire::checksum`); emit(parse(x)) parses to
//! the same advert, bare and as a whole frame through the Ethernet and IP
//! views.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_fuzz::{pseudo, pseudo_v6, sums_to_ones};
use podlb_wire::vrrp::{
    self, parse_advert, parse_advert_ipv6, Advert, AdvertDrop, ChecksumForm, VrrpAddr,
};
use podlb_wire::{ethernet, ipv4, ipv6, Ipv4Addr, Ipv6Addr};

/// What differs between the families for this target.
trait Fam: VrrpAddr {
    /// The checksum form `msg` from `src` to `dst` verifies in, by the
    /// independent sum: Plain first (IPv4 only), then the pseudo-header.
    fn independent(src: Self, dst: Self, msg: &[u8]) -> Option<ChecksumForm>;
    /// The advert back from the IP packet of a frame emitted for it.
    fn reparse(ip: &[u8]) -> Advert<Self>;
}

impl Fam for Ipv4Addr {
    fn independent(src: Self, dst: Self, msg: &[u8]) -> Option<ChecksumForm> {
        if sums_to_ones(msg, 0) {
            return Some(ChecksumForm::Plain);
        }
        (msg.len() <= 0xffff && sums_to_ones(msg, pseudo(src, dst, 112, msg.len())))
            .then_some(ChecksumForm::PseudoHeader)
    }

    fn reparse(ip: &[u8]) -> Advert<Self> {
        let ip = ipv4::Packet::new_checked(ip).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.ttl(), ip.protocol()), (vrrp::TTL, ipv4::PROTO_VRRP));
        parse_advert(ip.src(), ip.dst(), ip.ttl(), ip.payload(), true).unwrap()
    }
}

impl Fam for Ipv6Addr {
    fn independent(src: Self, dst: Self, msg: &[u8]) -> Option<ChecksumForm> {
        // RFC 9568 §5.2.8: always the RFC 8200 §8.1 pseudo-header.
        sums_to_ones(msg, pseudo_v6(src, dst, 112, msg.len())).then_some(ChecksumForm::PseudoHeader)
    }

    fn reparse(ip: &[u8]) -> Advert<Self> {
        let ip = ipv6::Packet::new_checked(ip).unwrap();
        assert_eq!(
            (ip.hop_limit(), ip.next_header()),
            (vrrp::HOP_LIMIT, ipv6::PROTO_VRRP)
        );
        assert_eq!(ip.upper_layer().unwrap().offset, ipv6::HEADER_LEN);
        parse_advert_ipv6(&ip, true).unwrap()
    }
}

fn check<A: Fam>(src: A, dst: A, ttl: u8, payload: &[u8]) {
    // The view agrees with parse_advert on what it accepts.
    if let Ok(p) = vrrp::Packet::<_, A>::new_checked(payload) {
        assert!(p.count() >= 1);
        assert_eq!(p.addresses().len(), usize::from(p.count()));
        assert!(payload.len() >= A::advert_len(usize::from(p.count())));
        assert!(p.max_advert_interval_cs() <= vrrp::MAX_INTERVAL_CS);
        let _ = (
            p.version(),
            p.msg_type(),
            p.vrid(),
            p.priority(),
            p.checksum(),
        );
        assert_eq!(p.verify(src, dst), A::independent(src, dst, payload));
    }
    for check_ttl in [true, false] {
        let Ok(a) = parse_advert(src, dst, ttl, payload, check_ttl) else {
            continue;
        };
        assert!(!check_ttl || ttl == vrrp::TTL);
        let p = vrrp::Packet::<_, A>::new_checked(payload).expect("parsed, so the view accepts it");
        assert_eq!(
            (p.version(), p.msg_type()),
            (vrrp::VERSION, vrrp::TYPE_ADVERT)
        );
        assert_eq!(
            (a.vrid, a.priority, a.interval_cs),
            (p.vrid(), p.priority(), p.max_advert_interval_cs())
        );
        assert!(a.addrs.iter().copied().eq(p.addresses()));
        // Verified by the independent sum (or, IPv4 only, over the group:
        // the old keepalived unicast quirk).
        match A::independent(src, dst, payload) {
            Some(f) => assert_eq!(a.checksum_form, f),
            None => {
                assert_eq!(A::FAMILY, vrrp::Family::V4);
                assert_eq!(
                    A::independent(src, A::MULTICAST, payload),
                    Some(ChecksumForm::PseudoHeader)
                );
            }
        }

        // emit(parse(x)) parses to the same advert, in both forms (IPv6
        // has one: the pseudo-header whatever is asked).
        let repr = a.repr();
        assert_eq!(vrrp::Repr::parse(&p), Ok(repr));
        for form in [ChecksumForm::Plain, ChecksumForm::PseudoHeader] {
            let mut out = vec![0u8; repr.buffer_len()];
            let q = repr.emit(&mut out, form, src, dst).unwrap();
            assert_eq!(vrrp::Repr::parse(&q), Ok(repr));
            assert!(A::independent(src, dst, &out).is_some());
            let b = parse_advert(src, dst, vrrp::TTL, &out, true).expect("own emit parses");
            assert_eq!(b.repr(), repr);
            // Plain is tried first; a pseudo-header sum of zero makes both valid.
            match A::FAMILY {
                vrrp::Family::V4 => {
                    assert!(b.checksum_form == form || b.checksum_form == ChecksumForm::Plain)
                }
                vrrp::Family::V6 => assert_eq!(b.checksum_form, ChecksumForm::PseudoHeader),
            }
        }
        // And as a whole frame through the Ethernet and IP views.
        let mut frame = vec![0u8; 14 + 40 + A::advert_len(a.addrs.len()) + 60];
        let to = vrrp::Envelope {
            dst_ip: dst,
            ident: 7,
            ..vrrp::Envelope::multicast(a.vrid, src)
        };
        let n = repr.emit_frame(&mut frame, &to, a.checksum_form).unwrap();
        assert!(n >= ethernet::MIN_FRAME_LEN);
        let e = ethernet::Frame::new_checked(&frame[..n]).unwrap();
        assert_eq!(
            (e.dst(), e.src()),
            (A::MULTICAST_MAC, A::virtual_mac(a.vrid))
        );
        let b = A::reparse(e.payload());
        assert_eq!(b.repr(), repr);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ip) = ipv4::Packet::new_checked(data) {
        check(ip.src(), ip.dst(), ip.ttl(), ip.payload());
    }
    if let Ok(ip) = ipv6::Packet::new_checked(data) {
        // parse_advert_ipv6 is the walk, then parse_advert on the message.
        let whole = parse_advert_ipv6(&ip, true);
        match ip.upper_layer() {
            Err(_) => assert_eq!(whole, Err(AdvertDrop::NotVrrp)),
            Ok(ul) if ul.fragment.is_some_and(|f| !f.is_atomic()) => {
                assert_eq!(whole, Err(AdvertDrop::Truncated))
            }
            Ok(ul) if ul.protocol != ipv6::PROTO_VRRP => {
                assert_eq!(whole, Err(AdvertDrop::NotVrrp))
            }
            Ok(ul) => {
                let msg = &data[ul.offset..ul.offset + ul.len];
                assert_eq!(
                    whole,
                    parse_advert(ip.src(), ip.dst(), ip.hop_limit(), msg, true)
                );
                check(ip.src(), ip.dst(), ip.hop_limit(), msg);
            }
        }
    }
    // The same bytes as a bare VRRP message, multicast and unicast.
    let src = Ipv4Addr::new(198, 18, 0, 1);
    check(src, vrrp::MULTICAST_V4, vrrp::TTL, data);
    check(src, Ipv4Addr::new(198, 18, 0, 2), 64, data);
    let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    check(ll, vrrp::MULTICAST_V6, vrrp::HOP_LIMIT, data);
    check(ll, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2), 64, data);
});
