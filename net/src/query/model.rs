//! The Query/Retrieve information models (PS3.4 C.3, C.6.1, C.6.2): levels,
//! their unique keys, and the key table both models share.
//!
//! One static table, sorted by tag, holds every key Sluice knows: the keys
//! PS3.4 lists level by level (Tables C.6-1 to C.6-4 for Patient Root, C.6-5
//! to C.6-7 for Study Root, and the additional attributes of Table C.3-1,
//! which the SCP computes), plus common "All other Attributes at <level>"
//! keys from the PS3.3 modules of that entity, so a key such as Body Part
//! Examined is known to be a series key. Each row names the entity the
//! attribute describes; the model maps the entity to a level (Study Root has
//! no patient level: patient attributes are study-level keys there) and
//! gives its key type (Patient ID is the patient level's unique key in
//! Patient Root and a required study key in Study Root).
//!
//! Any other tag gets its VR from the standard data dictionary
//! ([`vr_of`]); it is an optional key whose level Sluice does not know.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};

use crate::dimse::dataset::Vr;
use crate::dimse::Tag;
use crate::uid;

/// A Query/Retrieve information model (PS3.4 C.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InformationModel {
    /// Patient Root (PS3.4 C.6.1): PATIENT, STUDY, SERIES, IMAGE.
    PatientRoot,
    /// Study Root (PS3.4 C.6.2): STUDY, SERIES, IMAGE; patient attributes
    /// are keys of the study level.
    StudyRoot,
}

/// The DIMSE-C operation a Q/R SOP class carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// C-FIND.
    Find,
    /// C-MOVE.
    Move,
    /// C-GET.
    Get,
}

/// A Query/Retrieve level (0008,0052), top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// PATIENT (Patient Root only).
    Patient,
    /// STUDY.
    Study,
    /// SERIES.
    Series,
    /// IMAGE (composite object instance).
    Image,
}

/// The kind of a key at its level (PS3.4 C.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// U: identifies one entity of the level; always matched and returned.
    Unique,
    /// R: every SCP supports matching and returning it.
    Required,
    /// O: an SCP may not support it (then FF01).
    Optional,
}

/// The real-world entity an attribute describes (the PS3.3 module level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Entity {
    Patient,
    Study,
    Series,
    Image,
}

/// One row of the key table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDefinition {
    /// The attribute.
    pub tag: Tag,
    /// Its keyword (PS3.6).
    pub keyword: &'static str,
    /// Its VR.
    pub vr: Vr,
    entity: Entity,
    patient_root: KeyType,
    study_root: KeyType,
    /// Computed by the SCP from the entities below (Table C.3-1: counts,
    /// Modalities in Study, SOP Classes in Study), not stored in an object.
    pub computed: bool,
}

impl KeyDefinition {
    /// The level this key belongs to in `model`.
    pub const fn level(&self, model: InformationModel) -> Level {
        match (self.entity, model) {
            (Entity::Patient, InformationModel::PatientRoot) => Level::Patient,
            (Entity::Patient | Entity::Study, _) => Level::Study,
            (Entity::Series, _) => Level::Series,
            (Entity::Image, _) => Level::Image,
        }
    }

    /// The key type in `model`.
    pub const fn key_type(&self, model: InformationModel) -> KeyType {
        match model {
            InformationModel::PatientRoot => self.patient_root,
            InformationModel::StudyRoot => self.study_root,
        }
    }
}

/// Tags the query code names.
pub mod tags {
    use crate::dimse::Tag;

