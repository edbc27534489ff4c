//! The core's side of the index writer: the group-commit state
//! ([`Batcher`]) with its two timers, the submission of store, undo and
//! in-doubt clear batches, and the translation of the writer's answers into
//! job inputs. Batches answer through the core's mailbox (`reply`), naming
//! the jobs they covered.

use std::sync::Arc;

use sluice_index::{Batch, FileId, IndexWriter, NewInstance, SubmitError, WriteOp, WriteOutcome};
use sluice_io::{Core, TimerId};

use super::batcher::{self, BatchKind, Batcher, IndexAnswer, Queued, IN_DOUBT_CLEAR_DELAY};
use super::job::{JobInput, JobKey};
use crate::config::StorageConfig;
use crate::scp::failure::Failure;
use crate::scp::tag::{tag, TagKind};

/// Posts a batch's answer to the core's mailbox.
pub(crate) type Reply = Arc<dyn Fn(IndexAnswer) + Send + Sync>;

/// One core's side of the index writer.
pub(super) struct IndexSide {
    writer: IndexWriter,
    reply: Reply,
    batcher: Batcher<TimerId>,
}

impl std::fmt::Debug for IndexSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexSide")
            .field("writer", &self.writer)
            .field("batcher", &self.batcher)
            .finish_non_exhaustive()
    }
}

impl IndexSide {
    pub(super) fn new(writer: IndexWriter, reply: Reply, storage: &StorageConfig) -> IndexSide {
        IndexSide {
            writer,
            reply,
            batcher: Batcher::new(storage),
        }
    }

    /// A job's entry is queued: true when the batch is to be submitted now
    /// (else the window's timer runs).
    pub(super) fn queue(&mut self, core: &mut Core, key: JobKey, another_on_its_way: bool) -> bool {
        match self.batcher.queue(key, another_on_its_way) {
            Queued::SubmitNow => true,
            Queued::ArmWindow(window) => match core.timer(window, tag(TagKind::CommitWindow, 0)) {
                Ok(timer) => {
                    self.batcher.window_armed(timer);
                    false
                }
                // No timer: commit now rather than wait for another entry.
                Err(_) => true,
            },
            Queued::Wait => false,
        }
    }

    /// The group-commit window's timer fired.
    pub(super) fn window_fired(&mut self) {
        self.batcher.window_fired();
    }

    /// The jobs whose entries are submitted now (the window cancelled; the
    /// in-doubt clears due are submitted first, and the writer coalesces
    /// queued batches into one transaction).
    pub(super) fn take_batch(&mut self, core: &mut Core) -> Vec<JobKey> {
        let (queued, timer) = self.batcher.take_ready();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        if !queued.is_empty() {
            self.submit_clears(core);
        }
        queued
    }

    /// The operation storing an instance.
    pub(super) fn store_op(
        &self,
        instance: NewInstance,
        in_doubt: bool,
        flagged: Option<Vec<u8>>,
    ) -> WriteOp {
        self.batcher.store_op(instance, in_doubt, flagged)
    }

    fn batch(&self, ops: Vec<WriteOp>, jobs: Vec<JobKey>, kind: BatchKind) -> Batch {
        let reply = self.reply.clone();
        Batch::with_callback(ops, move |result| {
            reply(IndexAnswer { jobs, kind, result });
        })
    }

    /// Submits the entries of `jobs`. `Err` when the writer did not take
    /// the batch: the batch answers its jobs anyway (the writer
    /// unavailable).
    pub(super) fn submit_stores(&self, jobs: Vec<JobKey>, ops: Vec<WriteOp>) -> Result<(), ()> {
        let batch = self.batch(ops, jobs, BatchKind::Store);
        let batch = if self.batcher.answered_at_commit() {
            batch.answered_at_commit()
        } else {
            batch
        };
        batcher::submit(&self.writer, batch).map_err(|error| {
            tracing::error!(%error, "cannot submit an index batch; its instances fail");
        })
    }

    /// Submits a job's undo. If a crash takes it, the entry is still in doubt
    /// and its file gone (or incomplete): start-up recovery removes it.
    pub(super) fn submit_undo(&self, key: JobKey, ops: Vec<WriteOp>) {
        let batch = self
            .batch(ops, vec![key], BatchKind::Undo)
            .answered_at_commit();
        if let Err(error) = batcher::submit(&self.writer, batch) {
            // The batch not taken answers (the writer unavailable): the
            // job's failure is answered then.
            tracing::error!(%error, "cannot submit the undo of an index entry; it stays in doubt for start-up recovery");
        }
    }

