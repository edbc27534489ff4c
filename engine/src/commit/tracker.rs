//! The commitment tracker: one thread that owns every commitment
//! transaction of a running server (docs/design/commitment.md).
//!
//! Inputs come through one bounded channel ([`TrackerMessage`]): requests
//! decoded by the cores, "this SOP instance is now stored and indexed" from
//! the cores' index callbacks, and delivery outcomes. Deadlines (the
//! instance wait, retry times) are the `recv_timeout` of that channel.
//! Outputs go to the cores' mailboxes ([`ToCore`] through [`Cores`]): the
//! N-ACTION-RSP status once the request is in the index, a report to send
//! on the requester's association, or a batch of reports to send on a new
//! one. The tracker sees only its [`TrackerContext`]: the store (index,
//! configuration, events), the in-doubt set, and the cores' mailboxes.
//!
//! Every state change is written to the index (a `PutCommitment` through the
//! single index writer) before anything is said to a peer, so a restart
//! resumes exactly where the index says: pending requests wait again (their
//! references re-checked), decided reports are delivered.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use sluice_index::{
    CommitmentRecord, CommitmentState, IndexError, IndexWriter, SopPresence, WriteOp,
};
use sluice_net::dimse::Status;

use super::messages::{
    request_bytes, Cores, DeliveryOutcome, MemoryBudget, Refusal, ReportAssociation, Request,
    ToCore,
};
use super::payload::Payload;
use super::presence::{durable_presence, published_elsewhere};
use super::report_accepted;
use crate::clock::unix_now_ns;
use crate::config::ReportDelivery;
use crate::escape::Escaped;
use crate::store::in_doubt::InDoubtSet;
use crate::store::{Store, StoreEvent};

/// Messages the tracker's channel holds before senders see `Full`. Arrival
/// notices that find it full are not lost: a flag makes the tracker re-check
/// every pending request against the index.
pub(crate) const TRACKER_CHANNEL_CAPACITY: usize = 65_536;
/// Most reports sent on one new association.
pub(crate) const REPORTS_PER_ASSOCIATION_MAX: usize = 64;
/// A delivery with no outcome after this long counts as a communication
/// failure (the core or peer went silent in a way no timer caught).
const DELIVERY_OUTCOME_WAIT: Duration = Duration::from_secs(900);
/// Delivered and failed records are kept this long for the operator view,
/// then removed at the next start.
pub(crate) const FINISHED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Records read per index page at start.
const LOAD_PAGE: usize = 1024;
/// Longest idle wait of the loop (it re-checks the lost-arrivals flag).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Cluster mode: how often pending requests are checked against the
/// catalogue for instances other nodes received.
const CLUSTER_RECHECK: Duration = Duration::from_millis(500);

/// The tracker's inputs.
#[derive(Debug)]
pub(crate) enum TrackerMessage {
    /// A decoded N-ACTION.
    Request(Box<Request>),
    /// An instance was stored and indexed.
    Stored {
        sop_instance_uid: String,
        sop_class_uid: String,
    },
    /// A delivery ended.
    Delivery {
        transaction_uid: String,
        outcome: DeliveryOutcome,
    },
    /// Stop the thread.
    Shutdown,
}

