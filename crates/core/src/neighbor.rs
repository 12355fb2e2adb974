//! Neighbor (ARP) cache for the addresses podlb sends to: backends.
//!
//! podlb resolves backend MACs itself (RFC 826): the kernel does not own the
//! VIP and, in TAP mode, has no address at all. The control thread decides
//! which addresses are tracked ([`NeighborTable::track`], [`NeighborTable::retain`])
//! and sends requests; workers learn MACs from every ARP packet whose sender
//! is tracked and read them per packet. No locks: keys are written only by
//! the control thread, values are single atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use podlb_wire::MacAddr;

const EMPTY: u32 = 0;
/// 255.255.255.255 is never a neighbor; it marks a removed key.
const TOMBSTONE: u32 = u32::MAX;
const VALID: u64 = 1 << 48;

#[derive(Default)]
struct Entry {
    ip: AtomicU32,
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
pub struct NeighborState {
    pub ip: u32,
    pub mac: Option<MacAddr>,
    pub seen_ms: u32,
    pub asked_ms: u32,
    pub wanted: bool,
}

pub struct NeighborTable {
    entries: Box<[Entry]>,
    mask: usize,
}

impl NeighborTable {
    /// Room for `capacity` addresses (rounded up to a power of two, ×2 for probing).
    pub fn new(capacity: usize) -> NeighborTable {
        let n = (capacity.max(16) * 2).next_power_of_two();
        NeighborTable {
            entries: (0..n).map(|_| Entry::default()).collect(),
            mask: n - 1,
        }
    }

    #[inline]
    fn start(&self, ip: u32) -> usize {
        (ip.wrapping_mul(0x9e37_79b1) >> 7) as usize & self.mask
    }

    #[inline]
    fn find(&self, ip: u32) -> Option<&Entry> {
        if ip == EMPTY || ip == TOMBSTONE {
            return None;
        }
        let mut i = self.start(ip);
        for _ in 0..=self.mask {
            let e = &self.entries[i];
            match e.ip.load(Acquire) {
                k if k == ip => return Some(e),
                EMPTY => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The MAC of `ip`, if tracked and resolved.
    #[inline]
    pub fn lookup(&self, ip: u32) -> Option<MacAddr> {
        let e = self.find(ip)?;
        let m = e.mac.load(Relaxed);
        (m & VALID != 0).then(|| MacAddr::from_u64(m & 0xffff_ffff_ffff))
    }

    /// Notes that a worker needed `ip` and had no MAC (the control thread
    /// then asks at once instead of at its next refresh).
    #[inline]
    pub fn want(&self, ip: u32) {
        if let Some(e) = self.find(ip) {
            e.wanted.store(1, Relaxed);
        }
    }

    /// Learns `ip` → `mac` if `ip` is tracked. Returns true if tracked.
    #[inline]
    pub fn learn(&self, ip: u32, mac: MacAddr, now_ms: u32) -> bool {
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
    pub fn track(&self, ip: u32) -> bool {
        if ip == EMPTY || ip == TOMBSTONE || self.find(ip).is_some() {
            return ip != EMPTY && ip != TOMBSTONE;
        }
        let mut i = self.start(ip);
        for _ in 0..=self.mask {
            let e = &self.entries[i];
            let k = e.ip.load(Relaxed);
            if k == EMPTY || k == TOMBSTONE {
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
    pub fn retain(&self, mut keep: impl FnMut(u32) -> bool) {
        for e in self.entries.iter() {
            let k = e.ip.load(Relaxed);
            if k != EMPTY && k != TOMBSTONE && !keep(k) {
                e.ip.store(TOMBSTONE, Release);
                e.mac.store(0, Relaxed);
            }
        }
    }

    /// Forgets the MAC of `ip` (it stopped answering); keeps tracking it.
    pub fn invalidate(&self, ip: u32) {
        if let Some(e) = self.find(ip) {
            e.mac.store(0, Relaxed);
        }
    }

    /// Records that the control thread sent a request for `ip` now.
    pub fn asked(&self, ip: u32, now_ms: u32) {
        if let Some(e) = self.find(ip) {
            e.asked_ms.store(now_ms, Relaxed);
            e.wanted.store(0, Relaxed);
        }
    }

    /// Every tracked neighbor.
    pub fn entries(&self) -> Vec<NeighborState> {
        self.entries
            .iter()
            .filter_map(|e| {
                let ip = e.ip.load(Acquire);
                if ip == EMPTY || ip == TOMBSTONE {
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
        let t = NeighborTable::new(4);
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
}
