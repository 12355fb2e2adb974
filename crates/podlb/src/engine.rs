//! `podlb run`: attach, start the workers, and keep the control loop going:
//! ARP resolution of backends, gratuitous ARP for the VIPs, flow expiry,
//! config reload on SIGHUP, clean stop on SIGTERM/SIGINT.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::{Attach, Config, ConfigError, IoBackend, ServiceConfig};
use crate::dataplane::{run_worker, Shared};
use crate::health::HealthGate;
use crate::k8s::client::{Identity, KubeUpdate, KubeView};
use crate::k8s::lease::{self, LeaseView};
use crate::redundancy::{Effects, Histogram, Redundancy, VrrpView};
use crate::sync::{PreemptGate, SyncLink, SyncView, PREEMPT_WAIT_MAX, REFRESH_PERIOD_MS};
use podlb_core::conflict::{self, ConflictRow, ConflictTracker};
use podlb_core::elapsed_ms;
use podlb_core::flow::{FlowTable, Timeouts};
use podlb_core::forward::{Forwarder, NatPorts};
use podlb_core::hash::hash_bytes;
use podlb_core::neighbor::NeighborTable;
use podlb_core::route::Routes;
use podlb_core::service::Snapshot;
use podlb_core::stats::DropReason;
use podlb_core::stats::{WorkerStats, MAX_STAT_SLOTS};
use podlb_core::sync;
use podlb_io::packet::{PacketConfig, PacketInjector, PacketSocket};
use podlb_io::xdp::{self, XdpDevice, XdpProgram};
use podlb_io::{sys, tap, Device, Injector};
use podlb_wire::{arp, MacAddr};

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
    slots: HashMap<(String, SocketAddrV4), u16>,
    names: Vec<(String, SocketAddrV4)>,
}

impl StatsRegistry {
    pub fn slot(&mut self, service: &str, addr: SocketAddrV4) -> u16 {
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
    pub fn name(&self, slot: u16) -> Option<&(String, SocketAddrV4)> {
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
    /// The MAC the VIPs are served with (the VRRP virtual MAC with VRRP).
    pub mac: MacAddr,
    /// The device's own MAC (ARP requests, the instance's own traffic).
    pub own_mac: MacAddr,
    pub vrrp: Option<Arc<VrrpView>>,
    pub sync: Option<Arc<SyncView>>,
    pub interface: String,
    pub workers: Vec<Arc<WorkerStats>>,
    /// The control thread's own counters.
    pub control: Arc<WorkerStats>,
    pub registry: Mutex<StatsRegistry>,
    /// Active flows per stats slot, as of the last full sweep.
    pub active: Box<[AtomicU32]>,
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
}

impl EngineView {
    /// The neighbor whose MAC frames to `dst` go to: `dst` itself on the
    /// interface's subnet, else its gateway (unicast VRRP peers and VTEPs
    /// behind a router).
    pub fn hop(&self, dst: Ipv4Addr) -> u32 {
        let hop = self.routes.lock().as_ref().map_or(dst, |r| r.next_hop(dst));
        u32::from(hop)
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

/// A stable, locally administered unicast MAC for TAP mode, derived from the
/// host name and the device, so clients' ARP caches stay right across restarts.
fn derived_mac(name: &str, bridge: &str) -> MacAddr {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = hash_bytes(
        format!("{}/{bridge}/{name}", host.trim()).as_bytes(),
        0x0070_6f64_6c62,
    );
    let b = h.to_be_bytes();
    MacAddr([0x02, b[1], b[2], b[3], b[4], b[5]])
}

fn timeouts(cfg: &Config) -> Timeouts {
    let ms = |d: Duration| d.as_millis().min(u32::MAX as u128 / 2) as u32;
    Timeouts {
        syn_ms: ms(cfg.flows.syn_timeout),
        established_ms: ms(cfg.flows.established_timeout),
        fin_ms: ms(cfg.flows.fin_timeout),
        close_ms: ms(cfg.flows.close_timeout),
    }
}

/// Builds the snapshot of `cfg`'s services. Health-checked backends are
/// registered with `health` and those that are down left out
/// ([`crate::health::healthy_services`]).
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

/// Runs podlb with the config at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), EngineError> {
    let cfg = Config::load(path)?;
    let signals = SignalFlags::register().map_err(EngineError::Thread)?;
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::default()),
        flows: Arc::new({
            let mut t = FlowTable::new(cfg.flows.capacity, timeouts(&cfg));
            t.set_huge_page_bytes(podlb_io::mem::advise_regions(&t.regions()));
            t
        }),
        neighbors: Arc::new(NeighborTable::new(4096)),
        stop: AtomicBool::new(false),
        // Without VRRP or a Lease this instance always serves.
        active: AtomicBool::new(
            cfg.vrrp.is_none() && cfg.kubernetes.as_ref().is_none_or(|k| k.lease.is_none()),
        ),
        punt: crossbeam_queue::ArrayQueue::new(crate::dataplane::PUNT_QUEUE),
        refused: Arc::new(podlb_core::forward::RefusalQueue::new(
            crate::dataplane::REFUSED_QUEUE,
        )),
        takeover_armed_us: AtomicU64::new(0),
        takeover_done_us: AtomicU64::new(0),
        update_armed_us: AtomicU64::new(0),
        update_gen: AtomicU64::new(0),
        update_done_us: AtomicU64::new(0),
        epoch: Instant::now(),
    });

