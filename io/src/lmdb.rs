//! Opening an LMDB environment through heed: `sluice-index` needs this one
//! `unsafe` call, and `sluice-io` is the only crate allowed `unsafe`, so it
//! lives here behind the `lmdb` feature (the loadgen, which also depends on
//! this crate, never compiles heed).
//!
//! What is enforced here: none of the flags that weaken LMDB's locking or
//! its map (`NO_LOCK`, `NO_SYNC`, `WRITE_MAP`) is ever set, so LMDB's lock
//! file arbitrates every process that opens the environment through LMDB;
//! and one process never opens the same environment twice at once (heed
//! refuses a second open of the same canonical path; this module also
//! refuses the same directory reached by another path, e.g. a bind mount,
//! since two opens in one process would share POSIX locks and the close of
//! one would drop the other's). What cannot be enforced is everything
//! outside LMDB: the caller states it in a [`FilesOnlyWrittenByLmdb`] at the
//! call site, where a reviewer sees it (every such site is listed in
//! docs/safety.md).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The caller's guarantee, which no code can check, that while the
/// environment is open nothing but LMDB writes, truncates, replaces or
/// deletes its files (`data.mdb`, and `lock.mdb`, whose locks keep readers
/// and the writer apart), and that the directory is on a local file system
/// (LMDB's locks do not work over a network file system). If that fails,
/// values borrowed from the map change or vanish under their readers.
///
/// Made only with [`FilesOnlyWrittenByLmdb::caller_guarantees`], whose
/// argument says why the guarantee holds at that call site.
#[derive(Debug, Clone, Copy)]
pub struct FilesOnlyWrittenByLmdb {
    reason: &'static str,
}

impl FilesOnlyWrittenByLmdb {
    /// States the guarantee; `reason` says why it holds here, for the
    /// reviewer of the call site (and the debug log of the open).
    pub const fn caller_guarantees(reason: &'static str) -> FilesOnlyWrittenByLmdb {
        FilesOnlyWrittenByLmdb { reason }
    }

    /// Why the caller says only LMDB writes the files.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// An environment this process opened: its directory's identity, and the
/// canonical path heed registered it under (heed forgets it at close).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenEnvironment {
    device: u64,
    inode: u64,
    path: PathBuf,
}

/// The environments this process has open, by directory identity.
static OPEN_ENVIRONMENTS: Mutex<Vec<OpenEnvironment>> = Mutex::new(Vec::new());

/// Whether `directory` (device, inode) may be opened: forgets entries heed
/// has closed since (`still_open`), then refuses a directory open already.
fn admit(
    open: &mut Vec<OpenEnvironment>,
    directory: (u64, u64),
    still_open: impl Fn(&Path) -> bool,
) -> bool {
    open.retain(|environment| still_open(&environment.path));
    !open
        .iter()
        .any(|environment| (environment.device, environment.inode) == directory)
}

/// Opens (creating the files if needed) the LMDB environment in the directory
/// `path`, with `MDB_NOMETASYNC` and read transactions not tied to threads
/// (`MDB_NOTLS`), so a read transaction may be moved between threads and a
/// thread may hold several.
///
/// `MDB_NOMETASYNC`: a commit flushes its data pages but not the meta page
/// that makes them current, so the last commit becomes durable only with the
/// next flush of the data file ([`heed::Env::force_sync`], or the next
/// commit's). The writer of `sluice-index` answers a batch only after such a
/// flush unless told otherwise (`index/src/writer.rs`); any other writer must
/// do the same.
///
/// The directory must exist. An environment already open in this process,
/// by this path or another, is refused with `EnvAlreadyOpened`.
pub fn open_lmdb_env(
    path: &Path,
    map_size_bytes: usize,
    max_readers: u32,
    max_dbs: u32,
    only_lmdb: FilesOnlyWrittenByLmdb,
) -> heed::Result<heed::Env<heed::WithoutTls>> {
    let metadata = std::fs::metadata(path)?;
    let directory = (metadata.dev(), metadata.ino());
    let mut open = OPEN_ENVIRONMENTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !admit(&mut open, directory, |path| {
        heed::env_closing_event(path).is_some()
    }) {
        return Err(heed::Error::EnvAlreadyOpened);
    }
    let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(map_size_bytes)
        .max_readers(max_readers)
        .max_dbs(max_dbs);
    // SAFETY: heed marks every flag setter unsafe because some flags (NO_LOCK,
    // WRITE_MAP, NO_SUB_DIR on the wrong path) can break memory safety.
    // NO_META_SYNC cannot: it only leaves out the flush of the meta page at
    // commit. LMDB writes that page after the commit's data pages are
    // flushed, so whatever reaches the disk is a consistent state; only the
    // durability of the last commit moves to the caller's next flush (see the
    // function's documentation).
    unsafe {
        options.flags(heed::EnvFlags::NO_META_SYNC);
    }
    // SAFETY: heed marks `open` unsafe because the environment is a memory map
    // whose file must not be modified behind LMDB's back (truncated, rewritten
    // by another program, or opened with locking disabled), which would be
    // undefined behaviour for anyone holding a borrowed value. We pass none of
    // the flags that weaken that (NO_LOCK, NO_SYNC, WRITE_MAP), so LMDB's own
    // lock file arbitrates every other process that opens it through LMDB;
    // this process opens the directory at most once (the registry above and
    // heed's own); and what remains, that nothing outside LMDB touches the
    // files and they are on a local file system, is the guarantee `only_lmdb`
    // states at the call site (docs/safety.md).
    let env = unsafe { options.open(path) }?;
    tracing::debug!(
        path = %env.path().display(),
        only_lmdb_because = only_lmdb.reason(),
        "LMDB environment open"
    );
    open.push(OpenEnvironment {
        device: directory.0,
        inode: directory.1,
        path: env.path().to_path_buf(),
    });
    Ok(env)
}

