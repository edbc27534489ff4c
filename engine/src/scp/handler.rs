//! One core's association handler: an explicit state machine driven by
//! `sluice-io` completions. It owns, per core, the connections (each with
//! its `sluice-net` association state machine and stream decoder), the
//! instances being received and made durable ("jobs"), and the batch of
//! durable instances waiting for the index writer.
//!
//! The durability order of one instance lives in [`CoreHandler`]'s job
//! steps and nowhere else:
//!
//! 1. data PDV slices of the receive buffers are written into
//!    `tmp/<core>/<id>.dcm` after the Part 10 header (no copy);
//! 2. on the last fragment the head scanner's verdict is checked; a refused
//!    data set is unlinked and answered with its status;
//! 3. every write completed -> rename into `objects/ab/cd/` (or
//!    `quarantine/ab/cd/` when the triplet is already stored);
//! 4. then, together:
//!    - `fdatasync` of the file;
//!    - an `fsync` of its directory, shared by every instance renamed into
//!      it since the last one began (one directory fsync per directory per
//!      round, not per instance);
//!    - the index commit: the instance joins the core's batch (group-commit
//!      window / maximum batch) for the single index writer, as a store
//!      marked *in doubt*: the same transaction records its file id in the
//!      index's `in_doubt` table;
//! 5. only when all three succeeded is the C-STORE-RSP sent (0000); the
//!    file's in-doubt mark is then cleared by a later transaction (the next
//!    batch's, or its own after [`IN_DOUBT_CLEAR_DELAY`]). Storage
//!    commitment counts an instance only once it is out of the shared
//!    in-memory set of in-doubt files (`crate::store::in_doubt`).
//!
//! A crash before all three complete leaves either an unindexed file
//! (moved to `orphans/` at start-up) or an in-doubt entry, which start-up
//! recovery verifies against the file's size and checksum: kept (and its
//! file moved into place if the rename was lost) when complete, removed
//! when not. Nothing was acknowledged in either case. A failed sync after
//! the commit answered removes the entry again ([`CoreHandler::undo_entry`]).
//! Under the `replace` duplicate policy the commit waits for both syncs
//! instead (step 4 then 5 in sequence), because removing a replacing entry
//! could not give the replaced one back.
//!
//! Any error on the way fails that instance with an A7xx status, never
//! retried into a success.
//!
//! Storage Commitment: an N-ACTION-RQ's data set is collected, decoded and
//! handed to the commitment tracker ([`crate::commit`]); its answer comes
//! back as a [`CoreMessage`] and becomes the N-ACTION-RSP. Reports go out as
//! N-EVENT-REPORT-RQ on the requester's association, or on an association
//! this core opens as requestor ([`ToCore::OpenReportAssociation`]);
//! each N-EVENT-REPORT-RSP (or the association's end) goes back to the
//! tracker as a delivery outcome.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_index::{
    BatchResult, ConflictPolicy, Disposition, DuplicatePolicy, FileId, IndexError, IndexWriter,
    InstanceRecord, NewInstance, StoreOutcome, StoreRequest, SubmitError, WriteOp, WriteOutcome,
};
use sluice_io::{
    At, ConnId, Core, CoreSender, Event, Handler, IoBuf, OpenOptions, RecvBuf, SyncKind, TimerId,
    IOVECS_PER_WRITE_MAX,
};
use sluice_net::assoc::{
    negotiate, Action, Association, AssociationLoad, AssociationProposal, Indication, Input,
    InvalidPdu, NegotiationOutcome, ProposedPresentationContext, Role,
};
use sluice_net::dimse::commitment::{
    CommitmentRequest, CommitmentResult, ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
};
use sluice_net::dimse::dataset::{DatasetLimits, SmallDatasetEncoding};
use sluice_net::dimse::{
    CEchoRsp, CStoreRq, CStoreRsp, Command, NActionRq, NActionRsp, NEventReportRq, Status,
    StatusDetail,
};
use sluice_net::pdata::{encode_message, StreamDecoder, StreamEvent};
use sluice_net::pdu::{AssociateRj, DecodeLimits, RejectReason, RejectResult};
use sluice_net::scan::{check_store, DatasetHead, DatasetScanner, StoreCheck};
use sluice_net::uid::{self, TransferSyntaxFacts};

use super::{ServerShared, DURABILITY_FAILURES_BEFORE_REFUSING};
use crate::commit::messages::{DeliveryOutcome, ReportAssociation, Request, ToCore};
use crate::config::DuplicatePolicy as ConfigDuplicatePolicy;
use crate::store::instance_from_head;
use crate::store::layout::{Area, DatasetHasher, FileIdGenerator};
use crate::store::part10::{file_header, seal, FileMeta, SEAL_BYTES};
use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::store::StoreEvent;

mod commitment;

/// The failure status answered when the `reject` duplicate policy refuses
/// a newcomer: 0111 Duplicate SOP Instance (PS3.7 C.4.2 lists it for
/// C-STORE-capable services; DCMTK and dcm4chee use it for the same case).
pub const STATUS_DUPLICATE_REJECTED: Status = Status::DUPLICATE_SOP_INSTANCE;

/// Longest command set accepted (a C-STORE-RQ is ~200 bytes).
const COMMAND_BYTES_MAX: usize = 64 * 1024;
/// How long a free-space reading is trusted.
const FREE_SPACE_CACHE: Duration = Duration::from_millis(100);
/// How long the index writer's callback may wait for room in a core's mailbox.
const MAILBOX_SEND_WAIT: Duration = Duration::from_secs(600);

// Tags: the kind in the top byte, a connection serial or job key below.
const TAG_SEND: u64 = 1 << 56;
const TAG_CONN_TIMER: u64 = 2 << 56;
const TAG_OPEN: u64 = 3 << 56;
const TAG_WRITE: u64 = 4 << 56;
const TAG_SYNC: u64 = 5 << 56;
const TAG_RENAME: u64 = 6 << 56;
const TAG_DIR_OPEN: u64 = 7 << 56;
const TAG_DIR_SYNC: u64 = 8 << 56;
const TAG_COMMIT_TIMER: u64 = 9 << 56;
const TAG_IGNORED: u64 = 10 << 56;
const TAG_CONNECT: u64 = 11 << 56;
const TAG_CLEAR_TIMER: u64 = 12 << 56;
const TAG_KIND_MASK: u64 = 0xff << 56;

/// Messages from other threads to a core.
#[derive(Debug)]
pub(crate) enum CoreMessage {
    /// The index writer committed (or failed) a batch of this core's jobs.
    Committed {
        /// The jobs, in the order of the batch's operations.
        jobs: Vec<u64>,
        /// The writer's answer.
        result: BatchResult,
    },
    /// The commitment tracker asks for something.
    Commitment(ToCore),
}

