//! Measurements: what each core records while it runs ([`Measurements`],
//! merged at the end) and the result file written per run ([`RunResult`],
//! the documented JSON schema of docs/design/loadgen.md).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Version of the result file schema; bumped on incompatible changes.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// Latencies are recorded in microseconds, up to this bound (1 hour).
const LATENCY_US_MAX: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% resolution, ~200 KB per histogram at most.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[allow(clippy::panic)]
fn unreachable_histogram() -> Histogram<u64> {
    panic!("hdrhistogram rejected constant bounds")
}

/// What the load generator measured: one per core during a run, merged
/// into one at its end.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// C-STORE: last byte of the data set handed to the kernel -> C-STORE-RSP.
    pub store_latency_us: Histogram<u64>,
    /// Open loop: scheduled arrival -> C-STORE-RSP (queueing included).
    pub arrival_latency_us: Histogram<u64>,
    /// Connect -> A-ASSOCIATE-AC.
    pub setup_latency_us: Histogram<u64>,
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
}

impl Default for Measurements {
    fn default() -> Measurements {
        Measurements {
            store_latency_us: histogram(),
            arrival_latency_us: histogram(),
            setup_latency_us: histogram(),
            commit_latency_us: histogram(),
            instances_ok: 0,
            instances_failed: 0,
            instances_unanswered: 0,
            bytes_ok: 0,
            statuses: BTreeMap::new(),
            associations_requested: 0,
            associations_established: 0,
            associations_released: 0,
            rejections: BTreeMap::new(),
            aborts: BTreeMap::new(),
            commit_requests: 0,
            commit_instances_ok: 0,
            commit_instances_failed: 0,
            commit_reports_on_association: 0,
            commit_reports_on_listener: 0,
            commit_errors: BTreeMap::new(),
            timeline: Vec::new(),
            arrivals_dropped: 0,
            arrivals: 0,
        }
    }
}

/// The longest run the timeline records (a day, one slot per second).
const TIMELINE_SECONDS_MAX: usize = 86_400;

impl Measurements {
    /// Records a latency, saturating at the histogram's bound.
    pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
        histogram.saturating_record(micros.max(1));
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
        let _ = self.store_latency_us.add(&other.store_latency_us);
        let _ = self.arrival_latency_us.add(&other.arrival_latency_us);
        let _ = self.setup_latency_us.add(&other.setup_latency_us);
        let _ = self.commit_latency_us.add(&other.commit_latency_us);
        self.instances_ok += other.instances_ok;
        self.instances_failed += other.instances_failed;
        self.instances_unanswered += other.instances_unanswered;
        self.bytes_ok += other.bytes_ok;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += count;
        }
        self.associations_requested += other.associations_requested;
        self.associations_established += other.associations_established;
        self.associations_released += other.associations_released;
        for (map, others) in [
            (&mut self.rejections, &other.rejections),
            (&mut self.aborts, &other.aborts),
            (&mut self.commit_errors, &other.commit_errors),
        ] {
            for (key, count) in others {
                *map.entry(key.clone()).or_insert(0) += count;
            }
        }
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
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From a microsecond histogram.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            min: ms(histogram.min()),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// The target of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// host:port.
    pub address: String,
    /// Called AE title.
    pub called_ae_title: String,
    /// Calling AE title.
    pub calling_ae_title: String,
    /// A free-form label of what is measured (e.g. "sluice", "storescp").
    pub label: String,
}

/// The load shape and workload of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadConfig {
    /// "closed" (N associations, back to back) or "open" (Poisson arrivals).
    pub mode: String,
    /// Closed loop: concurrent associations; open loop: the most allowed.
    pub associations: u64,
    /// Open loop: target instances per second.
    pub rate_per_s: Option<f64>,
    /// Run length in seconds (None: count-bounded).
    pub duration_s: Option<f64>,
    /// Instance count bound.
    pub count: Option<u64>,
    /// Ramp-up in seconds.
    pub ramp_up_s: f64,
    /// Instances per association (0: unlimited).
    pub instances_per_association: u64,
    /// Instances per study.
    pub study_size: u64,
    /// The workload: a mix like "ct=70,mr=30" or "dir:<path>".
    pub workload: String,
    /// Transfer syntax UID of the synthetic data sets.
    pub transfer_syntax_uid: String,
    /// Maximum PDU length we announce we receive.
    pub pdu_length_max: u32,
    /// Storage commitment after each study.
    pub commitment: bool,
    /// Cores of the loadgen runtime.
    pub cores: u64,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Instances answered with success or warning.
    pub instances_ok: u64,
    /// Instances answered with a failure status.
    pub instances_failed: u64,
    /// Stores without an answer (abort, closed connection, end of run).
    pub instances_unanswered: u64,
    /// Data set bytes acknowledged.
    pub bytes_ok: u64,
    /// Associations requested.
    pub associations_requested: u64,
    /// Associations accepted.
    pub associations_established: u64,
    /// Associations released cleanly.
    pub associations_released: u64,
    /// Open loop: arrivals dropped (queue full, or still queued at the end).
    pub arrivals_dropped: u64,
    /// Open loop: arrivals drawn, the offered load (rate control is judged on it).
    #[serde(default)]
    pub arrivals: u64,
    /// Commitment requests sent.
    pub commit_requests: u64,
    /// Instances reported committed.
    pub commit_instances_ok: u64,
    /// Instances reported failed to commit.
    pub commit_instances_failed: u64,
    /// Reports received on the requesting association.
    #[serde(default)]
    pub commit_reports_on_association: u64,
    /// Reports received on our own listener.
    #[serde(default)]
    pub commit_reports_on_listener: u64,
}

