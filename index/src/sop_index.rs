//! The SOP Instance UID index: an LSM tree (fjall) beside LMDB.
//!
//! LMDB holds every instance under `series id ++ SOP Instance UID`
//! (`instances`), so the instances of a series are written side by
//! side, whatever their UIDs. What LMDB cannot answer cheaply is "where is
//! this SOP Instance UID?" without a table keyed by the UID, and a B-tree
//! keyed by random UIDs writes one scattered page per insert
//! (docs/design/index-at-scale.md). This module answers it from an LSM
//! tree, which turns those inserts into sequential writes:
//!
//! One partition, `sop`: `SipHash-1-3(key, SOP Instance UID)` (8 bytes, big
//! endian) -> the series ids (8 bytes each, big endian) under which that
//! UID may be stored: its *candidates*. Two more keys, of other lengths, hold
//! the hash key and the last group written (one partition, because fjall
//! keeps a journal until every partition with data in it has flushed its
//! memtable: a second, small partition would pin every journal).
//!
//! The index is a **hint that is always verified**: a candidate is believed
//! only if LMDB holds `candidate ++ SOP Instance UID`, in the reader's own
//! LMDB snapshot. So a candidate that LMDB does not confirm (a hash
//! collision, an instance since removed or moved, a commit a crash took) is
//! harmless, and only one property must hold: *every instance LMDB holds has
//! its series id among its UID's candidates.* It holds because
//! - candidates are only ever added, never removed (a lost removal cannot
//!   resurrect anything; at most [`CANDIDATES_MAX`] per hash);
//! - the writer adds a transaction's candidates to the LSM tree *before* it
//!   commits the LMDB transaction that stores the instances (so a reader's
//!   LMDB snapshot never holds an instance whose candidate is missing);
//! - the LSM tree's journal is flushed to disk only now and then, so a crash
//!   may take candidates whose LMDB commit survived. The writer therefore
//!   also records each transaction's additions in LMDB itself
//!   (`sop_pending`, keyed by a transaction *group* number, in the same
//!   commit), and deletes them only once the LSM tree is known durable past
//!   that group. At open, [`bring_up_to_date`] adds again every group above
//!   the one the LSM tree recovered (`applied_group`, written in the same
//!   atomic batch as the candidates), then flushes both.
//!
//! An index directory without this one (a new index, an index upgraded from
//! schema 3, a directory deleted or unreadable) is rebuilt from LMDB. The
//! hash key is random per index and kept in LMDB's `meta`; the LSM tree
//! keeps a copy, so one that belongs to another index is rebuilt too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use heed::{Env, WithoutTls};
use siphasher::sip::SipHasher13;

use crate::error::{EnvLimits, IndexError};
use crate::keys::{read_u64, split_instance_key};
use crate::tables::{Tables, META_NEXT_SOP_GROUP, META_SOP_HASH_KEY};

/// The LSM tree's directory inside the index directory.
pub(crate) const SOP_INDEX_DIR: &str = "sop-index";

/// Most series ids one hash may name. Ids are added when a UID is stored
/// under a series it was never stored under (a conflict replaced, a
/// quarantine entry released, or a keyed-hash collision), so a real UID
/// never comes near this; a store that would pass it is refused.
pub(crate) const CANDIDATES_MAX: usize = 64;

const PARTITION_SOP: &str = "sop";
/// Key of the SipHash key the candidates were hashed with (16 bytes).
const META_HASH_KEY: &[u8] = b"sluice:sop_hash_key";
/// Key of the last transaction group whose candidates were written (u64
/// big endian), written in the same atomic batch as those candidates.
const META_APPLIED_GROUP: &[u8] = b"sluice:applied_group";
const _: () = assert!(META_HASH_KEY.len() != 8 && META_APPLIED_GROUP.len() != 8);

/// The LSM tree's memtable, bytes. Small: the writer searches it for every
/// instance it stores and inserts into it, and a skiplist of a few tens of
/// thousands of entries stays in the CPU caches (64 MiB, fjall's default,
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

