//! The portable backend: epoll (edge-triggered) for sockets on the core
//! thread, and a small bounded pool of helper threads for file calls.
//!
//! It reports completions exactly as io_uring would (see `backend/op.rs`), so the
//! core's logic above it is shared. Sockets are non-blocking; a readable
//! socket is read into pool buffers until `EAGAIN` (at most
//! `READS_PER_READINESS` buffers per turn, for fairness), and an empty pool
//! ends the receive with `ENOBUFS`, like an io_uring multishot receive.
//!
//! File calls block, so they go to the helper threads of `file_pool`.

mod file_pool;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::backend::op::{buffer_flags, Completion, Prim, FLAG_MORE};
use crate::buf::Pool;
use crate::sys;
use crate::wake::WakeSignal;

pub(crate) use self::file_pool::{FileJob, FilePool};

/// Buffers read from one socket per readiness before others get a turn.
const READS_PER_READINESS: usize = 16;
/// Connections accepted per readiness before others get a turn.
const ACCEPTS_PER_READINESS: usize = 64;
/// epoll events fetched per wait.
const EPOLL_EVENTS_PER_WAIT: usize = 1024;
/// The epoll token of the wake eventfd (socket tokens are their fds).
const WAKE_TOKEN: u64 = u64::MAX;

struct PendingSend {
    user_data: u64,
    pointer: *const u8,
    length: u32,
}

#[derive(Default)]
struct SocketState {
    registered: bool,
    readable: bool,
    accept: Option<u64>,
    recv: Option<u64>,
    send: Option<PendingSend>,
    connect: Option<u64>,
}

pub(crate) struct PortableBackend {
    epoll: OwnedFd,
    pool: Rc<Pool>,
    wake: Arc<WakeSignal>,
    sockets: HashMap<RawFd, SocketState>,
    ready_again: Vec<RawFd>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    live_timers: HashSet<u64>,
    local: Vec<Completion>,
    file_jobs: Sender<FileJob>,
    reply_sender: Sender<Completion>,
    replies: Receiver<Completion>,
    events: Vec<libc::epoll_event>,
}

impl std::fmt::Debug for PortableBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableBackend")
            .field("sockets", &self.sockets.len())
            .finish()
    }
}

