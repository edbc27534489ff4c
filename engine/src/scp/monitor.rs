//! The monitoring endpoint (`[metrics]`): one std thread serving plain
//! HTTP/1.1 on its own listener, three paths, one request per connection:
//!
//! - `GET /metrics`: every metric as OpenMetrics text (what Prometheus
//!   scrapes), read from the cores' counters ([`crate::metrics`]) and from
//!   the store, the index and the commitment tracker at scrape time;
//! - `GET /healthz`: 200 while the process runs and answers;
//! - `GET /readyz`: 200 only while C-STOREs would be accepted; 503 with the
//!   reason while start-up recovery runs, while draining, in the refusing
//!   state, or below the free-space floor.
//!
//! An HTTP request is peer input: the head is read into a fixed buffer
//! ([`REQUEST_HEAD_MAX`], 431 past it), parsed by `httparse` (no panic, no
//! allocation), each read and write bounded in time ([`IO_TIMEOUT`]);
//! anything but GET (or HEAD) is answered 405. One thread is enough: a
//! scrape every few seconds and a probe or two; a slow client holds it at
//! most [`IO_TIMEOUT`] per read.
//!
//! Architecture invariant: the endpoint only reads. Nothing here changes
//! the server's state, and the cores never wait for it.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::shared::ServerShared;
use crate::metrics::{
    CoreMetrics, Phase, RejectedBecause, Request, SpillReason, SubOperation, LATENCY_BUCKETS_US,
};

/// The most bytes of a request head read (request line and headers).
pub(crate) const REQUEST_HEAD_MAX: usize = 8 * 1024;

/// How long one read or write of a client may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of OpenMetrics text, which Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running endpoint; stopped (and its thread joined) on drop.
#[derive(Debug)]
pub(crate) struct Monitor {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Binds `address` and serves it on a thread of its own.
    pub(crate) fn start(
        shared: Arc<ServerShared>,
        address: SocketAddr,
    ) -> std::io::Result<Monitor> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sluice-metrics".into())
                .spawn(move || serve(&listener, &shared, &stop))?
        };
        tracing::info!(%address, "metrics and health endpoint listening (/metrics, /healthz, /readyz)");
        Ok(Monitor {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.address, IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, shared: &Arc<ServerShared>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(error) = answer(stream, shared) {
                    tracing::debug!(%error, "metrics endpoint: client connection failed");
                }
            }
            Err(error) => {
                // EMFILE and the like: back off rather than spin.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a request head asks for, or why it is answered with an error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Metrics,
    Health,
    Ready,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    HeadTooLarge,
}

/// Routes a request head (`head`: the bytes read so far, `full`: whether
/// the buffer is full). `None`: incomplete, read more.
pub(crate) fn route(head: &[u8], full: bool) -> Option<(Route, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if full => return Some((Route::HeadTooLarge, false)),
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some((Route::HeadTooLarge, false)),
        Err(_) => return Some((Route::BadRequest, false)),
    }
    let head_only = request.method == Some("HEAD");
    if request.method != Some("GET") && !head_only {
        return Some((Route::MethodNotAllowed, false));
    }
    let path = request.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        _ => Route::NotFound,
    };
    Some((route, head_only))
}

