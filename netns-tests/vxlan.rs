//! `mode = "vxlan"` (RFC 7348): full NAT to pods on other nodes, carried in
//! VXLAN to their nodes' kernel VXLAN devices across a router.
//!
//! ```text
//!  segment A 198.18.0.0/24 (bridge)        segment B 198.19.0.0/24 (bridge)
//!  client .10 ─┐                     ┌─ node1 .11 ── vxlan1 ── pod1 198.19.10.2
//!  lb .2 ──────┼── router .1 ── .1 ──┤
//!  (podlb)     ┘   ip_forward=1      └─ node2 .12 ── vxlan1 ── pod2 198.19.20.2
//! ```
//! No L2 path between podlb and the pods: podlb's VXLAN frames go to the
//! router's MAC (the VTEPs' next hop is the default gateway). pod1 answers
//! the plain routed way (reply path a); node2 sends pod2's replies back
//! through its VXLAN device to podlb's address (reply path b).

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use podlb_lab::demo::{metric_value, Attach, ConfigSpec, VIP};
use podlb_lab::netns::{self, Topology};

use crate::common::*;

pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const ROUTER_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ROUTER_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The nodes, pods and VTEP MACs [`Lab::build_with`] can make; the lab
/// of this file uses the first two.
pub(crate) const NODES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 19, 0, 11),
    Ipv4Addr::new(198, 19, 0, 12),
    Ipv4Addr::new(198, 19, 0, 13),
];
pub(crate) const PODS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 19, 10, 2),
    Ipv4Addr::new(198, 19, 20, 2),
    Ipv4Addr::new(198, 19, 30, 2),
];
pub(crate) const VTEP_MACS: [&str; 3] = [
    "02:00:00:00:01:11",
    "02:00:00:00:01:12",
    "02:00:00:00:01:13",
];

pub(crate) fn ip(ns: &str, args: &str) {
    let mut v = vec!["ip"];
    v.extend(args.split_whitespace());
    netns::exec_ok(ns, &v).unwrap_or_else(|e| panic!("ip {args} in {ns}: {e}"));
}

/// A veth from `a` (named `a_if`, `a_addr`) into the bridge `br0` of
/// topology namespace `bridge_ns`.
pub(crate) fn link_to_bridge(a: &str, a_if: &str, a_addr: &str, bridge_ns: &str, port: &str) {
    let ns_arg = a.to_string();
    netns::exec_ok(
        bridge_ns,
        &[
            "ip", "link", "add", port, "type", "veth", "peer", "name", a_if, "netns", &ns_arg,
        ],
    )
    .unwrap();
    ip(bridge_ns, &format!("link set {port} master br0 up"));
    ip(a, &format!("addr add {a_addr} dev {a_if}"));
    ip(a, &format!("link set {a_if} up"));
}

/// The topologies (segment A, segment B, one per pod); all removed on drop.
pub(crate) struct Lab {
    pub(crate) a: Topology,
    pub(crate) b: Topology,
    pub(crate) pods: Vec<Topology>,
}

impl Lab {
    /// The lab with two nodes and their pods.
    pub(crate) fn build() -> Lab {
        Lab::build_with(2)
    }

    /// The lab with `n` (at most 3) nodes, a pod behind each.
    pub(crate) fn build_with(n: usize) -> Lab {
        assert!((1..=NODES.len()).contains(&n), "{n} nodes");
        let mut a = Topology::new().unwrap();
        let client = a.add_host("client", CLIENT).unwrap();
        let lb = a.add_host("lb", LB).unwrap();
        let router = a.add_host("router", ROUTER_A).unwrap();
        let mut b = Topology::new().unwrap();
        let mut pods: Vec<Topology> = (0..n).map(|_| Topology::new().unwrap()).collect();
        netns::set_sysctl(&lb, "net.ipv4.ip_forward", "0").unwrap();
        netns::set_sysctl(&router, "net.ipv4.ip_forward", "1").unwrap();
        for ns in [&client, &lb] {
            ip(ns, &format!("route add default via {ROUTER_A}"));
        }
        link_to_bridge(&router, "eth1", &format!("{ROUTER_B}/24"), b.node(), "vr");
        for i in 0..n {
            let node = b.add_host(&format!("node{}", i + 1), NODES[i]).unwrap();
            let pod = pods[i].add_host("pod", PODS[i]).unwrap();
            for k in ["all", "default"] {
                netns::set_sysctl(&node, &format!("net.ipv4.conf.{k}.rp_filter"), "0").unwrap();
            }
            netns::set_sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
            ip(&node, &format!("route add default via {ROUTER_B}"));
            let gw = Ipv4Addr::new(198, 19, 10 * (i as u8 + 1), 1);
            link_to_bridge(&node, "pod0", &format!("{gw}/24"), pods[i].node(), "vn");
            ip(&pod, &format!("route add default via {gw}"));
            ip(
                &node,
                &format!(
                    "link add vxlan1 type vxlan id 1 dstport 8472 local {} nolearning",
                    NODES[i]
                ),
            );
            ip(
                &node,
                &format!("link set vxlan1 address {} up", VTEP_MACS[i]),
            );
            let net = Ipv4Addr::new(198, 19, 10 * (i as u8 + 1), 0);
            ip(&router, &format!("route add {net}/24 via {}", NODES[i]));
        }
        Lab { a, b, pods }
    }

