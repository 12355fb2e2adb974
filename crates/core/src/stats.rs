//! Counters. Each worker owns one [`WorkerStats`] and is its only writer,
//! so an increment is a plain load and store (no locked instruction); the
//! admin endpoint sums all workers' values.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use crossbeam_utils::CachePadded;

use crate::bits::Low;

/// Declares a counter enum from one table: each variant with its doc, its
/// label value (`as_str`, as it appears in `/metrics` and `/status`) and its
/// help text. `ALL` lists every variant in declaration order and `COUNT` is
/// its length, so arrays of counters are sized by the table itself: a
/// variant cannot exist without its name, nor be missed by `ALL`.
macro_rules! counter_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $Enum:ident {
            $( $(#[$vmeta:meta])* $Variant:ident => $label:literal, $help:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $Enum {
            $( $(#[$vmeta])* $Variant, )*
        }

        impl $Enum {
            /// Every variant, in declaration order (`ALL[v as usize] == v`).
            pub const ALL: [$Enum; [$($label),*].len()] = [$($Enum::$Variant),*];
            /// Number of variants: the length of a counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $Enum::$Variant => $label, )*
                }
            }

            /// One line saying what is counted.
            pub const fn help(self) -> &'static str {
                match self {
                    $( $Enum::$Variant => $help, )*
                }
            }
        }
    };
}

