//! Buffers: the per-core receive pool and the handles that lend its memory.
//!
//! A core owns one pool of `recv_buffer_count` buffers of
//! `recv_buffer_size_bytes`, allocated once at start. With io_uring the free
//! buffers sit in a provided-buffer ring the kernel picks from when data
//! arrives (so an idle connection holds no buffer); the portable backend keeps
//! them in a free list. A received buffer comes to the handler as a
//! [`RecvBuf`]: a reference-counted view that can be sliced, kept, and lent to
//! a file write or a send without copying. The buffer returns to the pool when
//! the last view is dropped — including the one held by an in-flight
//! operation, which the runtime drops only after the operation's completion
//! arrives (a cancelled operation keeps its buffer until then).

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::{Bound, Deref, RangeBounds};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use io_uring::types::BufRingEntry;

const PAGE_SIZE_BYTES: usize = 4096;

/// Where free buffers wait.
enum Provider {
    /// A provided-buffer ring registered with the core's io_uring.
    Ring(BufRing),
    /// A free list the portable backend pops from before `recv(2)`.
    List(RefCell<Vec<u16>>),
}

/// The memory of a provided-buffer ring (see `io_uring_register_buf_ring(3)`).
struct BufRing {
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    mask: u16,
    /// Our copy of the tail; published to the kernel after each push.
    tail: Cell<u16>,
}

/// The per-core pool. Not `Send`: it lives on its core.
pub(crate) struct Pool {
    memory: NonNull<u8>,
    memory_layout: Layout,
    buffer_size_bytes: u32,
    count: u16,
    /// Live views per buffer; a buffer is free (in the ring or list) iff 0
    /// and not leased.
    references: Box<[Cell<u32>]>,
    free_count: Cell<u32>,
    /// Set when a buffer came back, so the core re-arms starved receives.
    released_since_check: Cell<bool>,
    provider: Provider,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("buffer_size_bytes", &self.buffer_size_bytes)
            .field("count", &self.count)
            .field("free_count", &self.free_count.get())
            .finish()
    }
}

fn allocate_zeroed(size_bytes: usize) -> std::io::Result<(NonNull<u8>, Layout)> {
    let layout = Layout::from_size_align(size_bytes.max(1), PAGE_SIZE_BYTES)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the layout has a non-zero size (`max(1)`) and a valid
    // power-of-two alignment, as `alloc_zeroed` requires.
    let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
    NonNull::new(pointer)
        .map(|pointer| (pointer, layout))
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))
}

impl Pool {
    /// A pool whose free buffers live in a provided-buffer ring. The caller
    /// registers [`Pool::ring_address`] with its io_uring.
    pub fn with_ring(buffer_size_bytes: u32, count: u16) -> std::io::Result<Rc<Pool>> {
        let (entries, layout) = allocate_zeroed(usize::from(count) * size_of::<BufRingEntry>())?;
        let ring = BufRing {
            entries: entries.cast(),
            layout,
            mask: count - 1,
            tail: Cell::new(0),
        };
        let pool = Pool::new(buffer_size_bytes, count, Provider::Ring(ring))?;
        for buffer_id in 0..count {
            pool.provide(buffer_id);
        }
        Ok(Rc::new(pool))
    }

    /// A pool with a plain free list (portable backend).
    pub fn with_list(buffer_size_bytes: u32, count: u16) -> std::io::Result<Rc<Pool>> {
        let list = (0..count).rev().collect();
        Ok(Rc::new(Pool::new(
            buffer_size_bytes,
            count,
            Provider::List(RefCell::new(list)),
        )?))
    }

    fn new(buffer_size_bytes: u32, count: u16, provider: Provider) -> std::io::Result<Pool> {
        let total = (buffer_size_bytes as usize)
            .checked_mul(usize::from(count))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let (memory, memory_layout) = allocate_zeroed(total)?;
        Ok(Pool {
            memory,
            memory_layout,
            buffer_size_bytes,
            count,
            references: (0..count).map(|_| Cell::new(0)).collect(),
            free_count: Cell::new(u32::from(count)),
            released_since_check: Cell::new(false),
            provider,
        })
    }

