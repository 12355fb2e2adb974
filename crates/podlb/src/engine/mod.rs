//! `podlb run`: attach, start the workers, and keep the control loop going:
//! ARP resolution of backends, gratuitous ARP for the VIPs, flow expiry,
//! config reload on SIGHUP, clean stop on SIGTERM/SIGINT.
//!
//! The engine is a driver: the decisions are the sans-IO cores of
//! [`podlb_core::control`] (and [`podlb_core::vrrp`] behind
//! [`crate::redundancy`]); the loop reads the clock once a pass, passes it
//! in and carries out what comes back. [`run`] is its steps in order:
//! [`attach::attach`] (devices, VRRP, sync, capability drop), the Kubernetes
//! client, the shared [`EngineView`], [`workers::spawn`], the first
//! snapshot, the admin endpoint, the serving role, [`control_loop`] and
//! [`shutdown`].

mod attach;
mod control;
mod lease;
mod workers;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::{Config, ConfigError, ServiceConfig};
use crate::dataplane::Shared;
use crate::health::HealthGate;
use crate::k8s::client::{Identity, KubeClient, KubeUpdate, KubeView};
use crate::redundancy::{Histogram, VrrpView};
use crate::sync::SyncView;
use podlb_core::conflict::ConflictRow;
use podlb_core::flow::{FlowTable, Timeouts};
use podlb_core::neighbor::NeighborTable;
use podlb_core::route::Routes;
use podlb_core::service::Snapshot;
use podlb_core::stats::{WorkerStats, MAX_STAT_SLOTS};
use podlb_io::sys;
use podlb_wire::MacAddr;

use attach::Attached;
use control::{Control, Scope, VrrpRole};
use lease::LeaseDriver;

