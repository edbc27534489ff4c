//! Segments whose blocks are written before records go in
//! (`storage.segment_zero_fill`; docs/design/segments.md, "Written
//! blocks" and "Paced and adaptive zero fill").
//!
//! A segment made by `fallocate` alone has ext4 *unwritten* extents: the
//! first write into one converts it, so every group `fdatasync` after
//! writes into fresh blocks commits the journal on top of the device flush.
//! One background thread, the preparer, keeps for each core its next
//! segment: allocated and its name made durable at once (the core never
//! waits for `fallocate` or a directory fsync), then written with zeros
//! chunk by chunk, as fast as the core's load allows:
//!
//! - the core idle (nothing reserved for [`IDLE_AFTER`]): at the device's
//!   speed, in chunks of [`IDLE_CHUNK`];
//! - the core busy: *paced* ([`pace`]), in chunks of [`PACED_CHUNK`], at
//!   the rate that finishes the zeros by the time the core's current
//!   segment is full (its recent fill rate and the bytes left in it), with
//!   a margin, never more than [`PACE_MAX`]: the zero writes spread beside
//!   the records' instead of a burst at the device's speed while records
//!   are being flushed;
//! - `"auto"` only: the core's recent flush rounds carry [`LARGE_ROUND`]
//!   or more: not at all (*held*). A round's journal commit costs about a
//!   fixed time, which the zeros save; a round that carries megabytes
//!   makes it a small share, while the zeros double what the device writes
//!   (at 512 KB the device is near its bandwidth).
//!
//! A core whose segment is full takes its next one as it is
//! ([`SegmentPreparer::take`]): its first `zeroed` bytes written (what the
//! preparer reached), the rest still unwritten (valid: records are only
//! appended, and a read of an unwritten block gives zeros as a written
//! zero does). A core that finds none (the preparation failed) creates one
//! itself (`fallocate` only), counted ([`SegmentPreparer::counts`],
//! `sluice_segments_created_total`).
//!
//! The zero writes never touch a segment a core writes records into: a
//! chunk's write starts only under the state's lock while the segment is
//! still the preparer's (`writing` set), and [`SegmentPreparer::take`]
//! waits, under the same lock, until no chunk is being written before it
//! hands the segment out; the preparer never sees it again (the test
//! `a_taken_segment_is_never_written_by_the_preparer`, and for a segment
//! taken while its zeros are still being written,
//! `a_segment_taken_mid_preparation_keeps_every_record`). A take waits for
//! at most one chunk's write (a core takes a segment once per segment).
//!
//! At start `sluice serve` waits until each core's first segment is fully
//! written, or [`START_WAIT_MAX`] has passed ([`SegmentPreparer::wait_first`]),
//! before the listeners open, so a run's first instances go to written
//! blocks too; the zeros go on after that while the core has not taken it.
//! At stop the unused segments are deleted ([`SegmentPreparer::stop`]);
//! after a crash, start-up recovery deletes them (a segment file with no
//! index row and no record: `recovery/segments.rs`), so they never pile up
//! as empty sealed segments.
//!
//! Space: a next segment is allocated before a core needs it, so each core
//! holds up to two segments' allocation (its open one and its next). The
//! preparer keeps to the free-space floor: it allocates nothing that would
//! leave less than `storage.free_space_floor` free, and a failed
//! allocation (`ENOSPC`) is tried again after [`RETRY_AFTER`]; meanwhile
//! the cores create their segments as before (and answer A711 when that
//! fails, as before).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::segments::SegmentIds;
use crate::config::ZeroFill;
use crate::store::layout::Layout;
use crate::store::segment::{write_zeros, AlignedBuf, SegmentWriter};

/// How long the preparer waits before it tries a core's segment again
/// after a failure (a full disk, or the floor).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A zero write while the core is busy: small, so that a flush of records
/// queued behind it waits about a millisecond at this machine's 800 MB/s.
pub(crate) const PACED_CHUNK: u64 = 1 << 20;

/// A zero write while the core is idle (and at start): long sequential
/// writes at the device's speed.
pub(crate) const IDLE_CHUNK: u64 = 8 << 20;

/// The zeros of a preparation are flushed every this many bytes and when
/// it pauses or ends, so a core that takes the segment finds the written
/// part's extents converted durably (its flushes there commit no journal).
const SYNC_EVERY: u64 = 64 << 20;

