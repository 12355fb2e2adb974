//! IPv6 headers (RFC 8200): the fixed header, the walk over extension
//! headers to the upper layer, and the Fragment header.

use super::{be16, be32, ip6_at, put16, put32, Error, Ipv6Addr, Result};

/// The fixed header (RFC 8200 §3).
pub const HEADER_LEN: usize = 40;

// Next Header values (RFC 8200 §4; IANA "Assigned Internet Protocol
// Numbers"). The upper layers first, named as in `ipv4`.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// Encapsulating Security Payload (RFC 4303): opaque, ends the walk.
pub const PROTO_ESP: u8 = 50;
/// Authentication Header (RFC 4302): ends the walk (podlb rewrites
/// addresses, which AH authenticates).
pub const PROTO_AH: u8 = 51;
pub const PROTO_ICMPV6: u8 = 58;
/// VRRP (RFC 9568 §5.1.2.4: the Next Header of an advertisement).
pub const PROTO_VRRP: u8 = 112;
/// Hop-by-Hop Options header (RFC 8200 §4.3).
pub const NH_HOP_BY_HOP: u8 = 0;
/// Routing header (RFC 8200 §4.4).
pub const NH_ROUTING: u8 = 43;
/// Fragment header (RFC 8200 §4.5).
pub const NH_FRAGMENT: u8 = 44;
/// No Next Header (RFC 8200 §4.7).
pub const NH_NO_NEXT: u8 = 59;
/// Destination Options header (RFC 8200 §4.6).
pub const NH_DEST_OPTS: u8 = 60;

/// The most extension headers [`Packet::upper_layer`] walks before it
/// gives up with [`Error::Unsupported`]. RFC 8200 §4.1 recommends at most
/// one of each (two Destination Options): a real chain is shorter.
pub const MAX_EXT_HEADERS: usize = 8;

/// Traffic class and flow label widths (RFC 8200 §3, RFC 6437).
const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

mod field {
    use core::ops::Range;
    // RFC 8200 §3 "IPv6 Header Format": Version (4 bits), Traffic Class
    // (8), Flow Label (20) in the first 32-bit word.
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A view of an IPv6 packet.
///
/// `new_checked` guarantees: version 6, at least [`HEADER_LEN`] bytes, and
/// `40 + payload_len() <= buffer length`. The buffer may be longer
/// (Ethernet padding); [`payload`](Packet::payload) stops at the Payload
/// Length. Extension headers are not checked here: they are part of the
/// payload until [`upper_layer`](Packet::upper_layer) walks them.
///
/// A Payload Length of 0 is an empty payload: Jumbograms (RFC 2675, a
/// Hop-by-Hop option) are not supported, and their walk fails as
/// [`Error::Truncated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// What follows the extension headers: see [`Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The last Next Header value of the chain: the upper-layer protocol
    /// ([`PROTO_TCP`], [`PROTO_UDP`], [`PROTO_ICMPV6`], anything else
    /// unwalked), or [`NH_NO_NEXT`] when there is none. For a non-first
    /// fragment it is the Fragment header's Next Header, which may name an
    /// extension header.
    pub protocol: u8,
    /// Where the upper-layer data starts, counted from the start of the
    /// IPv6 header: `40 <= offset <= 40 + payload_len()`.
    pub offset: usize,
    /// Bytes from `offset` to the end of the payload: the Upper-Layer
    /// Packet Length of the pseudo-header (RFC 8200 §8.1).
    pub len: usize,
    /// The Fragment header's fields, if the chain had one. For a
    /// fragment with a non-zero offset the walk stops at it: the bytes at
    /// `offset` continue an earlier fragment and are not a header.
    pub fragment: Option<FragmentInfo>,
}

/// The fields of a Fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Fragment Offset in bytes (the field counts 8-octet units).
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
    pub ident: u32,
}

