//! VIP address conflicts (RFC 5227 §2.4) and the clients to tell after a
//! takeover (`garp_unicast_clients`). Sans-IO: the control loop feeds in what
//! the workers recorded and the time, and carries out what comes back.
//!
//! Workers report lock-free: each keeps, in its own [`ConflictSlot`], the
//! latest (VIP, MAC) it saw claim a VIP, and counts every such frame as the
//! `vip_conflict` drop. The control thread samples both every tick; the
//! frames counted since the last sample are attributed to the pair in the
//! slot. With one claimant (the usual case: a misconfigured host, a stale
//! peer) the per-pair counts are exact; with several claimants at once
//! within one tick a pair may be missed or credited with another's frames,
//! while the per-VIP total (`podlb_vip_conflicts_total`) stays exact.
//!
//! [`ConflictSlot`]: crate::stats::ConflictSlot

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podlb_wire::MacAddr;

/// RFC 5227 §1.1 DEFEND_INTERVAL: at most one defending announcement per VIP
/// this often; also the log rate limit per (VIP, MAC).
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);
/// (VIP, MAC) pairs remembered; beyond this the least recently seen goes.
pub const MAX_ROWS: usize = 64;

/// One claimant of one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    pub vip: Ipv4Addr,
    pub mac: MacAddr,
    pub count: u64,
    pub last_seen: Instant,
    logged: Option<Instant>,
}

/// What the control loop should do about what it observed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Log these (rate-limited already): (vip, mac, frames so far).
    pub log: Vec<(Ipv4Addr, MacAddr, u64)>,
    /// Send one gratuitous ARP for each (RFC 5227 §2.4 (c), rate-limited).
    pub defend: Vec<Ipv4Addr>,
}

#[derive(Debug, Default)]
pub struct ConflictTracker {
    rows: Vec<ConflictRow>,
    /// Per worker: the `vip_conflict` count at the last sample.
    seen: Vec<u64>,
    /// Frames per VIP, for a monotonic counter.
    per_vip: BTreeMap<Ipv4Addr, u64>,
    defended: HashMap<Ipv4Addr, Instant>,
}

