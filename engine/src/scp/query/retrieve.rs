//! One C-MOVE or C-GET: its sub-operations' bookkeeping, without I/O.
//!
//! A [`Retrieve`] holds the instances still to send, hands them out one at
//! a time to the associations that carry the C-STOREs (lanes), takes each
//! sub-operation's outcome back, and decides the counts of every pending
//! response and the final status (PS3.4 C.4.2.1.5, C.4.3.1.4):
//!
//! | outcome | status |
//! | --- | --- |
//! | C-CANCEL received | FE00, the instances not started counted remaining |
//! | every sub-operation completed without warning | 0000 |
//! | no sub-operation completed, some failed | A702 (unable to perform sub-operations) |
//! | otherwise (some failed or warned) | B000 |
//!
//! In cluster mode other nodes do part of it (`crate::cluster::forward`):
//! the instances they hold count remaining until their counts come
//! ([`Retrieve::remote_counts`]) or, for C-GET, until they arrive here to
//! be sent ([`Retrieve::remote_staged`]); every count sums both parts.
//!
//! Failed, warning and cancel answers carry the Failed SOP Instance UID List
//! (0008,0058) of the instances that failed. The first failure's reason
//! goes in the Error Comment, so "the destination accepts no transfer syntax
//! Sluice can send" reaches the SCU, not only the log.

use std::collections::VecDeque;

use sluice_net::dimse::{CStoreRsp, Status, StatusCategory, SubOperationCounts};

use crate::cluster::{Counts, Forwarded};
use crate::store::StoredDataset;

/// How one sub-operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubOutcome {
    /// The destination answered success.
    Completed,
    /// The destination answered a warning (B000, B006, B007).
    Warning,
    /// It failed: never sent, not acknowledged, or refused (the reason).
    Failed(String),
}

/// The outcome of a C-STORE-RSP's status.
pub(super) fn sub_outcome(rsp: &CStoreRsp) -> SubOutcome {
    match rsp.status.category() {
        StatusCategory::Success => SubOutcome::Completed,
        StatusCategory::Warning => SubOutcome::Warning,
        _ => SubOutcome::Failed(format!(
            "the destination answered {:04X}{}",
            rsp.status.0,
            rsp.detail
                .error_comment
                .as_deref()
                .map(|comment| format!(": {comment}"))
                .unwrap_or_default()
        )),
    }
}

/// The bookkeeping of one retrieve (see the module documentation).
#[derive(Debug)]
pub(crate) struct Retrieve {
    queue: VecDeque<StoredDataset>,
    in_flight: usize,
    completed: usize,
    failed: usize,
    warning: usize,
    failed_uids: Vec<String>,
    cancelled: bool,
    first_failure: Option<String>,
    /// Other nodes of the cluster move part of it: the final answer waits
    /// for their outcome ([`Retrieve::remote_done`]).
    remote_waiting: bool,
    /// The instances the other nodes hold, once known.
    remote_found: Option<usize>,
    /// Of those, fetched to be sent from here (C-GET).
    remote_staged: usize,
    /// The other nodes' counts so far.
    remote: Counts,
}

/// Counts above u16 are sent as u16::MAX (the command's field is a US).
fn count(value: usize) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

impl Retrieve {
    /// A retrieve of `instances`.
    pub(crate) fn new(instances: Vec<StoredDataset>) -> Retrieve {
        Retrieve {
            queue: instances.into(),
            in_flight: 0,
            completed: 0,
            failed: 0,
            warning: 0,
            failed_uids: Vec::new(),
            cancelled: false,
            first_failure: None,
            remote_waiting: false,
            remote_found: None,
            remote_staged: 0,
            remote: Counts::default(),
        }
    }

    /// Other nodes move part of this retrieve (cluster mode): the final
    /// answer waits for their outcome.
    pub(crate) fn expect_remote(&mut self) {
        self.remote_waiting = true;
    }

    /// The other nodes hold `count` instances of it (remaining until
    /// counted).
    pub(crate) fn remote_found(&mut self, count: usize) {
        assert!(self.remote_waiting, "remote instances nobody waited for");
        assert!(self.remote_found.is_none(), "remote instances found twice");
        self.remote_found = Some(count);
    }

