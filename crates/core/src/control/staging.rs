//! Snapshot staging: a new snapshot waits for its backends' ARP answers
//! before it is published, so the first SYN to a new backend does not meet
//! an empty neighbor cache; the control loop keeps running meanwhile (VRRP
//! adverts, sync).
//!
//! - [`Staging::stage`] a snapshot; a newer one replaces an older one still
//!   waiting, and the update clock keeps the older one's API event (the
//!   oldest not yet published).
//! - The engine tells [`Staging::handle_missing`] which backends are still
//!   unresolved (it polls the neighbor table while a stage waits).
//! - Out come ARP requests for them at once and every [`ASK_EVERY`], and
//!   [`StagingAction::Publish`] once none is missing, or after [`WAIT`]
//!   whatever is missing (those flows wait for ARP in the workers).
//!
//! Generic over what is staged (`podlb_core::service::Snapshot` in the
//! engine) so the rules are tested without building one.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a staged snapshot waits for its backends' ARP answers.
pub const WAIT: Duration = Duration::from_millis(800);
/// ARP requests for a staged snapshot's missing backends are repeated this
/// often.
pub const ASK_EVERY: Duration = Duration::from_millis(200);

/// What the engine should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagingAction<T> {
    /// Broadcast an ARP request for this backend (or next hop) (RFC 826).
    SendArpRequest(IpAddr),
    /// Publish the staged item.
    Publish(Published<T>),
}

/// A stage that is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published<T> {
    pub item: T,
    /// Backends still unresolved (0 unless the wait ran out).
    pub unresolved: usize,
    /// Arrival of the oldest API event behind it (for the update clock).
    pub event_at: Option<Instant>,
}

#[derive(Debug)]
struct Stage<T> {
    item: T,
    deadline: Instant,
    next_ask: Instant,
    event_at: Option<Instant>,
}

/// At most one staged item (see the module docs).
#[derive(Debug)]
pub struct Staging<T> {
    stage: Option<Stage<T>>,
    actions: VecDeque<StagingAction<T>>,
}

impl<T> Default for Staging<T> {
    fn default() -> Self {
        Staging {
            stage: None,
            actions: VecDeque::new(),
        }
    }
}

impl<T> Staging<T> {
    pub fn new() -> Staging<T> {
        Staging::default()
    }

