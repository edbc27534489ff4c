//! Record types: what each table stores, and how records are encoded.
//!
//! Values are rkyv archives in one fixed format (little endian, 32-bit relative
//! pointers, unaligned; see docs/design/index-format.md). The unaligned format
//! is what lets a reader validate and read a value in place, straight from the
//! LMDB page, although LMDB gives no alignment guarantee for values. Every read
//! is validated (bytecheck), so a damaged value is an error, never UB or a panic.
//!
//! The public types here are both the engine's input and the stored layout:
//! changing a field changes the on-disk format and needs a new schema version.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::IndexError;
use crate::keys::truncate_to_char_boundary;

/// The engine's identifier of a stored file (it derives the path from it; the
/// index only stores it). 128 bits so the engine may use a counter, a
/// timestamp with a core number, or a random id.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct FileId(pub u128);

/// The checksum of the data set bytes as received (not of the file meta
/// group, so the same data set sent twice compares equal). 16 bytes: the
/// engine's XXH3-128 digest, its `u128` value in big-endian byte order (most
/// significant byte first, as the digest is conventionally printed in hex).
/// The index only stores and compares it; changing the hash or its width is a
/// new schema version.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum(pub [u8; 16]);

/// An instance's identity: Study, Series and SOP Instance UID.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Triplet {
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
}

impl Triplet {
    /// A triplet from its three UIDs.
    pub fn new(
        study: impl Into<String>,
        series: impl Into<String>,
        sop: impl Into<String>,
    ) -> Self {
        Triplet {
            study_instance_uid: study.into(),
            series_instance_uid: series.into(),
            sop_instance_uid: sop.into(),
        }
    }
}

/// What the index knows of one stored file: the value of the `instances` table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The file holding the instance.
    pub file_id: FileId,
    /// The file's whole size (preamble, file meta group and data set).
    pub file_size_bytes: u64,
    /// Where the data set starts in the file (after the file meta group);
    /// the data set is `file_size_bytes - dataset_offset_bytes` long.
    pub dataset_offset_bytes: u64,
    /// Transfer syntax the data set is encoded in (as received).
    pub transfer_syntax_uid: String,
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// Checksum of the data set bytes.
    pub checksum: Checksum,
    /// When the last byte arrived, in nanoseconds since the Unix epoch.
    pub received_at_unix_ns: u64,
    /// The sender's AE title.
    pub calling_ae_title: String,
    /// Instance Number (0020,0013), if present and an integer.
    pub instance_number: Option<i32>,
}

impl InstanceRecord {
    /// The data set's length in bytes.
    pub fn dataset_size_bytes(&self) -> u64 {
        self.file_size_bytes
            .saturating_sub(self.dataset_offset_bytes)
    }
}

/// Study-level attributes taken from an instance: the keys of a study query
/// (requirements §4). Plain decoded strings; empty means absent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyAttributes {
    /// Patient's Name (0010,0010), PN.
    pub patient_name: String,
    /// Patient ID (0010,0020), LO.
    pub patient_id: String,
    /// Patient's Birth Date (0010,0030), DA.
    pub patient_birth_date: String,
    /// Patient's Sex (0010,0040), CS.
    pub patient_sex: String,
    /// Study Date (0008,0020), DA.
    pub study_date: String,
    /// Study Time (0008,0030), TM.
    pub study_time: String,
    /// Accession Number (0008,0050), SH.
    pub accession_number: String,
    /// Study ID (0020,0010), SH.
    pub study_id: String,
    /// Study Description (0008,1030), LO.
    pub study_description: String,
    /// Referring Physician's Name (0008,0090), PN.
    pub referring_physician_name: String,
}

/// Series-level attributes taken from an instance.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesAttributes {
    /// Modality (0008,0060), CS.
    pub modality: String,
    /// Series Number (0020,0011), if present and an integer.
    pub series_number: Option<i32>,
    /// Series Description (0008,103E), LO.
    pub series_description: String,
}

/// The value of the `studies` table, maintained by the writer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyRecord {
    /// The attributes, from the first instance stored, with empty ones filled
    /// from later instances.
    pub attributes: StudyAttributes,
    /// Modalities in Study (0008,0061): the distinct series modalities, sorted.
    pub modalities_in_study: Vec<String>,
    /// Number of Study Related Series (0020,1206).
    pub number_of_series: u32,
    /// Number of Study Related Instances (0020,1208).
    pub number_of_instances: u32,
}

