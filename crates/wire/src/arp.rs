//! ARP (RFC 826) for Ethernet hardware and IPv4 protocol addresses only.

use super::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use super::{be16, ip_at, mac_at, put16, Error, Ipv4Addr, MacAddr, Result};

/// Length of an Ethernet/IPv4 ARP body.
pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// `ar$hrd` for Ethernet (RFC 826; IANA ARP hardware types).
pub const HTYPE_ETHERNET: u16 = 1;
/// Length written by [`emit_frame`]: the 60-byte Ethernet minimum.
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

/// Writes the 28-byte ARP body into `buf[..28]`.
///
/// Returns [`LEN`], or `0` (writing nothing) if `buf` is shorter.
pub fn emit(
    buf: &mut [u8],
    op: u16,
    sender_hw: MacAddr,
    sender_ip: Ipv4Addr,
    target_hw: MacAddr,
    target_ip: Ipv4Addr,
) -> usize {
    let Some(b) = buf.get_mut(..LEN) else {
        return 0;
    };
    put16(b, field::HTYPE, HTYPE_ETHERNET);
    put16(b, field::PTYPE, ETHERTYPE_IPV4);
    b[field::HLEN] = 6;
    b[field::PLEN] = 4;
    put16(b, field::OPER, op);
    b[field::SHA].copy_from_slice(&sender_hw.0);
    b[field::SPA].copy_from_slice(&sender_ip.octets());
    b[field::THA].copy_from_slice(&target_hw.0);
    b[field::TPA].copy_from_slice(&target_ip.octets());
    LEN
}

/// Writes an untagged Ethernet + ARP frame, zero-padded to the 60-byte
/// Ethernet minimum, into `buf[..60]`.
///
/// Returns [`FRAME_LEN`] (60), or `0` (writing nothing) if `buf` is shorter
/// than 60 bytes.
#[allow(clippy::too_many_arguments)]
pub fn emit_frame(
    buf: &mut [u8],
    eth_dst: MacAddr,
    eth_src: MacAddr,
    op: u16,
    sender_hw: MacAddr,
    sender_ip: Ipv4Addr,
    target_hw: MacAddr,
    target_ip: Ipv4Addr,
) -> usize {
    let Some(b) = buf.get_mut(..FRAME_LEN) else {
        return 0;
    };
    let h = ethernet::emit_header(b, eth_dst, eth_src, ETHERTYPE_ARP);
    let n = emit(&mut b[h..], op, sender_hw, sender_ip, target_hw, target_ip);
    b[h + n..].fill(0);
    FRAME_LEN
}

/// A broadcast "who has `target_ip`? tell `src_ip`" request (RFC 826), with
/// the target hardware address zero. Returns 60, or 0 if `buf` < 60 bytes.
pub fn emit_request(
    buf: &mut [u8],
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> usize {
    emit_frame(
        buf,
        MacAddr::BROADCAST,
        src_mac,
        OP_REQUEST,
        src_mac,
        src_ip,
        MacAddr::ZERO,
        target_ip,
    )
}

/// A gratuitous ARP / ARP Announcement (RFC 5227 §2.3, §3): a broadcast
/// request whose sender and target IP are both `ip` and whose target hardware
/// address is zero. Returns 60, or 0 if `buf` < 60 bytes.
pub fn emit_gratuitous(buf: &mut [u8], mac: MacAddr, ip: Ipv4Addr) -> usize {
    emit_request(buf, mac, ip, ip)
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
        let n = emit_request(
            &mut buf,
            MacAddr([0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54]),
            Ipv4Addr::new(24, 166, 172, 1),
            Ipv4Addr::new(24, 166, 173, 159),
        );
        assert_eq!(n, 60);
        assert_eq!(buf[..60], REQUEST);
        assert_eq!(buf[60..], [0xaa; 4]);
        assert_eq!(
            emit_request(
                &mut [0u8; 59],
                MacAddr::ZERO,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED
            ),
            0
        );
    }

    #[test]
    fn gratuitous_and_reply() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let ip = Ipv4Addr::new(198, 18, 0, 10);
        let mut buf = [0u8; 60];
        assert_eq!(emit_gratuitous(&mut buf, mac, ip), 60);
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
        assert_eq!(emit(&mut [0u8; 27], 1, mac, ip, mac, ip), 0);
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

        #[test]
        fn truncations_never_panic(n in 0usize..=60) {
            check_all(&REQUEST[14..][..n.min(46)]);
            let _ = ethernet::Frame::new_checked(&REQUEST[..n]);
        }
    }
}
