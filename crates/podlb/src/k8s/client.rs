//! The Kubernetes side that talks to the API server: kube-rs watchers for
//! Services, EndpointSlices and Nodes, the reconcile loop around the sans-IO
//! [`reconcile`](super::reconcile()) (with Nodes for vxlan), status writes and Events, and the
//! Lease election. It all runs on one thread (`podlb-k8s`) with a
//! current-thread tokio runtime; the data plane never waits for it.
//!
//! Watch semantics come from kube-rs' `watcher`: an initial list, a watch
//! from the list's resourceVersion, a resumed watch when the stream ends,
//! a new list after `410 Gone`, and an exponential back-off (0.8 s … 30 s)
//! on errors. The stores here swap their contents whole at the end of each
//! list (`InitDone`), so a re-list never publishes a half-listed cluster,
//! and while the API is unreachable nothing is published at all: the data
//! plane keeps its last good services.
//!
//! Objects are read as `DynamicObject`s and handed to the reconciler as
//! JSON: one malformed object is skipped by the reconciler with a Problem,
//! where a typed decode would fail the whole list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Client;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::lease::{self, LeaseView};
use super::peers::peers_from_slice;
use super::reconcile::{reconcile_full, Allocations, Problem, StatusUpdate};
use crate::config::KubernetesSettings;
use crate::metrics::{Exposition, Kind};
use crate::redundancy::Histogram;
use crate::status::{Allocation, DrainingStatus, KubeStatus, ProblemStatus};
use podlb_core::model::ServiceConfig;

/// What the control thread gets after the API changed something it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeUpdate {
    /// Data-plane services from Kubernetes, sorted by name.
    pub services: Vec<ServiceConfig>,
    /// Terminating endpoints per service (draining: no new flows).
    pub draining: BTreeMap<String, Vec<SocketAddr>>,
    /// VRRP unicast peers from the peers Service; `None`: discovery is off
    /// (or its slices have not been listed yet).
    pub peers: Option<Vec<Ipv4Addr>>,
    /// When the watch event behind this update arrived.
    pub event_at: Instant,
}

/// Counters and state for /status and /metrics.
#[derive(Default)]
pub struct KubeView {
    /// Both stores have been listed at least once.
    pub synced: AtomicBool,
    pub watch_events: AtomicU64,
    pub watch_errors: AtomicU64,
    /// Lists after the first one (watch expired with 410, or reconnects).
    pub relists: AtomicU64,
    pub reconciles: AtomicU64,
    pub updates_published: AtomicU64,
    pub status_writes: AtomicU64,
    pub status_errors: AtomicU64,
    pub events_sent: AtomicU64,
    pub event_errors: AtomicU64,
    /// Services served from the API, and Services that are not podlb's.
    pub services: AtomicU64,
    pub ignored: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub problems: Mutex<Vec<Problem>>,
    /// (namespace, name, VIP): one entry per VIP (two for a dual-stack
    /// Service, its primary family's first).
    pub allocations: Mutex<Vec<(String, String, IpAddr)>>,
    pub draining: Mutex<BTreeMap<String, Vec<SocketAddr>>>,
    pub peers: Mutex<Option<Vec<Ipv4Addr>>>,
    pub namespace: Mutex<String>,
    pub identity: Mutex<String>,
    pub lease: Option<Arc<LeaseView>>,
}

