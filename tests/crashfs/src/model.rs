//! The crash file system's state, without FUSE: inodes and their volatile
//! contents (what a running program reads back), the durable state (what a
//! power cut keeps), and the rules that move one into the other.
//!
//! The rules (Linux ext4-like, the conservative side of what POSIX and the
//! kernel promise; `docs/design/power-loss-testing.md` argues each):
//!
//! - File data and size: `fsync`/`fdatasync` of a file makes its data and
//!   size durable (the whole file, every handle's writes). A write through a
//!   handle opened `O_DSYNC`/`O_SYNC` (or a `RWF_DSYNC` write) is durable
//!   when it returns: its pages and the size it reached.
//! - Directory entries: a create, `mkdir`, unlink, `rmdir` or rename changes
//!   one or two directories; each change is *pending* until a directory it
//!   touches is `fsync`ed. Syncing a file never makes its entry durable.
//! - A rename is atomic, as on ext4 and XFS and as Sluice assumes
//!   (`docs/on-disk-format.md`): the `fsync` of either directory makes both
//!   halves durable together (never the unlink without the link).
//! - Changes to one name are ordered: each change carries a sequence number,
//!   and a durable entry is only ever replaced by a later change, so syncing
//!   directories in any order never resurrects an older state of a name.
//!
//! On a power cut ([`Model::power_cut`]) the durable namespace is walked from
//! the root; every reachable file keeps its durable data (empty if it was
//! never synced). With [`PowerLoss::tear`] the cut also keeps some of what
//! was not synced, as a real disk may: a seeded prefix of the pending
//! directory changes (a journal commits in order) and, per file, a seeded
//! subset of the pages that differ from their durable version, with either
//! the durable or the volatile size. Nothing is ever torn inside a page.
//!
//! Pages are shared (`Arc`) between the volatile and the durable copy of a
//! file, so a sync copies page pointers, not bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

mod data;
mod image;

pub use data::Data;
use data::{differing_pages, tear};
pub use image::Image;

/// The unit of torn writes and of sharing between volatile and durable data.
pub const PAGE_BYTES: usize = 4096;
const PAGE_BYTES_U64: u64 = PAGE_BYTES as u64;

/// An inode number; the root is 1, as FUSE wants.
pub type Ino = u64;
/// The root directory's inode number.
pub const ROOT_INO: Ino = 1;

/// Longest name in a directory (what ext4 allows).
pub const NAME_BYTES_MAX: usize = 255;

/// Why an operation failed; the FUSE layer maps each to its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// ENOENT.
    NotFound,
    /// EEXIST.
    Exists,
    /// ENOTDIR.
    NotDir,
    /// EISDIR.
    IsDir,
    /// ENOTEMPTY.
    NotEmpty,
    /// EINVAL.
    Invalid,
    /// ENAMETOOLONG.
    NameTooLong,
    /// ENOSPC: the configured capacity is used up.
    NoSpace,
    /// EIO: the power is off (every operation after the cut fails).
    PowerOff,
    /// EOPNOTSUPP.
    NotSupported,
    /// EBADF: an unknown file handle.
    BadHandle,
}

/// The two kinds of inode the file system holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What a power cut keeps beyond the durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerLoss {
    /// Seeds the choices below (same seed, same state: same result).
    pub seed: u64,
    /// Keep a seeded part of what was not synced: a prefix of the pending
    /// directory changes, and per file a subset of its unsynced pages with
    /// the durable or the volatile size. Off: only what was synced.
    pub tear: bool,
}

/// Counts of what the file system was asked to do (for the harness's
/// summary and to calibrate cut points).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Operations that change state (the clock of armed power cuts).
    pub mutations: u64,
    /// `write` requests.
    pub writes: u64,
    /// Writes made durable by `O_DSYNC`/`O_SYNC`.
    pub dsync_writes: u64,
    /// `fsync`/`fdatasync` of files.
    pub file_syncs: u64,
    /// `fsync` of directories.
    pub dir_syncs: u64,
    /// Renames.
    pub renames: u64,
    /// Files created.
    pub creates: u64,
    /// Unlinks and rmdirs.
    pub removes: u64,
}

