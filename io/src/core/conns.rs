//! The connection table: one [`ConnSlot`] per open socket of a core (accepted,
//! connecting or closing), and the queue of connections whose receive
//! stopped for lack of pool buffers.
//!
//! What a slot guarantees: at most one receive (the pooled multishot one,
//! or one into the handler's buffer, never both) and one send in flight;
//! `ops` counts every operation that references the slot (receive, send,
//! connect), and the slot (with its descriptor) goes away only when it is
//! closing and `ops` is zero, so no operation ever names a closed or reused
//! descriptor.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::ops::DirectRecv;
use crate::buf::{IoBuf, RecvBuf};
use crate::error::{IoError, SubmitError};
use crate::slab::{Key, Slab};
use crate::splice::{Pipe, SpliceOp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// An outbound connect is in flight; sends queue.
    Connecting,
    Open,
    /// `close_connection` (or shutdown): waiting for its operations to drain.
    Closing,
}

/// A send waiting in a connection's queue.
pub(super) enum Outgoing {
    /// Bytes from memory.
    Bytes(IoBuf),
    /// Bytes partly from a file, through the connection's pipe (it holds a
    /// reference on its file from `Core::send_file` on).
    File(Box<SpliceOp>),
}

/// One connection of a core.
pub(super) struct ConnSlot {
    pub fd: OwnedFd,
    pub state: ConnState,
    /// The armed multishot receive.
    pub recv_op: Option<Key>,
    pub recv_cancel_requested: bool,
    /// The handler wants data (not paused).
    pub recv_wanted: bool,
    /// End of stream or a receive error was seen.
    pub recv_ended: bool,
    /// Waiting for pool buffers (backpressure), and in the starved queue.
    pub starved: bool,
    /// Data that arrived while paused, delivered on resume.
    pub backlog: VecDeque<RecvBuf>,
    /// The end of stream, held back behind the backlog.
    pub pending_end: Option<Result<(), IoError>>,
    /// Sends waiting for the one in flight (or for the connect).
    pub send_queue: VecDeque<(Outgoing, u64)>,
    pub send_op: Option<Key>,
    /// Its pipe for sends from files (`Core::send_file`), made at the
    /// first; dropped after a failed one (what it holds is a broken
    /// stream) and with the connection.
    pub pipe: Option<Pipe>,
    /// A receive into the handler's buffer, waiting for the multishot
    /// receive to stop (bytes it took first preempt it).
    pub direct_waiting: Option<Box<DirectRecv>>,
    /// The receive into the handler's buffer in flight.
    pub direct_op: Option<Key>,
    /// `TCP_QUICKACK` is re-armed after its receives when the runtime's
    /// `quickack_after_recv` says so (the handler may turn it off for a
    /// connection whose peer only answers: `Core::set_quickack_after_recv`).
    pub quickack: bool,
    /// Operations referencing this connection (receive, send, connect).
    ops: u32,
}

impl ConnSlot {
    fn new(fd: OwnedFd, state: ConnState) -> ConnSlot {
        ConnSlot {
            fd,
            state,
            recv_op: None,
            recv_cancel_requested: false,
            recv_wanted: true,
            recv_ended: false,
            starved: false,
            backlog: VecDeque::new(),
            pending_end: None,
            send_queue: VecDeque::new(),
            pipe: None,
            quickack: true,
            send_op: None,
            direct_waiting: None,
            direct_op: None,
            ops: 0,
        }
    }

    /// Operations in flight that reference the connection.
    pub fn ops(&self) -> u32 {
        self.ops
    }

    /// An operation referencing the connection was issued.
    pub fn op_started(&mut self) {
        self.ops += 1;
    }

    /// An operation referencing the connection reached its final completion.
    pub fn op_finished(&mut self) {
        debug_assert!(self.ops > 0, "connection operation count underflow");
        self.ops = self.ops.saturating_sub(1);
    }

    /// The multishot receive `key` is armed.
    pub fn recv_armed(&mut self, key: Key) {
        debug_assert!(self.recv_op.is_none(), "two receives armed on one socket");
        self.recv_op = Some(key);
        self.recv_cancel_requested = false;
        self.starved = false;
        self.op_started();
    }

    /// The armed receive reached its final completion.
    pub fn recv_disarmed(&mut self) {
        debug_assert!(self.recv_op.is_some(), "receive ended that was not armed");
        self.recv_op = None;
        self.recv_cancel_requested = false;
        self.op_finished();
    }

    /// The send `key` is in flight.
    pub fn send_started(&mut self, key: Key) {
        debug_assert!(self.send_op.is_none(), "two sends in flight on one socket");
        self.send_op = Some(key);
        self.op_started();
    }

    /// The send in flight reached its final completion.
    pub fn send_finished(&mut self) {
        debug_assert!(self.send_op.is_some(), "send ended that was not in flight");
        self.send_op = None;
        self.op_finished();
    }

    /// Whether data arriving now goes straight to the handler (not paused,
    /// nothing held before it).
    pub fn delivers_now(&self) -> bool {
        self.recv_wanted && self.backlog.is_empty()
    }

