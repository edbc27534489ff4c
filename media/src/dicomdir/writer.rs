//! The DICOMDIR writer: instances in, in any order; DICOMDIR bytes out as
//! they are ready, plus a few 4-byte patches at the end.
//!
//! Each directory record is written as soon as it exists: a PATIENT, STUDY
//! or SERIES record when the first instance under it arrives, the instance's
//! record at once. Records are linked by offsets, so the order of items in
//! the Directory Record Sequence is free (PS3.3 F.3.2.2); when instances
//! arrive grouped by series (as an export walking the store's studies sends
//! them) the items come out in the usual hierarchical order. A link to a
//! record still in the writer's buffer is filled in place; one to a record
//! already handed out becomes a [`Patch`] the caller applies at the end.
//!
//! Memory is a node per patient, study and series, a SOP Instance UID per
//! instance (duplicates are refused) and the unread output: it does not
//! grow with the size of instances, and by about 100 bytes per instance
//! ([`FileSetWriter::memory_bytes`]).

use std::collections::{HashMap, HashSet};

use sluice_net::dimse::dataset::{Element, SmallDataset, SmallDatasetEncoding, Value, Vr};
use sluice_net::dimse::Tag;
use sluice_net::uid::ts;

use super::{
    DIRECTORY_RECORD_SEQUENCE, FILE_SET_CONSISTENCY_FLAG, FILE_SET_ID, FIRST_ROOT_RECORD,
    LAST_ROOT_RECORD, LOWER_LEVEL, MEDIA_STORAGE_DIRECTORY_STORAGE, NEXT_RECORD, RECORD_IN_USE,
    RECORD_TYPE, REFERENCED_FILE_ID, REFERENCED_SOP_CLASS, REFERENCED_SOP_INSTANCE,
    REFERENCED_TRANSFER_SYNTAX,
};
use crate::file_id::{FileId, GENERATED_ORDINAL_MAX};
use crate::keys::InstanceKeys;
use crate::part10::{file_header, FileMeta, FileMetaError};
use crate::profile::{Action, Profile, ProfileRefusal};
use crate::record::{
    KeyType, RecordType, INSTANCE_NUMBER, SPECIFIC_CHARACTER_SET, VERIFICATION_DATETIME,
    VERIFICATION_FLAG, VERIFYING_OBSERVER_SEQUENCE,
};

/// Offset of (0004,1400)'s value from a record's Item tag: Item header (8),
/// then the element's header (8).
const NEXT_VALUE_AT: u64 = 16;
/// Offset of (0004,1420)'s value: after (0004,1400) (12 bytes) and
/// (0004,1410) (10 bytes).
const LOWER_VALUE_AT: u64 = 38;

/// The File-set's identity and the writer's.
#[derive(Debug, Clone)]
pub struct FileSetOptions {
    /// The profile the File-set follows.
    pub profile: Profile,
    /// File-set ID (0004,1130): up to 16 of `A`-`Z`, `0`-`9`, `_`, space;
    /// may be empty.
    pub file_set_id: String,
    /// Media Storage SOP Instance UID of the DICOMDIR (a fresh UID).
    pub file_set_uid: String,
    /// Implementation Class UID of the writer.
    pub implementation_class_uid: String,
    /// Implementation Version Name of the writer.
    pub implementation_version_name: String,
}

/// Why a File-set cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileSetError {
    /// A File-set ID that CS and PS3.10 do not allow.
    #[error("File-set ID {0:?} must be at most 16 of A-Z, 0-9, _ and space")]
    InvalidFileSetId(String),
    /// A UID or name that the file meta group cannot hold.
    #[error(transparent)]
    Meta(#[from] FileMetaError),
}

/// Why one instance gets no record (and no file in the File-set).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The profile does not take it.
    #[error(transparent)]
    Profile(#[from] ProfileRefusal),
    /// The same SOP Instance UID was added before.
    #[error("SOP Instance UID {0} is already in the File-set")]
    Duplicate(String),
    /// A level already holds [`GENERATED_ORDINAL_MAX`] entries.
    #[error(
        "more than {GENERATED_ORDINAL_MAX} {0} under one parent: the File ID scheme has no room"
    )]
    TooMany(&'static str),
    /// A record could not be encoded (a key too long for its VR).
    #[error("directory record cannot be encoded: {0}")]
    Encode(String),
}

