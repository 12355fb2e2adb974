//! podlb's own backend health checks (AF_PACKET, full NAT, two backends):
//! when backend 1's server dies it is marked down and new connections all
//! reach backend 2; when the server returns, backend 1 is used again. And
//! without a health check, a backend refusing connections (RST to the SYN)
//! is held out while clients retry elsewhere.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podlb::status::BackendState;
use podlb_lab::demo::{lab_topology, metric_value, Attach, Podlb, BACKENDS};
use podlb_lab::netns::{self, Proc, Topology};

use crate::common::*;

/// A backend's HTTP server: an nginx process or the harness's built-in one.
enum Server {
    Nginx(Proc),
    /// Held for its `Drop`, which stops it.
    #[allow(dead_code)]
    Builtin(netns::HttpServer),
}

impl Server {
    fn start(topo: &Topology, i: usize, nginx: bool) -> Server {
        let (ns, name) = (topo.ns(&format!("be{i}")), format!("be{i}"));
        if nginx {
            Server::Nginx(start_nginx(topo, ns, &name, &name))
        } else {
            let s = netns::serve_http(ns, sa(Ipv4Addr::UNSPECIFIED, 80), &format!("{name}\n"))
                .unwrap_or_else(|e| panic!("built-in server on {name}: {e}"));
            Server::Builtin(s)
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Nginx(p) = self {
            p.stop(Duration::from_secs(5));
        }
    }
}

/// Waits (≤ 10 s) until `/status` shows backend `addr` health-`up` (or down)
/// and the published snapshot agrees (it is, or is no longer, "active").
fn wait_backend(podlb: &Podlb, addr: &str, up: bool, budget: &Budget) {
    let deadline = Instant::now() + budget.left(Duration::from_secs(10));
    loop {
        let st = podlb.status().expect("/status");
        let health = st
            .health
            .iter()
            .find(|e| e.addr.to_string() == addr)
            .map(|e| e.up);
        let active = st.services[0]
            .backends
            .iter()
            .any(|b| b.addr.to_string() == addr && b.state == BackendState::Active);
        if health == Some(up) && active == up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not {} within 10 s: {st:?}",
            if up { "up" } else { "down" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(check: &str, nginx: bool) {
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let mut be1 = Some(Server::start(&topo, 1, nginx));
    let _be2 = Server::start(&topo, 2, nginx);
    let mut config = lab_config(&attach, "nat", false);
    config.services[0].backends.truncate(2);
    config.services[0].health_check = Some(check.to_string());
    let podlb = start_podlb(&topo, &attach, &config);
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");
    let be1_addr = format!("{}:80", BACKENDS[0]);
    let get = |n: usize| -> HashMap<String, usize> {
        netns::http_get_many_until(client, vip(80), n, 4, true, budget.deadline())
            .unwrap_or_else(|e| panic!("HTTP through the VIP failed: {e}"))
    };

    // Both backends serve.
    let counts = get(100);
    assert!(
        counts.contains_key("be1") && counts.contains_key("be2"),
        "{counts:?}"
    );

    // Backend 1's server dies: it is marked down and left out.
    drop(be1.take());
    wait_backend(&podlb, &be1_addr, false, &budget);
    let counts = get(50);
    assert_eq!(counts, HashMap::from([("be2".to_string(), 50)]));
    let st = podlb.status().unwrap();
    let e = st
        .health
        .iter()
        .find(|e| e.addr.to_string() == be1_addr)
        .unwrap();
    assert!(e.failures >= 2 && e.last_error.is_some(), "{e:?}");

    // It comes back: used again.
    be1 = Some(Server::start(&topo, 1, nginx));
    wait_backend(&podlb, &be1_addr, true, &budget);
    let counts = get(100);
    assert!(
        counts.contains_key("be1") && counts.contains_key("be2"),
        "{counts:?}"
    );

    eprintln!("health {check}: after recovery {counts:?}");
    let m = podlb.metrics().unwrap();
    let labels = [("service", "web"), ("backend", be1_addr.as_str())];
    assert_eq!(
        metric_value(&m, "podlb_backend_health_up", &labels),
        Some(1.0),
        "{m}"
    );
    let fails = metric_value(
        &m,
        "podlb_health_checks_total",
        &[labels[0], labels[1], ("result", "fail")],
    );
    assert!(fails.is_some_and(|f| f >= 2.0), "{m}");
    assert!(podlb.proc().is_running(), "podlb exited during the test");
    stop_podlb(&podlb);
    drop(be1);
}

#[test]
fn health_http_nginx_down_and_up() {
    require_netns!("health_http_nginx_down_and_up");
    health(
        r#"{ kind = "http", path = "/", interval_ms = 200, timeout_ms = 100, rise = 2, fall = 2 }"#,
        true,
    );
}

#[test]
fn health_tcp_builtin_down_and_up() {
    require_netns!("health_tcp_builtin_down_and_up");
    health(
        r#"{ kind = "tcp", interval_ms = 200, timeout_ms = 100, rise = 2, fall = 2 }"#,
        false,
    );
}

/// Issue 7, a backend killed: with no health check at all, a backend whose
/// server is gone answers SYNs with a RST. podlb withholds it, holds the
/// backend out of new connections (`flows.refused_hold_s`), and the
/// client's SYN retransmission reaches another backend: no connection is
/// refused. After the hold the backend is tried again (held again while it
/// still refuses), and used once it serves.
#[test]
fn refused_connections_go_to_another_backend() {
    require_netns!("refused_connections_go_to_another_backend");
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let mut be1 = Some(Server::start(&topo, 1, false));
    let _be2 = Server::start(&topo, 2, false);
    let _be3 = Server::start(&topo, 3, false);
    let mut config = lab_config(&attach, "nat", false);
    config.extra = "[flows]\nrefused_hold_s = 2\n".into();
    let podlb = start_podlb(&topo, &attach, &config);
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");
    let be1_addr = format!("{}:80", BACKENDS[0]);
    let get = |n: usize| -> HashMap<String, usize> {
        netns::http_get_many_until(client, vip(80), n, 6, true, budget.deadline())
            .unwrap_or_else(|e| panic!("HTTP through the VIP failed: {e}"))
    };
    let counts = get(90);
    assert_eq!(counts.len(), 3, "all three serve: {counts:?}");

    // be1's server stops: its kernel refuses every SYN. Not one request fails.
    drop(be1.take());
    let t = Instant::now();
    let counts = get(120);
    let took = t.elapsed();
    assert!(!counts.contains_key("be1"), "{counts:?}");
    let m = podlb.metrics().unwrap();
    let refused = metric_value(&m, "podlb_drops_total", &[("reason", "backend_refused")]);
    assert!(refused.is_some_and(|r| r >= 1.0), "{m}");
    let refusals = metric_value(&m, "podlb_backend_refusals_total", &[]).unwrap_or(0.0);
    eprintln!(
        "refused: 120 new connections with be1 down in {:.2} s, none failed; {refusals} \
         refusal(s) withheld, spread {counts:?}",
        took.as_secs_f64()
    );

    // be1 serves again: once the hold is over it is used again.
    be1 = Some(Server::start(&topo, 1, false));
    let deadline = Instant::now() + budget.left(Duration::from_secs(10));
    loop {
        let st = podlb.status().unwrap();
        let held = st
            .refused_held
            .iter()
            .any(|e| e.backend.to_string() == be1_addr);
        if !held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "be1 still held: {:?}",
            st.refused_held
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts = get(90);
    assert!(counts.contains_key("be1"), "{counts:?}");
    assert!(podlb.proc().is_running());
    stop_podlb(&podlb);
    drop(be1);
}
