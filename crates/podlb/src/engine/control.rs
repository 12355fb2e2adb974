//! The control thread: carries out what the sans-IO cores of
//! [`podlb_core::control`] decide (ARP requests, gratuitous ARP, unicast
//! replies, snapshot publication, flow refreshes, neighbor retention) and
//! what the VRRP driver and the Lease ask (serving on or off), on the clock
//! the loop read once for the pass ([`Now`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Attach, Config, FileStamp, ServiceConfig};
use crate::k8s::client::KubeUpdate;
use crate::redundancy::{self, Effects, InstanceAddr, Redundancy};
use crate::sync::{PreemptGate, SyncLink, PREEMPT_WAIT_MAX, REFRESH_PERIOD_MS};
use podlb_core::control::announcer::{AnnounceAction, Announcer};
use podlb_core::control::holds::HoldAction;
use podlb_core::control::probes::FileWatch;
use podlb_core::control::resolver::{Resolver, ResolverAction};
use podlb_core::control::staging::{Published, Staging, StagingAction};
use podlb_core::control::sweeper::{SweepAction, SweepPace, Sweeper};
use podlb_core::family::{self, Addr};
use podlb_core::service::Snapshot;
use podlb_core::stats::{DropReason, MAX_STAT_SLOTS};
use podlb_io::{sys, Injector};
use podlb_wire::{arp, ndp, MacAddr};

use super::lease::cloud_role;
use super::{EngineError, EngineView, Now, Wake, SWEEP_TICKS, TICK};

/// The VRRP side of the control thread for one address family: the
/// driver, the preemption gate (a returning IPv4 backup waits for the
/// master's connection table; IPv6 flows are not synced) and the tracking
/// timer.
pub(super) struct VrrpRole<A: InstanceAddr = Ipv4Addr> {
    pub r: Redundancy<A>,
    preempt_gate: PreemptGate,
    next_track: Instant,
}

impl<A: InstanceAddr> VrrpRole<A> {
    pub fn new(r: Redundancy<A>, now: Instant) -> VrrpRole<A> {
        VrrpRole {
            r,
            preempt_gate: PreemptGate::new(PREEMPT_WAIT_MAX),
            next_track: now,
        }
    }
}

/// The VIPs a serving decision ([`Effects`]) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every VIP: the Lease, or the IPv4 VRRP instance when no IPv6 one
    /// runs (the IPv6 VIPs follow it).
    All,
    /// The IPv4 VIPs: the IPv4 instance beside an IPv6 one.
    V4,
    /// The IPv6 VIPs: the IPv6 instance (RFC 9568 §5.1.2).
    V6,
}

impl Scope {
    /// The IPv4 instance's scope: `V4` beside an IPv6 instance, else `All`.
    pub fn of_ipv4(ipv6_instance: bool) -> Scope {
        if ipv6_instance {
            Scope::V4
        } else {
            Scope::All
        }
    }
    fn v4(self) -> bool {
        self != Scope::V6
    }
    fn v6(self) -> bool {
        self != Scope::V4
    }
}

/// The VRRP unicast peers: configured and discovered (Kubernetes).
#[derive(Default)]
struct Peers {
    configured: Vec<Ipv4Addr>,
    discovered: Vec<Ipv4Addr>,
    /// The list changed (reload or discovery): for the VRRP driver.
    changed: Option<Vec<Ipv4Addr>>,
}

impl Peers {
    /// Both lists, sorted, deduplicated.
    fn all(&self) -> Vec<Ipv4Addr> {
        let mut p: Vec<Ipv4Addr> = self
            .configured
            .iter()
            .chain(&self.discovered)
            .copied()
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

/// The control thread's state.
pub(super) struct Control {
    view: Arc<EngineView>,
    injector: Box<dyn Injector>,
    path: PathBuf,
    resolver: Resolver,
    /// Announcements of the IPv4 VIPs (gratuitous ARP), their refresh, the
    /// unicast replies and the conflicts; served while `active`.
    announcer: Announcer,
    /// Announcements of the IPv6 VIPs (unsolicited Neighbor
    /// Advertisements) and their refresh; served while `active6`.
    announcer6: Announcer,
    staging: Staging<Snapshot>,
    sweeper: Sweeper,
    /// The IPv6 flow table's sweep (expiry and counts; IPv6 flows are not
    /// synced).
    sweeper6: Sweeper<u128>,
    /// The solicited-node groups of the IPv6 VIPs, joined on the interface
    /// (AF_PACKET; `None` in TAP mode or if no IPv6 socket could be made).
    groups6: Option<sys::Groups6>,
    sync: Option<SyncLink>,
    /// VRRP master or Lease holder (or neither in use): streams flows to
    /// the backups.
    pub master: bool,
    peers: Peers,
    /// Services from the Kubernetes API (besides the config's).
    kube_services: Vec<ServiceConfig>,
    /// Never-read UDP sockets on the vxlan services' ports.
    vxlan_sinks: HashMap<u16, std::net::UdpSocket>,
    /// When the config file is read again (`watch_config`); `None`: only on
    /// SIGHUP.
    watch: Option<FileWatch<Option<FileStamp>>>,
}

/// How often the config file is looked at (`watch_config`): a change is
/// read one to two periods after it happened, as the file must hold still
/// for one ([`FileWatch`]). The kubelet itself takes up to a minute or so
/// to swap a changed ConfigMap in.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Builds the snapshot of `services`. Health-checked backends are registered
/// with the health gate, and those down or held out left out
/// ([`crate::health::HealthGate::services_for_snapshot`]).
fn build_snapshot(
    generation: u64,
    services: &[ServiceConfig],
    view: &EngineView,
) -> Result<Snapshot, EngineError> {
    let services = view.health.services_for_snapshot(services);
    let mut reg = view.registry.lock();
    let mut snap = Snapshot::build(generation, &services, |s, a| reg.slot(s, a))?;
    if let Some(r) = view.routes.lock().as_ref() {
        snap.route_vteps(|ip| r.next_hop(ip));
    }
    Ok(snap)
}

/// The backends (or their next hops) of `snap` the neighbor tables have
/// no MAC for.
fn unresolved(snap: &Snapshot, sh: &crate::dataplane::Shared) -> Vec<IpAddr> {
    snap.services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.l2_target()))
        .filter(|&ip| sh.neighbor_mac(ip).is_none())
        .map(family::unwide)
        .collect()
}

