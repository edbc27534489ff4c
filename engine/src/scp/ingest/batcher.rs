//! The core's group commit: which jobs' entries go to the index writer
//! together, when (the `storage.group_commit_window_us` window, the
//! `storage.group_commit_max_instances` batch, or at once when no other
//! entry is on its way), the write operations of a batch, of an undo, and of
//! the in-doubt clears that ride along.
//!
//! Sans-I/O: [`Batcher`] decides and builds; the ingest service arms its
//! timers and submits to the index writer ([`submit`]). It knows no
//! connection; a batch's answer names the jobs it covered ([`IndexAnswer`]).

use std::time::{Duration, Instant};

use super::job::JobKey;
use crate::config::{DuplicatePolicy as ConfigDuplicatePolicy, StorageConfig, UidConflictPolicy};
use sluice_index::{
    BatchResult, ConflictPolicy, DuplicatePolicy, FileId, IndexWriter, Location, NewInstance,
    StoreRequest, SubmitError, WriteOp,
};

/// How long the in-doubt marks of answered instances wait for a batch to
/// ride along with before they are cleared in a transaction of their own.
pub(crate) const IN_DOUBT_CLEAR_DELAY: Duration = Duration::from_millis(100);

/// What a batch was. Every batch first removes the entries owed a removal
/// (`IndexAnswer::owed`, one `RemoveInDoubt` each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// Then the entries of these jobs, one `Store` each, in order.
    Store,
    /// One job's undo (its own removal is among the owed ones).
    Undo,
    /// Then the in-doubt clears, if any: no job waits for it.
    Maintenance,
}

/// The index writer's answer to a batch of this core, posted to its mailbox.
#[derive(Debug)]
pub(crate) struct IndexAnswer {
    /// The jobs, in the order of their operations.
    pub(crate) jobs: Vec<JobKey>,
    /// What the batch was.
    pub(crate) kind: BatchKind,
    /// The files whose owed removals the batch carried, first.
    pub(crate) owed: Vec<FileId>,
    /// A store batch carried the in-doubt clears due (one `ClearInDoubt`,
    /// after the owed removals; no job waits for it).
    pub(crate) clears: bool,
    /// The writer's answer.
    pub(crate) result: BatchResult,
    /// When the writer answered (its transaction committed, or it failed).
    pub(crate) answered_at: Instant,
}

/// When the index writer answers a store batch ([`Batcher::answer_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerAt {
    /// After the index's flush made the commit durable.
    Flushed,
    /// When the transaction commits (`Batch::answered_at_commit`).
    Committed,
    /// When its operations are applied, before the commit
    /// (`Batch::answered_when_applied`).
    Applied,
}

impl AnswerAt {
    /// `batch` marked to be answered then.
    pub(crate) fn mark(self, batch: sluice_index::Batch) -> sluice_index::Batch {
        match self {
            AnswerAt::Flushed => batch,
            AnswerAt::Committed => batch.answered_at_commit(),
            AnswerAt::Applied => batch.answered_when_applied(),
        }
    }
}

/// Most entries owed a removal before the store refuses new C-STOREs
/// (A700): every batch carries all of them, and they are owed only while
/// index transactions fail (a full disk), so this bounds a batch's extra
/// operations, never the instances kept.
pub(crate) const OWED_REMOVALS_MAX: usize = 1024;

/// What to do after an entry was queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Submit the batch now.
    SubmitNow,
    /// Arm the window's timer; submit when it fires.
    ArmWindow(Duration),
    /// The window's timer is armed already.
    Wait,
}

/// The group-commit state of one core. `Timer` is the handle of an armed
/// timer (`sluice_io::TimerId`), held to cancel it.
#[derive(Debug)]
pub(crate) struct Batcher<Timer> {
    ready: Vec<JobKey>,
    window: Duration,
    batch_max: usize,
    window_timer: Option<Timer>,
    duplicate_policy: DuplicatePolicy,
    conflict_policy: ConflictPolicy,
    /// Files of answered instances whose in-doubt marks are still to be
    /// cleared (with the next batch, or when the clear timer fires).
    clears: Vec<FileId>,
    clear_timer: Option<Timer>,
}

impl<Timer: Copy + std::fmt::Debug> Batcher<Timer> {
    pub(crate) fn new(storage: &StorageConfig) -> Batcher<Timer> {
        Batcher {
            ready: Vec::new(),
            window: storage.group_commit_window_us,
            batch_max: storage.group_commit_max_instances as usize,
            window_timer: None,
            duplicate_policy: storage.duplicate_policy.into(),
            conflict_policy: storage.uid_conflict_policy.into(),
            clears: Vec::new(),
            clear_timer: None,
        }
    }

    /// A job's entry is queued. `another_on_its_way`: another job of the
    /// core will queue its entry soon. Waiting for the window only pays
    /// then: with none, a lone association would pay the whole window per
    /// instance.
    pub(crate) fn queue(&mut self, job: JobKey, another_on_its_way: bool) -> Queued {
        self.ready.push(job);
        if self.window.is_zero() || self.ready.len() >= self.batch_max || !another_on_its_way {
            Queued::SubmitNow
        } else if self.window_timer.is_none() {
            Queued::ArmWindow(self.window)
        } else {
            Queued::Wait
        }
    }

