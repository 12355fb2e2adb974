//! Ethernet II frames (IEEE 802.3 clause 3.2.6 type field) with at most one
//! IEEE 802.1Q VLAN tag.

use super::{be16, mac_at, put16, Error, MacAddr, Result};

/// Untagged Ethernet II header: destination, source, EtherType.
pub const HEADER_LEN: usize = 14;
/// Header with one 802.1Q tag.
pub const TAGGED_HEADER_LEN: usize = 18;
/// Minimum frame length without the FCS (IEEE 802.3: 64 bytes incl. FCS).
pub const MIN_FRAME_LEN: usize = 60;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv6 (RFC 2464 §3).
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IEEE 802.1Q customer VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IEEE 802.1ad service VLAN tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub(crate) mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: usize = 12;
    /// 802.1Q tag control information (PCP, DEI, VID) after a 0x8100 type.
    pub const TCI: usize = 14;
    /// EtherType after the 802.1Q tag.
    pub const INNER_TYPE: usize = 16;
}

/// A view of an Ethernet II frame.
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes, and at least
/// [`TAGGED_HEADER_LEN`] when the outer type is [`ETHERTYPE_VLAN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Validates the buffer length for the header (including one 802.1Q tag).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::TYPE) == ETHERTYPE_VLAN && b.len() < TAGGED_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Frame { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DST.start)
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SRC.start)
    }

    /// The type field right after the source address (0x8100 if tagged).
    #[inline]
    pub fn outer_ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TYPE)
    }

    #[inline]
    fn is_tagged(&self) -> bool {
        self.outer_ethertype() == ETHERTYPE_VLAN
    }

    /// The EtherType of the payload, after skipping at most one 802.1Q tag.
    ///
    /// A second tag (0x8100 or 0x88a8 again) is returned as is, and so is an
    /// outer 802.1ad (0x88a8) tag, so that the caller can drop such frames.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        if self.is_tagged() {
            be16(self.buffer.as_ref(), field::INNER_TYPE)
        } else {
            self.outer_ethertype()
        }
    }

    /// The 12-bit VLAN identifier of an 802.1Q-tagged frame.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        if self.is_tagged() {
            Some(be16(self.buffer.as_ref(), field::TCI) & 0x0fff)
        } else {
            None
        }
    }

    /// 14, or 18 with an 802.1Q tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (may include Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac.0);
    }

    /// Sets the EtherType of the payload (the inner type if tagged).
    ///
    /// Returns false, writing nothing, for [`ETHERTYPE_VLAN`] on an untagged
    /// frame: that would turn the frame into a tagged one whose tag is
    /// whatever bytes follow (and, below 18 bytes, leave a view whose
    /// getters read past the buffer).
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) -> bool {
        let at = if self.is_tagged() {
            field::INNER_TYPE
        } else if ethertype == ETHERTYPE_VLAN {
            return false;
        } else {
            field::TYPE
        };
        put16(self.buffer.as_mut(), at, ethertype);
        true
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

impl<'a> Frame<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer (not the view).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let h = self.header_len();
        &self.buffer[h..]
    }
}

