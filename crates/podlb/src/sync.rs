//! Connection sync between instances over unicast UDP (issue 3): the
//! master streams the flows its workers create (and periodic refreshes of
//! every live flow) to the backups; a backup installs them so that after a
//! takeover each synced flow keeps its backend and NAT port.
//!
//! Who the backups are: the configured unicast peers, plus every instance
//! that sent a *hello* (an empty datagram) to this one within the last
//! [`PEER_TTL`]. A backup sends a hello to the master it learned from VRRP
//! every [`HELLO_EVERY`], so multicast VRRP with dynamic Pod IPs needs no
//! peer list.
//!
//! Whom a backup listens to: flow events are installed only when they come
//! from the current VRRP master's address or from a configured (or
//! discovered) peer; anything else is counted as `rejected`. With a peer
//! list, hellos are accepted only from those peers too, so a stranger can
//! neither inject flows into a backup nor subscribe to the master's stream.
//! Without one (multicast VRRP) hellos are taken from anyone on the network
//! podlb serves: keep that network closed, or configure the peers.
//!
//! A newcomer gets the whole table at once: when a hello comes from an
//! address the master has not heard within [`PEER_TTL`] (or from a process
//! there that restarted), the master walks its table in bounded steps
//! ([`DUMP_SLOTS_PER_STEP`] slots, [`DUMP_DATAGRAMS_PER_STEP`] datagrams),
//! sends every live flow, and then an empty
//! datagram flagged [`FLAG_TABLE_SENT`]. A backup that got that flag from
//! the current master is [`synced`](SyncLink::synced); until then a
//! returning higher-priority instance holds its preemption
//! ([`PreemptGate`], at most [`PREEMPT_WAIT_MAX`]), so that it does not take
//! over flows it has not heard of yet (decisions.md §44).
//!
//! With a shared key (`vrrp.sync_key_file`) every datagram, hellos
//! included, carries [`FLAG_AUTH`] and ends in a [`TAG_LEN`]-byte
//! HMAC-SHA-256 tag (RFC 2104, truncated as RFC 4868 §2.6 allows for
//! HMAC-SHA-256-128) over everything before it. A keyed receiver drops what
//! is unauthenticated or fails the tag (`auth_failures`), and also drops a
//! datagram older than one already seen from the same sender, so a
//! recorded datagram cannot be replayed to roll a flow back.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use podlb_core::flow::{Flow, FlowTable};
use podlb_core::service::Snapshot;
use podlb_core::sync::{
    self, ApplyCounts, Encoder, PeerSeq, SeqCheck, SyncAddr, SyncEvent, SyncQueue, TableDump,
    FLAG_AUTH, FLAG_TABLE_SENT, HEADER_LEN,
};

/// Bytes of the HMAC-SHA-256 tag kept (the first 16; RFC 4868 §2.6).
pub const TAG_LEN: usize = 16;

/// A backup re-announces itself to the master this often.
pub const HELLO_EVERY: Duration = Duration::from_millis(500);
/// A learned backup is dropped after this long without a hello.
pub const PEER_TTL: Duration = Duration::from_secs(3);
/// The master re-sends every live flow about this often (so the backups'
/// copies, which see no traffic, neither expire nor go stale).
pub const REFRESH_PERIOD_MS: u32 = 10_000;
/// Table slots the master walks at most per step of a table dump (an
/// empty one costs a load: 1.3 M slots, a million-flow table, in ~21 steps).
pub const DUMP_SLOTS_PER_STEP: usize = 65_536;
/// Datagrams a dump step sends at most (~1000 flows); the control loop
/// steps every 2 ms while busy.
pub const DUMP_DATAGRAMS_PER_STEP: usize = 24;
/// A returning instance waits at most this long for the master's table
/// before it preempts anyway: by then the periodic refresh has re-sent
/// every flow (a master that does not dump, or a lossy link).
pub const PREEMPT_WAIT_MAX: Duration = Duration::from_millis(REFRESH_PERIOD_MS as u64 + 5_000);

