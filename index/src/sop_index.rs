//! The SOP Instance UID index: an LSM tree (fjall) beside LMDB.
//!
//! LMDB holds every instance under `series id ++ SOP Instance UID`
//! (`instances`), so the instances of a series are written side by side,
//! whatever their UIDs. What LMDB cannot answer cheaply is "where is this SOP
//! Instance UID?" without a table keyed by the UID, and a B-tree keyed by
//! random UIDs writes one scattered page per insert
//! (docs/design/index-at-scale.md). This module answers it from an LSM tree,
//! which turns those inserts into sequential writes:
//!
//! One partition, `sop`: `SipHash-1-3(key, SOP Instance UID)` (8 bytes, big
//! endian) -> the series ids (8 bytes each, big endian) under which that UID
//! may be stored: its *candidates*. One more key, of another length, holds
//! the hash key (one partition, because fjall keeps a journal until every
//! partition with data in it has flushed its memtable: a second, small
//! partition would pin every journal).
//!
//! The index is a **hint that is always verified**: a candidate is believed
//! only if LMDB holds `candidate ++ SOP Instance UID`, in the reader's own
//! LMDB snapshot. So a candidate that LMDB does not confirm (a hash collision,
//! an instance since removed or moved, a commit a crash took) is harmless, and
//! only one property must hold: *every instance LMDB holds has its series id
//! among its UID's candidates.* It holds because
//! - candidates are only ever added, never removed (a lost removal cannot
//!   resurrect anything; at most [`CANDIDATES_MAX`] per hash);
//! - the writer adds a transaction's candidates to the LSM tree *before* it
//!   commits the LMDB transaction that stores the instances (so a reader's
//!   LMDB snapshot never holds an instance whose candidate is missing);
//! - the LSM tree's journal is flushed to disk only now and then, so a crash
//!   may take candidates whose LMDB commit survived. Every transaction that
//!   adds candidates therefore also logs them in LMDB itself (`sop_pending`,
//!   under a *group* number, in the same commit); a group is deleted from the
//!   log only after a flush of the tree that followed its write. At open,
//!   [`SopIndex::acquire`] adds every logged group again (adding is
//!   idempotent), flushes the tree, and empties the log.
//!
//! **One process owns the tree** (fjall must not be opened by two processes):
//! the one that holds an exclusive `flock` on `sop-index.lock`. Another
//! process opening the same index (an operator command beside the running
//! server: LMDB arbitrates its writes) works without it: it finds a SOP
//! Instance UID by scanning `instances` (slow at scale, but exact), and logs
//! the candidates its writes add in `sop_pending` like any writer; the owner
//! adds such *foreign* groups to the tree at its next transaction (its writer
//! looks at least once a second). A process without the tree keeps trying to
//! take it, and owns it once the other lets go.
//!
//! An index directory without a tree (a new index, an index upgraded from
//! schema 3, a tree deleted or unreadable) gets one rebuilt from LMDB. The
//! hash key is random per index and kept in LMDB's `meta`; the tree keeps a
//! copy, written last when it is built, so a tree that belongs to another
//! index, or whose build was interrupted, is rebuilt too.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use heed::{Env, RoTxn, WithoutTls};
use siphasher::sip::SipHasher13;

use crate::error::{is_nearly_full, EnvLimits, IndexError, NEARLY_FULL_BYTES};
use crate::keys::{group_key, read_u64, split_instance_key, SERIES_ID_BYTES};
use crate::tables::{Table, Tables, META_NEXT_SOP_GROUP, META_SOP_HASH_KEY};

/// The LSM tree's directory inside the index directory.
pub(crate) const SOP_INDEX_DIR: &str = "sop-index";

/// The file whose exclusive `flock` says which process owns the tree.
pub(crate) const SOP_INDEX_LOCK: &str = "sop-index.lock";

