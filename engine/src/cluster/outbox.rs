//! The outbox: this node's committed entries not yet published to the
//! catalogue, as JSON lines in `<data>/cluster/outbox.jsonl`, and how far
//! the publisher got (`outbox.cursor`, a byte offset, replaced by rename).
//!
//! An entry is appended by the index writer's answer callback, after the
//! LMDB commit and before the batch is answered to its core, so before any
//! C-STORE response it covers: a process killed after the answer finds it
//! again at start. The append is a `write` into the page cache, not
//! flushed: a power loss can take the last entries while LMDB (flushed)
//! keeps them. A clean stop flushes the outbox and leaves a marker
//! (`clean-stop`); a start without it reconciles the local index with the
//! catalogue (`super::reconcile`), which finds what the outbox lost
//! (docs/design/scale-out.md, "Failure"). A torn last line (a kill
//! mid-append) is skipped up to the next newline. When everything is
//! published the file is cut back to empty, so it holds only the backlog.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sluice_index::NewInstance;

/// The file name of the outbox, in the cluster directory.
const OUTBOX_FILE: &str = "outbox.jsonl";
/// The file name of the cursor, in the cluster directory.
const CURSOR_FILE: &str = "outbox.cursor";
/// The marker of a clean stop: the outbox was flushed after the last entry.
const CLEAN_STOP_FILE: &str = "clean-stop";
/// The longest line read back (an entry is a triplet, a few dozen short
/// attributes: well under this; a longer line is damage and skipped).
const LINE_BYTES_MAX: usize = 64 * 1024;
/// The outbox is cut back to empty once fully published and past this size.
const TRUNCATE_AT_BYTES: u64 = 1 << 20;

/// One committed entry, as the catalogue records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) study_instance_uid: String,
    pub(crate) series_instance_uid: String,
    pub(crate) sop_instance_uid: String,
    pub(crate) sop_class_uid: String,
    pub(crate) transfer_syntax_uid: String,
    pub(crate) instance_number: Option<i32>,
    /// The file id, 32 hex digits (its path under the layout).
    pub(crate) file_id: String,
    pub(crate) file_size_bytes: u64,
    pub(crate) dataset_offset_bytes: u64,
    /// XXH3-128 of the data set, 32 hex digits.
    pub(crate) checksum: String,
    pub(crate) received_at_unix_ns: u64,
    pub(crate) calling_ae_title: String,
    pub(crate) patient_name: String,
    pub(crate) patient_id: String,
    pub(crate) patient_birth_date: String,
    pub(crate) patient_sex: String,
    pub(crate) study_date: String,
    pub(crate) study_time: String,
    pub(crate) accession_number: String,
    pub(crate) study_id: String,
    pub(crate) study_description: String,
    pub(crate) referring_physician_name: String,
    pub(crate) modality: String,
    pub(crate) series_number: Option<i32>,
    pub(crate) series_description: String,
    /// A removal: this node no longer stores the instance under `file_id`
    /// (its catalogue row goes if it still names this node and file). Only
    /// the triplet and the file id are meaningful then. Absent in lines of
    /// stored entries (and in outboxes written before removals existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) removed: bool,
    /// A place change: this node's instance stored under `file_id` was
    /// relocated (`WriteOp::Relocate`: compaction, migration); its row's
    /// record place and object key are read again from the index and
    /// updated. Only the SOP Instance UID and the file id are meaningful.
    /// Absent in other lines.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) relocated: bool,
    /// Where the record lives (segments layout) and its segment's object
    /// key once uploaded: read from the local index when the entry is
    /// published (`publisher`), never written to the outbox (a segment is
    /// uploaded long after its entries are appended).
    #[serde(skip)]
    pub(crate) record: Option<(sluice_index::RecordPlace, Option<String>)>,
}

