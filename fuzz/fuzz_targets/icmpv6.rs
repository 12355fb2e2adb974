//! ICMPv6 view: the checksum against a reference pseudo-header sum, fill,
//! and emit(parse(x)). Input: source (16 bytes), destination (16), message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_fuzz::{ones_eq, pseudo_v6, sums_to_ones, Reader};
use podlb_wire::icmpv6;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let (src, dst) = (r.ipv6(), r.ipv6());
    let msg = r.rest();
    let Ok(p) = icmpv6::Packet::new_checked(msg) else {
        assert!(msg.len() < icmpv6::HEADER_LEN);
        return;
    };
    let pseudo = pseudo_v6(src, dst, 58, msg.len());
    assert_eq!(
        p.verify_checksum(src, dst),
        sums_to_ones(msg, pseudo),
        "verify_checksum vs RFC 4443 §2.3"
    );
    assert_eq!(p.body(), &msg[4..]);
    assert_eq!(p.payload(), &msg[8..]);
    assert_eq!(p.is_error(), msg[0] < 128);
    assert_eq!(p.mtu(), p.pointer());
    assert_eq!(p.mtu() >> 16, u32::from(p.echo_ident()));

    let mut buf = msg.to_vec();
    let mut w = icmpv6::Packet::new_checked(&mut buf[..]).unwrap();
    w.fill_checksum(src, dst);
    assert!(w.verify_checksum(src, dst));
    assert!(sums_to_ones(w.as_ref(), pseudo));
    // A stored checksum is right exactly when it is the computed one.
    assert_eq!(
        p.verify_checksum(src, dst),
        ones_eq(p.checksum(), w.checksum())
    );

    let Ok(repr) = icmpv6::Repr::parse(&p) else {
        return;
    };
    assert_eq!(repr.buffer_len(), msg.len());
    let mut out = vec![0u8; msg.len()];
    let q = repr.emit(src, dst, &mut out).unwrap();
    assert!(q.verify_checksum(src, dst));
    let q = icmpv6::Packet::new_checked(&out[..]).unwrap();
    assert_eq!(icmpv6::Repr::parse(&q), Ok(repr));
    // The same bytes as the filled original, but for the "Unused" word of
    // Destination Unreachable and Time Exceeded, emitted as zero.
    let unused = matches!(
        repr,
        icmpv6::Repr::DestUnreachable { .. } | icmpv6::Repr::TimeExceeded { .. }
    );
    if !unused || msg[4..8] == [0; 4] {
        assert_eq!(out, buf);
    } else {
        assert_eq!((&out[..2], &out[8..]), (&buf[..2], &buf[8..]));
        assert_eq!(out[4..8], [0; 4]);
    }
});
