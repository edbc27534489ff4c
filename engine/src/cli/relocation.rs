//! Moving stored instances' bytes to a new place and switching their index
//! entries: what `sluice migrate` (between the layouts) and `sluice
//! compact` (records out of mostly dead segments) share, so the order that
//! makes them crash-safe is written once (docs/design/segments.md,
//! "Migrating between layouts" and "Compaction"):
//!
//! 1. a new segment is sealed in the index **before** its file exists
//!    (recovery never scans it, ingest never appends to it, so records a
//!    crash leaves unnamed in it stay dead bytes), then created and its
//!    name made durable ([`RecordSink`]);
//! 2. each instance's bytes are read, checked against the index
//!    ([`matches_index`], [`read_checked_record`]) and appended as a record;
//! 3. the segment is flushed, **then** one transaction switches the batch
//!    ([`relocate`], `WriteOp::Relocate`, refused for an entry that changed);
//! 4. **then** the old copies are dropped by the caller.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use sluice_index::{FileId, Index, IndexError, Location, RecordPlace, WriteOp, WriteOutcome};

use super::quarantine::sync_dir;
use super::{CliError, OpenStore};
use crate::escape::Escaped;
use crate::store::layout::{dataset_checksum, Area, Layout};
use crate::store::segment::{self, RecordUids, SegmentWriter, RECORD_ALIGN};
use crate::store::walk::IndexedFile;

/// What relocating records works on: a store's directories and index, and
/// where new segments' ids come from.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) index: &'a Index,
    /// The ids a running server's ingest cores take theirs from (online
    /// compaction); `None` for a command holding the data directory's lock
    /// (ids past every one the index and `segments/` know).
    pub(crate) ids: Option<&'a crate::scp::SegmentIds>,
    /// Cluster mode: where the relocated instances are told to the
    /// catalogue (their rows' record places follow them).
    pub(crate) places: Option<&'a crate::cluster::Places>,
}

impl OpenStore {
    /// The parts relocation works on, for a command holding the lock.
    pub(super) fn parts(&self) -> Parts<'_> {
        Parts {
            layout: &self.layout,
            index: &self.index,
            ids: None,
            places: None,
        }
    }

    /// The catalogue's side of a command's relocations, when the data
    /// directory is a cluster node's (`Parts::places`); to finish with
    /// [`finish_places`] once the relocations are done.
    pub(super) fn places(&self) -> Result<Option<crate::cluster::Places>, CliError> {
        let cluster = self.data_dir().join(crate::cluster::CLUSTER_DIR);
        crate::cluster::Offline::open(self.data_dir())
            .map(|offline| offline.map(crate::cluster::Places::Offline))
            .map_err(CliError::io("open the cluster outbox in", &cluster))
    }
}

/// A command's relocations all told to the catalogue: its outbox flushed
/// (`crate::cluster::Offline::finish`).
pub(super) fn finish_places(
    store: &OpenStore,
    places: Option<crate::cluster::Places>,
) -> Result<(), CliError> {
    let cluster = store.data_dir().join(crate::cluster::CLUSTER_DIR);
    places
        .map_or(Ok(()), crate::cluster::Places::finish)
        .map_err(CliError::io("flush the cluster outbox in", &cluster))
}

/// A relocation step that failed: the index's error, or a file's.
#[derive(Debug)]
pub(crate) enum Stop {
    Index(IndexError),
    Cli(CliError),
}

impl From<IndexError> for Stop {
    fn from(error: IndexError) -> Self {
        Stop::Index(error)
    }
}

impl From<CliError> for Stop {
    fn from(error: CliError) -> Self {
        Stop::Cli(error)
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Index(error) => write!(f, "index: {error}"),
            Stop::Cli(error) => write!(f, "{error}"),
        }
    }
}

impl Stop {
    /// As the command's error.
    pub(super) fn into_cli(self, store: &OpenStore) -> CliError {
        match self {
            Stop::Index(error) => store.index_error()(error),
            Stop::Cli(error) => error,
        }
    }
}

/// Runs start-up recovery (the code `sluice serve` runs before it listens:
/// in-doubt entries settled, open segments scanned, cut and sealed), then
/// checks it left nothing unsettled. The command holds the data
/// directory's lock, so nothing writes meanwhile; a store a server left
/// with open segments (every clean stop does) is then ready to move.
pub(super) fn settle(
    store: &OpenStore,
    command: &str,
    output: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let report =
        crate::recovery::recover(&store.layout, &store.index).map_err(|error| CliError::Io {
            operation: "run start-up recovery on",
            path: store.data_dir().to_owned(),
            source: std::io::Error::other(error.to_string()),
        })?;
    if report.repaired_anything() {
        writeln!(output, "start-up recovery first: {report}")?;
    }
    check_recovered(store, command)
}

