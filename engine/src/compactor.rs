//! Online compaction: `sluice serve`'s background thread that reclaims the
//! dead bytes of sealed segments while ingest runs (docs/design/segments.md,
//! "Compaction", has the design and why each crash point is safe;
//! docs/operations.md how an operator paces and watches it).
//!
//! Every [`SURVEY_INTERVAL`] the thread surveys the sealed segments with
//! the offline command's rule (`crate::cli::compact::survey`:
//! `storage.compaction_dead_percent` and `storage.compaction_dead_min`, or
//! nothing live; never an unsealed segment, so never one a core appends to
//! or a job holds a record in; never one uploaded to the object store) and
//! runs the offline command's pass over the candidates
//! (`crate::cli::compact::pass`): segments with nothing live deleted
//! first, live records copied at `storage.compaction_rate_mib_s` into new
//! segments (ids from the cores' shared counter), flushed, switched by one
//! `WriteOp::Relocate` batch per index transaction through the index's
//! one writer thread (ingest's batches and the compactor's share its group
//! commits: a core never waits on the compactor beyond one commit), then
//! each old segment deleted. Readers that resolved a place before a switch
//! and open it after the deletion look the record up again
//! (`crate::store::open_relocating`, the Q/R sender's `Transfer::reopen`).
//!
//! The thread is not an io core: it blocks on reads, `fdatasync` and the
//! writer's answers. A failed pass is logged and counted; the next survey
//! tries again (what a pass switched stays switched; copies it made that no
//! entry names are dead bytes of a sealed segment, compacted later).
//!
//! Off when the rate is 0, on the files layout, and with an object store
//! configured (`[objects]`): the uploader may be reading a sealed segment
//! the survey sees as not yet uploaded, and compacting uploaded segments
//! belongs with the uploader's lifecycle (docs/design/segments.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::cli::compact::{self, Hooks, Settings, Tally};
use crate::cli::relocation::Parts;
use crate::cluster::{Cluster, Places};
use crate::scp::SegmentIds;
use crate::store::Store;

/// How often the sealed segments are surveyed (a read transaction and a
/// `stat` per sealed segment: thousands per terabyte).
pub(crate) const SURVEY_INTERVAL: Duration = Duration::from_secs(2);

/// Live records switched per index transaction: a batch's `Relocate`s are
/// cheap to apply (a location row and two segment rows each), so a group
/// commit that carries one stays short; small enough that a stop waits
/// little for the batch in hand.
const BATCH: usize = 64;

/// What the compactor did since the server started (the metrics endpoint's
/// `sluice_compaction_*`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) passes: AtomicU64,
    pub(crate) copied_bytes: AtomicU64,
    pub(crate) relocated_records: AtomicU64,
    pub(crate) deleted_segments: AtomicU64,
    pub(crate) freed_bytes: AtomicU64,
    /// Passes that stopped on an error, plus records left damaged.
    pub(crate) errors: AtomicU64,
    /// Switches the index refused (the entry replaced or purged since the
    /// copy was read: ingest under `replace` does that meanwhile).
    pub(crate) refused: AtomicU64,
    /// When the last pass ended, in seconds since the Unix epoch (0: none
    /// yet).
    pub(crate) last_pass_unix_s: AtomicU64,
}

impl Counters {
    /// Adds what `now` counts past `counted` (a pass's tally as it grows).
    fn add(&self, now: &Tally, counted: &mut Tally) {
        let add = |counter: &AtomicU64, now: u64, counted: u64| {
            counter.fetch_add(now.saturating_sub(counted), Ordering::Relaxed)
        };
        add(&self.copied_bytes, now.copied_bytes, counted.copied_bytes);
        add(&self.relocated_records, now.moved, counted.moved);
        add(&self.deleted_segments, now.deleted, counted.deleted);
        add(&self.freed_bytes, now.freed_bytes, counted.freed_bytes);
        add(&self.errors, now.damaged, counted.damaged);
        add(&self.refused, now.refused, counted.refused);
        *counted = *now;
    }
}

/// The running compactor; [`CompactorThread::stop`] ends it.
#[derive(Debug)]
pub(crate) struct CompactorThread {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl CompactorThread {
    /// Stops the thread: a pass in hand ends after its current batch (its
    /// copies flushed, its switch committed, its emptied segments
    /// deleted), then the thread is joined.
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the compactor thread panicked");
        }
    }
}