impl<'a> Frame<&'a mut [u8]> {
    /// The payload, to write, borrowed for as long as the buffer.
    #[inline]
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let h = self.header_len();
        &mut self.buffer[h..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    /// The whole frame.
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AsMut<[u8]> for Frame<T> {
    /// The whole frame.
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

/// The fields of an untagged Ethernet II header (what podlb emits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The type field; never [`ETHERTYPE_VLAN`] (no tag is represented).
    pub ethertype: u16,
}

impl Repr {
    /// Reads an untagged frame's header. Errors: [`Error::Unsupported`] for
    /// an 802.1Q-tagged frame (the tag is not represented).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        if frame.is_tagged() {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            dst: frame.dst(),
            src: frame.src(),
            ethertype: frame.outer_ethertype(),
        })
    }

    /// [`HEADER_LEN`]: the header, without payload.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `buf[..14]` and returns the view over the
    /// whole of `buf` (the payload is whatever follows).
    ///
    /// Errors: [`Error::Truncated`] below 14 bytes; [`Error::Unsupported`]
    /// for type [`ETHERTYPE_VLAN`] (it would announce a tag that is not
    /// there). Nothing is written on error.
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Frame<&'b mut [u8]>> {
        if self.ethertype == ETHERTYPE_VLAN {
            return Err(Error::Unsupported);
        }
        let Some(h) = buf.get_mut(..HEADER_LEN) else {
            return Err(Error::Truncated);
        };
        h[field::DST].copy_from_slice(&self.dst.0);
        h[field::SRC].copy_from_slice(&self.src.0);
        put16(h, field::TYPE, self.ethertype);
        Ok(Frame { buffer: buf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket};
    use proptest::prelude::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn udp_frame(vlan: Option<u16>) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(A, B);
        let mut out = Vec::new();
        match vlan {
            Some(v) => eth
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
                .udp(1000, 2000)
                .write(&mut out, b"hello")
                .unwrap(),
            None => eth
                .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
                .udp(1000, 2000)
                .write(&mut out, b"hello")
                .unwrap(),
        }
        out
    }

    #[test]
    fn parses_untagged() {
        let buf = udp_frame(None);
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.src(), MacAddr(A));
        assert_eq!(f.dst(), MacAddr(B));
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.header_len(), 14);
        let e = etherparse::Ethernet2Slice::from_slice_without_fcs(&buf).unwrap();
        assert_eq!(f.payload(), e.payload_slice());
        assert_eq!(f.ethertype(), e.ether_type().0);
        assert_eq!(f.as_ref(), &buf[..]);
    }

    #[test]
    fn into_payload_outlives_the_view() {
        let mut buf = udp_frame(Some(5));
        let n = buf.len();
        let p = Frame::new_checked(&buf[..]).unwrap().into_payload();
        assert_eq!((p.len(), p[0] >> 4), (n - 18, 4), "after the tag");
        let p = Frame::new_checked(&mut buf[..]).unwrap().into_payload_mut();
        p[1] = 0x10;
        assert_eq!(buf[19], 0x10);
    }

    #[test]
    fn parses_single_vlan() {
        let buf = udp_frame(Some(42));
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.outer_ethertype(), ETHERTYPE_VLAN);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.vlan_id(), Some(42));
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload()[0] >> 4, 4);
    }

    #[test]
    fn double_tag_is_reported_not_skipped() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .double_vlan(
                etherparse::VlanId::try_new(7).unwrap(),
                etherparse::VlanId::try_new(8).unwrap(),
            )
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(1, 2)
            .write(&mut out, &[])
            .unwrap();
        let f = Frame::new_checked(&out[..]).unwrap();
        // etherparse uses 0x88a8 (802.1ad) as the outer type of double tags.
        let outer = f.outer_ethertype();
        assert!(outer == ETHERTYPE_QINQ || outer == ETHERTYPE_VLAN);
        if outer == ETHERTYPE_VLAN {
            assert_eq!(f.ethertype(), ETHERTYPE_VLAN);
        } else {
            assert_eq!(f.ethertype(), ETHERTYPE_QINQ);
            assert_eq!(f.vlan_id(), None);
        }
        // Hand-made 0x8100 / 0x8100.
        let mut q = [0u8; 22];
        q[12..14].copy_from_slice(&[0x81, 0x00]);
        q[14..16].copy_from_slice(&[0x00, 0x05]);
        q[16..18].copy_from_slice(&[0x81, 0x00]);
        let f = Frame::new_checked(&q[..]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_VLAN);
        assert_eq!(f.vlan_id(), Some(5));
    }

    #[test]
    fn truncation() {
        assert_eq!(Frame::new_checked(&[0u8; 13][..]), Err(Error::Truncated));
        assert!(Frame::new_checked(&[0u8; 14][..]).is_ok());
        let mut t = [0u8; 17];
        t[12] = 0x81;
        assert_eq!(Frame::new_checked(&t[..]), Err(Error::Truncated));
        let mut t = [0u8; 18];
        t[12] = 0x81;
        assert_eq!(Frame::new_checked(&t[..]).unwrap().payload(), &[] as &[u8]);
    }

    #[test]
    fn setters_and_emit() {
        let mut buf = udp_frame(Some(3));
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([1, 2, 3, 4, 5, 6]));
        f.payload_mut()[1] = 0x10; // IPv4 DSCP/ECN byte, not covered by any checksum here
        let _ = f.into_inner();
        let sliced = SlicedPacket::from_ethernet(&buf).unwrap();
        match sliced.link.unwrap() {
            etherparse::LinkSlice::Ethernet2(e) => {
                assert_eq!(e.destination(), [0xff; 6]);
                assert_eq!(e.source(), [1, 2, 3, 4, 5, 6]);
            }
            _ => panic!("not ethernet"),
        }

        let mut out = [0u8; 20];
        let repr = Repr {
            dst: MacAddr(B),
            src: MacAddr(A),
            ethertype: ETHERTYPE_ARP,
        };
        assert_eq!(repr.header_len(), 14);
        let mut f = repr.emit(&mut out).unwrap();
        assert_eq!(f.payload().len(), 6);
        assert!(f.set_ethertype(ETHERTYPE_IPV4));
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        repr.emit(&mut out).unwrap();
        let (h, _) = etherparse::Ethernet2Header::from_slice(&out).unwrap();
        assert_eq!(h.destination, B);
        assert_eq!(h.source, A);
        assert_eq!(h.ether_type, etherparse::EtherType::ARP);
        assert_eq!(repr.emit(&mut [0u8; 13]), Err(Error::Truncated));
        let tagged = Repr {
            ethertype: ETHERTYPE_VLAN,
            ..repr
        };
        let mut out = [0u8; 20];
        assert_eq!(tagged.emit(&mut out), Err(Error::Unsupported));
        assert_eq!(out, [0u8; 20], "nothing written");
    }

    #[test]
    fn repr_parses_etherparse_and_rejects_tags() {
        let buf = udp_frame(None);
        let f = Frame::new_checked(&buf[..]).unwrap();
        let r = Repr::parse(&f).unwrap();
        assert_eq!(
            r,
            Repr {
                dst: MacAddr(B),
                src: MacAddr(A),
                ethertype: ETHERTYPE_IPV4
            }
        );
        let buf = udp_frame(Some(7));
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&f), Err(Error::Unsupported));
    }

    /// Found by the `ethernet` fuzz target (fuzz/artifacts minimised to 15
    /// bytes): setting the payload type 0x8100 on an untagged frame made it
    /// a tagged one, and on a frame shorter than 18 bytes `ethertype()` and
    /// `payload()` then read past the buffer.
    #[test]
    fn set_ethertype_cannot_invent_a_vlan_tag() {
        let mut b = [
            0xff, 0xff, 0xff, 0x94, 0x94, 0x96, 0x40, 0xff, 0x00, 0x00, 0xff, 0x00, 0x00, 0x81,
            0x00,
        ];
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        assert!(!f.set_ethertype(ETHERTYPE_VLAN));
        assert_eq!(f.outer_ethertype(), 0x0081, "nothing written");
        assert_eq!(
            (f.ethertype(), f.header_len(), f.payload().len()),
            (0x0081, 14, 1)
        );
        // Long enough for a tag: still refused, the payload type stays.
        let mut buf = udp_frame(None);
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        assert!(!f.set_ethertype(ETHERTYPE_VLAN));
        assert_eq!((f.ethertype(), f.vlan_id()), (ETHERTYPE_IPV4, None));
        // A tagged frame's inner type may be anything, 0x8100 included.
        let mut buf = udp_frame(Some(9));
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        assert!(f.set_ethertype(ETHERTYPE_VLAN));
        assert_eq!((f.ethertype(), f.vlan_id()), (ETHERTYPE_VLAN, Some(9)));
        assert_eq!(f.header_len() + f.payload().len(), buf.len());
    }

    fn check_all(b: &[u8]) {
        if let Ok(f) = Frame::new_checked(b) {
            let _ = (f.dst(), f.src(), f.ethertype(), f.vlan_id());
            assert!(f.header_len() + f.payload().len() == b.len());
        }
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_all(&b);
            let mut tagged = b.clone();
            if tagged.len() >= 14 {
                tagged[12] = 0x81;
                tagged[13] = 0x00;
            }
            check_all(&tagged);
        }

        /// parse(emit(r)) == r, and the bytes are what etherparse writes.
        #[test]
        fn repr_round_trip(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), et in any::<u16>(), extra in 0usize..8) {
            let r = Repr { dst: MacAddr(dst), src: MacAddr(src), ethertype: et };
            let mut buf = vec![0xa5u8; HEADER_LEN + extra];
            if et == ETHERTYPE_VLAN {
                prop_assert_eq!(r.emit(&mut buf), Err(Error::Unsupported));
                return Ok(());
            }
            let f = r.emit(&mut buf).unwrap();
            prop_assert_eq!(Repr::parse(&f), Ok(r));
            prop_assert_eq!(f.payload().len(), extra);
            let e = etherparse::Ethernet2Header {
                source: src,
                destination: dst,
                ether_type: etherparse::EtherType(et),
            };
            prop_assert_eq!(&buf[..HEADER_LEN], &e.to_bytes()[..]);
        }

        #[test]
        fn truncations_never_panic(vlan in proptest::option::of(0u16..4095)) {
            let buf = udp_frame(vlan);
            for n in 0..=buf.len() {
                check_all(&buf[..n]);
            }
        }
    }
}
