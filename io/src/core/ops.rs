//! The operation table: every operation a core has handed a backend, with
//! the memory the kernel (or a portable helper) reads or writes while it runs.
//!
//! The invariant that makes the backends' `unsafe` sound lives here: every
//! pointer in a [`Prim`](crate::backend::op::Prim) points into heap memory an
//! [`OpBody`] owns (a `Box`, `Vec`, `CString`, an [`IoBuf`], a read's
//! [`Chunk`] or a receive's [`AlignedBuf`]), never into the
//! entry itself (the slab's `Vec` may move), and an entry leaves the table
//! only once every completion it expects (`parts`) is in. A cancelled
//! operation therefore keeps its buffers until the kernel is done with them.
//! See docs/safety.md.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::types::Timespec;

use crate::aligned::AlignedBuf;
use crate::backend::op;
use crate::buf::IoBuf;
use crate::chunk::Chunk;
use crate::error::OpKind;
use crate::event::SyncKind;
use crate::slab::{Key, Slab};
use crate::splice::SpliceOp;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerPurpose {
    /// `Core::timer`: fires `Event::TimerFired`.
    Handler,
    /// Re-arm listener `usize` after a failed accept.
    RearmAccept(usize),
}

/// A write at an offset, possibly with a linked sync, resubmitted until
/// every byte is written.
pub(super) struct WriteOp {
    pub file: Key,
    pub fd: RawFd,
    pub offset: u64,
    /// Held until the final completion: the kernel reads from them.
    pub _bufs: Vec<IoBuf>,
    pub iovecs: Vec<libc::iovec>,
    /// First iovec not completely written.
    pub first: usize,
    /// A truncated copy of the remaining iovecs (fault seam: short write).
    pub fault_iovecs: Vec<libc::iovec>,
    pub written: u64,
    pub total: u64,
    pub sync: Option<SyncKind>,
    /// The slot of the one buffer written, registered with the core's
    /// ring (`IORING_OP_WRITE_FIXED`); `None`: a plain vectored write.
    pub fixed: Option<u16>,
    pub tag: u64,
    /// The results of the write (part 0) and its linked sync (part 1) of
    /// the submission in flight.
    pub results: [Option<i32>; 2],
}

impl WriteOp {
    /// Moves past `bytes` newly written bytes.
    pub fn advance(&mut self, bytes: u64) {
        debug_assert!(
            self.written + bytes <= self.total,
            "the kernel reported more bytes than the write asked for"
        );
        self.written += bytes;
        advance_iovecs(&mut self.iovecs, &mut self.first, bytes);
    }

    /// Every byte is written: only the (cancelled) linked sync is left.
    pub fn bytes_done(&self) -> bool {
        self.written >= self.total
    }
}

/// A vectored read at an offset into a chunk, resubmitted after a short
/// read until every byte is read or the file ends.
pub(super) struct ReadOp {
    pub file: Key,
    pub fd: RawFd,
    pub offset: u64,
    /// Owned by the operation until its final completion: the kernel
    /// writes into it (its heap memory does not move with the box).
    pub chunk: Chunk,
    /// Point into `chunk`'s buffer, at the ranges the caller asked for.
    pub iovecs: Vec<libc::iovec>,
    /// First iovec not completely read.
    pub first: usize,
    pub read: u64,
    pub total: u64,
    pub tag: u64,
}

impl ReadOp {
    /// Moves past `bytes` newly read bytes.
    pub fn advance(&mut self, bytes: u64) {
        debug_assert!(
            self.read + bytes <= self.total,
            "the kernel reported more bytes than the read asked for"
        );
        self.read += bytes;
        advance_iovecs(&mut self.iovecs, &mut self.first, bytes);
    }

    /// Every byte asked for is read.
    pub fn bytes_done(&self) -> bool {
        self.read >= self.total
    }
}

