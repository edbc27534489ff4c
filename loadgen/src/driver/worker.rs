//! One requestor association of either lane ([`Worker`]): its phases and
//! its life (connect, A-ASSOCIATE, the next operation, release, abort),
//! and the receive path that hands the endpoint's events to the lane's
//! own code ([`super::store`], [`super::retrieve`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_io::{ConnId, Core, RecvBuf};
use sluice_net::assoc::{AbortCause, Indication, Role};
use sluice_net::dimse::commitment::SopReference;
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::Command;
use sluice_net::endpoint::{DataSet, Endpoint, EndpointConfig, Incoming, SendError, Violation};
use sluice_net::pdu::RejectResult;
use sluice_net::uid;

use super::retrieve::RetrieveInFlight;
use super::store::{Commit, StoreInFlight};
use super::{LoadCore, LoadShape, MESSAGE_LENGTH_MAX, RETRY_BACKOFF, TAG_CONTROL};
use crate::stats::{Lane, Measurements};
use crate::study::StudyValues;

/// Where a worker is in its association's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerPhase {
    /// No connection; (re)start at this time.
    Waiting { at: Instant },
    /// Open loop: no connection until work arrives.
    Dormant,
    /// TCP connect and A-ASSOCIATE in progress.
    Associating,
    /// Established, nothing to do (open loop).
    Ready,
    /// A C-STORE in flight.
    Storing,
    /// N-ACTION sent; waiting for its response and the report.
    Committing,
    /// A C-FIND, C-MOVE or C-GET in flight.
    Retrieving,
    /// A-RELEASE-RQ sent.
    Releasing,
    /// Transport being closed.
    Closing,
    /// Finished for the run.
    Done,
}

/// The settings of every association endpoint of the load generator. Its
/// own tick stands in for the ARTIM and idle timers (set-up, response and
/// commitment timeouts), so the endpoints' deadlines are never armed.
pub(super) fn endpoint_config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.collect_length_max = MESSAGE_LENGTH_MAX;
    config
}

/// One association of a lane.
#[derive(Debug)]
pub(super) struct Worker {
    pub lane: Lane,
    pub phase: WorkerPhase,
    pub conn: Option<ConnId>,
    pub endpoint: Endpoint,
    pub connect_started: Instant,
    /// Store lane: accepted context per workload entry.
    pub contexts: Vec<Option<u8>>,
    /// Store lane: the Storage Commitment context.
    pub commit_context: Option<u8>,
    /// Retrieval lane: the Q/R context and the encoding of its identifiers.
    pub query_context: Option<(u8, SmallDatasetEncoding)>,
    /// Operations started on the current association.
    pub on_association: u64,
    pub store: Option<StoreInFlight>,
    pub commit: Option<Commit>,
    pub retrieve: Option<RetrieveInFlight>,
    pub study_serial: u64,
    pub series_serial: u64,
    pub study_values: StudyValues,
    pub in_study: u64,
    pub study_refs: Vec<SopReference>,
    pub commit_due: bool,
    /// The target refuses what this worker sends: do not re-associate.
    pub fatal: bool,
}

impl Worker {
    pub fn new(lane: Lane, phase: WorkerPhase) -> Worker {
        Worker {
            lane,
            phase,
            conn: None,
            endpoint: Endpoint::new(Role::Requestor, endpoint_config()),
            connect_started: Instant::now(),
            contexts: Vec::new(),
            commit_context: None,
            query_context: None,
            on_association: 0,
            store: None,
            commit: None,
            retrieve: None,
            study_serial: 0,
            series_serial: 0,
            study_values: StudyValues::new(0, 0, 1),
            in_study: 0,
            study_refs: Vec::new(),
            commit_due: false,
            fatal: false,
        }
    }

    /// The peer's maximum PDU length (0 before the association is accepted).
    pub fn pdu_length_max_peer(&self) -> u32 {
        self.endpoint.pdu_length_max_peer().unwrap_or(0)
    }

    /// Its C-STORE has waited for an answer longer than `timeout` since
    /// its last byte was sent.
    pub fn store_is_late(&self, now: Instant, timeout: Duration) -> bool {
        self.store.as_ref().is_some_and(|store| {
            now.saturating_duration_since(store.last_byte_at.unwrap_or(store.started_at)) > timeout
        })
    }

