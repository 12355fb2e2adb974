//! Telling the link where the VIPs are: gratuitous ARP announcements, their
//! periodic refresh, unicast replies to clients after a takeover, and the
//! defence of a VIP another host claims.
//!
//! - [`Announcer::announce`]: at start, on becoming master (VRRP or the
//!   Lease) and for a VIP a new snapshot adds: a gratuitous ARP for each VIP
//!   at once, then more [`GARP_SPACING`] apart (RFC 5227 §2.3
//!   announcements; podlb sends [`GARP_COUNT`] 1 s apart where §1.1 has
//!   `ANNOUNCE_NUM` 2, `ANNOUNCE_INTERVAL` 2 s: a takeover wants the switches
//!   and clients moved quickly, as keepalived does).
//! - `garp_refresh_s`: while serving, one more announcement of every VIP
//!   each period (a first one a period after becoming master, which
//!   announces already).
//! - `garp_unicast_clients`: after a takeover, an RFC 826 reply (sender = VIP
//!   at the serving MAC) to each client MAC in the flow table
//!   ([`conflict::unicast_targets`]), spread over the first second.
//! - Conflicts (RFC 5227 §2.4): the workers' reports go through
//!   [`ConflictTracker`], which rate-limits logging and defence to one per
//!   [`conflict::DEFEND_INTERVAL`]; while serving a claimed VIP is defended
//!   with one gratuitous ARP (§2.4 (c): the VIP is not given up).
//!
//! The engine calls [`Announcer::handle_tick`] every control tick and
//! carries out [`Announcer::poll_action`].

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use podlb_wire::MacAddr;

use crate::conflict::{self, ConflictTracker};
use crate::flow::FlowTable;

/// Gratuitous ARPs per VIP at start and for a new VIP.
pub const GARP_COUNT: u32 = 3;
/// Between the gratuitous ARPs of one announcement.
pub const GARP_SPACING: Duration = Duration::from_secs(1);

/// One worker's conflict sample: its index, its `vip_conflict` drop count,
/// and its conflict slot (`(generation, vip, mac)`, `None` while being
/// written); see [`ConflictTracker::observe`].
pub type ConflictSample = (usize, u64, Option<(u16, u32, [u8; 6])>);

/// What the engine should send or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceAction {
    /// Announce this VIP at the serving MAC: a gratuitous ARP (RFC 5227
    /// §2.3 announcement) for an IPv4 VIP, an unsolicited Neighbor
    /// Advertisement to all nodes with the Override flag (RFC 4861 §7.2.6)
    /// for an IPv6 one.
    SendGarp(IpAddr),
    /// Send an ARP reply (RFC 826) to `client` at `mac`: `vip` is at the
    /// serving MAC.
    SendUnicastReply {
        vip: Ipv4Addr,
        client: Ipv4Addr,
        mac: MacAddr,
    },
    /// Another host claims `vip` (RFC 5227 §2.4); `count` frames so far. At
    /// most once per (VIP, MAC) per [`conflict::DEFEND_INTERVAL`].
    Conflict {
        vip: Ipv4Addr,
        mac: MacAddr,
        count: u64,
    },
    /// Defend `vip` with one gratuitous ARP (RFC 5227 §2.4 (c)); at most once
    /// per VIP per [`conflict::DEFEND_INTERVAL`], only while serving.
    Defend(Ipv4Addr),
}

/// A VIP still owed announcements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    vip: IpAddr,
    left: u32,
    at: Instant,
}

/// The announcement schedule (see the module docs).
#[derive(Debug)]
pub struct Announcer {
    /// `garp_refresh_s` (zero: off).
    refresh: Duration,
    /// Ticks the unicast replies are spread over.
    spread_ticks: usize,
    due: Vec<Due>,
    /// The next periodic announcement while serving.
    next_refresh: Option<Instant>,
    /// Unicast replies still owed (sent from the back), and how many go out
    /// per tick.
    unicast: Vec<(Ipv4Addr, Ipv4Addr, MacAddr)>,
    unicast_per_tick: usize,
    conflicts: ConflictTracker,
    actions: VecDeque<AnnounceAction>,
}

impl Announcer {
    /// `refresh`: `garp_refresh_s` (zero: no refresh); `spread_ticks`: the
    /// control ticks in a second, over which unicast replies are spread.
    pub fn new(refresh: Duration, spread_ticks: usize) -> Announcer {
        Announcer {
            refresh,
            spread_ticks: spread_ticks.max(1),
            due: Vec::new(),
            next_refresh: None,
            unicast: Vec::new(),
            unicast_per_tick: 1,
            conflicts: ConflictTracker::default(),
            actions: VecDeque::new(),
        }
    }

