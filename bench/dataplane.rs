//! Data-plane micro-benchmarks (criterion): the connection table at 1M flows
//! and `Forwarder::forward()` per packet.
//!
//! `cargo bench --bench dataplane -- --warm-up-time 1 --measurement-time 3`
//!
//! Table benches run 1024 operations per iteration over keys in a shuffled
//! order, so almost every lookup misses the CPU caches as real traffic does
//! (the table is ~84 MB, the L3 of the reference machine 32 MB); criterion's
//! time per element is the cost of one operation. `forward()` rewrites the
//! frame in place, so each iteration first copies a pristine frame into a
//! scratch buffer; `frame_copy` measures that copy alone, to be subtracted.
//! Frames are built with etherparse, an encoder independent of `podlb_wire`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use etherparse::{EtherType, Ethernet2Header, PacketBuilder};
use podlb_core::flow::{tcp_state, Flow, FlowKey, FlowRef, FlowTable, ReverseKey, Timeouts};
use podlb_core::forward::{Forwarder, NatPorts, PacketMeta, Verdict};
use podlb_core::hash::mix64;
use podlb_core::model::{BackendConfig, Mode, Protocol, ServiceConfig};
use podlb_core::neighbor::NeighborTable;
use podlb_core::service::Snapshot;
use podlb_core::stats::WorkerStats;
use podlb_io::mem::prefetch_ptr;
use podlb_wire::MacAddr;

const FLOWS: u32 = 1_000_000;
/// Operations per iteration of the table benches.
const BATCH: usize = 1024;
/// Frames a worker sees ahead in one RX batch (AF_PACKET V2 takes up to 64).
const RX_BATCH: usize = 32;
const NOW: u32 = 1_000;
const TIMEOUTS: Timeouts = Timeouts {
    syn_ms: 10_000,
    established_ms: 3_600_000,
    fin_ms: 60_000,
    close_ms: 10_000,
    udp_unanswered_ms: 30_000,
    udp_answered_ms: 120_000,
};
const META: PacketMeta = PacketMeta {
    csum_partial: false,
    tx_keeps_partial: false,
    vlan_stripped: false,
    truncated: false,
    gso_size: 0,
};

const VIP: [u8; 4] = [198, 18, 0, 100];
const CLIENT: [u8; 4] = [198, 18, 0, 1];
const PODLB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn ip(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a)
}

