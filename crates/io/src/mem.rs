//! Memory helpers for the hot path: cache prefetch and huge-page advice for
//! large tables (decisions.md §43). The core names the memory it will touch
//! (`FlowTable::regions`, the `hint` argument of `Forwarder::prefetch`);
//! these functions do the CPU hint and the syscall.

/// Asks the CPU to bring the cache line holding `r` towards L1. A hint: it
/// never faults and changes no state, so a wrong guess costs only bandwidth.
/// The forward path calls it on a whole RX batch before touching any flow, so
/// the batch's DRAM misses overlap instead of queueing one after another.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    prefetch_ptr(std::ptr::from_ref(r).cast());
}

/// [`prefetch`] of a bare address, the `hint` the core's prefetch passes
/// take. Any address is fine: a prefetch never faults.
#[inline(always)]
pub fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE, which every x86_64 CPU has; it
    // takes an address and does not dereference it architecturally, so
    // even a dangling or unmapped address is sound.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Tables this large are worth huge pages (one 2 MiB page per 32k flow
/// slots instead of 512 TLB entries).
const HUGE_MIN: usize = 4 << 20;
const HUGE: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned interior of `table` with
/// transparent huge pages: `MADV_HUGEPAGE` (THP in `madvise` mode serves the
/// range from then on) and `MADV_COLLAPSE` (the pages already written are
/// collapsed now, not whenever khugepaged gets to them). At 1M flows the
/// connection table is 100 MB of random accesses; with 4 KiB pages nearly
/// every lookup also misses the TLB. Returns the bytes advised (0 for small
/// tables, or when the kernel refused: no THP, an old kernel); a hint only.
pub fn advise_huge_pages<T>(table: &[T]) -> usize {
    advise_huge_pages_range(table.as_ptr() as usize, std::mem::size_of_val(table))
}

/// [`advise_huge_pages`] for a region given as (start address, bytes), as
/// `FlowTable::regions` names them. An address range that is not mapped is
/// refused by the kernel (ENOMEM) and reported as 0 bytes.
pub fn advise_huge_pages_range(start: usize, bytes: usize) -> usize {
    if bytes < HUGE_MIN {
        return 0;
    }
    let first = start.next_multiple_of(HUGE);
    let end = (start + bytes) & !(HUGE - 1);
    if end <= first {
        return 0;
    }
    let mut ok = true;
    // MADV_COLLAPSE: Linux 6.1; older kernels refuse it (EINVAL).
    for advice in [libc::MADV_HUGEPAGE, libc::MADV_COLLAPSE] {
        // SAFETY: [first, end) is page-aligned. Both advices change only how
        // pages are backed, never their contents (a collapse copies them),
        // so no Rust reference can observe a difference; a range that is not
        // mapped makes the call fail with ENOMEM and touches nothing.
        let r = unsafe { libc::madvise(first as *mut libc::c_void, end - first, advice) };
        ok &= r == 0;
    }
    if ok {
        end - first
    } else {
        0
    }
}

/// [`advise_huge_pages_range`] over every region (e.g. `FlowTable::regions`);
/// returns the bytes advised in all.
pub fn advise_regions(regions: &[(usize, usize)]) -> usize {
    regions
        .iter()
        .map(|&(start, bytes)| advise_huge_pages_range(start, bytes))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_keeps_contents_and_skips_small_tables() {
        let small = vec![7u64; 1000];
        assert_eq!(advise_huge_pages(&small), 0);
        prefetch(&small[999]);
        let big: Vec<u64> = (0..(16u64 << 20) / 8).collect();
        // May be 0 where THP is off; never more than the table.
        assert!(advise_huge_pages(&big) <= 16 << 20);
        assert!(big.iter().enumerate().all(|(i, &v)| v == i as u64));
    }
}
