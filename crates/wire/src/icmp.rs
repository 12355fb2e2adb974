//! ICMP for IPv4 (RFC 792).

use super::checksum;
use super::ports::{self, Ports};
use super::{be16, be32, ipv4, put16, put32, Error, Result};

/// Type, code, checksum and the 4-byte "rest of header".
pub const HEADER_LEN: usize = 8;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DEST_UNREACH: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;
pub const TYPE_PARAM_PROBLEM: u8 = 12;

/// Destination Unreachable code 4, "fragmentation needed and DF set"
/// (RFC 792; next-hop MTU in bytes 6..8 per RFC 1191 §4).
pub const CODE_FRAG_NEEDED: u8 = 4;

mod field {
    // RFC 792: every message starts with type, code, checksum; echo messages
    // then carry identifier and sequence number.
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    // RFC 1191 §4: Destination Unreachable code 4 carries the next-hop MTU
    // in the low half of the "unused" word.
    pub const NEXT_HOP_MTU: usize = 6;
}

/// A view of an ICMPv4 message.
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes. The message is the
/// whole buffer: build the view over exactly the IP payload.
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

    /// Identifier of an echo request/reply (bytes 4..6; meaningless for other
    /// types).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Sequence number of an echo request/reply (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Bytes after the 8-byte header: echo data, or for error messages the
    /// offending IP header + 64 bits of its data (RFC 792).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// RFC 792 "Checksum": the one's complement of the one's-complement sum of
    /// the ICMP message starting with the type, over the whole buffer.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::internet(self.buffer.as_ref()) == 0
    }

    /// An error message that quotes the datagram it is about (RFC 792):
    /// destination unreachable, time exceeded or parameter problem.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            TYPE_DEST_UNREACH | TYPE_TIME_EXCEEDED | TYPE_PARAM_PROBLEM
        )
    }

    /// Fragmentation needed and DF set (type 3 code 4).
    #[inline]
    pub fn is_frag_needed(&self) -> bool {
        self.msg_type() == TYPE_DEST_UNREACH && self.code() == CODE_FRAG_NEEDED
    }

    /// RFC 1191 §4: the next-hop MTU of a fragmentation-needed message (0
    /// from a router older than RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
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

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Sets the next-hop MTU (RFC 1191 §4). Does not update the checksum.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put16(self.buffer.as_mut(), field::NEXT_HOP_MTU, mtu);
    }

    /// Recomputes the checksum over the whole buffer (RFC 792).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::internet(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// The datagram an ICMP error quotes (RFC 792: "Internet Header + 64 bits
/// of Original Data Datagram"; RFC 1812 §4.3.2.3 routers quote more): its
/// IPv4 header, whole, and at least the first 8 bytes of its transport
/// header, a TCP or UDP header prefix ([`Ports`]). The quoted Total Length
/// is the original's and is not checked against the quote.
///
/// `new_checked` guarantees version 4, IHL ≥ 5, the header and 8 more
/// bytes in the buffer, and a quoted protocol of TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Quoted<T> {
    /// Errors: [`Error::Truncated`] when the header or 8 bytes after it are
    /// missing; [`Error::Malformed`] for a version other than 4 or an IHL
    /// below 5; [`Error::Unsupported`] for a quoted protocol other than TCP
    /// or UDP.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        let first = *b.first().ok_or(Error::Truncated)?;
        if first >> 4 != 4 || first & 0x0f < 5 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(first & 0x0f) * 4;
        if b.len() < hl + ports::MIN_LEN {
            return Err(Error::Truncated);
        }
        let proto = b[ipv4::field::PROTOCOL];
        if proto != ipv4::PROTO_TCP && proto != ipv4::PROTO_UDP {
            return Err(Error::Unsupported);
        }
        Ok(Quoted { buffer })
    }

    #[inline]
    fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    #[inline]
    pub fn src_u32(&self) -> u32 {
        be32(self.buffer.as_ref(), ipv4::field::SRC.start)
    }

    #[inline]
    pub fn dst_u32(&self) -> u32 {
        be32(self.buffer.as_ref(), ipv4::field::DST.start)
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ipv4::field::PROTOCOL]
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len())
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len() + 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Quoted<T> {
    /// Rewrites the quoted datagram's addresses and ports to the ones given,
    /// with its header checksum and (where quoted) its transport checksum
    /// updated for the change (RFC 1624 eqn. 3; RFC 5508 §4, ICMP error forwarding: a NAT
    /// translates the quoted header the reverse way of the outer one).
    #[inline]
    pub fn translate(&mut self, src: u32, dst: u32, sport: u16, dport: u16) {
        let (old_src, old_dst) = (self.src_u32(), self.dst_u32());
        let (hl, proto) = (self.header_len(), self.protocol());
        let b = self.buffer.as_mut();
        put32(b, ipv4::field::SRC.start, src);
        put32(b, ipv4::field::DST.start, dst);
        let mut c = be16(b, ipv4::field::CHECKSUM);
        c = checksum::update_u32(c, old_src, src);
        c = checksum::update_u32(c, old_dst, dst);
        put16(b, ipv4::field::CHECKSUM, c);
        if let Ok(mut p) = Ports::new_checked(&mut b[hl..], proto) {
            p.translate(sport, dport, &[(old_src, src), (old_dst, dst)]);
        }
    }
}