    /// node2 returns traffic for the VIP through its VXLAN device to podlb
    /// (reply path b): route the VIP onto vxlan1, its neighbor entry is
    /// podlb's MAC, and the FDB sends that MAC to podlb's address.
    pub(crate) fn reply_through_tunnel(&self, node: usize, lb_mac: &str) {
        let ns = self.b.ns(&format!("node{}", node + 1));
        ip(ns, &format!("route add {VIP}/32 dev vxlan1"));
        ip(
            ns,
            &format!("neigh add {VIP} lladdr {lb_mac} dev vxlan1 nud permanent"),
        );
        netns::exec_ok(
            ns,
            &[
                "bridge",
                "fdb",
                "append",
                lb_mac,
                "dev",
                "vxlan1",
                "dst",
                &LB.to_string(),
            ],
        )
        .unwrap();
    }

    pub(crate) fn pod_ns(&self, i: usize) -> &str {
        self.pods[i].ns("pod")
    }
}

/// The lab's services: "web" (port 80) on the pods `web`, "iperf" (5201)
/// on pod 1.
fn vxlan_config(web: &[usize]) -> ConfigSpec {
    let mut c = ConfigSpec::lab(
        Attach::AfPacket {
            interface: "eth0".into(),
        },
        "nat",
    );
    c.services.clear();
    let backends = |port: u16, which: &[usize]| {
        which
            .iter()
            .map(|&i| {
                format!(
                    "{{ addr = \"{}:{port}\", vtep = \"{}\", vtep_mac = \"{}\" }}",
                    PODS[i], NODES[i], VTEP_MACS[i]
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    c.extra = format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nmode = \"vxlan\"\n\
         backends = [{}]\n\n\
         [[service]]\nname = \"iperf\"\nvip = \"{VIP}\"\nport = 5201\nmode = \"vxlan\"\n\
         backends = [{}]\n",
        backends(80, web),
        backends(5201, &[0])
    );
    c
}

fn metric(podlb: &podlb_lab::demo::Podlb, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&podlb.metrics().unwrap(), name, labels).unwrap_or(0.0)
}

#[test]
fn vxlan_to_pods_on_other_nodes() {
    require_netns!("vxlan_to_pods_on_other_nodes");
    let budget = Budget::start();
    let lab = Lab::build();
    let mut procs = Vec::new();
    for i in 0..2 {
        procs.push(start_nginx(
            &lab.pods[i],
            lab.pod_ns(i),
            &format!("pod{}", i + 1),
            &format!("pod{}", i + 1),
        ));
    }
    procs.push(start_iperf_server(&lab.pods[0], lab.pod_ns(0)));
    let lb_mac = netns::mac_of(lab.a.ns("lb"), "eth0").unwrap();
    lab.reply_through_tunnel(1, &lb_mac);
    let attach = Attach::AfPacket {
        interface: "eth0".into(),
    };
    let podlb = start_podlb(&lab.a, &attach, &vxlan_config(&[0, 1]));
    procs.push(podlb.proc().clone());
    let _log = LogOnPanic(procs);
    let client = lab.a.ns("client");

    // /status: mode and VTEPs, next hop = the router.
    let st = podlb.status().unwrap();
    let web = &st.services[0];
    assert_eq!(web.mode, "vxlan", "{st:?}");
    let vteps: Vec<Ipv4Addr> = web.backends.iter().filter_map(|b| b.vtep).collect();
    assert!(
        vteps.contains(&Ipv4Addr::new(198, 19, 0, 11))
            && vteps.contains(&Ipv4Addr::new(198, 19, 0, 12)),
        "{st:?}"
    );
    assert_eq!(web.backends[0].next_hop, Some(ROUTER_A), "{st:?}");

    // (a) HTTP through the VIP reaches the pods on both nodes.
    let t = Instant::now();
    let counts = netns::http_get_many_until(client, vip(80), 600, 8, true, budget.deadline())
        .unwrap_or_else(|e| panic!("HTTP through the VIP failed: {e}"));
    let http_s = t.elapsed().as_secs_f64();
    assert_eq!(counts.values().sum::<usize>(), 600, "{counts:?}");
    for p in ["pod1", "pod2"] {
        assert!(counts.get(p).copied().unwrap_or(0) > 150, "{counts:?}");
    }
    let encap = metric(&podlb, "podlb_vxlan_encapsulated_total", &[]);
    let decap = metric(&podlb, "podlb_vxlan_decapsulated_total", &[]);
    assert!(encap >= 600.0 * 3.0, "encapsulated {encap}");
    assert!(
        decap > 0.0,
        "pod2's replies came back through the tunnel: {decap}"
    );
    assert!(metric(&podlb, "podlb_mss_clamped_total", &[]) > 0.0);

    // (b) iperf3 (client → pod1: GSO frames segmented in software).
    let bps = run_iperf(client, VIP, 3, &budget);
    let segmented = metric(&podlb, "podlb_gso_segmented_total", &[]);
    // Reference only (asserted nothing): the same client to the same pod,
    // routed without podlb or VXLAN.
    let direct = run_iperf(client, PODS[0], 3, &budget);
    eprintln!(
        "vxlan: 600 new HTTP connections in {http_s:.2} s ({:.0}/s), spread {counts:?}; \
         iperf3 {:.2} Gbit/s (routed to the pod without podlb: {:.2}); \
         {encap} encapsulated, {decap} decapsulated, {segmented} GSO frames segmented",
        600.0 / http_s,
        bps / 1e9,
        direct / 1e9
    );

    // (c) Malformed VXLAN to podlb's address: counted drops, podlb serves on.
    // The router has never sent to podlb's own address: settle its ARP with
    // one datagram that podlb counts before measuring.
    let node1 = lab.b.ns("node1").to_string();
    let unknown_vni = vec![0x08, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
    let send = |payloads: Vec<Vec<u8>>, rounds: usize| {
        netns::in_netns(&node1, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            for _ in 0..rounds {
                for p in &payloads {
                    s.send_to(p, (LB, 8472)).unwrap();
                }
                // Paced: a burst beyond podlb's RX ring (120 slots) while its
                // worker sleeps would be dropped by the kernel, uncounted.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap()
    };
    let vni_drops = || {
        metric(
            &podlb,
            "podlb_drops_total",
            &[("reason", "vxlan_unknown_vni")],
        )
    };
    let settle = Instant::now() + budget.left(Duration::from_secs(5));
    let first = vni_drops();
    while vni_drops() == first && Instant::now() < settle {
        send(vec![unknown_vni.clone()], 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    let before_m = metric(
        &podlb,
        "podlb_drops_total",
        &[("reason", "vxlan_malformed")],
    );
    let before_v = vni_drops();
    let bad: Vec<Vec<u8>> = vec![
        vec![0x08, 0, 0],                                           // short
        vec![0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4],                   // I flag clear
        vec![0x08, 0, 0, 0, 0, 0, 1, 0, 0xde, 0xad],                // inner frame garbage
        [vec![0x08, 0, 0, 0, 0, 0, 1, 0], vec![0xff; 60]].concat(), // inner not IPv4
        unknown_vni,
    ];
    send(bad, 25);
    let deadline = Instant::now() + budget.left(Duration::from_secs(5));
    let (m, v) = loop {
        let m = metric(
            &podlb,
            "podlb_drops_total",
            &[("reason", "vxlan_malformed")],
        ) - before_m;
        let v = metric(
            &podlb,
            "podlb_drops_total",
            &[("reason", "vxlan_unknown_vni")],
        ) - before_v;
        if (m >= 100.0 && v >= 25.0) || Instant::now() >= deadline {
            break (m, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(m >= 100.0 && v >= 25.0, "malformed {m}, unknown vni {v}");
    assert!(podlb.proc().is_running(), "podlb died on malformed VXLAN");
    let counts =
        netns::http_get_many_until(client, vip(80), 40, 4, true, budget.deadline()).unwrap();
    assert_eq!(counts.values().sum::<usize>(), 40);

    // (d) pod2 removed by a reload: connections open on it keep their tunnel
    // while they drain (they used to be dropped as vxlan_no_vtep), new ones
    // go to pod1 only.
    let mut conns = open_until_on(client, 0, ("pod2", 2), 40);
    let on_pod2 = conns.iter().filter(|(_, b)| b == "pod2").count();
    assert!(on_pod2 >= 1, "none of {} connections on pod2", conns.len());
    let no_vtep = || metric(&podlb, "podlb_drops_total", &[("reason", "vxlan_no_vtep")]);
    let no_vtep_before = no_vtep();
    podlb.reload(&vxlan_config(&[0])).unwrap();
    wait_removed(&podlb, &format!("{}:80", PODS[1]), &budget);
    for (i, (c, body)) in conns.iter_mut().enumerate() {
        let r = c
            .get("/", false)
            .unwrap_or_else(|e| panic!("conn {i} (on {body}) failed after the reload: {e}"));
        assert_eq!((r.status, r.body.trim()), (200, body.as_str()), "conn {i}");
    }
    assert_eq!(no_vtep() - no_vtep_before, 0.0, "draining flows dropped");
    let counts =
        netns::http_get_many_until(client, vip(80), 60, 4, true, budget.deadline()).unwrap();
    assert_eq!(counts.get("pod1").copied(), Some(60), "{counts:?}");
    eprintln!(
        "vxlan: {on_pod2} of {} kept connections on removed pod2 still answer",
        conns.len()
    );
    stop_podlb(&podlb);
}
