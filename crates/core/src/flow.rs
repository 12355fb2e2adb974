//! The connection table: lock-free, shared by every data-plane worker.
//!
//! # Layout
//! Flows live in a fixed array of 64-byte slots (one cache line each). Slots
//! are grouped in buckets of [`WAYS`]; each bucket has one cache line of
//! *control words*, one per slot: `tag:32 | gen:24 | state:8`. A flow's key
//! hashes to two candidate buckets (two-choice hashing keeps buckets balanced
//! up to ~95% load). A lookup reads one control line, compares tags, and only
//! for a matching tag reads the slot: one or two cache misses per packet.
//!
//! Full-NAT replies carry a different 4-tuple (backend → VIP:nat_port), so a
//! second, *reverse* index maps that tuple to the slot: buckets of [`WAYS`]
//! words `tag:32 | slot+1:32`.
//!
//! # Concurrency
//! No locks. A writer claims an empty slot by CAS of its control word to
//! BUSY, fills the slot, then publishes LIVE with Release ordering. Readers
//! use the control word as a sequence lock: they read it (Acquire), read the
//! slot's fields, fence, and re-read it; if it changed, the slot was being
//! removed or reused and the read is retried. The generation in the control
//! word is bumped on every removal, so a reader can never mistake a reused
//! slot for the flow it looked up, and the per-flow TCP state word carries the
//! same generation so a late update cannot land on a successor flow.
//! Immutable fields (key, backend, NAT port) are written only while BUSY;
//! the mutable ones (last seen, TCP state, client MAC) are atomics.
//!
//! # Bounds and eviction
//! At most `capacity` flows are live. When a new flow finds both of its
//! buckets full (or the table at capacity), podlb evicts, among the 16 slots
//! of its two buckets: first any expired flow, then the oldest half-open
//! (SYN-only) or unanswered UDP flow, then the oldest closing flow (FIN or
//! RST seen), then the oldest answered UDP flow. Established TCP flows are
//! never evicted to make room: the new flow is dropped and counted
//! (`flow_table_full`). A SYN flood or a spray of UDP datagrams therefore
//! only displaces other half-open or unanswered flows.
//!
//! Keys are 5-tuples: TCP and UDP flows share the table, and the protocol
//! is part of both the flow key and the reverse key (NAT ports are per
//! protocol).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::bits::Low;
use crate::family::Addr;
use crate::hash::mix64;
use podlb_wire::MacAddr;

/// An address family the table can key flows by: how a slot stores its
/// three addresses (client, VIP, backend) and how a pair of addresses
/// enters the key hash. IPv4 flows are one 64-byte cache line; IPv6 flows
/// 80 bytes, 16-byte aligned (docs/decisions.md §67).
pub trait FlowAddr: Addr {
    /// The slot's address cells.
    #[doc(hidden)]
    type Cells: SlotAddrs<Self>;
    /// Zero-sized: gives a slot its alignment (64 for IPv4: one line).
    #[doc(hidden)]
    type Align: Default + Send + Sync;
    /// 64 bits of a pair of addresses for the key hash.
    fn pair(a: Self, b: Self) -> u64;
}

/// How a slot stores a flow's addresses (written while the slot is BUSY,
/// read under the control word's sequence lock).
#[doc(hidden)]
pub trait SlotAddrs<A>: Default + Send + Sync {
    fn store(&self, client: A, vip: A, backend: A);
    fn load(&self) -> (A, A, A);
}

#[doc(hidden)]
#[derive(Default)]
pub struct Cells4 {
    /// client << 32 | vip
    cv: AtomicU64,
    backend: AtomicU32,
}

impl SlotAddrs<u32> for Cells4 {
    #[inline(always)]
    fn store(&self, client: u32, vip: u32, backend: u32) {
        self.cv
            .store((u64::from(client) << 32) | u64::from(vip), Relaxed);
        self.backend.store(backend, Relaxed);
    }
    #[inline(always)]
    fn load(&self) -> (u32, u32, u32) {
        let cv = self.cv.load(Relaxed);
        ((cv >> 32).low(), cv.low(), self.backend.load(Relaxed))
    }
}

#[doc(hidden)]
#[derive(Default)]
pub struct Cells6([AtomicU64; 6]);

impl SlotAddrs<u128> for Cells6 {
    #[inline(always)]
    fn store(&self, client: u128, vip: u128, backend: u128) {
        for (i, a) in [client, vip, backend].into_iter().enumerate() {
            self.0[2 * i].store((a >> 64).low(), Relaxed);
            self.0[2 * i + 1].store(a.low(), Relaxed);
        }
    }
    #[inline(always)]
    fn load(&self) -> (u128, u128, u128) {
        let a = |i: usize| {
            (u128::from(self.0[2 * i].load(Relaxed)) << 64)
                | u128::from(self.0[2 * i + 1].load(Relaxed))
        };
        (a(0), a(1), a(2))
    }
}

#[doc(hidden)]
#[derive(Default)]
#[repr(align(64))]
pub struct Align64;

#[doc(hidden)]
#[derive(Default)]
#[repr(align(16))]
pub struct Align16;

impl FlowAddr for u32 {
    type Cells = Cells4;
    type Align = Align64;
    #[inline(always)]
    fn pair(a: u32, b: u32) -> u64 {
        (u64::from(a) << 32) | u64::from(b)
    }
}

impl FlowAddr for u128 {
    type Cells = Cells6;
    type Align = Align16;
    #[inline(always)]
    fn pair(a: u128, b: u128) -> u64 {
        a.fold().rotate_left(29) ^ mix64(b.fold())
    }
}

/// Slots per bucket: one cache line of 8 control words.
pub const WAYS: usize = 8;

const ST_EMPTY: u64 = 0;
const ST_BUSY: u64 = 1;
const ST_LIVE: u64 = 2;
const GEN_MASK: u32 = 0x00ff_ffff;
/// Most flows a table holds: slot indices, and slot + 1 in the reverse
/// index, must fit in 32 bits (a third more slots than flows, see `new`).
const MAX_CAPACITY: usize = 1 << 31;

