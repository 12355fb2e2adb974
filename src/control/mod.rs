//! Control plane: the engine's control loop (ARP resolution, gratuitous ARP,
//! flow expiry, reload), the admin endpoint, and the netns demo.

pub mod admin;
pub mod cloud;
pub mod conflict;
pub mod demo;
pub mod engine;
pub mod health;
pub mod k8s;
pub mod netns;
pub mod redundancy;
pub mod route;
pub mod sync;
