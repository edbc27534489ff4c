//! The Query/Retrieve service of one core: Patient Root and Study Root
//! C-FIND, C-MOVE and C-GET over the store (issue 14; the design is argued
//! in docs/design/query-retrieve.md).
//!
//! What it owns, per core:
//! - the operation of each association that asked for one (`state::Operation`:
//!   a C-FIND, `find::FindOp`, or a C-MOVE/C-GET, `state::RetrieveOp` around the
//!   sans-I/O bookkeeping of `retrieve::Retrieve`), at most one at a time
//!   (the Asynchronous Operations Window Sluice answers lets a requester
//!   invoke one operation at a time);
//! - the *lanes*: associations that carry a retrieve's C-STORE
//!   sub-operations (the C-MOVE's own associations to its destination, or
//!   the C-GET's association itself), each sending one instance at a time
//!   (`transfer::Transfer`) and awaiting the answers of up to its window's
//!   (`state::Lane::outstanding`: one, or for a C-GET whose requester
//!   negotiated an Asynchronous Operations Window, up to
//!   `query.get_operations_outstanding_max`, matched by Message ID);
//! - the core's send chunks (a `ChunkPool` of `query.retrieve_buffer_per_core`)
//!   and the lanes waiting for one;
//! - retrieval's share of the core while ingest waits (`share`: chunks are
//!   given within `query.retrieve_share_under_ingest`).
//!
//! The router (`scp/handler.rs`) hands it the Q/R commands, the C-STORE-RSPs
//! of its lanes, the io completions tagged for it (`FindStep`,
//! `RetrieveOpen`, `RetrieveRead`, `RetrieveConnect`), every completed send
//! (a chunk came back; an association's queue drained), and the end of
//! every association. Identifiers are decoded and matched by
//! `sluice_net::query`, entities found by `sluice_index::ReadTxn::find`, who
//! may do what decided at association time (`access`).

mod access;
mod answers;
mod cluster;
mod contexts;
mod fetched;
mod find;
mod head;
mod lanes;
mod resolve;
mod retrieve;
mod share;
mod state;
mod transfer;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_io::{Chunk, ChunkPool, ConnId, Core, FileHandle, IoError};
use sluice_net::assoc::{AssociationProposal, ProposedPresentationContext};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{
    CFindRq, CGetRq, CMoveRq, CStoreRq, CStoreRsp, Command, MoveOriginator, Priority, Status,
    SubOperationCounts,
};
use sluice_net::endpoint::DataSet;
use sluice_net::query::{
    FindNegotiation, InformationModel, Operation as QrOperation, QueryContext, RetrieveNegotiation,
};

use super::conn::{Connection, Connections, Purpose, Timeouts};
use super::shared::ServerShared;
use super::tag::{tag, TagKind};
use crate::config::{AccessService, PersonNameMatching, RetrieveSend};
use crate::metrics::SubOperation;
use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

pub(crate) use access::apply as narrow_association;
use answers::{decode, refuse_find, send_retrieve_rsp};
use contexts::{choose_context, move_proposal};
pub(crate) use fetched::FetchedQueue;
use find::{FindOp, Progress};
use retrieve::{sub_outcome, Retrieve, SubOutcome};
use share::{Sending, Share};
use state::{Lane, Operation, RetrieveKind, RetrieveOp};
pub(crate) use transfer::OpenError;
use transfer::{pdu_length_for, Phase, Pump, SentBy, Transfer};

/// Error Comment (LO) is at most 64 characters.
const ERROR_COMMENT_CHARS_MAX: usize = 64;

/// Failure "unable to process" (PS3.4 C.4.1.1.4: Cxxx), for an index that
/// cannot be read.
pub(crate) const STATUS_UNABLE_TO_PROCESS: Status = Status(0xC001);

/// Size of one send chunk: a few PDUs of the common 16 KiB maximum, one
/// file read and one send each.
const CHUNK_SIZE: usize = 256 * 1024;

/// A C-FIND waits for its association's sends to drain beyond this many.
const FIND_SENDS_MAX: u32 = 8;

/// Cuts a text to an Error Comment.
pub(crate) fn error_comment(text: &str) -> String {
    match text.char_indices().nth(ERROR_COMMENT_CHARS_MAX) {
        Some((end, _)) => text.get(..end).unwrap_or(text).to_owned(),
        None => text.to_owned(),
    }
}

