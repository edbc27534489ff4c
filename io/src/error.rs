//! Errors of the I/O layer: what failed to start, what could not be
//! submitted, and what an operation returned. Mapping to DICOM outcomes
//! (C-STORE statuses, A-ABORT) is the engine's job, not this crate's.

use std::fmt;
use std::time::Duration;

/// The kind of an operation, used in [`IoError`] and by the fault seam to
/// count operations ("the 3rd `Sync`").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OpKind {
    /// Accepting a connection on a listener.
    Accept,
    /// Connecting an outbound socket.
    Connect,
    /// Receiving from a connection.
    Recv,
    /// Sending on a connection.
    Send,
    /// `openat`.
    Open,
    /// `pwritev` at an offset.
    Write,
    /// `fsync` or `fdatasync`.
    Sync,
    /// `renameat`.
    Rename,
    /// `mkdirat`.
    MkDir,
    /// `unlinkat`.
    Unlink,
    /// `close` of a file.
    Close,
    /// A timer.
    Timer,
    /// `preadv` at an offset.
    Read,
}

impl OpKind {
    /// Every kind, in a fixed order (the fault seam's seeded plans use it).
    pub const ALL: [OpKind; 13] = [
        OpKind::Accept,
        OpKind::Connect,
        OpKind::Recv,
        OpKind::Send,
        OpKind::Open,
        OpKind::Write,
        OpKind::Sync,
        OpKind::Rename,
        OpKind::MkDir,
        OpKind::Unlink,
        OpKind::Close,
        OpKind::Timer,
        OpKind::Read,
    ];

    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            OpKind::Accept => "accept",
            OpKind::Connect => "connect",
            OpKind::Recv => "recv",
            OpKind::Send => "send",
            OpKind::Open => "open",
            OpKind::Write => "write",
            OpKind::Sync => "sync",
            OpKind::Rename => "rename",
            OpKind::MkDir => "mkdir",
            OpKind::Unlink => "unlink",
            OpKind::Close => "close",
            OpKind::Timer => "timer",
            OpKind::Read => "read",
        };
        f.write_str(name)
    }
}

/// An operation completed with an error: which operation and the `errno`.
///
/// The same value comes from both backends (io_uring's negative `res` and the
/// portable backend's `errno` are the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {}", std::io::Error::from_raw_os_error(*errno))]
pub struct IoError {
    /// The operation that failed. For a write with a linked sync, `Sync`
    /// means the data was written but could not be made durable.
    pub op: OpKind,
    /// The positive `errno` value (`libc::EIO`, `libc::ENOSPC`, ...).
    pub errno: i32,
}

impl IoError {
    pub(crate) fn new(op: OpKind, errno: i32) -> IoError {
        IoError { op, errno }
    }

    /// `ENOSPC` or `EDQUOT`: the disk (or quota) is full.
    pub fn is_no_space(&self) -> bool {
        self.errno == libc::ENOSPC || self.errno == libc::EDQUOT
    }

    /// `EEXIST`, e.g. from an open with `create_new`.
    pub fn is_already_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }

    /// `ECANCELED`: the operation was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.errno == libc::ECANCELED
    }

    /// The error as a `std::io::Error`.
    pub fn to_io_error(&self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.errno)
    }
}

/// Why an operation could not be submitted. Nothing was started; the handler
/// still owns its decision (the buffers passed in were dropped, which returns
/// receive buffers to the pool).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The core already has `ops_in_flight_max` handler operations in flight.
    #[error("too many operations in flight on this core (maximum {maximum})")]
    TooManyOps {
        /// The configured maximum.
        maximum: usize,
    },
    /// The connection's send queue is full (`sends_queued_max_per_connection`).
    #[error("send queue of the connection is full (maximum {maximum})")]
    SendQueueFull {
        /// The configured maximum.
        maximum: usize,
    },
    /// The core already holds `connections_max_per_core` connections.
    #[error("too many connections on this core (maximum {maximum})")]
    TooManyConnections {
        /// The configured maximum.
        maximum: usize,
    },
    /// The connection id is stale or closing.
    #[error("unknown or closing connection")]
    UnknownConnection,
    /// The file id is stale or closing.
    #[error("unknown or closing file")]
    UnknownFile,
    /// A path contains a NUL byte.
    #[error("path contains a NUL byte")]
    InvalidPath,
    /// More buffers than one vectored write accepts.
    #[error("{count} buffers in one write (maximum {maximum})")]
    TooManyBuffers {
        /// Buffers passed.
        count: usize,
        /// The maximum (`IOV_MAX`).
        maximum: usize,
    },
    /// An empty write or send.
    #[error("empty buffer")]
    EmptyBuffer,
    /// Read ranges that are empty, out of order, overlapping or outside
    /// the chunk.
    #[error("read ranges empty, out of order or outside the chunk")]
    InvalidRanges,
    /// The runtime is shutting down.
    #[error("runtime is shutting down")]
    ShuttingDown,
    /// A receive into the caller's buffer (`Core::recv_into`) asked of a
    /// connection whose receive cannot be taken over now: paused, ended,
    /// data or an end held for the handler, or such a receive already
    /// pending.
    #[error("the connection's receive cannot be taken over now")]
    ReceiveBusy,
    /// The backend cannot do this (the portable backend has no receive
    /// into the caller's buffer).
    #[error("not supported by this backend")]
    Unsupported,
    /// A socket could not be created for `connect`.
    #[error("socket creation failed: {0}")]
    Socket(String),
}

/// Why the runtime did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("invalid I/O configuration: {0}")]
    InvalidConfig(String),
    /// `backend = uring` was forced but io_uring cannot be used here.
    #[error("io_uring was required (backend = uring) but is unavailable: {reason}")]
    UringUnavailable {
        /// What the probe found.
        reason: String,
    },
    /// A listener could not be created or bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A core failed to set up its ring, epoll instance or buffers.
    #[error("core {core} failed to start: {source}")]
    Core {
        /// The core index.
        core: usize,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why [`crate::Runtime::join`] did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// Some threads did not exit within the wait.
    #[error("{threads} runtime thread(s) still running after {waited:?}")]
    Timeout {
        /// How many threads are still running.
        threads: usize,
        /// How long was waited.
        waited: Duration,
    },
    /// A core thread panicked (a handler bug).
    #[error("core thread {core} panicked")]
    Panicked {
        /// The core index.
        core: usize,
    },
}
