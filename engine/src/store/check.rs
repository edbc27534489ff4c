//! Checking one stored file against what the index records of it: its size,
//! then the XXH3-128 checksum of its data set, read in bounded chunks. Used
//! by start-up recovery (entries committed in doubt) and by `sluice verify`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sluice_index::{Checksum, InstanceRecord};

use crate::store::layout::DatasetHasher;

/// Bytes read from a file at a time.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;

/// What was wrong with one file.
#[derive(Debug)]
pub(crate) enum Problem {
    Missing,
    WrongSize { actual_bytes: u64 },
    Checksum { actual: Checksum },
    Unreadable(std::io::Error),
}

/// Checks the file at `path` against its index record: its size, then the
/// checksum of its data set (read in `buffer`-sized pieces). `None` when it
/// matches.
pub(crate) fn check_file(
    path: &Path,
    record: &InstanceRecord,
    buffer: &mut [u8],
) -> Option<Problem> {
    let mut handle = match std::fs::File::open(path) {
        Ok(handle) => handle,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Some(Problem::Missing)
        }
        Err(error) => return Some(Problem::Unreadable(error)),
    };
    let actual_bytes = match handle.metadata() {
        Ok(metadata) => metadata.len(),
        Err(error) => return Some(Problem::Unreadable(error)),
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
