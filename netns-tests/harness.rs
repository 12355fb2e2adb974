//! Self-tests of the harness: they need no podlb and check that the
//! topology, the backends and the traffic tools work on their own, so a
//! failure of a podlb test points at podlb.

use std::time::Duration;

use podlb_lab::demo::{lab_topology, Attach, BACKENDS, CLIENT, LB};
use podlb_lab::netns;

use crate::common::*;

/// The lab comes up; nginx backends answer the client directly, on new and
/// on kept-alive connections; the built-in server answers too.
#[test]
fn harness_lab_nginx_reachable_directly() {
    require_netns!("harness_lab_nginx_reachable_directly");
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let procs: Vec<_> = (1..=3)
        .map(|i| {
            start_nginx(
                &topo,
                topo.ns(&format!("be{i}")),
                &format!("be{i}"),
                &format!("be{i}"),
            )
        })
        .collect();
    let _log = LogOnPanic(procs);
    let client = topo.ns("client");
    for (i, ip) in BACKENDS.iter().enumerate() {
        for new_connection in [true, false] {
            let counts = netns::http_get_many(client, sa(*ip, 80), 50, 4, new_connection).unwrap();
            assert_eq!(counts.get(&format!("be{}", i + 1)), Some(&50), "{counts:?}");
        }
    }
    // The lb host has its address, forwarding off, and a MAC.
    let lb = topo.ns("lb");
    let mac = netns::mac_of(lb, "eth0").unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    let fwd = netns::exec_ok(lb, &["cat", "/proc/sys/net/ipv4/ip_forward"]).unwrap();
    assert_eq!(fwd.trim(), "0");
    let addrs = netns::exec_ok(lb, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(addrs.contains(&format!("{LB}/24")), "{addrs}");
    // Built-in server, on the client itself.
    let srv = netns::serve_http(client, sa(CLIENT, 8080), "builtin\n").unwrap();
    let counts = netns::http_get_many(topo.ns("be1"), sa(CLIENT, 8080), 40, 4, false).unwrap();
    assert_eq!(counts.get("builtin"), Some(&40));
    assert!(srv.requests_served() >= 40);
}

/// wrk keep-alive and iperf3 work directly to a backend (the same commands
/// the podlb tests run through the VIP).
#[test]
fn harness_wrk_and_iperf3_direct() {
    require_netns!("harness_wrk_and_iperf3_direct");
    let budget = Budget::start();
    let attach = Attach::from_name("tap").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let be1 = topo.ns("be1");
    let ng = start_nginx(&topo, be1, "be1", "be1");
    let ip = start_iperf_server(&topo, be1);
    let _log = LogOnPanic(vec![ng, ip]);
    let r = run_wrk(topo.ns("client"), sa(BACKENDS[0], 80), 2, &budget);
    assert_wrk_clean(&r);
    let bps = run_iperf(topo.ns("client"), BACKENDS[0], 2, &budget);
    eprintln!(
        "direct: wrk {} requests in 2 s; iperf3 {:.1} Gbit/s",
        r.requests,
        bps / 1e9
    );
}

/// badframes.py sends its frames and they cross the bridge to the lb host
/// (its eth0 receive counter grows by at least as many frames).
#[test]
fn harness_badframes_reach_lb() {
    require_netns!("harness_badframes_reach_lb");
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let lb = topo.ns("lb");
    let mac = netns::mac_of(lb, "eth0").unwrap();
    let (rx0, _) = netns::link_packets(lb, "eth0").unwrap();
    // A packet socket on the lb's eth0 counts what podlb would see.
    let client_mac = netns::mac_of(topo.ns("client"), "eth0").unwrap();
    let script = test_file("badframes.py").display().to_string();
    let rx = topo
        .spawn(
            lb,
            "recv",
            &[
                "python3",
                "-u",
                &script,
                "--recv",
                "eth0",
                &client_mac,
                "2000",
                "20",
            ],
        )
        .unwrap();
    let ready = std::time::Instant::now() + Duration::from_secs(10);
    while !rx.log_tail(200).contains("ready") {
        assert!(
            std::time::Instant::now() < ready && rx.is_running(),
            "receiver: {}",
            rx.log_tail(2000)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = send_badframes(topo.ns("client"), &mac, 2000, 7);
    let sent = report["sent"].as_u64().unwrap();
    let rejected = report["rejected"].as_u64().unwrap();
    assert_eq!(sent + rejected, 2000, "{report}");
    assert!(sent >= 1800, "most kinds must be sendable: {report}");
    for (kind, s) in report["kinds"].as_object().unwrap() {
        if kind != "eth_runt" {
            assert!(
                s["sent"].as_u64().unwrap() > 0,
                "{kind} never sent: {report}"
            );
        }
    }
    // Allow a moment for the last frames to be counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (rx1, _) = netns::link_packets(lb, "eth0").unwrap();
        if rx1 - rx0 >= sent {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lb eth0 received {} of {sent} frames: {report}",
            rx1 - rx0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = rx.signal("INT");
    rx.wait_timeout(Duration::from_secs(5))
        .expect("receiver stops");
    let out = rx.log_tail(4000);
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("received"))
        .unwrap_or_else(|| panic!("receiver output: {out}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        v["received"].as_u64().unwrap() >= sent,
        "packet socket saw {} of {sent}: {report}",
        v["received"]
    );
}

/// Runs badframes.py in `ns` at `mac` / the VIP; returns its JSON report.
pub fn send_badframes(ns: &str, mac: &str, count: usize, seed: u64) -> serde_json::Value {
    send_badframes_with(ns, mac, count, seed, &[])
}

/// [`send_badframes`] with more options (`--kinds ...`, `--vrid N`, ...).
pub fn send_badframes_with(
    ns: &str,
    mac: &str,
    count: usize,
    seed: u64,
    options: &[&str],
) -> serde_json::Value {
    let script = test_file("badframes.py").display().to_string();
    let (vip, count, seed) = (
        podlb_lab::demo::VIP.to_string(),
        count.to_string(),
        seed.to_string(),
    );
    let mut args = vec!["python3", &script, "eth0", mac, &vip, &count, &seed];
    args.extend_from_slice(options);
    let out = netns::exec_timeout(ns, &args, Duration::from_secs(40)).expect("badframes.py ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "badframes.py failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("badframes.py output not JSON ({e}): {text}"))
}