    /// The other nodes' counts so far (they replace the last ones).
    pub(crate) fn remote_counts(&mut self, counts: Counts) {
        debug_assert!(
            counts.total() >= self.remote.total(),
            "the other nodes' counts went back"
        );
        self.remote = counts;
    }

    /// C-GET: an instance another node holds arrived, to be sent from here.
    pub(crate) fn remote_staged(&mut self, dataset: StoredDataset) {
        self.remote_staged += 1;
        self.queue.push_back(dataset);
    }

    /// The other nodes' outcome: their final counts, failed list and
    /// first failure's reason.
    pub(crate) fn remote_done(&mut self, remote: Forwarded) {
        assert!(self.remote_waiting, "a remote outcome nobody waited for");
        self.remote_waiting = false;
        self.remote_counts(remote.counts);
        self.failed_uids.extend(remote.failed_uids);
        if let Some(reason) = remote.reason {
            self.first_failure.get_or_insert(reason);
        }
    }

    /// The other nodes' instances neither counted nor arrived here.
    fn remote_outstanding(&self) -> usize {
        self.remote_found
            .unwrap_or(0)
            .saturating_sub(self.remote_staged + self.remote.total())
    }

    /// Whether it was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// The next instance to send, unless cancelled or none is left.
    pub(crate) fn next(&mut self) -> Option<StoredDataset> {
        if self.cancelled {
            return None;
        }
        let next = self.queue.pop_front()?;
        self.in_flight += 1;
        Some(next)
    }

    /// An instance handed out by [`Retrieve::next`] and not started after
    /// all (its lane ended first, or C-CANCEL came): back to the front.
    pub(crate) fn give_back(&mut self, dataset: StoredDataset) {
        assert!(self.in_flight > 0, "given back, not handed out");
        self.in_flight -= 1;
        self.queue.push_front(dataset);
    }

    /// Whether instances are waiting for a lane.
    pub(crate) fn has_queued(&self) -> bool {
        !self.cancelled && !self.queue.is_empty()
    }

    /// A sub-operation handed out by [`Retrieve::next`] ended.
    pub(crate) fn done(&mut self, sop_instance_uid: &str, outcome: SubOutcome) {
        assert!(
            self.in_flight > 0,
            "a sub-operation ended that was not started"
        );
        self.in_flight -= 1;
        self.record(sop_instance_uid, outcome);
    }

    fn record(&mut self, sop_instance_uid: &str, outcome: SubOutcome) {
        match outcome {
            SubOutcome::Completed => self.completed += 1,
            SubOutcome::Warning => self.warning += 1,
            SubOutcome::Failed(reason) => {
                self.failed += 1;
                self.failed_uids.push(sop_instance_uid.to_owned());
                self.first_failure.get_or_insert(reason);
            }
        }
    }

    /// Every instance not yet started fails with `reason` (no lane left to
    /// carry it).
    pub(crate) fn fail_queued(&mut self, reason: &str) {
        while let Some(dataset) = self.queue.pop_front() {
            self.record(
                &dataset.triplet.sop_instance_uid,
                SubOutcome::Failed(reason.to_owned()),
            );
        }
    }

    /// C-CANCEL: nothing more is started.
    pub(crate) fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// Whether the final response is due: nothing in flight, and nothing
    /// left to start.
    pub(crate) fn is_finished(&self) -> bool {
        self.in_flight == 0 && !self.has_queued() && !self.remote_waiting
    }

    /// The counts of a pending response: the other nodes' instances not
    /// done count remaining. `None` when no pending response is due: the
    /// final one is, or the other nodes' part is not known yet (a count
    /// without it would show a smaller retrieve than the requester asked).
    pub(crate) fn pending_counts(&self) -> Option<SubOperationCounts> {
        if self.is_finished() || (self.remote_waiting && self.remote_found.is_none()) {
            return None;
        }
        let (completed, failed, warning) = self.totals();
        Some(SubOperationCounts {
            remaining: Some(count(
                self.queue.len() + self.in_flight + self.remote_outstanding(),
            )),
            completed: Some(count(completed)),
            failed: Some(count(failed)),
            warning: Some(count(warning)),
        })
    }

