//! Kubernetes mode end to end: podlb (real data plane, in a namespace)
//! talks through a kubeconfig to the fake API server (netns-tests/fakeapi.rs),
//! which listens on the client's address on the lab LAN. Services of type
//! LoadBalancer and their EndpointSlices drive what podlb serves; status
//! and Events come back to the API.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use podlb::control::demo::{lab_topology, Attach, ConfigSpec, Podlb, BACKENDS, CLIENT, VIP};
use podlb::control::netns::{self, HttpConn, Topology};

use crate::common::*;
use crate::fakeapi::FakeApi;

const CLASS: &str = "podlb.io/vip";
const POOL: &str = "198.18.0.100/30";

/// The fake API on the client's LAN address, reachable from podlb's namespace.
pub fn start_api(topo: &Topology, host: Ipv4Addr) -> FakeApi {
    let listener = netns::in_netns(topo.ns("client"), move || {
        TcpListener::bind(SocketAddr::V4(SocketAddrV4::new(host, 0)))
    })
    .unwrap()
    .unwrap();
    FakeApi::from_listener(listener).unwrap()
}

/// A Service of type LoadBalancer with one TCP port.
pub fn lb_service(ns: &str, name: &str, class: &str, annotations: Value, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": ns, "annotations": annotations },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": class,
            "selector": { "app": name },
            "ports": [{ "name": "http", "protocol": "TCP", "port": port, "targetPort": "http" }],
        },
    })
}

/// An EndpointSlice of Service `svc`: (address, ready, terminating).
pub fn slice(ns: &str, svc: &str, name: &str, eps: &[(Ipv4Addr, bool, bool)], port: u16) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, ready, term)| {
            json!({
                "addresses": [ip.to_string()],
                "conditions": { "ready": ready, "serving": *ready || *term, "terminating": term },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": { "kubernetes.io/service-name": svc },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": "http", "protocol": "TCP", "port": port }],
    })
}

/// Replaces an object in the fake API (re-reading its resourceVersion).
pub fn put(api: &FakeApi, api_version: &str, resource: &str, mut obj: Value) {
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    api.update(api_version, resource, obj).unwrap();
}

/// podlb's `[kubernetes]` table for the fake API.
pub fn kube_table(kubeconfig: &std::path::Path, extra: &str) -> String {
    format!(
        "[kubernetes]\nkubeconfig = {:?}\nvip_pools = [{POOL:?}]\nnamespace = \"podlb-system\"\n{extra}",
        kubeconfig.display().to_string()
    )
}

/// Polls `f` every 50 ms until it returns Some, or panics with `what`.
pub fn wait_for<T>(budget: &Budget, cap: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + budget.left(cap);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ingress_ip(api: &FakeApi, ns: &str, name: &str) -> Option<String> {
    api.get("v1", "services", ns, name)?
        .pointer("/status/loadBalancer/ingress/0/ip")?
        .as_str()
        .map(str::to_string)
}

/// Which backends answer `n` new connections through the VIP.
fn spread(client: &str, n: usize, budget: &Budget) -> HashMap<String, usize> {
    netns::http_get_many_until(client, vip(80), n, 8, true, budget.deadline())
        .unwrap_or_else(|e| panic!("HTTP through the VIP failed: {e}"))
}

/// Keep-alive connections opened through the VIP, and the backend each one
/// landed on.
fn open_conns(client: &str, n: usize) -> Vec<(HttpConn, String)> {
    netns::in_netns(client, move || {
        (0..n)
            .map(|_| {
                let mut c = HttpConn::connect(vip(80), Duration::from_secs(3)).unwrap();
                let r = c.get("/", false).unwrap();
                (c, r.body.trim().to_string())
            })
            .collect::<Vec<_>>()
    })
    .unwrap()
}

/// Every kept connection still answers, from the backend it started on.
fn assert_conns_alive(conns: &mut [(HttpConn, String)], keep: impl Fn(&str) -> bool, when: &str) {
    let mut checked = 0;
    for (c, be) in conns.iter_mut().filter(|(_, be)| keep(be)) {
        let r = c
            .get("/", false)
            .unwrap_or_else(|e| panic!("{when}: a kept connection to {be} failed: {e}"));
        assert_eq!(r.body.trim(), be, "{when}: a kept connection moved backends");
        checked += 1;
    }
    eprintln!("{when}: {checked} kept connections still served by their backends");
}

struct Lab {
    topo: Topology,
    api: FakeApi,
    podlb: Podlb,
    _log: LogOnPanic,
}

fn lab(extra: &str) -> Lab {
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let mut procs = Vec::new();
    for i in 1..=3 {
        let ns = topo.ns(&format!("be{i}")).to_string();
        procs.push(start_nginx(&topo, &ns, &format!("be{i}"), &format!("be{i}")));
    }
    let api = start_api(&topo, CLIENT);
    let kubeconfig = topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "podlb-system").unwrap();
    let mut config = ConfigSpec::lab(attach.clone(), "nat");
    config.services.clear();
    config.extra = kube_table(&kubeconfig, extra);
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    Lab {
        topo,
        api,
        podlb,
        _log: LogOnPanic(procs),
    }
}