/// How often a busy core's load is sampled (and a held preparation looked
/// at again).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// A core with nothing reserved for this long is idle: its next segment is
/// zeroed at full speed.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// `"auto"`: flush rounds carrying this many bytes or more (the core's
/// recent average) get no zeros. 40 KB instances from 16 associations on
/// two cores make rounds of at most 8 records a core (0.3 MB), 512 KB ones
/// measured 1.5-1.7 MiB (docs/design/segments.md, "Paced and adaptive zero
/// fill").
pub(crate) const LARGE_ROUND: f64 = (1 << 20) as f64;

/// The margin over the rate that would finish the zeros just as the
/// current segment fills.
const PACE_MARGIN: f64 = 1.25;

/// The slowest and fastest paced zeroing, bytes per second per core.
pub(crate) const PACE_MIN: f64 = 16e6;
pub(crate) const PACE_MAX: f64 = 200e6;

/// The longest start-up wait for the first segments' zeros.
pub const START_WAIT_MAX: Duration = Duration::from_secs(2);

/// A segment for a core: allocated, its name durable, its first `zeroed`
/// bytes written with zeros (the rest unwritten).
#[derive(Debug)]
pub struct Prepared {
    /// Its id (its file is `Layout::segment_path(id)`).
    pub id: u64,
    /// Its writer, at append position 0.
    pub writer: SegmentWriter,
    /// How many of its first bytes are written (zeros).
    pub zeroed: u64,
}

/// What a core tells the preparer of its load (counters it bumps without
/// a lock; the preparer samples them).
#[derive(Debug, Default)]
pub struct CoreLoad {
    /// Bytes reserved for records in the core's segments.
    bytes: AtomicU64,
    /// Flush rounds the core started.
    rounds: AtomicU64,
    /// Bytes left in its current segment.
    remaining: AtomicU64,
}

impl CoreLoad {
    /// A record of `bytes` was reserved; `remaining` bytes are left in the
    /// segment.
    pub fn reserved(&self, bytes: u64, remaining: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.remaining.store(remaining, Ordering::Relaxed);
    }

    /// A flush round started.
    pub fn round_started(&self) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// A busy core's recent load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Load {
    /// Bytes reserved per second.
    pub(crate) bytes_per_s: f64,
    /// Bytes per flush round.
    pub(crate) bytes_per_round: f64,
    /// Bytes left in its current segment.
    pub(crate) remaining: u64,
}

/// What the preparer knows of a core's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Seen {
    /// Nothing reserved for [`IDLE_AFTER`] (or ever).
    Idle,
    /// Busy since less than one sample: not known yet.
    Unknown,
    /// Busy.
    Busy(Load),
}

/// How to go on zeroing a core's next segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pace {
    /// Chunks of [`IDLE_CHUNK`] back to back.
    Full,
    /// Chunks of [`PACED_CHUNK`] at this many bytes per second.
    Rate(f64),
    /// No zeros for now: look again in [`SAMPLE_EVERY`].
    Hold,
}

/// The pacing decision (sans I/O: docs/design/segments.md, "Paced and
/// adaptive zero fill"): `left` bytes of the next segment are still to be
/// zeroed, the core's load is `seen`.
pub(crate) fn pace(mode: ZeroFill, seen: Seen, left: u64) -> Pace {
    let load = match seen {
        _ if left == 0 || mode == ZeroFill::Off => return Pace::Hold,
        Seen::Idle => return Pace::Full,
        Seen::Unknown => return Pace::Hold,
        Seen::Busy(load) => load,
    };
    if mode == ZeroFill::Auto && load.bytes_per_round >= LARGE_ROUND {
        return Pace::Hold;
    }
    // The time until the current segment is full, at the recent rate.
    let seconds_left = load.remaining as f64 / load.bytes_per_s.max(1.0);
    let in_time = left as f64 / seconds_left.max(1e-3);
    Pace::Rate((in_time * PACE_MARGIN).clamp(PACE_MIN, PACE_MAX))
}

/// A core's load as the preparer samples it (sans I/O: the caller gives the
/// time and the counters).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sampler {
    /// The last sample: when, the counters then.
    at: Option<Instant>,
    bytes: u64,
    rounds: u64,
    /// When the core last reserved something (or took a segment).
    active: Option<Instant>,
    /// The smoothed load over the samples since it became busy.
    load: Option<Load>,
}

