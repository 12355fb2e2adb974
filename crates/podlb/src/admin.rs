//! Admin HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /status`
//! and `GET /flows?limit=N` (JSON), `GET /healthz`.
//!
//! A deliberately small HTTP/1.1 server on one thread: requests are bounded
//! in size and time, every response closes the connection. It reads only
//! shared counters and lock-free tables, so a busy admin client can never
//! slow the data plane.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::cloud::{CloudView, CALL_ACTIONS};
use crate::engine::EngineView;
use crate::k8s::client::KubeView;
use crate::redundancy::{Histogram, STATE_NAMES, TAKEOVER_BUCKETS};
use podlb_core::flow::Phase;
use podlb_core::stats::{total, BackendCounter, DropReason, Event, WorkerStats};
use podlb_wire::vrrp::AdvertDrop;

const MAX_REQUEST: usize = 8192;

pub fn serve(listener: TcpListener, view: Arc<EngineView>) {
    for conn in listener.incoming() {
        if view.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = conn else { continue };
        if let Err(e) = handle(stream, &view) {
            tracing::debug!(error = %e, "admin request failed");
        }
    }
}

fn handle(mut s: TcpStream, view: &EngineView) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut s, 431, "text/plain", "request header too large\n");
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut s, 405, "text/plain", "only GET\n");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/metrics" => respond(&mut s, 200, "text/plain; version=0.0.4", &metrics(view)),
        "/status" => respond(&mut s, 200, "application/json", &status(view).to_string()),
        "/flows" => {
            let limit = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100)
                .min(100_000);
            respond(
                &mut s,
                200,
                "application/json",
                &flows(view, limit).to_string(),
            )
        }
        "/healthz" => respond(&mut s, 200, "text/plain", "ok\n"),
        _ => respond(
            &mut s,
            404,
            "text/plain",
            "not found: try /metrics, /status, /flows, /healthz\n",
        ),
    }
}