fn answer(mut stream: TcpStream, shared: &Arc<ServerShared>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buffer = [0u8; REQUEST_HEAD_MAX];
    let mut filled = 0;
    let (route, head_only) = loop {
        let Some(free) = buffer.get_mut(filled..) else {
            break (Route::HeadTooLarge, false);
        };
        let read = stream.read(free)?;
        if read == 0 {
            // Closed before a whole head: nothing to answer.
            return Ok(());
        }
        filled += read;
        let head = buffer.get(..filled).unwrap_or_default();
        if let Some(routed) = route(head, filled == REQUEST_HEAD_MAX) {
            break routed;
        }
    };
    let (status, content_type, body) = match route {
        Route::Metrics => match exposition(shared) {
            Ok(text) => ("200 OK", OPENMETRICS, text),
            Err(_) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                "cannot encode the metrics\n".to_owned(),
            ),
        },
        Route::Health => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_owned()),
        Route::Ready => match not_ready_because(shared) {
            // Cluster mode without its catalogue, or an object store that
            // does not answer, still takes stores (into the local store):
            // ready, and saying so.
            None => {
                let notes: Vec<String> = [
                    shared.cluster.as_ref().and_then(|c| c.local_only_because()),
                    shared.store.objects().and_then(|o| o.failing_because()),
                ]
                .into_iter()
                .flatten()
                .collect();
                let body = if notes.is_empty() {
                    "ready\n".to_owned()
                } else {
                    format!("ready ({})\n", notes.join("; "))
                };
                ("200 OK", "text/plain; charset=utf-8", body)
            }
            Some(reason) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("not ready: {reason}\n"),
            ),
        },
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the paths are /metrics, /healthz and /readyz\n".to_owned(),
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET (and HEAD) are served\n".to_owned(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "malformed HTTP request\n".to_owned(),
        ),
        Route::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            format!("the request head exceeds {REQUEST_HEAD_MAX} bytes\n"),
        ),
    };
    let allow = if route == Route::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()?;
    // A lingering close: bytes the client sent past what was read (an
    // oversized head, a body) would make the close a reset, which may
    // destroy the answer before the client reads it. Read a bounded amount
    // more once the answer is out.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut discarded = 0;
    while discarded < LINGER_READ_MAX {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => discarded += read,
        }
    }
    Ok(())
}

/// The most bytes read and discarded after an answer (a lingering close).
const LINGER_READ_MAX: usize = 64 * 1024;

/// Why the server would not accept a C-STORE now, or `None` when it would.
fn not_ready_because(shared: &ServerShared) -> Option<String> {
    match shared.metrics.phase() {
        Phase::Starting => return Some("start-up recovery is running".to_owned()),
        Phase::Draining => return Some("shutting down (draining)".to_owned()),
        Phase::Serving => {}
    }
    if shared.store.is_refusing() {
        return Some(
            "refusing every C-STORE after repeated durability failures (restart to clear)"
                .to_owned(),
        );
    }
    let floor = shared.store.config().storage.free_space_floor;
    if floor > 0 {
        if let Some(free) = free_bytes(shared) {
            if free < floor {
                return Some(format!(
                    "{free} bytes free in the data directory, below the floor of {floor} (storage.free_space_floor)"
                ));
            }
        }
    }
    None
}

fn free_bytes(shared: &ServerShared) -> Option<u64> {
    let stats = rustix::fs::statvfs(shared.store.layout().root()).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Every metric as OpenMetrics text.
fn exposition(shared: &Arc<ServerShared>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(shared.clone())));
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A label value as OpenMetrics quotes it: the crate writes values as they
/// are, and calling AE titles are a peer's bytes (a quote or a newline
/// would break the exposition).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for character in self.0.chars() {
            match character {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                other => encoder.write_char(other)?,
            }
        }
        Ok(())
    }
}

/// Which of the store's latency histograms a metric shows.
type LatencyOf = fn(&crate::metrics::StoreLatency) -> &crate::metrics::Histogram;

/// The scrape: the collector reads what the cores share.
#[derive(Debug)]
struct Scrape(Arc<ServerShared>);

