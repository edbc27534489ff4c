//! Checks a receiver's files against a history file: every instance the
//! loadgen counted as stored must be on disk, and (for receivers that keep
//! the data set as received, like Sluice) its data set must hash to the
//! SHA-256 recorded when it was sent.
//!
//! Works on any directory of Part 10 files, so it needs no access to the
//! receiver beyond its storage (Sluice's `objects/`, storescp's output).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::history::{HistoryError, Outcome};

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// History lines with outcome `stored`.
    pub acknowledged: u64,
    /// Acknowledged and found with the same data set hash.
    pub matching: u64,
    /// Acknowledged and found, but the data set differs (when hashes are compared).
    pub different: Vec<String>,
    /// Acknowledged but not found.
    pub missing: Vec<String>,
    /// Part 10 files looked at.
    pub files: u64,
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The history file could not be read.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// SOP Instance UID -> SHA-256 (hex) of the data set, for every Part 10
/// file under `dir`.
pub fn scan_directory(dir: &Path) -> Result<HashMap<String, String>, CheckError> {
    let mut found = HashMap::new();
    let paths = crate::workload::files_under(dir)
        .map_err(|(path, source)| CheckError::Io { path, source })?;
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| CheckError::Io {
            path: path.clone(),
            source,
        })?;
        let Some((uid, dataset)) = crate::workload::part10_uid_and_dataset(&bytes) else {
            continue;
        };
        let digest = Sha256::digest(dataset)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        found.insert(uid, digest);
    }
    Ok(found)
}

/// Checks `history` (from `run --history`) against the files under `dir`;
/// with `compare_hashes`, data sets must also be byte-identical.
pub fn check(history: &Path, dir: &Path, compare_hashes: bool) -> Result<CheckReport, CheckError> {
    let found = scan_directory(dir)?;
    let mut report = CheckReport {
        files: found.len() as u64,
        ..CheckReport::default()
    };
    crate::history::read(history, |line| {
        if line.outcome != Outcome::Stored {
            return;
        }
        report.acknowledged += 1;
        match found.get(&line.sop_instance_uid) {
            None => report.missing.push(line.sop_instance_uid),
            Some(digest) if compare_hashes && *digest != line.sha256 => {
                report.different.push(line.sop_instance_uid)
            }
            Some(_) => report.matching += 1,
        }
    })?;
    Ok(report)
}