/// Most series ids one hash may name. Ids are added when a UID is stored
/// under a series it was never stored under (a conflict replaced, a
/// quarantine entry released, or a keyed-hash collision), so a real UID
/// never comes near this; a store that would pass it is refused.
pub(crate) const CANDIDATES_MAX: usize = 64;

const PARTITION_SOP: &str = "sop";
/// Key of the SipHash key the candidates were hashed with (16 bytes).
const META_HASH_KEY: &[u8] = b"sluice:sop_hash_key";
const _: () = assert!(META_HASH_KEY.len() != 8);

/// The LSM tree's memtable, bytes. Small: the writer searches it for every
/// instance it stores and inserts into it, and a skiplist of a few tens of
/// thousands of entries stays in the CPU caches (64 MiB, fjall 3's default,
/// made those searches a third of the writer's CPU with random keys).
const MEMTABLE_BYTES: u32 = 2 << 20;

/// The LSM tree's data block size, bytes (index blocks keep fjall's 4 KiB).
/// A lookup of a stored UID that misses the block cache reads and decodes
/// one data block: 1 KiB blocks (~37 entries) made that 2x faster than 4 KiB
/// ones at 10 M entries (index_baselines: p50 8 against 16 µs, p99 12
/// against 131 µs, 64 MiB cache), for ~1% more index.
const DATA_BLOCK_BYTES: u32 = 1024;

/// The most journal fjall keeps before it forces memtables to disk.
const JOURNAL_BYTES_MAX: u64 = 64 << 20;

/// Instances read from LMDB per batch written while rebuilding.
const REBUILD_BATCH_ENTRIES: usize = 100_000;

/// A SOP Instance UID's key in the index.
pub(crate) type SopHash = u64;

/// Options of the LSM tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SopIndexOptions {
    /// Block cache, bytes.
    pub(crate) cache_bytes: u64,
}

/// The tree, open in this process (which holds the lock).
struct Tree {
    /// Held for as long as the tree is open: the `flock` lives with it.
    _lock: File,
    db: fjall::Keyspace,
    sop: fjall::PartitionHandle,
    /// Batches written (each numbered by this counter, from 1).
    written: AtomicU64,
    /// The last batch known durable: written before a flush that returned.
    durable: AtomicU64,
    /// A write or flush failed: fjall refuses every later write to this
    /// keyspace, until it is reopened ([`SopIndex::release_if_poisoned`]).
    poisoned: AtomicBool,
}

/// The SOP index of one open index: the hash, and the tree if this process
/// owns it.
pub(crate) struct SopIndex {
    hasher: SipHasher13,
    key: [u8; 16],
    dir: PathBuf,
    lock_path: PathBuf,
    options: SopIndexOptions,
    /// Set and replaced only by the thread that runs write transactions;
    /// others hold a clone of the `Arc` for as long as they use the tree.
    tree: RwLock<Option<Arc<Tree>>>,
}

impl std::fmt::Debug for SopIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SopIndex")
            .field("dir", &self.dir)
            .field("owned", &self.is_owned())
            .finish_non_exhaustive()
    }
}

/// The I/O error at the root of a fjall error, if any.
fn io_cause(error: &fjall::Error) -> Option<&std::io::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = current.source();
    }
    None
}

/// Maps a fjall error met while doing `operation`.
pub(crate) fn fjall_error(operation: &'static str) -> impl Fn(fjall::Error) -> IndexError {
    move |error| match io_cause(&error) {
        Some(io) if crate::error::is_disk_full(io) => IndexError::DiskFull {
            source: Arc::new(std::io::Error::new(io.kind(), error.to_string())),
        },
        _ => IndexError::SopIndex {
            operation,
            source: Arc::new(error),
        },
    }
}

fn corrupt(detail: String) -> IndexError {
    IndexError::Corrupt {
        table: "sop_index",
        detail,
    }
}

