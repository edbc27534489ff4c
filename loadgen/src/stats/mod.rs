//! Measurements: what each core records while it runs ([`Measurements`],
//! merged at the end) and the result file written per run ([`RunResult`],
//! the documented JSON schema of docs/design/loadgen.md, in [`result`]).
//!
//! A run has up to two lanes ([`Lane`]): the store lane (C-STORE and
//! commitment) and the retrieval lane (C-FIND, C-MOVE or C-GET). Each
//! lane's associations are counted apart ([`LaneCounters`]); what only one
//! lane measures lives in [`Measurements`] (store) and
//! [`RetrieveMeasurements`].

mod result;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

pub use result::{
    Latencies, LoadConfig, OwnCost, Percentiles, RetrievalConfig, RetrievalCounts,
    RetrievalLatencies, RetrievalResult, RetrievalTimelinePoint, RetrievalTotals, RunResult,
    Target, TimelinePoint, Totals, RESULT_SCHEMA_VERSION,
};

/// Which load an association carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// C-STORE (and Storage Commitment).
    Store,
    /// C-FIND, C-MOVE or C-GET.
    Retrieve,
}

impl Lane {
    /// Both lanes, store first.
    pub const ALL: [Lane; 2] = [Lane::Store, Lane::Retrieve];

    /// The lane's index in per-lane arrays.
    pub const fn index(self) -> usize {
        match self {
            Lane::Store => 0,
            Lane::Retrieve => 1,
        }
    }
}

/// Latencies are recorded in microseconds, up to this bound (1 hour).
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Counts (matches per query) are recorded up to this bound.
const COUNT_MAX: u64 = 100_000_000;

fn histogram() -> Histogram<u64> {
    bounded_histogram(LATENCY_US_MAX)
}

fn bounded_histogram(max: u64) -> Histogram<u64> {
    // 3 significant digits: 0.1% resolution, ~200 KB per histogram at most.
    Histogram::new_with_bounds(1, max, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[allow(clippy::panic)]
fn unreachable_histogram() -> Histogram<u64> {
    panic!("hdrhistogram rejected constant bounds")
}

/// The longest run the timeline records (a day, one slot per second).
const TIMELINE_SECONDS_MAX: usize = 86_400;

/// The associations of one lane.
#[derive(Debug, Clone)]
pub struct LaneCounters {
    /// Connect -> A-ASSOCIATE-AC.
    pub setup_latency_us: Histogram<u64>,
    /// Associations requested (connect attempts).
    pub associations_requested: u64,
    /// Associations accepted.
    pub associations_established: u64,
    /// Released cleanly.
    pub associations_released: u64,
    /// A-ASSOCIATE-RJ by "result/source/reason".
    pub rejections: BTreeMap<String, u64>,
    /// Aborts and other abnormal ends, by kind.
    pub aborts: BTreeMap<String, u64>,
}

impl Default for LaneCounters {
    fn default() -> LaneCounters {
        LaneCounters {
            setup_latency_us: histogram(),
            associations_requested: 0,
            associations_established: 0,
            associations_released: 0,
            rejections: BTreeMap::new(),
            aborts: BTreeMap::new(),
        }
    }
}

impl LaneCounters {
    fn merge(&mut self, other: &LaneCounters) {
        let _ = self.setup_latency_us.add(&other.setup_latency_us);
        self.associations_requested += other.associations_requested;
        self.associations_established += other.associations_established;
        self.associations_released += other.associations_released;
        merge_counters(&mut self.rejections, &other.rejections);
        merge_counters(&mut self.aborts, &other.aborts);
    }
}

fn merge_counters(mine: &mut BTreeMap<String, u64>, theirs: &BTreeMap<String, u64>) {
    for (key, count) in theirs {
        *mine.entry(key.clone()).or_insert(0) += count;
    }
}

/// What the load generator measured: one per core during a run, merged
/// into one at its end.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// The store lane's associations.
    pub store_lane: LaneCounters,
    /// C-STORE: last byte of the data set handed to the kernel -> C-STORE-RSP.
    pub store_latency_us: Histogram<u64>,
    /// Open loop: scheduled arrival -> C-STORE-RSP (queueing included).
    pub arrival_latency_us: Histogram<u64>,
    /// N-ACTION-RQ sent -> N-EVENT-REPORT-RQ received.
    pub commit_latency_us: Histogram<u64>,
    /// Instances answered 0000 (or a warning status B000-BFFF).
    pub instances_ok: u64,
    /// Instances answered with a failure status.
    pub instances_failed: u64,
    /// Stores cut off by an abort, a closed connection or the end of the run.
    pub instances_unanswered: u64,
    /// Data set bytes of the instances answered successfully.
    pub bytes_ok: u64,
    /// Every C-STORE status, by code.
    pub statuses: BTreeMap<u16, u64>,
    /// Commitment: requests sent, committed instances, failed instances, timeouts.
    pub commit_requests: u64,
    /// Instances reported committed.
    pub commit_instances_ok: u64,
    /// Instances reported failed.
    pub commit_instances_failed: u64,
    /// Reports received on the requesting association.
    pub commit_reports_on_association: u64,
    /// Reports received on our listener (new association from the SCP).
    pub commit_reports_on_listener: u64,
    /// Non-success N-ACTION-RSP statuses and reports not received in time.
    pub commit_errors: BTreeMap<String, u64>,
    /// Per second since the start: (instances ok, bytes ok).
    pub timeline: Vec<(u64, u64)>,
    /// Open loop: arrivals dropped because the queue was full.
    pub arrivals_dropped: u64,
    /// Open loop: arrivals drawn (the offered load).
    pub arrivals: u64,
    /// The retrieval lane.
    pub retrieve: RetrieveMeasurements,
}

impl Default for Measurements {
    fn default() -> Measurements {
        Measurements {
            store_lane: LaneCounters::default(),
            store_latency_us: histogram(),
            arrival_latency_us: histogram(),
            commit_latency_us: histogram(),
            instances_ok: 0,
            instances_failed: 0,
            instances_unanswered: 0,
            bytes_ok: 0,
            statuses: BTreeMap::new(),
            commit_requests: 0,
            commit_instances_ok: 0,
            commit_instances_failed: 0,
            commit_reports_on_association: 0,
            commit_reports_on_listener: 0,
            commit_errors: BTreeMap::new(),
            timeline: Vec::new(),
            arrivals_dropped: 0,
            arrivals: 0,
            retrieve: RetrieveMeasurements::default(),
        }
    }
}

/// One second of the retrieval lane's timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetrieveSecond {
    /// Operations that ended (final response) in that second.
    pub operations: u64,
    /// Instances received (C-MOVE on our listener, C-GET on the association).
    pub instances: u64,
    /// Their data set bytes.
    pub bytes: u64,
}

