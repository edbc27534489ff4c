//! One core: its thread's tables of connections, files and operations, the
//! handler-facing [`Core`] API, the event loop, and the completion logic
//! shared by both backends.
//!
//! Ownership rule (what makes the `unsafe` in the backends sound): every
//! pointer a backend hands the kernel or a helper thread points into heap
//! memory owned by an operation's table entry (`OpBody`): a `Box`, `Vec`,
//! `CString` or an [`IoBuf`]. An entry is removed only after its operation's
//! final completion has been processed, so a cancelled operation keeps its
//! buffers until the kernel is done with them. Shutdown waits for every
//! final completion, or leaks the memory when the drain times out.

use std::collections::VecDeque;
use std::ffi::CString;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use io_uring::types::Timespec;

use crate::buf::{IoBuf, Pool, RecvBuf};
use crate::config::{AcceptMode, BackendKind, IOVECS_PER_WRITE_MAX};
use crate::error::{IoError, OpKind, SubmitError};
use crate::event::{At, ConnId, Event, FileHandle, Handler, OpenOptions, SyncKind, TimerId};
use crate::fault::{short_length, Fault, FaultInjector};
use crate::op::{self, Completion, Prim, CANCEL_USER_DATA};
use crate::portable::PortableBackend;
use crate::runtime::{RuntimeShared, WakeSignal};
use crate::slab::{Key, Slab};
use crate::sys;
use crate::uring::UringBackend;

/// Largest single send or write request handed to the kernel at once.
const TRANSFER_BYTES_MAX: usize = 1 << 30;
/// Pause before re-arming a listener whose accept failed (EMFILE would spin).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);
/// How often shutdown repeats its cancel-everything request while draining.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Operation slots reserved for the runtime's own requests.
const INTERNAL_OPS_RESERVED: usize = 64;

/// A message between cores (the runtime's own, not the handler's).
#[derive(Debug)]
pub(crate) enum Internal {
    /// Single-acceptor mode: a connection accepted by core 0 for this core.
    Adopt { fd: OwnedFd, listener: usize },
}

pub(crate) enum Backend {
    Uring(UringBackend),
    Portable(PortableBackend),
}

impl Backend {
    fn issue(&mut self, user_data: u64, prim: Prim) {
        match self {
            Backend::Uring(backend) => backend.issue(user_data, prim),
            Backend::Portable(backend) => backend.issue(user_data, prim),
        }
    }

