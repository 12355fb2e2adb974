//! TCP headers (RFC 9293, formerly RFC 793).

use super::checksum;
use super::ipv4::PROTO_TCP;
use super::{be16, be32, put16, put32, Error, Ipv4Addr, Result};

/// Header without options (data offset 5).
pub const MIN_HEADER_LEN: usize = 20;

// RFC 9293 §3.1 "Control bits" (low byte of the flags word; ECE/CWR from RFC 3168).
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// Option kinds (RFC 9293 §3.1 "Options", §3.2 "Specific Option Definitions").
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;

pub(crate) mod field {
    // RFC 9293 §3.1 "Header Format".
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// A view of a TCP segment.
///
/// `new_checked` guarantees `20 <= header_len() <= buffer length`. The view
/// covers the whole buffer: build it over exactly the IP payload
/// (`ipv4::Packet::payload()`), because the checksum and
/// [`payload`](Packet::payload) use the buffer length as the segment length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] below 20 bytes or below the data offset;
    /// [`Error::Malformed`] for a data offset < 5 (RFC 9293 §3.1 "Data
    /// Offset").
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hlen = usize::from(b[field::DATA_OFF] >> 4) * 4;
        if hlen < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hlen > b.len() {
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

    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Data offset * 4, in `20..=60`.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The control bits [`FIN`] .. [`CWR`] (the NS/AE bit is not included).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (bytes `20..header_len()`), possibly empty.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Bytes after the header, to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Offset in the buffer of the 2-byte MSS value, if the option list holds
    /// a well-formed MSS option before any malformed option or EOL.
    fn mss_value_offset(&self) -> Option<usize> {
        let opts = self.options();
        let mut i = 0;
        // RFC 9293 §3.1: options are EOL, NOP, or kind-length-data; an
        // implementation MUST handle an illegal option length without
        // crashing (MUST-7 area): any inconsistency ends the walk with None.
        while let Some(&kind) = opts.get(i) {
            match kind {
                OPT_EOL => return None,
                OPT_NOP => i += 1,
                _ => {
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == OPT_MSS {
                        // RFC 9293 §3.2: MSS has length 4.
                        return (len == OPT_MSS_LEN).then_some(field::OPTIONS + i + 2);
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// The Maximum Segment Size option (RFC 9293 §3.7.1), if present and the
    /// option list up to it is well formed. Never panics.
    #[inline]
    pub fn mss(&self) -> Option<u16> {
        let at = self.mss_value_offset()?;
        Some(be16(self.buffer.as_ref(), at))
    }

    /// Verifies the checksum over pseudo-header + the whole buffer
    /// (RFC 9293 §3.1 "Checksum"). False if the buffer exceeds 65535 bytes.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let seg = self.buffer.as_ref();
        let Ok(len) = u16::try_from(seg.len()) else {
            return false;
        };
        let s = checksum::pseudo_header_v4(src, dst, PROTO_TCP, len) + checksum::sum(seg, 0);
        checksum::fold(s) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Does not update the checksum (see [`checksum::update_u16`]).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_seq(&mut self, seq: u32) {
        put32(self.buffer.as_mut(), field::SEQ, seq);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_ack(&mut self, ack: u32) {
        put32(self.buffer.as_mut(), field::ACK, ack);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_window(&mut self, window: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, window);
    }

    #[inline]
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Mutable bytes after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }

    /// Rewrites the MSS option value; returns the old value, or `None` (and
    /// changes nothing) if there is no well-formed MSS option.
    ///
    /// Does **not** update the checksum: that is the caller's job, because
    /// with checksum offload (`CHECKSUM_PARTIAL`) the field must stay as it
    /// is. For a complete checksum use
    /// [`set_mss_update_checksum`](Packet::set_mss_update_checksum); the
    /// value may sit at an odd offset, where a plain `update_u16` is wrong.
    #[inline]
    pub fn set_mss(&mut self, mss: u16) -> Option<u16> {
        let at = self.mss_value_offset()?;
        let old = be16(self.buffer.as_ref(), at);
        put16(self.buffer.as_mut(), at, mss);
        Some(old)
    }

    /// [`set_mss`](Packet::set_mss) plus the RFC 1624 incremental update of a
    /// complete checksum, taking care of an MSS value at an odd offset
    /// (RFC 1071 §2 (B): byte-swapped words at odd offsets). Returns the old
    /// MSS.
    #[inline]
    pub fn set_mss_update_checksum(&mut self, mss: u16) -> Option<u16> {
        let at = self.mss_value_offset()?;
        let old = self.set_mss(mss)?;
        let c = if at % 2 == 0 {
            checksum::update_u16(self.checksum(), old, mss)
        } else {
            checksum::update_u16(self.checksum(), old.swap_bytes(), mss.swap_bytes())
        };
        self.set_checksum(c);
        Some(old)
    }

    /// Computes and stores the checksum over pseudo-header + the whole buffer
    /// (RFC 9293 §3.1). Leaves it unchanged if the buffer exceeds 65535 bytes
    /// (which no IPv4 payload can).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let Ok(len) = u16::try_from(self.buffer.as_ref().len()) else {
            return;
        };
        self.set_checksum(0);
        let s = checksum::pseudo_header_v4(src, dst, PROTO_TCP, len)
            + checksum::sum(self.buffer.as_ref(), 0);
        self.set_checksum(!checksum::fold(s));
    }
}

/// The fields of a TCP header that podlb reads and writes: the fixed
/// header, and of the options only the MSS (RFC 9293 §3.7.1). The urgent
/// pointer is emitted as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    /// Acknowledgment number (meaningful with [`ACK`]).
    pub ack: u32,
    /// Control bits [`FIN`] .. [`CWR`].
    pub flags: u8,
    pub window: u16,
    /// The MSS option, emitted as the only option.
    pub mss: Option<u16>,
}

impl Repr {
    /// Reads a checked segment's header; options other than a well-formed
    /// MSS are not represented. The checksum is not verified (see
    /// [`Packet::verify_checksum`]).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            mss: p.mss(),
        })
    }