fn io_error(operation: &'static str) -> impl Fn(std::io::Error) -> IndexError {
    move |source| IndexError::Io {
        operation,
        source: Arc::new(source),
    }
}

/// The series ids of a stored value.
pub(crate) fn decode_candidates(bytes: &[u8]) -> Result<Vec<u64>, IndexError> {
    if bytes.is_empty() || bytes.len() % 8 != 0 || bytes.len() / 8 > CANDIDATES_MAX {
        return Err(corrupt(format!(
            "a candidate list of {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .filter_map(read_u64)
        .collect::<Vec<u64>>())
}

fn encode_candidates(candidates: &[u64]) -> Vec<u8> {
    candidates.iter().flat_map(|id| id.to_be_bytes()).collect()
}

fn partition_options() -> fjall::PartitionCreateOptions {
    // Keys and values are random hashes and ids: nothing to compress.
    let mut options = fjall::PartitionCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .compression(fjall::CompressionType::None);
    options.data_block_size = DATA_BLOCK_BYTES;
    options
}

/// The series ids under which LMDB holds `sop`, found by reading every key
/// of `instances` (for a process that does not own the tree).
pub(crate) fn scan_candidates(
    txn: &RoTxn<'_, WithoutTls>,
    instances: Table,
    sop: &str,
    limits: EnvLimits,
) -> Result<Vec<u64>, IndexError> {
    let lmdb =
        |error| IndexError::from_heed("scan instances for a SOP Instance UID", error, limits);
    let mut found = Vec::new();
    for entry in instances.lazily_decode_data().iter(txn).map_err(lmdb)? {
        let (key, _) = entry.map_err(lmdb)?;
        if key.get(SERIES_ID_BYTES..) == Some(sop.as_bytes()) {
            if let Some((series_id, _)) = split_instance_key(key) {
                found.push(series_id);
            }
        }
    }
    Ok(found)
}

impl Tree {
    fn open_dir(
        path: &Path,
        options: SopIndexOptions,
    ) -> Result<(fjall::Keyspace, fjall::PartitionHandle), fjall::Error> {
        // One flush and one compaction thread: the writer's CPU matters
        // more than how soon compaction catches up (fjall slows the writer
        // down if level 0 grows too far).
        let db = fjall::Config::new(path)
            .cache_size(options.cache_bytes)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .flush_workers(1)
            .compaction_workers(1)
            .open()?;
        let sop = db.open_partition(PARTITION_SOP, partition_options())?;
        Ok((db, sop))
    }

    /// Opens the tree in `dir` (this process holds `lock`) for an index
    /// whose hash key is `key`, and says whether it must be rebuilt (new,
    /// another index's, its build interrupted, or unreadable, in which case
    /// it is deleted and created anew).
    fn open(
        dir: &Path,
        key: &[u8; 16],
        options: SopIndexOptions,
        lock: File,
    ) -> Result<(Tree, bool), IndexError> {
        let opened = match Tree::open_dir(dir, options) {
            Ok(opened) => Some(opened),
            // Derived data: a tree that cannot be recovered is rebuilt.
            Err(error @ (fjall::Error::Io(_) | fjall::Error::Poisoned)) => {
                return Err(fjall_error("open SOP index")(error))
            }
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "the SOP Instance UID index cannot be opened; rebuilding it from the catalogue");
                None
            }
        };
        let tree = |(db, sop)| Tree {
            _lock: lock,
            db,
            sop,
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        };
        if let Some((db, sop)) = opened {
            let stored_key = sop
                .get(META_HASH_KEY)
                .map_err(fjall_error("read SOP index meta"))?;
            match stored_key {
                Some(stored_key) if stored_key.as_ref() == key.as_slice() => {
                    return Ok((tree((db, sop)), false));
                }
                None if sop.is_empty().map_err(fjall_error("open SOP index"))? => {
                    return Ok((tree((db, sop)), true));
                }
                _ => {
                    tracing::warn!(path = %dir.display(), "the SOP Instance UID index belongs to another catalogue or was never completed; rebuilding it");
                }
            }
        }
        std::fs::remove_dir_all(dir).map_err(io_error("remove the SOP index to rebuild it"))?;
        let opened = Tree::open_dir(dir, options).map_err(fjall_error("create SOP index"))?;
        Ok((tree(opened), true))
    }

    /// Maps a failed write or flush of the tree in `dir`. fjall poisons the
    /// keyspace when a journal write or flush fails and reports only
    /// `Poisoned` (the I/O error goes to its log): the failure is recorded
    /// (the writer reopens the tree) and, if the file system is nearly
    /// full, is [`IndexError::DiskFull`].
    fn write_failed(&self, dir: &Path, operation: &'static str, error: fjall::Error) -> IndexError {
        if !matches!(error, fjall::Error::Poisoned) {
            return fjall_error(operation)(error);
        }
        self.poisoned.store(true, Ordering::Release);
        if is_nearly_full(dir) {
            IndexError::DiskFull {
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the SOP Instance UID index failed to {operation} with less than \
                         {NEARLY_FULL_BYTES} bytes free (it is reopened once space returns)"
                    ),
                )),
            }
        } else {
            fjall_error(operation)(error)
        }
    }

    fn candidates(&self, hash: SopHash) -> Result<Vec<u64>, IndexError> {
        match self
            .sop
            .get(hash.to_be_bytes())
            .map_err(fjall_error("read SOP index"))?
        {
            None => Ok(Vec::new()),
            Some(bytes) => decode_candidates(&bytes),
        }
    }

    /// Writes complete candidate lists in one atomic batch (into the OS's
    /// buffers); returns the batch's number.
    fn write(&self, dir: &Path, lists: &HashMap<SopHash, Vec<u64>>) -> Result<u64, IndexError> {
        let mut batch = self.db.batch();
        for (hash, candidates) in lists {
            debug_assert!(!candidates.is_empty() && candidates.len() <= CANDIDATES_MAX);
            batch.insert(&self.sop, hash.to_be_bytes(), encode_candidates(candidates));
        }
        // Numbered before the commit: a flush that begins after this line
        // reads a number no larger than this batch's, and so never claims
        // it before it is written.
        let number = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        batch
            .commit()
            .map_err(|error| self.write_failed(dir, "write", error))?;
        Ok(number)
    }

    /// Adds `additions` (merged with what the tree holds), in batches.
    fn add(
        &self,
        dir: &Path,
        additions: impl IntoIterator<Item = (SopHash, u64)>,
    ) -> Result<u64, IndexError> {
        let mut pending: HashMap<SopHash, Vec<u64>> = HashMap::new();
        let mut added = 0u64;
        for (hash, series_id) in additions {
            let list = match pending.entry(hash) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(self.candidates(hash)?)
                }
            };
            if !list.contains(&series_id) {
                if list.len() == CANDIDATES_MAX {
                    return Err(corrupt(format!(
                        "more than {CANDIDATES_MAX} series ids for one SOP Instance UID hash"
                    )));
                }
                list.push(series_id);
                added += 1;
            }
            if pending.len() >= REBUILD_BATCH_ENTRIES {
                self.write(dir, &std::mem::take(&mut pending))?;
            }
        }
        if !pending.is_empty() {
            self.write(dir, &pending)?;
        }
        Ok(added)
    }

    fn persist(&self, dir: &Path) -> Result<(), IndexError> {
        let written = self.written.load(Ordering::Acquire);
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|error| self.write_failed(dir, "flush its journal", error))?;
        self.durable.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }
}