    /// An answered instance's file is durable: its in-doubt mark goes with
    /// the next batch, or when the clear timer fires.
    pub(super) fn clear_later(&mut self, core: &mut Core, file_id: FileId) {
        if self.batcher.clear_later(file_id) {
            self.arm_clear_timer(core);
        }
    }

    /// The clear timer fired.
    pub(super) fn clear_fired(&mut self, core: &mut Core) {
        self.batcher.clear_fired();
        self.submit_clears(core);
    }

    /// Submits the in-doubt marks still to clear, waiting for room in the
    /// writer's queue (the core stops next: a clear kept for later would be
    /// lost, and the next start would recheck those files).
    pub(super) fn submit_clears_at_shutdown(&mut self, core: &mut Core) {
        let (op, timer) = self.batcher.take_clears();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        let Some(op) = op else {
            return;
        };
        let batch = Batch::with_callback(vec![op], |result| {
            if let Err(error) = result {
                tracing::warn!(%error, "could not clear in-doubt marks at shutdown; start-up recovery will check those files");
            }
        });
        if let Err(error) = self.writer.submit(batch) {
            tracing::warn!(%error, "could not clear in-doubt marks at shutdown; start-up recovery will check those files");
        }
    }

    /// Submits the in-doubt marks to clear (files now durable) as their own
    /// small batch. Only start-up recovery reads the marks, so a failure here
    /// costs nothing but a recheck of those files at the next start.
    pub(super) fn submit_clears(&mut self, core: &mut Core) {
        let (op, timer) = self.batcher.take_clears();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        let Some(op) = op else {
            // No instance answered since the last clears.
            return;
        };
        // Nobody waits for it: a lost clear only costs a recheck at start.
        let batch = Batch::with_callback(vec![op], |result| {
            if let Err(error) = result {
                tracing::warn!(%error, "could not clear in-doubt marks; start-up recovery will check those files");
            }
        })
        .answered_at_commit();
        match self.writer.try_submit(batch) {
            Ok(()) => {}
            Err(SubmitError::Full(batch)) => {
                // Kept for the next batch or the timer.
                if let Some(WriteOp::ClearInDoubt(file_ids)) = batch.ops().first() {
                    if self.batcher.clears_back(file_ids.clone()) {
                        self.arm_clear_timer(core);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not clear in-doubt marks; start-up recovery will check those files");
            }
        }
    }

    fn arm_clear_timer(&mut self, core: &mut Core) {
        // Without the timer the marks wait for the next batch (or the
        // shutdown).
        if let Ok(timer) = core.timer(IN_DOUBT_CLEAR_DELAY, tag(TagKind::ClearTimer, 0)) {
            self.batcher.clear_armed(timer);
        }
    }
}

/// A batch's answer as its jobs' inputs, and whether its transaction
/// committed.
pub(super) fn answer_inputs(answer: IndexAnswer) -> (bool, Vec<(JobKey, JobInput)>) {
    let IndexAnswer { jobs, kind, result } = answer;
    let items = match result {
        // Nothing of the batch was committed.
        Err(error) => {
            let inputs = jobs
                .into_iter()
                .map(|key| {
                    let failure = Failure::IndexCommit(error.clone());
                    let input = match kind {
                        BatchKind::Store => JobInput::Committed(Err(failure)),
                        BatchKind::Undo => JobInput::Undone(Err(failure)),
                    };
                    (key, input)
                })
                .collect();
            return (false, inputs);
        }
        Ok(items) => items,
    };
    let inputs = match kind {
        BatchKind::Store => {
            assert_eq!(items.len(), jobs.len(), "one answer per store");
            jobs.into_iter()
                .zip(items)
                .map(|(key, item)| {
                    let result = match item {
                        Ok(WriteOutcome::Store(outcome)) => Ok(outcome),
                        Ok(other) => panic!("a store answered {other:?}"),
                        Err(invalid) => Err(Failure::IndexRefused(invalid)),
                    };
                    (key, JobInput::Committed(result))
                })
                .collect()
        }
        BatchKind::Undo => {
            assert_eq!(jobs.len(), 1, "an undo is one job's");
            // The undo's own operation answers; the in-doubt clear after it
            // cannot fail.
            let result = match items.into_iter().next() {
                Some(Err(invalid)) => Err(Failure::IndexRefused(invalid)),
                _ => Ok(()),
            };
            jobs.into_iter()
                .map(|key| (key, JobInput::Undone(result.clone())))
                .collect()
        }
    };
    (true, inputs)
}