fn respond(s: &mut TcpStream, code: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    write!(s, "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    s.flush()
}

fn all_stats(view: &EngineView) -> impl Iterator<Item = &WorkerStats> + Clone {
    view.workers
        .iter()
        .map(|w| &**w)
        .chain(std::iter::once(&*view.control))
}

/// One row per (service, backend) the engine knows: configured or draining.
struct BackendRow {
    service: String,
    addr: std::net::SocketAddrV4,
    slot: u16,
    configured: bool,
    /// The address whose MAC podlb sends to (the VTEP's next hop for vxlan).
    l2_target: u32,
    vtep: Option<podlb_core::service::Vtep>,
}

fn backend_rows(view: &EngineView) -> Vec<BackendRow> {
    let snap = view.shared.snapshot.load();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for s in &snap.services {
        for b in &s.backends {
            seen.insert(b.stat);
            rows.push(BackendRow {
                service: s.name.clone(),
                addr: b.addr,
                slot: b.stat,
                configured: true,
                l2_target: b.l2_target(),
                vtep: b.vtep,
            });
        }
    }
    let reg = view.registry.lock();
    for slot in 0..reg.len() as u16 {
        if !seen.contains(&slot) && view.active[slot as usize].load(Ordering::Relaxed) > 0 {
            if let Some((svc, addr)) = reg.name(slot) {
                rows.push(BackendRow {
                    service: svc.clone(),
                    addr: *addr,
                    slot,
                    configured: false,
                    l2_target: u32::from(*addr.ip()),
                    vtep: snap.vtep(u32::from(*addr.ip())).copied(),
                });
            }
        }
    }
    rows
}

/// One health-checked (service, backend) pair and its target's status
/// (`None` until the monitor knows it: counted as up).
struct HealthRow {
    service: String,
    backend: std::net::SocketAddrV4,
    status: Option<crate::health::TargetStatus>,
}

fn health_rows(view: &EngineView) -> Vec<HealthRow> {
    let services = view.desired.lock().clone();
    let monitor = view.health.monitor();
    let mut rows = Vec::new();
    for s in &services {
        let Some(c) = &s.health_check else { continue };
        for b in &s.backends {
            rows.push(HealthRow {
                service: s.name.clone(),
                backend: b.addr,
                status: monitor
                    .as_ref()
                    .and_then(|m| m.status_of(c, c.target(b.addr))),
            });
        }
    }
    rows
}

/// `podlb_backend_health_up`, `podlb_health_checks_total` and
/// `podlb_health_fail_open_total`.
fn health_metrics(o: &mut String, view: &EngineView) {
    let rows = health_rows(view);
    let _ = writeln!(o, "# HELP podlb_backend_health_up 1 if the backend passes its health check (or is not checked yet), 0 if it is down.\n# TYPE podlb_backend_health_up gauge");
    for r in &rows {
        let up = r.status.as_ref().is_none_or(|s| s.up);
        let _ = writeln!(
            o,
            "podlb_backend_health_up{{service=\"{}\",backend=\"{}\"}} {}",
            r.service, r.backend, up as u8
        );
    }
    let _ = writeln!(o, "# HELP podlb_health_checks_total Health-check probes, by result.\n# TYPE podlb_health_checks_total counter");
    for r in &rows {
        let (checks, failures) = r.status.as_ref().map_or((0, 0), |s| (s.checks, s.failures));
        for (result, v) in [("ok", checks - failures), ("fail", failures)] {
            let _ = writeln!(
                o,
                "podlb_health_checks_total{{service=\"{}\",backend=\"{}\",result=\"{result}\"}} {v}",
                r.service, r.backend
            );
        }
    }
    single(
        o,
        "podlb_health_fail_open_total",
        "Times every backend of a service was down and all were kept (fail open).",
        "counter",
        "",
        view.health.fail_open_total.load(Ordering::Relaxed),
    );
    single(
        o,
        "podlb_backend_refusals_total",
        "SYNs a backend answered with a RST, withheld so the client's retry went to another backend (flows.refused_hold_s).",
        "counter",
        "",
        view.health.refusals_total.load(Ordering::Relaxed),
    );
    single(
        o,
        "podlb_backends_refused_held",
        "Backends held out of new connections after refusing one.",
        "gauge",
        "",
        view.health.held(std::time::Instant::now()).len(),
    );
}

/// One metric with a single sample: HELP, TYPE and the value (`labels`
/// without braces, or empty).
fn single(
    o: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    labels: &str,
    value: impl std::fmt::Display,
) {
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
    );
}