    /// Announces every VIP in `vips` `count` times, replacing what was still
    /// owed; the first announcements go out at once.
    pub fn announce(&mut self, now: Instant, vips: impl IntoIterator<Item = IpAddr>, count: u32) {
        self.due = vips
            .into_iter()
            .map(|vip| Due {
                vip,
                left: count,
                at: now,
            })
            .collect();
        self.send_due(now);
    }

    /// Announces new VIPs [`GARP_COUNT`] times besides what is owed already;
    /// the first announcements go out at once.
    pub fn announce_new(&mut self, now: Instant, vips: impl IntoIterator<Item = IpAddr>) {
        self.due.extend(vips.into_iter().map(|vip| Due {
            vip,
            left: GARP_COUNT,
            at: now,
        }));
        self.send_due(now);
    }

    /// One control tick: the periodic refresh (while `serving`; `vips` is
    /// read only when one is due), the announcements due, and this tick's
    /// share of the unicast replies.
    pub fn handle_tick(
        &mut self,
        now: Instant,
        serving: bool,
        vips: impl IntoIterator<Item = IpAddr>,
    ) {
        self.refresh(now, serving, vips);
        self.send_due(now);
        for _ in 0..self.unicast_per_tick {
            let Some((vip, client, mac)) = self.unicast.pop() else {
                break;
            };
            self.actions
                .push_back(AnnounceAction::SendUnicastReply { vip, client, mac });
        }
    }

    /// Became master (`garp_unicast_clients`): schedules a unicast reply to
    /// each client MAC among the live flows ([`conflict::unicast_targets`],
    /// at most [`conflict::MAX_UNICAST_CLIENTS`]), spread over the next
    /// second of ticks. Returns how many.
    pub fn handle_takeover(&mut self, flows: &FlowTable, is_vip: impl Fn(u32) -> bool) -> usize {
        let mut seen = Vec::new();
        flows.for_each(|f| {
            seen.push((f.key.client, f.key.vip, f.client_mac));
            seen.len() < 4 * conflict::MAX_UNICAST_CLIENTS
        });
        let mut due = conflict::unicast_targets(seen, is_vip, conflict::MAX_UNICAST_CLIENTS);
        due.reverse(); // sent from the back
        self.unicast_per_tick = due.len().div_ceil(self.spread_ticks).max(1);
        self.unicast = due;
        self.unicast.len()
    }

    /// The workers' conflict samples (RFC 5227 §2.4); `serving`: this
    /// instance serves the VIPs and so defends them.
    pub fn handle_conflicts(
        &mut self,
        now: Instant,
        serving: bool,
        samples: impl IntoIterator<Item = ConflictSample>,
    ) {
        let mut out = conflict::Outcome::default();
        for (worker, frames, slot) in samples {
            self.conflicts
                .observe(worker, frames, slot, now, serving, &mut out);
        }
        for (vip, mac, count) in out.log {
            self.actions
                .push_back(AnnounceAction::Conflict { vip, mac, count });
        }
        self.actions
            .extend(out.defend.into_iter().map(AnnounceAction::Defend));
    }

