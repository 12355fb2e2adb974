//! Refusal holds (`flows.refused_hold_s`, docs/decisions.md §47): a backend
//! that answered a client's SYN with a RST is held out of new connections
//! for a while, so the client's retransmitted SYN goes to another backend.
//!
//! - [`Holds::handle_refusal`]: the first refusal of a backend holds it
//!   ([`HoldAction::Hold`]: rebuild the snapshot without it); later ones
//!   while held extend the hold (no rebuild: flows steered before the
//!   rebuilt snapshot still report).
//! - [`Holds::handle_timeout`]: holds whose deadline has come end
//!   ([`HoldAction::Release`]: rebuild with it).
//!
//! The snapshot filter asks [`Holds::is_held`]; whether a hold would empty a
//! service is decided there ([`crate::health::filter_services`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the engine should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldAction {
    /// `backend` is held out for `hold` from now on: rebuild the snapshot.
    Hold { backend: SocketAddr, hold: Duration },
    /// `backend`'s hold is over: rebuild the snapshot.
    Release(SocketAddr),
}

/// The held backends and until when (see the module docs).
#[derive(Debug, Default)]
pub struct Holds {
    held: BTreeMap<SocketAddr, Instant>,
    actions: VecDeque<HoldAction>,
}

impl Holds {
    pub fn new() -> Holds {
        Holds::default()
    }

    /// `backend` refused a connection at `now`: hold it out until `now +
    /// hold`, or longer if it is held until later already.
    pub fn handle_refusal(&mut self, now: Instant, backend: SocketAddr, hold: Duration) {
        let until = now + hold;
        if let Some(prev) = self.held.get_mut(&backend) {
            *prev = (*prev).max(until);
        } else {
            self.held.insert(backend, until);
            self.actions.push_back(HoldAction::Hold { backend, hold });
        }
    }

    /// Ends the holds due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let actions = &mut self.actions;
        self.held.retain(|&backend, until| {
            let keep = *until > now;
            if !keep {
                actions.push_back(HoldAction::Release(backend));
            }
            keep
        });
    }

    /// When the next hold ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<HoldAction> {
        self.actions.pop_front()
    }

    /// Whether `backend` is held out.
    pub fn is_held(&self, backend: SocketAddr) -> bool {
        self.held.contains_key(&backend)
    }

    /// The held backends and the time each has left at `now`, by address.
    pub fn held(&self, now: Instant) -> Vec<(SocketAddr, Duration)> {
        self.held
            .iter()
            .map(|(&a, &until)| (a, until.saturating_duration_since(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const HOLD: Duration = Duration::from_secs(10);

    fn backend(port: u16) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::new(198, 18, 0, 21).into(), port)
    }

    fn drain(h: &mut Holds) -> Vec<HoldAction> {
        std::iter::from_fn(|| h.poll_action()).collect()
    }

    #[test]
    fn first_refusal_holds_and_asks_for_a_rebuild() {
        let mut h = Holds::new();
        let t0 = Instant::now();
        h.handle_refusal(t0, backend(80), HOLD);
        assert_eq!(
            drain(&mut h),
            vec![HoldAction::Hold {
                backend: backend(80),
                hold: HOLD
            }]
        );
        assert!(h.is_held(backend(80)));
        assert!(!h.is_held(backend(81)));
        assert_eq!(h.held(t0), vec![(backend(80), HOLD)]);
        assert_eq!(h.poll_timeout(), Some(t0 + HOLD));
    }

    #[test]
    fn later_refusals_extend_without_a_rebuild() {
        let mut h = Holds::new();
        let t0 = Instant::now();
        h.handle_refusal(t0, backend(80), HOLD);
        drain(&mut h);
        // An earlier deadline does not shorten the hold; a later one extends.
        h.handle_refusal(t0, backend(80), Duration::from_secs(5));
        h.handle_refusal(t0 + Duration::from_secs(2), backend(80), HOLD);
        assert_eq!(drain(&mut h), vec![]);
        assert_eq!(h.held(t0), vec![(backend(80), Duration::from_secs(12))]);
    }

    #[test]
    fn holds_end_at_their_deadline() {
        let mut h = Holds::new();
        let t0 = Instant::now();
        h.handle_refusal(t0, backend(81), HOLD);
        h.handle_refusal(t0 + Duration::from_secs(1), backend(80), HOLD);
        drain(&mut h);
        h.handle_timeout(t0 + HOLD - Duration::from_millis(1));
        assert_eq!(drain(&mut h), vec![]);
        h.handle_timeout(t0 + HOLD);
        assert_eq!(drain(&mut h), vec![HoldAction::Release(backend(81))]);
        assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_secs(11)));
        h.handle_timeout(t0 + Duration::from_secs(11));
        assert_eq!(drain(&mut h), vec![HoldAction::Release(backend(80))]);
        assert!(h.held(t0).is_empty());
        assert_eq!(h.poll_timeout(), None);
        // Refused again after the hold ended: held (and rebuilt) again.
        h.handle_refusal(t0 + Duration::from_secs(20), backend(80), HOLD);
        assert_eq!(drain(&mut h).len(), 1);
    }
}
