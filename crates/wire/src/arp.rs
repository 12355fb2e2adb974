//! ARP (RFC 826) for Ethernet hardware and IPv4 protocol addresses only.

use super::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use super::{be16, ip_at, mac_at, put16, Error, Ipv4Addr, MacAddr, Result};

/// Length of an Ethernet/IPv4 ARP body.
pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// `ar$hrd` for Ethernet (RFC 826; IANA ARP hardware types).
pub const HTYPE_ETHERNET: u16 = 1;
/// Length written by [`Repr::emit_frame`]: the 60-byte Ethernet minimum.
pub const FRAME_LEN: usize = ethernet::MIN_FRAME_LEN;

mod field {
    use core::ops::Range;
    // RFC 826 "Packet format", with hln = 6 and pln = 4.
    pub const HTYPE: usize = 0; // ar$hrd
    pub const PTYPE: usize = 2; // ar$pro
    pub const HLEN: usize = 4; // ar$hln
    pub const PLEN: usize = 5; // ar$pln
    pub const OPER: usize = 6; // ar$op
    pub const SHA: Range<usize> = 8..14; // ar$sha
    pub const SPA: Range<usize> = 14..18; // ar$spa
    pub const THA: Range<usize> = 18..24; // ar$tha
    pub const TPA: Range<usize> = 24..28; // ar$tpa
}