    /// Specific Character Set (0008,0005), CS.
    pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
    /// SOP Class UID (0008,0016), UI.
    pub const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
    /// SOP Instance UID (0008,0018), UI: the IMAGE level's unique key.
    pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
    /// Study Date (0008,0020), DA.
    pub const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
    /// Study Time (0008,0030), TM.
    pub const STUDY_TIME: Tag = Tag(0x0008, 0x0030);
    /// Accession Number (0008,0050), SH.
    pub const ACCESSION_NUMBER: Tag = Tag(0x0008, 0x0050);
    /// Query/Retrieve Level (0008,0052), CS.
    pub const QUERY_RETRIEVE_LEVEL: Tag = Tag(0x0008, 0x0052);
    /// Query/Retrieve View (0008,0053), CS.
    pub const QUERY_RETRIEVE_VIEW: Tag = Tag(0x0008, 0x0053);
    /// Retrieve AE Title (0008,0054), AE.
    pub const RETRIEVE_AE_TITLE: Tag = Tag(0x0008, 0x0054);
    /// Instance Availability (0008,0056), CS.
    pub const INSTANCE_AVAILABILITY: Tag = Tag(0x0008, 0x0056);
    /// Modality (0008,0060), CS.
    pub const MODALITY: Tag = Tag(0x0008, 0x0060);
    /// Modalities in Study (0008,0061), CS.
    pub const MODALITIES_IN_STUDY: Tag = Tag(0x0008, 0x0061);
    /// SOP Classes in Study (0008,0062), UI.
    pub const SOP_CLASSES_IN_STUDY: Tag = Tag(0x0008, 0x0062);
    /// Referring Physician's Name (0008,0090), PN.
    pub const REFERRING_PHYSICIAN_NAME: Tag = Tag(0x0008, 0x0090);
    /// Timezone Offset From UTC (0008,0201), SH.
    pub const TIMEZONE_OFFSET_FROM_UTC: Tag = Tag(0x0008, 0x0201);
    /// Study Description (0008,1030), LO.
    pub const STUDY_DESCRIPTION: Tag = Tag(0x0008, 0x1030);
    /// Procedure Code Sequence (0008,1032), SQ.
    pub const PROCEDURE_CODE_SEQUENCE: Tag = Tag(0x0008, 0x1032);
    /// Code Value (0008,0100), SH (in code sequence items).
    pub const CODE_VALUE: Tag = Tag(0x0008, 0x0100);
    /// Coding Scheme Designator (0008,0102), SH (in code sequence items).
    pub const CODING_SCHEME_DESIGNATOR: Tag = Tag(0x0008, 0x0102);
    /// Code Meaning (0008,0104), LO (in code sequence items).
    pub const CODE_MEANING: Tag = Tag(0x0008, 0x0104);
    /// Patient's Name (0010,0010), PN.
    pub const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
    /// Patient ID (0010,0020), LO: the PATIENT level's unique key.
    pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
    /// Patient's Birth Date (0010,0030), DA.
    pub const PATIENT_BIRTH_DATE: Tag = Tag(0x0010, 0x0030);
    /// Patient's Sex (0010,0040), CS.
    pub const PATIENT_SEX: Tag = Tag(0x0010, 0x0040);
    /// Study Instance UID (0020,000D), UI: the STUDY level's unique key.
    pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
    /// Series Instance UID (0020,000E), UI: the SERIES level's unique key.
    pub const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);
    /// Study ID (0020,0010), SH.
    pub const STUDY_ID: Tag = Tag(0x0020, 0x0010);
    /// Series Number (0020,0011), IS.
    pub const SERIES_NUMBER: Tag = Tag(0x0020, 0x0011);
    /// Instance Number (0020,0013), IS.
    pub const INSTANCE_NUMBER: Tag = Tag(0x0020, 0x0013);
    /// Number of Patient Related Studies (0020,1200), IS.
    pub const NUMBER_OF_PATIENT_RELATED_STUDIES: Tag = Tag(0x0020, 0x1200);
    /// Number of Patient Related Series (0020,1202), IS.
    pub const NUMBER_OF_PATIENT_RELATED_SERIES: Tag = Tag(0x0020, 0x1202);
    /// Number of Patient Related Instances (0020,1204), IS.
    pub const NUMBER_OF_PATIENT_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1204);
    /// Number of Study Related Series (0020,1206), IS.
    pub const NUMBER_OF_STUDY_RELATED_SERIES: Tag = Tag(0x0020, 0x1206);
    /// Number of Study Related Instances (0020,1208), IS.
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);
    /// Number of Series Related Instances (0020,1209), IS.
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1209);
    /// Storage Media File-Set ID (0088,0130), SH.
    pub const STORAGE_MEDIA_FILE_SET_ID: Tag = Tag(0x0088, 0x0130);
    /// Storage Media File-Set UID (0088,0140), UI.
    pub const STORAGE_MEDIA_FILE_SET_UID: Tag = Tag(0x0088, 0x0140);
}

