//! The DICOMDIR reader and validator: parses a DICOMDIR held in memory
//! (whoever wrote it: DCMTK's dcmgpdir/dcmmkdir, pydicom's FileSet, Sluice),
//! walks the record tree by its offsets with bounds, loop and depth checks,
//! and returns the instances with their File IDs and the keys of their
//! patient, study and series, so an importer can choose by patient or study.
//!
//! What is wrong is reported as [`Issue`]s, each naming the byte offset of
//! the record or field: a bad offset, a loop, a record no offset reaches, a
//! missing Type 1 key, an unknown record type, a Referenced File ID that is
//! not a valid File ID (such an instance is not returned: its path could
//! leave the File-set). Only a file that is not a DICOMDIR at all is an
//! error ([`DirectoryError`]).

use std::collections::HashMap;
use std::fmt;

use sluice_net::charset::SpecificCharacterSet;
use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::Tag;
use sluice_net::uid::ts;

use super::{
    DIRECTORY_RECORD_SEQUENCE, FILE_SET_ID, FIRST_ROOT_RECORD, LAST_ROOT_RECORD, LOWER_LEVEL,
    MEDIA_STORAGE_DIRECTORY_STORAGE, NEXT_RECORD, RECORD_IN_USE, RECORD_TYPE, REFERENCED_FILE_ID,
    REFERENCED_SOP_CLASS, REFERENCED_SOP_INSTANCE, REFERENCED_TRANSFER_SYNTAX,
};
use crate::file_id::{FileId, FileIdError};
use crate::part10::{read_file_meta, FileMetaError};
use crate::record::{KeyType, RecordType, SPECIFIC_CHARACTER_SET};

/// Deepest record hierarchy followed (PATIENT, STUDY, SERIES, instance is 4).
pub const DIRECTORY_DEPTH_MAX: usize = 16;
/// Deepest sequence nesting inside a record.
const RECORD_NESTING_MAX: usize = 16;
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;

/// Why a file cannot be read as a DICOMDIR at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// No Part 10 header.
    #[error(transparent)]
    Meta(#[from] FileMetaError),
    /// Not Media Storage Directory Storage.
    #[error("not a DICOMDIR: Media Storage SOP Class UID is {0:?}")]
    NotADirectory(String),
    /// A transfer syntax a DICOMDIR is not written in.
    #[error(
        "DICOMDIR in transfer syntax {0:?}: only Explicit or Implicit VR Little Endian are read"
    )]
    TransferSyntax(String),
    /// No Directory Record Sequence.
    #[error("no Directory Record Sequence (0004,1220)")]
    NoRecordSequence,
}

/// One thing wrong in a DICOMDIR, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Byte offset (from the file's first byte) of the record or element.
    pub offset: u64,
    /// What is wrong.
    pub kind: IssueKind,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueKind {
    /// The file's structure breaks here: what follows is not read.
    Malformed(String),
    /// An offset that points at no record.
    BadOffset {
        /// Which offset field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// A record reached a second time (a loop, or two parents).
    ReachedTwice {
        /// The record's offset.
        record: u64,
    },
    /// Records nested deeper than [`DIRECTORY_DEPTH_MAX`].
    TooDeep,
    /// Records that no offset reaches.
    Unreachable {
        /// How many.
        count: usize,
    },
    /// (0004,1202) does not name the root's last record.
    LastRootMismatch {
        /// The value written.
        written: u32,
        /// The last record actually reached.
        reached: u64,
    },
    /// A record type PS3.3 does not define, or none.
    UnknownRecordType(String),
    /// A record of a known type where it does not belong (an IMAGE under a
    /// PATIENT...), or a type Sluice does not import.
    Misplaced {
        /// Its type.
        record_type: String,
        /// Its parent's type ("root" at the top).
        parent: String,
    },
    /// A Type 1 key absent or empty.
    MissingKey {
        /// The record's type.
        record_type: &'static str,
        /// The key.
        tag: Tag,
    },
    /// An instance record with a Referenced File ID that is not a valid File
    /// ID: the instance is not returned.
    BadFileId(FileIdError),
    /// A File ID with lowercase letters (accepted).
    LowercaseFileId(String),
    /// An instance record without a Referenced File ID.
    NoFileId,
    /// A record whose Record In-use Flag is 0000H (skipped with its subtree).
    Inactive,
}

impl fmt::Display for Issue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "at offset {}: ", self.offset)?;
        match &self.kind {
            IssueKind::Malformed(what) => write!(formatter, "malformed: {what}"),
            IssueKind::BadOffset { field, value } => {
                write!(formatter, "{field} is {value}, which is not the start of a record")
            }
            IssueKind::ReachedTwice { record } => {
                write!(formatter, "record at {record} is reached twice (a loop or two parents)")
            }
            IssueKind::TooDeep => write!(formatter, "records nested deeper than {DIRECTORY_DEPTH_MAX}"),
            IssueKind::Unreachable { count } => {
                write!(formatter, "{count} records are not reachable from the root")
            }
            IssueKind::LastRootMismatch { written, reached } => write!(
                formatter,
                "Offset of the Last Directory Record of the Root Directory Entity is {written}, the last root record is at {reached}"
            ),
            IssueKind::UnknownRecordType(name) => write!(formatter, "unknown record type {name:?}"),
            IssueKind::Misplaced { record_type, parent } => {
                write!(formatter, "{record_type} record under {parent} is not imported")
            }
            IssueKind::MissingKey { record_type, tag } => {
                write!(formatter, "{record_type} record has no {tag}")
            }
            IssueKind::BadFileId(error) => {
                write!(formatter, "Referenced File ID is invalid ({error}): instance skipped")
            }
            IssueKind::LowercaseFileId(id) => write!(formatter, "File ID {id} has lowercase letters"),
            IssueKind::NoFileId => write!(formatter, "instance record without Referenced File ID"),
            IssueKind::Inactive => write!(formatter, "inactive record (in-use flag 0000H) skipped"),
        }
    }
}

