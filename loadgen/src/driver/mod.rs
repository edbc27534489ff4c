//! The load itself: many requestor associations per core on `sluice-io`,
//! each an explicit state machine ([`Worker`]) driven by completions, with
//! `sluice-net`'s association endpoint (decoder, PS3.8 machine, message
//! reassembly, encoding) deciding what the upper layer does.
//!
//! One [`LoadCore`] handler per core owns its share of the workers, a
//! periodic tick (ramp-up, Poisson arrivals, deadlines, timeouts), the cache
//! of framed instances and its [`Measurements`]. Cores share only atomics (the
//! instance budget, UID serials, live counters for the progress bar) and,
//! at the very end, a mutex to hand in their stats.
//!
//! Closed loop: worker `g` of `N` starts at `ramp_up * g / N`, then sends
//! instances back to back (the next C-STORE as soon as the previous answer
//! arrives), re-associating every `instances_per_association`. Open loop:
//! each core draws Poisson arrivals at `rate / cores`; an arrival goes to an
//! idle established association, else opens one (up to the limit), else
//! waits in a bounded queue. Its latency counts from the scheduled arrival,
//! so queueing is measured rather than hidden (no coordinated omission).
//!
//! Commitment reports, on a worker's association or on our own listener,
//! are counted and answered in `reports`, which also owns the listener's
//! associations.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_io::{ConnId, Core, Event, Handler, RecvBuf};
use sluice_net::assoc::{
    AbortCause, AssociationProposal, Indication, ProposedPresentationContext, Role,
};
use sluice_net::dimse::commitment::{
    CommitmentRequest, SopReference, ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{CStoreRq, Command, NActionRq, Priority, Status, StatusCategory};
use sluice_net::endpoint::{DataSet, Endpoint, EndpointConfig, Incoming, SendError, Violation};
use sluice_net::uid::{self, ts};

use crate::stats::Measurements;
use crate::uid::UidGenerator;
use crate::workload::{Framed, Prepared, UidKind};
use reports::{record_report, send_report_response, ReportListener};

/// Sends of one data set queued on a connection at once: enough to keep the
/// socket busy, few enough to bound memory per association.
const SEND_WINDOW: usize = 8;
/// Tick of the periodic timer (arrivals, ramp-up, deadlines).
const TICK: Duration = Duration::from_millis(2);
/// A worker whose association was rejected or aborted waits this long.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Open loop: arrivals waiting for an association, per core.
const ARRIVAL_QUEUE_MAX: usize = 100_000;

/// Commitment requests awaiting their report, over all cores.
const PENDING_COMMITS_MAX: usize = 1_000_000;
/// Largest response or report data set buffered (a commitment report for
/// ~100 000 instances fits).
const MESSAGE_LENGTH_MAX: usize = 16 * 1024 * 1024;

const TAG_CONTROL: u64 = 0;
const TAG_DATA: u64 = 1;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadShape {
    /// `associations` associations sending back to back.
    Closed,
    /// Poisson arrivals at this many instances per second overall.
    Open {
        /// Target rate, instances/s.
        rate_per_s: f64,
    },
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The SCP.
    pub address: SocketAddr,
    /// Called AE title.
    pub called_ae_title: String,
    /// Calling AE title.
    pub calling_ae_title: String,
    /// Closed or open loop.
    pub shape: LoadShape,
    /// Closed loop: associations; open loop: the most at once.
    pub associations: usize,
    /// Stop after this long (plus draining in-flight stores).
    pub duration: Option<Duration>,
    /// Stop after this many instances.
    pub count: Option<u64>,
    /// Spread association starts over this long.
    pub ramp_up: Duration,
    /// Re-associate after this many instances (0: never).
    pub instances_per_association: u64,
    /// Instances per study (and commitment request).
    pub study_size: u64,
    /// Series per study.
    pub series_per_study: u64,
    /// The data sets and their weights (empty weights: round robin).
    pub workload: Vec<Arc<Prepared>>,
    /// Weights parallel to `workload` (empty: round robin over it).
    pub weights: Vec<u32>,
    /// Maximum PDU length we announce.
    pub pdu_length_max_receive: u32,
    /// Storage commitment after each study, report on the same association.
    pub commitment: bool,
    /// Give up waiting for a commitment report after this long.
    pub commit_timeout: Duration,
    /// Abort an association whose answer takes longer than this.
    pub response_timeout: Duration,
    /// Receive commitment reports on a listener of our own at this address
    /// (the SCP opens a new association, SCP/SCU role selection).
    pub commit_listen: Option<SocketAddr>,
    /// Write one history line per instance (`<path>.coreN`, merged later).
    pub history: Option<std::path::PathBuf>,
    /// Random run id in UIDs.
    pub run_id: u64,
}

mod reports;

/// State shared by the cores of one run.
#[derive(Debug)]
pub struct Shared {
    /// The plan.
    pub plan: RunPlan,
    /// UID serials.
    pub uids: UidGenerator,
    /// Instances left to start when count-bounded.
    pub budget: Option<AtomicU64>,
    /// Round-robin cursor over the workload.
    pub cursor: AtomicUsize,
    /// Start of the measured run.
    pub start: Instant,
    /// Set when any core decides the run is over (count reached).
    pub stop: AtomicBool,
    /// Cores that have finished.
    pub cores_done: AtomicUsize,
    /// Core count.
    pub core_count: usize,
    /// Live counters for the progress bar.
    pub live_instances_ok: AtomicU64,
    /// Live bytes.
    pub live_bytes_ok: AtomicU64,
    /// Live failures.
    pub live_failures: AtomicU64,
    /// Live open associations.
    pub live_associations: AtomicU64,
    /// Commitment requests awaiting a report: transaction UID -> N-ACTION sent.
    pub pending_commits: Mutex<HashMap<String, Instant>>,
    /// Each core's stats, handed in at shutdown.
    pub results: Mutex<Vec<Measurements>>,
    /// When the last core finished.
    pub finished_at: Mutex<Option<Instant>>,
}

impl Shared {
    /// Shared state for a run starting now.
    pub fn new(plan: RunPlan, core_count: usize) -> Shared {
        Shared {
            uids: UidGenerator::new(plan.run_id),
            budget: plan.count.map(AtomicU64::new),
            cursor: AtomicUsize::new(0),
            start: Instant::now(),
            stop: AtomicBool::new(false),
            cores_done: AtomicUsize::new(0),
            core_count,
            live_instances_ok: AtomicU64::new(0),
            live_bytes_ok: AtomicU64::new(0),
            live_failures: AtomicU64::new(0),
            live_associations: AtomicU64::new(0),
            pending_commits: Mutex::new(HashMap::new()),
            results: Mutex::new(Vec::new()),
            finished_at: Mutex::new(None),
            plan,
        }
    }

    /// Claims one instance of the budget; false when it is spent.
    fn claim(&self) -> bool {
        match &self.budget {
            None => true,
            Some(budget) => budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok(),
        }
    }
}

/// Where a worker is in its association's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerPhase {
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
    /// A-RELEASE-RQ sent.
    Releasing,
    /// Transport being closed.
    Closing,
    /// Finished for the run.
    Done,
}

