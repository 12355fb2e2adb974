//! AF_PACKET attachment: a TPACKET_V3 RX ring, and a TX path that is either
//! `sendmmsg` straight out of the RX ring (no copy in userspace) or a
//! TPACKET_V2 TX ring (one copy, one syscall per batch).
//!
//! Frames are rewritten in place inside the mapped RX block; a block is
//! handed back to the kernel only after the frames taken from it were sent.
//! With PACKET_VNET_HDR the kernel passes GSO frames whole, preceded by a
//! virtio-net header, and the same header goes back out with them, so large
//! TCP segments and partial checksums cross podlb untouched.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::{self, setsockopt, VirtioNetHdr, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use crate::TxMode;
use crate::{BatchStats, Device, Injector};
use podlb_wire::PacketMeta;

use libc::{
    tpacket2_hdr, tpacket3_hdr, tpacket_block_desc, tpacket_hdr_v1, tpacket_hdr_variant1,
    tpacket_req, tpacket_req3, PACKET_FANOUT, PACKET_FANOUT_HASH, PACKET_IGNORE_OUTGOING,
    PACKET_QDISC_BYPASS, PACKET_RX_RING, PACKET_TX_RING, PACKET_VERSION, PACKET_VNET_HDR,
    SOL_PACKET, TP_STATUS_AVAILABLE, TP_STATUS_CSUMNOTREADY, TP_STATUS_KERNEL,
    TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TP_STATUS_VLAN_VALID, TP_STATUS_WRONG_FORMAT,
};
use std::mem::{offset_of, size_of};

const TPACKET_V2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
const TPACKET_V3: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
/// `ETH_P_ALL`, the protocol field of a socket that sees every frame.
const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

// Offsets of the fields read from the mapped rings, from libc's copies of
// linux/if_packet.h: the block descriptor's status, packet count and first
// packet (V3), ...
const BD_STATUS: usize =
    offset_of!(tpacket_block_desc, hdr) + offset_of!(tpacket_hdr_v1, block_status);
const BD_NUM_PKTS: usize =
    offset_of!(tpacket_block_desc, hdr) + offset_of!(tpacket_hdr_v1, num_pkts);
const BD_FIRST: usize =
    offset_of!(tpacket_block_desc, hdr) + offset_of!(tpacket_hdr_v1, offset_to_first_pkt);
// ... `struct tpacket3_hdr` ...
const H3_NEXT: usize = offset_of!(tpacket3_hdr, tp_next_offset);
const H3_SNAPLEN: usize = offset_of!(tpacket3_hdr, tp_snaplen);
const H3_LEN: usize = offset_of!(tpacket3_hdr, tp_len);
const H3_STATUS: usize = offset_of!(tpacket3_hdr, tp_status);
const H3_MAC: usize = offset_of!(tpacket3_hdr, tp_mac);
const H3_VLAN_TCI: usize =
    offset_of!(tpacket3_hdr, hv1) + offset_of!(tpacket_hdr_variant1, tp_vlan_tci);
const H3_SIZE: usize = size_of::<tpacket3_hdr>();
// ... and `struct tpacket2_hdr`; data of a TX frame starts at
// TPACKET2_HDRLEN - sizeof(sockaddr_ll) (packet_mmap.rst).
const H2_LEN: usize = offset_of!(tpacket2_hdr, tp_len);
const H2_SNAPLEN: usize = offset_of!(tpacket2_hdr, tp_snaplen);
const H2_MAC: usize = offset_of!(tpacket2_hdr, tp_mac);
const H2_VLAN_TCI: usize = offset_of!(tpacket2_hdr, tp_vlan_tci);
const H2_DATA: usize = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();
/// V2 RX slot size: a 64 KiB GSO frame, its virtio-net header and the
/// tpacket2 header, rounded up to pages.
const V2_FRAME: usize = 17 * 4096;
/// V2 frames handled per poll before the TX flush and release.
const V2_BATCH: usize = 64;

/// Settings of one AF_PACKET socket.
#[derive(Debug, Clone)]
pub struct PacketConfig {
    pub block_size: u32,
    pub block_count: u32,
    pub block_timeout_ms: u32,
    pub vnet_hdr: bool,
    pub tx: TxMode,
    /// Join this PACKET_FANOUT group (hash mode) to spread flows over workers.
    pub fanout: Option<u16>,
    pub rx_ring: RxRing,
}

