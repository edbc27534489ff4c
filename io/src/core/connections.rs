//! Connections: the handler's connection API (connect, send, close and the
//! socket facts), adding and removing table entries, and the completions of
//! sends and connects.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::conns::{ConnState, Outgoing};
use super::ops::OpBody;
use super::Core;
use crate::backend::op::Prim;
use crate::backend::op::CANCEL_USER_DATA;
use crate::buf::IoBuf;
use crate::error::{IoError, OpKind, SubmitError};
use crate::event::{ConnId, Event};
use crate::slab::Key;
use crate::socket;

impl Core {
    /// Queues `data` on the connection; sends go out one at a time, in
    /// order. Ends in [`Event::Sent`] with `tag`.
    pub fn send(
        &mut self,
        conn: ConnId,
        data: impl Into<IoBuf>,
        tag: u64,
    ) -> Result<(), SubmitError> {
        let data = data.into();
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        if data.is_empty() {
            return Err(SubmitError::EmptyBuffer);
        }
        self.queue_or_start_send(conn.0, Outgoing::Bytes(data), tag)
    }

    /// Whether a send may go on the connection now: it is usable, its
    /// queue has room, and an operation slot is free when the send would
    /// start at once. `Ok(true)`: it waits behind another send (or the
    /// connect).
    pub(super) fn send_admitted(&mut self, conn: Key) -> Result<bool, SubmitError> {
        let sends_queued_max = self.limits.sends_queued_max;
        let at_op_limit = self.ops.handler_ops() >= self.limits.ops_in_flight_max;
        let too_many_ops = self.too_many_ops();
        let slot = self.conns.usable_mut(conn)?;
        if slot.send_queue.len() >= sends_queued_max {
            return Err(SubmitError::SendQueueFull {
                maximum: sends_queued_max,
            });
        }
        let busy = slot.send_op.is_some() || slot.state == ConnState::Connecting;
        if !busy && at_op_limit {
            return Err(too_many_ops);
        }
        Ok(busy)
    }

    /// Queues `outgoing` behind the connection's send in flight, or starts
    /// it (after [`Core::send_admitted`]'s checks).
    pub(super) fn queue_or_start_send(
        &mut self,
        conn: Key,
        outgoing: Outgoing,
        tag: u64,
    ) -> Result<(), SubmitError> {
        if self.send_admitted(conn)? {
            let slot = self.conns.usable_mut(conn)?;
            slot.send_queue.push_back((outgoing, tag));
        } else {
            self.start_send(conn, outgoing, tag);
        }
        Ok(())
    }

    pub(super) fn start_send(&mut self, conn: Key, outgoing: Outgoing, tag: u64) {
        let body = match outgoing {
            Outgoing::Bytes(buf) => OpBody::Send {
                conn,
                buf,
                sent: 0,
                tag,
            },
            Outgoing::File(op) => OpBody::Splice(op),
        };
        match self.start(body, true) {
            Ok(key) => {
                if let Some(slot) = self.conns.get_mut(conn) {
                    slot.send_started(key);
                }
            }
            Err(body) => {
                // Slots are reserved for every connection's send, so this is
                // unreachable in practice; report rather than lose the tag.
                let tag = match body {
                    OpBody::Send { tag, .. } => tag,
                    OpBody::Splice(op) => {
                        self.release_file_ref(op.file);
                        op.tag
                    }
                    _ => return,
                };
                self.push_event(Event::Sent {
                    conn: ConnId(conn),
                    tag,
                    result: Err(IoError::new(OpKind::Send, libc::EAGAIN)),
                });
            }
        }
    }

    /// Closes the connection: queued sends are dropped, in-flight operations
    /// cancelled; when they have drained the descriptor is closed and
    /// [`Event::ConnClosed`] follows. No other event arrives for it after this
    /// call. Unknown or already closing ids are ignored.
    pub fn close_connection(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.get_mut(conn.0) else {
            return;
        };
        if slot.state == ConnState::Closing {
            return;
        }
        let files = slot.take_queued_files();
        let must_cancel = slot.begin_close();
        for file in files {
            self.release_file_ref(file);
        }
        let Some(slot) = self.conns.get_mut(conn.0) else {
            return;
        };
        if must_cancel {
            let fd = slot.fd.as_raw_fd();
            self.backend.issue(CANCEL_USER_DATA, Prim::CancelFd { fd });
        }
        self.maybe_finish_close(conn.0);
    }

    /// Sets `TCP_QUICKACK` on the connection now (the kernel clears it
    /// again after a while; see `quickack_after_recv`).
    pub fn set_quickack(&mut self, conn: ConnId) -> Result<(), IoError> {
        let slot = self
            .conns
            .get(conn.0)
            .ok_or(IoError::new(OpKind::Recv, libc::EBADF))?;
        socket::set_quickack(&slot.fd).map_err(|errno| IoError::new(OpKind::Recv, errno))
    }

    /// Whether `TCP_QUICKACK` is re-armed after this connection's receives
    /// (on by default when the runtime's `quickack_after_recv` is). A
    /// connection that sends data and only receives short answers to it
    /// (a retrieve's C-STOREs and their responses) turns it off: each
    /// re-arm is a system call and an acknowledgement of its own, where
    /// the data going out next carries the acknowledgement anyway.
    /// Unknown ids are ignored.
    pub fn set_quickack_after_recv(&mut self, conn: ConnId, on: bool) {
        if let Some(slot) = self.conns.get_mut(conn.0) {
            slot.quickack = on;
        }
    }

