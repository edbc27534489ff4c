//! Buffers for `O_DIRECT` writes: their bytes start at a
//! [`DIRECT_IO_ALIGN`]-aligned address and their length is a multiple of
//! it, as direct I/O requires of buffers, offsets and lengths. Written
//! through a [`Core`](crate::Core) as [`IoBuf::Aligned`](crate::IoBuf::Aligned)
//! (the segments layout's records, docs/design/segments.md).
//!
//! Safe code: a `Vec` over-allocated by one alignment unit, used from its
//! first aligned byte. Its heap bytes never move while the buffer lives
//! (the `Vec` is never grown), so the address a write was given stays
//! aligned and valid however the buffer itself is moved.
//!
//! A buffer may be registered with a core's io_uring
//! ([`Core::register_buffer`](crate::Core::register_buffer)): it then
//! carries its slot, and its memory, when it is dropped, goes to the slot's
//! table to be freed only after the slot is cleared (`fixed`).

use std::ops::Range;
use std::rc::Rc;

use crate::fixed::FixedSlot;

/// The alignment of an [`AlignedBuf`]: a multiple of every logical block
/// size in use (512 and 4096 bytes).
pub const DIRECT_IO_ALIGN: usize = 4096;

/// Zero-initialised bytes at an aligned address, a multiple of
/// [`DIRECT_IO_ALIGN`] long. Not `Clone`: a copy would lose the alignment
/// (an [`IoBuf`](crate::IoBuf) shares it instead).
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    /// Its slot in a core's table of registered buffers, if registered.
    fixed: Option<FixedSlot>,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("registered", &self.fixed.is_some())
            .finish()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // A registered buffer's memory is freed only once its slot is
        // cleared in the kernel: the table takes it.
        if let Some(slot) = self.fixed.take() {
            slot.release(std::mem::take(&mut self.storage));
        }
    }
}

impl AlignedBuf {
    /// Zeroed, `len` rounded up to [`DIRECT_IO_ALIGN`].
    pub fn zeroed(len: usize) -> AlignedBuf {
        let len = len.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
        let storage = vec![0u8; len + DIRECT_IO_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_IO_ALIGN);
        assert!(start < DIRECT_IO_ALIGN, "an aligned byte within one unit");
        AlignedBuf {
            storage,
            start,
            len,
            fixed: None,
        }
    }

    /// Whether the buffer is registered with a core's io_uring (its writes
    /// there skip pinning its pages).
    pub fn is_registered(&self) -> bool {
        self.fixed.is_some()
    }

    /// Its slot in its core's table of registered buffers, if registered
    /// (for tests and logs: a slot names a buffer only in its own ring).
    pub fn registered_slot(&self) -> Option<u16> {
        self.fixed.as_ref().map(FixedSlot::index)
    }

    /// Its slot, if registered.
    pub(crate) fn fixed(&self) -> Option<&FixedSlot> {
        self.fixed.as_ref()
    }

    /// The bytes a registration covers (the aligned bytes at the length
    /// the buffer was made with), to register them.
    pub(crate) fn registration_region(&mut self) -> &mut [u8] {
        let end = self.start + self.capacity();
        &mut self.storage[self.start..end]
    }

    /// The buffer was registered in `slot`.
    pub(crate) fn set_fixed(&mut self, slot: FixedSlot) {
        debug_assert!(self.fixed.is_none(), "a buffer registered twice");
        self.fixed = Some(slot);
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The aligned bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Length in bytes (a multiple of [`DIRECT_IO_ALIGN`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Shortens the buffer to `len` rounded up to [`DIRECT_IO_ALIGN`] (never
    /// longer than it is): a buffer filled to less than its length is
    /// written as its padded part only.
    pub fn truncate(&mut self, len: usize) {
        let len = len.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN;
        self.len = self.len.min(len);
    }

    /// The length it was made with ([`Self::restore_length`] gives it back).
    pub fn capacity(&self) -> usize {
        self.storage.len() - DIRECT_IO_ALIGN
    }

    /// Undoes [`Self::truncate`]: the buffer at the length it was made
    /// with, its bytes as they were left (a buffer reused for the next
    /// record is not zeroed again; its user overwrites what it writes).
    pub fn restore_length(&mut self) {
        self.len = self.capacity();
    }

    /// Whether empty (made with length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A range of an [`AlignedBuf`], shared with whoever else holds the
/// buffer: written without a copy by a buffered (not `O_DIRECT`) write, as
/// [`IoBuf::AlignedPart`](crate::IoBuf::AlignedPart). Its bytes need not
/// start at an aligned address. The buffer is freed when its last holder
/// (the write, once it completed) lets go of it.
#[derive(Debug, Clone)]
pub struct AlignedPart {
    buf: Rc<AlignedBuf>,
    start: usize,
    end: usize,
}

impl AlignedPart {
    /// The bytes `range` of `buf`; `None` when the range is not within it.
    pub fn new(buf: Rc<AlignedBuf>, range: Range<usize>) -> Option<AlignedPart> {
        (range.start <= range.end && range.end <= buf.len()).then_some(AlignedPart {
            buf,
            start: range.start,
            end: range.end,
        })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // Within: checked at `new`, and a shared buffer's length cannot
        // change (`truncate` needs it unshared).
        &self.buf.as_slice()[self.start..self.end]
    }

    /// The buffer the bytes are part of.
    pub fn buffer(&self) -> &Rc<AlignedBuf> {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_zeroed_and_padded() {
        for len in [0usize, 1, 4095, 4096, 4097, 100_000] {
            let mut buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % DIRECT_IO_ALIGN, 0);
            assert_eq!(buf.len() % DIRECT_IO_ALIGN, 0);
            assert!(buf.len() >= len && buf.len() < len + DIRECT_IO_ALIGN);
            assert!(buf.as_slice().iter().all(|&byte| byte == 0));
            buf.as_mut_slice().fill(7);
            // Moved, the bytes stay where they were.
            let address = buf.as_slice().as_ptr();
            let mut moved = Box::new(buf);
            assert_eq!(moved.as_slice().as_ptr(), address);
            moved.truncate(len / 2);
            assert_eq!(
                moved.len(),
                (len / 2).div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN
            );
            assert_eq!(moved.as_slice().as_ptr(), address);
            moved.restore_length();
            assert_eq!(moved.len(), len.div_ceil(DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN);
            assert!(moved.as_slice().iter().all(|&byte| byte == 7), "kept");
        }
    }

    #[test]
    fn a_part_is_the_range_of_its_buffer_and_never_past_it() {
        let mut buf = AlignedBuf::zeroed(8192);
        for (at, byte) in buf.as_mut_slice().iter_mut().enumerate() {
            *byte = (at % 251) as u8;
        }
        let buf = Rc::new(buf);
        let part = AlignedPart::new(Rc::clone(&buf), 100..5000).unwrap();
        assert_eq!(part.as_slice(), &buf.as_slice()[100..5000]);
        assert_eq!(
            part.as_slice().as_ptr(),
            buf.as_slice()[100..].as_ptr(),
            "not copied"
        );
        assert!(AlignedPart::new(Rc::clone(&buf), 0..8193).is_none());
        let (start, end) = (10, 9);
        assert!(AlignedPart::new(Rc::clone(&buf), start..end).is_none());
        assert_eq!(
            AlignedPart::new(Rc::clone(&buf), 8192..8192)
                .unwrap()
                .as_slice(),
            b""
        );
        drop(part);
        assert_eq!(Rc::strong_count(&buf), 1, "the part let go of the buffer");
    }
}