impl Sampler {
    /// The core took its next segment: busy, whatever the counters said
    /// (sampled afresh from the next look; a load seen before an idle
    /// spell is forgotten).
    pub(crate) fn took(&mut self, now: Instant) {
        if self
            .active
            .is_none_or(|active| now.saturating_duration_since(active) >= IDLE_AFTER)
        {
            self.load = None;
        }
        self.active = Some(now);
        self.at = None;
    }

    /// What is known at `now`, the core's counters being `bytes`, `rounds`
    /// and `remaining` (sampled at most every [`SAMPLE_EVERY`]).
    pub(crate) fn seen(&mut self, now: Instant, bytes: u64, rounds: u64, remaining: u64) -> Seen {
        let Some(at) = self.at else {
            self.at = Some(now);
            self.bytes = bytes;
            self.rounds = rounds;
            return self.judge(now);
        };
        let elapsed = now.saturating_duration_since(at);
        if elapsed >= SAMPLE_EVERY {
            let added = bytes.saturating_sub(self.bytes);
            let rounds_added = rounds.saturating_sub(self.rounds);
            if added > 0 {
                let sample = Load {
                    bytes_per_s: added as f64 / elapsed.as_secs_f64(),
                    bytes_per_round: added as f64 / rounds_added.max(1) as f64,
                    remaining,
                };
                self.load = Some(match self.load {
                    // Smoothed: half the last sample, half what came before.
                    Some(before) => Load {
                        bytes_per_s: (before.bytes_per_s + sample.bytes_per_s) / 2.0,
                        bytes_per_round: (before.bytes_per_round + sample.bytes_per_round) / 2.0,
                        remaining,
                    },
                    None => sample,
                });
                self.active = Some(now);
            }
            self.at = Some(now);
            self.bytes = bytes;
            self.rounds = rounds;
        }
        if let Some(load) = &mut self.load {
            load.remaining = remaining;
        }
        self.judge(now)
    }

    fn judge(&mut self, now: Instant) -> Seen {
        match self.active {
            Some(active) if now.saturating_duration_since(active) < IDLE_AFTER => {
                self.load.map_or(Seen::Unknown, Seen::Busy)
            }
            _ => {
                self.load = None;
                Seen::Idle
            }
        }
    }
}

/// A core's next segment while the preparer has it.
#[derive(Debug)]
struct Next {
    prepared: Prepared,
    /// The preparer's own descriptor of it (the zero writes).
    file: Arc<File>,
    /// A chunk's write is in flight: it is not handed out until it ends.
    writing: bool,
    /// The zeros flushed so far.
    synced: u64,
    /// When its next chunk is due.
    due: Instant,
}

impl Next {
    fn left(&self) -> u64 {
        self.prepared.writer.size() - self.prepared.zeroed
    }
}

#[derive(Debug)]
struct CoreState {
    next: Option<Next>,
    /// When its last preparation failed.
    failed_at: Option<Instant>,
    sampler: Sampler,
}

#[derive(Debug)]
struct State {
    cores: Vec<CoreState>,
    stopping: bool,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    ids: Arc<SegmentIds>,
    mode: ZeroFill,
    segment_bytes: u64,
    floor_bytes: u64,
    loads: Vec<Arc<CoreLoad>>,
    state: Mutex<State>,
    changed: Condvar,
    /// Segments handed out prepared, and created by a core without one.
    handed_out: AtomicU64,
    fallocated: AtomicU64,
}