    /// Stages `item` at `now`, replacing a stage still waiting. `event_at`:
    /// arrival of the API event behind it, if any.
    pub fn stage(&mut self, now: Instant, item: T, event_at: Option<Instant>) {
        // The update clock runs from the oldest event not yet published.
        let event_at = match (self.stage.as_ref().and_then(|s| s.event_at), event_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.stage = Some(Stage {
            item,
            deadline: now + WAIT,
            next_ask: now,
            event_at,
        });
    }

    /// The item waiting, if any (to find its unresolved backends).
    pub fn pending(&self) -> Option<&T> {
        self.stage.as_ref().map(|s| &s.item)
    }

    /// The waiting item's backends that are unresolved at `now`.
    pub fn handle_missing(&mut self, now: Instant, missing: &[IpAddr]) {
        let Some(s) = self.stage.as_mut() else {
            return;
        };
        if !missing.is_empty() && now < s.deadline {
            if now >= s.next_ask {
                self.actions
                    .extend(missing.iter().map(|&ip| StagingAction::SendArpRequest(ip)));
                s.next_ask = now + ASK_EVERY;
            }
            return;
        }
        if let Some(s) = self.stage.take() {
            self.actions.push_back(StagingAction::Publish(Published {
                item: s.item,
                unresolved: missing.len(),
                event_at: s.event_at,
            }));
        }
    }

    /// When the waiting item next asks or gives up waiting (the engine polls
    /// more often, as answers arrive).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.stage.as_ref().map(|s| s.next_ask.min(s.deadline))
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<StagingAction<T>> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 21));
    const B2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 22));

    fn drain(s: &mut Staging<u64>) -> Vec<StagingAction<u64>> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn publish(item: u64, unresolved: usize, event_at: Option<Instant>) -> StagingAction<u64> {
        StagingAction::Publish(Published {
            item,
            unresolved,
            event_at,
        })
    }

    #[test]
    fn resolved_backends_publish_at_once() {
        let mut s = Staging::new();
        let t0 = Instant::now();
        s.stage(t0, 7, None);
        assert_eq!(s.pending(), Some(&7));
        s.handle_missing(t0, &[]);
        assert_eq!(drain(&mut s), vec![publish(7, 0, None)]);
        assert_eq!(s.pending(), None);
        assert_eq!(s.poll_timeout(), None);
        // Nothing staged: nothing happens.
        s.handle_missing(t0, &[B1]);
        assert_eq!(drain(&mut s), vec![]);
    }

    #[test]
    fn missing_backends_are_asked_every_200_ms_until_resolved() {
        let mut s = Staging::new();
        let t0 = Instant::now();
        s.stage(t0, 7, None);
        let mut asked = Vec::new();
        // The engine polls every 5 ms.
        let mut t = Duration::ZERO;
        while t < Duration::from_millis(500) {
            s.handle_missing(t0 + t, &[B1, B2]);
            for a in drain(&mut s) {
                assert!(matches!(a, StagingAction::SendArpRequest(_)), "{a:?}");
                asked.push((t.as_millis(), a));
            }
            t += Duration::from_millis(5);
        }
        let at: Vec<u128> = asked.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![0, 0, 200, 200, 400, 400]);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(600)));
        // B1 answered; B2 too a little later.
        s.handle_missing(t0 + Duration::from_millis(505), &[B2]);
        assert_eq!(drain(&mut s), vec![]);
        s.handle_missing(t0 + Duration::from_millis(510), &[]);
        assert_eq!(drain(&mut s), vec![publish(7, 0, None)]);
    }

    #[test]
    fn published_after_800_ms_anyway() {
        let mut s = Staging::new();
        let t0 = Instant::now();
        s.stage(t0, 7, None);
        s.handle_missing(t0 + WAIT - Duration::from_millis(1), &[B1, B2]);
        assert!(drain(&mut s)
            .iter()
            .all(|a| matches!(a, StagingAction::SendArpRequest(_))));
        s.handle_missing(t0 + WAIT, &[B1, B2]);
        assert_eq!(drain(&mut s), vec![publish(7, 2, None)]);
    }

    #[test]
    fn a_newer_stage_replaces_an_older_one_and_keeps_its_event() {
        let mut s = Staging::new();
        let t0 = Instant::now();
        let e1 = t0 - Duration::from_millis(3);
        s.stage(t0, 7, Some(e1));
        s.handle_missing(t0, &[B1]);
        drain(&mut s);
        // 600 ms later a newer one: its own 800 ms and an immediate ask; the
        // update clock still runs from the older event.
        let t1 = t0 + Duration::from_millis(600);
        s.stage(t1, 8, Some(t1));
        assert_eq!(s.pending(), Some(&8));
        s.handle_missing(t1, &[B1]);
        assert_eq!(drain(&mut s), vec![StagingAction::SendArpRequest(B1)]);
        // The older stage's deadline is gone: at t0 + 800 ms (t1 + 200 ms)
        // the newer one asks again.
        s.handle_missing(t0 + WAIT, &[B1]);
        assert_eq!(drain(&mut s), vec![StagingAction::SendArpRequest(B1)]);
        s.handle_missing(t1 + WAIT, &[B1]);
        assert_eq!(drain(&mut s), vec![publish(8, 1, Some(e1))]);
        // After publishing, a new stage starts a new update clock.
        s.stage(t1 + WAIT, 9, None);
        s.handle_missing(t1 + WAIT, &[]);
        assert_eq!(drain(&mut s), vec![publish(9, 0, None)]);
    }
}
