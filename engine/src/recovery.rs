//! Start-up recovery: what `sluice serve` does to a data directory before it
//! accepts the first association.
//!
//! After a crash the durability contract allows exactly three kinds of
//! debris: files still being received (`tmp/`); files in `objects/` or
//! `quarantine/` without an entry (renamed, but the commit naming them was
//! not made, or was lost: the index answers C-STORE batches at commit,
//! before the flush that makes it durable); and entries committed *in
//! doubt* (the ingest path commits while the file's flushes run, and clears
//! the mark after answering) whose file may be incomplete, or still in
//! `tmp/` if its rename did not reach the disk. Recovery first settles the
//! entries in doubt (file checked against the entry's size and checksum:
//! kept and moved into place, or the entry removed and a partial file moved
//! to `orphans/`), then removes the rest of `tmp/`, indexes again every
//! unreferenced file whose seal proves it complete (`reindex`), moves the
//! other unreferenced files to `orphans/` (named by their file id, so
//! nothing is lost), and checks the other direction: every index
//! entry (stored instance or quarantine entry) must have its file, of the size
//! the index records. One case is repaired: the ingest path writes a file
//! into the area it expects (objects/ or quarantine/) and, in the rare case
//! the index decides otherwise, moves it after the commit; a crash in between
//! leaves a referenced file in the other area, and recovery renames it to the
//! path the index names (same id, same size; nothing else is ever moved into
//! place). Every other problem cannot be repaired here; it is logged (one
//! warning each, naming the triplet) and returned in [`RecoveryReport`].
//!
//! Cost: the entries in doubt (at most the instances in flight at the crash)
//! have their files read once; the `objects/` and `quarantine/` trees are
//! walked once (a directory read per fan-out directory, one index point
//! lookup per file; only a file without an entry is read, at most those of
//! the last commits and the instances in flight), then every index entry's
//! file is `stat`ed once. Nothing is held in memory per indexed file.
//!
//! The walk and the per-entry check cost what is archived (minutes at 10 M
//! instances) and look only for what a crash leaves, so [`recover_after`]
//! skips them after a clean stop ([`clean_stop`]: a record a drained
//! `sluice serve` writes last, and the next holder of the data directory's
//! lock consumes durably before it can write), unless the index no longer
//! has the entries the record names, the operator asked for the full check
//! at this start (`sluice serve --full-recovery`: a disk they suspect), or
//! the steps that always run (entries in doubt, `tmp/`, open segments) find
//! a sign of a crash. The full check logs why it runs, and its progress
//! every few seconds.
//!
//! Invariant: recovery never deletes a file whose file id the index
//! references, nor moves one anywhere but to the exact path the index names
//! for it (an interrupted quarantine release may leave a referenced file
//! under both names: both stay), except the incomplete file of an entry in
//! doubt, which goes to `orphans/` as its entry is removed; only `tmp/` is
//! ever deleted from.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_index::{
    Disposition, FileId, InDoubtEntry, Index, IndexError, Location, NewInstance, RecordPlace,
    StoreRequest, Triplet, WriteOp, WriteOutcome,
};

pub mod clean_stop;
mod reindex;
mod segments;

pub use clean_stop::LastStop;

use crate::escape::Escaped;
use crate::store::check::{check_file, check_record, READ_CHUNK_BYTES};
use crate::store::layout::{Area, Layout};
use crate::store::walk::{for_each_indexed_file, walk_files, IndexedFile};

/// Problems of each kind kept in the report (all are counted and logged).
pub const PROBLEMS_KEPT_MAX: usize = 10_000;

/// Most `.N` suffixes tried when an orphan's name is taken in `orphans/`.
const ORPHAN_NAME_SUFFIX_MAX: u32 = 1000;

/// An index entry whose file is missing or of the wrong size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedEntry {
    /// The instance's identity.
    pub triplet: Triplet,
    /// The quarantine entry's id, when the entry is a quarantined duplicate.
    pub quarantine_id: Option<u64>,
    /// Where its file should be (for a segment record: its segment's file).
    pub path: PathBuf,
    /// The size the index records (for a segment record: the end of the
    /// record, which the segment must reach).
    pub expected_bytes: u64,
    /// The size found; `None` when the file is missing.
    pub actual_bytes: Option<u64>,
    /// For a missing file: a file with its id in the other area, left there
    /// because its size is not the recorded one.
    pub other_area_path: Option<PathBuf>,
}