/// Why `podlb run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// Attaching to the network failed.
    #[error("attach: {0}")]
    Attach(std::io::Error),
    /// The admin endpoint could not listen.
    #[error("admin endpoint {addr}: {err}")]
    Admin {
        addr: std::net::SocketAddr,
        err: std::io::Error,
    },
    /// A Maglev table could not be built.
    #[error("maglev: {0}")]
    Maglev(#[from] podlb_core::maglev::MaglevError),
    /// A thread could not be started.
    #[error("thread: {0}")]
    Thread(std::io::Error),
    /// The Kubernetes client could not start.
    #[error("{0}")]
    Kube(#[from] crate::k8s::client::StartError),
}

/// Why the control thread wakes up before its next tick.
pub enum Wake {
    /// The Kubernetes API changed what to serve.
    Kube(Box<KubeUpdate>),
}

/// Stable stats slots for (service, backend) pairs, so counters survive
/// reloads and draining backends keep theirs.
#[derive(Default)]
pub struct StatsRegistry {
    slots: HashMap<(String, SocketAddr), u16>,
    names: Vec<(String, SocketAddr)>,
}

impl StatsRegistry {
    pub fn slot(&mut self, service: &str, addr: SocketAddr) -> u16 {
        if let Some(&s) = self.slots.get(&(service.to_string(), addr)) {
            return s;
        }
        let s = self.names.len().min(MAX_STAT_SLOTS - 1) as u16;
        if self.names.len() < MAX_STAT_SLOTS - 1 {
            self.names.push((service.to_string(), addr));
            self.slots.insert((service.to_string(), addr), s);
        }
        s
    }
    pub fn name(&self, slot: u16) -> Option<&(String, SocketAddr)> {
        self.names.get(slot as usize)
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What the admin endpoint reads. Everything is shared, lock-free or behind
/// locks the data plane never takes.
pub struct EngineView {
    pub shared: Arc<Shared>,
    pub config: ArcSwap<Config>,
    /// The MAC the VIPs are served with (the VRRP virtual MAC with VRRP;
    /// with an IPv6 VRRP instance, the IPv4 VIPs').
    pub mac: MacAddr,
    /// The MAC the IPv6 VIPs are served with: the IPv6 virtual MAC with an
    /// IPv6 VRRP instance (RFC 9568 §7.3), else `mac`.
    pub mac6: MacAddr,
    /// The device's own MAC (ARP requests, the instance's own traffic).
    pub own_mac: MacAddr,
    /// The IPv6 link-local address podlb's Neighbor Solicitations and
    /// unsolicited advertisements come from.
    pub ll6: std::net::Ipv6Addr,
    pub vrrp: Option<Arc<VrrpView>>,
    /// The IPv6 VRRP instance, when one runs.
    pub vrrp6: Option<Arc<VrrpView>>,
    pub sync: Option<Arc<SyncView>>,
    pub interface: String,
    pub workers: Vec<Arc<WorkerStats>>,
    /// The control thread's own counters.
    pub control: Arc<WorkerStats>,
    pub registry: Mutex<StatsRegistry>,
    /// Active flows per stats slot, as of the last full sweep.
    pub active: Box<[AtomicU32]>,
    /// Active flows per phase (`Phase::ALL` order), as of the last full
    /// sweep.
    pub phases: [AtomicU32; 6],
    pub arp_requests: AtomicU64,
    pub garp_sent: AtomicU64,
    /// Unicast ARP replies sent to clients after a takeover
    /// (`garp_unicast_clients`).
    pub garp_unicast_sent: AtomicU64,
    /// Gratuitous ARPs sent to defend a VIP another host claimed (RFC 5227
    /// §2.4 (c)); also counted in `garp_sent`.
    pub vip_defences: AtomicU64,
    /// Hosts that claimed a VIP (RFC 5227 §2.4), most recent first, and
    /// conflicting frames per VIP; written by the control thread.
    pub conflicts: Mutex<Vec<ConflictRow>>,
    pub conflicts_per_vip: Mutex<Vec<(Ipv4Addr, u64)>>,
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    pub last_reload_error: Mutex<Option<String>>,
    pub started: Instant,
    pub kube: Option<Arc<KubeView>>,
    /// Every service asked for (config and Kubernetes) before health
    /// filtering: what the health rows of /status are about.
    pub desired: Mutex<Vec<ServiceConfig>>,
    /// API event arrival → first frame sent with the snapshot it made.
    pub update_latency: Histogram,
    /// API event arrival → snapshot published.
    pub publish_latency: Histogram,
    /// Backend health checks: the monitor, its change flag, fail-open state.
    pub health: HealthGate,
    /// The cloud address mover (`[cloud]`).
    pub cloud: Option<crate::cloud::CloudHandle>,
    /// Next hops towards VXLAN VTEPs on other subnets (AF_PACKET: the
    /// interface's subnet and routes; reread on reload). `None` in TAP mode:
    /// VTEPs are then taken as on-link.
    pub routes: Mutex<Option<Routes>>,
    /// A stop signal came: handing over and draining (`/readyz` fails).
    pub draining: AtomicBool,
}

impl EngineView {
    /// The neighbor whose MAC frames to `dst` go to: `dst` itself on the
    /// interface's subnet, else its gateway (unicast VRRP peers and VTEPs
    /// behind a router).
    pub fn hop(&self, dst: Ipv4Addr) -> u32 {
        let hop = self.routes.lock().as_ref().map_or(dst, |r| r.next_hop(dst));
        u32::from(hop)
    }

    /// The MAC of a unicast VRRP peer (or of its gateway), if resolved.
    pub fn peer_mac(&self, ip: IpAddr) -> Option<MacAddr> {
        match ip {
            IpAddr::V4(a) => self.shared.neighbors.lookup(self.hop(a)),
            IpAddr::V6(a) => self.shared.neighbors6.lookup(u128::from(a)),
        }
    }
}

/// Signals as flags the control loop polls.
struct SignalFlags {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl SignalFlags {
    fn register() -> std::io::Result<SignalFlags> {
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
        Ok(SignalFlags { stop, reload })
    }
}

fn timeouts(cfg: &Config) -> Timeouts {
    let ms = |d: Duration| d.as_millis().min(u32::MAX as u128 / 2) as u32;
    Timeouts {
        syn_ms: ms(cfg.flows.syn_timeout),
        established_ms: ms(cfg.flows.established_timeout),
        fin_ms: ms(cfg.flows.fin_timeout),
        close_ms: ms(cfg.flows.close_timeout),
        udp_unanswered_ms: ms(cfg.flows.udp_unanswered_timeout),
        udp_answered_ms: ms(cfg.flows.udp_answered_timeout),
    }
}

/// The control loop's clock for one pass: read once ([`Now::read`]) and
/// passed to every step, as an [`Instant`] and as the engine's wrapping
/// millisecond clock (the one the neighbor and flow tables stamp).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub at: Instant,
    pub ms: u32,
}

impl Now {
    /// Reads the clock; `epoch` is the engine's time zero
    /// ([`Shared::epoch`]).
    fn read(epoch: Instant) -> Now {
        let at = Instant::now();
        Now {
            at,
            ms: at.saturating_duration_since(epoch).as_millis() as u32,
        }
    }
}

/// The control loop's period.
const TICK: Duration = Duration::from_millis(20);
/// How often the control thread looks for punted VRRP adverts and new flows
/// to sync while there is traffic (this bounds the sync loss window) ...
const VRRP_POLL_BUSY: Duration = Duration::from_millis(2);
/// ... and while idle (a new flow after a quiet spell waits up to this long).
const VRRP_POLL_IDLE: Duration = Duration::from_millis(10);
/// A full sweep of the flow table takes this many ticks (1 s).
const SWEEP_TICKS: usize = 50;
/// While a staged snapshot waits, the loop looks for ARP answers this often.
const STAGE_POLL: Duration = Duration::from_millis(5);

/// Runs podlb with the config at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), EngineError> {
    // Stamped before reading, as a reload does (`watch_config`).
    let stamp = crate::config::FileStamp::of(path);
    let cfg = Config::load(path)?;
    let signals = SignalFlags::register().map_err(EngineError::Thread)?;
    let shared = shared_state(&cfg);
    let (att, devices) = attach::attach(&cfg)?;
    // Kubernetes: the watchers start now and publish once the workers run.
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<Wake>();
    let lease_leader = att.lease.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
    let kube = start_kube(&cfg, &shared, &att, &wake_tx, lease_leader.clone())?;
    let view = engine_view(&cfg, &shared, &att, kube.as_ref())?;
    let handles = workers::spawn(devices, &cfg, &view, &att)?;
    let Attached {
        injector,
        redundancy,
        redundancy6,
        lease,
        sync_link,
        vrrp_sink: _vrrp_sink,
        ..
    } = att;

    // The workers run from here on, first with an empty snapshot; they must
    // be polling before we resolve backends, since they learn the ARP replies.
    let mut ctl = Control::new(
        view.clone(),
        injector,
        (path.to_path_buf(), stamp),
        sync_link,
    );
    ctl.stage(ctl.clock(), &cfg.services, None)?;
    while ctl.staging() {
        std::thread::sleep(STAGE_POLL);
        ctl.poll_pending(ctl.clock());
    }
    serve_admin(&cfg, &view)?;

    let mut roles = Roles {
        vrrp: None,
        vrrp6: None,
        lease: match (lease, lease_leader) {
            (Some(s), Some(leader)) => Some(LeaseDriver::new(
                s,
                leader,
                view.kube.as_ref().and_then(|k| k.lease.clone()),
                &cfg,
            )),
            _ => None,
        },
    };
    if let Some(r) = redundancy {
        let now = ctl.clock();
        for &p in r.unicast_peers() {
            shared.neighbors.track(view.hop(p));
        }
        let mut v = VrrpRole::new(r, now.at);
        let e =
            v.r.start(now.at, ctl.injector(), &|ip| view.peer_mac(ip.into()));
        let scope = Scope::of_ipv4(redundancy6.is_some());
        ctl.apply(now, e, scope);
        roles.vrrp = Some(v);
    }
    if let Some(r) = redundancy6 {
        let now = ctl.clock();
        tracing::info!(
            vrid = cfg.vrrp.as_ref().map_or(0, |v| v.vrid),
            primary = %r.primary(),
            addrs = ?r.addrs(),
            vmac = %r.vmac(),
            "vrrp: an IPv6 instance for the IPv6 VIPs (RFC 9568 §5.1.2)"
        );
        let mut v = VrrpRole::new(r, now.at);
        let e =
            v.r.start(now.at, ctl.injector(), &|ip| view.peer_mac(ip.into()));
        ctl.apply(now, e, Scope::V6);
        roles.vrrp6 = Some(v);
    }
    control_loop(&mut ctl, &mut roles, &signals, &wake_rx);
    drop(wake_tx);
    shutdown(ctl, roles, &cfg, kube, handles);
    Ok(())
}

/// The state the control thread and the workers share.
fn shared_state(cfg: &Config) -> Arc<Shared> {
    Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::default()),
        flows: Arc::new({
            let mut t = FlowTable::new(cfg.flows.capacity, timeouts(cfg));
            t.set_huge_page_bytes(podlb_io::mem::advise_regions(&t.regions()));
            t
        }),
        neighbors: Arc::new(NeighborTable::new(4096)),
        flows6: Arc::new({
            let mut t = FlowTable::new(cfg.flows.capacity_ipv6, timeouts(cfg));
            t.set_huge_page_bytes(podlb_io::mem::advise_regions(&t.regions()));
            t
        }),
        neighbors6: Arc::new(NeighborTable::new(4096)),
        stop: AtomicBool::new(false),
        // Without VRRP or a Lease this instance always serves.
        active: AtomicBool::new(
            cfg.vrrp.is_none() && cfg.kubernetes.as_ref().is_none_or(|k| k.lease.is_none()),
        ),
        active6: AtomicBool::new(
            cfg.vrrp.is_none() && cfg.kubernetes.as_ref().is_none_or(|k| k.lease.is_none()),
        ),
        punt: crossbeam_queue::ArrayQueue::new(crate::dataplane::PUNT_QUEUE),
        refused: Arc::new(podlb_core::forward::RefusalQueue::new(
            crate::dataplane::REFUSED_QUEUE,
        )),
        takeover_armed_us: AtomicU64::new(0),
        takeover_done_us: AtomicU64::new(0),
        takeover6_armed_us: AtomicU64::new(0),
        takeover6_done_us: AtomicU64::new(0),
        update_armed_us: AtomicU64::new(0),
        update_gen: AtomicU64::new(0),
        update_done_us: AtomicU64::new(0),
        epoch: Instant::now(),
        heartbeats: crate::probes::Heartbeats::new(cfg.workers),
    })
}

