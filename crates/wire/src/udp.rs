//! UDP datagrams (RFC 768).

use super::checksum;
use super::ipv4::PROTO_UDP;
use super::{be16, put16, Error, Ipv4Addr, Result};

/// The fixed 8-byte header.
pub const HEADER_LEN: usize = HEADER_LEN_U16 as usize;
const HEADER_LEN_U16: u16 = 8;

mod field {
    // RFC 768 "Format".
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
///
/// `new_checked` guarantees `8 <= len() <= buffer length`; the datagram is
/// bytes `0..len()`, anything after it is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] below 8 bytes or below the Length field;
    /// [`Error::Malformed`] for a Length below 8 (RFC 768 "Length ... the
    /// minimum value of the length is eight").
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, field::LENGTH));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The Length field: header + data, in `8..=buffer length`.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes `8..len()`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// True if the checksum is absent (0, RFC 768 "all zero ... means the
    /// transmitter generated no checksum") or correct over pseudo-header +
    /// bytes `0..len()`.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let s = checksum::pseudo_header_v4(src, dst, PROTO_UDP, len)
            + checksum::sum(&self.buffer.as_ref()[..usize::from(len)], 0);
        checksum::fold(s) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Does not update the checksum.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Does not update the checksum. Clamped to `8..=buffer length` so that
    /// the view stays valid.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        let max = u16::try_from(self.buffer.as_ref().len()).unwrap_or(u16::MAX);
        put16(
            self.buffer.as_mut(),
            field::LENGTH,
            len.clamp(HEADER_LEN_U16, max),
        );
    }

    /// A checksum of 0 means "none" (RFC 768).
    #[inline]
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Mutable bytes `8..len()`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes and stores the checksum over pseudo-header + bytes
    /// `0..len()`; a computed 0 is sent as 0xFFFF (RFC 768 "If the computed
    /// checksum is zero, it is transmitted as all ones").
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let s = checksum::pseudo_header_v4(src, dst, PROTO_UDP, len)
            + checksum::sum(&self.buffer.as_ref()[..usize::from(len)], 0);
        let c = !checksum::fold(s);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of a UDP header. The checksum is emitted as 0 ("none",
/// RFC 768); fill it with [`Packet::fill_checksum`] once the payload is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header, `<= 65527`.
    pub payload_len: u16,
}

