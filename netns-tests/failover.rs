//! VRRP failover between two podlb instances (issue 3): lb1 (198.18.0.2,
//! priority 200) and lb2 (198.18.0.3, priority 100) on the bridge, VRID 51,
//! three nginx backends. Measured times are printed, never asserted; the
//! asserts are about correctness with generous bounds.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use podlb_lab::demo::{vrrp_lab_topology, ConfigSpec, Podlb, VrrpSpec, LB, LB2, VIP};
use podlb_lab::netns::{self, HttpConn, Prober, Topology};

use crate::common::*;

/// The two-instance lab with nginx on the three backends.
pub struct Lab {
    pub topo: Topology,
    pub procs: Vec<netns::Proc>,
}

pub fn lab(with_iperf: bool) -> Lab {
    let topo = vrrp_lab_topology().unwrap();
    let mut procs = start_backends(&topo);
    if with_iperf {
        procs.push(start_iperf_server(&topo, topo.ns("be1")));
    }
    Lab { topo, procs }
}

/// The lab service(s) with a `[vrrp]` section.
pub fn vrrp_config(
    priority: u8,
    advert_ms: u64,
    peer: Option<Ipv4Addr>,
    iperf: bool,
) -> ConfigSpec {
    let attach = podlb_lab::demo::Attach::from_name("af_packet").unwrap();
    let mut v = VrrpSpec::new(priority, advert_ms);
    v.unicast_peers.extend(peer);
    lab_config(&attach, "nat", iperf).with_vrrp(v)
}

/// Starts podlb as `role` ("lb1"/"lb2") in that host's namespace.
pub fn start_lb(topo: &Topology, role: &str, config: &ConfigSpec) -> Podlb {
    start_lb_with(topo, role, config, podlb_exe())
}

/// [`start_lb`] with another executable (e.g. a wrapper that sets the
/// environment).
pub fn start_lb_with(
    topo: &Topology,
    role: &str,
    config: &ConfigSpec,
    exe: &std::path::Path,
) -> Podlb {
    match Podlb::start_as(topo, topo.ns(role), exe, config, role) {
        Ok(p) => p,
        Err(e) => panic!(
            "{role} did not start: {e}\n--- config ---\n{}\n--- log ---\n{}",
            config.to_toml(),
            std::fs::read_to_string(topo.dir().join(format!("{role}.log"))).unwrap_or_default()
        ),
    }
}

