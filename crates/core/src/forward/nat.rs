//! Steering: a client's segment to its flow's backend (a new flow picks
//! one by Maglev), a backend's reply back to the client, and the full-NAT
//! rewrite between them (RFC 1624 incremental checksums). Also the NAT
//! source ports, and what a backend's refusal of a SYN does.

use super::family::Family;
use super::mss::clamp_mss;
use super::vxlan::Outer;
use super::{flow_key, ipv4, ipv4_in, set_macs, tcp, Eth, Forwarder, Refusal, Segment, Verdict};
use crate::family::Addr;
use crate::flow::{tcp_state, Flow, FlowAddr, FlowRef, FlowTable, InsertError, Phase, ReverseKey};
use crate::hash::flow_hash;
use crate::model::Mode;
use crate::neighbor::NeighborTable;
use crate::service::{Service, Snapshot, Vtep};
use crate::stats::{BackendCounter, DropReason, Event};
use crate::sync::SyncEvent;
use podlb_wire::{checksum, ports::Ports, udp, vxlan, MacAddr, PacketMeta};

/// Hands out full-NAT source ports. Each worker owns one and uses only the
/// ports `p` with `p % workers == index`, so two workers never race for a
/// port; uniqueness of (backend, VIP, port) is checked in the flow table.
#[derive(Debug, Clone)]
pub struct NatPorts {
    index: u32,
    workers: u32,
    cursor: u32,
}

/// NAT source ports are taken from 1024..=65535.
pub const NAT_PORT_MIN: u32 = 1024;
const NAT_PORT_SPAN: u32 = 65536 - NAT_PORT_MIN;
/// How many candidate ports one new flow may probe.
const NAT_PORT_TRIES: u32 = 512;

impl NatPorts {
    /// `start` seeds where the cursor begins; pass something that differs
    /// between runs (a restarted podlb that began at the same port would walk
    /// straight into the TIME_WAIT entries its predecessor left on the
    /// backends, and their PAWS check would reject the SYNs).
    pub fn new(index: usize, workers: usize, start: u32) -> NatPorts {
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        NatPorts {
            index: u32::try_from(index).unwrap_or(u32::MAX) % workers,
            workers,
            cursor: start,
        }
    }

    /// The next free port of IPv4 protocol `proto` towards
    /// `backend:backend_port` from `vip`.
    /// Ports cycle through the whole range before any is reused, which keeps
    /// reuse far from the backend's TIME_WAIT of an earlier flow.
    pub fn alloc<A: FlowAddr>(
        &mut self,
        flows: &FlowTable<A>,
        snap: &Snapshot,
        vip: A,
        backend: A,
        backend_port: u16,
        proto: u8,
    ) -> Option<u16> {
        let per_worker = NAT_PORT_SPAN / self.workers;
        for _ in 0..NAT_PORT_TRIES.min(per_worker) {
            let k = self.cursor % per_worker;
            self.cursor = self.cursor.wrapping_add(1);
            // k < per_worker and index < workers: below NAT_PORT_MIN + SPAN.
            let Ok(port) = u16::try_from(NAT_PORT_MIN + k * self.workers + self.index) else {
                continue;
            };
            if snap.is_listener(vip, port, proto) {
                continue;
            }
            let rk = ReverseKey {
                backend,
                vip,
                backend_port,
                nat_port: port,
                proto,
            };
            if !flows.reverse_in_use(&rk) {
                return Some(port);
            }
        }
        None
    }
}

/// A full-NAT translation of one segment: its new addresses and ports, and
/// the address that leaves the {src, dst} pair and the one that joins it.
/// For the IPv4 header sum and the TCP pseudo-header alike that is one
/// 32-bit word replaced (RFC 1624 eqn. 3).
#[derive(Debug, Clone, Copy)]
pub(super) struct Nat<A = u32> {
    pub(super) src: A,
    pub(super) dst: A,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) gone: A,
    pub(super) came: A,
}

impl<A: Copy> Nat<A> {
    /// (client:port → VIP:vport) becomes (VIP:nat → backend:bport); the
    /// address pair {client, VIP} becomes {VIP, backend}.
    #[inline]
    pub(super) fn to_backend(f: &Flow<A>) -> Nat<A> {
        Nat {
            src: f.key.vip,
            dst: f.backend,
            sport: f.nat_port,
            dport: f.backend_port,
            gone: f.key.client,
            came: f.backend,
        }
    }

    /// (backend:bport → VIP:nat) becomes (VIP:vport → client:cport); the
    /// address pair {backend, VIP} becomes {VIP, client}.
    #[inline]
    pub(super) fn to_client(f: &Flow<A>) -> Nat<A> {
        Nat {
            src: f.key.vip,
            dst: f.key.client,
            sport: f.key.vport,
            dport: f.key.client_port,
            gone: f.backend,
            came: f.key.client,
        }
    }
}

