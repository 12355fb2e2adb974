//! The datagram an ICMP error quotes (`icmp::Quoted`) and the transport
//! header prefix (`ports::Ports`): any bytes parse or are refused without
//! a panic, and a translation writes what it says, keeps a correct quoted
//! IPv4 header checksum correct, and keeps a quoted UDP checksum over a
//! whole quoted datagram correct.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podlb_fuzz::{l4_ok, sums_to_ones, Reader};
use podlb_wire::{icmp, ipv4, ports, udp};
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let (src, dst, sport, dport) = (r.u32(), r.u32(), r.u16(), r.u16());
    let proto = r.u8();
    let rest = r.take(usize::MAX).to_vec();

    // Ports over any prefix.
    let mut b = rest.clone();
    if let Ok(mut p) = ports::Ports::new_checked(&mut b[..], proto) {
        p.translate(sport, dport, &[(src, dst)]);
        assert_eq!((p.src_port(), p.dst_port()), (sport, dport));
    } else {
        assert!(rest.len() < ports::MIN_LEN || !(proto == 6 || proto == 17));
    }

    let mut b = rest.clone();
    let Ok(q) = icmp::Quoted::new_checked(&b[..]) else {
        return;
    };
    let hl = usize::from(b[0] & 0x0f) * 4;
    let header_ok = sums_to_ones(&b[..hl], 0);
    let (osrc, odst) = (q.src_u32(), q.dst_u32());
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let whole_udp = q.protocol() == ipv4::PROTO_UDP
        && total == b.len()
        && udp::Packet::new_checked(&b[hl..]).is_ok_and(|u| usize::from(u.len()) == b.len() - hl && u.checksum() != 0)
        && l4_ok(&b[hl..], Ipv4Addr::from(osrc), Ipv4Addr::from(odst), 17);
    let mut q = icmp::Quoted::new_checked(&mut b[..]).unwrap();
    q.translate(src, dst, sport, dport);
    assert_eq!((q.src_u32(), q.dst_u32()), (src, dst));
    assert_eq!((q.src_port(), q.dst_port()), (sport, dport));
    if header_ok {
        assert!(sums_to_ones(&b[..hl], 0), "quoted header checksum kept");
    }
    if whole_udp {
        assert!(
            l4_ok(&b[hl..], Ipv4Addr::from(src), Ipv4Addr::from(dst), 17),
            "quoted UDP checksum kept"
        );
    }
});
