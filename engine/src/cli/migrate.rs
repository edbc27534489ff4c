//! `sluice migrate --to segments|files`: converts a stored data directory
//! between the storage layouts offline (docs/design/segments.md, "Migrating
//! between layouts", has why each crash point is safe; docs/operations.md
//! how a site is migrated).
//!
//! The command holds the data directory's lock for its whole run (refused
//! while `sluice serve` runs). Each instance's bytes are read and checked
//! against the index's size and checksum (a damaged one is reported and left
//! where it is), written in the target layout and made durable, **then** the
//! index entries of a batch are switched in one transaction
//! (`WriteOp::Relocate`, refused for an entry that changed), **then** the
//! old copies are dropped (files unlinked and their directories synced; a
//! segment left with no live record deleted). A crash leaves either the old
//! copy referenced and the new one garbage nobody names, or the new one
//! referenced and the old one unreferenced: a second run finishes the work.
//!
//! Quarantine stays files in the segments layout (docs/design/segments.md,
//! "Quarantine stays files"): migrating to segments leaves quarantined files
//! as they are; migrating to files also turns a record held in quarantine
//! into its file.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use sluice_index::{FileId, IndexError, Location, RecordPlace, WriteOp, WriteOutcome};

use super::quarantine::sync_dir;
use super::{CliError, OpenStore};
use crate::escape::Escaped;
use crate::store::layout::{dataset_checksum, Area, Layout};
use crate::store::segment::{self, RecordUids, SegmentWriter, RECORD_ALIGN};
use crate::store::walk::{for_each_indexed_file, IndexedFile};

/// Instances switched in the index per transaction unless `--batch` says
/// otherwise.
pub const BATCH_DEFAULT: u64 = 256;

/// The layout `sluice migrate --to` converts a store to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Records in segment files (quarantine stays files).
    Segments,
    /// One Part 10 file per instance.
    Files,
}

/// What the migration does with the store's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) target: Target,
    pub(crate) batch: usize,
    /// Size of each new segment (`storage.segment_size_mib`).
    pub(crate) segment_bytes: u64,
    /// Larger Part 10 files stay files (`storage.segment_record_max`).
    pub(crate) record_max: u64,
}

/// One instance to move.
struct Item {
    file: IndexedFile,
    from: Location,
}

/// Counts of a run.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    migrated: u64,
    bytes: u64,
    already: u64,
    quarantine_kept: u64,
    too_large: u64,
    damaged: u64,
    refused: u64,
    leftovers_removed: u64,
    segments_created: u64,
    segments_deleted: u64,
}

/// A migration step that failed: the index's error, or a file's.
enum Stop {
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

pub(crate) fn migrate(
    store: &OpenStore,
    settings: Settings,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let index_error = store.index_error();
    check_recovered(store)?;
    let mut tally = Tally::default();
    let items = collect(store, settings.target, &mut tally).map_err(|stop| match stop {
        Stop::Index(error) => index_error(error),
        Stop::Cli(error) => error,
    })?;
    tally.total = items.len() as u64;
    let started = Instant::now();
    let ran = match settings.target {
        Target::Segments => to_segments(store, settings, &items, &mut tally, started),
        Target::Files => to_files(store, settings, &items, &mut tally, started),
    };
    ran.map_err(|stop| match stop {
        Stop::Index(error) => index_error(error),
        Stop::Cli(error) => error,
    })?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let layout = match settings.target {
        Target::Segments => "segments",
        Target::Files => "files",
    };
    writeln!(
        output,
        "migrated {} of {} instances to {} ({} bytes, {:.1} MB/s, {:.0} instances/s); \
         {} already there, {} damaged left as they are, {} refused by the index",
        tally.migrated,
        tally.total,
        layout,
        tally.bytes,
        tally.bytes as f64 / 1e6 / seconds,
        tally.migrated as f64 / seconds,
        tally.already,
        tally.damaged,
        tally.refused,
    )?;
    if settings.target == Target::Segments {
        writeln!(
            output,
            "{} quarantined instances stay files (the segments layout keeps quarantine as files); \
             {} instances above storage.segment_record_max stay files (as the segments layout \
             stores them); {} segments created",
            tally.quarantine_kept, tally.too_large, tally.segments_created
        )?;
    } else {
        writeln!(
            output,
            "{} segments left with no live record deleted (their index rows stay, sealed and \
             empty, so their ids are never reused)",
            tally.segments_deleted
        )?;
    }
    if tally.leftovers_removed > 0 {
        writeln!(
            output,
            "{} copies an interrupted run had already replaced were removed",
            tally.leftovers_removed
        )?;
    }
    writeln!(
        output,
        "set storage.layout = \"{}\" in the configuration before starting `sluice serve`: \
         the command does not change it",
        layout
    )?;
    if tally.damaged + tally.refused == 0 {
        writeln!(output, "OK")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            output,
            "FAILED: {} instance(s) not migrated (listed above)",
            tally.damaged + tally.refused
        )?;
        Ok(ExitCode::from(1))
    }
}

