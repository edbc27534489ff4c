//! A file system image: what survives a power cut, and what a new mount
//! starts from.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};

use super::{Data, Ino, Kind, ROOT_INO};

/// A file system image: what survives a power cut, and what a new mount
/// starts from. Inode numbers are kept, so files with two durable names
/// (a rename whose source half was also durable) stay one file.
#[derive(Debug, Clone)]
pub struct Image {
    pub(super) files: HashMap<Ino, Data>,
    pub(super) dirs: HashMap<Ino, BTreeMap<OsString, Ino>>,
}

impl Image {
    /// An empty file system: only the root directory.
    pub fn empty() -> Image {
        Image {
            files: HashMap::new(),
            dirs: HashMap::from([(ROOT_INO, BTreeMap::new())]),
        }
    }

    /// The inode at `path` (relative to the root, `/`-separated), if any.
    pub fn lookup(&self, path: &str) -> Option<(Ino, Kind)> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|part| !part.is_empty()) {
            ino = *self.dirs.get(&ino)?.get(OsStr::new(part))?;
        }
        let kind = if self.dirs.contains_key(&ino) {
            Kind::Dir
        } else {
            Kind::File
        };
        Some((ino, kind))
    }

    /// The contents of the file at `path`, if there is one.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        match self.lookup(path)? {
            (ino, Kind::File) => self.files.get(&ino).map(Data::contents),
            (_, Kind::Dir) => None,
        }
    }

    /// The names in the directory at `path`, if there is one.
    pub fn names(&self, path: &str) -> Option<Vec<String>> {
        match self.lookup(path)? {
            (ino, Kind::Dir) => self.dirs.get(&ino).map(|entries| {
                entries
                    .keys()
                    .map(|name| name.to_string_lossy().into_owned())
                    .collect()
            }),
            (_, Kind::File) => None,
        }
    }

    /// Files and bytes in the image.
    pub fn totals(&self) -> (usize, u64) {
        (
            self.files.len(),
            self.files.values().map(Data::size).sum::<u64>(),
        )
    }
}