#[inline]
fn ctrl(tag: u32, gen: u32, state: u64) -> u64 {
    (u64::from(tag) << 32) | (u64::from(gen & GEN_MASK) << 8) | state
}
#[inline]
fn ctrl_state(w: u64) -> u64 {
    w & 0xff
}
#[inline]
fn ctrl_gen(w: u64) -> u32 {
    Low::<u32>::low(w >> 8) & GEN_MASK
}
#[inline]
fn ctrl_tag(w: u64) -> u32 {
    (w >> 32) as u32
}
/// The tag a key's hash leaves in control and reverse words (bits 16..48).
#[inline]
fn tag_of(h: u64) -> u32 {
    (h >> 16).low()
}
/// The slot a reverse-index word points at (`slot + 1` in its low half;
/// `usize::MAX` truncated for a word whose low half is 0).
#[inline]
fn rev_slot(rw: u64) -> usize {
    Low::<u32>::low(rw).wrapping_sub(1) as usize
}

/// TCP state flags of a flow (low 8 bits of the state word).
pub mod tcp_state {
    /// A SYN from the client was seen.
    pub const SYN: u8 = 0x01;
    /// The client acknowledged: the handshake completed (or the flow was
    /// picked up mid-stream).
    pub const ESTABLISHED: u8 = 0x02;
    pub const FIN_CLIENT: u8 = 0x04;
    pub const FIN_BACKEND: u8 = 0x08;
    pub const RST: u8 = 0x10;
    /// The backend answered the SYN (its SYN-ACK passed podlb; `nat` and
    /// `vxlan` modes). A RST from the backend before it is a refusal.
    pub const SYN_ACK: u8 = 0x20;
    /// A UDP flow (no TCP state; set at creation, never cleared). Of the
    /// other bits a UDP flow uses only [`ANSWERED`].
    pub const UDP: u8 = 0x40;
    /// UDP: the backend has answered (a datagram came back through podlb).
    pub const ANSWERED: u8 = SYN_ACK;
}

/// The phase of a flow, derived from its TCP flags; decides its idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Only a SYN seen (half-open).
    Syn,
    Established,
    /// One side sent FIN.
    Fin,
    /// Both sides sent FIN, or RST.
    Closed,
    /// UDP, nothing back from the backend yet.
    UdpUnanswered,
    /// UDP, the backend has answered.
    UdpAnswered,
}

impl Phase {
    /// Every phase, in the order of [`Phase::index`].
    pub const ALL: [Phase; 6] = [
        Phase::Syn,
        Phase::Established,
        Phase::Fin,
        Phase::Closed,
        Phase::UdpUnanswered,
        Phase::UdpAnswered,
    ];

    /// The phase's position in [`Phase::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_flags(f: u8) -> Phase {
        use tcp_state::*;
        if f & UDP != 0 {
            return if f & ANSWERED != 0 {
                Phase::UdpAnswered
            } else {
                Phase::UdpUnanswered
            };
        }
        if f & RST != 0 || (f & FIN_CLIENT != 0 && f & FIN_BACKEND != 0) {
            Phase::Closed
        } else if f & (FIN_CLIENT | FIN_BACKEND) != 0 {
            Phase::Fin
        } else if f & ESTABLISHED != 0 {
            Phase::Established
        } else {
            Phase::Syn
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Syn => "syn",
            Phase::Established => "established",
            Phase::Fin => "fin",
            Phase::Closed => "closed",
            Phase::UdpUnanswered => "udp_unanswered",
            Phase::UdpAnswered => "udp_answered",
        }
    }
}

/// Idle timeouts per phase, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub syn_ms: u32,
    pub established_ms: u32,
    pub fin_ms: u32,
    pub close_ms: u32,
    pub udp_unanswered_ms: u32,
    pub udp_answered_ms: u32,
}

impl Timeouts {
    #[inline]
    pub fn for_phase(&self, p: Phase) -> u32 {
        match p {
            Phase::Syn => self.syn_ms,
            Phase::Established => self.established_ms,
            Phase::Fin => self.fin_ms,
            Phase::Closed => self.close_ms,
            Phase::UdpUnanswered => self.udp_unanswered_ms,
            Phase::UdpAnswered => self.udp_answered_ms,
        }
    }
}

/// Key of the client side of a flow (addresses of family `A` in host
/// order: `u32` IPv4, `u128` IPv6): the 5-tuple of the client's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey<A = u32> {
    pub client: A,
    pub vip: A,
    pub client_port: u16,
    pub vport: u16,
    /// IPv4 protocol number: 6 (TCP) or 17 (UDP).
    pub proto: u8,
}

impl<A: FlowAddr> FlowKey<A> {
    #[inline]
    fn hash(&self) -> u64 {
        mix64(
            A::pair(self.client, self.vip)
                ^ mix64(
                    ((self.client_port as u64) << 16)
                        | self.vport as u64
                        | (u64::from(self.proto) << 40),
                ),
        )
    }
}

/// Key of the backend side of a full-NAT flow: the reply's 4-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReverseKey<A = u32> {
    pub backend: A,
    pub vip: A,
    pub backend_port: u16,
    pub nat_port: u16,
    /// IPv4 protocol number: NAT ports are allocated per protocol.
    pub proto: u8,
}

impl<A: FlowAddr> ReverseKey<A> {
    #[inline]
    fn hash(&self) -> u64 {
        mix64(
            A::pair(self.backend, self.vip)
                ^ mix64(
                    ((self.backend_port as u64) << 16)
                        | self.nat_port as u64
                        | ((u64::from(self.proto) | 0x100) << 40),
                ),
        )
    }
}

impl<A: Copy> Flow<A> {
    /// The reverse key of a full-NAT flow: the 5-tuple of its backend's
    /// replies.
    #[inline]
    pub fn reverse_key(&self) -> ReverseKey<A> {
        ReverseKey {
            backend: self.backend,
            vip: self.key.vip,
            backend_port: self.backend_port,
            nat_port: self.nat_port,
            proto: self.key.proto,
        }
    }

    /// Whether the flow is UDP.
    #[inline]
    pub fn is_udp(&self) -> bool {
        self.key.proto == podlb_wire::ipv4::PROTO_UDP
    }
}

