//! IPv4 view: arbitrary bytes as a packet; checksum fill, incremental
//! update and the header emitter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::{checksum, ipv4, Ipv4Addr};
use podlb_fuzz::sums_to_ones;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ipv4::Packet::new_checked(data) else {
        return;
    };
    let hl = p.header_len();
    let total = usize::from(p.total_len());
    assert!((20..=60).contains(&hl));
    assert!(hl <= total && total <= data.len());
    assert_eq!(p.header().len(), hl);
    assert_eq!(p.options().len(), hl - 20);
    assert_eq!(p.payload(), &data[hl..total]);
    let _ = (p.tos(), p.ident(), p.ttl(), p.protocol(), p.checksum());
    assert_eq!(p.is_fragment(), p.more_frags() || p.frag_offset() != 0);
    assert_eq!(p.frag_offset() % 8, 0);
    assert_eq!(u32::from(p.src()), p.src_u32());
    assert_eq!(u32::from(p.dst()), p.dst_u32());
    let valid = p.verify_checksum();
    assert_eq!(
        valid,
        sums_to_ones(&data[..hl], 0),
        "verify_checksum vs RFC 1071"
    );

    // fill_checksum makes any header valid; an incremental NAT rewrite of
    // both addresses and the TTL keeps a valid header valid.
    let mut buf = data.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut buf[..]).unwrap();
    q.fill_checksum();
    assert!(q.verify_checksum());
    let (ns, nd) = (Ipv4Addr::from(p.dst_u32() ^ 0x0102_0304), p.src());
    let mut c = q.checksum();
    c = checksum::update_u32(c, q.src_u32(), u32::from(ns));
    c = checksum::update_u32(c, q.dst_u32(), u32::from(nd));
    c = checksum::update_u16(
        c,
        u16::from_be_bytes([q.ttl(), q.protocol()]),
        u16::from_be_bytes([q.ttl().wrapping_sub(1), q.protocol()]),
    );
    let ttl = q.ttl().wrapping_sub(1);
    q.set_src(ns);
    q.set_dst(nd);
    q.set_ttl(ttl);
    q.set_checksum(c);
    assert!(q.verify_checksum(), "RFC 1624 update of a valid header");
    assert!(sums_to_ones(q.header(), 0));
    // set_total_len clamps, and the view stays valid.
    q.set_total_len(u16::from(data[0]) << 8 | u16::from(data[data.len() - 1]));
    let t = usize::from(q.total_len());
    assert!(hl <= t && t <= data.len());
    assert_eq!(q.payload_mut().len(), t - hl);

    // emit(parse(x)): the emitted header parses to the same fields (a
    // fragment has no Repr: podlb does not reassemble).
    let Ok(repr) = ipv4::Repr::parse(&p) else {
        assert!(p.is_fragment());
        return;
    };
    assert_eq!(repr.buffer_len(), 20 + total - hl);
    let mut out = vec![0u8; repr.buffer_len()];
    let mut q = repr.emit(&mut out).unwrap();
    q.payload_mut().copy_from_slice(p.payload());
    assert_eq!(ipv4::Repr::parse(&q), Ok(repr));
    let e = ipv4::Packet::new_checked(&out[..]).unwrap();
    assert_eq!(
        (
            e.src(),
            e.dst(),
            e.protocol(),
            e.ttl(),
            e.ident(),
            e.payload()
        ),
        (
            p.src(),
            p.dst(),
            p.protocol(),
            p.ttl(),
            p.ident(),
            p.payload()
        )
    );
    assert!(e.verify_checksum() && e.dont_frag() && !e.is_fragment());
    assert_eq!((e.header_len(), e.tos(), e.options().len()), (20, 0, 0));
});
