//! TCP view (the IPv4 payload): getters, the MSS option walk, full and
//! partial checksums under the rewrites the forward path makes. podlb has
//! no TCP emitter; the round trip here is checksum fill / verify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::{checksum, tcp, Ipv4Addr};
use podlb_fuzz::{l4_ok, ones_eq, ones_sum, pseudo};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NEW_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NEW_DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);

fuzz_target!(|data: &[u8]| {
    let Ok(t) = tcp::Packet::new_checked(data) else {
        return;
    };
    let hl = t.header_len();
    assert!((20..=60).contains(&hl) && hl <= data.len());
    assert_eq!(20 + t.options().len() + t.payload().len(), data.len());
    let _ = (t.seq(), t.ack(), t.flags(), t.window(), t.urgent());
    let (sp, dp) = (t.src_port(), t.dst_port());
    let mss = t.mss();
    if data.len() <= 65535 {
        assert_eq!(t.verify_checksum(SRC, DST), l4_ok(data, SRC, DST, 6));
    }

    let mut buf = data.to_vec();
    let mut w = tcp::Packet::new_checked(&mut buf[..]).unwrap();
    // set_mss changes exactly the option value, and only when there is one.
    let v = u16::from_be_bytes([data[0], data[data.len() - 1]]);
    assert_eq!(w.set_mss(v), mss);
    assert_eq!(w.mss(), mss.map(|_| v));
    let Ok(len) = u16::try_from(data.len()) else {
        return;
    };
    // Full checksum: fill, then the forward path's rewrites stay valid.
    w.fill_checksum(SRC, DST);
    assert!(w.verify_checksum(SRC, DST) && l4_ok(w.as_ref(), SRC, DST, 6));
    assert_eq!(w.set_mss_update_checksum(v ^ 0x0101), mss.map(|_| v));
    assert!(w.verify_checksum(SRC, DST), "MSS update at any offset");
    let mut c = w.checksum();
    c = checksum::update_u32(c, u32::from(SRC), u32::from(NEW_DST));
    c = checksum::update_u16(c, sp, dp ^ 0x8000);
    c = checksum::update_u16(c, dp, sp);
    w.set_src_port(dp ^ 0x8000);
    w.set_dst_port(sp);
    w.set_checksum(c);
    // {SRC, DST} became {NEW_SRC, NEW_DST} = {DST, NEW_DST}: one word changed.
    assert!(w.verify_checksum(NEW_SRC, NEW_DST), "RFC 1624 NAT update");
    assert!(l4_ok(w.as_ref(), NEW_SRC, NEW_DST, 6));
    assert_eq!((w.src_port(), w.dst_port()), (dp ^ 0x8000, sp));

    // Partial checksum (CHECKSUM_PARTIAL): the field holds the folded
    // pseudo-header sum; an address change updates it to the new one.
    let partial = ones_sum(&[], pseudo(SRC, DST, 6, data.len()));
    w.set_checksum(partial);
    let c = checksum::update_partial_u32(w.checksum(), u32::from(SRC), u32::from(NEW_DST));
    let want = ones_sum(&[], pseudo(NEW_SRC, NEW_DST, 6, data.len()));
    assert!(ones_eq(c, want), "partial {c:#06x} want {want:#06x}");
    assert_eq!(
        checksum::fold(checksum::pseudo_header_v4(NEW_SRC, NEW_DST, 6, len)),
        want
    );
    let _ = w.payload_mut();
});
