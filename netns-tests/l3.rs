//! Unicast VRRP across L3 (issue 5): two podlb instances on different
//! subnets, their adverts and connection sync routed, no multicast
//! anywhere. The VIP is on no link: the router sends it to the master, the
//! way a cloud route table or an EIP does. A stand-in for that cloud API is
//! the test's "route controller", which follows the VRRP notify hooks'
//! state files (podlb's hooks hold only CAP_NET_ADMIN/NET_RAW and cannot
//! reach into the router's namespace themselves).
//!
//! ```text
//!  segment A 198.18.0.0/24      segment C 198.18.2.0/24
//!  lb1 .2 ── router .1          router .1 ── lb2 .2
//!                 │ segment B 198.18.1.0/24
//!                 ├── client .10, be1 .21, be2 .22
//!  VIP 198.18.9.100/32: router → the master's address
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podlb_lab::demo::{Attach, ConfigSpec, Podlb, ServiceSpec, VrrpSpec};
use podlb_lab::netns::{self, HttpConn, Topology};

use crate::common::*;
use crate::failover::{start_lb, wait_state};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 100);
const LB1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const LB2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const BES: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 1, 21), Ipv4Addr::new(198, 18, 1, 22)];

fn ip(ns: &str, args: &str) {
    let mut v = vec!["ip"];
    v.extend(args.split_whitespace());
    netns::exec_ok(ns, &v).unwrap_or_else(|e| panic!("ip {args} in {ns}: {e}"));
}

/// A veth from namespace `a` (interface `a_if`, address `a_addr`) into the
/// bridge of topology `t`.
fn leg(a: &str, a_if: &str, a_addr: &str, t: &Topology, port: &str) {
    netns::exec_ok(
        t.node(),
        &[
            "ip", "link", "add", port, "type", "veth", "peer", "name", a_if, "netns", a,
        ],
    )
    .unwrap();
    ip(t.node(), &format!("link set {port} master br0 up"));
    ip(a, &format!("addr add {a_addr} dev {a_if}"));
    ip(a, &format!("link set {a_if} up"));
}

struct Lab {
    a: Topology,
    b: Topology,
    c: Topology,
}

impl Lab {
    fn build() -> Lab {
        let mut a = Topology::new().unwrap();
        let mut b = Topology::new().unwrap();
        let mut c = Topology::new().unwrap();
        let router = a.add_host("router", Ipv4Addr::new(198, 18, 0, 1)).unwrap();
        netns::set_sysctl(&router, "net.ipv4.ip_forward", "1").unwrap();
        leg(&router, "eth1", "198.18.1.1/24", &b, "vr");
        leg(&router, "eth2", "198.18.2.1/24", &c, "vr");
        let lb1 = a.add_host("lb1", LB1).unwrap();
        let lb2 = c.add_host("lb2", LB2).unwrap();
        for (ns, gw) in [(&lb1, "198.18.0.1"), (&lb2, "198.18.2.1")] {
            netns::set_sysctl(ns, "net.ipv4.ip_forward", "0").unwrap();
            ip(ns, &format!("route add default via {gw}"));
        }
        let client = b.add_host("client", CLIENT).unwrap();
        ip(&client, "route add default via 198.18.1.1");
        for (i, be) in BES.iter().enumerate() {
            let ns = b.add_host(&format!("be{}", i + 1), *be).unwrap();
            ip(&ns, "route add default via 198.18.1.1");
        }
        Lab { a, b, c }
    }

    fn router(&self) -> &str {
        self.a.ns("router")
    }

    /// The topology and role of each podlb host.
    fn lb(&self, n: usize) -> (&Topology, &str) {
        if n == 1 {
            (&self.a, "lb1")
        } else {
            (&self.c, "lb2")
        }
    }
}

fn config(priority: u8, peer: Ipv4Addr, hook: &str) -> ConfigSpec {
    let mut c = ConfigSpec::lab(Attach::from_name("af_packet").unwrap(), "nat");
    c.services = vec![ServiceSpec {
        name: "web".into(),
        vip: VIP.into(),
        port: 80,
        mode: "nat".into(),
        backends: BES
            .iter()
            .map(|b| SocketAddr::V4(SocketAddrV4::new(*b, 80)))
            .collect(),
        health_check: None,
    }];
    let mut v = VrrpSpec::new(priority, 100);
    v.unicast_peers = vec![peer];
    // The router decrements the adverts' TTL (RFC 9568 §7.1 TTL check off).
    v.check_ttl = false;
    v.hook = Some(hook.to_string());
    c.vrrp = Some(v);
    c
}

