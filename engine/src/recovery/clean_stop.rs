//! The clean-stop record: what lets a restart after a clean stop skip the
//! walk of the archive.
//!
//! Start-up recovery's full check (the walk of `objects/` and
//! `quarantine/`, and a `stat` of every indexed file: 798 s at 8 M
//! instances) looks for debris only a crash leaves: files whose commit was
//! lost, files in the other area, entries without their file. A stop
//! after which none can exist says so with this record, `clean-stop` in the
//! data directory, and the next start skips those two steps (it still
//! settles entries in doubt, removes `tmp/` and seals open segments, which
//! cost what was in flight, not what is archived; any of them finding a
//! sign of a crash sends it back to the full check).
//!
//! - **Written** by `sluice serve` at the very end of a stop whose drain
//!   ended every association with nothing in flight, whose cores all
//!   joined, whose index settled (every commit made and flushed: the empty
//!   batch behind the last one returned) and whose background threads
//!   stopped: nothing can write the data directory after it. It names the
//!   index's content then: the entries of each table ([`index_fingerprint`];
//!   not LMDB's transaction id, which every open moves). Written to `clean-stop.tmp`,
//!   `fdatasync`ed, renamed to `clean-stop`, the directory fsynced: after a
//!   power cut it is either absent or whole, and it is durable only after
//!   everything it vouches for (each instance was flushed before it was
//!   answered, the index at the settle).
//! - **Taken** by whoever takes the data directory's lock
//!   ([`crate::lock::DataDirectoryLock`]: `sluice serve` and every writing
//!   command), before anything is written: read, then removed, and the
//!   removal made durable (directory fsynced) before the lock is handed
//!   out. So a run that crashes, or a power cut at any point after the
//!   start, leaves no record, and the next start does the full check. A
//!   writing command other than `serve` consumes it and writes none: the
//!   start after it does the full check.
//! - **Believed** only when its text is exactly what [`write`] writes and
//!   the index's tables still hold the numbers of entries it names (an
//!   index restored from a copy, or written by a process that ignored the
//!   lock, gets the full check).
//!
//! The full check on request: `sluice serve --full-recovery` (this start
//! checks the whole archive whatever the record says; the record is
//! consumed all the same), or `sluice verify` (offline, reads every file).

use std::io::Write;
use std::path::Path;

use sluice_index::IndexStats;

/// The record's file name in the data directory.
pub const CLEAN_STOP_FILE_NAME: &str = "clean-stop";

/// Where the record is written before its rename.
const CLEAN_STOP_TEMP_NAME: &str = "clean-stop.tmp";

/// The record's first word and format version.
const MAGIC: &str = "sluice-clean-stop 1";

/// Longest record read (it is a few hundred bytes).
const RECORD_BYTES_MAX: u64 = 4096;

/// Tables whose entries change without a write of the archive: the SOP
/// index's pending additions (each open moves them into the SOP index),
/// the SOP index itself (its count is an estimate) and the metadata.
const FINGERPRINT_SKIPS: [&str; 3] = ["meta", "sop_pending", sluice_index::SOP_INDEX_TABLE_NAME];

/// The index's content as a clean-stop record names it: each table's
/// entries (`name:entries`, comma-separated), but for [`FINGERPRINT_SKIPS`].
pub fn index_fingerprint(stats: &IndexStats) -> String {
    stats
        .tables
        .iter()
        .filter(|table| !FINGERPRINT_SKIPS.contains(&table.name))
        .map(|table| format!("{}:{}", table.name, table.entries))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a clean stop recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanStop {
    /// The index's content when the server stopped ([`index_fingerprint`]).
    pub index_fingerprint: String,
    /// When it stopped, milliseconds since the Unix epoch.
    pub stopped_at_unix_ms: u64,
}

impl CleanStop {
    fn to_text(&self) -> String {
        format!(
            "{MAGIC} index={} stopped-at-ms={}\n",
            self.index_fingerprint, self.stopped_at_unix_ms
        )
    }

    fn parse(text: &str) -> Option<CleanStop> {
        let rest = text.strip_suffix('\n')?.strip_prefix(MAGIC)?;
        let mut words = rest.split(' ');
        if !words.next()?.is_empty() {
            return None;
        }
        let index_fingerprint = words.next()?.strip_prefix("index=")?;
        if index_fingerprint.is_empty() {
            return None;
        }
        let stopped_at_unix_ms = words.next()?.strip_prefix("stopped-at-ms=")?.parse().ok()?;
        if words.next().is_some() {
            return None;
        }
        Some(CleanStop {
            index_fingerprint: index_fingerprint.to_owned(),
            stopped_at_unix_ms,
        })
    }
}

/// What [`take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastStop {
    /// No record: the last run crashed, was killed, did not drain, or a
    /// writing command ran since (or this is the first start).
    NotRecorded,
    /// A record that is not one [`write`] writes (kept nowhere: removed).
    Unreadable,
    /// A clean stop's record.
    Clean(CleanStop),
}

