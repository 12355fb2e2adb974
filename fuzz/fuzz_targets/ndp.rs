//! Neighbor Solicitation / Advertisement views: the options walk, and
//! parse(emit(parse(x))) == parse(x). Input: source (16 bytes),
//! destination (16), message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_fuzz::{pseudo_v6, sums_to_ones, Reader};
use podlb_wire::{ndp, MacAddr};

/// (kind, data) of each option, walked on the raw bytes (RFC 4861 §4.6);
/// `None` if the options are not well formed.
fn reference_options(mut b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let len = usize::from(*b.get(1)?) * 8;
        if len == 0 || len > b.len() {
            return None;
        }
        v.push((b[0], &b[2..len]));
        b = &b[len..];
    }
    Some(v)
}

fn first_ll(opts: &[(u8, &[u8])], kind: u8) -> Option<MacAddr> {
    opts.iter()
        .find(|(k, d)| *k == kind && d.len() == 6)
        .map(|(_, d)| MacAddr::from_bytes(d).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let (src, dst) = (r.ipv6(), r.ipv6());
    let msg = r.rest();
    let well_formed =
        msg.len() >= 24 && msg[1] == 0 && msg[8] != 0xff && reference_options(&msg[24..]).is_some();
    let opts = if well_formed {
        reference_options(&msg[24..]).unwrap()
    } else {
        Vec::new()
    };
    let pseudo = pseudo_v6(src, dst, 58, msg.len());

    match ndp::NeighborSolicit::new_checked(msg) {
        Ok(p) => {
            assert!(well_formed && msg[0] == 135);
            let got: Vec<_> = p.options().map(|o| (o.kind, o.data)).collect();
            assert_eq!(got, opts);
            assert_eq!(p.source_ll_addr(), first_ll(&opts, 1));
            assert_eq!(p.target().octets(), msg[8..24]);
            assert_eq!(p.verify_checksum(src, dst), sums_to_ones(msg, pseudo));
            let repr = ndp::SolicitRepr::parse(&p).unwrap();
            let mut out = [0u8; 32];
            let q = repr.emit(src, dst, &mut out).unwrap();
            assert!(q.verify_checksum(src, dst));
            let n = repr.buffer_len();
            assert!(sums_to_ones(&out[..n], pseudo_v6(src, dst, 58, n)));
            let q = ndp::NeighborSolicit::new_checked(&out[..n]).unwrap();
            assert_eq!(ndp::SolicitRepr::parse(&q), Ok(repr));
            assert_eq!(
                (&out[..2], &out[4..24]),
                (&msg[..2], &[&[0u8; 4][..], &msg[8..24]].concat()[..])
            );
        }
        Err(_) => assert!(!well_formed || msg[0] != 135),
    }
    match ndp::NeighborAdvert::new_checked(msg) {
        Ok(p) => {
            assert!(well_formed && msg[0] == 136);
            let got: Vec<_> = p.options().map(|o| (o.kind, o.data)).collect();
            assert_eq!(got, opts);
            assert_eq!(p.target_ll_addr(), first_ll(&opts, 2));
            assert_eq!(
                (p.router(), p.solicited(), p.override_flag()),
                (msg[4] & 0x80 != 0, msg[4] & 0x40 != 0, msg[4] & 0x20 != 0)
            );
            assert_eq!(p.verify_checksum(src, dst), sums_to_ones(msg, pseudo));
            assert_eq!(
                p.valid_for(dst, 255),
                !(dst.is_multicast() && p.solicited())
            );
            let repr = ndp::AdvertRepr::parse(&p).unwrap();
            let mut out = [0u8; 32];
            let q = repr.emit(src, dst, &mut out).unwrap();
            assert!(q.verify_checksum(src, dst));
            let n = repr.buffer_len();
            let q = ndp::NeighborAdvert::new_checked(&out[..n]).unwrap();
            assert_eq!(ndp::AdvertRepr::parse(&q), Ok(repr));
            assert_eq!(out[4], msg[4] & 0xe0);
            assert_eq!(out[5..8], [0; 3]);
            assert_eq!(&out[8..24], &msg[8..24]);
        }
        Err(_) => assert!(!well_formed || msg[0] != 136),
    }
    // The free functions, on the addresses.
    let sn = ndp::solicited_node(dst);
    assert!(ndp::is_solicited_node(sn) && sn.octets()[13..] == dst.octets()[13..]);
    assert_eq!(ndp::multicast_mac(sn).octets()[..3], [0x33, 0x33, 0xff]);
});