/// Something written differently from the instance, reported to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyWarning {
    /// A Type 1 key the instance lacks (or has empty), given a value.
    Invented {
        /// The record.
        record_type: RecordType,
        /// The key.
        tag: Tag,
        /// The value written.
        value: String,
    },
    /// The instance's Patient ID is a patient's already in the File-set
    /// under another Patient's Name: the record keeps the first name.
    PatientNameDiffers {
        /// The Patient ID.
        patient_id: String,
        /// The name in the PATIENT record.
        written: String,
        /// The instance's name.
        instance: String,
    },
    /// The instance's study was already under another patient record (or
    /// its series under another study): it is filed under the first.
    ParentMismatch {
        /// "study" or "series".
        level: &'static str,
        /// Its UID.
        uid: String,
    },
}

/// Where an added instance goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its File ID (its path under the File-set's root).
    pub file_id: FileId,
    /// Copy as stored, or transcode.
    pub action: Action,
    /// The transfer syntax of the file written (and of its record).
    pub transfer_syntax_uid: String,
    /// Its record type.
    pub record_type: RecordType,
    /// Keys written differently from the instance.
    pub warnings: Vec<KeyWarning>,
}

/// Four bytes to write at an offset of the DICOMDIR file once every chunk
/// has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patch {
    /// Offset from the file's first byte.
    pub offset: u64,
    /// The bytes (a little-endian UL offset).
    pub bytes: [u8; 4],
}

/// The end of a File-set: the last bytes to append and the patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetEnd {
    /// Append after every chunk taken before.
    pub tail: Vec<u8>,
    /// Then apply these, in any order.
    pub patches: Vec<Patch>,
    /// DICOMDIR length in bytes.
    pub length: u64,
    /// Records written, by level: patients, studies, series, instances.
    pub records: [u64; 4],
}

impl FileSetEnd {
    /// Applies the patches to a whole DICOMDIR held in memory (every chunk
    /// and the tail, in order).
    pub fn apply(&self, file: &mut [u8]) {
        for patch in &self.patches {
            let start = usize::try_from(patch.offset).unwrap_or(usize::MAX);
            if let Some(slot) = file.get_mut(start..start.saturating_add(4)) {
                slot.copy_from_slice(&patch.bytes);
            }
        }
    }
}

#[derive(Debug)]
struct Node {
    /// Offset of the record's Item tag.
    record: u64,
    /// The last child linked (its record's offset).
    last_child: Option<u64>,
    /// Children so far (their ordinals are 1..=children).
    children: u32,
    /// This node's ordinal under its parent.
    ordinal: u32,
    /// Index of the parent node (patient for a study, study for a series).
    parent: usize,
}

/// The writer.
#[derive(Debug)]
pub struct FileSetWriter {
    profile: Profile,
    pending: Vec<u8>,
    pending_start: u64,
    patches: Vec<Patch>,
    first_root_at: u64,
    last_root_at: u64,
    last_patient: Option<u64>,
    patients: Vec<Node>,
    patient_index: HashMap<Vec<u8>, usize>,
    /// The Patient's Name of each PATIENT record, as written.
    patient_names: Vec<Box<[u8]>>,
    studies: Vec<Node>,
    study_index: HashMap<Box<str>, usize>,
    series: Vec<Node>,
    series_index: HashMap<Box<str>, usize>,
    instances: HashSet<Box<str>>,
}