const fn key(
    group: u16,
    element: u16,
    keyword: &'static str,
    vr: Vr,
    entity: Entity,
    patient_root: KeyType,
    study_root: KeyType,
) -> KeyDefinition {
    KeyDefinition {
        tag: Tag(group, element),
        keyword,
        vr,
        entity,
        patient_root,
        study_root,
        computed: false,
    }
}

const fn optional(
    group: u16,
    element: u16,
    keyword: &'static str,
    vr: Vr,
    entity: Entity,
) -> KeyDefinition {
    key(
        group,
        element,
        keyword,
        vr,
        entity,
        KeyType::Optional,
        KeyType::Optional,
    )
}

const fn computed(
    group: u16,
    element: u16,
    keyword: &'static str,
    vr: Vr,
    entity: Entity,
) -> KeyDefinition {
    let mut definition = optional(group, element, keyword, vr, entity);
    definition.computed = true;
    definition
}

use Entity::{Image, Patient, Series, Study};
use KeyType::{Required as R, Unique as U};

/// Every key Sluice knows, sorted by tag (a test checks the order).
#[rustfmt::skip]
static KEYS: &[KeyDefinition] = &[
    optional(0x0008, 0x0016, "SOPClassUID", Vr::UI, Image),
    key(0x0008, 0x0018, "SOPInstanceUID", Vr::UI, Image, U, U),
    key(0x0008, 0x0020, "StudyDate", Vr::DA, Study, R, R),
    optional(0x0008, 0x0021, "SeriesDate", Vr::DA, Series),
    optional(0x0008, 0x0022, "AcquisitionDate", Vr::DA, Image),
    optional(0x0008, 0x0023, "ContentDate", Vr::DA, Image),
    optional(0x0008, 0x002A, "AcquisitionDateTime", Vr::DT, Image),
    key(0x0008, 0x0030, "StudyTime", Vr::TM, Study, R, R),
    optional(0x0008, 0x0031, "SeriesTime", Vr::TM, Series),
    optional(0x0008, 0x0032, "AcquisitionTime", Vr::TM, Image),
    optional(0x0008, 0x0033, "ContentTime", Vr::TM, Image),
    key(0x0008, 0x0050, "AccessionNumber", Vr::SH, Study, R, R),
    optional(0x0008, 0x0051, "IssuerOfAccessionNumberSequence", Vr::SQ, Study),
    key(0x0008, 0x0060, "Modality", Vr::CS, Series, R, R),
    computed(0x0008, 0x0061, "ModalitiesInStudy", Vr::CS, Study),
    computed(0x0008, 0x0062, "SOPClassesInStudy", Vr::UI, Study),
    optional(0x0008, 0x0063, "AnatomicRegionsInStudyCodeSequence", Vr::SQ, Study),
    optional(0x0008, 0x0070, "Manufacturer", Vr::LO, Series),
    optional(0x0008, 0x0090, "ReferringPhysicianName", Vr::PN, Study),
    optional(0x0008, 0x1010, "StationName", Vr::SH, Series),
    optional(0x0008, 0x1030, "StudyDescription", Vr::LO, Study),
    optional(0x0008, 0x1032, "ProcedureCodeSequence", Vr::SQ, Study),
    optional(0x0008, 0x103E, "SeriesDescription", Vr::LO, Series),
    optional(0x0008, 0x1050, "PerformingPhysicianName", Vr::PN, Series),
    optional(0x0008, 0x1060, "NameOfPhysiciansReadingStudy", Vr::PN, Study),
    optional(0x0008, 0x1070, "OperatorsName", Vr::PN, Series),
    optional(0x0008, 0x1080, "AdmittingDiagnosesDescription", Vr::LO, Study),
    optional(0x0008, 0x1110, "ReferencedStudySequence", Vr::SQ, Study),
    optional(0x0008, 0x1111, "ReferencedPerformedProcedureStepSequence", Vr::SQ, Series),
    optional(0x0008, 0x1120, "ReferencedPatientSequence", Vr::SQ, Patient),
    optional(0x0008, 0x3001, "AlternateRepresentationSequence", Vr::SQ, Image),
    optional(0x0008, 0x3002, "AvailableTransferSyntaxUID", Vr::UI, Image),
    key(0x0010, 0x0010, "PatientName", Vr::PN, Patient, R, R),
    key(0x0010, 0x0020, "PatientID", Vr::LO, Patient, U, R),
    optional(0x0010, 0x0021, "IssuerOfPatientID", Vr::LO, Patient),
    optional(0x0010, 0x0024, "IssuerOfPatientIDQualifiersSequence", Vr::SQ, Patient),
    optional(0x0010, 0x0030, "PatientBirthDate", Vr::DA, Patient),
    optional(0x0010, 0x0032, "PatientBirthTime", Vr::TM, Patient),
    optional(0x0010, 0x0040, "PatientSex", Vr::CS, Patient),
    optional(0x0010, 0x1001, "OtherPatientNames", Vr::PN, Patient),
    optional(0x0010, 0x1002, "OtherPatientIDsSequence", Vr::SQ, Patient),
    optional(0x0010, 0x1010, "PatientAge", Vr::AS, Study),
    optional(0x0010, 0x1020, "PatientSize", Vr::DS, Study),
    optional(0x0010, 0x1030, "PatientWeight", Vr::DS, Study),
    optional(0x0010, 0x2160, "EthnicGroup", Vr::SH, Patient),
    optional(0x0010, 0x2180, "Occupation", Vr::SH, Study),
    optional(0x0010, 0x21B0, "AdditionalPatientHistory", Vr::LT, Study),
    optional(0x0010, 0x4000, "PatientComments", Vr::LT, Patient),
    optional(0x0018, 0x0015, "BodyPartExamined", Vr::CS, Series),
    optional(0x0018, 0x1030, "ProtocolName", Vr::LO, Series),
    key(0x0020, 0x000D, "StudyInstanceUID", Vr::UI, Study, U, U),
    key(0x0020, 0x000E, "SeriesInstanceUID", Vr::UI, Series, U, U),
    key(0x0020, 0x0010, "StudyID", Vr::SH, Study, R, R),
    key(0x0020, 0x0011, "SeriesNumber", Vr::IS, Series, R, R),
    key(0x0020, 0x0013, "InstanceNumber", Vr::IS, Image, R, R),
    computed(0x0020, 0x1200, "NumberOfPatientRelatedStudies", Vr::IS, Patient),
    computed(0x0020, 0x1202, "NumberOfPatientRelatedSeries", Vr::IS, Patient),
    computed(0x0020, 0x1204, "NumberOfPatientRelatedInstances", Vr::IS, Patient),
    computed(0x0020, 0x1206, "NumberOfStudyRelatedSeries", Vr::IS, Study),
    computed(0x0020, 0x1208, "NumberOfStudyRelatedInstances", Vr::IS, Study),
    computed(0x0020, 0x1209, "NumberOfSeriesRelatedInstances", Vr::IS, Series),
    optional(0x0028, 0x0008, "NumberOfFrames", Vr::IS, Image),
    optional(0x0028, 0x0010, "Rows", Vr::US, Image),
    optional(0x0028, 0x0011, "Columns", Vr::US, Image),
    optional(0x0040, 0x0244, "PerformedProcedureStepStartDate", Vr::DA, Series),
    optional(0x0040, 0x0245, "PerformedProcedureStepStartTime", Vr::TM, Series),
    optional(0x0040, 0x0275, "RequestAttributesSequence", Vr::SQ, Series),
    optional(0x0040, 0xA043, "ConceptNameCodeSequence", Vr::SQ, Image),
    optional(0x0040, 0xA491, "CompletionFlag", Vr::CS, Image),
    optional(0x0040, 0xA493, "VerificationFlag", Vr::CS, Image),
    optional(0x0040, 0xA504, "ContentTemplateSequence", Vr::SQ, Image),
    optional(0x0070, 0x0080, "ContentLabel", Vr::CS, Image),
    optional(0x0070, 0x0081, "ContentDescription", Vr::LO, Image),
    optional(0x0070, 0x0084, "ContentCreatorName", Vr::PN, Image),
];

