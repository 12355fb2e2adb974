//! Services of type LoadBalancer + EndpointSlices → data-plane services.
//!
//! [`reconcile`] is called with the full contents of the Service and
//! EndpointSlice stores and the [`Allocations`] it returned last time. It is
//! deterministic: the same objects in any order give the same result.
//!
//! ## Which Services
//! A Service is podlb's iff `spec.type` is `LoadBalancer` and
//! `spec.loadBalancerClass` equals [`KubeSettings::load_balancer_class`];
//! every other Service is counted in [`Reconciled::ignored`] and never
//! touched (not even its status: another controller owns it).
//!
//! ## VIPs
//! A Service may request a VIP with `spec.loadBalancerIP` or the
//! [`ANNOTATION_VIP`] annotation (both set and different is a `BadSpec`).
//! Addresses are given out in three passes, Services taken oldest first
//! (`metadata.creationTimestamp`, then namespace/name):
//! 1. *sticky*: a Service keeps the VIP it holds — its entry in the
//!    previous [`Allocations`], or, after a restart, the first
//!    `status.loadBalancer.ingress[].ip` — if that address is still inside a
//!    pool and agrees with its request (if any);
//! 2. *requested*: a requested VIP outside every pool is refused
//!    (`VIPOutsidePool`), one held by another Service is refused
//!    (`VIPInUse`, naming the holder);
//! 3. *pool*: the rest get the lowest free address, pools in configured
//!    order (`PoolExhausted` when none is left).
//!
//! A Service whose request is refused is not served at all (rather than
//! served on some other address than the one asked for); its status is
//! cleared and a [`Problem`] says why. Nothing else is affected.
//!
//! ## Ports and names
//! Each TCP or UDP port of a Service becomes one [`ServiceConfig`] of that
//! protocol on the Service's VIP, named by [`config_name`]: `<namespace>.
//! <service>.<port name, or number if unnamed>`, with `.udp` appended for a
//! UDP port (so TCP 53 and UDP 53 of one Service are two services with
//! distinct names; TCP names are as they were before UDP was served).
//! Kubernetes namespace, Service and port names are DNS labels
//! (`[a-z0-9-]`), so `.` separates them unambiguously and the result fits
//! the config rule `[A-Za-z0-9-_.]{1,63}`; a name longer than 63 characters
//! is cut to 54 and given `_` and an 8-digit hash of the full name. SCTP
//! ports get an `UnsupportedProtocol` problem; the other ports of the same
//! Service are still served.
//!
//! The Service's health check (annotation or default) applies to its TCP
//! ports. `tcp` and `http` checks cannot probe a UDP port, so a UDP port
//! whose check is one of those has no podlb health check: its backends
//! are the ready endpoints, as with `none`.
//!
//! ## Backends
//! From the EndpointSlices of the Service's namespace labelled
//! [`SERVICE_NAME_LABEL`]` = <service>` with `addressType: IPv4`. The port
//! is the slice's `ports[]` entry of the Service port's protocol (`protocol`
//! absent means TCP) whose `name` equals the Service port's name — the
//! EndpointSlice controller has already resolved named and numbered
//! `targetPort`s into it — or, for an unnamed Service port, the slice's
//! only port if it has that protocol. A slice without a matching port contributes nothing
//! to that port (its Pods do not expose it). Endpoints that are ready
//! (`conditions.ready` true or absent) and not terminating become backends
//! of weight 1; terminating ones are listed in [`Reconciled::draining`] so
//! the data plane keeps their flows until they end. An address listed by
//! two slices counts once (ready wins over terminating).
//!
//! Duplicate Services (same namespace/name) cannot come from a reflector
//! store and are not handled specially.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::Deserialize;
use serde_json::Value;

use super::objects::{self, EndpointSlice};
use super::pools::Pool;
use super::settings::KubeSettings;
use crate::maglev::DEFAULT_TABLE_SIZE;
use crate::model::HealthCheck;
use crate::model::{Affinity, BackendConfig, Mode, Prefix, Protocol, ServiceConfig};

pub use super::objects::SERVICE_NAME_LABEL;

/// Annotation requesting a VIP (alternative to `spec.loadBalancerIP`,
/// which is deprecated upstream).
pub const ANNOTATION_VIP: &str = "podlb.io/vip";
/// Annotation choosing the forwarding mode: `nat` or `dsr`.
pub const ANNOTATION_MODE: &str = "podlb.io/mode";
/// Annotation choosing the health check: `tcp`, `http[:/path]`, `udp[:text]`,
/// `dns:<name>` or `none` ([`HealthCheck::from_annotation`]). A check
/// applies to the Service's ports of its protocol ([`check_for`]).
pub const ANNOTATION_HEALTH_CHECK: &str = "podlb.io/health-check";
/// Annotation letting Services share a VIP: Services whose values are equal
/// may hold the same VIP if their ports differ (MetalLB's
/// `allow-shared-ip`).
pub const ANNOTATION_SHARED_IP: &str = "podlb.io/allow-shared-ip";
/// The older spelling of `spec.loadBalancerSourceRanges` (comma-separated),
/// read when the field is empty, as kube-proxy does.
pub const ANNOTATION_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// Why a Service is not (fully) served; the Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemReason {
    /// The requested VIP is in no configured pool.
    VipOutsidePool,
    /// The requested VIP is held by another Service.
    VipInUse,
    /// No free address left in the pools.
    PoolExhausted,
    /// The Service cannot be read or has contradictory settings.
    BadSpec,
    /// A port of another protocol than TCP or UDP, i.e. SCTP (it is
    /// skipped).
    UnsupportedProtocol,
    /// A vxlan Service's endpoint runs on a node with no known VTEP
    /// (flannel's Node annotations missing or wrong); it is skipped.
    NoVtep,
}

impl ProblemReason {
    /// The Event `reason` (CamelCase, as Kubernetes reasons are).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemReason::VipOutsidePool => "VIPOutsidePool",
            ProblemReason::VipInUse => "VIPInUse",
            ProblemReason::PoolExhausted => "PoolExhausted",
            ProblemReason::BadSpec => "BadSpec",
            ProblemReason::UnsupportedProtocol => "UnsupportedProtocol",
            ProblemReason::NoVtep => "VTEPUnknown",
        }
    }
}

impl fmt::Display for ProblemReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something to report on a Service (as an Event of type Warning).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub namespace: String,
    pub name: String,
    pub reason: ProblemReason,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The `ipMode` podlb writes beside each VIP (Kubernetes 1.30+).
pub const IP_MODE: &str = "Proxy";

/// A status write: `status.loadBalancer.ingress` becomes `[{ip, ipMode}]`, or `[]`
/// when `ip` is `None` (the Service is podlb's but has no VIP).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub ip: Option<Ipv4Addr>,
}

/// VIPs held by Services, keyed by namespace/name. Feed the last result
/// back into [`reconcile`] so VIPs stay put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    by_service: BTreeMap<(String, String), Ipv4Addr>,
}

impl Allocations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.by_service
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    pub fn insert(&mut self, namespace: &str, name: &str, ip: Ipv4Addr) {
        self.by_service
            .insert((namespace.to_string(), name.to_string()), ip);
    }

    pub fn len(&self) -> usize {
        self.by_service.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty()
    }

    /// `(namespace, name, vip)`, sorted by namespace/name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, Ipv4Addr)> {
        self.by_service
            .iter()
            .map(|((ns, n), ip)| (ns.as_str(), n.as_str(), *ip))
    }
}

/// The outcome of one [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Data-plane services, sorted by name.
    pub services: Vec<ServiceConfig>,
    /// Terminating endpoints per service name (only non-empty entries):
    /// no new flows, existing flows kept until they end.
    pub draining: BTreeMap<String, Vec<SocketAddr>>,
    /// Status writes, only where the status differs; sorted.
    pub status: Vec<StatusUpdate>,
    /// Sorted.
    pub problems: Vec<Problem>,
    /// Every VIP held now; input to the next call.
    pub allocations: Allocations,
    /// Services that are not podlb's.
    /// VIPPools left out, and why.
    pub pool_problems: Vec<super::pools::PoolProblem>,
    pub ignored: usize,
}

/// A podlb Service in the middle of reconciliation.
struct Ours {
    namespace: String,
    name: String,
    created: String,
    svc: objects::Service,
    mode: Mode,
    health: Option<HealthCheck>,
    /// Contradictory spec: not served.
    bad: bool,
    request: Option<Ipv4Addr>,
    held: Option<Ipv4Addr>,
    vip: Option<Ipv4Addr>,
    /// [`ANNOTATION_SHARED_IP`], if set and not empty.
    share: Option<String>,
    /// Admitted clients (`spec.loadBalancerSourceRanges`).
    ranges: Vec<Prefix>,
    affinity: Affinity,
    /// Indices of the pools that serve it.
    pools: Vec<usize>,
}

impl Ours {
    /// (protocol, port) of each Service port.
    fn listeners(&self) -> BTreeSet<(&str, i64)> {
        self.svc
            .spec
            .ports
            .iter()
            .map(|p| (p.protocol.as_deref().unwrap_or("TCP"), p.port))
            .collect()
    }

