//! The writer thread: the one owner of every LMDB write transaction.
//!
//! Cores submit [`Batch`]es over a bounded channel ([`IndexWriter`]); the
//! writer takes one, coalesces whatever else is already queued (up to a bound),
//! applies them all in one transaction and commits (group commit). A write
//! transaction is opened and committed on this thread only (heed requires
//! it), so no `RwTxn` ever crosses threads.
//!
//! Durability: the environment runs with `MDB_NOMETASYNC` (see
//! `sluice_io::lmdb::open_lmdb_env`), so a commit flushes its data pages,
//! then writes the meta page that makes them current *without* flushing it.
//! LMDB writes that page only after its pages are on disk, so whatever
//! reaches the disk is a consistent state; but the last commit is not
//! durable until the data file is flushed once more. A batch is therefore
//! answered only after such a flush, run by the syncer thread: one
//! `fdatasync` (begun after the commit returned) for every group handed to it
//! meanwhile, while the writer goes on with the next commit. A batch marked
//! [`Batch::answered_at_commit`] is answered at commit instead, for a
//! submitter that can rebuild what a crash takes (the engine's C-STORE
//! batches: every file they name is sealed and durable, and start-up recovery
//! indexes sealed files the index lost).
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
//!
//! The SOP index (`sop_index`): a transaction that stores instances takes
//! the next *group* number, logs the candidates it adds in `sop_pending`
//! under that number, writes them to the LSM tree (into the OS's buffers)
//! and then commits. The syncer flushes the LSM tree's journal about once a
//! second ([`SOP_INDEX_FLUSH_INTERVAL`]); a later transaction deletes the
//! `sop_pending` groups that flush covered. Each transaction first adds to
//! the tree the groups another process logged since the last one (an
//! operator command beside the server); when idle, the writer does that at
//! least once a second, and, if another process owns the tree, tries to take
//! it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::apply::{Apply, SopChanges};
use crate::error::{is_nearly_full, IndexError, NEARLY_FULL_BYTES};
use crate::index::Shared;
use crate::keys::group_key;
use crate::ops::{BatchResult, ItemResult, WriteOp};
use crate::sop_index::{encode_pending, next_group_logged};
use crate::tables::META_NEXT_SOP_GROUP;

/// How often the syncer flushes the SOP index's journal when it has
/// unflushed groups. Until then their candidates are also in `sop_pending`
/// (in LMDB), so this bounds only how long those entries live and how much
/// `open` adds again after a crash.
pub(crate) const SOP_INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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

/// When a committed batch is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerAt {
    /// After a flush made its commit durable (the default).
    Flushed,
    /// As soon as its transaction commits ([`Batch::answered_at_commit`]).
    Committed,
    /// Once its operations are applied in the write transaction, just
    /// before the commit ([`Batch::answered_when_applied`]).
    Applied,
}

/// Write operations committed together, with where their answer goes.
pub struct Batch {
    ops: Vec<WriteOp>,
    reply: Reply,
    answer_at: AnswerAt,
    /// What it was answered before its transaction committed: a re-run
    /// after a failed commit must decide the same.
    answered_early: Option<Vec<ItemResult>>,
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
                answer_at: AnswerAt::Flushed,
                answered_early: None,
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
            answer_at: AnswerAt::Flushed,
            answered_early: None,
        }
    }

    /// Answer this batch as soon as its transaction commits, before the
    /// flush that makes the commit durable (see the module comment). Only
    /// for a submitter that can rebuild, after a crash, what the last
    /// commit held: a crash may lose it although it was answered.
    pub fn answered_at_commit(mut self) -> Batch {
        self.answer_at = AnswerAt::Committed;
        self
    }

    /// Answer this batch once its operations are applied in the write
    /// transaction (every decision made, in memory), before the commit
    /// writes anything: the submitter's senders go on while the commit's
    /// `fdatasync` runs. For a submitter that can rebuild what a crash
    /// *or a failed commit* takes: every record the batch names is durable
    /// in an open segment past the index's indexed end, and start-up
    /// recovery indexes such records again (docs/design/index-format.md,
    /// "Answered when applied"). If the commit fails, the writer re-runs
    /// the same transaction (checking it decides what was answered); if no
    /// re-run commits, the writer stops taking writes
    /// ([`IndexError::WriterHalted`]) so that no later transaction hides
    /// the answered records from that recovery, until that transaction
    /// commits when tried again (once a second) or a restart. Readers ([`Index::read`](crate::Index::read))
    /// begun after the answer wait for the commit.
    pub fn answered_when_applied(mut self) -> Batch {
        self.answer_at = AnswerAt::Applied;
        self
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
    /// Zeros written ahead of the data file's end at a time (0: none; see
    /// [`keep_zeros_ahead`]).
    pub(crate) zero_ahead_bytes: usize,
}

