//! Neighbor resolution policy (RFC 826): which tracked neighbors to ask for,
//! to ask again, and whose MAC to forget.
//!
//! The state itself lives in the lock-free [`NeighborTable`]: workers learn
//! MACs and stamp `seen_ms` from every ARP frame, and flag `wanted` when a
//! packet needed a MAC that was missing; the control thread stamps
//! `asked_ms` when a request went out. Once per control tick the engine
//! hands this core the table's entries ([`NeighborTable::entries`]) and the
//! time, and carries out the actions:
//!
//! - unresolved and `wanted`, or not asked for [`RETRY_MS`] → ask;
//! - resolved and not heard from for [`EXPIRE_MS`] → forget the MAC (the
//!   entry stays tracked, so it is asked for again);
//! - resolved, not heard from for [`REFRESH_MS`], and not asked for
//!   [`REFRESH_RETRY_MS`] → ask again (a unicast poll, RFC 1122 §2.3.2.1
//!   (2), sent as a broadcast probe).
//!
//! [`NeighborTable`]: crate::neighbor::NeighborTable
//! [`NeighborTable::entries`]: crate::neighbor::NeighborTable::entries

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::family::Addr;

use crate::elapsed_ms;
use crate::neighbor::NeighborState;

/// Ask an unresolved neighbor again after this long: RFC 1122 §2.3.2.1
/// "A mechanism to prevent ARP flooding ... MUST be included. The
/// recommended maximum rate is 1 per second per destination." (A worker's
/// `wanted` flag asks at the next tick regardless: a packet is waiting.)
pub const RETRY_MS: u32 = 1_000;
/// Ask a resolved neighbor again after this long without hearing from it.
pub const REFRESH_MS: u32 = 30_000;
/// ... at most this often while it stays silent.
pub const REFRESH_RETRY_MS: u32 = RETRY_MS * 5;
/// Forget a neighbor's MAC after this long without hearing from it: RFC 1122
/// §2.3.2.1 "MUST provide a mechanism to flush out-of-date cache entries"
/// (three refresh polls unanswered).
pub const EXPIRE_MS: u32 = 95_000;

/// What the engine should do for one neighbor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResolverAction {
    /// Ask for this address's MAC: for IPv4 an ARP request (RFC 826) in
    /// the RFC 5227 §2.1.1 probe form (sender address 0.0.0.0), for IPv6 a
    /// Neighbor Solicitation (RFC 4861 §7.2.2); record it with
    /// [`NeighborTable::asked`](crate::neighbor::NeighborTable::asked) once
    /// sent.
    SendArpRequest(IpAddr),
    /// Forget this neighbor's MAC (it stopped answering); keep tracking it.
    Forget(IpAddr),
}

/// The resolution policy (see the module docs). It keeps no state of its
/// own beyond the queued actions: ages come from the table.
#[derive(Debug, Default)]
pub struct Resolver {
    actions: VecDeque<ResolverAction>,
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// One control tick: decides for every tracked neighbor, at `now_ms` on
    /// the engine clock.
    pub fn handle_tick<A: Addr>(&mut self, now_ms: u32, entries: &[NeighborState<A>]) {
        for e in entries {
            if let Some(a) = decide(now_ms, e) {
                self.actions.push_back(a);
            }
        }
    }

    /// The next action, in the order the entries came.
    pub fn poll_action(&mut self) -> Option<ResolverAction> {
        self.actions.pop_front()
    }
}

