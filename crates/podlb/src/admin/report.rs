//! The engine's reports: [`Source`] for [`EngineView`]. The engine-wide
//! rows (drops, events, ARP, flows, backends) are written here; each
//! subsystem writes its own (`render` and `status` beside its view type:
//! VRRP, sync, Kubernetes, Lease, cloud, health).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::Source;
use crate::engine::EngineView;
use crate::metrics::{Exposition, Kind};
use crate::status::{
    ArpStatus, BackendState, BackendStatus, ConflictStatus, FlowStatus, FlowTableStatus,
    FlowsReport, InterfaceStatus, NeighborStatus, PacketStatus, ProbesStatus, ServiceStatus,
    StatusReport,
};
use podlb_core::control::probes::{readiness, Beater, Liveness, ReadyFacts};
use podlb_core::flow::Phase;
use podlb_core::service::Vtep;
use podlb_core::stats::{total, BackendCounter, DropReason, Event, WorkerStats};

impl Source for EngineView {
    fn metrics(&self, w: &mut Exposition) {
        let now = Instant::now();
        self.render_probes(w);
        self.render_engine(w);
        self.render_services(w);
        self.render_backends(w);
        self.health.render(w, &self.desired.lock().clone(), now);
        if let Some(v) = &self.vrrp {
            v.render(w);
        }
        if let Some(k) = &self.kube {
            k.render(w, &self.update_latency, &self.publish_latency);
        }
        if let Some(c) = &self.cloud {
            c.view.render(w);
        }
        if let Some(s) = &self.sync {
            s.render(w);
        }
    }