/// Written zeros kept ahead of the data file's last page
/// ([`IndexOptions::zero_ahead_bytes`](crate::IndexOptions)): after a
/// commit, between commits (the writer is the only writer of this
/// process, and it holds LMDB's write lock for the write), when less than
/// half a chunk of slack is left, one chunk of zeros is written past the
/// file's end, so the pages the next commits add overwrite written blocks
/// and their flushes do not change the file's size (no journal commit:
/// docs/design/segments.md, "Written blocks"). A chunk is small (a few
/// MiB written into the page cache) so no commit waits long behind it;
/// the syncer's next flush makes it durable with the commit it covers.
#[derive(Debug)]
struct ZeroAhead {
    chunk: usize,
    page_bytes: u64,
    /// The file's size when last read (it only grows while open).
    known_size: u64,
    failed: bool,
}

impl ZeroAhead {
    fn new(shared: &Shared, chunk: usize) -> ZeroAhead {
        ZeroAhead {
            chunk,
            page_bytes: u64::from(shared.env.unnamed_database_stat().page_size),
            known_size: 0,
            failed: false,
        }
    }

    /// Writes a chunk of zeros past the data file's end when the slack past
    /// LMDB's last page is under half a chunk (see the type).
    fn keep(&mut self, shared: &Shared) {
        if self.chunk == 0 || self.failed {
            return;
        }
        let used = |shared: &Shared| {
            (shared.env.info().last_page_number as u64 + 1).saturating_mul(self.page_bytes)
        };
        let slack_min = (self.chunk / 2) as u64;
        if self.known_size.saturating_sub(used(shared)) >= slack_min {
            return;
        }
        let result = shared
            .env
            .write_txn()
            .map_err(std::io::Error::other)
            .and_then(|txn| {
                let written = sluice_io::lmdb::keep_zeros_ahead(
                    &shared.env,
                    &txn,
                    used(shared),
                    slack_min,
                    self.chunk,
                );
                txn.abort();
                written
            })
            .and_then(|_| shared.env.real_disk_size().map_err(std::io::Error::other));
        match result {
            Ok(size) => self.known_size = size,
            Err(error) => {
                // Only the flushes' speed is at stake: stop trying.
                tracing::warn!(%error, "cannot write zeros ahead of the index's data file; its flushes will commit the journal as the file grows");
                self.failed = true;
            }
        }
    }
}

/// The pauses before each re-run of a failed commit whose batches were
/// answered when applied: a full disk or a passing I/O error may clear in
/// that time. Then the writer halts.
const COMMIT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_millis(1000),
];