/// `at` as a time on the takeover and update clocks of [`Shared`]: µs
/// since the epoch, +1 (0 means idle).
///
/// [`Shared`]: crate::dataplane::Shared
fn clock_us(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64 + 1
}

/// A takeover or update clock the control thread armed and a worker's first
/// frame stopped: the span between, once (the clock is idle again after).
fn stopped_clock(armed: &AtomicU64, done: &AtomicU64) -> Option<Duration> {
    let d = done.load(Ordering::Relaxed);
    if d == 0 {
        return None;
    }
    let a = armed.swap(0, Ordering::Relaxed);
    done.store(0, Ordering::Relaxed);
    (a != 0 && d >= a).then(|| Duration::from_micros(d - a))
}

/// Whether an interface's link is up (operstate "up", or "unknown" for
/// devices that do not report it).
fn link_up(name: &str) -> bool {
    match std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")) {
        Ok(s) => matches!(s.trim(), "up" | "unknown"),
        Err(_) => false,
    }
}

impl Control {
    /// `stamp`: the config file's as it was read at start.
    pub fn new(
        view: Arc<EngineView>,
        injector: Box<dyn Injector>,
        (path, stamp): (PathBuf, Option<FileStamp>),
        sync: Option<SyncLink>,
    ) -> Control {
        let cfg = view.config.load_full();
        let refresh = cfg.vrrp.as_ref().map_or(Duration::ZERO, |v| v.garp_refresh);
        let tick_ms = u32::try_from(TICK.as_millis()).unwrap_or(u32::MAX);
        Control {
            resolver: Resolver::new(),
            // Unicast replies are spread over the first second of ticks.
            announcer: Announcer::new(refresh, SWEEP_TICKS),
            announcer6: Announcer::new(refresh, SWEEP_TICKS),
            staging: Staging::new(),
            sweeper: Sweeper::new(SweepPace {
                ticks_per_pass: SWEEP_TICKS,
                tick_ms,
                refresh_period_ms: REFRESH_PERIOD_MS,
                stat_slots: MAX_STAT_SLOTS,
            }),
            sweeper6: Sweeper::new(SweepPace {
                ticks_per_pass: SWEEP_TICKS,
                tick_ms,
                refresh_period_ms: REFRESH_PERIOD_MS,
                stat_slots: MAX_STAT_SLOTS,
            }),
            groups6: match &cfg.attach {
                Attach::AfPacket { interface } => sys::ifindex(interface)
                    .and_then(|i| sys::Groups6::new(u32::try_from(i).unwrap_or(0)))
                    .map_err(|e| tracing::info!(error = %e, "no IPv6 socket: IPv6 VIPs rely on the link passing multicast"))
                    .ok(),
                Attach::Tap { .. } => None,
            },
            sync,
            master: false,
            peers: Peers {
                configured: cfg
                    .vrrp
                    .as_ref()
                    .map(|v| v.unicast_peers.clone())
                    .unwrap_or_default(),
                ..Peers::default()
            },
            kube_services: Vec::new(),
            vxlan_sinks: HashMap::new(),
            watch: cfg
                .watch_config
                .then(|| FileWatch::new(WATCH_PERIOD, Instant::now(), stamp)),
            view,
            injector,
            path,
        }
    }

    /// Reads the clock: the one read of a loop pass, which stamps the
    /// control loop's heartbeat (`/livez`).
    pub fn clock(&self) -> Now {
        let sh = &self.view.shared;
        let now = Now::read(sh.epoch);
        sh.heartbeats.control.stamp(sh.epoch, now.at);
        now
    }

    pub fn view(&self) -> Arc<EngineView> {
        self.view.clone()
    }

    pub fn injector(&self) -> &dyn Injector {
        &*self.injector
    }