/// The open LSM tree and the writer's progress through it.
pub(crate) struct SopIndex {
    db: fjall::Keyspace,
    sop: fjall::PartitionHandle,
    hasher: SipHasher13,
    path: PathBuf,
    /// The last group written (in the OS's buffers, maybe not on disk).
    written_group: AtomicU64,
    /// The last group known durable (its journal flushed).
    durable_group: AtomicU64,
}

impl std::fmt::Debug for SopIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SopIndex")
            .field("path", &self.path)
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

impl SopIndex {
    fn open_dir(
        path: &Path,
        options: SopIndexOptions,
        key: &[u8; 16],
    ) -> Result<SopIndex, fjall::Error> {
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
        Ok(SopIndex {
            db,
            sop,
            hasher: SipHasher13::new_with_key(key),
            path: path.to_owned(),
            written_group: AtomicU64::new(0),
            durable_group: AtomicU64::new(0),
        })
    }

    /// Opens the LSM tree in `dir` for an index whose hash key is `key`:
    /// the tree and the group it recovered, or `None` for the group when the
    /// tree must be rebuilt (new, another index's, or unreadable, in which
    /// case it is deleted and created anew).
    pub(crate) fn open(
        dir: &Path,
        key: &[u8; 16],
        options: SopIndexOptions,
    ) -> Result<(SopIndex, Option<u64>), IndexError> {
        let opened = match SopIndex::open_dir(dir, options, key) {
            Ok(index) => Some(index),
            // Derived data: a tree that cannot be recovered is rebuilt.
            Err(error @ (fjall::Error::Io(_) | fjall::Error::Poisoned)) => {
                return Err(fjall_error("open SOP index")(error))
            }
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "the SOP Instance UID index cannot be opened; rebuilding it from the catalogue");
                None
            }
        };
        if let Some(index) = opened {
            let stored_key = index
                .sop
                .get(META_HASH_KEY)
                .map_err(fjall_error("read SOP index meta"))?;
            let applied = index
                .sop
                .get(META_APPLIED_GROUP)
                .map_err(fjall_error("read SOP index meta"))?;
            match (stored_key, applied) {
                (Some(stored_key), Some(applied)) if stored_key.as_ref() == key.as_slice() => {
                    let applied = read_u64(&applied)
                        .ok_or_else(|| corrupt("applied_group is not 8 bytes".into()))?;
                    index.written_group.store(applied, Ordering::Release);
                    index.durable_group.store(applied, Ordering::Release);
                    return Ok((index, Some(applied)));
                }
                (None, None)
                    if index
                        .sop
                        .is_empty()
                        .map_err(fjall_error("open SOP index"))? =>
                {
                    return Ok((index, None));
                }
                _ => {
                    tracing::warn!(path = %dir.display(), "the SOP Instance UID index belongs to another catalogue or was never completed; rebuilding it");
                }
            }
            drop(index);
        }
        std::fs::remove_dir_all(dir).map_err(|source| IndexError::Io {
            operation: "remove the SOP index to rebuild it",
            source: Arc::new(source),
        })?;
        let index =
            SopIndex::open_dir(dir, options, key).map_err(fjall_error("create SOP index"))?;
        Ok((index, None))
    }

    /// The key of a SOP Instance UID.
    pub(crate) fn hash(&self, sop: &str) -> SopHash {
        self.hasher.hash(sop.as_bytes())
    }

    /// The series ids a SOP Instance UID's hash names (empty: none).
    pub(crate) fn candidates(&self, hash: SopHash) -> Result<Vec<u64>, IndexError> {
        match self
            .sop
            .get(hash.to_be_bytes())
            .map_err(fjall_error("read SOP index"))?
        {
            None => Ok(Vec::new()),
            Some(bytes) => decode_candidates(&bytes),
        }
    }

    /// Writes the complete candidate lists of `changed` and `group` as the
    /// last group written, in one atomic batch (in the OS's buffers: see
    /// [`SopIndex::persist`]).
    pub(crate) fn write_group(
        &self,
        changed: &HashMap<SopHash, Vec<u64>>,
        group: u64,
    ) -> Result<(), IndexError> {
        let mut batch = self.db.batch();
        for (hash, candidates) in changed {
            debug_assert!(!candidates.is_empty() && candidates.len() <= CANDIDATES_MAX);
            batch.insert(&self.sop, hash.to_be_bytes(), encode_candidates(candidates));
        }
        batch.insert(&self.sop, META_APPLIED_GROUP, group.to_be_bytes());
        batch.commit().map_err(fjall_error("write SOP index"))?;
        self.written_group.store(group, Ordering::Release);
        Ok(())
    }

    /// Flushes the journal to disk: every group written before the call is
    /// durable when it returns (and [`SopIndex::durable_group`] says so).
    /// A failure is final (fjall refuses later writes).
    pub(crate) fn persist(&self) -> Result<(), IndexError> {
        let written = self.written_group.load(Ordering::Acquire);
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(fjall_error("flush SOP index"))?;
        self.durable_group.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// The last group written.
    pub(crate) fn written_group(&self) -> u64 {
        self.written_group.load(Ordering::Acquire)
    }

    /// The last group known durable.
    pub(crate) fn durable_group(&self) -> u64 {
        self.durable_group.load(Ordering::Acquire)
    }

    /// Entries (approximate: an LSM tree counts exactly only by reading
    /// everything) and bytes on disk.
    pub(crate) fn size(&self) -> (u64, u64) {
        (self.sop.approximate_len() as u64, self.db.disk_space())
    }

    /// Tables (segments) of the tree.
    pub(crate) fn table_count(&self) -> usize {
        self.sop.segment_count()
    }
}

