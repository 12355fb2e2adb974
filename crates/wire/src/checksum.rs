//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Vocabulary used below:
//! - a *sum* is the one's-complement sum of 16-bit big-endian words, kept in a
//!   wider integer with the carries not yet folded back in;
//! - [`fold`] folds the carries back into 16 bits (not complemented);
//! - a *checksum* as it sits in a header is `!fold(sum)`.
//!
//! One's-complement addition is associative and commutative (RFC 1071 §2), so
//! sums of separate pieces (pseudo-header, header, payload) can be added with
//! plain integer `+` and folded once, as long as each piece starts at an even
//! offset of the checksummed data.

use super::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as 16-bit big-endian words, added to
/// `initial` (RFC 1071 §4.1). A trailing odd byte is padded with a zero byte.
///
/// The result is folded to at most `0xffff`, so a few results (and
/// [`pseudo_header_v4`]) can be added with plain `+` on `u32` before the final
/// [`fold`].
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // Adding 32-bit big-endian words into a 64-bit accumulator and folding at
    // the end is the same one's-complement sum, because 2^16 ≡ 1 (mod 2^16-1)
    // (RFC 1071 §2 (B), "parallel summation"). Each 8-byte chunk adds less
    // than 2^33, so a block of 1 GiB cannot overflow the u64 accumulator;
    // longer inputs are folded between blocks.
    let mut acc = u64::from(initial);
    let mut blocks = data.chunks(1 << 30);
    let mut tail: &[u8] = &[];
    for block in &mut blocks {
        let mut chunks = block.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            acc += (w >> 32) + (w & 0xffff_ffff);
        }
        acc = u64::from(fold64(acc));
        tail = chunks.remainder();
    }
    // Blocks are even-sized, so only the last block can leave a remainder.
    let mut words = tail.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        // RFC 1071 §4.1: "Add left-over byte, if any" (as the high byte).
        acc += u64::from(*last) << 8;
    }
    u32::from(fold64(acc))
}

#[inline(always)]
fn fold64(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    // Three folds bring any u64 down to 0xffff or below (each halves the
    // bits above 16, and the last carry cannot carry again): the cast keeps
    // every bit. A `try_from` here would cost a branch in every checksum.
    #[allow(clippy::cast_possible_truncation)]
    let folded = s as u16;
    folded
}

/// Folds the carries of a one's-complement sum into 16 bits (RFC 1071 §4.1,
/// "Fold 32-bit sum to 16 bits"). The result is **not** complemented.
///
/// Accepts `u16`, `u32` or `u64`. A non-zero sum never folds to `0`.
#[inline]
pub fn fold(sum: impl Into<u64>) -> u16 {
    fold64(sum.into())
}

/// The Internet checksum of `data`: `!fold(sum(data, 0))` (RFC 1071).
///
/// Computed over data that already contains a correct checksum field, the
/// result is `0`.
#[inline]
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Sum of the IPv4 pseudo-header used by TCP (RFC 9293 §3.1) and UDP
/// (RFC 768): source, destination, zero + protocol, and the L4 length.
///
/// The result is below `2^19`; add it to [`sum`] of the segment and [`fold`].
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(protocol) + u32::from(length)
}

/// Sum of the IPv6 pseudo-header used by every upper-layer checksum over
/// IPv6, TCP, UDP and ICMPv6 alike (RFC 8200 §8.1): source, destination
/// (the final destination if a Routing header is present), the 32-bit
/// Upper-Layer Packet Length, three zero bytes and the Next Header value of
/// the upper-layer protocol (not of an extension header).
///
/// `upper_len` is the length of the upper-layer header and data: for TCP
/// and ICMPv6 the IPv6 Payload Length minus the extension headers before
/// it; UDP uses its own Length field (RFC 8200 §8.1).
///
/// The result is below `2^21`; add it to [`sum`] of the upper-layer
/// message and [`fold`].
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, upper_len: u32) -> u32 {
    // Sixteen 16-bit words of addresses (each <= 0xffff), the two halves of
    // the length and the next header: below 19 * 2^16 < 2^21, no overflow.
    let words = |a: Ipv6Addr| -> u32 { a.segments().iter().map(|&w| u32::from(w)).sum() };
    words(src) + words(dst) + (upper_len >> 16) + (upper_len & 0xffff) + u32::from(next_header)
}

