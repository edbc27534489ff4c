//! The contract between the common core and its two backends: the primitive
//! operations a backend starts ([`Prim`]), the completions it reports
//! ([`Completion`]), and how a completion names its operation (`user_data`).
//!
//! Both backends report in io_uring's terms: `result` is a byte count, a
//! descriptor or `-errno`; `flags` carries `MORE` for multishot operations and
//! the buffer id of a provided-buffer receive. The portable backend imitates
//! this exactly, so everything above it (short transfers, broken chains,
//! buffer accounting, backpressure) is one piece of code for both.

use std::os::fd::RawFd;
use std::time::Instant;

use crate::event::SyncKind;
use crate::slab::Key;

/// `IORING_CQE_F_BUFFER`: a buffer id is in the upper 16 bits of `flags`.
pub(crate) const FLAG_BUFFER: u32 = 1;
/// `IORING_CQE_F_MORE`: the multishot operation goes on.
pub(crate) const FLAG_MORE: u32 = 2;

/// A completion as both backends report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    pub fn new(user_data: u64, result: i32, flags: u32) -> Completion {
        Completion {
            user_data,
            result,
            flags,
        }
    }

    pub fn more(&self) -> bool {
        self.flags & FLAG_MORE != 0
    }

    pub fn buffer_id(&self) -> Option<u16> {
        if self.flags & FLAG_BUFFER != 0 {
            Some((self.flags >> 16) as u16)
        } else {
            None
        }
    }
}

pub(crate) fn buffer_flags(buffer_id: u16, more: bool) -> u32 {
    FLAG_BUFFER | (u32::from(buffer_id) << 16) | if more { FLAG_MORE } else { 0 }
}

/// `user_data` layout: slot index in the high 32 bits, the low 24 bits of the
/// slot generation, and a part number in the low 8 bits (part 1 is the sync
/// linked to a write). Index `u32::MAX` marks the runtime's own requests.
const GENERATION_BITS_MASK: u32 = 0x00ff_ffff;

pub(crate) fn user_data(key: Key, part: u8) -> u64 {
    // The slab never hands out the index reserved for the runtime's own
    // requests, so no operation can be mistaken for a wake or a cancel.
    debug_assert_ne!(key.index, u32::MAX, "slot index reserved for WAKE/CANCEL");
    (u64::from(key.index) << 32)
        | (u64::from(key.generation & GENERATION_BITS_MASK) << 8)
        | u64::from(part)
}

pub(crate) fn decode_user_data(user_data: u64) -> (Key, u8) {
    let key = Key {
        index: (user_data >> 32) as u32,
        generation: ((user_data >> 8) as u32) & GENERATION_BITS_MASK,
    };
    (key, user_data as u8)
}

pub(crate) const fn generation_mask() -> u32 {
    GENERATION_BITS_MASK
}

/// The eventfd read that wakes a core (io_uring only).
pub(crate) const WAKE_USER_DATA: u64 = (u32::MAX as u64) << 32 | 1;
/// Cancel requests: their own completions are ignored.
pub(crate) const CANCEL_USER_DATA: u64 = (u32::MAX as u64) << 32 | 2;

/// The one range a write takes from a registered buffer: `length` bytes
/// at `pointer`, inside the buffer registered in slot `index`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedWrite {
    pub index: u16,
    pub pointer: *const u8,
    pub length: u32,
}

/// One submission of a linked chain ([`Prim::Chain`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChainStep {
    /// Writes `length` bytes from `pointer` (into a pipe).
    Write {
        fd: RawFd,
        pointer: *const u8,
        length: u32,
    },
    /// Splices `length` bytes from `fd_in` (at `offset_in`, or from a pipe
    /// with `None`) into `fd_out`.
    Splice {
        fd_in: RawFd,
        offset_in: Option<u64>,
        fd_out: RawFd,
        length: u32,
        flags: u32,
    },
}

