//! Shared helpers of the netns tests.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podlb::status::BackendState;
use podlb_lab::demo::{self, Attach, ConfigSpec, Podlb, ServiceSpec, BACKENDS, VIP};
use podlb_lab::netns::{self, Proc, Topology};

/// Every test finishes within this (each wait inside is bounded by it).
pub const TEST_BUDGET: Duration = Duration::from_secs(60);

/// Returns early from the test (passing) with a printed reason when netns
/// tests cannot run here.
macro_rules! require_netns {
    ($name:expr) => {
        if let Some(reason) = podlb_lab::netns::netns_unavailable() {
            eprintln!("SKIP {}: {}", $name, reason);
            return;
        }
    };
}
pub(crate) use require_netns;

/// The podlb binary under test.
pub fn podlb_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_podlb"))
}

/// A file of this directory (badframes.py).
pub fn test_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../netns-tests")
        .join(name)
}

/// A per-test deadline.
pub struct Budget(Instant);

impl Budget {
    pub fn start() -> Budget {
        Budget(Instant::now() + TEST_BUDGET)
    }
    /// A budget of `d` instead of [`TEST_BUDGET`] (tests that start a
    /// control plane first).
    pub fn with(d: Duration) -> Budget {
        Budget(Instant::now() + d)
    }
    pub fn deadline(&self) -> Instant {
        self.0
    }
    /// Remaining time, at most `cap`; panics when the budget is spent.
    pub fn left(&self, cap: Duration) -> Duration {
        let left = self.0.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "test budget spent");
        left.min(cap)
    }
}

/// Prints a process's log when the test panics while this guard is alive.
pub struct LogOnPanic(pub Vec<Proc>);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.0 {
                eprintln!(
                    "----- log of {} (pid {}) -----\n{}",
                    p.label(),
                    p.pid(),
                    p.log_tail(6000)
                );
            }
        }
    }
}

