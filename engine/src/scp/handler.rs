//! One core's handler: the router between the `sluice-io` runtime and the
//! core's services. It owns nothing of their state; it decides who an event
//! is for and hands it over:
//!
//! - io events by their tag's kind ([`super::tag`]): a connection's sends,
//!   receives and timer to its [`Connection`] (reached by serial in the
//!   core's [`Connections`]), file and directory completions and the
//!   group-commit timers to the ingest service ([`Ingest`]), an outbound
//!   connect to the commitment service ([`Commitment`]);
//! - what arrives on a connection (the endpoint's [`Incoming`] items):
//!   association indications (negotiated here through
//!   [`super::admission`]), commands by their DIMSE command (C-ECHO answered
//!   here, C-STORE to the storage service [`super::storage`], which hands
//!   its data set to ingest, N-ACTION and N-EVENT-REPORT-RSP to commitment),
//!   C-STORE data-set ranges to the storage service, the peer's protocol
//!   violations to the log;
//! - messages from other threads ([`CoreMessage`]): the index writer's
//!   answers to ingest, the commitment tracker's requests to commitment;
//! - the ingest service's answers back to their connections, through the
//!   storage service (C-STORE-RSPs).
//!
//! A Query/Retrieve service joins as one more field and one more arm per
//! command; the durability order lives in `ingest::job`, not here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sluice_io::{ConnId, Core, CoreSender, Event, Handler, IoBuf, RecvBuf};
use sluice_net::assoc::{Indication, NegotiationOutcome};
use sluice_net::dimse::{CEchoRsp, Command, Status, StatusDetail};
use sluice_net::endpoint::{DataSet, Incoming, Violation};
use sluice_net::pdu::{AssociateRj, RejectReason, RejectResult};
use sluice_net::uid;

use super::access;
use super::admission;
use super::commitment::Commitment;
use super::conn::{Connection, Connections, Purpose, Receiving, Timeouts};
use super::exact::Next;
use super::failure::Failure;
use super::ingest::dir_sync::RoundId;
use super::ingest::replies::ReplyQueue;
use super::ingest::{Ingest, JobKey};
use super::query::{FetchedQueue, QueryRetrieve};
use super::shared::{DrainReport, ServerShared};
use super::storage;
use super::tag::{split, tag, TagKind};
use super::tls::TlsSession;
use crate::commit::messages::ToCore;
use crate::config::AccessService;
use crate::escape::Escaped;
use crate::metrics::{RejectedBecause, Request};

/// Messages from other threads to a core.
#[derive(Debug)]
pub(crate) enum CoreMessage {
    /// The index writer answered batches of this core: they wait in its
    /// reply queue (`ingest::replies`), drained before every message.
    IndexAnswers,
    /// Fetches of records of evicted segments ended: they wait in the
    /// query's queue (`query::fetched`), drained before every message.
    RecordsFetched,
    /// The commitment tracker asks for something.
    Commitment(ToCore),
    /// The server is stopping: drain until `deadline` (see `Server::drain`).
    Drain {
        /// When whatever is still in flight is aborted.
        deadline: Instant,
    },
    /// The watchdog asks the core to turn its loop once (an idle core has
    /// no other event): `Server::liveness` then sees its turn count move.
    Heartbeat,
}

/// A core's part of a graceful shutdown: no new association, C-STORE or
/// Query/Retrieve request is taken; each association is aborted as soon as
/// it owes nothing (every request it sent answered, no data set arriving);
/// at the deadline the rest are aborted; once no association and no instance is left the core
/// tells the server.
#[derive(Debug)]
struct Drain {
    /// Associations aborted at the deadline with requests unanswered.
    aborted_busy: usize,
    /// The deadline passed.
    overdue: bool,
    /// The server was told this core drained.
    reported: bool,
}

/// One core's handler (see the module documentation).
pub(crate) struct CoreHandler {
    shared: Arc<ServerShared>,
    core_index: usize,
    timeouts: Timeouts,
    conns: Connections,
    ingest: Ingest,
    commitment: Commitment,
    query: QueryRetrieve,
    /// Set once the server asked the core to drain.
    draining: Option<Drain>,
}

impl std::fmt::Debug for CoreHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandler")
            .field("core_index", &self.core_index)
            .field("ingest", &self.ingest)
            .finish_non_exhaustive()
    }
}