/// What the cores hold to reach the tracker.
#[derive(Debug)]
pub(crate) struct TrackerHandle {
    sender: Sender<TrackerMessage>,
    receiver: Mutex<Option<Receiver<TrackerMessage>>>,
    /// Requests waiting for instances: when 0, cores skip arrival notices.
    pending_count: Arc<AtomicUsize>,
    /// Set when an arrival notice could not be queued.
    arrivals_lost: Arc<AtomicBool>,
    /// The bytes the requests held may take (`commitment.memory_budget`).
    memory: Arc<MemoryBudget>,
    /// What the tracker did, for the metrics.
    stats: Arc<CommitmentStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the tracker counts for the metrics endpoint: requests taken and
/// report deliveries by outcome (written by the tracker's thread only).
#[derive(Debug, Default)]
pub(crate) struct CommitmentStats {
    /// Requests accepted (N-ACTION answered 0000).
    pub(crate) requests_accepted: AtomicU64,
    /// Reports the requester accepted.
    pub(crate) reports_delivered: AtomicU64,
    /// Reports the requester refused (a permanent failure).
    pub(crate) reports_refused: AtomicU64,
    /// Deliveries that failed and will be retried.
    pub(crate) deliveries_retried: AtomicU64,
    /// Reports given up after their retries.
    pub(crate) reports_given_up: AtomicU64,
}

impl TrackerHandle {
    /// A tracker whose requests may hold `memory_budget_bytes` in memory.
    pub(crate) fn new(memory_budget_bytes: usize) -> TrackerHandle {
        let (sender, receiver) = crossbeam_channel::bounded(TRACKER_CHANNEL_CAPACITY);
        TrackerHandle {
            sender,
            receiver: Mutex::new(Some(receiver)),
            pending_count: Arc::new(AtomicUsize::new(0)),
            arrivals_lost: Arc::new(AtomicBool::new(false)),
            memory: Arc::new(MemoryBudget::new(memory_budget_bytes)),
            stats: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// The commitment memory budget, which a core reserves from before it
    /// hands a request over.
    pub(crate) fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// What the tracker counted.
    pub(crate) fn stats(&self) -> &CommitmentStats {
        &self.stats
    }

    /// Requests waiting for their instances.
    pub(crate) fn pending_count(&self) -> usize {
        self.pending_count.load(Ordering::Relaxed)
    }

    /// Messages queued for the tracker.
    pub(crate) fn queued(&self) -> usize {
        self.sender.len()
    }

    /// Starts the thread (once). It reads the index's commitment records
    /// before the first message.
    pub(crate) fn start(&self, context: TrackerContext) -> std::io::Result<()> {
        let Some(receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(());
        };
        let tracker = Tracker {
            writer: context.store.index().writer(),
            context,
            pending_count: self.pending_count.clone(),
            arrivals_lost: self.arrivals_lost.clone(),
            memory: self.memory.clone(),
            stats: self.stats.clone(),
            transactions: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
            waiting: Waiting::default(),
            scratch: String::new(),
            next_core: 0,
            timers_due_at: Instant::now(),
            timers_dirty: true,
            cluster_recheck_at: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("sluice-commit".into())
            .spawn(move || tracker.run(&receiver))?;
        if let Ok(mut slot) = self.thread.lock() {
            *slot = Some(thread);
        }
        Ok(())
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&self) {
        let _ = self
            .sender
            .send_timeout(TrackerMessage::Shutdown, Duration::from_secs(5));
        let thread = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// An instance is durably stored and indexed. Never blocks.
    pub(crate) fn instance_stored(&self, sop_instance_uid: &str, sop_class_uid: &str) {
        if self.pending_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let message = TrackerMessage::Stored {
            sop_instance_uid: sop_instance_uid.to_owned(),
            sop_class_uid: sop_class_uid.to_owned(),
        };
        if self.sender.try_send(message).is_err() {
            self.arrivals_lost.store(true, Ordering::SeqCst);
        }
    }

    /// Queues a request; gives it back when the tracker is overloaded.
    pub(crate) fn request(&self, request: Request) -> Result<(), Box<Request>> {
        match self
            .sender
            .try_send(TrackerMessage::Request(Box::new(request)))
        {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(TrackerMessage::Request(request)))
            | Err(TrySendError::Disconnected(TrackerMessage::Request(request))) => Err(request),
            Err(_) => Ok(()),
        }
    }

    /// A delivery ended. Waits a little for room: an outcome lost would
    /// only be recovered by [`DELIVERY_OUTCOME_WAIT`].
    pub(crate) fn delivery(&self, transaction_uid: String, outcome: DeliveryOutcome) {
        let message = TrackerMessage::Delivery {
            transaction_uid,
            outcome,
        };
        if self
            .sender
            .send_timeout(message, Duration::from_millis(200))
            .is_err()
        {
            tracing::warn!("commitment tracker busy: a delivery outcome waits for its timeout");
        }
    }
}

/// One transaction the tracker holds (pending, or decided and undelivered).
#[derive(Debug)]
struct Transaction {
    /// Its number in the waiting map.
    id: u32,
    /// What it holds of the memory budget.
    reserved_bytes: usize,
    record: CommitmentRecord,
    payload: Payload,
    /// While pending: which references are stored with their class.
    present: Vec<bool>,
    missing: usize,
    /// The requester's association, while it may still be open.
    origin: Option<(usize, u64)>,
    /// A delivery is under way since then.
    in_flight: Option<Instant>,
}

/// What the tracker thread works with, and nothing more.
pub(crate) struct TrackerContext {
    /// The index (read transactions, and its writer for commitment
    /// records), the configuration, and the event hub.
    pub(crate) store: Store,
    /// Files committed in doubt and not yet durable: not counted as stored.
    pub(crate) in_doubt: InDoubtSet,
    /// The cores' mailboxes.
    pub(crate) cores: Box<dyn Cores>,
    /// Cluster mode: instances other nodes received and published commit
    /// too (docs/design/scale-out.md, "Storage Commitment on any node").
    pub(crate) cluster: Option<crate::cluster::Cluster>,
}

impl std::fmt::Debug for TrackerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerContext")
            .field("cores", &self.cores.count())
            .finish_non_exhaustive()
    }
}

/// The references not yet stored of the pending transactions, for an
/// arrival to find its waiters in O(1): by a 64-bit hash of the SOP Instance
/// UID (with a random key), each entry (transaction number, reference
/// index); a match is confirmed against the packed reference, so a hash
/// collision costs a comparison, never a wrong match. One instance waited
/// for by several transactions (or two UIDs of one hash) overflow into a
/// second map, so the common entry is 16 bytes, not a `Vec`.
#[derive(Debug, Default)]
struct Waiting {
    hasher: RandomState,
    first: HashMap<u64, (u32, u32)>,
    more: HashMap<u64, Vec<(u32, u32)>>,
}

impl Waiting {
    fn key(&self, sop_instance_uid: &str) -> u64 {
        self.hasher.hash_one(sop_instance_uid)
    }

    fn insert(&mut self, key: u64, waiter: (u32, u32)) {
        match self.first.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert(waiter);
            }
            Entry::Occupied(_) => self.more.entry(key).or_default().push(waiter),
        }
    }

    /// Takes every waiter under `key`.
    fn take(&mut self, key: u64) -> Vec<(u32, u32)> {
        let mut waiters: Vec<(u32, u32)> = self.first.remove(&key).into_iter().collect();
        waiters.extend(self.more.remove(&key).unwrap_or_default());
        waiters
    }

    /// Removes transaction `id`'s waiters under `key`.
    fn remove(&mut self, key: u64, id: u32) {
        let waiters = self.take(key);
        for waiter in waiters.into_iter().filter(|(other, _)| *other != id) {
            self.insert(key, waiter);
        }
    }

