//! The load itself: many requestor associations per core on `sluice-io`,
//! each an explicit state machine ([`worker`]) driven by completions, with
//! `sluice-net`'s association endpoint (decoder, PS3.8 machine, message
//! reassembly, encoding) deciding what the upper layer does.
//!
//! A run has up to two lanes ([`Lane`]), each with its own associations
//! and load shape: the store lane sends C-STOREs (and commitment requests,
//! [`store`]), the retrieval lane C-FINDs, C-MOVEs or C-GETs
//! ([`retrieve`]). One [`LoadCore`] handler per core owns its share of both
//! lanes' workers, a periodic tick (ramp-up, Poisson arrivals per lane,
//! deadlines, timeouts), the cache of framed instances, its listener
//! ([`listener`]: commitment reports and C-MOVE sub-operations) and its
//! [`Measurements`]. Cores share only atomics (the budget, UID serials,
//! live counters), two tables behind mutexes (commitment requests awaiting
//! their report, C-MOVEs awaiting their sub-operations) and, at the very
//! end, a mutex to hand in their stats.
//!
//! Closed loop: worker `g` of a lane's `N` starts at `ramp_up * g / N`,
//! then runs operations back to back (the next as soon as the previous
//! answer arrives), re-associating every `instances_per_association`
//! (store) or `operations_per_association` (retrieval). Open loop: each
//! core draws Poisson arrivals per lane at its share of the lane's rate;
//! an arrival goes to an idle established association of the lane, else
//! opens one (up to the limit), else waits in a bounded queue. Its latency
//! counts from the scheduled arrival, so queueing is measured rather than
//! hidden (no coordinated omission).

mod listener;
mod proposal;
mod reports;
mod retrieve;
mod store;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_io::{Core, Event, Handler};

use crate::keys::KeyPool;
use crate::retrieve::RetrieveSpec;
use crate::stats::{Lane, Measurements};
use crate::uid::UidGenerator;
use crate::workload::{Framed, Prepared};
use listener::Listener;
pub use proposal::build_proposal;
use worker::{Worker, WorkerPhase};

/// Tick of the periodic timer (arrivals, ramp-up, deadlines).
const TICK: Duration = Duration::from_millis(2);
/// A worker whose association was rejected or aborted waits this long.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Open loop: arrivals waiting for an association, per core and lane.
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
    /// `associations` associations running operations back to back.
    Closed,
    /// Poisson arrivals at this many operations per second overall.
    Open {
        /// Target rate, operations (instances, queries, retrieves) per second.
        rate_per_s: f64,
    },
}

impl LoadShape {
    /// "closed" or "open", as result files name it.
    pub fn mode_name(self) -> &'static str {
        match self {
            LoadShape::Closed => "closed",
            LoadShape::Open { .. } => "open",
        }
    }

    /// The open loop's target rate.
    pub fn rate_per_s(self) -> Option<f64> {
        match self {
            LoadShape::Open { rate_per_s } => Some(rate_per_s),
            LoadShape::Closed => None,
        }
    }
}

/// The retrieval lane of a run.
#[derive(Debug, Clone)]
pub struct RetrievePlan {
    /// What each operation asks.
    pub spec: RetrieveSpec,
    /// What operations are drawn from.
    pub pool: Arc<KeyPool>,
    /// Closed or open loop.
    pub shape: LoadShape,
    /// Closed loop: associations; open loop: the most at once.
    pub associations: usize,
    /// Re-associate after this many operations (0: never).
    pub operations_per_association: u64,
    /// C-MOVE: our storage SCP listens here (the destination AE's address
    /// in the target's table).
    pub move_listen: Option<SocketAddr>,
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
    /// The store lane's shape.
    pub shape: LoadShape,
    /// Store lane: closed loop associations; open loop: the most at once.
    /// 0: the run has no store lane.
    pub associations: usize,
    /// Stop after this long (plus draining what is in flight).
    pub duration: Option<Duration>,
    /// Stop after this many instances (store lane) or, in a retrieval-only
    /// run, operations.
    pub count: Option<u64>,
    /// Spread association starts over this long.
    pub ramp_up: Duration,
    /// Re-associate after this many instances (0: never).
    pub instances_per_association: u64,
    /// Instances per study (and commitment request).
    pub study_size: u64,
    /// Series per study.
    pub series_per_study: u64,
    /// Synthetic data: consecutive studies of one patient.
    pub studies_per_patient: u64,
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
    /// Random run id in UIDs and Patient IDs.
    pub run_id: u64,
    /// The retrieval lane, if the run queries or retrieves.
    pub retrieve: Option<RetrievePlan>,
}