/// The RX ring layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxRing {
    /// TPACKET_V3: variable-size frames packed in blocks; a block reaches
    /// userspace when full or when its retire timeout (≥ 1 ms) fires, which
    /// puts a latency floor under light load.
    V3,
    /// TPACKET_V2: one fixed-size slot per frame, handed over per frame.
    V2,
}

/// A mapped ring, unmapped on drop.
pub(super) struct Mapping {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

impl Mapping {
    fn new(fd: i32, len: usize) -> io::Result<Mapping> {
        Mapping::at(fd, len, 0)
    }

    /// Maps `len` bytes of `fd` at `offset` (AF_XDP rings live at fixed
    /// page offsets of the socket); `fd == -1` maps anonymous memory.
    pub(super) fn at(fd: i32, len: usize, offset: i64) -> io::Result<Mapping> {
        let anon = if fd < 0 { libc::MAP_ANONYMOUS } else { 0 };
        // SAFETY: mmap of a ring on a valid socket (or anonymous memory); the
        // kernel chooses the address; the result is checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE | anon,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p as *mut u8)
                .ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing borrows the
        // ring once its owner is being dropped.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

// SAFETY: the mapping is plain shared memory owned by one socket object; it
// is moved between threads, never shared.
unsafe impl Send for Mapping {}

fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol.to_be() as i32,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("AF_PACKET socket (needs CAP_NET_RAW): {e}"),
        ));
    }
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_to(fd: &OwnedFd, ifindex: i32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a valid sockaddr_ll and its size is passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum TxPath {
    Sendmmsg {
        iovs: Vec<libc::iovec>,
        msgs: Vec<libc::mmsghdr>,
    },
    Ring(TxRing),
}

struct TxRing {
    fd: OwnedFd,
    map: Mapping,
    frame_size: usize,
    frames: usize,
    next: usize,
    queued: usize,
}

/// One AF_PACKET socket with a TPACKET_V3 RX ring bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ring: Mapping,
    /// V3: block size; V2: slot size.
    block_size: usize,
    /// V3: blocks; V2: slots.
    blocks: usize,
    next_block: usize,
    version: RxRing,
    vnet: bool,
    tx: TxPath,
    /// V2 slots taken in this batch, released after the TX flush.
    held: Vec<usize>,
    ifindex: i32,
}

// SAFETY: the raw pointers inside (ring, iovecs) refer to memory owned by
// this object; it is used by one thread at a time.
unsafe impl Send for PacketSocket {}

/// Largest frame podlb passes (a 64 KiB GSO frame plus headers).
pub const MAX_FRAME: usize = 65536 + 64;

/// What a tpacket header (V2 or V3) says about one received frame.
#[derive(Debug, Clone, Copy)]
struct FrameHdr {
    /// Offset of the MAC header inside the slot or block.
    start: usize,
    /// Bytes in the ring (`tp_snaplen`) and on the wire (`tp_len`).
    snap: usize,
    len: usize,
    /// `tp_status` and the VLAN TCI the device stripped.
    status: u32,
    vlan: u32,
}