impl Entry {
    pub(crate) fn of(instance: &NewInstance) -> Entry {
        let record = &instance.record;
        Entry {
            study_instance_uid: instance.triplet.study_instance_uid.clone(),
            series_instance_uid: instance.triplet.series_instance_uid.clone(),
            sop_instance_uid: instance.triplet.sop_instance_uid.clone(),
            sop_class_uid: record.sop_class_uid.clone(),
            transfer_syntax_uid: record.transfer_syntax_uid.clone(),
            instance_number: record.instance_number,
            file_id: format!("{:032x}", record.file_id.0),
            file_size_bytes: record.file_size_bytes,
            dataset_offset_bytes: record.dataset_offset_bytes,
            checksum: hex(&record.checksum.0),
            received_at_unix_ns: record.received_at_unix_ns,
            calling_ae_title: record.calling_ae_title.clone(),
            patient_name: instance.study.patient_name.clone(),
            patient_id: instance.study.patient_id.clone(),
            patient_birth_date: instance.study.patient_birth_date.clone(),
            patient_sex: instance.study.patient_sex.clone(),
            study_date: instance.study.study_date.clone(),
            study_time: instance.study.study_time.clone(),
            accession_number: instance.study.accession_number.clone(),
            study_id: instance.study.study_id.clone(),
            study_description: instance.study.study_description.clone(),
            referring_physician_name: instance.study.referring_physician_name.clone(),
            modality: instance.series.modality.clone(),
            series_number: instance.series.series_number,
            series_description: instance.series.series_description.clone(),
            removed: false,
            relocated: false,
            record: None,
        }
    }

    /// The removal of SOP Instance UID `sop`, stored under `file_id` (32
    /// hex digits, the catalogue's location), from this node.
    pub(crate) fn removal(sop: &str, file_id: &str) -> Entry {
        Entry {
            sop_instance_uid: sop.to_owned(),
            file_id: file_id.to_owned(),
            removed: true,
            ..Entry::default()
        }
    }

    /// The place change of SOP Instance UID `sop`, stored under `file_id`
    /// on this node: its record moved.
    pub(crate) fn relocation(sop: &str, file_id: sluice_index::FileId) -> Entry {
        Entry {
            sop_instance_uid: sop.to_owned(),
            file_id: format!("{:032x}", file_id.0),
            relocated: true,
            ..Entry::default()
        }
    }

    /// The instance as the index stored it; `None` for a damaged line.
    pub(crate) fn instance(&self) -> Option<NewInstance> {
        let checksum = u128::from_str_radix(&self.checksum, 16).ok()?;
        Some(NewInstance {
            triplet: sluice_index::Triplet::new(
                &self.study_instance_uid,
                &self.series_instance_uid,
                &self.sop_instance_uid,
            ),
            record: sluice_index::InstanceRecord {
                file_id: self.file_id()?,
                file_size_bytes: self.file_size_bytes,
                dataset_offset_bytes: self.dataset_offset_bytes,
                transfer_syntax_uid: self.transfer_syntax_uid.clone(),
                sop_class_uid: self.sop_class_uid.clone(),
                checksum: sluice_index::Checksum(checksum.to_be_bytes()),
                received_at_unix_ns: self.received_at_unix_ns,
                calling_ae_title: self.calling_ae_title.clone(),
                instance_number: self.instance_number,
            },
            study: sluice_index::StudyAttributes {
                patient_name: self.patient_name.clone(),
                patient_id: self.patient_id.clone(),
                patient_birth_date: self.patient_birth_date.clone(),
                patient_sex: self.patient_sex.clone(),
                study_date: self.study_date.clone(),
                study_time: self.study_time.clone(),
                accession_number: self.accession_number.clone(),
                study_id: self.study_id.clone(),
                study_description: self.study_description.clone(),
                referring_physician_name: self.referring_physician_name.clone(),
            },
            series: sluice_index::SeriesAttributes {
                modality: self.modality.clone(),
                series_number: self.series_number,
                series_description: self.series_description.clone(),
            },
        })
    }

