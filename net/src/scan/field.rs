//! The top-level attributes whose values the scanner keeps ([`Field`]):
//! the UIDs, the index's study and patient keys, the image facts.

use crate::dimse::Tag;

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident = ($group:literal, $element:literal),)*) => {
        /// The top-level attributes whose values the scanner keeps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Field {
            $($(#[$doc])* $name,)*
        }

        impl Field {
            /// Every field, in tag order.
            pub const ALL: &'static [Field] = &[$(Field::$name,)*];

            /// The attribute's tag.
            pub const fn tag(self) -> Tag {
                match self {
                    $(Field::$name => Tag($group, $element),)*
                }
            }

        }
    };
}

fields! {
    /// Specific Character Set (0008,0005), CS.
    SpecificCharacterSet = (0x0008, 0x0005),
    /// SOP Class UID (0008,0016), UI.
    SopClassUid = (0x0008, 0x0016),
    /// SOP Instance UID (0008,0018), UI.
    SopInstanceUid = (0x0008, 0x0018),
    /// Study Date (0008,0020), DA.
    StudyDate = (0x0008, 0x0020),
    /// Study Time (0008,0030), TM.
    StudyTime = (0x0008, 0x0030),
    /// Accession Number (0008,0050), SH.
    AccessionNumber = (0x0008, 0x0050),
    /// Modality (0008,0060), CS.
    Modality = (0x0008, 0x0060),
    /// Referring Physician's Name (0008,0090), PN.
    ReferringPhysicianName = (0x0008, 0x0090),
    /// Study Description (0008,1030), LO.
    StudyDescription = (0x0008, 0x1030),
    /// Series Description (0008,103E), LO.
    SeriesDescription = (0x0008, 0x103E),
    /// Patient's Name (0010,0010), PN.
    PatientName = (0x0010, 0x0010),
    /// Patient ID (0010,0020), LO.
    PatientId = (0x0010, 0x0020),
    /// Patient's Birth Date (0010,0030), DA.
    PatientBirthDate = (0x0010, 0x0030),
    /// Patient's Birth Time (0010,0032), TM.
    PatientBirthTime = (0x0010, 0x0032),
    /// Patient's Sex (0010,0040), CS.
    PatientSex = (0x0010, 0x0040),
    /// Patient's Age (0010,1010), AS.
    PatientAge = (0x0010, 0x1010),
    /// Patient's Size (0010,1020), DS.
    PatientSize = (0x0010, 0x1020),
    /// Patient's Weight (0010,1030), DS.
    PatientWeight = (0x0010, 0x1030),
    /// Study Instance UID (0020,000D), UI.
    StudyInstanceUid = (0x0020, 0x000D),
    /// Series Instance UID (0020,000E), UI.
    SeriesInstanceUid = (0x0020, 0x000E),
    /// Study ID (0020,0010), SH.
    StudyId = (0x0020, 0x0010),
    /// Series Number (0020,0011), IS.
    SeriesNumber = (0x0020, 0x0011),
    /// Instance Number (0020,0013), IS.
    InstanceNumber = (0x0020, 0x0013),
    /// Samples per Pixel (0028,0002), US.
    SamplesPerPixel = (0x0028, 0x0002),
    /// Photometric Interpretation (0028,0004), CS.
    PhotometricInterpretation = (0x0028, 0x0004),
    /// Number of Frames (0028,0008), IS.
    NumberOfFrames = (0x0028, 0x0008),
    /// Rows (0028,0010), US.
    Rows = (0x0028, 0x0010),
    /// Columns (0028,0011), US.
    Columns = (0x0028, 0x0011),
    /// Bits Allocated (0028,0100), US.
    BitsAllocated = (0x0028, 0x0100),
    /// Bits Stored (0028,0101), US.
    BitsStored = (0x0028, 0x0101),
    /// High Bit (0028,0102), US.
    HighBit = (0x0028, 0x0102),
    /// Pixel Representation (0028,0103), US.
    PixelRepresentation = (0x0028, 0x0103),
}

pub(super) const FIELD_COUNT: usize = Field::ALL.len();

impl Field {
    /// The field of a top-level tag (literal patterns: a jump table, not a search).
    #[inline]
    pub(super) fn from_tag(tag: u32) -> Option<Self> {
        // Most elements of a header are in other groups: one test rejects them.
        if !matches!(tag >> 16, 0x0008 | 0x0010 | 0x0020 | 0x0028) {
            return None;
        }
        match tag {
            0x0008_0005 => Some(Self::SpecificCharacterSet),
            0x0008_0016 => Some(Self::SopClassUid),
            0x0008_0018 => Some(Self::SopInstanceUid),
            0x0008_0020 => Some(Self::StudyDate),
            0x0008_0030 => Some(Self::StudyTime),
            0x0008_0050 => Some(Self::AccessionNumber),
            0x0008_0060 => Some(Self::Modality),
            0x0008_0090 => Some(Self::ReferringPhysicianName),
            0x0008_1030 => Some(Self::StudyDescription),
            0x0008_103E => Some(Self::SeriesDescription),
            0x0010_0010 => Some(Self::PatientName),
            0x0010_0020 => Some(Self::PatientId),
            0x0010_0030 => Some(Self::PatientBirthDate),
            0x0010_0032 => Some(Self::PatientBirthTime),
            0x0010_0040 => Some(Self::PatientSex),
            0x0010_1010 => Some(Self::PatientAge),
            0x0010_1020 => Some(Self::PatientSize),
            0x0010_1030 => Some(Self::PatientWeight),
            0x0020_000D => Some(Self::StudyInstanceUid),
            0x0020_000E => Some(Self::SeriesInstanceUid),
            0x0020_0010 => Some(Self::StudyId),
            0x0020_0011 => Some(Self::SeriesNumber),
            0x0020_0013 => Some(Self::InstanceNumber),
            0x0028_0002 => Some(Self::SamplesPerPixel),
            0x0028_0004 => Some(Self::PhotometricInterpretation),
            0x0028_0008 => Some(Self::NumberOfFrames),
            0x0028_0010 => Some(Self::Rows),
            0x0028_0011 => Some(Self::Columns),
            0x0028_0100 => Some(Self::BitsAllocated),
            0x0028_0101 => Some(Self::BitsStored),
            0x0028_0102 => Some(Self::HighBit),
            0x0028_0103 => Some(Self::PixelRepresentation),
            _ => None,
        }
    }

    /// Whether the value is a Person Name (decoded with `^`/`=` resets).
    pub const fn is_person_name(self) -> bool {
        matches!(self, Self::PatientName | Self::ReferringPhysicianName)
    }
}