    fn clear(&mut self) {
        self.first.clear();
        self.more.clear();
        self.first.shrink_to_fit();
        self.more.shrink_to_fit();
    }
}

struct Tracker {
    context: TrackerContext,
    writer: IndexWriter,
    pending_count: Arc<AtomicUsize>,
    arrivals_lost: Arc<AtomicBool>,
    memory: Arc<MemoryBudget>,
    stats: Arc<CommitmentStats>,
    transactions: HashMap<String, Transaction>,
    /// Transaction number -> Transaction UID.
    ids: HashMap<u32, String>,
    next_id: u32,
    /// The references waited for.
    waiting: Waiting,
    /// A SOP Instance UID unpacked (reused).
    scratch: String,
    next_core: usize,
    /// When the deadline and retry scan runs next.
    timers_due_at: Instant,
    /// A transaction changed: scan at the next turn of the loop.
    timers_dirty: bool,
    /// Cluster mode: when the pending requests are checked against the
    /// catalogue next (instances other nodes receive send no arrival notice).
    cluster_recheck_at: Instant,
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Tracker {
    fn config(&self) -> &crate::config::Config {
        self.context.store.config()
    }

    fn run(mut self, receiver: &Receiver<TrackerMessage>) {
        if let Err(error) = self.load() {
            tracing::error!(%error, "cannot read the commitment records; pending requests wait for the next start");
        }
        loop {
            // A server dropped without `shutdown` still ends this thread.
            if self.context.cores.shutdown_requested() {
                break;
            }
            let cluster_due = self.context.cluster.is_some()
                && Instant::now() >= self.cluster_recheck_at
                && self
                    .transactions
                    .values()
                    .any(|transaction| transaction.record.state == CommitmentState::Pending);
            if cluster_due {
                self.cluster_recheck_at = Instant::now() + CLUSTER_RECHECK;
            }
            if self.arrivals_lost.swap(false, Ordering::SeqCst) || cluster_due {
                self.recheck_pending();
            }
            // Deadlines and retry times are scanned when one is due or
            // something changed, not per arrival notice (those are O(1)).
            let now = Instant::now();
            if self.timers_dirty || now >= self.timers_due_at {
                self.timers_dirty = false;
                self.expire_due();
                self.deliver_due();
                self.timers_due_at = Instant::now() + self.next_wake().min(IDLE_WAIT);
            }
            let mut wait = self.timers_due_at.saturating_duration_since(Instant::now());
            if self.context.cluster.is_some() {
                wait = wait.min(CLUSTER_RECHECK);
            }
            match receiver.recv_timeout(wait) {
                Ok(TrackerMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(message) => self.handle(message),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Drain what is queued before the next round of timers.
            while let Ok(message) = receiver.try_recv() {
                if matches!(message, TrackerMessage::Shutdown) {
                    return;
                }
                self.handle(message);
            }
        }
    }

    fn handle(&mut self, message: TrackerMessage) {
        if !matches!(message, TrackerMessage::Stored { .. }) {
            self.timers_dirty = true;
        }
        match message {
            TrackerMessage::Request(request) => self.requested(*request),
            TrackerMessage::Stored {
                sop_instance_uid,
                sop_class_uid,
            } => self.stored(&sop_instance_uid, &sop_class_uid),
            TrackerMessage::Delivery {
                transaction_uid,
                outcome,
            } => self.delivered(&transaction_uid, outcome),
            TrackerMessage::Shutdown => {}
        }
    }

    fn next_wake(&self) -> Duration {
        let now = unix_now_ns();
        let mut earliest = u64::MAX;
        for transaction in self.transactions.values() {
            let at = match transaction.record.state {
                CommitmentState::Pending => transaction.record.deadline_unix_ns,
                CommitmentState::ReportReady if transaction.in_flight.is_none() => {
                    transaction.record.next_attempt_at_unix_ns
                }
                _ => continue,
            };
            earliest = earliest.min(at);
        }
        Duration::from_nanos(earliest.saturating_sub(now))
    }

    // ----- index -----

    fn put(&self, transaction_uid: &str, transaction: &Transaction) -> Result<(), String> {
        let mut record = transaction.record.clone();
        record.payload = transaction.payload.encode();
        let ops = vec![WriteOp::PutCommitment {
            transaction_uid: transaction_uid.to_owned(),
            record,
        }];
        match self.writer.execute(ops) {
            Ok(items) => match items.into_iter().next() {
                Some(Err(invalid)) => Err(format!("refused by the index: {invalid}")),
                _ => Ok(()),
            },
            Err(error) => Err(error.to_string()),
        }
    }

    fn load(&mut self) -> Result<(), IndexError> {
        let now = unix_now_ns();
        let retention = duration_ns(FINISHED_RETENTION);
        let mut expired = Vec::new();
        let mut after: Option<String> = None;
        let mut loaded = Vec::new();
        loop {
            let read = self.context.store.index().read()?;
            let listing = read.commitments(after.as_deref(), LOAD_PAGE)?;
            for entry in listing.items {
                after = Some(entry.transaction_uid.clone());
                let payload = match Payload::decode(&entry.record.payload) {
                    Ok(payload) => payload,
                    Err(error) => {
                        tracing::error!(transaction_uid = %Escaped(&entry.transaction_uid), %error, "commitment record unreadable; left as is");
                        continue;
                    }
                };
                match entry.record.state {
                    CommitmentState::Pending | CommitmentState::ReportReady => {
                        loaded.push((entry.transaction_uid, entry.record, payload));
                    }
                    _ => {
                        if payload.finished_at_unix_ns.saturating_add(retention) < now {
                            expired.push(entry.transaction_uid);
                        }
                    }
                }
            }
            if !listing.truncated {
                break;
            }
        }
        let (mut pending, mut ready) = (0usize, 0usize);
        for (transaction_uid, record, payload) in loaded {
            let present = vec![false; payload.references.len()];
            let missing = present.len();
            if record.state == CommitmentState::Pending {
                pending += 1;
                self.pending_count.fetch_add(1, Ordering::SeqCst);
            } else {
                ready += 1;
            }
            // Accepted before the restart: kept whatever the budget.
            let reserved_bytes = request_bytes(&payload.references);
            self.memory.force_reserve(reserved_bytes);
            let id = self.new_id(&transaction_uid);
            self.transactions.insert(
                transaction_uid,
                Transaction {
                    id,
                    reserved_bytes,
                    record,
                    payload,
                    present,
                    missing,
                    origin: None,
                    in_flight: None,
                },
            );
        }
        // Pending requests: check every reference again (instances may have
        // arrived while the server was down or between an index commit and
        // its arrival notice), then watch the rest.
        self.recheck_pending();
        if !expired.is_empty() {
            let ops = expired
                .iter()
                .map(|uid| WriteOp::RemoveCommitment {
                    transaction_uid: uid.clone(),
                })
                .collect();
            if let Err(error) = self.writer.execute(ops) {
                tracing::warn!(%error, "cannot prune old commitment records");
            }
        }
        if pending + ready + expired.len() > 0 {
            tracing::info!(
                pending,
                reports_to_deliver = ready,
                pruned = expired.len(),
                "commitment tracker resumed from the index"
            );
        }
        Ok(())
    }

    /// Checks every pending request's missing references against the index
    /// (one read transaction) and rebuilds the waiting map.
    fn recheck_pending(&mut self) {
        let read = match self.context.store.index().read() {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "cannot re-check pending commitment requests");
                return;
            }
        };
        let in_doubt = self.context.in_doubt.snapshot();
        self.waiting.clear();
        let mut complete = Vec::new();
        let uid = &mut self.scratch;
        let mut missing = Vec::new();
        for transaction in self.transactions.values() {
            if transaction.record.state != CommitmentState::Pending {
                continue;
            }
            let references = &transaction.payload.references;
            for (index, present) in transaction.present.iter().enumerate() {
                if !*present && references.instance_uid_into(index, uid) {
                    missing.push(uid.clone());
                }
            }
        }
        let elsewhere = published_elsewhere(&read, self.context.cluster.as_ref(), missing);
        for (transaction_uid, transaction) in &mut self.transactions {
            if transaction.record.state != CommitmentState::Pending {
                continue;
            }
            let references = &transaction.payload.references;
            for (index, present) in transaction.present.iter_mut().enumerate() {
                if *present || !references.instance_uid_into(index, uid) {
                    continue;
                }
                let class = references.class_uid(index).unwrap_or_default();
                let presence = durable_presence(&read, &in_doubt, uid, class, &elsewhere);
                if let Ok(SopPresence::Stored | SopPresence::ClassMismatch { .. }) = presence {
                    if let Ok(SopPresence::ClassMismatch { .. }) = presence {
                        transaction
                            .payload
                            .failed
                            .push((index as u32, Status::CLASS_INSTANCE_CONFLICT.0));
                    }
                    *present = true;
                    transaction.missing = transaction.missing.saturating_sub(1);
                } else {
                    let key = self.waiting.key(uid);
                    self.waiting.insert(key, (transaction.id, index as u32));
                }
            }
            if transaction.missing == 0 {
                complete.push(transaction_uid.clone());
            }
        }
        drop(read);
        for transaction_uid in complete {
            self.decide(&transaction_uid, Vec::new());
        }
    }

    /// A number for a new transaction, in the waiting map.
    fn new_id(&mut self, transaction_uid: &str) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Entry::Vacant(entry) = self.ids.entry(self.next_id) {
                entry.insert(transaction_uid.to_owned());
                return self.next_id;
            }
        }
    }

    /// Drops a transaction from memory (its record stays in the index).
    fn forget(&mut self, transaction_uid: &str) -> Option<Transaction> {
        let transaction = self.transactions.remove(transaction_uid)?;
        self.ids.remove(&transaction.id);
        self.memory.release(transaction.reserved_bytes);
        Some(transaction)
    }

    // ----- requests -----

    fn answer(&self, request: &Request, result: Result<(), Refusal>) {
        let message = ToCore::Answer {
            serial: request.serial,
            context_id: request.context_id,
            message_id: request.message_id,
            result,
        };
        self.context.cores.post(request.core, message);
    }

    fn requested(&mut self, request: Request) {
        let transaction_uid = request.transaction_uid.clone();
        let config = self.config();
        let max_pending = config.commitment.max_pending_requests as usize;
        let wait = config.commitment.instance_wait_s;
        let same_association =
            config.commitment.report_delivery == ReportDelivery::SameAssociationOrNew;
        // Whatever happens below, the request's own reservation goes: an
        // accepted transaction takes it over, a refused one gives it back.
        let reserved_bytes = request.reserved_bytes;
        if let Some(existing) = self.transactions.get_mut(&transaction_uid) {
            // A Transaction UID already open: the same request sent again
            // (a requester that lost our N-ACTION-RSP) is accepted once more
            // and answered by the one report; other references under the
            // same UID are refused, since one UID names one request.
            self.memory.release(reserved_bytes);
            if existing.payload.references == request.references {
                if same_association {
                    existing.origin = Some((request.core, request.serial));
                }
                if existing.record.state == CommitmentState::ReportReady
                    && existing.in_flight.is_none()
                {
                    existing.record.next_attempt_at_unix_ns = 0;
                }
                tracing::info!(transaction_uid = %Escaped(&transaction_uid), requester = %Escaped(&request.requester_ae_title), "commitment request repeated; the pending transaction stands");
                self.answer(&request, Ok(()));
                return;
            }
            tracing::warn!(transaction_uid = %Escaped(&transaction_uid), requester = %Escaped(&request.requester_ae_title), "commitment request refused: its Transaction UID is pending with other references");
            self.answer(&request, Err(Refusal::OtherReferencesPending));
            return;
        }
        if self.transactions.len() >= max_pending {
            self.memory.release(reserved_bytes);
            tracing::warn!(transaction_uid = %Escaped(&transaction_uid), limit = max_pending, "commitment request refused: too many pending requests");
            self.answer(&request, Err(Refusal::TooManyPending { max_pending }));
            return;
        }
        // Counted before the check, so an instance indexed after the read
        // transaction began is always notified (and then matched below).
        self.pending_count.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let Request {
            core,
            serial,
            context_id,
            message_id,
            requester_ae_title,
            references,
            ..
        } = request;
        let mut present = vec![false; references.len()];
        // A reference stored under another SOP class fails at once (0119):
        // waiting cannot change the class an instance is stored with.
        let mut failed = Vec::new();
        let uid = &mut self.scratch;
        let cluster = self.context.cluster.as_ref();
        let check = self.context.store.index().read().and_then(|read| {
            let in_doubt = self.context.in_doubt.snapshot();
            let mut missing = Vec::new();
            for index in 0..present.len() {
                if references.instance_uid_into(index, uid) {
                    missing.push(uid.clone());
                }
            }
            let elsewhere = published_elsewhere(&read, cluster, missing);
            for (index, present) in present.iter_mut().enumerate() {
                if !references.instance_uid_into(index, uid) {
                    continue;
                }
                let class = references.class_uid(index).unwrap_or_default();
                match durable_presence(&read, &in_doubt, uid, class, &elsewhere)? {
                    SopPresence::Stored => *present = true,
                    SopPresence::ClassMismatch { .. } => {
                        *present = true;
                        failed.push((index as u32, Status::CLASS_INSTANCE_CONFLICT.0));
                    }
                    _ => {}
                }
            }
            Ok(())
        });
        // What the answers need of the request.
        let request = Request {
            core,
            serial,
            context_id,
            message_id,
            requester_ae_title,
            transaction_uid: transaction_uid.clone(),
            references: Default::default(),
            reserved_bytes,
        };
        if let Err(error) = check {
            let previous = self.pending_count.fetch_sub(1, Ordering::SeqCst);
            debug_assert!(previous > 0);
            self.memory.release(reserved_bytes);
            tracing::error!(transaction_uid = %Escaped(&transaction_uid), %error, "commitment request failed: cannot read the index");
            self.answer(&request, Err(Refusal::IndexUnavailable));
            return;
        }
        let check_us = started.elapsed().as_micros() as u64;
        let missing = present.iter().filter(|present| !**present).count();
        let now = unix_now_ns();
        let id = self.new_id(&transaction_uid);
        let transaction = Transaction {
            id,
            reserved_bytes,
            record: CommitmentRecord {
                state: CommitmentState::Pending,
                requester_ae_title: request.requester_ae_title.clone(),
                created_at_unix_ns: now,
                deadline_unix_ns: now.saturating_add(duration_ns(wait)),
                delivery_attempts: 0,
                next_attempt_at_unix_ns: 0,
                payload: Vec::new(),
            },
            payload: Payload {
                failed,
                ..Payload::pending(references)
            },
            present,
            missing,
            origin: same_association.then_some((request.core, request.serial)),
            in_flight: None,
        };
        // Recorded before it is accepted: a crash after the N-ACTION-RSP
        // finds it in the index.
        if let Err(error) = self.put(&transaction_uid, &transaction) {
            let previous = self.pending_count.fetch_sub(1, Ordering::SeqCst);
            debug_assert!(previous > 0);
            self.ids.remove(&id);
            self.memory.release(reserved_bytes);
            tracing::error!(transaction_uid = %Escaped(&transaction_uid), %error, "commitment request failed: cannot record it");
            self.answer(&request, Err(Refusal::CannotRecord));
            return;
        }
        tracing::info!(
            transaction_uid = %Escaped(&transaction_uid),
            requester = %Escaped(&request.requester_ae_title),
            references = transaction.present.len(),
            missing,
            check_us,
            memory_bytes = reserved_bytes,
            memory_in_use_bytes = self.memory.used(),
            "commitment request accepted"
        );
        self.stats.requests_accepted.fetch_add(1, Ordering::Relaxed);
        self.answer(&request, Ok(()));
        let uid = &mut self.scratch;
        for (index, present) in transaction.present.iter().enumerate() {
            if !present && transaction.payload.references.instance_uid_into(index, uid) {
                let key = self.waiting.key(uid);
                self.waiting.insert(key, (id, index as u32));
            }
        }
        let decide_now = missing == 0 || wait.is_zero();
        self.transactions
            .insert(transaction_uid.clone(), transaction);
        if missing == 0 {
            self.decide(&transaction_uid, Vec::new());
        } else if decide_now {
            self.expire(&transaction_uid);
        }
    }

    fn stored(&mut self, sop_instance_uid: &str, sop_class_uid: &str) {
        let key = self.waiting.key(sop_instance_uid);
        let waiters = self.waiting.take(key);
        if waiters.is_empty() {
            return;
        }
        let mut complete = Vec::new();
        for (id, index) in waiters {
            let transaction = self
                .ids
                .get(&id)
                .and_then(|transaction_uid| self.transactions.get_mut(transaction_uid));
            let Some(transaction) = transaction else {
                continue;
            };
            let references = &transaction.payload.references;
            if transaction.record.state != CommitmentState::Pending
                || !references.instance_uid_is(index as usize, sop_instance_uid)
            {
                // Another UID of the same hash: it still waits.
                if transaction.record.state == CommitmentState::Pending {
                    self.waiting.insert(key, (id, index));
                }
                continue;
            }
            let matches = references.class_uid(index as usize) == Some(sop_class_uid);
            if let Some(present) = transaction.present.get_mut(index as usize) {
                if !*present {
                    *present = true;
                    if !matches {
                        // Stored under another class: that reference fails.
                        transaction
                            .payload
                            .failed
                            .push((index, Status::CLASS_INSTANCE_CONFLICT.0));
                    }
                    transaction.missing = transaction.missing.saturating_sub(1);
                    if transaction.missing == 0 {
                        if let Some(transaction_uid) = self.ids.get(&id) {
                            complete.push(transaction_uid.clone());
                        }
                    }
                }
            }
        }
        for transaction_uid in complete {
            self.decide(&transaction_uid, Vec::new());
        }
    }

    fn expire_due(&mut self) {
        let now = unix_now_ns();
        let due: Vec<String> = self
            .transactions
            .iter()
            .filter(|(_, t)| {
                t.record.state == CommitmentState::Pending && t.record.deadline_unix_ns <= now
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for transaction_uid in due {
            self.expire(&transaction_uid);
        }
    }

    /// The wait ended: the missing references fail with 0112 (not stored)
    /// or 0119 (stored with another SOP class); any that did arrive count.
    fn expire(&mut self, transaction_uid: &str) {
        let Some(transaction) = self.transactions.get(transaction_uid) else {
            panic!("transaction {transaction_uid} expired, but it is not held");
        };
        assert_eq!(transaction.record.state, CommitmentState::Pending);
        let mut failed = Vec::new();
        let read = self.context.store.index().read();
        let in_doubt = self.context.in_doubt.snapshot();
        let references = &transaction.payload.references;
        let uid = &mut self.scratch;
        let elsewhere = match &read {
            Ok(read) => {
                let mut missing = Vec::new();
                for (index, present) in transaction.present.iter().enumerate() {
                    if !*present && references.instance_uid_into(index, uid) {
                        missing.push(uid.clone());
                    }
                }
                published_elsewhere(read, self.context.cluster.as_ref(), missing)
            }
            Err(_) => HashMap::new(),
        };
        for (index, present) in transaction.present.iter().enumerate() {
            if *present || !references.instance_uid_into(index, uid) {
                continue;
            }
            let class = references.class_uid(index).unwrap_or_default();
            let presence = match &read {
                Ok(read) => durable_presence(read, &in_doubt, uid, class, &elsewhere),
                Err(error) => Err(error.clone()),
            };
            let reason = match presence {
                Ok(SopPresence::Stored) => continue,
                Ok(SopPresence::ClassMismatch { .. }) => Status::CLASS_INSTANCE_CONFLICT,
                Ok(_) => Status::NO_SUCH_OBJECT_INSTANCE,
                Err(_) => Status::PROCESSING_FAILURE,
            };
            failed.push((index as u32, reason.0));
        }
        drop(read);
        self.decide(transaction_uid, failed);
    }

    /// Decides the report, records it (ReportReady) and starts delivery.
    fn decide(&mut self, transaction_uid: &str, failed: Vec<(u32, u16)>) {
        // Every caller found the transaction pending, and deciding is the
        // only way out of that state.
        let Some(transaction) = self.transactions.get_mut(transaction_uid) else {
            panic!("transaction {transaction_uid} decided, but it is not held");
        };
        assert_eq!(
            transaction.record.state,
            CommitmentState::Pending,
            "transaction {transaction_uid} decided twice"
        );
        let previous = self.pending_count.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(previous > 0, "more requests decided than were pending");
        self.timers_dirty = true;
        let references = &transaction.payload.references;
        let uid = &mut self.scratch;
        for (index, present) in transaction.present.iter().enumerate() {
            if !present && references.instance_uid_into(index, uid) {
                let key = self.waiting.key(uid);
                self.waiting.remove(key, transaction.id);
            }
        }
        transaction.present = Vec::new();
        transaction.payload.failed.extend(failed);
        transaction.payload.failed.sort_unstable();
        transaction.payload.failed.dedup_by_key(|(index, _)| *index);
        transaction.payload.decided_at_unix_ns = unix_now_ns();
        transaction.record.state = CommitmentState::ReportReady;
        transaction.record.next_attempt_at_unix_ns = 0;
        let references = transaction.payload.reference_count as usize;
        let failed_count = transaction.payload.failed.len();
        let requester = transaction.record.requester_ae_title.clone();
        let created_at_unix_ns = transaction.record.created_at_unix_ns;
        let event = if failed_count == 0 {
            StoreEvent::Committed {
                transaction_uid: transaction_uid.to_owned(),
                requester_ae_title: requester.clone(),
                instance_count: references,
            }
        } else {
            StoreEvent::CommitmentFailed {
                transaction_uid: transaction_uid.to_owned(),
                requester_ae_title: requester.clone(),
                committed_count: references - failed_count,
                failed: transaction
                    .payload
                    .result(transaction_uid)
                    .failed
                    .into_iter()
                    .map(|failed| (failed.reference.sop_instance_uid, failed.failure_reason.0))
                    .collect(),
            }
        };
        if let Some(transaction) = self.transactions.get(transaction_uid) {
            if let Err(error) = self.put(transaction_uid, transaction) {
                // Kept in memory and delivered; a restart before delivery
                // would decide it again from the pending record.
                tracing::error!(transaction_uid = %Escaped(transaction_uid), %error, "cannot record a decided commitment report");
            }
        }
        let decided_after_ms = unix_now_ns().saturating_sub(created_at_unix_ns) / 1_000_000;
        tracing::info!(
            transaction_uid = %Escaped(transaction_uid),
            requester = %Escaped(&requester),
            references,
            failed = failed_count,
            decided_after_ms,
            "commitment report decided"
        );
        self.context.store.shared.events.publish(event);
        self.start_same_association(transaction_uid);
    }

    // ----- delivery -----

    fn start_same_association(&mut self, transaction_uid: &str) {
        let retrieve_ae_title = self.config().network.ae_title.as_str().to_owned();
        let Some(transaction) = self.transactions.get_mut(transaction_uid) else {
            return;
        };
        let Some((core, serial)) = transaction.origin else {
            return;
        };
        let mut report = transaction.payload.result(transaction_uid);
        report.retrieve_ae_title = Some(retrieve_ae_title);
        transaction.in_flight = Some(Instant::now());
        if !self
            .context
            .cores
            .post(core, ToCore::DeliverReport { serial, report })
        {
            if let Some(transaction) = self.transactions.get_mut(transaction_uid) {
                transaction.in_flight = None;
                transaction.origin = None;
            }
        }
    }

    fn deliver_due(&mut self) {
        let now = unix_now_ns();
        // A clone (one `Arc`) so the configuration can be read while the
        // transactions change.
        let store = self.context.store.clone();
        let config = store.config();
        let mut failures = Vec::new();
        let mut groups: HashMap<(String, SocketAddr), Vec<String>> = HashMap::new();
        let mut stale = Vec::new();
        let mut resolved: HashMap<String, Option<SocketAddr>> = HashMap::new();
        let mut on_origin = Vec::new();
        for (transaction_uid, transaction) in &self.transactions {
            if transaction.record.state != CommitmentState::ReportReady {
                continue;
            }
            if let Some(since) = transaction.in_flight {
                if since.elapsed() > DELIVERY_OUTCOME_WAIT {
                    stale.push(transaction_uid.clone());
                }
                continue;
            }
            if transaction.record.next_attempt_at_unix_ns > now {
                continue;
            }
            if transaction.origin.is_some() {
                on_origin.push(transaction_uid.clone());
                continue;
            }
            let requester = &transaction.record.requester_ae_title;
            let target = config
                .commitment
                .report_ae_map
                .iter()
                .find(|(from, _)| from.as_str() == requester)
                .map_or(requester.as_str(), |(_, to)| to.as_str())
                .to_owned();
            let address = resolved
                .entry(target.clone())
                .or_insert_with(|| {
                    config
                        .network
                        .remote_aes
                        .iter()
                        .find(|(ae, _)| ae.as_str() == target)
                        .and_then(|(_, address)| {
                            (address.host(), address.port())
                                .to_socket_addrs()
                                .ok()
                                .and_then(|mut addresses| addresses.next())
                        })
                })
                .to_owned();
            match address {
                Some(address) => {
                    let group = groups.entry((target, address)).or_default();
                    if group.len() < REPORTS_PER_ASSOCIATION_MAX {
                        group.push(transaction_uid.clone());
                    }
                }
                None => failures.push((
                    transaction_uid.clone(),
                    format!("no address for AE {target} in network.remote_aes"),
                )),
            }
        }
        for transaction_uid in on_origin {
            self.start_same_association(&transaction_uid);
        }
        for transaction_uid in stale {
            self.delivered(
                &transaction_uid,
                DeliveryOutcome::CommunicationFailure("no outcome in time".into()),
            );
        }
        for (transaction_uid, reason) in failures {
            self.delivered(
                &transaction_uid,
                DeliveryOutcome::CommunicationFailure(reason),
            );
        }
        let calling_ae_title = config.commitment_ae_title().as_str().to_owned();
        let retrieve_ae_title = config.network.ae_title.as_str().to_owned();
        let core_count = self.context.cores.count().max(1);
        for ((called_ae_title, address), transaction_uids) in groups {
            let mut reports = Vec::with_capacity(transaction_uids.len());
            for transaction_uid in &transaction_uids {
                if let Some(transaction) = self.transactions.get_mut(transaction_uid) {
                    let mut report = transaction.payload.result(transaction_uid);
                    report.retrieve_ae_title = Some(retrieve_ae_title.clone());
                    reports.push(report);
                    transaction.in_flight = Some(Instant::now());
                }
            }
            let core = self.next_core % core_count;
            self.next_core = self.next_core.wrapping_add(1);
            tracing::debug!(called_ae = %Escaped(&called_ae_title), %address, reports = reports.len(), "opening an association to deliver commitment reports");
            let message = ToCore::OpenReportAssociation(Box::new(ReportAssociation {
                calling_ae_title: calling_ae_title.clone(),
                called_ae_title,
                address,
                reports,
            }));
            if !self.context.cores.post(core, message) {
                for transaction_uid in transaction_uids {
                    self.delivered(
                        &transaction_uid,
                        DeliveryOutcome::CommunicationFailure("no core took the delivery".into()),
                    );
                }
            }
        }
    }

    fn delivered(&mut self, transaction_uid: &str, outcome: DeliveryOutcome) {
        // A clone (one `Arc`) so the configuration can be read while the
        // transactions change.
        let store = self.context.store.clone();
        let config = store.config();
        // An outcome for a transaction that is no longer held (finished, or a
        // stale delivery's late answer), or whose UID was reused by a new
        // pending request, is not this report's.
        let Some(transaction) = self.transactions.get_mut(transaction_uid) else {
            return;
        };
        if transaction.record.state != CommitmentState::ReportReady {
            return;
        }
        transaction.in_flight = None;
        let now = unix_now_ns();
        let requester = transaction.record.requester_ae_title.clone();
        let mut finished = None;
        match outcome {
            DeliveryOutcome::Delivered(status) if report_accepted(status) => {
                transaction.payload.last_status = status.0;
                transaction.record.delivery_attempts += 1;
                finished = Some(CommitmentState::Delivered);
                self.stats.reports_delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(transaction_uid = %Escaped(transaction_uid), requester = %Escaped(&requester), attempts = transaction.record.delivery_attempts, "commitment report delivered");
            }
            DeliveryOutcome::Delivered(status) | DeliveryOutcome::Refused(status) => {
                transaction.payload.last_status = status.0;
                transaction.payload.last_error = format!("the peer answered status {status}");
                transaction.record.delivery_attempts += 1;
                finished = Some(CommitmentState::Failed);
                self.stats.reports_refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(transaction_uid = %Escaped(transaction_uid), requester = %Escaped(&requester), status = %status, "commitment report refused by the peer: permanent failure, not retried");
            }
            DeliveryOutcome::NotOpen => {
                // The requester's association has closed: not an attempt;
                // a new association right away.
                transaction.origin = None;
                transaction.record.next_attempt_at_unix_ns = 0;
                return;
            }
            DeliveryOutcome::CommunicationFailure(reason) => {
                transaction.origin = None;
                transaction.record.delivery_attempts += 1;
                transaction.payload.last_error = reason.clone();
                let attempts = transaction.record.delivery_attempts;
                let retries_allowed = config.commitment.report_retry_count;
                if attempts > retries_allowed {
                    finished = Some(CommitmentState::Failed);
                    self.stats.reports_given_up.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(transaction_uid = %Escaped(transaction_uid), requester = %Escaped(&requester), attempts, reason = %Escaped(&reason), "commitment report given up after its retries");
                } else {
                    let delay = retry_delay(
                        config.commitment.report_retry_delay_s,
                        config.commitment.report_retry_backoff_cap_s,
                        attempts,
                    );
                    transaction.record.next_attempt_at_unix_ns =
                        now.saturating_add(duration_ns(delay));
                    self.stats
                        .deliveries_retried
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(transaction_uid = %Escaped(transaction_uid), requester = %Escaped(&requester), attempts, retry_in_s = delay.as_secs(), reason = %Escaped(&reason), "commitment report delivery failed; will retry");
                }
            }
        }
        if let Some(state) = finished {
            transaction.record.state = state;
            transaction.payload.finished_at_unix_ns = now;
            // Kept 7 days for the operator view: the failures and the
            // counts, not every committed reference.
            transaction.payload.prune();
        }
        if let Some(transaction) = self.transactions.get(transaction_uid) {
            if let Err(error) = self.put(transaction_uid, transaction) {
                tracing::error!(transaction_uid = %Escaped(transaction_uid), %error, "cannot record a commitment delivery outcome");
            }
        }
        if let Some(state) = finished {
            if let Some(transaction) = self.forget(transaction_uid) {
                if state == CommitmentState::Failed {
                    self.context.store.shared.events.publish(
                        StoreEvent::CommitmentReportUndelivered {
                            transaction_uid: transaction_uid.to_owned(),
                            requester_ae_title: transaction.record.requester_ae_title,
                            reason: transaction.payload.last_error,
                        },
                    );
                }
            }
        }
    }
}

/// The wait before retry `attempt` (1-based): the delay, doubled per
/// earlier retry, capped.
pub(crate) fn retry_delay(delay: Duration, cap: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32);
    delay
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(cap)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_keeps_every_waiter_of_a_key_and_removes_one_transaction() {
        let mut waiting = Waiting::default();
        let key = waiting.key("1.2.3");
        assert_eq!(key, waiting.key("1.2.3"));
        // Three transactions wait for the same instance (or a collision).
        waiting.insert(key, (1, 10));
        waiting.insert(key, (2, 20));
        waiting.insert(key, (3, 30));
        waiting.remove(key, 1);
        let mut left = waiting.take(key);
        left.sort_unstable();
        assert_eq!(left, vec![(2, 20), (3, 30)]);
        assert!(waiting.take(key).is_empty());
        waiting.insert(key, (4, 40));
        waiting.remove(key, 4);
        assert!(waiting.first.is_empty() && waiting.more.is_empty());
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let delay = Duration::from_secs(10);
        let cap = Duration::from_secs(60);
        assert_eq!(retry_delay(delay, cap, 1), Duration::from_secs(10));
        assert_eq!(retry_delay(delay, cap, 2), Duration::from_secs(20));
        assert_eq!(retry_delay(delay, cap, 3), Duration::from_secs(40));
        assert_eq!(retry_delay(delay, cap, 4), cap);
        assert_eq!(retry_delay(delay, cap, 1000), cap);
    }
}