    /// Whether this Service may hold a VIP together with `others`: all carry
    /// the same sharing key and no two use the same protocol and port.
    fn shares_with(&self, others: &[&Ours]) -> bool {
        let Some(key) = self.share.as_deref() else {
            return false;
        };
        let mine = self.listeners();
        others
            .iter()
            .all(|o| o.share.as_deref() == Some(key) && o.listeners().is_disjoint(&mine))
    }
}

/// `spec.loadBalancerSourceRanges` (or its annotation) as IPv4 prefixes.
/// IPv6 ranges admit no IPv4 client and are left out; a list of only IPv6
/// ranges is refused, since an empty list would admit everyone.
fn source_ranges(svc: &objects::Service) -> Result<Vec<Prefix>, String> {
    let (what, list): (&str, Vec<&str>) = if svc.spec.load_balancer_source_ranges.is_empty() {
        match svc.metadata.annotations.get(ANNOTATION_SOURCE_RANGES) {
            Some(a) => (
                ANNOTATION_SOURCE_RANGES,
                a.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            None => return Ok(Vec::new()),
        }
    } else {
        (
            "spec.loadBalancerSourceRanges",
            svc.spec
                .load_balancer_source_ranges
                .iter()
                .map(|s| s.trim())
                .collect(),
        )
    };
    let mut out = Vec::new();
    for r in &list {
        if r.contains(':') {
            continue;
        }
        // The API server accepts host bits in these (kube-proxy masks them).
        let (addr, len) = r.split_once('/').unwrap_or((r, "32"));
        let prefix = addr
            .parse::<Ipv4Addr>()
            .ok()
            .zip(len.parse::<u8>().ok().filter(|l| *l <= 32))
            .map(|(a, l)| {
                let p = Prefix {
                    base: a.into(),
                    prefix: l,
                };
                Prefix {
                    base: Ipv4Addr::from(u32::from(a) & p.mask()).into(),
                    prefix: l,
                }
            })
            .ok_or_else(|| format!("{what}: {r:?} is not a CIDR like \"198.18.0.0/16\""))?;
        out.push(prefix);
    }
    if out.is_empty() && !list.is_empty() {
        return Err(format!(
            "{what} lists only IPv6 ranges, which admit no IPv4 client; the Service is not served rather than opened to everyone"
        ));
    }
    Ok(out)
}

fn problem(ns: &str, name: &str, reason: ProblemReason, message: String) -> Problem {
    Problem {
        namespace: ns.to_string(),
        name: name.to_string(),
        reason,
        message,
    }
}

/// The check for a Service port of `protocol`: the Service's own (its
/// annotation, else the default) if it checks backends of that protocol;
/// if not (a `dns:` annotation on a Service with TCP ports too, say), the
/// default check if that one does; else none.
fn check_for(
    service: Option<&HealthCheck>,
    default: Option<&HealthCheck>,
    protocol: Protocol,
) -> Option<HealthCheck> {
    let fits = |c: &&HealthCheck| c.kind.protocol() == protocol;
    match service {
        Some(c) if !fits(&c) => default.filter(fits).cloned(),
        other => other.cloned(),
    }
}

fn namespace_of(ns: &str) -> &str {
    if ns.is_empty() {
        "default"
    } else {
        ns
    }
}

/// The VIP a Service asks for, from `spec.loadBalancerIP` or the annotation.
fn requested_vip(svc: &objects::Service) -> Result<Option<Ipv4Addr>, String> {
    let parse = |what: &str, s: &str| -> Result<Ipv4Addr, String> {
        s.trim().parse().map_err(|_| {
            format!("{what} {s:?} is not an IPv4 address; write it like \"198.18.0.100\"")
        })
    };
    let spec = match svc
        .spec
        .load_balancer_ip
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(parse("spec.loadBalancerIP", s)?),
        None => None,
    };
    let annotation = match svc
        .metadata
        .annotations
        .get(ANNOTATION_VIP)
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(parse(&format!("annotation {ANNOTATION_VIP}"), s)?),
        None => None,
    };
    match (spec, annotation) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "spec.loadBalancerIP {a} and annotation {ANNOTATION_VIP} {b} disagree; set only one"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// Reconciles the stores' contents into data-plane services. See the
/// module documentation for the rules.
pub fn reconcile(
    services: &[Value],
    slices: &[Value],
    settings: &KubeSettings,
    previous: &Allocations,
) -> Reconciled {
    reconcile_with_nodes(services, slices, &[], settings, previous)
}

/// [`reconcile`] with the cluster's Nodes, whose flannel annotations give
/// the VTEP of each endpoint's node for `podlb.io/mode: vxlan` Services.
pub fn reconcile_with_nodes(
    services: &[Value],
    slices: &[Value],
    nodes: &[Value],
    settings: &KubeSettings,
    previous: &Allocations,
) -> Reconciled {
    reconcile_full(services, slices, nodes, &[], settings, previous)
}