/// The attributes of an identifier that are not keys: they say how to read
/// the identifier (character set, level, time zone, view) or are returned by
/// the SCP (PS3.4 C.4.1.1.3.2), so they are never matched.
static CONTROL_ATTRIBUTES: &[(Tag, &str, Vr)] = &[
    (tags::SPECIFIC_CHARACTER_SET, "SpecificCharacterSet", Vr::CS),
    (tags::QUERY_RETRIEVE_LEVEL, "QueryRetrieveLevel", Vr::CS),
    (tags::QUERY_RETRIEVE_VIEW, "QueryRetrieveView", Vr::CS),
    (tags::RETRIEVE_AE_TITLE, "RetrieveAETitle", Vr::AE),
    (tags::INSTANCE_AVAILABILITY, "InstanceAvailability", Vr::CS),
    (
        tags::TIMEZONE_OFFSET_FROM_UTC,
        "TimezoneOffsetFromUTC",
        Vr::SH,
    ),
    (
        tags::STORAGE_MEDIA_FILE_SET_ID,
        "StorageMediaFileSetID",
        Vr::SH,
    ),
    (
        tags::STORAGE_MEDIA_FILE_SET_UID,
        "StorageMediaFileSetUID",
        Vr::UI,
    ),
];

/// The date and time attributes matched as one date-time when combined
/// date-time matching is negotiated (PS3.4 C.2.2.2.5): date tag, time tag.
pub const DATE_TIME_PAIRS: &[(Tag, Tag)] = &[
    (Tag(0x0008, 0x0020), Tag(0x0008, 0x0030)),
    (Tag(0x0008, 0x0021), Tag(0x0008, 0x0031)),
    (Tag(0x0008, 0x0022), Tag(0x0008, 0x0032)),
    (Tag(0x0008, 0x0023), Tag(0x0008, 0x0033)),
    (Tag(0x0010, 0x0030), Tag(0x0010, 0x0032)),
    (Tag(0x0040, 0x0244), Tag(0x0040, 0x0245)),
];

