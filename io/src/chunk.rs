//! Send chunks: a per-core pool of fixed-size buffers that file reads fill
//! ([`Core::read_at`](crate::Core::read_at)) and sends drain
//! ([`IoBuf::Chunk`](crate::IoBuf::Chunk)), for senders of stored files
//! (Query/Retrieve's C-MOVE and C-GET sub-operations).
//!
//! Why a pool of its own, and not `Vec`s: a sender reads a file in chunks of
//! a few hundred KiB and sends each. A fresh `Vec` per chunk is an `mmap`,
//! page faults on first touch and a `munmap` per chunk (allocations that
//! large bypass the allocator's free lists); a chunk instead goes back to
//! its pool when the send that holds it completes (its last owner drops it),
//! so the steady state allocates nothing. The pool's size is also the bound
//! on the bytes a core's senders hold at once: when it is empty, a sender
//! waits for a send to complete ([`ChunkPool::take`] returns `None`), which
//! is the backpressure that keeps retrieval from taking a core's memory
//! from ingest.
//!
//! A chunk is owned by one holder at a time (the caller, a read in flight,
//! or a send in flight), so the kernel writing into it during a read never
//! races a reader. The pool lives on one core (`Rc`): chunks never cross
//! threads.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

/// The free buffers of a pool and its limits.
#[derive(Debug)]
struct Free {
    buffers: Vec<Box<[u8]>>,
    /// Buffers handed out and not yet returned.
    lent: usize,
    chunk_size: usize,
    chunk_count_max: usize,
}

/// A pool of equal-sized chunks, made on demand up to a maximum and
/// reused. Cheap to clone (shared, one core).
#[derive(Debug, Clone)]
pub struct ChunkPool {
    free: Rc<RefCell<Free>>,
}

impl ChunkPool {
    /// A pool of at most `chunk_count_max` chunks of `chunk_size` bytes.
    /// Chunks are allocated when first taken, never before.
    ///
    /// # Panics
    /// If `chunk_size` or `chunk_count_max` is zero (a configuration bug).
    pub fn new(chunk_size: usize, chunk_count_max: usize) -> ChunkPool {
        assert!(
            chunk_size > 0 && chunk_count_max > 0,
            "a chunk pool needs a size and a count"
        );
        ChunkPool {
            free: Rc::new(RefCell::new(Free {
                buffers: Vec::new(),
                lent: 0,
                chunk_size,
                chunk_count_max,
            })),
        }
    }

    /// A chunk (its length 0), or `None` when every chunk is lent out.
    pub fn take(&self) -> Option<Chunk> {
        let mut free = self.free.borrow_mut();
        let bytes = match free.buffers.pop() {
            Some(bytes) => bytes,
            None if free.lent < free.chunk_count_max => {
                vec![0u8; free.chunk_size].into_boxed_slice()
            }
            None => return None,
        };
        free.lent += 1;
        Some(Chunk {
            bytes: Some(bytes),
            start: 0,
            length: 0,
            home: Rc::clone(&self.free),
        })
    }

    /// The size of every chunk, in bytes.
    pub fn chunk_size(&self) -> usize {
        self.free.borrow().chunk_size
    }

    /// Chunks lent out now (held by callers, reads or sends).
    pub fn lent(&self) -> usize {
        self.free.borrow().lent
    }

    /// Whether a chunk can be taken now.
    pub fn has_free(&self) -> bool {
        let free = self.free.borrow();
        !free.buffers.is_empty() || free.lent < free.chunk_count_max
    }
}

/// One chunk of a [`ChunkPool`]: a fixed-capacity buffer and the range of
/// its valid bytes, `start..len` (what a send sends; `start` is 0 unless
/// set: a sender that read into the chunk before it knew what goes in
/// front leaves room and starts the send where that ends). Goes back to
/// its pool when dropped.
#[derive(Debug)]
pub struct Chunk {
    /// Always `Some` until drop takes it back.
    bytes: Option<Box<[u8]>>,
    start: usize,
    length: usize,
    home: Rc<RefCell<Free>>,
}

impl Chunk {
    fn storage(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or_default()
    }

    /// The whole buffer, to write headers into or to read into.
    pub fn storage_mut(&mut self) -> &mut [u8] {
        self.bytes.as_deref_mut().unwrap_or_default()
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.storage().len()
    }

    /// The valid bytes (`start..len`).
    pub fn as_slice(&self) -> &[u8] {
        self.storage()
            .get(self.start..self.length)
            .unwrap_or_default()
    }

    /// The number of valid bytes.
    pub fn len(&self) -> usize {
        self.length - self.start
    }

    /// Whether no byte is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets where the valid bytes end, counted from the buffer's start
    /// (clamped to the capacity; `start` follows when it was past it).
    pub fn set_len(&mut self, length: usize) {
        self.length = length.min(self.capacity());
        self.start = self.start.min(self.length);
    }

    /// Sets where the valid bytes start (clamped to their end): the bytes
    /// before it are not sent.
    pub fn set_start(&mut self, start: usize) {
        self.start = start.min(self.length);
    }

    /// Whether `ranges` are in bounds, non-empty and in increasing,
    /// non-overlapping order (what a read into them needs).
    pub(crate) fn ranges_valid(&self, ranges: &[Range<usize>]) -> bool {
        let mut end = 0;
        ranges.iter().all(|range| {
            let ok = range.start >= end && range.start < range.end && range.end <= self.capacity();
            end = range.end;
            ok
        })
    }

    /// The buffer's first byte, for the kernel to write into at `ranges`.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.storage_mut().as_mut_ptr()
    }

    /// The valid bytes' first byte, for a send.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let Some(bytes) = self.bytes.take() else {
            return;
        };
        if let Ok(mut free) = self.home.try_borrow_mut() {
            free.lent = free.lent.saturating_sub(1);
            free.buffers.push(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_return_to_their_pool_and_the_pool_is_bounded() {
        let pool = ChunkPool::new(64, 2);
        let mut first = pool.take().unwrap();
        let second = pool.take().unwrap();
        assert!(pool.take().is_none(), "two at most");
        assert!(!pool.has_free());
        first.storage_mut()[..3].copy_from_slice(b"abc");
        first.set_len(3);
        assert_eq!(first.as_slice(), b"abc");
        first.set_len(1000);
        assert_eq!(first.len(), 64, "clamped to the capacity");
        drop(first);
        assert_eq!(pool.lent(), 1);
        let mut again = pool.take().unwrap();
        assert_eq!(again.len(), 0, "a reused chunk starts empty");
        again.storage_mut()[..5].copy_from_slice(b"xxabc");
        again.set_len(5);
        again.set_start(2);
        assert_eq!(again.as_slice(), b"abc", "the valid bytes start where set");
        assert_eq!(again.len(), 3);
        again.set_start(9);
        assert!(again.is_empty(), "a start past the end is the end");
        drop(again);
        let fresh = pool.take().unwrap();
        assert_eq!(fresh.as_slice(), b"", "a reused chunk starts at 0 again");
        let again = fresh;
        drop((again, second));
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn read_ranges_must_be_ordered_and_inside() {
        let pool = ChunkPool::new(100, 1);
        let chunk = pool.take().unwrap();
        assert!(chunk.ranges_valid(&[0..10, 22..100]));
        assert!(!chunk.ranges_valid(&[0..10, 5..20]), "overlap");
        assert!(!chunk.ranges_valid(&[20..30, 0..10]), "order");
        assert!(!chunk.ranges_valid(&[0..10, 20..101]), "past the end");
        assert!(!chunk.ranges_valid(&[0..10, 20..20]), "empty");
    }
}
