//! The Storage service's DIMSE side on one core: a C-STORE-RQ becomes an
//! ingest job (or a refusal whose data set is read and dropped), the data
//! set's fragments go to it as ranges of the receive buffer, and the answers
//! the ingest service produces go back as C-STORE-RSPs, with the
//! association's counters, the refusal log line and the `Rejected` event.
//! What happens between the command and the answer is the ingest service's
//! (`super::ingest`).

use sluice_io::{Core, IoBuf};
use sluice_net::dimse::{CStoreRq, CStoreRsp, Command, Status, StatusDetail};
use sluice_net::endpoint::DataSet;
use sluice_net::scan::StoreRejection;
use sluice_net::uid;

use super::conn::{Connection, Connections, Receiving};
use super::failure::Failure;
use super::ingest::{Answered, Ingest, Refused, StoreAnswer, StoreStart};
use super::shared::ServerShared;
use crate::escape::Escaped;
use crate::store::{Counted, StoreEvent};

/// A C-STORE-RQ (the endpoint hands it out on an accepted context, between
/// data sets). With a `refusal` (the server drains: A700; the association's
/// access rule does not grant storing: 0124) it is refused once its data
/// set is read.
pub(crate) fn requested(
    core: &mut Core,
    conn: &mut Connection,
    ingest: &mut Ingest,
    context_id: u8,
    rq: CStoreRq,
    data_set: DataSet,
    refusal: Option<Failure>,
) {
    if data_set != DataSet::Streamed {
        conn.abort(core, "C-STORE-RQ without a data set");
        return;
    }
    conn.request_received();
    if let Some(ae_metrics) = &conn.ae_metrics {
        ae_metrics.instance();
    }
    if let Some(failure) = refusal {
        conn.receiving = Some(Receiving::Discard(Refused {
            context_id,
            rq,
            failure,
        }));
        return;
    }
    let Some((abstract_syntax, transfer_syntax_uid)) = conn
        .negotiated()
        .and_then(|negotiated| negotiated.presentation_context(context_id))
        .map(|context| {
            (
                context.abstract_syntax.clone(),
                context.transfer_syntax.clone(),
            )
        })
    else {
        panic!("a C-STORE on presentation context {context_id}, which was not accepted");
    };
    let started = ingest.start(
        core,
        StoreStart {
            serial: conn.serial,
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

/// A fragment of the C-STORE data set the connection is receiving:
/// `bytes`, lent as `slice()` (the same range of the receive buffer,
/// taken only if a write needs it).
pub(crate) fn fragment(
    core: &mut Core,
    conn: &mut Connection,
    ingest: &mut Ingest,
    shared: &ServerShared,
    bytes: &[u8],
    slice: impl FnOnce() -> Option<IoBuf>,
    last: bool,
) {
    if let Some(ae_metrics) = &conn.ae_metrics {
        ae_metrics.bytes(bytes.len() as u64);
    }
    match &conn.receiving {
        None => panic!("a data set after no C-STORE-RQ"),
        Some(Receiving::Discard(_)) => {
            if last {
                if let Some(Receiving::Discard(refused)) = conn.receiving.take() {
                    refuse(shared, core, conn, refused);
                }
            }
        }
        Some(Receiving::Store(key)) => {
            let key = *key;
            ingest.fragment(core, key, bytes, slice);
            if last {
                conn.receiving = None;
                ingest.complete(core, key);
            }
        }
    }
}

/// `bytes` of the C-STORE data set the connection is receiving that landed
/// straight in the instance's record buffer (`Ingest::landed` took them):
/// counted as a fragment's, and the data set completed when they end it.
pub(crate) fn landed(
    core: &mut Core,
    conn: &mut Connection,
    ingest: &mut Ingest,
    bytes: usize,
    last: bool,
) {
    if let Some(ae_metrics) = &conn.ae_metrics {
        ae_metrics.bytes(bytes as u64);
    }
    if let Some(Receiving::Store(key)) = conn.receiving {
        if last {
            conn.receiving = None;
            ingest.complete(core, key);
        } else {
            ingest.flush(core, key);
        }
    }
}

/// Sends the answers of the ingest service on their associations.
pub(crate) fn answer(
    core: &mut Core,
    conns: &mut Connections,
    shared: &ServerShared,
    answers: impl Iterator<Item = StoreAnswer>,
) {
    for answer in answers {
        let StoreAnswer {
            serial,
            context_id,
            rq,
            calling_ae_title,
            outcome,
        } = answer;
        match (outcome, conns.get_mut(serial)) {
            (
                Answered::Stored {
                    status,
                    counted,
                    quarantine_id,
                    timing,
                    warnings,
                },
                conn,
            ) => {
                timing.log(&rq.affected_sop_instance_uid, status);
                if let Some(metrics) = shared.metrics.core(core.index()) {
                    metrics.store_statuses.count(status.0);
                    timing.observe(&metrics.store_latency);
                }
                shared.store.shared.counters.count(counted);
                if let Some(quarantine_id) = quarantine_id {
                    // Answered 0000 but not where `ls` and `show` look: the
                    // operator hears of it here and in `quarantine list`.
                    tracing::warn!(
                        peer = ?conn.as_ref().and_then(|conn| conn.peer),
                        calling_ae = %Escaped(&calling_ae_title),
                        sop_instance_uid = %Escaped(&rq.affected_sop_instance_uid),
                        quarantine_id,
                        "C-STORE held in quarantine (duplicate or SOP Instance UID conflict)"
                    );
                }
                if !warnings.is_empty() {
                    log_warnings(&rq, &calling_ae_title, conn.as_deref(), &warnings);
                }
                let Some(conn) = conn else {
                    tracing::debug!(serial, "response dropped: association gone");
                    continue;
                };
                tracing::trace!(serial, status = %status, "responding");
                match counted {
                    Counted::Stored | Counted::Dropped => conn.counters.instances_stored += 1,
                    Counted::Quarantined => conn.counters.instances_quarantined += 1,
                    Counted::Rejected | Counted::Failed => conn.counters.instances_failed += 1,
                }
                conn.send_command(core, context_id, &store_rsp(&rq, status, None));
            }
            (Answered::Failed(failure), Some(conn)) => {
                let refused = Refused {
                    context_id,
                    rq,
                    failure,
                };
                refuse(shared, core, conn, refused);
            }
            (Answered::Failed(failure), None) => {
                shared.store.shared.counters.count(Counted::Failed);
                if let Some(metrics) = shared.metrics.core(core.index()) {
                    metrics.store_statuses.count(failure.status().0);
                }
                tracing::warn!(
                    sop_instance_uid = %Escaped(&rq.affected_sop_instance_uid),
                    calling_ae = %Escaped(&calling_ae_title),
                    status = %failure.status(),
                    reason = %Escaped(&failure),
                    "C-STORE failed after its association ended"
                );
            }
        }
    }
}

/// Answers a C-STORE with its failure: logged, published as a `Rejected`
/// event, counted.
fn refuse(shared: &ServerShared, core: &mut Core, conn: &mut Connection, refused: Refused) {
    conn.counters.instances_failed += 1;
    shared.store.shared.counters.count(Counted::Failed);
    let status = refused.failure.status();
    if let Some(metrics) = shared.metrics.core(core.index()) {
        metrics.store_statuses.count(status.0);
    }
    if let Failure::NotAuthorized(why) = &refused.failure {
        shared.audit.security_alert(
            crate::audit::Alert::ServiceNotGranted,
            conn.peer,
            &conn.calling_ae_title,
            &why.to_string(),
        );
    }
    tracing::warn!(
        peer = ?conn.peer,
        calling_ae = %Escaped(&conn.calling_ae_title),
        sop_instance_uid = %Escaped(&refused.rq.affected_sop_instance_uid),
        status = %status,
        reason = %Escaped(&refused.failure),
        "C-STORE refused"
    );
    shared.store.shared.events.publish(StoreEvent::Rejected {
        sop_instance_uid: refused.rq.affected_sop_instance_uid.clone(),
        calling_ae_title: conn.calling_ae_title.clone(),
        status: status.0,
        reason: refused.failure.to_string(),
    });
    let rsp = store_rsp(&refused.rq, status, Some(&refused.failure));
    conn.send_command(core, refused.context_id, &rsp);
}

/// An instance stored although lenient checks found something: one line
/// with every finding.
fn log_warnings(
    rq: &CStoreRq,
    calling_ae_title: &str,
    conn: Option<&Connection>,
    warnings: &[StoreRejection],
) {
    let findings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    tracing::warn!(
        peer = ?conn.and_then(|conn| conn.peer),
        calling_ae = %Escaped(&calling_ae_title),
        sop_instance_uid = %Escaped(&rq.affected_sop_instance_uid),
        warnings = %Escaped(&findings.join("; ")),
        "C-STORE stored with warnings (lenient validation)"
    );
}

/// The C-STORE-RSP. The command's UIDs are echoed when they can go on the
/// wire as UI values (a leading zero, even an empty component, is echoed,
/// so the sender recognises its instance); a value that cannot (over 64
/// characters, a foreign character) is left out: both are optional (U) in
/// a C-STORE-RSP (PS3.7 9.3.1.2). A failure carries its reason as the
/// Error Comment.
fn store_rsp(rq: &CStoreRq, status: Status, failure: Option<&Failure>) -> Command {
    let echo = |value: &str| {
        uid::check_uid_value(value.as_bytes())
            .is_ok()
            .then(|| value.to_owned())
    };
    Command::CStoreRsp(CStoreRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class_uid: echo(&rq.affected_sop_class_uid),
        affected_sop_instance_uid: echo(&rq.affected_sop_instance_uid),
        status,
        detail: StatusDetail {
            error_comment: failure.map(Failure::error_comment),
            ..StatusDetail::default()
        },
    })
}
