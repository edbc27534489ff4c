//! What a handler sees: the ids of connections, files and timers, the
//! [`Event`]s the runtime delivers, and the small option types of file
//! operations. (The [`Handler`](crate::Handler) trait itself lives with the
//! core it is handed.)

use std::net::SocketAddr;

use crate::aligned::AlignedBuf;
use crate::buf::RecvBuf;
use crate::error::IoError;
use crate::slab::Key;

/// A connection on one core. Stale after [`Event::ConnClosed`] (or a failed
/// [`Event::Connected`]); the runtime never confuses it with a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub(crate) Key);

impl ConnId {
    /// The slot index, dense and below `connections_max_per_core`, stable
    /// for the connection's life: handlers can keep per-connection state in
    /// a `Vec` indexed by it.
    pub fn index(self) -> usize {
        self.0.index as usize
    }
}

/// An open file or directory on one core: a generation-checked handle to a
/// descriptor in the core's file table, valid from [`Event::Opened`] (or
/// `Core::adopt_file`) until `Core::close_file`, and meaningless on any
/// other core or after the close.
///
/// Named a *handle*, not an id, so it cannot be mistaken for the store's
/// `sluice_index::FileId`, the persistent 128-bit name of a stored object
/// that outlives every process: this one names an open descriptor for as
/// long as it is open, like a `std::fs::File`, and is never written down.
/// (`FileSlot` was the other candidate; it describes the table's
/// implementation rather than what the caller holds.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle(pub(crate) Key);

impl FileHandle {
    /// The slot index (dense, stable while the file is open).
    pub fn index(self) -> usize {
        self.0.index as usize
    }
}

/// A timer, to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) u64);

/// Where a path is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Relative to the process's working directory (or an absolute path).
    Cwd,
    /// Relative to an open directory.
    Dir(FileHandle),
}

/// Whether a sync covers metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `fdatasync`: data plus the metadata needed to read it back (size).
    Data,
    /// `fsync`: data and all metadata (use it on directories).
    All,
}

/// Flags of an open, like `std::fs::OpenOptions`. `O_CLOEXEC` is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    directory: bool,
    direct: bool,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Read-only, no creation, mode 0o644 if created.
    pub const fn new() -> OpenOptions {
        OpenOptions {
            read: true,
            write: false,
            create: false,
            create_new: false,
            truncate: false,
            directory: false,
            direct: false,
            mode: 0o644,
        }
    }

    /// A new file for writing that must not exist (`O_CREAT|O_EXCL|O_WRONLY`).
    pub const fn create_new_write() -> OpenOptions {
        OpenOptions {
            read: false,
            write: true,
            create_new: true,
            ..OpenOptions::new()
        }
    }

    /// A directory, to sync it or resolve paths in it (`O_DIRECTORY|O_RDONLY`).
    pub const fn directory() -> OpenOptions {
        OpenOptions {
            directory: true,
            ..OpenOptions::new()
        }
    }

    /// Open for reading.
    pub const fn read(mut self, read: bool) -> OpenOptions {
        self.read = read;
        self
    }

    /// Open for writing.
    pub const fn write(mut self, write: bool) -> OpenOptions {
        self.write = write;
        self
    }

    /// Create if missing.
    pub const fn create(mut self, create: bool) -> OpenOptions {
        self.create = create;
        self
    }

    /// Create, failing with `EEXIST` if present.
    pub const fn create_new(mut self, create_new: bool) -> OpenOptions {
        self.create_new = create_new;
        self
    }

    /// Truncate to zero length.
    pub const fn truncate(mut self, truncate: bool) -> OpenOptions {
        self.truncate = truncate;
        self
    }

    /// Bypass the page cache (`O_DIRECT`): every write's buffer address,
    /// offset and length must then be aligned to the device's logical
    /// block size ([`AlignedBuf`](crate::AlignedBuf) buffers are), or it
    /// fails with `EINVAL`; a file system that refuses the flag fails the
    /// open with `EINVAL`.
    pub const fn direct(mut self, direct: bool) -> OpenOptions {
        self.direct = direct;
        self
    }

    /// Permission bits for a created file.
    pub const fn mode(mut self, mode: u32) -> OpenOptions {
        self.mode = mode;
        self
    }

    pub(crate) fn flags(&self) -> i32 {
        let access = match (self.read, self.write) {
            (_, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
        };
        let mut flags = access | libc::O_CLOEXEC;
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        if self.truncate {
            flags |= libc::O_TRUNC;
        }
        if self.directory {
            flags |= libc::O_DIRECTORY;
        }
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        flags
    }

    pub(crate) fn mode_bits(&self) -> u32 {
        self.mode
    }
}

