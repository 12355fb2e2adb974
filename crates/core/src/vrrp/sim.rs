//! An in-memory pair of routers of one address family on a fake clock: each
//! advert one router sends is delivered to the other after a fixed latency,
//! unless the link in that direction is down. Scenario tests and the random-schedule property
//! test of the state machine are in `sim/tests.rs`; the `vrrp_pair` fuzz
//! target drives the same simulation through `crate::fuzzing::VrrpPair`
//! (feature `fuzzing`), so both check split brain with one accounting.

// Built for the fuzzing feature too, where only part of it is used.
#![cfg_attr(not(test), allow(dead_code))]

use super::*;
use std::net::Ipv6Addr;

#[cfg(test)]
mod tests;

pub(crate) const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(crate) const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub(crate) const VRID: u8 = 51;

pub(crate) fn cfg(ip: Ipv4Addr, priority: u8, interval_cs: u16) -> Config {
    Config {
        priority,
        advert_interval_cs: interval_cs,
        ..Config::new(VRID, ip, vec![VIP])
    }
}

/// The IPv6 pair: link-local primaries (RFC 9568 §5.1.2.1).
pub(crate) const IP6_A: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const IP6_B: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
/// The IPv6 virtual addresses: the virtual router's link-local address
/// first (RFC 9568 §5.2.9), then a global one.
pub(crate) const VIPS6: [Ipv6Addr; 2] = [
    podlb_wire::vrrp::virtual_link_local(VRID),
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100),
];

pub(crate) fn cfg6(ip: Ipv6Addr, priority: u8, interval_cs: u16) -> Config<Ipv6Addr> {
    Config {
        priority,
        advert_interval_cs: interval_cs,
        ..Config::new(VRID, ip, VIPS6.to_vec())
    }
}

struct Node<A: VrrpAddr> {
    r: Router<A>,
    alive: bool,
    /// (instant, state entered)
    transitions: Vec<(Instant, State)>,
    /// (instant, priority) of every advert sent
    sent: Vec<(Instant, u8)>,
    /// (instant, priority) of every advert delivered to this node
    received: Vec<(Instant, u8)>,
}

/// An advert on the link. Only its priority varies between a router's
/// adverts; the rest is in `Sim::adverts`, so that a send does not copy the
/// kilobyte an `Advert` holds (its address list) around.
struct InFlight<A> {
    at: Instant,
    to: usize,
    src: A,
    priority: u8,
}

pub(crate) struct Sim<A: VrrpAddr = Ipv4Addr> {
    base: Instant,
    now: Instant,
    nodes: [Node<A>; 2],
    /// `up[i]`: adverts sent by node i reach the other node.
    up: [bool; 2],
    latency: Duration,
    /// In delivery order: every advert takes the same latency.
    in_flight: Vec<InFlight<A>>,
    /// The advert each node sends (its priority set at delivery).
    adverts: [Advert<A>; 2],
    // Split-brain accounting: the longest time both were master while
    // adverts flowed both ways.
    dual_since: Option<Instant>,
    flow_since: Option<Instant>,
    max_dual_while_flowing: Duration,
}

impl<A: VrrpAddr> Sim<A> {
    pub(crate) fn new(a: Config<A>, b: Config<A>) -> Sim<A> {
        Sim::new_at(Instant::now(), a, b)
    }

    /// A pair whose fake clock starts at `base` (two pairs at one base run
    /// on one clock).
    pub(crate) fn new_at(base: Instant, a: Config<A>, b: Config<A>) -> Sim<A> {
        let advert = |c: &Config<A>| Advert::new(c.vrid, 0, c.advert_interval_cs, &c.vips);
        let adverts = [advert(&a), advert(&b)];
        let node = |c| Node {
            r: Router::new(c),
            alive: true,
            transitions: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
        };
        let mut s = Sim {
            base,
            now: base,
            nodes: [node(a), node(b)],
            up: [true, true],
            latency: Duration::from_millis(1),
            in_flight: Vec::new(),
            adverts,
            dual_since: None,
            flow_since: None,
            max_dual_while_flowing: Duration::ZERO,
        };
        s.observe();
        s
    }

    fn t(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    pub(crate) fn state(&self, i: usize) -> State {
        self.nodes[i].r.state()
    }

    pub(crate) fn start(&mut self, i: usize) {
        self.nodes[i].alive = true;
        let now = self.now;
        self.nodes[i].r.startup(now);
        self.drain(i);
        self.observe();
    }

    /// Graceful stop (priority 0 advert from a master).
    fn shutdown(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].r.shutdown(now);
        self.drain(i);
        self.observe();
    }

