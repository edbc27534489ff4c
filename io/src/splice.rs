//! Sending a file's bytes on a connection without copying them through
//! user space: io_uring's `IORING_OP_SPLICE` from the file into a pipe the
//! connection owns, and from the pipe into the socket.
//!
//! What is sent is a [`FileSend`]: a stream of pieces, each some bytes the
//! caller gives (a DIMSE command, the 12 header bytes of a P-DATA-TF PDU)
//! followed by a run of the file (that PDU's value), the runs following
//! one another in the file from the send's offset. The runtime turns it
//! into linked chains of submissions, each at most a pipe-full:
//!
//! ```text
//! WRITE pipe <- bytes   (a header, copied: a few bytes)
//! SPLICE file -> pipe   (the value: page-cache pages referenced, not copied)
//! WRITE pipe <- bytes
//! SPLICE file -> pipe
//! ...
//! SPLICE pipe -> socket (everything the chain put in the pipe, one send)
//! ```
//!
//! so the socket sees the bytes in order, as one stream, and the pages of
//! the file go to the socket's buffers by reference (TCP takes spliced
//! pages without copying them). Splices run in the ring's io-wq workers
//! (the kernel does not issue them inline); the chain is one hop there.
//!
//! A chain that breaks (a short or failed link cancels the rest with
//! `ECANCELED`, a pipe fuller than counted answers `EAGAIN`) is picked up
//! from what its completions say went where: the bytes in the pipe go to
//! the socket first, then filling goes on from the first byte not in the
//! pipe. A real error ends the send; the connection's pipe is then dropped
//! (its contents are a broken stream) and made again for the next send.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::slab::Key;

/// What a connection's pipe is sized to (`F_SETPIPE_SZ`); the kernel may
/// give less (an unprivileged user over `pipe-user-pages-soft`), and then
/// the pipe it gives is used.
pub(crate) const PIPE_BYTES: usize = 1 << 20;

/// Submissions in one chain at most (part numbers are 8 bits; the ring's
/// submission queue must hold a chain whole).
pub(crate) const CHAIN_STEPS_MAX: usize = 64;

/// A piece of a [`FileSend`]: `inline` bytes of its own, then `file` bytes
/// of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    inline: u32,
    file: u32,
}

/// Bytes to send on a connection, partly from a file ([`Core::send_file`](crate::Core::send_file)):
/// pieces of the caller's bytes and runs of the file, in order; the runs
/// are consecutive in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSend {
    inline: Vec<u8>,
    pieces: Vec<Piece>,
    file_bytes: u64,
}

impl FileSend {
    /// An empty send.
    pub fn new() -> FileSend {
        FileSend::default()
    }

    /// Appends bytes of the caller's (copied into the send).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        match self.pieces.last_mut() {
            Some(last) if last.file == 0 => last.inline = last.inline.saturating_add(length),
            _ => self.pieces.push(Piece {
                inline: length,
                file: 0,
            }),
        }
        self.inline.extend_from_slice(bytes);
    }

    /// Appends the file's next `length` bytes.
    pub fn push_file(&mut self, length: u32) {
        if length == 0 {
            return;
        }
        match self.pieces.last_mut() {
            Some(last) if last.file == 0 => last.file = length,
            _ => self.pieces.push(Piece {
                inline: 0,
                file: length,
            }),
        }
        self.file_bytes += u64::from(length);
    }

    /// Bytes of the file it sends.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Every byte it sends.
    pub fn len(&self) -> u64 {
        self.inline.len() as u64 + self.file_bytes
    }

    /// Whether it sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's pipe (both ends non-blocking: a pipe fuller than counted
/// answers `EAGAIN` instead of stalling the chain).
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity in bytes (`F_GETPIPE_SZ`).
    bytes: usize,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe").field("bytes", &self.bytes).finish()
    }
}

impl Pipe {
    /// A pipe of `wanted` bytes, or whatever the kernel allows.
    pub(crate) fn new(wanted: usize) -> std::io::Result<Pipe> {
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the live local array.
        let result = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if result < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created for this process and
        // nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let wanted = libc::c_int::try_from(wanted).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own, with an integer argument.
        // Refused (EPERM over the per-user limit): the default size stays.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted) };
        // SAFETY: as above, no argument.
        let bytes = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let bytes = usize::try_from(bytes).map_err(|_| std::io::Error::last_os_error())?;
        Ok(Pipe { read, write, bytes })
    }

    /// Its capacity in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub(crate) fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
}