    /// The peer address of a connection.
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        let slot = self.conns.get(conn.0)?;
        socket2::SockRef::from(&slot.fd)
            .peer_addr()
            .ok()?
            .as_socket()
    }

    /// Opens an outbound TCP connection (TCP_NODELAY set). Ends in
    /// [`Event::Connected`]; sends may be queued before it.
    pub fn connect(&mut self, address: SocketAddr, tag: u64) -> Result<ConnId, SubmitError> {
        self.check_submit()?;
        let too_many_connections = SubmitError::TooManyConnections {
            maximum: self.limits.connections_max,
        };
        if self.conns.is_full() {
            return Err(too_many_connections);
        }
        let socket = socket::outbound(address, self.backend.kind())
            .map_err(|error| SubmitError::Socket(error.to_string()))?;
        let conn = self
            .add_connection(OwnedFd::from(socket), ConnState::Connecting)
            .map_err(|_| too_many_connections)?;
        let body = OpBody::Connect {
            conn,
            address: Box::new(socket2::SockAddr::from(address)),
            tag,
        };
        match self.start(body, true) {
            Ok(_) => {
                if let Some(slot) = self.conns.get_mut(conn) {
                    slot.op_started();
                }
                Ok(ConnId(conn))
            }
            Err(_) => {
                self.remove_connection(conn);
                Err(self.too_many_ops())
            }
        }
    }

    /// Adds a connection to the table and to this core's shared count.
    pub(super) fn add_connection(&mut self, fd: OwnedFd, state: ConnState) -> Result<Key, OwnedFd> {
        let conn = self.conns.insert(fd, state)?;
        if let Some(shared) = self.own_shared() {
            shared.count_connection();
        }
        Ok(conn)
    }

    /// Removes a connection (closing its descriptor) and uncounts it.
    pub(super) fn remove_connection(&mut self, conn: Key) {
        if let Some(slot) = self.conns.remove(conn) {
            self.backend.forget_socket(slot.fd.as_raw_fd());
            drop(slot);
            if let Some(shared) = self.own_shared() {
                shared.uncount_connection();
            }
        }
    }

    /// A closing connection whose operations have drained goes away.
    pub(super) fn maybe_finish_close(&mut self, conn: Key) {
        if !self.conns.get(conn).is_some_and(|slot| slot.is_drained()) {
            return;
        }
        self.remove_connection(conn);
        self.push_event(Event::ConnClosed { conn: ConnId(conn) });
    }

    pub(super) fn on_send(&mut self, key: Key, result: i32) {
        let Some(OpBody::Send { buf, sent, .. }) =
            self.ops.get_mut(key).map(|entry| &mut entry.body)
        else {
            return;
        };
        if result > 0 {
            *sent += result as usize;
            if *sent < buf.len() {
                // A short send: the rest goes out before anything queued.
                return self.issue(key);
            }
        }
        let complete = *sent >= buf.len();
        let Some(OpBody::Send { conn, tag, .. }) = self.finish(key) else {
            return;
        };
        let outcome = if result < 0 {
            Err(IoError::new(OpKind::Send, -result))
        } else if !complete {
            Err(IoError::new(OpKind::Send, libc::EPIPE))
        } else {
            Ok(())
        };
        self.send_done(conn, tag, outcome);
    }

    /// The connection's send in flight (bytes or from a file) ended with
    /// `outcome`: its event, the queue's failures after a failed one, or
    /// the next queued send started.
    pub(super) fn send_done(&mut self, conn: Key, tag: u64, outcome: Result<(), IoError>) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        slot.send_finished();
        if slot.state == ConnState::Open {
            let failed: Vec<(Outgoing, u64)> = match outcome {
                Err(_) => slot.send_queue.drain(..).collect(),
                Ok(()) => Vec::new(),
            };
            let next = if outcome.is_ok() {
                slot.send_queue.pop_front()
            } else {
                None
            };
            self.push_event(Event::Sent {
                conn: ConnId(conn),
                tag,
                result: outcome,
            });
            for (outgoing, tag) in failed {
                if let Outgoing::File(op) = outgoing {
                    self.release_file_ref(op.file);
                }
                self.push_event(Event::Sent {
                    conn: ConnId(conn),
                    tag,
                    result: outcome,
                });
            }
            if let Some((outgoing, tag)) = next {
                self.start_send(conn, outgoing, tag);
            }
        }
        self.maybe_finish_close(conn);
    }

    pub(super) fn on_connect(&mut self, key: Key, result: i32) {
        let Some(OpBody::Connect { conn, tag, .. }) = self.finish(key) else {
            return;
        };
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        slot.op_finished();
        if slot.state == ConnState::Closing || self.shutting_down {
            return self.maybe_finish_close(conn);
        }
        if result == 0 {
            slot.state = ConnState::Open;
            let next = slot.send_queue.pop_front();
            self.arm_recv(conn);
            self.push_event(Event::Connected {
                conn: ConnId(conn),
                tag,
                result: Ok(()),
            });
            if let Some((outgoing, tag)) = next {
                self.start_send(conn, outgoing, tag);
            }
        } else {
            self.remove_connection(conn);
            self.push_event(Event::Connected {
                conn: ConnId(conn),
                tag,
                result: Err(IoError::new(OpKind::Connect, -result)),
            });
        }
    }
}
