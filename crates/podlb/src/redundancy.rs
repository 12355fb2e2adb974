//! The VRRP driver: runs a sans-IO [`vrrp::Router`] on the control thread,
//! feeds it the adverts the workers punt, carries out its actions (adverts
//! on the wire, announcements, serving on/off, notify hooks), and adjusts
//! its priority from tracking (interface state, usable backends).
//!
//! One driver for either address family ([`InstanceAddr`]): the engine
//! runs a `Redundancy<Ipv4Addr>` for the IPv4 VIPs and, when there are IPv6
//! VIPs and the adverts are multicast, a `Redundancy<Ipv6Addr>` for those
//! (RFC 9568, Abstract: the virtual routers of the two families "are
//! independent of one another and always treated as separate Virtual Router
//! instances"). The IPv6 one advertises from the interface's link-local
//! address (§5.1.2.1) to ff02::12 (§5.1.2.2) from the IPv6 virtual MAC
//! (§7.3), with the virtual router's link-local address first in its list
//! (§5.2.9; docs/decisions.md §69).
//!
//! [`vrrp::Router`]: podlb_core::vrrp::Router

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{VrrpChecksum, VrrpSettings};
use crate::metrics::{Exposition, Family as MetricFamily, Kind, Labels};
use crate::status::{RouterState, VrrpStatus};
use podlb_core::vrrp::{Action, Config as RouterConfig, ConfigError, Router, State};
use podlb_io::Injector;
use podlb_wire::vrrp::{self as wvrrp, Advert, AdvertDrop, ChecksumForm, VrrpAddr};
use podlb_wire::{ethernet, ipv4, ipv6, MacAddr};

/// Buckets (upper bounds, seconds) of the takeover-time histogram.
pub const TAKEOVER_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A lock-free histogram of takeover times (master-down detected → first
/// frame forwarded as master), in microseconds.
#[derive(Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; TAKEOVER_BUCKETS.len()],
    pub count: AtomicU64,
    pub sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, &le) in TAKEOVER_BUCKETS.iter().enumerate() {
            if s <= le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// The mean in milliseconds; `None` before the first observation.
    pub fn mean_ms(&self) -> Option<f64> {
        let c = self.count.load(Relaxed);
        (c > 0).then(|| self.sum_us.load(Relaxed) as f64 / 1e3 / c as f64)
    }

    /// Writes the histogram (seconds) as the family `name`.
    pub fn render(&self, w: &mut Exposition, name: &str, help: &str, labels: Labels<'_>) {
        self.series(&mut w.family(name, help, Kind::Histogram), labels);
    }

    /// Writes the histogram (seconds) as one series of family `f`.
    pub fn series(&self, f: &mut MetricFamily<'_>, labels: Labels<'_>) {
        let buckets = TAKEOVER_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| (le, n.load(Relaxed)));
        f.histogram(
            labels,
            buckets,
            self.count.load(Relaxed),
            self.sum_us.load(Relaxed) as f64 / 1e6,
        );
    }
}

/// What the driver needs of an address family beyond [`VrrpAddr`]: how a
/// punted frame becomes an advert, and its name in metrics and logs.
pub trait InstanceAddr: VrrpAddr + Into<IpAddr> {
    /// `ipv4` or `ipv6`: the `family` label of the `podlb_vrrp_*` series.
    const LABEL: &'static str;

    /// The IP source of a punted frame and its advert, checked as RFC 9568
    /// §7.1 asks ([`wvrrp::parse_advert`], [`wvrrp::parse_advert_ipv6`]);
    /// `None` if the frame is not an IP packet of this family.
    fn read_advert(
        frame: &[u8],
        check_hop_limit: bool,
    ) -> Option<(Self, Result<Advert<Self>, AdvertDrop>)>;
}

impl InstanceAddr for Ipv4Addr {
    const LABEL: &'static str = "ipv4";

    fn read_advert(
        frame: &[u8],
        check_ttl: bool,
    ) -> Option<(Ipv4Addr, Result<Advert<Ipv4Addr>, AdvertDrop>)> {
        let eth = ethernet::Frame::new_checked(frame).ok()?;
        if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
            return None;
        }
        let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
        let src = ip.src();
        Some((
            src,
            wvrrp::parse_advert(src, ip.dst(), ip.ttl(), ip.payload(), check_ttl),
        ))
    }
}