impl PacketSocket {
    pub fn open(ifname: &str, cfg: &PacketConfig) -> io::Result<PacketSocket> {
        let ifindex = sys::ifindex(ifname)?;
        // Protocol 0 until the ring is set up, so nothing is queued before it.
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        let version = if cfg.rx_ring == RxRing::V3 {
            TPACKET_V3
        } else {
            TPACKET_V2
        };
        setsockopt(raw, SOL_PACKET, PACKET_VERSION, &version)?;
        if cfg.vnet_hdr {
            setsockopt(raw, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        }
        // Our own transmissions must not come back up our RX ring.
        setsockopt(raw, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32)?;
        // Frames are already final: skip the qdisc layer on transmit.
        setsockopt(raw, SOL_PACKET, PACKET_QDISC_BYPASS, &1i32)?;
        let (block_size, blocks) = match cfg.rx_ring {
            RxRing::V3 => (cfg.block_size as usize, cfg.block_count as usize),
            // Same ring memory as V3, cut in frame-sized slots.
            RxRing::V2 => (
                V2_FRAME,
                (cfg.block_size as usize * cfg.block_count as usize / V2_FRAME).max(16),
            ),
        };
        let req = tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            // V3 packs frames of any size into a block; frame_size only has
            // to be consistent: frame_nr * frame_size == block_nr * block_size.
            tp_frame_size: 2048.min(cfg.block_size),
            tp_frame_nr: (block_size * blocks / 2048.min(block_size)) as u32,
            tp_retire_blk_tov: cfg.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let set = match cfg.rx_ring {
            RxRing::V3 => setsockopt(raw, SOL_PACKET, PACKET_RX_RING, &req),
            RxRing::V2 => {
                let req = tpacket_req {
                    tp_block_size: V2_FRAME as u32,
                    tp_block_nr: blocks as u32,
                    tp_frame_size: V2_FRAME as u32,
                    tp_frame_nr: blocks as u32,
                };
                setsockopt(raw, SOL_PACKET, PACKET_RX_RING, &req)
            }
        };
        set.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("PACKET_RX_RING ({} x {} bytes): {e}", blocks, block_size),
            )
        })?;
        let ring = Mapping::new(raw, block_size * blocks)?;
        bind_to(&fd, ifindex, ETH_P_ALL)?;
        if let Some(group) = cfg.fanout {
            let arg: u32 = group as u32 | (PACKET_FANOUT_HASH << 16);
            setsockopt(raw, SOL_PACKET, PACKET_FANOUT, &arg)?;
        }
        let tx = match cfg.tx {
            TxMode::Sendmmsg => TxPath::Sendmmsg {
                iovs: Vec::with_capacity(1024),
                msgs: Vec::with_capacity(1024),
            },
            TxMode::Ring => TxPath::Ring(TxRing::open(ifindex, cfg.vnet_hdr)?),
        };
        Ok(PacketSocket {
            fd,
            ring,
            block_size,
            blocks,
            next_block: 0,
            version: cfg.rx_ring,
            vnet: cfg.vnet_hdr,
            tx,
            held: Vec::with_capacity(V2_BATCH),
            ifindex,
        })
    }

    /// Makes the interface accept frames to `mac` (PACKET_ADD_MEMBERSHIP):
    /// a unicast address (the VRRP virtual MAC) or a multicast group.
    /// The socket's descriptor, for a caller that polls it with others.
    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn add_membership(
        &self,
        ifindex: i32,
        mac: podlb_wire::MacAddr,
        multicast: bool,
    ) -> io::Result<()> {
        let mut mr_address = [0u8; 8];
        mr_address[..6].copy_from_slice(&mac.0);
        let kind = if multicast {
            libc::PACKET_MR_MULTICAST
        } else {
            libc::PACKET_MR_UNICAST
        };
        let mr = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: kind as libc::c_ushort,
            mr_alen: 6,
            mr_address,
        };
        setsockopt(
            self.fd.as_raw_fd(),
            SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mr,
        )
    }

    fn block_status(&self, b: usize) -> &AtomicU32 {
        let off = if self.version == RxRing::V3 {
            BD_STATUS
        } else {
            0
        };
        // SAFETY: b < blocks, so the offset is inside the mapping; the status
        // word (V3 block descriptor or V2 frame header) is 4-byte aligned
        // (blocks and slots are page aligned) and shared with the kernel,
        // hence accessed atomically.
        unsafe {
            AtomicU32::from_ptr(self.ring.ptr.as_ptr().add(b * self.block_size + off) as *mut u32)
        }
    }

    /// Hands one frame to `f` and queues it for TX if `f` says so. `hdr`
    /// locates it inside the slot/block at `base`, `limit` bytes long.
    #[inline]
    fn take<F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        f: &mut F,
        base: *mut u8,
        limit: usize,
        hdr: FrameHdr,
        st: &mut BatchStats,
    ) {
        let FrameHdr {
            start,
            snap,
            len,
            status,
            vlan,
        } = hdr;
        let vlen = if self.vnet { VNET_HDR_LEN } else { 0 };
        st.rx += 1;
        st.rx_bytes += snap as u64;
        if start < vlen || start + snap > limit {
            st.malformed += 1;
            return;
        }
        // SAFETY: [start-vlen, start+snap) lies inside this block or slot
        // (checked above); it belongs to userspace until released, and no
        // other reference to it exists during this call.
        let all = unsafe { std::slice::from_raw_parts_mut(base.add(start - vlen), snap + vlen) };
        let (hdr, frame) = all.split_at_mut(vlen);
        let vh = if self.vnet {
            VirtioNetHdr::read(hdr)
        } else {
            None
        };
        let csum_partial = if self.vnet {
            vh.is_some_and(|h| h.flags & VNET_F_NEEDS_CSUM != 0)
        } else {
            status & TP_STATUS_CSUMNOTREADY != 0
        };
        // Cut-short and VLAN-stripped frames go to `f` too: only the forward
        // pipeline knows whether they were addressed to podlb (a counted
        // drop) or to someone else (ignored).
        let meta = PacketMeta {
            csum_partial,
            tx_keeps_partial: self.vnet,
            vlan_stripped: status & TP_STATUS_VLAN_VALID != 0 && vlan & 0x0fff != 0,
            truncated: snap < len,
            gso_size: vh.map_or(0, |h| h.gso()),
        };
        if f(frame, meta) {
            let (p, n) = (all.as_mut_ptr(), all.len());
            self.queue_tx(p, n, st);
        }
    }

    /// Shows `pre` the frames the next `poll_v2` will take (at most one
    /// batch), read-only. A frame that becomes ready after this scan is
    /// simply taken without its look-ahead.
    fn look_ahead_v2<P: FnMut(&[u8])>(&self, pre: &mut P) {
        let mut i = self.next_block;
        for _ in 0..V2_BATCH {
            if self.block_status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: i < slots: the slot is inside the mapping.
            let base = unsafe { self.ring.ptr.as_ptr().add(i * self.block_size) };
            let snap = rd32(base, H2_SNAPLEN) as usize;
            let mac = rd16(base, H2_MAC) as usize;
            if mac + snap <= self.block_size {
                // SAFETY: [mac, mac+snap) lies inside the slot (checked), which
                // belongs to userspace (TP_STATUS_USER) until poll_v2 releases
                // it; this shared view ends before poll_v2 takes a mutable one.
                pre(unsafe { std::slice::from_raw_parts(base.add(mac), snap) });
            }
            i = (i + 1) % self.blocks;
        }
    }

    fn poll_v2<F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        f: &mut F,
    ) -> io::Result<BatchStats> {
        let mut st = BatchStats::default();
        while self.held.len() < V2_BATCH {
            let i = self.next_block;
            if self.block_status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: i < slots: the slot is inside the mapping and ours until released.
            let base = unsafe { self.ring.ptr.as_ptr().add(i * self.block_size) };
            let status = rd32(base, 0);
            let len = rd32(base, H2_LEN) as usize;
            let snap = rd32(base, H2_SNAPLEN) as usize;
            let mac = rd16(base, H2_MAC) as usize;
            let vlan = rd16(base, H2_VLAN_TCI) as u32;
            let hdr = FrameHdr {
                start: mac,
                snap,
                len,
                status,
                vlan,
            };
            self.take(f, base, self.block_size, hdr, &mut st);
            self.held.push(i);
            self.next_block = (i + 1) % self.blocks;
        }
        self.flush_tx(&mut st);
        for k in 0..self.held.len() {
            self.block_status(self.held[k])
                .store(TP_STATUS_KERNEL, Ordering::Release);
        }
        self.held.clear();
        Ok(st)
    }
}