/// The value of the `series` table, maintained by the writer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesRecord {
    /// The attributes, from the first instance stored, empty ones filled later.
    pub attributes: SeriesAttributes,
    /// Number of Series Related Instances (0020,1209).
    pub number_of_instances: u32,
}

/// The values most instances of a series share: kept once, in the series'
/// records (`series`, `series_ids`), and left out of each instance's
/// [`StoredRecord`] that has them. Taken from the series' first instance and
/// never changed while the series id lives.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecordDefaults {
    pub(crate) transfer_syntax_uid: String,
    pub(crate) sop_class_uid: String,
    pub(crate) calling_ae_title: String,
}

impl RecordDefaults {
    /// The defaults a series takes from its first instance.
    pub(crate) fn of(record: &InstanceRecord) -> RecordDefaults {
        RecordDefaults {
            transfer_syntax_uid: record.transfer_syntax_uid.clone(),
            sop_class_uid: record.sop_class_uid.clone(),
            calling_ae_title: record.calling_ae_title.clone(),
        }
    }
}

/// The value of the `series` table (schema 5): the series' id, its record
/// defaults and its record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSeries {
    /// The series id: the first 8 bytes (big endian) of its instances' keys.
    pub(crate) id: u64,
    pub(crate) defaults: RecordDefaults,
    pub(crate) record: SeriesRecord,
}

/// The value of the `series_ids` table, keyed by series id: which series
/// the id names (for lookups that start from a SOP Instance UID) and its
/// record defaults.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeriesIdentity {
    pub(crate) study_instance_uid: String,
    pub(crate) series_instance_uid: String,
    pub(crate) defaults: RecordDefaults,
}

/// The value of the `instances` table, keyed by series id and SOP
/// Instance UID: an [`InstanceRecord`] without the values its series'
/// [`RecordDefaults`] hold. Most instances have their series' values, so
/// the differing ones are kept apart, behind one pointer (5 bytes when
/// there are none, against 27 for three empty optional strings).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) file_id: FileId,
    pub(crate) file_size_bytes: u64,
    pub(crate) dataset_offset_bytes: u64,
    pub(crate) checksum: Checksum,
    pub(crate) received_at_unix_ns: u64,
    pub(crate) instance_number: Option<i32>,
    pub(crate) overrides: Option<Box<RecordOverrides>>,
}

/// The values of an instance that differ from its series' defaults
/// (`None`: the series' value).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecordOverrides {
    pub(crate) transfer_syntax_uid: Option<String>,
    pub(crate) sop_class_uid: Option<String>,
    pub(crate) calling_ae_title: Option<String>,
}

/// `value` unless it equals the series' `default`.
fn unless_default(value: &str, default: &str) -> Option<String> {
    (value != default).then(|| value.to_owned())
}

/// The value an archived override stands for.
fn or_default<'a>(
    value: Option<&'a rkyv::option::ArchivedOption<rkyv::string::ArchivedString>>,
    default: &'a rkyv::string::ArchivedString,
) -> &'a str {
    match value.and_then(|value| value.as_ref()) {
        Some(value) => value.as_str(),
        None => default.as_str(),
    }
}

impl StoredRecord {
    /// `record` as stored in a series with `defaults`.
    pub(crate) fn compact(record: &InstanceRecord, defaults: &RecordDefaults) -> StoredRecord {
        let overrides = RecordOverrides {
            transfer_syntax_uid: unless_default(
                &record.transfer_syntax_uid,
                &defaults.transfer_syntax_uid,
            ),
            sop_class_uid: unless_default(&record.sop_class_uid, &defaults.sop_class_uid),
            calling_ae_title: unless_default(&record.calling_ae_title, &defaults.calling_ae_title),
        };
        StoredRecord {
            file_id: record.file_id,
            file_size_bytes: record.file_size_bytes,
            dataset_offset_bytes: record.dataset_offset_bytes,
            checksum: record.checksum,
            received_at_unix_ns: record.received_at_unix_ns,
            instance_number: record.instance_number,
            overrides: (overrides != RecordOverrides::default()).then(|| Box::new(overrides)),
        }
    }

