//! The first bytes of a TCP or UDP header, where both keep their ports,
//! with the checksum located by protocol: enough to translate a datagram
//! whose transport header is not whole in the buffer.
//!
//! Two places need that: the first fragment of a fragmented UDP datagram
//! (its UDP Length covers the whole datagram, not the fragment, so
//! [`crate::udp::Packet::new_checked`] refuses it), and the transport header
//! an ICMP error quotes (RFC 792: "the internet header plus the first 64
//! bits of the original datagram's data"; RFC 1812 §4.3.2.3 lets routers
//! quote more). Ports are always inside; the TCP checksum (offset 16) only
//! when 18 or more bytes were quoted, the UDP checksum (offset 6) always.

use crate::checksum;
use crate::ipv4::{PROTO_TCP, PROTO_UDP};
use crate::{be16, put16, Error, Result};

/// Bytes every view holds at least: the ports and, for UDP, the checksum.
pub const MIN_LEN: usize = 8;

/// Where the checksum of `proto`'s header sits (RFC 793 §3.1, RFC 768).
const fn checksum_at(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        _ => None,
    }
}

/// A view of a TCP or UDP header prefix.
///
/// `new_checked` guarantees at least [`MIN_LEN`] bytes and a protocol of
/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
    proto: u8,
}

impl<T: AsRef<[u8]>> Ports<T> {
    /// Errors: [`Error::Truncated`] below 8 bytes, [`Error::Unsupported`]
    /// for a protocol other than TCP (6) or UDP (17).
    #[inline]
    pub fn new_checked(buffer: T, proto: u8) -> Result<Self> {
        if checksum_at(proto).is_none() {
            return Err(Error::Unsupported);
        }
        if buffer.as_ref().len() < MIN_LEN {
            return Err(Error::Truncated);
        }
        Ok(Ports { buffer, proto })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The checksum field, when the buffer holds it.
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        let at = checksum_at(self.proto)?;
        let b = self.buffer.as_ref();
        (b.len() >= at + 2).then(|| be16(b, at))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ports<T> {
    /// Rewrites the ports and addresses of the datagram this header starts:
    /// the ports here, and the checksum (when the buffer holds it) for the
    /// new ports and each pseudo-header address change `(old, new)` in
    /// `addrs` (RFC 1624 eqn. 3). A UDP checksum of 0 ("none", RFC 768)
    /// stays 0, and a UDP result of 0 is sent as 0xFFFF.
    #[inline]
    pub fn translate(&mut self, sport: u16, dport: u16, addrs: &[(u32, u32)]) {
        let (old_s, old_d) = (self.src_port(), self.dst_port());
        let b = self.buffer.as_mut();
        put16(b, 0, sport);
        put16(b, 2, dport);
        let Some(at) = checksum_at(self.proto) else {
            return;
        };
        if b.len() < at + 2 {
            return;
        }
        let c = be16(b, at);
        if self.proto == PROTO_UDP && c == 0 {
            return;
        }
        let mut c = c;
        for &(old, new) in addrs {
            c = checksum::update_u32(c, old, new);
        }
        c = checksum::update_u16(c, old_s, sport);
        c = checksum::update_u16(c, old_d, dport);
        if self.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        put16(b, at, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp;
    use std::net::Ipv4Addr;

    fn datagram() -> Vec<u8> {
        let mut v = vec![0u8; 8 + 5];
        let r = udp::Repr {
            src_port: 40000,
            dst_port: 53,
            payload_len: 5,
        };
        let mut u = r.emit(&mut v).unwrap();
        u.payload_mut().copy_from_slice(b"hello");
        u.fill_checksum(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 100));
        v
    }

    #[test]
    fn translate_matches_a_recomputed_udp_checksum() {
        let mut v = datagram();
        let (a, b, c) = (
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 21),
        );
        // Only the first 8 bytes are in the view, as in an ICMP quote.
        Ports::new_checked(&mut v[..8], PROTO_UDP)
            .unwrap()
            .translate(1234, 5353, &[(u32::from(a), u32::from(c))]);
        let u = udp::Packet::new_checked(&v[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (1234, 5353));
        assert!(u.verify_checksum(c, b));
    }

    #[test]
    fn absent_udp_checksum_stays_absent_and_short_tcp_keeps_ports_only() {
        let mut v = datagram();
        v[6] = 0;
        v[7] = 0;
        let mut p = Ports::new_checked(&mut v[..], PROTO_UDP).unwrap();
        p.translate(1, 2, &[(3, 4)]);
        assert_eq!(p.checksum(), Some(0));
        let mut t = [0u8; 8];
        let mut p = Ports::new_checked(&mut t[..], PROTO_TCP).unwrap();
        assert_eq!(p.checksum(), None);
        p.translate(7, 9, &[(1, 2)]);
        assert_eq!((p.src_port(), p.dst_port()), (7, 9));
        assert!(Ports::new_checked(&t[..7], PROTO_TCP).is_err());
        assert!(Ports::new_checked(&t[..], 1).is_err());
    }
}
