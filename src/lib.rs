//! podlb: a portable userspace L4 load balancer for container clusters.
//!
//! Layers (see docs/architecture.md):
//! - [`wire`]: zero-copy packet views and emitters; no allocation, no IO.
//! - [`balance`]: Maglev, the lock-free connection table, NAT ports and the
//!   forward pipeline (`frame in -> Verdict`). Sans-IO: time is an argument.
//! - [`io`]: sockets and devices, with nearly all `unsafe`: AF_PACKET rings, TAP.
//! - [`mem`]: cache prefetch and huge-page-advised tables (two small `unsafe` blocks).
//! - [`dataplane`]: poll-mode workers driving an `io` device through `balance`.
//! - [`control`]: config loading, ARP resolution, flow expiry, admin HTTP, demo.

pub mod balance;
pub mod config;
pub mod control;
pub mod dataplane;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[allow(unsafe_code)]
pub mod io;
#[allow(unsafe_code)]
pub mod mem;
pub mod vrrp;
pub mod wire;
