//! Shared by the fuzz targets: a byte reader that never fails (a short
//! input reads as zeros), and checksum helpers written against the RFCs
//! rather than against podlb's own `wire::checksum`, so that a bug there
//! cannot cancel itself out.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Reads fields off the front of the fuzz input; past the end, zeros.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn ipv6(&mut self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        for b in &mut a {
            *b = self.u8();
        }
        Ipv6Addr::from(a)
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

/// RFC 1071 one's-complement sum of `data` folded to 16 bits, a plain
/// byte-pair loop (independent of `podlb_wire::checksum::sum`).
pub fn ones_sum(data: &[u8], mut acc: u64) -> u16 {
    let mut i = 0;
    while i + 1 < data.len() {
        acc += u64::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        acc += u64::from(data[i]) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768).
pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u64 {
    let w = |a: Ipv4Addr| {
        let o = a.octets();
        u64::from(u16::from_be_bytes([o[0], o[1]])) + u64::from(u16::from_be_bytes([o[2], o[3]]))
    };
    w(src) + w(dst) + u64::from(proto) + len as u64
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): both addresses as
/// 16-bit words, the 32-bit length and the next header.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: usize) -> u64 {
    let w = |a: Ipv6Addr| a.segments().iter().map(|&s| u64::from(s)).sum::<u64>();
    let len = len as u64;
    w(src) + w(dst) + (len >> 16) + (len & 0xffff) + u64::from(next_header)
}

/// Data that carries its own checksum field sums to all ones.
pub fn sums_to_ones(data: &[u8], initial: u64) -> bool {
    ones_sum(data, initial) == 0xffff
}

/// A transport segment's checksum (TCP or UDP) is right for `src`/`dst`.
pub fn l4_ok(seg: &[u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> bool {
    sums_to_ones(seg, pseudo(src, dst, proto, seg.len()))
}

/// One's-complement equality: 0x0000 and 0xffff are both zero.
pub fn ones_eq(a: u16, b: u16) -> bool {
    a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}
