//! Poll-mode workers: each drives one [`Device`] through the forward
//! pipeline. A worker never takes a lock: it reads the published snapshot
//! through an atomic pointer, the flow and neighbor tables are lock-free,
//! and its counters are its own.
//!
//! Adaptive polling: while frames arrive the worker polls back to back;
//! after `busy_poll` without a frame it sleeps in poll(2) until the device is
//! readable (or a housekeeping timeout), so an idle worker costs ~0 CPU.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

use podlb_core::flow::FlowTable;
use podlb_core::forward::{Forwarder, Verdict};
use podlb_core::neighbor::NeighborTable;
use podlb_core::service::Snapshot;
use podlb_core::stats::{DropReason, Event};
use podlb_io::Device;

use crate::probes::Heartbeats;

/// State shared by the control plane and all workers.
pub struct Shared {
    /// The current services; replaced whole, never mutated.
    pub snapshot: ArcSwap<Snapshot>,
    pub flows: Arc<FlowTable>,
    pub neighbors: Arc<NeighborTable>,
    /// IPv6 flows and neighbors: tables of their own.
    pub flows6: Arc<FlowTable<u128>>,
    pub neighbors6: Arc<NeighborTable<u128>>,
    pub stop: AtomicBool,
    /// Serving the VIPs: always without VRRP; only while master with it.
    pub active: AtomicBool,
    /// Serving the IPv6 VIPs: as `active`, for the IPv6 VRRP instance (or,
    /// without one, the same as `active`).
    pub active6: AtomicBool,
    /// Control frames (VRRP adverts) the workers hand to the control thread.
    /// Bounded: a flood of them costs a counted drop, never memory.
    pub punt: ArrayQueue<Vec<u8>>,
    /// Backends that refused a SYN, reported by workers to the control
    /// thread (`Forwarder::refused`). Bounded like `punt`.
    pub refused: Arc<podlb_core::forward::RefusalQueue>,
    /// Takeover clock (µs since `epoch`, +1; 0 = idle): armed by the control
    /// thread on becoming master, stopped by the first frame a worker sends.
    pub takeover_armed_us: AtomicU64,
    pub takeover_done_us: AtomicU64,
    /// The IPv6 VRRP instance's takeover clock, as `takeover_*_us`:
    /// stopped by the first IPv6 frame a worker forwards.
    pub takeover6_armed_us: AtomicU64,
    pub takeover6_done_us: AtomicU64,
    /// Update clock (µs since `epoch`, +1; 0 = idle): armed by the control
    /// thread with the arrival time of the API event behind a snapshot of
    /// generation `update_gen`, stopped by the first frame a worker sends
    /// with that snapshot (or a later one).
    pub update_armed_us: AtomicU64,
    pub update_gen: AtomicU64,
    pub update_done_us: AtomicU64,
    /// Time zero of every `now_ms` in the engine.
    pub epoch: Instant,
    /// Stamped by the control loop each pass and by each worker each poll
    /// iteration (`/livez`).
    pub heartbeats: Heartbeats,
}

/// Control frames queued for the control thread at most.
pub const PUNT_QUEUE: usize = 256;
/// Refusal reports queued for the control thread at most.
pub const REFUSED_QUEUE: usize = 256;

impl Shared {
    /// The MAC of neighbor `ip` (wide form, `podlb_core::family`), from
    /// the table of its family.
    pub fn neighbor_mac(&self, ip: u128) -> Option<podlb_wire::MacAddr> {
        use podlb_core::family::Addr;
        match u32::from_wide(ip) {
            Some(v4) => self.neighbors.lookup(v4),
            None => self.neighbors6.lookup(ip),
        }
    }

    /// Milliseconds since the epoch (wrapping u32; ages are differences).
    #[inline]
    pub fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }
}

/// How often a worker reads its device's ring-full drop count (a syscall).
const RING_CHECK: Duration = Duration::from_millis(100);

/// How long a sleeping worker waits before it looks at the stop flag again.
const SLEEP: Duration = Duration::from_millis(100);