/// A PATIENT record's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientEntry {
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Name, decoded.
    pub patient_name: String,
}

/// A STUDY record's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyEntry {
    /// Index in [`Directory::patients`].
    pub patient: usize,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study Date.
    pub study_date: String,
    /// Study Description, decoded.
    pub study_description: String,
    /// Accession Number.
    pub accession_number: String,
}

/// A SERIES record's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesEntry {
    /// Index in [`Directory::studies`].
    pub study: usize,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Modality.
    pub modality: String,
}

/// An instance record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEntry {
    /// Index in [`Directory::series`].
    pub series: usize,
    /// Its record's offset.
    pub record_offset: u64,
    /// Its record type (IMAGE, SR DOCUMENT...).
    pub record_type: String,
    /// Its file, relative to the File-set's root.
    pub file_id: FileId,
    /// Referenced SOP Class UID in File.
    pub sop_class_uid: String,
    /// Referenced SOP Instance UID in File.
    pub sop_instance_uid: String,
    /// Referenced Transfer Syntax UID in File.
    pub transfer_syntax_uid: String,
}

/// A DICOMDIR read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directory {
    /// File-set ID.
    pub file_set_id: String,
    /// Patients, in directory order.
    pub patients: Vec<PatientEntry>,
    /// Studies.
    pub studies: Vec<StudyEntry>,
    /// Series.
    pub series: Vec<SeriesEntry>,
    /// Instances that can be imported.
    pub instances: Vec<InstanceEntry>,
    /// What is wrong, in the order found.
    pub issues: Vec<Issue>,
}

impl Directory {
    /// The study of an instance.
    pub fn study_of(&self, instance: &InstanceEntry) -> Option<&StudyEntry> {
        let series = self.series.get(instance.series)?;
        self.studies.get(series.study)
    }

    /// The patient of an instance.
    pub fn patient_of(&self, instance: &InstanceEntry) -> Option<&PatientEntry> {
        self.patients.get(self.study_of(instance)?.patient)
    }
}

struct Record {
    offset: u64,
    dataset: SmallDataset,
}

/// A cursor over the file's bytes.
struct Walker<'a> {
    file: &'a [u8],
    explicit: bool,
}

struct Header {
    tag: Tag,
    vr: Option<Vr>,
    length: u32,
    /// Offset of the value.
    value: usize,
}

