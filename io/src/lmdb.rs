//! Opening an LMDB environment through heed: `sluice-index` needs this one
//! `unsafe` call, and `sluice-io` is the only crate allowed `unsafe`, so it
//! lives here behind the `lmdb` feature (the loadgen, which also depends on
//! this crate, never compiles heed).

use std::path::Path;

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
/// The directory must exist. Opening the same directory twice in one process at
/// the same time is refused by heed with `EnvAlreadyOpened`.
pub fn open_lmdb_env(
    path: &Path,
    map_size_bytes: usize,
    max_readers: u32,
    max_dbs: u32,
) -> heed::Result<heed::Env<heed::WithoutTls>> {
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
    // the flags that weaken that (NO_LOCK, NO_SYNC, WRITE_MAP), so LMDB's own lock
    // file arbitrates every other process that opens it through LMDB; the
    // directory is Sluice's private `<data>/index/`, which nothing else writes;
    // and heed itself refuses a second concurrent open of the same path in this
    // process. What remains is the operator's contract, stated in
    // docs/design/index-format.md: do not edit the index files while Sluice runs,
    // and do not put them on a network filesystem.
    let env = unsafe { options.open(path) }?;
    Ok(env)
}