    /// The node falls silent: no more timers, sends or receives.
    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.observe();
    }

    pub(crate) fn set_link(&mut self, from: usize, up: bool) {
        self.up[from] = up;
        self.observe();
    }

    pub(crate) fn set_priority(&mut self, i: usize, p: u8) {
        let now = self.now;
        self.nodes[i].r.set_priority(now, p);
        self.drain(i);
        self.observe();
        // A priority change can turn the router that was winning a dual-master
        // spell into the loser, which then steps down only on the other's next
        // advert (RFC 9568 §6.4.3): the one-interval bound starts again here.
        if self.flow_since.is_some() {
            self.flow_since = Some(now);
        }
    }

    /// An advert from a third party (or one spoofing a peer's address)
    /// reaches node `to` now, from `src`. `None` if the node is dead;
    /// otherwise the router's verdict.
    pub(crate) fn inject(
        &mut self,
        to: usize,
        src: A,
        adv: &Advert<A>,
    ) -> Option<Result<(), AdvertDrop>> {
        if !self.nodes[to].alive {
            return None;
        }
        let now = self.now;
        self.nodes[to].received.push((now, adv.priority));
        let verdict = self.nodes[to].r.handle_advert(now, src, adv);
        self.drain(to);
        self.observe();
        Some(verdict)
    }

    /// Node `i`'s router.
    pub(crate) fn router(&self, i: usize) -> &Router<A> {
        &self.nodes[i].r
    }

    /// The longest spell, so far, of both routers master while adverts
    /// flowed both ways (a priority change restarts the spell).
    pub(crate) fn max_dual_while_flowing(&self) -> Duration {
        self.max_dual_while_flowing
    }

    /// The one-way delay of every advert.
    pub(crate) fn latency(&self) -> Duration {
        self.latency
    }

    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(a) = self.nodes[i].r.poll_action() {
            match a {
                Action::SendAdvert { priority } => {
                    self.nodes[i].sent.push((now, priority));
                    if self.nodes[i].alive && self.up[i] {
                        self.in_flight.push(InFlight {
                            at: now + self.latency,
                            to: 1 - i,
                            src: self.nodes[i].r.config().primary_ip,
                            priority,
                        });
                    }
                }
                Action::SendGarp => {}
                Action::BecomeMaster => self.nodes[i].transitions.push((now, State::Master)),
                Action::BecomeBackup => self.nodes[i].transitions.push((now, State::Backup)),
                Action::BecomeInitialize => {
                    self.nodes[i].transitions.push((now, State::Initialize))
                }
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let timers = (0..2)
            .filter(|&i| self.nodes[i].alive)
            .filter_map(|i| self.nodes[i].r.poll_timeout());
        let flights = self.in_flight.iter().map(|f| f.at);
        timers.chain(flights).min()
    }

    fn run_until(&mut self, end: Instant) {
        while let Some(next) = self.next_event().filter(|&n| n <= end) {
            self.now = next;
            // Deliver what is due, in send order (what these deliveries
            // send in turn arrives a latency later: never due now).
            while self.in_flight.first().is_some_and(|f| f.at <= next) {
                let f = self.in_flight.remove(0);
                if self.nodes[f.to].alive {
                    let adv = &mut self.adverts[1 - f.to];
                    adv.priority = f.priority;
                    self.nodes[f.to].received.push((next, f.priority));
                    let _ = self.nodes[f.to].r.handle_advert(next, f.src, adv);
                    self.drain(f.to);
                }
            }
            for i in 0..2 {
                if self.nodes[i].alive && self.nodes[i].r.poll_timeout().is_some_and(|t| t <= next)
                {
                    self.nodes[i].r.handle_timeout(next);
                    self.drain(i);
                }
            }
            self.observe();
        }
        self.now = end;
        self.observe();
    }

    pub(crate) fn run_ms(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        self.run_until(end);
    }

    fn flowing(&self) -> bool {
        self.up[0] && self.up[1] && self.nodes.iter().all(|n| n.alive)
    }

    pub(crate) fn both_master(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.alive && n.r.state() == State::Master)
    }

    fn observe(&mut self) {
        let now = self.now;
        if let (Some(d), Some(f)) = (self.dual_since, self.flow_since) {
            self.max_dual_while_flowing = self.max_dual_while_flowing.max(now - d.max(f));
        }
        self.dual_since = if self.both_master() {
            Some(self.dual_since.unwrap_or(now))
        } else {
            None
        };
        self.flow_since = if self.flowing() {
            Some(self.flow_since.unwrap_or(now))
        } else {
            None
        };
    }

    fn became_master_at(&self, i: usize) -> Vec<Instant> {
        self.nodes[i]
            .transitions
            .iter()
            .filter(|(_, s)| *s == State::Master)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Last advert delivered to node `i` at or before `t`.
    fn last_received(&self, i: usize, t: Instant) -> Instant {
        self.nodes[i]
            .received
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map(|(at, _)| *at)
            .expect("an advert was received")
    }
}
