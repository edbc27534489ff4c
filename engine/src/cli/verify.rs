//! `sluice verify`: every indexed file and segment record re-read and
//! compared with the index.
//!
//! For each stored instance and quarantine entry: the file must exist at the
//! path its file id gives, have the size the index records, and its data set
//! (from the recorded offset to the end) must hash to the recorded XXH3-128
//! checksum. An instance the index places in a segment record is checked in
//! its record: the header (its checksum, the instance it names), the
//! payload's length and checksum, then the data set's XXH3-128; a damaged
//! record is reported by segment and offset. Files are read in bounded chunks, one at a time; problems are
//! printed as they are found, so memory does not grow with the store.

use std::io::Write;
use std::process::ExitCode;

use sluice_index::{IndexError, Location};

use super::format::hex;
use super::{CliError, OpenStore};
use crate::escape::Escaped;
use crate::store::check::{check_file, check_record, Problem, READ_CHUNK_BYTES};
use crate::store::layout::Area;
use crate::store::walk::{for_each_indexed_file, IndexedFile};

/// Counts of a verify run.
#[derive(Debug, Default)]
struct Tally {
    stored: u64,
    quarantined: u64,
    bytes: u64,
    missing: u64,
    wrong_size: u64,
    checksum: u64,
    unreadable: u64,
    damaged: u64,
    /// Entries changed by another process while verify ran (not checked).
    changed: u64,
}

impl Tally {
    fn problems(&self) -> u64 {
        self.missing + self.wrong_size + self.checksum + self.unreadable + self.damaged
    }
}

/// Whether the index still holds `file` as the walk saw it (same entry,
/// same file id), read in a fresh transaction.
fn still_indexed(store: &OpenStore, file: &IndexedFile) -> Result<bool, Stop> {
    let txn = store.index.read()?;
    let file_id = file.record.file_id;
    Ok(match file.quarantine_id {
        Some(id) => txn
            .quarantine_entry(id)?
            .is_some_and(|entry| entry.instance.record.file_id == file_id),
        None => txn
            .instance_by_sop(&file.triplet.sop_instance_uid)?
            .is_some_and(|entry| entry.record.file_id == file_id),
    })
}

/// Verify's walk error: the index's, or the output's.
enum Stop {
    Index(IndexError),
    Output(std::io::Error),
}

impl From<IndexError> for Stop {
    fn from(error: IndexError) -> Self {
        Stop::Index(error)
    }
}

pub(crate) fn verify(store: &OpenStore, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    let mut tally = Tally::default();
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let walked = for_each_indexed_file(&store.index, |file: IndexedFile| {
        let read = store.index.read()?;
        let location = read.location(file.record.file_id)?;
        // A record of an evicted segment is checked in its copy fetched
        // from the object store (`local_offset` 0 of the cached file).
        let mut fetched = None;
        let (path, record_offset, local_offset) = match location {
            Location::File => (file.path(&store.layout), None, 0),
            Location::Record(place) => {
                let (path, local_offset) = match crate::store::record_file(
                    &store.layout,
                    store.objects.as_ref(),
                    &read,
                    &place,
                    &file.triplet,
                ) {
                    Ok(local) => local,
                    Err(error) => {
                        fetched = Some(error);
                        (store.layout.segment_path(place.segment), place.offset)
                    }
                };
                (path, Some((place.segment, place.offset)), local_offset)
            }
        };
        drop(read);
        // Where the bytes are, as the problem lines name it.
        let place = match record_offset {
            None => path.display().to_string(),
            Some((segment, offset)) => format!(
                "{} (segment {segment:016x}, record at offset {offset})",
                path.display()
            ),
        };
        match file.area {
            Area::Objects => tally.stored += 1,
            Area::Quarantine => tally.quarantined += 1,
        }
        let what = match file.quarantine_id {
            Some(id) => format!(
                "quarantine entry {id}, SOP Instance UID {}",
                file.triplet.sop_instance_uid
            ),
            None => format!("SOP Instance UID {}", file.triplet.sop_instance_uid),
        };
        let checked = match (record_offset, fetched) {
            (_, Some(error)) => Some(Problem::Unreadable(std::io::Error::other(
                error.to_string(),
            ))),
            (None, None) => check_file(&path, &file.record, &mut buffer),
            (Some(_), None) => check_record(
                &path,
                local_offset,
                &file.triplet,
                &file.record,
                &mut buffer,
            ),
        };
        let problem = match checked {
            None => {
                tally.bytes += file.record.file_size_bytes;
                return Ok(());
            }
            // A server running beside us may have replaced, released or
            // purged the entry since the walk read it: not a problem.
            Some(_) if !still_indexed(store, &file)? => {
                tally.changed += 1;
                return Ok(());
            }
            Some(problem) => problem,
        };
        let line = match problem {
            Problem::Missing => {
                tally.missing += 1;
                format!("MISSING     {place} ({what})")
            }
            Problem::WrongSize { actual_bytes } => {
                tally.wrong_size += 1;
                format!(
                    "WRONG SIZE  {place} ({what}): {actual_bytes} bytes, the index records {}",
                    file.record.file_size_bytes
                )
            }
            Problem::Checksum { actual } => {
                tally.checksum += 1;
                format!(
                    "CHECKSUM    {place} ({what}): data set XXH3-128 {}, the index records {}",
                    hex(&actual.0),
                    hex(&file.record.checksum.0)
                )
            }
            Problem::Unreadable(error) => {
                tally.unreadable += 1;
                format!("UNREADABLE  {place} ({what}): {error}")
            }
            Problem::Record(error) => {
                tally.damaged += 1;
                format!("DAMAGED     {place} ({what}): {error}")
            }
        };
        writeln!(output, "{}", Escaped(line)).map_err(Stop::Output)
    });
    match walked {
        Ok(()) => {}
        Err(Stop::Index(source)) => return Err(store.index_error()(source)),
        Err(Stop::Output(error)) => return Err(CliError::Output(error)),
    }
    let files = tally.stored + tally.quarantined;
    writeln!(
        output,
        "verified {files} files ({} stored, {} quarantined): \
         {} missing, {} wrong size, {} checksum mismatch, {} unreadable, {} damaged records; \
         {} bytes intact",
        tally.stored,
        tally.quarantined,
        tally.missing,
        tally.wrong_size,
        tally.checksum,
        tally.unreadable,
        tally.damaged,
        tally.bytes,
    )?;
    if tally.changed > 0 {
        writeln!(
            output,
            "({} entries changed by another process during verify were skipped)",
            tally.changed
        )?;
    }
    if tally.problems() == 0 {
        writeln!(output, "OK")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(output, "FAILED: {} problem(s)", tally.problems())?;
        Ok(ExitCode::from(1))
    }
}
