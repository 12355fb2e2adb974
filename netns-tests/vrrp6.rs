//! The IPv6 VRRP instance (issue 17 part 3; RFC 9568 §5.1.2, §5.2.9, §7):
//! with IPv6 VIPs podlb runs a VRRP instance for them beside the IPv4 one,
//! advertising from its link-local address to ff02::12 from the IPv6
//! virtual MAC 00:00:5e:00:02:33 (VRID 51).
//!
//! - `ipv6_vrrp_failover`: two podlb instances (lb1 priority 200, lb2 100,
//!   adverts every 100 ms), an IPv4 VIP (nat) and the IPv6 VIP 2001:2::100
//!   (dsr: IPv6 flows are not synced, and survive a takeover by mid-stream
//!   pickup, which keeps a flow whole in dsr mode only). lb1's link is cut;
//!   lb2's IPv6 instance takes over and answers NDP for the VIP, and the
//!   connections opened through lb1 (keep-alive HTTP, an iperf3 stream)
//!   carry on. Times are printed, not asserted (as in failover.rs).
//! - `keepalived_interop_ipv6`: keepalived 2.2's IPv6 instance (VRRPv3,
//!   the same address list: the virtual router's link-local address, then
//!   the VIP) against podlb's, each way round; at each step the client's
//!   neighbor entry for the VIP (after a fresh resolution) says who holds
//!   it: the IPv6 virtual MAC for podlb, lb2's eth0 MAC for keepalived (no
//!   `use_vmac`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use podlb_lab::demo::{
    metric_sum, metric_value, virtual_mac_v6, ConfigSpec, Podlb, ServiceSpec, VRID,
};
use podlb_lab::netns::{self, HttpConn, Prober, Topology};

use crate::common::*;
use crate::failover::{
    broken_kept, lab, open_kept_to, start_lb, vrrp_config, wait_http_to, wait_state, Lab,
};
use crate::ipv6::{add_v6, backend6, neighbor_mac, vip6, web6, CLIENT6, VIP6};

/// The virtual router's link-local address both sides list first (RFC
/// 9568 §5.2.9): podlb's default, the EUI-64 address of the IPv6 virtual
/// MAC.
fn virtual_link_local() -> Ipv6Addr {
    podlb_wire::vrrp::virtual_link_local(VRID)
}

/// The two-instance lab with IPv6 on the client and the backends, and the
/// IPv6 VIP on each backend's lo (dsr).
fn lab6(with_iperf: bool) -> Lab {
    let l = lab(with_iperf);
    add_v6(l.topo.ns("client"), CLIENT6);
    for i in 0..3 {
        let ns = l.topo.ns(&format!("be{}", i + 1));
        add_v6(ns, backend6(i));
        let v = format!("{VIP6}/128");
        netns::exec_ok(ns, &["ip", "-6", "addr", "add", &v, "dev", "lo"]).unwrap();
    }
    l
}

/// The failover lab's config (the IPv4 service "web", nat) with the IPv6
/// service "web6" (dsr) and, with `iperf`, "iperf6" ([VIP6]:5201 → be1).
fn config6(priority: u8, advert_ms: u64, iperf: bool) -> ConfigSpec {
    let mut c = vrrp_config(priority, advert_ms, None, false);
    c.services.push(web6("dsr"));
    if iperf {
        c.services.push(ServiceSpec {
            name: "iperf6".into(),
            vip: IpAddr::V6(VIP6),
            port: 5201,
            mode: "dsr".into(),
            backends: vec![SocketAddr::new(IpAddr::V6(backend6(0)), 5201)],
            health_check: None,
        });
    }
    c
}

