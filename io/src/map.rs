//! Read-only file mappings that live for the rest of the process, for
//! senders that transmit files as they are (`sluice-loadgen --dir`): the
//! bytes can then be lent to sends as `IoBuf::Static` slices with no copy
//! and no lifetime to track.
//!
//! The mapping is never unmapped (it is leaked on purpose): a tool that
//! maps its input once at start and sends from it until it exits is what
//! this is for, not a server that opens files as it goes.

use std::fs::File;

/// Maps `file` read-only and keeps the mapping until the process exits.
///
/// The file must not be modified or truncated by anyone while the process
/// runs: the bytes returned would change under the caller, and reading a
/// page cut off by truncation raises `SIGBUS`. Mapping a user's input
/// files for a load generator accepts that; nothing in the server uses it.
/// An empty file gives an empty slice without a mapping.
pub fn map_for_process(file: &File) -> std::io::Result<&'static [u8]> {
    if file.metadata()?.len() == 0 {
        return Ok(&[]);
    }
    // SAFETY: `Mmap::map` is unsafe because the mapped file could be
    // changed or truncated by another process while mapped; this function's
    // contract puts that on the caller (documented above and in
    // docs/safety.md). The mapping is read-only and private to us.
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Box::leak(Box::new(map)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_the_file_bytes_and_empty_files() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"DICM and more").unwrap();
        let bytes = map_for_process(file.as_file()).unwrap();
        assert_eq!(bytes, b"DICM and more");
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(map_for_process(empty.as_file()).unwrap().is_empty());
    }
}
