//! Kubernetes, the sans-IO half (architecture.md §11): [`reconcile`],
//! [`peers_from_slice`] and [`lease::decide`] are pure functions of
//! Kubernetes objects — given as `serde_json::Value` in the shape the API
//! server returns them — and of the previous state, with no sockets,
//! threads or clock. The IO (kube-rs watchers, status writes, Events, the
//! Lease loop) is `podlb::k8s`.
//!
//! - [`settings`]: the `[kubernetes]` table: load balancer class, VIP pools,
//!   default mode.
//! - [`reconcile`](mod@reconcile): Services of type LoadBalancer and their
//!   EndpointSlices → data-plane services, status updates, problems.
//! - [`lease`]: the Lease election's decision.
//! - [`peers`]: VRRP unicast peers from the EndpointSlices of the headless
//!   peers Service.
//! - [`nodes`]: VXLAN tunnel endpoints from Node annotations.

pub mod lease;
pub mod nodes;
mod objects;
pub mod peers;
pub mod pools;
pub mod reconcile;
pub mod settings;

pub use peers::{peers_from_slice, DEFAULT_PEERS_SERVICE};
pub use pools::Family;
pub use reconcile::{
    config_name, config_name_for, reconcile, Allocations, Problem, ProblemReason, Reconciled,
    StatusUpdate, ANNOTATION_MODE, ANNOTATION_VIP, SERVICE_NAME_LABEL,
};
pub use settings::{parse_vip_pools, KubeSettings, VipPool, DEFAULT_LOAD_BALANCER_CLASS};
