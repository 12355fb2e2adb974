//! Connection synchronisation between the VRRP master and its backups
//! (issue 3, item 6). Sans-IO: no socket, no thread, no clock read; the
//! control plane owns the UDP socket and passes `now_ms` in.
//!
//! # Data flow
//! ```text
//!  master                                              backup
//!  worker: Forwarder::new_flow ─► SyncQueue (per worker, lock-free, never blocks)
//!  control: drain queues + refresh_due() in the sweep
//!           ─► Encoder ─► datagram ─ UDP unicast ─► decode() ─► apply() ─► FlowTable
//! ```
//! A worker pushes an `Upsert` when it creates a flow and a `Remove` when a
//! SYN recycles a closing flow, IPv4 and IPv6 flows alike (the queue holds
//! one ring per family; a backup applies IPv6 events to its IPv6 table). A full queue drops the event (counted by
//! [`SyncQueue::dropped`], exported as `sync_dropped`); nothing on the data
//! path ever waits for sync. The master's sweeper re-sends every live flow
//! about once per refresh period ([`refresh_due`]), which repairs dropped
//! events and lost datagrams, carries TCP state changes (FIN, RST) and keeps
//! the backups' copies, which see no traffic, from expiring.
//!
//! # Wire format (versions 1 and 2)
//! One UDP datagram, all integers in network byte order. Version 1
//! carries IPv4 entries, version 2 IPv6 entries; a datagram holds entries
//! of one family only. Datagrams without entries (hellos, "table sent")
//! are always version 1.
//!
//! | offset | size | field     | meaning                                          |
//! |-------:|-----:|-----------|--------------------------------------------------|
//! | 0      | 4    | magic     | `b"PLBS"`                                        |
//! | 4      | 1    | version   | 1: IPv4 entries (or none); 2: IPv6 entries       |
//! | 5      | 1    | flags     | bit 0: an authentication tag follows; bit 1: the whole table was sent before this one (count 0); others 0 |
//! | 6      | 2    | count     | number of entries that follow                    |
//! | 8      | 4    | sender    | random per process: a new value = a restarted peer |
//! | 12     | 4    | sequence  | per sender, +1 per datagram (wraps)              |
//! | 16     | L×n  | entries   | `count` entries, laid out as below (L = 32 in version 1, 68 in version 2) |
//!
//! The datagram is exactly `16 + L × count` bytes; anything else is
//! rejected whole. The [`Encoder`] keeps datagrams at or below
//! [`MAX_DATAGRAM`] (1400) bytes, i.e. [`MAX_ENTRIES`] (43) IPv4 or
//! [`MAX_ENTRIES6`] (20) IPv6 entries, so they cross any path with a
//! 1500-byte MTU (and VXLAN overhead) unfragmented.
//!
//! One IPv4 entry (version 1, 32 bytes):
//!
//! | offset | size | field        | meaning                                      |
//! |-------:|-----:|--------------|----------------------------------------------|
//! | 0      | 1    | op           | 1 = upsert, 2 = remove; other values rejected |
//! | 1      | 1    | tcp          | TCP state flags (`flow::tcp_state`)           |
//! | 2      | 6    | client_mac   | next-hop MAC of the client (0 = unknown)      |
//! | 8      | 4    | client       | client IPv4 address                           |
//! | 12     | 4    | vip          | VIP                                           |
//! | 16     | 2    | client_port  |                                               |
//! | 18     | 2    | vport        | service port on the VIP                       |
//! | 20     | 4    | backend      | backend IPv4 address                          |
//! | 24     | 2    | backend_port |                                               |
//! | 26     | 2    | nat_port     | full-NAT source port; 0 in DSR mode           |
//! | 28     | 4    | idle_ms      | ms since the master last saw the flow         |
//!
//! One IPv6 entry (version 2, 68 bytes): the same fields in the same
//! order, with 16-byte addresses.
//!
//! | offset | size | field        | meaning                                      |
//! |-------:|-----:|--------------|----------------------------------------------|
//! | 0      | 1    | op           | 1 = upsert, 2 = remove; other values rejected |
//! | 1      | 1    | tcp          | TCP state flags (`flow::tcp_state`)           |
//! | 2      | 6    | client_mac   | next-hop MAC of the client (0 = unknown)      |
//! | 8      | 16   | client       | client IPv6 address                           |
//! | 24     | 16   | vip          | VIP (IPv6)                                    |
//! | 40     | 2    | client_port  |                                               |
//! | 42     | 2    | vport        | service port on the VIP                       |
//! | 44     | 16   | backend      | backend IPv6 address                          |
//! | 60     | 2    | backend_port |                                               |
//! | 62     | 2    | nat_port     | full-NAT source port; 0 in DSR mode           |
//! | 64     | 4    | idle_ms      | ms since the master last saw the flow         |
//!
//! # Rolling upgrade (version-1 peers)
//! A podlb that speaks version 2 decodes version-1 datagrams as before,
//! and sends IPv4 entries, hellos and "table sent" in version 1, so an old
//! master and a new backup (or the reverse) sync IPv4 flows as they did.
//! An old peer rejects a version-2 datagram whole (`decode_errors`, and
//! its sequence numbers show as `gaps` there): its IPv6 flows are not
//! synced, and fall back to mid-stream pickup as before. Entries of the
//! two families never share a datagram, so an IPv6 flow can never cost an
//! old peer an IPv4 one. The encoder holds one batch at a time; an event
//! of the other family closes it (decisions.md §70).
//!
//! `idle_ms` is relative because the two processes' millisecond clocks are
//! unrelated: the backup stamps its copy `now - idle_ms`, so its copy expires
//! when the master's would (give or take one refresh period).
//!
//! # Why the client MAC travels with the flow
//! Replies from a backend are sent to the client's next-hop MAC, which the
//! master learned from the client's frames and stores per flow
//! (`Flow::client_mac`). A backup that installed the flow without it would,
//! after takeover, address the backend's reply to 00:00:00:00:00:00 until
//! the client's next frame taught it the MAC (`steer_to_client` in
//! `forward/nat.rs` uses the stored MAC as is), and a flow whose next segment
//! comes from the server side (a download) would stall. Six bytes per entry
//! avoid that; the backup's data plane still updates the MAC from the
//! client's frames as usual. A zero MAC in an entry means "unknown" and
//! never overwrites a MAC the backup already has.
//!
//! # Authentication
//! The codec itself is unauthenticated: flag bit 0 ([`FLAG_AUTH`]) marks a
//! datagram that carries a keyed tag after the entries, and `decode` rejects
//! any flag, so an authenticated datagram is never accepted unverified. The
//! IO side (`control::sync`) adds and checks the tag (HMAC-SHA-256 with
//! `vrrp.sync_key_file`, truncated to 16 bytes) and clears the flag before
//! decoding; `balance::hash` is not cryptographic and is not used for it.
//!
//! # Loss window
//! A flow is protected once its `Upsert` has reached the backup: normally
//! within one control tick (≤ 20 ms) plus one network hop of its SYN. Flows
//! created in that window before the master dies, flows whose event was
//! dropped (full queue, lost datagram) and not yet refreshed, and flows the
//! backup could not install (`table_full`, `unknown_service`) are not synced;
//! with pickup on they fall back to the same Maglev choice (the backend is
//! the same if the backend set is), but in full-NAT mode they get a new NAT
//! port, which the backend does not know, so they are reset. State changes
//! (FIN, RST) reach the backup within one refresh period.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;

use crate::elapsed_ms;
use crate::family::Addr;
use crate::flow::{tcp_state, Flow, FlowAddr, FlowKey, FlowTable, ReverseKey};
use crate::service::Snapshot;
use podlb_wire::{ipv4, MacAddr};

/// Datagram magic.
pub const MAGIC: [u8; 4] = *b"PLBS";
/// Wire format version of datagrams with IPv4 entries and of those with
/// none (hellos, "table sent"): what every podlb since the first speaks.
pub const VERSION: u8 = 1;
/// Wire format version of datagrams with IPv6 entries (a version-1 peer
/// rejects them whole; see the module docs).
pub const VERSION6: u8 = 2;
/// Flag bit: an authentication tag follows the entries (see the
/// module docs).
pub const FLAG_AUTH: u8 = 0x01;
/// Flag bit of an empty datagram: the sender (the master) has sent its
/// whole connection table, in the datagrams before this one. A returning
/// instance holds its preemption until it gets it (`control::sync`,
/// decisions.md §44).
pub const FLAG_TABLE_SENT: u8 = 0x02;
/// Datagram header length.
pub const HEADER_LEN: usize = 16;
/// Length of one IPv4 entry (version 1).
pub const ENTRY_LEN: usize = 32;
/// Length of one IPv6 entry (version 2).
pub const ENTRY6_LEN: usize = 68;
/// Largest datagram the [`Encoder`] produces.
pub const MAX_DATAGRAM: usize = 1400;
/// IPv4 entries per full datagram.
pub const MAX_ENTRIES: usize = (MAX_DATAGRAM - HEADER_LEN) / ENTRY_LEN;
/// IPv6 entries per full datagram.
pub const MAX_ENTRIES6: usize = (MAX_DATAGRAM - HEADER_LEN) / ENTRY6_LEN;
// The count field is a u16, and a full batch must fit the limit.
const _: () = assert!(MAX_ENTRIES <= u16::MAX as usize);
const _: () = assert!(HEADER_LEN + MAX_ENTRIES * ENTRY_LEN <= MAX_DATAGRAM);
const _: () = assert!(HEADER_LEN + MAX_ENTRIES6 * ENTRY6_LEN <= MAX_DATAGRAM);
// The encoder closes a batch of one family when an event of the other
// comes; that event must not fill the new batch at once.
const _: () = assert!(MAX_ENTRIES6 >= 2);