impl CoreHandler {
    pub(crate) fn new(
        shared: Arc<ServerShared>,
        core_index: usize,
        sender: CoreSender<CoreMessage>,
    ) -> Self {
        let network = &shared.store.config().network;
        let timeouts = Timeouts {
            artim: network.artim_timeout_ms,
            idle: network.idle_timeout_ms,
        };
        // Never waits: a full mailbox already holds messages, before each
        // of which the core drains its reply queue; a stopped core takes
        // nothing more.
        let fetched_sender = sender.clone();
        let fetched = FetchedQueue::new(&shared.store, move || {
            let _ = fetched_sender.try_send(CoreMessage::RecordsFetched);
        });
        let reply = Arc::new(ReplyQueue::new(move || {
            let _ = sender.try_send(CoreMessage::IndexAnswers);
        }));
        CoreHandler {
            ingest: Ingest::new(shared.clone(), core_index, reply),
            commitment: Commitment::new(shared.clone(), core_index),
            query: QueryRetrieve::new(shared.clone(), timeouts, fetched),
            shared,
            core_index,
            timeouts,
            conns: Connections::default(),
            draining: None,
        }
    }

    // ----- connections -----

    fn accepted(&mut self, core: &mut Core, id: ConnId, peer: Option<SocketAddr>, listener: usize) {
        let serial = self.conns.next_serial();
        tracing::trace!(core = self.core_index, serial, peer = ?peer, "accepted");
        let mut conn = Connection::accepted(core, id, serial, peer, listener, self.timeouts);
        if let Some((_, config)) = self.shared.tls.as_ref().filter(|(tls, _)| *tls == listener) {
            match TlsSession::server(config) {
                Ok(session) => conn.tls = Some(Box::new(session)),
                Err(error) => {
                    // Only a configuration rustls itself refuses; the
                    // connection is closed rather than served in plain.
                    tracing::error!(peer = ?peer, %error, "cannot start a TLS session; closing");
                    conn.outcome = Some(format!("TLS session not started: {error}"));
                    self.conns.insert(conn);
                    if let Some(conn) = self.conns.get_mut(serial) {
                        conn.receive_ended(core, None);
                    }
                    self.events(core, serial);
                    return;
                }
            }
        }
        self.conns.insert(conn);
        self.events(core, serial);
    }

    fn received(&mut self, core: &mut Core, serial: u64, data: &RecvBuf) {
        tracing::trace!(
            core = self.core_index,
            serial,
            length = data.len(),
            "received"
        );
        let audit = &self.shared.audit;
        let decrypted = self.conns.get_mut(serial).and_then(|conn| {
            // The runtime delivers nothing while a receive into a buffer
            // is pending.
            debug_assert!(
                conn.lent.is_none() && !conn.exact.is_lent(),
                "bytes while a buffer is lent"
            );
            conn.counters.bytes_received += data.len() as u64;
            conn.decrypt(core, data, audit)
        });
        match decrypted {
            None => {
                self.received_plaintext(core, serial, Received::Pooled(data));
                self.next_receive(core, serial, false);
            }
            Some(plaintext) => {
                if !plaintext.is_empty() {
                    self.received_plaintext(core, serial, Received::Copied(&plaintext));
                }
                // A TLS failure ended the transport.
                self.events(core, serial);
            }
        }
    }

    /// Feeds the plaintext that arrived to the connection's endpoint and
    /// routes what it yields.
    fn received_plaintext(&mut self, core: &mut Core, serial: u64, data: Received<'_>) {
        let mut offset = 0usize;
        loop {
            let Some(conn) = self.conns.get_mut(serial) else {
                panic!("bytes for connection {serial}, which is gone");
            };
            let Some(incoming) = conn.next_incoming(core, data.bytes(), &mut offset) else {
                break;
            };
            self.incoming(core, serial, incoming, Some(data));
            self.answer_stores(core);
        }
        if let Some(conn) = self.conns.get_mut(serial) {
            if let Some(Receiving::Store(key)) = conn.receiving {
                self.ingest.flush(core, key);
                self.answer_stores(core);
            }
        }
    }

