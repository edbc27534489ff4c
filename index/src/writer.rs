//! The writer thread: the one owner of every LMDB write transaction.
//!
//! Cores submit [`Batch`]es over a bounded channel ([`IndexWriter`]); the
//! writer takes one, coalesces whatever else is already queued (up to a bound),
//! applies them all in one transaction, commits (one fsync pair for the whole
//! group: group commit) and only then answers each batch. A write transaction
//! is opened and committed on this thread only (heed requires it), so no
//! `RwTxn` ever crosses threads.
//!
//! Failure isolation: if applying a coalesced group fails (map full, a damaged
//! record), the transaction is aborted (nothing written) and each batch is
//! re-run alone, so one batch's failure does not fail its neighbours. A failed
//! commit is final: every batch of that transaction gets the error and is never
//! re-run into a success (what was on disk is unknown until LMDB reopens).
//!
//! Every batch gets exactly one answer: a batch that is dropped unanswered (the
//! writer stopping, or a caller dropping a batch it could not submit) answers
//! [`IndexError::WriterUnavailable`] from its destructor.

use std::fmt;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::apply::Apply;
use crate::error::IndexError;
use crate::index::Shared;
use crate::ops::{BatchResult, ItemResult, WriteOp};

/// Where a batch's answer goes.
enum ReplyTo {
    Channel(Sender<BatchResult>),
    Callback(Box<dyn FnOnce(BatchResult) + Send>),
}

/// Sends a batch's answer exactly once (from `Drop` if nobody else did).
struct Reply(Option<ReplyTo>);

impl Reply {
    fn send(mut self, result: BatchResult) {
        if let Some(reply_to) = self.0.take() {
            match reply_to {
                // The submitter may have given up waiting; that is its choice.
                ReplyTo::Channel(sender) => {
                    let _ = sender.send(result);
                }
                ReplyTo::Callback(callback) => {
                    // A panicking callback must not take the writer (and every
                    // other core's batches) down with it.
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(result)));
                    if outcome.is_err() {
                        tracing::error!("an index batch callback panicked; the writer carries on");
                    }
                }
            }
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(reply_to) = self.0.take() {
            Reply(Some(reply_to)).send(Err(IndexError::WriterUnavailable));
        }
    }
}

/// Write operations committed together, with where their answer goes.
pub struct Batch {
    ops: Vec<WriteOp>,
    reply: Reply,
}

impl fmt::Debug for Batch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Batch")
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// A batch answered through a channel (the receiver gets exactly one message).
    pub fn with_channel(ops: Vec<WriteOp>) -> (Batch, crossbeam_channel::Receiver<BatchResult>) {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        (
            Batch {
                ops,
                reply: Reply(Some(ReplyTo::Channel(sender))),
            },
            receiver,
        )
    }

    /// A batch answered by calling `callback` on the writer thread (keep it
    /// short: wake the submitting core, hand it the result, return). It must
    /// not submit to the writer and wait: that would wait for itself.
    pub fn with_callback(
        ops: Vec<WriteOp>,
        callback: impl FnOnce(BatchResult) + Send + 'static,
    ) -> Batch {
        Batch {
            ops,
            reply: Reply(Some(ReplyTo::Callback(Box::new(callback)))),
        }
    }

    /// The operations.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }
}

/// Messages to the writer thread.
pub(crate) enum Message {
    Batch(Batch),
    /// Finish what is queued, then stop.
    Shutdown,
}

/// Why a batch was not accepted; the batch is handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The writer's queue is full: back off (stop reading sockets) and retry.
    #[error("the index writer queue is full")]
    Full(Batch),
    /// The writer has stopped.
    #[error("the index writer has stopped")]
    Closed(Batch),
    /// More operations than `batch_ops_max`.
    #[error("a batch of {ops} operations exceeds the limit of {limit}")]
    TooLarge {
        /// The batch.
        batch: Batch,
        /// Its operation count.
        ops: usize,
        /// The limit.
        limit: usize,
    },
}

impl SubmitError {
    /// The batch that was not accepted.
    pub fn into_batch(self) -> Batch {
        match self {
            SubmitError::Full(batch)
            | SubmitError::Closed(batch)
            | SubmitError::TooLarge { batch, .. } => batch,
        }
    }
}

/// A cheap, cloneable handle for submitting batches to the writer thread.
#[derive(Clone)]
pub struct IndexWriter {
    sender: Sender<Message>,
    batch_ops_max: usize,
}

impl fmt::Debug for IndexWriter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IndexWriter")
            .field("queued", &self.sender.len())
            .field("batch_ops_max", &self.batch_ops_max)
            .finish()
    }
}

impl IndexWriter {
    pub(crate) fn new(sender: Sender<Message>, batch_ops_max: usize) -> Self {
        IndexWriter {
            sender,
            batch_ops_max,
        }
    }

    fn check_size(&self, batch: Batch) -> Result<Batch, SubmitError> {
        let ops = batch.ops.len();
        if ops > self.batch_ops_max {
            return Err(SubmitError::TooLarge {
                batch,
                ops,
                limit: self.batch_ops_max,
            });
        }
        Ok(batch)
    }

