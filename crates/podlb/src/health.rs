//! Backend health checks of podlb's own: a TCP connect, an HTTP `GET`, a
//! UDP datagram answered, or a DNS query answered, judged with rise/fall
//! hysteresis (HAProxy's `rise`/`fall`).
//!
//! Two halves, as elsewhere in podlb:
//! - sans-IO: [`HealthCheck`] (what to probe and how often), [`TargetState`]
//!   (the rise/fall state machine of one target);
//! - IO: [`HealthMonitor`], one thread `podlb-health` running a tokio
//!   current-thread runtime with one task per target. The engine reads
//!   [`HealthMonitor::is_up`] when it builds a snapshot and rebuilds the
//!   snapshot when `on_change` fires (docs/architecture.md §3).
//!
//! New targets start *up* (docs/decisions.md, "Health checks: new targets
//! start up; all down fails open").

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{client, header, Method};
use crate::metrics::{Exposition, Kind};
use crate::status::{HealthStatus, RefusedHold};
use parking_lot::Mutex;
use podlb_core::control::holds::Holds;
use podlb_core::model::ServiceConfig;

use podlb_core::health;
pub use podlb_core::health::*;
pub use podlb_core::model::{CheckKind, HealthCheck};

/// One probe: `Ok` if healthy, else the reason.
async fn probe(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, probe_once(check, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {} ms", check.timeout.as_millis())),
    }
}

async fn probe_once(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let (path, expect) = match &check.kind {
        CheckKind::Tcp => return probe_tcp(addr).await.map(drop),
        CheckKind::Http {
            path,
            expect_status,
        } => (path, *expect_status),
        CheckKind::Udp { send, expect } => return probe_udp(addr, send, expect.as_deref()).await,
        CheckKind::Dns { name } => return probe_dns(addr, name).await,
    };
    let tcp = probe_tcp(addr).await?;
    let req = client::request(Method::GET, path, &addr.to_string())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(client::empty())
        .map_err(|e| format!("bad path: {e}"))?;
    let mut conn = client::Conn::handshake(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Only the status line matters: the head is read, the body is not.
    let resp = conn.send(req).await.map_err(|e| failure(&e))?;
    match resp.status().as_u16() {
        st if st == expect => Ok(()),
        st => Err(format!("bad status {st}")),
    }
}

/// A TCP connection to `addr`.
async fn probe_tcp(addr: SocketAddr) -> Result<tokio::net::TcpStream, String> {
    tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "refused".to_string(),
            _ => format!("connect: {e}"),
        })
}

/// A connected UDP socket to `addr`: the kernel then hands it only
/// datagrams from `addr`, and the ICMP errors about what it sent.
async fn udp_socket(addr: SocketAddr) -> Result<tokio::net::UdpSocket, String> {
    let sock = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(sock)
}

/// The reason for an error sending or receiving on a connected UDP socket.
/// An ICMP port unreachable comes back as `ECONNREFUSED`.
fn udp_failure(what: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "port unreachable".into(),
        std::io::ErrorKind::HostUnreachable => "host unreachable".into(),
        std::io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => format!("{what}: {e}"),
    }
}

/// Room for any reply worth reading: a datagram longer than the buffer is
/// cut, which only the `expect` prefix could notice, and it fits.
fn reply_buffer(expect: usize) -> Vec<u8> {
    vec![0; expect.max(2048)]
}

/// Sends `send` and passes on the first datagram back (it must start with
/// `expect` if given). The caller bounds the wait.
async fn probe_udp(addr: SocketAddr, send: &[u8], expect: Option<&[u8]>) -> Result<(), String> {
    let sock = udp_socket(addr).await?;
    sock.send(send).await.map_err(|e| udp_failure("send", &e))?;
    let mut buf = reply_buffer(expect.map_or(0, <[u8]>::len));
    let n = sock
        .recv(&mut buf)
        .await
        .map_err(|e| udp_failure("recv", &e))?;
    match expect {
        Some(e) if !buf[..n].starts_with(e) => Err(format!(
            "unexpected reply {}",
            health::show_bytes(&buf[..n])
        )),
        _ => Ok(()),
    }
}

/// Queries `name` (type A) and waits for the answer with the query's ID;
/// datagrams with other IDs are skipped. The caller bounds the wait.
async fn probe_dns(addr: SocketAddr, name: &str) -> Result<(), String> {
    let id = query_id();
    let query = health::dns::query(id, name).map_err(|e| format!("bad name: {e}"))?;
    let sock = udp_socket(addr).await?;
    sock.send(&query)
        .await
        .map_err(|e| udp_failure("send", &e))?;
    let mut buf = reply_buffer(0);
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| udp_failure("recv", &e))?;
        match health::dns::judge(id, &buf[..n]) {
            health::dns::Verdict::Healthy => return Ok(()),
            health::dns::Verdict::Unhealthy(why) => return Err(why),
            health::dns::Verdict::Ignore => continue,
        }
    }
}