fn metrics(view: &EngineView) -> String {
    let st = all_stats(view);
    let mut o = String::with_capacity(8192);
    let _ = writeln!(
        o,
        "# HELP podlb_drops_total Frames dropped, by reason.\n# TYPE podlb_drops_total counter"
    );
    for r in DropReason::ALL {
        let _ = writeln!(
            o,
            "podlb_drops_total{{reason=\"{}\"}} {}",
            r.as_str(),
            total(st.clone(), |w| w.drops(r))
        );
    }
    for (e, help) in [
        (Event::RxPackets, "Frames received."),
        (Event::RxBytes, "Bytes received."),
        (Event::TxPackets, "Frames transmitted."),
        (
            Event::Ignored,
            "Frames not addressed to podlb, left to the kernel.",
        ),
        (Event::ArpRepliesSent, "ARP replies sent for VIPs."),
        (
            Event::ArpLearned,
            "ARP packets a tracked neighbor's MAC was learned from.",
        ),
        (Event::IcmpEchoReplies, "ICMP echo replies sent for VIPs."),
        (Event::FlowPickups, "Mid-stream flows adopted."),
        (
            Event::FlowsRecycled,
            "Closing flows replaced by a new SYN on the same 4-tuple.",
        ),
        (
            Event::VxlanEncapsulated,
            "Frames sent VXLAN-encapsulated to a backend's VTEP (RFC 7348).",
        ),
        (
            Event::VxlanDecapsulated,
            "VXLAN-encapsulated backend replies unwrapped.",
        ),
        (
            Event::GsoSegmented,
            "GSO frames of vxlan services segmented in software.",
        ),
        (Event::GsoSegments, "Segments made from those GSO frames."),
        (Event::MssClamped, "SYN and SYN-ACK MSS options clamped."),
        (
            Event::ArpOtherTarget,
            "ARP requests for addresses podlb does not answer, left to the kernel.",
        ),
    ] {
        let name = format!("podlb_{}_total", e.as_str());
        single(
            &mut o,
            &name,
            help,
            "counter",
            "",
            total(st.clone(), |w| w.events(e)),
        );
    }
    for (name, help, v) in [
        (
            "podlb_arp_requests_sent_total",
            "ARP requests sent to resolve backends.",
            view.arp_requests.load(Ordering::Relaxed),
        ),
        (
            "podlb_garp_sent_total",
            "Gratuitous ARP announcements sent for VIPs.",
            view.garp_sent.load(Ordering::Relaxed),
        ),
        (
            "podlb_garp_unicast_sent_total",
            "Unicast ARP replies sent to clients after becoming master (garp_unicast_clients).",
            view.garp_unicast_sent.load(Ordering::Relaxed),
        ),
        (
            "podlb_vip_defences_total",
            "Gratuitous ARPs sent to defend a VIP another host claimed (RFC 5227 section 2.4).",
            view.vip_defences.load(Ordering::Relaxed),
        ),
        (
            "podlb_config_reloads_total",
            "Successful config reloads.",
            view.reloads.load(Ordering::Relaxed),
        ),
        (
            "podlb_config_reload_errors_total",
            "Config reloads rejected (old config kept).",
            view.reload_errors.load(Ordering::Relaxed),
        ),
        (
            "podlb_flow_evictions_total",
            "Flows evicted to make room (policy: expired, then half-open, then closing).",
            view.shared.flows.evictions(),
        ),
    ] {
        single(&mut o, name, help, "counter", "", v);
    }
    let _ = writeln!(
        o,
        "# HELP podlb_vip_conflicts_total ARP frames from another MAC claiming a VIP (RFC 5227 section 2.4), by VIP.\n# TYPE podlb_vip_conflicts_total counter"
    );
    for (vip, n) in view.conflicts_per_vip.lock().iter() {
        let _ = writeln!(o, "podlb_vip_conflicts_total{{vip=\"{vip}\"}} {n}");
    }
    let flows = &view.shared.flows;
    single(
        &mut o,
        "podlb_flows_active",
        "Flows in the connection table.",
        "gauge",
        "",
        flows.len(),
    );
    single(
        &mut o,
        "podlb_flows_capacity",
        "Connection table capacity.",
        "gauge",
        "",
        flows.capacity(),
    );

    let rows = backend_rows(view);
    let per =
        |name: &str, help: &str, kind: &str, o: &mut String, f: &dyn Fn(&BackendRow) -> String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &rows {
                let _ = writeln!(
                    o,
                    "{name}{{service=\"{}\",backend=\"{}\"}} {}",
                    r.service,
                    r.addr,
                    f(r)
                );
            }
        };
    let sum = |slot: u16, c: BackendCounter| total(all_stats(view), |w| w.backend_value(slot, c));
    per(
        "podlb_backend_new_flows_total",
        "Flows steered to the backend.",
        "counter",
        &mut o,
        &|r| sum(r.slot, BackendCounter::NewFlows).to_string(),
    );
    per(
        "podlb_backend_active_flows",
        "Flows of the backend in the table (as of the last sweep, ≤1 s old).",
        "gauge",
        &mut o,
        &|r| {
            view.active[r.slot as usize]
                .load(Ordering::Relaxed)
                .to_string()
        },
    );
    per(
        "podlb_backend_up",
        "1 if the backend is configured, 0 if it is draining.",
        "gauge",
        &mut o,
        &|r| (r.configured as u8).to_string(),
    );
    // Each metric's samples stay together, as the text format requires.
    for (metric, help, dirs) in [
        (
            "podlb_backend_packets_total",
            "Packets forwarded, by direction.",
            [
                ("to_backend", BackendCounter::PacketsToBackend),
                ("to_client", BackendCounter::PacketsToClient),
            ],
        ),
        (
            "podlb_backend_bytes_total",
            "Bytes forwarded, by direction.",
            [
                ("to_backend", BackendCounter::BytesToBackend),
                ("to_client", BackendCounter::BytesToClient),
            ],
        ),
    ] {
        let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for r in &rows {
            for (dir, c) in dirs {
                let _ = writeln!(
                    o,
                    "{metric}{{service=\"{}\",backend=\"{}\",direction=\"{dir}\"}} {}",
                    r.service,
                    r.addr,
                    sum(r.slot, c)
                );
            }
        }
    }
    health_metrics(&mut o, view);
    if let Some(v) = &view.vrrp {
        let vrid = v.vrid;
        let state = v.state.load(Ordering::Relaxed) as usize;
        let _ = writeln!(o, "# HELP podlb_vrrp_state 1 for the state this instance is in, per VRID.\n# TYPE podlb_vrrp_state gauge");
        for (i, name) in STATE_NAMES.iter().enumerate() {
            let _ = writeln!(
                o,
                "podlb_vrrp_state{{vrid=\"{vrid}\",state=\"{name}\"}} {}",
                (i == state) as u8
            );
        }
        let _ = writeln!(o, "# HELP podlb_vrrp_transitions_total State changes, by the state entered.\n# TYPE podlb_vrrp_transitions_total counter");
        for (i, name) in STATE_NAMES.iter().enumerate() {
            let _ = writeln!(
                o,
                "podlb_vrrp_transitions_total{{vrid=\"{vrid}\",to=\"{name}\"}} {}",
                v.transitions[i].load(Ordering::Relaxed)
            );
        }
        for (name, help, val) in [
            (
                "podlb_vrrp_priority",
                "Current priority (after tracking).",
                v.priority.load(Ordering::Relaxed) as u64,
            ),
            (
                "podlb_vrrp_adverts_sent_total",
                "Adverts sent.",
                v.adverts_sent.load(Ordering::Relaxed),
            ),
            (
                "podlb_vrrp_adverts_received_total",
                "Adverts accepted.",
                v.adverts_received.load(Ordering::Relaxed),
            ),
            (
                "podlb_vrrp_unknown_peer_total",
                "Adverts from addresses that are not unicast peers.",
                v.unknown_peer.load(Ordering::Relaxed),
            ),
            (
                "podlb_vrrp_hooks_run_total",
                "Notify hooks started.",
                v.hooks_run.load(Ordering::Relaxed),
            ),
            (
                "podlb_vrrp_hook_errors_total",
                "Notify hooks that failed to start or exited non-zero.",
                v.hook_errors.load(Ordering::Relaxed),
            ),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            single(&mut o, name, help, kind, &format!("vrid=\"{vrid}\""), val);
        }
        let _ = writeln!(o, "# HELP podlb_vrrp_drops_total Adverts discarded, by RFC 9568 §7.1 check.\n# TYPE podlb_vrrp_drops_total counter");
        for d in AdvertDrop::ALL {
            let _ = writeln!(
                o,
                "podlb_vrrp_drops_total{{vrid=\"{vrid}\",reason=\"{}\"}} {}",
                d.as_str(),
                v.drops[d as usize].load(Ordering::Relaxed)
            );
        }
        histogram(
            &mut o,
            "podlb_takeover_seconds",
            "Master-down detected to first frame forwarded as master.",
            &format!("vrid=\"{vrid}\","),
            &v.takeover,
        );
    }
    if let Some(k) = &view.kube {
        kube_metrics(&mut o, view, k);
    }
    if let Some(c) = &view.cloud {
        cloud_metrics(&mut o, &c.view);
    }
    if let Some(v) = &view.sync {
        for (name, help, c) in [
            (
                "podlb_sync_datagrams_sent_total",
                "Connection-sync datagrams sent.",
                &v.datagrams_sent,
            ),
            (
                "podlb_sync_events_sent_total",
                "Flow events sent to backups.",
                &v.events_sent,
            ),
            (
                "podlb_sync_send_errors_total",
                "Sync datagrams the kernel refused.",
                &v.send_errors,
            ),
            (
                "podlb_sync_datagrams_received_total",
                "Sync datagrams received.",
                &v.datagrams_received,
            ),
            (
                "podlb_sync_events_received_total",
                "Flow events received from a master.",
                &v.events_received,
            ),
            (
                "podlb_sync_auth_failures_total",
                "Sync datagrams without a valid tag, or replayed (with a shared key).",
                &v.auth_failures,
            ),
            (
                "podlb_sync_rejected_total",
                "Sync datagrams from a sender that is neither the master nor a peer.",
                &v.rejected,
            ),
            (
                "podlb_sync_decode_errors_total",
                "Sync datagrams that did not decode.",
                &v.decode_errors,
            ),
            (
                "podlb_sync_gaps_total",
                "Sync datagrams lost (sequence gaps).",
                &v.gaps,
            ),
            (
                "podlb_sync_installed_total",
                "Synced flows installed.",
                &v.installed,
            ),
            (
                "podlb_sync_refreshed_total",
                "Synced flows refreshed.",
                &v.refreshed,
            ),
            (
                "podlb_sync_replaced_total",
                "Synced flows that replaced a different local entry.",
                &v.replaced,
            ),
            (
                "podlb_sync_removed_total",
                "Synced flow removals applied.",
                &v.removed,
            ),
            (
                "podlb_sync_table_full_total",
                "Synced flows that found no room.",
                &v.table_full,
            ),
            (
                "podlb_sync_unknown_service_total",
                "Synced flows for a VIP:port this instance does not serve.",
                &v.unknown_service,
            ),
            (
                "podlb_sync_tables_sent_total",
                "Whole connection tables sent to a new backup.",
                &v.tables_sent,
            ),
            (
                "podlb_sync_tables_received_total",
                "Whole connection tables received from the master.",
                &v.tables_received,
            ),
        ] {
            single(&mut o, name, help, "counter", "", c.load(Ordering::Relaxed));
        }
        let peers = v.peers.load(Ordering::Relaxed);
        single(
            &mut o,
            "podlb_sync_peers",
            "Instances this one streams to (configured and learned).",
            "gauge",
            "",
            peers,
        );
    }
    o
}