/// What a power cut found, for the harness's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutSummary {
    /// The mutation the cut came before (it failed with EIO).
    pub at_mutation: u64,
    /// Directory changes pending (not durable) at the cut.
    pub pending_changes: usize,
    /// Of those, kept by a torn cut (a prefix).
    pub pending_changes_kept: usize,
    /// Pages that differed from their durable version in reachable files.
    pub unsynced_pages: u64,
    /// Of those, kept by a torn cut.
    pub unsynced_pages_kept: u64,
}

/// One inode's volatile state.
#[derive(Debug)]
struct Inode {
    node: Node,
    /// Names in the volatile namespace.
    nlink: u32,
    /// Open file handles.
    opens: u32,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

#[derive(Debug)]
enum Node {
    File(Data),
    Dir(BTreeMap<OsString, Ino>),
}

/// The attributes FUSE needs of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes (files); entries (directories).
    pub size: u64,
    /// Bytes held in pages.
    pub allocated_bytes: u64,
    /// Names linking to it (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last data change.
    pub mtime: SystemTime,
    /// Last change.
    pub ctime: SystemTime,
}

/// One pending change to one directory entry: `name` in `dir` becomes
/// `target` (None: removed).
#[derive(Debug, Clone)]
struct Change {
    dir: Ino,
    name: OsString,
    target: Option<Ino>,
}

#[derive(Debug, Clone, Copy)]
struct DurableEntry {
    target: Option<Ino>,
    /// The sequence number of the change that set it.
    seq: u64,
}

/// What survives a cut without tearing.
#[derive(Debug, Default, Clone)]
struct Durable {
    files: HashMap<Ino, Data>,
    dirs: HashMap<Ino, BTreeMap<OsString, DurableEntry>>,
    /// Durable entries naming each inode (for freeing the data of files no
    /// durable or pending name can reach).
    refs: HashMap<Ino, u32>,
}

impl Durable {
    /// Applies one change unless a later change already set that name.
    /// Returns the inode whose last durable name went away, if any.
    fn apply(&mut self, change: &Change, seq: u64) -> Option<Ino> {
        let entries = self.dirs.entry(change.dir).or_default();
        let previous = entries.get(&change.name).copied();
        if previous.is_some_and(|entry| entry.seq > seq) {
            return None;
        }
        entries.insert(
            change.name.clone(),
            DurableEntry {
                target: change.target,
                seq,
            },
        );
        if let Some(target) = change.target {
            *self.refs.entry(target).or_default() += 1;
        }
        let old = previous.and_then(|entry| entry.target)?;
        let count = self.refs.entry(old).or_default();
        debug_assert!(*count > 0, "durable reference count of {old} underflows");
        *count = count.saturating_sub(1);
        (*count == 0).then_some(old)
    }
}

/// The whole file system: volatile state, durable state, pending changes.
#[derive(Debug)]
pub struct Model {
    inodes: HashMap<Ino, Inode>,
    /// The kind of every inode ever made (an inode freed from the volatile
    /// state may still be named by a durable or pending entry).
    kinds: HashMap<Ino, Kind>,
    next_ino: Ino,
    /// Open handles: handle -> inode.
    handles: HashMap<u64, Ino>,
    next_handle: u64,
    durable: Durable,
    /// Pending directory changes by sequence number (one operation each).
    pending: BTreeMap<u64, Vec<Change>>,
    /// The pending operations touching each directory.
    pending_by_dir: HashMap<Ino, BTreeSet<u64>>,
    /// Pending changes naming each inode.
    pending_refs: HashMap<Ino, u32>,
    next_seq: u64,
    capacity_bytes: u64,
    used_bytes: u64,
    stats: Stats,
    /// Cut the power before this mutation (1-based), with these choices.
    armed_cut: Option<(u64, PowerLoss)>,
    /// Set by the cut: what survived. Every operation fails from then on.
    cut: Option<(Image, CutSummary)>,
}

