//! Neighbor cache for the addresses podlb sends to: backends. One table per
//! address family: IPv4 neighbors are resolved by ARP, IPv6 ones by
//! Neighbor Discovery (RFC 4861 §7.2).
//!
//! podlb resolves backend MACs itself (RFC 826): the kernel does not own the
//! VIP and, in TAP mode, has no address at all. The control thread decides
//! which addresses are tracked ([`NeighborTable::track`], [`NeighborTable::retain`])
//! and sends requests; workers learn MACs from every ARP packet whose sender
//! is tracked and read them per packet. No locks: keys are written only by
//! the control thread, values are single atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use crate::family::{Addr, AddrCell};
use podlb_wire::MacAddr;

const VALID: u64 = 1 << 48;

/// An unused key: the unspecified address.
#[inline(always)]
fn empty<A: Addr>(a: A) -> bool {
    a == A::default()
}

/// A free key: unused, or removed (all ones: never a neighbor).
#[inline(always)]
fn free<A: Addr>(a: A) -> bool {
    empty(a) || a == A::TOMBSTONE
}

#[derive(Default)]
struct Entry<A: Addr> {
    ip: A::Cell,
    /// mac:48 | VALID
    mac: AtomicU64,
    /// Last time (ms) a reply or any ARP from it was seen.
    seen_ms: AtomicU32,
    /// Last time (ms) the control thread asked for it.
    asked_ms: AtomicU32,
    /// Set by workers when they needed the MAC and had none.
    wanted: AtomicU32,
}

/// State of one tracked neighbor, for the control thread and /status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborState<A = u32> {
    pub ip: A,
    pub mac: Option<MacAddr>,
    pub seen_ms: u32,
    pub asked_ms: u32,
    pub wanted: bool,
}

/// The neighbors of one family (`u32`: IPv4, the default; `u128`: IPv6).
pub struct NeighborTable<A: Addr = u32> {
    entries: Box<[Entry<A>]>,
    mask: usize,
}

impl<A: Addr> NeighborTable<A> {
    /// Room for `capacity` addresses (rounded up to a power of two, ×2 for probing).
    pub fn new(capacity: usize) -> NeighborTable<A> {
        let n = (capacity.max(16) * 2).next_power_of_two();
        NeighborTable {
            entries: (0..n).map(|_| Entry::default()).collect(),
            mask: n - 1,
        }
    }

    #[inline]
    fn start(&self, ip: A) -> usize {
        (ip.fold().wrapping_mul(0x9e37_79b1) >> 7) as usize & self.mask
    }