impl Nat {
    /// Rewrites the IPv4 addresses and the TCP or UDP ports of the frame in
    /// place and updates both checksums incrementally (RFC 1624), or, for a
    /// partial checksum that nothing downstream completes, recomputes it
    /// ([`PacketMeta`]). A later fragment has no ports: only its IPv4
    /// header changes (the first fragment's transport checksum covers the
    /// whole datagram and was updated there).
    #[inline]
    pub(super) fn apply(&self, eth: &mut Eth, meta: PacketMeta) {
        // The views were checked in classify; checking again costs a few
        // compares and keeps this function panic-free on its own.
        let Some(mut ip) = ipv4_in(eth) else {
            return;
        };
        ip.set_src(self.src.into());
        ip.set_dst(self.dst.into());
        let c = checksum::update_u32(ip.checksum(), self.gone, self.came);
        ip.set_checksum(c);
        if ip.frag_offset() != 0 {
            return;
        }
        let proto = ip.protocol();
        // A first fragment's checksum is never a partial one (the sender
        // completed it before fragmenting), whatever the device says.
        let partial = meta.csum_partial && !ip.more_frags();
        let l4 = ip.payload_mut();
        if partial {
            self.apply_partial(l4, proto, meta.tx_keeps_partial);
        } else if let Ok(mut p) = Ports::new_checked(l4, proto) {
            p.translate(self.sport, self.dport, &[(self.gone, self.came)]);
        }
    }

    /// [`apply`](Self::apply)'s transport step for a `CHECKSUM_PARTIAL`
    /// frame (never a fragment).
    #[inline]
    fn apply_partial(&self, l4: &mut [u8], proto: u8, tx_keeps_partial: bool) {
        if proto == ipv4::PROTO_UDP {
            let Ok(mut u) = udp::Packet::new_checked(l4) else {
                return;
            };
            u.set_src_port(self.sport);
            u.set_dst_port(self.dport);
            if tx_keeps_partial {
                let c = checksum::update_partial_u32(u.checksum(), self.gone, self.came);
                u.set_checksum(c);
            } else {
                u.fill_checksum(self.src.into(), self.dst.into());
            }
            return;
        }
        let Ok(mut t) = tcp::Packet::new_checked(l4) else {
            return;
        };
        t.set_src_port(self.sport);
        t.set_dst_port(self.dport);
        if tx_keeps_partial {
            // The field holds the pseudo-header sum only; ports are summed
            // later with the payload, so only the address change applies.
            let c = checksum::update_partial_u32(t.checksum(), self.gone, self.came);
            t.set_checksum(c);
        } else {
            t.fill_checksum(self.src.into(), self.dst.into());
        }
    }
}

/// Completes a partial transport checksum of a frame that leaves with its
/// addresses unchanged (DSR) when nothing downstream will (PacketMeta).
#[inline]
fn complete_partial(eth: &mut Eth, src: u32, dst: u32) {
    let Some(mut ip) = ipv4_in(eth) else {
        return;
    };
    if ip.is_fragment() {
        return;
    }
    if ip.protocol() == ipv4::PROTO_UDP {
        if let Ok(mut u) = udp::Packet::new_checked(ip.payload_mut()) {
            u.fill_checksum(src.into(), dst.into());
        }
    } else if let Ok(mut t) = tcp::Packet::new_checked(ip.payload_mut()) {
        t.fill_checksum(src.into(), dst.into());
    }
}

/// The service flow `f` belongs to in `snap`, if it is still that service
/// (a reload may have moved the index to another one).
pub(super) fn service_of<'s, A: Addr>(snap: &'s Snapshot, f: &Flow<A>) -> Option<&'s Service> {
    snap.services
        .get(usize::from(f.service))
        .filter(|s| s.vip == f.key.vip.wide() && s.port == f.key.vport && s.proto == f.key.proto)
}

/// How flow `f` reaches its backend, for a frame that is not a client's
/// segment (a later fragment, an ICMP error): its service's (mode, MSS
/// clamp), or, for a flow whose service has gone (draining), what the flow
/// itself shows: full NAT through a tunnel if its backend has a VTEP.
pub(super) fn path_of<A: Addr>(snap: &Snapshot, f: &Flow<A>) -> (Mode, Option<u16>) {
    match service_of(snap, f) {
        Some(s) => (s.mode, s.mss_clamp),
        None if f.nat_port == 0 => (Mode::Dsr, None),
        None if snap.vtep(f.backend).is_some() => (Mode::Vxlan, None),
        None => (Mode::Nat, None),
    }
}

/// The state bits a client's segment adds to its flow: TCP flags, or the
/// UDP mark.
#[inline]
fn client_state<A: Copy>(seg: &Segment<A>) -> u8 {
    if seg.is_udp() {
        return tcp_state::UDP;
    }
    let flags = seg.flags;
    let mut state = 0u8;
    if seg.is_syn() {
        state |= tcp_state::SYN;
    } else if flags & tcp::ACK != 0 {
        state |= tcp_state::ESTABLISHED;
    }
    if flags & tcp::FIN != 0 {
        state |= tcp_state::FIN_CLIENT;
    }
    if flags & tcp::RST != 0 {
        state |= tcp_state::RST;
    }
    state
}

