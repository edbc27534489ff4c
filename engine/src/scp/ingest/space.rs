//! The free-space floor (`storage.free_space_floor`) with what is in flight
//! counted: a C-STORE is admitted only if the data directory's free space,
//! less what every core wrote since its last reading and less the bytes
//! still expected of the instances already admitted, leaves the floor plus
//! the new instance's expected size, and the segment its core must
//! allocate first (layout `"segments"`: a core whose segment has no room
//! for the instance allocates a whole new one, and that allocation, not the
//! record's write, takes the disk's space).
//!
//! Why: a `statvfs` reading is cached 100 ms per core (one system call per
//! C-STORE would cost more than the check is worth), and a C-STORE does not
//! announce its size. Counting only the last reading, four senders drove a
//! 20 MB floor down to 2 MiB free: every instance admitted while the
//! reading was fresh wrote unchecked. Now each admitted instance reserves
//! the expected size of an instance on its core (a moving average of the
//! sizes it received, [`EXPECTED_BYTES_INITIAL`] at start) until its bytes
//! arrive, and the bytes written since a reading are subtracted from it.
//!
//! Shared by the cores: two counters ([`SpaceAccount`]), updated with one
//! atomic add per fragment and per admission; nothing when the floor is 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a free-space reading is trusted.
const READING_TRUSTED: Duration = Duration::from_millis(100);

/// The expected size of an instance before any has arrived on the core.
pub(crate) const EXPECTED_BYTES_INITIAL: u64 = 256 * 1024;

/// What the cores share: bytes reserved by admitted instances and not yet
/// received, and bytes written since the start (to discount a reading).
#[derive(Debug, Default)]
pub(crate) struct SpaceAccount {
    reserved_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

impl SpaceAccount {
    fn reserve(&self, bytes: u64) {
        self.reserved_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: u64) {
        let before = self.reserved_bytes.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "released more than reserved");
    }

    fn written(&self, bytes: u64) {
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// One instance's claim on the free space: what it may still write of what
/// it reserved.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    remaining_bytes: u64,
    /// Bytes it wrote (the data set and its header), for the average.
    written_bytes: u64,
}

/// One core's side: its last reading and its moving average of instance
/// sizes.
#[derive(Debug)]
pub(crate) struct FreeSpace {
    floor_bytes: u64,
    reading: Option<Reading>,
    expected_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    free_bytes: u64,
    /// The shared written-bytes counter when it was taken.
    written_bytes: u64,
}

impl FreeSpace {
    pub(crate) fn new(floor_bytes: u64) -> FreeSpace {
        FreeSpace {
            floor_bytes,
            reading: None,
            expected_bytes: EXPECTED_BYTES_INITIAL,
        }
    }

    /// Admits an instance if the free space (read with `read_free_bytes`
    /// when the last reading is stale) leaves the floor after what is in
    /// flight, its own expected size and `allocation_bytes` (what its core
    /// must allocate before it has a place: a segment, or nothing): its
    /// reservation, or `None` (refused). Always admitted when the floor is
    /// 0, or when the free space cannot be read (the disk's own ENOSPC
    /// answers then).
    pub(crate) fn admit(
        &mut self,
        account: &SpaceAccount,
        allocation_bytes: u64,
        read_free_bytes: impl FnOnce() -> Option<u64>,
    ) -> Option<Reservation> {
        if self.floor_bytes == 0 {
            return Some(Reservation::default());
        }
        let reading = match self.reading {
            Some(reading) if reading.at.elapsed() < READING_TRUSTED => Some(reading),
            _ => {
                // The counter before the reading: bytes written meanwhile
                // are counted twice, never missed.
                let written_bytes = account.written_bytes.load(Ordering::Relaxed);
                self.reading = read_free_bytes().map(|free_bytes| Reading {
                    at: Instant::now(),
                    free_bytes,
                    written_bytes,
                });
                self.reading
            }
        };
        let Some(reading) = reading else {
            return Some(Reservation::default());
        };
        let written_since = account
            .written_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(reading.written_bytes);
        let free = reading
            .free_bytes
            .saturating_sub(written_since)
            .saturating_sub(account.reserved_bytes.load(Ordering::Relaxed));
        let needed = self
            .floor_bytes
            .saturating_add(self.expected_bytes)
            .saturating_add(allocation_bytes);
        if free < needed {
            return None;
        }
        account.reserve(self.expected_bytes);
        Some(Reservation {
            remaining_bytes: self.expected_bytes,
            written_bytes: 0,
        })
    }

