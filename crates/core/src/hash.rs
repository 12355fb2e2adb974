//! Deterministic, seedless-by-process hashing for backend selection.
//!
//! Two podlb instances (the VRRP master and its backup) must build the same
//! Maglev table and send the same flow to the same backend, so nothing here
//! depends on a per-process random seed, on the host's endianness or on the
//! width of `usize`. The outputs of [`hash_bytes`] and [`flow_hash`] are part
//! of podlb's compatibility contract between versions: the test vectors at
//! the bottom of this file pin them, and changing them means a mixed-version
//! active/backup pair would disagree about where flows go.
//!
//! The construction is a folded 64×64→128-bit multiply (multiply, then XOR
//! the high and low halves), the core step of the wyhash family, followed by
//! the `mix64` finalizer (Stafford's "Mix13" variant of the MurmurHash3 /
//! SplitMix64 finalizer). Written for podlb; no code is taken from elsewhere.
//!
//! These hashes are not keyed and are not meant to resist a client that
//! chooses its 5-tuples to load one backend; Maglev itself has the same
//! property whenever the hash is known.

use crate::bits::Low;

/// 2^64 / φ, the usual odd "golden ratio" constant.
const K0: u64 = 0x9e37_79b9_7f4a_7c15;
/// SplitMix64 / Mix13 multiplier 1.
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
/// SplitMix64 / Mix13 multiplier 2.
const K2: u64 = 0x94d0_49bb_1331_11eb;
/// A fourth odd constant with about half its bits set (the first 64 bits of
/// the fractional part of √2).
const K3: u64 = 0x6a09_e667_f3bc_c909;

/// Multiplies two 64-bit words into 128 bits and folds the halves together
/// with XOR. Every input bit can reach every output bit in one step.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    Low::<u64>::low(p) ^ Low::<u64>::low(p >> 64)
}

/// Bijective 64-bit finalizer (Stafford Mix13): each input bit flips each
/// output bit with probability close to 1/2.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(K1);
    x ^= x >> 27;
    x = x.wrapping_mul(K2);
    x ^ (x >> 31)
}

/// Reads up to 8 bytes as a little-endian word, zero-padded. The caller mixes
/// the total length in, so padding cannot make two inputs collide.
#[inline(always)]
fn read_partial(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}