impl Forwarder {
    /// A client's segment or datagram to service `svc` (its index and
    /// itself): its flow's backend, or a new flow's.
    #[inline]
    pub(super) fn steer_to_backend<A: Family>(
        &mut self,
        snap: &Snapshot,
        svc: (u16, &Service),
        eth: &mut Eth,
        seg: &Segment<A>,
        now_ms: u32,
    ) -> Verdict {
        let key = flow_key(&seg.tuple, seg.proto);
        let syn = seg.is_syn();
        let state = client_state(seg);
        let existing = match A::flows(self).lookup(&key) {
            // A SYN on a closing flow is the client reusing its port: the old
            // flow is over; steer the new one afresh.
            Some((r, f)) if syn && Phase::from_flags(f.tcp) >= Phase::Fin => {
                self.forget(r, &f);
                self.stats.event(Event::FlowsRecycled, 1);
                None
            }
            other => other,
        };
        let flow = match existing {
            Some((r, f)) => {
                A::flows(self).touch(r, now_ms, state, Some(seg.src_mac));
                f
            }
            None => match self.new_flow(snap, svc, seg, state, now_ms) {
                Ok(f) => f,
                Err(reason) => return Verdict::Drop(reason),
            },
        };
        let svc = svc.1;
        if seg.is_udp() {
            self.stats.event(Event::UdpDatagrams, 1);
        }
        self.send_to_backend(snap, (svc.mode, svc.mss_clamp), &flow, eth, seg)
    }

    /// Sends a frame of flow `flow` (`seg` as parsed, or made from the flow)
    /// to its backend, in the service's `(mode, MSS clamp)`: addressed on
    /// the link, full-NAT rewritten unless DSR, and VXLAN encapsulated in
    /// mode vxlan.
    #[inline]
    pub(super) fn send_to_backend<A: Family>(
        &mut self,
        snap: &Snapshot,
        (mode, clamp): (Mode, Option<u16>),
        flow: &Flow<A>,
        eth: &mut Eth,
        seg: &Segment<A>,
    ) -> Verdict {
        let vtep = match mode {
            Mode::Vxlan => match snap.vtep(flow.backend) {
                Some(v) if self.local_ip != 0 => Some(*v),
                _ => return Verdict::Drop(DropReason::VxlanNoVtep),
            },
            _ => None,
        };
        let bmac = match vtep {
            // The tunnel's outer next hop is an IPv4 neighbor.
            Some(v) => self.neighbors.lookup(v.next_hop).ok_or(v.next_hop),
            None => A::neighbors(self).lookup(flow.backend).ok_or(0),
        };
        let bmac = match bmac {
            Ok(m) => m,
            Err(next_hop) => {
                match vtep {
                    Some(_) => self.neighbors.want(next_hop),
                    None => A::neighbors(self).want(flow.backend),
                }
                return Verdict::Drop(DropReason::NeighborUnresolved);
            }
        };
        if seg.is_syn() && clamp_mss::<A>(eth, clamp, seg.meta.csum_partial) {
            self.stats.event(Event::MssClamped, 1);
        }
        if let Some(v) = vtep {
            return A::tunnel(self, eth, seg, flow, (v, bmac), clamp);
        }
        set_macs(eth, bmac, A::mac(self));
        if seg.translated {
            // Addressed already.
        } else if flow.nat_port != 0 {
            A::apply(&Nat::to_backend(flow), eth, seg.meta);
        } else if seg.meta.csum_partial && !seg.meta.tx_keeps_partial {
            // DSR leaves IP and ports alone, but a partial checksum must
            // still be completed when nothing downstream will (PacketMeta).
            A::complete_partial(eth, seg.tuple.src, seg.tuple.dst);
        }
        let len = eth.as_ref().len() as u64;
        self.stats
            .backend(flow.stat, BackendCounter::PacketsToBackend, 1);
        self.stats
            .backend(flow.stat, BackendCounter::BytesToBackend, len);
        Verdict::Tx
    }