pub fn vip(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP, port))
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// Starts nginx in `ns` on :80 answering `body` + "\n" to everything, with
/// its own config, pid file and logs in a directory of the topology.
pub fn start_nginx(topo: &Topology, ns: &str, name: &str, body: &str) -> Proc {
    spawn_nginx(topo, ns, name, |d| {
        format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               keepalive_requests 1000000;\n\
               server {{\n\
                 listen 80 backlog=4096;\n\
                 listen [::]:80 backlog=4096;\n\
                 location / {{ default_type text/plain; return 200 \"{body}\\n\"; }}\n\
               }}\n\
             }}\n"
        )
    })
}

/// Starts nginx in `ns` on :80 with the config `conf` renders from its
/// directory (pid file, logs and temp paths go there) and waits until it
/// listens; its error log is in the panic message if it does not.
pub fn spawn_nginx(
    topo: &Topology,
    ns: &str,
    name: &str,
    conf: impl FnOnce(&str) -> String,
) -> Proc {
    let dir = topo.dir().join(format!("nginx-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let conf = conf(&d);
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let p = topo
        .spawn(
            ns,
            &format!("nginx-{name}"),
            &[
                "nginx",
                "-p",
                &d.to_string(),
                "-e",
                &format!("{d}/error.log"),
                "-c",
                &path.display().to_string(),
            ],
        )
        .unwrap();
    netns::wait_listening(ns, 80, Duration::from_secs(10), Some(&p)).unwrap_or_else(|e| {
        panic!(
            "nginx {name} did not start: {e}\n{}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        )
    });
    p
}

/// nginx in each backend namespace be1..be3, answering its own name.
pub fn start_backends(topo: &Topology) -> Vec<Proc> {
    (1..=3)
        .map(|i| {
            let name = format!("be{i}");
            start_nginx(topo, topo.ns(&name), &name, &name)
        })
        .collect()
}

/// Starts `iperf3 -s` in `ns` on port 5201.
pub fn start_iperf_server(topo: &Topology, ns: &str) -> Proc {
    let p = topo
        .spawn(ns, "iperf3-server", &["iperf3", "-s", "-p", "5201"])
        .unwrap();
    netns::wait_listening(ns, 5201, Duration::from_secs(10), Some(&p))
        .expect("iperf3 -s did not start");
    p
}

/// Outcome of one wrk run.
#[derive(Debug)]
pub struct WrkResult {
    pub requests: u64,
    pub socket_errors: Option<String>,
    pub non_2xx: Option<String>,
    pub output: String,
}

/// Runs `wrk -t1 -c32 -d<secs>s --latency http://<target>/` in `ns`.
pub fn run_wrk(ns: &str, target: SocketAddr, secs: u32, budget: &Budget) -> WrkResult {
    let url = format!("http://{target}/");
    let d = format!("-d{secs}s");
    let out = netns::exec_timeout(
        ns,
        &["wrk", "-t1", "-c32", &d, "--latency", &url],
        budget.left(Duration::from_secs(secs as u64 + 15)),
    )
    .expect("wrk ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}

pub fn parse_wrk(text: &str) -> WrkResult {
    // "  12345 requests in 3.00s, 1.23MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let find = |pat: &str| {
        text.lines()
            .find(|l| l.contains(pat))
            .map(|l| l.trim().to_string())
    };
    WrkResult {
        requests,
        socket_errors: find("Socket errors"),
        non_2xx: find("Non-2xx"),
        output: text.to_string(),
    }
}

pub fn assert_wrk_clean(r: &WrkResult) {
    assert!(r.requests > 0, "wrk made no requests:\n{}", r.output);
    assert!(
        r.socket_errors.is_none(),
        "wrk socket errors:\n{}",
        r.output
    );
    assert!(r.non_2xx.is_none(), "wrk non-2xx responses:\n{}", r.output);
}

/// Runs `iperf3 -c <ip> -t <secs> -J` in `ns`; returns bits per second received.
pub fn run_iperf(ns: &str, server: Ipv4Addr, secs: u32, budget: &Budget) -> f64 {
    let t = secs.to_string();
    let ip = server.to_string();
    let out = netns::exec_timeout(
        ns,
        &["iperf3", "-c", &ip, "-p", "5201", "-t", &t, "-J"],
        budget.left(Duration::from_secs(secs as u64 + 15)),
    )
    .expect("iperf3 ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}): {text}"));
    assert!(
        v.get("error").is_none(),
        "iperf3 reported an error: {}",
        v["error"]
    );
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .unwrap_or(0.0);
    assert!(bps > 0.0, "iperf3 moved no data: {text}");
    bps
}

/// Asserts that each `be1..be3` got a third of `total` within ±10%.
pub fn assert_even_spread(counts: &HashMap<String, usize>, total: usize) {
    let sum: usize = counts.values().sum();
    assert_eq!(sum, total, "responses: {counts:?}");
    let third = total as f64 / 3.0;
    for i in 1..=3 {
        let n = counts.get(&format!("be{i}")).copied().unwrap_or(0) as f64;
        assert!(
            (n - third).abs() <= 0.1 * third,
            "backend be{i} got {n} of {total} (want {third:.0} ± 10%); all: {counts:?}"
        );
    }
}

/// The lab config with the HTTP service (and optionally an iperf3 service
/// on VIP:5201 to backend 1).
pub fn lab_config(attach: &Attach, mode: &str, with_iperf: bool) -> ConfigSpec {
    let mut c = ConfigSpec::lab(attach.clone(), mode);
    if with_iperf {
        c.services.push(ServiceSpec {
            name: "iperf".into(),
            vip: VIP.into(),
            port: 5201,
            mode: mode.into(),
            backends: vec![sa(BACKENDS[0], 5201)],
            health_check: None,
        });
    }
    c
}

/// Namespace podlb runs in for this attachment.
pub fn lb_ns(topo: &Topology, attach: &Attach) -> String {
    if attach.is_tap() {
        topo.node().to_string()
    } else {
        topo.ns("lb").to_string()
    }
}

/// Starts podlb with `config` (panics with its log if it does not come up).
pub fn start_podlb(topo: &Topology, attach: &Attach, config: &ConfigSpec) -> Podlb {
    let ns = lb_ns(topo, attach);
    match Podlb::start(topo, &ns, podlb_exe(), config) {
        Ok(p) => p,
        Err(e) => panic!(
            "podlb did not start: {e}\n--- config ---\n{}\n--- log ---\n{}",
            config.to_toml(),
            std::fs::read_to_string(topo.dir().join("podlb.log")).unwrap_or_default()
        ),
    }
}

/// Waits (≤ 10 s) until backend `addr` of the first service has left the
/// published snapshot or shows as draining: a reload that removed it is
/// applied.
pub fn wait_removed(podlb: &Podlb, addr: &str, budget: &Budget) {
    let deadline = Instant::now() + budget.left(Duration::from_secs(10));
    loop {
        let st = podlb.status().unwrap();
        let gone = st.services[0]
            .backends
            .iter()
            .find(|b| b.addr.to_string() == addr)
            .is_none_or(|b| b.state == BackendState::Draining);
        if gone {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied: {:?}",
            st.services
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens keep-alive connections to the VIP from `client` (one request
/// each): at least `least`, and more until `want` of them answer with
/// `body` or `most` are open. Returns each with the body it answered.
pub fn open_until_on(
    client: &str,
    least: usize,
    (body, want): (&str, usize),
    most: usize,
) -> Vec<(netns::HttpConn, String)> {
    let mut conns: Vec<(netns::HttpConn, String)> = Vec::new();
    while conns.len() < least
        || (conns.iter().filter(|(_, b)| b == body).count() < want && conns.len() < most)
    {
        conns.push(
            netns::in_netns(client, || {
                let mut c = netns::HttpConn::connect(vip(80), netns::HTTP_TIMEOUT)
                    .expect("connect through the VIP");
                let r = c.get("/", false).expect("first request through the VIP");
                assert_eq!(r.status, 200);
                (c, r.body.trim().to_string())
            })
            .unwrap(),
        );
    }
    conns
}

/// Stops podlb with SIGTERM and asserts it exits 0 within 5 s.
pub fn stop_podlb(p: &Podlb) {
    let st = p.stop(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "podlb did not exit 0 on SIGTERM: {st:?}\n{}",
        p.log_tail(4000)
    );
}

pub use demo::metric_sum;
