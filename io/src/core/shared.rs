//! What the cores of one runtime share: the shutdown flag, and per core its
//! wake-up, the queue other cores hand it connections through, and its
//! connection count (for the single acceptor's least-loaded pick). Built by
//! the runtime at start; everything else a core owns alone.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::wake::WakeSignal;

/// A message between cores (the runtime's own, not the handler's).
#[derive(Debug)]
pub(crate) enum Internal {
    /// Single-acceptor mode: a connection accepted by core 0 for this core.
    Adopt { fd: OwnedFd, listener: usize },
}

/// What every core can see of one core.
#[derive(Debug)]
pub(crate) struct CoreShared {
    pub wake: Arc<WakeSignal>,
    pub internal: Sender<Internal>,
    /// Connections the core holds, or was handed and has not taken yet.
    connections: AtomicUsize,
}

impl CoreShared {
    pub fn new(wake: Arc<WakeSignal>, internal: Sender<Internal>) -> CoreShared {
        CoreShared {
            wake,
            internal,
            connections: AtomicUsize::new(0),
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn uncount_connection(&self) {
        let before = self.connections.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "connection count underflow");
    }
}

/// What the cores of a runtime share.
#[derive(Debug)]
pub(crate) struct RuntimeShared {
    shutdown: AtomicBool,
    pub cores: Vec<CoreShared>,
}

impl RuntimeShared {
    pub fn new(cores: Vec<CoreShared>) -> RuntimeShared {
        RuntimeShared {
            shutdown: AtomicBool::new(false),
            cores,
        }
    }

    pub fn request_shutdown(&self) {
        if !self.shutdown.swap(true, Ordering::SeqCst) {
            for core in &self.cores {
                core.wake.force();
            }
        }
    }

    pub fn is_shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// The core with the fewest connections (single-acceptor mode).
    pub fn least_loaded_core(&self) -> usize {
        self.cores
            .iter()
            .enumerate()
            .min_by_key(|(_, core)| core.connections())
            .map_or(0, |(index, _)| index)
    }
}
