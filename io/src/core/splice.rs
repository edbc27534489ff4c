//! Sends from files (`crate::splice`): the handler's API, the chains'
//! issue and their completions. A send from a file is one of the
//! connection's sends, in its queue with the others, so the bytes of the
//! connection go out in the order they were handed over.

use std::os::fd::AsRawFd;

use super::conns::{ConnState, Outgoing};
use super::ops::OpBody;
use super::Core;
use crate::backend::op::{ChainStep, Prim};
use crate::error::{IoError, OpKind, SubmitError};
use crate::event::{ConnId, FileHandle};
use crate::slab::Key;
use crate::splice::{FileSend, Pipe, SpliceOp, Step, PIPE_BYTES};

/// `SPLICE_F_MORE`: more data follows (the socket may hold a partial
/// segment back).
const SPLICE_F_MORE: u32 = 4;

impl Core {
    /// Whether [`Core::send_file`] can work here: io_uring, and a kernel
    /// with `IORING_OP_SPLICE`. (A pipe that cannot be made, or a file
    /// system that cannot splice, still fails a send: see `send_file`.)
    pub fn splice_supported(&self) -> bool {
        self.backend.splice_supported()
    }

    /// Sends `send` on the connection, its file runs read from `file`
    /// starting at `offset`, without copying them through user space: the
    /// file's pages go through the connection's pipe into the socket
    /// (`IORING_OP_SPLICE`). Queued after the connection's other sends
    /// like [`Core::send`], and ends in the same [`crate::Event::Sent`]
    /// with `tag`. The file stays open until the send ends (a
    /// [`Core::close_file`] meanwhile waits for it).
    /// [`SubmitError::Unsupported`] on the portable backend or a kernel
    /// without `IORING_OP_SPLICE`; [`SubmitError::Socket`] when the pipe
    /// cannot be made. Nothing was sent then: the caller sends by copy.
    pub fn send_file(
        &mut self,
        conn: ConnId,
        file: FileHandle,
        offset: u64,
        send: FileSend,
        tag: u64,
    ) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        if !self.splice_supported() {
            return Err(SubmitError::Unsupported);
        }
        if send.is_empty() {
            return Err(SubmitError::EmptyBuffer);
        }
        let file_fd = self.files.fd(file)?;
        self.send_admitted(conn.0)?;
        let slot = self.conns.usable_mut(conn.0)?;
        if slot.pipe.is_none() {
            let pipe = Pipe::new(PIPE_BYTES)
                .map_err(|error| SubmitError::Socket(format!("cannot make a pipe: {error}")))?;
            slot.pipe = Some(pipe);
        }
        let op = Box::new(SpliceOp::new((conn.0, file.0, file_fd), send, offset, tag));
        // Held from here to the send's end (or its drop from the queue).
        self.files.add_refs([Some(file.0), None]);
        let queued = self.queue_or_start_send(conn.0, Outgoing::File(op), tag);
        if queued.is_err() {
            self.release_file_ref(file.0);
        }
        queued
    }

    /// Releases a reference on `file` a send from it held, closing it if
    /// its close was waiting for that.
    pub(super) fn release_file_ref(&mut self, file: Key) {
        let [due, _] = self.files.release_refs([Some(file), None]);
        if let Some(file) = due {
            self.begin_close(file);
        }
    }

    /// Every completion of a chain is in: the send goes on with the next
    /// chain, or ends (done, failed, or its connection closing).
    pub(super) fn on_splice(&mut self, key: Key) {
        let shutting_down = self.shutting_down;
        let Some(OpBody::Splice(op)) = self.ops.get_mut(key).map(|entry| &mut entry.body) else {
            return;
        };
        let conn = op.conn;
        let open = self
            .conns
            .get(conn)
            .is_some_and(|slot| slot.state == ConnState::Open);
        let outcome = match op.chain_done() {
            Ok(()) if op.done() => Some(Ok(())),
            Ok(()) if open && !shutting_down => None,
            Ok(()) => Some(Err(IoError::new(OpKind::Send, libc::ECANCELED))),
            Err(errno) => Some(Err(IoError::new(OpKind::Send, errno))),
        };
        let Some(outcome) = outcome else {
            return self.issue(key);
        };
        let Some(OpBody::Splice(op)) = self.finish(key) else {
            return;
        };
        self.release_file_ref(op.file);
        if outcome.is_err() {
            // What the pipe holds is a broken stream: a new one next time.
            if let Some(slot) = self.conns.get_mut(conn) {
                slot.pipe = None;
            }
        }
        self.send_done(conn, op.tag, outcome);
    }
}

/// The next chain of a send from a file, as the backend's primitive; `None`
/// when its connection (or pipe) is gone.
pub(super) fn chain(
    op: &mut SpliceOp,
    conns: &super::conns::ConnTable,
    steps_max: usize,
) -> Option<Prim> {
    let Some((slot, pipe)) = conns
        .get(op.conn)
        .and_then(|slot| Some((slot, slot.pipe.as_ref()?)))
    else {
        op.abandon();
        return None;
    };
    let socket = slot.fd.as_raw_fd();
    op.plan(pipe.bytes(), steps_max);
    if op.steps().is_empty() {
        return None;
    }
    let inline = op.inline_bytes().as_ptr();
    let steps = op
        .steps()
        .iter()
        .map(|step| match *step {
            // In bounds: planned inside the send's own bytes, which the
            // operation owns until its last completion.
            Step::Inline { at, length } => ChainStep::Write {
                fd: pipe.write_fd(),
                pointer: inline.wrapping_add(at),
                length,
            },
            Step::File { offset, length } => ChainStep::Splice {
                fd_in: op.file_fd,
                offset_in: Some(offset),
                fd_out: pipe.write_fd(),
                length,
                flags: 0,
            },
            Step::Out { length, more } => ChainStep::Splice {
                fd_in: pipe.read_fd(),
                offset_in: None,
                fd_out: socket,
                length,
                flags: if more { SPLICE_F_MORE } else { 0 },
            },
        })
        .collect();
    Some(Prim::Chain { steps })
}
