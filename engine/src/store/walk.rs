//! Walking everything the index references (stored instances and quarantine
//! entries) and everything a directory holds: used by start-up recovery and
//! by the operator commands (`verify`, `stats`), neither of which owns it.
//!
//! The index walk holds no read transaction while the caller works on a file:
//! it reads one study (or one page of quarantine entries) per short
//! transaction, so a long `verify` beside a running server does not pin old
//! LMDB pages and make the index file grow.

use std::path::{Path, PathBuf};

use sluice_index::{Index, IndexError, InstanceRecord, StudyQuery, Triplet};

use crate::store::layout::{Area, Layout};

/// Quarantine entries read per transaction.
const QUARANTINE_PAGE_ENTRIES: usize = 1000;

/// One file the index references.
#[derive(Debug, Clone)]
pub(crate) struct IndexedFile {
    /// `Objects` for a stored instance, `Quarantine` for a quarantine entry.
    pub(crate) area: Area,
    /// The quarantine entry's id, for a quarantined file.
    pub(crate) quarantine_id: Option<u64>,
    /// The instance's identity.
    pub(crate) triplet: Triplet,
    /// What the index records of the file.
    pub(crate) record: InstanceRecord,
}

impl IndexedFile {
    pub(crate) fn path(&self, layout: &Layout) -> PathBuf {
        layout.area_path(self.area, self.record.file_id)
    }
}

/// Calls `visit` with every stored instance, study by study, then every
/// quarantine entry, oldest first. `E` lets the visitor stop the walk with its
/// own error.
pub(crate) fn for_each_indexed_file<E: From<IndexError>>(
    index: &Index,
    mut visit: impl FnMut(IndexedFile) -> Result<(), E>,
) -> Result<(), E> {
    let study_uids: Vec<String> = {
        let txn = index.read()?;
        txn.query_studies(&StudyQuery::default(), usize::MAX)?
            .items
            .into_iter()
            .map(|study| study.study_instance_uid)
            .collect()
    };
    for study in &study_uids {
        let instances = {
            let txn = index.read()?;
            txn.instances_of_study(study, None, usize::MAX)?.items
        };
        for instance in instances {
            visit(IndexedFile {
                area: Area::Objects,
                quarantine_id: None,
                triplet: instance.triplet,
                record: instance.record,
            })?;
        }
    }
    let mut after = None;
    loop {
        let page = {
            let txn = index.read()?;
            txn.quarantine_entries(after, QUARANTINE_PAGE_ENTRIES)?
        };
        for entry in page.items {
            after = Some(entry.id);
            visit(IndexedFile {
                area: Area::Quarantine,
                quarantine_id: Some(entry.id),
                triplet: entry.instance.triplet,
                record: entry.instance.record,
            })?;
        }
        if !page.truncated {
            return Ok(());
        }
    }
}

/// Files and bytes under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// Calls `visit` with the directory entry of every regular file under
/// `root` (recursively; symbolic links are not followed). A missing `root`
/// has no files. The walk reads directories only: the file type comes from
/// the directory entry (`d_type`, which ext4, XFS, Btrfs and tmpfs fill;
/// elsewhere std falls back to an `lstat`), and a file is `stat`ed only if
/// the visitor asks (`DirEntry::metadata`, an `fstatat` in its directory).
pub(crate) fn walk_files(
    root: &Path,
    mut visit: impl FnMut(&std::fs::DirEntry) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir == root => {
                return Ok(())
            }
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                visit(&entry)?;
            }
        }
    }
    Ok(())
}

/// Files and bytes under `root`.
pub(crate) fn disk_usage(root: &Path) -> std::io::Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    walk_files(root, |entry| {
        usage.files += 1;
        usage.bytes += entry.metadata()?.len();
        Ok(())
    })?;
    Ok(usage)
}
