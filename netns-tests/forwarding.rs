//! Forwarding through the VIP to three nginx backends, for each attachment
//! (AF_PACKET, TAP) and each mode (nat, dsr).

use podlb::control::demo::{lab_topology, Attach, VIP};
use podlb::control::netns;

use crate::common::*;

fn forwarding(attach_name: &str, mode: &str) {
    let budget = Budget::start();
    let attach = Attach::from_name(attach_name).unwrap();
    let with_iperf = mode == "nat";
    let topo = lab_topology(&attach).unwrap();
    let mut procs = Vec::new();
    for i in 1..=3 {
        let ns = topo.ns(&format!("be{i}"));
        if mode == "dsr" {
            netns::configure_dsr_backend(ns, VIP).unwrap();
        }
        // nginx listens on 0.0.0.0:80, which covers the VIP on lo in DSR mode.
        procs.push(start_nginx(&topo, ns, &format!("be{i}"), &format!("be{i}")));
    }
    if with_iperf {
        procs.push(start_iperf_server(&topo, topo.ns("be1")));
    }
    let config = lab_config(&attach, mode, with_iperf);
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    let client = topo.ns("client");

    // (a) 3,000 new connections spread evenly.
    let counts = netns::http_get_many_until(client, vip(80), 3000, 16, true, budget.deadline())
        .unwrap_or_else(|e| panic!("HTTP through the VIP failed: {e}"));
    assert_even_spread(&counts, 3000);

    // (b) wrk keep-alive without errors.
    let r = run_wrk(client, vip(80), 3, &budget);
    assert_wrk_clean(&r);

    // (c) iperf3 through a second service.
    let bps = if with_iperf {
        run_iperf(client, VIP, 3, &budget)
    } else {
        0.0
    };
    eprintln!(
        "{attach_name}/{mode}: spread {counts:?}; wrk {} requests in 3 s; iperf3 {:.2} Gbit/s",
        r.requests,
        bps / 1e9
    );

    assert!(podlb.proc().is_running(), "podlb exited during the test");
    stop_podlb(&podlb);
}

#[test]
fn forward_af_packet_nat() {
    require_netns!("forward_af_packet_nat");
    forwarding("af_packet", "nat");
}

#[test]
fn forward_af_packet_dsr() {
    require_netns!("forward_af_packet_dsr");
    forwarding("af_packet", "dsr");
}

#[test]
fn forward_tap_nat() {
    require_netns!("forward_tap_nat");
    forwarding("tap", "nat");
}

#[test]
fn forward_tap_dsr() {
    require_netns!("forward_tap_dsr");
    forwarding("tap", "dsr");
}
