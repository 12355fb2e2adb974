//! AF_XDP: the VIP fast path next to AF_PACKET (`[io] backend = "af_xdp"`).
//!
//! An XDP program on the interface redirects IPv4 frames whose destination
//! address is a VIP (a BPF hash map the workers keep equal to the snapshot's
//! VIPs) into one AF_XDP socket per RX queue; every other frame goes on to
//! the kernel as before (`XDP_PASS`), where the worker's AF_PACKET socket sees
//! it: ARP, VRRP adverts, the host's own traffic (health checks, connection
//! sync, VXLAN to the host address). So [`XdpDevice`] is an AF_PACKET socket
//! plus an AF_XDP socket, polled one after the other, and anything the XDP
//! path does not cover still works exactly as with `af_packet`.
//!
//! Frames are received into a UMEM (one mapped area of fixed-size chunks),
//! rewritten in place and sent from the same chunk (no copy in userspace).
//! Ring semantics follow the kernel's Documentation/networking/af_xdp.rst:
//! four single-producer/single-consumer rings of power-of-two size with free
//! running 32-bit producer and consumer indices; userspace produces into the
//! FILL and TX rings and consumes the RX and COMPLETION rings.
//!
//! The program is attached with `BPF_LINK_CREATE`: the kernel detaches it
//! when the last file descriptor of the link closes, so a crashed podlb does
//! not leave a program that steers VIP traffic into a socket nobody reads.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::packet::{Mapping, PacketSocket};
use crate::{sys, BatchStats, Device, Injector};
use podlb_wire::PacketMeta;

// ---- Linux UAPI ----
//
// The AF_XDP socket API (linux/if_xdp.h: AF_XDP, SOL_XDP, XDP_* options,
// flags and page offsets, sockaddr_xdp, xdp_umem_reg, xdp_mmap_offsets,
// xdp_desc, xdp_statistics) comes from libc. libc has no bpf(2) API, so the
// command, map, program and attach constants below mirror
// include/uapi/linux/bpf.h (and XDP_FLAGS_* include/uapi/linux/if_link.h).

use libc::{
    xdp_desc, xdp_mmap_offsets, xdp_ring_offset, xdp_umem_reg, AF_XDP, SOL_XDP, XDP_COPY,
    XDP_MMAP_OFFSETS, XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING, XDP_RING_NEED_WAKEUP, XDP_RX_RING,
    XDP_STATISTICS, XDP_TX_RING, XDP_UMEM_COMPLETION_RING, XDP_UMEM_FILL_RING, XDP_UMEM_REG,
    XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY,
};
use std::mem::size_of;

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: i32 = 2;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

/// UMEM chunks per socket, and their size. A chunk holds one frame of up
/// to 2048 − 256 (XDP headroom) bytes: an MTU-1500 frame, as XDP on veth
/// sees no GSO super-frames.
pub const FRAMES: u32 = 4096;
pub const FRAME_SIZE: u32 = 2048;
/// The largest interface MTU whose frames fit a chunk: 2048 − 256 (XDP
/// headroom) − 14 (Ethernet) − 4 (one VLAN tag).
pub const MAX_MTU: u32 = FRAME_SIZE - 256 - 18;
/// Ring sizes (entries, powers of two). FILL holds every chunk, so the
/// chunk accounting below can never overfill it.
const FILL_SIZE: u32 = FRAMES;
const COMP_SIZE: u32 = FRAMES;
const RX_SIZE: u32 = 2048;
const TX_SIZE: u32 = 2048;
/// Entry sizes: a UMEM address (FILL, COMPLETION), an `xdp_desc` (RX, TX).
const ADDR: usize = size_of::<u64>();
const DESC: usize = size_of::<xdp_desc>();
/// The mmap offsets of the FILL and COMPLETION rings (`off_t` in mmap(2);
/// libc declares them `c_ulonglong`).
const FILL_PGOFF: libc::off_t = libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t;
const COMPLETION_PGOFF: libc::off_t = libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t;
/// RX descriptors taken per poll.
const BATCH: u32 = 64;
/// Most VIPs the steering map holds.
const MAX_VIPS: u32 = 16384;

// ---- ring index arithmetic (sans-IO, unit-tested) ----

