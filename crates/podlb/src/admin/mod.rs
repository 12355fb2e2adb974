//! Admin HTTP endpoint: `GET /metrics` (Prometheus text format), `GET
//! /status` ([`StatusReport`]) and `GET /flows?limit=N` ([`FlowsReport`]) as
//! JSON, `GET /healthz`.
//!
//! It runs on its own thread `podlb-admin`, a current-thread tokio runtime
//! serving with [`crate::http::server`]: requests are answered concurrently,
//! so a slow client does not delay the others. One client can hold little
//! ([`LIMITS`]): its request head must arrive within 2 s and its connection
//! ends after 5 s, at most 128 connections are open (one more is closed at
//! once, and counted), a head over 8 KiB is answered 431; only GET (else
//! 405); every response closes its connection. It reads only shared
//! counters and lock-free tables (and short-held locks of the control
//! thread), so a busy admin client can never slow the data plane.

mod report;

use std::sync::Arc;
use std::time::Duration;

use crate::engine::EngineView;
use crate::http::server::{self, full, Body, Limits, Stats};
use crate::http::{query_param, Incoming, Method, Request, StatusCode};
use crate::metrics::Exposition;
use crate::status::{FlowsReport, StatusReport};

/// What one admin client can hold.
pub const LIMITS: Limits = Limits {
    max_connections: 128,
    header_timeout: Some(Duration::from_secs(2)),
    connection_timeout: Some(Duration::from_secs(5)),
    max_head: 8192,
    keep_alive: false,
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
    /// The process is stopping: the endpoint ends.
    fn stopping(&self) -> bool {
        false
    }
}

/// Serves the engine's endpoint on `listener` until the engine stops.
pub fn serve(listener: std::net::TcpListener, view: Arc<EngineView>) {
    serve_with(listener, view, LIMITS);
}

/// Serves `source` on `listener` within `limits` (on the calling thread).
pub fn serve_with<S: Source>(listener: std::net::TcpListener, source: Arc<S>, limits: Limits) {
    let rt = match crate::http::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "admin endpoint: no runtime");
            return;
        }
    };
    rt.block_on(async {
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin endpoint: listener");
                return;
            }
        };
        let stats = Arc::new(Stats::default());
        let stop = stopped(source.clone());
        let handler = {
            let stats = stats.clone();
            move |req: Request<Incoming>| {
                let (source, stats) = (source.clone(), stats.clone());
                async move { route(&*source, &stats, &req) }
            }
        };
        server::serve(listener, limits, stats, handler, stop).await;
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

fn route<S: Source>(source: &S, stats: &Stats, req: &Request<Incoming>) -> hyper::Response<Body> {
    if req.method() != Method::GET {
        return full(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut w = Exposition::new();
            source.metrics(&mut w);
            stats.render(&mut w, "podlb_admin", "admin endpoint");
            full(StatusCode::OK, "text/plain; version=0.0.4", w.into_string())
        }
        "/status" => json(&source.status()),
        "/flows" => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| query_param(q, "limit"))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(FLOWS_DEFAULT)
                .min(FLOWS_MAX);
            json(&source.flows(limit))
        }
        "/healthz" => full(StatusCode::OK, "text/plain", "ok\n"),
        _ => full(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /status, /flows, /healthz\n",
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
        fn stopping(&self) -> bool {
            self.stop.load(Ordering::SeqCst)
        }
    }

    struct Running {
        addr: SocketAddr,
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

    fn start(limits: Limits) -> Running {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let fake = Arc::new(Fake::default());
        let f = fake.clone();
        let thread = std::thread::spawn(move || serve_with(l, f, limits));
        Running {
            addr,
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
        assert_eq!(get(srv.addr, "/healthz"), (200, "ok\n".into()));
        let (code, text) = get(srv.addr, "/metrics");
        assert_eq!(code, 200);
        assert!(text.contains("# TYPE podlb_fake_total counter\npodlb_fake_total 3\n"));
        assert!(text.contains("podlb_admin_connections_total "), "{text}");
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
