//! Counters. Each worker owns one [`WorkerStats`] and is its only writer,
//! so an increment is a plain load and store (no locked instruction); the
//! admin endpoint sums all workers' values.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use crossbeam_utils::CachePadded;

use crate::bits::Low;

/// Why a frame was dropped. Every drop has one, and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthTruncated,
    /// Carries an 802.1Q/802.1ad tag: podlb serves untagged segments (attach
    /// to the VLAN sub-interface instead).
    VlanTagged,
    /// ARP that is truncated or not Ethernet/IPv4.
    ArpMalformed,
    /// IPv4 header truncated or its lengths inconsistent.
    Ipv4Malformed,
    /// IPv4 header checksum wrong.
    Ipv4BadChecksum,
    /// A fragment addressed to a VIP (podlb does not reassemble).
    Ipv4Fragment,
    /// TCP header truncated or data offset invalid.
    TcpMalformed,
    /// UDP header truncated or length field invalid.
    UdpMalformed,
    /// ICMP message truncated or with a bad checksum.
    IcmpMalformed,
    /// ICMP other than echo to a VIP.
    IcmpUnhandled,
    /// Addressed to a VIP but to no configured port/protocol.
    NoService,
    /// The service has no backend.
    NoBackend,
    /// The backend's MAC is not resolved yet (ARP asked).
    NeighborUnresolved,
    /// A non-SYN segment of an unknown flow, with pickup off, or a RST.
    NoFlow,
    /// The connection table had no room (after eviction).
    FlowTableFull,
    /// No free NAT source port towards that backend.
    NatPortsExhausted,
    /// A frame larger than the device accepts, or a GSO frame podlb cannot pass on.
    Oversize,
    /// The transmit queue refused the frame.
    TxError,
    /// Traffic for a VIP reached this instance while it is a VRRP backup.
    NotMaster,
    /// A control frame (VRRP advert) found the control queue full.
    PuntQueueFull,
    /// VXLAN to podlb's VXLAN port that is short, lacks the I flag (RFC 7348
    /// §5), or carries an inner frame that is not a well-formed IPv4 packet.
    VxlanMalformed,
    /// VXLAN with a VNI no vxlan service uses.
    VxlanUnknownVni,
    /// A flow of a vxlan service whose backend has no VTEP in the current
    /// snapshot (not a backend, nor a removed one whose flows still drain),
    /// or no local address to send from.
    VxlanNoVtep,
    /// ARP whose sender address is a VIP this instance serves but whose
    /// sender MAC is not the serving MAC: another host claims the VIP
    /// (RFC 5227 §2.4 ongoing address conflict detection). The control
    /// thread logs it, shows it in /status and defends the VIP.
    VipConflict,
    /// The kernel dropped a frame before podlb saw it for want of ring room:
    /// an AF_PACKET receive ring full (`PACKET_STATISTICS`), or an AF_XDP RX
    /// ring full / no free UMEM chunk on the FILL ring (`XDP_STATISTICS`).
    /// Read by each worker every 100 ms.
    RxRingFull,
    /// A backend answered a client's SYN with a RST (nothing listening, or
    /// the backend going down): the RST is withheld and the flow forgotten,
    /// so the client's SYN retransmission is steered afresh while the
    /// control plane holds that backend out (`flows.refused_hold_s`). Only
    /// when the service has another backend; `nat` and `vxlan` modes, where
    /// replies pass podlb.
    BackendRefused,
}