impl InstanceAddr for Ipv6Addr {
    const LABEL: &'static str = "ipv6";

    fn read_advert(
        frame: &[u8],
        check_hop_limit: bool,
    ) -> Option<(Ipv6Addr, Result<Advert<Ipv6Addr>, AdvertDrop>)> {
        let eth = ethernet::Frame::new_checked(frame).ok()?;
        if eth.ethertype() != ethernet::ETHERTYPE_IPV6 {
            return None;
        }
        let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
        Some((ip.src(), wvrrp::parse_advert_ipv6(&ip, check_hop_limit)))
    }
}

/// Whether a punted frame is IPv6 (an advert for the IPv6 instance).
pub fn is_ipv6_frame(frame: &[u8]) -> bool {
    ethernet::Frame::new_checked(frame).is_ok_and(|eth| eth.ethertype() == ethernet::ETHERTYPE_IPV6)
}

/// What /status and /metrics show about one VRRP instance.
#[derive(Default)]
pub struct VrrpView {
    pub vrid: u8,
    /// `ipv4` or `ipv6` ([`InstanceAddr::LABEL`]).
    pub family: &'static str,
    /// 0 initialize, 1 backup, 2 master, 3 fault.
    pub state: AtomicU8,
    pub priority: AtomicU8,
    /// The current master's address, if known (written on change).
    pub master: parking_lot::Mutex<Option<IpAddr>>,
    pub adverts_sent: AtomicU64,
    pub adverts_received: AtomicU64,
    pub drops: [AtomicU64; AdvertDrop::ALL.len()],
    /// Adverts from an address that is not a configured unicast peer.
    pub unknown_peer: AtomicU64,
    /// Transitions into initialize, backup, master, fault.
    pub transitions: [AtomicU64; 4],
    pub takeover: Histogram,
    pub hooks_run: AtomicU64,
    pub hook_errors: AtomicU64,
    /// Unicast peers adverts go to (empty: multicast).
    pub unicast_peers: parking_lot::Mutex<Vec<IpAddr>>,
}

pub const STATE_NAMES: [&str; 4] = [
    RouterState::Initialize.as_str(),
    RouterState::Backup.as_str(),
    RouterState::Master.as_str(),
    RouterState::Fault.as_str(),
];

impl VrrpView {
    pub fn state(&self) -> RouterState {
        RouterState::from_index(self.state.load(Relaxed))
    }

    /// The `/status` section.
    pub fn status(&self) -> VrrpStatus {
        VrrpStatus {
            vrid: self.vrid,
            state: self.state(),
            priority: self.priority.load(Relaxed),
            master: *self.master.lock(),
            unicast_peers: self.unicast_peers.lock().clone(),
            adverts_sent: self.adverts_sent.load(Relaxed),
            adverts_received: self.adverts_received.load(Relaxed),
            takeovers: self.takeover.count.load(Relaxed),
            takeover_mean_ms: self.takeover.mean_ms(),
        }
    }
}

