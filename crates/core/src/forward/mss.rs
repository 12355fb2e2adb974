//! MSS clamping (RFC 9293 §3.7.1; RFC 6691): a SYN to a backend and a
//! SYN-ACK back to the client carry at most the service's `mss_clamp`, so
//! that neither side sends segments the path (e.g. a VXLAN tunnel) cannot
//! carry.

use super::family::Family;
use super::Eth;

/// Lowers the MSS option of the segment in `eth` to `clamp`, updating a
/// complete checksum incrementally (RFC 1624; `set_mss_update_checksum`
/// handles an odd offset). A `partial` checksum covers only the
/// pseudo-header and is left alone. True if it changed.
#[inline]
pub(super) fn clamp_mss<A: Family>(eth: &mut Eth, clamp: Option<u16>, partial: bool) -> bool {
    let Some(max) = clamp else { return false };
    let Some(mut t) = A::tcp_in(eth) else {
        return false;
    };
    match t.mss() {
        Some(m) if m > max => {}
        _ => return false,
    }
    if partial {
        t.set_mss(max);
    } else {
        t.set_mss_update_checksum(max);
    }
    true
}

#[cfg(test)]
mod tests {

    use crate::forward::*;
    use crate::model::{Mode, ServiceConfig};

    use crate::testlab::*;
    use etherparse::Ipv4Header;
    use podlb_wire::tcp;

    #[test]
    fn nat_service_with_mss_clamp() {
        let (mut f, _) = setup(Mode::Nat, 80);
        let svc = ServiceConfig {
            mss_clamp: Some(1300),
            ..service(Mode::Nat, 80, &BACKENDS)
        };
        let snap = build(1, &[svc]);
        let mut syn = syn_with_mss(40000, 1460);
        assert_eq!(
            f.forward(&snap, &mut syn, PacketMeta::default(), 1),
            Verdict::Tx
        );
        verify(&syn);
        let (_, rest) = Ipv4Header::from_slice(&syn[14..]).unwrap();
        assert_eq!(tcp::Packet::new_checked(rest).unwrap().mss(), Some(1300));
    }
}