    /// Whether an event for this connection must wait behind held data
    /// (paused, or data or an end already held).
    pub fn holds_events(&self) -> bool {
        !self.delivers_now() || self.pending_end.is_some()
    }

    /// A receive into the handler's buffer is waiting or in flight: the
    /// multishot receive is not armed meanwhile.
    pub fn receives_direct(&self) -> bool {
        self.direct_waiting.is_some() || self.direct_op.is_some()
    }

    /// Whether a receive should be armed now.
    pub fn wants_recv(&self) -> bool {
        self.recv_op.is_none()
            && !self.receives_direct()
            && self.state == ConnState::Open
            && self.recv_wanted
            && !self.recv_ended
            && !self.starved
    }

    /// The files of the sends from files waiting in its queue, taken out
    /// (their references are the caller's to release).
    pub fn take_queued_files(&mut self) -> Vec<Key> {
        let mut files = Vec::new();
        self.send_queue.retain(|(outgoing, _)| match outgoing {
            Outgoing::File(op) => {
                files.push(op.file);
                false
            }
            Outgoing::Bytes(_) => true,
        });
        files
    }

    /// Marks the connection closing and drops what waits in it (queued
    /// sends, held data); returns whether operations must be cancelled.
    /// (Queued sends from files: `take_queued_files` first.)
    pub fn begin_close(&mut self) -> bool {
        self.state = ConnState::Closing;
        self.send_queue.clear();
        self.backlog.clear();
        self.pending_end = None;
        // Never issued: its buffer goes with it, silently.
        self.direct_waiting = None;
        self.ops > 0
    }

    /// Closing and nothing references it any more: it can go.
    pub fn is_drained(&self) -> bool {
        self.state == ConnState::Closing && self.ops == 0
    }
}

/// A core's connections.
pub(super) struct ConnTable {
    slab: Slab<ConnSlot>,
    /// Connections whose receive ended with `ENOBUFS`, in order; re-armed
    /// when the pool refills. May hold stale keys (closed since).
    starved: VecDeque<Key>,
}

impl ConnTable {
    pub fn new(connections_max: usize) -> ConnTable {
        ConnTable {
            slab: Slab::new(connections_max),
            starved: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_full(&self) -> bool {
        self.slab.is_full()
    }

    pub fn get(&self, conn: Key) -> Option<&ConnSlot> {
        self.slab.get(conn)
    }

    pub fn get_mut(&mut self, conn: Key) -> Option<&mut ConnSlot> {
        self.slab.get_mut(conn)
    }

    /// A connection the handler may still use: known and not closing.
    pub fn usable_mut(&mut self, conn: Key) -> Result<&mut ConnSlot, SubmitError> {
        match self.slab.get_mut(conn) {
            Some(slot) if slot.state != ConnState::Closing => Ok(slot),
            _ => Err(SubmitError::UnknownConnection),
        }
    }

    /// Adds a connection; gives the descriptor back when the table is full.
    pub fn insert(&mut self, fd: OwnedFd, state: ConnState) -> Result<Key, OwnedFd> {
        self.slab
            .insert(ConnSlot::new(fd, state))
            .map_err(|slot| slot.fd)
    }

    /// Removes a connection whose operations have all completed.
    pub fn remove(&mut self, conn: Key) -> Option<ConnSlot> {
        let slot = self.slab.remove(conn)?;
        // Its descriptor closes with it: an operation still naming it would
        // act on whatever descriptor reuses the number.
        debug_assert_eq!(slot.ops, 0, "connection removed with operations in flight");
        Some(slot)
    }

    /// The connection's receive stopped for lack of buffers.
    pub fn mark_starved(&mut self, conn: Key) {
        if let Some(slot) = self.slab.get_mut(conn) {
            debug_assert!(!slot.starved, "connection starved twice");
            slot.starved = true;
            self.starved.push_back(conn);
        }
    }

    /// The next connection still waiting for buffers, taken off the queue
    /// and unmarked (stale entries are skipped).
    pub fn pop_starved(&mut self) -> Option<Key> {
        while let Some(conn) = self.starved.pop_front() {
            if let Some(slot) = self.slab.get_mut(conn) {
                if slot.starved {
                    slot.starved = false;
                    return Some(conn);
                }
            }
        }
        None
    }

    /// Entries in the starved queue (stale ones included).
    pub fn starved_count(&self) -> usize {
        self.starved.len()
    }

    /// Shutdown, after the drain: every connection, to close. (If the drain
    /// timed out some may still be named by leaked operations.)
    pub fn take_all(&mut self) -> Vec<ConnSlot> {
        self.starved.clear();
        self.slab.drain()
    }

    /// Shutdown: every connection closes; nothing queued goes out.
    pub fn close_all(&mut self) {
        for conn in self.slab.keys() {
            if let Some(slot) = self.slab.get_mut(conn) {
                slot.state = ConnState::Closing;
                slot.send_queue.clear();
                slot.backlog.clear();
                slot.direct_waiting = None;
            }
        }
    }
}