/// The Query/Retrieve service of one core (see the module documentation).
pub(crate) struct QueryRetrieve {
    shared: Arc<ServerShared>,
    timeouts: Timeouts,
    chunks: ChunkPool,
    /// The most chunks `chunks` lends at once.
    chunk_count: usize,
    share: Share,
    operations: HashMap<u64, Operation>,
    lanes: HashMap<u64, Lane>,
    /// Records of evicted segments fetched for this core's lanes.
    fetched: Arc<FetchedQueue>,
    /// Lanes waiting for a chunk or for sends, in the order they asked.
    waiting: VecDeque<u64>,
    /// The server is stopping: new requests are refused (those running
    /// go on until the drain's deadline).
    draining: bool,
}

impl std::fmt::Debug for QueryRetrieve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRetrieve")
            .field("operations", &self.operations.len())
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

/// How many C-STORE sub-operations of a C-GET may be outstanding on its
/// association: what the Asynchronous Operations Window answered lets
/// Sluice, the acceptor, invoke (the AC's operations performed by the
/// requester: 1 when no window was negotiated), at most `configured`
/// (`query.get_operations_outstanding_max`; 0, unlimited, is that too).
fn get_window(conn: &Connection, configured: u32) -> usize {
    let configured = usize::try_from(configured).unwrap_or(1).max(1);
    match conn.negotiated().map(|negotiated| {
        negotiated
            .asynchronous_operations_window
            .operations_performed_max
    }) {
        Some(0) => configured,
        Some(performed) => usize::from(performed).min(configured),
        None => 1,
    }
}

/// The encoding of a presentation context's identifiers.
fn context_encoding(conn: &Connection, context_id: u8) -> Option<(String, SmallDatasetEncoding)> {
    let context = conn.negotiated()?.presentation_context(context_id)?;
    let encoding = SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)?;
    Some((context.abstract_syntax.clone(), encoding))
}

impl QueryRetrieve {
    pub(crate) fn new(
        shared: Arc<ServerShared>,
        timeouts: Timeouts,
        fetched: FetchedQueue,
    ) -> QueryRetrieve {
        let budget = usize::try_from(shared.store.config().query.retrieve_buffer_per_core)
            .unwrap_or(usize::MAX);
        let chunk_count = (budget / CHUNK_SIZE).max(2);
        QueryRetrieve {
            timeouts,
            chunks: ChunkPool::new(CHUNK_SIZE, chunk_count),
            chunk_count,
            share: Share::new(
                shared.store.config().query.retrieve_share_under_ingest,
                Instant::now(),
            ),
            operations: HashMap::new(),
            lanes: HashMap::new(),
            fetched: Arc::new(fetched),
            waiting: VecDeque::new(),
            draining: false,
            shared,
        }
    }

    /// The server is stopping: every new C-FIND, C-MOVE and C-GET is
    /// refused from now on (A700, A701), so the drain is not held up by a
    /// retrieval that started after it.
    pub(crate) fn stop_taking(&mut self) {
        self.draining = true;
    }

    // ----- requests -----

