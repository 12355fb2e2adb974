//! Kubernetes control plane (issue 4; architecture.md §11).
//!
//! The core is sans-IO: [`reconcile`], [`peers_from_slice`] and
//! [`lease::decide`] are pure functions of Kubernetes objects — given as
//! `serde_json::Value` in the shape the API server returns them — and of the
//! previous state, with no sockets, threads or clock. The IO lives in
//! [`client`] and [`lease`]: kube-rs watchers keep stores of the objects and
//! call [`reconcile`] with their full contents whenever something changes;
//! the result is the set of [`ServiceConfig`](crate::config::ServiceConfig)s
//! to hand to the control loop, the status writes and Events to send, and
//! the VIP allocations to feed into the next call.
//!
//! - [`settings`]: the `[kubernetes]` table: load balancer class, VIP pools,
//!   default mode.
//! - [`reconcile`](mod@reconcile): Services of type LoadBalancer and their
//!   EndpointSlices → data-plane services, status updates, problems.
//! - [`client`]: the IO side: kube-rs watchers, the reconcile loop, status
//!   writes and Events, on the `podlb-k8s` thread.
//! - [`lease`]: the Lease election, for clusters without VRRP.
//! - [`peers`]: VRRP unicast peers from the EndpointSlices of the headless
//!   peers Service.

pub mod client;
pub mod lease;
pub mod nodes;
mod objects;
pub mod peers;
pub mod reconcile;
pub mod settings;

pub use peers::{peers_from_slice, DEFAULT_PEERS_SERVICE};
pub use reconcile::{
    config_name, reconcile, Allocations, Problem, ProblemReason, Reconciled, StatusUpdate,
    ANNOTATION_MODE, ANNOTATION_VIP, SERVICE_NAME_LABEL,
};
pub use settings::{parse_vip_pools, KubeSettings, VipPool, DEFAULT_LOAD_BALANCER_CLASS};
