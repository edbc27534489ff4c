//! The retrieval lane: one C-FIND, C-MOVE or C-GET at a time per
//! association ([`RetrieveInFlight`]), its request identifier drawn from
//! the key pool ([`crate::retrieve::RetrieveSpec::request`]), its pending
//! responses counted, its final response timed and classified. A C-GET's
//! sub-operations come back on the same association as C-STORE-RQs whose
//! data sets are drained (counted, not kept) and answered 0000; a
//! C-MOVE's go to our listener ([`super::listener`]), which attributes
//! them to the move by its Move Originator Message ID.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_io::Core;
use sluice_net::assoc::NegotiatedAssociation;
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{
    CFindRq, CFindRsp, CGetRq, CMoveRq, CMoveRsp, CStoreRq, CStoreRsp, Command, Priority, Status,
    StatusCategory, StatusDetail,
};
use sluice_net::endpoint::DataSet;
use sluice_net::query::Operation;

use super::worker::{send_refusal, Next, WorkerPhase};
use super::{LoadCore, RetrievePlan};
use crate::stats::{Measurements, RetrieveMeasurements};

/// A C-STORE sub-operation of a C-GET being received on the association.
#[derive(Debug)]
struct SubStore {
    context_id: u8,
    message_id: u16,
    sop_class_uid: String,
    sop_instance_uid: String,
    bytes: u64,
}

/// The retrieval a worker has in flight.
#[derive(Debug)]
pub(super) struct RetrieveInFlight {
    message_id: u16,
    operation: Operation,
    sent_at: Instant,
    arrival: Option<Instant>,
    /// Last byte or message heard for it (the response timeout counts from here).
    pub last_activity: Instant,
    first_response_at: Option<Instant>,
    first_sub_operation_at: Option<Instant>,
    /// Pending responses (C-FIND: matches).
    pending: u64,
    /// C-GET: instances received on the association.
    instances: u64,
    /// Matches or instances the key pool predicts.
    expected: Option<u64>,
    /// C-GET: the sub-operation being received.
    sub: Option<SubStore>,
}

impl LoadCore {
    fn retrieve_plan(&self) -> Option<&RetrievePlan> {
        self.shared.plan.retrieve.as_ref()
    }

