//! The incremental flow-table sweep: each control tick visits the next
//! `1/ticks_per_pass` of the slots, so a full pass takes `ticks_per_pass`
//! ticks (50 × 20 ms = 1 s in the engine) and no tick stalls on a large
//! table. On the way it
//!
//! - expires idle flows ([`FlowTable::sweep`]);
//! - counts the live flows per stats slot, published at the end of each
//!   pass ([`Sweeper::active`]);
//! - notes the backends live flows use ([`Sweeper::flow_backends`], as of
//!   the last pass), whose neighbors stay resolved while they drain
//!   ([`Sweeper::neighbors_to_keep`]);
//! - while this instance streams connection sync, picks the flows whose
//!   periodic refresh is due ([`sync::refresh_due`]: each flow about once per
//!   refresh period, spread over the period).

use std::collections::{HashSet, VecDeque};

use crate::flow::{Flow, FlowAddr, FlowTable, Phase};
use crate::sync;

/// The pace of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepPace {
    /// Ticks a full pass takes.
    pub ticks_per_pass: usize,
    /// Milliseconds between ticks.
    pub tick_ms: u32,
    /// Connection-sync refresh period, ms.
    pub refresh_period_ms: u32,
    /// Stats slots counted ([`crate::stats::MAX_STAT_SLOTS`]).
    pub stat_slots: usize,
}

/// What the engine should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepAction<A = u32> {
    /// Send this flow to the backups again (connection-sync refresh).
    Refresh(Flow<A>),
    /// A full pass ended: publish [`Sweeper::active`] and keep only the
    /// neighbors in [`Sweeper::neighbors_to_keep`].
    PassComplete,
}

/// The sweep's position and what the current pass has counted.
#[derive(Debug)]
pub struct Sweeper<A = u32> {
    pace: SweepPace,
    pos: usize,
    tick: usize,
    counting: Vec<u32>,
    active: Vec<u32>,
    counting_phases: [u32; 6],
    phases: [u32; 6],
    backends: HashSet<A>,
    flow_backends: HashSet<A>,
    actions: VecDeque<SweepAction<A>>,
}

impl<A: FlowAddr> Sweeper<A> {
    pub fn new(pace: SweepPace) -> Sweeper<A> {
        let pace = SweepPace {
            ticks_per_pass: pace.ticks_per_pass.max(1),
            ..pace
        };
        Sweeper {
            pace,
            pos: 0,
            tick: 0,
            counting: vec![0; pace.stat_slots],
            active: vec![0; pace.stat_slots],
            counting_phases: [0; 6],
            phases: [0; 6],
            backends: HashSet::new(),
            flow_backends: HashSet::new(),
            actions: VecDeque::new(),
        }
    }