/// The entry length of datagrams of wire version `version`, if podlb
/// speaks it.
pub fn entry_len(version: u8) -> Option<usize> {
    match version {
        VERSION => Some(ENTRY_LEN),
        VERSION6 => Some(ENTRY6_LEN),
        _ => None,
    }
}

/// An address family that connection sync carries: the wire version of
/// its datagrams, its address bytes in an entry, and its worker queue.
pub trait SyncAddr: FlowAddr {
    /// Wire version of the datagrams whose entries are of this family.
    const VERSION: u8;
    /// Bytes of one address in an entry.
    const BYTES: usize;
    /// Length of one entry: 20 bytes and three addresses.
    const ENTRY_LEN: usize = 20 + 3 * Self::BYTES;
    /// Entries per full datagram.
    const MAX_ENTRIES: usize = (MAX_DATAGRAM - HEADER_LEN) / Self::ENTRY_LEN;
    /// Appends the address in network byte order.
    fn put(self, out: &mut Vec<u8>);
    /// Reads the address from the first [`BYTES`](SyncAddr::BYTES) of `b`
    /// (callers check the length).
    fn get(b: &[u8]) -> Self;
    #[doc(hidden)]
    fn queue(q: &SyncQueue) -> &ArrayQueue<SyncEvent<Self>>;
}

impl SyncAddr for u32 {
    const VERSION: u8 = VERSION;
    const BYTES: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn get(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    fn queue(q: &SyncQueue) -> &ArrayQueue<SyncEvent<u32>> {
        &q.q
    }
}

impl SyncAddr for u128 {
    const VERSION: u8 = VERSION6;
    const BYTES: usize = 16;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn get(b: &[u8]) -> u128 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        u128::from_be_bytes(a)
    }
    fn queue(q: &SyncQueue) -> &ArrayQueue<SyncEvent<u128>> {
        &q.q6
    }
}

const _: () = assert!(<u32 as SyncAddr>::ENTRY_LEN == ENTRY_LEN);
const _: () = assert!(<u128 as SyncAddr>::ENTRY_LEN == ENTRY6_LEN);
const _: () = assert!(<u32 as SyncAddr>::MAX_ENTRIES == MAX_ENTRIES);
const _: () = assert!(<u128 as SyncAddr>::MAX_ENTRIES == MAX_ENTRIES6);

/// What an event asks the backup to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SyncOp {
    /// Install the flow, or refresh it; replace a different one of the same key.
    Upsert = 1,
    /// Remove the flow if the backup holds this incarnation of it.
    Remove = 2,
}

/// One connection-table change, as queued by a worker and sent on the
/// wire; `A` is the address family (`u32` IPv4, `u128` IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncEvent<A = u32> {
    pub key: FlowKey<A>,
    pub backend: A,
    pub backend_port: u16,
    /// Full-NAT source port; 0 in DSR mode.
    pub nat_port: u16,
    /// Milliseconds since the master last saw the flow.
    pub idle_ms: u32,
    /// The client's next-hop MAC; zero if unknown.
    pub client_mac: MacAddr,
    pub op: SyncOp,
    /// TCP state flags (`flow::tcp_state`).
    pub tcp: u8,
}

// The per-worker queues hold these by value: keep the IPv4 one well
// within a line (an IPv6 one is 80 bytes).
const _: () = assert!(std::mem::size_of::<SyncEvent>() <= 40);
const _: () = assert!(std::mem::size_of::<SyncEvent<u128>>() <= 80);

impl<A: SyncAddr> SyncEvent<A> {
    fn of(op: SyncOp, f: &Flow<A>, now_ms: u32) -> SyncEvent<A> {
        SyncEvent {
            key: f.key,
            backend: f.backend,
            backend_port: f.backend_port,
            nat_port: f.nat_port,
            idle_ms: elapsed_ms(now_ms, f.last_seen_ms),
            client_mac: f.client_mac,
            op,
            tcp: f.tcp,
        }
    }

    /// Install (or refresh) `f` on the backups, as it stands at `now_ms`.
    pub fn upsert(f: &Flow<A>, now_ms: u32) -> SyncEvent<A> {
        SyncEvent::of(SyncOp::Upsert, f, now_ms)
    }

    /// Remove `f` from the backups. Only the incarnation with the same
    /// backend and NAT port is removed, so a late `Remove` cannot take away
    /// the flow that replaced it.
    pub fn remove(f: &Flow<A>) -> SyncEvent<A> {
        SyncEvent::of(SyncOp::Remove, f, f.last_seen_ms)
    }

    /// Appends the entry's wire form ([`SyncAddr::ENTRY_LEN`] bytes; see
    /// the module docs) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.op as u8);
        out.push(self.tcp);
        out.extend_from_slice(&self.client_mac.0);
        self.key.client.put(out);
        self.key.vip.put(out);
        out.extend_from_slice(&self.key.client_port.to_be_bytes());
        out.extend_from_slice(&self.key.vport.to_be_bytes());
        self.backend.put(out);
        out.extend_from_slice(&self.backend_port.to_be_bytes());
        out.extend_from_slice(&self.nat_port.to_be_bytes());
        out.extend_from_slice(&self.idle_ms.to_be_bytes());
    }

    /// The entry's wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(A::ENTRY_LEN);
        self.write(&mut b);
        b
    }

    /// Parses one entry; `None` for a length other than
    /// [`SyncAddr::ENTRY_LEN`] or an unknown op.
    pub fn from_bytes(b: &[u8]) -> Option<SyncEvent<A>> {
        if b.len() != A::ENTRY_LEN {
            return None;
        }
        let op = match b[0] {
            1 => SyncOp::Upsert,
            2 => SyncOp::Remove,
            _ => return None,
        };
        let s = A::BYTES;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(SyncEvent {
            key: FlowKey {
                client: A::get(&b[8..]),
                vip: A::get(&b[8 + s..]),
                client_port: u16_at(8 + 2 * s),
                vport: u16_at(10 + 2 * s),
                // The protocol travels in the state byte: a UDP flow's
                // flags carry `tcp_state::UDP`.
                proto: if b[1] & tcp_state::UDP != 0 {
                    ipv4::PROTO_UDP
                } else {
                    ipv4::PROTO_TCP
                },
            },
            backend: A::get(&b[12 + 2 * s..]),
            backend_port: u16_at(12 + 3 * s),
            nat_port: u16_at(14 + 3 * s),
            idle_ms: u32_at(16 + 3 * s),
            client_mac: MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]),
            op,
            tcp: b[1],
        })
    }

    /// Same backend and NAT port as `f`: the same incarnation of the flow.
    fn same_binding(&self, f: &Flow<A>) -> bool {
        f.backend == self.backend
            && f.backend_port == self.backend_port
            && f.nat_port == self.nat_port
    }
}

/// A worker's outbox of sync events: bounded, lock-free, never blocks.
/// One worker pushes, the control thread drains. One queue per family,
/// so that IPv4 events stay 40 bytes.
pub struct SyncQueue {
    q: ArrayQueue<SyncEvent>,
    q6: ArrayQueue<SyncEvent<u128>>,
    dropped: AtomicU64,
}

impl SyncQueue {
    /// A queue for at most `capacity` (≥ 1) pending events of each family.
    pub fn new(capacity: usize) -> SyncQueue {
        SyncQueue::with_capacities(capacity, capacity)
    }

