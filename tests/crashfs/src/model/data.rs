//! A file's contents as the crash file system holds them: sparse 4 KiB
//! pages shared (`Arc`) between the volatile and the durable copy, and what
//! a torn power cut makes of the two.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::RngExt;
use rand_xorshift::XorShiftRng;

use super::{CutSummary, PAGE_BYTES, PAGE_BYTES_U64};

type Page = Arc<[u8; PAGE_BYTES]>;

/// A file's contents: sparse pages (an absent page reads as zeros) and a
/// size. Invariant: bytes of a stored page past `size` are zero, so growing
/// the size never exposes old bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    pub(super) pages: BTreeMap<u64, Page>,
    pub(super) size: u64,
}

impl Data {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in pages (what statvfs counts as used).
    pub fn allocated_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_BYTES_U64
    }

    /// Up to `length` bytes from `offset`, stopping at the size.
    pub fn read(&self, offset: u64, length: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(length as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let mut position = offset;
        while position < end {
            let index = position / PAGE_BYTES_U64;
            let in_page = (position % PAGE_BYTES_U64) as usize;
            let take = (PAGE_BYTES - in_page).min((end - position) as usize);
            if let Some(page) = self.pages.get(&index) {
                let at = (position - offset) as usize;
                out[at..at + take].copy_from_slice(&page[in_page..in_page + take]);
            }
            position += take as u64;
        }
        out
    }

    /// The whole file.
    pub fn contents(&self) -> Vec<u8> {
        self.read(0, self.size as usize)
    }

    /// Writes `bytes` at `offset`, growing the size if it ends past it.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) {
        let mut position = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let index = position / PAGE_BYTES_U64;
            let in_page = (position % PAGE_BYTES_U64) as usize;
            let take = (PAGE_BYTES - in_page).min(rest.len());
            let page = self
                .pages
                .entry(index)
                .or_insert_with(|| Arc::new([0u8; PAGE_BYTES]));
            Arc::make_mut(page)[in_page..in_page + take].copy_from_slice(&rest[..take]);
            position += take as u64;
            rest = &rest[take..];
        }
        self.size = self.size.max(offset.saturating_add(bytes.len() as u64));
    }

    /// Truncates or extends to `size` (an extension reads as zeros).
    pub fn set_size(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE_BYTES_U64);
            self.pages.retain(|&index, _| index < first_gone);
            let in_page = (size % PAGE_BYTES_U64) as usize;
            if in_page != 0 {
                if let Some(page) = self.pages.get_mut(&(size / PAGE_BYTES_U64)) {
                    Arc::make_mut(page)[in_page..].fill(0);
                }
            }
        }
        self.size = size;
    }

    /// Copies into `self` the pages of `from` that cover `[offset, end)`,
    /// and grows the size to `end` if needed: what an `O_DSYNC` write makes
    /// durable.
    pub(super) fn take_range(&mut self, from: &Data, offset: u64, end: u64) {
        if end <= offset {
            return;
        }
        for index in offset / PAGE_BYTES_U64..end.div_ceil(PAGE_BYTES_U64) {
            match from.pages.get(&index) {
                Some(page) => {
                    self.pages.insert(index, Arc::clone(page));
                }
                None => {
                    self.pages.remove(&index);
                }
            }
        }
        if end > self.size {
            self.size = end;
        }
        // Pages past a smaller size must read as zeros (the invariant).
        let size = self.size;
        self.set_size(size);
    }
}

/// Page indexes whose content differs between the two versions of a file
/// (within the larger of the two sizes).
pub(super) fn differing_pages(synced: &Data, volatile: &Data) -> Vec<u64> {
    let last = synced.size.max(volatile.size).div_ceil(PAGE_BYTES_U64);
    let indexes: BTreeSet<u64> = synced
        .pages
        .keys()
        .chain(volatile.pages.keys())
        .copied()
        .filter(|&index| index < last)
        .collect();
    indexes
        .into_iter()
        .filter(
            |index| match (synced.pages.get(index), volatile.pages.get(index)) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a[..] != b[..],
                (Some(page), None) | (None, Some(page)) => page.iter().any(|&byte| byte != 0),
                (None, None) => false,
            },
        )
        .collect()
}

/// A torn version of a file: the synced data with a seeded subset of the
/// differing pages taken from the volatile version, and one of the two sizes.
pub(super) fn tear(
    synced: &Data,
    volatile: &Data,
    rng: &mut XorShiftRng,
    summary: &mut CutSummary,
) -> Data {
    let differing = differing_pages(synced, volatile);
    let mut torn = synced.clone();
    let size = if synced.size != volatile.size && rng.random_bool(0.5) {
        volatile.size
    } else {
        synced.size
    };
    summary.unsynced_pages += differing.len() as u64;
    for index in differing {
        if rng.random_bool(0.5) {
            summary.unsynced_pages_kept += 1;
            match volatile.pages.get(&index) {
                Some(page) => {
                    torn.pages.insert(index, Arc::clone(page));
                }
                None => {
                    torn.pages.remove(&index);
                }
            }
        }
    }
    // Zero what lies past the chosen size (the invariant), then set it.
    torn.size = torn.size.max(volatile.size);
    torn.set_size(size);
    torn
}