/// What the retrieval lane measured.
#[derive(Debug, Clone)]
pub struct RetrieveMeasurements {
    /// The lane's associations.
    pub lane: LaneCounters,
    /// Request sent -> final response.
    pub operation_latency_us: Histogram<u64>,
    /// C-FIND: request sent -> first response (the first match, or the final status).
    pub first_response_latency_us: Histogram<u64>,
    /// C-MOVE, C-GET: request sent -> first C-STORE-RQ of a sub-operation received.
    pub first_sub_operation_latency_us: Histogram<u64>,
    /// Open loop: scheduled arrival -> final response.
    pub arrival_latency_us: Histogram<u64>,
    /// C-FIND: matches (pending responses) per query.
    pub matches: Histogram<u64>,
    /// Its counts (operations by outcome, sub-operations, instances,
    /// expectations, arrivals).
    pub counts: RetrievalCounts,
    /// Every final status, by code.
    pub statuses: BTreeMap<u16, u64>,
    /// Per second since the start.
    pub timeline: Vec<RetrieveSecond>,
}

impl Default for RetrieveMeasurements {
    fn default() -> RetrieveMeasurements {
        RetrieveMeasurements {
            lane: LaneCounters::default(),
            operation_latency_us: histogram(),
            first_response_latency_us: histogram(),
            first_sub_operation_latency_us: histogram(),
            arrival_latency_us: histogram(),
            matches: bounded_histogram(COUNT_MAX),
            counts: RetrievalCounts::default(),
            statuses: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }
}

impl RetrieveMeasurements {
    /// The timeline slot of `second` (none beyond a day).
    pub fn second(&mut self, second: usize) -> Option<&mut RetrieveSecond> {
        if second >= TIMELINE_SECONDS_MAX {
            return None;
        }
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, RetrieveSecond::default());
        }
        self.timeline.get_mut(second)
    }

    /// Records a count (matches per query), saturating at its bound.
    pub fn record_count(histogram: &mut Histogram<u64>, count: u64) {
        histogram.saturating_record(count);
    }

    fn merge(&mut self, other: &RetrieveMeasurements) {
        self.lane.merge(&other.lane);
        for (mine, theirs) in [
            (&mut self.operation_latency_us, &other.operation_latency_us),
            (
                &mut self.first_response_latency_us,
                &other.first_response_latency_us,
            ),
            (
                &mut self.first_sub_operation_latency_us,
                &other.first_sub_operation_latency_us,
            ),
            (&mut self.arrival_latency_us, &other.arrival_latency_us),
            (&mut self.matches, &other.matches),
        ] {
            let _ = mine.add(theirs);
        }
        self.counts.add(&other.counts);
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += count;
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize(other.timeline.len(), RetrieveSecond::default());
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.operations += theirs.operations;
            mine.instances += theirs.instances;
            mine.bytes += theirs.bytes;
        }
    }
}

