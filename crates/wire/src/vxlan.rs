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

/// Writes a VXLAN header (flags = I, reserved zero, `vni` masked to 24 bits)
/// into `buf[..8]`. Returns [`HEADER_LEN`], or `0` if `buf` is shorter.
#[inline]
pub fn emit_header(buf: &mut [u8], vni: u32) -> usize {
    let Some(h) = buf.get_mut(..HEADER_LEN) else {
        return 0;
    };
    let v = (vni & MAX_VNI).to_be_bytes();
    h.fill(0);
    h[field::FLAGS] = FLAG_I;
    h[field::VNI].copy_from_slice(&v[1..4]);
    HEADER_LEN
}

/// The outer UDP source port for an inner flow hash (RFC 7348 §5: entropy
/// for ECMP, within 49152..=65535).
#[inline]
pub fn source_port(flow_hash: u64) -> u16 {
    SRC_PORT_MIN + ((flow_hash ^ (flow_hash >> 32)) as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emit_then_parse() {
        let mut b = [0xffu8; 20];
        assert_eq!(emit_header(&mut b, 0x12_3456), HEADER_LEN);
        assert_eq!(&b[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.vni(), 0x12_3456);
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.payload().len(), 12);
        // VNIs wider than 24 bits are masked.
        emit_header(&mut b, 0xff00_0001);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().vni(), 1);
        assert_eq!(
            emit_header(&mut b[..7], 1),
            0,
            "short buffer: nothing written"
        );
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
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.vni(), p.flags(), p.payload());
            }
        }
    }
}