/// The C-STORE status for an index failure: the disk-space statuses for a
/// full map or disk (A711: resources the operator must add), A700 otherwise.
pub fn status_of_index_error(error: &IndexError) -> Status {
    match error {
        IndexError::MapFull { .. } | IndexError::DiskFull { .. } => Status::OUT_OF_DISK_SPACE,
        _ => Status::OUT_OF_RESOURCES,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Artim,
    Idle,
}

/// What a connection is doing with incoming data PDVs.
#[derive(Debug)]
enum Receiving {
    /// Streaming into the job's file.
    Job(u64),
    /// Refused at the command: the data set is read and dropped, then
    /// answered with this status.
    Discard(Refusal),
    /// The action information of an N-ACTION-RQ, collected (it is small:
    /// at most [`DatasetLimits`]' length) then decoded.
    Action {
        context_id: u8,
        rq: NActionRq,
        bytes: Vec<u8>,
        refusal: Option<(Status, String)>,
    },
    /// A data set nobody needs (an N-EVENT-REPORT-RSP's reply): dropped.
    Ignore,
}

#[derive(Debug, Clone)]
struct Refusal {
    context_id: u8,
    rq: CStoreRq,
    status: Status,
    reason: String,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    peer: Option<SocketAddr>,
    association: Association,
    decoder: StreamDecoder,
    timer_kind: Option<TimerKind>,
    timer_deadline: Instant,
    timer_armed: Option<TimerId>,
    deliver_pdata: bool,
    command_bytes: Vec<u8>,
    command_context_id: u8,
    receiving: Option<Receiving>,
    sends_in_flight: u32,
    close_when_sent: bool,
    closing: bool,
    counted: bool,
    calling_ae_title: String,
    called_ae_title: String,
    contexts_accepted: usize,
    started: Instant,
    instances_stored: u64,
    instances_failed: u64,
    bytes_received: u64,
    outcome: Option<String>,
    /// The listener it came through (0: main port); unused when outbound.
    listener: usize,
    /// Reports this (outbound) association still has to send.
    reports_queued: VecDeque<CommitmentResult>,
    /// N-EVENT-REPORT-RQs sent and not answered: Message ID -> Transaction UID.
    reports_in_flight: HashMap<u16, String>,
    next_message_id: u16,
    /// An association this core opened to deliver reports.
    outbound: bool,
}

impl Conn {
    fn new(id: ConnId, peer: Option<SocketAddr>, role: Role, listener: usize) -> Conn {
        Conn {
            id,
            peer,
            association: Association::new(role),
            decoder: StreamDecoder::new(DecodeLimits::default()),
            timer_kind: None,
            timer_deadline: Instant::now(),
            timer_armed: None,
            deliver_pdata: false,
            command_bytes: Vec::new(),
            command_context_id: 0,
            receiving: None,
            sends_in_flight: 0,
            close_when_sent: false,
            closing: false,
            counted: false,
            calling_ae_title: String::new(),
            called_ae_title: String::new(),
            contexts_accepted: 0,
            started: Instant::now(),
            instances_stored: 0,
            instances_failed: 0,
            bytes_received: 0,
            outcome: None,
            listener,
            reports_queued: VecDeque::new(),
            reports_in_flight: HashMap::new(),
            next_message_id: 0,
            outbound: false,
        }
    }

    fn message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        self.next_message_id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Receiving,
    Renaming,
    /// Renamed into its area; waiting for its file's fdatasync and its
    /// directory's shared fsync.
    Syncing,
    Indexing,
}

/// When an instance passed each step of the durability order: logged at
/// debug level with its answer (target `sluice::ingest::timing`), so a
/// slow tail can be traced to the step that caused it.
#[derive(Debug, Default, Clone, Copy)]
struct JobTiming {
    complete: Option<Instant>,
    renamed: Option<Instant>,
    file_synced: Option<Instant>,
    dir_synced: Option<Instant>,
    submitted: Option<Instant>,
    committed: Option<Instant>,
}

impl JobTiming {
    fn micros(from: Option<Instant>, to: Option<Instant>) -> u64 {
        match (from, to) {
            (Some(from), Some(to)) => to.saturating_duration_since(from).as_micros() as u64,
            _ => 0,
        }
    }

    fn log(&self, sop_instance_uid: &str, status: Status) {
        let answered = Some(Instant::now());
        tracing::debug!(
            target: "sluice::ingest::timing",
            sop_instance_uid,
            status = status.0,
            rename_us = Self::micros(self.complete, self.renamed),
            file_sync_us = Self::micros(self.renamed, self.file_synced),
            dir_sync_us = Self::micros(self.renamed, self.dir_synced),
            // Zero when the entry was submitted before the syncs ended.
            wait_batch_us = Self::micros(
                self.file_synced.max(self.dir_synced),
                self.submitted
            ),
            index_us = Self::micros(self.submitted, self.committed.or(answered)),
            total_us = Self::micros(self.complete, answered),
            "instance answered"
        );
    }
}

/// The shared directory fsync of one fan-out directory: the round in flight
/// covers `in_flight` (renamed before it began); instances renamed while it
/// runs wait for the next round.
#[derive(Debug, Default)]
struct DirSyncGroup {
    round: Option<u64>,
    in_flight: Vec<u64>,
    waiting: Vec<u64>,
}

#[derive(Debug)]
struct Job {
    conn_serial: u64,
    context_id: u8,
    rq: CStoreRq,
    calling_ae_title: String,
    transfer_syntax_uid: String,
    facts: TransferSyntaxFacts,
    file_id: FileId,
    tmp_path: PathBuf,
    area: Area,
    final_path: PathBuf,
    file: Option<sluice_io::FileId>,
    opened: bool,
    header_bytes: u64,
    /// Bytes handed to writes so far (header included).
    queued_until: u64,
    pending: Vec<IoBuf>,
    pending_bytes: u64,
    writes_in_flight: u32,
    scanner: Option<DatasetScanner>,
    hasher: DatasetHasher,
    dataset_bytes: u64,
    complete: bool,
    phase: Phase,
    renamed: bool,
    file_sync_in_flight: bool,
    file_synced: bool,
    dir_synced: bool,
    timing: JobTiming,
    failure: Option<(Status, String)>,
    instance: Option<NewInstance>,
    /// Submitted to the index while its syncs run (the entry is marked in
    /// doubt until they succeed); false under `replace`, where the store
    /// waits for durability first.
    early: bool,
    /// The seal (data set length and checksum) to write over the header's
    /// last bytes, once the data set is whole and the file open.
    seal: Option<[u8; SEAL_BYTES]>,
    index: IndexStep,
}

/// Where an instance's index entry stands.
// Held inside a `Job`, which is larger still; boxing the outcome would cost
// an allocation per instance for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum IndexStep {
    NotYet,
    /// In the core's next batch.
    Queued,
    /// Submitted; the writer has not answered.
    InFlight,
    /// Committed, waiting for the file and directory syncs to end.
    Answered(StoreOutcome),
}

impl IndexStep {
    /// The commit's answer if it came (leaving `NotYet`), else `None`
    /// (leaving the step as it was).
    fn take_answer(&mut self) -> Option<StoreOutcome> {
        match std::mem::replace(self, IndexStep::NotYet) {
            IndexStep::Answered(outcome) => Some(outcome),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// One core's handler.
pub(crate) struct CoreHandler {
    shared: Arc<ServerShared>,
    core_index: usize,
    ids: FileIdGenerator,
    writer: IndexWriter,
    /// This core's own mailbox, for the index writer's answers.
    sender: CoreSender<CoreMessage>,
    next_serial: u64,
    conns: HashMap<u64, Conn>,
    serial_of: HashMap<ConnId, u64>,
    next_job: u64,
    jobs: HashMap<u64, Job>,
    ready: Vec<u64>,
    commit_timer: Option<TimerId>,
    known_dirs: HashSet<PathBuf>,
    dir_syncs: HashMap<PathBuf, DirSyncGroup>,
    dir_rounds: HashMap<u64, PathBuf>,
    next_dir_round: u64,
    abandoned_opens: HashMap<u64, PathBuf>,
    free_space: Option<(Instant, u64)>,
    durability_failures: u32,
    /// Files of answered early instances whose in-doubt marks are still to
    /// be cleared in the index (with the next batch, or by `clear_timer`).
    in_doubt_to_clear: Vec<FileId>,
    clear_timer: Option<TimerId>,
}

impl std::fmt::Debug for CoreHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandler")
            .field("core_index", &self.core_index)
            .field("connections", &self.conns.len())
            .field("jobs", &self.jobs.len())
            .finish()
    }
}

impl CoreHandler {
    pub(crate) fn new(
        shared: Arc<ServerShared>,
        core_index: usize,
        sender: CoreSender<CoreMessage>,
    ) -> Self {
        let writer = shared.store.index().writer();
        CoreHandler {
            ids: FileIdGenerator::new(u16::try_from(core_index).unwrap_or(u16::MAX)),
            shared,
            core_index,
            writer,
            sender,
            next_serial: 0,
            conns: HashMap::new(),
            serial_of: HashMap::new(),
            next_job: 0,
            jobs: HashMap::new(),
            ready: Vec::new(),
            commit_timer: None,
            known_dirs: HashSet::new(),
            dir_syncs: HashMap::new(),
            dir_rounds: HashMap::new(),
            next_dir_round: 0,
            abandoned_opens: HashMap::new(),
            free_space: None,
            durability_failures: 0,
            in_doubt_to_clear: Vec::new(),
            clear_timer: None,
        }
    }

    fn config(&self) -> &crate::config::Config {
        self.shared.store.config()
    }

    // ----- connections -----

    fn accepted(&mut self, core: &mut Core, id: ConnId, peer: Option<SocketAddr>, listener: usize) {
        self.next_serial += 1;
        let serial = self.next_serial;
        let mut conn = Conn::new(id, peer, Role::Acceptor, listener);
        self.serial_of.insert(id, serial);
        tracing::trace!(core = self.core_index, serial, peer = ?peer, "accepted");
        self.input(core, serial, &mut conn, Input::TransportConnectIndication);
        self.conns.insert(serial, conn);
    }

    fn received(&mut self, core: &mut Core, serial: u64, conn: &mut Conn, data: &RecvBuf) {
        conn.bytes_received += data.len() as u64;
        tracing::trace!(
            core = self.core_index,
            serial,
            length = data.len(),
            "received"
        );
        let mut offset = 0usize;
        while offset < data.len() && !conn.closing && !conn.close_when_sent {
            let Some(input) = data.get(offset..) else {
                break;
            };
            let step = match conn.decoder.next_event(input) {
                Ok(step) => step,
                Err(error) => {
                    tracing::warn!(peer = ?conn.peer, calling_ae = %conn.calling_ae_title, %error, "malformed PDU; aborting the association");
                    let pdu_type = conn.decoder.failed_pdu_type();
                    self.input(
                        core,
                        serial,
                        conn,
                        Input::InvalidPdu(InvalidPdu::new(pdu_type, &error)),
                    );
                    return;
                }
            };
            let step_end = offset + step.consumed;
            offset = step_end;
            match step.event {
                None => break,
                Some(StreamEvent::Control(pdu)) => {
                    self.input(core, serial, conn, Input::PduReceived(pdu));
                }
                Some(StreamEvent::PDataStart { .. }) => {
                    let actions = conn
                        .association
                        .handle(Input::PDataReceived)
                        .unwrap_or_default();
                    conn.deliver_pdata = actions.contains(&Action::Indication(Indication::PData));
                    self.perform(core, serial, conn, actions);
                }
                Some(StreamEvent::PdvFragment(fragment)) => {
                    if !conn.deliver_pdata {
                        continue;
                    }
                    let message_complete = fragment.is_last && fragment.pdv_complete;
                    if fragment.is_command {
                        if conn.command_bytes.len() + fragment.bytes.len() > COMMAND_BYTES_MAX {
                            self.abort(core, serial, conn, "command set too long");
                            return;
                        }
                        conn.command_bytes.extend_from_slice(fragment.bytes);
                        conn.command_context_id = fragment.presentation_context_id;
                        if message_complete {
                            let bytes = std::mem::take(&mut conn.command_bytes);
                            self.command(
                                core,
                                serial,
                                conn,
                                fragment.presentation_context_id,
                                &bytes,
                            );
                        }
                    } else {
                        // A fragment is the last bytes its step consumed:
                        // lend that range of the receive buffer to the file
                        // write (no copy).
                        let begin = step_end.saturating_sub(fragment.bytes.len());
                        let slice = data.slice(begin..step_end);
                        self.dataset_fragment(
                            core,
                            serial,
                            conn,
                            fragment.presentation_context_id,
                            fragment.bytes,
                            slice,
                            message_complete,
                        );
                    }
                }
            }
        }
        if let Some(Receiving::Job(key)) = conn.receiving {
            self.flush_writes(core, key);
        }
    }

    fn abort(&mut self, core: &mut Core, serial: u64, conn: &mut Conn, reason: &str) {
        tracing::warn!(peer = ?conn.peer, calling_ae = %conn.calling_ae_title, reason, "aborting the association");
        conn.outcome = Some(format!("aborted by Sluice: {reason}"));
        self.input(core, serial, conn, Input::AbortRequest);
        conn.close_when_sent = true;
        self.maybe_close(core, conn);
    }