impl FragmentInfo {
    /// An "atomic fragment" (RFC 6946 §4): offset 0 and M clear, the whole
    /// packet in one piece, processed as if it had no Fragment header.
    #[inline]
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }

    /// Offset 0: the fragment that carries the upper-layer header (RFC 7112
    /// §5 requires the whole header chain in it).
    #[inline]
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] if the buffer is shorter than 40 bytes
    /// or than 40 + Payload Length; [`Error::Malformed`] for a version
    /// other than 6.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        // RFC 8200 §3 "Version 4-bit Internet Protocol version number = 6".
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        // RFC 8200 §3 "Payload Length ... the rest of the packet following
        // this IPv6 header, in octets".
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn first_word(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// Traffic Class (RFC 8200 §7: DSCP and ECN, as IPv4's TOS byte).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        // Bits 4..12 of the first word; the mask keeps 8 bits.
        (self.first_word() >> 20).to_be_bytes()[3]
    }

    /// Flow Label, 20 bits (RFC 8200 §6, RFC 6437).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & FLOW_LABEL_MASK
    }

    /// The Payload Length field: bytes after the fixed header, extension
    /// headers included; `40 + payload_len() <= buffer length`.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// The fixed header's Next Header: an extension header or the upper
    /// layer (see [`upper_layer`](Packet::upper_layer)).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        ip6_at(self.buffer.as_ref(), field::SRC.start)
    }

    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        ip6_at(self.buffer.as_ref(), field::DST.start)
    }

    /// Source address as a host-order `u128` (for hashing).
    #[inline]
    pub fn src_u128(&self) -> u128 {
        u128::from(self.src())
    }

    /// Destination address as a host-order `u128` (for hashing).
    #[inline]
    pub fn dst_u128(&self) -> u128 {
        u128::from(self.dst())
    }

    /// The fixed 40-byte header.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// Bytes `40..40 + payload_len()`: extension headers and upper layer,
    /// without Ethernet padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.end()]
    }

    #[inline]
    fn end(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Walks the extension headers from the fixed header's Next Header to
    /// the upper layer (RFC 8200 §4): Hop-by-Hop Options (only first, RFC
    /// 8200 §4.1), Routing, Destination Options, and one Fragment header.
    /// At most [`MAX_EXT_HEADERS`] are walked; every one must lie within
    /// the payload. Any other Next Header value ends the walk and is the
    /// upper-layer protocol, including [`NH_NO_NEXT`] (RFC 8200 §4.7:
    /// nothing follows; the remaining bytes are `len`, to be ignored).
    ///
    /// The walk stops at a Fragment header with a non-zero offset (the
    /// rest is not a header); with offset 0 it goes on into the
    /// fragmentable part, which must hold the whole chain (RFC 7112 §5).
    ///
    /// Errors: [`Error::Truncated`] when a header runs past the payload;
    /// [`Error::Malformed`] for a Hop-by-Hop header that is not the first;
    /// [`Error::Unsupported`] for ESP or AH (podlb cannot see through
    /// them), a second Fragment header, or more than [`MAX_EXT_HEADERS`].
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let b = &self.buffer.as_ref()[..self.end()];
        let mut nh = self.next_header();
        let mut at = HEADER_LEN;
        let mut fragment: Option<FragmentInfo> = None;
        let mut walked = 0;
        loop {
            match nh {
                // RFC 8200 §4.1 "the Hop-by-Hop Options header, which is
                // restricted to appear immediately after an IPv6 header only".
                NH_HOP_BY_HOP if walked > 0 => return Err(Error::Malformed),
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_FRAGMENT => {}
                PROTO_ESP | PROTO_AH => return Err(Error::Unsupported),
                _ => {
                    return Ok(UpperLayer {
                        protocol: nh,
                        offset: at,
                        len: b.len() - at,
                        fragment,
                    })
                }
            }
            if walked == MAX_EXT_HEADERS {
                return Err(Error::Unsupported);
            }
            walked += 1;
            let hlen = if nh == NH_FRAGMENT {
                // RFC 8200 §4.5: a fixed 8 octets.
                FRAGMENT_LEN
            } else {
                // RFC 8200 §4.3, §4.4, §4.6 "Hdr Ext Len 8-bit unsigned
                // integer. Length of the ... header in 8-octet units, not
                // including the first 8 octets."
                let len = *b.get(at + 1).ok_or(Error::Truncated)?;
                (usize::from(len) + 1) * 8
            };
            let ext = b.get(at..at + hlen).ok_or(Error::Truncated)?;
            at += hlen;
            let this = nh;
            // Every extension header starts with its Next Header (RFC 8200 §4.3-§4.6).
            nh = ext[0];
            if this == NH_FRAGMENT {
                if fragment.is_some() {
                    return Err(Error::Unsupported);
                }
                let f = Fragment { buffer: ext }.info();
                fragment = Some(f);
                if !f.is_first() {
                    // A later fragment: the bytes at `at` continue an
                    // earlier fragment's data and are not a header.
                    return Ok(UpperLayer {
                        protocol: nh,
                        offset: at,
                        len: b.len() - at,
                        fragment,
                    });
                }
            }
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The view over a packet cut out of a longer one: sets the Payload
    /// Length to the length of `buffer` minus 40, then checks as
    /// [`new_checked`](Packet::new_checked) (the length is written even if
    /// the header is then rejected).
    ///
    /// Errors: [`Error::Truncated`] below 40 bytes; [`Error::Malformed`]
    /// above 40 + 65535 bytes; else those of `new_checked`.
    #[inline]
    pub fn new_resized(mut buffer: T) -> Result<Self> {
        let b = buffer.as_mut();
        let Some(payload) = b.len().checked_sub(HEADER_LEN) else {
            return Err(Error::Truncated);
        };
        let len = u16::try_from(payload).map_err(|_| Error::Malformed)?;
        put16(b, field::PAYLOAD_LEN, len);
        Packet::new_checked(buffer)
    }

    /// Sets the Traffic Class, leaving version and flow label.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = self.first_word();
        let w = (w & 0xf00f_ffff) | (u32::from(tc) << 20);
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets the Flow Label to the low 20 bits of `label`.
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let w = (self.first_word() & !FLOW_LABEL_MASK) | (label & FLOW_LABEL_MASK);
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Clamped to `0..=buffer length - 40` so that the view stays valid.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        let room = self.buffer.as_ref().len() - HEADER_LEN;
        let max = u16::try_from(room).unwrap_or(u16::MAX);
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, len.min(max));
    }

    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = nh;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// IPv6 has no header checksum, but the upper layers' pseudo-header
    /// covers the addresses (RFC 8200 §8.1): update or refill theirs.
    #[inline]
    pub fn set_src(&mut self, ip: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&ip.octets());
    }

    /// See [`set_src`](Packet::set_src) about upper-layer checksums.
    #[inline]
    pub fn set_dst(&mut self, ip: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&ip.octets());
    }

    /// Mutable bytes `40..40 + payload_len()`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// [`payload`](Packet::payload), borrowed for as long as the buffer.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let end = self.end();
        &self.buffer[HEADER_LEN..end]
    }
}

