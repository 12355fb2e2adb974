//! What a device knows about a frame besides its bytes: the offload state
//! that travels in a virtio-net header (VIRTIO 1.2 §5.1.6) or in AF_PACKET's
//! auxiliary data. The IO layer fills it in; the forward pipeline reads it.
//! It lives here, below both, so that neither depends on the other.

/// What the IO layer knows about a frame besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// The transport checksum field holds only the pseudo-header sum
    /// (CHECKSUM_PARTIAL; virtio-net `NEEDS_CSUM`): the device or the kernel
    /// completes it later.
    pub csum_partial: bool,
    /// The frame will go out with its partial-checksum request intact (a
    /// virtio-net header). When false, a partial checksum is completed in
    /// software before the frame is sent.
    pub tx_keeps_partial: bool,
    /// The device stripped an 802.1Q tag into metadata (AF_PACKET).
    pub vlan_stripped: bool,
    /// The device cut the frame short (larger than its ring slot).
    pub truncated: bool,
    /// A GSO super-frame to be cut into TCP segments of this many payload
    /// bytes (virtio-net `gso_size`); 0 for an ordinary frame.
    pub gso_size: u16,
}