    /// A queue for at most `v4` IPv4 and `v6` IPv6 pending events (each ≥ 1).
    pub fn with_capacities(v4: usize, v6: usize) -> SyncQueue {
        SyncQueue {
            q: ArrayQueue::new(v4.max(1)),
            q6: ArrayQueue::new(v6.max(1)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `ev`. On a full queue the event is dropped, counted in
    /// [`SyncQueue::dropped`], and `false` returned: the next refresh of the
    /// flow stands in for it.
    #[inline]
    pub fn push<A: SyncAddr>(&self, ev: SyncEvent<A>) -> bool {
        if A::queue(self).push(ev).is_ok() {
            true
        } else {
            self.dropped.fetch_add(1, Relaxed);
            false
        }
    }

    /// Hands every queued IPv4 event to `f`, oldest first, and returns how
    /// many. Takes at most one queue's worth, so a worker that keeps
    /// pushing cannot hold the drainer here.
    pub fn drain(&self, f: impl FnMut(SyncEvent)) -> usize {
        drain_queue(&self.q, f)
    }

    /// [`drain`](SyncQueue::drain) for the IPv6 events.
    pub fn drain6(&self, f: impl FnMut(SyncEvent<u128>)) -> usize {
        drain_queue(&self.q6, f)
    }

    /// Events dropped because the queue was full (`sync_dropped`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
    /// Pending events of both families.
    pub fn len(&self) -> usize {
        self.q.len() + self.q6.len()
    }
    pub fn is_empty(&self) -> bool {
        self.q.is_empty() && self.q6.is_empty()
    }
    /// Capacity for IPv4 events.
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
    /// Capacity for IPv6 events.
    pub fn capacity6(&self) -> usize {
        self.q6.capacity()
    }
}

fn drain_queue<T>(q: &ArrayQueue<T>, mut f: impl FnMut(T)) -> usize {
    let mut n = 0;
    while n < q.capacity() {
        let Some(ev) = q.pop() else { break };
        f(ev);
        n += 1;
    }
    n
}

/// Batches events into datagrams of at most [`MAX_DATAGRAM`] bytes. A
/// datagram carries entries of one family (IPv4 in version 1, IPv6 in
/// version 2): the encoder holds one batch at a time, and an event of the
/// other family closes it, so events leave in the order they were pushed.
pub struct Encoder {
    sender: u32,
    seq: u32,
    buf: Vec<u8>,
    count: u16,
    /// Wire version of the batch being filled.
    version: u8,
}

impl Encoder {
    /// `sender` identifies this process to the backups; pick it at random
    /// at start so a restarted master is told apart from a lossy one.
    pub fn new(sender: u32) -> Encoder {
        Encoder {
            sender,
            seq: 0,
            buf: Vec::new(),
            count: 0,
            version: VERSION,
        }
    }

    /// Adds `ev` to the batch. Returns a datagram when this event filled
    /// the batch, or when it closed a batch of the other family (never
    /// both: a new batch holds at least two entries).
    pub fn push<A: SyncAddr>(&mut self, ev: &SyncEvent<A>) -> Option<Vec<u8>> {
        let closed = if self.count > 0 && self.version != A::VERSION {
            self.flush()
        } else {
            None
        };
        if self.count == 0 {
            self.version = A::VERSION;
            self.buf.reserve(HEADER_LEN + A::MAX_ENTRIES * A::ENTRY_LEN);
            self.buf.resize(HEADER_LEN, 0);
        }
        ev.write(&mut self.buf);
        self.count += 1;
        if self.count as usize == A::MAX_ENTRIES {
            debug_assert!(closed.is_none());
            self.flush()
        } else {
            closed
        }
    }

    /// An empty datagram (count 0): a backup's "hello" that tells the
    /// master where to stream to. It takes no sequence number. Version 1,
    /// which every peer accepts.
    pub fn hello(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[8..12].copy_from_slice(&self.sender.to_be_bytes());
        out
    }

    /// An empty datagram with [`FLAG_TABLE_SENT`]: "everything I hold was
    /// in the datagrams before this one". Call [`flush`](Encoder::flush)
    /// first. It takes a sequence number (a lost one shows as a gap).
    pub fn table_sent(&mut self) -> Vec<u8> {
        let mut out = self.hello().to_vec();
        out[5] = FLAG_TABLE_SENT;
        out[12..16].copy_from_slice(&self.seq.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        out
    }

    /// The datagram of the events batched so far, if any.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let mut out = std::mem::take(&mut self.buf);
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = self.version;
        out[5] = 0;
        out[6..8].copy_from_slice(&self.count.to_be_bytes());
        out[8..12].copy_from_slice(&self.sender.to_be_bytes());
        out[12..16].copy_from_slice(&self.seq.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.count = 0;
        Some(out)
    }

    /// Events waiting for the next datagram.
    pub fn pending(&self) -> usize {
        self.count as usize
    }
    /// The sequence number the next datagram will carry.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }
}

/// A walk of the whole connection table, the IPv4 flows and then the
/// IPv6 ones, for a newcomer (`control::sync`), bounded per step so that
/// neither the control loop nor the link is flooded: every live flow as an
/// `Upsert`, then the [`FLAG_TABLE_SENT`] datagram.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableDump {
    next: usize,
    next6: usize,
}

/// Slots a dump step looks at between checks of its datagram budget.
const DUMP_CHUNK: usize = 1024;

impl TableDump {
    /// Walks on through at most `max_slots` slots (of both tables),
    /// stopping early (at a [`DUMP_CHUNK`] boundary) once `max_datagrams`
    /// datagrams have been filled; they go to `out`. An empty slot costs
    /// one load, so a sparse table is walked fast while a full one is sent
    /// at a bounded rate. Returns true when the walk is over: `out` then
    /// ends with the rest of the batch and the "table sent" datagram.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        flows: &FlowTable,
        flows6: &FlowTable<u128>,
        enc: &mut Encoder,
        max_slots: usize,
        max_datagrams: usize,
        now_ms: u32,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let mut walk = Walk {
            slots: max_slots.max(1),
            budget: out.len() + max_datagrams,
            now_ms,
            enc,
            out,
        };
        if !walk.table(&mut self.next, flows) || !walk.table(&mut self.next6, flows6) {
            return false;
        }
        out.extend(enc.flush());
        out.push(enc.table_sent());
        true
    }
}

/// One dump step's budget, spent over the tables in turn.
struct Walk<'a> {
    slots: usize,
    budget: usize,
    now_ms: u32,
    enc: &'a mut Encoder,
    out: &'a mut Vec<Vec<u8>>,
}

impl Walk<'_> {
    /// Walks `flows` on from `*next`; whether it is done with it.
    fn table<A: SyncAddr>(&mut self, next: &mut usize, flows: &FlowTable<A>) -> bool {
        while *next < flows.slot_count() && self.slots > 0 && self.out.len() < self.budget {
            let (enc, out, now_ms) = (&mut *self.enc, &mut *self.out, self.now_ms);
            flows.for_each_in(*next, DUMP_CHUNK, |f| {
                out.extend(enc.push(&SyncEvent::upsert(f, now_ms)));
                true
            });
            *next += DUMP_CHUNK;
            self.slots = self.slots.saturating_sub(DUMP_CHUNK);
        }
        *next >= flows.slot_count()
    }
}

/// Why a datagram was rejected (whole: no entry of it is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The datagram is shorter than the 16-byte header.
    #[error("truncated sync datagram: {0} bytes, the header alone is 16")]
    Truncated(usize),
    /// The datagram does not start with `PLBS`: not podlb sync traffic.
    #[error("not a podlb sync datagram (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// A wire format version this podlb does not speak.
    #[error(
        "sync wire version {0} is not supported (this podlb speaks 1 and 2): upgrade both instances"
    )]
    Version(u8),
    /// Flags this podlb does not implement (e.g. authentication).
    #[error("sync datagram flags {0:#04x} are not supported: is a shared key configured on the peer only?")]
    Flags(u8),
    /// The length is not header + count × the entry length (32 bytes in
    /// version 1, 68 in version 2).
    #[error("sync datagram says {count} entries but is {len} bytes long")]
    CountMismatch { count: u16, len: usize },
    /// An entry has an unknown op code.
    #[error("sync entry {index} has unknown op {op}")]
    BadOp { index: u16, op: u8 },
}

/// A validated datagram; its entries are read on iteration (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Wire version: [`VERSION`] (IPv4 entries, or none) or [`VERSION6`].
    pub version: u8,
    pub flags: u8,
    pub sender: u32,
    pub seq: u32,
    entry_len: usize,
    entries: &'a [u8],
}

impl<'a> Decoded<'a> {
    /// The IPv4 events, in the order the master queued them (none in a
    /// version-2 datagram).
    pub fn events(&self) -> impl Iterator<Item = SyncEvent> + 'a {
        self.entries::<u32>()
    }

    /// The IPv6 events, in order (none in a version-1 datagram).
    pub fn events6(&self) -> impl Iterator<Item = SyncEvent<u128>> + 'a {
        self.entries::<u128>()
    }

    /// The events of family `A`: all of them or none.
    pub fn entries<A: SyncAddr>(&self) -> impl Iterator<Item = SyncEvent<A>> + 'a {
        let e: &'a [u8] = if self.version == A::VERSION {
            self.entries
        } else {
            &[]
        };
        e.chunks_exact(A::ENTRY_LEN)
            .filter_map(SyncEvent::from_bytes)
    }

    /// Entries, of either family.
    pub fn len(&self) -> usize {
        self.entries.len() / self.entry_len
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Validates a datagram. Never panics, whatever the bytes.
pub fn decode(d: &[u8]) -> Result<Decoded<'_>, SyncError> {
    if d.len() < HEADER_LEN {
        return Err(SyncError::Truncated(d.len()));
    }
    let magic = [d[0], d[1], d[2], d[3]];
    if magic != MAGIC {
        return Err(SyncError::BadMagic(magic));
    }
    let Some(entry_len) = entry_len(d[4]) else {
        return Err(SyncError::Version(d[4]));
    };
    let count = u16::from_be_bytes([d[6], d[7]]);
    if d[5] != 0 && !(d[5] == FLAG_TABLE_SENT && count == 0) {
        return Err(SyncError::Flags(d[5]));
    }
    if d.len() != HEADER_LEN + count as usize * entry_len {
        return Err(SyncError::CountMismatch {
            count,
            len: d.len(),
        });
    }
    let entries = &d[HEADER_LEN..];
    // `count` (a u16) entries, so the index fits.
    for (index, c) in (0u16..).zip(entries.chunks_exact(entry_len)) {
        if !matches!(c[0], 1 | 2) {
            return Err(SyncError::BadOp { index, op: c[0] });
        }
    }
    Ok(Decoded {
        version: d[4],
        flags: d[5],
        sender: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        seq: u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
        entry_len,
        entries,
    })
}

/// What the backup knows of one master's sequence numbers.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeerSeq {
    last: Option<(u32, u32)>,
}

/// How a datagram's sequence number relates to the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// The first from this sender (start, or the master restarted).
    NewSender,
    /// The next one expected.
    InOrder,
    /// This many datagrams before it were lost (or are late).
    Gap(u32),
    /// Older than one already seen: late or duplicated. Still applied; the
    /// refresh repairs any damage an old event does.
    Late,
}

impl PeerSeq {
    /// Notes a datagram's (sender, seq); for counters only.
    pub fn observe(&mut self, sender: u32, seq: u32) -> SeqCheck {
        let check = match self.last {
            Some((s, last)) if s == sender => {
                let d = seq.wrapping_sub(last);
                if d == 1 {
                    SeqCheck::InOrder
                } else if d == 0 || d > u32::MAX / 2 {
                    return SeqCheck::Late;
                } else {
                    SeqCheck::Gap(d - 1)
                }
            }
            _ => SeqCheck::NewSender,
        };
        self.last = Some((sender, seq));
        check
    }
}