/// Starts the Kubernetes client (`[kubernetes]`); its updates wake the
/// control loop through `wake`.
fn start_kube(
    cfg: &Config,
    shared: &Arc<Shared>,
    att: &Attached,
    wake: &Sender<Wake>,
    lease_leader: Option<Arc<AtomicBool>>,
) -> Result<Option<KubeClient>, EngineError> {
    let Some(k) = &cfg.kubernetes else {
        return Ok(None);
    };
    let fallback = match (&att.redundancy, &cfg.attach) {
        (Some(r), _) => r.primary(),
        (None, crate::config::Attach::AfPacket { interface }) => {
            sys::ipv4_of(interface).unwrap_or(Ipv4Addr::UNSPECIFIED)
        }
        (None, crate::config::Attach::Tap { .. }) => Ipv4Addr::UNSPECIFIED,
    };
    let id = Identity::resolve(k, fallback);
    tracing::info!(namespace = %id.namespace, identity = %id.name, pod_ip = %id.pod_ip, "kubernetes: starting");
    let sh = shared.clone();
    let tx = std::sync::Mutex::new(wake.clone());
    Ok(Some(crate::k8s::client::start(
        k.clone(),
        id,
        Arc::new(move || sh.active.load(Ordering::Relaxed)),
        Box::new(move |u| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(Wake::Kube(Box::new(u)));
            }
        }),
        lease_leader,
    )?))
}