/// Polls /status until the IPv6 instance is in `want`; returns how long
/// it took.
fn wait_state6(p: &Podlb, want: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let st = p.vrrp6_state().ok().flatten();
        if st.as_deref() == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "{}: the IPv6 instance is not {want} within {timeout:?} (state {st:?})\n{}",
            p.proc().label(),
            p.log_tail(3000)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The MAC the client resolves the IPv6 VIP to now: its neighbor entry is
/// deleted, a connection attempt makes it solicit again, and the entry's
/// link-layer address is read (`None` while unresolved).
fn resolve_vip6(client: &str) -> Option<String> {
    let v = VIP6.to_string();
    let _ = netns::exec(client, &["ip", "-6", "neigh", "del", &v, "dev", "eth0"]);
    // Any answer will do (keepalived's host has nothing on port 80): the
    // attempt is there to make the client solicit.
    let _ = netns::in_netns(client, || {
        HttpConn::connect(vip6(80), Duration::from_millis(500)).map(|_| ())
    });
    neighbor_mac(client, VIP6)
}

/// Waits (up to 5 s) until the client resolves the IPv6 VIP to `want`.
fn expect_ndp(client: &str, step: &str, want: &str, t0: Instant) {
    let start = Instant::now();
    loop {
        let got = resolve_vip6(client);
        if got.as_deref() == Some(want) {
            eprintln!(
                "  {step}: the client resolves {VIP6} to {want} ({:.0} ms after the action, including the waits)",
                t0.elapsed().as_secs_f64() * 1e3
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{step}: want {VIP6} at {want}, the client resolves it to {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// RFC 9568 §6.1: Master_Down_Interval = 3 × Master_Adver_Interval +
/// Skew_Time, Skew_Time = (256 − Priority) × Master_Adver_Interval / 256.
fn master_down_interval(priority: u8, advert: Duration) -> Duration {
    advert * 3 + advert * (256 - u32::from(priority)) / 256
}

#[test]
fn ipv6_vrrp_failover() {
    require_netns!("ipv6_vrrp_failover");
    let budget = Budget::start();
    let lab = lab6(true);
    let topo = &lab.topo;
    let lb1 = start_lb(topo, "lb1", &config6(200, 100, true));
    wait_state(&lb1, "master", Duration::from_secs(10));
    wait_state6(&lb1, "master", Duration::from_secs(10));
    let lb2 = start_lb(topo, "lb2", &config6(100, 100, true));
    wait_state(&lb2, "backup", Duration::from_secs(10));
    wait_state6(&lb2, "backup", Duration::from_secs(10));
    let mut logs = lab.procs.clone();
    logs.extend([lb1.proc().clone(), lb2.proc().clone()]);
    let _log = LogOnPanic(logs);
    let client = topo.ns("client").to_string();
    wait_http_to(&client, vip6(80), budget.left(Duration::from_secs(5)));

    // Two instances, two virtual MACs: the IPv6 VIP resolves to the IPv6
    // one, which lb1 reports serving it with.
    let vmac6 = virtual_mac_v6(VRID);
    let s1 = lb1.status().unwrap();
    assert_eq!(s1.interface.mac_ipv6.as_deref(), Some(vmac6.as_str()));
    assert_ne!(s1.interface.mac, vmac6);
    assert_eq!(neighbor_mac(&client, VIP6).as_deref(), Some(vmac6.as_str()));
    let v6 = s1.vrrp_ipv6.expect("lb1 runs an IPv6 instance");
    assert!(
        matches!(v6.master, Some(IpAddr::V6(m)) if m.is_unicast_link_local()),
        "the IPv6 master is named by its link-local address: {:?}",
        v6.master
    );
    // lb2 is backup from its start; it names the master once it has heard
    // an advert (within one interval).
    let t0 = Instant::now();
    let heard = loop {
        let s2 = lb2.status().unwrap().vrrp_ipv6.unwrap();
        if s2.adverts_received > 0 || t0.elapsed() > Duration::from_secs(5) {
            break s2;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(heard.adverts_received > 0, "lb2 heard no IPv6 advert");
    assert_eq!(heard.master, v6.master);
    // Both joined ff02::12 (MLD-snooping switches then pass the adverts).
    for role in ["lb1", "lb2"] {
        let groups =
            netns::exec_ok(topo.ns(role), &["ip", "-6", "maddr", "show", "dev", "eth0"]).unwrap();
        assert!(groups.contains("ff02::12"), "{role}: {groups}");
    }

    // Connections through lb1: keep-alive HTTP, and an iperf3 stream.
    const N: usize = 20;
    let mut conns = open_kept_to(&client, vip6(80), N);
    let ip = VIP6.to_string();
    let iperf = topo
        .spawn(
            &client,
            "iperf3-client6",
            &["iperf3", "-6", "-c", &ip, "-p", "5201", "-t", "6", "-J"],
        )
        .unwrap();
    let iperf_started = Instant::now();
    let probe = Prober::start(
        &client,
        vip6(80),
        Duration::from_millis(10),
        Duration::from_millis(250),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let ndp0 = metric_sum(&lb2.metrics().unwrap(), "podlb_ndp_adverts_total");

    let cut_at = iperf_started.elapsed().as_secs_f64();
    topo.set_port_up("lb1", false).unwrap();
    let t_cut = Instant::now();
    let master6 = wait_state6(&lb2, "master", Duration::from_secs(5));
    let master4 = wait_state(&lb2, "master", Duration::from_secs(5));
    let back =
        t_cut.elapsed() + wait_http_to(&client, vip6(80), budget.left(Duration::from_secs(5)));

    // Every connection answers, from its backend.
    let failed = broken_kept(&mut conns);
    let st = iperf
        .wait_timeout(budget.left(Duration::from_secs(20)))
        .expect("iperf3 finished");
    let report = probe.finish().unwrap();
    // lb2 answers NDP for the VIP now: a fresh resolution gets the same
    // virtual MAC, from lb2 (lb1 is cut off).
    let t = Instant::now();
    expect_ndp(&client, "after the cut", &vmac6, t);
    let m = lb2.metrics().unwrap();
    let ndp = metric_sum(&m, "podlb_ndp_adverts_total") - ndp0;
    let labels6 = [("family", "ipv6")];
    let takeovers6 = metric_value(&m, "podlb_takeover_seconds_count", &labels6).unwrap_or(0.0);
    let takeover6_s = metric_value(&m, "podlb_takeover_seconds_sum", &labels6).unwrap_or(0.0);
    let takeovers4 =
        metric_value(&m, "podlb_takeover_seconds_count", &[("family", "ipv4")]).unwrap_or(0.0);

    let text = std::fs::read_to_string(iperf.log_path()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}): {text}"));
    let intervals: Vec<(f64, f64)> = v["intervals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|iv| {
            (
                iv["sum"]["start"].as_f64().unwrap_or(0.0),
                iv["sum"]["bytes"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let mdi = master_down_interval(100, Duration::from_millis(100));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "ipv6 vrrp failover (advert 100 ms, lb2 Master_Down_Interval {:.1} ms, +20 ms = {:.1} ms): \
         lb2 IPv6 instance master {:.0} ms after the cut (/status polled every 5 ms; IPv4 instance {:.0} ms); \
         podlb_takeover_seconds{{family=ipv6}} {:.3} ms (count {takeovers6}; ipv4 count {takeovers4}); \
         HTTP through [{VIP6}] again {:.0} ms after the cut; probe gap {:.0} ms (ok {} failed {}); \
         lb2 sent {ndp} Neighbor Advertisements; {}/{N} keep-alive connections answered after the cut; \
         iperf3 cut {cut_at:.2} s in, exit {st:?}, intervals (start s, MB): {:?}",
        ms(mdi),
        ms(mdi) + 20.0,
        ms(master6),
        ms(master4),
        takeover6_s * 1e3,
        ms(back),
        ms(report.longest_gap),
        report.ok,
        report.failed,
        N - failed.len(),
        intervals
            .iter()
            .map(|(s, b)| (format!("{s:.0}"), format!("{:.1}", b / 1e6)))
            .collect::<Vec<_>>()
    );
    assert_eq!(lb2.vrrp6_state().unwrap().as_deref(), Some("master"));
    assert!(takeovers6 >= 1.0, "lb2 recorded no IPv6 takeover");
    assert!(ndp >= 1.0, "lb2 answered no Neighbor Solicitation");
    assert!(
        report.longest_gap < Duration::from_secs(5),
        "outage of {:?}",
        report.longest_gap
    );
    assert!(
        failed.is_empty(),
        "IPv6 connections broken by the failover: {failed:#?}"
    );
    assert!(
        v.get("error").is_none(),
        "iperf3 reported an error: {}",
        v["error"]
    );
    let after: Vec<&(f64, f64)> = intervals
        .iter()
        .filter(|(s, _)| *s >= cut_at + 1.0)
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|(_, b)| *b > 0.0),
        "iperf3 stalled after the cut: {intervals:?}"
    );
    for (c, body) in conns.iter_mut() {
        let r = c.get("/", true).expect("last request");
        assert_eq!(r.body.trim(), body);
    }
    let _ = lb1;
    stop_podlb(&lb2);
}

// ---------------------------------------------------------------------------
// keepalived

fn have_keepalived() -> bool {
    std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok()
}

/// Writes lb2's keepalived.conf (one IPv6 instance, VRID 51, adverts every
/// 100 ms, the same address list as podlb's) and starts keepalived in lb2.
fn start_keepalived6(topo: &Topology, priority: u8, run: u32) -> netns::Proc {
    let dir = topo.dir().join(format!("keepalived6-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let ll = virtual_link_local();
    let conf = format!(
        "global_defs {{\n    router_id podlb-netns-lb2\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n}}\n\
         vrrp_instance VI_6 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {VRID}\n    \
         priority {priority}\n    advert_int 0.1\n    native_ipv6\n    virtual_ipaddress {{\n        \
         {ll}/64\n        {VIP6}/64\n    }}\n}}\n"
    );
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let d = dir.display();
    topo.spawn(
        topo.ns("lb2"),
        &format!("keepalived6-{run}"),
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
fn stop_keepalived(p: &netns::Proc) {
    let st = p.stop(Duration::from_secs(5));
    assert!(
        st.is_some(),
        "keepalived did not exit on SIGTERM\n{}",
        p.log_tail(3000)
    );
}

/// Whether keepalived put the IPv6 VIP on lb2's eth0.
fn lb2_has_vip6(topo: &Topology) -> bool {
    netns::exec_ok(topo.ns("lb2"), &["ip", "-6", "addr", "show", "dev", "eth0"])
        .map(|s| s.contains(&format!("{VIP6}/")))
        .unwrap_or(false)
}

fn wait_vip6_on_lb2(topo: &Topology, want: bool, step: &str) {
    let t0 = Instant::now();
    while lb2_has_vip6(topo) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{step}: keepalived {} the IPv6 VIP on lb2's eth0",
            if want { "never added" } else { "kept" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// keepalived's IPv6 instance and podlb's, each way round. podlb runs an
/// IPv4 instance too, alone on the link (keepalived has none): it stays
/// master throughout, whatever the IPv6 one does.
#[test]
fn keepalived_interop_ipv6() {
    require_netns!("keepalived_interop_ipv6");
    if !have_keepalived() {
        eprintln!("SKIP keepalived_interop_ipv6: keepalived not installed");
        return;
    }
    let lab = lab6(false);
    let topo = &lab.topo;
    let client = topo.ns("client").to_string();
    let vmac6 = virtual_mac_v6(VRID);
    let lb2_mac = netns::mac_of(topo.ns("lb2"), "eth0").unwrap();
    eprintln!(
        "keepalived interop (IPv6): podlb vmac {vmac6}, lb2 eth0 {lb2_mac}, address list [{}, {VIP6}]",
        virtual_link_local()
    );
    let mut logs = lab.procs.clone();

    // Part 1: podlb 200 (master), keepalived 100 (backup).
    let lb1 = start_lb(topo, "lb1", &config6(200, 100, false));
    logs.push(lb1.proc().clone());
    wait_state6(&lb1, "master", Duration::from_secs(10));
    let ka = start_keepalived6(topo, 100, 1);
    logs.push(ka.clone());
    let _log = LogOnPanic(logs.clone());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(lb1.vrrp6_state().unwrap().as_deref(), Some("master"));
    let t = Instant::now();
    expect_ndp(&client, "(a) podlb 200 master, keepalived 100", &vmac6, t);
    assert!(!lb2_has_vip6(topo), "(a) keepalived (backup) holds the VIP");

    // (b) kill podlb: keepalived takes over.
    lb1.proc().kill();
    let t = Instant::now();
    wait_vip6_on_lb2(topo, true, "(b)");
    expect_ndp(
        &client,
        "(b) podlb SIGKILLed, keepalived master",
        &lb2_mac,
        t,
    );

    // (c) podlb again: it preempts.
    let t = Instant::now();
    let lb1 = start_lb(topo, "lb1", &config6(200, 100, false));
    let mut logs2 = logs.clone();
    logs2.push(lb1.proc().clone());
    let _log2 = LogOnPanic(logs2);
    wait_state6(&lb1, "master", Duration::from_secs(10));
    wait_vip6_on_lb2(topo, false, "(c)");
    expect_ndp(&client, "(c) podlb restarted, preempted", &vmac6, t);
    let rx = lb1.status().unwrap().vrrp_ipv6.unwrap().adverts_received;
    assert!(rx > 0, "(c) podlb accepted none of keepalived's adverts");
    stop_podlb(&lb1);
    stop_keepalived(&ka);

    // Part 2: keepalived 200 (master), podlb 100 (backup).
    let ka = start_keepalived6(topo, 200, 2);
    wait_vip6_on_lb2(topo, true, "(d)");
    let lb1 = Podlb::start_as(
        topo,
        topo.ns("lb1"),
        podlb_exe(),
        &config6(100, 100, false),
        "lb1-backup",
    )
    .unwrap();
    let mut logs3 = lab.procs.clone();
    logs3.extend([ka.clone(), lb1.proc().clone()]);
    let _log3 = LogOnPanic(logs3);
    let t = Instant::now();
    wait_state6(&lb1, "backup", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    let s = lb1.status().unwrap();
    let v6 = s.vrrp_ipv6.unwrap();
    assert_eq!(
        v6.state.as_str(),
        "backup",
        "(d) podlb 100 should stay backup under keepalived 200"
    );
    assert!(
        matches!(v6.master, Some(IpAddr::V6(m)) if m.is_unicast_link_local()),
        "(d) keepalived is the master, by its link-local address: {:?}",
        v6.master
    );
    // The IPv4 instance is alone: master, independent of the IPv6 one.
    assert_eq!(s.vrrp.unwrap().state.as_str(), "master");
    expect_ndp(
        &client,
        "(d) keepalived 200 master, podlb 100 backup",
        &lb2_mac,
        t,
    );

    // (e) keepalived stops: podlb takes over.
    let t = Instant::now();
    stop_keepalived(&ka);
    let took = wait_state6(&lb1, "master", Duration::from_secs(5));
    expect_ndp(&client, "(e) keepalived stopped, podlb master", &vmac6, t);
    eprintln!(
        "  (e) podlb's IPv6 instance master {:.0} ms after keepalived exited (its priority-0 advert: Skew_Time)",
        took.as_secs_f64() * 1e3
    );

    // (f) keepalived again: it preempts, podlb returns to backup.
    let t = Instant::now();
    let ka = start_keepalived6(topo, 200, 3);
    let mut logs4 = lab.procs.clone();
    logs4.extend([ka.clone(), lb1.proc().clone()]);
    let _log4 = LogOnPanic(logs4);
    wait_state6(&lb1, "backup", Duration::from_secs(10));
    wait_vip6_on_lb2(topo, true, "(f)");
    expect_ndp(&client, "(f) keepalived restarted, preempted", &lb2_mac, t);
    let drops = metric_sum(&lb1.metrics().unwrap(), "podlb_vrrp_drops_total");
    eprintln!("  podlb dropped {drops} adverts in all (every RFC 9568 §7.1 check)");
    stop_podlb(&lb1);
    stop_keepalived(&ka);
}