/// What the backup's flow index says about a synced flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Service index in the backup's snapshot.
    pub service: u16,
    /// Stats slot of (service, backend); [`NO_STAT`] if the backend is not
    /// (or no longer) in the backup's snapshot.
    pub stat: u16,
}

/// A stats slot that counts nowhere (out of `WorkerStats`' range).
pub const NO_STAT: u16 = u16::MAX;

/// Resolves events against a service snapshot: the service must exist; a
/// backend missing from it (draining on the master) still gets its flow.
/// `A` is the family of the flows resolved (the VIP is looked up wide).
pub fn snapshot_resolver<A: Addr>(
    snap: &Snapshot,
) -> impl Fn(A, u16, u8, A, u16) -> Option<Resolved> + '_ {
    move |vip, vport, proto, backend, backend_port| {
        // An IPv4-mapped address in an IPv6 entry would find the IPv4
        // service of that VIP (the snapshot's keys are wide): not ours.
        A::from_wide(vip.wide())?;
        let (service, svc) = snap.service(vip, vport, proto)?;
        let stat = svc
            .backends
            .iter()
            .find(|b| b.ip == backend.wide() && b.port == backend_port)
            .map_or(NO_STAT, |b| b.stat);
        Some(Resolved { service, stat })
    }
}

/// What [`apply`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new flow was installed.
    Installed,
    /// The same flow was already there; its state and age were updated.
    Refreshed,
    /// A different incarnation of the key (other backend, NAT port, or a
    /// new connection after a closed one) was replaced by the master's.
    Replaced,
    /// The flow was removed.
    Removed,
    /// A `Remove` for a flow the backup does not hold (or holds in another
    /// incarnation, left alone).
    Absent,
    /// The backup's table had no room.
    TableFull,
    /// The backup does not serve the flow's VIP:port (yet).
    UnknownService,
}

/// Counts of [`ApplyOutcome`]s, for the backup's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyCounts {
    pub installed: u64,
    pub refreshed: u64,
    pub replaced: u64,
    pub removed: u64,
    pub absent: u64,
    pub table_full: u64,
    pub unknown_service: u64,
}

impl ApplyCounts {
    pub fn record(&mut self, o: ApplyOutcome) {
        let c = match o {
            ApplyOutcome::Installed => &mut self.installed,
            ApplyOutcome::Refreshed => &mut self.refreshed,
            ApplyOutcome::Replaced => &mut self.replaced,
            ApplyOutcome::Removed => &mut self.removed,
            ApplyOutcome::Absent => &mut self.absent,
            ApplyOutcome::TableFull => &mut self.table_full,
            ApplyOutcome::UnknownService => &mut self.unknown_service,
        };
        *c += 1;
    }
}

/// Applies one event to the backup's table. The master is the truth: an
/// upsert installs exactly the master's backend and NAT port, replacing
/// whatever the backup held for the key, and removes a stale flow that
/// still claims the same NAT tuple (its `Remove` was lost).
///
/// `resolve(vip, vport, proto, backend, backend_port)` gives the service index
/// and stats slot in the backup's snapshot, or `None` if it does not serve
/// the VIP:port. Meant for the one thread that receives sync datagrams,
/// while this instance is a backup (its data plane forwards nothing then).
pub fn apply<A: SyncAddr>(
    table: &FlowTable<A>,
    ev: &SyncEvent<A>,
    resolve: impl Fn(A, u16, u8, A, u16) -> Option<Resolved>,
    now_ms: u32,
) -> ApplyOutcome {
    let existing = table.lookup(&ev.key);
    if ev.op == SyncOp::Remove {
        return match existing {
            Some((r, f)) if ev.same_binding(&f) && table.remove(r) => ApplyOutcome::Removed,
            _ => ApplyOutcome::Absent,
        };
    }
    let last_seen = now_ms.wrapping_sub(ev.idle_ms);
    let mac = (ev.client_mac != MacAddr::ZERO).then_some(ev.client_mac);
    if let Some((r, f)) = existing {
        // TCP flags only accumulate within one connection: flags the backup
        // has that the master lacks mean the master's flow is a new one.
        if ev.same_binding(&f) && f.tcp & !ev.tcp == 0 {
            table.touch(r, last_seen, ev.tcp, mac);
            return ApplyOutcome::Refreshed;
        }
    }
    let Some(res) = resolve(
        ev.key.vip,
        ev.key.vport,
        ev.key.proto,
        ev.backend,
        ev.backend_port,
    ) else {
        return ApplyOutcome::UnknownService;
    };
    if let Some((r, _)) = existing {
        table.remove(r);
    }
    if ev.nat_port != 0 {
        let rk = ReverseKey {
            backend: ev.backend,
            vip: ev.key.vip,
            backend_port: ev.backend_port,
            nat_port: ev.nat_port,
            proto: ev.key.proto,
        };
        if let Some((r, _)) = table.lookup_reverse(&rk) {
            table.remove(r);
        }
    }
    let flow = Flow {
        key: ev.key,
        backend: ev.backend,
        backend_port: ev.backend_port,
        nat_port: ev.nat_port,
        client_mac: ev.client_mac,
        service: res.service,
        stat: res.stat,
        tcp: ev.tcp,
        last_seen_ms: last_seen,
    };
    match table.insert(&flow, ev.nat_port != 0, now_ms) {
        Ok(_) if existing.is_some() => ApplyOutcome::Replaced,
        Ok(_) => ApplyOutcome::Installed,
        Err(_) => ApplyOutcome::TableFull,
    }
}

/// Applies every event of family `A` in a decoded datagram (all of its
/// events or none: a datagram carries one family), counting the outcomes.
/// A receiver calls it once per family, with that family's table.
pub fn apply_all<A: SyncAddr>(
    table: &FlowTable<A>,
    d: &Decoded<'_>,
    resolve: impl Fn(A, u16, u8, A, u16) -> Option<Resolved>,
    now_ms: u32,
    counts: &mut ApplyCounts,
) {
    for ev in d.entries::<A>() {
        counts.record(apply(table, &ev, &resolve, now_ms));
    }
}

