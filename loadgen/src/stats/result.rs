//! The result file of one run (JSON, [`RunResult`]): the contract between
//! `run`/`sweep` and `report`, documented in docs/design/loadgen.md.
//! Version 2 added the retrieval lane ([`RetrievalResult`]); files of
//! version 1 still read (the lane is absent).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Measurements, RetrieveMeasurements};

/// Version of the result file schema; bumped on incompatible changes.
pub const RESULT_SCHEMA_VERSION: u32 = 2;

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
    /// From a microsecond histogram, in milliseconds.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Percentiles {
        Percentiles::scaled(histogram, 1000.0)
    }

    /// From a histogram of counts, unscaled (matches per query).
    pub fn of_counts(histogram: &Histogram<u64>) -> Percentiles {
        Percentiles::scaled(histogram, 1.0)
    }

    fn scaled(histogram: &Histogram<u64>, divisor: f64) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let scale = |value: u64| value as f64 / divisor;
        Percentiles {
            count: histogram.len(),
            min: scale(histogram.min()),
            mean: histogram.mean() / divisor,
            p50: scale(histogram.value_at_quantile(0.50)),
            p90: scale(histogram.value_at_quantile(0.90)),
            p99: scale(histogram.value_at_quantile(0.99)),
            p999: scale(histogram.value_at_quantile(0.999)),
            max: scale(histogram.max()),
        }
    }

    /// `None` when nothing was recorded.
    fn if_any(histogram: &Histogram<u64>) -> Option<Percentiles> {
        (!histogram.is_empty()).then(|| Percentiles::from_histogram(histogram))
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

/// How the retrieval lane was set up (the result file's description of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalConfig {
    /// "find", "move" or "get".
    pub operation: String,
    /// "study" (Study Root) or "patient" (Patient Root).
    pub model: String,
    /// Query/Retrieve level: PATIENT, STUDY, SERIES or IMAGE.
    pub level: String,
    /// C-FIND matching keys (their command-line names).
    pub keys: Vec<String>,
    /// Where the keys came from and how many entities it held.
    pub key_source: String,
    /// "closed" or "open".
    pub mode: String,
    /// Closed loop: concurrent associations; open loop: the most allowed.
    pub associations: u64,
    /// Open loop: target operations per second.
    pub rate_per_s: Option<f64>,
    /// Operations per association (0: unlimited).
    pub operations_per_association: u64,
    /// C-MOVE: the Move Destination AE title.
    pub move_destination: Option<String>,
    /// C-MOVE: the address of our storage SCP (the destination).
    pub move_listen: Option<String>,
}

/// The retrieval lane's counts: summed while it runs
/// ([`super::RetrieveMeasurements`]) and reported as they are
/// ([`RetrievalTotals`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalCounts {
    /// Final status success.
    pub operations_ok: u64,
    /// Final status warning (B000: some sub-operations failed; FF01 ends as 0000).
    pub operations_warning: u64,
    /// Final status failure (or cancel).
    pub operations_failed: u64,
    /// No final response (abort, closed connection, end of the run).
    pub operations_unanswered: u64,
    /// Pending responses received (C-FIND matches, C-MOVE/C-GET progress).
    pub pending_responses: u64,
    /// C-FIND: queries that matched nothing.
    pub empty_results: u64,
    /// Sub-operations completed, failed, with warning (final responses).
    pub sub_operations_completed: u64,
    /// Sub-operations failed.
    pub sub_operations_failed: u64,
    /// Sub-operations with a warning.
    pub sub_operations_warning: u64,
    /// Instances received and drained (listener for C-MOVE, association for C-GET).
    pub instances_received: u64,
    /// Their data set bytes.
    pub bytes_received: u64,
    /// C-STORE-RQs on our listener matched with a C-MOVE of this run by
    /// their Move Originator Message ID.
    pub stores_attributed: u64,
    /// Operations whose outcome the key source predicted.
    pub expectations_checked: u64,
    /// ... whose outcome differed from the prediction.
    pub expectations_differed: u64,
    /// Open loop: arrivals drawn.
    pub arrivals: u64,
    /// Open loop: arrivals dropped (queue full, or still queued at the end).
    pub arrivals_dropped: u64,
}

