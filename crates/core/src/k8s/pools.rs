//! VIP pools from the `VIPPool` custom resource (`podlb.io/v1alpha1`,
//! cluster-scoped; deploy/kubernetes/crd-vippool.yaml), beside the config
//! file's `kubernetes.vip_pools`.
//!
//! ```yaml
//! apiVersion: podlb.io/v1alpha1
//! kind: VIPPool
//! metadata: {name: web}
//! spec:
//!   addresses: ["198.18.0.200/29", "198.18.0.220-198.18.0.229"]
//!   autoAssign: true            # false: only Services that request an address get one
//!   namespaces: [shop]          # empty or absent: every namespace
//!   serviceSelector:
//!     matchLabels: {tier: front}
//! ```
//!
//! A Service may hold an address of a pool that *serves* it (its namespace
//! listed or none listed, and its labels matching `matchLabels`); it gets
//! one without asking only from a serving pool with `autoAssign`. The API
//! server validates the schema; what it cannot (an address that does not
//! parse, a range backwards) makes the pool a [`PoolProblem`] and leaves it
//! out, the other pools unaffected.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::Value;

use crate::model::Prefix;

/// One pool: where its addresses are and whom it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `config` for the config file's pools, else the VIPPool's name.
    pub name: String,
    /// Inclusive address ranges, in the order given.
    pub ranges: Vec<(u32, u32)>,
    pub auto_assign: bool,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    /// Every label must be on the Service.
    pub match_labels: BTreeMap<String, String>,
}

/// A VIPPool that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolProblem {
    pub name: String,
    pub message: String,
}

impl Pool {
    /// The config file's pools: every namespace, auto-assigned.
    pub fn from_config(name: &str, prefixes: &[Prefix]) -> Pool {
        Pool {
            name: name.to_string(),
            ranges: prefixes.iter().map(range_of).collect(),
            auto_assign: true,
            namespaces: Vec::new(),
            match_labels: BTreeMap::new(),
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.ranges.iter().any(|&(lo, hi)| lo <= a && a <= hi)
    }

    /// Whether a Service in `namespace` with `labels` may hold its addresses.
    pub fn serves(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The addresses, range by range, lowest first within each.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|&(lo, hi)| (lo..=hi).map(Ipv4Addr::from))
    }
}

fn range_of(p: &Prefix) -> (u32, u32) {
    let std::net::IpAddr::V4(base) = p.base else {
        // An IPv6 prefix holds no IPv4 addresses: an empty range.
        return (1, 0);
    };
    let lo = u32::from(base);
    (lo, lo | !p.mask())
}

/// `a.b.c.d/len`, `a.b.c.d` or `a.b.c.d-e.f.g.h`.
fn parse_range(s: &str) -> Result<(u32, u32), String> {
    if let Some((a, b)) = s.split_once('-') {
        let lo: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let hi: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {b:?} is not an IPv4 address"))?;
        if lo > hi {
            return Err(format!(
                "{s:?} runs backwards; write the lower address first"
            ));
        }
        return Ok((u32::from(lo), u32::from(hi)));
    }
    let p: Prefix = s.trim().parse()?;
    Ok(range_of(&p))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    auto_assign: Option<bool>,
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    #[serde(default)]
    service_selector: Option<Selector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    match_labels: Option<BTreeMap<String, String>>,
}

/// The VIPPool objects as pools, sorted by name (so the pool order, and
/// with it the choice of address, does not depend on the list order),
/// and the ones that cannot be used.
pub fn parse_pools(objects: &[Value]) -> (Vec<Pool>, Vec<PoolProblem>) {
    let mut pools = Vec::new();
    let mut problems = Vec::new();
    for o in objects {
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let spec = match o.get("spec").map(Spec::deserialize) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(PoolProblem {
                    name,
                    message: format!("spec cannot be read: {e}"),
                });
                continue;
            }
            None => {
                problems.push(PoolProblem {
                    name,
                    message: "no spec".into(),
                });
                continue;
            }
        };
        let ranges: Result<Vec<_>, String> =
            spec.addresses.iter().map(|a| parse_range(a)).collect();
        match ranges {
            Ok(r) if r.is_empty() => problems.push(PoolProblem {
                name,
                message: "spec.addresses is empty".into(),
            }),
            Ok(ranges) => pools.push(Pool {
                name,
                ranges,
                auto_assign: spec.auto_assign.unwrap_or(true),
                namespaces: spec.namespaces.unwrap_or_default(),
                match_labels: spec
                    .service_selector
                    .and_then(|s| s.match_labels)
                    .unwrap_or_default(),
            }),
            Err(m) => problems.push(PoolProblem {
                name,
                message: format!("spec.addresses: {m}"),
            }),
        }
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    problems.sort();
    (pools, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pools_parse_cidrs_and_ranges_and_bad_ones_are_left_out() {
        let objs = [
            json!({"metadata": {"name": "b"}, "spec": {"addresses": ["198.18.0.200/30", "198.18.0.220-198.18.0.221"],
                    "autoAssign": false, "namespaces": ["shop"], "serviceSelector": {"matchLabels": {"tier": "front"}}}}),
            json!({"metadata": {"name": "a"}, "spec": {"addresses": ["198.18.0.9"]}}),
            json!({"metadata": {"name": "bad"}, "spec": {"addresses": ["198.18.0.9-198.18.0.1"]}}),
            json!({"metadata": {"name": "empty"}, "spec": {"addresses": []}}),
        ];
        let (pools, problems) = parse_pools(&objs);
        assert_eq!(
            pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let b = &pools[1];
        let addrs: Vec<String> = b.addresses().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "198.18.0.200",
                "198.18.0.201",
                "198.18.0.202",
                "198.18.0.203",
                "198.18.0.220",
                "198.18.0.221"
            ]
        );
        assert!(!b.auto_assign && pools[0].auto_assign);
        let front: BTreeMap<String, String> = [("tier".to_string(), "front".to_string())].into();
        assert!(b.serves("shop", &front));
        assert!(!b.serves("shop", &BTreeMap::new()));
        assert!(!b.serves("default", &front));
        assert!(pools[0].serves("any", &BTreeMap::new()));
        assert_eq!(
            problems.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["bad", "empty"]
        );
        assert!(problems[0].message.contains("backwards"), "{problems:?}");
    }
}
