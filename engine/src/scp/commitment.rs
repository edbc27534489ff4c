//! The Storage Commitment service of one core: the DIMSE side of the
//! commitment tracker (`crate::commit`), which makes every decision.
//!
//! What it owns: N-ACTION-RQs checked, their action information collected
//! and decoded and handed to the tracker; N-ACTION-RSPs sent when the
//! tracker answers; N-EVENT-REPORT-RQs sent on the requester's association
//! or on an association this core opens as requestor (SCP/SCU role
//! selection asking for the SCP role; several reports, one after the other,
//! then A-RELEASE); and, per association, the reports queued and those sent
//! and not yet answered, whose outcomes go back to the tracker
//! ([`DeliveryOutcome`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sluice_io::{ConnId, Core, IoError};
use sluice_net::assoc::{AssociationProposal, ProposedPresentationContext};
use sluice_net::dimse::commitment::{
    CommitmentRequest, CommitmentResult, ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
};
use sluice_net::dimse::dataset::{DatasetLimits, SmallDatasetEncoding};
use sluice_net::dimse::{
    Command, NActionRq, NActionRsp, NEventReportRq, NEventReportRsp, Status, StatusDetail,
};
use sluice_net::endpoint::DataSet;
use sluice_net::uid;

use super::conn::{Connection, Connections, Purpose, Timeouts};
use super::failure::Failure;
use super::shared::ServerShared;
use super::tag::{tag, TagKind};
use crate::commit::messages::{
    request_bytes, DeliveryOutcome, Refusal, ReportAssociation, Request,
};
use crate::commit::references::References;
use crate::config::AccessService;
use crate::escape::Escaped;
use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// The reports of one association.
#[derive(Debug, Default)]
struct Reports {
    /// To send, one after the other (an association this core opened).
    queued: VecDeque<CommitmentResult>,
    /// Sent, not answered: Message ID -> Transaction UID.
    in_flight: HashMap<u16, String>,
}

/// The commitment service of one core (see the module documentation).
#[derive(Debug)]
pub(crate) struct Commitment {
    shared: Arc<ServerShared>,
    core_index: usize,
    /// By association serial; only associations with reports.
    reports: HashMap<u64, Reports>,
}

impl Commitment {
    pub(crate) fn new(shared: Arc<ServerShared>, core_index: usize) -> Commitment {
        Commitment {
            shared,
            core_index,
            reports: HashMap::new(),
        }
    }

    fn delivery(&self, transaction_uid: String, outcome: DeliveryOutcome) {
        self.shared.tracker.delivery(transaction_uid, outcome);
    }

    // ----- N-ACTION -----