impl RetrievalCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RetrievalCounts) {
        self.operations_ok += other.operations_ok;
        self.operations_warning += other.operations_warning;
        self.operations_failed += other.operations_failed;
        self.operations_unanswered += other.operations_unanswered;
        self.pending_responses += other.pending_responses;
        self.empty_results += other.empty_results;
        self.sub_operations_completed += other.sub_operations_completed;
        self.sub_operations_failed += other.sub_operations_failed;
        self.sub_operations_warning += other.sub_operations_warning;
        self.instances_received += other.instances_received;
        self.bytes_received += other.bytes_received;
        self.stores_attributed += other.stores_attributed;
        self.expectations_checked += other.expectations_checked;
        self.expectations_differed += other.expectations_differed;
        self.arrivals += other.arrivals;
        self.arrivals_dropped += other.arrivals_dropped;
    }
}

/// Totals of the retrieval lane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalTotals {
    /// The lane's counts (flat in the JSON result).
    #[serde(flatten)]
    pub counts: RetrievalCounts,
    /// C-FIND: matches received.
    pub matches: u64,
    /// Associations requested.
    pub associations_requested: u64,
    /// Associations accepted.
    pub associations_established: u64,
    /// Associations released cleanly.
    pub associations_released: u64,
}

/// Latency distributions of the retrieval lane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalLatencies {
    /// Request sent -> final response.
    pub operation: Percentiles,
    /// C-FIND: request sent -> first response.
    pub first_response: Option<Percentiles>,
    /// C-MOVE, C-GET: request sent -> first sub-operation's C-STORE-RQ received.
    pub first_sub_operation: Option<Percentiles>,
    /// Open loop: scheduled arrival -> final response.
    pub arrival_to_response: Option<Percentiles>,
    /// Association set-up.
    pub association_setup: Percentiles,
}

/// One second of the retrieval lane's timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalTimelinePoint {
    /// Second since the start.
    pub t_s: u64,
    /// Operations that ended in that second.
    pub operations: u64,
    /// Instances received in that second.
    pub instances: u64,
    /// MB (1e6 bytes) received in that second.
    pub megabytes: f64,
}

/// What the retrieval lane did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalResult {
    /// How it was set up.
    pub config: RetrievalConfig,
    /// Totals.
    pub totals: RetrievalTotals,
    /// Operations answered (any final status) per second.
    pub operations_per_s: f64,
    /// Instances received per second.
    pub instances_per_s: f64,
    /// MB (1e6 bytes) received per second.
    pub megabytes_per_s: f64,
    /// Latencies.
    pub latency_ms: RetrievalLatencies,
    /// C-FIND: matches per query (counts, not milliseconds).
    pub matches_per_query: Option<Percentiles>,
    /// Final statuses by 4-digit hex code.
    pub statuses: BTreeMap<String, u64>,
    /// A-ASSOCIATE-RJ by "result/source/reason".
    pub rejections: BTreeMap<String, u64>,
    /// Aborts and abnormal ends by kind.
    pub aborts: BTreeMap<String, u64>,
    /// Per second.
    pub timeline: Vec<RetrievalTimelinePoint>,
}

impl RetrievalResult {
    /// The retrieval lane's result from merged measurements.
    pub fn from_stats(
        stats: &RetrieveMeasurements,
        config: RetrievalConfig,
        elapsed_s: f64,
    ) -> RetrievalResult {
        let elapsed = elapsed_s.max(1e-9);
        let answered = stats.counts.operations_ok
            + stats.counts.operations_warning
            + stats.counts.operations_failed;
        let find = config.operation == "find";
        RetrievalResult {
            totals: RetrievalTotals {
                counts: stats.counts.clone(),
                matches: if find {
                    stats.counts.pending_responses
                } else {
                    0
                },
                associations_requested: stats.lane.associations_requested,
                associations_established: stats.lane.associations_established,
                associations_released: stats.lane.associations_released,
            },
            operations_per_s: answered as f64 / elapsed,
            instances_per_s: stats.counts.instances_received as f64 / elapsed,
            megabytes_per_s: stats.counts.bytes_received as f64 / 1e6 / elapsed,
            latency_ms: RetrievalLatencies {
                operation: Percentiles::from_histogram(&stats.operation_latency_us),
                first_response: if find {
                    Percentiles::if_any(&stats.first_response_latency_us)
                } else {
                    None
                },
                first_sub_operation: Percentiles::if_any(&stats.first_sub_operation_latency_us),
                arrival_to_response: (config.mode == "open")
                    .then(|| Percentiles::from_histogram(&stats.arrival_latency_us)),
                association_setup: Percentiles::from_histogram(&stats.lane.setup_latency_us),
            },
            matches_per_query: find.then(|| Percentiles::of_counts(&stats.matches)),
            statuses: stats
                .statuses
                .iter()
                .map(|(status, count)| (format!("{status:04X}"), *count))
                .collect(),
            rejections: stats.lane.rejections.clone(),
            aborts: stats.lane.aborts.clone(),
            timeline: stats
                .timeline
                .iter()
                .enumerate()
                .map(|(second, slot)| RetrievalTimelinePoint {
                    t_s: second as u64,
                    operations: slot.operations,
                    instances: slot.instances,
                    megabytes: slot.bytes as f64 / 1e6,
                })
                .collect(),
            config,
        }
    }