/// [`reconcile_with_nodes`] with the `VIPPool` objects ([`super::pools`]):
/// their pools come after the config file's, and serve only the
/// namespaces and labels they select.
pub fn reconcile_full(
    services: &[Value],
    slices: &[Value],
    nodes: &[Value],
    vip_pools: &[Value],
    settings: &KubeSettings,
    previous: &Allocations,
) -> Reconciled {
    let (crd_pools, pool_problems) = super::pools::parse_pools(vip_pools);
    let listed: Vec<String> = settings.vip_pools.iter().map(|p| p.to_string()).collect();
    let mut pools = vec![Pool::from_config(
        &format!("kubernetes.vip_pools {}", listed.join(" ")),
        &settings.vip_pools,
    )];
    pools.extend(crd_pools);
    let (vteps, node_problems) = super::nodes::vteps(nodes);
    let mut problems = Vec::new();
    let mut ignored = 0;
    let mut ours = Vec::new();

    for v in services {
        let ty = v.pointer("/spec/type").and_then(Value::as_str);
        let class = v.pointer("/spec/loadBalancerClass").and_then(Value::as_str);
        let name = v.pointer("/metadata/name").and_then(Value::as_str);
        let (Some("LoadBalancer"), true, Some(name)) = (
            ty,
            class == Some(settings.load_balancer_class.as_str()),
            name,
        ) else {
            ignored += 1;
            continue;
        };
        let ns = namespace_of(
            v.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let svc = match objects::Service::deserialize(v) {
            Ok(s) => s,
            Err(e) => {
                problems.push(problem(
                    ns,
                    name,
                    ProblemReason::BadSpec,
                    format!("the Service cannot be read: {e}"),
                ));
                continue;
            }
        };
        let request = match requested_vip(&svc) {
            Ok(r) => r,
            Err(msg) => {
                problems.push(problem(ns, name, ProblemReason::BadSpec, msg));
                // Not served, but its status is still cleared below.
                ours.push(Ours {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    created: svc.metadata.creation_timestamp.clone().unwrap_or_default(),
                    svc,
                    mode: settings.default_mode,
                    health: None,
                    bad: true,
                    request: None,
                    held: None,
                    vip: None,
                    share: None,
                    ranges: Vec::new(),
                    affinity: Affinity::None,
                    pools: Vec::new(),
                });
                continue;
            }
        };
        let (ranges, bad_ranges) = match source_ranges(&svc) {
            Ok(r) => (r, false),
            Err(msg) => {
                problems.push(problem(ns, name, ProblemReason::BadSpec, msg));
                (Vec::new(), true)
            }
        };
        let affinity = match svc.spec.session_affinity.as_deref() {
            None | Some("None") => Affinity::None,
            Some("ClientIP") => Affinity::ClientIp,
            Some(other) => {
                problems.push(problem(
                    ns,
                    name,
                    ProblemReason::BadSpec,
                    format!("spec.sessionAffinity {other:?} is not \"None\" or \"ClientIP\"; using None"),
                ));
                Affinity::None
            }
        };
        let share = svc
            .metadata
            .annotations
            .get(ANNOTATION_SHARED_IP)
            .filter(|k| !k.is_empty())
            .cloned();
        let mode = match svc
            .metadata
            .annotations
            .get(ANNOTATION_MODE)
            .map(String::as_str)
        {
            None => settings.default_mode,
            Some("nat") => Mode::Nat,
            Some("dsr") => Mode::Dsr,
            Some("vxlan") => Mode::Vxlan,
            Some(other) => {
                problems.push(problem(
                    ns,
                    name,
                    ProblemReason::BadSpec,
                    format!(
                        "annotation {ANNOTATION_MODE} {other:?} is not \"nat\", \"dsr\" or \"vxlan\"; using {}",
                        settings.default_mode.as_str()
                    ),
                ));
                settings.default_mode
            }
        };
        let health = match svc.metadata.annotations.get(ANNOTATION_HEALTH_CHECK) {
            None => settings.health_check.clone(),
            Some(v) => {
                let defaults = settings.health_check.clone().unwrap_or_default();
                HealthCheck::from_annotation(v, &defaults).unwrap_or_else(|e| {
                    problems.push(problem(
                        ns,
                        name,
                        ProblemReason::BadSpec,
                        format!("annotation {ANNOTATION_HEALTH_CHECK} {v:?}: {e}; using the default check"),
                    ));
                    settings.health_check.clone()
                })
            }
        };
        let from_status = svc
            .ingress_ips()
            .first()
            .cloned()
            .flatten()
            .and_then(|s| s.parse().ok());
        let held = previous
            .get(ns, name)
            .or(from_status)
            .filter(|ip| {
                pools
                    .iter()
                    .any(|p| p.contains(*ip) && p.serves(ns, &svc.metadata.labels))
            })
            .filter(|ip| request.is_none_or(|r| r == *ip));
        ours.push(Ours {
            namespace: ns.to_string(),
            name: name.to_string(),
            created: svc.metadata.creation_timestamp.clone().unwrap_or_default(),
            svc,
            mode,
            health,
            bad: bad_ranges,
            request: request.filter(|_| !bad_ranges),
            held: held.filter(|_| !bad_ranges),
            vip: None,
            share,
            ranges,
            affinity,
            pools: Vec::new(),
        });
    }
    ours.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });

    for o in &mut ours {
        o.pools = (0..pools.len())
            .filter(|&i| pools[i].serves(&o.namespace, &o.svc.metadata.labels))
            .collect();
    }
    allocate(&mut ours, &pools, &mut problems);

    // Slices by (namespace, service name).
    let parsed = objects::parse_slices(slices);
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in &parsed {
        if let Some(svc) = s.service_name() {
            by_service
                .entry((namespace_of(&s.metadata.namespace), svc))
                .or_default()
                .push(s);
        }
    }

    let mut out = Vec::new();
    let mut draining = BTreeMap::new();
    let mut status = Vec::new();
    let mut allocations = Allocations::new();
    for o in &ours {
        let ns = o.namespace.as_str();
        let name = o.name.as_str();
        if !o.bad {
            let slices = by_service
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            for p in &o.svc.spec.ports {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                let port_name = p.name.as_deref().unwrap_or("");
                let label = if port_name.is_empty() {
                    p.port.to_string()
                } else {
                    port_name.to_string()
                };
                let protocol = match proto {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    _ => {
                        problems.push(problem(
                            ns,
                            name,
                            ProblemReason::UnsupportedProtocol,
                            format!(
                                "port {label} ({proto} {}) is not served: podlb forwards TCP and UDP only; the other ports are served",
                                p.port
                            ),
                        ));
                        continue;
                    }
                };
                let Some(port) = u16::try_from(p.port).ok().filter(|p| *p != 0) else {
                    problems.push(problem(
                        ns,
                        name,
                        ProblemReason::BadSpec,
                        format!("port {label}: {} is not a port number (1-65535)", p.port),
                    ));
                    continue;
                };
                let Some(vip) = o.vip else { continue };
                let cname = config_name(ns, name, &label, protocol);
                let (ready, drain) = endpoints(slices, port_name, proto);
                if !drain.is_empty() {
                    draining.insert(cname.clone(), drain);
                }
                let mut vni = crate::model::DEFAULT_VNI;
                let backends: Vec<BackendConfig> = if o.mode == Mode::Vxlan {
                    let mut out = Vec::new();
                    for (addr, node) in ready {
                        let vtep = node.as_deref().and_then(|n| vteps.get(n));
                        match vtep {
                            Some(v) => {
                                vni = v.vni.unwrap_or(vni);
                                out.push(BackendConfig {
                                    addr,
                                    weight: 1,
                                    vtep: Some(v.ip),
                                    vtep_mac: Some(v.mac),
                                });
                            }
                            None => {
                                let why = match node.as_deref() {
                                    None => "has no nodeName".to_string(),
                                    Some(n) => node_problems
                                        .iter()
                                        .find(|p| p.node == n)
                                        .map(|p| p.message.clone())
                                        .unwrap_or_else(|| format!("runs on node {n}, which has no flannel VTEP annotations")),
                                };
                                problems.push(problem(
                                    ns,
                                    name,
                                    ProblemReason::NoVtep,
                                    format!("endpoint {addr} {why}; it is not served"),
                                ));
                            }
                        }
                    }
                    out
                } else {
                    ready
                        .into_iter()
                        .map(|(addr, _)| BackendConfig {
                            addr,
                            weight: 1,
                            vtep: None,
                            vtep_mac: None,
                        })
                        .collect()
                };
                out.push(ServiceConfig {
                    name: cname,
                    vip: vip.into(),
                    port,
                    mode: o.mode,
                    backends,
                    table_size: DEFAULT_TABLE_SIZE,
                    health_check: check_for(
                        o.health.as_ref(),
                        settings.health_check.as_ref(),
                        protocol,
                    ),
                    vxlan_port: crate::model::DEFAULT_VXLAN_PORT,
                    vni,
                    mss_clamp: (o.mode == Mode::Vxlan && protocol == Protocol::Tcp)
                        .then_some(crate::model::DEFAULT_VXLAN_MSS),
                    source_ranges: o.ranges.clone(),
                    affinity: o.affinity,
                    udp_hash: Default::default(),
                    protocol,
                });
            }
        }
        if let Some(vip) = o.vip {
            allocations.insert(ns, name, vip);
        }
        let current = o.svc.ingress();
        let up_to_date = match o.vip {
            // ipMode Proxy: podlb carries the VIP's traffic itself, so
            // kube-proxy must not program the VIP on the nodes (KEP-1860;
            // with VIP, or no ipMode, every node DNATs the VIP to the
            // endpoints and podlb is bypassed). API servers before 1.30 drop
            // the field; the writer does not repeat a write the watch then
            // shows without it (docs/kubernetes.md, "ipMode").
            Some(vip) => {
                current.len() == 1
                    && current[0].0.as_deref().and_then(|s| s.parse().ok()) == Some(vip)
                    && current[0].1.as_deref() == Some(IP_MODE)
            }
            None => current.is_empty(),
        };
        if !up_to_date {
            status.push(StatusUpdate {
                namespace: ns.to_string(),
                name: name.to_string(),
                ip: o.vip,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    status.sort();
    problems.sort();
    Reconciled {
        services: out,
        draining,
        status,
        problems,
        allocations,
        ignored,
        pool_problems,
    }
}

/// The three allocation passes (module documentation, "VIPs"). A VIP may
/// have several holders when they share it ([`ANNOTATION_SHARED_IP`]).
fn allocate(ours: &mut [Ours], pools: &[Pool], problems: &mut Vec<Problem>) {
    // Whether ours[i] may hold `ip`: inside a pool that serves it.
    let holds = |o: &Ours, ip: Ipv4Addr| o.pools.iter().any(|&p| pools[p].contains(ip));
    let names = |o: &Ours| -> String {
        let n: Vec<String> = o
            .pools
            .iter()
            .map(|&p| match p {
                0 => pools[p].name.clone(),
                _ => format!("VIPPool {}", pools[p].name),
            })
            .collect();
        if n.is_empty() {
            "none serves this Service".to_string()
        } else {
            n.join(", ")
        }
    };
    let mut taken: BTreeMap<Ipv4Addr, Vec<usize>> = BTreeMap::new();
    // Whether ours[i] may join the holders of `ip` (none, or all sharing).
    let fits = |ours: &[Ours], taken: &BTreeMap<Ipv4Addr, Vec<usize>>, i: usize, ip: Ipv4Addr| {
        taken.get(&ip).is_none_or(|h| {
            let holders: Vec<&Ours> = h.iter().map(|&j| &ours[j]).collect();
            ours[i].shares_with(&holders)
        })
    };
    // 1. sticky
    for i in 0..ours.len() {
        if let Some(h) = ours[i].held {
            if fits(ours, &taken, i, h) {
                taken.entry(h).or_default().push(i);
                ours[i].vip = Some(h);
            }
        }
    }
    // 2. requested
    for i in 0..ours.len() {
        let (Some(r), None) = (ours[i].request, ours[i].vip) else {
            continue;
        };
        let o = &ours[i];
        if !holds(o, r) {
            problems.push(problem(
                &o.namespace,
                &o.name,
                ProblemReason::VipOutsidePool,
                format!(
                    "requested VIP {r} is outside the pools that serve this Service [{}]; request an address inside them or remove the request",
                    names(o)
                ),
            ));
        } else if !fits(ours, &taken, i, r) {
            let holders: Vec<String> = taken[&r]
                .iter()
                .map(|&j| format!("{}/{}", ours[j].namespace, ours[j].name))
                .collect();
            problems.push(problem(
                &o.namespace,
                &o.name,
                ProblemReason::VipInUse,
                format!(
                    "requested VIP {r} is used by Service {}; request another address, or give every Service on it the annotation {ANNOTATION_SHARED_IP} with one value and ports that differ",
                    holders.join(", ")
                ),
            ));
        } else {
            taken.entry(r).or_default().push(i);
            ours[i].vip = Some(r);
        }
    }
    // 3. pool: a sharing Service first joins an address its partners hold
    // (as MetalLB does); otherwise the lowest free address of the first
    // auto-assigned pool serving it that has one. Addresses are only ever
    // taken in this pass, so one cursor per pool, past the taken ones,
    // finds each next free address without rescanning.
    let mut cursors: Vec<_> = pools.iter().map(|p| p.addresses().peekable()).collect();
    for i in 0..ours.len() {
        let o = &ours[i];
        if o.request.is_some() || o.vip.is_some() || o.bad {
            continue;
        }
        let partner = o.share.as_ref().and_then(|_| {
            taken
                .keys()
                .copied()
                .find(|ip| holds(&ours[i], *ip) && fits(ours, &taken, i, *ip))
        });
        let mut free = || {
            ours[i]
                .pools
                .iter()
                .filter(|&&p| pools[p].auto_assign)
                .find_map(|&p| {
                    let c = &mut cursors[p];
                    while c.next_if(|a| taken.contains_key(a)).is_some() {}
                    c.peek().copied()
                })
        };
        match partner.or_else(&mut free) {
            Some(a) => {
                taken.entry(a).or_default().push(i);
                ours[i].vip = Some(a);
            }
            None => {
                let o = &ours[i];
                problems.push(problem(
                    &o.namespace,
                    &o.name,
                    ProblemReason::PoolExhausted,
                    format!(
                        "no free VIP left in the auto-assigned pools that serve this Service [{}]; add a pool to kubernetes.vip_pools or a VIPPool, or delete an unused Service",
                        names(o)
                    ),
                ));
            }
        }
    }
}

/// Ready endpoints (with their node) and draining (terminating) addresses
/// of the Service port named `port_name` (empty when unnamed) and of
/// protocol `proto` (`TCP` or `UDP`, as the API spells it).
fn endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: &str,
) -> (Vec<(SocketAddr, Option<String>)>, Vec<SocketAddr>) {
    let mut ready = std::collections::BTreeMap::new();
    let mut terminating = BTreeSet::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice_port(s, port_name, proto) else {
            continue;
        };
        for e in &s.endpoints {
            let Some(ip) = e.ipv4() else { continue };
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
            if e.is_terminating() {
                terminating.insert(addr);
            } else if e.is_ready() {
                ready.entry(addr).or_insert_with(|| e.node_name.clone());
            }
        }
    }
    let draining = terminating
        .iter()
        .filter(|a| !ready.contains_key(a))
        .copied()
        .collect();
    (ready.into_iter().collect(), draining)
}

/// The slice's port of protocol `proto` for the Service port `name`: the
/// entry with that name and protocol (absent: TCP), or the only entry when
/// the Service port is unnamed and the entry has that protocol.
fn slice_port(s: &EndpointSlice, name: &str, proto: &str) -> Option<u16> {
    let same = |p: &&objects::EndpointPort| p.protocol.as_deref().unwrap_or("TCP") == proto;
    let entry = s
        .ports
        .iter()
        .filter(same)
        .find(|p| p.name.as_deref().unwrap_or("") == name)
        .or_else(|| match s.ports.as_slice() {
            [only] if name.is_empty() && same(&only) => Some(only),
            _ => None,
        })?;
    entry
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// FNV-1a, 32 bits: a stable hash (unlike `DefaultHasher`) for name suffixes.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The data-plane service name of a Service port:
/// `<namespace>.<service>.<port>` for TCP and `<namespace>.<service>.<port>.udp`
/// for UDP, where `<port>` is the port's name or, if unnamed, its number.
/// Characters outside `[A-Za-z0-9-_.]` become `_`; a result longer than 63
/// characters (or one that needed such a change) is cut to 54 characters
/// plus `_` and 8 hex digits of a hash of the full name, so it stays valid
/// and distinct.
pub fn config_name(namespace: &str, service: &str, port: &str, protocol: Protocol) -> String {
    let full = match protocol {
        Protocol::Tcp => format!("{namespace}.{service}.{port}"),
        Protocol::Udp => format!("{namespace}.{service}.{port}.udp"),
    };
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == full && clean.len() <= 63 {
        return clean;
    }
    let head: String = clean.chars().take(54).collect();
    format!("{head}_{:08x}", fnv1a(full.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    fn settings() -> KubeSettings {
        KubeSettings::new(None, &["198.18.0.100/30"], None).unwrap()
    }

    /// A Service as the API server returns it.
    fn service(ns: &str, name: &str, created: &str, ports: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": format!("uid-{ns}-{name}"),
                "resourceVersion": "1234",
                "creationTimestamp": created,
            },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "podlb.io/vip",
                "selector": {"app": name},
                "ports": ports,
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster",
                "allocateLoadBalancerNodePorts": false,
                "sessionAffinity": "None"
            },
            "status": {"loadBalancer": {}}
        })
    }

    /// A Service with one named port `http` 80 → targetPort `web`.
    fn web(ns: &str, name: &str, created: &str) -> Value {
        service(
            ns,
            name,
            created,
            json!([{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"}]),
        )
    }

    fn slice(ns: &str, svc: &str, name: &str, ports: Value, endpoints: Value) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": ns,
                "generateName": format!("{svc}-"),
                "labels": {
                    "kubernetes.io/service-name": svc,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
                },
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc, "uid": "x"}]
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports
        })
    }

    fn ep(addr: &str, conditions: Value) -> Value {
        json!({
            "addresses": [addr],
            "conditions": conditions,
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("pod-{addr}"), "uid": "p"}
        })
    }

    fn ready() -> Value {
        json!({"ready": true, "serving": true, "terminating": false})
    }

    fn http_slice(ns: &str, svc: &str, name: &str, port: u16, addrs: &[&str]) -> Value {
        let eps: Vec<Value> = addrs.iter().map(|a| ep(a, ready())).collect();
        slice(
            ns,
            svc,
            name,
            json!([{"name": "http", "protocol": "TCP", "port": port}]),
            Value::Array(eps),
        )
    }

    fn with_status(mut svc: Value, ips: &[&str]) -> Value {
        let ingress: Vec<Value> = ips
            .iter()
            .map(|i| json!({"ip": i, "ipMode": IP_MODE}))
            .collect();
        svc["status"] = json!({"loadBalancer": {"ingress": ingress}});
        svc
    }

    fn annotate(mut svc: Value, key: &str, val: &str) -> Value {
        svc["metadata"]["annotations"] = json!({ key: val });
        svc
    }

    fn run(services: &[Value], slices: &[Value]) -> Reconciled {
        reconcile(services, slices, &settings(), &Allocations::new())
    }

    fn reasons(r: &Reconciled) -> Vec<(&str, ProblemReason)> {
        r.problems
            .iter()
            .map(|p| (p.name.as_str(), p.reason))
            .collect()
    }

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-02T00:00:00Z";
    const T2: &str = "2026-01-03T00:00:00Z";

    #[test]
    fn only_load_balancers_of_our_class_are_served() {
        let mut other_class = web("default", "other", T0);
        other_class["spec"]["loadBalancerClass"] = json!("service.k8s.aws/nlb");
        let mut no_class = web("default", "noclass", T0);
        no_class["spec"]
            .as_object_mut()
            .unwrap()
            .remove("loadBalancerClass");
        let mut cluster_ip = web("default", "cip", T0);
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        let other_class = with_status(other_class, &["203.0.113.9"]);
        let r = run(
            &[
                other_class,
                web("default", "mine", T0),
                no_class,
                cluster_ip,
            ],
            &[],
        );
        assert_eq!(r.ignored, 3);
        assert_eq!(r.services.len(), 1);
        assert_eq!(r.services[0].name, "default.mine.http");
        assert_eq!(r.services[0].vip, ip("198.18.0.100"));
        assert_eq!(r.services[0].port, 80);
        assert_eq!(r.services[0].mode, Mode::Nat);
        assert_eq!(r.services[0].table_size, DEFAULT_TABLE_SIZE);
        // The other class's status is never touched.
        assert_eq!(r.status.len(), 1);
        assert_eq!(r.status[0].name, "mine");
        assert!(r.problems.is_empty());
    }

    #[test]
    fn vip_from_spec_annotation_and_pool() {
        let mut a = web("default", "a", T0);
        a["spec"]["loadBalancerIP"] = json!("198.18.0.102");
        let b = annotate(web("default", "b", T1), ANNOTATION_VIP, "198.18.0.101");
        let c = web("default", "c", T2);
        let d = web("default", "d", T2);
        let r = run(&[a, b, c, d], &[]);
        let vips: Vec<_> = r.allocations.iter().collect();
        assert_eq!(
            vips,
            vec![
                ("default", "a", ip("198.18.0.102")),
                ("default", "b", ip("198.18.0.101")),
                ("default", "c", ip("198.18.0.100")),
                ("default", "d", ip("198.18.0.103")),
            ]
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn outside_pool_and_in_use_are_problems_and_nothing_else_breaks() {
        let outside = annotate(web("default", "outside", T0), ANNOTATION_VIP, "203.0.113.1");
        let first = annotate(web("default", "first", T0), ANNOTATION_VIP, "198.18.0.101");
        // Younger, asks for the same address.
        let mut second = web("default", "second", T1);
        second["spec"]["loadBalancerIP"] = json!("198.18.0.101");
        let fine = web("default", "fine", T2);
        let r = run(&[second, fine, outside, first], &[]);
        assert_eq!(
            reasons(&r),
            vec![
                ("outside", ProblemReason::VipOutsidePool),
                ("second", ProblemReason::VipInUse)
            ]
        );
        assert!(r.problems[0].message.contains("198.18.0.100/30"));
        assert!(r.problems[1].message.contains("default/first"));
        assert_eq!(r.problems[1].reason.as_str(), "VIPInUse");
        let names: Vec<_> = r.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["default.fine.http", "default.first.http"]);
        assert_eq!(
            r.allocations.get("default", "fine"),
            Some(ip("198.18.0.100"))
        );
        assert_eq!(r.allocations.get("default", "second"), None);
        // The refused ones have no status to clear: no write for them.
        assert!(r.status.iter().all(|s| s.ip.is_some()));
    }

    #[test]
    fn a_request_for_another_services_held_vip_is_in_use() {
        let old = web("default", "old", T0);
        let r1 = run(std::slice::from_ref(&old), &[]);
        assert_eq!(
            r1.allocations.get("default", "old"),
            Some(ip("198.18.0.100"))
        );
        // The newcomer is *older* by timestamp but the address is held.
        let thief = annotate(
            web("default", "thief", "2025-01-01T00:00:00Z"),
            ANNOTATION_VIP,
            "198.18.0.100",
        );
        let r2 = reconcile(&[thief, old], &[], &settings(), &r1.allocations);
        assert_eq!(reasons(&r2), vec![("thief", ProblemReason::VipInUse)]);
        assert_eq!(
            r2.allocations.get("default", "old"),
            Some(ip("198.18.0.100"))
        );
    }

    #[test]
    fn contradictory_or_unparsable_requests_are_bad_spec() {
        let mut both = annotate(web("default", "both", T0), ANNOTATION_VIP, "198.18.0.101");
        both["spec"]["loadBalancerIP"] = json!("198.18.0.102");
        let both = with_status(both, &["198.18.0.101"]);
        let junk = annotate(web("default", "junk", T0), ANNOTATION_VIP, "not-an-ip");
        let r = run(&[both, junk], &[]);
        assert_eq!(
            reasons(&r),
            vec![
                ("both", ProblemReason::BadSpec),
                ("junk", ProblemReason::BadSpec)
            ]
        );
        assert!(r.services.is_empty());
        // The stale status of the unserved Service is cleared.
        assert_eq!(
            r.status,
            vec![StatusUpdate {
                namespace: "default".into(),
                name: "both".into(),
                ip: None
            }]
        );
        // A Service whose spec cannot be read at all.
        let mut broken = web("default", "broken", T0);
        broken["spec"]["ports"] = json!([{"name": "http", "port": "eighty"}]);
        let r = run(&[broken, web("default", "ok", T0)], &[]);
        assert_eq!(reasons(&r), vec![("broken", ProblemReason::BadSpec)]);
        assert_eq!(r.services.len(), 1);
    }

    #[test]
    fn allocations_are_sticky_across_calls_and_restarts() {
        let r1 = run(&[web("default", "b", T1)], &[]);
        assert_eq!(r1.allocations.get("default", "b"), Some(ip("198.18.0.100")));
        // An older Service appears: b keeps .100, a gets the next one.
        let r2 = reconcile(
            &[web("default", "a", T0), web("default", "b", T1)],
            &[],
            &settings(),
            &r1.allocations,
        );
        assert_eq!(r2.allocations.get("default", "b"), Some(ip("198.18.0.100")));
        assert_eq!(r2.allocations.get("default", "a"), Some(ip("198.18.0.101")));
        // After a restart (no previous allocations) the status is honoured.
        let a = with_status(web("default", "a", T0), &["198.18.0.103"]);
        let b = with_status(web("default", "b", T1), &["198.18.0.100"]);
        let r3 = run(&[a, b], &[]);
        assert_eq!(r3.allocations.get("default", "a"), Some(ip("198.18.0.103")));
        assert_eq!(r3.allocations.get("default", "b"), Some(ip("198.18.0.100")));
        assert!(r3.status.is_empty());
        // A status address outside the pools is not honoured.
        let c = with_status(web("default", "c", T0), &["203.0.113.7"]);
        let r4 = run(&[c], &[]);
        assert_eq!(r4.allocations.get("default", "c"), Some(ip("198.18.0.100")));
        assert_eq!(r4.status[0].ip, Some(ip("198.18.0.100")));
        // A deleted Service frees its VIP.
        let r5 = reconcile(
            &[web("default", "b", T1)],
            &[],
            &settings(),
            &r2.allocations,
        );
        assert_eq!(r5.allocations.len(), 1);
    }

    #[test]
    fn pool_exhaustion() {
        let svcs: Vec<Value> = (0..5)
            .map(|i| {
                web(
                    "default",
                    &format!("s{i}"),
                    &format!("2026-01-0{}T00:00:00Z", i + 1),
                )
            })
            .collect();
        let r = run(&svcs, &[]);
        assert_eq!(r.allocations.len(), 4);
        assert_eq!(reasons(&r), vec![("s4", ProblemReason::PoolExhausted)]);
        assert!(r.problems[0].message.contains("kubernetes.vip_pools"));
        // A second pool is used once the first is full.
        let s = KubeSettings::new(None, &["198.18.0.100/30", "198.18.1.0/32"], None).unwrap();
        let r = reconcile(&svcs, &[], &s, &Allocations::new());
        assert!(r.problems.is_empty());
        assert_eq!(r.allocations.get("default", "s4"), Some(ip("198.18.1.0")));
    }

    #[test]
    fn named_and_numbered_target_ports() {
        let svc = service(
            "shop",
            "api",
            T0,
            json!([
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
                {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": 9100}
            ]),
        );
        // The controller resolved `web` per Pod: this slice's Pods use 8080.
        let s1 = slice(
            "shop",
            "api",
            "api-abc",
            json!([
                {"name": "metrics", "protocol": "TCP", "port": 9100},
                {"name": "http", "protocol": "TCP", "port": 8080}
            ]),
            json!([ep("10.244.1.5", ready())]),
        );
        // Other Pods name the port differently: 8081; no metrics port.
        let s2 = slice(
            "shop",
            "api",
            "api-def",
            json!([{"name": "http", "protocol": "TCP", "port": 8081}]),
            json!([ep("10.244.2.5", ready())]),
        );
        let r = run(&[svc], &[s1, s2]);
        let http = &r.services[0];
        assert_eq!((http.name.as_str(), http.port), ("shop.api.http", 80));
        let addrs: Vec<_> = http.backends.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, vec![sa("10.244.1.5:8080"), sa("10.244.2.5:8081")]);
        assert!(http.backends.iter().all(|b| b.weight == 1));
        let metrics = &r.services[1];
        assert_eq!(
            (metrics.name.as_str(), metrics.port),
            ("shop.api.metrics", 9090)
        );
        let addrs: Vec<_> = metrics.backends.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, vec![sa("10.244.1.5:9100")]);
        assert_eq!(http.vip, metrics.vip);
    }

    #[test]
    fn unnamed_port_uses_the_slices_only_port() {
        let svc = service(
            "default",
            "one",
            T0,
            json!([{"protocol": "TCP", "port": 80, "targetPort": 8080}]),
        );
        // The controller writes `name: ""` for an unnamed port; some writers omit it.
        let s1 = slice(
            "default",
            "one",
            "one-a",
            json!([{"name": "", "protocol": "TCP", "port": 8080}]),
            json!([ep("10.244.1.1", ready())]),
        );
        let s2 = slice(
            "default",
            "one",
            "one-b",
            json!([{"port": 8080}]),
            json!([ep("10.244.1.2", ready())]),
        );
        let r = run(&[svc], &[s1, s2]);
        assert_eq!(r.services[0].name, "default.one.80");
        let addrs: Vec<_> = r.services[0].backends.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, vec![sa("10.244.1.1:8080"), sa("10.244.1.2:8080")]);
    }

    #[test]
    fn unready_and_terminating_endpoints() {
        let s = slice(
            "default",
            "web",
            "web-abc",
            json!([{"name": "http", "protocol": "TCP", "port": 8080}]),
            json!([
                ep("10.244.0.1", ready()),
                ep("10.244.0.2", json!({})), // `ready` absent: ready
                ep(
                    "10.244.0.3",
                    json!({"ready": false, "serving": false, "terminating": false})
                ),
                ep(
                    "10.244.0.4",
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
                ep(
                    "10.244.0.5",
                    json!({"ready": false, "serving": false, "terminating": true})
                ),
                // A writer that leaves `ready` true while terminating.
                ep("10.244.0.6", json!({"ready": true, "terminating": true})),
            ]),
        );
        let r = run(&[web("default", "web", T0)], &[s]);
        let addrs: Vec<_> = r.services[0].backends.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, vec![sa("10.244.0.1:8080"), sa("10.244.0.2:8080")]);
        assert_eq!(
            r.draining["default.web.http"],
            vec![
                sa("10.244.0.4:8080"),
                sa("10.244.0.5:8080"),
                sa("10.244.0.6:8080")
            ]
        );
    }

    #[test]
    fn multiple_slices_per_service() {
        let r = run(
            &[web("default", "web", T0), web("other", "web", T1)],
            &[
                http_slice(
                    "default",
                    "web",
                    "web-a",
                    8080,
                    &["10.244.0.2", "10.244.0.1"],
                ),
                http_slice(
                    "default",
                    "web",
                    "web-b",
                    8080,
                    &["10.244.0.3", "10.244.0.1"],
                ),
                // Same Service name, other namespace.
                http_slice("other", "web", "web-c", 8080, &["10.244.9.9"]),
                // Another Service in the same namespace.
                http_slice("default", "api", "api-a", 8080, &["10.244.8.8"]),
                // IPv6 and FQDN slices are not served.
                {
                    let mut v6 = http_slice("default", "web", "web-v6", 8080, &[]);
                    v6["addressType"] = json!("IPv6");
                    v6["endpoints"] = json!([ep("fd00::1", ready())]);
                    v6
                },
                // A terminating copy of a ready address (transition): ready wins.
                slice(
                    "default",
                    "web",
                    "web-d",
                    json!([{"name": "http", "protocol": "TCP", "port": 8080}]),
                    json!([ep(
                        "10.244.0.3",
                        json!({"ready": false, "terminating": true})
                    )]),
                ),
            ],
        );
        let addrs: Vec<_> = r.services[0].backends.iter().map(|b| b.addr).collect();
        assert_eq!(r.services[0].name, "default.web.http");
        assert_eq!(
            addrs,
            vec![
                sa("10.244.0.1:8080"),
                sa("10.244.0.2:8080"),
                sa("10.244.0.3:8080")
            ]
        );
        assert!(r.draining.is_empty());
        assert_eq!(r.services[1].name, "other.web.http");
        assert_eq!(r.services[1].backends[0].addr, sa("10.244.9.9:8080"));
    }

    /// A Service with DNS on TCP and UDP 53 (names as CoreDNS's Service).
    fn dns_service(ns: &str, name: &str, created: &str) -> Value {
        service(
            ns,
            name,
            created,
            json!([
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53}
            ]),
        )
    }

    #[test]
    fn udp_ports_are_served_as_udp_services() {
        // The EndpointSlice controller writes one entry per Service port,
        // with its protocol. A UDP entry named like a TCP Service port (and
        // the reverse) must not be taken for it.
        let sl = slice(
            "kube-system",
            "dns",
            "dns-1",
            json!([
                {"name": "dns", "protocol": "UDP", "port": 5353},
                {"name": "dns-tcp", "protocol": "TCP", "port": 5354},
                {"name": "dns", "protocol": "TCP", "port": 9},
                {"name": "dns-tcp", "protocol": "UDP", "port": 9}
            ]),
            json!([
                ep("10.244.1.2", ready()),
                ep(
                    "10.244.1.3",
                    json!({"ready": false, "serving": false, "terminating": false})
                ),
                ep(
                    "10.244.1.4",
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
            ]),
        );
        let r = run(&[dns_service("kube-system", "dns", T0)], &[sl]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let got: Vec<_> = r
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.protocol, s.vip, s.port))
            .collect();
        let vip = std::net::IpAddr::from(ip("198.18.0.100"));
        assert_eq!(
            got,
            vec![
                ("kube-system.dns.dns-tcp", Protocol::Tcp, vip, 53),
                ("kube-system.dns.dns.udp", Protocol::Udp, vip, 53),
            ]
        );
        let addrs = |i: usize| -> Vec<std::net::SocketAddr> {
            r.services[i].backends.iter().map(|b| b.addr).collect()
        };
        assert_eq!(addrs(0), vec![sa("10.244.1.2:5354")]);
        // Readiness and draining as for TCP.
        assert_eq!(addrs(1), vec![sa("10.244.1.2:5353")]);
        assert_eq!(
            r.draining["kube-system.dns.dns.udp"],
            vec![sa("10.244.1.4:5353")]
        );
        assert_eq!(
            r.draining["kube-system.dns.dns-tcp"],
            vec![sa("10.244.1.4:5354")]
        );
        // One VIP, one status write.
        assert_eq!(r.status.len(), 1);
        assert_eq!(r.allocations.len(), 1);
    }

    #[test]
    fn an_unnamed_udp_port_takes_the_slices_only_port_if_it_is_udp() {
        let svc = service(
            "default",
            "syslog",
            T0,
            json!([{"protocol": "UDP", "port": 514, "targetPort": 5514}]),
        );
        let udp = slice(
            "default",
            "syslog",
            "syslog-a",
            json!([{"name": "", "protocol": "UDP", "port": 5514}]),
            json!([ep("10.244.1.1", ready())]),
        );
        // Protocol absent means TCP: not this port's.
        let tcp = slice(
            "default",
            "syslog",
            "syslog-b",
            json!([{"port": 5514}]),
            json!([ep("10.244.1.2", ready())]),
        );
        let r = run(&[svc], &[udp, tcp]);
        assert_eq!(r.services.len(), 1);
        let c = &r.services[0];
        assert_eq!(
            (c.name.as_str(), c.protocol, c.port),
            ("default.syslog.514.udp", Protocol::Udp, 514)
        );
        let addrs: Vec<_> = c.backends.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, vec![sa("10.244.1.1:5514")]);
        assert_eq!(c.mss_clamp, None);
    }

    #[test]
    fn sctp_ports_are_a_problem_and_the_others_still_served() {
        let svc = service(
            "default",
            "sig",
            T0,
            json!([
                {"name": "sctp", "protocol": "SCTP", "port": 9999},
                {"name": "dns", "protocol": "UDP", "port": 53},
                {"name": "http", "protocol": "TCP", "port": 80}
            ]),
        );
        let r = run(&[svc], &[]);
        let names: Vec<_> = r.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["default.sig.dns.udp", "default.sig.http"]);
        assert_eq!(
            reasons(&r),
            vec![("sig", ProblemReason::UnsupportedProtocol)]
        );
        assert!(
            r.problems[0].message.contains("SCTP 9999"),
            "{}",
            r.problems[0].message
        );
        assert_eq!(r.problems[0].reason.as_str(), "UnsupportedProtocol");
        assert_eq!(r.status[0].ip, Some(ip("198.18.0.100")));
    }

    #[test]
    fn udp_ports_get_no_tcp_or_http_health_check() {
        use crate::model::CheckKind;
        let annotated = annotate(
            dns_service("default", "a", T0),
            ANNOTATION_HEALTH_CHECK,
            "http:/healthz",
        );
        let plain = dns_service("default", "p", T0);
        let mut s = KubeSettings::new(None, &["198.18.0.100/30"], None).unwrap();
        s.health_check = Some(HealthCheck::default());
        let r = reconcile(&[annotated, plain], &[], &s, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let check = |n: &str| {
            r.services
                .iter()
                .find(|c| c.name == n)
                .unwrap()
                .health_check
                .clone()
                .map(|h| h.kind)
        };
        assert!(matches!(
            check("default.a.dns-tcp"),
            Some(CheckKind::Http { .. })
        ));
        assert_eq!(check("default.p.dns-tcp"), Some(CheckKind::Tcp));
        assert_eq!(check("default.a.dns.udp"), None);
        assert_eq!(check("default.p.dns.udp"), None);
        // A check that probes UDP is kept.
        let dns = CheckKind::Dns {
            name: "who.podlb.test".into(),
        };
        let c = HealthCheck {
            kind: dns.clone(),
            ..HealthCheck::default()
        };
        assert_eq!(
            check_for(Some(&c), None, Protocol::Udp).map(|h| h.kind),
            Some(dns)
        );
    }

    #[test]
    fn tcp_53_and_udp_53_of_two_services_share_a_vip() {
        let tcp = annotate(
            service(
                "default",
                "dns-tcp",
                T0,
                json!([{"name": "dns", "protocol": "TCP", "port": 53}]),
            ),
            ANNOTATION_SHARED_IP,
            "dns",
        );
        let udp = annotate(
            service(
                "default",
                "dns-udp",
                T1,
                json!([{"name": "dns", "protocol": "UDP", "port": 53}]),
            ),
            ANNOTATION_SHARED_IP,
            "dns",
        );
        // A third on UDP 53 clashes with dns-udp and gets its own address.
        let udp2 = annotate(
            service(
                "default",
                "dns-udp2",
                T2,
                json!([{"name": "dns", "protocol": "UDP", "port": 53}]),
            ),
            ANNOTATION_SHARED_IP,
            "dns",
        );
        let r = run(&[tcp, udp, udp2], &[]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let vip = |n: &str| r.allocations.get("default", n);
        assert_eq!(vip("dns-tcp"), Some(ip("198.18.0.100")));
        assert_eq!(
            vip("dns-udp"),
            Some(ip("198.18.0.100")),
            "joins its partner"
        );
        assert_eq!(vip("dns-udp2"), Some(ip("198.18.0.101")));
        let got: BTreeSet<_> = r
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.vip, s.port, s.protocol))
            .collect();
        assert_eq!(
            got,
            BTreeSet::from([
                (
                    "default.dns-tcp.dns",
                    ip("198.18.0.100").into(),
                    53,
                    Protocol::Tcp
                ),
                (
                    "default.dns-udp.dns.udp",
                    ip("198.18.0.100").into(),
                    53,
                    Protocol::Udp
                ),
                (
                    "default.dns-udp2.dns.udp",
                    ip("198.18.0.101").into(),
                    53,
                    Protocol::Udp
                ),
            ])
        );

        // A request for the partner's VIP with the other protocol is granted;
        // with the same protocol it is in use.
        let tcp = with_status(
            annotate(
                service(
                    "default",
                    "dns-tcp",
                    T0,
                    json!([{"name": "dns", "protocol": "TCP", "port": 53}]),
                ),
                ANNOTATION_SHARED_IP,
                "dns",
            ),
            &["198.18.0.100"],
        );
        let mut udp = annotate(
            service(
                "default",
                "dns-udp",
                T1,
                json!([{"name": "dns", "protocol": "UDP", "port": 53}]),
            ),
            ANNOTATION_SHARED_IP,
            "dns",
        );
        udp["spec"]["loadBalancerIP"] = json!("198.18.0.100");
        let mut tcp2 = annotate(
            service(
                "default",
                "dns-tcp2",
                T2,
                json!([{"name": "dns", "port": 53}]),
            ),
            ANNOTATION_SHARED_IP,
            "dns",
        );
        tcp2["spec"]["loadBalancerIP"] = json!("198.18.0.100");
        let r = run(&[tcp, udp, tcp2], &[]);
        assert_eq!(
            r.allocations.get("default", "dns-udp"),
            Some(ip("198.18.0.100"))
        );
        assert_eq!(reasons(&r), vec![("dns-tcp2", ProblemReason::VipInUse)]);
    }

    #[test]
    fn mode_annotation() {
        let dsr = annotate(web("default", "d", T0), ANNOTATION_MODE, "dsr");
        let bogus = annotate(web("default", "x", T0), ANNOTATION_MODE, "fast");
        let r = run(&[dsr, bogus], &[]);
        assert_eq!(r.services[0].mode, Mode::Dsr);
        assert_eq!(r.services[1].mode, Mode::Nat);
        assert_eq!(reasons(&r), vec![("x", ProblemReason::BadSpec)]);
        let s = KubeSettings::new(None, &["198.18.0.100/30"], Some(Mode::Dsr)).unwrap();
        let r = reconcile(&[web("default", "w", T0)], &[], &s, &Allocations::new());
        assert_eq!(r.services[0].mode, Mode::Dsr);
    }

    #[test]
    fn health_check_annotation_and_default() {
        use crate::model::{CheckKind, HealthCheck};
        let http = annotate(
            web("default", "h", T0),
            ANNOTATION_HEALTH_CHECK,
            "http:/healthz",
        );
        let none = annotate(web("default", "n", T0), ANNOTATION_HEALTH_CHECK, "none");
        let bad = annotate(web("default", "x", T0), ANNOTATION_HEALTH_CHECK, "icmp");
        let plain = web("default", "p", T0);
        let mut s = KubeSettings::new(None, &["198.18.0.100/30"], None).unwrap();
        // Without [kubernetes.health_check]: readiness only, unless annotated.
        let r = reconcile(
            &[http.clone(), none.clone(), plain.clone()],
            &[],
            &s,
            &Allocations::new(),
        );
        let by = |r: &Reconciled, n: &str| {
            r.services
                .iter()
                .find(|c| c.name.contains(&format!(".{n}.")))
                .unwrap()
                .health_check
                .clone()
        };
        assert!(matches!(
            by(&r, "h").map(|h| h.kind),
            Some(CheckKind::Http { ref path, expect_status: 200 }) if path == "/healthz"
        ));
        assert_eq!(by(&r, "n"), None);
        assert_eq!(by(&r, "p"), None);
        // With a default: it applies where there is no annotation; a bad
        // annotation is a problem and falls back to the default.
        s.health_check = Some(HealthCheck::default());
        let r = reconcile(&[none, plain, bad], &[], &s, &Allocations::new());
        assert_eq!(by(&r, "n"), None);
        assert_eq!(by(&r, "p"), Some(HealthCheck::default()));
        assert_eq!(by(&r, "x"), Some(HealthCheck::default()));
        assert_eq!(reasons(&r), vec![("x", ProblemReason::BadSpec)]);
    }

    #[test]
    fn a_check_applies_to_ports_of_its_protocol() {
        use crate::model::{CheckKind, HealthCheck};
        let dns = HealthCheck {
            kind: CheckKind::Dns {
                name: "example.com".into(),
            },
            ..HealthCheck::default()
        };
        let tcp = HealthCheck::default();
        // Ports are TCP: a UDP check gives way to the default, or to none.
        assert_eq!(
            check_for(Some(&dns), Some(&tcp), Protocol::Tcp),
            Some(tcp.clone())
        );
        assert_eq!(check_for(Some(&dns), None, Protocol::Tcp), None);
        assert_eq!(check_for(Some(&dns), Some(&dns), Protocol::Tcp), None);
        assert_eq!(
            check_for(Some(&dns), Some(&tcp), Protocol::Udp),
            Some(dns.clone())
        );
        assert_eq!(check_for(Some(&tcp), Some(&dns), Protocol::Udp), Some(dns));
        // "none" stays none.
        assert_eq!(check_for(None, Some(&tcp), Protocol::Tcp), None);

        let svc = annotate(
            web("default", "d", T0),
            ANNOTATION_HEALTH_CHECK,
            "dns:example.com",
        );
        let mut s = KubeSettings::new(None, &["198.18.0.100/30"], None).unwrap();
        let r = reconcile(std::slice::from_ref(&svc), &[], &s, &Allocations::new());
        assert_eq!(r.services[0].health_check, None);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        s.health_check = Some(tcp.clone());
        let r = reconcile(&[svc], &[], &s, &Allocations::new());
        assert_eq!(r.services[0].health_check, Some(tcp));
    }

    #[test]
    fn vxlan_backends_get_their_nodes_vtep() {
        use crate::k8s::nodes::{ANNOTATION_BACKEND_DATA, ANNOTATION_PUBLIC_IP};
        let node = |name: &str, ip: &str, mac: &str| {
            json!({"metadata": {"name": name, "annotations": {
                ANNOTATION_PUBLIC_IP: ip,
                ANNOTATION_BACKEND_DATA: format!("{{\"VNI\":7,\"VtepMAC\":\"{mac}\"}}"),
            }}})
        };
        let nodes = vec![
            node("n1", "198.19.0.11", "02:00:00:00:01:11"),
            node("n2", "198.19.0.12", "02:00:00:00:01:12"),
        ];
        let svc = annotate(web("default", "v", T0), ANNOTATION_MODE, "vxlan");
        let on = |ip: &str, node: Option<&str>| {
            let mut e = ep(ip, ready());
            match node {
                Some(n) => e["nodeName"] = json!(n),
                None => {
                    e.as_object_mut().unwrap().remove("nodeName");
                }
            }
            e
        };
        let sl = slice(
            "default",
            "v",
            "v-1",
            json!([{"name": "http", "protocol": "TCP", "port": 80}]),
            json!([
                on("198.19.10.2", Some("n1")),
                on("198.19.20.2", Some("n2")),
                on("198.19.30.2", Some("gone")),
                on("198.19.40.2", None),
            ]),
        );
        let r = reconcile_with_nodes(&[svc], &[sl], &nodes, &settings(), &Allocations::new());
        let c = &r.services[0];
        assert_eq!(c.mode, Mode::Vxlan);
        assert_eq!(
            (c.vni, c.mss_clamp),
            (7, Some(crate::model::DEFAULT_VXLAN_MSS))
        );
        let got: Vec<_> = c
            .backends
            .iter()
            .map(|b| {
                (
                    b.addr.to_string(),
                    b.vtep.unwrap().to_string(),
                    b.vtep_mac.unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "198.19.10.2:80".to_string(),
                    "198.19.0.11".to_string(),
                    "02:00:00:00:01:11".to_string()
                ),
                (
                    "198.19.20.2:80".to_string(),
                    "198.19.0.12".to_string(),
                    "02:00:00:00:01:12".to_string()
                ),
            ]
        );
        assert_eq!(
            reasons(&r),
            vec![("v", ProblemReason::NoVtep), ("v", ProblemReason::NoVtep)]
        );
        assert!(
            r.problems.iter().any(|p| p.message.contains("node gone")),
            "{:?}",
            r.problems
        );
        assert!(r.problems.iter().any(|p| p.message.contains("no nodeName")));
    }

    #[test]
    fn output_is_deterministic_regardless_of_input_order() {
        let services = vec![
            web("b", "web", T0),
            web("a", "web", T0),
            annotate(web("a", "req", T1), ANNOTATION_VIP, "198.18.0.103"),
            service(
                "c",
                "multi",
                T0,
                json!([{"name": "z", "port": 2}, {"name": "y", "port": 1}, {"name": "u", "protocol": "UDP", "port": 3}]),
            ),
            web("d", "late", T2),
            web("e", "later", T2),
        ];
        let slices = vec![
            http_slice("a", "web", "w1", 8080, &["10.0.0.2", "10.0.0.1"]),
            http_slice("a", "web", "w2", 8080, &["10.0.0.3"]),
            http_slice("b", "web", "w3", 8080, &["10.0.1.1"]),
        ];
        let forward = run(&services, &slices);
        let mut rs = services.clone();
        rs.reverse();
        let mut rsl = slices.clone();
        rsl.reverse();
        assert_eq!(run(&rs, &rsl), forward);
        rs.rotate_left(2);
        rsl.rotate_left(1);
        assert_eq!(run(&rs, &rsl), forward);
        let names: Vec<_> = forward.services.iter().map(|s| s.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // d and e find the pool full (the UDP port is served).
        assert_eq!(forward.problems.len(), 2);
        assert!(names.contains(&"c.multi.u.udp"), "{names:?}");
    }

    #[test]
    fn status_updates_only_when_needed() {
        let r1 = run(&[web("default", "w", T0)], &[]);
        assert_eq!(
            r1.status,
            vec![StatusUpdate {
                namespace: "default".into(),
                name: "w".into(),
                ip: Some(ip("198.18.0.100"))
            }]
        );
        // Once written, nothing more to write.
        let written = with_status(web("default", "w", T0), &["198.18.0.100"]);
        let r2 = reconcile(
            std::slice::from_ref(&written),
            &[],
            &settings(),
            &r1.allocations,
        );
        assert!(r2.status.is_empty());
        // A wrong or extra entry is rewritten.
        let wrong = with_status(web("default", "w", T0), &["198.18.0.100", "198.18.0.101"]);
        let r3 = reconcile(&[wrong], &[], &settings(), &r1.allocations);
        assert_eq!(r3.status[0].ip, Some(ip("198.18.0.100")));
        // The right address with ipMode VIP (or none) is rewritten to Proxy:
        // with VIP, kube-proxy would take the VIP's traffic on every node.
        for mode in [json!("VIP"), Value::Null] {
            let mut vip_mode = with_status(web("default", "w", T0), &["198.18.0.100"]);
            vip_mode["status"]["loadBalancer"]["ingress"][0]["ipMode"] = mode.clone();
            let r = reconcile(&[vip_mode], &[], &settings(), &r1.allocations);
            assert_eq!(r.status.len(), 1, "ipMode {mode}");
        }
        // Moving the request to a refused address clears the status.
        let moved = annotate(written, ANNOTATION_VIP, "203.0.113.5");
        let r4 = reconcile(&[moved], &[], &settings(), &r1.allocations);
        assert_eq!(reasons(&r4), vec![("w", ProblemReason::VipOutsidePool)]);
        assert_eq!(r4.status[0].ip, None);
        assert!(r4.allocations.is_empty());
    }

    #[test]
    fn config_names_are_valid_and_distinct() {
        let tcp = Protocol::Tcp;
        assert_eq!(
            config_name("default", "web", "http", tcp),
            "default.web.http"
        );
        assert_eq!(
            config_name("default", "web", "http", Protocol::Udp),
            "default.web.http.udp"
        );
        let long_ns = "n".repeat(63);
        let a = config_name(&long_ns, &"s".repeat(63), "http", tcp);
        let b = config_name(&long_ns, &"s".repeat(63), "https", tcp);
        let c = config_name(&long_ns, &"s".repeat(63), "http", Protocol::Udp);
        assert_ne!(a, c);
        for n in [&a, &b, &c] {
            assert_eq!(n.len(), 63);
            assert!(n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        }
        assert_ne!(a, b);
        let odd = config_name("default", "wéb", "http", tcp);
        assert!(
            odd.is_ascii() && odd.starts_with("default.w_b.http_"),
            "{odd}"
        );
    }

    fn tcp_port(n: i64) -> Value {
        json!([{"name": format!("p{n}"), "protocol": "TCP", "port": n}])
    }

    #[test]
    fn services_with_one_sharing_key_and_distinct_ports_share_a_vip() {
        let a = annotate(
            service("default", "a", T0, tcp_port(80)),
            ANNOTATION_SHARED_IP,
            "k",
        );
        let b = annotate(
            service("default", "b", T1, tcp_port(443)),
            ANNOTATION_SHARED_IP,
            "k",
        );
        // Same key, same port: may not share; gets its own address.
        let c = annotate(
            service("default", "c", T2, tcp_port(80)),
            ANNOTATION_SHARED_IP,
            "k",
        );
        let r = run(&[a, b, c], &[]);
        let vip = |n: &str| r.allocations.get("default", n);
        assert_eq!(vip("a"), Some(ip("198.18.0.100")));
        assert_eq!(vip("b"), Some(ip("198.18.0.100")), "joins its partner");
        assert_eq!(vip("c"), Some(ip("198.18.0.101")));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let listeners: BTreeSet<(std::net::IpAddr, u16)> =
            r.services.iter().map(|s| (s.vip, s.port)).collect();
        assert_eq!(listeners.len(), 3);

        // A request for a held VIP without the key (or with another) is in use.
        let a = annotate(
            service("default", "a", T0, tcp_port(80)),
            ANNOTATION_SHARED_IP,
            "k",
        );
        let mut d = annotate(
            service("default", "d", T1, tcp_port(443)),
            ANNOTATION_SHARED_IP,
            "other",
        );
        d["spec"]["loadBalancerIP"] = json!("198.18.0.100");
        let mut e = service("default", "e", T2, tcp_port(8080));
        e["spec"]["loadBalancerIP"] = json!("198.18.0.100");
        let r = run(&[with_status(a, &["198.18.0.100"]), d, e], &[]);
        assert_eq!(
            reasons(&r),
            vec![
                ("d", ProblemReason::VipInUse),
                ("e", ProblemReason::VipInUse)
            ]
        );
        assert!(
            r.problems[0].message.contains(ANNOTATION_SHARED_IP),
            "{}",
            r.problems[0].message
        );

        // A request with the key and a free port joins; sticky after a restart.
        let a = annotate(
            service("default", "a", T0, tcp_port(80)),
            ANNOTATION_SHARED_IP,
            "k",
        );
        let mut f = annotate(
            service("default", "f", T1, tcp_port(53)),
            ANNOTATION_SHARED_IP,
            "k",
        );
        f["spec"]["loadBalancerIP"] = json!("198.18.0.100");
        let r = run(
            &[
                with_status(a, &["198.18.0.100"]),
                with_status(f, &["198.18.0.100"]),
            ],
            &[],
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.allocations.get("default", "f"), Some(ip("198.18.0.100")));
    }

    #[test]
    fn source_ranges_and_session_affinity_reach_the_service() {
        let mut s = web("default", "web", T0);
        s["spec"]["loadBalancerSourceRanges"] =
            json!(["198.18.1.0/24", "198.18.2.7/16", "2001:2::/48"]);
        s["spec"]["sessionAffinity"] = json!("ClientIP");
        let r = run(
            &[s],
            &[http_slice(
                "default",
                "web",
                "web-1",
                8080,
                &["198.18.0.21"],
            )],
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let c = &r.services[0];
        let ranges: Vec<String> = c.source_ranges.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            ranges,
            ["198.18.1.0/24", "198.18.0.0/16"],
            "host bits masked, IPv6 left out"
        );
        assert_eq!(c.affinity, Affinity::ClientIp);
        assert!(c.admits(ip("198.18.200.1").into()) && !c.admits(ip("198.19.0.1").into()));

        // The annotation spelling, read when the field is empty.
        let s = annotate(
            web("default", "web", T0),
            ANNOTATION_SOURCE_RANGES,
            "198.18.5.0/24, 198.18.6.0/24",
        );
        let r = run(&[s], &[]);
        assert_eq!(r.services[0].source_ranges.len(), 2);
        assert_eq!(r.services[0].affinity, Affinity::None);

        // Only IPv6 ranges, or garbage: not served (never opened to all), status cleared.
        for bad in [json!(["2001:2::/48"]), json!(["nonsense"])] {
            let mut s = with_status(web("default", "web", T0), &["198.18.0.100"]);
            s["spec"]["loadBalancerSourceRanges"] = bad;
            let r = run(&[s], &[]);
            assert!(r.services.is_empty());
            assert_eq!(reasons(&r), vec![("web", ProblemReason::BadSpec)]);
            assert_eq!(r.status.len(), 1);
            assert_eq!(r.status[0].ip, None);
        }
    }

    #[test]
    fn vip_pools_from_the_crd_serve_the_namespaces_and_labels_they_select() {
        let pools = [
            json!({"metadata": {"name": "front"}, "spec": {"addresses": ["198.18.0.200-198.18.0.201"],
                    "namespaces": ["shop"], "serviceSelector": {"matchLabels": {"tier": "front"}}}}),
            json!({"metadata": {"name": "manual"}, "spec": {"addresses": ["198.18.0.210/32"], "autoAssign": false}}),
        ];
        let mut front = web("shop", "front", T0);
        front["metadata"]["labels"] = json!({"tier": "front"});
        // Both config-pool and VIPPool serve it; the config pool comes first.
        // Fill the config pool so the VIPPool is used.
        let fill: Vec<Value> = (0..4)
            .map(|i| web("default", &format!("f{i}"), T0))
            .collect();
        let mut all = fill.clone();
        all.push(front);
        let other = web("shop", "back", T1); // no label: not served by "front"
        all.push(other);
        let mut manual = web("default", "manual", T2);
        manual["spec"]["loadBalancerIP"] = json!("198.18.0.210");
        all.push(manual);
        let mut wrong = web("default", "wrong", T2);
        wrong["spec"]["loadBalancerIP"] = json!("198.18.0.201"); // "front" does not serve it
        all.push(wrong);
        let r = reconcile_full(&all, &[], &[], &pools, &settings(), &Allocations::new());
        assert_eq!(r.allocations.get("shop", "front"), Some(ip("198.18.0.200")));
        assert_eq!(r.allocations.get("shop", "back"), None);
        assert_eq!(
            r.allocations.get("default", "manual"),
            Some(ip("198.18.0.210")),
            "by request only"
        );
        assert_eq!(r.allocations.get("default", "wrong"), None);
        let mut got = reasons(&r);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("back", ProblemReason::PoolExhausted),
                ("wrong", ProblemReason::VipOutsidePool)
            ]
        );
        // Without the VIPPools, the same Service is exhausted; sticky with them.
        let r2 = reconcile_full(&all, &[], &[], &pools, &settings(), &r.allocations);
        assert_eq!(
            r2.allocations.get("shop", "front"),
            Some(ip("198.18.0.200"))
        );
        let bad = [json!({"metadata": {"name": "x"}, "spec": {"addresses": ["nope"]}})];
        let r3 = reconcile_full(&all, &[], &[], &bad, &settings(), &Allocations::new());
        assert_eq!(r3.pool_problems.len(), 1);
        assert_eq!(r3.allocations.get("shop", "front"), None);
    }
}