/// A DNS query ID: a counter mixed with the clock, so IDs neither repeat
/// from probe to probe nor start alike in every podlb.
fn query_id() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    podlb_core::hash::hash_bytes(&n.to_le_bytes(), nanos) as u16
}

const USER_AGENT: &str = concat!("podlb-health/", env!("CARGO_PKG_VERSION"));

/// The reason a probe gives for a failed exchange.
fn failure(e: &client::Error) -> String {
    match e {
        client::Error::Http(h) if h.is_incomplete_message() => "malformed response: empty".into(),
        client::Error::Http(h) if h.is_parse() || h.is_parse_too_large() => {
            format!("malformed response: {h}")
        }
        client::Error::Http(h) => match std::error::Error::source(h) {
            Some(io) => format!("read: {io}"),
            None => format!("malformed response: {h}"),
        },
        e => format!("read: {e}"),
    }
}

/// What `/status` and `/metrics` show about one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// The address probed.
    pub addr: SocketAddr,
    /// [`HealthCheck::summary`].
    pub check: String,
    pub up: bool,
    /// Probes done.
    pub checks: u64,
    /// Probes failed.
    pub failures: u64,
    /// Reason of the last failed probe (kept after recovery).
    pub last_error: Option<String>,
    /// Up/down transitions so far.
    pub transitions: u64,
}

struct Target {
    check: HealthCheck,
    state: TargetState,
    checks: u64,
    failures: u64,
    last_error: Option<String>,
    transitions: u64,
    task: tokio::task::AbortHandle,
}

type OnChange = Box<dyn Fn() + Send + Sync>;

struct Inner {
    /// By probed address; a few checks per address at most.
    targets: Mutex<HashMap<SocketAddr, Vec<Target>>>,
    on_change: OnChange,
}

impl Inner {
    /// Records a probe result. Returns false if the target is gone (its
    /// task then ends).
    fn record(&self, check: &HealthCheck, addr: SocketAddr, result: Result<(), String>) -> bool {
        let (changed, summary) = {
            let mut map = self.targets.lock();
            let Some(t) = map
                .get_mut(&addr)
                .and_then(|v| v.iter_mut().find(|t| t.check == *check))
            else {
                return false;
            };
            t.checks += 1;
            if let Err(e) = &result {
                t.failures += 1;
                t.last_error = Some(e.clone());
            }
            let changed = t.state.observe(result.is_ok());
            if changed.is_some() {
                t.transitions += 1;
            }
            (changed, changed.map(|_| t.check.summary()))
        };
        match (changed, summary) {
            (Some(false), Some(check)) => {
                tracing::warn!(backend = %addr, %check, reason = result.err().unwrap_or_default(), "health check: backend down");
                (self.on_change)();
            }
            (Some(true), Some(check)) => {
                tracing::info!(backend = %addr, %check, "health check: backend up");
                (self.on_change)();
            }
            _ => {}
        }
        true
    }
}

/// Probes targets on its own thread and keeps their up/down state.
pub struct HealthMonitor {
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// In a mutex only so the monitor is `Sync`.
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HealthMonitor {
    /// Starts the thread `podlb-health`. `on_change` runs on that thread
    /// after every up/down transition; it should only set a flag.
    pub fn start(on_change: impl Fn() + Send + Sync + 'static) -> std::io::Result<HealthMonitor> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("podlb-health".into())
            .spawn(move || {
                // Runs the probe tasks until the monitor is dropped.
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_millis(100));
                let _ = done_tx.send(());
            })?;
        Ok(HealthMonitor {
            inner: Arc::new(Inner {
                targets: Mutex::new(HashMap::new()),
                on_change: Box::new(on_change),
            }),
            rt: handle,
            stop: Some(stop_tx),
            done: Mutex::new(done),
            thread: Some(thread),
        })
    }