    /// Asks for the connection's next receive where it pays
    /// (docs/design/segments.md, "Zero-copy receive" and "Receiving
    /// exactly"; the decision is [`super::exact::Exact::next`]): the rest
    /// of a large data PDV straight into its place in the record buffer,
    /// or headers, a command or a small value exactly into the
    /// connection's buffer, so the pooled receive does not take what
    /// follows; else nothing, and the pooled receive goes on (or is armed
    /// again). `direct`: the last receive went into a buffer.
    fn next_receive(&mut self, core: &mut Core, serial: u64, direct: bool) {
        let Some(conn) = self.conns.get_mut(serial) else {
            return;
        };
        let key = match conn.receiving {
            Some(Receiving::Store(key)) => Some(key),
            _ => None,
        };
        let lend_preempted = key.is_some() && conn.lend_preempted == key;
        let streaming = conn.receiving.is_some();
        let ahead = conn.ahead();
        match conn.exact.next(ahead, direct, streaming, lend_preempted) {
            Next::Pooled => {}
            Next::Record(len) => {
                let Some(key) = key else {
                    return;
                };
                let Some((buf, landing)) = self.ingest.lend_record(key, len) else {
                    return;
                };
                let tag = tag(TagKind::RecvIntoRecord, serial);
                match core.recv_into(conn.id, buf, landing.range(), tag) {
                    Ok(()) => conn.lent = Some((key, landing)),
                    Err((error, buf)) => {
                        tracing::trace!(serial, %error, "no receive into the record buffer");
                        conn.exact.refused(Some(&error));
                        self.ingest.landed(key, buf, landing, 0);
                    }
                }
            }
            Next::Buffer(len) => {
                let buf = conn.exact.lend(len);
                let tag = tag(TagKind::RecvExact, serial);
                if let Err((error, buf)) = core.recv_some_into(conn.id, buf, 0..len, tag) {
                    tracing::trace!(serial, %error, "no exact receive");
                    conn.exact.returned(buf, Some(&error));
                }
            }
        }
    }

