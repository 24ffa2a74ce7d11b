//! Asking for memory ahead of its use: lookups over large tables issue the
//! reads of many keys at once, so their waits overlap instead of adding up.

/// Asks for the cache lines holding `value`, without waiting for them.
#[inline(always)]
pub(crate) fn prefetch<T>(value: *const T) {
    // Every 64-byte line from the first byte to the last: values are not
    // aligned to lines (aligned allocations cost the allocator far more
    // memory than they save reads).
    let first = value.cast::<u8>();
    let mut offset = 0;
    while offset < size_of::<T>() {
        prefetch_line(first.wrapping_add(offset));
        offset += 64;
    }
    prefetch_line(first.wrapping_add(size_of::<T>().saturating_sub(1)));
}

/// Asks for a name's allocation: its reference count (which precedes the
/// text in `Arc`'s layout) and the start of its text.
#[inline(always)]
pub(crate) fn prefetch_name(name: &tollgate_schema::Name) {
    let text = std::sync::Arc::as_ptr(name).cast::<u8>();
    prefetch_line(text.wrapping_sub(2 * size_of::<usize>()));
    prefetch_line(text);
}

#[inline(always)]
fn prefetch_line(byte: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint; it never faults, whatever the
        // address, and reads nothing the program sees.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(byte.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = byte;
}
