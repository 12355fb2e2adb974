//! podlb: a portable userspace L4 load balancer for container clusters.
//!
//! This crate is the top of the layer stack (docs/architecture.md §1): it
//! drives the sans-IO core (`podlb_core`) with devices and syscalls from
//! `podlb_io`, and holds everything that talks to the outside world.
//!
//! - [`config`]: the typed, validated TOML configuration.
//! - [`engine`]: attach, spawn the workers, the control loop driving the
//!   core's state machines.
//! - [`dataplane`]: the poll-mode worker loop (an `io` device through the
//!   core's forward pipeline).
//! - [`admin`]: the HTTP admin endpoint (metrics, status, flows), whose
//!   reports are typed in [`status`] and written with [`metrics`]; [`http`]:
//!   the one HTTP stack (hyper) every server and client here uses.
//! - [`health`]: the health-check probes; [`redundancy`]: the VRRP driver;
//!   [`sync`]: connection sync over UDP; [`route`]: reading the routes.
//! - [`probes`]: the heartbeats behind `/livez`; [`logfmt`]: JSON log lines
//!   (`PODLB_LOG_FORMAT=json`).
//! - [`k8s`]: kube-rs watchers, status and Events, the Lease election.
//! - [`cloud`]: the cloud address mover's IO (EC2, exec).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cloud;
pub mod config;
pub mod dataplane;
pub mod engine;
pub mod health;
pub mod http;
pub mod k8s;
pub mod logfmt;
pub mod metrics;
pub mod probes;
pub mod redundancy;
pub mod route;
pub mod status;
pub mod sync;