/// Follows the hooks' state files: routes the VIP to whichever podlb last
/// said "master". Stops when dropped.
struct RouteController {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RouteController {
    fn start(router: String, files: [(std::path::PathBuf, Ipv4Addr); 2]) -> RouteController {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut current: Option<Ipv4Addr> = None;
            let mut seen = [String::new(), String::new()];
            while !s.load(Ordering::Relaxed) {
                for (i, (f, addr)) in files.iter().enumerate() {
                    let st = std::fs::read_to_string(f).unwrap_or_default();
                    if st != seen[i] {
                        seen[i] = st.clone();
                        if st.trim() == "master" && current != Some(*addr) {
                            ip(&router, &format!("route replace {VIP}/32 via {addr}"));
                            current = Some(*addr);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RouteController {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RouteController {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hook_script(dir: &std::path::Path, role: &str) -> (String, std::path::PathBuf) {
    let state = dir.join(format!("{role}.state"));
    let hook = dir.join(format!("{role}-hook.sh"));
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$PODLB_STATE\" > {0}.tmp && mv {0}.tmp {0}\n",
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (hook.display().to_string(), state)
}

#[test]
fn vrrp_unicast_across_l3_fails_over() {
    require_netns!("vrrp_unicast_across_l3_fails_over");
    let budget = Budget::start();
    let lab = Lab::build();
    let mut procs: Vec<netns::Proc> = (1..=2)
        .map(|i| {
            let name = format!("be{i}");
            start_nginx(&lab.b, lab.b.ns(&name), &name, &name)
        })
        .collect();
    let dir = lab.a.dir().to_path_buf();
    let (hook1, state1) = hook_script(&dir, "lb1");
    let (hook2, state2) = hook_script(&dir, "lb2");
    let _routes = RouteController::start(lab.router().to_string(), [(state1, LB1), (state2, LB2)]);
    let (t1, r1) = lab.lb(1);
    let lb1 = start_lb(t1, r1, &config(200, LB2, &hook1));
    procs.push(lb1.proc().clone());
    wait_state(&lb1, "master", Duration::from_secs(10));
    let (t2, r2) = lab.lb(2);
    let lb2: Podlb = start_lb(t2, r2, &config(100, LB1, &hook2));
    procs.push(lb2.proc().clone());
    let _log = LogOnPanic(procs);
    wait_state(&lb2, "backup", Duration::from_secs(10));
    // lb2 stays backup: lb1's adverts reach it through the router.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        lb2.vrrp_state().unwrap().as_deref(),
        Some("backup"),
        "{}",
        lb2.log_tail(3000)
    );
    let rx = |p: &Podlb| p.status().unwrap().vrrp.map_or(0, |v| v.adverts_received);
    assert!(rx(&lb2) >= 5, "lb2 received {} adverts", rx(&lb2));

    let client = lab.b.ns("client").to_string();
    let vip80 = SocketAddr::V4(SocketAddrV4::new(VIP, 80));
    let counts = netns::http_get_many_until(&client, vip80, 40, 4, true, budget.deadline())
        .unwrap_or_else(|e| panic!("HTTP through the routed VIP: {e}\n{}", lb1.log_tail(3000)));
    assert_eq!(counts.values().sum::<usize>(), 40, "{counts:?}");
    // Keep-alive connections through lb1, synced to lb2 over the router.
    let mut conns = netns::in_netns(&client, || {
        (0..10)
            .map(|_| {
                let mut c = HttpConn::connect(vip80, Duration::from_secs(3)).unwrap();
                let be = c.get("/", false).unwrap().body.trim().to_string();
                (c, be)
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // The master's link goes down: lb2 takes over across L3.
    let t0 = Instant::now();
    lab.a.set_port_up("lb1", false).unwrap();
    wait_state(&lb2, "master", Duration::from_secs(10));
    eprintln!("lb2 master {:?} after lb1's link went down", t0.elapsed());
    let deadline = Instant::now() + budget.left(Duration::from_secs(10));
    let counts = loop {
        match netns::http_get_many_until(&client, vip80, 20, 4, true, budget.deadline()) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no service after the failover: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    eprintln!("service back {:?} after the cut: {counts:?}", t0.elapsed());
    let mut kept = 0;
    for (c, be) in conns.iter_mut() {
        if let Ok(r) = c.get("/", false) {
            assert_eq!(
                r.body.trim(),
                be.as_str(),
                "a kept connection changed backends"
            );
            kept += 1;
        }
    }
    eprintln!("{kept}/10 keep-alive connections survived the L3 failover");
    assert_eq!(kept, 10, "established flows lost across the L3 failover");
    stop_podlb(&lb2);
}