/// What start-up recovery did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Files removed from `tmp/`.
    pub temp_files_removed: u64,
    /// Files of `objects/` and `quarantine/` without an index entry, moved to `orphans/`.
    pub orphans_moved: u64,
    /// Entries committed in doubt (the process stopped while their file's
    /// syncs ran) whose file proved complete: kept, moved into place if the
    /// rename had not reached the disk.
    pub in_doubt_kept: u64,
    /// Sealed, complete files found without an entry (the crash took the
    /// index commit that named them), indexed again.
    pub reindexed: u64,
    /// Entries committed in doubt whose file was missing or incomplete:
    /// never acknowledged, so removed; any partial file went to `orphans/`.
    pub in_doubt_removed: u64,
    /// Indexed files found in the other area (objects/ for a quarantine
    /// entry, or the reverse) with the recorded size, or outside their
    /// fan-out directory, renamed into place.
    pub misplaced_moved: u64,
    /// Index entries checked (stored instances and quarantine entries).
    pub entries_checked: u64,
    /// Index entries whose file is missing (at most [`PROBLEMS_KEPT_MAX`]).
    pub missing_files: Vec<DamagedEntry>,
    /// All index entries whose file is missing.
    pub missing_files_total: u64,
    /// Index entries whose file has another size than recorded (at most
    /// [`PROBLEMS_KEPT_MAX`]).
    pub wrong_size: Vec<DamagedEntry>,
    /// All index entries whose file has the wrong size.
    pub wrong_size_total: u64,
    /// Open segments (file not sealed in the index, or with no row)
    /// scanned, cut and sealed (`recovery/segments.rs`).
    pub segments_recovered: u64,
    /// Valid records found past an open segment's indexed end (their commit
    /// lost in the crash), indexed again.
    pub segment_records_reindexed: u64,
    /// Bytes truncated off open segments (torn or stale records, and the
    /// unused preallocation).
    pub segment_bytes_cut: u64,
    /// Open segments whose records ended at one that is not whole and valid
    /// (a torn write, or stale bytes of an earlier run), cut there.
    pub segment_torn_tails: u64,
    /// Segment files with no index row and no record (prepared for a core
    /// and never used, or created just before a crash), removed.
    pub empty_segments_removed: u64,
    /// True when a clean stop let recovery skip the archive-wide steps
    /// (`objects/` and `quarantine/` walked, every entry's file checked;
    /// `entries_checked` is then 0); the log says why they ran otherwise
    /// ([`FullCheckReason`]).
    pub archive_check_skipped: bool,
    /// How long recovery took.
    pub elapsed: Duration,
}

impl RecoveryReport {
    /// True when recovery removed, moved or indexed again any file or entry:
    /// the previous run did not end cleanly, which the operator should see
    /// (the summary is then logged at warn, not info).
    pub fn repaired_anything(&self) -> bool {
        self.temp_files_removed
            + self.orphans_moved
            + self.in_doubt_removed
            + self.reindexed
            + self.misplaced_moved
            + self.segment_records_reindexed
            > 0
    }

    /// True when every index entry has its file at the recorded size.
    pub fn index_is_whole(&self) -> bool {
        self.missing_files_total == 0 && self.wrong_size_total == 0
    }
}

impl fmt::Display for RecoveryReport {
    /// One line for the log:
    /// `recovery: 2 temporary files removed, 1 unindexed file moved to orphans/,
    /// 10 index entries checked: 1 file missing, 1 of the wrong size (0.004 s)`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |count: u64, one: &'static str, many: &'static str| {
            if count == 1 {
                one
            } else {
                many
            }
        };
        let scope = if self.archive_check_skipped {
            " (clean stop recorded: archive walk and entry check skipped)"
        } else {
            ""
        };
        write!(
            formatter,
            "recovery{scope}: {} temporary {} removed, {} unindexed {} moved to orphans/, \
             {} index {} checked: {} {} missing, {} of the wrong size",
            self.temp_files_removed,
            plural(self.temp_files_removed, "file", "files"),
            self.orphans_moved,
            plural(self.orphans_moved, "file", "files"),
            self.entries_checked,
            plural(self.entries_checked, "entry", "entries"),
            self.missing_files_total,
            plural(self.missing_files_total, "file", "files"),
            self.wrong_size_total,
        )?;
        if self.in_doubt_kept + self.in_doubt_removed > 0 {
            write!(
                formatter,
                ", {} in-doubt {} verified and kept, {} incomplete and removed",
                self.in_doubt_kept,
                plural(self.in_doubt_kept, "entry", "entries"),
                self.in_doubt_removed,
            )?;
        }
        if self.reindexed > 0 {
            write!(
                formatter,
                ", {} sealed {} without an entry indexed again",
                self.reindexed,
                plural(self.reindexed, "file", "files"),
            )?;
        }
        if self.misplaced_moved > 0 {
            write!(
                formatter,
                ", {} misplaced {} moved into place",
                self.misplaced_moved,
                plural(self.misplaced_moved, "file", "files"),
            )?;
        }
        if self.segments_recovered > 0 {
            write!(
                formatter,
                ", {} open {} sealed: {} {} indexed again, {} torn {} cut, {} bytes cut",
                self.segments_recovered,
                plural(self.segments_recovered, "segment", "segments"),
                self.segment_records_reindexed,
                plural(self.segment_records_reindexed, "record", "records"),
                self.segment_torn_tails,
                plural(self.segment_torn_tails, "tail", "tails"),
                self.segment_bytes_cut,
            )?;
        }
        if self.empty_segments_removed > 0 {
            write!(
                formatter,
                ", {} unused {} removed",
                self.empty_segments_removed,
                plural(self.empty_segments_removed, "segment", "segments"),
            )?;
        }
        write!(formatter, " ({:.3} s)", self.elapsed.as_secs_f64())
    }
}