/// What the admin endpoint reads; starts the cloud mover (`[cloud]`).
fn engine_view(
    cfg: &Config,
    shared: &Arc<Shared>,
    att: &Attached,
    kube: Option<&KubeClient>,
) -> Result<Arc<EngineView>, EngineError> {
    Ok(Arc::new(EngineView {
        shared: shared.clone(),
        config: ArcSwap::from_pointee(cfg.clone()),
        mac: att.mac,
        mac6: att.mac6,
        own_mac: att.own_mac,
        ll6: att.ll6,
        vrrp: att.redundancy.as_ref().map(|r| r.view.clone()),
        vrrp6: att.redundancy6.as_ref().map(|r| r.view.clone()),
        sync: att.sync_link.as_ref().map(|l| l.view.clone()),
        interface: att.ifname.clone(),
        workers: (0..cfg.workers)
            .map(|_| Arc::new(WorkerStats::default()))
            .collect(),
        control: Arc::new(WorkerStats::default()),
        registry: Mutex::new(StatsRegistry::default()),
        active: (0..MAX_STAT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        phases: Default::default(),
        arp_requests: AtomicU64::new(0),
        garp_sent: AtomicU64::new(0),
        garp_unicast_sent: AtomicU64::new(0),
        vip_defences: AtomicU64::new(0),
        conflicts: Mutex::new(Vec::new()),
        conflicts_per_vip: Mutex::new(Vec::new()),
        reloads: AtomicU64::new(0),
        reload_errors: AtomicU64::new(0),
        last_reload_error: Mutex::new(None),
        started: Instant::now(),
        kube: kube.map(|k| k.view.clone()),
        desired: Mutex::new(cfg.services.clone()),
        update_latency: Histogram::default(),
        publish_latency: Histogram::default(),
        health: HealthGate::new(),
        cloud: lease::start_cloud(cfg, shared.active.load(Ordering::Relaxed))?,
        routes: Mutex::new(att.routes.clone()),
        draining: AtomicBool::new(false),
    }))
}

/// The admin endpoint's listeners (`admin`, and `admin_public` if set), once
/// forwarding can start: before that, the probes are refused.
fn serve_admin(cfg: &Config, view: &Arc<EngineView>) -> Result<(), EngineError> {
    let bind = |addr: std::net::SocketAddr| {
        std::net::TcpListener::bind(addr).map_err(|err| EngineError::Admin { addr, err })
    };
    let mut listeners = vec![crate::admin::Listener::admin(bind(cfg.admin)?)];
    if let Some(p) = cfg.admin_public {
        listeners.push(crate::admin::Listener::public(
            bind(p)?,
            cfg.admin_public_reports,
        ));
    }
    if !cfg.admin.ip().is_loopback() {
        tracing::warn!(admin = %cfg.admin, "admin listens beyond the loopback: /status and /flows (client addresses, backends, NAT ports) are reachable from the network; serve probes and metrics with admin_public instead");
    }
    let v = view.clone();
    std::thread::Builder::new()
        .name("podlb-admin".into())
        .spawn(move || crate::admin::serve(listeners, v))
        .map_err(EngineError::Thread)?;
    tracing::info!(admin = %cfg.admin, admin_public = ?cfg.admin_public, services = cfg.services.len(), "ready");
    Ok(())
}

/// Who decides whether this instance serves: VRRP (an IPv4 instance, and
/// an IPv6 one for the IPv6 VIPs when there are any), the Lease, or neither
/// (it always serves).
struct Roles {
    vrrp: Option<VrrpRole>,
    vrrp6: Option<VrrpRole<Ipv6Addr>>,
    lease: Option<LeaseDriver>,
}

/// The control loop, until SIGTERM/SIGINT: each pass waits for its wake-up
/// time or an API update, reads the clock once, and runs its steps on it.
fn control_loop(
    ctl: &mut Control,
    roles: &mut Roles,
    signals: &SignalFlags,
    wakes: &Receiver<Wake>,
) {
    let view = ctl.view();
    let wedge = test_wedge_file();
    // The first pass runs at once, and ticks.
    let mut next_tick: Option<Instant> = None;
    let mut wake: Option<Instant> = None;
    let mut woken = Vec::new();
    loop {
        wait(wakes, wake, &mut woken);
        if signals.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(f) = &wedge {
            wedged_while(f, signals);
        }
        let now = ctl.clock();
        for w in woken.drain(..) {
            ctl.on_wake(now, w);
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            ctl.reload(now);
        }
        ctl.watch_config(now);
        if let Some(p) = ctl.take_peers_changed() {
            if let Some(v) = roles.vrrp.as_mut() {
                v.r.set_unicast_peers(p);
            }
        }
        ctl.poll_pending(now);
        ctl.observe_update_clock();
        if view.health.take_changed() | ctl.refusals(now) {
            ctl.health_changed(now);
        }
        let tick_at = match next_tick {
            Some(t) if now.at < t => t,
            _ => {
                ctl.tick(now);
                now.at + TICK
            }
        };
        next_tick = Some(tick_at);
        let mut wake_at = tick_at;
        if let Some(v) = roles.vrrp.as_mut() {
            let busy = ctl.vrrp_step(v, roles.vrrp6.as_mut(), now);
            // Adverts and new flows are picked up within the poll period;
            // timers fire on time regardless.
            wake_at = wake_at.min(now.at + if busy { VRRP_POLL_BUSY } else { VRRP_POLL_IDLE });
            let v6 = roles.vrrp6.as_ref().and_then(|v6| v6.r.next_deadline());
            for d in [v.r.next_deadline(), v6].into_iter().flatten() {
                wake_at = wake_at.min(d);
            }
        }
        if let Some(d) = roles.lease.as_mut() {
            let e = d.step(&view);
            ctl.apply(now, e, Scope::All);
            ctl.master = d.is_master();
            let busy = ctl.sync_step(now, None);
            wake_at = wake_at.min(now.at + if busy { VRRP_POLL_BUSY } else { VRRP_POLL_IDLE });
        }
        if ctl.staging() {
            // Backends of a staged snapshot are being resolved.
            wake_at = wake_at.min(now.at + STAGE_POLL);
        }
        wake = Some(wake_at);
    }
    // From here on /readyz fails: the instance hands over and drains.
    view.draining.store(true, Ordering::Relaxed);
}

/// Tests only: while the file this names exists, the control loop stands
/// still (no pass, no heartbeat), as a wedged one would; `/livez` must then
/// fail. Unset (always, outside the tests): no effect.
pub const TEST_WEDGE_ENV: &str = "PODLB_TEST_WEDGE_CONTROL_FILE";

/// The file of [`TEST_WEDGE_ENV`], if set.
fn test_wedge_file() -> Option<PathBuf> {
    let f = PathBuf::from(std::env::var_os(TEST_WEDGE_ENV)?);
    tracing::warn!(file = %f.display(), "{TEST_WEDGE_ENV} is set: the control loop stands still while this file exists (a test hook)");
    Some(f)
}

/// Stands still while `f` exists (until a stop signal).
fn wedged_while(f: &Path, signals: &SignalFlags) {
    while f.exists() && !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sleeps until `until` (not at all if `None`) or an API update, whichever
/// comes first; the updates that came are added to `woken`.
fn wait(wakes: &Receiver<Wake>, until: Option<Instant>, woken: &mut Vec<Wake>) {
    let Some(until) = until else {
        woken.extend(wakes.try_iter());
        return;
    };
    match wakes.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(w) => {
            woken.push(w);
            woken.extend(wakes.try_iter());
        }
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(until.saturating_duration_since(Instant::now()))
        }
    }
}

