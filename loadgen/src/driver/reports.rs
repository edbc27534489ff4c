//! Storage Commitment reports, on either path: counted and matched with
//! their request ([`record_report`]) and answered ([`send_report_response`]),
//! whether they come on a worker's own association or on our listener,
//! whose associations (the SCP opens them, with the SCP role for itself
//! through role selection) this module owns as [`ReportListener`].

use std::collections::HashMap;
use std::time::Instant;

use sluice_io::{ConnId, Core, RecvBuf};
use sluice_net::assoc::{
    negotiate, AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter, AssociationLoad, Indication,
    NegotiationOutcome, Role,
};
use sluice_net::dimse::commitment::CommitmentResult;
use sluice_net::dimse::dataset::{DatasetLimits, SmallDatasetEncoding};
use sluice_net::dimse::{Command, NEventReportRq, NEventReportRsp, Status, StatusDetail};
use sluice_net::endpoint::{Endpoint, Incoming, Violation};
use sluice_net::uid::{self, ts};

use super::{collected, endpoint_config, Shared, TAG_CONTROL};
use crate::stats::Measurements;

/// Inbound associations (commitment reports) per core.
const INBOUND_MAX: u32 = 4096;

/// Counts a commitment report (on either path) and matches it with its
/// request; returns the status to answer and the transaction UID.
pub(super) fn record_report(
    shared: &Shared,
    stats: &mut Measurements,
    rq: &NEventReportRq,
    data: Option<&[u8]>,
    encoding: SmallDatasetEncoding,
    on_listener: bool,
) -> (Status, Option<String>) {
    let now = Instant::now();
    let result = data.map(|bytes| {
        CommitmentResult::decode(bytes, encoding, DatasetLimits::default(), rq.event_type_id)
    });
    let Some(Ok(result)) = result else {
        Measurements::bump(&mut stats.commit_errors, "unreadable N-EVENT-REPORT");
        return (Status::PROCESSING_FAILURE, None);
    };
    let sent_at = shared
        .pending_commits
        .lock()
        .ok()
        .and_then(|mut pending| pending.remove(&result.transaction_uid));
    let Some(sent_at) = sent_at else {
        Measurements::bump(
            &mut stats.commit_errors,
            "report for an unknown transaction",
        );
        return (Status::SUCCESS, Some(result.transaction_uid));
    };
    Measurements::record(
        &mut stats.commit_latency_us,
        now.saturating_duration_since(sent_at).as_micros() as u64,
    );
    stats.commit_instances_ok += result.committed.len() as u64;
    stats.commit_instances_failed += result.failed.len() as u64;
    if on_listener {
        stats.commit_reports_on_listener += 1;
    } else {
        stats.commit_reports_on_association += 1;
    }
    (Status::SUCCESS, Some(result.transaction_uid))
}

/// Queues the answer to an N-EVENT-REPORT-RQ on `endpoint` (the caller sends it).
pub(super) fn send_report_response(
    endpoint: &mut Endpoint,
    rq: &NEventReportRq,
    status: Status,
    context_id: u8,
) {
    let response = Command::NEventReportRsp(NEventReportRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class_uid: Some(rq.affected_sop_class_uid.clone()),
        affected_sop_instance_uid: Some(rq.affected_sop_instance_uid.clone()),
        event_type_id: Some(rq.event_type_id),
        status,
        data_set: false,
        detail: StatusDetail::default(),
    });
    // A report the association can no longer answer is left unanswered.
    let _ = endpoint.send_message(context_id, &response, None);
}

/// An association the SCP opened to deliver commitment reports.
#[derive(Debug)]
struct Inbound {
    endpoint: Endpoint,
    /// Accepted contexts: (id, data set encoding).
    encodings: Vec<(u8, SmallDatasetEncoding)>,
}

/// One core's share of the report listener: the associations an SCP opened
/// to it (at most [`INBOUND_MAX`]), each an acceptor endpoint.
#[derive(Debug)]
pub(super) struct ReportListener {
    policy: AcceptorPolicy,
    inbound: HashMap<ConnId, Inbound>,
}

impl ReportListener {
    pub fn new() -> ReportListener {
        ReportListener {
            policy: listener_policy(),
            inbound: HashMap::new(),
        }
    }