    /// Replaces the set of targets (duplicates count once). Kept targets
    /// keep their state and schedule; removed ones stop being probed; new
    /// ones start up and are first probed after a random part of their
    /// interval, so many backends do not probe in lockstep.
    pub fn set_targets(&self, targets: Vec<(HealthCheck, SocketAddr)>) {
        let wanted: HashSet<(HealthCheck, SocketAddr)> = targets.into_iter().collect();
        let mut map = self.inner.targets.lock();
        for (addr, list) in map.iter_mut() {
            list.retain(|t| {
                let keep = wanted.contains(&(t.check.clone(), *addr));
                if !keep {
                    t.task.abort();
                }
                keep
            });
        }
        map.retain(|_, list| !list.is_empty());
        for (check, addr) in wanted {
            let list = map.entry(addr).or_default();
            if list.iter().any(|t| t.check == check) {
                continue;
            }
            let first = jitter(&check, addr);
            let task = self
                .rt
                .spawn(probe_loop(self.inner.clone(), check.clone(), addr, first))
                .abort_handle();
            list.push(Target {
                state: TargetState::new(check.rise, check.fall),
                check,
                checks: 0,
                failures: 0,
                last_error: None,
                transitions: 0,
                task,
            });
        }
    }

    /// Whether `addr` passes `check`; true for targets not (yet) known.
    pub fn is_up(&self, check: &HealthCheck, addr: SocketAddr) -> bool {
        let map = self.inner.targets.lock();
        map.get(&addr)
            .and_then(|v| v.iter().find(|t| t.check == *check))
            .is_none_or(|t| t.state.is_up())
    }

    /// The status of one target, if it is known.
    pub fn status_of(&self, check: &HealthCheck, addr: SocketAddr) -> Option<TargetStatus> {
        let map = self.inner.targets.lock();
        map.get(&addr)
            .and_then(|v| v.iter().find(|t| t.check == *check))
            .map(|t| status(addr, t))
    }

    /// Every target's status, sorted by address.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        let map = self.inner.targets.lock();
        let mut out: Vec<TargetStatus> = map
            .iter()
            .flat_map(|(addr, v)| v.iter().map(|t| status(*addr, t)))
            .collect();
        out.sort_by(|a, b| (a.addr, &a.check).cmp(&(b.addr, &b.check)));
        out
    }
}

fn status(addr: SocketAddr, t: &Target) -> TargetStatus {
    TargetStatus {
        addr,
        check: t.check.summary(),
        up: t.state.is_up(),
        checks: t.checks,
        failures: t.failures,
        last_error: t.last_error.clone(),
        transitions: t.transitions,
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // Bounded: a runtime that does not stop within a second is left
        // behind rather than hanging the caller.
        if self
            .done
            .lock()
            .recv_timeout(Duration::from_secs(1))
            .is_ok()
        {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            tracing::warn!("health-check thread did not stop within 1 s");
        }
    }
}

/// A pseudo-random delay in `[0, interval)` for a target's first probe.
fn jitter(check: &HealthCheck, addr: SocketAddr) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut key = match addr.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    key.extend_from_slice(&addr.port().to_be_bytes());
    key.extend_from_slice(check.summary().as_bytes());
    let h = podlb_core::hash::hash_bytes(&key, nanos);
    let ms = (check.interval.as_millis() as u64).max(1);
    Duration::from_millis(h % ms)
}

async fn probe_loop(inner: Arc<Inner>, check: HealthCheck, addr: SocketAddr, first: Duration) {
    let start = tokio::time::Instant::now() + first;
    let mut tick = tokio::time::interval_at(start, check.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(&check, addr).await;
        if !inner.record(&check, addr, result) {
            return;
        }
    }
}

// ---- engine glue -----------------------------------------------------------

/// The services with their down backends left out. A service whose
/// backends are *all* down keeps them all (fails open): sending clients to
/// backends that may be alive beats refusing every connection
/// (docs/decisions.md).
pub fn healthy_services(
    services: &[ServiceConfig],
    health: Option<&HealthMonitor>,
) -> Vec<ServiceConfig> {
    filter_services(
        services,
        |c, a| health.is_none_or(|m| m.is_up(c, a)),
        |_| false,
    )
    .0
}

/// What the engine keeps about health checks: the monitor (started when a
/// service first asks for checks, stopped when none does), the "changed"
/// flag the control loop polls, and which services fail open.
#[derive(Default)]
pub struct HealthGate {
    monitor: Mutex<Option<Arc<HealthMonitor>>>,
    changed: Arc<AtomicBool>,
    fail_open: Mutex<HashSet<String>>,
    /// Times a service entered fail-open (all its backends down).
    pub fail_open_total: AtomicU64,
    /// Backends held out of new connections after refusing a SYN
    /// (`flows.refused_hold_s`); the engine feeds it the refusals.
    pub holds: Mutex<Holds>,
    /// Refusals reported by the workers (also those of a backend already
    /// held, e.g. by flows steered before the rebuilt snapshot).
    pub refusals_total: AtomicU64,
}

