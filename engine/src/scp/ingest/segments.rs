//! The segments layout's side of ingest on one core (docs/design/segments.md):
//! the instance's record buffer while it arrives ([`RecordBuf`]), the
//! core's open segment and the segments it still has records in flight in
//! ([`Segments`]), the places reserved in them, and their flush rounds
//! ([`SyncRounds<u64>`]: one `fdatasync` per batch per segment).
//!
//! A core owns its open segment: only its thread reserves places in it, so
//! reserving takes no lock. Segment ids are unique across cores and runs
//! ([`SegmentIds`], one counter shared by the cores, started past every id
//! the index or the `segments/` directory knows). Ingest never reopens an
//! existing segment: start-up recovery scans and seals the open ones of the
//! previous run before the cores start (`crate::recovery`), and every run
//! starts new ones.
//!
//! A segment is sealed when a record does not fit it, when a write at a
//! reserved place failed (the place may be a hole, which may only end a
//! segment) and when its flush failed (a later flush would prove nothing
//! of the earlier writes); its `WriteOp::SealSegment` goes to the index
//! once no job with a record in it is left (so no entry naming one of its
//! records can commit after the seal: recovery does not scan a sealed
//! segment), and its descriptor is closed then.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_index::RecordPlace;
use sluice_io::{AlignedPart, Core, FileHandle, IoBuf, DIRECT_IO_ALIGN};

use super::dir_sync::{RoundEnd, RoundId, RoundStart, SyncRounds};
use super::job::JobKey;
use super::prepare::{CoreLoad, SegmentPreparer};
use crate::scp::failure::Failure;
use crate::store::layout::Layout;
use crate::store::segment::{self, AlignedBuf, SegmentWriter, PAYLOAD_ROOM, RECORD_ALIGN};

/// The smallest first capacity of a record buffer (it doubles as bytes
/// arrive).
const RECORD_BUF_START: usize = 128 * 1024;

/// The largest first capacity taken from the core's last record (a large
/// one is not worth reserving for every instance after it).
const RECORD_BUF_HINT_MAX: usize = 16 << 20;

/// How many written record buffers a core keeps for the next instances,
/// and how many bytes of them at most.
const SPARE_BUFFERS_MAX: usize = 64;
const SPARE_BYTES_MAX: usize = 128 << 20;

/// How long a core answers with its last failure before it tries again to
/// create a segment, after one could not be created (a full disk): not one
/// attempt per instance while the disk stays full, and stored again by
/// itself within this long once space is freed.
const CREATE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A record of `record_bytes` reserved in `writer`'s segment: the core's
/// load, for the preparer's pacing (none without a preparer).
fn tell_load(load: Option<&CoreLoad>, record_bytes: u64, writer: &SegmentWriter) {
    if let Some(load) = load {
        load.reserved(record_bytes, writer.size() - writer.append_position());
    }
}

/// Segment ids for every core of a run, and the run's epoch (written in
/// each record's header).
#[derive(Debug)]
pub struct SegmentIds {
    next: AtomicU64,
    epoch: u64,
}

impl SegmentIds {
    /// Ids from 1 + the largest id the index's segments table or the
    /// `segments/` directory (`<16 hex digits>.seg`) knows.
    pub(crate) fn at_start(store: &crate::store::Store) -> std::io::Result<SegmentIds> {
        let indexed = store
            .index()
            .read()
            .and_then(|read| read.segments())
            .map_err(std::io::Error::other)?
            .into_iter()
            .map(|(id, _)| id)
            .max()
            .unwrap_or(0);
        let on_disk = largest_segment_file(&store.layout().segments_dir())?;
        Ok(SegmentIds {
            next: AtomicU64::new(indexed.max(on_disk) + 1),
            epoch: crate::clock::unix_now_ns(),
        })
    }

    /// Ids from `next`, records of `epoch` (tests, and the speed-of-light
    /// receiver's preparer).
    pub fn starting_at(next: u64, epoch: u64) -> SegmentIds {
        SegmentIds {
            next: AtomicU64::new(next),
            epoch,
        }
    }

    /// The next id.
    pub fn take(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }
}

/// The largest id of a `segments/<16 hex digits>.seg` file (0: none, or no
/// directory).
fn largest_segment_file(dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut largest = 0;
    for entry in entries {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|name| name.strip_suffix(".seg"))
            .filter(|hex| hex.len() == 16)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        if let Some(id) = id {
            largest = largest.max(id);
        }
    }
    Ok(largest)
}