    /// `bytes` of an admitted instance were written (or are about to be):
    /// counted as written, and taken from its reservation.
    pub(crate) fn wrote(&self, account: &SpaceAccount, reservation: &mut Reservation, bytes: u64) {
        if self.floor_bytes == 0 {
            return;
        }
        account.written(bytes);
        let covered = bytes.min(reservation.remaining_bytes);
        reservation.remaining_bytes -= covered;
        reservation.written_bytes += bytes;
        account.release(covered);
    }

    /// The instance is finished: what it reserved and did not write is
    /// released; a whole instance's size joins the moving average (1/8 of
    /// the newest).
    pub(crate) fn finished(
        &mut self,
        account: &SpaceAccount,
        reservation: Reservation,
        whole: bool,
    ) {
        if self.floor_bytes == 0 {
            return;
        }
        account.release(reservation.remaining_bytes);
        if whole {
            self.expected_bytes = (self.expected_bytes * 7 + reservation.written_bytes) / 8;
        }
    }

    /// The expected size of the next instance.
    pub(crate) fn expected_bytes(&self) -> u64 {
        self.expected_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn admitted_instances_count_against_the_floor_until_their_bytes_arrive() {
        let account = SpaceAccount::default();
        let mut core = FreeSpace::new(10 * MIB);
        // 11 MiB free: room for the floor and four expected instances.
        let free = 10 * MIB + 4 * EXPECTED_BYTES_INITIAL;
        let mut admitted = Vec::new();
        for _ in 0..4 {
            admitted.push(core.admit(&account, 0, || Some(free)).expect("room"));
        }
        assert!(
            core.admit(&account, 0, || Some(free)).is_none(),
            "the fifth would go under the floor"
        );
        // One instance arrives whole: its bytes are written (still counted,
        // the reading being older), then it finishes.
        let mut first = admitted.remove(0);
        core.wrote(&account, &mut first, EXPECTED_BYTES_INITIAL);
        core.finished(&account, first, true);
        assert!(core.admit(&account, 0, || Some(free)).is_none());
        // A new reading sees the written bytes gone from the disk's free
        // space, and the finished instance's reservation is released.
        core.reading = None;
        let free_now = free - EXPECTED_BYTES_INITIAL;
        assert!(core.admit(&account, 0, || Some(free_now)).is_none());
        // An instance refused before it wrote anything releases all of it.
        let refused = admitted.remove(0);
        core.finished(&account, refused, false);
        assert!(core.admit(&account, 0, || Some(free_now)).is_some());
    }

    #[test]
    fn the_next_allocation_counts_against_the_floor() {
        let account = SpaceAccount::default();
        let mut core = FreeSpace::new(10 * MIB);
        let free = 10 * MIB + 4 * EXPECTED_BYTES_INITIAL;
        // Room for the instance, not for the segment its core needs first.
        assert!(core.admit(&account, 8 * MIB, || Some(free)).is_none());
        let admitted = core.admit(&account, 0, || Some(free)).expect("room");
        core.finished(&account, admitted, false);
        // A segment's more free (a new reading).
        core.reading = None;
        assert!(core
            .admit(&account, 8 * MIB, || Some(free + 8 * MIB))
            .is_some());
    }

    #[test]
    fn the_expected_size_follows_the_instances() {
        let account = SpaceAccount::default();
        let mut core = FreeSpace::new(MIB);
        for _ in 0..64 {
            let mut reservation = core.admit(&account, 0, || Some(u64::MAX)).unwrap();
            core.wrote(&account, &mut reservation, 4 * MIB);
            core.finished(&account, reservation, true);
        }
        assert!(core.expected_bytes() > 3 * MIB);
        assert_eq!(account.reserved_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn no_floor_no_accounting() {
        let account = SpaceAccount::default();
        let mut core = FreeSpace::new(0);
        let mut reservation = core.admit(&account, 0, || Some(0)).expect("no floor");
        core.wrote(&account, &mut reservation, MIB);
        core.finished(&account, reservation, true);
        assert_eq!(account.written_bytes.load(Ordering::Relaxed), 0);
    }
}
