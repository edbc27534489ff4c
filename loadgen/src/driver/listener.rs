//! Our own listener, one share per core: the associations an SCP opens to
//! us, each an acceptor endpoint. It takes two kinds of traffic:
//!
//! - Storage Commitment reports (`--commit-listen`; the SCP takes the SCP
//!   role through role selection), counted by [`super::reports`];
//! - a C-MOVE's sub-operations (`--move-listen`: we are the move
//!   destination), any storage SOP class in the common transfer syntaxes:
//!   each C-STORE-RQ is attributed to the C-MOVE of this run its Move
//!   Originator Message ID names ([`super::Shared::moves`]), its data set
//!   drained and counted (nothing is kept) and answered 0000.

use std::collections::HashMap;
use std::time::Instant;

use sluice_io::{ConnId, Core, RecvBuf};
use sluice_net::assoc::{
    negotiate, AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter, AssociationLoad, Indication,
    NegotiationOutcome, Role,
};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{CStoreRq, CStoreRsp, Command, Status, StatusDetail};
use sluice_net::endpoint::{DataSet, Endpoint, Incoming, Violation};
use sluice_net::uid::{self, ts};

use super::reports::{record_report, send_report_response};
use super::retrieve::count_received;
use super::worker::{collected, endpoint_config};
use super::{RunPlan, Shared, TAG_CONTROL};
use crate::stats::Measurements;

/// Inbound associations per core.
const INBOUND_MAX: u32 = 4096;

/// Transfer syntaxes a move destination accepts beside the seed's (the
/// first the SCP proposes wins): the data set is drained, never decoded.
const MORE_TRANSFER_SYNTAXES: [&str; 2] = [
    ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ts::EXPLICIT_VR_BIG_ENDIAN,
];

/// A sub-operation's C-STORE being received.
#[derive(Debug)]
struct Receiving {
    context_id: u8,
    rq: CStoreRq,
    bytes: u64,
    /// The C-MOVE of this run it is a sub-operation of.
    move_id: Option<u16>,
}

/// An association an SCP opened to us.
#[derive(Debug)]
struct Inbound {
    endpoint: Endpoint,
    /// Accepted contexts: (id, data set encoding), for commitment reports.
    encodings: Vec<(u8, SmallDatasetEncoding)>,
    receiving: Option<Receiving>,
}

/// One core's share of the listener.
#[derive(Debug)]
pub(super) struct Listener {
    policy: AcceptorPolicy,
    inbound: HashMap<ConnId, Inbound>,
}

impl Listener {
    /// The listener of `plan`: commitment reports when it listens for
    /// them, storage when it is a C-MOVE's destination.
    pub fn new(plan: &RunPlan) -> Listener {
        let mut policy =
            AcceptorPolicy::new(AeTitleFilter::Any, uid::LOADGEN_IMPLEMENTATION_CLASS_UID);
        policy.implementation_version_name =
            Some(uid::LOADGEN_IMPLEMENTATION_VERSION_NAME.to_owned());
        if plan.commit_listen.is_some() {
            policy.abstract_syntaxes.push(
                AcceptedAbstractSyntax::new(
                    uid::STORAGE_COMMITMENT_PUSH_MODEL,
                    [ts::IMPLICIT_VR_LITTLE_ENDIAN, ts::EXPLICIT_VR_LITTLE_ENDIAN],
                )
                .with_requestor_scp_role(),
            );
        }
        if plan.receives_moves() {
            policy.any_abstract_syntax_transfer_syntaxes = Some(
                uid::SEED_TRANSFER_SYNTAXES
                    .iter()
                    .chain(MORE_TRANSFER_SYNTAXES.iter())
                    .map(|syntax| syntax.to_string())
                    .collect(),
            );
        }
        Listener {
            policy,
            inbound: HashMap::new(),
        }
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
            receiving: None,
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

    /// The peer closed its side: ours is closed too.
    pub fn ended(&mut self, core: &mut Core, conn: ConnId, stats: &mut Measurements) {
        if let Some(inbound) = self.inbound.get_mut(&conn) {
            if inbound.receiving.take().is_some() {
                Measurements::bump(
                    &mut stats.retrieve.lane.aborts,
                    "move destination: connection closed during a C-STORE",
                );
            }
            core.close_connection(conn);
        }
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
            self.incoming(conn, incoming, data, now, shared, stats);
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
        input: &[u8],
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
                Measurements::bump(&mut stats.commit_errors, "listener association aborted");
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
            Incoming::Command {
                context_id,
                command: Command::CStoreRq(rq),
                data_set,
            } => {
                let mut move_id = None;
                if let Some(originator) = &rq.move_originator {
                    if let Ok(mut moves) = shared.moves.lock() {
                        if let Some(track) = moves.get_mut(&originator.message_id) {
                            track.first_sub_operation_at.get_or_insert(now);
                            track.last_sub_operation_at = Some(now);
                            track.instances += 1;
                            stats.retrieve.counts.stores_attributed += 1;
                            move_id = Some(originator.message_id);
                        }
                    }
                }
                inbound.receiving = Some(Receiving {
                    context_id,
                    rq,
                    bytes: 0,
                    move_id,
                });
                if data_set != DataSet::Streamed {
                    Self::stored(inbound, shared, stats, now);
                }
            }
            Incoming::Data { range, last, .. } => {
                let Some(receiving) = inbound.receiving.as_mut() else {
                    return;
                };
                receiving.bytes += input.get(range).map_or(0, <[u8]>::len) as u64;
                if let Some(id) = receiving.move_id {
                    if let Ok(mut moves) = shared.moves.lock() {
                        if let Some(track) = moves.get_mut(&id) {
                            track.last_sub_operation_at = Some(now);
                        }
                    }
                }
                if last {
                    Self::stored(inbound, shared, stats, now);
                }
            }
            Incoming::Command { .. } => Measurements::bump(
                &mut stats.commit_errors,
                "unexpected command on the listener",
            ),
            // The endpoint answered the peer with an A-ABORT: for a
            // malformed PDU its abort indication follows and is counted.
            Incoming::Violation(Violation::Pdu(_)) => {}
            Incoming::Violation(_) => {
                Measurements::bump(&mut stats.commit_errors, "listener association aborted");
            }
            _ => {}
        }
    }

    /// A sub-operation's data set is complete: counted and answered 0000.
    fn stored(inbound: &mut Inbound, shared: &Shared, stats: &mut Measurements, now: Instant) {
        let Some(receiving) = inbound.receiving.take() else {
            return;
        };
        let second = now.saturating_duration_since(shared.start).as_secs() as usize;
        count_received(&mut stats.retrieve, second, receiving.bytes);
        shared
            .live_bytes_received
            .fetch_add(receiving.bytes, std::sync::atomic::Ordering::Relaxed);
        let response = Command::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: receiving.rq.message_id,
            affected_sop_class_uid: Some(receiving.rq.affected_sop_class_uid),
            affected_sop_instance_uid: Some(receiving.rq.affected_sop_instance_uid),
            status: Status::SUCCESS,
            detail: StatusDetail::default(),
        });
        // A store the association can no longer answer is left unanswered.
        let _ = inbound
            .endpoint
            .send_message(receiving.context_id, &response, None);
    }
}
