//! Waking a core from another thread: an eventfd the core's backend watches
//! (a read kept in the io_uring, or the eventfd in the epoll set) plus a flag,
//! so that a burst of messages between two wake-ups costs one `write(2)`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// One core's wake-up.
///
/// Protocol: a sender queues its message, then `signal`s; the core `clear`s
/// the flag *before* draining its queues. A message queued after the clear
/// finds the flag down and writes the eventfd; one queued before it is seen
/// by the drain. Nothing is missed, and a wake is at worst spurious.
#[derive(Debug)]
pub(crate) struct WakeSignal {
    fd: OwnedFd,
    notified: AtomicBool,
}

impl WakeSignal {
    /// `nonblocking` for the portable backend, which drains the eventfd
    /// after epoll reports it readable.
    pub fn new(nonblocking: bool) -> std::io::Result<WakeSignal> {
        Ok(WakeSignal {
            fd: sys::eventfd(nonblocking)?,
            notified: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Wakes the core unless a wake is already pending.
    pub fn signal(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            sys::eventfd_signal(self.fd.as_raw_fd());
        }
    }

    /// Wakes the core whatever the flag says (shutdown).
    pub fn force(&self) {
        self.notified.store(true, Ordering::SeqCst);
        sys::eventfd_signal(self.fd.as_raw_fd());
    }

    /// The core is about to look at its queues: later messages wake it again.
    pub fn clear(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }
}