/// Entries a consumer may read: the indices run free and wrap at 2^32.
#[inline]
pub(crate) fn ring_ready(producer: u32, consumer: u32) -> u32 {
    producer.wrapping_sub(consumer)
}

/// Entries a producer may still write into a ring of `size` entries.
#[inline]
pub(crate) fn ring_free(producer: u32, consumer: u32, size: u32) -> u32 {
    size - ring_ready(producer, consumer)
}

/// The chunk that holds UMEM address `addr` (aligned chunk mode: the kernel
/// hands out and accepts any address inside a chunk).
#[inline]
pub(crate) fn chunk_base(addr: u64, frame_size: u32) -> u64 {
    addr & !(frame_size as u64 - 1)
}

// ---- the XDP program, as raw eBPF instructions ----

/// One `struct bpf_insn` (include/uapi/linux/bpf.h): opcode, dst/src
/// register nibbles, 16-bit offset, 32-bit immediate, little-endian.
pub(crate) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [
        code,
        (src << 4) | (dst & 0x0f),
        o[0],
        o[1],
        i[0],
        i[1],
        i[2],
        i[3],
    ]
}

// Opcodes used (BPF_CLASS | BPF_SIZE/OP | BPF_MODE/SRC); eBPF's, which
// libc does not have (it has the classic-BPF subset only).
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const STX_W: u8 = 0x63;
const LD_DW: u8 = 0x18;
const JGT_X: u8 = 0x2d;
const JNE_K: u8 = 0x55;
const JEQ_K: u8 = 0x15;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// `ETH_P_IP` (0x0800) as a 16-bit load from the frame reads it (network
/// byte order).
const ETH_P_IP_LOADED: i32 = (libc::ETH_P_IP as u16).to_be() as i32;
/// `src_reg` of `LD_DW` meaning "imm is a map file descriptor".
const PSEUDO_MAP_FD: u8 = 1;

/// The steering program:
///
/// ```text
///  if data + 34 > data_end            → XDP_PASS   (Ethernet + 20-byte IPv4)
///  if ethertype != 0x0800             → XDP_PASS   (ARP, VLAN, IPv6 ...)
///  key = IPv4 destination (offset 30)
///  if !vips[key]                      → XDP_PASS   (the host's own traffic)
///  return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)
/// ```
///
/// `bpf_redirect_map`'s flags' low bits are the action when the queue has
/// no socket, so a frame for an unserved queue goes to the kernel (and to
/// AF_PACKET) rather than being dropped.
pub(crate) fn program(vips_fd: i32, xsks_fd: i32) -> Vec<[u8; 8]> {
    vec![
        insn(MOV64_X, 6, 1, 0, 0),                     // 0: r6 = ctx
        insn(LDX_W, 2, 6, 0, 0),                       // 1: r2 = ctx->data
        insn(LDX_W, 3, 6, 4, 0),                       // 2: r3 = ctx->data_end
        insn(MOV64_X, 4, 2, 0, 0),                     // 3: r4 = r2
        insn(ADD64_K, 4, 0, 0, 34),                    // 4: r4 += 34
        insn(JGT_X, 4, 3, 16, 0),                      // 5: if r4 > r3 goto 22
        insn(LDX_H, 5, 2, 12, 0),                      // 6: r5 = ethertype (network order)
        insn(JNE_K, 5, 0, 14, ETH_P_IP_LOADED),        // 7: if r5 != htons(0x0800) goto 22
        insn(LDX_W, 5, 2, 30, 0),                      // 8: r5 = ip->daddr
        insn(STX_W, 10, 5, -4, 0),                     // 9: *(u32 *)(fp - 4) = r5
        insn(MOV64_X, 2, 10, 0, 0),                    // 10: r2 = fp
        insn(ADD64_K, 2, 0, 0, -4),                    // 11: r2 -= 4
        insn(LD_DW, 1, PSEUDO_MAP_FD, 0, vips_fd),     // 12: r1 = &vips
        insn(0, 0, 0, 0, 0),                           // 13: (second half of the 64-bit load)
        insn(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // 14
        insn(JEQ_K, 0, 0, 6, 0),                       // 15: if r0 == NULL goto 22
        insn(LDX_W, 2, 6, 16, 0),                      // 16: r2 = ctx->rx_queue_index
        insn(LD_DW, 1, PSEUDO_MAP_FD, 0, xsks_fd),     // 17: r1 = &xsks
        insn(0, 0, 0, 0, 0),                           // 18
        insn(MOV64_K, 3, 0, 0, XDP_PASS),              // 19: r3 = XDP_PASS (fallback action)
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),    // 20
        insn(EXIT, 0, 0, 0, 0),                        // 21: return r0
        insn(MOV64_K, 0, 0, 0, XDP_PASS),              // 22: r0 = XDP_PASS
        insn(EXIT, 0, 0, 0, 0),                        // 23
    ]
}

