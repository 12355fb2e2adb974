//! IPv6 through podlb (issue 17): nginx backends on IPv6 addresses of
//! 2001:2::/48 (RFC 5180), an IPv6 VIP in nat and dsr mode over AF_PACKET
//! and TAP, the client resolving the VIP by Neighbor Discovery (no static
//! neighbor entry anywhere); and a dual-stack VIP pair serving the same
//! backends to an IPv4 and an IPv6 client at once.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use podlb_lab::demo::{lab_topology, metric_sum, Attach, ServiceSpec, BACKENDS, VIP};
use podlb_lab::netns::{self, Topology};

use crate::common::*;

/// The IPv6 VIP and the hosts' addresses (one /64 on the bridge).
pub(crate) const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
pub(crate) const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x2);

pub(crate) fn backend6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x21 + i as u16)
}

pub(crate) fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(VIP6), port)
}

/// Adds `addr/64` to eth0 of `ns`, without Duplicate Address Detection
/// (the lab's addresses are unique; DAD would only delay the test by its
/// 1-2 s).
pub(crate) fn add_v6(ns: &str, addr: Ipv6Addr) {
    let a = format!("{addr}/64");
    netns::exec_ok(ns, &["ip", "-6", "addr", "add", &a, "dev", "eth0", "nodad"])
        .unwrap_or_else(|e| panic!("ip -6 addr add {a} in {ns}: {e}"));
}

/// The lab of `attach` with IPv6 addresses on the client, the backends
/// and (AF_PACKET) the lb; nginx on every backend answering its name on
/// 0.0.0.0:80 and [::]:80; in dsr mode the VIP on each backend's lo.
fn v6_lab(attach: &Attach, mode: &str) -> (Topology, Vec<netns::Proc>) {
    let topo = lab_topology(attach).unwrap();
    add_v6(topo.ns("client"), CLIENT6);
    if !attach.is_tap() {
        add_v6(topo.ns("lb"), LB6);
    }
    let mut procs = Vec::new();
    for i in 0..3 {
        let name = format!("be{}", i + 1);
        let ns = topo.ns(&name);
        add_v6(ns, backend6(i));
        if mode == "dsr" {
            // The VIP on lo: accepted, never announced (Linux answers
            // Neighbor Solicitations only for addresses of the receiving
            // interface).
            let v = format!("{VIP6}/128");
            netns::exec_ok(ns, &["ip", "-6", "addr", "add", &v, "dev", "lo"]).unwrap();
        }
        procs.push(start_nginx(&topo, ns, &name, &name));
    }
    (topo, procs)
}

pub(crate) fn web6(mode: &str) -> ServiceSpec {
    ServiceSpec {
        name: "web6".into(),
        vip: IpAddr::V6(VIP6),
        port: 80,
        mode: mode.into(),
        backends: (0..3)
            .map(|i| SocketAddr::new(IpAddr::V6(backend6(i)), 80))
            .collect(),
        health_check: None,
    }
}