    pub fn buffer_size_bytes(&self) -> u32 {
        self.buffer_size_bytes
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn free_count(&self) -> u32 {
        self.free_count.get()
    }

    /// Whether buffers came back since the last call (clears the flag).
    pub fn take_released_flag(&self) -> bool {
        self.released_since_check.replace(false)
    }

    /// Start of the ring memory to register (`None` for a list pool).
    pub fn ring_address(&self) -> Option<u64> {
        match &self.provider {
            Provider::Ring(ring) => Some(ring.entries.as_ptr() as u64),
            Provider::List(_) => None,
        }
    }

    /// Start of buffer `buffer_id`; the caller checked `buffer_id < count`.
    pub fn buffer_pointer(&self, buffer_id: u16) -> *mut u8 {
        let offset = usize::from(buffer_id.min(self.count - 1)) * self.buffer_size_bytes as usize;
        // SAFETY: `offset` is at most `(count - 1) * size`, inside the one
        // allocation of `count * size` bytes made in `Pool::new`.
        unsafe { self.memory.as_ptr().add(offset) }
    }

    /// Portable backend: a free buffer to receive into, or `None` (pool
    /// exhausted: stop receiving).
    pub fn take_for_receive(&self) -> Option<u16> {
        match &self.provider {
            Provider::List(list) => list.borrow_mut().pop(),
            Provider::Ring(_) => None,
        }
    }

    /// Portable backend: a buffer taken but not filled goes back.
    pub fn untake(&self, buffer_id: u16) {
        debug_assert_eq!(
            self.references
                .get(usize::from(buffer_id))
                .map_or(0, Cell::get),
            0,
            "a leased buffer put back on the free list"
        );
        if let Provider::List(list) = &self.provider {
            list.borrow_mut().push(buffer_id);
        }
    }

    /// A buffer was filled with `length_bytes` (a completion named it): the
    /// handler gets the first view. `None` if the completion is inconsistent.
    pub fn lease(self: &Rc<Pool>, buffer_id: u16, length_bytes: u32) -> Option<RecvBuf> {
        let references = self.references.get(usize::from(buffer_id))?;
        if references.get() != 0 || length_bytes > self.buffer_size_bytes {
            return None;
        }
        references.set(1);
        debug_assert!(
            self.free_count.get() > 0,
            "lease from a pool with none free"
        );
        self.free_count.set(self.free_count.get().saturating_sub(1));
        Some(RecvBuf {
            pool: Rc::clone(self),
            buffer_id,
            start: 0,
            length_bytes,
        })
    }

    fn retain(&self, buffer_id: u16) {
        if let Some(references) = self.references.get(usize::from(buffer_id)) {
            // Only a live view retains, so the buffer is leased already.
            debug_assert!(references.get() > 0, "retain of a buffer not leased");
            references.set(references.get() + 1);
        }
    }

    fn release(&self, buffer_id: u16) {
        let Some(references) = self.references.get(usize::from(buffer_id)) else {
            return;
        };
        debug_assert!(references.get() > 0, "release of a buffer not leased");
        let remaining = references.get().saturating_sub(1);
        references.set(remaining);
        if remaining == 0 {
            self.provide(buffer_id);
            self.free_count.set(self.free_count.get() + 1);
            debug_assert!(
                self.free_count.get() <= u32::from(self.count),
                "more buffers free than the pool holds"
            );
            self.released_since_check.set(true);
        }
    }

    /// Makes a free buffer available for receiving again.
    fn provide(&self, buffer_id: u16) {
        // The kernel (or the portable `recv`) writes into what is provided:
        // a buffer some view still reads must never go back, and no more
        // buffers than the pool holds can be free.
        debug_assert_eq!(
            self.references
                .get(usize::from(buffer_id))
                .map_or(0, Cell::get),
            0,
            "a leased buffer provided for receiving"
        );
        match &self.provider {
            Provider::List(list) => list.borrow_mut().push(buffer_id),
            Provider::Ring(ring) => {
                let tail = ring.tail.get();
                let index = usize::from(tail & ring.mask);
                // SAFETY: `index <= mask < count`, so the entry lies inside the
                // ring allocation of `count` entries; the kernel reads only
                // entries between its head and the published tail, and this
                // one is past the published tail until the store below.
                let entry = unsafe { &mut *ring.entries.as_ptr().add(index) };
                entry.set_addr(self.buffer_pointer(buffer_id) as u64);
                entry.set_len(self.buffer_size_bytes);
                entry.set_bid(buffer_id);
                let new_tail = tail.wrapping_add(1);
                ring.tail.set(new_tail);
                // SAFETY: `tail` points at the `resv` field of entry 0, inside
                // the ring allocation, 2-byte aligned (the allocation is
                // page-aligned and the field sits at offset 14); the kernel
                // reads it concurrently, so it is accessed only atomically.
                let tail_atomic =
                    unsafe { &*BufRingEntry::tail(ring.entries.as_ptr()).cast::<AtomicU16>() };
                tail_atomic.store(new_tail, Ordering::Release);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: `memory` was allocated in `Pool::new` with exactly this
        // layout. Every view holds an `Rc<Pool>`, so none is alive; the core
        // drops its ring (unregistering the buffers) before its last `Rc`, and
        // a core that could not drain its operations leaks the pool instead.
        unsafe { std::alloc::dealloc(self.memory.as_ptr(), self.memory_layout) };
        if let Provider::Ring(ring) = &self.provider {
            // SAFETY: allocated in `Pool::with_ring` with this layout; same
            // liveness argument as above.
            unsafe { std::alloc::dealloc(ring.entries.as_ptr().cast(), ring.layout) };
        }
    }
}

/// A received buffer, or a slice of one: reference-counted, cheap to clone,
/// not `Send` (it belongs to its core's pool). The pool gets the buffer back
/// when the last view is dropped.
pub struct RecvBuf {
    pool: Rc<Pool>,
    buffer_id: u16,
    start: u32,
    length_bytes: u32,
}

impl RecvBuf {
    /// Length of this view.
    pub fn len(&self) -> usize {
        self.length_bytes as usize
    }

    /// Whether this view is empty.
    pub fn is_empty(&self) -> bool {
        self.length_bytes == 0
    }

    /// A view of `range` (relative to this view), sharing the buffer; `None`
    /// when the range is out of bounds.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Option<RecvBuf> {
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&end) => end.checked_add(1)?,
            Bound::Excluded(&end) => end,
            Bound::Unbounded => self.len(),
        };
        if start > end || end > self.len() {
            return None;
        }
        self.pool.retain(self.buffer_id);
        Some(RecvBuf {
            pool: Rc::clone(&self.pool),
            buffer_id: self.buffer_id,
            start: self.start + u32::try_from(start).ok()?,
            length_bytes: u32::try_from(end - start).ok()?,
        })
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        // SAFETY: `start` is within the buffer (checked when the view was
        // made), and the buffer lies inside the pool allocation.
        unsafe {
            self.pool
                .buffer_pointer(self.buffer_id)
                .add(self.start as usize)
        }
    }
}