    // Attach.
    let workers = cfg.workers;
    let (mac, ifname, injector, devices): (MacAddr, String, Box<dyn Injector>, Devices) = match &cfg
        .attach
    {
        Attach::AfPacket { interface } => {
            let mac = sys::mac_of(interface).map_err(EngineError::Attach)?;
            let group = ((std::process::id() as i32
                ^ sys::ifindex(interface).map_err(EngineError::Attach)?)
                & 0xffff) as u16;
            let pc = PacketConfig {
                block_size: cfg.io.block_size,
                block_count: cfg.io.block_count,
                block_timeout_ms: cfg.io.block_timeout_ms,
                vnet_hdr: cfg.io.vnet_hdr,
                tx: cfg.io.tx,
                fanout: (workers > 1).then_some(group),
                rx_ring: cfg.io.rx_ring,
            };
            let socks = (0..workers)
                .map(|_| PacketSocket::open(interface, &pc))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    EngineError::Attach(std::io::Error::new(e.kind(), format!("{interface}: {e}")))
                })?;
            let inj = PacketInjector::open(interface).map_err(EngineError::Attach)?;
            let devices = match cfg.io.backend {
                IoBackend::AfPacket => Devices::Packet(socks),
                IoBackend::AfXdp => Devices::Xdp(open_xdp(interface, socks).map_err(|e| {
                    EngineError::Attach(std::io::Error::new(
                        e.kind(),
                        format!("{interface}: af_xdp: {e}"),
                    ))
                })?),
            };
            (mac, interface.clone(), Box::new(inj), devices)
        }
        Attach::Tap { bridge, name, mac } => {
            let queues = tap::create(name, bridge, workers).map_err(EngineError::Attach)?;
            let inj = queues[0].injector().map_err(EngineError::Attach)?;
            let mac = mac.unwrap_or_else(|| derived_mac(name, bridge));
            (mac, name.clone(), Box::new(inj), Devices::Tap(queues))
        }
    };
    tracing::info!(interface = %ifname, mode = cfg.attach.mode_str(), %mac, workers, "attached");

    // The kernel sees every frame podlb handles on AF_PACKET; with IPv4
    // forwarding on it would route VIP traffic a second time.
    if let Attach::AfPacket { interface } = &cfg.attach {
        let knob = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
        if std::fs::read_to_string(&knob).is_ok_and(|v| v.trim() == "1") {
            tracing::warn!(
                "{knob} is 1: the kernel will also forward the VIP traffic podlb handles; \
                 set net.ipv4.ip_forward=0 in podlb's network namespace"
            );
        }
    }

    // VRRP: the VIPs are served with the virtual MAC (RFC 9568 §7.3); the
    // device's own MAC stays for the instance's own traffic.
    let own_mac = mac;
    let mut redundancy = match &cfg.vrrp {
        None => None,
        Some(v) => {
            let primary = match (v.address, &cfg.attach) {
                (Some(a), _) => a,
                (None, Attach::AfPacket { interface }) => sys::ipv4_of(interface).map_err(|e| {
                    EngineError::Attach(std::io::Error::new(
                        e.kind(),
                        format!("{e}; set vrrp.address to the address adverts come from"),
                    ))
                })?,
                (None, Attach::Tap { .. }) => {
                    unreachable!("config requires vrrp.address in TAP mode")
                }
            };
            // The advert's address list must be the same on every instance
            // (RFC 9568 §7.1 drops a mismatch). Kubernetes VIPs come and go
            // and instances learn of them at different moments, so the list
            // names each pool by its first address instead.
            let mut vips: Vec<Ipv4Addr> = cfg.services.iter().map(|s| s.vip).collect();
            if let Some(k) = &cfg.kubernetes {
                vips.extend(k.reconcile.vip_pools.iter().map(|p| p.base));
            }
            vips.sort_unstable();
            vips.dedup();
            Some(Redundancy::new(v.clone(), vips, primary))
        }
    };
    let mac = redundancy.as_ref().map_or(mac, Redundancy::vmac);
    let lease_mode = cfg.kubernetes.as_ref().and_then(|k| k.lease.clone());
    let sync_port = match (&cfg.vrrp, &lease_mode) {
        (Some(v), _) => Some(v.sync_port),
        (None, Some(_)) => Some(DEFAULT_SYNC_PORT),
        (None, None) => None,
    };
    let sync_link = match sync_port {
        Some(port) => {
            let peers = cfg
                .vrrp
                .as_ref()
                .map(|v| v.unicast_peers.clone())
                .unwrap_or_default();
            let key = cfg
                .vrrp
                .as_ref()
                .and_then(|v| v.sync_key.as_ref())
                .or(lease_mode.as_ref().and_then(|l| l.sync_key.as_ref()));
            Some(SyncLink::open(port, workers, peers, key).map_err(|e| {
                EngineError::Attach(std::io::Error::new(
                    e.kind(),
                    format!("connection sync port {port}: {e}"),
                ))
            })?)
        }
        None => None,
    };
    let own_ip = match (&redundancy, &cfg.attach) {
        (Some(r), Attach::Tap { .. }) => Some(u32::from(r.primary())),
        _ => None,
    };
    // VXLAN (RFC 7348): frames leave from the interface's own address, and
    // VTEPs on other subnets are reached through the gateway.
    let (local_ip, routes) = match &cfg.attach {
        Attach::AfPacket { interface } => match crate::route::load(interface) {
            Ok(r) => (u32::from(r.addr), Some(r)),
            Err(e) => {
                tracing::info!(error = %e, "no IPv4 address on the interface: vxlan services will not forward");
                (0, None)
            }
        },
        Attach::Tap { .. } => (own_ip.unwrap_or(0), None),
    };
    if let Some(r) = &routes {
        tracing::info!(addr = %r.addr, prefix = r.prefix, gateway = ?r.gateway, "routes");
    }
    if let (Some(_), Attach::AfPacket { interface }) = (&redundancy, &cfg.attach) {
        let idx = sys::ifindex(interface).map_err(EngineError::Attach)?;
        for s in devices.packet_sockets() {
            s.add_membership(idx, mac, false)
                .map_err(EngineError::Attach)?;
            s.add_membership(idx, podlb_wire::vrrp::MULTICAST_MAC, true)
                .map_err(EngineError::Attach)?;
        }
    }
    // Unicast adverts to our own address would make the kernel answer ICMP
    // "protocol unreachable"; a never-read raw socket for 112 prevents that.
    let _vrrp_sink = match (&redundancy, &cfg.attach) {
        (Some(_), Attach::AfPacket { .. }) => {
            Some(sys::protocol_sink(112).map_err(EngineError::Attach)?)
        }
        _ => None,
    };

    // Least privilege: every socket and device that needs a capability is
    // open now, and no other thread exists yet (threads inherit the
    // capabilities of the thread that starts them). Keep CAP_NET_RAW and
    // CAP_NET_ADMIN (and CAP_NET_BIND_SERVICE for an admin port below
    // 1024, bound later); drop the rest, from the bounding set too, so
    // notify hooks cannot regain them.
    let mut keep = vec![sys::CAP_NET_ADMIN, sys::CAP_NET_RAW];
    if cfg.admin.port() < 1024 {
        keep.push(sys::CAP_NET_BIND_SERVICE);
    }
    match sys::drop_capabilities(&keep) {
        Ok(k) => tracing::info!(
            kept = format_args!("{:#x}", k.mask),
            bounding = k.bounding,
            "dropped every other capability"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not drop capabilities; running with what we were given")
        }
    }

    // Kubernetes: the watchers start now and publish once the workers run.
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<Wake>();
    let lease_leader = lease_mode
        .as_ref()
        .map(|_| Arc::new(AtomicBool::new(false)));
    let kube = match &cfg.kubernetes {
        None => None,
        Some(k) => {
            let fallback = match (&redundancy, &cfg.attach) {
                (Some(r), _) => r.primary(),
                (None, Attach::AfPacket { interface }) => {
                    sys::ipv4_of(interface).unwrap_or(Ipv4Addr::UNSPECIFIED)
                }
                (None, Attach::Tap { .. }) => Ipv4Addr::UNSPECIFIED,
            };
            let id = Identity::resolve(k, fallback);
            tracing::info!(namespace = %id.namespace, identity = %id.name, pod_ip = %id.pod_ip, "kubernetes: starting");
            let sh = shared.clone();
            let tx = std::sync::Mutex::new(wake_tx.clone());
            Some(crate::k8s::client::start(
                k.clone(),
                id,
                Arc::new(move || sh.active.load(Ordering::Relaxed)),
                Box::new(move |u| {
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send(Wake::Kube(Box::new(u)));
                    }
                }),
                lease_leader.clone(),
            )?)
        }
    };

    let view = Arc::new(EngineView {
        shared: shared.clone(),
        config: ArcSwap::from_pointee(cfg.clone()),
        mac,
        own_mac,
        vrrp: redundancy.as_ref().map(|r| r.view.clone()),
        sync: sync_link.as_ref().map(|l| l.view.clone()),
        interface: ifname,
        workers: (0..workers)
            .map(|_| Arc::new(WorkerStats::default()))
            .collect(),
        control: Arc::new(WorkerStats::default()),
        registry: Mutex::new(StatsRegistry::default()),
        active: (0..MAX_STAT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
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
        kube: kube.as_ref().map(|k| k.view.clone()),
        desired: Mutex::new(cfg.services.clone()),
        update_latency: Histogram::default(),
        publish_latency: Histogram::default(),
        health: HealthGate::new(),
        cloud: start_cloud(&cfg, shared.active.load(Ordering::Relaxed))?,
        routes: Mutex::new(routes),
    });

    // Workers.
    let mut handles = Vec::new();
    let port_seed = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        hash_bytes(&t.as_nanos().to_le_bytes(), std::process::id() as u64) as u32
    };
    let mk_fwd = |i: usize| Forwarder {
        mac,
        own_mac,
        own_ip,
        active: shared.active.load(Ordering::Relaxed),
        accept_mode: cfg.vrrp.as_ref().is_none_or(|v| v.accept_mode),
        flows: shared.flows.clone(),
        neighbors: shared.neighbors.clone(),
        stats: view.workers[i].clone(),
        ports: NatPorts::new(i, workers, port_seed),
        pickup: cfg.flows.pickup,
        sync: sync_link.as_ref().map(|l| l.queues[i].clone()),
        local_ip,
        out: Default::default(),
        refused: (!cfg.flows.refused_hold.is_zero()).then(|| shared.refused.clone()),
    };
    match devices {
        Devices::Packet(socks) => {
            spawn_workers(socks, &shared, cfg.io.busy_poll, mk_fwd, &mut handles)?
        }
        Devices::Tap(queues) => {
            spawn_workers(queues, &shared, cfg.io.busy_poll, mk_fwd, &mut handles)?
        }
        Devices::Xdp(devs) => spawn_workers(devs, &shared, cfg.io.busy_poll, mk_fwd, &mut handles)?,
    }

    // The workers run from here on, first with an empty snapshot; they must
    // be polling before we resolve backends, since they learn the ARP replies.
    let mut ctl = Control::new(view.clone(), injector, path.to_path_buf());
    ctl.sync = sync_link;
    let snap = build_snapshot(1, &cfg.services, &view)?;
    ctl.track_backends(&snap);
    ctl.vxlan_sinks(&snap);
    ctl.resolve_before_publish(&snap);
    shared.snapshot.store(Arc::new(snap));

    // Admin endpoint, once forwarding can start: its being up means ready.
    let listener = std::net::TcpListener::bind(cfg.admin).map_err(|err| EngineError::Admin {
        addr: cfg.admin,
        err,
    })?;
    {
        let v = view.clone();
        std::thread::Builder::new()
            .name("podlb-admin".into())
            .spawn(move || super::admin::serve(listener, v))
            .map_err(EngineError::Thread)?;
    }
    tracing::info!(admin = %cfg.admin, services = cfg.services.len(), "ready");

    ctl.static_peers = cfg
        .vrrp
        .as_ref()
        .map(|v| v.unicast_peers.clone())
        .unwrap_or_default();
    let mut lease_drv = match (lease_mode, lease_leader) {
        (Some(s), Some(leader)) => Some(LeaseDriver::new(
            s,
            leader,
            view.kube.as_ref().and_then(|k| k.lease.clone()),
            &cfg,
        )),
        _ => None,
    };
    match redundancy.as_mut() {
        None if lease_drv.is_none() => ctl.announce_all(),
        None => {}
        Some(r) => {
            for &p in r.unicast_peers() {
                shared.neighbors.track(view.hop(p));
            }
            let e = r.start(Instant::now(), &*ctl.injector, &|ip| {
                shared.neighbors.lookup(view.hop(ip))
            });
            ctl.apply(e);
        }
    }
    let mut next_tick = Instant::now();
    while !signals.stop.load(Ordering::Relaxed) {
        if signals.reload.swap(false, Ordering::Relaxed) {
            ctl.reload();
        }
        if let Some(p) = ctl.peers_changed.take() {
            if let Some(r) = redundancy.as_mut() {
                r.set_unicast_peers(p);
            }
        }
        ctl.poll_pending();
        ctl.observe_update_clock();
        if view.health.take_changed() | ctl.refusals() {
            ctl.health_changed();
        }
        let now = Instant::now();
        if now >= next_tick {
            ctl.tick();
            next_tick = now + TICK;
        }
        let mut wake = next_tick;
        if let Some(r) = redundancy.as_mut() {
            let busy = ctl.vrrp_step(r, now);
            // Adverts and new flows are picked up within the poll period;
            // timers fire on time regardless.
            wake = wake.min(now + if busy { VRRP_POLL_BUSY } else { VRRP_POLL_IDLE });
            if let Some(d) = r.next_deadline() {
                wake = wake.min(d);
            }
        }
        if let Some(d) = lease_drv.as_mut() {
            let e = d.step(&view);
            ctl.apply(e);
            ctl.master = d.is_master();
            let busy = ctl.sync_step(now, None);
            wake = wake.min(now + if busy { VRRP_POLL_BUSY } else { VRRP_POLL_IDLE });
        }
        if ctl.pending.is_some() {
            // Backends of a staged snapshot are being resolved.
            wake = wake.min(now + Duration::from_millis(5));
        }
        match wake_rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(w) => {
                ctl.on_wake(w);
                while let Ok(w) = wake_rx.try_recv() {
                    ctl.on_wake(w);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wake.saturating_duration_since(Instant::now()))
            }
        }
    }
    drop(wake_tx);
    tracing::info!("stopping");
    if let Some(r) = redundancy.as_mut() {
        // RFC 9568 §6.4.3: a master going down says so with priority 0, so a
        // backup takes over after Skew_Time instead of Master_Down_Interval.
        // Keep forwarding while the clients' traffic moves over (the flows
        // were streamed to the backups as they were made).
        let was_master = r.is_master();
        let e = r.stop(Instant::now(), &*ctl.injector, &|ip| {
            shared.neighbors.lookup(view.hop(ip))
        });
        if was_master {
            let drain = cfg.vrrp.as_ref().map_or(Duration::ZERO, |v| v.drain);
            tracing::info!(?drain, "sent priority 0; draining");
            let until = Instant::now() + drain;
            while Instant::now() < until {
                ctl.vrrp_punts_discard();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        ctl.apply(e);
    }
    if let Some(d) = lease_drv.as_mut() {
        d.stopping(&view);
    }
    // Releases the Lease (if held) so a backup takes over at once.
    drop(kube);
    view.health.stop();
    if let Some(c) = &view.cloud {
        c.stop(Duration::from_secs(2));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Starts the cloud mover if `[cloud]` is set, told the initial role.
fn start_cloud(
    cfg: &Config,
    active: bool,
) -> Result<Option<crate::cloud::CloudHandle>, EngineError> {
    let Some(c) = &cfg.cloud else {
        return Ok(None);
    };
    let vips = cfg.services.iter().map(|s| s.vip).collect();
    let vrid = cfg
        .vrrp
        .as_ref()
        .map_or(String::new(), |v| v.vrid.to_string());
    let h = crate::cloud::CloudHandle::start(c, vips, vrid).map_err(EngineError::Thread)?;
    use crate::cloud::mover::Role;
    h.set_role(if active { Role::Master } else { Role::Backup });
    Ok(Some(h))
}

/// The mover's role for a serve transition: not serving because of a
/// VRRP or Lease fault is `Fault`, else `Backup`.
fn cloud_role(serve: bool, view: &EngineView) -> crate::cloud::mover::Role {
    use crate::cloud::mover::Role;
    let vrrp_fault = view
        .vrrp
        .as_ref()
        .is_some_and(|v| v.state.load(Ordering::Relaxed) == 3);
    let lease_fault = view
        .kube
        .as_ref()
        .and_then(|k| k.lease.as_ref())
        .is_some_and(|l| l.state.load(Ordering::Relaxed) == lease::FAULT);
    match serve {
        true => Role::Master,
        false if vrrp_fault || lease_fault => Role::Fault,
        false => Role::Backup,
    }
}

/// Default UDP port of connection sync (as `vrrp.sync_port`).
const DEFAULT_SYNC_PORT: u16 = 8899;

/// Drives serving from the Lease election: the same effects and notify
/// hooks as the VRRP driver.
struct LeaseDriver {
    s: crate::config::LeaseSettings,
    leader: Arc<AtomicBool>,
    view: Option<Arc<LeaseView>>,
    state: u8,
    vips: String,
}

impl LeaseDriver {
    fn new(
        s: crate::config::LeaseSettings,
        leader: Arc<AtomicBool>,
        view: Option<Arc<LeaseView>>,
        cfg: &Config,
    ) -> LeaseDriver {
        let mut vips: Vec<String> = cfg.services.iter().map(|s| s.vip.to_string()).collect();
        if let Some(k) = &cfg.kubernetes {
            vips.extend(k.reconcile.vip_pools.iter().map(|p| p.to_string()));
        }
        LeaseDriver {
            s,
            leader,
            view,
            state: lease::INIT,
            vips: vips.join(","),
        }
    }

    fn is_master(&self) -> bool {
        self.state == lease::MASTER
    }

    fn step(&mut self, _view: &EngineView) -> Effects {
        let state = match &self.view {
            Some(v) => v.state.load(Ordering::Relaxed),
            None if self.leader.load(Ordering::Relaxed) => lease::MASTER,
            None => lease::BACKUP,
        };
        if state == self.state {
            return Effects::default();
        }
        let was = std::mem::replace(&mut self.state, state);
        let master = state == lease::MASTER;
        let hook = match state {
            lease::MASTER => self.s.on_master.as_deref(),
            lease::BACKUP => self.s.on_backup.as_deref(),
            lease::FAULT => self.s.on_fault.as_deref(),
            _ => None,
        };
        let name = crate::redundancy::STATE_NAMES[state as usize];
        tracing::info!(state = name, "lease: {name}");
        if let Some(h) = hook {
            crate::redundancy::spawn_hook(h, name, &self.vips, "", None);
        }
        Effects {
            serve: Some(master),
            garp: master.then_some(self.s.garp_count),
            takeover: master && was == lease::BACKUP,
        }
    }

    fn stopping(&mut self, _view: &EngineView) {
        if self.state == lease::MASTER {
            tracing::info!("stopping: releasing the lease");
        }
    }
}

/// Starts one worker thread per device.
fn spawn_workers<D: Device + 'static>(
    devices: Vec<D>,
    shared: &Arc<Shared>,
    busy_poll: Duration,
    mk_fwd: impl Fn(usize) -> Forwarder,
    handles: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<(), EngineError> {
    for (i, dev) in devices.into_iter().enumerate() {
        let (sh, fwd) = (shared.clone(), mk_fwd(i));
        let h = std::thread::Builder::new()
            .name(format!("podlb-w{i}"))
            .spawn(move || run_worker(dev, sh, fwd, busy_poll))
            .map_err(EngineError::Thread)?;
        handles.push(h);
    }
    Ok(())
}

enum Devices {
    Packet(Vec<PacketSocket>),
    Tap(Vec<tap::TapQueue>),
    Xdp(Vec<XdpDevice>),
}

impl Devices {
    /// The AF_PACKET sockets (for multicast memberships).
    fn packet_sockets(&self) -> Vec<&PacketSocket> {
        match self {
            Devices::Packet(s) => s.iter().collect(),
            Devices::Tap(_) => Vec::new(),
            Devices::Xdp(d) => d.iter().map(XdpDevice::packet).collect(),
        }
    }
}

/// `[io] backend = "af_xdp"`: attaches the steering program and gives each
/// worker an AF_XDP socket on its RX queue next to its AF_PACKET socket
/// (workers beyond the interface's RX queues keep AF_PACKET only). Runs
/// before the capability drop: BPF_MAP_CREATE and BPF_PROG_LOAD need
/// CAP_BPF (or CAP_SYS_ADMIN), the attach CAP_NET_ADMIN, the socket
/// CAP_NET_RAW. Later VIP map updates go through the map's descriptor and
/// need none.
fn open_xdp(interface: &str, socks: Vec<PacketSocket>) -> std::io::Result<Vec<XdpDevice>> {
    let queues = xdp::rx_queues(interface);
    let prog = Arc::new(XdpProgram::attach(interface, queues)?);
    let n = socks.len();
    let devs = socks
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let q = (i < queues as usize).then_some(i as u32);
            XdpDevice::open(interface, s, prog.clone(), q)
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        xdp_mode = ?prog.mode,
        zerocopy = ?devs[0].zerocopy(),
        queues,
        workers = n,
        "af_xdp: VIP frames steered into AF_XDP sockets"
    );
    if n > queues as usize {
        tracing::warn!(
            queues,
            workers = n,
            "af_xdp: more workers than RX queues; the extra workers read AF_PACKET only"
        );
    }
    Ok(devs)
}

const TICK: Duration = Duration::from_millis(20);
/// How often the control thread looks for punted VRRP adverts and new flows
/// to sync while there is traffic (this bounds the sync loss window) ...
const VRRP_POLL_BUSY: Duration = Duration::from_millis(2);
/// ... and while idle (a new flow after a quiet spell waits up to this long).
const VRRP_POLL_IDLE: Duration = Duration::from_millis(10);
/// A full sweep of the flow table takes this many ticks (1 s).
const SWEEP_TICKS: usize = 50;
/// Re-ask a resolved neighbor after this long without hearing from it.
const ARP_REFRESH_MS: u32 = 30_000;
/// Forget a neighbor's MAC after this long without hearing from it.
const ARP_EXPIRE_MS: u32 = 95_000;
/// Ask an unresolved neighbor again after this long.
const ARP_RETRY_MS: u32 = 1_000;
/// Gratuitous ARP announcements per VIP at start/reload, and their spacing.
const GARP_COUNT: u32 = 3;
const GARP_SPACING_MS: u32 = 1_000;

/// The control thread's state.
struct Control {
    view: Arc<EngineView>,
    pub(crate) injector: Box<dyn Injector>,
    path: PathBuf,
    sweep_pos: usize,
    sweep_tick: usize,
    sweep_active: Vec<u32>,
    sweep_backends: HashSet<u32>,
    /// Backend IPs seen in live flows at the last full sweep.
    flow_backends: HashSet<u32>,
    /// VIPs still owed gratuitous ARPs: (vip, remaining, next due ms).
    garp_due: Vec<(Ipv4Addr, u32, u32)>,
    next_track: Instant,
    sync: Option<SyncLink>,
    /// Holds a returning backup's preemption until the master's table came.
    preempt_gate: PreemptGate,
    /// VRRP master (or no VRRP): streams flows to the backups.
    master: bool,
    /// The VRRP unicast peers changed (reload or discovery): for the VRRP
    /// driver.
    peers_changed: Option<Vec<Ipv4Addr>>,
    /// Unicast peers from the config, and from the Kubernetes peers Service.
    static_peers: Vec<Ipv4Addr>,
    discovered_peers: Vec<Ipv4Addr>,
    /// Services from the Kubernetes API (besides the config's).
    kube_services: Vec<ServiceConfig>,
    /// A snapshot waiting for its backends' ARP answers before it is
    /// published (the loop keeps running meanwhile).
    pending: Option<Pending>,
    /// Never-read UDP sockets on the vxlan services' ports.
    vxlan_sinks: HashMap<u16, std::net::UdpSocket>,
    /// VIP conflicts the workers reported (RFC 5227 §2.4).
    conflicts: ConflictTracker,
    /// `[vrrp] garp_refresh_s`: the next periodic announcement while master.
    next_refresh: Option<Instant>,
    /// `[vrrp] garp_unicast_clients`: unicast ARP replies still owed to
    /// clients after a takeover (vip, client, client MAC), and how many go
    /// out per tick (spread over the first second).
    unicast_due: Vec<(Ipv4Addr, Ipv4Addr, MacAddr)>,
    unicast_per_tick: usize,
}

/// A staged snapshot; see [`Control::stage`].
struct Pending {
    snap: Snapshot,
    deadline: Instant,
    next_ask: Instant,
    /// Arrival of the API event behind it, for the update clock.
    event_at: Option<Instant>,
}

/// How long a staged snapshot waits for its backends' ARP answers.
const RESOLVE_WAIT: Duration = Duration::from_millis(800);
/// ARP requests for a staged snapshot's backends are repeated this often.
const RESOLVE_ASK: Duration = Duration::from_millis(200);

/// Whether an interface's link is up (operstate "up", or "unknown" for
/// devices that do not report it).
fn link_up(name: &str) -> bool {
    match std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")) {
        Ok(s) => matches!(s.trim(), "up" | "unknown"),
        Err(_) => false,
    }
}

impl Control {
    fn new(view: Arc<EngineView>, injector: Box<dyn Injector>, path: PathBuf) -> Control {
        Control {
            view,
            injector,
            path,
            sweep_pos: 0,
            sweep_tick: 0,
            sweep_active: vec![0; MAX_STAT_SLOTS],
            sweep_backends: HashSet::new(),
            flow_backends: HashSet::new(),
            garp_due: Vec::new(),
            next_track: Instant::now(),
            sync: None,
            preempt_gate: PreemptGate::new(PREEMPT_WAIT_MAX),
            master: false,
            peers_changed: None,
            static_peers: Vec::new(),
            discovered_peers: Vec::new(),
            kube_services: Vec::new(),
            pending: None,
            vxlan_sinks: HashMap::new(),
            conflicts: ConflictTracker::default(),
            next_refresh: None,
            unicast_due: Vec::new(),
            unicast_per_tick: 1,
        }
    }

    /// The unicast peers: configured and discovered, sorted, deduplicated.
    fn peers(&self) -> Vec<Ipv4Addr> {
        let mut p: Vec<Ipv4Addr> = self
            .static_peers
            .iter()
            .chain(&self.discovered_peers)
            .copied()
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Recomputes the peer list after either source changed, and hands it
    /// to the VRRP driver (via the loop), the sync link and ARP.
    fn peers_updated(&mut self) {
        let peers = self.peers();
        tracing::info!(?peers, "unicast peers");
        for p in &peers {
            self.view.shared.neighbors.track(self.view.hop(*p));
        }
        if let Some(link) = self.sync.as_mut() {
            link.set_peers(peers.clone());
        }
        self.peers_changed = Some(peers);
    }

    /// Every service to serve now: the config's and Kubernetes'.
    fn services_now(&self) -> Vec<ServiceConfig> {
        let cfg = self.view.config.load();
        let mut all = cfg.services.clone();
        all.extend(self.kube_services.iter().cloned());
        all
    }

    fn on_wake(&mut self, w: Wake) {
        match w {
            Wake::Kube(u) => self.kube_update(*u),
        }
    }

    /// The API changed what to serve.
    fn kube_update(&mut self, u: KubeUpdate) {
        if let Some(peers) = u.peers {
            if peers != self.discovered_peers {
                self.discovered_peers = peers;
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
            self.republish(Some(u.event_at));
        }
    }

    /// Rebuilds the snapshot from the current services and stages it.
    fn republish(&mut self, event_at: Option<Instant>) {
        let services = self.services_now();
        if let Err(e) = self.stage(&services, event_at) {
            tracing::error!(error = %e, "services not published; keeping the running ones");
            *self.view.last_reload_error.lock() = Some(e.to_string());
            self.view.reload_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Builds a snapshot of `services` and publishes it once its backends
    /// are resolved (or after [`RESOLVE_WAIT`]), so the first SYN to a new
    /// backend does not meet an empty ARP cache; the control loop keeps
    /// running (VRRP adverts, sync) meanwhile. A newer stage replaces an
    /// older one that is still waiting.
    fn stage(
        &mut self,
        services: &[ServiceConfig],
        event_at: Option<Instant>,
    ) -> Result<(), EngineError> {
        let base = match &self.pending {
            Some(p) => p.snap.generation,
            None => self.view.shared.snapshot.load().generation,
        };
        let mut snap = build_snapshot(base + 1, services, &self.view)?;
        // Removed vxlan backends keep their tunnel while their flows drain.
        let fb = &self.flow_backends;
        snap.carry_vteps(&self.view.shared.snapshot.load(), |ip| fb.contains(&ip));
        if let Some(p) = &self.pending {
            snap.carry_vteps(&p.snap, |ip| fb.contains(&ip));
        }
        *self.view.desired.lock() = services.to_vec();
        self.track_backends(&snap);
        self.vxlan_sinks(&snap);
        let now = Instant::now();
        // The update clock runs from the oldest event not yet published.
        let event_at = match (self.pending.as_ref().and_then(|p| p.event_at), event_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.pending = Some(Pending {
            snap,
            deadline: now + RESOLVE_WAIT,
            next_ask: now,
            event_at,
        });
        self.poll_pending();
        Ok(())
    }

    /// Publishes the staged snapshot when its backends are resolved or its
    /// wait is over; asks for the missing ones meanwhile.
    fn poll_pending(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        self.route_backends(&p.snap);
        let n = &self.view.shared.neighbors;
        let missing: Vec<u32> = p
            .snap
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.l2_target()))
            .filter(|&ip| n.lookup(ip).is_none())
            .collect();
        let now = Instant::now();
        if !missing.is_empty() && now < p.deadline {
            if now >= p.next_ask {
                for &ip in &missing {
                    self.send_request(ip);
                }
                p.next_ask = now + RESOLVE_ASK;
            }
            self.pending = Some(p);
            return;
        }
        if !missing.is_empty() {
            tracing::warn!(
                count = missing.len(),
                "backends not resolved yet; their flows wait for ARP"
            );
        }
        let sh = &self.view.shared;
        let old_vips: HashSet<Ipv4Addr> = sh.snapshot.load().vips().collect();
        let fresh: Vec<Ipv4Addr> = p.snap.vips().filter(|v| !old_vips.contains(v)).collect();
        let generation = p.snap.generation;
        sh.snapshot.store(Arc::new(p.snap));
        if let Some(t) = p.event_at {
            self.view.publish_latency.observe(t.elapsed());
            sh.update_done_us.store(0, Ordering::Relaxed);
            sh.update_gen.store(generation, Ordering::Relaxed);
            let at = t.saturating_duration_since(sh.epoch).as_micros() as u64 + 1;
            sh.update_armed_us.store(at, Ordering::Relaxed);
        }
        // A new VIP is announced, by the active instance only (a backup
        // never speaks for the VIPs).
        if sh.active.load(Ordering::Relaxed) && !fresh.is_empty() {
            let now = self.now();
            self.garp_due
                .extend(fresh.into_iter().map(|v| (v, GARP_COUNT, now)));
            self.send_due_garps(now);
        }
        tracing::debug!(generation, "snapshot published");
    }

    /// Full-NAT backends on another subnet are reached through the gateway:
    /// their neighbor entries carry the next hop's MAC (a route cache, as a
    /// kernel FIB does), so the workers' per-packet lookup by backend address
    /// stays as it is. The next hop itself is tracked and ARP-resolved.
    /// Only `nat`: DSR needs the backend on the link (the VIP is the frame's
    /// destination), and vxlan backends have their VTEP's next hop already.
    fn route_backends(&self, snap: &Snapshot) {
        let routes = self.view.routes.lock();
        let Some(r) = routes.as_ref() else { return };
        let n = &self.view.shared.neighbors;
        let now = self.now();
        for s in snap
            .services
            .iter()
            .filter(|s| s.mode == crate::config::Mode::Nat)
        {
            for b in &s.backends {
                let ip = Ipv4Addr::from(b.ip);
                if r.on_link(ip) {
                    continue;
                }
                let hop = u32::from(r.next_hop(ip));
                n.track(hop);
                if let Some(mac) = n.lookup(hop) {
                    n.learn(b.ip, mac, now);
                }
            }
        }
    }

    /// Update clock: stopped by a worker's first frame under the new
    /// snapshot.
    fn observe_update_clock(&mut self) {
        let sh = &self.view.shared;
        let done = sh.update_done_us.load(Ordering::Relaxed);
        if done != 0 {
            let armed = sh.update_armed_us.swap(0, Ordering::Relaxed);
            sh.update_done_us.store(0, Ordering::Relaxed);
            if armed != 0 && done >= armed {
                let d = Duration::from_micros(done - armed);
                self.view.update_latency.observe(d);
                tracing::info!(
                    latency_ms = d.as_secs_f64() * 1e3,
                    "API event to first packet"
                );
            }
        }
    }

    /// Moves connection-sync traffic; returns whether there was any.
    fn sync_step(&mut self, now: Instant, master_addr: Option<Ipv4Addr>) -> bool {
        let Some(link) = self.sync.as_mut() else {
            return false;
        };
        let sh = &self.view.shared;
        let snap = sh.snapshot.load();
        link.step(now, sh.now_ms(), self.master, master_addr, &sh.flows, &snap)
    }

    fn now(&self) -> u32 {
        self.view.shared.now_ms()
    }

    /// Carries out what the VRRP driver asks: serving on or off, GARP.
    fn apply(&mut self, e: Effects) {
        let sh = &self.view.shared;
        if let Some(serve) = e.serve {
            if serve && e.takeover && !sh.active.load(Ordering::Relaxed) {
                // Arm the takeover clock: the first frame a worker sends as
                // master stops it.
                sh.takeover_done_us.store(0, Ordering::Relaxed);
                sh.takeover_armed_us
                    .store(sh.epoch.elapsed().as_micros() as u64 + 1, Ordering::Relaxed);
            }
            sh.active.store(serve, Ordering::Relaxed);
            if let Some(c) = &self.view.cloud {
                c.set_role(cloud_role(serve, &self.view));
            }
        }
        if let Some(n) = e.garp {
            let now = self.now();
            let snap = sh.snapshot.load();
            self.garp_due = snap.vips().map(|v| (v, n, now)).collect();
            // The first announcement goes out at once, not at the next tick.
            self.send_due_garps(now);
            let unicast = self
                .view
                .config
                .load()
                .vrrp
                .as_ref()
                .is_some_and(|v| v.garp_unicast_clients);
            if unicast && e.serve == Some(true) {
                self.schedule_unicast_clients(&snap);
            }
        }
    }

    /// `garp_unicast_clients`: after becoming master, an RFC 826 reply
    /// (sender = VIP at the serving MAC) to each client MAC in the flow
    /// table, for clients that ignore broadcast gratuitous ARP. At most
    /// [`conflict::MAX_UNICAST_CLIENTS`], spread over the first second
    /// ([`SWEEP_TICKS`] ticks).
    fn schedule_unicast_clients(&mut self, snap: &Snapshot) {
        let mut flows = Vec::new();
        self.view.shared.flows.for_each(|f| {
            flows.push((f.key.client, f.key.vip, f.client_mac));
            flows.len() < 4 * conflict::MAX_UNICAST_CLIENTS
        });
        let mut due =
            conflict::unicast_targets(flows, |v| snap.is_vip(v), conflict::MAX_UNICAST_CLIENTS);
        due.reverse(); // sent from the back
        self.unicast_per_tick = due.len().div_ceil(SWEEP_TICKS).max(1);
        tracing::info!(
            clients = due.len(),
            "unicast ARP replies to clients scheduled"
        );
        self.unicast_due = due;
    }

    fn send_due_unicast(&mut self) {
        for _ in 0..self.unicast_per_tick {
            let Some((vip, client, mac)) = self.unicast_due.pop() else {
                return;
            };
            let mut buf = [0u8; 64];
            let reply = arp::Repr {
                operation: arp::OP_REPLY,
                sender_hw: self.view.mac,
                sender_ip: vip,
                target_hw: mac,
                target_ip: client,
            };
            let n = reply.emit_frame(&mut buf);
            if n.is_ok_and(|n| self.injector.inject(&buf[..n]).is_ok()) {
                self.view.garp_unicast_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Samples the workers' conflict reports (RFC 5227 §2.4): logs each
    /// claimant at most once per DEFEND_INTERVAL and, while serving, defends
    /// the VIP with one gratuitous ARP at most once per DEFEND_INTERVAL
    /// (§2.4 (c): a VIP is not given up).
    fn check_conflicts(&mut self) {
        let now = Instant::now();
        let serving = self.view.shared.active.load(Ordering::Relaxed);
        let mut out = conflict::Outcome::default();
        let view = self.view.clone();
        for (i, w) in view.workers.iter().enumerate() {
            let frames = w.drops(DropReason::VipConflict);
            self.conflicts
                .observe(i, frames, w.conflict.read(), now, serving, &mut out);
        }
        if out.log.is_empty() && out.defend.is_empty() {
            return;
        }
        for (vip, mac, count) in &out.log {
            tracing::warn!(%vip, %mac, count, "VIP conflict: another host claims the VIP (RFC 5227 §2.4)");
        }
        for vip in &out.defend {
            let mut buf = [0u8; 64];
            let n = arp::Repr::gratuitous(self.view.mac, *vip).emit_frame(&mut buf);
            if n.is_ok_and(|n| self.injector.inject(&buf[..n]).is_ok()) {
                self.view.garp_sent.fetch_add(1, Ordering::Relaxed);
                self.view.vip_defences.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%vip, "defended the VIP with a gratuitous ARP");
            }
        }
        *self.view.conflicts.lock() = self.conflicts.rows();
        *self.view.conflicts_per_vip.lock() = self.conflicts.per_vip();
    }

    /// `garp_refresh_s`: while serving with VRRP, one more announcement of
    /// every VIP each period.
    fn garp_refresh(&mut self) {
        let period = self
            .view
            .config
            .load()
            .vrrp
            .as_ref()
            .map_or(Duration::ZERO, |v| v.garp_refresh);
        if period.is_zero() || !self.view.shared.active.load(Ordering::Relaxed) {
            self.next_refresh = None;
            return;
        }
        let now = Instant::now();
        let Some(at) = self.next_refresh else {
            // Becoming master announces already; the first refresh is a
            // period later.
            self.next_refresh = Some(now + period);
            return;
        };
        if now < at {
            return;
        }
        self.next_refresh = Some(now + period);
        let ms = self.now();
        let snap = self.view.shared.snapshot.load();
        for v in snap.vips() {
            if !self.garp_due.iter().any(|d| d.0 == v) {
                self.garp_due.push((v, 1, ms));
            }
        }
    }

    /// Feeds punted adverts to the VRRP driver and runs its timers; moves
    /// connection-sync traffic.
    /// Returns whether there was work (adverts or sync traffic), so the
    /// loop polls at [`VRRP_POLL_BUSY`] then and at [`VRRP_POLL_IDLE`] when not.
    fn vrrp_step(&mut self, r: &mut Redundancy, now: Instant) -> bool {
        let mut busy = false;
        // A backup does not preempt before the master's whole connection
        // table has reached it (bounded; decisions.md §44).
        if let Some(link) = &self.sync {
            let backup = r.state() == podlb_core::vrrp::State::Backup;
            r.hold_preemption(self.preempt_gate.hold(
                now,
                backup,
                link.synced(),
                link.master_heard(),
            ));
        }
        while let Some(frame) = self.view.shared.punt.pop() {
            r.on_frame(&frame, now);
            busy = true;
        }
        self.master = r.is_master();
        busy |= self.sync_step(now, r.master_addr());
        let view = self.view.clone();
        let n = &view.shared.neighbors;
        let e = r.tick(now, &*self.injector, &|ip| n.lookup(view.hop(ip)));
        self.apply(e);
        // Tracking: the interface's link, and whether any backend is usable.
        if now >= self.next_track {
            self.next_track = now + Duration::from_millis(100);
            let iface_up = match &self.view.config.load().attach {
                Attach::AfPacket { interface } => link_up(interface),
                Attach::Tap { .. } => true,
            };
            let snap = self.view.shared.snapshot.load();
            let usable = snap.services.is_empty()
                || snap
                    .services
                    .iter()
                    .flat_map(|s| &s.backends)
                    .any(|b| n.lookup(b.l2_target()).is_some());
            let e = r.set_fault(now, !iface_up, &*self.injector, &|ip| {
                n.lookup(view.hop(ip))
            });
            self.apply(e);
            r.track(now, iface_up, usable);
        }
        // Takeover time: armed on becoming master, stopped by a worker's
        // first transmission.
        let sh = &self.view.shared;
        let done = sh.takeover_done_us.load(Ordering::Relaxed);
        if done != 0 {
            let armed = sh.takeover_armed_us.swap(0, Ordering::Relaxed);
            sh.takeover_done_us.store(0, Ordering::Relaxed);
            if armed != 0 && done >= armed {
                r.view.takeover.observe(Duration::from_micros(done - armed));
            }
        }
        busy
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

    fn vrrp_punts_discard(&mut self) {
        while self.view.shared.punt.pop().is_some() {}
    }

    fn track_backends(&self, snap: &Snapshot) {
        let n = &self.view.shared.neighbors;
        for s in &snap.services {
            for b in &s.backends {
                if !n.track(b.l2_target()) {
                    tracing::warn!(backend = %b.addr, "neighbor table full; backend not tracked");
                }
            }
        }
    }

    /// Asks for every unresolved backend and waits (briefly) for answers, so
    /// the first SYN to a new backend does not meet an empty ARP cache.
    fn resolve_before_publish(&mut self, snap: &Snapshot) {
        let deadline = Instant::now() + Duration::from_millis(800);
        let mut asked = Instant::now() - Duration::from_secs(1);
        loop {
            let missing: Vec<u32> = snap
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.l2_target()))
                .filter(|&ip| self.view.shared.neighbors.lookup(ip).is_none())
                .collect();
            if missing.is_empty() || Instant::now() >= deadline {
                if !missing.is_empty() {
                    tracing::warn!(
                        count = missing.len(),
                        "backends not resolved yet; their flows wait for ARP"
                    );
                }
                return;
            }
            if asked.elapsed() >= Duration::from_millis(200) {
                for &ip in &missing {
                    self.send_request(ip);
                }
                asked = Instant::now();
            }
            // Workers learn replies; nothing to do but wait.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks for `target`'s MAC. The sender address is 0.0.0.0, the RFC 5227
    /// §2.1.1 probe form: a VIP would be wrong as sender, since DSR backends
    /// hold the VIP themselves and Linux drops ARP from its own address as a
    /// martian; and a probe leaves no entry in the target's ARP cache.
    fn send_request(&self, target: u32) {
        let mut buf = [0u8; 64];
        let ask = arp::Repr::request(
            self.view.own_mac,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::from(target),
        );
        let n = ask.emit_frame(&mut buf).unwrap_or(0);
        match self.injector.inject(&buf[..n]) {
            Ok(()) => {
                self.view.arp_requests.fetch_add(1, Ordering::Relaxed);
                self.view.shared.neighbors.asked(target, self.now());
            }
            Err(e) => {
                tracing::warn!(error = %e, target = %Ipv4Addr::from(target), "ARP request not sent")
            }
        }
    }

    /// Sends the gratuitous ARPs that are due (RFC 5227 §2.3 announcements,
    /// from the serving MAC).
    fn send_due_garps(&mut self, now: u32) {
        let mut due = std::mem::take(&mut self.garp_due);
        for (vip, left, at) in due.iter_mut() {
            if *left > 0 && now.wrapping_sub(*at) <= u32::MAX / 2 {
                let mut buf = [0u8; 64];
                let n = arp::Repr::gratuitous(self.view.mac, *vip).emit_frame(&mut buf);
                if n.is_ok_and(|n| self.injector.inject(&buf[..n]).is_ok()) {
                    self.view.garp_sent.fetch_add(1, Ordering::Relaxed);
                }
                *left -= 1;
                *at = now.wrapping_add(GARP_SPACING_MS);
            }
        }
        due.retain(|d| d.1 > 0);
        self.garp_due = due;
    }

    /// Schedules gratuitous ARP for every VIP (RFC 5227 §2.3 announcements).
    fn announce_all(&mut self) {
        let now = self.now();
        let snap = self.view.shared.snapshot.load();
        self.garp_due = snap.vips().map(|v| (v, GARP_COUNT, now)).collect();
    }

    fn tick(&mut self) {
        self.garp_refresh();
        let now = self.now();
        self.send_due_garps(now);
        self.send_due_unicast();
        self.check_conflicts();

        // ARP resolution and refresh.
        let snap = self.view.shared.snapshot.load();
        self.route_backends(&snap);
        {
            for e in self.view.shared.neighbors.entries() {
                let since_asked = elapsed_ms(now, e.asked_ms);
                let since_seen = elapsed_ms(now, e.seen_ms);
                match e.mac {
                    None if e.wanted || since_asked >= ARP_RETRY_MS => self.send_request(e.ip),
                    Some(_) if since_seen >= ARP_EXPIRE_MS => {
                        tracing::warn!(neighbor = %Ipv4Addr::from(e.ip), "no ARP answer; forgetting its MAC");
                        self.view.shared.neighbors.invalidate(e.ip);
                    }
                    Some(_) if since_seen >= ARP_REFRESH_MS && since_asked >= ARP_RETRY_MS * 5 => {
                        self.send_request(e.ip)
                    }
                    _ => {}
                }
            }
        }

        // Incremental sweep: expire idle flows, count active ones.
        let flows = &self.view.shared.flows;
        let per_tick = flows.slot_count().div_ceil(SWEEP_TICKS);
        let (active, backends) = (&mut self.sweep_active, &mut self.sweep_backends);
        let mut refresh = Vec::new();
        let streaming = self.master && self.sync.is_some();
        flows.sweep(self.sweep_pos, per_tick, now, |f| {
            if let Some(a) = active.get_mut(f.stat as usize) {
                *a += 1;
            }
            backends.insert(f.backend);
            // Each slot is visited once per full sweep (SWEEP_TICKS ticks).
            if streaming
                && sync::refresh_due(
                    f,
                    now,
                    REFRESH_PERIOD_MS,
                    (SWEEP_TICKS as u32) * TICK.as_millis() as u32,
                )
            {
                refresh.push(*f);
            }
        });
        if let Some(link) = self.sync.as_mut() {
            for f in &refresh {
                link.refresh(f, now);
            }
        }
        self.sweep_pos = (self.sweep_pos + per_tick) % flows.slot_count();
        self.sweep_tick += 1;
        if self.sweep_tick == SWEEP_TICKS {
            self.sweep_tick = 0;
            self.sweep_pos = 0;
            for (slot, a) in self.sweep_active.iter_mut().enumerate() {
                self.view.active[slot].store(*a, Ordering::Relaxed);
                *a = 0;
            }
            self.flow_backends = std::mem::take(&mut self.sweep_backends);
            // Keep resolving backends that still carry (draining) flows.
            let current: HashSet<u32> = snap
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.l2_target()))
                .chain(snap.vtep_next_hops())
                .collect();
            // ... and the gateways of routed ones.
            let hops: Vec<u32> = match self.view.routes.lock().as_ref() {
                Some(r) => current
                    .iter()
                    .chain(self.flow_backends.iter())
                    .map(|&ip| u32::from(r.next_hop(Ipv4Addr::from(ip))))
                    .collect(),
                None => Vec::new(),
            };
            let current: HashSet<u32> = current.into_iter().chain(hops).collect();
            let fb = &self.flow_backends;
            // Unicast peers' next hops stay resolved too (adverts go to
            // their MACs, or to the gateway's for peers on other subnets).
            let peers: Vec<u32> = self.peers().into_iter().map(|p| self.view.hop(p)).collect();
            self.view
                .shared
                .neighbors
                .retain(|ip| current.contains(&ip) || fb.contains(&ip) || peers.contains(&ip));
        }
    }

    /// Turns the workers' refusal reports into holds (`flows.refused_hold_s`)
    /// and ends the holds that are over; true when a backend left or came
    /// back, so the snapshot must be rebuilt.
    fn refusals(&mut self) -> bool {
        let hold = self.view.config.load().flows.refused_hold;
        let now = Instant::now();
        let mut rebuild = false;
        while let Some(r) = self.view.shared.refused.pop() {
            let addr = SocketAddrV4::new(Ipv4Addr::from(r.backend), r.port);
            rebuild |= self.view.health.hold_refused(addr, now + hold);
        }
        rebuild | self.view.health.release_held(now)
    }

    /// A backend went up or down: rebuild the snapshot from the running
    /// config (down backends leave the Maglev tables; their established
    /// flows stay pinned in the flow table and drain) and publish it, as a
    /// reload does for services, without reading the file.
    fn health_changed(&mut self) {
        self.republish(None);
    }

    /// SIGHUP: load the file again; on success publish the new services,
    /// keeping every established flow on its backend. On error keep serving
    /// the old config and report the error.
    fn reload(&mut self) {
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the running config");
                self.view.reload_errors.fetch_add(1, Ordering::Relaxed);
                *self.view.last_reload_error.lock() = Some(e.to_string());
                return;
            }
        };
        let old = self.view.config.load_full();
        if new.attach != old.attach
            || new.workers != old.workers
            || new.admin != old.admin
            || new.io != old.io
            || new.flows != old.flows
        {
            tracing::warn!("reload: interface, workers, admin, [io] and [flows] changes need a restart; applying [[service]] changes only");
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
        if let Err(e) = self.stage(&services, None) {
            tracing::error!(error = %e, "reload failed; keeping the running config");
            self.view.reload_errors.fetch_add(1, Ordering::Relaxed);
            *self.view.last_reload_error.lock() = Some(e.to_string());
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
                self.static_peers = n.unicast_peers.clone();
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
}
