//! VRRPv3 advertisements: the input is an IPv4 packet (so the receive
//! checks see its source, destination and TTL), and its payload alone.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::vrrp::{self, parse_advert, ChecksumForm};
use podlb_wire::{ethernet, ipv4, Ipv4Addr};

fn check(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) {
    // The view agrees with parse_advert on what it accepts.
    if let Ok(p) = vrrp::Packet::new_checked(payload) {
        assert!(p.count() >= 1);
        assert_eq!(p.addresses().len(), usize::from(p.count()));
        assert!(p.max_advert_interval_cs() <= vrrp::MAX_INTERVAL_CS);
        let _ = (
            p.version(),
            p.msg_type(),
            p.vrid(),
            p.priority(),
            p.checksum(),
        );
        let _ = p.verify(src, dst);
    }
    for check_ttl in [true, false] {
        let Ok(a) = parse_advert(src, dst, ttl, payload, check_ttl) else {
            continue;
        };
        assert!(!check_ttl || ttl == vrrp::TTL);
        let p = vrrp::Packet::new_checked(payload).expect("parsed, so the view accepts it");
        assert_eq!(
            (p.version(), p.msg_type()),
            (vrrp::VERSION, vrrp::TYPE_ADVERT)
        );
        assert_eq!(
            (a.vrid, a.priority, a.interval_cs),
            (p.vrid(), p.priority(), p.max_advert_interval_cs())
        );
        assert!(a.addrs.iter().copied().eq(p.addresses()));

        // emit(parse(x)) parses to the same advert, in both forms.
        let repr = a.repr();
        assert_eq!(vrrp::Repr::parse(&p), Ok(repr));
        for form in [ChecksumForm::Plain, ChecksumForm::PseudoHeader] {
            let mut out = vec![0u8; repr.buffer_len()];
            let q = repr.emit(&mut out, form, src, dst).unwrap();
            assert_eq!(vrrp::Repr::parse(&q), Ok(repr));
            let b = parse_advert(src, dst, vrrp::TTL, &out, true).expect("own emit parses");
            assert_eq!(
                (b.vrid, b.priority, b.interval_cs),
                (a.vrid, a.priority, a.interval_cs)
            );
            assert_eq!(&b.addrs[..], &a.addrs[..]);
            // Plain is tried first; a pseudo-header sum of zero makes both valid.
            assert!(b.checksum_form == form || b.checksum_form == ChecksumForm::Plain);
        }
        // And as a whole frame through the Ethernet and IPv4 views.
        let mut frame = vec![0u8; 14 + 20 + vrrp::advert_len(a.addrs.len()) + 60];
        let to = vrrp::Envelope {
            src_mac: vrrp::virtual_mac(a.vrid),
            dst_mac: vrrp::MULTICAST_MAC,
            src_ip: src,
            dst_ip: dst,
            ident: 7,
        };
        let n = repr.emit_frame(&mut frame, &to, a.checksum_form).unwrap();
        assert!(n >= ethernet::MIN_FRAME_LEN);
        let e = ethernet::Frame::new_checked(&frame[..n]).unwrap();
        assert_eq!(
            (e.dst(), e.src()),
            (vrrp::MULTICAST_MAC, vrrp::virtual_mac(a.vrid))
        );
        let ip = ipv4::Packet::new_checked(e.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.ttl(), ip.protocol()), (vrrp::TTL, ipv4::PROTO_VRRP));
        let b = parse_advert(ip.src(), ip.dst(), ip.ttl(), ip.payload(), true).unwrap();
        assert_eq!(
            (b.vrid, b.priority, b.interval_cs),
            (a.vrid, a.priority, a.interval_cs)
        );
        assert_eq!(&b.addrs[..], &a.addrs[..]);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ip) = ipv4::Packet::new_checked(data) {
        check(ip.src(), ip.dst(), ip.ttl(), ip.payload());
    }
    // The same bytes as a bare VRRP message, multicast and unicast.
    let src = Ipv4Addr::new(198, 18, 0, 1);
    check(src, vrrp::MULTICAST_V4, vrrp::TTL, data);
    check(src, Ipv4Addr::new(198, 18, 0, 2), 64, data);
});