impl Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the view's bytes lie inside the pool allocation, which the
        // `Rc<Pool>` keeps alive. While any view exists the buffer is out of
        // the ring and the free list, so neither the kernel nor the portable
        // backend writes into it; operations that borrow it only read.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl Clone for RecvBuf {
    fn clone(&self) -> RecvBuf {
        self.pool.retain(self.buffer_id);
        RecvBuf {
            pool: Rc::clone(&self.pool),
            ..*self
        }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.pool.release(self.buffer_id);
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("buffer_id", &self.buffer_id)
            .field("start", &self.start)
            .field("length_bytes", &self.length_bytes)
            .finish()
    }
}

/// Bytes an operation sends or writes. The runtime holds it until the
/// operation's completion, so its address stays valid while the kernel reads.
#[derive(Debug, Clone)]
pub enum IoBuf {
    /// Heap bytes owned by the operation.
    Owned(Vec<u8>),
    /// Bytes shared with other threads or operations.
    Shared(Arc<[u8]>),
    /// Constant bytes.
    Static(&'static [u8]),
    /// A received buffer (or a slice of one): written without a copy.
    Recv(RecvBuf),
    /// A chunk of a [`ChunkPool`](crate::ChunkPool) (its valid bytes),
    /// back in its pool once the operation (and every clone) is done with it.
    Chunk(Rc<crate::chunk::Chunk>),
    /// Bytes at an aligned address, a multiple of the alignment long: what
    /// an `O_DIRECT` write needs (shared by clones, never copied).
    Aligned(Rc<crate::aligned::AlignedBuf>),
    /// A range of an aligned buffer, not aligned itself: for a buffered
    /// write of part of the buffer (shared by clones, never copied).
    AlignedPart(crate::aligned::AlignedPart),
}

impl IoBuf {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            IoBuf::Owned(bytes) => bytes,
            IoBuf::Shared(bytes) => bytes,
            IoBuf::Static(bytes) => bytes,
            IoBuf::Recv(buf) => buf,
            IoBuf::Chunk(chunk) => chunk.as_slice(),
            IoBuf::Aligned(buf) => buf.as_slice(),
            IoBuf::AlignedPart(part) => part.as_slice(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        match self {
            IoBuf::Recv(buf) => buf.as_ptr(),
            IoBuf::Chunk(chunk) => chunk.as_ptr(),
            other => other.as_slice().as_ptr(),
        }
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(bytes: Vec<u8>) -> IoBuf {
        IoBuf::Owned(bytes)
    }
}

impl From<Arc<[u8]>> for IoBuf {
    fn from(bytes: Arc<[u8]>) -> IoBuf {
        IoBuf::Shared(bytes)
    }
}

impl From<&'static [u8]> for IoBuf {
    fn from(bytes: &'static [u8]) -> IoBuf {
        IoBuf::Static(bytes)
    }
}

impl From<crate::chunk::Chunk> for IoBuf {
    fn from(chunk: crate::chunk::Chunk) -> IoBuf {
        IoBuf::Chunk(Rc::new(chunk))
    }
}

impl From<crate::aligned::AlignedBuf> for IoBuf {
    fn from(buf: crate::aligned::AlignedBuf) -> IoBuf {
        IoBuf::Aligned(Rc::new(buf))
    }
}

/// A shared aligned buffer: the writer keeps a reference to take the buffer
/// back (`Rc::try_unwrap`) once the write is done with it.
impl From<Rc<crate::aligned::AlignedBuf>> for IoBuf {
    fn from(buf: Rc<crate::aligned::AlignedBuf>) -> IoBuf {
        IoBuf::Aligned(buf)
    }
}

impl From<crate::aligned::AlignedPart> for IoBuf {
    fn from(part: crate::aligned::AlignedPart) -> IoBuf {
        IoBuf::AlignedPart(part)
    }
}

impl From<RecvBuf> for IoBuf {
    fn from(buf: RecvBuf) -> IoBuf {
        IoBuf::Recv(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_returns_to_pool_when_last_view_drops() {
        let pool = Pool::with_list(1024, 4).unwrap();
        let buffer_id = pool.take_for_receive().unwrap();
        let first = pool.lease(buffer_id, 100).unwrap();
        assert_eq!(pool.free_count(), 3);
        let slice = first.slice(10..20).unwrap();
        let copy = IoBuf::from(slice.clone());
        drop(first);
        drop(slice);
        assert_eq!(pool.free_count(), 3, "a write still holds the buffer");
        assert_eq!(copy.len(), 10);
        drop(copy);
        assert_eq!(pool.free_count(), 4);
        assert!(pool.take_released_flag());
    }

    #[test]
    fn slice_bounds_are_checked() {
        let pool = Pool::with_list(1024, 2).unwrap();
        let buffer_id = pool.take_for_receive().unwrap();
        let buf = pool.lease(buffer_id, 8).unwrap();
        assert!(buf.slice(0..9).is_none());
        let (start, end) = (5, 4);
        assert!(buf.slice(start..end).is_none());
        let tail = buf.slice(6..).unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail.slice(1..=1).unwrap().len(), 1);
    }

    #[test]
    fn lease_rejects_inconsistent_completion() {
        let pool = Pool::with_list(1024, 2).unwrap();
        assert!(pool.lease(5, 10).is_none(), "unknown buffer id");
        assert!(pool.lease(0, 2048).is_none(), "longer than a buffer");
        let held = pool.lease(0, 10).unwrap();
        assert!(pool.lease(0, 10).is_none(), "already leased");
        drop(held);
    }

    #[test]
    fn ring_pool_publishes_every_buffer() {
        let pool = Pool::with_ring(1024, 8).unwrap();
        assert!(pool.ring_address().is_some());
        assert_eq!(pool.free_count(), 8);
        let buf = pool.lease(3, 16).unwrap();
        assert_eq!(pool.free_count(), 7);
        drop(buf);
        assert_eq!(pool.free_count(), 8);
    }
}
