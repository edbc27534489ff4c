//! Start-up recovery of the open segments of the `segments` layout
//! (docs/design/segments.md, "Recovery at start").
//!
//! A segment is open when its file is in `segments/` and the index has not
//! sealed it: its row says not sealed, or there is no row at all (a segment
//! is created and written, its records flushed, and the process can stop
//! before any entry naming it commits). Ingest never reopens a segment
//! (every run starts new ones), so recovery leaves none open: for each, it
//!
//! 1. scans from the index's end of the furthest indexed record
//!    (`SegmentState::indexed_end`; 0 without a row) with `segment::scan`,
//!    the epoch of the record at `indexed_last` as the one no later record
//!    may precede (a stale record of an earlier run past a cut is never
//!    taken for a new one);
//! 2. flushes the segment (after a process crash its records may be only in
//!    the page cache), then indexes again every valid record found: no
//!    entry ever named it (an entry naming a record moves the indexed end
//!    past it in the same transaction), and it may have been answered (the
//!    index answers at commit, before its own flush). Its entry is rebuilt
//!    from the record's Part 10 bytes as for a sealed file
//!    (`reindex::instance_of_part10`), under a new file id, with
//!    `Location::Record`; a duplicate goes where `DropIfIdentical` puts it
//!    (see [`REINDEX_DUPLICATE_POLICY`]);
//! 3. cuts at the first record that is not whole and valid, and drops the
//!    unused preallocation with it: the file is truncated to the end of the
//!    last valid record and flushed;
//! 4. seals it (`WriteOp::SealSegment`).
//!
//! A segment with no index row and no valid record is removed instead
//! (see [`recover_one`]): a segment prepared for a core and never taken.
//!
//! Each step repeats harmlessly if a crash interrupts recovery: the
//! re-indexed records moved the indexed end past themselves, a truncated
//! file scans to its end, and sealing is idempotent.
//!
//! What the scan relies on: the indexed end is a prefix of committed
//! records. A record below it without an entry is dead (replaced, purged,
//! or undone after a failed flush), never one whose entry a crash took,
//! because the ingest path queues a segment's entries in reservation order
//! and the index commits them in it (docs/design/segments.md, "Recovery at
//! start"); taking records below the indexed end back would resurrect dead
//! ones.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sluice_index::{
    ConflictPolicy, Disposition, DuplicatePolicy, Index, Location, NewInstance, RecordPlace,
    SegmentState, StoreRequest, WriteOp, WriteOutcome,
};

use super::{execute_in_batches, io_error, RecoveryError, RecoveryReport};
use crate::escape::Escaped;
use crate::store::layout::{FileIdGenerator, Layout};
use crate::store::segment::{self, RecordError};

/// The core number in the file ids recovery gives the records it indexes
/// again (no engine core has it: cores are numbered from 0 up to the core
/// count).
const RECOVERY_FILE_ID_CORE: u16 = u16::MAX;

/// The duplicate policy a record found without an entry is indexed under.
/// Its instance may have been answered (so it is never lost), but under
/// which policy is not recorded: a byte-identical duplicate (same data set
/// checksum and size as the stored one) is dropped, since the archive
/// already holds exactly its data set and a quarantine entry would only
/// give an operator something to purge; any other duplicate is held in
/// quarantine, as recovery of the files layout does (the record stays where
/// it is; the quarantine entry names its place).
pub(super) const REINDEX_DUPLICATE_POLICY: DuplicatePolicy = DuplicatePolicy::DropIfIdentical;

/// What recovery did to one open segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SegmentRecovered {
    /// Valid records found past the indexed end.
    pub(super) scanned: u64,
    /// Of those, indexed again (stored or held in quarantine).
    pub(super) reindexed: u64,
    /// Bytes truncated off the file's end (a torn record, stale bytes, the
    /// unused preallocation).
    pub(super) bytes_cut: u64,
    /// Whether the scan ended at a record that is not whole and valid (a
    /// torn write, or stale bytes of an earlier run), not at the end of the
    /// records written.
    pub(super) torn: bool,
    /// The segment had no index row and no valid record (a segment
    /// prepared for a core and never taken, or created and stopped before
    /// its first record was whole): its file was removed, not sealed.
    pub(super) removed: bool,
}

