//! The VRRPv3 state machine (RFC 9568 §6), sans-IO.
//!
//! A [`Router`] is one VRRP router for one virtual router (VRID) of one
//! address family on one interface. It never reads a clock, sends a packet
//! or starts a timer: the caller passes `now` into every input and carries
//! out the outputs.
//!
//! Families. `Router<Ipv4Addr>` (the default: `Router` alone) and
//! `Router<Ipv6Addr>` are the same state machine over
//! [`VrrpAddr`](podlb_wire::vrrp::VrrpAddr). An IPv4 and an IPv6 virtual
//! router with the same VRID are two `Router`s with separate state (RFC
//! 9568, Abstract: "the Virtual Routers in each of the IPv4 and IPv6
//! address families are independent of one another and always treated as
//! separate Virtual Router instances"): the types keep an advert of one
//! family from ever reaching the other. For IPv6 the
//! primary address is the interface's link-local address (§5.1.2.1), and
//! the first virtual address is the virtual router's link-local address
//! (§5.2.9); [`Config::validate`] checks both.
//!
//! - inputs: [`Router::startup`], [`Router::shutdown`],
//!   [`Router::handle_advert`] (an advert that passed
//!   [`podlb_wire::vrrp::parse_advert`]), [`Router::handle_timeout`],
//!   [`Router::set_priority`] (tracking);
//! - outputs: [`Router::poll_action`] (FIFO) and [`Router::poll_timeout`] (the
//!   instant at which to call `handle_timeout`).
//!
//! Timers. The RFC defines the intervals in centiseconds; podlb evaluates
//! Skew_Time with nanosecond resolution, as keepalived does with
//! microseconds, so that different priorities still get different skews at
//! the short advert intervals podlb targets (RFC 9568's integer centiseconds
//! would give priorities 100 and 200 the same 0 or 1 cs skew at 3 cs).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podlb_wire::vrrp::{Advert, AdvertDrop, Family, VrrpAddr, MAX_INTERVAL_CS};

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod sim;

/// The priority of the router that owns the virtual addresses (RFC 9568 §6.1).
pub const PRIORITY_OWNER: u8 = 255;
/// The priority a master sends when it stops (RFC 9568 §5.2.4).
pub const PRIORITY_STOP: u8 = 0;
/// Default priority of a backup (RFC 9568 §6.1).
pub const PRIORITY_DEFAULT: u8 = 100;
/// Default Advertisement_Interval, 1 s (RFC 9568 §6.1).
pub const ADVERT_INTERVAL_DEFAULT_CS: u16 = 100;

/// The configuration of one virtual router (RFC 9568 §6.1 "Parameters Per
/// Virtual Router") of family `A`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config<A: VrrpAddr = Ipv4Addr> {
    /// Virtual Router Identifier, 1..=255.
    pub vrid: u8,
    /// 255 for the address owner only; 1..=254 otherwise (100 by default).
    pub priority: u8,
    /// Advertisement_Interval in centiseconds, 1..=4095 (100 by default).
    pub advert_interval_cs: u16,
    /// Preempt_Mode (true by default): a backup with a higher priority takes
    /// over from a lower-priority master.
    pub preempt: bool,
    /// keepalived's `preempt_delay`, centiseconds: after [`Router::startup`] a
    /// backup does not preempt for this long (it behaves as with preempt
    /// off). 0 = no delay.
    pub preempt_delay_cs: u16,
    /// Accept_Mode (false by default): whether a non-owner master accepts
    /// packets addressed to the virtual addresses (RFC 9568 §6.1).
    pub accept_mode: bool,
    /// This router's primary address on the interface: the source of its
    /// adverts and the tie-breaker between equal priorities. For IPv6 the
    /// interface's link-local address (RFC 9568 §5.1.2.1).
    pub primary_ip: A,
    /// The virtual addresses (at least one, at most 255), in the order they
    /// are advertised. For IPv6 the first is the virtual router's
    /// link-local address (RFC 9568 §5.2.9; e.g.
    /// [`virtual_link_local`](podlb_wire::vrrp::virtual_link_local)).
    pub vips: Vec<A>,
}

impl<A: VrrpAddr> Config<A> {
    /// A configuration with the RFC defaults (priority 100, 1 s adverts,
    /// preempt on, accept mode off).
    pub fn new(vrid: u8, primary_ip: A, vips: Vec<A>) -> Config<A> {
        Config {
            vrid,
            priority: PRIORITY_DEFAULT,
            advert_interval_cs: ADVERT_INTERVAL_DEFAULT_CS,
            preempt: true,
            preempt_delay_cs: 0,
            accept_mode: false,
            primary_ip,
            vips,
        }
    }