impl KubeView {
    /// The `/status` section; `update` and `publish` are the engine's
    /// latency histograms (API event to first frame, to snapshot published).
    pub fn status(&self, update: &Histogram, publish: &Histogram) -> KubeStatus {
        let g = |c: &AtomicU64| c.load(Relaxed);
        KubeStatus {
            namespace: self.namespace.lock().clone(),
            identity: self.identity.lock().clone(),
            synced: self.synced.load(Relaxed),
            services: g(&self.services),
            ignored: g(&self.ignored),
            allocations: self
                .allocations
                .lock()
                .iter()
                .map(|(ns, n, ip)| Allocation {
                    service: format!("{ns}/{n}"),
                    vip: *ip,
                })
                .collect(),
            problems: self
                .problems
                .lock()
                .iter()
                .map(|p| ProblemStatus {
                    service: format!("{}/{}", p.namespace, p.name),
                    reason: p.reason.as_str().to_string(),
                    message: p.message.clone(),
                })
                .collect(),
            draining: self
                .draining
                .lock()
                .iter()
                .map(|(s, eps)| DrainingStatus {
                    service: s.clone(),
                    endpoints: eps.clone(),
                })
                .collect(),
            peers: self.peers.lock().clone(),
            watch_events: g(&self.watch_events),
            watch_errors: g(&self.watch_errors),
            relists: g(&self.relists),
            status_writes: g(&self.status_writes),
            status_errors: g(&self.status_errors),
            events_sent: g(&self.events_sent),
            last_error: self.last_error.lock().clone(),
            updates: update.count.load(Relaxed),
            update_mean_ms: update.mean_ms(),
            publish_mean_ms: publish.mean_ms(),
            lease: self.lease.as_ref().map(|l| l.status()),
        }
    }

    /// The `podlb_k8s_*` families, the Lease's, and the two latency
    /// histograms (see [`KubeView::status`]).
    pub fn render(&self, w: &mut Exposition, update: &Histogram, publish: &Histogram) {
        let g = |c: &AtomicU64| c.load(Relaxed);
        for (name, help, v) in [
            (
                "podlb_k8s_synced",
                "1 once Services and EndpointSlices have been listed.",
                u64::from(self.synced.load(Relaxed)),
            ),
            (
                "podlb_k8s_services",
                "Kubernetes Services served.",
                g(&self.services),
            ),
            (
                "podlb_k8s_services_ignored",
                "Services that are not podlb's.",
                g(&self.ignored),
            ),
            (
                "podlb_k8s_problems",
                "Services with a problem (see /status and their Events).",
                self.problems.lock().len() as u64,
            ),
            (
                "podlb_k8s_watch_events_total",
                "Watch events received.",
                g(&self.watch_events),
            ),
            (
                "podlb_k8s_watch_errors_total",
                "Watch errors (retried with back-off).",
                g(&self.watch_errors),
            ),
            (
                "podlb_k8s_relists_total",
                "Lists after the first (410 Gone, reconnects).",
                g(&self.relists),
            ),
            (
                "podlb_k8s_reconciles_total",
                "Reconciliations run.",
                g(&self.reconciles),
            ),
            (
                "podlb_k8s_updates_total",
                "Changes handed to the data plane.",
                g(&self.updates_published),
            ),
            (
                "podlb_k8s_status_writes_total",
                "Service status writes.",
                g(&self.status_writes),
            ),
            (
                "podlb_k8s_status_errors_total",
                "Failed Service status writes.",
                g(&self.status_errors),
            ),
            (
                "podlb_k8s_events_total",
                "Warning Events sent.",
                g(&self.events_sent),
            ),
            (
                "podlb_k8s_event_errors_total",
                "Events that could not be sent.",
                g(&self.event_errors),
            ),
        ] {
            w.single(name, help, Kind::of_name(name), v);
        }
        if let Some(l) = &self.lease {
            l.render(w);
        }
        update.render(
            w,
            "podlb_k8s_update_seconds",
            "API watch event to the first frame sent with the snapshot it made.",
            &[],
        );
        publish.render(
            w,
            "podlb_k8s_publish_seconds",
            "API watch event to the snapshot published.",
            &[],
        );
    }
}

/// Whether this instance is the active one (VRRP master, Lease holder, or
/// no redundancy): only the active instance writes status and Events.
pub type IsActive = Arc<dyn Fn() -> bool + Send + Sync>;