    fn status(&self) -> StatusReport {
        let cfg = self.config.load();
        let snap = self.shared.snapshot.load();
        let mac_of = |ip: u128| self.shared.neighbor_mac(ip).map(|m| m.to_string());
        let rows = self.backend_rows();
        let services = snap
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                vip: podlb_core::family::unwide(s.vip),
                port: s.port,
                protocol: if s.proto == podlb_wire::ipv4::PROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                }
                .to_string(),
                mode: s.mode.as_str().to_string(),
                backends: rows
                    .iter()
                    .filter(|r| r.service == s.name)
                    .map(|r| BackendStatus {
                        addr: r.addr,
                        mac: mac_of(r.l2_target),
                        vtep: r.vtep.map(|v| Ipv4Addr::from(v.ip)),
                        vtep_mac: r.vtep.map(|v| v.mac.to_string()),
                        next_hop: r.vtep.map(|v| Ipv4Addr::from(v.next_hop)),
                        state: if r.configured {
                            BackendState::Active
                        } else {
                            BackendState::Draining
                        },
                        active_flows: self.active[usize::from(r.slot)].load(Relaxed),
                        new_flows: self.backend_sum(r.slot, BackendCounter::NewFlows),
                        packets_to_backend: self
                            .backend_sum(r.slot, BackendCounter::PacketsToBackend),
                        packets_to_client: self
                            .backend_sum(r.slot, BackendCounter::PacketsToClient),
                    })
                    .collect(),
            })
            .collect();
        let flows = &self.shared.flows;
        let now = Instant::now();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            interface: InterfaceStatus {
                mode: cfg.attach.mode_str().to_string(),
                name: self.interface.clone(),
                mac: self.mac.to_string(),
                workers: self.workers.len(),
            },
            config_generation: snap.generation,
            last_reload_error: self.last_reload_error.lock().clone(),
            flows: FlowTableStatus {
                active: flows.len(),
                capacity: flows.capacity(),
                evictions: flows.evictions(),
                memory_bytes: flows.memory_bytes(),
            },
            services,
            flows_ipv6: {
                let f = &self.shared.flows6;
                FlowTableStatus {
                    active: f.len(),
                    capacity: f.capacity(),
                    evictions: f.evictions(),
                    memory_bytes: f.memory_bytes(),
                }
            },
            neighbors: self
                .shared
                .neighbors
                .entries()
                .iter()
                .map(|n| NeighborStatus {
                    ip: Ipv4Addr::from(n.ip).into(),
                    mac: n.mac.map(|m| m.to_string()),
                })
                .chain(
                    self.shared
                        .neighbors6
                        .entries()
                        .iter()
                        .map(|n| NeighborStatus {
                            ip: std::net::Ipv6Addr::from(n.ip).into(),
                            mac: n.mac.map(|m| m.to_string()),
                        }),
                )
                .collect(),
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r.as_str().to_string(), self.drops(r)))
                .collect(),
            health: self.health.status(&self.desired.lock().clone()),
            health_fail_open: self.health.fail_open(),
            refused_held: self.health.held_status(now),
            vrrp: self.vrrp.as_ref().map(|v| v.status()),
            kubernetes: self
                .kube
                .as_ref()
                .map(|k| k.status(&self.update_latency, &self.publish_latency)),
            cloud: self.cloud.as_ref().map(|c| c.view.status()),
            arp: ArpStatus {
                replies_sent: self.events(Event::ArpRepliesSent),
                requests_sent: self.arp_requests.load(Relaxed),
                garp_sent: self.garp_sent.load(Relaxed),
                garp_unicast_sent: self.garp_unicast_sent.load(Relaxed),
                vip_defences: self.vip_defences.load(Relaxed),
                other_target_requests: self.events(Event::ArpOtherTarget),
            },
            conflicts: self
                .conflicts
                .lock()
                .iter()
                .map(|c| ConflictStatus {
                    vip: c.vip,
                    mac: c.mac.to_string(),
                    last_seen_s: c.last_seen.elapsed().as_secs(),
                    count: c.count,
                })
                .collect(),
            packets: PacketStatus {
                rx: self.events(Event::RxPackets),
                tx: self.events(Event::TxPackets),
                ignored: self.events(Event::Ignored),
            },
            probes: Some(self.probes()),
        }
    }

    fn probes(&self) -> ProbesStatus {
        let sh = &self.shared;
        let now_ms = u64::try_from(sh.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let beats = sh.heartbeats.beats();
        let liveness = Liveness::new(self.config.load().probes.liveness_stall);
        let stalled = liveness.judge(now_ms, beats.iter().copied());
        let not_ready = readiness(&ReadyFacts {
            // The endpoint serves once the devices are open and the
            // workers run.
            attached: true,
            published: sh.snapshot.load().generation > 0,
            kube_listed: self.kube.as_ref().map(|k| k.synced.load(Relaxed)),
            draining: self.draining.load(Relaxed),
        });
        ProbesStatus {
            live: stalled.is_empty(),
            ready: not_ready.is_empty(),
            stalled: stalled.iter().map(|s| s.to_string()).collect(),
            not_ready: not_ready.iter().map(|r| r.to_string()).collect(),
            liveness_stall_ms: u64::try_from(liveness.limit().as_millis()).unwrap_or(u64::MAX),
            heartbeat_age_ms: beats
                .iter()
                .filter_map(|b| Some((thread_label(b.who), b.age_ms(now_ms)?)))
                .collect(),
        }
    }

    fn flows(&self, limit: usize) -> FlowsReport {
        let now = self.shared.now_ms();
        let reg = self.registry.lock();
        let mut flows = Vec::new();
        self.shared.flows.for_each(|f| {
            flows.push(flow_status(f, &reg, now));
            flows.len() < limit
        });
        if flows.len() < limit {
            self.shared.flows6.for_each(|f| {
                flows.push(flow_status(f, &reg, now));
                flows.len() < limit
            });
        }
        FlowsReport {
            flows,
            total: self.shared.flows.len() + self.shared.flows6.len(),
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Relaxed)
    }
}

/// One flow of either family as `/flows` shows it; the stats slot names
/// the service stably across reloads.
fn flow_status<A: podlb_core::family::Addr>(
    f: &podlb_core::flow::Flow<A>,
    reg: &crate::engine::StatsRegistry,
    now: u32,
) -> FlowStatus {
    let service = reg.name(f.stat).map_or("?", |(s, _)| s.as_str());
    FlowStatus {
        service: service.to_string(),
        client: SocketAddr::new(f.key.client.ip(), f.key.client_port),
        vip: SocketAddr::new(f.key.vip.ip(), f.key.vport),
        backend: SocketAddr::new(f.backend.ip(), f.backend_port),
        nat_port: (f.nat_port != 0).then_some(f.nat_port),
        protocol: if f.is_udp() { "udp" } else { "tcp" }.to_string(),
        state: Phase::from_flags(f.tcp).as_str().to_string(),
        idle_ms: u64::from(podlb_core::elapsed_ms(now, f.last_seen_ms)),
    }
}

/// The `thread` label of a heartbeat: `control`, `worker0`, ...
fn thread_label(who: Beater) -> String {
    match who {
        Beater::Control => "control".to_string(),
        Beater::Worker(n) => format!("worker{n}"),
    }
}

