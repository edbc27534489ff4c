//! The core's side of the index writer: the group-commit state
//! ([`Batcher`]) with its two timers, the submission of store, undo and
//! maintenance (in-doubt clears) batches, each first removing the entries
//! owed a removal (`crate::store::in_doubt`), and the translation of the
//! writer's answers into job inputs. Batches answer through the core's
//! reply queue (`reply`), naming the jobs and the owed removals they
//! covered.

use std::sync::Arc;
use std::time::Instant;

use sluice_index::{
    Batch, FileId, IndexWriter, Location, NewInstance, SubmitError, WriteOp, WriteOutcome,
};
use sluice_io::{Core, TimerId};

use super::batcher::{self, BatchKind, Batcher, IndexAnswer, Queued, IN_DOUBT_CLEAR_DELAY};
use super::job::{JobInput, JobKey};
use super::replies::ReplyQueue;
use crate::config::StorageConfig;
use crate::scp::failure::Failure;
use crate::scp::tag::{tag, TagKind};
use crate::store::in_doubt::InDoubtSet;

/// Where a batch's answer goes: the core's reply queue.
pub(crate) type Reply = Arc<ReplyQueue>;

/// One core's side of the index writer.
pub(super) struct IndexSide {
    writer: IndexWriter,
    reply: Reply,
    batcher: Batcher<TimerId>,
    in_doubt: InDoubtSet,
    cluster: Option<crate::cluster::Cluster>,
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
    pub(super) fn new(
        writer: IndexWriter,
        reply: Reply,
        storage: &StorageConfig,
        in_doubt: InDoubtSet,
        cluster: Option<crate::cluster::Cluster>,
    ) -> IndexSide {
        IndexSide {
            writer,
            reply,
            batcher: Batcher::new(storage),
            in_doubt,
            cluster,
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

    /// The answers the writer posted since the last call.
    pub(super) fn take_answers(&self) -> std::collections::VecDeque<IndexAnswer> {
        self.reply.take()
    }

    /// The group-commit window's timer fired.
    pub(super) fn window_fired(&mut self) {
        self.batcher.window_fired();
    }

    /// The jobs whose entries are submitted now (the window cancelled).
    pub(super) fn take_batch(&mut self, core: &mut Core) -> Vec<JobKey> {
        let (queued, timer) = self.batcher.take_ready();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        queued
    }

    /// The operation storing an instance whose bytes are at `location`.
    pub(super) fn store_op(
        &self,
        instance: NewInstance,
        in_doubt: bool,
        flagged: Option<Vec<u8>>,
        location: Location,
    ) -> WriteOp {
        let mut op = self.batcher.store_op(instance, in_doubt, flagged);
        if let WriteOp::Store(request) = &mut op {
            request.location = location;
        }
        op
    }

    /// A segment is sealed (full, or a write or flush in it failed) and no
    /// job has a record in it any more: the index is told, so recovery no
    /// longer scans it. A seal that does not commit costs a scan of the
    /// segment at the next start, which finds its records indexed.
    pub(super) fn submit_seal(&self, segment: u64) {
        let batch = Batch::with_callback(vec![WriteOp::SealSegment(segment)], move |result| {
            if let Err(error) = result {
                tracing::warn!(segment, %error, "could not record a segment as sealed; start-up recovery will scan it");
            }
        });
        if let Err(error) = self.writer.submit(batch) {
            tracing::warn!(segment, %error, "could not record a segment as sealed; start-up recovery will scan it");
        }
    }

    /// A batch of `ops` after the owed removals (and the in-doubt
    /// `clears`, if any), answered to this core.
    fn batch(
        &self,
        clears: Option<WriteOp>,
        ops: Vec<WriteOp>,
        jobs: Vec<JobKey>,
        kind: BatchKind,
    ) -> Batch {
        let owed = self.in_doubt.owed();
        let mut all = batcher::owed_ops(&owed);
        let carries_clears = clears.is_some();
        all.extend(clears);
        let reply = self.reply.clone();
        // Cluster mode: the committed entries go to the catalogue's outbox
        // before the answer (and, publishing before the answer, the answer
        // waits for the catalogue).
        let cluster = self.cluster.as_ref().filter(|_| kind == BatchKind::Store);
        let answer = crate::cluster::hook(cluster, &ops, move |result| {
            reply.post(IndexAnswer {
                jobs,
                kind,
                owed,
                clears: carries_clears,
                result,
                answered_at: Instant::now(),
            });
        });
        all.extend(ops);
        Batch::with_callback(all, answer)
    }

    /// Submits the entries of `jobs`, with the in-doubt clears due and
    /// the owed removals in front of them: one batch, so one transaction
    /// (as a batch of their own the clears could be taken alone by a
    /// writer that woke at their submission, and commit, a flush of the
    /// index, ahead of the entries submitted a moment later). A store
    /// batch that fails loses its clears, as a failed maintenance batch
    /// does: those files are rechecked at the next start. When the writer
    /// does not take the batch, it answers its jobs anyway (the writer
    /// unavailable).
    pub(super) fn submit_stores(&mut self, core: &mut Core, jobs: Vec<JobKey>, ops: Vec<WriteOp>) {
        let (clears, timer) = self.batcher.take_clears();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        let answer_at = self.batcher.answer_at(&ops, self.cluster.is_some());
        let batch = answer_at.mark(self.batch(clears, ops, jobs, BatchKind::Store));
        if let Err(error) = batcher::submit(&self.writer, batch) {
            tracing::error!(%error, "cannot submit an index batch; its instances fail");
        }
    }

    /// Submits a job's undo: its file's removal, owed already, rides in the
    /// batch with the others. If a crash takes it, the entry is still in
    /// doubt and its file gone (or incomplete): start-up recovery removes
    /// it.
    pub(super) fn submit_undo(&self, key: JobKey, file_id: FileId) {
        tracing::debug!(?file_id, "submitting an undo");
        let batch = self
            .batch(None, Vec::new(), vec![key], BatchKind::Undo)
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
        self.submit_clears(core, true);
    }

    /// Submits the in-doubt marks still to clear and the removals still
    /// owed, waiting for room in the writer's queue (the core stops next: a
    /// clear kept for later would be lost, and the next start would recheck
    /// those files; an owed removal is redone by start-up recovery, which
    /// removes in-doubt entries whose files are gone).
    pub(super) fn submit_clears_at_shutdown(&mut self, core: &mut Core) {
        let (op, timer) = self.batcher.take_clears();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        let mut ops = batcher::owed_ops(&self.in_doubt.owed());
        ops.extend(op);
        if ops.is_empty() {
            return;
        }
        let batch = Batch::with_callback(ops, |result| {
            if let Err(error) = result {
                tracing::warn!(%error, "could not clear in-doubt marks at shutdown; start-up recovery will check those files");
            }
        });
        if let Err(error) = self.writer.submit(batch) {
            tracing::warn!(%error, "could not clear in-doubt marks at shutdown; start-up recovery will check those files");
        }
    }

    /// Submits the in-doubt marks to clear (files now durable) and the
    /// owed removals as their own small batch. Only start-up recovery reads
    /// the marks, so a failed clear costs nothing but a recheck of those
    /// files at the next start; owed removals stay owed until a batch
    /// carrying them commits (the timer is armed again while any is).
    pub(super) fn submit_clears(&mut self, core: &mut Core, owed_alone: bool) {
        let (op, timer) = self.batcher.take_clears();
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        if op.is_none() && !(owed_alone && self.in_doubt.owed_count() > 0) {
            // No instance answered since the last clears, nothing owed.
            return;
        }
        let clears = match &op {
            Some(WriteOp::ClearInDoubt(file_ids)) => file_ids.clone(),
            _ => Vec::new(),
        };
        let batch = self
            .batch(op, Vec::new(), Vec::new(), BatchKind::Maintenance)
            .answered_at_commit();
        match self.writer.try_submit(batch) {
            Ok(()) => {}
            Err(SubmitError::Full(batch)) => {
                // Not taken: it answers "writer unavailable" as it drops,
                // and what it carried is kept for the next batch or the
                // timer.
                drop(batch);
                if self.batcher.clears_back(clears) || self.in_doubt.owed_count() > 0 {
                    self.arm_clear_timer(core);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not clear in-doubt marks; start-up recovery will check those files");
            }
        }
    }

    /// A maintenance batch answered: a failure is logged (the clears are
    /// rechecked at the next start), and owed removals left keep the timer
    /// armed.
    pub(super) fn maintenance_answered(
        &mut self,
        core: &mut Core,
        failed: Option<&sluice_index::IndexError>,
    ) {
        match failed {
            // A batch the writer's full queue did not take: its clears were
            // kept.
            Some(sluice_index::IndexError::WriterUnavailable) => {
                tracing::debug!("in-doubt clears not taken by the index writer; kept");
            }
            Some(error) => {
                tracing::warn!(%error, "could not clear in-doubt marks; start-up recovery will check those files");
            }
            None => {}
        }
        self.retry_owed_later(core);
    }

    /// Arms the clear timer if entries are owed a removal, so they are
    /// removed even when no instance arrives.
    pub(super) fn retry_owed_later(&mut self, core: &mut Core) {
        if self.in_doubt.owed_count() > 0 && self.batcher.clear_timer_idle() {
            self.arm_clear_timer(core);
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

/// What a batch's answer means for the core.
#[derive(Debug)]
pub(super) struct BatchOutcome {
    /// What the batch was.
    pub(super) kind: BatchKind,
    /// The error of its transaction, if it did not commit.
    pub(super) failed: Option<sluice_index::IndexError>,
    /// The owed removals it carried (settled if it committed).
    pub(super) owed: Vec<FileId>,
    /// Its jobs' inputs.
    pub(super) inputs: Vec<(JobKey, JobInput)>,
}

/// A batch's answer as its jobs' inputs.
pub(super) fn answer_outcome(answer: IndexAnswer) -> BatchOutcome {
    let kind = answer.kind;
    let owed = answer.owed.clone();
    let (failed, inputs) = answer_inputs(answer);
    BatchOutcome {
        kind,
        failed,
        owed,
        inputs,
    }
}

/// A batch's answer as its jobs' inputs, and the error of its transaction
/// if it did not commit.
fn answer_inputs(
    answer: IndexAnswer,
) -> (Option<sluice_index::IndexError>, Vec<(JobKey, JobInput)>) {
    let IndexAnswer {
        jobs,
        kind,
        owed,
        clears,
        result,
        answered_at: _,
    } = answer;
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
                        BatchKind::Maintenance => panic!("a maintenance batch with jobs"),
                    };
                    (key, input)
                })
                .collect();
            return (Some(error), inputs);
        }
        Ok(mut items) => {
            // The owed removals' answers first, then the clears' (a
            // maintenance batch's clears are its own operations): nothing
            // waits for them (an entry already gone is fine).
            let before = owed.len() + usize::from(clears);
            assert!(items.len() >= before, "an answer per owed removal");
            items.drain(..before);
            items
        }
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
            assert!(items.is_empty(), "an undo is its owed removal only");
            // Its removal committed (a removal cannot be refused).
            jobs.into_iter()
                .map(|key| (key, JobInput::Undone(Ok(()))))
                .collect()
        }
        BatchKind::Maintenance => {
            assert!(jobs.is_empty(), "a maintenance batch with jobs");
            Vec::new()
        }
    };
    (None, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_index::StoreOutcome;

    /// A store batch's answer: the owed removals' and the clears' items
    /// come first and go to no job; each store's to its job, in order.
    #[test]
    fn a_store_batch_s_answer_skips_its_removals_and_clears() {
        let answer = |clears: bool| IndexAnswer {
            jobs: vec![JobKey(1), JobKey(2)],
            kind: BatchKind::Store,
            owed: vec![FileId(9)],
            clears,
            result: Ok([
                vec![Ok(WriteOutcome::InDoubtRemoved { removed: false })],
                if clears {
                    vec![Ok(WriteOutcome::InDoubtCleared { cleared: 3 })]
                } else {
                    Vec::new()
                },
                vec![
                    Ok(WriteOutcome::Store(StoreOutcome::Stored)),
                    Ok(WriteOutcome::Store(StoreOutcome::Stored)),
                ],
            ]
            .concat()),
            answered_at: Instant::now(),
        };
        for clears in [false, true] {
            let outcome = answer_outcome(answer(clears));
            assert!(outcome.failed.is_none());
            assert_eq!(outcome.owed, vec![FileId(9)]);
            let jobs: Vec<JobKey> = outcome
                .inputs
                .iter()
                .map(|(key, input)| {
                    assert!(
                        matches!(input, JobInput::Committed(Ok(StoreOutcome::Stored))),
                        "{input:?}"
                    );
                    *key
                })
                .collect();
            assert_eq!(jobs, vec![JobKey(1), JobKey(2)], "clears {clears}");
        }
    }
}