/// The C-STORE a worker has in flight: what is sent, how far, and when.
#[derive(Debug)]
struct StoreInFlight {
    framed: Rc<Framed>,
    instance_serial: u64,
    study_serial: u64,
    series_serial: u64,
    sop_instance_uid: String,
    message_id: u16,
    next_chunk: usize,
    sends_in_flight: usize,
    all_queued: bool,
    last_byte_at: Option<Instant>,
    arrival: Option<Instant>,
    started_at: Instant,
    hasher: Option<Sha256>,
}

#[derive(Debug)]
struct Commit {
    transaction_uid: String,
    sent_at: Instant,
    message_id: u16,
    rsp_received: bool,
    report_received: bool,
}

/// The settings of every association endpoint of the load generator. Its
/// own tick stands in for the ARTIM and idle timers (set-up, response and
/// commitment timeouts), so the endpoints' deadlines are never armed.
fn endpoint_config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.collect_length_max = MESSAGE_LENGTH_MAX;
    config
}

#[derive(Debug)]
struct Worker {
    phase: WorkerPhase,
    conn: Option<ConnId>,
    endpoint: Endpoint,
    connect_started: Instant,
    /// Accepted context per workload entry.
    contexts: Vec<Option<u8>>,
    commit_context: Option<u8>,
    on_association: u64,
    store: Option<StoreInFlight>,
    commit: Option<Commit>,
    study_serial: u64,
    series_serial: u64,
    in_study: u64,
    study_refs: Vec<SopReference>,
    commit_due: bool,
    /// The target refuses what this worker sends: do not re-associate.
    fatal: bool,
}

impl Worker {
    fn new(phase: WorkerPhase) -> Worker {
        Worker {
            phase,
            conn: None,
            endpoint: Endpoint::new(Role::Requestor, endpoint_config()),
            connect_started: Instant::now(),
            contexts: Vec::new(),
            commit_context: None,
            on_association: 0,
            store: None,
            commit: None,
            study_serial: 0,
            series_serial: 0,
            in_study: 0,
            study_refs: Vec::new(),
            commit_due: false,
            fatal: false,
        }
    }

    /// The peer's maximum PDU length (0 before the association is accepted).
    fn pdu_length_max_peer(&self) -> u32 {
        self.endpoint.pdu_length_max_peer().unwrap_or(0)
    }
}

/// The handler of one core.
#[derive(Debug)]
pub struct LoadCore {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    by_conn: HashMap<ConnId, usize>,
    framed: HashMap<(usize, u8, u32), Rc<Framed>>,
    stats: Measurements,
    rng: fastrand::Rng,
    /// Its own generator, so the arrival sequence of a seed does not depend
    /// on how many mix choices were drawn in between.
    arrival_rng: fastrand::Rng,
    stopping: bool,
    done: bool,
    arrivals: VecDeque<Instant>,
    next_arrival: Option<Instant>,
    rate_per_core: f64,
    idle: Vec<usize>,
    history: Option<std::io::BufWriter<std::fs::File>>,
    proposal: Option<Box<sluice_net::pdu::AssociateRq>>,
    /// Commitment reports on our own listener (`--commit-listen`).
    listener: Option<ReportListener>,
    stopped_at: Option<Instant>,
}

