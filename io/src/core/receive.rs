//! Receiving: one multishot receive armed per open connection, data leased
//! from the pool to the handler, pausing (data held in the connection's
//! backlog), backpressure (a receive the empty pool ended is re-armed
//! once enough buffers are back), and receives into the handler's own
//! buffer (`recv_into`: the multishot receive stopped, one plain receive
//! of a known length, the multishot receive armed again; `recv_some_into`:
//! the same, ending with whatever has arrived, for a handler that reads a
//! stream's headers exactly and must not wait for bytes that may not come).
//!
//! Order is what a receive into the handler's buffer must keep: its bytes
//! are the stream's next ones only if nothing the multishot receive took
//! is still undelivered. So it is taken only from a connection with
//! nothing held or queued for the handler, it waits (`direct_waiting`)
//! until the multishot receive's final completion, and bytes that
//! receive still delivers before then preempt it: the buffer goes back
//! with 0 bytes ([`Event::ReceivedInto`]) ahead of them.

use std::ops::Range;
use std::os::fd::AsRawFd;

use super::conns::ConnState;
use super::ops::{DirectRecv, OpBody};
use super::Core;
use crate::aligned::AlignedBuf;
use crate::backend::op::{self, Completion, Prim, CANCEL_USER_DATA};
use crate::buf::RecvBuf;
use crate::config::BackendKind;
use crate::error::{IoError, OpKind, SubmitError};
use crate::event::{ConnId, Event};
use crate::slab::Key;
use crate::socket;

impl Core {
    /// Stops delivering [`Event::Received`] for the connection until
    /// [`Core::resume_recv`]; data that still arrives is held (in pool
    /// buffers, so the pool bounds it).
    pub fn pause_recv(&mut self, conn: ConnId) -> Result<(), SubmitError> {
        let slot = self
            .conns
            .get_mut(conn.0)
            .ok_or(SubmitError::UnknownConnection)?;
        slot.recv_wanted = false;
        let direct_op = slot.direct_op.map(|op_key| (op_key, slot.fd.as_raw_fd()));
        let waiting = slot.direct_waiting.take();
        if let Some((op_key, fd)) = direct_op {
            // Its bytes come back with it.
            self.cancel_socket_op(op_key, fd);
        }
        self.cancel_multishot(conn.0);
        if let Some(direct) = waiting {
            self.hand_back(conn.0, *direct, 0);
        }
        Ok(())
    }

