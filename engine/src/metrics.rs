//! The server's metrics as the cores count them: plain atomics, laid out so
//! that the hot path never takes a lock, never allocates and never shares
//! a cache line with another core. They are aggregated only when scraped
//! (`scp::monitor` renders them as OpenMetrics text).
//!
//! - [`CoreMetrics`]: one per core, written by that core's thread only, so
//!   a count is a relaxed load and store (no locked read-modify-write);
//!   each on its own cache lines. C-STORE answers by status, association
//!   outcomes, DIMSE requests, the store latency histograms, the instances
//!   in flight, the core's event-loop turns (the watchdog's evidence).
//! - [`AeCounters`]: instances and data-set bytes received per calling AE
//!   title, shared by the cores an AE's associations land on (a relaxed
//!   `fetch_add`); a connection holds its AE's counters from its
//!   association's acceptance, so the per-AE table's lock is taken once per
//!   association, never per C-STORE. At most [`CALLING_AES_MAX`] titles get
//!   their own series; the rest share one ([`CALLING_AE_OTHERS`]), so a peer
//!   inventing titles cannot grow the table or the scrape without bound.
//! - [`Metrics::phase`]: starting (start-up recovery), serving, draining,
//!   for `/readyz`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Calling AE titles counted under their own label.
pub(crate) const CALLING_AES_MAX: usize = 1024;

/// The label of the calling AE titles past [`CALLING_AES_MAX`]: longer
/// than an AE title may be, so no peer can send it.
pub(crate) const CALLING_AE_OTHERS: &str = "(other AE titles)";
const _: () = assert!(CALLING_AE_OTHERS.len() > crate::config::AE_TITLE_LENGTH_MAX);

/// Upper bounds of the latency histograms' buckets, in microseconds (the
/// last bucket, `+Inf`, is implicit): 100 µs (a page-cache fdatasync) to
/// 10 s (a stalled disk).
pub(crate) const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Distinct C-STORE statuses counted per core; a status past them counts
/// under [`STATUS_OTHER`]. Sluice answers about twenty.
const STATUS_SLOTS: usize = 48;

/// The key of the slot of statuses past the table (not a 16-bit status).
pub(crate) const STATUS_OTHER: u32 = u32::MAX;

/// Adds `amount` to a counter only its own core writes: a plain load and
/// store, cheaper than a locked `fetch_add`, exact because no other thread
/// writes it (readers see a value at most one update old).
#[inline]
fn add_single_writer(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// A latency histogram of one core: counts per bucket (not cumulative) and
/// the sum, in microseconds.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// One observation (by the owning core).
    pub(crate) fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        if let Some(counter) = self.buckets.get(bucket) {
            add_single_writer(counter, 1);
        }
        add_single_writer(&self.sum_us, us);
    }

    /// Adds this histogram's counts into `buckets` (per bucket, not
    /// cumulative) and returns its sum in microseconds.
    pub(crate) fn add_into(&self, buckets: &mut [u64; LATENCY_BUCKETS_US.len() + 1]) -> u64 {
        for (total, counter) in buckets.iter_mut().zip(&self.buckets) {
            *total += counter.load(Ordering::Relaxed);
        }
        self.sum_us.load(Ordering::Relaxed)
    }
}

/// A small table of counts by code (C-STORE statuses), filled as codes
/// appear: a linear search of a few slots, no allocation. Written by one
/// core only.
#[derive(Debug)]
pub(crate) struct CodeCounts {
    /// The code of each slot plus one (0: free), or [`STATUS_OTHER`] + 0
    /// for the last slot once the table is full.
    keys: [AtomicU32; STATUS_SLOTS],
    counts: [AtomicU64; STATUS_SLOTS],
}