    /// A flow for the client's segment `seg` to service `svc` (its index and
    /// itself), in TCP state `state`: a SYN, or a mid-stream ACK to pick up.
    fn new_flow<A: Family>(
        &mut self,
        snap: &Snapshot,
        (sidx, svc): (u16, &Service),
        seg: &Segment<A>,
        state: u8,
        now_ms: u32,
    ) -> Result<Flow<A>, DropReason> {
        let (flags, syn) = (seg.flags, seg.is_syn());
        // Any datagram opens a UDP flow; a TCP flow opens with a SYN, or
        // with a mid-stream ACK to pick up.
        if !seg.is_udp()
            && (flags & tcp::RST != 0 || (!syn && (!self.pickup || flags & tcp::ACK == 0)))
        {
            return Err(DropReason::NoFlow);
        }
        let key = flow_key(&seg.tuple, seg.proto);
        if !svc.admits(key.client) {
            return Err(DropReason::SourceNotAllowed);
        }
        // sessionAffinity ClientIP (or udp_hash = "src_ip"): the client's
        // port out of the hash, so every flow of a client meets the same
        // Maglev entry.
        let client_port = if svc.client_affinity {
            0
        } else {
            key.client_port
        };
        let h = A::flow_hash(key.client, client_port, key.vip, key.vport, key.proto);
        let Some(bi) = svc.maglev.lookup(h) else {
            return Err(DropReason::NoBackend);
        };
        let b = &svc.backends[bi as usize];
        // A backend of the VIP's family (config and reconcile check it).
        let Some(backend) = A::from_wide(b.ip) else {
            return Err(DropReason::NoBackend);
        };
        if svc.mode == Mode::Vxlan && (b.vtep.is_none() || self.local_ip == 0) {
            return Err(DropReason::VxlanNoVtep);
        }
        if !resolved(&self.neighbors, A::neighbors(self), b.vtep, backend) {
            return Err(DropReason::NeighborUnresolved);
        }
        let nat_port = match svc.mode {
            Mode::Nat | Mode::Vxlan => {
                let mut ports = self.ports.clone();
                let port = ports.alloc(A::flows(self), snap, key.vip, backend, b.port, key.proto);
                self.ports = ports;
                port.ok_or(DropReason::NatPortsExhausted)?
            }
            Mode::Dsr => 0,
        };
        let flow = Flow {
            key,
            backend,
            backend_port: b.port,
            nat_port,
            client_mac: seg.src_mac,
            service: sidx,
            stat: b.stat,
            tcp: state,
            last_seen_ms: now_ms,
        };
        match A::flows(self).insert(&flow, nat_port != 0, now_ms) {
            Ok(_) => {}
            Err(InsertError::Full | InsertError::ReverseFull) => {
                return Err(DropReason::FlowTableFull)
            }
        }
        A::sync_upsert(self, &flow, now_ms);
        self.stats.backend(b.stat, BackendCounter::NewFlows, 1);
        if !syn && !seg.is_udp() {
            self.stats.event(Event::FlowPickups, 1);
        }
        Ok(flow)
    }

    /// A backend's segment to VIP:nat_port, the reverse half of flow `f`
    /// (at `r`): back to the client.
    #[inline]
    pub(super) fn steer_to_client<A: Family>(
        &mut self,
        snap: &Snapshot,
        (r, f): (FlowRef, &Flow<A>),
        eth: &mut Eth,
        seg: &Segment<A>,
        now_ms: u32,
    ) -> Verdict {
        let flags = seg.flags;
        if flags & tcp::RST != 0 && f.tcp == tcp_state::SYN {
            if let Some(v) = self.refused_syn(snap, r, f) {
                return v;
            }
        }
        let mut state = 0;
        if seg.is_udp() {
            state |= tcp_state::ANSWERED;
            self.stats.event(Event::UdpDatagrams, 1);
        }
        if flags & tcp::FIN != 0 {
            state |= tcp_state::FIN_BACKEND;
        }
        if flags & tcp::RST != 0 {
            state |= tcp_state::RST;
        }
        if seg.is_syn_ack() {
            state |= tcp_state::SYN_ACK;
        }
        A::flows(self).touch(r, now_ms, state, None);
        if seg.is_syn_ack() {
            // The backend's SYN-ACK: its MSS tells the client how much to send.
            let clamp = service_of(snap, f).and_then(|s| s.mss_clamp);
            if clamp_mss::<A>(eth, clamp, seg.meta.csum_partial) {
                self.stats.event(Event::MssClamped, 1);
            }
        }
        self.send_to_client(f, eth, seg)
    }

    /// Sends a frame of flow `f` back to its client: addressed on the link
    /// and full-NAT rewritten, unless `seg` says it is translated already.
    #[inline]
    pub(super) fn send_to_client<A: Family>(
        &mut self,
        f: &Flow<A>,
        eth: &mut Eth,
        seg: &Segment<A>,
    ) -> Verdict {
        set_macs(eth, f.client_mac, A::mac(self));
        if !seg.translated {
            A::apply(&Nat::to_client(f), eth, seg.meta);
        }
        let len = eth.as_ref().len() as u64;
        self.stats
            .backend(f.stat, BackendCounter::PacketsToClient, 1);
        self.stats
            .backend(f.stat, BackendCounter::BytesToClient, len);
        Verdict::Tx
    }

    /// The backend of half-open flow `f` answered the client's SYN with a
    /// RST (connection refused: nothing listens, or the backend is going
    /// down). When the flow's service has another backend, the RST is
    /// withheld, the flow forgotten and the backend reported: the client's
    /// SYN retransmission (RFC 6298 §2: after about 1 s) then starts a new
    /// flow, steered by a snapshot the control loop has rebuilt without that
    /// backend. The client sees a slower handshake instead of a refused
    /// connection, as behind a proxy that retries on another server. `None`:
    /// pass the RST on (no other backend, or reporting is off).
    fn refused_syn<A: Family>(
        &mut self,
        snap: &Snapshot,
        r: FlowRef,
        f: &Flow<A>,
    ) -> Option<Verdict> {
        let q = self.refused.as_ref()?;
        let svc = service_of(snap, f)?;
        let backend = f.backend.wide();
        if !svc
            .backends
            .iter()
            .any(|b| (b.ip, b.port) != (backend, f.backend_port))
        {
            return None;
        }
        let _ = q.push(Refusal {
            backend,
            port: f.backend_port,
        });
        self.forget(r, f);
        Some(Verdict::Drop(DropReason::BackendRefused))
    }

