//! The few fields podlb reads from Kubernetes objects, in the JSON shape the
//! API server returns (camelCase, empty fields omitted, occasionally `null`).
//! Unknown fields are ignored; a `null` where a list or map is expected
//! counts as empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// `null` → `T::default()`, for lists and maps the API may send as `null`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectMeta {
    #[serde(default)]
    pub namespace: String,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 in the API's fixed form (`2024-05-01T10:00:00Z`), so it
    /// sorts as a string.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default)]
    pub status: ServiceStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceSpec {
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<ServicePort>,
    /// CIDRs of the clients allowed in; empty: all.
    #[serde(default, deserialize_with = "null_default")]
    pub load_balancer_source_ranges: Vec<String>,
    /// `None` (default) or `ClientIP`.
    #[serde(default)]
    pub session_affinity: Option<String>,
    /// `IPv4` and/or `IPv6`, primary first (KEP-563); the API server fills
    /// it in on create from `ipFamilyPolicy` and the cluster's service
    /// CIDRs. Empty only in objects no API server wrote.
    #[serde(default, deserialize_with = "null_default")]
    pub ip_families: Vec<String>,
    /// `SingleStack`, `PreferDualStack` or `RequireDualStack` (filled in
    /// on create like `ipFamilies`).
    #[serde(default)]
    pub ip_family_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    /// `TCP` when absent (API default).
    #[serde(default)]
    pub protocol: Option<String>,
    pub port: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceStatus {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerStatus>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoadBalancerStatus {
    #[serde(default, deserialize_with = "null_default")]
    pub ingress: Vec<Ingress>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Ingress {
    #[serde(default)]
    pub ip: Option<String>,
    /// `VIP` or `Proxy` (Kubernetes 1.30+; absent on older API servers,
    /// which drop the field).
    #[serde(default)]
    pub ip_mode: Option<String>,
}

impl Service {
    /// `status.loadBalancer.ingress[].ip`, in order (unparsable entries as
    /// `None`).
    pub fn ingress_ips(&self) -> Vec<Option<String>> {
        self.ingress().into_iter().map(|(ip, _)| ip).collect()
    }

    /// `status.loadBalancer.ingress[]` as (ip, ipMode) pairs, in order.
    pub fn ingress(&self) -> Vec<(Option<String>, Option<String>)> {
        self.status
            .load_balancer
            .as_ref()
            .map(|lb| {
                lb.ingress
                    .iter()
                    .map(|i| (i.ip.clone(), i.ip_mode.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Endpoint {
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<String>,
    /// The node that runs the endpoint (VXLAN mode carries packets there).
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub conditions: Conditions,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Conditions {
    /// "A nil value should be interpreted as true" (discovery.k8s.io/v1).
    #[serde(default)]
    pub ready: Option<bool>,
    /// A nil value means false.
    #[serde(default)]
    pub terminating: Option<bool>,
}

impl Endpoint {
    /// Ready to receive new connections: `ready` true or absent and not
    /// terminating. (The API already reports `ready: false` for terminating
    /// endpoints; the second test guards against writers that do not.)
    pub fn is_ready(&self) -> bool {
        self.conditions.ready.unwrap_or(true) && !self.is_terminating()
    }

    pub fn is_terminating(&self) -> bool {
        self.conditions.terminating.unwrap_or(false)
    }

    /// The endpoint's address. The API says all addresses of an endpoint
    /// are fungible and consumers may use only the first, which podlb does
    /// (so an endpoint never counts twice).
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.addresses.first().and_then(|a| a.parse().ok())
    }

    /// The endpoint's (first) address if it is an IPv6 address podlb can
    /// forward to: not IPv4-mapped (whose data-plane form would be an
    /// IPv4 address's; the API server refuses them in `IPv6` slices too),
    /// not unspecified or multicast.
    pub fn ipv6(&self) -> Option<std::net::Ipv6Addr> {
        self.addresses
            .first()
            .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
            .filter(|a| {
                !crate::family::is_v4_mapped(*a) && !a.is_unspecified() && !a.is_multicast()
            })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EndpointPort {
    /// Equal to the Service port's name; empty or absent for an unnamed port.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// Absent means "all ports", which podlb cannot serve.
    #[serde(default)]
    pub port: Option<i64>,
}

/// Parses the EndpointSlices that are usable; malformed ones are skipped
/// (the API server never returns them).
pub(super) fn parse_slices(slices: &[serde_json::Value]) -> Vec<EndpointSlice> {
    slices
        .iter()
        .filter_map(|v| EndpointSlice::deserialize(v).ok())
        .collect()
}

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}