/// Latency distributions of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// C-STORE: last byte sent -> response.
    pub store: Percentiles,
    /// Open loop: scheduled arrival -> response.
    pub arrival_to_response: Option<Percentiles>,
    /// Association set-up: connect -> A-ASSOCIATE-AC.
    pub association_setup: Percentiles,
    /// Commitment: N-ACTION sent -> N-EVENT-REPORT received.
    pub commitment: Option<Percentiles>,
}

/// The loadgen's own cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnCost {
    /// User CPU seconds of the loadgen process during the run.
    pub cpu_user_s: f64,
    /// System CPU seconds.
    pub cpu_system_s: f64,
    /// (user + system) CPU seconds per GB (1e9 bytes) of data sets sent.
    pub cpu_s_per_gb: f64,
    /// Peak resident set size of the process, MiB.
    pub peak_rss_mib: f64,
    /// The io backend ("io_uring" or "portable (epoll)").
    pub backend: String,
}

/// One point of the throughput time series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Second since the start.
    pub t_s: u64,
    /// Instances acknowledged in that second.
    pub instances: u64,
    /// MB (1e6 bytes) acknowledged in that second.
    pub megabytes: f64,
}

/// The result file of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`RESULT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// sluice-loadgen version.
    pub tool_version: String,
    /// Unix time of the start, seconds.
    pub started_unix_s: u64,
    /// Wall time of the measured run, seconds.
    pub elapsed_s: f64,
    /// The target.
    pub target: Target,
    /// The load.
    pub load: LoadConfig,
    /// Totals.
    pub totals: Totals,
    /// Instances per second acknowledged over the run.
    pub instances_per_s: f64,
    /// MB (1e6 bytes) per second acknowledged.
    pub megabytes_per_s: f64,
    /// Latencies.
    pub latency_ms: Latencies,
    /// C-STORE statuses by 4-digit hex code.
    pub statuses: BTreeMap<String, u64>,
    /// A-ASSOCIATE-RJ by "result/source/reason" codes.
    pub rejections: BTreeMap<String, u64>,
    /// Aborts and abnormal ends by kind.
    pub aborts: BTreeMap<String, u64>,
    /// Commitment errors by kind.
    pub commit_errors: BTreeMap<String, u64>,
    /// Throughput per second.
    pub timeline: Vec<TimelinePoint>,
    /// The loadgen's own cost.
    pub loadgen: OwnCost,
}

impl RunResult {
    /// Assembles the result from merged core stats.
    pub fn from_stats(
        stats: &Measurements,
        target: Target,
        load: LoadConfig,
        elapsed_s: f64,
        started_unix_s: u64,
        loadgen: OwnCost,
    ) -> RunResult {
        let elapsed = elapsed_s.max(1e-9);
        RunResult {
            schema_version: RESULT_SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_s,
            elapsed_s,
            target,
            totals: Totals {
                instances_ok: stats.instances_ok,
                instances_failed: stats.instances_failed,
                instances_unanswered: stats.instances_unanswered,
                bytes_ok: stats.bytes_ok,
                associations_requested: stats.associations_requested,
                associations_established: stats.associations_established,
                associations_released: stats.associations_released,
                arrivals_dropped: stats.arrivals_dropped,
                arrivals: stats.arrivals,
                commit_requests: stats.commit_requests,
                commit_instances_ok: stats.commit_instances_ok,
                commit_instances_failed: stats.commit_instances_failed,
                commit_reports_on_association: stats.commit_reports_on_association,
                commit_reports_on_listener: stats.commit_reports_on_listener,
            },
            instances_per_s: stats.instances_ok as f64 / elapsed,
            megabytes_per_s: stats.bytes_ok as f64 / 1e6 / elapsed,
            latency_ms: Latencies {
                store: Percentiles::from_histogram(&stats.store_latency_us),
                arrival_to_response: (load.mode == "open")
                    .then(|| Percentiles::from_histogram(&stats.arrival_latency_us)),
                association_setup: Percentiles::from_histogram(&stats.setup_latency_us),
                commitment: load
                    .commitment
                    .then(|| Percentiles::from_histogram(&stats.commit_latency_us)),
            },
            load,
            statuses: stats
                .statuses
                .iter()
                .map(|(status, count)| (format!("{status:04X}"), *count))
                .collect(),
            rejections: stats.rejections.clone(),
            aborts: stats.aborts.clone(),
            commit_errors: stats.commit_errors.clone(),
            timeline: stats
                .timeline
                .iter()
                .enumerate()
                .map(|(second, (instances, bytes))| TimelinePoint {
                    t_s: second as u64,
                    instances: *instances,
                    megabytes: *bytes as f64 / 1e6,
                })
                .collect(),
            loadgen,
        }
    }

