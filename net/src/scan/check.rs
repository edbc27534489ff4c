//! The C-STORE verdict on a scanned head ([`check_store`]): requirements §2's
//! checks and their statuses A900, C010, C011, C012 ([`StoreRejection`]).

use super::{DatasetHead, Field, PixelDataLength, ScanError};
use crate::dimse::{Status, Tag};
use crate::uid::TransferSyntaxFacts;

/// What [`check_store`] compares the data set with.
#[derive(Debug, Clone, Copy)]
pub struct StoreCheck<'a> {
    /// Affected SOP Class UID of the C-STORE-RQ.
    pub affected_sop_class_uid: &'a str,
    /// Affected SOP Instance UID of the C-STORE-RQ.
    pub affected_sop_instance_uid: &'a str,
    /// Facts of the presentation context's transfer syntax.
    pub transfer_syntax: TransferSyntaxFacts,
    /// Whether the SOP class is an image class ([`crate::uid::is_image_sop_class`]).
    pub image_class: bool,
}

/// Why a C-STORE data set is refused, with its status ([`StoreRejection::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreRejection {
    /// C010: the data set cannot be parsed into elements (bad structure,
    /// truncated).
    #[error("data set cannot be parsed: {0}")]
    Unparseable(ScanError),
    /// A900: a mandatory attribute is absent.
    #[error("mandatory attribute {0} is missing")]
    MissingAttribute(Tag),
    /// A900: a mandatory attribute is empty (or zero, for Rows/Columns...).
    #[error("mandatory attribute {0} is empty")]
    EmptyAttribute(Tag),
    /// A900: a mandatory attribute has a value that cannot be used.
    #[error("attribute {tag} has an invalid value: {reason}")]
    InvalidAttribute {
        /// The attribute.
        tag: Tag,
        /// What is wrong.
        reason: &'static str,
    },
    /// A900: the data set's SOP Class UID differs from the command's.
    #[error("SOP Class UID {dataset} differs from the command's {command}")]
    SopClassMismatch {
        /// From the C-STORE-RQ.
        command: String,
        /// From the data set.
        dataset: String,
    },
    /// A900: the data set's SOP Instance UID differs from the command's.
    #[error("SOP Instance UID {dataset} differs from the command's {command}")]
    SopInstanceMismatch {
        /// From the C-STORE-RQ.
        command: String,
        /// From the data set.
        dataset: String,
    },
    /// C010: an image class without Pixel Data (7FE0,0010).
    #[error("image SOP class without Pixel Data")]
    NoPixelData,
    /// C012: encapsulated pixel data whose fragment structure is broken.
    #[error("pixel data cannot be read: {0}")]
    PixelDataUnreadable(ScanError),
    /// C012: native pixel data under an encapsulated transfer syntax, or the reverse.
    #[error("pixel data is {} but the transfer syntax is {}", if *encapsulated { "encapsulated" } else { "native" }, if *encapsulated { "native" } else { "encapsulated" })]
    PixelDataEncapsulationMismatch {
        /// Whether the pixel data is encapsulated.
        encapsulated: bool,
    },
    /// C012: encapsulated pixel data without any fragment after the Basic
    /// Offset Table.
    #[error("encapsulated pixel data has no fragments")]
    NoPixelDataFragments,
    /// C011: native pixel data whose length differs from what Rows, Columns,
    /// Samples per Pixel, Bits Allocated and Number of Frames imply.
    #[error("pixel data is {actual} bytes, the image attributes imply {expected}")]
    PixelDataLengthMismatch {
        /// Implied length (before even padding).
        expected: u64,
        /// Actual value length.
        actual: u64,
    },
}

impl StoreRejection {
    /// The C-STORE-RSP status of this rejection (seed table 2.3.2-7).
    pub const fn status(&self) -> Status {
        match self {
            Self::Unparseable(_) | Self::NoPixelData => Status::CANNOT_PARSE,
            Self::MissingAttribute(_)
            | Self::EmptyAttribute(_)
            | Self::InvalidAttribute { .. }
            | Self::SopClassMismatch { .. }
            | Self::SopInstanceMismatch { .. } => Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            Self::PixelDataUnreadable(_)
            | Self::PixelDataEncapsulationMismatch { .. }
            | Self::NoPixelDataFragments => Status::PIXEL_DATA_UNREADABLE,
            Self::PixelDataLengthMismatch { .. } => Status::PIXEL_DATA_LENGTH_MISMATCH,
        }
    }
}