/// A deterministic Fisher–Yates shuffle driven by `mix64` of a counter.
fn shuffle<T>(v: &mut [T], seed: u64) {
    for i in (1..v.len()).rev() {
        let j = (mix64(seed ^ i as u64) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

// ---- connection table ------------------------------------------------------

/// Client-side key of table flow `i` (distinct for every `i`).
fn table_key(i: u32) -> FlowKey {
    FlowKey {
        client: 0x0a00_0000 + (i >> 14),
        vip: ip(VIP),
        client_port: 1024 + (i & 0x3fff) as u16,
        vport: 80,
        proto: 6,
    }
}

/// A key that is never inserted (clients from another /8).
fn absent_key(i: u32) -> FlowKey {
    FlowKey {
        client: 0x0b00_0000 + (i >> 14),
        ..table_key(i)
    }
}

/// A full-NAT flow with a distinct reverse tuple for every `i`.
fn table_flow(i: u32) -> Flow {
    Flow {
        key: table_key(i),
        backend: 0x0a80_0000 + (i >> 15),
        backend_port: 8080,
        nat_port: 1024 + (i & 0x7fff) as u16,
        client_mac: MacAddr(CLIENT_MAC),
        service: 0,
        stat: 0,
        tcp: tcp_state::SYN | tcp_state::ESTABLISHED,
        last_seen_ms: NOW,
    }
}

fn reverse_key(f: &Flow) -> ReverseKey {
    ReverseKey {
        backend: f.backend,
        vip: f.key.vip,
        backend_port: f.backend_port,
        nat_port: f.nat_port,
        proto: f.key.proto,
    }
}

/// Runs `op` over `keys[cur..cur + BATCH]` and advances the cursor; `keys`
/// holds a multiple of BATCH.
#[inline(always)]
fn batch<K>(keys: &[K], cur: &mut usize, mut op: impl FnMut(&K) -> bool) -> u32 {
    let mut hits = 0;
    for k in &keys[*cur..*cur + BATCH] {
        hits += op(k) as u32;
    }
    *cur = (*cur + BATCH) % keys.len();
    hits
}

fn flow_table(c: &mut Criterion) {
    let mut t = FlowTable::new(FLOWS as usize, TIMEOUTS);
    t.set_huge_page_bytes(podlb_io::mem::advise_regions(&t.regions()));
    let fill = Instant::now();
    let mut live: Vec<(FlowRef, u32)> = Vec::with_capacity(FLOWS as usize);
    for i in 0..FLOWS {
        if let Ok(r) = t.insert(&table_flow(i), true, NOW) {
            live.push((r, i));
        }
    }
    println!(
        "flow table: {} bytes on huge pages (0: transparent huge pages unavailable)",
        t.huge_page_bytes()
    );
    println!(
        "flow table: {} of {} flows inserted ({} refused) in {:.2} s; {} slots; memory {} bytes = {:.1} bytes per flow of capacity {}",
        live.len(),
        FLOWS,
        FLOWS as usize - live.len(),
        fill.elapsed().as_secs_f64(),
        t.slot_count(),
        t.memory_bytes(),
        t.memory_bytes() as f64 / FLOWS as f64,
        FLOWS,
    );
    shuffle(&mut live, 1);
    let usable = live.len() / BATCH * BATCH;
    let hit: Vec<FlowKey> = live[..usable].iter().map(|&(_, i)| table_key(i)).collect();
    let miss: Vec<FlowKey> = live[..usable].iter().map(|&(_, i)| absent_key(i)).collect();
    let rev: Vec<ReverseKey> = live[..usable]
        .iter()
        .map(|&(_, i)| reverse_key(&table_flow(i)))
        .collect();
    assert!(hit.iter().take(BATCH).all(|k| t.lookup(k).is_some()));
    assert!(miss.iter().take(BATCH).all(|k| t.lookup(k).is_none()));
    assert!(rev
        .iter()
        .take(BATCH)
        .all(|k| t.lookup_reverse(k).is_some()));

    let mut g = c.benchmark_group("flow_table");
    g.throughput(Throughput::Elements(BATCH as u64));

    let mut cur = 0;
    g.bench_function("flow_lookup_hit_1m", |b| {
        b.iter(|| batch(&hit, &mut cur, |k| t.lookup(black_box(k)).is_some()))
    });

    // The same lookups made dependent on each other: the next key's address
    // depends on data loaded from the previous flow's slot, so one lookup's
    // misses cannot overlap the next one's. The latency of one lookup.
    let zero = black_box(0usize);
    let mut cur = 0;
    g.bench_function("flow_lookup_hit_1m_dependent", |b| {
        b.iter(|| {
            let mut dep = 0usize;
            let mut hits = 0u32;
            for i in cur..cur + BATCH {
                let r = t.lookup(&hit[i + dep]);
                hits += r.is_some() as u32;
                dep = r.map_or(0, |(_, f)| f.last_seen_ms as usize) & zero;
            }
            cur = (cur + BATCH) % hit.len();
            hits
        })
    });

    // As a worker does it: a batch of RX_BATCH keys is prefetched first
    // (FlowTable::prefetch: both candidate control lines), then looked up.
    let mut cur = 0;
    g.bench_function("flow_lookup_hit_1m_prefetched", |b| {
        b.iter(|| {
            let mut hits = 0u32;
            for chunk in hit[cur..cur + BATCH].chunks(RX_BATCH) {
                for k in chunk {
                    t.prefetch(&prefetch_ptr, black_box(k));
                }
                for k in chunk {
                    t.prefetch_slot(&prefetch_ptr, black_box(k));
                }
                for k in chunk {
                    hits += t.lookup(black_box(k)).is_some() as u32;
                }
            }
            cur = (cur + BATCH) % hit.len();
            hits
        })
    });

    let mut cur = 0;
    g.bench_function("flow_lookup_miss_1m", |b| {
        b.iter(|| batch(&miss, &mut cur, |k| t.lookup(black_box(k)).is_some()))
    });

    let mut cur = 0;
    g.bench_function("flow_reverse_lookup_1m", |b| {
        b.iter(|| batch(&rev, &mut cur, |k| t.lookup_reverse(black_box(k)).is_some()))
    });

    // Reference: what this machine's memory allows. One random 64-byte line
    // of an 84 MB array (the table's size) per element, independent reads
    // and a dependent chain (the latency of one cache and TLB miss).
    let words = t.memory_bytes() / 8;
    let lines: Vec<u32> = (0..hit.len() as u64)
        .map(|i| (mix64(i ^ 77) % (words as u64 / 8)) as u32 * 8)
        .collect();
    let mem: Vec<u64> = (0..words as u64).collect();
    let mut cur = 0;
    g.bench_function("ref_dram_read_independent", |b| {
        b.iter(|| batch(&lines, &mut cur, |&l| mem[l as usize] & 1 == 1))
    });
    let mut cur = 0;
    g.bench_function("ref_dram_read_dependent", |b| {
        b.iter(|| {
            let mut dep = 0usize;
            for i in cur..cur + BATCH {
                dep = mem[lines[i] as usize + dep] as usize & zero;
            }
            cur = (cur + BATCH) % lines.len();
            dep
        })
    });
    drop((lines, mem));

    // Steady state at 1M: remove the oldest flow (in shuffled order, so a
    // random slot), insert a new one. One element = one remove + one insert.
    let mut ring: Vec<FlowRef> = live.iter().map(|&(r, _)| r).collect();
    drop((hit, miss, rev, live));
    let (mut pos, mut next, mut refused) = (0usize, FLOWS, 0u64);
    g.bench_function("flow_insert_remove", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                t.remove(ring[pos]);
                // A refused insert (both buckets of the new key full) is
                // retried with the next key, so the table stays at its fill
                // level; the refused attempts are part of the cost.
                loop {
                    next += 1;
                    match t.insert(&table_flow(next), true, NOW) {
                        Ok(r) => break ring[pos] = r,
                        Err(_) => refused += 1,
                    }
                }
                pos = (pos + 1) % ring.len();
            }
        })
    });
    g.finish();
    println!(
        "flow_insert_remove: {} insert attempts, {} refused (both buckets full); table now holds {} flows",
        next - FLOWS,
        refused,
        t.len()
    );
}

