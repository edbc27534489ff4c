//! Issuing: an operation of the table becomes the backend's primitive, with
//! pointers into the memory its entry owns, or, when the fault plan says so,
//! a completion made up here (an errno) or a shortened transfer.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;

use super::conns::ConnTable;
use super::listeners::Listener;
use super::ops::{OpBody, WriteOp};
use super::Core;
use crate::backend::op::{self, Completion, FixedWrite, Prim};
use crate::backend::Backend;
use crate::error::OpKind;
use crate::event::SyncKind;
use crate::fault::{short_length, Fault};
use crate::slab::Key;
use crate::sys;

/// Largest single send or write request handed to the kernel at once.
const TRANSFER_BYTES_MAX: usize = 1 << 30;

/// Where an operation's parts go: to the backend, or straight to the local
/// completion queue (a fault, or a connection already gone).
struct Issuer<'a> {
    user_data: u64,
    backend: &'a mut Backend,
    local: &'a mut VecDeque<Completion>,
}

impl Issuer<'_> {
    /// Hands the primitive of `part` to the backend (a write's linked sync
    /// travels with part 0 and completes as part 1).
    fn prim(&mut self, part: u64, prim: Prim) {
        self.backend.issue(self.user_data + part, prim);
    }

    /// Completes `part` here with `errno`.
    fn fail(&mut self, part: u64, errno: i32) {
        self.local
            .push_back(Completion::new(self.user_data + part, -errno, 0));
    }
}

impl Core {
    /// Hands the operation to the backend, or completes it here when the
    /// fault plan says so. Sets how many completions the entry now expects.
    pub(super) fn issue(&mut self, key: Key) {
        let Some(entry) = self.ops.get(key) else {
            debug_assert!(false, "issue of an operation not in the table");
            return;
        };
        // The fault seam counts every issue (a resubmitted remainder too),
        // whatever happens next, so a seed replays exactly.
        let (kind, linked_sync) = entry.body.fault_kinds();
        let fault = kind.and_then(|kind| self.faults.decide(kind));
        let sync_fault = if linked_sync {
            self.faults.decide(OpKind::Sync)
        } else {
            None
        };

        let Self {
            ops,
            conns,
            listeners,
            backend,
            local,
            ..
        } = self;
        let Some(entry) = ops.get_mut(key) else {
            return;
        };
        debug_assert_eq!(entry.parts, 0, "issued with completions outstanding");
        let mut out = Issuer {
            user_data: op::user_data(key, 0),
            backend,
            local,
        };
        entry.parts = issue_body(
            &mut entry.body,
            fault,
            sync_fault,
            conns,
            listeners,
            &mut out,
        );
    }
}

