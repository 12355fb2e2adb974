//! UDP services and ICMP errors of flows (issue 16).
//!
//! - DNS through a UDP VIP, in modes nat, dsr and vxlan: three backends
//!   running dnsmasq, each answering `who.podlb.test` with its own address;
//!   20,000 queries from 500 sockets (dnsload.py, no retries) all answered
//!   and spread evenly, while DNS over TCP on the same VIP:53 (a second
//!   service, protocol tcp) answers `dig +tcp` at the same time.
//! - A VRRP failover in the middle of a long UDP exchange keeps it on the
//!   same backend and the same NAT port (the flow was synced to the backup).
//! - Path MTU discovery through full NAT: a router with a smaller MTU on
//!   the client's side answers the backend's full-size segments with
//!   "fragmentation needed" to the VIP; podlb hands it to the backend, and a
//!   1 MB download completes. With `flows.icmp_errors = false` the same
//!   download stalls: the black hole the translation prevents.
//! - traceroute through the VIP (TCP SYN probes to a tcp service, UDP probes
//!   to a udp one): podlb does not decrement the TTL, so the TTL-1 probe
//!   expires at a router between podlb and the backend, whose "time
//!   exceeded" goes to the VIP; podlb translates it back to the client, and
//!   the router shows as hop 1. With `icmp_errors = false`, hop 1 is `*`.
//!
//! Every address is in 198.18.0.0/15; each run builds fresh namespaces
//! (no route cache or PMTU state carries over), and the topologies remove
//! every namespace and process on drop, panics included.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use podlb_lab::demo::{
    lab_topology, metric_value, vrrp_lab_topology, Attach, ConfigSpec, Podlb, VrrpSpec, BACKENDS,
    VIP,
};
use podlb_lab::netns::{self, Proc, Topology};

use crate::common::*;
use crate::failover::{start_lb, wait_metric, wait_state};
use crate::vxlan::{self, ip, link_to_bridge, NODES, PODS, VTEP_MACS};

/// The name every dnsmasq answers, each with its own address.
const DNS_NAME: &str = "who.podlb.test";
/// Queries of the DNS load: 500 sockets × 40.
const DNS_SOCKETS: usize = 500;
const DNS_PER_SOCKET: usize = 40;
/// Queries outstanding at once: with their answers, well within podlb's RX
/// ring and dnsmasq's socket buffer even while a worker is descheduled (a
/// datagram lost there is unanswered: no retries).
const DNS_CONCURRENCY: usize = 32;

/// A `[[service]]` table: `backends` are TOML values already (quoted
/// addresses, or inline tables for vxlan).
fn service_toml(name: &str, port: u16, protocol: &str, mode: &str, backends: &[String]) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nvip = \"{VIP}\"\nport = {port}\nprotocol = \"{protocol}\"\n\
         mode = \"{mode}\"\nbackends = [{}]\n\n",
        backends.join(", ")
    )
}

/// The lab config (AF_PACKET on eth0) with the services of `extra` only.
fn config_with(extra: String) -> ConfigSpec {
    let mut c = ConfigSpec::lab(
        Attach::AfPacket {
            interface: "eth0".into(),
        },
        "nat",
    );
    c.services.clear();
    c.extra = extra;
    c
}

/// A counter of podlb's /metrics (0 when absent).
fn metric(p: &Podlb, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&p.metrics().unwrap(), name, labels).unwrap_or(0.0)
}

fn drops(p: &Podlb, reason: &str) -> f64 {
    metric(p, "podlb_drops_total", &[("reason", reason)])
}

