//! Visibility of batches answered before their commit
//! ([`Batch::answered_when_applied`](crate::writer::Batch::answered_when_applied)):
//! the writer numbers such transactions as it answers them and settles
//! them once committed (or halted); readers wait for, or ask about, what
//! was answered before they began. The state this owns is two counters and
//! the halted flag, shared by the writer thread and every reader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a reader waits at most for a transaction whose batches were
/// answered before their commit (a commit takes milliseconds; its re-runs
/// after a failure up to [`COMMIT_RETRY_DELAYS`]). A reader waiting longer
/// goes on and may not see those entries yet.
const VISIBILITY_WAIT_MAX: Duration = Duration::from_secs(5);

/// Makes an answer given before its commit visible to readers begun after
/// it: [`Index::read`](crate::Index::read) waits for every transaction
/// answered when applied to be settled (committed, or the writer halted)
/// before it begins. Transactions are numbered by the writer; a reader
/// with nothing answered early outstanding takes two atomic loads.
#[derive(Debug, Default)]
pub(crate) struct Visibility {
    /// The last transaction with a batch answered when applied.
    answered: AtomicU64,
    /// The last such transaction settled (a copy of `settled_lock`'s value,
    /// for the fast path).
    settled: AtomicU64,
    settled_lock: Mutex<u64>,
    changed: Condvar,
    /// The writer halted ([`IndexError::WriterHalted`]).
    halted: AtomicBool,
}

impl Visibility {
    /// Before a reader begins: waits until every transaction answered when
    /// applied before now is settled (at most [`VISIBILITY_WAIT_MAX`]).
    pub(crate) fn wait(&self) {
        let answered = self.answered.load(Ordering::Acquire);
        if self.settled.load(Ordering::Acquire) >= answered {
            return;
        }
        let deadline = Instant::now() + VISIBILITY_WAIT_MAX;
        let mut settled = self
            .settled_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *settled < answered {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "an index reader waited {VISIBILITY_WAIT_MAX:?} for a commit already answered; it goes on without it"
                );
                return;
            }
            settled = self
                .changed
                .wait_timeout(settled, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Transaction `txn` answers batches before its commit.
    pub(crate) fn answering(&self, txn: u64) {
        self.answered.store(txn, Ordering::Release);
    }

    /// Every transaction up to `txn` is settled.
    pub(crate) fn settle(&self, txn: u64) {
        let mut settled = self
            .settled_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *settled < txn {
            *settled = txn;
            self.settled.store(txn, Ordering::Release);
            self.changed.notify_all();
        }
    }

    /// The last transaction answered when applied, now (see
    /// [`Index::answered_mark`](crate::Index::answered_mark)).
    pub(crate) fn answered_mark(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Whether every transaction up to `mark` is settled, without waiting.
    pub(crate) fn settled_through(&self, mark: u64) -> bool {
        self.settled.load(Ordering::Acquire) >= mark
    }

    /// The writer halted (`true`) or resumed after a halt (`false`).
    pub(crate) fn set_halted(&self, halted: bool) {
        self.halted.store(halted, Ordering::Release);
    }

    /// Whether the writer halted.
    pub(crate) fn halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_visible_once_its_transactions_are_settled_not_before() {
        let visibility = Visibility::default();
        // Nothing answered early: visible at once.
        assert!(visibility.settled_through(visibility.answered_mark()));
        visibility.answering(3);
        let mark = visibility.answered_mark();
        assert!(!visibility.settled_through(mark));
        // A later transaction answered: the mark still waits only for 3.
        visibility.answering(4);
        visibility.settle(3);
        assert!(visibility.settled_through(mark));
        assert!(!visibility.settled_through(visibility.answered_mark()));
        visibility.settle(4);
        assert!(visibility.settled_through(visibility.answered_mark()));
    }
}
