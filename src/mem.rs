//! Memory helpers for the hot path: cache prefetch and huge-page advice for
//! large tables. The one place besides [`crate::io`] with
//! `unsafe` code (decisions.md §43): two small blocks, each with its
//! `SAFETY:` comment.

/// Asks the CPU to bring the cache line holding `r` towards L1. A hint: it
/// never faults and changes no state, so a wrong guess costs only bandwidth.
/// The forward path calls it on a whole RX batch before touching any flow, so
/// the batch's DRAM misses overlap instead of queueing one after another.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE, which every x86_64 CPU has; it
    // takes an address and does not dereference it architecturally.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(r as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Tables this large are worth huge pages (one 2 MiB page per 32k flow
/// slots instead of 512 TLB entries).
const HUGE_MIN: usize = 4 << 20;
const HUGE: usize = 2 << 20;
/// `MADV_COLLAPSE` (Linux 6.1): collapse a range into huge pages now.
const MADV_COLLAPSE: libc::c_int = 25;

/// Asks the kernel to back the 2 MiB-aligned interior of `table` with
/// transparent huge pages: `MADV_HUGEPAGE` (THP in `madvise` mode serves the
/// range from then on) and `MADV_COLLAPSE` (the pages already written are
/// collapsed now, not whenever khugepaged gets to them). At 1M flows the
/// connection table is 100 MB of random accesses; with 4 KiB pages nearly
/// every lookup also misses the TLB. Returns the bytes advised (0 for small
/// tables, or when the kernel refused: no THP, an old kernel); a hint only.
pub fn advise_huge_pages<T>(table: &[T]) -> usize {
    let bytes = std::mem::size_of_val(table);
    if bytes < HUGE_MIN {
        return 0;
    }
    let start = table.as_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let end = (start + bytes) & !(HUGE - 1);
    if end <= first {
        return 0;
    }
    let mut ok = true;
    for advice in [libc::MADV_HUGEPAGE, MADV_COLLAPSE] {
        // SAFETY: [first, end) is page-aligned and lies inside `table`'s
        // allocation, which the borrow keeps alive. Both advices change only
        // how the pages are backed, never their contents (a collapse copies
        // them), so no Rust reference can observe a difference.
        let r = unsafe { libc::madvise(first as *mut libc::c_void, end - first, advice) };
        ok &= r == 0;
    }
    if ok {
        end - first
    } else {
        0
    }
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
