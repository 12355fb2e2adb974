//! UDP view and header emitter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::{udp, Ipv4Addr};
use podlb_fuzz::l4_ok;

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fuzz_target!(|data: &[u8]| {
    let Ok(p) = udp::Packet::new_checked(data) else {
        return;
    };
    let len = usize::from(p.len());
    assert!((8..=data.len()).contains(&len));
    assert_eq!(p.payload(), &data[8..len]);
    let (sp, dp, c) = (p.src_port(), p.dst_port(), p.checksum());
    assert_eq!(
        p.verify_checksum(SRC, DST),
        c == 0 || l4_ok(&data[..len], SRC, DST, 17),
        "verify_checksum vs RFC 768"
    );

    // emit(parse(x)) + the payload + fill_checksum parses to the same
    // fields with a valid, non-zero checksum.
    let repr = udp::Repr::parse(&p).unwrap();
    assert_eq!((repr.src_port, repr.dst_port, repr.buffer_len()), (sp, dp, len));
    let mut out = vec![0u8; len];
    let mut q = repr.emit(&mut out).unwrap();
    q.payload_mut().copy_from_slice(p.payload());
    assert_eq!(udp::Repr::parse(&q), Ok(repr));
    assert_eq!(q.checksum(), 0);
    assert!(q.verify_checksum(SRC, DST), "zero = no checksum");
    q.fill_checksum(SRC, DST);
    assert_ne!(q.checksum(), 0, "a computed 0 is sent as 0xffff");
    assert!(q.verify_checksum(SRC, DST) && l4_ok(&out, SRC, DST, 17));
    let q = udp::Packet::new_checked(&out[..]).unwrap();
    assert_eq!(
        (q.src_port(), q.dst_port(), q.len(), q.payload()),
        (sp, dp, p.len(), p.payload())
    );
    if c != 0 {
        // Same bytes and addresses: a (non-zero) checksum is right exactly
        // when it is the one fill_checksum computes.
        assert_eq!(p.verify_checksum(SRC, DST), q.checksum() == c);
    }
    // set_len clamps into 8..=buffer and the view stays valid.
    let mut buf = data.to_vec();
    let mut w = udp::Packet::new_checked(&mut buf[..]).unwrap();
    w.set_len(u16::from_be_bytes([data[0], data[1]]));
    let l = usize::from(w.len());
    assert!((8..=data.len()).contains(&l));
    assert_eq!(w.payload_mut().len(), l - 8);
    assert!(repr.emit(&mut vec![0u8; len - 1]).is_err());
});
