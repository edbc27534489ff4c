//! The store's read API by instance: where an instance's data set lives
//! (a byte range of a file), whatever the layout. Everything that reads
//! stored instances goes through it: C-MOVE and C-GET sending (on the io
//! cores, which open the file and read the range themselves), the embedding
//! API's `read_instance` and `read_dataset`, and the file-head reads of
//! C-FIND.
//!
//! Both layouts fit one shape: the files layout keeps each instance as a
//! Part 10 file, its data set after the file meta group; the segments
//! layout (designed, not built) keeps each instance as a record at an offset
//! of a segment file, the same Part 10 bytes inside. Either way a sender
//! needs a path, the offset of the data set and its length, so
//! [`DatasetLocation`] has one variant per layout and every reader handles
//! it by path and range.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use sluice_index::{InstanceEntry, Triplet};

use super::handle::{Store, StoreError};
use super::layout::Area;

/// Where the bytes of an instance's data set are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatasetLocation {
    /// A Part 10 file of the files layout; the data set starts at `offset`
    /// (after the file meta group) and runs `length` bytes.
    File {
        /// The file.
        path: PathBuf,
        /// Where the data set starts.
        offset: u64,
        /// How long it is.
        length: u64,
    },
}

impl DatasetLocation {
    /// The file to open, the data set's offset in it, and its length.
    pub fn file_range(&self) -> (&std::path::Path, u64, u64) {
        match self {
            DatasetLocation::File {
                path,
                offset,
                length,
            } => (path, *offset, *length),
        }
    }
}

/// A stored instance as a sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataset {
    /// The instance.
    pub triplet: Triplet,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// The transfer syntax the data set is stored in (as received).
    pub transfer_syntax_uid: String,
    /// Where its bytes are.
    pub location: DatasetLocation,
}

impl StoredDataset {
    /// The data set's length in bytes.
    pub fn length(&self) -> u64 {
        self.location.file_range().2
    }
}

impl Store {
    /// Where the data set of an indexed instance lives.
    pub fn dataset_of(&self, entry: &InstanceEntry) -> StoredDataset {
        StoredDataset {
            triplet: entry.triplet.clone(),
            sop_class_uid: entry.record.sop_class_uid.clone(),
            transfer_syntax_uid: entry.record.transfer_syntax_uid.clone(),
            location: DatasetLocation::File {
                path: self.layout().area_path(Area::Objects, entry.record.file_id),
                offset: entry.record.dataset_offset_bytes,
                length: entry.record.dataset_size_bytes(),
            },
        }
    }

    /// Reads at most `length_max` bytes of a stored data set from its start
    /// (blocking: for callers off the io cores, such as the embedding API,
    /// or a bounded file head). Fewer bytes come back only when the data
    /// set is shorter.
    pub fn read_dataset_head(
        &self,
        dataset: &StoredDataset,
        length_max: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let (path, offset, length) = dataset.location.file_range();
        let wanted = length.min(length_max);
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut bytes = Vec::with_capacity(usize::try_from(wanted).unwrap_or(0));
            file.take(wanted).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        read().map_err(|source| StoreError::ReadFile {
            path: path.to_owned(),
            source,
        })
    }

    /// The whole data set of the instance with this SOP Instance UID (the
    /// bytes as received, without the Part 10 header), or `None` when no
    /// such instance is stored. Holds the data set in memory.
    pub fn read_dataset(&self, sop_instance_uid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(entry) = self.instance_by_sop(sop_instance_uid)? else {
            return Ok(None);
        };
        let dataset = self.dataset_of(&entry);
        self.read_dataset_head(&dataset, u64::MAX).map(Some)
    }
}