impl ConflictTracker {
    /// Feeds one worker's sample: its `vip_conflict` drop count and its
    /// conflict slot (`(generation, vip, mac)`, `None` while being written).
    /// `serving`: this instance serves the VIPs and so defends them.
    pub fn observe(
        &mut self,
        worker: usize,
        frames: u64,
        slot: Option<(u16, u32, [u8; 6])>,
        now: Instant,
        serving: bool,
        out: &mut Outcome,
    ) {
        if self.seen.len() <= worker {
            self.seen.resize(worker + 1, 0);
        }
        let delta = frames.wrapping_sub(self.seen[worker]);
        if delta == 0 || delta > u64::MAX / 2 {
            return;
        }
        // The slot is written before the counter; a torn read waits a tick
        // (the delta stays pending).
        let Some((_, vip, mac)) = slot else { return };
        self.seen[worker] = frames;
        let (vip, mac) = (Ipv4Addr::from(vip), MacAddr(mac));
        *self.per_vip.entry(vip).or_insert(0) += delta;
        let i = match self.rows.iter().position(|r| r.vip == vip && r.mac == mac) {
            Some(i) => i,
            None => {
                if self.rows.len() >= MAX_ROWS {
                    let oldest = (0..self.rows.len())
                        .min_by_key(|&i| self.rows[i].last_seen)
                        .unwrap_or(0);
                    self.rows.swap_remove(oldest);
                }
                self.rows.push(ConflictRow {
                    vip,
                    mac,
                    count: 0,
                    last_seen: now,
                    logged: None,
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        row.count += delta;
        row.last_seen = now;
        if row
            .logged
            .is_none_or(|t| now.duration_since(t) >= DEFEND_INTERVAL)
        {
            row.logged = Some(now);
            out.log.push((vip, mac, row.count));
        }
        if serving
            && !out.defend.contains(&vip)
            && self
                .defended
                .get(&vip)
                .is_none_or(|&t| now.duration_since(t) >= DEFEND_INTERVAL)
        {
            self.defended.insert(vip, now);
            out.defend.push(vip);
        }
    }

    /// The claimants, most recent first.
    pub fn rows(&self) -> Vec<ConflictRow> {
        let mut r = self.rows.clone();
        r.sort_by_key(|row| std::cmp::Reverse(row.last_seen));
        r
    }

    /// Conflicting frames per VIP since start (monotonic).
    pub fn per_vip(&self) -> Vec<(Ipv4Addr, u64)> {
        self.per_vip.iter().map(|(&v, &n)| (v, n)).collect()
    }
}

/// Unicast ARP replies owed to clients after a takeover, at most this many.
pub const MAX_UNICAST_CLIENTS: usize = 4096;

/// Picks whom to send a unicast ARP reply after becoming master
/// (`garp_unicast_clients`): one per distinct (VIP, client MAC) among the
/// live flows, to the first client address seen behind that MAC. Clients
/// behind a router share the router's MAC, and the router's ARP cache is what
/// needs the VIP's new MAC, so one reply per MAC is enough. Skips MACs that
/// are not unicast and VIPs no longer served. At most `limit`.
///
/// `flows` yields (client, vip, client MAC).
pub fn unicast_targets(
    flows: impl IntoIterator<Item = (u32, u32, MacAddr)>,
    is_vip: impl Fn(u32) -> bool,
    limit: usize,
) -> Vec<(Ipv4Addr, Ipv4Addr, MacAddr)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (client, vip, mac) in flows {
        if out.len() >= limit {
            break;
        }
        if !mac.is_unicast() || mac == MacAddr::ZERO || client == 0 || !is_vip(vip) {
            continue;
        }
        if seen.insert((vip, mac)) {
            out.push((Ipv4Addr::from(vip), Ipv4Addr::from(client), mac));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: u32 = 0xc612_0064;
    const M1: [u8; 6] = [2, 0, 0, 0, 0, 0x66];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 0x77];

    #[test]
    fn conflicts_are_counted_logged_and_defended_at_a_bounded_rate() {
        let mut t = ConflictTracker::default();
        let t0 = Instant::now();
        let mut out = Outcome::default();
        // Nothing counted: nothing to do, whatever the slot says.
        t.observe(0, 0, Some((1, VIP, M1)), t0, true, &mut out);
        assert_eq!(out, Outcome::default());
        // First frames: logged and defended.
        t.observe(0, 3, Some((1, VIP, M1)), t0, true, &mut out);
        assert_eq!(out.log, vec![(Ipv4Addr::from(VIP), MacAddr(M1), 3)]);
        assert_eq!(out.defend, vec![Ipv4Addr::from(VIP)]);
        // More within DEFEND_INTERVAL: counted, neither logged nor defended.
        for i in 1..=9u64 {
            let mut out = Outcome::default();
            let at = t0 + Duration::from_secs(i);
            t.observe(0, 3 + i, Some((2, VIP, M1)), at, true, &mut out);
            assert_eq!(out, Outcome::default(), "at {i} s");
        }
        // A second claimant of the same VIP is logged (per pair) but the VIP
        // was defended 9 s ago.
        let mut out = Outcome::default();
        let at = t0 + Duration::from_secs(9);
        t.observe(1, 5, Some((1, VIP, M2)), at, true, &mut out);
        assert_eq!(out.log, vec![(Ipv4Addr::from(VIP), MacAddr(M2), 5)]);
        assert!(out.defend.is_empty());
        // After DEFEND_INTERVAL: logged and defended again.
        let mut out = Outcome::default();
        let at = t0 + Duration::from_secs(10);
        t.observe(0, 13, Some((3, VIP, M1)), at, true, &mut out);
        assert_eq!(out.log, vec![(Ipv4Addr::from(VIP), MacAddr(M1), 13)]);
        assert_eq!(out.defend, vec![Ipv4Addr::from(VIP)]);
        assert_eq!(t.per_vip(), vec![(Ipv4Addr::from(VIP), 18)]);
        let rows = t.rows();
        assert_eq!(
            rows.iter().map(|r| (r.mac, r.count)).collect::<Vec<_>>(),
            vec![(MacAddr(M1), 13), (MacAddr(M2), 5)]
        );
        // Not serving (a backup): no defence.
        let mut out = Outcome::default();
        let at = t0 + Duration::from_secs(30);
        t.observe(0, 14, Some((4, VIP, M1)), at, false, &mut out);
        assert!(out.defend.is_empty());
        // A torn slot read leaves the frames pending, not lost.
        let mut out = Outcome::default();
        t.observe(0, 20, None, at, true, &mut out);
        t.observe(0, 20, Some((5, VIP, M1)), at, true, &mut out);
        assert_eq!(t.per_vip(), vec![(Ipv4Addr::from(VIP), 25)]);
    }

    #[test]
    fn rows_are_bounded() {
        let mut t = ConflictTracker::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ROWS as u64 * 3) {
            let mut mac = M1;
            let b = i.to_be_bytes();
            (mac[4], mac[5]) = (b[6], b[7]);
            let mut out = Outcome::default();
            let at = t0 + Duration::from_millis(i);
            t.observe(0, i + 1, Some((1, VIP, mac)), at, true, &mut out);
        }
        let rows = t.rows();
        assert_eq!(rows.len(), MAX_ROWS);
        // The most recent claimants are kept.
        assert_eq!(rows[0].mac.0[5], (MAX_ROWS * 3 - 1).to_le_bytes()[0]);
        assert_eq!(
            t.per_vip(),
            vec![(Ipv4Addr::from(VIP), MAX_ROWS as u64 * 3)]
        );
    }

    #[test]
    fn unicast_targets_one_per_vip_and_mac_bounded() {
        let vip2 = VIP + 1;
        let router = MacAddr([2, 0, 0, 0, 0, 1]);
        let flows = vec![
            // Two clients behind one router, to one VIP: one reply.
            (0xc613_0001, VIP, router),
            (0xc613_0002, VIP, router),
            // The same router to another VIP: a second reply.
            (0xc613_0001, vip2, router),
            // An on-link client.
            (0xc612_000a, VIP, MacAddr(M1)),
            // Junk: multicast/zero MAC, a VIP no longer served, no address.
            (0xc612_000b, VIP, MacAddr([1, 0, 0x5e, 0, 0, 1])),
            (0xc612_000c, VIP, MacAddr::ZERO),
            (0xc612_000d, VIP + 7, MacAddr(M2)),
            (0, VIP, MacAddr(M2)),
        ];
        let is_vip = |v: u32| v == VIP || v == vip2;
        let got = unicast_targets(flows.clone(), is_vip, 100);
        assert_eq!(
            got,
            vec![
                (Ipv4Addr::from(VIP), Ipv4Addr::from(0xc613_0001), router),
                (Ipv4Addr::from(vip2), Ipv4Addr::from(0xc613_0001), router),
                (
                    Ipv4Addr::from(VIP),
                    Ipv4Addr::from(0xc612_000a),
                    MacAddr(M1)
                ),
            ]
        );
        assert_eq!(unicast_targets(flows, is_vip, 2).len(), 2);
        // Many distinct clients: capped.
        let many = (0..10_000u32).map(|i| {
            let mut m = [2, 0, 0, 0, 0, 0];
            m[2..].copy_from_slice(&i.to_be_bytes());
            (0xc612_0000 + i, VIP, MacAddr(m))
        });
        assert_eq!(
            unicast_targets(many, is_vip, MAX_UNICAST_CLIENTS).len(),
            MAX_UNICAST_CLIENTS
        );
    }
}
