//! Attaching to the network: the devices the workers read (AF_PACKET, TAP,
//! AF_XDP), the injector the control thread sends with, the MACs, the VRRP
//! router and the connection-sync link, the addresses VXLAN frames leave
//! from, and then the capability drop: after [`attach`] no capability
//! beyond CAP_NET_RAW and CAP_NET_ADMIN (and CAP_NET_BIND_SERVICE for a low
//! admin port) is left.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::config::{Attach, Config, IoBackend, LeaseSettings};
use crate::redundancy::Redundancy;
use crate::sync::SyncLink;
use podlb_core::hash::hash_bytes;
use podlb_core::route::Routes;
use podlb_io::packet::{PacketConfig, PacketInjector, PacketSocket};
use podlb_io::xdp::{self, XdpDevice, XdpProgram};
use podlb_io::{sys, tap, Injector};
use podlb_wire::MacAddr;

use super::EngineError;

/// Default UDP port of connection sync (as `vrrp.sync_port`).
const DEFAULT_SYNC_PORT: u16 = 8899;

/// Everything [`attach`] opened and found out.
pub(super) struct Attached {
    /// The MAC the VIPs are served with (the VRRP virtual MAC with VRRP;
    /// with an IPv6 instance, the IPv4 VIPs').
    pub mac: MacAddr,
    /// The MAC the IPv6 VIPs are served with: the IPv6 instance's virtual
    /// MAC (RFC 9568 §7.3), else `mac`.
    pub mac6: MacAddr,
    /// The device's own MAC.
    pub own_mac: MacAddr,
    pub ifname: String,
    pub injector: Box<dyn Injector>,
    pub redundancy: Option<Redundancy>,
    /// The IPv6 VRRP instance: with `[vrrp]`, IPv6 VIPs and multicast
    /// adverts ([`redundancy6`]).
    pub redundancy6: Option<Redundancy<Ipv6Addr>>,
    /// `[kubernetes.lease]`: serving follows the Lease.
    pub lease: Option<LeaseSettings>,
    pub sync_link: Option<SyncLink>,
    /// The instance's own address in TAP mode with VRRP (host order).
    pub own_ip: Option<u32>,
    /// The IPv6 link-local address podlb sends NDP from: the interface's
    /// (AF_PACKET), else the EUI-64 one of the device MAC (RFC 4862 §5.3).
    pub ll6: std::net::Ipv6Addr,
    /// `ll6` when podlb answers NDP for it itself (no kernel owns it).
    pub own_ip6: Option<u128>,
    /// Where VXLAN frames leave from (host order; 0: none).
    pub local_ip: u32,
    pub routes: Option<Routes>,
    /// Kept open for the process lifetime (see [`vrrp_sink`]).
    pub vrrp_sink: Option<OwnedFd>,
}

/// The workers' devices, by backend.
pub(super) enum Devices {
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

/// Opens the devices (returned apart, for the workers), sets up VRRP and
/// connection sync, and drops the capabilities no longer needed.
pub(super) fn attach(cfg: &Config) -> Result<(Attached, Devices), EngineError> {
    let (own_mac, ifname, injector, devices) = open_devices(cfg)?;
    tracing::info!(interface = %ifname, mode = cfg.attach.mode_str(), mac = %own_mac, workers = cfg.workers, "attached");
    warn_kernel_forwarding(cfg);

    // VRRP: the VIPs are served with the virtual MAC (RFC 9568 §7.3); the
    // device's own MAC stays for the instance's own traffic.
    let redundancy = redundancy(cfg)?;
    let mac = redundancy.as_ref().map_or(own_mac, Redundancy::vmac);
    // The IPv6 link-local address: the source of NDP and of IPv6 adverts
    // (RFC 9568 §5.1.2.1).
    let kernel_ll6 = match &cfg.attach {
        Attach::AfPacket { interface } => sys::ipv6_link_local_of(interface).ok().flatten(),
        Attach::Tap { .. } => None,
    };
    let ll6 = kernel_ll6.unwrap_or_else(|| podlb_wire::ndp::link_local_of(own_mac));
    let own_ip6 = kernel_ll6.is_none().then(|| u128::from(ll6));
    let redundancy6 = redundancy6(cfg, ll6)?;
    let mac6 = redundancy6.as_ref().map_or(mac, Redundancy::vmac);
    let lease = cfg.kubernetes.as_ref().and_then(|k| k.lease.clone());
    let sync_link = sync_link(cfg, lease.as_ref())?;
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
            if redundancy6.is_some() {
                // The IPv6 virtual MAC and ff02::12's group address
                // (33:33:00:00:00:12, RFC 2464 §7).
                s.add_membership(idx, mac6, false)
                    .map_err(EngineError::Attach)?;
                s.add_membership(idx, podlb_wire::vrrp::MULTICAST_MAC_V6, true)
                    .map_err(EngineError::Attach)?;
            }
        }
    }
    let vrrp_sink = vrrp_sink(cfg, redundancy.is_some())?;
    drop_capabilities(cfg);
    let att = Attached {
        mac,
        mac6,
        own_mac,
        ifname,
        injector,
        redundancy,
        redundancy6,
        lease,
        sync_link,
        own_ip,
        ll6,
        own_ip6,
        local_ip,
        routes,
        vrrp_sink,
    };
    Ok((att, devices))
}