/// Adds `additions` to the index in batches (each hash's list read once,
/// merged, written). The batches before the last record `interim_group` as
/// applied, the last one `group`: a crash part way leaves the applied group
/// where it was, so the next open adds everything again.
fn add_candidates(
    index: &SopIndex,
    additions: impl IntoIterator<Item = (SopHash, u64)>,
    interim_group: u64,
    group: u64,
) -> Result<u64, IndexError> {
    let mut pending: HashMap<SopHash, Vec<u64>> = HashMap::new();
    let mut added = 0u64;
    for (hash, series_id) in additions {
        let list = match pending.entry(hash) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(index.candidates(hash)?)
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
            index.write_group(&std::mem::take(&mut pending), interim_group)?;
        }
    }
    index.write_group(&pending, group)?;
    Ok(added)
}

/// The hash key and next group recorded in LMDB.
fn lmdb_state(
    env: &Env<WithoutTls>,
    tables: &Tables,
    limits: EnvLimits,
) -> Result<([u8; 16], u64), IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
    let rtxn = env.read_txn().map_err(lmdb("begin read"))?;
    let key = tables
        .meta
        .get(&rtxn, META_SOP_HASH_KEY)
        .map_err(lmdb("get meta"))?
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .ok_or_else(|| IndexError::Corrupt {
            table: "meta",
            detail: "sop_hash_key is missing or not 16 bytes".into(),
        })?;
    let next_group = match tables
        .meta
        .get(&rtxn, META_NEXT_SOP_GROUP)
        .map_err(lmdb("get meta"))?
    {
        None => 1,
        Some(bytes) => read_u64(bytes).ok_or_else(|| IndexError::Corrupt {
            table: "meta",
            detail: "next_sop_group is not 8 bytes".into(),
        })?,
    };
    Ok((key, next_group))
}

/// What [`bring_up_to_date`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// The number the writer's next group takes.
    pub(crate) next_group: u64,
    /// Whether the tree was rebuilt from LMDB.
    pub(crate) rebuilt: bool,
    /// Candidates added again (rebuilt, or from `sop_pending`).
    pub(crate) added: u64,
}

