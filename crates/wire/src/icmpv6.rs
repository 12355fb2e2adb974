//! ICMP for IPv6 (RFC 4443). Neighbor Discovery messages, which are
//! ICMPv6 too, have their own views in [`ndp`](crate::ndp).

use super::checksum;
use super::ipv6::PROTO_ICMPV6;
use super::{be16, be32, put16, put32, Error, Ipv6Addr, Result};

/// Type, code, checksum and the first 32 bits of the message body, which
/// every message podlb reads has (RFC 4443 §3, §4; RFC 4861 §4).
pub const HEADER_LEN: usize = 8;

/// The longest ICMPv6 error message: RFC 4443 §2.4 (c) "as much of invoking
/// packet as possible without the ICMPv6 packet exceeding the minimum IPv6
/// MTU" (1280 bytes, RFC 8200 §5), minus the 40-byte IPv6 header.
pub const MAX_ERROR_LEN: usize = 1280 - 40;

// RFC 4443 §2.1 "Message General Format": error messages have types
// 0..=127, informational messages 128..=255.
pub const TYPE_DEST_UNREACH: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_PARAM_PROBLEM: u8 = 4;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
/// Router Solicitation (RFC 4861 §4.1).
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
/// Router Advertisement (RFC 4861 §4.2).
pub const TYPE_ROUTER_ADVERT: u8 = 134;
/// Neighbor Solicitation (RFC 4861 §4.3).
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor Advertisement (RFC 4861 §4.4).
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Redirect (RFC 4861 §4.5).
pub const TYPE_REDIRECT: u8 = 137;

// Destination Unreachable codes (RFC 4443 §3.1).
pub const CODE_NO_ROUTE: u8 = 0;
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
pub const CODE_ADDR_UNREACH: u8 = 3;
pub const CODE_PORT_UNREACH: u8 = 4;
// Time Exceeded codes (RFC 4443 §3.3).
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;
pub const CODE_REASSEMBLY_TIME_EXCEEDED: u8 = 1;
// Parameter Problem codes (RFC 4443 §3.4).
pub const CODE_ERRONEOUS_HEADER: u8 = 0;
pub const CODE_UNRECOGNIZED_NEXT_HEADER: u8 = 1;
pub const CODE_UNRECOGNIZED_OPTION: u8 = 2;

mod field {
    // RFC 4443 §2.1: type, code, checksum, message body.
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const BODY: usize = 4;
    // RFC 4443 §3.2 MTU, §3.4 Pointer (both 32 bits), §4.1/§4.2 echo
    // identifier and sequence number.
    pub const WORD: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
}

/// A view of an ICMPv6 message.
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes. The message is
/// the whole buffer: build the view over exactly the upper-layer data
/// ([`UpperLayer`](crate::ipv6::UpperLayer) `offset..offset + len`), as the
/// checksum covers all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] below 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Everything after the checksum (RFC 4443 §2.1 "Message Body"): bytes
    /// `4..`.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }

    /// Bytes after the first 8: echo data, or for error messages the
    /// invoking packet (RFC 4443 §3).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The MTU of a Packet Too Big message (RFC 4443 §3.2); bytes 4..8 of
    /// any message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::WORD)
    }

    /// The Pointer of a Parameter Problem message (RFC 4443 §3.4): the
    /// offset in the invoking packet of the error; bytes 4..8 of any message.
    #[inline]
    pub fn pointer(&self) -> u32 {
        be32(self.buffer.as_ref(), field::WORD)
    }

    /// Identifier of an echo request/reply (RFC 4443 §4.1; bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Sequence number of an echo request/reply (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// An error message: RFC 4443 §2.1 "error messages are identified as
    /// such by a zero in the high-order bit of their message Type field".
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type() & 0x80 == 0
    }

    /// The pseudo-header (RFC 8200 §8.1, RFC 4443 §2.3: Next Header 58)
    /// plus the whole message, not folded; `None` for a buffer longer than
    /// the 32-bit Upper-Layer Packet Length can say.
    #[inline]
    fn full_sum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Option<u32> {
        let b = self.buffer.as_ref();
        let len = u32::try_from(b.len()).ok()?;
        Some(checksum::pseudo_header_v6(src, dst, PROTO_ICMPV6, len) + checksum::sum(b, 0))
    }

    /// RFC 4443 §2.3: the checksum over the IPv6 pseudo-header and the whole
    /// message is correct (the one's-complement sum, checksum included, is
    /// all ones). `src` and `dst` are the IPv6 header's (the final
    /// destination if there is a Routing header).
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.full_sum(src, dst)
            .is_some_and(|s| checksum::fold(s) == 0xffff)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Does not update the checksum (type and code share the first word).
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    #[inline]
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Sets bytes 4..8: the MTU of Packet Too Big, the Pointer of Parameter
    /// Problem, zero ("Unused") for the other errors. Does not update the
    /// checksum.
    #[inline]
    pub fn set_word(&mut self, w: u32) {
        put32(self.buffer.as_mut(), field::WORD, w);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
    }

    /// Does not update the checksum.
    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQ, seq);
    }

    /// Mutable bytes `8..`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Mutable bytes `4..`.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY..]
    }

    /// Computes and stores the checksum over the pseudo-header and the whole
    /// message (RFC 4443 §2.3). Unlike UDP, a computed 0 is sent as 0. A
    /// buffer longer than `u32::MAX` bytes gets checksum 0 (and does not
    /// verify).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = self.full_sum(src, dst).map_or(0, |s| !checksum::fold(s));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The ICMPv6 messages podlb parses and emits (RFC 4443 §3, §4); Neighbor
