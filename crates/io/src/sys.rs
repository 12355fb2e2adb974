//! Thin wrappers over the interface ioctls podlb needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use podlb_wire::MacAddr;

/// `SIOCBRADDIF` from linux/sockios.h: add an interface to a bridge (libc
/// exports it for Android only).
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// The virtio-net header that precedes frames on PACKET_VNET_HDR sockets and
/// IFF_VNET_HDR TAP devices (virtio spec §5.1.6, legacy layout, native
/// endian; `struct virtio_net_hdr` of linux/virtio_net.h, which libc does
/// not export, nor the `VIRTIO_NET_HDR_*` constants below).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

pub const VNET_HDR_LEN: usize = std::mem::size_of::<VirtioNetHdr>();
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at csum_start+csum_offset is partial.
pub const VNET_F_NEEDS_CSUM: u8 = 1;

/// `VIRTIO_NET_HDR_GSO_NONE`; any other `gso_type` is a GSO frame.
pub const VNET_GSO_NONE: u8 = 0;

impl VirtioNetHdr {
    /// The segment size of a GSO frame; 0 for an ordinary one.
    #[inline]
    pub fn gso(&self) -> u16 {
        if self.gso_type & 0x7f == VNET_GSO_NONE {
            0
        } else {
            self.gso_size
        }
    }

    /// Reads a header from the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn read(b: &[u8]) -> Option<VirtioNetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }
}

/// An `ifreq` naming interface `name` (at most `IFNAMSIZ` - 1 bytes).
pub(crate) fn ifreq_with_name(name: &str) -> io::Result<libc::ifreq> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is longer than 15 bytes"),
        ));
    }
    // SAFETY: ifreq is a plain C struct/union for which all-zero bytes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> io::Result<i32> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: c is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name:?}"),
        ));
    }
    Ok(idx as i32)
}

/// The hardware address of interface `name`.
pub fn mac_of(name: &str) -> io::Result<MacAddr> {
    let s = ctl_socket()?;
    let mut ifr = ifreq_with_name(name)?;
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into
    // `ifr`, which is a valid, exclusively borrowed ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFHWADDR succeeded the union holds ifru_hwaddr.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(MacAddr(m))
}

/// Sets interface `name` up.
pub fn set_up(name: &str) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut ifr = ifreq_with_name(name)?;
    // SAFETY: SIOCGIFFLAGS fills ifru_flags of a valid ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so ifru_flags is the active member.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Enslaves interface `port` to bridge `bridge`.
pub fn bridge_add(bridge: &str, port: &str) -> io::Result<()> {
    let idx = ifindex(port)?;
    ifindex(bridge)?;
    let s = ctl_socket()?;
    let mut ifr = ifreq_with_name(bridge)?;
    ifr.ifr_ifru.ifru_ifindex = idx;
    // SAFETY: SIOCBRADDIF reads the bridge name and the port index from a valid ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), SIOCBRADDIF, &ifr) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot add {port} to bridge {bridge}: {e}"),
        ));
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: p is a valid pollfd array of length 1 for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// `PACKET_STATISTICS` (linux/if_packet.h): frames received and frames
/// dropped because the RX ring was full since the last call (reading resets
/// them). The V3 struct adds a freeze count after these two words.
pub(crate) fn packet_ring_drops(fd: RawFd) -> io::Result<u64> {
    // SAFETY: tpacket_stats_v3 is plain data; zero is a valid value.
    let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: st is a live tpacket_stats_v3 and len says its size; the
    // kernel writes at most len bytes and stores the length it wrote.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(st.tp_drops))
}

/// setsockopt with an integer-sized value.
pub(crate) fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the size passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The first IPv4 address of interface `name`.
pub fn ipv4_of(name: &str) -> io::Result<std::net::Ipv4Addr> {
    let s = ctl_socket()?;
    let mut ifr = ifreq_with_name(name)?;
    // SAFETY: SIOCGIFADDR reads the name from and writes the address into a
    // valid, exclusively borrowed ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFADDR, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("{name} has no IPv4 address: {e}"),
        ));
    }
    // SAFETY: after SIOCGIFADDR succeeded the union holds an AF_INET sockaddr.
    let sa = unsafe { ifr.ifr_ifru.ifru_addr };
    // sockaddr_in: family (2 bytes), port (2), address (4).
    let d = sa.sa_data;
    Ok(std::net::Ipv4Addr::new(
        d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
    ))
}