impl HealthGate {
    pub fn new() -> HealthGate {
        HealthGate::default()
    }

    /// The running monitor, if any service has a health check.
    pub fn monitor(&self) -> Option<Arc<HealthMonitor>> {
        self.monitor.lock().clone()
    }

    /// Whether a backend's health changed since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Services currently failing open, sorted.
    pub fn fail_open(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fail_open.lock().iter().cloned().collect();
        v.sort();
        v
    }

    /// The held backends and the time each has left, by address.
    pub fn held(&self, now: Instant) -> Vec<(SocketAddr, Duration)> {
        self.holds.lock().held(now)
    }

    /// Registers the targets of `services` (starting or stopping the
    /// monitor as needed) and returns the services a snapshot should be
    /// built from: [`healthy_services`], with fail-open logged once per
    /// transition and counted.
    pub fn services_for_snapshot(&self, services: &[ServiceConfig]) -> Vec<ServiceConfig> {
        self.register(services);
        let m = self.monitor();
        let holds = self.holds.lock();
        let (out, failing) = filter_services(
            services,
            |c, a| m.as_ref().is_none_or(|m| m.is_up(c, a)),
            |a| holds.is_held(a),
        );
        drop(holds);
        let failing: HashSet<String> = failing.into_iter().collect();
        let mut was = self.fail_open.lock();
        for name in failing.difference(&was) {
            self.fail_open_total.fetch_add(1, Ordering::Relaxed);
            tracing::error!(service = %name, "health check: every backend is down; using them all (fail open)");
        }
        for name in was.difference(&failing) {
            tracing::info!(service = %name, "health check: a backend is up again; fail-open ends");
        }
        *was = failing;
        out
    }

    fn register(&self, services: &[ServiceConfig]) {
        let targets = health_targets(services);
        let mut slot = self.monitor.lock();
        if targets.is_empty() {
            // No service asks for checks (any more): stop the thread.
            *slot = None;
            return;
        }
        if slot.is_none() {
            let changed = self.changed.clone();
            match HealthMonitor::start(move || changed.store(true, Ordering::Relaxed)) {
                Ok(m) => *slot = Some(Arc::new(m)),
                Err(e) => {
                    tracing::error!(error = %e, "health checks not started; every backend counts as up");
                    return;
                }
            }
        }
        if let Some(m) = slot.as_ref() {
            m.set_targets(targets);
        }
    }

    /// Stops the monitor (at shutdown).
    pub fn stop(&self) {
        let m = self.monitor.lock().take();
        drop(m);
    }

    /// The health-checked (service, backend) pairs of `services` and their
    /// targets' status (up until the monitor knows it), for `/status`.
    pub fn status(&self, services: &[ServiceConfig]) -> Vec<HealthStatus> {
        let monitor = self.monitor();
        let mut rows = Vec::new();
        for s in services {
            let Some(c) = &s.health_check else { continue };
            for b in &s.backends {
                let st = monitor
                    .as_ref()
                    .and_then(|m| m.status_of(c, c.target(b.addr)));
                let st = st.as_ref();
                rows.push(HealthStatus {
                    service: s.name.clone(),
                    addr: b.addr,
                    target: st.map(|s| s.addr),
                    check: st.map(|s| s.check.clone()),
                    up: st.is_none_or(|s| s.up),
                    checks: st.map_or(0, |s| s.checks),
                    failures: st.map_or(0, |s| s.failures),
                    transitions: st.map_or(0, |s| s.transitions),
                    last_error: st.and_then(|s| s.last_error.clone()),
                });
            }
        }
        rows
    }

    /// The held backends for `/status`.
    pub fn held_status(&self, now: Instant) -> Vec<RefusedHold> {
        self.held(now)
            .into_iter()
            .map(|(backend, left)| RefusedHold {
                backend,
                left_ms: left.as_millis() as u64,
            })
            .collect()
    }

