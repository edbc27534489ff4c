//! The simulation's disk: files whose bytes are volatile until synced, and
//! directory entries whose changes are volatile until their directory is
//! synced. The rules are the crash file system's (`tests/crashfs`,
//! docs/design/power-loss-testing.md), on the few names the files layout
//! uses: one name per file id in `tmp/`, in a fan-out directory of
//! `objects/` or `quarantine/`, or in `orphans/`.
//!
//! - A write changes the file's volatile bytes; `fdatasync` makes them (and
//!   the size) durable. A failed `fdatasync` keeps a seeded part of them.
//! - Create, rename and unlink change the volatile names at once and are
//!   durable when a directory they touch is synced (a rename whole, both
//!   names, when either is). Changes to one name stay in order: a durable
//!   name is only replaced by a later change.
//! - A power cut keeps the durable names and bytes, and, when it tears, a
//!   seeded prefix of the pending name changes (a journal commits in order)
//!   and a seeded part of each file's unsynced 8-byte pages, with either
//!   size.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sluice_index::FileId;

use super::Rng;

/// Where a name lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Place {
    Tmp,
    Objects,
    Quarantine,
    Orphans,
}

/// A file's name: its place and its file id (the layout names files by id).
pub(super) type Name = (Place, FileId);

/// A directory: a place and, for the two areas, a fan-out directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct DirKey {
    place: Place,
    fanout: u8,
}

/// The directory holding `name`: the areas fan out over two directories.
pub(super) fn dir_of((place, file_id): Name) -> DirKey {
    let fanout = match place {
        Place::Objects | Place::Quarantine => (file_id.0 % 2) as u8,
        Place::Tmp | Place::Orphans => 0,
    };
    DirKey { place, fanout }
}

impl DirKey {
    /// A path naming the directory, for the directory fsync rounds.
    pub(super) fn path(self) -> PathBuf {
        PathBuf::from(format!("{:?}/{}", self.place, self.fanout))
    }

    /// The directory a path of [`DirKey::path`] names.
    pub(super) fn from_path(path: &std::path::Path) -> DirKey {
        let text = path.to_string_lossy();
        let (place, fanout) = text.split_once('/').unwrap_or(("", "0"));
        let place = match place {
            "Tmp" => Place::Tmp,
            "Objects" => Place::Objects,
            "Quarantine" => Place::Quarantine,
            "Orphans" => Place::Orphans,
            other => panic!("no place {other}"),
        };
        DirKey {
            place,
            fanout: fanout.parse().unwrap_or(0),
        }
    }
}

/// Bytes per page a torn cut keeps or drops whole.
const PAGE_BYTES: usize = 8;

#[derive(Debug, Clone, Default)]
struct Inode {
    volatile: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Change {
    Link(Name, u32),
    Unlink(Name),
    Rename(Name, Name, u32),
}

impl Change {
    fn touches(&self, dir: DirKey) -> bool {
        match self {
            Change::Link(name, _) | Change::Unlink(name) => dir_of(*name) == dir,
            Change::Rename(from, to, _) => dir_of(*from) == dir || dir_of(*to) == dir,
        }
    }
}

/// An I/O error of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DiskError {
    NotFound,
    Exists,
}

/// The simulated disk.
#[derive(Debug, Clone, Default)]
pub(super) struct Disk {
    inodes: BTreeMap<u32, Inode>,
    next_ino: u32,
    names: BTreeMap<Name, u32>,
    durable_names: BTreeMap<Name, u32>,
    /// Sequence number of the last durable change of each name.
    durable_seq: BTreeMap<Name, u64>,
    pending: Vec<(u64, Change)>,
    next_seq: u64,
    handles: BTreeMap<u32, u32>,
    next_handle: u32,
}

