//! Retrieval's share of a core while ingest waits (issue 14: "retrieval
//! must not starve ingest"; the argument is in docs/design/query-retrieve.md,
//! "Retrieval beside ingest").
//!
//! Every chunk a retrieve sends (one file read and one send of up to
//! `CHUNK_SIZE` bytes) asks [`Share::admit`] first. Time is cut in epochs of
//! [`EPOCH`]; the core counts the C-STORE data-set bytes its associations
//! received ([`Share::ingest_received`]). While ingest is active (it received
//! bytes this epoch or the one before), retrieval spends a credit: each
//! epoch that ends adds `share / (100 - share)` times the ingest bytes of that
//! epoch (so retrieval's bytes are at most `query.retrieve_share_under_ingest`
//! percent of the bytes the core moves), at least `FLOOR_PER_EPOCH` (a
//! retrieve never stops: 3.2 MB/s per core), at most `CREDIT_MAX` saved up.
//! A chunk goes while the credit is positive and may leave it negative: the
//! debt is paid by the epochs after. With no ingest, or a share of 100,
//! every chunk goes at once (and the credit is full when ingest comes).
//!
//! A lane refused waits like one without a free chunk; the owner arms one
//! timer for the next epoch ([`Share::next_epoch_in`]) and tries the waiting
//! lanes again when it fires.

use std::time::{Duration, Instant};

use sluice_io::{Chunk, ChunkPool};

/// The length of one accounting epoch.
pub(crate) const EPOCH: Duration = Duration::from_millis(10);

/// The credit retrieval gets per epoch however little ingest moved: its
/// floor under ingest, 3.2 MB/s per core (a 256 KiB chunk every 8 epochs).
const FLOOR_PER_EPOCH: i64 = 32 * 1024;

/// The most credit retrieval saves up while ingest is waiting (a burst).
const CREDIT_MAX: i64 = 1024 * 1024;

/// The per-core accounting (see the module documentation).
#[derive(Debug)]
pub(crate) struct Share {
    /// Retrieval's share in percent (1 to 100; 100: no limit).
    percent: i64,
    epoch_started: Instant,
    ingest_this_epoch: u64,
    ingest_last_epoch: u64,
    /// Bytes retrieval may still take (negative: the debt of the last
    /// chunk, paid by the epochs to come).
    credit: i64,
    /// A timer for the next epoch is armed.
    pub(crate) timer_armed: bool,
}

impl Share {
    pub(crate) fn new(percent: u32, now: Instant) -> Share {
        assert!(
            (1..=100).contains(&percent),
            "a retrieve share of {percent}% (the configuration allows 1 to 100)"
        );
        Share {
            percent: i64::from(percent),
            epoch_started: now,
            ingest_this_epoch: 0,
            ingest_last_epoch: 0,
            credit: CREDIT_MAX,
            timer_armed: false,
        }
    }

    /// Retrieval's credit for one epoch beside `ingest` bytes.
    fn allowance(&self, ingest: u64) -> i64 {
        debug_assert!(self.percent < 100, "no allowance without a share");
        let ingest = i64::try_from(ingest).unwrap_or(i64::MAX);
        (ingest.saturating_mul(self.percent) / (100 - self.percent).max(1)).max(FLOOR_PER_EPOCH)
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.epoch_started);
        if elapsed < EPOCH {
            return;
        }
        let epochs = i64::try_from(elapsed.as_nanos() / EPOCH.as_nanos()).unwrap_or(i64::MAX);
        // Each epoch gone by pays its credit, by the ingest of the epoch
        // that ended (later ones, if any, saw none).
        let paid = self
            .allowance(self.ingest_this_epoch)
            .saturating_add((epochs - 1).saturating_mul(FLOOR_PER_EPOCH));
        self.credit = self.credit.saturating_add(paid).min(CREDIT_MAX);
        // An idle gap of more than one epoch leaves no ingest behind it.
        self.ingest_last_epoch = if epochs == 1 {
            self.ingest_this_epoch
        } else {
            0
        };
        self.ingest_this_epoch = 0;
        self.epoch_started = now;
    }

    /// The core's associations received `bytes` of C-STORE data sets.
    pub(crate) fn ingest_received(&mut self, bytes: usize, now: Instant) {
        if self.percent >= 100 {
            return;
        }
        self.roll(now);
        self.ingest_this_epoch = self.ingest_this_epoch.saturating_add(bytes as u64);
    }

    /// Whether retrieval may send a chunk of `bytes` now; counted when so.
    pub(crate) fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        if self.percent >= 100 {
            return true;
        }
        self.roll(now);
        if self.ingest_this_epoch == 0 && self.ingest_last_epoch == 0 {
            // No ingest waiting: no limit, and a full credit for when it comes.
            self.credit = CREDIT_MAX;
            return true;
        }
        if self.credit <= 0 {
            return false;
        }
        self.credit = self
            .credit
            .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        true
    }

    /// A chunk admitted but not used (no chunk was free after all).
    pub(crate) fn refund(&mut self, bytes: usize) {
        self.credit = self
            .credit
            .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX))
            .min(CREDIT_MAX);
    }

    /// How long until the next epoch starts.
    pub(crate) fn next_epoch_in(&self, now: Instant) -> Duration {
        EPOCH.saturating_sub(now.saturating_duration_since(self.epoch_started))
    }
}