    /// Checks the ranges [`Router::new`] would otherwise clamp.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority);
        }
        if self.advert_interval_cs == 0 || self.advert_interval_cs > MAX_INTERVAL_CS {
            return Err(ConfigError::AdvertInterval);
        }
        if self.vips.is_empty() || self.vips.len() > podlb_wire::vrrp::MAX_ADDRS {
            return Err(ConfigError::Vips);
        }
        if A::FAMILY == Family::V6 {
            // RFC 9568 §7.2: "Set the source IPv6 address to the interface's
            // link-local IPv6 address" (and §5.1.2.1); the tie-break of
            // §6.4.3 compares these primary addresses.
            if !self.primary_ip.is_link_local() {
                return Err(ConfigError::PrimaryNotLinkLocal);
            }
            // RFC 9568 §5.2.9: "For IPv6, the first address MUST be the IPv6
            // link-local address associated with the Virtual Router."
            if !self.vips[0].is_link_local() {
                return Err(ConfigError::FirstVipNotLinkLocal);
            }
        }
        Ok(())
    }
}

/// A [`Config`] value out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// vrrp.vrid must be 1..=255 (RFC 9568 §5.2.3)
    #[error("vrrp.vrid must be 1..=255 (RFC 9568 §5.2.3)")]
    Vrid,
    /// vrrp.priority must be 1..=254, or 255 on the router that owns the addresses (RFC 9568 §5.2.4)
    #[error("vrrp.priority must be 1..=254, or 255 on the router that owns the addresses (RFC 9568 §5.2.4)")]
    Priority,
    /// vrrp.advert_interval must be 10 ms..=40.95 s (1..=4095 centiseconds, RFC 9568 §5.2.7)
    #[error(
        "vrrp.advert_interval must be 10 ms..=40.95 s (1..=4095 centiseconds, RFC 9568 §5.2.7)"
    )]
    AdvertInterval,
    /// the virtual router needs 1..=255 virtual addresses (RFC 9568 §5.2.5)
    #[error("the virtual router needs 1..=255 virtual addresses (RFC 9568 §5.2.5)")]
    Vips,
    /// an IPv6 virtual router's primary address must be the interface's link-local address, in fe80::/10 (RFC 9568 §5.1.2.1)
    #[error("an IPv6 virtual router's primary address must be the interface's link-local address, in fe80::/10 (RFC 9568 §5.1.2.1)")]
    PrimaryNotLinkLocal,
    /// an IPv6 virtual router's first virtual address must be its link-local address, in fe80::/10 (RFC 9568 §5.2.9)
    #[error("an IPv6 virtual router's first virtual address must be its link-local address, in fe80::/10 (RFC 9568 §5.2.9)")]
    FirstVipNotLinkLocal,
}

/// RFC 9568 §6.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running: before [`Router::startup`] and after [`Router::shutdown`].
    Initialize,
    /// Watching the master; does not answer ARP for, forward for or accept
    /// packets to the virtual addresses (RFC 9568 §6.4.2).
    Backup,
    /// Serving the virtual addresses and advertising (RFC 9568 §6.4.3).
    Master,
}

impl State {
    /// lowercase name for /status and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        }
    }
}

/// An output of the state machine, in the order the caller should carry
/// them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send an advertisement with this priority, the configured advert
    /// interval and the configured VIPs, from the virtual MAC to 224.0.0.18
    /// or ff02::12 (or to each unicast peer). Priority 0 means "stopping".
    SendAdvert { priority: u8 },
    /// Announce each VIP with the virtual MAC (RFC 9568 §6.4.1, §6.4.2):
    /// for IPv4 a gratuitous ARP; for IPv6 join the solicited-node group of
    /// each VIP and send an unsolicited Neighbor Advertisement with the
    /// Router flag set, Solicited clear, Override set, target the VIP and
    /// target link-layer address the virtual MAC. Repeats are the caller's
    /// policy.
    SendGarp,
    /// Entered Master: answer ARP (or NDP) for the VIPs and forward for them. Queued
    /// before the advert and the gratuitous ARP of the same transition so
    /// that the data plane serves before traffic is pointed at it.
    BecomeMaster,
    /// Entered Backup: stop answering ARP for and forwarding to the VIPs.
    BecomeBackup,
    /// Entered Initialize (after [`Router::shutdown`]): likewise stop serving.
    BecomeInitialize,
}

/// One VRRP router for one VRID of family `A` (see the module docs).
#[derive(Debug, Clone)]
pub struct Router<A: VrrpAddr = Ipv4Addr> {
    cfg: Config<A>,
    state: State,
    /// The current priority (the configured one adjusted by tracking).
    priority: u8,
    /// Master_Adver_Interval (RFC 9568 §6.1), centiseconds, >= 1.
    master_adver_interval_cs: u16,
    master_addr: Option<A>,
    /// Master_Down_Timer in Backup, Adver_Timer in Master, none in Initialize.
    timer: Option<Instant>,
    /// Preemption is allowed from this instant on (startup + preempt delay).
    preempt_from: Option<Instant>,
    /// Preemption held back by the caller (see [`Router::hold_preemption`]).
    preempt_held: bool,
    actions: VecDeque<Action>,
}