/// A Prometheus histogram; `labels` is empty or ends with a comma.
fn cloud_metrics(o: &mut String, c: &CloudView) {
    let _ = writeln!(o, "# HELP podlb_cloud_calls_total Cloud API calls (exec: commands run), by action and result.\n# TYPE podlb_cloud_calls_total counter");
    for (i, action) in CALL_ACTIONS.iter().enumerate() {
        for (j, result) in ["ok", "error"].iter().enumerate() {
            let _ = writeln!(
                o,
                "podlb_cloud_calls_total{{action=\"{action}\",result=\"{result}\"}} {}",
                c.calls[i][j].load(Ordering::Relaxed)
            );
        }
    }
    single(
        o,
        "podlb_cloud_owned",
        "1 while this instance is master and its last claim or check found the addresses its own.",
        "gauge",
        "",
        (c.state() == "claimed") as u8,
    );
}

fn histogram(o: &mut String, name: &str, help: &str, labels: &str, h: &Histogram) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, le) in TAKEOVER_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            o,
            "{name}_bucket{{{labels}le=\"{le}\"}} {}",
            h.buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(o, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let bare = labels.trim_end_matches(',');
    let _ = writeln!(
        o,
        "{name}_sum{{{bare}}} {}\n{name}_count{{{bare}}} {count}",
        h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
}

fn kube_metrics(o: &mut String, view: &EngineView, k: &KubeView) {
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, kind, v) in [
        (
            "podlb_k8s_synced",
            "1 once Services and EndpointSlices have been listed.",
            "gauge",
            u64::from(k.synced.load(Ordering::Relaxed)),
        ),
        (
            "podlb_k8s_services",
            "Kubernetes Services served.",
            "gauge",
            g(&k.services),
        ),
        (
            "podlb_k8s_services_ignored",
            "Services that are not podlb's.",
            "gauge",
            g(&k.ignored),
        ),
        (
            "podlb_k8s_problems",
            "Services with a problem (see /status and their Events).",
            "gauge",
            k.problems.lock().len() as u64,
        ),
        (
            "podlb_k8s_watch_events_total",
            "Watch events received.",
            "counter",
            g(&k.watch_events),
        ),
        (
            "podlb_k8s_watch_errors_total",
            "Watch errors (retried with back-off).",
            "counter",
            g(&k.watch_errors),
        ),
        (
            "podlb_k8s_relists_total",
            "Lists after the first (410 Gone, reconnects).",
            "counter",
            g(&k.relists),
        ),
        (
            "podlb_k8s_reconciles_total",
            "Reconciliations run.",
            "counter",
            g(&k.reconciles),
        ),
        (
            "podlb_k8s_updates_total",
            "Changes handed to the data plane.",
            "counter",
            g(&k.updates_published),
        ),
        (
            "podlb_k8s_status_writes_total",
            "Service status writes.",
            "counter",
            g(&k.status_writes),
        ),
        (
            "podlb_k8s_status_errors_total",
            "Failed Service status writes.",
            "counter",
            g(&k.status_errors),
        ),
        (
            "podlb_k8s_events_total",
            "Warning Events sent.",
            "counter",
            g(&k.events_sent),
        ),
        (
            "podlb_k8s_event_errors_total",
            "Events that could not be sent.",
            "counter",
            g(&k.event_errors),
        ),
    ] {
        single(o, name, help, kind, "", v);
    }
    if let Some(l) = &k.lease {
        single(
            o,
            "podlb_lease_state",
            "0 initialize, 1 backup, 2 holder, 3 fault.",
            "gauge",
            "",
            u64::from(l.state.load(Ordering::Relaxed)),
        );
        single(
            o,
            "podlb_lease_acquired_total",
            "Times the Lease was acquired.",
            "counter",
            "",
            g(&l.acquired),
        );
        single(
            o,
            "podlb_lease_errors_total",
            "Failed Lease calls.",
            "counter",
            "",
            g(&l.errors),
        );
        single(
            o,
            "podlb_lease_conflicts_total",
            "Lease writes lost to another instance (409).",
            "counter",
            "",
            g(&l.conflicts),
        );
    }
    histogram(
        o,
        "podlb_k8s_update_seconds",
        "API watch event to the first frame sent with the snapshot it made.",
        "",
        &view.update_latency,
    );
    histogram(
        o,
        "podlb_k8s_publish_seconds",
        "API watch event to the snapshot published.",
        "",
        &view.publish_latency,
    );
}