/// Everything stored about one flow, as read out of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow<A = u32> {
    pub key: FlowKey<A>,
    pub backend: A,
    pub backend_port: u16,
    /// Source port towards the backend (full NAT); 0 in DSR mode.
    pub nat_port: u16,
    /// Next-hop MAC of the client (learned from its frames).
    pub client_mac: MacAddr,
    /// Service index in the snapshot the flow was created under.
    pub service: u16,
    /// Stats slot of (service, backend), stable across reloads.
    pub stat: u16,
    pub tcp: u8,
    pub last_seen_ms: u32,
}

/// A handle to a live flow: where it is and which incarnation it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRef {
    pub slot: u32,
    gen: u32,
}

impl FlowRef {
    #[inline]
    fn new(slot: usize, gen: u32) -> FlowRef {
        FlowRef {
            slot: u32::try_from(slot).expect("slot indices fit in 32 bits (MAX_CAPACITY)"),
            gen,
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct Slot<A: FlowAddr> {
    _align: A::Align,
    /// client, VIP, backend
    addrs: A::Cells,
    /// client_port << 16 | vport
    ports: AtomicU32,
    /// backend_port << 16 | nat_port
    bports: AtomicU32,
    /// client mac (48 bits) | service << 48
    mac_svc: AtomicU64,
    /// stat slot (low 16 bits) | IPv4 protocol << 16
    stat: AtomicU32,
    /// gen:24 << 8 | tcp flags:8
    tcp: AtomicU32,
    last_seen: AtomicU32,
}

#[repr(C, align(64))]
#[derive(Default)]
struct Line([AtomicU64; WAYS]);

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Both buckets full of flows that may not be evicted, or at capacity.
    Full,
    /// The reverse (NAT) index had no room in either bucket.
    ReverseFull,
}

/// What the sweeper found and did in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub scanned: usize,
    pub expired: usize,
}

/// The lock-free connection table of one address family (`u32`: IPv4,
/// the default; `u128`: IPv6).
pub struct FlowTable<A: FlowAddr = u32> {
    ctrl: Box<[Line]>,
    slots: Box<[Slot<A>]>,
    rev: Box<[Line]>,
    /// Buckets in the flow index and in the reverse index.
    buckets: usize,
    capacity: usize,
    live: AtomicUsize,
    evictions: AtomicU64,
    /// Evictions by the victim's phase ([`Phase::index`]); expired victims
    /// are counted apart.
    evicted_phase: [AtomicU64; 6],
    evicted_expired: AtomicU64,
    huge_bytes: usize,
    pub timeouts: Timeouts,
}

/// The address of `r`, for a cache hint: the core says what the pipeline
/// will touch next and the caller's hint (a CPU prefetch in the IO layer, a
/// no-op in tests) decides what to do with it.
#[inline(always)]
fn addr<T>(r: &T) -> *const u8 {
    std::ptr::from_ref(r).cast()
}

impl<A: FlowAddr> FlowTable<A> {
    /// A table for at most `capacity` flows.
    pub fn new(capacity: usize, timeouts: Timeouts) -> FlowTable<A> {
        let capacity = capacity.clamp(WAYS * 2, MAX_CAPACITY);
        // Two-choice hashing into the less loaded of two 8-way buckets first
        // fails an insert at ~75% load; a third more slots than flows keeps
        // that point at or above capacity (see the fill test below).
        let buckets = (capacity + capacity / 3).div_ceil(WAYS);
        FlowTable {
            ctrl: (0..buckets).map(|_| Line::default()).collect(),
            slots: (0..buckets * WAYS).map(|_| Slot::default()).collect(),
            rev: (0..buckets).map(|_| Line::default()).collect(),
            buckets,
            capacity,
            live: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            evicted_phase: Default::default(),
            evicted_expired: AtomicU64::new(0),
            huge_bytes: 0,
            timeouts,
        }
    }

    /// The table's three arrays as (start address, length in bytes), for the
    /// IO layer to advise huge pages on (`podlb_io::mem::advise_huge_pages`):
    /// random accesses over ~100 B per flow miss the TLB with 4 KiB pages
    /// above a few MB. The core only names the memory; it makes no syscall.
    pub fn regions(&self) -> [(usize, usize); 3] {
        fn region<T>(s: &[T]) -> (usize, usize) {
            (s.as_ptr() as usize, std::mem::size_of_val(s))
        }
        [region(&self.slots), region(&self.ctrl), region(&self.rev)]
    }

    /// Records how many bytes the IO layer got backed by huge pages.
    pub fn set_huge_page_bytes(&mut self, bytes: usize) {
        self.huge_bytes = bytes;
    }