    /// A summary table for stdout.
    pub fn summary(&self) -> String {
        let store = &self.latency_ms.store;
        let mut text = format!(
            "target {} ({}) mode {} associations {}{}\n\
             instances ok {} failed {} unanswered {} in {:.1} s: {:.1} inst/s, {:.1} MB/s\n\
             store latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n\
             association set-up ms: p50 {:.2} p99 {:.2}; requested {} established {} released {}\n",
            self.target.address,
            self.target.label,
            self.load.mode,
            self.load.associations,
            self.load
                .rate_per_s
                .map(|rate| format!(" rate {rate:.1}/s"))
                .unwrap_or_default(),
            self.totals.instances_ok,
            self.totals.instances_failed,
            self.totals.instances_unanswered,
            self.elapsed_s,
            self.instances_per_s,
            self.megabytes_per_s,
            store.p50,
            store.p90,
            store.p99,
            store.p999,
            store.max,
            self.latency_ms.association_setup.p50,
            self.latency_ms.association_setup.p99,
            self.totals.associations_requested,
            self.totals.associations_established,
            self.totals.associations_released,
        );
        if let Some(arrival) = &self.latency_ms.arrival_to_response {
            text.push_str(&format!(
                "arrival->response ms: p50 {:.2} p99 {:.2}; arrivals {} ({:.1}/s offered), dropped {}\n",
                arrival.p50,
                arrival.p99,
                self.totals.arrivals,
                self.totals.arrivals as f64 / self.load.duration_s.unwrap_or(self.elapsed_s).max(1e-9),
                self.totals.arrivals_dropped
            ));
        }
        if let Some(commit) = &self.latency_ms.commitment {
            text.push_str(&format!(
                "commitment ms: p50 {:.2} p99 {:.2}; requests {} (reports {} on the association, {} on the listener) committed {} failed {}\n",
                commit.p50,
                commit.p99,
                self.totals.commit_requests,
                self.totals.commit_reports_on_association,
                self.totals.commit_reports_on_listener,
                self.totals.commit_instances_ok,
                self.totals.commit_instances_failed
            ));
        }
        for (title, map) in [
            ("statuses", &self.statuses),
            ("rejections", &self.rejections),
            ("aborts", &self.aborts),
            ("commitment errors", &self.commit_errors),
        ] {
            if !map.is_empty() {
                let entries: Vec<String> = map
                    .iter()
                    .map(|(key, count)| format!("{key}: {count}"))
                    .collect();
                text.push_str(&format!("{title}: {}\n", entries.join(", ")));
            }
        }
        text.push_str(&format!(
            "loadgen: {:.2} CPU s ({:.2} CPU s/GB), peak RSS {:.0} MiB, {}\n",
            self.loadgen.cpu_user_s + self.loadgen.cpu_system_s,
            self.loadgen.cpu_s_per_gb,
            self.loadgen.peak_rss_mib,
            self.loadgen.backend
        ));
        text
    }
}

/// (user CPU s, system CPU s, peak RSS MiB) of this process, from getrusage.
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
        Measurements::bump(&mut b.rejections, "1/1/7");
        a.merge(&b);
        assert_eq!(a.store_latency_us.len(), 2);
        assert_eq!(a.timeline, vec![(1, 10), (0, 0), (1, 20)]);
        assert_eq!(a.statuses[&0xA900], 2);
        assert_eq!(a.rejections["1/1/7"], 1);
        let result = RunResult::from_stats(
            &a,
            Target::default(),
            LoadConfig::default(),
            2.0,
            0,
            OwnCost::default(),
        );
        assert_eq!(result.statuses["A900"], 2);
        assert!((result.latency_ms.store.max - 3.0).abs() < 0.01);
        let json = serde_json::to_string(&result).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn own_usage_reads_proc() {
        let (_user, _system, peak) = own_usage();
        assert!(peak > 0.0);
    }
}
