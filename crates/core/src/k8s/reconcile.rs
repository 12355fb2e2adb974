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
//! [`ANNOTATION_VIP`] annotation, which may list one address of each
//! family, comma-separated (`198.18.0.100,2001:2::100`); both set and
//! different for one family is a `BadSpec`, and so is a request of a
//! family the Service does not have. Addresses are given out per family
//! in three passes, Services taken oldest first
//! (`metadata.creationTimestamp`, then namespace/name):
//! 1. *sticky*: a Service keeps the VIP of a family it holds — its entry
//!    in the previous [`Allocations`], or, after a restart, the first
//!    `status.loadBalancer.ingress[].ip` of that family — if that address
//!    is still inside a pool and agrees with its request (if any);
//! 2. *requested*: a requested VIP outside every pool is refused
//!    (`VIPOutsidePool`), one held by another Service is refused
//!    (`VIPInUse`, naming the holder);
//! 3. *pool*: the rest get the lowest free address of the family, pools in
//!    configured order (`PoolExhausted` when none is left). Pools are
//!    walked lazily from their lowest address, so an IPv6 /48 costs no
//!    more than a /30.
//!
//! A Service whose request is refused is not served at all (rather than
//! served on some other address than the one asked for); its status is
//! cleared and a [`Problem`] says why. Nothing else is affected.
//!
//! ## Dual-stack (KEP-563)
//! A Service gets one VIP per family in `spec.ipFamilies` (the API server
//! fills it in on create, primary family first; absent: `[IPv4]`), each
//! from the pools of that family, subject to `spec.ipFamilyPolicy`:
//! - `SingleStack`: the one family; no pool of it serving the Service is
//!   an `IPFamilyNotServed` problem and the Service is not served.
//! - `PreferDualStack`: the families that have a pool serving the Service
//!   (and, for vxlan, IPv4 only: VXLAN carries IPv4); a family without one
//!   is left out quietly. A family whose pools are full is a
//!   `PoolExhausted` problem, and the Service is served on the other.
//! - `RequireDualStack`: both or nothing. A family without a pool is an
//!   `IPFamilyNotServed` problem; a family that cannot be allocated
//!   (pools full, request refused) is that family's problem. Either way
//!   the Service is not served and holds no VIP of either family: an
//!   address the other family got is given back and the allocation is
//!   run again without the Service, so the address goes to the next
//!   Service in line in the same call.
//!
//! The status lists the VIPs in `spec.ipFamilies` order, one
//! `ingress` entry each.
//!
//! ## Ports and names
//! Each TCP or UDP port of a Service becomes one [`ServiceConfig`] of that
//! protocol per VIP, named by [`config_name_for`]: `<namespace>.
//! <service>.<port name, or number if unnamed>`, with `.udp` appended for a
//! UDP port (so TCP 53 and UDP 53 of one Service are two services with
//! distinct names; TCP names are as they were before UDP was served) and
//! `.v6` for the IPv6 VIP's (IPv4 names are as they were before IPv6 was
//! served).
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
//! [`SERVICE_NAME_LABEL`]` = <service>` whose `addressType` is the VIP's
//! family (`IPv4` slices feed the IPv4 VIP, `IPv6` slices the IPv6 one;
//! `FQDN` slices none). The port
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
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::Value;

use super::objects::{self, EndpointSlice};
use super::pools::{Family, Pool};
use super::settings::KubeSettings;
use crate::maglev::DEFAULT_TABLE_SIZE;
use crate::model::HealthCheck;
use crate::model::{Affinity, BackendConfig, Mode, Prefix, Protocol, ServiceConfig};

pub use super::objects::SERVICE_NAME_LABEL;

/// Annotation requesting a VIP (alternative to `spec.loadBalancerIP`,
/// which is deprecated upstream): one address, or one of each family
/// separated by a comma.
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
    /// An IP family the Service must have (`SingleStack`,
    /// `RequireDualStack`) has no pool serving the Service, or cannot be
    /// carried in its mode (IPv6 in vxlan).
    FamilyNotServed,
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
            ProblemReason::FamilyNotServed => "IPFamilyNotServed",
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

/// A status write: `status.loadBalancer.ingress` becomes one `{ip, ipMode}`
/// per VIP, in `spec.ipFamilies` order, or `[]` when `ips` is empty (the
/// Service is podlb's but is not served).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
}

/// VIPs held by Services, keyed by namespace/name: one per family, the
/// primary family's first. Feed the last result back into [`reconcile`]
/// so VIPs stay put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    by_service: BTreeMap<(String, String), Vec<IpAddr>>,
}

