//! The index handle: opening the environment and the SOP index, the writer
//! thread, readers, stats.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;
use heed::{Env, WithoutTls};

use crate::error::{EnvLimits, IndexError};
use crate::read::ReadTxn;
use crate::sop_index::{sop_hash_key, SopIndex, SopIndexOptions};
use crate::tables::{open_tables, Tables, TABLE_COUNT};
use crate::visibility::Visibility;
use crate::writer::{run_writer, IndexWriter, Message, WriterLimits};

/// Options of [`Index::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// Size of LMDB's memory map: the most the index can ever hold. It is
    /// virtual address space, not memory or disk; the file grows as data
    /// arrives. Resizing needs every transaction closed, so it is set once, at
    /// open, generously. Rounded up to 64 KiB.
    pub map_size_bytes: usize,
    /// Concurrent read transactions allowed (LMDB reader slots).
    pub max_readers: u32,
    /// Batches the writer's queue holds before `try_submit` says `Full`.
    pub writer_queue_batches: usize,
    /// Most operations in one batch.
    pub batch_ops_max: usize,
    /// The writer stops coalescing queued batches into one transaction once it
    /// holds this many operations.
    pub group_ops_max: usize,
    /// Block cache of the SOP Instance UID index (the LSM tree beside LMDB),
    /// in bytes: the decoded blocks of recently looked-up UIDs. Its bloom
    /// filters (about 1.3 bytes per stored instance) are held in memory
    /// besides. A lookup of a stored UID whose block is cached takes ~3 µs,
    /// one that reads its block ~8 µs.
    pub sop_index_cache_bytes: u64,
    /// Zeros the writer keeps written ahead of the data file's last page,
    /// written a chunk of this many bytes at a time (0: none, the file
    /// grows as LMDB appends pages). With them the pages a commit adds
    /// overwrite written blocks, so its flush changes no file size and
    /// commits no journal (docs/design/segments.md, "Written blocks"); the
    /// file is up to this much longer than LMDB's last page (`sluice
    /// stats`' file size against its used bytes).
    pub zero_ahead_bytes: usize,
}

/// 64 GiB of address space on 64-bit targets, 1 GiB elsewhere.
#[cfg(target_pointer_width = "64")]
const MAP_SIZE_BYTES_DEFAULT: usize = 64 << 30;
#[cfg(not(target_pointer_width = "64"))]
const MAP_SIZE_BYTES_DEFAULT: usize = 1 << 30;

/// Map sizes are rounded to this (a multiple of every page size in use).
const MAP_SIZE_GRANULE_BYTES: usize = 64 * 1024;

/// Named databases the environment allows (the schema uses `TABLE_COUNT`;
/// the rest is headroom for a migration that adds tables).
const MAX_DBS: u32 = 32;
const _: () = assert!(TABLE_COUNT as u32 <= MAX_DBS);

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            map_size_bytes: MAP_SIZE_BYTES_DEFAULT,
            max_readers: 1024,
            writer_queue_batches: 1024,
            batch_ops_max: 10_000,
            group_ops_max: 20_000,
            sop_index_cache_bytes: 256 << 20,
            zero_ahead_bytes: 0,
        }
    }
}

/// What the writer thread and readers share.
pub(crate) struct Shared {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) tables: Tables,
    pub(crate) limits: EnvLimits,
    pub(crate) sop_index: SopIndex,
    /// Answers given before their commit, for readers.
    pub(crate) visibility: Visibility,
}

/// An open index: the LMDB environment, its writer thread, and readers.
///
/// Dropping it (or [`Index::close`]) finishes the batches already queued,
/// stops the writer thread and closes the environment; [`IndexWriter`]
/// What the index writer had answered at a moment ([`Index::answered_mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnsweredMark(u64);

/// handles still around then get `SubmitError::Closed`.
pub struct Index {
    shared: Arc<Shared>,
    sender: Sender<Message>,
    writer_thread: Option<JoinHandle<()>>,
    writer: IndexWriter,
    path: PathBuf,
    options: IndexOptions,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Index")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish()
    }
}

fn check_options(options: &IndexOptions) -> Result<(), IndexError> {
    let invalid = |option, reason: &str| {
        Err(IndexError::InvalidOptions {
            option,
            reason: reason.to_owned(),
        })
    };
    if options.map_size_bytes < 1024 * 1024 {
        return invalid("map_size_bytes", "must be at least 1 MiB");
    }
    if options.max_readers == 0 {
        return invalid("max_readers", "must be at least 1");
    }
    if options.writer_queue_batches == 0 {
        return invalid("writer_queue_batches", "must be at least 1");
    }
    if options.sop_index_cache_bytes < 1024 * 1024 {
        return invalid("sop_index_cache_bytes", "must be at least 1 MiB");
    }
    if options.batch_ops_max == 0 || options.group_ops_max == 0 {
        return invalid(
            "batch_ops_max",
            "batch_ops_max and group_ops_max must be at least 1",
        );
    }
    Ok(())
}