/// What [`SopIndex::acquire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// Whether the tree was rebuilt from LMDB.
    pub(crate) rebuilt: bool,
    /// Candidates added (rebuilt, or again from `sop_pending`).
    pub(crate) added: u64,
}

/// The hash key recorded in LMDB's `meta`.
pub(crate) fn sop_hash_key(
    env: &Env<WithoutTls>,
    tables: &Tables,
    limits: EnvLimits,
) -> Result<[u8; 16], IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
    let rtxn = env.read_txn().map_err(lmdb("begin read"))?;
    tables
        .meta
        .get(&rtxn, META_SOP_HASH_KEY)
        .map_err(lmdb("get meta"))?
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .ok_or_else(|| IndexError::Corrupt {
            table: "meta",
            detail: "sop_hash_key is missing or not 16 bytes".into(),
        })
}

/// `meta/next_sop_group`: the number above every group logged so far.
pub(crate) fn next_group_logged(
    txn: &RoTxn<'_, WithoutTls>,
    tables: &Tables,
    limits: EnvLimits,
) -> Result<u64, IndexError> {
    match tables
        .meta
        .get(txn, META_NEXT_SOP_GROUP)
        .map_err(|error| IndexError::from_heed("get meta", error, limits))?
    {
        None => Ok(1),
        Some(bytes) => read_u64(bytes).ok_or_else(|| IndexError::Corrupt {
            table: "meta",
            detail: "next_sop_group is not 8 bytes".into(),
        }),
    }
}

