//! Directories whose entries survive a power cut. A new directory, like a
//! new file, is durable only once the directory holding its name is
//! fsynced: `mkdir` alone leaves the name in the page cache
//! (docs/design/power-loss-testing.md has the model the crash file system
//! checks). Blocking calls, for start-up and the rare first use of a
//! directory; nothing here is on a ring.

use std::io;
use std::path::Path;

/// Makes the entries of `dir` (names created, renamed or removed in it)
/// durable: opens it and fsyncs it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each
/// one created (top-down, so a name is never durable before the directory
/// holding it). A component another thread created meanwhile counts as
/// created: its parent is synced too, since its creator may not have done
/// so yet. Returns whether any component was missing.
pub fn create_dir_all(dir: &Path) -> io::Result<bool> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        if path.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", path.display()),
                ))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                missing.push(path);
                current = path.parent();
            }
            Err(error) => return Err(error),
        }
    }
    for path in missing.iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let parent = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(!missing.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_missing_components_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert!(create_dir_all(&deep).unwrap());
        assert!(deep.is_dir());
        assert!(!create_dir_all(&deep).unwrap(), "nothing was missing");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let error = create_dir_all(&dir.path().join("file")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(create_dir_all(&dir.path().join("file/below")).is_err());
    }
}