    /// Completed, failed and warning counts, this node's and the others'.
    pub(crate) fn totals(&self) -> (usize, usize, usize) {
        (
            self.completed + self.remote.completed,
            self.failed + self.remote.failed,
            self.warning + self.remote.warning,
        )
    }

    /// The final status, its counts, the Failed SOP Instance UID List (when
    /// the status carries one) and the Error Comment.
    pub(crate) fn final_answer(&self) -> (Status, SubOperationCounts, Vec<String>, Option<String>) {
        debug_assert!(self.is_finished(), "final answer before the end");
        let (completed, failed, warning) = self.totals();
        let status = if self.cancelled {
            Status::CANCEL
        } else if failed == 0 && warning == 0 {
            Status::SUCCESS
        } else if completed == 0 && warning == 0 {
            Status::OUT_OF_RESOURCES_SUB_OPERATIONS
        } else {
            Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        };
        let mut counts = SubOperationCounts {
            remaining: None,
            completed: Some(count(completed)),
            failed: Some(count(failed)),
            warning: Some(count(warning)),
        };
        if self.cancelled {
            counts.remaining = Some(count(self.queue.len() + self.remote_outstanding()));
        }
        let failed_uids = if status == Status::SUCCESS {
            Vec::new()
        } else {
            self.failed_uids.clone()
        };
        let comment = self
            .first_failure
            .clone()
            .filter(|_| status != Status::SUCCESS);
        (status, counts, failed_uids, comment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatasetLocation;
    use sluice_index::Triplet;

    fn dataset(n: u32) -> StoredDataset {
        StoredDataset {
            triplet: Triplet::new("1", "1.1", format!("1.1.{n}")),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            location: DatasetLocation::File {
                path: "x".into(),
                offset: 0,
                length: 10,
            },
        }
    }

    fn retrieve(count: u32) -> Retrieve {
        Retrieve::new((0..count).map(dataset).collect())
    }

    #[test]
    fn the_other_nodes_outcome_is_awaited_and_added_to_the_counts_and_the_list() {
        let mut op = retrieve(1);
        op.expect_remote();
        let a = op.next().unwrap();
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Completed);
        assert!(!op.is_finished(), "the other nodes have not answered");
        op.remote_found(5);
        op.remote_done(Forwarded {
            counts: Counts {
                completed: 3,
                warning: 0,
                failed: 2,
            },
            failed_uids: vec!["9.1".into(), "9.2".into()],
            reason: Some("node-3: connection refused".into()),
        });
        assert!(op.is_finished());
        let (status, counts, failed, comment) = op.final_answer();
        assert_eq!(status, Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES);
        assert_eq!((counts.completed, counts.failed), (Some(4), Some(2)));
        assert_eq!(failed, ["9.1", "9.2"]);
        assert_eq!(comment.as_deref(), Some("node-3: connection refused"));
    }

    #[test]
    fn the_other_nodes_instances_count_remaining_until_counted_or_staged_and_after_a_cancel() {
        let mut op = retrieve(2);
        op.expect_remote();
        assert!(
            op.pending_counts().is_none(),
            "the other nodes' part unknown"
        );
        op.remote_found(10);
        let a = op.next().unwrap();
        assert_eq!(op.pending_counts().unwrap().remaining, Some(12));
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Completed);
        // A holder's pending response: 3 completed, 1 failed.
        op.remote_counts(Counts {
            completed: 3,
            warning: 0,
            failed: 1,
        });
        let counts = op.pending_counts().unwrap();
        assert_eq!(
            (counts.remaining, counts.completed, counts.failed),
            (Some(7), Some(4), Some(1))
        );
        // C-GET: two fetched instances queued here; still remaining until sent.
        op.remote_staged(dataset(100));
        op.remote_staged(dataset(101));
        assert_eq!(op.pending_counts().unwrap().remaining, Some(7));
        op.cancel();
        assert!(!op.is_finished(), "the other nodes have not answered");
        op.remote_done(Forwarded {
            counts: Counts {
                completed: 4,
                warning: 0,
                failed: 1,
            },
            ..Forwarded::default()
        });
        assert!(op.is_finished());
        let (status, counts, _, _) = op.final_answer();
        assert_eq!(status, Status::CANCEL);
        // Queued here: 1 local + 2 fetched; not done at the holders: 3.
        assert_eq!(
            (counts.remaining, counts.completed, counts.failed),
            (Some(6), Some(5), Some(1))
        );
    }

