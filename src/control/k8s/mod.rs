//! Kubernetes control plane, sans-IO core (issue 4).
//!
//! Everything here is a pure function of Kubernetes objects — given as
//! `serde_json::Value` in the shape the API server returns them — and of the
//! previous state. No sockets, threads or clock: the watchers (reflector
//! stores) live elsewhere and call [`reconcile`] with the full current
//! contents of their stores whenever something changes; the result is the
//! set of [`ServiceConfig`](crate::config::ServiceConfig)s to publish to the
//! data plane, the status writes and Events to send, and the VIP allocations
//! to feed into the next call.
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
