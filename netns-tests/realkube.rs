//! Against the real Kubernetes control plane (issue 14): etcd,
//! kube-apiserver, kube-controller-manager and kube-proxy built from the
//! upstream modules (netns-tests/kube/), in lab namespaces.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use podlb_lab::kube::{self, KubeCluster};
use podlb_lab::netns::Topology;

use crate::common::*;

/// The control plane's host on the lab LAN.
pub const KCTL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);

/// Skips (passing, with the reason) when the binaries are not built.
macro_rules! require_kube {
    ($name:expr) => {
        require_netns!($name);
        if !podlb_lab::kube::available() {
            // CI builds them first (netns-tests/deps.sh): missing there is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "the Kubernetes binaries are missing in CI: {}",
                podlb_lab::kube::bin_dir().display()
            );
            eprintln!(
                "SKIP {}: the Kubernetes binaries are not in {} (netns-tests/deps.sh builds them)",
                $name,
                podlb_lab::kube::bin_dir().display()
            );
            return;
        }
    };
}

#[test]
fn kube_control_plane_derives_slices_and_enforces_rbac() {
    require_kube!("kube_control_plane_derives_slices_and_enforces_rbac");
    let mut topo = Topology::new().unwrap();
    topo.add_host("kctl", KCTL).unwrap();
    let k = KubeCluster::start(&topo, "kctl").unwrap();
    eprintln!(
        "control plane {} up ({} / etcd {})",
        k.server(),
        kube::K8S_VERSION,
        kube::ETCD_VERSION
    );

    // podlb's RBAC, applied from the manifests as a user would.
    let deploy = test_file("../deploy/kubernetes");
    k.kubectl(&[
        "apply",
        "-f",
        &deploy.join("namespace.yaml").display().to_string(),
    ])
    .unwrap();
    k.kubectl(&[
        "apply",
        "-f",
        &deploy.join("rbac.yaml").display().to_string(),
    ])
    .unwrap();
    let token = k.token("podlb-system", "podlb").unwrap();
    let kc = k.dir().join("podlb.kubeconfig");
    k.write_kubeconfig(&kc, &token, "podlb-system").unwrap();
    assert!(k.kubectl_as(&kc, &["get", "services", "-A"]).is_ok());
    let denied = k
        .kubectl_as(&kc, &["get", "secrets", "-A"])
        .unwrap_err()
        .to_string();
    assert!(denied.contains("forbidden"), "{denied}");

    // Pods through the API, their status set as a kubelet would; the real
    // EndpointSlice controller derives the slice.
    k.add_node("node-be", Ipv4Addr::new(198, 18, 0, 21))
        .unwrap();
    k.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    for (i, ip) in [
        (1, Ipv4Addr::new(198, 18, 0, 21)),
        (2, Ipv4Addr::new(198, 18, 0, 22)),
    ] {
        let name = format!("web-{i}");
        k.add_pod("default", &name, &json!({"app": "web"}), "node-be")
            .unwrap();
        k.set_pod("default", &name, ip, i == 1).unwrap();
    }
    let budget = Budget::start();
    let slice = crate::kubernetes::wait_for(
        &budget,
        std::time::Duration::from_secs(20),
        "the slice",
        || {
            let v = k
                .get_json(&[
                    "endpointslices",
                    "-n",
                    "default",
                    "-l",
                    "kubernetes.io/service-name=web",
                ])
                .ok()?;
            let eps = v["items"][0]["endpoints"].as_array()?.clone();
            (eps.len() == 2).then_some(eps)
        },
    );
    let ready: Vec<bool> = slice
        .iter()
        .map(|e| e["conditions"]["ready"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(ready.iter().filter(|r| **r).count(), 1, "{slice:?}");
}

// ---------------------------------------------------------------------------
// podlb against the real control plane.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use podlb::status::KubeStatus;
use podlb_lab::demo::{lab_topology, Attach, ConfigSpec, Podlb, BACKENDS, CLIENT, LB, LB2, VIP};
use podlb_lab::netns::{self, Proc};

use crate::kubernetes::{
    assert_conns_alive, health_up, kube_table, lb_service, metric, open_conns, spread, wait_for,
    wait_lease, wait_served,
};

const CLASS: &str = "podlb.io/vip";
/// The Node the backend Pods are bound to (a Pod enters a slice only with
/// a nodeName of a registered Node).
const NODE_BE: &str = "node-be";
/// Room for the control plane's start besides the test itself.
const KUBE_BUDGET: Duration = Duration::from_secs(150);

/// A running control plane with podlb's namespace and RBAC applied from
/// deploy/kubernetes/, and a kubeconfig holding the `podlb` ServiceAccount's
/// token (so podlb has exactly the rights the manifests grant).
struct Cluster {
    k: KubeCluster,
    kubeconfig: PathBuf,
}

fn deploy_file(name: &str) -> String {
    test_file("../deploy/kubernetes")
        .join(name)
        .display()
        .to_string()
}

/// Adds host "kctl" to `topo` and starts the control plane there.
fn cluster(topo: &mut Topology) -> Cluster {
    cluster_with(topo, KubeCluster::start)
}

/// [`cluster`] with the control plane `start` starts (single- or
/// dual-stack).
fn cluster_with(
    topo: &mut Topology,
    start: fn(&Topology, &str) -> Result<KubeCluster, kube::KubeError>,
) -> Cluster {
    topo.add_host("kctl", KCTL).unwrap();
    let t0 = Instant::now();
    let k = start(topo, "kctl").unwrap();
    for f in ["namespace.yaml", "rbac.yaml", "crd-vippool.yaml"] {
        k.kubectl(&["apply", "-f", &deploy_file(f)]).unwrap();
    }
    k.kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=20s",
        "crd/vippools.podlb.io",
    ])
    .unwrap();
    let token = k.token("podlb-system", "podlb").unwrap();
    let kubeconfig = topo.dir().join("podlb.kubeconfig");
    k.write_kubeconfig(&kubeconfig, &token, "podlb-system")
        .unwrap();
    k.add_node(NODE_BE, BACKENDS[0]).unwrap();
    eprintln!(
        "control plane {} ({} / etcd {}) up in {:?}",
        k.server(),
        kube::K8S_VERSION,
        kube::ETCD_VERSION,
        t0.elapsed()
    );
    Cluster { k, kubeconfig }
}

/// The control plane's processes, for [`LogOnPanic`].
fn kube_procs(topo: &Topology) -> Vec<Proc> {
    topo.procs()
        .into_iter()
        .filter(|p| p.label().starts_with("kube") || p.label() == "etcd")
        .collect()
}

/// Pod `web-<i>` (i in 1..=3) of Service "web": backend `be<i>`'s address.
fn web_pod(k: &KubeCluster, i: usize, ready: bool) {
    let name = format!("web-{i}");
    k.add_pod("default", &name, &json!({ "app": "web" }), NODE_BE)
        .unwrap();
    k.set_pod("default", &name, BACKENDS[i - 1], ready).unwrap();
}

fn set_ready(k: &KubeCluster, i: usize, ready: bool) {
    k.set_pod("default", &format!("web-{i}"), BACKENDS[i - 1], ready)
        .unwrap();
}

/// `status.loadBalancer.ingress[0]` of Service `ns/name`.
fn ingress(k: &KubeCluster, ns: &str, name: &str) -> Option<Value> {
    k.get_json(&["service", name, "-n", ns])
        .ok()?
        .pointer("/status/loadBalancer/ingress/0")
        .cloned()
}

fn ingress_ip(k: &KubeCluster, ns: &str, name: &str) -> Option<String> {
    ingress(k, ns, name)?["ip"].as_str().map(str::to_string)
}

/// The endpoints of web's (first) EndpointSlice, as the controller wrote them.
fn web_endpoints(k: &KubeCluster) -> Option<Vec<Value>> {
    let v = k
        .get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"])
        .ok()?;
    v["items"][0]["endpoints"].as_array().cloned()
}