    /// The health and refusal families, for the backends of `services`.
    pub fn render(&self, w: &mut Exposition, services: &[ServiceConfig], now: Instant) {
        let rows = self.status(services);
        let mut f = w.family(
            "podlb_backend_health_up",
            "1 if the backend passes its health check (or is not checked yet), 0 if it is down.",
            Kind::Gauge,
        );
        for r in &rows {
            let backend = r.addr.to_string();
            f.sample(
                &[("service", &r.service), ("backend", &backend)],
                u8::from(r.up),
            );
        }
        let mut f = w.family(
            "podlb_health_checks_total",
            "Health-check probes, by result.",
            Kind::Counter,
        );
        for r in &rows {
            let backend = r.addr.to_string();
            for (result, v) in [("ok", r.checks - r.failures), ("fail", r.failures)] {
                f.sample(
                    &[
                        ("service", &r.service),
                        ("backend", &backend),
                        ("result", result),
                    ],
                    v,
                );
            }
        }
        w.counter(
            "podlb_health_fail_open_total",
            "Times every backend of a service was down and all were kept (fail open).",
            self.fail_open_total.load(Ordering::Relaxed),
        );
        w.counter(
            "podlb_backend_refusals_total",
            "SYNs a backend answered with a RST, withheld so the client's retry went to another backend (flows.refused_hold_s).",
            self.refusals_total.load(Ordering::Relaxed),
        );
        w.gauge(
            "podlb_backends_refused_held",
            "Backends held out of new connections after refusing one.",
            self.held(now).len(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    // ---- against real loopback listeners ----------------------------------

    /// A loopback server on its own thread; stops when dropped.
    struct Server {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// `reply`: bytes written after reading the request; `None`: accept and
    /// never answer (connections are held until the server stops).
    fn server(reply: Option<&'static [u8]>) -> Server {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, req2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let Some(reply) = reply else {
                            held.push(s);
                            continue;
                        };
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 2048];
                        let n = s.read(&mut buf).unwrap_or(0);
                        req2.lock()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        let _ = s.write_all(reply);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
            requests,
        }
    }

    fn fast(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            port: None,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(50),
            rise: 2,
            fall: 2,
        }
    }