    /// The claimants seen so far (for /status).
    pub fn conflicts(&self) -> &ConflictTracker {
        &self.conflicts
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<AnnounceAction> {
        self.actions.pop_front()
    }

    /// `garp_refresh_s`: one more announcement of every VIP not owed one
    /// already, each period while serving.
    fn refresh(&mut self, now: Instant, serving: bool, vips: impl IntoIterator<Item = IpAddr>) {
        if self.refresh.is_zero() || !serving {
            self.next_refresh = None;
            return;
        }
        let Some(at) = self.next_refresh else {
            // Becoming master announces already; the first refresh is a
            // period later.
            self.next_refresh = Some(now + self.refresh);
            return;
        };
        if now < at {
            return;
        }
        self.next_refresh = Some(now + self.refresh);
        for vip in vips {
            if !self.due.iter().any(|d| d.vip == vip) {
                self.due.push(Due {
                    vip,
                    left: 1,
                    at: now,
                });
            }
        }
    }

    /// Queues the announcements due by `now`.
    fn send_due(&mut self, now: Instant) {
        for d in &mut self.due {
            if d.left > 0 && now >= d.at {
                self.actions.push_back(AnnounceAction::SendGarp(d.vip));
                d.left -= 1;
                d.at = now + GARP_SPACING;
            }
        }
        self.due.retain(|d| d.left > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{tcp_state, Flow};

    const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const V2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101));
    const W1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    const W2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
    const TICK: Duration = Duration::from_millis(20);

    fn drain(a: &mut Announcer) -> Vec<AnnounceAction> {
        std::iter::from_fn(|| a.poll_action()).collect()
    }

    /// Runs ticks from `from` (exclusive) to `to` (inclusive), serving, and
    /// returns (ms after `t0`, action) pairs.
    fn ticks(
        a: &mut Announcer,
        t0: Instant,
        from: Duration,
        to: Duration,
    ) -> Vec<(u128, AnnounceAction)> {
        let mut out = Vec::new();
        let mut t = from + TICK;
        while t <= to {
            a.handle_tick(t0 + t, true, [V1, V2]);
            out.extend(drain(a).into_iter().map(|x| (t.as_millis(), x)));
            t += TICK;
        }
        out
    }

    #[test]
    fn three_garps_one_second_apart() {
        let mut a = Announcer::new(Duration::ZERO, 50);
        let t0 = Instant::now();
        a.announce(t0, [V1, V2], GARP_COUNT);
        // The first at once.
        use AnnounceAction::SendGarp;
        assert_eq!(drain(&mut a), vec![SendGarp(V1), SendGarp(V2)]);
        let got = ticks(&mut a, t0, Duration::ZERO, Duration::from_secs(5));
        assert_eq!(
            got,
            vec![
                (1000, SendGarp(V1)),
                (1000, SendGarp(V2)),
                (2000, SendGarp(V1)),
                (2000, SendGarp(V2)),
            ]
        );
    }

    #[test]
    fn announce_replaces_and_announce_new_adds() {
        let mut a = Announcer::new(Duration::ZERO, 50);
        let t0 = Instant::now();
        a.announce(t0, [V1], 3);
        drain(&mut a);
        // Half a second later a takeover announces again, 2 times: the
        // schedule restarts.
        let t1 = t0 + Duration::from_millis(500);
        a.announce(t1, [V1], 2);
        assert_eq!(drain(&mut a), vec![AnnounceAction::SendGarp(V1)]);
        // A new VIP joins; V1 is not due, so only V2 goes now.
        let t2 = t0 + Duration::from_millis(700);
        a.announce_new(t2, [V2]);
        assert_eq!(drain(&mut a), vec![AnnounceAction::SendGarp(V2)]);
        let got = ticks(
            &mut a,
            t0,
            Duration::from_millis(700),
            Duration::from_secs(5),
        );
        let when = |v| {
            got.iter()
                .filter(|(_, x)| *x == AnnounceAction::SendGarp(v))
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
        };
        assert_eq!(when(V1), vec![1500]);
        assert_eq!(when(V2), vec![1700, 2700]);
    }

    #[test]
    fn refresh_each_period_while_serving_only() {
        let period = Duration::from_secs(10);
        let mut a = Announcer::new(period, 50);
        let t0 = Instant::now();
        // First serving tick: the refresh is armed, nothing sent (becoming
        // master announced already).
        a.handle_tick(t0, true, [V1]);
        assert_eq!(drain(&mut a), vec![]);
        a.handle_tick(t0 + period - TICK, true, [V1]);
        assert_eq!(drain(&mut a), vec![]);
        a.handle_tick(t0 + period, true, [V1]);
        assert_eq!(drain(&mut a), vec![AnnounceAction::SendGarp(V1)]);
        // Once per period, not more.
        a.handle_tick(t0 + period + Duration::from_secs(1), true, [V1]);
        assert_eq!(drain(&mut a), vec![]);
        // A backup does not refresh, and serving again re-arms from scratch.
        a.handle_tick(t0 + period * 2, false, [V1]);
        assert_eq!(drain(&mut a), vec![]);
        a.handle_tick(t0 + period * 3, true, [V1]);
        assert_eq!(drain(&mut a), vec![]);
        a.handle_tick(t0 + period * 4, true, [V1]);
        assert_eq!(drain(&mut a), vec![AnnounceAction::SendGarp(V1)]);
        // Zero period: never.
        let mut off = Announcer::new(Duration::ZERO, 50);
        for i in 0..100 {
            off.handle_tick(t0 + period * i, true, [V1]);
        }
        assert_eq!(drain(&mut off), vec![]);
    }

    #[test]
    fn refresh_skips_a_vip_already_owed_an_announcement() {
        let period = Duration::from_secs(10);
        let mut a = Announcer::new(period, 50);
        let t0 = Instant::now();
        a.handle_tick(t0, true, [V1, V2]);
        let t1 = t0 + period - Duration::from_millis(500);
        a.announce_new(t1, [V1]);
        drain(&mut a);
        // At the period V1 is owed its second announcement at t1 + 1 s: the
        // refresh adds only V2.
        a.handle_tick(t0 + period, true, [V1, V2]);
        assert_eq!(drain(&mut a), vec![AnnounceAction::SendGarp(V2)]);
    }

    fn flow(client: u32, vip: Ipv4Addr, mac: [u8; 6]) -> Flow {
        let mut f = super::super::test_flow(client, 0xc612_0015, 0, tcp_state::SYN);
        f.key.vip = u32::from(vip);
        f.client_mac = MacAddr(mac);
        f
    }

    #[test]
    fn unicast_replies_are_spread_over_the_first_second() {
        let flows = FlowTable::new(4096, super::super::TEST_TIMEOUTS);
        // 120 clients with their own MACs, and one more flow from the first
        // (one reply per (VIP, MAC)).
        for i in 0..120u32 {
            let m = [2, 0, 0, 0, 0, u8::try_from(i).unwrap()];
            flows
                .insert(&flow(0x0a00_0000 + i, W1, m), false, 0)
                .unwrap();
        }
        let mut again = flow(0x0a00_0000, W1, [2, 0, 0, 0, 0, 0]);
        again.key.client_port = 40_001;
        flows.insert(&again, false, 0).unwrap();
        // A flow to a VIP no longer served gets none.
        flows
            .insert(&flow(0x0a00_1000, W2, [2, 0, 0, 0, 1, 0]), false, 0)
            .unwrap();

        let mut a = Announcer::new(Duration::ZERO, 50);
        assert_eq!(a.handle_takeover(&flows, |v| v == u32::from(W1)), 120);
        let t0 = Instant::now();
        let got = ticks(&mut a, t0, Duration::ZERO, Duration::from_secs(2));
        assert_eq!(got.len(), 120);
        // ceil(120 / 50) = 3 a tick: done after 40 ticks, within the second.
        assert_eq!(got.iter().filter(|(t, _)| *t == 20).count(), 3);
        assert_eq!(got.last().unwrap().0, 800);
        let mut macs: Vec<u8> = got
            .iter()
            .map(|(_, x)| match x {
                AnnounceAction::SendUnicastReply { vip, mac, .. } => {
                    assert_eq!(*vip, W1);
                    mac.0[5]
                }
                other => panic!("{other:?}"),
            })
            .collect();
        macs.sort_unstable();
        macs.dedup();
        assert_eq!(macs.len(), 120);
    }

    #[test]
    fn a_claimed_vip_is_defended_at_most_every_defend_interval() {
        use AnnounceAction::{Conflict, Defend};
        let mut a = Announcer::new(Duration::ZERO, 50);
        let t0 = Instant::now();
        let other = [2, 0, 0, 0, 0, 0x66];
        let slot = Some((1, u32::from(W1), other));
        a.handle_conflicts(t0, true, [(0, 2, slot)]);
        assert_eq!(
            drain(&mut a),
            vec![
                Conflict {
                    vip: W1,
                    mac: MacAddr(other),
                    count: 2
                },
                Defend(W1)
            ]
        );
        // Within DEFEND_INTERVAL: counted, neither reported nor defended.
        let t1 = t0 + conflict::DEFEND_INTERVAL - Duration::from_millis(1);
        a.handle_conflicts(t1, true, [(0, 5, slot)]);
        assert_eq!(drain(&mut a), vec![]);
        assert_eq!(a.conflicts().per_vip(), vec![(W1, 5)]);
        // After it: both again.
        let t2 = t0 + conflict::DEFEND_INTERVAL;
        a.handle_conflicts(t2, true, [(0, 6, slot)]);
        assert_eq!(drain(&mut a).len(), 2);
        // A backup reports but does not defend.
        let t3 = t2 + conflict::DEFEND_INTERVAL;
        a.handle_conflicts(t3, false, [(0, 7, slot)]);
        assert_eq!(
            drain(&mut a),
            vec![Conflict {
                vip: W1,
                mac: MacAddr(other),
                count: 7
            }]
        );
    }
}
