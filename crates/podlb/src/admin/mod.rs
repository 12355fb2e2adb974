//! Admin HTTP endpoint: `GET /metrics` (Prometheus text format), `GET
//! /status` ([`StatusReport`]) and `GET /flows?limit=N` ([`FlowsReport`]) as
//! JSON, and the probes `GET /livez` (= `/healthz`) and `GET /readyz`
//! ([`ProbesStatus`]: 200, or 503 with the reasons, one a line).
//!
//! Two listeners ([`Listener`]): `admin` (keep it on the loopback) serves
//! everything; `admin_public` (the kubelet's probes, Prometheus) serves the
//! probes and `/metrics` only, and `/status` and `/flows` only if asked
//! (`admin_public_reports`: they show client addresses, backends and NAT
//! ports). Each has its own bound on connections, so clients holding one
//! listener's slots cannot starve the other; the public one also bounds the
//! connections from one address ([`PUBLIC_LIMITS`]), so slow clients on one
//! Pod cannot take the kubelet's slots.
//!
//! Both run on one thread `podlb-admin`, a current-thread tokio runtime
//! serving with [`crate::http::server`]: requests are answered concurrently,
//! so a slow client does not delay the others. One client can hold little:
//! its request head must arrive within 2 s and its connection ends after
//! 5 s, a head over 8 KiB is answered 431; only GET (else 405); every
//! response closes its connection. It reads only shared counters, atomics
//! and lock-free tables (and short-held locks of the control thread), so a
//! busy admin client can never slow the data plane, and a wedged control
//! loop cannot silence the probes that report it.

mod report;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::EngineView;
use crate::http::server::{self, full, Body, Limits, Stats};
use crate::http::{query_param, Incoming, Method, Request, StatusCode};
use crate::metrics::{Exposition, Kind};
use crate::status::{FlowsReport, ProbesStatus, StatusReport};

/// What one client of the loopback listener (`admin`) can hold.
pub const LIMITS: Limits = Limits {
    max_connections: 128,
    max_per_peer: None,
    header_timeout: Some(Duration::from_secs(2)),
    connection_timeout: Some(Duration::from_secs(5)),
    max_head: 8192,
    keep_alive: false,
};

/// What the clients of the public listener (`admin_public`) can hold: more
/// connections in all than [`LIMITS`] (each idle one costs a task and a few
/// KiB), at most 32 from one address: 16 Pods would have to hold them all
/// to shut out the kubelet.
pub const PUBLIC_LIMITS: Limits = Limits {
    max_connections: 512,
    max_per_peer: Some(32),
    ..LIMITS
};

/// Flows `/flows` lists when not asked, and at most.
const FLOWS_DEFAULT: usize = 100;
const FLOWS_MAX: usize = 100_000;

/// What the endpoint reports: the engine ([`EngineView`]), or a fake in
/// tests.
pub trait Source: Send + Sync + 'static {
    /// Every metric family but the endpoint's own.
    fn metrics(&self, w: &mut Exposition);
    fn status(&self) -> StatusReport;
    /// Up to `limit` flows.
    fn flows(&self, limit: usize) -> FlowsReport;
    /// Liveness and readiness.
    fn probes(&self) -> ProbesStatus {
        ProbesStatus::ok()
    }
    /// The process is stopping: the endpoint ends.
    fn stopping(&self) -> bool {
        false
    }
}

/// One listening socket of the endpoint and what it serves.
pub struct Listener {
    pub socket: std::net::TcpListener,
    pub limits: Limits,
    /// Also `/status` and `/flows`.
    pub reports: bool,
    /// Prefix of its connection counters (`podlb_admin`,
    /// `podlb_admin_public`).
    pub metrics_prefix: &'static str,
}

impl Listener {
    /// The loopback listener: everything, [`LIMITS`].
    pub fn admin(socket: std::net::TcpListener) -> Listener {
        Listener {
            socket,
            limits: LIMITS,
            reports: true,
            metrics_prefix: "podlb_admin",
        }
    }

    /// The public listener: probes and metrics ([`PUBLIC_LIMITS`]), and the
    /// reports if `reports`.
    pub fn public(socket: std::net::TcpListener, reports: bool) -> Listener {
        Listener {
            socket,
            limits: PUBLIC_LIMITS,
            reports,
            metrics_prefix: "podlb_admin_public",
        }
    }
}