    /// The window's timer is armed.
    pub(crate) fn window_armed(&mut self, timer: Timer) {
        debug_assert!(self.window_timer.is_none());
        self.window_timer = Some(timer);
    }

    /// The window's timer fired.
    pub(crate) fn window_fired(&mut self) {
        self.window_timer = None;
    }

    /// The queued jobs, for the batch submitted now, and the window's timer
    /// to cancel.
    pub(crate) fn take_ready(&mut self) -> (Vec<JobKey>, Option<Timer>) {
        (std::mem::take(&mut self.ready), self.window_timer.take())
    }

    /// The operation storing an instance (with what lenient checks found
    /// in it, when they found something).
    pub(crate) fn store_op(
        &self,
        instance: NewInstance,
        in_doubt: bool,
        flagged: Option<Vec<u8>>,
    ) -> WriteOp {
        WriteOp::Store(StoreRequest {
            instance,
            duplicate_policy: self.duplicate_policy,
            conflict_policy: self.conflict_policy,
            in_doubt,
            flagged,
            location: Location::File,
        })
    }

    /// When a store batch of `ops` is answered by the index writer (the
    /// instances' answers also wait for their records' or files' flushes):
    ///
    /// - after the index's own flush under `replace`: the entry it removes
    ///   could not be rebuilt from the replaced file, which goes to
    ///   orphans/;
    /// - when applied, before the commit, when every entry names a record in
    ///   a segment and no cluster catalogue is kept: each record is durable
    ///   past its open segment's indexed end, start-up recovery indexes
    ///   such records again if a crash takes the commit, and the writer
    ///   stops taking writes if the commit fails at run time (so no later
    ///   transaction moves the indexed end past them;
    ///   docs/design/index-format.md, "Answered when applied");
    /// - else at commit, before the index's flush: every file its entries
    ///   name is sealed and made durable before its instance is answered,
    ///   and start-up recovery indexes a sealed file whose entry a crash
    ///   took. Cluster mode publishes the committed entries to the
    ///   catalogue before the answer, so it keeps this too.
    pub(crate) fn answer_at(&self, ops: &[WriteOp], cluster: bool) -> AnswerAt {
        if self.duplicate_policy == DuplicatePolicy::Replace {
            return AnswerAt::Flushed;
        }
        let all_records = ops.iter().all(|op| {
            matches!(
                op,
                WriteOp::Store(StoreRequest {
                    location: Location::Record(_),
                    ..
                })
            )
        });
        if all_records && !ops.is_empty() && !cluster {
            AnswerAt::Applied
        } else {
            AnswerAt::Committed
        }
    }

    /// An answered instance's file is durable: its in-doubt mark can go.
    /// Returns whether the clear timer is to be armed.
    pub(crate) fn clear_later(&mut self, file_id: FileId) -> bool {
        self.clears.push(file_id);
        self.clear_timer.is_none()
    }

    /// The clear timer is armed.
    pub(crate) fn clear_armed(&mut self, timer: Timer) {
        debug_assert!(self.clear_timer.is_none());
        self.clear_timer = Some(timer);
    }

    /// The clear timer fired.
    pub(crate) fn clear_fired(&mut self) {
        self.clear_timer = None;
    }

    /// The clear timer is not armed.
    pub(crate) fn clear_timer_idle(&self) -> bool {
        self.clear_timer.is_none()
    }

    /// The clears to submit now (in the store batch submitted now, or as
    /// their own small batch when the clear timer fired), and the clear
    /// timer to cancel.
    pub(crate) fn take_clears(&mut self) -> (Option<WriteOp>, Option<Timer>) {
        let timer = self.clear_timer.take();
        if self.clears.is_empty() {
            return (None, timer);
        }
        (
            Some(WriteOp::ClearInDoubt(std::mem::take(&mut self.clears))),
            timer,
        )
    }

    /// Clears the writer could not take now: kept for the next batch or the
    /// timer. Returns whether the clear timer is to be armed.
    pub(crate) fn clears_back(&mut self, file_ids: Vec<FileId>) -> bool {
        debug_assert!(self.clears.is_empty());
        self.clears = file_ids;
        self.clear_timer.is_none() && !self.clears.is_empty()
    }
}

/// The operations removing the owed entries (each keyed by its file, so
/// carrying them again after a commit took them is harmless).
pub(crate) fn owed_ops(owed: &[FileId]) -> Vec<WriteOp> {
    owed.iter()
        .map(|file_id| WriteOp::RemoveInDoubt(*file_id))
        .collect()
}

/// Submits a batch to the index writer; when its queue is full, waits for
/// room (this core receives nothing meanwhile, which is the intended
/// backpressure). A batch not taken still answers (the writer unavailable).
pub(crate) fn submit(writer: &IndexWriter, batch: sluice_index::Batch) -> Result<(), SubmitError> {
    match writer.try_submit(batch) {
        Err(SubmitError::Full(batch)) => writer.submit(batch),
        other => other,
    }
}

