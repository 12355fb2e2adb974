//! Production operations (issue 15): the admin endpoint keeps answering
//! its probes while slow and idle clients hold connections, `/livez` fails
//! while the control loop is wedged, `/readyz` waits for the first
//! Kubernetes list, a ConfigMap-style swap of the config file is reloaded,
//! and the Prometheus alert rules pass `promtool`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podlb_lab::demo::{
    lab_topology, metric_sum, Attach, ConfigSpec, Podlb, VrrpSpec, ADMIN, BACKENDS, CLIENT, LB,
};
use podlb_lab::netns::{self, HttpConn, Topology};

use crate::common::*;
use crate::kubernetes::{kube_table, start_api};

/// The public admin listener of these tests (probes and metrics).
const PUBLIC: SocketAddr = SocketAddr::new(IpAddr::V4(LB), 9101);

/// A probe's deadline: the kubelet's `timeoutSeconds: 1`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe `GET path` from the calling thread's namespace: its status
/// and body, or why it failed, and how long it took.
fn probe(addr: SocketAddr, path: &str) -> (Result<(u16, String), String>, Duration) {
    let t0 = Instant::now();
    let r = HttpConn::connect(addr, PROBE_TIMEOUT)
        .and_then(|mut c| c.get(path, true))
        .map(|r| (r.status, r.body))
        .map_err(|e| e.to_string());
    (r, t0.elapsed())
}