impl Allocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// The Service's first (primary family's) VIP.
    pub fn get(&self, namespace: &str, name: &str) -> Option<IpAddr> {
        self.vips(namespace, name).first().copied()
    }

    /// The Service's VIP of `family`.
    pub fn get_family(&self, namespace: &str, name: &str, family: Family) -> Option<IpAddr> {
        self.vips(namespace, name)
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
    }

    /// The Service's VIPs, primary family first (empty: none).
    pub fn vips(&self, namespace: &str, name: &str) -> &[IpAddr] {
        self.by_service
            .get(&(namespace.to_string(), name.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// Gives the Service `ip`, replacing its VIP of that family (if any)
    /// in place, else after the VIPs it has.
    pub fn insert(&mut self, namespace: &str, name: &str, ip: IpAddr) {
        let v = self
            .by_service
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        match v.iter_mut().find(|a| Family::of(**a) == Family::of(ip)) {
            Some(a) => *a = ip,
            None => v.push(ip),
        }
    }

    /// Services holding a VIP.
    pub fn len(&self) -> usize {
        self.by_service.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty()
    }

    /// `(namespace, name, vip)` for every VIP, sorted by namespace/name,
    /// a Service's primary family first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, IpAddr)> {
        self.by_service
            .iter()
            .flat_map(|((ns, n), ips)| ips.iter().map(move |ip| (ns.as_str(), n.as_str(), *ip)))
    }

    /// `(namespace, name, vips)` per Service, sorted by namespace/name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &str, &[IpAddr])> {
        self.by_service
            .iter()
            .map(|((ns, n), ips)| (ns.as_str(), n.as_str(), ips.as_slice()))
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

/// `spec.ipFamilyPolicy` (KEP-563).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Single,
    Prefer,
    Require,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Single => "SingleStack",
            Policy::Prefer => "PreferDualStack",
            Policy::Require => "RequireDualStack",
        }
    }
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
    /// `spec.ipFamilies`, primary first.
    families: Vec<Family>,
    policy: Policy,
    /// The families VIPs are allocated for: `families`, less those a
    /// `PreferDualStack` Service does without (no pool serves them).
    wanted: Vec<Family>,
    /// Left out of the allocation: a family it must have cannot be had
    /// (module documentation, "Dual-stack"). Not served.
    out: bool,
    /// Per family ([`Family::index`]): requested, held, allocated.
    request: [Option<IpAddr>; 2],
    held: [Option<IpAddr>; 2],
    vip: [Option<IpAddr>; 2],
    /// [`ANNOTATION_SHARED_IP`], if set and not empty.
    share: Option<String>,
    /// Admitted clients (`spec.loadBalancerSourceRanges`), both families.
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

    /// A wanted family's request that was refused (the Service is then not
    /// served at all).
    fn refused(&self) -> bool {
        self.wanted
            .iter()
            .any(|f| self.request[f.index()].is_some() && self.vip[f.index()].is_none())
    }

    /// Whether the Service is served with the VIPs it got: every wanted
    /// family has one (at least one for `PreferDualStack`) and no request
    /// was refused.
    fn served(&self) -> bool {
        if self.bad || self.out || self.refused() {
            return false;
        }
        let got = |f: &Family| self.vip[f.index()].is_some();
        match self.policy {
            Policy::Prefer => self.wanted.iter().any(got),
            _ => !self.wanted.is_empty() && self.wanted.iter().all(got),
        }
    }

    /// The VIPs it holds, in `spec.ipFamilies` order.
    fn vips(&self) -> Vec<IpAddr> {
        self.families
            .iter()
            .filter_map(|f| self.vip[f.index()])
            .collect()
    }

    /// `[IPv4, IPv6]` as the API writes it.
    fn families_str(&self) -> String {
        let f: Vec<&str> = self.families.iter().map(|f| f.as_str()).collect();
        format!("[{}]", f.join(", "))
    }
}

/// `spec.ipFamilies` and `spec.ipFamilyPolicy`, as the API server leaves
/// them on create (KEP-563): `SingleStack` has one family, the dual-stack
/// policies up to two (`RequireDualStack` always two), primary first.
/// Objects no API server wrote may lack them: no families means `[IPv4]`
/// (and, for a dual-stack policy, IPv6 after it); no policy means
/// `SingleStack` for one family and `PreferDualStack` for two.
fn ip_families(svc: &objects::Service) -> Result<(Vec<Family>, Policy), String> {
    let mut families = Vec::new();
    for s in &svc.spec.ip_families {
        let f = Family::parse(s).ok_or_else(|| {
            format!("spec.ipFamilies lists {s:?}, which is not \"IPv4\" or \"IPv6\"")
        })?;
        if families.contains(&f) {
            return Err(format!("spec.ipFamilies lists {s} twice"));
        }
        families.push(f);
    }
    let policy = match svc.spec.ip_family_policy.as_deref() {
        None if families.len() > 1 => Policy::Prefer,
        None | Some("SingleStack") => Policy::Single,
        Some("PreferDualStack") => Policy::Prefer,
        Some("RequireDualStack") => Policy::Require,
        Some(other) => {
            return Err(format!(
                "spec.ipFamilyPolicy {other:?} is not \"SingleStack\", \"PreferDualStack\" or \"RequireDualStack\""
            ))
        }
    };
    if families.is_empty() {
        families.push(Family::V4);
        if policy != Policy::Single {
            families.push(Family::V6);
        }
    }
    match policy {
        Policy::Single => families.truncate(1),
        Policy::Require if families.len() == 1 => families.push(families[0].other()),
        _ => {}
    }
    Ok((families, policy))
}

/// `spec.loadBalancerSourceRanges` (or its annotation), both families, host
/// bits masked (the API server accepts them; kube-proxy masks them), and
/// where they came from. Each VIP gets the ranges of its family
/// ([`ranges_for`]).
fn source_ranges(svc: &objects::Service) -> Result<(&'static str, Vec<Prefix>), String> {
    let (what, list): (&str, Vec<&str>) = if svc.spec.load_balancer_source_ranges.is_empty() {
        match svc.metadata.annotations.get(ANNOTATION_SOURCE_RANGES) {
            Some(a) => (
                ANNOTATION_SOURCE_RANGES,
                a.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            None => return Ok(("", Vec::new())),
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
        let bad =
            || format!("{what}: {r:?} is not a CIDR like \"198.18.0.0/16\" or \"2001:2::/48\"");
        let (addr, len) = match r.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (*r, None),
        };
        let base: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        let (n, host) = match base {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32 - u32::from(prefix)),
            IpAddr::V6(a) => (u128::from(a), 128 - u32::from(prefix)),
        };
        let masked = if host >= 128 {
            0
        } else {
            n & !((1u128 << host) - 1)
        };
        let base = match base {
            IpAddr::V4(_) => {
                IpAddr::from(std::net::Ipv4Addr::from(u32::try_from(masked).unwrap_or(0)))
            }
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(masked)),
        };
        out.push(Prefix { base, prefix });
    }
    Ok((what, out))
}