/// Why start-up recovery checked the whole archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullCheckReason {
    /// No clean-stop record: the last run crashed, was killed or did not
    /// drain, a writing command ran since, or this is the first start.
    NoCleanStop,
    /// A clean-stop record that is not one Sluice writes.
    UnreadableRecord,
    /// A clean-stop record, but the index changed since (restored from a
    /// copy, or written by a process that ignored the lock).
    IndexChanged,
    /// A clean-stop record, but entries in doubt, files in `tmp/` or
    /// records past a segment's indexed end were found.
    InFlightFound,
    /// A clean-stop record that fits the index, but the operator asked for
    /// the full check at this start (`sluice serve --full-recovery`).
    Requested,
}

impl FullCheckReason {
    /// The reason in the log's words.
    pub fn as_str(self) -> &'static str {
        match self {
            FullCheckReason::NoCleanStop => "the last stop was not clean (no clean-stop record)",
            FullCheckReason::UnreadableRecord => "the clean-stop record is unreadable",
            FullCheckReason::IndexChanged => "the index changed since the clean stop it records",
            FullCheckReason::InFlightFound => "work in flight found despite a clean-stop record",
            FullCheckReason::Requested => "asked for at this start (sluice serve --full-recovery)",
        }
    }
}

/// Seconds between two progress lines of the full check.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Says how far the full check is, at most once per [`PROGRESS_INTERVAL`].
struct Progress {
    next: Instant,
    calls: u32,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            next: Instant::now() + PROGRESS_INTERVAL,
            calls: 0,
        }
    }

    /// Calls `log` when the interval passed (the clock read once per 1,024 calls).
    fn tick(&mut self, log: impl FnOnce()) {
        self.calls = self.calls.wrapping_add(1);
        if self.calls % 1024 != 0 {
            return;
        }
        let now = Instant::now();
        if now >= self.next {
            self.next = now + PROGRESS_INTERVAL;
            log();
        }
    }
}

/// Why recovery could not finish; the server must not start on a data
/// directory it could not check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The index could not be read.
    #[error("recovery could not read the index: {0}")]
    Index(#[from] IndexError),
    /// A file or directory operation failed.
    #[error("recovery could not {operation} {}: {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError {
    let path = path.to_owned();
    move |source| RecoveryError::Io {
        operation,
        path,
        source,
    }
}

/// A free name in `orphans/` for `file_name`: the name itself, else
/// `name.1`, `name.2`, ...
fn orphan_destination(orphans_dir: &Path, file_name: &str) -> Result<PathBuf, RecoveryError> {
    let plain = orphans_dir.join(file_name);
    if !plain.exists() {
        return Ok(plain);
    }
    for suffix in 1..=ORPHAN_NAME_SUFFIX_MAX {
        let candidate = orphans_dir.join(format!("{file_name}.{suffix}"));
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(RecoveryError::Io {
        operation: "find a free name in",
        path: orphans_dir.to_owned(),
        source: std::io::Error::other(format!(
            "{file_name} and its {ORPHAN_NAME_SUFFIX_MAX} numbered variants all exist"
        )),
    })
}

/// What the other area holds for a missing indexed file.
enum Misplaced {
    /// Nothing with its id.
    Absent,
    /// A file of the recorded size, now renamed to the indexed path.
    Moved,
    /// A file of another size, left where it is.
    Left(PathBuf),
}

/// Looks for a missing indexed file in the other area (where the ingest path
/// put it before the index decided its area) and renames it into place if it
/// has the recorded size.
fn move_from_other_area(
    layout: &Layout,
    file: &IndexedFile,
    indexed_path: &Path,
) -> Result<Misplaced, RecoveryError> {
    let other_area = match file.area {
        Area::Objects => Area::Quarantine,
        Area::Quarantine => Area::Objects,
    };
    let other = layout.area_path(other_area, file.record.file_id);
    let size = match std::fs::metadata(&other) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Misplaced::Absent),
        Err(error) => return Err(io_error("read", &other)(error)),
    };
    if size != file.record.file_size_bytes {
        return Ok(Misplaced::Left(other));
    }
    let target_dir = layout.fanout_dir(file.area, file.record.file_id);
    std::fs::create_dir_all(&target_dir).map_err(io_error("create", &target_dir))?;
    std::fs::rename(&other, indexed_path).map_err(io_error("move", &other))?;
    for dir in [
        target_dir.as_path(),
        other.parent().unwrap_or(Path::new(".")),
    ] {
        std::fs::File::open(dir)
            .and_then(|handle| handle.sync_all())
            .map_err(io_error("sync directory", dir))?;
    }
    tracing::debug!(
        from = %other.display(),
        to = %indexed_path.display(),
        sop = %Escaped(&file.triplet.sop_instance_uid),
        "recovery: indexed file found in the other area, moved into place"
    );
    Ok(Misplaced::Moved)
}

