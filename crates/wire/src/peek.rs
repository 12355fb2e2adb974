//! Look-ahead reads for prefetching: the flow-table key of a frame nobody
//! has checked yet, read without validating anything but that the bytes are
//! there. A wrong answer (a malformed frame) costs one useless prefetch,
//! never a wrong verdict: the frame is checked by the views when it is
//! forwarded. Never panics.

use super::{be16, be32, ethernet, ipv4, tcp};

/// The addresses (host order: `u32` IPv4, the default, or `u128` IPv6)
/// and ports of a TCP segment or UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple<A = u32> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
}

/// The [`FourTuple`] of an untagged Ethernet/IPv4/TCP frame; `None` if the
/// frame is too short for the headers it announces, or not IPv4/TCP.
#[inline]
pub fn tcp4(frame: &[u8]) -> Option<FourTuple> {
    match ports4(frame)? {
        (t, ipv4::PROTO_TCP) => Some(t),
        _ => None,
    }
}

/// The 4-tuple and protocol of an untagged Ethernet/IPv4 frame carrying TCP
/// or UDP (both keep their ports in the first 4 bytes). For a later
/// fragment the "ports" are payload bytes: a look-ahead only, never a
/// decision.
#[inline]
pub fn ports4(frame: &[u8]) -> Option<(FourTuple, u8)> {
    const IP: usize = ethernet::HEADER_LEN;
    let h = frame.get(..IP + ipv4::MIN_HEADER_LEN)?;
    let proto = h[IP + ipv4::field::PROTOCOL];
    if be16(h, ethernet::field::TYPE) != ethernet::ETHERTYPE_IPV4
        || (proto != ipv4::PROTO_TCP && proto != ipv4::PROTO_UDP)
    {
        return None;
    }
    // IHL in 32-bit words (RFC 791 §3.1), not checked against 5.
    let l4 = IP + usize::from(h[IP + ipv4::field::VER_IHL] & 0x0f) * 4;
    let ports = frame.get(l4..l4 + 4)?;
    Some((
        FourTuple {
            src: be32(h, IP + ipv4::field::SRC.start),
            dst: be32(h, IP + ipv4::field::DST.start),
            sport: be16(ports, tcp::field::SRC_PORT),
            dport: be16(ports, tcp::field::DST_PORT),
        },
        proto,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn frame(udp: bool) -> Vec<u8> {
        let b =
            PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([198, 18, 0, 1], [198, 18, 0, 100], 64);
        let mut v = Vec::new();
        if udp {
            b.udp(40000, 80).write(&mut v, b"x").unwrap();
        } else {
            b.tcp(40000, 80, 1, 1000).write(&mut v, b"x").unwrap();
        }
        v
    }

    #[test]
    fn reads_the_tuple_of_a_segment_only() {
        let want = FourTuple {
            src: 0xc612_0001,
            dst: 0xc612_0064,
            sport: 40000,
            dport: 80,
        };
        let f = frame(false);
        assert_eq!(tcp4(&f), Some(want));
        assert_eq!(tcp4(&f[..14 + 20 + 4]), Some(want), "ports are enough");
        assert_eq!(tcp4(&f[..14 + 20 + 3]), None);
        assert_eq!(tcp4(&frame(true)), None, "UDP");
        assert_eq!(ports4(&frame(true)), Some((want, ipv4::PROTO_UDP)));
        assert_eq!(ports4(&f), Some((want, ipv4::PROTO_TCP)));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(tcp4(&arp), None);
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = tcp4(&b);
            let _ = ports4(&b);
            let mut t = frame(false);
            for (d, s) in t.iter_mut().skip(14).zip(&b) {
                *d = *s;
            }
            for n in 0..=t.len() {
                let _ = tcp4(&t[..n]);
            }
        }
    }
}