/// Keeps written zeros ahead of the end of the environment's data file
/// (`data.mdb`), so that the pages LMDB adds land on blocks already written
/// and its flushes change neither the file's size nor its extents (no
/// journal commit: docs/design/segments.md, "Written blocks"): when fewer
/// than `slack_min` bytes lie past `used_bytes` (the end of LMDB's last
/// page), `chunk` bytes of zeros are written past the file's end (through
/// the page cache; the next flush of the data file makes them durable).
/// Returns the bytes written (0: enough slack).
///
/// Why this is the one write outside LMDB that the data file may take:
/// `writer` is a write transaction the caller holds and aborts unchanged,
/// so LMDB's writer lock is held and no process commits meanwhile; the
/// zeros go past the file's end, so past every page any transaction wrote
/// or reads (a reader's pages are at most its snapshot's last page, and
/// LMDB writes pages only at commit); LMDB sizes the database by its meta
/// pages, never by the file, so a longer file opens, reads, copies and
/// grows as before (its next pages overwrite the zeros).
pub fn keep_zeros_ahead(
    env: &heed::Env<heed::WithoutTls>,
    writer: &heed::RwTxn<'_>,
    used_bytes: u64,
    slack_min: u64,
    chunk: usize,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    // Held, not used: the writer lock is what makes the write safe.
    let _ = writer;
    let data = env.path().join("data.mdb");
    let file = std::fs::OpenOptions::new().write(true).open(&data)?;
    let size = file.metadata()?.len();
    if size.saturating_sub(used_bytes) >= slack_min {
        return Ok(0);
    }
    let zeros = vec![0u8; chunk];
    file.write_all_at(&zeros, size)?;
    Ok(chunk as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_DIRECTORY: FilesOnlyWrittenByLmdb =
        FilesOnlyWrittenByLmdb::caller_guarantees("a test's own temporary directory");

    fn entry(device: u64, inode: u64, path: &str) -> OpenEnvironment {
        OpenEnvironment {
            device,
            inode,
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn the_same_directory_by_another_path_is_refused_while_open() {
        let mut open = vec![entry(1, 7, "/data/index")];
        // A bind mount: another canonical path, the same directory.
        assert!(!admit(&mut open, (1, 7), |_| true));
        // Once heed has closed it, the directory may be opened again.
        assert!(admit(&mut open, (1, 7), |_| false));
        assert!(open.is_empty());
    }

    #[test]
    fn other_directories_are_admitted() {
        let mut open = vec![entry(1, 7, "/data/index")];
        assert!(admit(&mut open, (1, 8), |_| true));
        assert!(admit(&mut open, (2, 7), |_| true));
        assert_eq!(open.len(), 1);
    }

    #[test]
    fn a_second_open_is_refused_and_a_reopen_after_close_works() {
        let dir = tempfile::tempdir().unwrap();
        let env = open_lmdb_env(dir.path(), 1 << 20, 4, 1, TEST_DIRECTORY).unwrap();
        // Another path to the same directory (heed canonicalises this one
        // too; a bind mount it would not, the registry catches both).
        let dotted = dir.path().join(".");
        let second = open_lmdb_env(&dotted, 1 << 20, 4, 1, TEST_DIRECTORY);
        assert!(matches!(second, Err(heed::Error::EnvAlreadyOpened)));
        drop(env);
        let reopened = open_lmdb_env(&dotted, 1 << 20, 4, 1, TEST_DIRECTORY);
        assert!(reopened.is_ok(), "{:?}", reopened.err());
    }
}