/// The running Kubernetes side; dropping it stops the thread.
pub struct KubeClient {
    pub view: Arc<KubeView>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for KubeClient {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            // The loop ends at its next await; requests in flight are
            // bounded by REQUEST_TIMEOUT.
            let deadline = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// How long one status write, Event or Lease call may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the loop looks at the mastership and retries failed writes.
const TICK: Duration = Duration::from_millis(100);
/// Back-off of failed status writes.
const WRITE_RETRY: Duration = Duration::from_secs(2);

/// Where this instance is: its namespace, name and Pod address.
#[derive(Debug, Clone)]
pub struct Identity {
    pub namespace: String,
    pub name: String,
    pub pod_ip: Ipv4Addr,
    /// The node this instance runs on (`NODE_NAME`, the downward API's
    /// `spec.nodeName`), named in the active-instance condition.
    pub node: Option<String>,
}

impl Identity {
    /// From the settings, else the downward-API environment (`POD_NAMESPACE`,
    /// `POD_NAME`, `POD_IP`), else `default`, the host name and `fallback_ip`.
    pub fn resolve(s: &KubernetesSettings, fallback_ip: Ipv4Addr) -> Identity {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let namespace = s
            .namespace
            .clone()
            .or_else(|| env("POD_NAMESPACE"))
            .unwrap_or_else(|| "default".into());
        let name = s
            .identity
            .clone()
            .or_else(|| env("POD_NAME"))
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "podlb".into())
            });
        let pod_ip = s
            .pod_ip
            .or_else(|| env("POD_IP").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(fallback_ip);
        Identity {
            namespace,
            name,
            pod_ip,
            node: env("NODE_NAME"),
        }
    }
}

/// Why the Kubernetes side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("kubernetes.kubeconfig {path}: {err}")]
    Kubeconfig { path: String, err: String },
    #[error(
        "kubernetes: no usable cluster config (in-cluster service account or $KUBECONFIG): {0}"
    )]
    Infer(String),
    #[error("kubernetes: {0}")]
    Client(String),
    #[error("kubernetes: cannot start the thread: {0}")]
    Thread(std::io::Error),
}

/// Builds the kube client (it does not connect yet: an unreachable API is
/// retried by the watchers, never fatal).
async fn make_client(s: &KubernetesSettings) -> Result<Client, StartError> {
    let config = match &s.kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|e| StartError::Kubeconfig {
                    path: path.display().to_string(),
                    err: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| StartError::Kubeconfig {
                    path: path.display().to_string(),
                    err: e.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| StartError::Infer(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| StartError::Client(e.to_string()))
}

/// Starts the Kubernetes thread. `on_update` is called (on that thread)
/// with every change to serve; `is_active` is polled for the mastership.
/// With a Lease election, `lease_leader` is set while this instance holds it.
pub fn start(
    settings: KubernetesSettings,
    id: Identity,
    is_active: IsActive,
    on_update: Box<dyn Fn(KubeUpdate) + Send>,
    lease_leader: Option<Arc<AtomicBool>>,
) -> Result<KubeClient, StartError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Thread)?;
    let client = rt.block_on(make_client(&settings))?;
    let lease_view = settings
        .lease
        .as_ref()
        .map(|_| Arc::new(LeaseView::default()));
    let view = Arc::new(KubeView {
        lease: lease_view.clone(),
        ..Default::default()
    });
    *view.namespace.lock() = id.namespace.clone();
    *view.identity.lock() = id.name.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let (v, st) = (view.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("podlb-k8s".into())
        .spawn(move || {
            rt.block_on(async move {
                let lease_task = match (&settings.lease, lease_leader, lease_view) {
                    (Some(ls), Some(leader), Some(lv)) => Some(tokio::spawn(lease::run(
                        client.clone(),
                        ls.clone(),
                        id.clone(),
                        leader,
                        lv,
                    ))),
                    _ => None,
                };
                let (c2, lease, id2) = (client.clone(), settings.lease.clone(), id.clone());
                tokio::select! {
                    _ = run(client, settings, id, is_active, on_update, v) => {}
                    _ = st.notified() => {}
                }
                if let Some(t) = lease_task {
                    t.abort();
                    if let Some(ls) = lease {
                        lease::release(c2, &ls, &id2).await;
                    }
                }
            })
        })
        .map_err(StartError::Thread)?;
    Ok(KubeClient {
        view,
        stop,
        thread: Some(thread),
    })
}

/// The contents of one watched resource, swapped whole at each list's end.
#[derive(Default)]
struct Store {
    objects: BTreeMap<(String, String), Value>,
    /// Being listed (between `Init` and `InitDone`).
    listing: Option<BTreeMap<(String, String), Value>>,
    lists: u64,
}

fn key_of(o: &DynamicObject) -> (String, String) {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

impl Store {
    fn ready(&self) -> bool {
        self.lists > 0
    }

    /// Applies one watcher event; returns whether the contents changed.
    fn apply(
        &mut self,
        what: &str,
        ev: Result<watcher::Event<DynamicObject>, watcher::Error>,
        view: &KubeView,
    ) -> bool {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                // The watcher re-lists or re-watches by itself after its
                // back-off; the store keeps serving meanwhile.
                view.watch_errors.fetch_add(1, Relaxed);
                let msg = format!("watch {what}: {e}");
                tracing::warn!(error = %msg, "kubernetes watch failed; keeping the last good state");
                *view.last_error.lock() = Some(msg);
                return false;
            }
        };
        view.watch_events.fetch_add(1, Relaxed);
        match ev {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                if self.lists > 0 {
                    view.relists.fetch_add(1, Relaxed);
                    tracing::info!(resource = what, "kubernetes: listing again");
                }
                false
            }
            watcher::Event::InitApply(o) => {
                let k = key_of(&o);
                if let (Some(l), Ok(v)) = (self.listing.as_mut(), serde_json::to_value(&o)) {
                    l.insert(k, v);
                }
                false
            }
            watcher::Event::InitDone => {
                let new = self.listing.take().unwrap_or_default();
                self.lists += 1;
                let changed = new != self.objects || self.lists == 1;
                self.objects = new;
                tracing::debug!(
                    resource = what,
                    objects = self.objects.len(),
                    "kubernetes: listed"
                );
                changed
            }
            watcher::Event::Apply(o) => match serde_json::to_value(&o) {
                Ok(v) => self.objects.insert(key_of(&o), v.clone()).as_ref() != Some(&v),
                Err(_) => false,
            },
            watcher::Event::Delete(o) => self.objects.remove(&key_of(&o)).is_some(),
        }
    }

    fn values(&self) -> Vec<Value> {
        self.objects.values().cloned().collect()
    }
}