#[inline]
fn rd32(base: *const u8, off: usize) -> u32 {
    // SAFETY: callers pass offsets they bounds-checked against the block.
    unsafe { std::ptr::read_unaligned(base.add(off) as *const u32) }
}
#[inline]
fn rd16(base: *const u8, off: usize) -> u16 {
    // SAFETY: as rd32.
    unsafe { std::ptr::read_unaligned(base.add(off) as *const u16) }
}

impl Device for PacketSocket {
    fn poll_prefetched<P: FnMut(&[u8], u8), F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        pre: &mut P,
        f: &mut F,
    ) -> io::Result<BatchStats> {
        if self.version == RxRing::V2 {
            for pass in 0..crate::PREFETCH_PASSES {
                self.look_ahead_v2(&mut |frame| pre(frame, pass));
            }
        }
        self.poll(f)
    }

    fn poll<F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        f: &mut F,
    ) -> io::Result<BatchStats> {
        if self.version == RxRing::V2 {
            return self.poll_v2(f);
        }
        let mut st = BatchStats::default();
        let b = self.next_block;
        if self.block_status(b).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return Ok(st);
        }
        // SAFETY: b < blocks; the block belongs to userspace until we store
        // TP_STATUS_KERNEL into its status below.
        let base = unsafe { self.ring.ptr.as_ptr().add(b * self.block_size) };
        let num = rd32(base, BD_NUM_PKTS) as usize;
        let mut off = rd32(base, BD_FIRST) as usize;
        for _ in 0..num {
            if off + H3_SIZE > self.block_size {
                break;
            }
            let snap = rd32(base, off + H3_SNAPLEN) as usize;
            let len = rd32(base, off + H3_LEN) as usize;
            let status = rd32(base, off + H3_STATUS);
            let mac = rd16(base, off + H3_MAC) as usize;
            let vlan = rd32(base, off + H3_VLAN_TCI);
            let next = rd32(base, off + H3_NEXT) as usize;
            let hdr = FrameHdr {
                start: off + mac,
                snap,
                len,
                status,
                vlan,
            };
            self.take(f, base, self.block_size, hdr, &mut st);
            if next == 0 {
                break;
            }
            off += next;
        }
        self.flush_tx(&mut st);
        self.block_status(b)
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.next_block = (b + 1) % self.blocks;
        Ok(st)
    }

    fn rx_ring_drops(&mut self) -> u64 {
        sys::packet_ring_drops(self.fd.as_raw_fd()).unwrap_or(0)
    }

    fn injector(&self) -> io::Result<Box<dyn Injector>> {
        PacketInjector::open_index(self.ifindex).map(|i| Box::new(i) as Box<dyn Injector>)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.block_status(self.next_block).load(Ordering::Acquire) & TP_STATUS_USER != 0 {
            return Ok(());
        }
        sys::wait_readable(self.fd.as_raw_fd(), timeout).map(|_| ())
    }
}