/// Refuses a store that start-up recovery has not settled: entries in
/// doubt, or segments not sealed (whose tails recovery scans). Recovery at
/// the next `sluice serve` is what settles them; moving records first could
/// move an entry recovery would remove, or leave a record recovery would
/// index. `command` names the refused command.
fn check_recovered(store: &OpenStore, command: &str) -> Result<(), CliError> {
    let read = store.index.read().map_err(store.index_error())?;
    let in_doubt = read.in_doubt().map_err(store.index_error())?.len();
    let indexed = read.segments().map_err(store.index_error())?;
    drop(read);
    let sealed: BTreeSet<u64> = indexed
        .iter()
        .filter(|(_, state)| state.sealed)
        .map(|(id, _)| *id)
        .collect();
    let open = segment_files(&store.layout)?
        .into_iter()
        .filter(|id| !sealed.contains(id))
        .count()
        + indexed.iter().filter(|(_, state)| !state.sealed).count();
    if in_doubt > 0 || open > 0 {
        return Err(CliError::BadArgument(format!(
            "start-up recovery left {} unsettled ({in_doubt} entries in doubt, {open} segments \
             not sealed): {command} changed nothing",
            store.data_dir().display()
        )));
    }
    Ok(())
}

/// The ids of the `segments/<16 hex digits>.seg` files.
pub(super) fn segment_files(layout: &Layout) -> Result<Vec<u64>, CliError> {
    let dir = layout.segments_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(CliError::io("list", &dir)(error)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CliError::io("list", &dir))?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|name| name.strip_suffix(".seg"))
            .filter(|hex| hex.len() == 16)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        if let Some(id) = id {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Creates `dir` and any missing ancestors, each new name made durable
/// (its parent synced): a directory whose own entry a power cut can take
/// would take every file in it, however well those were synced (found by
/// `sluice-power-loss --scenario migrate`: a files store migrated to
/// segments lost `segments/` and every record in it).
pub(super) fn create_dir_durably(dir: &Path) -> Result<(), CliError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at.to_owned());
        match at.parent() {
            Some(up) => at = up,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(CliError::io("create", dir))?;
    for created in missing.iter().rev() {
        sync_dir(parent(created))?;
    }
    Ok(())
}

pub(super) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Reports an instance left where it is (`not_done`: "not migrated").
pub(super) fn report_damaged(file: &IndexedFile, place: &str, why: &str, not_done: &str) {
    eprintln!("{}", damaged_line(file, place, why, not_done));
}

/// The line reporting an instance left where it is, escaped.
pub(crate) fn damaged_line(file: &IndexedFile, place: &str, why: &str, not_done: &str) -> String {
    let line = format!(
        "DAMAGED     {place} (SOP Instance UID {}): {why}; left as it is, {not_done}",
        file.triplet.sop_instance_uid
    );
    Escaped(line).to_string()
}

/// Whether `part10` is the instance the index records (size, then the data
/// set's XXH3-128, as `verify` checks).
pub(super) fn matches_index(file: &IndexedFile, part10: &[u8]) -> Result<(), String> {
    let record = &file.record;
    if part10.len() as u64 != record.file_size_bytes {
        return Err(format!(
            "{} bytes, the index records {}",
            part10.len(),
            record.file_size_bytes
        ));
    }
    let dataset = usize::try_from(record.dataset_offset_bytes)
        .ok()
        .and_then(|at| part10.get(at..))
        .ok_or_else(|| "data set offset past the end".to_owned())?;
    if dataset_checksum(dataset) != record.checksum {
        return Err("data set checksum differs from the index's".to_owned());
    }
    Ok(())
}

/// The Part 10 bytes of the record at `offset` of `segment` (whose size is
/// `size`), checked: header, payload checksum, the instance it names, size
/// and data set checksum.
pub(crate) fn read_checked_record(
    segment: &File,
    offset: u64,
    size: u64,
    file: &IndexedFile,
) -> Result<Vec<u8>, String> {
    let (head, part10) =
        segment::read_record(segment, offset, size).map_err(|error| error.to_string())?;
    let triplet = &file.triplet;
    if head.uids.study != triplet.study_instance_uid
        || head.uids.series != triplet.series_instance_uid
        || head.uids.sop != triplet.sop_instance_uid
    {
        return Err("the record names another instance than the index entry".to_owned());
    }
    matches_index(file, &part10)?;
    Ok(part10)
}

