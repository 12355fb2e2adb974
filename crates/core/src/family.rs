//! Address families: the one type parameter that lets the flow table, the
//! neighbor cache and the steering code serve IPv4 and IPv6 alike.
//!
//! Each family keeps its own compact address type on the hot path (`u32`
//! for IPv4, `u128` for IPv6, host byte order), so an IPv4 flow stays one
//! 64-byte line and an IPv6 flow pays only for its own bytes
//! (docs/decisions.md §67). Where the families share one map (the
//! snapshot's listeners and VIPs), addresses are *wide*: a `u128`, IPv4
//! ones as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291
//! §2.5.5.2), which no IPv6 VIP or backend may be (config rejects them).

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::bits::Low;
use crate::hash::mix64;

/// `::ffff:0:0/96`: the IPv4-mapped prefix of wide IPv4 addresses.
const MAPPED: u128 = 0xffff_0000_0000;

/// An address of one family, as the data plane holds it.
pub trait Addr: Copy + Eq + Ord + Hash + Default + Debug + Send + Sync + 'static {
    /// IPv6 (true) or IPv4.
    const V6: bool;
    /// The atomic cell an address is stored in where workers read it
    /// concurrently (the neighbor cache's keys).
    type Cell: AddrCell<Self>;
    /// The shared 128-bit form (see the module docs).
    fn wide(self) -> u128;
    /// The address of this family in `w`, if `w` is one.
    fn from_wide(w: u128) -> Option<Self>;
    fn ip(self) -> IpAddr;
    fn from_ip(ip: IpAddr) -> Option<Self>;
    /// 64 bits that depend on every bit of the address, for hashing.
    fn fold(self) -> u64;
    /// An address that is never a real neighbor or flow endpoint (all
    /// ones): marks removed keys.
    const TOMBSTONE: Self;
}

/// Wide form of an [`IpAddr`].
pub fn wide(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).wide(),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The [`IpAddr`] of a wide address.
pub fn unwide(w: u128) -> IpAddr {
    match u32::from_wide(w) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(w)),
    }
}

/// Whether an IPv6 address lies in the IPv4-mapped prefix (not usable as
/// an IPv6 VIP or backend: its wide form would be an IPv4 address's).
pub fn is_v4_mapped(a: Ipv6Addr) -> bool {
    u128::from(a) >> 32 == MAPPED >> 32
}

impl Addr for u32 {
    const V6: bool = false;
    type Cell = AtomicU32;
    const TOMBSTONE: u32 = u32::MAX;
    #[inline(always)]
    fn wide(self) -> u128 {
        MAPPED | u128::from(self)
    }
    #[inline(always)]
    fn from_wide(w: u128) -> Option<u32> {
        if w >> 32 == MAPPED >> 32 {
            u32::try_from(w & 0xffff_ffff).ok()
        } else {
            None
        }
    }
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
    fn from_ip(ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => Some(u32::from(a)),
            IpAddr::V6(_) => None,
        }
    }
    #[inline(always)]
    fn fold(self) -> u64 {
        u64::from(self)
    }
}

impl Addr for u128 {
    const V6: bool = true;
    type Cell = Cell128;
    const TOMBSTONE: u128 = u128::MAX;
    #[inline(always)]
    fn wide(self) -> u128 {
        self
    }
    #[inline(always)]
    fn from_wide(w: u128) -> Option<u128> {
        (u32::from_wide(w).is_none()).then_some(w)
    }
    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
    fn from_ip(ip: IpAddr) -> Option<u128> {
        match ip {
            IpAddr::V6(a) => Some(u128::from(a)),
            IpAddr::V4(_) => None,
        }
    }
    #[inline(always)]
    fn fold(self) -> u64 {
        // The halves are mixed, not just xored: an xor would map every
        // address with equal halves to 0.
        let hi: u64 = (self >> 64).low();
        mix64(hi) ^ Low::<u64>::low(self)
    }
}

/// An address in atomics, read by workers while the control thread writes
/// it. A key is only ever written over an empty or removed one, and a
/// reader compares what it read with the key it looks for, so a torn read
/// of a 128-bit key (half old, half new) matches nothing real: half of
/// it is the all-ones tombstone or zero.
pub trait AddrCell<A>: Default + Send + Sync {
    fn load(&self, o: Ordering) -> A;
    fn store(&self, a: A, o: Ordering);
}

impl AddrCell<u32> for AtomicU32 {
    #[inline(always)]
    fn load(&self, o: Ordering) -> u32 {
        AtomicU32::load(self, o)
    }
    #[inline(always)]
    fn store(&self, a: u32, o: Ordering) {
        AtomicU32::store(self, a, o);
    }
}

/// Two 64-bit atomics: the high half is written first and read last.
#[derive(Default)]
pub struct Cell128 {
    hi: AtomicU64,
    lo: AtomicU64,
}

impl AddrCell<u128> for Cell128 {
    #[inline(always)]
    fn load(&self, o: Ordering) -> u128 {
        let lo = self.lo.load(o);
        let hi = self.hi.load(o);
        (u128::from(hi) << 64) | u128::from(lo)
    }
    #[inline(always)]
    fn store(&self, a: u128, o: Ordering) {
        self.hi.store((a >> 64).low(), o);
        self.lo.store(a.low(), o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_forms_keep_families_apart() {
        let v4 = u32::from(Ipv4Addr::new(198, 18, 0, 10));
        let w = v4.wide();
        assert_eq!(unwide(w), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)));
        assert_eq!(u32::from_wide(w), Some(v4));
        assert_eq!(u128::from_wide(w), None);
        let v6: Ipv6Addr = "2001:2::10".parse().unwrap();
        assert_eq!(u32::from_wide(u128::from(v6)), None);
        assert_eq!(unwide(u128::from(v6)), IpAddr::V6(v6));
        assert!(is_v4_mapped("::ffff:198.18.0.1".parse().unwrap()));
        assert!(!is_v4_mapped(v6));
        assert_eq!(
            wide(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            MAPPED | 0x0102_0304
        );
    }

    #[test]
    fn fold_sees_both_halves() {
        let a: u128 = u128::from("2001:2::1".parse::<Ipv6Addr>().unwrap());
        let b: u128 = u128::from("2001:3::1".parse::<Ipv6Addr>().unwrap());
        assert_ne!(a.fold(), b.fold());
        assert_ne!((5u128 << 64 | 5).fold(), 0);
    }

    #[test]
    fn cell_round_trips() {
        let c = Cell128::default();
        c.store(u128::MAX - 7, Ordering::Relaxed);
        assert_eq!(c.load(Ordering::Relaxed), u128::MAX - 7);
    }
}