/// A backup stops waiting for a master that has sent no sync datagram at all
/// this long after the backup spell began: the master learns of us from our
/// hello (sent as soon as its adverts name it) and answers within
/// milliseconds when it syncs; three seconds cover a 1 s advert interval.
pub const UNHEARD_WAIT: Duration = Duration::from_secs(3);

/// Counters for /metrics.
#[derive(Default)]
pub struct SyncView {
    pub datagrams_sent: AtomicU64,
    pub events_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub events_received: AtomicU64,
    pub decode_errors: AtomicU64,
    pub gaps: AtomicU64,
    pub installed: AtomicU64,
    pub refreshed: AtomicU64,
    pub replaced: AtomicU64,
    pub removed: AtomicU64,
    pub table_full: AtomicU64,
    pub unknown_service: AtomicU64,
    pub peers: AtomicU64,
    /// Datagrams from a sender that is neither the master nor a peer.
    pub rejected: AtomicU64,
    /// Datagrams without a valid tag (with a shared key), or replayed.
    pub auth_failures: AtomicU64,
    /// Whole-table dumps this instance finished sending (as master).
    pub tables_sent: AtomicU64,
    /// Whole tables received from the master (its "table sent" datagram).
    pub tables_received: AtomicU64,
}

impl SyncView {
    /// The `podlb_sync_*` families.
    pub fn render(&self, w: &mut crate::metrics::Exposition) {
        for (name, help, c) in [
            (
                "podlb_sync_datagrams_sent_total",
                "Connection-sync datagrams sent.",
                &self.datagrams_sent,
            ),
            (
                "podlb_sync_events_sent_total",
                "Flow events sent to backups.",
                &self.events_sent,
            ),
            (
                "podlb_sync_send_errors_total",
                "Sync datagrams the kernel refused.",
                &self.send_errors,
            ),
            (
                "podlb_sync_datagrams_received_total",
                "Sync datagrams received.",
                &self.datagrams_received,
            ),
            (
                "podlb_sync_events_received_total",
                "Flow events received from a master.",
                &self.events_received,
            ),
            (
                "podlb_sync_auth_failures_total",
                "Sync datagrams without a valid tag, or replayed (with a shared key).",
                &self.auth_failures,
            ),
            (
                "podlb_sync_rejected_total",
                "Sync datagrams from a sender that is neither the master nor a peer.",
                &self.rejected,
            ),
            (
                "podlb_sync_decode_errors_total",
                "Sync datagrams that did not decode.",
                &self.decode_errors,
            ),
            (
                "podlb_sync_gaps_total",
                "Sync datagrams lost (sequence gaps).",
                &self.gaps,
            ),
            (
                "podlb_sync_installed_total",
                "Synced flows installed.",
                &self.installed,
            ),
            (
                "podlb_sync_refreshed_total",
                "Synced flows refreshed.",
                &self.refreshed,
            ),
            (
                "podlb_sync_replaced_total",
                "Synced flows that replaced a different local entry.",
                &self.replaced,
            ),
            (
                "podlb_sync_removed_total",
                "Synced flow removals applied.",
                &self.removed,
            ),
            (
                "podlb_sync_table_full_total",
                "Synced flows that found no room.",
                &self.table_full,
            ),
            (
                "podlb_sync_unknown_service_total",
                "Synced flows for a VIP:port this instance does not serve.",
                &self.unknown_service,
            ),
            (
                "podlb_sync_tables_sent_total",
                "Whole connection tables sent to a new backup.",
                &self.tables_sent,
            ),
            (
                "podlb_sync_tables_received_total",
                "Whole connection tables received from the master.",
                &self.tables_received,
            ),
        ] {
            w.counter(name, help, c.load(Relaxed));
        }
        w.gauge(
            "podlb_sync_peers",
            "Instances this one streams to (configured and learned).",
            self.peers.load(Relaxed),
        );
    }
}