/// One row per (service, backend) the engine knows: configured or draining.
struct BackendRow {
    service: String,
    addr: SocketAddr,
    slot: u16,
    configured: bool,
    /// The address whose MAC podlb sends to (the VTEP's next hop for
    /// vxlan), wide (`podlb_core::family`).
    l2_target: u128,
    vtep: Option<Vtep>,
}

impl EngineView {
    /// Every worker's counters and the control thread's.
    fn all_stats(&self) -> impl Iterator<Item = &WorkerStats> + Clone {
        self.workers
            .iter()
            .map(|w| &**w)
            .chain(std::iter::once(&*self.control))
    }

    fn drops(&self, r: DropReason) -> u64 {
        total(self.all_stats(), |w| w.drops(r))
    }

    fn events(&self, e: Event) -> u64 {
        total(self.all_stats(), |w| w.events(e))
    }

    fn backend_sum(&self, slot: u16, c: BackendCounter) -> u64 {
        total(self.all_stats(), |w| w.backend_value(slot, c))
    }

    fn backend_rows(&self) -> Vec<BackendRow> {
        let snap = self.shared.snapshot.load();
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
        let reg = self.registry.lock();
        for slot in 0..reg.len() as u16 {
            if !seen.contains(&slot) && self.active[usize::from(slot)].load(Relaxed) > 0 {
                if let Some((svc, addr)) = reg.name(slot) {
                    rows.push(BackendRow {
                        service: svc.clone(),
                        addr: *addr,
                        slot,
                        configured: false,
                        l2_target: podlb_core::family::wide(addr.ip()),
                        vtep: snap.vtep(podlb_core::family::wide(addr.ip())).copied(),
                    });
                }
            }
        }
        rows
    }

    /// Drops, events, the control thread's counters, VIP conflicts, the
    /// flow table.
    fn render_engine(&self, w: &mut Exposition) {
        let mut f = w.family(
            "podlb_drops_total",
            "Frames dropped, by reason.",
            Kind::Counter,
        );
        for r in DropReason::ALL {
            f.sample(&[("reason", r.as_str())], self.drops(r));
        }
        for e in Event::ALL {
            w.counter(
                &format!("podlb_{}_total", e.as_str()),
                e.help(),
                self.events(e),
            );
        }
        for (name, help, v) in [
            (
                "podlb_arp_requests_sent_total",
                "ARP requests sent to resolve backends.",
                self.arp_requests.load(Relaxed),
            ),
            (
                "podlb_garp_sent_total",
                "Gratuitous ARP announcements sent for VIPs.",
                self.garp_sent.load(Relaxed),
            ),
            (
                "podlb_garp_unicast_sent_total",
                "Unicast ARP replies sent to clients after becoming master (garp_unicast_clients).",
                self.garp_unicast_sent.load(Relaxed),
            ),
            (
                "podlb_vip_defences_total",
                "Gratuitous ARPs sent to defend a VIP another host claimed (RFC 5227 section 2.4).",
                self.vip_defences.load(Relaxed),
            ),
            (
                "podlb_config_reloads_total",
                "Successful config reloads.",
                self.reloads.load(Relaxed),
            ),
            (
                "podlb_config_reload_errors_total",
                "Config reloads rejected (old config kept).",
                self.reload_errors.load(Relaxed),
            ),
            (
                "podlb_flow_evictions_total",
                "Flows evicted to make room (policy: expired, then half-open, then closing).",
                self.shared.flows.evictions(),
            ),
        ] {
            w.counter(name, help, v);
        }
        let mut f = w.family(
            "podlb_vip_conflicts_total",
            "ARP frames from another MAC claiming a VIP (RFC 5227 section 2.4), by VIP.",
            Kind::Counter,
        );
        for (vip, n) in self.conflicts_per_vip.lock().iter() {
            f.sample(&[("vip", &vip.to_string())], n);
        }
        let flows = &self.shared.flows;
        let flows6 = &self.shared.flows6;
        w.gauge(
            "podlb_flows_active",
            "Flows in the connection tables (IPv4 and IPv6).",
            flows.len() + flows6.len(),
        );
        w.gauge(
            "podlb_flows_ipv6_active",
            "Flows in the IPv6 connection table.",
            flows6.len(),
        );
        w.gauge(
            "podlb_flows_ipv6_capacity",
            "IPv6 connection table capacity (flows.capacity_ipv6).",
            flows6.capacity(),
        );
        let mut f = w.family(
            "podlb_flows_by_phase",
            "Flows in the connection table by phase (TCP state, or UDP answered or not), as of the last full sweep.",
            Kind::Gauge,
        );
        for (p, n) in Phase::ALL.iter().zip(&self.phases) {
            f.sample(&[("phase", p.as_str())], n.load(Relaxed));
        }
        let (expired4, by_phase4) = flows.evictions_by_reason();
        let (expired6, by_phase6) = flows6.evictions_by_reason();
        let expired = expired4 + expired6;
        let by_phase: Vec<u64> = by_phase4
            .iter()
            .zip(by_phase6)
            .map(|(a, b)| a + b)
            .collect();
        let mut f = w.family(
            "podlb_flow_evictions_by_reason_total",
            "Flows evicted to make room, by what the victim was: expired, or its phase.",
            Kind::Counter,
        );
        f.sample(&[("reason", "expired")], expired);
        for (p, n) in Phase::ALL.iter().zip(by_phase) {
            f.sample(&[("reason", p.as_str())], n);
        }
        w.gauge(
            "podlb_flows_capacity",
            "IPv4 connection table capacity (flows.capacity).",
            flows.capacity(),
        );
    }