/// Services, draining endpoints and peers as last handed over.
type Published = (
    Vec<ServiceConfig>,
    BTreeMap<String, Vec<SocketAddr>>,
    Option<Vec<Ipv4Addr>>,
);

/// Logs the API server's version, and what podlb's `ipMode: Proxy` status
/// means there: before Kubernetes 1.30 the field does not exist, the server
/// drops it, and kube-proxy on every node DNATs the VIP to the endpoints
/// itself, so in-cluster clients on those nodes bypass podlb (no Maglev,
/// health checks or flow sync for them). Traffic from outside still comes
/// to podlb. Best effort: an unreachable server is retried by the watchers.
async fn check_server_version(client: &Client) {
    let Ok(Ok(v)) = tokio::time::timeout(REQUEST_TIMEOUT, client.apiserver_version()).await else {
        return;
    };
    let minor: u32 = v
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    if v.major == "1" && minor < 30 {
        tracing::warn!(version = %v.git_version, "kubernetes: API server older than 1.30: ipMode is ignored, so kube-proxy on every node also DNATs the VIP (in-cluster clients on those nodes bypass podlb); see docs/kubernetes.md, \"ipMode\"");
    } else {
        tracing::info!(version = %v.git_version, "kubernetes: API server (status ingress written with ipMode Proxy)");
    }
}