    fn wait(
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

    fn forget_socket(&mut self, fd: RawFd) {
        if let Backend::Portable(backend) = self {
            backend.forget_socket(fd);
        }
    }

    fn kind(&self) -> BackendKind {
        match self {
            Backend::Uring(_) => BackendKind::Uring,
            Backend::Portable(_) => BackendKind::Portable,
        }
    }

    fn set_draining(&mut self) {
        if let Backend::Uring(backend) = self {
            backend.set_draining();
        }
    }

    fn wake_in_flight(&self) -> bool {
        match self {
            Backend::Uring(backend) => backend.wake_in_flight(),
            Backend::Portable(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Connecting,
    Open,
    Closing,
}

struct Conn {
    fd: OwnedFd,
    state: ConnState,
    /// The armed multishot receive.
    recv_op: Option<Key>,
    recv_cancel_requested: bool,
    /// The handler wants data (not paused).
    recv_wanted: bool,
    /// End of stream or a receive error was seen.
    recv_ended: bool,
    /// Waiting for pool buffers (backpressure).
    starved: bool,
    /// Data that arrived while paused, delivered on resume.
    backlog: VecDeque<RecvBuf>,
    /// The end of stream, held back behind the backlog.
    pending_end: Option<Result<(), IoError>>,
    send_queue: VecDeque<(IoBuf, u64)>,
    send_op: Option<Key>,
    /// Operations referencing this connection (receive, send, connect).
    ops: u32,
}

impl Conn {
    fn new(fd: OwnedFd, state: ConnState) -> Conn {
        Conn {
            fd,
            state,
            recv_op: None,
            recv_cancel_requested: false,
            recv_wanted: true,
            recv_ended: false,
            starved: false,
            backlog: VecDeque::new(),
            pending_end: None,
            send_queue: VecDeque::new(),
            send_op: None,
            ops: 0,
        }
    }
}

struct FileEntry {
    fd: OwnedFd,
    /// Operations using this descriptor; a close waits for them.
    ops: u32,
    close_requested: Option<u64>,
}

struct Listener {
    fd: OwnedFd,
    /// Index into `RuntimeConfig::listen_addrs`.
    address_index: usize,
    accept_op: Option<Key>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerPurpose {
    Handler,
    RearmAccept(usize),
}

/// A write at an offset, possibly with a linked sync, resubmitted until
/// every byte is written.
struct WriteOp {
    file: Key,
    fd: RawFd,
    offset: u64,
    /// Held until the final completion: the kernel reads from them.
    _bufs: Vec<IoBuf>,
    iovecs: Vec<libc::iovec>,
    /// First iovec not completely written.
    first: usize,
    /// A truncated copy of the remaining iovecs (fault seam: short write).
    fault_iovecs: Vec<libc::iovec>,
    written: u64,
    total: u64,
    sync: Option<SyncKind>,
    tag: u64,
    results: [Option<i32>; 2],
}

impl WriteOp {
    /// Moves past `bytes` newly written bytes.
    fn advance(&mut self, mut bytes: u64) {
        self.written += bytes;
        while bytes > 0 {
            let Some(iovec) = self.iovecs.get_mut(self.first) else {
                return;
            };
            let length = iovec.iov_len as u64;
            if bytes >= length {
                bytes -= length;
                self.first += 1;
            } else {
                iovec.iov_base = iovec
                    .iov_base
                    .cast::<u8>()
                    .wrapping_add(bytes as usize)
                    .cast();
                iovec.iov_len -= bytes as usize;
                bytes = 0;
            }
        }
    }
}

enum OpBody {
    Accept {
        listener: usize,
    },
    Recv {
        conn: Key,
    },
    Send {
        conn: Key,
        buf: IoBuf,
        sent: usize,
        tag: u64,
    },
    Connect {
        conn: Key,
        address: Box<socket2::SockAddr>,
        tag: u64,
    },
    Open {
        path: CString,
        dir_fd: RawFd,
        dir: Option<Key>,
        flags: i32,
        mode: u32,
        tag: u64,
    },
    Write(Box<WriteOp>),
    Sync {
        file: Key,
        fd: RawFd,
        kind: SyncKind,
        tag: u64,
    },
    Rename {
        old: CString,
        new: CString,
        old_dir_fd: RawFd,
        new_dir_fd: RawFd,
        dirs: [Option<Key>; 2],
        tag: u64,
    },
    MkDir {
        path: CString,
        dir_fd: RawFd,
        dir: Option<Key>,
        mode: u32,
        tag: u64,
    },
    Unlink {
        path: CString,
        dir_fd: RawFd,
        dir: Option<Key>,
        remove_dir: bool,
        tag: u64,
    },
    Close {
        fd: RawFd,
        tag: u64,
    },
    Timer {
        timespec: Box<Timespec>,
        deadline: Instant,
        tag: u64,
        purpose: TimerPurpose,
        cancelled: bool,
    },
}

impl OpBody {
    /// Files whose descriptors the operation uses (a close waits for them).
    fn file_refs(&self) -> [Option<Key>; 2] {
        match self {
            OpBody::Open { dir, .. } | OpBody::MkDir { dir, .. } | OpBody::Unlink { dir, .. } => {
                [*dir, None]
            }
            OpBody::Write(write) => [Some(write.file), None],
            OpBody::Sync { file, .. } => [Some(*file), None],
            OpBody::Rename { dirs, .. } => *dirs,
            _ => [None, None],
        }
    }
}

struct OpEntry {
    body: OpBody,
    /// Completions still expected (2 for a write with a linked sync).
    parts: u8,
    /// Counts against `ops_in_flight_max`.
    counted: bool,
}

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
}

/// A core as its handler sees it: submit operations here; they complete as
/// [`Event`]s delivered to the handler on this same thread.
pub struct Core {
    index: usize,
    limits: CoreLimits,
    backend: Backend,
    pool: Rc<Pool>,
    ops: Slab<OpEntry>,
    conns: Slab<Conn>,
    files: Slab<FileEntry>,
    listeners: Vec<Listener>,
    handler_ops: usize,
    events: VecDeque<Event>,
    /// Completions made up on this side (fault seam, cancelled submissions).
    local: VecDeque<Completion>,
    completions: Vec<Completion>,
    starved: VecDeque<Key>,
    shared: Arc<RuntimeShared>,
    internal: Receiver<Internal>,
    faults: FaultInjector,
    shutting_down: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("index", &self.index)
            .field("stats", &self.stats())
            .finish()
    }
}

fn c_path(path: &Path) -> Result<CString, SubmitError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SubmitError::InvalidPath)
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
            ops: Slab::new(ops_max),
            conns: Slab::new(limits.connections_max),
            files: Slab::new(limits.connections_max + limits.ops_in_flight_max),
            listeners: listeners
                .into_iter()
                .map(|(address_index, fd)| Listener {
                    fd,
                    address_index,
                    accept_op: None,
                })
                .collect(),
            limits,
            backend,
            pool,
            handler_ops: 0,
            events: VecDeque::new(),
            local: VecDeque::new(),
            completions: Vec::new(),
            starved: VecDeque::new(),
            shared,
            internal,
            faults,
            shutting_down: false,
        }
    }

    // ----- facts -----

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
            ops_in_flight: self.handler_ops,
            recv_buffers_free: self.pool.free_count(),
            recv_buffers_total: self.pool.count(),
            connections_starved: self.starved.len(),
            files: self.files.len(),
        }
    }

    /// Asks every core to shut down (e.g. a load generator that is done).
    pub fn request_runtime_shutdown(&self) {
        self.shared.request_shutdown();
    }

    // ----- connections -----

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
        let sends_queued_max = self.limits.sends_queued_max;
        let ops_in_flight_max = self.limits.ops_in_flight_max;
        let handler_ops = self.handler_ops;
        let entry = self
            .conns
            .get_mut(conn.0)
            .ok_or(SubmitError::UnknownConnection)?;
        if entry.state == ConnState::Closing {
            return Err(SubmitError::UnknownConnection);
        }
        if entry.send_queue.len() >= sends_queued_max {
            return Err(SubmitError::SendQueueFull {
                maximum: sends_queued_max,
            });
        }
        if entry.send_op.is_some() || entry.state == ConnState::Connecting {
            entry.send_queue.push_back((data, tag));
            return Ok(());
        }
        if handler_ops >= ops_in_flight_max {
            return Err(SubmitError::TooManyOps {
                maximum: ops_in_flight_max,
            });
        }
        self.start_send(conn.0, data, tag);
        Ok(())
    }

    fn start_send(&mut self, conn: Key, buf: IoBuf, tag: u64) {
        match self.start(
            OpBody::Send {
                conn,
                buf,
                sent: 0,
                tag,
            },
            true,
        ) {
            Ok(key) => {
                if let Some(entry) = self.conns.get_mut(conn) {
                    entry.send_op = Some(key);
                    entry.ops += 1;
                }
            }
            Err(body) => {
                // Slots are reserved for every connection's send, so this is
                // unreachable in practice; report rather than lose the tag.
                if let OpBody::Send { tag, .. } = body {
                    self.push_event(Event::Sent {
                        conn: ConnId(conn),
                        tag,
                        result: Err(IoError::new(OpKind::Send, libc::EAGAIN)),
                    });
                }
            }
        }
    }

    /// Stops delivering [`Event::Received`] for the connection until
    /// [`Core::resume_recv`]; data that still arrives is held (in pool
    /// buffers, so the pool bounds it).
    pub fn pause_recv(&mut self, conn: ConnId) -> Result<(), SubmitError> {
        let entry = self
            .conns
            .get_mut(conn.0)
            .ok_or(SubmitError::UnknownConnection)?;
        entry.recv_wanted = false;
        if let Some(op_key) = entry.recv_op {
            if !entry.recv_cancel_requested {
                entry.recv_cancel_requested = true;
                let fd = entry.fd.as_raw_fd();
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
        let entry = self
            .conns
            .get_mut(conn.0)
            .ok_or(SubmitError::UnknownConnection)?;
        if entry.state == ConnState::Closing {
            return Err(SubmitError::UnknownConnection);
        }
        entry.recv_wanted = true;
        let held: Vec<RecvBuf> = entry.backlog.drain(..).collect();
        let end = entry.pending_end.take();
        let rearm = entry.recv_op.is_none()
            && !entry.recv_ended
            && !entry.starved
            && entry.state == ConnState::Open;
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

    /// Closes the connection: queued sends are dropped, in-flight operations
    /// cancelled; when they have drained the descriptor is closed and
    /// [`Event::ConnClosed`] follows. No other event arrives for it after this
    /// call. Unknown or already closing ids are ignored.
    pub fn close_connection(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(conn.0) else {
            return;
        };
        if entry.state == ConnState::Closing {
            return;
        }
        entry.state = ConnState::Closing;
        entry.send_queue.clear();
        entry.backlog.clear();
        entry.pending_end = None;
        if entry.ops > 0 {
            let fd = entry.fd.as_raw_fd();
            self.backend.issue(CANCEL_USER_DATA, Prim::CancelFd { fd });
        }
        self.maybe_finish_close(conn.0);
    }

    /// Sets `TCP_QUICKACK` on the connection now (the kernel clears it
    /// again after a while; see `quickack_after_recv`).
    pub fn set_quickack(&mut self, conn: ConnId) -> Result<(), IoError> {
        let entry = self
            .conns
            .get(conn.0)
            .ok_or(IoError::new(OpKind::Recv, libc::EBADF))?;
        sys::set_socket_option(
            entry.fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            1,
        )
        .map_err(|errno| IoError::new(OpKind::Recv, errno))
    }

    /// The peer address of a connection.
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        let entry = self.conns.get(conn.0)?;
        socket2::SockRef::from(&entry.fd)
            .peer_addr()
            .ok()?
            .as_socket()
    }

    /// Opens an outbound TCP connection (TCP_NODELAY set). Ends in
    /// [`Event::Connected`]; sends may be queued before it.
    pub fn connect(&mut self, address: SocketAddr, tag: u64) -> Result<ConnId, SubmitError> {
        self.check_submit()?;
        if self.conns.is_full() {
            return Err(SubmitError::TooManyConnections {
                maximum: self.limits.connections_max,
            });
        }
        let kind = socket2::Type::STREAM.cloexec();
        let kind = if self.backend.kind() == BackendKind::Portable {
            kind.nonblocking()
        } else {
            kind
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            kind,
            Some(socket2::Protocol::TCP),
        )
        .map_err(|error| SubmitError::Socket(error.to_string()))?;
        socket
            .set_tcp_nodelay(true)
            .map_err(|error| SubmitError::Socket(error.to_string()))?;
        let fd = OwnedFd::from(socket);
        let conn = self
            .add_connection(fd, ConnState::Connecting)
            .map_err(|_| SubmitError::TooManyConnections {
                maximum: self.limits.connections_max,
            })?;
        let body = OpBody::Connect {
            conn,
            address: Box::new(socket2::SockAddr::from(address)),
            tag,
        };
        match self.start(body, true) {
            Ok(_) => {
                if let Some(entry) = self.conns.get_mut(conn) {
                    entry.ops += 1;
                }
                Ok(ConnId(conn))
            }
            Err(_) => {
                self.remove_connection(conn);
                Err(SubmitError::TooManyOps {
                    maximum: self.limits.ops_in_flight_max,
                })
            }
        }
    }

    // ----- files -----

    fn check_submit(&self) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        if self.handler_ops >= self.limits.ops_in_flight_max {
            return Err(SubmitError::TooManyOps {
                maximum: self.limits.ops_in_flight_max,
            });
        }
        Ok(())
    }

    fn resolve(&self, at: At) -> Result<(RawFd, Option<Key>), SubmitError> {
        match at {
            At::Cwd => Ok((libc::AT_FDCWD, None)),
            At::Dir(file) => {
                let entry = self.files.get(file.0).ok_or(SubmitError::UnknownFile)?;
                if entry.close_requested.is_some() {
                    return Err(SubmitError::UnknownFile);
                }
                Ok((entry.fd.as_raw_fd(), Some(file.0)))
            }
        }
    }

    fn file_fd(&self, file: FileHandle) -> Result<RawFd, SubmitError> {
        let entry = self.files.get(file.0).ok_or(SubmitError::UnknownFile)?;
        if entry.close_requested.is_some() {
            return Err(SubmitError::UnknownFile);
        }
        Ok(entry.fd.as_raw_fd())
    }

    fn start_handler_op(&mut self, body: OpBody) -> Result<(), SubmitError> {
        self.start(body, true)
            .map(drop)
            .map_err(|_| SubmitError::TooManyOps {
                maximum: self.limits.ops_in_flight_max,
            })
    }

    /// Opens `path` (relative to `at`). Ends in [`Event::Opened`].
    pub fn open(
        &mut self,
        at: At,
        path: &Path,
        options: OpenOptions,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.resolve(at)?;
        let path = c_path(path)?;
        self.start_handler_op(OpBody::Open {
            path,
            dir_fd,
            dir,
            flags: options.flags(),
            mode: options.mode_bits(),
            tag,
        })
    }

    /// Registers a descriptor opened elsewhere (e.g. a data directory opened
    /// at start); the core owns and closes it.
    pub fn adopt_file(&mut self, fd: OwnedFd) -> Result<FileHandle, SubmitError> {
        self.files
            .insert(FileEntry {
                fd,
                ops: 0,
                close_requested: None,
            })
            .map(FileHandle)
            .map_err(|_| SubmitError::TooManyOps {
                maximum: self.limits.ops_in_flight_max,
            })
    }

    /// Writes `bufs` at `offset`, straight from their memory (receive
    /// buffers included: no copy). Ends in [`Event::Written`] once every byte
    /// is written; a short write is resubmitted, never reported as success.
    pub fn write_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        bufs: Vec<IoBuf>,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.submit_write(file, offset, bufs, None, tag)
    }

    /// Like [`Core::write_at`], with a sync linked after the write (one
    /// submission on io_uring). [`Event::Written`] reports success only when
    /// the bytes are written *and* synced; a short write cancels the linked
    /// sync, and the runtime resubmits the remainder with a new sync.
    pub fn write_at_and_sync(
        &mut self,
        file: FileHandle,
        offset: u64,
        bufs: Vec<IoBuf>,
        kind: SyncKind,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.submit_write(file, offset, bufs, Some(kind), tag)
    }

    fn submit_write(
        &mut self,
        file: FileHandle,
        offset: u64,
        bufs: Vec<IoBuf>,
        sync: Option<SyncKind>,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let fd = self.file_fd(file)?;
        if bufs.len() > IOVECS_PER_WRITE_MAX {
            return Err(SubmitError::TooManyBuffers {
                count: bufs.len(),
                maximum: IOVECS_PER_WRITE_MAX,
            });
        }
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .filter(|buf| !buf.is_empty())
            .map(|buf| libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            })
            .collect();
        let total: u64 = iovecs.iter().map(|iovec| iovec.iov_len as u64).sum();
        if total == 0 {
            return Err(SubmitError::EmptyBuffer);
        }
        let write = WriteOp {
            file: file.0,
            fd,
            offset,
            _bufs: bufs,
            iovecs,
            first: 0,
            fault_iovecs: Vec::new(),
            written: 0,
            total,
            sync,
            tag,
            results: [None, None],
        };
        self.start_handler_op(OpBody::Write(Box::new(write)))
    }

    /// Syncs a file or directory. Covers the writes whose [`Event::Written`]
    /// was delivered before this call (io_uring does not order separately
    /// submitted operations). Ends in [`Event::Synced`].
    pub fn sync(&mut self, file: FileHandle, kind: SyncKind, tag: u64) -> Result<(), SubmitError> {
        self.check_submit()?;
        let fd = self.file_fd(file)?;
        self.start_handler_op(OpBody::Sync {
            file: file.0,
            fd,
            kind,
            tag,
        })
    }

    /// Renames `from` to `to`. Ends in [`Event::Renamed`].
    pub fn rename(
        &mut self,
        from_at: At,
        from: &Path,
        to_at: At,
        to: &Path,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (old_dir_fd, old_dir) = self.resolve(from_at)?;
        let (new_dir_fd, new_dir) = self.resolve(to_at)?;
        let body = OpBody::Rename {
            old: c_path(from)?,
            new: c_path(to)?,
            old_dir_fd,
            new_dir_fd,
            dirs: [old_dir, new_dir],
            tag,
        };
        self.start_handler_op(body)
    }

    /// Creates a directory. Ends in [`Event::DirCreated`].
    pub fn mkdir(&mut self, at: At, path: &Path, mode: u32, tag: u64) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.resolve(at)?;
        self.start_handler_op(OpBody::MkDir {
            path: c_path(path)?,
            dir_fd,
            dir,
            mode,
            tag,
        })
    }

    /// Removes a file. Ends in [`Event::Unlinked`].
    pub fn unlink(&mut self, at: At, path: &Path, tag: u64) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.resolve(at)?;
        self.start_handler_op(OpBody::Unlink {
            path: c_path(path)?,
            dir_fd,
            dir,
            remove_dir: false,
            tag,
        })
    }

    /// Removes an empty directory. Ends in [`Event::Unlinked`].
    pub fn remove_dir(&mut self, at: At, path: &Path, tag: u64) -> Result<(), SubmitError> {
        self.check_submit()?;
        let (dir_fd, dir) = self.resolve(at)?;
        self.start_handler_op(OpBody::Unlink {
            path: c_path(path)?,
            dir_fd,
            dir,
            remove_dir: true,
            tag,
        })
    }

    /// Closes a file once the operations using it have completed. The id is
    /// stale at once. Ends in [`Event::FileClosed`].
    pub fn close_file(&mut self, file: FileHandle, tag: u64) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        let entry = self.files.get_mut(file.0).ok_or(SubmitError::UnknownFile)?;
        if entry.close_requested.is_some() {
            return Err(SubmitError::UnknownFile);
        }
        entry.close_requested = Some(tag);
        if entry.ops == 0 {
            self.begin_close(file.0);
        }
        Ok(())
    }

    fn begin_close(&mut self, file: Key) {
        let Some(entry) = self.files.remove(file) else {
            return;
        };
        let tag = entry.close_requested.unwrap_or(0);
        let fd = entry.fd.into_raw_fd();
        if let Err(OpBody::Close { fd, tag }) = self.start(OpBody::Close { fd, tag }, true) {
            let result = sys::close(fd).map_err(|errno| IoError::new(OpKind::Close, errno));
            self.push_event(Event::FileClosed { tag, result });
        }
    }

    // ----- timers -----

    /// Fires [`Event::TimerFired`] with `tag` after `after`.
    pub fn timer(&mut self, after: Duration, tag: u64) -> Result<TimerId, SubmitError> {
        self.check_submit()?;
        let body = OpBody::Timer {
            timespec: Box::new(Timespec::from(after)),
            deadline: Instant::now() + after,
            tag,
            purpose: TimerPurpose::Handler,
            cancelled: false,
        };
        let key = self
            .start(body, true)
            .map_err(|_| SubmitError::TooManyOps {
                maximum: self.limits.ops_in_flight_max,
            })?;
        Ok(TimerId(op::user_data(key, 0)))
    }

    /// Cancels a timer: no [`Event::TimerFired`] is delivered for it after
    /// this call. Unknown or fired timers are ignored.
    pub fn cancel_timer(&mut self, timer: TimerId) {
        let (key, _) = op::decode_user_data(timer.0);
        let Some(entry) = self.ops.get_mut_masked(key, op::generation_mask()) else {
            return;
        };
        if let OpBody::Timer {
            cancelled,
            purpose: TimerPurpose::Handler,
            ..
        } = &mut entry.body
        {
            if !*cancelled {
                *cancelled = true;
                self.backend.issue(
                    CANCEL_USER_DATA,
                    Prim::CancelOne {
                        target: timer.0,
                        fd: None,
                        timer: true,
                    },
                );
            }
        }
    }

    // ----- operation table -----

    /// Inserts and issues an operation; gives the body back if the table is
    /// full.
    fn start(&mut self, body: OpBody, counted: bool) -> Result<Key, OpBody> {
        let refs = body.file_refs();
        let key = self
            .ops
            .insert(OpEntry {
                body,
                parts: 0,
                counted,
            })
            .map_err(|entry| entry.body)?;
        if counted {
            self.handler_ops += 1;
        }
        for file in refs.into_iter().flatten() {
            if let Some(entry) = self.files.get_mut(file) {
                entry.ops += 1;
            }
        }
        self.issue(key);
        Ok(key)
    }

    /// Removes a finished operation, releasing its file references.
    fn finish(&mut self, key: Key) -> Option<OpBody> {
        let entry = self.ops.remove_masked(key, op::generation_mask())?;
        if entry.counted {
            self.handler_ops = self.handler_ops.saturating_sub(1);
        }
        for file in entry.body.file_refs().into_iter().flatten() {
            let Some(file_entry) = self.files.get_mut(file) else {
                continue;
            };
            file_entry.ops = file_entry.ops.saturating_sub(1);
            if file_entry.ops == 0 && file_entry.close_requested.is_some() {
                self.begin_close(file);
            }
        }
        Some(entry.body)
    }

    /// Hands the operation to the backend, or completes it here when the
    /// fault plan says so.
    fn issue(&mut self, key: Key) {
        let user_data = op::user_data(key, 0);
        let mask = op::generation_mask();
        let Some(entry) = self.ops.get_masked(key, mask) else {
            return;
        };
        let (kind, linked_sync) = match &entry.body {
            OpBody::Send { .. } => (Some(OpKind::Send), false),
            OpBody::Connect { .. } => (Some(OpKind::Connect), false),
            OpBody::Open { .. } => (Some(OpKind::Open), false),
            OpBody::Write(write) if write.written >= write.total => (Some(OpKind::Sync), false),
            OpBody::Write(write) => (Some(OpKind::Write), write.sync.is_some()),
            OpBody::Sync { .. } => (Some(OpKind::Sync), false),
            OpBody::Rename { .. } => (Some(OpKind::Rename), false),
            OpBody::MkDir { .. } => (Some(OpKind::MkDir), false),
            OpBody::Unlink { .. } => (Some(OpKind::Unlink), false),
            OpBody::Close { .. } => (Some(OpKind::Close), false),
            OpBody::Accept { .. } | OpBody::Recv { .. } | OpBody::Timer { .. } => (None, false),
        };
        let fault = kind.and_then(|kind| self.faults.decide(kind));
        let sync_fault = if linked_sync {
            self.faults.decide(OpKind::Sync)
        } else {
            None
        };

        let Self {
            ops,
            conns,
            listeners,
            backend,
            local,
            ..
        } = self;
        let Some(entry) = ops.get_mut_masked(key, mask) else {
            return;
        };
        let fail = |local: &mut VecDeque<Completion>, part: u64, errno: i32| {
            local.push_back(Completion::new(user_data + part, -errno, 0));
        };
        match &mut entry.body {
            OpBody::Accept { listener } => {
                entry.parts = 1;
                match listeners.get(*listener) {
                    Some(listener) => backend.issue(
                        user_data,
                        Prim::AcceptMulti {
                            fd: listener.fd.as_raw_fd(),
                        },
                    ),
                    None => fail(local, 0, libc::EBADF),
                }
            }
            OpBody::Recv { conn } => {
                entry.parts = 1;
                match conns.get(*conn) {
                    Some(conn) => backend.issue(
                        user_data,
                        Prim::RecvMulti {
                            fd: conn.fd.as_raw_fd(),
                        },
                    ),
                    None => fail(local, 0, libc::ECANCELED),
                }
            }
            OpBody::Send {
                conn, buf, sent, ..
            } => {
                entry.parts = 1;
                let remaining = buf.len().saturating_sub(*sent).min(TRANSFER_BYTES_MAX);
                let Some(conn) = conns.get(*conn) else {
                    return fail(local, 0, libc::ECANCELED);
                };
                let length = match fault {
                    Some(Fault::Errno(errno)) => return fail(local, 0, errno),
                    Some(Fault::Short) => short_length(remaining),
                    None => remaining,
                };
                // `sent < len`, so the pointer stays inside the buffer.
                let pointer = buf.as_ptr().wrapping_add(*sent);
                backend.issue(
                    user_data,
                    Prim::Send {
                        fd: conn.fd.as_raw_fd(),
                        pointer,
                        length: u32::try_from(length).unwrap_or(u32::MAX),
                    },
                );
            }
            OpBody::Connect { conn, address, .. } => {
                entry.parts = 1;
                let Some(conn) = conns.get(*conn) else {
                    return fail(local, 0, libc::ECANCELED);
                };
                if let Some(Fault::Errno(errno)) = fault {
                    return fail(local, 0, errno);
                }
                let prim = Prim::Connect {
                    fd: conn.fd.as_raw_fd(),
                    address: address.as_ptr().cast(),
                    length: address.len(),
                };
                backend.issue(user_data, prim);
            }
            OpBody::Open {
                path,
                dir_fd,
                flags,
                mode,
                ..
            } => {
                entry.parts = 1;
                if let Some(Fault::Errno(errno)) = fault {
                    return fail(local, 0, errno);
                }
                backend.issue(
                    user_data,
                    Prim::Open {
                        dir: *dir_fd,
                        path: path.as_ptr(),
                        flags: *flags,
                        mode: *mode,
                    },
                );
            }
            OpBody::Write(write) => {
                if write.written >= write.total {
                    // Everything is written; only the (cancelled) sync remains.
                    entry.parts = 1;
                    let kind = write.sync.unwrap_or(SyncKind::Data);
                    if let Some(Fault::Errno(errno)) = fault {
                        return fail(local, 1, errno);
                    }
                    return backend.issue(user_data + 1, Prim::Sync { fd: write.fd, kind });
                }
                entry.parts = if write.sync.is_some() { 2 } else { 1 };
                let remaining = write.iovecs.get(write.first..).unwrap_or_default();
                let count = u32::try_from(remaining.len()).unwrap_or(u32::MAX);
                let offset = write.offset + write.written;
                match fault {
                    Some(Fault::Errno(errno)) => {
                        fail(local, 0, errno);
                        if write.sync.is_some() {
                            fail(local, 1, libc::ECANCELED);
                        }
                    }
                    Some(Fault::Short) => {
                        // Truncate a copy of the remaining iovecs to about
                        // half; the kernel then writes fewer bytes than the
                        // write asked for, and the linked sync is cancelled,
                        // as a real short write in a chain does.
                        let mut budget = short_length(
                            usize::try_from(write.total - write.written).unwrap_or(usize::MAX),
                        );
                        write.fault_iovecs.clear();
                        for iovec in remaining {
                            if budget == 0 {
                                break;
                            }
                            let length = iovec.iov_len.min(budget);
                            budget -= length;
                            write.fault_iovecs.push(libc::iovec {
                                iov_base: iovec.iov_base,
                                iov_len: length,
                            });
                        }
                        let count = u32::try_from(write.fault_iovecs.len()).unwrap_or(u32::MAX);
                        let prim = Prim::Write {
                            fd: write.fd,
                            iovecs: write.fault_iovecs.as_ptr(),
                            count,
                            offset,
                            linked_sync: None,
                        };
                        backend.issue(user_data, prim);
                        if write.sync.is_some() {
                            fail(local, 1, libc::ECANCELED);
                        }
                    }
                    None => {
                        let linked_sync = if let Some(Fault::Errno(_)) = sync_fault {
                            None
                        } else {
                            write.sync
                        };
                        let prim = Prim::Write {
                            fd: write.fd,
                            iovecs: remaining.as_ptr(),
                            count,
                            offset,
                            linked_sync,
                        };
                        backend.issue(user_data, prim);
                        if let Some(Fault::Errno(errno)) = sync_fault {
                            fail(local, 1, errno);
                        }
                    }
                }
            }
            OpBody::Sync { fd, kind, .. } => {
                entry.parts = 1;
                if let Some(Fault::Errno(errno)) = fault {
                    return fail(local, 0, errno);
                }
                backend.issue(
                    user_data,
                    Prim::Sync {
                        fd: *fd,
                        kind: *kind,
                    },
                );
            }
            OpBody::Rename {
                old,
                new,
                old_dir_fd,
                new_dir_fd,
                ..
            } => {
                entry.parts = 1;
                if let Some(Fault::Errno(errno)) = fault {
                    return fail(local, 0, errno);
                }
                let prim = Prim::Rename {
                    old_dir: *old_dir_fd,
                    old: old.as_ptr(),
                    new_dir: *new_dir_fd,
                    new: new.as_ptr(),
                };
                backend.issue(user_data, prim);
            }
            OpBody::MkDir {
                path, dir_fd, mode, ..
            } => {
                entry.parts = 1;
                if let Some(Fault::Errno(errno)) = fault {
                    return fail(local, 0, errno);
                }
                backend.issue(
                    user_data,
                    Prim::MkDir {
                        dir: *dir_fd,
                        path: path.as_ptr(),
                        mode: *mode,
                    },
                );
            }
            OpBody::Unlink {
                path,
                dir_fd,
                remove_dir,
                ..
            } => {
                entry.parts = 1;
                if let Some(Fault::Errno(errno)) = fault {
                    return fail(local, 0, errno);
                }
                let flags = if *remove_dir { libc::AT_REMOVEDIR } else { 0 };
                backend.issue(
                    user_data,
                    Prim::Unlink {
                        dir: *dir_fd,
                        path: path.as_ptr(),
                        flags,
                    },
                );
            }
            OpBody::Close { fd, .. } => {
                entry.parts = 1;
                if let Some(Fault::Errno(errno)) = fault {
                    // The descriptor must still go away.
                    let _ = sys::close(*fd);
                    return fail(local, 0, errno);
                }
                backend.issue(user_data, Prim::Close { fd: *fd });
            }
            OpBody::Timer {
                timespec, deadline, ..
            } => {
                entry.parts = 1;
                backend.issue(
                    user_data,
                    Prim::Timer {
                        timespec: &raw const **timespec,
                        deadline: *deadline,
                    },
                );
            }
        }
    }

    // ----- completions -----

    /// Returns a buffer named by a completion nobody will consume.
    fn discard_buffer(&self, completion: &Completion) {
        if let Some(buffer_id) = completion.buffer_id() {
            let length = u32::try_from(completion.result.max(0)).unwrap_or(0);
            drop(self.pool.lease(buffer_id, length));
        }
    }

    fn complete(&mut self, completion: Completion) {
        if completion.user_data == CANCEL_USER_DATA {
            return;
        }
        let (key, part) = op::decode_user_data(completion.user_data);
        let Some(entry) = self.ops.get_mut_masked(key, op::generation_mask()) else {
            self.discard_buffer(&completion);
            tracing::debug!(
                user_data = completion.user_data,
                "completion for an unknown operation"
            );
            return;
        };
        /// Which completion logic applies once every part is in.
        enum Next {
            Send,
            Connect,
            Write,
            Timer,
            File,
        }
        let next = match &mut entry.body {
            OpBody::Accept { .. } => return self.on_accept(key, completion),
            OpBody::Recv { .. } => return self.on_recv(key, completion),
            OpBody::Write(write) => {
                if let Some(slot) = write.results.get_mut(usize::from(part)) {
                    *slot = Some(completion.result);
                }
                Next::Write
            }
            OpBody::Send { .. } => Next::Send,
            OpBody::Connect { .. } => Next::Connect,
            OpBody::Timer { .. } => Next::Timer,
            _ => Next::File,
        };
        entry.parts = entry.parts.saturating_sub(1);
        let parts_left = entry.parts;
        self.discard_buffer(&completion);
        if parts_left > 0 {
            return;
        }
        match next {
            Next::Send => self.on_send(key, completion.result),
            Next::Connect => self.on_connect(key, completion.result),
            Next::Write => self.on_write(key),
            Next::Timer => self.on_timer(key, completion.result),
            Next::File => self.on_file_op(key, completion.result),
        }
    }

    fn on_accept(&mut self, key: Key, completion: Completion) {
        let Some(OpEntry {
            body: OpBody::Accept { listener },
            ..
        }) = self.ops.get_masked(key, op::generation_mask())
        else {
            return;
        };
        let listener = *listener;
        if completion.result >= 0 {
            // SAFETY: a successful accept completion's result is a new
            // descriptor the kernel created for us.
            let fd = unsafe { adopt_fd(completion.result) };
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
            let body = OpBody::Timer {
                timespec: Box::new(Timespec::from(ACCEPT_RETRY_DELAY)),
                deadline: Instant::now() + ACCEPT_RETRY_DELAY,
                tag: 0,
                purpose: TimerPurpose::RearmAccept(listener),
                cancelled: false,
            };
            let _ = self.start(body, false);
        } else {
            self.arm_accept(listener);
        }
    }

    fn on_new_socket(&mut self, fd: OwnedFd, address_index: usize) {
        if self.shutting_down {
            return;
        }
        let _ = sys::set_socket_option(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        if self.limits.accept_mode == AcceptMode::SingleAcceptor && self.shared.cores.len() > 1 {
            let target = self.shared.least_loaded_core();
            if target != self.index {
                if let Some(core) = self.shared.cores.get(target) {
                    // Counted now so the next pick sees it.
                    core.connections.fetch_add(1, Ordering::Relaxed);
                    if core
                        .internal
                        .try_send(Internal::Adopt {
                            fd,
                            listener: address_index,
                        })
                        .is_ok()
                    {
                        core.wake.signal();
                    } else {
                        core.connections.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                return;
            }
        }
        self.accept_connection(fd, address_index, false);
    }

    fn accept_connection(&mut self, fd: OwnedFd, address_index: usize, precounted: bool) {
        if precounted {
            self.shared
                .cores
                .get(self.index)
                .map(|core| core.connections.fetch_sub(1, Ordering::Relaxed));
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

    fn add_connection(&mut self, fd: OwnedFd, state: ConnState) -> Result<Key, OwnedFd> {
        let key = self
            .conns
            .insert(Conn::new(fd, state))
            .map_err(|conn| conn.fd)?;
        if let Some(core) = self.shared.cores.get(self.index) {
            core.connections.fetch_add(1, Ordering::Relaxed);
        }
        Ok(key)
    }

    fn remove_connection(&mut self, conn: Key) {
        if let Some(entry) = self.conns.remove(conn) {
            self.backend.forget_socket(entry.fd.as_raw_fd());
            drop(entry);
            if let Some(core) = self.shared.cores.get(self.index) {
                core.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn arm_accept(&mut self, listener: usize) {
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

    fn arm_recv(&mut self, conn: Key) {
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        if entry.recv_op.is_some() || entry.state != ConnState::Open {
            return;
        }
        if let Ok(key) = self.start(OpBody::Recv { conn }, false) {
            if let Some(entry) = self.conns.get_mut(conn) {
                entry.recv_op = Some(key);
                entry.recv_cancel_requested = false;
                entry.starved = false;
                entry.ops += 1;
            }
        }
    }

    fn on_recv(&mut self, key: Key, completion: Completion) {
        let Some(OpEntry {
            body: OpBody::Recv { conn },
            ..
        }) = self.ops.get_masked(key, op::generation_mask())
        else {
            return;
        };
        let conn = *conn;
        if completion.result > 0 {
            let leased = completion.buffer_id().and_then(|buffer_id| {
                self.pool
                    .lease(buffer_id, u32::try_from(completion.result).unwrap_or(0))
            });
            match leased {
                Some(data) => self.deliver_received(conn, data),
                None => tracing::error!(
                    core = self.index,
                    "receive completion without a valid buffer"
                ),
            }
        } else {
            self.discard_buffer(&completion);
        }
        if completion.more() {
            return;
        }
        self.finish(key);
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        entry.recv_op = None;
        entry.recv_cancel_requested = false;
        entry.ops = entry.ops.saturating_sub(1);
        let open = entry.state == ConnState::Open && !self.shutting_down;
        let wanted = entry.recv_wanted && !entry.recv_ended;
        match completion.result {
            0 => self.end_recv(conn, Ok(())),
            result if result > 0 || result == -libc::ECANCELED => {
                if open && wanted {
                    self.arm_recv(conn);
                }
            }
            result if result == -libc::ENOBUFS => {
                if open {
                    entry.starved = true;
                    self.starved.push_back(conn);
                }
            }
            result => self.end_recv(conn, Err(IoError::new(OpKind::Recv, -result))),
        }
        self.maybe_finish_close(conn);
    }

    fn deliver_received(&mut self, conn: Key, data: RecvBuf) {
        let quickack = self.limits.quickack_after_recv;
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        if entry.state != ConnState::Open || self.shutting_down {
            return;
        }
        if entry.recv_wanted && entry.backlog.is_empty() {
            if quickack {
                let _ = sys::set_socket_option(
                    entry.fd.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    1,
                );
            }
            self.push_event(Event::Received {
                conn: ConnId(conn),
                data,
            });
        } else {
            entry.backlog.push_back(data);
        }
    }

    fn end_recv(&mut self, conn: Key, result: Result<(), IoError>) {
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        if entry.recv_ended || entry.state == ConnState::Closing {
            return;
        }
        entry.recv_ended = true;
        if entry.recv_wanted && entry.backlog.is_empty() {
            self.push_event(Event::RecvEnded {
                conn: ConnId(conn),
                result,
            });
        } else {
            entry.pending_end = Some(result);
        }
    }

    fn on_send(&mut self, key: Key, result: i32) {
        let Some(OpEntry {
            body: OpBody::Send { buf, sent, .. },
            ..
        }) = self.ops.get_mut_masked(key, op::generation_mask())
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
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        entry.send_op = None;
        entry.ops = entry.ops.saturating_sub(1);
        if entry.state == ConnState::Open {
            let failed: Vec<u64> = match outcome {
                Err(_) => entry.send_queue.drain(..).map(|(_, tag)| tag).collect(),
                Ok(()) => Vec::new(),
            };
            let next = if outcome.is_ok() {
                entry.send_queue.pop_front()
            } else {
                None
            };
            self.push_event(Event::Sent {
                conn: ConnId(conn),
                tag,
                result: outcome,
            });
            for tag in failed {
                self.push_event(Event::Sent {
                    conn: ConnId(conn),
                    tag,
                    result: outcome,
                });
            }
            if let Some((buf, tag)) = next {
                self.start_send(conn, buf, tag);
            }
        }
        self.maybe_finish_close(conn);
    }

    fn on_connect(&mut self, key: Key, result: i32) {
        let Some(OpBody::Connect { conn, tag, .. }) = self.finish(key) else {
            return;
        };
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        entry.ops = entry.ops.saturating_sub(1);
        if entry.state == ConnState::Closing || self.shutting_down {
            return self.maybe_finish_close(conn);
        }
        if result == 0 {
            entry.state = ConnState::Open;
            let next = entry.send_queue.pop_front();
            self.arm_recv(conn);
            self.push_event(Event::Connected {
                conn: ConnId(conn),
                tag,
                result: Ok(()),
            });
            if let Some((buf, tag)) = next {
                self.start_send(conn, buf, tag);
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

    fn on_write(&mut self, key: Key) {
        let Some(OpEntry {
            body: OpBody::Write(write),
            ..
        }) = self.ops.get_mut_masked(key, op::generation_mask())
        else {
            return;
        };
        let write_result = write.results[0].take();
        let sync_result = write.results[1].take();
        let failure = match (write_result, sync_result) {
            (Some(result), _) if result < 0 => Some(IoError::new(OpKind::Write, -result)),
            (_, Some(result)) if result < 0 && result != -libc::ECANCELED => {
                // An fsync error is final: never retried into a success.
                Some(IoError::new(OpKind::Sync, -result))
            }
            (Some(0), _) if write.written < write.total => {
                Some(IoError::new(OpKind::Write, libc::EIO))
            }
            _ => None,
        };
        if failure.is_none() {
            if let Some(bytes) = write_result {
                write.advance(bytes as u64);
            }
            let needs_sync = write.sync.is_some() && sync_result != Some(0);
            if (write.written < write.total || needs_sync) && self.shutting_down {
                // Cancelled by shutdown: report it, do not resubmit.
                let op = if write.written < write.total {
                    OpKind::Write
                } else {
                    OpKind::Sync
                };
                let Some(OpBody::Write(write)) = self.finish(key) else {
                    return;
                };
                let result = Err(IoError::new(op, libc::ECANCELED));
                return self.push_event(Event::Written {
                    file: FileHandle(write.file),
                    tag: write.tag,
                    result,
                });
            }
            if write.written < write.total || needs_sync {
                // Short write (its linked sync was cancelled), or the sync
                // alone was cancelled: resubmit what remains.
                return self.issue(key);
            }
        }
        let total = write.total;
        let Some(OpBody::Write(write)) = self.finish(key) else {
            return;
        };
        let result = failure.map_or(Ok(total), Err);
        self.push_event(Event::Written {
            file: FileHandle(write.file),
            tag: write.tag,
            result,
        });
    }

    fn on_timer(&mut self, key: Key, result: i32) {
        let Some(OpBody::Timer {
            tag,
            purpose,
            cancelled,
            ..
        }) = self.finish(key)
        else {
            return;
        };
        match purpose {
            TimerPurpose::Handler => {
                if !cancelled && result == -libc::ETIME {
                    self.push_event(Event::TimerFired { tag });
                }
            }
            TimerPurpose::RearmAccept(listener) => {
                if !self.shutting_down {
                    self.arm_accept(listener);
                }
            }
        }
    }

    fn on_file_op(&mut self, key: Key, result: i32) {
        let Some(body) = self.finish(key) else { return };
        let outcome = |op: OpKind| {
            if result < 0 {
                Err(IoError::new(op, -result))
            } else {
                Ok(())
            }
        };
        let event = match body {
            OpBody::Open { tag, .. } => {
                let result = if result < 0 {
                    Err(IoError::new(OpKind::Open, -result))
                } else {
                    // SAFETY: a successful open completion's result is a new
                    // descriptor the kernel created for us.
                    let fd = unsafe { adopt_fd(result) };
                    self.files
                        .insert(FileEntry {
                            fd,
                            ops: 0,
                            close_requested: None,
                        })
                        .map(FileHandle)
                        .map_err(|_| IoError::new(OpKind::Open, libc::EMFILE))
                };
                Event::Opened { tag, result }
            }
            OpBody::Sync { file, tag, .. } => Event::Synced {
                file: FileHandle(file),
                tag,
                result: outcome(OpKind::Sync),
            },
            OpBody::Rename { tag, .. } => Event::Renamed {
                tag,
                result: outcome(OpKind::Rename),
            },
            OpBody::MkDir { tag, .. } => Event::DirCreated {
                tag,
                result: outcome(OpKind::MkDir),
            },
            OpBody::Unlink { tag, .. } => Event::Unlinked {
                tag,
                result: outcome(OpKind::Unlink),
            },
            OpBody::Close { tag, .. } => Event::FileClosed {
                tag,
                result: outcome(OpKind::Close),
            },
            _ => return,
        };
        self.push_event(event);
    }

    fn maybe_finish_close(&mut self, conn: Key) {
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        if entry.state != ConnState::Closing || entry.ops > 0 {
            return;
        }
        self.remove_connection(conn);
        self.push_event(Event::ConnClosed { conn: ConnId(conn) });
    }

    fn push_event(&mut self, event: Event) {
        if !self.shutting_down {
            self.events.push_back(event);
        }
    }

    // ----- the loop -----

    fn wake(&self) -> Option<&Arc<WakeSignal>> {
        self.shared.cores.get(self.index).map(|core| &core.wake)
    }

    fn drain_internal(&mut self) {
        while let Ok(message) = self.internal.try_recv() {
            match message {
                Internal::Adopt { fd, listener } => {
                    if self.shutting_down {
                        self.shared
                            .cores
                            .get(self.index)
                            .map(|core| core.connections.fetch_sub(1, Ordering::Relaxed));
                        continue;
                    }
                    self.accept_connection(fd, listener, true);
                }
            }
        }
    }

    /// Re-arms receives that stopped for lack of buffers, once enough came
    /// back (a low-water mark, so a nearly empty pool does not thrash).
    fn rearm_starved(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        let low_water = (u32::from(self.pool.count()) / 8).max(1);
        if !self.pool.take_released_flag() && self.pool.free_count() < low_water {
            return;
        }
        while self.pool.free_count() >= low_water {
            let Some(conn) = self.starved.pop_front() else {
                break;
            };
            let Some(entry) = self.conns.get_mut(conn) else {
                continue;
            };
            if !entry.starved {
                continue;
            }
            entry.starved = false;
            if entry.recv_wanted && !entry.recv_ended {
                self.arm_recv(conn);
            }
        }
    }

    /// Waits for completions (if `block`) and processes them. With a
    /// handler, each completion's events are delivered before the next
    /// completion is processed, so a received buffer goes back to the pool
    /// as soon as the handler drops it (a batch of thousands of completions
    /// must not hold thousands of buffers at once).
    fn poll_and_process<H: Handler>(
        &mut self,
        block: bool,
        timeout: Option<Duration>,
        mut handler: Option<&mut H>,
    ) -> std::io::Result<()> {
        let mut completions = std::mem::take(&mut self.completions);
        let block = block && self.local.is_empty();
        let result = self.backend.wait(&mut completions, block, timeout);
        completions.extend(self.local.drain(..));
        for completion in completions.drain(..) {
            self.complete(completion);
            if let Some(handler) = handler.as_deref_mut() {
                self.deliver(handler);
            }
        }
        self.completions = completions;
        result.map(drop)
    }

    fn deliver<H: Handler>(&mut self, handler: &mut H) {
        while let Some(event) = self.events.pop_front() {
            if let Some(event) = self.still_deliverable(event) {
                handler.on_event(self, event);
            }
        }
    }

    /// Events were queued in order, but the handler may have paused or
    /// closed a connection while earlier ones were being delivered: a
    /// paused connection's data goes back to its backlog (in order, ahead of
    /// anything newer) and a closing connection's events are dropped, so the
    /// guarantees of `pause_recv` and `close_connection` hold.
    fn still_deliverable(&mut self, event: Event) -> Option<Event> {
        let conn = match &event {
            Event::Received { conn, .. }
            | Event::RecvEnded { conn, .. }
            | Event::Sent { conn, .. }
            | Event::Accepted { conn, .. } => *conn,
            Event::Connected {
                conn,
                result: Ok(()),
                ..
            } => *conn,
            _ => return Some(event),
        };
        let entry = self.conns.get_mut(conn.0)?;
        if entry.state == ConnState::Closing {
            return None;
        }
        let held = !entry.recv_wanted || !entry.backlog.is_empty() || entry.pending_end.is_some();
        match event {
            Event::Received { data, .. } if held => {
                entry.backlog.push_back(data);
                None
            }
            Event::RecvEnded { result, .. } if held => {
                entry.pending_end = Some(result);
                None
            }
            event => Some(event),
        }
    }

    fn arm_listeners(&mut self) {
        for listener in 0..self.listeners.len() {
            self.arm_accept(listener);
        }
    }

    /// Cancels everything and waits for every operation's final completion
    /// (at most `drain_max`), then closes every descriptor.
    fn drain_for_shutdown(&mut self) {
        self.shutting_down = true;
        self.events.clear();
        self.backend.set_draining();
        for key in self.conns.keys() {
            if let Some(entry) = self.conns.get_mut(key) {
                entry.state = ConnState::Closing;
                entry.send_queue.clear();
                entry.backlog.clear();
            }
        }
        let deadline = Instant::now() + self.limits.drain_max;
        let mut cancelled_at: Option<Instant> = None;
        while self.ops.len() > 0 || self.backend.wake_in_flight() || !self.local.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if cancelled_at.is_none_or(|at| now.duration_since(at) >= DRAIN_POLL_INTERVAL) {
                self.backend.issue(CANCEL_USER_DATA, Prim::CancelAll);
                cancelled_at = Some(now);
            }
            if let Err(error) =
                self.poll_and_process::<NoHandler>(true, Some(DRAIN_POLL_INTERVAL), None)
            {
                tracing::error!(core = self.index, %error, "waiting for completions failed during shutdown");
                break;
            }
        }
        if self.ops.len() > 0 {
            tracing::error!(
                core = self.index,
                operations = self.ops.len(),
                waited = ?self.limits.drain_max,
                "operations did not drain at shutdown; leaking the memory they reference"
            );
            std::mem::forget(Rc::clone(&self.pool));
            std::mem::forget(std::mem::replace(&mut self.ops, Slab::new(0)));
        }
        while let Ok(Internal::Adopt { .. }) = self.internal.try_recv() {}
        for key in self.conns.keys() {
            self.remove_connection(key);
        }
        drop(self.files.drain());
        self.listeners.clear();
    }
}

/// Stands in for "no handler" while draining at shutdown.
struct NoHandler;

impl Handler for NoHandler {
    type Message = ();
    fn on_event(&mut self, _core: &mut Core, _event: Event) {}
}

/// Runs a core until shutdown: the event loop.
pub(crate) fn run_core<H: Handler>(mut core: Core, mut handler: H, mailbox: &Receiver<H::Message>) {
    core.arm_listeners();
    handler.on_start(&mut core);
    loop {
        core.deliver(&mut handler);
        if core.shared.is_shutdown_requested() {
            break;
        }
        // Clear the wake flag before looking at the queues: a message sent
        // after this point signals the eventfd again (see `WakeSignal`).
        if let Some(wake) = core.wake() {
            wake.clear();
        }
        core.drain_internal();
        let mut messages_left = core.limits.mailbox_batch_max;
        while messages_left > 0 {
            let Ok(message) = mailbox.try_recv() else {
                break;
            };
            messages_left -= 1;
            handler.on_message(&mut core, message);
            core.deliver(&mut handler);
        }
        core.rearm_starved();
        let block = core.events.is_empty() && mailbox.is_empty() && core.internal.is_empty();
        if let Err(error) = core.poll_and_process(block, None, Some(&mut handler)) {
            tracing::error!(core = core.index, %error, "core event loop failed; shutting the runtime down");
            core.shared.request_shutdown();
        }
    }
    handler.on_shutdown(&mut core);
    core.drain_for_shutdown();
    // The handler may hold receive buffers; drop it before the core.
    drop(handler);
    drop(core);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_costs_well_under_a_kib() {
        // An idle connection holds its table entry and the entry of its armed
        // receive (plus the slab's generation words); no buffer, no task.
        let idle_bytes = size_of::<Conn>() + size_of::<OpEntry>() + 2 * size_of::<u64>();
        assert!(
            idle_bytes <= 512,
            "idle connection costs {idle_bytes} bytes"
        );
    }
}