impl PacketSocket {
    fn queue_tx(&mut self, p: *mut u8, n: usize, st: &mut BatchStats) {
        match &mut self.tx {
            TxPath::Sendmmsg { iovs, .. } => {
                iovs.push(libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: n,
                });
                if iovs.len() == iovs.capacity() {
                    self.flush_tx(st);
                }
            }
            TxPath::Ring(r) => {
                // SAFETY: p/n describe a frame inside the RX block we own.
                let frame = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
                if !r.push(frame) {
                    r.flush();
                    if !r.push(frame) {
                        st.tx_errors += 1;
                    }
                }
            }
        }
    }

    fn flush_tx(&mut self, st: &mut BatchStats) {
        match &mut self.tx {
            TxPath::Sendmmsg { iovs, msgs } => {
                if iovs.is_empty() {
                    return;
                }
                msgs.clear();
                for iov in iovs.iter_mut() {
                    // SAFETY: mmsghdr is plain data; zero is valid (no name, no control).
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = iov as *mut libc::iovec;
                    m.msg_hdr.msg_iovlen = 1;
                    msgs.push(m);
                }
                let mut sent = 0;
                while sent < msgs.len() {
                    // SAFETY: msgs[sent..] are valid mmsghdrs whose iovecs point
                    // into the RX block we still own; the socket is bound, so no
                    // address is needed.
                    let r = unsafe {
                        libc::sendmmsg(
                            self.fd.as_raw_fd(),
                            msgs.as_mut_ptr().add(sent),
                            (msgs.len() - sent) as u32,
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if r <= 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        // The frame at `sent` was refused: count it and go on.
                        st.tx_errors += 1;
                        sent += 1;
                        continue;
                    }
                    st.tx += r as u64;
                    sent += r as usize;
                }
                iovs.clear();
            }
            TxPath::Ring(r) => {
                st.tx += r.queued as u64;
                r.flush();
            }
        }
    }
}