/// The IPv4 address of interface `name` and its prefix length (from the
/// netmask).
pub fn ipv4_net_of(name: &str) -> io::Result<(std::net::Ipv4Addr, u8)> {
    let addr = ipv4_of(name)?;
    let s = ctl_socket()?;
    let mut ifr = ifreq_with_name(name)?;
    // SAFETY: SIOCGIFNETMASK reads the name from and writes the mask into a
    // valid, exclusively borrowed ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFNETMASK, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFNETMASK succeeded the union holds an AF_INET sockaddr.
    let d = unsafe { ifr.ifr_ifru.ifru_netmask }.sa_data;
    let mask = u32::from_be_bytes([d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8]);
    Ok((addr, mask.count_ones() as u8))
}

/// A UDP socket bound to `0.0.0.0:port` that is never read: with it the
/// kernel sends no ICMP "port unreachable" for datagrams podlb handles on
/// its rings (VXLAN replies to podlb's own address). A tiny receive buffer
/// bounds what the kernel queues for it.
pub fn udp_sink(port: u16) -> io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port))?;
    setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &2048i32)?;
    Ok(s)
}

/// A raw IPv4 socket for `protocol` that is never read: its existence keeps
/// the kernel from answering that protocol with ICMP "protocol unreachable"
/// (podlb receives those packets on its own rings). A tiny receive buffer
/// bounds what the kernel queues for it.
pub fn protocol_sink(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &2048i32)?;
    Ok(fd)
}

/// The IPv6 multicast groups the kernel is asked to join on one interface
/// for podlb: the solicited-node groups of the IPv6 VIPs (RFC 4861 §7.2.1),
/// so the NIC's filter passes Neighbor Solicitations for them and the
/// kernel reports them in MLD (switches that snoop MLD forward them).
/// The frames themselves are read from podlb's rings.
pub struct Groups6 {
    sock: std::net::UdpSocket,
    ifindex: u32,
    joined: std::collections::BTreeSet<std::net::Ipv6Addr>,
}

impl Groups6 {
    pub fn new(ifindex: u32) -> io::Result<Groups6> {
        let sock = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))?;
        Ok(Groups6 {
            sock,
            ifindex,
            joined: Default::default(),
        })
    }

    /// Joins the groups of `want` not joined yet and leaves the others;
    /// returns the groups that could not be joined, with why.
    pub fn set(
        &mut self,
        want: impl IntoIterator<Item = std::net::Ipv6Addr>,
    ) -> Vec<(std::net::Ipv6Addr, io::Error)> {
        let want: std::collections::BTreeSet<_> = want.into_iter().collect();
        let mut failed = Vec::new();
        for g in self.joined.difference(&want) {
            let _ = self.sock.leave_multicast_v6(g, self.ifindex);
        }
        for g in want.difference(&self.joined) {
            if let Err(e) = self.sock.join_multicast_v6(g, self.ifindex) {
                failed.push((*g, e));
            }
        }
        self.joined = want
            .into_iter()
            .filter(|g| !failed.iter().any(|(f, _)| f == g))
            .collect();
        failed
    }
}

/// The IPv6 link-local address of interface `name` (`/proc/net/if_inet6`,
/// scope 0x20), if it has one.
pub fn ipv6_link_local_of(name: &str) -> io::Result<Option<std::net::Ipv6Addr>> {
    let text = std::fs::read_to_string("/proc/net/if_inet6")?;
    Ok(parse_if_inet6(&text, name))
}

fn parse_if_inet6(text: &str, name: &str) -> Option<std::net::Ipv6Addr> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [hex, _, _, "20", _, dev] if *dev == name && hex.len() == 32 => {
                u128::from_str_radix(hex, 16)
                    .ok()
                    .map(std::net::Ipv6Addr::from)
            }
            _ => None,
        }
    })
}

pub use caps::Capability;

/// `CAP_NET_ADMIN` and `CAP_NET_RAW`: all podlb needs once its devices are
/// open (the AF_XDP program is loaded and attached before the drop, so
/// CAP_BPF / CAP_SYS_ADMIN are not kept; map updates go through the map's
/// descriptor and need no capability).
pub const CAP_NET_ADMIN: Capability = Capability::CAP_NET_ADMIN;
pub const CAP_NET_RAW: Capability = Capability::CAP_NET_RAW;
/// Only for an admin port below 1024.
pub const CAP_NET_BIND_SERVICE: Capability = Capability::CAP_NET_BIND_SERVICE;