    /// Bytes of the table backed by (advised and collapsed) huge pages.
    pub fn huge_page_bytes(&self) -> usize {
        self.huge_bytes
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn len(&self) -> usize {
        self.live.load(Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// Evictions of flows past their idle timeout, then of live flows by
    /// their phase (in [`Phase::ALL`] order).
    pub fn evictions_by_reason(&self) -> (u64, [u64; 6]) {
        (
            self.evicted_expired.load(Relaxed),
            std::array::from_fn(|i| self.evicted_phase[i].load(Relaxed)),
        )
    }
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
    /// Bytes of memory the table holds (slots, control and reverse index).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<A>>()
            + (self.ctrl.len() + self.rev.len()) * std::mem::size_of::<Line>()
    }

    /// The two candidate buckets of a hash (multiply-shift range reduction:
    /// no division, any bucket count).
    #[inline]
    fn buckets_of(&self, h: u64) -> (usize, usize) {
        let n = self.buckets as u64;
        let b1 = (((h & 0xffff_ffff) * n) >> 32) as usize;
        let mut b2 = (((h >> 32) * n) >> 32) as usize;
        if b2 == b1 {
            b2 = (b1 + 1) % self.buckets;
        }
        (b1, b2)
    }

    /// Occupied (non-empty) entries of a bucket line.
    #[inline]
    fn load_of(line: &Line) -> usize {
        line.0.iter().filter(|w| w.load(Relaxed) != 0).count()
    }

    #[inline]
    fn ctrl_word(&self, slot: usize) -> &AtomicU64 {
        &self.ctrl[slot / WAYS].0[slot % WAYS]
    }

    /// Reads a slot under the sequence lock. `None` if it changed meanwhile.
    #[inline]
    fn read_slot(&self, slot: usize, w: u64) -> Option<Flow<A>> {
        let s = &self.slots[slot];
        let (client, vip, backend) = s.addrs.load();
        let ports = s.ports.load(Relaxed);
        let bports = s.bports.load(Relaxed);
        let mac_svc = s.mac_svc.load(Relaxed);
        let stat = s.stat.load(Relaxed);
        let tcp = s.tcp.load(Relaxed);
        let last = s.last_seen.load(Relaxed);
        fence(Acquire);
        if self.ctrl_word(slot).load(Relaxed) != w {
            return None;
        }
        Some(Flow {
            key: FlowKey {
                client,
                vip,
                client_port: (ports >> 16) as u16,
                vport: ports.low(),
                proto: (stat >> 16).low(),
            },
            backend,
            backend_port: (bports >> 16).low(),
            nat_port: bports.low(),
            client_mac: MacAddr::from_u64(mac_svc & 0xffff_ffff_ffff),
            service: (mac_svc >> 48) as u16,
            stat: stat.low(),
            tcp: tcp.low(),
            last_seen_ms: last,
        })
    }

    /// Starts loading the control lines a [`lookup`](Self::lookup) of `key`
    /// will read. Issued for a whole batch before the lookups, the batch's
    /// cache misses overlap (memory-level parallelism) instead of each
    /// lookup waiting out its own.
    #[inline]
    pub fn prefetch<H: Fn(*const u8)>(&self, hint: &H, key: &FlowKey<A>) {
        let (b1, b2) = self.buckets_of(key.hash());
        hint(addr(&self.ctrl[b1]));
        hint(addr(&self.ctrl[b2]));
    }

    /// Second prefetch pass, after [`prefetch`](Self::prefetch) of the same
    /// key had time to land: reads the control lines, and starts loading the
    /// slot of each way whose tag matches (a hit's second miss).
    #[inline]
    pub fn prefetch_slot<H: Fn(*const u8)>(&self, hint: &H, key: &FlowKey<A>) {
        let h = key.hash();
        let tag = tag_of(h);
        let (b1, b2) = self.buckets_of(h);
        for b in [b1, b2] {
            for (way, cw) in self.ctrl[b].0.iter().enumerate() {
                let w = cw.load(Relaxed);
                if ctrl_state(w) == ST_LIVE && ctrl_tag(w) == tag {
                    hint(addr(&self.slots[b * WAYS + way]));
                }
            }
        }
    }

    /// Second pass for a reverse key: the control line and slot each
    /// matching reverse entry points at.
    #[inline]
    pub fn prefetch_reverse_slot<H: Fn(*const u8)>(&self, hint: &H, key: &ReverseKey<A>) {
        let h = key.hash();
        let tag = tag_of(h);
        let (b1, b2) = self.buckets_of(h);
        for b in [b1, b2] {
            for rw in &self.rev[b].0 {
                let rw = rw.load(Relaxed);
                if rw != 0 && (rw >> 32) as u32 == tag {
                    let slot = rev_slot(rw);
                    if let Some(s) = self.slots.get(slot) {
                        hint(addr(self.ctrl_word(slot)));
                        hint(addr(s));
                    }
                }
            }
        }
    }

    /// Starts loading the reverse-index lines a
    /// [`lookup_reverse`](Self::lookup_reverse) of `key` will read.
    #[inline]
    pub fn prefetch_reverse<H: Fn(*const u8)>(&self, hint: &H, key: &ReverseKey<A>) {
        let (b1, b2) = self.buckets_of(key.hash());
        hint(addr(&self.rev[b1]));
        hint(addr(&self.rev[b2]));
    }

    /// Looks up the flow of a client-side 4-tuple.
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey<A>) -> Option<(FlowRef, Flow<A>)> {
        let h = key.hash();
        let tag = tag_of(h);
        let (b1, b2) = self.buckets_of(h);
        for b in [b1, b2] {
            'ways: for way in 0..WAYS {
                let cw = &self.ctrl[b].0[way];
                for _retry in 0..4 {
                    let w = cw.load(Acquire);
                    if ctrl_state(w) != ST_LIVE || ctrl_tag(w) != tag {
                        continue 'ways;
                    }
                    let slot = b * WAYS + way;
                    if let Some(f) = self.read_slot(slot, w) {
                        if f.key == *key {
                            return Some((FlowRef::new(slot, ctrl_gen(w)), f));
                        }
                        continue 'ways;
                    }
                }
            }
        }
        None
    }

    /// Looks up a full-NAT flow by the 4-tuple of a backend's reply.
    #[inline(always)]
    pub fn lookup_reverse(&self, key: &ReverseKey<A>) -> Option<(FlowRef, Flow<A>)> {
        let h = key.hash();
        let tag = tag_of(h);
        let (b1, b2) = self.buckets_of(h);
        for b in [b1, b2] {
            for way in 0..WAYS {
                let rw = self.rev[b].0[way].load(Acquire);
                if rw == 0 || (rw >> 32) as u32 != tag {
                    continue;
                }
                let slot = rev_slot(rw);
                if slot >= self.slots.len() {
                    continue;
                }
                let w = self.ctrl_word(slot).load(Acquire);
                if ctrl_state(w) != ST_LIVE {
                    continue;
                }
                if let Some(f) = self.read_slot(slot, w) {
                    if f.reverse_key() == *key {
                        return Some((FlowRef::new(slot, ctrl_gen(w)), f));
                    }
                }
            }
        }
        None
    }

    /// True if a live flow already uses this reverse tuple (NAT port taken).
    #[inline]
    pub fn reverse_in_use(&self, key: &ReverseKey<A>) -> bool {
        self.lookup_reverse(key).is_some()
    }