impl TxRing {
    fn open(ifindex: i32, vnet: bool) -> io::Result<TxRing> {
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        setsockopt(raw, SOL_PACKET, PACKET_VERSION, &TPACKET_V2)?;
        if vnet {
            setsockopt(raw, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        }
        setsockopt(raw, SOL_PACKET, PACKET_QDISC_BYPASS, &1i32)?;
        let frame_size = (MAX_FRAME + H2_DATA + VNET_HDR_LEN).next_power_of_two();
        let frames = 128;
        let req = tpacket_req {
            tp_block_size: frame_size as u32,
            tp_block_nr: frames as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(raw, SOL_PACKET, PACKET_TX_RING, &req)?;
        let map = Mapping::new(raw, frame_size * frames)?;
        // Protocol 0: this socket only sends.
        bind_to(&fd, ifindex, 0)?;
        Ok(TxRing {
            fd,
            map,
            frame_size,
            frames,
            next: 0,
            queued: 0,
        })
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: i < frames; each frame header starts frame-aligned with its
        // 4-byte status word, shared with the kernel, so accessed atomically.
        unsafe { AtomicU32::from_ptr(self.map.ptr.as_ptr().add(i * self.frame_size) as *mut u32) }
    }

    /// Copies a frame into the next free slot. False if the ring is full.
    fn push(&mut self, frame: &[u8]) -> bool {
        if frame.len() + H2_DATA > self.frame_size {
            return false;
        }
        let s = self.status(self.next).load(Ordering::Acquire);
        if s != TP_STATUS_AVAILABLE && s != TP_STATUS_WRONG_FORMAT {
            return false;
        }
        // SAFETY: the slot is free (status AVAILABLE), lies inside the mapping,
        // and frame fits in it (checked above).
        unsafe {
            let base = self.map.ptr.as_ptr().add(self.next * self.frame_size);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), base.add(H2_DATA), frame.len());
            std::ptr::write_unaligned(base.add(H2_LEN) as *mut u32, frame.len() as u32);
        }
        self.status(self.next)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (self.next + 1) % self.frames;
        self.queued += 1;
        true
    }

    fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        // SAFETY: send(2) with no buffer asks the kernel to transmit the
        // frames marked SEND_REQUEST in the mapped ring.
        unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        self.queued = 0;
    }
}

/// A send-only AF_PACKET socket for frames the control plane builds (ARP
/// requests, gratuitous ARP). It receives nothing.
pub struct PacketInjector {
    fd: OwnedFd,
}

impl PacketInjector {
    pub fn open(ifname: &str) -> io::Result<PacketInjector> {
        PacketInjector::open_index(sys::ifindex(ifname)?)
    }

    /// As [`open`](PacketInjector::open), by interface index.
    pub fn open_index(ifindex: i32) -> io::Result<PacketInjector> {
        let fd = packet_socket(0)?;
        bind_to(&fd, ifindex, 0)?;
        Ok(PacketInjector { fd })
    }
}

impl Injector for PacketInjector {
    fn inject(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is a valid buffer for its length; the socket is bound.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn inject_all(&self, frames: &mut dyn Iterator<Item = &[u8]>) -> (u64, u64) {
        const BATCH: usize = 64;
        let (mut ok, mut failed) = (0u64, 0u64);
        loop {
            // SAFETY: iovec is plain data; all-zero is a valid value.
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: mmsghdr is plain data; zero is valid (no name, no control).
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            let mut n = 0;
            for f in (&mut *frames).take(BATCH) {
                iovs[n] = libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                };
                n += 1;
            }
            if n == 0 {
                return (ok, failed);
            }
            for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()).take(n) {
                m.msg_hdr.msg_iov = iov as *mut libc::iovec;
                m.msg_hdr.msg_iovlen = 1;
            }
            let mut sent = 0;
            while sent < n {
                // SAFETY: msgs[sent..n] are valid mmsghdrs whose iovecs point
                // at frames borrowed from `frames` for this call; the socket
                // is bound, so no address is needed.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        msgs.as_mut_ptr().add(sent),
                        (n - sent) as u32,
                        0,
                    )
                };
                if r <= 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    failed += 1;
                    sent += 1;
                    continue;
                }
                ok += r as u64;
                sent += r as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets taken from libc are the kernel's (linux/if_packet.h on
    /// 64-bit Linux), as this file used to spell them out.
    #[test]
    fn ring_header_offsets_match_the_kernel_abi() {
        assert_eq!((BD_STATUS, BD_NUM_PKTS, BD_FIRST), (8, 12, 16));
        assert_eq!(
            (
                H3_NEXT,
                H3_SNAPLEN,
                H3_LEN,
                H3_STATUS,
                H3_MAC,
                H3_VLAN_TCI,
                H3_SIZE
            ),
            (0, 12, 16, 20, 24, 32, 48)
        );
        assert_eq!(
            (H2_LEN, H2_SNAPLEN, H2_MAC, H2_VLAN_TCI, H2_DATA),
            (4, 8, 12, 24, 32)
        );
        assert_eq!((TPACKET_V2, TPACKET_V3, ETH_P_ALL), (1, 2, 3));
    }
}