    /// Its retrieval has heard nothing for longer than `timeout`.
    pub fn retrieve_is_late(&self, now: Instant, timeout: Duration) -> bool {
        self.retrieve
            .as_ref()
            .is_some_and(|retrieve| now.saturating_duration_since(retrieve.last_activity) > timeout)
    }
}

/// What a worker does after an operation.
pub(super) enum Next {
    /// Start one (open loop: for this arrival).
    Go(Option<Instant>),
    /// Open loop: wait, established, for an arrival.
    Wait,
    /// Release the association.
    Stop,
}

/// The data set of a message, when it was collected.
pub(super) fn collected(data_set: &DataSet) -> Option<&[u8]> {
    match data_set {
        DataSet::Collected(bytes) => Some(bytes),
        _ => None,
    }
}

/// What to count when the endpoint refuses to queue a request: the state
/// (no P-DATA now), or `otherwise` (it cannot be encoded).
pub(super) fn send_refusal(error: &SendError, otherwise: &'static str) -> &'static str {
    match error {
        SendError::NotAllowed(_) => "P-DATA not allowed in this state",
        _ => otherwise,
    }
}

impl LoadCore {
    // ----- association lifecycle -----

    pub(super) fn start_association(&mut self, core: &mut Core, w: usize) {
        let lane = self.workers[w].lane;
        let Some(rq) = self.lane_state(lane).proposal.clone() else {
            Measurements::bump(
                &mut self.stats.lane(lane).aborts,
                "cannot build A-ASSOCIATE-RQ",
            );
            self.workers[w].phase = WorkerPhase::Done;
            return;
        };
        let address = self.plan().address;
        let worker = &mut self.workers[w];
        worker.endpoint = Endpoint::new(Role::Requestor, endpoint_config());
        worker.on_association = 0;
        worker.store = None;
        worker.commit = None;
        worker.retrieve = None;
        worker.connect_started = Instant::now();
        if worker
            .endpoint
            .request_association(rq, worker.connect_started)
            .is_err()
        {
            worker.phase = WorkerPhase::Done;
            Measurements::bump(
                &mut self.stats.lane(lane).aborts,
                "cannot build A-ASSOCIATE-RQ",
            );
            return;
        }
        self.stats.lane(lane).associations_requested += 1;
        match core.connect(address, w as u64) {
            Ok(conn) => {
                let worker = &mut self.workers[w];
                worker.conn = Some(conn);
                worker.phase = WorkerPhase::Associating;
                self.by_conn.insert(conn, w);
                self.shared
                    .live_associations
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                Measurements::bump(
                    &mut self.stats.lane(lane).aborts,
                    format!("connect not submitted: {error}"),
                );
                self.workers[w].phase = WorkerPhase::Waiting {
                    at: Instant::now() + RETRY_BACKOFF,
                };
            }
        }
    }

    /// The runtime's answer to a connect.
    pub(super) fn connected(
        &mut self,
        core: &mut Core,
        w: usize,
        conn: ConnId,
        result: Result<(), sluice_io::IoError>,
    ) {
        match result {
            Ok(()) => {
                if self.workers[w]
                    .endpoint
                    .transport_connected(Instant::now())
                    .is_err()
                {
                    self.abort(core, w, "state machine refused an event");
                    return;
                }
                self.drive(core, w);
            }
            Err(error) => {
                let lane = self.workers[w].lane;
                Measurements::bump(
                    &mut self.stats.lane(lane).aborts,
                    format!("connect failed: {error}"),
                );
                self.by_conn.remove(&conn);
                let worker = &mut self.workers[w];
                worker.conn = None;
                worker.endpoint = Endpoint::new(Role::Requestor, endpoint_config());
                worker.phase = WorkerPhase::Associating;
                self.shared
                    .live_associations
                    .fetch_sub(1, Ordering::Relaxed);
                self.connection_gone(w);
            }
        }
    }

    /// Hands the worker's endpoint's queued bytes to the runtime, in order.
    /// `Err` when the runtime refused a send (nothing more is sent).
    pub(super) fn transmit(&mut self, core: &mut Core, w: usize) -> Result<(), ()> {
        let worker = &mut self.workers[w];
        while let Some(bytes) = worker.endpoint.poll_transmit() {
            if let Some(conn) = worker.conn {
                core.send(conn, bytes, TAG_CONTROL).map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// After any endpoint call: its events, its bytes, its close.
    pub(super) fn drive(&mut self, core: &mut Core, w: usize) {
        while let Some(incoming) = self.workers[w].endpoint.poll_event() {
            self.on_incoming(core, w, incoming, &[]);
        }
        if self.transmit(core, w).is_err() || self.workers[w].endpoint.close_requested() {
            self.close(core, w);
        }
    }

    /// The transport is gone: the endpoint's last events (an abort
    /// indication) are handled; nothing more can be sent.
    pub(super) fn transport_closed(&mut self, w: usize) {
        let endpoint = &mut self.workers[w].endpoint;
        endpoint.transport_closed(Instant::now());
        endpoint.poll_transmit();
        while let Some(incoming) = self.workers[w].endpoint.poll_event() {
            if let Incoming::Indication(Indication::Aborted(cause)) = incoming {
                self.count_abort(w, cause);
            }
        }
    }

    pub(super) fn close(&mut self, core: &mut Core, w: usize) {
        let worker = &mut self.workers[w];
        if let Some(conn) = worker.conn {
            if worker.phase != WorkerPhase::Closing {
                worker.phase = WorkerPhase::Closing;
                core.close_connection(conn);
            }
        }
    }

    pub(super) fn abort(&mut self, core: &mut Core, w: usize, why: &str) {
        let lane = self.workers[w].lane;
        Measurements::bump(&mut self.stats.lane(lane).aborts, why);
        self.lose_in_flight(w);
        self.workers[w].endpoint.abort(Instant::now());
        let _ = self.transmit(core, w);
        self.close(core, w);
    }

    /// What the worker had in flight is lost (abort, closed connection,
    /// end of the run).
    pub(super) fn lose_in_flight(&mut self, w: usize) {
        self.lose_store(w);
        self.lose_retrieve(w);
    }

    fn on_indication(&mut self, core: &mut Core, w: usize, indication: Indication) {
        let lane = self.workers[w].lane;
        match indication {
            Indication::AssociateAccepted(negotiated) => {
                let elapsed = self.workers[w].connect_started.elapsed();
                let counters = self.stats.lane(lane);
                Measurements::record(&mut counters.setup_latency_us, elapsed.as_micros() as u64);
                counters.associations_established += 1;
                self.workers[w].phase = WorkerPhase::Ready;
                let usable = match lane {
                    Lane::Store => self.store_contexts(w, &negotiated),
                    Lane::Retrieve => self.retrieve_contexts(w, &negotiated),
                };
                if let Err(why) = usable {
                    // Retrying cannot help: this worker is finished.
                    Measurements::bump(&mut self.stats.lane(lane).aborts, why);
                    self.workers[w].fatal = true;
                    self.release(core, w);
                    return;
                }
                self.next_work(core, w);
            }
            Indication::AssociateRejected(rj) => {
                let (result, source, reason) = rj.codes();
                Measurements::bump(
                    &mut self.stats.lane(lane).rejections,
                    format!("{result}/{source}/{reason}"),
                );
                // A permanent rejection (an unknown AE title, no context
                // acceptable...) is the same on every retry: this worker is
                // finished, and a count-bounded run ends instead of asking
                // forever. A transient one (the target is busy) is retried
                // after the backoff.
                if rj.result == RejectResult::Permanent {
                    self.workers[w].fatal = true;
                }
            }
            Indication::ReleaseConfirm => self.stats.lane(lane).associations_released += 1,
            Indication::ReleaseRequest | Indication::ReleaseCollision => {
                self.answer_release(core, w)
            }
            Indication::Aborted(cause) => self.count_abort(w, cause),
            _ => {}
        }
    }

    /// The peer asked to release: answered at once (nothing is owed: a
    /// worker's answer arrives before it sends again).
    fn answer_release(&mut self, core: &mut Core, w: usize) {
        if self.workers[w]
            .endpoint
            .answer_release(Instant::now())
            .is_err()
        {
            self.abort(core, w, "state machine refused an event");
        }
    }

    /// Counts an abort indication by kind; what was in flight is lost.
    fn count_abort(&mut self, w: usize, cause: AbortCause) {
        let kind = match cause {
            AbortCause::PeerServiceUser { .. } => "A-ABORT from peer (service user)".to_string(),
            AbortCause::PeerServiceProvider { reason } => {
                format!("A-ABORT from peer (service provider, {reason:?})")
            }
            AbortCause::TransportClosed => "connection closed without release".to_string(),
            AbortCause::InvalidPdu(_) => "invalid PDU received".to_string(),
            AbortCause::UnexpectedPdu { pdu_type, .. } => format!("unexpected PDU {pdu_type:?}"),
            AbortCause::InvalidAssociateAc(_) => "invalid A-ASSOCIATE-AC".to_string(),
            other => format!("{other:?}"),
        };
        let lane = self.workers[w].lane;
        Measurements::bump(&mut self.stats.lane(lane).aborts, kind);
        self.lose_in_flight(w);
    }

    pub(super) fn release(&mut self, core: &mut Core, w: usize) {
        let lane = self.workers[w].lane;
        let worker = &mut self.workers[w];
        if worker.endpoint.may_send_pdata() {
            worker.phase = WorkerPhase::Releasing;
            self.lane_state(lane).idle.retain(|&idle| idle != w);
            if self.workers[w].endpoint.release(Instant::now()).is_err() {
                self.abort(core, w, "state machine refused an event");
                return;
            }
            self.drive(core, w);
        } else {
            self.close(core, w);
        }
    }

    pub(super) fn connection_gone(&mut self, w: usize) {
        self.lose_in_flight(w);
        let lane = self.workers[w].lane;
        self.lane_state(lane).idle.retain(|&idle| idle != w);
        let stopping = self.stopping;
        let shape = self.plan().lane_shape(lane);
        let released_before = self.stats.lane(lane).associations_released > 0;
        let worker = &mut self.workers[w];
        if let Some(conn) = worker.conn.take() {
            self.by_conn.remove(&conn);
            self.shared
                .live_associations
                .fetch_sub(1, Ordering::Relaxed);
        }
        let clean = released_before && worker.endpoint.is_closed();
        worker.phase = if stopping || worker.fatal {
            WorkerPhase::Done
        } else {
            match shape {
                LoadShape::Closed => WorkerPhase::Waiting {
                    at: if clean && worker.phase != WorkerPhase::Associating {
                        Instant::now()
                    } else {
                        Instant::now() + RETRY_BACKOFF
                    },
                },
                LoadShape::Open { .. } => WorkerPhase::Dormant,
            }
        };
        // A rejected or aborted association backs off before retrying.
        if worker.on_association == 0 && !stopping && !worker.fatal && shape == LoadShape::Closed {
            worker.phase = WorkerPhase::Waiting {
                at: Instant::now() + RETRY_BACKOFF,
            };
        }
    }

    // ----- work -----

    /// Whether worker `w` starts another operation, waits for an arrival
    /// or releases, given its lane's shape, the budget and its
    /// association's operation limit (`per_association`, 0: none).
    pub(super) fn next_for(&mut self, w: usize, per_association: u64) -> Next {
        let lane = self.workers[w].lane;
        if per_association > 0 && self.workers[w].on_association >= per_association {
            return Next::Stop;
        }
        match self.plan().lane_shape(lane) {
            LoadShape::Closed => {
                if self.stopping || !self.shared.claim(lane) {
                    self.shared.stop.store(true, Ordering::Relaxed);
                    self.stopping = true;
                    return Next::Stop;
                }
                Next::Go(None)
            }
            // After the end, only arrivals already drawn are served.
            LoadShape::Open { .. } => match self.lane_state(lane).arrivals.pop_front() {
                Some(arrival) => Next::Go(Some(arrival)),
                None if self.stopping => Next::Stop,
                None => Next::Wait,
            },
        }
    }

    /// Open loop: the worker waits, established, for the next arrival.
    pub(super) fn wait_for_arrival(&mut self, w: usize) {
        let lane = self.workers[w].lane;
        self.workers[w].phase = WorkerPhase::Ready;
        let idle = &mut self.lane_state(lane).idle;
        if !idle.contains(&w) {
            idle.push(w);
        }
    }

    pub(super) fn next_work(&mut self, core: &mut Core, w: usize) {
        match self.workers[w].lane {
            Lane::Store => self.next_store(core, w),
            Lane::Retrieve => self.next_retrieve(core, w),
        }
    }

    // ----- receive path -----

    pub(super) fn on_received(&mut self, core: &mut Core, w: usize, data: RecvBuf) {
        let now = Instant::now();
        let mut cursor = 0;
        while self.workers[w].conn.is_some() && self.workers[w].phase != WorkerPhase::Closing {
            let Some(incoming) = self.workers[w].endpoint.receive(&data, &mut cursor, now) else {
                break;
            };
            self.on_incoming(core, w, incoming, &data);
            self.drive(core, w);
        }
    }

    /// One endpoint event; `input` is the slice it was decoded from (the
    /// ranges of streamed data sets index it).
    fn on_incoming(&mut self, core: &mut Core, w: usize, incoming: Incoming, input: &[u8]) {
        let lane = self.workers[w].lane;
        match incoming {
            Incoming::Indication(indication) => self.on_indication(core, w, indication),
            Incoming::Command {
                context_id,
                command,
                data_set,
            } => self.on_message(core, w, context_id, command, data_set),
            Incoming::Data { range, last, .. } => {
                // Only a C-GET's sub-operations stream data sets to us.
                let length = input.get(range).map_or(0, <[u8]>::len) as u64;
                self.on_sub_operation_data(core, w, length, last);
            }
            // The endpoint answered the peer with an A-ABORT. A malformed
            // PDU's abort indication follows and is counted there.
            Incoming::Violation(Violation::Pdu(_)) => {}
            Incoming::Violation(Violation::Command(_)) => {
                Measurements::bump(
                    &mut self.stats.lane(lane).aborts,
                    "undecodable DIMSE command received",
                );
                self.lose_in_flight(w);
            }
            Incoming::Violation(violation) => {
                Measurements::bump(&mut self.stats.lane(lane).aborts, violation.to_string());
                self.lose_in_flight(w);
            }
            _ => {}
        }
    }

    fn on_message(
        &mut self,
        core: &mut Core,
        w: usize,
        context_id: u8,
        command: Command,
        data_set: DataSet,
    ) {
        match command {
            Command::CStoreRsp(rsp) => {
                self.on_store_response(core, w, rsp.message_id_being_responded_to, rsp.status)
            }
            Command::NActionRsp(rsp) => self.on_commit_response(core, w, &rsp),
            Command::NEventReportRq(rq) => {
                self.on_commit_report(core, w, context_id, &rq, collected(&data_set))
            }
            Command::CFindRsp(rsp) => self.on_find_response(core, w, &rsp),
            Command::CMoveRsp(rsp) | Command::CGetRsp(rsp) => {
                self.on_retrieve_response(core, w, &rsp)
            }
            Command::CStoreRq(rq) => self.on_sub_operation(core, w, context_id, rq, &data_set),
            _ => {
                let lane = self.workers[w].lane;
                Measurements::bump(
                    &mut self.stats.lane(lane).aborts,
                    "unexpected DIMSE command received",
                );
            }
        }
    }
}

/// The accepted context of `abstract_syntax`, if any.
pub(super) fn accepted_context(
    negotiated: &sluice_net::assoc::NegotiatedAssociation,
    abstract_syntax: &str,
) -> Option<u8> {
    negotiated
        .presentation_context_for(abstract_syntax)
        .map(|context| context.id)
}

/// The Storage Commitment Push Model context, if accepted.
pub(super) fn commitment_context(
    negotiated: &sluice_net::assoc::NegotiatedAssociation,
) -> Option<u8> {
    accepted_context(negotiated, uid::STORAGE_COMMITMENT_PUSH_MODEL)
}
