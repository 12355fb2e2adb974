//! Malformed and truncated frames at podlb's MAC are counted as drops and
//! podlb keeps serving.

use std::time::{Duration, Instant};

use podlb_lab::demo::{lab_topology, Attach};
use podlb_lab::netns;

use crate::common::*;
use crate::harness::send_badframes;

#[test]
fn malformed_frames_are_counted_drops() {
    require_netns!("malformed_frames_are_counted_drops");
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let _servers: Vec<_> = (1..=3)
        .map(|i| {
            netns::serve_http(
                topo.ns(&format!("be{i}")),
                sa(std::net::Ipv4Addr::UNSPECIFIED, 80),
                &format!("be{i}\n"),
            )
            .unwrap()
        })
        .collect();
    let podlb = start_podlb(&topo, &attach, &lab_config(&attach, "nat", false));
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");
    // Traffic works first (this also settles ARP both ways).
    netns::http_get_many_until(client, vip(80), 10, 2, true, budget.deadline()).unwrap();
    // In AF_PACKET mode podlb's MAC is eth0's.
    let mac = netns::mac_of(topo.ns("lb"), "eth0").unwrap();
    let before = metric_sum(&podlb.metrics().unwrap(), "podlb_drops_total");

    let report = send_badframes(client, &mac, 2000, 1);
    let sent = report["sent"].as_u64().unwrap() as f64;
    assert!(sent >= 1800.0, "{report}");

    let deadline = Instant::now() + budget.left(Duration::from_secs(5));
    let metrics = loop {
        let m = podlb.metrics().unwrap();
        if metric_sum(&m, "podlb_drops_total") - before >= sent || Instant::now() >= deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let grew = metric_sum(&metrics, "podlb_drops_total") - before;
    let reasons: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("podlb_drops_total"))
        .collect();
    assert!(
        grew >= sent,
        "drops grew by {grew}, {sent} frames sent; {reasons:#?}\n{report}"
    );

    assert!(podlb.proc().is_running(), "podlb died on malformed input");
    let counts =
        netns::http_get_many_until(client, vip(80), 30, 3, true, budget.deadline()).unwrap();
    assert_eq!(counts.values().sum::<usize>(), 30);
    stop_podlb(&podlb);
}
