//! The VRRP driver: runs the sans-IO [`vrrp::Router`] on the control
//! thread, feeds it the adverts the workers punt, carries out its actions
//! (adverts on the wire, gratuitous ARP, serving on/off, notify hooks), and
//! adjusts its priority from tracking (interface state, usable backends).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::{VrrpChecksum, VrrpSettings};
use crate::metrics::{Exposition, Kind, Labels};
use crate::status::{RouterState, VrrpStatus};
use podlb_core::vrrp::{Action, Config as RouterConfig, Router, State};
use podlb_io::Injector;
use podlb_wire::vrrp::{self as wvrrp, AdvertDrop, ChecksumForm};
use podlb_wire::{ethernet, ipv4, MacAddr};

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
        let buckets = TAKEOVER_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| (le, n.load(Relaxed)));
        w.histogram(
            name,
            help,
            labels,
            buckets,
            self.count.load(Relaxed),
            self.sum_us.load(Relaxed) as f64 / 1e6,
        );
    }
}

/// What /status and /metrics show about VRRP.
#[derive(Default)]
pub struct VrrpView {
    pub vrid: u8,
    /// 0 initialize, 1 backup, 2 master, 3 fault.
    pub state: AtomicU8,
    pub priority: AtomicU8,
    /// The current master's address (host order), 0 if unknown.
    pub master: AtomicU32,
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
    pub unicast_peers: parking_lot::Mutex<Vec<Ipv4Addr>>,
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
        let master = self.master.load(Relaxed);
        VrrpStatus {
            vrid: self.vrid,
            state: self.state(),
            priority: self.priority.load(Relaxed),
            master: (master != 0).then(|| Ipv4Addr::from(master)),
            unicast_peers: self.unicast_peers.lock().clone(),
            adverts_sent: self.adverts_sent.load(Relaxed),
            adverts_received: self.adverts_received.load(Relaxed),
            takeovers: self.takeover.count.load(Relaxed),
            takeover_mean_ms: self.takeover.mean_ms(),
        }
    }

    /// The `podlb_vrrp_*` and `podlb_takeover_seconds` families.
    pub fn render(&self, w: &mut Exposition) {
        let vrid = self.vrid.to_string();
        let vrid = vrid.as_str();
        let state = self.state();
        let mut f = w.family(
            "podlb_vrrp_state",
            "1 for the state this instance is in, per VRID.",
            Kind::Gauge,
        );
        for s in RouterState::ALL {
            f.sample(
                &[("vrid", vrid), ("state", s.as_str())],
                u8::from(s == state),
            );
        }
        let mut f = w.family(
            "podlb_vrrp_transitions_total",
            "State changes, by the state entered.",
            Kind::Counter,
        );
        for (s, n) in RouterState::ALL.iter().zip(&self.transitions) {
            f.sample(&[("vrid", vrid), ("to", s.as_str())], n.load(Relaxed));
        }
        for (name, help, v) in [
            (
                "podlb_vrrp_priority",
                "Current priority (after tracking).",
                u64::from(self.priority.load(Relaxed)),
            ),
            (
                "podlb_vrrp_adverts_sent_total",
                "Adverts sent.",
                self.adverts_sent.load(Relaxed),
            ),
            (
                "podlb_vrrp_adverts_received_total",
                "Adverts accepted.",
                self.adverts_received.load(Relaxed),
            ),
            (
                "podlb_vrrp_unknown_peer_total",
                "Adverts from addresses that are not unicast peers.",
                self.unknown_peer.load(Relaxed),
            ),
            (
                "podlb_vrrp_hooks_run_total",
                "Notify hooks started.",
                self.hooks_run.load(Relaxed),
            ),
            (
                "podlb_vrrp_hook_errors_total",
                "Notify hooks that failed to start or exited non-zero.",
                self.hook_errors.load(Relaxed),
            ),
        ] {
            w.family(name, help, Kind::of_name(name))
                .sample(&[("vrid", vrid)], v);
        }
        let mut f = w.family(
            "podlb_vrrp_drops_total",
            "Adverts discarded, by RFC 9568 §7.1 check.",
            Kind::Counter,
        );
        for d in AdvertDrop::ALL {
            f.sample(
                &[("vrid", vrid), ("reason", d.as_str())],
                self.drops[d as usize].load(Relaxed),
            );
        }
        self.takeover.render(
            w,
            "podlb_takeover_seconds",
            "Master-down detected to first frame forwarded as master.",
            &[("vrid", vrid)],
        );
    }
}

/// What the driver asks of the engine after a step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Serve the VIPs from now on (Some(true)) or stop (Some(false)).
    pub serve: Option<bool>,
    /// Announce the VIPs with this many gratuitous ARPs.
    pub garp: Option<u32>,
    /// The mastership was taken over from another instance (backup →
    /// master): time it until the first forwarded frame.
    pub takeover: bool,
}

pub struct Redundancy {
    s: VrrpSettings,
    router: Router,
    vmac: MacAddr,
    primary: Ipv4Addr,
    vips: Vec<Ipv4Addr>,
    ident: u16,
    fault: bool,
    last_tracked: u8,
    pub view: std::sync::Arc<VrrpView>,
}