/// Writes the record durably in data directory `root`: call it last, when
/// nothing can write the directory any more.
pub fn write(root: &Path, record: &CleanStop) -> std::io::Result<()> {
    let temp = root.join(CLEAN_STOP_TEMP_NAME);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(record.to_text().as_bytes())?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, root.join(CLEAN_STOP_FILE_NAME))?;
    sluice_io::durable::sync_dir(root)
}

/// Reads the record of data directory `root` and removes it (and any
/// leftover of an interrupted [`write`]), durably: when this returns, no
/// later crash can bring it back.
pub fn take(root: &Path) -> std::io::Result<LastStop> {
    use std::io::Read;
    let path = root.join(CLEAN_STOP_FILE_NAME);
    let found = match std::fs::File::open(&path) {
        Ok(file) => {
            let mut text = String::new();
            // Bounded: a record is a few hundred bytes; anything else is not one.
            match file.take(RECORD_BYTES_MAX).read_to_string(&mut text) {
                Ok(_) => CleanStop::parse(&text).map_or(LastStop::Unreadable, LastStop::Clean),
                Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                    LastStop::Unreadable
                }
                Err(error) => return Err(error),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => LastStop::NotRecorded,
        Err(error) => return Err(error),
    };
    let mut removed = false;
    for name in [CLEAN_STOP_FILE_NAME, CLEAN_STOP_TEMP_NAME] {
        match std::fs::remove_file(root.join(name)) {
            Ok(()) => removed = true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    if removed {
        sluice_io::durable::sync_dir(root)?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        // As long as a real one: every table with a ten-digit count.
        let fingerprint = (0..18)
            .map(|table| format!("table_{table}:{}", 9_999_999_999u64 - table))
            .collect::<Vec<_>>()
            .join(",");
        let record = CleanStop {
            index_fingerprint: fingerprint,
            stopped_at_unix_ms: 1_800_000_000_000,
        };
        write(dir.path(), &record).unwrap();
        assert_eq!(take(dir.path()).unwrap(), LastStop::Clean(record));
        assert_eq!(take(dir.path()).unwrap(), LastStop::NotRecorded);
        assert!(!dir.path().join(CLEAN_STOP_FILE_NAME).exists());
    }

    #[test]
    fn anything_but_a_whole_record_is_unreadable_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let whole = CleanStop {
            index_fingerprint: "instances:7".to_owned(),
            stopped_at_unix_ms: 9,
        }
        .to_text();
        for text in [
            "",
            &whole[..whole.len() - 1],
            &whole[..10],
            "sluice-clean-stop 2 index=instances:7 stopped-at-ms=9\n",
            "sluice-clean-stop 1 index=instances:7 stopped-at-ms=9 more\n",
            "sluice-clean-stop 1 index= stopped-at-ms=9\n",
            "sluice-clean-stop 1 index=instances:7 stopped-at-ms=x\n",
        ] {
            std::fs::write(dir.path().join(CLEAN_STOP_FILE_NAME), text).unwrap();
            assert_eq!(take(dir.path()).unwrap(), LastStop::Unreadable, "{text:?}");
            assert!(!dir.path().join(CLEAN_STOP_FILE_NAME).exists());
        }
        std::fs::write(dir.path().join(CLEAN_STOP_FILE_NAME), [0xFF, 0xFE]).unwrap();
        assert_eq!(take(dir.path()).unwrap(), LastStop::Unreadable);
    }

    #[test]
    fn an_interrupted_write_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLEAN_STOP_TEMP_NAME), "sluice").unwrap();
        assert_eq!(take(dir.path()).unwrap(), LastStop::NotRecorded);
        assert!(!dir.path().join(CLEAN_STOP_TEMP_NAME).exists());
    }
}