// ---- forward() -------------------------------------------------------------

fn backend_ip(i: usize) -> [u8; 4] {
    [198, 18, 0, 21 + i as u8]
}

fn backend_mac(ip: u32) -> [u8; 6] {
    let [_, _, c, d] = ip.to_be_bytes();
    [0x02, 0, 0, 0, c, d]
}

/// IPv6 (RFC 5180's 2001:2::/48): the VIP, backend `i` and the MAC of a
/// backend address (its last two bytes, as for IPv4, with 0x06 apart).
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

fn backend_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x21 + i as u16)
}

fn backend_mac6(ip: u128) -> [u8; 6] {
    let b = ip.to_be_bytes();
    [0x02, 0, 0, 0x06, b[14], b[15]]
}

/// One worker's forwarder and a snapshot with one service on VIP:80.
struct Rig {
    fwd: Forwarder,
    snap: Snapshot,
}

fn service(name: String, vip: [u8; 4], mode: Mode, backends: &[[u8; 4]]) -> ServiceConfig {
    ServiceConfig {
        name,
        vip: Ipv4Addr::from(vip).into(),
        port: 80,
        mode,
        backends: backends
            .iter()
            .map(|&b| BackendConfig {
                addr: (Ipv4Addr::from(b), 8080).into(),
                weight: 1,
                vtep: None,
                vtep_mac: None,
            })
            .collect(),
        table_size: 65537,
        health_check: None,
        vxlan_port: podlb_core::model::DEFAULT_VXLAN_PORT,
        vni: podlb_core::model::DEFAULT_VNI,
        mss_clamp: None,
        source_ranges: Vec::new(),
        affinity: Default::default(),
        protocol: Default::default(),
        udp_hash: Default::default(),
    }
}

/// An IPv6 service on `vip`:80 over `backends` (port 8080), otherwise as
/// [`service`].
fn service6(name: String, vip: Ipv6Addr, mode: Mode, backends: &[Ipv6Addr]) -> ServiceConfig {
    ServiceConfig {
        vip: vip.into(),
        backends: backends
            .iter()
            .map(|&b| BackendConfig {
                addr: (b, 8080).into(),
                weight: 1,
                vtep: None,
                vtep_mac: None,
            })
            .collect(),
        ..service(name, VIP, mode, &[])
    }
}

/// Services and backends of the scale case (issue 6): `n` services on VIPs
/// 198.18.1.1.. port 80, `per` distinct backends each (198.19.x.y).
const SCALE_SERVICES: usize = 100;
const SCALE_PER: usize = 10;

fn scale_vip(s: usize) -> [u8; 4] {
    [198, 18, 1, 1 + s as u8]
}

fn scale_services(mode: Mode) -> Vec<ServiceConfig> {
    (0..SCALE_SERVICES)
        .map(|s| {
            let bs: Vec<[u8; 4]> = (0..SCALE_PER)
                .map(|j| {
                    let i = s * SCALE_PER + j;
                    [198, 19, (i / 250) as u8, 1 + (i % 250) as u8]
                })
                .collect();
            service(format!("svc{s}"), scale_vip(s), mode, &bs)
        })
        .collect()
}

impl Rig {
    fn new(mode: Mode, backends: usize) -> Rig {
        let bs: Vec<[u8; 4]> = (0..backends).map(backend_ip).collect();
        Rig::with_services(vec![service("web".into(), VIP, mode, &bs)])
    }

    fn with_services(services: Vec<ServiceConfig>) -> Rig {
        Rig::with_tables(services, FLOWS as usize, 16)
    }