fn metric(p: &Podlb, name: &str) -> f64 {
    metric_sum(&p.metrics().unwrap(), name)
}

#[test]
fn k8s_service_and_endpoints_drive_the_data_plane() {
    require_netns!("k8s_service_and_endpoints_drive_the_data_plane");
    let budget = Budget::start();
    let l = lab("");
    let (api, client) = (&l.api, l.topo.ns("client"));
    let [b1, b2, b3] = BACKENDS;
    api.create("v1", "services", lb_service("default", "web", CLASS, json!({}), 80))
        .unwrap();
    let mut sl = slice("default", "web", "web-abc", &[(b1, true, false), (b2, true, false)], 80);
    api.create("discovery.k8s.io/v1", "endpointslices", sl.clone()).unwrap();

    // Served on the first pool address, and the status says so.
    let ip = wait_for(&budget, Duration::from_secs(15), "status.loadBalancer.ingress", || {
        ingress_ip(api, "default", "web")
    });
    assert_eq!(ip, VIP.to_string());
    let counts = wait_for(&budget, Duration::from_secs(10), "traffic on be1 and be2", || {
        let c = spread(client, 40, &budget);
        (c.len() == 2).then_some(c)
    });
    assert!(counts.contains_key("be1") && counts.contains_key("be2"), "{counts:?}");
    let mut conns = open_conns(client, 24);

    // A third endpoint: new connections reach it, kept ones stay put.
    sl["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "addresses": [b3.to_string()], "conditions": { "ready": true } }));
    put(api, "discovery.k8s.io/v1", "endpointslices", sl.clone());
    wait_for(&budget, Duration::from_secs(10), "traffic on be3", || {
        spread(client, 30, &budget).contains_key("be3").then_some(())
    });
    assert_conns_alive(&mut conns, |_| true, "after adding be3");
    conns.extend(open_conns(client, 24));
    assert!(conns.iter().any(|(_, be)| be == "be3"));

    // be1 not ready: no new connections to it; kept ones (to every backend:
    // be1 drains) keep working.
    sl = slice("default", "web", "web-abc", &[(b1, false, false), (b2, true, false), (b3, true, false)], 80);
    put(api, "discovery.k8s.io/v1", "endpointslices", sl);
    wait_for(&budget, Duration::from_secs(10), "be1 out of rotation", || {
        (!spread(client, 60, &budget).contains_key("be1")).then_some(())
    });
    assert_conns_alive(&mut conns, |_| true, "after be1 became unready");

    // be2 removed outright: only be3 gets new connections.
    sl = slice("default", "web", "web-abc", &[(b1, false, true), (b3, true, false)], 80);
    put(api, "discovery.k8s.io/v1", "endpointslices", sl);
    let only3 = wait_for(&budget, Duration::from_secs(10), "only be3", || {
        let c = spread(client, 40, &budget);
        (c.len() == 1 && c.contains_key("be3")).then_some(c)
    });
    assert_eq!(only3.get("be3"), Some(&40));
    assert_conns_alive(&mut conns, |be| be == "be3", "after be2 was removed");

    // The API event → first packet figure, for docs/benchmarks.md.
    let st = l.podlb.status().unwrap();
    let k = &st["kubernetes"];
    eprintln!(
        "watch event → first packet: {} updates, mean {:?} ms (publish mean {:?} ms)",
        k["updates"], k["update_mean_ms"], k["publish_mean_ms"]
    );
    assert!(k["updates"].as_u64().unwrap_or(0) >= 1, "no update was timed: {k}");
    assert!(k["status_writes"].as_u64().unwrap() >= 1);
    assert_eq!(k["allocations"][0]["vip"], VIP.to_string());
    assert!(metric(&l.podlb, "podlb_k8s_update_seconds_count") >= 1.0);
    stop_podlb(&l.podlb);
}

#[test]
fn k8s_foreign_class_ignored_and_bad_vip_refused() {
    require_netns!("k8s_foreign_class_ignored_and_bad_vip_refused");
    let budget = Budget::start();
    let l = lab("");
    let (api, client) = (&l.api, l.topo.ns("client"));
    let [b1, b2, _] = BACKENDS;
    api.create("v1", "services", lb_service("default", "web", CLASS, json!({}), 80))
        .unwrap();
    api.create(
        "discovery.k8s.io/v1",
        "endpointslices",
        slice("default", "web", "web-1", &[(b1, true, false)], 80),
    )
    .unwrap();
    // Another controller's Service, and one asking for a VIP outside the pool.
    api.create("v1", "services", lb_service("default", "other", "example.com/lb", json!({}), 80))
        .unwrap();
    api.create(
        "discovery.k8s.io/v1",
        "endpointslices",
        slice("default", "other", "other-1", &[(b2, true, false)], 80),
    )
    .unwrap();
    api.create(
        "v1",
        "services",
        lb_service("team-a", "wants", CLASS, json!({ "podlb.io/vip": "198.18.7.7" }), 80),
    )
    .unwrap();

    wait_for(&budget, Duration::from_secs(15), "web's status", || ingress_ip(api, "default", "web"));
    let ev = wait_for(&budget, Duration::from_secs(10), "a VIPOutsidePool Event", || {
        api.list("v1", "events", Some("team-a"))
            .into_iter()
            .find(|e| e["reason"] == "VIPOutsidePool")
    });
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["name"], "wants");
    assert!(ev["message"].as_str().unwrap().contains("198.18.7.7"), "{ev}");
    // Nothing written for the others; web still serves.
    assert_eq!(ingress_ip(api, "default", "other"), None);
    assert_eq!(ingress_ip(api, "team-a", "wants"), None);
    let c = spread(client, 20, &budget);
    assert_eq!(c.get("be1"), Some(&20), "{c:?}");
    let st = l.podlb.status().unwrap();
    assert_eq!(st["kubernetes"]["ignored"], 1, "{}", st["kubernetes"]);
    assert_eq!(st["kubernetes"]["problems"][0]["reason"], "VIPOutsidePool");
    // One Event per problem, not one per reconcile.
    std::thread::sleep(Duration::from_millis(500));
    let n = api
        .list("v1", "events", Some("team-a"))
        .iter()
        .filter(|e| e["reason"] == "VIPOutsidePool")
        .count();
    assert_eq!(n, 1);
    stop_podlb(&l.podlb);
}