    /// The whole record, with the series' `defaults` filled in.
    pub(crate) fn expand(self, defaults: &RecordDefaults) -> InstanceRecord {
        let overrides = self.overrides.map(|boxed| *boxed).unwrap_or_default();
        InstanceRecord {
            file_id: self.file_id,
            file_size_bytes: self.file_size_bytes,
            dataset_offset_bytes: self.dataset_offset_bytes,
            transfer_syntax_uid: overrides
                .transfer_syntax_uid
                .unwrap_or_else(|| defaults.transfer_syntax_uid.clone()),
            sop_class_uid: overrides
                .sop_class_uid
                .unwrap_or_else(|| defaults.sop_class_uid.clone()),
            checksum: self.checksum,
            received_at_unix_ns: self.received_at_unix_ns,
            calling_ae_title: overrides
                .calling_ae_title
                .unwrap_or_else(|| defaults.calling_ae_title.clone()),
            instance_number: self.instance_number,
        }
    }
}

impl ArchivedStoredRecord {
    /// The file id, read in place.
    pub(crate) fn file_id(&self) -> FileId {
        FileId(self.file_id.0.to_native())
    }

    fn overrides(&self) -> Option<&ArchivedRecordOverrides> {
        self.overrides.as_ref().map(|boxed| boxed.get())
    }

    /// The SOP Class UID, read in place.
    pub(crate) fn sop_class_uid<'a>(&'a self, defaults: &'a ArchivedRecordDefaults) -> &'a str {
        or_default(
            self.overrides().map(|overrides| &overrides.sop_class_uid),
            &defaults.sop_class_uid,
        )
    }

    /// The whole record, with the series' `defaults` filled in.
    pub(crate) fn expand(&self, defaults: &ArchivedRecordDefaults) -> InstanceRecord {
        let overrides = self.overrides();
        InstanceRecord {
            file_id: self.file_id(),
            file_size_bytes: self.file_size_bytes.to_native(),
            dataset_offset_bytes: self.dataset_offset_bytes.to_native(),
            transfer_syntax_uid: or_default(
                overrides.map(|overrides| &overrides.transfer_syntax_uid),
                &defaults.transfer_syntax_uid,
            )
            .to_owned(),
            sop_class_uid: self.sop_class_uid(defaults).to_owned(),
            checksum: Checksum(self.checksum.0),
            received_at_unix_ns: self.received_at_unix_ns.to_native(),
            calling_ae_title: or_default(
                overrides.map(|overrides| &overrides.calling_ae_title),
                &defaults.calling_ae_title,
            )
            .to_owned(),
            instance_number: self
                .instance_number
                .as_ref()
                .map(|number| number.to_native()),
        }
    }
}

/// Everything the engine hands over to store one instance; also what a
/// quarantine entry keeps, so that releasing it can store it later.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    /// The instance's identity.
    pub triplet: Triplet,
    /// The file and what it holds.
    pub record: InstanceRecord,
    /// Study-level attributes.
    pub study: StudyAttributes,
    /// Series-level attributes.
    pub series: SeriesAttributes,
}

/// Why an instance was quarantined.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum QuarantineReason {
    /// The triplet was already stored, with different bytes.
    Duplicate,
    /// The triplet was already stored with the same data set checksum and size.
    DuplicateIdentical,
    /// The SOP Instance UID was already stored under another study or series.
    SopInstanceConflict {
        /// The triplet that holds the SOP Instance UID.
        stored: Triplet,
    },
}

/// The value of the `quarantine` table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// The entry's id (its key; ids grow with time and are never reused).
    pub id: u64,
    /// The instance as it was submitted (its file, who sent it and when).
    pub instance: NewInstance,
    /// Why it was held aside.
    pub reason: QuarantineReason,
}

/// Where a storage-commitment transaction stands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitmentState {
    /// Waiting for referenced instances to arrive, or for the deadline.
    Pending,
    /// The N-EVENT-REPORT is decided and waits to be delivered.
    ReportReady,
    /// The report was delivered (the peer answered 0000 or 0107); kept for
    /// the operator view until pruned.
    Delivered,
    /// The report could not be delivered (retries exhausted, a permanent
    /// refusal, or no address for the requester); kept for the operator
    /// view until pruned.
    Failed,
}

/// The value of the `commitments` table, keyed by Transaction UID: what the
/// commitment tracker needs to survive a restart. `payload` is the engine's
/// own encoding (the referenced SOP sequence, or the report to deliver).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CommitmentRecord {
    /// Pending or waiting for delivery.
    pub state: CommitmentState,
    /// The AE title that asked (where the report goes).
    pub requester_ae_title: String,
    /// When the N-ACTION arrived.
    pub created_at_unix_ns: u64,
    /// When a pending request gives up and reports failures.
    pub deadline_unix_ns: u64,
    /// Report deliveries tried so far.
    pub delivery_attempts: u32,
    /// When to try delivering next (0: as soon as possible).
    pub next_attempt_at_unix_ns: u64,
    /// Opaque bytes of the engine.
    pub payload: Vec<u8>,
}