/// The additions logged under group `group`, if it is in `sop_pending`.
fn logged_group(
    txn: &RoTxn<'_, WithoutTls>,
    tables: &Tables,
    group: u64,
    limits: EnvLimits,
) -> Result<Option<Vec<(SopHash, u64)>>, IndexError> {
    tables
        .sop_pending
        .get(txn, &group_key(group))
        .map_err(|error| IndexError::from_heed("get sop_pending", error, limits))?
        .map(decode_pending)
        .transpose()
}

impl SopIndex {
    /// The SOP index of the index in `index_dir`, whose hash key is `key`;
    /// without its tree until [`SopIndex::acquire`].
    pub(crate) fn new(index_dir: &Path, key: [u8; 16], options: SopIndexOptions) -> SopIndex {
        SopIndex {
            hasher: SipHasher13::new_with_key(&key),
            key,
            dir: index_dir.join(SOP_INDEX_DIR),
            lock_path: index_dir.join(SOP_INDEX_LOCK),
            options,
            tree: RwLock::new(None),
        }
    }

    /// The key of a SOP Instance UID.
    pub(crate) fn hash(&self, sop: &str) -> SopHash {
        self.hasher.hash(sop.as_bytes())
    }

    /// The tree, if this process owns it.
    fn tree(&self) -> Option<Arc<Tree>> {
        self.tree
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether this process owns the tree.
    pub(crate) fn is_owned(&self) -> bool {
        self.tree().is_some()
    }

    /// Lets go of the tree if a write or flush poisoned it (see
    /// docs/design/index-format.md, "A full disk"): the process then works
    /// as one that does not own it (exact scans, candidates logged in
    /// `sop_pending`) until [`SopIndex::acquire`] reopens it from its
    /// journal and adds `sop_pending` again. The lock goes with the last
    /// `Arc` of the tree (a flush in progress on the syncer thread may hold
    /// one a moment longer: `acquire` then finds the lock taken and is
    /// tried again). Returns whether it let go. Call on the thread that
    /// runs write transactions.
    pub(crate) fn release_if_poisoned(&self) -> bool {
        let mut tree = self
            .tree
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tree
            .as_ref()
            .is_some_and(|tree| tree.poisoned.load(Ordering::Acquire))
        {
            *tree = None;
            true
        } else {
            false
        }
    }

    /// The series ids a SOP Instance UID's hash names (empty: none), or
    /// `None` when another process owns the tree (the caller then scans:
    /// [`scan_candidates`]).
    pub(crate) fn candidates(&self, hash: SopHash) -> Result<Option<Vec<u64>>, IndexError> {
        self.tree().map(|tree| tree.candidates(hash)).transpose()
    }

    /// Writes the complete candidate lists `lists` in one atomic batch (into
    /// the OS's buffers: see [`SopIndex::persist`]); the batch's number, or
    /// `None` without the tree (nothing written).
    pub(crate) fn write(
        &self,
        lists: &HashMap<SopHash, Vec<u64>>,
    ) -> Result<Option<u64>, IndexError> {
        self.tree()
            .map(|tree| tree.write(&self.dir, lists))
            .transpose()
    }

    /// Flushes the journal: every batch written before the call is durable
    /// when it returns ([`SopIndex::durable_batch`] says so). A failure
    /// poisons the tree (fjall refuses later writes until the writer reopens
    /// it). Nothing without the tree, or with a poisoned one.
    pub(crate) fn persist(&self) -> Result<(), IndexError> {
        match self.tree() {
            Some(tree) if !tree.poisoned.load(Ordering::Acquire) => tree.persist(&self.dir),
            _ => Ok(()),
        }
    }

    /// The number of the last batch written (0: none, or no tree).
    pub(crate) fn written_batch(&self) -> u64 {
        self.tree()
            .map_or(0, |tree| tree.written.load(Ordering::Acquire))
    }

    /// The number of the last batch known durable (0: none, or no tree).
    pub(crate) fn durable_batch(&self) -> u64 {
        self.tree()
            .map_or(0, |tree| tree.durable.load(Ordering::Acquire))
    }

    /// Entries (approximate: an LSM tree counts exactly only by reading
    /// everything) and bytes on disk; zeros without the tree.
    pub(crate) fn size(&self) -> (u64, u64) {
        self.tree().map_or((0, 0), |tree| {
            (tree.sop.approximate_len() as u64, tree.db.disk_space())
        })
    }

    /// Tables (segments) of the tree.
    pub(crate) fn table_count(&self) -> usize {
        self.tree().map_or(0, |tree| tree.sop.segment_count())
    }

    /// Adds the groups `from..to` another process logged in `sop_pending`
    /// (the owner's writer, in its transaction, before anything else);
    /// returns the groups found and the batch that wrote them.
    pub(crate) fn add_foreign_groups(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        tables: &Tables,
        groups: std::ops::Range<u64>,
        limits: EnvLimits,
    ) -> Result<Vec<u64>, IndexError> {
        let Some(tree) = self.tree() else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let mut additions = Vec::new();
        for group in groups {
            if let Some(logged) = logged_group(txn, tables, group, limits)? {
                found.push(group);
                additions.extend(logged);
            }
        }
        tree.add(&self.dir, additions)?;
        Ok(found)
    }

    /// Takes the tree if no other process owns it: locks, opens it, and
    /// brings it up to date with LMDB — rebuilt from `instances` if it must
    /// be, else every group of `sop_pending` added again — then flushes it
    /// and empties `sop_pending`, in one LMDB write transaction (so no other
    /// process logs a group meanwhile). `None` if another process owns it.
    /// Call on the thread that runs write transactions (at open, or the
    /// writer's).
    pub(crate) fn acquire(
        &self,
        env: &Env<WithoutTls>,
        tables: &Tables,
        limits: EnvLimits,
    ) -> Result<Option<CatchUp>, IndexError> {
        if self.is_owned() {
            return Ok(None);
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_error("open the SOP index lock"))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(errno) => return Err(io_error("lock the SOP index")(errno.into())),
        }
        let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
        let mut wtxn = env.write_txn().map_err(lmdb("begin write"))?;
        let (tree, rebuild) = Tree::open(&self.dir, &self.key, self.options, lock)?;
        let added = if rebuild {
            let mut bad_key = None;
            let additions = tables
                .instances
                .lazily_decode_data()
                .iter(&wtxn)
                .map_err(lmdb("scan instances"))?
                .map_while(|entry| match entry {
                    Ok((key, _)) => match split_instance_key(key) {
                        Some((series_id, sop)) => Some((self.hash(sop), series_id)),
                        None => {
                            bad_key = Some(IndexError::Corrupt {
                                table: "instances",
                                detail: format!("bad key {key:?}"),
                            });
                            None
                        }
                    },
                    Err(error) => {
                        bad_key = Some(IndexError::from_heed("scan instances", error, limits));
                        None
                    }
                });
            let added = tree.add(&self.dir, additions)?;
            if let Some(error) = bad_key {
                return Err(error);
            }
            added
        } else {
            let mut additions = Vec::new();
            for entry in tables
                .sop_pending
                .iter(&wtxn)
                .map_err(lmdb("scan sop_pending"))?
            {
                let (_, value) = entry.map_err(lmdb("scan sop_pending"))?;
                additions.extend(decode_pending(value)?);
            }
            tree.add(&self.dir, additions)?
        };
        if rebuild {
            // The tree is complete: only now is it marked as this index's.
            tree.sop
                .insert(META_HASH_KEY, self.key)
                .map_err(fjall_error("write SOP index meta"))?;
        }
        tree.persist(&self.dir)?;
        tables
            .sop_pending
            .clear(&mut wtxn)
            .map_err(lmdb("clear sop_pending"))?;
        wtxn.commit().map_err(lmdb("commit"))?;
        env.force_sync().map_err(lmdb("flush"))?;
        let mut owned = self
            .tree
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            owned.is_none(),
            "only the thread that runs write transactions acquires the tree"
        );
        *owned = Some(Arc::new(tree));
        Ok(Some(CatchUp {
            rebuilt: rebuild,
            added,
        }))
    }
}