impl Redundancy {
    pub fn new(s: VrrpSettings, vips: Vec<Ipv4Addr>, primary: Ipv4Addr) -> Redundancy {
        let mut rc = RouterConfig::new(s.vrid, primary, vips.clone());
        rc.priority = s.priority;
        rc.advert_interval_cs = (s.advert_interval.as_millis() / 10) as u16;
        rc.preempt = s.preempt;
        rc.preempt_delay_cs = (s.preempt_delay.as_millis() / 10).min(u16::MAX as u128) as u16;
        rc.accept_mode = s.accept_mode;
        let view = std::sync::Arc::new(VrrpView {
            vrid: s.vrid,
            ..Default::default()
        });
        view.priority.store(s.priority, Relaxed);
        *view.unicast_peers.lock() = s.unicast_peers.clone();
        Redundancy {
            vmac: wvrrp::virtual_mac(s.vrid),
            router: Router::new(rc),
            primary,
            vips,
            ident: 0,
            fault: false,
            last_tracked: s.priority,
            s,
            view,
        }
    }

    /// The virtual MAC (RFC 9568 §7.3) the master serves the VIPs with.
    pub fn vmac(&self) -> MacAddr {
        self.vmac
    }
    pub fn primary(&self) -> Ipv4Addr {
        self.primary
    }
    pub fn state(&self) -> State {
        self.router.state()
    }
    pub fn master_addr(&self) -> Option<Ipv4Addr> {
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
                    "vrrp: not preempting until the master's connection table has arrived"
                );
            } else if self.s.preempt {
                tracing::info!("vrrp: preemption allowed");
            }
            self.router.hold_preemption(hold);
        }
    }
    pub fn unicast_peers(&self) -> &[Ipv4Addr] {
        &self.s.unicast_peers
    }

    /// Replaces the unicast peer list at runtime (config reload; later the
    /// Kubernetes peer discovery). An empty list switches to multicast.
    pub fn set_unicast_peers(&mut self, peers: Vec<Ipv4Addr>) {
        *self.view.unicast_peers.lock() = peers.clone();
        self.s.unicast_peers = peers;
    }

    pub fn start(
        &mut self,
        now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
    ) -> Effects {
        self.router.startup(now);
        self.drive(now, out, peer_mac)
    }

    /// RFC 9568 §6.4.3 Shutdown: a master sends a priority-0 advert.
    pub fn stop(
        &mut self,
        now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
    ) -> Effects {
        self.router.shutdown(now);
        self.drive(now, out, peer_mac)
    }

    /// A punted frame: an IPv4 protocol-112 packet.
    pub fn on_frame(&mut self, frame: &[u8], now: Instant) {
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            return;
        };
        let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
            return;
        };
        let src = ip.src();
        if src == self.primary {
            return; // our own advert, seen again (e.g. via a hub)
        }
        if !self.s.unicast_peers.is_empty() && !self.s.unicast_peers.contains(&src) {
            self.view.unknown_peer.fetch_add(1, Relaxed);
            return;
        }
        let res = wvrrp::parse_advert(src, ip.dst(), ip.ttl(), ip.payload(), self.s.check_ttl)
            .and_then(|adv| self.router.handle_advert(now, src, &adv));
        match res {
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
        peer_mac: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
    ) -> Effects {
        if fault == self.fault {
            return Effects::default();
        }
        self.fault = fault;
        if fault {
            tracing::warn!("vrrp: interface down, entering fault");
            self.router.shutdown(now);
            let mut e = self.drive(now, out, peer_mac);
            self.transition(3);
            e.serve = Some(false);
            e
        } else {
            tracing::info!("vrrp: interface up again, restarting");
            self.router.startup(now);
            self.drive(now, out, peer_mac)
        }
    }

    /// Fires due timers and carries out the router's actions.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &dyn Injector,
        peer_mac: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
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
        peer_mac: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
    ) -> Effects {
        let mut e = Effects::default();
        while let Some(a) = self.router.poll_action() {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority, out, peer_mac),
                Action::SendGarp => e.garp = Some(self.s.garp_count),
                Action::BecomeMaster => {
                    tracing::info!(vrid = self.s.vrid, "vrrp: master");
                    e.serve = Some(true);
                    e.takeover = self.view.state.load(Relaxed) == 1;
                    self.transition(2);
                }
                Action::BecomeBackup => {
                    tracing::info!(vrid = self.s.vrid, master = ?self.router.master_addr(), "vrrp: backup");
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
        self.view
            .master
            .store(self.router.master_addr().map_or(0, u32::from), Relaxed);
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
        peer_mac: &dyn Fn(Ipv4Addr) -> Option<MacAddr>,
    ) {
        let form = match self.s.checksum {
            VrrpChecksum::PseudoHeader => ChecksumForm::PseudoHeader,
            VrrpChecksum::Plain => ChecksumForm::Plain,
        };
        let interval_cs = (self.s.advert_interval.as_millis() / 10) as u16;
        let mut buf = [0u8; 1200];
        let advert = wvrrp::Repr::new(self.s.vrid, priority, interval_cs, &self.vips);
        let mut send = |dst_mac: MacAddr, dst_ip: Ipv4Addr, ident: u16| {
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
        if self.s.unicast_peers.is_empty() {
            send(wvrrp::MULTICAST_MAC, wvrrp::MULTICAST_V4, self.ident);
        } else {
            for &p in &self.s.unicast_peers {
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