    /// The checks every Q/R request passes before its identifier is read:
    /// the context is the request's SOP class, the association has no
    /// other operation, the caller may use it. `Err` is the refusal.
    fn admit(
        &self,
        conn: &Connection,
        context_id: u8,
        sop_class_uid: &str,
        operation: QrOperation,
    ) -> Result<(QueryContext, SmallDatasetEncoding), (Status, String)> {
        let Some((abstract_syntax, encoding)) = context_encoding(conn, context_id) else {
            return Err((
                Status::SOP_CLASS_NOT_SUPPORTED,
                "presentation context not accepted or not Implicit/Explicit VR Little Endian"
                    .into(),
            ));
        };
        let expected = InformationModel::from_sop_class(&abstract_syntax);
        let requested = InformationModel::from_sop_class(sop_class_uid);
        let Some((model, context_operation)) =
            expected.filter(|expected| Some(*expected) == requested)
        else {
            return Err((
                Status::SOP_CLASS_NOT_SUPPORTED,
                format!("{sop_class_uid} is not the SOP class of its presentation context"),
            ));
        };
        if context_operation != operation {
            return Err((
                Status::SOP_CLASS_NOT_SUPPORTED,
                format!("{sop_class_uid} is not a {operation:?} SOP class"),
            ));
        }
        if self.operations.contains_key(&conn.serial) {
            return Err((
                Status::RESOURCE_LIMITATION,
                "another operation is in progress on this association".into(),
            ));
        }
        if self.draining {
            // Out of resources for now: the requester tries again, here
            // once the server is back or on another node.
            let status = match operation {
                QrOperation::Find => Status::OUT_OF_RESOURCES,
                QrOperation::Move | QrOperation::Get => Status::OUT_OF_RESOURCES_MATCHES,
            };
            return Err((status, "the server is shutting down".into()));
        }
        let config = self.shared.store.config();
        if !access::allowed(config, &conn.calling_ae_title, operation) {
            return Err((
                Status::NOT_AUTHORIZED,
                "not authorized (query.*_allowed_from)".into(),
            ));
        }
        let service = match operation {
            QrOperation::Find => AccessService::Query,
            QrOperation::Move | QrOperation::Get => AccessService::Retrieve,
        };
        if let Err(refused) = conn.access.check(&config.access.rule, service) {
            let why = refused.to_string();
            self.shared.audit.security_alert(
                crate::audit::Alert::ServiceNotGranted,
                conn.peer,
                &conn.calling_ae_title,
                &why,
            );
            return Err((Status::NOT_AUTHORIZED, why));
        }
        let granted = conn
            .extended_negotiation
            .iter()
            .find(|(class, _)| class == &abstract_syntax)
            .map(|(_, granted)| granted.as_slice())
            .unwrap_or_default();
        let mut context = QueryContext::new(model, operation);
        context = match operation {
            QrOperation::Find => context.with_find_negotiation(&FindNegotiation::parse(granted)),
            QrOperation::Move | QrOperation::Get => {
                context.with_retrieve_negotiation(&RetrieveNegotiation::parse(granted))
            }
        };
        context.options.person_name_case_insensitive =
            config.query.person_name_matching == PersonNameMatching::CaseInsensitive;
        Ok((context, encoding))
    }

    /// A C-FIND-RQ: refused at once, or answered page by page.
    pub(crate) fn find_requested(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        (context_id, rq): (u8, CFindRq),
        data_set: DataSet,
    ) {
        let Some(conn) = conns.get_mut(serial) else {
            panic!("a C-FIND on connection {serial}, which is gone");
        };
        let decoded = self
            .admit(
                conn,
                context_id,
                &rq.affected_sop_class_uid,
                QrOperation::Find,
            )
            .and_then(|(context, encoding)| {
                decode(&data_set, encoding, &context).map(|query| (query, encoding))
            });
        let (query, encoding) = match decoded {
            Ok(decoded) => decoded,
            Err((status, reason)) => {
                refuse_find(core, conn, context_id, &rq, status, &reason);
                return;
            }
        };
        if let DataSet::Collected(identifier) = &data_set {
            let transfer_syntax_uid = conn
                .negotiated()
                .and_then(|negotiated| negotiated.presentation_context(context_id))
                .map(|context| context.transfer_syntax.as_str())
                .unwrap_or_default();
            self.shared.audit.query(
                (core.index(), serial),
                &rq.affected_sop_class_uid,
                transfer_syntax_uid,
                identifier,
            );
        }
        let op = FindOp::new(
            (context_id, rq.message_id),
            rq.affected_sop_class_uid,
            query,
            encoding,
            self.shared.cluster.as_ref(),
        );
        self.operations
            .insert(serial, Operation::Find(Box::new(op)));
        self.find_step(core, conns, serial);
    }

    /// The next page of a C-FIND (its timer fired, or its sends drained).
    pub(crate) fn find_step(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        if let Some(Operation::Retrieve(_)) = self.operations.get(&serial) {
            return self.forward_poll(core, conns, serial);
        }
        let Some(Operation::Find(op)) = self.operations.get_mut(&serial) else {
            // Answered, or its association ended, since the step was armed.
            return;
        };
        let Some(conn) = conns.get_mut(serial).filter(|conn| conn.may_send_pdata()) else {
            self.operations.remove(&serial);
            return;
        };
        op.waiting_for_sends = false;
        let progress = op.step(&self.shared, conn);
        conn.flush_sends(core);
        match progress {
            Progress::Done => {
                self.operations.remove(&serial);
            }
            Progress::Wait => cluster::find_wait(core, serial, &mut op.waiting_for_sends),
            Progress::More if conn.sends_in_flight() > FIND_SENDS_MAX => {
                op.waiting_for_sends = true;
            }
            Progress::More => {
                // Yield to the core's other events, then go on.
                if let Err(error) = core.timer(Duration::ZERO, tag(TagKind::FindStep, serial)) {
                    tracing::warn!(%error, "cannot arm a C-FIND step; it waits for a send instead");
                    op.waiting_for_sends = true;
                }
            }
        }
    }