/// A `sop_pending` value: (hash, series id) pairs, 16 bytes each.
pub(crate) fn encode_pending(additions: &[(SopHash, u64)]) -> Vec<u8> {
    additions
        .iter()
        .flat_map(|(hash, series_id)| {
            let mut pair = [0u8; 16];
            pair[..8].copy_from_slice(&hash.to_be_bytes());
            pair[8..].copy_from_slice(&series_id.to_be_bytes());
            pair
        })
        .collect()
}

fn decode_pending(bytes: &[u8]) -> Result<Vec<(SopHash, u64)>, IndexError> {
    if bytes.len() % 16 != 0 {
        return Err(IndexError::Corrupt {
            table: "sop_pending",
            detail: format!("a value of {} bytes", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(16)
        .filter_map(|pair| Some((read_u64(pair.get(..8)?)?, read_u64(pair.get(8..)?)?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_lists_roundtrip_and_bad_ones_are_errors() {
        let list = vec![1, u64::MAX, 7];
        assert_eq!(
            decode_candidates(&encode_candidates(&list)).expect("decode"),
            list
        );
        assert!(decode_candidates(&[]).is_err());
        assert!(decode_candidates(&[0; 9]).is_err());
        assert!(decode_candidates(&vec![0; 8 * (CANDIDATES_MAX + 1)]).is_err());
    }

    #[test]
    fn pending_values_roundtrip() {
        let additions = vec![(1, 2), (u64::MAX, 3)];
        assert_eq!(
            decode_pending(&encode_pending(&additions)).expect("decode"),
            additions
        );
        assert!(decode_pending(&[0; 15]).is_err());
    }

    #[test]
    fn hashes_depend_on_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SopIndexOptions {
            cache_bytes: 1 << 20,
        };
        let a = SopIndex::new(dir.path(), [1; 16], options);
        let b = SopIndex::new(dir.path(), [2; 16], options);
        assert_eq!(a.hash("1.2.3"), a.hash("1.2.3"));
        assert_ne!(a.hash("1.2.3"), a.hash("1.2.4"));
        assert_ne!(a.hash("1.2.3"), b.hash("1.2.3"));
    }
}
