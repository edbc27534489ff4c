//! The portable backend's file helpers: a small bounded pool of threads,
//! shared by all cores, that run the blocking file calls (`pwritev`,
//! `fdatasync`, `openat`, `renameat`, ...) and answer each core through its
//! own reply queue, waking it.
//!
//! Why not on the core thread: a core waiting in `fdatasync` would stall every
//! connection it owns, and independent syncs in flight together let the file
//! system's journal commit them as one group, which is what io_uring's io-wq
//! gives the other backend. Each job carries raw pointers into memory the
//! core keeps alive until the job's completion comes back, the same contract
//! as an io_uring submission.

use std::ffi::CStr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::backend::op::{Completion, Prim};
use crate::event::SyncKind;
use crate::sys;
use crate::wake::WakeSignal;

/// A file call for a helper thread.
pub(crate) struct FileJob {
    user_data: u64,
    prim: Prim,
    reply: Sender<Completion>,
    wake: Arc<WakeSignal>,
}

impl FileJob {
    /// `prim` for a helper; its completions go to `reply`, then `wake` fires.
    pub fn new(
        user_data: u64,
        prim: Prim,
        reply: Sender<Completion>,
        wake: Arc<WakeSignal>,
    ) -> FileJob {
        FileJob {
            user_data,
            prim,
            reply,
            wake,
        }
    }

    /// Whether the job is a write with a linked sync (two completions).
    pub fn has_linked_sync(&self) -> bool {
        matches!(
            self.prim,
            Prim::Write {
                linked_sync: Some(_),
                ..
            }
        )
    }
}

// SAFETY: the raw pointers in `prim` point into heap memory owned by the
// operation's table entry on the submitting core; the core neither frees nor
// mutates it until it has received this job's completion (the core's drain
// at shutdown waits for it, or leaks the memory). The helper only reads it.
unsafe impl Send for FileJob {}

/// The helper threads that run file calls for the portable backend.
#[derive(Debug)]
pub(crate) struct FilePool {
    sender: Option<Sender<FileJob>>,
    threads: Vec<JoinHandle<()>>,
}

impl FilePool {
    pub fn start(thread_count: usize, queue_capacity: usize) -> std::io::Result<FilePool> {
        let (sender, receiver) = crossbeam_channel::bounded::<FileJob>(queue_capacity);
        let mut threads = Vec::with_capacity(thread_count);
        for index in 0..thread_count {
            let receiver = receiver.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sluice-file-{index}"))
                .spawn(move || run_file_helper(&receiver))?;
            threads.push(handle);
        }
        Ok(FilePool {
            sender: Some(sender),
            threads,
        })
    }

    pub fn sender(&self) -> Option<Sender<FileJob>> {
        self.sender.clone()
    }

    /// Closes the queue (helpers exit once cores dropped their senders too)
    /// and waits for the helpers until `deadline`; returns how many are
    /// still running.
    pub fn stop(mut self, deadline: Instant) -> usize {
        self.sender = None;
        let mut running = 0;
        for handle in self.threads.drain(..) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                running += 1;
            }
        }
        running
    }
}

fn run_file_helper(receiver: &Receiver<FileJob>) {
    for job in receiver.iter() {
        let completions = execute_file_job(job.user_data, &job.prim);
        for completion in completions.into_iter().flatten() {
            // The core's reply queue holds two completions per operation it
            // may have in flight, so this never blocks for long; a core that
            // is gone has dropped its receiver and the send fails harmlessly.
            let _ = job.reply.send(completion);
        }
        job.wake.signal();
    }
}

fn negative(errno: i32) -> i32 {
    -errno
}

/// Reads a path the core keeps alive in the operation entry.
///
/// # Safety
/// `path` must point at a NUL-terminated string that stays alive and
/// unchanged during the call.
unsafe fn path_of<'a>(path: *const libc::c_char) -> &'a CStr {
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(path) }
}

fn execute_file_job(user_data: u64, prim: &Prim) -> [Option<Completion>; 2] {
    let done = |result: i32| [Some(Completion::new(user_data, result, 0)), None];
    let result_of = |outcome: sys::SysResult<()>| outcome.map_or_else(negative, |()| 0);
    match *prim {
        Prim::Open {
            dir,
            path,
            flags,
            mode,
        } => {
            // SAFETY: `path` is the CString of the open's table entry.
            let path = unsafe { path_of(path) };
            done(sys::openat(dir, path, flags, mode).map_or_else(negative, IntoRawFd::into_raw_fd))
        }
        Prim::Write {
            fd,
            iovecs,
            count,
            offset,
            linked_sync,
            fixed: _,
        } => {
            // SAFETY: `iovecs` points at `count` iovecs in the write's table
            // entry, each naming a buffer the entry holds.
            let requested: usize = unsafe { std::slice::from_raw_parts(iovecs, count as usize) }
                .iter()
                .map(|iovec| iovec.iov_len)
                .sum();
            // SAFETY: as above; the buffers are only read.
            let written = unsafe { sys::pwritev(fd, iovecs, count as usize, offset) };
            let write_result =
                written.map_or_else(negative, |bytes| i32::try_from(bytes).unwrap_or(i32::MAX));
            let sync = linked_sync.map(|kind| {
                // A linked sync runs only after a complete write, as an
                // io_uring chain does; otherwise it is cancelled.
                let sync_result = match written {
                    Ok(bytes) if bytes == requested => {
                        result_of(sys::fsync(fd, kind == SyncKind::Data))
                    }
                    _ => -libc::ECANCELED,
                };
                Completion::new(user_data + 1, sync_result, 0)
            });
            [Some(Completion::new(user_data, write_result, 0)), sync]
        }
        Prim::Read {
            fd,
            iovecs,
            count,
            offset,
        } => {
            // SAFETY: `iovecs` points at `count` iovecs in the read's table
            // entry, each naming a part of the chunk the entry holds, which
            // nothing else reads or writes until this completion is in.
            let read = unsafe { sys::preadv(fd, iovecs, count as usize, offset) };
            done(read.map_or_else(negative, |bytes| i32::try_from(bytes).unwrap_or(i32::MAX)))
        }
        Prim::Sync { fd, kind } => done(result_of(sys::fsync(fd, kind == SyncKind::Data))),
        Prim::Rename {
            old_dir,
            old,
            new_dir,
            new,
        } => {
            // SAFETY: both are CStrings of the rename's table entry.
            let (old, new) = unsafe { (path_of(old), path_of(new)) };
            done(result_of(sys::renameat(old_dir, old, new_dir, new)))
        }
        Prim::MkDir { dir, path, mode } => {
            // SAFETY: the CString of the mkdir's table entry.
            let path = unsafe { path_of(path) };
            done(result_of(sys::mkdirat(dir, path, mode)))
        }
        Prim::Unlink { dir, path, flags } => {
            // SAFETY: the CString of the unlink's table entry.
            let path = unsafe { path_of(path) };
            done(result_of(sys::unlinkat(dir, path, flags)))
        }
        Prim::Close { fd } => done(result_of(sys::close(fd))),
        _ => done(-libc::EINVAL),
    }
}