/// The largest commitment payload accepted, in bytes (10,000 references of
/// ~130 bytes each fit about 8 times over).
pub const COMMITMENT_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The longest `StoreRequest::flagged` payload kept (longer ones are cut).
pub const FLAGGED_PAYLOAD_BYTES_MAX: usize = 4096;

/// The longest attribute value kept, in bytes; longer ones are truncated in the
/// index (the file keeps every byte).
pub const ATTRIBUTE_BYTES_MAX: usize = 1024;

/// The longest AE title kept, in bytes (DICOM says 16; stored truncated).
pub const AE_TITLE_BYTES_MAX: usize = 64;

/// Normalises an attribute for storage and matching: trailing and leading
/// spaces are insignificant in DICOM string VRs, NULs (padding that escaped
/// the decoder) are removed, and the length is bounded.
pub(crate) fn normalize_text(value: &str) -> String {
    let without_nul: String;
    let value = if value.contains('\0') {
        without_nul = value.replace('\0', "");
        &without_nul
    } else {
        value
    };
    truncate_to_char_boundary(value.trim_matches(' '), ATTRIBUTE_BYTES_MAX).to_owned()
}

/// A person name for storage: normalised text without trailing empty components.
pub(crate) fn normalize_person_name(value: &str) -> String {
    let text = normalize_text(value);
    let groups: Vec<&str> = text
        .split('=')
        .map(|group| group.trim_end_matches(['^', ' ']))
        .collect();
    let mut joined = groups.join("=");
    while joined.ends_with('=') {
        joined.pop();
    }
    joined
}

/// A DA value for storage: `YYYY.MM.DD` (ACR-NEMA) becomes `YYYYMMDD`.
pub(crate) fn normalize_date(value: &str) -> String {
    let text = normalize_text(value);
    if text.len() == 10
        && text.as_bytes().get(4) == Some(&b'.')
        && text.as_bytes().get(7) == Some(&b'.')
    {
        return text.replace('.', "");
    }
    text
}

/// A TM value for storage: `HH:MM:SS` (ACR-NEMA) becomes `HHMMSS`.
pub(crate) fn normalize_time(value: &str) -> String {
    normalize_text(value).replace(':', "")
}

/// How each study attribute is normalised, in the order of
/// [`StudyAttributes::values`].
const STUDY_NORMALIZERS: [fn(&str) -> String; 10] = [
    normalize_person_name,
    normalize_text,
    normalize_date,
    normalize_text,
    normalize_date,
    normalize_time,
    normalize_text,
    normalize_text,
    normalize_text,
    normalize_person_name,
];

impl StudyAttributes {
    /// Every attribute, in one fixed order.
    fn values(&self) -> [&String; 10] {
        [
            &self.patient_name,
            &self.patient_id,
            &self.patient_birth_date,
            &self.patient_sex,
            &self.study_date,
            &self.study_time,
            &self.accession_number,
            &self.study_id,
            &self.study_description,
            &self.referring_physician_name,
        ]
    }

    /// Every attribute, in [`StudyAttributes::values`]' order.
    fn values_mut(&mut self) -> [&mut String; 10] {
        [
            &mut self.patient_name,
            &mut self.patient_id,
            &mut self.patient_birth_date,
            &mut self.patient_sex,
            &mut self.study_date,
            &mut self.study_time,
            &mut self.accession_number,
            &mut self.study_id,
            &mut self.study_description,
            &mut self.referring_physician_name,
        ]
    }

    /// The attributes as stored and matched.
    pub(crate) fn normalized(&self) -> StudyAttributes {
        let mut normalized = StudyAttributes::default();
        for ((out, value), normalize) in normalized
            .values_mut()
            .into_iter()
            .zip(self.values())
            .zip(STUDY_NORMALIZERS)
        {
            *out = normalize(value);
        }
        normalized
    }

    /// Whether `other` has a value where this record has none: the only
    /// case in which [`StudyAttributes::fill_empty_from`] may change it
    /// (a value of spaces normalises to none, so it may still not).
    pub(crate) fn may_fill_from(&self, other: &StudyAttributes) -> bool {
        self.values()
            .iter()
            .zip(other.values())
            .any(|(mine, theirs)| mine.is_empty() && !theirs.is_empty())
    }