impl DropReason {
    pub const ALL: [DropReason; 26] = [
        DropReason::EthTruncated,
        DropReason::VlanTagged,
        DropReason::ArpMalformed,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Fragment,
        DropReason::TcpMalformed,
        DropReason::UdpMalformed,
        DropReason::IcmpMalformed,
        DropReason::IcmpUnhandled,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::NeighborUnresolved,
        DropReason::NoFlow,
        DropReason::FlowTableFull,
        DropReason::NatPortsExhausted,
        DropReason::Oversize,
        DropReason::TxError,
        DropReason::NotMaster,
        DropReason::PuntQueueFull,
        DropReason::VxlanMalformed,
        DropReason::VxlanUnknownVni,
        DropReason::VxlanNoVtep,
        DropReason::VipConflict,
        DropReason::RxRingFull,
        DropReason::BackendRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::EthTruncated => "eth_truncated",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4Fragment => "ipv4_fragment",
            DropReason::TcpMalformed => "tcp_malformed",
            DropReason::UdpMalformed => "udp_malformed",
            DropReason::IcmpMalformed => "icmp_malformed",
            DropReason::IcmpUnhandled => "icmp_unhandled",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::NeighborUnresolved => "neighbor_unresolved",
            DropReason::NoFlow => "no_flow",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::NatPortsExhausted => "nat_ports_exhausted",
            DropReason::Oversize => "oversize",
            DropReason::TxError => "tx_error",
            DropReason::NotMaster => "not_master",
            DropReason::PuntQueueFull => "punt_queue_full",
            DropReason::VxlanMalformed => "vxlan_malformed",
            DropReason::VxlanUnknownVni => "vxlan_unknown_vni",
            DropReason::VxlanNoVtep => "vxlan_no_vtep",
            DropReason::VipConflict => "vip_conflict",
            DropReason::RxRingFull => "rx_ring_full",
            DropReason::BackendRefused => "backend_refused",
        }
    }
}

/// Engine-wide events other than drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Event {
    RxPackets,
    RxBytes,
    TxPackets,
    /// Frames that are not podlb's business (left to the kernel).
    Ignored,
    ArpRepliesSent,
    ArpLearned,
    IcmpEchoReplies,
    /// Mid-stream flows adopted (pickup).
    FlowPickups,
    /// SYNs that replaced a closing flow with the same 4-tuple.
    FlowsRecycled,
    /// Frames sent VXLAN-encapsulated to a backend's VTEP.
    VxlanEncapsulated,
    /// VXLAN-encapsulated replies podlb unwrapped.
    VxlanDecapsulated,
    /// GSO frames of vxlan services cut into segments in software ...
    GsoSegmented,
    /// ... and the segments that made.
    GsoSegments,
    /// SYN or SYN-ACK MSS options lowered to the service's `mss_clamp`.
    MssClamped,
    /// ARP requests for addresses podlb does not answer (not a VIP, or a
    /// VIP while backup): left to the kernel, counted apart from the other
    /// ignored frames so an ARP storm shows up by name.
    ArpOtherTarget,
}

impl Event {
    pub const ALL: [Event; 15] = [
        Event::RxPackets,
        Event::RxBytes,
        Event::TxPackets,
        Event::Ignored,
        Event::ArpRepliesSent,
        Event::ArpLearned,
        Event::IcmpEchoReplies,
        Event::FlowPickups,
        Event::FlowsRecycled,
        Event::VxlanEncapsulated,
        Event::VxlanDecapsulated,
        Event::GsoSegmented,
        Event::GsoSegments,
        Event::MssClamped,
        Event::ArpOtherTarget,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Event::RxPackets => "rx_packets",
            Event::RxBytes => "rx_bytes",
            Event::TxPackets => "tx_packets",
            Event::Ignored => "ignored",
            Event::ArpRepliesSent => "arp_replies",
            Event::ArpLearned => "arp_learned",
            Event::IcmpEchoReplies => "icmp_echo_replies",
            Event::FlowPickups => "flow_pickups",
            Event::FlowsRecycled => "flows_recycled",
            Event::VxlanEncapsulated => "vxlan_encapsulated",
            Event::VxlanDecapsulated => "vxlan_decapsulated",
            Event::GsoSegmented => "gso_segmented",
            Event::GsoSegments => "gso_segments",
            Event::MssClamped => "mss_clamped",
            Event::ArpOtherTarget => "arp_other_target",
        }
    }
}

/// Per-(service, backend) counters; indexed by a stats slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BackendCounter {
    PacketsToBackend,
    BytesToBackend,
    PacketsToClient,
    BytesToClient,
    NewFlows,
}

pub const BACKEND_COUNTERS: usize = 5;
/// Stats slots: distinct (service, backend) pairs podlb keeps counters for.
pub const MAX_STAT_SLOTS: usize = 8192;

/// A counter with one writer: increments are load+store, reads are racy-safe.
#[derive(Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The last VIP conflict a worker saw: which VIP and which MAC claimed it.
///
/// Written by its worker only, read by the control thread, lock-free: the
/// pair (32-bit VIP, 48-bit MAC) does not fit one atomic word, so each of the
/// two words carries the same 16-bit generation in its high bits. The writer
/// bumps the generation and stores both words; a reader that loads two words
/// with equal generations has a pair from one write (a mismatch means a
/// write was under way: the reader skips it and sees the pair next time).
/// The exact number of conflicting frames is the `vip_conflict` drop
/// counter; this slot only says who, as of the latest one.
#[derive(Default)]
pub struct ConflictSlot {
    /// generation << 32 | vip
    vip: AtomicU64,
    /// generation << 48 | mac
    mac: AtomicU64,
}