impl Default for CodeCounts {
    fn default() -> Self {
        CodeCounts {
            keys: std::array::from_fn(|_| AtomicU32::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl CodeCounts {
    /// Counts one `code` (by the owning core).
    pub(crate) fn count(&self, code: u16) {
        let key = u32::from(code) + 1;
        let last = STATUS_SLOTS - 1;
        for (slot, (slot_key, count)) in self.keys.iter().zip(&self.counts).enumerate() {
            let current = slot_key.load(Ordering::Relaxed);
            if current == key || current == STATUS_OTHER {
                add_single_writer(count, 1);
                return;
            }
            if current == 0 {
                // Claimed by the one writer; a reader seeing the key before
                // the count reads 0 for it, which is true a moment earlier.
                slot_key.store(
                    if slot == last { STATUS_OTHER } else { key },
                    Ordering::Relaxed,
                );
                add_single_writer(count, 1);
                return;
            }
        }
        debug_assert!(false, "the last slot is always free or the others' slot");
    }

    /// Every code counted (`None`: the others) with its count.
    pub(crate) fn each(&self, mut visit: impl FnMut(Option<u16>, u64)) {
        for (slot_key, count) in self.keys.iter().zip(&self.counts) {
            match slot_key.load(Ordering::Relaxed) {
                0 => break,
                STATUS_OTHER => visit(None, count.load(Ordering::Relaxed)),
                key => visit(u16::try_from(key - 1).ok(), count.load(Ordering::Relaxed)),
            }
        }
    }
}

/// Why an association was rejected, as the metrics label it: the
/// A-ASSOCIATE-RJ reasons Sluice gives (PS3.8 9.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectedBecause {
    NoReasonGiven,
    ApplicationContextNotSupported,
    CallingAeNotRecognized,
    CalledAeNotRecognized,
    ProtocolVersionNotSupported,
    TemporaryCongestion,
    LocalLimitExceeded,
    Other,
}

impl RejectedBecause {
    pub(crate) const ALL: [RejectedBecause; 8] = [
        RejectedBecause::NoReasonGiven,
        RejectedBecause::ApplicationContextNotSupported,
        RejectedBecause::CallingAeNotRecognized,
        RejectedBecause::CalledAeNotRecognized,
        RejectedBecause::ProtocolVersionNotSupported,
        RejectedBecause::TemporaryCongestion,
        RejectedBecause::LocalLimitExceeded,
        RejectedBecause::Other,
    ];

    pub(crate) fn of(reason: sluice_net::pdu::RejectReason) -> RejectedBecause {
        use sluice_net::pdu::RejectReason;
        match reason {
            RejectReason::ServiceUserNoReasonGiven
            | RejectReason::ServiceProviderAcseNoReasonGiven => RejectedBecause::NoReasonGiven,
            RejectReason::ApplicationContextNameNotSupported => {
                RejectedBecause::ApplicationContextNotSupported
            }
            RejectReason::CallingAeTitleNotRecognized => RejectedBecause::CallingAeNotRecognized,
            RejectReason::CalledAeTitleNotRecognized => RejectedBecause::CalledAeNotRecognized,
            RejectReason::ProtocolVersionNotSupported => {
                RejectedBecause::ProtocolVersionNotSupported
            }
            RejectReason::TemporaryCongestion => RejectedBecause::TemporaryCongestion,
            RejectReason::LocalLimitExceeded => RejectedBecause::LocalLimitExceeded,
            _ => RejectedBecause::Other,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            RejectedBecause::NoReasonGiven => "no_reason_given",
            RejectedBecause::ApplicationContextNotSupported => "application_context_not_supported",
            RejectedBecause::CallingAeNotRecognized => "calling_ae_not_recognized",
            RejectedBecause::CalledAeNotRecognized => "called_ae_not_recognized",
            RejectedBecause::ProtocolVersionNotSupported => "protocol_version_not_supported",
            RejectedBecause::TemporaryCongestion => "temporary_congestion",
            RejectedBecause::LocalLimitExceeded => "local_limit_exceeded",
            RejectedBecause::Other => "other",
        }
    }
}

/// The DIMSE requests counted, by command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Echo,
    Store,
    Find,
    Move,
    Get,
    Cancel,
    Action,
}

impl Request {
    pub(crate) const ALL: [Request; 7] = [
        Request::Echo,
        Request::Store,
        Request::Find,
        Request::Move,
        Request::Get,
        Request::Cancel,
        Request::Action,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Request::Echo => "C-ECHO",
            Request::Store => "C-STORE",
            Request::Find => "C-FIND",
            Request::Move => "C-MOVE",
            Request::Get => "C-GET",
            Request::Cancel => "C-CANCEL",
            Request::Action => "N-ACTION",
        }
    }
}

/// The outcomes of C-MOVE and C-GET sub-operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubOperation {
    Completed,
    Failed,
    Warning,
}