    /// Fills this record's empty attributes from `other` (normalising each
    /// value taken if `normalize`: only those, not the whole of `other`);
    /// true if any changed.
    pub(crate) fn fill_empty_from(&mut self, other: &StudyAttributes, normalize: bool) -> bool {
        let mut changed = false;
        for ((mine, theirs), normalizer) in self
            .values_mut()
            .into_iter()
            .zip(other.values())
            .zip(STUDY_NORMALIZERS)
        {
            changed |= fill_empty(mine, theirs, normalize.then_some(normalizer));
        }
        changed
    }
}

/// Fills `mine`, if empty, with `theirs`, if not (normalised by
/// `normalizer` when there is one); true if `mine` changed.
fn fill_empty(mine: &mut String, theirs: &str, normalizer: Option<fn(&str) -> String>) -> bool {
    if !mine.is_empty() || theirs.is_empty() {
        return false;
    }
    match normalizer {
        Some(normalize) => *mine = normalize(theirs),
        None => theirs.clone_into(mine),
    }
    !mine.is_empty()
}

impl SeriesAttributes {
    /// The attributes as stored and matched.
    pub(crate) fn normalized(&self) -> SeriesAttributes {
        SeriesAttributes {
            modality: normalize_text(&self.modality),
            series_number: self.series_number,
            series_description: normalize_text(&self.series_description),
        }
    }

    /// Whether any attribute is empty (so a later instance may fill it).
    pub(crate) fn has_empty(&self) -> bool {
        self.modality.is_empty()
            || self.series_number.is_none()
            || self.series_description.is_empty()
    }

    /// Fills this record's empty attributes from `other` (normalising each
    /// value taken if `normalize`); true if any changed.
    pub(crate) fn fill_empty_from(&mut self, other: &SeriesAttributes, normalize: bool) -> bool {
        let normalizer = normalize.then_some(normalize_text as fn(&str) -> String);
        let mut changed = fill_empty(&mut self.modality, &other.modality, normalizer);
        changed |= fill_empty(
            &mut self.series_description,
            &other.series_description,
            normalizer,
        );
        if self.series_number.is_none() && other.series_number.is_some() {
            self.series_number = other.series_number;
            changed = true;
        }
        changed
    }
}

/// Serialises a record into `buffer` (cleared first) in the index's format.
pub(crate) fn encode_into<T>(
    table: &'static str,
    value: &T,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, IndexError>
where
    T: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>,
{
    let mut buffer = buffer;
    buffer.clear();
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buffer).map_err(|error| {
        IndexError::Corrupt {
            table,
            detail: format!("cannot encode a record: {error}"),
        }
    })
}

/// Validates a stored value and returns a view of it, in place.
pub(crate) fn access<'a, T>(table: &'static str, bytes: &'a [u8]) -> Result<&'a T, IndexError>
where
    T: rkyv::Portable + for<'b> rkyv::bytecheck::CheckBytes<HighValidator<'b, rancor::Error>>,
{
    rkyv::access::<T, rancor::Error>(bytes).map_err(|error| IndexError::Corrupt {
        table,
        detail: format!("invalid record: {error}"),
    })
}