    /// Marks a flow as seen now, ORs TCP flags into its state and, when
    /// `client_mac` is given and differs, updates the learned client MAC.
    /// A flow removed or reused meanwhile is left alone.
    #[inline]
    pub fn touch(&self, r: FlowRef, now_ms: u32, tcp_flags: u8, client_mac: Option<MacAddr>) {
        let s = &self.slots[r.slot as usize];
        s.last_seen.store(now_ms, Relaxed);
        if tcp_flags != 0 {
            let mut cur = s.tcp.load(Relaxed);
            loop {
                if cur >> 8 != r.gen || Low::<u8>::low(cur) & tcp_flags == tcp_flags {
                    break;
                }
                match s
                    .tcp
                    .compare_exchange_weak(cur, cur | tcp_flags as u32, Relaxed, Relaxed)
                {
                    Ok(_) => break,
                    Err(c) => cur = c,
                }
            }
        }
        if let Some(mac) = client_mac {
            let cur = s.mac_svc.load(Relaxed);
            let m = mac.to_u64();
            if cur & 0xffff_ffff_ffff != m && s.tcp.load(Relaxed) >> 8 == r.gen {
                s.mac_svc.store((cur & !0xffff_ffff_ffff) | m, Relaxed);
            }
        }
    }

    /// Inserts a new flow. `flow.last_seen_ms` is the creation time.
    /// With `reverse`, the flow is also indexed by its backend-side tuple.
    pub fn insert(
        &self,
        flow: &Flow<A>,
        reverse: bool,
        now_ms: u32,
    ) -> Result<FlowRef, InsertError> {
        let h = flow.key.hash();
        let tag = tag_of(h);
        let (b1, b2) = self.buckets_of(h);
        let at_capacity = self.live.load(Relaxed) >= self.capacity;
        let slot = if at_capacity {
            self.evict_for(b1, b2, now_ms, false)
                .ok_or(InsertError::Full)?
        } else {
            // The less loaded bucket first (an empty control word is 0 only
            // at generation 0, so count states rather than raw words).
            let busy = |b: usize| {
                self.ctrl[b]
                    .0
                    .iter()
                    .filter(|w| ctrl_state(w.load(Relaxed)) != ST_EMPTY)
                    .count()
            };
            let (first, second) = if busy(b2) < busy(b1) {
                (b2, b1)
            } else {
                (b1, b2)
            };
            match self.claim_empty(first).or_else(|| self.claim_empty(second)) {
                Some(s) => s,
                None => self
                    .evict_for(b1, b2, now_ms, true)
                    .ok_or(InsertError::Full)?,
            }
        };
        // We own the slot (BUSY). Fill it.
        let (slot_idx, gen) = slot;
        let s = &self.slots[slot_idx];
        s.addrs.store(flow.key.client, flow.key.vip, flow.backend);
        s.ports.store(
            ((flow.key.client_port as u32) << 16) | flow.key.vport as u32,
            Relaxed,
        );
        s.bports.store(
            (u32::from(flow.backend_port) << 16) | u32::from(flow.nat_port),
            Relaxed,
        );
        s.mac_svc.store(
            flow.client_mac.to_u64() | ((flow.service as u64) << 48),
            Relaxed,
        );
        s.stat
            .store(flow.stat as u32 | u32::from(flow.key.proto) << 16, Relaxed);
        s.tcp.store((gen << 8) | flow.tcp as u32, Relaxed);
        s.last_seen.store(flow.last_seen_ms, Relaxed);
        if reverse && !self.rev_insert(&flow.reverse_key(), slot_idx) {
            // Give the slot back untouched.
            self.ctrl_word(slot_idx)
                .store(ctrl(0, gen.wrapping_add(1), ST_EMPTY), Release);
            return Err(InsertError::ReverseFull);
        }
        self.live.fetch_add(1, Relaxed);
        self.ctrl_word(slot_idx)
            .store(ctrl(tag, gen, ST_LIVE), Release);
        Ok(FlowRef::new(slot_idx, gen))
    }

    fn claim_empty(&self, b: usize) -> Option<(usize, u32)> {
        for way in 0..WAYS {
            let cw = &self.ctrl[b].0[way];
            let w = cw.load(Relaxed);
            if ctrl_state(w) == ST_EMPTY {
                let gen = ctrl_gen(w);
                if cw
                    .compare_exchange(w, ctrl(0, gen, ST_BUSY), Acquire, Relaxed)
                    .is_ok()
                {
                    return Some((b * WAYS + way, gen));
                }
            }
        }
        None
    }

    /// Picks a victim in the two buckets per the eviction policy, removes it
    /// and returns its slot claimed (BUSY) for the caller. At capacity
    /// (`take_empty` false) only a live victim makes room.
    fn evict_for(
        &self,
        b1: usize,
        b2: usize,
        now_ms: u32,
        take_empty: bool,
    ) -> Option<(usize, u32)> {
        // (rank, age) – lower rank is evicted first; among equals, oldest.
        let mut best: Option<(u8, u32, usize, u64, Phase)> = None;
        for b in [b1, b2] {
            for way in 0..WAYS {
                let slot = b * WAYS + way;
                let w = self.ctrl_word(slot).load(Acquire);
                if ctrl_state(w) == ST_EMPTY && take_empty {
                    // Freed meanwhile: take it.
                    let gen = ctrl_gen(w);
                    if self
                        .ctrl_word(slot)
                        .compare_exchange(w, ctrl(0, gen, ST_BUSY), Acquire, Relaxed)
                        .is_ok()
                    {
                        return Some((slot, gen));
                    }
                    continue;
                }
                if ctrl_state(w) != ST_LIVE {
                    continue;
                }
                let Some(f) = self.read_slot(slot, w) else {
                    continue;
                };
                let phase = Phase::from_flags(f.tcp);
                let age = super::elapsed_ms(now_ms, f.last_seen_ms);
                let rank = if age > self.timeouts.for_phase(phase) {
                    0
                } else {
                    match phase {
                        Phase::Syn | Phase::UdpUnanswered => 1,
                        Phase::Closed => 2,
                        Phase::Fin => 3,
                        // UDP has no close: an answered flow is evicted
                        // last, after every half-open and closing one.
                        Phase::UdpAnswered => 4,
                        Phase::Established => continue, // never evicted for a newcomer
                    }
                };
                let better = match best {
                    None => true,
                    Some((r, a, _, _, _)) => rank < r || (rank == r && age > a),
                };
                if better {
                    best = Some((rank, age, slot, w, phase));
                }
            }
        }
        let (rank, _, slot, w, phase) = best?;
        let gen = self.remove_claim(slot, w)?;
        self.evictions.fetch_add(1, Relaxed);
        if rank == 0 {
            self.evicted_expired.fetch_add(1, Relaxed);
        } else {
            self.evicted_phase[phase.index()].fetch_add(1, Relaxed);
        }
        Some((slot, gen))
    }