/// Serves the engine's endpoint on `listeners` until the engine stops.
pub fn serve(listeners: Vec<Listener>, view: Arc<EngineView>) {
    serve_with(listeners, view);
}

/// Serves `source` on `listeners` (on the calling thread).
pub fn serve_with<S: Source>(listeners: Vec<Listener>, source: Arc<S>) {
    let rt = match crate::http::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "admin endpoint: no runtime");
            return;
        }
    };
    let stats: Arc<[(&'static str, Arc<Stats>)]> = listeners
        .iter()
        .map(|l| (l.metrics_prefix, Arc::new(Stats::default())))
        .collect();
    rt.block_on(async {
        let mut servers = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let listener = match l
                .socket
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l.socket))
            {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "admin endpoint: listener");
                    continue;
                }
            };
            let handler = {
                let (source, stats) = (source.clone(), stats.clone());
                let reports = l.reports;
                move |req: Request<Incoming>| {
                    let (source, stats) = (source.clone(), stats.clone());
                    async move { route(&*source, &stats, reports, &req) }
                }
            };
            let own = stats[i].1.clone();
            servers.push(server::serve(
                listener,
                l.limits,
                own,
                handler,
                stopped(source.clone()),
            ));
        }
        futures_util::future::join_all(servers).await;
    });
}

