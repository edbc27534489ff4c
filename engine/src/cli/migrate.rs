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

use sluice_index::Location;

use super::quarantine::sync_dir;
use super::relocation::{
    create_dir_durably, delete_empty_segments, finish_places, matches_index, parent,
    read_checked_record, record_uids, relocate, report_damaged, settle, Parts, RecordSink, Stop,
};
use super::{CliError, OpenStore};
use crate::store::layout::Area;
use crate::store::walk::{for_each_indexed_file, IndexedFile};

/// How a damaged instance's report ends.
const NOT_DONE: &str = "not migrated";

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

pub(crate) fn migrate(
    store: &OpenStore,
    settings: Settings,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    settle(store, "sluice migrate", output)?;
    let mut tally = Tally::default();
    let items = collect(store, settings.target, &mut tally).map_err(|stop| stop.into_cli(store))?;
    tally.total = items.len() as u64;
    let started = Instant::now();
    let places = store.places()?;
    let parts = Parts {
        places: places.as_ref(),
        ..store.parts()
    };
    let ran = match settings.target {
        Target::Segments => to_segments((store, parts), settings, &items, &mut tally, started),
        Target::Files => to_files((store, parts), settings, &items, &mut tally, started),
    };
    ran.map_err(|stop| stop.into_cli(store))?;
    finish_places(store, places)?;
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

fn to_segments(
    (store, parts): (&OpenStore, Parts<'_>),
    settings: Settings,
    items: &[Item],
    tally: &mut Tally,
    started: Instant,
) -> Result<(), Stop> {
    let layout = &store.layout;
    let mut sink = RecordSink::new(parts, settings.segment_bytes)?;
    for batch in items.chunks(settings.batch) {
        let mut moves = Vec::with_capacity(batch.len());
        let mut olds = Vec::with_capacity(batch.len());
        for item in batch {
            let file = &item.file;
            let path = file.path(layout);
            if file.record.file_size_bytes > settings.record_max
                || !sink.holds(file.record.file_size_bytes)
            {
                tally.too_large += 1;
                continue;
            }
            let checked = std::fs::read(&path)
                .map_err(|error| error.to_string())
                .and_then(|part10| matches_index(file, &part10).map(|()| part10));
            let placed = match checked {
                Ok(part10) => sink.append(&record_uids(file), &part10)?,
                Err(why) => Err(why),
            };
            let place = match placed {
                Ok(place) => place,
                Err(why) => {
                    report_damaged(file, &path.display().to_string(), &why, NOT_DONE);
                    tally.damaged += 1;
                    continue;
                }
            };
            moves.push((file, item.from, Location::Record(place)));
            olds.push(path);
            tally.bytes += file.record.file_size_bytes;
        }
        // The records durable before any entry names them.
        sink.flush()?;
        let applied = relocate(parts, &moves)?;
        let mut dirs = BTreeSet::new();
        for (old, applied) in olds.iter().zip(applied) {
            if !applied {
                tally.refused += 1;
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
    tally.segments_created = sink.created;
    sink.finish()
}

fn to_files(
    (store, parts): (&OpenStore, Parts<'_>),
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
                    report_damaged(file, &where_, &why, NOT_DONE);
                    tally.damaged += 1;
                    continue;
                }
            };
            let target = layout.area_path(file.area, file.record.file_id);
            write_file(&tmp_dir, file, &part10, &target, &mut dirs)?;
            moves.push((file, item.from, Location::File));
            written.push(target);
            tally.bytes += file.record.file_size_bytes;
        }
        // Every new name durable before any entry relies on it.
        for dir in &dirs {
            sync_dir(dir)?;
        }
        let applied = relocate(parts, &moves)?;
        for (target, applied) in written.iter().zip(applied) {
            if applied {
                tally.migrated += 1;
            } else {
                tally.refused += 1;
                // The entry changed: the file names nothing.
                std::fs::remove_file(target).map_err(CliError::io("remove", target))?;
            }
        }
        progress(tally, started);
    }
    tally.segments_deleted = delete_empty_segments(parts, None)?;
    Ok(())
}

/// The checked Part 10 bytes of the record at `offset` of `path`.
fn read_record(path: &Path, offset: u64, file: &IndexedFile) -> Result<Vec<u8>, String> {
    let segment = File::open(path).map_err(|error| error.to_string())?;
    let size = segment.metadata().map_err(|error| error.to_string())?.len();
    read_checked_record(&segment, offset, size, file)
}

/// Writes `part10` as the files layout does: a temporary file, its data
/// flushed, renamed into place; the directories to sync go in `dirs`.
fn write_file(
    tmp_dir: &Path,
    file: &IndexedFile,
    part10: &[u8],
    target: &Path,
    dirs: &mut BTreeSet<PathBuf>,
) -> Result<(), CliError> {
    let tmp = tmp_dir.join(crate::store::layout::file_name(file.record.file_id));
    let dir = parent(target).to_owned();
    // The fan-out directory (and its area, when missing) with durable
    // names.
    create_dir_durably(&dir)?;
    let mut out = File::create(&tmp).map_err(CliError::io("create", &tmp))?;
    out.write_all(part10)
        .and_then(|()| out.sync_data())
        .map_err(CliError::io("write", &tmp))?;
    drop(out);
    std::fs::rename(&tmp, target).map_err(CliError::io("move", &tmp))?;
    dirs.insert(dir);
    Ok(())
}