impl Index {
    /// Opens the index in directory `path` (created if missing, durably):
    /// opens or creates the LMDB environment (the directory fsynced after,
    /// so new environment files survive a power cut), clears reader slots left by dead
    /// processes, checks the schema version (an unknown one is refused with
    /// both versions named; 2 and 3 are upgraded in place), creates missing
    /// tables, opens the SOP index and brings it up to date with LMDB
    /// (rebuilding it if it is missing), and starts the writer.
    pub fn open(path: impl AsRef<Path>, options: IndexOptions) -> Result<Index, IndexError> {
        check_options(&options)?;
        let path = path.as_ref().to_owned();
        let started = Instant::now();
        // Created durably: a power cut must not take the directory (or a
        // data directory created with it) once anything in it is promised.
        sluice_io::durable::create_dir_all(&path).map_err(|source| IndexError::Io {
            operation: "create index directory",
            source: Arc::new(source),
        })?;
        let map_size_bytes =
            options.map_size_bytes.div_ceil(MAP_SIZE_GRANULE_BYTES) * MAP_SIZE_GRANULE_BYTES;
        let limits = EnvLimits {
            map_size_bytes,
            max_readers: options.max_readers,
        };
        let env = sluice_io::lmdb::open_lmdb_env(
            &path,
            map_size_bytes,
            options.max_readers,
            MAX_DBS,
            sluice_io::lmdb::FilesOnlyWrittenByLmdb::caller_guarantees(
                "the index directory is Sluice's own; docs/design/index-format.md tells the \
                 operator not to edit it and not to put it on a network file system",
            ),
        )
        .map_err(|error| IndexError::from_heed("open environment", error, limits))?;
        // LMDB may just have created data.mdb and lock.mdb, and never syncs
        // a directory: their names become durable here, before the first
        // commit is promised to anyone.
        sluice_io::durable::sync_dir(&path).map_err(|source| IndexError::Io {
            operation: "sync index directory",
            source: Arc::new(source),
        })?;
        // A process that died with a read transaction open leaves its slot
        // taken; reclaim them so they neither pin old pages nor fill the table.
        let stale = env
            .clear_stale_readers()
            .map_err(|error| IndexError::from_heed("clear stale readers", error, limits))?;
        if stale > 0 {
            tracing::info!(path = %path.display(), stale, "cleared stale LMDB reader slots");
        }
        let tables = open_tables(&env, &path, limits)?;
        let sop_index = SopIndex::new(
            &path,
            sop_hash_key(&env, &tables, limits)?,
            SopIndexOptions {
                cache_bytes: options.sop_index_cache_bytes,
            },
        );
        match sop_index.acquire(&env, &tables, limits)? {
            Some(catch_up) if catch_up.rebuilt || catch_up.added > 0 => tracing::info!(
                path = %path.display(),
                rebuilt = catch_up.rebuilt,
                candidates = catch_up.added,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "SOP index brought up to date with the catalogue"
            ),
            Some(_) => {}
            None => tracing::warn!(
                path = %path.display(),
                "another process owns the SOP Instance UID index (a running server?): lookups by SOP Instance UID alone scan the catalogue until it lets go"
            ),
        }
        let shared = Arc::new(Shared {
            env,
            tables,
            limits,
            sop_index,
            visibility: Visibility::default(),
        });
        let (sender, receiver) = crossbeam_channel::bounded(options.writer_queue_batches);
        let writer_limits = WriterLimits {
            group_ops_max: options.group_ops_max,
            zero_ahead_bytes: options.zero_ahead_bytes,
        };
        let thread_shared = Arc::clone(&shared);
        let writer_thread = std::thread::Builder::new()
            .name("sluice-index-writer".into())
            .spawn(move || run_writer(thread_shared, receiver, writer_limits))
            .map_err(|source| IndexError::Io {
                operation: "spawn index writer",
                source: Arc::new(source),
            })?;
        tracing::debug!(path = %path.display(), elapsed_us = started.elapsed().as_micros() as u64, "index opened");
        Ok(Index {
            shared,
            writer: IndexWriter::new(sender.clone(), options.batch_ops_max),
            sender,
            writer_thread: Some(writer_thread),
            path,
            options,
        })
    }

    /// A handle for submitting write batches (clone it freely).
    pub fn writer(&self) -> IndexWriter {
        self.writer.clone()
    }