/// The Events with `reason` in namespace `ns`.
fn events(k: &KubeCluster, ns: &str, reason: &str) -> Vec<Value> {
    let sel = format!("reason={reason}");
    k.get_json(&["events", "-n", ns, "--field-selector", &sel])
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// The single-instance lab: client, lb, be1..be3 (nginx answering its
/// name), the control plane on "kctl", podlb in Kubernetes mode.
struct Lab {
    _log: LogOnPanic,
    podlb: Podlb,
    attach: Attach,
    config: ConfigSpec,
    c: Cluster,
    topo: Topology,
}

fn lab(extra: &str) -> Lab {
    let attach = Attach::from_name("af_packet").unwrap();
    let mut topo = lab_topology(&attach).unwrap();
    let c = cluster(&mut topo);
    let mut procs = kube_procs(&topo);
    procs.extend(start_backends(&topo));
    let config = kube_config(&c.kubeconfig, None, extra);
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    Lab {
        _log: LogOnPanic(procs),
        podlb,
        attach,
        config,
        c,
        topo,
    }
}

/// Service "web" of podlb's class, Pods web-1..web-`n` ready.
fn create_web(k: &KubeCluster, n: usize) {
    k.apply(&lb_service("default", "web", CLASS, json!({}), 80))
        .unwrap();
    for i in 1..=n {
        web_pod(k, i, true);
    }
}

fn kube_status(p: &Podlb) -> KubeStatus {
    p.status()
        .unwrap()
        .kubernetes
        .expect("a kubernetes section")
}

/// Waits for web's VIP in its status and checks the ipMode.
fn wait_web_status(k: &KubeCluster, budget: &Budget) -> Value {
    let ing = wait_for(
        budget,
        Duration::from_secs(30),
        "status.loadBalancer.ingress",
        || ingress(k, "default", "web").filter(|i| i["ip"].is_string()),
    );
    assert_eq!(ing["ip"], VIP.to_string(), "{ing}");
    assert_eq!(ing["ipMode"], "Proxy", "{ing}");
    ing
}

/// Flows of podlb's table from `client` to the VIP, by backend address.
fn flows_by_backend(p: &Podlb, client: Ipv4Addr) -> Vec<std::net::IpAddr> {
    p.flows(10_000)
        .unwrap()
        .flows
        .iter()
        .filter(|f| f.client.ip() == client && f.vip.ip() == VIP)
        .map(|f| f.backend.ip())
        .collect()
}

#[test]
fn realkube_service_pods_readiness_scale_and_drain() {
    require_kube!("realkube_service_pods_readiness_scale_and_drain");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab("");
    let (k, client) = (&l.c.k, l.topo.ns("client"));
    let [b1, b2, _] = BACKENDS;
    create_web(k, 2);

    let ing = wait_web_status(k, &budget);
    eprintln!("web's status from podlb: {ing}");
    let counts = wait_for(&budget, Duration::from_secs(20), "be1 and be2", || {
        let c = spread(client, 40, &budget);
        (c.len() == 2).then_some(c)
    });
    assert!(counts.contains_key("be1") && counts.contains_key("be2"));
    let mut conns = open_conns(client, 24);
    // The connections are podlb's: its flow table holds them.
    let fl = flows_by_backend(&l.podlb, CLIENT);
    assert!(fl.len() >= 24, "podlb's /flows: {fl:?}");
    assert!(fl.iter().all(|b| [b1, b2].iter().any(|x| b == x)), "{fl:?}");

    // Scale up: web-3 becomes ready, new connections reach it.
    web_pod(k, 3, false);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !spread(client, 30, &budget).contains_key("be3"),
        "an unready Pod got traffic"
    );
    set_ready(k, 3, true);
    wait_for(&budget, Duration::from_secs(15), "traffic on be3", || {
        spread(client, 30, &budget)
            .contains_key("be3")
            .then_some(())
    });
    assert_conns_alive(&mut conns, |_| true, "after scaling up");
    conns.extend(open_conns(client, 24));

    // Readiness flipped off: be1 leaves the rotation, its connections stay.
    set_ready(k, 1, false);
    wait_for(
        &budget,
        Duration::from_secs(15),
        "be1 out of rotation",
        || (!spread(client, 60, &budget).contains_key("be1")).then_some(()),
    );
    assert_conns_alive(&mut conns, |_| true, "after web-1 became unready");
    // And back on.
    set_ready(k, 1, true);
    wait_for(&budget, Duration::from_secs(15), "be1 back", || {
        spread(client, 60, &budget)
            .contains_key("be1")
            .then_some(())
    });

    // Rolling replacement: web-2 is deleted with a grace period. With no
    // kubelet it stays terminating, and the real EndpointSlice controller
    // marks its endpoint terminating (serving, not ready): podlb drains it.
    k.kubectl(&[
        "delete",
        "pod",
        "web-2",
        "--grace-period=300",
        "--wait=false",
    ])
    .unwrap();
    let sl = wait_for(
        &budget,
        Duration::from_secs(15),
        "web-2 terminating in the slice",
        || {
            let eps = web_endpoints(k)?;
            eps.iter()
                .any(|e| {
                    e["addresses"][0] == b2.to_string() && e["conditions"]["terminating"] == true
                })
                .then_some(eps)
        },
    );
    eprintln!("slice while web-2 terminates: {}", Value::Array(sl));
    wait_for(
        &budget,
        Duration::from_secs(15),
        "be2 draining in podlb",
        || {
            let k8s = kube_status(&l.podlb);
            k8s.draining
                .iter()
                .any(|d| d.endpoints.iter().any(|e| e.ip() == b2))
                .then_some(())
        },
    );
    let c = spread(client, 60, &budget);
    assert!(
        !c.contains_key("be2"),
        "a terminating endpoint got new connections: {c:?}"
    );
    assert_conns_alive(&mut conns, |_| true, "while web-2 terminates (be2 drains)");

    // The replacement web-2 is gone for good; be1 and be3 carry on.
    k.kubectl(&["delete", "pod", "web-2", "--grace-period=0", "--force"])
        .unwrap();
    // Scale down: web-3 deleted outright.
    k.kubectl(&["delete", "pod", "web-3", "--grace-period=0", "--force"])
        .unwrap();
    let only1 = wait_for(&budget, Duration::from_secs(15), "only be1", || {
        let c = spread(client, 40, &budget);
        (c.len() == 1 && c.contains_key("be1")).then_some(c)
    });
    assert_eq!(only1.get("be1"), Some(&40));
    assert_conns_alive(&mut conns, |be| be == "be1", "after scaling down to web-1");
    let ks = kube_status(&l.podlb);
    eprintln!(
        "watch event → first packet: {} updates, mean {:?} ms; {} status writes",
        ks.updates, ks.update_mean_ms, ks.status_writes
    );
    assert_eq!(ks.status_errors, 0, "{ks:?}");
    assert!(ks.updates >= 1 && ks.status_writes >= 1, "{ks:?}");
    assert_eq!(ks.allocations[0].vip, VIP);
    assert!(metric(&l.podlb, "podlb_k8s_update_seconds_count") >= 1.0);
    stop_podlb(&l.podlb);
}

/// Whether one request through the VIP from `client` is answered (300 ms).
fn answered(client: &str) -> bool {
    netns::in_netns(client, || {
        netns::HttpConn::connect(vip(80), Duration::from_millis(300))
            .and_then(|mut c| c.get("/", true))
            .is_ok_and(|r| r.status == 200)
    })
    .unwrap_or(false)
}

#[test]
fn realkube_source_ranges_and_client_affinity_in_the_data_plane() {
    require_kube!("realkube_source_ranges_and_client_affinity_in_the_data_plane");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab("");
    let (k, client) = (&l.c.k, l.topo.ns("client").to_string());
    create_web(k, 3);
    wait_web_status(k, &budget);
    let c = spread(&client, 60, &budget);
    assert_eq!(c.len(), 3, "spread by 5-tuple: {c:?}");
    // Only another network may connect: kube-proxy does not enforce this
    // for an ipMode Proxy VIP, so podlb does.
    let patch = |p: Value| {
        k.kubectl(&[
            "patch",
            "service",
            "web",
            "-n",
            "default",
            "--type=merge",
            "-p",
            &p.to_string(),
        ])
        .unwrap();
    };
    patch(json!({"spec": {"loadBalancerSourceRanges": ["198.19.250.0/24"]}}));
    wait_for(
        &budget,
        Duration::from_secs(15),
        "the client refused",
        || (!answered(&client)).then_some(()),
    );
    let text = l.podlb.metrics().unwrap();
    let dropped = podlb_lab::demo::metric_value(
        &text,
        "podlb_drops_total",
        &[("reason", "source_not_allowed")],
    )
    .unwrap_or(0.0);
    assert!(dropped >= 1.0, "source_not_allowed drops: {dropped}");
    // The client's network admitted, and ClientIP affinity: every
    // connection of the client to one backend.
    patch(
        json!({"spec": {"loadBalancerSourceRanges": ["198.18.0.0/24", "198.19.250.0/24"],
                          "sessionAffinity": "ClientIP"}}),
    );
    wait_served(&client, &budget, "the client admitted again");
    let c = spread(&client, 60, &budget);
    assert_eq!(c.len(), 1, "ClientIP affinity: {c:?}");
    stop_podlb(&l.podlb);
}

