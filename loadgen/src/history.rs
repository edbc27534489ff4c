//! The history file (`run --history FILE`): one JSON line per instance
//! sent, written by the cores and read back by `check` (was everything
//! acknowledged kept?) and by the retrieval workloads (what can be queried
//! and retrieved, `--keys-from history:FILE`). [`HistoryLine`] is its one
//! definition; docs/design/loadgen.md describes it.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What became of an instance sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered with success or a warning: the target holds it.
    Stored,
    /// Answered with a failure status.
    Failed,
    /// Never answered (abort, closed connection, end of the run).
    Unanswered,
}

/// One line of the history file. Lines of unanswered instances carry only
/// the SOP Instance UID and the outcome; lines written before a field
/// existed read it as empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// SOP Class UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Study Instance UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub study_instance_uid: String,
    /// Series Instance UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub series_instance_uid: String,
    /// Patient ID, as sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_id: String,
    /// Patient's Name, as text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_name: String,
    /// Study Date.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub study_date: String,
    /// Modality.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modality: String,
    /// Transfer syntax the data set was sent in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transfer_syntax_uid: String,
    /// SHA-256 (hex) of the data set exactly as sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// The C-STORE status, 4 hex digits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// What became of it.
    pub outcome: Outcome,
}

impl HistoryLine {
    /// The line of an instance that was never answered.
    pub fn unanswered(sop_instance_uid: String) -> HistoryLine {
        HistoryLine {
            sop_class_uid: String::new(),
            sop_instance_uid,
            study_instance_uid: String::new(),
            series_instance_uid: String::new(),
            patient_id: String::new(),
            patient_name: String::new(),
            study_date: String::new(),
            modality: String::new(),
            transfer_syntax_uid: String::new(),
            sha256: String::new(),
            status: String::new(),
            outcome: Outcome::Unanswered,
        }
    }

    /// The line as JSON, without its newline.
    pub fn to_json(&self) -> String {
        // Serialising strings and an enum cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not what `run --history` writes.
    #[error("{path}:{line}: not a history line: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Line number (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Calls `each` with every line of the history file at `path`, in order
/// (blank lines skipped), streaming: the file is never held whole.
pub fn read(path: &Path, mut each: impl FnMut(HistoryLine)) -> Result<(), HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: HistoryLine =
            serde_json::from_str(&line).map_err(|error| HistoryError::BadLine {
                path: path.to_path_buf(),
                line: index + 1,
                reason: error.to_string(),
            })?;
        each(parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_old_lines_still_read() {
        let line = HistoryLine {
            patient_name: "Yamada^Tarou=山田^太郎 \"q\"".into(),
            sha256: "ab".repeat(32),
            status: "0000".into(),
            ..HistoryLine::unanswered("1.2.3".into())
        };
        let line = HistoryLine {
            outcome: Outcome::Stored,
            ..line
        };
        let json = line.to_json();
        assert_eq!(serde_json::from_str::<HistoryLine>(&json).unwrap(), line);
        // A line of the first format (no keys) and an unanswered one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        std::fs::write(
            &path,
            "{\"sop_class_uid\":\"1.2\",\"sop_instance_uid\":\"1.2.3\",\"study_instance_uid\":\"1.2.4\",\"series_instance_uid\":\"1.2.5\",\"sha256\":\"00\",\"status\":\"0000\",\"outcome\":\"stored\"}\n\n{\"sop_instance_uid\":\"9\",\"outcome\":\"unanswered\"}\n",
        )
        .unwrap();
        let mut lines = Vec::new();
        read(&path, |line| lines.push(line)).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].study_instance_uid, "1.2.4");
        assert_eq!(lines[0].patient_id, "");
        assert_eq!(lines[1].outcome, Outcome::Unanswered);
        std::fs::write(&path, "{\"sop_instance_uid\":\"9\"}\n").unwrap();
        let error = read(&path, |_| {}).unwrap_err();
        assert!(
            error.to_string().contains("h.jsonl:1: not a history line"),
            "{error}"
        );
    }
}