impl Walker<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let bytes = self.file.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]))
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes = self.file.get(at..at.checked_add(4)?)?;
        let mut value = [0u8; 4];
        value.copy_from_slice(bytes);
        Some(u32::from_le_bytes(value))
    }

    fn header(&self, at: usize, explicit: bool) -> Result<Header, String> {
        let truncated = || format!("element header at {at} runs past the end of the file");
        let tag = Tag(
            self.u16_at(at).ok_or_else(truncated)?,
            self.u16_at(at.saturating_add(2)).ok_or_else(truncated)?,
        );
        if tag.0 == 0xFFFE || !explicit {
            let length = self.u32_at(at.saturating_add(4)).ok_or_else(truncated)?;
            return Ok(Header {
                tag,
                vr: None,
                length,
                value: at.saturating_add(8),
            });
        }
        let vr = Vr([
            *self.file.get(at.saturating_add(4)).ok_or_else(truncated)?,
            *self.file.get(at.saturating_add(5)).ok_or_else(truncated)?,
        ]);
        if !vr.0.iter().all(u8::is_ascii_uppercase) {
            return Err(format!("element {tag} at {at} has an invalid VR"));
        }
        if vr.has_long_length() {
            let length = self.u32_at(at.saturating_add(8)).ok_or_else(truncated)?;
            Ok(Header {
                tag,
                vr: Some(vr),
                length,
                value: at.saturating_add(12),
            })
        } else {
            let length = u32::from(self.u16_at(at.saturating_add(6)).ok_or_else(truncated)?);
            Ok(Header {
                tag,
                vr: Some(vr),
                length,
                value: at.saturating_add(8),
            })
        }
    }

    fn value_end(&self, header: &Header) -> Result<usize, String> {
        usize::try_from(header.length)
            .ok()
            .and_then(|length| header.value.checked_add(length))
            .filter(|end| *end <= self.file.len())
            .ok_or_else(|| {
                format!(
                    "value of {} at {} runs past the end of the file",
                    header.tag, header.value
                )
            })
    }

    /// The end of the element at `at` (whatever its length form).
    fn skip_element(&self, at: usize, explicit: bool, depth: usize) -> Result<usize, String> {
        let header = self.header(at, explicit)?;
        if header.length != UNDEFINED_LENGTH {
            return self.value_end(&header);
        }
        if depth >= RECORD_NESTING_MAX {
            return Err(format!("sequences nested too deep at {at}"));
        }
        // Undefined length: a sequence (or a UN holding Implicit VR items),
        // or encapsulated fragments.
        let inner_explicit = explicit && header.vr == Some(Vr::SQ);
        let mut position = header.value;
        loop {
            let item = self.header(position, false)?;
            match (item.tag.0, item.tag.1) {
                (0xFFFE, 0xE0DD) => return Ok(item.value),
                (0xFFFE, 0xE000) if item.length == UNDEFINED_LENGTH => {
                    position = self.skip_items_content(item.value, inner_explicit, depth + 1)?;
                }
                (0xFFFE, 0xE000) => position = self.value_end(&item)?,
                _ => {
                    return Err(format!(
                        "expected an item at {position}, found {}",
                        item.tag
                    ))
                }
            }
        }
    }

    /// Skips an undefined-length item's elements; returns the offset after
    /// its delimiter.
    fn skip_items_content(
        &self,
        mut at: usize,
        explicit: bool,
        depth: usize,
    ) -> Result<usize, String> {
        loop {
            let header = self.header(at, explicit)?;
            if header.tag == Tag(0xFFFE, 0xE00D) {
                return Ok(header.value);
            }
            at = self.skip_element(at, explicit, depth)?;
        }
    }
}