/// The record UIDs of an indexed instance.
pub(crate) fn record_uids(file: &IndexedFile) -> RecordUids {
    RecordUids {
        study: file.triplet.study_instance_uid.clone(),
        series: file.triplet.series_instance_uid.clone(),
        sop: file.triplet.sop_instance_uid.clone(),
    }
}

/// Submits one batch of relocations `(instance, from, to)` in one
/// transaction (through the index's one writer thread, which a running
/// server's ingest shares: the batch is one more group in one commit);
/// which were applied, and why each other was refused
/// (`REFUSED     file id ...`). In cluster mode the applied ones are then
/// told to the catalogue (`Parts::places`: after the commit, so a place
/// change names a place the index holds; a crash in between is the next
/// start's reconciliation's).
pub(crate) fn relocate_batch(
    parts: Parts<'_>,
    moves: &[(&IndexedFile, Location, Location)],
) -> Result<Vec<Result<(), String>>, Stop> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let ops = moves
        .iter()
        .map(|&(file, from, to)| WriteOp::Relocate {
            file_id: file.record.file_id,
            from,
            to,
        })
        .collect();
    let results = parts.index.writer().execute(ops)?;
    debug_assert_eq!(results.len(), moves.len(), "one result per operation");
    let applied: Vec<Result<(), String>> = results
        .into_iter()
        .zip(moves)
        .map(|(result, (file, _, _))| match result {
            Ok(WriteOutcome::Relocated(_)) => Ok(()),
            other => Err(format!(
                "REFUSED     file id {:#x}: {other:?}",
                file.record.file_id.0
            )),
        })
        .collect();
    if let Some(places) = parts.places {
        // Stored instances only: quarantine is not in the catalogue.
        let moved: Vec<(&str, FileId)> = moves
            .iter()
            .zip(&applied)
            .filter(|((file, _, _), applied)| applied.is_ok() && file.area == Area::Objects)
            .map(|((file, _, _), _)| (file.triplet.sop_instance_uid.as_str(), file.record.file_id))
            .collect();
        places.relocated(&moved);
    }
    Ok(applied)
}

/// [`relocate_batch`] for a command: a refused one is printed.
pub(super) fn relocate(
    parts: Parts<'_>,
    moves: &[(&IndexedFile, Location, Location)],
) -> Result<Vec<bool>, Stop> {
    Ok(relocate_batch(parts, moves)?
        .into_iter()
        .map(|result| result.inspect_err(|refused| eprintln!("{refused}")).is_ok())
        .collect())
}

/// New segments a run appends records to, one at a time: each sealed in
/// the index before its file is created, its ids past every id the index
/// and `segments/` know (as ingest allocates them).
pub(crate) struct RecordSink<'a> {
    parts: Parts<'a>,
    segment_bytes: u64,
    next_id: u64,
    epoch: u64,
    open: Option<OpenSegment>,
    /// Segments created so far.
    pub(crate) created: u64,
}

/// The segment being written: its id, its writer.
struct OpenSegment {
    id: u64,
    writer: SegmentWriter,
}

impl<'a> RecordSink<'a> {
    pub(crate) fn new(parts: Parts<'a>, segment_bytes: u64) -> Result<RecordSink<'a>, Stop> {
        let segments_dir = parts.layout.segments_dir();
        create_dir_durably(&segments_dir)?;
        let next_id = {
            let indexed = parts.index.read()?.segments()?;
            let on_disk = segment_files(parts.layout)?;
            indexed
                .iter()
                .map(|(id, _)| *id)
                .chain(on_disk)
                .max()
                .unwrap_or(0)
                + 1
        };
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64);
        Ok(RecordSink {
            parts,
            segment_bytes,
            next_id,
            epoch,
            open: None,
            created: 0,
        })
    }

    /// Whether a Part 10 file of `part10_bytes` fits a segment as a record.
    pub(crate) fn holds(&self, part10_bytes: u64) -> bool {
        segment::padded(part10_bytes.saturating_add(segment::HEADER_BYTES_MAX as u64))
            <= self.segment_bytes
    }