    /// A receive into the connection's buffer ended with `bytes` of the
    /// stream (headers, a command, a small value): the endpoint reads them
    /// as any received bytes (data-set bytes among them are copied, as a
    /// TLS association's are), then the next receive is decided. 0 bytes:
    /// the pooled receive took the bytes first (they follow), or the
    /// stream ended.
    fn received_exact(
        &mut self,
        core: &mut Core,
        serial: u64,
        buf: sluice_io::AlignedBuf,
        bytes: usize,
    ) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("an exact receive for connection {serial}, which is gone");
        };
        conn.counters.bytes_received += bytes as u64;
        let received = buf.as_slice().get(..bytes).unwrap_or_default();
        if !received.is_empty() {
            self.received_plaintext(core, serial, Received::Copied(received));
        }
        if let Some(conn) = self.conns.get_mut(serial) {
            conn.exact.returned(buf, None);
        }
        if bytes > 0 {
            self.next_receive(core, serial, true);
        }
    }

    /// A data set ended on the connection: whether the association sends
    /// large data PDVs decides whether the next one is received exactly.
    fn data_set_ended(&mut self, serial: u64) {
        let records = self.ingest.is_segments();
        if let Some(conn) = self.conns.get_mut(serial) {
            let pdv_max = conn.take_data_pdv_max();
            let eligible = records && conn.tls.is_none();
            conn.exact.data_set_ended(pdv_max, eligible);
        }
    }

    /// A receive into a record buffer ended with `bytes` of the stream in
    /// place. The endpoint reads them there: the rest of the PDV it was
    /// inside comes out as one data range, which the job takes as a
    /// fragment's bytes without a copy. The next headers or value are
    /// received exactly when they can ([`CoreHandler::next_receive`]),
    /// else the pooled receive takes over.
    fn received_into_record(
        &mut self,
        core: &mut Core,
        serial: u64,
        buf: sluice_io::AlignedBuf,
        bytes: usize,
    ) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a receive into a record buffer for connection {serial}, which is gone");
        };
        let Some((key, landing)) = conn.lent.take() else {
            panic!("a receive into a record buffer connection {serial} did not lend");
        };
        conn.counters.bytes_received += bytes as u64;
        if bytes == 0 {
            conn.lend_preempted = Some(key);
        }
        let received = buf
            .as_slice()
            .get(landing.range())
            .and_then(|range| range.get(..bytes))
            .unwrap_or_default();
        let mut offset = 0usize;
        let mut taken = None;
        while let Some(conn) = self.conns.get_mut(serial) {
            let Some(incoming) = conn.next_incoming(core, received, &mut offset) else {
                break;
            };
            match incoming {
                Incoming::Data { range, last, .. } => {
                    debug_assert!(
                        taken.is_none() && range == (0..received.len()),
                        "the rest of a data PDV came out as {range:?} of {}",
                        received.len()
                    );
                    taken = Some((range.len(), last));
                }
                // Nothing else is in the bytes of a data PDV's value (events
                // raised before them come out first).
                other => self.incoming(core, serial, other, None),
            }
        }
        // None when the endpoint read nothing more (it aborted meanwhile):
        // the bytes are dropped, as they would have been unread.
        let (taken, last) = taken.unwrap_or((0, false));
        self.ingest.landed(key, buf, landing, taken);
        self.query.ingest_received(taken);
        if let Some(conn) = self.conns.get_mut(serial) {
            storage::landed(core, conn, &mut self.ingest, taken, last);
        }
        if last {
            self.data_set_ended(serial);
        }
        if bytes > 0 {
            self.next_receive(core, serial, true);
        }
    }

    /// Hands out the events a call outside the receive path raised (a
    /// timeout, the transport's end, a local request).
    fn events(&mut self, core: &mut Core, serial: u64) {
        while let Some(event) = self.conns.get_mut(serial).and_then(Connection::next_event) {
            self.incoming(core, serial, event, None);
        }
    }

    /// Routes what arrived on a connection; `data` is the receive buffer
    /// the data-set ranges index (none outside the receive path).
    fn incoming(
        &mut self,
        core: &mut Core,
        serial: u64,
        incoming: Incoming,
        data: Option<Received<'_>>,
    ) {
        match incoming {
            Incoming::Indication(indication) => self.indication(core, serial, indication),
            Incoming::Command {
                context_id,
                command,
                data_set,
            } => self.command(core, serial, context_id, command, data_set),
            Incoming::Data {
                context_id: _,
                range,
                last,
            } => {
                let Some(data) = data else {
                    panic!("a data-set range outside the receive path");
                };
                let bytes = data.bytes().get(range.clone()).unwrap_or_default();
                // Lent only if a write takes it: a record job copies the
                // bytes into its buffer, and a copied range would be
                // copied twice.
                self.data_fragment(core, serial, bytes, || data.lend(range), last);
                if last {
                    self.data_set_ended(serial);
                }
            }
            Incoming::Violation(violation) => {
                let Some(conn) = self.conns.get_mut(serial) else {
                    panic!("a violation on connection {serial}, which is gone");
                };
                // The endpoint has answered it (A-ABORT) and reads nothing
                // more.
                match &violation {
                    Violation::Pdu(error) => {
                        tracing::warn!(peer = ?conn.peer, calling_ae = %Escaped(&conn.calling_ae_title), %error, "malformed PDU; aborting the association");
                    }
                    other => {
                        tracing::warn!(peer = ?conn.peer, calling_ae = %Escaped(&conn.calling_ae_title), reason = %Escaped(&other), "aborting the association");
                        conn.outcome = Some(format!("aborted by Sluice: {other}"));
                    }
                }
            }
            other => debug_assert!(
                false,
                "an endpoint event this handler does not know: {other:?}"
            ),
        }
    }

    fn indication(&mut self, core: &mut Core, serial: u64, indication: Indication) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("an indication for connection {serial}, which is gone");
        };
        match indication {
            Indication::AssociateRequest(rq) => {
                conn.calling_ae_title = rq.calling_ae_title.trim().to_owned();
                conn.called_ae_title = rq.called_ae_title.trim().to_owned();
                let mut refused_by_access = None;
                let (outcome, grants) = if self.draining.is_some() {
                    // Transient: the sender retries, on this server once it
                    // is back or on another.
                    (
                        NegotiationOutcome::Reject(AssociateRj {
                            result: RejectResult::Transient,
                            reason: RejectReason::TemporaryCongestion,
                        }),
                        Default::default(),
                    )
                } else {
                    match access::admit(
                        &self.shared.store.config().access.rule,
                        &conn.calling_ae_title,
                        conn.peer.map(|peer| peer.ip()),
                    ) {
                        Ok(grant) => {
                            conn.access = grant;
                            admission::negotiate_limited(&self.shared, &rq, conn.listener)
                        }
                        Err(why) => {
                            refused_by_access = Some(why);
                            (
                                NegotiationOutcome::Reject(AssociateRj {
                                    result: RejectResult::Permanent,
                                    reason: RejectReason::CallingAeTitleNotRecognized,
                                }),
                                Default::default(),
                            )
                        }
                    }
                };
                conn.extended_negotiation = grants;
                match &outcome {
                    NegotiationOutcome::Accept { negotiated, .. } => {
                        conn.counters.contexts_accepted = negotiated.presentation_contexts.len();
                        conn.counted = true;
                        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
                            metrics.association_accepted();
                        }
                        conn.ae_metrics = self.shared.metrics.calling_ae(&conn.calling_ae_title);
                        self.shared.audit.association_accepted(
                            (self.core_index, conn.serial),
                            conn.peer,
                            &conn.calling_ae_title,
                        );
                        if let Some(refused) =
                            admission::refused_contexts_accepted(&self.shared, &rq, conn.listener)
                        {
                            tracing::info!(
                                peer = ?conn.peer,
                                calling_ae = %Escaped(&conn.calling_ae_title),
                                "association accepted, presentation contexts refused: {refused}"
                            );
                        }
                    }
                    NegotiationOutcome::Reject(rj) => {
                        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
                            metrics.association_rejected(RejectedBecause::of(rj.reason));
                        }
                        let (result, source, reason) = rj.codes();
                        if let Some(why) = &refused_by_access {
                            self.shared.audit.security_alert(
                                crate::audit::Alert::AccessTableRefused,
                                conn.peer,
                                &conn.calling_ae_title,
                                why,
                            );
                        }
                        let why = refused_by_access.unwrap_or_else(|| {
                            admission::rejection_reason(
                                &self.shared,
                                &rq,
                                conn.listener,
                                rj,
                                self.draining.is_some(),
                            )
                        });
                        tracing::warn!(
                            peer = ?conn.peer,
                            calling_ae = %Escaped(&conn.calling_ae_title),
                            called_ae = %Escaped(&conn.called_ae_title),
                            "association rejected: result {result}, source {source}, reason {reason}: {why}"
                        );
                        self.shared.audit.association_rejected(
                            conn.peer,
                            &conn.calling_ae_title,
                            &format!("A-ASSOCIATE-RJ {result}/{source}/{reason}: {why}"),
                        );
                        conn.outcome = Some(format!("rejected {result}/{source}/{reason}"));
                    }
                }
                conn.answer_association(core, outcome.into());
            }
            Indication::ReleaseRequest | Indication::ReleaseCollision => {
                conn.outcome.get_or_insert_with(|| "released".to_owned());
                conn.answer_release(core);
            }
            Indication::Aborted(cause) => {
                conn.outcome
                    .get_or_insert_with(|| format!("aborted: {cause:?}"));
                self.commitment
                    .fail_reports(conn, &format!("association aborted: {cause:?}"));
            }
            Indication::AssociateAccepted(negotiated) => {
                conn.counters.contexts_accepted = negotiated.presentation_contexts.len();
                match conn.purpose {
                    Purpose::MoveSubOperations => {
                        self.query.lane_accepted(core, &mut self.conns, serial);
                    }
                    _ => self.commitment.association_accepted(core, conn),
                }
            }
            Indication::AssociateRejected(rj) => {
                let (result, source, reason) = rj.codes();
                let why = format!(
                    "association rejected: result {result}, source {source}, reason {reason}"
                );
                conn.outcome = Some(why.clone());
                self.commitment.fail_reports(conn, &why);
            }
            Indication::ReleaseConfirm => {
                conn.outcome.get_or_insert_with(|| "released".to_owned());
            }
            // The endpoint consumes P-DATA; any indication a newer state
            // machine adds is not for this service user.
            _ => {}
        }
    }

    fn connection_ended(&mut self, core: &mut Core, mut conn: Connection) {
        if let Some(Receiving::Store(key)) = conn.receiving.take() {
            self.ingest.abandon(core, key);
        }
        let why = conn
            .outcome
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned());
        self.commitment.association_ended(
            &mut conn,
            &format!("association ended before the report was answered: {why}"),
        );
        self.query.association_ended(core, &mut self.conns, &conn);
        if conn.counted {
            admission::release(&self.shared, &conn.calling_ae_title);
        }
        conn.cancel_timer(core);
        self.shared
            .audit
            .association_ended((self.core_index, conn.serial));
        self.ingest.log_in_progress(conn.serial);
        conn.log_ended();
    }

    // ----- DIMSE -----

    fn command(
        &mut self,
        core: &mut Core,
        serial: u64,
        context_id: u8,
        command: Command,
        data_set: DataSet,
    ) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a command on connection {serial}, which is gone");
        };
        // The endpoint hands out a command only between data sets.
        assert!(
            conn.receiving.is_none(),
            "a command while a data set arrives"
        );
        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
            let request = match &command {
                Command::CEchoRq(_) => Some(Request::Echo),
                Command::CStoreRq(_) => Some(Request::Store),
                Command::CFindRq(_) => Some(Request::Find),
                Command::CMoveRq(_) => Some(Request::Move),
                Command::CGetRq(_) => Some(Request::Get),
                Command::CCancelRq(_) => Some(Request::Cancel),
                Command::NActionRq(_) => Some(Request::Action),
                _ => None,
            };
            if let Some(request) = request {
                metrics.request(request);
            }
        }
        // Query/Retrieve reaches other associations (its lanes) too.
        if matches!(
            command,
            Command::CFindRq(_) | Command::CMoveRq(_) | Command::CGetRq(_)
        ) {
            // Owed its final answer: a draining server waits for it.
            conn.request_received();
        }
        let command = match command {
            Command::CFindRq(rq) => {
                return self.query.find_requested(
                    core,
                    &mut self.conns,
                    serial,
                    (context_id, rq),
                    data_set,
                );
            }
            retrieve @ (Command::CMoveRq(_) | Command::CGetRq(_)) => {
                return self.query.retrieve_requested(
                    core,
                    &mut self.conns,
                    serial,
                    context_id,
                    retrieve,
                    data_set,
                );
            }
            Command::CCancelRq(rq) => {
                return self.query.cancel_requested(
                    core,
                    &mut self.conns,
                    serial,
                    rq.message_id_being_responded_to,
                );
            }
            // Its data set, if any, was collected and is not needed.
            Command::CStoreRsp(rsp) => {
                return self
                    .query
                    .store_answered(core, &mut self.conns, serial, rsp);
            }
            other => other,
        };
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a command on connection {serial}, which is gone");
        };
        match command {
            Command::CEchoRq(rq) => {
                // Echoed when it can go on the wire as a UI value, else the
                // context's (Verification): the answer always encodes.
                let affected_sop_class_uid =
                    if uid::check_uid_value(rq.affected_sop_class_uid.as_bytes()).is_ok() {
                        rq.affected_sop_class_uid
                    } else {
                        uid::VERIFICATION.to_owned()
                    };
                let rsp = Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: rq.message_id,
                    affected_sop_class_uid: Some(affected_sop_class_uid),
                    status: Status::SUCCESS,
                    detail: StatusDetail::default(),
                });
                conn.send_command(core, context_id, &rsp);
            }
            Command::CStoreRq(rq) => {
                let refusal = if self.draining.is_some() {
                    Some(Failure::ShuttingDown)
                } else {
                    Failure::unauthorized(
                        conn.access,
                        &self.shared.store.config().access.rule,
                        AccessService::Store,
                    )
                };
                storage::requested(
                    core,
                    conn,
                    &mut self.ingest,
                    context_id,
                    rq,
                    data_set,
                    refusal,
                );
            }
            Command::NActionRq(rq) => {
                conn.request_received();
                self.commitment
                    .action_requested(core, conn, context_id, rq, data_set);
            }
            // Its data set, if any, was collected and is not needed.
            Command::NEventReportRsp(rsp) => self.commitment.report_answered(core, conn, rsp),
            other => {
                let reason = format!("unsupported command {:?}", std::mem::discriminant(&other));
                conn.abort(core, &reason);
            }
        }
    }

    /// A fragment of a C-STORE's data set (the endpoint checked that it
    /// follows its command, on its context).
    fn data_fragment(
        &mut self,
        core: &mut Core,
        serial: u64,
        bytes: &[u8],
        slice: impl FnOnce() -> Option<IoBuf>,
        last: bool,
    ) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a data set on connection {serial}, which is gone");
        };
        self.query.ingest_received(bytes.len());
        storage::fragment(
            core,
            conn,
            &mut self.ingest,
            &self.shared,
            bytes,
            slice,
            last,
        );
    }

    /// Sends the C-STORE answers the ingest service produced.
    fn answer_stores(&mut self, core: &mut Core) {
        storage::answer(core, &mut self.conns, &self.shared, self.ingest.answers());
    }

    // ----- shutdown -----

    /// The server asked this core to drain until `deadline`.
    fn drain(&mut self, core: &mut Core, deadline: Instant) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(Drain {
            aborted_busy: 0,
            overdue: false,
            reported: false,
        });
        self.query.stop_taking();
        let after = deadline.saturating_duration_since(Instant::now());
        if after.is_zero() || core.timer(after, tag(TagKind::DrainDeadline, 0)).is_err() {
            // No time, or no timer to keep it: the deadline is now.
            self.drain_deadline(core);
        }
        self.drain_step(core);
    }

    /// While draining: aborts every inbound association that owes nothing,
    /// and tells the server once the core has nothing left.
    fn drain_step(&mut self, core: &mut Core) {
        let Some(drain) = &self.draining else {
            return;
        };
        let overdue = drain.overdue;
        let idle = self.conns.serials_where(|conn| {
            !conn.is_closing() && (overdue || (!conn.is_outbound() && conn.is_idle()))
        });
        for serial in idle {
            if let Some(conn) = self.conns.get_mut(serial) {
                conn.abort_quietly(core, "the server is shutting down");
            }
        }
        let Some(drain) = &mut self.draining else {
            return;
        };
        if !drain.reported && self.conns.is_empty() && self.ingest.is_idle() {
            drain.reported = true;
            let report = DrainReport {
                aborted_busy: drain.aborted_busy,
            };
            // The server waits on the other end (or gave up waiting).
            let _ = self.shared.drained.try_send(report);
        }
    }

    /// The drain time is over: every association left is aborted, those
    /// with requests unanswered counted (their data sets in progress are
    /// abandoned; an instance already whole goes on to be stored).
    fn drain_deadline(&mut self, core: &mut Core) {
        let Some(drain) = &mut self.draining else {
            panic!("a drain deadline on a core that is not draining");
        };
        drain.overdue = true;
        drain.aborted_busy = self
            .conns
            .serials_where(|conn| !conn.is_closing() && !conn.is_idle())
            .len();
        self.drain_step(core);
    }

    // ----- io events -----

    fn timer_fired(&mut self, core: &mut Core, tag: u64) {
        match split(tag) {
            (Some(TagKind::ConnTimer), serial) => {
                // A timer of a connection that ended was cancelled with it.
                let Some(conn) = self.conns.get_mut(serial) else {
                    panic!("the timer of connection {serial}, which is gone");
                };
                conn.timer_fired(core);
                self.events(core, serial);
            }
            (Some(TagKind::CommitWindow), _) => self.ingest.window_fired(core),
            (Some(TagKind::FindStep), serial) => {
                self.query.find_step(core, &mut self.conns, serial);
            }
            (Some(TagKind::RetrieveShare), _) => self.query.share_fired(core, &mut self.conns),
            (Some(TagKind::ClearTimer), _) => self.ingest.clear_fired(core),
            (Some(TagKind::FlushWindow), _) => self.ingest.flush_window_fired(core),
            (Some(TagKind::DrainDeadline), _) => self.drain_deadline(core),
            (kind, value) => panic!("a timer of kind {kind:?} ({value}) that no core arms"),
        }
    }

    fn opened(
        &mut self,
        core: &mut Core,
        tag: u64,
        result: Result<sluice_io::FileHandle, sluice_io::IoError>,
    ) {
        match split(tag) {
            (Some(TagKind::Open), key) => self.ingest.opened(core, JobKey(key), result),
            (Some(TagKind::DirOpen), round) => self.ingest.dir_opened(core, RoundId(round), result),
            (Some(TagKind::RetrieveOpen), lane) => {
                let result = result.map_err(crate::scp::query::OpenError::Io);
                self.query.opened(core, &mut self.conns, lane, result);
            }
            (kind, value) => panic!("an open of kind {kind:?} ({value}) that no core submits"),
        }
    }
}