/// Renames `from` to the path of `file_id` in `area`, creating its fan-out
/// directory if needed; the directories whose entries changed (the old
/// parent, and the new directories up to the data directory) are added to
/// `dirs_to_sync`. Returns the new path.
fn move_into_area(
    layout: &Layout,
    from: &Path,
    area: Area,
    file_id: FileId,
    dirs_to_sync: &mut BTreeSet<PathBuf>,
) -> Result<PathBuf, RecoveryError> {
    let target_dir = layout.fanout_dir(area, file_id);
    let destination = layout.area_path(area, file_id);
    std::fs::create_dir_all(&target_dir).map_err(io_error("create", &target_dir))?;
    std::fs::rename(from, &destination).map_err(io_error("move", from))?;
    if let Some(parent) = from.parent() {
        dirs_to_sync.insert(parent.to_owned());
    }
    let mut created = Some(target_dir.as_path());
    while let Some(dir) = created {
        dirs_to_sync.insert(dir.to_owned());
        if dir == layout.root() {
            break;
        }
        created = dir.parent();
    }
    Ok(destination)
}

/// Makes each directory durable (its entries: renames, removals).
fn sync_dirs<'a>(dirs: impl IntoIterator<Item = &'a PathBuf>) -> Result<(), RecoveryError> {
    for dir in dirs {
        std::fs::File::open(dir)
            .and_then(|file| file.sync_all())
            .map_err(io_error("sync directory", dir))?;
    }
    Ok(())
}

/// Step 0: every entry committed in doubt is checked against its file. The
/// ingest path commits an entry while its file's `fdatasync` and its
/// directory's `fsync` run, and answers only when all three succeeded; so
/// an entry still in doubt was never acknowledged, and its file may be
/// complete (kept), incomplete or missing (the entry is removed). The file
/// is looked for where the entry names it, in the other area, and in
/// `tmp/<core>/` (a rename that had not reached the disk). Moves are made
/// durable before the index forgets the doubt, so a crash here only
/// repeats this step.
fn settle_in_doubt(
    layout: &Layout,
    index: &Index,
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    let in_doubt = index.read()?.in_doubt()?;
    if in_doubt.is_empty() {
        return Ok(());
    }
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut ops = Vec::new();
    let mut cleared = Vec::new();
    let mut dirs_to_sync = BTreeSet::new();
    for doubt in in_doubt {
        let file_id = doubt.file_id;
        cleared.push(file_id);
        let (area, record, undo, triplet) = match doubt.entry {
            InDoubtEntry::Instance(entry) => (
                Area::Objects,
                entry.record,
                WriteOp::Remove(entry.triplet.clone()),
                entry.triplet,
            ),
            InDoubtEntry::Quarantine(entry) => (
                Area::Quarantine,
                entry.instance.record,
                WriteOp::PurgeQuarantine(entry.id),
                entry.instance.triplet,
            ),
            // No entry names the file any more: only the mark goes.
            _ => continue,
        };
        if let Location::Record(record_place) = index.read()?.location(file_id)? {
            let kept = settle_record(layout, record_place, &triplet, &record, &mut buffer)?;
            if kept {
                report.in_doubt_kept += 1;
            } else {
                ops.push(undo);
                report.in_doubt_removed += 1;
            }
            continue;
        }
        let place = layout.area_path(area, file_id);
        let other = match area {
            Area::Objects => Area::Quarantine,
            _ => Area::Objects,
        };
        let core = ((file_id.0 >> 48) & 0xffff) as usize;
        let candidates = [
            place.clone(),
            layout.area_path(other, file_id),
            layout.tmp_path(core, file_id),
        ];
        let found: Vec<&PathBuf> = candidates.iter().filter(|path| path.exists()).collect();
        let complete = found
            .iter()
            .find(|path| check_file(path, &record, &mut buffer).is_none());
        if let Some(complete) = complete {
            if **complete != place {
                move_into_area(layout, complete, area, file_id, &mut dirs_to_sync)?;
            }
            // After a process crash the data may be only in the page cache:
            // flush it, and its directory below, before the mark goes.
            std::fs::File::open(&place)
                .and_then(|file| file.sync_data())
                .map_err(io_error("flush", &place))?;
            if let Some(parent) = place.parent() {
                dirs_to_sync.insert(parent.to_owned());
            }
            tracing::info!(
                sop = %Escaped(&triplet.sop_instance_uid),
                path = %place.display(),
                "recovery: entry committed in doubt; its file is complete, kept"
            );
            report.in_doubt_kept += 1;
            continue;
        }
        // Never acknowledged and not complete: the entry goes; a partial
        // file is kept in orphans/ for review, never deleted.
        let orphans_dir = layout.orphans_dir();
        for path in found {
            std::fs::create_dir_all(&orphans_dir).map_err(io_error("create", &orphans_dir))?;
            let name = crate::store::layout::file_name(file_id);
            let destination = orphan_destination(&orphans_dir, &name)?;
            std::fs::rename(path, &destination).map_err(io_error("move", path))?;
            if let Some(parent) = path.parent() {
                dirs_to_sync.insert(parent.to_owned());
            }
            dirs_to_sync.insert(orphans_dir.clone());
        }
        tracing::warn!(
            study = %Escaped(&triplet.study_instance_uid),
            series = %Escaped(&triplet.series_instance_uid),
            sop = %Escaped(&triplet.sop_instance_uid),
            path = %place.display(),
            "recovery: entry committed in doubt, its file is missing or incomplete (never acknowledged): entry removed"
        );
        ops.push(undo);
        report.in_doubt_removed += 1;
    }
    sync_dirs(&dirs_to_sync)?;
    ops.push(WriteOp::ClearInDoubt(cleared));
    execute_in_batches(index, ops)?;
    Ok(())
}