#[test]
fn realkube_vip_pools_from_the_crd() {
    require_kube!("realkube_vip_pools_from_the_crd");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab("vip_pool_crd = true\n");
    let k = &l.c.k;
    create_web(k, 1);
    wait_web_status(k, &budget);
    // The structural schema is the API server's: a malformed pool is refused.
    let bad = json!({"apiVersion": "podlb.io/v1alpha1", "kind": "VIPPool",
                     "metadata": {"name": "bad"}, "spec": {"addresses": ["not-an-address"]}});
    let e = k
        .apply(&bad)
        .expect_err("the API server accepted a malformed VIPPool");
    eprintln!("malformed VIPPool refused: {e}");
    // A Service asking for an address no pool has yet is refused ...
    k.kubectl(&["create", "namespace", "shop"]).unwrap();
    let mut front = lb_service(
        "shop",
        "front",
        CLASS,
        json!({ "podlb.io/vip": "198.18.0.201" }),
        80,
    );
    front["metadata"]["labels"] = json!({"tier": "front"});
    k.apply(&front).unwrap();
    let mut plain = lb_service(
        "shop",
        "plain",
        CLASS,
        json!({ "podlb.io/vip": "198.18.0.200" }),
        80,
    );
    plain["metadata"]["labels"] = json!({"tier": "back"});
    k.apply(&plain).unwrap();
    wait_for(
        &budget,
        Duration::from_secs(15),
        "VIPOutsidePool for shop/front",
        || {
            events(k, "shop", "VIPOutsidePool")
                .into_iter()
                .find(|e| e["involvedObject"]["name"] == "front")
        },
    );
    // ... until a VIPPool that serves it appears: the pool change is
    // reconciled at once.
    k.apply(
        &json!({"apiVersion": "podlb.io/v1alpha1", "kind": "VIPPool",
                    "metadata": {"name": "front"},
                    "spec": {"addresses": ["198.18.0.200-198.18.0.201"], "namespaces": ["shop"],
                             "serviceSelector": {"matchLabels": {"tier": "front"}}}}),
    )
    .unwrap();
    let pool = k.get_json(&["vippool", "front"]).unwrap();
    assert_eq!(
        pool["spec"]["autoAssign"], true,
        "the schema's default: {pool}"
    );
    let ing = wait_for(&budget, Duration::from_secs(15), "shop/front's VIP", || {
        ingress(k, "shop", "front").filter(|i| i["ip"].is_string())
    });
    assert_eq!(ing["ip"], "198.18.0.201", "{ing}");
    // The pool does not serve shop/plain (labels), so its request stays refused.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ingress(k, "shop", "plain"), None);
    let ks = kube_status(&l.podlb);
    assert!(
        ks.problems
            .iter()
            .any(|p| p.service.ends_with("plain") && p.reason == "VIPOutsidePool"),
        "{ks:?}"
    );
    // The pool goes: its Service loses the VIP (and says why).
    k.kubectl(&["delete", "vippool", "front"]).unwrap();
    wait_for(
        &budget,
        Duration::from_secs(15),
        "shop/front's VIP withdrawn",
        || ingress(k, "shop", "front").is_none().then_some(()),
    );
    stop_podlb(&l.podlb);
}

#[test]
fn realkube_foreign_class_ignored_and_bad_vip_refused_with_an_event() {
    require_kube!("realkube_foreign_class_ignored_and_bad_vip_refused_with_an_event");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab("");
    let (k, client) = (&l.c.k, l.topo.ns("client"));
    create_web(k, 1);
    // Another controller's Service, and one asking for a VIP outside the pool.
    k.apply(&lb_service(
        "default",
        "other",
        "example.com/lb",
        json!({}),
        80,
    ))
    .unwrap();
    k.kubectl(&["create", "namespace", "team-a"]).unwrap();
    let wants = json!({ "podlb.io/vip": "198.18.7.7" });
    k.apply(&lb_service("team-a", "wants", CLASS, wants, 80))
        .unwrap();
    wait_web_status(k, &budget);
    let events = || events(k, "team-a", "VIPOutsidePool");
    // The Event as the real API server stored it (it validates Events).
    let ev = wait_for(
        &budget,
        Duration::from_secs(15),
        "a VIPOutsidePool Event",
        || events().into_iter().next(),
    );
    eprintln!("podlb's Event: {ev}");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["name"], "wants");
    let uid = k.get_json(&["service", "wants", "-n", "team-a"]).unwrap()["metadata"]["uid"].clone();
    assert_eq!(ev["involvedObject"]["uid"], uid);
    assert!(
        ev["message"].as_str().unwrap().contains("198.18.7.7"),
        "{ev}"
    );
    assert_eq!(ingress(k, "default", "other"), None);
    assert_eq!(ingress(k, "team-a", "wants"), None);
    let c = spread(client, 20, &budget);
    assert_eq!(c.get("be1"), Some(&20), "{c:?}");
    let ks = kube_status(&l.podlb);
    // "other", and the API server's own default/kubernetes (ClusterIP).
    assert_eq!(ks.ignored, 2, "{ks:?}");
    assert_eq!(ks.problems[0].reason, "VIPOutsidePool");
    // One Event per problem, not one per reconcile.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(events().len(), 1);
    stop_podlb(&l.podlb);
}

#[test]
fn realkube_health_check_removes_and_restores_a_ready_pod() {
    require_kube!("realkube_health_check_removes_and_restores_a_ready_pod");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab(
        "[kubernetes.health_check]\nkind = \"http\"\npath = \"/\"\ninterval_ms = 200\ntimeout_ms = 100\nrise = 2\nfall = 2\n",
    );
    let (k, client) = (&l.c.k, l.topo.ns("client"));
    create_web(k, 2);
    wait_for(
        &budget,
        Duration::from_secs(20),
        "both backends in use",
        || (spread(client, 30, &budget).len() == 2).then_some(()),
    );
    let a1 = format!("{}:80", BACKENDS[0]);
    wait_for(&budget, Duration::from_secs(5), "be1 checked", || {
        health_up(&l.podlb, &a1)
    });
    // be1's server dies while its Pod stays Ready in the API.
    let be1 = l.topo.ns("be1");
    netns::kill_all_in(be1, Duration::from_secs(2));
    wait_for(&budget, Duration::from_secs(10), "be1 marked down", || {
        (health_up(&l.podlb, &a1) == Some(false)).then_some(())
    });
    let c = spread(client, 50, &budget);
    assert_eq!(c.get("be2"), Some(&50), "{c:?}");
    let _restarted = start_nginx(&l.topo, be1, "be1", "be1");
    wait_for(&budget, Duration::from_secs(10), "be1 up again", || {
        (health_up(&l.podlb, &a1) == Some(true)).then_some(())
    });
    wait_for(
        &budget,
        Duration::from_secs(10),
        "traffic on be1 again",
        || {
            spread(client, 40, &budget)
                .contains_key("be1")
                .then_some(())
        },
    );
    stop_podlb(&l.podlb);
}

/// dnsmasq in backend namespace `be<i>` on its address, port 53 UDP and
/// TCP, answering `who.podlb.test` with that address (so an answer names
/// the backend that gave it). Killed with the topology.
fn start_dnsmasq(topo: &Topology, i: usize) -> Proc {
    let ip = BACKENDS[i - 1];
    let ns = topo.ns(&format!("be{i}"));
    let label = format!("dnsmasq-be{i}");
    let pid = topo.dir().join(format!("{label}.pid"));
    let p = topo
        .spawn(
            ns,
            &label,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--log-facility=-",
                "--log-queries",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--port=53",
                &format!("--listen-address={ip}"),
                "--bind-interfaces",
                &format!("--address=/who.podlb.test/{ip}"),
                &format!("--pid-file={}", pid.display()),
                "--user=root",
            ],
        )
        .unwrap();
    netns::wait_listening(ns, 53, Duration::from_secs(10), Some(&p))
        .unwrap_or_else(|e| panic!("dnsmasq in be{i} did not start: {e}"));
    p
}

/// `dig +short` for `who.podlb.test` at the VIP from `client` (one try of
/// 1 s), with `opts` (`+tcp`, `-b addr#port`): the A record, if answered.
fn dig_who(client: &str, opts: &[&str], budget: &Budget) -> Option<Ipv4Addr> {
    let server = format!("@{VIP}");
    let mut args = vec!["dig", "+short", "+time=1", "+tries=1"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[&server, "who.podlb.test", "A"]);
    let out = netns::exec_timeout(client, &args, budget.left(Duration::from_secs(5))).ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
}

