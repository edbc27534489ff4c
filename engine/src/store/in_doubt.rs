//! The files whose index entry committed before their data and directory
//! entry were durable: the in-memory side of the index's `in_doubt` table
//! (docs/design/ingest.md, "the durability order").
//!
//! The ingest path adds a file before it submits the entry (so every
//! in-doubt entry a later read transaction can see is in the set), and
//! removes it once the file and its directory entry are durable or the
//! instance failed before its entry committed. An instance that fails after
//! its entry committed has the entry removed again (the undo): its file is
//! *owed* from then on ([`InDoubtSet::owe`]) and stays in the set until a
//! transaction removing the entry (`WriteOp::RemoveInDoubt`) commits, which
//! every index batch of every core carries until one does
//! ([`InDoubtSet::owed`], [`InDoubtSet::settled`]): so a failed undo (a
//! full disk) never leaves an entry a retry of the instance is matched
//! against. Storage commitment does not count an instance whose file is
//! here. Shared by the cores and the commitment tracker: a short mutex,
//! taken twice per instance on the ingest path and once per check on the
//! tracker's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sluice_index::FileId;

/// The shared set of files committed in doubt and not yet durable, or whose
/// entry is owed a removal. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub(crate) struct InDoubtSet {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Every file in doubt, the owed ones included.
    files: HashSet<FileId>,
    /// Files whose instance failed after its entry committed: the entry is
    /// to be removed by the next transaction that commits.
    owed: Vec<FileId>,
}

impl InDoubtSet {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the set stays valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file's entry is about to be committed in doubt.
    pub(crate) fn insert(&self, file_id: FileId) {
        let added = self.lock().files.insert(file_id);
        debug_assert!(added, "file {file_id:?} committed in doubt twice");
    }

    /// The file is durable, or its instance failed before its entry
    /// committed.
    pub(crate) fn remove(&self, file_id: FileId) {
        let mut state = self.lock();
        debug_assert!(!state.owed.contains(&file_id), "an owed file removed");
        state.files.remove(&file_id);
    }

    /// The file's instance failed after its entry committed: its entry is
    /// owed a removal; the file stays in doubt until [`InDoubtSet::settled`].
    pub(crate) fn owe(&self, file_id: FileId) {
        let mut state = self.lock();
        assert!(
            state.files.contains(&file_id),
            "an entry owed a removal whose file {file_id:?} is not in doubt"
        );
        if !state.owed.contains(&file_id) {
            state.owed.push(file_id);
        }
    }

    /// The files whose entries are owed a removal, for the next batch to
    /// carry.
    pub(crate) fn owed(&self) -> Vec<FileId> {
        self.lock().owed.clone()
    }

    /// How many entries are owed a removal.
    pub(crate) fn owed_count(&self) -> usize {
        self.lock().owed.len()
    }

    /// A transaction that removed these files' entries committed: they are
    /// no longer owed, nor in doubt.
    pub(crate) fn settled(&self, file_ids: &[FileId]) {
        if file_ids.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.owed.retain(|file_id| !file_ids.contains(file_id));
        for file_id in file_ids {
            state.files.remove(file_id);
        }
    }

    /// A copy of the set. Take it *after* opening the read transaction it is
    /// used with: a file is added before its entry is submitted, so every
    /// in-doubt entry that transaction can see is then in the copy (or
    /// already durable).
    pub(crate) fn snapshot(&self) -> HashSet<FileId> {
        self.lock().files.clone()
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

    #[test]
    fn an_owed_file_stays_in_doubt_until_its_removal_commits() {
        let set = InDoubtSet::default();
        set.insert(FileId(1));
        set.insert(FileId(2));
        set.owe(FileId(1));
        set.owe(FileId(1));
        assert_eq!(set.owed(), vec![FileId(1)]);
        assert_eq!(set.owed_count(), 1);
        assert!(set.snapshot().contains(&FileId(1)));
        set.settled(&[FileId(1)]);
        assert!(set.owed().is_empty());
        assert!(!set.snapshot().contains(&FileId(1)));
        assert!(set.snapshot().contains(&FileId(2)));
    }
}