/// Stops serving (a VRRP master hands over first), releases the Lease,
/// stops the health checks and the cloud mover, then the workers.
fn shutdown(
    mut ctl: Control,
    mut roles: Roles,
    cfg: &Config,
    kube: Option<KubeClient>,
    handles: Vec<JoinHandle<()>>,
) {
    tracing::info!("stopping");
    let view = ctl.view();
    if let Some(v) = roles.vrrp.as_mut() {
        // RFC 9568 §6.4.3: a master going down says so with priority 0, so a
        // backup takes over after Skew_Time instead of Master_Down_Interval.
        // Keep forwarding while the clients' traffic moves over (the flows
        // were streamed to the backups as they were made). Both instances
        // say so at once, then drain together.
        let peer_mac = |ip: IpAddr| view.peer_mac(ip);
        let now = ctl.clock();
        let mut was_master = v.r.is_master();
        let e = v.r.stop(now.at, ctl.injector(), &|ip| peer_mac(ip.into()));
        let e6 = roles.vrrp6.as_mut().map(|v6| {
            was_master |= v6.r.is_master();
            v6.r.stop(now.at, ctl.injector(), &|ip| peer_mac(ip.into()))
        });
        if was_master {
            let drain = cfg.vrrp.as_ref().map_or(Duration::ZERO, |v| v.drain);
            tracing::info!(?drain, "sent priority 0; draining");
            let until = now.at + drain;
            while ctl.clock().at < until {
                ctl.vrrp_punts_discard();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        ctl.apply(ctl.clock(), e, Scope::of_ipv4(e6.is_some()));
        if let Some(e6) = e6 {
            ctl.apply(ctl.clock(), e6, Scope::V6);
        }
    }
    if let Some(d) = roles.lease.as_mut() {
        d.stopping(&view);
    }
    // Releases the Lease (if held) so a backup takes over at once.
    drop(kube);
    view.health.stop();
    if let Some(c) = &view.cloud {
        c.stop(Duration::from_secs(2));
    }
    view.shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
}