#[test]
fn realkube_tcp_and_udp_port_53_both_forwarded() {
    require_kube!("realkube_tcp_and_udp_port_53_both_forwarded");
    let budget = Budget::with(KUBE_BUDGET);
    let mut l = lab("");
    for i in 1..=3 {
        let p = start_dnsmasq(&l.topo, i);
        l._log.0.push(p);
    }
    let (k, client) = (&l.c.k, l.topo.ns("client").to_string());
    // One Service, DNS on TCP 53 and UDP 53 (as CoreDNS's kube-dns).
    k.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer", "loadBalancerClass": CLASS,
            "selector": {"app": "dns"},
            "ports": [
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53},
            ],
        },
    }))
    .unwrap();
    for i in 1..=3 {
        let name = format!("dns-{i}");
        k.add_pod("default", &name, &json!({"app": "dns"}), NODE_BE)
            .unwrap();
        k.set_pod("default", &name, BACKENDS[i - 1], true).unwrap();
    }
    let ing = wait_for(&budget, Duration::from_secs(30), "dns's VIP", || {
        ingress(k, "default", "dns").filter(|i| i["ip"].is_string())
    });
    assert_eq!(ing["ip"], VIP.to_string(), "{ing}");
    // The real EndpointSlice controller's ports, each with its protocol.
    let sl = k
        .get_json(&["endpointslices", "-l", "kubernetes.io/service-name=dns"])
        .unwrap();
    eprintln!("dns's slice ports: {}", sl["items"][0]["ports"]);
    // Both services in podlb, on VIP:53, with the three Pods.
    const UDP_NAME: &str = "default.dns.dns.udp";
    const TCP_NAME: &str = "default.dns.dns-tcp";
    wait_for(
        &budget,
        Duration::from_secs(20),
        "both services with 3 backends",
        || {
            let st = l.podlb.status().ok()?;
            let full = |n: &str| {
                st.services
                    .iter()
                    .any(|s| s.name == n && s.vip == VIP && s.port == 53 && s.backends.len() == 3)
            };
            (full(UDP_NAME) && full(TCP_NAME)).then_some(())
        },
    );
    let ks = kube_status(&l.podlb);
    assert!(ks.problems.is_empty(), "{ks:?}");

    // UDP: a first answer, then one query per source port.
    let first = wait_for(&budget, Duration::from_secs(15), "a UDP answer", || {
        dig_who(&client, &[], &budget)
    });
    assert!(BACKENDS.contains(&first), "UDP answer {first}");
    let mut udp = std::collections::BTreeMap::new();
    let ports: Vec<u16> = (20001..=20024).collect();
    for p in &ports {
        let src = format!("{CLIENT}#{p}");
        let a = dig_who(&client, &["-b", &src], &budget).unwrap_or_else(|| {
            panic!(
                "no UDP answer from source port {p}; podlb drops: {:?}",
                drops(&l.podlb)
            )
        });
        assert!(BACKENDS.contains(&a), "UDP answer {a} from port {p}");
        *udp.entry(a).or_insert(0) += 1;
    }
    eprintln!("UDP answers by backend: {udp:?}");
    assert!(udp.len() > 1, "every UDP flow went to one backend: {udp:?}");
    // The same 5-tuple again: the same backend (the flow is kept).
    let again = dig_who(&client, &["-b", &format!("{CLIENT}#{}", ports[0])], &budget);
    let flows = l.podlb.flows(10_000).unwrap().flows;
    let udp_flows: Vec<_> = flows.iter().filter(|f| f.service == UDP_NAME).collect();
    let of_port = |p: u16| {
        udp_flows
            .iter()
            .find(|f| f.client.port() == p && f.client.ip() == CLIENT)
            .map(|f| f.backend.ip())
    };
    assert!(
        ports.iter().all(|p| of_port(*p).is_some()),
        "podlb's UDP flows: {udp_flows:?}"
    );
    assert_eq!(
        again.map(std::net::IpAddr::V4),
        of_port(ports[0]),
        "{udp_flows:?}"
    );

    // TCP: the same name over TCP 53 of the same VIP.
    let mut tcp = std::collections::BTreeMap::new();
    for _ in 0..12 {
        let a = dig_who(&client, &["+tcp"], &budget)
            .unwrap_or_else(|| panic!("no TCP answer; podlb drops: {:?}", drops(&l.podlb)));
        assert!(BACKENDS.contains(&a), "TCP answer {a}");
        *tcp.entry(a).or_insert(0) += 1;
    }
    eprintln!("TCP answers by backend: {tcp:?}");
    // Each protocol's service counted its own flows.
    let st = l.podlb.status().unwrap();
    let new_flows = |n: &str| -> u64 {
        st.services
            .iter()
            .filter(|s| s.name == n)
            .flat_map(|s| s.backends.iter().map(|b| b.new_flows))
            .sum()
    };
    assert!(new_flows(TCP_NAME) >= 12, "{:?}", st.services);
    assert!(new_flows(UDP_NAME) >= 25, "{:?}", st.services);
    let datagrams = metric(&l.podlb, "podlb_udp_datagrams_total");
    // A query and its answer per UDP lookup (25 of them at least).
    assert!(datagrams >= 50.0, "podlb_udp_datagrams_total {datagrams}");
    stop_podlb(&l.podlb);
}

/// podlb's nonzero drop counters, by reason (for a failure message).
fn drops(p: &Podlb) -> Vec<(String, f64)> {
    let text = p.metrics().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("podlb_drops_total{"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            let v: f64 = v.parse().ok()?;
            (v > 0.0).then(|| (k.to_string(), v))
        })
        .collect()
}

fn iptables_save(ns: &str) -> String {
    netns::exec_ok(ns, &["iptables-save"]).unwrap()
}

/// kube-proxy's rules (the `KUBE-*` chains) that name `ip`.
fn kube_rules_for(rules: &str, ip: Ipv4Addr) -> Vec<String> {
    let ip = format!("{ip}/32");
    rules
        .lines()
        .filter(|l| l.contains("KUBE") && l.contains(&ip))
        .map(str::to_string)
        .collect()
}

