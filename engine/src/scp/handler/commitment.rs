//! The Storage Commitment side of a core's association handler: N-ACTION
//! requests collected, decoded and handed to the tracker
//! (`crate::commit`), N-ACTION-RSP and N-EVENT-REPORT sent, and the
//! outbound associations a core opens to deliver reports (requestor state
//! machine, SCP/SCU role selection, several reports per association). The
//! tracker makes every decision; this is only the DIMSE and association
//! plumbing, split out of `handler.rs` so the C-STORE path reads on its own.

use super::*;

impl CoreHandler {
    pub(super) fn action_requested(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        rq: NActionRq,
    ) {
        if conn.receiving.is_some() {
            self.abort(
                core,
                serial,
                conn,
                "N-ACTION-RQ before the previous data set ended",
            );
            return;
        }
        let abstract_syntax = conn
            .association
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
            .map(|context| context.abstract_syntax.clone());
        let refusal = if abstract_syntax.as_deref() != Some(uid::STORAGE_COMMITMENT_PUSH_MODEL)
            || rq.requested_sop_class_uid != uid::STORAGE_COMMITMENT_PUSH_MODEL
        {
            Some((
                Status::SOP_CLASS_NOT_SUPPORTED,
                format!("N-ACTION for {} is not served", rq.requested_sop_class_uid),
            ))
        } else if rq.requested_sop_instance_uid != uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE {
            Some((
                Status::NO_SUCH_OBJECT_INSTANCE,
                format!("no SOP instance {}", rq.requested_sop_instance_uid),
            ))
        } else if rq.action_type_id != ACTION_TYPE_REQUEST_STORAGE_COMMITMENT {
            Some((
                Status::NO_SUCH_ACTION,
                format!("no action type {}", rq.action_type_id),
            ))
        } else if !rq.data_set {
            Some((
                Status::MISSING_ATTRIBUTE,
                "N-ACTION-RQ without action information".into(),
            ))
        } else {
            None
        };
        if rq.data_set {
            conn.receiving = Some(Receiving::Action {
                context_id,
                rq,
                bytes: Vec::new(),
                refusal,
            });
        } else if let Some((status, reason)) = refusal {
            self.action_refused(core, serial, conn, context_id, &rq, status, reason);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn action_refused(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        rq: &NActionRq,
        status: Status,
        reason: String,
    ) {
        tracing::warn!(
            peer = ?conn.peer,
            calling_ae = %conn.calling_ae_title,
            status = %format!("{:04X}", status.0),
            reason = %reason,
            "commitment request refused"
        );
        self.answer_action(
            core,
            serial,
            conn,
            context_id,
            rq.message_id,
            status,
            Some(reason),
        );
    }

    pub(super) fn action_fragment(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        bytes: &[u8],
        message_complete: bool,
    ) {
        let Some(Receiving::Action {
            context_id: action_context_id,
            bytes: collected,
            refusal,
            ..
        }) = &mut conn.receiving
        else {
            return;
        };
        if *action_context_id != context_id {
            self.abort(
                core,
                serial,
                conn,
                "data set on another presentation context than its command",
            );
            return;
        }
        if refusal.is_none() {
            if collected.len() + bytes.len() > DatasetLimits::default().length_max {
                *refusal = Some((
                    Status::RESOURCE_LIMITATION,
                    "action information too long".into(),
                ));
                *collected = Vec::new();
            } else {
                collected.extend_from_slice(bytes);
            }
        }
        if message_complete {
            if let Some(Receiving::Action {
                context_id,
                rq,
                bytes,
                refusal,
            }) = conn.receiving.take()
            {
                self.action_complete(core, serial, conn, context_id, rq, &bytes, refusal);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn action_complete(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        rq: NActionRq,
        bytes: &[u8],
        refusal: Option<(Status, String)>,
    ) {
        if let Some((status, reason)) = refusal {
            self.action_refused(core, serial, conn, context_id, &rq, status, reason);
            return;
        }
        let encoding = conn
            .association
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
            .and_then(|context| {
                SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)
            });
        let Some(encoding) = encoding else {
            self.action_refused(
                core,
                serial,
                conn,
                context_id,
                &rq,
                Status::PROCESSING_FAILURE,
                "action information in a transfer syntax that cannot be decoded".into(),
            );
            return;
        };
        let request = match CommitmentRequest::decode(bytes, encoding, DatasetLimits::default()) {
            Ok(request) => request,
            Err(error) => {
                let status = crate::commit::status_of_commitment_error(&error);
                self.action_refused(
                    core,
                    serial,
                    conn,
                    context_id,
                    &rq,
                    status,
                    error.to_string(),
                );
                return;
            }
        };
        let request = Request {
            core: self.core_index,
            serial,
            context_id,
            message_id: rq.message_id,
            requester_ae_title: conn.calling_ae_title.clone(),
            request,
        };
        if self.shared.tracker.request(request).is_err() {
            self.action_refused(
                core,
                serial,
                conn,
                context_id,
                &rq,
                Status::RESOURCE_LIMITATION,
                "the commitment tracker is busy".into(),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_action(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        context_id: u8,
        message_id: u16,
        status: Status,
        comment: Option<String>,
    ) {
        let error_comment = comment
            .filter(|_| status != Status::SUCCESS)
            .map(|mut text| {
                // Error Comment is LO: at most 64 characters.
                if let Some((end, _)) = text.char_indices().nth(64) {
                    text.truncate(end);
                }
                text
            });
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
        self.send_command(core, serial, conn, context_id, &rsp);
    }

    /// Sends one N-EVENT-REPORT-RQ (command, then event information) on
    /// the association's commitment context. `Err` with a reason when it
    /// cannot be sent there.
    pub(super) fn send_report(
        &mut self,
        core: &mut Core,
        serial: u64,
        conn: &mut Conn,
        report: &CommitmentResult,
    ) -> Result<(), String> {
        if !conn.association.may_send_pdata() || conn.closing || conn.close_when_sent {
            return Err("association not open".into());
        }
        let Some((context_id, transfer_syntax, pdu_length_max_peer)) =
            conn.association.negotiated().and_then(|negotiated| {
                negotiated
                    .presentation_context_for(uid::STORAGE_COMMITMENT_PUSH_MODEL)
                    .map(|context| {
                        (
                            context.id,
                            context.transfer_syntax.clone(),
                            negotiated.pdu_length_max_peer,
                        )
                    })
            })
        else {
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
        let command_bytes = command.encode().map_err(|error| error.to_string())?;
        let mut out = Vec::new();
        encode_message(
            context_id,
            true,
            &command_bytes,
            pdu_length_max_peer,
            &mut out,
        )
        .and_then(|()| encode_message(context_id, false, &data, pdu_length_max_peer, &mut out))
        .map_err(|error| error.to_string())?;
        let actions = conn
            .association
            .handle(Input::PDataRequest)
            .map_err(|error| error.to_string())?;
        self.perform(core, serial, conn, actions);
        self.send(core, serial, conn, out);
        conn.reports_in_flight
            .insert(message_id, report.transaction_uid.clone());
        tracing::debug!(
            serial,
            transaction_uid = %report.transaction_uid,
            event_type = report.event_type_id(),
            "N-EVENT-REPORT sent"
        );
        Ok(())
    }

    /// The tracker asks for a report on the requester's association.
    pub(super) fn deliver_on_open_association(
        &mut self,
        core: &mut Core,
        serial: u64,
        report: CommitmentResult,
    ) {
        let transaction_uid = report.transaction_uid.clone();
        let Some(mut conn) = self.conns.remove(&serial) else {
            self.shared
                .tracker
                .delivery(transaction_uid, DeliveryOutcome::NotOpen);
            return;
        };
        if let Err(reason) = self.send_report(core, serial, &mut conn, &report) {
            tracing::debug!(serial, transaction_uid = %transaction_uid, reason = %reason, "report not sent on the requester's association");
            self.shared
                .tracker
                .delivery(transaction_uid, DeliveryOutcome::NotOpen);
        }
        self.conns.insert(serial, conn);
    }

    /// Opens an association as requestor to deliver reports: the Storage
    /// Commitment Push Model context with SCP/SCU role selection asking
    /// for the SCP role (we send N-EVENT-REPORT).
    pub(super) fn open_report_association(&mut self, core: &mut Core, delivery: ReportAssociation) {
        let fail_all = |this: &Self, reports: Vec<CommitmentResult>, reason: String| {
            for report in reports {
                this.shared.tracker.delivery(
                    report.transaction_uid,
                    DeliveryOutcome::CommunicationFailure(reason.clone()),
                );
            }
        };
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
            pdu_length_max_receive: self.config().network.max_pdu_length,
            implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
            implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let rq = match proposal.to_associate_rq() {
            Ok(rq) => rq,
            Err(error) => {
                fail_all(self, delivery.reports, error.to_string());
                return;
            }
        };
        self.next_serial += 1;
        let serial = self.next_serial;
        let id = match core.connect(delivery.address, TAG_CONNECT | serial) {
            Ok(id) => id,
            Err(error) => {
                fail_all(self, delivery.reports, format!("cannot connect: {error}"));
                return;
            }
        };
        let mut conn = Conn::new(id, Some(delivery.address), Role::Requestor, 0);
        conn.outbound = true;
        conn.calling_ae_title = delivery.calling_ae_title;
        conn.called_ae_title = delivery.called_ae_title;
        conn.reports_queued = delivery.reports.into();
        self.serial_of.insert(id, serial);
        // Sta1 -> Sta4: the ConnectTransport action is the connect above.
        self.input(
            core,
            serial,
            &mut conn,
            Input::AssociateRequest(Box::new(rq)),
        );
        self.conns.insert(serial, conn);
    }

    pub(super) fn connected(
        &mut self,
        core: &mut Core,
        id: ConnId,
        tag: u64,
        result: Result<(), sluice_io::IoError>,
    ) {
        let serial = tag & !TAG_KIND_MASK;
        let Some(mut conn) = self.conns.remove(&serial) else {
            return;
        };
        match result {
            Ok(()) => {
                self.input(core, serial, &mut conn, Input::TransportConnectConfirm);
                self.conns.insert(serial, conn);
            }
            Err(error) => {
                // The id is stale: no ConnClosed follows.
                self.serial_of.remove(&id);
                conn.outcome = Some(format!("cannot connect: {error}"));
                let reason = format!("cannot connect to {}: {error}", conn.called_ae_title);
                self.fail_reports(&mut conn, &reason);
                if let Some(timer) = conn.timer_armed.take() {
                    core.cancel_timer(timer);
                }
            }
        }
    }

    /// On an outbound association: sends the next queued report, or
    /// releases when none is left.
    pub(super) fn send_next_report(&mut self, core: &mut Core, serial: u64, conn: &mut Conn) {
        if !conn.outbound {
            return;
        }
        while let Some(report) = conn.reports_queued.pop_front() {
            match self.send_report(core, serial, conn, &report) {
                Ok(()) => return,
                Err(reason) => {
                    self.shared.tracker.delivery(
                        report.transaction_uid,
                        DeliveryOutcome::CommunicationFailure(reason),
                    );
                }
            }
        }
        if conn.reports_in_flight.is_empty() && conn.association.may_send_pdata() {
            self.input(core, serial, conn, Input::ReleaseRequest);
        }
    }

    /// Every report this association still owes goes back to the tracker:
    /// on an association we opened, as a communication failure (retried
    /// after the delay); on the requester's own association, as "not open"
    /// (the requester left before answering: a new association at once,
    /// not counted as an attempt).
    pub(super) fn fail_reports(&self, conn: &mut Conn, reason: &str) {
        for (_, transaction_uid) in conn.reports_in_flight.drain() {
            let outcome = if conn.outbound {
                DeliveryOutcome::CommunicationFailure(reason.to_owned())
            } else {
                tracing::debug!(transaction_uid = %transaction_uid, reason, "requester's association ended before its report was answered");
                DeliveryOutcome::NotOpen
            };
            self.shared.tracker.delivery(transaction_uid, outcome);
        }
        for report in conn.reports_queued.drain(..) {
            self.shared.tracker.delivery(
                report.transaction_uid,
                DeliveryOutcome::CommunicationFailure(reason.to_owned()),
            );
        }
    }
}