/// The MAC the client's kernel holds for `ip` (learned by NDP), if any.
pub(crate) fn neighbor_mac(ns: &str, ip: Ipv6Addr) -> Option<String> {
    let out = netns::exec_ok(ns, &["ip", "-6", "neigh", "show", &ip.to_string()]).ok()?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

/// Whether the client has any permanent (static) neighbor entry.
fn static_neighbors(ns: &str) -> String {
    netns::exec_ok(ns, &["ip", "-6", "neigh", "show", "nud", "permanent"]).unwrap_or_default()
}

fn ipv6_forwarding(attach_name: &str, mode: &str) {
    let budget = Budget::start();
    let attach = Attach::from_name(attach_name).unwrap();
    let (topo, mut procs) = v6_lab(&attach, mode);
    let mut config = lab_config(&attach, mode, false);
    config.services = vec![web6(mode)];
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    let client = topo.ns("client");

    // New connections, each on a fresh socket: spread evenly.
    let counts = netns::http_get_many_until(client, vip6(80), 3000, 16, true, budget.deadline())
        .unwrap_or_else(|e| panic!("HTTP through the IPv6 VIP failed: {e}"));
    assert_even_spread(&counts, 3000);
    // wrk keep-alive without errors.
    let r = run_wrk(client, vip6(80), 2, &budget);
    assert_wrk_clean(&r);

    // The client found the VIP by NDP: its entry holds podlb's serving MAC,
    // and nobody set a static one.
    let status = podlb.status().unwrap();
    let mac = neighbor_mac(client, VIP6).expect("the client has a neighbor entry for the VIP");
    assert_eq!(mac, status.interface.mac, "the VIP resolves to podlb's MAC");
    assert_eq!(
        static_neighbors(client).trim(),
        "",
        "no static neighbor entries"
    );
    let m = podlb.metrics().unwrap();
    let adverts = metric_sum(&m, "podlb_ndp_adverts_total");
    assert!(adverts >= 1.0, "no Neighbor Advertisement counted");
    // The flows were IPv6 ones, in their own table.
    let t = &status.flows_ipv6;
    let per_flow = t.memory_bytes as f64 / t.capacity as f64;
    eprintln!(
        "ipv6 {attach_name}/{mode}: spread {counts:?}; wrk {} requests in 2 s; NAs {adverts}; IPv6 table {} B/flow at capacity {}",
        r.requests, per_flow as u64, t.capacity
    );
    let flows = podlb.flows(100).unwrap();
    assert!(
        flows.flows.iter().any(|f| f.vip == vip6(80)),
        "no IPv6 flow in /flows: {:?}",
        flows.flows
    );
    assert!(podlb.proc().is_running(), "podlb exited during the test");
    stop_podlb(&podlb);
}

#[test]
fn ipv6_af_packet_nat() {
    require_netns!("ipv6_af_packet_nat");
    ipv6_forwarding("af_packet", "nat");
}

#[test]
fn ipv6_af_packet_dsr() {
    require_netns!("ipv6_af_packet_dsr");
    ipv6_forwarding("af_packet", "dsr");
}

#[test]
fn ipv6_tap_nat() {
    require_netns!("ipv6_tap_nat");
    ipv6_forwarding("tap", "nat");
}

#[test]
fn ipv6_tap_dsr() {
    require_netns!("ipv6_tap_dsr");
    ipv6_forwarding("tap", "dsr");
}

/// A dual-stack VIP pair (198.18.0.100 and 2001:2::100) over the same
/// three backends, an IPv4 and an IPv6 client at once: both spread evenly,
/// none fails.
#[test]
fn ipv6_dual_stack_vip_pair() {
    require_netns!("ipv6_dual_stack_vip_pair");
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let (topo, mut procs) = v6_lab(&attach, "nat");
    let mut config = lab_config(&attach, "nat", false);
    config.services.push(web6("nat"));
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    let client = topo.ns("client").to_string();
    let deadline = budget.deadline();
    let (c4, c6) = std::thread::scope(|s| {
        let v4 = s.spawn(|| netns::http_get_many_until(&client, vip(80), 2400, 8, true, deadline));
        let v6 = s.spawn(|| netns::http_get_many_until(&client, vip6(80), 2400, 8, true, deadline));
        (v4.join().unwrap(), v6.join().unwrap())
    });
    let c4 = c4.unwrap_or_else(|e| panic!("IPv4 client failed: {e}"));
    let c6 = c6.unwrap_or_else(|e| panic!("IPv6 client failed: {e}"));
    assert_even_spread(&c4, 2400);
    assert_even_spread(&c6, 2400);
    let s = podlb.status().unwrap();
    eprintln!(
        "dual stack: IPv4 {c4:?} IPv6 {c6:?}; flows v4 {} v6 {}",
        s.flows.active, s.flows_ipv6.active
    );
    let vips: Vec<IpAddr> = s.services.iter().map(|x| x.vip).collect();
    assert!(vips.contains(&IpAddr::V4(VIP)) && vips.contains(&IpAddr::V6(VIP6)));
    // Backends of each family resolved in their own way (ARP, NDP).
    let macs: Vec<_> = s
        .neighbors
        .iter()
        .filter(|n| n.mac.is_some())
        .map(|n| n.ip)
        .collect();
    for (i, b) in BACKENDS.iter().enumerate() {
        assert!(
            macs.contains(&IpAddr::V4(*b)),
            "{b} unresolved: {:?}",
            s.neighbors
        );
        assert!(
            macs.contains(&IpAddr::V6(backend6(i))),
            "{} unresolved",
            backend6(i)
        );
    }
    std::thread::sleep(Duration::from_millis(10));
    stop_podlb(&podlb);
}

/// Connection sync carries IPv6 flows (decisions.md §70): lb1 (master) and
/// lb2 (backup) of the VRRP lab serve an IPv6 VIP too; keep-alive
/// connections to it are opened through lb1, lb2 installs them from the
/// sync stream, lb1's link is cut, and every connection goes on through
/// lb2 to the same backend (full NAT: the same NAT port, or the backend
/// would reset it).
#[test]
fn vrrp_established_ipv6_flows_survive_failover() {
    use crate::failover::{broken_kept, lab, wait_metric, wait_state};
    require_netns!("vrrp_established_ipv6_flows_survive_failover");
    let l = lab(false);
    for (role, last) in [("client", 0x10), ("lb1", 0x2), ("lb2", 0x3)] {
        add_v6(
            l.topo.ns(role),
            Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last),
        );
    }
    for i in 0..3 {
        add_v6(l.topo.ns(&format!("be{}", i + 1)), backend6(i));
    }
    let (lb1, lb2) = start_pair_v6(&l);
    let mut logs = l.procs.clone();
    logs.extend([lb1.proc().clone(), lb2.proc().clone()]);
    let _log = LogOnPanic(logs);
    let client = l.topo.ns("client").to_string();

    const N: usize = 30;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut conns = loop {
        let r = netns::in_netns(&client, || {
            (0..N)
                .map(|_| {
                    let mut c = netns::HttpConn::connect(vip6(80), Duration::from_secs(2))?;
                    let r = c.get("/", false)?;
                    Ok((c, r.body.trim().to_string()))
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .unwrap();
        match r {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("IPv6 VIP not reachable yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("HTTP through the IPv6 VIP failed: {e}"),
        }
    };
    let installed = wait_metric(
        &lb2,
        "podlb_sync_installed_total",
        N as f64,
        Duration::from_secs(5),
    );
    assert!(installed >= N as f64, "lb2 installed {installed} of {N}");
    l.topo.set_port_up("lb1", false).unwrap();
    wait_state(&lb2, "master", Duration::from_secs(5));
    let failed = broken_kept(&mut conns);
    eprintln!(
        "ipv6 sync: lb2 installed {installed}; {}/{N} IPv6 keep-alive connections answered after the cut",
        N - failed.len()
    );
    assert!(
        failed.is_empty(),
        "IPv6 connections broken by the failover: {failed:#?}"
    );
    let _ = lb1;
    stop_podlb(&lb2);
}

/// [`crate::failover::start_pair`] with the IPv6 service added to both
/// instances' configuration.
fn start_pair_v6(l: &crate::failover::Lab) -> (podlb_lab::demo::Podlb, podlb_lab::demo::Podlb) {
    use crate::failover::{start_lb, vrrp_config, wait_metric, wait_state};
    let cfg = |prio| {
        let mut c = vrrp_config(prio, 100, None, false);
        c.services.push(web6("nat"));
        c
    };
    let lb1 = start_lb(&l.topo, "lb1", &cfg(200));
    wait_state(&lb1, "master", Duration::from_secs(10));
    let lb2 = start_lb(&l.topo, "lb2", &cfg(100));
    wait_state(&lb2, "backup", Duration::from_secs(10));
    let peers = wait_metric(&lb1, "podlb_sync_peers", 1.0, Duration::from_secs(5));
    assert!(peers >= 1.0, "lb1 never learned lb2 as a sync peer");
    (lb1, lb2)
}