#[test]
fn realkube_kube_proxy_leaves_the_vip_to_podlb() {
    require_kube!("realkube_kube_proxy_leaves_the_vip_to_podlb");
    let budget = Budget::with(KUBE_BUDGET);
    let mut l = lab("");
    let (k, client) = (&l.c.k, l.topo.ns("client").to_string());
    create_web(k, 2);
    wait_web_status(k, &budget);
    // The client's namespace is a node: kube-proxy (iptables mode) runs there.
    let proxy = k.start_proxy(&l.topo, "client", "node-client").unwrap();
    l._log.0.push(proxy);
    let rules = wait_for(
        &budget,
        Duration::from_secs(30),
        "kube-proxy's rules for default/web",
        || {
            let r = iptables_save(&client);
            r.contains("default/web:http").then_some(r)
        },
    );
    let kube_lines = rules.lines().filter(|l| l.starts_with("-A KUBE")).count();
    let vip_rules = kube_rules_for(&rules, VIP);
    eprintln!(
        "ipMode Proxy: kube-proxy on node-client wrote {kube_lines} KUBE rules, {} for the VIP {VIP}:\n{}",
        vip_rules.len(),
        rules
            .lines()
            .filter(|l| l.contains("default/web"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        vip_rules.is_empty(),
        "kube-proxy took the VIP: {vip_rules:?}"
    );

    // A client on that node reaches the VIP through podlb: the connections
    // are in podlb's flow table.
    let c = spread(&client, 30, &budget);
    assert_eq!(c.values().sum::<usize>(), 30, "{c:?}");
    let conns = open_conns(&client, 8);
    let fl = flows_by_backend(&l.podlb, CLIENT);
    eprintln!(
        "podlb's /flows holds {} flows from the node's client",
        fl.len()
    );
    assert!(fl.len() >= 8, "{fl:?}");
    drop(conns);

    // The difference: with ipMode VIP (what podlb wrote before, and what a
    // server older than 1.30 means whatever podlb writes) kube-proxy DNATs
    // the VIP on the node itself. podlb is stopped so it cannot rewrite it.
    stop_podlb(&l.podlb);
    k.patch_status(
        "service",
        Some("default"),
        "web",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": VIP.to_string(), "ipMode": "VIP"}]}}}),
    )
    .unwrap();
    let vip_rules = wait_for(
        &budget,
        Duration::from_secs(30),
        "kube-proxy's rules for the VIP",
        || {
            let r = kube_rules_for(&iptables_save(&client), VIP);
            (!r.is_empty()).then_some(r)
        },
    );
    eprintln!(
        "ipMode VIP: kube-proxy's rules for {VIP}:\n{}",
        vip_rules.join("\n")
    );
    // podlb is not running, yet the node's client is answered: kube-proxy
    // took the traffic (no Maglev, health checks or flow sync).
    let c = spread(&client, 20, &budget);
    eprintln!("ipMode VIP, podlb stopped: the node's client still got {c:?}");
    assert_eq!(c.values().sum::<usize>(), 20, "{c:?}");

    // podlb back: it rewrites ipMode Proxy and kube-proxy lets go.
    let podlb = start_podlb(&l.topo, &l.attach, &l.config);
    l._log.0.push(podlb.proc().clone());
    wait_for(
        &budget,
        Duration::from_secs(30),
        "ipMode Proxy again",
        || (ingress(k, "default", "web")?["ipMode"] == "Proxy").then_some(()),
    );
    wait_for(
        &budget,
        Duration::from_secs(30),
        "kube-proxy to drop the VIP",
        || {
            kube_rules_for(&iptables_save(&client), VIP)
                .is_empty()
                .then_some(())
        },
    );
    let _c = open_conns(&client, 4);
    assert!(flows_by_backend(&podlb, CLIENT).len() >= 4);
    stop_podlb(&podlb);
}

/// Refuses (RST) new connections from podlb's host to the API server, while
/// the lab's own kubectl (on the API server's host) still gets through.
fn block_podlb(kctl: &str, on: bool) {
    let op = if on { "-I" } else { "-D" };
    netns::exec_ok(
        kctl,
        &[
            "iptables",
            op,
            "INPUT",
            "-s",
            &LB.to_string(),
            "-p",
            "tcp",
            "--dport",
            &kube::API_PORT.to_string(),
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )
    .unwrap();
}

#[test]
fn realkube_apiserver_restart_and_compaction_relist_under_load() {
    require_kube!("realkube_apiserver_restart_and_compaction_relist_under_load");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab("");
    let (k, client) = (&l.c.k, l.topo.ns("client"));
    let kctl = l.topo.ns("kctl");
    create_web(k, 1);
    wait_web_status(k, &budget);
    wait_for(&budget, Duration::from_secs(15), "traffic", || {
        spread(client, 5, &budget).contains_key("be1").then_some(())
    });
    let relists0 = metric(&l.podlb, "podlb_k8s_relists_total");
    let (wrk, t0) = std::thread::scope(|s| {
        let h = s.spawn(|| run_wrk(client, vip(80), 12, &budget));
        std::thread::sleep(Duration::from_millis(1000));
        // kube-apiserver crashes (SIGKILL): every watch of podlb breaks.
        k.stop_apiserver();
        // It comes back, but podlb cannot reach it yet; meanwhile web
        // scales up, and etcd is compacted past every revision podlb saw,
        // so its resumed watch gets 410 Gone and it has to list again.
        block_podlb(kctl, true);
        k.start_apiserver(&l.topo).unwrap();
        web_pod(k, 2, true);
        wait_for(
            &budget,
            Duration::from_secs(15),
            "web-2 in the slice",
            || (web_endpoints(k)?.len() == 2).then_some(()),
        );
        let rev = k.compact_etcd().unwrap();
        eprintln!("etcd compacted at revision {rev} while podlb was cut off");
        block_podlb(kctl, false);
        let t0 = Instant::now();
        (h.join().unwrap(), t0)
    });
    assert_wrk_clean(&wrk);
    eprintln!(
        "wrk through the API server's crash, restart and compaction: {} requests, 0 errors",
        wrk.requests
    );
    wait_for(
        &budget,
        Duration::from_secs(60),
        "be2 after the re-list",
        || {
            spread(client, 30, &budget)
                .contains_key("be2")
                .then_some(())
        },
    );
    let converged = t0.elapsed();
    // The watches that got 410 Gone list again (after the watcher's back-off).
    let relists = wait_for(
        &budget,
        Duration::from_secs(60),
        "a re-list after 410",
        || {
            let r = metric(&l.podlb, "podlb_k8s_relists_total") - relists0;
            (r >= 1.0).then_some(r)
        },
    );
    let errors = metric(&l.podlb, "podlb_k8s_watch_errors_total");
    let log = l.podlb.log_tail(200_000);
    let gone: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("too old resource version") || l.contains("listing again"))
        .collect();
    eprintln!(
        "converged {converged:?} after podlb could reach the API again, re-listed after {:?}; relists {relists}, watch errors {errors}:\n{}",
        t0.elapsed(),
        gone.join("\n")
    );
    assert!(
        log.contains("too old resource version"),
        "no 410 Gone seen:\n{}",
        l.podlb.log_tail(4000)
    );
    assert!(errors >= 1.0);
    stop_podlb(&l.podlb);
}

/// The index of the ClusterRole rule for `resource`.
fn rule_index(k: &KubeCluster, resource: &str) -> usize {
    let role = k.get_json(&["clusterrole", "podlb"]).unwrap();
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x == resource))
        })
        .unwrap_or_else(|| panic!("no rule for {resource}: {role}"))
}

