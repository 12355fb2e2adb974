#![allow(unsafe_code)]
//! Sockets and devices: the only module that holds `unsafe` code. Every
//! unsafe block carries a `// SAFETY:` comment saying why it is sound.
//!
//! A [`Device`] receives frames in batches and lets the caller rewrite each
//! one in place and say whether to send it back out; an [`Injector`] sends
//! frames the control plane builds (ARP requests, gratuitous ARP).

use std::io;
use std::time::Duration;

use podlb_wire::PacketMeta;

pub mod mem;
pub mod packet;
pub mod sys;
pub mod tap;
pub mod xdp;

pub use packet::RxRing;

/// Which sockets a worker reads frames from (`[io] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// AF_PACKET rings (every frame of the interface, a copy).
    #[default]
    AfPacket,
    /// AF_XDP for frames to a VIP (an XDP program steers them into the
    /// socket), AF_PACKET for the rest; see docs/architecture.md §7.
    AfXdp,
}

/// How AF_PACKET transmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxMode {
    /// `sendmmsg` of the rewritten frames straight out of the RX ring.
    Sendmmsg,
    /// A PACKET_TX_RING: frames copied into a mapped ring, one `send` per batch.
    Ring,
}

/// Look-ahead passes of [`Device::poll_prefetched`].
pub const PREFETCH_PASSES: u8 = 2;

/// What one `poll` call saw and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub rx: u64,
    pub rx_bytes: u64,
    pub tx: u64,
    pub tx_errors: u64,
    /// Ring entries with inconsistent offsets.
    pub malformed: u64,
    /// Frames the kernel dropped because a ring was full or empty (AF_XDP
    /// `XDP_STATISTICS`; reported as deltas).
    pub ring_drops: u64,
}

/// A network device worked in poll mode by one worker.
pub trait Device: Send {
    /// Takes the frames that are ready (one batch), calls `f` on each with a
    /// mutable view, transmits those for which `f` returned true, and returns
    /// counts. Returns `rx == 0` at once when nothing is ready.
    fn poll<F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        f: &mut F,
    ) -> io::Result<BatchStats>;
    /// [`poll`](Self::poll), but first shows every frame of the batch to
    /// `pre` (read-only) in [`PREFETCH_PASSES`] passes, pass 0 over all of
    /// them, then pass 1, so the caller can start the memory loads the batch
    /// will need before it works on the first frame. Devices that cannot see
    /// a batch ahead (one `read` per frame) simply poll.
    fn poll_prefetched<P: FnMut(&[u8], u8), F: FnMut(&mut [u8], PacketMeta) -> bool>(
        &mut self,
        pre: &mut P,
        f: &mut F,
    ) -> io::Result<BatchStats> {
        let _ = pre;
        self.poll(f)
    }
    /// Frames the kernel dropped since the last call because the receive
    /// ring was full (the worker was too slow). 0 where the device has no
    /// such count.
    fn rx_ring_drops(&mut self) -> u64 {
        0
    }
    /// A separate sender on the same device for frames the worker builds
    /// itself (VXLAN encapsulation, `podlb_core::forward::Verdict::TxOut`):
    /// complete frames without a virtio-net header request.
    fn injector(&self) -> io::Result<Box<dyn Injector>>;
    /// Blocks until frames may be ready, or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
    /// The VIPs of a new snapshot, for a device that steers frames by
    /// destination address (AF_XDP). Called off the per-frame path, when the
    /// snapshot generation changes. Default: nothing to do.
    fn addresses(&mut self, _vips: &mut dyn Iterator<Item = std::net::Ipv4Addr>) {}
}

/// Sends control-plane frames out of the attached interface.
pub trait Injector: Send + Sync {
    fn inject(&self, frame: &[u8]) -> io::Result<()>;
    /// Sends every frame of `frames`; returns (sent, failed). The default
    /// sends one at a time; AF_PACKET batches them into `sendmmsg`.
    fn inject_all(&self, frames: &mut dyn Iterator<Item = &[u8]>) -> (u64, u64) {
        let (mut ok, mut failed) = (0, 0);
        for f in frames {
            match self.inject(f) {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        (ok, failed)
    }
}
