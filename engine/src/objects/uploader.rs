//! The uploader: sealed segments to the object store, verified, recorded,
//! evicted. One round ([`Uploader::run_once`]) reads the index and acts on
//! what it says, so the thread ([`UploaderThread`]) holds no state the
//! index does not (but when an evicted file may be deleted), and resumes
//! after a restart where the index left off:
//!
//! 1. every sealed segment without an object is uploaded (multipart, each
//!    part checked by the store against its Content-MD5), verified (each
//!    part's ETag, the object's multipart ETag and size by HEAD), then
//!    recorded (`WriteOp::SegmentUploaded`);
//! 2. uploaded segments not evicted are evicted under `objects.evict`
//!    (oldest id first): `WriteOp::SegmentEvicted` commits, and from then
//!    on readers fetch the segment's records from the store;
//! 3. the local file of an evicted segment is deleted once
//!    `objects.evict_grace_ms` has passed since this process saw it
//!    evicted (a reader that located a record before the eviction still
//!    finds the file meanwhile).
//!
//! A failed round is retried after `objects.retry_interval_ms`; a store
//! outage is logged once when it starts and once when it ends.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_index::{SegmentObject, WriteOp};

use super::{Objects, ObjectsError};
use crate::config::EvictPolicy;
use crate::store::Store;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Round {
    /// Segments uploaded and verified.
    pub uploaded: u64,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Segments recorded as evicted.
    pub evicted: u64,
    /// Local files of evicted segments deleted.
    pub deleted: u64,
    /// Sealed segments still not uploaded after the round.
    pub backlog: u64,
}

/// Uploads a store's sealed segments (`[objects]`).
#[derive(Debug)]
pub struct Uploader {
    store: Store,
    objects: Arc<Objects>,
    /// When this process first saw each evicted segment whose file is
    /// still there.
    evicted_seen: HashMap<u64, Instant>,
    /// Sealed segments whose file is missing, already logged.
    missing_warned: std::collections::HashSet<u64>,
}

impl Uploader {
    /// The uploader of `store`, or `None` when its configuration has no
    /// object store.
    pub fn new(store: &Store) -> Option<Uploader> {
        let objects = store.shared.objects.clone()?;
        Some(Uploader {
            store: store.clone(),
            objects,
            evicted_seen: HashMap::new(),
            missing_warned: std::collections::HashSet::new(),
        })
    }