    /// An N-ACTION-RQ with its action information (collected whole by the
    /// endpoint): refused at once, or decoded and handed to the tracker,
    /// which answers through the core's mailbox ([`Commitment::answer`]).
    pub(crate) fn action_requested(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        context_id: u8,
        rq: NActionRq,
        data_set: DataSet,
    ) {
        let abstract_syntax = conn
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
            .map(|context| context.abstract_syntax.clone());
        let refusal = if abstract_syntax.as_deref() != Some(uid::STORAGE_COMMITMENT_PUSH_MODEL)
            || rq.requested_sop_class_uid != uid::STORAGE_COMMITMENT_PUSH_MODEL
        {
            Some(Failure::ActionNotServed {
                sop_class_uid: rq.requested_sop_class_uid.clone(),
            })
        } else if rq.requested_sop_instance_uid != uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE {
            Some(Failure::NoSuchCommitmentInstance {
                sop_instance_uid: rq.requested_sop_instance_uid.clone(),
            })
        } else if rq.action_type_id != ACTION_TYPE_REQUEST_STORAGE_COMMITMENT {
            Some(Failure::NoSuchAction {
                action_type_id: rq.action_type_id,
            })
        } else {
            Failure::unauthorized(
                conn.access,
                &self.shared.store.config().access.rule,
                AccessService::Commitment,
            )
        };
        if let Some(failure) = refusal {
            if let Failure::NotAuthorized(why) = &failure {
                self.shared.audit.security_alert(
                    crate::audit::Alert::ServiceNotGranted,
                    conn.peer,
                    &conn.calling_ae_title,
                    &why.to_string(),
                );
            }
            refuse(core, conn, context_id, rq.message_id, failure);
            return;
        }
        let bytes = match data_set {
            DataSet::Collected(bytes) => bytes,
            DataSet::TooLong { .. } => {
                refuse(
                    core,
                    conn,
                    context_id,
                    rq.message_id,
                    Failure::ActionInformationTooLong,
                );
                return;
            }
            // Absent, or a data set the endpoint streams (never an
            // N-ACTION's).
            _ => {
                refuse(
                    core,
                    conn,
                    context_id,
                    rq.message_id,
                    Failure::NoActionInformation,
                );
                return;
            }
        };
        let encoding = conn
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
            .and_then(|context| {
                SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)
            });
        let Some(encoding) = encoding else {
            refuse(
                core,
                conn,
                context_id,
                rq.message_id,
                Failure::ActionTransferSyntax,
            );
            return;
        };
        let decoded = CommitmentRequest::decode(&bytes, encoding, DatasetLimits::default());
        drop(bytes);
        let request = match decoded {
            Ok(request) => request,
            Err(error) => {
                refuse(
                    core,
                    conn,
                    context_id,
                    rq.message_id,
                    Failure::CommitmentRequest(error),
                );
                return;
            }
        };
        // Packed at once (the decoded references cost about six times as
        // much), then counted in the commitment memory budget before the
        // tracker gets it.
        let CommitmentRequest {
            transaction_uid,
            references,
        } = request;
        let packed = References::pack(&references);
        drop(references);
        let references = match packed {
            Ok(packed) => packed,
            Err(error) => {
                let failure = Failure::Commitment(Refusal::References(error));
                refuse(core, conn, context_id, rq.message_id, failure);
                return;
            }
        };
        let reserved_bytes = request_bytes(&references);
        if let Err(refusal) = self.shared.tracker.memory().try_reserve(reserved_bytes) {
            refuse(
                core,
                conn,
                context_id,
                rq.message_id,
                Failure::Commitment(refusal),
            );
            return;
        }
        let request = Request {
            core: self.core_index,
            serial: conn.serial,
            context_id,
            message_id: rq.message_id,
            requester_ae_title: conn.calling_ae_title.clone(),
            transaction_uid,
            references,
            reserved_bytes,
        };
        if self.shared.tracker.request(request).is_err() {
            self.shared.tracker.memory().release(reserved_bytes);
            refuse(core, conn, context_id, rq.message_id, Failure::TrackerBusy);
        }
    }

    /// The tracker's answer to an N-ACTION: the N-ACTION-RSP.
    pub(crate) fn answer(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        context_id: u8,
        message_id: u16,
        result: Result<(), Failure>,
    ) {
        send_action_rsp(core, conn, context_id, message_id, result.err().as_ref());
    }

    // ----- N-EVENT-REPORT -----

    /// The tracker asks for a report on the requester's association
    /// (`None` when it is gone).
    pub(crate) fn deliver(
        &mut self,
        core: &mut Core,
        conn: Option<&mut Connection>,
        serial: u64,
        report: CommitmentResult,
    ) {
        let transaction_uid = report.transaction_uid.clone();
        let Some(conn) = conn else {
            self.delivery(transaction_uid, DeliveryOutcome::NotOpen);
            return;
        };
        if let Err(reason) = self.send_report(core, conn, &report) {
            tracing::debug!(serial, transaction_uid = %Escaped(&transaction_uid), reason = %Escaped(&reason), "report not sent on the requester's association");
            self.delivery(transaction_uid, DeliveryOutcome::NotOpen);
        }
    }

    /// Sends one N-EVENT-REPORT-RQ (command, then event information) on the
    /// association's commitment context. `Err` with a reason when it cannot
    /// be sent there.
    fn send_report(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        report: &CommitmentResult,
    ) -> Result<(), String> {
        if !conn.may_send_pdata() {
            return Err("association not open".into());
        }
        let Some((context_id, transfer_syntax)) = conn.negotiated().and_then(|negotiated| {
            negotiated
                .presentation_context_for(uid::STORAGE_COMMITMENT_PUSH_MODEL)
                .map(|context| (context.id, context.transfer_syntax.clone()))
        }) else {
            return Err("no Storage Commitment presentation context accepted".into());
        };
        let data = SmallDatasetEncoding::from_transfer_syntax(&transfer_syntax)
            .ok_or_else(|| format!("transfer syntax {transfer_syntax} not supported"))
            .and_then(|encoding| report.encode(encoding).map_err(|error| error.to_string()))?;
        let message_id = conn.message_id();
        let command = Command::NEventReportRq(NEventReportRq {
            message_id,
            affected_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.to_owned(),
            affected_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.to_owned(),
            event_type_id: report.event_type_id(),
            data_set: true,
        });
        conn.send_message(core, context_id, &command, Some(&data))
            .map_err(|error| error.to_string())?;
        self.reports
            .entry(conn.serial)
            .or_default()
            .in_flight
            .insert(message_id, report.transaction_uid.clone());
        tracing::debug!(
            serial = conn.serial,
            transaction_uid = %Escaped(&report.transaction_uid),
            event_type = report.event_type_id(),
            "N-EVENT-REPORT sent"
        );
        Ok(())
    }

    /// An N-EVENT-REPORT-RSP: the report's outcome goes to the tracker; on
    /// an association this core opened, the next report goes out.
    pub(crate) fn report_answered(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        rsp: NEventReportRsp,
    ) {
        let sent = self
            .reports
            .get_mut(&conn.serial)
            .and_then(|reports| reports.in_flight.remove(&rsp.message_id_being_responded_to));
        match sent {
            Some(transaction_uid) => {
                let outcome = if crate::commit::report_accepted(rsp.status) {
                    DeliveryOutcome::Delivered(rsp.status)
                } else {
                    DeliveryOutcome::Refused(rsp.status)
                };
                self.delivery(transaction_uid, outcome);
            }
            // A peer's mistake: nothing waits for it.
            None => tracing::warn!(
                peer = ?conn.peer,
                message_id = rsp.message_id_being_responded_to,
                "N-EVENT-REPORT-RSP to no report sent; ignored"
            ),
        }
        let answered_all = self
            .reports
            .get(&conn.serial)
            .is_none_or(|reports| reports.in_flight.is_empty());
        if conn.is_outbound() && answered_all {
            self.send_next_report(core, conn);
        }
    }

    // ----- associations this core opens -----

    /// Opens an association as requestor to deliver reports: the Storage
    /// Commitment Push Model context with SCP/SCU role selection asking
    /// for the SCP role (we send N-EVENT-REPORT).
    pub(crate) fn open_report_association(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        delivery: ReportAssociation,
        timeouts: Timeouts,
    ) {
        let proposal = AssociationProposal {
            calling_ae_title: delivery.calling_ae_title.clone(),
            called_ae_title: delivery.called_ae_title.clone(),
            presentation_contexts: vec![ProposedPresentationContext {
                abstract_syntax: uid::STORAGE_COMMITMENT_PUSH_MODEL.to_owned(),
                transfer_syntaxes: vec![
                    uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                    uid::ts::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                ],
                roles: Some((false, true)),
            }],
            pdu_length_max_receive: self.shared.store.config().network.max_pdu_length,
            implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
            implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let rq = match proposal.to_associate_rq() {
            Ok(rq) => rq,
            Err(error) => {
                self.fail_all(delivery.reports, &error.to_string());
                return;
            }
        };
        let tls = match super::tls::outbound_session(&self.shared, &delivery.called_ae_title) {
            Ok(tls) => tls,
            Err(error) => {
                self.fail_all(delivery.reports, &format!("cannot start TLS: {error}"));
                return;
            }
        };
        let serial = conns.next_serial();
        let id = match core.connect(delivery.address, tag(TagKind::Connect, serial)) {
            Ok(id) => id,
            Err(error) => {
                self.fail_all(delivery.reports, &format!("cannot connect: {error}"));
                return;
            }
        };
        // Sta1 -> Sta4: the transport is the connect above.
        let mut conn = Connection::outbound(
            id,
            serial,
            delivery.address,
            (delivery.calling_ae_title, delivery.called_ae_title),
            rq,
            (Purpose::CommitmentReports, timeouts),
        );
        conn.tls = tls;
        self.reports.insert(
            serial,
            Reports {
                queued: delivery.reports.into(),
                in_flight: HashMap::new(),
            },
        );
        conns.insert(conn);
    }

    fn fail_all(&self, reports: Vec<CommitmentResult>, reason: &str) {
        for report in reports {
            self.delivery(
                report.transaction_uid,
                DeliveryOutcome::CommunicationFailure(reason.to_owned()),
            );
        }
    }

    /// An outbound connection connected, or failed to (its id is then
    /// stale: no `ConnClosed` follows, so it leaves the table here).
    pub(crate) fn connected(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        id: ConnId,
        result: Result<(), IoError>,
    ) {
        match result {
            Ok(()) => {
                let Some(conn) = conns.get_mut(serial) else {
                    panic!("connection {serial} connected, but it is not in the table");
                };
                conn.connected(core);
            }
            Err(error) => {
                let Some(mut conn) = conns.remove(serial) else {
                    panic!("connection {serial} failed to connect, but it is not in the table");
                };
                debug_assert_eq!(conn.id, id);
                conn.outcome = Some(format!("cannot connect: {error}"));
                let reason = format!("cannot connect to {}: {error}", conn.called_ae_title);
                self.fail_reports(&mut conn, &reason);
                conn.cancel_timer(core);
            }
        }
    }

    /// The association this core opened is established: its reports go out.
    pub(crate) fn association_accepted(&mut self, core: &mut Core, conn: &mut Connection) {
        self.send_next_report(core, conn);
    }

    /// On an outbound association: sends the next queued report, or
    /// releases when none is left.
    fn send_next_report(&mut self, core: &mut Core, conn: &mut Connection) {
        // Only an association this core opened is accepted by a peer, and
        // a requester's association carries one report at a time.
        assert!(
            conn.is_outbound(),
            "reports queued on a requester's association"
        );
        while let Some(report) = self
            .reports
            .get_mut(&conn.serial)
            .and_then(|reports| reports.queued.pop_front())
        {
            match self.send_report(core, conn, &report) {
                Ok(()) => return,
                Err(reason) => {
                    self.delivery(
                        report.transaction_uid,
                        DeliveryOutcome::CommunicationFailure(reason),
                    );
                }
            }
        }
        let answered_all = self
            .reports
            .get(&conn.serial)
            .is_none_or(|reports| reports.in_flight.is_empty());
        if answered_all && conn.is_established() {
            conn.release(core);
        }
    }

    /// Every report this association still owes goes back to the tracker:
    /// on an association this core opened, as a communication failure
    /// (retried after the delay); on the requester's own association, as
    /// "not open" (the requester left before answering: a new association
    /// at once, not counted as an attempt).
    pub(crate) fn fail_reports(&mut self, conn: &mut Connection, reason: &str) {
        let Some(reports) = self.reports.get_mut(&conn.serial) else {
            // The association carried no report.
            return;
        };
        let in_flight: Vec<String> = reports.in_flight.drain().map(|(_, uid)| uid).collect();
        let queued: Vec<CommitmentResult> = reports.queued.drain(..).collect();
        for transaction_uid in in_flight {
            let outcome = if conn.is_outbound() {
                DeliveryOutcome::CommunicationFailure(reason.to_owned())
            } else {
                tracing::debug!(transaction_uid = %Escaped(&transaction_uid), reason, "requester's association ended before its report was answered");
                DeliveryOutcome::NotOpen
            };
            self.delivery(transaction_uid, outcome);
        }
        self.fail_all(queued, reason);
    }

    /// The association ended: what it owed goes back to the tracker.
    pub(crate) fn association_ended(&mut self, conn: &mut Connection, reason: &str) {
        self.fail_reports(conn, reason);
        self.reports.remove(&conn.serial);
    }
}

