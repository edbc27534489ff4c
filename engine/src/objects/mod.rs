//! The object store (`[objects]`, docs/design/scale-out.md, "Object
//! store"): sealed segments uploaded to an S3-compatible store, verified
//! there, their local files evicted under a space policy, and the records
//! of evicted segments read back with ranged GETs.
//!
//! What it owns:
//! - the S3 requests (`client`: multipart upload with a Content-MD5 per
//!   part, HEAD, ranged GET; signed by rusty-s3, sent by a blocking ureq
//!   agent);
//! - the uploader (`uploader`, [`Uploader`]): one std thread in `sluice
//!   serve` that finds sealed segments the index does not record as
//!   uploaded, uploads and verifies each, records it
//!   (`WriteOp::SegmentUploaded`), evicts under `objects.evict`
//!   (`WriteOp::SegmentEvicted`, then the file deleted after
//!   `objects.evict_grace_ms`); it keeps no state the index does not, so it
//!   resumes after a restart, and nothing on the ingest path waits for it;
//! - the read-through cache (`cache`): a record of an evicted segment is
//!   fetched with one ranged GET, checked against its header (the instance
//!   it names, the payload's checksum), and kept as a file of its own under
//!   `<data>/cache/`, which every reader then reads by path and range like
//!   a segment (`store::source`);
//! - the fetcher (`fetch`): at most `objects.fetch_threads` threads that
//!   fetch records into the cache for the io cores (a C-MOVE or C-GET
//!   sender), so a slow store never holds a core; concurrent requests for
//!   one record share its fetch.
//!
//! Architecture invariant: object keys come from the configuration and the
//! segment id, never from peer data; a segment is evicted only once the
//! index records it sealed and its object verified.

mod cache;
mod client;
mod fetch;
mod uploader;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use cache::{cache_path, cached_record};
pub use fetch::EvictedRecord;
pub use uploader::{Round, Uploader, UploaderThread};

use crate::config::{Config, EvictPolicy};