    fn input(&mut self, core: &mut Core, serial: u64, conn: &mut Conn, input: Input) {
        match conn.association.handle(input) {
            Ok(actions) => self.perform(core, serial, conn, actions),
            Err(error) => {
                tracing::debug!(peer = ?conn.peer, %error, "association state machine refused an input");
            }
        }
    }

    fn perform(&mut self, core: &mut Core, serial: u64, conn: &mut Conn, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendPdu(bytes) => self.send(core, serial, conn, bytes),
                Action::StartArtimTimer => {
                    let after = self.config().network.artim_timeout_ms;
                    self.arm_timer(core, serial, conn, TimerKind::Artim, after);
                }
                Action::StartIdleTimer => {
                    let after = self.config().network.idle_timeout_ms;
                    self.arm_timer(core, serial, conn, TimerKind::Idle, after);
                }
                Action::StopArtimTimer | Action::StopIdleTimer => conn.timer_kind = None,
                Action::CloseTransport => {
                    conn.close_when_sent = true;
                    self.maybe_close(core, conn);
                }
                Action::ConnectTransport => {}
                Action::Indication(indication) => self.indication(core, serial, conn, indication),
            }
        }
    }

    fn send(&mut self, core: &mut Core, serial: u64, conn: &mut Conn, bytes: Vec<u8>) {
        if conn.closing {
            return;
        }
        let length = bytes.len();
        match core.send(conn.id, bytes, TAG_SEND | serial) {
            Ok(()) => {
                conn.sends_in_flight += 1;
                tracing::trace!(
                    core = self.core_index,
                    serial,
                    length,
                    in_flight = conn.sends_in_flight,
                    "send queued"
                );
            }
            Err(error) => {
                tracing::warn!(peer = ?conn.peer, %error, "cannot queue a send; closing");
                conn.outcome
                    .get_or_insert_with(|| format!("send failed: {error}"));
                conn.close_when_sent = true;
            }
        }
    }

    fn maybe_close(&mut self, core: &mut Core, conn: &mut Conn) {
        if conn.close_when_sent && conn.sends_in_flight == 0 && !conn.closing {
            conn.closing = true;
            core.close_connection(conn.id);
        }
    }

    /// One timer per connection: a later deadline only moves the deadline,
    /// the armed timer re-arms itself when it fires early. This keeps the
    /// idle timer (restarted on every PDU) at one operation per period.
    fn arm_timer(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        kind: TimerKind,
        after: Duration,
    ) {
        conn.timer_kind = Some(kind);
        conn.timer_deadline = Instant::now() + after;
        if conn.timer_armed.is_none() {
            match core.timer(after, TAG_CONN_TIMER | serial) {
                Ok(timer) => conn.timer_armed = Some(timer),
                Err(error) => tracing::warn!(%error, "cannot arm an association timer"),
            }
        }
    }

    fn timer_fired(&mut self, core: &mut Core, serial: u64, conn: &mut Conn) {
        conn.timer_armed = None;
        let Some(kind) = conn.timer_kind else {
            return;
        };
        let now = Instant::now();
        if now < conn.timer_deadline {
            let remaining = conn.timer_deadline - now;
            if let Ok(timer) = core.timer(remaining, TAG_CONN_TIMER | serial) {
                conn.timer_armed = Some(timer);
            }
            return;
        }
        conn.timer_kind = None;
        let (input, what) = match kind {
            TimerKind::Artim => (Input::ArtimExpired, "ARTIM timeout"),
            TimerKind::Idle => (Input::IdleExpired, "idle timeout"),
        };
        tracing::warn!(peer = ?conn.peer, calling_ae = %conn.calling_ae_title, "{what}: aborting the association");
        conn.outcome = Some(what.to_owned());
        self.input(core, serial, conn, input);
    }

    fn indication(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        indication: Indication,
    ) {
        match indication {
            Indication::AssociateRequest(rq) => {
                conn.calling_ae_title = rq.calling_ae_title.trim().to_owned();
                conn.called_ae_title = rq.called_ae_title.trim().to_owned();
                let outcome = self.negotiate_limited(&rq, conn.listener);
                match &outcome {
                    NegotiationOutcome::Accept { negotiated, .. } => {
                        conn.decoder
                            .set_pdata_length_max(negotiated.pdu_length_max_local);
                        conn.counted = true;
                        conn.contexts_accepted = negotiated.presentation_contexts.len();
                    }
                    NegotiationOutcome::Reject(rj) => {
                        let (result, source, reason) = rj.codes();
                        tracing::warn!(
                            peer = ?conn.peer,
                            calling_ae = %conn.calling_ae_title,
                            called_ae = %conn.called_ae_title,
                            "association rejected: result {result}, source {source}, reason {reason}"
                        );
                        conn.outcome = Some(format!("rejected {result}/{source}/{reason}"));
                    }
                }
                self.input(core, serial, conn, Input::AssociateResponse(outcome.into()));
            }
            Indication::ReleaseRequest | Indication::ReleaseCollision => {
                conn.outcome.get_or_insert_with(|| "released".to_owned());
                self.input(core, serial, conn, Input::ReleaseResponse);
            }
            Indication::Aborted(cause) => {
                conn.outcome
                    .get_or_insert_with(|| format!("aborted: {cause:?}"));
                self.fail_reports(conn, &format!("association aborted: {cause:?}"));
            }
            Indication::AssociateAccepted(negotiated) => {
                conn.decoder
                    .set_pdata_length_max(negotiated.pdu_length_max_local);
                conn.contexts_accepted = negotiated.presentation_contexts.len();
                self.send_next_report(core, serial, conn);
            }
            Indication::AssociateRejected(rj) => {
                let (result, source, reason) = rj.codes();
                let why = format!(
                    "association rejected: result {result}, source {source}, reason {reason}"
                );
                conn.outcome = Some(why.clone());
                self.fail_reports(conn, &why);
            }
            Indication::ReleaseConfirm => {
                conn.outcome.get_or_insert_with(|| "released".to_owned());
            }
            _ => {}
        }
    }

    /// Negotiation under the association limits: global and per calling AE,
    /// counted atomically across cores (increment first, undo on refusal).
    fn negotiate_limited(
        &self,
        rq: &sluice_net::pdu::AssociateRq,
        listener: usize,
    ) -> NegotiationOutcome {
        let network = &self.config().network;
        // The separate commitment AE: on its own port, or on the main port
        // under its own called AE title.
        let policy = match &self.shared.commitment_policy {
            Some(commitment)
                if Some(listener) == self.shared.commitment_listener
                    || (self.shared.commitment_listener.is_none()
                        && rq.called_ae_title.trim()
                            == self.config().commitment_ae_title().as_str()) =>
            {
                commitment
            }
            _ => &self.shared.policy,
        };
        let current = self.shared.established.fetch_add(1, Ordering::SeqCst);
        let load = AssociationLoad {
            current,
            limit: network.max_associations,
        };
        let mut outcome = negotiate(policy, rq, load);
        if matches!(outcome, NegotiationOutcome::Accept { .. }) {
            let calling = rq.calling_ae_title.trim().to_owned();
            let over = match self.shared.per_calling_ae.lock() {
                Ok(mut per_ae) => {
                    let count = per_ae.entry(calling).or_insert(0);
                    if *count >= network.max_associations_per_calling_ae {
                        true
                    } else {
                        *count += 1;
                        false
                    }
                }
                Err(_) => true,
            };
            if over {
                outcome = NegotiationOutcome::Reject(AssociateRj {
                    result: RejectResult::Transient,
                    reason: RejectReason::LocalLimitExceeded,
                });
            }
        }
        if !matches!(outcome, NegotiationOutcome::Accept { .. }) {
            self.shared.established.fetch_sub(1, Ordering::SeqCst);
        }
        outcome
    }

    fn connection_ended(&mut self, core: &mut Core, serial: u64, mut conn: Conn) {
        if let Some(Receiving::Job(key)) = conn.receiving.take() {
            self.abandon_job(core, key);
        }
        let why = conn
            .outcome
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned());
        self.fail_reports(
            &mut conn,
            &format!("association ended before the report was answered: {why}"),
        );
        if conn.counted {
            self.shared.established.fetch_sub(1, Ordering::SeqCst);
            if let Ok(mut per_ae) = self.shared.per_calling_ae.lock() {
                if let Some(count) = per_ae.get_mut(&conn.calling_ae_title) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        per_ae.remove(&conn.calling_ae_title);
                    }
                }
            }
        }
        if let Some(timer) = conn.timer_armed.take() {
            core.cancel_timer(timer);
        }
        for (key, job) in self
            .jobs
            .iter()
            .filter(|(_, job)| job.conn_serial == serial)
        {
            tracing::debug!(
                job = key,
                phase = ?job.phase,
                complete = job.complete,
                opened = job.opened,
                writes_in_flight = job.writes_in_flight,
                pending = job.pending.len(),
                ready = self.ready.len(),
                commit_timer = self.commit_timer.is_some(),
                "instance still in progress when its association ended"
            );
        }
        tracing::info!(
            peer = %conn.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            calling_ae = %conn.calling_ae_title,
            called_ae = %conn.called_ae_title,
            contexts_accepted = conn.contexts_accepted,
            instances_stored = conn.instances_stored,
            instances_failed = conn.instances_failed,
            bytes = conn.bytes_received,
            duration_ms = conn.started.elapsed().as_millis() as u64,
            outcome = %conn.outcome.take().unwrap_or_else(|| "connection closed".to_owned()),
            "association ended"
        );
    }

    // ----- DIMSE -----

    fn command(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        bytes: &[u8],
    ) {
        let command = match Command::decode(bytes) {
            Ok(command) => command,
            Err(error) => {
                let reason = format!("undecodable command set: {error}");
                self.abort(core, serial, conn, &reason);
                return;
            }
        };
        match command {
            Command::CEchoRq(rq) => {
                let rsp = Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: rq.message_id,
                    affected_sop_class_uid: Some(rq.affected_sop_class_uid),
                    status: Status::SUCCESS,
                    detail: StatusDetail::default(),
                });
                self.send_command(core, serial, conn, context_id, &rsp);
            }
            Command::CStoreRq(rq) => self.store_requested(core, serial, conn, context_id, rq),
            Command::NActionRq(rq) => self.action_requested(core, serial, conn, context_id, rq),
            Command::NEventReportRsp(rsp) => {
                if rsp.data_set {
                    conn.receiving = Some(Receiving::Ignore);
                }
                match conn
                    .reports_in_flight
                    .remove(&rsp.message_id_being_responded_to)
                {
                    Some(transaction_uid) => {
                        let outcome = if crate::commit::report_accepted(rsp.status) {
                            DeliveryOutcome::Delivered(rsp.status)
                        } else {
                            DeliveryOutcome::Refused(rsp.status)
                        };
                        self.shared.tracker.delivery(transaction_uid, outcome);
                    }
                    None => tracing::warn!(
                        peer = ?conn.peer,
                        message_id = rsp.message_id_being_responded_to,
                        "N-EVENT-REPORT-RSP to no report sent; ignored"
                    ),
                }
                if conn.outbound && conn.reports_in_flight.is_empty() {
                    self.send_next_report(core, serial, conn);
                }
            }
            other => {
                let reason = format!("unsupported command {:?}", std::mem::discriminant(&other));
                self.abort(core, serial, conn, &reason);
            }
        }
    }

    fn send_command(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        command: &Command,
    ) {
        let Ok(actions) = conn.association.handle(Input::PDataRequest) else {
            return;
        };
        self.perform(core, serial, conn, actions);
        let Some(pdu_length_max_peer) =
            conn.association.negotiated().map(|n| n.pdu_length_max_peer)
        else {
            return;
        };
        let mut out = Vec::new();
        let encoded = command.encode().ok().and_then(|bytes| {
            encode_message(context_id, true, &bytes, pdu_length_max_peer, &mut out).ok()
        });
        if encoded.is_some() {
            self.send(core, serial, conn, out);
        }
    }

    fn free_space_bytes(&mut self) -> Option<u64> {
        if let Some((at, bytes)) = self.free_space {
            if at.elapsed() < FREE_SPACE_CACHE {
                return Some(bytes);
            }
        }
        let stats = rustix::fs::statvfs(self.shared.store.layout().root()).ok()?;
        let bytes = stats.f_bavail.saturating_mul(stats.f_frsize);
        self.free_space = Some((Instant::now(), bytes));
        Some(bytes)
    }

    fn store_requested(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        rq: CStoreRq,
    ) {
        let refuse = |status: Status, reason: String| {
            Receiving::Discard(Refusal {
                context_id,
                rq: rq.clone(),
                status,
                reason,
            })
        };
        let context = conn
            .association
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
            .map(|context| {
                (
                    context.abstract_syntax.clone(),
                    context.transfer_syntax.clone(),
                )
            });
        let Some((abstract_syntax, transfer_syntax_uid)) = context else {
            self.abort(
                core,
                serial,
                conn,
                "C-STORE on a presentation context that was not accepted",
            );
            return;
        };
        if conn.receiving.is_some() {
            self.abort(
                core,
                serial,
                conn,
                "C-STORE-RQ before the previous data set ended",
            );
            return;
        }
        let floor = self.config().storage.free_space_floor;
        let in_flight_max = self.config().storage.instances_in_flight_max_per_core as usize;
        let facts = uid::transfer_syntax(&transfer_syntax_uid).map(|ts| ts.facts);
        conn.receiving = Some(if abstract_syntax != rq.affected_sop_class_uid {
            refuse(
                Status::SOP_CLASS_NOT_SUPPORTED,
                format!(
                    "SOP class {} sent on the presentation context of {abstract_syntax}",
                    rq.affected_sop_class_uid
                ),
            )
        } else if self.shared.store.is_refusing() {
            refuse(
                Status::OUT_OF_RESOURCES,
                "the store refuses after repeated durability failures".into(),
            )
        } else if self.jobs.len() >= in_flight_max {
            refuse(
                Status::OUT_OF_MEMORY,
                format!("{in_flight_max} instances in flight on this core"),
            )
        } else if floor > 0 && self.free_space_bytes().is_some_and(|free| free < floor) {
            refuse(
                Status::OUT_OF_DISK_SPACE,
                format!("free space below the floor of {floor} bytes"),
            )
        } else {
            match (
                facts,
                DatasetScanner::for_transfer_syntax(&transfer_syntax_uid),
            ) {
                (Some(facts), Ok(scanner)) => match self.start_job(
                    core,
                    serial,
                    conn,
                    context_id,
                    &rq,
                    transfer_syntax_uid,
                    facts,
                    scanner,
                ) {
                    Ok(key) => Receiving::Job(key),
                    Err((status, reason)) => refuse(status, reason),
                },
                _ => refuse(
                    Status::CANNOT_UNDERSTAND,
                    format!("transfer syntax {transfer_syntax_uid} cannot be scanned"),
                ),
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn start_job(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &Conn,
        context_id: u8,
        rq: &CStoreRq,
        transfer_syntax_uid: String,
        facts: TransferSyntaxFacts,
        scanner: DatasetScanner,
    ) -> Result<u64, (Status, String)> {
        let header = file_header(&FileMeta {
            sop_class_uid: &rq.affected_sop_class_uid,
            sop_instance_uid: &rq.affected_sop_instance_uid,
            transfer_syntax_uid: &transfer_syntax_uid,
            source_ae_title: &conn.calling_ae_title,
        })
        .map_err(|error| (Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, error.to_string()))?;
        let file_id = self.ids.next_id().ok_or((
            Status::OUT_OF_RESOURCES,
            "file id counter exhausted".to_owned(),
        ))?;
        let layout = self.shared.store.layout();
        let tmp_path = layout.tmp_path(self.core_index, file_id);
        self.ensure_dir(&layout.tmp_dir_of_core(self.core_index))
            .map_err(|error| {
                (
                    Status::OUT_OF_RESOURCES,
                    format!("cannot create the temporary directory: {error}"),
                )
            })?;
        self.next_job += 1;
        let key = self.next_job;
        core.open(
            At::Cwd,
            &tmp_path,
            OpenOptions::create_new_write(),
            TAG_OPEN | key,
        )
        .map_err(|error| {
            (
                Status::OUT_OF_MEMORY,
                format!("cannot open a temporary file: {error}"),
            )
        })?;
        let header_bytes = header.len() as u64;
        let job = Job {
            conn_serial: serial,
            context_id,
            rq: rq.clone(),
            calling_ae_title: conn.calling_ae_title.clone(),
            transfer_syntax_uid,
            facts,
            file_id,
            tmp_path,
            area: Area::Objects,
            final_path: PathBuf::new(),
            file: None,
            opened: false,
            header_bytes,
            queued_until: 0,
            pending: vec![IoBuf::from(header)],
            pending_bytes: header_bytes,
            writes_in_flight: 0,
            scanner: Some(scanner),
            hasher: DatasetHasher::new(),
            dataset_bytes: 0,
            complete: false,
            phase: Phase::Receiving,
            file_sync_in_flight: false,
            file_synced: false,
            dir_synced: false,
            timing: JobTiming::default(),
            renamed: false,
            failure: None,
            instance: None,
            early: false,
            seal: None,
            index: IndexStep::NotYet,
        };
        self.jobs.insert(key, job);
        Ok(key)
    }

    #[allow(clippy::too_many_arguments)]
    fn dataset_fragment(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        bytes: &[u8],
        slice: Option<RecvBuf>,
        message_complete: bool,
    ) {
        match &conn.receiving {
            None => {
                self.abort(core, serial, conn, "data set without a C-STORE-RQ");
            }
            Some(Receiving::Ignore) => {
                if message_complete {
                    conn.receiving = None;
                }
            }
            Some(Receiving::Action { .. }) => {
                self.action_fragment(core, serial, conn, context_id, bytes, message_complete);
            }
            Some(Receiving::Discard(refusal)) => {
                if refusal.context_id != context_id {
                    self.abort(
                        core,
                        serial,
                        conn,
                        "data set on another presentation context than its command",
                    );
                    return;
                }
                if message_complete {
                    let refusal = refusal.clone();
                    conn.receiving = None;
                    self.refused(core, serial, conn, refusal);
                }
            }
            Some(Receiving::Job(key)) => {
                let key = *key;
                let Some(job) = self.jobs.get_mut(&key) else {
                    conn.receiving = None;
                    return;
                };
                if job.context_id != context_id {
                    self.abort(
                        core,
                        serial,
                        conn,
                        "data set on another presentation context than its command",
                    );
                    return;
                }
                job.dataset_bytes += bytes.len() as u64;
                if job.failure.is_none() {
                    if let Some(scanner) = job.scanner.as_mut() {
                        // A structure error is kept by the scanner and
                        // reported by `finish`; the bytes are still written
                        // (they are unlinked on refusal).
                        let _ = scanner.feed(bytes);
                    }
                    job.hasher.update(bytes);
                    match slice {
                        Some(slice) => {
                            job.pending_bytes += slice.len() as u64;
                            job.pending.push(IoBuf::from(slice));
                        }
                        None => {
                            job.failure = Some((
                                Status::OUT_OF_MEMORY,
                                "receive buffer slice out of range".into(),
                            ));
                        }
                    }
                    if job.pending.len() >= IOVECS_PER_WRITE_MAX {
                        self.flush_writes(core, key);
                    }
                }
                if message_complete {
                    conn.receiving = None;
                    self.dataset_complete(core, key, conn);
                }
            }
        }
    }

    fn refused(&mut self, core: &mut Core, serial: u64, conn: &mut Conn, refusal: Refusal) {
        conn.instances_failed += 1;
        tracing::warn!(
            peer = ?conn.peer,
            calling_ae = %conn.calling_ae_title,
            sop_instance_uid = %refusal.rq.affected_sop_instance_uid,
            status = %format!("{:04X}", refusal.status.0),
            reason = %refusal.reason,
            "C-STORE refused"
        );
        self.shared
            .store
            .shared
            .events
            .publish(StoreEvent::Rejected {
                sop_instance_uid: refusal.rq.affected_sop_instance_uid.clone(),
                calling_ae_title: conn.calling_ae_title.clone(),
                status: refusal.status.0,
                reason: refusal.reason.clone(),
            });
        let rsp = store_rsp(&refusal.rq, refusal.status);
        self.send_command(core, serial, conn, refusal.context_id, &rsp);
    }

    fn dataset_complete(&mut self, core: &mut Core, key: u64, conn: &mut Conn) {
        self.flush_writes(core, key);
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.complete = true;
        job.timing.complete = Some(Instant::now());
        if job.failure.is_none() {
            let head = job.scanner.take().map(DatasetScanner::finish);
            let image_class = uid::is_image_sop_class(&job.rq.affected_sop_class_uid);
            let verdict = match &head {
                Some(head) => check_store(
                    head,
                    &StoreCheck {
                        affected_sop_class_uid: &job.rq.affected_sop_class_uid,
                        affected_sop_instance_uid: &job.rq.affected_sop_instance_uid,
                        transfer_syntax: job.facts,
                        image_class,
                    },
                )
                .map_err(|rejection| (rejection.status(), rejection.to_string())),
                None => Err((Status::CANNOT_UNDERSTAND, "no scanner".to_owned())),
            };
            match (verdict, head) {
                (Ok(()), Some(head)) => {
                    job.instance = Some(new_instance(job, &head));
                    job.seal = Some(seal(job.dataset_bytes, job.hasher.finish()));
                }
                (Err(failure), _) => job.failure = Some(failure),
                (Ok(()), None) => job.failure = Some((Status::CANNOT_UNDERSTAND, "no head".into())),
            }
        }
        if job.failure.is_some() {
            self.fail_job(core, key, Some(conn));
        } else {
            self.write_seal(core, key);
            if self.jobs.get(&key).is_some_and(|job| job.failure.is_some()) {
                self.fail_job(core, key, Some(conn));
                return;
            }
            self.submit_early(core, key);
            self.maybe_rename(core, key);
        }
    }

    /// Writes the seal over the header's last bytes once the file is open
    /// (a write like the others: the rename and the `fdatasync` wait for it).
    fn write_seal(&mut self, core: &mut Core, key: u64) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let Some(file) = job.file else {
            // Still opening: `opened` calls this again.
            return;
        };
        let Some(value) = job.seal.take() else {
            return;
        };
        let offset = job.header_bytes - SEAL_BYTES as u64;
        match core.write_at(
            file,
            offset,
            vec![IoBuf::from(value.to_vec())],
            TAG_WRITE | key,
        ) {
            Ok(()) => job.writes_in_flight += 1,
            Err(error) => {
                job.failure = Some((
                    Status::OUT_OF_MEMORY,
                    format!("cannot submit the seal's write: {error}"),
                ));
            }
        }
    }

    /// The data set is whole and acceptable: its index entry is committed
    /// now, beside the last writes, the rename and the syncs, marked in
    /// doubt until they all succeed. Not under `replace`: replacing removes
    /// the stored instance's entry, which an undo could not give back.
    fn submit_early(&mut self, core: &mut Core, key: u64) {
        if self.shared.store.config().storage.duplicate_policy == ConfigDuplicatePolicy::Replace {
            return;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.failure.is_none() && matches!(job.index, IndexStep::NotYet) {
            job.early = true;
            self.shared.in_doubt.insert(job.file_id);
            self.enqueue_for_index(core, key);
        }
    }

    // ----- the durability order -----

    fn flush_writes(&mut self, core: &mut Core, key: u64) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let Some(file) = job.file else {
            return;
        };
        if job.failure.is_some() {
            job.pending.clear();
            return;
        }
        while !job.pending.is_empty() {
            let take = job.pending.len().min(IOVECS_PER_WRITE_MAX);
            let bufs: Vec<IoBuf> = job.pending.drain(..take).collect();
            let length: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
            match core.write_at(file, job.queued_until, bufs, TAG_WRITE | key) {
                Ok(()) => {
                    job.writes_in_flight += 1;
                    job.queued_until += length;
                    job.pending_bytes -= length;
                }
                Err(error) => {
                    job.pending.clear();
                    job.failure = Some((
                        Status::OUT_OF_MEMORY,
                        format!("cannot submit a write: {error}"),
                    ));
                    return;
                }
            }
        }
    }

    /// Every byte written: the file moves into its area (step 3).
    fn maybe_rename(&mut self, core: &mut Core, key: u64) {
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        if job.phase != Phase::Receiving
            || !job.complete
            || job.failure.is_some()
            || job.writes_in_flight > 0
            || !job.pending.is_empty()
            || job.seal.is_some()
            || job.file.is_none()
        {
            return;
        }
        let triplet_stored = {
            let Some(instance) = job.instance.as_ref() else {
                return;
            };
            let triplet = &instance.triplet;
            // Under `replace` a newcomer always ends in objects/.
            let replacing = self.shared.store.config().storage.duplicate_policy
                == ConfigDuplicatePolicy::Replace;
            // The entry may already be this instance's own (committed early).
            !replacing
                && self
                    .shared
                    .store
                    .index()
                    .read()
                    .and_then(|read| {
                        read.stored_file_id(
                            &triplet.study_instance_uid,
                            &triplet.series_instance_uid,
                            &triplet.sop_instance_uid,
                        )
                    })
                    .map(|stored| stored.is_some_and(|file_id| file_id != job.file_id))
                    .unwrap_or(false)
        };
        let layout = self.shared.store.layout().clone();
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        // A triplet already stored goes straight to quarantine (the index
        // confirms or corrects the guess inside its transaction).
        job.area = if triplet_stored {
            Area::Quarantine
        } else {
            Area::Objects
        };
        job.final_path = layout.area_path(job.area, job.file_id);
        job.phase = Phase::Renaming;
        let fanout = layout.fanout_dir(job.area, job.file_id);
        let tmp_path = job.tmp_path.clone();
        let final_path = job.final_path.clone();
        if let Err(error) = self.ensure_dir(&fanout) {
            self.durability_failed(
                core,
                key,
                format!("cannot create {}: {error}", fanout.display()),
            );
            return;
        }
        if let Err(error) = core.rename(At::Cwd, &tmp_path, At::Cwd, &final_path, TAG_RENAME | key)
        {
            self.durability_failed(core, key, format!("cannot submit rename: {error}"));
        }
    }

    /// Renamed into its area: the file's fdatasync and the directory's
    /// shared fsync run together (step 4).
    fn renamed(&mut self, core: &mut Core, key: u64) {
        let layout = self.shared.store.layout().clone();
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.renamed = true;
        job.timing.renamed = Some(Instant::now());
        job.phase = Phase::Syncing;
        let dir = layout.fanout_dir(job.area, job.file_id);
        let Some(file) = job.file else {
            self.durability_failed(core, key, "the file is not open".into());
            return;
        };
        match core.sync(file, SyncKind::Data, TAG_SYNC | key) {
            Ok(()) => job.file_sync_in_flight = true,
            Err(error) => {
                self.durability_failed(core, key, format!("cannot submit fdatasync: {error}"));
                return;
            }
        }
        let group = self.dir_syncs.entry(dir.clone()).or_default();
        if group.round.is_some() {
            group.waiting.push(key);
        } else {
            group.in_flight.push(key);
            self.start_dir_round(core, dir);
        }
    }

    /// Starts an fsync of `dir` covering its group's `in_flight` instances.
    fn start_dir_round(&mut self, core: &mut Core, dir: PathBuf) {
        let round = self.next_dir_round;
        self.next_dir_round = self.next_dir_round.wrapping_add(1) & !TAG_KIND_MASK;
        if let Some(group) = self.dir_syncs.get_mut(&dir) {
            group.round = Some(round);
        }
        let submitted = core.open(
            At::Cwd,
            &dir,
            OpenOptions::directory(),
            TAG_DIR_OPEN | round,
        );
        self.dir_rounds.insert(round, dir);
        if let Err(error) = submitted {
            self.dir_round_ended(
                core,
                round,
                Err(format!("cannot open the directory: {error}")),
            );
        }
    }

    /// A directory fsync round ended. On success its instances have their
    /// directory entries durable; on failure they fail, and so do those
    /// waiting for the next round (after a failed fsync a later success no
    /// longer proves that earlier renames reached the disk).
    fn dir_round_ended(&mut self, core: &mut Core, round: u64, result: Result<(), String>) {
        let Some(dir) = self.dir_rounds.remove(&round) else {
            return;
        };
        let Some(group) = self.dir_syncs.get_mut(&dir) else {
            return;
        };
        group.round = None;
        let covered = std::mem::take(&mut group.in_flight);
        match result {
            Ok(()) => {
                let next = std::mem::take(&mut group.waiting);
                if next.is_empty() {
                    self.dir_syncs.remove(&dir);
                } else {
                    group.in_flight = next;
                    self.start_dir_round(core, dir);
                }
                for key in covered {
                    if let Some(job) = self.jobs.get_mut(&key) {
                        job.dir_synced = true;
                        job.timing.dir_synced = Some(Instant::now());
                    }
                    self.maybe_index(core, key);
                }
            }
            Err(reason) => {
                let mut failed = covered;
                failed.append(&mut group.waiting);
                self.dir_syncs.remove(&dir);
                tracing::error!(
                    dir = %dir.display(),
                    instances = failed.len(),
                    %reason,
                    "directory fsync failed; its instances fail"
                );
                // One failed fsync is one failure, however many instances.
                self.count_durability_failure();
                for key in failed {
                    if let Some(job) = self.jobs.get_mut(&key) {
                        job.failure = Some((Status::OUT_OF_RESOURCES, reason.clone()));
                    }
                    self.fail_job(core, key, None);
                }
            }
        }
    }

    fn file_synced(&mut self, core: &mut Core, key: u64, result: Result<(), String>) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.file_sync_in_flight = false;
        if let Some(file) = job.file.take() {
            let _ = core.close_file(file, TAG_IGNORED);
        }
        match result {
            // Final: an fsync error is never retried into a success.
            Err(reason) => self.durability_failed(core, key, reason),
            Ok(()) if job.failure.is_some() => self.fail_job(core, key, None),
            Ok(()) => {
                job.file_synced = true;
                job.timing.file_synced = Some(Instant::now());
                self.maybe_index(core, key);
            }
        }
    }

    /// File and directory durable: an early instance whose commit has
    /// answered is finished; a late one (`replace`) joins the core's index
    /// batch now (step 5).
    fn maybe_index(&mut self, core: &mut Core, key: u64) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.phase != Phase::Syncing
            || !job.file_synced
            || !job.dir_synced
            || job.failure.is_some()
        {
            return;
        }
        job.phase = Phase::Indexing;
        if !job.early {
            self.enqueue_for_index(core, key);
            return;
        }
        if let Some(outcome) = job.index.take_answer() {
            self.store_outcome(core, key, outcome);
        }
    }

    /// Puts the instance in the core's next index batch, and submits the
    /// batch now or when the group-commit window ends.
    fn enqueue_for_index(&mut self, core: &mut Core, key: u64) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.index = IndexStep::Queued;
        self.ready.push(key);
        let storage = &self.shared.store.config().storage;
        let window = storage.group_commit_window_us;
        let batch_max = storage.group_commit_max_instances as usize;
        // Waiting for the window only pays when another instance can join
        // the batch: with none complete and on its way, commit now (a lone
        // association would otherwise pay the whole window per instance).
        let another_on_its_way = self.jobs.values().any(|other| {
            other.complete
                && other.failure.is_none()
                && matches!(other.index, IndexStep::NotYet)
                && matches!(
                    other.phase,
                    Phase::Receiving | Phase::Renaming | Phase::Syncing
                )
        });
        if window.is_zero() || self.ready.len() >= batch_max || !another_on_its_way {
            self.submit_index_batch(core);
        } else if self.commit_timer.is_none() {
            match core.timer(window, TAG_COMMIT_TIMER) {
                Ok(timer) => self.commit_timer = Some(timer),
                Err(_) => self.submit_index_batch(core),
            }
        }
    }

    fn submit_index_batch(&mut self, core: &mut Core) {
        if let Some(timer) = self.commit_timer.take() {
            core.cancel_timer(timer);
        }
        if self.ready.is_empty() {
            return;
        }
        let storage = &self.shared.store.config().storage;
        let duplicate_policy: DuplicatePolicy = storage.duplicate_policy.into();
        let conflict_policy: ConflictPolicy = storage.uid_conflict_policy.into();
        // Marks of instances answered since the last batch ride along: the
        // writer coalesces queued batches into one transaction.
        self.submit_in_doubt_clears(core);
        let queued: Vec<u64> = std::mem::take(&mut self.ready);
        let mut keys = Vec::with_capacity(queued.len());
        let mut ops = Vec::with_capacity(queued.len());
        let mut failed = Vec::new();
        let now = Instant::now();
        for key in queued {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            let instance = match (&job.failure, &job.instance) {
                (None, Some(instance)) => instance.clone(),
                // Failed while queued (a sync error): nothing to index.
                _ => {
                    job.index = IndexStep::NotYet;
                    failed.push(key);
                    continue;
                }
            };
            job.timing.submitted = Some(now);
            job.index = IndexStep::InFlight;
            ops.push(WriteOp::Store(StoreRequest {
                instance,
                duplicate_policy,
                conflict_policy,
                in_doubt: job.early,
            }));
            keys.push(key);
        }
        for key in failed {
            self.fail_job(core, key, None);
        }
        if keys.is_empty() {
            return;
        }
        let sender = self.sender.clone();
        let callback_keys = keys.clone();
        let batch = sluice_index::Batch::with_callback(ops, move |result| {
            let message = CoreMessage::Committed {
                jobs: callback_keys,
                result,
            };
            if sender.send_timeout(message, MAILBOX_SEND_WAIT).is_err() {
                tracing::error!("a core did not take an index result; its senders time out");
            }
        });
        // Answered at commit, before the index's own flush: every file these
        // entries name is sealed and made durable before its instance is
        // answered, and start-up recovery indexes a sealed file whose entry a
        // crash took. Not under `replace`: the entry it removes could not be
        // rebuilt from the replaced file, which goes to orphans/.
        let batch = if duplicate_policy == DuplicatePolicy::Replace {
            batch
        } else {
            batch.answered_at_commit()
        };
        let submitted = match self.writer.try_submit(batch) {
            Ok(()) => Ok(()),
            // Backpressure: the writer is behind; wait for room (this core
            // receives nothing meanwhile, which is the intended effect).
            Err(SubmitError::Full(batch)) => self.writer.submit(batch),
            Err(other) => Err(other),
        };
        if let Err(error) = submitted {
            for key in keys {
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.index = IndexStep::NotYet;
                }
                self.durability_failed(core, key, format!("index writer: {error}"));
            }
        }
    }

    /// Submits the in-doubt marks to clear (files now durable) as their own
    /// small batch. Only start-up recovery reads the marks, so a failure here
    /// costs nothing but a recheck of those files at the next start.
    fn submit_in_doubt_clears(&mut self, core: &mut Core) {
        if let Some(timer) = self.clear_timer.take() {
            core.cancel_timer(timer);
        }
        if self.in_doubt_to_clear.is_empty() {
            return;
        }
        let file_ids = std::mem::take(&mut self.in_doubt_to_clear);
        // Nobody waits for it: a lost clear only costs a recheck at start.
        let batch = sluice_index::Batch::with_callback(
            vec![WriteOp::ClearInDoubt(file_ids)],
            |result| {
                if let Err(error) = result {
                    tracing::warn!(%error, "could not clear in-doubt marks; start-up recovery will check those files");
                }
            },
        )
        .answered_at_commit();
        if let Err(error) = self.writer.try_submit(batch) {
            if let SubmitError::Full(batch) = error {
                // Keep them for the next batch or the timer.
                if let Some(WriteOp::ClearInDoubt(file_ids)) = batch.ops().first() {
                    self.in_doubt_to_clear = file_ids.clone();
                    self.arm_clear_timer(core);
                }
            } else {
                tracing::warn!(%error, "could not clear in-doubt marks; start-up recovery will check those files");
            }
        }
    }

    /// Clears the marks of instances answered when no batch follows soon.
    fn arm_clear_timer(&mut self, core: &mut Core) {
        if self.clear_timer.is_none() && !self.in_doubt_to_clear.is_empty() {
            if let Ok(timer) = core.timer(IN_DOUBT_CLEAR_DELAY, TAG_CLEAR_TIMER) {
                self.clear_timer = Some(timer);
            }
        }
    }

    /// Undoes the entry of an early instance that failed after its commit
    /// (a write, rename or sync error): the sender will be told the failure,
    /// so the index must not keep it. The failure is answered only once the
    /// undo committed (its [`CoreMessage::Committed`] comes back here), so a
    /// sender retrying at once is not held as a duplicate of itself. True
    /// when an undo is on its way; false when there is nothing to undo or it
    /// could not be submitted (the entry then stays in doubt, and start-up
    /// recovery removes it: the file is gone).
    fn undo_entry(&mut self, key: u64, outcome: &StoreOutcome) -> bool {
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        let Some(instance) = job.instance.as_ref() else {
            return false;
        };
        let undo = match outcome.disposition() {
            None => WriteOp::Remove(instance.triplet.clone()),
            Some(Disposition::Quarantined { quarantine_id }) => {
                WriteOp::PurgeQuarantine(*quarantine_id)
            }
            Some(Disposition::Replaced { .. }) => {
                tracing::error!(
                    sop_instance_uid = %instance.triplet.sop_instance_uid,
                    "an instance that replaced another failed to become durable; its entry stays in doubt for start-up recovery"
                );
                return false;
            }
            Some(_) => return false,
        };
        tracing::warn!(
            sop_instance_uid = %instance.triplet.sop_instance_uid,
            "removing the index entry of an instance that failed to become durable"
        );
        let ops = vec![undo, WriteOp::ClearInDoubt(vec![job.file_id])];
        job.index = IndexStep::InFlight;
        let sender = self.sender.clone();
        let batch = sluice_index::Batch::with_callback(ops, move |result| {
            let message = CoreMessage::Committed {
                jobs: vec![key],
                result,
            };
            if sender.send_timeout(message, MAILBOX_SEND_WAIT).is_err() {
                tracing::error!("a core did not take an index result; its senders time out");
            }
        })
        // If a crash takes the undo, the entry is still in doubt and its
        // file gone (or incomplete): start-up recovery removes it.
        .answered_at_commit();
        let submitted = match self.writer.try_submit(batch) {
            Err(SubmitError::Full(batch)) => self.writer.submit(batch),
            other => other,
        };
        if let Err(error) = submitted {
            tracing::error!(%error, "cannot submit the undo of an index entry; it stays in doubt for start-up recovery");
            if let Some(job) = self.jobs.get_mut(&key) {
                job.index = IndexStep::NotYet;
            }
            return false;
        }
        true
    }

    fn committed(&mut self, core: &mut Core, keys: Vec<u64>, result: BatchResult) {
        match result {
            Err(error) => {
                let status = status_of_index_error(&error);
                // One failed transaction is one failure, however many
                // instances it carried.
                self.count_durability_failure();
                for key in keys {
                    if let Some(job) = self.jobs.get_mut(&key) {
                        job.index = IndexStep::NotYet;
                        job.failure = Some((status, format!("index commit failed: {error}")));
                    }
                    self.fail_job(core, key, None);
                }
            }
            Ok(items) => {
                self.durability_failures = 0;
                for (key, item) in keys.into_iter().zip(items) {
                    if let Some(job) = self.jobs.get_mut(&key) {
                        job.index = IndexStep::NotYet;
                    }
                    match item {
                        Ok(WriteOutcome::Store(outcome)) => {
                            self.store_committed(core, key, outcome)
                        }
                        // An undo (`undo_entry`) committed: answer the failure.
                        Ok(_) => self.fail_job(core, key, None),
                        Err(invalid) => {
                            if let Some(job) = self.jobs.get_mut(&key) {
                                job.failure = Some((
                                    Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                                    format!("refused by the index: {invalid}"),
                                ));
                            }
                            self.fail_job(core, key, None);
                        }
                    }
                }
            }
        }
    }

    /// The index answered a store: finish the instance if its syncs are
    /// done, undo the entry if one failed, or wait for them.
    fn store_committed(&mut self, core: &mut Core, key: u64, outcome: StoreOutcome) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.timing.committed = Some(Instant::now());
        if job.failure.is_some() {
            if !self.undo_entry(key, &outcome) {
                self.fail_job(core, key, None);
            }
        } else if job.file_synced && job.dir_synced {
            self.store_outcome(core, key, outcome);
        } else {
            job.index = IndexStep::Answered(outcome);
        }
    }

    fn store_outcome(&mut self, core: &mut Core, key: u64, outcome: StoreOutcome) {
        let Some(job) = self.jobs.remove(&key) else {
            return;
        };
        if job.early {
            // Durable now: commitment may count it, and the mark can go.
            self.shared.in_doubt.remove(job.file_id);
            self.in_doubt_to_clear.push(job.file_id);
            self.arm_clear_timer(core);
        }
        let layout = self.shared.store.layout().clone();
        let Some(instance) = job.instance.clone() else {
            return;
        };
        let disposition = outcome.disposition().cloned();
        let (status, event) = match disposition {
            None | Some(Disposition::Replaced { .. }) => {
                if let Some(Disposition::Replaced { previous }) = &disposition {
                    // The replaced file is referenced by nothing now, but it
                    // was acknowledged to a sender once: keep it in orphans/
                    // for review rather than delete it (as `quarantine
                    // release` does). Recovery leaves orphans/ alone.
                    let from = layout.object_path(previous.file_id);
                    let to = layout.orphan_path(previous.file_id);
                    if let Err(error) = std::fs::rename(&from, &to) {
                        tracing::warn!(
                            from = %from.display(), to = %to.display(), %error,
                            "could not move a replaced instance's file to orphans/"
                        );
                    }
                }
                if job.area != Area::Objects {
                    self.move_between_areas(&job, Area::Objects);
                }
                (
                    Status::SUCCESS,
                    Some(StoreEvent::Stored {
                        triplet: instance.triplet.clone(),
                        record: instance.record.clone(),
                    }),
                )
            }
            Some(Disposition::Quarantined { quarantine_id }) => {
                if job.area != Area::Quarantine {
                    self.move_between_areas(&job, Area::Quarantine);
                }
                (
                    Status::SUCCESS,
                    Some(StoreEvent::Quarantined {
                        triplet: instance.triplet.clone(),
                        quarantine_id,
                        calling_ae_title: job.calling_ae_title.clone(),
                    }),
                )
            }
            Some(Disposition::Dropped) => {
                let _ = core.unlink(At::Cwd, &job.final_path, TAG_IGNORED);
                (Status::SUCCESS, None)
            }
            Some(_) => {
                let _ = core.unlink(At::Cwd, &job.final_path, TAG_IGNORED);
                (
                    STATUS_DUPLICATE_REJECTED,
                    Some(StoreEvent::Rejected {
                        sop_instance_uid: job.rq.affected_sop_instance_uid.clone(),
                        calling_ae_title: job.calling_ae_title.clone(),
                        status: STATUS_DUPLICATE_REJECTED.0,
                        reason: "duplicate refused by the reject policy".into(),
                    }),
                )
            }
        };
        if let Some(event) = event {
            if matches!(event, StoreEvent::Stored { .. }) {
                // Durably stored and indexed: what a commitment waits for.
                self.shared.tracker.instance_stored(
                    &instance.triplet.sop_instance_uid,
                    &instance.record.sop_class_uid,
                );
            }
            self.shared.store.shared.events.publish(event);
        }
        self.respond(core, &job, status);
    }

    /// The rare correction when the index decided otherwise than the
    /// pre-check guessed (a race with another core): a blocking rename and
    /// directory syncs on this core, before the response.
    fn move_between_areas(&mut self, job: &Job, to: Area) {
        let layout = self.shared.store.layout().clone();
        let target_dir = layout.fanout_dir(to, job.file_id);
        let target = layout.area_path(to, job.file_id);
        let result = self
            .ensure_dir(&target_dir)
            .and_then(|()| std::fs::rename(&job.final_path, &target))
            .and_then(|()| sync_dir(&target_dir))
            .and_then(|()| sync_dir(job.final_path.parent().unwrap_or(Path::new("."))));
        if let Err(error) = result {
            tracing::error!(file = %job.final_path.display(), %error, "cannot move a file to the area the index chose; start-up recovery will find it");
        }
    }

    fn respond(&mut self, core: &mut Core, job: &Job, status: Status) {
        job.timing.log(&job.rq.affected_sop_instance_uid, status);
        let Some(mut conn) = self.conns.remove(&job.conn_serial) else {
            tracing::debug!(
                serial = job.conn_serial,
                "response dropped: association gone"
            );
            return;
        };
        tracing::trace!(serial = job.conn_serial, status = status.0, state = ?conn.association.state(), "responding");
        if status == Status::SUCCESS {
            conn.instances_stored += 1;
        } else {
            conn.instances_failed += 1;
        }
        let rsp = store_rsp(&job.rq, status);
        self.send_command(core, job.conn_serial, &mut conn, job.context_id, &rsp);
        self.conns.insert(job.conn_serial, conn);
    }

    fn count_durability_failure(&mut self) {
        self.durability_failures += 1;
        if self.durability_failures >= DURABILITY_FAILURES_BEFORE_REFUSING
            && !self
                .shared
                .store
                .shared
                .refusing
                .swap(true, Ordering::SeqCst)
        {
            tracing::error!(
                failures = self.durability_failures,
                "repeated durability failures: the store now refuses every C-STORE until restart"
            );
        }
    }

    fn durability_failed(&mut self, core: &mut Core, key: u64, reason: String) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.failure = Some((Status::OUT_OF_RESOURCES, reason));
        }
        self.count_durability_failure();
        self.fail_job(core, key, None);
    }

    /// Ends a failed job: its file is closed and unlinked, its data set (if
    /// still arriving) is drained, and the sender is told the failure
    /// status once the whole data set has arrived.
    fn fail_job(&mut self, core: &mut Core, key: u64, conn: Option<&mut Conn>) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if !job.complete {
            // Still receiving: keep the job (it drops the rest of the data
            // set) and answer when the last fragment arrives.
            if let Some(file) = job.file.take() {
                let _ = core.close_file(file, TAG_IGNORED);
                let _ = core.unlink(At::Cwd, &job.tmp_path, TAG_IGNORED);
                job.opened = false;
            }
            return;
        }
        if job.writes_in_flight > 0
            || job.file_sync_in_flight
            || matches!(job.index, IndexStep::InFlight)
            || matches!(job.phase, Phase::Syncing | Phase::Renaming) && job.failure.is_none()
        {
            // The index's answer (or the sync's) comes back here.
            return;
        }
        if let Some(outcome) = job.index.take_answer() {
            if self.undo_entry(key, &outcome) {
                return;
            }
        }
        let Some(job) = self.jobs.remove(&key) else {
            return;
        };
        if job.early {
            self.shared.in_doubt.remove(job.file_id);
        }
        if let Some(file) = job.file {
            let _ = core.close_file(file, TAG_IGNORED);
        }
        let path = if job.renamed {
            &job.final_path
        } else {
            &job.tmp_path
        };
        if job.opened {
            let _ = core.unlink(At::Cwd, path, TAG_IGNORED);
        }
        let (status, reason) = job
            .failure
            .clone()
            .unwrap_or((Status::OUT_OF_RESOURCES, "unknown failure".into()));
        let refusal = Refusal {
            context_id: job.context_id,
            rq: job.rq.clone(),
            status,
            reason,
        };
        match conn {
            Some(conn) => self.refused(core, job.conn_serial, conn, refusal),
            None => {
                if let Some(mut conn) = self.conns.remove(&job.conn_serial) {
                    self.refused(core, job.conn_serial, &mut conn, refusal);
                    self.conns.insert(job.conn_serial, conn);
                } else {
                    tracing::warn!(
                        sop_instance_uid = %job.rq.affected_sop_instance_uid,
                        calling_ae = %job.calling_ae_title,
                        status = %format!("{:04X}", refusal.status.0),
                        reason = %refusal.reason,
                        "C-STORE failed after its association ended"
                    );
                }
            }
        }
    }

    /// The association ended while this job's data set was arriving:
    /// nothing of it stays (file closed and unlinked, no index entry).
    /// A job whose data set was complete goes on to be stored.
    fn abandon_job(&mut self, core: &mut Core, key: u64) {
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        if job.complete {
            return;
        }
        let Some(job) = self.jobs.remove(&key) else {
            return;
        };
        if let Some(file) = job.file {
            let _ = core.close_file(file, TAG_IGNORED);
        }
        if job.opened {
            let _ = core.unlink(At::Cwd, &job.tmp_path, TAG_IGNORED);
        } else if job.failure.is_none() {
            // The open is still in flight: close and unlink when it completes.
            self.abandoned_opens.insert(key, job.tmp_path);
        }
    }

    fn opened(
        &mut self,
        core: &mut Core,
        key: u64,
        result: Result<sluice_io::FileId, sluice_io::IoError>,
    ) {
        let Some(job) = self.jobs.get_mut(&key) else {
            // Abandoned while opening: remove what the open created.
            if let Some(path) = self.abandoned_opens.remove(&key) {
                if let Ok(file) = result {
                    let _ = core.close_file(file, TAG_IGNORED);
                    let _ = core.unlink(At::Cwd, &path, TAG_IGNORED);
                }
            }
            return;
        };
        match result {
            Ok(file) => {
                job.opened = true;
                if job.failure.is_some() {
                    let _ = core.close_file(file, TAG_IGNORED);
                    let _ = core.unlink(At::Cwd, &job.tmp_path, TAG_IGNORED);
                    job.opened = false;
                    if job.complete {
                        self.fail_job(core, key, None);
                    }
                    return;
                }
                job.file = Some(file);
                self.flush_writes(core, key);
                self.write_seal(core, key);
                if self.jobs.get(&key).is_some_and(|job| job.failure.is_some()) {
                    self.fail_job(core, key, None);
                    return;
                }
                self.maybe_rename(core, key);
            }
            Err(error) => {
                job.failure = Some((
                    Status::OUT_OF_RESOURCES,
                    format!("cannot create the temporary file: {error}"),
                ));
                self.count_durability_failure();
                self.fail_job(core, key, None);
            }
        }
    }

    fn written(&mut self, core: &mut Core, key: u64, result: Result<u64, sluice_io::IoError>) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.writes_in_flight = job.writes_in_flight.saturating_sub(1);
        if let Err(error) = result {
            if job.failure.is_none() {
                job.failure = Some((Status::OUT_OF_RESOURCES, format!("write failed: {error}")));
                self.count_durability_failure();
            }
        }
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        if job.failure.is_some() {
            if !job.complete || job.writes_in_flight == 0 {
                self.fail_job(core, key, None);
            }
        } else {
            self.maybe_rename(core, key);
        }
    }

    /// Creates a directory (and its parents) if this core has not seen it,
    /// and makes the new entries durable. Blocking, but once per directory
    /// per process run (65536 fan-out directories per area at most).
    fn ensure_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.known_dirs.contains(dir) {
            return Ok(());
        }
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            // The new directory entries must survive a crash before any
            // file renamed into them is acknowledged.
            let mut current = dir.parent();
            let root = self.shared.store.layout().root().to_owned();
            while let Some(parent) = current {
                sync_dir(parent)?;
                if parent == root || parent.as_os_str().is_empty() {
                    break;
                }
                current = parent.parent();
            }
        }
        if self.known_dirs.len() < 2 * 65_536 + 64 {
            self.known_dirs.insert(dir.to_owned());
        }
        Ok(())
    }
}