// ---- bpf(2) ----

/// `union bpf_attr`, zeroed; the kernel accepts a shorter attr than its own
/// and ignores (requires zero) nothing beyond what we pass.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Attr {
        let b = name.as_bytes();
        let n = b.len().min(15);
        self.0[off..off + n].copy_from_slice(&b[..n]);
        self
    }
}

fn bpf(cmd: i32, attr: &mut Attr) -> io::Result<i32> {
    // SAFETY: attr is a live, zero-padded 128-byte bpf_attr; every pointer
    // stored in it (keys, values, instructions, log) points to memory that
    // outlives this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

fn bpf_fd(cmd: i32, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: the kernel returned a new file descriptor (O_CLOEXEC) that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_create(kind: u32, key: u32, value: u32, max: u32, name: &str) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, kind)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max)
        .name(28, name);
    bpf_fd(BPF_MAP_CREATE, &mut a)
}

fn map_update(map: &OwnedFd, key: &u32, value: &u32) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key as *const u32 as u64)
        .u64(16, value as *const u32 as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

fn map_delete(map: &OwnedFd, key: &u32) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key as *const u32 as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

fn prog_load(insns: &[[u8; 8]]) -> io::Result<OwnedFd> {
    let license = b"Dual MIT/GPL\0";
    let load = |log: Option<&mut Vec<u8>>| {
        let mut a = Attr::new();
        a.u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .name(48, "podlb_xdp")
            .u32(68, BPF_XDP);
        if let Some(l) = log {
            a.u32(24, 1)
                .u32(28, l.len() as u32)
                .u64(32, l.as_mut_ptr() as u64);
            bpf_fd(BPF_PROG_LOAD, &mut a)
        } else {
            bpf_fd(BPF_PROG_LOAD, &mut a)
        }
    };
    load(None).or_else(|e| {
        // Load again with the verifier's log, for the error message.
        let mut log = vec![0u8; 1 << 16];
        match load(Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(
                    e.kind(),
                    format!("BPF_PROG_LOAD: {e}; verifier: {}", text.trim()),
                ))
            }
        }
    })
}

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (veth supports it).
    Native,
    /// Generic XDP on the skb, for drivers without XDP.
    Generic,
}

/// The steering program and its two maps on one interface. Dropping the last
/// reference closes the link and so detaches the program.
pub struct XdpProgram {
    ifindex: i32,
    vips: OwnedFd,
    xsks: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    pub mode: XdpMode,
}

