//! Ethernet II view: arbitrary bytes as a frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::ethernet::{self, Frame, ETHERTYPE_VLAN};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = Frame::new_checked(data) else {
        // Rejected only when too short for the header it announces.
        let tagged = data.len() >= 14 && data[12..14] == [0x81, 0x00];
        assert!(data.len() < 14 || (tagged && data.len() < 18));
        return;
    };
    let (dst, src, outer, et, vlan, hl) = (
        f.dst(),
        f.src(),
        f.outer_ethertype(),
        f.ethertype(),
        f.vlan_id(),
        f.header_len(),
    );
    assert_eq!(f.as_ref(), data);
    assert_eq!(hl + f.payload().len(), data.len());
    assert_eq!(&dst.0, &data[0..6]);
    assert_eq!(&src.0, &data[6..12]);
    match vlan {
        Some(v) => {
            assert_eq!(outer, ETHERTYPE_VLAN);
            assert!(v < 4096);
            assert_eq!(hl, ethernet::TAGGED_HEADER_LEN);
            assert_eq!(et, u16::from_be_bytes([data[16], data[17]]));
        }
        None => {
            assert_ne!(outer, ETHERTYPE_VLAN);
            assert_eq!(hl, ethernet::HEADER_LEN);
            assert_eq!(et, outer);
        }
    }

    // Re-emit the header of an untagged frame: with the rest of the frame
    // it is the same frame. A tagged one has no Repr.
    match ethernet::Repr::parse(&f) {
        Ok(repr) => {
            assert!(vlan.is_none());
            assert_eq!((repr.dst, repr.src, repr.ethertype), (dst, src, outer));
            let mut out = data.to_vec();
            out[..14].fill(0);
            let g = repr.emit(&mut out).unwrap();
            assert_eq!(ethernet::Repr::parse(&g), Ok(repr));
            assert_eq!(out, data);
            assert!(repr.emit(&mut out[..13]).is_err());
        }
        Err(_) => assert!(vlan.is_some()),
    }

    // Setters keep the view valid: every getter still works afterwards.
    let new_type = u16::from_be_bytes([data[data.len() - 2], data[data.len() - 1]]);
    let mut buf = data.to_vec();
    let mut g = Frame::new_checked(&mut buf[..]).unwrap();
    g.set_dst(src);
    g.set_src(dst);
    let set = g.set_ethertype(new_type);
    let _ = (g.outer_ethertype(), g.vlan_id(), g.header_len());
    // Refused only where it would invent a VLAN tag.
    assert_eq!(set, vlan.is_some() || new_type != ETHERTYPE_VLAN);
    assert_eq!(g.ethertype(), if set { new_type } else { et });
    assert_eq!(g.vlan_id(), vlan);
    assert_eq!(g.header_len() + g.payload().len(), data.len());
    let _ = g.payload_mut();
    assert_eq!((g.dst(), g.src()), (src, dst));
});