/// Polls /status until `vrrp.state == want`; returns how long it took.
pub fn wait_state(p: &Podlb, want: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let st = p.vrrp_state().ok().flatten();
        if st.as_deref() == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "{} not {want} within {timeout:?} (state {st:?})\n{}",
            p.proc().label(),
            p.log_tail(3000)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls a metric of `p` until it is at least `min` (bounded); returns its value.
pub fn wait_metric(p: &Podlb, name: &str, min: f64, timeout: Duration) -> f64 {
    let t0 = Instant::now();
    loop {
        let v = p.metrics().map(|m| metric_sum(&m, name)).unwrap_or(0.0);
        if v >= min || t0.elapsed() >= timeout {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// lb1 (200) master, then lb2 (100) backup; lb1 knows lb2 as a sync peer.
pub fn start_pair(lab: &Lab, advert_ms: u64, unicast: bool, iperf: bool) -> (Podlb, Podlb) {
    let (p1, p2) = if unicast {
        (Some(LB2), Some(LB))
    } else {
        (None, None)
    };
    let lb1 = start_lb(&lab.topo, "lb1", &vrrp_config(200, advert_ms, p1, iperf));
    wait_state(&lb1, "master", Duration::from_secs(10));
    let lb2 = start_lb(&lab.topo, "lb2", &vrrp_config(100, advert_ms, p2, iperf));
    wait_state(&lb2, "backup", Duration::from_secs(10));
    let peers = wait_metric(&lb1, "podlb_sync_peers", 1.0, Duration::from_secs(5));
    assert!(peers >= 1.0, "lb1 never learned lb2 as a sync peer");
    (lb1, lb2)
}

/// Opens `n` keep-alive connections to the VIP from `client`, one request
/// each; returns them with the backend that answered.
pub fn open_kept(client: &str, n: usize) -> Vec<(HttpConn, String)> {
    open_kept_to(client, vip(80), n)
}

/// [`open_kept`] to `addr`.
pub fn open_kept_to(client: &str, addr: SocketAddr, n: usize) -> Vec<(HttpConn, String)> {
    netns::in_netns(client, || {
        (0..n)
            .map(|i| {
                let mut c = HttpConn::connect(addr, Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("connect {i}: {e}"));
                let r = c
                    .get("/", false)
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
                assert_eq!(r.status, 200);
                (c, r.body.trim().to_string())
            })
            .collect()
    })
    .unwrap()
}

/// One more keep-alive request on each of `open_kept`'s connections: the ones
/// that failed or answered from another backend, described.
pub fn broken_kept(conns: &mut [(HttpConn, String)]) -> Vec<String> {
    let mut failed = Vec::new();
    for (i, (c, body)) in conns.iter_mut().enumerate() {
        match c.get("/", false) {
            Ok(r) if r.status == 200 && r.body.trim() == body => {}
            Ok(r) => failed.push(format!("conn {i} ({body}): {} {}", r.status, r.body.trim())),
            Err(e) => failed.push(format!("conn {i} ({body}): {e}")),
        }
    }
    failed
}

/// Repeats `GET /` through the VIP from the client until one succeeds;
/// returns how long that took.
pub fn wait_http(client: &str, timeout: Duration) -> Duration {
    wait_http_to(client, vip(80), timeout)
}

/// [`wait_http`] to `addr`.
pub fn wait_http_to(client: &str, addr: SocketAddr, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let ok = netns::in_netns(client, || {
            HttpConn::connect(addr, Duration::from_millis(300))
                .and_then(|mut c| c.get("/", true))
                .map(|r| r.status == 200)
                .unwrap_or(false)
        })
        .unwrap_or(false);
        if ok {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "HTTP through the VIP did not work again within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn link_cut(advert_ms: u64) {
    let budget = Budget::start();
    let lab = lab(false);
    let (lb1, lb2) = start_pair(&lab, advert_ms, false, false);
    let _log = LogOnPanic(vec![lb1.proc().clone(), lb2.proc().clone()]);
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, budget.left(Duration::from_secs(5)));

    let probe = Prober::start(
        &client,
        vip(80),
        Duration::from_millis(10),
        Duration::from_millis(250),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let cut_at = probe.elapsed();
    lab.topo.set_port_up("lb1", false).unwrap();
    let t_cut = Instant::now();
    let master_after = wait_state(&lb2, "master", Duration::from_secs(5));
    let back = t_cut.elapsed() + wait_http(&client, budget.left(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(1000));
    let report = probe.finish().unwrap();
    let m = lb2.metrics().unwrap();
    let takeover_sum = metric_sum(&m, "podlb_takeover_seconds_sum");
    let takeover_n = metric_sum(&m, "podlb_takeover_seconds_count");
    eprintln!(
        "link cut, advert {advert_ms} ms: probe gap {:.0} ms (began {:.0} ms after probing started, cut at {:.0} ms); \
         probes ok {} failed {}; HTTP through the VIP again {:.0} ms after cut; lb2 /status master {:.0} ms after cut; \
         lb2 podlb_takeover_seconds_sum {takeover_sum:.6} (count {takeover_n})",
        report.longest_gap.as_secs_f64() * 1e3,
        report.gap_began.as_secs_f64() * 1e3,
        cut_at.as_secs_f64() * 1e3,
        report.ok,
        report.failed,
        back.as_secs_f64() * 1e3,
        master_after.as_secs_f64() * 1e3,
    );
    assert_eq!(lb2.vrrp_state().unwrap().as_deref(), Some("master"));
    assert!(takeover_n >= 1.0, "lb2 recorded no takeover");
    assert!(
        report.longest_gap < Duration::from_secs(5),
        "outage of {:?}",
        report.longest_gap
    );
    stop_podlb(&lb2);
}

#[test]
fn vrrp_master_link_cut_failover() {
    require_netns!("vrrp_master_link_cut_failover");
    link_cut(100);
}

#[test]
fn vrrp_master_link_cut_failover_30ms() {
    require_netns!("vrrp_master_link_cut_failover_30ms");
    link_cut(30);
}

#[test]
fn vrrp_established_flows_survive_failover() {
    require_netns!("vrrp_established_flows_survive_failover");
    let budget = Budget::start();
    let lab = lab(true);
    let (lb1, lb2) = start_pair(&lab, 100, false, true);
    let mut logs = lab.procs.clone();
    logs.extend([lb1.proc().clone(), lb2.proc().clone()]);
    let _log = LogOnPanic(logs);
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, budget.left(Duration::from_secs(5)));

    // 50 idle keep-alive connections, one request each.
    const N: usize = 50;
    let mut conns = open_kept(&client, N);

    // One iperf3 stream through service "iperf" (VIP:5201 → be1).
    let ip = VIP.to_string();
    let iperf = lab
        .topo
        .spawn(
            &client,
            "iperf3-client",
            &["iperf3", "-c", &ip, "-p", "5201", "-t", "6", "-J"],
        )
        .unwrap();
    let iperf_started = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // N HTTP + iperf3's control and data connections.
    let installed = wait_metric(
        &lb2,
        "podlb_sync_installed_total",
        (N + 2) as f64,
        Duration::from_secs(5),
    );
    let cut_at = iperf_started.elapsed().as_secs_f64();
    lab.topo.set_port_up("lb1", false).unwrap();
    wait_state(&lb2, "master", Duration::from_secs(5));

    // Every connection answers, from the same backend.
    let failed = broken_kept(&mut conns);
    let st = iperf
        .wait_timeout(budget.left(Duration::from_secs(20)))
        .expect("iperf3 finished");
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
    eprintln!(
        "flows: lb2 installed {installed} synced flows before the cut; cut {cut_at:.2} s into iperf3; \
         {}/{N} keep-alive connections answered after the cut; iperf3 exit {st:?}, intervals (start s, MB): {:?}",
        N - failed.len(),
        intervals
            .iter()
            .map(|(s, b)| (format!("{s:.0}"), format!("{:.1}", b / 1e6)))
            .collect::<Vec<_>>()
    );
    assert!(
        failed.is_empty(),
        "connections broken by the failover: {failed:#?}"
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
        !after.is_empty(),
        "no iperf3 interval after the cut: {intervals:?}"
    );
    assert!(
        after.iter().all(|(_, b)| *b > 0.0),
        "iperf3 moved nothing in an interval after the cut: {intervals:?}"
    );
    // And again, closing: data both ways on every one.
    for (c, body) in conns.iter_mut() {
        let r = c.get("/", true).expect("last request");
        assert_eq!(r.body.trim(), body);
    }
    let _ = lb1;
    stop_podlb(&lb2);
}

/// Issue 7: lb1 (priority 200) is killed, keep-alive connections are opened
/// through lb2, lb1 comes back (preempt on, no preempt delay). lb1 holds its
/// preemption until lb2 has sent it the whole connection table (it used to
/// preempt ~0.3 s after start, before the 10 s refresh had carried those
/// flows, and every one of them was reset), so they keep working after lb1
/// has taken over.
#[test]
fn vrrp_returning_master_keeps_flows_opened_while_away() {
    require_netns!("vrrp_returning_master_keeps_flows_opened_while_away");
    let budget = Budget::start();
    let lab = lab(false);
    let (lb1, lb2) = start_pair(&lab, 100, false, false);
    let mut logs = lab.procs.clone();
    logs.extend([lb1.proc().clone(), lb2.proc().clone()]);
    let _log = LogOnPanic(logs.clone());
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, budget.left(Duration::from_secs(5)));

    lb1.proc().kill();
    wait_state(&lb2, "master", Duration::from_secs(5));
    wait_http(&client, budget.left(Duration::from_secs(5)));

    // Opened through lb2 while lb1 is away: lb1 has never seen them.
    const N: usize = 20;
    let mut conns = open_kept(&client, N);

    // lb1 returns with the default preempt settings (on, no delay).
    let back = Podlb::start_as(
        &lab.topo,
        lab.topo.ns("lb1"),
        podlb_exe(),
        &vrrp_config(200, 100, None, false),
        "lb1-again",
    )
    .unwrap_or_else(|e| panic!("lb1 did not start again: {e}"));
    logs.push(back.proc().clone());
    let _log = LogOnPanic(logs);
    let took = wait_state(&back, "master", budget.left(Duration::from_secs(20)));
    wait_state(&lb2, "backup", Duration::from_secs(5));
    let m = back.metrics().unwrap();
    let tables = metric_sum(&m, "podlb_sync_tables_received_total");
    let installed = metric_sum(&m, "podlb_sync_installed_total");
    eprintln!(
        "flows: lb1 master again {:.2} s after its start, with {tables} table(s) and {installed} \
         flows from lb2",
        took.as_secs_f64()
    );
    assert!(tables >= 1.0, "lb1 preempted without lb2's table");
    assert!(
        installed >= N as f64,
        "lb1 installed {installed} of {N} flows"
    );

    let failed = broken_kept(&mut conns);
    assert!(
        failed.is_empty(),
        "{}/{N} connections broken when lb1 took over again: {failed:#?}",
        failed.len()
    );
    stop_podlb(&back);
    stop_podlb(&lb2);
}

#[test]
fn vrrp_sigterm_handover_under_load() {
    require_netns!("vrrp_sigterm_handover_under_load");
    let budget = Budget::start();
    let lab = lab(false);
    let (lb1, lb2) = start_pair(&lab, 100, false, false);
    let _log = LogOnPanic(vec![lb1.proc().clone(), lb2.proc().clone()]);
    let client = lab.topo.ns("client").to_string();
    wait_http(&client, budget.left(Duration::from_secs(5)));
    let url = format!("http://{}/", vip(80));
    let wrk = std::thread::scope(|s| {
        let h = s.spawn(|| {
            netns::exec_timeout(
                &client,
                &["wrk", "-t1", "-c16", "-d4s", "--latency", &url],
                Duration::from_secs(20),
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        lb1.proc().signal("TERM").unwrap();
        let t0 = Instant::now();
        let took = wait_state(&lb2, "master", Duration::from_secs(5));
        eprintln!(
            "sigterm: lb2 master {:.0} ms after SIGTERM to lb1",
            took.as_secs_f64() * 1e3
        );
        let _ = t0;
        h.join().unwrap()
    })
    .expect("wrk ran");
    let text = String::from_utf8_lossy(&wrk.stdout).into_owned();
    assert!(wrk.status.success(), "wrk failed: {text}");
    let r = parse_wrk(&text);
    let exit = lb1.proc().wait_timeout(Duration::from_secs(10));
    eprintln!(
        "sigterm: wrk {} requests in 4 s, socket errors: {:?}, non-2xx: {:?}; lb1 exit {exit:?}",
        r.requests, r.socket_errors, r.non_2xx
    );
    assert_wrk_clean(&r);
    assert!(
        exit.is_some_and(|s| s.success()),
        "lb1 did not exit 0 after SIGTERM"
    );
    assert_eq!(lb2.vrrp_state().unwrap().as_deref(), Some("master"));
    stop_podlb(&lb2);
}

#[test]
fn vrrp_split_brain_heals() {
    require_netns!("vrrp_split_brain_heals");
    let lab = lab(false);
    let (lb1, lb2) = start_pair(&lab, 100, false, false);
    let _log = LogOnPanic(vec![lb1.proc().clone(), lb2.proc().clone()]);
    lab.topo.set_port_isolated("lb1", true).unwrap();
    lab.topo.set_port_isolated("lb2", true).unwrap();
    let split = wait_state(&lb2, "master", Duration::from_secs(5));
    assert_eq!(lb1.vrrp_state().unwrap().as_deref(), Some("master"));
    lab.topo.set_port_isolated("lb1", false).unwrap();
    lab.topo.set_port_isolated("lb2", false).unwrap();
    let t0 = Instant::now();
    let states = || {
        (
            lb1.vrrp_state().ok().flatten().unwrap_or_default(),
            lb2.vrrp_state().ok().flatten().unwrap_or_default(),
        )
    };
    let one = |s: &(String, String)| (s.0 == "master") != (s.1 == "master");
    let mut s = states();
    while !one(&s) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no single master 5 s after the link returned: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
        s = states();
    }
    let healed = t0.elapsed();
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(1) {
        let now = states();
        assert_eq!(now, s, "mastership flapped after healing");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "split brain: both master {:.0} ms after isolation; one master ({}) {:.0} ms after the link returned (advert 100 ms)",
        split.as_secs_f64() * 1e3,
        if s.0 == "master" { "lb1" } else { "lb2" },
        healed.as_secs_f64() * 1e3
    );
    assert_eq!(s.0, "master", "the higher priority lb1 should win: {s:?}");
    stop_podlb(&lb1);
    stop_podlb(&lb2);
}

/// Notify hooks run on each transition with only the documented
/// environment (PATH, PODLB_STATE, PODLB_VIP, PODLB_VRID; the shell adds its
/// own PWD/SHLVL/_): master on taking over, fault when the link goes down.
#[test]
fn vrrp_notify_hooks_get_documented_environment() {
    require_netns!("vrrp_notify_hooks_get_documented_environment");
    let l = lab(false);
    let dir = l.topo.dir().to_path_buf();
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\nenv > {}/hook-$PODLB_STATE.env\n", dir.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .unwrap();
    let mut cfg = vrrp_config(200, 100, None, false);
    if let Some(v) = cfg.vrrp.as_mut() {
        v.hook = Some(hook.display().to_string());
    }
    let lb1 = start_lb(&l.topo, "lb1", &cfg);
    wait_state(&lb1, "master", Duration::from_secs(5));
    let read = |state: &str| -> String {
        let f = dir.join(format!("hook-{state}.env"));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(s) = std::fs::read_to_string(&f) {
                if !s.is_empty() {
                    return s;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("hook for {state} did not run\n{}", lb1.log_tail(2000));
    };
    let env = read("master");
    assert!(env.contains("PODLB_STATE=master"), "{env}");
    assert!(env.contains(&format!("PODLB_VIP={VIP}")), "{env}");
    assert!(env.contains("PODLB_VRID=51"), "{env}");
    for line in env.lines() {
        let key = line.split('=').next().unwrap_or("");
        assert!(
            key.starts_with("PODLB_") || ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&key),
            "undocumented variable {key:?} in the hook's environment:\n{env}"
        );
    }
    // The link goes down: the fault hook.
    l.topo.set_port_up("lb1", false).unwrap();
    let env = read("fault");
    assert!(env.contains("PODLB_STATE=fault"), "{env}");
}