impl XdpProgram {
    /// Creates the maps, loads the program and attaches it to `ifname`:
    /// native mode first, generic (SKB) mode if the driver has no XDP.
    /// Needs CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN).
    pub fn attach(ifname: &str, queues: u32) -> io::Result<XdpProgram> {
        let ifindex = sys::ifindex(ifname)?;
        let vips = map_create(BPF_MAP_TYPE_HASH, 4, 4, MAX_VIPS, "podlb_vips")
            .map_err(|e| io::Error::new(e.kind(), format!("creating the VIP map: {e}")))?;
        let xsks = map_create(BPF_MAP_TYPE_XSKMAP, 4, 4, queues.max(1), "podlb_xsks")
            .map_err(|e| io::Error::new(e.kind(), format!("creating the XSKMAP: {e}")))?;
        let prog = prog_load(&program(vips.as_raw_fd(), xsks.as_raw_fd()))?;
        let link = |flags: u32| {
            let mut a = Attr::new();
            a.u32(0, prog.as_raw_fd() as u32)
                .u32(4, ifindex as u32)
                .u32(8, BPF_XDP)
                .u32(12, flags);
            bpf_fd(BPF_LINK_CREATE, &mut a)
        };
        let (link, mode) = match link(XDP_FLAGS_DRV_MODE) {
            Ok(l) => (l, XdpMode::Native),
            Err(native) => match link(XDP_FLAGS_SKB_MODE) {
                Ok(l) => {
                    tracing::warn!(error = %native, "native XDP failed; using generic (SKB) mode");
                    (l, XdpMode::Generic)
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("attaching XDP to {ifname}: native: {native}; generic: {e}"),
                    ))
                }
            },
        };
        Ok(XdpProgram {
            ifindex,
            vips,
            xsks,
            _prog: prog,
            _link: link,
            mode,
        })
    }

    /// Steers frames for `ip` into the sockets (or stops).
    fn set_vip(&self, ip: Ipv4Addr, on: bool) -> io::Result<()> {
        // The program compares the address as loaded from the frame.
        let key = u32::from_ne_bytes(ip.octets());
        if on {
            map_update(&self.vips, &key, &1)
        } else {
            match map_delete(&self.vips, &key) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r,
            }
        }
    }
}