/// An object store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectsError {
    /// `[objects]` is incomplete or its secret unreadable.
    #[error("object store configuration: {0}")]
    Config(String),
    /// The store could not be reached, or the exchange broke.
    #[error("cannot {operation} {key} in the object store: {source}")]
    Http {
        /// What was being done.
        operation: &'static str,
        /// The object.
        key: String,
        /// Why.
        source: Box<ureq::Error>,
    },
    /// The store answered with an error status.
    #[error("cannot {operation} {key} in the object store: status {status}: {body}")]
    Status {
        /// What was being done.
        operation: &'static str,
        /// The object.
        key: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The store's answer could not be understood.
    #[error("cannot {operation} {key} in the object store: {detail}")]
    Answer {
        /// What was being done.
        operation: &'static str,
        /// The object.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// The bytes in the store are not what was uploaded, or a fetched
    /// record is not the one the index names.
    #[error("object {key} failed verification: {detail}")]
    Verify {
        /// The object.
        key: String,
        /// What differs.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("cannot {operation} {}: {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The index could not be read or written.
    #[error("index: {0}")]
    Index(#[from] sluice_index::IndexError),
    /// The index refused a write (a segment not sealed, or not uploaded).
    #[error("the index refused: {0}")]
    Refused(#[from] sluice_index::InvalidInput),
}

impl ObjectsError {
    /// Whether the store itself failed (unreachable, or answering errors),
    /// rather than a local file or the index.
    pub fn is_store_outage(&self) -> bool {
        matches!(
            self,
            ObjectsError::Http { .. } | ObjectsError::Status { .. } | ObjectsError::Answer { .. }
        )
    }
}

/// The object store as a store handle holds it: the client, the settings
/// the uploader and the cache need, and the cache's running size.
#[derive(Debug)]
pub(crate) struct Objects {
    pub(crate) client: client::Client,
    /// `<key_prefix>/<node>/`: every object key of this node starts with it.
    key_start: String,
    /// `<key_prefix>` without its trailing `/`: the other nodes' keys
    /// start with it and their node name.
    key_prefix: String,
    pub(crate) evict: EvictPolicy,
    pub(crate) evict_disk_above_percent: u32,
    pub(crate) evict_grace: std::time::Duration,
    pub(crate) upload_interval: std::time::Duration,
    pub(crate) retry_interval: std::time::Duration,
    pub(crate) cache_bytes_max: u64,
    /// What the cache holds, as far as this process knows (counted from
    /// a scan at the first fetch, then per fetch and trim).
    cache_bytes: AtomicU64,
    cache_scanned: std::sync::Once,
    /// What the uploader and the cache did, for the metrics endpoint.
    pub(crate) counters: Counters,
    /// Fetches records for the io cores (`objects.fetch_threads`).
    fetcher: fetch::Fetcher,
}

/// The object store's counters (`/metrics`: `sluice_objects_*`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) uploaded_segments: AtomicU64,
    pub(crate) uploaded_bytes: AtomicU64,
    pub(crate) evicted_segments: AtomicU64,
    pub(crate) failed_rounds: AtomicU64,
    /// Sealed segments not uploaded, as the last round left them.
    pub(crate) backlog_segments: AtomicU64,
    /// Records fetched from evicted segments into the cache.
    pub(crate) fetched_records: AtomicU64,
    /// Fetches of such records that failed (the store unreachable, or the
    /// bytes not the record the index names).
    pub(crate) failed_fetches: AtomicU64,
    /// 1 while the last round succeeded (0 during an outage).
    pub(crate) reachable: std::sync::atomic::AtomicBool,
}

impl Objects {
    /// The object store of `config`, or `None` without `objects.endpoint`.
    pub(crate) fn open(config: &Config) -> Result<Option<Objects>, ObjectsError> {
        let objects = &config.objects;
        if objects.endpoint.is_none() {
            return Ok(None);
        }
        let node = config
            .cluster
            .node_name
            .as_ref()
            .map_or("local", |name| name.as_str());
        Ok(Some(Objects {
            client: client::Client::new(objects)?,
            key_start: format!(
                "{}/{node}/",
                objects.key_prefix.as_str().trim_end_matches('/')
            ),
            key_prefix: objects.key_prefix.as_str().trim_end_matches('/').to_owned(),
            evict: objects.evict,
            evict_disk_above_percent: objects.evict_disk_above_percent,
            evict_grace: objects.evict_grace_ms,
            upload_interval: objects.upload_interval_ms,
            retry_interval: objects.upload_retry_interval_ms,
            cache_bytes_max: u64::from(objects.cache_size_mib) << 20,
            cache_bytes: AtomicU64::new(0),
            cache_scanned: std::sync::Once::new(),
            counters: Counters {
                reachable: std::sync::atomic::AtomicBool::new(true),
                ..Counters::default()
            },
            fetcher: fetch::Fetcher::new(objects.fetch_threads as usize),
        }))
    }

    /// Why uploads are not happening, while the store fails (for
    /// `/readyz`: the node still takes stores, sealed segments stay local).
    pub(crate) fn failing_because(&self) -> Option<String> {
        if self.counters.reachable.load(Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "object store unreachable: uploads fail, {} sealed segments wait locally",
            self.counters.backlog_segments.load(Ordering::Relaxed)
        ))
    }

    /// The object key of a segment: the configured prefix, the node, the
    /// segment id (never peer data).
    pub(crate) fn key_of(&self, segment: u64) -> String {
        format!("{}{segment:016x}.seg", self.key_start)
    }

    /// The object key of another node's segment (cluster mode: the nodes
    /// share the bucket and the prefix; docs/design/scale-out.md, "A holder
    /// down").
    pub(crate) fn key_of_node(&self, node: &str, segment: u64) -> String {
        format!("{}/{node}/{segment:016x}.seg", self.key_prefix)
    }

    /// The record at `place` of another node's uploaded segment, read
    /// straight from its object (one ranged GET) and checked: a valid
    /// header naming `triplet`, the payload's checksum. Its Part 10 bytes
    /// (the payload). The key is made from the configuration, `node` and
    /// the segment id, never taken from the caller.
    pub(crate) fn read_part10(
        &self,
        node: &str,
        place: &sluice_index::RecordPlace,
        triplet: &sluice_index::Triplet,
    ) -> Result<Vec<u8>, ObjectsError> {
        let key = self.key_of_node(node, place.segment);
        let (mut bytes, head) = cache::fetch_checked(self, &key, place, triplet)?;
        // Checked by `fetch_checked`: the payload lies inside the bytes.
        let start = usize::try_from(head.header_bytes).unwrap_or(usize::MAX);
        let end = usize::try_from(head.header_bytes.saturating_add(head.payload_bytes))
            .unwrap_or(usize::MAX);
        assert!(
            start <= end && end <= bytes.len(),
            "a checked record's payload lies outside it"
        );
        bytes.truncate(end);
        bytes.drain(..start);
        self.counters
            .fetched_records
            .fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }

    fn cache_bytes(&self) -> &AtomicU64 {
        &self.cache_bytes
    }

    fn add_cache_bytes(&self, bytes: u64) -> u64 {
        self.cache_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes
    }
}
