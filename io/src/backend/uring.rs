//! The io_uring backend: one ring per core, created on the core's thread
//! (single issuer, deferred task-run where the kernel has them), a
//! provided-buffer ring for multishot receives, and an eventfd read that
//! wakes the core when another thread hands it work.
//!
//! Never uses `IOSQE_IO_DRAIN`: on this kernel it was seen to stall
//! `SEND_ZC` on the same ring, and ordering here comes from links (a write
//! and its sync) or from issuing after a completion.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, FsyncFlags, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};

use crate::buf::Pool;
use crate::event::SyncKind;
use crate::wake::WakeSignal;

use super::op::{Completion, Prim, CANCEL_USER_DATA, WAKE_USER_DATA};

/// Buffer group id of the provided-buffer ring (one group per ring).
const BUFFER_GROUP: u16 = 0;

/// Submission entries, a write and its linked sync kept together.
type EntryGroup = (squeue::Entry, Option<squeue::Entry>);

pub(crate) struct UringBackend {
    // Field order matters: the ring (and with it the buffer registration)
    // is dropped before the pool whose memory it references.
    ring: IoUring,
    /// Kept alive (not read): the registered buffer ring lives in it.
    _pool: Rc<Pool>,
    wake: Arc<WakeSignal>,
    wake_buffer: Box<u64>,
    wake_armed: bool,
    draining: bool,
    /// Entries that did not fit the submission queue, in order.
    backlog: VecDeque<EntryGroup>,
    /// Which setup flags the kernel accepted (for the debug log).
    pub setup_description: &'static str,
}

impl std::fmt::Debug for UringBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBackend")
            .field("setup", &self.setup_description)
            .finish()
    }
}

/// Sets a builder's setup flags.
type SetupFlags = fn(&mut io_uring::Builder);

/// Builds a ring with the best setup flags the kernel accepts.
pub(crate) fn build_ring(
    entries: u32,
    completion_entries: u32,
) -> std::io::Result<(IoUring, &'static str)> {
    let attempts: [(&'static str, SetupFlags); 3] = [
        ("single-issuer + defer-taskrun", |builder| {
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }),
        ("coop-taskrun", |builder| {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }),
        ("plain", |_| {}),
    ];
    let mut last_error = None;
    for (description, configure) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(completion_entries).setup_clamp();
        configure(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, description)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL)))
}

