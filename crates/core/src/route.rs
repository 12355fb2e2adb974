//! Next hops for addresses podlb sends to but that are not on its segment
//! (VXLAN VTEPs on other subnets; VRRP unicast peers): the interface's own
//! subnet is on-link, everything else goes through the routes of podlb's
//! network namespace (`/proc/net/route`), usually the default gateway.
//!
//! podlb resolves next-hop MACs itself (the kernel does not route for it:
//! `ip_forward = 0`, and its frames leave through AF_PACKET or TAP), so this
//! is the small piece of routing it needs. Read once at start and on reload
//! (`podlb::route::load` reads the interface and `/proc/net/route`; this
//! module only parses and decides).

use std::net::Ipv4Addr;

/// One IPv4 route of the interface (`/proc/net/route` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    dst: u32,
    mask: u32,
    /// `None`: on-link (no RTF_GATEWAY).
    gateway: Option<Ipv4Addr>,
    metric: u32,
}

/// The routing view of podlb's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// The interface's own IPv4 address ...
    pub addr: Ipv4Addr,
    /// ... and prefix length: that subnet is on-link.
    pub prefix: u8,
    /// The default gateway through this interface, if any.
    pub gateway: Option<Ipv4Addr>,
    routes: Vec<Route>,
}

/// `RTF_UP` and `RTF_GATEWAY` from linux/route.h.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

impl Routes {
    /// Only the interface subnet and a default gateway.
    pub fn new(addr: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> Routes {
        Routes {
            addr,
            prefix: prefix.min(32),
            gateway,
            routes: Vec::new(),
        }
    }

    /// Parses the text of `/proc/net/route` (addresses in host byte order
    /// as hex, i.e. little-endian on the machines podlb runs on), keeping
    /// the up routes through `ifname`.
    pub fn from_proc_net_route(addr: Ipv4Addr, prefix: u8, ifname: &str, text: &str) -> Routes {
        let mut r = Routes::new(addr, prefix, None);
        // The kernel prints each __be32 as a native-endian u32 in hex.
        let hex = |s: &str| {
            u32::from_str_radix(s, 16)
                .ok()
                .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[0] != ifname {
                continue;
            }
            let (Some(dst), Some(gw), Ok(flags), Some(mask)) = (
                hex(f[1]),
                hex(f[2]),
                u32::from_str_radix(f[3], 16),
                hex(f[7]),
            ) else {
                continue;
            };
            if flags & RTF_UP == 0 {
                continue;
            }
            let route = Route {
                dst,
                mask,
                gateway: (flags & RTF_GATEWAY != 0).then(|| Ipv4Addr::from(gw)),
                metric: f[6].parse().unwrap_or(0),
            };
            if route.mask == 0 && route.gateway.is_some() {
                let better = r
                    .routes
                    .iter()
                    .filter(|x| x.mask == 0 && x.gateway.is_some())
                    .all(|x| x.metric > route.metric);
                if better {
                    r.gateway = route.gateway;
                }
            }
            r.routes.push(route);
        }
        r
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix.min(32))
        }
    }

    /// Whether `dst` is in the interface's own subnet.
    pub fn on_link(&self, dst: Ipv4Addr) -> bool {
        let m = Self::mask(self.prefix);
        u32::from(dst) & m == u32::from(self.addr) & m
    }

    /// The address whose MAC a frame to `dst` goes to: `dst` itself if it is
    /// on-link, else the gateway of the longest matching route (usually the
    /// default gateway). With no route at all, `dst` (its ARP will go
    /// unanswered and the drop is counted as `neighbor_unresolved`).
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        let d = u32::from(dst);
        let own = Self::mask(self.prefix);
        let mut best: Option<(u32, Option<Ipv4Addr>, u32)> = None;
        if d & own == u32::from(self.addr) & own {
            best = Some((own, None, 0));
        }
        for r in &self.routes {
            if d & r.mask != r.dst & r.mask {
                continue;
            }
            let longer = best.is_none_or(|(m, _, metric)| {
                r.mask.count_ones() > m.count_ones() || (r.mask == m && r.metric < metric)
            });
            if longer {
                best = Some((r.mask, r.gateway, r.metric));
            }
        }
        match best {
            Some((_, gw, _)) => gw.unwrap_or(dst),
            None => self.gateway.unwrap_or(dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t000A13C6\tFE0012C6\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t00000000\t010013C6\t0003\t0\t0\t5\t00000000\t0\t0\t0
";

    #[test]
    fn parses_proc_net_route() {
        let r = Routes::from_proc_net_route(Ipv4Addr::new(198, 18, 0, 2), 24, "eth0", PROC);
        assert_eq!(r.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
        // On-link: itself.
        assert_eq!(
            r.next_hop(Ipv4Addr::new(198, 18, 0, 50)),
            Ipv4Addr::new(198, 18, 0, 50)
        );
        // Elsewhere: the default gateway.
        assert_eq!(
            r.next_hop(Ipv4Addr::new(198, 19, 0, 11)),
            Ipv4Addr::new(198, 18, 0, 1)
        );
        assert!(!r.on_link(Ipv4Addr::new(198, 19, 0, 11)));
        assert!(r.on_link(Ipv4Addr::new(198, 18, 0, 9)));
    }

    #[test]
    fn longest_prefix_wins_and_other_interfaces_are_ignored() {
        let r = Routes::from_proc_net_route(Ipv4Addr::new(198, 18, 0, 2), 24, "eth0", PROC);
        assert_eq!(
            r.next_hop(Ipv4Addr::new(198, 19, 10, 7)),
            Ipv4Addr::new(198, 18, 0, 254),
            "198.19.10.0/24 via 198.18.0.254"
        );
        assert_eq!(
            r.next_hop(Ipv4Addr::new(198, 19, 11, 7)),
            Ipv4Addr::new(198, 18, 0, 1)
        );
    }

    #[test]
    fn without_routes() {
        let r = Routes::new(Ipv4Addr::new(198, 18, 0, 2), 24, None);
        let far = Ipv4Addr::new(203, 0, 113, 1);
        assert_eq!(r.next_hop(far), far, "no gateway: try it directly");
        let r = Routes::new(
            Ipv4Addr::new(198, 18, 0, 2),
            24,
            Some(Ipv4Addr::new(198, 18, 0, 1)),
        );
        assert_eq!(r.next_hop(far), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            r.next_hop(Ipv4Addr::new(198, 18, 0, 7)),
            Ipv4Addr::new(198, 18, 0, 7)
        );
        let all = Routes::new(Ipv4Addr::new(10, 0, 0, 1), 0, None);
        assert!(all.on_link(far));
    }
}