/// The interface's (or TAP device's) MAC, name, an injector and the
/// workers' devices.
fn open_devices(
    cfg: &Config,
) -> Result<(MacAddr, String, Box<dyn Injector>, Devices), EngineError> {
    let workers = cfg.workers;
    Ok(match &cfg.attach {
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
    })
}

/// The kernel sees every frame podlb handles on AF_PACKET; with IPv4
/// forwarding on it would route VIP traffic a second time.
fn warn_kernel_forwarding(cfg: &Config) {
    if let Attach::AfPacket { interface } = &cfg.attach {
        let knob = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
        if std::fs::read_to_string(&knob).is_ok_and(|v| v.trim() == "1") {
            tracing::warn!(
                "{knob} is 1: the kernel will also forward the VIP traffic podlb handles; \
                 set net.ipv4.ip_forward=0 in podlb's network namespace"
            );
        }
    }
}

/// The VRRP router (`[vrrp]`), in Initialize.
fn redundancy(cfg: &Config) -> Result<Option<Redundancy>, EngineError> {
    let Some(v) = &cfg.vrrp else {
        return Ok(None);
    };
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
    // The advert's address list must be the same on every instance (RFC
    // 9568 §7.1 drops a mismatch). Kubernetes VIPs come and go and instances
    // learn of them at different moments, so the list names each pool by
    // its first address instead.
    // IPv4 VIPs only: the IPv6 ones have an instance of their own
    // ([`redundancy6`]), or follow this one's state without it.
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    };
    let mut vips: Vec<Ipv4Addr> = cfg.services.iter().filter_map(|s| v4(s.vip)).collect();
    if let Some(k) = &cfg.kubernetes {
        vips.extend(k.reconcile.vip_pools.iter().filter_map(|p| v4(p.base)));
    }
    vips.sort_unstable();
    vips.dedup();
    Ok(Some(Redundancy::new(v.clone(), vips, primary)))
}

/// The IPv6 VRRP router (RFC 9568 §5.1.2), in Initialize: with `[vrrp]`
/// and IPv6 VIPs (services' and Kubernetes pools', each pool by its first
/// address as for IPv4), primary address `ll6` (§5.1.2.1). Multicast only
/// (ff02::12): with unicast peers (configured or discovered), where the
/// link may pass no multicast, there is none and the IPv6 VIPs follow the
/// IPv4 instance (docs/decisions.md §69).
fn redundancy6(cfg: &Config, ll6: Ipv6Addr) -> Result<Option<Redundancy<Ipv6Addr>>, EngineError> {
    let Some(v) = &cfg.vrrp else {
        return Ok(None);
    };
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(a) => Some(a),
    };
    let mut vips: Vec<Ipv6Addr> = cfg.services.iter().filter_map(|s| v6(s.vip)).collect();
    if let Some(k) = &cfg.kubernetes {
        vips.extend(k.reconcile.vip_pools.iter().filter_map(|p| v6(p.base)));
    }
    vips.sort_unstable();
    vips.dedup();
    if vips.is_empty() {
        return Ok(None);
    }
    let discovery = cfg
        .kubernetes
        .as_ref()
        .is_some_and(|k| k.peers_service.is_some());
    if !v.unicast_peers.is_empty() || discovery {
        tracing::info!(
            "vrrp: unicast peers: no IPv6 instance (its adverts are multicast only); the IPv6 VIPs follow the IPv4 instance"
        );
        return Ok(None);
    }
    let r = Redundancy::new_v6(v.clone(), vips, ll6);
    r.validate().map_err(|e| {
        EngineError::Attach(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the IPv6 VRRP instance: {e}"),
        ))
    })?;
    Ok(Some(r))
}

/// The connection-sync link, with VRRP or a Lease.
fn sync_link(cfg: &Config, lease: Option<&LeaseSettings>) -> Result<Option<SyncLink>, EngineError> {
    let port = match (&cfg.vrrp, lease) {
        (Some(v), _) => v.sync_port,
        (None, Some(_)) => DEFAULT_SYNC_PORT,
        (None, None) => return Ok(None),
    };
    let peers = cfg
        .vrrp
        .as_ref()
        .map(|v| v.unicast_peers.clone())
        .unwrap_or_default();
    let key = cfg
        .vrrp
        .as_ref()
        .and_then(|v| v.sync_key.as_ref())
        .or(lease.and_then(|l| l.sync_key.as_ref()));
    SyncLink::open(port, cfg.workers, peers, key)
        .map(Some)
        .map_err(|e| {
            EngineError::Attach(std::io::Error::new(
                e.kind(),
                format!("connection sync port {port}: {e}"),
            ))
        })
}

/// Unicast adverts to our own address would make the kernel answer ICMP
/// "protocol unreachable"; a never-read raw socket for 112 prevents that.
fn vrrp_sink(cfg: &Config, vrrp: bool) -> Result<Option<OwnedFd>, EngineError> {
    match (vrrp, &cfg.attach) {
        (true, Attach::AfPacket { .. }) => sys::protocol_sink(112)
            .map(Some)
            .map_err(EngineError::Attach),
        _ => Ok(None),
    }
}

/// Least privilege: every socket and device that needs a capability is open
/// now, and no other thread exists yet (threads inherit the capabilities of
/// the thread that starts them). Keep CAP_NET_RAW and CAP_NET_ADMIN (and
/// CAP_NET_BIND_SERVICE for an admin port below 1024, bound later); drop the
/// rest, from the bounding set too, so notify hooks cannot regain them.
fn drop_capabilities(cfg: &Config) {
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