    /// Removes flow `f` (at `r`) and tells the backups, if it was still
    /// there.
    pub(super) fn forget<A: Family>(&self, r: FlowRef, f: &Flow<A>) {
        if A::flows(self).remove(r) {
            A::sync_remove(self, f);
        }
    }
}

/// Whether the MAC a new flow's first frame needs is known: the backend's,
/// or for a vxlan backend its VTEP's next hop (always IPv4). If not, the
/// control thread is asked to resolve it.
fn resolved<A: Addr>(
    v4: &NeighborTable,
    own: &NeighborTable<A>,
    vtep: Option<Vtep>,
    backend: A,
) -> bool {
    match vtep {
        Some(v) if v4.lookup(v.next_hop).is_some() => true,
        Some(v) => {
            v4.want(v.next_hop);
            false
        }
        None if own.lookup(backend).is_some() => true,
        None => {
            own.want(backend);
            false
        }
    }
}

impl Family for u32 {
    #[inline(always)]
    fn flows(fw: &Forwarder) -> &FlowTable<u32> {
        &fw.flows
    }
    #[inline(always)]
    fn mac(fw: &Forwarder) -> MacAddr {
        fw.mac
    }
    #[inline(always)]
    fn neighbors(fw: &Forwarder) -> &NeighborTable<u32> {
        &fw.neighbors
    }
    #[inline(always)]
    fn flow_hash(src: u32, sport: u16, dst: u32, dport: u16, proto: u8) -> u64 {
        flow_hash(src, sport, dst, dport, proto)
    }
    #[inline(always)]
    fn apply(nat: &Nat<u32>, eth: &mut Eth, meta: PacketMeta) {
        nat.apply(eth, meta);
    }
    #[inline(always)]
    fn complete_partial(eth: &mut Eth, src: u32, dst: u32) {
        complete_partial(eth, src, dst);
    }
    #[inline(always)]
    fn tcp_in<'e>(eth: &'e mut Eth) -> Option<tcp::Packet<&'e mut [u8]>> {
        super::tcp_in(eth)
    }
    #[inline]
    fn tunnel(
        fw: &mut Forwarder,
        eth: &mut Eth,
        seg: &Segment,
        flow: &Flow,
        (vtep, next_hop): (Vtep, MacAddr),
        clamp: Option<u16>,
    ) -> Verdict {
        let t = &seg.tuple;
        let hash = flow_hash(t.src, t.sport, t.dst, t.dport, seg.proto);
        let outer = Outer {
            dst_mac: next_hop,
            src_mac: fw.mac,
            src: fw.local_ip,
            vtep,
            sport: vxlan::source_port(hash),
        };
        fw.encapsulate(eth, seg, flow, outer, clamp)
    }
    fn rewrite_error(eth: &mut Eth, outer: (u32, u32), quoted: (u32, u32, u16, u16), mtu_cut: u16) {
        super::errors::rewrite(eth, outer, quoted, mtu_cut);
    }
    #[inline]
    fn sync_upsert(fw: &Forwarder, flow: &Flow, now_ms: u32) {
        if let Some(q) = &fw.sync {
            // A full queue drops the event (counted there); the sweeper's
            // periodic refresh sends the flow later.
            q.push(SyncEvent::upsert(flow, now_ms));
        }
    }
    #[inline]
    fn sync_remove(fw: &Forwarder, flow: &Flow) {
        if let Some(q) = &fw.sync {
            q.push(SyncEvent::remove(flow));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::flow::{FlowKey, Phase};
    use crate::forward::*;
    use crate::model::Mode;

    use crate::stats::{DropReason, Event};
    use crate::testlab::*;

    use std::sync::Arc;

    #[test]
    fn nat_syn_reply_and_established_round_trip() {
        let (mut f, snap) = setup(Mode::Nat, 8080);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (src, dst, sport, dport) = verify(&syn);
        assert_eq!(src, VIP, "full NAT: source becomes the VIP");
        assert!(BACKENDS.contains(&dst));
        assert_eq!(dport, 8080);
        assert!(sport as u32 >= NAT_PORT_MIN);
        assert_eq!(&syn[0..6], &bmac(dst).0, "to the backend's MAC");
        assert_eq!(&syn[6..12], &LB, "from podlb's MAC");

        // The backend answers VIP:nat_port; podlb translates back to the client.
        let mut synack = tcp_frame(bmac(dst).0, LB, dst, VIP, 8080, sport, "SA");
        assert_eq!(
            f.forward(&snap, &mut synack, PacketMeta::default(), 2),
            Verdict::Tx
        );
        assert_eq!(verify(&synack), (VIP, CLIENT, 80, 40000));
        assert_eq!(&synack[0..6], &CLIENT_MAC, "to the learned client MAC");

        // Later segments keep the same backend and NAT port.
        for _ in 0..3 {
            let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "A");
            assert_eq!(
                f.forward(&snap, &mut ack, PacketMeta::default(), 3),
                Verdict::Tx
            );
            assert_eq!(verify(&ack), (VIP, dst, sport, 8080));
        }
        let (_, flow) = f
            .flows
            .lookup(&FlowKey {
                client: u32::from_be_bytes(CLIENT),
                vip: u32::from_be_bytes(VIP),
                client_port: 40000,
                vport: 80,
                proto: 6,
            })
            .unwrap();
        assert_eq!(Phase::from_flags(flow.tcp), Phase::Established);
        assert_eq!(f.flows.len(), 1);
    }

    /// A backend's RST to a client's SYN (connection refused) is withheld
    /// and reported and the flow forgotten, so the client's retransmitted
    /// SYN is steered afresh. A RST after the SYN-ACK, or from a service's
    /// only backend, reaches the client as before.
    #[test]
    fn refused_syn_is_withheld_and_reported() {
        let (mut f, snap) = setup(Mode::Nat, 8080);
        let q = Arc::new(RefusalQueue::new(8));
        f.refused = Some(q.clone());
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (_, b, nat, _) = verify(&syn);
        let mut rst = tcp_frame(bmac(b).0, LB, b, VIP, 8080, nat, "RA");
        assert_eq!(
            f.forward(&snap, &mut rst, PacketMeta::default(), 2),
            Verdict::Drop(DropReason::BackendRefused)
        );
        let refusal = Refusal {
            backend: crate::family::Addr::wide(u32::from_be_bytes(b)),
            port: 8080,
        };
        assert_eq!(q.pop(), Some(refusal));
        assert_eq!(f.flows.len(), 0, "the flow is forgotten");

        // The client's retransmission, with the backend left out (as the
        // control loop rebuilds the snapshot): another backend.
        let rest: Vec<[u8; 4]> = BACKENDS.iter().copied().filter(|x| *x != b).collect();
        let without = snapshot_of(Mode::Nat, 8080, &rest);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&without, &mut syn, PacketMeta::default(), 1001),
            Verdict::Tx
        );
        let (_, b2, nat2, _) = verify(&syn);
        assert_ne!(b2, b);

        // Once the backend has answered with a SYN-ACK, its RST is the
        // connection's end: passed on.
        let mut synack = tcp_frame(bmac(b2).0, LB, b2, VIP, 8080, nat2, "SA");
        f.forward(&without, &mut synack, PacketMeta::default(), 1002);
        let mut rst = tcp_frame(bmac(b2).0, LB, b2, VIP, 8080, nat2, "R");
        assert_eq!(
            f.forward(&without, &mut rst, PacketMeta::default(), 1003),
            Verdict::Tx
        );
        assert_eq!(verify(&rst), (VIP, CLIENT, 80, 40000));

        // A service's only backend: its refusal reaches the client.
        let only = snapshot_of(Mode::Nat, 8080, &[b2]);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40001, 80, "S");
        f.forward(&only, &mut syn, PacketMeta::default(), 1004);
        let (_, _, nat3, _) = verify(&syn);
        let mut rst = tcp_frame(bmac(b2).0, LB, b2, VIP, 8080, nat3, "RA");
        assert_eq!(
            f.forward(&only, &mut rst, PacketMeta::default(), 1005),
            Verdict::Tx
        );
        assert!(q.is_empty());
        assert_eq!(f.stats.drops(DropReason::BackendRefused), 1);
    }

    #[test]
    fn partial_checksum_is_updated_as_pseudo_header_only() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40001, 80, "S");
        make_partial(&mut syn);
        let meta = PacketMeta {
            csum_partial: true,
            tx_keeps_partial: true,
            ..Default::default()
        };
        assert_eq!(f.forward(&snap, &mut syn, meta, 1), Verdict::Tx);
        assert_eq!(
            u16::from_be_bytes([syn[50], syn[51]]),
            pseudo_sum(&syn),
            "partial field = new pseudo-header sum"
        );
        // And without a vnet header on TX the checksum is completed in software.
        let mut syn2 = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40002, 80, "S");
        make_partial(&mut syn2);
        let meta = PacketMeta {
            csum_partial: true,
            tx_keeps_partial: false,
            ..Default::default()
        };
        assert_eq!(f.forward(&snap, &mut syn2, meta, 1), Verdict::Tx);
        verify(&syn2);
    }

    #[test]
    fn dsr_rewrites_macs_only() {
        let (mut f, snap) = setup(Mode::Dsr, 80);
        let orig = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        let mut syn = orig.clone();
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        assert_eq!(&syn[12..], &orig[12..], "IP and TCP untouched");
        assert_eq!(&syn[6..12], &LB);
        assert!(BACKENDS.iter().any(|b| syn[0..6] == bmac(*b).0));
    }

    /// Found by the `forward` fuzz target (a 16-byte input: a DSR SYN with
    /// `csum_partial` and no vnet header on TX): DSR forwarded the segment
    /// with its partial checksum, which nothing completes on that path, so
    /// the backend dropped it. Completed in software, as for full NAT.
    #[test]
    fn dsr_completes_a_partial_checksum_when_tx_cannot() {
        let (mut f, snap) = setup(Mode::Dsr, 80);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        make_partial(&mut syn);
        let meta = PacketMeta {
            csum_partial: true,
            ..Default::default()
        };
        assert_eq!(f.forward(&snap, &mut syn, meta, 1), Verdict::Tx);
        assert_eq!(verify(&syn), (CLIENT, VIP, 40000, 80), "complete checksum");
        // With a vnet header on TX the partial request travels on untouched.
        let orig = {
            let mut v = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40001, 80, "S");
            make_partial(&mut v);
            v
        };
        let mut syn = orig.clone();
        let meta = PacketMeta {
            csum_partial: true,
            tx_keeps_partial: true,
            ..Default::default()
        };
        assert_eq!(f.forward(&snap, &mut syn, meta, 1), Verdict::Tx);
        assert_eq!(&syn[12..], &orig[12..]);
    }

    #[test]
    fn source_ranges_admit_new_flows_from_listed_clients_only() {
        let (mut f, _) = setup(Mode::Nat, 80);
        let svc = crate::model::ServiceConfig {
            source_ranges: vec![
                "198.18.1.0/24".parse().unwrap(),
                "198.18.0.10/32".parse().unwrap(),
            ],
            ..service(Mode::Nat, 80, &BACKENDS)
        };
        let snap = build(1, &[svc]);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let other = [198, 18, 0, 11];
        let mut syn = tcp_frame(CLIENT_MAC, LB, other, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::SourceNotAllowed)
        );
        // A pickup (mid-stream ACK) is a new flow too.
        let mut ack = tcp_frame(CLIENT_MAC, LB, other, VIP, 40001, 80, "A");
        assert_eq!(
            f.forward(&snap, &mut ack, PacketMeta::default(), 1),
            Verdict::Drop(DropReason::SourceNotAllowed)
        );
        // The admitted client's flow runs on after the list changes.
        let snap2 = build(
            2,
            &[crate::model::ServiceConfig {
                source_ranges: vec!["198.18.1.0/24".parse().unwrap()],
                ..service(Mode::Nat, 80, &BACKENDS)
            }],
        );
        let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "A");
        assert_eq!(
            f.forward(&snap2, &mut ack, PacketMeta::default(), 2),
            Verdict::Tx
        );
    }

    #[test]
    fn client_affinity_sends_every_connection_of_a_client_to_one_backend() {
        let (mut f, _) = setup(Mode::Nat, 80);
        let svc = crate::model::ServiceConfig {
            affinity: crate::model::Affinity::ClientIp,
            ..service(Mode::Nat, 80, &BACKENDS)
        };
        let snap = build(1, &[svc]);
        let mut per_client = std::collections::HashMap::new();
        for c in 0..60u8 {
            let client = [198, 18, 2, c];
            for port in 0..20u16 {
                let mut syn = tcp_frame(CLIENT_MAC, LB, client, VIP, 30000 + port, 80, "S");
                assert_eq!(
                    f.forward(&snap, &mut syn, PacketMeta::default(), 1),
                    Verdict::Tx
                );
                per_client
                    .entry(c)
                    .or_insert_with(std::collections::HashSet::new)
                    .insert(verify(&syn).1);
            }
        }
        assert!(per_client.values().all(|b| b.len() == 1), "{per_client:?}");
        let used: std::collections::HashSet<_> = per_client.values().flatten().collect();
        assert_eq!(used.len(), 3, "clients still spread over the backends");
    }

    #[test]
    fn spreads_over_backends_and_keeps_flows_on_reload() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut count = std::collections::HashMap::new();
        for port in 0..3000u16 {
            let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 20000 + port, 80, "S");
            assert_eq!(
                f.forward(&snap, &mut syn, PacketMeta::default(), 1),
                Verdict::Tx
            );
            *count.entry(verify(&syn).1).or_insert(0) += 1;
        }
        for b in BACKENDS {
            let n = count[&b];
            assert!((900..=1100).contains(&n), "{b:?}: {n} of 3000");
        }
        // Reload without backend 3: existing flows keep their backend (drain),
        // new flows never pick it.
        let snap2 = build(2, &[service(Mode::Nat, 80, &BACKENDS[..2])]);
        let mut kept = 0;
        for port in 0..3000u16 {
            let mut ack = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 20000 + port, 80, "A");
            assert_eq!(
                f.forward(&snap2, &mut ack, PacketMeta::default(), 2),
                Verdict::Tx
            );
            kept += (verify(&ack).1 == BACKENDS[2]) as usize;
        }
        assert_eq!(
            kept, count[&BACKENDS[2]],
            "draining flows stay on the removed backend"
        );
        for port in 0..500u16 {
            let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 50000 + port, 80, "S");
            assert_eq!(
                f.forward(&snap2, &mut syn, PacketMeta::default(), 3),
                Verdict::Tx
            );
            assert_ne!(verify(&syn).1, BACKENDS[2]);
        }
    }

    #[test]
    fn syn_on_closing_flow_starts_a_new_flow() {
        let (mut f, snap) = setup(Mode::Nat, 80);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        f.forward(&snap, &mut syn, PacketMeta::default(), 1);
        let first_port = verify(&syn).2;
        let mut fin = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "FA");
        f.forward(&snap, &mut fin, PacketMeta::default(), 2);
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 3),
            Verdict::Tx
        );
        assert_ne!(
            verify(&syn).2,
            first_port,
            "a fresh NAT port for the new incarnation"
        );
        assert_eq!(f.stats.events(Event::FlowsRecycled), 1);
        assert_eq!(f.flows.len(), 1);
    }

    /// UDP: a datagram opens a flow (no handshake), the backend's answer
    /// marks it answered, and a TCP service on the same VIP and port is a
    /// separate service with separate flows.
    #[test]
    fn udp_nat_round_trip_next_to_tcp_on_the_same_port() {
        let (mut f, _) = setup(Mode::Nat, 53);
        let snap = build(
            1,
            &[
                service(Mode::Nat, 8080, &BACKENDS),
                udp_service(Mode::Nat, 5353, &BACKENDS),
            ],
        );
        let mut q = udp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, b"query");
        assert_eq!(
            f.forward(&snap, &mut q, PacketMeta::default(), 1),
            Verdict::Tx
        );
        let (src, b, nat, dport) = verify_udp(&q);
        assert_eq!((src, dport), (VIP, 5353));
        let key = FlowKey {
            client: u32::from_be_bytes(CLIENT),
            vip: u32::from_be_bytes(VIP),
            client_port: 40000,
            vport: 80,
            proto: 17,
        };
        let phase = |f: &Forwarder| Phase::from_flags(f.flows.lookup(&key).unwrap().1.tcp);
        assert_eq!(phase(&f), Phase::UdpUnanswered);
        let mut a = udp_frame(bmac(b).0, LB, b, VIP, 5353, nat, b"answer");
        assert_eq!(
            f.forward(&snap, &mut a, PacketMeta::default(), 2),
            Verdict::Tx
        );
        assert_eq!(verify_udp(&a), (VIP, CLIENT, 80, 40000));
        assert_eq!(&a[0..6], &CLIENT_MAC);
        assert_eq!(phase(&f), Phase::UdpAnswered);
        // The same 4-tuple over TCP is another flow, of the TCP service.
        let mut syn = tcp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, "S");
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 3),
            Verdict::Tx
        );
        assert_eq!(verify(&syn).3, 8080);
        assert_eq!(f.flows.len(), 2);
        // A TCP reply to the UDP flow's NAT port is no reply of it.
        let mut stray = tcp_frame(bmac(b).0, LB, b, VIP, 5353, nat, "A");
        assert_eq!(
            f.forward(&snap, &mut stray, PacketMeta::default(), 4),
            Verdict::Drop(DropReason::NoService)
        );
        assert_eq!(f.stats.events(Event::UdpDatagrams), 2);
        assert_eq!(f.stats.events(Event::FlowPickups), 0);
        // A datagram without a checksum keeps none.
        let mut q = udp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40001, 80, b"x");
        q[40] = 0;
        q[41] = 0;
        assert_eq!(
            f.forward(&snap, &mut q, PacketMeta::default(), 5),
            Verdict::Tx
        );
        assert_eq!(&q[40..42], &[0, 0]);
        verify_udp(&q);
    }

    #[test]
    fn udp_spreads_per_socket_or_per_client_with_src_ip_hash() {
        for (hash, per_client) in [
            (crate::model::UdpHash::FiveTuple, false),
            (crate::model::UdpHash::SrcIp, true),
        ] {
            let (mut f, _) = setup(Mode::Nat, 53);
            let snap = build(
                1,
                &[crate::model::ServiceConfig {
                    udp_hash: hash,
                    ..udp_service(Mode::Nat, 53, &BACKENDS)
                }],
            );
            let mut seen = std::collections::HashMap::new();
            for c in 0..30u8 {
                for port in 0..30u16 {
                    let client = [198, 18, 3, c];
                    let mut q = udp_frame(CLIENT_MAC, LB, client, VIP, 20000 + port, 80, b"q");
                    assert_eq!(
                        f.forward(&snap, &mut q, PacketMeta::default(), 1),
                        Verdict::Tx
                    );
                    seen.entry(c)
                        .or_insert_with(std::collections::HashSet::new)
                        .insert(verify_udp(&q).1);
                }
            }
            let one_each = seen.values().all(|b| b.len() == 1);
            assert_eq!(one_each, per_client, "{hash:?}");
        }
    }

    #[test]
    fn udp_in_dsr_rewrites_macs_only() {
        let (mut f, _) = setup(Mode::Dsr, 53);
        let snap = build(1, &[udp_service(Mode::Dsr, 80, &BACKENDS)]);
        let orig = udp_frame(CLIENT_MAC, LB, CLIENT, VIP, 40000, 80, b"q");
        let mut q = orig.clone();
        assert_eq!(
            f.forward(&snap, &mut q, PacketMeta::default(), 1),
            Verdict::Tx
        );
        assert_eq!(&q[12..], &orig[12..]);
        assert!(BACKENDS.iter().any(|b| q[0..6] == bmac(*b).0));
    }
}