/// The reconcile loop: watch, reconcile on change, publish, write status.
async fn run(
    client: Client,
    settings: KubernetesSettings,
    id: Identity,
    is_active: IsActive,
    on_update: Box<dyn Fn(KubeUpdate) + Send>,
    view: Arc<KubeView>,
) {
    check_server_version(&client).await;
    let svc_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
    let slice_ar = ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&());
    let wc = watcher::Config::default();
    let svc_api: Api<DynamicObject> = Api::all_with(client.clone(), &svc_ar);
    let slice_api: Api<DynamicObject> = Api::all_with(client.clone(), &slice_ar);
    // Nodes: their flannel annotations locate the VTEP of each endpoint of a
    // vxlan Service. Not waited for: a cluster without vxlan Services (or
    // an RBAC without `nodes`) is served without them.
    let node_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&());
    let node_api: Api<DynamicObject> = Api::all_with(client.clone(), &node_ar);
    let mut svc_stream = std::pin::pin!(watcher(svc_api, wc.clone()).default_backoff());
    let mut slice_stream = std::pin::pin!(watcher(slice_api, wc.clone()).default_backoff());
    let mut node_stream = std::pin::pin!(watcher(node_api, wc.clone()).default_backoff());
    // VIPPools (podlb.io/v1alpha1), when enabled: listed before the first
    // reconcile, so a Service asking for a VIPPool address is not refused
    // while the pools are still unknown.
    let pool_ar = ApiResource {
        group: "podlb.io".into(),
        version: "v1alpha1".into(),
        api_version: "podlb.io/v1alpha1".into(),
        kind: "VIPPool".into(),
        plural: "vippools".into(),
    };
    let pool_api: Api<DynamicObject> = Api::all_with(client.clone(), &pool_ar);
    let use_pools = settings.vip_pool_crd;
    let mut pool_stream = std::pin::pin!(watcher(pool_api, wc).default_backoff());
    let mut pools = Store::default();
    let mut pool_problems = Vec::new();
    let mut services = Store::default();
    let mut slices = Store::default();
    let mut nodes = Store::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut writer = Writer::new(client.clone(), svc_ar.clone(), id.clone());
    let mut allocations = Allocations::new();
    // What was last handed to the data plane.
    let mut last: Option<Published> = None;
    // The oldest watch event not yet reconciled.
    let mut pending_since: Option<Instant> = None;
    let mut was_active = false;
    loop {
        let changed = tokio::select! {
            Some(ev) = svc_stream.next() => services.apply("services", ev, &view),
            Some(ev) = slice_stream.next() => slices.apply("endpointslices", ev, &view),
            Some(ev) = node_stream.next() => nodes.apply("nodes", ev, &view),
            Some(ev) = pool_stream.next(), if use_pools => pools.apply("vippools", ev, &view),
            _ = tick.tick() => false,
        };
        if changed && pending_since.is_none() {
            pending_since = Some(Instant::now());
        }
        let active = is_active();
        let became_active = active && !was_active;
        was_active = active;
        if !services.ready() || !slices.ready() || (use_pools && !pools.ready()) {
            continue;
        }
        view.synced.store(true, Relaxed);
        if pending_since.is_none() && !became_active && !(active && writer.retry_due()) {
            continue;
        }
        let event_at = pending_since.take().unwrap_or_else(Instant::now);
        let svc_values = services.values();
        let slice_values = slices.values();
        let node_values = nodes.values();
        let pool_values = pools.values();
        let r = reconcile_full(
            &svc_values,
            &slice_values,
            &node_values,
            &pool_values,
            &settings.reconcile,
            &allocations,
        );
        if r.pool_problems != pool_problems {
            for p in &r.pool_problems {
                tracing::warn!(pool = %p.name, problem = %p.message, "kubernetes: VIPPool left out");
            }
            pool_problems = r.pool_problems.clone();
        }
        view.reconciles.fetch_add(1, Relaxed);
        // Until the Nodes are listed every vxlan endpoint lacks its VTEP:
        // that is not a problem worth an Event.
        let mut r = r;
        if !nodes.ready() {
            r.problems
                .retain(|p| p.reason != super::reconcile::ProblemReason::NoVtep);
        }
        allocations = r.allocations.clone();
        let peers = settings
            .peers_service
            .as_deref()
            .map(|ps| peers_from_slice(&slice_values, &id.namespace, ps, id.pod_ip));
        let now = (r.services.clone(), r.draining.clone(), peers.clone());
        if last.as_ref() != Some(&now) {
            on_update(KubeUpdate {
                services: r.services.clone(),
                draining: r.draining.clone(),
                peers: peers.clone(),
                event_at,
            });
            view.updates_published.fetch_add(1, Relaxed);
            last = Some(now);
        }
        view.services.store(r.services.len() as u64, Relaxed);
        view.ignored.store(r.ignored as u64, Relaxed);
        *view.problems.lock() = r.problems.clone();
        *view.allocations.lock() = r
            .allocations
            .iter()
            .map(|(ns, n, ip)| (ns.to_string(), n.to_string(), ip))
            .collect();
        *view.draining.lock() = r.draining.clone();
        *view.peers.lock() = peers;
        if active {
            writer.write_status(&r.status, &services, &view).await;
            writer.announce(&r.allocations, &services, &view).await;
            writer.report(&r.problems, &services, &view).await;
        } else {
            writer.forget_reported();
        }
    }
}