impl Model {
    /// A file system holding `image` (all of it durable), with room for
    /// `capacity_bytes` of file data.
    pub fn new(image: Image, capacity_bytes: u64) -> Model {
        let now = SystemTime::now();
        let mut model = Model {
            inodes: HashMap::new(),
            kinds: HashMap::new(),
            next_ino: ROOT_INO + 1,
            handles: HashMap::new(),
            next_handle: 1,
            durable: Durable::default(),
            pending: BTreeMap::new(),
            pending_by_dir: HashMap::new(),
            pending_refs: HashMap::new(),
            next_seq: 1,
            capacity_bytes,
            used_bytes: 0,
            stats: Stats::default(),
            armed_cut: None,
            cut: None,
        };
        let mut nlinks: HashMap<Ino, u32> = HashMap::new();
        for entries in image.dirs.values() {
            for &target in entries.values() {
                *nlinks.entry(target).or_default() += 1;
                *model.durable.refs.entry(target).or_default() += 1;
            }
        }
        for (&ino, entries) in &image.dirs {
            model.durable.dirs.insert(
                ino,
                entries
                    .iter()
                    .map(|(name, &target)| {
                        (
                            name.clone(),
                            DurableEntry {
                                target: Some(target),
                                seq: 0,
                            },
                        )
                    })
                    .collect(),
            );
            model.insert_inode(ino, Node::Dir(entries.clone()), now);
        }
        for (&ino, data) in &image.files {
            model.used_bytes += data.allocated_bytes();
            model.durable.files.insert(ino, data.clone());
            model.insert_inode(ino, Node::File(data.clone()), now);
        }
        for (&ino, inode) in &mut model.inodes {
            inode.nlink = match inode.node {
                Node::Dir(_) => 2,
                Node::File(_) => nlinks.get(&ino).copied().unwrap_or(0),
            };
        }
        for (&parent, entries) in &image.dirs {
            let subdirs = entries
                .values()
                .filter(|ino| image.dirs.contains_key(ino))
                .count() as u32;
            if let Some(inode) = model.inodes.get_mut(&parent) {
                inode.nlink += subdirs;
            }
        }
        model.next_ino = image
            .dirs
            .keys()
            .chain(image.files.keys())
            .max()
            .map_or(ROOT_INO + 1, |max| max + 1);
        assert!(
            model.inodes.contains_key(&ROOT_INO),
            "an image always has its root directory"
        );
        model
    }

    fn insert_inode(&mut self, ino: Ino, node: Node, now: SystemTime) {
        self.kinds.insert(ino, node_kind(&node));
        self.inodes.insert(
            ino,
            Inode {
                node,
                nlink: 0,
                opens: 0,
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: now,
                ctime: now,
            },
        );
    }

    /// What the file system was asked to do so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Arms a power cut before mutation number `mutation` (counted from the
    /// mount, 1-based); a mutation already past cuts at the next one.
    pub fn arm_cut(&mut self, mutation: u64, loss: PowerLoss) {
        self.armed_cut = Some((mutation, loss));
    }

    /// True once the power is off.
    pub fn is_cut(&self) -> bool {
        self.cut.is_some()
    }

    /// The image that survived the cut, and what the cut found.
    pub fn cut_result(&self) -> Option<&(Image, CutSummary)> {
        self.cut.as_ref()
    }

    fn check_power(&self) -> Result<(), FsError> {
        if self.cut.is_some() {
            Err(FsError::PowerOff)
        } else {
            Ok(())
        }
    }

    /// Every state-changing operation starts here: it fails once the power
    /// is off, and an armed cut happens before the operation it names.
    fn begin_mutation(&mut self) -> Result<(), FsError> {
        self.check_power()?;
        self.stats.mutations += 1;
        if let Some((at, loss)) = self.armed_cut {
            if self.stats.mutations >= at {
                self.power_cut(loss);
                return Err(FsError::PowerOff);
            }
        }
        Ok(())
    }