    /// True when `conn` is one of the listener's associations.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.inbound.contains_key(&conn)
    }

    /// The listener accepted a connection.
    pub fn accepted(&mut self, core: &mut Core, conn: ConnId) {
        if self.inbound.len() >= INBOUND_MAX as usize {
            core.close_connection(conn);
            return;
        }
        let mut inbound = Inbound {
            endpoint: Endpoint::new(Role::Acceptor, endpoint_config()),
            encodings: Vec::new(),
        };
        if inbound
            .endpoint
            .transport_connected(Instant::now())
            .is_err()
        {
            core.close_connection(conn);
            return;
        }
        self.inbound.insert(conn, inbound);
        self.drive(core, conn);
    }

    /// The connection is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.inbound.remove(&conn);
    }

    pub fn received(
        &mut self,
        core: &mut Core,
        conn: ConnId,
        data: &RecvBuf,
        shared: &Shared,
        stats: &mut Measurements,
    ) {
        let now = Instant::now();
        let mut cursor = 0;
        loop {
            let Some(inbound) = self.inbound.get_mut(&conn) else {
                return;
            };
            let Some(incoming) = inbound.endpoint.receive(data, &mut cursor, now) else {
                break;
            };
            self.incoming(conn, incoming, now, shared, stats);
            self.drive(core, conn);
        }
        self.drive(core, conn);
    }

    /// Sends what an inbound endpoint queued; closes it when it asks.
    fn drive(&mut self, core: &mut Core, conn: ConnId) {
        let Some(inbound) = self.inbound.get_mut(&conn) else {
            return;
        };
        while let Some(bytes) = inbound.endpoint.poll_transmit() {
            if core.send(conn, bytes, TAG_CONTROL).is_err() {
                core.close_connection(conn);
                return;
            }
        }
        if inbound.endpoint.close_requested() {
            core.close_connection(conn);
        }
    }

    fn incoming(
        &mut self,
        conn: ConnId,
        incoming: Incoming,
        now: Instant,
        shared: &Shared,
        stats: &mut Measurements,
    ) {
        let current = self.inbound.len() as u32;
        let Some(inbound) = self.inbound.get_mut(&conn) else {
            return;
        };
        match incoming {
            Incoming::Indication(Indication::AssociateRequest(rq)) => {
                let load = AssociationLoad {
                    current,
                    limit: INBOUND_MAX,
                };
                let outcome = negotiate(&self.policy, &rq, load);
                if let NegotiationOutcome::Accept { negotiated, .. } = &outcome {
                    inbound.encodings = negotiated
                        .presentation_contexts
                        .iter()
                        .filter_map(|context| {
                            SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)
                                .map(|encoding| (context.id, encoding))
                        })
                        .collect();
                }
                if inbound
                    .endpoint
                    .answer_association(outcome.into(), now)
                    .is_err()
                {
                    inbound.endpoint.abort(now);
                }
            }
            Incoming::Indication(Indication::ReleaseRequest | Indication::ReleaseCollision) => {
                let answered = inbound.endpoint.answer_release(now);
                if answered.is_err() {
                    inbound.endpoint.abort(now);
                }
            }
            Incoming::Indication(Indication::Aborted(_)) => {
                Measurements::bump(&mut stats.commit_errors, "report association aborted");
            }
            Incoming::Command {
                context_id,
                command: Command::NEventReportRq(rq),
                data_set,
            } => {
                let encoding = inbound
                    .encodings
                    .iter()
                    .find(|(id, _)| *id == context_id)
                    .map_or(
                        SmallDatasetEncoding::ImplicitVrLittleEndian,
                        |(_, encoding)| *encoding,
                    );
                let (status, _) =
                    record_report(shared, stats, &rq, collected(&data_set), encoding, true);
                send_report_response(&mut inbound.endpoint, &rq, status, context_id);
            }
            Incoming::Command { .. } => Measurements::bump(
                &mut stats.commit_errors,
                "unexpected command on the report listener",
            ),
            // The endpoint answered the peer with an A-ABORT: for a
            // malformed PDU its abort indication follows and is counted.
            Incoming::Violation(Violation::Pdu(_)) => {}
            Incoming::Violation(_) => {
                Measurements::bump(&mut stats.commit_errors, "report association aborted");
            }
            _ => {}
        }
    }
}

/// What our listener accepts: Storage Commitment, with the SCP role for the
/// requestor (the SCP sending us its report), any called AE title.
fn listener_policy() -> AcceptorPolicy {
    let mut policy = AcceptorPolicy::new(AeTitleFilter::Any, "1.2.826.0.1.3680043.10.1.7");
    policy.abstract_syntaxes.push(
        AcceptedAbstractSyntax::new(
            uid::STORAGE_COMMITMENT_PUSH_MODEL,
            [ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_LITTLE_ENDIAN],
        )
        .with_requestor_scp_role(),
    );
    policy
}