/// How often a halted writer tries its stalled transaction again.
const STALLED_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The writer's progress through SOP index groups.
#[derive(Debug)]
struct GroupState {
    /// At least the number the next group takes (`meta/next_sop_group` is
    /// read at every transaction, as another process may have logged groups).
    next: u64,
    /// `meta/next_sop_group` as of this writer's last transaction: groups
    /// from here up to its current value were logged by another process.
    seen_logged: u64,
    /// Groups in `sop_pending` that this process wrote to the tree, with the
    /// number of the tree batch that wrote them, oldest first: deleted once
    /// a flush covered their batch.
    pending: VecDeque<(u64, u64)>,
    /// The writer's own flushes of the SOP index (only without a syncer
    /// thread).
    fallback_flushes: SopIndexFlushes,
    /// When this writer let go of a poisoned tree that it has not reopened
    /// yet, and when it last tried: it tries again at most once per
    /// [`SOP_INDEX_FLUSH_INTERVAL`], busy or idle.
    reopening: Option<Instant>,
    /// How long the last transaction's commit took (its pages written,
    /// the data file's `fdatasync`, the meta page), for the timing log.
    last_commit: Duration,
    /// The number of the last transaction that answered batches when
    /// applied ([`Visibility`](crate::visibility::Visibility)).
    early_txn: u64,
    /// Set when a commit answered when applied failed for good: every
    /// later batch gets it ([`IndexError::WriterHalted`]).
    halted: Option<IndexError>,
    /// The batches answered early of the transaction that halted the
    /// writer (their replies spent), tried again at most once per
    /// [`STALLED_RETRY_INTERVAL`]: if it commits (deciding what was
    /// answered), the writer takes batches again without a restart.
    stalled: Vec<Batch>,
    /// When `stalled` was last tried.
    stalled_tried: Instant,
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
    let syncer = Syncer::start(shared.clone());
    let mut groups = GroupState {
        next: 0,
        seen_logged: 0,
        pending: VecDeque::new(),
        fallback_flushes: SopIndexFlushes::new(),
        reopening: None,
        last_commit: Duration::ZERO,
        early_txn: 0,
        halted: None,
        stalled: Vec::new(),
        stalled_tried: Instant::now(),
    };
    if let Err(error) = groups.catch_up_with(&shared) {
        tracing::warn!(%error, "cannot read the SOP index group counter; the first transaction will");
    }
    let mut zero_ahead = ZeroAhead::new(&shared, limits.zero_ahead_bytes);
    let mut stopping = false;
    while !stopping {
        let first = match receiver.recv_timeout(SOP_INDEX_FLUSH_INTERVAL) {
            Ok(Message::Batch(batch)) => batch,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                maintain_sop_index(&shared, &syncer, &mut groups);
                continue;
            }
            Ok(Message::Shutdown) => {
                stopping = true;
                match receiver.try_recv() {
                    Ok(Message::Batch(batch)) => batch,
                    _ => break,
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
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
        commit_group(&shared, group, &syncer, &mut groups);
        zero_ahead.keep(&shared);
        if stopping {
            // Finish everything already queued before stopping.
            let mut rest = Vec::new();
            while let Ok(message) = receiver.try_recv() {
                if let Message::Batch(batch) = message {
                    rest.push(batch);
                }
            }
            for batch in rest {
                commit_group(&shared, vec![batch], &syncer, &mut groups);
            }
        }
    }
    syncer.finish(&shared, &mut groups.fallback_flushes);
}

impl GroupState {
    /// Starts from `meta/next_sop_group` as it is now (after the SOP index
    /// was acquired and brought up to date, which empties `sop_pending`).
    fn catch_up_with(&mut self, shared: &Shared) -> Result<(), IndexError> {
        let rtxn = shared
            .env
            .read_txn()
            .map_err(|error| IndexError::from_heed("begin read", error, shared.limits))?;
        let logged = next_group_logged(&rtxn, &shared.tables, shared.limits)?;
        self.seen_logged = logged;
        self.next = self.next.max(logged);
        self.pending.clear();
        Ok(())
    }
}

/// The writer's work when idle: take the SOP index if another process let
/// it go; else add the groups another process logged, and delete the logged
/// groups a flush covered (one empty transaction does both).
fn maintain_sop_index(shared: &Shared, syncer: &Syncer, groups: &mut GroupState) {
    if groups.halted.is_some() {
        resume_if_stalled_commits(shared, groups);
        return;
    }
    let sop_index = &shared.sop_index;
    release_if_poisoned(shared, groups);
    if !sop_index.is_owned() {
        take_sop_index(shared, groups);
        return;
    }
    let foreign = shared
        .env
        .read_txn()
        .map_err(|error| IndexError::from_heed("begin read", error, shared.limits))
        .and_then(|rtxn| next_group_logged(&rtxn, &shared.tables, shared.limits))
        .is_ok_and(|logged| logged > groups.seen_logged);
    let durable = sop_index.durable_batch();
    let deletable = groups
        .pending
        .front()
        .is_some_and(|(_, batch)| *batch <= durable);
    if foreign || deletable {
        commit_group(shared, Vec::new(), syncer, groups);
    }
}

/// Lets go of the SOP index's tree if a failed write or flush poisoned it
/// (fjall refuses every later write to it): until [`take_sop_index`]
/// reopens it, this writer works as one without the tree (exact scans of
/// `instances`, its candidates logged in `sop_pending`), and that reopening
/// is crash recovery: fjall's journal keeps every batch a flush made
/// durable, and `sop_pending` every group no flush covered.
fn release_if_poisoned(shared: &Shared, groups: &mut GroupState) {
    if shared.sop_index.release_if_poisoned() {
        tracing::warn!(
            "the SOP Instance UID index refused a write after a failed write or flush (a full \
             disk, if its file system is nearly full); it is reopened from its journal as soon \
             as that succeeds, without a restart"
        );
        groups.reopening = Some(Instant::now());
    }
}

/// Takes the SOP index's tree (another process let it go, or this writer
/// let go of a poisoned one) and brings it up to date.
fn take_sop_index(shared: &Shared, groups: &mut GroupState) {
    if groups.reopening.is_some() {
        groups.reopening = Some(Instant::now());
    }
    match shared
        .sop_index
        .acquire(&shared.env, &shared.tables, shared.limits)
    {
        Ok(Some(catch_up)) => {
            tracing::info!(
                added = catch_up.added,
                rebuilt = catch_up.rebuilt,
                reopened = groups.reopening.is_some(),
                "this process now owns the SOP Instance UID index"
            );
            groups.reopening = None;
            if let Err(error) = groups.catch_up_with(shared) {
                tracing::warn!(%error, "cannot read the SOP index group counter");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot take the SOP Instance UID index"),
    }
}

/// Before a transaction: lets go of a poisoned tree, and tries to reopen
/// one let go of (at most once per [`SOP_INDEX_FLUSH_INTERVAL`]: a writer
/// kept busy never reaches [`maintain_sop_index`]).
fn keep_sop_index(shared: &Shared, groups: &mut GroupState) {
    release_if_poisoned(shared, groups);
    if groups
        .reopening
        .is_some_and(|tried| tried.elapsed() >= SOP_INDEX_FLUSH_INTERVAL)
    {
        take_sop_index(shared, groups);
    }
}

/// Committed batches' answers, held until a flush makes them durable.
type Committed = Vec<(Reply, Vec<ItemResult>)>;

/// Answers `committed` after `synced` (the flush that covered them).
fn answer_synced(committed: Committed, synced: &Result<(), IndexError>) {
    for (reply, items) in committed {
        match synced {
            Ok(()) => reply.send(Ok(items)),
            Err(error) => reply.send(Err(error.clone())),
        }
    }
}

/// Flushes the data file (carrying the last commit's meta page).
fn flush(shared: &Shared) -> Result<(), IndexError> {
    shared.env.force_sync().map_err(|error| {
        let error = IndexError::from_heed("flush", error, shared.limits);
        tracing::error!(%error, "index flush failed; the batches it covered fail");
        error
    })
}

/// When the SOP index's journal was last flushed.
#[derive(Debug)]
struct SopIndexFlushes {
    last: Instant,
}

impl SopIndexFlushes {
    fn new() -> SopIndexFlushes {
        SopIndexFlushes {
            last: Instant::now(),
        }
    }

    /// Flushes the journal if it holds groups not yet flushed and the last
    /// flush is `SOP_INDEX_FLUSH_INTERVAL` old (or `force`).
    fn flush_if_due(&mut self, shared: &Shared, force: bool) {
        let index = &shared.sop_index;
        let due = force || self.last.elapsed() >= SOP_INDEX_FLUSH_INTERVAL;
        if !due || index.written_batch() <= index.durable_batch() {
            return;
        }
        self.last = Instant::now();
        // A failure poisons the tree (not flushed again: the writer reopens
        // it, see `release_if_poisoned`).
        if let Err(error) = index.persist() {
            tracing::error!(%error, "SOP index flush failed; the writer reopens the index");
        }
    }
}

/// The syncer thread (see the module comment).
struct Syncer {
    sender: Option<Sender<Committed>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    fn start(shared: Arc<Shared>) -> Syncer {
        let (sender, receiver) = crossbeam_channel::unbounded::<Committed>();
        let spawned = std::thread::Builder::new()
            .name("sluice-index-sync".into())
            .spawn(move || {
                let mut sop_index = SopIndexFlushes::new();
                loop {
                    match receiver.recv_timeout(SOP_INDEX_FLUSH_INTERVAL) {
                        Ok(first) => {
                            let mut pending = first;
                            for more in receiver.try_iter() {
                                pending.extend(more);
                            }
                            answer_synced(pending, &flush(&shared));
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                    sop_index.flush_if_due(&shared, false);
                }
                sop_index.flush_if_due(&shared, true);
            });
        match spawned {
            Ok(thread) => Syncer {
                sender: Some(sender),
                thread: Some(thread),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot start the index sync thread; the writer flushes itself");
                Syncer {
                    sender: None,
                    thread: None,
                }
            }
        }
    }

    /// Answers `committed` once a flush made it durable: on the syncer
    /// thread, or here if there is none (which then also flushes the SOP
    /// index when due).
    fn answer_when_durable(
        &self,
        shared: &Shared,
        committed: Committed,
        sop_index: &mut SopIndexFlushes,
    ) {
        let committed = match &self.sender {
            Some(_) if committed.is_empty() => return,
            Some(sender) => match sender.send(committed) {
                Ok(()) => return,
                Err(crossbeam_channel::SendError(committed)) => committed,
            },
            None => committed,
        };
        if !committed.is_empty() {
            answer_synced(committed, &flush(shared));
        }
        sop_index.flush_if_due(shared, false);
    }

    /// Lets the thread flush and answer what it holds, and waits for it.
    fn finish(mut self, shared: &Shared, sop_index: &mut SopIndexFlushes) {
        self.sender = None;
        match self.thread.take() {
            Some(thread) => {
                let _ = thread.join();
            }
            None => sop_index.flush_if_due(shared, true),
        }
    }
}

/// Answers a committed batch: at once if it asked to be, else after a flush
/// (one answered when applied was answered already: its reply is spent).
fn answer_committed(batch: Batch, items: Vec<ItemResult>, durable: &mut Committed) {
    if batch.answer_at == AnswerAt::Flushed {
        durable.push((batch.reply, items));
    } else {
        batch.reply.send(Ok(items));
    }
}

/// Runs `batches` in one transaction, answering those answered when applied
/// just before its commit. If that commit fails after such an answer, the
/// same transaction is run again, in order and alone, after each of
/// [`COMMIT_RETRY_DELAYS`], each re-run checked to decide what was answered
/// before it may commit; if none commits, the writer halts
/// (`groups.halted`). Either way the transaction is settled for readers
/// when this returns.
fn run_settled(
    shared: &Shared,
    batches: &mut [Batch],
    groups: &mut GroupState,
) -> Result<Vec<Vec<ItemResult>>, TxnFailure> {
    resume_if_stalled_commits(shared, groups);
    if let Some(halted) = &groups.halted {
        return Err(TxnFailure {
            error: halted.clone(),
            during_commit: false,
        });
    }
    let first = run_transaction(shared, batches, groups, BeforeCommit::AnswerEarly);
    let answered_early = batches.iter().any(|batch| batch.answered_early.is_some());
    let failure = match first {
        Err(failure) if answered_early => failure,
        other => {
            shared.visibility.settle(groups.early_txn);
            return other;
        }
    };
    debug_assert!(
        failure.during_commit,
        "answered early only just before the commit"
    );
    let mut last = failure.error;
    for (attempt, delay) in COMMIT_RETRY_DELAYS.into_iter().enumerate() {
        tracing::warn!(error = %last, attempt = attempt + 1, "an index commit failed after its batches were answered; running it again");
        std::thread::sleep(delay);
        keep_sop_index(shared, groups);
        match run_transaction(shared, batches, groups, BeforeCommit::CheckAnswered) {
            Ok(per_batch) => {
                tracing::info!(
                    attempt = attempt + 1,
                    "the index commit answered before it failed went through when run again"
                );
                shared.visibility.settle(groups.early_txn);
                return Ok(per_batch);
            }
            Err(failure) => last = failure.error,
        }
    }
    let halted = IndexError::WriterHalted {
        reason: Arc::from(last.to_string()),
    };
    tracing::error!(
        error = %last,
        "an index commit whose batches were already answered failed, and so did every re-run: the index writer \
         stops taking writes (C-STOREs are answered A700) so that no later transaction hides those \
         instances' records from start-up recovery; restart the server once the cause is fixed, \
         and recovery indexes them again"
    );
    groups.halted = Some(halted.clone());
    groups.stalled = batches
        .iter()
        .filter(|batch| batch.answered_early.is_some())
        .map(|batch| Batch {
            ops: batch.ops.clone(),
            reply: Reply(None),
            answer_at: AnswerAt::Applied,
            answered_early: batch.answered_early.clone(),
        })
        .collect();
    groups.stalled_tried = Instant::now();
    shared.visibility.set_halted(true);
    shared.visibility.settle(groups.early_txn);
    Err(TxnFailure {
        error: halted,
        during_commit: true,
    })
}

fn commit_group(shared: &Shared, group: Vec<Batch>, syncer: &Syncer, groups: &mut GroupState) {
    let mut group = group;
    if groups.halted.is_none() {
        keep_sop_index(shared, groups);
    }
    let started = std::time::SystemTime::now();
    let results = run_settled(shared, &mut group, groups);
    // The transaction's size and time (docs/design/segments.md, "The 40 KB
    // path, session 10"), with its start to line it up with the cores'.
    // The counts walk the group's operations only when the log is on.
    tracing::debug!(
        target: "sluice::index::timing",
        batches = group.len(),
        ops = group.iter().map(|batch| batch.ops.len()).sum::<usize>(),
        stores = group
            .iter()
            .flat_map(|batch| &batch.ops)
            .filter(|op| matches!(op, WriteOp::Store(_)))
            .count(),
        started_at_us = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64,
        txn_us = started.elapsed().unwrap_or_default().as_micros() as u64,
        commit_us = groups.last_commit.as_micros() as u64,
        "index transaction"
    );
    let mut durable = Vec::new();
    match results {
        Ok(per_batch) => {
            for (batch, items) in group.into_iter().zip(per_batch) {
                answer_committed(batch, items, &mut durable);
            }
        }
        Err(failure) if !failure.during_commit && group.len() > 1 => {
            tracing::debug!(error = %failure.error, batches = group.len(), "index group failed; re-running batches alone");
            for mut batch in group {
                let single = std::slice::from_mut(&mut batch);
                match run_settled(shared, single, groups) {
                    Ok(mut per_batch) => {
                        let items = per_batch.pop().unwrap_or_default();
                        answer_committed(batch, items, &mut durable);
                    }
                    Err(failure) => batch.reply.send(Err(failure.error)),
                }
            }
        }
        Err(failure) => {
            for batch in group {
                batch.reply.send(Err(failure.error.clone()));
            }
        }
    }
    syncer.answer_when_durable(shared, durable, &mut groups.fallback_flushes);
}

/// Writes the transaction's SOP index work: adds to the tree the groups
/// another process logged since this writer's last transaction (first, so
/// this transaction's decisions see them); deletes the logged groups the
/// tree has made durable; logs the candidates this transaction adds in
/// `sop_pending` under a new group number; and writes them to the tree —
/// last, just before the commit, so nothing is written there for a
/// transaction that failed earlier. Returns the group logged (with its tree
/// batch, if this process owns the tree) and how many of `groups.pending`
/// were deleted.
fn write_sop_changes(
    shared: &Shared,
    txn: &mut heed::RwTxn<'_>,
    changes: SopChanges,
    groups: &mut GroupState,
) -> Result<SopWork, IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, shared.limits);
    let table = shared.tables.sop_pending;
    let durable = shared.sop_index.durable_batch();
    let deleted = groups
        .pending
        .iter()
        .take_while(|(_, batch)| *batch <= durable)
        .count();
    for (group, _) in groups.pending.iter().take(deleted) {
        table
            .delete(txn, &group_key(*group))
            .map_err(lmdb("delete sop_pending"))?;
    }
    if changes.additions.is_empty() {
        debug_assert!(changes.lists.is_empty());
        return Ok(SopWork {
            logged: None,
            deleted,
        });
    }
    let group = groups.next;
    table
        .put(txn, &group_key(group), &encode_pending(&changes.additions))
        .map_err(lmdb("put sop_pending"))?;
    shared
        .tables
        .meta
        .put(txn, META_NEXT_SOP_GROUP, &(group + 1).to_be_bytes())
        .map_err(lmdb("put meta"))?;
    let batch = shared.sop_index.write(&changes.lists)?;
    groups.next = group + 1;
    Ok(SopWork {
        logged: Some((group, batch)),
        deleted,
    })
}

/// What [`write_sop_changes`] did, for the writer to record once the
/// transaction commits.
struct SopWork {
    /// The group logged, and the tree batch that wrote it (`None`: another
    /// process owns the tree).
    logged: Option<(u64, Option<u64>)>,
    /// How many of `GroupState::pending`, from the front, were deleted.
    deleted: usize,
}

/// Adds the groups another process logged since this writer's last
/// transaction to the tree (if this process owns it), inside `txn`, which
/// holds LMDB's writer lock: no other process logs a group meanwhile.
fn add_foreign_groups(
    shared: &Shared,
    txn: &heed::RwTxn<'_>,
    groups: &mut GroupState,
) -> Result<(), IndexError> {
    let logged = next_group_logged(txn, &shared.tables, shared.limits)?;
    if logged > groups.seen_logged {
        let found = shared.sop_index.add_foreign_groups(
            txn,
            &shared.tables,
            groups.seen_logged..logged,
            shared.limits,
        )?;
        let batch = shared.sop_index.written_batch();
        if shared.sop_index.is_owned() {
            // Committed by the other process: tracked whatever becomes of
            // this transaction.
            groups
                .pending
                .extend(found.into_iter().map(|group| (group, batch)));
        }
        groups.seen_logged = logged;
    }
    groups.next = groups.next.max(logged);
    Ok(())
}

/// A halted writer tries its stalled transaction again (at most once per
/// [`STALLED_RETRY_INTERVAL`]), alone, checked to decide what was
/// answered; if it commits, the writer is no longer halted.
fn resume_if_stalled_commits(shared: &Shared, groups: &mut GroupState) {
    if groups.halted.is_none()
        || groups.stalled.is_empty()
        || groups.stalled_tried.elapsed() < STALLED_RETRY_INTERVAL
    {
        return;
    }
    groups.stalled_tried = Instant::now();
    keep_sop_index(shared, groups);
    let mut stalled = std::mem::take(&mut groups.stalled);
    match run_transaction(shared, &mut stalled, groups, BeforeCommit::CheckAnswered) {
        Ok(_) => {
            tracing::warn!("the index commit that halted the writer went through when run again: the writer takes batches again");
            groups.halted = None;
            shared.visibility.set_halted(false);
        }
        Err(failure) => {
            tracing::debug!(error = %failure.error, "the index commit that halted the writer failed again");
            groups.stalled = stalled;
        }
    }
}

/// What [`run_transaction`] does between applying and committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeforeCommit {
    /// Answers the batches answered when applied.
    AnswerEarly,
    /// A re-run after a failed commit: its batches answered early must be
    /// decided as answered, else the transaction is not committed.
    CheckAnswered,
}

fn run_transaction(
    shared: &Shared,
    group: &mut [Batch],
    groups: &mut GroupState,
    before_commit_step: BeforeCommit,
) -> Result<Vec<Vec<ItemResult>>, TxnFailure> {
    let before_commit = |error| TxnFailure {
        error,
        during_commit: false,
    };
    let mut txn = shared.env.write_txn().map_err(|error| {
        before_commit(IndexError::from_heed("begin write", error, shared.limits))
    })?;
    add_foreign_groups(shared, &txn, groups).map_err(before_commit)?;
    let mut results = Vec::with_capacity(group.len());
    let changes = {
        let mut apply = Apply::new(&mut txn, shared.tables, shared.limits, &shared.sop_index);
        for batch in group.iter() {
            let mut items = Vec::with_capacity(batch.ops.len());
            for op in &batch.ops {
                items.push(apply.apply(op).map_err(before_commit)?);
            }
            results.push(items);
        }
        apply.flush().map_err(before_commit)?;
        apply.take_sop_changes()
    };
    let work = write_sop_changes(shared, &mut txn, changes, groups).map_err(before_commit)?;
    match before_commit_step {
        BeforeCommit::AnswerEarly => answer_early(shared, group, &results, groups),
        BeforeCommit::CheckAnswered => {
            check_answered(group, &results).map_err(before_commit)?;
        }
    }
    let commit_started = Instant::now();
    let committed = txn.commit();
    groups.last_commit = commit_started.elapsed();
    committed.map_err(|error| TxnFailure {
        error: short_write_on_a_full_disk(
            IndexError::from_heed("commit", error, shared.limits),
            shared.env.path(),
        ),
        during_commit: true,
    })?;
    groups.pending.drain(..work.deleted);
    if let Some((group, batch)) = work.logged {
        groups.seen_logged = groups.seen_logged.max(group + 1);
        if let Some(batch) = batch {
            groups.pending.push_back((group, batch));
        }
    }
    Ok(results)
}

/// Answers the batches of `group` answered when applied with their
/// `results`, the transaction numbered first for [`Visibility`](crate::visibility::Visibility).
fn answer_early(
    shared: &Shared,
    group: &mut [Batch],
    results: &[Vec<ItemResult>],
    groups: &mut GroupState,
) {
    let mut numbered = false;
    for (batch, items) in group.iter_mut().zip(results) {
        if batch.answer_at != AnswerAt::Applied || batch.answered_early.is_some() {
            continue;
        }
        if !numbered {
            groups.early_txn += 1;
            shared.visibility.answering(groups.early_txn);
            numbered = true;
        }
        batch.answered_early = Some(items.clone());
        Reply(batch.reply.0.take()).send(Ok(items.clone()));
    }
}

/// A re-run's results against what its batches were answered: any
/// difference stops the re-run before its commit.
fn check_answered(group: &[Batch], results: &[Vec<ItemResult>]) -> Result<(), IndexError> {
    for (batch, items) in group.iter().zip(results) {
        if let Some(answered) = &batch.answered_early {
            if answered != items {
                return Err(IndexError::WriterHalted {
                    reason: Arc::from(
                        "a re-run of a failed commit decided otherwise than what was answered",
                    ),
                });
            }
        }
    }
    Ok(())
}

/// LMDB reports a short write of its pages as EIO (`mdb_page_flush`: a
/// `pwrite` that wrote less than asked gives `EIO`), and a short write is
/// how ENOSPC shows when the file system fills in the middle of one. A
/// commit's EIO while the index's file system is nearly full is therefore
/// [`IndexError::DiskFull`] (nothing of the transaction was committed
/// either way): the engine answers A711 and does not count it as a failure
/// of the disk (issue #19: a full disk put the store in its refusing state
/// until restart). An EIO with room left stays an LMDB failure.
fn short_write_on_a_full_disk(error: IndexError, path: &std::path::Path) -> IndexError {
    let IndexError::Lmdb { source, .. } = &error else {
        return error;
    };
    let heed::Error::Io(io) = source.as_ref() else {
        return error;
    };
    // EIO: what LMDB returns for a short write.
    if io.raw_os_error() != Some(5) {
        return error;
    }
    if !is_nearly_full(path) {
        return error;
    }
    IndexError::DiskFull {
        source: Arc::new(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{io}, with less than {NEARLY_FULL_BYTES} bytes free (a short write)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EnvLimits;

    const LIMITS: EnvLimits = EnvLimits {
        map_size_bytes: 1 << 20,
        max_readers: 1,
    };

    fn eio() -> IndexError {
        IndexError::from_heed(
            "commit",
            heed::Error::Io(std::io::Error::from_raw_os_error(5)),
            LIMITS,
        )
    }

    #[test]
    fn an_eio_with_room_left_stays_an_lmdb_failure() {
        let dir = tempfile::tempdir().unwrap();
        let stats = rustix::fs::statvfs(dir.path()).unwrap();
        assert!(stats.f_bavail.saturating_mul(stats.f_frsize) > NEARLY_FULL_BYTES);
        let error = short_write_on_a_full_disk(eio(), dir.path());
        assert!(matches!(error, IndexError::Lmdb { .. }), "{error:?}");
        // Other errors are left alone whatever the free space.
        let error = short_write_on_a_full_disk(IndexError::WriterUnavailable, dir.path());
        assert!(matches!(error, IndexError::WriterUnavailable));
    }
}
