//! Directory record types (PS3.3 F.5), which SOP class gets which, and the
//! record selection keys each carries (PS3.3 F.5 and the seed's 6.2.3).
//!
//! Sluice writes the seed's record types (PATIENT, STUDY, SERIES, IMAGE,
//! PRESENTATION, SR DOCUMENT, KEY OBJECT DOC) and, so that no standard
//! storage class Sluice accepts is refused for want of a record, the types of
//! the other common composite objects: WAVEFORM, RT DOSE, RT STRUCTURE SET
//! (a seed class), RT PLAN, RT TREAT RECORD, SPECTROSCOPY, RAW DATA,
//! REGISTRATION (a seed class), FIDUCIAL and ENCAP DOC. The reader knows the
//! names of every record type of PS3.3 F.5 and reports the others as unknown.

use sluice_net::dimse::Tag;

/// A directory record type (Directory Record Type (0004,1430)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// PATIENT.
    Patient,
    /// STUDY.
    Study,
    /// SERIES.
    Series,
    /// IMAGE.
    Image,
    /// PRESENTATION (softcopy presentation states).
    Presentation,
    /// SR DOCUMENT.
    SrDocument,
    /// KEY OBJECT DOC.
    KeyObjectDoc,
    /// WAVEFORM.
    Waveform,
    /// RT DOSE.
    RtDose,
    /// RT STRUCTURE SET.
    RtStructureSet,
    /// RT PLAN.
    RtPlan,
    /// RT TREAT RECORD.
    RtTreatRecord,
    /// SPECTROSCOPY.
    Spectroscopy,
    /// RAW DATA.
    RawData,
    /// REGISTRATION.
    Registration,
    /// FIDUCIAL.
    Fiducial,
    /// ENCAP DOC.
    EncapDoc,
}

/// How a key is filled (the Type column of PS3.3 F.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Type 1: must have a value; an instance without one gets an invented
    /// value, reported.
    Required,
    /// Type 2: present, empty when the instance has no value.
    Present,
    /// Type 3 or 1C: copied when the instance has it.
    IfPresent,
}

/// One record selection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The attribute.
    pub tag: Tag,
    /// How it is filled.
    pub key_type: KeyType,
}

const fn key(group: u16, element: u16, key_type: KeyType) -> Key {
    Key {
        tag: Tag(group, element),
        key_type,
    }
}

use KeyType::{IfPresent, Present, Required};

/// Specific Character Set (0008,0005).
pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
/// Instance Number (0020,0013).
pub const INSTANCE_NUMBER: Tag = Tag(0x0020, 0x0013);
/// Verification Flag (0040,A493).
pub const VERIFICATION_FLAG: Tag = Tag(0x0040, 0xA493);
/// Verification DateTime (0040,A030).
pub const VERIFICATION_DATETIME: Tag = Tag(0x0040, 0xA030);
/// Verifying Observer Sequence (0040,A073): its last item's Verification
/// DateTime is the SR record's (0040,A030).
pub const VERIFYING_OBSERVER_SEQUENCE: Tag = Tag(0x0040, 0xA073);

static PATIENT_KEYS: &[Key] = &[
    key(0x0010, 0x0010, Present),   // Patient's Name
    key(0x0010, 0x0020, Required),  // Patient ID
    key(0x0010, 0x0030, IfPresent), // Patient's Birth Date (seed)
    key(0x0010, 0x0040, IfPresent), // Patient's Sex (seed)
];

static STUDY_KEYS: &[Key] = &[
    key(0x0008, 0x0020, Required), // Study Date
    key(0x0008, 0x0030, Required), // Study Time
    key(0x0008, 0x0050, Present),  // Accession Number
    key(0x0008, 0x1030, Present),  // Study Description
    key(0x0020, 0x000D, Required), // Study Instance UID
    key(0x0020, 0x0010, Required), // Study ID
];

static SERIES_KEYS: &[Key] = &[
    key(0x0008, 0x0060, Required), // Modality
    key(0x0020, 0x000E, Required), // Series Instance UID
    key(0x0020, 0x0011, Required), // Series Number
];

static IMAGE_KEYS: &[Key] = &[key(0x0020, 0x0013, Required)];

static PRESENTATION_KEYS: &[Key] = &[
    key(0x0008, 0x1115, IfPresent), // Referenced Series Sequence (1C)
    key(0x0020, 0x0013, Required),  // Instance Number
    key(0x0070, 0x0080, Required),  // Content Label
    key(0x0070, 0x0081, Present),   // Content Description
    key(0x0070, 0x0082, Required),  // Presentation Creation Date
    key(0x0070, 0x0083, Required),  // Presentation Creation Time
    key(0x0070, 0x0084, Present),   // Content Creator's Name
    key(0x0070, 0x0402, IfPresent), // Blending Sequence (1C)
];

