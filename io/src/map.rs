//! Read-only file mappings that live for the rest of the process, for
//! senders that transmit files as they are (`sluice-loadgen --dir`): the
//! bytes can then be lent to sends as `IoBuf::Static` slices with no copy
//! and no lifetime to track.
//!
//! The mapping is never unmapped (it is leaked on purpose): a tool that
//! maps its input once at start and sends from it until it exits is what
//! this is for, not a server that opens files as it goes.
//!
//! What this module enforces: it opens the file itself, read-only, and maps
//! only regular files, privately and read-only, so nothing this call hands
//! out can write the bytes. What it cannot enforce is the rest of the
//! process and every other process: the caller states that in a
//! [`FileUnchangedWhileMapped`] at the call site, where a reviewer sees it
//! (every such site is listed in docs/safety.md).

use std::fs::File;
use std::path::Path;

/// The caller's guarantee, which no code can check, that nobody (no other
/// process, and nothing else in this one) modifies or truncates the mapped
/// file while this process runs. If someone does, the `&'static [u8]` the
/// mapping hands out changes under its readers, which Rust's aliasing rules
/// forbid, and a read of a page cut off by truncation raises `SIGBUS`.
///
/// Made only with [`FileUnchangedWhileMapped::caller_guarantees`], whose
/// argument says why the guarantee holds at that call site.
#[derive(Debug, Clone, Copy)]
pub struct FileUnchangedWhileMapped {
    reason: &'static str,
}

impl FileUnchangedWhileMapped {
    /// States the guarantee; `reason` says why it holds here, for the
    /// reviewer of the call site (and the debug log of each mapping).
    pub const fn caller_guarantees(reason: &'static str) -> FileUnchangedWhileMapped {
        FileUnchangedWhileMapped { reason }
    }

    /// Why the caller says the file stays unchanged.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Opens the regular file `path` read-only, maps it read-only and keeps the
/// mapping until the process exits. An empty file gives an empty slice
/// without a mapping; anything but a regular file is refused
/// (`InvalidInput`).
pub fn map_for_process(
    path: &Path,
    unchanged: FileUnchangedWhileMapped,
) -> std::io::Result<&'static [u8]> {
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "only regular files are mapped",
        ));
    }
    if metadata.len() == 0 {
        return Ok(&[]);
    }
    // SAFETY: `Mmap::map` is unsafe because the mapped file could be changed
    // or truncated while mapped. The mapping is private and read-only, made
    // from a descriptor opened read-only here and closed on return, so
    // nothing handed out by this call can write it; that nobody else does is
    // the guarantee `unchanged` states at the call site (docs/safety.md).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    tracing::debug!(
        path = %path.display(),
        bytes = map.len(),
        unchanged_because = unchanged.reason(),
        "mapped for the process"
    );
    Ok(Box::leak(Box::new(map)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEST_FILES: FileUnchangedWhileMapped =
        FileUnchangedWhileMapped::caller_guarantees("a test's own temporary file");

    #[test]
    fn maps_the_file_bytes_and_empty_files() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"DICM and more").unwrap();
        file.flush().unwrap();
        let bytes = map_for_process(file.path(), TEST_FILES).unwrap();
        assert_eq!(bytes, b"DICM and more");
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(map_for_process(empty.path(), TEST_FILES)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = map_for_process(dir.path(), TEST_FILES).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        let missing = map_for_process(&dir.path().join("missing"), TEST_FILES).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