fn kube_status(view: &EngineView, k: &KubeView) -> serde_json::Value {
    let mean_ms = |h: &Histogram| {
        let c = h.count.load(Ordering::Relaxed);
        (c > 0).then(|| h.sum_us.load(Ordering::Relaxed) as f64 / 1e3 / c as f64)
    };
    json!({
        "namespace": *k.namespace.lock(),
        "identity": *k.identity.lock(),
        "synced": k.synced.load(Ordering::Relaxed),
        "services": k.services.load(Ordering::Relaxed),
        "ignored": k.ignored.load(Ordering::Relaxed),
        "allocations": k.allocations.lock().iter().map(|(ns, n, ip)| json!({
            "service": format!("{ns}/{n}"), "vip": ip.to_string(),
        })).collect::<Vec<_>>(),
        "problems": k.problems.lock().iter().map(|p| json!({
            "service": format!("{}/{}", p.namespace, p.name),
            "reason": p.reason.as_str(),
            "message": p.message,
        })).collect::<Vec<_>>(),
        "draining": k.draining.lock().iter().map(|(s, eps)| json!({
            "service": s, "endpoints": eps.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "peers": k.peers.lock().as_ref().map(|p| p.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
        "watch_events": k.watch_events.load(Ordering::Relaxed),
        "watch_errors": k.watch_errors.load(Ordering::Relaxed),
        "relists": k.relists.load(Ordering::Relaxed),
        "status_writes": k.status_writes.load(Ordering::Relaxed),
        "status_errors": k.status_errors.load(Ordering::Relaxed),
        "events_sent": k.events_sent.load(Ordering::Relaxed),
        "last_error": *k.last_error.lock(),
        "updates": view.update_latency.count.load(Ordering::Relaxed),
        "update_mean_ms": mean_ms(&view.update_latency),
        "publish_mean_ms": mean_ms(&view.publish_latency),
        "lease": k.lease.as_ref().map(|l| json!({
            "state": STATE_NAMES[l.state.load(Ordering::Relaxed).min(3) as usize],
            "holder": *l.holder.lock(),
            "acquired": l.acquired.load(Ordering::Relaxed),
            "errors": l.errors.load(Ordering::Relaxed),
            "last_error": *l.last_error.lock(),
        })),
    })
}

fn status(view: &EngineView) -> serde_json::Value {
    let cfg = view.config.load();
    let snap = view.shared.snapshot.load();
    let st = all_stats(view);
    let neighbors = view.shared.neighbors.entries();
    let mac_of = |ip: u32| {
        neighbors
            .iter()
            .find(|n| n.ip == ip)
            .and_then(|n| n.mac)
            .map(|m| m.to_string())
    };
    let rows = backend_rows(view);
    let sum = |slot: u16, c: BackendCounter| total(all_stats(view), |w| w.backend_value(slot, c));
    let services: Vec<_> = snap
        .services
        .iter()
        .map(|s| {
            let backends: Vec<_> = rows
                .iter()
                .filter(|r| r.service == s.name)
                .map(|r| {
                    json!({
                        "addr": r.addr.to_string(),
                        "mac": mac_of(r.l2_target),
                        "vtep": r.vtep.map(|v| Ipv4Addr::from(v.ip).to_string()),
                        "vtep_mac": r.vtep.map(|v| v.mac.to_string()),
                        "next_hop": r.vtep.map(|v| Ipv4Addr::from(v.next_hop).to_string()),
                        "state": if r.configured { "active" } else { "draining" },
                        "active_flows": view.active[r.slot as usize].load(Ordering::Relaxed),
                        "new_flows": sum(r.slot, BackendCounter::NewFlows),
                        "packets_to_backend": sum(r.slot, BackendCounter::PacketsToBackend),
                        "packets_to_client": sum(r.slot, BackendCounter::PacketsToClient),
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "vip": Ipv4Addr::from(s.vip).to_string(),
                "port": s.port,
                "mode": s.mode.as_str(),
                "backends": backends,
            })
        })
        .collect();
    let drops: serde_json::Map<String, serde_json::Value> = DropReason::ALL
        .iter()
        .map(|&r| {
            (
                r.as_str().to_string(),
                json!(total(st.clone(), |w| w.drops(r))),
            )
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": view.started.elapsed().as_secs(),
        "interface": {
            "mode": cfg.attach.mode_str(),
            "name": view.interface,
            "mac": view.mac.to_string(),
            "workers": view.workers.len(),
        },
        "config_generation": snap.generation,
        "last_reload_error": *view.last_reload_error.lock(),
        "flows": {
            "active": view.shared.flows.len(),
            "capacity": view.shared.flows.capacity(),
            "evictions": view.shared.flows.evictions(),
            "memory_bytes": view.shared.flows.memory_bytes(),
        },
        "services": services,
        "neighbors": neighbors.iter().map(|n| json!({
            "ip": Ipv4Addr::from(n.ip).to_string(),
            "mac": n.mac.map(|m| m.to_string()),
        })).collect::<Vec<_>>(),
        "drops": drops,
        "health": health_rows(view).iter().map(|r| {
            let st = r.status.as_ref();
            json!({
                "service": r.service,
                "addr": r.backend.to_string(),
                "target": st.map(|s| s.addr.to_string()),
                "check": st.map(|s| s.check.clone()),
                "up": st.is_none_or(|s| s.up),
                "checks": st.map_or(0, |s| s.checks),
                "failures": st.map_or(0, |s| s.failures),
                "transitions": st.map_or(0, |s| s.transitions),
                "last_error": st.and_then(|s| s.last_error.clone()),
            })
        }).collect::<Vec<_>>(),
        "health_fail_open": view.health.fail_open(),
        "refused_held": view.health.held(std::time::Instant::now()).iter().map(|(a, left)| json!({
            "backend": a.to_string(),
            "left_ms": left.as_millis() as u64,
        })).collect::<Vec<_>>(),
        "vrrp": view.vrrp.as_ref().map(|v| {
            let master = v.master.load(Ordering::Relaxed);
            let count = v.takeover.count.load(Ordering::Relaxed);
            json!({
                "vrid": v.vrid,
                "state": STATE_NAMES[v.state.load(Ordering::Relaxed) as usize],
                "priority": v.priority.load(Ordering::Relaxed),
                "master": (master != 0).then(|| Ipv4Addr::from(master).to_string()),
                "unicast_peers": v.unicast_peers.lock().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "adverts_sent": v.adverts_sent.load(Ordering::Relaxed),
                "adverts_received": v.adverts_received.load(Ordering::Relaxed),
                "takeovers": count,
                "takeover_mean_ms": (count > 0).then(|| v.takeover.sum_us.load(Ordering::Relaxed) as f64 / 1e3 / count as f64),
            })
        }),
        "kubernetes": view.kube.as_ref().map(|k| kube_status(view, k)),
        "cloud": view.cloud.as_ref().map(|c| {
            let c = &c.view;
            let sum = |j: usize| c.calls.iter().map(|r| r[j].load(Ordering::Relaxed)).sum::<u64>();
            json!({
                "provider": c.provider,
                "role": STATE_NAMES[c.role.load(Ordering::Relaxed) as usize % STATE_NAMES.len()],
                "state": c.state(),
                "calls": sum(0) + sum(1),
                "errors": c.errors.load(Ordering::Relaxed),
                "last_ok": *c.last_ok.lock(),
                "last_error": *c.last_error.lock(),
            })
        }),
        "arp": {
            "replies_sent": total(st.clone(), |w| w.events(Event::ArpRepliesSent)),
            "requests_sent": view.arp_requests.load(Ordering::Relaxed),
            "garp_sent": view.garp_sent.load(Ordering::Relaxed),
            "garp_unicast_sent": view.garp_unicast_sent.load(Ordering::Relaxed),
            "vip_defences": view.vip_defences.load(Ordering::Relaxed),
            "other_target_requests": total(st.clone(), |w| w.events(Event::ArpOtherTarget)),
        },
        "conflicts": view.conflicts.lock().iter().map(|c| json!({
            "vip": c.vip.to_string(),
            "mac": c.mac.to_string(),
            "last_seen_s": c.last_seen.elapsed().as_secs(),
            "count": c.count,
        })).collect::<Vec<_>>(),
        "packets": {
            "rx": total(st.clone(), |w| w.events(Event::RxPackets)),
            "tx": total(st.clone(), |w| w.events(Event::TxPackets)),
            "ignored": total(st, |w| w.events(Event::Ignored)),
        },
    })
}

fn flows(view: &EngineView, limit: usize) -> serde_json::Value {
    let now = view.shared.now_ms();
    let reg = view.registry.lock();
    let mut out = Vec::new();
    view.shared.flows.for_each(|f| {
        // The stats slot names the service stably across reloads.
        let service = reg.name(f.stat).map_or("?", |(s, _)| s.as_str());
        out.push(json!({
            "service": service,
            "client": format!("{}:{}", Ipv4Addr::from(f.key.client), f.key.client_port),
            "vip": format!("{}:{}", Ipv4Addr::from(f.key.vip), f.key.vport),
            "backend": format!("{}:{}", Ipv4Addr::from(f.backend), f.backend_port),
            "nat_port": (f.nat_port != 0).then_some(f.nat_port),
            "state": Phase::from_flags(f.tcp).as_str(),
            "idle_ms": podlb_core::elapsed_ms(now, f.last_seen_ms),
        }));
        out.len() < limit
    });
    json!({ "flows": out, "total": view.shared.flows.len() })
}