/// An ICMP echo message (RFC 792 "Echo or Echo Reply Message"), the only
/// kind podlb emits: the identifier, the sequence number and the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads an echo request or reply; `data` borrows the packet's payload.
    /// The checksum is not verified (see [`Packet::verify_checksum`]).
    /// Errors: [`Error::Unsupported`] for other types; [`Error::Malformed`]
    /// for an echo with a code other than 0.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &'a Packet<T>) -> Result<Repr<'a>> {
        let (ident, seq, data) = (p.echo_ident(), p.echo_seq(), p.payload());
        let r = match p.msg_type() {
            TYPE_ECHO_REQUEST => Repr::EchoRequest { ident, seq, data },
            TYPE_ECHO_REPLY => Repr::EchoReply { ident, seq, data },
            _ => return Err(Error::Unsupported),
        };
        // RFC 792: the code of both echo messages is 0.
        if p.code() != 0 {
            return Err(Error::Malformed);
        }
        Ok(r)
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header + data.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        let (Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. }) = self;
        HEADER_LEN + data.len()
    }

    /// Writes the message with its checksum into `buf[..buffer_len()]` and
    /// returns the view over exactly those bytes. Errors:
    /// [`Error::Truncated`] if `buf` is shorter (nothing written).
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        let (msg_type, ident, seq, data) = match *self {
            Repr::EchoRequest { ident, seq, data } => (TYPE_ECHO_REQUEST, ident, seq, data),
            Repr::EchoReply { ident, seq, data } => (TYPE_ECHO_REPLY, ident, seq, data),
        };
        let b = buf.get_mut(..self.buffer_len()).ok_or(Error::Truncated)?;
        let mut p = Packet { buffer: b };
        p.set_msg_type(msg_type);
        p.set_code(0);
        p.set_echo_ident(ident);
        p.set_echo_seq(seq);
        p.payload_mut().copy_from_slice(data);
        p.fill_checksum();
        Ok(p)
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
    use etherparse::{Icmpv4Header, Icmpv4Type, PacketBuilder};
    use proptest::prelude::*;

    fn echo(req: bool, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64);
        let b = if req {
            b.icmpv4_echo_request(id, seq)
        } else {
            b.icmpv4_echo_reply(id, seq)
        };
        let mut v = Vec::new();
        b.write(&mut v, data).unwrap();
        v
    }

    #[test]
    fn parses_etherparse_echo() {
        let v = echo(true, 0x1234, 7, b"ping data");
        let ip = ipv4::Packet::new_checked(&v[..]).unwrap();
        assert_eq!(ip.protocol(), ipv4::PROTO_ICMP);
        let p = Packet::new_checked(ip.payload()).unwrap();
        let (e, rest) = Icmpv4Header::from_slice(ip.payload()).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), e.checksum);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq(), 7);
        assert_eq!(p.payload(), rest);
        assert!(p.verify_checksum());
    }

    #[test]
    fn request_to_reply_incremental() {
        let mut v = echo(true, 9, 1, b"abc");
        let mut p = Packet::new_checked(&mut v[20..]).unwrap();
        // Type 8 -> 0 changes the first word from 0x0800 to 0x0000.
        let c = checksum::update_u16(p.checksum(), 0x0800, 0x0000);
        p.set_msg_type(TYPE_ECHO_REPLY);
        p.set_checksum(c);
        assert!(p.verify_checksum());
        assert_eq!(v[20..], echo(false, 9, 1, b"abc")[20..]);
        let mut p = Packet::new_checked(&mut v[20..]).unwrap();
        p.set_echo_ident(0xabcd);
        p.set_echo_seq(0x0102);
        p.fill_checksum();
        assert_eq!(v[20..], echo(false, 0xabcd, 0x0102, b"abc")[20..]);
        let (e, rest) = Icmpv4Header::from_slice(&v[20..]).unwrap();
        assert!(matches!(e.icmp_type, Icmpv4Type::EchoReply(_)));
        assert_eq!(
            e.checksum,
            Icmpv4Header::with_checksum(e.icmp_type.clone(), rest).checksum
        );
    }

    #[test]
    fn fill_and_reject() {
        assert_eq!(Packet::new_checked(&[0u8; 7][..]), Err(Error::Truncated));
        let mut b = [
            TYPE_DEST_UNREACH,
            CODE_FRAG_NEEDED,
            0,
            0,
            0,
            0,
            0x05,
            0xdc,
            0x45,
            0,
        ];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        // etherparse keeps bytes 4..8 only as the next-hop MTU of code 4.
        p.set_code(CODE_FRAG_NEEDED);
        p.payload_mut()[0] = 0x46;
        p.fill_checksum();
        let (e, rest) = Icmpv4Header::from_slice(&b).unwrap();
        assert_eq!(
            e.checksum,
            Icmpv4Header::with_checksum(e.icmp_type.clone(), rest).checksum
        );
    }

    #[test]
    fn repr_parse_rejects_and_short_buffer() {
        let mut b = echo(true, 1, 2, b"x")[20..].to_vec();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_code(1);
        assert_eq!(Repr::parse(&p), Err(Error::Malformed));
        p.set_msg_type(TYPE_DEST_UNREACH);
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
        let r = Repr::EchoReply {
            ident: 1,
            seq: 2,
            data: b"abc",
        };
        let mut short = [0u8; 10];
        assert_eq!(r.emit(&mut short).err(), Some(Error::Truncated));
        assert_eq!(short, [0u8; 10], "nothing written");
    }

    proptest! {
        /// parse(emit(r)) == r, and the bytes are what etherparse writes.
        #[test]
        fn repr_round_trip(req in any::<bool>(), ident in any::<u16>(), seq in any::<u16>(),
                           data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let r = if req {
                Repr::EchoRequest { ident, seq, data: &data }
            } else {
                Repr::EchoReply { ident, seq, data: &data }
            };
            let mut buf = vec![0x77u8; r.buffer_len() + 3];
            let p = r.emit(&mut buf).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            let want = echo(req, ident, seq, &data);
            prop_assert_eq!(&buf[..r.buffer_len()], &want[20..]);
            prop_assert_eq!(&buf[r.buffer_len()..], &[0x77u8; 3]);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_all(&b);
        }

        #[test]
        fn truncations_never_panic(n in 0usize..40) {
            let v = echo(false, 1, 2, &[3; 24]);
            check_all(&v[20..][..n.min(v.len() - 20)]);
        }
    }

    fn check_all(b: &[u8]) {
        if let Ok(p) = Packet::new_checked(b) {
            let _ = (
                p.msg_type(),
                p.code(),
                p.checksum(),
                p.echo_ident(),
                p.echo_seq(),
            );
            assert_eq!(p.payload().len() + 8, b.len());
            let mut v = b.to_vec();
            let mut p = Packet::new_checked(&mut v[..]).unwrap();
            p.fill_checksum();
            assert!(p.verify_checksum());
        }
    }
}