    fn inode(&self, ino: Ino) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn dir_entries(&self, ino: Ino) -> Result<&BTreeMap<OsString, Ino>, FsError> {
        match &self.inode(ino)?.node {
            Node::Dir(entries) => Ok(entries),
            Node::File(_) => Err(FsError::NotDir),
        }
    }

    fn dir_entries_mut(&mut self, ino: Ino) -> Result<&mut BTreeMap<OsString, Ino>, FsError> {
        match &mut self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?.node {
            Node::Dir(entries) => Ok(entries),
            Node::File(_) => Err(FsError::NotDir),
        }
    }

    fn file_data_mut(&mut self, ino: Ino) -> Result<&mut Data, FsError> {
        match &mut self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?.node {
            Node::File(data) => Ok(data),
            Node::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: Ino) -> Result<Attr, FsError> {
        self.check_power()?;
        let inode = self.inode(ino)?;
        let (kind, size, allocated_bytes) = match &inode.node {
            Node::File(data) => (Kind::File, data.size(), data.allocated_bytes()),
            Node::Dir(entries) => (Kind::Dir, entries.len() as u64, PAGE_BYTES_U64),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            allocated_bytes,
            nlink: inode.nlink,
            perm: inode.perm,
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime,
            ctime: inode.ctime,
        })
    }

