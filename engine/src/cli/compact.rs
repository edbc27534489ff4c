//! `sluice compact`: reclaims the dead bytes of sealed segments offline
//! (docs/design/segments.md, "Compaction", has the design and why each
//! crash point is safe; docs/operations.md how it is run).
//!
//! A sealed segment is a candidate when enough of it is dead (records
//! replaced, purged, moved out, never indexed): at least
//! `storage.compaction_dead_percent` of its file and at least
//! `storage.compaction_dead_min` bytes, or no live record at all. Its live
//! records are read and checked (header, payload checksum, the instance the
//! entry names, size and data set checksum), appended to new segments,
//! flushed, **then** switched in the index batch by batch
//! (`WriteOp::Relocate { from: old record, to: new record }`, refused for an
//! entry replaced or purged meanwhile), **then** each old segment whose
//! last live record moved is deleted: the order `sluice migrate` uses, from
//! the same code (`super::relocation`).
//!
//! Segments uploaded to the object store are left as they are (their
//! records may be read from the object; deleting objects is not this
//! command's, see the design note). The command holds the data directory's
//! lock, like `migrate`, and runs start-up recovery first (a store a
//! server stopped has open segments); the dry run takes no lock and only
//! reads (open segments are not candidates).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_index::{Location, RecordPlace};

use super::format::Table;
use super::relocation::{
    damaged_line, delete_empty_segments, finish_places, read_checked_record, record_uids,
    relocate_batch, settle, Parts, RecordSink, Stop,
};
use super::{CliError, OpenStore};
use crate::store::walk::{for_each_indexed_file, IndexedFile};

/// Live records switched in the index per transaction unless `--batch`
/// says otherwise.
pub const BATCH_DEFAULT: u64 = 256;

/// How a damaged instance's report ends.
const NOT_DONE: &str = "its segment not compacted";

/// What the compaction does with the store's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `storage.compaction_dead_percent`.
    pub(crate) dead_percent: u32,
    /// `storage.compaction_dead_min`.
    pub(crate) dead_min: u64,
    /// Records per index transaction.
    pub(crate) batch: usize,
    /// Size of each new segment (`storage.segment_size_mib`).
    pub(crate) segment_bytes: u64,
    /// At most this many bytes of records copied per second (0: no bound).
    pub(crate) rate_bytes_per_second: u64,
    /// List the candidates, change nothing.
    pub(crate) dry_run: bool,
}

/// A sealed segment and what the index counts live in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    id: u64,
    size: u64,
    live_bytes: u64,
    live_records: u64,
}

impl Segment {
    pub(crate) fn dead(&self) -> u64 {
        self.size.saturating_sub(self.live_bytes)
    }

    fn is_candidate(&self, settings: &Settings) -> bool {
        let dead = self.dead();
        self.live_records == 0
            || (dead >= settings.dead_min
                && u128::from(dead) * 100
                    >= u128::from(self.size) * u128::from(settings.dead_percent))
    }
}

/// The sealed segments of a store, sorted out.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    pub(crate) candidates: Vec<Segment>,
    /// Sealed segments with a file, not candidates.
    kept: u64,
    /// Uploaded to the object store: left (with their dead bytes).
    uploaded: u64,
    uploaded_dead: u64,
}

/// One live record to move.
struct Item {
    file: IndexedFile,
    place: RecordPlace,
}

/// Counts of a run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    /// Live records switched to their copies.
    pub(crate) moved: u64,
    /// Bytes of records copied (switched or not).
    pub(crate) copied_bytes: u64,
    /// Records left where they are: damaged.
    pub(crate) damaged: u64,
    /// Switches the index refused (the entry changed meanwhile).
    pub(crate) refused: u64,
    /// Old segments deleted.
    pub(crate) deleted: u64,
    /// Their bytes.
    pub(crate) freed_bytes: u64,
}

/// What a compaction pass tells whoever runs it, and asks it: the command
/// prints to stderr and sleeps; `sluice serve`'s compactor logs and waits
/// on its stop signal.
pub(crate) trait Hooks {
    /// A progress line (a batch switched, a segment deleted).
    fn progress(&mut self, line: String);
    /// A record left where it is (damaged).
    fn problem(&mut self, line: String);
    /// A switch the index refused: the entry was replaced, purged or moved
    /// since it was read (its copy is a dead record). Online, where ingest
    /// replaces entries meanwhile, that is an ordinary event.
    fn refused(&mut self, line: String);
    /// Waits `ahead` before the next record is copied (the copy ran ahead
    /// of its rate; zero otherwise, and after each batch), `tally` the
    /// counts so far; true when the pass is to stop now (the records
    /// copied so far are flushed and switched, the rest is left for the
    /// next pass).
    fn wait(&mut self, ahead: Duration, tally: &Tally) -> bool;
}

