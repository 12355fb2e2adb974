//! VXLAN headers (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The header follows an outer UDP header and precedes the inner Ethernet
//! frame. Total encapsulation overhead over IPv4 without options:
//! [`OVERHEAD`] = 14 (outer Ethernet) + 20 (IPv4) + 8 (UDP) + 8 (VXLAN).

use super::{Error, Result};

/// The 8-byte VXLAN header.
pub const HEADER_LEN: usize = 8;
/// Outer Ethernet + IPv4 + UDP + VXLAN bytes in front of the inner frame.
pub const OVERHEAD: usize = 14 + 20 + 8 + HEADER_LEN;
/// The I flag: "MUST be set to 1 for a valid VXLAN Network ID" (RFC 7348 §5).
pub const FLAG_I: u8 = 0x08;
/// The IANA-assigned VXLAN port (RFC 7348 §5); Linux and flannel default to 8472.
pub const IANA_PORT: u16 = 4789;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// RFC 7348 §5: the outer UDP source port "SHOULD be within the dynamic/private
/// port range 49152-65535" and derived from a hash of the inner headers.
pub const SRC_PORT_MIN: u16 = 49152;

mod field {
    pub const FLAGS: usize = 0;
    pub const VNI: core::ops::Range<usize> = 4..7;
}

/// A view of a VXLAN header and the inner frame after it.
///
/// `new_checked` guarantees at least [`HEADER_LEN`] bytes with the I flag
/// set. Reserved bits are ignored on receipt (RFC 7348 §5: "MUST be set to
/// zero on transmission and ignored on receipt").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Errors: [`Error::Truncated`] below 8 bytes; [`Error::Malformed`] if the
    /// I flag is clear (no valid VNI).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::FLAGS] & FLAG_I == 0 {
            return Err(Error::Malformed);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN Network Identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let v = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, v[0], v[1], v[2]])
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The inner Ethernet frame, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The one field of a VXLAN header: the VNI (flags I, reserved bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The 24-bit VXLAN Network Identifier, `<= MAX_VNI`.
    pub vni: u32,
}

impl Repr {
    /// Reads a checked header (which guarantees the I flag).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr { vni: p.vni() })
    }

    /// [`HEADER_LEN`].
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (flags = I, reserved bits zero, RFC 7348 §5) into
    /// `buf[..8]` and returns the view over `buf` (the payload, the inner
    /// frame, is what follows). Errors, with nothing written:
    /// [`Error::Truncated`] below 8 bytes; [`Error::Malformed`] for a VNI
    /// wider than 24 bits.
    #[inline]
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<Packet<&'b mut [u8]>> {
        if self.vni > MAX_VNI {
            return Err(Error::Malformed);
        }
        let Some(h) = buf.get_mut(..HEADER_LEN) else {
            return Err(Error::Truncated);
        };
        let v = self.vni.to_be_bytes();
        h.fill(0);
        h[field::FLAGS] = FLAG_I;
        h[field::VNI].copy_from_slice(&v[1..4]);
        Ok(Packet { buffer: buf })
    }
}

/// The outer UDP source port for an inner flow hash (RFC 7348 §5: entropy
/// for ECMP, within 49152..=65535).
#[inline]
pub fn source_port(flow_hash: u64) -> u16 {
    // The low 14 bits of the folded hash: below 0x4000, so the sum stays
    // within 49152..=65535.
    let low = (flow_hash ^ (flow_hash >> 32)) & 0x3fff;
    SRC_PORT_MIN + u16::try_from(low).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emit_then_parse() {
        let mut b = [0xffu8; 20];
        let r = Repr { vni: 0x12_3456 };
        assert_eq!(r.header_len(), HEADER_LEN);
        let p = r.emit(&mut b).unwrap();
        assert_eq!(Repr::parse(&p), Ok(r));
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(&b[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        // VNIs wider than 24 bits are refused, and so is a short buffer.
        assert_eq!(
            Repr { vni: 0x0100_0000 }.emit(&mut b).err(),
            Some(Error::Malformed)
        );
        assert_eq!(
            r.emit(&mut b[..7]).err(),
            Some(Error::Truncated),
            "short buffer"
        );
        assert_eq!(&b[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0], "unchanged");
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.payload_mut().fill(7);
        assert_eq!(&b[8..], &[7; 12]);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&[0x08u8, 0, 0, 0, 0, 0, 1][..]),
            Err(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&[0u8, 0, 0, 0, 0, 0, 1, 0][..]),
            Err(Error::Malformed),
            "I flag clear"
        );
        // Reserved bits set are ignored on receipt.
        let p = Packet::new_checked(&[0xffu8, 0xff, 0xff, 0xff, 0, 0, 7, 0xff][..]).unwrap();
        assert_eq!(p.vni(), 7);
    }

    #[test]
    fn source_ports_are_dynamic_range() {
        for h in [0u64, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            assert!(source_port(h) >= SRC_PORT_MIN);
        }
    }

    proptest! {
        /// parse(emit(r)) == r; the bytes are RFC 7348 §5's layout (etherparse
        /// 0.16 has no VXLAN).
        #[test]
        fn repr_round_trip(vni in 0u32..=MAX_VNI, rest in proptest::collection::vec(any::<u8>(), 0..8)) {
            let r = Repr { vni };
            let mut buf = [vec![0xffu8; 8], rest.clone()].concat();
            let p = r.emit(&mut buf).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            prop_assert_eq!(p.payload(), &rest[..]);
            let v = vni.to_be_bytes();
            prop_assert_eq!(&buf[..8], &[0x08, 0, 0, 0, v[1], v[2], v[3], 0]);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.vni(), p.flags(), p.payload());
            }
        }
    }
}
