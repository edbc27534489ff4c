//! Submitting: the operation table's entry and exit (with the file
//! references an operation holds), and the handler's file and timer API.

use std::ffi::CString;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::types::Timespec;

use super::ops::{OpBody, ReadOp, TimerPurpose, WriteOp};
use super::Core;
use crate::aligned::AlignedBuf;
use crate::backend::op::{self, Prim, CANCEL_USER_DATA};
use crate::buf::IoBuf;
use crate::chunk::Chunk;
use crate::config::IOVECS_PER_WRITE_MAX;
use crate::error::{IoError, OpKind, SubmitError};
use crate::event::{At, Event, FileHandle, OpenOptions, SyncKind, TimerId};
use crate::slab::Key;
use crate::sys;

fn c_path(path: &Path) -> Result<CString, SubmitError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SubmitError::InvalidPath)
}

impl Core {
    /// Inserts and issues an operation; gives the body back if the table is
    /// full. `counted`: a handler's operation (against its limit).
    pub(super) fn start(&mut self, body: OpBody, counted: bool) -> Result<Key, OpBody> {
        let refs = body.file_refs();
        let key = self.ops.insert(body, counted)?;
        self.files.add_refs(refs);
        self.issue(key);
        Ok(key)
    }

    /// Removes an operation whose every completion is in, releasing its
    /// file references (and closing a file that waited for them).
    pub(super) fn finish(&mut self, key: Key) -> Option<OpBody> {
        let body = self.ops.remove(key)?;
        for file in self
            .files
            .release_refs(body.file_refs())
            .into_iter()
            .flatten()
        {
            self.begin_close(file);
        }
        Some(body)
    }