/// Starts dnsmasq in `ns` listening on `listen` (UDP and TCP 53), answering
/// [`DNS_NAME`] with `answer`; waits for its TCP listener.
fn start_dnsmasq(
    topo: &Topology,
    ns: &str,
    label: &str,
    listen: &[Ipv4Addr],
    answer: Ipv4Addr,
) -> Proc {
    let mut args: Vec<String> = [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--log-facility=-",
        "--cache-size=10000",
        "--port=53",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(listen.iter().map(|a| format!("--listen-address={a}")));
    args.push(format!("--address=/{DNS_NAME}/{answer}"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = topo.spawn(ns, label, &argv).unwrap();
    netns::wait_listening(ns, 53, Duration::from_secs(10), Some(&p))
        .unwrap_or_else(|e| panic!("dnsmasq {label} did not start: {e}"));
    p
}

/// What dnsload.py reports.
#[derive(Debug)]
struct Load {
    sent: u64,
    answered: u64,
    unanswered: u64,
    bad: u64,
    answers: HashMap<String, u64>,
    elapsed_s: f64,
    json: String,
}

fn parse_load(text: &str) -> Load {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("dnsload.py printed no JSON: {text}"));
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("dnsload.py output is not JSON ({e}): {line}"));
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {line}"));
    Load {
        sent: n("sent"),
        answered: n("answered"),
        unanswered: n("unanswered"),
        bad: n("bad"),
        answers: v["answers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, c)| (k.clone(), c.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        elapsed_s: v["elapsed_s"].as_f64().unwrap_or(0.0),
        json: line.to_string(),
    }
}

/// Runs dnsload.py in `ns` to the VIP in the foreground.
fn dns_load(ns: &str, sockets: usize, per: usize, concurrency: usize, timeout: Duration) -> Load {
    let script = test_file("dnsload.py").display().to_string();
    let out = netns::exec_timeout(
        ns,
        &[
            "python3",
            &script,
            &VIP.to_string(),
            "53",
            DNS_NAME,
            &sockets.to_string(),
            &per.to_string(),
            &concurrency.to_string(),
            "2",
        ],
        timeout,
    )
    .expect("dnsload.py ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dnsload.py failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_load(&text)
}

/// `dig +tcp` for [`DNS_NAME`] at the VIP: the address it answered.
fn dig_tcp(ns: &str) -> Result<String, String> {
    let out = netns::exec_timeout(
        ns,
        &[
            "dig",
            "+tcp",
            "+short",
            "+tries=1",
            "+time=3",
            &format!("@{VIP}"),
            DNS_NAME,
            "A",
        ],
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && text.parse::<Ipv4Addr>().is_ok() {
        Ok(text)
    } else {
        Err(format!(
            "exit {:?}: {text} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A DNS lab: where the client is, podlb, the backends' addresses.
struct DnsLab {
    /// Every topology of the lab (dropped, so removed, with it).
    topos: Vec<Topology>,
    client: String,
    podlb: Podlb,
    backends: Vec<Ipv4Addr>,
    procs: Vec<Proc>,
}

/// Builds the lab of `mode` with dnsmasq on three backends and podlb with
/// the two services on VIP:53 (udp and tcp).
fn dns_lab(mode: &str) -> DnsLab {
    let attach = Attach::AfPacket {
        interface: "eth0".into(),
    };
    let mut procs = Vec::new();
    if mode == "vxlan" {
        let lab = vxlan::Lab::build_with(3);
        for (i, pod) in PODS.iter().enumerate() {
            procs.push(start_dnsmasq(
                &lab.pods[i],
                lab.pod_ns(i),
                &format!("dnsmasq-pod{}", i + 1),
                &[*pod],
                *pod,
            ));
        }
        // pod2's node answers through its VXLAN device (reply path b), the
        // others the plain routed way.
        let lb_mac = netns::mac_of(lab.a.ns("lb"), "eth0").unwrap();
        lab.reply_through_tunnel(1, &lb_mac);
        let backends: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    "{{ addr = \"{}:53\", vtep = \"{}\", vtep_mac = \"{}\" }}",
                    PODS[i], NODES[i], VTEP_MACS[i]
                )
            })
            .collect();
        let config = config_with(
            service_toml("dns", 53, "udp", "vxlan", &backends)
                + &service_toml("dns-tcp", 53, "tcp", "vxlan", &backends),
        );
        let podlb = start_podlb(&lab.a, &attach, &config);
        procs.push(podlb.proc().clone());
        let client = lab.a.ns("client").to_string();
        let vxlan::Lab { a, b, pods } = lab;
        let mut topos = vec![a, b];
        topos.extend(pods);
        return DnsLab {
            topos,
            client,
            podlb,
            backends: PODS.to_vec(),
            procs,
        };
    }
    let topo = lab_topology(&attach).unwrap();
    for (i, be) in BACKENDS.iter().enumerate() {
        let ns = topo.ns(&format!("be{}", i + 1));
        let mut listen = vec![*be];
        if mode == "dsr" {
            // The VIP on lo, as the DSR backends of forwarding.rs; dnsmasq
            // binds it too, so its answers leave from the VIP.
            netns::configure_dsr_backend(ns, VIP).unwrap();
            listen.push(VIP);
        }
        procs.push(start_dnsmasq(
            &topo,
            ns,
            &format!("dnsmasq-be{}", i + 1),
            &listen,
            *be,
        ));
    }
    let backends: Vec<String> = BACKENDS.iter().map(|b| format!("\"{b}:53\"")).collect();
    let config = config_with(
        service_toml("dns", 53, "udp", mode, &backends)
            + &service_toml("dns-tcp", 53, "tcp", mode, &backends),
    );
    let podlb = start_podlb(&topo, &attach, &config);
    procs.push(podlb.proc().clone());
    DnsLab {
        client: topo.ns("client").to_string(),
        topos: vec![topo],
        podlb,
        backends: BACKENDS.to_vec(),
        procs,
    }
}

fn dns_through_vip(mode: &str) {
    let budget = Budget::with(Duration::from_secs(150));
    let lab = dns_lab(mode);
    let _log = LogOnPanic(lab.procs.clone());
    let podlb = &lab.podlb;
    let client = lab.client.as_str();
    let wanted: Vec<String> = lab.backends.iter().map(|b| b.to_string()).collect();

    // Warm up: until a round of 30 new 5-tuples is all answered, by every
    // backend (podlb resolves a backend's MAC on its first flow there).
    let warm_until = Instant::now() + budget.left(Duration::from_secs(20));
    loop {
        let w = dns_load(client, 30, 1, 30, Duration::from_secs(20));
        let all = wanted.iter().all(|b| w.answers.contains_key(b));
        if w.answered == 30 && all {
            break;
        }
        assert!(
            Instant::now() < warm_until,
            "DNS through the VIP does not work ({mode}): {}\n{}",
            w.json,
            podlb.log_tail(3000)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(dig_tcp(client).is_ok(), "dig +tcp before the load");
    let udp_before = metric(podlb, "podlb_udp_datagrams_total", &[]);

    // The load, in the background, and DNS over TCP meanwhile.
    let script = test_file("dnsload.py").display().to_string();
    let load = lab.topos[0]
        .spawn(
            client,
            &format!("dnsload-{mode}"),
            &[
                "python3",
                &script,
                &VIP.to_string(),
                "53",
                DNS_NAME,
                &DNS_SOCKETS.to_string(),
                &DNS_PER_SOCKET.to_string(),
                &DNS_CONCURRENCY.to_string(),
                "5",
            ],
        )
        .unwrap();
    let t0 = Instant::now();
    while !load.log_tail(4000).contains("sending") {
        assert!(
            load.is_running() && t0.elapsed() < Duration::from_secs(10),
            "dnsload.py did not start: {}",
            load.log_tail(4000)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (mut digs, mut during) = (Vec::new(), 0);
    while digs.len() < 5 || (load.is_running() && digs.len() < 50) {
        let r = dig_tcp(client);
        if load.is_running() {
            during += 1;
        }
        digs.push(r);
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = load.wait_timeout(budget.left(Duration::from_secs(100)));
    let text = std::fs::read_to_string(load.log_path()).unwrap_or_default();
    assert!(
        st.is_some_and(|s| s.success()),
        "dnsload.py did not finish ({st:?}): {text}"
    );
    let l = parse_load(&text);
    let m = podlb.metrics().unwrap();
    let udp = metric_sum(&m, "podlb_udp_datagrams_total") - udp_before;
    let drop_lines: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("podlb_drops_total") && !l.ends_with(" 0"))
        .collect();
    eprintln!(
        "dns {mode}: {} queries from {DNS_SOCKETS} sockets in {:.2} s ({:.0}/s): {} answered, \
         {} unanswered, {} bad; answers {:?}; {} dig +tcp ({during} while the load ran): {:?}; \
         podlb udp_datagrams +{udp}; drops {drop_lines:?}",
        l.sent,
        l.elapsed_s,
        l.sent as f64 / l.elapsed_s.max(1e-3),
        l.answered,
        l.unanswered,
        l.bad,
        l.answers,
        digs.len(),
        digs,
    );
    let total = (DNS_SOCKETS * DNS_PER_SOCKET) as u64;
    assert_eq!(l.sent, total, "{}", l.json);
    assert_eq!(
        (l.answered, l.unanswered, l.bad),
        (total, 0, 0),
        "{mode}: every query answered: {}; drops {drop_lines:?}",
        l.json
    );
    for b in &wanted {
        let n = l.answers.get(b).copied().unwrap_or(0) as f64;
        let share = n / total as f64;
        assert!(
            (0.25..=0.42).contains(&share),
            "{mode}: backend {b} answered {n} of {total} ({:.1}%): {}",
            share * 100.0,
            l.json
        );
    }
    assert!(
        udp >= 2.0 * total as f64 || mode == "dsr",
        "{mode}: podlb forwarded {udp} datagrams for {total} queries"
    );
    assert!(
        udp >= total as f64,
        "{mode}: podlb forwarded {udp} datagrams"
    );
    assert!(during >= 3, "only {during} dig +tcp ran during the load");
    for (i, d) in digs.iter().enumerate() {
        let a = d
            .as_ref()
            .unwrap_or_else(|e| panic!("{mode}: dig +tcp {i} failed: {e}"));
        assert!(wanted.contains(a), "{mode}: dig +tcp {i} answered {a}");
    }
    assert!(podlb.proc().is_running(), "podlb exited");
    stop_podlb(podlb);
}

#[test]
fn udp_dns_nat() {
    require_netns!("udp_dns_nat");
    dns_through_vip("nat");
}

#[test]
fn udp_dns_dsr() {
    require_netns!("udp_dns_dsr");
    dns_through_vip("dsr");
}

#[test]
fn udp_dns_vxlan() {
    require_netns!("udp_dns_vxlan");
    dns_through_vip("vxlan");
}

// ---------------------------------------------------------------------------
// VRRP failover in the middle of a UDP exchange

/// The UDP port of the echo service (VIP and backends).
const ECHO_PORT: u16 = 5300;

/// One reply of udpecho.py: backend name, the source it saw, the sequence.
fn parse_echo(b: &[u8]) -> Option<(String, String, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split_whitespace();
    Some((
        it.next()?.to_string(),
        it.next()?.to_string(),
        it.next()?.parse().ok()?,
    ))
}

#[test]
fn udp_exchange_survives_vrrp_failover() {
    require_netns!("udp_exchange_survives_vrrp_failover");
    let budget = Budget::start();
    let topo = vrrp_lab_topology().unwrap();
    let script = test_file("udpecho.py").display().to_string();
    let mut procs = Vec::new();
    for i in 1..=3 {
        let name = format!("be{i}");
        let p = topo
            .spawn(
                topo.ns(&name),
                &format!("udpecho-{name}"),
                &["python3", "-u", &script, &name, &ECHO_PORT.to_string()],
            )
            .unwrap();
        let t0 = Instant::now();
        while !p.log_tail(100).contains("ready") {
            assert!(
                p.is_running() && t0.elapsed() < Duration::from_secs(10),
                "udpecho {name}: {}",
                p.log_tail(2000)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        procs.push(p);
    }
    let backends: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("\"{b}:{ECHO_PORT}\""))
        .collect();
    let config = |priority: u8| {
        config_with(service_toml("echo", ECHO_PORT, "udp", "nat", &backends))
            .with_vrrp(VrrpSpec::new(priority, 100))
    };
    let lb1 = start_lb(&topo, "lb1", &config(200));
    wait_state(&lb1, "master", Duration::from_secs(10));
    let lb2 = start_lb(&topo, "lb2", &config(100));
    wait_state(&lb2, "backup", Duration::from_secs(10));
    let peers = wait_metric(&lb1, "podlb_sync_peers", 1.0, Duration::from_secs(5));
    assert!(peers >= 1.0, "lb1 never learned lb2 as a sync peer");
    procs.extend([lb1.proc().clone(), lb2.proc().clone()]);
    let _log = LogOnPanic(procs);
    let client = topo.ns("client").to_string();

    // The exchange: one socket, a datagram every 20 ms for 6 s, replies
    // collected as they come.
    const INTERVAL: Duration = Duration::from_millis(20);
    const RUN: Duration = Duration::from_secs(6);
    let started = Instant::now();
    let exchange = std::thread::spawn(move || {
        netns::in_netns(&client, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            s.connect(SocketAddr::from((VIP, ECHO_PORT))).unwrap();
            s.set_nonblocking(true).unwrap();
            let t0 = Instant::now();
            let (mut sent, mut replies) = (0u64, Vec::new());
            let mut buf = [0u8; 512];
            // Sends until RUN, then drains for another 500 ms.
            while t0.elapsed() < RUN + Duration::from_millis(500) {
                if t0.elapsed() < RUN && t0.elapsed() >= INTERVAL * sent as u32 {
                    // An error (ICMP unreachable while nobody serves) is a loss.
                    let _ = s.send(sent.to_string().as_bytes());
                    sent += 1;
                }
                loop {
                    match s.recv(&mut buf) {
                        Ok(n) => {
                            if let Some(r) = parse_echo(&buf[..n]) {
                                replies.push((t0.elapsed(), r));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (s.local_addr().unwrap(), sent, replies)
        })
        .unwrap()
    });
    // The flow reached the backup, then lb1's link goes down mid-exchange.
    let synced = wait_metric(
        &lb2,
        "podlb_sync_installed_total",
        1.0,
        Duration::from_secs(2),
    );
    assert!(synced >= 1.0, "lb2 never installed the UDP flow");
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed()));
    let cut_at = started.elapsed();
    topo.set_port_up("lb1", false).unwrap();
    let took = wait_state(&lb2, "master", budget.left(Duration::from_secs(5)));
    let (local, sent, replies) = exchange.join().expect("exchange thread");

    let (before, after): (Vec<_>, Vec<_>) = replies.iter().partition(|(t, _)| *t < cut_at);
    let seen: std::collections::BTreeSet<(&str, &str)> = replies
        .iter()
        .map(|(_, (name, src, _))| (name.as_str(), src.as_str()))
        .collect();
    let answered: std::collections::BTreeSet<u64> =
        replies.iter().map(|(_, (_, _, seq))| *seq).collect();
    let lost = sent - answered.len() as u64;
    eprintln!(
        "udp failover: client {local}, {sent} datagrams every {INTERVAL:?}, {} answered \
         ({} before the cut at {cut_at:?}, {} after), {lost} unanswered; lb2 master {took:?} \
         after the cut; backend and NAT source seen: {seen:?}",
        answered.len(),
        before.len(),
        after.len(),
    );
    assert!(!before.is_empty(), "no reply before the cut");
    assert!(
        after.len() >= 50,
        "only {} replies after the cut: the exchange did not resume",
        after.len()
    );
    assert_eq!(
        seen.len(),
        1,
        "the exchange changed backend or NAT port: {seen:?}"
    );
    let (_, src) = seen.iter().next().unwrap();
    assert!(
        src.starts_with(&format!("{VIP}:")),
        "the backend saw {src}, not the VIP"
    );
    // At most 2 s of the exchange lost to the failover.
    let bound = (Duration::from_secs(2).as_millis() / INTERVAL.as_millis()) as u64;
    assert!(
        lost <= bound,
        "{lost} datagrams unanswered (at most {bound})"
    );
    stop_podlb(&lb2);
}

// ---------------------------------------------------------------------------
// Routed labs: PMTU discovery and traceroute through the VIP

/// 1 MiB: the file nginx serves in the PMTU test.
const BIG: usize = 1 << 20;

/// Starts nginx in `ns` on :80 serving the directory `www` (sendfile on).
fn start_nginx_files(topo: &Topology, ns: &str, name: &str, www: &Path) -> Proc {
    spawn_nginx(topo, ns, name, |d| {
        format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               sendfile on;\n\
               server {{\n\
                 listen 80;\n\
                 listen [::]:80;\n\
                 location / {{ root {}; default_type application/octet-stream; }}\n\
               }}\n\
             }}\n",
            www.display()
        )
    })
}

/// A router between two bridges: segment A (198.18.0.0/24: podlb .2 and
/// what `a_hosts` adds; the router .1) and segment B (198.18.1.0/24: the
/// router .1 and what `b_hosts` adds).
struct Routed {
    a: Topology,
    b: Topology,
}

const ROUTER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ROUTER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

impl Routed {
    fn build() -> Routed {
        let mut a = Topology::new().unwrap();
        let b = Topology::new().unwrap();
        let router = a.add_host("router", ROUTER_A).unwrap();
        netns::set_sysctl(&router, "net.ipv4.ip_forward", "1").unwrap();
        link_to_bridge(&router, "eth1", &format!("{ROUTER_B}/24"), b.node(), "vr");
        let lb = a.add_host("lb", podlb_lab::demo::LB).unwrap();
        netns::set_sysctl(&lb, "net.ipv4.ip_forward", "0").unwrap();
        ip(&lb, &format!("route add 198.18.1.0/24 via {ROUTER_A}"));
        Routed { a, b }
    }
}

/// PMTU lab: the client on segment B behind the router, whose leg there
/// has MTU 1280 (the client's own interface keeps 1500, so its SYN
/// advertises MSS 1460); podlb and backend be1 (nginx with the 1 MiB file)
/// on segment A.
fn pmtu_run(icmp_errors: bool) -> (Option<(u64, u16, f64)>, String, f64, f64) {
    let Routed { mut a, mut b } = Routed::build();
    let client = b.add_host("client", Ipv4Addr::new(198, 18, 1, 10)).unwrap();
    ip(&client, &format!("route add default via {ROUTER_B}"));
    ip(a.ns("router"), "link set eth1 mtu 1280");
    let be = a.add_host("be1", BACKENDS[0]).unwrap();
    ip(&be, &format!("route add 198.18.1.0/24 via {ROUTER_A}"));
    let www = a.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("big"), &body).unwrap();
    let nginx = start_nginx_files(&a, &be, "be1", &www);
    let mut extra = service_toml(
        "web",
        80,
        "tcp",
        "nat",
        &[format!("\"{}:80\"", BACKENDS[0])],
    );
    if !icmp_errors {
        extra.push_str("[flows]\nicmp_errors = false\n");
    }
    let attach = Attach::AfPacket {
        interface: "eth0".into(),
    };
    let podlb = start_podlb(&a, &attach, &config_with(extra));
    let _log = LogOnPanic(vec![nginx, podlb.proc().clone()]);
    // The path works for small packets both ways.
    let small = netns::exec_timeout(
        &client,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://{VIP}/nope"),
        ],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&small.stdout),
        "404",
        "a small request through the VIP: {}",
        String::from_utf8_lossy(&small.stderr)
    );
    let max_time = if icmp_errors { "20" } else { "10" };
    let out = netns::exec_timeout(
        &client,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{http_code} %{time_total}",
            "--max-time",
            max_time,
            &format!("http://{VIP}/big"),
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = text.split_whitespace();
    let parsed = (|| {
        Some((
            it.next()?.parse::<u64>().ok()?,
            it.next()?.parse::<u16>().ok()?,
            it.next()?.parse::<f64>().ok()?,
        ))
    })();
    let result = if out.status.success() { parsed } else { None };
    let detail = format!(
        "curl exit {:?}: {text} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let to_backend = metric(&podlb, "podlb_icmp_errors_to_backend_total", &[]);
    let unhandled = drops(&podlb, "icmp_unhandled");
    stop_podlb(&podlb);
    (result, detail, to_backend, unhandled)
}

#[test]
fn icmp_pmtu_through_full_nat() {
    require_netns!("icmp_pmtu_through_full_nat");
    let t0 = Instant::now();
    let (ok, detail, to_backend, _) = pmtu_run(true);
    eprintln!(
        "pmtu, icmp_errors on: {detail}; icmp_errors_to_backend {to_backend} ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    // Completion within curl's own bound is the claim; how long it took
    // is printed above, not asserted (timings belong in benchmarks).
    let (size, code, _secs) = ok.unwrap_or_else(|| panic!("download failed: {detail}"));
    assert_eq!((size, code), (BIG as u64, 200), "{detail}");
    assert!(
        to_backend > 0.0,
        "no frag-needed reached the backend through podlb"
    );

    // The same path with the translation off: the backend never learns
    // the path MTU and the download stalls.
    let t1 = Instant::now();
    let (bad, detail, to_backend, unhandled) = pmtu_run(false);
    eprintln!(
        "pmtu, icmp_errors off: {detail}; icmp_errors_to_backend {to_backend}, \
         icmp_unhandled {unhandled} ({:.1} s)",
        t1.elapsed().as_secs_f64()
    );
    assert!(
        bad.is_none(),
        "the download completed without ICMP translation: the test does not test it ({detail})"
    );
    assert_eq!(to_backend, 0.0);
    assert!(
        unhandled > 0.0,
        "the router sent no frag-needed to the VIP (dropped as icmp_unhandled)"
    );
}

/// Issue 17: Packet Too Big through full NAT over IPv6. The routed lab
/// with IPv6 addresses (segment A 2001:2::/64: router ::1, podlb, be1
/// ::21; segment B 2001:2:1::/64: router ::1, the client ::10), the
/// router's leg to the client at MTU 1280, the IPv6 minimum: IPv6 routers
/// never fragment, so the backend's full-size segments to the client are
/// answered with Packet Too Big to their source, the VIP; podlb translates
/// them to the backend, which lowers its path MTU, and the 1 MiB download
/// completes.
#[test]
fn icmpv6_packet_too_big_through_nat66() {
    require_netns!("icmpv6_packet_too_big_through_nat66");
    let t0 = Instant::now();
    let Routed { mut a, mut b } = Routed::build();
    let v6 =
        |ns: &str, dev: &str, addr: &str| ip(ns, &format!("-6 addr add {addr} dev {dev} nodad"));
    let router = a.ns("router").to_string();
    netns::set_sysctl(&router, "net.ipv6.conf.all.forwarding", "1").unwrap();
    v6(&router, "eth0", "2001:2::1/64");
    v6(&router, "eth1", "2001:2:1::1/64");
    ip(&router, "link set eth1 mtu 1280");
    v6(a.ns("lb"), "eth0", "2001:2::2/64");
    let client = b.add_host("client", Ipv4Addr::new(198, 18, 1, 10)).unwrap();
    v6(&client, "eth0", "2001:2:1::10/64");
    ip(&client, "-6 route add default via 2001:2:1::1");
    let be = a.add_host("be1", BACKENDS[0]).unwrap();
    v6(&be, "eth0", "2001:2::21/64");
    ip(&be, "-6 route add 2001:2:1::/64 via 2001:2::1");
    let www = a.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("big"), &body).unwrap();
    let nginx = start_nginx_files(&a, &be, "be1", &www);
    let extra = service_toml(
        "web6",
        80,
        "tcp",
        "nat",
        &["\"[2001:2::21]:80\"".to_string()],
    )
    .replace(&format!("vip = \"{VIP}\""), "vip = \"2001:2::100\"");
    let attach = Attach::AfPacket {
        interface: "eth0".into(),
    };
    let podlb = start_podlb(&a, &attach, &config_with(extra));
    let _log = LogOnPanic(vec![nginx, podlb.proc().clone()]);
    let out = netns::exec_timeout(
        &client,
        &[
            "curl",
            "-gsS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{http_code}",
            "--max-time",
            "20",
            "http://[2001:2::100]/big",
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let to_backend = metric(&podlb, "podlb_icmp_errors_to_backend_total", &[]);
    eprintln!(
        "ipv6 pmtu: curl {text:?} {}; icmp_errors_to_backend {to_backend} ({:.1} s)",
        String::from_utf8_lossy(&out.stderr).trim(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        text,
        format!("{BIG} 200"),
        "the 1 MiB download over the 1280 hop"
    );
    assert!(
        to_backend > 0.0,
        "no Packet Too Big reached the backend through podlb"
    );
    stop_podlb(&podlb);
}

/// traceroute's output for `args` to the VIP, from `ns`.
fn traceroute(ns: &str, args: &[&str]) -> String {
    let mut argv = vec!["traceroute", "-n"];
    argv.extend_from_slice(args);
    argv.extend(["-q", "1", "-w", "2", "-m", "4"]);
    let vip = VIP.to_string();
    argv.push(&vip);
    let out = netns::exec_timeout(ns, &argv, Duration::from_secs(30)).unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What one traceroute lab run saw.
struct Traced {
    /// traceroute -T (TCP SYN) to the web service.
    tcp: String,
    /// traceroute -U (UDP) to the echo service.
    udp: String,
    to_client: f64,
    unhandled: f64,
}

/// traceroute lab: the client and podlb on segment A, backend be1 on
/// segment B behind the router, with nginx on :80 (service "web", tcp) and
/// udpecho.py on :5300 (service "echo", udp).
fn traceroute_run(icmp_errors: bool) -> Traced {
    let Routed { mut a, mut b } = Routed::build();
    let client = a.add_host("client", podlb_lab::demo::CLIENT).unwrap();
    let be_ip = Ipv4Addr::new(198, 18, 1, 21);
    let be = b.add_host("be1", be_ip).unwrap();
    ip(&be, &format!("route add default via {ROUTER_B}"));
    let nginx = start_nginx(&b, &be, "be1", "be1");
    let script = test_file("udpecho.py").display().to_string();
    let echo = b
        .spawn(
            &be,
            "udpecho-be1",
            &["python3", "-u", &script, "be1", &ECHO_PORT.to_string()],
        )
        .unwrap();
    let mut extra = service_toml("web", 80, "tcp", "nat", &[format!("\"{be_ip}:80\"")])
        + &service_toml(
            "echo",
            ECHO_PORT,
            "udp",
            "nat",
            &[format!("\"{be_ip}:{ECHO_PORT}\"")],
        );
    if !icmp_errors {
        extra.push_str("[flows]\nicmp_errors = false\n");
    }
    let attach = Attach::AfPacket {
        interface: "eth0".into(),
    };
    let podlb = start_podlb(&a, &attach, &config_with(extra));
    let _log = LogOnPanic(vec![nginx, echo, podlb.proc().clone()]);
    let counts = netns::http_get_many(&client, vip(80), 10, 2, true).unwrap();
    assert_eq!(counts.get("be1"), Some(&10), "{counts:?}");
    let tcp = traceroute(&client, &["-T", "-p", "80"]);
    let udp = traceroute(&client, &["-U", "-p", &ECHO_PORT.to_string()]);
    let to_client = metric(&podlb, "podlb_icmp_errors_to_client_total", &[]);
    let unhandled = drops(&podlb, "icmp_unhandled");
    stop_podlb(&podlb);
    Traced {
        tcp,
        udp,
        to_client,
        unhandled,
    }
}

/// The address of hop `n` in traceroute -n output ("*" when none answered).
fn hop(text: &str, n: u32) -> Option<String> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == n.to_string()).then(|| it.next().unwrap_or("").to_string())
    })
}

/// TCP (-T, to the web service) and UDP (-U, to the echo service): hop 1
/// is the router behind podlb, hop 2 the VIP (the SYN-ACK, the echo).
#[test]
fn icmp_traceroute_through_vip() {
    require_netns!("icmp_traceroute_through_vip");
    let t = traceroute_run(true);
    eprintln!(
        "traceroute, icmp_errors on (icmp_errors_to_client {}):\n{}{}",
        t.to_client, t.tcp, t.udp
    );
    for text in [&t.tcp, &t.udp] {
        assert_eq!(
            hop(text, 1).as_deref(),
            Some(ROUTER_A.to_string().as_str()),
            "hop 1 should be the router behind podlb:\n{text}"
        );
        assert_eq!(
            hop(text, 2).as_deref(),
            Some(VIP.to_string().as_str()),
            "hop 2 should be the VIP (the backend's answer):\n{text}"
        );
    }
    assert!(t.to_client >= 2.0, "icmp_errors_to_client {}", t.to_client);

    // Without the translation the router's answers stop at podlb.
    let t = traceroute_run(false);
    eprintln!(
        "traceroute, icmp_errors off (icmp_errors_to_client {}, icmp_unhandled {}):\n{}{}",
        t.to_client, t.unhandled, t.tcp, t.udp
    );
    for text in [&t.tcp, &t.udp] {
        assert_eq!(hop(text, 1).as_deref(), Some("*"), "{text}");
    }
    assert_eq!(t.to_client, 0.0);
    assert!(
        t.unhandled >= 2.0,
        "the router's time exceeded never reached podlb: icmp_unhandled {}",
        t.unhandled
    );
}
