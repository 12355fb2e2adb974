//! Floods and conflicts (issue 7): a spoofed SYN flood against a small flow
//! table, an ARP storm, VRRP adverts from strangers, fragments, tiny and
//! jumbo frames, and another host claiming the VIP (RFC 5227 §2.4). Each
//! kind shows up in a named counter; podlb keeps its memory bounded, its
//! established connections and its service. See docs/reliability.md, "Floods and
//! conflicts".

use std::time::{Duration, Instant};

use podlb_lab::demo::{lab_topology, metric_value, Attach, Podlb, VrrpSpec, LB, LB2, VIP, VRID};
use podlb_lab::netns::{self, HttpConn, Proc, Topology, HTTP_TIMEOUT};

use crate::common::*;
use crate::harness::send_badframes_with;

/// The flow table of the flood test: small, so the flood overfills it.
const CAPACITY: u64 = 65_536;
/// Spoofed SYNs to send, and the most time the sender may take.
const SYN_COUNT: u64 = 1_000_000;
const SYN_SECONDS: u64 = 15;
/// Kept-alive connections opened before the flood.
const KEPT: usize = 20;

/// A counter's name, how much it grew, and how many frames should have made it grow.
type Check<'a> = (&'a str, Box<dyn Fn() -> f64 + 'a>, f64);

fn metric(p: &Podlb, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&p.metrics().unwrap(), name, labels).unwrap_or(0.0)
}

fn drops(p: &Podlb, reason: &str) -> f64 {
    metric(p, "podlb_drops_total", &[("reason", reason)])
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn run_json(ns: &str, args: &[&str], timeout: Duration) -> serde_json::Value {
    let out = netns::exec_timeout(ns, args, timeout).expect("script ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{args:?}: output not JSON ({e}): {text}"))
}

/// Polls `f` every 100 ms until it holds or `within` passed; returns its last value.
fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One GET on each kept connection; the bodies (backend names) that came back.
fn ask_all(client: &str, conns: &mut [HttpConn]) -> Vec<Result<String, String>> {
    netns::in_netns(client, || {
        conns
            .iter_mut()
            .map(|c| {
                c.get("/", false)
                    .map(|r| r.body.trim().to_string())
                    .map_err(|e| e.to_string())
            })
            .collect()
    })
    .unwrap()
}

/// The AF_PACKET lab with nginx on be1..be3.
fn lab_with_backends() -> (Attach, Topology, Vec<Proc>) {
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let procs = (1..=3)
        .map(|i| {
            let n = format!("be{i}");
            start_nginx(&topo, topo.ns(&n), &n, &n)
        })
        .collect();
    (attach, topo, procs)
}