/// Runs worker `id` until `shared.stop` is set.
pub fn run_worker<D: Device>(
    mut dev: D,
    shared: Arc<Shared>,
    id: usize,
    mut fwd: Forwarder,
    busy_poll: Duration,
) {
    let idle = Default::default();
    let beat = shared.heartbeats.worker(id).unwrap_or(&idle);
    // The worker's counters are its forwarder's.
    let stats = fwd.stats.clone();
    // Frames the forwarder builds (VXLAN) leave through their own sender.
    let tx = match dev.injector() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "no sender for built frames; vxlan services cannot forward");
            None
        }
    };
    let flows = fwd.flows.clone();
    let mut last_rx = Instant::now();
    let mut last_ring_check = last_rx;
    let mut generation = u64::MAX;
    while !shared.stop.load(Ordering::Relaxed) {
        let snap = shared.snapshot.load();
        if snap.generation != generation {
            generation = snap.generation;
            dev.addresses(&mut snap.vips4());
        }
        let now = Instant::now();
        beat.stamp(shared.epoch, now);
        if now.duration_since(last_ring_check) >= RING_CHECK {
            last_ring_check = now;
            stats.dropped_n(DropReason::RxRingFull, dev.rx_ring_drops());
        }
        let now_ms = now.duration_since(shared.epoch).as_millis() as u32;
        fwd.active = shared.active.load(Ordering::Relaxed);
        fwd.active6 = shared.active6.load(Ordering::Relaxed);
        // While the IPv6 takeover clock runs, forwarded frames are looked
        // at for one of IPv6 (the IPv4 instance may be forwarding already).
        let watch6 = shared.takeover6_armed_us.load(Ordering::Relaxed) != 0
            && shared.takeover6_done_us.load(Ordering::Relaxed) == 0;
        let mut tx6 = false;
        let res = dev.poll_prefetched(
            &mut |frame, pass| {
                Forwarder::prefetch(&flows, &snap, frame, pass, &podlb_io::mem::prefetch_ptr);
            },
            &mut |frame, meta| match fwd.forward(&snap, frame, meta, now_ms) {
                Verdict::Tx => {
                    tx6 |= watch6 && frame.get(12..14) == Some(&[0x86, 0xdd][..]);
                    true
                }
                Verdict::Punt => {
                    if shared.punt.push(frame.to_vec()).is_err() {
                        fwd.stats.dropped(DropReason::PuntQueueFull);
                    }
                    false
                }
                Verdict::TxOut => {
                    let (ok, failed) = match &tx {
                        Some(t) => t.inject_all(&mut fwd.out.frames()),
                        None => (0, fwd.out.len() as u64),
                    };
                    fwd.stats.event(Event::TxPackets, ok);
                    for _ in 0..failed {
                        fwd.stats.dropped(DropReason::TxError);
                    }
                    false
                }
                Verdict::Ignore | Verdict::Drop(_) => false,
            },
        );
        let st = match res {
            Ok(st) => st,
            Err(e) => {
                tracing::error!(error = %e, "device poll failed; backing off");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if st.ring_drops > 0 {
            stats.dropped_n(DropReason::RxRingFull, st.ring_drops);
        }
        if st.rx > 0 {
            stats.event(Event::RxPackets, st.rx);
            stats.event(Event::RxBytes, st.rx_bytes);
            stats.event(Event::TxPackets, st.tx);
            if st.tx > 0
                && shared.takeover_armed_us.load(Ordering::Relaxed) != 0
                && shared.takeover_done_us.load(Ordering::Relaxed) == 0
            {
                let t = shared.epoch.elapsed().as_micros() as u64 + 1;
                shared.takeover_done_us.store(t, Ordering::Relaxed);
            }
            if tx6 {
                let t = shared.epoch.elapsed().as_micros() as u64 + 1;
                shared.takeover6_done_us.store(t, Ordering::Relaxed);
            }
            if st.tx > 0
                && shared.update_armed_us.load(Ordering::Relaxed) != 0
                && shared.update_done_us.load(Ordering::Relaxed) == 0
                && snap.generation >= shared.update_gen.load(Ordering::Relaxed)
            {
                let t = shared.epoch.elapsed().as_micros() as u64 + 1;
                shared.update_done_us.store(t, Ordering::Relaxed);
            }
            for (n, r) in [
                (st.tx_errors, DropReason::TxError),
                (st.malformed, DropReason::EthTruncated),
            ] {
                for _ in 0..n {
                    stats.dropped(r);
                }
            }
            last_rx = now;
            continue;
        }
        if now.duration_since(last_rx) < busy_poll {
            std::hint::spin_loop();
            continue;
        }
        if let Err(e) = dev.wait(SLEEP) {
            tracing::error!(error = %e, "device wait failed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