static SR_DOCUMENT_KEYS: &[Key] = &[
    key(0x0008, 0x0023, Required),  // Content Date
    key(0x0008, 0x0033, Required),  // Content Time
    key(0x0020, 0x0013, Required),  // Instance Number
    key(0x0040, 0xA030, IfPresent), // Verification DateTime (1C, see below)
    key(0x0040, 0xA043, Required),  // Concept Name Code Sequence
    key(0x0040, 0xA491, Required),  // Completion Flag
    key(0x0040, 0xA493, Required),  // Verification Flag
];

static KEY_OBJECT_DOC_KEYS: &[Key] = &[
    key(0x0008, 0x0023, Required), // Content Date
    key(0x0008, 0x0033, Required), // Content Time
    key(0x0020, 0x0013, Required), // Instance Number
    key(0x0040, 0xA043, Required), // Concept Name Code Sequence
];

static WAVEFORM_KEYS: &[Key] = &[
    key(0x0008, 0x0023, Required), // Content Date
    key(0x0008, 0x0033, Required), // Content Time
    key(0x0020, 0x0013, Required), // Instance Number
];

static RT_DOSE_KEYS: &[Key] = &[
    key(0x0020, 0x0013, Required),  // Instance Number
    key(0x3004, 0x0006, IfPresent), // Dose Comment
    key(0x3004, 0x000A, Required),  // Dose Summation Type
];

static RT_STRUCTURE_SET_KEYS: &[Key] = &[
    key(0x0020, 0x0013, Required), // Instance Number
    key(0x3006, 0x0002, Required), // Structure Set Label
    key(0x3006, 0x0008, Present),  // Structure Set Date
    key(0x3006, 0x0009, Present),  // Structure Set Time
];

static RT_PLAN_KEYS: &[Key] = &[
    key(0x0020, 0x0013, Required), // Instance Number
    key(0x300A, 0x0002, Required), // RT Plan Label
    key(0x300A, 0x0006, Present),  // RT Plan Date
    key(0x300A, 0x0007, Present),  // RT Plan Time
];

static RT_TREAT_RECORD_KEYS: &[Key] = &[
    key(0x0020, 0x0013, Required), // Instance Number
    key(0x3008, 0x0250, Present),  // Treatment Date
    key(0x3008, 0x0251, Present),  // Treatment Time
];

static SPECTROSCOPY_KEYS: &[Key] = &[
    key(0x0008, 0x0008, Required), // Image Type
    key(0x0008, 0x0023, Required), // Content Date
    key(0x0008, 0x0033, Required), // Content Time
    key(0x0020, 0x0013, Required), // Instance Number
    key(0x0028, 0x0008, Required), // Number of Frames
    key(0x0028, 0x0010, Required), // Rows
    key(0x0028, 0x0011, Required), // Columns
    key(0x0028, 0x9001, Required), // Data Point Rows
    key(0x0028, 0x9002, Required), // Data Point Columns
];

static RAW_DATA_KEYS: &[Key] = &[
    key(0x0008, 0x0023, Required), // Content Date
    key(0x0008, 0x0033, Required), // Content Time
    key(0x0020, 0x0013, Present),  // Instance Number
];

static REGISTRATION_KEYS: &[Key] = &[
    key(0x0008, 0x0023, Required), // Content Date
    key(0x0008, 0x0033, Required), // Content Time
    key(0x0020, 0x0013, Required), // Instance Number
    key(0x0070, 0x0080, Required), // Content Label
    key(0x0070, 0x0081, Present),  // Content Description
    key(0x0070, 0x0084, Present),  // Content Creator's Name
];

static ENCAP_DOC_KEYS: &[Key] = &[
    key(0x0008, 0x0023, Present),   // Content Date
    key(0x0008, 0x0033, Present),   // Content Time
    key(0x0020, 0x0013, Required),  // Instance Number
    key(0x0040, 0xA043, Present),   // Concept Name Code Sequence
    key(0x0040, 0xE001, IfPresent), // HL7 Instance Identifier (1C)
    key(0x0042, 0x0010, Present),   // Document Title
    key(0x0042, 0x0012, Required),  // MIME Type of Encapsulated Document
];