/// Discovery has its own Reprs in [`ndp`](crate::ndp). `data` is the echo
/// data or, for an error, the invoking packet: a caller emitting an error
/// keeps `data` within [`MAX_ERROR_LEN`]` - 8` bytes (RFC 4443 §2.4 (c)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr<'a> {
    /// RFC 4443 §3.1.
    DestUnreachable { code: u8, data: &'a [u8] },
    /// RFC 4443 §3.2: `mtu` of the next-hop link.
    PacketTooBig { mtu: u32, data: &'a [u8] },
    /// RFC 4443 §3.3.
    TimeExceeded { code: u8, data: &'a [u8] },
    /// RFC 4443 §3.4: `pointer` is the offset of the error in `data`.
    ParamProblem {
        code: u8,
        pointer: u32,
        data: &'a [u8],
    },
    /// RFC 4443 §4.1.
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// RFC 4443 §4.2.
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads one of the messages above; `data` borrows the packet's bytes
    /// `8..`. The checksum is not verified (see [`Packet::verify_checksum`]).
    /// Errors: [`Error::Unsupported`] for other types (NDP included);
    /// [`Error::Malformed`] for a Packet Too Big or an echo with a code
    /// other than 0 (RFC 4443 §3.2, §4.1, §4.2 "Code 0"). Error codes of
    /// the other types are not checked (RFC 4443 §3.1 lists codes to come).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &'a Packet<T>) -> Result<Repr<'a>> {
        let (code, data) = (p.code(), p.payload());
        let (ident, seq) = (p.echo_ident(), p.echo_seq());
        let zero_code = || {
            if code == 0 {
                Ok(())
            } else {
                Err(Error::Malformed)
            }
        };
        Ok(match p.msg_type() {
            TYPE_DEST_UNREACH => Repr::DestUnreachable { code, data },
            TYPE_PACKET_TOO_BIG => {
                zero_code()?;
                Repr::PacketTooBig { mtu: p.mtu(), data }
            }
            TYPE_TIME_EXCEEDED => Repr::TimeExceeded { code, data },
            TYPE_PARAM_PROBLEM => Repr::ParamProblem {
                code,
                pointer: p.pointer(),
                data,
            },
            TYPE_ECHO_REQUEST => {
                zero_code()?;
                Repr::EchoRequest { ident, seq, data }
            }
            TYPE_ECHO_REPLY => {
                zero_code()?;
                Repr::EchoReply { ident, seq, data }
            }
            _ => return Err(Error::Unsupported),
        })
    }

    /// (type, code, bytes 4..8, data).
    #[inline]
    fn fields(&self) -> (u8, u8, u32, &'a [u8]) {
        let echo = |ident: u16, seq: u16| u32::from(ident) << 16 | u32::from(seq);
        match *self {
            Repr::DestUnreachable { code, data } => (TYPE_DEST_UNREACH, code, 0, data),
            Repr::PacketTooBig { mtu, data } => (TYPE_PACKET_TOO_BIG, 0, mtu, data),
            Repr::TimeExceeded { code, data } => (TYPE_TIME_EXCEEDED, code, 0, data),
            Repr::ParamProblem {
                code,
                pointer,
                data,
            } => (TYPE_PARAM_PROBLEM, code, pointer, data),
            Repr::EchoRequest { ident, seq, data } => {
                (TYPE_ECHO_REQUEST, 0, echo(ident, seq), data)
            }
            Repr::EchoReply { ident, seq, data } => (TYPE_ECHO_REPLY, 0, echo(ident, seq), data),
        }
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header + data: the Upper-Layer Packet Length.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.fields().3.len()
    }

    /// Writes the message into `buf[..buffer_len()]` with its checksum for
    /// an IPv6 packet from `src` to `dst` (RFC 4443 §2.3), and returns the
    /// view over exactly those bytes. Errors: [`Error::Truncated`] if `buf`
    /// is shorter (nothing written).
    #[inline]
    pub fn emit<'b>(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        buf: &'b mut [u8],
    ) -> Result<Packet<&'b mut [u8]>> {
        let (msg_type, code, word, data) = self.fields();
        let b = buf.get_mut(..self.buffer_len()).ok_or(Error::Truncated)?;
        let mut p = Packet { buffer: b };
        p.set_msg_type(msg_type);
        p.set_code(code);
        p.set_word(word);
        p.payload_mut().copy_from_slice(data);
        p.fill_checksum(src, dst);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv6;
    use etherparse::{
        icmpv6::{
            DestUnreachableCode, ParameterProblemCode, ParameterProblemHeader, TimeExceededCode,
        },
        IcmpEchoHeader, Icmpv6Header, Icmpv6Slice, Icmpv6Type, PacketBuilder,
    };
    use proptest::prelude::*;

    fn src() -> Ipv6Addr {
        "2001:2::1".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "2001:2:0:1::2".parse().unwrap()
    }

    /// An IPv6 packet carrying `ty` and `data`, written by etherparse.
    fn message(ty: Icmpv6Type, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv6(src().octets(), dst().octets(), 64)
            .icmpv6(ty)
            .write(&mut v, data)
            .unwrap();
        v
    }

    #[test]
    fn parses_etherparse_echo() {
        let ty = Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 0x1234, seq: 7 });
        let v = message(ty, b"ping data");
        let ip = ipv6::Packet::new_checked(&v[..]).unwrap();
        let u = ip.upper_layer().unwrap();
        assert_eq!(u.protocol, ipv6::PROTO_ICMPV6);
        let p = Packet::new_checked(&v[u.offset..u.offset + u.len]).unwrap();
        let (e, rest) = Icmpv6Header::from_slice(ip.payload()).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), e.checksum);
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 7));
        assert_eq!(p.payload(), rest);
        assert_eq!(p.body(), &ip.payload()[4..]);
        assert!(!p.is_error());
        assert!(p.verify_checksum(src(), dst()));
        assert!(!p.verify_checksum(src(), "2001:2::4".parse().unwrap()));
        assert_eq!(
            Repr::parse(&p),
            Ok(Repr::EchoRequest {
                ident: 0x1234,
                seq: 7,
                data: b"ping data"
            })
        );
        let s = Icmpv6Slice::from_slice(ip.payload()).unwrap();
        assert!(s.is_checksum_valid(src().octets(), dst().octets()));
    }

    #[test]
    fn errors_match_etherparse() {
        let quote = [0x60u8, 0, 0, 0, 0, 8, 17, 64, 1, 2, 3, 4, 5, 6, 7, 8];
        let cases = [
            (
                Icmpv6Type::PacketTooBig { mtu: 1280 },
                Repr::PacketTooBig {
                    mtu: 1280,
                    data: &quote[..],
                },
            ),
            (
                Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
                Repr::DestUnreachable {
                    code: CODE_PORT_UNREACH,
                    data: &quote[..],
                },
            ),
            (
                Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
                Repr::TimeExceeded {
                    code: CODE_HOP_LIMIT_EXCEEDED,
                    data: &quote[..],
                },
            ),
            (
                Icmpv6Type::ParameterProblem(ParameterProblemHeader {
                    code: ParameterProblemCode::UnrecognizedNextHeader,
                    pointer: 6,
                }),
                Repr::ParamProblem {
                    code: CODE_UNRECOGNIZED_NEXT_HEADER,
                    pointer: 6,
                    data: &quote[..],
                },
            ),
            (
                Icmpv6Type::EchoReply(IcmpEchoHeader { id: 1, seq: 0xffff }),
                Repr::EchoReply {
                    ident: 1,
                    seq: 0xffff,
                    data: &quote[..],
                },
            ),
        ];
        for (ty, r) in cases {
            let v = message(ty, &quote);
            let p = Packet::new_checked(&v[40..]).unwrap();
            assert_eq!(Repr::parse(&p), Ok(r));
            assert_eq!(p.is_error(), ty.type_u8() < 128);
            assert!(p.verify_checksum(src(), dst()));
            let mut out = vec![0u8; r.buffer_len() + 3];
            let q = r.emit(src(), dst(), &mut out).unwrap();
            assert_eq!(q.as_ref(), &v[40..], "{ty:?}");
            if let Icmpv6Type::PacketTooBig { mtu } = ty {
                assert_eq!(p.mtu(), mtu);
            }
        }
    }

    #[test]
    fn fill_reject_and_unsupported() {
        assert_eq!(Packet::new_checked(&[0u8; 7][..]), Err(Error::Truncated));
        let mut b = [TYPE_NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0x80];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(src(), dst());
        assert!(p.verify_checksum(src(), dst()));
        assert!(!p.is_error());
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
        let s = Icmpv6Slice::from_slice(&b).unwrap();
        assert!(s.is_checksum_valid(src().octets(), dst().octets()));
        // A code other than 0 on echo and Packet Too Big.
        for t in [TYPE_ECHO_REQUEST, TYPE_ECHO_REPLY, TYPE_PACKET_TOO_BIG] {
            let b = [t, 1, 0, 0, 0, 0, 0, 0];
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p), Err(Error::Malformed));
        }
        // Setters write what getters read.
        let mut b = [0u8; 12];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_PARAM_PROBLEM);
        p.set_code(2);
        p.set_word(0x0102_0304);
        assert_eq!((p.pointer(), p.mtu()), (0x0102_0304, 0x0102_0304));
        p.set_echo_ident(9);
        p.set_echo_seq(10);
        assert_eq!((p.echo_ident(), p.echo_seq()), (9, 10));
        p.payload_mut().copy_from_slice(b"abcd");
        p.body_mut()[0] = 0xff;
        assert!(p.is_error());
        assert_eq!(b, [4, 2, 0, 0, 0xff, 9, 0, 10, b'a', b'b', b'c', b'd']);
        // Short buffer: nothing written.
        let r = Repr::EchoRequest {
            ident: 1,
            seq: 2,
            data: b"xyz",
        };
        let mut short = [0u8; 10];
        assert_eq!(
            r.emit(src(), dst(), &mut short).err(),
            Some(Error::Truncated)
        );
        assert_eq!(short, [0u8; 10]);
    }

    #[test]
    fn checksum_zero_is_sent_as_zero() {
        // Find an echo whose checksum computes to 0x0000: put the checksum
        // of the message into the data word, which drives the sum to all ones.
        let mut b = [TYPE_ECHO_REQUEST, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(src(), dst());
        let c = p.checksum();
        p.payload_mut().copy_from_slice(&c.to_be_bytes());
        p.fill_checksum(src(), dst());
        assert_eq!(p.checksum(), 0);
        assert!(p.verify_checksum(src(), dst()));
        let s = Icmpv6Slice::from_slice(&b).unwrap();
        assert!(s.is_checksum_valid(src().octets(), dst().octets()));
    }

    proptest! {
        /// parse(emit(r)) == r, and etherparse agrees on the checksum.
        #[test]
        fn repr_round_trip(kind in 0u8..6, code in any::<u8>(), word in any::<u32>(),
                           data in proptest::collection::vec(any::<u8>(), 0..64),
                           s in any::<u128>(), d in any::<u128>()) {
            let [i0, i1, s0, s1] = word.to_be_bytes();
            let (ident, seq) = (u16::from_be_bytes([i0, i1]), u16::from_be_bytes([s0, s1]));
            let data = &data[..];
            let r = match kind {
                0 => Repr::DestUnreachable { code, data },
                1 => Repr::PacketTooBig { mtu: word, data },
                2 => Repr::TimeExceeded { code, data },
                3 => Repr::ParamProblem { code, pointer: word, data },
                4 => Repr::EchoRequest { ident, seq, data },
                _ => Repr::EchoReply { ident, seq, data },
            };
            let (s, d) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            let mut buf = vec![0u8; r.buffer_len()];
            let p = r.emit(s, d, &mut buf).unwrap();
            prop_assert!(p.verify_checksum(s, d));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            let e = Icmpv6Slice::from_slice(&buf).unwrap();
            prop_assert!(e.is_checksum_valid(s.octets(), d.octets()));
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let (s, d) = (src(), dst());
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.mtu(), p.pointer(), p.is_error());
                let _ = (p.echo_ident(), p.echo_seq(), p.body(), p.payload());
                let _ = Repr::parse(&p);
                let valid = p.verify_checksum(s, d);
                let mut v = b.clone();
                let mut q = Packet::new_checked(&mut v[..]).unwrap();
                q.fill_checksum(s, d);
                prop_assert!(q.verify_checksum(s, d));
                // A stored checksum is right exactly when it is the computed
                // one, 0x0000 and 0xffff being the same one's-complement zero.
                let (c, x) = (q.checksum(), p.checksum());
                prop_assert_eq!(valid, c == x || (c == 0 && x == 0xffff));
            } else {
                prop_assert!(b.len() < 8);
            }
        }
    }
}