impl Disk {
    /// `open(O_CREAT | O_EXCL)`: a handle on a new, empty file.
    pub(super) fn create(&mut self, name: Name) -> Result<u32, DiskError> {
        if self.names.contains_key(&name) {
            return Err(DiskError::Exists);
        }
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(ino, Inode::default());
        self.names.insert(name, ino);
        self.change(Change::Link(name, ino));
        self.next_handle += 1;
        self.handles.insert(self.next_handle, ino);
        Ok(self.next_handle)
    }

    fn change(&mut self, change: Change) {
        self.next_seq += 1;
        self.pending.push((self.next_seq, change));
    }

    fn inode_of_handle(&mut self, handle: u32) -> &mut Inode {
        let Some(ino) = self.handles.get(&handle) else {
            panic!("handle {handle} is not open");
        };
        let Some(inode) = self.inodes.get_mut(ino) else {
            panic!("handle {handle} names no file");
        };
        inode
    }

    /// `pwrite`: `bytes` at `offset` (of which only the first `landed`
    /// reach the file: a write that failed part way).
    pub(super) fn write(&mut self, handle: u32, offset: u64, bytes: &[u8], landed: usize) {
        let inode = self.inode_of_handle(handle);
        let offset = offset as usize;
        let bytes = &bytes[..landed.min(bytes.len())];
        if inode.volatile.len() < offset + bytes.len() {
            inode.volatile.resize(offset + bytes.len(), 0);
        }
        inode.volatile[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// `fdatasync`: succeeded, the volatile bytes are durable; failed, a
    /// seeded part of them is.
    pub(super) fn sync_data(&mut self, handle: u32, succeeded: bool, rng: &mut Rng) {
        let inode = self.inode_of_handle(handle);
        if succeeded {
            inode.durable = inode.volatile.clone();
        } else {
            inode.durable = torn(&inode.durable, &inode.volatile, rng);
        }
    }

    pub(super) fn close(&mut self, handle: u32) {
        let closed = self.handles.remove(&handle);
        assert!(closed.is_some(), "closed handle {handle} twice");
    }

    pub(super) fn rename(&mut self, from: Name, to: Name) -> Result<(), DiskError> {
        let Some(ino) = self.names.remove(&from) else {
            return Err(DiskError::NotFound);
        };
        self.names.insert(to, ino);
        self.change(Change::Rename(from, to, ino));
        Ok(())
    }

    pub(super) fn unlink(&mut self, name: Name) -> Result<(), DiskError> {
        if self.names.remove(&name).is_none() {
            return Err(DiskError::NotFound);
        }
        self.change(Change::Unlink(name));
        Ok(())
    }

    /// `fsync` of a directory: every pending change touching it is durable.
    pub(super) fn sync_dir(&mut self, dir: DirKey) {
        let pending = std::mem::take(&mut self.pending);
        let (now, later): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, change)| change.touches(dir));
        self.pending = later;
        for (seq, change) in now {
            self.make_durable(seq, &change);
        }
    }

    fn make_durable(&mut self, seq: u64, change: &Change) {
        let set = |disk: &mut Disk, name: Name, ino: Option<u32>| {
            if disk.durable_seq.get(&name).is_some_and(|&last| last >= seq) {
                return;
            }
            disk.durable_seq.insert(name, seq);
            match ino {
                Some(ino) => disk.durable_names.insert(name, ino),
                None => disk.durable_names.remove(&name),
            };
        };
        match *change {
            Change::Link(name, ino) => set(self, name, Some(ino)),
            Change::Unlink(name) => set(self, name, None),
            Change::Rename(from, to, ino) => {
                set(self, from, None);
                set(self, to, Some(ino));
            }
        }
    }

    /// The volatile bytes of the file at `name`.
    pub(super) fn read(&self, name: Name) -> Option<&[u8]> {
        let ino = self.names.get(&name)?;
        self.inodes.get(ino).map(|inode| inode.volatile.as_slice())
    }