    /// A read transaction: a consistent snapshot, usable from any thread.
    /// Keep it short: an open reader pins the pages it sees. It sees every
    /// batch answered before it began, including those answered when
    /// applied (`Batch::answered_when_applied`), whose commit it waits for
    /// (milliseconds; at most a few seconds if that commit fails and is
    /// run again).
    pub fn read(&self) -> Result<ReadTxn<'_>, IndexError> {
        self.shared.visibility.wait();
        self.read_committed()
    }

    /// A read transaction over what is committed now, without waiting for
    /// the commits of batches answered when applied (see [`Index::read`]):
    /// for a guess that the writer checks inside its own transaction (the
    /// ingest path's choice of area for a complete file), on a thread that
    /// must not wait for a commit.
    pub fn read_committed(&self) -> Result<ReadTxn<'_>, IndexError> {
        let txn = self
            .shared
            .env
            .read_txn()
            .map_err(|error| IndexError::from_heed("begin read", error, self.shared.limits))?;
        Ok(ReadTxn::new(txn, &self.shared))
    }

    /// What has been answered so far, for a thread that must not wait for a
    /// commit (an io core serving a C-FIND): once
    /// [`Index::answered_visible`] says the mark is visible,
    /// [`Index::read_committed`] sees everything answered before the mark was
    /// taken, as [`Index::read`] would, without blocking the thread; until
    /// then the caller does other work and asks again.
    pub fn answered_mark(&self) -> AnsweredMark {
        AnsweredMark(self.shared.visibility.answered_mark())
    }

    /// Whether every batch answered before `mark` was taken is committed (or
    /// the writer halted): see [`Index::answered_mark`].
    pub fn answered_visible(&self, mark: AnsweredMark) -> bool {
        self.shared.visibility.settled_through(mark.0)
    }

    /// Whether the writer stopped taking writes after a commit it had
    /// answered failed ([`IndexError::WriterHalted`]): what it answered is
    /// indexed again only by start-up recovery, so the data directory must
    /// not be marked as cleanly stopped.
    pub fn writer_halted(&self) -> bool {
        self.shared.visibility.halted()
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &IndexOptions {
        &self.options
    }

    /// Entries and bytes per table, and the environment's size.
    pub fn stats(&self) -> Result<IndexStats, IndexError> {
        let limits = self.shared.limits;
        let txn = self
            .shared
            .env
            .read_txn()
            .map_err(|error| IndexError::from_heed("begin read", error, limits))?;
        let mut tables = Vec::with_capacity(TABLE_COUNT + 1);
        for (name, table) in self.shared.tables.all() {
            let stat = table
                .stat(&txn)
                .map_err(|error| IndexError::from_heed("table stat", error, limits))?;
            let pages = stat.branch_pages + stat.leaf_pages + stat.overflow_pages;
            tables.push(TableStats {
                name,
                entries: stat.entries as u64,
                bytes: pages as u64 * u64::from(stat.page_size),
                depth: stat.depth,
            });
        }
        let (sop_entries, sop_index_bytes) = self.shared.sop_index.size();
        tables.push(TableStats {
            name: SOP_INDEX_TABLE_NAME,
            entries: sop_entries,
            bytes: sop_index_bytes,
            depth: self.shared.sop_index.table_count() as u32,
        });
        let info = self.shared.env.info();
        let page_size_bytes = self.shared.env.unnamed_database_stat().page_size;
        let file_size_bytes = self
            .shared
            .env
            .real_disk_size()
            .map_err(|error| IndexError::from_heed("file size", error, limits))?;
        Ok(IndexStats {
            tables,
            map_size_bytes: info.map_size as u64,
            used_bytes: (info.last_page_number as u64 + 1) * u64::from(page_size_bytes),
            file_size_bytes,
            readers_in_use: info.number_of_readers,
            readers_max: info.maximum_number_of_readers,
            last_transaction_id: info.last_txn_id as u64,
            sop_index_bytes,
        })
    }

    /// Stops the writer after the batches already queued and closes the environment.
    pub fn close(mut self) {
        self.stop_writer();
    }

    fn stop_writer(&mut self) {
        if let Some(thread) = self.writer_thread.take() {
            // Blocks while the queue is full: the writer is draining it.
            let _ = self.sender.send(Message::Shutdown);
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "the index writer thread panicked");
            }
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// The name [`IndexStats::tables`] gives the SOP index (the LSM tree).
pub const SOP_INDEX_TABLE_NAME: &str = "sop_index (LSM)";

/// One table's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// The table's name.
    pub name: &'static str,
    /// Its entries (the SOP index's count is an estimate: an LSM tree
    /// counts exactly only by reading all of itself).
    pub entries: u64,
    /// Bytes of the pages it uses (branch, leaf and overflow); for the SOP
    /// index, its directory's bytes on disk.
    pub bytes: u64,
    /// Height of its B-tree; for the SOP index, its number of tables.
    pub depth: u32,
}

/// The index's size, for `sluice stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStats {
    /// Per table.
    pub tables: Vec<TableStats>,
    /// The configured map size.
    pub map_size_bytes: u64,
    /// Bytes up to the last page in use (free pages inside are reused).
    pub used_bytes: u64,
    /// The data file's size on disk.
    pub file_size_bytes: u64,
    /// Reader slots in use.
    pub readers_in_use: u32,
    /// Reader slots available.
    pub readers_max: u32,
    /// Id of the last committed transaction.
    pub last_transaction_id: u64,
    /// The SOP index's directory's bytes on disk (journals included).
    pub sop_index_bytes: u64,
}

impl IndexStats {
    /// The stats of the table called `name`.
    pub fn table(&self, name: &str) -> Option<&TableStats> {
        self.tables.iter().find(|table| table.name == name)
    }
}
