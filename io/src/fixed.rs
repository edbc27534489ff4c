//! Registered ("fixed") buffers: a core's io_uring holds a sparse table of
//! [`AlignedBuf`](crate::AlignedBuf)s registered once each
//! ([`Core::register_buffer`](crate::Core::register_buffer)), so an
//! `O_DIRECT` write of one (`IORING_OP_WRITE_FIXED`) builds its bio from
//! the pages pinned at registration instead of pinning them on every write
//! (docs/design/segments.md, "Registered buffers, session 11").
//!
//! The rule this module keeps: a slot's memory is freed only after the
//! slot is unregistered, or once the ring is gone. A registered buffer
//! that is dropped hands its memory to its table ([`FixedTable::release`]);
//! the core thread, at its next turn (or before its next registration),
//! clears the slot in the kernel, then frees the memory and reuses the
//! slot. Until then no write can name the slot: only a live buffer carries
//! it ([`FixedSlot`]), and the write that reads a buffer holds it until
//! its completion (the `ops` table's rule, docs/safety.md). A buffer may be
//! dropped on any thread (the table is shared through an `Arc`, its state
//! under a lock); only the core's thread talks to the kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Slots of a core's table: more than the record buffers a core holds at
/// once under the default record memory budget (256 MiB in buffers of at
/// least 128 KiB: 2,048); a buffer that finds none free is written plain.
pub(crate) const FIXED_SLOTS: u32 = 4096;

/// A core's table of registered buffers (the kernel's copy is the ring's).
#[derive(Debug)]
pub(crate) struct FixedTable {
    state: Mutex<FixedState>,
    /// Something waits in `state.released` (read without the lock).
    released_pending: AtomicBool,
}

#[derive(Debug)]
struct FixedState {
    /// Slots free for a registration.
    free: Vec<u16>,
    /// Slots whose buffer was dropped, with its memory: cleared in the
    /// kernel, then the memory freed and the slot free.
    released: Vec<(u16, Vec<u8>)>,
    /// The ring is open (closed: nothing is registered any more).
    open: bool,
    /// Slots holding a live buffer.
    registered: usize,
}

/// A buffer's place in a table: carried by the buffer while it lives.
#[derive(Debug)]
pub(crate) struct FixedSlot {
    table: Arc<FixedTable>,
    index: u16,
}

impl FixedSlot {
    pub(crate) fn new(table: Arc<FixedTable>, index: u16) -> FixedSlot {
        FixedSlot { table, index }
    }

    /// The slot's index in its table.
    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    /// The slot's index, if it is one of `table`'s (a slot names a buffer
    /// only in its own ring).
    pub(crate) fn index_in(&self, table: &Arc<FixedTable>) -> Option<u16> {
        Arc::ptr_eq(&self.table, table).then_some(self.index)
    }

    /// The buffer is dropped: its memory goes to the table, freed once the
    /// slot is cleared (or at once when the ring is gone).
    pub(crate) fn release(self, memory: Vec<u8>) {
        self.table.release(self.index, memory);
    }
}