/// What [`drop_capabilities`] left in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsKept {
    /// Effective = permitted = the kept set (bit n = capability n).
    pub mask: u64,
    /// The bounding set was reduced too (needs CAP_SETPCAP, which root
    /// has); when false, programs this process runs could regain more.
    pub bounding: bool,
}

fn caps_error(what: &str, e: &caps::errors::CapsError) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Drops every capability but `keep` from this thread — call it before any
/// other thread is started, since threads inherit the capabilities of the
/// thread that creates them. Reduces the bounding set first (so processes
/// podlb runs, such as notify hooks, cannot regain more even as root),
/// clears the ambient set, then sets inheritable = none and effective =
/// permitted = `keep` (as far as the process had them).
pub fn drop_capabilities(keep: &[Capability]) -> io::Result<CapsKept> {
    use caps::CapSet;
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| caps_error("capget", &e))?;
    let kept: caps::CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // Every capability the kernel has (cap_last_cap), as far as the crate
    // names them; PR_CAPBSET_DROP by number for any newer ones.
    let supported = caps::runtime::procfs_all_supported(None)
        .unwrap_or_else(|_| caps::runtime::thread_all_supported());
    let mut bounding = permitted.contains(&Capability::CAP_SETPCAP);
    if bounding {
        for &c in supported.iter().filter(|c| !keep.contains(c)) {
            bounding &= caps::drop(None, CapSet::Bounding, c).is_ok();
        }
        bounding &= drop_unnamed_bounding(&supported);
    }
    // EINVAL on kernels without ambient capabilities is harmless.
    let _ = caps::clear(None, CapSet::Ambient);
    // Inheritable first, then effective within the old permitted set, then
    // permitted itself: each step is a valid capset(2) on its own.
    caps::clear(None, CapSet::Inheritable).map_err(|e| caps_error("capset", &e))?;
    caps::set(None, CapSet::Effective, &kept).map_err(|e| caps_error("capset", &e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| caps_error("capset", &e))?;
    let mask = kept.iter().fold(0, |m, c| m | c.bitmask());
    Ok(CapsKept { mask, bounding })
}

/// Drops from the bounding set the capabilities of this kernel that the
/// `caps` crate has no name for (numbers above its highest, up to
/// `/proc/sys/kernel/cap_last_cap`). True if all went (or there were none).
fn drop_unnamed_bounding(named: &caps::CapsHashSet) -> bool {
    let highest = named.iter().map(Capability::index).max().unwrap_or(0);
    let last: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or(highest, |l: u8| l.min(63));
    let mut ok = true;
    for cap in highest.saturating_add(1)..=last {
        // SAFETY: prctl(2) with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        ok &= r == 0;
    }
    ok
}

#[cfg(test)]
mod caps_tests {
    use super::*;

    fn status_caps(field: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = s
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    #[test]
    fn drop_keeps_only_what_was_asked_on_this_thread() {
        // Capabilities are per thread: do it on a thread of its own so the
        // test process keeps its own.
        std::thread::spawn(|| {
            let before = status_caps("CapPrm:");
            let k = drop_capabilities(&[CAP_NET_ADMIN, CAP_NET_RAW]).unwrap();
            let want = before & (CAP_NET_ADMIN.bitmask() | CAP_NET_RAW.bitmask());
            assert_eq!(k.mask, want);
            assert_eq!(status_caps("CapEff:"), want);
            assert_eq!(status_caps("CapPrm:"), want);
            assert_eq!(status_caps("CapInh:"), 0);
            if k.bounding {
                assert_eq!(
                    status_caps("CapBnd:"),
                    CAP_NET_ADMIN.bitmask() | CAP_NET_RAW.bitmask()
                );
            }
        })
        .join()
        .unwrap();
    }
}

#[cfg(test)]
mod if_inet6_tests {
    #[test]
    fn if_inet6_link_local_is_found() {
        let text = "20010002000000000000000000000002 05 40 00 80     eth0\nfe800000000000000000000000000002 05 40 20 80     eth0\nfe800000000000000000000000000009 02 40 20 80       lo\n";
        assert_eq!(
            super::parse_if_inet6(text, "eth0"),
            Some("fe80::2".parse().unwrap())
        );
        assert_eq!(super::parse_if_inet6(text, "eth1"), None);
    }
}
