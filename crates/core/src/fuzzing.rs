//! Hooks for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of a
//! normal build). Everything else the targets need is public API already;
//! this module only exposes the test-only two-router VRRP simulation
//! (`vrrp::sim`) behind a small interface, so that the `vrrp_pair` target
//! checks split brain with the same clock, latency and accounting as the
//! property test `random_schedule_never_keeps_split_brain`.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::vrrp::sim::{self, Sim};
use crate::vrrp::{cs, Config, Router, State};
use podlb_wire::vrrp::{Advert, AdvertDrop};

/// The VRID both simulated routers are configured with.
pub const PAIR_VRID: u8 = sim::VRID;
/// Their one virtual address.
pub const PAIR_VIP: Ipv4Addr = sim::VIP;
/// Their primary addresses: router 0, router 1.
pub const PAIR_IPS: [Ipv4Addr; 2] = [sim::IP_A, sim::IP_B];

/// Two VRRP routers on one simulated link with a fake clock.
pub struct VrrpPair {
    sim: Sim,
    interval_cs: u16,
}

impl VrrpPair {
    /// Priorities are clamped to 1..=254 (two address owners would both
    /// stay master by design), the advert interval to 1..=4095 cs.
    /// Neither router is started.
    pub fn new(priority: [u8; 2], preempt: [bool; 2], interval_cs: u16) -> VrrpPair {
        let interval_cs = interval_cs.clamp(1, podlb_wire::vrrp::MAX_INTERVAL_CS);
        let c = |i: usize| Config {
            preempt: preempt[i],
            ..sim::cfg(PAIR_IPS[i], priority[i].clamp(1, 254), interval_cs)
        };
        VrrpPair {
            sim: Sim::new(c(0), c(1)),
            interval_cs,
        }
    }

    /// The Startup event of router `i` (0 or 1).
    pub fn start(&mut self, i: usize) {
        self.sim.start(i & 1);
    }

    /// Cuts or heals the direction from router `from` to the other one.
    pub fn set_link(&mut self, from: usize, up: bool) {
        self.sim.set_link(from & 1, up);
    }

    /// A tracking change on router `i`.
    pub fn set_priority(&mut self, i: usize, p: u8) {
        self.sim.set_priority(i & 1, p);
    }

    /// Delivers `adv` from `src` to router `to` now (a third party on the
    /// link, or one spoofing a router's address).
    pub fn inject(
        &mut self,
        to: usize,
        src: Ipv4Addr,
        adv: &Advert,
    ) -> Option<Result<(), AdvertDrop>> {
        self.sim.inject(to & 1, src, adv)
    }

    /// Advances the clock, firing timers and delivering adverts on the way.
    pub fn run_ms(&mut self, ms: u64) {
        self.sim.run_ms(ms);
    }

    pub fn state(&self, i: usize) -> State {
        self.sim.state(i & 1)
    }

    pub fn router(&self, i: usize) -> &Router {
        self.sim.router(i & 1)
    }

    /// How many of the two are master.
    pub fn masters(&self) -> usize {
        (0..2)
            .filter(|&i| self.sim.state(i) == State::Master)
            .count()
    }

    /// The longest time both were master while adverts flowed both ways.
    pub fn max_dual_while_flowing(&self) -> Duration {
        self.sim.max_dual_while_flowing()
    }

    /// The split-brain bound of the property test: one advert interval plus
    /// the link latency (well inside Master_Down_Interval).
    pub fn split_brain_bound(&self) -> Duration {
        cs(self.interval_cs) + self.sim.latency()
    }

    /// How long the property test lets a healed pair settle: ten advert
    /// intervals, in milliseconds.
    pub fn settle_ms(&self) -> u64 {
        u64::from(self.interval_cs) * 10 * 10
    }
}
