//! Segments whose blocks are written before any record goes in
//! (`storage.segment_zero_fill`; docs/design/segments.md, "Written
//! blocks").
//!
//! A segment made by `fallocate` alone has ext4 *unwritten* extents: the
//! first write into one converts it, so every group `fdatasync` after
//! writes into fresh blocks commits the journal on top of the device flush.
//! One background thread, the preparer, keeps for each core one segment
//! ready whose blocks were written with zeros and flushed
//! (`SegmentWriter::create_zeroed`) and whose name was made durable (its
//! directory fsynced). A core whose segment is full takes its prepared one
//! ([`SegmentPreparer::take`]: a lock held for a moment, no I/O) and the
//! preparer starts on the next; a core that finds none ready (the device
//! zeroes slower than the core fills segments, or the preparation failed)
//! creates one as before (`fallocate` only) and it is counted
//! ([`SegmentPreparer::counts`], `sluice_segments_created_total`).
//!
//! The zero writes never touch a segment a core writes records into: a
//! segment is handed out only once its zero writes and their flush are
//! done, and the preparer never sees it again, so a zero write can never
//! land over a record (no overlap by construction; the test
//! `a_taken_segment_is_never_written_by_the_preparer` checks it).
//!
//! At start `sluice serve` waits until each core has its first segment
//! ([`SegmentPreparer::wait_first`]) before the listeners open, so a run's
//! first instances go to written blocks too. At stop the unused prepared
//! segments are deleted ([`SegmentPreparer::stop`]); after a crash,
//! start-up recovery deletes them (a segment file with no index row and no
//! record: `recovery/segments.rs`), so they never pile up as empty sealed
//! segments.
//!
//! Space: a prepared segment is allocated before a core needs it, so each
//! core holds up to two segments' allocation (its open one and its next).
//! The preparer keeps to the free-space floor: it prepares nothing that
//! would leave less than `storage.free_space_floor` free, and a failed
//! allocation (`ENOSPC`) is tried again after [`RETRY_AFTER`]; meanwhile
//! the cores create their segments as before (and answer A711 when that
//! fails, as before).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::segments::SegmentIds;
use crate::store::layout::Layout;
use crate::store::segment::SegmentWriter;

/// How long the preparer waits before it tries a core's segment again
/// after a failure (a full disk, or the floor).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A segment ready for a core: written with zeros, flushed, its name
/// durable.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its id (its file is `Layout::segment_path(id)`).
    pub(crate) id: u64,
    /// Its writer, at append position 0.
    pub(crate) writer: SegmentWriter,
}

#[derive(Debug)]
struct State {
    /// Per core: the segment ready for it.
    ready: Vec<Option<Prepared>>,
    /// Per core: when its last preparation failed.
    failed_at: Vec<Option<Instant>>,
    /// Every core's first segment was tried once.
    first_round_done: bool,
    stopping: bool,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    ids: Arc<SegmentIds>,
    segment_bytes: u64,
    floor_bytes: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// Segments handed out prepared, and created by a core without one.
    handed_out: AtomicU64,
    fallocated: AtomicU64,
}