/// The rule for one neighbor.
fn decide<A: Addr>(now_ms: u32, e: &NeighborState<A>) -> Option<ResolverAction> {
    let since_asked = elapsed_ms(now_ms, e.asked_ms);
    let since_seen = elapsed_ms(now_ms, e.seen_ms);
    let ip = e.ip.ip();
    match e.mac {
        None if e.wanted || since_asked >= RETRY_MS => Some(ResolverAction::SendArpRequest(ip)),
        Some(_) if since_seen >= EXPIRE_MS => Some(ResolverAction::Forget(ip)),
        Some(_) if since_seen >= REFRESH_MS && since_asked >= REFRESH_RETRY_MS => {
            Some(ResolverAction::SendArpRequest(ip))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podlb_wire::MacAddr;

    const IP: u32 = 0xc612_0015;
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x21]);

    fn entry(mac: Option<MacAddr>, seen_ms: u32, asked_ms: u32, wanted: bool) -> NeighborState {
        NeighborState {
            ip: IP,
            mac,
            seen_ms,
            asked_ms,
            wanted,
        }
    }

    fn run(now_ms: u32, e: NeighborState) -> Vec<ResolverAction> {
        let mut r = Resolver::new();
        r.handle_tick(now_ms, &[e]);
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    const ASK: ResolverAction =
        ResolverAction::SendArpRequest(IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 21)));
    const FORGET: ResolverAction =
        ResolverAction::Forget(IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 21)));

    #[test]
    fn unresolved_and_wanted_is_asked_at_once() {
        // Just asked, but a worker needs it.
        assert_eq!(run(10_000, entry(None, 0, 9_990, true)), vec![ASK]);
    }

    #[test]
    fn unresolved_is_asked_once_a_second() {
        assert_eq!(run(10_000, entry(None, 0, 9_001, false)), vec![]);
        assert_eq!(run(10_000, entry(None, 0, 9_000, false)), vec![ASK]);
        // Across the clock's wrap.
        let now: u32 = 500;
        let asked = now.wrapping_sub(RETRY_MS);
        assert_eq!(run(now, entry(None, 0, asked, false)), vec![ASK]);
    }

    #[test]
    fn resolved_and_fresh_is_left_alone() {
        // Heard from 29.999 s ago, asked long ago: nothing.
        assert_eq!(run(100_000, entry(Some(MAC), 70_001, 0, false)), vec![]);
        // A worker's `wanted` does not matter once resolved.
        assert_eq!(run(100_000, entry(Some(MAC), 99_000, 0, true)), vec![]);
    }

    #[test]
    fn silent_for_30_s_is_asked_again_every_5_s() {
        // Seen 30 s ago, asked 5 s ago: ask.
        assert_eq!(
            run(100_000, entry(Some(MAC), 70_000, 95_000, false)),
            vec![ASK]
        );
        // Asked 4.999 s ago: wait.
        assert_eq!(
            run(100_000, entry(Some(MAC), 70_000, 95_001, false)),
            vec![]
        );
    }

    #[test]
    fn silent_for_95_s_is_forgotten() {
        assert_eq!(
            run(100_000, entry(Some(MAC), 5_000, 99_999, false)),
            vec![FORGET]
        );
        assert_eq!(run(100_000, entry(Some(MAC), 5_001, 99_999, false)), vec![]);
    }

    #[test]
    fn a_stamp_after_now_is_not_ancient() {
        // A worker stamped `seen` just after the control thread read the
        // clock: age 0, not 49 days.
        assert_eq!(run(100_000, entry(Some(MAC), 100_003, 0, false)), vec![]);
    }

    #[test]
    fn every_entry_is_decided_in_order() {
        let mut r = Resolver::new();
        let a = NeighborState {
            ip: 1,
            ..entry(None, 0, 0, true)
        };
        let b = NeighborState {
            ip: 2,
            ..entry(Some(MAC), 0, 0, false)
        };
        let c = NeighborState {
            ip: 3,
            ..entry(Some(MAC), 99_000, 0, false)
        };
        r.handle_tick(100_000, &[a, b, c]);
        assert_eq!(
            r.poll_action(),
            Some(ResolverAction::SendArpRequest(
                std::net::Ipv4Addr::from(1).into()
            ))
        );
        assert_eq!(
            r.poll_action(),
            Some(ResolverAction::Forget(std::net::Ipv4Addr::from(2).into()))
        );
        assert_eq!(r.poll_action(), None);
    }
}
