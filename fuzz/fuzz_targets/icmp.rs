//! ICMP view: checksum fill and the echo request -> reply rewrite.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::{checksum, icmp};
use podlb_fuzz::sums_to_ones;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = icmp::Packet::new_checked(data) else {
        assert!(data.len() < icmp::HEADER_LEN);
        return;
    };
    let (ty, code, id, seq) = (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq());
    assert_eq!(p.payload().len() + 8, data.len());
    assert_eq!(p.verify_checksum(), sums_to_ones(data, 0));
    let _ = p.checksum();

    let mut buf = data.to_vec();
    let mut w = icmp::Packet::new_checked(&mut buf[..]).unwrap();
    w.fill_checksum();
    assert!(w.verify_checksum());
    // The forward path's echo reply: type 8 -> 0 by RFC 1624 update.
    w.set_msg_type(icmp::TYPE_ECHO_REQUEST);
    w.fill_checksum();
    let c = checksum::update_u16(
        w.checksum(),
        u16::from(icmp::TYPE_ECHO_REQUEST) << 8 | u16::from(code),
        u16::from(icmp::TYPE_ECHO_REPLY) << 8 | u16::from(code),
    );
    w.set_msg_type(icmp::TYPE_ECHO_REPLY);
    w.set_checksum(c);
    // Eqn. 3 never yields 0xffff, the one checksum of an all-zero message
    // (the forward path recounts then: see its echo test).
    let all_zero = w.as_ref().iter().all(|&b| b == 0);
    assert_eq!(
        w.verify_checksum(),
        !all_zero,
        "RFC 1624 update of the type"
    );
    assert_eq!(sums_to_ones(w.as_ref(), 0), !all_zero);
    // Setters write what getters read.
    w.set_echo_ident(seq);
    w.set_echo_seq(id);
    w.set_code(ty);
    assert_eq!((w.echo_ident(), w.echo_seq(), w.code()), (seq, id, ty));
    assert_eq!(w.payload_mut().len(), data.len() - 8);
});