/// A spoofed SYN flood (random 198.19.0.0/16 sources and ports) at VIP:80
/// with a 65,536-flow table: memory stays bounded, the table stays within
/// capacity by evicting half-open flows, the kept-alive connections opened
/// before keep their backends, and new connections succeed afterwards.
#[test]
fn syn_flood_keeps_memory_table_and_established_connections() {
    require_netns!("syn_flood_keeps_memory_table_and_established_connections");
    let budget = Budget::start();
    let (attach, topo, mut procs) = lab_with_backends();
    let mut cfg = lab_config(&attach, "nat", false);
    cfg.extra = format!("[flows]\ncapacity = {CAPACITY}\n");
    let podlb = start_podlb(&topo, &attach, &cfg);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    let client = topo.ns("client");
    netns::http_get_many_until(client, vip(80), 10, 2, true, budget.deadline()).unwrap();

    // The kept-alive connections, and which backend each one is on.
    let mut conns: Vec<HttpConn> = netns::in_netns(client, || {
        (0..KEPT)
            .map(|_| HttpConn::connect(vip(80), HTTP_TIMEOUT).unwrap())
            .collect()
    })
    .unwrap();
    let pinned: Vec<String> = ask_all(client, &mut conns)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();

    let pid = podlb.proc().pid();
    let rss_before = rss_kib(pid);
    let rx_before = metric(&podlb, "podlb_rx_packets_total", &[]);
    let evictions_before = metric(&podlb, "podlb_flow_evictions_total", &[]);
    let mac = podlb.mac().unwrap();
    let script = test_file("flood.py").display().to_string();
    let flood = topo
        .spawn(
            client,
            "syn-flood",
            &[
                "python3",
                &script,
                "syn",
                "eth0",
                &mac,
                &VIP.to_string(),
                &SYN_COUNT.to_string(),
                &SYN_SECONDS.to_string(),
            ],
        )
        .unwrap();
    // During the flood: ask the kept connections (reported, not asserted:
    // on a loaded 2-core machine a GET may wait out a retransmission).
    std::thread::sleep(Duration::from_secs(2));
    let during = ask_all(client, &mut conns);
    let during_ok = during
        .iter()
        .zip(&pinned)
        .filter(|(r, p)| r.as_ref().is_ok_and(|b| b == *p))
        .count();
    assert!(
        flood
            .wait_timeout(Duration::from_secs(SYN_SECONDS + 30))
            .is_some_and(|s| s.success()),
        "flood.py: {}",
        flood.log_tail(2000)
    );
    let report: serde_json::Value =
        serde_json::from_str(flood.log_tail(2000).trim().lines().last().unwrap()).unwrap();
    let sent = report["sent"].as_u64().unwrap();
    // Let podlb drain its ring: rx stops growing.
    let mut last = -1.0;
    wait_until(Duration::from_secs(10), || {
        let rx = metric(&podlb, "podlb_rx_packets_total", &[]);
        let settled = rx == last;
        last = rx;
        settled
    });
    let rx = metric(&podlb, "podlb_rx_packets_total", &[]) - rx_before;
    let rss_after = rss_kib(pid);
    let status = podlb.status().unwrap();
    let (active, capacity) = (status.flows.active as u64, status.flows.capacity as u64);
    let evictions = metric(&podlb, "podlb_flow_evictions_total", &[]) - evictions_before;
    let full = drops(&podlb, "flow_table_full");
    // Read by the worker every 100 ms; the wait above took longer.
    let ring_full = drops(&podlb, "rx_ring_full");
    let after = ask_all(client, &mut conns);
    let after_ok = after
        .iter()
        .zip(&pinned)
        .filter(|(r, p)| r.as_ref().is_ok_and(|b| b == *p))
        .count();
    eprintln!(
        "syn flood: {sent} SYNs in {} s ({} pps); podlb received {rx}, its RX ring overflowed for {ring_full}; \
         VmRSS {rss_before} KiB -> {rss_after} KiB; flows {active}/{capacity}, \
         {evictions} evictions, {full} flow_table_full drops; kept connections \
         answering during {during_ok}/{KEPT}, after {after_ok}/{KEPT}",
        report["seconds"], report["pps"]
    );
    assert!(sent >= 100_000, "the sender managed too little: {report}");
    assert!(podlb.proc().is_running(), "podlb died in the flood");
    assert!(
        capacity <= CAPACITY && active <= capacity,
        "{:?}",
        status.flows
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // More distinct SYNs than room: half-open flows made way.
    assert!(evictions > 0.0, "no evictions after {rx} frames");
    assert_eq!(
        after_ok, KEPT,
        "kept connections after the flood: {after:?}, pinned {pinned:?}"
    );
    // New connections succeed (bounded retry: the tail of the flood may still
    // be in podlb's ring).
    let counts = netns::http_get_many_until(client, vip(80), 30, 3, true, budget.deadline())
        .or_else(|_| netns::http_get_many_until(client, vip(80), 30, 3, true, budget.deadline()))
        .unwrap();
    assert_eq!(counts.values().sum::<usize>(), 30);
    drop(conns);
    stop_podlb(&podlb);
}

/// podlb as a VRRP master (unicast peer LB2, which does not exist): an ARP
/// storm, VRRP adverts from strangers and broken ones, fragments, tiny and
/// jumbo frames are each counted under their own name and podlb keeps
/// serving; a backend claiming the VIP is a counted, logged, shown and
/// defended conflict; `garp_refresh_s` re-announces.
#[test]
fn arp_storm_vrrp_strangers_odd_frames_and_vip_conflict_are_counted() {
    require_netns!("arp_storm_vrrp_strangers_odd_frames_and_vip_conflict_are_counted");
    let budget = Budget::start();
    let (attach, topo, mut procs) = lab_with_backends();
    let mut vrrp = VrrpSpec::new(200, 100);
    vrrp.unicast_peers = vec![LB2];
    let mut cfg = lab_config(&attach, "nat", false).with_vrrp(vrrp);
    // Appended after the [vrrp] table, so these are [vrrp] keys.
    cfg.extra = "garp_refresh_s = 1\ngarp_unicast_clients = true\n".into();
    let podlb = start_podlb(&topo, &attach, &cfg);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    assert!(
        wait_until(Duration::from_secs(10), || podlb
            .vrrp_state()
            .unwrap()
            .as_deref()
            == Some("master")),
        "not master: {}",
        podlb.log_tail(3000)
    );
    let client = topo.ns("client");
    netns::http_get_many_until(client, vip(80), 10, 2, true, budget.deadline()).unwrap();
    let script = test_file("flood.py").display().to_string();

    // --- ARP storm: 1 in 4 for the VIP (answered), the rest for nobody.
    let replies0 = metric(&podlb, "podlb_arp_replies_total", &[]);
    let other0 = metric(&podlb, "podlb_arp_other_target_total", &[]);
    let storm = run_json(
        client,
        &["python3", &script, "arp", "eth0", &VIP.to_string(), "40000"],
        Duration::from_secs(40),
    );
    let (for_vip, for_other) = (
        storm["for_vip"].as_u64().unwrap() as f64,
        storm["for_other"].as_u64().unwrap() as f64,
    );
    wait_until(Duration::from_secs(5), || {
        metric(&podlb, "podlb_arp_other_target_total", &[]) - other0 >= for_other
    });
    let replies = metric(&podlb, "podlb_arp_replies_total", &[]) - replies0;
    let other = metric(&podlb, "podlb_arp_other_target_total", &[]) - other0;
    eprintln!("arp storm: {storm}; podlb answered {replies}, counted {other} for other targets");
    assert!(replies >= 0.9 * for_vip, "{replies} replies to {storm}");
    assert!(replies <= for_vip + 100.0, "{replies} replies to {storm}");
    assert!(other >= 0.9 * for_other, "{other} others of {storm}");
    netns::http_get_many_until(client, vip(80), 10, 2, true, budget.deadline()).unwrap();

    // --- Strangers' and broken VRRP adverts, fragments, tiny, jumbo.
    let drop_names = [
        ("vrid_mismatch", "vrrp_unknown_vrid"),
        ("bad_ttl", "vrrp_low_ttl"),
        ("bad_checksum", "vrrp_bad_checksum"),
    ];
    let vrid = VRID.to_string();
    let vrrp_drop = |r: &str| {
        metric(
            &podlb,
            "podlb_vrrp_drops_total",
            &[("vrid", &vrid), ("reason", r)],
        )
    };
    let before: Vec<f64> = drop_names.iter().map(|(r, _)| vrrp_drop(r)).collect();
    let unknown0 = metric(&podlb, "podlb_vrrp_unknown_peer_total", &[]);
    let frag0 = drops(&podlb, "fragment_unmatched");
    let malformed0 = drops(&podlb, "ipv4_malformed");
    let oversize0 = drops(&podlb, "oversize");
    // To the device MAC: unicast adverts come to the instance's own address.
    let own_mac = netns::mac_of(topo.ns("lb"), "eth0").unwrap();
    let kinds =
        "vrrp_unknown_vrid,vrrp_low_ttl,vrrp_bad_checksum,vrrp_stranger,ipv4_fragment,ipv4_truncated,jumbo";
    let report = send_badframes_with(
        client,
        &own_mac,
        1400,
        11,
        &[
            "--kinds",
            kinds,
            "--vrrp-src",
            &LB2.to_string(),
            "--vrrp-dst",
            &LB.to_string(),
            "--vrid",
            &vrid,
        ],
    );
    let sent = |k: &str| report["kinds"][k]["sent"].as_u64().unwrap() as f64;
    let checks: Vec<Check<'_>> = vec![
        (
            "vrid_mismatch",
            Box::new(|| vrrp_drop("vrid_mismatch") - before[0]),
            sent("vrrp_unknown_vrid"),
        ),
        (
            "bad_ttl",
            Box::new(|| vrrp_drop("bad_ttl") - before[1]),
            sent("vrrp_low_ttl"),
        ),
        (
            "bad_checksum",
            Box::new(|| vrrp_drop("bad_checksum") - before[2]),
            sent("vrrp_bad_checksum"),
        ),
        (
            "unknown_peer",
            Box::new(|| metric(&podlb, "podlb_vrrp_unknown_peer_total", &[]) - unknown0),
            sent("vrrp_stranger"),
        ),
        (
            "fragment_unmatched",
            Box::new(|| drops(&podlb, "fragment_unmatched") - frag0),
            sent("ipv4_fragment"),
        ),
        (
            "ipv4_malformed (tiny)",
            Box::new(|| drops(&podlb, "ipv4_malformed") - malformed0),
            sent("ipv4_truncated"),
        ),
    ];
    wait_until(Duration::from_secs(5), || {
        checks.iter().all(|(_, got, want)| got() >= *want)
    });
    for (name, got, want) in &checks {
        let got = got();
        eprintln!("{name}: {got} counted of {want} sent");
        assert!(*want > 0.0, "{name}: nothing sent: {report}");
        assert!(
            got >= *want,
            "{name}: {got} counted of {want} sent: {report}"
        );
    }
    // Jumbo frames: the sending kernel refuses a frame above the MTU
    // (EMSGSIZE); any that did leave would be oversize at podlb.
    let jumbo = &report["kinds"]["jumbo"];
    eprintln!("jumbo: {jumbo}");
    assert!(
        jumbo["rejected"].as_u64().unwrap() > 0
            || drops(&podlb, "oversize") - oversize0 >= sent("jumbo"),
        "{report}"
    );
    assert_eq!(podlb.vrrp_state().unwrap().as_deref(), Some("master"));
    netns::http_get_many_until(client, vip(80), 10, 2, true, budget.deadline()).unwrap();

    // --- be1 claims the VIP (one RFC 5227 announcement with its own MAC).
    let be1_mac = netns::mac_of(topo.ns("be1"), "eth0").unwrap();
    let garp0 = metric(&podlb, "podlb_garp_sent_total", &[]);
    let defences0 = metric(&podlb, "podlb_vip_defences_total", &[]);
    let claim = run_json(
        topo.ns("be1"),
        &[
            "python3",
            &script,
            "garp",
            "eth0",
            &VIP.to_string(),
            "1",
            "0",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(claim["mac"].as_str(), Some(be1_mac.as_str()));
    let vip_s = VIP.to_string();
    let seen = wait_until(Duration::from_secs(5), || {
        metric(&podlb, "podlb_vip_conflicts_total", &[("vip", &vip_s)]) >= 1.0
            && metric(&podlb, "podlb_vip_defences_total", &[]) > defences0
    });
    let conflicts = podlb.status().unwrap().conflicts;
    assert!(seen, "no conflict seen or defended: {conflicts:?}");
    assert!(
        conflicts
            .iter()
            .any(|c| c.vip.to_string() == vip_s && c.mac == be1_mac && c.count >= 1),
        "{conflicts:?}"
    );
    assert!(drops(&podlb, "vip_conflict") >= 1.0);
    assert!(metric(&podlb, "podlb_garp_sent_total", &[]) > garp0);
    assert!(
        podlb.log_tail(20_000).contains("VIP conflict"),
        "{}",
        podlb.log_tail(3000)
    );
    eprintln!("conflict: {conflicts:?}");
    // The defence came after the claim: the client reaches podlb again.
    let ok = wait_until(budget.left(Duration::from_secs(10)), || {
        netns::http_get_many(client, vip(80), 6, 2, true).is_ok()
    });
    assert!(ok, "service not back after the defence");

    // --- garp_refresh_s = 1: announcements keep coming while master.
    let g = metric(&podlb, "podlb_garp_sent_total", &[]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric(&podlb, "podlb_garp_sent_total", &[]) >= g + 2.0
        }),
        "no periodic gratuitous ARP"
    );
    // No takeover from a master with flows happened: nothing unicast yet.
    assert_eq!(metric(&podlb, "podlb_garp_unicast_sent_total", &[]), 0.0);
    stop_podlb(&podlb);
}
