//! One core: the tables a core thread owns, the handler-facing [`Core`] API
//! that submits operations, the completion logic shared by both backends,
//! and the event loop.
//!
//! The state is split by what it owns, each part with its own invariants:
//! - `ops`: the operation table and the memory each operation lends the
//!   kernel (the ownership rule docs/safety.md builds on);
//! - `conns`: the connection table and the queue of receive-starved ones;
//! - `files`: the file table and its deferred closes;
//! - `accept`: the listeners, and connections accepted or handed over;
//! - `shared`: what the cores of a runtime share.
//!
//! The behaviour on that state, one concern per file, as `impl Core` blocks:
//! - `submit`: starting and finishing operations, the file and timer API;
//! - `issue`: turning an operation into the backend's primitive (and the
//!   fault seam's decision);
//! - `complete`: dispatching completions; file, write and timer outcomes;
//! - `connections`: the connection API, sends and connects;
//! - `receive`: multishot receives, pausing, backpressure;
//! - `splice`: sends from files through the connection's pipe;
//! - `run`: the event loop, delivery to the handler, shutdown.
//!
//! Architecture invariant: the state files know nothing of `Core`; only
//! the behaviour files do, so no file below a `Core` method imports it back.

mod accept;
mod complete;
mod connections;
mod conns;
mod files;
pub(crate) mod handler;
mod issue;
mod listeners;
mod ops;
mod receive;
pub(crate) mod run;
pub(crate) mod shared;
mod splice;
mod submit;

use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::backend::op::Completion;
use crate::backend::Backend;
use crate::buf::Pool;
use crate::config::{AcceptMode, BackendKind};
use crate::event::Event;
use crate::fault::FaultInjector;

use self::conns::ConnTable;
use self::files::FileTable;
use self::listeners::Listener;
use self::ops::OpTable;
use self::shared::{CoreShared, Internal, RuntimeShared};

/// Operation slots reserved for the runtime's own requests.
const INTERNAL_OPS_RESERVED: usize = 64;

/// Numbers from the configuration a core checks against.
#[derive(Debug, Clone)]
pub(crate) struct CoreLimits {
    pub connections_max: usize,
    pub ops_in_flight_max: usize,
    pub sends_queued_max: usize,
    pub quickack_after_recv: bool,
    pub accept_mode: AcceptMode,
    pub drain_max: Duration,
    pub mailbox_batch_max: usize,
}

/// Counters of one core, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreStats {
    /// Open connections (including connecting and closing ones).
    pub connections: usize,
    /// Handler operations in flight (against `ops_in_flight_max`).
    pub ops_in_flight: usize,
    /// Receive buffers free in the pool.
    pub recv_buffers_free: u32,
    /// Receive buffers in the pool.
    pub recv_buffers_total: u16,
    /// Connections whose receive waits for buffers (backpressure).
    pub connections_starved: usize,
    /// Open files.
    pub files: usize,
    /// Buffers registered with the core's io_uring
    /// ([`Core::register_buffer`]).
    pub registered_buffers: usize,
}

/// A core as its handler sees it: submit operations here; they complete as
/// [`Event`]s delivered to the handler on this same thread.
pub struct Core {
    index: usize,
    limits: CoreLimits,
    backend: Backend,
    pool: Rc<Pool>,
    ops: OpTable,
    conns: ConnTable,
    files: FileTable,
    listeners: Vec<Listener>,
    /// Events for the handler, in order.
    events: VecDeque<Event>,
    /// Completions made up on this side (fault seam, operations that could
    /// not reach the backend), processed with the backend's next batch.
    local: VecDeque<Completion>,
    /// The backend's completions of one turn (kept for its allocation).
    completions: Vec<Completion>,
    shared: Arc<RuntimeShared>,
    internal: Receiver<Internal>,
    faults: FaultInjector,
    shutting_down: bool,
    /// Connections whose receive into the handler's buffer ended: their
    /// multishot receive is armed again once the handler has seen that
    /// (unless it asked for another such receive meanwhile).
    rearm_after_delivery: Vec<crate::slab::Key>,
}

/// Takes ownership of a descriptor a completion returned.
///
/// # Safety
/// `fd` must be a descriptor the kernel just created for this process that
/// nothing else owns.
unsafe fn adopt_fd(fd: i32) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("index", &self.index)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        limits: CoreLimits,
        backend: Backend,
        pool: Rc<Pool>,
        listeners: Vec<(usize, OwnedFd)>,
        shared: Arc<RuntimeShared>,
        internal: Receiver<Internal>,
        faults: FaultInjector,
    ) -> Core {
        let ops_max = limits.ops_in_flight_max
            + limits.connections_max
            + listeners.len()
            + INTERNAL_OPS_RESERVED;
        Core {
            index,
            ops: OpTable::new(ops_max),
            conns: ConnTable::new(limits.connections_max),
            files: FileTable::new(limits.connections_max + limits.ops_in_flight_max),
            listeners: listeners
                .into_iter()
                .map(|(address_index, fd)| Listener::new(fd, address_index))
                .collect(),
            limits,
            backend,
            pool,
            events: VecDeque::new(),
            local: VecDeque::new(),
            completions: Vec::new(),
            shared,
            internal,
            faults,
            shutting_down: false,
            rearm_after_delivery: Vec::new(),
        }
    }

    /// This core's index (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many cores the runtime has.
    pub fn core_count(&self) -> usize {
        self.shared.cores.len()
    }

    /// The backend this core runs.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Counters of this core.
    pub fn stats(&self) -> CoreStats {
        CoreStats {
            connections: self.conns.len(),
            ops_in_flight: self.ops.handler_ops(),
            recv_buffers_free: self.pool.free_count(),
            recv_buffers_total: self.pool.count(),
            connections_starved: self.conns.starved_count(),
            files: self.files.len(),
            registered_buffers: self.backend.registered_buffers(),
        }
    }

    /// Asks every core to shut down (e.g. a load generator that is done).
    pub fn request_runtime_shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// What the other cores see of this one.
    fn own_shared(&self) -> Option<&CoreShared> {
        self.shared.cores.get(self.index)
    }

    /// Queues an event for the handler (none once shutdown began).
    fn push_event(&mut self, event: Event) {
        if !self.shutting_down {
            self.events.push_back(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::conns::ConnSlot;
    use super::ops::OpEntry;

    #[test]
    fn idle_connection_costs_well_under_a_kib() {
        // An idle connection holds its table entry and the entry of its armed
        // receive (plus the slab's generation words); no buffer, no task.
        let idle_bytes = size_of::<ConnSlot>() + size_of::<OpEntry>() + 2 * size_of::<u64>();
        assert!(
            idle_bytes <= 512,
            "idle connection costs {idle_bytes} bytes"
        );
    }
}
