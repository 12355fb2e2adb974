//! podlb's sans-IO core: everything that decides, and nothing that touches a
//! socket, a thread, tokio or the clock (time comes in as an argument), so
//! it is unit-tested, fuzzed and benchmarked exactly as it runs
//! (docs/architecture.md §1).
//!
//! - [`model`]: services, backends, modes, health-check specs, flow limits.
//! - Data plane: [`hash`], [`maglev`], [`flow`] (the lock-free connection
//!   table), [`neighbor`] (the ARP cache), [`service`] (the published
//!   snapshot), [`forward`] (frame in → verdict), [`stats`], [`sync`]
//!   (connection-sync format and apply).
//! - Control-plane state machines: [`vrrp`] (RFC 9568), [`conflict`]
//!   (RFC 5227 VIP conflicts), [`health`] (rise/fall), [`route`] (next
//!   hops), [`k8s`] (reconcile, peers, Lease decisions), [`cloud`] (the
//!   address mover), [`control`] (the engine's control-loop policies: ARP
//!   resolution, announcements, snapshot staging, the flow sweep, refusal
//!   holds).
#![forbid(unsafe_code)]
// A narrowing or sign-dropping `as` must say why it is right: `try_from`
// (saturated or refused) where a value may not fit, `bits::Low` where the
// truncation is the point (packed words, hash bits).
#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod bits;
pub mod cloud;
pub mod conflict;
pub mod control;
pub mod family;
pub mod flow;
pub mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hash;
pub mod health;
pub mod k8s;
pub mod maglev;
pub mod model;
pub mod neighbor;
pub mod route;
pub mod service;
pub mod stats;
pub mod sync;
#[cfg(any(test, feature = "testlab"))]
pub mod testlab;
pub mod vrrp;

/// Milliseconds from `then` to `now` on the engine's wrapping u32 clock.
/// A `then` slightly after `now` (a worker stamped a flow after the control
/// thread read the clock) counts as 0, not as a 49-day-old wrap-around.
/// Valid for spans below ~24.8 days, which bounds every timeout.
#[inline]
pub fn elapsed_ms(now: u32, then: u32) -> u32 {
    let d = now.wrapping_sub(then);
    if d > u32::MAX / 2 {
        0
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn elapsed_handles_wrap_and_future_stamps() {
        use super::elapsed_ms;
        assert_eq!(elapsed_ms(10, 3), 7);
        assert_eq!(elapsed_ms(3, 10), 0, "stamped after the reader's clock");
        assert_eq!(elapsed_ms(5, u32::MAX - 4), 10, "across the wrap");
    }
}
