//! Storage Commitment reports, on either path: counted and matched with
//! their request ([`record_report`]) and answered ([`send_report_response`]),
//! whether they come on a worker's own association or on our listener
//! ([`super::listener`]).

use std::time::Instant;

use sluice_net::dimse::commitment::CommitmentResult;
use sluice_net::dimse::dataset::{DatasetLimits, SmallDatasetEncoding};
use sluice_net::dimse::{Command, NEventReportRq, NEventReportRsp, Status, StatusDetail};
use sluice_net::endpoint::Endpoint;

use super::Shared;
use crate::stats::Measurements;

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