    /// The file ids named in `place`.
    pub(super) fn files_in(&self, place: Place) -> Vec<FileId> {
        self.names
            .keys()
            .filter(|(at, _)| *at == place)
            .map(|(_, file_id)| *file_id)
            .collect()
    }

    /// Handles still open.
    pub(super) fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// What a power cut leaves: the durable names and bytes, and when
    /// `tear`, a seeded prefix of the pending name changes and a seeded
    /// part of the unsynced pages. The result is all durable, no handle
    /// open.
    pub(super) fn power_cut(&self, tear: bool, rng: &mut Rng) -> Disk {
        let mut survivor = self.clone();
        survivor.handles.clear();
        let pending = std::mem::take(&mut survivor.pending);
        if tear {
            let kept = rng.below(pending.len() as u64 + 1) as usize;
            for (seq, change) in pending.iter().take(kept) {
                survivor.make_durable(*seq, change);
            }
        }
        survivor.names = survivor.durable_names.clone();
        let reachable: std::collections::BTreeSet<u32> = survivor.names.values().copied().collect();
        survivor.inodes.retain(|ino, _| reachable.contains(ino));
        for inode in survivor.inodes.values_mut() {
            let bytes = if tear {
                torn(&inode.durable, &inode.volatile, rng)
            } else {
                inode.durable.clone()
            };
            inode.durable = bytes.clone();
            inode.volatile = bytes;
        }
        survivor
    }

    /// Recovery's blocking move: the rename and both directories synced.
    pub(super) fn move_durably(&mut self, from: Name, to: Name) {
        if self.rename(from, to).is_ok() {
            self.sync_dir(dir_of(from));
            self.sync_dir(dir_of(to));
        }
    }

    /// Recovery's removal: unlinked and its directory synced.
    pub(super) fn remove_durably(&mut self, name: Name) {
        if self.unlink(name).is_ok() {
            self.sync_dir(dir_of(name));
        }
    }
}

/// A mix of `durable` and `volatile`: each page from either, the size from
/// either.
fn torn(durable: &[u8], volatile: &[u8], rng: &mut Rng) -> Vec<u8> {
    let size = if rng.chance(1, 2) {
        volatile.len()
    } else {
        durable.len()
    };
    let mut bytes = vec![0u8; size];
    for page in 0..size.div_ceil(PAGE_BYTES) {
        let start = page * PAGE_BYTES;
        let end = (start + PAGE_BYTES).min(size);
        let source = if rng.chance(1, 2) { volatile } else { durable };
        for (offset, byte) in bytes[start..end].iter_mut().enumerate() {
            *byte = source.get(start + offset).copied().unwrap_or(0);
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_keeps_what_was_synced_only() {
        let mut rng = Rng::new(1);
        let mut disk = Disk::default();
        let tmp = (Place::Tmp, FileId(2));
        let placed = (Place::Objects, FileId(2));
        let handle = disk.create(tmp).unwrap();
        disk.write(handle, 0, b"abcdefgh12345678", 16);
        disk.rename(tmp, placed).unwrap();
        let cut = disk.power_cut(false, &mut rng);
        assert_eq!(cut.read(placed), None, "nothing synced");
        disk.sync_data(handle, true, &mut rng);
        disk.sync_dir(dir_of(placed));
        let cut = disk.power_cut(false, &mut rng);
        assert_eq!(cut.read(placed), Some(&b"abcdefgh12345678"[..]));
        assert_eq!(cut.read(tmp), None, "the rename is durable whole");
        // A later sync of tmp/ does not bring the older name back.
        disk.sync_dir(dir_of(tmp));
        assert_eq!(disk.power_cut(false, &mut rng).read(tmp), None);
        // An unlink not synced is undone by a cut.
        disk.unlink(placed).unwrap();
        assert!(disk.power_cut(false, &mut rng).read(placed).is_some());
        disk.sync_dir(dir_of(placed));
        assert!(disk.power_cut(false, &mut rng).read(placed).is_none());
    }
}
