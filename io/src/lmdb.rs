//! Opening an LMDB environment through heed: `sluice-index` needs this one
//! `unsafe` call, and `sluice-io` is the only crate allowed `unsafe`, so it
//! lives here behind the `lmdb` feature (the loadgen, which also depends on
//! this crate, never compiles heed).

use std::path::Path;

/// Opens (creating the files if needed) the LMDB environment in the directory
/// `path`, with default (fully synchronous) durability flags and read
/// transactions not tied to threads (`MDB_NOTLS`), so a read transaction may be
/// moved between threads and a thread may hold several.
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
    // SAFETY: heed marks `open` unsafe because the environment is a memory map
    // whose file must not be modified behind LMDB's back (truncated, rewritten
    // by another program, or opened with locking disabled), which would be
    // undefined behaviour for anyone holding a borrowed value. We pass no unsafe
    // flags (no NO_LOCK, NO_SYNC, NO_META_SYNC, WRITE_MAP), so LMDB's own lock
    // file arbitrates every other process that opens it through LMDB; the
    // directory is Sluice's private `<data>/index/`, which nothing else writes;
    // and heed itself refuses a second concurrent open of the same path in this
    // process. What remains is the operator's contract, stated in
    // docs/design/index-format.md: do not edit the index files while Sluice runs,
    // and do not put them on a network filesystem.
    let env = unsafe { options.open(path) }?;
    Ok(env)
}
