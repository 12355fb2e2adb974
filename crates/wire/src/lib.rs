//! Zero-copy packet views and emitters.
//!
//! Every protocol module follows the same shape (after smoltcp's `wire`):
//! a `Packet<T: AsRef<[u8]>>` view over a borrowed or owned buffer, a private
//! `field` table of byte ranges, and `new_checked(buf)` which validates every
//! length once so that all getters afterwards are plain, panic-free slice
//! reads. Setters need `T: AsMut<[u8]>` and never touch checksums unless their
//! name says so; use [`checksum`] (RFC 1624 incremental updates) or the
//! `fill_checksum` methods.
//!
//! Each module also has a `Repr` (after smoltcp's): the header fields podlb
//! reads and writes, as plain values. `Repr::parse(&packet)` reads them from
//! a checked view; `repr.emit(buf)` writes them into the front of `buf` and
//! hands back the checked view over it (so a view only ever exists over
//! valid bytes, and the payload is filled through it); `header_len()` and,
//! where the Repr knows its payload, `buffer_len()` say how many bytes it
//! takes. Emitting writes nothing when it returns an error. `parse` does not
//! verify checksums: the views' `verify_checksum` do. Nothing in this crate
//! allocates, does IO or panics on untrusted input.

#![forbid(unsafe_code)]
#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use core::fmt;
use core::str::FromStr;

pub use std::net::{Ipv4Addr, Ipv6Addr};

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod meta;
pub mod ndp;
pub mod peek;
pub mod ports;
pub mod tcp;
pub mod udp;
pub mod vrrp;
pub mod vxlan;

pub use meta::PacketMeta;

/// Why a buffer was rejected by a `new_checked` constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// packet truncated: the buffer is shorter than the header or than its length fields claim
    #[error(
        "packet truncated: the buffer is shorter than the header or than its length fields claim"
    )]
    Truncated,
    /// malformed packet: a header field holds a value that cannot be right (bad version, ihl < 5, data offset < 5, length smaller than the header, ...)
    #[error("malformed packet: a header field holds a value that cannot be right (bad version, ihl < 5, data offset < 5, length smaller than the header, ...)")]
    Malformed,
    /// unsupported packet: valid, but a variant podlb does not handle (e.g. ARP for other than Ethernet/IPv4)
    #[error("unsupported packet: valid, but a variant podlb does not handle (e.g. ARP for other than Ethernet/IPv4)")]
    Unsupported,
}

/// Result of parsing a packet view.
pub type Result<T> = core::result::Result<T, Error>;

/// An IEEE 802 MAC-48 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00` (used as the unknown target in ARP requests).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads a MAC address from the first 6 bytes of `b`.
    ///
    /// Returns `None` if `b` is shorter than 6 bytes.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Option<MacAddr> {
        let b: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(b))
    }

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// All ones.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// Group bit (I/G, least significant bit of the first octet) set.
    /// The broadcast address is multicast too.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Group bit clear (this includes [`MacAddr::ZERO`]).
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The address as the low 48 bits of a `u64` (first octet most significant).
    #[inline]
    pub fn to_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0);
        u64::from_be_bytes(b)
    }

    /// Inverse of [`MacAddr::to_u64`]; the high 16 bits of `v` are ignored.
    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
/// invalid MAC address: expected six two-digit hex octets separated by ':' or '-', like aa:bb:cc:dd:ee:ff
#[error("invalid MAC address: expected six two-digit hex octets separated by ':' or '-', like aa:bb:cc:dd:ee:ff")]
pub struct ParseMacAddrError;

impl FromStr for MacAddr {
    type Err = ParseMacAddrError;

    /// Parses `aa:bb:cc:dd:ee:ff` (or `aa-bb-cc-dd-ee-ff`), case-insensitive.
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(ParseMacAddrError);
        }
        let sep = b[2];
        if sep != b':' && sep != b'-' {
            return Err(ParseMacAddrError);
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            let p = i * 3;
            if i > 0 && b[p - 1] != sep {
                return Err(ParseMacAddrError);
            }
            let hi = hex_digit(b[p]).ok_or(ParseMacAddrError)?;
            let lo = hex_digit(b[p + 1]).ok_or(ParseMacAddrError)?;
            *o = (hi << 4) | lo;
        }
        Ok(MacAddr(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Big-endian `u16` at `b[at..at + 2]`. Callers guarantee the range (checked
/// in `new_checked`).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Big-endian `u32` at `b[at..at + 4]`.
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn mac_at(b: &[u8], at: usize) -> MacAddr {
    // One 6-byte copy (a single bounds check) rather than six byte loads.
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    MacAddr(m)
}

#[inline(always)]
pub(crate) fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[inline(always)]
pub(crate) fn ip6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_display_and_parse() {
        let m = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0xff]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:ff");
        assert_eq!("02:42:AC:11:00:ff".parse::<MacAddr>(), Ok(m));
        assert_eq!("02-42-ac-11-00-ff".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:ff:",
            "02:42-ac:11:00:ff",
            "02:42:ac:11:00:fg",
            "0242ac1100ff00000",
            "2:42:ac:11:00:fff",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacAddrError), "{bad}");
        }
        assert!(ParseMacAddrError.to_string().contains("aa:bb:cc:dd:ee:ff"));
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert!(MacAddr::ZERO.is_unicast());
        assert_eq!(MacAddr::default(), MacAddr::ZERO);
    }

    proptest! {
        #[test]
        fn mac_u64_and_string_round_trip(b in any::<[u8; 6]>(), hi in any::<u16>()) {
            let m = MacAddr(b);
            prop_assert_eq!(MacAddr::from_u64(m.to_u64()), m);
            prop_assert!(m.to_u64() < (1 << 48));
            prop_assert_eq!(MacAddr::from_u64(m.to_u64() | (u64::from(hi) << 48)), m);
            prop_assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
        }

        #[test]
        fn mac_parse_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<MacAddr>();
        }
    }
}