impl Measurements {
    /// Records a latency, saturating at the histogram's bound.
    pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
        histogram.saturating_record(micros.max(1));
    }

    /// The association counters of `lane`.
    pub fn lane(&mut self, lane: Lane) -> &mut LaneCounters {
        match lane {
            Lane::Store => &mut self.store_lane,
            Lane::Retrieve => &mut self.retrieve.lane,
        }
    }

    /// Counts a successful instance in the timeline slot `second`.
    pub fn count_in_timeline(&mut self, second: usize, bytes: u64) {
        if second >= TIMELINE_SECONDS_MAX {
            return;
        }
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, (0, 0));
        }
        if let Some(slot) = self.timeline.get_mut(second) {
            slot.0 += 1;
            slot.1 += bytes;
        }
    }

    /// Increments a keyed counter.
    pub fn bump(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
        *map.entry(key.into()).or_insert(0) += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Measurements) {
        self.store_lane.merge(&other.store_lane);
        let _ = self.store_latency_us.add(&other.store_latency_us);
        let _ = self.arrival_latency_us.add(&other.arrival_latency_us);
        let _ = self.commit_latency_us.add(&other.commit_latency_us);
        self.instances_ok += other.instances_ok;
        self.instances_failed += other.instances_failed;
        self.instances_unanswered += other.instances_unanswered;
        self.bytes_ok += other.bytes_ok;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += count;
        }
        merge_counters(&mut self.commit_errors, &other.commit_errors);
        self.commit_requests += other.commit_requests;
        self.commit_instances_ok += other.commit_instances_ok;
        self.commit_instances_failed += other.commit_instances_failed;
        self.commit_reports_on_association += other.commit_reports_on_association;
        self.commit_reports_on_listener += other.commit_reports_on_listener;
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), (0, 0));
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        self.arrivals_dropped += other.arrivals_dropped;
        self.arrivals += other.arrivals;
        self.retrieve.merge(&other.retrieve);
    }
}

/// (user CPU s, system CPU s, peak RSS MiB) of this process.
pub fn own_usage() -> (f64, f64, f64) {
    // /proc/self/stat fields 14/15 (utime, stime, in clock ticks) and
    // /proc/self/status VmHWM: no unsafe needed in this crate.
    let ticks_per_s = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after ") " the first field is the state (field 3): utime is field 14.
    let field = |index: usize| {
        fields
            .get(index - 3)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(0.0);
    (
        field(14) / ticks_per_s,
        field(15) / ticks_per_s,
        peak_kib / 1024.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counters_histograms_and_timelines() {
        let mut a = Measurements::default();
        let mut b = Measurements::default();
        Measurements::record(&mut a.store_latency_us, 1000);
        Measurements::record(&mut b.store_latency_us, 3000);
        a.count_in_timeline(0, 10);
        b.count_in_timeline(2, 20);
        b.statuses.insert(0xA900, 2);
        Measurements::bump(&mut b.lane(Lane::Store).rejections, "1/1/7");
        Measurements::bump(&mut b.lane(Lane::Retrieve).aborts, "x");
        RetrieveMeasurements::record_count(&mut a.retrieve.matches, 0);
        RetrieveMeasurements::record_count(&mut b.retrieve.matches, 5);
        b.retrieve.second(3).unwrap().instances += 2;
        b.retrieve.counts.operations_ok = 4;
        a.merge(&b);
        assert_eq!(a.store_latency_us.len(), 2);
        assert_eq!(a.timeline, vec![(1, 10), (0, 0), (1, 20)]);
        assert_eq!(a.statuses[&0xA900], 2);
        assert_eq!(a.store_lane.rejections["1/1/7"], 1);
        assert!(a.store_lane.aborts.is_empty());
        assert_eq!(a.retrieve.lane.aborts["x"], 1);
        assert_eq!(a.retrieve.matches.len(), 2);
        assert_eq!(a.retrieve.matches.min(), 0);
        assert_eq!(a.retrieve.timeline.len(), 4);
        assert_eq!(a.retrieve.timeline[3].instances, 2);
        assert_eq!(a.retrieve.counts.operations_ok, 4);
        assert!(a.retrieve.second(TIMELINE_SECONDS_MAX).is_none());
    }

    #[test]
    fn own_usage_reads_proc() {
        let (_user, _system, peak) = own_usage();
        assert!(peak > 0.0);
    }
}