/// An entry committed in doubt whose file id is a segment record: kept when
/// the record is whole and valid and holds the entry's instance (its flush
/// may have happened; it is flushed again here, as the process may have
/// stopped before its round), else its entry is to be removed (`false`):
/// never acknowledged, and the record's place becomes dead bytes (nothing
/// is moved: the segment is the record's only home).
fn settle_record(
    layout: &Layout,
    place: RecordPlace,
    triplet: &Triplet,
    record: &sluice_index::InstanceRecord,
    buffer: &mut [u8],
) -> Result<bool, RecoveryError> {
    let path = layout.segment_path(place.segment);
    match check_record(&path, place.offset, triplet, record, buffer) {
        None => {
            std::fs::File::open(&path)
                .and_then(|file| file.sync_data())
                .map_err(io_error("flush", &path))?;
            tracing::info!(
                sop = %Escaped(&triplet.sop_instance_uid),
                path = %path.display(),
                offset = place.offset,
                "recovery: entry committed in doubt; its record is whole and valid, kept"
            );
            Ok(true)
        }
        Some(problem) => {
            tracing::warn!(
                study = %Escaped(&triplet.study_instance_uid),
                series = %Escaped(&triplet.series_instance_uid),
                sop = %Escaped(&triplet.sop_instance_uid),
                path = %path.display(),
                offset = place.offset,
                ?problem,
                "recovery: entry committed in doubt, its record is missing or not whole (never acknowledged): entry removed"
            );
            Ok(false)
        }
    }
}

/// Operations per batch recovery submits: well under the writer's batch
/// limit (`IndexOptions::batch_ops_max`, 10,000 by default), however many
/// files a crash left.
const RECOVERY_BATCH_OPS: usize = 1000;

/// Runs `ops` in order, in batches of [`RECOVERY_BATCH_OPS`], each answered
/// once durable; the item results in order.
fn execute_in_batches(
    index: &Index,
    ops: Vec<WriteOp>,
) -> Result<Vec<sluice_index::ItemResult>, IndexError> {
    let writer = index.writer();
    let mut results = Vec::with_capacity(ops.len());
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let batch: Vec<WriteOp> = ops.by_ref().take(RECOVERY_BATCH_OPS).collect();
        results.extend(writer.execute(batch)?);
    }
    Ok(results)
}

/// Step 2's second half: indexes the sealed, complete files found without an
/// entry, in the order they arrived (their last write), with the
/// default duplicate policy (a duplicate is held in quarantine, never
/// dropped), and moves each into the area its entry names, or to `orphans/`
/// when the index refuses it. Each file and its directory are flushed first
/// (after a process crash the data may still be only in the page cache), so
/// an entry never becomes durable before its file.
fn index_again(
    layout: &Layout,
    index: &Index,
    mut files: Vec<(FileId, PathBuf, Area, NewInstance)>,
    dirs_to_sync: &mut BTreeSet<PathBuf>,
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    if files.is_empty() {
        return Ok(());
    }
    // Arrival order (the files' last write, then the id), so that of two
    // copies of one triplet the one that was stored first is stored again.
    files.sort_by_key(|(file_id, _, _, instance)| (instance.record.received_at_unix_ns, *file_id));
    let mut parents = BTreeSet::new();
    for (_, path, _, _) in &files {
        std::fs::File::open(path)
            .and_then(|file| file.sync_data())
            .map_err(io_error("flush", path))?;
        if let Some(parent) = path.parent() {
            parents.insert(parent.to_owned());
        }
    }
    sync_dirs(&parents)?;
    let ops = files
        .iter()
        .map(|(_, _, _, instance)| WriteOp::Store(StoreRequest::new(instance.clone())))
        .collect();
    let results = execute_in_batches(index, ops)?;
    let orphans_dir = layout.orphans_dir();
    for ((file_id, path, area, instance), result) in files.into_iter().zip(results) {
        let target = match &result {
            Ok(WriteOutcome::Store(outcome)) => match outcome.disposition() {
                None => Some(Area::Objects),
                Some(Disposition::Quarantined { .. }) => Some(Area::Quarantine),
                Some(_) => None,
            },
            _ => None,
        };
        match target {
            Some(target) => {
                report.reindexed += 1;
                tracing::info!(
                    sop = %Escaped(&instance.triplet.sop_instance_uid),
                    path = %path.display(),
                    area = target.dir_name(),
                    "recovery: sealed file without an entry (its commit lost in the crash) indexed again"
                );
                if target != area {
                    move_into_area(layout, &path, target, file_id, dirs_to_sync)?;
                }
            }
            None => {
                tracing::warn!(
                    sop = %Escaped(&instance.triplet.sop_instance_uid),
                    path = %path.display(),
                    ?result,
                    "recovery: the index refused a sealed file without an entry; moved to orphans/"
                );
                std::fs::create_dir_all(&orphans_dir).map_err(io_error("create", &orphans_dir))?;
                let destination =
                    orphan_destination(&orphans_dir, &crate::store::layout::file_name(file_id))?;
                std::fs::rename(&path, &destination).map_err(io_error("move", &path))?;
                dirs_to_sync.insert(orphans_dir.clone());
                if let Some(parent) = path.parent() {
                    dirs_to_sync.insert(parent.to_owned());
                }
                report.orphans_moved += 1;
            }
        }
    }
    Ok(())
}