/// Plaintext that arrived on a connection, which the endpoint's data-set
/// ranges index.
#[derive(Debug, Clone, Copy)]
enum Received<'a> {
    /// A plain association's receive buffer: its ranges are lent to the
    /// file writes without a copy.
    Pooled(&'a RecvBuf),
    /// A TLS association's decrypted bytes, or bytes received exactly into
    /// the connection's buffer: a range is copied to be lent.
    Copied(&'a [u8]),
}

impl Received<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Received::Pooled(buffer) => buffer,
            Received::Copied(bytes) => bytes,
        }
    }

    /// `range` as a buffer a write can hold; `None` when out of range.
    fn lend(&self, range: std::ops::Range<usize>) -> Option<IoBuf> {
        match self {
            Received::Pooled(buffer) => buffer.slice(range).map(IoBuf::from),
            Received::Copied(bytes) => bytes.get(range).map(|bytes| IoBuf::from(bytes.to_vec())),
        }
    }
}

impl Handler for CoreHandler {
    type Message = CoreMessage;

    fn on_event(&mut self, core: &mut Core, event: Event) {
        self.shared.metrics.turned(self.core_index);
        match event {
            Event::Accepted {
                conn,
                peer,
                listener,
            } => self.accepted(core, conn, peer, listener),
            Event::Connected { conn, tag, result } => {
                let (kind, serial) = split(tag);
                match kind {
                    Some(TagKind::Connect) => {
                        self.commitment
                            .connected(core, &mut self.conns, serial, conn, result);
                    }
                    Some(TagKind::RetrieveConnect) => {
                        self.query.connected(core, &mut self.conns, serial, result);
                    }
                    other => panic!("a connect of kind {other:?} ({serial}) that no core submits"),
                }
                self.events(core, serial);
            }
            Event::Received { conn, data } => {
                // Bytes arrive only for a connection in the table (it leaves
                // at `ConnClosed`, after which its id is stale).
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("bytes for {conn:?}, which is not in the table");
                };
                self.received(core, serial, &data);
            }
            Event::ReceivedInto {
                conn,
                buf,
                bytes,
                tag,
            } => {
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("a receive into a buffer of {conn:?}, which is not in the table");
                };
                match split(tag).0 {
                    Some(TagKind::RecvExact) => self.received_exact(core, serial, buf, bytes),
                    _ => self.received_into_record(core, serial, buf, bytes),
                }
            }
            Event::RecvEnded { conn, result } => {
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("the end of {conn:?}, which is not in the table");
                };
                if let Some(conn) = self.conns.get_mut(serial) {
                    conn.receive_ended(core, result.err().map(|error| error.to_string()));
                }
                self.events(core, serial);
            }
            Event::Sent { conn, result, .. } => {
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("a send of {conn:?}, which is not in the table");
                };
                if let Some(conn) = self.conns.get_mut(serial) {
                    conn.sent(core, result.map_err(|error| error.to_string()));
                }
                self.query.sent(core, &mut self.conns, serial);
            }
            Event::ConnClosed { conn } => {
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("{conn:?} closed, but it is not in the table");
                };
                if let Some(conn) = self.conns.remove(serial) {
                    self.connection_ended(core, conn);
                }
            }
            Event::TimerFired { tag } => self.timer_fired(core, tag),
            Event::Opened { tag, result } => self.opened(core, tag, result),
            Event::Written { tag, result, .. } => match split(tag) {
                (Some(TagKind::Write), key) => self.ingest.written(core, JobKey(key), result),
                (kind, value) => panic!("a write of kind {kind:?} ({value}) that no core submits"),
            },
            Event::Read {
                tag, chunk, result, ..
            } => match split(tag) {
                (Some(TagKind::RetrieveRead), lane) => {
                    self.query.read(core, &mut self.conns, lane, chunk, result);
                }
                (kind, value) => panic!("a read of kind {kind:?} ({value}) that no core submits"),
            },
            Event::Synced { tag, result, .. } => match split(tag) {
                (Some(TagKind::SyncData), key) => {
                    self.ingest.data_synced(core, JobKey(key), result)
                }
                (Some(TagKind::DirSync), round) => {
                    self.ingest.dir_synced(core, RoundId(round), result);
                }
                (Some(TagKind::SegmentSync), round) => {
                    self.ingest.segment_synced(core, RoundId(round), result);
                }
                (kind, value) => panic!("a sync of kind {kind:?} ({value}) that no core submits"),
            },
            Event::Renamed { tag, result } => match split(tag) {
                (Some(TagKind::Rename), key) => self.ingest.renamed(core, JobKey(key), result),
                (kind, value) => panic!("a rename of kind {kind:?} ({value}) that no core submits"),
            },
            Event::Unlinked {
                result: Err(error), ..
            } => {
                tracing::warn!(%error, "unlink failed; start-up recovery will find the file");
            }
            // Closes and successful unlinks: nobody waits for them.
            _ => {}
        }
        self.answer_stores(core);
        self.drain_step(core);
    }

    /// The in-doubt marks of instances already answered are cleared before
    /// the core stops (the index finishes queued batches when it closes), so
    /// a clean shutdown leaves recovery nothing to re-verify.
    fn on_shutdown(&mut self, core: &mut Core) {
        self.ingest.shutdown(core);
    }

    fn on_message(&mut self, core: &mut Core, message: CoreMessage) {
        self.shared.metrics.turned(self.core_index);
        // Whatever the message, the index's answers first: their wake-up
        // may not have fit in a full mailbox.
        self.ingest.index_answers(core);
        self.query.records_fetched(core, &mut self.conns);
        match message {
            CoreMessage::IndexAnswers | CoreMessage::RecordsFetched => {}
            CoreMessage::Commitment(ToCore::Answer {
                serial,
                context_id,
                message_id,
                result,
            }) => {
                // The requester may have gone meanwhile: nobody to answer.
                if let Some(conn) = self.conns.get_mut(serial) {
                    let result = result.map_err(Failure::Commitment);
                    self.commitment
                        .answer(core, conn, context_id, message_id, result);
                }
            }
            CoreMessage::Commitment(ToCore::DeliverReport { serial, report }) => {
                let conn = self.conns.get_mut(serial);
                self.commitment.deliver(core, conn, serial, report);
            }
            CoreMessage::Commitment(ToCore::OpenReportAssociation(delivery)) => {
                self.commitment.open_report_association(
                    core,
                    &mut self.conns,
                    *delivery,
                    self.timeouts,
                );
            }
            CoreMessage::Drain { deadline } => self.drain(core, deadline),
            // The turn counted above is all it asks for.
            CoreMessage::Heartbeat => {}
        }
        self.answer_stores(core);
        self.drain_step(core);
    }
}