impl FileSetWriter {
    /// Starts a File-set: the DICOMDIR's header is the first output.
    pub fn new(options: &FileSetOptions) -> Result<Self, FileSetError> {
        let id = &options.file_set_id;
        if id.len() > 16
            || !id.bytes().all(|byte| {
                byte.is_ascii_uppercase() || byte.is_ascii_digit() || b"_ ".contains(&byte)
            })
        {
            return Err(FileSetError::InvalidFileSetId(id.clone()));
        }
        let mut pending = file_header(&FileMeta {
            sop_class_uid: MEDIA_STORAGE_DIRECTORY_STORAGE,
            sop_instance_uid: &options.file_set_uid,
            transfer_syntax_uid: ts::EXPLICIT_VR_LITTLE_ENDIAN,
            implementation_class_uid: &options.implementation_class_uid,
            implementation_version_name: &options.implementation_version_name,
        })?;
        let mut start = SmallDataset::new();
        start.put_str(FILE_SET_ID, Some(Vr::CS), id.trim_end());
        start.put(ul(FIRST_ROOT_RECORD, 0));
        start.put(ul(LAST_ROOT_RECORD, 0));
        start.put_u16(FILE_SET_CONSISTENCY_FLAG, 0);
        let body = start
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .map_err(|error| FileMetaError::Malformed(error.to_string()))?;
        // The two offsets are the values of the 12-byte UL elements that
        // end the body before the 10-byte consistency flag.
        let body_start = pending.len() as u64;
        let body_length = body.len() as u64;
        let last_root_at = body_start + body_length - 10 - 4;
        let first_root_at = last_root_at - 12;
        pending.extend_from_slice(&body);
        // Directory Record Sequence, undefined length.
        pending.extend_from_slice(&DIRECTORY_RECORD_SEQUENCE.0.to_le_bytes());
        pending.extend_from_slice(&DIRECTORY_RECORD_SEQUENCE.1.to_le_bytes());
        pending.extend_from_slice(&[b'S', b'Q', 0, 0]);
        pending.extend_from_slice(&u32::MAX.to_le_bytes());
        let writer = Self {
            profile: options.profile,
            pending,
            pending_start: 0,
            patches: Vec::new(),
            first_root_at,
            last_root_at,
            last_patient: None,
            patients: Vec::new(),
            patient_index: HashMap::new(),
            patient_names: Vec::new(),
            studies: Vec::new(),
            study_index: HashMap::new(),
            series: Vec::new(),
            series_index: HashMap::new(),
            instances: HashSet::new(),
        };
        debug_assert_eq!(writer.read_pending_u32(first_root_at), Some(0));
        Ok(writer)
    }