/// Where the bytes received into a lent record buffer go
/// ([`RecordBuf::lend`]): right after the Part 10 bytes it held, at most
/// `len` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Landing {
    filled: usize,
    len: usize,
}

impl Landing {
    /// The range of the lent buffer the bytes land in.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        let start = PAYLOAD_ROOM + self.filled;
        start..start + self.len
    }
}

/// An instance's Part 10 bytes while they arrive, at [`PAYLOAD_ROOM`] of an
/// aligned buffer (the room before them takes the record's header once
/// the record is encoded in place).
#[derive(Debug)]
pub(super) struct RecordBuf {
    buf: AlignedBuf,
    filled: usize,
}

impl RecordBuf {
    /// A buffer holding the Part 10 header, with room for `expected` Part
    /// 10 bytes (the core's last record: a run of like instances then
    /// never grows its buffer, each growth being a copy of what it holds).
    #[cfg(test)]
    pub(super) fn new(header: &[u8], expected: usize) -> RecordBuf {
        RecordBuf::in_buffer(AlignedBuf::zeroed(Self::room(expected)), header)
    }

    /// The first capacity for `expected` Part 10 bytes.
    fn room(expected: usize) -> usize {
        PAYLOAD_ROOM + expected.clamp(RECORD_BUF_START, RECORD_BUF_HINT_MAX)
    }

    /// `header` at the start of the Part 10 bytes of `buf` (a new buffer or
    /// a written one: what it held past the bytes pushed is never written,
    /// `segment::encode_in_place` overwrites the header and the padding).
    fn in_buffer(buf: AlignedBuf, header: &[u8]) -> RecordBuf {
        let mut record = RecordBuf { buf, filled: 0 };
        record.push(header);
        record
    }

    /// The Part 10 bytes so far.
    pub(super) fn len(&self) -> usize {
        self.filled
    }

    /// The bytes the buffer takes in memory.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The capacity [`Self::push`] grows the buffer to for `more` bytes
    /// (`None`: they fit as it is). The old buffer lives until the new one
    /// holds its bytes: both for a moment.
    pub(super) fn growth(&self, more: usize) -> Option<usize> {
        let end = PAYLOAD_ROOM + self.filled + more;
        (end > self.buf.len()).then(|| aligned_len(end.max(self.buf.len() * 2)))
    }