/// How long the in-doubt marks of answered instances wait for a batch to
/// ride along with before they are cleared in a transaction of their own.
const IN_DOUBT_CLEAR_DELAY: Duration = Duration::from_millis(100);

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn store_rsp(rq: &CStoreRq, status: Status) -> Command {
    Command::CStoreRsp(CStoreRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class_uid: Some(rq.affected_sop_class_uid.clone()),
        affected_sop_instance_uid: Some(rq.affected_sop_instance_uid.clone()),
        status,
        detail: StatusDetail::default(),
    })
}

/// What the index gets for a checked data set.
fn new_instance(job: &Job, head: &DatasetHead) -> NewInstance {
    instance_from_head(
        head,
        InstanceRecord {
            file_id: job.file_id,
            file_size_bytes: job.header_bytes + job.dataset_bytes,
            dataset_offset_bytes: job.header_bytes,
            transfer_syntax_uid: job.transfer_syntax_uid.clone(),
            sop_class_uid: job.rq.affected_sop_class_uid.clone(),
            checksum: job.hasher.finish(),
            received_at_unix_ns: crate::clock::unix_now_ns(),
            calling_ae_title: job.calling_ae_title.clone(),
            instance_number: None,
        },
    )
}

impl Handler for CoreHandler {
    type Message = CoreMessage;

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::Accepted {
                conn,
                peer,
                listener,
            } => self.accepted(core, conn, peer, listener),
            Event::Connected { conn, tag, result } => self.connected(core, conn, tag, result),
            Event::Received { conn, data } => {
                let Some(&serial) = self.serial_of.get(&conn) else {
                    return;
                };
                if let Some(mut state) = self.conns.remove(&serial) {
                    self.received(core, serial, &mut state, &data);
                    self.conns.insert(serial, state);
                }
            }
            Event::RecvEnded { conn, result } => {
                let Some(&serial) = self.serial_of.get(&conn) else {
                    return;
                };
                if let Some(mut state) = self.conns.remove(&serial) {
                    if let Err(error) = result {
                        state
                            .outcome
                            .get_or_insert_with(|| format!("receive failed: {error}"));
                    }
                    if !state.association.is_closed() {
                        self.input(core, serial, &mut state, Input::TransportClosed);
                    }
                    state.close_when_sent = true;
                    self.maybe_close(core, &mut state);
                    self.conns.insert(serial, state);
                }
            }
            Event::Sent { conn, result, .. } => {
                let Some(&serial) = self.serial_of.get(&conn) else {
                    return;
                };
                if let Some(mut state) = self.conns.remove(&serial) {
                    state.sends_in_flight = state.sends_in_flight.saturating_sub(1);
                    tracing::trace!(
                        core = self.core_index,
                        serial,
                        ok = result.is_ok(),
                        in_flight = state.sends_in_flight,
                        "send completed"
                    );
                    if let Err(error) = result {
                        state
                            .outcome
                            .get_or_insert_with(|| format!("send failed: {error}"));
                        state.close_when_sent = true;
                    }
                    self.maybe_close(core, &mut state);
                    self.conns.insert(serial, state);
                }
            }
            Event::ConnClosed { conn } => {
                if let Some(serial) = self.serial_of.remove(&conn) {
                    if let Some(state) = self.conns.remove(&serial) {
                        self.connection_ended(core, serial, state);
                    }
                }
            }
            Event::TimerFired { tag } => {
                let value = tag & !TAG_KIND_MASK;
                match tag & TAG_KIND_MASK {
                    TAG_CONN_TIMER => {
                        if let Some(mut state) = self.conns.remove(&value) {
                            self.timer_fired(core, value, &mut state);
                            self.conns.insert(value, state);
                        }
                    }
                    TAG_COMMIT_TIMER => {
                        self.commit_timer = None;
                        self.submit_index_batch(core);
                    }
                    TAG_CLEAR_TIMER => {
                        self.clear_timer = None;
                        self.submit_in_doubt_clears(core);
                    }
                    _ => {}
                }
            }
            Event::Opened { tag, result } => {
                let key = tag & !TAG_KIND_MASK;
                match tag & TAG_KIND_MASK {
                    TAG_OPEN => self.opened(core, key, result),
                    TAG_DIR_OPEN => match result {
                        Ok(dir) => {
                            let submitted = core.sync(dir, SyncKind::All, TAG_DIR_SYNC | key);
                            let _ = core.close_file(dir, TAG_IGNORED);
                            if let Err(error) = submitted {
                                self.dir_round_ended(
                                    core,
                                    key,
                                    Err(format!("cannot submit the directory sync: {error}")),
                                );
                            }
                        }
                        Err(error) => self.dir_round_ended(
                            core,
                            key,
                            Err(format!("cannot open the directory: {error}")),
                        ),
                    },
                    _ => {
                        if let Ok(file) = result {
                            let _ = core.close_file(file, TAG_IGNORED);
                        }
                    }
                }
            }
            Event::Written { tag, result, .. } if tag & TAG_KIND_MASK == TAG_WRITE => {
                self.written(core, tag & !TAG_KIND_MASK, result);
            }
            Event::Synced { tag, result, .. } => {
                let key = tag & !TAG_KIND_MASK;
                match (tag & TAG_KIND_MASK, result) {
                    (TAG_SYNC, result) => self.file_synced(
                        core,
                        key,
                        result.map_err(|error| {
                            tracing::error!(%error, "fdatasync failed; the instance fails");
                            format!("fsync failed: {error}")
                        }),
                    ),
                    (TAG_DIR_SYNC, result) => self.dir_round_ended(
                        core,
                        key,
                        result.map_err(|error| format!("fsync failed: {error}")),
                    ),
                    _ => {}
                }
            }
            Event::Renamed { tag, result } if tag & TAG_KIND_MASK == TAG_RENAME => {
                let key = tag & !TAG_KIND_MASK;
                match result {
                    Ok(()) => self.renamed(core, key),
                    Err(error) => {
                        self.durability_failed(core, key, format!("rename failed: {error}"))
                    }
                }
            }
            Event::Unlinked {
                result: Err(error), ..
            } => {
                tracing::warn!(%error, "unlink failed; start-up recovery will find the file");
            }
            _ => {}
        }
    }

    /// The in-doubt marks of instances already answered are cleared before
    /// the core stops (the index finishes queued batches when it closes), so
    /// a clean shutdown leaves recovery nothing to re-verify.
    fn on_shutdown(&mut self, core: &mut Core) {
        self.submit_in_doubt_clears(core);
    }

    fn on_message(&mut self, core: &mut Core, message: CoreMessage) {
        match message {
            CoreMessage::Committed { jobs, result } => self.committed(core, jobs, result),
            CoreMessage::Commitment(ToCore::Answer {
                serial,
                context_id,
                message_id,
                result,
            }) => {
                if let Some(mut conn) = self.conns.remove(&serial) {
                    let (status, comment) = match result {
                        Ok(()) => (Status::SUCCESS, None),
                        Err(refusal) => (refusal.status(), Some(refusal.to_string())),
                    };
                    self.answer_action(
                        core, serial, &mut conn, context_id, message_id, status, comment,
                    );
                    self.conns.insert(serial, conn);
                }
            }
            CoreMessage::Commitment(ToCore::DeliverReport { serial, report }) => {
                self.deliver_on_open_association(core, serial, report);
            }
            CoreMessage::Commitment(ToCore::OpenReportAssociation(delivery)) => {
                self.open_report_association(core, *delivery);
            }
        }
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

impl From<crate::config::UidConflictPolicy> for ConflictPolicy {
    fn from(policy: crate::config::UidConflictPolicy) -> ConflictPolicy {
        match policy {
            crate::config::UidConflictPolicy::Quarantine => ConflictPolicy::Quarantine,
            crate::config::UidConflictPolicy::Reject => ConflictPolicy::Reject,
        }
    }
}
