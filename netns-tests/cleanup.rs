//! Everything a topology creates is gone after it drops, also on panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use podlb_lab::netns::{self, Topology};

use crate::common::*;

fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is gone for our purpose (nothing runs); it is not ours to reap.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

/// Builds a topology with a tracked child, an untracked daemon left behind
/// by a command, and an HTTP server thread; returns the names and pids.
fn populate(topo: &mut Topology) -> (Vec<String>, Vec<u32>) {
    let a = topo.add_host("a", "198.18.0.1".parse().unwrap()).unwrap();
    topo.add_host("b", "198.18.0.3".parse().unwrap()).unwrap();
    let sleeper = topo.spawn(&a, "sleep", &["sleep", "300"]).unwrap();
    // A process the topology does not track: only the per-namespace sweep finds it.
    netns::exec_ok(
        &a,
        &["sh", "-c", "sleep 301 >/dev/null 2>&1 </dev/null & echo $!"],
    )
    .unwrap();
    let pids = netns::ns_pids(&a);
    assert!(pids.contains(&sleeper.pid()), "{pids:?}");
    assert!(pids.len() >= 2, "daemon not found: {pids:?}");
    (topo.namespaces().to_vec(), pids)
}

fn assert_gone(names: &[String], pids: &[u32]) {
    let left = netns::list_netns();
    for n in names {
        assert!(!left.contains(n), "namespace {n} still exists");
    }
    for p in pids {
        assert!(pid_gone(*p), "process {p} still runs");
    }
}

#[test]
fn cleanup_after_drop() {
    require_netns!("cleanup_after_drop");
    let mut topo = Topology::new().unwrap();
    let (names, pids) = populate(&mut topo);
    assert_eq!(names.len(), 3);
    let left = netns::list_netns();
    assert!(names.iter().all(|n| left.contains(n)));
    let _srv = netns::serve_http(&names[1], sa("198.18.0.1".parse().unwrap(), 80), "x").unwrap();
    drop(_srv);
    drop(topo);
    assert_gone(&names, &pids);
}

#[test]
fn cleanup_after_panic() {
    require_netns!("cleanup_after_panic");
    let seen: Mutex<Option<(Vec<String>, Vec<u32>)>> = Mutex::new(None);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut topo = Topology::new().unwrap();
        let found = populate(&mut topo);
        *seen.lock().unwrap() = Some(found);
        panic!("deliberate panic with a live topology");
    }));
    assert!(r.is_err());
    let (names, pids) = seen.lock().unwrap().take().expect("populated");
    assert_gone(&names, &pids);
}

/// Namespaces named after a dead pid (a killed run) are swept.
#[test]
fn cleanup_sweeps_stale_namespaces() {
    require_netns!("cleanup_sweeps_stale_namespaces");
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let name = format!("plb-{dead}-0-stale");
    let st = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(st.success());
    // Run a process in it as a killed run would have left it.
    netns::exec_ok(
        &name,
        &["sh", "-c", "sleep 302 >/dev/null 2>&1 </dev/null &"],
    )
    .unwrap();
    let removed = netns::sweep_stale();
    let left = netns::list_netns();
    if left.contains(&name) {
        // Never leave it behind, even when the assertion below fails.
        netns::kill_all_in(&name, Duration::from_secs(2));
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
    assert!(removed.contains(&name), "not swept: {removed:?}");
    assert!(!left.contains(&name));
}