    /// The file id, `None` if the text is not one (a damaged line).
    pub(crate) fn file_id(&self) -> Option<sluice_index::FileId> {
        u128::from_str_radix(&self.file_id, 16)
            .ok()
            .map(sluice_index::FileId)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Entries read back, with the offset just past the last one.
#[derive(Debug, Default)]
pub(crate) struct ReadBack {
    pub(crate) entries: Vec<Entry>,
    pub(crate) end_offset: u64,
    /// Lines that did not parse (damage: logged, skipped).
    pub(crate) damaged_lines: usize,
}

/// The outbox (see the module documentation).
#[derive(Debug)]
pub(crate) struct Outbox {
    directory: PathBuf,
    /// The file, and the bytes cut from its front since this process
    /// opened it: offsets handed out are *logical* (base + file offset), so
    /// a waiter's offset stays comparable across a cut.
    append: Mutex<(File, u64)>,
}

impl Outbox {
    pub(crate) fn open(directory: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(directory)?;
        let append = OpenOptions::new()
            .create(true)
            .append(true)
            .open(directory.join(OUTBOX_FILE))?;
        Ok(Outbox {
            directory: directory.to_owned(),
            append: Mutex::new((append, 0)),
        })
    }

    /// Whether the last run stopped cleanly (the outbox flushed after its
    /// last entry); the marker is removed, durably, so that a power loss
    /// during this run is seen at the next start.
    pub(crate) fn take_clean_stop(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(self.directory.join(CLEAN_STOP_FILE)) {
            Ok(()) => {
                File::open(&self.directory)?.sync_all()?;
                Ok(true)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// A clean stop: the outbox and its cursor flushed, then the marker.
    pub(crate) fn mark_clean_stop(&self) -> std::io::Result<()> {
        self.flush()?;
        File::create(self.directory.join(CLEAN_STOP_FILE))?.sync_all()?;
        File::open(&self.directory)?.sync_all()
    }

    /// Flushes what was appended (a writing command's append, made while
    /// the clean-stop marker says no reconciliation is needed).
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .0
            .sync_data()
    }

    /// Appends entries in one write; the logical offset just past them.
    pub(crate) fn append(&self, entries: &[Entry]) -> std::io::Result<u64> {
        let mut bytes = Vec::with_capacity(entries.len() * 1024);
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let mut guard = self
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (file, base) = &mut *guard;
        file.write_all(&bytes)?;
        Ok(*base + file.metadata()?.len())
    }

    /// The logical offset of file offset `cursor`.
    pub(crate) fn logical(&self, cursor: u64) -> u64 {
        let guard = self
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        guard.1 + cursor
    }

    /// How far the publisher got.
    pub(crate) fn cursor(&self) -> std::io::Result<u64> {
        match std::fs::read_to_string(self.directory.join(CURSOR_FILE)) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// Records that everything before file offset `offset` is published.
    pub(crate) fn advance(&self, offset: u64) -> std::io::Result<()> {
        self.write_cursor(offset)
    }

    /// Cuts the file back to empty when everything in it (`cursor`) is
    /// published and it has grown; the cursor after it.
    pub(crate) fn compact(&self, cursor: u64) -> std::io::Result<u64> {
        let mut guard = self
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (file, base) = &mut *guard;
        let length = file.metadata()?.len();
        assert!(cursor <= length, "published past the end of the outbox");
        if cursor < length || length < TRUNCATE_AT_BYTES {
            return Ok(cursor);
        }
        // Cursor to 0 first: a crash between the two leaves a zero cursor
        // on a full file, which republishes (idempotent), never a cursor
        // past the end.
        self.write_cursor(0)?;
        file.set_len(0)?;
        *base += length;
        Ok(0)
    }

    fn write_cursor(&self, offset: u64) -> std::io::Result<()> {
        let temporary = self.directory.join("outbox.cursor.tmp");
        std::fs::write(&temporary, format!("{offset}\n"))?;
        std::fs::rename(&temporary, self.directory.join(CURSOR_FILE))
    }

    /// Bytes not yet published.
    pub(crate) fn backlog_bytes(&self, cursor: u64) -> u64 {
        let guard = self
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        guard
            .0
            .metadata()
            .map(|metadata| metadata.len().saturating_sub(cursor))
            .unwrap_or(0)
    }

    /// Up to `entries_max` whole entries from `offset`.
    pub(crate) fn read_from(&self, offset: u64, entries_max: usize) -> std::io::Result<ReadBack> {
        let mut file = File::open(self.directory.join(OUTBOX_FILE))?;
        let length = file.metadata()?.len();
        let offset = offset.min(length);
        file.seek(SeekFrom::Start(offset))?;
        let mut read = ReadBack {
            end_offset: offset,
            ..ReadBack::default()
        };
        let budget = u64::try_from(entries_max.saturating_mul(4096)).unwrap_or(u64::MAX);
        let mut bytes = Vec::new();
        file.take(budget.max(LINE_BYTES_MAX as u64))
            .read_to_end(&mut bytes)?;
        let mut start = 0;
        while read.entries.len() < entries_max {
            let Some(rest) = bytes.get(start..) else {
                break;
            };
            // An unfinished last line is being appended (or torn): later.
            let Some(newline) = rest.iter().position(|byte| *byte == b'\n') else {
                if rest.len() >= LINE_BYTES_MAX {
                    read.damaged_lines += 1;
                    start = bytes.len();
                    read.end_offset = offset + start as u64;
                }
                break;
            };
            let line = rest.get(..newline).unwrap_or_default();
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => read.entries.push(entry),
                Err(_) => read.damaged_lines += 1,
            }
            start += newline + 1;
            read.end_offset = offset + start as u64;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sop: &str) -> Entry {
        Entry {
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.2.3".into(),
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            instance_number: Some(1),
            file_id: format!("{:032x}", 7u128),
            file_size_bytes: 10,
            dataset_offset_bytes: 0,
            checksum: hex(&[1; 16]),
            received_at_unix_ns: 1,
            calling_ae_title: "A".into(),
            patient_name: String::new(),
            patient_id: String::new(),
            patient_birth_date: String::new(),
            patient_sex: String::new(),
            study_date: String::new(),
            study_time: String::new(),
            accession_number: String::new(),
            study_id: String::new(),
            study_description: String::new(),
            referring_physician_name: String::new(),
            modality: "OT".into(),
            series_number: None,
            series_description: String::new(),
            removed: false,
            relocated: false,
            record: None,
        }
    }

    #[test]
    fn entries_come_back_in_order_and_a_torn_tail_waits() {
        let directory = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(directory.path()).unwrap();
        outbox.append(&[entry("1.1"), entry("1.2")]).unwrap();
        // A torn append: no newline yet.
        std::fs::OpenOptions::new()
            .append(true)
            .open(directory.path().join(OUTBOX_FILE))
            .unwrap()
            .write_all(b"{\"study")
            .unwrap();
        let read = outbox.read_from(0, 10).unwrap();
        let sops: Vec<_> = read
            .entries
            .iter()
            .map(|e| e.sop_instance_uid.as_str())
            .collect();
        assert_eq!(sops, ["1.1", "1.2"]);
        assert_eq!(read.damaged_lines, 0);
        outbox.advance(read.end_offset).unwrap();
        // A reopened outbox resumes at the cursor.
        let reopened = Outbox::open(directory.path()).unwrap();
        let cursor = reopened.cursor().unwrap();
        assert_eq!(cursor, read.end_offset);
        assert!(reopened.read_from(cursor, 10).unwrap().entries.is_empty());
        assert_eq!(entry("9").file_id(), Some(sluice_index::FileId(7)));
    }

    #[test]
    fn a_damaged_line_is_skipped_and_counted() {
        let directory = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(directory.path()).unwrap();
        outbox.append(&[entry("1.1")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(directory.path().join(OUTBOX_FILE))
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        outbox.append(&[entry("1.3")]).unwrap();
        let read = outbox.read_from(0, 1).unwrap();
        assert_eq!(read.entries.len(), 1);
        let rest = outbox.read_from(read.end_offset, 10).unwrap();
        assert_eq!(rest.damaged_lines, 1);
        assert_eq!(rest.entries[0].sop_instance_uid, "1.3");
    }
}