impl Repr {
    /// Reads a checked datagram's header. The checksum is not verified (see
    /// [`Packet::verify_checksum`]).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            // new_checked guarantees a Length of at least 8.
            payload_len: p.len() - HEADER_LEN_U16,
        })
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header + payload: the Length field.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Writes the header into `buf[..8]` and returns the view over `buf`
    /// (the payload is the next `payload_len` bytes, which the caller
    /// fills). Errors, with nothing written: [`Error::Truncated`] if `buf`
    /// is shorter than [`buffer_len`](Repr::buffer_len); [`Error::Malformed`]
    /// for a `payload_len` above 65527 (the Length is 16 bits).
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed)?;
        if buf.len() < usize::from(len) {
            return Err(Error::Truncated);
        }
        put16(buf, field::SRC_PORT, self.src_port);
        put16(buf, field::DST_PORT, self.dst_port);
        put16(buf, field::LENGTH, len);
        put16(buf, field::CHECKSUM, 0);
        Ok(Packet { buffer: buf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4;
    use etherparse::{PacketBuilder, UdpHeader};
    use proptest::prelude::*;

    const SRC: [u8; 4] = [198, 18, 0, 1];
    const DST: [u8; 4] = [198, 18, 0, 2];

    fn datagram(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(SRC, DST, 64)
            .udp(sp, dp)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    #[test]
    fn parses_etherparse_datagram() {
        let mut v = datagram(4789, 53, b"payload");
        v.extend([0u8; 5]); // trailing garbage beyond the IP packet
        let ip = ipv4::Packet::new_checked(&v[..]).unwrap();
        let u = Packet::new_checked(ip.payload()).unwrap();
        let (e, rest) = UdpHeader::from_slice(ip.payload()).unwrap();
        assert_eq!(u.src_port(), e.source_port);
        assert_eq!(u.dst_port(), e.destination_port);
        assert_eq!(u.len(), e.length);
        assert_eq!(u.checksum(), e.checksum);
        assert_eq!(u.payload(), rest);
        assert!(u.verify_checksum(ip.src(), ip.dst()));
        assert!(!u.verify_checksum(ip.dst(), Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn rejects_and_zero_checksum() {
        let v = datagram(1, 2, b"abcd");
        let d = &v[20..];
        assert_eq!(Packet::new_checked(&d[..7]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&d[..11]), Err(Error::Truncated));
        let mut b = d.to_vec();
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed));
        b[5] = 8;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        let mut b = d.to_vec();
        b[6] = 0;
        b[7] = 0;
        b[9] ^= 0xff; // corrupt payload: no checksum, still "valid"
        assert!(Packet::new_checked(&b[..])
            .unwrap()
            .verify_checksum(SRC.into(), DST.into()));
    }

    #[test]
    fn emit_then_fill() {
        let r = Repr {
            src_port: 5000,
            dst_port: 53,
            payload_len: 5,
        };
        assert_eq!((r.header_len(), r.buffer_len()), (8, 13));
        let mut buf = [0u8; 8 + 5];
        let mut p = r.emit(&mut buf).unwrap();
        p.payload_mut().copy_from_slice(b"hello");
        assert_eq!(p.checksum(), 0);
        p.fill_checksum(SRC.into(), DST.into());
        assert_eq!(Repr::parse(&p), Ok(r));
        let (e, rest) = UdpHeader::from_slice(&buf).unwrap();
        assert_eq!(e.length, 13);
        assert_eq!(
            e.checksum,
            e.calc_checksum_ipv4_raw(SRC, DST, rest).unwrap()
        );
        let mut short = [0u8; 12];
        assert_eq!(r.emit(&mut short).err(), Some(Error::Truncated));
        assert_eq!(short, [0u8; 12], "nothing written");
        let big = Repr {
            payload_len: 65528,
            ..r
        };
        assert_eq!(big.emit(&mut [0u8; 8]).err(), Some(Error::Malformed));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Find a payload word that makes the checksum compute to 0.
        let mut buf = [0u8; 10];
        let r = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        };
        let mut p = r.emit(&mut buf).unwrap();
        p.fill_checksum(SRC.into(), DST.into());
        // Adding the current checksum to the payload word drives the sum to 0xffff.
        let c = p.checksum();
        p.payload_mut().copy_from_slice(&c.to_be_bytes());
        p.fill_checksum(SRC.into(), DST.into());
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC.into(), DST.into()));
        let (e, rest) = UdpHeader::from_slice(&buf).unwrap();
        assert_eq!(e.calc_checksum_ipv4_raw(SRC, DST, rest).unwrap(), 0xffff);
    }

    proptest! {
        /// parse(emit(r)) == r, and the header is what etherparse writes.
        #[test]
        fn repr_round_trip(sp in any::<u16>(), dp in any::<u16>(), payload_len in 0u16..100, extra in 0usize..8) {
            let r = Repr { src_port: sp, dst_port: dp, payload_len };
            let mut buf = vec![0x11u8; r.buffer_len() + extra];
            let p = r.emit(&mut buf).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            prop_assert_eq!(p.payload().len(), usize::from(payload_len));
            let e = UdpHeader { source_port: sp, destination_port: dp, length: payload_len + 8, checksum: 0 };
            prop_assert_eq!(&buf[..8], &e.to_bytes()[..]);
        }

        #[test]
        fn rewrite_incremental(sp in any::<u16>(), new_sp in any::<u16>(), new_dst in any::<u32>(),
                               payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut v = datagram(sp, 53, &payload);
            let mut u = Packet::new_checked(&mut v[20..]).unwrap();
            let mut c = u.checksum();
            c = checksum::update_u16(c, sp, new_sp);
            c = checksum::update_u32(c, u32::from_be_bytes(DST), new_dst);
            u.set_src_port(new_sp);
            // RFC 768: a checksum that became 0 is sent as all ones.
            u.set_checksum(if c == 0 { 0xffff } else { c });
            prop_assert!(u.verify_checksum(SRC.into(), new_dst.into()));
            let (e, rest) = UdpHeader::from_slice(&v[20..]).unwrap();
            prop_assert_eq!(e.checksum, e.calc_checksum_ipv4_raw(SRC, new_dst.to_be_bytes(), rest).unwrap());
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_all(&b);
            let mut b = b;
            if b.len() >= 8 {
                let l = u16::try_from(b.len()).unwrap().saturating_sub(u16::from(b[0] & 7));
                b[4..6].copy_from_slice(&l.to_be_bytes());
            }
            check_all(&b);
        }

        #[test]
        fn truncations_never_panic(payload in 0usize..30) {
            let v = datagram(1, 2, &vec![7; payload]);
            for n in 0..=v.len() - 20 {
                check_all(&v[20..20 + n]);
            }
        }
    }

    fn check_all(b: &[u8]) {
        if let Ok(p) = Packet::new_checked(b) {
            let _ = (p.src_port(), p.dst_port(), p.checksum());
            assert_eq!(p.payload().len() + 8, usize::from(p.len()));
            let _ = p.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
            let mut v = b.to_vec();
            let mut p = Packet::new_checked(&mut v[..]).unwrap();
            p.fill_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
            assert!(p.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
            p.set_len(0);
            assert_eq!(p.len(), 8);
            let _ = p.payload_mut();
        }
    }
}