/// A receive into the handler's buffer (`Core::recv_into`): the kernel
/// writes the connection's next bytes into `range` of `buf`. Boxed, so a
/// connection waiting to issue it holds one pointer; the buffer's heap
/// bytes do not move with the box.
pub(super) struct DirectRecv {
    pub buf: AlignedBuf,
    pub range: std::ops::Range<usize>,
    pub tag: u64,
    /// Every byte of the range (`MSG_WAITALL`), else whatever has arrived
    /// (at least one byte).
    pub whole: bool,
}

/// Moves `iovecs` (from `first` on) past `bytes` transferred bytes: whole
/// iovecs are skipped, a partly transferred one is shortened from its start.
fn advance_iovecs(iovecs: &mut [libc::iovec], first: &mut usize, mut bytes: u64) {
    while bytes > 0 {
        let Some(iovec) = iovecs.get_mut(*first) else {
            return;
        };
        let length = iovec.iov_len as u64;
        if bytes >= length {
            bytes -= length;
            *first += 1;
        } else {
            iovec.iov_base = iovec
                .iov_base
                .cast::<u8>()
                .wrapping_add(bytes as usize)
                .cast();
            iovec.iov_len -= bytes as usize;
            bytes = 0;
        }
    }
}

/// An operation and the memory it lends the kernel.
pub(super) enum OpBody {
    Accept {
        listener: usize,
    },
    Recv {
        conn: Key,
    },
    /// Owns the buffer the kernel writes into until the final completion.
    RecvInto {
        conn: Key,
        direct: Box<DirectRecv>,
    },
    Send {
        conn: Key,
        buf: IoBuf,
        sent: usize,
        tag: u64,
    },
    /// A send from a file through the connection's pipe: linked chains
    /// (`splice.rs`). Its file's reference is held by hand (taken when the
    /// send was queued), not through `file_refs`.
    Splice(Box<SpliceOp>),
    Connect {
        conn: Key,
        address: Box<socket2::SockAddr>,
        tag: u64,
    },
    Open {
        path: CString,
        dir_fd: RawFd,
        dir: Option<Key>,
        flags: i32,
        mode: u32,
        tag: u64,
    },
    Write(Box<WriteOp>),
    Read(Box<ReadOp>),
    Sync {
        file: Key,
        fd: RawFd,
        kind: SyncKind,
        tag: u64,
    },
    Rename {
        old: CString,
        new: CString,
        old_dir_fd: RawFd,
        new_dir_fd: RawFd,
        dirs: [Option<Key>; 2],
        tag: u64,
    },
    MkDir {
        path: CString,
        dir_fd: RawFd,
        dir: Option<Key>,
        mode: u32,
        tag: u64,
    },
    Unlink {
        path: CString,
        dir_fd: RawFd,
        dir: Option<Key>,
        remove_dir: bool,
        tag: u64,
    },
    Close {
        fd: RawFd,
        tag: u64,
    },
    Timer {
        timespec: Box<Timespec>,
        deadline: Instant,
        tag: u64,
        purpose: TimerPurpose,
        cancelled: bool,
    },
}

impl OpBody {
    /// Files whose descriptors the operation uses (a close waits for them).
    pub fn file_refs(&self) -> [Option<Key>; 2] {
        match self {
            OpBody::Open { dir, .. } | OpBody::MkDir { dir, .. } | OpBody::Unlink { dir, .. } => {
                [*dir, None]
            }
            OpBody::Write(write) => [Some(write.file), None],
            OpBody::Read(read) => [Some(read.file), None],
            OpBody::Sync { file, .. } => [Some(*file), None],
            OpBody::Rename { dirs, .. } => *dirs,
            _ => [None, None],
        }
    }