impl SubOperation {
    pub(crate) const ALL: [SubOperation; 3] = [
        SubOperation::Completed,
        SubOperation::Failed,
        SubOperation::Warning,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            SubOperation::Completed => "completed",
            SubOperation::Failed => "failed",
            SubOperation::Warning => "warning",
        }
    }
}

/// Why an instance arriving on the segments layout left its record buffer
/// for a file (docs/design/segments.md, "Large instances").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpillReason {
    /// Its Part 10 bytes passed `storage.segment_record_max`.
    RecordMax,
    /// Its buffer would have grown past the core's
    /// `storage.record_memory_per_core`.
    Memory,
    /// A duplicate bound for quarantine (which stays files).
    Quarantine,
}

impl SpillReason {
    pub(crate) const ALL: [SpillReason; 3] = [
        SpillReason::RecordMax,
        SpillReason::Memory,
        SpillReason::Quarantine,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            SpillReason::RecordMax => "record_max",
            SpillReason::Memory => "memory",
            SpillReason::Quarantine => "quarantine",
        }
    }
}

/// The latency histograms of the store path.
#[derive(Debug, Default)]
pub(crate) struct StoreLatency {
    /// From the C-STORE-RQ's arrival to its answer (stored instances).
    pub(crate) answered: Histogram,
    /// The file's rename (a record's write) to its fdatasync's (its
    /// segment's flush's) completion.
    pub(crate) file_sync: Histogram,
    /// The file's rename to its directory fsync's completion (the round it
    /// joined).
    pub(crate) dir_sync: Histogram,
    /// The entry's submission to the index writer to its commit.
    pub(crate) index_commit: Histogram,
}

/// One core's counters (see the module documentation). Aligned so that no
/// two cores' counters share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CoreMetrics {
    /// C-STORE answers by status.
    pub(crate) store_statuses: CodeCounts,
    pub(crate) store_latency: StoreLatency,
    /// Associations accepted (inbound).
    associations_accepted: AtomicU64,
    /// Associations rejected, by [`RejectedBecause::ALL`]'s order.
    associations_rejected: [AtomicU64; RejectedBecause::ALL.len()],
    /// DIMSE requests received, by [`Request::ALL`]'s order.
    requests: [AtomicU64; Request::ALL.len()],
    /// C-MOVE/C-GET sub-operations, by [`SubOperation::ALL`]'s order.
    sub_operations: [AtomicU64; SubOperation::ALL.len()],
    /// Instances being received or made durable on the core (a gauge).
    instances_in_flight: AtomicU64,
    /// Turns of the core's event loop (events and messages handled).
    loop_turns: AtomicU64,
    /// Retrieve chunks held back for ingest (`scp::query::share`).
    retrieve_chunks_deferred: AtomicU64,
    /// Instances spilled from their record buffer to a file, by
    /// [`SpillReason::ALL`]'s order.
    spills: [AtomicU64; SpillReason::ALL.len()],
    /// Receives straight into a record buffer, and the bytes they took.
    receives_into_record: AtomicU64,
    bytes_received_into_record: AtomicU64,
    /// Record writes from buffers registered with the core's io_uring, and
    /// the others (plain: their pages pinned per write).
    record_writes_registered: AtomicU64,
    record_writes_plain: AtomicU64,
    /// C-STOREs of C-MOVE/C-GET whose data set went from the file to the
    /// socket by splice, and those read into send buffers (copied).
    retrieve_data_sets_spliced: AtomicU64,
    retrieve_data_sets_copied: AtomicU64,
}

impl CoreMetrics {
    pub(crate) fn association_accepted(&self) {
        add_single_writer(&self.associations_accepted, 1);
    }

    pub(crate) fn association_rejected(&self, because: RejectedBecause) {
        let index = RejectedBecause::ALL
            .iter()
            .position(|&each| each == because)
            .unwrap_or(RejectedBecause::ALL.len() - 1);
        if let Some(counter) = self.associations_rejected.get(index) {
            add_single_writer(counter, 1);
        }
    }

    pub(crate) fn request(&self, request: Request) {
        if let Some(counter) = self.requests.get(request as usize) {
            add_single_writer(counter, 1);
        }
    }

    pub(crate) fn sub_operations(&self, outcome: SubOperation, count: u64) {
        if let Some(counter) = self.sub_operations.get(outcome as usize) {
            add_single_writer(counter, count);
        }
    }