impl LoadCore {
    /// The handler of core `index` of `shared.core_count`.
    pub fn new(shared: Arc<Shared>, index: usize) -> LoadCore {
        let plan = &shared.plan;
        let cores = shared.core_count.max(1);
        // This core's share of the associations, and their global numbers
        // (for the ramp-up schedule).
        let share = plan.associations / cores + usize::from(index < plan.associations % cores);
        let first_global =
            index * (plan.associations / cores) + index.min(plan.associations % cores);
        let workers = (0..share)
            .map(|local| match plan.shape {
                LoadShape::Closed => {
                    let global = (first_global + local) as u32;
                    let offset = plan
                        .ramp_up
                        .mul_f64(f64::from(global) / plan.associations.max(1) as f64);
                    Worker::new(WorkerPhase::Waiting {
                        at: shared.start + offset,
                    })
                }
                LoadShape::Open { .. } => Worker::new(WorkerPhase::Dormant),
            })
            .collect();
        let rate_per_core = match plan.shape {
            // Arrivals in proportion to this core's associations, so a core
            // without any (fewer associations than cores) gets none.
            LoadShape::Open { rate_per_s } => {
                rate_per_s * share as f64 / plan.associations.max(1) as f64
            }
            LoadShape::Closed => 0.0,
        };
        let history = plan.history.as_ref().and_then(|path| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".core{index}"));
            std::fs::File::create(name)
                .ok()
                .map(|file| std::io::BufWriter::with_capacity(256 * 1024, file))
        });
        let proposal = build_proposal(plan).ok().map(Box::new);
        LoadCore {
            rng: fastrand::Rng::with_seed(plan.run_id ^ (index as u64).wrapping_mul(0x9E37_79B9)),
            arrival_rng: fastrand::Rng::with_seed(
                plan.run_id.rotate_left(17)
                    ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
            ),
            workers,
            by_conn: HashMap::new(),
            framed: HashMap::new(),
            stats: Measurements::default(),
            stopping: false,
            done: false,
            arrivals: VecDeque::new(),
            next_arrival: None,
            rate_per_core,
            idle: Vec::new(),
            history,
            proposal,
            listener: plan.commit_listen.map(|_| ReportListener::new()),
            stopped_at: None,
            shared,
        }
    }

    fn plan(&self) -> &RunPlan {
        &self.shared.plan
    }

    fn since_start_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.shared.start).as_micros() as u64
    }

    // ----- association lifecycle -----

    fn start_association(&mut self, core: &mut Core, w: usize) {
        let Some(rq) = self.proposal.clone() else {
            Measurements::bump(&mut self.stats.aborts, "cannot build A-ASSOCIATE-RQ");
            self.workers[w].phase = WorkerPhase::Done;
            return;
        };
        let address = self.plan().address;
        let worker = &mut self.workers[w];
        worker.endpoint = Endpoint::new(Role::Requestor, endpoint_config());
        worker.on_association = 0;
        worker.store = None;
        worker.commit = None;
        worker.connect_started = Instant::now();
        if worker
            .endpoint
            .request_association(rq, worker.connect_started)
            .is_err()
        {
            Measurements::bump(&mut self.stats.aborts, "cannot build A-ASSOCIATE-RQ");
            worker.phase = WorkerPhase::Done;
            return;
        }
        self.stats.associations_requested += 1;
        match core.connect(address, w as u64) {
            Ok(conn) => {
                worker.conn = Some(conn);
                worker.phase = WorkerPhase::Associating;
                self.by_conn.insert(conn, w);
                self.shared
                    .live_associations
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                Measurements::bump(
                    &mut self.stats.aborts,
                    format!("connect not submitted: {error}"),
                );
                worker.phase = WorkerPhase::Waiting {
                    at: Instant::now() + RETRY_BACKOFF,
                };
            }
        }
    }

    /// Hands the worker's endpoint's queued bytes to the runtime, in order.
    /// `Err` when the runtime refused a send (nothing more is sent).
    fn transmit(&mut self, core: &mut Core, w: usize) -> Result<(), ()> {
        let worker = &mut self.workers[w];
        while let Some(bytes) = worker.endpoint.poll_transmit() {
            if let Some(conn) = worker.conn {
                core.send(conn, bytes, TAG_CONTROL).map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// After any endpoint call: its events, its bytes, its close.
    fn drive(&mut self, core: &mut Core, w: usize) {
        while let Some(incoming) = self.workers[w].endpoint.poll_event() {
            self.on_incoming(core, w, incoming);
        }
        if self.transmit(core, w).is_err() || self.workers[w].endpoint.close_requested() {
            self.close(core, w);
        }
    }

    /// The transport is gone: the endpoint's last events (an abort
    /// indication) are handled; nothing more can be sent.
    fn transport_closed(&mut self, w: usize) {
        let endpoint = &mut self.workers[w].endpoint;
        endpoint.transport_closed(Instant::now());
        endpoint.poll_transmit();
        while let Some(incoming) = self.workers[w].endpoint.poll_event() {
            if let Incoming::Indication(Indication::Aborted(cause)) = incoming {
                self.count_abort(w, cause);
            }
        }
    }

    fn close(&mut self, core: &mut Core, w: usize) {
        let worker = &mut self.workers[w];
        if let Some(conn) = worker.conn {
            if worker.phase != WorkerPhase::Closing {
                worker.phase = WorkerPhase::Closing;
                core.close_connection(conn);
            }
        }
    }

    fn abort(&mut self, core: &mut Core, w: usize, why: &str) {
        Measurements::bump(&mut self.stats.aborts, why);
        self.lose_in_flight(w);
        self.workers[w].endpoint.abort(Instant::now());
        let _ = self.transmit(core, w);
        self.close(core, w);
    }

    fn lose_in_flight(&mut self, w: usize) {
        let worker = &mut self.workers[w];
        if let Some(store) = worker.store.take() {
            self.stats.instances_unanswered += 1;
            self.shared.live_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(history) = &mut self.history {
                let _ = writeln!(
                    history,
                    "{{\"sop_instance_uid\":\"{}\",\"outcome\":\"unanswered\"}}",
                    store.sop_instance_uid
                );
            }
        }
        if let Some(commit) = worker.commit.take() {
            // With a listener the report may still come there; otherwise
            // it is lost with the association.
            if self.shared.plan.commit_listen.is_none() {
                if let Ok(mut pending) = self.shared.pending_commits.lock() {
                    pending.remove(&commit.transaction_uid);
                }
                Measurements::bump(
                    &mut self.stats.commit_errors,
                    "association ended before the report",
                );
            }
        }
    }

    fn on_indication(&mut self, core: &mut Core, w: usize, indication: Indication) {
        match indication {
            Indication::AssociateAccepted(negotiated) => {
                let elapsed = self.workers[w].connect_started.elapsed();
                Measurements::record(&mut self.stats.setup_latency_us, elapsed.as_micros() as u64);
                self.stats.associations_established += 1;
                let contexts = self
                    .plan()
                    .workload
                    .iter()
                    .map(|prepared| {
                        negotiated
                            .presentation_contexts
                            .iter()
                            .find(|context| {
                                context.abstract_syntax == prepared.sop_class_uid
                                    && context.transfer_syntax == prepared.transfer_syntax_uid
                            })
                            .map(|context| context.id)
                    })
                    .collect();
                let commit_context = negotiated
                    .presentation_context_for(uid::STORAGE_COMMITMENT_PUSH_MODEL)
                    .map(|context| context.id);
                let worker = &mut self.workers[w];
                worker.contexts = contexts;
                worker.commit_context = commit_context;
                worker.phase = WorkerPhase::Ready;
                if worker.contexts.iter().all(Option::is_none) {
                    // Retrying cannot help: this worker is finished.
                    Measurements::bump(
                        &mut self.stats.aborts,
                        "no storage presentation context accepted",
                    );
                    worker.fatal = true;
                    self.release(core, w);
                    return;
                }
                self.next_work(core, w);
            }
            Indication::AssociateRejected(rj) => {
                let (result, source, reason) = rj.codes();
                Measurements::bump(
                    &mut self.stats.rejections,
                    format!("{result}/{source}/{reason}"),
                );
            }
            Indication::ReleaseConfirm => self.stats.associations_released += 1,
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
        Measurements::bump(&mut self.stats.aborts, kind);
        self.lose_in_flight(w);
    }

    fn release(&mut self, core: &mut Core, w: usize) {
        let worker = &mut self.workers[w];
        if worker.endpoint.may_send_pdata() {
            worker.phase = WorkerPhase::Releasing;
            self.idle.retain(|&idle| idle != w);
            if self.workers[w].endpoint.release(Instant::now()).is_err() {
                self.abort(core, w, "state machine refused an event");
                return;
            }
            self.drive(core, w);
        } else {
            self.close(core, w);
        }
    }

    fn connection_gone(&mut self, w: usize) {
        self.lose_in_flight(w);
        self.idle.retain(|&idle| idle != w);
        let stopping = self.stopping;
        let shape = self.plan().shape;
        let worker = &mut self.workers[w];
        if let Some(conn) = worker.conn.take() {
            self.by_conn.remove(&conn);
            self.shared
                .live_associations
                .fetch_sub(1, Ordering::Relaxed);
        }
        let clean = self.stats.associations_released > 0 && worker.endpoint.is_closed();
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

    fn next_work(&mut self, core: &mut Core, w: usize) {
        let per_association = self.plan().instances_per_association;
        let commitment = self.plan().commitment;
        if commitment && self.workers[w].commit_due {
            self.start_commit(core, w);
            return;
        }
        let limit_reached =
            per_association > 0 && self.workers[w].on_association >= per_association;
        let more = !limit_reached
            && match self.plan().shape {
                LoadShape::Closed => {
                    let claimed = !self.stopping && self.shared.claim();
                    if !claimed {
                        self.shared.stop.store(true, Ordering::Relaxed);
                        self.stopping = true;
                    }
                    claimed
                }
                // After the end, only arrivals already drawn are served.
                LoadShape::Open { .. } => !self.stopping || !self.arrivals.is_empty(),
            };
        if !more {
            // A study cut short by the end of the run or of the association
            // is committed before the association is released.
            if commitment && !self.workers[w].study_refs.is_empty() {
                self.start_commit(core, w);
            } else {
                self.release(core, w);
            }
            return;
        }
        match self.plan().shape {
            LoadShape::Closed => self.start_store(core, w, None),
            LoadShape::Open { .. } => {
                if let Some(arrival) = self.arrivals.pop_front() {
                    self.start_store(core, w, Some(arrival));
                } else {
                    self.workers[w].phase = WorkerPhase::Ready;
                    if !self.idle.contains(&w) {
                        self.idle.push(w);
                    }
                }
            }
        }
    }

    fn pick(&mut self) -> usize {
        let plan = &self.shared.plan;
        if plan.weights.is_empty() {
            return self.shared.cursor.fetch_add(1, Ordering::Relaxed) % plan.workload.len().max(1);
        }
        let total: u64 = plan.weights.iter().map(|&weight| u64::from(weight)).sum();
        let mut ticket = self.rng.u64(0..total.max(1));
        for (index, &weight) in plan.weights.iter().enumerate() {
            if ticket < u64::from(weight) {
                return index;
            }
            ticket -= u64::from(weight);
        }
        0
    }

    fn start_store(&mut self, core: &mut Core, w: usize, arrival: Option<Instant>) {
        let pick = self.pick();
        let Some(context) = self.workers[w].contexts.get(pick).copied().flatten() else {
            self.stats.instances_failed += 1;
            let why = format!(
                "presentation context not accepted for {}",
                self.plan().workload[pick].sop_class_uid
            );
            Measurements::bump(&mut self.stats.aborts, why);
            self.release(core, w);
            return;
        };
        let pdu_max = self.workers[w].pdu_length_max_peer();
        let key = (pick, context, pdu_max);
        let framed = match self.framed.get(&key) {
            Some(framed) => Rc::clone(framed),
            None => match Framed::new(Arc::clone(&self.plan().workload[pick]), context, pdu_max) {
                Ok(framed) => {
                    let framed = Rc::new(framed);
                    self.framed.insert(key, Rc::clone(&framed));
                    framed
                }
                Err(_) => {
                    self.abort(core, w, "peer maximum PDU length too small");
                    return;
                }
            },
        };
        let study_size = self.plan().study_size.max(1);
        let series_size = (study_size / self.plan().series_per_study.max(1)).max(1);
        let uids = &self.shared.uids;
        let worker = &mut self.workers[w];
        if worker.in_study == 0 || worker.study_serial == 0 {
            worker.study_serial = uids.next_serial();
            worker.series_serial = uids.next_serial();
        } else if worker.in_study % series_size == 0 {
            worker.series_serial = uids.next_serial();
        }
        let instance_serial = uids.next_serial();
        let prepared = &framed.prepared;
        let sop_instance_uid = match prepared
            .slots
            .iter()
            .find(|slot| slot.kind == UidKind::Instance)
        {
            Some(slot) => uids.to_string(instance_serial, slot.width),
            None => prepared.fixed_sop_instance_uid.clone(),
        };
        let message_id = worker.endpoint.next_message_id();
        let command = Command::CStoreRq(CStoreRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: prepared.sop_class_uid.clone(),
            affected_sop_instance_uid: sop_instance_uid.clone(),
            move_originator: None,
        });
        if worker.conn.is_none() {
            return;
        }
        // The data set goes out as the cached framed chunks (`pump`), so
        // the fragmenter the endpoint returns is not needed.
        let queued =
            worker
                .endpoint
                .send_command_for_data_set(context, &command, framed.dataset_length);
        if let Err(error) = queued {
            self.abort(core, w, send_refusal(&error, "cannot encode C-STORE-RQ"));
            return;
        }
        let worker = &mut self.workers[w];
        worker.phase = WorkerPhase::Storing;
        worker.on_association += 1;
        worker.in_study += 1;
        worker.store = Some(StoreInFlight {
            study_serial: worker.study_serial,
            series_serial: worker.series_serial,
            framed,
            instance_serial,
            sop_instance_uid,
            message_id,
            next_chunk: 0,
            sends_in_flight: 0,
            all_queued: false,
            last_byte_at: None,
            arrival,
            started_at: Instant::now(),
            hasher: self.history.is_some().then(Sha256::new),
        });
        if self.transmit(core, w).is_err() {
            self.abort(core, w, "send refused by the runtime");
            return;
        }
        self.pump(core, w);
    }

    /// Queues data-set sends up to the window.
    fn pump(&mut self, core: &mut Core, w: usize) {
        let uids = &self.shared.uids;
        let worker = &mut self.workers[w];
        let (Some(conn), Some(store)) = (worker.conn, worker.store.as_mut()) else {
            return;
        };
        let mut failed = false;
        while store.sends_in_flight < SEND_WINDOW && store.next_chunk < store.framed.chunks.len() {
            let Some(chunk) = store.framed.chunks.get(store.next_chunk) else {
                break;
            };
            let (study, series, instance) = (
                store.study_serial,
                store.series_serial,
                store.instance_serial,
            );
            let fill = |kind: UidKind, slot: &mut [u8]| {
                let serial = match kind {
                    UidKind::Study => study,
                    UidKind::Series => series,
                    UidKind::Instance => instance,
                };
                uids.write(serial, slot);
            };
            let buf = chunk.to_io_buf(&fill);
            if let Some(hasher) = store.hasher.as_mut() {
                hasher.update(buf.as_slice().get(chunk.value_skip..).unwrap_or_default());
            }
            if let Some(headers) = chunk.headers {
                if core.send(conn, headers.to_vec(), TAG_DATA).is_err() {
                    failed = true;
                    break;
                }
                store.sends_in_flight += 1;
            }
            if core.send(conn, buf, TAG_DATA).is_err() {
                failed = true;
                break;
            }
            store.sends_in_flight += 1;
            store.next_chunk += 1;
        }
        if store.next_chunk >= store.framed.chunks.len() {
            store.all_queued = true;
        }
        if failed {
            self.abort(core, w, "send refused by the runtime");
        }
    }

    fn on_sent(&mut self, core: &mut Core, w: usize, tag: u64) {
        if tag != TAG_DATA {
            return;
        }
        let Some(store) = self.workers[w].store.as_mut() else {
            return;
        };
        store.sends_in_flight = store.sends_in_flight.saturating_sub(1);
        if store.all_queued {
            if store.sends_in_flight == 0 && store.last_byte_at.is_none() {
                store.last_byte_at = Some(Instant::now());
            }
        } else {
            self.pump(core, w);
        }
    }

    fn on_store_response(&mut self, core: &mut Core, w: usize, message_id: u16, status: Status) {
        let Some(store) = self.workers[w]
            .store
            .take_if(|store| store.message_id == message_id)
        else {
            Measurements::bump(&mut self.stats.aborts, "C-STORE-RSP for an unknown message");
            return;
        };
        let now = Instant::now();
        let last_byte = store.last_byte_at.unwrap_or(now);
        Measurements::record(
            &mut self.stats.store_latency_us,
            now.saturating_duration_since(last_byte).as_micros() as u64,
        );
        if let Some(arrival) = store.arrival {
            Measurements::record(
                &mut self.stats.arrival_latency_us,
                now.saturating_duration_since(arrival).as_micros() as u64,
            );
        }
        let _ = store.started_at;
        *self.stats.statuses.entry(status.0).or_insert(0) += 1;
        let ok = matches!(
            status.category(),
            StatusCategory::Success | StatusCategory::Warning
        );
        if ok {
            let bytes = store.framed.dataset_length;
            self.stats.instances_ok += 1;
            self.stats.bytes_ok += bytes;
            let second = (self.since_start_us(now) / 1_000_000) as usize;
            self.stats.count_in_timeline(second, bytes);
            self.shared
                .live_instances_ok
                .fetch_add(1, Ordering::Relaxed);
            self.shared
                .live_bytes_ok
                .fetch_add(bytes, Ordering::Relaxed);
            self.workers[w].study_refs.push(SopReference {
                sop_class_uid: store.framed.prepared.sop_class_uid.clone(),
                sop_instance_uid: store.sop_instance_uid.clone(),
            });
        } else {
            self.stats.instances_failed += 1;
            self.shared.live_failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(history) = &mut self.history {
            let digest = store
                .hasher
                .map(|hasher| {
                    hasher
                        .finalize()
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect::<String>()
                })
                .unwrap_or_default();
            let prepared = &store.framed.prepared;
            let uid_of = |kind: UidKind, serial: u64| {
                prepared
                    .slots
                    .iter()
                    .find(|slot| slot.kind == kind)
                    .map(|slot| self.shared.uids.to_string(serial, slot.width))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                history,
                "{{\"sop_class_uid\":\"{}\",\"sop_instance_uid\":\"{}\",\"study_instance_uid\":\"{}\",\"series_instance_uid\":\"{}\",\"sha256\":\"{}\",\"status\":\"{:04X}\",\"outcome\":\"{}\"}}",
                prepared.sop_class_uid,
                store.sop_instance_uid,
                uid_of(UidKind::Study, store.study_serial),
                uid_of(UidKind::Series, store.series_serial),
                digest,
                status.0,
                if ok { "stored" } else { "failed" }
            );
        }
        let study_size = self.plan().study_size.max(1);
        let worker = &mut self.workers[w];
        if worker.in_study >= study_size {
            worker.in_study = 0;
            worker.study_serial = 0;
            worker.commit_due = self.shared.plan.commitment && !worker.study_refs.is_empty();
            if !worker.commit_due {
                worker.study_refs.clear();
            }
        }
        worker.phase = WorkerPhase::Ready;
        self.next_work(core, w);
    }

    // ----- storage commitment (report on the same association) -----

    fn start_commit(&mut self, core: &mut Core, w: usize) {
        let transaction_serial = self.shared.uids.next_serial();
        let transaction_uid = self.shared.uids.to_string(transaction_serial, 44);
        let worker = &mut self.workers[w];
        worker.commit_due = false;
        let references = std::mem::take(&mut worker.study_refs);
        let Some(context) = worker.commit_context else {
            Measurements::bump(
                &mut self.stats.commit_errors,
                "commitment context not accepted",
            );
            self.next_work(core, w);
            return;
        };
        let request = CommitmentRequest {
            transaction_uid,
            references,
        };
        let message_id = worker.endpoint.next_message_id();
        let command = Command::NActionRq(NActionRq {
            message_id,
            requested_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.to_string(),
            requested_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.to_string(),
            action_type_id: ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
            data_set: true,
        });
        let Ok(data_bytes) = request.encode(SmallDatasetEncoding::ImplicitVrLittleEndian) else {
            self.abort(core, w, "cannot encode N-ACTION-RQ");
            return;
        };
        if let Err(error) = worker
            .endpoint
            .send_message(context, &command, Some(&data_bytes))
        {
            self.abort(core, w, send_refusal(&error, "cannot encode N-ACTION-RQ"));
            return;
        }
        let worker = &mut self.workers[w];
        if worker.conn.is_none() {
            return;
        }
        worker.phase = WorkerPhase::Committing;
        let sent_at = Instant::now();
        if let Ok(mut pending) = self.shared.pending_commits.lock() {
            if pending.len() < PENDING_COMMITS_MAX {
                pending.insert(request.transaction_uid.clone(), sent_at);
            }
        }
        let worker = &mut self.workers[w];
        worker.commit = Some(Commit {
            transaction_uid: request.transaction_uid.clone(),
            sent_at,
            message_id,
            rsp_received: false,
            report_received: false,
        });
        self.stats.commit_requests += 1;
        if self.transmit(core, w).is_err() {
            self.abort(core, w, "send refused by the runtime");
        }
    }

    fn commit_progress(&mut self, core: &mut Core, w: usize) {
        // With a listener of our own the report may come on a new
        // association from the SCP (or still on this one): the worker goes
        // on once the N-ACTION is answered. Releasing here instead would race
        // with an SCP that is sending the report on this association.
        let listener = self.shared.plan.commit_listen.is_some();
        let worker = &mut self.workers[w];
        let finished = worker
            .commit
            .as_ref()
            .is_some_and(|commit| commit.rsp_received && (commit.report_received || listener));
        if finished && worker.phase == WorkerPhase::Committing {
            worker.commit = None;
            worker.phase = WorkerPhase::Ready;
            self.next_work(core, w);
        }
    }

    fn on_message(
        &mut self,
        core: &mut Core,
        w: usize,
        context_id: u8,
        command: Command,
        data: Option<&[u8]>,
    ) {
        match command {
            Command::CStoreRsp(rsp) => {
                self.on_store_response(core, w, rsp.message_id_being_responded_to, rsp.status)
            }
            Command::NActionRsp(rsp) => {
                let worker = &mut self.workers[w];
                let Some(commit) = worker
                    .commit
                    .as_mut()
                    .filter(|commit| commit.message_id == rsp.message_id_being_responded_to)
                else {
                    return;
                };
                commit.rsp_received = true;
                if !rsp.status.is_success() {
                    if let Ok(mut pending) = self.shared.pending_commits.lock() {
                        pending.remove(&commit.transaction_uid);
                    }
                    Measurements::bump(
                        &mut self.stats.commit_errors,
                        format!("N-ACTION-RSP status {:04X}", rsp.status.0),
                    );
                    // No report will come for a refused request.
                    commit.report_received = true;
                }
                self.commit_progress(core, w);
            }
            Command::NEventReportRq(rq) => {
                // We proposed Implicit VR Little Endian only for commitment.
                let (status, transaction_uid) = record_report(
                    &self.shared,
                    &mut self.stats,
                    &rq,
                    data,
                    SmallDatasetEncoding::ImplicitVrLittleEndian,
                    false,
                );
                let worker = &mut self.workers[w];
                if let Some(commit) = worker.commit.as_mut() {
                    if transaction_uid.as_deref() == Some(commit.transaction_uid.as_str()) {
                        commit.report_received = true;
                    }
                }
                send_report_response(&mut worker.endpoint, &rq, status, context_id);
                if self.transmit(core, w).is_err() {
                    self.close(core, w);
                }
                self.commit_progress(core, w);
            }
            _ => Measurements::bump(&mut self.stats.aborts, "unexpected DIMSE command received"),
        }
    }

    // ----- receive path -----

    fn on_received(&mut self, core: &mut Core, w: usize, data: RecvBuf) {
        let now = Instant::now();
        let mut cursor = 0;
        while self.workers[w].conn.is_some() && self.workers[w].phase != WorkerPhase::Closing {
            let Some(incoming) = self.workers[w].endpoint.receive(&data, &mut cursor, now) else {
                break;
            };
            self.on_incoming(core, w, incoming);
            self.drive(core, w);
        }
    }

    fn on_incoming(&mut self, core: &mut Core, w: usize, incoming: Incoming) {
        match incoming {
            Incoming::Indication(indication) => self.on_indication(core, w, indication),
            Incoming::Command {
                context_id,
                command,
                data_set,
            } => self.on_message(core, w, context_id, command, collected(&data_set)),
            // The endpoint answered the peer with an A-ABORT. A malformed
            // PDU's abort indication follows and is counted there.
            Incoming::Violation(Violation::Pdu(_)) => {}
            Incoming::Violation(Violation::Command(_)) => {
                Measurements::bump(&mut self.stats.aborts, "undecodable DIMSE command received");
                self.lose_in_flight(w);
            }
            Incoming::Violation(violation) => {
                Measurements::bump(&mut self.stats.aborts, violation.to_string());
                self.lose_in_flight(w);
            }
            // Data sets streamed to us (C-STORE-RQ) are not asked for: the
            // unexpected command was counted.
            _ => {}
        }
    }

    // ----- the tick -----

    fn tick(&mut self, core: &mut Core) {
        let now = Instant::now();
        if !self.stopping {
            let deadline = self
                .plan()
                .duration
                .map(|duration| self.shared.start + duration);
            if let Some(deadline) = deadline.filter(|&deadline| now >= deadline) {
                // Arrivals due before the deadline still count, however
                // late this tick came (a busy or descheduled core).
                if self.rate_per_core > 0.0 {
                    self.generate_arrivals(deadline);
                }
                self.stopping = true;
                self.shared.stop.store(true, Ordering::Relaxed);
            } else if self.shared.stop.load(Ordering::Relaxed) {
                self.stopping = true;
            }
        }
        if self.stopping {
            // Open loop: arrivals already drawn are still served; workers
            // end once the queue is empty.
            let drained = self.arrivals.is_empty();
            for w in 0..self.workers.len() {
                match self.workers[w].phase {
                    WorkerPhase::Waiting { .. } => self.workers[w].phase = WorkerPhase::Done,
                    WorkerPhase::Dormant if drained => self.workers[w].phase = WorkerPhase::Done,
                    WorkerPhase::Ready if drained => self.next_work(core, w),
                    _ => {}
                }
            }
        } else {
            if self.rate_per_core > 0.0 {
                self.generate_arrivals(now);
            }
            for w in 0..self.workers.len() {
                match self.workers[w].phase {
                    WorkerPhase::Waiting { at } if at <= now => self.start_association(core, w),
                    _ => {}
                }
            }
        }
        self.dispatch_arrivals(core);
        self.check_timeouts(core, now);
        let all_done = self
            .workers
            .iter()
            .all(|worker| worker.phase == WorkerPhase::Done);
        // Closed loop: every worker is done (budget spent, or refused);
        // open loop: only once stopping (dormant workers wait for arrivals).
        let mut finished = all_done && (self.stopping || self.rate_per_core <= 0.0);
        if finished && self.listener.is_some() {
            // Reports may still arrive on the listener (on any core).
            let stopped_at = *self.stopped_at.get_or_insert(now);
            let outstanding = self
                .shared
                .pending_commits
                .lock()
                .map_or(0, |pending| pending.len());
            finished = outstanding == 0
                || now.saturating_duration_since(stopped_at) > self.plan().commit_timeout;
        }
        if finished && !self.done {
            self.done = true;
            let previous = self.shared.cores_done.fetch_add(1, Ordering::AcqRel);
            if previous + 1 == self.shared.core_count {
                if let Ok(mut finished) = self.shared.finished_at.lock() {
                    *finished = Some(Instant::now());
                }
                core.request_runtime_shutdown();
            }
        }
        if core.timer(TICK, 0).is_err() {
            // The runtime is shutting down or out of operations; the next
            // event re-arms nothing, so ask for shutdown to avoid a hang.
            core.request_runtime_shutdown();
        }
    }

    fn generate_arrivals(&mut self, now: Instant) {
        let rate = self.rate_per_core;
        let mut next = self.next_arrival.unwrap_or(self.shared.start);
        while next <= now {
            if !self.shared.claim() {
                self.shared.stop.store(true, Ordering::Relaxed);
                break;
            }
            self.stats.arrivals += 1;
            if self.arrivals.len() < ARRIVAL_QUEUE_MAX {
                self.arrivals.push_back(next);
            } else {
                self.stats.arrivals_dropped += 1;
            }
            next += interarrival(&mut self.arrival_rng, rate);
        }
        self.next_arrival = Some(next);
    }

    fn dispatch_arrivals(&mut self, core: &mut Core) {
        while !self.arrivals.is_empty() {
            if let Some(w) = self.idle.pop() {
                if self.workers[w].phase == WorkerPhase::Ready {
                    self.next_work(core, w);
                }
                continue;
            }
            // Open another association if the queue is longer than those
            // being set up can take.
            let associating = self
                .workers
                .iter()
                .filter(|worker| worker.phase == WorkerPhase::Associating)
                .count();
            if associating >= self.arrivals.len() {
                break;
            }
            let Some(w) = self
                .workers
                .iter()
                .position(|worker| worker.phase == WorkerPhase::Dormant)
            else {
                break;
            };
            self.start_association(core, w);
        }
    }

    fn check_timeouts(&mut self, core: &mut Core, now: Instant) {
        let response_timeout = self.plan().response_timeout;
        let commit_timeout = self.plan().commit_timeout;
        for w in 0..self.workers.len() {
            let worker = &self.workers[w];
            match worker.phase {
                WorkerPhase::Associating
                    if now.saturating_duration_since(worker.connect_started) > response_timeout =>
                {
                    self.abort(core, w, "association set-up timed out");
                }
                WorkerPhase::Storing => {
                    let late = worker.store.as_ref().is_some_and(|store| {
                        now.saturating_duration_since(
                            store.last_byte_at.unwrap_or(store.started_at),
                        ) > response_timeout
                    });
                    if late {
                        self.abort(core, w, "C-STORE response timed out");
                    }
                }
                WorkerPhase::Committing => {
                    let late = worker.commit.as_ref().is_some_and(|commit| {
                        now.saturating_duration_since(commit.sent_at) > commit_timeout
                    });
                    if late {
                        Measurements::bump(
                            &mut self.stats.commit_errors,
                            "report not received in time",
                        );
                        let worker = &mut self.workers[w];
                        if let Some(commit) = worker.commit.take() {
                            if let Ok(mut pending) = self.shared.pending_commits.lock() {
                                pending.remove(&commit.transaction_uid);
                            }
                        }
                        worker.phase = WorkerPhase::Ready;
                        self.next_work(core, w);
                    }
                }
                WorkerPhase::Releasing
                    if now.saturating_duration_since(worker.connect_started)
                        > response_timeout * 1000 =>
                {
                    self.close(core, w);
                }
                _ => {}
            }
        }
    }
}

/// One exponential inter-arrival time of a Poisson process at `rate_per_s`:
/// `-ln(U) / rate` with `U` uniform in (0, 1].
fn interarrival(rng: &mut fastrand::Rng, rate_per_s: f64) -> Duration {
    let uniform = 1.0 - rng.f64();
    Duration::try_from_secs_f64(-uniform.ln() / rate_per_s).unwrap_or(Duration::MAX)
}

/// The data set of a message, when it was collected.
fn collected(data_set: &DataSet) -> Option<&[u8]> {
    match data_set {
        DataSet::Collected(bytes) => Some(bytes),
        _ => None,
    }
}

/// What to count when the endpoint refuses to queue a request: the state
/// (no P-DATA now), or `otherwise` (it cannot be encoded).
fn send_refusal(error: &SendError, otherwise: &'static str) -> &'static str {
    match error {
        SendError::NotAllowed(_) => "P-DATA not allowed in this state",
        _ => otherwise,
    }
}

/// The A-ASSOCIATE-RQ of every association of a run: one context per
/// distinct (SOP class, transfer syntax) of the workload, plus Storage
/// Commitment when asked.
pub fn build_proposal(plan: &RunPlan) -> Result<sluice_net::pdu::AssociateRq, String> {
    let mut contexts: Vec<ProposedPresentationContext> = Vec::new();
    for prepared in &plan.workload {
        let exists = contexts.iter().any(|context| {
            context.abstract_syntax == prepared.sop_class_uid
                && context.transfer_syntaxes.first() == Some(&prepared.transfer_syntax_uid)
        });
        if !exists {
            contexts.push(ProposedPresentationContext {
                abstract_syntax: prepared.sop_class_uid.clone(),
                transfer_syntaxes: vec![prepared.transfer_syntax_uid.clone()],
                roles: None,
            });
        }
    }
    if plan.commitment {
        contexts.push(ProposedPresentationContext {
            abstract_syntax: uid::STORAGE_COMMITMENT_PUSH_MODEL.to_string(),
            transfer_syntaxes: vec![ts::IMPLICIT_VR_LITTLE_ENDIAN.to_string()],
            roles: None,
        });
    }
    if contexts.len() > 128 {
        return Err(format!(
            "the workload needs {} presentation contexts; an association carries at most 128",
            contexts.len()
        ));
    }
    let proposal = AssociationProposal {
        calling_ae_title: plan.calling_ae_title.clone(),
        called_ae_title: plan.called_ae_title.clone(),
        presentation_contexts: contexts,
        pdu_length_max_receive: plan.pdu_length_max_receive,
        implementation_class_uid: "1.2.826.0.1.3680043.10.1.7".to_string(),
        implementation_version_name: Some("SLUICE_LOADGEN".to_string()),
        asynchronous_operations_window: None,
        user_identity: None,
    };
    proposal
        .to_associate_rq()
        .map_err(|error| error.to_string())
}

impl Handler for LoadCore {
    type Message = ();

    fn on_start(&mut self, core: &mut Core) {
        if self.workers.is_empty() {
            self.stopping = true;
        }
        if core.timer(TICK, 0).is_err() {
            core.request_runtime_shutdown();
        }
    }

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::TimerFired { .. } => self.tick(core),
            Event::Connected { conn, tag, result } => {
                let w = tag as usize;
                if w >= self.workers.len() {
                    return;
                }
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
                        Measurements::bump(
                            &mut self.stats.aborts,
                            format!("connect failed: {error}"),
                        );
                        self.by_conn.remove(&conn);
                        self.workers[w].conn = None;
                        self.workers[w].endpoint =
                            Endpoint::new(Role::Requestor, endpoint_config());
                        self.shared
                            .live_associations
                            .fetch_sub(1, Ordering::Relaxed);
                        self.workers[w].phase = WorkerPhase::Associating;
                        self.connection_gone(w);
                    }
                }
            }
            Event::Accepted { conn, .. } => match self.listener.as_mut() {
                Some(listener) => listener.accepted(core, conn),
                None => core.close_connection(conn),
            },
            Event::Received { conn, data } => {
                if let Some(&w) = self.by_conn.get(&conn) {
                    self.on_received(core, w, data);
                } else if let Some(listener) = self.listener.as_mut() {
                    listener.received(core, conn, &data, &self.shared, &mut self.stats);
                }
            }
            Event::Sent { conn, tag, result } => {
                let Some(&w) = self.by_conn.get(&conn) else {
                    return;
                };
                match result {
                    Ok(()) => self.on_sent(core, w, tag),
                    Err(_) => {
                        if self.workers[w].phase != WorkerPhase::Closing {
                            self.transport_closed(w);
                            self.close(core, w);
                        }
                    }
                }
            }
            Event::RecvEnded { conn, .. } => {
                let Some(&w) = self.by_conn.get(&conn) else {
                    if self
                        .listener
                        .as_ref()
                        .is_some_and(|listener| listener.owns(conn))
                    {
                        core.close_connection(conn);
                    }
                    return;
                };
                if !self.workers[w].endpoint.is_closed() {
                    self.transport_closed(w);
                }
                self.close(core, w);
            }
            Event::ConnClosed { conn } => {
                if let Some(listener) = self.listener.as_mut() {
                    listener.closed(conn);
                }
                if let Some(&w) = self.by_conn.get(&conn) {
                    if !self.workers[w].endpoint.is_closed() {
                        self.transport_closed(w);
                    }
                    self.connection_gone(w);
                }
            }
            _ => {}
        }
    }

    fn on_shutdown(&mut self, _core: &mut Core) {
        for w in 0..self.workers.len() {
            self.lose_in_flight(w);
        }
        // Arrivals never served (the run was cut off) count as dropped.
        self.stats.arrivals_dropped += self.arrivals.len() as u64;
        self.arrivals.clear();
        if let Some(history) = self.history.as_mut() {
            let _ = history.flush();
        }
        let stats = std::mem::take(&mut self.stats);
        if let Ok(mut results) = self.shared.results.lock() {
            results.push(stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_have_the_target_rate() {
        // 50/s over 2000 simulated seconds: 100 000 arrivals expected,
        // standard deviation 0.3%.
        let mut rng = fastrand::Rng::with_seed(42);
        let span = Duration::from_secs(2000);
        let mut clock = Duration::ZERO;
        let mut count = 0u64;
        while clock < span {
            clock += interarrival(&mut rng, 50.0);
            count += 1;
        }
        let ratio = count as f64 / 100_000.0;
        assert!((0.99..=1.01).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn proposal_has_one_context_per_class_and_syntax_plus_commitment() {
        let ct = Arc::new(crate::workload::synthetic("ct", ts::EXPLICIT_VR_LITTLE_ENDIAN).unwrap());
        let mr = Arc::new(crate::workload::synthetic("mr", ts::EXPLICIT_VR_LITTLE_ENDIAN).unwrap());
        let plan = RunPlan {
            address: "127.0.0.1:104".parse().unwrap(),
            called_ae_title: "SLUICE".into(),
            calling_ae_title: "LOADGEN".into(),
            shape: LoadShape::Closed,
            associations: 1,
            duration: None,
            count: Some(1),
            ramp_up: Duration::ZERO,
            instances_per_association: 0,
            study_size: 1,
            series_per_study: 1,
            workload: vec![Arc::clone(&ct), mr, ct],
            weights: vec![1, 1, 1],
            pdu_length_max_receive: 16384,
            commitment: true,
            commit_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            commit_listen: None,
            history: None,
            run_id: 1,
        };
        let rq = build_proposal(&plan).unwrap();
        let bytes = sluice_net::pdu::Pdu::AssociateRq(Box::new(rq))
            .to_bytes()
            .unwrap();
        // Three contexts: CT, MR, Storage Commitment (the duplicate CT entry shares one).
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches(uid::CT_IMAGE_STORAGE).count(), 1);
        assert_eq!(text.matches(uid::MR_IMAGE_STORAGE).count(), 1);
        assert_eq!(text.matches(uid::STORAGE_COMMITMENT_PUSH_MODEL).count(), 1);
    }
}
