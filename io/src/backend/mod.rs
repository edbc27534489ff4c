//! The two backends behind one interface: the core hands a backend
//! primitive operations ([`op::Prim`]) and gets completions back in
//! io_uring's terms ([`op::Completion`]), whichever backend runs.
//!
//! - `op`: the contract (primitives, completions, `user_data` encoding);
//! - `uring`: one io_uring per core;
//! - `portable`: epoll per core plus a shared pool of file helper threads;
//! - `probe`: which of the two a runtime can run, decided once at start.
//!
//! Architecture invariant: nothing here knows the core's tables. A backend
//! receives raw pointers inside a `Prim` and keeps them only until the
//! operation's final completion, which it reports exactly once; the core
//! keeps the memory alive until then (docs/safety.md).

pub(crate) mod op;
pub(crate) mod portable;
pub(crate) mod probe;
mod uring;

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::buf::Pool;
use crate::config::BackendKind;
use crate::wake::WakeSignal;

use self::op::{Completion, Prim};
use self::portable::{FileJob, PortableBackend};
use self::uring::UringBackend;

/// One core's backend.
pub(crate) enum Backend {
    Uring(UringBackend),
    Portable(PortableBackend),
}

/// What a core's backend is built from (per core, on the core's thread).
#[derive(Debug, Clone)]
pub(crate) struct BackendSetup {
    /// io_uring submission entries.
    pub ring_entries: u32,
    /// io_uring completion entries.
    pub completion_entries: u32,
    /// Receive pool: size of one buffer.
    pub buffer_size_bytes: u32,
    /// Receive pool: number of buffers.
    pub buffer_count: u16,
    /// io_uring: bound on io-wq workers for file operations (0: kernel's).
    pub file_workers_max: u32,
    /// Portable: capacity of the queue file helpers answer through.
    pub reply_capacity: usize,
}

impl Backend {
    /// Builds the backend of kind `kind` and the receive pool it fills.
    /// `file_jobs` is the portable backend's helper pool (`None` for io_uring).
    pub fn new(
        kind: BackendKind,
        setup: &BackendSetup,
        wake: Arc<WakeSignal>,
        file_jobs: Option<Sender<FileJob>>,
    ) -> std::io::Result<(Backend, Rc<Pool>)> {
        match (kind, file_jobs) {
            (BackendKind::Uring, _) => UringBackend::new(
                setup.ring_entries,
                setup.completion_entries,
                setup.buffer_size_bytes,
                setup.buffer_count,
                setup.file_workers_max,
                wake,
            )
            .map(|(backend, pool)| (Backend::Uring(backend), pool)),
            (BackendKind::Portable, Some(jobs)) => PortableBackend::new(
                setup.buffer_size_bytes,
                setup.buffer_count,
                wake,
                jobs,
                setup.reply_capacity,
            )
            .map(|(backend, pool)| (Backend::Portable(backend), pool)),
            (BackendKind::Portable, None) => Err(std::io::Error::other("no file helper pool")),
        }
    }

    /// Starts `prim`; its completions carry `user_data`.
    pub fn issue(&mut self, user_data: u64, prim: Prim) {
        match self {
            Backend::Uring(backend) => backend.issue(user_data, prim),
            Backend::Portable(backend) => backend.issue(user_data, prim),
        }
    }

    /// Submits what is queued, waits for completions if `block` (at most
    /// `timeout`), appends them to `out`; returns whether the wake-up fired.
    pub fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> std::io::Result<bool> {
        match self {
            Backend::Uring(backend) => backend.wait(out, block, timeout),
            Backend::Portable(backend) => backend.wait(out, block, timeout),
        }
    }

    /// Registers `buf` with the ring (io_uring only): see
    /// `UringBackend::register_buffer`. The portable backend has no
    /// registered buffers: `Ok(false)`.
    pub fn register_buffer(
        &mut self,
        buf: &mut crate::aligned::AlignedBuf,
    ) -> std::io::Result<bool> {
        match self {
            Backend::Uring(backend) => backend.register_buffer(buf),
            Backend::Portable(_) => Ok(false),
        }
    }

    /// The slot of `buf` in this ring's table of registered buffers.
    pub fn fixed_index(&self, buf: &crate::aligned::AlignedBuf) -> Option<u16> {
        match self {
            Backend::Uring(backend) => backend.fixed_index(buf),
            Backend::Portable(_) => None,
        }
    }

    /// Buffers registered with this core's ring.
    pub fn registered_buffers(&self) -> usize {
        match self {
            Backend::Uring(backend) => backend.registered_buffers(),
            Backend::Portable(_) => 0,
        }
    }

    /// Whether the backend splices (io_uring with `IORING_OP_SPLICE`).
    pub fn splice_supported(&self) -> bool {
        match self {
            Backend::Uring(backend) => backend.splice_supported(),
            Backend::Portable(_) => false,
        }
    }

    /// The most submissions one linked chain may have.
    pub fn chain_max(&self) -> usize {
        match self {
            Backend::Uring(backend) => backend.chain_max(),
            Backend::Portable(_) => 2,
        }
    }

    /// The core is about to close socket `fd` (its operations are done).
    pub fn forget_socket(&mut self, fd: RawFd) {
        if let Backend::Portable(backend) = self {
            backend.forget_socket(fd);
        }
    }

    /// Which io_uring setup flags the kernel accepted (for the log).
    pub fn uring_setup(&self) -> Option<&'static str> {
        match self {
            Backend::Uring(backend) => Some(backend.setup_description),
            Backend::Portable(_) => None,
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Uring(_) => BackendKind::Uring,
            Backend::Portable(_) => BackendKind::Portable,
        }
    }

    /// Shutdown: stop re-arming the wake-up read.
    pub fn set_draining(&mut self) {
        if let Backend::Uring(backend) = self {
            backend.set_draining();
        }
    }

    /// Whether the kernel still holds the wake-up read (shutdown waits).
    pub fn wake_in_flight(&self) -> bool {
        match self {
            Backend::Uring(backend) => backend.wake_in_flight(),
            Backend::Portable(_) => false,
        }
    }
}