/// Resolves once `source` is stopping.
async fn stopped<S: Source>(source: Arc<S>) {
    while !source.stopping() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn json(v: &impl serde::Serialize) -> hyper::Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => full(StatusCode::OK, "application/json", b),
        Err(e) => full(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// A probe's answer: 200 `ok`, or 503 with `what` and each reason on a
/// line of its own.
fn probe(ok: bool, what: &str, reasons: &[String]) -> hyper::Response<Body> {
    if ok {
        return full(StatusCode::OK, "text/plain", "ok\n");
    }
    let mut body = format!("{what}\n");
    for r in reasons {
        let _ = writeln!(body, "{r}");
    }
    full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
}

/// `podlb_build_info`: which podlb this is (`commit` when the build was
/// given `PODLB_COMMIT`).
fn render_build_info(w: &mut Exposition) {
    let mut labels = vec![("version", env!("CARGO_PKG_VERSION"))];
    if let Some(c) = option_env!("PODLB_COMMIT").filter(|c| !c.is_empty()) {
        labels.push(("commit", c));
    }
    labels.push(("rustc", env!("PODLB_RUSTC")));
    w.family(
        "podlb_build_info",
        "Always 1; the labels say which podlb this is.",
        Kind::Gauge,
    )
    .sample(&labels, 1);
}

fn route<S: Source>(
    source: &S,
    stats: &[(&'static str, Arc<Stats>)],
    reports: bool,
    req: &Request<Incoming>,
) -> hyper::Response<Body> {
    if req.method() != Method::GET {
        return full(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut w = Exposition::new();
            render_build_info(&mut w);
            source.metrics(&mut w);
            for (prefix, s) in stats {
                s.render(&mut w, prefix, "admin endpoint's listener");
            }
            full(StatusCode::OK, "text/plain; version=0.0.4", w.into_string())
        }
        "/healthz" | "/livez" => {
            let p = source.probes();
            probe(p.live, "not live", &p.stalled)
        }
        "/readyz" => {
            let p = source.probes();
            probe(p.ready, "not ready", &p.not_ready)
        }
        "/status" if reports => json(&source.status()),
        "/flows" if reports => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| query_param(q, "limit"))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(FLOWS_DEFAULT)
                .min(FLOWS_MAX);
            json(&source.flows(limit))
        }
        "/status" | "/flows" => full(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not served on this listener: /status and /flows are on the admin listener (admin_public_reports = true serves them here too)\n",
        ),
        _ => full(
            StatusCode::NOT_FOUND,
            "text/plain",
            if reports {
                "not found: try /metrics, /status, /flows, /livez, /readyz, /healthz\n"
            } else {
                "not found: try /metrics, /livez, /readyz, /healthz\n"
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::get_once;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    #[derive(Default)]
    struct Fake {
        stop: AtomicBool,
        last_limit: AtomicUsize,
        /// Probes fail.
        sick: AtomicBool,
    }

    impl Source for Fake {
        fn metrics(&self, w: &mut Exposition) {
            w.counter("podlb_fake_total", "A fake.", 3);
        }
        fn status(&self) -> StatusReport {
            serde_json::from_str(crate::status::SAMPLE_JSON).unwrap()
        }
        fn flows(&self, limit: usize) -> FlowsReport {
            self.last_limit.store(limit, Ordering::SeqCst);
            FlowsReport {
                flows: Vec::new(),
                total: 0,
            }
        }
        fn probes(&self) -> ProbesStatus {
            let mut p = ProbesStatus::ok();
            if self.sick.load(Ordering::SeqCst) {
                p.live = false;
                p.ready = false;
                p.stalled = vec!["control loop: no progress for 12000 ms (limit 10000 ms)".into()];
                p.not_ready = vec!["draining: stopping after SIGTERM".into(), "b".into()];
            }
            p
        }
        fn stopping(&self) -> bool {
            self.stop.load(Ordering::SeqCst)
        }
    }

    struct Running {
        addr: SocketAddr,
        /// The public listener's.
        public: SocketAddr,
        fake: Arc<Fake>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.fake.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The admin listener within `limits`, and a public one
    /// ([`PUBLIC_LIMITS`], no reports).
    fn start(limits: Limits) -> Running {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, public) = (l.local_addr().unwrap(), p.local_addr().unwrap());
        let fake = Arc::new(Fake::default());
        let f = fake.clone();
        let listeners = vec![
            Listener {
                limits,
                ..Listener::admin(l)
            },
            Listener::public(p, false),
        ];
        let thread = std::thread::spawn(move || serve_with(listeners, f));
        Running {
            addr,
            public,
            fake,
            thread: Some(thread),
        }
    }

    const T: Duration = Duration::from_secs(5);

    fn get(addr: SocketAddr, target: &str) -> (u16, String) {
        let r = get_once(addr, target, T).unwrap();
        (r.status.as_u16(), r.text())
    }

    /// A raw request; the whole answer up to the server's close.
    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn routes() {
        let srv = start(LIMITS);
        for p in ["/healthz", "/livez", "/readyz"] {
            assert_eq!(get(srv.addr, p), (200, "ok\n".into()), "{p}");
        }
        let (code, text) = get(srv.addr, "/metrics");
        assert_eq!(code, 200);
        assert!(text.contains("# TYPE podlb_fake_total counter\npodlb_fake_total 3\n"));
        assert!(text.contains("podlb_admin_connections_total "), "{text}");
        assert!(
            text.contains("podlb_admin_public_connections_total "),
            "{text}"
        );
        let build = format!(
            "podlb_build_info{{version=\"{}\",",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        assert!(text.contains(",rustc=\""), "{text}");
        let (code, text) = get(srv.addr, "/status");
        assert_eq!(code, 200);
        let st: StatusReport = serde_json::from_str(&text).unwrap();
        assert_eq!(st.interface.name, "veth0");
        for (q, want) in [
            ("/flows", FLOWS_DEFAULT),
            ("/flows?limit=7", 7),
            ("/flows?x=1&limit=9", 9),
            ("/flows?limit=junk", FLOWS_DEFAULT),
            ("/flows?limit=99999999", FLOWS_MAX),
        ] {
            let (code, text) = get(srv.addr, q);
            assert_eq!(code, 200);
            assert_eq!(text, r#"{"flows":[],"total":0}"#);
            assert_eq!(srv.fake.last_limit.load(Ordering::SeqCst), want, "{q}");
        }
        assert_eq!(get(srv.addr, "/nope").0, 404);
        let out = raw(
            srv.addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(
            out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{out}"
        );
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let out = raw(srv.addr, big.as_bytes());
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        // Every response closes its connection.
        let out = raw(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            out.contains("\r\nConnection: close\r\n") && out.ends_with("ok\n"),
            "{out}"
        );
    }

    #[test]
    fn probes_fail_with_their_reasons() {
        let srv = start(LIMITS);
        srv.fake.sick.store(true, Ordering::SeqCst);
        let live = (
            503,
            "not live\ncontrol loop: no progress for 12000 ms (limit 10000 ms)\n".to_string(),
        );
        assert_eq!(get(srv.addr, "/livez"), live);
        assert_eq!(get(srv.public, "/healthz"), live);
        assert_eq!(
            get(srv.public, "/readyz"),
            (
                503,
                "not ready\ndraining: stopping after SIGTERM\nb\n".into()
            )
        );
        srv.fake.sick.store(false, Ordering::SeqCst);
        assert_eq!(get(srv.public, "/readyz").0, 200);
    }

    /// The public listener serves the probes and the metrics, not the
    /// reports (client addresses, backends).
    #[test]
    fn public_listener_serves_no_reports() {
        let srv = start(LIMITS);
        for p in ["/healthz", "/livez", "/readyz", "/metrics"] {
            assert_eq!(get(srv.public, p).0, 200, "{p}");
        }
        for p in ["/status", "/flows", "/flows?limit=5"] {
            let (code, text) = get(srv.public, p);
            assert_eq!(code, 404, "{p}");
            assert!(text.contains("admin_public_reports"), "{text}");
        }
        assert_eq!(srv.fake.last_limit.load(Ordering::SeqCst), 0);
        assert!(get(srv.public, "/nope").1.contains("/readyz"));
        // Opted in: they are there.
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = p.local_addr().unwrap();
        let fake = Arc::new(Fake::default());
        let f = fake.clone();
        let t = std::thread::spawn(move || serve_with(vec![Listener::public(p, true)], f));
        assert_eq!(get(addr, "/status").0, 200);
        assert_eq!(get(addr, "/flows?limit=5").0, 200);
        assert_eq!(fake.last_limit.load(Ordering::SeqCst), 5);
        fake.stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
    }

    /// One address holding its share of the public listener's connections
    /// does not keep another address out.
    #[test]
    fn one_address_cannot_take_every_public_slot() {
        let srv = start(LIMITS);
        let from = |ip: &str| {
            let mut s = connect_from(ip, srv.public);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            s
        };
        let max = PUBLIC_LIMITS.max_per_peer.unwrap();
        let held: Vec<TcpStream> = (0..max).map(|_| from("127.0.0.2")).collect();
        std::thread::sleep(Duration::from_millis(100));
        // One more from 127.0.0.2: closed unanswered.
        let mut extra = from("127.0.0.2");
        extra.set_read_timeout(Some(T)).unwrap();
        let mut buf = Vec::new();
        let _ = extra.read_to_end(&mut buf);
        assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
        // The probes from 127.0.0.1 are answered at once.
        for _ in 0..3 {
            let t0 = Instant::now();
            assert_eq!(get(srv.public, "/readyz").0, 200);
            assert!(t0.elapsed() < Duration::from_millis(500));
        }
        drop(held);
        let (_, text) = get(srv.addr, "/metrics");
        assert!(
            text.contains("\npodlb_admin_public_connections_rejected_total 1\n"),
            "{text}"
        );
    }

    /// A TCP connection to `to` from source address `ip` (any of 127/8).
    fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
        // std cannot bind a client socket before connecting; tokio can.
        let src: SocketAddr = format!("{ip}:0").parse().unwrap();
        let rt = crate::http::runtime().unwrap();
        let s = rt
            .block_on(async {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind(src)?;
                s.connect(to).await
            })
            .unwrap();
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    }

    /// Slow clients hold connections (half a request head each) while
    /// another asks: it is answered at once. Past the bound, a connection
    /// is closed as soon as accepted; the deadline then frees the slots.
    #[test]
    fn slow_clients_do_not_delay_others() {
        let limits = Limits {
            max_connections: 6,
            header_timeout: Some(Duration::from_millis(1500)),
            ..LIMITS
        };
        let srv = start(limits);
        let slow: Vec<TcpStream> = (0..5)
            .map(|_| {
                let mut s = TcpStream::connect(srv.addr).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
                    .unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            let t0 = Instant::now();
            assert_eq!(get(srv.addr, "/healthz").0, 200);
            assert!(
                t0.elapsed() < Duration::from_millis(500),
                "{:?}",
                t0.elapsed()
            );
        }
        // Five held plus one more: the seventh is closed unanswered.
        let _sixth = TcpStream::connect(srv.addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let out = raw(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(out, "", "closed without an answer");
        assert!(t0.elapsed() < Duration::from_millis(500));
        // The slow ones time out (head not in within 1.5 s) and are closed.
        for mut s in slow {
            s.set_read_timeout(Some(T)).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        }
        let (_, text) = get(srv.addr, "/metrics");
        let value = |name: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(
            value("podlb_admin_connections_rejected_total ") >= 1,
            "{text}"
        );
        assert!(
            value("podlb_admin_connection_timeouts_total ") >= 5,
            "{text}"
        );
    }
}