/// Status writes and Events, done only by the active instance.
struct Writer {
    client: Client,
    svc_ar: ApiResource,
    id: Identity,
    /// Writes sent and not yet seen back in the store, so the same patch is
    /// not sent again before the watch catches up.
    sent: HashMap<(String, String), Vec<IpAddr>>,
    retry_at: Option<Instant>,
    /// Problems already reported as Events.
    reported: BTreeSet<Problem>,
    /// Services whose status write the API server refused (403), reported
    /// once with a [`STATUS_FORBIDDEN`] Event until a write succeeds.
    denied: BTreeSet<(String, String)>,
    /// Services whose active-instance condition names this instance (and
    /// the VIPs it was written for).
    announced: HashMap<(String, String), Vec<IpAddr>>,
}

/// The Service condition naming the instance that announces the VIP.
pub const ACTIVE_CONDITION: &str = "podlb.io/ActiveInstance";
/// Normal Event reasons.
pub const VIP_ALLOCATED: &str = "VIPAllocated";
pub const VIP_ANNOUNCED: &str = "VIPAnnounced";

/// The Event reason when RBAC refuses podlb the status write: the VIP is
/// served, but the Service does not say so.
pub const STATUS_FORBIDDEN: &str = "StatusWriteForbidden";

impl Writer {
    fn new(client: Client, svc_ar: ApiResource, id: Identity) -> Writer {
        Writer {
            client,
            svc_ar,
            id,
            sent: HashMap::new(),
            retry_at: None,
            reported: BTreeSet::new(),
            denied: BTreeSet::new(),
            announced: HashMap::new(),
        }
    }

    /// Who announces, as the condition and the Event say it.
    fn instance(&self) -> String {
        match &self.id.node {
            Some(n) => format!("{} on node {n}", self.id.name),
            None => self.id.name.clone(),
        }
    }

