//! One core's handler: the router between the `sluice-io` runtime and the
//! core's services. It owns nothing of their state; it decides who an event
//! is for and hands it over:
//!
//! - io events by their tag's kind ([`super::tag`]): a connection's sends,
//!   receives and timer to its [`Connection`] (reached by serial in the
//!   core's [`Connections`]), file and directory completions and the
//!   group-commit timers to the ingest service ([`Ingest`]), an outbound
//!   connect to the commitment service ([`Commitment`]);
//! - what arrives on a connection ([`Incoming`]): association indications
//!   (negotiated here through [`super::admission`]), command sets by their
//!   DIMSE command (C-ECHO answered here, C-STORE to ingest, N-ACTION and
//!   N-EVENT-REPORT-RSP to commitment), data-set fragments to what the
//!   connection is receiving;
//! - messages from other threads ([`CoreMessage`]): the index writer's
//!   answers to ingest, the commitment tracker's requests to commitment;
//! - the services' answers back to connections: C-STORE-RSPs
//!   ([`StoreAnswer`]), with the per-association counters and the refusal
//!   log line and event.
//!
//! A Query/Retrieve service joins as one more field and one more arm per
//! command; the durability order lives in `ingest::job`, not here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_io::{ConnId, Core, CoreSender, Event, Handler, RecvBuf};
use sluice_net::assoc::{Indication, Input, NegotiationOutcome};
use sluice_net::dimse::{CEchoRsp, CStoreRq, CStoreRsp, Command, Status, StatusDetail};

use super::admission;
use super::commitment::Commitment;
use super::conn::{Connection, Connections, Incoming, Receiving, Timeouts};
use super::failure::Failure;
use super::ingest::batcher::IndexAnswer;
use super::ingest::dir_sync::RoundId;
use super::ingest::{Answered, Ingest, JobKey, Refused, StoreAnswer, StoreStart};
use super::shared::ServerShared;
use super::tag::{split, TagKind};
use crate::commit::messages::ToCore;
use crate::store::StoreEvent;

/// How long the index writer's callback may wait for room in a core's mailbox.
const MAILBOX_SEND_WAIT: Duration = Duration::from_secs(600);

/// Messages from other threads to a core.
#[derive(Debug)]
pub(crate) enum CoreMessage {
    /// The index writer answered a batch of this core.
    Indexed(IndexAnswer),
    /// The commitment tracker asks for something.
    Commitment(ToCore),
}