#[test]
fn realkube_service_recreated_and_rbac_verb_removed() {
    require_kube!("realkube_service_recreated_and_rbac_verb_removed");
    let budget = Budget::with(KUBE_BUDGET);
    let l = lab("");
    let (k, client) = (&l.c.k, l.topo.ns("client"));
    create_web(k, 2);
    wait_web_status(k, &budget);
    wait_for(&budget, Duration::from_secs(15), "traffic", || {
        (spread(client, 30, &budget).len() == 2).then_some(())
    });

    // Deleted: the VIP is no longer served.
    k.kubectl(&["delete", "service", "web"]).unwrap();
    wait_for(&budget, Duration::from_secs(15), "the VIP unserved", || {
        netns::in_netns(client, || {
            netns::HttpConn::connect(vip(80), Duration::from_millis(300))
                .and_then(|mut c| c.get("/", true))
                .is_err()
        })
        .ok()
        .filter(|gone| *gone)
    });
    assert!(kube_status(&l.podlb).allocations.is_empty());
    // Recreated (a new uid): served again, its status written again.
    k.apply(&lb_service("default", "web", CLASS, json!({}), 80))
        .unwrap();
    wait_web_status(k, &budget);
    wait_for(&budget, Duration::from_secs(15), "traffic again", || {
        (spread(client, 30, &budget).len() == 2).then_some(())
    });

    // RBAC: the status write is taken away. A new Service is served (the
    // data plane needs no write), podlb says what it cannot do.
    let i = rule_index(k, "services/status");
    k.kubectl(&[
        "patch",
        "clusterrole",
        "podlb",
        "--type=json",
        "-p",
        &format!(r#"[{{"op":"remove","path":"/rules/{i}"}}]"#),
    ])
    .unwrap();
    let mut web2 = lb_service("default", "web2", CLASS, json!({}), 8080);
    web2["spec"]["selector"] = json!({ "app": "web" });
    k.apply(&web2).unwrap();
    let vip2 = Ipv4Addr::new(198, 18, 0, 101);
    let err = wait_for(
        &budget,
        Duration::from_secs(20),
        "a failed status write",
        || {
            let ks = kube_status(&l.podlb);
            (ks.status_errors >= 1).then_some(ks.last_error.unwrap_or_default())
        },
    );
    eprintln!("podlb without services/status patch: {err}");
    assert!(err.contains("forbidden") || err.contains("403"), "{err}");
    assert!(metric(&l.podlb, "podlb_k8s_status_errors_total") >= 1.0);
    assert!(l.podlb.log_tail(100_000).contains("status write failed"));
    // And says so on the Service (Events are still allowed).
    let ev = wait_for(
        &budget,
        Duration::from_secs(15),
        "a StatusWriteForbidden Event",
        || {
            events(k, "default", "StatusWriteForbidden")
                .into_iter()
                .next()
        },
    );
    eprintln!("podlb's Event: {}", ev["message"]);
    assert_eq!(ev["involvedObject"]["name"], "web2", "{ev}");
    let c =
        netns::http_get_many_until(client, sa(vip2, 8080), 20, 4, true, budget.deadline()).unwrap();
    assert_eq!(c.values().sum::<usize>(), 20, "web2 served: {c:?}");
    assert_eq!(ingress(k, "default", "web2"), None);
    // The last good state keeps serving web.
    assert_eq!(spread(client, 20, &budget).values().sum::<usize>(), 20);

    // The rule restored from the manifest: the retry writes web2's status.
    k.kubectl(&["apply", "-f", &deploy_file("rbac.yaml")])
        .unwrap();
    let ip = wait_for(
        &budget,
        Duration::from_secs(30),
        "web2's status after RBAC is back",
        || ingress_ip(k, "default", "web2"),
    );
    assert_eq!(ip, vip2.to_string());
    stop_podlb(&l.podlb);
}

#[test]
fn realkube_vxlan_backends_from_flannel_node_annotations() {
    require_kube!("realkube_vxlan_backends_from_flannel_node_annotations");
    use crate::kubernetes::flannel_node;
    use crate::vxlan::{Lab as VxLab, NODES, PODS, VTEP_MACS};
    let budget = Budget::with(KUBE_BUDGET);
    let mut lab = VxLab::build();
    let c = cluster(&mut lab.a);
    let k = &c.k;
    let mut procs: Vec<Proc> = (0..2)
        .map(|i| {
            let name = format!("pod{}", i + 1);
            start_nginx(&lab.pods[i], lab.pod_ns(i), &name, &name)
        })
        .collect();
    procs.extend(kube_procs(&lab.a));
    // Two flannel Nodes (the annotations flannel's vxlan backend writes) and
    // a Pod on each; the real controller puts each Pod's nodeName in the slice.
    let mut web = lb_service(
        "default",
        "web",
        CLASS,
        json!({ "podlb.io/mode": "vxlan" }),
        80,
    );
    web["spec"]["selector"] = json!({ "app": "web" });
    k.apply(&web).unwrap();
    for i in 0..2 {
        let node = format!("node{}", i + 1);
        k.apply(&flannel_node(&node, NODES[i], VTEP_MACS[i]))
            .unwrap();
        let pod = format!("pod{}", i + 1);
        k.add_pod("default", &pod, &json!({ "app": "web" }), &node)
            .unwrap();
        k.set_pod("default", &pod, PODS[i], true).unwrap();
    }
    let attach = Attach::AfPacket {
        interface: "eth0".into(),
    };
    let mut config = ConfigSpec::lab(attach.clone(), "nat");
    config.services.clear();
    config.extra = kube_table(&c.kubeconfig, "");
    let podlb = start_podlb(&lab.a, &attach, &config);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    let client = lab.a.ns("client");

    wait_web_status(k, &budget);
    let counts = wait_for(
        &budget,
        Duration::from_secs(15),
        "both pods through VXLAN",
        || {
            let c =
                netns::http_get_many_until(client, vip(80), 60, 4, true, budget.deadline()).ok()?;
            (c.len() == 2).then_some(c)
        },
    );
    eprintln!("vxlan backends from the real Nodes' annotations: {counts:?}");
    let st = podlb.status().unwrap();
    let web = &st.services[0];
    assert_eq!(web.mode, "vxlan", "{st:?}");
    let mut vteps: Vec<Ipv4Addr> = web.backends.iter().filter_map(|b| b.vtep).collect();
    vteps.sort();
    assert_eq!(vteps, [NODES[0], NODES[1]]);
    assert!(metric(&podlb, "podlb_vxlan_encapsulated_total") >= 60.0);

    // node2 loses its flannel annotations: its endpoint leaves, with an Event.
    k.kubectl(&[
        "annotate",
        "node",
        "node2",
        "flannel.alpha.coreos.com/backend-type-",
        "flannel.alpha.coreos.com/public-ip-",
        "flannel.alpha.coreos.com/backend-data-",
        "flannel.alpha.coreos.com/kube-subnet-manager-",
    ])
    .unwrap();
    let ev = wait_for(
        &budget,
        Duration::from_secs(15),
        "a VTEPUnknown Event",
        || events(k, "default", "VTEPUnknown").into_iter().next(),
    );
    let msg = ev["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("node2") && msg.contains(&PODS[1].to_string()),
        "{ev}"
    );
    wait_for(&budget, Duration::from_secs(10), "only pod1", || {
        let c = netns::http_get_many_until(client, vip(80), 30, 4, true, budget.deadline()).ok()?;
        (c.len() == 1 && c.contains_key("pod1")).then_some(())
    });
    stop_podlb(&podlb);
}

// ---------------------------------------------------------------------------
// Redundancy from the real API: peer discovery and the Lease.

use crate::failover::{self, start_lb, wait_state};
use crate::kubernetes::kube_config;
use podlb_lab::demo::VrrpSpec;

/// The podlb replicas as Pods of deploy/kubernetes' peers Service (label
/// app.kubernetes.io/name=podlb, a UDP port named sync), at `ip`.
fn podlb_pod(k: &KubeCluster, name: &str, ip: Ipv4Addr, ready: bool) {
    k.apply(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "podlb-system",
                     "labels": {"app.kubernetes.io/name": "podlb"}},
        "spec": {
            "nodeName": NODE_BE,
            "containers": [{"name": "podlb", "image": "registry.invalid/podlb",
                            "ports": [{"name": "sync", "containerPort": 8899, "protocol": "UDP"}]}],
        },
    }))
    .unwrap();
    k.set_pod("podlb-system", name, ip, ready).unwrap();
}

/// Two podlb hosts (lb1, lb2), the backends, the control plane, web over
/// all three backends.
fn pair_lab() -> (failover::Lab, Cluster) {
    let mut lab = failover::lab(false);
    let c = cluster(&mut lab.topo);
    lab.procs.extend(kube_procs(&lab.topo));
    create_web(&c.k, 3);
    (lab, c)
}

