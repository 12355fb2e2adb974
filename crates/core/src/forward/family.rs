//! What steering needs of an address family. `nat.rs` is written once over
//! [`Family`]; the IPv4 implementation lives beside the IPv4 code paths
//! (`nat.rs`, `vxlan.rs`, `mss.rs`), the IPv6 one in `ipv6.rs`. Each
//! method is monomorphised: the IPv4 path pays nothing for IPv6 existing.

use super::nat::Nat;
use super::{Eth, Forwarder, Segment, Verdict};
use crate::flow::{Flow, FlowAddr, FlowTable};
use crate::neighbor::NeighborTable;
use crate::service::Vtep;
use podlb_wire::{tcp, MacAddr, PacketMeta};

pub(super) trait Family: FlowAddr {
    /// The worker's flow table of this family.
    fn flows(fw: &Forwarder) -> &FlowTable<Self>;
    /// The MAC this family's VIPs are served with (each family has its
    /// own VRRP instance and virtual MAC, RFC 9568 §7.3).
    fn mac(fw: &Forwarder) -> MacAddr;
    /// The worker's neighbor cache of this family.
    fn neighbors(fw: &Forwarder) -> &NeighborTable<Self>;
    /// The Maglev hash of a flow's tuple (`crate::hash`).
    fn flow_hash(src: Self, sport: u16, dst: Self, dport: u16, proto: u8) -> u64;
    /// Rewrites addresses and ports of the frame per `nat`, checksums
    /// updated (RFC 1624) or completed per `meta`.
    fn apply(nat: &Nat<Self>, eth: &mut Eth, meta: PacketMeta);
    /// Completes a partial transport checksum of a frame that leaves with
    /// its addresses unchanged (DSR) when nothing downstream will.
    fn complete_partial(eth: &mut Eth, src: Self, dst: Self);
    /// The TCP segment of the frame, to rewrite (MSS clamping).
    fn tcp_in<'e>(eth: &'e mut Eth) -> Option<tcp::Packet<&'e mut [u8]>>;
    /// Carries the frame to its backend through VXLAN tunnel `vtep`, whose
    /// next hop has MAC `next_hop`.
    fn tunnel(
        fw: &mut Forwarder,
        eth: &mut Eth,
        seg: &Segment<Self>,
        flow: &Flow<Self>,
        to: (Vtep, MacAddr),
        clamp: Option<u16>,
    ) -> Verdict;
    /// Rewrites an ICMP error in place (`errors.rs`): the outer addresses
    /// to `outer`, the quoted packet to `(src, dst, sport, dport)`, a
    /// too-big MTU reduced by `mtu_cut`, and every checksum.
    fn rewrite_error(
        eth: &mut Eth,
        outer: (Self, Self),
        quoted: (Self, Self, u16, u16),
        mtu_cut: u16,
    );
    /// Tells the backups about a new or recycled flow (connection sync).
    fn sync_upsert(fw: &Forwarder, flow: &Flow<Self>, now_ms: u32);
    /// Tells the backups a flow is gone.
    fn sync_remove(fw: &Forwarder, flow: &Flow<Self>);
}