/// Refuses a store that start-up recovery has not settled: entries in
/// doubt, or segments not sealed (whose tails recovery scans). Recovery at
/// the next `sluice serve` is what settles them; migrating first could move
/// an entry recovery would remove, or leave a record recovery would index.
fn check_recovered(store: &OpenStore) -> Result<(), CliError> {
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
            "{} was not recovered ({in_doubt} entries in doubt, {open} segments not sealed): \
             start `sluice serve` once (its start-up recovery settles them), stop it, then \
             migrate; nothing was changed",
            store.data_dir().display()
        )));
    }
    Ok(())
}

/// The ids of the `segments/<16 hex digits>.seg` files.
fn segment_files(layout: &Layout) -> Result<Vec<u64>, CliError> {
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

/// Every entry not in the target layout yet; entries already there are
/// counted, and an old copy a crashed run left (a file of an entry now a
/// record) is removed.
fn collect(store: &OpenStore, target: Target, tally: &mut Tally) -> Result<Vec<Item>, Stop> {
    let mut items = Vec::new();
    let mut leftover_dirs = BTreeSet::new();
    for_each_indexed_file(&store.index, |file: IndexedFile| -> Result<(), Stop> {
        let from = store.index.read()?.location(file.record.file_id)?;
        match (target, from, file.area) {
            (Target::Segments, Location::File, Area::Objects) => items.push(Item { file, from }),
            (Target::Segments, Location::File, Area::Quarantine) => tally.quarantine_kept += 1,
            (Target::Segments, Location::Record(_), _) => {
                tally.already += 1;
                // The old file of an entry switched by a run that stopped
                // before unlinking it.
                let old = file.path(&store.layout);
                match std::fs::remove_file(&old) {
                    Ok(()) => {
                        tally.leftovers_removed += 1;
                        leftover_dirs.insert(parent(&old).to_owned());
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(CliError::io("remove", &old)(error).into()),
                }
            }
            (Target::Files, Location::Record(_), _) => items.push(Item { file, from }),
            (Target::Files, Location::File, _) => tally.already += 1,
        }
        Ok(())
    })?;
    for dir in &leftover_dirs {
        sync_dir(dir)?;
    }
    Ok(items)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Progress on stderr, once per batch.
fn progress(tally: &Tally, started: Instant) {
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "migrate: {} of {} instances ({} damaged), {:.1} MB/s",
        tally.migrated + tally.damaged + tally.refused + tally.too_large,
        tally.total,
        tally.damaged,
        tally.bytes as f64 / 1e6 / seconds,
    );
}

/// Reports an instance left where it is.
fn report_damaged(file: &IndexedFile, place: &str, why: &str) {
    let line = format!(
        "DAMAGED     {place} (SOP Instance UID {}): {why}; left as it is, not migrated",
        file.triplet.sop_instance_uid
    );
    eprintln!("{}", Escaped(line));
}

/// Whether `part10` is the instance the index records (size, then the data
/// set's XXH3-128, as `verify` checks).
fn matches_index(file: &IndexedFile, part10: &[u8]) -> Result<(), String> {
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

/// Submits one batch of relocations in one transaction; the ones applied.
fn relocate(
    store: &OpenStore,
    moves: &[(FileId, Location, Location)],
    tally: &mut Tally,
) -> Result<Vec<bool>, Stop> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let ops = moves
        .iter()
        .map(|&(file_id, from, to)| WriteOp::Relocate { file_id, from, to })
        .collect();
    let results = store.index.writer().execute(ops)?;
    debug_assert_eq!(results.len(), moves.len(), "one result per operation");
    Ok(results
        .into_iter()
        .zip(moves)
        .map(|(result, (file_id, _, _))| match result {
            Ok(WriteOutcome::Relocated(_)) => true,
            other => {
                tally.refused += 1;
                eprintln!("REFUSED     file id {:#x}: {other:?}", file_id.0);
                false
            }
        })
        .collect())
}

/// The segment being written: its id, its writer.
struct OpenSegment {
    id: u64,
    writer: SegmentWriter,
}

fn to_segments(
    store: &OpenStore,
    settings: Settings,
    items: &[Item],
    tally: &mut Tally,
    started: Instant,
) -> Result<(), Stop> {
    let layout = &store.layout;
    let segments_dir = layout.segments_dir();
    std::fs::create_dir_all(&segments_dir).map_err(CliError::io("create", &segments_dir))?;
    // Past every id the index and the directory know, as ingest allocates.
    let mut next_id = {
        let indexed = store.index.read()?.segments()?;
        let on_disk = segment_files(layout)?;
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
    let mut open: Option<OpenSegment> = None;
    for batch in items.chunks(settings.batch) {
        let mut moves = Vec::with_capacity(batch.len());
        let mut olds = Vec::with_capacity(batch.len());
        for item in batch {
            let file = &item.file;
            let path = file.path(layout);
            let record_bytes = segment::padded(
                file.record
                    .file_size_bytes
                    .saturating_add(segment::HEADER_BYTES_MAX as u64),
            );
            if file.record.file_size_bytes > settings.record_max
                || record_bytes > settings.segment_bytes
            {
                tally.too_large += 1;
                continue;
            }
            let part10 = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    report_damaged(file, &path.display().to_string(), &error.to_string());
                    tally.damaged += 1;
                    continue;
                }
            };
            if let Err(why) = matches_index(file, &part10) {
                report_damaged(file, &path.display().to_string(), &why);
                tally.damaged += 1;
                continue;
            }
            let uids = RecordUids {
                study: file.triplet.study_instance_uid.clone(),
                series: file.triplet.series_instance_uid.clone(),
                sop: file.triplet.sop_instance_uid.clone(),
            };
            let record = match segment::encode_record(epoch, &uids, &part10) {
                Ok(record) => record,
                Err(error) => {
                    report_damaged(file, &path.display().to_string(), &error.to_string());
                    tally.damaged += 1;
                    continue;
                }
            };
            let length = record.as_slice().len() as u64;
            if !open.as_ref().is_some_and(|open| open.writer.fits(length)) {
                if let Some(full) = open.take() {
                    finish_segment(full, true)?;
                }
                open = Some(new_segment(store, next_id, settings.segment_bytes)?);
                next_id += 1;
                tally.segments_created += 1;
            }
            let Some(current) = open.as_mut() else {
                unreachable!("a segment was opened above");
            };
            let offset = current
                .writer
                .append(&record)
                .map_err(CliError::io("write", current.writer.path()))?;
            moves.push((
                file.record.file_id,
                item.from,
                Location::Record(RecordPlace {
                    segment: current.id,
                    offset,
                    length,
                }),
            ));
            olds.push(path);
            tally.bytes += file.record.file_size_bytes;
        }
        // The records durable before any entry names them.
        if let Some(current) = &open {
            current
                .writer
                .sync()
                .map_err(CliError::io("flush", current.writer.path()))?;
        }
        let applied = relocate(store, &moves, tally)?;
        let mut dirs = BTreeSet::new();
        for (old, applied) in olds.iter().zip(applied) {
            if !applied {
                continue;
            }
            tally.migrated += 1;
            std::fs::remove_file(old).map_err(CliError::io("remove", old))?;
            dirs.insert(parent(old).to_owned());
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        progress(tally, started);
    }
    if let Some(last) = open.take() {
        finish_segment(last, false)?;
    }
    Ok(())
}

/// A new segment `id`: sealed in the index first (recovery never scans it,
/// so a record a crash leaves unnamed is never indexed; nothing appends to
/// it after this run), then created (`fallocate`) and its name made durable.
fn new_segment(store: &OpenStore, id: u64, size: u64) -> Result<OpenSegment, Stop> {
    store
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
    let path = store.layout.segment_path(id);
    let writer = SegmentWriter::create(&path, size).map_err(CliError::io("create", &path))?;
    sync_dir(&store.layout.segments_dir())?;
    Ok(OpenSegment { id, writer })
}

/// Done with a segment (flushed by its last batch): the last one of a run
/// is cut to its records (the unused preallocation freed).
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

fn to_files(
    store: &OpenStore,
    settings: Settings,
    items: &[Item],
    tally: &mut Tally,
    started: Instant,
) -> Result<(), Stop> {
    let layout = &store.layout;
    let tmp_dir = layout.tmp_dir_of_core(0);
    std::fs::create_dir_all(&tmp_dir).map_err(CliError::io("create", &tmp_dir))?;
    for batch in items.chunks(settings.batch) {
        let mut moves = Vec::with_capacity(batch.len());
        let mut written = Vec::with_capacity(batch.len());
        let mut dirs = BTreeSet::new();
        for item in batch {
            let file = &item.file;
            let Location::Record(place) = item.from else {
                unreachable!("only records are collected for the files layout");
            };
            let (path, local_offset) = {
                let read = store.index.read()?;
                crate::store::record_file(
                    layout,
                    store.objects.as_ref(),
                    &read,
                    &place,
                    &file.triplet,
                )
                .map_err(|error| CliError::Io {
                    operation: "locate a record of",
                    path: layout.segment_path(place.segment),
                    source: std::io::Error::other(error.to_string()),
                })?
            };
            let where_ = format!(
                "{} (segment {:016x}, record at offset {})",
                path.display(),
                place.segment,
                place.offset
            );
            let part10 = match read_record(&path, local_offset, file) {
                Ok(bytes) => bytes,
                Err(why) => {
                    report_damaged(file, &where_, &why);
                    tally.damaged += 1;
                    continue;
                }
            };
            let target = layout.area_path(file.area, file.record.file_id);
            write_file(layout, &tmp_dir, file, &part10, &target, &mut dirs)?;
            moves.push((file.record.file_id, item.from, Location::File));
            written.push(target);
            tally.bytes += file.record.file_size_bytes;
        }
        // Every new name durable before any entry relies on it.
        for dir in &dirs {
            sync_dir(dir)?;
        }
        let applied = relocate(store, &moves, tally)?;
        for (target, applied) in written.iter().zip(applied) {
            if applied {
                tally.migrated += 1;
            } else {
                // The entry changed: the file names nothing.
                std::fs::remove_file(target).map_err(CliError::io("remove", target))?;
            }
        }
        progress(tally, started);
    }
    delete_empty_segments(store, tally)
}

/// The Part 10 bytes of the record at `offset` of `path`, checked (header,
/// payload checksum, the instance it names, size and data set checksum).
fn read_record(path: &Path, offset: u64, file: &IndexedFile) -> Result<Vec<u8>, String> {
    let segment = File::open(path).map_err(|error| error.to_string())?;
    let size = segment.metadata().map_err(|error| error.to_string())?.len();
    let (head, part10) =
        segment::read_record(&segment, offset, size).map_err(|error| error.to_string())?;
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

/// Writes `part10` as the files layout does: a temporary file, its data
/// flushed, renamed into place; the directories to sync go in `dirs`.
fn write_file(
    layout: &Layout,
    tmp_dir: &Path,
    file: &IndexedFile,
    part10: &[u8],
    target: &Path,
    dirs: &mut BTreeSet<PathBuf>,
) -> Result<(), CliError> {
    let tmp = tmp_dir.join(crate::store::layout::file_name(file.record.file_id));
    let dir = parent(target).to_owned();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(CliError::io("create", &dir))?;
        // The fan-out directory's own name, in its area.
        dirs.insert(layout.area_dir(file.area));
    }
    let mut out = File::create(&tmp).map_err(CliError::io("create", &tmp))?;
    out.write_all(part10)
        .and_then(|()| out.sync_data())
        .map_err(CliError::io("write", &tmp))?;
    drop(out);
    std::fs::rename(&tmp, target).map_err(CliError::io("move", &tmp))?;
    dirs.insert(dir);
    Ok(())
}

/// Deletes every sealed segment no entry names any more (and not recorded
/// in the object store): its records are now files, or dead.
fn delete_empty_segments(store: &OpenStore, tally: &mut Tally) -> Result<(), Stop> {
    let (segments, uploaded) = {
        let read = store.index.read()?;
        let uploaded: BTreeSet<u64> = read
            .segment_objects()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        (read.segments()?, uploaded)
    };
    let mut deleted = false;
    for (id, state) in segments {
        if !state.sealed || state.live_records > 0 || uploaded.contains(&id) {
            continue;
        }
        let path = store.layout.segment_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tally.segments_deleted += 1;
                deleted = true;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(CliError::io("remove", &path)(error).into()),
        }
    }
    if deleted {
        sync_dir(&store.layout.segments_dir())?;
    }
    Ok(())
}
