//! VIP pools from the `VIPPool` custom resource (`podlb.io/v1alpha1`,
//! cluster-scoped; deploy/kubernetes/crd-vippool.yaml), beside the config
//! file's `kubernetes.vip_pools`.
//!
//! ```yaml
//! apiVersion: podlb.io/v1alpha1
//! kind: VIPPool
//! metadata: {name: web}
//! spec:
//!   addresses: ["198.18.0.200/29", "198.18.0.220-198.18.0.229", "2001:2::/64"]
//!   autoAssign: true            # false: only Services that request an address get one
//!   namespaces: [shop]          # empty or absent: every namespace
//!   serviceSelector:
//!     matchLabels: {tier: front}
//! ```
//!
//! A pool may mix IPv4 and IPv6 ranges; a Service takes its VIP of each
//! family from the ranges of that family (docs/kubernetes.md,
//! "Dual-stack").
//!
//! A Service may hold an address of a pool that *serves* it (its namespace
//! listed or none listed, and its labels matching `matchLabels`); it gets
//! one without asking only from a serving pool with `autoAssign`. The API
//! server validates the schema; what it cannot (an address that does not
//! parse, a range backwards) makes the pool a [`PoolProblem`] and leaves it
//! out, the other pools unaffected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_json::Value;

use crate::model::Prefix;

/// An IP family, as Kubernetes spells it in `spec.ipFamilies` and in an
/// EndpointSlice's `addressType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `IPv4` or `IPv6`, the API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The API's spelling back; `None` for anything else.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    /// 0 for IPv4, 1 for IPv6: an index into per-family arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address as a number of its family (IPv4 in the low 32 bits).
fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address numbered `n` in `family` (`n` fits: it came from [`number`]
/// of that family, or lies between two such numbers).
fn address(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family. IPv6 ranges may be huge
/// (a /48 has 2^80 addresses): they are only ever walked lazily, from the
/// lowest address, as far as an allocation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub family: Family,
    pub lo: u128,
    pub hi: u128,
}

impl Span {
    /// Every address of the prefix (a pool has no network or broadcast
    /// address to keep free: see [`super::settings::VipPool`]).
    pub fn of_prefix(p: &Prefix) -> Span {
        let family = Family::of(p.base);
        let width = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let host = width - u32::from(p.prefix);
        let lo = number(p.base);
        let hi = if host >= 128 {
            u128::MAX
        } else {
            lo | ((1u128 << host) - 1)
        };
        Span { family, lo, hi }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.lo..=self.hi).contains(&number(ip))
    }

    /// The addresses, lowest first (lazily).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        let family = self.family;
        (self.lo..=self.hi).map(move |n| address(family, n))
    }

    /// Why the span cannot hold VIPs, if it cannot: IPv6 addresses that
    /// are IPv4-mapped (`::ffff:0:0/96`: the data plane keys both families
    /// by one 128-bit form in which those *are* IPv4 addresses, RFC 4291
    /// §2.5.5.2), link-local (`fe80::/10`: not routed, RFC 4291 §2.5.6),
    /// multicast (`ff00::/8`), `::` or `::1`. IPv4 spans are not judged
    /// (as before IPv6 pools existed).
    pub fn unusable(&self) -> Option<String> {
        if self.family == Family::V4 {
            return None;
        }
        let special: [(&str, u128, u128); 5] = [
            ("unspecified (::)", 0, 0),
            ("loopback (::1)", 1, 1),
            (
                "IPv4-mapped (::ffff:0:0/96)",
                0xffff_0000_0000,
                0xffff_ffff_ffff,
            ),
            (
                "link-local (fe80::/10)",
                0xfe80 << 112,
                (0xfebf << 112) | ((1u128 << 112) - 1),
            ),
            ("multicast (ff00::/8)", 0xff << 120, u128::MAX),
        ];
        special
            .iter()
            .find(|(_, lo, hi)| self.lo <= *hi && *lo <= self.hi)
            .map(|(what, _, _)| format!("includes {what} addresses, which cannot be VIPs"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = (address(self.family, self.lo), address(self.family, self.hi));
        if lo == hi {
            write!(f, "{lo}")
        } else {
            write!(f, "{lo}-{hi}")
        }
    }
}

/// One pool: where its addresses are and whom it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `config` for the config file's pools, else the VIPPool's name.
    pub name: String,
    /// Address ranges of either family, in the order given.
    pub ranges: Vec<Span>,
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
            ranges: prefixes.iter().map(Span::of_prefix).collect(),
            auto_assign: true,
            namespaces: Vec::new(),
            match_labels: BTreeMap::new(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool has addresses of `family`.
    pub fn has(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family == family)
    }

    /// Whether a Service in `namespace` with `labels` may hold its addresses.
    pub fn serves(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The addresses of `family`, range by range, lowest first within
    /// each; lazily, so a /48 costs nothing until addresses are taken.
    pub fn addresses(&self, family: Family) -> impl Iterator<Item = IpAddr> + '_ {
        self.ranges
            .iter()
            .filter(move |r| r.family == family)
            .flat_map(Span::addresses)
    }
}

