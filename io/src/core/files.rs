//! The file table: the descriptors of a core's open files and directories,
//! named by [`FileHandle`]s.
//!
//! What it guarantees: a descriptor is closed only once no operation uses it
//! any more (`ops`, counted from issue to final completion), and a handle
//! whose close was requested is refused at once, so no new operation can
//! name a descriptor about to close.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use crate::error::SubmitError;
use crate::event::{At, FileHandle};
use crate::slab::{Key, Slab};

/// One open file or directory.
struct FileSlot {
    fd: OwnedFd,
    /// Operations using this descriptor; a close waits for them.
    ops: u32,
    /// The close's tag, once `close_file` was called.
    close_requested: Option<u64>,
}

impl FileSlot {
    fn usable(&self) -> Result<RawFd, SubmitError> {
        match self.close_requested {
            Some(_) => Err(SubmitError::UnknownFile),
            None => Ok(self.fd.as_raw_fd()),
        }
    }
}

/// A core's open files.
pub(super) struct FileTable {
    slab: Slab<FileSlot>,
}

impl FileTable {
    pub fn new(files_max: usize) -> FileTable {
        FileTable {
            slab: Slab::new(files_max),
        }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Adds a descriptor; gives it back when the table is full.
    pub fn insert(&mut self, fd: OwnedFd) -> Result<FileHandle, OwnedFd> {
        self.slab
            .insert(FileSlot {
                fd,
                ops: 0,
                close_requested: None,
            })
            .map(FileHandle)
            .map_err(|slot| slot.fd)
    }

    /// The descriptor of an open file (not one being closed).
    pub fn fd(&self, file: FileHandle) -> Result<RawFd, SubmitError> {
        self.slab
            .get(file.0)
            .ok_or(SubmitError::UnknownFile)?
            .usable()
    }

    /// The directory descriptor a path is resolved against, and the file
    /// to count the operation against (none for the working directory).
    pub fn resolve(&self, at: At) -> Result<(RawFd, Option<Key>), SubmitError> {
        match at {
            At::Cwd => Ok((libc::AT_FDCWD, None)),
            At::Dir(file) => Ok((self.fd(file)?, Some(file.0))),
        }
    }

    /// An operation using `files` was issued.
    pub fn add_refs(&mut self, files: [Option<Key>; 2]) {
        for file in files.into_iter().flatten() {
            if let Some(slot) = self.slab.get_mut(file) {
                slot.ops += 1;
            }
        }
    }

    /// An operation using `files` reached its final completion. Returns the
    /// files whose requested close is now due.
    pub fn release_refs(&mut self, files: [Option<Key>; 2]) -> [Option<Key>; 2] {
        files.map(|file| {
            let file = file?;
            let slot = self.slab.get_mut(file)?;
            debug_assert!(slot.ops > 0, "file operation count underflow");
            slot.ops = slot.ops.saturating_sub(1);
            (slot.ops == 0 && slot.close_requested.is_some()).then_some(file)
        })
    }

    /// Records a close request; returns whether the close is due now (no
    /// operation uses the file). The handle is stale from here on.
    pub fn request_close(&mut self, file: FileHandle, tag: u64) -> Result<bool, SubmitError> {
        let slot = self.slab.get_mut(file.0).ok_or(SubmitError::UnknownFile)?;
        slot.usable()?;
        slot.close_requested = Some(tag);
        Ok(slot.ops == 0)
    }

    /// Takes a file whose close is due out of the table: its descriptor
    /// (ownership passes to the caller, which closes it) and the close's tag.
    pub fn take_for_close(&mut self, file: Key) -> Option<(RawFd, u64)> {
        let slot = self.slab.remove(file)?;
        debug_assert_eq!(slot.ops, 0, "file closed while operations use it");
        debug_assert!(slot.close_requested.is_some(), "file closed unasked");
        let tag = slot.close_requested.unwrap_or(0);
        Some((slot.fd.into_raw_fd(), tag))
    }

    /// Shutdown: closes every descriptor.
    pub fn close_all(&mut self) {
        drop(self.slab.drain());
    }
}