    /// Makes every served Service's [`ACTIVE_CONDITION`] name this
    /// instance, with a Normal [`VIP_ANNOUNCED`] Event when it changes (a
    /// takeover, or a new Service). Active instance only.
    async fn announce(&mut self, allocations: &Allocations, services: &Store, view: &KubeView) {
        let me = self.instance();
        for (ns, name, ips) in allocations.services() {
            let key = (ns.to_string(), name.to_string());
            if self.announced.get(&key).map(Vec::as_slice) == Some(ips) {
                continue;
            }
            let Some(obj) = services.objects.get(&key) else {
                continue;
            };
            let message = match ips {
                [ip] => format!("VIP {ip} is announced by podlb instance {me}"),
                _ => format!("VIPs {} are announced by podlb instance {me}", list(ips)),
            };
            let current = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c["type"] == ACTIVE_CONDITION)
                        .and_then(|c| c["message"].as_str())
                });
            if current == Some(message.as_str()) {
                self.announced.insert(key, ips.to_vec());
                continue;
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let mut condition = json!({
                "type": ACTIVE_CONDITION,
                "status": "True",
                "reason": "Announcing",
                "message": message,
                "lastTransitionTime": rfc3339(now.as_secs() as i64),
            });
            if let Some(g) = obj.pointer("/metadata/generation") {
                condition["observedGeneration"] = g.clone();
            }
            let patch = json!({ "status": { "conditions": [condition] } });
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), ns, &self.svc_ar);
            let res = tokio::time::timeout(
                REQUEST_TIMEOUT,
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
            match res {
                Ok(Ok(_)) => {
                    view.status_writes.fetch_add(1, Relaxed);
                    self.announced.insert(key.clone(), ips.to_vec());
                    self.send_event(
                        services,
                        &key,
                        EventType::Normal,
                        VIP_ANNOUNCED,
                        &message,
                        view,
                    )
                    .await;
                }
                Ok(Err(e)) => self.write_failed(view, &format!("condition of {ns}/{name}: {e}")),
                Err(_) => self.write_failed(view, &format!("condition of {ns}/{name}: timed out")),
            }
        }
    }

    fn retry_due(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() >= t)
    }

    fn forget_reported(&mut self) {
        // A new master reports what is still wrong.
        self.reported.clear();
        self.denied.clear();
        self.announced.clear();
        self.sent.clear();
        self.retry_at = None;
    }

    /// Writes `status.loadBalancer.ingress` where it differs.
    async fn write_status(&mut self, updates: &[StatusUpdate], services: &Store, view: &KubeView) {
        self.retry_at = None;
        // Forget sent writes the store now reflects (or that no longer apply).
        let wanted: HashMap<(String, String), &Vec<IpAddr>> = updates
            .iter()
            .map(|u| ((u.namespace.clone(), u.name.clone()), &u.ips))
            .collect();
        self.sent.retain(|k, v| wanted.get(k) == Some(&&*v));
        for u in updates {
            let key = (u.namespace.clone(), u.name.clone());
            if self.sent.get(&key) == Some(&u.ips) || !services.objects.contains_key(&key) {
                continue;
            }
            // One entry per VIP, the primary family's first (a merge patch
            // replaces the list whole).
            let ingress: Vec<Value> = u
                .ips
                .iter()
                .map(|ip| json!({ "ip": ip.to_string(), "ipMode": super::reconcile::IP_MODE }))
                .collect();
            let patch = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &u.namespace, &self.svc_ar);
            let res = tokio::time::timeout(
                REQUEST_TIMEOUT,
                api.patch_status(&u.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
            match res {
                Ok(Ok(_)) => {
                    view.status_writes.fetch_add(1, Relaxed);
                    self.denied.remove(&key);
                    self.sent.insert(key.clone(), u.ips.clone());
                    tracing::info!(service = %format!("{}/{}", u.namespace, u.name), ips = ?u.ips, "kubernetes: status written");
                    if !u.ips.is_empty() {
                        let msg = match u.ips.as_slice() {
                            [ip] => {
                                format!("VIP {ip} allocated (ipMode {})", super::reconcile::IP_MODE)
                            }
                            ips => format!(
                                "VIPs {} allocated (ipMode {})",
                                list(ips),
                                super::reconcile::IP_MODE
                            ),
                        };
                        self.send_event(
                            services,
                            &key,
                            EventType::Normal,
                            VIP_ALLOCATED,
                            &msg,
                            view,
                        )
                        .await;
                    }
                }
                Ok(Err(e)) => {
                    let denied = match &e {
                        kube::Error::Api(s) if s.code == 403 => Some(s.message.clone()),
                        _ => None,
                    };
                    self.write_failed(view, &format!("status of {}/{}: {e}", u.namespace, u.name));
                    if let Some(why) = denied.filter(|_| !self.denied.contains(&key)) {
                        // Say on the Service what podlb cannot do (Events
                        // may still be allowed when the status is not).
                        let msg = format!(
                            "podlb serves {} but may not write status.loadBalancer (RBAC: patch services/status): {why}",
                            if u.ips.is_empty() {
                                "no VIP".to_string()
                            } else {
                                list(&u.ips)
                            }
                        );
                        if self
                            .send_event(
                                services,
                                &key,
                                EventType::Warning,
                                STATUS_FORBIDDEN,
                                &msg,
                                view,
                            )
                            .await
                        {
                            self.denied.insert(key);
                        }
                    }
                }
                Err(_) => self.write_failed(
                    view,
                    &format!("status of {}/{}: timed out", u.namespace, u.name),
                ),
            }
        }
    }

    /// A status-subresource write failed (`what`: which and why): counted,
    /// logged, shown, and retried after [`WRITE_RETRY`].
    fn write_failed(&mut self, view: &KubeView, what: &str) {
        view.status_errors.fetch_add(1, Relaxed);
        tracing::warn!(error = %what, "kubernetes: status write failed; retrying");
        *view.last_error.lock() = Some(what.to_string());
        self.retry_at = Some(Instant::now() + WRITE_RETRY);
    }

    /// Sends a Warning Event for every problem not yet reported.
    async fn report(&mut self, problems: &[Problem], services: &Store, view: &KubeView) {
        let now: BTreeSet<Problem> = problems.iter().cloned().collect();
        // A problem that went away is reported again if it comes back.
        self.reported.retain(|p| now.contains(p));
        for p in problems {
            if self.reported.contains(p) {
                continue;
            }
            let key = (p.namespace.clone(), p.name.clone());
            if self
                .send_event(
                    services,
                    &key,
                    EventType::Warning,
                    p.reason.as_str(),
                    &p.message,
                    view,
                )
                .await
            {
                self.reported.insert(p.clone());
            }
        }
    }

    /// Creates an Event on Service `key`; whether it was accepted (if not,
    /// counted, and retried after [`WRITE_RETRY`]).
    async fn send_event(
        &mut self,
        services: &Store,
        key: &(String, String),
        kind: EventType,
        reason: &str,
        message: &str,
        view: &KubeView,
    ) -> bool {
        let (ns, name) = key;
        let uid = services
            .objects
            .get(key)
            .and_then(|o| o.pointer("/metadata/uid"))
            .cloned()
            .unwrap_or(Value::Null);
        let ev = event_object(ns, name, kind, reason, message, uid, &self.id);
        let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let Ok(obj) = serde_json::from_value::<DynamicObject>(ev) else {
            return false;
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, api.create(&PostParams::default(), &obj)).await
        {
            Ok(Ok(_)) => {
                view.events_sent.fetch_add(1, Relaxed);
                match kind {
                    EventType::Warning => {
                        tracing::warn!(service = %format!("{ns}/{name}"), reason, message, "kubernetes: event")
                    }
                    EventType::Normal => {
                        tracing::info!(service = %format!("{ns}/{name}"), reason, message, "kubernetes: event")
                    }
                }
                true
            }
            Ok(Err(e)) => {
                view.event_errors.fetch_add(1, Relaxed);
                *view.last_error.lock() = Some(format!("event for {ns}/{name}: {e}"));
                self.retry_at = Some(Instant::now() + WRITE_RETRY);
                false
            }
            Err(_) => {
                view.event_errors.fetch_add(1, Relaxed);
                self.retry_at = Some(Instant::now() + WRITE_RETRY);
                false
            }
        }
    }
}

/// `a, b` for messages.
fn list(ips: &[IpAddr]) -> String {
    let s: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    s.join(", ")
}

/// The type of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Normal,
    Warning,
}

/// A core/v1 Event about a Service.
fn event_object(
    ns: &str,
    name: &str,
    kind: EventType,
    reason: &str,
    message: &str,
    uid: Value,
    id: &Identity,
) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ts = rfc3339(now.as_secs() as i64);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.{:x}", now.as_nanos()),
            "namespace": ns,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Service",
            "namespace": ns,
            "name": name,
            "uid": uid,
        },
        "reason": reason,
        "message": message,
        "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "source": { "component": "podlb" },
        "reportingComponent": "podlb.io/podlb",
        "reportingInstance": id.name,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    })
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-28T01:02:03Z`),
/// the form the API uses for `Time`. Saturates outside jiff's range
/// (years -9999 to 9999).
pub fn rfc3339(secs: i64) -> String {
    let t = jiff::Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    format!("{t:.0}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_827_723), "2026-11-28T01:02:03Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