/// The C-STORE data-set checks of requirements §2 (seed table 2.3.2-7), in
/// this order: structure (C010, or C012 when the break is inside the pixel
/// data), mandatory UIDs present, non-empty and matching the command (A900),
/// for image classes the image attributes (A900), Pixel Data present (C010),
/// encapsulation consistent with the transfer syntax and at least one fragment
/// (C012), and for native pixel data the length: Rows × Columns × Samples per
/// Pixel (2 for YBR_FULL_422/YBR_PARTIAL_422) × Number of Frames × Bits
/// Allocated / 8, rounded up, plus at most one pad byte (C011).
pub fn check_store(head: &DatasetHead, check: &StoreCheck<'_>) -> Result<(), StoreRejection> {
    if let Err(error) = head.end {
        return Err(if error.in_pixel_data() {
            StoreRejection::PixelDataUnreadable(error)
        } else {
            StoreRejection::Unparseable(error)
        });
    }
    for field in [
        Field::SopClassUid,
        Field::SopInstanceUid,
        Field::StudyInstanceUid,
        Field::SeriesInstanceUid,
    ] {
        required_text(head, field)?;
    }
    let dataset_class = head.sop_class_uid().unwrap_or_default();
    let command_class = trim_uid(check.affected_sop_class_uid);
    if dataset_class != command_class {
        return Err(StoreRejection::SopClassMismatch {
            command: command_class.to_owned(),
            dataset: dataset_class.to_owned(),
        });
    }
    let dataset_instance = head.sop_instance_uid().unwrap_or_default();
    let command_instance = trim_uid(check.affected_sop_instance_uid);
    if dataset_instance != command_instance {
        return Err(StoreRejection::SopInstanceMismatch {
            command: command_instance.to_owned(),
            dataset: dataset_instance.to_owned(),
        });
    }
    if !check.image_class {
        return Ok(());
    }
    let rows = required_us(head, Field::Rows)?;
    let columns = required_us(head, Field::Columns)?;
    let bits_allocated = required_us(head, Field::BitsAllocated)?;
    let samples_per_pixel = required_us(head, Field::SamplesPerPixel)?;
    required_text(head, Field::PhotometricInterpretation)?;
    let frames = head
        .number_of_frames()
        .ok_or(StoreRejection::InvalidAttribute {
            tag: Field::NumberOfFrames.tag(),
            reason: "Number of Frames is not a positive integer",
        })?;
    let Some(pixel_data) = head.pixel_data else {
        return Err(StoreRejection::NoPixelData);
    };
    match pixel_data.length {
        PixelDataLength::Undefined => {
            if !check.transfer_syntax.encapsulated {
                return Err(StoreRejection::PixelDataEncapsulationMismatch { encapsulated: true });
            }
            // The first item is the Basic Offset Table; a frame needs another.
            if pixel_data.items < 2 {
                return Err(StoreRejection::NoPixelDataFragments);
            }
            Ok(())
        }
        PixelDataLength::Defined(actual) => {
            if check.transfer_syntax.encapsulated {
                return Err(StoreRejection::PixelDataEncapsulationMismatch {
                    encapsulated: false,
                });
            }
            let photometric = head
                .text(Field::PhotometricInterpretation)
                .unwrap_or_default();
            let subsampled = photometric.starts_with(b"YBR_FULL_422")
                || photometric.starts_with(b"YBR_PARTIAL_422");
            let samples = if subsampled && samples_per_pixel == 3 {
                2
            } else {
                u64::from(samples_per_pixel)
            };
            let bits = u128::from(rows)
                * u128::from(columns)
                * u128::from(samples)
                * u128::from(frames)
                * u128::from(bits_allocated);
            let expected = u64::try_from(bits.div_ceil(8)).unwrap_or(u64::MAX);
            let actual = u64::from(actual);
            let padded = expected % 2 == 1 && actual == expected.saturating_add(1);
            if actual == expected || padded {
                Ok(())
            } else {
                Err(StoreRejection::PixelDataLengthMismatch { expected, actual })
            }
        }
    }
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

fn required_text(head: &DatasetHead, field: Field) -> Result<(), StoreRejection> {
    if !head.is_present(field) {
        return Err(StoreRejection::MissingAttribute(field.tag()));
    }
    if head.text(field).is_none_or(<[u8]>::is_empty) {
        return Err(StoreRejection::EmptyAttribute(field.tag()));
    }
    Ok(())
}

fn required_us(head: &DatasetHead, field: Field) -> Result<u16, StoreRejection> {
    if !head.is_present(field) {
        return Err(StoreRejection::MissingAttribute(field.tag()));
    }
    match head.us(field) {
        None | Some(0) => Err(StoreRejection::EmptyAttribute(field.tag())),
        Some(value) => Ok(value),
    }
}