/// Reads a DICOMDIR held whole in memory.
pub fn read_dicomdir(file: &[u8]) -> Result<Directory, DirectoryError> {
    let meta = read_file_meta(file)?;
    let class = meta.sop_class_uid().unwrap_or_default();
    if class != MEDIA_STORAGE_DIRECTORY_STORAGE {
        return Err(DirectoryError::NotADirectory(class.to_owned()));
    }
    let explicit = match meta.transfer_syntax_uid().unwrap_or_default() {
        ts::EXPLICIT_VR_LITTLE_ENDIAN => true,
        ts::IMPLICIT_VR_LITTLE_ENDIAN => false,
        other => return Err(DirectoryError::TransferSyntax(other.to_owned())),
    };
    let walker = Walker { file, explicit };
    let mut directory = Directory::default();
    let mut first_root = 0u32;
    let mut last_root = 0u32;
    let mut records = Vec::new();
    let mut sequence_seen = false;
    let mut position = meta.dataset_offset;
    while position < file.len() {
        let header = match walker.header(position, explicit) {
            Ok(header) => header,
            Err(what) => {
                directory
                    .issues
                    .push(issue(position, IssueKind::Malformed(what)));
                break;
            }
        };
        match header.tag {
            DIRECTORY_RECORD_SEQUENCE => {
                sequence_seen = true;
                let end = read_records(&walker, &header, &mut records, &mut directory.issues);
                match end {
                    Some(end) => position = end,
                    None => break,
                }
                continue;
            }
            FILE_SET_ID => {
                if let Ok(end) = walker.value_end(&header) {
                    directory.file_set_id =
                        String::from_utf8_lossy(file.get(header.value..end).unwrap_or_default())
                            .trim()
                            .to_owned();
                }
            }
            FIRST_ROOT_RECORD => first_root = walker.u32_at(header.value).unwrap_or(0),
            LAST_ROOT_RECORD => last_root = walker.u32_at(header.value).unwrap_or(0),
            _ => {}
        }
        match walker.skip_element(position, explicit, 0) {
            Ok(end) => position = end,
            Err(what) => {
                directory
                    .issues
                    .push(issue(position, IssueKind::Malformed(what)));
                break;
            }
        }
    }
    if !sequence_seen {
        return Err(DirectoryError::NoRecordSequence);
    }
    walk_tree(&records, first_root, last_root, &mut directory);
    Ok(directory)
}

fn issue(offset: impl TryInto<u64>, kind: IssueKind) -> Issue {
    Issue {
        offset: offset.try_into().unwrap_or(u64::MAX),
        kind,
    }
}

/// Reads the items of the Directory Record Sequence; returns the offset
/// after it, or `None` when it is broken (the records before are kept).
fn read_records(
    walker: &Walker<'_>,
    sequence: &Header,
    records: &mut Vec<Record>,
    issues: &mut Vec<Issue>,
) -> Option<usize> {
    let defined_end = (sequence.length != UNDEFINED_LENGTH).then(|| walker.value_end(sequence));
    let end = match defined_end {
        Some(Ok(end)) => Some(end),
        Some(Err(what)) => {
            issues.push(issue(sequence.value, IssueKind::Malformed(what)));
            None
        }
        None => None,
    };
    let encoding = if walker.explicit {
        SmallDatasetEncoding::ExplicitVrLittleEndian
    } else {
        SmallDatasetEncoding::ImplicitVrLittleEndian
    };
    let limits = DatasetLimits {
        length_max: 16 * 1024 * 1024,
        depth_max: RECORD_NESTING_MAX,
    };
    let mut position = sequence.value;
    loop {
        if end.is_some_and(|end| position >= end) {
            return end;
        }
        let item = match walker.header(position, false) {
            Ok(item) => item,
            Err(what) => {
                issues.push(issue(position, IssueKind::Malformed(what)));
                return None;
            }
        };
        let (content, next) = match (item.tag.0, item.tag.1) {
            (0xFFFE, 0xE0DD) if end.is_none() => return Some(item.value),
            (0xFFFE, 0xE000) if item.length == UNDEFINED_LENGTH => {
                match walker.skip_items_content(item.value, walker.explicit, 1) {
                    // The content ends before the 8-byte delimiter.
                    Ok(after) => (item.value..after.saturating_sub(8), after),
                    Err(what) => {
                        issues.push(issue(position, IssueKind::Malformed(what)));
                        return None;
                    }
                }
            }
            (0xFFFE, 0xE000) => match walker.value_end(&item) {
                Ok(after) => (item.value..after, after),
                Err(what) => {
                    issues.push(issue(position, IssueKind::Malformed(what)));
                    return None;
                }
            },
            _ => {
                issues.push(issue(
                    position,
                    IssueKind::Malformed(format!("expected a record item, found {}", item.tag)),
                ));
                return None;
            }
        };
        let bytes = walker.file.get(content).unwrap_or_default();
        match SmallDataset::decode(bytes, encoding, limits) {
            Ok(dataset) => records.push(Record {
                offset: position as u64,
                dataset,
            }),
            Err(error) => issues.push(issue(position, IssueKind::Malformed(error.to_string()))),
        }
        position = next;
    }
}