/// The `podlb_vrrp_*` and `podlb_takeover_seconds` families: one series per
/// instance in `views`, labelled with its VRID and `family` (`ipv4`,
/// `ipv6`), each family's HELP and TYPE once.
pub fn render(w: &mut Exposition, views: &[&VrrpView]) {
    if views.is_empty() {
        return;
    }
    let vrids: Vec<String> = views.iter().map(|v| v.vrid.to_string()).collect();
    let rows: Vec<(&VrrpView, [(&str, &str); 2])> = views
        .iter()
        .zip(&vrids)
        .map(|(v, id)| (*v, [("vrid", id.as_str()), ("family", v.family)]))
        .collect();
    let mut f = w.family(
        "podlb_vrrp_state",
        "1 for the state this instance is in, per VRID and address family.",
        Kind::Gauge,
    );
    for (v, l) in &rows {
        let state = v.state();
        for s in RouterState::ALL {
            f.sample(&[l[0], l[1], ("state", s.as_str())], u8::from(s == state));
        }
    }
    let mut f = w.family(
        "podlb_vrrp_transitions_total",
        "State changes, by the state entered.",
        Kind::Counter,
    );
    for (v, l) in &rows {
        for (s, n) in RouterState::ALL.iter().zip(&v.transitions) {
            f.sample(&[l[0], l[1], ("to", s.as_str())], n.load(Relaxed));
        }
    }
    type Read = fn(&VrrpView) -> u64;
    let singles: [(&str, &str, Read); 6] = [
        (
            "podlb_vrrp_priority",
            "Current priority (after tracking).",
            |v| u64::from(v.priority.load(Relaxed)),
        ),
        ("podlb_vrrp_adverts_sent_total", "Adverts sent.", |v| {
            v.adverts_sent.load(Relaxed)
        }),
        (
            "podlb_vrrp_adverts_received_total",
            "Adverts accepted.",
            |v| v.adverts_received.load(Relaxed),
        ),
        (
            "podlb_vrrp_unknown_peer_total",
            "Adverts from addresses that are not unicast peers.",
            |v| v.unknown_peer.load(Relaxed),
        ),
        ("podlb_vrrp_hooks_run_total", "Notify hooks started.", |v| {
            v.hooks_run.load(Relaxed)
        }),
        (
            "podlb_vrrp_hook_errors_total",
            "Notify hooks that failed to start or exited non-zero.",
            |v| v.hook_errors.load(Relaxed),
        ),
    ];
    for (name, help, read) in singles {
        let mut f = w.family(name, help, Kind::of_name(name));
        for (v, l) in &rows {
            f.sample(l, read(v));
        }
    }
    let mut f = w.family(
        "podlb_vrrp_drops_total",
        "Adverts discarded, by RFC 9568 §7.1 check.",
        Kind::Counter,
    );
    for (v, l) in &rows {
        for d in AdvertDrop::ALL {
            f.sample(
                &[l[0], l[1], ("reason", d.as_str())],
                v.drops[d as usize].load(Relaxed),
            );
        }
    }
    let mut f = w.family(
        "podlb_takeover_seconds",
        "Master-down detected to first frame forwarded as master.",
        Kind::Histogram,
    );
    for (v, l) in &rows {
        v.takeover.series(&mut f, l);
    }
}

/// What the driver asks of the engine after a step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Serve the VIPs from now on (Some(true)) or stop (Some(false)).
    pub serve: Option<bool>,
    /// Announce the VIPs this many times: gratuitous ARPs for IPv4,
    /// unsolicited Neighbor Advertisements for IPv6.
    pub garp: Option<u32>,
    /// The mastership was taken over from another instance (backup →
    /// master): time it until the first forwarded frame.
    pub takeover: bool,
}

/// The VRRP router of one address family and what it needs to run: its
/// settings, virtual MAC, primary address, address list and peers.
pub struct Redundancy<A: InstanceAddr = Ipv4Addr> {
    s: VrrpSettings,
    router: Router<A>,
    vmac: MacAddr,
    primary: A,
    /// The advert's address list: the VIPs, for IPv6 after the virtual
    /// router's link-local address (RFC 9568 §5.2.9).
    addrs: Vec<A>,
    /// The VIPs served (`PODLB_VIP` of the hooks).
    vips: Vec<A>,
    /// Unicast peers (empty: multicast).
    peers: Vec<A>,
    /// RFC 9568 §5.1.1.3, §5.1.2.3: receive only TTL / Hop Limit 255.
    check_hop_limit: bool,
    ident: u16,
    fault: bool,
    last_tracked: u8,
    last_master: Option<A>,
    pub view: Arc<VrrpView>,
}

impl Redundancy<Ipv4Addr> {
    /// The IPv4 instance: adverts from `primary` listing `vips`, to the
    /// configured unicast peers or to 224.0.0.18.
    pub fn new(s: VrrpSettings, vips: Vec<Ipv4Addr>, primary: Ipv4Addr) -> Redundancy {
        let peers = s.unicast_peers.clone();
        let check = s.check_ttl;
        Redundancy::build(s, primary, vips.clone(), vips, peers, check)
    }
}