impl ConflictSlot {
    /// Records a conflict (its worker only).
    #[inline]
    pub fn record(&self, vip: u32, mac: [u8; 6]) {
        let gen = Low::<u16>::low(self.vip.load(Relaxed) >> 32).wrapping_add(1);
        let g = u64::from(gen.max(1));
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(&mac);
        self.vip.store(g << 32 | u64::from(vip), Release);
        self.mac.store(g << 48 | u64::from_be_bytes(m), Release);
    }

    /// The latest (generation, vip, mac), if one was recorded and no write
    /// is under way. The generation tells a reader whether it is new.
    pub fn read(&self) -> Option<(u16, u32, [u8; 6])> {
        let m = self.mac.load(Acquire);
        let v = self.vip.load(Acquire);
        let gen: u16 = (v >> 32).low();
        if gen == 0 || gen != (m >> 48) as u16 {
            return None;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&m.to_be_bytes()[2..]);
        Some((gen, v.low(), mac))
    }
}

/// The counters of one worker.
pub struct WorkerStats {
    drops: CachePadded<[Counter; DropReason::ALL.len()]>,
    events: CachePadded<[Counter; Event::ALL.len()]>,
    backends: Box<[Counter]>,
    /// The latest VIP conflict this worker saw.
    pub conflict: ConflictSlot,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            drops: CachePadded::new(Default::default()),
            events: CachePadded::new(Default::default()),
            backends: (0..MAX_STAT_SLOTS * BACKEND_COUNTERS)
                .map(|_| Counter::default())
                .collect(),
            conflict: ConflictSlot::default(),
        }
    }
}

impl WorkerStats {
    #[inline]
    pub fn dropped(&self, r: DropReason) {
        self.drops[r as usize].add(1);
    }
    #[inline]
    pub fn dropped_n(&self, r: DropReason, n: u64) {
        self.drops[r as usize].add(n);
    }
    #[inline]
    pub fn event(&self, e: Event, n: u64) {
        self.events[e as usize].add(n);
    }
    #[inline]
    pub fn backend(&self, slot: u16, c: BackendCounter, n: u64) {
        if let Some(ctr) = self
            .backends
            .get(slot as usize * BACKEND_COUNTERS + c as usize)
        {
            ctr.add(n);
        }
    }
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }
    pub fn events(&self, e: Event) -> u64 {
        self.events[e as usize].get()
    }
    pub fn backend_value(&self, slot: u16, c: BackendCounter) -> u64 {
        self.backends
            .get(slot as usize * BACKEND_COUNTERS + c as usize)
            .map_or(0, Counter::get)
    }
}

/// Sums of all workers' counters.
pub fn total<'a>(
    workers: impl IntoIterator<Item = &'a WorkerStats>,
    f: impl Fn(&WorkerStats) -> u64,
) -> u64 {
    workers.into_iter().map(f).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_slot_reads_whole_pairs() {
        let s = ConflictSlot::default();
        assert_eq!(s.read(), None);
        s.record(0xc612_0064, [2, 0, 0, 0, 0, 0x66]);
        let (g1, vip, mac) = s.read().unwrap();
        assert_eq!((vip, mac), (0xc612_0064, [2, 0, 0, 0, 0, 0x66]));
        s.record(0xc612_0065, [2, 0, 0, 0, 0, 0x77]);
        let (g2, vip, mac) = s.read().unwrap();
        assert_ne!(g1, g2);
        assert_eq!((vip, mac), (0xc612_0065, [2, 0, 0, 0, 0, 0x77]));
        // A write half done (VIP word of a newer generation) is not a pair.
        s.vip
            .store(u64::from(g2.wrapping_add(1)) << 32 | 7, Release);
        assert_eq!(s.read(), None);
        // The generation skips 0 when it wraps (0 means "none yet").
        for _ in 0..70_000 {
            s.record(1, [2, 0, 0, 0, 0, 1]);
            assert!(s.read().is_some());
        }
    }
}
