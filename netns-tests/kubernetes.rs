//! Kubernetes mode against the fake API server (crates/lab/src/fakeapi.rs),
//! which listens on the client's address on the lab LAN.
//!
//! The Kubernetes tests run against the real control plane (realkube.rs);
//! the fake remains only for what the real one cannot be made to do, named
//! in each test: watch streams cut while the server stays up, 503s to
//! every request, and a log of podlb's requests (to count its lists). The
//! helpers here (Service objects, HTTP spread, kept connections) serve both.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use podlb::status::BackendState;
use podlb_lab::demo::{lab_topology, Attach, ConfigSpec, Podlb, BACKENDS, CLIENT};
use podlb_lab::netns::{self, HttpConn, Topology};

use crate::common::*;
use podlb_lab::fakeapi::FakeApi;

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
pub fn wait_for<T>(
    budget: &Budget,
    cap: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + budget.left(cap);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates Service "web" (podlb's class) in "default" and its slice over `eps`.
fn create_web(api: &FakeApi, eps: &[(Ipv4Addr, bool, bool)]) -> Value {
    api.create(
        "v1",
        "services",
        lb_service("default", "web", CLASS, json!({}), 80),
    )
    .unwrap();
    let sl = slice("default", "web", "web-1", eps, 80);
    api.create("discovery.k8s.io/v1", "endpointslices", sl.clone())
        .unwrap();
    sl
}

fn ingress_ip(api: &FakeApi, ns: &str, name: &str) -> Option<String> {
    api.get("v1", "services", ns, name)?
        .pointer("/status/loadBalancer/ingress/0/ip")?
        .as_str()
        .map(str::to_string)
}

/// Which backends answer `n` new connections through the VIP.
pub fn spread(client: &str, n: usize, budget: &Budget) -> HashMap<String, usize> {
    netns::http_get_many_until(client, vip(80), n, 8, true, budget.deadline())
        .unwrap_or_else(|e| panic!("HTTP through the VIP failed: {e}"))
}

/// Keep-alive connections opened through the VIP, and the backend each one
/// landed on.
pub fn open_conns(client: &str, n: usize) -> Vec<(HttpConn, String)> {
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
pub fn assert_conns_alive(
    conns: &mut [(HttpConn, String)],
    keep: impl Fn(&str) -> bool,
    when: &str,
) {
    let mut checked = 0;
    for (c, be) in conns.iter_mut().filter(|(_, be)| keep(be)) {
        let r = c
            .get("/", false)
            .unwrap_or_else(|e| panic!("{when}: a kept connection to {be} failed: {e}"));
        assert_eq!(
            r.body.trim(),
            be,
            "{when}: a kept connection moved backends"
        );
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
    let mut procs = start_backends(&topo);
    let api = start_api(&topo, CLIENT);
    let kubeconfig = topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "podlb-system").unwrap();
    let config = kube_config(&kubeconfig, None, extra);
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    Lab {
        topo,
        api,
        podlb,
        _log: LogOnPanic(procs),
    }
}

pub fn metric(p: &Podlb, name: &str) -> f64 {
    metric_sum(&p.metrics().unwrap(), name)
}

/// Fake only: the real API server cannot be told to cut its watch streams
/// while it stays up, nor to answer 503 to everything, and it keeps no log
/// of podlb's requests (the re-list is counted from it). The crash, restart
/// and compaction with the real thing: realkube.rs,
/// `realkube_apiserver_restart_and_compaction_relist_under_load`.
#[test]
fn k8s_watch_drop_and_410_relist_without_loss() {
    require_netns!("k8s_watch_drop_and_410_relist_without_loss");
    let budget = Budget::start();
    let l = lab("");
    let (api, client) = (&l.api, l.topo.ns("client"));
    let [b1, b2, _] = BACKENDS;
    create_web(api, &[(b1, true, false)]);
    wait_for(&budget, Duration::from_secs(15), "web's status", || {
        ingress_ip(api, "default", "web")
    });
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
            slice(
                "default",
                "web",
                "web-1",
                &[(b1, true, false), (b2, true, false)],
                80,
            ),
        );
        api.compact();
        std::thread::sleep(Duration::from_millis(1000));
        api.set_unavailable(false);
        h.join().unwrap()
    });
    assert_wrk_clean(&wrk);
    eprintln!(
        "wrk through watch drop, outage and 410: {} requests, 0 errors",
        wrk.requests
    );
    // Converged on the change made while podlb could not see the API.
    wait_for(
        &budget,
        Duration::from_secs(40),
        "be2 after the re-list",
        || {
            spread(client, 30, &budget)
                .contains_key("be2")
                .then_some(())
        },
    );
    let m = l.podlb.metrics().unwrap();
    let relists = metric_sum(&m, "podlb_k8s_relists_total");
    let errors = metric_sum(&m, "podlb_k8s_watch_errors_total");
    eprintln!("relists {relists}, watch errors {errors}");
    assert!(
        relists >= 1.0,
        "no re-list after 410:\n{}",
        l.podlb.log_tail(4000)
    );
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

// ---------------------------------------------------------------------------
// Helpers the real-control-plane tests (realkube.rs) share.

use podlb_lab::demo::VrrpSpec;

pub fn kube_config(
    kubeconfig: &std::path::Path,
    vrrp: Option<VrrpSpec>,
    extra: &str,
) -> ConfigSpec {
    let mut c = ConfigSpec::lab(Attach::from_name("af_packet").unwrap(), "nat");
    c.services.clear();
    c.vrrp = vrrp;
    c.extra = kube_table(kubeconfig, extra);
    c
}

/// Serves through the VIP (bounded retries while a takeover settles).
pub fn wait_served(client: &str, budget: &Budget, what: &str) {
    wait_for(budget, Duration::from_secs(15), what, || {
        netns::in_netns(client, || {
            HttpConn::connect(vip(80), Duration::from_millis(300))
                .and_then(|mut c| c.get("/", true))
                .is_ok_and(|r| r.status == 200)
        })
        .ok()
        .filter(|ok| *ok)
    });
}

pub fn lease_state(p: &Podlb) -> Option<String> {
    let lease = p.status().ok()?.kubernetes?.lease?;
    Some(lease.state.as_str().to_string())
}

pub fn wait_lease(p: &Podlb, want: &str, budget: &Budget) {
    wait_for(
        budget,
        Duration::from_secs(15),
        &format!("{} lease {want}", p.proc().label()),
        || (lease_state(p).as_deref() == Some(want)).then_some(()),
    );
}

/// `/status` health entry of `addr`: Some(up) once it is checked and the
/// published snapshot agrees (the backend is, or is no longer, "active").
pub fn health_up(p: &Podlb, addr: &str) -> Option<bool> {
    let st = p.status().ok()?;
    let up = st.health.iter().find(|e| e.addr.to_string() == addr)?.up;
    let active = st
        .backends()
        .any(|b| b.addr.to_string() == addr && b.state == BackendState::Active);
    (active == up).then_some(up)
}

/// A flannel Node: its VTEP address and MAC in the annotations flannel's
/// vxlan backend writes.
pub fn flannel_node(name: &str, vtep: Ipv4Addr, mac: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/public-ip": vtep.to_string(),
                "flannel.alpha.coreos.com/backend-data": format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"),
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            },
        },
    })
}
