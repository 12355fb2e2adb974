//! The `[kubernetes]` settings that the reconciler needs.

use crate::model::{ConfigError, Mode, Prefix};

/// `spec.loadBalancerClass` that podlb serves unless configured otherwise.
pub const DEFAULT_LOAD_BALANCER_CLASS: &str = "podlb.io/vip";

/// A pool of VIPs: `base/prefix`, e.g. `198.18.0.100/30` or
/// `2001:2::100/120`. A Service gets its VIP of each IP family it has
/// from the pools of that family (docs/kubernetes.md, "Dual-stack").
///
/// A pool is a set of addresses to hand out, not a subnet that hosts live
/// on: the VIPs are announced one by one (ARP, VRRP) on the node network, so
/// there is no network or broadcast address to keep free. Every address of
/// the pool is assignable, including the first and the last: a `/30` gives
/// four VIPs, a `/32` one.
pub type VipPool = Prefix;

/// Parses the `kubernetes.vip_pools` list. Errors name the element
/// (`kubernetes.vip_pools[1]`); pools must not overlap.
pub fn parse_vip_pools<S: AsRef<str>>(pools: &[S]) -> Result<Vec<VipPool>, ConfigError> {
    let mut out: Vec<VipPool> = Vec::with_capacity(pools.len());
    for (i, s) in pools.iter().enumerate() {
        let key = format!("kubernetes.vip_pools[{i}]");
        let pool: VipPool = s.as_ref().trim().parse().map_err(|message| ConfigError {
            key: key.clone(),
            message,
        })?;
        if let Some(why) = super::pools::Span::of_prefix(&pool).unusable() {
            return Err(ConfigError {
                key,
                message: format!(
                    "{pool} {why}; use a global unicast prefix like \"2001:2::100/120\""
                ),
            });
        }
        if let Some((j, other)) = out.iter().enumerate().find(|(_, o)| o.overlaps(&pool)) {
            return Err(ConfigError {
                key,
                message: format!(
                    "{pool} overlaps kubernetes.vip_pools[{j}] ({other}); list each address once"
                ),
            });
        }
        out.push(pool);
    }
    Ok(out)
}

/// What the reconciler needs from the `[kubernetes]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Services with this `spec.loadBalancerClass` are podlb's.
    pub load_balancer_class: String,
    /// VIPs are assigned from these pools, in this order.
    pub vip_pools: Vec<VipPool>,
    /// Mode of a Service without a `podlb.io/mode` annotation.
    pub default_mode: Mode,
    /// Health check of a Service without a `podlb.io/health-check`
    /// annotation (`[kubernetes.health_check]`); `None`: readiness only.
    pub health_check: Option<crate::model::HealthCheck>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            load_balancer_class: DEFAULT_LOAD_BALANCER_CLASS.to_string(),
            vip_pools: Vec::new(),
            default_mode: Mode::Nat,
            health_check: None,
        }
    }
}

impl KubeSettings {
    /// Validated settings from the raw table values; `None` takes the default.
    pub fn new<S: AsRef<str>>(
        load_balancer_class: Option<&str>,
        vip_pools: &[S],
        default_mode: Option<Mode>,
    ) -> Result<Self, ConfigError> {
        let class = load_balancer_class.unwrap_or(DEFAULT_LOAD_BALANCER_CLASS);
        if class.is_empty() || class.contains(char::is_whitespace) {
            return Err(ConfigError {
                key: "kubernetes.load_balancer_class".into(),
                message: format!(
                    "{class:?} is not a class name; use a prefixed name like \"{DEFAULT_LOAD_BALANCER_CLASS}\""
                ),
            });
        }
        let vip_pools = parse_vip_pools(vip_pools)?;
        if vip_pools.is_empty() {
            return Err(ConfigError {
                key: "kubernetes.vip_pools".into(),
                message: "no pool, so no Service can get a VIP; add one, e.g. vip_pools = [\"198.18.0.100/30\"]".into(),
            });
        }
        Ok(KubeSettings {
            load_balancer_class: class.to_string(),
            vip_pools,
            default_mode: default_mode.unwrap_or(Mode::Nat),
            health_check: None,
        })
    }