/// Starts the compactor when the configuration asks for it (`None`: off,
/// and why is logged once).
pub(crate) fn start(
    store: &Store,
    ids: Option<Arc<SegmentIds>>,
    counters: Arc<Counters>,
    cluster: Option<Cluster>,
) -> std::io::Result<Option<CompactorThread>> {
    let storage = &store.config().storage;
    let rate_mib_s = storage.compaction_rate_mib_s;
    let Some(ids) = ids else {
        // The files layout: nothing to compact.
        return Ok(None);
    };
    if rate_mib_s == 0 {
        tracing::info!("online compaction off (storage.compaction_rate_mib_s = 0)");
        return Ok(None);
    }
    if store.shared.objects.is_some() {
        tracing::info!(
            "online compaction off: an object store is configured ([objects]); \
             `sluice compact` offline compacts the segments not uploaded"
        );
        return Ok(None);
    }
    let settings = Settings {
        dead_percent: storage.compaction_dead_percent,
        dead_min: storage.compaction_dead_min,
        batch: BATCH,
        segment_bytes: u64::from(storage.segment_size_mib) << 20,
        rate_bytes_per_second: u64::from(rate_mib_s) << 20,
        dry_run: false,
    };
    let (stop, stopped) = crossbeam_channel::bounded(0);
    let store = store.clone();
    let thread = std::thread::Builder::new()
        .name("sluice-compactor".into())
        .spawn(move || {
            let places = cluster.map(Places::Serving);
            run(
                &store,
                (&ids, places.as_ref()),
                settings,
                &counters,
                &stopped,
            );
        })?;
    tracing::info!(
        rate_mib_s,
        dead_percent = settings.dead_percent,
        dead_min = settings.dead_min,
        "online compaction on"
    );
    Ok(Some(CompactorThread { stop, thread }))
}

/// The thread: a survey every [`SURVEY_INTERVAL`], a pass when it finds
/// candidates, until the stop signal.
fn run(
    store: &Store,
    (ids, places): (&SegmentIds, Option<&Places>),
    settings: Settings,
    counters: &Counters,
    stopped: &Receiver<()>,
) {
    let parts = Parts {
        layout: store.layout(),
        index: store.index(),
        ids: Some(ids),
        places,
    };
    loop {
        if wait(stopped, SURVEY_INTERVAL) {
            return;
        }
        let survey = match compact::survey(parts, &settings) {
            Ok(survey) => survey,
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "online compaction: cannot survey the segments");
                continue;
            }
        };
        if survey.candidates.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut hooks = Logged {
            stopped,
            counters,
            counted: Tally::default(),
        };
        let result = compact::pass(
            parts,
            &settings,
            &survey.candidates,
            (&mut tally, &mut hooks),
        );
        counters.add(&tally, &mut hooks.counted);
        counters.passes.fetch_add(1, Ordering::Relaxed);
        counters.last_pass_unix_s.store(
            crate::clock::unix_now_ns() / 1_000_000_000,
            Ordering::Relaxed,
        );
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => tracing::info!(
                candidates = survey.candidates.len(),
                deleted_segments = tally.deleted,
                freed_bytes = tally.freed_bytes,
                relocated_records = tally.moved,
                copied_bytes = tally.copied_bytes,
                damaged = tally.damaged,
                refused = tally.refused,
                seconds,
                "online compaction pass"
            ),
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    deleted_segments = tally.deleted,
                    relocated_records = tally.moved,
                    seconds,
                    "online compaction pass stopped (the next survey tries again)"
                );
            }
        }
    }
}

/// Waits `duration` for the stop signal; true once it came (the sender
/// dropped).
fn wait(stopped: &Receiver<()>, duration: Duration) -> bool {
    match stopped.recv_timeout(duration) {
        Err(RecvTimeoutError::Timeout) => false,
        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
    }
}

/// A pass's lines as log events, its counts into the metrics as they
/// grow; its pacing waits on the stop signal.
struct Logged<'a> {
    stopped: &'a Receiver<()>,
    counters: &'a Counters,
    /// What the metrics count of this pass so far.
    counted: Tally,
}

impl Hooks for Logged<'_> {
    fn progress(&mut self, line: String) {
        tracing::debug!("online {line}");
    }

    fn problem(&mut self, line: String) {
        tracing::warn!("online compaction: {line}");
    }

    fn refused(&mut self, line: String) {
        tracing::debug!("online compaction: {line} (changed since it was read)");
    }

    fn wait(&mut self, ahead: Duration, tally: &Tally) -> bool {
        self.counters.add(tally, &mut self.counted);
        wait(self.stopped, ahead)
    }
}