/// Two counters of every core, each summed over the cores.
fn summed_pairs(cores: &[CoreMetrics], pair: impl Fn(&CoreMetrics) -> (u64, u64)) -> (u64, u64) {
    cores
        .iter()
        .map(pair)
        .fold((0, 0), |(first, second), (more, more_second)| {
            (first + more, second + more_second)
        })
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One family of counters or gauges with one label: a series per row
/// (label value, value).
fn family<'a>(
    encoder: &mut DescriptorEncoder,
    (name, help, metric_type): (&str, &str, MetricType),
    label: &str,
    rows: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value_of_label, value) in rows {
        let labels = [(label, Escaped(value_of_label))];
        let labels = labels.as_slice();
        let series = family.encode_family(&labels)?;
        if matches!(metric_type, MetricType::Counter) {
            ConstCounter::new(value).encode(series)?;
        } else {
            ConstGauge::new(to_i64(value)).encode(series)?;
        }
    }
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = &self.0;
        let metrics = &source.metrics;
        let cores = metrics.cores();

        // ----- C-STORE -----
        let calling_aes = metrics.calling_aes();
        {
            family(
                &mut encoder,
                (
                    "sluice_store_instances_received",
                    "C-STORE requests received, per calling AE title (whatever their answer)",
                    MetricType::Counter,
                ),
                "calling_ae",
                calling_aes
                    .iter()
                    .map(|(title, instances, _)| (title.as_str(), *instances)),
            )?;
        }
        {
            family(
                &mut encoder,
                (
                    "sluice_store_bytes_received",
                    "C-STORE data-set bytes received, per calling AE title",
                    MetricType::Counter,
                ),
                "calling_ae",
                calling_aes
                    .iter()
                    .map(|(title, _, bytes)| (title.as_str(), *bytes)),
            )?;
        }
        {
            let mut by_status = std::collections::BTreeMap::<Option<u16>, u64>::new();
            for core in cores {
                core.store_statuses.each(|code, count| {
                    *by_status.entry(code).or_default() += count;
                });
            }
            let statuses: Vec<(String, u64)> = by_status
                .into_iter()
                .map(|(code, count)| {
                    let status =
                        code.map_or_else(|| "other".to_owned(), |code| format!("{code:04X}"));
                    (status, count)
                })
                .collect();
            family(
                &mut encoder,
                (
                    "sluice_store_answers",
                    "C-STORE-RSPs sent, per status (hexadecimal, as PS3.7 writes it)",
                    MetricType::Counter,
                ),
                "status",
                statuses
                    .iter()
                    .map(|(status, count)| (status.as_str(), *count)),
            )?;
        }
        let histograms: [(&str, &str, LatencyOf); 4] = [
            (
                "sluice_store_latency_seconds",
                "Stored instances: from the C-STORE-RQ's arrival to its C-STORE-RSP",
                |latency| &latency.answered,
            ),
            (
                "sluice_store_file_sync_seconds",
                "Stored instances: from the file's rename (a record's write) to its fdatasync's (its segment's flush's) completion",
                |latency| &latency.file_sync,
            ),
            (
                "sluice_store_directory_sync_seconds",
                "Stored instances: from the file's rename to its directory's fsync completion",
                |latency| &latency.dir_sync,
            ),
            (
                "sluice_store_index_commit_seconds",
                "Stored instances: from the entry's submission to the index writer to its commit",
                |latency| &latency.index_commit,
            ),
        ];
        for (name, help, of) in histograms {
            let mut buckets = [0u64; LATENCY_BUCKETS_US.len() + 1];
            let mut sum_us = 0u64;
            for core in cores {
                sum_us = sum_us.saturating_add(of(&core.store_latency).add_into(&mut buckets));
            }
            let count = buckets.iter().sum();
            let bounds: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                .iter()
                .map(|&us| us as f64 / 1e6)
                .chain(std::iter::once(f64::MAX))
                .zip(buckets)
                .collect();
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(sum_us as f64 / 1e6, count, &bounds, None)?;
        }
        gauge(
            &mut encoder,
            "sluice_store_instances_in_flight",
            "Instances being received or made durable, all cores",
            to_i64(cores.iter().map(|core| core.instances_in_flight()).sum()),
        )?;
        let counts = source.store.counts();
        {
            family(
                &mut encoder,
                (
                    "sluice_store_outcomes",
                    "C-STOREs by what became of the instance",
                    MetricType::Counter,
                ),
                "outcome",
                [
                    ("stored", counts.stored),
                    ("quarantined", counts.quarantined),
                    ("dropped_identical", counts.dropped),
                    ("rejected_duplicate", counts.rejected),
                    ("failed", counts.failed),
                ],
            )?;
        }
        if let Some(cluster) = &source.cluster {
            let state = cluster.state();
            gauge(
                &mut encoder,
                "sluice_cluster_catalogue_reachable",
                "1 while the cluster catalogue (PostgreSQL) answers; 0: local-only ingest",
                i64::from(state.reachable.load(Ordering::Relaxed)),
            )?;
            gauge(
                &mut encoder,
                "sluice_cluster_backlog_bytes",
                "outbox bytes of committed entries not yet published to the catalogue",
                i64::try_from(state.backlog_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            )?;
            counter(
                &mut encoder,
                "sluice_cluster_published_entries",
                "entries published to the catalogue by this process",
                state.published.load(Ordering::Relaxed),
            )?;
            counter(
                &mut encoder,
                "sluice_cluster_quarantined_instances",
                "instances quarantined because another node held their SOP Instance UID",
                state.demoted.load(Ordering::Relaxed),
            )?;
        }
        if let Some(objects) = &source.store.shared.objects {
            let counters = &objects.counters;
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            gauge(
                &mut encoder,
                "sluice_objects_store_reachable",
                "1 while the object store's last round succeeded; 0: sealed segments stay local",
                i64::from(counters.reachable.load(Ordering::Relaxed)),
            )?;
            gauge(
                &mut encoder,
                "sluice_objects_backlog_segments",
                "sealed segments not yet uploaded to the object store",
                i64::try_from(load(&counters.backlog_segments)).unwrap_or(i64::MAX),
            )?;
            for (name, help, value) in [
                (
                    "sluice_objects_uploaded_segments",
                    "segments uploaded to the object store and verified",
                    load(&counters.uploaded_segments),
                ),
                (
                    "sluice_objects_uploaded_bytes",
                    "bytes of segments uploaded to the object store and verified",
                    load(&counters.uploaded_bytes),
                ),
                (
                    "sluice_objects_evicted_segments",
                    "uploaded segments whose local file was evicted",
                    load(&counters.evicted_segments),
                ),
                (
                    "sluice_objects_failed_rounds",
                    "upload rounds that failed (retried)",
                    load(&counters.failed_rounds),
                ),
                (
                    "sluice_objects_fetched_records",
                    "records of evicted segments fetched from the object store",
                    load(&counters.fetched_records),
                ),
                (
                    "sluice_objects_failed_fetches",
                    "fetches of records of evicted segments that failed",
                    load(&counters.failed_fetches),
                ),
            ] {
                counter(&mut encoder, name, help, value)?;
            }
        }
        let (prepared, fallocated) = source
            .segment_preparer
            .get()
            .map_or((0, 0), |preparer| preparer.counts());
        family(
            &mut encoder,
            (
                "sluice_segments_created",
                "Segments the cores opened with storage.segment_zero_fill auto or on: prepared (allocated ahead, written with zeros as far as the pacing reached), or fallocated by the core because none was ready",
                MetricType::Counter,
            ),
            "kind",
            [("prepared", prepared), ("fallocated", fallocated)],
        )?;
        let compaction = &source.compaction;
        for (name, help, counted) in [
            (
                "sluice_compaction_passes",
                "online compaction passes run (surveys that found candidates)",
                &compaction.passes,
            ),
            (
                "sluice_compaction_copied_bytes",
                "bytes of live records online compaction copied into new segments",
                &compaction.copied_bytes,
            ),
            (
                "sluice_compaction_relocated_records",
                "live records online compaction switched to their copies",
                &compaction.relocated_records,
            ),
            (
                "sluice_compaction_deleted_segments",
                "segments online compaction deleted (nothing live left in them)",
                &compaction.deleted_segments,
            ),
            (
                "sluice_compaction_freed_bytes",
                "bytes of the segments online compaction deleted",
                &compaction.freed_bytes,
            ),
            (
                "sluice_compaction_errors",
                "online compaction passes that failed, and damaged records it left",
                &compaction.errors,
            ),
            (
                "sluice_compaction_refused_records",
                "records online compaction copied whose entry changed before the switch",
                &compaction.refused,
            ),
        ] {
            counter(&mut encoder, name, help, counted.load(Ordering::Relaxed))?;
        }
        gauge(
            &mut encoder,
            "sluice_compaction_last_pass_unix_seconds",
            "when the last online compaction pass ended (0: none yet)",
            i64::try_from(compaction.last_pass_unix_s.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "sluice_store_refusing",
            "1 while the store refuses every C-STORE after repeated durability failures",
            i64::from(source.store.is_refusing()),
        )?;

        // ----- associations and requests -----
        gauge(
            &mut encoder,
            "sluice_associations_open",
            "Inbound associations established now",
            i64::from(source.established.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut encoder,
            "sluice_associations_accepted",
            "Inbound associations accepted",
            cores
                .iter()
                .map(|core| core.associations_accepted())
                .sum::<u64>(),
        )?;
        {
            family(
                &mut encoder,
                (
                    "sluice_associations_rejected",
                    "Inbound associations rejected (A-ASSOCIATE-RJ), per reason",
                    MetricType::Counter,
                ),
                "reason",
                RejectedBecause::ALL.map(|because| {
                    (
                        because.label(),
                        cores
                            .iter()
                            .map(|core| core.associations_rejected(because))
                            .sum(),
                    )
                }),
            )?;
        }
        {
            family(
                &mut encoder,
                (
                    "sluice_dimse_requests",
                    "DIMSE requests received, per command",
                    MetricType::Counter,
                ),
                "command",
                Request::ALL.map(|request| {
                    (
                        request.label(),
                        cores.iter().map(|core| core.requests(request)).sum(),
                    )
                }),
            )?;
        }
        {
            family(
                &mut encoder,
                (
                    "sluice_retrieve_sub_operations",
                    "C-MOVE and C-GET sub-operations finished, per outcome",
                    MetricType::Counter,
                ),
                "outcome",
                SubOperation::ALL.map(|outcome| {
                    (
                        outcome.label(),
                        cores
                            .iter()
                            .map(|core| core.sub_operation_count(outcome))
                            .sum(),
                    )
                }),
            )?;
        }

        family(
            &mut encoder,
            (
                "sluice_store_spills",
                "Instances arriving on the segments layout written to a file instead of a record, per reason (record_max: past storage.segment_record_max; memory: past storage.record_memory_per_core; quarantine)",
                MetricType::Counter,
            ),
            "reason",
            SpillReason::ALL.map(|reason| {
                (
                    reason.label(),
                    cores.iter().map(|core| core.spills(reason)).sum(),
                )
            }),
        )?;

        counter(
            &mut encoder,
            "sluice_retrieve_chunks_deferred",
            "C-MOVE/C-GET send chunks held back to the next 10 ms because ingest was waiting and retrieval had used its share (query.retrieve_share_under_ingest)",
            cores
                .iter()
                .map(|core| core.retrieve_chunks_deferred())
                .sum::<u64>(),
        )?;

        let (receives, bytes) = summed_pairs(cores, CoreMetrics::receives_into_record);
        counter(
            &mut encoder,
            "sluice_receives_into_record",
            "Receives of a data-set PDV's rest straight into its record buffer (segments layout, no copy)",
            receives,
        )?;
        counter(
            &mut encoder,
            "sluice_bytes_received_into_record",
            "Data-set bytes received straight into record buffers (the rest arrive in the receive pool and are copied)",
            bytes,
        )?;
        let (registered, plain) = summed_pairs(cores, CoreMetrics::record_writes);
        counter(
            &mut encoder,
            "sluice_record_writes_registered",
            "Record writes (segments layout) from buffers registered with the core's io_uring: their pages are not pinned per write",
            registered,
        )?;
        counter(
            &mut encoder,
            "sluice_record_writes_plain",
            "Record writes (segments layout) from buffers not registered (the portable backend, RLIMIT_MEMLOCK reached, a buffer over 16 MiB): their pages are pinned per write",
            plain,
        )?;
        let (spliced, copied) = summed_pairs(cores, CoreMetrics::retrieve_data_sets);
        counter(
            &mut encoder,
            "sluice_retrieve_data_sets_spliced",
            "C-MOVE/C-GET data sets sent from the file to the socket by splice (no copy in user space; query.retrieve_send)",
            spliced,
        )?;
        counter(
            &mut encoder,
            "sluice_retrieve_data_sets_copied",
            "C-MOVE/C-GET data sets read into send buffers and sent from them (query.retrieve_send = copy, TLS, the portable backend, transcoding, a splice refused)",
            copied,
        )?;

        // ----- queues -----
        {
            family(
                &mut encoder,
                (
                    "sluice_queue_depth",
                    "Messages waiting in the server's internal queues",
                    MetricType::Gauge,
                ),
                "queue",
                [
                    (
                        "index_writer",
                        source.store.index().writer().queued() as u64,
                    ),
                    ("commitment_tracker", source.tracker.queued() as u64),
                    ("removals_owed", source.in_doubt.owed_count() as u64),
                ],
            )?;
        }

        // ----- the machine -----
        if let Some(backend) = metrics.backend.get() {
            let mut metric = encoder.encode_descriptor(
                "sluice_io_backend",
                "The I/O backend that runs (io_uring or portable)",
                None,
                MetricType::Info,
            )?;
            metric.encode_info(&[("backend", backend.as_str())].as_slice())?;
        }
        let floor = source.store.config().storage.free_space_floor;
        if let Some(free) = free_bytes(source) {
            gauge(
                &mut encoder,
                "sluice_free_space_bytes",
                "Bytes free to an unprivileged user in the data directory's file system",
                to_i64(free),
            )?;
        }
        gauge(
            &mut encoder,
            "sluice_free_space_floor_bytes",
            "storage.free_space_floor: C-STOREs are refused (A711) below it",
            to_i64(floor),
        )?;
        counter(
            &mut encoder,
            "sluice_audit_messages_dropped",
            "Audit events dropped ([audit]): the audit queue was full, or a message could not be written",
            source.audit.dropped(),
        )?;
        gauge(
            &mut encoder,
            "sluice_ready",
            "1 while /readyz answers 200 (accepting stores)",
            i64::from(not_ready_because(source).is_none()),
        )?;

        // ----- index -----
        match source.store.index().stats() {
            Ok(stats) => {
                family(
                    &mut encoder,
                    (
                        "sluice_index_entries",
                        "Entries per index table (instances: `instances`; quarantined: `quarantine`)",
                        MetricType::Gauge,
                    ),
                    "table",
                    stats.tables.iter().map(|table| (table.name, table.entries)),
                )?;
                gauge(
                    &mut encoder,
                    "sluice_index_file_bytes",
                    "The LMDB data file's size on disk",
                    to_i64(stats.file_size_bytes),
                )?;
                gauge(
                    &mut encoder,
                    "sluice_index_used_bytes",
                    "LMDB bytes up to the last page in use",
                    to_i64(stats.used_bytes),
                )?;
                gauge(
                    &mut encoder,
                    "sluice_index_map_size_bytes",
                    "storage.index_map_size: the most the LMDB file may grow to",
                    to_i64(stats.map_size_bytes),
                )?;
                gauge(
                    &mut encoder,
                    "sluice_index_sop_index_bytes",
                    "The SOP index's (LSM tree) bytes on disk",
                    to_i64(stats.sop_index_bytes),
                )?;
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the index's statistics");
            }
        }

        // ----- storage commitment -----
        gauge(
            &mut encoder,
            "sluice_commitment_requests_pending",
            "Storage Commitment requests waiting for their instances",
            to_i64(source.tracker.pending_count() as u64),
        )?;
        let stats = source.tracker.stats();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        counter(
            &mut encoder,
            "sluice_commitment_requests_accepted",
            "Storage Commitment requests accepted (N-ACTION-RSP 0000)",
            load(&stats.requests_accepted),
        )?;
        {
            family(
                &mut encoder,
                (
                    "sluice_commitment_report_deliveries",
                    "Storage Commitment report deliveries (N-EVENT-REPORT), per outcome",
                    MetricType::Counter,
                ),
                "outcome",
                [
                    ("delivered", load(&stats.reports_delivered)),
                    ("refused", load(&stats.reports_refused)),
                    ("retry", load(&stats.deliveries_retried)),
                    ("given_up", load(&stats.reports_given_up)),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_get_of_the_three_paths_and_refuses_the_rest() {
        let get = |path: &str| {
            route(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
                false,
            )
        };
        assert_eq!(get("/metrics"), Some((Route::Metrics, false)));
        assert_eq!(get("/healthz"), Some((Route::Health, false)));
        assert_eq!(get("/readyz?verbose"), Some((Route::Ready, false)));
        assert_eq!(get("/"), Some((Route::NotFound, false)));
        assert_eq!(
            route(b"HEAD /readyz HTTP/1.1\r\n\r\n", false),
            Some((Route::Ready, true))
        );
        assert_eq!(
            route(
                b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Some((Route::MethodNotAllowed, false))
        );
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost:", false), None);
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost:", true),
            Some((Route::HeadTooLarge, false))
        );
        assert_eq!(
            route(b"\x00\x01 nonsense\r\n\r\n", false),
            Some((Route::BadRequest, false))
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut registry = Registry::default();
        #[derive(Debug)]
        struct One;
        impl Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                let mut family = encoder.encode_descriptor("x", "x", None, MetricType::Counter)?;
                let labels = [("calling_ae", Escaped("A\"B\\C\nD"))];
                ConstCounter::new(1u64).encode(family.encode_family(&labels.as_slice())?)
            }
        }
        registry.register_collector(Box::new(One));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"x_total{calling_ae="A\"B\\C\nD"} 1"#),
            "{text}"
        );
    }
}