impl From<ConfigDuplicatePolicy> for DuplicatePolicy {
    fn from(policy: ConfigDuplicatePolicy) -> DuplicatePolicy {
        match policy {
            ConfigDuplicatePolicy::Quarantine => DuplicatePolicy::Quarantine,
            ConfigDuplicatePolicy::Reject => DuplicatePolicy::Reject,
            ConfigDuplicatePolicy::Replace => DuplicatePolicy::Replace,
            ConfigDuplicatePolicy::DropIfIdentical => DuplicatePolicy::DropIfIdentical,
        }
    }
}

impl From<UidConflictPolicy> for ConflictPolicy {
    fn from(policy: UidConflictPolicy) -> ConflictPolicy {
        match policy {
            UidConflictPolicy::Quarantine => ConflictPolicy::Quarantine,
            UidConflictPolicy::Reject => ConflictPolicy::Reject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn storage(window_us: u64, batch_max: u32) -> StorageConfig {
        let mut storage = Config::default().storage;
        storage.group_commit_window_us = Duration::from_micros(window_us);
        storage.group_commit_max_instances = batch_max;
        storage
    }

    #[test]
    fn the_window_is_waited_for_only_when_another_entry_is_on_its_way() {
        let mut batcher = Batcher::<u32>::new(&storage(500, 3));
        // Alone: commit now.
        assert_eq!(batcher.queue(JobKey(1), false), Queued::SubmitNow);
        assert_eq!(batcher.take_ready().0, vec![JobKey(1)]);
        // Another on its way: wait for the window, arming it once.
        assert_eq!(
            batcher.queue(JobKey(2), true),
            Queued::ArmWindow(Duration::from_micros(500))
        );
        batcher.window_armed(9);
        assert_eq!(batcher.queue(JobKey(3), true), Queued::Wait);
        // The batch is full at three.
        assert_eq!(batcher.queue(JobKey(4), true), Queued::SubmitNow);
        let (jobs, timer) = batcher.take_ready();
        assert_eq!(jobs, vec![JobKey(2), JobKey(3), JobKey(4)]);
        assert_eq!(timer, Some(9), "the window is cancelled");
        // No window configured: always now.
        let mut batcher = Batcher::<u32>::new(&storage(0, 3));
        assert_eq!(batcher.queue(JobKey(5), true), Queued::SubmitNow);
    }

    #[test]
    fn clears_ride_along_or_wait_for_their_timer() {
        let mut batcher = Batcher::<u32>::new(&storage(500, 8));
        assert_eq!(batcher.take_clears().0, None);
        assert!(
            batcher.clear_later(FileId(1)),
            "the first clear arms the timer"
        );
        batcher.clear_armed(4);
        assert!(!batcher.clear_later(FileId(2)));
        let (op, timer) = batcher.take_clears();
        assert_eq!(op, Some(WriteOp::ClearInDoubt(vec![FileId(1), FileId(2)])));
        assert_eq!(timer, Some(4));
        // Not taken by the writer: kept, and the timer armed again.
        assert!(batcher.clears_back(vec![FileId(1), FileId(2)]));
    }

    /// Only a batch of segment records, outside cluster mode and
    /// `replace`, is answered before its commit.
    #[test]
    fn only_segment_records_are_answered_when_applied() {
        let instance = crate::scp::ingest::sim::new_instance("1.2.3", FileId(1), b"data");
        let batcher = Batcher::<u32>::new(&storage(500, 8));
        let store = |location| {
            let mut op = batcher.store_op(instance.clone(), false, None);
            if let WriteOp::Store(request) = &mut op {
                request.location = location;
            }
            op
        };
        let record = || {
            store(Location::Record(sluice_index::RecordPlace {
                segment: 1,
                offset: 0,
                length: 4096,
            }))
        };
        assert_eq!(
            batcher.answer_at(&[record(), record()], false),
            AnswerAt::Applied
        );
        assert_eq!(
            batcher.answer_at(&[record(), store(Location::File)], false),
            AnswerAt::Committed,
            "a file in the batch"
        );
        assert_eq!(batcher.answer_at(&[record()], true), AnswerAt::Committed);
        let mut replacing = storage(500, 8);
        replacing.duplicate_policy = ConfigDuplicatePolicy::Replace;
        let batcher = Batcher::<u32>::new(&replacing);
        assert_eq!(batcher.answer_at(&[record()], false), AnswerAt::Flushed);
    }

    #[test]
    fn every_configured_policy_maps_to_the_index_policy_of_the_same_name() {
        use crate::config::ConfigEnum;
        for (name, policy, _) in ConfigDuplicatePolicy::VARIANTS {
            let mapped: DuplicatePolicy = (*policy).into();
            assert_eq!(
                format!("{mapped:?}").to_lowercase(),
                name.replace('-', ""),
                "{name}"
            );
        }
        for (name, policy, _) in UidConflictPolicy::VARIANTS {
            let mapped: ConflictPolicy = (*policy).into();
            assert_eq!(format!("{mapped:?}").to_lowercase(), *name);
        }
    }
}