/// Validates a stored value and copies it out.
pub(crate) fn decode<T>(table: &'static str, bytes: &[u8]) -> Result<T, IndexError>
where
    T: Archive,
    T::Archived: for<'b> rkyv::bytecheck::CheckBytes<HighValidator<'b, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let archived = access::<T::Archived>(table, bytes)?;
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|error| IndexError::Corrupt {
        table,
        detail: format!("cannot decode: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceRecord {
        InstanceRecord {
            file_id: FileId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            file_size_bytes: 1_000,
            dataset_offset_bytes: 300,
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            checksum: Checksum([7; 16]),
            received_at_unix_ns: 1_700_000_000_000_000_000,
            calling_ae_title: "MODALITY".into(),
            instance_number: Some(-3),
        }
    }

    #[test]
    fn records_roundtrip_from_an_unaligned_buffer() {
        let bytes = encode_into("instances", &sample(), Vec::new()).expect("encode");
        // LMDB values have no alignment: read from an odd address on purpose.
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let decoded: InstanceRecord = decode("instances", &shifted[1..]).expect("decode");
        assert_eq!(decoded, sample());
        assert_eq!(decoded.dataset_size_bytes(), 700);
    }

    #[test]
    fn stored_records_leave_out_the_series_values_and_expand_back() {
        let defaults = RecordDefaults::of(&sample());
        let same = StoredRecord::compact(&sample(), &defaults);
        assert_eq!(same.overrides, None);
        let other = InstanceRecord {
            transfer_syntax_uid: "1.2.840.10008.1.2.4.50".into(),
            calling_ae_title: String::new(),
            ..sample()
        };
        let differs = StoredRecord::compact(&other, &defaults);
        assert!(differs.overrides.is_some());
        for (stored, expected) in [(same, sample()), (differs, other)] {
            let bytes = encode_into("instances", &stored, Vec::new()).expect("encode");
            let archived = access::<ArchivedStoredRecord>("instances", &bytes).expect("access");
            let archived_defaults = encode_into("series", &defaults, Vec::new()).expect("encode");
            let archived_defaults =
                access::<ArchivedRecordDefaults>("series", &archived_defaults).expect("access");
            assert_eq!(archived.expand(archived_defaults), expected);
            assert_eq!(
                archived.sop_class_uid(archived_defaults),
                expected.sop_class_uid
            );
            assert_eq!(stored.expand(&defaults), expected);
        }
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let bytes = encode_into("instances", &sample(), Vec::new()).expect("encode");
        for cut in 0..bytes.len() {
            let result: Result<InstanceRecord, _> = decode("instances", &bytes[..cut]);
            assert!(result.is_err() || cut == bytes.len());
        }
        let mut flipped = bytes.clone();
        // Point a string's length far past the end.
        for byte in flipped.iter_mut().rev().take(40) {
            *byte = 0xff;
        }
        assert!(decode::<InstanceRecord>("instances", &flipped).is_err());
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_text("  AB C \0"), "AB C");
        assert_eq!(normalize_person_name("Doe^John^^^"), "Doe^John");
        assert_eq!(
            normalize_person_name("Doe^John^^^=Ideo^^=="),
            "Doe^John=Ideo"
        );
        assert_eq!(normalize_date("1999.12.31"), "19991231");
        assert_eq!(normalize_date("19991231 "), "19991231");
        assert_eq!(normalize_time("12:30:00"), "123000");
        assert_eq!(normalize_text(&"x".repeat(5000)).len(), ATTRIBUTE_BYTES_MAX);
    }

    #[test]
    fn fill_empty_keeps_first_values() {
        let mut first = StudyAttributes {
            patient_id: "A".into(),
            ..Default::default()
        };
        let later = StudyAttributes {
            patient_id: "B".into(),
            study_date: "20240101".into(),
            ..Default::default()
        };
        assert!(first.fill_empty_from(&later, false));
        assert_eq!(first.patient_id, "A");
        assert_eq!(first.study_date, "20240101");
        assert!(!first.fill_empty_from(&later, false));
    }

    #[test]
    fn filling_normalises_only_what_it_takes_as_normalizing_all_would() {
        let raw = StudyAttributes {
            patient_name: "Doe^John^^ ".into(),
            patient_id: " B ".into(),
            patient_birth_date: "1999.12.31".into(),
            study_time: "12:30:00".into(),
            accession_number: "   ".into(),
            referring_physician_name: "Ref^^".into(),
            ..Default::default()
        };
        let record = StudyAttributes {
            patient_id: "A".into(),
            study_description: "KEPT".into(),
            ..Default::default()
        };
        let mut by_field = record.clone();
        let mut whole = record.clone();
        assert!(record.may_fill_from(&raw));
        assert!(by_field.fill_empty_from(&raw, true));
        assert!(whole.fill_empty_from(&raw.normalized(), false));
        assert_eq!(by_field, whole);
        assert_eq!(by_field.patient_name, "Doe^John");
        assert_eq!(by_field.patient_id, "A");
        assert_eq!(by_field.accession_number, "", "spaces are no value");
        // Only spaces to offer: nothing changes, although it may have.
        let spaces = StudyAttributes {
            accession_number: "  ".into(),
            ..Default::default()
        };
        assert!(by_field.may_fill_from(&spaces));
        assert!(!by_field.fill_empty_from(&spaces, true));
        assert!(!by_field.may_fill_from(&StudyAttributes::default()));

        let mut series = SeriesAttributes::default();
        let raw_series = SeriesAttributes {
            modality: " CT ".into(),
            series_number: Some(3),
            series_description: "\0".into(),
        };
        assert!(series.fill_empty_from(&raw_series, true));
        assert_eq!(series, raw_series.normalized());
        assert!(!series.fill_empty_from(&raw_series, true));
    }
}