counter_enum! {
    /// Why a frame was dropped. Every drop has one, and a counter.
    pub enum DropReason {
        /// Shorter than an Ethernet header.
        EthTruncated => "eth_truncated", "Shorter than an Ethernet header.";
        /// Carries an 802.1Q/802.1ad tag: podlb serves untagged segments (attach
        /// to the VLAN sub-interface instead).
        VlanTagged => "vlan_tagged", "VLAN-tagged frames (attach to the VLAN sub-interface).";
        /// ARP that is truncated or not Ethernet/IPv4.
        ArpMalformed => "arp_malformed", "ARP that is truncated or not Ethernet/IPv4.";
        /// IPv4 header truncated or its lengths inconsistent.
        Ipv4Malformed => "ipv4_malformed", "IPv4 header truncated or its lengths inconsistent.";
        /// IPv4 header checksum wrong.
        Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum wrong.";
        /// A fragment addressed to a VIP (podlb does not reassemble).
        Ipv4Fragment => "ipv4_fragment", "Fragments podlb does not steer (not TCP or UDP, or inside VXLAN).";
        /// TCP header truncated or data offset invalid.
        TcpMalformed => "tcp_malformed", "TCP header truncated or data offset invalid.";
        /// UDP header truncated or length field invalid.
        UdpMalformed => "udp_malformed", "UDP header truncated or length field invalid.";
        /// ICMP message truncated or with a bad checksum.
        IcmpMalformed => "icmp_malformed", "ICMP message truncated or with a bad checksum.";
        /// ICMP other than echo to a VIP.
        IcmpUnhandled => "icmp_unhandled", "ICMP to a VIP other than echo and the errors of flows (or errors with icmp_errors off).";
        /// Addressed to a VIP but to no configured port/protocol.
        NoService => "no_service", "Addressed to a VIP but to no configured port/protocol.";
        /// The service has no backend.
        NoBackend => "no_backend", "The service has no backend.";
        /// The backend's MAC is not resolved yet (ARP asked).
        NeighborUnresolved => "neighbor_unresolved", "The backend's MAC is not resolved yet.";
        /// A non-SYN segment of an unknown flow, with pickup off, or a RST.
        NoFlow => "no_flow", "Non-SYN segments of unknown flows (pickup off), or RSTs.";
        /// The connection table had no room (after eviction).
        FlowTableFull => "flow_table_full", "The connection table had no room (after eviction).";
        /// No free NAT source port towards that backend.
        NatPortsExhausted => "nat_ports_exhausted", "No free NAT source port towards the backend.";
        /// A frame larger than the device accepts, or a GSO frame podlb cannot pass on.
        Oversize => "oversize", "Frames larger than the device accepts, or GSO frames podlb cannot pass on.";
        /// The transmit queue refused the frame.
        TxError => "tx_error", "The transmit queue refused the frame.";
        /// Traffic for a VIP reached this instance while it is a VRRP backup.
        NotMaster => "not_master", "Traffic for a VIP while this instance is a backup.";
        /// A control frame (VRRP advert) found the control queue full.
        PuntQueueFull => "punt_queue_full", "Control frames (VRRP adverts) that found the control queue full.";
        /// VXLAN to podlb's VXLAN port that is short, lacks the I flag (RFC 7348
        /// §5), or carries an inner frame that is not a well-formed IPv4 packet.
        VxlanMalformed => "vxlan_malformed", "VXLAN that is short, lacks the I flag, or carries no well-formed IPv4 packet.";
        /// VXLAN with a VNI no vxlan service uses.
        VxlanUnknownVni => "vxlan_unknown_vni", "VXLAN with a VNI no vxlan service uses.";
        /// A flow of a vxlan service whose backend has no VTEP in the current
        /// snapshot (not a backend, nor a removed one whose flows still drain),
        /// or no local address to send from.
        VxlanNoVtep => "vxlan_no_vtep", "Flows of a vxlan service whose backend has no VTEP (or no local address).";
        /// ARP whose sender address is a VIP this instance serves but whose
        /// sender MAC is not the serving MAC: another host claims the VIP
        /// (RFC 5227 §2.4 ongoing address conflict detection). The control
        /// thread logs it, shows it in /status and defends the VIP.
        VipConflict => "vip_conflict", "ARP from another MAC claiming a VIP (RFC 5227 section 2.4).";
        /// The kernel dropped a frame before podlb saw it for want of ring room:
        /// an AF_PACKET receive ring full (`PACKET_STATISTICS`), or an AF_XDP RX
        /// ring full / no free UMEM chunk on the FILL ring (`XDP_STATISTICS`).
        /// Read by each worker every 100 ms.
        RxRingFull => "rx_ring_full", "Frames the kernel dropped for want of receive ring room.";
        /// A backend answered a client's SYN with a RST (nothing listening, or
        /// the backend going down): the RST is withheld and the flow forgotten,
        /// so the client's SYN retransmission is steered afresh while the
        /// control plane holds that backend out (`flows.refused_hold_s`). Only
        /// when the service has another backend; `nat` and `vxlan` modes, where
        /// replies pass podlb.
        BackendRefused => "backend_refused", "RSTs a backend answered a SYN with, withheld so the client's retry goes elsewhere.";
        /// A new flow from a client outside the service's `source_ranges`
        /// (`spec.loadBalancerSourceRanges`); flows already open run on.
        SourceNotAllowed => "source_not_allowed", "New flows from clients outside the service's source ranges.";
        /// A non-first fragment whose first fragment podlb has not steered
        /// (it came first, was lost, or its fragment-table entry was taken
        /// by another datagram).
        FragmentUnmatched => "fragment_unmatched", "Later fragments of a datagram whose first fragment podlb did not see.";
        /// An ICMP error (RFC 792) to a VIP whose quoted datagram belongs
        /// to no flow: dropped, as a NAT drops errors that match no mapping
        /// (RFC 5508 §4).
        IcmpNoFlow => "icmp_no_flow", "ICMP errors to a VIP that quote no flow podlb holds.";
        /// IPv6 header truncated, its Payload Length inconsistent, or its
        /// extension-header chain malformed or longer than podlb walks.
        Ipv6Malformed => "ipv6_malformed", "IPv6 packets truncated or with a malformed or overlong extension-header chain.";
        /// An IPv6 fragment to a VIP (not steered; IPv6 senders fragment
        /// rarely: Path MTU Discovery is mandatory, RFC 8201).
        Ipv6Fragment => "ipv6_fragment", "IPv6 fragments to a VIP (not steered).";
        /// ICMPv6 or NDP that fails its checks (checksum, RFC 4861 §7.1 hop
        /// limit and code, truncation).
        Icmpv6Malformed => "icmpv6_malformed", "ICMPv6 and NDP messages failing their checks (RFC 4861 section 7.1).";
    }
}