/// Recovers every open segment of the data directory (see the module's
/// documentation); adds what it did to `report`. Runs before anything
/// writes a segment.
pub(super) fn recover_segments(
    layout: &Layout,
    index: &Index,
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    let states: BTreeMap<u64, SegmentState> = index.read()?.segments()?.into_iter().collect();
    let files = segment_files(&layout.segments_dir())?;
    let ids = FileIdGenerator::new(RECOVERY_FILE_ID_CORE);
    for (&segment, state) in &states {
        if !state.sealed && !files.contains_key(&segment) {
            // Its entries' records are gone with it; step 3 reports each.
            tracing::warn!(
                segment = %format!("{segment:016x}"),
                "recovery: an open segment of the index has no file; sealed"
            );
            execute_in_batches(index, vec![WriteOp::SealSegment(segment)])?;
        }
    }
    for (segment, path) in files {
        let state = states.get(&segment).copied();
        if state.is_some_and(|state| state.sealed) {
            continue;
        }
        let recovered = recover_one(index, &path, segment, state, &ids)?;
        if recovered.removed {
            tracing::info!(
                segment = %format!("{segment:016x}"),
                path = %path.display(),
                "recovery: a segment with no record and no index row (prepared or just created, never used) removed"
            );
            report.empty_segments_removed += 1;
            continue;
        }
        tracing::info!(
            segment = %format!("{segment:016x}"),
            path = %path.display(),
            records_scanned = recovered.scanned,
            reindexed = recovered.reindexed,
            bytes_cut = recovered.bytes_cut,
            torn = recovered.torn,
            "recovery: open segment scanned past its indexed end, cut and sealed"
        );
        report.segments_recovered += 1;
        report.segment_records_reindexed += recovered.reindexed;
        report.segment_bytes_cut += recovered.bytes_cut;
        report.segment_torn_tails += u64::from(recovered.torn);
    }
    Ok(())
}

/// The segment files in `dir` by id (`<16 hex digits>.seg`; anything else
/// there is not the engine's and is left alone). A missing directory holds
/// none.
fn segment_files(dir: &Path) -> Result<BTreeMap<u64, std::path::PathBuf>, RecoveryError> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(io_error("read", dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("read", dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_name) {
            Some(segment) => {
                files.insert(segment, entry.path());
            }
            None => tracing::debug!(
                name = %Escaped(name.to_string_lossy()),
                "recovery: not a segment file name; left alone"
            ),
        }
    }
    Ok(files)
}

/// The id of a segment file named `<16 lowercase hex digits>.seg`
/// (`Layout::segment_path`).
fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Recovers the open segment `segment` at `path`, whose index state is
/// `state` (`None`: no row).
///
/// A segment with no row and no valid record is removed rather than cut to
/// nothing and sealed: no entry names it (an entry naming a record creates
/// the row in its own transaction), and what it holds is nothing or a torn
/// record, never acknowledged, which the cut would drop just the same. So
/// the segments a server prepared for its cores and never used
/// (`scp::ingest::prepare`, left by a crash) do not pile up as empty sealed
/// segments.
fn recover_one(
    index: &Index,
    path: &Path,
    segment: u64,
    state: Option<SegmentState>,
    ids: &FileIdGenerator,
) -> Result<SegmentRecovered, RecoveryError> {
    let indexed = state.is_some();
    let state = state.unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error("open", path))?;
    let metadata = file.metadata().map_err(io_error("read", path))?;
    let size = metadata.len();
    let from = state.indexed_end;
    let epoch_before = if from == 0 {
        0
    } else {
        match segment::read_head(&file, state.indexed_last, size) {
            Ok(Ok(head)) => head.epoch,
            // The furthest indexed record is damaged (its entry, in doubt,
            // was removed, or step 3 reports it): the scan takes any epoch.
            Ok(Err(error)) => {
                tracing::warn!(
                    path = %path.display(),
                    offset = state.indexed_last,
                    %error,
                    "recovery: the furthest indexed record of an open segment is not valid"
                );
                0
            }
            Err(error) => return Err(io_error("read", path)(error)),
        }
    };
    if from % segment::RECORD_ALIGN != 0 {
        return Err(io_error("scan", path)(std::io::Error::other(format!(
            "the index's indexed end {from} is not a record boundary"
        ))));
    }
    let scan = segment::scan(&file, from, size, epoch_before).map_err(io_error("scan", path))?;
    let mut recovered = SegmentRecovered {
        scanned: scan.records.len() as u64,
        ..SegmentRecovered::default()
    };
    if !indexed && scan.records.is_empty() {
        drop(file);
        std::fs::remove_file(path).map_err(io_error("remove", path))?;
        if let Some(dir) = path.parent() {
            sluice_io::durable::sync_dir(dir).map_err(io_error("flush", dir))?;
        }
        recovered.removed = true;
        return Ok(recovered);
    }
    if !scan.records.is_empty() {
        // Records written before a process crash may be only in the page
        // cache: durable before an entry names them.
        file.sync_data().map_err(io_error("flush", path))?;
        recovered.reindexed = index_records(index, &file, path, segment, size, &scan, ids)?;
    }
    match &scan.stopped {
        None | Some(RecordError::NoRecord) => {}
        Some(error) => {
            recovered.torn = true;
            tracing::warn!(
            path = %path.display(),
            offset = scan.end,
            %error,
            "recovery: open segment cut at a record that is not whole and valid (never acknowledged)"
            );
        }
    }
    debug_assert!(scan.end >= from, "never cut below an indexed record");
    if scan.end < size {
        file.set_len(scan.end).map_err(io_error("truncate", path))?;
        file.sync_all().map_err(io_error("flush", path))?;
        recovered.bytes_cut = size - scan.end;
    }
    execute_in_batches(index, vec![WriteOp::SealSegment(segment)])?;
    Ok(recovered)
}