impl<'a> Packet<&'a mut [u8]> {
    /// [`payload_mut`](Packet::payload_mut), borrowed for as long as the
    /// buffer.
    #[inline]
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let end = self.end();
        &mut self.buffer[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    /// The whole buffer (including any bytes after the payload).
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv6 fixed header that podlb emits: traffic class 0,
/// flow label 0 (RFC 6437 §3 allows a source not to label), and no
/// extension headers of its own (`next_header` is written as given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The fixed header's Next Header.
    pub next_header: u8,
    pub hop_limit: u8,
    /// The Payload Length: everything after the fixed header.
    pub payload_len: u16,
}

impl Repr {
    /// Reads a checked packet's fixed header. Extension headers are not
    /// walked: they stay in the payload, and `next_header` names the first
    /// (see [`Packet::upper_layer`]). Traffic class and flow label are not
    /// represented. Never fails for a checked packet.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            payload_len: p.payload_len(),
        })
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header + payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Writes the fixed header into `buf[..40]` and returns the view over
    /// `buf` (the payload is the next `payload_len` bytes, which the
    /// caller fills). Errors: [`Error::Truncated`] if `buf` is shorter than
    /// [`buffer_len`](Repr::buffer_len) (nothing written).
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        if buf.len() < self.buffer_len() {
            return Err(Error::Truncated);
        }
        let b = &mut buf[..HEADER_LEN];
        // RFC 8200 §3: version 6, traffic class 0, flow label 0.
        put32(b, field::VER_TC_FLOW, 6 << 28);
        put16(b, field::PAYLOAD_LEN, self.payload_len);
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        Ok(Packet { buffer: buf })
    }
}

