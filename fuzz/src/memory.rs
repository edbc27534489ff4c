//! The allocation budget of a harness run.
//!
//! The crate's global allocator counts live heap bytes ([`cap::Cap`]).
//! [`bounded`] lets one harness run allocate at most
//! [`BUDGET_BASE_BYTES`] + [`BUDGET_BYTES_PER_INPUT_BYTE`] × input length
//! beyond what was live before it: a decoder that trusts a length field
//! (a 4 GiB `Vec::with_capacity` from a 6-byte header) fails the allocation,
//! and the process aborts with "memory allocation of N bytes failed", which
//! AFL++ records as a crash and the replay test as a failure.

use std::alloc::System;
use std::sync::{Mutex, PoisonError};

use cap::Cap;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Serialises budgeted runs: the limit is process-wide.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Allowed whatever the input: net's fixed buffers (the 64 KiB control PDU
/// cap, the 32 KiB inflate window and its state) with a wide margin for the
/// test harness's own threads.
pub const BUDGET_BASE_BYTES: usize = 32 * 1024 * 1024;

/// Allowed per input byte: decoded values are owned copies (a small data
/// set's elements), with per-element bookkeeping and `Vec` doubling.
pub const BUDGET_BYTES_PER_INPUT_BYTE: usize = 64;

/// Heap bytes live now.
pub fn allocated_bytes() -> usize {
    ALLOCATOR.allocated()
}

/// Runs `run` with heap allocation capped at the budget for an input of
/// `input_length` bytes.
pub fn bounded<R>(input_length: usize, run: impl FnOnce() -> R) -> R {
    struct Unlimit;
    impl Drop for Unlimit {
        fn drop(&mut self) {
            // Raising the limit cannot fail.
            let _ = ALLOCATOR.set_limit(usize::MAX);
        }
    }
    let _serial = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let budget =
        BUDGET_BASE_BYTES.saturating_add(input_length.saturating_mul(BUDGET_BYTES_PER_INPUT_BYTE));
    let _unlimit = Unlimit;
    // Fails only when the limit is below what is live: not the case.
    let _ = ALLOCATOR.set_limit(ALLOCATOR.allocated().saturating_add(budget));
    run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_beyond_the_budget_fails_inside_and_succeeds_outside() {
        let beyond = BUDGET_BASE_BYTES + 100 * BUDGET_BYTES_PER_INPUT_BYTE + 1;
        let refused = bounded(100, || Vec::<u8>::new().try_reserve_exact(beyond).is_err());
        assert!(
            refused,
            "the budget refuses {beyond} bytes for a 100-byte input"
        );
        let within = bounded(100, || Vec::<u8>::new().try_reserve_exact(1 << 20).is_ok());
        assert!(within, "1 MiB is within the budget");
        let mut after = Vec::<u8>::new();
        assert!(
            after.try_reserve_exact(beyond).is_ok(),
            "no limit outside a run"
        );
    }
}