/// A centisecond count as a Duration.
#[inline]
pub fn cs(n: u16) -> Duration {
    Duration::from_millis(u64::from(n) * 10)
}

/// Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (RFC 9568
/// §6.1), to the nanosecond (see the module docs).
pub fn skew_time(priority: u8, master_adver_interval_cs: u16) -> Duration {
    let ns = (256 - u64::from(priority)) * u64::from(master_adver_interval_cs) * 10_000_000 / 256;
    Duration::from_nanos(ns)
}

/// Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time (RFC 9568
/// §6.1).
pub fn master_down_interval(priority: u8, master_adver_interval_cs: u16) -> Duration {
    cs(master_adver_interval_cs) * 3 + skew_time(priority, master_adver_interval_cs)
}

impl<A: VrrpAddr> Router<A> {
    /// A router in the Initialize state. Out-of-range values are clamped (see
    /// [`Config::validate`] to reject them instead): priority 0 → 1, advert
    /// interval into 1..=4095.
    pub fn new(mut cfg: Config<A>) -> Router<A> {
        cfg.priority = cfg.priority.max(1);
        cfg.advert_interval_cs = cfg.advert_interval_cs.clamp(1, MAX_INTERVAL_CS);
        Router {
            priority: cfg.priority,
            master_adver_interval_cs: cfg.advert_interval_cs,
            cfg,
            state: State::Initialize,
            master_addr: None,
            timer: None,
            preempt_from: None,
            preempt_held: false,
            actions: VecDeque::new(),
        }
    }