    /// `podlb_live`, `podlb_ready` and the heartbeats' ages.
    fn render_probes(&self, w: &mut Exposition) {
        let p = self.probes();
        w.gauge(
            "podlb_live",
            "1 if /livez answers 200: the control loop and every worker made progress within probes.liveness_stall_s.",
            u8::from(p.live),
        );
        w.gauge(
            "podlb_ready",
            "1 if /readyz answers 200: attached, first snapshot published, Kubernetes listed (in Kubernetes mode), not draining.",
            u8::from(p.ready),
        );
        let mut f = w.family(
            "podlb_heartbeat_age_seconds",
            "Time since the thread last made progress (control loop: each pass; worker: each poll iteration).",
            Kind::Gauge,
        );
        for (thread, ms) in &p.heartbeat_age_ms {
            f.sample(&[("thread", thread)], *ms as f64 / 1000.0);
        }
    }

    /// Per service: the backends new connections can go to, and whether it
    /// fails open.
    fn render_services(&self, w: &mut Exposition) {
        let snap = self.shared.snapshot.load();
        let desired = self.desired.lock().clone();
        let open = self.health.fail_open();
        let mut f = w.family(
            "podlb_service_backends",
            "Backends in the published Maglev table of the service (0: new connections to it are refused).",
            Kind::Gauge,
        );
        for s in &desired {
            let n = snap
                .services
                .iter()
                .find(|p| p.name == s.name)
                .map_or(0, |p| p.backends.len());
            f.sample(&[("service", &s.name)], n);
        }
        let mut f = w.family(
            "podlb_service_fail_open",
            "1 while every backend of the service fails its health check and all are kept (fail open).",
            Kind::Gauge,
        );
        for s in &desired {
            f.sample(&[("service", &s.name)], u8::from(open.contains(&s.name)));
        }
    }

    /// The per-backend families.
    fn render_backends(&self, w: &mut Exposition) {
        let rows = self.backend_rows();
        let addrs: Vec<String> = rows.iter().map(|r| r.addr.to_string()).collect();
        let per = |w: &mut Exposition,
                   name: &str,
                   help: &str,
                   kind: Kind,
                   v: &dyn Fn(&BackendRow) -> u64| {
            let mut f = w.family(name, help, kind);
            for (r, addr) in rows.iter().zip(&addrs) {
                f.sample(&[("service", &r.service), ("backend", addr)], v(r));
            }
        };
        per(
            w,
            "podlb_backend_new_flows_total",
            "Flows steered to the backend.",
            Kind::Counter,
            &|r| self.backend_sum(r.slot, BackendCounter::NewFlows),
        );
        per(
            w,
            "podlb_backend_active_flows",
            "Flows of the backend in the table (as of the last sweep, ≤1 s old).",
            Kind::Gauge,
            &|r| u64::from(self.active[usize::from(r.slot)].load(Relaxed)),
        );
        per(
            w,
            "podlb_backend_up",
            "1 if the backend is configured, 0 if it is draining.",
            Kind::Gauge,
            &|r| u64::from(r.configured),
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
            let mut f = w.family(metric, help, Kind::Counter);
            for (r, addr) in rows.iter().zip(&addrs) {
                for (dir, c) in dirs {
                    f.sample(
                        &[
                            ("service", &r.service),
                            ("backend", addr),
                            ("direction", dir),
                        ],
                        self.backend_sum(r.slot, c),
                    );
                }
            }
        }
    }
}
