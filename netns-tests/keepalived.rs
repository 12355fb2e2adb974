//! Interop with keepalived 2.2 (VRRPv3, VRID 51), multicast and unicast:
//! podlb in lb1, keepalived in lb2, and at each step a check of which MACs
//! answer ARP for the VIP from the client. podlb answers with the virtual
//! MAC 00:00:5e:00:01:33; keepalived (no use_vmac) lets lb2's kernel answer
//! with lb2's eth0 MAC.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use podlb_lab::demo::{virtual_mac, Podlb, LB, LB2, VIP, VRID};
use podlb_lab::netns::{self, Proc, Topology};

use crate::common::*;
use crate::failover::{lab, start_lb, vrrp_config, wait_state};

fn have_keepalived() -> bool {
    std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok()
}

/// Writes lb2's keepalived.conf and starts keepalived in lb2.
fn start_keepalived(topo: &Topology, priority: u8, unicast: bool, run: u32) -> Proc {
    let dir = topo.dir().join(format!("keepalived-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let unicast_lines = if unicast {
        format!("    unicast_src_ip {LB2}\n    unicast_peer {{\n        {LB}\n    }}\n")
    } else {
        String::new()
    };
    let conf = format!(
        "global_defs {{\n    router_id podlb-netns-lb2\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n}}\n\
         vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {VRID}\n    \
         priority {priority}\n    advert_int 0.1\n{unicast_lines}    virtual_ipaddress {{\n        {VIP}/32\n    }}\n}}\n"
    );
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let d = dir.display();
    topo.spawn(
        topo.ns("lb2"),
        &format!("keepalived-{run}"),
        &[
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-G",
            "-P",
            "-f",
            &path.display().to_string(),
            "-p",
            &format!("{d}/keepalived.pid"),
            "-r",
            &format!("{d}/vrrp.pid"),
        ],
    )
    .unwrap()
}

/// Stops keepalived with SIGTERM (it sends priority 0 and removes the VIP).
fn stop_keepalived(p: &Proc) {
    let st = p.stop(Duration::from_secs(5));
    assert!(
        st.is_some(),
        "keepalived did not exit on SIGTERM\n{}",
        p.log_tail(3000)
    );
}

/// The MACs that answer ARP for the VIP, asked from the client.
fn arp_who(topo: &Topology) -> BTreeSet<String> {
    let script = test_file("arpwho.py").display().to_string();
    let out = netns::exec_timeout(
        topo.ns("client"),
        &["python3", &script, "eth0", &VIP.to_string(), "0.5"],
        Duration::from_secs(10),
    )
    .expect("arpwho.py ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "arpwho.py: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["macs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

/// Waits (up to 5 s) until exactly `want` answers ARP for the VIP.
fn expect_arp(topo: &Topology, step: &str, want: &str, t0: Instant) {
    let start = Instant::now();
    loop {
        let got = arp_who(topo);
        if got.len() == 1 && got.contains(want) {
            eprintln!(
                "  {step}: only {want} answers ARP (checked {:.0} ms after the action, including the waits and the 0.5 s ARP listen)",
                t0.elapsed().as_secs_f64() * 1e3
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{step}: want only {want} answering ARP for {VIP}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_vip(topo: &Topology) -> bool {
    netns::exec_ok(topo.ns("lb2"), &["ip", "-4", "addr", "show", "dev", "eth0"])
        .map(|s| s.contains(&format!("{VIP}/")))
        .unwrap_or(false)
}

fn wait_vip_on_lb2(topo: &Topology, want: bool, step: &str) {
    let t0 = Instant::now();
    while has_vip(topo) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{step}: keepalived {} the VIP on lb2's eth0",
            if want { "never added" } else { "kept" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interop(unicast: bool) {
    let lab = lab(false);
    let topo = &lab.topo;
    let vmac = virtual_mac(VRID);
    let lb2_mac = netns::mac_of(topo.ns("lb2"), "eth0").unwrap();
    let peer = unicast.then_some(LB2);
    let kind = if unicast { "unicast" } else { "multicast" };
    eprintln!("keepalived interop ({kind}): vmac {vmac}, lb2 eth0 {lb2_mac}");
    let mut logs = Vec::new();

    // Part 1: podlb 200 (master), keepalived 100 (backup).
    let lb1 = start_lb(topo, "lb1", &vrrp_config(200, 100, peer, false));
    logs.push(lb1.proc().clone());
    wait_state(&lb1, "master", Duration::from_secs(10));
    let ka = start_keepalived(topo, 100, unicast, 1);
    logs.push(ka.clone());
    let _log = LogOnPanic(logs.clone());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(lb1.vrrp_state().unwrap().as_deref(), Some("master"));
    let t = Instant::now();
    expect_arp(topo, "(a) podlb 200 master, keepalived 100", &vmac, t);
    assert!(!has_vip(topo), "(a) keepalived (backup) holds the VIP");

    // (b) kill podlb: keepalived takes over.
    lb1.proc().kill();
    let t = Instant::now();
    wait_vip_on_lb2(topo, true, "(b)");
    expect_arp(topo, "(b) podlb SIGKILLed, keepalived master", &lb2_mac, t);

    // (c) podlb again: it preempts.
    let t = Instant::now();
    let lb1 = start_lb(topo, "lb1", &vrrp_config(200, 100, peer, false));
    let mut logs2 = logs.clone();
    logs2.push(lb1.proc().clone());
    let _log2 = LogOnPanic(logs2);
    wait_state(&lb1, "master", Duration::from_secs(10));
    wait_vip_on_lb2(topo, false, "(c)");
    expect_arp(topo, "(c) podlb restarted, preempted", &vmac, t);
    stop_podlb(&lb1);
    stop_keepalived(&ka);

    // Part 2: keepalived 200 (master), podlb 100 (backup).
    let ka = start_keepalived(topo, 200, unicast, 2);
    wait_vip_on_lb2(topo, true, "(d)");
    let lb1 = Podlb::start_as(
        topo,
        topo.ns("lb1"),
        podlb_exe(),
        &vrrp_config(100, 100, peer, false),
        "lb1-backup",
    )
    .unwrap();
    let _log3 = LogOnPanic(vec![ka.clone(), lb1.proc().clone()]);
    let t = Instant::now();
    wait_state(&lb1, "backup", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        lb1.vrrp_state().unwrap().as_deref(),
        Some("backup"),
        "(d) podlb 100 should stay backup under keepalived 200"
    );
    expect_arp(
        topo,
        "(d) keepalived 200 master, podlb 100 backup",
        &lb2_mac,
        t,
    );

    // (e) keepalived stops: podlb takes over.
    let t = Instant::now();
    stop_keepalived(&ka);
    wait_state(&lb1, "master", Duration::from_secs(5));
    expect_arp(topo, "(e) keepalived stopped, podlb master", &vmac, t);

    // (f) keepalived again: it preempts, podlb returns to backup.
    let t = Instant::now();
    let ka = start_keepalived(topo, 200, unicast, 3);
    let _log4 = LogOnPanic(vec![ka.clone(), lb1.proc().clone()]);
    wait_state(&lb1, "backup", Duration::from_secs(10));
    wait_vip_on_lb2(topo, true, "(f)");
    expect_arp(topo, "(f) keepalived restarted, preempted", &lb2_mac, t);
    stop_podlb(&lb1);
    stop_keepalived(&ka);
}

#[test]
fn keepalived_interop_multicast() {
    require_netns!("keepalived_interop_multicast");
    if !have_keepalived() {
        eprintln!("SKIP keepalived_interop_multicast: keepalived not installed");
        return;
    }
    interop(false);
}

#[test]
fn keepalived_interop_unicast() {
    require_netns!("keepalived_interop_unicast");
    if !have_keepalived() {
        eprintln!("SKIP keepalived_interop_unicast: keepalived not installed");
        return;
    }
    interop(true);
}
