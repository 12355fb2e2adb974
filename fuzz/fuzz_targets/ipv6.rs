//! IPv6 view and the extension-header walk, against a reference walk
//! written from RFC 8200 §4 on the raw bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_wire::{ipv6, Error};

/// (protocol, offset, fragment (offset, M, ident)) or the error, walking
/// `data[..end]` as `upper_layer` is documented to.
fn reference(data: &[u8], end: usize) -> Result<(u8, usize, Option<(u16, bool, u32)>), Error> {
    let (mut nh, mut at, mut n, mut frag) = (data[6], 40usize, 0usize, None);
    loop {
        match nh {
            0 if n > 0 => return Err(Error::Malformed),
            0 | 43 | 44 | 60 => {}
            50 | 51 => return Err(Error::Unsupported),
            _ => return Ok((nh, at, frag)),
        }
        if n == 8 {
            return Err(Error::Unsupported);
        }
        n += 1;
        let len = if nh == 44 {
            8
        } else if at + 1 < end {
            (usize::from(data[at + 1]) + 1) * 8
        } else {
            return Err(Error::Truncated);
        };
        if at + len > end {
            return Err(Error::Truncated);
        }
        let this = nh;
        nh = data[at];
        if this == 44 {
            if frag.is_some() {
                return Err(Error::Unsupported);
            }
            let w = u16::from_be_bytes([data[at + 2], data[at + 3]]);
            let id = u32::from_be_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
            frag = Some(((w >> 3) * 8, w & 1 == 1, id));
            at += len;
            if w >> 3 != 0 {
                return Ok((nh, at, frag));
            }
        } else {
            at += len;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ipv6::Packet::new_checked(data) else {
        assert!(
            data.len() < 40
                || data[0] >> 4 != 6
                || 40 + usize::from(u16::from_be_bytes([data[4], data[5]])) > data.len()
        );
        return;
    };
    let end = 40 + usize::from(p.payload_len());
    assert!(end <= data.len());
    assert_eq!(p.header(), &data[..40]);
    assert_eq!(p.payload(), &data[40..end]);
    let w = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    assert_eq!(u32::from(p.traffic_class()), (w >> 20) & 0xff);
    assert_eq!(p.flow_label(), w & 0xf_ffff);
    assert_eq!((p.next_header(), p.hop_limit()), (data[6], data[7]));
    assert_eq!(
        p.src_u128(),
        u128::from_be_bytes(data[8..24].try_into().unwrap())
    );
    assert_eq!(
        p.dst_u128(),
        u128::from_be_bytes(data[24..40].try_into().unwrap())
    );

    // The walk: its offset stays within the payload, and it agrees with
    // the reference.
    let walk = p.upper_layer();
    match (walk, reference(data, end)) {
        (Ok(u), Ok((proto, off, frag))) => {
            assert!(40 <= u.offset && u.offset <= end);
            assert_eq!(u.offset + u.len, end);
            assert_eq!((u.protocol, u.offset), (proto, off));
            assert_eq!(u.fragment.map(|f| (f.offset, f.more, f.ident)), frag);
            assert!(u.offset == 40 || u.offset - 40 <= 8 * 2048);
        }
        (Err(e), Err(r)) => assert_eq!(e, r),
        (a, b) => panic!("upper_layer {a:?} vs reference {b:?}"),
    }
    if data.len() >= 8 {
        let f = ipv6::Fragment::new_checked(data).unwrap();
        assert_eq!(f.frag_offset() % 8, 0);
        assert_eq!(f.info().is_first(), f.frag_offset() == 0);
    }

    // emit(parse(x)) + the payload gives the same bytes, less traffic
    // class and flow label.
    let repr = ipv6::Repr::parse(&p).unwrap();
    assert_eq!(repr.buffer_len(), end);
    let mut out = vec![0u8; end];
    let mut q = repr.emit(&mut out).unwrap();
    q.payload_mut().copy_from_slice(p.payload());
    assert_eq!(ipv6::Repr::parse(&q), Ok(repr));
    assert_eq!(q.upper_layer(), walk);
    assert_eq!(&out[4..end], &data[4..end]);
    assert_eq!(out[..4], [0x60, 0, 0, 0]);

    // Setters keep the view valid and write what the getters read.
    let mut buf = data.to_vec();
    let mut wp = ipv6::Packet::new_checked(&mut buf[..]).unwrap();
    wp.set_payload_len(u16::from_be_bytes([data[1], data[data.len() - 1]]));
    assert!(40 + usize::from(wp.payload_len()) <= data.len());
    let l = usize::from(wp.payload_len());
    assert_eq!(wp.payload_mut().len(), l);
    wp.set_traffic_class(data[2]);
    wp.set_flow_label(u32::from_be_bytes([data[0], data[1], data[2], data[3]]));
    assert_eq!(
        (wp.traffic_class(), wp.flow_label()),
        (data[2], w & 0xf_ffff)
    );
    assert_eq!(buf[0] >> 4, 6);
});