/// Runs start-up recovery on the data directory of `layout`, whose index is
/// `index`. Call it before accepting associations (nothing may be writing
/// the data directory meanwhile). Logs one warning per damaged index entry
/// and one info line with the report's summary.
pub fn recover(layout: &Layout, index: &Index) -> Result<RecoveryReport, RecoveryError> {
    recover_after(layout, index, LastStop::NotRecorded, false)
}

/// [`recover`] after a stop that left `last_stop` (what the data
/// directory's lock took: [`clean_stop`]): after a clean stop whose record
/// still fits the index, the archive-wide steps (the walk of `objects/`
/// and `quarantine/`, the check of every entry's file) are skipped, unless
/// `full_check_requested` (the operator's `sluice serve --full-recovery`)
/// or the steps that always run find a sign of a crash. The log names the
/// reason for a full check: the record's own when it asks for one
/// ([`FullCheckReason`]), else the request.
pub fn recover_after(
    layout: &Layout,
    index: &Index,
    last_stop: LastStop,
    full_check_requested: bool,
) -> Result<RecoveryReport, RecoveryError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    // Read before recovery writes anything to the index.
    let fingerprint = clean_stop::index_fingerprint(&index.stats()?);
    let mut full_check = match &last_stop {
        LastStop::Clean(record) if record.index_fingerprint == fingerprint => {
            full_check_requested.then_some(FullCheckReason::Requested)
        }
        LastStop::Clean(_) => Some(FullCheckReason::IndexChanged),
        LastStop::Unreadable => Some(FullCheckReason::UnreadableRecord),
        LastStop::NotRecorded => Some(FullCheckReason::NoCleanStop),
    };

    // 0. Entries committed in doubt: settled first, while their files may
    //    still be in tmp/.
    settle_in_doubt(layout, index, &mut report)?;

    // 0b. Open segments: records past the indexed end indexed again, the
    //     torn tail cut, every segment sealed (ingest never reopens one).
    segments::recover_segments(layout, index, &mut report)?;

    // 1. Files being received when the process stopped were never
    //    acknowledged: remove them (the per-core directories stay).
    let tmp_dir = layout.tmp_dir();
    let mut temp_files = Vec::new();
    walk_files(&tmp_dir, |entry| {
        temp_files.push(entry.path());
        Ok(())
    })
    .map_err(io_error("read", &tmp_dir))?;
    for path in &temp_files {
        std::fs::remove_file(path).map_err(io_error("remove", path))?;
        report.temp_files_removed += 1;
    }

    // After a clean stop nothing was in flight: any of it says otherwise.
    if full_check.is_none()
        && report.in_doubt_kept
            + report.in_doubt_removed
            + report.temp_files_removed
            + report.segment_records_reindexed
            > 0
    {
        full_check = Some(FullCheckReason::InFlightFound);
    }
    match full_check {
        None => {
            report.archive_check_skipped = true;
            report.elapsed = started.elapsed();
            tracing::info!("{report}");
            return Ok(report);
        }
        Some(reason) => tracing::info!(
            reason = reason.as_str(),
            index = fingerprint,
            recorded_index = match &last_stop {
                LastStop::Clean(record) => record.index_fingerprint.as_str(),
                _ => "",
            },
            "recovery: checking the whole archive (objects/ and quarantine/ walked, every index entry's file checked)"
        ),
    }
    let entries_total = index
        .stats()?
        .tables
        .iter()
        .filter(|table| table.name == "instances" || table.name == "quarantine")
        .map(|table| table.entries)
        .sum::<u64>();
    let mut progress = Progress::new();

    // 2. Files in objects/ and quarantine/ that no index entry references:
    //    sealed and complete ones are indexed again, the rest go to orphans/.
    let orphans_dir = layout.orphans_dir();
    let mut dirs_to_sync = BTreeSet::new();
    let mut to_index = Vec::new();
    for area in [Area::Objects, Area::Quarantine] {
        let area_dir = layout.area_dir(area);
        let mut unreferenced = Vec::new();
        let mut misplaced = Vec::new();
        {
            let txn = index.read()?;
            let mut lookup_error = None;
            let mut files_seen = 0u64;
            // No `stat` per file here: step 3 stats each indexed file, and
            // an unindexed one is read whole (`reindex`) or moved.
            walk_files(&area_dir, |entry| {
                let path = &entry.path();
                files_seen += 1;
                progress.tick(|| {
                    tracing::info!(
                        area = area.dir_name(),
                        files_seen,
                        index_entries = entries_total,
                        "recovery: walking the archive for files without an entry"
                    );
                });
                let referenced = match layout.parse_area_path(path) {
                    // A file id's name in a directory the layout would not
                    // put it in (an older fan-out, an operator's move): if
                    // the index references the id, it goes to its place.
                    None => match path
                        .file_name()
                        .and_then(|name| name.to_str())
                        .and_then(crate::store::layout::parse_file_name)
                        .map(|file_id| (file_id, txn.file_role(file_id)))
                    {
                        Some((file_id, Ok(Some(role)))) => {
                            misplaced.push((path.to_owned(), file_id, role));
                            true
                        }
                        Some((_, Err(error))) => {
                            lookup_error.get_or_insert(error);
                            true
                        }
                        Some((_, Ok(None))) | None => false,
                    },
                    Some((_, file_id)) => match txn.file_role(file_id) {
                        Ok(role) => role.is_some(),
                        Err(error) => {
                            lookup_error.get_or_insert(error);
                            true
                        }
                    },
                };
                if !referenced {
                    unreferenced.push(path.to_owned());
                }
                Ok(())
            })
            .map_err(io_error("read", &area_dir))?;
            if let Some(error) = lookup_error {
                return Err(error.into());
            }
        }
        for (path, file_id, role) in misplaced {
            let area = match role {
                sluice_index::FileRole::Quarantine => Area::Quarantine,
                _ => Area::Objects,
            };
            let destination = layout.area_path(area, file_id);
            if destination.exists() {
                // Never overwrite: the file in place is the one step 3
                // checks; this one stays where it is, reported.
                tracing::warn!(
                    path = %path.display(),
                    place = %destination.display(),
                    "recovery: indexed file id found outside its directory, and its place is taken; left where it is"
                );
                continue;
            }
            move_into_area(layout, &path, area, file_id, &mut dirs_to_sync)?;
            tracing::info!(
                from = %path.display(),
                to = %destination.display(),
                "recovery: indexed file moved into its fan-out directory"
            );
            report.misplaced_moved += 1;
        }
        for path in unreferenced {
            // A sealed, complete file whose entry a crash took: indexed
            // again below. Anything else was never acknowledged.
            let sealed = layout
                .parse_area_path(&path)
                .map(|(area, file_id)| (area, file_id, reindex::instance_of_file(&path, file_id)));
            match sealed {
                Some((area, file_id, Ok(instance))) => {
                    to_index.push((file_id, path, area, instance));
                    continue;
                }
                Some((_, _, Err(reason))) => tracing::debug!(
                    path = %path.display(),
                    %reason,
                    "recovery: unindexed file not indexed again"
                ),
                None => {}
            }
            std::fs::create_dir_all(&orphans_dir).map_err(io_error("create", &orphans_dir))?;
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "unnamed".to_owned());
            let destination = orphan_destination(&orphans_dir, &name)?;
            std::fs::rename(&path, &destination).map_err(io_error("move", &path))?;
            // Debug only: the summary line says how many; orphans/ holds them.
            tracing::debug!(
                from = %path.display(),
                to = %destination.display(),
                "recovery: file without an index entry moved to orphans/"
            );
            if let Some(parent) = path.parent() {
                dirs_to_sync.insert(parent.to_owned());
            }
            dirs_to_sync.insert(orphans_dir.clone());
            report.orphans_moved += 1;
        }
    }
    index_again(layout, index, to_index, &mut dirs_to_sync, &mut report)?;
    if report.temp_files_removed > 0 {
        for path in &temp_files {
            if let Some(parent) = path.parent() {
                dirs_to_sync.insert(parent.to_owned());
            }
        }
    }
    // The moves and removals are made durable before the server starts
    // writing new files beside them.
    sync_dirs(&dirs_to_sync)?;

    // 3. Every index entry must have its file, of the recorded size.
    //    A record's segment must reach past the record's end (verify reads
    //    the records themselves); its place is looked up only when the
    //    index knows any segment.
    let has_segments = !index.read()?.segments()?.is_empty();
    let mut stat_error = None;
    for_each_indexed_file(index, |file| {
        report.entries_checked += 1;
        progress.tick(|| {
            tracing::info!(
                checked = report.entries_checked,
                total = entries_total,
                "recovery: checking every index entry's file"
            );
        });
        let location = if has_segments {
            index.read()?.location(file.record.file_id)?
        } else {
            Location::File
        };
        let (path, expected_bytes, actual_bytes, other_area_path) = match location {
            Location::Record(place) => {
                let path = layout.segment_path(place.segment);
                let actual_bytes = match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.len() >= place.end() => return Ok(()),
                    Ok(metadata) => Some(metadata.len()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                    Err(error) => {
                        stat_error.get_or_insert(io_error("read", &path)(error));
                        return Ok(());
                    }
                };
                (path, place.end(), actual_bytes, None)
            }
            Location::File => {
                let path = file.path(layout);
                let expected_bytes = file.record.file_size_bytes;
                let mut other_area_path = None;
                let actual_bytes = match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.len() == expected_bytes => return Ok(()),
                    Ok(metadata) => Some(metadata.len()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        match move_from_other_area(layout, &file, &path) {
                            Ok(Misplaced::Moved) => {
                                report.misplaced_moved += 1;
                                return Ok(());
                            }
                            Ok(Misplaced::Left(other)) => other_area_path = Some(other),
                            Ok(Misplaced::Absent) => {}
                            Err(error) => {
                                stat_error.get_or_insert(error);
                                return Ok(());
                            }
                        }
                        None
                    }
                    Err(error) => {
                        stat_error.get_or_insert(io_error("read", &path)(error));
                        return Ok(());
                    }
                };
                (path, expected_bytes, actual_bytes, other_area_path)
            }
        };
        let triplet = &file.triplet;
        let entry = DamagedEntry {
            triplet: file.triplet.clone(),
            quarantine_id: file.quarantine_id,
            path: path.clone(),
            expected_bytes,
            actual_bytes,
            other_area_path,
        };
        match actual_bytes {
            None => {
                tracing::warn!(
                    study = %Escaped(&triplet.study_instance_uid),
                    series = %Escaped(&triplet.series_instance_uid),
                    sop = %Escaped(&triplet.sop_instance_uid),
                    quarantine_id = ?file.quarantine_id,
                    path = %path.display(),
                    "recovery: indexed file is missing"
                );
                report.missing_files_total += 1;
                if report.missing_files.len() < PROBLEMS_KEPT_MAX {
                    report.missing_files.push(entry);
                }
            }
            Some(actual) => {
                tracing::warn!(
                    study = %Escaped(&triplet.study_instance_uid),
                    series = %Escaped(&triplet.series_instance_uid),
                    sop = %Escaped(&triplet.sop_instance_uid),
                    quarantine_id = ?file.quarantine_id,
                    path = %path.display(),
                    expected_bytes,
                    actual_bytes = actual,
                    "recovery: indexed file has the wrong size"
                );
                report.wrong_size_total += 1;
                if report.wrong_size.len() < PROBLEMS_KEPT_MAX {
                    report.wrong_size.push(entry);
                }
            }
        }
        Ok::<(), RecoveryError>(())
    })?;
    if let Some(error) = stat_error {
        return Err(error);
    }
    report.elapsed = started.elapsed();
    if report.index_is_whole() && !report.repaired_anything() {
        tracing::info!("{report}");
    } else {
        tracing::warn!("{report}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_names_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let first = orphan_destination(dir.path(), "a.dcm").unwrap();
        assert_eq!(first, dir.path().join("a.dcm"));
        std::fs::write(&first, b"1").unwrap();
        let second = orphan_destination(dir.path(), "a.dcm").unwrap();
        assert_eq!(second, dir.path().join("a.dcm.1"));
        std::fs::write(&second, b"2").unwrap();
        assert_eq!(
            orphan_destination(dir.path(), "a.dcm").unwrap(),
            dir.path().join("a.dcm.2")
        );
    }

    #[test]
    fn the_summary_is_one_line_with_plurals() {
        let report = RecoveryReport {
            temp_files_removed: 1,
            orphans_moved: 2,
            entries_checked: 1,
            missing_files_total: 1,
            ..RecoveryReport::default()
        };
        assert_eq!(
            report.to_string(),
            "recovery: 1 temporary file removed, 2 unindexed files moved to orphans/, \
             1 index entry checked: 1 file missing, 0 of the wrong size (0.000 s)"
        );
        assert_eq!(
            RecoveryReport {
                archive_check_skipped: true,
                ..RecoveryReport::default()
            }
            .to_string(),
            "recovery (clean stop recorded: archive walk and entry check skipped): \
             0 temporary files removed, 0 unindexed files moved to orphans/, \
             0 index entries checked: 0 files missing, 0 of the wrong size (0.000 s)"
        );
    }
}