    /// The retrieval lane's accepted Q/R context; `Err` when the target
    /// refused it.
    pub(super) fn retrieve_contexts(
        &mut self,
        w: usize,
        negotiated: &NegotiatedAssociation,
    ) -> Result<(), &'static str> {
        let Some(plan) = self.retrieve_plan() else {
            return Err("no retrieval plan");
        };
        let sop_class = plan.spec.model.sop_class(plan.spec.operation);
        let context = negotiated
            .presentation_contexts
            .iter()
            .find(|context| context.abstract_syntax == sop_class)
            .and_then(|context| {
                SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)
                    .map(|encoding| (context.id, encoding))
            });
        self.workers[w].query_context = context;
        context
            .map(|_| ())
            .ok_or("query/retrieve presentation context not accepted")
    }

    /// Worker `w`'s C-MOVE had a sub-operation reach our listener within
    /// `timeout` of `now`.
    pub(super) fn move_heard_within(&self, w: usize, now: Instant, timeout: Duration) -> bool {
        let Some(retrieve) = self.workers[w]
            .retrieve
            .as_ref()
            .filter(|retrieve| retrieve.operation == Operation::Move)
        else {
            return false;
        };
        self.shared.moves.lock().is_ok_and(|moves| {
            moves
                .get(&retrieve.message_id)
                .and_then(|track| track.last_sub_operation_at)
                .is_some_and(|at| now.saturating_duration_since(at) <= timeout)
        })
    }

    /// What was in flight on the retrieval lane is lost.
    pub(super) fn lose_retrieve(&mut self, w: usize) {
        if let Some(retrieve) = self.workers[w].retrieve.take() {
            self.stats.retrieve.counts.operations_unanswered += 1;
            self.shared.live_failures.fetch_add(1, Ordering::Relaxed);
            if retrieve.operation == Operation::Move {
                if let Ok(mut moves) = self.shared.moves.lock() {
                    moves.remove(&retrieve.message_id);
                }
            }
        }
    }

    pub(super) fn next_retrieve(&mut self, core: &mut Core, w: usize) {
        let per_association = self
            .retrieve_plan()
            .map_or(0, |plan| plan.operations_per_association);
        match self.next_for(w, per_association) {
            Next::Go(arrival) => self.start_retrieve(core, w, arrival),
            Next::Wait => self.wait_for_arrival(w),
            Next::Stop => self.release(core, w),
        }
    }

    fn start_retrieve(&mut self, core: &mut Core, w: usize, arrival: Option<Instant>) {
        let Some((context, encoding)) = self.workers[w].query_context else {
            self.abort(core, w, "no query/retrieve context");
            return;
        };
        let Some(plan) = self.shared.plan.retrieve.as_ref() else {
            self.abort(core, w, "no retrieval plan");
            return;
        };
        let Some(request) = plan.spec.request(&plan.pool, &mut self.rng) else {
            self.workers[w].fatal = true;
            self.abort(core, w, "no request could be drawn from the key pool");
            return;
        };
        let operation = plan.spec.operation;
        let sop_class = plan.spec.model.sop_class(operation).to_string();
        let move_destination = plan.spec.move_destination.clone();
        let Ok(identifier) = request.identifier.encode(encoding) else {
            self.abort(core, w, "cannot encode the request identifier");
            return;
        };
        let message_id = match operation {
            // Unique among the run's moves in flight: the SCP's
            // sub-operations name it as Move Originator Message ID.
            Operation::Move => match self.shared.register_move() {
                Some(id) => id,
                None => {
                    self.abort(core, w, "too many C-MOVEs in flight");
                    return;
                }
            },
            _ => self.workers[w].endpoint.next_message_id(),
        };
        let command = match operation {
            Operation::Find => Command::CFindRq(CFindRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: sop_class,
            }),
            Operation::Move => Command::CMoveRq(CMoveRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: sop_class,
                move_destination,
            }),
            Operation::Get => Command::CGetRq(CGetRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: sop_class,
            }),
        };
        let sent = self.workers[w]
            .endpoint
            .send_message(context, &command, Some(&identifier));
        if let Err(error) = sent {
            if operation == Operation::Move {
                if let Ok(mut moves) = self.shared.moves.lock() {
                    moves.remove(&message_id);
                }
            }
            self.abort(core, w, send_refusal(&error, "cannot encode the request"));
            return;
        }
        let now = Instant::now();
        let worker = &mut self.workers[w];
        worker.phase = WorkerPhase::Retrieving;
        worker.on_association += 1;
        worker.retrieve = Some(RetrieveInFlight {
            message_id,
            operation,
            sent_at: now,
            arrival,
            last_activity: now,
            first_response_at: None,
            first_sub_operation_at: None,
            pending: 0,
            instances: 0,
            expected: request.expected,
            sub: None,
        });
        if self.transmit(core, w).is_err() {
            self.abort(core, w, "send refused by the runtime");
        }
    }

    /// The in-flight retrieval `message_id` answers, touched; `None` (and
    /// counted) for an answer to nothing of ours.
    fn answered(&mut self, w: usize, message_id: u16) -> Option<&mut RetrieveInFlight> {
        let found = self.workers[w]
            .retrieve
            .as_ref()
            .is_some_and(|retrieve| retrieve.message_id == message_id);
        if !found {
            Measurements::bump(
                &mut self.stats.retrieve.lane.aborts,
                "response for an unknown message",
            );
            return None;
        }
        let retrieve = self.workers[w].retrieve.as_mut()?;
        let now = Instant::now();
        retrieve.last_activity = now;
        retrieve.first_response_at.get_or_insert(now);
        Some(retrieve)
    }

    pub(super) fn on_find_response(&mut self, core: &mut Core, w: usize, rsp: &CFindRsp) {
        if self.is_final(w, rsp.message_id_being_responded_to, rsp.status) {
            self.finish_retrieve(core, w, rsp.status);
        }
    }

    pub(super) fn on_retrieve_response(&mut self, core: &mut Core, w: usize, rsp: &CMoveRsp) {
        if !self.is_final(w, rsp.message_id_being_responded_to, rsp.status) {
            return;
        }
        let counts = rsp.sub_operations;
        let stats = &mut self.stats.retrieve;
        stats.counts.sub_operations_completed += u64::from(counts.completed.unwrap_or(0));
        stats.counts.sub_operations_failed += u64::from(counts.failed.unwrap_or(0));
        stats.counts.sub_operations_warning += u64::from(counts.warning.unwrap_or(0));
        self.finish_retrieve(core, w, rsp.status);
    }

    /// A response to the retrieval in flight: a pending one is counted
    /// (false), a final one is for the caller to finish (true).
    fn is_final(&mut self, w: usize, message_id: u16, status: Status) -> bool {
        let Some(retrieve) = self.answered(w, message_id) else {
            return false;
        };
        if status.category() == StatusCategory::Pending {
            retrieve.pending += 1;
            self.stats.retrieve.counts.pending_responses += 1;
            return false;
        }
        true
    }

    /// The final response: timed, classified, checked against the pool's
    /// prediction; the worker goes on.
    fn finish_retrieve(&mut self, core: &mut Core, w: usize, status: Status) {
        let Some(mut retrieve) = self.workers[w].retrieve.take() else {
            return;
        };
        let now = Instant::now();
        if retrieve.operation == Operation::Move {
            let track = self
                .shared
                .moves
                .lock()
                .ok()
                .and_then(|mut moves| moves.remove(&retrieve.message_id));
            if let Some(track) = track {
                retrieve.instances = track.instances;
                retrieve.first_sub_operation_at = track.first_sub_operation_at;
            }
        }
        let since_sent =
            |at: Instant| at.saturating_duration_since(retrieve.sent_at).as_micros() as u64;
        let stats = &mut self.stats.retrieve;
        Measurements::record(&mut stats.operation_latency_us, since_sent(now));
        if let Some(arrival) = retrieve.arrival {
            Measurements::record(
                &mut stats.arrival_latency_us,
                now.saturating_duration_since(arrival).as_micros() as u64,
            );
        }
        *stats.statuses.entry(status.0).or_insert(0) += 1;
        let answered_ok = match status.category() {
            StatusCategory::Success => {
                stats.counts.operations_ok += 1;
                true
            }
            StatusCategory::Warning => {
                stats.counts.operations_warning += 1;
                true
            }
            _ => {
                stats.counts.operations_failed += 1;
                self.shared.live_failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        let outcome = match retrieve.operation {
            Operation::Find => {
                if let Some(first) = retrieve.first_response_at {
                    Measurements::record(&mut stats.first_response_latency_us, since_sent(first));
                }
                RetrieveMeasurements::record_count(&mut stats.matches, retrieve.pending);
                if retrieve.pending == 0 && answered_ok {
                    stats.counts.empty_results += 1;
                }
                retrieve.pending
            }
            Operation::Move | Operation::Get => {
                if let Some(first) = retrieve.first_sub_operation_at {
                    Measurements::record(
                        &mut stats.first_sub_operation_latency_us,
                        since_sent(first),
                    );
                }
                retrieve.instances
            }
        };
        if let Some(expected) = retrieve.expected.filter(|_| answered_ok) {
            stats.counts.expectations_checked += 1;
            if expected != outcome {
                stats.counts.expectations_differed += 1;
            }
        }
        let second = (self.since_start_us(now) / 1_000_000) as usize;
        if let Some(slot) = self.stats.retrieve.second(second) {
            slot.operations += 1;
        }
        self.shared.live_operations.fetch_add(1, Ordering::Relaxed);
        self.workers[w].phase = WorkerPhase::Ready;
        self.next_work(core, w);
    }

    /// A C-STORE-RQ on a retrieval association: a C-GET's sub-operation.
    pub(super) fn on_sub_operation(
        &mut self,
        core: &mut Core,
        w: usize,
        context_id: u8,
        rq: CStoreRq,
        data_set: &DataSet,
    ) {
        let now = Instant::now();
        let ours = self.workers[w]
            .retrieve
            .as_ref()
            .is_some_and(|retrieve| retrieve.operation == Operation::Get && retrieve.sub.is_none());
        if !ours {
            self.abort(core, w, "C-STORE-RQ without a C-GET in flight");
            return;
        }
        let Some(retrieve) = self.workers[w].retrieve.as_mut() else {
            return;
        };
        retrieve.last_activity = now;
        retrieve.first_sub_operation_at.get_or_insert(now);
        retrieve.sub = Some(SubStore {
            context_id,
            message_id: rq.message_id,
            sop_class_uid: rq.affected_sop_class_uid,
            sop_instance_uid: rq.affected_sop_instance_uid,
            bytes: 0,
        });
        // Streamed data sets end with a `last` data range; anything else
        // (none announced) is complete now.
        if *data_set != DataSet::Streamed {
            self.on_sub_operation_data(core, w, 0, true);
        }
    }

    /// Bytes of a C-GET sub-operation's data set; `last` ends it: counted
    /// and answered 0000.
    pub(super) fn on_sub_operation_data(
        &mut self,
        core: &mut Core,
        w: usize,
        length: u64,
        last: bool,
    ) {
        let Some(retrieve) = self.workers[w].retrieve.as_mut() else {
            return;
        };
        let Some(sub) = retrieve.sub.as_mut() else {
            return;
        };
        retrieve.last_activity = Instant::now();
        sub.bytes += length;
        if !last {
            return;
        }
        let Some(sub) = retrieve.sub.take() else {
            return;
        };
        retrieve.instances += 1;
        self.count_received(sub.bytes);
        let response = Command::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: sub.message_id,
            affected_sop_class_uid: Some(sub.sop_class_uid),
            affected_sop_instance_uid: Some(sub.sop_instance_uid),
            status: Status::SUCCESS,
            detail: StatusDetail::default(),
        });
        let sent = self.workers[w]
            .endpoint
            .send_message(sub.context_id, &response, None);
        if sent.is_err() || self.transmit(core, w).is_err() {
            self.abort(core, w, "cannot answer a C-GET sub-operation");
        }
    }

    /// One instance of `bytes` received by the retrieval lane on this core.
    pub(super) fn count_received(&mut self, bytes: u64) {
        let second = (self.since_start_us(Instant::now()) / 1_000_000) as usize;
        count_received(&mut self.stats.retrieve, second, bytes);
        self.shared
            .live_bytes_received
            .fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Counts one received instance of `bytes` in `stats` at `second`.
pub(super) fn count_received(stats: &mut RetrieveMeasurements, second: usize, bytes: u64) {
    stats.counts.instances_received += 1;
    stats.counts.bytes_received += bytes;
    if let Some(slot) = stats.second(second) {
        slot.instances += 1;
        slot.bytes += bytes;
    }
}