/// What the runtime tells a handler. Every operation a handler submits ends
/// in exactly one event carrying the `tag` it chose (cancelled timers and the
/// operations of a closed connection end silently, as documented on the
/// methods that do that).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A connection was accepted on listener `listener` (index into
    /// `RuntimeConfig::listen_addrs`); receiving is armed.
    Accepted {
        /// The new connection.
        conn: ConnId,
        /// Listener index.
        listener: usize,
        /// The peer, when the kernel could tell.
        peer: Option<SocketAddr>,
    },
    /// An outbound connection finished connecting (receiving is armed) or
    /// failed (the id is then stale).
    Connected {
        /// The connection `Core::connect` returned.
        conn: ConnId,
        /// The caller's tag.
        tag: u64,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// Bytes arrived, in a pooled buffer the handler may keep, slice, and
    /// lend to writes; it goes back to the pool when the last view drops.
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes (never empty).
        data: RecvBuf,
    },
    /// A receive into the handler's buffer ([`Core::recv_into`](crate::Core::recv_into))
    /// ended: the buffer comes back with `bytes` bytes of the stream at the
    /// start of the range it was lent for (all of it, or fewer when the
    /// stream ended, failed or the receive was cancelled; 0 when bytes the
    /// connection's pooled receive had already taken had to be delivered
    /// first: they follow as [`Event::Received`]). An end of stream or an
    /// error follows as [`Event::RecvEnded`]; otherwise the pooled receive
    /// goes on.
    ReceivedInto {
        /// The connection.
        conn: ConnId,
        /// The caller's tag.
        tag: u64,
        /// The buffer lent.
        buf: AlignedBuf,
        /// Bytes received into it.
        bytes: usize,
    },
    /// No more bytes will arrive: `Ok` on an orderly end of stream, `Err` on
    /// a receive error. The handler closes the connection when done sending.
    RecvEnded {
        /// The connection.
        conn: ConnId,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// A send finished: every byte was handed to the kernel, or an error.
    Sent {
        /// The connection.
        conn: ConnId,
        /// The caller's tag.
        tag: u64,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// A connection closed by `Core::close_connection` is gone: its
    /// operations have drained and its descriptor is closed.
    ConnClosed {
        /// The (now stale) connection.
        conn: ConnId,
    },
    /// An open finished.
    Opened {
        /// The caller's tag.
        tag: u64,
        /// The file, or the error (`EEXIST` for `create_new`).
        result: Result<FileHandle, IoError>,
    },
    /// A write finished: all bytes written (and synced, if a sync was
    /// linked), or an error. Short writes are completed by the runtime and
    /// never reported as success with fewer bytes.
    Written {
        /// The file.
        file: FileHandle,
        /// The caller's tag.
        tag: u64,
        /// Bytes written (the full length), or the error; an error with
        /// `op == Sync` means the bytes were written but not made durable.
        result: Result<u64, IoError>,
    },
    /// A read finished ([`Core::read_at`](crate::Core::read_at)): the chunk
    /// comes back with the bytes read in the ranges asked for.
    Read {
        /// The file.
        file: FileHandle,
        /// The caller's tag.
        tag: u64,
        /// The chunk read into (its length unchanged by the read).
        chunk: crate::chunk::Chunk,
        /// Bytes read: every byte of the ranges, or fewer only when the file
        /// ended first; or the error.
        result: Result<u64, IoError>,
    },
    /// A sync finished.
    Synced {
        /// The file.
        file: FileHandle,
        /// The caller's tag.
        tag: u64,
        /// Outcome. An error is final: never retry a sync into a success.
        result: Result<(), IoError>,
    },
    /// A rename finished.
    Renamed {
        /// The caller's tag.
        tag: u64,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// A mkdir finished.
    DirCreated {
        /// The caller's tag.
        tag: u64,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// An unlink (or rmdir) finished.
    Unlinked {
        /// The caller's tag.
        tag: u64,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// A close finished (the descriptor is gone either way).
    FileClosed {
        /// The caller's tag.
        tag: u64,
        /// Outcome (close can report deferred write errors).
        result: Result<(), IoError>,
    },
    /// A timer expired.
    TimerFired {
        /// The caller's tag.
        tag: u64,
    },
}
