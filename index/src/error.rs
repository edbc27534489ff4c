//! Errors of the index layer: what the engine maps to DICOM statuses.
//!
//! Three levels, so the engine can tell them apart without string matching:
//! - [`IndexError`]: the environment or a whole transaction failed (map full,
//!   disk full, LMDB failure, corruption, writer gone). Every item of the
//!   affected batches failed with it; nothing of them was committed.
//! - [`InvalidInput`]: one item was refused before touching LMDB (a UID that
//!   cannot be keyed, a field over its limit). The rest of the batch ran.
//! - [`QueryError`]: a query key that cannot be parsed (reported before any read).

use std::path::PathBuf;
use std::sync::Arc;

/// A failure of the index as a whole or of a whole write transaction.
///
/// Cloneable because one failed group-commit transaction answers every batch
/// that was coalesced into it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// LMDB's memory map is full (`MDB_MAP_FULL`): the index needs a larger
    /// `map_size_bytes` (a restart with a bigger value; the file grows as needed).
    /// The engine answers A7xx (out of resources); nothing of the batch was stored.
    #[error("index map is full ({map_size_bytes} bytes): restart with a larger index map size")]
    MapFull {
        /// The configured map size.
        map_size_bytes: usize,
    },
    /// The filesystem holding the index is full or over quota (`ENOSPC`,
    /// `EDQUOT`). The engine answers A7xx; nothing of the batch was stored.
    #[error("disk full while writing the index: {source}")]
    DiskFull {
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// The reader lock table is full (`MDB_READERS_FULL`): too many read
    /// transactions open at once; raise `max_readers`.
    #[error("too many concurrent index readers (max_readers = {max_readers})")]
    ReadersFull {
        /// The configured reader slots.
        max_readers: u32,
    },
    /// The environment was written by a different schema version of Sluice.
    #[error(
        "index at {path} has schema version {found}, this Sluice reads schema version {expected}; \
         refusing to open it (migrate it or point Sluice at another directory)"
    )]
    SchemaVersionMismatch {
        /// The index directory.
        path: PathBuf,
        /// The version recorded in the index.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The directory holds an LMDB environment that is not a Sluice index (or
    /// whose metadata is damaged).
    #[error("{path} is not a Sluice index: {reason}")]
    NotAnIndex {
        /// The index directory.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A stored key or value failed validation: the index is damaged.
    #[error("index table `{table}` holds a damaged entry: {detail}")]
    Corrupt {
        /// The LMDB table (named database).
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Any other LMDB failure (including fatal environment errors).
    #[error("LMDB error during {operation}: {source}")]
    Lmdb {
        /// What the index was doing.
        operation: &'static str,
        /// heed's error.
        source: Arc<heed::Error>,
    },
    /// A failure of the SOP Instance UID index (the LSM tree beside LMDB,
    /// docs/design/index-at-scale.md). A failed flush of it is final: it
    /// refuses every later write until the index is opened again.
    #[error("SOP index error during {operation}: {source}")]
    SopIndex {
        /// What the index was doing.
        operation: &'static str,
        /// fjall's error.
        source: Arc<fjall::Error>,
    },
    /// A filesystem error outside LMDB (creating the index directory).
    #[error("I/O error during {operation}: {source}")]
    Io {
        /// What the index was doing.
        operation: &'static str,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// The batch was never executed: the writer thread has stopped (index
    /// closing, or it failed), or the batch was dropped before it ran.
    #[error("the index writer is not running; the batch was not executed")]
    WriterUnavailable,
    /// The writer stopped taking writes: a transaction holding batches
    /// answered before its commit returned (`Batch::answered_when_applied`)
    /// could not commit, nor could its re-runs. Those batches' records are
    /// durable but not indexed; a later transaction committing in their
    /// place could hide them from start-up recovery, so nothing more is
    /// written until that transaction commits when tried again (once a
    /// second) or a restart, whose recovery indexes them again. The engine
    /// answers A700 (out of resources).
    #[error("the index writer stopped taking writes after a commit it had answered failed ({reason}); it is tried again once a second, or restart the server: start-up recovery indexes what it held")]
    WriterHalted {
        /// Why the last commit and its re-runs failed.
        reason: Arc<str>,
    },
    /// A batch with more operations than the writer accepts at once.
    #[error("a batch of {ops} operations exceeds the limit of {limit}")]
    InvalidBatch {
        /// The batch's operation count.
        ops: usize,
        /// `IndexOptions::batch_ops_max`.
        limit: usize,
    },
    /// Options that cannot work (a zero limit, a map too small to hold the schema).
    #[error("invalid index option {option}: {reason}")]
    InvalidOptions {
        /// The option's name.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A query could not be parsed.
    #[error(transparent)]
    InvalidQuery(#[from] QueryError),
}

impl IndexError {
    /// Maps a heed error met while doing `operation`, sorting out the failures
    /// the engine must tell apart (map full, disk full, readers full).
    pub(crate) fn from_heed(operation: &'static str, error: heed::Error, env: EnvLimits) -> Self {
        match error {
            heed::Error::Mdb(heed::MdbError::MapFull) => IndexError::MapFull {
                map_size_bytes: env.map_size_bytes,
            },
            heed::Error::Mdb(heed::MdbError::ReadersFull) => IndexError::ReadersFull {
                max_readers: env.max_readers,
            },
            heed::Error::Io(io) if is_disk_full(&io) => IndexError::DiskFull {
                source: Arc::new(io),
            },
            other => IndexError::Lmdb {
                operation,
                source: Arc::new(other),
            },
        }
    }

    /// True for the capacity failures the engine answers with A7xx (and that
    /// are not signs of damage).
    pub fn is_out_of_resources(&self) -> bool {
        matches!(
            self,
            IndexError::MapFull { .. }
                | IndexError::DiskFull { .. }
                | IndexError::ReadersFull { .. }
        )
    }
}

/// Below this many free bytes on the index's file system, a failure whose
/// cause is not reported (LMDB's short write, fjall's `Poisoned`) is taken
/// for a full disk.
pub(crate) const NEARLY_FULL_BYTES: u64 = 8 * 1024 * 1024;

/// Whether the file system of `path` has less than [`NEARLY_FULL_BYTES`]
/// free (false if it cannot be asked).
pub(crate) fn is_nearly_full(path: &std::path::Path) -> bool {
    rustix::fs::statvfs(path)
        .map(|stats| stats.f_bavail.saturating_mul(stats.f_frsize) < NEARLY_FULL_BYTES)
        .unwrap_or(false)
}

/// Whether an I/O error means "no space": ENOSPC or EDQUOT.
pub(crate) fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The configured limits an error message names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvLimits {
    pub(crate) map_size_bytes: usize,
    pub(crate) max_readers: u32,
}

/// One write item was refused before it touched LMDB; the rest of its batch ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A UID (or transaction UID) that cannot be a key: empty, too long, or
    /// containing a NUL byte.
    #[error("{field} is not a usable UID: {reason}")]
    Uid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A field longer than its limit.
    #[error("{field} is {length_bytes} bytes, more than the limit of {limit_bytes}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        length_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The file id is already referenced by a stored or quarantined instance:
    /// storing it twice would let one entry's purge delete the other's file.
    #[error("file id {file_id:#x} is already referenced by the index")]
    FileIdInUse {
        /// The offending id.
        file_id: u128,
    },
    /// The SOP Instance UID was already stored under this many different
    /// series (each conflict replaced or quarantine entry released under
    /// another series adds one): the index keeps at most that many.
    #[error("SOP Instance UID already stored under {limit} different series")]
    SopInstanceUidOverused {
        /// The limit.
        limit: usize,
    },
    /// A segment that is not sealed cannot be recorded as uploaded (its
    /// bytes may still change).
    #[error("segment {segment:016x} is not sealed")]
    SegmentNotSealed {
        /// The segment.
        segment: u64,
    },
    /// A segment not recorded as uploaded (or an object recorded as
    /// evicted before it was uploaded) cannot be evicted.
    #[error("segment {segment:016x} is not recorded as uploaded")]
    SegmentNotUploaded {
        /// The segment.
        segment: u64,
    },
    /// A relocation's file id is referenced by no entry, or its location is
    /// not the one the relocation moves it from (changed meanwhile).
    #[error("file id {file_id:#x} is not referenced at the location the relocation expects")]
    LocationChanged {
        /// The file id.
        file_id: u128,
    },
    /// The record's offsets are inconsistent (data set offset past the end).
    #[error("data set offset {dataset_offset_bytes} is past the file size {file_size_bytes}")]
    BadOffsets {
        /// The data set offset.
        dataset_offset_bytes: u64,
        /// The file size.
        file_size_bytes: u64,
    },
}

/// A study query key that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query key {key}: {reason} (value {value:?})")]
pub struct QueryError {
    /// The key's name (its DICOM keyword).
    pub key: &'static str,
    /// The value that was given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EnvLimits = EnvLimits {
        map_size_bytes: 4096,
        max_readers: 7,
    };

    #[test]
    fn enospc_and_edquot_are_disk_full() {
        // 28 = ENOSPC, 122 = EDQUOT on Linux.
        for errno in [28, 122] {
            let error = heed::Error::Io(std::io::Error::from_raw_os_error(errno));
            let mapped = IndexError::from_heed("commit", error, LIMITS);
            assert!(
                matches!(mapped, IndexError::DiskFull { .. }),
                "{errno}: {mapped:?}"
            );
            assert!(mapped.is_out_of_resources());
        }
    }

    #[test]
    fn map_full_and_readers_full_are_specific() {
        let mapped =
            IndexError::from_heed("put", heed::Error::Mdb(heed::MdbError::MapFull), LIMITS);
        assert!(matches!(
            mapped,
            IndexError::MapFull {
                map_size_bytes: 4096
            }
        ));
        let mapped = IndexError::from_heed(
            "read",
            heed::Error::Mdb(heed::MdbError::ReadersFull),
            LIMITS,
        );
        assert!(matches!(mapped, IndexError::ReadersFull { max_readers: 7 }));
        let mapped =
            IndexError::from_heed("read", heed::Error::Mdb(heed::MdbError::Corrupted), LIMITS);
        assert!(matches!(mapped, IndexError::Lmdb { .. }));
        assert!(!mapped.is_out_of_resources());
        let mapped = IndexError::from_heed(
            "read",
            heed::Error::Io(std::io::Error::from_raw_os_error(5)),
            LIMITS,
        );
        assert!(
            matches!(mapped, IndexError::Lmdb { .. }),
            "EIO is not disk full"
        );
    }
}