/// The command's hooks: lines on stderr, pacing by sleeping.
struct Stderr;

impl Hooks for Stderr {
    fn progress(&mut self, line: String) {
        eprintln!("{line}");
    }
    fn problem(&mut self, line: String) {
        eprintln!("{line}");
    }
    fn refused(&mut self, line: String) {
        eprintln!("{line}");
    }
    fn wait(&mut self, ahead: Duration, _: &Tally) -> bool {
        if !ahead.is_zero() {
            std::thread::sleep(ahead);
        }
        false
    }
}

pub(crate) fn compact(
    store: &OpenStore,
    settings: Settings,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    if !settings.dry_run {
        settle(store, "sluice compact", output)?;
    }
    let survey = survey(store.parts(), &settings).map_err(|stop| stop.into_cli(store))?;
    let reclaimable: u64 = survey.candidates.iter().map(Segment::dead).sum();
    let mut table = Table::new(&[
        "SEGMENT",
        "SIZE",
        "LIVE BYTES",
        "LIVE RECORDS",
        "DEAD BYTES",
    ]);
    for segment in &survey.candidates {
        table.push(vec![
            format!("{:016x}", segment.id),
            segment.size.to_string(),
            segment.live_bytes.to_string(),
            segment.live_records.to_string(),
            segment.dead().to_string(),
        ]);
    }
    table.write(output)?;
    writeln!(
        output,
        "{} segments to compact ({} dead bytes reclaimable, {} live bytes to copy); {} sealed \
         segments below the threshold ({}% and {} dead bytes); {} uploaded to the object store \
         left as they are ({} dead bytes)",
        survey.candidates.len(),
        reclaimable,
        survey
            .candidates
            .iter()
            .map(|segment| segment.live_bytes)
            .sum::<u64>(),
        survey.kept,
        settings.dead_percent,
        settings.dead_min,
        survey.uploaded,
        survey.uploaded_dead,
    )?;
    if settings.dry_run {
        writeln!(output, "dry run: nothing was changed")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut tally = Tally::default();
    let started = Instant::now();
    let places = store.places()?;
    let parts = Parts {
        places: places.as_ref(),
        ..store.parts()
    };
    pass(
        parts,
        &settings,
        &survey.candidates,
        (&mut tally, &mut Stderr),
    )
    .map_err(|stop| stop.into_cli(store))?;
    finish_places(store, places)?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    writeln!(
        output,
        "compacted: {} segments deleted ({} bytes freed), {} live records ({} bytes) copied into \
         new segments ({:.1} MB/s); {} damaged left as they are, {} refused by the index",
        tally.deleted,
        tally.freed_bytes,
        tally.moved,
        tally.copied_bytes,
        tally.copied_bytes as f64 / 1e6 / seconds,
        tally.damaged,
        tally.refused,
    )?;
    if tally.damaged + tally.refused == 0 {
        writeln!(output, "OK")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            output,
            "FAILED: {} record(s) not moved (listed above); their segments stay",
            tally.damaged + tally.refused
        )?;
        Ok(ExitCode::from(1))
    }
}

/// Every sealed segment with its file here, sorted into candidates and the
/// rest. Sealed in the index means no core appends to it and no job holds
/// a record in it (a core submits the seal once none does), so a server's
/// compactor surveys the same way.
pub(crate) fn survey(parts: Parts<'_>, settings: &Settings) -> Result<Survey, Stop> {
    let (segments, objects) = {
        let read = parts.index.read()?;
        let objects: BTreeSet<u64> = read
            .segment_objects()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        (read.segments()?, objects)
    };
    let mut survey = Survey::default();
    for (id, state) in segments {
        if !state.sealed {
            continue;
        }
        let path = parts.layout.segment_path(id);
        let size = match std::fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            // Deleted (by compaction, migrate or eviction): nothing here.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(CliError::io("read", &path)(error).into()),
        };
        let segment = Segment {
            id,
            size,
            live_bytes: state.live_bytes,
            live_records: state.live_records,
        };
        if objects.contains(&id) {
            survey.uploaded += 1;
            survey.uploaded_dead += segment.dead();
        } else if segment.is_candidate(settings) {
            survey.candidates.push(segment);
        } else {
            survey.kept += 1;
        }
    }
    Ok(survey)
}