impl RunPlan {
    /// The associations of `lane` (closed loop), or the most at once (open).
    pub fn lane_associations(&self, lane: Lane) -> usize {
        match lane {
            Lane::Store => self.associations,
            Lane::Retrieve => self.retrieve.as_ref().map_or(0, |plan| plan.associations),
        }
    }

    /// The shape of `lane`.
    pub fn lane_shape(&self, lane: Lane) -> LoadShape {
        match (lane, &self.retrieve) {
            (Lane::Retrieve, Some(plan)) => plan.shape,
            _ => self.shape,
        }
    }

    /// The lane `count` bounds: the store lane when the run has one.
    pub fn primary_lane(&self) -> Lane {
        if self.associations > 0 {
            Lane::Store
        } else {
            Lane::Retrieve
        }
    }

    /// The addresses our listener binds: commitment reports, C-MOVE
    /// sub-operations (one listener when they are the same).
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        let mut addresses: Vec<SocketAddr> = self.commit_listen.into_iter().collect();
        let move_listen = self.retrieve.as_ref().and_then(|plan| plan.move_listen);
        if let Some(address) = move_listen.filter(|address| !addresses.contains(address)) {
            addresses.push(address);
        }
        addresses
    }

    /// The C-MOVE destination is our own listener.
    pub fn receives_moves(&self) -> bool {
        self.retrieve
            .as_ref()
            .is_some_and(|plan| plan.move_listen.is_some())
    }
}

/// A C-MOVE of this run waiting for its sub-operations, keyed in
/// [`Shared::moves`] by its Message ID (unique among the run's moves in
/// flight), which the SCP repeats as Move Originator Message ID.
#[derive(Debug, Clone, Copy, Default)]
pub struct MoveTrack {
    /// When its first sub-operation's C-STORE-RQ reached our listener.
    pub first_sub_operation_at: Option<Instant>,
    /// When its last sub-operation's message or data reached our listener
    /// (a move whose SCP sends no pending responses is still alive).
    pub last_sub_operation_at: Option<Instant>,
    /// Sub-operations received for it.
    pub instances: u64,
}

/// State shared by the cores of one run.
#[derive(Debug)]
pub struct Shared {
    /// The plan.
    pub plan: RunPlan,
    /// UID serials.
    pub uids: UidGenerator,
    /// Studies started (synthetic patient and date values per study).
    pub studies: AtomicU64,
    /// Operations of the primary lane left to start when count-bounded.
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
    /// Live counters for the progress bar: instances stored.
    pub live_instances_ok: AtomicU64,
    /// Live bytes stored.
    pub live_bytes_ok: AtomicU64,
    /// Live failures (either lane).
    pub live_failures: AtomicU64,
    /// Live open associations (either lane).
    pub live_associations: AtomicU64,
    /// Live retrieval operations answered.
    pub live_operations: AtomicU64,
    /// Live bytes received by retrieval.
    pub live_bytes_received: AtomicU64,
    /// Commitment requests awaiting a report: transaction UID -> N-ACTION sent.
    pub pending_commits: Mutex<HashMap<String, Instant>>,
    /// C-MOVEs in flight, by Message ID.
    pub moves: Mutex<HashMap<u16, MoveTrack>>,
    /// The last C-MOVE Message ID handed out.
    move_message_id: AtomicU32,
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
            studies: AtomicU64::new(0),
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
            live_operations: AtomicU64::new(0),
            live_bytes_received: AtomicU64::new(0),
            pending_commits: Mutex::new(HashMap::new()),
            moves: Mutex::new(HashMap::new()),
            move_message_id: AtomicU32::new(0),
            results: Mutex::new(Vec::new()),
            finished_at: Mutex::new(None),
            plan,
        }
    }

    /// Claims one operation of `lane`; false when the budget is spent. A
    /// lane that is not the primary one has no budget: it runs until the
    /// run stops.
    fn claim(&self, lane: Lane) -> bool {
        if lane != self.plan.primary_lane() {
            return true;
        }
        match &self.budget {
            None => true,
            Some(budget) => budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok(),
        }
    }

    /// Registers a new C-MOVE and returns its Message ID: one not used by
    /// another move in flight (the SCP's sub-operations name it as Move
    /// Originator Message ID). `None` when 65 535 moves are in flight.
    fn register_move(&self) -> Option<u16> {
        let mut moves = self.moves.lock().ok()?;
        for _ in 0..=u16::MAX {
            let next = self.move_message_id.fetch_add(1, Ordering::Relaxed);
            let id = (next % u32::from(u16::MAX)) as u16 + 1;
            if let std::collections::hash_map::Entry::Vacant(slot) = moves.entry(id) {
                slot.insert(MoveTrack::default());
                return Some(id);
            }
        }
        None
    }
}