#[test]
fn k8s_watch_drop_and_410_relist_without_loss() {
    require_netns!("k8s_watch_drop_and_410_relist_without_loss");
    let budget = Budget::start();
    let l = lab("");
    let (api, client) = (&l.api, l.topo.ns("client"));
    let [b1, b2, _] = BACKENDS;
    api.create("v1", "services", lb_service("default", "web", CLASS, json!({}), 80))
        .unwrap();
    api.create(
        "discovery.k8s.io/v1",
        "endpointslices",
        slice("default", "web", "web-1", &[(b1, true, false)], 80),
    )
    .unwrap();
    wait_for(&budget, Duration::from_secs(15), "web's status", || ingress_ip(api, "default", "web"));
    wait_for(&budget, Duration::from_secs(10), "traffic", || {
        spread(client, 5, &budget).contains_key("be1").then_some(())
    });
    // Load through the VIP during everything that follows.
    let wrk = std::thread::scope(|s| {
        let h = s.spawn(|| run_wrk(client, vip(80), 8, &budget));
        std::thread::sleep(Duration::from_millis(500));

        // 1. The watch streams cut: podlb watches again from where it was.
        api.drop_watches();
        std::thread::sleep(Duration::from_millis(1500));

        // 2. The API goes away; meanwhile the slice changes and the history
        // is compacted, so the resumed watch gets 410 Gone and podlb lists
        // again.
        api.set_unavailable(true);
        std::thread::sleep(Duration::from_millis(500));
        put(
            api,
            "discovery.k8s.io/v1",
            "endpointslices",
            slice("default", "web", "web-1", &[(b1, true, false), (b2, true, false)], 80),
        );
        api.compact();
        std::thread::sleep(Duration::from_millis(1000));
        api.set_unavailable(false);
        h.join().unwrap()
    });
    assert_wrk_clean(&wrk);
    eprintln!("wrk through watch drop, outage and 410: {} requests, 0 errors", wrk.requests);
    // Converged on the change made while podlb could not see the API.
    wait_for(&budget, Duration::from_secs(40), "be2 after the re-list", || {
        spread(client, 30, &budget).contains_key("be2").then_some(())
    });
    let m = l.podlb.metrics().unwrap();
    let relists = metric_sum(&m, "podlb_k8s_relists_total");
    let errors = metric_sum(&m, "podlb_k8s_watch_errors_total");
    eprintln!("relists {relists}, watch errors {errors}");
    assert!(relists >= 1.0, "no re-list after 410:\n{}", l.podlb.log_tail(4000));
    assert!(errors >= 1.0);
    // The slices were listed again (not only watched).
    let lists = l
        .api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/endpointslices") && !r.query.contains("watch=true"))
        .count();
    assert!(lists >= 2, "EndpointSlices listed {lists} times");
    stop_podlb(&l.podlb);
}