/// `GET path` from inside `ns`, any status.
fn get_in(ns: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    let p = path.to_string();
    let (r, _) = netns::in_netns(ns, move || probe(addr, &p)).unwrap();
    r.unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Polls `GET path` in `ns` until `want` holds for its (status, body).
fn wait_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    within: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = get_in(ns, addr, path);
        if want(code, &body) {
            return (code, body);
        }
        assert!(
            Instant::now() < deadline,
            "GET {path}: still {code} after {within:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lab with podlb serving `admin_public` on [`PUBLIC`], started
/// through `exe` (podlb itself, or a wrapper setting a test hook).
fn start(topo: &Topology, attach: &Attach, extra: &str, exe: &Path) -> Podlb {
    let mut config = lab_config(attach, "nat", false);
    config.top = format!("admin_public = \"{PUBLIC}\"");
    config.extra = extra.to_string();
    let ns = lb_ns(topo, attach);
    Podlb::start(topo, &ns, exe, &config).unwrap_or_else(|e| {
        panic!(
            "podlb did not start: {e}\n{}",
            std::fs::read_to_string(topo.dir().join("podlb.log")).unwrap_or_default()
        )
    })
}

/// What the slow clients did.
#[derive(Default)]
struct Slow {
    /// Connections opened.
    opened: AtomicU64,
    /// Connections the server ended (deadline) and that were opened again.
    ended: AtomicU64,
}

/// `n` clients from `sources` (round robin) holding connections to `to`
/// until `stop`: every other one sends a request head one byte a second
/// (never finishing it), the rest send nothing; each opens a new
/// connection as soon as the server ends its. Runs on the calling thread
/// (a tokio runtime; call it inside the clients' namespace).
fn hold_slow_clients(n: usize, sources: &[Ipv4Addr], to: SocketAddr, stop: &AtomicBool, s: &Slow) {
    let rt = podlb::http::runtime().unwrap();
    rt.block_on(async {
        let tasks = (0..n).map(|i| {
            let src = SocketAddr::new(IpAddr::V4(sources[i % sources.len()]), 0);
            let trickle = i % 2 == 0;
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while !stop.load(Ordering::Relaxed) {
                    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                        return;
                    };
                    if sock.bind(src).is_err() {
                        return;
                    }
                    let Ok(mut c) = sock.connect(to).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    s.opened.fetch_add(1, Ordering::Relaxed);
                    let head = b"GET /metrics HTTP/1.1\r\nHost: slow\r\n";
                    let mut sent = 0;
                    let mut buf = [0u8; 512];
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if trickle && sent < head.len() {
                            if c.write_all(&head[sent..=sent]).await.is_err() {
                                break;
                            }
                            sent += 1;
                        }
                        // The server closing the connection ends the read.
                        match tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await {
                            Err(_) => {}
                            Ok(Ok(0) | Err(_)) => break,
                            Ok(Ok(_)) => {}
                        }
                    }
                    s.ended.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        futures_util::future::join_all(tasks).await;
    });
}

/// Probes `/readyz`, `/livez`, `/healthz` and `/metrics` on `to` from the
/// calling thread's namespace for `span`, one every 100 ms: every probe's
/// failure, and every latency.
fn probe_for(to: SocketAddr, span: Duration) -> (Vec<String>, Vec<Duration>) {
    let (mut failures, mut latencies) = (Vec::new(), Vec::new());
    let end = Instant::now() + span;
    let paths = ["/readyz", "/livez", "/healthz", "/metrics"];
    let mut i = 0;
    while Instant::now() < end {
        let path = paths[i % paths.len()];
        i += 1;
        let (r, took) = probe(to, path);
        latencies.push(took);
        match r {
            Ok((200, _)) if took <= PROBE_TIMEOUT => {}
            Ok((code, body)) => failures.push(format!("{path}: {code} in {took:?}: {body}")),
            Err(e) => failures.push(format!("{path}: {e} after {took:?}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (failures, latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `n` slow clients from `sources` in the client's namespace while
/// probing [`PUBLIC`] from the client's own address for `span`; asserts no
/// probe failed and returns the latencies.
fn probes_under_slow_clients(
    client: &str,
    n: usize,
    sources: &[Ipv4Addr],
    span: Duration,
) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let slow = Arc::new(Slow::default());
    let holder = {
        let (ns, stop, slow, sources) = (
            client.to_string(),
            stop.clone(),
            slow.clone(),
            sources.to_vec(),
        );
        std::thread::spawn(move || {
            netns::in_netns(&ns, move || {
                hold_slow_clients(n, &sources, PUBLIC, &stop, &slow)
            })
            .unwrap()
        })
    };
    // Let them all connect first.
    std::thread::sleep(Duration::from_millis(500));
    let (failures, mut latencies) =
        netns::in_netns(client, move || probe_for(PUBLIC, span)).unwrap();
    stop.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    latencies.sort();
    eprintln!(
        "{n} slow clients ({} connections opened, {} ended by the server): {} probes, {} failed, latency p50 {:?} p99 {:?} max {:?}",
        slow.opened.load(Ordering::Relaxed),
        slow.ended.load(Ordering::Relaxed),
        latencies.len(),
        failures.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    assert!(
        slow.opened.load(Ordering::Relaxed) >= n as u64,
        "the slow clients did not connect"
    );
    assert!(failures.is_empty(), "probes failed: {failures:#?}");
    latencies
}

#[test]
fn admin_probes_answer_while_slow_clients_hold_connections() {
    require_netns!("admin_probes_answer_while_slow_clients_hold_connections");
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let podlb = start(&topo, &attach, "", podlb_exe());
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");

    // Where the clients come from: the three from one Pod, then a
    // hundred from four Pods (each within the per-address bound).
    let pods: Vec<Ipv4Addr> = (51..=54).map(|i| Ipv4Addr::new(198, 18, 0, i)).collect();
    for p in &pods {
        netns::exec_ok(
            client,
            &["ip", "addr", "add", &format!("{p}/24"), "dev", "eth0"],
        )
        .unwrap();
    }

    // The reports are not on the public listener; they are on the loopback.
    assert_eq!(get_in(client, PUBLIC, "/status").0, 404);
    assert_eq!(get_in(client, PUBLIC, "/flows").0, 404);
    assert!(podlb.status().is_ok());

    // Past the head deadline (2 s) and the connection's (5 s): the slow
    // clients are cut off and come back while the probes go on.
    let span = Duration::from_secs(7);
    let three = probes_under_slow_clients(client, 3, &[CLIENT], span);
    let hundred = probes_under_slow_clients(client, 100, &pods, span);
    // The bound, generously: the kubelet gives a probe 1 s.
    for l in [&three, &hundred] {
        assert!(*l.last().unwrap() < PROBE_TIMEOUT, "{l:?}");
    }

    let m = podlb.metrics().unwrap();
    let opened = metric_sum(&m, "podlb_admin_public_connections_total");
    assert!(opened >= 103.0, "{opened}");
    assert!(
        metric_sum(&m, "podlb_admin_public_connection_timeouts_total") >= 100.0,
        "the deadlines ended the slow connections"
    );
    assert!(podlb.proc().is_running());

    // The alert rules and the dashboard ask only for metrics podlb has
    // (those of VRRP, the Lease and Kubernetes: not in this config).
    let names = metric_names_used();
    assert!(names.len() > 10, "{names:?}");
    for n in names {
        let base = n
            .strip_suffix("_bucket")
            .or_else(|| n.strip_suffix("_count"))
            .unwrap_or(&n);
        let known = m.contains(&format!("\n# TYPE {base} "))
            || ["podlb_vrrp_", "podlb_lease_", "podlb_k8s_"]
                .iter()
                .any(|p| n.starts_with(p));
        assert!(
            known,
            "{n} (alert rules or dashboard) is not a podlb metric"
        );
    }
}

/// Every `podlb_*` name in deploy/prometheus/podlb-rules.yaml and in the
/// Grafana dashboard's queries (which must be JSON).
fn metric_names_used() -> std::collections::BTreeSet<String> {
    let rules =
        std::fs::read_to_string(test_file("../deploy/prometheus/podlb-rules.yaml")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(test_file("../deploy/grafana/podlb-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut text: String = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
        .collect::<Vec<_>>()
        .join("\n");
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            text.push('\n');
            text.push_str(t["expr"].as_str().unwrap());
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("podlb_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_string());
        i = end;
    }
    names
}

/// A wrapper of podlb that sets the test hook making the control loop stand
/// still while `wedge` exists, and logs JSON (`PODLB_LOG_FORMAT=json`).
fn wedging_podlb(topo: &Topology, wedge: &Path) -> PathBuf {
    let w = topo.dir().join("podlb-wedgeable");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\nexec env PODLB_LOG_FORMAT=json {}={} {} \"$@\"\n",
            podlb::engine::TEST_WEDGE_ENV,
            wedge.display(),
            podlb_exe().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

#[test]
fn liveness_fails_while_the_control_loop_is_wedged() {
    require_netns!("liveness_fails_while_the_control_loop_is_wedged");
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let wedge = topo.dir().join("wedge");
    let exe = wedging_podlb(&topo, &wedge);
    let podlb = start(&topo, &attach, "[probes]\nliveness_stall_s = 1\n", &exe);
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");

    assert_eq!(get_in(client, PUBLIC, "/livez"), (200, "ok\n".into()));
    assert_eq!(get_in(client, PUBLIC, "/readyz").0, 200);

    // Wedged: within the limit (1 s) and a probe period, /livez says so.
    std::fs::write(&wedge, "").unwrap();
    let t0 = Instant::now();
    let (_, body) = wait_get(client, PUBLIC, "/livez", Duration::from_secs(5), |c, _| {
        c == 503
    });
    eprintln!("/livez failed {:?} after the wedge: {body}", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_secs(1), "{body}");
    assert!(
        body.starts_with("not live\ncontrol loop: no progress for "),
        "{body}"
    );
    // Only the control loop: the workers still make progress.
    assert!(!body.contains("worker"), "{body}");
    // The endpoint itself still answers: metrics say it too.
    let m = podlb.metrics().unwrap();
    assert_eq!(metric_sum(&m, "podlb_live"), 0.0, "{m}");
    let st = podlb.status().unwrap();
    let p = st.probes.expect("probes in /status");
    assert!(!p.live && p.stalled.len() == 1, "{p:?}");

    // Unwedged: live again.
    std::fs::remove_file(&wedge).unwrap();
    wait_get(client, PUBLIC, "/livez", Duration::from_secs(5), |c, _| {
        c == 200
    });
    assert_eq!(metric_sum(&podlb.metrics().unwrap(), "podlb_live"), 1.0);

    // Its log is JSON, one object a line.
    let log = std::fs::read_to_string(topo.dir().join("podlb.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "ready")
        .unwrap_or_else(|| panic!("no ready line: {log}"));
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["admin_public"], format!("Some({PUBLIC})"));
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN"
                && l["file"].as_str() == Some(&*wedge.display().to_string()))
    );
}

#[test]
fn readiness_waits_for_the_first_kubernetes_list() {
    require_netns!("readiness_waits_for_the_first_kubernetes_list");
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let api = start_api(&topo, CLIENT);
    let kubeconfig = topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "podlb-system").unwrap();
    // The API answers nothing yet: no list can be in.
    api.set_unavailable(true);
    let mut config = ConfigSpec::lab(attach.clone(), "nat");
    config.services.clear();
    config.top = format!("admin_public = \"{PUBLIC}\"");
    config.extra = kube_table(&kubeconfig, "");
    let podlb = start_podlb(&topo, &attach, &config);
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");

    // Live, not ready, for the one reason, for as long as the API is away.
    for _ in 0..5 {
        assert_eq!(get_in(client, PUBLIC, "/livez").0, 200);
        let (code, body) = get_in(client, PUBLIC, "/readyz");
        assert_eq!(code, 503, "{body}");
        assert_eq!(
            body,
            "not ready\nkubernetes: the first list of Services and EndpointSlices is not in yet\n"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(metric_sum(&podlb.metrics().unwrap(), "podlb_ready"), 0.0);

    // The API is back: ready once the first list is in.
    api.set_unavailable(false);
    let t0 = Instant::now();
    wait_get(
        client,
        PUBLIC,
        "/readyz",
        Duration::from_secs(30),
        |c, _| c == 200,
    );
    eprintln!("ready {:?} after the API came back", t0.elapsed());
    assert_eq!(metric_sum(&podlb.metrics().unwrap(), "podlb_ready"), 1.0);
    let summary = podlb.status().unwrap().summary();
    assert!(summary.contains("health: live, ready"), "{summary}");
    assert!(summary.contains("kubernetes: synced"), "{summary}");
}

#[test]
fn readiness_fails_while_draining() {
    require_netns!("readiness_fails_while_draining");
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let mut config = lab_config(&attach, "nat", false).with_vrrp(VrrpSpec::new(100, 100));
    config.top = format!("admin_public = \"{PUBLIC}\"");
    // In the [vrrp] table: a master stopped keeps forwarding this long.
    config.extra = "drain_ms = 3000\n".into();
    let podlb = start_podlb(&topo, &attach, &config);
    let _log = LogOnPanic(vec![podlb.proc().clone()]);
    let client = topo.ns("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    while podlb.vrrp_state().unwrap().as_deref() != Some("master") {
        assert!(Instant::now() < deadline, "not master");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get_in(client, PUBLIC, "/readyz").0, 200);

    // SIGTERM: the master drains for 3 s; not ready from the start, live
    // throughout.
    podlb.proc().signal("TERM").unwrap();
    let t0 = Instant::now();
    let (_, body) = wait_get(client, PUBLIC, "/readyz", Duration::from_secs(1), |c, _| {
        c == 503
    });
    assert_eq!(body, "not ready\ndraining: stopping after SIGTERM\n");
    eprintln!("not ready {:?} after SIGTERM", t0.elapsed());
    while t0.elapsed() < Duration::from_millis(2500) {
        assert_eq!(get_in(client, PUBLIC, "/livez").0, 200);
        assert_eq!(get_in(client, PUBLIC, "/readyz").0, 503);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(podlb
        .stop(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// A config directory laid out as the kubelet mounts a ConfigMap:
/// `podlb.toml -> ..data/podlb.toml`, `..data -> ..<version>`, swapped by
/// renaming a new `..data` link over the old one.
struct ConfigMapDir {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(dir: PathBuf, text: &str) -> ConfigMapDir {
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = ConfigMapDir { dir, version: 0 };
        d.swap(text);
        std::os::unix::fs::symlink("..data/podlb.toml", d.path()).unwrap();
        d
    }

    /// The path podlb reads.
    fn path(&self) -> PathBuf {
        self.dir.join("podlb.toml")
    }

    /// What the kubelet does on a change: a new timestamped directory, a
    /// new `..data_tmp` link to it renamed over `..data`, the old directory
    /// removed.
    fn swap(&mut self, text: &str) {
        self.version += 1;
        let name = format!("..2026_12_03_12_00_00.{}", self.version);
        let new = self.dir.join(&name);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("podlb.toml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.version > 1 {
            let old = format!("..2026_12_03_12_00_00.{}", self.version - 1);
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

#[test]
fn config_file_swap_reloads_like_a_configmap() {
    require_netns!("config_file_swap_reloads_like_a_configmap");
    let budget = Budget::start();
    let attach = Attach::from_name("af_packet").unwrap();
    let topo = lab_topology(&attach).unwrap();
    let mut config = lab_config(&attach, "nat", false);
    let mut cm = ConfigMapDir::new(topo.dir().join("configmap"), &config.to_toml());
    let ns = lb_ns(&topo, &attach);
    let exe = podlb_exe().display().to_string();
    let path = cm.path().display().to_string();
    let proc = topo
        .spawn(&ns, "podlb", &[&exe, "run", "--config", &path])
        .unwrap();
    let _log = LogOnPanic(vec![proc.clone()]);
    netns::wait_tcp(&ns, ADMIN, Duration::from_secs(20), Some(&proc)).unwrap();
    let backends = || -> Vec<String> {
        let (code, body) = get_in(&ns, ADMIN, "/status");
        assert_eq!(code, 200);
        let st: podlb::status::StatusReport = serde_json::from_str(&body).unwrap();
        st.services[0]
            .backends
            .iter()
            .filter(|b| b.state != podlb::status::BackendState::Draining)
            .map(|b| b.addr.to_string())
            .collect()
    };
    let reload_errors = || {
        metric_sum(
            &get_in(&ns, ADMIN, "/metrics").1,
            "podlb_config_reload_errors_total",
        )
    };
    assert_eq!(backends().len(), 3);

    // be3 removed in the ConfigMap: reloaded without a signal.
    config.services[0]
        .backends
        .retain(|b| b.ip() != IpAddr::V4(BACKENDS[2]));
    let t0 = Instant::now();
    cm.swap(&config.to_toml());
    let wait_backends = |n: usize| {
        let deadline = Instant::now() + budget.left(Duration::from_secs(10));
        while backends().len() != n {
            assert!(Instant::now() < deadline, "still {:?}", backends());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_backends(2);
    eprintln!(
        "the swapped config was applied {:?} after the swap",
        t0.elapsed()
    );
    assert!(proc
        .log_tail(20_000)
        .contains("config file changed; reloading"));

    // A bad file: logged and counted, the running config stays.
    cm.swap("interface = \n");
    let deadline = Instant::now() + budget.left(Duration::from_secs(10));
    while reload_errors() < 1.0 {
        assert!(Instant::now() < deadline, "the bad file was not read");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = get_in(&ns, ADMIN, "/status");
    let st: podlb::status::StatusReport = serde_json::from_str(&body).unwrap();
    assert!(st.last_reload_error.is_some(), "{body}");
    assert_eq!(backends().len(), 2);
    // Read once: it is not read again every period.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reload_errors(), 1.0);
    assert!(proc.is_running());

    // Fixed, with be3 back: applied, the error cleared.
    config.services[0]
        .backends
        .push(SocketAddr::new(IpAddr::V4(BACKENDS[2]), 80));
    cm.swap(&config.to_toml());
    wait_backends(3);
    let (_, body) = get_in(&ns, ADMIN, "/status");
    let st: podlb::status::StatusReport = serde_json::from_str(&body).unwrap();
    assert_eq!(st.last_reload_error, None);
    assert_eq!(reload_errors(), 1.0);
}

/// The alert rules of deploy/prometheus pass `promtool check rules` and
/// their unit tests (`promtool test rules`). Needs no namespaces; skips
/// without promtool (Debian's `prometheus` package, netns-tests/deps.sh),
/// except in CI.
#[test]
fn prometheus_alert_rules_pass_promtool() {
    let have = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI (netns-tests/deps.sh installs Debian's prometheus)"
        );
        eprintln!(
            "SKIP prometheus_alert_rules_pass_promtool: no promtool (Debian package prometheus)"
        );
        return;
    }
    let dir = test_file("../deploy/prometheus");
    for args in [
        ["check", "rules", "podlb-rules.yaml"],
        ["test", "rules", "podlb-rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("promtool {}: {text}", args.join(" "));
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
    }
}
