//! Backend selection, connection table and the forward pipeline. Sans-IO:
//! nothing here touches a socket, a thread or the clock.

pub mod flow;
pub mod forward;
pub mod hash;
pub mod maglev;
pub mod neighbor;
pub mod service;
pub mod stats;
pub mod sync;
#[cfg(test)]
pub(crate) mod testlab;

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