    /// The inode named `name` in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, FsError> {
        self.check_power()?;
        let ino = self.entry(parent, name)?;
        self.attr(ino)
    }

    /// The entries of directory `ino`, in name order.
    pub fn read_dir(&self, ino: Ino) -> Result<Vec<(OsString, Ino, Kind)>, FsError> {
        self.check_power()?;
        let entries = self.dir_entries(ino)?;
        Ok(entries
            .iter()
            .map(|(name, &target)| {
                let kind = match self.inodes.get(&target).map(|inode| &inode.node) {
                    Some(Node::Dir(_)) => Kind::Dir,
                    _ => Kind::File,
                };
                (name.clone(), target, kind)
            })
            .collect())
    }

    /// Records a pending operation (its changes must all become durable together).
    fn record(&mut self, changes: Vec<Change>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for change in &changes {
            self.pending_by_dir
                .entry(change.dir)
                .or_default()
                .insert(seq);
            if let Some(target) = change.target {
                *self.pending_refs.entry(target).or_default() += 1;
            }
        }
        self.pending.insert(seq, changes);
    }

    fn check_name(name: &OsStr) -> Result<(), FsError> {
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::Invalid);
        }
        if name.len() > NAME_BYTES_MAX {
            return Err(FsError::NameTooLong);
        }
        Ok(())
    }

    fn new_inode(&mut self, node: Node, perm: u16, uid: u32, gid: u32) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.kinds.insert(ino, node_kind(&node));
        let now = SystemTime::now();
        let nlink = match node {
            Node::Dir(_) => 2,
            Node::File(_) => 1,
        };
        self.inodes.insert(
            ino,
            Inode {
                node,
                nlink,
                opens: 0,
                perm,
                uid,
                gid,
                mtime: now,
                ctime: now,
            },
        );
        ino
    }

    fn touch(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            inode.mtime = now;
            inode.ctime = now;
        }
    }

    /// Creates a file (`O_CREAT|O_EXCL` semantics: an existing name is
    /// EEXIST) and opens it; returns its attributes and a handle.
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
        flags: i32,
    ) -> Result<(Attr, u64), FsError> {
        let ino = self.add_entry(parent, name, Node::File(Data::default()), perm, uid, gid)?;
        let handle = self.open(ino, flags)?;
        Ok((self.attr(ino)?, handle))
    }

    /// Creates a directory.
    pub fn mkdir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Attr, FsError> {
        let ino = self.add_entry(parent, name, Node::Dir(BTreeMap::new()), perm, uid, gid)?;
        if let Some(inode) = self.inodes.get_mut(&parent) {
            inode.nlink += 1;
        }
        self.attr(ino)
    }

    /// The mutation shared by create and mkdir: a new inode under a new
    /// name, pending.
    fn add_entry(
        &mut self,
        parent: Ino,
        name: &OsStr,
        node: Node,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Ino, FsError> {
        Self::check_name(name)?;
        if self.dir_entries(parent)?.contains_key(name) {
            return Err(FsError::Exists);
        }
        self.begin_mutation()?;
        let ino = self.new_inode(node, perm, uid, gid);
        self.dir_entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        self.record(vec![Change {
            dir: parent,
            name: name.to_owned(),
            target: Some(ino),
        }]);
        self.stats.creates += 1;
        Ok(ino)
    }

    /// Opens `ino`; the handle's flags are not kept (every write carries the
    /// flags that decide its durability).
    pub fn open(&mut self, ino: Ino, _flags: i32) -> Result<u64, FsError> {
        self.check_power()?;
        let inode = self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        inode.opens += 1;
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle, ino);
        Ok(handle)
    }

    /// Closes a handle; an unlinked file's last close frees it. Works after
    /// the cut too (the kernel releases handles of a dead process).
    pub fn release(&mut self, handle: u64) {
        let Some(ino) = self.handles.remove(&handle) else {
            return;
        };
        if let Some(inode) = self.inodes.get_mut(&ino) {
            debug_assert!(inode.opens > 0, "release of {ino} with no open handle");
            inode.opens = inode.opens.saturating_sub(1);
        }
        self.maybe_free(ino);
    }

    /// Drops an inode that no name and no handle holds; its durable data
    /// goes too when no durable or pending name can bring it back.
    fn maybe_free(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if inode.nlink > 0 || inode.opens > 0 {
            return;
        }
        if let Some(Inode {
            node: Node::File(data),
            ..
        }) = self.inodes.remove(&ino)
        {
            self.used_bytes = self.used_bytes.saturating_sub(data.allocated_bytes());
        }
        self.maybe_forget_durable(ino);
    }

    fn maybe_forget_durable(&mut self, ino: Ino) {
        let durable_refs = self.durable.refs.get(&ino).copied().unwrap_or(0);
        let pending_refs = self.pending_refs.get(&ino).copied().unwrap_or(0);
        if durable_refs == 0 && pending_refs == 0 && !self.inodes.contains_key(&ino) {
            self.durable.files.remove(&ino);
            self.durable.refs.remove(&ino);
        }
    }

    /// Reads up to `length` bytes at `offset` of an open file.
    pub fn read(&self, ino: Ino, offset: u64, length: usize) -> Result<Vec<u8>, FsError> {
        self.check_power()?;
        match &self.inode(ino)?.node {
            Node::File(data) => Ok(data.read(offset, length)),
            Node::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// Writes `bytes` at `offset`; `flags` are the write's file flags
    /// (`O_DSYNC`/`O_SYNC` there make it durable before it returns).
    pub fn write(
        &mut self,
        ino: Ino,
        offset: u64,
        bytes: &[u8],
        flags: i32,
    ) -> Result<usize, FsError> {
        let end = offset
            .checked_add(bytes.len() as u64)
            .ok_or(FsError::Invalid)?;
        let before = match &self.inode(ino)?.node {
            Node::File(data) => data.allocated_bytes(),
            Node::Dir(_) => return Err(FsError::IsDir),
        };
        let new_pages = match &self.inode(ino)?.node {
            Node::File(data) if !bytes.is_empty() => (offset / PAGE_BYTES_U64
                ..end.div_ceil(PAGE_BYTES_U64))
                .filter(|index| !data.pages.contains_key(index))
                .count() as u64,
            _ => 0,
        };
        if self.used_bytes + new_pages * PAGE_BYTES_U64 > self.capacity_bytes {
            return Err(FsError::NoSpace);
        }
        self.begin_mutation()?;
        let data = self.file_data_mut(ino)?;
        data.write(offset, bytes);
        let after = data.allocated_bytes();
        self.used_bytes = self.used_bytes + after - before;
        self.stats.writes += 1;
        if flags & libc::O_DSYNC != 0 {
            // O_SYNC includes the O_DSYNC bit on Linux.
            let volatile = self.file_data_mut(ino)?.clone();
            self.durable
                .files
                .entry(ino)
                .or_default()
                .take_range(&volatile, offset, end);
            self.stats.dsync_writes += 1;
        }
        self.touch(ino);
        Ok(bytes.len())
    }

    /// Sets the size (truncate or extend).
    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<Attr, FsError> {
        self.begin_mutation()?;
        let data = self.file_data_mut(ino)?;
        let before = data.allocated_bytes();
        data.set_size(size);
        let after = data.allocated_bytes();
        self.used_bytes = self.used_bytes + after - before;
        self.touch(ino);
        self.attr(ino)
    }

    /// Sets the permission bits and owner (not part of the durability model:
    /// they survive a cut as they were at mount).
    pub fn set_owner_mode(
        &mut self,
        ino: Ino,
        perm: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Attr, FsError> {
        self.check_power()?;
        let inode = self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        if let Some(perm) = perm {
            inode.perm = perm;
        }
        if let Some(uid) = uid {
            inode.uid = uid;
        }
        if let Some(gid) = gid {
            inode.gid = gid;
        }
        inode.ctime = SystemTime::now();
        self.attr(ino)
    }

    /// `fallocate`: mode 0 extends the size to `offset + length` if smaller;
    /// `FALLOC_FL_KEEP_SIZE` changes nothing visible. Space is not reserved
    /// (pages are allocated by writes); the capacity is checked.
    pub fn fallocate(
        &mut self,
        ino: Ino,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), FsError> {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(FsError::NotSupported);
        }
        let end = offset.checked_add(length).ok_or(FsError::Invalid)?;
        if length == 0 {
            return Err(FsError::Invalid);
        }
        let size = match &self.inode(ino)?.node {
            Node::File(data) => data.size(),
            Node::Dir(_) => return Err(FsError::IsDir),
        };
        if end.saturating_sub(size) > self.capacity_bytes.saturating_sub(self.used_bytes) {
            return Err(FsError::NoSpace);
        }
        self.begin_mutation()?;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > size {
            self.file_data_mut(ino)?.set_size(end);
            self.touch(ino);
        }
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its data and size become durable.
    /// Its directory entry does not.
    pub fn sync_file(&mut self, ino: Ino) -> Result<(), FsError> {
        self.begin_mutation()?;
        let data = match &self.inode(ino)?.node {
            Node::File(data) => data.clone(),
            // fsync of a directory through a file handle: the kernel sends
            // FSYNCDIR for directories, but be exact if it does not.
            Node::Dir(_) => return self.sync_dir_entries(ino),
        };
        self.durable.files.insert(ino, data);
        self.stats.file_syncs += 1;
        Ok(())
    }

    /// `fsync` of a directory: every pending operation touching it becomes
    /// durable (a rename: both its halves).
    pub fn sync_dir(&mut self, ino: Ino) -> Result<(), FsError> {
        self.begin_mutation()?;
        self.dir_entries(ino)?;
        self.sync_dir_entries(ino)
    }

    fn sync_dir_entries(&mut self, ino: Ino) -> Result<(), FsError> {
        self.stats.dir_syncs += 1;
        let seqs = self.pending_by_dir.remove(&ino).unwrap_or_default();
        let mut released = Vec::new();
        for seq in seqs {
            let Some(changes) = self.pending.remove(&seq) else {
                continue;
            };
            for change in &changes {
                if change.dir != ino {
                    if let Some(others) = self.pending_by_dir.get_mut(&change.dir) {
                        others.remove(&seq);
                    }
                }
                if let Some(target) = change.target {
                    let count = self.pending_refs.entry(target).or_default();
                    *count = count.saturating_sub(1);
                    released.push(target);
                }
                released.extend(self.durable.apply(change, seq));
            }
        }
        for target in released {
            self.maybe_forget_durable(target);
        }
        Ok(())
    }

    /// Makes everything durable, as a journal commit of the whole file
    /// system (or `sync(2)` on a file system that honours it) does: every
    /// pending directory change and every file's data. Not a mutation: the
    /// harness's way to start a round from a settled disk.
    pub fn sync_all(&mut self) -> Result<(), FsError> {
        self.check_power()?;
        let pending = std::mem::take(&mut self.pending);
        self.pending_by_dir.clear();
        self.pending_refs.clear();
        let mut released = Vec::new();
        for (seq, changes) in &pending {
            for change in changes {
                released.extend(self.durable.apply(change, *seq));
            }
        }
        for (&ino, inode) in &self.inodes {
            if let Node::File(data) = &inode.node {
                self.durable.files.insert(ino, data.clone());
            }
        }
        for ino in released {
            self.maybe_forget_durable(ino);
        }
        Ok(())
    }

    /// Removes the file `name` from `parent`.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        let ino = self.entry(parent, name)?;
        if matches!(self.inode(ino)?.node, Node::Dir(_)) {
            return Err(FsError::IsDir);
        }
        self.remove_entry(parent, name)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlink = inode.nlink.saturating_sub(1);
            inode.ctime = SystemTime::now();
        }
        self.maybe_free(ino);
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        let ino = self.entry(parent, name)?;
        if !self.dir_entries(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.remove_entry(parent, name)?;
        if let Some(inode) = self.inodes.get_mut(&parent) {
            inode.nlink = inode.nlink.saturating_sub(1);
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlink = 0;
        }
        self.maybe_free(ino);
        Ok(())
    }

    /// The inode `name` names in `parent`.
    fn entry(&self, parent: Ino, name: &OsStr) -> Result<Ino, FsError> {
        self.dir_entries(parent)?
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    /// The mutation shared by unlink and rmdir: the name goes, pending.
    fn remove_entry(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        self.begin_mutation()?;
        self.dir_entries_mut(parent)?.remove(name);
        self.touch(parent);
        self.record(vec![Change {
            dir: parent,
            name: name.to_owned(),
            target: None,
        }]);
        self.stats.removes += 1;
        Ok(())
    }

    /// True if `ancestor` is `ino` or contains it (volatile namespace).
    fn contains_dir(&self, ancestor: Ino, ino: Ino) -> bool {
        if ancestor == ino {
            return true;
        }
        let Ok(entries) = self.dir_entries(ancestor) else {
            return false;
        };
        entries.values().any(|&child| {
            matches!(self.inodes.get(&child).map(|i| &i.node), Some(Node::Dir(_)))
                && self.contains_dir(child, ino)
        })
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file
    /// there (or an empty directory by a directory) unless `no_replace`.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), FsError> {
        Self::check_name(new_name)?;
        let ino = self.entry(parent, name)?;
        let replaced = self.dir_entries(new_parent)?.get(new_name).copied();
        if replaced == Some(ino) {
            return Ok(());
        }
        let moving_dir = matches!(self.inode(ino)?.node, Node::Dir(_));
        if moving_dir && self.contains_dir(ino, new_parent) {
            return Err(FsError::Invalid);
        }
        if let Some(old) = replaced {
            if no_replace {
                return Err(FsError::Exists);
            }
            match (&self.inode(old)?.node, moving_dir) {
                (Node::Dir(entries), true) if !entries.is_empty() => return Err(FsError::NotEmpty),
                (Node::Dir(_), false) => return Err(FsError::IsDir),
                (Node::File(_), true) => return Err(FsError::NotDir),
                _ => {}
            }
        }
        self.begin_mutation()?;
        self.dir_entries_mut(parent)?.remove(name);
        self.dir_entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        self.touch(parent);
        self.touch(new_parent);
        if moving_dir && parent != new_parent {
            if let Some(inode) = self.inodes.get_mut(&parent) {
                inode.nlink = inode.nlink.saturating_sub(1);
            }
            if let Some(inode) = self.inodes.get_mut(&new_parent) {
                inode.nlink += 1;
            }
        }
        self.record(vec![
            Change {
                dir: parent,
                name: name.to_owned(),
                target: None,
            },
            Change {
                dir: new_parent,
                name: new_name.to_owned(),
                target: Some(ino),
            },
        ]);
        self.stats.renames += 1;
        if let Some(old) = replaced {
            if let Some(inode) = self.inodes.get_mut(&old) {
                inode.nlink = match inode.node {
                    Node::Dir(_) => 0,
                    Node::File(_) => inode.nlink.saturating_sub(1),
                };
            }
            if moving_dir {
                if let Some(inode) = self.inodes.get_mut(&new_parent) {
                    inode.nlink = inode.nlink.saturating_sub(1);
                }
            }
            self.maybe_free(old);
        }
        Ok(())
    }

    /// `statvfs`: (capacity, free) in bytes.
    pub fn space(&self) -> Result<(u64, u64), FsError> {
        self.check_power()?;
        Ok((
            self.capacity_bytes,
            self.capacity_bytes.saturating_sub(self.used_bytes),
        ))
    }

    /// Number of inodes (for statvfs).
    pub fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    /// Cuts the power now: computes what survives (see the module's
    /// rules), and fails every operation from then on. A second cut keeps
    /// the first one's result.
    pub fn power_cut(&mut self, loss: PowerLoss) -> &(Image, CutSummary) {
        if self.cut.is_none() {
            let result = self.surviving_image(loss);
            self.cut = Some(result);
        }
        self.armed_cut = None;
        self.cut.as_ref().expect("set just above")
    }

    /// What a power cut with `loss` would keep, without cutting.
    pub fn surviving_image(&self, loss: PowerLoss) -> (Image, CutSummary) {
        let mut rng = XorShiftRng::seed_from_u64(loss.seed);
        let mut summary = CutSummary {
            at_mutation: self.stats.mutations,
            pending_changes: self.pending.len(),
            ..CutSummary::default()
        };
        // Directory entries: the durable ones, plus (torn) a prefix of the
        // pending operations in the order they were made.
        let mut durable = self.durable.clone();
        if loss.tear && !self.pending.is_empty() {
            let kept = rng.random_range(0..=self.pending.len());
            for (&seq, changes) in self.pending.iter().take(kept) {
                for change in changes {
                    durable.apply(change, seq);
                }
            }
            summary.pending_changes_kept = kept;
        }
        let mut image = Image {
            files: HashMap::new(),
            dirs: HashMap::new(),
        };
        // Walk the durable namespace from the root; a directory reached
        // twice keeps its first name only (a tree, whatever the pending
        // order left).
        let mut stack = vec![ROOT_INO];
        let mut seen = BTreeSet::from([ROOT_INO]);
        while let Some(dir) = stack.pop() {
            let mut entries = BTreeMap::new();
            for (name, entry) in durable.dirs.get(&dir).into_iter().flatten() {
                let Some(target) = entry.target else {
                    continue;
                };
                if self.is_dir_inode(target) {
                    if seen.insert(target) {
                        stack.push(target);
                        entries.insert(name.clone(), target);
                    }
                    continue;
                }
                entries.insert(name.clone(), target);
                if image.files.contains_key(&target) {
                    continue;
                }
                let synced = durable.files.get(&target).cloned().unwrap_or_default();
                let data = match (loss.tear, self.inodes.get(&target).map(|i| &i.node)) {
                    (true, Some(Node::File(volatile))) => {
                        tear(&synced, volatile, &mut rng, &mut summary)
                    }
                    _ => {
                        if let Some(Node::File(volatile)) =
                            self.inodes.get(&target).map(|i| &i.node)
                        {
                            summary.unsynced_pages +=
                                differing_pages(&synced, volatile).len() as u64;
                        }
                        synced
                    }
                };
                image.files.insert(target, data);
            }
            image.dirs.insert(dir, entries);
        }
        (image, summary)
    }

    /// Whether `ino` is a directory.
    fn is_dir_inode(&self, ino: Ino) -> bool {
        self.kinds.get(&ino) == Some(&Kind::Dir)
    }
}

fn node_kind(node: &Node) -> Kind {
    match node {
        Node::File(_) => Kind::File,
        Node::Dir(_) => Kind::Dir,
    }
}

#[cfg(test)]
mod tests;