    /// A rig over `services` (IPv4 and IPv6 ones) with an IPv4 flow table of
    /// `flows4` and an IPv6 one of `flows6` flows; every backend's MAC is
    /// known (ARP or NDP already done).
    fn with_tables(services: Vec<ServiceConfig>, flows4: usize, flows6: usize) -> Rig {
        let snap = Snapshot::build(1, &services, |_, _| 0).expect("snapshot");
        let ips: Vec<IpAddr> = services
            .iter()
            .flat_map(|s| s.backends.iter())
            .map(|b| b.addr.ip())
            .collect();
        let v4: Vec<u32> = ips
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(ip) => Some(u32::from(*ip)),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<u128> = ips
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(ip) => Some(u128::from(*ip)),
                IpAddr::V4(_) => None,
            })
            .collect();
        let neighbors = NeighborTable::new(v4.len().max(1));
        for &b in &v4 {
            assert!(neighbors.track(b));
            assert!(neighbors.learn(b, MacAddr(backend_mac(b)), 0));
        }
        let neighbors6 = NeighborTable::new(v6.len().max(1));
        for &b in &v6 {
            assert!(neighbors6.track(b));
            assert!(neighbors6.learn(b, MacAddr(backend_mac6(b)), 0));
        }
        let fwd = Forwarder {
            mac: MacAddr(PODLB_MAC),
            own_mac: MacAddr(PODLB_MAC),
            own_ip: None,
            active: true,
            accept_mode: true,
            mac6: MacAddr(PODLB_MAC),
            active6: true,
            flows: Arc::new({
                let mut t = FlowTable::new(flows4, TIMEOUTS);
                t.set_huge_page_bytes(podlb_io::mem::advise_regions(&t.regions()));
                t
            }),
            neighbors: Arc::new(neighbors),
            flows6: Arc::new({
                let mut t = FlowTable::new(flows6, TIMEOUTS);
                t.set_huge_page_bytes(podlb_io::mem::advise_regions(&t.regions()));
                t
            }),
            neighbors6: Arc::new(neighbors6),
            own_ip6: None,
            stats: Arc::new(WorkerStats::default()),
            ports: NatPorts::new(0, 1, 0),
            pickup: true,
            sync: None,
            local_ip: 0,
            out: Default::default(),
            refused: None,
            icmp_errors: true,
            frags: Default::default(),
        };
        Rig { fwd, snap }
    }

    fn forward(&mut self, frame: &mut [u8]) -> Verdict {
        self.fwd.forward(&self.snap, frame, META, NOW)
    }

    fn flow_of(&self, client: [u8; 4], port: u16) -> Flow {
        let key = FlowKey {
            client: ip(client),
            vip: ip(VIP),
            client_port: port,
            vport: 80,
            proto: 6,
        };
        self.fwd.flows.lookup(&key).expect("flow exists").1
    }
}

/// One end of a TCP segment.
#[derive(Clone, Copy)]
struct End {
    mac: [u8; 6],
    ip: [u8; 4],
    port: u16,
}

/// A client (CLIENT_MAC) at `ip`:`port`.
fn from_client(ip: [u8; 4], port: u16) -> End {
    End {
        mac: CLIENT_MAC,
        ip,
        port,
    }
}

/// Service `vip`:80 at podlb's MAC.
fn to_vip(vip: [u8; 4]) -> End {
    End {
        mac: PODLB_MAC,
        ip: vip,
        port: 80,
    }
}

/// A TCP segment from `from` to `to`: a SYN, or an ACK with `payload` bytes.
fn tcp_frame(from: End, to: End, syn: bool, payload: usize) -> Vec<u8> {
    let (src_mac, dst_mac, src, dst) = (from.mac, to.mac, from.ip, to.ip);
    let (sport, dport) = (from.port, to.port);
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(2000) };
    let data = vec![0xa5u8; payload];
    let mut v = Vec::with_capacity(b.size(payload));
    b.write(&mut v, &data).expect("write frame");
    v
}

/// [`tcp_frame`] over IPv6: a SYN, or an ACK with `payload` bytes, from
/// `src`:`sport` (at CLIENT_MAC) to `dst`:`dport` (at podlb's MAC).
fn tcp6_frame(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    syn: bool,
    payload: usize,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, PODLB_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(2000) };
    let data = vec![0xa5u8; payload];
    let mut v = Vec::with_capacity(b.size(payload));
    b.write(&mut v, &data).expect("write frame");
    v
}

/// An ARP who-has for the VIP from the client (RFC 826 layout), padded to
/// the 60-byte Ethernet minimum.
fn arp_request() -> Vec<u8> {
    let eth = Ethernet2Header {
        source: CLIENT_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    };
    let mut v = eth.to_bytes().to_vec();
    v.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    v.extend_from_slice(&CLIENT_MAC);
    v.extend_from_slice(&CLIENT);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&VIP);
    v.resize(60, 0);
    v
}