/// The number of RX queues of `ifname` (one AF_XDP socket each at most).
pub fn rx_queues(ifname: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

// ---- the AF_XDP socket ----

/// The kernel's counters of one socket (`XDP_STATISTICS`).
pub use libc::xdp_statistics as XdpStatistics;

/// Every [`XdpStatistics`] counter at zero (libc's struct has no `Default`).
const NO_STATS: XdpStatistics = XdpStatistics {
    rx_dropped: 0,
    rx_invalid_descs: 0,
    tx_invalid_descs: 0,
    rx_ring_full: 0,
    rx_fill_ring_empty_descs: 0,
    tx_ring_empty_descs: 0,
};

/// One mapped ring: producer and consumer indices, flags, descriptors.
struct Ring {
    map: Mapping,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    size: u32,
}

impl Ring {
    fn open(
        fd: RawFd,
        off: &xdp_ring_offset,
        pgoff: libc::off_t,
        size: u32,
        desc: usize,
    ) -> io::Result<Ring> {
        let len = off.desc as usize + size as usize * desc;
        Ok(Ring {
            map: Mapping::at(fd, len, pgoff)?,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            desc: off.desc as usize,
            size,
        })
    }
    fn index(&self, off: usize) -> &AtomicU32 {
        // SAFETY: the kernel's offsets lie inside the mapping, 4-byte aligned;
        // the index is shared with the kernel only through atomic accesses.
        unsafe { &*(self.map.ptr.as_ptr().add(off) as *const AtomicU32) }
    }
    fn producer(&self) -> &AtomicU32 {
        self.index(self.producer)
    }
    fn consumer(&self) -> &AtomicU32 {
        self.index(self.consumer)
    }
    fn needs_wakeup(&self) -> bool {
        self.index(self.flags).load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }
    /// Pointer to descriptor slot `i` (masked) of `width` bytes.
    fn slot(&self, i: u32, width: usize) -> *mut u8 {
        let k = (i & (self.size - 1)) as usize;
        // SAFETY: k < size, and the mapping holds size descriptors of
        // `width` bytes from `desc` (Ring::open).
        unsafe { self.map.ptr.as_ptr().add(self.desc + k * width) }
    }
    fn read_u64(&self, i: u32) -> u64 {
        // SAFETY: slot() is inside the mapping; the entry is ours (between
        // our consumer and the producer we loaded with Acquire).
        unsafe { std::ptr::read_unaligned(self.slot(i, ADDR).cast::<u64>()) }
    }
    fn write_u64(&self, i: u32, v: u64) {
        // SAFETY: as read_u64; the entry is between our producer and the
        // kernel's consumer, so the kernel does not read it yet.
        unsafe { std::ptr::write_unaligned(self.slot(i, ADDR).cast::<u64>(), v) }
    }
    /// The `xdp_desc` at `i`: (address, length).
    fn read_desc(&self, i: u32) -> (u64, u32) {
        // SAFETY: as read_u64, descriptors of size_of::<xdp_desc>() bytes.
        let d = unsafe { std::ptr::read_unaligned(self.slot(i, DESC).cast::<xdp_desc>()) };
        (d.addr, d.len)
    }
    fn write_desc(&self, i: u32, addr: u64, len: u32) {
        let d = xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as write_u64, descriptors of size_of::<xdp_desc>() bytes.
        unsafe { std::ptr::write_unaligned(self.slot(i, DESC).cast::<xdp_desc>(), d) }
    }
}

/// One AF_XDP socket bound to one RX queue, with its own UMEM.
pub struct XdpSocket {
    fd: OwnedFd,
    umem: Mapping,
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    /// Chunks userspace holds (not in any ring): base addresses.
    free: Vec<u64>,
    pub zerocopy: bool,
    /// Treat every TCP checksum as partial (see [`XdpDevice::open`]).
    recompute_csum: bool,
    last_stats: XdpStatistics,
}

// SAFETY: the mappings are owned by this socket object, which is moved to
// one worker thread and never shared.
unsafe impl Send for XdpSocket {}

fn getsockopt<T>(fd: RawFd, name: i32, v: &mut T) -> io::Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: v is a live, writable T of the length passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            name,
            v as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl XdpSocket {
    /// Opens a socket on queue `queue` of `ifindex`: zero-copy if the driver
    /// supports it, copy mode otherwise (veth).
    pub fn open(ifindex: i32, queue: u32, recompute_csum: bool) -> io::Result<XdpSocket> {
        // SAFETY: socket(2) with constant arguments; checked below.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        let umem = Mapping::at(-1, (FRAMES * FRAME_SIZE) as usize, 0)?;
        let reg = xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::setsockopt(s, SOL_XDP, XDP_UMEM_REG, &reg)?;
        sys::setsockopt(s, SOL_XDP, XDP_UMEM_FILL_RING, &FILL_SIZE)?;
        sys::setsockopt(s, SOL_XDP, XDP_UMEM_COMPLETION_RING, &COMP_SIZE)?;
        sys::setsockopt(s, SOL_XDP, XDP_RX_RING, &RX_SIZE)?;
        sys::setsockopt(s, SOL_XDP, XDP_TX_RING, &TX_SIZE)?;
        // SAFETY: xdp_mmap_offsets is plain data; zero is a valid value.
        let mut off: xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        getsockopt(s, XDP_MMAP_OFFSETS, &mut off)?;
        let fill = Ring::open(s, &off.fr, FILL_PGOFF, FILL_SIZE, ADDR)?;
        let comp = Ring::open(s, &off.cr, COMPLETION_PGOFF, COMP_SIZE, ADDR)?;
        let rx = Ring::open(s, &off.rx, XDP_PGOFF_RX_RING, RX_SIZE, DESC)?;
        let tx = Ring::open(s, &off.tx, XDP_PGOFF_TX_RING, TX_SIZE, DESC)?;
        let bind = |flags: u16| {
            let sa = libc::sockaddr_xdp {
                sxdp_family: AF_XDP as u16,
                sxdp_flags: flags | XDP_USE_NEED_WAKEUP,
                sxdp_ifindex: ifindex as u32,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: sa is a live sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    s,
                    (&raw const sa).cast::<libc::sockaddr>(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let zerocopy = match bind(XDP_ZEROCOPY) {
            Ok(()) => true,
            Err(_) => {
                bind(XDP_COPY).map_err(|e| {
                    io::Error::new(e.kind(), format!("binding AF_XDP to queue {queue}: {e}"))
                })?;
                false
            }
        };
        let mut sock = XdpSocket {
            fd,
            umem,
            fill,
            comp,
            rx,
            tx,
            free: (0..FRAMES as u64).map(|i| i * FRAME_SIZE as u64).collect(),
            zerocopy,
            recompute_csum,
            last_stats: NO_STATS,
        };
        sock.refill();
        Ok(sock)
    }

    /// Gives free chunks to the kernel (FILL ring).
    fn refill(&mut self) {
        let prod = self.fill.producer().load(Ordering::Relaxed);
        let cons = self.fill.consumer().load(Ordering::Acquire);
        let n = ring_free(prod, cons, self.fill.size).min(self.free.len() as u32);
        if n == 0 {
            return;
        }
        for i in 0..n {
            // n ≤ free.len(), so pop succeeds.
            let a = self.free.pop().unwrap_or(0);
            self.fill.write_u64(prod.wrapping_add(i), a);
        }
        // af_xdp.rst: entries are published by the producer index store.
        self.fill
            .producer()
            .store(prod.wrapping_add(n), Ordering::Release);
        if self.fill.needs_wakeup() {
            self.wake_rx();
        }
    }

    /// Takes back chunks the kernel has sent (COMPLETION ring).
    fn reap(&mut self) {
        let prod = self.comp.producer().load(Ordering::Acquire);
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        let n = ring_ready(prod, cons);
        for i in 0..n {
            let a = self.comp.read_u64(cons.wrapping_add(i));
            self.free.push(chunk_base(a, FRAME_SIZE));
        }
        if n > 0 {
            self.comp.consumer().store(prod, Ordering::Release);
        }
    }

    fn wake_rx(&self) {
        // SAFETY: recvfrom with no buffer only wakes the kernel's RX side.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Makes the kernel send what is on the TX ring. In copy mode one
    /// sendto sends a bounded batch (EAGAIN: more to do), so it repeats a few
    /// times while the ring is not drained.
    fn kick_tx(&self) -> io::Result<()> {
        for _ in 0..(TX_SIZE / 32) {
            let pending = ring_ready(
                self.tx.producer().load(Ordering::Relaxed),
                self.tx.consumer().load(Ordering::Acquire),
            );
            if pending == 0 || (self.zerocopy && !self.tx.needs_wakeup()) {
                return Ok(());
            }
            // SAFETY: sendto with no buffer only kicks the kernel's TX side.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => continue,
                    _ => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn poll<F: FnMut(&mut [u8], PacketMeta) -> bool>(&mut self, f: &mut F, st: &mut BatchStats) {
        self.reap();
        self.refill();
        let prod = self.rx.producer().load(Ordering::Acquire);
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let n = ring_ready(prod, cons).min(BATCH);
        if n == 0 {
            return;
        }
        let tx_prod = self.tx.producer().load(Ordering::Relaxed);
        let mut tx_room = ring_free(
            tx_prod,
            self.tx.consumer().load(Ordering::Acquire),
            self.tx.size,
        );
        let mut queued = 0u32;
        let meta = PacketMeta {
            csum_partial: self.recompute_csum,
            tx_keeps_partial: false,
            ..PacketMeta::default()
        };
        for i in 0..n {
            let (addr, len) = self.rx.read_desc(cons.wrapping_add(i));
            st.rx += 1;
            st.rx_bytes += len as u64;
            let base = chunk_base(addr, FRAME_SIZE);
            if addr + len as u64 > base + FRAME_SIZE as u64
                || base + FRAME_SIZE as u64 > self.umem.len as u64
            {
                st.malformed += 1;
                self.free.push(base);
                continue;
            }
            // SAFETY: [addr, addr+len) lies inside one chunk of the UMEM
            // (checked above); the chunk is ours from the RX ring until we
            // put it on the TX or FILL ring, and no other reference exists.
            let frame = unsafe {
                std::slice::from_raw_parts_mut(
                    self.umem.ptr.as_ptr().add(addr as usize),
                    len as usize,
                )
            };
            if f(frame, meta) {
                if tx_room > 0 {
                    self.tx.write_desc(tx_prod.wrapping_add(queued), addr, len);
                    queued += 1;
                    tx_room -= 1;
                } else {
                    st.tx_errors += 1;
                    self.free.push(base);
                }
            } else {
                self.free.push(base);
            }
        }
        self.rx
            .consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
        if queued > 0 {
            self.tx
                .producer()
                .store(tx_prod.wrapping_add(queued), Ordering::Release);
            st.tx += queued as u64;
            // On an error the descriptors stay on the ring; the next poll or
            // wait kicks again.
            let _ = self.kick_tx();
        }
        self.refill();
    }

    /// The kernel's counters for this socket (XDP_STATISTICS).
    pub fn statistics(&self) -> io::Result<XdpStatistics> {
        let mut s = NO_STATS;
        getsockopt(self.fd.as_raw_fd(), XDP_STATISTICS, &mut s)?;
        Ok(s)
    }
}

/// A worker's device with `backend = "af_xdp"`: the AF_XDP socket of its RX
/// queue (if the interface has that many queues) and an AF_PACKET socket for
/// every frame the XDP program passes to the kernel.
pub struct XdpDevice {
    xsk: Option<XdpSocket>,
    packet: PacketSocket,
    prog: Arc<XdpProgram>,
    /// Keeps the VIP map equal to the snapshot's VIPs (one device does).
    owner: bool,
    vips: Vec<Ipv4Addr>,
    polls: u32,
}

impl XdpDevice {
    /// `queue`: the RX queue whose socket this device owns (`None`: more
    /// workers than queues; AF_PACKET only). TCP checksums are recomputed
    /// when the interface is virtual (no `/sys/class/net/<if>/device`): a
    /// frame from a local sender (veth) may carry only the pseudo-header sum
    /// (CHECKSUM_PARTIAL), and XDP passes no metadata that says so.
    pub fn open(
        ifname: &str,
        packet: PacketSocket,
        prog: Arc<XdpProgram>,
        queue: Option<u32>,
    ) -> io::Result<XdpDevice> {
        let virt = !std::path::Path::new(&format!("/sys/class/net/{ifname}/device")).exists();
        // A frame must fit a chunk after the kernel's XDP headroom (256 B),
        // with room for one VLAN tag; larger frames the kernel would drop.
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))
            .ok()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(1500);
        if mtu > MAX_MTU {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("MTU {mtu} is larger than AF_XDP chunks of {FRAME_SIZE} B allow ({MAX_MTU}); lower the MTU or use backend = \"af_packet\""),
            ));
        }
        let xsk = match queue {
            Some(q) => {
                let x = XdpSocket::open(prog.ifindex, q, virt)?;
                let fd = x.fd.as_raw_fd() as u32;
                map_update(&prog.xsks, &q, &fd)
                    .map_err(|e| io::Error::new(e.kind(), format!("XSKMAP[{q}]: {e}")))?;
                Some(x)
            }
            None => None,
        };
        Ok(XdpDevice {
            xsk,
            packet,
            owner: queue == Some(0),
            prog,
            vips: Vec::new(),
            polls: 0,
        })
    }

    /// Whether the AF_XDP socket runs in zero-copy mode (`None`: no socket).
    pub fn zerocopy(&self) -> Option<bool> {
        self.xsk.as_ref().map(|x| x.zerocopy)
    }

    /// The AF_PACKET half (multicast memberships for VRRP).
    pub fn packet(&self) -> &PacketSocket {
        &self.packet
    }
}

impl Device for XdpDevice {
    fn poll<F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        f: &mut F,
    ) -> io::Result<BatchStats> {
        let mut st = self.packet.poll(f)?;
        if let Some(x) = &mut self.xsk {
            x.poll(f, &mut st);
            // Kernel-side drops, every 1024 polls (one getsockopt).
            self.polls = self.polls.wrapping_add(1);
            if self.polls.is_multiple_of(1024) {
                if let Ok(now) = x.statistics() {
                    let last = x.last_stats;
                    st.ring_drops +=
                        (now.rx_dropped + now.rx_ring_full + now.rx_fill_ring_empty_descs)
                            .saturating_sub(
                                last.rx_dropped + last.rx_ring_full + last.rx_fill_ring_empty_descs,
                            );
                    x.last_stats = now;
                }
            }
        }
        Ok(st)
    }

    fn rx_ring_drops(&mut self) -> u64 {
        // The AF_PACKET half; the AF_XDP rings' drops come with poll().
        self.packet.rx_ring_drops()
    }

    fn injector(&self) -> io::Result<Box<dyn Injector>> {
        self.packet.injector()
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let Some(x) = &mut self.xsk else {
            return self.packet.wait(timeout);
        };
        // Before sleeping: sent chunks back to FILL, so the kernel has room
        // for the frames that will wake us.
        x.reap();
        x.refill();
        let _ = x.kick_tx();
        let mut fds = [
            libc::pollfd {
                fd: self.packet.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: x.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid pollfd array of length 2 for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    fn addresses(&mut self, vips: &mut dyn Iterator<Item = Ipv4Addr>) {
        if !self.owner {
            return;
        }
        let mut want: Vec<Ipv4Addr> = vips.collect();
        want.sort_unstable();
        want.dedup();
        for ip in self
            .vips
            .iter()
            .filter(|ip| want.binary_search(ip).is_err())
        {
            if let Err(e) = self.prog.set_vip(*ip, false) {
                tracing::warn!(%ip, error = %e, "af_xdp: could not remove a VIP from the steering map");
            }
        }
        for ip in want
            .iter()
            .filter(|ip| self.vips.binary_search(ip).is_err())
        {
            if let Err(e) = self.prog.set_vip(*ip, true) {
                tracing::warn!(%ip, error = %e, "af_xdp: could not add a VIP to the steering map; its frames stay on AF_PACKET");
            }
        }
        self.vips = want;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_indices_wrap() {
        assert_eq!(ring_ready(5, 3), 2);
        assert_eq!(ring_free(5, 3, 8), 6);
        // Producer wrapped past 2^32, consumer not yet.
        assert_eq!(ring_ready(2, u32::MAX - 1), 4);
        assert_eq!(ring_free(2, u32::MAX - 1, 8), 4);
        assert_eq!(ring_free(7, 7, 2048), 2048);
        assert_eq!(ring_free(2048, 0, 2048), 0);
    }

    #[test]
    fn uapi_sizes_and_offsets() {
        // As this file spelled them out before it took them from libc.
        assert_eq!((ADDR, DESC), (8, 16));
        assert_eq!(
            (FILL_PGOFF, COMPLETION_PGOFF),
            (0x1_0000_0000, 0x1_8000_0000)
        );
        assert_eq!((XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING), (0, 0x8000_0000));
        assert_eq!(size_of::<xdp_umem_reg>(), 32);
        assert_eq!(size_of::<xdp_mmap_offsets>(), 128);
    }

    #[test]
    fn chunk_of_address() {
        assert_eq!(chunk_base(0, 2048), 0);
        assert_eq!(chunk_base(2048 + 256, 2048), 2048);
        assert_eq!(chunk_base(4095, 2048), 2048);
        assert_eq!(chunk_base(7 * 2048 + 2047, 2048), 7 * 2048);
    }

    #[test]
    fn instruction_encoding() {
        // r6 = r1: BPF_ALU64|BPF_MOV|BPF_X, dst 6, src 1.
        assert_eq!(insn(MOV64_X, 6, 1, 0, 0), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        // *(u32 *)(r10 - 4) = r5
        assert_eq!(
            insn(STX_W, 10, 5, -4, 0),
            [0x63, 0x5a, 0xfc, 0xff, 0, 0, 0, 0]
        );
        // r2 += -4
        assert_eq!(
            insn(ADD64_K, 2, 0, 0, -4),
            [0x07, 0x02, 0, 0, 0xfc, 0xff, 0xff, 0xff]
        );
        // call bpf_redirect_map
        assert_eq!(insn(CALL, 0, 0, 0, 51), [0x85, 0, 0, 0, 51, 0, 0, 0]);
    }

    #[test]
    fn program_shape() {
        let p = program(7, 9);
        assert_eq!(p.len(), 24);
        // Map loads carry the fds with src_reg = BPF_PSEUDO_MAP_FD.
        assert_eq!(p[12], [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[17], [0x18, 0x11, 0, 0, 9, 0, 0, 0]);
        // Every jump lands on "r0 = XDP_PASS; exit" at 22.
        for (pc, off) in [(5usize, 16i16), (7, 14), (15, 6)] {
            let o = i16::from_le_bytes([p[pc][2], p[pc][3]]);
            assert_eq!(o, off);
            assert_eq!(pc as i16 + 1 + o, 22);
        }
        assert_eq!(p[22], insn(MOV64_K, 0, 0, 0, XDP_PASS));
        assert_eq!(p[23][0], EXIT);
        assert_eq!(p[21][0], EXIT);
        // The ethertype test compares the big-endian 0x0800 as loaded.
        assert_eq!(
            i32::from_le_bytes([p[7][4], p[7][5], p[7][6], p[7][7]]),
            u16::from_ne_bytes(0x0800u16.to_be_bytes()) as i32
        );
    }
}