/// One core's handler (see the module documentation).
pub(crate) struct CoreHandler {
    shared: Arc<ServerShared>,
    core_index: usize,
    timeouts: Timeouts,
    conns: Connections,
    ingest: Ingest,
    commitment: Commitment,
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
        let reply = Arc::new(move |answer: IndexAnswer| {
            if sender
                .send_timeout(CoreMessage::Indexed(answer), MAILBOX_SEND_WAIT)
                .is_err()
            {
                tracing::error!("a core did not take an index result; its senders time out");
            }
        });
        CoreHandler {
            ingest: Ingest::new(shared.clone(), core_index, reply),
            commitment: Commitment::new(shared.clone(), core_index),
            shared,
            core_index,
            timeouts,
            conns: Connections::default(),
        }
    }

    // ----- connections -----

    fn accepted(&mut self, core: &mut Core, id: ConnId, peer: Option<SocketAddr>, listener: usize) {
        let serial = self.conns.next_serial();
        tracing::trace!(core = self.core_index, serial, peer = ?peer, "accepted");
        let mut conn = Connection::accepted(id, serial, peer, listener, self.timeouts);
        conn.input(core, Input::TransportConnectIndication);
        self.conns.insert(conn);
        self.indications(core, serial);
    }

    fn received(&mut self, core: &mut Core, serial: u64, data: &RecvBuf) {
        tracing::trace!(
            core = self.core_index,
            serial,
            length = data.len(),
            "received"
        );
        if let Some(conn) = self.conns.get_mut(serial) {
            conn.counters.bytes_received += data.len() as u64;
        }
        let mut offset = 0usize;
        loop {
            let Some(conn) = self.conns.get_mut(serial) else {
                panic!("bytes for connection {serial}, which is gone");
            };
            let Some(incoming) = conn.next_incoming(core, data, &mut offset) else {
                break;
            };
            match incoming {
                Incoming::Indication(indication) => self.indication(core, serial, indication),
                Incoming::Command { context_id, bytes } => {
                    self.command(core, serial, context_id, &bytes);
                }
                Incoming::Data {
                    context_id,
                    range,
                    last,
                } => {
                    let bytes = data.get(range.clone()).unwrap_or_default();
                    // That range of the receive buffer, lent to the file
                    // write (no copy).
                    let slice = data.slice(range);
                    self.data_fragment(core, serial, context_id, bytes, slice, last);
                }
            }
            self.answer_stores(core);
        }
        if let Some(conn) = self.conns.get_mut(serial) {
            if let Some(Receiving::Store(key)) = conn.receiving {
                self.ingest.flush(core, key);
                self.answer_stores(core);
            }
        }
    }

    /// Hands out the indications an input outside the receive path made.
    fn indications(&mut self, core: &mut Core, serial: u64) {
        while let Some(indication) = self
            .conns
            .get_mut(serial)
            .and_then(Connection::next_indication)
        {
            self.indication(core, serial, indication);
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
                let outcome = admission::negotiate_limited(&self.shared, &rq, conn.listener);
                match &outcome {
                    NegotiationOutcome::Accept { negotiated, .. } => {
                        conn.negotiated_pdu_length(negotiated);
                        conn.counted = true;
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
                conn.input(core, Input::AssociateResponse(outcome.into()));
            }
            Indication::ReleaseRequest | Indication::ReleaseCollision => {
                conn.outcome.get_or_insert_with(|| "released".to_owned());
                conn.input(core, Input::ReleaseResponse);
            }
            Indication::Aborted(cause) => {
                conn.outcome
                    .get_or_insert_with(|| format!("aborted: {cause:?}"));
                self.commitment
                    .fail_reports(conn, &format!("association aborted: {cause:?}"));
            }
            Indication::AssociateAccepted(negotiated) => {
                conn.negotiated_pdu_length(&negotiated);
                self.commitment.association_accepted(core, conn);
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
            // Said by the connection's P-DATA path; any indication a newer
            // state machine adds is not for this service user.
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
        if conn.counted {
            admission::release(&self.shared, &conn.calling_ae_title);
        }
        conn.cancel_timer(core);
        self.ingest.log_in_progress(conn.serial);
        conn.log_ended();
    }

    // ----- DIMSE -----

    fn command(&mut self, core: &mut Core, serial: u64, context_id: u8, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a command on connection {serial}, which is gone");
        };
        let command = match Command::decode(bytes) {
            Ok(command) => command,
            Err(error) => {
                conn.abort(core, &format!("undecodable command set: {error}"));
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
                conn.send_command(core, context_id, &rsp);
            }
            Command::CStoreRq(rq) => self.store_requested(core, serial, context_id, rq),
            Command::NActionRq(rq) => self.commitment.action_requested(core, conn, context_id, rq),
            Command::NEventReportRsp(rsp) => self.commitment.report_answered(core, conn, rsp),
            other => {
                let reason = format!("unsupported command {:?}", std::mem::discriminant(&other));
                conn.abort(core, &reason);
            }
        }
    }

    fn store_requested(&mut self, core: &mut Core, serial: u64, context_id: u8, rq: CStoreRq) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a C-STORE on connection {serial}, which is gone");
        };
        let context = conn
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
            .map(|context| {
                (
                    context.abstract_syntax.clone(),
                    context.transfer_syntax.clone(),
                )
            });
        let Some((abstract_syntax, transfer_syntax_uid)) = context else {
            conn.abort(
                core,
                "C-STORE on a presentation context that was not accepted",
            );
            return;
        };
        if conn.receiving.is_some() {
            conn.abort(core, "C-STORE-RQ before the previous data set ended");
            return;
        }
        let started = self.ingest.start(
            core,
            StoreStart {
                serial,
                context_id,
                rq: &rq,
                calling_ae_title: &conn.calling_ae_title,
                abstract_syntax: &abstract_syntax,
                transfer_syntax_uid: &transfer_syntax_uid,
            },
        );
        conn.receiving = Some(match started {
            Ok(key) => Receiving::Store(key),
            Err(failure) => Receiving::Discard(Refused {
                context_id,
                rq,
                failure,
            }),
        });
    }

    fn data_fragment(
        &mut self,
        core: &mut Core,
        serial: u64,
        context_id: u8,
        bytes: &[u8],
        slice: Option<RecvBuf>,
        last: bool,
    ) {
        let Some(conn) = self.conns.get_mut(serial) else {
            panic!("a data set on connection {serial}, which is gone");
        };
        let other_context = "data set on another presentation context than its command";
        match &conn.receiving {
            None => conn.abort(core, "data set without a C-STORE-RQ"),
            Some(Receiving::Ignore) => {
                if last {
                    conn.receiving = None;
                }
            }
            Some(Receiving::Action(_)) => {
                self.commitment
                    .action_fragment(core, conn, context_id, bytes, last);
            }
            Some(Receiving::Discard(refused)) => {
                if refused.context_id != context_id {
                    conn.abort(core, other_context);
                } else if last {
                    if let Some(Receiving::Discard(refused)) = conn.receiving.take() {
                        refuse_store(&self.shared, core, conn, refused);
                    }
                }
            }
            Some(Receiving::Store(key)) => {
                let key: JobKey = *key;
                if self.ingest.context_of(key) != context_id {
                    conn.abort(core, other_context);
                    return;
                }
                self.ingest.fragment(core, key, bytes, slice);
                if last {
                    conn.receiving = None;
                    self.ingest.complete(core, key);
                }
            }
        }
    }

    /// Sends the C-STORE answers the ingest service produced.
    fn answer_stores(&mut self, core: &mut Core) {
        for answer in self.ingest.take_answers() {
            let StoreAnswer {
                serial,
                context_id,
                rq,
                calling_ae_title,
                outcome,
            } = answer;
            let conn = self.conns.get_mut(serial);
            match (outcome, conn) {
                (Answered::Stored { status, timing }, conn) => {
                    timing.log(&rq.affected_sop_instance_uid, status);
                    let Some(conn) = conn else {
                        tracing::debug!(serial, "response dropped: association gone");
                        continue;
                    };
                    tracing::trace!(serial, status = status.0, "responding");
                    if status == Status::SUCCESS {
                        conn.counters.instances_stored += 1;
                    } else {
                        conn.counters.instances_failed += 1;
                    }
                    conn.send_command(core, context_id, &store_rsp(&rq, status));
                }
                (Answered::Failed(failure), Some(conn)) => {
                    let refused = Refused {
                        context_id,
                        rq,
                        failure,
                    };
                    refuse_store(&self.shared, core, conn, refused);
                }
                (Answered::Failed(failure), None) => {
                    tracing::warn!(
                        sop_instance_uid = %rq.affected_sop_instance_uid,
                        calling_ae = %calling_ae_title,
                        status = %format!("{:04X}", failure.status().0),
                        reason = %failure,
                        "C-STORE failed after its association ended"
                    );
                }
            }
        }
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
                self.indications(core, serial);
            }
            (Some(TagKind::CommitWindow), _) => self.ingest.window_fired(core),
            (Some(TagKind::ClearTimer), _) => self.ingest.clear_fired(core),
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
            (kind, value) => panic!("an open of kind {kind:?} ({value}) that no core submits"),
        }
    }
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
            Event::Connected { conn, tag, result } => {
                let (kind, serial) = split(tag);
                assert_eq!(kind, Some(TagKind::Connect));
                self.commitment
                    .connected(core, &mut self.conns, serial, conn, result);
                self.indications(core, serial);
            }
            Event::Received { conn, data } => {
                // Bytes arrive only for a connection in the table (it leaves
                // at `ConnClosed`, after which its id is stale).
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("bytes for {conn:?}, which is not in the table");
                };
                self.received(core, serial, &data);
            }
            Event::RecvEnded { conn, result } => {
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("the end of {conn:?}, which is not in the table");
                };
                if let Some(conn) = self.conns.get_mut(serial) {
                    conn.receive_ended(core, result.err().map(|error| error.to_string()));
                }
                self.indications(core, serial);
            }
            Event::Sent { conn, result, .. } => {
                let Some(serial) = self.conns.serial_of(conn) else {
                    panic!("a send of {conn:?}, which is not in the table");
                };
                if let Some(conn) = self.conns.get_mut(serial) {
                    conn.sent(core, result.map_err(|error| error.to_string()));
                }
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
            Event::Synced { tag, result, .. } => match split(tag) {
                (Some(TagKind::SyncData), key) => {
                    self.ingest.data_synced(core, JobKey(key), result)
                }
                (Some(TagKind::DirSync), round) => {
                    self.ingest.dir_synced(core, RoundId(round), result);
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
    }

    /// The in-doubt marks of instances already answered are cleared before
    /// the core stops (the index finishes queued batches when it closes), so
    /// a clean shutdown leaves recovery nothing to re-verify.
    fn on_shutdown(&mut self, core: &mut Core) {
        self.ingest.shutdown(core);
    }

    fn on_message(&mut self, core: &mut Core, message: CoreMessage) {
        match message {
            CoreMessage::Indexed(answer) => self.ingest.indexed(core, answer),
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
        }
        self.answer_stores(core);
    }
}

/// Answers a C-STORE with its failure: logged, published as a `Rejected`
/// event, counted.
fn refuse_store(shared: &ServerShared, core: &mut Core, conn: &mut Connection, refused: Refused) {
    conn.counters.instances_failed += 1;
    let status = refused.failure.status();
    tracing::warn!(
        peer = ?conn.peer,
        calling_ae = %conn.calling_ae_title,
        sop_instance_uid = %refused.rq.affected_sop_instance_uid,
        status = %format!("{:04X}", status.0),
        reason = %refused.failure,
        "C-STORE refused"
    );
    shared.store.shared.events.publish(StoreEvent::Rejected {
        sop_instance_uid: refused.rq.affected_sop_instance_uid.clone(),
        calling_ae_title: conn.calling_ae_title.clone(),
        status: status.0,
        reason: refused.failure.to_string(),
    });
    conn.send_command(core, refused.context_id, &store_rsp(&refused.rq, status));
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