/// Whether the master's sweeper should re-send `flow` on this visit.
///
/// Stateless: each flow gets a fixed phase in `[0, period_ms)` from a hash
/// of its key (spreading the refresh traffic evenly over the period), and
/// is due when that phase falls in `(now_ms - visit_ms, now_ms]` modulo the
/// period. `visit_ms` is the time since the sweeper's previous visit of the
/// flow: the sweep cycle (the engine's is 1 s), or better the measured time
/// since the previous sweep of that slot range, in which case the windows
/// of successive visits tile the clock and each flow is sent exactly once
/// per period; with a nominal cycle and jittery visits, once per period on
/// average. A period at or below `visit_ms` sends on every visit. (At the
/// u32 clock's wrap, every ~49 days, one period may be cut short.)
pub fn refresh_due<A: Addr>(flow: &Flow<A>, now_ms: u32, period_ms: u32, visit_ms: u32) -> bool {
    if period_ms <= visit_ms {
        return true;
    }
    let k = &flow.key;
    let (c, v) = (k.client.fold(), k.vip.fold());
    let phase = (crate::hash::mix64(c ^ v.rotate_left(32) ^ (u64::from(k.client_port) << 16)) >> 32)
        as u32
        % period_ms;
    now_ms.wrapping_sub(phase) % period_ms < visit_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{tcp_state, Timeouts};
    use crate::testlab::{BACKENDS6, CLIENT6, VIP6};
    use proptest::prelude::*;
    use std::collections::HashSet;

    const T: Timeouts = Timeouts {
        syn_ms: 10_000,
        established_ms: 3_600_000,
        fin_ms: 60_000,
        close_ms: 10_000,
        udp_unanswered_ms: 30_000,
        udp_answered_ms: 120_000,
    };
    const VIP: u32 = 0xc612_0064;

    fn ev(client: u32, port: u16, backend: u32, nat: u16) -> SyncEvent {
        SyncEvent {
            key: FlowKey {
                client,
                vip: VIP,
                client_port: port,
                vport: 80,
                proto: 6,
            },
            backend,
            backend_port: 8080,
            nat_port: nat,
            idle_ms: 0,
            client_mac: MacAddr([2, 0, 0, 0, 0, 0x10]),
            op: SyncOp::Upsert,
            tcp: tcp_state::SYN | tcp_state::ESTABLISHED,
        }
    }

    fn ev6(client: u128, port: u16, backend: u128, nat: u16) -> SyncEvent<u128> {
        let e = ev(0, port, 0, nat);
        SyncEvent {
            key: FlowKey {
                client,
                vip: VIP6,
                client_port: e.key.client_port,
                vport: e.key.vport,
                proto: e.key.proto,
            },
            backend,
            backend_port: e.backend_port,
            nat_port: e.nat_port,
            idle_ms: e.idle_ms,
            client_mac: e.client_mac,
            op: e.op,
            tcp: e.tcp,
        }
    }

    /// An IPv4 or an IPv6 event, for mixed batches.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Any {
        V4(SyncEvent),
        V6(SyncEvent<u128>),
    }

    fn any_event6() -> impl Strategy<Value = SyncEvent<u128>> {
        (any::<(u128, u128, u128)>(), any_event()).prop_map(|((c, v, b), e)| SyncEvent {
            key: FlowKey {
                client: c,
                vip: v,
                client_port: e.key.client_port,
                vport: e.key.vport,
                proto: e.key.proto,
            },
            backend: b,
            backend_port: e.backend_port,
            nat_port: e.nat_port,
            idle_ms: e.idle_ms,
            client_mac: e.client_mac,
            op: e.op,
            tcp: e.tcp,
        })
    }

    fn any_mixed() -> impl Strategy<Value = Any> {
        prop_oneof![
            any_event().prop_map(Any::V4),
            any_event6().prop_map(Any::V6)
        ]
    }

    fn any_event() -> impl Strategy<Value = SyncEvent> {
        (
            any::<(u32, u32, u16, u16, u32, u16, u16)>(),
            any::<(u32, [u8; 6], bool, u8)>(),
        )
            .prop_map(
                |((c, v, cp, vp, b, bp, n), (idle, mac, rm, tcp))| SyncEvent {
                    key: FlowKey {
                        client: c,
                        vip: v,
                        client_port: cp,
                        vport: vp,
                        proto: if tcp & tcp_state::UDP != 0 { 17 } else { 6 },
                    },
                    backend: b,
                    backend_port: bp,
                    nat_port: n,
                    idle_ms: idle,
                    client_mac: MacAddr(mac),
                    op: if rm { SyncOp::Remove } else { SyncOp::Upsert },
                    tcp,
                },
            )
    }

    fn res<A>(_: A, _: u16, _: u8, _: A, _: u16) -> Option<Resolved> {
        Some(Resolved {
            service: 0,
            stat: 7,
        })
    }

    #[test]
    fn entry_layout_is_pinned() {
        let mut e = ev(0xc612_000a, 40000, 0xc612_0015, 1025);
        e.idle_ms = 0x0102_0304;
        let b = e.to_bytes();
        let want: [u8; 32] = [
            1, 3, 2, 0, 0, 0, 0, 0x10, // op, tcp, mac
            198, 18, 0, 10, 198, 18, 0, 100, // client, vip
            0x9c, 0x40, 0, 80, // ports
            198, 18, 0, 21, 0x1f, 0x90, 0x04, 0x01, // backend, bport, nat
            1, 2, 3, 4, // idle
        ];
        assert_eq!(b, want);
        assert_eq!(MAX_ENTRIES, 43);
    }

    /// The IPv6 entry (version 2), byte by byte: the version-1 layout
    /// with 16-byte addresses.
    #[test]
    fn entry6_layout_is_pinned() {
        let mut e = ev6(CLIENT6, 40000, BACKENDS6[0], 1025);
        e.idle_ms = 0x0102_0304;
        let b = e.to_bytes();
        let mut want = vec![1, 3, 2, 0, 0, 0, 0, 0x10]; // op, tcp, mac
        want.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]); // client
        want.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]); // vip
        want.extend([0x9c, 0x40, 0, 80]); // ports
        want.extend([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21]); // backend
        want.extend([0x1f, 0x90, 0x04, 0x01, 1, 2, 3, 4]); // bport, nat, idle
        assert_eq!(b, want);
        assert_eq!((b.len(), MAX_ENTRIES6), (ENTRY6_LEN, 20));
        assert_eq!(SyncEvent::<u128>::from_bytes(&b), Some(e));
        // An entry of the other family's length is not one.
        assert_eq!(SyncEvent::<u32>::from_bytes(&b), None);
        assert_eq!(SyncEvent::<u128>::from_bytes(&b[..ENTRY_LEN]), None);
    }

    /// A datagram as a version-1 podlb sends it (built byte by byte, not
    /// by this encoder) is still decoded, and applied to the IPv4 table.
    #[test]
    fn version1_datagram_from_an_old_peer() {
        let mut d = b"PLBS".to_vec();
        d.extend([1, 0, 0, 1]); // version 1, no flags, one entry
        d.extend([0, 0, 0, 9, 0, 0, 0, 4]); // sender 9, seq 4
        d.extend([1, 3, 2, 0, 0, 0, 0, 0x10]); // upsert, SYN|EST, mac
        d.extend([198, 18, 0, 10, 198, 18, 0, 100, 0x9c, 0x40, 0, 80]);
        d.extend([198, 18, 0, 21, 0x1f, 0x90, 0x07, 0xd0, 0, 0, 0, 0]);
        let dec = decode(&d).unwrap();
        assert_eq!((dec.version, dec.sender, dec.seq, dec.len()), (1, 9, 4, 1));
        assert_eq!(dec.events6().count(), 0);
        let e = dec.events().next().unwrap();
        assert_eq!(e, ev(0xc612_000a, 40000, 0xc612_0015, 2000));
        let (t, t6) = (FlowTable::<u32>::new(64, T), FlowTable::<u128>::new(64, T));
        let mut c = ApplyCounts::default();
        apply_all(&t, &dec, res, 0, &mut c);
        apply_all(&t6, &dec, res, 0, &mut c);
        assert_eq!((c.installed, t.len(), t6.len()), (1, 1, 0));
        // Hellos and the "table sent" flag stay version 1, so that an old
        // peer still takes them.
        let mut enc = Encoder::new(1);
        assert_eq!(enc.hello()[4], VERSION);
        assert_eq!(enc.table_sent()[4], VERSION);
    }

    /// IPv4 and IPv6 events interleaved: each datagram holds one family,
    /// in push order, at most 1400 bytes; everything comes back in order.
    #[test]
    fn mixed_families_batch_in_order() {
        let mut enc = Encoder::new(5);
        let mut grams = Vec::new();
        grams.extend(enc.push(&ev(1, 1, 2, 3)));
        grams.extend(enc.push(&ev(2, 1, 2, 3)));
        assert!(grams.is_empty());
        // An IPv6 event closes the IPv4 batch.
        grams.extend(enc.push(&ev6(CLIENT6, 1, BACKENDS6[0], 3)));
        assert_eq!(grams.len(), 1);
        assert_eq!(enc.pending(), 1);
        for i in 1..MAX_ENTRIES6 {
            grams.extend(enc.push(&ev6(CLIENT6 + i as u128, 1, BACKENDS6[0], 3)));
        }
        assert_eq!(
            (grams.len(), enc.pending()),
            (2, 0),
            "20 IPv6 entries fill one"
        );
        grams.extend(enc.push(&ev(3, 1, 2, 3)));
        grams.extend(enc.flush());
        let d: Vec<_> = grams.iter().map(|g| decode(g).unwrap()).collect();
        assert_eq!(
            d.iter()
                .map(|d| (d.version, d.seq, d.len()))
                .collect::<Vec<_>>(),
            [(1, 0, 2), (2, 1, 20), (1, 2, 1)]
        );
        assert_eq!(grams[1].len(), HEADER_LEN + 20 * ENTRY6_LEN);
        assert!(grams[1].len() <= MAX_DATAGRAM);
        assert_eq!(d[1].events().count(), 0);
        assert_eq!(d[1].events6().last().unwrap().key.client, CLIENT6 + 19);
    }

    #[test]
    fn decode_rejects_malformed_ipv6_datagrams() {
        let mut enc = Encoder::new(1);
        enc.push(&ev6(CLIENT6, 1, BACKENDS6[1], 3));
        let good = enc.flush().unwrap();
        assert_eq!(good.len(), HEADER_LEN + ENTRY6_LEN);
        assert_eq!(decode(&good).unwrap().events6().count(), 1);
        // Cut anywhere in the entry: the count no longer matches.
        for cut in HEADER_LEN..good.len() {
            assert_eq!(
                decode(&good[..cut]),
                Err(SyncError::CountMismatch { count: 1, len: cut })
            );
        }
        // Relabelled version 1, 68 bytes are not a whole number of entries.
        let mut b = good.clone();
        b[4] = VERSION;
        assert_eq!(
            decode(&b),
            Err(SyncError::CountMismatch { count: 1, len: 84 })
        );
        // Two IPv4 entries relabelled version 2: not one IPv6 entry.
        let mut enc4 = Encoder::new(1);
        enc4.push(&ev(1, 1, 2, 3));
        enc4.push(&ev(1, 2, 2, 3));
        let mut b = enc4.flush().unwrap();
        b[4] = VERSION6;
        assert_eq!(
            decode(&b),
            Err(SyncError::CountMismatch { count: 2, len: 80 })
        );
        let mut b = good.clone();
        b[HEADER_LEN] = 7;
        assert_eq!(decode(&b), Err(SyncError::BadOp { index: 0, op: 7 }));
        let mut b = good.clone();
        b[4] = 3;
        assert_eq!(decode(&b), Err(SyncError::Version(3)));
        let mut b = good.clone();
        b[5] = FLAG_TABLE_SENT;
        assert_eq!(decode(&b), Err(SyncError::Flags(FLAG_TABLE_SENT)));
    }

    fn rk6(e: &SyncEvent<u128>) -> ReverseKey<u128> {
        ReverseKey {
            backend: e.backend,
            vip: e.key.vip,
            backend_port: e.backend_port,
            nat_port: e.nat_port,
            proto: 6,
        }
    }

    /// IPv6 events go into the IPv6 table, resolved against the
    /// snapshot's IPv6 service by their 128-bit VIP; IPv4 ones stay out.
    #[test]
    fn apply_installs_ipv6_flows() {
        use crate::model::Mode;
        use crate::testlab::{build, service, service6, BACKENDS};
        let snap = build(
            1,
            &[
                service(Mode::Nat, 8080, &BACKENDS),
                service6(Mode::Nat, 8080),
            ],
        );
        let (t, t6) = (FlowTable::<u32>::new(64, T), FlowTable::<u128>::new(64, T));
        let mut e = ev6(CLIENT6, 40000, BACKENDS6[2], 2000);
        e.idle_ms = 300;
        let mut enc = Encoder::new(1);
        enc.push(&e);
        let g = enc.flush().unwrap();
        let d = decode(&g).unwrap();
        let mut c = ApplyCounts::default();
        apply_all(&t, &d, snapshot_resolver(&snap), 1000, &mut c);
        apply_all(&t6, &d, snapshot_resolver(&snap), 1000, &mut c);
        assert_eq!((c.installed, t.len(), t6.len()), (1, 0, 1));
        let (_, f) = t6.lookup(&e.key).unwrap();
        let (svc, _) = snap.service(VIP6, 80, 6).unwrap();
        assert_eq!(
            (
                f.backend,
                f.backend_port,
                f.nat_port,
                f.service,
                f.last_seen_ms
            ),
            (BACKENDS6[2], 8080, 2000, svc, 700)
        );
        assert_ne!(f.stat, NO_STAT, "the backend is in the snapshot");
        assert_eq!(f.client_mac, e.client_mac);
        assert_eq!(t6.lookup_reverse(&rk6(&e)).unwrap().1.key, e.key);
        // Refreshed, then removed, as IPv4 flows are.
        let mut e2 = e;
        e2.idle_ms = 0;
        e2.tcp |= tcp_state::FIN_CLIENT;
        assert_eq!(
            apply(&t6, &e2, snapshot_resolver(&snap), 2000),
            ApplyOutcome::Refreshed
        );
        assert_eq!(t6.lookup(&e.key).unwrap().1.tcp, e2.tcp);
        let f = t6.lookup(&e.key).unwrap().1;
        assert_eq!(
            apply(&t6, &SyncEvent::remove(&f), snapshot_resolver(&snap), 2001),
            ApplyOutcome::Removed
        );
        assert!(t6.is_empty());
        // A VIP the snapshot does not serve over IPv6 (an IPv4-mapped one
        // included): unknown.
        let mut other = e;
        other.key.vip = VIP6 + 1;
        assert_eq!(
            apply(&t6, &other, snapshot_resolver(&snap), 1),
            ApplyOutcome::UnknownService
        );
        other.key.vip = 0xc612_0064u32.wide();
        assert_eq!(
            apply(&t6, &other, snapshot_resolver(&snap), 1),
            ApplyOutcome::UnknownService
        );
    }

    #[test]
    fn batching_boundaries() {
        let mut enc = Encoder::new(0xdead_beef);
        assert_eq!(enc.flush(), None, "nothing to send");
        // Exactly one full datagram: returned by the push that fills it.
        for i in 0..MAX_ENTRIES - 1 {
            assert_eq!(enc.push(&ev(u32::try_from(i).unwrap(), 1, 2, 3)), None);
        }
        let d = enc.push(&ev(999, 1, 2, 3)).expect("full datagram");
        assert_eq!(d.len(), HEADER_LEN + MAX_ENTRIES * ENTRY_LEN);
        assert!(d.len() <= MAX_DATAGRAM);
        assert_eq!(enc.pending(), 0);
        assert_eq!(enc.flush(), None, "the full batch left nothing behind");
        let dec = decode(&d).unwrap();
        assert_eq!((dec.sender, dec.seq, dec.len()), (0xdead_beef, 0, 43));
        assert_eq!(dec.events().last().unwrap().key.client, 999);
        // One more than full: a full datagram, then a flush of one.
        let mut n = 0;
        for i in 0..=MAX_ENTRIES {
            if let Some(d) = enc.push(&ev(u32::try_from(i).unwrap(), 1, 2, 3)) {
                assert_eq!(decode(&d).unwrap().seq, 1);
                n += 1;
            }
        }
        assert_eq!(n, 1);
        let d = enc.flush().unwrap();
        assert_eq!(d.len(), HEADER_LEN + ENTRY_LEN);
        let dec = decode(&d).unwrap();
        assert_eq!((dec.seq, dec.len()), (2, 1));
        assert_eq!(
            dec.events().next().unwrap().key.client,
            u32::try_from(MAX_ENTRIES).unwrap()
        );
        assert_eq!(enc.next_seq(), 3);
    }

    #[test]
    fn table_sent_is_an_empty_flagged_datagram_in_sequence() {
        let mut enc = Encoder::new(9);
        enc.push(&ev(1, 1, 2, 3));
        assert_eq!(decode(&enc.flush().unwrap()).unwrap().seq, 0);
        let m = enc.table_sent();
        let d = decode(&m).unwrap();
        assert_eq!(
            (d.flags, d.sender, d.seq, d.len()),
            (FLAG_TABLE_SENT, 9, 1, 0)
        );
        assert_eq!(enc.next_seq(), 2);
        // A hello is empty and unflagged, and takes no sequence number.
        let h = enc.hello();
        assert_eq!(decode(&h).unwrap().flags, 0);
        assert_eq!(enc.next_seq(), 2);
    }

    #[test]
    fn table_dump_sends_every_flow_then_the_flag() {
        let table = FlowTable::new(10_000, T);
        for i in 0..500u32 {
            let e = ev(
                0xc612_0000 + i,
                1000 + u16::try_from(i).unwrap(),
                0xc612_0015,
                2000 + u16::try_from(i).unwrap(),
            );
            assert_eq!(apply(&table, &e, res, 0), ApplyOutcome::Installed);
        }
        let table6 = FlowTable::<u128>::new(1000, T);
        for i in 0..50u16 {
            let e = ev6(CLIENT6 + u128::from(i), 1000 + i, BACKENDS6[0], 2000 + i);
            assert_eq!(apply(&table6, &e, res, 0), ApplyOutcome::Installed);
        }
        let mut enc = Encoder::new(3);
        let mut dump = TableDump::default();
        let (mut steps, mut out) = (0, Vec::<Vec<u8>>::new());
        loop {
            steps += 1;
            let before = out.len();
            let done = dump.step(&table, &table6, &mut enc, 4096, 2, 0, &mut out);
            // The datagram budget, overrun by at most one chunk's worth of
            // flows (plus the end: the batch and the flag).
            assert!(out.len() - before <= 2 + 1024 / MAX_ENTRIES + 2);
            if done {
                break;
            }
        }
        // 500 flows in 12 datagrams: the budget, not the slot bound
        // (13 336 slots, 4 steps) sets the pace; the IPv6 table (50 flows
        // in 3 datagrams of 20) comes after.
        let slots = table.slot_count() + table6.slot_count();
        assert!(steps > slots.div_ceil(4096));
        assert!(steps <= slots.div_ceil(1024) + 1);
        let (mut seen, mut seen6) = (HashSet::new(), HashSet::new());
        for (i, d) in out.iter().enumerate() {
            assert!(d.len() <= MAX_DATAGRAM);
            let d = decode(d).unwrap();
            assert_eq!(d.seq, u32::try_from(i).unwrap(), "one sequence, no gaps");
            assert_eq!(d.flags == FLAG_TABLE_SENT, i == out.len() - 1);
            // IPv4 first, then IPv6, then the flag (version 1).
            if d.version == VERSION6 {
                assert!(i < out.len() - 1);
            } else if !seen6.is_empty() {
                assert!(d.is_empty());
            }
            for e in d.events() {
                assert_eq!(e.op, SyncOp::Upsert);
                assert!(seen.insert(e.key.client));
            }
            for e in d.events6() {
                assert_eq!(e.op, SyncOp::Upsert);
                assert!(seen6.insert(e.key.client));
            }
        }
        assert_eq!((seen.len(), seen6.len()), (500, 50));
    }

    #[test]
    fn decode_rejects_each_malformation() {
        let mut enc = Encoder::new(1);
        enc.push(&ev(1, 1, 2, 3));
        let good = enc.flush().unwrap();
        assert!(decode(&good).is_ok());
        assert_eq!(decode(&good[..15]), Err(SyncError::Truncated(15)));
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(SyncError::BadMagic(_))));
        let mut b = good.clone();
        b[4] = 3;
        assert_eq!(decode(&b), Err(SyncError::Version(3)));
        let mut b = good.clone();
        b[5] = FLAG_AUTH;
        assert_eq!(decode(&b), Err(SyncError::Flags(FLAG_AUTH)));
        // "Table sent" only on an empty datagram.
        let mut b = good.clone();
        b[5] = FLAG_TABLE_SENT;
        assert_eq!(decode(&b), Err(SyncError::Flags(FLAG_TABLE_SENT)));
        let mut b = good.clone();
        b[7] = 2;
        assert_eq!(
            decode(&b),
            Err(SyncError::CountMismatch { count: 2, len: 48 })
        );
        assert_eq!(
            decode(&good[..47]),
            Err(SyncError::CountMismatch { count: 1, len: 47 })
        );
        let mut b = good.clone();
        b[16] = 0;
        assert_eq!(decode(&b), Err(SyncError::BadOp { index: 0, op: 0 }));
        // An empty batch is valid (a keep-alive, if ever wanted).
        let mut b = good[..16].to_vec();
        b[7] = 0;
        assert!(decode(&b).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn round_trip(evs in proptest::collection::vec(any_event(), 0..200), sender in any::<u32>()) {
            let mut enc = Encoder::new(sender);
            let mut grams = Vec::new();
            for e in &evs {
                grams.extend(enc.push(e));
            }
            grams.extend(enc.flush());
            prop_assert_eq!(grams.len(), evs.len().div_ceil(MAX_ENTRIES));
            let mut got = Vec::new();
            for (i, g) in grams.iter().enumerate() {
                prop_assert!(g.len() <= MAX_DATAGRAM);
                let d = decode(g).unwrap();
                prop_assert_eq!((d.sender, d.seq), (sender, u32::try_from(i).unwrap()));
                got.extend(d.events());
            }
            prop_assert_eq!(got, evs);
        }

        #[test]
        fn round_trip_mixed(evs in proptest::collection::vec(any_mixed(), 0..200), sender in any::<u32>()) {
            let mut enc = Encoder::new(sender);
            let mut grams = Vec::new();
            for e in &evs {
                grams.extend(match e {
                    Any::V4(e) => enc.push(e),
                    Any::V6(e) => enc.push(e),
                });
            }
            grams.extend(enc.flush());
            let mut got = Vec::new();
            for (i, g) in grams.iter().enumerate() {
                prop_assert!(g.len() <= MAX_DATAGRAM);
                let d = decode(g).unwrap();
                prop_assert_eq!((d.sender, d.seq), (sender, u32::try_from(i).unwrap()));
                prop_assert!(!d.is_empty());
                prop_assert_eq!(d.events().count() + d.events6().count(), d.len());
                got.extend(d.events().map(Any::V4));
                got.extend(d.events6().map(Any::V6));
            }
            prop_assert_eq!(got, evs);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            if let Ok(d) = decode(&bytes) {
                prop_assert_eq!(d.events().count() + d.events6().count(), d.len());
            }
        }

        /// Arbitrary entries behind a valid header of either version: the
        /// header is not where most garbage dies.
        #[test]
        fn decode_never_panics_past_the_header(v6 in any::<bool>(), count in 0u16..30, body in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let mut d = b"PLBS".to_vec();
            d.extend([if v6 { VERSION6 } else { VERSION }, 0]);
            d.extend(count.to_be_bytes());
            d.extend([0; 8]);
            d.extend(body);
            if let Ok(d) = decode(&d) {
                prop_assert_eq!(d.events().count() + d.events6().count(), d.len());
                let (t, t6) = (FlowTable::<u32>::new(64, T), FlowTable::<u128>::new(64, T));
                let mut c = ApplyCounts::default();
                apply_all(&t, &d, res, 0, &mut c);
                apply_all(&t6, &d, res, 0, &mut c);
            }
        }

        /// Valid datagrams with one byte changed and a cut: rejected or
        /// decoded to whole entries, never a panic.
        #[test]
        fn decode_mutated_never_panics(evs in proptest::collection::vec(any_mixed(), 1..50), at in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
            let mut enc = Encoder::new(7);
            let mut g = None;
            for e in &evs {
                g = g.or(match e {
                    Any::V4(e) => enc.push(e),
                    Any::V6(e) => enc.push(e),
                });
            }
            let mut g = g.or_else(|| enc.flush()).unwrap();
            let i = at % g.len();
            g[i] = val;
            g.truncate(cut % (g.len() + 1));
            if let Ok(d) = decode(&g) {
                prop_assert_eq!(d.events().count() + d.events6().count(), d.len());
            }
        }
    }

    #[test]
    fn queue_is_bounded_and_counts_drops() {
        let q = SyncQueue::new(4);
        for i in 0..6 {
            assert_eq!(q.push(ev(i, 1, 2, 3)), i < 4);
        }
        assert_eq!((q.len(), q.dropped()), (4, 2));
        let mut got = Vec::new();
        assert_eq!(q.drain(|e| got.push(e.key.client)), 4);
        assert_eq!(got, [0, 1, 2, 3], "oldest first");
        assert!(q.is_empty());
    }

    #[test]
    fn seq_tracking() {
        let mut p = PeerSeq::default();
        assert_eq!(p.observe(5, 10), SeqCheck::NewSender);
        assert_eq!(p.observe(5, 11), SeqCheck::InOrder);
        assert_eq!(p.observe(5, 14), SeqCheck::Gap(2));
        assert_eq!(p.observe(5, 13), SeqCheck::Late);
        assert_eq!(p.observe(5, 15), SeqCheck::InOrder);
        assert_eq!(p.observe(6, 0), SeqCheck::NewSender, "master restarted");
        let mut p = PeerSeq::default();
        p.observe(1, u32::MAX);
        assert_eq!(p.observe(1, 0), SeqCheck::InOrder, "across the wrap");
    }

    fn rk(e: &SyncEvent) -> ReverseKey {
        ReverseKey {
            backend: e.backend,
            vip: e.key.vip,
            backend_port: e.backend_port,
            nat_port: e.nat_port,
            proto: 6,
        }
    }

    #[test]
    fn apply_installs_refreshes_and_removes() {
        let t = FlowTable::new(4096, T);
        let mut e = ev(0xc612_000a, 40000, 0xc612_0015, 2000);
        e.idle_ms = 300;
        assert_eq!(apply(&t, &e, res, 1000), ApplyOutcome::Installed);
        let (_, f) = t.lookup(&e.key).unwrap();
        assert_eq!(
            (f.backend, f.backend_port, f.nat_port),
            (e.backend, 8080, 2000)
        );
        assert_eq!((f.client_mac, f.tcp, f.stat), (e.client_mac, e.tcp, 7));
        assert_eq!(f.last_seen_ms, 700, "aged as on the master");
        assert_eq!(t.lookup_reverse(&rk(&e)).unwrap().1.key, e.key);

        // The same flow again, newer and with a FIN: refreshed in place.
        let mut e2 = e;
        e2.idle_ms = 0;
        e2.tcp |= tcp_state::FIN_CLIENT;
        e2.client_mac = MacAddr::ZERO;
        assert_eq!(apply(&t, &e2, res, 2000), ApplyOutcome::Refreshed);
        let (_, f) = t.lookup(&e.key).unwrap();
        assert_eq!((f.last_seen_ms, f.tcp), (2000, e2.tcp));
        assert_eq!(f.client_mac, e.client_mac, "a zero MAC never overwrites");
        assert_eq!(t.len(), 1);

        // Remove of another incarnation is ignored; of this one, done.
        let mut stale = SyncEvent::remove(&f);
        stale.nat_port = 1999;
        assert_eq!(apply(&t, &stale, res, 2001), ApplyOutcome::Absent);
        assert_eq!(
            apply(&t, &SyncEvent::remove(&f), res, 2001),
            ApplyOutcome::Removed
        );
        assert!(t.lookup(&e.key).is_none());
        assert!(t.lookup_reverse(&rk(&e)).is_none());
        assert_eq!(
            apply(&t, &SyncEvent::remove(&f), res, 2002),
            ApplyOutcome::Absent
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn apply_replaces_a_different_incarnation() {
        let t = FlowTable::new(4096, T);
        let e = ev(0xc612_000a, 40000, 0xc612_0015, 2000);
        apply(&t, &e, res, 1);
        // The master says: other NAT port (and backend). The master wins.
        let mut e2 = ev(0xc612_000a, 40000, 0xc612_0016, 3000);
        e2.tcp = tcp_state::SYN;
        assert_eq!(apply(&t, &e2, res, 2), ApplyOutcome::Replaced);
        let (_, f) = t.lookup(&e.key).unwrap();
        assert_eq!((f.backend, f.nat_port, f.tcp), (e2.backend, 3000, e2.tcp));
        assert!(t.lookup_reverse(&rk(&e)).is_none(), "old NAT tuple freed");
        assert_eq!(t.lookup_reverse(&rk(&e2)).unwrap().1.key, e.key);
        assert_eq!(t.len(), 1);

        // Same binding but the backup's copy has flags the master's lacks
        // (a closed connection, then a new one on the same tuple): replaced.
        let mut fin = e2;
        fin.tcp |= tcp_state::RST;
        apply(&t, &fin, res, 3);
        assert_eq!(apply(&t, &e2, res, 4), ApplyOutcome::Replaced);
        assert_eq!(t.lookup(&e.key).unwrap().1.tcp, tcp_state::SYN);

        // A stale flow still holding the NAT tuple the master now gives to
        // another key (its Remove was lost) makes way.
        let other = ev(0xc612_000b, 41000, 0xc612_0016, 3000);
        assert_eq!(apply(&t, &other, res, 5), ApplyOutcome::Installed);
        assert!(t.lookup(&e.key).is_none());
        assert_eq!(t.lookup_reverse(&rk(&other)).unwrap().1.key, other.key);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn apply_counts_unknown_service_and_full_table() {
        let t = FlowTable::new(16, T);
        let mut c = ApplyCounts::default();
        c.record(apply(&t, &ev(1, 1, 2, 3), |_, _, _, _, _| None, 0));
        assert_eq!(c.unknown_service, 1);
        assert!(t.is_empty());
        // Established flows are never evicted: past capacity, newcomers fail.
        for i in 0..40u16 {
            c.record(apply(&t, &ev(100 + u32::from(i), 1, 2, 1024 + i), res, 0));
        }
        assert_eq!(c.installed + c.table_full, 40);
        assert_eq!(usize::try_from(c.installed).unwrap(), t.len());
        assert!(c.table_full >= 24);
    }

    /// Each flow is re-sent exactly once per period by a sweeper that visits
    /// it at a fixed cadence, and once per period on average when the
    /// visits jitter.
    #[test]
    fn refresh_once_per_period() {
        let (period, visit) = (10_000u32, 1_000u32);
        let flows: Vec<Flow> = (0..2000u32)
            .map(|i| Flow {
                key: FlowKey {
                    client: 0xc612_0000 + i / 100,
                    vip: VIP,
                    client_port: 30000 + u16::try_from(i).unwrap(),
                    vport: 80,
                    proto: 6,
                },
                backend: 1,
                backend_port: 80,
                nat_port: 0,
                client_mac: MacAddr::ZERO,
                service: 0,
                stat: 0,
                tcp: tcp_state::ESTABLISHED,
                last_seen_ms: 0,
            })
            .collect();
        let periods = 20u32;
        let mut per_second = vec![0u32; (periods * period / visit) as usize];
        for (i, f) in flows.iter().enumerate() {
            // The engine visits slot i at a fixed offset within each second.
            let offset = (u32::try_from(i).unwrap() * 7) % visit;
            let mut sent = 0;
            for v in 0..periods * period / visit {
                if refresh_due(f, 5_000 + v * visit + offset, period, visit) {
                    sent += 1;
                    per_second[v as usize] += 1;
                }
            }
            assert_eq!(sent, periods, "flow {i}");
        }
        // Spread: each second carries about a tenth of the flows.
        for &n in &per_second {
            assert!((120..=280).contains(&n), "{n} refreshes in one second");
        }
        // Jittered visits (±30%): once per period on average.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut total = 0u32;
        for f in &flows {
            let mut now = 0u32;
            while now < periods * period {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let step = visit * 7 / 10 + u32::try_from(x % (u64::from(visit) * 6 / 10)).unwrap();
                now += step;
                total += refresh_due(f, now, period, step) as u32;
            }
        }
        let avg = total as f64 / (flows.len() as f64 * periods as f64);
        assert!((0.9..=1.1).contains(&avg), "{avg} sends per period");
        assert!(
            refresh_due(&flows[0], 123, 500, 1000),
            "short period: always"
        );
    }

    /// End to end, sans IO: a master Forwarder creates flows (SYNs) and
    /// recycles one; its events go through the queue, the encoder, decode
    /// and apply into a second table; a Forwarder over that table with
    /// pickup off forwards mid-stream segments of those flows to the same
    /// backend and NAT port, and backend replies to the client's MAC.
    mod end_to_end {
        use super::*;
        use crate::forward::{PacketMeta, Verdict};
        use crate::model::Mode;
        use crate::stats::DropReason;
        use crate::testlab::{
            self, bmac, forwarder, tcp_frame, verify_full, CLIENT, CLIENT_MAC, LB, VIP,
        };
        use std::sync::Arc;

        const VIP4: [u8; 4] = VIP;

        fn snapshot() -> Snapshot {
            testlab::snapshot(Mode::Nat, 8080)
        }

        fn frame(
            src_mac: [u8; 6],
            src: [u8; 4],
            dst: [u8; 4],
            sport: u16,
            dport: u16,
            flags: &str,
        ) -> Vec<u8> {
            tcp_frame(src_mac, LB, src, dst, sport, dport, flags)
        }

        #[test]
        fn synced_flows_survive_takeover() {
            let snap = snapshot();
            let q = Arc::new(SyncQueue::new(1024));
            let mut master = forwarder(true, 0, Some(q.clone()));
            let m = PacketMeta::default();
            // 100 flows by SYN, one of which is closed and reopened.
            let mut on_master = std::collections::HashMap::new();
            for port in 20000..20100u16 {
                let mut syn = frame(CLIENT_MAC, CLIENT, VIP4, port, 80, "S");
                assert_eq!(master.forward(&snap, &mut syn, m, 10), Verdict::Tx);
                let (_, _, backend, nat, _) = verify_full(&syn);
                on_master.insert(port, (backend, nat));
            }
            let mut fin = frame(CLIENT_MAC, CLIENT, VIP4, 20007, 80, "FA");
            assert_eq!(master.forward(&snap, &mut fin, m, 20), Verdict::Tx);
            let mut syn = frame(CLIENT_MAC, CLIENT, VIP4, 20007, 80, "S");
            assert_eq!(master.forward(&snap, &mut syn, m, 30), Verdict::Tx);
            let (_, _, backend, nat, _) = verify_full(&syn);
            assert_ne!(on_master[&20007].1, nat, "the new incarnation's NAT port");
            on_master.insert(20007, (backend, nat));
            assert_eq!(q.len(), 102, "100 upserts, a remove and an upsert");
            assert_eq!(q.dropped(), 0);

            // The control thread ships them; the backup applies them.
            let mut enc = Encoder::new(0x5eed);
            let mut grams = Vec::new();
            q.drain(|ev| grams.extend(enc.push(&ev)));
            grams.extend(enc.flush());
            assert_eq!(grams.len(), 3, "102 events in datagrams of 43");
            let mut backup = forwarder(false, 31337, None);
            let (mut counts, mut seq) = (ApplyCounts::default(), PeerSeq::default());
            for g in &grams {
                let d = decode(g).unwrap();
                assert_ne!(seq.observe(d.sender, d.seq), SeqCheck::Late);
                apply_all(
                    &backup.flows,
                    &d,
                    snapshot_resolver(&snap),
                    5_000,
                    &mut counts,
                );
            }
            assert_eq!(
                (
                    counts.installed,
                    counts.removed,
                    counts.table_full,
                    counts.unknown_service
                ),
                (101, 1, 0, 0)
            );
            assert_eq!(backup.flows.len(), 100);

            // Takeover: mid-stream segments go where the master sent them.
            for port in 20000..20100u16 {
                let mut ack = frame(CLIENT_MAC, CLIENT, VIP4, port, 80, "A");
                assert_eq!(backup.forward(&snap, &mut ack, m, 5_010), Verdict::Tx);
                let (dmac, src, dst, sport, dport) = verify_full(&ack);
                let (backend, nat) = on_master[&port];
                assert_eq!(
                    (src, dst, sport, dport),
                    (VIP4, backend, nat, 8080),
                    "port {port}"
                );
                assert_eq!(dmac, bmac(backend).0);
                // The backend's reply reaches the client's MAC, synced.
                let mut reply = frame(bmac(backend).0, backend, VIP4, 8080, nat, "A");
                assert_eq!(backup.forward(&snap, &mut reply, m, 5_011), Verdict::Tx);
                assert_eq!(verify_full(&reply), (CLIENT_MAC, VIP4, CLIENT, 80, port));
            }
            // A server-first segment right after takeover, before any client
            // frame: the synced MAC is already there.
            let (backend, nat) = on_master[&20050];
            let mut fresh = forwarder(false, 1, None);
            for g in &grams {
                apply_all(
                    &fresh.flows,
                    &decode(g).unwrap(),
                    snapshot_resolver(&snap),
                    0,
                    &mut counts,
                );
            }
            let mut reply = frame(bmac(backend).0, backend, VIP4, 8080, nat, "A");
            assert_eq!(fresh.forward(&snap, &mut reply, m, 1), Verdict::Tx);
            assert_eq!(verify_full(&reply).0, CLIENT_MAC);
            // A flow never synced is not adopted (pickup off).
            let mut ack = frame(CLIENT_MAC, CLIENT, VIP4, 30000, 80, "A");
            assert_eq!(
                backup.forward(&snap, &mut ack, m, 5_020),
                Verdict::Drop(DropReason::NoFlow)
            );
        }

        /// The same over IPv6: the master's workers queue IPv6 events, they
        /// travel in version-2 datagrams, the backup installs them in its
        /// IPv6 table and, after takeover, forwards mid-stream segments
        /// (pickup off) to the master's backend and NAT port.
        #[test]
        fn synced_ipv6_flows_survive_takeover() {
            use crate::testlab::{
                bmac6, build, service, service6, tcp6_frame, verify6, BACKENDS, CLIENT6, VIP6,
            };
            let snap = build(
                1,
                &[
                    service(Mode::Nat, 8080, &BACKENDS),
                    service6(Mode::Nat, 8080),
                ],
            );
            let q = Arc::new(SyncQueue::new(1024));
            let mut master = forwarder(true, 0, Some(q.clone()));
            let m = PacketMeta::default();
            let mut on_master = std::collections::HashMap::new();
            for port in 20000..20030u16 {
                let mut syn = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), port, 80, "S");
                assert_eq!(master.forward(&snap, &mut syn, m, 10), Verdict::Tx);
                let (_, backend, nat, _) = verify6(&syn);
                on_master.insert(port, (backend, nat));
            }
            // One IPv4 flow too: it travels in its own datagram.
            let mut syn4 = frame(CLIENT_MAC, CLIENT, VIP4, 30000, 80, "S");
            assert_eq!(master.forward(&snap, &mut syn4, m, 10), Verdict::Tx);
            assert_eq!(q.len(), 31);

            let mut enc = Encoder::new(0x5eed);
            let mut grams = Vec::new();
            q.drain(|ev| grams.extend(enc.push(&ev)));
            q.drain6(|ev| grams.extend(enc.push(&ev)));
            grams.extend(enc.flush());
            let versions: Vec<u8> = grams.iter().map(|g| g[4]).collect();
            assert_eq!(versions, [VERSION, VERSION6, VERSION6], "1 + 20 + 10");
            let mut backup = forwarder(false, 31337, None);
            let mut counts = ApplyCounts::default();
            for g in &grams {
                let d = decode(g).unwrap();
                apply_all(
                    &backup.flows,
                    &d,
                    snapshot_resolver(&snap),
                    5_000,
                    &mut counts,
                );
                apply_all(
                    &backup.flows6,
                    &d,
                    snapshot_resolver(&snap),
                    5_000,
                    &mut counts,
                );
            }
            assert_eq!((counts.installed, counts.unknown_service), (31, 0));
            assert_eq!((backup.flows6.len(), backup.flows.len()), (30, 1));

            for port in 20000..20030u16 {
                let mut ack = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), port, 80, "A");
                assert_eq!(backup.forward(&snap, &mut ack, m, 5_010), Verdict::Tx);
                let (backend, nat) = on_master[&port];
                assert_eq!(verify6(&ack), (VIP6, backend, nat, 8080), "port {port}");
                assert_eq!(&ack[0..6], &bmac6(backend).0);
                let mut reply = tcp6_frame(bmac6(backend).0, LB, (backend, VIP6), 8080, nat, "A");
                assert_eq!(backup.forward(&snap, &mut reply, m, 5_011), Verdict::Tx);
                assert_eq!(verify6(&reply), (VIP6, CLIENT6, 80, port));
                assert_eq!(&reply[0..6], &CLIENT_MAC, "the synced client MAC");
            }
            let mut ack = tcp6_frame(CLIENT_MAC, LB, (CLIENT6, VIP6), 31000, 80, "A");
            assert_eq!(
                backup.forward(&snap, &mut ack, m, 5_020),
                Verdict::Drop(DropReason::NoFlow)
            );
        }
    }
}