    /// Takes a LIVE slot out of service: BUSY with a new generation, reverse
    /// entry removed, live count decremented. Returns the new generation;
    /// the caller then owns the slot (BUSY).
    fn remove_claim(&self, slot: usize, w: u64) -> Option<u32> {
        let f = self.read_slot(slot, w)?;
        let gen = ctrl_gen(w).wrapping_add(1) & GEN_MASK;
        if self
            .ctrl_word(slot)
            .compare_exchange(w, ctrl(0, gen, ST_BUSY), AcqRel, Relaxed)
            .is_err()
        {
            return None;
        }
        // Invalidate late TCP-state updates aimed at the old incarnation.
        self.slots[slot].tcp.store(gen << 8, Relaxed);
        if f.nat_port != 0 {
            self.rev_remove(&f.reverse_key(), slot);
        }
        self.live.fetch_sub(1, Relaxed);
        Some(gen)
    }

    /// Removes a flow if it is still the incarnation `r` refers to.
    pub fn remove(&self, r: FlowRef) -> bool {
        let slot = r.slot as usize;
        let w = self.ctrl_word(slot).load(Acquire);
        if ctrl_state(w) != ST_LIVE || ctrl_gen(w) != r.gen {
            return false;
        }
        match self.remove_claim(slot, w) {
            Some(gen) => {
                self.ctrl_word(slot).store(ctrl(0, gen, ST_EMPTY), Release);
                true
            }
            None => false,
        }
    }

