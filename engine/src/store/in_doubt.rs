//! The files whose index entry committed before their data and directory
//! entry were durable: the in-memory side of the index's `in_doubt` table
//! (docs/design/ingest.md, "the durability order").
//!
//! The ingest path adds a file before it submits the entry (so every
//! in-doubt entry a later read transaction can see is in the set), and
//! removes it once the file and its directory entry are durable or the
//! instance failed. Storage commitment does not count an instance whose file
//! is here. Shared by the cores and the commitment tracker: a short mutex,
//! taken twice per instance on the ingest path and once per check on the
//! tracker's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sluice_index::FileId;

/// The shared set of files committed in doubt and not yet durable. Cheap
/// to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub(crate) struct InDoubtSet {
    files: Arc<Mutex<HashSet<FileId>>>,
}

impl InDoubtSet {
    fn lock(&self) -> MutexGuard<'_, HashSet<FileId>> {
        // A poisoned lock only means a panic elsewhere; the set stays valid.
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file's entry is about to be committed in doubt.
    pub(crate) fn insert(&self, file_id: FileId) {
        let added = self.lock().insert(file_id);
        debug_assert!(added, "file {file_id:?} committed in doubt twice");
    }

    /// The file is durable, or its instance failed.
    pub(crate) fn remove(&self, file_id: FileId) {
        self.lock().remove(&file_id);
    }

    /// A copy of the set. Take it *after* opening the read transaction it is
    /// used with: a file is added before its entry is submitted, so every
    /// in-doubt entry that transaction can see is then in the copy (or
    /// already durable).
    pub(crate) fn snapshot(&self) -> HashSet<FileId> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_holds_what_was_inserted_and_not_removed() {
        let set = InDoubtSet::default();
        let shared = set.clone();
        set.insert(FileId(1));
        set.insert(FileId(2));
        shared.remove(FileId(1));
        let snapshot = set.snapshot();
        assert!(!snapshot.contains(&FileId(1)));
        assert!(snapshot.contains(&FileId(2)));
        // Removing a file that is not there (an instance that failed before
        // its entry was submitted) is not an error.
        shared.remove(FileId(3));
        assert_eq!(set.snapshot().len(), 1);
    }
}