/// Every row of the key table, in tag order.
pub fn key_definitions() -> &'static [KeyDefinition] {
    KEYS
}

/// The key table's row for `tag`.
pub fn key_definition(tag: Tag) -> Option<&'static KeyDefinition> {
    KEYS.binary_search_by(|definition| definition.tag.cmp(&tag))
        .ok()
        .and_then(|index| KEYS.get(index))
}

/// Whether `tag` is a control attribute of identifiers (never a key).
pub fn is_control_attribute(tag: Tag) -> bool {
    CONTROL_ATTRIBUTES
        .iter()
        .any(|(control, _, _)| *control == tag)
}

/// The VR of `tag`: the key table's, a control attribute's, else the
/// standard dictionary's (a multi-VR entry such as US or SS relaxed to its
/// first form). `None` for private and unknown tags.
pub fn vr_of(tag: Tag) -> Option<Vr> {
    if let Some(definition) = key_definition(tag) {
        return Some(definition.vr);
    }
    if let Some((_, _, vr)) = CONTROL_ATTRIBUTES
        .iter()
        .find(|(control, _, _)| *control == tag)
    {
        return Some(*vr);
    }
    if tag.0 % 2 == 1 {
        // Private: only the creator elements (gggg,0010-00FF) have a known VR.
        return (0x0010..=0x00FF).contains(&tag.1).then_some(Vr::LO);
    }
    let entry =
        dicom_dictionary_std::StandardDataDictionary.by_tag(dicom_core::Tag(tag.0, tag.1))?;
    let name = entry.vr().relaxed().to_string().as_bytes();
    match name {
        [first, second] => Some(Vr([*first, *second])),
        _ => None,
    }
}