    #[inline]
    fn find(&self, ip: A) -> Option<&Entry<A>> {
        if free(ip) {
            return None;
        }
        let mut i = self.start(ip);
        for _ in 0..=self.mask {
            let e = &self.entries[i];
            match e.ip.load(Acquire) {
                k if k == ip => return Some(e),
                k if empty(k) => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The MAC of `ip`, if tracked and resolved.
    #[inline]
    pub fn lookup(&self, ip: A) -> Option<MacAddr> {
        let e = self.find(ip)?;
        let m = e.mac.load(Relaxed);
        (m & VALID != 0).then(|| MacAddr::from_u64(m & 0xffff_ffff_ffff))
    }

    /// Notes that a worker needed `ip` and had no MAC (the control thread
    /// then asks at once instead of at its next refresh).
    #[inline]
    pub fn want(&self, ip: A) {
        if let Some(e) = self.find(ip) {
            e.wanted.store(1, Relaxed);
        }
    }

    /// Learns `ip` → `mac` if `ip` is tracked. Returns true if tracked.
    #[inline]
    pub fn learn(&self, ip: A, mac: MacAddr, now_ms: u32) -> bool {
        let Some(e) = self.find(ip) else { return false };
        if !mac.is_unicast() || mac == MacAddr::ZERO {
            return true;
        }
        let v = mac.to_u64() | VALID;
        if e.mac.load(Relaxed) != v {
            e.mac.store(v, Relaxed);
        }
        e.seen_ms.store(now_ms, Relaxed);
        e.wanted.store(0, Relaxed);
        true
    }

    /// Starts tracking `ip` (control thread only). False if the table is full.
    pub fn track(&self, ip: A) -> bool {
        if free(ip) || self.find(ip).is_some() {
            return !free(ip);
        }
        let mut i = self.start(ip);
        for _ in 0..=self.mask {
            let e = &self.entries[i];
            let k = e.ip.load(Relaxed);
            if free(k) {
                e.mac.store(0, Relaxed);
                e.seen_ms.store(0, Relaxed);
                e.asked_ms.store(0, Relaxed);
                e.wanted.store(1, Relaxed);
                e.ip.store(ip, Release);
                return true;
            }
            i = (i + 1) & self.mask;
        }
        false
    }

    /// Stops tracking every address for which `keep` is false (control thread only).
    pub fn retain(&self, mut keep: impl FnMut(A) -> bool) {
        for e in self.entries.iter() {
            let k = e.ip.load(Relaxed);
            if !free(k) && !keep(k) {
                e.ip.store(A::TOMBSTONE, Release);
                e.mac.store(0, Relaxed);
            }
        }
    }

    /// Forgets the MAC of `ip` (it stopped answering); keeps tracking it.
    pub fn invalidate(&self, ip: A) {
        if let Some(e) = self.find(ip) {
            e.mac.store(0, Relaxed);
        }
    }

    /// Records that the control thread sent a request for `ip` now.
    pub fn asked(&self, ip: A, now_ms: u32) {
        if let Some(e) = self.find(ip) {
            e.asked_ms.store(now_ms, Relaxed);
            e.wanted.store(0, Relaxed);
        }
    }

    /// Every tracked neighbor.
    pub fn entries(&self) -> Vec<NeighborState<A>> {
        self.entries
            .iter()
            .filter_map(|e| {
                let ip = e.ip.load(Acquire);
                if free(ip) {
                    return None;
                }
                let m = e.mac.load(Relaxed);
                Some(NeighborState {
                    ip,
                    mac: (m & VALID != 0).then(|| MacAddr::from_u64(m & 0xffff_ffff_ffff)),
                    seen_ms: e.seen_ms.load(Relaxed),
                    asked_ms: e.asked_ms.load(Relaxed),
                    wanted: e.wanted.load(Relaxed) != 0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_learn_lookup_retain() {
        let t: NeighborTable = NeighborTable::new(4);
        let mac = MacAddr([2, 0, 0, 0, 0, 0x21]);
        assert!(
            !t.learn(0xc612_0015, mac, 1),
            "untracked addresses are not learned"
        );
        assert!(t.track(0xc612_0015));
        assert_eq!(t.lookup(0xc612_0015), None);
        assert!(t.entries()[0].wanted);
        assert!(t.learn(0xc612_0015, mac, 5));
        assert_eq!(t.lookup(0xc612_0015), Some(mac));
        assert!(!t.learn(0xc612_0015, MacAddr::BROADCAST, 6) || t.lookup(0xc612_0015) == Some(mac));
        for i in 0..20 {
            assert!(t.track(0x0a00_0000 + i));
        }
        t.retain(|ip| ip != 0xc612_0015);
        assert_eq!(t.lookup(0xc612_0015), None);
        assert_eq!(t.entries().len(), 20);
        assert!(t.track(0xc612_0015), "a tombstone is reused");
        assert!(t.lookup(0x0a00_0013).is_none());
        t.learn(0x0a00_0013, mac, 1);
        assert_eq!(t.lookup(0x0a00_0013), Some(mac));
    }

    #[test]
    fn ipv6_neighbors_track_and_learn() {
        let t: NeighborTable<u128> = NeighborTable::new(4);
        let a: u128 = "2001:2::21".parse::<std::net::Ipv6Addr>().unwrap().into();
        let mac = MacAddr([2, 0, 0, 0, 0, 0x21]);
        assert!(!t.track(0) && !t.track(u128::MAX));
        assert!(t.track(a));
        assert!(t.learn(a, mac, 3));
        assert_eq!(t.lookup(a), Some(mac));
        assert_eq!(t.lookup(a + 1), None);
        t.retain(|ip| ip != a);
        assert_eq!(t.lookup(a), None);
        assert!(t.track(a));
    }
}