    /// Appends bytes (the buffer doubles when they do not fit: one copy of
    /// what it holds, amortised).
    pub(super) fn push(&mut self, bytes: &[u8]) {
        let end = self.reserve(bytes.len());
        self.buf.as_mut_slice()[PAYLOAD_ROOM + self.filled..end].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Makes room for `len` more Part 10 bytes (doubling the buffer when
    /// they do not fit); returns where they end in the buffer.
    fn reserve(&mut self, len: usize) -> usize {
        let end = PAYLOAD_ROOM + self.filled + len;
        if let Some(capacity) = self.growth(len) {
            let mut grown = AlignedBuf::zeroed(capacity);
            grown.as_mut_slice()[..PAYLOAD_ROOM + self.filled]
                .copy_from_slice(&self.buf.as_slice()[..PAYLOAD_ROOM + self.filled]);
            self.buf = grown;
        }
        end
    }

    /// Lends the buffer for the next `len` Part 10 bytes to be received
    /// straight into their place ([`Landing::range`]): grown first when
    /// they would not fit, so it never grows (or moves) while lent.
    pub(super) fn lend(mut self, len: usize) -> (AlignedBuf, Landing) {
        self.reserve(len);
        let landing = Landing {
            filled: self.filled,
            len,
        };
        (self.buf, landing)
    }

    /// A lent buffer back, `bytes` of its landing's range received: they
    /// follow the Part 10 bytes it held.
    pub(super) fn landed(buf: AlignedBuf, landing: Landing, bytes: usize) -> RecordBuf {
        RecordBuf {
            buf,
            filled: landing.filled + bytes.min(landing.len),
        }
    }

    /// Writes `bytes` over the Part 10 bytes at `offset` (the seal).
    pub(super) fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.filled, "within the bytes");
        let at = PAYLOAD_ROOM + offset;
        self.buf.as_mut_slice()[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// The Part 10 bytes, copied.
    #[cfg(test)]
    pub(super) fn to_vec(&self) -> Vec<u8> {
        self.buf.as_slice()[PAYLOAD_ROOM..PAYLOAD_ROOM + self.filled].to_vec()
    }

    /// The Part 10 bytes for a spill's first write, not copied: the buffer
    /// itself, held by the write and freed once it completed (`weak` lets
    /// the core count it until then).
    pub(super) fn into_part10(self) -> (IoBuf, Weak<AlignedBuf>) {
        let buf = Rc::new(self.buf);
        let weak = Rc::downgrade(&buf);
        let range = PAYLOAD_ROOM..PAYLOAD_ROOM + self.filled;
        let Some(part) = AlignedPart::new(buf, range) else {
            panic!("a record buffer's bytes past its end");
        };
        (IoBuf::from(part), weak)
    }

    /// The record's padded length for these UIDs.
    pub(super) fn record_bytes(&self, uids: &segment::RecordUids) -> u64 {
        segment::padded(
            segment::header_bytes_of(&uids.study, &uids.series, &uids.sop)
                .saturating_add(self.filled as u64),
        )
    }

    /// The record, encoded in place, ready for its `O_DIRECT` write: its
    /// payload checksum split where the data set starts (`dataset_offset`,
    /// the Part 10 header's length), from `dataset_checksum` (the data
    /// set's XXH3-128, the seal's), so the data set is not read again.
    pub(super) fn encode(
        mut self,
        epoch: u64,
        uids: &segment::RecordUids,
        dataset_offset: usize,
        dataset_checksum: sluice_index::Checksum,
    ) -> Result<AlignedBuf, segment::RecordError> {
        segment::encode_in_place(
            &mut self.buf,
            self.filled,
            epoch,
            uids,
            dataset_offset,
            dataset_checksum,
        )?;
        Ok(self.buf)
    }
}

/// A segment this core has written to and not yet closed.
#[derive(Debug)]
struct OpenSegment {
    writer: SegmentWriter,
    /// The core's descriptor of it (writes and flushes go through the ring).
    handle: FileHandle,
    /// Jobs with a record reserved in it that are not finished.
    jobs: u32,
    /// A flush failed: every later record of it fails with this.
    failed: Option<Failure>,
    /// The end of the last record whose entry was queued in doubt.
    queued_end: u64,
}

/// The segments of one core (see the module documentation).
#[derive(Debug)]
pub(super) struct Segments {
    ids: Arc<SegmentIds>,
    /// The segments prepared for this core (`storage.segment_zero_fill`:
    /// blocks written before records go in), and the core's number there.
    preparer: Option<Arc<SegmentPreparer>>,
    core_index: usize,
    /// What the core tells the preparer of its load (its pacing).
    load: Option<Arc<CoreLoad>>,
    layout: Layout,
    segment_bytes: u64,
    /// The current segment (records are reserved here).
    current: Option<u64>,
    open: HashMap<u64, OpenSegment>,
    rounds: SyncRounds<u64>,
    dir_ready: bool,
    /// Buffers of written records, reused for the next instances: a new
    /// one costs a zeroing pass and, from the allocator's `mmap`, a page
    /// fault per 4 KiB touched and an `munmap` when freed (a fifth of the
    /// server's CPU at 512 KB before they were kept: docs/design/segments.md,
    /// "Ingest speed").
    spare: Vec<AlignedBuf>,
    spare_bytes: usize,
    /// The most bytes of record buffers the core holds at once
    /// (`storage.record_memory_per_core`): its jobs', its spare ones and
    /// its spills' in flight.
    memory_max: usize,
    /// The buffers of spills whose write holds them (gone once it
    /// completed), with their capacities.
    spilling: Vec<(Weak<AlignedBuf>, usize)>,
    /// The last failure to create a segment, and when: answered until
    /// [`CREATE_RETRY_AFTER`] has passed.
    create_failed: Option<(Instant, Failure)>,
}

impl Segments {
    pub(super) fn new(
        ids: Arc<SegmentIds>,
        layout: Layout,
        segment_size_mib: u32,
        memory_max: u64,
        preparer: Option<Arc<SegmentPreparer>>,
        core_index: usize,
    ) -> Segments {
        Segments {
            load: preparer
                .as_ref()
                .and_then(|preparer| preparer.load(core_index)),
            preparer,
            core_index,
            memory_max: usize::try_from(memory_max).unwrap_or(usize::MAX),
            spilling: Vec::new(),
            ids,
            layout,
            segment_bytes: u64::from(segment_size_mib) << 20,
            current: None,
            open: HashMap::new(),
            rounds: SyncRounds::default(),
            dir_ready: false,
            spare: Vec::new(),
            spare_bytes: 0,
            create_failed: None,
        }
    }

    /// A record buffer holding `header`, with room for `expected` Part 10
    /// bytes: the most recently written spare buffer that large, else a new
    /// one within the core's budget beside the `jobs()` bytes its jobs hold
    /// (the smallest one when even that one is past it: a small instance
    /// keeps the record path, and spills if it must grow).
    pub(super) fn record_buf(
        &mut self,
        header: &[u8],
        expected: usize,
        jobs: impl FnOnce() -> usize,
    ) -> RecordBuf {
        let room = RecordBuf::room(expected);
        let reused = self
            .spare
            .iter()
            .rposition(|buf| buf.capacity() >= room)
            .map(|at| self.spare.swap_remove(at));
        let buf = match reused {
            Some(mut buf) => {
                self.spare_bytes -= buf.capacity();
                buf.restore_length();
                buf
            }
            None if self.room_for(aligned_len(room), jobs()) => AlignedBuf::zeroed(room),
            None => AlignedBuf::zeroed(RecordBuf::room(0)),
        };
        RecordBuf::in_buffer(buf, header)
    }

    /// The bytes of record buffers the core holds beside its jobs' own:
    /// its spare buffers, and those of spills whose write still holds them
    /// (the others are forgotten here).
    pub(super) fn buffers_held(&mut self) -> usize {
        self.spilling.retain(|(buf, _)| buf.strong_count() > 0);
        self.spare_bytes + self.spilling.iter().map(|(_, bytes)| bytes).sum::<usize>()
    }

    /// Whether `more` bytes of record buffers fit the core's budget
    /// (`storage.record_memory_per_core`) beside the `jobs` bytes its jobs
    /// hold; spare buffers are let go (oldest first) to make them fit.
    pub(super) fn room_for(&mut self, more: usize, jobs: usize) -> bool {
        loop {
            let held = jobs.saturating_add(self.buffers_held());
            if held.saturating_add(more) <= self.memory_max {
                return true;
            }
            if self.spare.is_empty() {
                return false;
            }
            let spare = self.spare.remove(0);
            self.spare_bytes -= spare.capacity();
        }
    }

    /// A spill's buffer, of `bytes`, went to its write: counted until the
    /// write lets go of it.
    pub(super) fn spilled(&mut self, buf: Weak<AlignedBuf>, bytes: usize) {
        self.spilling.push((buf, bytes));
    }

    /// A written record's buffer back, once its write let go of it (kept
    /// while the spare buffers stay within their bounds).
    pub(super) fn recycle(&mut self, written: Option<Rc<AlignedBuf>>) {
        let Some(buf) = written.and_then(|written| Rc::try_unwrap(written).ok()) else {
            return;
        };
        if self.spare.len() < SPARE_BUFFERS_MAX
            && self.spare_bytes + buf.capacity() <= SPARE_BYTES_MAX
        {
            self.spare_bytes += buf.capacity();
            self.spare.push(buf);
        }
    }

    /// The run's epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.ids.epoch
    }

    /// The largest record a segment takes (a larger instance is a file).
    pub(super) fn record_bytes_max(&self) -> u64 {
        self.segment_bytes - RECORD_ALIGN
    }

    /// The bytes this core must allocate before a record of about
    /// `record_bytes` has a place: none while its current segment has room
    /// for it, else a whole segment (for the free-space floor: the
    /// allocation, not the record's write, takes the disk's space).
    pub(super) fn allocation_ahead(&self, record_bytes: u64) -> u64 {
        let room = self
            .current
            .and_then(|id| self.open.get(&id))
            .is_some_and(|segment| segment.writer.fits(segment::padded(record_bytes)));
        // A prepared segment's allocation is taken already.
        let prepared = || {
            self.preparer
                .as_ref()
                .is_some_and(|preparer| preparer.is_ready(self.core_index))
        };
        if room || prepared() {
            0
        } else {
            self.segment_bytes
        }
    }

    /// Reserves a place for a record of `record_bytes` (padded, at most
    /// [`Self::record_bytes_max`]) in the current segment, or, when it
    /// does not fit (or the current one is sealed), in a new one (the full
    /// one sealed). Returns the place (or why there is none: a new segment
    /// could not be created, or was not tried again yet), and the segments
    /// that may now be closed and sealed in the index (either way).
    pub(super) fn reserve(
        &mut self,
        core: &mut Core,
        record_bytes: u64,
    ) -> (Result<RecordPlace, Failure>, Vec<u64>) {
        debug_assert!(record_bytes <= self.record_bytes_max());
        let mut retired = Vec::new();
        if let Some(id) = self.current {
            let segment = self.open.get_mut(&id).expect("the current segment is open");
            if let Some(offset) = segment.writer.reserve(record_bytes) {
                segment.jobs += 1;
                tell_load(self.load.as_deref(), record_bytes, &segment.writer);
                return (Ok(place(id, offset, record_bytes)), retired);
            }
            // Full (or sealed after a failure): the next record goes to a
            // new one.
            segment.writer.seal();
            self.current = None;
            retired.extend(self.retire_if_idle(core, id));
        }
        if let Some((at, failure)) = &self.create_failed {
            if at.elapsed() < CREATE_RETRY_AFTER {
                return (Err(failure.clone()), retired);
            }
        }
        let id = match self.create(core) {
            Ok(id) => {
                self.create_failed = None;
                id
            }
            Err(failure) => {
                self.create_failed = Some((Instant::now(), failure.clone()));
                return (Err(failure), retired);
            }
        };
        let segment = self.open.get_mut(&id).expect("just created");
        let Some(offset) = segment.writer.reserve(record_bytes) else {
            panic!("a record of {record_bytes} bytes does not fit a new segment");
        };
        segment.jobs += 1;
        tell_load(self.load.as_deref(), record_bytes, &segment.writer);
        (Ok(place(id, offset, record_bytes)), retired)
    }

    /// The core's next segment: the one prepared for it (blocks written,
    /// name durable: nothing to wait for), else one created here (blocking,
    /// once per segment: the file's creation and allocation, its sync and
    /// its directory's), so its name is durable before any record in it is
    /// promised.
    fn create(&mut self, core: &mut Core) -> Result<u64, Failure> {
        let failure = |error: std::io::Error| Failure::Segment(Arc::new(error));
        let prepared = self
            .preparer
            .as_ref()
            .and_then(|preparer| preparer.take(self.core_index));
        let was_prepared = prepared.is_some();
        let (id, writer) = match prepared {
            Some(prepared) => (prepared.id, prepared.writer),
            None => {
                let dir = self.layout.segments_dir();
                if !self.dir_ready {
                    sluice_io::durable::create_dir_all(&dir).map_err(failure)?;
                    self.dir_ready = true;
                }
                let id = self.ids.take();
                let path = self.layout.segment_path(id);
                let writer = SegmentWriter::create(&path, self.segment_bytes).map_err(failure)?;
                if let Err(error) = sluice_io::durable::sync_dir(&dir) {
                    drop(writer);
                    // Empty: nothing names it; recovery finds no record in it.
                    let _ = std::fs::remove_file(&path);
                    return Err(failure(error));
                }
                if self.preparer.is_some() {
                    tracing::info!(
                        segment = id,
                        core = self.core_index,
                        "no prepared segment ready: a fallocated one created (its first flushes commit the journal)"
                    );
                }
                (id, writer)
            }
        };
        let adopted = writer.try_clone_file().map_err(failure).and_then(|file| {
            core.adopt_file(OwnedFd::from(file))
                .map_err(Failure::WriteSubmit)
        });
        let handle = match adopted {
            Ok(handle) => handle,
            Err(failure) => {
                // Empty: nothing names it; recovery finds no record in it.
                let _ = std::fs::remove_file(writer.path());
                return Err(failure);
            }
        };
        if let Some(preparer) = &self.preparer {
            preparer.count(was_prepared);
        }
        tracing::debug!(
            segment = id,
            direct = writer.is_direct(),
            prepared = was_prepared,
            "segment opened"
        );
        self.open.insert(
            id,
            OpenSegment {
                writer,
                handle,
                jobs: 0,
                failed: None,
                queued_end: 0,
            },
        );
        self.current = Some(id);
        Ok(id)
    }

    /// A record's entry is queued, to commit beside its flush: entries
    /// queue in the order their places were reserved (both happen at the
    /// data set's completion), and the batcher and the index writer keep
    /// that order, so the indexed end of a segment never passes a record
    /// whose committed entry a crash could take while a later one's stayed
    /// (recovery scans only past the indexed end: docs/design/segments.md,
    /// "Recovery at start"). Asserted here.
    pub(super) fn queued(&mut self, place: RecordPlace) {
        let segment = self
            .open
            .get_mut(&place.segment)
            .expect("a queued record's segment is open");
        assert!(
            place.offset >= segment.queued_end,
            "record at {} of segment {} queued after one ending at {}",
            place.offset,
            place.segment,
            segment.queued_end
        );
        segment.queued_end = place.end();
    }

    /// The core's descriptor of a segment a job has a record in.
    pub(super) fn handle(&self, id: u64) -> FileHandle {
        match self.open.get(&id) {
            Some(segment) => segment.handle,
            None => panic!("segment {id} is closed while a job has a record in it"),
        }
    }

    /// A write at a reserved place failed (or was not submitted): the
    /// segment is sealed (the place may be a hole).
    pub(super) fn write_failed(&mut self, id: u64) {
        if let Some(segment) = self.open.get_mut(&id) {
            segment.writer.seal();
        }
        if self.current == Some(id) {
            self.current = None;
        }
    }

    /// A job's record is written: it joins the segment's flush round (the
    /// round to start, when none is in flight), or fails at once when an
    /// earlier flush of the segment failed.
    pub(super) fn join(
        &mut self,
        id: u64,
        job: JobKey,
    ) -> Result<Option<RoundStart<u64>>, Failure> {
        if let Some(failure) = self
            .open
            .get(&id)
            .and_then(|segment| segment.failed.clone())
        {
            return Err(failure);
        }
        let start = self.rounds.join(id, job);
        if let (Some(load), Some(_)) = (&self.load, &start) {
            load.round_started();
        }
        Ok(start)
    }

    /// Holds a flush round that is due (its `fdatasync` not submitted yet:
    /// records written meanwhile join it), for the core's flush window
    /// (`super::flush_window`).
    pub(super) fn hold(&mut self, round: RoundId) {
        self.rounds.hold(round);
    }

    /// Releases a held flush round, to be submitted now; how many records
    /// it covers.
    pub(super) fn release(&mut self, round: RoundId) -> usize {
        self.rounds.release(round)
    }

    /// A flush round ended: on failure the segment is sealed and marked
    /// failed (its jobs, this round's and the next's, fail).
    pub(super) fn round_ended(
        &mut self,
        round: RoundId,
        result: &Result<(), Failure>,
    ) -> RoundEnd<u64> {
        let end = self.rounds.ended(round, result.is_ok());
        if let (Some(load), Some(_)) = (&self.load, &end.next) {
            load.round_started();
        }
        if let Err(failure) = result {
            if let Some(segment) = self.open.get_mut(&end.target) {
                segment.writer.seal();
                segment.failed = Some(failure.clone());
            }
            if self.current == Some(end.target) {
                self.current = None;
            }
        }
        end
    }

    /// A job with a record in segment `id` finished: the segment, if sealed
    /// and left without jobs, is closed; its id is returned to be sealed in
    /// the index.
    pub(super) fn job_finished(&mut self, core: &mut Core, id: u64) -> Option<u64> {
        let segment = self.open.get_mut(&id).expect("a job's segment is open");
        assert!(segment.jobs > 0, "a job finished twice in segment {id}");
        segment.jobs -= 1;
        self.retire_if_idle(core, id)
    }

    fn retire_if_idle(&mut self, core: &mut Core, id: u64) -> Option<u64> {
        let segment = self.open.get(&id)?;
        if self.current == Some(id) || !segment.writer.is_sealed() || segment.jobs > 0 {
            return None;
        }
        let segment = self.open.remove(&id)?;
        // Nobody waits for a close.
        let _ = core.close_file(
            segment.handle,
            crate::scp::tag::tag(crate::scp::tag::TagKind::Ignored, 0),
        );
        Some(id)
    }
}

/// Whether a record buffer of `capacity` bytes is registered with the
/// core's ring for its write: one the core may keep for the next instances
/// (a larger one is written once and freed, so registering it would cost
/// the pinning it saves, and locked memory besides).
pub(super) fn worth_registering(capacity: usize) -> bool {
    capacity <= RECORD_BUF_HINT_MAX
}

/// The length [`AlignedBuf::zeroed`] gives a buffer asked for `len` bytes.
fn aligned_len(len: usize) -> usize {
    len.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN
}

fn place(segment: u64, offset: u64, length: u64) -> RecordPlace {
    RecordPlace {
        segment,
        offset,
        length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments() -> Segments {
        let ids = Arc::new(SegmentIds {
            next: AtomicU64::new(1),
            epoch: 1,
        });
        Segments::new(ids, Layout::new("/nonexistent"), 1, 256 << 20, None, 0)
    }

    /// A written record's buffer serves the next instance once its write let
    /// go of it (not while it is shared), and the record encoded in it over
    /// the stale bytes of the last one is the record of its own bytes.
    #[test]
    fn a_written_buffer_is_reused_and_its_stale_bytes_never_written() {
        let mut segments = segments();
        let first: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut buf = segments.record_buf(&first[..300], first.len(), || 0);
        buf.push(&first[300..]);
        let checksum = crate::store::layout::dataset_checksum(&first[300..]);
        let written = Rc::new(buf.encode(1, &uids(), 300, checksum).unwrap());
        let address = written.as_slice().as_ptr();
        // Still shared with its write: dropped, not kept.
        let held = Rc::clone(&written);
        segments.recycle(Some(Rc::clone(&written)));
        assert!(segments.spare.is_empty());
        drop(held);
        segments.recycle(Some(written));
        assert_eq!(segments.spare.len(), 1);
        let second = vec![5u8; 1000];
        let mut buf = segments.record_buf(&second[..100], 1000, || 0);
        assert!(segments.spare.is_empty(), "taken");
        buf.push(&second[100..]);
        let checksum = crate::store::layout::dataset_checksum(&second[100..]);
        let record = buf.encode(1, &uids(), 100, checksum).unwrap();
        assert_eq!(record.as_slice().as_ptr(), address, "the same buffer");
        let expected = segment::encode_record(1, &uids(), &second).unwrap();
        assert_eq!(record.len(), expected.len());
        // Equal but for the checksum's split and so the checksums.
        assert_eq!(&record.as_slice()[64..], &expected.as_slice()[64..]);
        assert_eq!(
            segment::decode_head(record.as_slice())
                .unwrap()
                .payload_checksum,
            segment::payload_checksum(&second, 100)
        );
    }

    /// The core's budget of record buffers: a new buffer within it, the
    /// smallest one past it; spare buffers let go before anything is
    /// refused; a spill's buffer counted until its write lets go of it.
    #[test]
    fn record_buffers_keep_to_the_core_s_budget() {
        const KIB: usize = 1024;
        let mut segments = segments();
        segments.memory_max = 1024 * KIB;
        let smallest = aligned_len(RecordBuf::room(0));
        // Within the budget: the room asked for.
        let buf = segments.record_buf(b"header", 512 * KIB, || 0);
        assert_eq!(buf.capacity(), aligned_len(RecordBuf::room(512 * KIB)));
        // Past it (the jobs hold 900 KiB): the smallest buffer.
        let buf = segments.record_buf(b"header", 512 * KIB, || 900 * KIB);
        assert_eq!(buf.capacity(), smallest);
        // A spare buffer is let go to make room.
        segments.recycle(Some(Rc::new(AlignedBuf::zeroed(600 * KIB))));
        assert_eq!(segments.buffers_held(), 600 * KIB);
        assert!(segments.room_for(512 * KIB, 0));
        assert_eq!(segments.buffers_held(), 0, "the spare was let go");
        assert!(!segments.room_for(512 * KIB, 600 * KIB));
        // A spill's buffer is held by its write, then freed.
        let mut buf = segments.record_buf(b"header", 0, || 0);
        buf.push(&[7; 1000]);
        let capacity = buf.capacity();
        let (write, weak) = buf.into_part10();
        assert_eq!(write.len(), 1006);
        assert_eq!(&write.as_slice()[..6], b"header");
        segments.spilled(weak, capacity);
        assert_eq!(segments.buffers_held(), capacity);
        assert!(!segments.room_for(1024 * KIB - capacity + 1, 0));
        drop(write);
        assert_eq!(segments.buffers_held(), 0, "freed once written");
        assert!(segments.room_for(1024 * KIB, 0));
    }

    /// The growth a push makes is the capacity the buffer then has.
    #[test]
    fn a_record_buffer_s_growth_is_its_next_capacity() {
        let mut buf = RecordBuf::new(b"header", 0);
        let fits = buf.capacity() - PAYLOAD_ROOM - buf.len();
        assert_eq!(buf.growth(fits), None);
        let grown = buf.growth(fits + 1).unwrap();
        buf.push(&vec![1; fits + 1]);
        assert_eq!(buf.capacity(), grown);
    }

    fn uids() -> segment::RecordUids {
        segment::RecordUids {
            study: "1.2.3".into(),
            series: "1.2.3.4".into(),
            sop: "1.2.3.4.5".into(),
        }
    }

    /// Bytes received into a lent buffer (written at its landing's range,
    /// as the kernel does) join the Part 10 bytes between pushed ones, a
    /// lend past the buffer's room grows it before it goes, and a short
    /// receive keeps only what landed.
    #[test]
    fn bytes_landed_in_a_lent_buffer_join_the_pushed_ones_in_order() {
        let header = vec![3u8; 300];
        let mut buf = RecordBuf::new(&header, 0);
        let mut part10 = header.clone();
        let pattern = |n: usize, len: usize| -> Vec<u8> {
            (0..len).map(|i| (i * 7 + n * 13) as u8).collect()
        };
        for (n, (pushed, lent, landed)) in [
            (1000, 200_000, 200_000),
            (10, 70_000, 33_000),
            (0, 1_000_000, 1_000_000),
        ]
        .into_iter()
        .enumerate()
        {
            let fragment = pattern(n, pushed);
            buf.push(&fragment);
            part10.extend_from_slice(&fragment);
            let (mut aligned, landing) = buf.lend(lent);
            assert_eq!(landing.range().len(), lent);
            assert!(landing.range().end <= aligned.len(), "room before lending");
            let received = pattern(n + 100, landed);
            aligned.as_mut_slice()[landing.range().start..][..landed].copy_from_slice(&received);
            buf = RecordBuf::landed(aligned, landing, landed);
            part10.extend_from_slice(&received);
            assert_eq!(buf.len(), part10.len());
        }
        buf.push(b"end");
        part10.extend_from_slice(b"end");
        assert_eq!(buf.to_vec(), part10);
    }

    /// Bytes pushed across the buffer's growth (from a small hint and from
    /// none) come out as pushed, the seal overwritten in place, and the
    /// record encoded in place equals the record encoded from a copy.
    #[test]
    fn a_record_buffer_keeps_its_bytes_across_growth_and_encodes_in_place() {
        for expected in [0, 1 << 20] {
            let header = vec![9u8; 300];
            let mut buf = RecordBuf::new(&header, expected);
            let mut part10 = header.clone();
            for n in 0..40u32 {
                let fragment: Vec<u8> = (0..16_381u32).map(|i| (i ^ n) as u8).collect();
                buf.push(&fragment);
                part10.extend_from_slice(&fragment);
            }
            buf.overwrite(290, &[1; 10]);
            part10[290..300].fill(1);
            assert_eq!(buf.len(), part10.len());
            assert_eq!(buf.to_vec(), part10);
            let expected_record = segment::encode_record(7, &uids(), &part10).unwrap();
            assert_eq!(buf.record_bytes(&uids()), expected_record.len() as u64);
            let checksum = crate::store::layout::dataset_checksum(&part10[300..]);
            let record = buf.encode(7, &uids(), 300, checksum).unwrap();
            // The same record but for the checksum's split (bytes 12..16)
            // and so the checksums (32..40, 56..64): both valid.
            let head = segment::decode_head(record.as_slice()).unwrap();
            assert_eq!(head.payload_split, 300);
            assert_eq!(
                head.payload_checksum,
                segment::payload_checksum(&part10, 300)
            );
            assert_eq!(&record.as_slice()[64..], &expected_record.as_slice()[64..]);
        }
    }
}