/// Incrementally updates checksum `check` after a 16-bit word of the covered
/// data changed from `old` to `new`.
///
/// RFC 1624 §3, eqn. 3: `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 this never
/// turns a correct `0x0000` result into `0xFFFF` (RFC 1624 §4, §5). The
/// flip side: it never yields `0xFFFF`, the only correct checksum of data
/// whose other words are all zero. IPv4 headers and TCP/UDP (the
/// pseudo-header holds the protocol) never are; an ICMP message can be, so
/// a caller there recounts when the result is `0x0000`.
///
/// The word must sit at an even offset of the checksummed data; for a field at
/// an odd offset pass `old.swap_bytes()` and `new.swap_bytes()` (RFC 1071 §2
/// (B), byte-order independence).
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// [`update_u16`] for a 32-bit field (e.g. an IPv4 address or a TCP sequence
/// number) at an even offset: both halves in one step.
#[inline]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    // RFC 1624 §3 eqn. 3 applied to the two 16-bit words at once.
    // The complement of each half of `old` is that half of `!old`.
    let s = u32::from(!check) + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(s)
}

/// Updates a `CHECKSUM_PARTIAL` checksum field (Linux/virtio checksum
/// offload) after a 32-bit pseudo-header field (an IPv4 address) changed.
///
/// With offload the field holds the *uncomplemented* folded pseudo-header sum
/// and the NIC/kernel completes it, so the update is `~update(~field)`.
/// Fields outside the pseudo-header (ports) must not be applied to a partial
/// checksum at all: the completion sums them from the packet.
#[inline]
pub fn update_partial_u32(field: u16, old: u32, new: u32) -> u16 {
    !update_u32(!field, old, new)
}

