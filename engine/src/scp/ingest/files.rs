//! The files layout's blocking side of ingest, on one core: the directories
//! it has created (each once per process run, its parents synced before a
//! file is renamed into it), the data directory's free space (`statvfs`),
//! the guess of the area a file is placed in, and the rare
//! corrections after the index decided (a file moved to the other area, a
//! replaced file kept in `orphans/`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sluice_index::{FileId, Index, Triplet};
use sluice_io::durable::sync_dir;

use crate::store::layout::{Area, Layout};

/// Fan-out directories a core remembers having created (two areas of 65,536,
/// and their parents).
const KNOWN_DIRS_MAX: usize = 2 * 65_536 + 64;

/// One core's view of the data directory's files.
#[derive(Debug)]
pub(crate) struct Files {
    layout: Layout,
    known_dirs: HashSet<PathBuf>,
}

impl Files {
    pub(crate) fn new(layout: Layout) -> Files {
        Files {
            layout,
            known_dirs: HashSet::new(),
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Free bytes of the data directory's file system now (`statvfs`; the
    /// floor's accounting caches it, `super::space`).
    pub(crate) fn read_free_bytes(&self) -> Option<u64> {
        let stats = rustix::fs::statvfs(self.layout.root()).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// Creates a directory (and its parents) if this core has not seen it,
    /// and makes the new entries durable. Blocking, but once per directory
    /// per process run (65536 fan-out directories per area at most).
    pub(crate) fn ensure_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.known_dirs.contains(dir) {
            return Ok(());
        }
        // The new directory entries must survive a crash before any file
        // renamed into them is acknowledged.
        sluice_io::durable::create_dir_all(dir)?;
        if self.known_dirs.len() < KNOWN_DIRS_MAX {
            self.known_dirs.insert(dir.to_owned());
        }
        Ok(())
    }

    /// The area a complete file is placed in: `quarantine/` when a read
    /// transaction says the triplet is already stored under another file
    /// (the index confirms or corrects the guess inside its transaction),
    /// else `objects/`; always `objects/` when `replacing`.
    pub(crate) fn area_guess(
        index: &Index,
        triplet: &Triplet,
        file_id: FileId,
        replacing: bool,
    ) -> Area {
        // The entry may already be this instance's own (committed early).
        // A guess: no wait for commits answered early (a core's thread).
        let triplet_stored = !replacing
            && index
                .read_committed()
                .and_then(|read| {
                    read.stored_file_id(
                        &triplet.study_instance_uid,
                        &triplet.series_instance_uid,
                        &triplet.sop_instance_uid,
                    )
                })
                .map(|stored| stored.is_some_and(|stored| stored != file_id))
                // An unreadable index: the commit decides, and the rare
                // correction below moves the file.
                .unwrap_or(false);
        if triplet_stored {
            Area::Quarantine
        } else {
            Area::Objects
        }
    }

    /// The rare correction when the index decided otherwise than the
    /// placement guessed (a race with another core): a blocking rename and
    /// directory syncs on this core, before the response.
    pub(crate) fn move_between_areas(&mut self, file_id: FileId, from: &Path, to: Area) {
        let target_dir = self.layout.fanout_dir(to, file_id);
        let target = self.layout.area_path(to, file_id);
        let result = self
            .ensure_dir(&target_dir)
            .and_then(|()| std::fs::rename(from, &target))
            .and_then(|()| sync_dir(&target_dir))
            .and_then(|()| sync_dir(from.parent().unwrap_or(Path::new("."))));
        if let Err(error) = result {
            tracing::error!(file = %from.display(), %error, "cannot move a file to the area the index chose; start-up recovery will find it");
        }
    }

    /// A replaced instance's file is referenced by nothing now, but it was
    /// acknowledged to a sender once: it is kept in `orphans/` for review
    /// rather than deleted (as `quarantine release` does). Recovery leaves
    /// `orphans/` alone. On the segments layout the replaced instance is
    /// usually a record, whose bytes stay in its segment as dead bytes
    /// (`records`: no file there is not worth a warning).
    pub(crate) fn keep_replaced(&self, file_id: FileId, records: bool) {
        let from = self.layout.object_path(file_id);
        let to = self.layout.orphan_path(file_id);
        if let Err(error) = std::fs::rename(&from, &to) {
            if records && error.kind() == std::io::ErrorKind::NotFound {
                tracing::debug!(
                    file_id = file_id.0,
                    "a replaced record stays in its segment as dead bytes"
                );
                return;
            }
            tracing::warn!(
                from = %from.display(), to = %to.display(), %error,
                "could not move a replaced instance's file to orphans/"
            );
        }
    }
}