    /// One round: upload, verify and record every sealed segment not yet
    /// uploaded, evict under the policy, delete evicted files past their
    /// grace. Stops at the first failure (the next round starts over).
    pub fn run_once(&mut self) -> Result<Round, ObjectsError> {
        let mut round = Round::default();
        let layout = self.store.layout().clone();
        let (pending, mut uploaded) = {
            let read = self.store.index().read()?;
            let objects: HashMap<u64, SegmentObject> =
                read.segment_objects()?.into_iter().collect();
            let pending: Vec<u64> = read
                .segments()?
                .into_iter()
                .filter(|(id, state)| state.sealed && !objects.contains_key(id))
                .map(|(id, _)| id)
                .collect();
            (pending, objects)
        };
        round.backlog = pending.len() as u64;
        self.objects
            .counters
            .backlog_segments
            .store(round.backlog, Ordering::Relaxed);
        for segment in pending {
            let path = layout.segment_path(segment);
            let size_bytes = match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                // A sealed segment without its file (lost, or sealed
                // before any record reached it) cannot be uploaded: said
                // once, skipped, the others go on.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if self.missing_warned.insert(segment) {
                        tracing::warn!(segment = %format!("{segment:016x}"), path = %path.display(), "a sealed segment's file is missing: it cannot be uploaded");
                    }
                    continue;
                }
                Err(source) => {
                    return Err(ObjectsError::Io {
                        operation: "stat the sealed segment",
                        path,
                        source,
                    })
                }
            };
            let key = self.objects.key_of(segment);
            let started = Instant::now();
            self.objects.client.upload_file(&key, &path, size_bytes)?;
            let object = SegmentObject {
                key: key.clone(),
                size_bytes,
                evicted: false,
            };
            self.store
                .index()
                .writer()
                .execute(vec![WriteOp::SegmentUploaded {
                    segment,
                    object: object.clone(),
                }])?
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!("one operation, one result"))?;
            tracing::info!(
                segment = %format!("{segment:016x}"),
                key = %key,
                bytes = size_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "segment uploaded to the object store and verified"
            );
            uploaded.insert(segment, object);
            let counters = &self.objects.counters;
            counters.uploaded_segments.fetch_add(1, Ordering::Relaxed);
            counters
                .uploaded_bytes
                .fetch_add(size_bytes, Ordering::Relaxed);
            counters
                .backlog_segments
                .store(round.backlog - 1, Ordering::Relaxed);
            round.uploaded += 1;
            round.uploaded_bytes += size_bytes;
            round.backlog -= 1;
        }
        // Eviction, oldest segment first.
        let mut candidates: Vec<u64> = uploaded
            .iter()
            .filter(|(_, object)| !object.evicted)
            .map(|(id, _)| *id)
            .collect();
        candidates.sort_unstable();
        // The files of evicted segments waiting for their grace count as
        // freed: they go soon, and the policy must not evict more for them.
        let mut freeing: u64 = uploaded
            .iter()
            .filter(|(id, object)| object.evicted && layout.segment_path(**id).exists())
            .map(|(_, object)| object.size_bytes)
            .sum();
        for segment in candidates {
            if !self.should_evict(freeing) {
                break;
            }
            self.store
                .index()
                .writer()
                .execute(vec![WriteOp::SegmentEvicted(segment)])?
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!("one operation, one result"))?;
            tracing::info!(segment = %format!("{segment:016x}"), "segment evicted: its records are read from the object store");
            if let Some(object) = uploaded.get_mut(&segment) {
                object.evicted = true;
                freeing += object.size_bytes;
            }
            self.objects
                .counters
                .evicted_segments
                .fetch_add(1, Ordering::Relaxed);
            round.evicted += 1;
        }
        round.deleted += self.delete_evicted(&uploaded)?;
        Ok(round)
    }

    /// Deletes the local files of evicted segments past their grace.
    fn delete_evicted(
        &mut self,
        objects: &HashMap<u64, SegmentObject>,
    ) -> Result<u64, ObjectsError> {
        let layout = self.store.layout();
        let mut deleted = 0;
        for (segment, object) in objects {
            if !object.evicted {
                continue;
            }
            let path = layout.segment_path(*segment);
            if !path.exists() {
                self.evicted_seen.remove(segment);
                continue;
            }
            let seen = *self
                .evicted_seen
                .entry(*segment)
                .or_insert_with(Instant::now);
            if seen.elapsed() < self.objects.evict_grace {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    deleted += 1;
                    self.evicted_seen.remove(segment);
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ObjectsError::Io {
                        operation: "delete the evicted segment",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(deleted)
    }

    /// Whether the policy wants one more segment evicted now, `freeing`
    /// bytes of evicted files about to be deleted.
    fn should_evict(&self, freeing: u64) -> bool {
        match self.objects.evict {
            EvictPolicy::Never => false,
            EvictPolicy::AfterUpload => true,
            EvictPolicy::WhenDiskAbove => disk_used_percent(self.store.layout().root(), freeing)
                .is_some_and(|used| used > f64::from(self.objects.evict_disk_above_percent)),
        }
    }

    /// Starts the uploader's thread (`sluice serve`), or returns `None`
    /// when the store has no object store.
    pub fn start(store: &Store) -> std::io::Result<Option<UploaderThread>> {
        let Some(mut uploader) = Uploader::new(store) else {
            return Ok(None);
        };
        let (stop, stop_receiver) = crossbeam_channel::bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("objects-upload".to_owned())
            .spawn(move || uploader.run(&stop_receiver))?;
        Ok(Some(UploaderThread { stop, handle }))
    }

    fn run(&mut self, stop: &crossbeam_channel::Receiver<()>) {
        let mut failing = false;
        loop {
            let result = self.run_once();
            let counters = &self.objects.counters;
            counters.reachable.store(
                !matches!(&result, Err(error) if error.is_store_outage()),
                Ordering::Relaxed,
            );
            if result.is_err() {
                counters.failed_rounds.fetch_add(1, Ordering::Relaxed);
            }
            let wait = match result {
                Ok(round) => {
                    if failing {
                        tracing::info!("the object store works again; uploads go on");
                        failing = false;
                    }
                    if round.uploaded + round.evicted + round.deleted > 0 {
                        tracing::debug!(?round, "object store round");
                    }
                    self.objects.upload_interval
                }
                Err(error) => {
                    if !failing {
                        tracing::error!(%error, "the object store round failed: sealed segments stay local and are uploaded when it works again (ingest goes on)");
                        failing = true;
                    }
                    self.objects.retry_interval
                }
            };
            if wait_or_stop(stop, wait) {
                return;
            }
        }
    }
}

/// True when asked to stop (or when the sender is gone).
fn wait_or_stop(stop: &crossbeam_channel::Receiver<()>, wait: Duration) -> bool {
    !matches!(
        stop.recv_timeout(wait),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    )
}

/// The percentage of the file system's blocks in use under `path`, less
/// `freeing` bytes.
fn disk_used_percent(path: &std::path::Path, freeing: u64) -> Option<f64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    if stats.f_blocks == 0 || stats.f_frsize == 0 {
        return None;
    }
    let used = stats
        .f_blocks
        .saturating_sub(stats.f_bfree)
        .saturating_sub(freeing / stats.f_frsize);
    Some(used as f64 * 100.0 / stats.f_blocks as f64)
}

/// The uploader's running thread (`sluice serve`).
#[derive(Debug)]
pub struct UploaderThread {
    stop: crossbeam_channel::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl UploaderThread {
    /// Stops the thread after its current request (an upload in progress
    /// runs to its end or its timeout: the next start uploads it again).
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.handle.join().is_err() {
            tracing::error!("the object store uploader panicked");
        }
    }
}