/// One lane's share of a core: its arrivals, idle associations, proposal.
#[derive(Debug)]
struct LaneState {
    /// Open loop: arrivals waiting for an association.
    arrivals: VecDeque<Instant>,
    /// The next arrival's time.
    next_arrival: Option<Instant>,
    /// This core's share of the lane's rate (0: no arrivals).
    rate_per_core: f64,
    /// Its own generator, so a seed's arrival sequence does not depend on
    /// how many other random choices were drawn in between.
    arrival_rng: fastrand::Rng,
    /// Established associations with nothing to do (open loop).
    idle: Vec<usize>,
    /// The A-ASSOCIATE-RQ of the lane's associations.
    proposal: Option<Box<sluice_net::pdu::AssociateRq>>,
}

/// The handler of one core.
#[derive(Debug)]
pub struct LoadCore {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    by_conn: HashMap<sluice_io::ConnId, usize>,
    framed: HashMap<(usize, u8, u32), Rc<Framed>>,
    stats: Measurements,
    rng: fastrand::Rng,
    stopping: bool,
    done: bool,
    lanes: [LaneState; 2],
    history: Option<std::io::BufWriter<std::fs::File>>,
    /// Commitment reports and C-MOVE sub-operations on our own listener.
    listener: Option<Listener>,
    stopped_at: Option<Instant>,
}

