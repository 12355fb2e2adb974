//! IPv4 headers (RFC 791).

use super::checksum;
use super::{be16, be32, ip_at, put16, Error, Ipv4Addr, Result};

/// Header without options (IHL = 5).
pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_VRRP: u8 = 112;

/// Flags/fragment-offset bits (RFC 791 §3.1 "Flags").
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

pub(crate) mod field {
    use core::ops::Range;
    // RFC 791 §3.1 "Internet Header Format".
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A view of an IPv4 packet.
///
/// `new_checked` guarantees: version 4, `20 <= header_len() <= total_len() <=
/// buffer length`. The buffer may be longer than `total_len()` (Ethernet
/// padding); [`payload`](Packet::payload) stops at `total_len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] if the buffer is shorter than 20 bytes,
    /// than IHL*4 or than the total length; [`Error::Malformed`] for a version
    /// other than 4, IHL < 5, or a total length smaller than the header.
    ///
    /// The checksum is not verified here; see
    /// [`verify_checksum`](Packet::verify_checksum).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        // RFC 791 §3.1 "Version: 4 bits ... 4".
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        // RFC 791 §3.1 "the minimum value for a correct header is 5".
        let hlen = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hlen < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hlen > b.len() {
            return Err(Error::Truncated);
        }
        // RFC 791 §3.1 "Total Length ... including internet header and data".
        let total = usize::from(be16(b, field::LENGTH));
        if total < hlen {
            return Err(Error::Malformed);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IHL * 4, in `20..=60`.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The Total Length field: header + data, `<=` the buffer length.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Type of service / DSCP+ECN byte.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units, RFC 791 §3.1).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) * 8
    }

    /// True for any fragment: MF set or a non-zero offset (RFC 791 §3.2
    /// "Fragmentation and Reassembly").
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SRC.start)
    }

    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::DST.start)
    }

    /// Source address as a host-order `u32` (for hashing).
    #[inline]
    pub fn src_u32(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address as a host-order `u32` (for hashing).
    #[inline]
    pub fn dst_u32(&self) -> u32 {
        be32(self.buffer.as_ref(), field::DST.start)
    }

    /// The header checksum is correct (RFC 791 §3.1 "Header Checksum":
    /// the one's-complement sum over the header, checksum included, is all ones).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::internet(self.header()) == 0
    }

    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Options (bytes `20..header_len()`), possibly empty.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Bytes `header_len()..total_len()`: the data without Ethernet padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The view over a packet cut out of a longer one (software
    /// segmentation copies the header in front of each piece): sets the
    /// Total Length to the length of `buffer`, then checks as
    /// [`new_checked`](Packet::new_checked). The length is written even if
    /// the header is then rejected. Does not update the checksum.
    ///
    /// Errors: [`Error::Truncated`] below 20 bytes; [`Error::Malformed`]
    /// above 65535 bytes; else those of `new_checked`.
    #[inline]
    pub fn new_resized(mut buffer: T) -> Result<Self> {
        let b = buffer.as_mut();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = u16::try_from(b.len()).map_err(|_| Error::Malformed)?;
        put16(b, field::LENGTH, len);
        Packet::new_checked(buffer)
    }

    /// Does not update the checksum: use [`checksum::update_u32`] or
    /// [`fill_checksum`](Packet::fill_checksum).
    #[inline]
    pub fn set_src(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&ip.octets());
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_dst(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&ip.octets());
    }

    /// Does not update the checksum; TTL shares a 16-bit word with the
    /// protocol (`update_u16(c, u16::from_be_bytes([old_ttl, proto]), ...)`).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        put16(self.buffer.as_mut(), field::IDENT, ident);
    }

    #[inline]
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Does not update the checksum. The value is clamped to
    /// `header_len()..=buffer length` so that the view stays valid (the
    /// getters keep their no-panic guarantee).
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        let max = u16::try_from(self.buffer.as_ref().len()).unwrap_or(u16::MAX);
        // IHL * 4, as header_len() but in the field's type.
        let min = u16::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4;
        put16(self.buffer.as_mut(), field::LENGTH, len.clamp(min, max));
    }

    /// Recomputes the header checksum from scratch (RFC 791 §3.1).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::internet(self.header());
        self.set_checksum(c);
    }

    /// Mutable bytes `header_len()..total_len()`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[h..t]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// [`payload`](Packet::payload), borrowed for as long as the buffer.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        &self.buffer[h..t]
    }
}