/// The preparer (see the module documentation).
#[derive(Debug)]
pub struct SegmentPreparer {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SegmentPreparer {
    /// Starts the preparer thread for `cores` cores, segments of
    /// `segment_bytes` in `layout`'s segments directory, ids from `ids`,
    /// keeping `floor_bytes` free (0: no floor); `mode` is `On` (paced) or
    /// `Auto` (paced, and held for large rounds).
    pub fn start(
        layout: Layout,
        ids: Arc<SegmentIds>,
        mode: ZeroFill,
        segment_bytes: u64,
        floor_bytes: u64,
        cores: usize,
    ) -> std::io::Result<SegmentPreparer> {
        let inner = Arc::new(Inner {
            layout,
            ids,
            mode,
            segment_bytes,
            floor_bytes,
            loads: (0..cores).map(|_| Arc::default()).collect(),
            state: Mutex::new(State {
                cores: (0..cores)
                    .map(|_| CoreState {
                        next: None,
                        failed_at: None,
                        sampler: Sampler::default(),
                    })
                    .collect(),
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

    /// Waits until every core's first segment is written whole, or its
    /// preparation failed (that core starts on a segment it creates), or
    /// `limit` has passed (the zeros go on until the core takes it);
    /// returns how many are ready, and how many of their bytes are
    /// written.
    pub fn wait_first(&self, limit: Duration) -> (usize, u64) {
        let deadline = Instant::now() + limit;
        let mut state = self.inner.lock();
        loop {
            let done = state.cores.iter().all(|core| match &core.next {
                Some(next) => next.left() == 0 && next.synced == next.prepared.zeroed,
                None => core.failed_at.is_some(),
            });
            let now = Instant::now();
            if done || state.stopping || now >= deadline {
                let ready = state.cores.iter().filter_map(|core| core.next.as_ref());
                let (count, zeroed) = ready.fold((0, 0), |(count, zeroed), next| {
                    (count + 1, zeroed + next.prepared.zeroed)
                });
                return (count, zeroed);
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// What core `core` tells the preparer of its load.
    pub fn load(&self, core: usize) -> Option<Arc<CoreLoad>> {
        self.inner.loads.get(core).cloned()
    }

    /// The next segment of `core`, if there is one (the preparer then
    /// starts on the one after). Waits only for a zero write to it in
    /// flight to end (one chunk): none is in flight or can start once it
    /// is handed out.
    pub fn take(&self, core: usize) -> Option<Prepared> {
        let mut state = self.inner.lock();
        loop {
            if !state.cores.get(core)?.next.as_ref()?.writing {
                break;
            }
            state = self
                .inner
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let core_state = &mut state.cores[core];
        let next = core_state.next.take()?;
        let size = next.prepared.writer.size();
        if next.prepared.zeroed < size {
            // The load the preparer last saw (why it did not finish).
            let (mb_per_s, round_kib) = core_state.sampler.load.map_or((0, 0), |load| {
                (
                    (load.bytes_per_s / 1e6) as u64,
                    (load.bytes_per_round / 1024.0) as u64,
                )
            });
            // `auto` holding the zeros for large rounds is the design doing
            // its job, once a segment (every second or so per core at 512
            // KB): logged at debug. Paced zeros that did not keep up are
            // worth an operator's eye: info.
            let held = self.inner.mode == ZeroFill::Auto
                && core_state
                    .sampler
                    .load
                    .is_some_and(|load| load.bytes_per_round >= LARGE_ROUND);
            if held {
                tracing::debug!(
                    segment = next.prepared.id,
                    core,
                    round_kib,
                    "next segment taken partly written (zeros held: large flush rounds)"
                );
            } else {
                tracing::info!(
                    segment = next.prepared.id,
                    core,
                    zeroed = next.prepared.zeroed,
                    size,
                    mb_per_s,
                    round_kib,
                    "next segment taken partly written (the rest fallocated)"
                );
            }
        }
        core_state.sampler.took(Instant::now());
        self.inner.changed.notify_all();
        Some(next.prepared)
    }

    /// Whether a segment is ready for `core` (its allocation already
    /// taken: the free-space floor need not count it again).
    pub fn is_ready(&self, core: usize) -> bool {
        self.inner
            .lock()
            .cores
            .get(core)
            .is_some_and(|core| core.next.is_some())
    }

    /// Counts a segment a core took prepared (`true`) or had to create
    /// without one (`false`).
    pub fn count(&self, prepared: bool) {
        let counter = if prepared {
            &self.inner.handed_out
        } else {
            &self.inner.fallocated
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Segments handed out prepared, and created by a core without one.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.handed_out.load(Ordering::Relaxed),
            self.inner.fallocated.load(Ordering::Relaxed),
        )
    }

    /// Stops the preparer (a zero fill in progress ends after its chunk)
    /// and deletes the segments no core took: no record and no index row
    /// names them. Idempotent.
    pub fn stop(&self) {
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
        let unused: Vec<Next> = self
            .inner
            .lock()
            .cores
            .iter_mut()
            .filter_map(|core| core.next.take())
            .collect();
        if unused.is_empty() {
            return;
        }
        for next in &unused {
            // A removal lost to a crash is done again by recovery.
            if let Err(error) = std::fs::remove_file(next.prepared.writer.path()) {
                tracing::warn!(segment = next.prepared.id, %error, "cannot remove an unused prepared segment; start-up recovery will");
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

/// The preparer's next piece of work.
enum Work {
    /// Allocate core `.0`'s next segment.
    Create(usize),
    /// Write zeros at `offset..offset + len` of core `core`'s next segment
    /// (its `writing` is set).
    Zero {
        core: usize,
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Flush core `core`'s zeros written so far (`upto`).
    Sync {
        core: usize,
        file: Arc<File>,
        upto: u64,
    },
    /// Nothing before this instant (or a take, or the stop).
    Wait(Option<Instant>),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The preparer thread: allocates each core's next segment, then zeroes
    /// the one whose next chunk is due first, as [`pace`] says.
    fn run(&self) {
        let zeros = AlignedBuf::zeroed(IDLE_CHUNK as usize);
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let work = self.plan(&mut state, Instant::now());
            match work {
                Work::Wait(until) => {
                    let wait = until.map_or(Duration::from_secs(3600), |until| {
                        until.saturating_duration_since(Instant::now())
                    });
                    state = self
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                Work::Create(core) => {
                    drop(state);
                    let created = self.create();
                    state = self.lock();
                    self.created(&mut state, core, created);
                }
                Work::Zero {
                    core,
                    file,
                    offset,
                    len,
                } => {
                    drop(state);
                    let written = write_zeros(&file, offset, len, &zeros);
                    state = self.lock();
                    self.zeroed(&mut state, core, offset + len, written);
                }
                Work::Sync { core, file, upto } => {
                    drop(state);
                    let synced = file.sync_data();
                    state = self.lock();
                    if let Some(next) = &mut state.cores[core].next {
                        match synced {
                            Ok(()) => next.synced = next.synced.max(upto),
                            Err(error) => {
                                tracing::warn!(core, %error, "cannot flush a prepared segment's zeros")
                            }
                        }
                    }
                }
            }
            self.changed.notify_all();
        }
    }

    /// What to do next (`state` locked).
    fn plan(&self, state: &mut State, now: Instant) -> Work {
        // A core without a next segment first.
        let missing = state.cores.iter().position(|core| {
            core.next.is_none()
                && core
                    .failed_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= RETRY_AFTER)
        });
        if let Some(core) = missing {
            return Work::Create(core);
        }
        let mut earliest: Option<Instant> = state
            .cores
            .iter()
            .filter(|core| core.next.is_none())
            .filter_map(|core| core.failed_at.map(|at| at + RETRY_AFTER))
            .min();
        // The segment whose chunk is due first (ties: the least zeroed).
        let due = state
            .cores
            .iter()
            .enumerate()
            .filter_map(|(index, core)| Some((index, core.next.as_ref()?)))
            .filter(|(_, next)| next.left() > 0 || next.synced < next.prepared.zeroed)
            .min_by_key(|(_, next)| (next.due, next.prepared.zeroed))
            .map(|(index, next)| (index, next.due));
        let Some((core, due)) = due else {
            return Work::Wait(earliest);
        };
        if due > now {
            earliest = Some(earliest.map_or(due, |at| at.min(due)));
            return Work::Wait(earliest);
        }
        let load = &self.loads[core];
        let core_state = &mut state.cores[core];
        let seen = core_state.sampler.seen(
            now,
            load.bytes.load(Ordering::Relaxed),
            load.rounds.load(Ordering::Relaxed),
            load.remaining.load(Ordering::Relaxed),
        );
        let Some(next) = core_state.next.as_mut() else {
            return Work::Wait(earliest);
        };
        let decided = pace(self.mode, seen, next.left());
        let unsynced = next.prepared.zeroed - next.synced;
        let (chunk, interval) = match decided {
            Pace::Hold => {
                next.due = now + SAMPLE_EVERY;
                // Paused: what was written is flushed now.
                if unsynced > 0 {
                    return Work::Sync {
                        core,
                        file: Arc::clone(&next.file),
                        upto: next.prepared.zeroed,
                    };
                }
                // Another core's chunk may be due before this one's look.
                return Work::Wait(Some(now));
            }
            Pace::Full => (IDLE_CHUNK, Duration::ZERO),
            Pace::Rate(rate) => (
                PACED_CHUNK,
                Duration::from_secs_f64(PACED_CHUNK as f64 / rate),
            ),
        };
        if unsynced >= SYNC_EVERY || (next.left() == 0 && unsynced > 0) {
            return Work::Sync {
                core,
                file: Arc::clone(&next.file),
                upto: next.prepared.zeroed,
            };
        }
        let offset = next.prepared.zeroed;
        let len = chunk.min(next.left());
        next.writing = true;
        next.due = now + interval;
        Work::Zero {
            core,
            file: Arc::clone(&next.file),
            offset,
            len,
        }
    }

    /// A zero write ended (`state` locked): the segment's zeros reach
    /// `end`, or, when it failed, the segment is removed.
    fn zeroed(&self, state: &mut State, core: usize, end: u64, written: std::io::Result<()>) {
        let core_state = &mut state.cores[core];
        let Some(next) = core_state.next.as_mut() else {
            return;
        };
        next.writing = false;
        match written {
            Ok(()) => next.prepared.zeroed = end,
            Err(error) => {
                tracing::warn!(core, segment = next.prepared.id, %error, "cannot write a prepared segment's zeros: removed (the core will create one itself)");
                if let Some(next) = core_state.next.take() {
                    let _ = std::fs::remove_file(next.prepared.writer.path());
                }
                core_state.failed_at = Some(Instant::now());
            }
        }
    }

    /// A core's next segment allocated (or not: `state` locked).
    fn created(&self, state: &mut State, core: usize, created: std::io::Result<(Prepared, File)>) {
        let stopping = state.stopping;
        let core_state = &mut state.cores[core];
        match created {
            Ok((prepared, file)) => {
                core_state.failed_at = None;
                core_state.next = Some(Next {
                    prepared,
                    file: Arc::new(file),
                    writing: false,
                    synced: 0,
                    due: Instant::now(),
                });
            }
            Err(error) => {
                // Once per failing spell (a full disk would log every
                // second otherwise).
                if !stopping {
                    if core_state.failed_at.is_none() {
                        tracing::warn!(
                            core,
                            %error,
                            "cannot prepare a segment (the core will create one itself); trying again every second"
                        );
                    } else {
                        tracing::debug!(core, %error, "cannot prepare a segment");
                    }
                }
                core_state.failed_at = Some(Instant::now());
            }
        }
    }

    /// One segment allocated, its name made durable (its zeros come
    /// after).
    fn create(&self) -> std::io::Result<(Prepared, File)> {
        let dir = self.layout.segments_dir();
        sluice_io::durable::create_dir_all(&dir)?;
        self.keep_floor(&dir)?;
        let id = self.ids.take();
        let path = self.layout.segment_path(id);
        let writer = SegmentWriter::create(&path, self.segment_bytes)?;
        let file = writer
            .try_clone_file()
            .and_then(|file| sluice_io::durable::sync_dir(&dir).map(|()| file));
        match file {
            Ok(file) => Ok((
                Prepared {
                    id,
                    writer,
                    zeroed: 0,
                },
                file,
            )),
            Err(error) => {
                drop(writer);
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
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

    const MB: f64 = 1e6;
    const GIB: u64 = 1 << 30;

    fn preparer_of(root: &Path, cores: usize, floor: u64, segment_bytes: u64) -> SegmentPreparer {
        let ids = Arc::new(SegmentIds::starting_at(1, 1));
        SegmentPreparer::start(
            Layout::new(root),
            ids,
            ZeroFill::On,
            segment_bytes,
            floor,
            cores,
        )
        .unwrap()
    }

    fn preparer(root: &Path, cores: usize, floor: u64) -> SegmentPreparer {
        preparer_of(root, cores, floor, SEGMENT_BYTES_MIN)
    }

    fn busy(bytes_per_s: f64, bytes_per_round: f64, remaining: u64) -> Seen {
        Seen::Busy(Load {
            bytes_per_s,
            bytes_per_round,
            remaining,
        })
    }

    /// The pacing decisions: full speed while idle, nothing until the load
    /// is known, paced to finish with a margin before the current segment
    /// fills (within the floor and the ceiling), and, `"auto"` only,
    /// nothing while the rounds are large.
    #[test]
    fn the_zeros_are_paced_to_the_fill_rate_and_held_for_large_rounds() {
        for mode in [ZeroFill::On, ZeroFill::Auto] {
            assert_eq!(pace(mode, Seen::Idle, GIB), Pace::Full);
            assert_eq!(pace(mode, Seen::Unknown, GIB), Pace::Hold);
            assert_eq!(pace(mode, Seen::Idle, 0), Pace::Hold, "nothing left");
            // 40 KB x16 on two cores: 80 MB/s a core, 0.6 MB a round, a
            // segment just taken: 1.25 x 80 MB/s.
            let Pace::Rate(rate) = pace(mode, busy(80.0 * MB, 0.6 * MB, GIB), GIB) else {
                panic!("paced");
            };
            assert!((rate - 100.0 * MB).abs() < MB, "{rate}");
            // Half of it zeroed, the current one half full: the same.
            let Pace::Rate(rate) = pace(mode, busy(80.0 * MB, 0.6 * MB, GIB / 2), GIB / 2) else {
                panic!("paced");
            };
            assert!((rate - 100.0 * MB).abs() < MB, "{rate}");
            // Behind (the current one nearly full): the ceiling, not a burst.
            assert_eq!(
                pace(mode, busy(80.0 * MB, 0.6 * MB, 1 << 20), GIB),
                Pace::Rate(PACE_MAX)
            );
            // A trickle: the floor.
            assert_eq!(
                pace(mode, busy(10_000.0, 40_000.0, GIB), GIB),
                Pace::Rate(PACE_MIN)
            );
        }
        // 512 KB x16: 1.5-1.7 MiB a round as measured.
        let large = busy(270.0 * MB, 1.5 * (1 << 20) as f64, GIB);
        assert_eq!(pace(ZeroFill::Auto, large, GIB), Pace::Hold);
        assert!(matches!(pace(ZeroFill::On, large, GIB), Pace::Rate(_)));
        // Just under the bound: zeroed.
        let under = busy(400.0 * MB, LARGE_ROUND - 1.0, GIB);
        assert!(matches!(pace(ZeroFill::Auto, under, GIB), Pace::Rate(_)));
        assert_eq!(pace(ZeroFill::Off, Seen::Idle, GIB), Pace::Hold);
    }

    /// The sampler: idle until the core is active, unknown from a take
    /// until a sample, then the rate and the bytes per round of the
    /// samples (smoothed), idle again after a second without a record.
    #[test]
    fn a_core_s_load_is_sampled_from_its_counters() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut sampler = Sampler::default();
        assert_eq!(sampler.seen(at(0), 0, 0, 0), Seen::Idle);
        assert_eq!(
            sampler.seen(at(500), 0, 0, 0),
            Seen::Idle,
            "nothing reserved"
        );
        sampler.took(at(600));
        assert_eq!(sampler.seen(at(600), 0, 0, GIB), Seen::Unknown);
        assert_eq!(
            sampler.seen(at(700), 10 << 20, 20, GIB),
            Seen::Unknown,
            "within a sample"
        );
        // 200 ms: 16 MB in 32 rounds.
        let Seen::Busy(load) = sampler.seen(at(800), 16_000_000, 32, GIB - 16_000_000) else {
            panic!("busy");
        };
        assert!((load.bytes_per_s - 80.0 * MB).abs() < 1.0, "{load:?}");
        assert!((load.bytes_per_round - 0.5 * MB).abs() < 1.0, "{load:?}");
        assert_eq!(load.remaining, GIB - 16_000_000);
        // The next 200 ms: 80 MB in 20 rounds (4 MB each): smoothed.
        let Seen::Busy(load) = sampler.seen(at(1000), 96_000_000, 52, GIB - 96_000_000) else {
            panic!("busy");
        };
        assert!((load.bytes_per_s - 240.0 * MB).abs() < 1.0, "{load:?}");
        assert!((load.bytes_per_round - 2.25 * MB).abs() < 1.0, "{load:?}");
        // No record for a second: idle, and the load forgotten.
        assert!(matches!(
            sampler.seen(at(1500), 96_000_000, 52, 0),
            Seen::Busy(_)
        ));
        assert_eq!(sampler.seen(at(2100), 96_000_000, 52, 0), Seen::Idle);
        sampler.took(at(2200));
        assert_eq!(sampler.seen(at(2200), 96_000_000, 52, GIB), Seen::Unknown);
    }

    /// Every core gets a segment whose blocks are written (no unwritten
    /// extent: `filefrag`) when it is idle, and a taken one is replaced.
    #[test]
    fn each_core_gets_a_written_segment_and_a_taken_one_is_replaced() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer(dir.path(), 2, 0);
        let (ready, zeroed) = preparer.wait_first(Duration::from_secs(60));
        assert_eq!((ready, zeroed), (2, 2 * SEGMENT_BYTES_MIN));
        let first = preparer.take(0).unwrap();
        assert_eq!(first.zeroed, SEGMENT_BYTES_MIN);
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

    /// Records appended to `prepared`'s segment, `count` of `bytes` each
    /// (`round` in their SOP UIDs), flushed.
    fn append_records(prepared: &mut Prepared, round: u32, count: u32, bytes: usize) {
        let uids = RecordUids {
            study: "1.2".into(),
            series: "1.2.3".into(),
            sop: format!("1.2.3.{round}"),
        };
        for n in 0..count {
            let record = encode_record(9, &uids, &vec![n as u8 + 1; bytes]).unwrap();
            prepared.writer.append(&record).unwrap();
        }
        prepared.writer.sync().unwrap();
    }

    /// Every record of a taken segment scans back, and the bytes past them
    /// read as zeros (written ones, or unwritten ones past the preparer's
    /// zeros).
    fn assert_records_whole(prepared: &Prepared, count: usize) {
        let size = prepared.writer.size();
        let file = std::fs::File::open(prepared.writer.path()).unwrap();
        let found = scan(&file, 0, size, 0).unwrap();
        assert_eq!(found.records.len(), count);
        assert_eq!(
            found.stopped,
            Some(crate::store::segment::RecordError::NoRecord)
        );
        let mut tail = vec![1u8; (size - found.end) as usize];
        crate::store::segment::read_full(&file, &mut tail, found.end).unwrap();
        assert!(tail.iter().all(|&byte| byte == 0), "zeros past the records");
    }

    /// The no-overlap rule: once a core took a segment, the preparer never
    /// writes it again: records written into it (while the preparer keeps
    /// preparing the next ones) all scan back, and the bytes past them are
    /// zeros.
    #[test]
    fn a_taken_segment_is_never_written_by_the_preparer() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer(dir.path(), 1, 0);
        assert_eq!(preparer.wait_first(Duration::from_secs(60)).0, 1);
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
            append_records(&mut prepared, round, 20, 30_000);
            taken.push(prepared);
        }
        preparer.stop();
        for prepared in &taken {
            assert_records_whole(prepared, 20);
        }
    }

    /// A segment taken while its zeros are being written (a partial
    /// hand-out): the take waits for the chunk in flight, no zero write
    /// starts after it, and records written past the zeros it had (where
    /// the preparer's next chunks would have gone) all scan back while the
    /// preparer goes on with the next segment.
    #[test]
    fn a_segment_taken_mid_preparation_keeps_every_record() {
        const SIZE: u64 = 256 << 20;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer_of(dir.path(), 1, 0, SIZE);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !preparer.is_ready(0) {
            assert!(Instant::now() < deadline, "the first segment");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut prepared = preparer.take(0).unwrap();
        assert!(
            prepared.zeroed < SIZE,
            "taken mid-preparation: {} of {SIZE} zeroed",
            prepared.zeroed
        );
        assert_eq!(
            prepared.zeroed % IDLE_CHUNK,
            0,
            "whole chunks: none in flight"
        );
        // Records over the zeros and 16 MiB past them.
        let count = u32::try_from((prepared.zeroed + (16 << 20)).min(SIZE) >> 20).unwrap();
        append_records(&mut prepared, 0, count, (1 << 20) - 4096);
        // The preparer has the next one meanwhile (allocated; its zeros
        // start once the core is seen idle).
        std::thread::sleep(Duration::from_millis(500));
        assert!(preparer.is_ready(0));
        preparer.stop();
        assert_records_whole(&prepared, count as usize);
    }

    /// The preparer keeps to the free-space floor: nothing is prepared
    /// where a segment would pass it, and start does not wait forever.
    #[test]
    fn nothing_is_prepared_past_the_free_space_floor() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let preparer = preparer(dir.path(), 2, u64::MAX / 2);
        assert_eq!(preparer.wait_first(Duration::from_secs(60)), (0, 0));
        assert!(preparer.take(0).is_none());
        preparer.stop();
        let left = std::fs::read_dir(dir.path().join("segments"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(left, 0);
    }
}