    /// The Startup event (RFC 9568 §6.4.1). Ignored unless in Initialize.
    pub fn startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        self.preempt_from = Some(now + cs(self.cfg.preempt_delay_cs));
        if self.priority == PRIORITY_OWNER {
            // RFC 9568 §6.4.1: "If the Priority = 255 ... Send an
            // ADVERTISEMENT ... broadcast a gratuitous ARP ... Set the
            // Adver_Timer to Advertisement_Interval ... Transition to the
            // {Master} state".
            self.become_master(now);
        } else {
            // RFC 9568 §6.4.1: "Set Master_Adver_Interval to
            // Advertisement_Interval ... Set the Master_Down_Timer to
            // Master_Down_Interval ... Transition to the {Backup} state".
            self.master_adver_interval_cs = self.cfg.advert_interval_cs;
            self.become_backup(now, None);
        }
    }

    /// The Shutdown event (RFC 9568 §6.4.2, §6.4.3). A master sends an advert
    /// with priority 0 so that a backup takes over after Skew_Time.
    pub fn shutdown(&mut self, _now: Instant) {
        match self.state {
            State::Initialize => return,
            // RFC 9568 §6.4.2: "Cancel the Master_Down_Timer; Transition to
            // the {Initialize} state".
            State::Backup => {}
            // RFC 9568 §6.4.3: "Cancel the Adver_Timer; Send an ADVERTISEMENT
            // with Priority = 0; Transition to the {Initialize} state".
            State::Master => self.actions.push_back(Action::SendAdvert {
                priority: PRIORITY_STOP,
            }),
        }
        self.timer = None;
        self.master_addr = None;
        self.state = State::Initialize;
        self.actions.push_back(Action::BecomeInitialize);
    }

    /// An advertisement from `src` (the IP source) that passed
    /// [`parse_advert`](podlb_wire::vrrp::parse_advert). Returns the reason
    /// when the configuration-dependent checks of RFC 9568 §7.1 discard it;
    /// adverts the state machine itself discards (a lower priority) are
    /// `Ok`.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        src: A,
        adv: &Advert<A>,
    ) -> Result<(), AdvertDrop> {
        if self.state == State::Initialize {
            return Err(AdvertDrop::NotRunning);
        }
        // RFC 9568 §7.1: "MUST verify that the VRID is configured on the
        // receiving interface".
        if adv.vrid != self.cfg.vrid {
            return Err(AdvertDrop::VridMismatch);
        }
        // RFC 9568 §7.1: "... and the local router is not the IPvX address
        // owner (Priority = 255 (decimal))".
        if self.priority == PRIORITY_OWNER {
            return Err(AdvertDrop::LocalOwner);
        }
        if src == self.cfg.primary_ip {
            return Err(AdvertDrop::OwnAdvert);
        }
        // RFC 9568 §7.1: "MAY verify that 'Count IPvX Addrs' and the list of
        // IPvX Address(es) match ... If the packet was not generated by the
        // address owner (Priority does not equal 255 (decimal)), the receiver
        // MUST drop the packet".
        if adv.priority != PRIORITY_OWNER && !adv.addrs.same_set(&self.cfg.vips) {
            return Err(AdvertDrop::AddrListMismatch);
        }
        match self.state {
            State::Initialize => Err(AdvertDrop::NotRunning),
            State::Backup => {
                self.backup_rx(now, src, adv);
                Ok(())
            }
            State::Master => {
                self.master_rx(now, src, adv);
                Ok(())
            }
        }
    }

    fn backup_rx(&mut self, now: Instant, src: A, adv: &Advert<A>) {
        if adv.priority == PRIORITY_STOP {
            // RFC 9568 §6.4.2: "If the Priority in the ADVERTISEMENT is zero,
            // then: Set the Master_Down_Timer to Skew_Time".
            self.timer = Some(now + skew_time(self.priority, self.master_adver_interval_cs));
        } else if !self.preempt_now(now) || adv.priority >= self.priority {
            // RFC 9568 §6.4.2: "If Preempt_Mode is False, or if the Priority
            // in the ADVERTISEMENT is greater than or equal to the local
            // Priority, then: Set Master_Adver_Interval to Adver Interval
            // contained in the ADVERTISEMENT; Recompute the Skew_Time;
            // Recompute the Master_Down_Interval; Reset the Master_Down_Timer
            // to Master_Down_Interval".
            self.learn_interval(adv.interval_cs);
            self.master_addr = Some(src);
            self.timer = Some(now + self.master_down_interval());
        }
        // RFC 9568 §6.4.2: "else ... Discard the ADVERTISEMENT" (a lower
        // priority with preempt on: the Master_Down_Timer runs out and this
        // router takes over).
    }

    fn master_rx(&mut self, now: Instant, src: A, adv: &Advert<A>) {
        if adv.priority == PRIORITY_STOP {
            // RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is zero,
            // then: Send an ADVERTISEMENT; Reset the Adver_Timer to
            // Advertisement_Interval".
            self.send_advert(now);
        } else if adv.priority > self.priority
            // RFC 9568 §6.4.3: "or the Priority in the ADVERTISEMENT is equal
            // to the local Priority and the primary IPvX address of the sender
            // is greater than the local primary IPvX address (based on an
            // unsigned integer comparison of the IPvX addresses in network
            // byte order)". Both addresses are of this router's family: for
            // IPv6 the link-local sources (§5.1.2.1).
            || (adv.priority == self.priority && src.to_u128() > self.cfg.primary_ip.to_u128())
        {
            // RFC 9568 §6.4.3: "Cancel Adver_Timer; Set Master_Adver_Interval
            // to Adver Interval contained in the ADVERTISEMENT; Recompute the
            // Skew_Time; Recompute the Master_Down_Interval; Set
            // Master_Down_Timer to Master_Down_Interval; Transition to the
            // {Backup} state".
            self.learn_interval(adv.interval_cs);
            self.become_backup(now, Some(src));
        }
        // RFC 9568 §6.4.3: "else ... Discard the ADVERTISEMENT".
    }

    /// Fires the running timer if it is due (an early call does nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        match (self.state, self.timer) {
            (_, None) => {}
            (_, Some(t)) if now < t => {}
            (State::Initialize, _) => self.timer = None,
            // RFC 9568 §6.4.2: "If the Master_Down_Timer fires, then: Send an
            // ADVERTISEMENT; ... broadcast a gratuitous ARP request ...; Set
            // the Adver_Timer to Advertisement_Interval; Transition to the
            // {Master} state".
            (State::Backup, _) => self.become_master(now),
            // RFC 9568 §6.4.3: "If the Adver_Timer fires, then: Send an
            // ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
            (State::Master, _) => self.send_advert(now),
        }
    }

    /// A tracking change. The value is clamped to 1..=254, or 1..=255 when
    /// the configured priority is 255 (only the owner may use 255, RFC 9568
    /// §5.2.4).
    ///
    /// A master advertises the new priority at once (so that a peer that is
    /// also master, after a partition, resolves now rather than at the next
    /// Adver_Timer); a backup peer with preempt on then discards the lower
    /// priority and takes over when its Master_Down_Timer runs out. In the
    /// Backup state the new priority is used from the next timer reset, and
    /// if it now outranks the master (with preempt on) this router takes over
    /// when the Master_Down_Timer fires (RFC 9568 §6.4.2).
    pub fn set_priority(&mut self, now: Instant, p: u8) {
        let max = if self.cfg.priority == PRIORITY_OWNER {
            PRIORITY_OWNER
        } else {
            PRIORITY_OWNER - 1
        };
        let p = p.clamp(1, max);
        if p == self.priority {
            return;
        }
        self.priority = p;
        if self.state == State::Master {
            self.send_advert(now);
        }
    }

    /// When to call [`handle_timeout`](Router::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// The next output, first in first out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The current master: the sender of the last accepted advert in Backup,
    /// this router's primary address in Master, `None` in Initialize or
    /// before a backup has heard a master.
    pub fn master_addr(&self) -> Option<A> {
        self.master_addr
    }

    /// The current (tracking-adjusted) priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Master_Adver_Interval (RFC 9568 §6.1): learned from the master in
    /// Backup, this router's Advertisement_Interval in Master.
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// Skew_Time with the current priority and Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(self.priority, self.master_adver_interval_cs)
    }

    /// Master_Down_Interval with the current priority and
    /// Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.priority, self.master_adver_interval_cs)
    }

    pub fn config(&self) -> &Config<A> {
        &self.cfg
    }

    /// Whether packets addressed to the VIPs may be delivered locally (ICMP
    /// echo, admin): only in Master, and then only for the owner or with
    /// Accept_Mode on (RFC 9568 §6.4.3 "MUST NOT accept packets addressed to
    /// the IPvX address(es) associated with the virtual router if it is not
    /// the IPvX address owner and Accept_Mode is False"). Forwarding flows to
    /// backends is governed by [`is_master`](Router::is_master).
    pub fn accepts_vip_traffic(&self) -> bool {
        self.state == State::Master && (self.cfg.accept_mode || self.cfg.priority == PRIORITY_OWNER)
    }

    /// Whether this router serves the VIPs (answers ARP, forwards).
    pub fn is_master(&self) -> bool {
        self.state == State::Master
    }

    /// Holds preemption back (`true`) or lets it happen again (`false`):
    /// while held, a backup treats a lower-priority master as with
    /// Preempt_Mode off (it accepts its adverts and stays backup). The
    /// engine holds a returning instance until the master's connection
    /// table has reached it (`control::sync`, decisions.md §44). Nothing
    /// else changes: a master that stops or falls silent is replaced as
    /// usual.
    pub fn hold_preemption(&mut self, hold: bool) {
        self.preempt_held = hold;
    }

    /// Whether preemption is held back (see [`Router::hold_preemption`]).
    pub fn preemption_held(&self) -> bool {
        self.preempt_held
    }

    /// Preempt_Mode, with keepalived's preempt_delay after startup, unless
    /// held back by the caller.
    fn preempt_now(&self, now: Instant) -> bool {
        self.cfg.preempt && !self.preempt_held && self.preempt_from.is_some_and(|t| now >= t)
    }

    /// An advert interval of 0 would make Master_Down_Interval 0 and a backup
    /// take over at once; it is read as 1 cs.
    fn learn_interval(&mut self, interval_cs: u16) {
        self.master_adver_interval_cs = interval_cs.clamp(1, MAX_INTERVAL_CS);
    }

    fn send_advert(&mut self, now: Instant) {
        self.actions.push_back(Action::SendAdvert {
            priority: self.priority,
        });
        self.timer = Some(now + cs(self.cfg.advert_interval_cs));
    }

    fn become_master(&mut self, now: Instant) {
        self.state = State::Master;
        self.master_addr = Some(self.cfg.primary_ip);
        self.master_adver_interval_cs = self.cfg.advert_interval_cs;
        self.actions.push_back(Action::BecomeMaster);
        self.send_advert(now);
        self.actions.push_back(Action::SendGarp);
    }

    /// Enters Backup with the Master_Down_Timer at Master_Down_Interval.
    fn become_backup(&mut self, now: Instant, master: Option<A>) {
        self.state = State::Backup;
        self.master_addr = master;
        self.timer = Some(now + self.master_down_interval());
        self.actions.push_back(Action::BecomeBackup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
    const LOW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
    const HIGH: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 6);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn router(priority: u8) -> (Router, Instant) {
        let r = Router::new(sim::cfg(ME, priority, 100));
        (r, Instant::now())
    }

    fn drain<A: VrrpAddr>(r: &mut Router<A>) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn adv(priority: u8, interval_cs: u16) -> Advert {
        Advert::new(51, priority, interval_cs, &[VIP])
    }

    #[test]
    fn timer_formulas() {
        // RFC 9568 §6.1 with the default interval of 1 s.
        assert_eq!(skew_time(255, 100), Duration::from_nanos(3_906_250));
        assert_eq!(
            skew_time(1, 100),
            Duration::from_micros(996_093) + Duration::from_nanos(750)
        );
        assert_eq!(
            master_down_interval(100, 100),
            Duration::from_micros(3_609_375)
        );
        assert_eq!(
            master_down_interval(254, 3),
            Duration::from_nanos(90_234_375)
        );
        assert_eq!(cs(4095), Duration::from_millis(40_950));
    }

    #[test]
    fn owner_starts_as_master() {
        let (mut r, t0) = router(255);
        assert_eq!(r.state(), State::Initialize);
        assert_eq!(r.poll_timeout(), None);
        r.startup(t0);
        assert_eq!(r.state(), State::Master);
        assert_eq!(
            drain(&mut r),
            [
                Action::BecomeMaster,
                Action::SendAdvert { priority: 255 },
                Action::SendGarp
            ]
        );
        assert_eq!(r.poll_timeout(), Some(t0 + cs(100)));
        assert_eq!(r.master_addr(), Some(ME));
        assert!(r.accepts_vip_traffic(), "the owner accepts VIP traffic");
        // RFC 9568 §7.1: the owner discards adverts.
        assert_eq!(
            r.handle_advert(t0, HIGH, &adv(254, 100)),
            Err(AdvertDrop::LocalOwner)
        );
        // Adver_Timer.
        r.handle_timeout(t0 + cs(99));
        assert!(drain(&mut r).is_empty());
        r.handle_timeout(t0 + cs(100));
        assert_eq!(drain(&mut r), [Action::SendAdvert { priority: 255 }]);
        assert_eq!(r.poll_timeout(), Some(t0 + cs(200)));
        r.startup(t0); // ignored when running
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn backup_start_learn_and_priority_zero() {
        let (mut r, t0) = router(100);
        r.startup(t0);
        assert_eq!(drain(&mut r), [Action::BecomeBackup]);
        assert_eq!(r.poll_timeout(), Some(t0 + master_down_interval(100, 100)));
        assert_eq!(r.master_addr(), None);
        assert!(!r.accepts_vip_traffic() && !r.is_master());

        // A master advertising every 50 cs: learned (RFC 9568 §6.4.2).
        let t1 = t0 + cs(10);
        r.handle_advert(t1, HIGH, &adv(150, 50)).unwrap();
        assert_eq!(r.master_adver_interval_cs(), 50);
        assert_eq!(r.master_addr(), Some(HIGH));
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 50)));
        // Priority 0: Master_Down_Timer = Skew_Time.
        let t2 = t1 + cs(20);
        r.handle_advert(t2, HIGH, &adv(0, 50)).unwrap();
        assert_eq!(r.poll_timeout(), Some(t2 + skew_time(100, 50)));
        assert!(drain(&mut r).is_empty());
        r.handle_timeout(t2 + skew_time(100, 50));
        assert_eq!(
            drain(&mut r),
            [
                Action::BecomeMaster,
                Action::SendAdvert { priority: 100 },
                Action::SendGarp
            ]
        );
        assert_eq!(r.master_adver_interval_cs(), 100);
        assert!(!r.accepts_vip_traffic(), "accept mode off");
    }

    #[test]
    fn interval_zero_is_read_as_one_cs() {
        let (mut r, t0) = router(100);
        r.startup(t0);
        r.handle_advert(t0, HIGH, &adv(150, 0)).unwrap();
        assert_eq!(r.master_adver_interval_cs(), 1);
        assert!(r.poll_timeout().unwrap() > t0);
    }

    #[test]
    fn master_rules() {
        let cfg = Config {
            accept_mode: true,
            ..sim::cfg(ME, 100, 100)
        };
        let mut r = Router::new(cfg);
        let t0 = Instant::now();
        r.startup(t0);
        r.handle_timeout(t0 + master_down_interval(100, 100));
        let t1 = t0 + Duration::from_secs(5);
        drain(&mut r);
        assert!(r.accepts_vip_traffic());

        // RFC 9568 §6.4.3: priority 0 → advertise at once.
        r.handle_advert(t1, LOW, &adv(0, 100)).unwrap();
        assert_eq!(drain(&mut r), [Action::SendAdvert { priority: 100 }]);
        assert_eq!(r.poll_timeout(), Some(t1 + cs(100)));
        // Lower priority, or equal priority from a lower address: discarded.
        r.handle_advert(t1, HIGH, &adv(99, 100)).unwrap();
        r.handle_advert(t1, LOW, &adv(100, 100)).unwrap();
        assert_eq!(r.state(), State::Master);
        assert!(drain(&mut r).is_empty());
        // Equal priority from a higher address (unsigned compare): step down.
        r.handle_advert(t1, HIGH, &adv(100, 70)).unwrap();
        assert_eq!(r.state(), State::Backup);
        assert_eq!(drain(&mut r), [Action::BecomeBackup]);
        assert_eq!(r.master_adver_interval_cs(), 70);
        assert_eq!(r.master_addr(), Some(HIGH));
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 70)));
        assert!(!r.accepts_vip_traffic());
    }

    #[test]
    fn unsigned_address_compare() {
        // 200.0.0.1 > 10.0.0.1 as unsigned integers (a signed compare of
        // network-order words would get this wrong).
        let mut r = Router::new(sim::cfg(Ipv4Addr::new(10, 0, 0, 1), 100, 100));
        let t0 = Instant::now();
        r.startup(t0);
        r.handle_timeout(t0 + Duration::from_secs(10));
        r.handle_advert(t0, Ipv4Addr::new(200, 0, 0, 1), &adv(100, 100))
            .unwrap();
        assert_eq!(r.state(), State::Backup);
    }

    #[test]
    fn shutdown() {
        let (mut r, t0) = router(100);
        r.startup(t0);
        r.handle_timeout(t0 + Duration::from_secs(10));
        drain(&mut r);
        r.shutdown(t0 + Duration::from_secs(11));
        assert_eq!(
            drain(&mut r),
            [Action::SendAdvert { priority: 0 }, Action::BecomeInitialize]
        );
        assert_eq!(
            (r.state(), r.poll_timeout(), r.master_addr()),
            (State::Initialize, None, None)
        );
        r.shutdown(t0);
        assert!(drain(&mut r).is_empty());
        // A backup stops silently.
        let (mut r, t0) = router(100);
        r.startup(t0);
        drain(&mut r);
        r.shutdown(t0);
        assert_eq!(drain(&mut r), [Action::BecomeInitialize]);
        assert_eq!(
            r.handle_advert(t0, HIGH, &adv(150, 100)),
            Err(AdvertDrop::NotRunning)
        );
        r.handle_timeout(t0 + Duration::from_secs(100));
        assert!(drain(&mut r).is_empty());
        // And can start again.
        r.startup(t0);
        assert_eq!(drain(&mut r), [Action::BecomeBackup]);
    }

    #[test]
    fn configuration_checks_drop_with_reasons() {
        let (mut r, t0) = router(100);
        r.startup(t0);
        let before = r.poll_timeout();
        let mut wrong_vrid = adv(150, 100);
        wrong_vrid.vrid = 52;
        assert_eq!(
            r.handle_advert(t0, HIGH, &wrong_vrid),
            Err(AdvertDrop::VridMismatch)
        );
        let other_vips = Advert::new(51, 150, 100, &[VIP, HIGH]);
        assert_eq!(
            r.handle_advert(t0, HIGH, &other_vips),
            Err(AdvertDrop::AddrListMismatch)
        );
        assert_eq!(
            r.handle_advert(t0, ME, &adv(150, 100)),
            Err(AdvertDrop::OwnAdvert)
        );
        assert_eq!(r.poll_timeout(), before, "dropped adverts change nothing");
        // The owner may advertise a different list (RFC 9568 §7.1).
        let owner = Advert::new(51, 255, 100, &[HIGH]);
        let t1 = t0 + cs(1);
        assert_eq!(r.handle_advert(t1, HIGH, &owner), Ok(()));
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 100)));
        // Order of the address list does not matter.
        let mut r = Router::new(Config {
            vips: vec![VIP, LOW],
            ..sim::cfg(ME, 100, 100)
        });
        r.startup(t0);
        let swapped = Advert::new(51, 150, 100, &[LOW, VIP]);
        assert_eq!(r.handle_advert(t0, HIGH, &swapped), Ok(()));
    }

    #[test]
    fn preempt_and_delay_in_backup() {
        // Preempt on: a lower priority is discarded (the timer keeps running).
        let (mut r, t0) = router(100);
        r.startup(t0);
        let t = r.poll_timeout();
        r.handle_advert(t0 + cs(5), HIGH, &adv(50, 100)).unwrap();
        assert_eq!(r.poll_timeout(), t);
        assert_eq!(r.master_addr(), None);
        // Preempt delay: accepted until startup + delay.
        let mut r = Router::new(Config {
            preempt_delay_cs: 500,
            ..sim::cfg(ME, 100, 100)
        });
        r.startup(t0);
        let t1 = t0 + cs(499);
        r.handle_advert(t1, HIGH, &adv(50, 100)).unwrap();
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 100)));
        let t2 = t0 + cs(500);
        r.handle_advert(t2, HIGH, &adv(50, 100)).unwrap();
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 100)));
    }

    #[test]
    fn held_preemption_waits_then_preempts() {
        let (mut r, t0) = router(100);
        r.startup(t0);
        // Held: the lower-priority master is accepted (timer reset, master
        // learned), as with preempt off.
        r.hold_preemption(true);
        assert!(r.preemption_held());
        let t1 = t0 + cs(5);
        r.handle_advert(t1, HIGH, &adv(50, 100)).unwrap();
        assert_eq!(r.master_addr(), Some(HIGH));
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 100)));
        r.handle_timeout(t1 + cs(100));
        assert_eq!(r.state(), State::Backup);
        // Released: its next advert is discarded and the timer runs out.
        r.hold_preemption(false);
        let t2 = t1 + cs(100);
        r.handle_advert(t2, HIGH, &adv(50, 100)).unwrap();
        assert_eq!(r.poll_timeout(), Some(t1 + master_down_interval(100, 100)));
        r.handle_timeout(t1 + master_down_interval(100, 100));
        assert_eq!(r.state(), State::Master);
        // A held router still takes over from a master that stops.
        let (mut r, t0) = router(100);
        r.startup(t0);
        r.hold_preemption(true);
        r.handle_advert(t0, HIGH, &adv(50, 100)).unwrap();
        r.handle_advert(t0 + cs(10), HIGH, &adv(0, 100)).unwrap();
        r.handle_timeout(t0 + cs(10) + skew_time(100, 100));
        assert_eq!(r.state(), State::Master);
    }

    #[test]
    fn set_priority_clamps_and_advertises() {
        let (mut r, t0) = router(100);
        r.set_priority(t0, 255);
        assert_eq!(r.priority(), 254, "255 is the owner's only");
        r.set_priority(t0, 0);
        assert_eq!(r.priority(), 1, "0 means stopping, never a priority");
        r.startup(t0);
        r.handle_timeout(t0 + Duration::from_secs(10));
        drain(&mut r);
        let t1 = t0 + Duration::from_secs(11);
        r.set_priority(t1, 80);
        assert_eq!(drain(&mut r), [Action::SendAdvert { priority: 80 }]);
        assert_eq!(r.poll_timeout(), Some(t1 + cs(100)));
        r.set_priority(t1, 80);
        assert!(drain(&mut r).is_empty(), "no change, no advert");

        let (mut r, t0) = router(255);
        r.set_priority(t0, 200);
        r.set_priority(t0, 255);
        assert_eq!(r.priority(), 255);
    }

    #[test]
    fn config_validation_and_clamping() {
        let good = sim::cfg(ME, 100, 100);
        assert_eq!(good.validate(), Ok(()));
        let bad = |f: fn(&mut Config)| {
            let mut c = good.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.vrid = 0), ConfigError::Vrid);
        assert_eq!(bad(|c| c.priority = 0), ConfigError::Priority);
        assert_eq!(
            bad(|c| c.advert_interval_cs = 0),
            ConfigError::AdvertInterval
        );
        assert_eq!(
            bad(|c| c.advert_interval_cs = 4096),
            ConfigError::AdvertInterval
        );
        assert_eq!(bad(|c| c.vips.clear()), ConfigError::Vips);
        assert!(ConfigError::Priority.to_string().contains("255"));
        let r = Router::new(Config {
            priority: 0,
            advert_interval_cs: 9999,
            ..good
        });
        assert_eq!((r.priority(), r.config().advert_interval_cs), (1, 4095));
        assert_eq!(State::Master.as_str(), "master");
    }

    #[test]
    fn ipv6_config_needs_link_local_primary_and_first_vip() {
        use std::net::Ipv6Addr;
        let good = sim::cfg6(sim::IP6_A, 100, 100);
        assert_eq!(good.validate(), Ok(()));
        let global = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 5);
        let c = Config {
            primary_ip: global,
            ..good.clone()
        };
        assert_eq!(c.validate(), Err(ConfigError::PrimaryNotLinkLocal));
        // RFC 9568 §5.2.9: the link-local address first, not just present.
        let c = Config {
            vips: vec![sim::VIPS6[1], sim::VIPS6[0]],
            ..good.clone()
        };
        assert_eq!(c.validate(), Err(ConfigError::FirstVipNotLinkLocal));
        assert!(ConfigError::FirstVipNotLinkLocal
            .to_string()
            .contains("§5.2.9"));
        let c = Config {
            vips: vec![],
            ..good
        };
        assert_eq!(c.validate(), Err(ConfigError::Vips));
        // IPv4 has no such rule (169.254/16 is not required, nor refused).
        let v4 = Config::new(1, Ipv4Addr::new(169, 254, 0, 1), vec![ME]);
        assert_eq!(v4.validate(), Ok(()));
    }

    #[test]
    fn ipv6_tie_break_is_unsigned_over_128_bits() {
        use std::net::Ipv6Addr;
        let me = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xffff);
        let master = |t0: Instant| {
            let mut r = Router::new(sim::cfg6(me, 100, 100));
            r.startup(t0);
            r.handle_timeout(t0 + Duration::from_secs(10));
            assert!(r.is_master());
            drain(&mut r);
            r
        };
        let adv = Advert::new(sim::VRID, 100, 100, &sim::VIPS6);
        let t0 = Instant::now();
        // Lower: the high word equal, the low words smaller.
        let mut r = master(t0);
        let lower = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfffe);
        r.handle_advert(t0, lower, &adv).unwrap();
        assert_eq!(r.state(), State::Master);
        // Higher in a bit far above the 32 an IPv4 compare would see.
        let higher = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x8000, 0, 0, 0);
        r.handle_advert(t0, higher, &adv).unwrap();
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.master_addr(), Some(higher));
        // A higher priority from a lower address wins as for IPv4.
        let mut r = master(t0);
        let adv = Advert::new(sim::VRID, 101, 100, &sim::VIPS6);
        r.handle_advert(t0, lower, &adv).unwrap();
        assert_eq!(r.state(), State::Backup);
    }
}