/// The size of a page (what a pipe's slots hold at most).
fn page_size() -> u64 {
    // SAFETY: plain system call without pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|&size| size > 0)
        .unwrap_or(4096)
}

/// One submission of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `length` of the send's own bytes from `at`, written into the pipe.
    Inline { at: usize, length: u32 },
    /// `length` bytes of the file from `offset`, spliced into the pipe.
    File { offset: u64, length: u32 },
    /// `length` bytes spliced from the pipe into the socket; `more`: the
    /// send goes on after them (`SPLICE_F_MORE`).
    Out { length: u32, more: bool },
}

impl Step {
    fn length(&self) -> u32 {
        match *self {
            Step::Inline { length, .. } | Step::File { length, .. } | Step::Out { length, .. } => {
                length
            }
        }
    }
}

/// Where a send stands in its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    /// The piece of the next byte to put in the pipe.
    piece: usize,
    /// Bytes of that piece already in the pipe.
    within: u64,
    /// Inline bytes of the pieces before it.
    inline_before: usize,
    /// File bytes of the pieces before it.
    file_before: u64,
}

/// A [`FileSend`] in progress on a connection: the operation's state
/// between chains (`core/ops.rs` owns it while it runs).
pub(crate) struct SpliceOp {
    pub conn: Key,
    pub file: Key,
    pub file_fd: RawFd,
    pub tag: u64,
    send: FileSend,
    /// The file offset of the send's first file byte.
    offset: u64,
    cursor: Cursor,
    /// Bytes in the pipe, not yet in the socket.
    in_pipe: u64,
    /// Bytes in the socket.
    out: u64,
    /// The chain in flight, and its completions' results by part.
    steps: Vec<Step>,
    results: Vec<Option<i32>>,
}

impl SpliceOp {
    pub(crate) fn new(
        (conn, file, file_fd): (Key, Key, RawFd),
        send: FileSend,
        offset: u64,
        tag: u64,
    ) -> SpliceOp {
        SpliceOp {
            conn,
            file,
            file_fd,
            tag,
            send,
            offset,
            cursor: Cursor::default(),
            in_pipe: 0,
            out: 0,
            steps: Vec::new(),
            results: Vec::new(),
        }
    }

    /// Every byte is in the socket.
    pub(crate) fn done(&self) -> bool {
        self.out >= self.send.len()
    }

    /// The send's own bytes (the chain's inline writes point into them).
    pub(crate) fn inline_bytes(&self) -> &[u8] {
        &self.send.inline
    }

    /// The chain in flight.
    pub(crate) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Plans the next chain into a pipe of `pipe_bytes`, at most
    /// `steps_max` submissions: the bytes the pipe holds go out first, on
    /// their own; otherwise the pipe is filled from the cursor, as far as
    /// its bytes and slots allow, and emptied into the socket.
    pub(crate) fn plan(&mut self, pipe_bytes: usize, steps_max: usize) {
        self.steps.clear();
        let total = self.send.len();
        let more_after = |sent: u64| sent < total;
        if self.in_pipe > 0 {
            let length = u32::try_from(self.in_pipe).unwrap_or(u32::MAX);
            self.steps.push(Step::Out {
                length,
                more: more_after(self.out + u64::from(length)),
            });
        } else {
            let page = page_size();
            let mut bytes_left = pipe_bytes as u64;
            let mut slots_left = bytes_left / page;
            let mut cursor = self.cursor;
            let mut planned = 0u64;
            let steps_max = steps_max.clamp(2, CHAIN_STEPS_MAX);
            while self.steps.len() + 1 < steps_max && bytes_left > 0 && slots_left > 0 {
                let Some(piece) = self.send.pieces.get(cursor.piece).copied() else {
                    break;
                };
                let inline = u64::from(piece.inline);
                let step = if cursor.within < inline {
                    // A write fills whole pages of its own.
                    let length = (inline - cursor.within)
                        .min(bytes_left)
                        .min(slots_left * page);
                    slots_left -= length.div_ceil(page);
                    Step::Inline {
                        at: cursor.inline_before + cursor.within as usize,
                        length: length as u32,
                    }
                } else {
                    // A splice takes a slot per page it touches.
                    let done = cursor.within - inline;
                    let offset = self.offset + cursor.file_before + done;
                    let head = offset % page;
                    let fits = (slots_left * page).saturating_sub(head);
                    let length = (u64::from(piece.file) - done).min(bytes_left).min(fits);
                    if length == 0 {
                        break;
                    }
                    slots_left = slots_left.saturating_sub((head + length).div_ceil(page));
                    Step::File {
                        offset,
                        length: length as u32,
                    }
                };
                let length = u64::from(step.length());
                bytes_left -= length;
                planned += length;
                advance(&self.send.pieces, &mut cursor, length);
                self.steps.push(step);
            }
            if planned > 0 {
                self.steps.push(Step::Out {
                    length: planned as u32,
                    more: more_after(self.out + planned),
                });
            }
        }
        self.results.clear();
        self.results.resize(self.steps.len(), None);
    }