/// Fixed length of a Fragment header (RFC 8200 §4.5).
pub const FRAGMENT_LEN: usize = 8;

/// A view of a Fragment header (RFC 8200 §4.5):
///
/// ```text
/// | Next Header | Reserved | Fragment Offset (13) |Res|M| Identification (32) |
/// ```
///
/// `new_checked` guarantees at least [`FRAGMENT_LEN`] bytes; bytes after
/// the first 8 (the fragment's data) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<T: AsRef<[u8]>> {
    buffer: T,
}

mod frag_field {
    // RFC 8200 §4.5 "Fragment Header".
    pub const NEXT_HEADER: usize = 0;
    pub const OFFSET_M: usize = 2;
    pub const IDENT: usize = 4;
}

impl<T: AsRef<[u8]>> Fragment<T> {
    /// Errors: [`Error::Truncated`] below 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < FRAGMENT_LEN {
            return Err(Error::Truncated);
        }
        Ok(Fragment { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The first header of the fragmentable part of the original packet.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[frag_field::NEXT_HEADER]
    }

    /// Fragment Offset in bytes (the field counts 8-octet units, RFC 8200
    /// §4.5), a multiple of 8 up to 65528.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), frag_field::OFFSET_M) & !0x7
    }

    /// The M flag: "1 = more fragments; 0 = last fragment".
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), frag_field::OFFSET_M) & 1 != 0
    }

    #[inline]
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), frag_field::IDENT)
    }

    /// The three fields as a value.
    #[inline]
    pub fn info(&self) -> FragmentInfo {
        FragmentInfo {
            offset: self.frag_offset(),
            more: self.more_frags(),
            ident: self.ident(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fragment<T> {
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[frag_field::NEXT_HEADER] = nh;
    }

    /// Writes offset, M flag and identification, and zeroes both Reserved
    /// fields (RFC 8200 §4.5 "Initialized to zero for transmission").
    /// `info.offset` is rounded down to a multiple of 8.
    #[inline]
    pub fn set_info(&mut self, info: FragmentInfo) {
        let b = self.buffer.as_mut();
        b[1] = 0;
        put16(
            b,
            frag_field::OFFSET_M,
            (info.offset & !0x7) | u16::from(info.more),
        );
        put32(b, frag_field::IDENT, info.ident);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Fragment<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header, Ipv6RawExtHeader};
    use proptest::prelude::*;

    const SRC: &str = "2001:2::1";
    const DST: &str = "2001:2:0:ff::2";

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// One extension header for [`packet`]: its type and a generator of
    /// its bytes given the Next Header it carries.
    #[derive(Clone, Copy)]
    enum Ext {
        /// Hop-by-Hop, Routing or Destination Options with `n` 8-octet units.
        Raw(u8, usize),
        /// A Fragment header: offset in bytes, M, identification.
        Frag(u16, bool, u32),
    }

    impl Ext {
        fn kind(self) -> u8 {
            match self {
                Ext::Raw(k, _) => k,
                Ext::Frag(..) => NH_FRAGMENT,
            }
        }

        fn bytes(self, next: u8) -> Vec<u8> {
            match self {
                Ext::Raw(_, n) => {
                    // PadN filling (RFC 8200 §4.2): type 1, length, zeros.
                    let mut opts = vec![0u8; n * 8 - 2];
                    opts[0] = 1;
                    opts[1] = u8::try_from(n * 8 - 4).unwrap();
                    Ipv6RawExtHeader::new_raw(IpNumber(next), &opts)
                        .unwrap()
                        .to_bytes()
                        .to_vec()
                }
                // By hand (RFC 8200 §4.5: offset in the top 13 bits of
                // bytes 2..4, M the lowest): etherparse 0.16 puts M and the
                // offset's low bits elsewhere (etherparse issue #150).
                Ext::Frag(off, m, id) => {
                    let mut b = vec![next, 0];
                    b.extend(((off & !7) | u16::from(m)).to_be_bytes());
                    b.extend(id.to_be_bytes());
                    b
                }
            }
        }
    }

    /// An IPv6 packet written by etherparse: the fixed header, `exts` in
    /// order, then `upper` with `data`.
    fn packet(exts: &[Ext], upper: u8, data: &[u8]) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, e) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map_or(upper, |n| n.kind());
            chain.extend(e.bytes(next));
        }
        chain.extend(data);
        let h = Ipv6Header {
            traffic_class: 0xb8,
            flow_label: Ipv6FlowLabel::try_new(0xabcde).unwrap(),
            payload_length: u16::try_from(chain.len()).unwrap(),
            next_header: IpNumber(exts.first().map_or(upper, |e| e.kind())),
            hop_limit: 63,
            source: addr(SRC).octets(),
            destination: addr(DST).octets(),
        };
        let mut v = h.to_bytes().to_vec();
        v.extend(chain);
        v
    }

    #[test]
    fn parses_etherparse_header() {
        let mut v = packet(&[], PROTO_UDP, b"datagram");
        v.extend([0u8; 6]); // Ethernet padding
        let p = Packet::new_checked(&v[..]).unwrap();
        let (e, _) = Ipv6Header::from_slice(&v).unwrap();
        assert_eq!(p.traffic_class(), e.traffic_class);
        assert_eq!(p.flow_label(), e.flow_label.value());
        assert_eq!(p.flow_label(), 0xabcde);
        assert_eq!(p.payload_len(), e.payload_length);
        assert_eq!(p.next_header(), PROTO_UDP);
        assert_eq!(p.hop_limit(), 63);
        assert_eq!(p.src(), addr(SRC));
        assert_eq!(p.dst(), addr(DST));
        assert_eq!(p.src_u128(), 0x2001_0002_0000_0000_0000_0000_0000_0001);
        assert_eq!(p.dst_u128(), u128::from(addr(DST)));
        assert_eq!(p.header(), &v[..40]);
        assert_eq!(p.payload(), b"datagram");
        let u = p.upper_layer().unwrap();
        assert_eq!(
            u,
            UpperLayer {
                protocol: PROTO_UDP,
                offset: 40,
                len: 8,
                fragment: None
            }
        );
        assert_eq!(p.into_payload(), b"datagram");
    }

    #[test]
    fn rejects() {
        let good = packet(&[], PROTO_TCP, &[1, 2, 3, 4]);
        assert_eq!(Packet::new_checked(&good[..39]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&good[..43]), Err(Error::Truncated));
        assert!(Packet::new_checked(&good[..44]).is_ok());
        for v in [0x45, 0x05, 0xf0] {
            let mut b = good.clone();
            b[0] = v;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed), "{v:#x}");
        }
    }

    #[test]
    fn walks_chain_like_etherparse() {
        let chain = [
            Ext::Raw(NH_HOP_BY_HOP, 1),
            Ext::Raw(NH_DEST_OPTS, 2),
            Ext::Raw(NH_ROUTING, 1),
            // Atomic: etherparse 0.16 reads M and the offset's low bits
            // from the wrong places (see `Ext::bytes`), but agrees on zeros.
            Ext::Frag(0, false, 0xdead_beef),
            Ext::Raw(NH_DEST_OPTS, 3),
        ];
        for n in 0..=chain.len() {
            let v = packet(&chain[..n], PROTO_TCP, &[9; 20]);
            let p = Packet::new_checked(&v[..]).unwrap();
            let u = p.upper_layer().unwrap();
            let (_, ip_number, rest) =
                Ipv6Extensions::from_slice(IpNumber(p.next_header()), p.payload()).unwrap();
            assert_eq!(u.protocol, ip_number.0, "{n} headers");
            assert_eq!(u.protocol, PROTO_TCP);
            assert_eq!(u.offset, v.len() - rest.len());
            assert_eq!(u.len, 20);
            assert_eq!(&v[u.offset..u.offset + u.len], rest);
            let frag = (n >= 4).then_some(FragmentInfo {
                offset: 0,
                more: false,
                ident: 0xdead_beef,
            });
            assert_eq!(u.fragment, frag);
        }
    }

    #[test]
    fn fragments() {
        // A later fragment: the walk stops at the Fragment header, whose
        // Next Header (here Destination Options) is reported as is.
        let v = packet(
            &[Ext::Raw(NH_HOP_BY_HOP, 1), Ext::Frag(1448, false, 7)],
            NH_DEST_OPTS,
            &[0xff; 16],
        );
        let p = Packet::new_checked(&v[..]).unwrap();
        let u = p.upper_layer().unwrap();
        let f = FragmentInfo {
            offset: 1448,
            more: false,
            ident: 7,
        };
        assert_eq!(
            u,
            UpperLayer {
                protocol: NH_DEST_OPTS,
                offset: 56,
                len: 16,
                fragment: Some(f)
            }
        );
        assert!(!f.is_atomic() && !f.is_first());
        // 1448 bytes = 181 units: 181 << 3 = 0x05a8, M clear.
        assert_eq!(&v[48..56], &[NH_DEST_OPTS, 0, 0x05, 0xa8, 0, 0, 0, 7]);
        let fh = Fragment::new_checked(&v[48..]).unwrap();
        assert_eq!(fh.next_header(), NH_DEST_OPTS);
        assert_eq!(
            (fh.frag_offset(), fh.more_frags(), fh.ident()),
            (1448, false, 7)
        );
        assert_eq!(fh.info(), f);
        // The first fragment (offset 0, M set) walks on to the upper layer.
        let v = packet(&[Ext::Frag(0, true, 9)], PROTO_TCP, &[0; 20]);
        assert_eq!(&v[40..44], &[PROTO_TCP, 0, 0, 1]);
        let u = Packet::new_checked(&v[..]).unwrap().upper_layer().unwrap();
        assert_eq!((u.protocol, u.offset, u.len), (PROTO_TCP, 48, 20));
        let f = u.fragment.unwrap();
        assert!(f.is_first() && !f.is_atomic() && f.more);
        // An atomic fragment (RFC 6946) walks on to the upper layer.
        let v = packet(&[Ext::Frag(0, false, 1)], PROTO_UDP, &[0; 8]);
        let u = Packet::new_checked(&v[..]).unwrap().upper_layer().unwrap();
        assert_eq!((u.protocol, u.offset, u.len), (PROTO_UDP, 48, 8));
        assert!(u.fragment.unwrap().is_atomic());
        // A second Fragment header.
        let v = packet(
            &[Ext::Frag(0, true, 1), Ext::Frag(0, true, 2)],
            PROTO_UDP,
            &[0; 8],
        );
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Unsupported));
        assert_eq!(Fragment::new_checked(&v[40..47]), Err(Error::Truncated));
        // Setters write what etherparse reads; the Reserved fields are zeroed.
        let mut b = [0xffu8; 8];
        let mut fh = Fragment::new_checked(&mut b[..]).unwrap();
        fh.set_next_header(PROTO_TCP);
        fh.set_info(FragmentInfo {
            offset: 65535,
            more: true,
            ident: 0x0102_0304,
        });
        assert_eq!(b, [6, 0, 0xff, 0xf9, 1, 2, 3, 4]);
        let fh = Fragment::new_checked(&b[..]).unwrap();
        assert_eq!((fh.frag_offset(), fh.more_frags()), (65528, true));
    }

    #[test]
    fn walk_errors() {
        let hbh = Ext::Raw(NH_HOP_BY_HOP, 1);
        let dst = Ext::Raw(NH_DEST_OPTS, 1);
        // Hop-by-Hop not first (RFC 8200 §4.1).
        let v = packet(&[dst, hbh], PROTO_UDP, &[0; 8]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Malformed));
        // ESP and AH end the walk.
        for proto in [PROTO_ESP, PROTO_AH] {
            let v = packet(&[hbh], proto, &[0; 16]);
            let p = Packet::new_checked(&v[..]).unwrap();
            assert_eq!(p.upper_layer(), Err(Error::Unsupported));
        }
        // No Next Header: nothing follows; trailing bytes are reported.
        let v = packet(&[hbh], NH_NO_NEXT, &[0; 3]);
        let u = Packet::new_checked(&v[..]).unwrap().upper_layer().unwrap();
        assert_eq!((u.protocol, u.offset, u.len), (NH_NO_NEXT, 48, 3));
        // Eight extension headers walk, nine do not.
        let v = packet(&[dst; 8], PROTO_UDP, &[0; 8]);
        let u = Packet::new_checked(&v[..]).unwrap().upper_layer().unwrap();
        assert_eq!((u.protocol, u.offset), (PROTO_UDP, 40 + 64));
        let v = packet(&[dst; 9], PROTO_UDP, &[0; 8]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Unsupported));
        // A chain that runs past the Payload Length, at every cut, even
        // with the rest of the bytes still in the buffer.
        let v = packet(
            &[hbh, Ext::Raw(NH_ROUTING, 2), Ext::Frag(0, true, 3)],
            PROTO_UDP,
            &[],
        );
        for cut in 0..v.len() - 40 {
            let mut b = v.clone();
            b[4..6].copy_from_slice(&u16::try_from(cut).unwrap().to_be_bytes());
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.upper_layer(), Err(Error::Truncated), "cut at {cut}");
            assert_eq!(
                Packet::new_checked(&v[..40 + cut]).err(),
                Some(Error::Truncated)
            );
        }
        // An empty payload with a Hop-by-Hop header (a Jumbogram's shape).
        let mut b = v[..40].to_vec();
        b[4..6].copy_from_slice(&[0, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
    }

    #[test]
    fn setters_and_resize() {
        let mut v = packet(&[], PROTO_UDP, &[7; 12]);
        v.extend([0u8; 4]);
        let mut p = Packet::new_checked(&mut v[..]).unwrap();
        p.set_traffic_class(0x2e);
        p.set_flow_label(0xfff1_2345);
        p.set_hop_limit(1);
        p.set_next_header(PROTO_TCP);
        p.set_src(addr("2001:2::a"));
        p.set_dst(addr("2001:2::b"));
        assert_eq!(p.payload_mut().len(), 12);
        p.set_payload_len(1000);
        assert_eq!(p.payload_len(), 16, "clamped to the buffer");
        p.set_payload_len(4);
        let (e, rest) = Ipv6Header::from_slice(&v).unwrap();
        assert_eq!((e.traffic_class, e.flow_label.value()), (0x2e, 0x12345));
        assert_eq!(
            (e.hop_limit, e.next_header, e.payload_length),
            (1, IpNumber::TCP, 4)
        );
        assert_eq!(
            (e.source_addr(), e.destination_addr()),
            (addr("2001:2::a"), addr("2001:2::b"))
        );
        assert_eq!(rest.len(), 16);
        assert_eq!(v[0] >> 4, 6, "version kept");
        // new_resized: the Payload Length follows the buffer.
        let mut cut = v[..50].to_vec();
        let p = Packet::new_resized(&mut cut[..]).unwrap();
        assert_eq!((p.payload_len(), p.into_payload_mut().len()), (10, 10));
        assert_eq!(
            Packet::new_resized(&mut [0x60u8; 39][..]),
            Err(Error::Truncated)
        );
        let mut big = vec![0u8; 40 + 65536];
        big[0] = 0x60;
        assert_eq!(Packet::new_resized(&mut big[..]), Err(Error::Malformed));
        assert!(Packet::new_resized(&mut big[..40 + 65535]).is_ok());
        let mut v4 = v.clone();
        v4[0] = 0x45;
        assert_eq!(Packet::new_resized(&mut v4[..]), Err(Error::Malformed));
    }

    #[test]
    fn emit_matches_etherparse() {
        let r = Repr {
            src: addr(SRC),
            dst: addr(DST),
            next_header: PROTO_ICMPV6,
            hop_limit: 255,
            payload_len: 24,
        };
        assert_eq!((r.header_len(), r.buffer_len()), (40, 64));
        let mut buf = [0xaau8; 70];
        let p = r.emit(&mut buf).unwrap();
        assert_eq!(p.payload().len(), 24);
        assert_eq!(Repr::parse(&p), Ok(r));
        let (e, _) = Ipv6Header::from_slice(&buf).unwrap();
        let want = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 24,
            next_header: IpNumber::IPV6_ICMP,
            hop_limit: 255,
            source: addr(SRC).octets(),
            destination: addr(DST).octets(),
        };
        assert_eq!(e, want);
        let mut short = [0u8; 63];
        assert_eq!(r.emit(&mut short), Err(Error::Truncated));
        assert_eq!(short, [0u8; 63], "nothing written");
    }

    fn check_all(b: &[u8]) {
        let Ok(p) = Packet::new_checked(b) else {
            return;
        };
        let _ = (
            p.traffic_class(),
            p.flow_label(),
            p.hop_limit(),
            p.src(),
            p.dst(),
        );
        let end = 40 + usize::from(p.payload_len());
        assert!(end <= b.len());
        assert_eq!(p.payload(), &b[40..end]);
        assert_eq!(p.src_u128(), u128::from(p.src()));
        if let Ok(u) = p.upper_layer() {
            assert!(u.offset >= 40 && u.offset + u.len == end);
        }
        let r = Repr::parse(&p).unwrap();
        let mut out = vec![0u8; r.buffer_len()];
        let q = r.emit(&mut out).unwrap();
        assert_eq!(Repr::parse(&q), Ok(r));
        let mut v = b.to_vec();
        let mut p = Packet::new_checked(&mut v[..]).unwrap();
        p.set_payload_len(u16::MAX);
        assert!(40 + usize::from(p.payload_len()) <= b.len());
        let _ = p.payload_mut();
        if b.len() >= 8 {
            let f = Fragment::new_checked(b).unwrap();
            assert_eq!(f.frag_offset() % 8, 0);
            let _ = (f.next_header(), f.more_frags(), f.ident());
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..300),
                        chain in proptest::collection::vec(prop_oneof![Just(0u8), Just(43), Just(44), Just(60), any::<u8>()], 0..12)) {
            check_all(&b);
            // A valid-looking fixed header and a chain of extension-header
            // numbers, so that the walk goes deep.
            if b.len() >= 40 {
                b[0] = 0x60;
                let l = u16::try_from(b.len() - 40).unwrap();
                b[4..6].copy_from_slice(&l.to_be_bytes());
                b[6] = chain.first().copied().unwrap_or(PROTO_TCP);
                let mut at = 40;
                for nh in chain.iter().skip(1) {
                    if at + 2 > b.len() { break; }
                    b[at] = *nh;
                    b[at + 1] &= 1;
                    at += (usize::from(b[at + 1]) + 1) * 8;
                }
                check_all(&b);
            }
        }

        #[test]
        fn truncations_never_panic(n in 0usize..4, data in 0usize..20) {
            let chain = [Ext::Raw(NH_HOP_BY_HOP, 1), Ext::Raw(NH_ROUTING, 2), Ext::Frag(0, true, 1), Ext::Raw(NH_DEST_OPTS, 1)];
            let v = packet(&chain[..n], PROTO_UDP, &vec![1; data]);
            for cut in 0..=v.len() {
                check_all(&v[..cut]);
            }
        }

        /// parse(emit(r)) == r, and the bytes are what etherparse reads.
        #[test]
        fn repr_round_trip(src in any::<u128>(), dst in any::<u128>(), nh in any::<u8>(), hl in any::<u8>(), payload_len in 0u16..200, extra in 0usize..8) {
            let r = Repr { src: src.into(), dst: dst.into(), next_header: nh, hop_limit: hl, payload_len };
            let mut buf = vec![0x11u8; r.buffer_len() + extra];
            let p = r.emit(&mut buf).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            let (e, rest) = Ipv6Header::from_slice(&buf).unwrap();
            prop_assert_eq!((e.source, e.destination), (src.to_be_bytes(), dst.to_be_bytes()));
            prop_assert_eq!((e.next_header.0, e.hop_limit, e.payload_length), (nh, hl, payload_len));
            prop_assert_eq!(rest.len(), usize::from(payload_len) + extra);
        }
    }
}