/// Hashes a byte string with a 64-bit seed.
///
/// Used off the hot path (Maglev permutations from backend keys), so it
/// favours simplicity over peak speed: 16 bytes per folded multiply.
pub fn hash_bytes(data: &[u8], seed: u64) -> u64 {
    let len = data.len() as u64;
    let mut h = fold_mul(seed ^ K0, len ^ K1);
    let mut chunks = data.chunks_exact(16);
    for chunk in &mut chunks {
        let (a, b) = chunk.split_at(8);
        let a = u64::from_le_bytes(a.try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        // The state goes into both operands (after different rotations) so
        // that one chosen word cannot zero an operand and erase the state.
        h = fold_mul(a ^ h ^ K2, b ^ h.rotate_left(29) ^ K3);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let (a, b) = rest.split_at(rest.len().min(8));
        h = fold_mul(
            read_partial(a) ^ h ^ K2,
            read_partial(b) ^ h.rotate_left(29) ^ K3,
        );
    }
    mix64(h ^ len.rotate_left(32))
}

/// Hashes an IPv4 5-tuple (addresses in host order) for backend selection.
///
/// One folded multiply of the two packed words, then [`mix64`]: about three
/// multiplies, no branches, no memory access. Both halves of the result are
/// well mixed; [`MaglevTable::lookup`](super::maglev::MaglevTable::lookup)
/// uses the high 32 bits.
#[inline]
pub fn flow_hash(src: u32, src_port: u16, dst: u32, dst_port: u16, protocol: u8) -> u64 {
    let a = (u64::from(src) << 32) | u64::from(dst);
    let b = (u64::from(src_port) << 48) | (u64::from(dst_port) << 32) | u64::from(protocol);
    mix64(fold_mul(a ^ K0, b ^ K3))
}

/// [`flow_hash`] of an IPv6 flow: each address folded to 64 bits first
/// (the IPv4 function and its pinned vectors are unchanged).
#[inline]
pub fn flow_hash6(src: u128, src_port: u16, dst: u128, dst_port: u16, protocol: u8) -> u64 {
    let fold = |x: u128| mix64((x >> 64).low()) ^ Low::<u64>::low(x);
    let a = fold(src) ^ fold(dst).rotate_left(32);
    let b = (u64::from(src_port) << 48) | (u64::from(dst_port) << 32) | u64::from(protocol);
    mix64(fold_mul(a ^ K0, b ^ K3))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned outputs: these values are the contract between podlb versions
    /// (see the module docs). If a change here is intended, it must be called
    /// out in the release notes as "upgrade active and backup together".
    #[test]
    fn pinned_vectors() {
        let got = [
            hash_bytes(b"", 0),
            hash_bytes(b"198.18.0.21:80", 0),
            hash_bytes(b"198.18.0.21:80", 1),
            hash_bytes(b"a-much-longer-backend-key-over-16-bytes:8080", 7),
            flow_hash(0xc612_0001, 40000, 0xc612_0064, 80, 6),
        ];
        let want = PINNED;
        assert_eq!(got, want, "hash outputs changed: {got:#018x?}");
    }

    const PINNED: [u64; 5] = [
        2931509567487250656,
        16182666318760050028,
        17540320296800584915,
        5365628053475438493,
        13331574642278951017,
    ];

    #[test]
    fn length_and_seed_matter() {
        assert_ne!(hash_bytes(b"", 0), hash_bytes(b"\0", 0));
        assert_ne!(hash_bytes(b"\0", 0), hash_bytes(b"\0\0", 0));
        assert_ne!(hash_bytes(&[0; 16], 0), hash_bytes(&[0; 17], 0));
        assert_ne!(hash_bytes(b"x", 0), hash_bytes(b"x", 1));
    }

    /// Flips every input bit of many random inputs and checks that each output
    /// bit flips with probability near 1/2 (strict avalanche criterion).
    fn avalanche(input_bits: usize, f: impl Fn(u128) -> u64) {
        const SAMPLES: u32 = 2000;
        let mut worst = 0.0f64;
        for bit in 0..input_bits {
            let mut flips = [0u32; 64];
            for s in 0..SAMPLES {
                let x = (u128::from(mix64(u64::from(s) ^ 0x1234)) << 64)
                    | u128::from(mix64(u64::from(s) + 99));
                let d = f(x) ^ f(x ^ (1u128 << bit));
                for (o, c) in flips.iter_mut().enumerate() {
                    *c += ((d >> o) & 1) as u32;
                }
            }
            for c in flips {
                let p = f64::from(c) / f64::from(SAMPLES);
                worst = worst.max((p - 0.5).abs());
            }
        }
        // 2000 samples: σ ≈ 0.011; 0.07 is > 6σ, yet catches any real bias.
        assert!(worst < 0.07, "worst avalanche bias {worst}");
    }

    #[test]
    fn flow_hash_avalanche() {
        avalanche(104, |x| {
            flow_hash(
                x.low(),
                (x >> 32).low(),
                (x >> 48).low(),
                (x >> 80).low(),
                (x >> 96).low(),
            )
        });
    }

    #[test]
    fn hash_bytes_avalanche() {
        avalanche(104, |x| hash_bytes(&x.to_le_bytes()[..13], 5));
        avalanche(64, |x| hash_bytes(b"198.18.0.21:80", x.low()));
    }

    /// Sequential client ports from one client must spread evenly over
    /// buckets taken from the high bits (what Maglev's lookup uses).
    #[test]
    fn sequential_ports_spread() {
        const BUCKETS: usize = 64;
        let mut count = [0u32; BUCKETS];
        for port in 0..=u16::MAX {
            let h = flow_hash(0xc612_0a01, port, 0xc612_0001, 443, 6);
            count[(h >> 58) as usize] += 1;
        }
        let expect = 65536.0 / BUCKETS as f64;
        for c in count {
            // Expected 1024 per bucket, σ ≈ 32: allow 6σ.
            assert!((f64::from(c) - expect).abs() < 200.0, "{count:?}");
        }
    }
}