impl Redundancy<Ipv6Addr> {
    /// The IPv6 instance (RFC 9568 §5.1.2): adverts from `link_local` (the
    /// interface's link-local address, §5.1.2.1) to ff02::12 (§5.1.2.2),
    /// listing the virtual router's link-local address
    /// (`vrrp.link_local_v6`, by default the virtual MAC's EUI-64 one) and
    /// then `vips` (§5.2.9). Multicast only, and the Hop Limit is always
    /// checked (§5.1.2.3).
    pub fn new_v6(
        s: VrrpSettings,
        vips: Vec<Ipv6Addr>,
        link_local: Ipv6Addr,
    ) -> Redundancy<Ipv6Addr> {
        let first = s
            .link_local_v6
            .unwrap_or_else(|| wvrrp::virtual_link_local(s.vrid));
        let mut addrs = vec![first];
        addrs.extend(vips.iter().copied().filter(|&v| v != first));
        Redundancy::build(s, link_local, addrs, vips, Vec::new(), true)
    }
}

impl<A: InstanceAddr> Redundancy<A> {
    fn build(
        s: VrrpSettings,
        primary: A,
        addrs: Vec<A>,
        vips: Vec<A>,
        peers: Vec<A>,
        check_hop_limit: bool,
    ) -> Redundancy<A> {
        let mut rc = RouterConfig::new(s.vrid, primary, addrs.clone());
        rc.priority = s.priority;
        rc.advert_interval_cs = (s.advert_interval.as_millis() / 10) as u16;
        rc.preempt = s.preempt;
        rc.preempt_delay_cs = (s.preempt_delay.as_millis() / 10).min(u16::MAX as u128) as u16;
        rc.accept_mode = s.accept_mode;
        let view = Arc::new(VrrpView {
            vrid: s.vrid,
            family: A::LABEL,
            ..Default::default()
        });
        view.priority.store(s.priority, Relaxed);
        *view.unicast_peers.lock() = peers.iter().map(|&p| p.into()).collect();
        Redundancy {
            vmac: A::virtual_mac(s.vrid),
            router: Router::new(rc),
            primary,
            addrs,
            vips,
            peers,
            check_hop_limit,
            ident: 0,
            fault: false,
            last_tracked: s.priority,
            last_master: None,
            s,
            view,
        }
    }