    /// A C-MOVE-RQ or C-GET-RQ: refused at once, or its instances found
    /// and their sub-operations started.
    pub(crate) fn retrieve_requested(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        context_id: u8,
        command: Command,
        data_set: DataSet,
    ) {
        let Some(conn) = conns.get_mut(serial) else {
            panic!("a retrieve on connection {serial}, which is gone");
        };
        let (message_id, sop_class_uid, kind, operation) = match command {
            Command::CMoveRq(CMoveRq {
                message_id,
                affected_sop_class_uid,
                move_destination,
                ..
            }) => (
                message_id,
                affected_sop_class_uid,
                RetrieveKind::Move {
                    destination: move_destination.trim().to_owned(),
                },
                QrOperation::Move,
            ),
            Command::CGetRq(CGetRq {
                message_id,
                affected_sop_class_uid,
                ..
            }) => (
                message_id,
                affected_sop_class_uid,
                RetrieveKind::Get,
                QrOperation::Get,
            ),
            other => panic!("not a retrieve: {other:?}"),
        };
        let answer = |core: &mut Core, conn: &mut Connection, status: Status, reason: &str| {
            tracing::warn!(
                peer = ?conn.peer,
                calling_ae = %conn.calling_ae_title,
                status = %format!("{status:04X}", status = status.0),
                reason,
                "{operation:?} refused"
            );
            send_retrieve_rsp(
                core,
                conn,
                (context_id, operation),
                (message_id, &sop_class_uid),
                (status, SubOperationCounts::default(), &[], Some(reason)),
                None,
                true,
            );
        };
        let (context, encoding) = match self.admit(conn, context_id, &sop_class_uid, operation) {
            Ok(admitted) => admitted,
            Err((status, reason)) => return answer(core, conn, status, &reason),
        };
        let destination = match &kind {
            RetrieveKind::Move { destination } => match self.destination(destination) {
                Ok(address) => Some(address),
                Err(reason) => {
                    return answer(core, conn, Status::MOVE_DESTINATION_UNKNOWN, &reason);
                }
            },
            RetrieveKind::Get => None,
        };
        let query = match decode(&data_set, encoding, &context) {
            Ok(query) => query,
            Err((status, reason)) => return answer(core, conn, status, &reason),
        };
        let resolving = Instant::now();
        let datasets = match resolve::resolve(&self.shared.store, &query) {
            Ok(datasets) => datasets,
            Err((status, reason)) => return answer(core, conn, status, &reason),
        };
        let originator_ae_title = conn.calling_ae_title.clone();
        let proposal = match &kind {
            RetrieveKind::Move { .. } => move_proposal(&datasets),
            RetrieveKind::Get => Vec::new(),
        };
        let total = datasets.len();
        let forward = cluster::forward(&self.shared, &kind, query, &datasets);
        let mut op = RetrieveOp {
            kind: kind.clone(),
            context_id,
            message_id,
            sop_class_uid,
            encoding,
            retrieve: Retrieve::new(datasets),
            lanes: Vec::new(),
            originator_ae_title,
            started: Instant::now(),
            resolved_in: resolving.elapsed(),
            bytes_sent: 0,
            forward: None,
            staging: None,
            staged_unsent: 0,
            pending_deferred: false,
            send: self.shared.store.config().query.retrieve_send,
        };
        if let Some(forward) = forward {
            op.retrieve.expect_remote();
            op.forward = Some(forward);
        }
        tracing::debug!(serial, total, ?kind, "retrieve started");
        self.operations
            .insert(serial, Operation::Retrieve(Box::new(op)));
        self.forward_poll(core, conns, serial);
        match (kind, destination) {
            (RetrieveKind::Move { destination }, Some(address)) => {
                let lanes =
                    total.min(self.shared.store.config().query.move_associations_max as usize);
                for _ in 0..lanes {
                    if let Err(reason) =
                        self.open_lane(core, conns, serial, (&destination, address), &proposal)
                    {
                        tracing::warn!(destination = %destination, reason = %reason, "cannot open a C-MOVE association");
                    }
                }
                self.after_lanes_changed(core, conns, serial, "cannot connect to the destination");
            }
            _ => {
                let mut lane = Lane::new(serial, true);
                lane.window = conns.get_mut(serial).map_or(1, |conn| {
                    get_window(
                        conn,
                        self.shared
                            .store
                            .config()
                            .query
                            .get_operations_outstanding_max,
                    )
                });
                if lane.window > 1 {
                    tracing::debug!(
                        serial,
                        window = lane.window,
                        "C-GET sub-operations with an asynchronous operations window"
                    );
                }
                self.lanes.insert(serial, lane);
                if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&serial) {
                    op.lanes.push(serial);
                }
                // While it carries C-STOREs, what it receives are their
                // answers: no immediate acknowledgement (the next data set
                // carries it); back on when the C-GET ends.
                if let Some(conn) = conns.get_mut(serial) {
                    core.set_quickack_after_recv(conn.id, false);
                }
                self.lane_next(core, conns, serial);
            }
        }
    }

    /// The address of a Move Destination, if it is known and allowed.
    fn destination(&self, destination: &str) -> Result<SocketAddr, String> {
        let config = self.shared.store.config();
        let known = self.shared.move_destinations.get(destination);
        let allowed = config
            .query
            .move_destinations
            .allows(destination, &config.network.remote_aes);
        match known {
            Some(Some(address)) if allowed => Ok(*address),
            Some(Some(_)) => Err(format!(
                "move destination {destination} is not allowed (query.move_destinations)"
            )),
            Some(None) => Err(format!(
                "move destination {destination}: its address in network.remote_aes does not resolve"
            )),
            None => Err(format!(
                "move destination {destination} is unknown (not in network.remote_aes)"
            )),
        }
    }

    /// A C-CANCEL-RQ: the operation it names stops (FE00).
    pub(crate) fn cancel_requested(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        message_id: u16,
    ) {
        match self.operations.get_mut(&serial) {
            Some(Operation::Find(op)) if op.message_id == message_id => {
                op.cancelled = true;
                tracing::debug!(serial, "C-FIND cancelled");
            }
            Some(Operation::Retrieve(op)) if op.message_id == message_id => {
                op.cancel(serial);
                let lanes = op.lanes.clone();
                for lane in lanes {
                    if let Some(lane) = self.lanes.get_mut(&lane) {
                        Self::give_back_ahead(lane, &mut self.operations, core);
                    }
                }
                self.maybe_finish(core, conns, serial);
            }
            // A cancel of an operation already answered, or of none.
            _ => tracing::debug!(serial, message_id, "C-CANCEL of no operation in progress"),
        }
    }

    // ----- lanes -----

    /// Opens one association to a C-MOVE's destination.
    fn open_lane(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        origin: u64,
        (destination, address): (&str, SocketAddr),
        contexts: &[ProposedPresentationContext],
    ) -> Result<(), String> {
        let config = self.shared.store.config();
        let calling = config.network.ae_title.as_str().to_owned();
        let proposal = AssociationProposal {
            calling_ae_title: calling.clone(),
            called_ae_title: destination.to_owned(),
            presentation_contexts: contexts.to_vec(),
            pdu_length_max_receive: config.network.max_pdu_length,
            implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
            implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let rq = proposal
            .to_associate_rq()
            .map_err(|error| error.to_string())?;
        let tls = super::tls::outbound_session(&self.shared, destination)
            .map_err(|error| format!("cannot start TLS to {destination}: {error}"))?;
        let serial = conns.next_serial();
        let id: ConnId = core
            .connect(address, tag(TagKind::RetrieveConnect, serial))
            .map_err(|error| format!("cannot connect to {address}: {error}"))?;
        let mut conn = Connection::outbound(
            id,
            serial,
            address,
            (calling, destination.to_owned()),
            rq,
            (Purpose::MoveSubOperations, self.timeouts),
        );
        conn.tls = tls;
        // It sends C-STOREs and receives only their answers (see the C-GET
        // lane's in `retrieve_requested`).
        core.set_quickack_after_recv(id, false);
        conns.insert(conn);
        self.lanes.insert(serial, Lane::new(origin, false));
        if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
            op.lanes.push(serial);
        }
        Ok(())
    }

    /// A lane's connect completed (or failed: its id is stale, it leaves
    /// the table here).
    pub(crate) fn connected(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        result: Result<(), IoError>,
    ) {
        match result {
            Ok(()) => {
                let Some(conn) = conns.get_mut(serial) else {
                    panic!("lane {serial} connected, but it is not in the table");
                };
                conn.connected(core);
            }
            Err(error) => {
                let Some(mut conn) = conns.remove(serial) else {
                    panic!("lane {serial} failed to connect, but it is not in the table");
                };
                conn.outcome = Some(format!("cannot connect: {error}"));
                conn.cancel_timer(core);
                let reason = format!("cannot connect to {}: {error}", conn.called_ae_title);
                self.lane_ended(core, conns, serial, &reason);
                conn.log_ended();
            }
        }
    }

    /// A lane's association was accepted: its first instance goes out.
    pub(crate) fn lane_accepted(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        if let Some(lane) = self.lanes.get_mut(&serial) {
            lane.accepted = true;
        }
        self.lane_next(core, conns, serial);
    }

    /// A C-STORE-RSP on a lane: the outcome of the outstanding
    /// sub-operation whose Message ID it answers. One that answers none (a
    /// second answer, a Message ID never sent) aborts the association.
    pub(crate) fn store_answered(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        rsp: CStoreRsp,
    ) {
        let message_id = rsp.message_id_being_responded_to;
        let Some(lane) = self.lanes.get_mut(&serial) else {
            if let Some(conn) = conns.get_mut(serial) {
                conn.abort(
                    core,
                    &format!("a C-STORE-RSP (to Message ID {message_id}) on an association with no C-STORE outstanding"),
                );
            }
            return;
        };
        let early = lane
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.message_id == message_id && transfer.command_sent());
        let position = lane
            .outstanding
            .iter()
            .position(|transfer| transfer.message_id == message_id);
        let origin = lane.origin;
        if early {
            // Answered before its data set was complete: the association
            // cannot go on with the rest of that message.
            let Some(mut transfer) = lane.transfer.take() else {
                return;
            };
            transfer.close(core);
            Self::give_back_ahead(lane, &mut self.operations, core);
            if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
                op.retrieve.done(
                    &transfer.dataset.triplet.sop_instance_uid,
                    SubOutcome::Failed(format!(
                        "the destination answered {:04X} before the data set ended",
                        rsp.status.0
                    )),
                );
            }
            if let Some(conn) = conns.get_mut(serial) {
                conn.abort(core, "C-STORE-RSP before the end of its data set");
            }
            self.maybe_finish(core, conns, origin);
            return;
        }
        let Some(position) = position else {
            // Its outstanding sub-operations fail when the association
            // ends (`lane_ended`, `association_ended`).
            let outstanding: Vec<u16> = lane
                .outstanding
                .iter()
                .map(|transfer| transfer.message_id)
                .collect();
            if let Some(conn) = conns.get_mut(serial) {
                conn.abort(
                    core,
                    &format!(
                        "a C-STORE-RSP to Message ID {message_id}, which has no C-STORE outstanding (answered twice, or never sent; outstanding: {outstanding:?})"
                    ),
                );
            }
            return;
        };
        let transfer = lane.outstanding.remove(position);
        let outcome = sub_outcome(&rsp);
        if let SubOutcome::Failed(reason) = &outcome {
            tracing::warn!(sop_instance_uid = %transfer.dataset.triplet.sop_instance_uid, reason = %reason, "a retrieve sub-operation failed");
        } else if let Some(lane_conn) = conns.get_mut(serial) {
            // The destination: the Move Destination's association, or
            // (C-GET) the requester's own.
            let destination_ae = match lane_conn.purpose {
                Purpose::MoveSubOperations => &lane_conn.called_ae_title,
                _ => &lane_conn.calling_ae_title,
            };
            self.shared.audit.instance_sent(
                (core.index(), origin),
                (destination_ae, lane_conn.peer),
                &transfer.dataset,
            );
        }
        self.sub_operation_done(origin, (&transfer, outcome));
        self.send_pending(core, conns, origin);
        self.lane_next(core, conns, serial);
        // The pending answer went out with the next C-STORE-RQ (C-GET), or
        // goes now.
        if let Some(conn) = conns.get_mut(origin) {
            conn.flush_sends(core);
        }
    }

    /// A pending C-MOVE-RSP/C-GET-RSP with the counts so far (queued: the
    /// caller flushes). A C-GET's waits while a C-STORE's data set is going
    /// out on its association (`pending_deferred`: it goes when that data
    /// set is sent, `lane_sent`).
    fn send_pending(&mut self, core: &mut Core, conns: &mut Connections, origin: u64) {
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) else {
            return;
        };
        // None: the final answer follows instead, or the count is not known.
        let Some(counts) = op.retrieve.pending_counts() else {
            return;
        };
        let mid_data_set = self
            .lanes
            .get(&origin)
            .and_then(|lane| lane.transfer.as_ref())
            .is_some_and(Transfer::command_sent);
        op.pending_deferred = mid_data_set;
        if mid_data_set {
            return;
        }
        let Some(conn) = conns.get_mut(origin).filter(|conn| conn.may_send_pdata()) else {
            return;
        };
        let operation = match op.kind {
            RetrieveKind::Move { .. } => QrOperation::Move,
            RetrieveKind::Get => QrOperation::Get,
        };
        send_retrieve_rsp(
            core,
            conn,
            (op.context_id, operation),
            (op.message_id, &op.sop_class_uid),
            (Status::PENDING, counts, &[], None),
            None,
            false,
        );
    }

    /// Once nothing is in flight and nothing is left to start, the final
    /// answer goes out, the operation ends and its C-MOVE lanes are
    /// released.
    fn maybe_finish(&mut self, core: &mut Core, conns: &mut Connections, origin: u64) {
        let Some(Operation::Retrieve(op)) = self.operations.get(&origin) else {
            return;
        };
        if !op.retrieve.is_finished() {
            return;
        }
        let Some(Operation::Retrieve(op)) = self.operations.remove(&origin) else {
            return;
        };
        let (status, counts, failed, comment) = op.retrieve.final_answer();
        if let Some(metrics) = self.shared.metrics.core(core.index()) {
            let (completed, failed, warning) = op.retrieve.totals();
            metrics.sub_operations(SubOperation::Completed, completed as u64);
            metrics.sub_operations(SubOperation::Failed, failed as u64);
            metrics.sub_operations(SubOperation::Warning, warning as u64);
        }
        let operation = match op.kind {
            RetrieveKind::Move { .. } => QrOperation::Move,
            RetrieveKind::Get => QrOperation::Get,
        };
        let elapsed = op.started.elapsed();
        let (window, outstanding_max) = op
            .lanes
            .iter()
            .filter_map(|lane| self.lanes.get(lane))
            .fold((0, 0), |(window, peak), lane| {
                (window.max(lane.window), peak.max(lane.outstanding_peak))
            });
        if let Some(conn) = conns.get_mut(origin).filter(|conn| conn.may_send_pdata()) {
            send_retrieve_rsp(
                core,
                conn,
                (op.context_id, operation),
                (op.message_id, &op.sop_class_uid),
                (status, counts, &failed, comment.as_deref()),
                Some(op.encoding),
                true,
            );
            let (completed, failed_count, warning) = op.retrieve.totals();
            tracing::info!(
                peer = %conn.peer.map(|peer| peer.to_string()).unwrap_or_default(),
                calling_ae = %conn.calling_ae_title,
                operation = ?operation,
                destination = %match &op.kind { RetrieveKind::Move { destination } => destination.as_str(), RetrieveKind::Get => "" },
                completed,
                failed = failed_count,
                warning,
                status = %format!("{:04X}", status.0),
                bytes = op.bytes_sent,
                duration_ms = elapsed.as_millis() as u64,
                resolve_ms = op.resolved_in.as_millis() as u64,
                window,
                outstanding_max,
                reason = %comment.unwrap_or_default(),
                "retrieve answered"
            );
        }
        for lane_serial in op.lanes {
            if lane_serial == origin {
                // A C-GET's own association: it goes on serving.
                if let Some(mut lane) = self.lanes.remove(&lane_serial) {
                    lane.close_segments(core);
                }
                if let Some(conn) = conns.get_mut(lane_serial) {
                    core.set_quickack_after_recv(conn.id, true);
                }
                continue;
            }
            let (Some(lane), Some(conn)) =
                (self.lanes.get_mut(&lane_serial), conns.get_mut(lane_serial))
            else {
                continue;
            };
            // Nothing is in flight once the retrieve is finished.
            debug_assert!(
                lane.transfer.is_none() && lane.ahead.is_empty() && lane.outstanding.is_empty(),
                "a lane busy after its retrieve ended"
            );
            lane.close_segments(core);
            // A lane still being accepted releases itself once it is
            // (`lane_next` finds its retrieve gone).
            if lane.accepted && !lane.released {
                lane.released = true;
                conn.release(core);
            }
        }
    }

    /// Whether a retrieve has no lane left to carry what it has queued;
    /// then its queue fails with `reason`.
    fn after_lanes_changed(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        origin: u64,
        reason: &str,
    ) {
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) else {
            return;
        };
        let lanes = &self.lanes;
        op.lanes.retain(|serial| lanes.contains_key(serial));
        if op.lanes.is_empty() && op.retrieve.has_queued() {
            tracing::warn!(
                reason,
                "a retrieve has no association left to its destination"
            );
            op.retrieve.fail_queued(reason);
        }
        self.maybe_finish(core, conns, origin);
    }

    /// A lane's association ended: its sub-operations in flight (being
    /// sent, or awaiting their answer) fail, and what is queued goes to the
    /// other lanes (or fails, when none is left).
    fn lane_ended(&mut self, core: &mut Core, conns: &mut Connections, serial: u64, why: &str) {
        let Some(mut lane) = self.lanes.remove(&serial) else {
            return;
        };
        Self::give_back_ahead(&mut lane, &mut self.operations, core);
        let origin = lane.origin;
        let reason = format!("the association to the destination ended: {why}");
        let sending = lane.transfer.take().map(|mut transfer| {
            transfer.close(core);
            transfer
        });
        lane.close_segments(core);
        for transfer in sending.into_iter().chain(lane.outstanding.drain(..)) {
            if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
                op.retrieve.done(
                    &transfer.dataset.triplet.sop_instance_uid,
                    SubOutcome::Failed(reason.clone()),
                );
            }
        }
        self.send_pending(core, conns, origin);
        self.after_lanes_changed(core, conns, origin, &reason);
        if let Some(conn) = conns.get_mut(origin) {
            conn.flush_sends(core);
        }
    }

    // ----- the router's notifications -----

    /// A send completed on `serial`: a C-FIND waiting for its sends goes
    /// on; lanes waiting for a chunk or for sends are tried again.
    pub(crate) fn sent(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        if let Some(Operation::Find(op)) = self.operations.get(&serial) {
            if op.waiting_for_sends
                && conns
                    .get_mut(serial)
                    .is_some_and(|conn| conn.sends_in_flight() <= FIND_SENDS_MAX / 2)
            {
                self.find_step(core, conns, serial);
            }
        }
        self.wake_waiting(core, conns);
    }

    /// A new share epoch began: the lanes it held back are tried again.
    pub(crate) fn share_fired(&mut self, core: &mut Core, conns: &mut Connections) {
        self.share.timer_armed = false;
        self.wake_waiting(core, conns);
    }

    /// The core's associations received `bytes` of C-STORE data sets (ingest
    /// is waiting: retrieval keeps to its share).
    pub(crate) fn ingest_received(&mut self, bytes: usize) {
        self.share.ingest_received(bytes, Instant::now());
    }

    /// Tries every waiting lane again.
    fn wake_waiting(&mut self, core: &mut Core, conns: &mut Connections) {
        if self.waiting.is_empty() {
            return;
        }
        let waiting: Vec<u64> = self.waiting.drain(..).collect();
        for lane in waiting {
            if let Some(state) = self.lanes.get_mut(&lane) {
                state.waiting = false;
                self.pump_lane(core, conns, lane);
            }
        }
    }

    /// An association ended: its operation stops (a C-MOVE's lanes are
    /// aborted), or, for a lane, its sub-operation fails.
    pub(crate) fn association_ended(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        conn: &Connection,
    ) {
        let serial = conn.serial;
        if conn.purpose == Purpose::MoveSubOperations {
            let why = conn
                .outcome
                .clone()
                .unwrap_or_else(|| "connection closed".to_owned());
            self.lane_ended(core, conns, serial, &why);
            return;
        }
        if let Some(mut lane) = self.lanes.remove(&serial) {
            // A C-GET's own association.
            for mut transfer in lane.transfer.take().into_iter().chain(lane.ahead.drain(..)) {
                transfer.close(core);
            }
            lane.close_segments(core);
        }
        match self.operations.remove(&serial) {
            Some(Operation::Retrieve(op)) => {
                tracing::warn!(
                    peer = ?conn.peer,
                    calling_ae = %conn.calling_ae_title,
                    "the association of a retrieve ended before its answer; its sub-operations stop"
                );
                for lane in op.lanes {
                    if lane != serial {
                        if let Some(lane_conn) = conns.get_mut(lane) {
                            lane_conn.abort(core, "its C-MOVE's requester left");
                        }
                    }
                }
            }
            Some(Operation::Find(_)) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_comments_are_cut_to_64_characters() {
        assert_eq!(error_comment(&"é".repeat(100)).chars().count(), 64);
        assert_eq!(error_comment("short"), "short");
    }
}
