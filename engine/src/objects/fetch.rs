//! The fetcher: records of evicted segments fetched into the read-through
//! cache off the caller's thread, so an io core sending a C-MOVE or C-GET
//! never waits for the object store (docs/design/scale-out.md, "Reads off
//! the io cores").
//!
//! At most `objects.fetch_threads` threads (started at the first fetch)
//! take requests from one queue; each runs [`super::cached_record`] (a
//! ranged GET, its check, the cache file written) and hands the outcome to
//! every caller waiting for that record: requests for a record already
//! being fetched join its fetch instead of starting another. A failure is
//! logged here, once per fetch, with the object key and the store's error;
//! the callers get its text (a sub-operation's Error Comment).
//!
//! Callers pass a completion ([`Done`]) that must not block: the C-MOVE and
//! C-GET sender's puts the outcome in its core's queue and wakes the core
//! through its mailbox (`scp::fetched`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sluice_index::{RecordPlace, SegmentObject, Triplet};

use super::Objects;
use crate::store::layout::Layout;

/// What a caller is told when its record is fetched: the cache file, or
/// why it could not be had.
pub(crate) type Done = Box<dyn FnOnce(&Result<PathBuf, String>) + Send>;

/// One record to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictedRecord {
    /// The evicted segment's object.
    pub object: SegmentObject,
    /// The record's place in the segment (and so in the object).
    pub place: RecordPlace,
}

/// A request on the queue: the record, and what the thread needs to fetch
/// it (the object store, the data directory's layout).
struct Job {
    objects: Arc<Objects>,
    layout: Layout,
    record: EvictedRecord,
    triplet: Triplet,
    path: PathBuf,
}

/// The fetcher of one object store (held in [`Objects`]).
pub(crate) struct Fetcher {
    threads_max: usize,
    /// The queue's sending end (made, and the threads started, at the
    /// first fetch; dropped with the object store, which ends them).
    queue: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    /// The records being fetched (by cache file), with their callers.
    in_flight: Arc<Mutex<HashMap<PathBuf, Vec<Done>>>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("threads_max", &self.threads_max)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub(crate) fn new(threads_max: usize) -> Fetcher {
        assert!(threads_max >= 1, "a fetcher with no thread");
        Fetcher {
            threads_max,
            queue: Mutex::new(None),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl Objects {
    /// Fetches `record` (of the instance `triplet`) into the read-through
    /// cache on a fetcher thread, then calls `done` there; joins the fetch
    /// of the same record if one is under way. Never blocks on the store.
    pub(crate) fn fetch(
        self: &Arc<Self>,
        layout: &Layout,
        record: &EvictedRecord,
        triplet: &Triplet,
        done: Done,
    ) {
        let fetcher = &self.fetcher;
        let path = super::cache::cache_path(layout, &record.place);
        {
            let mut in_flight = fetcher
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(waiting) = in_flight.get_mut(&path) {
                waiting.push(done);
                return;
            }
            in_flight.insert(path.clone(), vec![done]);
        }
        let job = Job {
            objects: Arc::clone(self),
            layout: layout.clone(),
            record: record.clone(),
            triplet: triplet.clone(),
            path: path.clone(),
        };
        if let Err(reason) = fetcher.submit(job) {
            tracing::error!(%reason, "cannot fetch a record of an evicted segment");
            finish(&fetcher.in_flight, &path, &Err(reason));
        }
    }
}

impl Fetcher {
    /// Queues `job` (the threads are started at the first).
    fn submit(&self, job: Job) -> Result<(), String> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = match &mut *queue {
            Some(sender) => sender,
            None => {
                let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
                for _ in 0..self.threads_max {
                    let receiver = receiver.clone();
                    let in_flight = Arc::clone(&self.in_flight);
                    std::thread::Builder::new()
                        .name("objects-fetch".to_owned())
                        .spawn(move || run(&receiver, &in_flight))
                        .map_err(|error| format!("cannot start a fetcher thread: {error}"))?;
                }
                queue.insert(sender)
            }
        };
        sender
            .send(job)
            .map_err(|_| "the fetcher threads are gone".to_owned())
    }
}

/// A fetcher thread: fetches until the queue's sending end is dropped (with
/// the object store).
fn run(
    receiver: &crossbeam_channel::Receiver<Job>,
    in_flight: &Mutex<HashMap<PathBuf, Vec<Done>>>,
) {
    while let Ok(job) = receiver.recv() {
        let started = std::time::Instant::now();
        let result = super::cached_record(
            &job.objects,
            &job.layout,
            &job.record.object,
            &job.record.place,
            &job.triplet,
        )
        .map_err(|error| {
            tracing::warn!(
                key = %job.record.object.key,
                offset = job.record.place.offset,
                sop_instance_uid = %job.triplet.sop_instance_uid,
                %error,
                "cannot fetch a record of an evicted segment from the object store"
            );
            job.objects
                .counters
                .failed_fetches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("cannot fetch the record from the object store: {error}")
        });
        tracing::debug!(
            key = %job.record.object.key,
            offset = job.record.place.offset,
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "record fetch ended"
        );
        debug_assert!(
            !matches!(&result, Ok(path) if *path != job.path),
            "the fetch wrote another cache file than the one it was asked for"
        );
        finish(in_flight, &job.path, &result);
    }
}

/// Hands `result` to every caller waiting for the record at `path`.
fn finish(
    in_flight: &Mutex<HashMap<PathBuf, Vec<Done>>>,
    path: &PathBuf,
    result: &Result<PathBuf, String>,
) {
    let waiting = in_flight
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(path);
    let Some(waiting) = waiting else {
        unreachable!("a fetch ended that nobody waited for: {}", path.display());
    };
    for done in waiting {
        done(result);
    }
}