    /// Lines for the run summary on stdout.
    fn summary(&self) -> String {
        let config = &self.config;
        let totals = &self.totals;
        let operation = &self.latency_ms.operation;
        let mut text = format!(
            "retrieval {} {}{} ({} root) mode {} associations {}{}; keys from {}\n\
             operations ok {} warning {} failed {} unanswered {}: {:.1} operations/s\n\
             operation latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n",
            config.operation,
            config.level,
            if config.keys.is_empty() {
                String::new()
            } else {
                format!(" by {}", config.keys.join(","))
            },
            config.model,
            config.mode,
            config.associations,
            config
                .rate_per_s
                .map(|rate| format!(" rate {rate:.1}/s"))
                .unwrap_or_default(),
            config.key_source,
            totals.counts.operations_ok,
            totals.counts.operations_warning,
            totals.counts.operations_failed,
            totals.counts.operations_unanswered,
            self.operations_per_s,
            operation.p50,
            operation.p90,
            operation.p99,
            operation.p999,
            operation.max,
        );
        if let (Some(first), Some(matches)) =
            (&self.latency_ms.first_response, &self.matches_per_query)
        {
            text.push_str(&format!(
                "first response ms: p50 {:.2} p99 {:.2}; matches {} ({:.1} per query, max {}), empty results {}\n",
                first.p50, first.p99, totals.matches, matches.mean, matches.max, totals.counts.empty_results
            ));
        }
        if config.operation != "find" {
            text.push_str(&format!(
                "received {} instances ({:.1}/s, {:.1} MB/s); sub-operations completed {} failed {} warning {}{}\n",
                totals.counts.instances_received,
                self.instances_per_s,
                self.megabytes_per_s,
                totals.counts.sub_operations_completed,
                totals.counts.sub_operations_failed,
                totals.counts.sub_operations_warning,
                if config.operation == "move" {
                    format!("; {} attributed to their C-MOVE", totals.counts.stores_attributed)
                } else {
                    String::new()
                },
            ));
            if let Some(first) = &self.latency_ms.first_sub_operation {
                text.push_str(&format!(
                    "first sub-operation ms: p50 {:.2} p99 {:.2}\n",
                    first.p50, first.p99
                ));
            }
        }
        if let Some(arrival) = &self.latency_ms.arrival_to_response {
            text.push_str(&format!(
                "arrival->response ms: p50 {:.2} p99 {:.2}; arrivals {}, dropped {}\n",
                arrival.p50, arrival.p99, totals.counts.arrivals, totals.counts.arrivals_dropped
            ));
        }
        text.push_str(&format!(
            "expectations checked {} differed {}; association set-up ms: p50 {:.2}; requested {} established {} released {}\n",
            totals.counts.expectations_checked,
            totals.counts.expectations_differed,
            self.latency_ms.association_setup.p50,
            totals.associations_requested,
            totals.associations_established,
            totals.associations_released,
        ));
        for (title, map) in [
            ("retrieval statuses", &self.statuses),
            ("retrieval rejections", &self.rejections),
            ("retrieval aborts", &self.aborts),
        ] {
            if !map.is_empty() {
                text.push_str(&format!("{title}: {}\n", counters(map)));
            }
        }
        text
    }
}