    /// 20, or 24 with the MSS option.
    #[inline]
    pub const fn header_len(&self) -> usize {
        if self.mss.is_some() {
            MIN_HEADER_LEN + OPT_MSS_LEN
        } else {
            MIN_HEADER_LEN
        }
    }

    /// Writes the header into `buf[..header_len()]` with checksum 0 and
    /// returns the view over `buf`, whose rest is the payload (so `buf` must
    /// be exactly the segment). Put the payload in, then call
    /// [`Packet::fill_checksum`]. Errors: [`Error::Truncated`] if `buf` is
    /// shorter than the header (nothing written).
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        let hlen = self.header_len();
        let Some(b) = buf.get_mut(..hlen) else {
            return Err(Error::Truncated);
        };
        put16(b, field::SRC_PORT, self.src_port);
        put16(b, field::DST_PORT, self.dst_port);
        put32(b, field::SEQ, self.seq);
        put32(b, field::ACK, self.ack);
        // Data offset in 32-bit words (RFC 9293 §3.1), reserved bits zero.
        b[field::DATA_OFF] = if self.mss.is_some() { 6 << 4 } else { 5 << 4 };
        b[field::FLAGS] = self.flags;
        put16(b, field::WINDOW, self.window);
        put16(b, field::CHECKSUM, 0);
        put16(b, field::URGENT, 0);
        if let Some(mss) = self.mss {
            // RFC 9293 §3.2: kind 2, length 4, the value.
            b[field::OPTIONS] = OPT_MSS;
            b[field::OPTIONS + 1] = 4;
            put16(b, field::OPTIONS + 2, mss);
        }
        Ok(Packet { buffer: buf })
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4;
    use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};
    use proptest::prelude::*;

    const SRC: [u8; 4] = [198, 18, 0, 1];
    const DST: [u8; 4] = [198, 18, 0, 2];

    fn segment(opts: &[u8], flags: (bool, bool, bool), payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(SRC, DST, 64)
            .tcp(40000, 443, 0x0102_0304, 29200)
            .options_raw(opts)
            .unwrap();
        if flags.0 {
            b = b.syn();
        }
        if flags.1 {
            b = b.ack(0xa0b0_c0d0);
        }
        if flags.2 {
            b = b.fin().psh();
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v.split_off(20)
    }

    #[test]
    fn parses_etherparse_segment() {
        let mut v = Vec::new();
        PacketBuilder::ipv4(SRC, DST, 64)
            .tcp(40000, 443, 0x0102_0304, 29200)
            .syn()
            .ack(77)
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(7),
            ])
            .unwrap()
            .write(&mut v, b"data!")
            .unwrap();
        let ip = ipv4::Packet::new_checked(&v[..]).unwrap();
        let t = Packet::new_checked(ip.payload()).unwrap();
        let (e, rest) = TcpHeader::from_slice(ip.payload()).unwrap();
        assert_eq!(t.src_port(), e.source_port);
        assert_eq!(t.dst_port(), e.destination_port);
        assert_eq!(t.seq(), e.sequence_number);
        assert_eq!(t.ack(), e.acknowledgment_number);
        assert_eq!(t.header_len(), e.header_len());
        assert_eq!(t.flags(), SYN | ACK);
        assert_eq!(t.window(), e.window_size);
        assert_eq!(t.checksum(), e.checksum);
        assert_eq!(t.options(), e.options.as_slice());
        assert_eq!(t.payload(), rest);
        assert_eq!(t.payload(), b"data!");
        assert_eq!(t.mss(), Some(1460));
        assert!(t.verify_checksum(ip.src(), ip.dst()));
        assert!(!t.verify_checksum(ip.src(), Ipv4Addr::new(198, 18, 0, 3)));
    }

    #[test]
    fn flags_bits() {
        let s = segment(&[], (true, false, false), &[]);
        assert_eq!(Packet::new_checked(&s[..]).unwrap().flags(), SYN);
        let s = segment(&[], (false, true, true), &[]);
        assert_eq!(
            Packet::new_checked(&s[..]).unwrap().flags(),
            ACK | FIN | PSH
        );
    }

    #[test]
    fn mss_walk() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (&[2, 4, 5, 0xb4], Some(1460)),
            (&[1, 2, 4, 5, 0xb4, 1, 1, 1], Some(1460)), // odd offset
            (&[1, 1, 3, 3, 7, 2, 4, 0x23, 0x28, 0, 0, 0], Some(9000)),
            (&[0, 0, 0, 0, 2, 4, 5, 0xb4], None), // after EOL
            (&[3, 0, 2, 4, 5, 0xb4, 0, 0], None), // zero length
            (&[3, 1, 2, 4, 5, 0xb4, 0, 0], None), // length 1
            (&[8, 20, 2, 4], None),               // length past end
            (&[2, 3, 5, 0, 0, 0, 0, 0], None),    // bad MSS length
            (&[1, 1, 1, 2], None),                // kind without length
            (&[1, 1, 1, 1], None),
        ];
        for &(opts, want) in cases {
            let mut s = segment(opts, (true, false, false), b"xyz");
            let t = Packet::new_checked(&s[..]).unwrap();
            assert_eq!(t.mss(), want, "{opts:?}");
            let mut t = Packet::new_checked(&mut s[..]).unwrap();
            assert_eq!(t.set_mss_update_checksum(1200), want, "{opts:?}");
            if want.is_some() {
                assert_eq!(t.mss(), Some(1200));
            }
            let (e, _) = TcpHeader::from_slice(&s).unwrap();
            let check = e.calc_checksum_ipv4_raw(SRC, DST, b"xyz").unwrap();
            assert_eq!(e.checksum, check, "{opts:?}");
        }
    }

    #[test]
    fn set_mss_leaves_checksum() {
        let mut s = segment(&[2, 4, 5, 0xb4], (true, false, false), &[]);
        let mut t = Packet::new_checked(&mut s[..]).unwrap();
        let c = t.checksum();
        assert_eq!(t.set_mss(1400), Some(1460));
        assert_eq!(t.checksum(), c);
        assert!(!t.verify_checksum(SRC.into(), DST.into()));
        t.fill_checksum(SRC.into(), DST.into());
        assert!(t.verify_checksum(SRC.into(), DST.into()));
    }

    #[test]
    fn repr_emit_short_buffer() {
        let r = Repr {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: SYN,
            window: 5,
            mss: Some(1460),
        };
        let mut b = [0u8; 23];
        assert_eq!(r.emit(&mut b).err(), Some(Error::Truncated));
        assert_eq!(b, [0u8; 23], "nothing written");
        let t = r.emit(&mut [0u8; 24]).map(|t| Repr::parse(&t));
        assert_eq!(t, Ok(Ok(r)));
    }

    #[test]
    fn rejects() {
        let s = segment(&[1, 1, 1, 1], (true, false, false), &[]);
        assert_eq!(Packet::new_checked(&s[..19]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&s[..23]), Err(Error::Truncated));
        assert!(Packet::new_checked(&s[..24]).is_ok());
        let mut b = s.clone();
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed));
    }

    proptest! {
        /// Full-NAT rewrite (addresses in the pseudo-header, ports in the
        /// header) with incremental updates verifies with etherparse.
        #[test]
        fn nat_rewrite_incremental(
            sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(),
            new_src in any::<u32>(), new_dst in any::<u32>(),
            new_sp in any::<u16>(), new_dp in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            mss in proptest::option::of(any::<u16>()), new_mss in any::<u16>(),
        ) {
            let mut v = Vec::new();
            let opts: Vec<TcpOptionElement> =
                mss.into_iter().map(TcpOptionElement::MaximumSegmentSize).collect();
            PacketBuilder::ipv4(SRC, DST, 64)
                .tcp(sp, dp, seq, 1000)
                .options(&opts)
                .unwrap()
                .write(&mut v, &payload)
                .unwrap();
            let seg = &mut v[20..];
            let mut t = Packet::new_checked(&mut *seg).unwrap();
            prop_assert!(t.verify_checksum(SRC.into(), DST.into()));
            let mut c = t.checksum();
            c = checksum::update_u32(c, u32::from_be_bytes(SRC), new_src);
            c = checksum::update_u32(c, u32::from_be_bytes(DST), new_dst);
            c = checksum::update_u16(c, t.src_port(), new_sp);
            c = checksum::update_u16(c, t.dst_port(), new_dp);
            t.set_src_port(new_sp);
            t.set_dst_port(new_dp);
            t.set_checksum(c);
            prop_assert_eq!(t.set_mss_update_checksum(new_mss), mss);
            let (ns, nd) = (Ipv4Addr::from(new_src), Ipv4Addr::from(new_dst));
            prop_assert!(t.verify_checksum(ns, nd));
            let (e, rest) = TcpHeader::from_slice(seg).unwrap();
            let expect = e.calc_checksum_ipv4_raw(new_src.to_be_bytes(), new_dst.to_be_bytes(), rest).unwrap();
            prop_assert_eq!(e.checksum, expect);
        }

        /// parse(emit(r)) == r, and etherparse reads the fields back and
        /// agrees with the checksum.
        #[test]
        fn repr_round_trip(sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
                           flags in any::<u8>(), window in any::<u16>(), mss in proptest::option::of(any::<u16>()),
                           payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let r = Repr { src_port: sp, dst_port: dp, seq, ack, flags, window, mss };
            let mut buf = vec![0xeeu8; r.header_len() + payload.len()];
            let mut t = r.emit(&mut buf).unwrap();
            t.payload_mut().copy_from_slice(&payload);
            t.fill_checksum(SRC.into(), DST.into());
            prop_assert_eq!(Repr::parse(&t), Ok(r));
            prop_assert_eq!(t.payload(), &payload[..]);
            let (e, rest) = TcpHeader::from_slice(&buf).unwrap();
            prop_assert_eq!(
                (e.source_port, e.destination_port, e.sequence_number, e.acknowledgment_number, e.window_size),
                (sp, dp, seq, ack, window)
            );
            prop_assert_eq!((e.fin, e.syn, e.rst, e.psh), (flags & FIN != 0, flags & SYN != 0, flags & RST != 0, flags & PSH != 0));
            prop_assert_eq!((e.ack, e.urg, e.ece, e.cwr), (flags & ACK != 0, flags & URG != 0, flags & ECE != 0, flags & CWR != 0));
            let opts: Vec<_> = e.options_iterator().map(|o| o.unwrap()).collect();
            prop_assert_eq!(opts, mss.map(TcpOptionElement::MaximumSegmentSize).into_iter().collect::<Vec<_>>());
            prop_assert_eq!(e.checksum, e.calc_checksum_ipv4_raw(SRC, DST, rest).unwrap());
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_all(&b);
            let mut b = b;
            if b.len() > 12 {
                b[12] = (b[12] & 0xf0).max(0x50);
            }
            check_all(&b);
        }

        #[test]
        fn truncations_never_panic(payload in 0usize..30) {
            let s = segment(&[1, 2, 4, 5, 0xb4, 3, 3, 7], (true, true, false), &vec![9; payload]);
            for n in 0..=s.len() {
                check_all(&s[..n]);
            }
        }
    }

    fn check_all(b: &[u8]) {
        if let Ok(t) = Packet::new_checked(b) {
            let _ = (t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags());
            let _ = (t.window(), t.checksum(), t.urgent(), t.mss());
            let _ = t.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
            assert_eq!(20 + t.options().len() + t.payload().len(), b.len());
            let mut v = b.to_vec();
            let mut t = Packet::new_checked(&mut v[..]).unwrap();
            let _ = t.set_mss_update_checksum(536);
            t.fill_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
            assert!(t.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST));
            let _ = t.payload_mut();
        }
    }
}
