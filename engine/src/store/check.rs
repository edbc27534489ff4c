//! Checking one stored file, or one segment record, against what the index
//! records of it: its size, then the XXH3-128 checksum of its data set, read
//! in bounded chunks (and for a record, its header and payload checksums and
//! the instance its header names). Used by start-up recovery (entries
//! committed in doubt; files only until the ingest path writes records) and
//! by `sluice verify`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sluice_index::{Checksum, InstanceRecord, Triplet};

use crate::store::layout::DatasetHasher;
use crate::store::segment::{self, RecordError};

/// Bytes read from a file at a time.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;

/// What was wrong with one file.
#[derive(Debug)]
pub(crate) enum Problem {
    Missing,
    WrongSize {
        actual_bytes: u64,
    },
    Checksum {
        actual: Checksum,
    },
    Unreadable(std::io::Error),
    /// A segment record that is not whole and valid, or names another
    /// instance than its index entry.
    Record(RecordError),
}

/// The file at `path`, opened, and its size; missing or unreadable is the
/// problem.
fn open_sized(path: &Path) -> Result<(std::fs::File, u64), Problem> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(Problem::Missing),
        Err(error) => return Err(Problem::Unreadable(error)),
    };
    let size = file.metadata().map_err(Problem::Unreadable)?.len();
    Ok((file, size))
}

/// Checks the file at `path` against its index record: its size, then the
/// checksum of its data set (read in `buffer`-sized pieces). `None` when it
/// matches.
pub(crate) fn check_file(
    path: &Path,
    record: &InstanceRecord,
    buffer: &mut [u8],
) -> Option<Problem> {
    let (mut handle, actual_bytes) = match open_sized(path) {
        Ok(opened) => opened,
        Err(problem) => return Some(problem),
    };
    if actual_bytes != record.file_size_bytes {
        return Some(Problem::WrongSize { actual_bytes });
    }
    if let Err(error) = handle.seek(SeekFrom::Start(record.dataset_offset_bytes)) {
        return Some(Problem::Unreadable(error));
    }
    let mut hasher = DatasetHasher::new();
    loop {
        match handle.read(buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(buffer.get(..read).unwrap_or_default()),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Some(Problem::Unreadable(error)),
        }
    }
    let actual = hasher.finish();
    (actual != record.checksum).then_some(Problem::Checksum { actual })
}

/// Checks the record at `offset` of the segment at `path` against its
/// instance's index entry: its header (checksum, and the instance it names),
/// its Part 10 bytes' length (the index's file size), the payload's checksum
/// and the data set's XXH3-128, reading the payload in `buffer`-sized
/// pieces. `None` when it matches.
pub(crate) fn check_record(
    path: &Path,
    offset: u64,
    triplet: &Triplet,
    record: &InstanceRecord,
    buffer: &mut [u8],
) -> Option<Problem> {
    let (file, size) = match open_sized(path) {
        Ok(opened) => opened,
        Err(problem) => return Some(problem),
    };
    let head = match segment::read_head(&file, offset, size) {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => return Some(Problem::Record(error)),
        Err(error) => return Some(Problem::Unreadable(error)),
    };
    if head.uids.study != triplet.study_instance_uid
        || head.uids.series != triplet.series_instance_uid
        || head.uids.sop != triplet.sop_instance_uid
    {
        return Some(Problem::Record(RecordError::Length(
            "the header names another instance than the index entry",
        )));
    }
    if head.payload_bytes != record.file_size_bytes {
        return Some(Problem::WrongSize {
            actual_bytes: head.payload_bytes,
        });
    }
    // read_head checked that the record fits the segment.
    let start = offset + head.header_bytes;
    let mut payload = segment::PayloadHasher::new(head.payload_split);
    let mut dataset = DatasetHasher::new();
    let mut done = 0u64;
    while done < head.payload_bytes {
        let want = buffer
            .len()
            .min(usize::try_from(head.payload_bytes - done).unwrap_or(usize::MAX));
        let chunk = &mut buffer[..want];
        match segment::read_full(&file, chunk, start + done) {
            Ok(read) if read == want => {}
            Ok(_) => {
                return Some(Problem::Record(RecordError::Short {
                    offset,
                    needed: head.record_bytes(),
                    size,
                }))
            }
            Err(error) => return Some(Problem::Unreadable(error)),
        }
        payload.update(chunk);
        // The part of this chunk at or after the data set's start.
        let skip = record.dataset_offset_bytes.saturating_sub(done);
        if let Some(tail) = chunk.get(usize::try_from(skip).unwrap_or(usize::MAX)..) {
            dataset.update(tail);
        }
        done += want as u64;
    }
    if payload.digest() != head.payload_checksum {
        return Some(Problem::Record(RecordError::PayloadChecksum));
    }
    let actual = dataset.finish();
    (actual != record.checksum).then_some(Problem::Checksum { actual })
}
