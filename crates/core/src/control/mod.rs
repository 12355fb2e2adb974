//! The control thread's policies, sans-IO, in the style of [`crate::vrrp`]:
//! each core takes its inputs as `handle_*(now, ...)`, says what to do
//! through `poll_action()` (FIFO) and, where it keeps timers,
//! `poll_timeout()`. None reads a clock, sends a frame, takes a lock or
//! starts a thread; `podlb::engine` reads the clock once per loop pass,
//! passes `now` in and carries the actions out.
//!
//! - [`resolver`]: which neighbors to ask for, re-ask and forget (RFC 826
//!   resolution of backends, gateways and peers; RFC 5227 §2.1.1 probes).
//! - [`announcer`]: gratuitous ARP for the VIPs (RFC 5227 §2.3), the
//!   periodic refresh while serving, unicast replies to clients after a
//!   takeover, and the defence of a claimed VIP (RFC 5227 §2.4).
//! - [`staging`]: a new snapshot waits (briefly) for its backends' ARP
//!   answers before it is published.
//! - [`sweeper`]: the incremental flow-table sweep (expiry, active flows per
//!   stats slot, connection-sync refresh, which neighbors to keep).
//! - [`holds`]: backends held out of new connections after refusing one
//!   (`flows.refused_hold_s`).
//! - [`probes`]: liveness from the threads' heartbeats, readiness from the
//!   engine's state, and when a changed config file is read again.
//!
//! Two clocks appear: the engine's wrapping millisecond clock (`u32`, the one
//! the neighbor and flow tables stamp) where the state lives in those shared
//! tables, and [`std::time::Instant`] for timers a core keeps itself.
#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod announcer;
pub mod holds;
pub mod probes;
pub mod resolver;
pub mod staging;
pub mod sweeper;

/// Flow timeouts for the tests: half-open flows go after 3 s.
#[cfg(test)]
const TEST_TIMEOUTS: crate::flow::Timeouts = crate::flow::Timeouts {
    syn_ms: 3_000,
    established_ms: 3_600_000,
    fin_ms: 60_000,
    close_ms: 10_000,
    udp_unanswered_ms: 30_000,
    udp_answered_ms: 120_000,
};

/// A flow from `client` to VIP 198.18.0.100:80 on `backend`, for the tests.
#[cfg(test)]
fn test_flow(client: u32, backend: u32, stat: u16, tcp: u8) -> crate::flow::Flow {
    crate::flow::Flow {
        key: crate::flow::FlowKey {
            client,
            vip: 0xc612_0064,
            client_port: 40_000,
            vport: 80,
            proto: 6,
        },
        backend,
        backend_port: 80,
        nat_port: 0,
        client_mac: podlb_wire::MacAddr([2, 0, 0, 0, 0, 1]),
        service: 0,
        stat,
        tcp,
        last_seen_ms: 0,
    }
}