/// Benches forward() of copies of `frame`, after checking it is sent.
fn bench_frame(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rig: &mut Rig,
    frame: &[u8],
) {
    let mut scratch = frame.to_vec();
    assert_eq!(
        rig.forward(&mut scratch),
        Verdict::Tx,
        "{name}: frame not forwarded"
    );
    g.bench_function(name, |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(frame));
            rig.forward(black_box(&mut scratch))
        })
    });
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(1));

    let ack = tcp_frame(from_client(CLIENT, 40000), to_vip(VIP), false, 64);
    let syn = tcp_frame(from_client(CLIENT, 40000), to_vip(VIP), true, 0);
    let mut scratch = ack.clone();
    g.bench_function("frame_copy", |b| {
        b.iter(|| {
            scratch.copy_from_slice(black_box(&ack));
            black_box(&mut scratch);
        })
    });

    for (mode, name) in [
        (Mode::Nat, "forward_nat_established"),
        (Mode::Dsr, "forward_dsr_established"),
    ] {
        let mut rig = Rig::new(mode, 3);
        assert_eq!(rig.forward(&mut syn.clone()), Verdict::Tx);
        let f = rig.flow_of(CLIENT, 40000);
        let mut out = ack.clone();
        rig.forward(&mut out);
        assert_eq!(
            &out[0..6],
            &backend_mac(f.backend),
            "{name}: sent to the backend's MAC"
        );
        if mode == Mode::Nat {
            assert_eq!(
                &out[30..34],
                &f.backend.to_be_bytes(),
                "{name}: destination rewritten"
            );
        }
        bench_frame(&mut g, name, &mut rig, &ack);

        if mode == Mode::Nat {
            let b = f.backend.to_be_bytes();
            let from = End {
                mac: backend_mac(f.backend),
                ip: b,
                port: f.backend_port,
            };
            let to = End {
                port: f.nat_port,
                ..to_vip(VIP)
            };
            let reply = tcp_frame(from, to, false, 64);
            let mut out = reply.clone();
            rig.forward(&mut out);
            assert_eq!(&out[30..34], &CLIENT, "reply goes back to the client");
            bench_frame(&mut g, "forward_nat_reply", &mut rig, &reply);
        }
    }

    let mut rig = Rig::new(Mode::Nat, 3);
    bench_frame(&mut g, "forward_arp_request", &mut rig, &arp_request());

    syn_new_flow(&mut g);
    established_1m(&mut g);
    established_1m6(&mut g);
    udp_1m(&mut g);
    scale_100x10(&mut g);
    g.finish();
}

/// Issue 6 scale case: 100 services x 10 backends (1,000 backends, 100 VIPs).
/// The snapshot build (100 Maglev tables of M = 65537), SYNs creating flows
/// spread over all VIPs in a table sized for 1M flows, and established
/// packets of 256k flows spread over all services, read in random order.
fn scale_100x10(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let svcs = scale_services(Mode::Nat);
    g.bench_function("snapshot_build_100x10", |b| {
        b.iter(|| Snapshot::build(1, black_box(&svcs), |_, _| 0).expect("snapshot"))
    });

    // client i: address 198.18.128+ (i >> 15), port 1024 + (i & 0x7fff), VIP i % 100
    const N: u32 = 1 << 18;
    let frame_of = |i: u32, syn: bool| {
        let c = (0xc612_8000u32 + (i >> 15)).to_be_bytes();
        let p = 1024 + (i & 0x7fff) as u16;
        let vip = to_vip(scale_vip((i % 100) as usize));
        tcp_frame(from_client(c, p), vip, syn, if syn { 0 } else { 64 })
    };
    let syns: Vec<u8> = (0..N).flat_map(|i| frame_of(i, true)).collect();
    let syn_len = frame_of(0, true).len();
    let mut rig = Rig::with_services(scale_services(Mode::Nat));
    let (mut next, mut other) = (0usize, 0u64);
    let mut scratch = vec![0u8; syn_len];
    g.bench_function("forward_syn_new_flow_100x10", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if next == N as usize {
                    rig = Rig::with_services(scale_services(Mode::Nat)); // untimed: empty table
                    next = 0;
                }
                let n = left.min(N as usize - next);
                let start = Instant::now();
                for j in next..next + n {
                    scratch.copy_from_slice(&syns[j * syn_len..(j + 1) * syn_len]);
                    other += (rig.forward(black_box(&mut scratch)) != Verdict::Tx) as u64;
                }
                total += start.elapsed();
                next += n;
                left -= n;
            }
            total
        })
    });
    println!("forward_syn_new_flow_100x10: {other} SYNs not forwarded (must be 0)");
    drop(syns);

    // established: the N flows handshaken, then their data packets in random order
    let mut rig = Rig::with_services(scale_services(Mode::Nat));
    for i in 0..N {
        assert_eq!(rig.forward(&mut frame_of(i, true)), Verdict::Tx);
        rig.forward(&mut frame_of(i, false));
    }
    let mut order: Vec<u32> = (0..N).collect();
    shuffle(&mut order, 3);
    let len = frame_of(0, false).len();
    let acks: Vec<u8> = order.iter().flat_map(|&i| frame_of(i, false)).collect();
    let mut scratch = vec![0u8; len];
    let (mut j, mut other) = (0usize, 0u64);
    g.bench_function("forward_nat_established_100x10_256k_flows", |b| {
        b.iter(|| {
            scratch.copy_from_slice(&acks[j * len..(j + 1) * len]);
            j = (j + 1) % N as usize;
            let v = rig.forward(black_box(&mut scratch));
            other += (v != Verdict::Tx) as u64;
            v
        })
    });
    println!(
        "forward_nat_established_100x10_256k_flows: table holds {}; {other} packets not forwarded (must be 0)",
        rig.fwd.flows.len()
    );
}