    /// Checks the router's configuration ([`RouterConfig::validate`]): for
    /// IPv6, a link-local primary and first address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.router.config().validate()
    }

    /// The virtual MAC (RFC 9568 §7.3) the master serves the VIPs with.
    pub fn vmac(&self) -> MacAddr {
        self.vmac
    }
    pub fn primary(&self) -> A {
        self.primary
    }
    /// The advert's address list.
    pub fn addrs(&self) -> &[A] {
        &self.addrs
    }
    pub fn state(&self) -> State {
        self.router.state()
    }
    pub fn master_addr(&self) -> Option<A> {
        self.router.master_addr()
    }
    pub fn is_master(&self) -> bool {
        self.router.state() == State::Master && !self.fault
    }
    /// Holds preemption back or lets it happen ([`Router::hold_preemption`]).
    pub fn hold_preemption(&mut self, hold: bool) {
        if hold != self.router.preemption_held() {
            if hold {
                tracing::info!(
                    family = A::LABEL,
                    "vrrp: not preempting until the master's connection table has arrived"
                );
            } else if self.s.preempt {
                tracing::info!(family = A::LABEL, "vrrp: preemption allowed");
            }
            self.router.hold_preemption(hold);
        }
    }
    pub fn unicast_peers(&self) -> &[A] {
        &self.peers
    }

    /// Replaces the unicast peer list at runtime (config reload; later the
    /// Kubernetes peer discovery). An empty list switches to multicast.
    pub fn set_unicast_peers(&mut self, peers: Vec<A>) {
        *self.view.unicast_peers.lock() = peers.iter().map(|&p| p.into()).collect();
        self.peers = peers;
    }

    pub fn start(
        &mut self,
        now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(A) -> Option<MacAddr>,
    ) -> Effects {
        self.router.startup(now);
        self.drive(now, out, peer_mac)
    }

    /// RFC 9568 §6.4.3 Shutdown: a master sends a priority-0 advert.
    pub fn stop(
        &mut self,
        now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(A) -> Option<MacAddr>,
    ) -> Effects {
        self.router.shutdown(now);
        self.drive(now, out, peer_mac)
    }

    /// A punted frame: an IPv4 protocol-112 or IPv6 next-header-112
    /// packet; frames of the other family are ignored.
    pub fn on_frame(&mut self, frame: &[u8], now: Instant) {
        let Some((src, advert)) = A::read_advert(frame, self.check_hop_limit) else {
            return;
        };
        if src == self.primary {
            return; // our own advert, seen again (e.g. via a hub)
        }
        if !self.peers.is_empty() && !self.peers.contains(&src) {
            self.view.unknown_peer.fetch_add(1, Relaxed);
            return;
        }
        match advert.and_then(|adv| self.router.handle_advert(now, src, &adv)) {
            Ok(()) => {
                self.view.adverts_received.fetch_add(1, Relaxed);
            }
            Err(d) => {
                self.view.drops[d as usize].fetch_add(1, Relaxed);
            }
        }
    }

    /// Priority tracking: subtract the configured weights while the
    /// interface is down or no backend is usable.
    pub fn track(&mut self, now: Instant, iface_up: bool, backends_usable: bool) {
        if self.s.priority == 255 {
            return; // the owner's priority is not adjusted
        }
        let mut p = self.s.priority as i32;
        if !iface_up {
            p -= self.s.track_interface_weight as i32;
        }
        if !backends_usable {
            p -= self.s.track_backends_weight as i32;
        }
        let p = p.clamp(1, 254) as u8;
        if p != self.last_tracked {
            tracing::info!(
                family = A::LABEL,
                from = self.last_tracked,
                to = p,
                iface_up,
                backends_usable,
                "vrrp priority changed by tracking"
            );
            self.last_tracked = p;
            self.router.set_priority(now, p);
            self.view.priority.store(p, Relaxed);
        }
    }

    /// Enters or leaves the fault state (the interface is down): no adverts,
    /// not serving, `on_fault` hook.
    pub fn set_fault(
        &mut self,
        now: Instant,
        fault: bool,
        out: &dyn Injector,
        peer_mac: &dyn Fn(A) -> Option<MacAddr>,
    ) -> Effects {
        if fault == self.fault {
            return Effects::default();
        }
        self.fault = fault;
        if fault {
            tracing::warn!(family = A::LABEL, "vrrp: interface down, entering fault");
            self.router.shutdown(now);
            let mut e = self.drive(now, out, peer_mac);
            self.transition(3);
            e.serve = Some(false);
            e
        } else {
            tracing::info!(family = A::LABEL, "vrrp: interface up again, restarting");
            self.router.startup(now);
            self.drive(now, out, peer_mac)
        }
    }

    /// Fires due timers and carries out the router's actions.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(A) -> Option<MacAddr>,
    ) -> Effects {
        if let Some(t) = self.router.poll_timeout() {
            if t <= now {
                self.router.handle_timeout(now);
            }
        }
        self.drive(now, out, peer_mac)
    }

    /// How long until the router next needs the control thread.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.router.poll_timeout()
    }

    fn drive(
        &mut self,
        _now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(A) -> Option<MacAddr>,
    ) -> Effects {
        let mut e = Effects::default();
        while let Some(a) = self.router.poll_action() {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority, out, peer_mac),
                Action::SendGarp => e.garp = Some(self.s.garp_count),
                Action::BecomeMaster => {
                    tracing::info!(vrid = self.s.vrid, family = A::LABEL, "vrrp: master");
                    e.serve = Some(true);
                    e.takeover = self.view.state.load(Relaxed) == 1;
                    self.transition(2);
                }
                Action::BecomeBackup => {
                    tracing::info!(vrid = self.s.vrid, family = A::LABEL, master = ?self.router.master_addr(), "vrrp: backup");
                    e.serve = Some(false);
                    self.transition(1);
                }
                Action::BecomeInitialize => {
                    e.serve = Some(false);
                    if !self.fault {
                        self.transition(0);
                    }
                }
            }
        }
        let master = self.router.master_addr();
        if master != self.last_master {
            self.last_master = master;
            *self.view.master.lock() = master.map(Into::into);
        }
        e
    }

    fn transition(&mut self, to: u8) {
        self.view.state.store(to, Relaxed);
        self.view.transitions[to as usize].fetch_add(1, Relaxed);
        let hook = match to {
            1 => self.s.on_backup.clone(),
            2 => self.s.on_master.clone(),
            3 => self.s.on_fault.clone(),
            _ => None,
        };
        if let Some(path) = hook {
            self.run_hook(&path, STATE_NAMES[to as usize]);
        }
    }

    fn run_hook(&self, path: &str, state: &str) {
        let vips: Vec<String> = self.vips.iter().map(|v| v.to_string()).collect();
        spawn_hook(
            path,
            state,
            &vips.join(","),
            &self.s.vrid.to_string(),
            Some(self.view.clone()),
        );
    }

    fn send_advert(
        &mut self,
        priority: u8,
        out: &dyn Injector,
        peer_mac: &dyn Fn(A) -> Option<MacAddr>,
    ) {
        // IPv6 adverts always carry the pseudo-header checksum (RFC 9568
        // §5.2.8); the setting chooses the IPv4 form only.
        let form = match self.s.checksum {
            VrrpChecksum::PseudoHeader => ChecksumForm::PseudoHeader,
            VrrpChecksum::Plain => ChecksumForm::Plain,
        };
        let interval_cs = (self.s.advert_interval.as_millis() / 10) as u16;
        // Ethernet + IPv6 + 8 + 255 IPv6 addresses fit.
        let mut buf = [0u8; 4200];
        let advert = wvrrp::Repr::<A>::new(self.s.vrid, priority, interval_cs, &self.addrs);
        let mut send = |dst_mac: MacAddr, dst_ip: A, ident: u16| {
            let to = wvrrp::Envelope {
                src_mac: self.vmac,
                dst_mac,
                src_ip: self.primary,
                dst_ip,
                ident,
            };
            let n = advert.emit_frame(&mut buf, &to, form);
            if n.is_ok_and(|n| out.inject(&buf[..n]).is_ok()) {
                self.view.adverts_sent.fetch_add(1, Relaxed);
            }
        };
        self.ident = self.ident.wrapping_add(1);
        if self.peers.is_empty() {
            // RFC 9568 §5.1.1.2, §5.1.2.2: 224.0.0.18 or ff02::12.
            send(A::MULTICAST_MAC, A::MULTICAST, self.ident);
        } else {
            for &p in &self.peers {
                // Unknown MAC yet (ARP pending): broadcast rather than skip,
                // so a takeover is never delayed by resolution.
                let mac = peer_mac(p).unwrap_or(MacAddr::BROADCAST);
                send(mac, p, self.ident);
            }
        }
    }
}