/// Indexes again the valid records `scan` found (none has an entry: see the
/// module's documentation); returns how many an entry now names.
fn index_records(
    index: &Index,
    file: &File,
    path: &Path,
    segment: u64,
    size: u64,
    scan: &segment::Scan,
    ids: &FileIdGenerator,
) -> Result<u64, RecoveryError> {
    // The segment's last write stands for the arrival of its records (their
    // headers carry the run, not the instant); offset order keeps arrival
    // order among them, so of two copies the first is stored again.
    let received_at_unix_ns = file
        .metadata()
        .ok()
        .and_then(|metadata| metadata.modified().ok())
        .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut requests: Vec<(RecordPlace, NewInstance)> = Vec::new();
    for scanned in &scan.records {
        let place = RecordPlace {
            segment,
            offset: scanned.offset,
            length: scanned.head.record_bytes(),
        };
        let (head, payload) =
            segment::read_record(file, scanned.offset, size).map_err(io_error("read", path))?;
        let file_id = ids.next_id().ok_or_else(|| {
            io_error("index again the records of", path)(std::io::Error::other(
                "file ids exhausted",
            ))
        })?;
        let instance = super::reindex::instance_of_part10(
            payload.as_slice(),
            head.payload_bytes,
            file_id,
            received_at_unix_ns,
        )
        .and_then(|instance| {
            let triplet = &instance.triplet;
            (triplet.study_instance_uid == head.uids.study
                && triplet.series_instance_uid == head.uids.series
                && triplet.sop_instance_uid == head.uids.sop)
                .then_some(instance)
                .ok_or_else(|| "its header names another instance than its data set".to_owned())
        });
        match instance {
            Ok(instance) => requests.push((place, instance)),
            Err(reason) => tracing::warn!(
                path = %path.display(),
                offset = scanned.offset,
                sop = %Escaped(&head.uids.sop),
                %reason,
                "recovery: a valid record without an entry cannot be indexed again; its bytes stay dead"
            ),
        }
    }
    let ops = requests
        .iter()
        .map(|(place, instance)| {
            let mut request = StoreRequest::new(instance.clone());
            request.duplicate_policy = REINDEX_DUPLICATE_POLICY;
            request.conflict_policy = ConflictPolicy::Quarantine;
            request.location = Location::Record(*place);
            WriteOp::Store(request)
        })
        .collect();
    let results = execute_in_batches(index, ops)?;
    let mut reindexed = 0;
    for ((place, instance), result) in requests.iter().zip(results) {
        let held = match &result {
            Ok(WriteOutcome::Store(outcome)) => match outcome.disposition() {
                None => Some("stored"),
                Some(Disposition::Quarantined { .. }) => Some("held in quarantine"),
                Some(_) => None,
            },
            _ => None,
        };
        match held {
            Some(held) => {
                reindexed += 1;
                tracing::info!(
                    sop = %Escaped(&instance.triplet.sop_instance_uid),
                    path = %path.display(),
                    offset = place.offset,
                    held,
                    "recovery: valid record without an entry (its commit lost in the crash) indexed again"
                );
            }
            None => tracing::info!(
                sop = %Escaped(&instance.triplet.sop_instance_uid),
                path = %path.display(),
                offset = place.offset,
                ?result,
                "recovery: valid record without an entry not indexed again (a byte-identical \
                 duplicate, or refused); its bytes stay dead"
            ),
        }
    }
    Ok(reindexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_engines_segment_names_parse() {
        assert_eq!(
            parse_segment_name("000100000000002a.seg"),
            Some(0x1_0000_0000_002a)
        );
        assert_eq!(parse_segment_name("000100000000002A.seg"), None);
        assert_eq!(parse_segment_name("2a.seg"), None);
        assert_eq!(parse_segment_name("000100000000002a.seg.tmp"), None);
        assert_eq!(parse_segment_name("+00100000000002a.seg"), None);
    }
}