#[test]
fn realkube_peer_discovery_feeds_unicast_vrrp() {
    require_kube!("realkube_peer_discovery_feeds_unicast_vrrp");
    let budget = Budget::with(KUBE_BUDGET);
    let (lab, c) = pair_lab();
    let k = &c.k;
    let client = lab.topo.ns("client").to_string();
    k.kubectl(&["apply", "-f", &deploy_file("peers-service.yaml")])
        .unwrap();
    podlb_pod(k, "podlb-a", LB, true);
    podlb_pod(k, "podlb-b", LB2, true);
    let cfg = |prio| kube_config(&c.kubeconfig, Some(VrrpSpec::new(prio, 100)), "");
    let lb1 = start_lb(&lab.topo, "lb1", &cfg(200));
    let mut procs = lab.procs.clone();
    procs.push(lb1.proc().clone());
    let lb2 = start_lb(&lab.topo, "lb2", &cfg(100));
    procs.push(lb2.proc().clone());
    let _log = LogOnPanic(procs);
    let peers_of = |p: &Podlb| p.status().unwrap().vrrp.unwrap().unicast_peers;
    wait_for(
        &budget,
        Duration::from_secs(20),
        "peers from the real slice",
        || (peers_of(&lb1) == [LB2] && peers_of(&lb2) == [LB]).then_some(()),
    );
    wait_state(&lb1, "master", Duration::from_secs(10));
    wait_state(&lb2, "backup", Duration::from_secs(10));
    wait_for(&budget, Duration::from_secs(20), "web's status", || {
        ingress_ip(k, "default", "web")
    });
    wait_served(&client, &budget, "HTTP through the VIP");

    // podlb-b's readiness flips off: it leaves lb1's peers, and comes back.
    k.set_pod("podlb-system", "podlb-b", LB2, false).unwrap();
    wait_for(
        &budget,
        Duration::from_secs(15),
        "lb2 out of lb1's peers",
        || peers_of(&lb1).is_empty().then_some(()),
    );
    k.set_pod("podlb-system", "podlb-b", LB2, true).unwrap();
    wait_for(
        &budget,
        Duration::from_secs(15),
        "lb2 back in lb1's peers",
        || (peers_of(&lb1) == [LB2]).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(lb2.vrrp_state().unwrap().as_deref(), Some("backup"));

    // lb2 is replaced by a Pod with another IP: the slice changes, and
    // lb1's advert destination follows.
    let lb2_new = Ipv4Addr::new(198, 18, 0, 4);
    lb2.stop(Duration::from_secs(5));
    let ns2 = lab.topo.ns("lb2");
    for (op, a) in [("del", LB2), ("add", lb2_new)] {
        netns::exec_ok(ns2, &["ip", "addr", op, &format!("{a}/24"), "dev", "eth0"]).unwrap();
    }
    k.kubectl(&[
        "delete",
        "pod",
        "podlb-b",
        "-n",
        "podlb-system",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();
    podlb_pod(k, "podlb-c", lb2_new, true);
    wait_for(
        &budget,
        Duration::from_secs(15),
        "lb1's peers to follow",
        || (peers_of(&lb1) == [lb2_new]).then_some(()),
    );
    let lb2 = start_lb(&lab.topo, "lb2", &cfg(100));
    wait_state(&lb2, "backup", Duration::from_secs(10));
    // Three master-down intervals later it is still backup: lb1's unicast
    // adverts reach the new address.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        lb2.vrrp_state().unwrap().as_deref(),
        Some("backup"),
        "{}",
        lb2.log_tail(3000)
    );
    assert_eq!(peers_of(&lb2), [LB]);

    // Failover over the discovered peers; the new master's status is right.
    stop_podlb(&lb1);
    wait_state(&lb2, "master", Duration::from_secs(10));
    wait_served(&client, &budget, "HTTP through the VIP after the failover");
    assert_eq!(ingress_ip(k, "default", "web"), Some(VIP.to_string()));
    stop_podlb(&lb2);
}

fn lease(k: &KubeCluster) -> Value {
    k.get_json(&["lease", "podlb", "-n", "podlb-system"])
        .unwrap()
}

#[test]
fn realkube_lease_election_with_real_conflicts() {
    require_kube!("realkube_lease_election_with_real_conflicts");
    let budget = Budget::with(KUBE_BUDGET);
    let (lab, c) = pair_lab();
    let k = &c.k;
    let client = lab.topo.ns("client").to_string();
    let cfg = |id: &str| {
        kube_config(
            &c.kubeconfig,
            None,
            &format!("identity = {id:?}\nelection = \"lease\"\n[kubernetes.lease]\nduration_ms = 2000\nretry_ms = 250\n"),
        )
    };
    // A free Lease (no holder). Both instances start while the API server
    // is frozen, so both read it at the same resourceVersion when it
    // thaws, and both write it back with that resourceVersion: the API
    // server takes one and answers 409 Conflict to the other.
    k.apply(&json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "podlb", "namespace": "podlb-system"},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 2},
    }))
    .unwrap();
    k.pause_apiserver(true).unwrap();
    // Thawed only once both run (a start can take seconds on a loaded
    // machine), so both have a read outstanding (each waits up to 5 s,
    // then asks again) when the API server answers.
    let (lb1, lb2) = std::thread::scope(|s| {
        let a = s.spawn(|| start_lb(&lab.topo, "lb1", &cfg("podlb-a")));
        let b = s.spawn(|| start_lb(&lab.topo, "lb2", &cfg("podlb-b")));
        let r = (a.join().unwrap(), b.join().unwrap());
        std::thread::sleep(Duration::from_millis(800));
        k.pause_apiserver(false).unwrap();
        r
    });
    let mut procs = lab.procs.clone();
    procs.extend([lb1.proc().clone(), lb2.proc().clone()]);
    let _log = LogOnPanic(procs);
    let states = wait_for(
        &budget,
        Duration::from_secs(20),
        "one master, one backup",
        || {
            let s = (
                crate::kubernetes::lease_state(&lb1)?,
                crate::kubernetes::lease_state(&lb2)?,
            );
            let mut v = [s.0.clone(), s.1.clone()];
            v.sort();
            (v == ["backup", "master"]).then_some(s)
        },
    );
    let (master, backup, master_id) = if states.0 == "master" {
        (&lb1, &lb2, "podlb-a")
    } else {
        (&lb2, &lb1, "podlb-b")
    };
    let conflicts = |p: &Podlb| metric(p, "podlb_lease_conflicts_total");
    let (c1, c2) = (conflicts(&lb1), conflicts(&lb2));
    eprintln!("lease race: {master_id} won; 409 Conflicts: lb1 {c1}, lb2 {c2}");
    assert!(c1 + c2 >= 1.0, "no resourceVersion conflict in the race");
    assert_eq!(conflicts(master), 0.0, "the winner got a conflict");
    assert_eq!(lease(k)["spec"]["holderIdentity"], master_id);
    wait_served(&client, &budget, "HTTP through the VIP (the Lease holder)");
    // The holder says so on the Service: the active-instance condition and
    // Normal Events (the allocation, the announcement).
    let announced_by = |id: &str| {
        wait_for(
            &budget,
            Duration::from_secs(10),
            "the active-instance condition",
            || {
                let svc = k.get_json(&["service", "web", "-n", "default"]).ok()?;
                let c = svc["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "podlb.io/ActiveInstance")?
                    .clone();
                c["message"]
                    .as_str()?
                    .contains(&format!("instance {id}"))
                    .then_some(c)
            },
        )
    };
    let cond = announced_by(master_id);
    eprintln!("active-instance condition: {cond}");
    assert_eq!(cond["status"], "True");
    for reason in ["VIPAllocated", "VIPAnnounced"] {
        let ev = wait_for(&budget, Duration::from_secs(10), reason, || {
            events(k, "default", reason).first().cloned()
        });
        assert_eq!(ev["type"], "Normal", "{ev}");
    }

    // Someone else writes the Lease (a label, as an admin might): the
    // holder's next write carries a stale resourceVersion only if it raced;
    // either way it keeps the Lease, since it re-reads before each write.
    k.kubectl(&[
        "label",
        "lease",
        "podlb",
        "-n",
        "podlb-system",
        "touched=yes",
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        crate::kubernetes::lease_state(master).as_deref(),
        Some("master")
    );

    // The holder dies without releasing: the other takes over after the
    // duration.
    master.proc().signal("KILL").unwrap();
    wait_lease(backup, "master", &budget);
    wait_served(&client, &budget, "HTTP through the VIP after the takeover");
    let l = lease(k);
    assert_ne!(l["spec"]["holderIdentity"], master_id, "{l}");
    let other = if master_id == "podlb-a" {
        "podlb-b"
    } else {
        "podlb-a"
    };
    announced_by(other);
    let announcements = events(k, "default", "VIPAnnounced");
    assert!(
        announcements.len() >= 2,
        "one per takeover: {announcements:?}"
    );
    assert!(
        l["spec"]["leaseTransitions"].as_i64().unwrap_or(0) >= 1,
        "{l}"
    );
    // A clean stop hands over at once to a restarted instance.
    let (role, id) = if master_id == "podlb-a" {
        ("lb1", "podlb-a")
    } else {
        ("lb2", "podlb-b")
    };
    let back = start_lb(&lab.topo, role, &cfg(id));
    wait_lease(&back, "backup", &budget);
    let t0 = Instant::now();
    stop_podlb(backup);
    wait_lease(&back, "master", &budget);
    eprintln!("lease handover after a clean stop: {:?}", t0.elapsed());
    wait_served(&client, &budget, "HTTP through the VIP after the handover");
    stop_podlb(&back);
}

// ---------------------------------------------------------------------------
// deploy/: every manifest and kustomization, applied for real.

#[test]
fn realkube_deploy_manifests_apply_server_side() {
    require_kube!("realkube_deploy_manifests_apply_server_side");
    let mut topo = Topology::new().unwrap();
    topo.add_host("kctl", KCTL).unwrap();
    let k = KubeCluster::start(&topo, "kctl").unwrap();
    let _log = LogOnPanic(kube_procs(&topo));
    let base = test_file("../deploy/kubernetes");
    // kubectl's own kustomize renders each kustomization; the server
    // applies the result (server-side apply, strict field validation: an
    // unknown or misplaced field is an error, as are a bad reference to a
    // kind and any value the API server's validation refuses).
    for (name, dir) in [
        ("base", base.clone()),
        ("tap", base.join("../overlays/tap")),
    ] {
        let rendered = k
            .kubectl(&["kustomize", &dir.display().to_string()])
            .unwrap_or_else(|e| panic!("kubectl kustomize {name}: {e}"));
        let file = k.dir().join(format!("rendered-{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let f = file.display().to_string();
        // The Namespace must exist before a dry run of what lives in it.
        if name == "base" {
            k.kubectl(&[
                "apply",
                "--server-side",
                "-f",
                &deploy_file("namespace.yaml"),
            ])
            .unwrap();
        }
        let dry = k
            .kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &f])
            .unwrap_or_else(|e| panic!("server-side dry run of {name}: {e}\n{rendered}"));
        let out = k
            .kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &f])
            .unwrap_or_else(|e| panic!("server-side apply of {name}: {e}\n{rendered}"));
        eprintln!("{name} (dry run):\n{dry}{name}:\n{out}");
        assert!(
            out.contains("deployment.apps/podlb serverside-applied"),
            "{out}"
        );
    }
    let out = k
        .kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &deploy_file("example-service.yaml"),
        ])
        .unwrap();
    eprintln!("example-service.yaml:\n{out}");
    // Every plain manifest too (the base lists them; this catches one a
    // kustomization forgets).
    for entry in std::fs::read_dir(&base).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml") {
            k.kubectl(&[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                &p.display().to_string(),
            ])
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    // The tap overlay's patches really landed.
    let dep = k
        .get_json(&["deployment", "podlb", "-n", "podlb-system"])
        .unwrap();
    let spec = &dep["spec"]["template"]["spec"];
    eprintln!("podlb Deployment after the tap overlay: {spec}");
    assert_eq!(spec["hostNetwork"], true, "{spec}");
    // Strictness is real: an unknown field is refused.
    let bad = k.dir().join("bad.json");
    std::fs::write(
        &bad,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "x", "namespace": "default"}, "dataa": {}})
        .to_string(),
    )
    .unwrap();
    let e = k
        .kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            &bad.display().to_string(),
        ])
        .unwrap_err()
        .to_string();
    assert!(e.contains("field not declared in schema"), "{e}");
}