    /// Adds an instance stored in `transfer_syntax_uid`: its records are
    /// written, and the answer says where its file goes and whether to
    /// transcode it; or why it cannot be in the File-set.
    pub fn add(
        &mut self,
        instance: &InstanceKeys,
        transfer_syntax_uid: &str,
    ) -> Result<Placement, Refusal> {
        let (action, record_type) = self
            .profile
            .decide(instance.sop_class_uid(), transfer_syntax_uid)?;
        let sop_instance_uid = instance.sop_instance_uid();
        if self.instances.contains(sop_instance_uid) {
            return Err(Refusal::Duplicate(sop_instance_uid.to_owned()));
        }
        let mut warnings = Vec::new();
        // Check every ordinal before writing anything.
        let patient_key = patient_key(instance.dataset());
        let patient = self.patient_index.get(&patient_key).copied();
        let study = self.study_index.get(instance.study_instance_uid()).copied();
        let series = self
            .series_index
            .get(instance.series_instance_uid())
            .copied();
        let next_ordinal = |nodes: &[Node], index: Option<usize>| {
            index
                .and_then(|index| nodes.get(index))
                .map_or(1, |node| node.children.saturating_add(1))
        };
        if patient.is_none() && self.patients.len() as u64 >= u64::from(GENERATED_ORDINAL_MAX) {
            return Err(Refusal::TooMany("patients"));
        }
        let study_patient = study
            .and_then(|index| self.studies.get(index))
            .map(|node| node.parent)
            .or(patient);
        if study.is_none() && next_ordinal(&self.patients, study_patient) > GENERATED_ORDINAL_MAX {
            return Err(Refusal::TooMany("studies"));
        }
        let series_study = series
            .and_then(|index| self.series.get(index))
            .map(|node| node.parent)
            .or(study);
        if series.is_none() && next_ordinal(&self.studies, series_study) > GENERATED_ORDINAL_MAX {
            return Err(Refusal::TooMany("series"));
        }
        if next_ordinal(&self.series, series) > GENERATED_ORDINAL_MAX {
            return Err(Refusal::TooMany("instances"));
        }

        let name = trimmed(instance.dataset(), Tag(0x0010, 0x0010));
        if let Some(index) = patient {
            let written = self.patient_names.get(index).map_or(&[][..], |name| name);
            if written != name.as_slice() {
                warnings.push(KeyWarning::PatientNameDiffers {
                    patient_id: String::from_utf8_lossy(&patient_key).into_owned(),
                    written: String::from_utf8_lossy(written).into_owned(),
                    instance: String::from_utf8_lossy(&name).into_owned(),
                });
            }
        }
        let patient = match study_patient {
            Some(index) => {
                if patient != Some(index) && study.is_some() {
                    warnings.push(KeyWarning::ParentMismatch {
                        level: "study",
                        uid: instance.study_instance_uid().to_owned(),
                    });
                }
                index
            }
            None => {
                let index = self.open(Level::Patient, None, instance, &mut warnings)?;
                self.patient_index.insert(patient_key, index);
                self.patient_names.push(name.into_boxed_slice());
                debug_assert_eq!(self.patient_names.len(), self.patients.len());
                index
            }
        };
        let study = match series_study {
            Some(index) => {
                if study != Some(index) && series.is_some() {
                    warnings.push(KeyWarning::ParentMismatch {
                        level: "series",
                        uid: instance.series_instance_uid().to_owned(),
                    });
                }
                index
            }
            None => {
                let index = self.open(Level::Study, Some(patient), instance, &mut warnings)?;
                self.study_index
                    .insert(instance.study_instance_uid().into(), index);
                index
            }
        };
        let series = match series {
            Some(index) => index,
            None => {
                let index = self.open(Level::Series, Some(study), instance, &mut warnings)?;
                self.series_index
                    .insert(instance.series_instance_uid().into(), index);
                index
            }
        };
        let instance_ordinal = next_ordinal(&self.series, Some(series));
        let (patient_ordinal, study_ordinal, series_ordinal) = (
            self.patients.get(patient).map_or(0, |node| node.ordinal),
            self.studies.get(study).map_or(0, |node| node.ordinal),
            self.series.get(series).map_or(0, |node| node.ordinal),
        );
        let file_id = FileId::generated(
            patient_ordinal,
            study_ordinal,
            series_ordinal,
            instance_ordinal,
        )
        .ok_or(Refusal::TooMany("instances"))?;
        let transfer_syntax_uid = match action {
            Action::AsStored => sluice_net::uid::trim_uid_padding(transfer_syntax_uid).to_owned(),
            Action::Transcode { .. } => ts::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
        };
        let keys = record_keys(record_type, instance, instance_ordinal, &mut warnings);
        let reference = Reference {
            file_id: &file_id,
            sop_class_uid: instance.sop_class_uid(),
            sop_instance_uid,
            transfer_syntax_uid: &transfer_syntax_uid,
        };
        let record = self.write_record(record_type, Some(&reference), &keys)?;
        self.link_child(Level::Series, series, record);
        self.instances.insert(sop_instance_uid.into());
        Ok(Placement {
            file_id,
            action,
            transfer_syntax_uid,
            record_type,
            warnings,
        })
    }