    /// The kind the fault seam counts this issue as (none for the runtime's
    /// own accepts, receives and timers), and whether a linked sync is
    /// issued with it (counted as a sync of its own).
    pub fn fault_kinds(&self) -> (Option<OpKind>, bool) {
        match self {
            OpBody::Send { .. } => (Some(OpKind::Send), false),
            OpBody::Connect { .. } => (Some(OpKind::Connect), false),
            OpBody::Open { .. } => (Some(OpKind::Open), false),
            OpBody::Write(write) if write.bytes_done() => (Some(OpKind::Sync), false),
            OpBody::Write(write) => (Some(OpKind::Write), write.sync.is_some()),
            OpBody::Read(_) => (Some(OpKind::Read), false),
            OpBody::Sync { .. } => (Some(OpKind::Sync), false),
            OpBody::Rename { .. } => (Some(OpKind::Rename), false),
            OpBody::MkDir { .. } => (Some(OpKind::MkDir), false),
            OpBody::Unlink { .. } => (Some(OpKind::Unlink), false),
            OpBody::Close { .. } => (Some(OpKind::Close), false),
            OpBody::Accept { .. }
            | OpBody::Recv { .. }
            | OpBody::RecvInto { .. }
            | OpBody::Splice(_)
            | OpBody::Timer { .. } => (None, false),
        }
    }

    /// Operations on paths or a file descriptor that an injected errno
    /// fails before they reach the backend.
    pub fn is_path_or_sync(&self) -> bool {
        matches!(
            self,
            OpBody::Open { .. }
                | OpBody::Sync { .. }
                | OpBody::Rename { .. }
                | OpBody::MkDir { .. }
                | OpBody::Unlink { .. }
        )
    }

    /// Multishot operations (accept, receive) complete many times; only a
    /// completion without `MORE` is final.
    pub fn is_multishot(&self) -> bool {
        matches!(self, OpBody::Accept { .. } | OpBody::Recv { .. })
    }
}

/// One entry of the table.
pub(super) struct OpEntry {
    pub body: OpBody,
    /// Final completions still expected from the backend for the submission
    /// in flight (2 for a write with a linked sync). Set when the operation
    /// is issued, counted down as completions arrive.
    pub parts: u8,
    /// Counts against `ops_in_flight_max`.
    counted: bool,
}

/// The table of a core's operations. Keys are looked up with the generation
/// bits `user_data` carries (24), so a completion for a finished operation
/// never reaches a reused slot.
pub(super) struct OpTable {
    slab: Slab<OpEntry>,
    /// Entries with `counted` set: the handler's operations in flight.
    handler_ops: usize,
}

impl OpTable {
    pub fn new(capacity_max: usize) -> OpTable {
        OpTable {
            slab: Slab::new(capacity_max),
            handler_ops: 0,
        }
    }

    /// Operations in the table (the runtime's own included).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// The handler's operations in flight (against `ops_in_flight_max`).
    pub fn handler_ops(&self) -> usize {
        self.handler_ops
    }

    /// Adds an operation not yet issued; gives the body back when the table
    /// is full. `counted`: a handler's operation (against its limit).
    pub fn insert(&mut self, body: OpBody, counted: bool) -> Result<Key, OpBody> {
        let key = self
            .slab
            .insert(OpEntry {
                body,
                parts: 0,
                counted,
            })
            .map_err(|entry| entry.body)?;
        if counted {
            self.handler_ops += 1;
        }
        Ok(key)
    }

    pub fn get(&self, key: Key) -> Option<&OpEntry> {
        self.slab.get_masked(key, op::generation_mask())
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut OpEntry> {
        self.slab.get_mut_masked(key, op::generation_mask())
    }

    /// Removes an operation whose every completion is in.
    pub fn remove(&mut self, key: Key) -> Option<OpBody> {
        let entry = self.slab.remove_masked(key, op::generation_mask())?;
        // The memory the kernel may still use goes with the entry: removing
        // one with a completion outstanding would free it under the kernel.
        assert_eq!(
            entry.parts, 0,
            "operation removed with completions outstanding"
        );
        if entry.counted {
            debug_assert!(self.handler_ops > 0, "handler operation count underflow");
            self.handler_ops -= 1;
        }
        Some(entry.body)
    }

    /// Shutdown could not drain: the kernel may still use the memory of
    /// what is left, so it is leaked rather than freed.
    pub fn leak(&mut self) {
        std::mem::forget(std::mem::replace(&mut self.slab, Slab::new(0)));
        self.handler_ops = 0;
    }
}