/// `a.b.c.d/len`, `x:y::z/len`, a bare address, or `lo-hi` of one family.
fn parse_range(s: &str) -> Result<Span, String> {
    let span = if let Some((a, b)) = s.split_once('-') {
        let parse = |x: &str| -> Result<IpAddr, String> {
            x.trim()
                .parse()
                .map_err(|_| format!("{s:?}: {x:?} is not an IP address"))
        };
        let (lo, hi) = (parse(a)?, parse(b)?);
        if lo.is_ipv4() != hi.is_ipv4() {
            return Err(format!(
                "{s:?} runs from one address family to the other; write one range per family"
            ));
        }
        if lo > hi {
            return Err(format!(
                "{s:?} runs backwards; write the lower address first"
            ));
        }
        Span {
            family: Family::of(lo),
            lo: number(lo),
            hi: number(hi),
        }
    } else {
        let p: Prefix = s.trim().parse()?;
        Span::of_prefix(&p)
    };
    match span.unusable() {
        Some(why) => Err(format!("{s:?} {why}")),
        None => Ok(span),
    }
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
        let addrs: Vec<String> = b.addresses(Family::V4).map(|a| a.to_string()).collect();
        assert_eq!(b.addresses(Family::V6).count(), 0);
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

    #[test]
    fn ipv6_pools_parse_and_are_walked_lazily() {
        let objs = [
            json!({"metadata": {"name": "dual"}, "spec": {"addresses": [
                "198.18.0.200/31", "2001:2::/64", "2001:2:0:1::10-2001:2:0:1::11"]}}),
            json!({"metadata": {"name": "mixed"}, "spec": {"addresses": ["198.18.0.1-2001:2::1"]}}),
            json!({"metadata": {"name": "mapped"}, "spec": {"addresses": ["::ffff:198.18.0.0/120"]}}),
            json!({"metadata": {"name": "ll"}, "spec": {"addresses": ["fe80::1-fe80::9"]}}),
            json!({"metadata": {"name": "wide"}, "spec": {"addresses": ["::/0"]}}),
            json!({"metadata": {"name": "back6"}, "spec": {"addresses": ["2001:2::9-2001:2::1"]}}),
        ];
        let (pools, problems) = parse_pools(&objs);
        assert_eq!(pools.len(), 1, "{problems:?}");
        let p = &pools[0];
        assert!(p.has(Family::V4) && p.has(Family::V6));
        // A /64 is 2^64 addresses: taking the first few costs nothing.
        let first: Vec<String> = p
            .addresses(Family::V6)
            .take(3)
            .map(|a| a.to_string())
            .collect();
        assert_eq!(first, ["2001:2::", "2001:2::1", "2001:2::2"]);
        assert!(p.contains("2001:2::ffff:1".parse().unwrap()));
        assert!(p.contains("2001:2:0:1::11".parse().unwrap()));
        assert!(!p.contains("2001:2:0:1::12".parse().unwrap()));
        assert!(!p.contains("::ffff:198.18.0.200".parse().unwrap()));
        assert_eq!(p.addresses(Family::V4).count(), 2);
        let why: BTreeMap<&str, &str> = problems
            .iter()
            .map(|p| (p.name.as_str(), p.message.as_str()))
            .collect();
        assert!(why["mixed"].contains("one range per family"), "{why:?}");
        assert!(why["mapped"].contains("IPv4-mapped"), "{why:?}");
        assert!(why["ll"].contains("link-local"), "{why:?}");
        assert!(why["wide"].contains("cannot be VIPs"), "{why:?}");
        assert!(why["back6"].contains("backwards"), "{why:?}");
        // The last address of the whole space is reachable without overflow.
        let top = Span::of_prefix(&"2001:2::ffff/128".parse().unwrap());
        assert_eq!(top.addresses().count(), 1);
        assert_eq!(top.to_string(), "2001:2::ffff");
    }
}