/// Whether a backup holds back preemption: from the moment it is backup
/// until the master's whole table has reached it ([`SyncLink::synced`]),
/// but no longer than the bound. A master that has not sent a single sync
/// datagram within [`UNHEARD_WAIT`] does not sync at all (keepalived, or a
/// podlb without sync towards us): there is no table to wait for, and the
/// hold ends then. Sans-IO.
#[derive(Debug)]
pub struct PreemptGate {
    max_wait: Duration,
    /// When this spell as backup began.
    since: Option<Instant>,
}

impl PreemptGate {
    pub fn new(max_wait: Duration) -> PreemptGate {
        PreemptGate {
            max_wait,
            since: None,
        }
    }

    /// Whether to hold preemption now. `heard`: a sync datagram from the
    /// current master has arrived ([`SyncLink::master_heard`]).
    pub fn hold(&mut self, now: Instant, backup: bool, synced: bool, heard: bool) -> bool {
        if !backup {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        let waited = now.duration_since(since);
        !synced && waited < self.max_wait && (heard || waited < UNHEARD_WAIT)
    }
}

pub struct SyncLink {
    sock: UdpSocket,
    port: u16,
    pub queues: Vec<Arc<SyncQueue>>,
    enc: Encoder,
    static_peers: Vec<Ipv4Addr>,
    /// Instances that said hello: when last, and their process's sender id.
    learned: HashMap<Ipv4Addr, (Instant, u32)>,
    seq: PeerSeq,
    /// A table dump in progress (master).
    dump: Option<TableDump>,
    /// The current master's whole table has arrived (backup).
    synced: bool,
    /// The current master has sent us a sync datagram (backup).
    master_heard: bool,
    last_hello: Instant,
    pub view: Arc<SyncView>,
    buf: Vec<u8>,
    key: Option<ring::hmac::Key>,
}

impl SyncLink {
    pub fn open(
        port: u16,
        workers: usize,
        static_peers: Vec<Ipv4Addr>,
        key: Option<&crate::config::SyncKey>,
    ) -> std::io::Result<SyncLink> {
        let sock = UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        )))?;
        sock.set_nonblocking(true)?;
        let id = {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            podlb_core::hash::hash_bytes(&t.as_nanos().to_le_bytes(), std::process::id() as u64)
                as u32
        };
        Ok(SyncLink {
            sock,
            port,
            // IPv6 events are 80 bytes: a smaller queue keeps it at 1.3 MB
            // per worker (the refresh repairs what a burst drops).
            queues: (0..workers)
                .map(|_| Arc::new(SyncQueue::with_capacities(65536, 16384)))
                .collect(),
            enc: Encoder::new(id),
            static_peers,
            learned: HashMap::new(),
            seq: PeerSeq::default(),
            dump: None,
            synced: false,
            master_heard: false,
            last_hello: Instant::now() - HELLO_EVERY,
            view: Arc::new(SyncView::default()),
            buf: vec![0u8; 2048],
            key: key.map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k.0)),
        })
    }

    /// Replaces the configured peers (config reload).
    pub fn set_peers(&mut self, peers: Vec<Ipv4Addr>) {
        self.static_peers = peers;
    }

    /// Whether the current master's whole table has arrived (its "table
    /// sent" datagram) since this instance last was master or the master
    /// changed (restarted).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether the current master has sent us any sync datagram (it takes
    /// part in connection sync, so its table is worth waiting for).
    pub fn master_heard(&self) -> bool {
        self.master_heard
    }

    /// Events the workers could not queue (queue full); the refresh covers them.
    pub fn dropped(&self) -> u64 {
        self.queues.iter().map(|q| q.dropped()).sum()
    }

    fn targets(&self) -> Vec<Ipv4Addr> {
        let mut t = self.static_peers.clone();
        for ip in self.learned.keys() {
            if !t.contains(ip) {
                t.push(*ip);
            }
        }
        t
    }

    fn send(&self, d: &[u8], targets: &[Ipv4Addr], events: usize) {
        let signed;
        let d = match &self.key {
            None => d,
            Some(k) => {
                let mut v = Vec::with_capacity(d.len() + TAG_LEN);
                v.extend_from_slice(d);
                v[5] |= FLAG_AUTH;
                let tag = ring::hmac::sign(k, &v);
                v.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
                signed = v;
                &signed[..]
            }
        };
        for &ip in targets {
            match self.sock.send_to(d, SocketAddrV4::new(ip, self.port)) {
                Ok(_) => {
                    self.view.datagrams_sent.fetch_add(1, Relaxed);
                    self.view.events_sent.fetch_add(events as u64, Relaxed);
                }
                Err(_) => {
                    self.view.send_errors.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Queues a refresh of a live flow of either family (master only).
    pub fn refresh<A: SyncAddr>(&mut self, f: &Flow<A>, now_ms: u32) {
        if let Some(d) = self.enc.push(&SyncEvent::upsert(f, now_ms)) {
            let t = self.targets();
            self.send(&d, &t, entries_in(&d));
        }
    }

    /// One step: receive, and as master stream, as backup say hello.
    /// Returns whether anything was received or streamed (the caller polls
    /// faster while there is). `flows` and `flows6` are the two families'
    /// tables: synced flows go into (and a dump comes from) both.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        now: Instant,
        now_ms: u32,
        master: bool,
        master_addr: Option<Ipv4Addr>,
        flows: &FlowTable,
        flows6: &FlowTable<u128>,
        snap: &Snapshot,
    ) -> bool {
        let mut busy = false;
        // Receive.
        while let Ok((n, from)) = self.sock.recv_from(&mut self.buf) {
            busy = true;
            let SocketAddr::V4(from) = from else { continue };
            self.view.datagrams_received.fetch_add(1, Relaxed);
            let n = match &self.key {
                None => n,
                Some(k) => {
                    let ok = n >= HEADER_LEN + TAG_LEN && self.buf[5] & FLAG_AUTH != 0 && {
                        let (body, tag) = self.buf[..n].split_at(n - TAG_LEN);
                        // Constant time: the tag must not leak through timing.
                        bool::from(ring::hmac::sign(k, body).as_ref()[..TAG_LEN].ct_eq(tag))
                    };
                    if !ok {
                        self.view.auth_failures.fetch_add(1, Relaxed);
                        continue;
                    }
                    self.buf[5] &= !FLAG_AUTH;
                    n - TAG_LEN
                }
            };
            let d = match sync::decode(&self.buf[..n]) {
                Ok(d) => d,
                Err(_) => {
                    self.view.decode_errors.fetch_add(1, Relaxed);
                    continue;
                }
            };
            let peer = self.static_peers.contains(from.ip());
            if d.is_empty() && d.flags == 0 {
                // A hello: this sender wants our stream.
                if self.static_peers.is_empty() || peer {
                    let known = self.learned.insert(*from.ip(), (now, d.sender));
                    // A newcomer (or a restarted one) gets the whole table
                    // now rather than over the next refresh period.
                    if master && known.is_none_or(|(_, s)| s != d.sender) {
                        tracing::info!(peer = %from.ip(), "sync: new peer, sending the whole table");
                        self.dump = Some(TableDump::default());
                    }
                } else {
                    self.view.rejected.fetch_add(1, Relaxed);
                }
                continue;
            }
            if master {
                continue; // two masters (split brain): ours is the truth here
            }
            if !peer && master_addr != Some(*from.ip()) {
                self.view.rejected.fetch_add(1, Relaxed);
                continue;
            }
            match self.seq.observe(d.sender, d.seq) {
                // Another master process: its table has not arrived yet.
                SeqCheck::NewSender => self.synced = false,
                SeqCheck::Gap(g) => {
                    self.view.gaps.fetch_add(g as u64, Relaxed);
                }
                // Authenticated, an old datagram is a replay until proven
                // otherwise; the refresh resends anything that mattered.
                SeqCheck::Late if self.key.is_some() => {
                    self.view.auth_failures.fetch_add(1, Relaxed);
                    continue;
                }
                _ => {}
            }
            self.master_heard = true;
            if d.flags & FLAG_TABLE_SENT != 0 {
                if !self.synced {
                    tracing::info!(master = %from.ip(), "sync: the master's whole table has arrived");
                }
                self.synced = true;
                self.view.tables_received.fetch_add(1, Relaxed);
            }
            self.view.events_received.fetch_add(d.len() as u64, Relaxed);
            let mut c = ApplyCounts::default();
            // A datagram carries one family: one of these applies nothing.
            sync::apply_all(flows, &d, sync::snapshot_resolver(snap), now_ms, &mut c);
            sync::apply_all(flows6, &d, sync::snapshot_resolver(snap), now_ms, &mut c);
            for (ctr, v) in [
                (&self.view.installed, c.installed),
                (&self.view.refreshed, c.refreshed),
                (&self.view.replaced, c.replaced),
                (&self.view.removed, c.removed),
                (&self.view.table_full, c.table_full),
                (&self.view.unknown_service, c.unknown_service),
            ] {
                ctr.fetch_add(v, Relaxed);
            }
        }
        self.learned
            .retain(|_, (seen, _)| now.duration_since(*seen) < PEER_TTL);
        self.view.peers.store(self.targets().len() as u64, Relaxed);

        if master {
            let targets = self.targets();
            let mut out = Vec::new();
            // Each family in turn (all IPv4 events, then all IPv6 ones), so
            // that a datagram is closed early only once per step.
            for q in &self.queues {
                q.drain(|ev| out.extend(self.enc.push(&ev)));
            }
            for q in &self.queues {
                q.drain6(|ev| out.extend(self.enc.push(&ev)));
            }
            if let Some(dump) = self.dump.as_mut() {
                busy = true;
                let (slots, datagrams) = (DUMP_SLOTS_PER_STEP, DUMP_DATAGRAMS_PER_STEP);
                if dump.step(
                    flows,
                    flows6,
                    &mut self.enc,
                    slots,
                    datagrams,
                    now_ms,
                    &mut out,
                ) {
                    self.dump = None;
                    self.view.tables_sent.fetch_add(1, Relaxed);
                }
            }
            if let Some(d) = self.enc.flush() {
                out.push(d);
            }
            busy |= !out.is_empty();
            for d in out {
                let events = entries_in(&d);
                if !targets.is_empty() {
                    self.send(&d, &targets, events);
                }
            }
            self.synced = false;
            self.master_heard = false;
        } else {
            self.dump = None;
            // Events a former master's workers left behind are stale now.
            for q in &self.queues {
                q.drain(|_| {});
                q.drain6(|_| {});
            }
            if let Some(m) = master_addr {
                if now.duration_since(self.last_hello) >= HELLO_EVERY {
                    self.last_hello = now;
                    let h = self.enc.hello();
                    self.send(&h, &[m], 0);
                }
            }
        }
        busy
    }
}

/// Entries in a datagram this instance encoded.
fn entries_in(d: &[u8]) -> usize {
    let len = d
        .get(4)
        .copied()
        .and_then(sync::entry_len)
        .unwrap_or(sync::ENTRY_LEN);
    d.len().saturating_sub(HEADER_LEN) / len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn event() -> SyncEvent {
        use podlb_core::flow::{tcp_state, FlowKey};
        use podlb_core::testlab::{BACKENDS, VIP};
        SyncEvent {
            key: FlowKey {
                client: 0xc612_000a,
                vip: u32::from_be_bytes(VIP),
                client_port: 40000,
                vport: 80,
                proto: 6,
            },
            backend: u32::from_be_bytes(BACKENDS[0]),
            backend_port: 8080,
            nat_port: 2000,
            idle_ms: 0,
            client_mac: podlb_wire::MacAddr([2, 0, 0, 0, 0, 0x10]),
            op: sync::SyncOp::Upsert,
            tcp: tcp_state::SYN | tcp_state::ESTABLISHED,
        }
    }

    #[test]
    fn backup_installs_only_from_the_master_or_a_peer() {
        let port = free_port();
        let mut link = SyncLink::open(port, 1, Vec::new(), None).unwrap();
        let flows = FlowTable::new(1024, podlb_core::testlab::T);
        let flows6 = FlowTable::<u128>::new(1024, podlb_core::testlab::T);
        let snap = podlb_core::testlab::snapshot(crate::config::Mode::Nat, 8080);
        let master = Ipv4Addr::new(127, 0, 0, 2);
        let datagram = |from: Ipv4Addr| {
            let s = UdpSocket::bind(SocketAddrV4::new(from, 0)).unwrap();
            let mut enc = Encoder::new(7);
            enc.push(&event());
            let d = enc.flush().unwrap();
            s.send_to(&d, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                .unwrap();
        };
        let step = |link: &mut SyncLink| {
            // Loopback delivery is immediate; poll a few times to be sure.
            for _ in 0..20 {
                link.step(
                    Instant::now(),
                    0,
                    false,
                    Some(master),
                    &flows,
                    &flows6,
                    &snap,
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        // A stranger: rejected, nothing installed.
        datagram(Ipv4Addr::new(127, 0, 0, 9));
        step(&mut link);
        assert_eq!(link.view.rejected.load(Relaxed), 1);
        assert_eq!(flows.len(), 0);
        // The master: installed.
        datagram(master);
        step(&mut link);
        assert_eq!(flows.len(), 1);
        // A configured peer is trusted too; a stranger's hello is refused
        // once there is a peer list.
        link.set_peers(vec![Ipv4Addr::new(127, 0, 0, 3)]);
        let s = UdpSocket::bind("127.0.0.9:0").unwrap();
        s.send_to(
            &Encoder::new(9).hello(),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        )
        .unwrap();
        step(&mut link);
        assert_eq!(link.view.rejected.load(Relaxed), 2);
        assert!(!link.learned.contains_key(&Ipv4Addr::new(127, 0, 0, 9)));
    }

    fn event6() -> SyncEvent<u128> {
        use podlb_core::testlab::{BACKENDS6, CLIENT6, VIP6};
        let e = event();
        SyncEvent {
            key: podlb_core::flow::FlowKey {
                client: CLIENT6,
                vip: VIP6,
                client_port: e.key.client_port,
                vport: e.key.vport,
                proto: e.key.proto,
            },
            backend: BACKENDS6[0],
            backend_port: e.backend_port,
            nat_port: e.nat_port,
            idle_ms: e.idle_ms,
            client_mac: e.client_mac,
            op: e.op,
            tcp: e.tcp,
        }
    }

    fn snapshot46() -> Snapshot {
        use podlb_core::model::Mode;
        use podlb_core::testlab::{build, service, service6, BACKENDS};
        build(
            1,
            &[
                service(Mode::Nat, 8080, &BACKENDS),
                service6(Mode::Nat, 8080),
            ],
        )
    }

    /// A backup installs IPv6 events (version-2 datagrams) from the master
    /// into its IPv6 table, next to IPv4 ones.
    #[test]
    fn backup_installs_ipv6_flows() {
        let port = free_port();
        let mut link = SyncLink::open(port, 1, Vec::new(), None).unwrap();
        let flows = FlowTable::new(1024, podlb_core::testlab::T);
        let flows6 = FlowTable::<u128>::new(1024, podlb_core::testlab::T);
        let snap = snapshot46();
        let master = Ipv4Addr::new(127, 0, 0, 2);
        let s = UdpSocket::bind(SocketAddrV4::new(master, 0)).unwrap();
        let mut enc = Encoder::new(7);
        let mut grams = Vec::new();
        grams.extend(enc.push(&event6()));
        grams.extend(enc.push(&event()));
        grams.extend(enc.flush());
        assert_eq!(grams.len(), 2);
        for d in &grams {
            s.send_to(d, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                .unwrap();
        }
        for _ in 0..20 {
            link.step(
                Instant::now(),
                0,
                false,
                Some(master),
                &flows,
                &flows6,
                &snap,
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!((flows.len(), flows6.len()), (1, 1));
        assert!(flows6.lookup(&event6().key).is_some());
        assert_eq!(link.view.installed.load(Relaxed), 2);
        assert_eq!(link.view.events_received.load(Relaxed), 2);
        assert_eq!(link.view.decode_errors.load(Relaxed), 0);
    }

    /// The master's whole-table dump and its refreshes carry IPv6 flows.
    #[test]
    fn master_dumps_and_refreshes_ipv6_flows() {
        let port = free_port();
        let mut link = SyncLink::open(port, 1, Vec::new(), None).unwrap();
        let flows = FlowTable::new(1024, podlb_core::testlab::T);
        let flows6 = FlowTable::<u128>::new(1024, podlb_core::testlab::T);
        let snap = snapshot46();
        let res = sync::snapshot_resolver(&snap);
        assert_eq!(
            sync::apply(&flows6, &event6(), &res, 0),
            sync::ApplyOutcome::Installed
        );
        let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
        peer.send_to(
            &Encoder::new(5).hello(),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        )
        .unwrap();
        for _ in 0..20 {
            link.step(Instant::now(), 0, true, None, &flows, &flows6, &snap);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(link.view.tables_sent.load(Relaxed), 1);
        // One IPv6 datagram of one entry, then the flag.
        assert_eq!(link.view.events_sent.load(Relaxed), 1);
        assert_eq!(link.view.datagrams_sent.load(Relaxed), 2);
        let (_, f) = flows6.lookup(&event6().key).unwrap();
        link.refresh(&f, 0);
        link.step(Instant::now(), 0, true, None, &flows, &flows6, &snap);
        assert_eq!(link.view.events_sent.load(Relaxed), 2);
    }

    #[test]
    fn preempt_gate_holds_until_synced_or_the_bound() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut g = PreemptGate::new(s(15));
        assert!(
            !g.hold(t0, false, false, false),
            "not backup: nothing to hold"
        );
        assert!(g.hold(t0, true, false, true));
        assert!(g.hold(t0 + s(14), true, false, true));
        assert!(!g.hold(t0 + s(14), true, true, true), "synced");
        assert!(!g.hold(t0 + s(15), true, false, true), "bound");
        // A new spell as backup starts a new wait.
        assert!(!g.hold(t0 + s(16), false, false, false));
        assert!(g.hold(t0 + s(20), true, false, true));
        assert!(!g.hold(t0 + s(35), true, false, true));
    }

    #[test]
    fn preempt_gate_does_not_wait_for_a_master_that_never_syncs() {
        let t0 = Instant::now();
        let mut g = PreemptGate::new(Duration::from_secs(15));
        assert!(g.hold(t0, true, false, false), "it may still speak");
        assert!(g.hold(t0 + UNHEARD_WAIT / 2, true, false, false));
        assert!(
            !g.hold(t0 + UNHEARD_WAIT, true, false, false),
            "keepalived (or sync off) as master: no table will come"
        );
        assert!(
            g.hold(t0 + UNHEARD_WAIT, true, false, true),
            "it spoke: wait for it"
        );
    }

    #[test]
    fn master_sends_its_table_to_a_new_or_restarted_peer() {
        let port = free_port();
        let mut link = SyncLink::open(port, 1, Vec::new(), None).unwrap();
        let flows = FlowTable::new(1024, podlb_core::testlab::T);
        let flows6 = FlowTable::<u128>::new(1024, podlb_core::testlab::T);
        let snap = podlb_core::testlab::snapshot(crate::config::Mode::Nat, 8080);
        let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
        let mut hello = |sender: u32| {
            peer.send_to(
                &Encoder::new(sender).hello(),
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            )
            .unwrap();
            for _ in 0..20 {
                link.step(Instant::now(), 0, true, None, &flows, &flows6, &snap);
                std::thread::sleep(Duration::from_millis(2));
            }
            link.view.tables_sent.load(Relaxed)
        };
        assert_eq!(hello(5), 1, "a newcomer gets the table");
        assert_eq!(hello(5), 1, "once");
        assert_eq!(hello(6), 2, "a restarted peer (new sender id) again");
    }

    #[test]
    fn backup_is_synced_by_the_masters_table_sent_flag() {
        let port = free_port();
        let mut link = SyncLink::open(port, 1, Vec::new(), None).unwrap();
        let flows = FlowTable::new(1024, podlb_core::testlab::T);
        let flows6 = FlowTable::<u128>::new(1024, podlb_core::testlab::T);
        let snap = podlb_core::testlab::snapshot(crate::config::Mode::Nat, 8080);
        let master = Ipv4Addr::new(127, 0, 0, 2);
        let send = |from: Ipv4Addr, d: &[u8], link: &mut SyncLink| {
            let s = UdpSocket::bind(SocketAddrV4::new(from, 0)).unwrap();
            s.send_to(d, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                .unwrap();
            for _ in 0..20 {
                link.step(
                    Instant::now(),
                    0,
                    false,
                    Some(master),
                    &flows,
                    &flows6,
                    &snap,
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            link.synced()
        };
        let mut enc = Encoder::new(7);
        enc.push(&event());
        let flow = enc.flush().unwrap();
        assert!(!send(master, &flow, &mut link), "flows alone: not yet");
        // A stranger's flag does not count.
        assert!(!send(
            Ipv4Addr::new(127, 0, 0, 9),
            &Encoder::new(7).table_sent(),
            &mut link
        ));
        assert!(send(master, &enc.table_sent(), &mut link));
        assert_eq!(flows.len(), 1);
        // Another master process: not synced until its own table arrived.
        let mut other = Encoder::new(8);
        other.push(&event());
        assert!(!send(master, &other.flush().unwrap(), &mut link));
        assert!(send(master, &other.table_sent(), &mut link));
        // Having been master, it waits for a new table when backup again.
        link.step(Instant::now(), 0, true, None, &flows, &flows6, &snap);
        assert!(!link.synced());
    }

    #[test]
    fn with_a_key_only_authentic_fresh_datagrams_count() {
        let port = free_port();
        let key = crate::config::SyncKey(b"0123456789abcdef-shared".to_vec());
        let mut link = SyncLink::open(port, 1, Vec::new(), Some(&key)).unwrap();
        let flows = FlowTable::new(1024, podlb_core::testlab::T);
        let flows6 = FlowTable::<u128>::new(1024, podlb_core::testlab::T);
        let snap = podlb_core::testlab::snapshot(crate::config::Mode::Nat, 8080);
        let master = Ipv4Addr::new(127, 0, 0, 2);
        let from = UdpSocket::bind(SocketAddrV4::new(master, 0)).unwrap();
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.0);
        let seal = |d: &[u8], k: &ring::hmac::Key| {
            let mut v = d.to_vec();
            v[5] |= FLAG_AUTH;
            let t = ring::hmac::sign(k, &v);
            v.extend_from_slice(&t.as_ref()[..TAG_LEN]);
            v
        };
        let mut enc = Encoder::new(7);
        enc.push(&event());
        let first = enc.flush().unwrap();
        let mut step = |d: &[u8]| {
            from.send_to(d, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                .unwrap();
            for _ in 0..20 {
                link.step(
                    Instant::now(),
                    0,
                    false,
                    Some(master),
                    &flows,
                    &flows6,
                    &snap,
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            link.view.auth_failures.load(Relaxed)
        };
        // Unauthenticated, wrong key, tampered: refused.
        assert_eq!(step(&first), 1);
        let other = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another key of 16+ bytes");
        assert_eq!(step(&seal(&first, &other)), 2);
        let mut tampered = seal(&first, &k);
        tampered[HEADER_LEN + 4] ^= 1;
        assert_eq!(step(&tampered), 3);
        assert_eq!(flows.len(), 0);
        // Authentic: installed.
        let good = seal(&first, &k);
        assert_eq!(step(&good), 3);
        assert_eq!(flows.len(), 1);
        // The same datagram again (a replay): refused.
        assert_eq!(step(&good), 4);
    }
}