/// Text of a key, decoded with the record's character set.
fn text(dataset: &SmallDataset, tag: Tag) -> String {
    let Some(bytes) = dataset.bytes(tag) else {
        return String::new();
    };
    let bytes = bytes.trim_ascii_end();
    let bytes = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(&[][..], |last| bytes.get(..=last).unwrap_or_default());
    let charset = dataset
        .bytes(SPECIFIC_CHARACTER_SET)
        .map(SpecificCharacterSet::parse_lenient)
        .unwrap_or_default();
    let person_name = dataset.get(tag).is_some_and(|element| element.vr == Vr::PN);
    if person_name {
        charset.decode_person_name(bytes).into_owned()
    } else {
        charset.decode(bytes).into_owned()
    }
}

fn offset_field(dataset: &SmallDataset, tag: Tag) -> u32 {
    match dataset.bytes(tag) {
        Some([b0, b1, b2, b3]) => u32::from_le_bytes([*b0, *b1, *b2, *b3]),
        _ => 0,
    }
}

/// Where a record hangs in the hierarchy being built.
#[derive(Debug, Clone, Copy)]
enum Parent {
    Root,
    Patient(usize),
    Study(usize),
    Series(usize),
    /// Under a record that is not imported: children are walked for
    /// structure only.
    Skipped,
}

impl Parent {
    fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Patient(_) => "PATIENT",
            Self::Study(_) => "STUDY",
            Self::Series(_) => "SERIES",
            Self::Skipped => "a skipped record",
        }
    }
}

fn walk_tree(records: &[Record], first_root: u32, last_root: u32, directory: &mut Directory) {
    let index: HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(position, record)| (record.offset, position))
        .collect();
    let mut visited = vec![false; records.len()];
    // (first record offset of a chain, where the offset was read, field, parent, depth)
    let mut chains: Vec<(u32, u64, &'static str, Parent, usize)> = vec![(
        first_root,
        0,
        "Offset of the First Directory Record of the Root Directory Entity",
        Parent::Root,
        1,
    )];
    let mut last_root_reached = None;
    while let Some((first, from, field, parent, depth)) = chains.pop() {
        if depth > DIRECTORY_DEPTH_MAX {
            directory.issues.push(issue(from, IssueKind::TooDeep));
            continue;
        }
        let mut next = first;
        let mut from = from;
        let mut field = field;
        let mut children = Vec::new();
        while next != 0 {
            let Some(&position) = index.get(&u64::from(next)) else {
                directory
                    .issues
                    .push(issue(from, IssueKind::BadOffset { field, value: next }));
                break;
            };
            let Some(record) = records.get(position) else {
                break;
            };
            if visited.get(position).copied().unwrap_or(true) {
                directory.issues.push(issue(
                    from,
                    IssueKind::ReachedTwice {
                        record: record.offset,
                    },
                ));
                break;
            }
            if let Some(slot) = visited.get_mut(position) {
                *slot = true;
            }
            if matches!(parent, Parent::Root) {
                last_root_reached = Some(record.offset);
            }
            let lower = offset_field(&record.dataset, LOWER_LEVEL);
            let placed = place(record, parent, directory);
            if lower != 0 {
                children.push((
                    lower,
                    record.offset,
                    "Offset of Referenced Lower-Level Directory Entity",
                    placed,
                    depth + 1,
                ));
            }
            from = record.offset;
            field = "Offset of the Next Directory Record";
            next = offset_field(&record.dataset, NEXT_RECORD);
        }
        // Depth first, children in directory order.
        chains.extend(children.into_iter().rev());
    }
    if let Some(reached) = last_root_reached {
        if u64::from(last_root) != reached {
            directory.issues.push(issue(
                0u64,
                IssueKind::LastRootMismatch {
                    written: last_root,
                    reached,
                },
            ));
        }
    }
    let unreachable = visited.iter().filter(|seen| !**seen).count();
    if unreachable > 0 {
        let first = records
            .iter()
            .zip(&visited)
            .find(|(_, seen)| !**seen)
            .map_or(0, |(record, _)| record.offset);
        directory
            .issues
            .push(issue(first, IssueKind::Unreachable { count: unreachable }));
    }
}