    /// The DICOMDIR bytes ready so far (to append to the file); later links
    /// into them come back as [`Patch`]es.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let bytes = std::mem::take(&mut self.pending);
        self.pending_start += bytes.len() as u64;
        bytes
    }

    /// Bytes waiting in the writer.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// What the writer holds in memory, in bytes (an estimate from the
    /// capacities of its tables): the bound the design note states.
    pub fn memory_bytes(&self) -> usize {
        let node = std::mem::size_of::<Node>();
        let entry = std::mem::size_of::<(Box<str>, usize)>() + 8;
        let patient_keys: usize = self.patient_index.keys().map(Vec::capacity).sum::<usize>()
            + self
                .patient_names
                .iter()
                .map(|name| name.len() + 16)
                .sum::<usize>();
        let study_keys: usize = self.study_index.keys().map(|key| key.len()).sum();
        let series_keys: usize = self.series_index.keys().map(|key| key.len()).sum();
        let instance_keys: usize = self.instances.iter().map(|key| key.len()).sum();
        self.pending.capacity()
            + self.patches.capacity() * std::mem::size_of::<Patch>()
            + (self.patients.capacity() + self.studies.capacity() + self.series.capacity()) * node
            + (self.patient_index.capacity()
                + self.study_index.capacity()
                + self.series_index.capacity())
                * entry
            + self.instances.capacity() * (std::mem::size_of::<Box<str>>() + 8)
            + patient_keys
            + study_keys
            + series_keys
            + instance_keys
    }

    /// Ends the File-set.
    pub fn finish(mut self) -> FileSetEnd {
        if let Some(last) = self.last_patient {
            self.set_u32(self.last_root_at, offset_value(last));
        }
        // Sequence Delimitation Item.
        self.pending
            .extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let length = self.pending_start + self.pending.len() as u64;
        FileSetEnd {
            tail: self.pending,
            patches: self.patches,
            length,
            records: [
                self.patients.len() as u64,
                self.studies.len() as u64,
                self.series.len() as u64,
                self.instances.len() as u64,
            ],
        }
    }

    fn read_pending_u32(&self, at: u64) -> Option<u32> {
        let start = usize::try_from(at.checked_sub(self.pending_start)?).ok()?;
        let bytes = self.pending.get(start..start.checked_add(4)?)?;
        let mut value = [0u8; 4];
        value.copy_from_slice(bytes);
        Some(u32::from_le_bytes(value))
    }

    /// Writes 4 bytes at an absolute offset: in place if still pending, else
    /// as a patch.
    fn set_u32(&mut self, at: u64, value: u32) {
        let bytes = value.to_le_bytes();
        if at >= self.pending_start {
            let start = usize::try_from(at - self.pending_start).unwrap_or(usize::MAX);
            if let Some(slot) = self.pending.get_mut(start..start.saturating_add(4)) {
                slot.copy_from_slice(&bytes);
                return;
            }
            debug_assert!(false, "offset {at} is beyond the output");
        }
        self.patches.push(Patch { offset: at, bytes });
    }

    /// Writes and links the record of a new patient, study or series under
    /// `parent` (a patient for a study, a study for a series; none for a
    /// patient); returns the new node's index.
    fn open(
        &mut self,
        level: Level,
        parent: Option<usize>,
        instance: &InstanceKeys,
        warnings: &mut Vec<KeyWarning>,
    ) -> Result<usize, Refusal> {
        let (record_type, parent_level) = match level {
            Level::Patient => (RecordType::Patient, None),
            Level::Study => (RecordType::Study, Some(Level::Patient)),
            Level::Series => (RecordType::Series, Some(Level::Study)),
        };
        let ordinal = match (parent_level, parent) {
            (Some(parent_level), Some(parent)) => self
                .nodes(parent_level)
                .get(parent)
                .map_or(1, |node| node.children.saturating_add(1)),
            _ => self.patients.len() as u32 + 1,
        };
        let keys = record_keys(record_type, instance, ordinal, warnings);
        let record = self.write_record(record_type, None, &keys)?;
        match (parent_level, parent) {
            (Some(parent_level), Some(parent)) => self.link_child(parent_level, parent, record),
            _ => self.link_root(record),
        }
        let nodes = self.nodes_mut(level);
        nodes.push(Node {
            record,
            last_child: None,
            children: 0,
            ordinal,
            parent: parent.unwrap_or(usize::MAX),
        });
        Ok(nodes.len() - 1)
    }

    fn nodes(&self, level: Level) -> &[Node] {
        match level {
            Level::Patient => &self.patients,
            Level::Study => &self.studies,
            Level::Series => &self.series,
        }
    }

    fn nodes_mut(&mut self, level: Level) -> &mut Vec<Node> {
        match level {
            Level::Patient => &mut self.patients,
            Level::Study => &mut self.studies,
            Level::Series => &mut self.series,
        }
    }

    fn link_root(&mut self, record: u64) {
        match self.last_patient {
            None => self.set_u32(self.first_root_at, offset_value(record)),
            Some(previous) => self.set_u32(previous + NEXT_VALUE_AT, offset_value(record)),
        }
        self.last_patient = Some(record);
    }

    fn link_child(&mut self, level: Level, parent: usize, record: u64) {
        let Some(node) = self.nodes_mut(level).get_mut(parent) else {
            debug_assert!(false, "parent node {parent} exists");
            return;
        };
        let at = match node.last_child {
            None => node.record + LOWER_VALUE_AT,
            Some(previous) => previous + NEXT_VALUE_AT,
        };
        node.last_child = Some(record);
        node.children = node.children.saturating_add(1);
        self.set_u32(at, offset_value(record));
    }

    /// Encodes a record at the end of the output; returns its offset.
    fn write_record(
        &mut self,
        record_type: RecordType,
        reference: Option<&Reference<'_>>,
        keys: &SmallDataset,
    ) -> Result<u64, Refusal> {
        let mut record = keys.clone();
        record.put(ul(NEXT_RECORD, 0));
        record.put_u16(RECORD_IN_USE, 0xFFFF);
        record.put(ul(LOWER_LEVEL, 0));
        record.put_str(RECORD_TYPE, Some(Vr::CS), record_type.name());
        if let Some(reference) = reference {
            record.put_str(
                REFERENCED_FILE_ID,
                Some(Vr::CS),
                &reference.file_id.to_value(),
            );
            record.put_str(REFERENCED_SOP_CLASS, Some(Vr::UI), reference.sop_class_uid);
            record.put_str(
                REFERENCED_SOP_INSTANCE,
                Some(Vr::UI),
                reference.sop_instance_uid,
            );
            record.put_str(
                REFERENCED_TRANSFER_SYNTAX,
                Some(Vr::UI),
                reference.transfer_syntax_uid,
            );
        }
        let body = record
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .map_err(|error| Refusal::Encode(error.to_string()))?;
        let length = u32::try_from(body.len()).map_err(|_| Refusal::Encode("too long".into()))?;
        let offset = self.pending_start + self.pending.len() as u64;
        self.pending.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        self.pending.extend_from_slice(&length.to_le_bytes());
        self.pending.extend_from_slice(&body);
        debug_assert_eq!(self.read_pending_u32(offset + NEXT_VALUE_AT), Some(0));
        debug_assert_eq!(self.read_pending_u32(offset + LOWER_VALUE_AT), Some(0));
        debug_assert!(
            offset <= u64::from(u32::MAX),
            "a DICOMDIR offset must fit a UL"
        );
        Ok(offset)
    }
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Patient,
    Study,
    Series,
}