/// Where a lane's transfer takes the chunk of its next read and send: the
/// core's pool, within the core's share.
#[derive(Debug)]
pub(crate) struct Sending<'a> {
    pub(crate) pool: &'a ChunkPool,
    pub(crate) share: &'a mut Share,
}

/// Why [`Sending::take`] gave no chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoChunk {
    /// Ingest is waiting and retrieval used its share of this epoch.
    Share,
    /// The pool is lent out.
    Pool,
}

impl Sending<'_> {
    /// Whether `bytes` sent without a chunk (a data set spliced from its
    /// file) may go now within the share; counted when so.
    pub(crate) fn admit(&mut self, bytes: u64) -> Result<(), NoChunk> {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        if self.share.admit(bytes, Instant::now()) {
            Ok(())
        } else {
            Err(NoChunk::Share)
        }
    }

    /// Bytes admitted and not sent after all.
    pub(crate) fn refund(&mut self, bytes: u64) {
        self.share
            .refund(usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    /// A chunk, or why there is none now.
    pub(crate) fn take(&mut self) -> Result<Chunk, NoChunk> {
        let now = Instant::now();
        let bytes = self.pool.chunk_size();
        if !self.share.admit(bytes, now) {
            return Err(NoChunk::Share);
        }
        self.pool.take().ok_or_else(|| {
            self.share.refund(bytes);
            NoChunk::Pool
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 256 * 1024;

    #[test]
    fn without_ingest_every_chunk_goes() {
        let start = Instant::now();
        let mut share = Share::new(20, start);
        assert!((0..1000).all(|_| share.admit(CHUNK, start)));
    }

    #[test]
    fn under_ingest_retrieval_keeps_to_its_share_and_its_floor() {
        let start = Instant::now();
        let mut share = Share::new(20, start);
        // Ingest arrives: the saved credit (1 MiB) goes first, four chunks.
        share.ingest_received(8 << 20, start);
        assert_eq!((0..100).filter(|_| share.admit(CHUNK, start)).count(), 4);
        // 8 MiB of ingest in that epoch: 20% of the bytes moved is 2 MiB
        // of retrieval in the next, but the credit saved is capped at 1 MiB.
        let next = start + EPOCH;
        share.ingest_received(8 << 20, next);
        assert_eq!(share.next_epoch_in(next), EPOCH);
        assert_eq!((0..100).filter(|_| share.admit(CHUNK, next)).count(), 4);
        // Then a trickle of ingest: the epoch after the 8 MiB one still has
        // its credit (capped), then the floor, one chunk in eight epochs.
        let mut now = next + EPOCH;
        share.ingest_received(100, now);
        assert_eq!((0..100).filter(|_| share.admit(CHUNK, now)).count(), 4);
        let mut admitted = 0;
        for _ in 0..80 {
            now += EPOCH;
            share.ingest_received(100, now);
            admitted += (0..10).filter(|_| share.admit(CHUNK, now)).count();
        }
        assert!(
            (9..=11).contains(&admitted),
            "{admitted} chunks in 80 epochs"
        );
        // Ingest stopped two epochs ago: no limit.
        let idle = now + 3 * EPOCH;
        assert!((0..100).all(|_| share.admit(CHUNK, idle)));
    }

    #[test]
    fn a_share_of_100_never_defers() {
        let start = Instant::now();
        let mut share = Share::new(100, start);
        for epoch in 0..5 {
            let now = start + epoch * EPOCH;
            share.ingest_received(1 << 30, now);
            assert!((0..1000).all(|_| share.admit(CHUNK, now)));
        }
    }
}
