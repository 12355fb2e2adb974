//! Forwarding through the VIP to three nginx backends, for each attachment
//! (AF_PACKET, TAP) and each mode (nat, dsr), nat through the AF_XDP
//! backend, and nat over the other AF_PACKET rings (TPACKET_V3 RX, a
//! TPACKET_V2 TX ring).

use podlb_lab::demo::{lab_topology, metric_value, Attach, VIP};
use podlb_lab::netns;

use crate::common::*;

fn forwarding(attach_name: &str, mode: &str) {
    forwarding_with(attach_name, mode, &[])
}

/// The veth's count of frames its XDP program redirected (ethtool -S).
fn xdp_redirects(ns: &str) -> u64 {
    let out = netns::exec_ok(ns, &["ethtool", "-S", "eth0"]).unwrap_or_default();
    out.lines()
        .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains("xdp_redirect:"))
        .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
        .sum()
}

/// Whether an XDP program is attached to the lb's eth0.
fn xdp_attached(ns: &str) -> bool {
    netns::exec_ok(ns, &["ip", "-d", "link", "show", "dev", "eth0"])
        .is_ok_and(|o| o.contains("prog/xdp"))
}

/// `io`: keys of the `[io]` table and their (string) values.
fn forwarding_with(attach_name: &str, mode: &str, io: &[(&str, &str)]) {
    let backend = io.iter().find(|(k, _)| *k == "backend").map(|&(_, v)| v);
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
    let mut config = lab_config(&attach, mode, with_iperf);
    if !io.is_empty() {
        config.extra.push_str("\n[io]\n");
        for (k, v) in io {
            config.extra.push_str(&format!("{k} = \"{v}\"\n"));
        }
    }
    let podlb = start_podlb(&topo, &attach, &config);
    let lb = lb_ns(&topo, &attach);
    if backend == Some("af_xdp") {
        assert!(
            xdp_attached(&lb),
            "no XDP program on eth0\n{}",
            podlb.log_tail(4000)
        );
    }
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
        "{attach_name}/{mode}/{io:?}: spread {counts:?}; wrk {} requests in 3 s; iperf3 {:.2} Gbit/s",
        r.requests,
        bps / 1e9
    );

    assert!(podlb.proc().is_running(), "podlb exited during the test");
    if backend == Some("af_xdp") {
        // The VIP traffic took the XDP path: the veth redirected at least
        // every request (3,000 connections + wrk + iperf3), and podlb counted
        // the frames it received and sent.
        let redirected = xdp_redirects(&lb);
        assert!(
            redirected > 3000 * 3,
            "only {redirected} frames redirected by XDP\n{}",
            podlb.log_tail(4000)
        );
        let m = podlb.metrics().unwrap();
        let rx = metric_sum(&m, "podlb_rx_packets_total");
        let tx = metric_sum(&m, "podlb_tx_packets_total");
        let ring = metric_value(&m, "podlb_drops_total", &[("reason", "rx_ring_full")]);
        eprintln!(
            "af_xdp: {redirected} frames redirected; podlb rx {rx} tx {tx}; rx_ring_full {ring:?}"
        );
        assert!(
            rx >= redirected as f64 && tx >= redirected as f64 * 0.9,
            "rx {rx} tx {tx}"
        );
        assert!(ring.is_some(), "no rx_ring_full counter in /metrics");
    }
    stop_podlb(&podlb);
    if backend == Some("af_xdp") {
        // The link detaches with podlb's last descriptor.
        assert!(
            !xdp_attached(&lb),
            "XDP program left on eth0 after podlb exited"
        );
    }
}

#[test]
fn forward_af_xdp_nat() {
    require_netns!("forward_af_xdp_nat");
    forwarding_with("af_packet", "nat", &[("backend", "af_xdp")]);
}

#[test]
fn forward_af_packet_nat_v3_tx_ring() {
    require_netns!("forward_af_packet_nat_v3_tx_ring");
    forwarding_with("af_packet", "nat", &[("rx_ring", "v3"), ("tx", "ring")]);
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
