//! The FUSE side: each kernel request becomes one [`Model`] call under the
//! model's lock, and each [`FsError`] its errno.
//!
//! What the kernel is told, and why:
//! - no `FUSE_WRITEBACK_CACHE` (fuser does not ask for it): every `write(2)`
//!   reaches the model before it returns, so the model sees writes in the
//!   order the program made them; reads and `mmap` reads are served from the
//!   kernel's page cache (`FOPEN_KEEP_CACHE`: every change goes through this
//!   mount, so the cache stays right), which is how LMDB reads its map;
//! - no `FUSE_POSIX_LOCKS`/`FUSE_FLOCK_LOCKS`: `fcntl` and `flock` locks are
//!   handled by the kernel locally, which is exact for processes on one
//!   machine (LMDB's lock file, a data-directory lock);
//! - short attribute and entry timeouts: nothing else changes the tree, so
//!   any timeout is right; one second keeps the request count low.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::model::{Attr, FsError, Kind, Model, PAGE_BYTES};

const TTL: Duration = Duration::from_secs(1);

/// The model shared by the FUSE thread and the controller, and a condition
/// variable the controller waits on for an armed cut.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) model: Mutex<Model>,
    pub(crate) cut_happened: Condvar,
    /// (process, inode) of `O_DSYNC` writes whose follow-up sync has not
    /// come yet: after such a write the kernel itself sends FUSE_FSYNC for
    /// the written range (`generic_write_sync`), but FUSE carries no range,
    /// so that one sync is recognised here and not taken as a whole-file
    /// `fdatasync` (the write's own range is already durable).
    pub(crate) dsync_follow_ups: Mutex<HashSet<(u32, u64)>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic in a request handler must not hide the state from the
        // controller: the model's own invariants are checked by its methods.
        self.model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `fuser::Filesystem` over a shared [`Model`].
#[derive(Debug)]
pub(crate) struct CrashFs {
    pub(crate) shared: Arc<Shared>,
}

fn errno(error: FsError) -> Errno {
    match error {
        FsError::NotFound => Errno::ENOENT,
        FsError::Exists => Errno::EEXIST,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotEmpty => Errno::ENOTEMPTY,
        FsError::Invalid => Errno::EINVAL,
        FsError::NameTooLong => Errno::ENAMETOOLONG,
        FsError::NoSpace => Errno::ENOSPC,
        FsError::PowerOff => Errno::EIO,
        FsError::NotSupported => Errno::EOPNOTSUPP,
        FsError::BadHandle => Errno::EBADF,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.allocated_bytes / 512,
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.ctime,
        kind: match attr.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
        },
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: PAGE_BYTES as u32,
        flags: 0,
    }
}

fn reply_attr(reply: ReplyAttr, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
        Err(error) => reply.error(errno(error)),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
        Err(error) => reply.error(errno(error)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(errno(error)),
    }
}

impl CrashFs {
    fn follow_ups(&self) -> MutexGuard<'_, HashSet<(u32, u64)>> {
        self.shared
            .dsync_follow_ups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a mutation and wakes the controller if it was the armed cut.
    fn mutate<T>(
        &self,
        operation: impl FnOnce(&mut Model) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let mut model = self.shared.lock();
        let was_cut = model.is_cut();
        let result = operation(&mut model);
        if !was_cut && model.is_cut() {
            self.shared.cut_happened.notify_all();
        }
        result
    }
}

impl Filesystem for CrashFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.shared.lock().lookup(parent.0, name))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.shared.lock().attr(ino.0))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.mutate(|model| {
            if let Some(size) = size {
                model.set_size(ino.0, size)?;
            }
            model.set_owner_mode(ino.0, mode.map(|mode| (mode & 0o7777) as u16), uid, gid)
        });
        reply_attr(reply, result)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        reply_entry(
            reply,
            self.mutate(|model| model.mkdir(parent.0, name, perm, req.uid(), req.gid())),
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.mutate(|model| model.unlink(parent.0, name)))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.mutate(|model| model.rmdir(parent.0, name)))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            // RENAME_EXCHANGE and RENAME_WHITEOUT: nothing here uses them.
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        reply_empty(
            reply,
            self.mutate(|model| model.rename(parent.0, name, newparent.0, newname, no_replace)),
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.lock().open(ino.0, flags.0) {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE),
            Err(error) => reply.error(errno(error)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        match self.mutate(|model| model.create(parent.0, name, perm, req.uid(), req.gid(), flags)) {
            Ok((attr, handle)) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(0),
                FileHandle(handle),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(error) => reply.error(errno(error)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.shared.lock().read(ino.0, offset, size as usize) {
            Ok(bytes) => reply.data(&bytes),
            Err(error) => reply.error(errno(error)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // `flags` are the file's flags, with O_DSYNC/O_SYNC added by the
        // kernel for a RWF_DSYNC/RWF_SYNC write.
        match self.mutate(|model| model.write(ino.0, offset, data, flags.0)) {
            Ok(written) => {
                if flags.0 & libc::O_DSYNC != 0 {
                    self.follow_ups().insert((req.pid(), ino.0));
                }
                reply.written(written as u32)
            }
            Err(error) => reply.error(errno(error)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.follow_ups().remove(&(req.pid(), ino.0)) {
            // The kernel's sync of an O_DSYNC write's range (see `Shared`).
            match self.shared.lock().is_cut() {
                false => reply.ok(),
                true => reply.error(Errno::EIO),
            }
            return;
        }
        // fsync and fdatasync alike: data and size (the model keeps no
        // other metadata durable).
        reply_empty(reply, self.mutate(|model| model.sync_file(ino.0)))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.lock().attr(ino.0) {
            Ok(attr) if attr.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(error) => reply.error(errno(error)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Offsets are positions in the name-ordered listing (with `.` and
        // `..` first); a listing that changes between calls may skip or
        // repeat a name, as POSIX allows.
        let entries = match self.shared.lock().read_dir(ino.0) {
            Ok(entries) => entries,
            Err(error) => {
                reply.error(errno(error));
                return;
            }
        };
        let dots = [
            (OsStr::new(".").to_owned(), ino.0, Kind::Dir),
            (OsStr::new("..").to_owned(), ino.0, Kind::Dir),
        ];
        for (position, (name, target, kind)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            let kind = match kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            };
            if reply.add(INodeNo(target), position as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.mutate(|model| model.sync_dir(ino.0)))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let model = self.shared.lock();
        match model.space() {
            Ok((capacity, free)) => {
                let block = PAGE_BYTES as u64;
                let files = model.inode_count();
                reply.statfs(
                    capacity / block,
                    free / block,
                    free / block,
                    files + 1_000_000,
                    1_000_000,
                    block as u32,
                    crate::model::NAME_BYTES_MAX as u32,
                    block as u32,
                );
            }
            Err(error) => reply.error(errno(error)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Tests run as root; permission bits are kept but not enforced.
        match self.shared.lock().attr(ino.0) {
            Ok(_) => reply.ok(),
            Err(error) => reply.error(errno(error)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.mutate(|model| model.fallocate(ino.0, offset, length, mode)),
        )
    }
}