    /// Appends `part10` as a record of `uids` (not flushed); its place, or
    /// why it cannot be encoded.
    pub(crate) fn append(
        &mut self,
        uids: &RecordUids,
        part10: &[u8],
    ) -> Result<Result<RecordPlace, String>, Stop> {
        let record = match segment::encode_record(self.epoch, uids, part10) {
            Ok(record) => record,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let length = record.as_slice().len() as u64;
        if !self
            .open
            .as_ref()
            .is_some_and(|open| open.writer.fits(length))
        {
            if let Some(full) = self.open.take() {
                finish_segment(full, true)?;
            }
            let id = match self.parts.ids {
                Some(ids) => ids.take(),
                None => {
                    self.next_id += 1;
                    self.next_id - 1
                }
            };
            self.open = Some(new_segment(self.parts, id, self.segment_bytes)?);
            self.created += 1;
        }
        let Some(current) = self.open.as_mut() else {
            unreachable!("a segment was opened above");
        };
        let offset = current
            .writer
            .append(&record)
            .map_err(CliError::io("write", current.writer.path()))?;
        Ok(Ok(RecordPlace {
            segment: current.id,
            offset,
            length,
        }))
    }

    /// Makes every record appended so far durable (before any entry names
    /// one of them).
    pub(crate) fn flush(&self) -> Result<(), Stop> {
        if let Some(current) = &self.open {
            current
                .writer
                .sync()
                .map_err(CliError::io("flush", current.writer.path()))?;
        }
        Ok(())
    }

    /// Done: the last segment is flushed and cut to its records (the unused
    /// preallocation freed).
    pub(crate) fn finish(mut self) -> Result<(), Stop> {
        match self.open.take() {
            Some(last) => finish_segment(last, false),
            None => Ok(()),
        }
    }
}

/// A new segment `id`: sealed in the index first (recovery never scans it,
/// so a record a crash leaves unnamed is never indexed; nothing appends to
/// it after this run), then created (`fallocate`) and its name made durable.
fn new_segment(parts: Parts<'_>, id: u64, size: u64) -> Result<OpenSegment, Stop> {
    parts
        .index
        .writer()
        .execute(vec![WriteOp::SealSegment(id)])?
        .into_iter()
        .next()
        .transpose()
        .map_err(|reason| {
            Stop::Cli(CliError::IndexRefused {
                operation: "sealing a new segment",
                reason: reason.to_string(),
            })
        })?;
    let path = parts.layout.segment_path(id);
    let writer = SegmentWriter::create(&path, size).map_err(CliError::io("create", &path))?;
    sync_dir(&parts.layout.segments_dir())?;
    Ok(OpenSegment { id, writer })
}

/// Done with a segment: flushed; the last one of a run (`full` false) is
/// cut to its records (the unused preallocation freed).
fn finish_segment(segment: OpenSegment, full: bool) -> Result<(), Stop> {
    let path = segment.writer.path().to_owned();
    segment
        .writer
        .sync()
        .map_err(CliError::io("flush", &path))?;
    if full {
        return Ok(());
    }
    let end = segment.writer.append_position();
    debug_assert_eq!(end % RECORD_ALIGN, 0, "records are aligned");
    drop(segment);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(CliError::io("open", &path))?;
    file.set_len(end)
        .and_then(|()| file.sync_all())
        .map_err(CliError::io("truncate", &path))?;
    Ok(())
}

/// Deletes every sealed segment file no entry names any more (and not
/// recorded in the object store, whose copy its records may still be read
/// from: compaction leaves those, docs/design/segments.md). Its index row
/// stays, sealed with nothing live: ids are never reused and recovery does
/// not scan it. Returns how many were deleted; `segments/` is synced after.
pub(crate) fn delete_empty_segments(
    parts: Parts<'_>,
    only: Option<&BTreeSet<u64>>,
) -> Result<u64, Stop> {
    let (segments, uploaded) = {
        let read = parts.index.read()?;
        let uploaded: BTreeSet<u64> = read
            .segment_objects()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        (read.segments()?, uploaded)
    };
    let mut deleted = 0;
    for (id, state) in segments {
        if !state.sealed
            || state.live_records > 0
            || uploaded.contains(&id)
            || only.is_some_and(|only| !only.contains(&id))
        {
            continue;
        }
        let path = parts.layout.segment_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => deleted += 1,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(CliError::io("remove", &path)(error).into()),
        }
    }
    if deleted > 0 {
        sync_dir(&parts.layout.segments_dir())?;
    }
    Ok(deleted)
}
