//! Accepting: a multishot accept armed per listener (re-armed after a pause
//! when it fails, so EMFILE does not spin), and in single-acceptor mode the
//! hand-over of accepted sockets to the least-loaded core.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::conns::ConnState;
use super::ops::{OpBody, TimerPurpose};
use super::shared::Internal;
use super::submit::timer_body;
use super::Core;
use crate::backend::op::Completion;
use crate::config::AcceptMode;
use crate::event::{ConnId, Event};
use crate::slab::Key;
use crate::socket;

/// Pause before re-arming a listener whose accept failed (EMFILE would spin).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

impl Core {
    /// Arms every listener's accept (at start).
    pub(super) fn arm_listeners(&mut self) {
        for listener in 0..self.listeners.len() {
            self.arm_accept(listener);
        }
    }

    /// Arms listener `listener`'s multishot accept unless one is armed.
    pub(super) fn arm_accept(&mut self, listener: usize) {
        if self
            .listeners
            .get(listener)
            .is_none_or(|entry| entry.accept_op.is_some())
        {
            return;
        }
        if let Ok(key) = self.start(OpBody::Accept { listener }, false) {
            if let Some(entry) = self.listeners.get_mut(listener) {
                entry.accept_op = Some(key);
            }
        }
    }

    pub(super) fn on_accept(&mut self, key: Key, listener: usize, completion: Completion) {
        if completion.result >= 0 {
            // SAFETY: a successful accept completion's result is a new
            // descriptor the kernel created for us.
            let fd = unsafe { super::adopt_fd(completion.result) };
            let address_index = self
                .listeners
                .get(listener)
                .map_or(0, |entry| entry.address_index);
            self.on_new_socket(fd, address_index);
        } else if completion.result != -libc::ECANCELED {
            tracing::warn!(
                core = self.index,
                error = %std::io::Error::from_raw_os_error(-completion.result),
                "accept failed"
            );
        }
        if completion.more() {
            return;
        }
        self.finish(key);
        if let Some(entry) = self.listeners.get_mut(listener) {
            entry.accept_op = None;
        }
        if self.shutting_down {
            return;
        }
        if completion.result < 0 && completion.result != -libc::ECANCELED {
            let body = timer_body(ACCEPT_RETRY_DELAY, 0, TimerPurpose::RearmAccept(listener));
            let _ = self.start(body, false);
        } else {
            self.arm_accept(listener);
        }
    }

    /// A socket accepted here: keep it, or in single-acceptor mode hand it
    /// to the least-loaded core.
    fn on_new_socket(&mut self, fd: OwnedFd, address_index: usize) {
        if self.shutting_down {
            return;
        }
        let _ = socket::set_nodelay(&fd);
        if self.limits.accept_mode == AcceptMode::SingleAcceptor && self.shared.cores.len() > 1 {
            let target = self.shared.least_loaded_core();
            if target != self.index {
                if let Some(core) = self.shared.cores.get(target) {
                    // Counted now so the next pick sees it.
                    core.count_connection();
                    let handed = core.internal.try_send(Internal::Adopt {
                        fd,
                        listener: address_index,
                    });
                    if handed.is_ok() {
                        core.wake.signal();
                    } else {
                        core.uncount_connection();
                    }
                }
                return;
            }
        }
        self.accept_connection(fd, address_index, false);
    }

    /// Adds an accepted connection and arms its receive. `precounted`: the
    /// accepting core already counted it in this core's shared count.
    fn accept_connection(&mut self, fd: OwnedFd, address_index: usize, precounted: bool) {
        if precounted {
            if let Some(shared) = self.own_shared() {
                shared.uncount_connection();
            }
        }
        let peer = socket2::SockRef::from(&fd)
            .peer_addr()
            .ok()
            .and_then(|address| address.as_socket());
        match self.add_connection(fd, ConnState::Open) {
            Ok(conn) => {
                self.arm_recv(conn);
                self.push_event(Event::Accepted {
                    conn: ConnId(conn),
                    listener: address_index,
                    peer,
                });
            }
            Err(fd) => {
                tracing::debug!(
                    core = self.index,
                    "connection limit reached; closing accepted socket"
                );
                drop(fd);
            }
        }
    }

    /// Takes the connections other cores handed this one.
    pub(super) fn drain_internal(&mut self) {
        while let Ok(message) = self.internal.try_recv() {
            match message {
                Internal::Adopt { fd, listener } => {
                    if self.shutting_down {
                        if let Some(shared) = self.own_shared() {
                            shared.uncount_connection();
                        }
                        continue;
                    }
                    self.accept_connection(fd, listener, true);
                }
            }
        }
    }
}
