//! Narrowing on purpose: the low bits of a wider integer.
//!
//! podlb-core warns on every `as` that may truncate or drop a sign
//! (`lib.rs`). Where truncation is the point (a field in the low end of a
//! packed atomic word, the hash bits a tag keeps, the low half of a 128-bit
//! product), or where the code just above proves the value fits (a
//! remainder of a division by a `u32`), it says so with [`Low::low`], and
//! this module holds the one `allow`. Everywhere else a value that may not
//! fit is converted with `try_from` (and saturated or refused), or the
//! types are chosen so that no narrowing is needed.

/// The low bits of an integer as a narrower type: `x as T`, on purpose.
pub trait Low<T> {
    fn low(self) -> T;
}

macro_rules! low {
    ($($from:ty => $($to:ty),+);+ $(;)?) => {$($(
        impl Low<$to> for $from {
            #[inline(always)]
            #[allow(clippy::cast_possible_truncation)]
            fn low(self) -> $to {
                self as $to
            }
        }
    )+)+};
}

low! {
    u128 => u64, u32, u16, u8;
    u64 => u32, u16, u8;
    u32 => u16, u8;
}

#[cfg(test)]
mod tests {
    use super::Low;

    #[test]
    fn keeps_the_low_bits() {
        let w: u64 = 0x1122_3344_5566_7788;
        assert_eq!(Low::<u32>::low(w), 0x5566_7788);
        assert_eq!(Low::<u16>::low(w), 0x7788);
        assert_eq!(Low::<u8>::low(w), 0x88);
        assert_eq!(Low::<u16>::low(0xdead_beef_u32), 0xbeef);
        assert_eq!(Low::<u64>::low(u128::MAX - 1), u64::MAX - 1);
    }
}