struct Reference<'a> {
    file_id: &'a FileId,
    sop_class_uid: &'a str,
    sop_instance_uid: &'a str,
    transfer_syntax_uid: &'a str,
}

fn offset_value(offset: u64) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

fn ul(tag: Tag, value: u32) -> Element {
    Element {
        tag,
        vr: Vr::UL,
        value: Value::Bytes(value.to_le_bytes().to_vec()),
    }
}

/// A value's bytes without trailing padding (spaces, NULs).
fn trimmed(dataset: &SmallDataset, tag: Tag) -> Vec<u8> {
    let bytes = dataset.bytes(tag).unwrap_or_default();
    let end = bytes
        .iter()
        .rposition(|byte| *byte != b' ' && *byte != 0)
        .map_or(0, |last| last + 1);
    bytes.get(..end).unwrap_or_default().to_vec()
}

/// Patients are told apart by Patient ID, or by name when the ID is empty.
fn patient_key(dataset: &SmallDataset) -> Vec<u8> {
    let id = trimmed(dataset, Tag(0x0010, 0x0020));
    if !id.is_empty() {
        return id;
    }
    let mut key = b"\0name:".to_vec();
    key.extend_from_slice(&trimmed(dataset, Tag(0x0010, 0x0010)));
    key
}

/// Whether an element has a value (a non-empty value, or a sequence with items).
fn has_value(element: &Element) -> bool {
    match &element.value {
        Value::Bytes(bytes) => bytes.iter().any(|byte| *byte != b' ' && *byte != 0),
        Value::Sequence(items) => !items.is_empty(),
    }
}

/// Whether an element holds a byte that needs a character set (non-ASCII,
/// or an ISO 2022 escape).
fn needs_charset(element: &Element) -> bool {
    match &element.value {
        Value::Bytes(bytes) => {
            let text = !matches!(
                &element.vr.0,
                b"OB"
                    | b"OW"
                    | b"OF"
                    | b"OD"
                    | b"OL"
                    | b"OV"
                    | b"UN"
                    | b"US"
                    | b"SS"
                    | b"UL"
                    | b"SL"
                    | b"FL"
                    | b"FD"
                    | b"AT"
                    | b"SV"
                    | b"UV"
            );
            text && bytes.iter().any(|byte| *byte >= 0x80 || *byte == 0x1B)
        }
        Value::Sequence(items) => items
            .iter()
            .any(|item| item.elements().iter().any(needs_charset)),
    }
}