    pub(crate) fn spilled(&self, reason: SpillReason) {
        if let Some(counter) = self.spills.get(reason as usize) {
            add_single_writer(counter, 1);
        }
    }

    pub(crate) fn spills(&self, reason: SpillReason) -> u64 {
        self.spills
            .get(reason as usize)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    pub(crate) fn retrieve_chunk_deferred(&self) {
        add_single_writer(&self.retrieve_chunks_deferred, 1);
    }

    pub(crate) fn set_instances_in_flight(&self, count: usize) {
        self.instances_in_flight
            .store(count as u64, Ordering::Relaxed);
    }

    /// One turn of the core's event loop.
    #[inline]
    pub(crate) fn turned(&self) {
        add_single_writer(&self.loop_turns, 1);
    }

    pub(crate) fn associations_accepted(&self) -> u64 {
        self.associations_accepted.load(Ordering::Relaxed)
    }

    pub(crate) fn associations_rejected(&self, because: RejectedBecause) -> u64 {
        RejectedBecause::ALL
            .iter()
            .position(|&each| each == because)
            .and_then(|index| self.associations_rejected.get(index))
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    pub(crate) fn requests(&self, request: Request) -> u64 {
        self.requests
            .get(request as usize)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    pub(crate) fn sub_operation_count(&self, outcome: SubOperation) -> u64 {
        self.sub_operations
            .get(outcome as usize)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    pub(crate) fn instances_in_flight(&self) -> u64 {
        self.instances_in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn loop_turns(&self) -> u64 {
        self.loop_turns.load(Ordering::Relaxed)
    }

    /// A receive straight into a record buffer took `bytes`.
    pub(crate) fn received_into_record(&self, bytes: u64) {
        add_single_writer(&self.receives_into_record, 1);
        add_single_writer(&self.bytes_received_into_record, bytes);
    }

    pub(crate) fn receives_into_record(&self) -> (u64, u64) {
        (
            self.receives_into_record.load(Ordering::Relaxed),
            self.bytes_received_into_record.load(Ordering::Relaxed),
        )
    }

    /// A record's write was submitted, from a registered buffer or not.
    pub(crate) fn record_written(&self, registered: bool) {
        let counter = if registered {
            &self.record_writes_registered
        } else {
            &self.record_writes_plain
        };
        add_single_writer(counter, 1);
    }

    /// Record writes from registered buffers, and plain ones.
    pub(crate) fn record_writes(&self) -> (u64, u64) {
        (
            self.record_writes_registered.load(Ordering::Relaxed),
            self.record_writes_plain.load(Ordering::Relaxed),
        )
    }

    /// A retrieve's data set was handed to the socket, by splice or not.
    pub(crate) fn retrieve_data_set_sent(&self, spliced: bool) {
        let counter = if spliced {
            &self.retrieve_data_sets_spliced
        } else {
            &self.retrieve_data_sets_copied
        };
        add_single_writer(counter, 1);
    }

    /// Retrieve data sets sent by splice, and by copy.
    pub(crate) fn retrieve_data_sets(&self) -> (u64, u64) {
        (
            self.retrieve_data_sets_spliced.load(Ordering::Relaxed),
            self.retrieve_data_sets_copied.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn retrieve_chunks_deferred(&self) -> u64 {
        self.retrieve_chunks_deferred.load(Ordering::Relaxed)
    }
}

/// What one calling AE title sent (all cores).
#[derive(Debug, Default)]
pub(crate) struct AeCounters {
    /// C-STORE-RQs received (whatever their answer).
    pub(crate) instances: AtomicU64,
    /// Data-set bytes received in C-STOREs.
    pub(crate) bytes: AtomicU64,
}

impl AeCounters {
    pub(crate) fn instance(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Where the server is in its life, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Start-up recovery runs; nothing is accepted yet.
    Starting = 0,
    /// Accepting associations.
    Serving = 1,
    /// Shutting down: new associations refused.
    Draining = 2,
}

/// Every metric of a running server (see the module documentation).
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Whether the counters count (the endpoint is configured): when not,
    /// [`Metrics::core`] and [`Metrics::calling_ae`] give nothing and the
    /// hot path skips them (one predictable branch).
    counting: bool,
    cores: Box<[CoreMetrics]>,
    calling_aes: Mutex<HashMap<String, Arc<AeCounters>>>,
    others: Arc<AeCounters>,
    phase: AtomicU8,
    /// The io backend that runs, once the cores started.
    pub(crate) backend: OnceLock<String>,
}

impl Metrics {
    pub(crate) fn new(core_count: usize, counting: bool) -> Metrics {
        Metrics {
            counting,
            cores: (0..core_count.max(1))
                .map(|_| CoreMetrics::default())
                .collect(),
            calling_aes: Mutex::new(HashMap::new()),
            others: Arc::default(),
            phase: AtomicU8::new(Phase::Starting as u8),
            backend: OnceLock::new(),
        }
    }

    /// The counters of core `index`, when counting.
    #[inline]
    pub(crate) fn core(&self, index: usize) -> Option<&CoreMetrics> {
        if !self.counting {
            return None;
        }
        let core = self.cores.get(index);
        // The runtime numbers its cores 0..count, the count the table was
        // made with.
        debug_assert!(core.is_some(), "core {index} has no metrics");
        core
    }

    /// One turn of core `index`'s event loop (counted whether or not the
    /// metrics are: the watchdog's evidence).
    #[inline]
    pub(crate) fn turned(&self, index: usize) {
        if let Some(core) = self.cores.get(index) {
            core.turned();
        }
    }
    pub(crate) fn cores(&self) -> &[CoreMetrics] {
        &self.cores
    }

    /// The counters of `calling_ae_title` (at association acceptance),
    /// when counting.
    pub(crate) fn calling_ae(&self, calling_ae_title: &str) -> Option<Arc<AeCounters>> {
        if !self.counting {
            return None;
        }
        let Ok(mut table) = self.calling_aes.lock() else {
            return Some(self.others.clone());
        };
        if let Some(counters) = table.get(calling_ae_title) {
            return Some(counters.clone());
        }
        if table.len() >= CALLING_AES_MAX {
            return Some(self.others.clone());
        }
        let counters = Arc::new(AeCounters::default());
        table.insert(calling_ae_title.to_owned(), counters.clone());
        Some(counters)
    }

    /// Every calling AE title's counters, sorted by title (the others
    /// last, when any sent).
    pub(crate) fn calling_aes(&self) -> Vec<(String, u64, u64)> {
        let mut rows: Vec<(String, u64, u64)> = match self.calling_aes.lock() {
            Ok(table) => table
                .iter()
                .map(|(title, counters)| {
                    (
                        title.clone(),
                        counters.instances.load(Ordering::Relaxed),
                        counters.bytes.load(Ordering::Relaxed),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        rows.sort();
        let others = (
            self.others.instances.load(Ordering::Relaxed),
            self.others.bytes.load(Ordering::Relaxed),
        );
        if others != (0, 0) {
            rows.push((CALLING_AE_OTHERS.to_owned(), others.0, others.1));
        }
        rows
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_take_their_upper_bound_inclusive() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_micros(101));
        histogram.observe(Duration::from_secs(60));
        let mut buckets = [0; LATENCY_BUCKETS_US.len() + 1];
        let sum = histogram.add_into(&mut buckets);
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(sum, 100 + 101 + 60_000_000);
    }

    #[test]
    fn code_counts_keep_every_code_and_pool_the_overflow() {
        let counts = CodeCounts::default();
        for code in 0..(STATUS_SLOTS as u16 + 10) {
            counts.count(code);
        }
        counts.count(0);
        let mut seen = Vec::new();
        counts.each(|code, count| seen.push((code, count)));
        assert_eq!(seen.first(), Some(&(Some(0), 2)));
        assert_eq!(seen.len(), STATUS_SLOTS);
        assert_eq!(seen.last(), Some(&(None, 11)));
    }

    #[test]
    fn calling_aes_past_the_cap_share_one_series() {
        let metrics = Metrics::new(1, true);
        for index in 0..CALLING_AES_MAX + 5 {
            metrics
                .calling_ae(&format!("AE{index}"))
                .unwrap()
                .instance();
        }
        let rows = metrics.calling_aes();
        assert_eq!(rows.len(), CALLING_AES_MAX + 1);
        assert_eq!(
            rows.last().map(|row| (row.0.as_str(), row.1)),
            Some((CALLING_AE_OTHERS, 5))
        );
    }
}