/// Opens the SOP index of the LMDB index `env` and makes it hold every
/// instance LMDB holds: rebuilt from `instances` if it must be, else
/// the groups of `sop_pending` it lost added again. Then flushes it, empties
/// `sop_pending` and records the next group number above every group either
/// store has seen (a group LMDB lost may be in the tree: its number is not
/// used again). Run at open, before the writer starts.
pub(crate) fn open_up_to_date(
    dir: &Path,
    env: &Env<WithoutTls>,
    tables: &Tables,
    limits: EnvLimits,
    options: SopIndexOptions,
) -> Result<(SopIndex, CatchUp), IndexError> {
    let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
    let (key, lmdb_next_group) = lmdb_state(env, tables, limits)?;
    let (index, applied) = SopIndex::open(dir, &key, options)?;
    let rebuilt = applied.is_none();
    let mut last_group = applied.unwrap_or(0).max(lmdb_next_group.saturating_sub(1));
    let added = {
        let rtxn = env.read_txn().map_err(lmdb("begin read"))?;
        match applied {
            None => {
                let mut bad_key = None;
                let additions = tables
                    .instances
                    .iter(&rtxn)
                    .map_err(lmdb("scan instance records"))?
                    .map_while(|entry| match entry {
                        Ok((key, _)) => match split_instance_key(key) {
                            Some((series_id, sop)) => Some((index.hash(sop), series_id)),
                            None => {
                                bad_key = Some(corrupt_key(key));
                                None
                            }
                        },
                        Err(error) => {
                            bad_key = Some(IndexError::from_heed(
                                "scan instance records",
                                error,
                                limits,
                            ));
                            None
                        }
                    });
                // Not this index's until the hash key is written, below.
                let added = add_candidates(&index, additions, 0, last_group)?;
                if let Some(error) = bad_key {
                    return Err(error);
                }
                // The tree is complete: only now is it marked as this index's.
                index
                    .sop
                    .insert(META_HASH_KEY, key)
                    .map_err(fjall_error("write SOP index meta"))?;
                added
            }
            Some(applied) => {
                let mut additions = Vec::new();
                for entry in tables
                    .sop_pending
                    .iter(&rtxn)
                    .map_err(lmdb("scan sop_pending"))?
                {
                    let (group, value) = entry.map_err(lmdb("scan sop_pending"))?;
                    let group = read_u64(group).ok_or_else(|| IndexError::Corrupt {
                        table: "sop_pending",
                        detail: "key is not 8 bytes".into(),
                    })?;
                    if group <= applied {
                        continue;
                    }
                    last_group = last_group.max(group);
                    additions.extend(decode_pending(value)?);
                }
                add_candidates(&index, additions, applied, last_group)?
            }
        }
    };
    index.persist()?;
    let next_group = last_group.saturating_add(1);
    let mut wtxn = env.write_txn().map_err(lmdb("begin write"))?;
    tables
        .sop_pending
        .clear(&mut wtxn)
        .map_err(lmdb("clear sop_pending"))?;
    tables
        .meta
        .put(&mut wtxn, META_NEXT_SOP_GROUP, &next_group.to_be_bytes())
        .map_err(lmdb("put meta"))?;
    wtxn.commit().map_err(lmdb("commit"))?;
    env.force_sync().map_err(lmdb("flush"))?;
    Ok((
        index,
        CatchUp {
            next_group,
            rebuilt,
            added,
        },
    ))
}

fn corrupt_key(key: &[u8]) -> IndexError {
    IndexError::Corrupt {
        table: "instances",
        detail: format!("bad key {key:?}"),
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
        let (a, _) = SopIndex::open(&dir.path().join("a"), &[1; 16], options).expect("open");
        let (b, _) = SopIndex::open(&dir.path().join("b"), &[2; 16], options).expect("open");
        assert_eq!(a.hash("1.2.3"), a.hash("1.2.3"));
        assert_ne!(a.hash("1.2.3"), a.hash("1.2.4"));
        assert_ne!(a.hash("1.2.3"), b.hash("1.2.3"));
    }
}