/// The source ranges of the Service's VIP of `family`: the list's ranges
/// of that family; if it has none (and is not empty), the other family's,
/// which admit no client of this one (the data plane matches a client
/// against ranges of its own family only), so the VIP admits no client
/// rather than every client.
fn ranges_for(ranges: &[Prefix], family: Family) -> Vec<Prefix> {
    let own: Vec<Prefix> = ranges
        .iter()
        .filter(|r| Family::of(r.base) == family)
        .copied()
        .collect();
    if own.is_empty() {
        ranges.to_vec()
    } else {
        own
    }
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

/// The VIPs a Service asks for, per family, from `spec.loadBalancerIP`
/// (one address) and the annotation (one, or one of each family,
/// comma-separated). A request of a family not in `families` is refused.
fn requested_vips(
    svc: &objects::Service,
    families: &[Family],
) -> Result<[Option<IpAddr>; 2], String> {
    let parse = |what: &str, s: &str| -> Result<IpAddr, String> {
        s.trim().parse().map_err(|_| {
            format!("{what} {s:?} is not an IP address; write it like \"198.18.0.100\" or \"2001:2::100\"")
        })
    };
    let mut spec = [None; 2];
    if let Some(s) = svc
        .spec
        .load_balancer_ip
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        let ip = parse("spec.loadBalancerIP", s)?;
        spec[Family::of(ip).index()] = Some(ip);
    }
    let mut annotation: [Option<IpAddr>; 2] = [None; 2];
    if let Some(list) = svc.metadata.annotations.get(ANNOTATION_VIP) {
        let what = format!("annotation {ANNOTATION_VIP}");
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip = parse(&what, s)?;
            let slot = &mut annotation[Family::of(ip).index()];
            if let Some(first) = slot {
                return Err(format!(
                    "{what} lists two {} addresses ({first}, {ip}); give at most one of each family",
                    Family::of(ip)
                ));
            }
            *slot = Some(ip);
        }
    }
    let mut out = [None; 2];
    for f in [Family::V4, Family::V6] {
        out[f.index()] = match (spec[f.index()], annotation[f.index()]) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "spec.loadBalancerIP {a} and annotation {ANNOTATION_VIP} {b} disagree; set only one"
                ))
            }
            (a, b) => a.or(b),
        };
        if let Some(ip) = out[f.index()].filter(|_| !families.contains(&f)) {
            let listed: Vec<&str> = families.iter().map(|f| f.as_str()).collect();
            return Err(format!(
                "the requested VIP {ip} is an {f} address, but spec.ipFamilies is [{}]; request addresses of the Service's families",
                listed.join(", ")
            ));
        }
    }
    Ok(out)
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
        let spec = ip_families(&svc).and_then(|(families, policy)| {
            let request = requested_vips(&svc, &families)?;
            Ok((families, policy, request))
        });
        let (families, policy, request) = match spec {
            Ok(s) => s,
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
                    families: Vec::new(),
                    policy: Policy::Single,
                    wanted: Vec::new(),
                    out: false,
                    request: [None; 2],
                    held: [None; 2],
                    vip: [None; 2],
                    share: None,
                    ranges: Vec::new(),
                    affinity: Affinity::None,
                    pools: Vec::new(),
                });
                continue;
            }
        };
        let (what_ranges, ranges, bad_ranges) = match source_ranges(&svc) {
            Ok((what, r)) => (what, r, false),
            Err(msg) => {
                problems.push(problem(ns, name, ProblemReason::BadSpec, msg));
                ("", Vec::new(), true)
            }
        };
        // A non-empty list must admit some client of the Service's
        // families: an empty one would admit everyone.
        let bad_ranges = bad_ranges
            || match families.as_slice() {
                [only]
                    if !ranges.is_empty()
                        && !ranges.iter().any(|r| Family::of(r.base) == *only) =>
                {
                    problems.push(problem(
                        ns,
                        name,
                        ProblemReason::BadSpec,
                        format!(
                            "{what_ranges} lists only {} ranges, which admit no {only} client; the Service is not served rather than opened to everyone",
                            only.other()
                        ),
                    ));
                    true
                }
                _ => false,
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
        let from_status: Vec<IpAddr> = svc
            .ingress_ips()
            .into_iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        let mut held = [None; 2];
        for &f in &families {
            let i = f.index();
            held[i] = previous
                .get_family(ns, name, f)
                .or_else(|| from_status.iter().copied().find(|ip| Family::of(*ip) == f))
                .filter(|ip| {
                    pools
                        .iter()
                        .any(|p| p.contains(*ip) && p.serves(ns, &svc.metadata.labels))
                })
                .filter(|ip| request[i].is_none_or(|r| r == *ip))
                .filter(|_| !bad_ranges);
        }
        ours.push(Ours {
            namespace: ns.to_string(),
            name: name.to_string(),
            created: svc.metadata.creation_timestamp.clone().unwrap_or_default(),
            svc,
            mode,
            health,
            bad: bad_ranges,
            families,
            policy,
            wanted: Vec::new(),
            out: false,
            request,
            held,
            vip: [None; 2],
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
        if o.bad {
            continue;
        }
        if let Some(p) = choose_families(o, &pools) {
            problems.push(p);
        }
    }
    // A Service that ends up unserved gives back the VIP of its other
    // family, and the allocation is run again without it (module
    // documentation, "Dual-stack"). Each round leaves out at least one
    // more Service, so this ends.
    let mut kept = Vec::new();
    loop {
        for o in ours.iter_mut() {
            o.vip = [None; 2];
        }
        let mut run = Vec::new();
        allocate(&mut ours, &pools, &mut run);
        let partial: Vec<usize> = (0..ours.len())
            .filter(|&i| !ours[i].served() && ours[i].vip.iter().any(Option::is_some))
            .collect();
        if partial.is_empty() {
            problems.append(&mut kept);
            problems.append(&mut run);
            break;
        }
        for i in partial {
            ours[i].out = true;
            let o = &ours[i];
            kept.extend(
                run.iter()
                    .filter(|p| p.namespace == o.namespace && p.name == o.name)
                    .cloned(),
            );
        }
    }
    // What a family's pool exhaustion means for a dual-stack Service.
    for p in problems
        .iter_mut()
        .filter(|p| p.reason == ProblemReason::PoolExhausted)
    {
        let Some(o) = ours
            .iter()
            .find(|o| o.namespace == p.namespace && o.name == p.name)
        else {
            continue;
        };
        let served: Vec<&str> = o
            .families
            .iter()
            .filter(|f| o.vip[f.index()].is_some())
            .map(|f| f.as_str())
            .collect();
        match o.policy {
            Policy::Require => p.message.push_str(
                " (ipFamilyPolicy RequireDualStack: the Service is not served until it has a VIP of each family)",
            ),
            Policy::Prefer if o.served() => p.message.push_str(&format!(
                " (ipFamilyPolicy PreferDualStack: served on {} alone meanwhile)",
                served.join(", ")
            )),
            _ => {}
        }
    }

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
        let vips = if o.served() { o.vips() } else { Vec::new() };
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
                for &vip in &vips {
                    let family = Family::of(vip);
                    let cname = config_name_for(ns, name, &label, protocol, family);
                    let (ready, drain) = endpoints(slices, port_name, proto, family);
                    if !drain.is_empty() {
                        draining.insert(cname.clone(), drain);
                    }
                    let mut vni = crate::model::DEFAULT_VNI;
                    let backends = if o.mode == Mode::Vxlan {
                        // IPv4 only: the IPv6 family is never wanted in vxlan.
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
                        vip,
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
                        source_ranges: ranges_for(&o.ranges, family),
                        affinity: o.affinity,
                        udp_hash: Default::default(),
                        protocol,
                    });
                }
            }
        }
        for &vip in &vips {
            allocations.insert(ns, name, vip);
        }
        let current = o.svc.ingress();
        // ipMode Proxy: podlb carries the VIP's traffic itself, so
        // kube-proxy must not program the VIP on the nodes (KEP-1860;
        // with VIP, or no ipMode, every node DNATs the VIP to the
        // endpoints and podlb is bypassed). API servers before 1.30 drop
        // the field; the writer does not repeat a write the watch then
        // shows without it (docs/kubernetes.md, "ipMode").
        let up_to_date = current.len() == vips.len()
            && current.iter().zip(&vips).all(|((ip, mode), vip)| {
                ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()) == Some(*vip)
                    && mode.as_deref() == Some(IP_MODE)
            });
        if !up_to_date {
            status.push(StatusUpdate {
                namespace: ns.to_string(),
                name: name.to_string(),
                ips: vips,
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

/// The names of the pools `o` may draw from, for messages: all that serve
/// it, or those of them with addresses of `family`.
fn pool_names(o: &Ours, pools: &[Pool], family: Option<Family>) -> String {
    let n: Vec<String> = o
        .pools
        .iter()
        .filter(|&&p| family.is_none_or(|f| pools[p].has(f)))
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
}

/// Sets `o.wanted` from its families, policy, mode and the pools that
/// serve it (module documentation, "Dual-stack"); a family it must have
/// and cannot is a problem, and leaves it out of the allocation.
fn choose_families(o: &mut Ours, pools: &[Pool]) -> Option<Problem> {
    // Why family `f` cannot be had, if it cannot. A requested address
    // outside every pool is left to the allocation (VIPOutsidePool).
    let why_not = |f: Family| -> Option<String> {
        if f == Family::V6 && o.mode == Mode::Vxlan {
            return Some(
                "mode vxlan carries IPv4 only (use podlb.io/mode nat or dsr for IPv6)".into(),
            );
        }
        let has_pool = o.pools.iter().any(|&p| pools[p].has(f));
        (!has_pool && o.request[f.index()].is_none()).then(|| {
            format!(
                "no pool with {f} addresses serves this Service (serving pools: {}); add an {f} prefix to kubernetes.vip_pools or a VIPPool",
                pool_names(o, pools, None)
            )
        })
    };
    let missing: Vec<(Family, String)> = o
        .families
        .iter()
        .filter_map(|&f| why_not(f).map(|w| (f, w)))
        .collect();
    let requested_missing = missing.iter().any(|(f, _)| o.request[f.index()].is_some());
    let fatal = match o.policy {
        Policy::Prefer => missing.len() == o.families.len() || requested_missing,
        _ => !missing.is_empty(),
    };
    if !fatal {
        o.wanted = o
            .families
            .iter()
            .copied()
            .filter(|f| !missing.iter().any(|(m, _)| m == f))
            .collect();
        return None;
    }
    o.out = true;
    let why: Vec<String> = missing
        .into_iter()
        .map(|(f, w)| format!("{f}: {w}"))
        .collect();
    Some(problem(
        &o.namespace,
        &o.name,
        ProblemReason::FamilyNotServed,
        format!(
            "spec.ipFamilies {} with ipFamilyPolicy {} cannot be served: {}; the Service is not served",
            o.families_str(),
            o.policy.as_str(),
            why.join("; ")
        ),
    ))
}

/// The three allocation passes (module documentation, "VIPs"), each for
/// every family a Service wants. A VIP may have several holders when they
/// share it ([`ANNOTATION_SHARED_IP`]).
fn allocate(ours: &mut [Ours], pools: &[Pool], problems: &mut Vec<Problem>) {
    // Whether ours[i] may hold `ip`: inside a pool that serves it.
    let holds = |o: &Ours, ip: IpAddr| o.pools.iter().any(|&p| pools[p].contains(ip));
    let mut taken: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    // Whether ours[i] may join the holders of `ip` (none, or all sharing).
    let fits = |ours: &[Ours], taken: &BTreeMap<IpAddr, Vec<usize>>, i: usize, ip: IpAddr| {
        taken.get(&ip).is_none_or(|h| {
            let holders: Vec<&Ours> = h.iter().map(|&j| &ours[j]).collect();
            ours[i].shares_with(&holders)
        })
    };
    let allocating = |o: &Ours| !o.bad && !o.out;
    // 1. sticky
    for i in 0..ours.len() {
        if !allocating(&ours[i]) {
            continue;
        }
        for f in ours[i].wanted.clone() {
            if let Some(h) = ours[i].held[f.index()] {
                if fits(ours, &taken, i, h) {
                    taken.entry(h).or_default().push(i);
                    ours[i].vip[f.index()] = Some(h);
                }
            }
        }
    }
    // 2. requested
    for i in 0..ours.len() {
        if !allocating(&ours[i]) {
            continue;
        }
        for f in ours[i].wanted.clone() {
            let (Some(r), None) = (ours[i].request[f.index()], ours[i].vip[f.index()]) else {
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
                        pool_names(o, pools, None)
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
                ours[i].vip[f.index()] = Some(r);
            }
        }
    }
    // 3. pool: a sharing Service first joins an address its partners hold
    // (as MetalLB does); otherwise the lowest free address of the family
    // in the first auto-assigned pool serving it that has one. Addresses
    // are only ever taken in this pass, so one cursor per pool and
    // family, past the taken ones, finds each next free address without
    // rescanning (and never walks more of a huge IPv6 pool than there are
    // Services).
    let mut cursors: Vec<_> = pools
        .iter()
        .map(|p| {
            [
                p.addresses(Family::V4).peekable(),
                p.addresses(Family::V6).peekable(),
            ]
        })
        .collect();
    for i in 0..ours.len() {
        // A refused request leaves the whole Service unserved: nothing
        // from the pools for its other family either.
        if !allocating(&ours[i]) || ours[i].refused() {
            continue;
        }
        for f in ours[i].wanted.clone() {
            let k = f.index();
            if ours[i].request[k].is_some() || ours[i].vip[k].is_some() {
                continue;
            }
            let partner = ours[i].share.as_ref().and_then(|_| {
                taken.keys().copied().find(|ip| {
                    Family::of(*ip) == f && holds(&ours[i], *ip) && fits(ours, &taken, i, *ip)
                })
            });
            let mut free = || {
                ours[i]
                    .pools
                    .iter()
                    .filter(|&&p| pools[p].auto_assign)
                    .find_map(|&p| {
                        let c = &mut cursors[p][k];
                        while c.next_if(|a| taken.contains_key(a)).is_some() {}
                        c.peek().copied()
                    })
            };
            match partner.or_else(&mut free) {
                Some(a) => {
                    taken.entry(a).or_default().push(i);
                    ours[i].vip[k] = Some(a);
                }
                None => {
                    let o = &ours[i];
                    problems.push(problem(
                        &o.namespace,
                        &o.name,
                        ProblemReason::PoolExhausted,
                        format!(
                            "no free {f} VIP left in the auto-assigned pools that serve this Service [{}]; add a pool to kubernetes.vip_pools or a VIPPool, or delete an unused Service",
                            pool_names(o, pools, Some(f))
                        ),
                    ));
                }
            }
        }
    }
}

/// Ready endpoints (with their node) and draining (terminating) addresses
/// of the Service port named `port_name` (empty when unnamed) and of
/// protocol `proto` (`TCP` or `UDP`, as the API spells it), from the
/// slices of `family`.
fn endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: &str,
    family: Family,
) -> (Vec<(SocketAddr, Option<String>)>, Vec<SocketAddr>) {
    let mut ready = std::collections::BTreeMap::new();
    let mut terminating = BTreeSet::new();
    for s in slices {
        if s.address_type != family.as_str() {
            continue;
        }
        let Some(port) = slice_port(s, port_name, proto) else {
            continue;
        };
        for e in &s.endpoints {
            let ip = match family {
                Family::V4 => e.ipv4().map(IpAddr::V4),
                Family::V6 => e.ipv6().map(IpAddr::V6),
            };
            let Some(ip) = ip else { continue };
            let addr = SocketAddr::new(ip, port);
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

/// The data-plane service name of a Service port on its IPv4 VIP:
/// [`config_name_for`] with [`Family::V4`].
pub fn config_name(namespace: &str, service: &str, port: &str, protocol: Protocol) -> String {
    config_name_for(namespace, service, port, protocol, Family::V4)
}

/// The data-plane service name of a Service port on its VIP of `family`:
/// `<namespace>.<service>.<port>` for TCP and `<namespace>.<service>.<port>.udp`
/// for UDP, where `<port>` is the port's name or, if unnamed, its number,
/// with `.v6` appended on the IPv6 VIP.
/// Characters outside `[A-Za-z0-9-_.]` become `_`; a result longer than 63
/// characters (or one that needed such a change) is cut to 54 characters
/// plus `_` and 8 hex digits of a hash of the full name, so it stays valid
/// and distinct.
pub fn config_name_for(
    namespace: &str,
    service: &str,
    port: &str,
    protocol: Protocol,
    family: Family,
) -> String {
    let proto = match protocol {
        Protocol::Tcp => "",
        Protocol::Udp => ".udp",
    };
    let fam = match family {
        Family::V4 => "",
        Family::V6 => ".v6",
    };
    let full = format!("{namespace}.{service}.{port}{proto}{fam}");
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

    fn ip(s: &str) -> IpAddr {
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
        assert!(r.status.iter().all(|s| !s.ips.is_empty()));
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
                ips: vec![]
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
        assert_eq!(r4.status[0].ips, vec![ip("198.18.0.100")]);
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
                // An IPv6 slice feeds only an IPv6 VIP (web is IPv4
                // SingleStack); FQDN slices feed nothing.
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
        let vip = ip("198.18.0.100");
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
        assert_eq!(r.status[0].ips, vec![ip("198.18.0.100")]);
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
                ("default.dns-tcp.dns", ip("198.18.0.100"), 53, Protocol::Tcp),
                (
                    "default.dns-udp.dns.udp",
                    ip("198.18.0.100"),
                    53,
                    Protocol::Udp
                ),
                (
                    "default.dns-udp2.dns.udp",
                    ip("198.18.0.101"),
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
                ips: vec![ip("198.18.0.100")]
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
        assert_eq!(r3.status[0].ips, vec![ip("198.18.0.100")]);
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
        assert!(r4.status[0].ips.is_empty());
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
        assert!(c.admits(ip("198.18.200.1")) && !c.admits(ip("198.19.0.1")));

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
            assert!(r.status[0].ips.is_empty());
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

    // ---- dual-stack (KEP-563) ----

    fn dual_settings(pools: &[&str]) -> KubeSettings {
        KubeSettings::new(None, pools, None).unwrap()
    }

    /// `web` with `spec.ipFamilies` and `spec.ipFamilyPolicy` as the API
    /// server leaves them.
    fn web_families(name: &str, created: &str, families: &[&str], policy: &str) -> Value {
        let mut s = web("default", name, created);
        s["spec"]["ipFamilies"] = json!(families);
        s["spec"]["ipFamilyPolicy"] = json!(policy);
        s["spec"]["clusterIPs"] = json!(families
            .iter()
            .map(|f| if *f == "IPv4" {
                "10.96.0.10"
            } else {
                "2001:2:0:96::a"
            })
            .collect::<Vec<_>>());
        s
    }

    fn slice6(svc: &str, name: &str, port: u16, eps: Value) -> Value {
        let mut s = slice(
            "default",
            svc,
            name,
            json!([{"name": "http", "protocol": "TCP", "port": port}]),
            eps,
        );
        s["addressType"] = json!("IPv6");
        s
    }

    fn names(r: &Reconciled) -> Vec<(&str, IpAddr)> {
        r.services
            .iter()
            .map(|s| (s.name.as_str(), s.vip))
            .collect()
    }

    #[test]
    fn a_dual_stack_service_gets_a_vip_of_each_family_primary_first() {
        let st = dual_settings(&["198.18.0.100/30", "2001:2::100/126"]);
        // IPv6 primary: its VIP comes first in the status.
        let svc = web_families("web", T0, &["IPv6", "IPv4"], "RequireDualStack");
        let r = reconcile(std::slice::from_ref(&svc), &[], &st, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            r.allocations.vips("default", "web"),
            [ip("2001:2::100"), ip("198.18.0.100")]
        );
        assert_eq!(r.allocations.get("default", "web"), Some(ip("2001:2::100")));
        assert_eq!(
            r.allocations.get_family("default", "web", Family::V4),
            Some(ip("198.18.0.100"))
        );
        assert_eq!(r.allocations.iter().count(), 2);
        assert_eq!(r.allocations.len(), 1, "one Service");
        // One data-plane service per VIP; the IPv4 name as before.
        assert_eq!(
            names(&r),
            vec![
                ("default.web.http", ip("198.18.0.100")),
                ("default.web.http.v6", ip("2001:2::100")),
            ]
        );
        assert_eq!(
            r.status,
            vec![StatusUpdate {
                namespace: "default".into(),
                name: "web".into(),
                ips: vec![ip("2001:2::100"), ip("198.18.0.100")],
            }]
        );
        // Written back in that order: nothing more to write. In the other
        // order (or one entry short) it is rewritten.
        let written = with_status(svc.clone(), &["2001:2::100", "198.18.0.100"]);
        let r2 = reconcile(std::slice::from_ref(&written), &[], &st, &r.allocations);
        assert!(r2.status.is_empty(), "{:?}", r2.status);
        for stale in [&["198.18.0.100", "2001:2::100"][..], &["2001:2::100"][..]] {
            let s = with_status(svc.clone(), stale);
            let r3 = reconcile(&[s], &[], &st, &r.allocations);
            assert_eq!(r3.status.len(), 1, "{stale:?}");
        }
        // After a restart each family's VIP comes back from the status.
        let older = web_families(
            "older",
            "2025-01-01T00:00:00Z",
            &["IPv4", "IPv6"],
            "PreferDualStack",
        );
        let r4 = reconcile(&[older, written], &[], &st, &Allocations::new());
        assert_eq!(
            r4.allocations.vips("default", "web"),
            [ip("2001:2::100"), ip("198.18.0.100")]
        );
        assert_eq!(
            r4.allocations.vips("default", "older"),
            [ip("198.18.0.101"), ip("2001:2::101")]
        );
    }

    #[test]
    fn single_stack_ipv6_service() {
        let st = dual_settings(&["198.18.0.100/30", "2001:2::100/126"]);
        let svc = web_families("web6", T0, &["IPv6"], "SingleStack");
        let s6 = slice6("web6", "web6-x", 8080, json!([ep("2001:2::21", ready())]));
        let r = reconcile(std::slice::from_ref(&svc), &[s6], &st, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(names(&r), vec![("default.web6.http.v6", ip("2001:2::100"))]);
        assert_eq!(r.services[0].backends[0].addr, sa("[2001:2::21]:8080"));
        assert_eq!(r.status[0].ips, vec![ip("2001:2::100")]);
        // With IPv4 pools only: not served, and the problem says why.
        let r = reconcile(
            &[with_status(svc, &["2001:2::100"])],
            &[],
            &settings(),
            &Allocations::new(),
        );
        assert!(r.services.is_empty());
        assert_eq!(reasons(&r), vec![("web6", ProblemReason::FamilyNotServed)]);
        assert_eq!(r.problems[0].reason.as_str(), "IPFamilyNotServed");
        assert!(
            r.problems[0]
                .message
                .contains("no pool with IPv6 addresses"),
            "{}",
            r.problems[0].message
        );
        assert!(r.status[0].ips.is_empty(), "stale status cleared");
        assert!(r.allocations.is_empty());
    }

    #[test]
    fn prefer_dual_stack_without_an_ipv6_pool_is_ipv4_alone_quietly() {
        let svc = web_families("web", T0, &["IPv4", "IPv6"], "PreferDualStack");
        let s6 = slice6("web", "web-v6", 8080, json!([ep("2001:2::21", ready())]));
        let r = run(
            &[svc],
            &[
                http_slice("default", "web", "web-v4", 8080, &["198.18.0.21"]),
                s6,
            ],
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(names(&r), vec![("default.web.http", ip("198.18.0.100"))]);
        assert_eq!(r.status[0].ips, vec![ip("198.18.0.100")]);
        // Primary IPv6 without an IPv6 pool: served on IPv4.
        let svc = web_families("web", T0, &["IPv6", "IPv4"], "PreferDualStack");
        let r = run(&[svc], &[]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.allocations.vips("default", "web"), [ip("198.18.0.100")]);
        // No pool of either family: that is a problem.
        let st = dual_settings(&["2001:2::100/126"]);
        let mut svc = web_families("web", T0, &["IPv4", "IPv6"], "PreferDualStack");
        svc["metadata"]["annotations"] = json!({ ANNOTATION_MODE: "vxlan" });
        let r = reconcile(&[svc], &[], &st, &Allocations::new());
        assert_eq!(reasons(&r), vec![("web", ProblemReason::FamilyNotServed)]);
        let m = &r.problems[0].message;
        assert!(
            m.contains("IPv4: no pool") && m.contains("vxlan carries IPv4 only"),
            "{m}"
        );
    }

    #[test]
    fn require_dual_stack_without_an_ipv6_pool_is_not_served() {
        let svc = with_status(
            web_families("web", T0, &["IPv4", "IPv6"], "RequireDualStack"),
            &["198.18.0.100"],
        );
        let other = web("default", "other", T1);
        let r = run(&[svc, other], &[]);
        assert_eq!(reasons(&r), vec![("web", ProblemReason::FamilyNotServed)]);
        let m = &r.problems[0].message;
        assert!(
            m.contains("RequireDualStack") && m.contains("IPv6: no pool with IPv6 addresses"),
            "{m}"
        );
        assert!(m.contains("kubernetes.vip_pools"), "{m}");
        // Nothing half-served: no IPv4 VIP either, the stale status cleared,
        // and its old address goes to the next Service.
        assert_eq!(names(&r), vec![("default.other.http", ip("198.18.0.100"))]);
        assert!(r.allocations.vips("default", "web").is_empty());
        let web_status = r.status.iter().find(|s| s.name == "web").unwrap();
        assert!(web_status.ips.is_empty());
    }

    #[test]
    fn require_dual_stack_gives_back_its_ipv4_vip_when_ipv6_is_exhausted() {
        let st = dual_settings(&["198.18.0.100/32", "2001:2::100/128"]);
        // a takes the only IPv6 address; b (RequireDualStack) gets IPv4
        // .100 in the first round but no IPv6, so it is left out and .100
        // goes to c in the same call.
        let a = web_families("a", T0, &["IPv6"], "SingleStack");
        let b = web_families("b", T1, &["IPv4", "IPv6"], "RequireDualStack");
        let c = web_families("c", T2, &["IPv4"], "SingleStack");
        let r = reconcile(&[a, b, c], &[], &st, &Allocations::new());
        assert_eq!(reasons(&r), vec![("b", ProblemReason::PoolExhausted)]);
        let m = &r.problems[0].message;
        assert!(
            m.contains("no free IPv6 VIP") && m.contains("not served until"),
            "{m}"
        );
        assert_eq!(r.allocations.vips("default", "a"), [ip("2001:2::100")]);
        assert!(r.allocations.vips("default", "b").is_empty());
        assert_eq!(r.allocations.vips("default", "c"), [ip("198.18.0.100")]);
        assert!(r.services.iter().all(|s| !s.name.contains(".b.")));
        // Stable on the next call (where the IPv4 pool is now full for b
        // too, and says so).
        let r2 = reconcile(
            &[
                web_families("c", T2, &["IPv4"], "SingleStack"),
                web_families("b", T1, &["IPv4", "IPv6"], "RequireDualStack"),
                web_families("a", T0, &["IPv6"], "SingleStack"),
            ],
            &[],
            &st,
            &r.allocations,
        );
        assert_eq!(r2.allocations, r.allocations);
        assert_eq!(
            reasons(&r2),
            vec![
                ("b", ProblemReason::PoolExhausted),
                ("b", ProblemReason::PoolExhausted)
            ]
        );
        assert!(r2.status.iter().all(|s| s.name != "b"), "{:?}", r2.status);
    }

    #[test]
    fn ipv6_endpoint_slices_become_the_backends_of_the_ipv6_vip() {
        let st = dual_settings(&["198.18.0.100/30", "2001:2::100/126"]);
        let svc = web_families("web", T0, &["IPv4", "IPv6"], "PreferDualStack");
        let slices = [
            http_slice(
                "default",
                "web",
                "web-v4",
                8080,
                &["198.18.0.21", "198.18.0.22"],
            ),
            slice6(
                "web",
                "web-v6",
                8080,
                json!([
                    ep("2001:2::21", ready()),
                    ep(
                        "2001:2::22",
                        json!({"ready": false, "serving": true, "terminating": true})
                    ),
                    ep(
                        "2001:2::23",
                        json!({"ready": false, "serving": false, "terminating": false})
                    ),
                    // Never a backend: IPv4-mapped (the API refuses it) and
                    // an IPv4 address in an IPv6 slice.
                    ep("::ffff:198.18.0.23", ready()),
                    ep("198.18.0.24", ready()),
                ]),
            ),
            // A second IPv6 slice, other port numbering (per-Pod targetPort).
            slice6("web", "web-v6b", 8081, json!([ep("2001:2::24", ready())])),
        ];
        let r = reconcile(&[svc], &slices, &st, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let backends = |n: &str| -> Vec<SocketAddr> {
            r.services
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .backends
                .iter()
                .map(|b| b.addr)
                .collect()
        };
        assert_eq!(
            backends("default.web.http"),
            vec![sa("198.18.0.21:8080"), sa("198.18.0.22:8080")]
        );
        assert_eq!(
            backends("default.web.http.v6"),
            vec![sa("[2001:2::21]:8080"), sa("[2001:2::24]:8081")]
        );
        // Draining per family, under the family's name.
        assert_eq!(
            r.draining,
            BTreeMap::from([(
                "default.web.http.v6".to_string(),
                vec![sa("[2001:2::22]:8080")]
            )])
        );
        let v6 = r.services.iter().find(|s| s.name.ends_with(".v6")).unwrap();
        assert_eq!(v6.vip, ip("2001:2::100"));
        assert_eq!(v6.port, 80);
        // UDP ports get .udp.v6, and long names stay distinct.
        let n = config_name_for("kube-system", "dns", "dns", Protocol::Udp, Family::V6);
        assert_eq!(n, "kube-system.dns.dns.udp.v6");
        let long = "s".repeat(60);
        assert_ne!(
            config_name_for("default", &long, "http", Protocol::Tcp, Family::V4),
            config_name_for("default", &long, "http", Protocol::Tcp, Family::V6)
        );
    }

    #[test]
    fn pool_exhaustion_is_per_family() {
        // Two IPv6 addresses, four IPv4 ones.
        let st = dual_settings(&["198.18.0.100/30", "2001:2::100/127"]);
        let svcs: Vec<Value> = (0..3)
            .map(|i| {
                web_families(
                    &format!("s{i}"),
                    &format!("2026-01-0{}T00:00:00Z", i + 1),
                    &["IPv4", "IPv6"],
                    "PreferDualStack",
                )
            })
            .collect();
        let r = reconcile(&svcs, &[], &st, &Allocations::new());
        assert_eq!(reasons(&r), vec![("s2", ProblemReason::PoolExhausted)]);
        let m = &r.problems[0].message;
        assert!(m.contains("no free IPv6 VIP"), "{m}");
        assert!(m.contains("served on IPv4 alone"), "{m}");
        assert_eq!(
            r.allocations.vips("default", "s1"),
            [ip("198.18.0.101"), ip("2001:2::101")]
        );
        // PreferDualStack: s2 is served on its IPv4 VIP.
        assert_eq!(r.allocations.vips("default", "s2"), [ip("198.18.0.102")]);
        // IPv4 exhaustion does not touch IPv6: two IPv4-only Services fill
        // the IPv4 pool, the fifth Service (IPv6 only) still gets one.
        let mut more = svcs.clone();
        more.push(web_families("v4a", T2, &["IPv4"], "SingleStack"));
        more.push(web_families("v4b", T2, &["IPv4"], "SingleStack"));
        more.push(web_families(
            "v6",
            "2025-12-31T00:00:00Z",
            &["IPv6"],
            "SingleStack",
        ));
        let r = reconcile(&more, &[], &st, &Allocations::new());
        assert_eq!(r.allocations.vips("default", "v6"), [ip("2001:2::100")]);
        assert_eq!(r.allocations.vips("default", "v4a"), [ip("198.18.0.103")]);
        let mut got = reasons(&r);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("s1", ProblemReason::PoolExhausted),
                ("s2", ProblemReason::PoolExhausted),
                ("v4b", ProblemReason::PoolExhausted),
            ]
        );
        // A /48 is never walked: allocating from it is immediate.
        let st = dual_settings(&["198.18.0.0/16", "2001:2::/48"]);
        let many: Vec<Value> = (0..200)
            .map(|i| web_families(&format!("m{i}"), T0, &["IPv6"], "SingleStack"))
            .collect();
        let r = reconcile(&many, &[], &st, &Allocations::new());
        assert_eq!(r.allocations.len(), 200);
        assert!(r.problems.is_empty());
    }

    #[test]
    fn requests_of_either_family() {
        let st = dual_settings(&["198.18.0.100/30", "2001:2::100/126"]);
        let both = annotate(
            web_families("both", T0, &["IPv4", "IPv6"], "RequireDualStack"),
            ANNOTATION_VIP,
            "2001:2::102, 198.18.0.102",
        );
        let mut v6 = web_families("v6", T0, &["IPv6"], "SingleStack");
        v6["spec"]["loadBalancerIP"] = json!("2001:2::103");
        // Only the IPv4 address requested: IPv6 from the pool.
        let half = annotate(
            web_families("half", T1, &["IPv4", "IPv6"], "PreferDualStack"),
            ANNOTATION_VIP,
            "198.18.0.101",
        );
        let r = reconcile(&[both, v6, half], &[], &st, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            r.allocations.vips("default", "both"),
            [ip("198.18.0.102"), ip("2001:2::102")]
        );
        assert_eq!(r.allocations.vips("default", "v6"), [ip("2001:2::103")]);
        assert_eq!(
            r.allocations.vips("default", "half"),
            [ip("198.18.0.101"), ip("2001:2::100")]
        );

        // Refused: a family the Service lacks, two of one family, spec and
        // annotation disagreeing.
        let wrong = annotate(
            web_families("wrong", T0, &["IPv4"], "SingleStack"),
            ANNOTATION_VIP,
            "2001:2::100",
        );
        let twice = annotate(
            web_families("twice", T0, &["IPv4", "IPv6"], "PreferDualStack"),
            ANNOTATION_VIP,
            "198.18.0.100,198.18.0.101",
        );
        let mut clash = annotate(
            web_families("clash", T0, &["IPv4", "IPv6"], "PreferDualStack"),
            ANNOTATION_VIP,
            "2001:2::101",
        );
        clash["spec"]["loadBalancerIP"] = json!("2001:2::102");
        let r = reconcile(&[wrong, twice, clash], &[], &st, &Allocations::new());
        assert!(r.services.is_empty());
        let by: BTreeMap<&str, &str> = r
            .problems
            .iter()
            .map(|p| (p.name.as_str(), p.message.as_str()))
            .collect();
        assert!(by["wrong"].contains("spec.ipFamilies is [IPv4]"), "{by:?}");
        assert!(by["twice"].contains("two IPv4 addresses"), "{by:?}");
        assert!(by["clash"].contains("disagree"), "{by:?}");
        assert!(r
            .problems
            .iter()
            .all(|p| p.reason == ProblemReason::BadSpec));

        // A refused request of one family leaves the Service unserved on
        // both, even PreferDualStack: not served on another address than
        // the one asked for.
        let outside = annotate(
            web_families("outside", T0, &["IPv4", "IPv6"], "PreferDualStack"),
            ANNOTATION_VIP,
            "2001:2::ff",
        );
        let r = reconcile(
            &[with_status(outside, &["198.18.0.100", "2001:2::100"])],
            &[],
            &st,
            &Allocations::new(),
        );
        assert_eq!(
            reasons(&r),
            vec![("outside", ProblemReason::VipOutsidePool)]
        );
        assert!(r.services.is_empty() && r.allocations.is_empty());
        assert!(r.status[0].ips.is_empty());
    }

    #[test]
    fn dual_stack_source_ranges_per_family() {
        let st = dual_settings(&["198.18.0.100/30", "2001:2::100/126"]);
        let mut svc = web_families("web", T0, &["IPv4", "IPv6"], "PreferDualStack");
        svc["spec"]["loadBalancerSourceRanges"] = json!(["198.18.1.0/24", "2001:2:0:1::7/64"]);
        let r = reconcile(std::slice::from_ref(&svc), &[], &st, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let ranges = |n: &str| -> Vec<String> {
            let s = r.services.iter().find(|s| s.name == n).unwrap();
            s.source_ranges.iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(ranges("default.web.http"), ["198.18.1.0/24"]);
        assert_eq!(
            ranges("default.web.http.v6"),
            ["2001:2:0:1::/64"],
            "host bits masked"
        );
        // Only IPv4 ranges: the IPv6 VIP admits no client (not every one).
        svc["spec"]["loadBalancerSourceRanges"] = json!(["198.18.1.0/24"]);
        let r = reconcile(&[svc], &[], &st, &Allocations::new());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let v6 = r.services.iter().find(|s| s.name.ends_with(".v6")).unwrap();
        assert!(!v6.source_ranges.is_empty());
        assert!(!v6.admits(ip("2001:2::1")));
        assert!(r.services[0].admits(ip("198.18.1.9")));
    }
}