impl FixedTable {
    /// A table of `slots` empty slots (the kernel's is registered sparse).
    pub(crate) fn new(slots: u32) -> FixedTable {
        let slots = u16::try_from(slots).unwrap_or(u16::MAX);
        FixedTable {
            state: Mutex::new(FixedState {
                // Popped from the end: slot 0 first.
                free: (0..slots).rev().collect(),
                released: Vec::new(),
                open: true,
                registered: 0,
            }),
            released_pending: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, FixedState> {
        // A panic while holding the lock leaves the lists consistent (each
        // change is one push or pop), so a poisoned lock is taken as is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free slot for a registration (`None`: all taken, or the ring is
    /// closed).
    pub(crate) fn take_free(&self) -> Option<u16> {
        let mut state = self.state();
        if !state.open {
            return None;
        }
        state.free.pop()
    }

    /// A slot from [`Self::take_free`] was registered: a buffer holds it.
    pub(crate) fn registered(&self) {
        self.state().registered += 1;
    }

    /// Slot `index` (from [`Self::take_free`]) was not registered, or was
    /// cleared in the kernel: free again.
    pub(crate) fn put_free(&self, index: u16) {
        self.state().free.push(index);
    }

    fn release(&self, index: u16, memory: Vec<u8>) {
        let mut state = self.state();
        state.registered = state.registered.saturating_sub(1);
        if state.open {
            state.released.push((index, memory));
            self.released_pending.store(true, Ordering::Release);
        } else {
            // The ring is gone, and with it every registration: nothing can
            // name the slot any more.
            drop(state);
            drop(memory);
        }
    }

    /// The slots whose buffers were dropped since the last call, with
    /// their memory (to clear in the kernel before the memory is freed).
    pub(crate) fn take_released(&self) -> Vec<(u16, Vec<u8>)> {
        if !self.released_pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut self.state().released)
    }

    /// Slots holding a live buffer.
    pub(crate) fn registered_count(&self) -> usize {
        self.state().registered
    }

    /// The ring is about to close: its registrations go with it, so the
    /// memory of released slots is freed now and a buffer dropped later
    /// frees its own.
    pub(crate) fn close(&self) {
        let released = {
            let mut state = self.state();
            state.open = false;
            state.free.clear();
            std::mem::take(&mut state.released)
        };
        drop(released);
    }
}

/// The region of a buffer a registration covers: its aligned bytes at the
/// length it was made with.
pub(crate) fn region(memory: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: memory.as_mut_ptr().cast(),
        iov_len: memory.len(),
    }
}

/// Whether the refusal of a registration was logged (once a process).
static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// The kernel refused to register a buffer: said once at info, with the
/// locked-memory limit it counts against and how to raise it.
pub(crate) fn log_refusal(error: &std::io::Error, bytes: usize) {
    if REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(%error, bytes, "io_uring: a buffer was not registered; its writes pin its pages each time");
        return;
    }
    let (soft, hard) = crate::sys::memlock_limit();
    let limit = |value: Option<u64>| {
        value.map_or_else(|| "unlimited".to_string(), |bytes| bytes.to_string())
    };
    tracing::info!(
        %error,
        buffer_bytes = bytes,
        memlock_soft_bytes = %limit(soft),
        memlock_hard_bytes = %limit(hard),
        "io_uring: cannot register a record buffer (registered buffers count against \
         RLIMIT_MEMLOCK); the buffers that do not fit are written plain, pinning their \
         pages on every write. Raise the limit (systemd: LimitMEMLOCK= in the unit; a \
         shell: ulimit -l) to the cores times storage.record_memory_per_core \
         (docs/operations.md, \"Locked memory\"). Said once."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots are handed out from 0; a released slot's memory waits until
    /// it is taken (to be cleared), and a closed table frees released
    /// memory at once and hands out nothing.
    #[test]
    fn released_slots_wait_to_be_cleared_and_a_closed_table_frees_at_once() {
        let table = Arc::new(FixedTable::new(3));
        assert!(table.take_released().is_empty());
        let first = table.take_free().unwrap();
        assert_eq!(first, 0);
        table.registered();
        let second = table.take_free().unwrap();
        table.registered();
        assert_eq!(table.registered_count(), 2);
        let slot = FixedSlot::new(Arc::clone(&table), first);
        let other = Arc::new(FixedTable::new(1));
        assert_eq!(slot.index_in(&table), Some(0));
        assert_eq!(slot.index_in(&other), None, "another ring's table");
        slot.release(vec![1, 2, 3]);
        assert_eq!(table.registered_count(), 1);
        let released = table.take_released();
        assert_eq!(released, vec![(0, vec![1, 2, 3])]);
        assert!(table.take_released().is_empty(), "taken once");
        table.put_free(0);
        assert_eq!(table.take_free(), Some(0), "the cleared slot is reused");
        table.close();
        assert_eq!(table.take_free(), None);
        FixedSlot::new(Arc::clone(&table), second).release(vec![4]);
        assert!(table.take_released().is_empty(), "freed at once");
        assert_eq!(table.registered_count(), 0);
    }
}