    /// Whether the handler may submit another operation now.
    pub(super) fn check_submit(&self) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        if self.ops.handler_ops() >= self.limits.ops_in_flight_max {
            return Err(self.too_many_ops());
        }
        Ok(())
    }

    pub(super) fn too_many_ops(&self) -> SubmitError {
        SubmitError::TooManyOps {
            maximum: self.limits.ops_in_flight_max,
        }
    }

    fn start_handler_op(&mut self, body: OpBody) -> Result<(), SubmitError> {
        self.start(body, true)
            .map(drop)
            .map_err(|_| self.too_many_ops())
    }

    /// Opens `path` (relative to `at`). Ends in [`Event::Opened`].
    pub fn open(
        &mut self,
        at: At,
        path: &Path,
        options: OpenOptions,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.files.resolve(at)?;
        let path = c_path(path)?;
        self.start_handler_op(OpBody::Open {
            path,
            dir_fd,
            dir,
            flags: options.flags(),
            mode: options.mode_bits(),
            tag,
        })
    }

    /// Registers a descriptor opened elsewhere (e.g. a data directory opened
    /// at start); the core owns and closes it.
    pub fn adopt_file(&mut self, fd: OwnedFd) -> Result<FileHandle, SubmitError> {
        self.files.insert(fd).map_err(|_| self.too_many_ops())
    }

    /// Registers `buf` with this core's io_uring, once: a later
    /// [`Core::write_at`] of it alone (as [`IoBuf::Aligned`]) on this core
    /// then goes as `IORING_OP_WRITE_FIXED`, which takes its pages from the
    /// registration instead of pinning them on every write (an `O_DIRECT`
    /// write's cost). The buffer carries its slot; when it is dropped its
    /// memory is freed only after the slot is cleared, at the core's next
    /// turn. Returns whether it is registered now (or was, with this
    /// core). `false`: the portable backend, no free slot, or the kernel
    /// refused, which counts registered memory against `RLIMIT_MEMLOCK`
    /// (logged once at info, with the limit and how to raise it); its
    /// writes are then plain, as before.
    pub fn register_buffer(&mut self, buf: &mut AlignedBuf) -> bool {
        if self.backend.fixed_index(buf).is_some() {
            return true;
        }
        match self.backend.register_buffer(buf) {
            Ok(registered) => registered,
            Err(error) => {
                crate::fixed::log_refusal(&error, buf.capacity());
                false
            }
        }
    }

    /// Writes `bufs` at `offset`, straight from their memory (receive
    /// buffers included: no copy). Ends in [`Event::Written`] once every byte
    /// is written; a short write is resubmitted, never reported as success.
    pub fn write_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        bufs: Vec<IoBuf>,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.submit_write(file, offset, bufs, None, tag)
    }

    /// Like [`Core::write_at`], with a sync linked after the write (one
    /// submission on io_uring). [`Event::Written`] reports success only when
    /// the bytes are written *and* synced; a short write cancels the linked
    /// sync, and the runtime resubmits the remainder with a new sync.
    pub fn write_at_and_sync(
        &mut self,
        file: FileHandle,
        offset: u64,
        bufs: Vec<IoBuf>,
        kind: SyncKind,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.submit_write(file, offset, bufs, Some(kind), tag)
    }

    fn submit_write(
        &mut self,
        file: FileHandle,
        offset: u64,
        bufs: Vec<IoBuf>,
        sync: Option<SyncKind>,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let fd = self.files.fd(file)?;
        if bufs.len() > IOVECS_PER_WRITE_MAX {
            return Err(SubmitError::TooManyBuffers {
                count: bufs.len(),
                maximum: IOVECS_PER_WRITE_MAX,
            });
        }
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .filter(|buf| !buf.is_empty())
            .map(|buf| libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            })
            .collect();
        let total: u64 = iovecs.iter().map(|iovec| iovec.iov_len as u64).sum();
        if total == 0 {
            return Err(SubmitError::EmptyBuffer);
        }
        // One aligned buffer registered with this ring: written from its
        // registration, its pages not pinned again.
        let fixed = match bufs.as_slice() {
            [IoBuf::Aligned(buf)] => self.backend.fixed_index(buf),
            _ => None,
        };
        let write = WriteOp {
            file: file.0,
            fd,
            offset,
            _bufs: bufs,
            iovecs,
            first: 0,
            fault_iovecs: Vec::new(),
            written: 0,
            total,
            sync,
            fixed,
            tag,
            results: [None, None],
        };
        self.start_handler_op(OpBody::Write(Box::new(write)))
    }

    /// Reads the file from `offset` into `ranges` of `chunk`'s buffer, in
    /// order (a scatter read: the gaps between ranges are left for the
    /// caller's headers). The chunk is the operation's until
    /// [`Event::Read`] hands it back; a short read is resubmitted, so the
    /// result is every byte asked for, or fewer only at the end of the file.
    /// Ranges must be non-empty, in order, non-overlapping and inside the
    /// chunk ([`SubmitError::InvalidRanges`]); at most
    /// `IOVECS_PER_WRITE_MAX` of them. On a submit error the chunk is
    /// dropped (back in its pool).
    pub fn read_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        mut chunk: Chunk,
        ranges: &[Range<usize>],
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let fd = self.files.fd(file)?;
        if ranges.len() > IOVECS_PER_WRITE_MAX {
            return Err(SubmitError::TooManyBuffers {
                count: ranges.len(),
                maximum: IOVECS_PER_WRITE_MAX,
            });
        }
        if ranges.is_empty() || !chunk.ranges_valid(ranges) {
            return Err(SubmitError::InvalidRanges);
        }
        let base = chunk.as_mut_ptr();
        let iovecs: Vec<libc::iovec> = ranges
            .iter()
            .map(|range| libc::iovec {
                // In bounds: checked by `ranges_valid` above.
                iov_base: base.wrapping_add(range.start).cast(),
                iov_len: range.end - range.start,
            })
            .collect();
        let total = ranges
            .iter()
            .map(|range| (range.end - range.start) as u64)
            .sum();
        let read = ReadOp {
            file: file.0,
            fd,
            offset,
            chunk,
            iovecs,
            first: 0,
            read: 0,
            total,
            tag,
        };
        self.start_handler_op(OpBody::Read(Box::new(read)))
    }

    /// Syncs a file or directory. Covers the writes whose [`Event::Written`]
    /// was delivered before this call (io_uring does not order separately
    /// submitted operations). Ends in [`Event::Synced`].
    pub fn sync(&mut self, file: FileHandle, kind: SyncKind, tag: u64) -> Result<(), SubmitError> {
        self.check_submit()?;
        let fd = self.files.fd(file)?;
        self.start_handler_op(OpBody::Sync {
            file: file.0,
            fd,
            kind,
            tag,
        })
    }

    /// Renames `from` to `to`. Ends in [`Event::Renamed`].
    pub fn rename(
        &mut self,
        from_at: At,
        from: &Path,
        to_at: At,
        to: &Path,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (old_dir_fd, old_dir) = self.files.resolve(from_at)?;
        let (new_dir_fd, new_dir) = self.files.resolve(to_at)?;
        let body = OpBody::Rename {
            old: c_path(from)?,
            new: c_path(to)?,
            old_dir_fd,
            new_dir_fd,
            dirs: [old_dir, new_dir],
            tag,
        };
        self.start_handler_op(body)
    }

    /// Creates a directory. Ends in [`Event::DirCreated`].
    pub fn mkdir(&mut self, at: At, path: &Path, mode: u32, tag: u64) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.files.resolve(at)?;
        self.start_handler_op(OpBody::MkDir {
            path: c_path(path)?,
            dir_fd,
            dir,
            mode,
            tag,
        })
    }

    /// Removes a file. Ends in [`Event::Unlinked`].
    pub fn unlink(&mut self, at: At, path: &Path, tag: u64) -> Result<(), SubmitError> {
        self.remove_path(at, path, false, tag)
    }

    /// Removes an empty directory. Ends in [`Event::Unlinked`].
    pub fn remove_dir(&mut self, at: At, path: &Path, tag: u64) -> Result<(), SubmitError> {
        self.remove_path(at, path, true, tag)
    }

    fn remove_path(
        &mut self,
        at: At,
        path: &Path,
        remove_dir: bool,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.files.resolve(at)?;
        self.start_handler_op(OpBody::Unlink {
            path: c_path(path)?,
            dir_fd,
            dir,
            remove_dir,
            tag,
        })
    }

    /// Closes a file once the operations using it have completed. The handle
    /// is stale at once. Ends in [`Event::FileClosed`].
    pub fn close_file(&mut self, file: FileHandle, tag: u64) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        if self.files.request_close(file, tag)? {
            self.begin_close(file.0);
        }
        Ok(())
    }

    /// Closes a file whose close was requested and whose operations are done.
    pub(super) fn begin_close(&mut self, file: Key) {
        let Some((fd, tag)) = self.files.take_for_close(file) else {
            return;
        };
        if let Err(OpBody::Close { fd, tag }) = self.start(OpBody::Close { fd, tag }, true) {
            // The table is full: close here rather than leak the descriptor.
            let result = sys::close(fd).map_err(|errno| IoError::new(OpKind::Close, errno));
            self.push_event(Event::FileClosed { tag, result });
        }
    }

    /// Fires [`Event::TimerFired`] with `tag` after `after`.
    pub fn timer(&mut self, after: Duration, tag: u64) -> Result<TimerId, SubmitError> {
        self.check_submit()?;
        let key = self
            .start(timer_body(after, tag, TimerPurpose::Handler), true)
            .map_err(|_| self.too_many_ops())?;
        Ok(TimerId(op::user_data(key, 0)))
    }

    /// Cancels a timer: no [`Event::TimerFired`] is delivered for it after
    /// this call. Unknown or fired timers are ignored.
    pub fn cancel_timer(&mut self, timer: TimerId) {
        let (key, _) = op::decode_user_data(timer.0);
        let Some(entry) = self.ops.get_mut(key) else {
            return;
        };
        if let OpBody::Timer {
            cancelled,
            purpose: TimerPurpose::Handler,
            ..
        } = &mut entry.body
        {
            if !*cancelled {
                *cancelled = true;
                self.backend.issue(
                    CANCEL_USER_DATA,
                    Prim::CancelOne {
                        target: timer.0,
                        fd: None,
                        timer: true,
                    },
                );
            }
        }
    }
}

/// A timer operation firing `after` from now.
pub(super) fn timer_body(after: Duration, tag: u64, purpose: TimerPurpose) -> OpBody {
    OpBody::Timer {
        timespec: Box::new(Timespec::from(after)),
        deadline: Instant::now() + after,
        tag,
        purpose,
        cancelled: false,
    }
}