    /// No chain goes (its connection is gone): the next completions are
    /// of nothing.
    pub(crate) fn abandon(&mut self) {
        self.steps.clear();
        self.results.clear();
    }

    /// The completion of part `part` of the chain in flight.
    pub(crate) fn completed(&mut self, part: u8, result: i32) {
        if let Some(slot) = self.results.get_mut(usize::from(part)) {
            *slot = Some(result);
        }
    }

    /// Every completion of the chain is in: moves the cursor by what went
    /// where. `Err(errno)` when the send cannot go on (an error that is not
    /// a broken link, a file that ends early, a chain that moved nothing).
    pub(crate) fn chain_done(&mut self) -> Result<(), i32> {
        let before = (self.cursor, self.in_pipe, self.out);
        let mut broken = false;
        for (step, result) in self.steps.iter().zip(&self.results) {
            let result = result.unwrap_or(-libc::ECANCELED);
            match *step {
                Step::Out { .. } => {
                    if result >= 0 {
                        let moved = u64::from(result.unsigned_abs()).min(self.in_pipe);
                        self.in_pipe -= moved;
                        self.out += moved;
                    } else if !broken || result != -libc::ECANCELED {
                        return Err(-result);
                    }
                }
                Step::Inline { length, .. } | Step::File { length, .. } => {
                    if broken {
                        continue;
                    }
                    match result {
                        // The link broke here (a pipe fuller than counted, or
                        // an earlier link's cancel): go on from here.
                        error if error == -libc::EAGAIN || error == -libc::ECANCELED => {
                            broken = true;
                        }
                        error if error < 0 => return Err(-error),
                        0 if matches!(step, Step::File { .. }) => return Err(libc::ENODATA),
                        moved => {
                            let moved = u64::from(moved.unsigned_abs()).min(u64::from(length));
                            advance(&self.send.pieces, &mut self.cursor, moved);
                            self.in_pipe += moved;
                            broken = moved < u64::from(length);
                        }
                    }
                }
            }
        }
        if (self.cursor, self.in_pipe, self.out) == before {
            return Err(libc::EIO);
        }
        Ok(())
    }
}