impl<'a> Packet<&'a mut [u8]> {
    /// [`payload_mut`](Packet::payload_mut), borrowed for as long as the
    /// buffer.
    #[inline]
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer[h..t]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    /// The whole buffer (including any bytes after `total_len()`).
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv4 header that podlb emits: no options, TOS 0, DF
/// set and not a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// RFC 6864 §4.1: the ID of an atomic datagram (DF=1, MF=0, offset 0)
    /// has no meaning; it may be 0.
    pub ident: u16,
    /// Bytes after the header, `<= 65515`.
    pub payload_len: u16,
}

impl Repr {
    /// Reads a checked packet's header. Options are skipped (the payload
    /// starts after them); TOS and DF are not represented. The checksum is
    /// not verified (see [`Packet::verify_checksum`]). Errors:
    /// [`Error::Unsupported`] for a fragment (podlb does not reassemble).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if p.is_fragment() {
            return Err(Error::Unsupported);
        }
        let payload_len = p.payload().len();
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            ident: p.ident(),
            // payload() ends at the 16-bit Total Length.
            payload_len: u16::try_from(payload_len).map_err(|_| Error::Malformed)?,
        })
    }

    /// [`MIN_HEADER_LEN`]: no options.
    #[inline]
    pub const fn header_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Header + payload: the Total Length.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN + self.payload_len as usize
    }

    /// Writes the header with a correct checksum into `buf[..20]` and
    /// returns the view over `buf` (the payload is the next `payload_len`
    /// bytes, which the caller fills).
    ///
    /// Errors, with nothing written: [`Error::Truncated`] if `buf` is
    /// shorter than [`buffer_len`](Repr::buffer_len); [`Error::Malformed`]
    /// for a `payload_len` above 65515 (the Total Length is 16 bits).
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        let total = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed)?;
        if buf.len() < usize::from(total) {
            return Err(Error::Truncated);
        }
        let b = &mut buf[..MIN_HEADER_LEN];
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = 0;
        put16(b, field::LENGTH, total);
        put16(b, field::IDENT, self.ident);
        put16(b, field::FLAGS_FRAG, FLAG_DF);
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        let mut p = Packet { buffer: buf };
        p.fill_checksum();
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpFragOffset, IpNumber, Ipv4Header, PacketBuilder};
    use proptest::prelude::*;

    fn header(opts: &[u8], df: bool, mf: bool, off: u16, payload: usize) -> Vec<u8> {
        let mut h = Ipv4Header::new(
            u16::try_from(payload).unwrap(),
            61,
            IpNumber::TCP,
            [198, 18, 1, 2],
            [198, 19, 3, 4],
        )
        .unwrap();
        h.identification = 0xbeef;
        h.dont_fragment = df;
        h.more_fragments = mf;
        h.fragment_offset = IpFragOffset::try_new(off).unwrap();
        h.options = opts.try_into().unwrap();
        h.set_payload_len(payload).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut v = h.to_bytes().to_vec();
        v.extend((0..=255u8).cycle().take(payload));
        v
    }

    #[test]
    fn parses_etherparse_header() {
        let mut buf = header(&[1, 1, 1, 0, 0x94, 4, 0, 0], false, true, 100, 10);
        buf.extend([0u8; 6]); // trailing padding
        let p = Packet::new_checked(&buf[..]).unwrap();
        let (e, _) = Ipv4Header::from_slice(&buf).unwrap();
        assert_eq!(p.header_len(), e.header_len());
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.total_len(), e.total_len);
        assert_eq!(p.ident(), 0xbeef);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), e.fragment_offset.byte_offset());
        assert_eq!(p.frag_offset(), 800);
        assert!(p.is_fragment());
        assert_eq!(p.ttl(), 61);
        assert_eq!(p.protocol(), PROTO_TCP);
        assert_eq!(p.checksum(), e.header_checksum);
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(198, 19, 3, 4));
        assert_eq!(p.src_u32(), 0xc612_0102);
        assert_eq!(p.dst_u32(), 0xc613_0304);
        assert!(p.verify_checksum());
        assert_eq!(p.options(), e.options.as_slice());
        assert_eq!(p.payload(), &(0..10u8).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn fragment_flags() {
        let b = header(&[], true, false, 0, 0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        let b = header(&[], false, false, 8, 0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && p.frag_offset() == 64);
    }

    #[test]
    fn rejects() {
        let good = header(&[], true, false, 0, 4);
        assert_eq!(Packet::new_checked(&good[..19]), Err(Error::Truncated));
        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed));
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed));
        b[0] = 0x46; // ihl 6 = 24 bytes, and total 24 fits: accepted
        assert!(Packet::new_checked(&b[..]).is_ok());
        b[0] = 0x47; // 28 > 24
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Truncated));
        let mut b = good.clone();
        b[3] = 19;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed));
        b[3] = 25;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&good[..23]), Err(Error::Truncated));
    }

    #[test]
    fn emit_matches_etherparse() {
        let r = Repr {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            protocol: PROTO_UDP,
            ttl: 64,
            ident: 7,
            payload_len: 100,
        };
        assert_eq!((r.header_len(), r.buffer_len()), (20, 120));
        let mut buf = [0u8; 124];
        let p = r.emit(&mut buf).unwrap();
        assert_eq!(p.payload().len(), 100);
        assert_eq!(Repr::parse(&p), Ok(r));
        let (e, _) = Ipv4Header::from_slice(&buf).unwrap();
        assert_eq!(e.source, [198, 18, 0, 1]);
        assert_eq!(e.destination, [198, 18, 0, 2]);
        assert_eq!(e.protocol, IpNumber::UDP);
        assert_eq!(e.time_to_live, 64);
        assert_eq!(e.total_len, 120);
        assert_eq!(e.identification, 7);
        assert!(e.dont_fragment && !e.more_fragments);
        assert_eq!(e.header_checksum, e.calc_header_checksum());
        let mut short = [0u8; 119];
        assert_eq!(r.emit(&mut short), Err(Error::Truncated));
        assert_eq!(short, [0u8; 119], "nothing written");
        let big = |payload_len| Repr { payload_len, ..r };
        let mut max = vec![0u8; 65535];
        assert_eq!(big(65516).emit(&mut max), Err(Error::Malformed));
        assert!(big(65515).emit(&mut max).is_ok());
    }

    #[test]
    fn repr_rejects_fragments_and_skips_options() {
        let b = header(&[], false, true, 0, 4);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
        let b = header(&[], true, false, 8, 4);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
        let b = header(&[1, 1, 1, 0], true, false, 0, 4);
        let p = Packet::new_checked(&b[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!((r.payload_len, r.ident, r.ttl), (4, 0xbeef, 61));
    }

    #[test]
    fn payload_mut_and_total_len() {
        let mut b = header(&[], true, false, 0, 8);
        b.extend([0u8; 4]);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.payload_mut().len(), 8);
        p.set_total_len(24);
        assert_eq!(p.payload().len(), 4);
        p.set_total_len(1000);
        assert_eq!(p.total_len(), 32);
        p.set_total_len(3);
        assert_eq!(p.total_len(), 20);
        assert!(p.payload().is_empty());
        p.set_ident(0x0102);
        p.fill_checksum();
        let (e, _) = Ipv4Header::from_slice(&b).unwrap();
        assert_eq!((e.identification, e.total_len), (0x0102, 20));
        assert_eq!(e.header_checksum, e.calc_header_checksum());
    }

    #[test]
    fn resized_and_into_payload() {
        // A 28-byte packet's header in front of 4 of its 8 payload bytes.
        let b = header(&[], true, false, 0, 8);
        let mut cut = b[..24].to_vec();
        assert!(
            Packet::new_checked(&mut cut[..]).is_err(),
            "Total Length 28"
        );
        let p = Packet::new_resized(&mut cut[..]).unwrap();
        assert_eq!((p.total_len(), p.into_payload_mut().len()), (24, 4));
        let p = Packet::new_checked(&cut[..]).unwrap();
        assert_eq!(p.into_payload(), &b[20..24]);
        assert_eq!(
            Packet::new_resized(&mut [0x45u8; 19][..]),
            Err(Error::Truncated)
        );
        let mut big = vec![0u8; 65536];
        big[0] = 0x45;
        assert_eq!(Packet::new_resized(&mut big[..]), Err(Error::Malformed));
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(Packet::new_resized(&mut v6[..]), Err(Error::Malformed));
    }

    proptest! {
        /// NAT rewrites of src/dst/ttl with incremental checksum updates are
        /// accepted by etherparse's independent checksum computation.
        #[test]
        fn rewrite_with_incremental_checksum(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), ttl in 1u8..,
            new_src in any::<u32>(), new_dst in any::<u32>(), payload in 0usize..40,
            opts in prop_oneof![Just(vec![]), Just(vec![1u8, 1, 1, 0]), Just(vec![0x94u8, 4, 0, 0, 1, 1, 1, 1])],
        ) {
            let mut buf = Vec::new();
            PacketBuilder::ipv4(src, dst, ttl)
                .udp(1, 2)
                .write(&mut buf, &vec![0x5a; payload])
                .unwrap();
            // Re-encode with options via etherparse so the fixture stays independent.
            let (mut e, rest) = Ipv4Header::from_slice(&buf).unwrap();
            e.options = opts[..].try_into().unwrap();
            e.set_payload_len(rest.len()).unwrap();
            e.header_checksum = e.calc_header_checksum();
            let mut buf2 = e.to_bytes().to_vec();
            buf2.extend_from_slice(rest);

            let mut p = Packet::new_checked(&mut buf2[..]).unwrap();
            prop_assert!(p.verify_checksum());
            let mut c = p.checksum();
            c = checksum::update_u32(c, p.src_u32(), new_src);
            p.set_src(new_src.into());
            c = checksum::update_u32(c, p.dst_u32(), new_dst);
            p.set_dst(new_dst.into());
            let old_word = u16::from_be_bytes([p.ttl(), p.protocol()]);
            p.set_ttl(ttl - 1);
            c = checksum::update_u16(c, old_word, u16::from_be_bytes([ttl - 1, p.protocol()]));
            p.set_checksum(c);
            prop_assert!(p.verify_checksum());

            let (e2, _) = Ipv4Header::from_slice(&buf2).unwrap();
            prop_assert_eq!(e2.header_checksum, e2.calc_header_checksum());
            prop_assert_eq!(e2.source, new_src.to_be_bytes());
            prop_assert_eq!(e2.time_to_live, ttl - 1);

            let mut p = Packet::new_checked(&mut buf2[..]).unwrap();
            p.fill_checksum();
            prop_assert_eq!(p.checksum(), c);
        }

        /// parse(emit(r)) == r, and etherparse writes the same header.
        #[test]
        fn repr_round_trip(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
                           ttl in any::<u8>(), ident in any::<u16>(), payload_len in 0u16..200, extra in 0usize..8) {
            let r = Repr { src: src.into(), dst: dst.into(), protocol, ttl, ident, payload_len };
            let mut buf = vec![0x5au8; r.buffer_len() + extra];
            let p = r.emit(&mut buf).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            prop_assert!(p.verify_checksum());
            let mut e = Ipv4Header::new(payload_len, ttl, IpNumber(protocol), src, dst).unwrap();
            e.identification = ident;
            e.dont_fragment = true;
            e.header_checksum = e.calc_header_checksum();
            prop_assert_eq!(&buf[..20], &e.to_bytes()[..]);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_all(&b);
            // Bias towards passing the version/ihl/length checks.
            let mut b = b;
            if b.len() >= 4 {
                b[0] = 0x40 | (b[0] & 0x0f);
                let l = u16::try_from(b.len()).unwrap().saturating_sub(u16::from(b[3] & 3));
                b[2..4].copy_from_slice(&l.to_be_bytes());
            }
            check_all(&b);
        }

        #[test]
        fn truncations_never_panic(payload in 0usize..60) {
            let b = header(&[1, 1, 1, 0], false, true, 0, payload);
            for n in 0..=b.len() {
                check_all(&b[..n]);
            }
        }
    }

    fn check_all(b: &[u8]) {
        if let Ok(p) = Packet::new_checked(b) {
            assert!(p.header_len() >= 20 && p.header_len() <= usize::from(p.total_len()));
            assert!(usize::from(p.total_len()) <= b.len());
            let _ = (
                p.ident(),
                p.dont_frag(),
                p.more_frags(),
                p.frag_offset(),
                p.is_fragment(),
            );
            let _ = (
                p.ttl(),
                p.protocol(),
                p.checksum(),
                p.src(),
                p.dst(),
                p.tos(),
            );
            let _ = (p.src_u32(), p.dst_u32(), p.verify_checksum());
            assert_eq!(p.options().len() + 20, p.header_len());
            assert_eq!(
                p.header_len() + p.payload().len(),
                usize::from(p.total_len())
            );
            let mut v = b.to_vec();
            let mut p = Packet::new_checked(&mut v[..]).unwrap();
            p.fill_checksum();
            assert!(p.verify_checksum());
            let _ = p.payload_mut();
        }
    }
}