/// The keyword of `tag`, for messages; `"?"` when unknown.
pub fn keyword_of(tag: Tag) -> &'static str {
    if let Some(definition) = key_definition(tag) {
        return definition.keyword;
    }
    if let Some((_, keyword, _)) = CONTROL_ATTRIBUTES
        .iter()
        .find(|(control, _, _)| *control == tag)
    {
        return keyword;
    }
    if tag.0 % 2 == 1 {
        return "private";
    }
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .map_or("?", |entry| entry.alias())
}

impl InformationModel {
    /// The model and operation of a Q/R SOP class UID (trailing NUL
    /// padding ignored).
    pub fn from_sop_class(sop_class_uid: &str) -> Option<(Self, Operation)> {
        Some(match uid::trim_uid_padding(sop_class_uid) {
            uid::PATIENT_ROOT_QR_FIND => (Self::PatientRoot, Operation::Find),
            uid::PATIENT_ROOT_QR_MOVE => (Self::PatientRoot, Operation::Move),
            uid::PATIENT_ROOT_QR_GET => (Self::PatientRoot, Operation::Get),
            uid::STUDY_ROOT_QR_FIND => (Self::StudyRoot, Operation::Find),
            uid::STUDY_ROOT_QR_MOVE => (Self::StudyRoot, Operation::Move),
            uid::STUDY_ROOT_QR_GET => (Self::StudyRoot, Operation::Get),
            _ => return None,
        })
    }

    /// The SOP class UID of this model for `operation`.
    pub const fn sop_class(self, operation: Operation) -> &'static str {
        match (self, operation) {
            (Self::PatientRoot, Operation::Find) => uid::PATIENT_ROOT_QR_FIND,
            (Self::PatientRoot, Operation::Move) => uid::PATIENT_ROOT_QR_MOVE,
            (Self::PatientRoot, Operation::Get) => uid::PATIENT_ROOT_QR_GET,
            (Self::StudyRoot, Operation::Find) => uid::STUDY_ROOT_QR_FIND,
            (Self::StudyRoot, Operation::Move) => uid::STUDY_ROOT_QR_MOVE,
            (Self::StudyRoot, Operation::Get) => uid::STUDY_ROOT_QR_GET,
        }
    }

    /// The levels of the model, top to bottom.
    pub const fn levels(self) -> &'static [Level] {
        match self {
            Self::PatientRoot => &[Level::Patient, Level::Study, Level::Series, Level::Image],
            Self::StudyRoot => &[Level::Study, Level::Series, Level::Image],
        }
    }

    /// Whether `level` exists in the model.
    pub fn has_level(self, level: Level) -> bool {
        self.levels().contains(&level)
    }

    /// The model's name, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PatientRoot => "Patient Root",
            Self::StudyRoot => "Study Root",
        }
    }
}