    fn rev_insert(&self, key: &ReverseKey<A>, slot: usize) -> bool {
        let h = key.hash();
        let word = ((h >> 16) << 32) | (slot as u64 + 1);
        let (b1, b2) = self.buckets_of(h);
        let (first, second) = if Self::load_of(&self.rev[b2]) < Self::load_of(&self.rev[b1]) {
            (b2, b1)
        } else {
            (b1, b2)
        };
        for b in [first, second] {
            for way in 0..WAYS {
                let rw = &self.rev[b].0[way];
                if rw.load(Relaxed) == 0 && rw.compare_exchange(0, word, Release, Relaxed).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    fn rev_remove(&self, key: &ReverseKey<A>, slot: usize) {
        let h = key.hash();
        let (b1, b2) = self.buckets_of(h);
        for b in [b1, b2] {
            for way in 0..WAYS {
                let rw = &self.rev[b].0[way];
                let v = rw.load(Relaxed);
                if v != 0
                    && v & 0xffff_ffff == slot as u64 + 1
                    && rw.compare_exchange(v, 0, Release, Relaxed).is_ok()
                {
                    return;
                }
            }
        }
    }

    /// Visits slots `[from, from+count)` (wrapping), removes expired flows and
    /// calls `visit` for each flow still live. Returns what it did.
    pub fn sweep(
        &self,
        from: usize,
        count: usize,
        now_ms: u32,
        mut visit: impl FnMut(&Flow<A>),
    ) -> SweepReport {
        let n = self.slots.len();
        let mut rep = SweepReport::default();
        for i in 0..count.min(n) {
            let slot = (from + i) % n;
            rep.scanned += 1;
            let w = self.ctrl_word(slot).load(Acquire);
            if ctrl_state(w) != ST_LIVE {
                continue;
            }
            let Some(f) = self.read_slot(slot, w) else {
                continue;
            };
            let age = super::elapsed_ms(now_ms, f.last_seen_ms);
            if age > self.timeouts.for_phase(Phase::from_flags(f.tcp)) {
                if let Some(gen) = self.remove_claim(slot, w) {
                    // A packet may have refreshed it between the read and the
                    // claim; its flow then re-creates by pickup. The window is
                    // a few instructions and the flow was idle for a timeout.
                    self.ctrl_word(slot).store(ctrl(0, gen, ST_EMPTY), Release);
                    rep.expired += 1;
                }
                continue;
            }
            visit(&f);
        }
        rep
    }

    /// Calls `visit` for every live flow (no expiry). For status pages.
    pub fn for_each(&self, visit: impl FnMut(&Flow<A>) -> bool) {
        self.for_each_in(0, self.slots.len(), visit);
    }

    /// Calls `visit` for each live flow in slots `[from, from+count)` (no
    /// wrapping, no expiry) until it returns false; returns whether it went
    /// through all of them. For walks in steps (the sync table dump).
    pub fn for_each_in(
        &self,
        from: usize,
        count: usize,
        mut visit: impl FnMut(&Flow<A>) -> bool,
    ) -> bool {
        let end = from.saturating_add(count).min(self.slots.len());
        for slot in from.min(end)..end {
            let w = self.ctrl_word(slot).load(Acquire);
            if ctrl_state(w) != ST_LIVE {
                continue;
            }
            if let Some(f) = self.read_slot(slot, w) {
                if !visit(&f) {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const T: Timeouts = Timeouts {
        syn_ms: 10_000,
        established_ms: 3_600_000,
        fin_ms: 60_000,
        close_ms: 10_000,
        udp_unanswered_ms: 30_000,
        udp_answered_ms: 120_000,
    };

    fn flow(client: u32, port: u16, backend: u32, nat: u16, tcp: u8, now: u32) -> Flow {
        Flow {
            key: FlowKey {
                client,
                vip: 0xc612_0064,
                client_port: port,
                vport: 80,
                proto: 6,
            },
            backend,
            backend_port: 80,
            nat_port: nat,
            client_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            service: 0,
            stat: 3,
            tcp,
            last_seen_ms: now,
        }
    }

    #[test]
    fn insert_lookup_reverse_remove() {
        let t = FlowTable::new(4096, T);
        let f = flow(1, 1000, 21, 40000, tcp_state::SYN, 5);
        let r = t.insert(&f, true, 5).unwrap();
        let (r2, got) = t.lookup(&f.key).unwrap();
        assert_eq!(r, r2);
        assert_eq!(got, f);
        let rk = ReverseKey {
            backend: 21,
            vip: f.key.vip,
            backend_port: 80,
            nat_port: 40000,
            proto: 6,
        };
        assert_eq!(t.lookup_reverse(&rk).unwrap().1, f);
        t.touch(
            r,
            9,
            tcp_state::ESTABLISHED,
            Some(MacAddr([2, 0, 0, 0, 0, 7])),
        );
        let got = t.lookup(&f.key).unwrap().1;
        assert_eq!(got.tcp, tcp_state::SYN | tcp_state::ESTABLISHED);
        assert_eq!(got.last_seen_ms, 9);
        assert_eq!(got.client_mac, MacAddr([2, 0, 0, 0, 0, 7]));
        assert!(t.remove(r));
        assert!(!t.remove(r), "a stale ref removes nothing");
        assert!(t.lookup(&f.key).is_none());
        assert!(t.lookup_reverse(&rk).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn stale_ref_cannot_touch_successor() {
        let t = FlowTable::new(4096, T);
        let f = flow(1, 1000, 21, 0, tcp_state::SYN, 0);
        let r = t.insert(&f, false, 0).unwrap();
        t.remove(r);
        let r2 = t.insert(&f, false, 0).unwrap();
        assert_eq!(r.slot, r2.slot, "same key lands in the same first free way");
        t.touch(r, 1, tcp_state::RST, None);
        assert_eq!(t.lookup(&f.key).unwrap().1.tcp, tcp_state::SYN);
    }

    #[test]
    fn sweep_expires_by_phase() {
        let t = FlowTable::new(4096, T);
        t.insert(&flow(1, 1, 21, 0, tcp_state::SYN, 0), false, 0)
            .unwrap();
        t.insert(
            &flow(2, 1, 21, 0, tcp_state::SYN | tcp_state::ESTABLISHED, 0),
            false,
            0,
        )
        .unwrap();
        t.insert(
            &flow(3, 1, 21, 0, tcp_state::ESTABLISHED | tcp_state::RST, 0),
            false,
            0,
        )
        .unwrap();
        let mut live = 0;
        let rep = t.sweep(0, t.slot_count(), 10_001, |_| live += 1);
        assert_eq!(rep.expired, 2);
        assert_eq!(live, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_table_evicts_half_open_never_established() {
        let t = FlowTable::new(16, T); // capacity 16 in 3 buckets of 8
        assert_eq!(t.slot_count(), 24);
        // Fill to capacity: 8 established, 8 half-open.
        let (mut est, mut n) = (Vec::new(), 0u32);
        while t.len() < 16 {
            n += 1;
            let state = if est.len() < 8 {
                tcp_state::ESTABLISHED
            } else {
                tcp_state::SYN
            };
            let f = flow(n, 1, 21, 0, state, n);
            if t.insert(&f, false, n).is_ok() && state == tcp_state::ESTABLISHED {
                est.push(f.key);
            }
        }
        // A SYN flood of newcomers: each evicts a half-open flow or is
        // refused; no established flow is ever displaced.
        let (mut ok, mut full) = (0, 0);
        for i in 0..200u32 {
            match t.insert(
                &flow(100_000 + i, 1, 21, 0, tcp_state::SYN, 1000 + i),
                false,
                1000 + i,
            ) {
                Ok(_) => ok += 1,
                Err(InsertError::Full) => full += 1,
                Err(e) => panic!("{e:?}"),
            }
            assert!(t.len() <= 16);
        }
        assert_eq!(ok + full, 200);
        assert_eq!(
            t.evictions(),
            ok,
            "every accepted newcomer displaced a half-open flow"
        );
        for k in est {
            assert!(t.lookup(&k).is_some(), "established flow evicted");
        }
        // A table of established flows only refuses newcomers.
        let t = FlowTable::new(16, T);
        let mut n = 0;
        while t.len() < 16 {
            n += 1;
            let _ = t.insert(&flow(n, 1, 21, 0, tcp_state::ESTABLISHED, 1), false, 1);
        }
        assert_eq!(
            t.insert(&flow(999_999, 1, 21, 0, tcp_state::SYN, 2), false, 2),
            Err(InsertError::Full)
        );
        // ... until they have been idle past their timeout.
        assert!(t
            .insert(
                &flow(999_999, 1, 21, 0, tcp_state::SYN, 3_600_002),
                false,
                3_600_002
            )
            .is_ok());
    }

    #[test]
    fn capacity_bound_holds() {
        let t = FlowTable::new(1000, T);
        for i in 0..5000u32 {
            let _ = t.insert(&flow(i, 1, 21, 0, tcp_state::SYN, i), false, i);
        }
        assert!(t.len() <= t.capacity(), "{} > {}", t.len(), t.capacity());
        assert!(t.evictions() > 0);
        // Every eviction has its reason: half-open victims here (the
        // timestamps are 1 ms apart, far within the SYN timeout).
        let (expired, by_phase) = t.evictions_by_reason();
        assert_eq!(expired + by_phase.iter().sum::<u64>(), t.evictions());
        assert_eq!(by_phase[Phase::Syn.index()], t.evictions());
    }

    /// Distinct flows go in without a failure up to the configured capacity.
    #[test]
    fn fills_to_capacity_without_spurious_failures() {
        for cap in [4096usize, 100_000] {
            let t = FlowTable::new(cap, T);
            let mut failed = 0;
            for i in 0..u32::try_from(cap).unwrap() {
                let f = flow(
                    0x0a00_0000 + i / 50_000,
                    (i % 50_000) as u16,
                    21,
                    (i % 60_000) as u16 + 1,
                    tcp_state::SYN,
                    1,
                );
                let mut f = f;
                f.backend = 0x0b00_0000 + i / 60_000;
                if t.insert(&f, true, 1).is_err() {
                    failed += 1;
                }
            }
            assert!(
                failed * 1000 <= cap,
                "capacity {cap}: {failed} inserts failed"
            );
        }
    }

    #[test]
    fn memory_per_flow_at_one_million() {
        let t: FlowTable = FlowTable::new(1_000_000, T);
        let per = t.memory_bytes() as f64 / 1_000_000.0;
        assert!(per <= 128.0, "{per} bytes per flow");
        assert_eq!(std::mem::size_of::<Slot<u32>>(), 64, "one cache line");
    }

    /// IPv6 flows (issue 17): 80-byte slots, at most 160 B per flow.
    #[test]
    fn memory_per_flow_ipv6_at_one_million() {
        let t: FlowTable<u128> = FlowTable::new(1_000_000, T);
        let per = t.memory_bytes() as f64 / 1_000_000.0;
        assert!(per <= 160.0, "{per} bytes per IPv6 flow");
        assert_eq!(std::mem::size_of::<Slot<u128>>(), 80);
        assert_eq!(std::mem::align_of::<Slot<u128>>(), 16);
    }

    /// An IPv6 flow keeps all of its 128-bit addresses, is found by its
    /// key and its reverse key, and addresses that differ only in their
    /// high half are different flows.
    #[test]
    fn ipv6_flows_insert_lookup_reverse_remove() {
        let t: FlowTable<u128> = FlowTable::new(1024, T);
        let a = |lo: u128, hi: u128| (hi << 64) | lo;
        let f = |client: u128| Flow {
            key: FlowKey {
                client,
                vip: a(0x100, 0x2001_0002_0000_0000),
                client_port: 40000,
                vport: 80,
                proto: 6,
            },
            backend: a(0x21, 0x2001_0002_0000_0000),
            backend_port: 8080,
            nat_port: 1025,
            client_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            service: 1,
            stat: 2,
            tcp: tcp_state::SYN,
            last_seen_ms: 5,
        };
        let one = f(a(0x10, 0x2001_0002_0000_0000));
        let r = t.insert(&one, true, 5).unwrap();
        assert_eq!(t.lookup(&one.key).map(|(_, x)| x), Some(one));
        assert_eq!(
            t.lookup_reverse(&one.reverse_key()).map(|(_, x)| x),
            Some(one)
        );
        let twin = f(a(0x10, 0x2001_0003_0000_0000));
        assert!(
            t.lookup(&twin.key).is_none(),
            "the high half is part of the key"
        );
        assert!(t.remove(r));
        assert!(t.lookup(&one.key).is_none() && t.lookup_reverse(&one.reverse_key()).is_none());
    }

    /// Multi-thread stress: writers insert/remove their own flows while
    /// readers look them up. Invariants: a lookup never returns a flow with a
    /// different key than asked (no torn reads), a flow a writer holds live
    /// is always found with exactly the fields it wrote, and the live count
    /// returns to zero.
    #[test]
    fn concurrent_stress_invariants() {
        let t = Arc::new(FlowTable::new(1 << 14, T));
        let threads: Vec<_> = (0..4u32)
            .map(|id| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..20_000u32 {
                        let client = (id << 24) | (round % 3000);
                        let f = flow(
                            client,
                            (round % 7) as u16,
                            client ^ 0x55,
                            Low::<u16>::low(client) | 1,
                            tcp_state::SYN,
                            round,
                        );
                        if let Ok(r) = t.insert(&f, true, round) {
                            held.push((r, f));
                        }
                        // Everyone we hold must be found, intact, both ways.
                        if let Some(&(r, f)) = held.get(round as usize % held.len().max(1)) {
                            let (r2, got) = t.lookup(&f.key).expect("held flow vanished");
                            assert_eq!(r2, r);
                            assert_eq!(got.key, f.key);
                            assert_eq!(got.backend, f.backend);
                            let rk = ReverseKey {
                                backend: f.backend,
                                vip: f.key.vip,
                                backend_port: 80,
                                nat_port: f.nat_port,
                                proto: 6,
                            };
                            assert_eq!(
                                t.lookup_reverse(&rk).expect("reverse vanished").1.key,
                                f.key
                            );
                        }
                        // Foreign lookups: must either miss or match exactly.
                        let other = FlowKey {
                            client: ((id + 1) % 4) << 24 | (round % 3000),
                            vip: 0xc612_0064,
                            client_port: (round % 7) as u16,
                            vport: 80,
                            proto: 6,
                        };
                        if let Some((_, got)) = t.lookup(&other) {
                            assert_eq!(got.key, other);
                        }
                        if held.len() > 64 {
                            let (r, _) = held.swap_remove((round as usize * 7) % held.len());
                            assert!(t.remove(r));
                        }
                    }
                    for (r, _) in held {
                        assert!(t.remove(r));
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.len(), 0);
        let mut any = false;
        t.for_each(|_| {
            any = true;
            false
        });
        assert!(!any);
    }

    /// UDP flows share the table: keys and reverse keys carry the
    /// protocol, and they expire by their own timeouts.
    #[test]
    fn udp_flows_have_their_own_keys_and_timeouts() {
        let t = FlowTable::new(4096, T);
        let tcp = flow(
            1,
            1000,
            21,
            40000,
            tcp_state::SYN | tcp_state::ESTABLISHED,
            0,
        );
        let mut udp = flow(1, 1000, 21, 40000, tcp_state::UDP, 0);
        udp.key.proto = 17;
        t.insert(&tcp, true, 0).unwrap();
        t.insert(&udp, true, 0).unwrap();
        assert_eq!(t.lookup(&udp.key).unwrap().1, udp);
        assert_eq!(t.lookup_reverse(&udp.reverse_key()).unwrap().1, udp);
        assert_eq!(t.lookup_reverse(&tcp.reverse_key()).unwrap().1, tcp);
        let mut answered = flow(2, 1000, 21, 40001, tcp_state::UDP | tcp_state::ANSWERED, 0);
        answered.key.proto = 17;
        t.insert(&answered, true, 0).unwrap();
        assert_eq!(Phase::from_flags(answered.tcp), Phase::UdpAnswered);
        // 31 s: the unanswered one is gone, the answered one stays.
        let rep = t.sweep(0, t.slot_count(), 31_000, |_| {});
        assert_eq!(rep.expired, 1);
        assert!(t.lookup(&udp.key).is_none());
        assert!(t.lookup(&answered.key).is_some());
        let rep = t.sweep(0, t.slot_count(), 121_000, |_| {});
        assert_eq!(rep.expired, 1);
        assert!(t.lookup(&answered.key).is_none());
        assert!(t.lookup(&tcp.key).is_some(), "established TCP: one hour");
        assert_eq!(Phase::ALL.map(|p| p.index()), [0, 1, 2, 3, 4, 5]);
    }
}