/// Every record type Sluice writes, for tables and tests.
pub const WRITTEN_RECORD_TYPES: &[RecordType] = &[
    RecordType::Patient,
    RecordType::Study,
    RecordType::Series,
    RecordType::Image,
    RecordType::Presentation,
    RecordType::SrDocument,
    RecordType::KeyObjectDoc,
    RecordType::Waveform,
    RecordType::RtDose,
    RecordType::RtStructureSet,
    RecordType::RtPlan,
    RecordType::RtTreatRecord,
    RecordType::Spectroscopy,
    RecordType::RawData,
    RecordType::Registration,
    RecordType::Fiducial,
    RecordType::EncapDoc,
];

/// The names of PS3.3 F.5 that Sluice does not write but a reader meets.
const OTHER_STANDARD_NAMES: &[&str] = &[
    "HANGING PROTOCOL",
    "PRIVATE",
    "HL7 STRUC DOC",
    "VALUE MAP",
    "STEREOMETRIC",
    "PALETTE",
    "IMPLANT",
    "IMPLANT ASSY",
    "IMPLANT GROUP",
    "MEASUREMENT",
    "SURFACE",
    "SURFACE SCAN",
    "TRACT",
    "ASSESSMENT",
    "RADIOTHERAPY",
    "ANNOTATION",
    "INVENTORY",
    "PLAN",
    "MODALITY LUT",
    "VOI LUT",
    "CURVE",
    "OVERLAY",
    "TOPIC",
    "VISIT",
    "RESULTS",
    "INTERPRETATION",
    "STUDY COMPONENT",
];

impl RecordType {
    /// The Directory Record Type value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Patient => "PATIENT",
            Self::Study => "STUDY",
            Self::Series => "SERIES",
            Self::Image => "IMAGE",
            Self::Presentation => "PRESENTATION",
            Self::SrDocument => "SR DOCUMENT",
            Self::KeyObjectDoc => "KEY OBJECT DOC",
            Self::Waveform => "WAVEFORM",
            Self::RtDose => "RT DOSE",
            Self::RtStructureSet => "RT STRUCTURE SET",
            Self::RtPlan => "RT PLAN",
            Self::RtTreatRecord => "RT TREAT RECORD",
            Self::Spectroscopy => "SPECTROSCOPY",
            Self::RawData => "RAW DATA",
            Self::Registration => "REGISTRATION",
            Self::Fiducial => "FIDUCIAL",
            Self::EncapDoc => "ENCAP DOC",
        }
    }

    /// The record type of a Directory Record Type value.
    pub fn from_name(name: &str) -> Option<Self> {
        WRITTEN_RECORD_TYPES
            .iter()
            .copied()
            .find(|record_type| record_type.name() == name)
    }

    /// Whether `name` is a record type of PS3.3 F.5 at all (current or
    /// retired).
    pub fn is_standard_name(name: &str) -> bool {
        Self::from_name(name).is_some() || OTHER_STANDARD_NAMES.contains(&name)
    }

    /// The record selection keys this record carries (besides Specific
    /// Character Set, added when a key needs it).
    pub fn keys(self) -> &'static [Key] {
        match self {
            Self::Patient => PATIENT_KEYS,
            Self::Study => STUDY_KEYS,
            Self::Series => SERIES_KEYS,
            Self::Image => IMAGE_KEYS,
            Self::Presentation => PRESENTATION_KEYS,
            Self::SrDocument => SR_DOCUMENT_KEYS,
            Self::KeyObjectDoc => KEY_OBJECT_DOC_KEYS,
            Self::Waveform => WAVEFORM_KEYS,
            Self::RtDose => RT_DOSE_KEYS,
            Self::RtStructureSet => RT_STRUCTURE_SET_KEYS,
            Self::RtPlan => RT_PLAN_KEYS,
            Self::RtTreatRecord => RT_TREAT_RECORD_KEYS,
            Self::Spectroscopy => SPECTROSCOPY_KEYS,
            Self::RawData => RAW_DATA_KEYS,
            Self::Registration | Self::Fiducial => REGISTRATION_KEYS,
            Self::EncapDoc => ENCAP_DOC_KEYS,
        }
    }

    /// Whether this record references a file (the instance level).
    pub const fn is_instance_level(self) -> bool {
        !matches!(self, Self::Patient | Self::Study | Self::Series)
    }

    /// The record type of an instance of `sop_class_uid`; `None` for classes
    /// Sluice writes no record for (they are refused, with the reason).
    pub fn for_sop_class(sop_class_uid: &str) -> Option<Self> {
        let uid = sluice_net::uid::trim_uid_padding(sop_class_uid);
        const STORAGE: &str = "1.2.840.10008.5.1.4.1.1.";
        if let Some(rest) = uid.strip_prefix(STORAGE) {
            let record_type = match rest {
                "88.59" => Some(Self::KeyObjectDoc),
                "4.2" => Some(Self::Spectroscopy),
                "66" => Some(Self::RawData),
                "66.1" | "66.3" => Some(Self::Registration),
                "66.2" => Some(Self::Fiducial),
                // Pixel data of their own, IMAGE records in PS3.3 F.5 (as
                // DCMTK writes them), though not "image classes" for the
                // C-STORE checks.
                "30" | "66.4" => Some(Self::Image),
                "481.2" => Some(Self::RtDose),
                "481.3" => Some(Self::RtStructureSet),
                "481.5" | "481.8" => Some(Self::RtPlan),
                "481.4" | "481.6" | "481.7" | "481.9" => Some(Self::RtTreatRecord),
                _ if rest.starts_with("11.") => Some(Self::Presentation),
                _ if rest.starts_with("88.") => Some(Self::SrDocument),
                _ if rest.starts_with("9.") => Some(Self::Waveform),
                _ if rest.starts_with("104.") => Some(Self::EncapDoc),
                _ => None,
            };
            if let Some(record_type) = record_type {
                return sluice_net::uid::storage_sop_class(uid).map(|_| record_type);
            }
        }
        sluice_net::uid::storage_sop_class(uid)
            .filter(|class| class.image && uid.starts_with("1.2.840.10008."))
            .map(|_| Self::Image)
    }
}

