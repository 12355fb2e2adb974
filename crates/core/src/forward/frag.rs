//! Fragments: the first fragment of a TCP or UDP datagram carries the
//! ports and is steered like any segment; its later fragments carry none
//! (RFC 791 §2.3), so each worker remembers, per datagram (source,
//! destination, protocol and Identification: RFC 791 §3.2 "the
//! identification ... together with the source, destination and protocol"),
//! which flow the first one joined and which way it went, and steers the
//! rest after it. No reassembly: fragments leave as they came, with the
//! addresses rewritten (full NAT) and nothing else, and the receiver
//! reassembles as it would without podlb.
//!
//! Bounded and allocation-free: a direct-mapped table of [`SLOTS`] entries
//! per worker. A later fragment that arrives before its first, or whose
//! entry another datagram has taken, is dropped and counted
//! (`fragment_unmatched`); the sender's retransmission (DNS, TCP) repeats
//! the whole datagram. Fanout keeps the fragments of one datagram on one
//! worker: the kernel's flow hash of a fragment covers addresses and
//! protocol only, first fragment included.

use super::nat::path_of;
use super::{ipv4, Eth, Forwarder, Segment, Verdict};
use crate::elapsed_ms;
use crate::flow::Flow;
use crate::service::Snapshot;
use crate::stats::{DropReason, Event};
use podlb_wire::PacketMeta;

/// Entries per worker: datagrams being fragmented at one instant.
pub const SLOTS: usize = 1024;
/// How long after its first fragment the later ones are steered: the
/// fragments of one datagram leave the sender back to back.
pub const TIMEOUT_MS: u32 = 2_000;

/// What identifies the fragments of one datagram (RFC 791 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Id {
    src: u32,
    dst: u32,
    ident: u16,
    proto: u8,
}

impl Id {
    pub(super) fn of(ip: &ipv4::Packet<&[u8]>) -> Id {
        Id {
            src: ip.src_u32(),
            dst: ip.dst_u32(),
            ident: ip.ident(),
            proto: ip.protocol(),
        }
    }

    fn slot(&self) -> usize {
        let h = crate::hash::mix64(
            (u64::from(self.src) << 32 | u64::from(self.dst))
                ^ (u64::from(self.ident) << 8 | u64::from(self.proto)).rotate_left(29),
        );
        // Below SLOTS: fits.
        usize::try_from(h % SLOTS as u64).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Id,
    at_ms: u32,
    flow: Flow,
    /// From the client towards the backend; else a backend's reply.
    to_backend: bool,
}

/// A worker's fragment table.
pub struct Fragments {
    slots: Box<[Option<Entry>]>,
}

impl Default for Fragments {
    fn default() -> Self {
        Fragments {
            slots: vec![None; SLOTS].into_boxed_slice(),
        }
    }
}

impl Forwarder {
    /// Remembers where the first fragment `id` of segment `seg` went (just
    /// steered): its flow, found again by its key or reverse key.
    pub(super) fn remember_fragment(&mut self, id: Id, seg: &Segment, now_ms: u32) {
        let (flow, to_backend) = match self.flows.lookup(&super::flow_key(&seg.tuple, seg.proto)) {
            Some((_, f)) => (f, true),
            None => match self
                .flows
                .lookup_reverse(&super::reverse_key(&seg.tuple, seg.proto))
            {
                Some((_, f)) => (f, false),
                None => return,
            },
        };
        self.frags.slots[id.slot()] = Some(Entry {
            id,
            at_ms: now_ms,
            flow,
            to_backend,
        });
    }

    /// A later fragment (offset > 0) of a TCP or UDP datagram to a VIP:
    /// where its first fragment went, or a counted drop.
    pub(super) fn later_fragment(
        &mut self,
        snap: &Snapshot,
        eth: &mut Eth,
        meta: PacketMeta,
        now_ms: u32,
    ) -> Verdict {
        let Ok(id) = ipv4::Packet::new_checked(eth.payload()).map(|ip| Id::of(&ip)) else {
            return Verdict::Drop(DropReason::Ipv4Malformed);
        };
        let e = match self.frags.slots[id.slot()] {
            Some(e) if e.id == id && elapsed_ms(now_ms, e.at_ms) <= TIMEOUT_MS => e,
            _ => return Verdict::Drop(DropReason::FragmentUnmatched),
        };
        // Fragments carry no checksum of their own to complete.
        let meta = PacketMeta {
            csum_partial: false,
            gso_size: 0,
            ..meta
        };
        let seg = Segment::of_flow(&e.flow, e.to_backend, eth.src(), meta);
        let v = if e.to_backend {
            self.send_to_backend(snap, path_of(snap, &e.flow), &e.flow, eth, &seg)
        } else {
            self.send_to_client(&e.flow, eth, &seg)
        };
        if matches!(v, Verdict::Tx | Verdict::TxOut) {
            self.stats.event(Event::FragmentsSteered, 1);
        }
        v
    }
}
