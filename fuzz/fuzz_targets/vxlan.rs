//! VXLAN header view and emitter (RFC 7348 §5).
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::vxlan;

fuzz_target!(|data: &[u8]| {
    // The outer UDP source port stays in the dynamic range for any hash.
    if data.len() >= 8 {
        let h = u64::from_le_bytes(data[..8].try_into().unwrap());
        assert!(vxlan::source_port(h) >= vxlan::SRC_PORT_MIN);
    }
    let Ok(p) = vxlan::Packet::new_checked(data) else {
        // Rejected: too short, or the I flag clear.
        assert!(data.len() < vxlan::HEADER_LEN || data[0] & vxlan::FLAG_I == 0);
        return;
    };
    let (vni, payload) = (p.vni(), p.payload());
    assert!(vni <= vxlan::MAX_VNI);
    assert_eq!(payload, &data[vxlan::HEADER_LEN..]);
    // emit(parse(x)) parses to the same VNI, with reserved bits zero.
    let repr = vxlan::Repr::parse(&p).unwrap();
    assert_eq!(repr.vni, vni);
    let mut out = data.to_vec();
    let q = repr.emit(&mut out).unwrap();
    assert_eq!(vxlan::Repr::parse(&q), Ok(repr));
    assert_eq!((q.vni(), q.flags(), q.payload()), (vni, vxlan::FLAG_I, payload));
    assert_eq!(&out[1..4], &[0, 0, 0]);
    assert_eq!(out[7], 0);
    assert!(repr.emit(&mut [0u8; 7]).is_err());
});