/// Refuses an N-ACTION: logged, and answered with the failure's status and
/// reason.
fn refuse(
    core: &mut Core,
    conn: &mut Connection,
    context_id: u8,
    message_id: u16,
    failure: Failure,
) {
    tracing::warn!(
        peer = ?conn.peer,
        calling_ae = %Escaped(&conn.calling_ae_title),
        status = %failure.status(),
        reason = %Escaped(&failure),
        "commitment request refused"
    );
    send_action_rsp(core, conn, context_id, message_id, Some(&failure));
}

/// The N-ACTION-RSP: success, or the failure's status with its reason as the
/// Error Comment.
fn send_action_rsp(
    core: &mut Core,
    conn: &mut Connection,
    context_id: u8,
    message_id: u16,
    failure: Option<&Failure>,
) {
    let status = failure.map_or(Status::SUCCESS, Failure::status);
    let error_comment = failure.map(Failure::error_comment);
    let rsp = Command::NActionRsp(NActionRsp {
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(uid::STORAGE_COMMITMENT_PUSH_MODEL.to_owned()),
        affected_sop_instance_uid: Some(uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.to_owned()),
        action_type_id: Some(ACTION_TYPE_REQUEST_STORAGE_COMMITMENT),
        status,
        data_set: false,
        detail: StatusDetail {
            error_comment,
            ..StatusDetail::default()
        },
    });
    conn.send_command(core, context_id, &rsp);
}