/// SYNs from distinct client ports, each creating a full-NAT flow. The
/// table is emptied (untimed) every `CHUNK` SYNs, so it never fills and the
/// NAT port cursor (64512 ports shared by 3 backends) does not wrap onto
/// ports still in use.
fn syn_new_flow(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const CHUNK: usize = 32768;
    let mut rig = Rig::new(Mode::Nat, 3);
    let frames: Vec<Vec<u8>> = (0..CHUNK)
        .map(|i| tcp_frame(from_client(CLIENT, 1024 + i as u16), to_vip(VIP), true, 0))
        .collect();
    let len = frames[0].len();
    let pristine: Vec<u8> = frames.concat();
    let mut scratch = vec![0u8; len];
    let (mut next, mut sent, mut other) = (0usize, 0u64, 0u64);
    g.bench_function("forward_syn_new_flow", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if next == CHUNK {
                    for i in 0..CHUNK {
                        let key = FlowKey {
                            client: ip(CLIENT),
                            vip: ip(VIP),
                            client_port: 1024 + i as u16,
                            vport: 80,
                            proto: 6,
                        };
                        if let Some((r, _)) = rig.fwd.flows.lookup(&key) {
                            rig.fwd.flows.remove(r);
                        }
                    }
                    next = 0;
                }
                let n = left.min(CHUNK - next);
                let start = Instant::now();
                for j in next..next + n {
                    scratch.copy_from_slice(&pristine[j * len..(j + 1) * len]);
                    match rig.forward(black_box(&mut scratch)) {
                        Verdict::Tx => sent += 1,
                        _ => other += 1,
                    }
                }
                total += start.elapsed();
                next += n;
                left -= n;
            }
            total
        })
    });
    println!("forward_syn_new_flow: {sent} SYNs forwarded, {other} not (must be 0)");
}

/// Established full-NAT traffic spread over 1M flows (30 backends, so NAT
/// ports suffice), frames of 256k random flows in turn: every packet's flow
/// is cold in the caches, as with real traffic over many connections.
fn established_1m(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const SAMPLE: usize = 1 << 18;
    let mut rig = Rig::new(Mode::Nat, 30);
    let client = |i: u32| -> ([u8; 4], u16) {
        (
            (0xc612_8000 + (i >> 15)).to_be_bytes(),
            1024 + (i & 0x7fff) as u16,
        )
    };
    let fill = Instant::now();
    for i in 0..FLOWS {
        let (c, p) = client(i);
        // SYN, then the handshake's ACK: an established flow is never
        // evicted by a later SYN (half-open ones are).
        if rig.forward(&mut tcp_frame(from_client(c, p), to_vip(VIP), true, 0)) == Verdict::Tx {
            rig.forward(&mut tcp_frame(from_client(c, p), to_vip(VIP), false, 0));
        }
    }
    // Only flows still in the table at the end (a SYN may have evicted an
    // earlier half-open flow before its ACK established it).
    let mut made: Vec<u32> = (0..FLOWS)
        .filter(|&i| {
            let (c, p) = client(i);
            let key = FlowKey {
                client: ip(c),
                vip: ip(VIP),
                client_port: p,
                vport: 80,
                proto: 6,
            };
            rig.fwd
                .flows
                .lookup(&key)
                .is_some_and(|(_, f)| f.tcp & tcp_state::ESTABLISHED != 0)
        })
        .collect();
    println!(
        "forward_nat_established_1m_flows: {} of {} handshakes left an established flow ({:.2} s); table holds {}",
        made.len(),
        FLOWS,
        fill.elapsed().as_secs_f64(),
        rig.fwd.flows.len()
    );
    shuffle(&mut made, 2);
    let frames: Vec<Vec<u8>> = made[..SAMPLE]
        .iter()
        .map(|&i| {
            let (c, p) = client(i);
            tcp_frame(from_client(c, p), to_vip(VIP), false, 64)
        })
        .collect();
    let len = frames[0].len();
    let pristine: Vec<u8> = frames.concat();
    drop(frames);
    let other = forward_one_by_one(
        g,
        "forward_nat_established_1m_flows",
        &mut rig,
        &pristine,
        len,
    );
    println!("forward_nat_established_1m_flows: {other} packets not forwarded (must be 0)");

    // The same frames as a worker handles an RX batch (see forward_batched).
    let other = forward_batched(
        g,
        "forward_nat_established_1m_flows_batched",
        &mut rig,
        &pristine,
        len,
    );
    println!("forward_nat_established_1m_flows_batched: {other} packets not forwarded (must be 0)");
}