/// Compacts `candidates`: segments with nothing live deleted first, then
/// every live record copied (paced at `settings.rate_bytes_per_second`),
/// flushed, switched batch by batch, and each old segment deleted once
/// nothing names a record in it (docs/design/segments.md, "Compaction").
/// What `sluice compact` runs once and `sluice serve`'s compactor runs
/// whenever its survey finds candidates (`crate::compactor`).
pub(crate) fn pass(
    parts: Parts<'_>,
    settings: &Settings,
    candidates: &[Segment],
    (tally, hooks): (&mut Tally, &mut dyn Hooks),
) -> Result<(), Stop> {
    let started = Instant::now();
    let copied_before = tally.copied_bytes;
    let sizes: BTreeMap<u64, u64> = candidates
        .iter()
        .map(|segment| (segment.id, segment.size))
        .collect();
    let ids: BTreeSet<u64> = sizes.keys().copied().collect();
    // Segments with nothing live first: space before copies.
    delete(parts, &ids, &sizes, (tally, hooks))?;
    let mut items = Vec::new();
    for_each_indexed_file(parts.index, |file: IndexedFile| -> Result<(), Stop> {
        if let Location::Record(place) = parts.index.read()?.location(file.record.file_id)? {
            if ids.contains(&place.segment) {
                items.push(Item { file, place });
            }
        }
        Ok(())
    })?;
    items.sort_by_key(|item| (item.place.segment, item.place.offset));
    let mut sink = RecordSink::new(parts, settings.segment_bytes)?;
    let mut reading: Option<(u64, File, u64)> = None;
    let mut stopping = false;
    for batch in items.chunks(settings.batch) {
        let mut moves = Vec::with_capacity(batch.len());
        let mut touched = BTreeSet::new();
        for item in batch {
            // Paced record by record: a batch of large records is no burst.
            let ahead = ahead_of(
                settings.rate_bytes_per_second,
                tally.copied_bytes - copied_before,
                started,
            );
            if hooks.wait(ahead, tally) {
                stopping = true;
                break;
            }
            let Item { file, place } = item;
            if reading
                .as_ref()
                .is_none_or(|(id, _, _)| *id != place.segment)
            {
                let path = parts.layout.segment_path(place.segment);
                let segment = File::open(&path).map_err(CliError::io("open", &path))?;
                let size = segment
                    .metadata()
                    .map_err(CliError::io("read", &path))?
                    .len();
                reading = Some((place.segment, segment, size));
            }
            let Some((_, segment, size)) = reading.as_ref() else {
                unreachable!("opened above");
            };
            let placed = match read_checked_record(segment, place.offset, *size, file) {
                Ok(part10) => sink.append(&record_uids(file), &part10)?,
                Err(why) => Err(why),
            };
            match placed {
                Ok(to) => {
                    moves.push((file, Location::Record(*place), Location::Record(to)));
                    touched.insert(place.segment);
                    tally.copied_bytes += to.length;
                }
                Err(why) => {
                    let at = format!(
                        "{} (segment {:016x}, record at offset {})",
                        parts.layout.segment_path(place.segment).display(),
                        place.segment,
                        place.offset
                    );
                    hooks.problem(damaged_line(file, &at, &why, NOT_DONE));
                    tally.damaged += 1;
                }
            }
        }
        // The copies durable before any entry names them.
        sink.flush()?;
        for applied in relocate_batch(parts, &moves)? {
            match applied {
                Ok(()) => tally.moved += 1,
                Err(refused) => {
                    hooks.refused(refused);
                    tally.refused += 1;
                }
            }
        }
        // The old segments whose last live record this batch moved.
        delete(parts, &touched, &sizes, (tally, hooks))?;
        hooks.progress(format!(
            "compact: {} of {} records moved ({} damaged, {} refused), {} segments deleted",
            tally.moved,
            items.len(),
            tally.damaged,
            tally.refused,
            tally.deleted
        ));
        if stopping || hooks.wait(Duration::ZERO, tally) {
            break;
        }
    }
    sink.finish()?;
    delete(parts, &ids, &sizes, (tally, hooks))
}

/// Deletes the segments of `ids` with no live record left, logging each.
fn delete(
    parts: Parts<'_>,
    ids: &BTreeSet<u64>,
    sizes: &BTreeMap<u64, u64>,
    (tally, hooks): (&mut Tally, &mut dyn Hooks),
) -> Result<(), Stop> {
    if ids.is_empty() {
        return Ok(());
    }
    let present: BTreeSet<u64> = ids
        .iter()
        .copied()
        .filter(|id| parts.layout.segment_path(*id).exists())
        .collect();
    let deleted = delete_empty_segments(parts, Some(&present))?;
    if deleted == 0 {
        return Ok(());
    }
    for id in present {
        if !parts.layout.segment_path(id).exists() {
            let size = sizes.get(&id).copied().unwrap_or(0);
            tally.deleted += 1;
            tally.freed_bytes += size;
            hooks.progress(format!(
                "compact: segment {id:016x} deleted ({size} bytes freed)"
            ));
        }
    }
    Ok(())
}

/// How far copying `copied` bytes since `started` ran ahead of `rate`
/// bytes per second (0: no bound, never ahead).
fn ahead_of(rate: u64, copied: u64, started: Instant) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let due = Duration::from_secs_f64(copied as f64 / rate as f64);
    due.checked_sub(started.elapsed()).unwrap_or(Duration::ZERO)
}