// ---------------------------------------------------------------------------
// Dual-stack (KEP-563, issue 17): a dual-stack API server, IPv6 on the LAN.

/// IPv6 addresses the dual-stack test adds on `eth0` (2001:2::/64 on the
/// lab LAN; `nodad`, so they are usable at once).
const CLIENT6: &str = "2001:2::10";
const BACKENDS6: [&str; 2] = ["2001:2::21", "2001:2::22"];
/// podlb's IPv6 pool, and the VIP it hands out first.
const POOL6: &str = "2001:2::100/126";
const VIP6: &str = "2001:2::100";

/// nginx on `be<i>` answering its name on port 80 of both families (the
/// shared launcher's config listens on IPv4 only).
fn dual_nginx(topo: &Topology, i: usize) -> Proc {
    let name = format!("be{i}");
    spawn_nginx(topo, topo.ns(&name), &name, |d| {
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
               server {{\n    listen 80;\n    listen [::]:80;\n\
                 location / {{ default_type text/plain; return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
        )
    })
}

/// One HTTP GET of `url` with curl from `ns` (2 s): the body, trimmed.
fn curl(ns: &str, url: &str) -> Option<String> {
    let out = netns::exec_timeout(
        ns,
        &["curl", "-g", "-s", "-f", "--max-time", "2", url],
        Duration::from_secs(5),
    )
    .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn realkube_dual_stack_service_gets_both_vips_and_ipv6_backends() {
    require_kube!("realkube_dual_stack_service_gets_both_vips_and_ipv6_backends");
    let budget = Budget::with(KUBE_BUDGET);
    let attach = Attach::from_name("af_packet").unwrap();
    let mut topo = lab_topology(&attach).unwrap();
    for (role, addr) in [
        ("client", CLIENT6),
        ("be1", BACKENDS6[0]),
        ("be2", BACKENDS6[1]),
    ] {
        let a = format!("{addr}/64");
        netns::exec_ok(
            topo.ns(role),
            &["ip", "-6", "addr", "add", &a, "dev", "eth0", "nodad"],
        )
        .unwrap();
    }
    let c = cluster_with(&mut topo, KubeCluster::start_dual_stack);
    let k = &c.k;
    let mut procs = kube_procs(&topo);
    procs.extend((1..=2).map(|i| dual_nginx(&topo, i)));
    let mut config = kube_config(&c.kubeconfig, None, "");
    config.extra = format!(
        "[kubernetes]\nkubeconfig = {:?}\nvip_pools = [\"198.18.0.100/30\", {POOL6:?}]\nnamespace = \"podlb-system\"\n",
        c.kubeconfig.display().to_string()
    );
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);

    // The VIPPool schema takes IPv6 ranges (the API server checks it).
    k.apply(
        &json!({"apiVersion": "podlb.io/v1alpha1", "kind": "VIPPool",
                    "metadata": {"name": "v6"},
                    "spec": {"addresses": ["2001:2::200-2001:2::20f", "2001:2::300/120"]}}),
    )
    .unwrap();

    // A PreferDualStack Service; the API server fills in both families,
    // IPv4 (the first service range) primary.
    let mut svc = lb_service("default", "web", CLASS, json!({}), 80);
    svc["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
    k.apply(&svc).unwrap();
    let spec = k.get_json(&["service", "web"]).unwrap()["spec"].clone();
    assert_eq!(spec["ipFamilies"], json!(["IPv4", "IPv6"]), "{spec}");
    eprintln!(
        "clusterIPs from the dual-stack API server: {}",
        spec["clusterIPs"]
    );
    // Pods with an address of each family, as a dual-stack kubelet writes.
    for (i, v4) in BACKENDS[..2].iter().enumerate() {
        let name = format!("web-{}", i + 1);
        k.add_pod("default", &name, &json!({"app": "web"}), NODE_BE)
            .unwrap();
        let v6: std::net::IpAddr = BACKENDS6[i].parse().unwrap();
        k.set_pod_ips("default", &name, &[(*v4).into(), v6], true)
            .unwrap();
    }

    // podlb writes one ingress entry per VIP, IPv4 first.
    let ingress = wait_for(
        &budget,
        Duration::from_secs(30),
        "two ingress entries",
        || {
            let v = k.get_json(&["service", "web"]).ok()?;
            let ing = v
                .pointer("/status/loadBalancer/ingress")?
                .as_array()?
                .clone();
            (ing.len() == 2).then_some(ing)
        },
    );
    eprintln!("web's status from podlb: {}", Value::Array(ingress.clone()));
    assert_eq!(ingress[0]["ip"], VIP.to_string());
    assert_eq!(ingress[1]["ip"], VIP6);
    assert!(
        ingress.iter().all(|i| i["ipMode"] == "Proxy"),
        "{ingress:?}"
    );

    // The real EndpointSlice controller made a slice per family.
    let slices = wait_for(
        &budget,
        Duration::from_secs(20),
        "an IPv4 and an IPv6 slice with both Pods",
        || {
            let v = k
                .get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"])
                .ok()?;
            let items = v["items"].as_array()?.clone();
            let full = |t: &str| {
                items.iter().any(|s| {
                    s["addressType"] == t && s["endpoints"].as_array().is_some_and(|e| e.len() == 2)
                })
            };
            (full("IPv4") && full("IPv6")).then_some(items)
        },
    );
    let v6_slice = slices.iter().find(|s| s["addressType"] == "IPv6").unwrap();
    eprintln!("the controller's IPv6 slice: {}", v6_slice["endpoints"]);

    // Both become podlb services: the IPv4 one under its usual name, the
    // IPv6 one with .v6, each with its family's backends.
    let want = |addrs: &[String]| {
        let mut a = addrs.to_vec();
        a.sort();
        a
    };
    let v4_backends = want(
        &BACKENDS[..2]
            .iter()
            .map(|b| format!("{b}:80"))
            .collect::<Vec<_>>(),
    );
    let v6_backends = want(
        &BACKENDS6
            .iter()
            .map(|b| format!("[{b}]:80"))
            .collect::<Vec<_>>(),
    );
    wait_for(
        &budget,
        Duration::from_secs(20),
        "IPv4 and IPv6 backends in podlb's /status",
        || {
            let st = podlb.status().ok()?;
            let of = |n: &str| -> Option<(String, Vec<String>)> {
                let s = st.services.iter().find(|s| s.name == n)?;
                let b = want(
                    &s.backends
                        .iter()
                        .map(|b| b.addr.to_string())
                        .collect::<Vec<_>>(),
                );
                Some((s.vip.to_string(), b))
            };
            (of("default.web.http") == Some((VIP.to_string(), v4_backends.clone()))
                && of("default.web.http.v6") == Some((VIP6.to_string(), v6_backends.clone())))
            .then_some(())
        },
    );
    let ks = kube_status(&podlb);
    let vips: Vec<String> = ks.allocations.iter().map(|a| a.vip.to_string()).collect();
    assert_eq!(vips, [VIP.to_string(), VIP6.to_string()], "{ks:?}");
    assert!(ks.problems.is_empty(), "{ks:?}");

    // Traffic over each VIP reaches its family's backends.
    let client = topo.ns("client").to_string();
    let url6 = format!("http://[{VIP6}]/");
    wait_for(
        &budget,
        Duration::from_secs(15),
        "an answer over the IPv6 VIP",
        || curl(&client, &url6),
    );
    let mut seen6 = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let who = curl(&client, &url6).expect("an HTTP answer over the IPv6 VIP");
        *seen6.entry(who).or_insert(0) += 1;
    }
    eprintln!("answers over {VIP6}: {seen6:?}");
    assert_eq!(
        seen6.keys().cloned().collect::<Vec<_>>(),
        ["be1", "be2"],
        "{seen6:?}"
    );
    let seen4 = spread(&client, 20, &budget);
    assert!(seen4.keys().all(|b| b == "be1" || b == "be2"), "{seen4:?}");
    // The IPv6 connections were podlb's: its IPv6 service counted them.
    let st = podlb.status().unwrap();
    let v6 = st
        .services
        .iter()
        .find(|s| s.name == "default.web.http.v6")
        .unwrap();
    let new_flows: u64 = v6.backends.iter().map(|b| b.new_flows).sum();
    assert!(new_flows >= 30, "new flows on the IPv6 VIP: {new_flows}");
    stop_podlb(&podlb);
}