    /// One control tick at `now_ms` on the engine clock: sweeps the next
    /// part of `flows`. `streaming`: this instance sends connection sync (a
    /// VRRP master or Lease holder with a sync link).
    pub fn handle_tick(&mut self, now_ms: u32, flows: &FlowTable<A>, streaming: bool) {
        let slots = flows.slot_count();
        let per_tick = slots.div_ceil(self.pace.ticks_per_pass);
        // Each slot is visited once per pass: the refresh window.
        let visit_ms = u32::try_from(self.pace.ticks_per_pass)
            .unwrap_or(u32::MAX)
            .saturating_mul(self.pace.tick_ms);
        let period_ms = self.pace.refresh_period_ms;
        let (counting, phases, backends, actions) = (
            &mut self.counting,
            &mut self.counting_phases,
            &mut self.backends,
            &mut self.actions,
        );
        // A pass visits every slot once: the last ticks of a pass may have
        // fewer (or no) slots left.
        let count = per_tick.min(slots.saturating_sub(self.pos));
        flows.sweep(self.pos, count, now_ms, |f| {
            if let Some(a) = counting.get_mut(usize::from(f.stat)) {
                *a += 1;
            }
            phases[Phase::from_flags(f.tcp).index()] += 1;
            backends.insert(f.backend);
            if streaming && sync::refresh_due(f, now_ms, period_ms, visit_ms) {
                actions.push_back(SweepAction::Refresh(*f));
            }
        });
        self.pos += count;
        self.tick += 1;
        if self.tick == self.pace.ticks_per_pass {
            self.tick = 0;
            self.pos = 0;
            std::mem::swap(&mut self.active, &mut self.counting);
            self.counting.iter_mut().for_each(|a| *a = 0);
            self.phases = std::mem::take(&mut self.counting_phases);
            self.flow_backends = std::mem::take(&mut self.backends);
            self.actions.push_back(SweepAction::PassComplete);
        }
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<SweepAction<A>> {
        self.actions.pop_front()
    }

    /// Live flows per stats slot, as of the last full pass.
    pub fn active(&self) -> &[u32] {
        &self.active
    }

    /// Live flows per phase (in [`Phase::ALL`] order), as of the last full
    /// pass.
    pub fn phases(&self) -> [u32; 6] {
        self.phases
    }

    /// Backend addresses seen in live flows during the last full pass.
    pub fn flow_backends(&self) -> &HashSet<A> {
        &self.flow_backends
    }

    /// The neighbors to keep tracking after a pass: the `current` backends
    /// (and VTEP next hops) of the published snapshot, the backends that
    /// still carry (draining) flows, the next hops `hop` gives for both
    /// (gateways of routed backends), and the next hops of the unicast
    /// `peers` (adverts go to their MACs, or to the gateway's for peers on
    /// other subnets). `hop` is the identity without routes.
    pub fn neighbors_to_keep(
        &self,
        current: impl IntoIterator<Item = A>,
        peers: impl IntoIterator<Item = A>,
        hop: impl Fn(A) -> A,
    ) -> HashSet<A> {
        let mut keep: HashSet<A> = current.into_iter().collect();
        keep.extend(self.flow_backends.iter().copied());
        let hops: Vec<A> = keep.iter().map(|&ip| hop(ip)).collect();
        keep.extend(hops);
        keep.extend(peers.into_iter().map(hop));
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tcp_state;

    use super::super::TEST_TIMEOUTS as T;
    const PACE: SweepPace = SweepPace {
        ticks_per_pass: 50,
        tick_ms: 20,
        refresh_period_ms: 10_000,
        stat_slots: 16,
    };

    use super::super::test_flow as flow;

    /// 30 established flows on backend 21 (stats slot 1), 20 on 22 (slot
    /// 2), and 5 half-open ones on 23 (slot 3).
    fn table() -> FlowTable {
        let t = FlowTable::new(4096, T);
        for i in 0..55u32 {
            let f = match i {
                0..30 => flow(i + 1, 21, 1, tcp_state::ESTABLISHED),
                30..50 => flow(i + 1, 22, 2, tcp_state::ESTABLISHED),
                _ => flow(i + 1, 23, 3, tcp_state::SYN),
            };
            t.insert(&f, false, 0).unwrap();
        }
        t
    }

    fn drain(s: &mut Sweeper) -> Vec<SweepAction> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    /// One full pass of 20 ms ticks from `start_ms`; what it asked for.
    fn pass(
        s: &mut Sweeper,
        flows: &FlowTable,
        start_ms: u32,
        streaming: bool,
    ) -> Vec<SweepAction> {
        for tick in 0..50 {
            s.handle_tick(start_ms + tick * 20, flows, streaming);
        }
        drain(s)
    }

    #[test]
    fn a_full_pass_takes_50_ticks_and_then_publishes_the_counts() {
        let flows = table();
        let mut s = Sweeper::new(PACE);
        for tick in 0..49 {
            s.handle_tick(tick * 20, &flows, false);
            assert_eq!(drain(&mut s), vec![], "tick {tick}");
        }
        assert!(s.active().iter().all(|&a| a == 0));
        assert!(s.flow_backends().is_empty());
        s.handle_tick(49 * 20, &flows, false);
        assert_eq!(drain(&mut s), vec![SweepAction::PassComplete]);
        assert_eq!(&s.active()[..4], &[0, 30, 20, 5]);
        assert_eq!(
            s.phases().iter().sum::<u32>(),
            55,
            "every flow in one phase"
        );
        assert_eq!(s.phases()[Phase::Syn.index()], 5);
        assert_eq!(
            s.flow_backends().iter().copied().collect::<HashSet<_>>(),
            HashSet::from([21, 22, 23])
        );
        // The next pass counts afresh: the half-open flows expire (3 s).
        let next = pass(&mut s, &flows, 4_001, false);
        assert_eq!(next, vec![SweepAction::PassComplete]);
        assert_eq!(&s.active()[..4], &[0, 30, 20, 0]);
        assert_eq!(s.phases()[Phase::Syn.index()], 0);
        assert_eq!(flows.len(), 50);
        assert!(!s.flow_backends().contains(&23));
    }

    #[test]
    fn refresh_picks_each_flow_once_per_period_while_streaming() {
        let flows = table();
        let mut s = Sweeper::new(PACE);
        // Not streaming: nothing to refresh.
        assert_eq!(
            pass(&mut s, &flows, 0, false),
            vec![SweepAction::PassComplete]
        );
        // Streaming for one period (10 passes of 1 s): every flow once. (100 s
        // in: `refresh_due`'s phases are offsets on the wrapping clock,
        // which the first period after the epoch does not tile.)
        let mut sent = std::collections::HashMap::new();
        for tick in 50..550 {
            s.handle_tick(100_000 + tick * 20, &flows, true);
            for a in drain(&mut s) {
                if let SweepAction::Refresh(f) = a {
                    *sent.entry(f.key.client).or_insert(0) += 1;
                }
            }
        }
        // (The half-open flows expired after 3 s, maybe before their turn.)
        let established: Vec<u32> = (1..=50).collect();
        for c in &established {
            assert_eq!(sent.get(c), Some(&1), "client {c}");
        }
        // A period at or below the pass sends on every visit.
        let mut every = Sweeper::new(SweepPace {
            refresh_period_ms: 1_000,
            ..PACE
        });
        let refreshed = pass(&mut every, &flows, 20_000, true)
            .iter()
            .filter(|a| matches!(a, SweepAction::Refresh(_)))
            .count();
        assert_eq!(refreshed, flows.len());
    }

    #[test]
    fn kept_neighbors_are_current_draining_their_hops_and_peers() {
        let flows = table();
        let mut s = Sweeper::new(PACE);
        pass(&mut s, &flows, 0, false);
        // Backend 22 was removed from the snapshot but carries flows; 24 is
        // new; 0x0a.. are routed through gateway 1; peer 0x0b.. too.
        let hop = |ip: u32| if ip >= 0x0a00_0000 { 1 } else { ip };
        let keep = s.neighbors_to_keep([21, 24, 0x0a00_0005], [0x0b00_0001], hop);
        assert_eq!(keep, HashSet::from([21, 22, 23, 24, 0x0a00_0005, 1]));
        // Without routes the peers themselves are kept.
        let keep = s.neighbors_to_keep([21], [0x0b00_0001], |ip| ip);
        assert_eq!(keep, HashSet::from([21, 22, 23, 0x0b00_0001]));
    }

    #[test]
    fn every_slot_is_visited_once_a_pass() {
        // 5,464 slots (not a multiple of 50) and 24 (fewer than 50): the
        // last ticks of a pass have fewer slots, or none, never the first
        // slots again (which would count their flows twice).
        for capacity in [4096, 1] {
            let flows = FlowTable::new(capacity, T);
            let n = flows.slot_count();
            assert_ne!(n % PACE.ticks_per_pass, 0);
            for i in 0..u32::try_from(flows.capacity()).unwrap() {
                let f = flow(i + 1, 21, 1, tcp_state::ESTABLISHED);
                if flows.insert(&f, false, 0).is_err() {
                    break;
                }
            }
            let live = u32::try_from(flows.len()).unwrap();
            let mut s = Sweeper::new(PACE);
            for n in 0..2 {
                let got = pass(&mut s, &flows, n * 1000, false);
                assert_eq!(got, vec![SweepAction::PassComplete]);
                assert_eq!(s.active()[1], live, "capacity {capacity}, pass {n}");
            }
        }
    }
}
