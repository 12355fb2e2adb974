//! podlb's test lab, for development only (it is not part of the product
//! and not in the image): network-namespace topologies ([`netns`]), the
//! processes and probes that run in them, the fake Kubernetes API server
//! ([`fakeapi`]) for the faults a real one cannot be made to produce, and
//! `podlb demo` ([`demo`]). The netns tests, the benches and the demo all
//! build their labs with it.
#![forbid(unsafe_code)]

pub mod demo;
pub mod fakeapi;
pub mod imds;
pub mod kube;
pub mod netns;
pub mod topo;

use std::path::PathBuf;

/// The `podlb` binary the lab runs: `$PODLB_BIN` if set, else the one
/// beside the running executable (`target/<profile>/podlb` next to
/// `podlb-lab`; one level up from a test binary in `deps/`).
pub fn podlb_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PODLB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let beside = dir.join("podlb");
    if beside.is_file() || dir.file_name().is_none_or(|n| n != "deps") {
        return beside;
    }
    dir.parent().map_or(beside, |p| p.join("podlb"))
}