    /// Asks the kernel to stop the connection's multishot receive (once).
    fn cancel_multishot(&mut self, conn: Key) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        if let Some(op_key) = slot.recv_op {
            if !slot.recv_cancel_requested {
                slot.recv_cancel_requested = true;
                let fd = slot.fd.as_raw_fd();
                self.cancel_socket_op(op_key, fd);
            }
        }
    }

    fn cancel_socket_op(&mut self, op_key: Key, fd: std::os::fd::RawFd) {
        let target = op::user_data(op_key, 0);
        self.backend.issue(
            CANCEL_USER_DATA,
            Prim::CancelOne {
                target,
                fd: Some(fd),
                timer: false,
            },
        );
    }

    /// Receives the connection's next `range.len()` bytes straight into
    /// `range` of `buf` (one plain receive with `MSG_WAITALL`, in place of
    /// the pooled multishot receive, which is armed again after). Ends in
    /// [`Event::ReceivedInto`] with the buffer, before any further
    /// [`Event::Received`] of the connection; no bytes are lost or
    /// reordered (see the module documentation). The buffer is the
    /// operation's until then, so it cannot move or be read while the
    /// kernel writes into it.
    ///
    /// Refused (the buffer given back) on the portable backend
    /// ([`SubmitError::Unsupported`]), for an empty or out-of-bounds range
    /// ([`SubmitError::InvalidRanges`]), and while the connection is
    /// paused, ended, has data or its end held or queued for the handler,
    /// or has such a receive pending ([`SubmitError::ReceiveBusy`]).
    pub fn recv_into(
        &mut self,
        conn: ConnId,
        buf: AlignedBuf,
        range: Range<usize>,
        tag: u64,
    ) -> Result<(), (SubmitError, AlignedBuf)> {
        self.receive_direct(
            conn,
            DirectRecv {
                buf,
                range,
                tag,
                whole: true,
            },
        )
    }

    /// Like [`Core::recv_into`], but the receive ends with whatever the
    /// stream has, at least one byte and at most `range.len()` (no
    /// `MSG_WAITALL`): for a caller that wants the next headers exactly
    /// and must not wait for bytes that may never come (a PDU shorter than
    /// the room, a peer waiting for an answer). The bytes are the start of
    /// the range; same order, ownership and refusals as `recv_into`.
    pub fn recv_some_into(
        &mut self,
        conn: ConnId,
        buf: AlignedBuf,
        range: Range<usize>,
        tag: u64,
    ) -> Result<(), (SubmitError, AlignedBuf)> {
        self.receive_direct(
            conn,
            DirectRecv {
                buf,
                range,
                tag,
                whole: false,
            },
        )
    }

    fn receive_direct(
        &mut self,
        conn: ConnId,
        direct: DirectRecv,
    ) -> Result<(), (SubmitError, AlignedBuf)> {
        if self.backend.kind() != BackendKind::Uring {
            return Err((SubmitError::Unsupported, direct.buf));
        }
        if let Err(error) = self.check_submit() {
            return Err((error, direct.buf));
        }
        let range = &direct.range;
        if range.is_empty() || range.end > direct.buf.len() || u32::try_from(range.len()).is_err() {
            return Err((SubmitError::InvalidRanges, direct.buf));
        }
        // Bytes already queued for the handler come before this receive's.
        let queued = self.events.iter().any(|event| match event {
            Event::Received { conn: queued, .. } | Event::RecvEnded { conn: queued, .. } => {
                *queued == conn
            }
            _ => false,
        });
        let slot = match self.conns.usable_mut(conn.0) {
            Ok(slot) => slot,
            Err(error) => return Err((error, direct.buf)),
        };
        let free = slot.state == ConnState::Open
            && slot.recv_wanted
            && !slot.recv_ended
            && slot.backlog.is_empty()
            && slot.pending_end.is_none()
            && !slot.receives_direct()
            && !queued;
        if !free {
            return Err((SubmitError::ReceiveBusy, direct.buf));
        }
        slot.direct_waiting = Some(Box::new(direct));
        if slot.recv_op.is_some() {
            // Issued at the multishot receive's final completion.
            self.cancel_multishot(conn.0);
        } else {
            self.issue_direct(conn.0);
        }
        Ok(())
    }

    /// Issues the connection's waiting receive into the handler's buffer.
    fn issue_direct(&mut self, conn: Key) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        let Some(direct) = slot.direct_waiting.take() else {
            return;
        };
        // Not starved any more (a stale queue entry is skipped).
        slot.starved = false;
        match self.start(OpBody::RecvInto { conn, direct }, true) {
            Ok(key) => {
                if let Some(slot) = self.conns.get_mut(conn) {
                    slot.direct_op = Some(key);
                    slot.op_started();
                }
            }
            Err(body) => {
                // The table is full: nothing received, the pooled receive
                // goes on.
                if let OpBody::RecvInto { direct, .. } = body {
                    self.hand_back(conn, *direct, 0);
                }
                self.arm_recv(conn);
            }
        }
    }

    /// The handler's buffer back, with `bytes` received into it.
    fn hand_back(&mut self, conn: Key, direct: DirectRecv, bytes: usize) {
        let DirectRecv {
            buf, range, tag, ..
        } = direct;
        self.push_event(Event::ReceivedInto {
            conn: ConnId(conn),
            tag,
            buf,
            bytes: bytes.min(range.len()),
        });
    }

    /// The final completion of a receive into the handler's buffer.
    pub(super) fn on_recv_into(&mut self, key: Key, result: i32) {
        let Some(OpBody::RecvInto { conn, direct }) = self.finish(key) else {
            return;
        };
        let shutting_down = self.shutting_down;
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        debug_assert_eq!(slot.direct_op, Some(key), "not the connection's receive");
        slot.direct_op = None;
        slot.op_finished();
        if slot.state == ConnState::Open && !shutting_down {
            // With MSG_WAITALL a short count means the stream ended, failed
            // or the receive was cancelled (without it, a short count is
            // what had arrived): the multishot receive, armed again, tells
            // which.
            let bytes = usize::try_from(result).unwrap_or(0);
            self.hand_back(conn, *direct, bytes);
            match result {
                0 => self.end_recv(conn, Ok(())),
                result if result < 0 && result != -libc::ECANCELED => {
                    self.end_recv(conn, Err(IoError::new(OpKind::Recv, -result)));
                }
                // Armed again once the handler has seen the bytes: it may
                // ask for another receive into its buffer first (the next
                // headers, whose bytes the multishot receive would take).
                _ => self.rearm_after_delivery.push(conn),
            }
        }
        self.maybe_finish_close(conn);
    }

    /// Arms the multishot receive of the connections whose receive into
    /// the handler's buffer ended, unless the handler asked for another.
    pub(super) fn rearm_after_delivery(&mut self) {
        if self.rearm_after_delivery.is_empty() {
            return;
        }
        for conn in std::mem::take(&mut self.rearm_after_delivery) {
            if self.conns.get(conn).is_some_and(|slot| slot.wants_recv()) {
                self.arm_recv(conn);
            }
        }
    }

    /// Resumes receiving: held data is delivered first, in order.
    pub fn resume_recv(&mut self, conn: ConnId) -> Result<(), SubmitError> {
        let slot = self.conns.usable_mut(conn.0)?;
        slot.recv_wanted = true;
        let held: Vec<RecvBuf> = slot.backlog.drain(..).collect();
        let end = slot.pending_end.take();
        let rearm = slot.wants_recv();
        for data in held {
            self.push_event(Event::Received { conn, data });
        }
        if let Some(result) = end {
            self.push_event(Event::RecvEnded { conn, result });
        }
        if rearm {
            self.arm_recv(conn.0);
        }
        Ok(())
    }

    /// Arms the connection's multishot receive (if open and none is armed).
    pub(super) fn arm_recv(&mut self, conn: Key) {
        let Some(slot) = self.conns.get(conn) else {
            return;
        };
        if slot.recv_op.is_some() || slot.receives_direct() || slot.state != ConnState::Open {
            return;
        }
        if let Ok(key) = self.start(OpBody::Recv { conn }, false) {
            if let Some(slot) = self.conns.get_mut(conn) {
                slot.recv_armed(key);
            }
        }
    }

    pub(super) fn on_recv(&mut self, key: Key, conn: Key, completion: Completion) {
        if completion.result > 0 {
            let leased = completion.buffer_id().and_then(|buffer_id| {
                self.pool
                    .lease(buffer_id, u32::try_from(completion.result).unwrap_or(0))
            });
            match leased {
                Some(data) => self.deliver_received(conn, data),
                None => {
                    // The kernel (or the portable backend) named a buffer
                    // that is not free, or overran it: the pool's ownership
                    // rule is broken.
                    debug_assert!(false, "receive completion without a valid buffer");
                    tracing::error!(
                        core = self.index,
                        "receive completion without a valid buffer"
                    );
                }
            }
        } else {
            self.discard_buffer(&completion);
        }
        if completion.more() {
            return;
        }
        self.finish(key);
        let shutting_down = self.shutting_down;
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        slot.recv_disarmed();
        let open = slot.state == ConnState::Open && !shutting_down;
        let wanted = slot.recv_wanted && !slot.recv_ended;
        if open && slot.direct_waiting.is_some() {
            // The multishot receive stopped with nothing undelivered: the
            // receive into the handler's buffer goes now, unless the stream
            // ended or failed (then the buffer goes back first).
            let ends = completion.result == 0
                || (completion.result < 0
                    && completion.result != -libc::ECANCELED
                    && completion.result != -libc::ENOBUFS);
            if ends {
                if let Some(direct) = slot.direct_waiting.take() {
                    self.hand_back(conn, *direct, 0);
                }
            } else {
                self.issue_direct(conn);
                self.maybe_finish_close(conn);
                return;
            }
        }
        match completion.result {
            0 => self.end_recv(conn, Ok(())),
            result if result > 0 || result == -libc::ECANCELED => {
                if open && wanted {
                    self.arm_recv(conn);
                }
            }
            result if result == -libc::ENOBUFS => {
                if open {
                    self.conns.mark_starved(conn);
                }
            }
            result => self.end_recv(conn, Err(IoError::new(OpKind::Recv, -result))),
        }
        self.maybe_finish_close(conn);
    }

    fn deliver_received(&mut self, conn: Key, data: RecvBuf) {
        let quickack = self.limits.quickack_after_recv;
        let shutting_down = self.shutting_down;
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.state != ConnState::Open || shutting_down {
            return;
        }
        let preempted = slot.direct_waiting.take();
        if let Some(direct) = preempted {
            // Bytes the multishot receive took before it stopped come
            // first: the handler's buffer goes back unused, ahead of them.
            self.hand_back(conn, *direct, 0);
        }
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.delivers_now() {
            if quickack && slot.quickack {
                let _ = socket::set_quickack(&slot.fd);
            }
            self.push_event(Event::Received {
                conn: ConnId(conn),
                data,
            });
        } else {
            slot.backlog.push_back(data);
        }
    }

    fn end_recv(&mut self, conn: Key, result: Result<(), IoError>) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.recv_ended || slot.state == ConnState::Closing {
            return;
        }
        slot.recv_ended = true;
        if slot.delivers_now() {
            self.push_event(Event::RecvEnded {
                conn: ConnId(conn),
                result,
            });
        } else {
            slot.pending_end = Some(result);
        }
    }

    /// Re-arms receives that stopped for lack of buffers, once enough came
    /// back (a low-water mark, so a nearly empty pool does not thrash).
    pub(super) fn rearm_starved(&mut self) {
        if self.conns.starved_count() == 0 {
            return;
        }
        let low_water = (u32::from(self.pool.count()) / 8).max(1);
        if !self.pool.take_released_flag() && self.pool.free_count() < low_water {
            return;
        }
        while self.pool.free_count() >= low_water {
            let Some(conn) = self.conns.pop_starved() else {
                break;
            };
            if self
                .conns
                .get(conn)
                .is_some_and(|slot| slot.recv_wanted && !slot.recv_ended)
            {
                self.arm_recv(conn);
            }
        }
    }
}