/// Issues an operation; returns how many completions follow. A fault of
/// kind `Errno` fails it here; `Short` shortens a send or write (other kinds
/// ignore it).
fn issue_body(
    body: &mut OpBody,
    fault: Option<Fault>,
    sync_fault: Option<Fault>,
    conns: &ConnTable,
    listeners: &[Listener],
    out: &mut Issuer<'_>,
) -> u8 {
    let errno_fault = match fault {
        Some(Fault::Errno(errno)) => Some(errno),
        _ => None,
    };
    if let Some(errno) = errno_fault.filter(|_| body.is_path_or_sync()) {
        out.fail(0, errno);
        return 1;
    }
    let prim = match body {
        OpBody::Write(write) => return issue_write(write, fault, sync_fault, out),
        OpBody::Splice(op) => {
            let steps_max = out.backend.chain_max();
            let Some(prim) = super::splice::chain(op, conns, steps_max) else {
                return fail(out, libc::ECANCELED);
            };
            let Prim::Chain { steps } = &prim else {
                return fail(out, libc::EINVAL);
            };
            let parts = u8::try_from(steps.len()).unwrap_or(u8::MAX);
            out.backend.issue(out.user_data, prim);
            return parts;
        }
        OpBody::Read(read) => {
            if let Some(errno) = errno_fault {
                return fail(out, errno);
            }
            let remaining = read.iovecs.get(read.first..).unwrap_or_default();
            Prim::Read {
                fd: read.fd,
                iovecs: remaining.as_ptr(),
                count: u32::try_from(remaining.len()).unwrap_or(u32::MAX),
                offset: read.offset + read.read,
            }
        }
        OpBody::Accept { listener } => match listeners.get(*listener) {
            Some(listener) => Prim::AcceptMulti { fd: listener.fd() },
            None => return fail(out, libc::EBADF),
        },
        OpBody::Recv { conn } => match conns.get(*conn) {
            Some(conn) => Prim::RecvMulti {
                fd: conn.fd.as_raw_fd(),
            },
            None => return fail(out, libc::ECANCELED),
        },
        OpBody::RecvInto { conn, direct } => {
            let Some(conn) = conns.get(*conn) else {
                return fail(out, libc::ECANCELED);
            };
            let length = direct.range.len();
            // In bounds (checked by `Core::recv_into`); nothing else
            // touches the buffer until the final completion.
            let Some(target) = direct.buf.as_mut_slice().get_mut(direct.range.clone()) else {
                return fail(out, libc::EINVAL);
            };
            Prim::Recv {
                fd: conn.fd.as_raw_fd(),
                pointer: target.as_mut_ptr(),
                length: u32::try_from(length).unwrap_or(u32::MAX),
                whole: direct.whole,
            }
        }
        OpBody::Send {
            conn, buf, sent, ..
        } => {
            let remaining = buf.len().saturating_sub(*sent).min(TRANSFER_BYTES_MAX);
            let Some(conn) = conns.get(*conn) else {
                return fail(out, libc::ECANCELED);
            };
            let length = match fault {
                Some(Fault::Errno(errno)) => return fail(out, errno),
                Some(Fault::Short) => short_length(remaining),
                None => remaining,
            };
            // `sent < len`, so the pointer stays inside the buffer.
            debug_assert!(*sent < buf.len(), "send issued with nothing left");
            Prim::Send {
                fd: conn.fd.as_raw_fd(),
                pointer: buf.as_ptr().wrapping_add(*sent),
                length: u32::try_from(length).unwrap_or(u32::MAX),
            }
        }
        OpBody::Connect { conn, address, .. } => {
            let Some(conn) = conns.get(*conn) else {
                return fail(out, libc::ECANCELED);
            };
            if let Some(errno) = errno_fault {
                return fail(out, errno);
            }
            Prim::Connect {
                fd: conn.fd.as_raw_fd(),
                address: address.as_ptr().cast(),
                length: address.len(),
            }
        }
        OpBody::Close { fd, .. } => {
            if let Some(errno) = errno_fault {
                // The descriptor must still go away.
                let _ = sys::close(*fd);
                return fail(out, errno);
            }
            Prim::Close { fd: *fd }
        }
        OpBody::Timer {
            timespec, deadline, ..
        } => Prim::Timer {
            timespec: &raw const **timespec,
            deadline: *deadline,
        },
        OpBody::Open {
            path,
            dir_fd,
            flags,
            mode,
            ..
        } => Prim::Open {
            dir: *dir_fd,
            path: path.as_ptr(),
            flags: *flags,
            mode: *mode,
        },
        OpBody::Sync { fd, kind, .. } => Prim::Sync {
            fd: *fd,
            kind: *kind,
        },
        OpBody::Rename {
            old,
            new,
            old_dir_fd,
            new_dir_fd,
            ..
        } => Prim::Rename {
            old_dir: *old_dir_fd,
            old: old.as_ptr(),
            new_dir: *new_dir_fd,
            new: new.as_ptr(),
        },
        OpBody::MkDir {
            path, dir_fd, mode, ..
        } => Prim::MkDir {
            dir: *dir_fd,
            path: path.as_ptr(),
            mode: *mode,
        },
        OpBody::Unlink {
            path,
            dir_fd,
            remove_dir,
            ..
        } => Prim::Unlink {
            dir: *dir_fd,
            path: path.as_ptr(),
            flags: if *remove_dir { libc::AT_REMOVEDIR } else { 0 },
        },
    };
    out.prim(0, prim);
    1
}