/// [`update_partial_u32`] for a 16-bit pseudo-header field (the L4 length).
#[inline]
pub fn update_partial_u16(field: u16, old: u16, new: u16) -> u16 {
    !update_u16(!field, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: one 16-bit word at a time.
    fn reference_sum(data: &[u8]) -> u32 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s
    }

    fn reference_checksum(data: &[u8]) -> u16 {
        !u16::try_from(reference_sum(data)).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(internet(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic IPv4 header whose checksum field is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet(&h), 0);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(internet(&h), 0xb861);
    }

    #[test]
    fn odd_and_empty() {
        assert_eq!(sum(&[], 0), 0);
        assert_eq!(sum(&[0xab], 0), 0xab00);
        assert_eq!(sum(&[], 0x1_2345), 0x2346);
        assert_eq!(fold(0xffff_u16), 0xffff);
        assert_eq!(fold(0x1_fffe_u32), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0_u32), 0);
    }

    #[test]
    fn rfc1624_section4_example() {
        // RFC 1624 §4: sum of the other octets 0xCD7A, m = 0x5555 -> m' = 0x3285.
        let hc = !fold(0xcd7a_u32 + 0x5555);
        assert_eq!(hc, 0xdd2f);
        // Recomputation gives ~(0xCD7A + 0x3285) = ~0xFFFF = 0x0000; eqn. 3 agrees
        // (eqn. 2 would give 0xFFFF).
        assert_eq!(update_u16(hc, 0x5555, 0x3285), 0x0000);
        assert_eq!(!fold(0xcd7a_u32 + 0x3285), 0x0000);
    }

    #[test]
    fn pseudo_header() {
        let s = pseudo_header_v4(
            Ipv4Addr::new(192, 168, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            40,
        );
        assert_eq!(s, 0xc0a8 + 0x0001 + 0x0a00 + 0x0002 + 6 + 40);
    }

    #[test]
    fn pseudo_header_v6_hand_computed() {
        // 2001:2::1 -> 2001:2::2, UDP, length 0x0001_0010 (a jumbo length
        // exercises the high half): the words by hand.
        let src: Ipv6Addr = "2001:2::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:2::2".parse().unwrap();
        let s = pseudo_header_v6(src, dst, 17, 0x0001_0010);
        let want = (0x2001 + 0x0002 + 0x0001) + (0x2001 + 0x0002 + 0x0002) + 0x0001 + 0x0010 + 17;
        assert_eq!(s, want);
        // Folding is order-independent: the RFC 8200 §8.1 layout as bytes
        // (src, dst, 32-bit length, 3 zeros, next header) sums the same.
        let mut bytes = Vec::new();
        bytes.extend(src.octets());
        bytes.extend(dst.octets());
        bytes.extend(0x0001_0010u32.to_be_bytes());
        bytes.extend([0, 0, 0, 17]);
        assert_eq!(fold(s), fold(sum(&bytes, 0)));
        // The bound: all-ones addresses and length.
        let ones = Ipv6Addr::from(u128::MAX);
        assert!(pseudo_header_v6(ones, ones, 0xff, u32::MAX) < 1 << 21);
    }

    #[test]
    fn pseudo_header_v6_matches_etherparse() {
        use etherparse::{IcmpEchoHeader, Icmpv6Header, Icmpv6Type, UdpHeader};
        let src: Ipv6Addr = "2001:2::a".parse().unwrap();
        let dst: Ipv6Addr = "2001:2:0:1::b".parse().unwrap();
        for payload in [&b""[..], b"x", b"hello, world", &[0xff; 301]] {
            // ICMPv6 (RFC 4443 §2.3): the length is the whole message.
            let ty = Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 9 });
            let h = Icmpv6Header::with_checksum(ty, src.octets(), dst.octets(), payload).unwrap();
            let mut m = h.to_bytes().to_vec();
            m.extend(payload);
            let len = u32::try_from(m.len()).unwrap();
            assert_eq!(
                fold(pseudo_header_v6(src, dst, 58, len) + sum(&m, 0)),
                0xffff
            );
            m[2..4].copy_from_slice(&[0, 0]);
            assert_eq!(
                !fold(pseudo_header_v6(src, dst, 58, len) + sum(&m, 0)),
                h.checksum
            );
            // UDP: etherparse's independent IPv6 checksum.
            let u = UdpHeader::with_ipv6_checksum(
                1,
                2,
                &etherparse::Ipv6Header {
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Default::default()
                },
                payload,
            )
            .unwrap();
            let mut d = u.to_bytes().to_vec();
            d.extend(payload);
            let len = u32::try_from(d.len()).unwrap();
            assert_eq!(
                fold(pseudo_header_v6(src, dst, 17, len) + sum(&d, 0)),
                0xffff
            );
        }
    }

    /// Verifies like a receiver does: the sum over data including the checksum
    /// folds to 0xffff.
    fn verifies(data: &[u8]) -> bool {
        fold(sum(data, 0)) == 0xffff
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300),
                                 init in 0u32..0x1_0000) {
            prop_assert_eq!(fold(sum(&data, init)), fold(reference_sum(&data) + init));
            prop_assert_eq!(internet(&data), reference_checksum(&data));
            prop_assert!(sum(&data, init) <= 0xffff);
        }

        #[test]
        fn sum_is_splittable(data in proptest::collection::vec(any::<u8>(), 0..300),
                             cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            let whole = fold(sum(&data, 0));
            let parts = fold(sum(&data[..cut], 0) + sum(&data[cut..], 0));
            prop_assert_eq!(whole, parts);
            prop_assert_eq!(fold(sum(&data[cut..], sum(&data[..cut], 0))), whole);
        }

        /// Random "packet" with a checksum at offset 10 (like IPv4), random
        /// rewrite of a 16- or 32-bit field at an even offset: the incremental
        /// update equals full recomputation.
        #[test]
        fn incremental_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 20..120),
            word in 0usize..60,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
            // Force corner cases: make words 0x0000 / 0xffff frequent.
            special in prop_oneof![Just(None), Just(Some(0u16)), Just(Some(0xffffu16))],
        ) {
            data[0] |= 0x40; // never all zero, like every real header
            let len = data.len() & !1;
            let data = &mut data[..len];
            data[10] = 0;
            data[11] = 0;
            let c = internet(data);
            data[10..12].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verifies(data));

            // 16-bit rewrite somewhere other than the checksum and byte 0.
            let mut at = 2 + (word * 2) % (len - 2);
            if at == 10 { at = 12 % len; }
            if at == 0 || at + 2 > len { at = 2; }
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let new = special.unwrap_or(new16);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(c, old, new);
            data[10..12].copy_from_slice(&[0, 0]);
            let full = internet(data);
            prop_assert_eq!(inc, full);
            data[10..12].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verifies(data));

            // 32-bit rewrite at offset 12 (where IPv4 keeps the source address).
            let old = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let new = match special { Some(s) => u32::from(s) * 0x1_0001, None => new32 };
            data[12..16].copy_from_slice(&new.to_be_bytes());
            let inc = update_u32(inc, old, new);
            data[10..12].copy_from_slice(&[0, 0]);
            prop_assert_eq!(inc, internet(data));
            data[10..12].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verifies(data));
        }

        /// A field at an odd offset is updated with byte-swapped words.
        #[test]
        fn incremental_odd_offset(
            mut data in proptest::collection::vec(any::<u8>(), 24..80),
            new in any::<u16>(),
        ) {
            data[0] |= 0x40;
            data[2] = 0;
            data[3] = 0;
            let c = internet(&data);
            data[2..4].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([data[21], data[22]]);
            data[21..23].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(c, old.swap_bytes(), new.swap_bytes());
            data[2..4].copy_from_slice(&[0, 0]);
            prop_assert_eq!(inc, internet(&data));
        }

        /// CHECKSUM_PARTIAL: the field holds fold(pseudo-header sum); after an
        /// address rewrite it equals the folded sum of the new pseudo-header.
        #[test]
        fn partial_matches_recompute(src in any::<u32>(), dst in any::<u32>(),
                                     new_src in any::<u32>(), len in 20u16..1500) {
            let field = fold(pseudo_header_v4(src.into(), dst.into(), 6, len));
            let updated = update_partial_u32(field, src, new_src);
            let expect = fold(pseudo_header_v4(new_src.into(), dst.into(), 6, len));
            prop_assert_eq!(updated, expect);
            let updated = update_partial_u16(updated, len, len + 4);
            let expect = fold(pseudo_header_v4(new_src.into(), dst.into(), 6, len + 4));
            prop_assert_eq!(updated, expect);
        }
    }

    #[test]
    fn rfc1624_zero_and_ffff_corners() {
        // A header whose checksum is 0x0000 after the update stays
        // verifiable; and a field going to/from 0xffff/0x0000 is handled.
        let mut data = [0x45u8, 0, 0xff, 0xff, 0, 0, 0, 0];
        let c = internet(&data);
        data[4..6].copy_from_slice(&c.to_be_bytes());
        for (old, new) in [(0xffff, 0x0000), (0x0000, 0xffff)] {
            data[2..4].copy_from_slice(&new_word(old));
            data[4..6].copy_from_slice(&[0, 0]);
            let c0 = internet(&data);
            data[4..6].copy_from_slice(&c0.to_be_bytes());
            data[2..4].copy_from_slice(&new_word(new));
            let inc = update_u16(c0, old, new);
            data[4..6].copy_from_slice(&[0, 0]);
            assert_eq!(inc, internet(&data));
        }
        fn new_word(w: u16) -> [u8; 2] {
            w.to_be_bytes()
        }
    }
}