/// A primitive operation. Pointers point into heap memory owned by the
/// operation's table entry, which lives until the operation's last
/// completion (see `core/ops.rs`).
#[derive(Debug)]
pub(crate) enum Prim {
    /// Multishot accept; each completion is a new descriptor.
    AcceptMulti {
        fd: RawFd,
    },
    /// Multishot receive into the pool.
    RecvMulti {
        fd: RawFd,
    },
    /// One receive of at most `length` bytes into `pointer`: with `whole`,
    /// exactly `length` (io_uring: `MSG_WAITALL`, so fewer only when the
    /// stream ends, fails or the receive is cancelled), else whatever has
    /// arrived, at least one byte.
    Recv {
        fd: RawFd,
        pointer: *mut u8,
        length: u32,
        whole: bool,
    },
    Send {
        fd: RawFd,
        pointer: *const u8,
        length: u32,
    },
    Connect {
        fd: RawFd,
        address: *const libc::sockaddr,
        length: libc::socklen_t,
    },
    Open {
        dir: RawFd,
        path: *const libc::c_char,
        flags: i32,
        mode: u32,
    },
    /// A vectored write; with `linked_sync`, a sync linked after it whose
    /// completion carries part 1 (`user_data + 1`). With `fixed`, io_uring
    /// writes that one range of a registered buffer instead
    /// (`IORING_OP_WRITE_FIXED`: the same bytes as the iovecs); the
    /// portable backend writes the iovecs.
    Write {
        fd: RawFd,
        iovecs: *const libc::iovec,
        count: u32,
        offset: u64,
        linked_sync: Option<SyncKind>,
        fixed: Option<FixedWrite>,
    },
    Sync {
        fd: RawFd,
        kind: SyncKind,
    },
    /// A vectored read at `offset` into the iovecs' buffers.
    Read {
        fd: RawFd,
        iovecs: *const libc::iovec,
        count: u32,
        offset: u64,
    },
    Rename {
        old_dir: RawFd,
        old: *const libc::c_char,
        new_dir: RawFd,
        new: *const libc::c_char,
    },
    MkDir {
        dir: RawFd,
        path: *const libc::c_char,
        mode: u32,
    },
    Unlink {
        dir: RawFd,
        path: *const libc::c_char,
        flags: i32,
    },
    Close {
        fd: RawFd,
    },
    /// Completes `-ETIME` at `deadline` (`timespec` is the same, relative).
    Timer {
        timespec: *const io_uring::types::Timespec,
        deadline: Instant,
    },
    /// Submissions linked one after the other (`IOSQE_IO_LINK`), part `i`
    /// completing with `user_data + i`: a link that fails or comes short
    /// cancels the rest (`ECANCELED`). io_uring only (`splice.rs`).
    Chain {
        steps: Vec<ChainStep>,
    },
    /// Cancels one operation; `fd` is the socket of a receive (portable
    /// needs it), `timer` says whether it is a timer.
    CancelOne {
        target: u64,
        fd: Option<RawFd>,
        timer: bool,
    },
    /// Cancels every socket operation on `fd`.
    CancelFd {
        fd: RawFd,
    },
    /// Cancels everything cancellable (shutdown).
    CancelAll,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let key = Key {
            index: 77,
            generation: 0x0123_4567,
        };
        let (decoded, part) = decode_user_data(user_data(key, 1));
        assert_eq!(decoded.index, 77);
        assert_eq!(decoded.generation, 0x0023_4567);
        assert_eq!(part, 1);
        assert_eq!(user_data(key, 0) + 1, user_data(key, 1));
    }

    #[test]
    fn special_user_data_never_decodes_to_a_slot_in_use() {
        assert_eq!(decode_user_data(WAKE_USER_DATA).0.index, u32::MAX);
        assert_eq!(decode_user_data(CANCEL_USER_DATA).0.index, u32::MAX);
    }

    #[test]
    fn buffer_flags_round_trip() {
        let completion = Completion::new(0, 10, buffer_flags(513, true));
        assert_eq!(completion.buffer_id(), Some(513));
        assert!(completion.more());
    }
}
