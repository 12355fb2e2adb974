//! Network-namespace tests: real processes (podlb, nginx, wrk, iperf3, dnsmasq) in
//! namespaces the tests create and always remove. Every address is in
//! 198.18.0.0/15. Each test prints why and returns early (passes) when it
//! cannot run here: not root, or `ip netns` unavailable. The exception is
//! `deploy`, which checks the Kubernetes manifests and needs neither.
//!
//! Run all: `sudo ./netns-tests/run-all.sh` (or `cargo test --release --test
//! netns -- --test-threads=2` as root).

mod common;

mod cleanup;
mod cloud;
mod deploy;
mod failover;
mod floods;
mod forwarding;
mod harness;
mod health;
mod image;
mod ipv6;
mod keepalived;
mod kubernetes;
mod l3;
mod malformed;
mod ops;
mod privileges;
mod realkube;
mod reload;
mod udp;
mod vrrp6;
mod vxlan;