    #[test]
    fn all_completed_is_success_without_a_list() {
        let mut op = retrieve(2);
        let a = op.next().unwrap();
        let b = op.next().unwrap();
        assert!(op.next().is_none());
        assert_eq!(op.pending_counts().unwrap().remaining, Some(2));
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Completed);
        assert!(!op.is_finished());
        op.done(&b.triplet.sop_instance_uid, SubOutcome::Completed);
        assert!(op.is_finished());
        let (status, counts, failed, comment) = op.final_answer();
        assert_eq!(status, Status::SUCCESS);
        assert_eq!(
            (counts.completed, counts.failed, counts.remaining),
            (Some(2), Some(0), None)
        );
        assert!(failed.is_empty() && comment.is_none());
    }

    #[test]
    fn some_failed_is_b000_with_the_failed_list_and_the_first_reason() {
        let mut op = retrieve(3);
        let a = op.next().unwrap();
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Completed);
        let b = op.next().unwrap();
        op.done(
            &b.triplet.sop_instance_uid,
            SubOutcome::Failed("no syntax".into()),
        );
        let c = op.next().unwrap();
        op.done(&c.triplet.sop_instance_uid, SubOutcome::Warning);
        let (status, counts, failed, comment) = op.final_answer();
        assert_eq!(status, Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES);
        assert_eq!(
            (counts.completed, counts.failed, counts.warning),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(failed, vec![b.triplet.sop_instance_uid]);
        assert_eq!(comment.as_deref(), Some("no syntax"));
    }

    #[test]
    fn nothing_sent_is_a702_and_warnings_alone_are_b000() {
        let mut op = retrieve(3);
        let a = op.next().unwrap();
        op.fail_queued("destination unreachable");
        assert!(!op.is_finished(), "one still in flight");
        op.done(
            &a.triplet.sop_instance_uid,
            SubOutcome::Failed("aborted".into()),
        );
        let (status, counts, failed, comment) = op.final_answer();
        assert_eq!(status, Status::OUT_OF_RESOURCES_SUB_OPERATIONS);
        assert_eq!(counts.failed, Some(3));
        assert_eq!(failed.len(), 3);
        assert_eq!(comment.as_deref(), Some("destination unreachable"));

        let mut op = retrieve(1);
        let a = op.next().unwrap();
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Warning);
        assert_eq!(
            op.final_answer().0,
            Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        );
    }

    #[test]
    fn cancel_stops_handing_out_and_counts_the_rest_remaining() {
        let mut op = retrieve(5);
        let a = op.next().unwrap();
        op.cancel();
        assert!(op.next().is_none());
        assert!(!op.is_finished());
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Completed);
        assert!(op.is_finished());
        let (status, counts, failed, _) = op.final_answer();
        assert_eq!(status, Status::CANCEL);
        assert_eq!((counts.completed, counts.remaining), (Some(1), Some(4)));
        assert!(failed.is_empty());
    }

    #[test]
    fn an_instance_given_back_is_handed_out_again_or_counted_remaining() {
        let mut op = retrieve(2);
        let a = op.next().unwrap();
        let b = op.next().unwrap();
        op.give_back(b.clone());
        assert_eq!(op.pending_counts().unwrap().remaining, Some(2));
        op.done(&a.triplet.sop_instance_uid, SubOutcome::Completed);
        let again = op.next().unwrap();
        assert_eq!(again.triplet, b.triplet);
        op.cancel();
        op.give_back(again);
        assert!(op.is_finished());
        assert_eq!(op.final_answer().1.remaining, Some(1));
    }

    #[test]
    fn an_empty_retrieve_is_finished_at_once() {
        let op = retrieve(0);
        assert!(op.is_finished());
        assert_eq!(op.final_answer().0, Status::SUCCESS);
    }
}
