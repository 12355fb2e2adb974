//! Kubernetes control plane, the IO half (issue 4; architecture.md §11):
//! kube-rs watchers keep stores of the objects and call the sans-IO
//! [`reconcile`] (in `podlb_core::k8s`) with their full contents whenever
//! something changes; the result is the set of services to hand to the
//! control loop, the status writes and Events to send, and the VIP
//! allocations to feed into the next call.
//!
//! - [`client`]: kube-rs watchers, the reconcile loop, status writes and
//!   Events, on the `podlb-k8s` thread.
//! - [`lease`]: the Lease election, for clusters without VRRP.

pub mod client;
pub mod lease;

pub use podlb_core::k8s::*;
