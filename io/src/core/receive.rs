//! Receiving: one multishot receive armed per open connection, data leased
//! from the pool to the handler, pausing (data held in the connection's
//! backlog), and backpressure (a receive the empty pool ended is re-armed
//! once enough buffers are back).

use std::os::fd::AsRawFd;

use super::conns::ConnState;
use super::ops::OpBody;
use super::Core;
use crate::backend::op::{self, Completion, Prim, CANCEL_USER_DATA};
use crate::buf::RecvBuf;
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
        if let Some(op_key) = slot.recv_op {
            if !slot.recv_cancel_requested {
                slot.recv_cancel_requested = true;
                let fd = slot.fd.as_raw_fd();
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
        }
        Ok(())
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
        if slot.recv_op.is_some() || slot.state != ConnState::Open {
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
        if slot.delivers_now() {
            if quickack {
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