/// [`established_1m`] over IPv6 (issue 17): full NAT66 of 1M established
/// flows from clients in 2001:2:0:8000::/64 to an IPv6 VIP over 30 IPv6
/// backends, in the IPv6 flow table (sized for 1M), then frames of 256k of
/// them in a random order. The batched variant runs the same look-ahead
/// call a worker makes; `Forwarder::prefetch` reads IPv4 frames only, so for
/// these frames it prefetches nothing.
fn established_1m6(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const SAMPLE: usize = 1 << 18;
    let bs: Vec<Ipv6Addr> = (0..30).map(backend_ip6).collect();
    let mut rig = Rig::with_tables(
        vec![service6("web6".into(), VIP6, Mode::Nat, &bs)],
        16,
        FLOWS as usize,
    );
    let base = u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0));
    let client = |i: u32| -> (Ipv6Addr, u16) {
        (
            Ipv6Addr::from(base + u128::from(i >> 15)),
            1024 + (i & 0x7fff) as u16,
        )
    };
    let fill = Instant::now();
    for i in 0..FLOWS {
        let (c, p) = client(i);
        if rig.forward(&mut tcp6_frame(c, p, VIP6, 80, true, 0)) == Verdict::Tx {
            rig.forward(&mut tcp6_frame(c, p, VIP6, 80, false, 0));
        }
    }
    let mut made: Vec<u32> = (0..FLOWS)
        .filter(|&i| {
            let (c, p) = client(i);
            let key = FlowKey {
                client: u128::from(c),
                vip: u128::from(VIP6),
                client_port: p,
                vport: 80,
                proto: 6,
            };
            rig.fwd
                .flows6
                .lookup(&key)
                .is_some_and(|(_, f)| f.tcp & tcp_state::ESTABLISHED != 0)
        })
        .collect();
    let t = &rig.fwd.flows6;
    println!(
        "forward_nat66_established_1m_flows: {} of {} handshakes left an established flow ({:.2} s); IPv6 table holds {}, {:.1} bytes per flow of capacity {}, {} bytes on huge pages; IPv4 table holds {}",
        made.len(),
        FLOWS,
        fill.elapsed().as_secs_f64(),
        t.len(),
        t.memory_bytes() as f64 / FLOWS as f64,
        FLOWS,
        t.huge_page_bytes(),
        rig.fwd.flows.len()
    );
    // The rewrite is NAT66: the first frame leaves from the VIP to a backend.
    let (c, p) = client(made[0]);
    let mut out = tcp6_frame(c, p, VIP6, 80, false, 64);
    assert_eq!(rig.forward(&mut out), Verdict::Tx);
    assert_eq!(&out[22..38], &VIP6.octets(), "source rewritten to the VIP");
    assert!(
        bs.iter().any(|b| out[38..54] == b.octets()),
        "destination rewritten to a backend"
    );
    shuffle(&mut made, 4);
    let frames: Vec<Vec<u8>> = made[..SAMPLE]
        .iter()
        .map(|&i| {
            let (c, p) = client(i);
            tcp6_frame(c, p, VIP6, 80, false, 64)
        })
        .collect();
    let len = frames[0].len();
    let pristine: Vec<u8> = frames.concat();
    drop(frames);
    let other = forward_one_by_one(
        g,
        "forward_nat66_established_1m_flows",
        &mut rig,
        &pristine,
        len,
    );
    println!("forward_nat66_established_1m_flows: {other} packets not forwarded (must be 0)");
    let other = forward_batched(
        g,
        "forward_nat66_established_1m_flows_batched",
        &mut rig,
        &pristine,
        len,
    );
    println!(
        "forward_nat66_established_1m_flows_batched: {other} packets not forwarded (must be 0)"
    );
}