fn counters(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(key, count)| format!("{key}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    /// The retrieval lane, when the run queried or retrieved (schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalResult>,
}

impl RunResult {
    /// Why the run measured nothing, when no association of either lane was
    /// established (every one rejected, aborted or refused a connection):
    /// the caller exits non-zero rather than reporting zeros as a capacity.
    pub fn nothing_measured(&self) -> Option<String> {
        let established = self.totals.associations_established
            + self
                .retrieval
                .as_ref()
                .map_or(0, |retrieval| retrieval.totals.associations_established);
        if established > 0 {
            return None;
        }
        let mut rejections = self.rejections.clone();
        let mut aborts = self.aborts.clone();
        if let Some(retrieval) = &self.retrieval {
            for (code, count) in &retrieval.rejections {
                *rejections.entry(code.clone()).or_insert(0) += count;
            }
            for (kind, count) in &retrieval.aborts {
                *aborts.entry(kind.clone()).or_insert(0) += count;
            }
        }
        Some(format!(
            "no association with {} ({}) was established; rejections {rejections:?}, aborts {aborts:?}",
            self.target.address, self.target.called_ae_title
        ))
    }

    /// Assembles the result from merged core stats.
    pub fn from_stats(
        stats: &Measurements,
        target: Target,
        load: LoadConfig,
        elapsed_s: f64,
        started_unix_s: u64,
        loadgen: OwnCost,
        retrieval: Option<RetrievalConfig>,
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
                associations_requested: stats.store_lane.associations_requested,
                associations_established: stats.store_lane.associations_established,
                associations_released: stats.store_lane.associations_released,
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
                association_setup: Percentiles::from_histogram(&stats.store_lane.setup_latency_us),
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
            rejections: stats.store_lane.rejections.clone(),
            aborts: stats.store_lane.aborts.clone(),
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
            retrieval: retrieval
                .map(|config| RetrievalResult::from_stats(&stats.retrieve, config, elapsed_s)),
        }
    }

    /// True when the run had a store lane.
    pub fn has_store_lane(&self) -> bool {
        self.load.associations > 0
    }

    /// A summary table for stdout.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "target {} ({}) in {:.1} s\n",
            self.target.address, self.target.label, self.elapsed_s
        );
        if self.has_store_lane() {
            text.push_str(&self.store_summary());
        }
        if let Some(retrieval) = &self.retrieval {
            text.push_str(&retrieval.summary());
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

    fn store_summary(&self) -> String {
        let store = &self.latency_ms.store;
        let mut text = format!(
            "store mode {} associations {}{}\n\
             instances ok {} failed {} unanswered {}: {:.1} inst/s, {:.1} MB/s\n\
             store latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n\
             association set-up ms: p50 {:.2} p99 {:.2}; requested {} established {} released {}\n",
            self.load.mode,
            self.load.associations,
            self.load
                .rate_per_s
                .map(|rate| format!(" rate {rate:.1}/s"))
                .unwrap_or_default(),
            self.totals.instances_ok,
            self.totals.instances_failed,
            self.totals.instances_unanswered,
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
                text.push_str(&format!("{title}: {}\n", counters(map)));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Lane;

    #[test]
    fn result_carries_both_lanes_and_round_trips() {
        let mut stats = Measurements::default();
        Measurements::record(&mut stats.store_latency_us, 3000);
        stats.statuses.insert(0xA900, 2);
        Measurements::bump(&mut stats.lane(Lane::Store).rejections, "1/1/7");
        let retrieve = &mut stats.retrieve;
        Measurements::record(&mut retrieve.operation_latency_us, 2000);
        Measurements::record(&mut retrieve.first_response_latency_us, 500);
        RetrieveMeasurements::record_count(&mut retrieve.matches, 3);
        retrieve.counts.operations_ok = 1;
        retrieve.counts.pending_responses = 3;
        retrieve.statuses.insert(0x0000, 1);
        let load = LoadConfig {
            associations: 2,
            ..LoadConfig::default()
        };
        let config = RetrievalConfig {
            operation: "find".into(),
            mode: "closed".into(),
            ..RetrievalConfig::default()
        };
        let result = RunResult::from_stats(
            &stats,
            Target::default(),
            load,
            2.0,
            0,
            OwnCost::default(),
            Some(config),
        );
        assert_eq!(result.schema_version, 2);
        assert_eq!(result.statuses["A900"], 2);
        assert_eq!(result.rejections["1/1/7"], 1);
        assert!((result.latency_ms.store.max - 3.0).abs() < 0.01);
        let retrieval = result.retrieval.as_ref().unwrap();
        assert_eq!(retrieval.totals.matches, 3);
        assert!((retrieval.operations_per_s - 0.5).abs() < 1e-9);
        assert_eq!(retrieval.matches_per_query.as_ref().unwrap().max, 3.0);
        assert!(retrieval.latency_ms.first_sub_operation.is_none());
        assert_eq!(retrieval.statuses["0000"], 1);
        let json = serde_json::to_string(&result).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, result);
        let summary = result.summary();
        assert!(
            summary.contains("store mode") && summary.contains("retrieval find"),
            "{summary}"
        );
    }

    #[test]
    fn version_1_files_still_read() {
        let recorded = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/sluice-result-00-assoc1.json"
        ))
        .unwrap();
        let result: RunResult = serde_json::from_str(&recorded).unwrap();
        assert_eq!(result.schema_version, 1);
        assert!(result.retrieval.is_none());
        assert!(result.has_store_lane());
    }
}