/// A view of an Ethernet/IPv4 ARP packet (the Ethernet payload).
///
/// `new_checked` guarantees at least [`LEN`] bytes, hardware type Ethernet,
/// protocol type IPv4 with 6/4 address lengths, and operation request or reply.
/// Bytes after the first 28 (Ethernet padding) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] below 28 bytes; [`Error::Unsupported`] for
    /// anything but Ethernet/IPv4; [`Error::Malformed`] for an operation
    /// other than request (1) or reply (2).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < LEN {
            return Err(Error::Truncated);
        }
        // RFC 826: "?Do I have the hardware type in ar$hrd? ... ?Do I speak
        // the protocol in ar$pro?" — we speak only Ethernet and IPv4.
        if be16(b, field::HTYPE) != HTYPE_ETHERNET
            || be16(b, field::PTYPE) != ETHERTYPE_IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Unsupported);
        }
        match be16(b, field::OPER) {
            OP_REQUEST | OP_REPLY => Ok(Packet { buffer }),
            _ => Err(Error::Malformed),
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// [`OP_REQUEST`] or [`OP_REPLY`].
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    #[inline]
    pub fn sender_hw(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SHA.start)
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SPA.start)
    }

    #[inline]
    pub fn target_hw(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::THA.start)
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::TPA.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Any value is written; [`new_checked`](Packet::new_checked) would reject
    /// values other than 1 and 2 afterwards.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put16(self.buffer.as_mut(), field::OPER, op);
    }

    #[inline]
    pub fn set_sender_hw(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    #[inline]
    pub fn set_target_hw(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an Ethernet/IPv4 ARP packet (RFC 826 "Packet format").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// [`OP_REQUEST`] or [`OP_REPLY`].
    pub operation: u16,
    pub sender_hw: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_hw: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// A "who has `target_ip`? tell `sender_ip`" request (RFC 826), with the
    /// target hardware address zero.
    #[inline]
    pub fn request(sender_hw: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Repr {
        Repr {
            operation: OP_REQUEST,
            sender_hw,
            sender_ip,
            target_hw: MacAddr::ZERO,
            target_ip,
        }
    }

    /// A gratuitous ARP / ARP Announcement (RFC 5227 §2.3, §3): a request
    /// whose sender and target IP are both `ip`.
    #[inline]
    pub fn gratuitous(mac: MacAddr, ip: Ipv4Addr) -> Repr {
        Repr::request(mac, ip, ip)
    }

    /// Reads the fields of a checked packet (which guarantees the
    /// operation is a request or a reply).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr {
            operation: p.operation(),
            sender_hw: p.sender_hw(),
            sender_ip: p.sender_ip(),
            target_hw: p.target_hw(),
            target_ip: p.target_ip(),
        })
    }

    /// [`LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        LEN
    }

    /// [`LEN`]: ARP has no payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        LEN
    }

    /// Where the frame carrying this packet goes: a request is broadcast, a
    /// reply goes to the requester, the target (RFC 826 "Packet
    /// Reception": "send the packet to the (new) target hardware address").
    #[inline]
    pub fn eth_dst(&self) -> MacAddr {
        if self.operation == OP_REQUEST {
            MacAddr::BROADCAST
        } else {
            self.target_hw
        }
    }

    /// Writes the 28-byte body into `buf[..28]` and returns the view over
    /// `buf`. Errors: [`Error::Truncated`] below 28 bytes (nothing written);
    /// [`Error::Malformed`] for an operation other than request or reply.
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        if !matches!(self.operation, OP_REQUEST | OP_REPLY) {
            return Err(Error::Malformed);
        }
        let Some(b) = buf.get_mut(..LEN) else {
            return Err(Error::Truncated);
        };
        put16(b, field::HTYPE, HTYPE_ETHERNET);
        put16(b, field::PTYPE, ETHERTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let mut p = Packet { buffer: buf };
        p.set_operation(self.operation);
        p.set_sender_hw(self.sender_hw);
        p.set_sender_ip(self.sender_ip);
        p.set_target_hw(self.target_hw);
        p.set_target_ip(self.target_ip);
        Ok(p)
    }

    /// Writes a whole untagged Ethernet + ARP frame into `buf[..60]`: from
    /// the sender hardware address to [`eth_dst`](Repr::eth_dst), zero-padded
    /// to the 60-byte Ethernet minimum. Returns [`FRAME_LEN`]; errors as
    /// [`emit`](Repr::emit), [`Error::Truncated`] below 60 bytes.
    pub fn emit_frame(&self, buf: &mut [u8]) -> Result<usize> {
        let b = buf.get_mut(..FRAME_LEN).ok_or(Error::Truncated)?;
        let (head, body) = b.split_at_mut(ethernet::HEADER_LEN);
        self.emit(body)?;
        body[LEN..].fill(0);
        let eth = ethernet::Repr {
            dst: self.eth_dst(),
            src: self.sender_hw,
            ethertype: ETHERTYPE_ARP,
        };
        eth.emit(head)?;
        Ok(FRAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ARP request written out byte by byte from RFC 826's packet format
    /// (independent of `emit`): Ethernet header + body + 18 bytes of padding;
    /// 24.166.172.1 (00:07:0d:af:f4:54) asks for 24.166.173.159.
    const REQUEST: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54, 0x08,
        0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // hrd pro hln pln op
        0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54, 0x18, 0xa6, 0xac, 0x01, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0xa6, 0xad, 0x9f, // tha tpa
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn parses_capture() {
        let f = ethernet::Frame::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        let p = Packet::new_checked(f.payload()).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_hw(), MacAddr([0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(24, 166, 172, 1));
        assert_eq!(p.target_hw(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), Ipv4Addr::new(24, 166, 173, 159));
    }

    #[test]
    fn emit_request_matches_capture() {
        let mut buf = [0xaa; 64];
        let r = Repr::request(
            MacAddr([0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54]),
            Ipv4Addr::new(24, 166, 172, 1),
            Ipv4Addr::new(24, 166, 173, 159),
        );
        assert_eq!(r.emit_frame(&mut buf), Ok(60));
        assert_eq!(buf[..60], REQUEST);
        assert_eq!(buf[60..], [0xaa; 4]);
        let mut short = [0u8; 59];
        assert_eq!(r.emit_frame(&mut short), Err(Error::Truncated));
        assert_eq!(short, [0u8; 59], "nothing written");
        // The body alone, and back.
        let p = r.emit(&mut buf[14..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(r));
        assert_eq!(r.buffer_len(), LEN);
        assert_eq!(r.emit(&mut [0u8; 27]).err(), Some(Error::Truncated));
    }

    #[test]
    fn gratuitous_and_reply() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = Ipv4Addr::new(198, 18, 0, 10);
        let mut buf = [0u8; 60];
        assert_eq!(Repr::gratuitous(mac, ip).emit_frame(&mut buf), Ok(60));
        let f = ethernet::Frame::new_checked(&buf[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src(), mac);
        let p = Packet::new_checked(f.payload()).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!((p.sender_hw(), p.sender_ip()), (mac, ip));
        assert_eq!((p.target_hw(), p.target_ip()), (MacAddr::ZERO, ip));

        // Turn a request into a reply in place (RFC 826 "swap ... set ar$op").
        let mut req = REQUEST;
        let mut p = Packet::new_checked(&mut req[14..]).unwrap();
        let (sha, spa, tpa) = (p.sender_hw(), p.sender_ip(), p.target_ip());
        p.set_target_hw(sha);
        p.set_target_ip(spa);
        p.set_sender_hw(mac);
        p.set_sender_ip(tpa);
        p.set_operation(OP_REPLY);
        let p = Packet::new_checked(&req[14..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!((p.sender_hw(), p.sender_ip()), (mac, tpa));
        assert_eq!((p.target_hw(), p.target_ip()), (sha, spa));

        // A reply goes to the requester.
        let reply = Repr::parse(&p).unwrap();
        assert_eq!(reply.eth_dst(), sha);
        let mut out = [0u8; 60];
        reply.emit_frame(&mut out).unwrap();
        let f = ethernet::Frame::new_checked(&out[..]).unwrap();
        assert_eq!((f.dst(), f.src()), (sha, mac));
        assert_eq!(&out[14..], &req[14..], "the same body");

        let bad = Repr {
            operation: 3,
            ..reply
        };
        assert_eq!(bad.emit(&mut [0u8; 28]).err(), Some(Error::Malformed));
        let mut out = [0u8; 60];
        assert_eq!(bad.emit_frame(&mut out), Err(Error::Malformed));
        assert_eq!(out, [0u8; 60], "nothing written");
    }

    #[test]
    fn rejects() {
        let body = &REQUEST[14..42];
        assert_eq!(Packet::new_checked(&body[..27]), Err(Error::Truncated));
        for (at, v, e) in [
            (1, 6, Error::Unsupported),    // hrd IEEE 802
            (2, 0x86, Error::Unsupported), // pro 0x86dd
            (4, 8, Error::Unsupported),    // hln
            (5, 16, Error::Unsupported),   // pln
            (7, 3, Error::Malformed),      // op RARP request
            (7, 0, Error::Malformed),
        ] {
            let mut b = [0u8; 28];
            b.copy_from_slice(body);
            b[at] = v;
            assert_eq!(Packet::new_checked(&b[..]), Err(e), "byte {at} = {v}");
        }
    }

    fn check_all(b: &[u8]) {
        if let Ok(p) = Packet::new_checked(b) {
            let _ = (
                p.operation(),
                p.sender_hw(),
                p.sender_ip(),
                p.target_hw(),
                p.target_ip(),
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_all(&b);
            // Also with a valid-looking prefix so the getters run.
            let pre = [0u8, 1, 8, 0, 6, 4, 0, 1];
            for (d, s) in b.iter_mut().zip(pre) { *d = s; }
            check_all(&b);
        }

        /// parse(emit(r)) == r, and the frame is what etherparse reads.
        #[test]
        fn repr_round_trip(reply in any::<bool>(), sha in any::<[u8; 6]>(), spa in any::<u32>(), tha in any::<[u8; 6]>(), tpa in any::<u32>()) {
            let r = Repr {
                operation: if reply { OP_REPLY } else { OP_REQUEST },
                sender_hw: MacAddr(sha),
                sender_ip: spa.into(),
                target_hw: MacAddr(tha),
                target_ip: tpa.into(),
            };
            let mut buf = [0u8; 64];
            prop_assert_eq!(r.emit_frame(&mut buf), Ok(FRAME_LEN));
            let f = ethernet::Frame::new_checked(&buf[..FRAME_LEN]).unwrap();
            let p = Packet::new_checked(f.payload()).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            // etherparse 0.16 has no ARP: the layout of RFC 826, by hand.
            let mut want = Vec::new();
            want.extend(if reply { tha } else { [0xff; 6] });
            want.extend(sha);
            want.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, if reply { 2 } else { 1 }]);
            want.extend(sha);
            want.extend(spa.to_be_bytes());
            want.extend(tha);
            want.extend(tpa.to_be_bytes());
            want.resize(FRAME_LEN, 0);
            prop_assert_eq!(&buf[..FRAME_LEN], &want[..]);
        }

        #[test]
        fn truncations_never_panic(n in 0usize..=60) {
            check_all(&REQUEST[14..][..n.min(46)]);
            let _ = ethernet::Frame::new_checked(&REQUEST[..n]);
        }
    }
}