counter_enum! {
    /// Engine-wide events other than drops.
    pub enum Event {
        RxPackets => "rx_packets", "Frames received.";
        RxBytes => "rx_bytes", "Bytes received.";
        TxPackets => "tx_packets", "Frames transmitted.";
        /// Frames that are not podlb's business (left to the kernel).
        Ignored => "ignored", "Frames not addressed to podlb, left to the kernel.";
        ArpRepliesSent => "arp_replies", "ARP replies sent for VIPs.";
        ArpLearned => "arp_learned", "ARP packets a tracked neighbor's MAC was learned from.";
        IcmpEchoReplies => "icmp_echo_replies", "ICMP echo replies sent for VIPs.";
        /// Mid-stream flows adopted (pickup).
        FlowPickups => "flow_pickups", "Mid-stream flows adopted.";
        /// SYNs that replaced a closing flow with the same 4-tuple.
        FlowsRecycled => "flows_recycled", "Closing flows replaced by a new SYN on the same 4-tuple.";
        /// Frames sent VXLAN-encapsulated to a backend's VTEP.
        VxlanEncapsulated => "vxlan_encapsulated", "Frames sent VXLAN-encapsulated to a backend's VTEP (RFC 7348).";
        /// VXLAN-encapsulated replies podlb unwrapped.
        VxlanDecapsulated => "vxlan_decapsulated", "VXLAN-encapsulated backend replies unwrapped.";
        /// GSO frames of vxlan services cut into segments in software ...
        GsoSegmented => "gso_segmented", "GSO frames of vxlan services segmented in software.";
        /// ... and the segments that made.
        GsoSegments => "gso_segments", "Segments made from those GSO frames.";
        /// SYN or SYN-ACK MSS options lowered to the service's `mss_clamp`.
        MssClamped => "mss_clamped", "SYN and SYN-ACK MSS options clamped.";
        /// ARP requests for addresses podlb does not answer (not a VIP, or a
        /// VIP while backup): left to the kernel, counted apart from the other
        /// ignored frames so an ARP storm shows up by name.
        ArpOtherTarget => "arp_other_target", "ARP requests for addresses podlb does not answer, left to the kernel.";
        /// Later fragments of a TCP or UDP datagram steered after its first
        /// fragment (the per-worker fragment table).
        FragmentsSteered => "fragments_steered", "Later fragments steered to where their first fragment went.";
        IcmpErrorsToBackend => "icmp_errors_to_backend", "ICMP errors from the client side translated and sent to a flow's backend.";
        IcmpErrorsToClient => "icmp_errors_to_client", "ICMP errors from the backend side translated and sent to a flow's client.";
        /// UDP datagrams forwarded (both directions).
        UdpDatagrams => "udp_datagrams", "UDP datagrams forwarded, both directions.";
        /// Neighbor Advertisements sent in answer to solicitations for IPv6
        /// VIPs (RFC 4861 §7.2.4).
        NdpAdvertsSent => "ndp_adverts", "Neighbor Advertisements sent for IPv6 VIPs.";
        /// NDP messages a tracked IPv6 neighbor's MAC was learned from.
        NdpLearned => "ndp_learned", "NDP messages a tracked IPv6 neighbor's MAC was learned from.";
        /// Neighbor Solicitations for addresses podlb does not answer.
        NdpOtherTarget => "ndp_other_target", "Neighbor Solicitations for addresses podlb does not answer, left to the kernel.";
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
    drops: CachePadded<[Counter; DropReason::COUNT]>,
    events: CachePadded<[Counter; Event::COUNT]>,
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
    fn counter_tables_index_by_discriminant_with_unique_names() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            index: impl Fn(T) -> usize,
            name: impl Fn(T) -> &'static str,
            help: impl Fn(T) -> &'static str,
        ) {
            let mut names = std::collections::HashSet::new();
            for (i, &v) in all.iter().enumerate() {
                assert_eq!(index(v), i, "{v:?}");
                assert!(names.insert(name(v)), "duplicate name {}", name(v));
                assert!(!help(v).is_empty() && help(v).ends_with('.'), "{v:?}");
                assert!(name(v)
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            }
        }
        check(
            &DropReason::ALL,
            |r| r as usize,
            DropReason::as_str,
            DropReason::help,
        );
        check(&Event::ALL, |e| e as usize, Event::as_str, Event::help);
        assert_eq!(DropReason::COUNT, 32);
        assert_eq!(Event::COUNT, 22);
    }

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
