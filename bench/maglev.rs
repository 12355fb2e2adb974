//! Maglev table and flow hash micro-benchmarks (criterion).
//!
//! `cargo bench --bench maglev -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use podlb_core::hash::{flow_hash, mix64};
use podlb_core::maglev::{MaglevTable, DEFAULT_TABLE_SIZE};

fn backends(n: usize) -> Vec<(String, u32)> {
    (0..n)
        .map(|i| (format!("198.18.{}.{}:80", i / 250, i % 250 + 1), 1))
        .collect()
}

/// Lookups of pseudo-random hashes, 1024 per iteration, so the loop overhead
/// is amortised and the table is hit all over (128 KiB: L2-resident).
fn maglev_lookup(c: &mut Criterion) {
    let table = MaglevTable::build(&backends(1000), DEFAULT_TABLE_SIZE).unwrap();
    let hashes: Vec<u64> = (0..1024u64).map(|i| mix64(i ^ 0xdead_beef)).collect();
    let mut g = c.benchmark_group("maglev_lookup");
    g.throughput(Throughput::Elements(hashes.len() as u64));
    g.bench_function("1000_backends_m65537_x1024", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &h in black_box(&hashes) {
                acc = acc.wrapping_add(u32::from(table.lookup(h).unwrap_or(0)));
            }
            acc
        })
    });
    g.finish();
}

fn maglev_build_1000(c: &mut Criterion) {
    let b = backends(1000);
    c.bench_function("maglev_build_1000", |bench| {
        bench.iter(|| MaglevTable::build(black_box(&b), DEFAULT_TABLE_SIZE).unwrap())
    });
    // For comparison: the order-independence sort is part of build; measure
    // a shuffled input too (different sort work, same table).
    let mut shuffled = b.clone();
    shuffled.reverse();
    c.bench_function("maglev_build_1000_reversed_input", |bench| {
        bench.iter_batched(
            || shuffled.clone(),
            |s| MaglevTable::build(&s, DEFAULT_TABLE_SIZE).unwrap(),
            BatchSize::LargeInput,
        )
    });
}

fn flow_hash_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_hash");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("x1024", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for port in 0..1024u16 {
                acc ^= flow_hash(black_box(0xc612_0a01), port, black_box(0xc612_0001), 80, 6);
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, maglev_lookup, maglev_build_1000, flow_hash_bench);
criterion_main!(benches);