impl PortableBackend {
    pub fn new(
        buffer_size_bytes: u32,
        buffer_count: u16,
        wake: Arc<WakeSignal>,
        file_jobs: Sender<FileJob>,
        reply_capacity: usize,
    ) -> std::io::Result<(PortableBackend, Rc<Pool>)> {
        let epoll = sys::epoll_create()?;
        sys::epoll_add(
            &epoll,
            wake.fd().as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )
        .map_err(std::io::Error::from_raw_os_error)?;
        let pool = Pool::with_list(buffer_size_bytes, buffer_count)?;
        let (reply_sender, replies) = crossbeam_channel::bounded(reply_capacity);
        let backend = PortableBackend {
            epoll,
            pool: Rc::clone(&pool),
            wake,
            sockets: HashMap::new(),
            ready_again: Vec::new(),
            timers: BinaryHeap::new(),
            live_timers: HashSet::new(),
            local: Vec::new(),
            file_jobs,
            reply_sender,
            replies,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS_PER_WAIT],
        };
        Ok((backend, pool))
    }

    fn register(&mut self, fd: RawFd) -> &mut SocketState {
        let epoll = &self.epoll;
        let state = self.sockets.entry(fd).or_default();
        if !state.registered {
            let interest =
                (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
            // Registration fails only for a descriptor epoll cannot watch;
            // the operation then sees the error from its own system call.
            let _ = sys::epoll_add(epoll, fd, interest, fd as u64);
            state.registered = true;
        }
        state
    }

    /// The core is about to close `fd`: forget it (its operations were
    /// cancelled or completed already).
    pub fn forget_socket(&mut self, fd: RawFd) {
        if let Some(state) = self.sockets.remove(&fd) {
            if state.registered {
                sys::epoll_delete(&self.epoll, fd);
            }
        }
        self.ready_again.retain(|&ready| ready != fd);
    }

    pub fn issue(&mut self, user_data: u64, prim: Prim) {
        match prim {
            Prim::AcceptMulti { fd } => {
                let state = self.register(fd);
                state.accept = Some(user_data);
                // Edge-triggered: connections may already be waiting.
                self.ready_again.push(fd);
            }
            Prim::RecvMulti { fd } => {
                let state = self.register(fd);
                state.recv = Some(user_data);
                if state.readable {
                    self.ready_again.push(fd);
                }
            }
            Prim::Recv { .. } => {
                // `Core::recv_into` refuses this backend before issuing.
                self.local
                    .push(Completion::new(user_data, -libc::EOPNOTSUPP, 0));
            }
            Prim::Chain { steps } => {
                // `Core::send_file` refuses this backend before issuing.
                for part in 0..steps.len() as u64 {
                    self.local
                        .push(Completion::new(user_data + part, -libc::EOPNOTSUPP, 0));
                }
            }
            Prim::Send {
                fd,
                pointer,
                length,
            } => {
                self.register(fd);
                self.try_send(
                    fd,
                    PendingSend {
                        user_data,
                        pointer,
                        length,
                    },
                );
            }
            Prim::Connect {
                fd,
                address,
                length,
            } => {
                // SAFETY: `address` points at the boxed socket address of the
                // connect's table entry, `length` bytes long.
                let outcome = unsafe { sys::connect(fd, address, length) };
                match outcome {
                    Ok(()) => self.local.push(Completion::new(user_data, 0, 0)),
                    Err(libc::EINPROGRESS) => {
                        let state = self.register(fd);
                        state.connect = Some(user_data);
                    }
                    Err(errno) => self.local.push(Completion::new(user_data, -errno, 0)),
                }
            }
            Prim::Timer { deadline, .. } => {
                self.timers.push(Reverse((deadline, user_data)));
                self.live_timers.insert(user_data);
            }
            Prim::CancelOne { target, fd, timer } => {
                if timer {
                    if self.live_timers.remove(&target) {
                        self.local
                            .push(Completion::new(target, -libc::ECANCELED, 0));
                    }
                } else if let Some(state) = fd.and_then(|fd| self.sockets.get_mut(&fd)) {
                    cancel_matching(state, Some(target), &mut self.local);
                }
            }
            Prim::CancelFd { fd } => {
                if let Some(state) = self.sockets.get_mut(&fd) {
                    cancel_matching(state, None, &mut self.local);
                }
            }
            Prim::CancelAll => {
                for state in self.sockets.values_mut() {
                    cancel_matching(state, None, &mut self.local);
                }
                for user_data in self.live_timers.drain() {
                    self.local
                        .push(Completion::new(user_data, -libc::ECANCELED, 0));
                }
                self.timers.clear();
            }
            file_prim => {
                let job = FileJob::new(
                    user_data,
                    file_prim,
                    self.reply_sender.clone(),
                    Arc::clone(&self.wake),
                );
                if let Err(error) = self.file_jobs.try_send(job) {
                    // Cannot happen while the queue is sized for every core's
                    // in-flight maximum; report it rather than block.
                    let linked = error.into_inner().has_linked_sync();
                    self.local
                        .push(Completion::new(user_data, -libc::EAGAIN, 0));
                    if linked {
                        self.local
                            .push(Completion::new(user_data + 1, -libc::ECANCELED, 0));
                    }
                }
            }
        }
    }

    fn try_send(&mut self, fd: RawFd, pending: PendingSend) {
        // SAFETY: `pointer..pointer+length` is inside the send's buffer, held
        // by its table entry until this operation completes.
        let outcome = unsafe { sys::send(fd, pending.pointer, pending.length as usize) };
        match outcome {
            Ok(bytes) => self.local.push(Completion::new(
                pending.user_data,
                i32::try_from(bytes).unwrap_or(i32::MAX),
                0,
            )),
            Err(libc::EAGAIN | libc::EINTR) => {
                if let Some(state) = self.sockets.get_mut(&fd) {
                    state.send = Some(pending);
                }
            }
            Err(errno) => self
                .local
                .push(Completion::new(pending.user_data, -errno, 0)),
        }
    }

    /// Waits (if `block`, at most `timeout`) for readiness, performs the
    /// socket calls, collects helper completions and fired timers into
    /// `out`. Returns whether the wake eventfd fired.
    pub fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> std::io::Result<bool> {
        out.append(&mut self.local);
        out.extend(self.replies.try_iter());
        for fd in std::mem::take(&mut self.ready_again) {
            self.on_readable(fd, out);
        }
        out.append(&mut self.local);
        let now = Instant::now();
        let timeout_ms = if !out.is_empty() || !self.ready_again.is_empty() || !block {
            0
        } else {
            let until_timer = self
                .timers
                .peek()
                .map(|Reverse((deadline, _))| deadline.saturating_duration_since(now));
            let wait = match (until_timer, timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Round up so a timer is never polled early in a busy loop.
            wait.map_or(-1, |wait| {
                i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            })
        };
        let mut woken = false;
        let mut events = std::mem::take(&mut self.events);
        let count = match sys::epoll_wait(&self.epoll, &mut events, timeout_ms) {
            Ok(count) => count,
            Err(libc::EINTR) => 0,
            Err(errno) => {
                self.events = events;
                return Err(std::io::Error::from_raw_os_error(errno));
            }
        };
        for event in events.iter().take(count) {
            let (token, flags) = (event.u64, event.events);
            if token == WAKE_TOKEN {
                woken = true;
                sys::eventfd_drain(self.wake.fd().as_raw_fd());
                continue;
            }
            let Ok(fd) = RawFd::try_from(token) else {
                continue;
            };
            let readable =
                (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            let writable = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if flags & writable != 0 {
                self.on_writable(fd, out);
            }
            if flags & readable != 0 {
                if let Some(state) = self.sockets.get_mut(&fd) {
                    state.readable = true;
                }
                self.on_readable(fd, out);
            }
        }
        self.events = events;
        let now = Instant::now();
        while let Some(Reverse((deadline, user_data))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            if self.live_timers.remove(&user_data) {
                out.push(Completion::new(user_data, -libc::ETIME, 0));
            }
        }
        out.extend(self.replies.try_iter());
        out.append(&mut self.local);
        Ok(woken)
    }

    fn on_writable(&mut self, fd: RawFd, out: &mut Vec<Completion>) {
        let Some(state) = self.sockets.get_mut(&fd) else {
            return;
        };
        if let Some(user_data) = state.connect.take() {
            let errno = sys::socket_error(fd);
            out.push(Completion::new(user_data, -errno, 0));
        }
        if let Some(pending) = state.send.take() {
            self.try_send(fd, pending);
        }
    }

    fn on_readable(&mut self, fd: RawFd, out: &mut Vec<Completion>) {
        let Some(state) = self.sockets.get_mut(&fd) else {
            return;
        };
        if let Some(user_data) = state.accept {
            for turn in 0..=ACCEPTS_PER_READINESS {
                if turn == ACCEPTS_PER_READINESS {
                    self.ready_again.push(fd);
                    break;
                }
                match sys::accept(fd) {
                    Ok(accepted) => out.push(Completion::new(
                        user_data,
                        accepted.into_raw_fd(),
                        FLAG_MORE,
                    )),
                    Err(libc::EAGAIN) => break,
                    Err(libc::EINTR | libc::ECONNABORTED) => continue,
                    Err(errno) => {
                        // Final, like a failed io_uring multishot accept; the
                        // core re-arms after a pause (EMFILE would spin).
                        state.accept = None;
                        out.push(Completion::new(user_data, -errno, 0));
                        break;
                    }
                }
            }
            return;
        }
        let Some(user_data) = state.recv else { return };
        if !state.readable {
            return;
        }
        let buffer_size = self.pool.buffer_size_bytes();
        for turn in 0..=READS_PER_READINESS {
            if turn == READS_PER_READINESS {
                self.ready_again.push(fd);
                break;
            }
            let Some(buffer_id) = self.pool.take_for_receive() else {
                // Pool exhausted: end the receive like io_uring does; the
                // core re-arms it when buffers come back (backpressure).
                state.recv = None;
                out.push(Completion::new(user_data, -libc::ENOBUFS, 0));
                break;
            };
            let pointer = self.pool.buffer_pointer(buffer_id);
            // SAFETY: the buffer was just taken from the free list, so nothing
            // else references it; it is `buffer_size` bytes long.
            let outcome = unsafe { sys::recv(fd, pointer, buffer_size as usize) };
            match outcome {
                Ok(0) => {
                    self.pool.untake(buffer_id);
                    state.recv = None;
                    out.push(Completion::new(user_data, 0, 0));
                    break;
                }
                Ok(bytes) => {
                    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
                    out.push(Completion::new(
                        user_data,
                        bytes,
                        buffer_flags(buffer_id, true),
                    ));
                }
                Err(libc::EAGAIN) => {
                    self.pool.untake(buffer_id);
                    state.readable = false;
                    break;
                }
                Err(libc::EINTR) => self.pool.untake(buffer_id),
                Err(errno) => {
                    self.pool.untake(buffer_id);
                    state.recv = None;
                    out.push(Completion::new(user_data, -errno, 0));
                    break;
                }
            }
        }
    }
}

/// Cancels the socket operations of `state` (all, or only `target`).
fn cancel_matching(state: &mut SocketState, target: Option<u64>, local: &mut Vec<Completion>) {
    let matches = |user_data: u64| target.is_none_or(|target| target == user_data);
    let mut cancel = |slot: &mut Option<u64>| {
        if let Some(user_data) = slot.filter(|&user_data| matches(user_data)) {
            *slot = None;
            local.push(Completion::new(user_data, -libc::ECANCELED, 0));
        }
    };
    cancel(&mut state.accept);
    cancel(&mut state.recv);
    cancel(&mut state.connect);
    if let Some(pending) = state.send.take() {
        if matches(pending.user_data) {
            local.push(Completion::new(pending.user_data, -libc::ECANCELED, 0));
        } else {
            state.send = Some(pending);
        }
    }
}