impl LoadCore {
    /// The handler of core `index` of `shared.core_count`.
    pub fn new(shared: Arc<Shared>, index: usize) -> LoadCore {
        let plan = &shared.plan;
        let cores = shared.core_count.max(1);
        let mut workers = Vec::new();
        let lanes = Lane::ALL.map(|lane| {
            let associations = plan.lane_associations(lane);
            // This core's share of the lane's associations, and their
            // global numbers (for the ramp-up schedule).
            let share = associations / cores + usize::from(index < associations % cores);
            let first_global = index * (associations / cores) + index.min(associations % cores);
            let shape = plan.lane_shape(lane);
            workers.extend((0..share).map(|local| match shape {
                LoadShape::Closed => {
                    let global = (first_global + local) as u32;
                    let offset = plan
                        .ramp_up
                        .mul_f64(f64::from(global) / associations.max(1) as f64);
                    Worker::new(
                        lane,
                        WorkerPhase::Waiting {
                            at: shared.start + offset,
                        },
                    )
                }
                LoadShape::Open { .. } => Worker::new(lane, WorkerPhase::Dormant),
            }));
            LaneState {
                arrivals: VecDeque::new(),
                next_arrival: None,
                // Arrivals in proportion to this core's associations, so a
                // core without any (fewer associations than cores) gets none.
                rate_per_core: match shape {
                    LoadShape::Open { rate_per_s } if share > 0 => {
                        rate_per_s * share as f64 / associations.max(1) as f64
                    }
                    _ => 0.0,
                },
                arrival_rng: fastrand::Rng::with_seed(
                    plan.run_id.rotate_left(17 + 7 * lane.index() as u32)
                        ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
                ),
                idle: Vec::new(),
                proposal: (share > 0)
                    .then(|| build_proposal(plan, lane).ok().map(Box::new))
                    .flatten(),
            }
        });
        let history = plan.history.as_ref().and_then(|path| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".core{index}"));
            std::fs::File::create(name)
                .ok()
                .map(|file| std::io::BufWriter::with_capacity(256 * 1024, file))
        });
        LoadCore {
            rng: fastrand::Rng::with_seed(plan.run_id ^ (index as u64).wrapping_mul(0x9E37_79B9)),
            workers,
            by_conn: HashMap::new(),
            framed: HashMap::new(),
            stats: Measurements::default(),
            stopping: false,
            done: false,
            lanes,
            history,
            listener: (!plan.listen_addresses().is_empty()).then(|| Listener::new(plan)),
            stopped_at: None,
            shared,
        }
    }

    fn plan(&self) -> &RunPlan {
        &self.shared.plan
    }

    fn lane_state(&mut self, lane: Lane) -> &mut LaneState {
        &mut self.lanes[lane.index()]
    }

    fn since_start_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.shared.start).as_micros() as u64
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
                for lane in Lane::ALL {
                    self.generate_arrivals(lane, deadline);
                }
                self.stopping = true;
                self.shared.stop.store(true, Ordering::Relaxed);
            } else if self.shared.stop.load(Ordering::Relaxed) {
                self.stopping = true;
            }
        }
        if self.stopping {
            // Open loop: arrivals already drawn are still served; workers
            // end once their lane's queue is empty.
            for w in 0..self.workers.len() {
                let drained = self.lanes[self.workers[w].lane.index()].arrivals.is_empty();
                match self.workers[w].phase {
                    WorkerPhase::Waiting { .. } => self.workers[w].phase = WorkerPhase::Done,
                    WorkerPhase::Dormant if drained => self.workers[w].phase = WorkerPhase::Done,
                    WorkerPhase::Ready if drained => self.next_work(core, w),
                    _ => {}
                }
            }
        } else {
            for lane in Lane::ALL {
                self.generate_arrivals(lane, now);
            }
            for w in 0..self.workers.len() {
                match self.workers[w].phase {
                    WorkerPhase::Waiting { at } if at <= now => self.start_association(core, w),
                    _ => {}
                }
            }
        }
        for lane in Lane::ALL {
            self.dispatch_arrivals(core, lane);
        }
        self.check_timeouts(core, now);
        let all_done = self
            .workers
            .iter()
            .all(|worker| worker.phase == WorkerPhase::Done);
        // Closed loop: every worker is done (budget spent, or refused);
        // open loop: only once stopping (dormant workers wait for arrivals).
        let open = self.lanes.iter().any(|lane| lane.rate_per_core > 0.0);
        let mut finished = all_done && (self.stopping || !open);
        if finished && self.plan().commit_listen.is_some() {
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

    fn generate_arrivals(&mut self, lane: Lane, now: Instant) {
        let start = self.shared.start;
        let state = &mut self.lanes[lane.index()];
        let rate = state.rate_per_core;
        if rate <= 0.0 {
            return;
        }
        let mut next = state.next_arrival.unwrap_or(start);
        let (mut drawn, mut dropped) = (0, 0);
        while next <= now {
            if !self.shared.claim(lane) {
                self.shared.stop.store(true, Ordering::Relaxed);
                break;
            }
            drawn += 1;
            if state.arrivals.len() < ARRIVAL_QUEUE_MAX {
                state.arrivals.push_back(next);
            } else {
                dropped += 1;
            }
            next += interarrival(&mut state.arrival_rng, rate);
        }
        state.next_arrival = Some(next);
        let (arrivals, arrivals_dropped) = match lane {
            Lane::Store => (&mut self.stats.arrivals, &mut self.stats.arrivals_dropped),
            Lane::Retrieve => (
                &mut self.stats.retrieve.counts.arrivals,
                &mut self.stats.retrieve.counts.arrivals_dropped,
            ),
        };
        *arrivals += drawn;
        *arrivals_dropped += dropped;
    }

    fn dispatch_arrivals(&mut self, core: &mut Core, lane: Lane) {
        while !self.lanes[lane.index()].arrivals.is_empty() {
            if let Some(w) = self.lane_state(lane).idle.pop() {
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
                .filter(|worker| worker.lane == lane && worker.phase == WorkerPhase::Associating)
                .count();
            if associating >= self.lanes[lane.index()].arrivals.len() {
                break;
            }
            let Some(w) = self
                .workers
                .iter()
                .position(|worker| worker.lane == lane && worker.phase == WorkerPhase::Dormant)
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
                WorkerPhase::Storing if worker.store_is_late(now, response_timeout) => {
                    self.abort(core, w, "C-STORE response timed out");
                }
                WorkerPhase::Retrieving
                    if worker.retrieve_is_late(now, response_timeout)
                        && !self.move_heard_within(w, now, response_timeout) =>
                {
                    self.abort(core, w, "retrieval response timed out");
                }
                WorkerPhase::Committing
                    if worker.commit.as_ref().is_some_and(|commit| {
                        now.saturating_duration_since(commit.sent_at) > commit_timeout
                    }) =>
                {
                    self.commit_timed_out(core, w);
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
                if w < self.workers.len() {
                    self.connected(core, w, conn, result);
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
                    if let Some(listener) = self.listener.as_mut() {
                        listener.ended(core, conn, &mut self.stats);
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
        for lane in Lane::ALL {
            let left = std::mem::take(&mut self.lane_state(lane).arrivals).len() as u64;
            match lane {
                Lane::Store => self.stats.arrivals_dropped += left,
                Lane::Retrieve => self.stats.retrieve.counts.arrivals_dropped += left,
            }
        }
        if let Some(history) = self.history.as_mut() {
            let _ = std::io::Write::flush(history);
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
    fn move_message_ids_are_unique_among_moves_in_flight() {
        let shared = Shared::new(proposal::tests::plan(), 1);
        let first = shared.register_move().unwrap();
        // Wrap around: the id still in flight is skipped.
        shared
            .move_message_id
            .store(u32::from(u16::MAX) - 1, Ordering::Relaxed);
        let mut seen = std::collections::BTreeSet::from([first]);
        for _ in 0..5 {
            let id = shared.register_move().unwrap();
            assert_ne!(id, 0);
            assert!(seen.insert(id), "{id} handed out twice");
        }
        assert!(!seen.contains(&0));
        assert_eq!(shared.moves.lock().unwrap().len(), 6);
    }
}