    /// Whether `ip` is inside one of the pools.
    pub fn in_pool(&self, ip: std::net::IpAddr) -> bool {
        self.vip_pools.iter().any(|p| p.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn pool_parses_and_every_address_is_usable() {
        let p: VipPool = "198.18.0.100/30".parse().unwrap();
        assert_eq!(p.size(), 4);
        let all: Vec<_> = p.addresses().collect();
        assert_eq!(
            all,
            vec![
                Ipv4Addr::new(198, 18, 0, 100),
                Ipv4Addr::new(198, 18, 0, 101),
                Ipv4Addr::new(198, 18, 0, 102),
                Ipv4Addr::new(198, 18, 0, 103),
            ]
        );
        assert!(p.contains(Ipv4Addr::new(198, 18, 0, 103).into()));
        assert!(!p.contains(Ipv4Addr::new(198, 18, 0, 104).into()));
        let one: VipPool = "198.18.0.7".parse().unwrap();
        assert_eq!((one.prefix, one.size()), (32, 1));
        let all: VipPool = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(255, 255, 255, 255).into()));
    }

    #[test]
    fn pool_errors_name_the_key_and_the_fix() {
        let e = parse_vip_pools(&["198.18.0.100/30", "198.18.0.101/30"]).unwrap_err();
        assert_eq!(e.key, "kubernetes.vip_pools[1]");
        assert!(e.message.contains("\"198.18.0.100/30\""), "{e}");
        let e = parse_vip_pools(&["nope"]).unwrap_err();
        assert_eq!(e.key, "kubernetes.vip_pools[0]");
        assert!(e.message.contains("198.18.0.100/30"), "{e}");
        let e = parse_vip_pools(&["198.18.0.0/33"]).unwrap_err();
        assert!(e.message.contains("0..=32"), "{e}");
        let e = parse_vip_pools(&["198.18.0.0/24", "2001:2::/64", "::ffff:198.18.0.0/120"])
            .unwrap_err();
        assert_eq!(e.key, "kubernetes.vip_pools[2]");
        assert!(e.message.contains("IPv4-mapped"), "{e}");
        let e = parse_vip_pools(&["2001:2::/64", "2001:2::100/120"]).unwrap_err();
        assert_eq!(e.key, "kubernetes.vip_pools[1]");
        let e = parse_vip_pools(&["198.18.0.0/24", "198.18.0.128/25"]).unwrap_err();
        assert_eq!(e.key, "kubernetes.vip_pools[1]");
        assert!(
            e.message.contains("overlaps kubernetes.vip_pools[0]"),
            "{e}"
        );
    }

    #[test]
    fn settings_defaults_and_errors() {
        let s = KubeSettings::new(None, &["198.18.0.100/30"], None).unwrap();
        assert_eq!(s.load_balancer_class, "podlb.io/vip");
        assert_eq!(s.default_mode, Mode::Nat);
        assert!(s.in_pool(Ipv4Addr::new(198, 18, 0, 102).into()));
        // IPv6 pools, alone or beside IPv4 ones (families never overlap).
        let s = KubeSettings::new(None, &["198.18.0.0/24", "2001:2::/64"], None).unwrap();
        assert!(s.in_pool("2001:2::1:5".parse().unwrap()));
        assert!(!s.in_pool("2001:2:0:1::5".parse().unwrap()));
        let e = KubeSettings::new(None, &[] as &[&str], None).unwrap_err();
        assert_eq!(e.key, "kubernetes.vip_pools");
        let e = KubeSettings::new(Some(""), &["198.18.0.1"], None).unwrap_err();
        assert_eq!(e.key, "kubernetes.load_balancer_class");
    }
}