/// Every tag some record takes from an instance, sorted: what the key reader
/// keeps of a data set's head.
pub fn all_key_tags() -> Vec<Tag> {
    let mut tags: Vec<Tag> = WRITTEN_RECORD_TYPES
        .iter()
        .flat_map(|record_type| record_type.keys().iter().map(|key| key.tag))
        .chain([
            SPECIFIC_CHARACTER_SET,
            Tag(0x0008, 0x0016),
            Tag(0x0008, 0x0018),
            VERIFYING_OBSERVER_SEQUENCE,
        ])
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sop_classes_map_to_record_types() {
        let cases = [
            ("1.2.840.10008.5.1.4.1.1.2", Some(RecordType::Image)),
            ("1.2.840.10008.5.1.4.1.1.481.1", Some(RecordType::Image)),
            (
                "1.2.840.10008.5.1.4.1.1.11.1",
                Some(RecordType::Presentation),
            ),
            (
                "1.2.840.10008.5.1.4.1.1.88.22",
                Some(RecordType::SrDocument),
            ),
            (
                "1.2.840.10008.5.1.4.1.1.88.50",
                Some(RecordType::SrDocument),
            ),
            (
                "1.2.840.10008.5.1.4.1.1.88.59",
                Some(RecordType::KeyObjectDoc),
            ),
            (
                "1.2.840.10008.5.1.4.1.1.66.1",
                Some(RecordType::Registration),
            ),
            (
                "1.2.840.10008.5.1.4.1.1.481.3",
                Some(RecordType::RtStructureSet),
            ),
            ("1.2.840.10008.5.1.4.1.1.9.1.1", Some(RecordType::Waveform)),
            ("1.2.840.10008.5.1.4.1.1.104.1", Some(RecordType::EncapDoc)),
            ("1.2.840.10008.5.1.4.1.1.66.4", Some(RecordType::Image)),
            // Not a storage class, and the GE private class: no record.
            ("1.2.840.10008.5.1.4.1.1.88.9999", None),
            (sluice_net::uid::GE_PRIVATE_3D_MODEL_STORAGE, None),
            ("1.2.3.4", None),
        ];
        for (uid, expected) in cases {
            assert_eq!(RecordType::for_sop_class(uid), expected, "{uid}");
        }
        // Every seed class but the private one gets a record type.
        for uid in sluice_net::uid::SEED_STORAGE_SOP_CLASSES {
            if *uid != sluice_net::uid::GE_PRIVATE_3D_MODEL_STORAGE {
                assert!(RecordType::for_sop_class(uid).is_some(), "{uid}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_keys_are_sorted() {
        for record_type in WRITTEN_RECORD_TYPES {
            assert_eq!(
                RecordType::from_name(record_type.name()),
                Some(*record_type)
            );
            assert!(RecordType::is_standard_name(record_type.name()));
            let keys = record_type.keys();
            assert!(keys.windows(2).all(|pair| pair[0].tag < pair[1].tag));
        }
        assert!(RecordType::is_standard_name("HANGING PROTOCOL"));
        assert!(!RecordType::is_standard_name("FANCY"));
    }
}
