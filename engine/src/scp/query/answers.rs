//! The DIMSE answers of the Q/R service that carry no match: identifiers
//! decoded (or refused with their status), a C-FIND refused, and the
//! C-MOVE-RSP/C-GET-RSP with counts, Failed SOP Instance UID List and Error
//! Comment.

use sluice_io::Core;
use sluice_net::dimse::dataset::{SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::{
    CFindRq, CMoveRsp, Command, Status, StatusDetail, SubOperationCounts, Tag,
};
use sluice_net::endpoint::DataSet;
use sluice_net::query::{Operation as QrOperation, Query, QueryContext};

use super::super::conn::Connection;
use super::error_comment;

/// Decodes a request identifier; `Err` is the status and reason to answer.
pub(super) fn decode(
    data_set: &DataSet,
    encoding: SmallDatasetEncoding,
    context: &QueryContext,
) -> Result<Query, (Status, String)> {
    let bytes = match data_set {
        DataSet::Collected(bytes) => bytes,
        DataSet::TooLong { length } => {
            return Err((
                Status::CANNOT_UNDERSTAND,
                format!("identifier of {length} bytes is too long"),
            ))
        }
        _ => return Err((Status::CANNOT_UNDERSTAND, "no identifier".into())),
    };
    Query::decode(bytes, encoding, context).map_err(|error| (error.status(), error.to_string()))
}

/// A C-FIND refused before any match: logged, and answered with the status
/// and reason.
pub(super) fn refuse_find(
    core: &mut Core,
    conn: &mut Connection,
    context_id: u8,
    rq: &CFindRq,
    status: Status,
    reason: &str,
) {
    tracing::warn!(
        peer = ?conn.peer,
        calling_ae = %conn.calling_ae_title,
        status = %format!("{:04X}", status.0),
        reason,
        "C-FIND refused"
    );
    let rsp = Command::CFindRsp(sluice_net::dimse::CFindRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class_uid: Some(rq.affected_sop_class_uid.clone()),
        status,
        data_set: false,
        detail: StatusDetail {
            error_comment: Some(error_comment(reason)),
            ..StatusDetail::default()
        },
    });
    conn.send_command(core, context_id, &rsp);
}

/// A C-MOVE-RSP or C-GET-RSP: the status, its counts, the Failed SOP
/// Instance UID List (when not empty, encoded with `encoding`) and the
/// Error Comment. Queued; sent now when `flush`, else with the next send
/// on the association (a pending answer rides with the next C-STORE-RQ of
/// a C-GET).
pub(super) fn send_retrieve_rsp(
    core: &mut Core,
    conn: &mut Connection,
    (context_id, operation): (u8, QrOperation),
    (message_id, sop_class_uid): (u16, &str),
    (status, counts, failed, comment): (Status, SubOperationCounts, &[String], Option<&str>),
    encoding: Option<SmallDatasetEncoding>,
    flush: bool,
) {
    let identifier = encoding
        .filter(|_| !failed.is_empty())
        .and_then(|encoding| {
            let mut dataset = SmallDataset::new();
            dataset.put_str(Tag(0x0008, 0x0058), Some(Vr::UI), &failed.join("\\"));
            dataset.encode(encoding).ok()
        });
    let rsp = CMoveRsp {
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        status,
        sub_operations: counts,
        data_set: identifier.is_some(),
        detail: StatusDetail {
            error_comment: comment.map(error_comment),
            ..StatusDetail::default()
        },
    };
    let command = match operation {
        QrOperation::Get => Command::CGetRsp(rsp),
        _ => Command::CMoveRsp(rsp),
    };
    match conn.queue_message(context_id, &command, identifier.as_deref()) {
        Ok(()) => {}
        Err(error) => tracing::debug!(%error, "a retrieve response was not sent"),
    }
    if flush {
        conn.flush_sends(core);
    }
}