    /// A new peer list for the VRRP driver, if it changed.
    pub fn take_peers_changed(&mut self) -> Option<Vec<Ipv4Addr>> {
        self.peers.changed.take()
    }

    /// Whether a snapshot waits for its backends' ARP answers.
    pub fn staging(&self) -> bool {
        self.staging.pending().is_some()
    }

    // ---- services and snapshots --------------------------------------------

    /// Every service to serve now: the config's and Kubernetes'.
    fn services_now(&self) -> Vec<ServiceConfig> {
        let cfg = self.view.config.load();
        let mut all = cfg.services.clone();
        all.extend(self.kube_services.iter().cloned());
        all
    }

    pub fn on_wake(&mut self, now: Now, w: Wake) {
        match w {
            Wake::Kube(u) => self.kube_update(now, *u),
        }
    }

    /// The API changed what to serve.
    fn kube_update(&mut self, now: Now, u: KubeUpdate) {
        if let Some(peers) = u.peers {
            if peers != self.peers.discovered {
                self.peers.discovered = peers;
                self.peers_updated();
            }
        }
        if u.services != self.kube_services {
            tracing::info!(
                services = u.services.len(),
                draining = u.draining.values().map(Vec::len).sum::<usize>(),
                "kubernetes: new services"
            );
            self.kube_services = u.services;
            self.republish(now, Some(u.event_at));
        }
    }

    /// Recomputes the peer list after either source changed, and hands it
    /// to the VRRP driver (via the loop), the sync link and ARP.
    fn peers_updated(&mut self) {
        let peers = self.peers.all();
        tracing::info!(?peers, "unicast peers");
        for p in &peers {
            self.view.shared.neighbors.track(self.view.hop(*p));
        }
        if let Some(link) = self.sync.as_mut() {
            link.set_peers(peers.clone());
        }
        self.peers.changed = Some(peers);
    }

    /// A backend went up or down (health check or refusal hold): rebuild the
    /// snapshot from the running config (down backends leave the Maglev
    /// tables; their established flows stay pinned in the flow table and
    /// drain) and publish it, as a reload does for services, without reading
    /// the file.
    pub fn health_changed(&mut self, now: Now) {
        self.republish(now, None);
    }