    fn http(path: &str) -> CheckKind {
        CheckKind::Http {
            path: path.into(),
            expect_status: 200,
        }
    }

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    /// Waits (at most 10 s) until `f` holds for the target's status.
    fn wait_for(
        m: &HealthMonitor,
        c: &HealthCheck,
        a: SocketAddr,
        what: &str,
        f: impl Fn(&TargetStatus) -> bool,
    ) -> TargetStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = m.status_of(c, a).expect("target known");
            if f(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{what}: {st:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn counting_monitor() -> (HealthMonitor, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let m = HealthMonitor::start(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        (m, n)
    }

    #[test]
    fn tcp_listener_stays_up() {
        let srv = server(Some(b""));
        let (m, changes) = counting_monitor();
        let c = fast(CheckKind::Tcp);
        let a = local(srv.port);
        assert!(m.is_up(&c, a), "unknown targets are up");
        m.set_targets(vec![(c.clone(), a), (c.clone(), a)]);
        assert_eq!(m.statuses().len(), 1, "deduplicated");
        let st = wait_for(&m, &c, a, "three checks", |s| s.checks >= 3);
        assert!(st.up && st.failures == 0, "{st:?}");
        assert_eq!(changes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn refused_goes_down_after_fall_and_set_targets_keeps_state() {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let (m, changes) = counting_monitor();
        let c = fast(CheckKind::Tcp);
        let a = local(port);
        m.set_targets(vec![(c.clone(), a)]);
        let st = wait_for(&m, &c, a, "down", |s| !s.up);
        assert!(st.failures >= 2, "fall = 2: {st:?}");
        assert_eq!(st.last_error.as_deref(), Some("refused"));
        assert_eq!(st.transitions, 1);
        assert!(!m.is_up(&c, a));
        assert_eq!(changes.load(Ordering::SeqCst), 1);

        // Re-registering (plus another target) keeps the state.
        let srv = server(Some(b""));
        let other = local(srv.port);
        m.set_targets(vec![(c.clone(), other), (c.clone(), a)]);
        assert!(!m.is_up(&c, a), "state survives set_targets");
        assert_eq!(m.statuses().len(), 2);
        // Removed targets are forgotten (and unknown means up).
        m.set_targets(vec![(c.clone(), other)]);
        assert!(m.status_of(&c, a).is_none());
        assert!(m.is_up(&c, a));
        assert_eq!(m.statuses().len(), 1);
    }

    #[test]
    fn http_200_is_ok_and_the_request_is_well_formed() {
        let srv = server(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        let (m, _) = counting_monitor();
        let c = fast(http("/healthz?x=1"));
        let a = local(srv.port);
        m.set_targets(vec![(c.clone(), a)]);
        let st = wait_for(&m, &c, a, "three checks", |s| s.checks >= 3);
        assert!(st.up && st.failures == 0, "{st:?}");
        let req = srv.requests.lock()[0].clone();
        let want = format!(
            "GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: podlb-health/{}\r\nConnection: close\r\n\r\n",
            srv.port,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(req, want);
    }

    /// Every path the config accepts is one the client sends.
    #[test]
    fn accepted_paths_make_requests() {
        for p in [
            "/",
            "/healthz?x=1&y=%3C2%3E",
            "/{}|^\\",
            "/é",
            "/a?b{`}",
            "/a?b#",
            "/a\"b",
        ] {
            let accepted = check_path(p).is_ok();
            let sent = client::request(Method::GET, p, "h")
                .body(client::empty())
                .is_ok_and(|r| r.uri() == p);
            assert!(!accepted || sent, "{p}: accepted but not sent as is");
        }
    }

    #[test]
    fn http_500_goes_down() {
        let srv = server(Some(b"HTTP/1.1 500 Internal Server Error\r\n\r\n"));
        let (m, changes) = counting_monitor();
        let c = fast(http("/"));
        let a = local(srv.port);
        m.set_targets(vec![(c.clone(), a)]);
        let st = wait_for(&m, &c, a, "down", |s| !s.up);
        assert_eq!(st.last_error.as_deref(), Some("bad status 500"));
        assert_eq!(changes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn garbage_is_malformed() {
        let srv = server(Some(b"SSH-2.0-OpenSSH_9.6\r\n"));
        let (m, _) = counting_monitor();
        let c = fast(http("/"));
        let a = local(srv.port);
        m.set_targets(vec![(c.clone(), a)]);
        let st = wait_for(&m, &c, a, "down", |s| !s.up);
        let e = st.last_error.unwrap();
        assert!(e.contains("malformed"), "{e}");
    }

    #[test]
    fn silent_server_times_out() {
        let srv = server(None);
        let (m, _) = counting_monitor();
        let c = fast(http("/"));
        let a = local(srv.port);
        m.set_targets(vec![(c.clone(), a)]);
        let st = wait_for(&m, &c, a, "down", |s| !s.up);
        let e = st.last_error.unwrap();
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn down_target_rises_again() {
        // A server that answers 503 until told otherwise.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let a = local(l.local_addr().unwrap().port());
        let healthy = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (h2, s2) = (healthy.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let r: &[u8] = if h2.load(Ordering::SeqCst) {
                            b"HTTP/1.1 200 OK\r\n\r\n"
                        } else {
                            b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
                        };
                        let _ = s.write_all(r);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let (m, changes) = counting_monitor();
        let c = fast(http("/"));
        m.set_targets(vec![(c.clone(), a)]);
        wait_for(&m, &c, a, "down", |s| !s.up);
        healthy.store(true, Ordering::SeqCst);
        let st = wait_for(&m, &c, a, "up again", |s| s.up);
        assert_eq!(st.transitions, 2);
        assert_eq!(st.last_error.as_deref(), Some("bad status 503"));
        assert_eq!(changes.load(Ordering::SeqCst), 2);
        drop(m);
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
    }

    fn svc(name: &str, check: Option<HealthCheck>, ports: &[u16]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port: 80,
            mode: podlb_core::model::Mode::Nat,
            backends: ports
                .iter()
                .map(|&p| podlb_core::model::BackendConfig {
                    addr: SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 21), p)),
                    weight: 1,
                    vtep: None,
                    vtep_mac: None,
                })
                .collect(),
            table_size: 65537,
            health_check: check,
            vxlan_port: podlb_core::model::DEFAULT_VXLAN_PORT,
            vni: podlb_core::model::DEFAULT_VNI,
            mss_clamp: None,
            source_ranges: Vec::new(),
            affinity: Default::default(),
            udp_hash: Default::default(),
            protocol: Default::default(),
        }
    }

    #[test]
    fn refusing_backends_are_held_out_unless_none_would_be_left() {
        let c = HealthCheck::default();
        let services = vec![
            svc("checked", Some(c.clone()), &[1, 2, 3]),
            svc("unchecked", None, &[1, 2]),
            svc("only", None, &[2]),
        ];
        // Port 1 is down by its check; port 2 refused a connection.
        let (out, fail_open) = filter_services(&services, |_, a| a.port() != 1, |a| a.port() == 2);
        let ports =
            |s: &ServiceConfig| s.backends.iter().map(|b| b.addr.port()).collect::<Vec<_>>();
        assert_eq!(ports(&out[0]), vec![3]);
        assert_eq!(ports(&out[1]), vec![1]);
        assert_eq!(ports(&out[2]), vec![2], "never the last one");
        assert!(fail_open.is_empty());

        // The gate leaves a held backend out of the snapshot until its hold
        // ends (the hold rules: podlb_core::control::holds).
        let gate = HealthGate::new();
        let b = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 21), 2));
        let t0 = Instant::now();
        gate.holds
            .lock()
            .handle_refusal(t0, b, Duration::from_secs(10));
        assert_eq!(gate.held(t0), vec![(b, Duration::from_secs(10))]);
        let out = gate.services_for_snapshot(&services[1..]);
        assert_eq!(ports(&out[0]), vec![1]);
        gate.holds
            .lock()
            .handle_timeout(t0 + Duration::from_secs(10));
        assert!(gate.held(t0).is_empty());
        let out = gate.services_for_snapshot(&services[1..]);
        assert_eq!(ports(&out[0]), vec![1, 2]);
    }

    #[test]
    fn gate_starts_and_stops_the_monitor() {
        let g = HealthGate::new();
        let refused = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            local(l.local_addr().unwrap().port())
        };
        let services = vec![ServiceConfig {
            backends: vec![podlb_core::model::BackendConfig {
                addr: refused,
                weight: 1,
                vtep: None,
                vtep_mac: None,
            }],
            ..svc("s", Some(fast(CheckKind::Tcp)), &[])
        }];
        let out = g.services_for_snapshot(&services);
        assert_eq!(out, services, "new targets start up");
        assert!(g.monitor().is_some());
        assert_eq!(g.monitor().unwrap().statuses().len(), 1);
        // Nothing listens there; once it is down the service
        // fails open (one backend), counted once however often we rebuild.
        let m = g.monitor().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.statuses()[0].up {
            assert!(Instant::now() < deadline, "{:?}", m.statuses());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(g.take_changed());
        assert!(!g.take_changed());
        drop(m);
        for _ in 0..3 {
            assert_eq!(g.services_for_snapshot(&services), services);
        }
        assert_eq!(g.fail_open(), vec!["s".to_string()]);
        assert_eq!(g.fail_open_total.load(Ordering::Relaxed), 1);
        // No checks any more: the monitor stops.
        g.services_for_snapshot(&[svc("s", None, &[1])]);
        assert!(g.monitor().is_none());
        assert!(g.fail_open().is_empty());
    }

    // ---- UDP and DNS, against loopback sockets -----------------------------

    /// A loopback UDP server on its own thread answering each datagram with
    /// the datagrams `answer` returns; stops when dropped.
    struct UdpServer {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for UdpServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn udp_server(answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> UdpServer {
        let sock = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    for d in answer(&buf[..n]) {
                        let _ = sock.send_to(&d, from);
                    }
                }
            }
        });
        UdpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// A loopback UDP port nothing listens on.
    fn closed_udp_port() -> u16 {
        let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.local_addr().unwrap().port()
    }

    /// One probe, on a runtime of its own; also returns how long it took.
    fn probe_now(kind: CheckKind, port: u16, timeout_ms: u64) -> (Result<(), String>, Duration) {
        let c = HealthCheck {
            timeout: Duration::from_millis(timeout_ms),
            ..fast(kind)
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t0 = Instant::now();
        let r = rt.block_on(probe(&c, local(port)));
        (r, t0.elapsed())
    }

    fn udp(send: &[u8], expect: Option<&[u8]>) -> CheckKind {
        CheckKind::Udp {
            send: send.to_vec(),
            expect: expect.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn udp_reply_passes_and_expect_is_a_prefix() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let srv = udp_server(move |d| {
            seen2.lock().push(d.to_vec());
            vec![[b"echo:", d].concat()]
        });
        assert_eq!(probe_now(udp(b"ping", None), srv.port, 2000).0, Ok(()));
        assert_eq!(seen.lock()[0], b"ping");
        assert_eq!(
            probe_now(udp(b"\0", Some(b"echo:")), srv.port, 2000).0,
            Ok(())
        );
        assert_eq!(
            probe_now(udp(b"ping", Some(b"echo:ping")), srv.port, 2000).0,
            Ok(())
        );
        assert_eq!(
            probe_now(udp(b"ping", Some(b"pong")), srv.port, 2000).0,
            Err("unexpected reply \"echo:ping\"".into())
        );
        // A reply shorter than `expect` is no match either.
        assert!(
            probe_now(udp(b"p", Some(b"echo:p and more")), srv.port, 2000)
                .0
                .unwrap_err()
                .starts_with("unexpected reply")
        );
        // An empty datagram goes out and may be answered.
        assert_eq!(probe_now(udp(b"", None), srv.port, 2000).0, Ok(()));
    }

    #[test]
    fn udp_port_unreachable_fails_at_once() {
        let port = closed_udp_port();
        for kind in [
            udp(b"ping", None),
            CheckKind::Dns {
                name: "example.com".into(),
            },
        ] {
            let (r, took) = probe_now(kind.clone(), port, 5000);
            assert_eq!(r, Err("port unreachable".into()), "{kind:?}");
            assert!(took < Duration::from_secs(2), "{kind:?}: {took:?}");
        }
    }

    #[test]
    fn silent_udp_and_dns_servers_time_out() {
        let srv = udp_server(|_| Vec::new());
        for kind in [
            udp(b"ping", None),
            CheckKind::Dns {
                name: "example.com".into(),
            },
        ] {
            let (r, _) = probe_now(kind, srv.port, 50);
            assert_eq!(r, Err("timeout after 50 ms".into()));
        }
    }

    /// `q`'s header with QR, RA and `rcode`, then its question.
    fn dns_reply(q: &[u8], rcode: u8) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x80 | rcode;
        r
    }

    #[test]
    fn dns_answers() {
        let dns = || CheckKind::Dns {
            name: "example.com".into(),
        };
        let queries = Arc::new(Mutex::new(Vec::new()));
        let q2 = queries.clone();
        let rcode = Arc::new(AtomicUsize::new(0));
        let r2 = rcode.clone();
        let srv = udp_server(move |q| {
            q2.lock().push(q.to_vec());
            vec![dns_reply(q, r2.load(Ordering::SeqCst) as u8)]
        });
        assert_eq!(probe_now(dns(), srv.port, 2000).0, Ok(()));
        // The query is the one podlb_core::health::dns builds.
        let q = queries.lock()[0].clone();
        let id = u16::from_be_bytes([q[0], q[1]]);
        assert_eq!(q, health::dns::query(id, "example.com").unwrap());
        for (rc, want) in [
            (3, Ok(())),
            (2, Err("rcode SERVFAIL (2)".to_string())),
            (5, Err("rcode REFUSED (5)".to_string())),
        ] {
            rcode.store(rc, Ordering::SeqCst);
            assert_eq!(probe_now(dns(), srv.port, 2000).0, want, "rcode {rc}");
        }
        // IDs differ from probe to probe.
        let ids: HashSet<u16> = queries
            .lock()
            .iter()
            .map(|q| u16::from_be_bytes([q[0], q[1]]))
            .collect();
        assert!(ids.len() > 1, "{ids:?}");
    }

    #[test]
    fn dns_skips_other_ids_and_fails_on_malformed_replies() {
        let dns = || CheckKind::Dns {
            name: "example.com".into(),
        };
        // Someone else's answer first, then ours.
        let srv = udp_server(|q| {
            let mut other = dns_reply(q, 2);
            other[0] ^= 0xff;
            vec![other, dns_reply(q, 0)]
        });
        assert_eq!(probe_now(dns(), srv.port, 2000).0, Ok(()));
        // Only someone else's answer: no answer.
        let srv = udp_server(|q| {
            let mut other = dns_reply(q, 0);
            other[1] ^= 0xff;
            vec![other]
        });
        assert_eq!(
            probe_now(dns(), srv.port, 50).0,
            Err("timeout after 50 ms".into())
        );
        // Too short, and an echo of the query (QR = 0).
        let srv = udp_server(|q| vec![q[..5].to_vec()]);
        let e = probe_now(dns(), srv.port, 2000).0.unwrap_err();
        assert!(e.contains("malformed reply: 5 bytes"), "{e}");
        let srv = udp_server(|q| vec![q.to_vec()]);
        let e = probe_now(dns(), srv.port, 2000).0.unwrap_err();
        assert!(e.contains("QR = 0"), "{e}");
    }

    #[test]
    fn udp_targets_in_the_monitor() {
        let port = closed_udp_port();
        let (m, changes) = counting_monitor();
        let c = fast(udp(b"ping", None));
        let a = local(port);
        m.set_targets(vec![(c.clone(), a)]);
        let st = wait_for(&m, &c, a, "down", |s| !s.up);
        assert_eq!(st.last_error.as_deref(), Some("port unreachable"));
        assert_eq!(changes.load(Ordering::SeqCst), 1);
        assert!(
            st.check.starts_with("udp send \"ping\" expect any reply"),
            "{}",
            st.check
        );
        // A server on another port answers: that target stays up.
        let srv = udp_server(|d| vec![d.to_vec()]);
        let b = local(srv.port);
        m.set_targets(vec![(c.clone(), a), (c.clone(), b)]);
        let st = wait_for(&m, &c, b, "three checks", |s| s.checks >= 3);
        assert!(st.up && st.failures == 0, "{st:?}");
    }

    #[test]
    fn drop_stops_the_thread() {
        let (m, _) = counting_monitor();
        let c = fast(CheckKind::Tcp);
        m.set_targets(vec![(c, local(1))]);
        // Sends the stop and joins (bounded); must not panic or hang.
        drop(m);
    }
}