    /// Queues a batch without blocking (for the cores): `Full` means back off.
    pub fn try_submit(&self, batch: Batch) -> Result<(), SubmitError> {
        let batch = self.check_size(batch)?;
        self.sender
            .try_send(Message::Batch(batch))
            .map_err(|error| match error {
                TrySendError::Full(Message::Batch(batch)) => SubmitError::Full(batch),
                TrySendError::Disconnected(Message::Batch(batch)) => SubmitError::Closed(batch),
                // Only batches are sent through this path.
                TrySendError::Full(Message::Shutdown)
                | TrySendError::Disconnected(Message::Shutdown) => {
                    unreachable!("try_submit sends batches only")
                }
            })
    }

    /// Queues a batch, blocking while the queue is full.
    pub fn submit(&self, batch: Batch) -> Result<(), SubmitError> {
        let batch = self.check_size(batch)?;
        self.sender
            .send(Message::Batch(batch))
            .map_err(|error| match error.0 {
                Message::Batch(batch) => SubmitError::Closed(batch),
                Message::Shutdown => unreachable!("submit sends batches only"),
            })
    }

    /// Submits `ops` as one batch and waits for the answer (tools and tests;
    /// the engine's cores use [`IndexWriter::try_submit`] with a callback).
    pub fn execute(&self, ops: Vec<WriteOp>) -> BatchResult {
        let (batch, receiver) = Batch::with_channel(ops);
        if let Err(error) = self.submit(batch) {
            return match error {
                SubmitError::TooLarge { ops, limit, batch } => {
                    drop(batch);
                    // The dropped batch answered WriterUnavailable; say why instead.
                    let _ = receiver.recv();
                    Err(IndexError::InvalidBatch { ops, limit })
                }
                other => {
                    drop(other);
                    Err(IndexError::WriterUnavailable)
                }
            };
        }
        receiver
            .recv()
            .unwrap_or(Err(IndexError::WriterUnavailable))
    }

    /// Batches waiting in the queue.
    pub fn queued(&self) -> usize {
        self.sender.len()
    }
}

/// Tuning of the writer loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterLimits {
    /// Stop coalescing once a transaction holds this many operations.
    pub(crate) group_ops_max: usize,
}

/// A failed transaction, and whether the failure came before the commit
/// (nothing written: safe to re-run) or from the commit itself (final).
struct TxnFailure {
    error: IndexError,
    during_commit: bool,
}

/// The writer thread's body: returns when told to shut down (after draining
/// the queue) or when every sender is gone.
pub(crate) fn run_writer(shared: Arc<Shared>, receiver: Receiver<Message>, limits: WriterLimits) {
    let mut stopping = false;
    while !stopping {
        let first = match receiver.recv() {
            Ok(Message::Batch(batch)) => batch,
            Ok(Message::Shutdown) => {
                stopping = true;
                match receiver.try_recv() {
                    Ok(Message::Batch(batch)) => batch,
                    _ => break,
                }
            }
            Err(_) => break,
        };
        let mut group_ops = first.ops.len();
        let mut group = vec![first];
        while group_ops < limits.group_ops_max {
            match receiver.try_recv() {
                Ok(Message::Batch(batch)) => {
                    group_ops += batch.ops.len();
                    group.push(batch);
                }
                Ok(Message::Shutdown) => stopping = true,
                Err(_) => break,
            }
        }
        commit_group(&shared, group);
        if stopping {
            // Finish everything already queued before stopping.
            let mut rest = Vec::new();
            while let Ok(message) = receiver.try_recv() {
                if let Message::Batch(batch) = message {
                    rest.push(batch);
                }
            }
            for batch in rest {
                commit_group(&shared, vec![batch]);
            }
        }
    }
}

fn commit_group(shared: &Shared, group: Vec<Batch>) {
    let results = run_transaction(shared, &group);
    match results {
        Ok(per_batch) => {
            for (batch, result) in group.into_iter().zip(per_batch) {
                batch.reply.send(Ok(result));
            }
        }
        Err(failure) if !failure.during_commit && group.len() > 1 => {
            tracing::debug!(error = %failure.error, batches = group.len(), "index group failed; re-running batches alone");
            for batch in group {
                let single = std::slice::from_ref(&batch);
                let result = run_transaction(shared, single)
                    .map(|mut per_batch| per_batch.pop().unwrap_or_default())
                    .map_err(|failure| failure.error);
                batch.reply.send(result);
            }
        }
        Err(failure) => {
            for batch in group {
                batch.reply.send(Err(failure.error.clone()));
            }
        }
    }
}

fn run_transaction(shared: &Shared, group: &[Batch]) -> Result<Vec<Vec<ItemResult>>, TxnFailure> {
    let before_commit = |error| TxnFailure {
        error,
        during_commit: false,
    };
    let mut txn = shared.env.write_txn().map_err(|error| {
        before_commit(IndexError::from_heed("begin write", error, shared.limits))
    })?;
    let mut results = Vec::with_capacity(group.len());
    {
        let mut apply = Apply::new(&mut txn, shared.tables, shared.limits);
        for batch in group {
            let mut items = Vec::with_capacity(batch.ops.len());
            for op in &batch.ops {
                items.push(apply.apply(op).map_err(before_commit)?);
            }
            results.push(items);
        }
        apply.flush().map_err(before_commit)?;
    }
    txn.commit().map_err(|error| TxnFailure {
        error: IndexError::from_heed("commit", error, shared.limits),
        during_commit: true,
    })?;
    Ok(results)
}