impl UringBackend {
    pub fn new(
        ring_entries: u32,
        completion_entries: u32,
        buffer_size_bytes: u32,
        buffer_count: u16,
        file_workers_max: u32,
        wake: Arc<WakeSignal>,
    ) -> std::io::Result<(UringBackend, Rc<Pool>)> {
        let (ring, setup_description) = build_ring(ring_entries, completion_entries)?;
        if file_workers_max > 0 {
            // [bounded (file) workers, unbounded (socket) workers]; 0 keeps
            // the kernel's limit. Kernels before 5.15 lack the call: the
            // default pool then applies, which is slower, not wrong.
            let mut limits = [file_workers_max, 0];
            if let Err(error) = ring.submitter().register_iowq_max_workers(&mut limits) {
                tracing::debug!(%error, "io_uring: cannot raise the file worker limit");
            }
        }
        let pool = Pool::with_ring(buffer_size_bytes, buffer_count)?;
        let ring_address = pool
            .ring_address()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the ring memory holds `buffer_count` entries and is owned by
        // `pool`, which this backend keeps alive (and drops after the ring,
        // by field order) so it stays valid while registered.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_address,
                buffer_count,
                BUFFER_GROUP,
                0,
            )?
        };
        let mut backend = UringBackend {
            ring,
            _pool: Rc::clone(&pool),
            wake,
            wake_buffer: Box::new(0),
            wake_armed: false,
            draining: false,
            backlog: VecDeque::new(),
            setup_description,
        };
        backend.arm_wake();
        Ok((backend, pool))
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            Fd(self.wake.fd().as_raw_fd()),
            (&raw mut *self.wake_buffer).cast::<u8>(),
            size_of::<u64>() as u32,
        )
        .build()
        .user_data(WAKE_USER_DATA);
        self.push((entry, None));
        self.wake_armed = true;
    }

    /// Stops re-arming the wake read (shutdown drains everything).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    pub fn issue(&mut self, user_data: u64, prim: Prim) {
        let group = match prim {
            Prim::AcceptMulti { fd } => (
                opcode::AcceptMulti::new(Fd(fd))
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::RecvMulti { fd } => (
                opcode::RecvMulti::new(Fd(fd), BUFFER_GROUP)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Recv {
                fd,
                pointer,
                length,
                whole,
            } => (
                opcode::Recv::new(Fd(fd), pointer, length)
                    .flags(if whole { libc::MSG_WAITALL } else { 0 })
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Send {
                fd,
                pointer,
                length,
            } => (
                opcode::Send::new(Fd(fd), pointer, length)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Connect {
                fd,
                address,
                length,
            } => (
                opcode::Connect::new(Fd(fd), address, length)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Open {
                dir,
                path,
                flags,
                mode,
            } => (
                opcode::OpenAt::new(Fd(dir), path)
                    .flags(flags)
                    .mode(mode)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Write {
                fd,
                iovecs,
                count,
                offset,
                linked_sync,
            } => {
                let write = opcode::Writev::new(Fd(fd), iovecs, count)
                    .offset(offset)
                    .build()
                    .user_data(user_data);
                match linked_sync {
                    None => (write, None),
                    Some(kind) => (
                        write.flags(squeue::Flags::IO_LINK),
                        Some(sync_entry(fd, kind).user_data(user_data + 1)),
                    ),
                }
            }
            Prim::Sync { fd, kind } => (sync_entry(fd, kind).user_data(user_data), None),
            Prim::Read {
                fd,
                iovecs,
                count,
                offset,
            } => (
                opcode::Readv::new(Fd(fd), iovecs, count)
                    .offset(offset)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Rename {
                old_dir,
                old,
                new_dir,
                new,
            } => (
                opcode::RenameAt::new(Fd(old_dir), old, Fd(new_dir), new)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::MkDir { dir, path, mode } => (
                opcode::MkDirAt::new(Fd(dir), path)
                    .mode(mode)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Unlink { dir, path, flags } => (
                opcode::UnlinkAt::new(Fd(dir), path)
                    .flags(flags)
                    .build()
                    .user_data(user_data),
                None,
            ),
            Prim::Close { fd } => (
                opcode::Close::new(Fd(fd)).build().user_data(user_data),
                None,
            ),
            Prim::Timer { timespec, .. } => (
                opcode::Timeout::new(timespec).build().user_data(user_data),
                None,
            ),
            Prim::CancelOne {
                target,
                timer: true,
                ..
            } => (
                opcode::TimeoutRemove::new(target)
                    .build()
                    .user_data(CANCEL_USER_DATA),
                None,
            ),
            Prim::CancelOne {
                target,
                timer: false,
                ..
            } => (
                opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(CANCEL_USER_DATA),
                None,
            ),
            Prim::CancelFd { fd } => (
                opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
                    .build()
                    .user_data(CANCEL_USER_DATA),
                None,
            ),
            Prim::CancelAll => (
                opcode::AsyncCancel2::new(CancelBuilder::any())
                    .build()
                    .user_data(CANCEL_USER_DATA),
                None,
            ),
        };
        self.push(group);
    }

    fn push(&mut self, group: EntryGroup) {
        if !self.backlog.is_empty() || !self.try_push(&group) {
            // Make room by submitting what is queued, then retry once; what
            // still does not fit waits in the backlog, in order.
            if self.backlog.is_empty() {
                let _ = self.ring.submit();
                if self.try_push(&group) {
                    return;
                }
            }
            self.backlog.push_back(group);
        }
    }

    fn try_push(&mut self, group: &EntryGroup) -> bool {
        let mut queue = self.ring.submission();
        let needed = if group.1.is_some() { 2 } else { 1 };
        if queue.capacity() - queue.len() < needed {
            return false;
        }
        // SAFETY: every pointer in these entries refers to memory owned by
        // the operation's table entry in `core/ops.rs` (or by this backend, for
        // the wake read), which stays allocated and unmoved until the
        // operation's final completion has been reaped; see docs/safety.md.
        let pushed = unsafe {
            match &group.1 {
                None => queue.push(&group.0),
                Some(second) => queue.push_multiple(&[group.0.clone(), second.clone()]),
            }
        };
        pushed.is_ok()
    }

    fn flush_backlog(&mut self) {
        while let Some(group) = self.backlog.pop_front() {
            if !self.try_push(&group) {
                let _ = self.ring.submit();
                if !self.try_push(&group) {
                    self.backlog.push_front(group);
                    return;
                }
            }
        }
    }

    /// Submits, optionally waits for at least one completion (at most
    /// `timeout`), and appends completions to `out`. Returns whether the
    /// core's wake-up fired.
    pub fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> std::io::Result<bool> {
        self.flush_backlog();
        let submitted = if block {
            match timeout {
                Some(timeout) => {
                    let timespec = Timespec::from(timeout);
                    let args = SubmitArgs::new().timespec(&timespec);
                    self.ring.submitter().submit_with_args(1, &args)
                }
                None => self.ring.submit_and_wait(1),
            }
        } else {
            self.ring.submit()
        };
        if let Err(error) = submitted {
            match error.raw_os_error() {
                // Interrupted, timed out, or the completion queue needs
                // reaping first: all handled by reaping below.
                Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN) => {}
                _ => return Err(error),
            }
        }
        let mut woken = false;
        for entry in self.ring.completion() {
            match entry.user_data() {
                WAKE_USER_DATA => {
                    woken = true;
                    self.wake_armed = false;
                }
                CANCEL_USER_DATA => {}
                user_data => out.push(Completion::new(user_data, entry.result(), entry.flags())),
            }
        }
        if !self.wake_armed && !self.draining {
            self.arm_wake();
        }
        Ok(woken)
    }

    /// Whether the wake read is still in the kernel (shutdown waits for it:
    /// the kernel writes into `wake_buffer` when it completes).
    pub fn wake_in_flight(&self) -> bool {
        self.wake_armed
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        if self.wake_armed {
            // The read never completed (drain timed out): the kernel may
            // still write into the buffer, so it is leaked, never freed.
            std::mem::forget(std::mem::take(&mut self.wake_buffer));
        }
    }
}

fn sync_entry(fd: i32, kind: SyncKind) -> squeue::Entry {
    let flags = match kind {
        SyncKind::Data => FsyncFlags::DATASYNC,
        SyncKind::All => FsyncFlags::empty(),
    };
    opcode::Fsync::new(Fd(fd)).flags(flags).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_takes_single_issuer_and_deferred_taskrun() {
        // Kernel 6.1+ (the development machine and CI run 6.18).
        let (_ring, setup) = build_ring(8, 16).unwrap();
        assert_eq!(setup, "single-issuer + defer-taskrun");
    }
}