/// The keys of one record from an instance; Type 1 keys the instance lacks
/// are invented (reported in `warnings`), Type 2 ones written empty.
fn record_keys(
    record_type: RecordType,
    instance: &InstanceKeys,
    ordinal: u32,
    warnings: &mut Vec<KeyWarning>,
) -> SmallDataset {
    let source = instance.dataset();
    let mut keys = SmallDataset::new();
    for key in record_type.keys() {
        let element = source.get(key.tag).filter(|element| has_value(element));
        if let Some(element) = element {
            keys.put(element.clone());
            continue;
        }
        if record_type == RecordType::SrDocument && key.tag == VERIFICATION_DATETIME {
            // 1C: required when the document is verified; the time is the
            // last verifying observer's.
            let verified = source
                .str(VERIFICATION_FLAG)
                .is_some_and(|flag| flag == "VERIFIED");
            let last = source
                .sequence(VERIFYING_OBSERVER_SEQUENCE)
                .and_then(<[SmallDataset]>::last)
                .and_then(|item| item.get(VERIFICATION_DATETIME))
                .filter(|element| has_value(element));
            if let (true, Some(element)) = (verified, last) {
                keys.put(element.clone());
            }
            continue;
        }
        match key.key_type {
            KeyType::IfPresent => {}
            KeyType::Present => {
                let vr = crate::vr::dictionary_vr(key.tag)
                    .resolve(key.tag, crate::vr::VrContext::default());
                if vr == Vr::SQ {
                    keys.put_sequence(key.tag, Vec::new());
                } else {
                    keys.put_str(key.tag, Some(vr), "");
                }
            }
            KeyType::Required => {
                let (element, shown) = invented(key.tag, ordinal);
                warnings.push(KeyWarning::Invented {
                    record_type,
                    tag: key.tag,
                    value: shown,
                });
                keys.put(element);
            }
        }
    }
    if keys.elements().iter().any(needs_charset) {
        if let Some(charset) = source.get(SPECIFIC_CHARACTER_SET) {
            keys.put(charset.clone());
        }
    }
    keys
}

/// The value given to a missing Type 1 key, and how it is shown.
fn invented(tag: Tag, ordinal: u32) -> (Element, String) {
    let vr = crate::vr::dictionary_vr(tag).resolve(tag, crate::vr::VrContext::default());
    let text = match (tag.0, tag.1) {
        (0x0010, 0x0020) => format!("SLUICE{ordinal:06}"),
        (0x0020, 0x0010) => format!("SLUICE{ordinal:06}"),
        (0x0020, 0x0011) => ordinal.to_string(),
        _ if tag == INSTANCE_NUMBER => ordinal.to_string(),
        (0x0008, 0x0060) => "OT".to_owned(),
        (0x0040, 0xA491) => "PARTIAL".to_owned(),
        (0x0040, 0xA493) => "UNVERIFIED".to_owned(),
        (0x0008, 0x0008) => "DERIVED\\SECONDARY".to_owned(),
        (0x0042, 0x0012) => "application/octet-stream".to_owned(),
        _ => match &vr.0 {
            b"DA" => "19000101".to_owned(),
            b"TM" => "000000".to_owned(),
            b"IS" => "1".to_owned(),
            b"SQ" => {
                return (
                    Element {
                        tag,
                        vr,
                        value: Value::Sequence(Vec::new()),
                    },
                    "(no items)".to_owned(),
                )
            }
            b"US" => {
                return (
                    Element {
                        tag,
                        vr,
                        value: Value::Bytes(vec![0, 0]),
                    },
                    "0".to_owned(),
                )
            }
            _ => "UNKNOWN".to_owned(),
        },
    };
    let element = Element {
        tag,
        vr,
        value: Value::Bytes(text.as_bytes().to_vec()),
    };
    (element, text)
}