/// A UDP datagram from `from` to `to` with `payload` bytes.
fn udp_frame(from: End, to: End, payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(from.ip, to.ip, 64)
        .udp(from.port, to.port);
    let data = vec![0x5au8; payload];
    let mut v = Vec::with_capacity(b.size(payload));
    b.write(&mut v, &data).expect("write frame");
    v
}

/// UDP through full NAT (issue 16): 1M flows of one-datagram exchanges
/// (each client socket is a flow), then datagrams of 256k of them in a
/// random order, as `forward_nat_established_1m_flows` does for TCP.
fn udp_1m(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const SAMPLE: usize = 1 << 18;
    let bs: Vec<[u8; 4]> = (0..30).map(backend_ip).collect();
    let mut rig = Rig::with_services(vec![ServiceConfig {
        protocol: Protocol::Udp,
        ..service("dns".into(), VIP, Mode::Nat, &bs)
    }]);
    let client = |i: u32| -> ([u8; 4], u16) {
        (
            (0xc612_8000 + (i >> 15)).to_be_bytes(),
            1024 + (i & 0x7fff) as u16,
        )
    };
    for i in 0..FLOWS {
        let (c, p) = client(i);
        rig.forward(&mut udp_frame(from_client(c, p), to_vip(VIP), 64));
    }
    let mut made: Vec<u32> = (0..FLOWS)
        .filter(|&i| {
            let (c, p) = client(i);
            let key = FlowKey {
                client: ip(c),
                vip: ip(VIP),
                client_port: p,
                vport: 80,
                proto: 17,
            };
            rig.fwd.flows.lookup(&key).is_some()
        })
        .collect();
    println!(
        "forward_udp_nat_1m_flows: {} of {} datagrams left a flow; table holds {}",
        made.len(),
        FLOWS,
        rig.fwd.flows.len()
    );
    shuffle(&mut made, 3);
    let frames: Vec<Vec<u8>> = made[..SAMPLE]
        .iter()
        .map(|&i| {
            let (c, p) = client(i);
            udp_frame(from_client(c, p), to_vip(VIP), 64)
        })
        .collect();
    let len = frames[0].len();
    let pristine: Vec<u8> = frames.concat();
    drop(frames);
    let other = forward_one_by_one(g, "forward_udp_nat_1m_flows", &mut rig, &pristine, len);
    println!("forward_udp_nat_1m_flows: {other} datagrams not forwarded (must be 0)");

    let other = forward_batched(
        g,
        "forward_udp_nat_1m_flows_batched",
        &mut rig,
        &pristine,
        len,
    );
    println!("forward_udp_nat_1m_flows_batched: {other} datagrams not forwarded (must be 0)");
}

/// Benches `forward()` of the `len`-byte frames in `pristine`, one at a
/// time in order (each copied to a scratch buffer first); returns how many
/// were not forwarded.
fn forward_one_by_one(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rig: &mut Rig,
    pristine: &[u8],
    len: usize,
) -> u64 {
    let frames = pristine.len() / len;
    let mut scratch = vec![0u8; len];
    let (mut j, mut other) = (0usize, 0u64);
    g.bench_function(name, |b| {
        b.iter(|| {
            scratch.copy_from_slice(&pristine[j * len..(j + 1) * len]);
            j = (j + 1) % frames;
            let v = rig.forward(black_box(&mut scratch));
            other += (v != Verdict::Tx) as u64;
            v
        })
    });
    other
}

/// [`forward_one_by_one`] as a worker handles an RX batch: RX_BATCH frames
/// are shown to Forwarder::prefetch first, then forwarded. One element =
/// one frame (copy included).
fn forward_batched(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rig: &mut Rig,
    pristine: &[u8],
    len: usize,
) -> u64 {
    let frames = pristine.len() / len;
    let mut scratch = vec![0u8; len * RX_BATCH];
    let (mut j, mut other) = (0usize, 0u64);
    g.throughput(Throughput::Elements(RX_BATCH as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            let from = j * len;
            scratch.copy_from_slice(&pristine[from..from + len * RX_BATCH]);
            j = (j + RX_BATCH) % frames;
            for pass in 0..podlb_io::PREFETCH_PASSES {
                for f in scratch.chunks(len) {
                    Forwarder::prefetch(
                        &rig.fwd.flows,
                        &rig.snap,
                        black_box(f),
                        pass,
                        &prefetch_ptr,
                    );
                }
            }
            let mut tx = 0;
            for f in scratch.chunks_mut(len) {
                let v = rig.forward(black_box(f));
                tx += (v == Verdict::Tx) as u32;
            }
            other += u64::from(RX_BATCH as u32 - tx);
            tx
        })
    });
    g.throughput(Throughput::Elements(1));
    other
}

criterion_group!(benches, flow_table, forward);
criterion_main!(benches);