/// Moves `cursor` past `bytes` of the stream of `pieces`.
fn advance(pieces: &[Piece], cursor: &mut Cursor, mut bytes: u64) {
    while bytes > 0 {
        let Some(piece) = pieces.get(cursor.piece) else {
            return;
        };
        let whole = u64::from(piece.inline) + u64::from(piece.file);
        let take = (whole - cursor.within).min(bytes);
        cursor.within += take;
        bytes -= take;
        if cursor.within >= whole {
            cursor.piece += 1;
            cursor.within = 0;
            cursor.inline_before += piece.inline as usize;
            cursor.file_before += u64::from(piece.file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(send: FileSend, offset: u64) -> SpliceOp {
        let key = Key {
            index: 0,
            generation: 0,
        };
        SpliceOp::new((key, key, -1), send, offset, 0)
    }

    /// A send of PDUs: a prefix, then per PDU 12 header bytes and its value.
    fn pdus(prefix: usize, values: &[u32]) -> FileSend {
        let mut send = FileSend::new();
        send.push_bytes(&vec![0xC0; prefix]);
        for &value in values {
            send.push_bytes(&[0x04; 12]);
            send.push_file(value);
        }
        send
    }

    /// Plays chains against a model of the pipe and the socket: each step
    /// moves what `limit` lets it (a short result breaks the chain), and
    /// the stream that comes out is the one the send describes.
    fn run(
        mut op: SpliceOp,
        pipe: usize,
        steps_max: usize,
        short_every: usize,
    ) -> Vec<(bool, u64)> {
        let mut socket = Vec::new();
        let mut pipe_model: Vec<(bool, u64)> = Vec::new();
        let mut chains = 0;
        while !op.done() {
            chains += 1;
            assert!(chains < 10_000, "no progress");
            op.plan(pipe, steps_max);
            assert!(!op.steps().is_empty());
            assert!(op.steps().len() <= steps_max.max(2));
            let mut broken = false;
            for (part, step) in op.steps().to_vec().into_iter().enumerate() {
                if broken {
                    op.completed(part as u8, -libc::ECANCELED);
                    continue;
                }
                let short = short_every > 0 && (chains + part) % short_every == 0;
                let length = step.length() as usize;
                // A short transfer moves at least a byte (0 from a file is
                // its end).
                let moved = if short { (length / 2).max(1) } else { length };
                match step {
                    Step::Inline { at, .. } => {
                        for byte in &op.inline_bytes()[at..at + moved] {
                            pipe_model.push((true, u64::from(*byte)));
                        }
                    }
                    Step::File { offset, .. } => {
                        for position in offset..offset + moved as u64 {
                            pipe_model.push((false, position));
                        }
                    }
                    Step::Out { .. } => {
                        socket.extend(pipe_model.drain(..moved));
                    }
                }
                assert!(pipe_model.len() <= pipe, "the pipe overflowed");
                op.completed(part as u8, moved as i32);
                broken = moved < length;
            }
            op.chain_done().unwrap();
        }
        socket
    }

    fn expected(send: &FileSend, offset: u64) -> Vec<(bool, u64)> {
        let mut stream = Vec::new();
        let mut inline = send.inline.iter();
        let mut position = offset;
        for piece in &send.pieces {
            for _ in 0..piece.inline {
                stream.push((true, u64::from(*inline.next().unwrap())));
            }
            for _ in 0..piece.file {
                stream.push((false, position));
                position += 1;
            }
        }
        stream
    }

    #[test]
    fn chains_send_the_stream_in_order_whatever_breaks_them() {
        for (prefix, values, offset) in [
            (300usize, vec![16_372u32, 16_372, 8_000], 132u64),
            (0, vec![1], 0),
            (2_000, vec![262_000; 5], 4_095),
            (12, vec![], 7),
        ] {
            let send = pdus(prefix, &values);
            let want = expected(&send, offset);
            for (pipe, steps_max, short_every) in [
                (1 << 20, 64, 0),
                (65_536, 64, 0),
                (65_536, 4, 3),
                (16_384, 2, 2),
                (1 << 20, 7, 5),
            ] {
                let got = run(op(send.clone(), offset), pipe, steps_max, short_every);
                assert_eq!(got.len(), want.len(), "pipe {pipe}, steps {steps_max}");
                assert!(
                    got == want,
                    "pipe {pipe}, steps {steps_max}: bytes out of order"
                );
            }
        }
    }

    #[test]
    fn an_error_ends_the_send_and_a_chain_that_moves_nothing_too() {
        let mut failing = op(pdus(10, &[4_000]), 0);
        failing.plan(1 << 20, 64);
        failing.completed(0, 22);
        failing.completed(1, -libc::EIO);
        failing.completed(2, -libc::ECANCELED);
        assert_eq!(failing.chain_done(), Err(libc::EIO));

        let mut stuck = op(pdus(10, &[4_000]), 0);
        stuck.plan(1 << 20, 64);
        for part in 0..stuck.steps().len() {
            stuck.completed(part as u8, -libc::ECANCELED);
        }
        assert_eq!(stuck.chain_done(), Err(libc::EIO));

        let mut early_end = op(pdus(10, &[4_000]), 0);
        early_end.plan(1 << 20, 64);
        early_end.completed(0, 22);
        early_end.completed(1, 0);
        early_end.completed(2, -libc::ECANCELED);
        assert_eq!(early_end.chain_done(), Err(libc::ENODATA));

        let mut peer_gone = op(pdus(10, &[4_000]), 0);
        peer_gone.plan(1 << 20, 64);
        peer_gone.completed(0, 22);
        peer_gone.completed(1, 4_000);
        peer_gone.completed(2, -libc::EPIPE);
        assert_eq!(peer_gone.chain_done(), Err(libc::EPIPE));
    }

    #[test]
    fn pieces_join_bytes_and_file_runs() {
        let send = pdus(100, &[10, 20]);
        assert_eq!(
            send.pieces,
            vec![
                Piece {
                    inline: 112,
                    file: 10
                },
                Piece {
                    inline: 12,
                    file: 20
                }
            ]
        );
        assert_eq!(send.len(), 100 + 24 + 30);
        assert_eq!(send.file_bytes(), 30);
    }
}