/// The preparer (see the module documentation).
#[derive(Debug)]
pub(crate) struct SegmentPreparer {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SegmentPreparer {
    /// Starts the preparer thread for `cores` cores, segments of
    /// `segment_bytes`, keeping `floor_bytes` free (0: no floor).
    pub(crate) fn start(
        layout: Layout,
        ids: Arc<SegmentIds>,
        segment_bytes: u64,
        floor_bytes: u64,
        cores: usize,
    ) -> std::io::Result<SegmentPreparer> {
        let inner = Arc::new(Inner {
            layout,
            ids,
            segment_bytes,
            floor_bytes,
            state: Mutex::new(State {
                ready: (0..cores).map(|_| None).collect(),
                failed_at: vec![None; cores],
                first_round_done: false,
                stopping: false,
            }),
            changed: Condvar::new(),
            handed_out: AtomicU64::new(0),
            fallocated: AtomicU64::new(0),
        });
        let running = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("sluice-segment-prep".into())
            .spawn(move || running.run())?;
        Ok(SegmentPreparer {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits until every core's first segment was prepared or tried (a
    /// failure is logged, and that core starts on a segment made as
    /// before); returns how many are ready.
    pub(crate) fn wait_first(&self) -> usize {
        let mut state = self.inner.lock();
        while !state.first_round_done && !state.stopping {
            state = self
                .inner
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.ready.iter().filter(|ready| ready.is_some()).count()
    }

    /// The segment prepared for `core`, if one is ready (the preparer then
    /// starts on its next). Never waits for I/O.
    pub(crate) fn take(&self, core: usize) -> Option<Prepared> {
        let mut state = self.inner.lock();
        let prepared = state.ready.get_mut(core).and_then(Option::take);
        if prepared.is_some() {
            self.inner.changed.notify_all();
        }
        prepared
    }

    /// Whether a segment is ready for `core` (its allocation already
    /// taken: the free-space floor need not count it again).
    pub(crate) fn is_ready(&self, core: usize) -> bool {
        self.inner
            .lock()
            .ready
            .get(core)
            .is_some_and(Option::is_some)
    }

    /// Counts a segment a core took prepared (`true`) or had to create
    /// without one (`false`).
    pub(crate) fn count(&self, prepared: bool) {
        let counter = if prepared {
            &self.inner.handed_out
        } else {
            &self.inner.fallocated
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Segments handed out prepared, and created by a core without one.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.inner.handed_out.load(Ordering::Relaxed),
            self.inner.fallocated.load(Ordering::Relaxed),
        )
    }

    /// Stops the preparer (a zero fill in progress is abandoned and its
    /// file removed) and deletes the prepared segments no core took: no
    /// record and no index row names them. Idempotent.
    pub(crate) fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.changed.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let unused: Vec<Prepared> = self
            .inner
            .lock()
            .ready
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        if unused.is_empty() {
            return;
        }
        for prepared in &unused {
            // A removal lost to a crash is done again by recovery.
            if let Err(error) = std::fs::remove_file(prepared.writer.path()) {
                tracing::warn!(segment = prepared.id, %error, "cannot remove an unused prepared segment; start-up recovery will");
            }
        }
        let _ = sluice_io::durable::sync_dir(&self.inner.layout.segments_dir());
        tracing::debug!(segments = unused.len(), "unused prepared segments removed");
    }
}

impl Drop for SegmentPreparer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The preparer thread: prepares the next segment of the first core
    /// without one (not within [`RETRY_AFTER`] of a failure for it), else
    /// waits to be told one was taken.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let next = (0..state.ready.len()).find(|&core| {
                state.ready[core].is_none()
                    && state.failed_at[core].is_none_or(|at| now - at >= RETRY_AFTER)
            });
            let Some(core) = next else {
                if !state.first_round_done {
                    state.first_round_done = true;
                    self.changed.notify_all();
                }
                let wait = if state.failed_at.iter().any(Option::is_some) {
                    RETRY_AFTER
                } else {
                    Duration::from_secs(3600)
                };
                state = self
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                continue;
            };
            drop(state);
            let prepared = self.prepare();
            state = self.lock();
            match prepared {
                Ok(prepared) => {
                    state.failed_at[core] = None;
                    state.ready[core] = Some(prepared);
                }
                Err(error) => {
                    // Once per failing spell (a full disk would log every
                    // second otherwise).
                    if !state.stopping {
                        if state.failed_at[core].is_none() {
                            tracing::warn!(
                                core,
                                %error,
                                "cannot prepare a segment (the core will create one itself); trying again every second"
                            );
                        } else {
                            tracing::debug!(core, %error, "cannot prepare a segment");
                        }
                    }
                    state.failed_at[core] = Some(Instant::now());
                }
            }
            if state.ready.iter().all(Option::is_some) && !state.first_round_done {
                state.first_round_done = true;
            }
            self.changed.notify_all();
        }
    }

    /// One segment: allocated, written with zeros, flushed, its name made
    /// durable.
    fn prepare(&self) -> std::io::Result<Prepared> {
        let dir = self.layout.segments_dir();
        sluice_io::durable::create_dir_all(&dir)?;
        self.keep_floor(&dir)?;
        let id = self.ids.take();
        let path = self.layout.segment_path(id);
        let started = Instant::now();
        let stopping = || self.lock().stopping;
        let writer = SegmentWriter::create_zeroed(&path, self.segment_bytes, &stopping)?;
        if let Err(error) = sluice_io::durable::sync_dir(&dir) {
            drop(writer);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        tracing::debug!(
            segment = id,
            ms = started.elapsed().as_millis() as u64,
            "segment prepared (blocks written with zeros and flushed)"
        );
        Ok(Prepared { id, writer })
    }

    /// Refuses a preparation that would leave less than the floor free.
    fn keep_floor(&self, dir: &Path) -> std::io::Result<()> {
        if self.floor_bytes == 0 {
            return Ok(());
        }
        let stats = rustix::fs::statvfs(dir)?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        if free < self.floor_bytes.saturating_add(self.segment_bytes) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free: a segment of {} would pass the free-space floor",
                    self.segment_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::{encode_record, scan, RecordUids, SEGMENT_BYTES_MIN};

    fn preparer(root: &Path, cores: usize, floor: u64) -> SegmentPreparer {
        let ids = Arc::new(SegmentIds::starting_at(1, 1));
        SegmentPreparer::start(Layout::new(root), ids, SEGMENT_BYTES_MIN, floor, cores).unwrap()
    }

    /// Every core gets a segment whose blocks are written (no unwritten
    /// extent: `filefrag`), and a taken one is replaced.
    #[test]
    fn each_core_gets_a_written_segment_and_a_taken_one_is_replaced() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer(dir.path(), 2, 0);
        assert_eq!(preparer.wait_first(), 2);
        let first = preparer.take(0).unwrap();
        assert!(!crate::store::segment::has_unwritten_extents(first.writer.path()).unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !preparer.is_ready(0) {
            assert!(Instant::now() < deadline, "core 0's next segment");
            std::thread::sleep(Duration::from_millis(10));
        }
        let second = preparer.take(0).unwrap();
        assert_ne!(first.id, second.id);
        assert!(preparer.take(5).is_none(), "no such core");
        // Unused ones (core 0's third, core 1's first) are deleted at stop.
        while !preparer.is_ready(0) {
            std::thread::sleep(Duration::from_millis(10));
        }
        preparer.stop();
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        left.sort();
        let mut taken = vec![
            first.writer.path().to_owned(),
            second.writer.path().to_owned(),
        ];
        taken.sort();
        assert_eq!(left, taken, "only the taken segments stay");
    }

    /// The no-overlap rule: once a core took a segment, the preparer never
    /// writes it again: records written into it (while the preparer keeps
    /// preparing the next ones) all scan back, and the bytes past them are
    /// the zeros of the preparation.
    #[test]
    fn a_taken_segment_is_never_written_by_the_preparer() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer(dir.path(), 1, 0);
        assert_eq!(preparer.wait_first(), 1);
        let mut taken = Vec::new();
        for round in 0..4u32 {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut prepared = loop {
                if let Some(prepared) = preparer.take(0) {
                    break prepared;
                }
                assert!(Instant::now() < deadline, "a segment for round {round}");
                std::thread::sleep(Duration::from_millis(5));
            };
            let uids = RecordUids {
                study: "1.2".into(),
                series: "1.2.3".into(),
                sop: format!("1.2.3.{round}"),
            };
            for n in 0..20u8 {
                let record = encode_record(9, &uids, &vec![n + 1; 30_000]).unwrap();
                prepared.writer.append(&record).unwrap();
            }
            prepared.writer.sync().unwrap();
            taken.push(prepared);
        }
        preparer.stop();
        for prepared in &taken {
            let file = std::fs::File::open(prepared.writer.path()).unwrap();
            let found = scan(&file, 0, SEGMENT_BYTES_MIN, 0).unwrap();
            assert_eq!(found.records.len(), 20);
            assert_eq!(
                found.stopped,
                Some(crate::store::segment::RecordError::NoRecord)
            );
            let mut tail = vec![1u8; (SEGMENT_BYTES_MIN - found.end) as usize];
            crate::store::segment::read_full(&file, &mut tail, found.end).unwrap();
            assert!(tail.iter().all(|&byte| byte == 0), "zeros past the records");
        }
    }

    /// The preparer keeps to the free-space floor: nothing is prepared
    /// where a segment would pass it, and start does not wait forever.
    #[test]
    fn nothing_is_prepared_past_the_free_space_floor() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer(dir.path(), 2, u64::MAX / 2);
        assert_eq!(preparer.wait_first(), 0);
        assert!(preparer.take(0).is_none());
        preparer.stop();
        let left = std::fs::read_dir(dir.path().join("segments"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(left, 0);
    }
}