/// Runs a notify hook like keepalived's notify scripts: with only PATH and
/// the documented variables (`PODLB_STATE`, `PODLB_VIP`, `PODLB_VRID`) in
/// its environment, not waited for. Counts into `view` when given.
pub fn spawn_hook(
    path: &str,
    state: &str,
    vips: &str,
    vrid: &str,
    view: Option<std::sync::Arc<VrrpView>>,
) {
    spawn_notify(
        &[path.to_string()],
        state,
        vips,
        vrid,
        "notify hook",
        move |ev| {
            if let Some(v) = &view {
                match ev {
                    HookEvent::Started => v.hooks_run.fetch_add(1, Relaxed),
                    HookEvent::Failed => v.hook_errors.fetch_add(1, Relaxed),
                    HookEvent::Succeeded => 0,
                };
            }
        },
    );
}

/// What became of a command started by [`spawn_notify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Started,
    /// It exited with status 0.
    Succeeded,
    /// It could not start, or exited non-zero.
    Failed,
}

/// Starts `argv` (program and arguments) with only PATH, `PODLB_STATE`,
/// `PODLB_VIP` and `PODLB_VRID` in its environment, stdin from /dev/null,
/// not waited for (a helper thread reaps it). `count` hears whether it
/// started and, later, whether it failed; `what` names it in the log.
pub fn spawn_notify(
    argv: &[String],
    state: &str,
    vips: &str,
    vrid: &str,
    what: &'static str,
    count: impl Fn(HookEvent) + Send + 'static,
) {
    let Some((path, args)) = argv.split_first() else {
        count(HookEvent::Failed);
        return;
    };
    let spawned = std::process::Command::new(path)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("PODLB_STATE", state)
        .env("PODLB_VIP", vips)
        .env("PODLB_VRID", vrid)
        .stdin(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            count(HookEvent::Started);
            let path = path.to_string();
            std::thread::spawn(move || match child.wait() {
                Ok(s) if s.success() => count(HookEvent::Succeeded),
                Ok(s) => {
                    count(HookEvent::Failed);
                    tracing::warn!(hook = %path, status = %s, "{what} failed");
                }
                Err(e) => tracing::warn!(hook = %path, error = %e, "{what}: wait failed"),
            });
        }
        Err(e) => {
            count(HookEvent::Failed);
            tracing::warn!(hook = %path, error = %e, "{what} could not start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podlb_core::vrrp::master_down_interval;

    /// Records what the driver sends.
    #[derive(Default)]
    struct Wire(parking_lot::Mutex<Vec<Vec<u8>>>);

    impl Injector for Wire {
        fn inject(&self, frame: &[u8]) -> std::io::Result<()> {
            self.0.lock().push(frame.to_vec());
            Ok(())
        }
    }

    impl Wire {
        fn take(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut *self.0.lock())
        }
    }

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    const PEER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

    fn settings(extra: &str) -> VrrpSettings {
        let text = format!(
            "interface = \"eth0\"\n[[service]]\nname = \"web\"\nvip = \"2001:2::100\"\nport = 80\n\
             backends = [\"[2001:2::21]:80\"]\n[vrrp]\nvrid = 51\npriority = 100\nadvert_interval_ms = 100\n{extra}"
        );
        crate::config::Config::parse(&text).unwrap().vrrp.unwrap()
    }

    fn no_peer(_: Ipv6Addr) -> Option<MacAddr> {
        None
    }

    /// An IPv6 advert as a peer (keepalived, another podlb) sends it.
    fn advert_from(src: Ipv6Addr, priority: u8, addrs: &[Ipv6Addr], hop_limit: u8) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let repr = wvrrp::Repr::new(51, priority, 10, addrs);
        let n = repr
            .emit_frame(
                &mut buf,
                &wvrrp::Envelope::multicast(51, src),
                ChecksumForm::PseudoHeader,
            )
            .unwrap();
        let mut f = buf[..n].to_vec();
        // Hop Limit: byte 7 of the IPv6 header (not in the checksum).
        f[14 + 7] = hop_limit;
        f
    }

    /// RFC 9568 §5.1.2, §5.2.9, §7.3: the IPv6 instance sends from its
    /// link-local address and the IPv6 virtual MAC to ff02::12, hop limit
    /// 255, the virtual router's link-local address first.
    #[test]
    fn ipv6_instance_advertises_as_rfc_9568_says() {
        let mut r = Redundancy::new_v6(settings(""), vec![VIP6], LL);
        r.validate().unwrap();
        assert_eq!(r.vmac(), wvrrp::virtual_mac_v6(51));
        assert_eq!(r.addrs(), [wvrrp::virtual_link_local(51), VIP6]);
        let wire = Wire::default();
        let t0 = Instant::now();
        let e = r.start(t0, &wire, &no_peer);
        assert_eq!(e.serve, Some(false));
        assert_eq!(r.state(), State::Backup);
        assert!(wire.take().is_empty(), "a backup is silent");
        // No master heard: master after Master_Down_Interval.
        let t1 = t0 + master_down_interval(100, 10);
        let e = r.tick(t1, &wire, &no_peer);
        assert_eq!(e.serve, Some(true));
        assert_eq!(e.garp, Some(3));
        assert!(r.is_master());
        let sent = wire.take();
        assert_eq!(sent.len(), 1);
        let f = ethernet::Frame::new_checked(&sent[0][..]).unwrap();
        assert_eq!(f.dst(), wvrrp::MULTICAST_MAC_V6);
        assert_eq!(f.src(), wvrrp::virtual_mac_v6(51));
        let ip = ipv6::Packet::new_checked(f.payload()).unwrap();
        assert_eq!(
            (ip.src(), ip.dst(), ip.hop_limit()),
            (LL, wvrrp::MULTICAST_V6, 255)
        );
        let adv = wvrrp::parse_advert_ipv6(&ip, true).unwrap();
        assert_eq!((adv.vrid, adv.priority, adv.interval_cs), (51, 100, 10));
        assert_eq!(&adv.addrs[..], [wvrrp::virtual_link_local(51), VIP6]);
        assert_eq!(r.view.adverts_sent.load(Relaxed), 1);
        assert_eq!(r.view.status().master, Some(IpAddr::V6(LL)));

        // A configured link-local address replaces the default one.
        let r = Redundancy::new_v6(settings("link_local_v6 = \"fe80::1\"\n"), vec![VIP6], LL);
        assert_eq!(r.addrs(), ["fe80::1".parse::<Ipv6Addr>().unwrap(), VIP6]);
    }

    /// A higher-priority IPv6 advert makes a master back down; one with a
    /// Hop Limit other than 255 is dropped (RFC 9568 §5.1.2.3); an IPv4
    /// frame is not the IPv6 instance's business.
    #[test]
    fn ipv6_instance_hears_peers_and_checks_hop_limit() {
        let mut r = Redundancy::new_v6(settings(""), vec![VIP6], LL);
        let wire = Wire::default();
        let t0 = Instant::now();
        r.start(t0, &wire, &no_peer);
        let t1 = t0 + master_down_interval(100, 10);
        r.tick(t1, &wire, &no_peer);
        assert!(r.is_master());
        let list = [wvrrp::virtual_link_local(51), VIP6];
        r.on_frame(&advert_from(PEER, 200, &list, 254), t1);
        assert!(r.is_master());
        assert_eq!(r.view.drops[AdvertDrop::BadTtl as usize].load(Relaxed), 1);
        // A list without the virtual router's link-local address differs
        // from ours (RFC 9568 §7.1).
        r.on_frame(&advert_from(PEER, 200, &[VIP6], 255), t1);
        assert!(r.is_master());
        assert_eq!(
            r.view.drops[AdvertDrop::AddrListMismatch as usize].load(Relaxed),
            1
        );
        // Our own advert, seen again: ignored.
        r.on_frame(&advert_from(LL, 200, &list, 255), t1);
        assert!(r.is_master());
        // IPv4 VRRP: not read.
        let mut buf = [0u8; 128];
        let v4 = wvrrp::Repr::new(51, 200, 10, &[Ipv4Addr::new(198, 18, 0, 100)]);
        let n = v4
            .emit_frame(
                &mut buf,
                &wvrrp::Envelope::multicast(51, Ipv4Addr::new(198, 18, 0, 3)),
                ChecksumForm::PseudoHeader,
            )
            .unwrap();
        assert!(!is_ipv6_frame(&buf[..n]));
        r.on_frame(&buf[..n], t1);
        assert!(r.is_master());
        assert_eq!(r.view.adverts_received.load(Relaxed), 0);
        // The real thing: backup, the peer is the master.
        let adv = advert_from(PEER, 200, &list, 255);
        assert!(is_ipv6_frame(&adv));
        r.on_frame(&adv, t1);
        let e = r.tick(t1, &wire, &no_peer);
        assert_eq!(e.serve, Some(false));
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.view.status().master, Some(IpAddr::V6(PEER)));
        assert_eq!(r.view.adverts_received.load(Relaxed), 1);
    }

    /// Both instances in one exposition: each family's HELP and TYPE once,
    /// a series per instance told apart by `family`.
    #[test]
    fn metrics_have_a_series_per_family() {
        let v4 = Redundancy::new(
            settings(""),
            vec![Ipv4Addr::new(198, 18, 0, 100)],
            Ipv4Addr::new(198, 18, 0, 2),
        );
        let v6 = Redundancy::new_v6(settings(""), vec![VIP6], LL);
        v6.view.takeover.observe(Duration::from_millis(3));
        let mut w = Exposition::new();
        render(&mut w, &[&v4.view, &v6.view]);
        let text = w.into_string();
        for family in [
            "podlb_vrrp_state",
            "podlb_vrrp_priority",
            "podlb_vrrp_drops_total",
            "podlb_takeover_seconds",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}:\n{text}"
            );
        }
        assert!(
            text.contains("podlb_vrrp_state{vrid=\"51\",family=\"ipv4\",state=\"initialize\"} 1\n")
        );
        assert!(
            text.contains("podlb_vrrp_state{vrid=\"51\",family=\"ipv6\",state=\"initialize\"} 1\n")
        );
        assert!(text.contains("podlb_takeover_seconds_count{vrid=\"51\",family=\"ipv6\"} 1\n"));
        assert!(text.contains("podlb_takeover_seconds_count{vrid=\"51\",family=\"ipv4\"} 0\n"));
        // No instance, no families.
        let mut w = Exposition::new();
        render(&mut w, &[]);
        assert_eq!(w.into_string(), "");
    }
}
