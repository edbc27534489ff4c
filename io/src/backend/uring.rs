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

use crate::aligned::AlignedBuf;
use crate::buf::Pool;
use crate::event::SyncKind;
use crate::fixed::{self, FixedSlot, FixedTable, FIXED_SLOTS};
use crate::wake::WakeSignal;

use super::op::{ChainStep, Completion, FixedWrite, Prim, CANCEL_USER_DATA, WAKE_USER_DATA};

/// Buffer group id of the provided-buffer ring (one group per ring).
const BUFFER_GROUP: u16 = 0;

/// Submission entries pushed together: one, a write and its linked sync,
/// or a linked chain (contiguous in the queue, so the links hold).
enum EntryGroup {
    Pair(squeue::Entry, Option<squeue::Entry>),
    Chain(Vec<squeue::Entry>),
}

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
    /// The ring's sparse table of registered buffers (`None`: the kernel
    /// refused the table; every write is plain).
    fixed: Option<Arc<FixedTable>>,
    /// Which setup flags the kernel accepted (for the debug log).
    pub setup_description: &'static str,
    /// The kernel has `IORING_OP_SPLICE` (probed at start).
    splice: bool,
    /// Submissions the queue holds (a chain must fit whole).
    submission_entries: usize,
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
        // An empty table (no memory registered, nothing counted against
        // RLIMIT_MEMLOCK until a buffer takes a slot); Linux 5.19.
        let fixed = match ring.submitter().register_buffers_sparse(FIXED_SLOTS) {
            Ok(()) => Some(Arc::new(FixedTable::new(FIXED_SLOTS))),
            Err(error) => {
                tracing::info!(%error, "io_uring: no table of registered buffers; record writes pin their pages each time");
                None
            }
        };
        let mut probe = io_uring::Probe::new();
        let splice = match ring.submitter().register_probe(&mut probe) {
            Ok(()) => probe.is_supported(opcode::Splice::CODE),
            Err(error) => {
                tracing::debug!(%error, "io_uring: cannot probe the opcodes; no splice");
                false
            }
        };
        let submission_entries = ring.params().sq_entries() as usize;
        let mut backend = UringBackend {
            splice,
            submission_entries,
            ring,
            _pool: Rc::clone(&pool),
            wake,
            wake_buffer: Box::new(0),
            wake_armed: false,
            draining: false,
            backlog: VecDeque::new(),
            fixed,
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
        self.push(EntryGroup::Pair(entry, None));
        self.wake_armed = true;
    }

    /// Registers `buf` in a free slot of the ring's table; its writes then
    /// go as `IORING_OP_WRITE_FIXED`. `Err` with the kernel's refusal
    /// (`RLIMIT_MEMLOCK`), `Ok(false)` when there is no table or no free
    /// slot, or the buffer is empty or registered already.
    pub fn register_buffer(&mut self, buf: &mut AlignedBuf) -> std::io::Result<bool> {
        self.release_buffers();
        let Some(table) = &self.fixed else {
            return Ok(false);
        };
        if buf.fixed().is_some() || buf.capacity() == 0 {
            return Ok(false);
        }
        let Some(index) = table.take_free() else {
            return Ok(false);
        };
        let region = [fixed::region(buf.registration_region())];
        // SAFETY: the region is the buffer's heap bytes, which never move
        // while it lives (its `Vec` is never grown) and are freed only
        // after this slot is cleared (`AlignedBuf`'s drop hands them to the
        // table; `release_buffers` clears the slot, then frees them) or
        // once the ring is closed (`Drop for UringBackend`), so they stay
        // valid for as long as the kernel holds the registration.
        let registered = unsafe {
            self.ring
                .submitter()
                .register_buffers_update(u32::from(index), &region, None)
        };
        match registered {
            Ok(()) => {
                table.registered();
                buf.set_fixed(FixedSlot::new(Arc::clone(table), index));
                Ok(true)
            }
            Err(error) => {
                table.put_free(index);
                Err(error)
            }
        }
    }

    /// The slot of `buf` in this ring's table, if it is registered here.
    pub fn fixed_index(&self, buf: &AlignedBuf) -> Option<u16> {
        let table = self.fixed.as_ref()?;
        buf.fixed()?.index_in(table)
    }

    /// Buffers registered in the ring's table.
    pub fn registered_buffers(&self) -> usize {
        self.fixed
            .as_ref()
            .map_or(0, |table| table.registered_count())
    }

    /// Clears the slots of registered buffers dropped since the last call,
    /// then frees their memory and makes the slots free.
    fn release_buffers(&mut self) {
        let Some(table) = &self.fixed else {
            return;
        };
        for (index, memory) in table.take_released() {
            let empty = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }];
            // SAFETY: a null, empty vector registers no memory: it clears
            // the slot (the kernel's sparse-table update).
            let cleared = unsafe {
                self.ring
                    .submitter()
                    .register_buffers_update(u32::from(index), &empty, None)
            };
            match cleared {
                Ok(()) => table.put_free(index),
                // The slot keeps the old pages pinned: it is never handed
                // out again, so no write can name them.
                Err(error) => {
                    tracing::warn!(%error, slot = index, "io_uring: a registered buffer's slot could not be cleared; the slot is retired");
                }
            }
            drop(memory);
        }
    }

    /// Whether the ring has `IORING_OP_SPLICE`.
    pub fn splice_supported(&self) -> bool {
        self.splice
    }

    /// The longest chain it takes (half the submission queue).
    pub fn chain_max(&self) -> usize {
        (self.submission_entries / 2).max(2)
    }

    /// Stops re-arming the wake read (shutdown drains everything).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    pub fn issue(&mut self, user_data: u64, prim: Prim) {
        if let Prim::Chain { steps } = prim {
            let last = steps.len().saturating_sub(1);
            let entries = steps
                .iter()
                .enumerate()
                .map(|(part, step)| {
                    let entry = chain_entry(step).user_data(user_data + part as u64);
                    if part < last {
                        entry.flags(squeue::Flags::IO_LINK)
                    } else {
                        entry
                    }
                })
                .collect();
            return self.push(EntryGroup::Chain(entries));
        }
        let (first, second) = match prim {
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
                fixed,
            } => {
                let write = match fixed {
                    // One buffer, registered in slot `index`: the kernel
                    // takes its pages from the registration.
                    Some(FixedWrite {
                        index,
                        pointer,
                        length,
                    }) => opcode::WriteFixed::new(Fd(fd), pointer, length, index)
                        .offset(offset)
                        .build(),
                    None => opcode::Writev::new(Fd(fd), iovecs, count)
                        .offset(offset)
                        .build(),
                }
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
            Prim::Chain { .. } => return,
        };
        self.push(EntryGroup::Pair(first, second));
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
        let needed = match group {
            EntryGroup::Pair(_, None) => 1,
            EntryGroup::Pair(_, Some(_)) => 2,
            EntryGroup::Chain(entries) => entries.len(),
        };
        if queue.capacity() - queue.len() < needed {
            return false;
        }
        // SAFETY: every pointer in these entries refers to memory owned by
        // the operation's table entry in `core/ops.rs` (or by this backend, for
        // the wake read), which stays allocated and unmoved until the
        // operation's final completion has been reaped; see docs/safety.md.
        // A chain's descriptors (file, pipe, socket) stay open until then
        // too (`core/splice.rs`).
        let pushed = unsafe {
            match group {
                EntryGroup::Pair(first, None) => queue.push(first),
                EntryGroup::Pair(first, Some(second)) => {
                    queue.push_multiple(&[first.clone(), second.clone()])
                }
                EntryGroup::Chain(entries) => queue.push_multiple(entries),
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
        self.release_buffers();
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
        // The registrations go with the ring: a registered buffer dropped
        // from now on frees its memory itself.
        if let Some(table) = &self.fixed {
            table.close();
        }
        if self.wake_armed {
            // The read never completed (drain timed out): the kernel may
            // still write into the buffer, so it is leaked, never freed.
            std::mem::forget(std::mem::take(&mut self.wake_buffer));
        }
    }
}

/// The submission of one link of a chain (its flags and user data set
/// by the caller).
fn chain_entry(step: &ChainStep) -> squeue::Entry {
    match *step {
        // Offset -1: the pipe has no position.
        ChainStep::Write {
            fd,
            pointer,
            length,
        } => opcode::Write::new(Fd(fd), pointer, length)
            .offset(u64::MAX)
            .build(),
        ChainStep::Splice {
            fd_in,
            offset_in,
            fd_out,
            length,
            flags,
        } => opcode::Splice::new(
            Fd(fd_in),
            offset_in.map_or(-1, |offset| i64::try_from(offset).unwrap_or(i64::MAX)),
            Fd(fd_out),
            -1,
            length,
        )
        .flags(flags)
        .build(),
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