/// Completes the single part of an operation here with `errno`.
fn fail(out: &mut Issuer<'_>, errno: i32) -> u8 {
    out.fail(0, errno);
    1
}

/// Issues (the rest of) a write and its linked sync; returns how many
/// completions follow (2 with a linked sync, 1 for the write alone or for
/// the sync alone once every byte is written).
fn issue_write(
    write: &mut WriteOp,
    fault: Option<Fault>,
    sync_fault: Option<Fault>,
    out: &mut Issuer<'_>,
) -> u8 {
    if write.bytes_done() {
        // Everything is written; only the (cancelled) sync remains, as part 1.
        let kind = write.sync.unwrap_or(SyncKind::Data);
        match fault {
            Some(Fault::Errno(errno)) => out.fail(1, errno),
            _ => out.prim(1, Prim::Sync { fd: write.fd, kind }),
        }
        return 1;
    }
    let parts = if write.sync.is_some() { 2 } else { 1 };
    let remaining = write.iovecs.get(write.first..).unwrap_or_default();
    let count = u32::try_from(remaining.len()).unwrap_or(u32::MAX);
    let offset = write.offset + write.written;
    match fault {
        Some(Fault::Errno(errno)) => {
            out.fail(0, errno);
            if write.sync.is_some() {
                out.fail(1, libc::ECANCELED);
            }
        }
        Some(Fault::Short) => {
            // Truncate a copy of the remaining iovecs to about half; the
            // kernel then writes fewer bytes than the write asked for, and
            // the linked sync is cancelled, as a real short write in a chain
            // does.
            let mut budget =
                short_length(usize::try_from(write.total - write.written).unwrap_or(usize::MAX));
            write.fault_iovecs.clear();
            for iovec in remaining {
                if budget == 0 {
                    break;
                }
                let length = iovec.iov_len.min(budget);
                budget -= length;
                write.fault_iovecs.push(libc::iovec {
                    iov_base: iovec.iov_base,
                    iov_len: length,
                });
            }
            let count = u32::try_from(write.fault_iovecs.len()).unwrap_or(u32::MAX);
            let prim = Prim::Write {
                fd: write.fd,
                iovecs: write.fault_iovecs.as_ptr(),
                count,
                offset,
                linked_sync: None,
                fixed: fixed_write(write.fixed, &write.fault_iovecs),
            };
            out.prim(0, prim);
            if write.sync.is_some() {
                out.fail(1, libc::ECANCELED);
            }
        }
        None => {
            let linked_sync = match sync_fault {
                Some(Fault::Errno(_)) => None,
                _ => write.sync,
            };
            let prim = Prim::Write {
                fd: write.fd,
                iovecs: remaining.as_ptr(),
                count,
                offset,
                linked_sync,
                fixed: fixed_write(write.fixed, remaining),
            };
            out.prim(0, prim);
            if let Some(Fault::Errno(errno)) = sync_fault {
                out.fail(1, errno);
            }
        }
    }
    parts
}

/// The registered range of a write of one registered buffer: its one
/// remaining iovec (after a short write, the rest of the same buffer), in
/// slot `index`. `None` for a plain write.
fn fixed_write(index: Option<u16>, remaining: &[libc::iovec]) -> Option<FixedWrite> {
    match (index, remaining) {
        (Some(index), [iovec]) => Some(FixedWrite {
            index,
            pointer: iovec.iov_base.cast_const().cast(),
            length: u32::try_from(iovec.iov_len).ok()?,
        }),
        _ => None,
    }
}