impl Level {
    /// The level of a (0008,0052) value, padding trimmed.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim_matches([' ', '\0']) {
            "PATIENT" => Some(Self::Patient),
            "STUDY" => Some(Self::Study),
            "SERIES" => Some(Self::Series),
            "IMAGE" => Some(Self::Image),
            _ => None,
        }
    }

    /// The (0008,0052) value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "PATIENT",
            Self::Study => "STUDY",
            Self::Series => "SERIES",
            Self::Image => "IMAGE",
        }
    }

    /// The level's unique key (the same in both models).
    pub const fn unique_key(self) -> Tag {
        match self {
            Self::Patient => tags::PATIENT_ID,
            Self::Study => tags::STUDY_INSTANCE_UID,
            Self::Series => tags::SERIES_INSTANCE_UID,
            Self::Image => tags::SOP_INSTANCE_UID,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table_is_sorted_and_unique() {
        for pair in KEYS.windows(2) {
            assert!(
                pair[0].tag < pair[1].tag,
                "{} then {}",
                pair[0].tag,
                pair[1].tag
            );
        }
        for definition in KEYS {
            assert!(!is_control_attribute(definition.tag));
        }
    }

    #[test]
    fn key_table_agrees_with_the_dictionary() {
        for definition in KEYS {
            let entry = dicom_dictionary_std::StandardDataDictionary
                .by_tag(dicom_core::Tag(definition.tag.0, definition.tag.1))
                .unwrap_or_else(|| panic!("{} not in the dictionary", definition.tag));
            assert_eq!(entry.alias(), definition.keyword, "{}", definition.tag);
            assert_eq!(
                entry.vr().relaxed().to_string().as_bytes(),
                &definition.vr.0,
                "{}",
                definition.keyword
            );
        }
    }

    #[test]
    fn each_level_has_its_unique_key_in_both_models() {
        for model in [InformationModel::PatientRoot, InformationModel::StudyRoot] {
            for &level in model.levels() {
                let unique = key_definition(level.unique_key()).unwrap();
                assert_eq!(unique.key_type(model), KeyType::Unique);
                assert_eq!(unique.level(model), level);
                let uniques = KEYS
                    .iter()
                    .filter(|d| d.level(model) == level && d.key_type(model) == KeyType::Unique)
                    .count();
                assert_eq!(uniques, 1, "{} {level}", model.name());
            }
        }
        // Study Root: Patient ID is a required study key, Patient's Name too.
        let patient_id = key_definition(tags::PATIENT_ID).unwrap();
        assert_eq!(patient_id.level(InformationModel::StudyRoot), Level::Study);
        assert_eq!(
            patient_id.key_type(InformationModel::StudyRoot),
            KeyType::Required
        );
    }

    #[test]
    fn vrs_and_keywords_come_from_the_table_then_the_dictionary() {
        assert_eq!(vr_of(tags::PATIENT_NAME), Some(Vr::PN));
        assert_eq!(vr_of(tags::QUERY_RETRIEVE_LEVEL), Some(Vr::CS));
        // Not in the table: Institution Name (0008,0080) LO.
        assert_eq!(vr_of(Tag(0x0008, 0x0080)), Some(Vr::LO));
        assert_eq!(keyword_of(Tag(0x0008, 0x0080)), "InstitutionName");
        assert_eq!(vr_of(Tag(0x0009, 0x0010)), Some(Vr::LO));
        assert_eq!(vr_of(Tag(0x0009, 0x1010)), None);
        assert_eq!(vr_of(Tag(0x0FFE, 0x0002)), None);
        assert_eq!(keyword_of(Tag(0x0FFE, 0x0002)), "?");
    }

    #[test]
    fn sop_classes_round_trip() {
        for model in [InformationModel::PatientRoot, InformationModel::StudyRoot] {
            for operation in [Operation::Find, Operation::Move, Operation::Get] {
                assert_eq!(
                    InformationModel::from_sop_class(model.sop_class(operation)),
                    Some((model, operation))
                );
            }
        }
        assert_eq!(InformationModel::from_sop_class(uid::VERIFICATION), None);
    }
}