/// Files one record under its parent; returns what its children hang under.
fn place(record: &Record, parent: Parent, directory: &mut Directory) -> Parent {
    let dataset = &record.dataset;
    let at = record.offset;
    if dataset.bytes(RECORD_IN_USE) == Some(&[0, 0][..]) {
        directory.issues.push(issue(at, IssueKind::Inactive));
        return Parent::Skipped;
    }
    let name = text(dataset, RECORD_TYPE);
    let Some(record_type) = RecordType::from_name(&name) else {
        if !RecordType::is_standard_name(&name) {
            directory
                .issues
                .push(issue(at, IssueKind::UnknownRecordType(name)));
        } else if !matches!(parent, Parent::Skipped) {
            directory.issues.push(issue(
                at,
                IssueKind::Misplaced {
                    record_type: name,
                    parent: parent.name().to_owned(),
                },
            ));
        }
        return Parent::Skipped;
    };
    for key in record_type.keys() {
        if key.key_type == KeyType::Required
            && dataset
                .get(key.tag)
                .is_none_or(|element| match &element.value {
                    sluice_net::dimse::dataset::Value::Bytes(bytes) => {
                        bytes.iter().all(|byte| *byte == b' ' || *byte == 0)
                    }
                    sluice_net::dimse::dataset::Value::Sequence(_) => false,
                })
        {
            directory.issues.push(issue(
                at,
                IssueKind::MissingKey {
                    record_type: record_type.name(),
                    tag: key.tag,
                },
            ));
        }
    }
    match (record_type, parent) {
        (RecordType::Patient, Parent::Root) => {
            directory.patients.push(PatientEntry {
                patient_id: text(dataset, Tag(0x0010, 0x0020)),
                patient_name: text(dataset, Tag(0x0010, 0x0010)),
            });
            Parent::Patient(directory.patients.len() - 1)
        }
        (RecordType::Study, Parent::Patient(patient)) => {
            directory.studies.push(StudyEntry {
                patient,
                study_instance_uid: text(dataset, Tag(0x0020, 0x000D)),
                study_date: text(dataset, Tag(0x0008, 0x0020)),
                study_description: text(dataset, Tag(0x0008, 0x1030)),
                accession_number: text(dataset, Tag(0x0008, 0x0050)),
            });
            Parent::Study(directory.studies.len() - 1)
        }
        (RecordType::Series, Parent::Study(study)) => {
            directory.series.push(SeriesEntry {
                study,
                series_instance_uid: text(dataset, Tag(0x0020, 0x000E)),
                modality: text(dataset, Tag(0x0008, 0x0060)),
            });
            Parent::Series(directory.series.len() - 1)
        }
        (leaf, Parent::Series(series)) if leaf.is_instance_level() => {
            let value = text(dataset, REFERENCED_FILE_ID);
            if value.is_empty() {
                directory.issues.push(issue(at, IssueKind::NoFileId));
                return Parent::Skipped;
            }
            match FileId::parse(&value) {
                Ok(file_id) => {
                    if file_id.has_lowercase() {
                        directory
                            .issues
                            .push(issue(at, IssueKind::LowercaseFileId(file_id.to_value())));
                    }
                    for (tag, what) in [
                        (REFERENCED_SOP_CLASS, record_type.name()),
                        (REFERENCED_SOP_INSTANCE, record_type.name()),
                        (REFERENCED_TRANSFER_SYNTAX, record_type.name()),
                    ] {
                        if text(dataset, tag).is_empty() {
                            directory.issues.push(issue(
                                at,
                                IssueKind::MissingKey {
                                    record_type: what,
                                    tag,
                                },
                            ));
                        }
                    }
                    directory.instances.push(InstanceEntry {
                        series,
                        record_offset: at,
                        record_type: record_type.name().to_owned(),
                        file_id,
                        sop_class_uid: text(dataset, REFERENCED_SOP_CLASS),
                        sop_instance_uid: text(dataset, REFERENCED_SOP_INSTANCE),
                        transfer_syntax_uid: text(dataset, REFERENCED_TRANSFER_SYNTAX),
                    });
                }
                Err(error) => directory
                    .issues
                    .push(issue(at, IssueKind::BadFileId(error))),
            }
            Parent::Skipped
        }
        (record_type, parent) => {
            if !matches!(parent, Parent::Skipped) {
                directory.issues.push(issue(
                    at,
                    IssueKind::Misplaced {
                        record_type: record_type.name().to_owned(),
                        parent: parent.name().to_owned(),
                    },
                ));
            }
            Parent::Skipped
        }
    }
}