    /// Rebuilds the snapshot from the current services and stages it.
    fn republish(&mut self, now: Now, event_at: Option<Instant>) {
        let services = self.services_now();
        if let Err(e) = self.stage(now, &services, event_at) {
            tracing::error!(error = %e, "services not published; keeping the running ones");
            *self.view.last_reload_error.lock() = Some(e.to_string());
            self.view.reload_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Builds a snapshot of `services` and stages it ([`Staging`]): it is
    /// published once its backends are resolved (or after a short wait), so
    /// the first SYN to a new backend does not meet an empty ARP cache; the
    /// control loop keeps running (VRRP adverts, sync) meanwhile. A newer
    /// stage replaces an older one that is still waiting.
    pub fn stage(
        &mut self,
        now: Now,
        services: &[ServiceConfig],
        event_at: Option<Instant>,
    ) -> Result<(), EngineError> {
        let published = self.view.shared.snapshot.load_full();
        let base = self
            .staging
            .pending()
            .map_or(published.generation, |p| p.generation);
        let mut snap = build_snapshot(base + 1, services, &self.view)?;
        // Removed vxlan backends keep their tunnel while their flows drain.
        let fb = self.sweeper.flow_backends();
        let carries = |ip: u128| u32::from_wide(ip).is_some_and(|v| fb.contains(&v));
        snap.carry_vteps(&published, carries);
        if let Some(p) = self.staging.pending() {
            snap.carry_vteps(p, carries);
        }
        *self.view.desired.lock() = services.to_vec();
        self.track_backends(&snap);
        self.vxlan_sinks(&snap);
        self.staging.stage(now.at, snap, event_at);
        self.poll_pending(now);
        Ok(())
    }

    /// Publishes the staged snapshot when its backends are resolved or its
    /// wait is over; asks for the missing ones meanwhile.
    pub fn poll_pending(&mut self, now: Now) {
        let Some(snap) = self.staging.pending() else {
            return;
        };
        self.route_backends(snap, now.ms);
        let missing = unresolved(snap, &self.view.shared);
        self.staging.handle_missing(now.at, &missing);
        while let Some(a) = self.staging.poll_action() {
            match a {
                StagingAction::SendArpRequest(ip) => self.send_request(ip, now.ms),
                StagingAction::Publish(p) => self.publish(now, p),
            }
        }
    }

    /// Makes a staged snapshot the workers' one.
    fn publish(&mut self, now: Now, p: Published<Snapshot>) {
        if p.unresolved > 0 {
            tracing::warn!(
                count = p.unresolved,
                "backends not resolved yet; their flows wait for ARP"
            );
        }
        let sh = &self.view.shared;
        let old_vips: HashSet<IpAddr> = sh.snapshot.load().vips().collect();
        let fresh: Vec<IpAddr> = p.item.vips().filter(|v| !old_vips.contains(v)).collect();
        let generation = p.item.generation;
        if let Some(c) = &self.view.cloud {
            // Kubernetes pool VIPs and reloaded services are claimed too
            // (the cloud mover moves IPv4 addresses).
            c.set_vips(p.item.vips4().collect());
        }
        if let Some(g) = self.groups6.as_mut() {
            // With an IPv6 VRRP instance, ff02::12 too (RFC 9568 §5.1.2.2):
            // MLD-snooping switches then pass the adverts.
            let vrrp6 = self.view.vrrp6.is_some();
            let groups = p
                .item
                .vips_of::<u128>()
                .map(|v| ndp::solicited_node(Ipv6Addr::from(v)))
                .chain(vrrp6.then_some(podlb_wire::vrrp::MULTICAST_V6));
            for (group, e) in g.set(groups) {
                tracing::warn!(%group, error = %e, "cannot join the multicast group (a solicited-node group of an IPv6 VIP, or ff02::12)");
            }
        }
        sh.snapshot.store(Arc::new(p.item));
        if let Some(t) = p.event_at {
            self.view
                .publish_latency
                .observe(now.at.saturating_duration_since(t));
            sh.update_done_us.store(0, Ordering::Relaxed);
            sh.update_gen.store(generation, Ordering::Relaxed);
            sh.update_armed_us
                .store(clock_us(sh.epoch, t), Ordering::Relaxed);
        }
        // A new VIP is announced, by the active instance of its family
        // only (a backup never speaks for the VIPs).
        let (fresh4, fresh6): (Vec<IpAddr>, Vec<IpAddr>) =
            fresh.into_iter().partition(IpAddr::is_ipv4);
        if sh.active.load(Ordering::Relaxed) && !fresh4.is_empty() {
            self.announcer.announce_new(now.at, fresh4);
        }
        if sh.active6.load(Ordering::Relaxed) && !fresh6.is_empty() {
            self.announcer6.announce_new(now.at, fresh6);
        }
        self.announce();
        tracing::debug!(generation, "snapshot published");
    }

    fn track_backends(&self, snap: &Snapshot) {
        let sh = &self.view.shared;
        for s in &snap.services {
            for b in &s.backends {
                let ip = b.l2_target();
                let tracked = match u32::from_wide(ip) {
                    Some(v4) => sh.neighbors.track(v4),
                    None => sh.neighbors6.track(ip),
                };
                if !tracked {
                    tracing::warn!(backend = %b.addr, "neighbor table full; backend not tracked");
                }
            }
        }
    }

    /// A never-read UDP socket on every vxlan service's port, so the kernel
    /// (which sees the VXLAN replies to its own address too) sends no ICMP
    /// port unreachable for them. AF_PACKET only; kept for the process
    /// lifetime (a port a reload removes stays bound, harmlessly).
    fn vxlan_sinks(&mut self, snap: &Snapshot) {
        if !matches!(self.view.config.load().attach, Attach::AfPacket { .. }) {
            return;
        }
        for port in snap.vxlan_ports() {
            if self.vxlan_sinks.contains_key(&port) {
                continue;
            }
            match sys::udp_sink(port) {
                Ok(s) => {
                    self.vxlan_sinks.insert(port, s);
                }
                Err(e) => tracing::warn!(
                    port,
                    error = %e,
                    "cannot bind the VXLAN port: the kernel may answer VXLAN replies with ICMP port unreachable (is a kernel VXLAN device using it?)"
                ),
            }
        }
    }

    /// Full-NAT backends on another subnet are reached through the gateway:
    /// their neighbor entries carry the next hop's MAC (a route cache, as a
    /// kernel FIB does), so the workers' per-packet lookup by backend address
    /// stays as it is. The next hop itself is tracked and ARP-resolved.
    /// Only `nat`: DSR needs the backend on the link (the VIP is the frame's
    /// destination), and vxlan backends have their VTEP's next hop already.
    fn route_backends(&self, snap: &Snapshot, now_ms: u32) {
        let routes = self.view.routes.lock();
        let Some(r) = routes.as_ref() else { return };
        let n = &self.view.shared.neighbors;
        for s in snap
            .services
            .iter()
            .filter(|s| s.mode == crate::config::Mode::Nat)
        {
            // IPv4 routes only: IPv6 backends are on the link.
            for v4 in s.backends.iter().filter_map(|b| u32::from_wide(b.ip)) {
                let ip = Ipv4Addr::from(v4);
                if r.on_link(ip) {
                    continue;
                }
                let hop = u32::from(r.next_hop(ip));
                n.track(hop);
                if let Some(mac) = n.lookup(hop) {
                    n.learn(v4, mac, now_ms);
                }
            }
        }
    }

    /// Update clock: stopped by a worker's first frame under the new
    /// snapshot.
    pub fn observe_update_clock(&mut self) {
        let sh = &self.view.shared;
        if let Some(d) = stopped_clock(&sh.update_armed_us, &sh.update_done_us) {
            self.view.update_latency.observe(d);
            tracing::info!(
                latency_ms = d.as_secs_f64() * 1e3,
                "API event to first packet"
            );
        }
    }

    /// Turns the workers' refusal reports into holds (`flows.refused_hold_s`)
    /// and ends the holds that are over; true when a backend left or came
    /// back, so the snapshot must be rebuilt.
    pub fn refusals(&self, now: Now) -> bool {
        let hold = self.view.config.load().flows.refused_hold;
        let health = &self.view.health;
        let mut holds = health.holds.lock();
        while let Some(r) = self.view.shared.refused.pop() {
            health.refusals_total.fetch_add(1, Ordering::Relaxed);
            let backend = SocketAddr::new(family::unwide(r.backend), r.port);
            holds.handle_refusal(now.at, backend, hold);
        }
        holds.handle_timeout(now.at);
        let mut rebuild = false;
        while let Some(a) = holds.poll_action() {
            rebuild = true;
            match a {
                HoldAction::Hold { backend, hold } => {
                    tracing::warn!(backend = %backend, hold_ms = hold.as_millis() as u64, "backend refused a connection; the client's retry goes elsewhere while it is held out")
                }
                HoldAction::Release(backend) => {
                    tracing::info!(backend = %backend, "refusal hold over; backend back in")
                }
            }
        }
        rebuild
    }

    // ---- the tick ----------------------------------------------------------

    /// Every [`TICK`]: announcements, conflicts, ARP resolution, the flow
    /// sweep.
    pub fn tick(&mut self, now: Now) {
        let sh = self.view.shared.clone();
        let snap = sh.snapshot.load_full();
        let serving = sh.active.load(Ordering::Relaxed);
        self.announcer
            .handle_tick(now.at, serving, snap.vips4().map(IpAddr::V4));
        let vips6 = snap.vips_of::<u128>().map(|v| IpAddr::V6(v.into()));
        self.announcer6
            .handle_tick(now.at, sh.active6.load(Ordering::Relaxed), vips6);
        let samples = self.view.workers.iter().enumerate().map(|(i, w)| {
            let frames = w.drops(DropReason::VipConflict);
            (i, frames, w.conflict.read())
        });
        self.announcer.handle_conflicts(now.at, serving, samples);
        self.announce();

        // ARP and NDP resolution and refresh.
        self.route_backends(&snap, now.ms);
        self.resolver.handle_tick(now.ms, &sh.neighbors.entries());
        self.resolver.handle_tick(now.ms, &sh.neighbors6.entries());
        while let Some(a) = self.resolver.poll_action() {
            match a {
                ResolverAction::SendArpRequest(ip) => self.send_request(ip, now.ms),
                ResolverAction::Forget(ip) => {
                    tracing::warn!(neighbor = %ip, "no ARP or NDP answer; forgetting its MAC");
                    match ip {
                        IpAddr::V4(a) => sh.neighbors.invalidate(u32::from(a)),
                        IpAddr::V6(a) => sh.neighbors6.invalidate(u128::from(a)),
                    }
                }
            }
        }

        // Incremental sweep: expire idle flows, count active ones. The
        // IPv6 sweep runs first, in step with the IPv4 one (same pace), so
        // a completed IPv4 pass sums both.
        let streaming = self.master && self.sync.is_some();
        self.sweeper6.handle_tick(now.ms, &sh.flows6, streaming);
        while let Some(a) = self.sweeper6.poll_action() {
            if let (SweepAction::Refresh(f), Some(link)) = (a, self.sync.as_mut()) {
                link.refresh(&f, now.ms);
            }
        }
        self.sweeper.handle_tick(now.ms, &sh.flows, streaming);
        while let Some(a) = self.sweeper.poll_action() {
            match a {
                SweepAction::Refresh(f) => {
                    if let Some(link) = self.sync.as_mut() {
                        link.refresh(&f, now.ms);
                    }
                }
                SweepAction::PassComplete => self.pass_complete(&snap),
            }
        }
    }

    /// A full sweep ended: publish the active-flow counts and stop tracking
    /// neighbors nothing needs any more.
    fn pass_complete(&self, snap: &Snapshot) {
        let active6 = self.sweeper6.active();
        for (i, (a, &n)) in self
            .view
            .active
            .iter()
            .zip(self.sweeper.active())
            .enumerate()
        {
            a.store(n + active6.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
        let phases6 = self.sweeper6.phases();
        for (i, (a, n)) in self
            .view
            .phases
            .iter()
            .zip(self.sweeper.phases())
            .enumerate()
        {
            a.store(n + phases6[i], Ordering::Relaxed);
        }
        let wide: Vec<u128> = snap
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.l2_target()))
            .collect();
        let current = wide
            .iter()
            .filter_map(|&w| u32::from_wide(w))
            .chain(snap.vtep_next_hops());
        let peers = self.peers.all().into_iter().map(u32::from);
        let keep = {
            let routes = self.view.routes.lock();
            self.sweeper.neighbors_to_keep(current, peers, |ip| {
                routes
                    .as_ref()
                    .map_or(ip, |r| u32::from(r.next_hop(Ipv4Addr::from(ip))))
            })
        };
        self.view.shared.neighbors.retain(|ip| keep.contains(&ip));
        let keep6 = self.sweeper6.neighbors_to_keep(
            wide.iter().filter_map(|&w| u128::from_wide(w)),
            [],
            |ip| ip,
        );
        self.view.shared.neighbors6.retain(|ip| keep6.contains(&ip));
    }

    /// Carries out the announcers' actions.
    fn announce(&mut self) {
        let v = self.view.clone();
        let mut conflicts = false;
        while let Some(a) = self
            .announcer
            .poll_action()
            .or_else(|| self.announcer6.poll_action())
        {
            match a {
                AnnounceAction::SendGarp(vip) => {
                    if self.send_announcement(vip) {
                        v.garp_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                AnnounceAction::SendUnicastReply { vip, client, mac } => {
                    if self.send_unicast_reply(vip, client, mac) {
                        v.garp_unicast_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                AnnounceAction::Conflict { vip, mac, count } => {
                    conflicts = true;
                    tracing::warn!(%vip, %mac, count, "VIP conflict: another host claims the VIP (RFC 5227 §2.4)");
                }
                AnnounceAction::Defend(vip) => {
                    conflicts = true;
                    if self.send_garp(vip) {
                        v.garp_sent.fetch_add(1, Ordering::Relaxed);
                        v.vip_defences.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%vip, "defended the VIP with a gratuitous ARP");
                    }
                }
            }
        }
        if conflicts {
            *v.conflicts.lock() = self.announcer.conflicts().rows();
            *v.conflicts_per_vip.lock() = self.announcer.conflicts().per_vip();
        }
    }

    // ---- frames ------------------------------------------------------------

    /// Asks for `target`'s MAC. The sender address is 0.0.0.0, the RFC 5227
    /// §2.1.1 probe form: a VIP would be wrong as sender, since DSR backends
    /// hold the VIP themselves and Linux drops ARP from its own address as a
    /// martian; and a probe leaves no entry in the target's ARP cache.
    fn send_request(&self, target: IpAddr, now_ms: u32) {
        let mut buf = [0u8; 128];
        let frame = match target {
            IpAddr::V4(t) => {
                arp::Repr::request(self.view.own_mac, Ipv4Addr::UNSPECIFIED, t).emit_frame(&mut buf)
            }
            // RFC 4861 §7.2.2: from our link-local address, to the
            // target's solicited-node group, with our MAC in a Source
            // Link-Layer Address option.
            IpAddr::V6(t) => ndp::SolicitRepr {
                target: t,
                source_ll: Some(self.view.own_mac),
            }
            .emit_frame(
                &mut buf,
                &ndp::Envelope::solicit(self.view.own_mac, self.view.ll6, t),
            ),
        };
        let sent = frame
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
            .and_then(|n| self.injector.inject(&buf[..n]));
        match sent {
            Ok(()) => {
                self.view.arp_requests.fetch_add(1, Ordering::Relaxed);
                let sh = &self.view.shared;
                match target {
                    IpAddr::V4(t) => sh.neighbors.asked(u32::from(t), now_ms),
                    IpAddr::V6(t) => sh.neighbors6.asked(u128::from(t), now_ms),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, target = %target, "ARP request or Neighbor Solicitation not sent")
            }
        }
    }

    /// Announces `vip` at the serving MAC: a gratuitous ARP for IPv4, an
    /// unsolicited Neighbor Advertisement (Override set) to all nodes for
    /// IPv6 (RFC 4861 §7.2.6). True if sent.
    fn send_announcement(&self, vip: IpAddr) -> bool {
        match vip {
            IpAddr::V4(v) => self.send_garp(v),
            // RFC 9568 §6.4.1, §6.4.2: at the IPv6 virtual MAC with an
            // IPv6 instance. The Router flag stays clear: a VIP is not a
            // router's address (docs/decisions.md §69).
            IpAddr::V6(v) => {
                let mut buf = [0u8; 128];
                let na = ndp::AdvertRepr::unsolicited(v, self.view.mac6);
                let to = ndp::Envelope::all_nodes(self.view.mac6, self.view.ll6);
                let n = na.emit_frame(&mut buf, &to);
                n.is_ok_and(|n| self.injector.inject(&buf[..n]).is_ok())
            }
        }
    }

    /// A gratuitous ARP for `vip` from the serving MAC (RFC 5227 §2.3
    /// announcement, §2.4 (c) defence). True if sent.
    fn send_garp(&self, vip: Ipv4Addr) -> bool {
        let mut buf = [0u8; 64];
        let n = arp::Repr::gratuitous(self.view.mac, vip).emit_frame(&mut buf);
        n.is_ok_and(|n| self.injector.inject(&buf[..n]).is_ok())
    }

    /// An ARP reply (RFC 826) to `client` at `mac`: `vip` is at the serving
    /// MAC. True if sent.
    fn send_unicast_reply(&self, vip: Ipv4Addr, client: Ipv4Addr, mac: MacAddr) -> bool {
        let mut buf = [0u8; 64];
        let reply = arp::Repr {
            operation: arp::OP_REPLY,
            sender_hw: self.view.mac,
            sender_ip: vip,
            target_hw: mac,
            target_ip: client,
        };
        let n = reply.emit_frame(&mut buf);
        n.is_ok_and(|n| self.injector.inject(&buf[..n]).is_ok())
    }

    // ---- serving -----------------------------------------------------------

    /// Carries out what the VRRP driver or the Lease asks for the VIPs of
    /// `scope`: serving on or off, announcements (and unicast replies to
    /// IPv4 clients on a takeover).
    pub fn apply(&mut self, now: Now, e: Effects, scope: Scope) {
        let sh = self.view.shared.clone();
        if let Some(serve) = e.serve {
            // Arm the takeover clock: the first frame a worker sends as
            // master (the first IPv6 one, for the IPv6 instance) stops it.
            let arm = |armed: &AtomicU64, done: &AtomicU64| {
                done.store(0, Ordering::Relaxed);
                armed.store(clock_us(sh.epoch, now.at), Ordering::Relaxed);
            };
            if scope.v4() {
                if serve && e.takeover && !sh.active.load(Ordering::Relaxed) {
                    arm(&sh.takeover_armed_us, &sh.takeover_done_us);
                }
                sh.active.store(serve, Ordering::Relaxed);
                // The cloud mover moves IPv4 addresses.
                if let Some(c) = &self.view.cloud {
                    c.set_role(cloud_role(serve, &self.view));
                }
            }
            if scope.v6() {
                if scope == Scope::V6 && serve && e.takeover && !sh.active6.load(Ordering::Relaxed)
                {
                    arm(&sh.takeover6_armed_us, &sh.takeover6_done_us);
                }
                sh.active6.store(serve, Ordering::Relaxed);
            }
        }
        if let Some(n) = e.garp {
            let snap = sh.snapshot.load_full();
            // The first announcement goes out at once, not at the next tick.
            if scope.v4() {
                self.announcer
                    .announce(now.at, snap.vips4().map(IpAddr::V4), n);
            }
            if scope.v6() {
                let vips6 = snap.vips_of::<u128>().map(|v| IpAddr::V6(v.into()));
                self.announcer6.announce(now.at, vips6, n);
            }
            self.announce();
            let unicast = self
                .view
                .config
                .load()
                .vrrp
                .as_ref()
                .is_some_and(|v| v.garp_unicast_clients);
            if unicast && scope.v4() && e.serve == Some(true) {
                let clients = self
                    .announcer
                    .handle_takeover(&sh.flows, |v| snap.is_vip(v));
                tracing::info!(clients, "unicast ARP replies to clients scheduled");
            }
        }
    }

    /// Moves connection-sync traffic; returns whether there was any.
    pub fn sync_step(&mut self, now: Now, master_addr: Option<Ipv4Addr>) -> bool {
        let Some(link) = self.sync.as_mut() else {
            return false;
        };
        let sh = &self.view.shared;
        let snap = sh.snapshot.load();
        link.step(
            now.at,
            now.ms,
            self.master,
            master_addr,
            &sh.flows,
            &sh.flows6,
            &snap,
        )
    }

    /// Feeds punted adverts to the VRRP drivers (IPv6 ones to the IPv6
    /// instance, if it runs) and runs their timers; moves connection-sync
    /// traffic; tracks the link and the backends.
    /// Returns whether there was work (adverts or sync traffic), so the
    /// loop polls at `VRRP_POLL_BUSY` then and at `VRRP_POLL_IDLE` when not.
    pub fn vrrp_step(
        &mut self,
        v: &mut VrrpRole,
        mut v6: Option<&mut VrrpRole<Ipv6Addr>>,
        now: Now,
    ) -> bool {
        let mut busy = false;
        let r = &mut v.r;
        // A backup does not preempt before the master's whole connection
        // table has reached it (bounded; decisions.md §44). IPv4 only: IPv6
        // flows are not synced.
        if let Some(link) = &self.sync {
            let backup = r.state() == podlb_core::vrrp::State::Backup;
            r.hold_preemption(v.preempt_gate.hold(
                now.at,
                backup,
                link.synced(),
                link.master_heard(),
            ));
        }
        while let Some(frame) = self.view.shared.punt.pop() {
            match v6.as_deref_mut() {
                Some(v6) if redundancy::is_ipv6_frame(&frame) => v6.r.on_frame(&frame, now.at),
                _ => r.on_frame(&frame, now.at),
            }
            busy = true;
        }
        self.master = r.is_master();
        busy |= self.sync_step(now, r.master_addr());
        self.instance_step(v, now, Scope::of_ipv4(v6.is_some()));
        if let Some(v6) = v6 {
            self.instance_step(v6, now, Scope::V6);
        }
        busy
    }

    /// One VRRP instance's timers, tracking (the interface's link, and
    /// whether a backend of its VIPs is usable) and takeover clock.
    fn instance_step<A: InstanceAddr>(&mut self, v: &mut VrrpRole<A>, now: Now, scope: Scope) {
        let view = self.view.clone();
        let peer_mac = |ip: A| view.peer_mac(ip.into());
        let e = v.r.tick(now.at, &*self.injector, &peer_mac);
        self.apply(now, e, scope);
        if now.at >= v.next_track {
            v.next_track = now.at + Duration::from_millis(100);
            let iface_up = match &self.view.config.load().attach {
                Attach::AfPacket { interface } => link_up(interface),
                Attach::Tap { .. } => true,
            };
            let usable = self.backends_usable(scope);
            let e = v.r.set_fault(now.at, !iface_up, &*self.injector, &peer_mac);
            self.apply(now, e, scope);
            v.r.track(now.at, iface_up, usable);
        }
        // Takeover time: armed on becoming master, stopped by a worker's
        // first transmission (of an IPv6 frame, for the IPv6 instance).
        let sh = &self.view.shared;
        let (armed, done) = match scope {
            Scope::V6 => (&sh.takeover6_armed_us, &sh.takeover6_done_us),
            Scope::All | Scope::V4 => (&sh.takeover_armed_us, &sh.takeover_done_us),
        };
        if let Some(d) = stopped_clock(armed, done) {
            v.r.view.takeover.observe(d);
        }
    }

    /// Whether a backend of a service of `scope`'s VIPs is resolved (or
    /// there is no such service).
    fn backends_usable(&self, scope: Scope) -> bool {
        let sh = &self.view.shared;
        let snap = sh.snapshot.load();
        let mut services = snap
            .services
            .iter()
            .filter(|s| {
                let v4 = u32::from_wide(s.vip).is_some();
                (v4 && scope.v4()) || (!v4 && scope.v6())
            })
            .peekable();
        services.peek().is_none()
            || services
                .flat_map(|s| &s.backends)
                .any(|b| sh.neighbor_mac(b.l2_target()).is_some())
    }

    /// Drops punted adverts unread (while draining at shutdown).
    pub fn vrrp_punts_discard(&mut self) {
        while self.view.shared.punt.pop().is_some() {}
    }

    // ---- reload ------------------------------------------------------------

    /// `watch_config`: looks at the config file when due, and reloads it
    /// once a change has settled.
    pub fn watch_config(&mut self, now: Now) {
        let Some(w) = self.watch.as_mut() else { return };
        if !w.due(now.at) || !w.handle_stamp(now.at, FileStamp::of(&self.path)) {
            return;
        }
        tracing::info!(path = %self.path.display(), "config file changed; reloading");
        self.reload(now);
    }

    /// SIGHUP (or a changed file, `watch_config`): load the file again; on
    /// success publish the new services, keeping every established flow on
    /// its backend. On error keep serving the old config and report the
    /// error.
    pub fn reload(&mut self, now: Now) {
        // Stamped before reading: a change during the read is seen next time.
        if let Some(w) = self.watch.as_mut() {
            w.handle_loaded(FileStamp::of(&self.path));
        }
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                self.reload_failed(&e);
                return;
            }
        };
        let old = self.view.config.load_full();
        if new.attach != old.attach
            || new.workers != old.workers
            || new.admin != old.admin
            || new.admin_public != old.admin_public
            || new.admin_public_reports != old.admin_public_reports
            || new.watch_config != old.watch_config
            || new.probes != old.probes
            || new.io != old.io
            || new.flows != old.flows
        {
            tracing::warn!("reload: interface, workers, admin*, watch_config, [probes], [io] and [flows] changes need a restart; applying [[service]] changes only");
        }
        if let Some(k) = &new.kubernetes {
            if old.kubernetes.as_ref() != Some(k) {
                tracing::warn!("reload: [kubernetes] changes need a restart");
            }
        }
        if let Attach::AfPacket { interface } = &old.attach {
            if let Ok(r) = crate::route::load(interface) {
                *self.view.routes.lock() = Some(r);
            }
        }
        let mut services = new.services.clone();
        services.extend(self.kube_services.iter().cloned());
        if let Err(e) = self.stage(now, &services, None) {
            self.reload_failed(&e);
            return;
        }
        let mut merged = (*old).clone();
        merged.services = new.services;
        // The VRRP peer list may change at runtime (Pods come and go);
        // everything else in [vrrp] needs a restart.
        if let (Some(o), Some(n)) = (merged.vrrp.as_mut(), new.vrrp.as_ref()) {
            if o.unicast_peers != n.unicast_peers {
                tracing::info!(peers = ?n.unicast_peers, "reload: new VRRP unicast peers");
                o.unicast_peers = n.unicast_peers.clone();
                self.peers.configured = n.unicast_peers.clone();
                self.peers_updated();
            }
            let mut rest = n.clone();
            rest.unicast_peers = o.unicast_peers.clone();
            if &rest != o {
                tracing::warn!("reload: [vrrp] changes other than unicast_peers need a restart");
            }
        } else if merged.vrrp.is_some() != new.vrrp.is_some() {
            tracing::warn!("reload: adding or removing [vrrp] needs a restart");
        }
        self.view.config.store(Arc::new(merged));
        self.view.reloads.fetch_add(1, Ordering::Relaxed);
        *self.view.last_reload_error.lock() = None;
        tracing::info!("reloaded");
    }

    fn reload_failed(&self, e: &dyn std::fmt::Display) {
        tracing::error!(error = %e, "reload failed; keeping the running config");
        self.view.reload_errors.fetch_add(1, Ordering::Relaxed);
        *self.view.last_reload_error.lock() = Some(e.to_string());
    }
}
