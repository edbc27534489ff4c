//! The C-STORE verdict: requirements §2's checks and their statuses A900,
//! C010, C011, C012 ([`StoreRejection`]), on the command's UIDs
//! ([`check_command`]) and on a scanned head ([`check_store`]).
//!
//! Some checks guard what Sluice cannot store without inventing or changing
//! data: a data set that does not parse, a missing Study or Series Instance
//! UID (the index keys every instance by them), a malformed UID, UIDs that
//! contradict the command. They always refuse. The others
//! ([`LenientCheck`]) guard what the seed refuses but a receiver may
//! choose to keep: under a lenient setting ([`Leniency`]) their finding is
//! returned as a warning and the checks go on. The defaults, and why, are
//! the engine's (docs/design/ingest.md, "Validation").

use super::{DatasetHead, Field, PixelDataLength, ScanError};
use crate::dimse::{tags, Status, Tag};
use crate::uid::{check_uid_tolerant, TransferSyntaxFacts, UidError};

/// A check a receiver may relax: refused under strict, a warning under
/// lenient ([`Leniency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LenientCheck {
    /// A UID (in the command or the data set) with a component that starts
    /// with a zero (`1.2.03`): not PS3.5 §9.1, common in the field (A900).
    UidLeadingZero,
    /// The data set lacks SOP Class UID or SOP Instance UID (or has them
    /// empty); the command carries both (A900).
    SopUidsMissing,
    /// An image class lacks what display needs: Rows, Columns, Bits
    /// Allocated, Samples per Pixel, Photometric Interpretation, a valid
    /// Number of Frames (A900), or Pixel Data (C010).
    ImagePixelModule,
    /// Pixel Data encapsulated under a native transfer syntax or the
    /// reverse, or encapsulated without a fragment (C012).
    PixelDataEncapsulation,
    /// Native Pixel Data longer than the image attributes imply (trailing
    /// bytes after the image) (C011).
    PixelDataTrailingBytes,
    /// Native Pixel Data shorter than the image attributes imply (C011).
    PixelDataShort,
    /// Bytes after the end of a deflated data set's stream, other than a
    /// pad byte or a gzip trailer (C010).
    DeflateTrailingBytes,
}

// `Leniency::ALL` sets one bit per check: the checks are numbered 0..N.
const _: () = assert!(LenientCheck::DeflateTrailingBytes as usize == LenientCheck::ALL.len() - 1);

impl LenientCheck {
    /// Every check, in the order of the validation table.
    pub const ALL: [LenientCheck; 7] = [
        LenientCheck::UidLeadingZero,
        LenientCheck::SopUidsMissing,
        LenientCheck::ImagePixelModule,
        LenientCheck::PixelDataEncapsulation,
        LenientCheck::PixelDataTrailingBytes,
        LenientCheck::PixelDataShort,
        LenientCheck::DeflateTrailingBytes,
    ];

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// Which [`LenientCheck`]s are lenient; the default is none (every check
/// refuses, as the seed does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Leniency(u16);

impl Leniency {
    /// Every check strict.
    pub const STRICT: Leniency = Leniency(0);

    /// Every check lenient: what start-up recovery applies to a sealed file
    /// it indexes again (the file was accepted under whatever setting ran
    /// then; the checks that always refuse still do).
    pub const ALL: Leniency = Leniency((1 << LenientCheck::ALL.len()) - 1);

    /// `self` with `check` lenient.
    #[must_use]
    pub const fn with(self, check: LenientCheck) -> Leniency {
        Leniency(self.0 | check.bit())
    }

    /// Whether `check` is lenient.
    pub const fn is_lenient(self, check: LenientCheck) -> bool {
        self.0 & check.bit() != 0
    }
}

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
    /// Which checks only warn.
    pub lenient: Leniency,
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
    /// A900: a UID (of the command or a mandatory one of the data set)
    /// that is not a UID: empty component, foreign character, more than 64
    /// characters.
    #[error("{tag} is not a valid UID: {error}")]
    InvalidUid {
        /// The element (group 0000 for the command's).
        tag: Tag,
        /// What is wrong.
        error: UidError,
    },
    /// A900 under a strict [`LenientCheck::UidLeadingZero`]: a UID with a
    /// component that starts with a zero.
    #[error("{tag} has a UID component with a leading zero at position {position}")]
    UidLeadingZero {
        /// The element (group 0000 for the command's).
        tag: Tag,
        /// Where the component starts.
        position: usize,
    },
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
    /// C010 under a strict [`LenientCheck::DeflateTrailingBytes`]: bytes
    /// after the end of a deflated data set's stream.
    #[error("{bytes} bytes follow the end of the deflated data set")]
    DeflateTrailingBytes {
        /// How many.
        bytes: u64,
    },
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
            Self::Unparseable(_) | Self::NoPixelData | Self::DeflateTrailingBytes { .. } => {
                Status::CANNOT_PARSE
            }
            Self::MissingAttribute(_)
            | Self::EmptyAttribute(_)
            | Self::InvalidUid { .. }
            | Self::UidLeadingZero { .. }
            | Self::InvalidAttribute { .. }
            | Self::SopClassMismatch { .. }
            | Self::SopInstanceMismatch { .. } => Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            Self::PixelDataUnreadable(_)
            | Self::PixelDataEncapsulationMismatch { .. }
            | Self::NoPixelDataFragments => Status::PIXEL_DATA_UNREADABLE,
            Self::PixelDataLengthMismatch { .. } => Status::PIXEL_DATA_LENGTH_MISMATCH,
        }
    }

    /// The check this finding belongs to, if a receiver may relax it;
    /// `None` for the findings that always refuse.
    pub fn check(&self) -> Option<LenientCheck> {
        let sop_uid =
            |tag: &Tag| *tag == Field::SopClassUid.tag() || *tag == Field::SopInstanceUid.tag();
        match self {
            Self::UidLeadingZero { .. } => Some(LenientCheck::UidLeadingZero),
            Self::MissingAttribute(tag) | Self::EmptyAttribute(tag) if sop_uid(tag) => {
                Some(LenientCheck::SopUidsMissing)
            }
            Self::MissingAttribute(tag) | Self::EmptyAttribute(tag) => {
                let study_or_series =
                    *tag == Field::StudyInstanceUid.tag() || *tag == Field::SeriesInstanceUid.tag();
                (!study_or_series).then_some(LenientCheck::ImagePixelModule)
            }
            Self::InvalidAttribute { tag, .. } if *tag == Field::NumberOfFrames.tag() => {
                Some(LenientCheck::ImagePixelModule)
            }
            Self::NoPixelData => Some(LenientCheck::ImagePixelModule),
            Self::PixelDataEncapsulationMismatch { .. } | Self::NoPixelDataFragments => {
                Some(LenientCheck::PixelDataEncapsulation)
            }
            Self::PixelDataLengthMismatch { expected, actual } if actual > expected => {
                Some(LenientCheck::PixelDataTrailingBytes)
            }
            Self::PixelDataLengthMismatch { .. } => Some(LenientCheck::PixelDataShort),
            Self::DeflateTrailingBytes { .. } => Some(LenientCheck::DeflateTrailingBytes),
            Self::Unparseable(_)
            | Self::InvalidUid { .. }
            | Self::InvalidAttribute { .. }
            | Self::SopClassMismatch { .. }
            | Self::SopInstanceMismatch { .. }
            | Self::PixelDataUnreadable(_) => None,
        }
    }
}

/// The findings of a check that passed: warnings, each the refusal it
/// would have been under a strict setting.
pub type StoreWarnings = Vec<StoreRejection>;

/// Collects findings: a lenient one becomes a warning, a strict one is the
/// refusal.
struct Findings {
    lenient: Leniency,
    warnings: StoreWarnings,
}

impl Findings {
    fn new(lenient: Leniency) -> Self {
        Findings {
            lenient,
            warnings: Vec::new(),
        }
    }

    /// `Ok(())` when `finding` is only a warning (kept), else the refusal.
    fn found(&mut self, finding: StoreRejection) -> Result<(), StoreRejection> {
        match finding.check() {
            Some(check) if self.lenient.is_lenient(check) => {
                self.warnings.push(finding);
                Ok(())
            }
            _ => Err(finding),
        }
    }

    /// Checks the syntax of a UID value: malformed refuses; a leading zero
    /// is a finding.
    fn uid(&mut self, tag: Tag, value: &[u8]) -> Result<(), StoreRejection> {
        let checked =
            check_uid_tolerant(value).map_err(|error| StoreRejection::InvalidUid { tag, error })?;
        match checked.leading_zero {
            Some(position) => self.found(StoreRejection::UidLeadingZero { tag, position }),
            None => Ok(()),
        }
    }
}

/// The checks on the C-STORE-RQ's own UIDs (Affected SOP Class UID and
/// Affected SOP Instance UID), made before its data set is read, so a
/// malformed one is refused (A900) without storing anything, and the same
/// UID rules hold for the command as for the data set ([`check_store`]).
/// The data set's SOP Class and SOP Instance UIDs must equal these, so
/// [`check_store`] does not check their syntax again.
pub fn check_command(check: &StoreCheck<'_>) -> Result<StoreWarnings, StoreRejection> {
    let mut findings = Findings::new(check.lenient);
    findings.uid(
        tags::AFFECTED_SOP_CLASS_UID,
        check.affected_sop_class_uid.as_bytes(),
    )?;
    findings.uid(
        tags::AFFECTED_SOP_INSTANCE_UID,
        check.affected_sop_instance_uid.as_bytes(),
    )?;
    Ok(findings.warnings)
}

/// The C-STORE data-set checks of requirements §2 (seed table 2.3.2-7), in
/// this order: structure (C010, or C012 when the break is inside the pixel
/// data), mandatory UIDs present and non-empty (A900; SOP Class and SOP
/// Instance UID under [`LenientCheck::SopUidsMissing`]) and matching the
/// command (A900), Study and Series Instance UIDs well formed (A900; a
/// leading zero under [`LenientCheck::UidLeadingZero`]), for image classes
/// the image attributes (A900) and Pixel Data present (C010), encapsulation
/// consistent with the transfer syntax and at least one fragment (C012),
/// and for native pixel data the length: Rows × Columns × Samples per Pixel
/// (2 for YBR_FULL_422/YBR_PARTIAL_422) × Number of Frames × Bits Allocated
/// / 8, rounded up, plus at most one pad byte (C011). A finding of a check
/// that `check.lenient` relaxes is returned among the warnings and the
/// checks go on (those that need what it lacks are skipped).
pub fn check_store(
    head: &DatasetHead,
    check: &StoreCheck<'_>,
) -> Result<StoreWarnings, StoreRejection> {
    if let Err(error) = head.end {
        return Err(if error.in_pixel_data() {
            StoreRejection::PixelDataUnreadable(error)
        } else {
            StoreRejection::Unparseable(error)
        });
    }
    let mut findings = Findings::new(check.lenient);
    if head.trailing_bytes > 0 {
        findings.found(StoreRejection::DeflateTrailingBytes {
            bytes: head.trailing_bytes,
        })?;
    }
    for (field, command) in [
        (Field::SopClassUid, check.affected_sop_class_uid),
        (Field::SopInstanceUid, check.affected_sop_instance_uid),
    ] {
        // Absent or empty: the command's UID stands (when lenient).
        if let Err(finding) = required_text(head, field) {
            findings.found(finding)?;
            continue;
        }
        let dataset = head.uid(field).unwrap_or_default();
        let command = trim_uid(command);
        if dataset != command {
            let (command, dataset) = (command.to_owned(), dataset.to_owned());
            return Err(if field == Field::SopClassUid {
                StoreRejection::SopClassMismatch { command, dataset }
            } else {
                StoreRejection::SopInstanceMismatch { command, dataset }
            });
        }
    }
    for field in [Field::StudyInstanceUid, Field::SeriesInstanceUid] {
        required_text(head, field)?;
        findings.uid(field.tag(), head.text(field).unwrap_or_default())?;
    }
    if check.image_class {
        image_pixel_module(head, check, &mut findings)?;
    }
    Ok(findings.warnings)
}

/// The image checks of an image class: the attributes and Pixel Data
/// present, then, when they are, the pixel data's encapsulation and length.
fn image_pixel_module(
    head: &DatasetHead,
    check: &StoreCheck<'_>,
    findings: &mut Findings,
) -> Result<(), StoreRejection> {
    let rows = present_us(head, Field::Rows, findings)?;
    let columns = present_us(head, Field::Columns, findings)?;
    let bits_allocated = present_us(head, Field::BitsAllocated, findings)?;
    let samples_per_pixel = present_us(head, Field::SamplesPerPixel, findings)?;
    let photometric = match required_text(head, Field::PhotometricInterpretation) {
        Ok(()) => Some(()),
        Err(finding) => findings.found(finding).map(|()| None)?,
    };
    let frames = match head.number_of_frames() {
        Some(frames) => Some(frames),
        None => findings
            .found(StoreRejection::InvalidAttribute {
                tag: Field::NumberOfFrames.tag(),
                reason: "Number of Frames is not a positive integer",
            })
            .map(|()| None)?,
    };
    let Some(pixel_data) = head.pixel_data else {
        return findings.found(StoreRejection::NoPixelData);
    };
    match pixel_data.length {
        PixelDataLength::Undefined => {
            if !check.transfer_syntax.encapsulated {
                return findings
                    .found(StoreRejection::PixelDataEncapsulationMismatch { encapsulated: true });
            }
            // The first item is the Basic Offset Table; a frame needs another.
            if pixel_data.items < 2 {
                return findings.found(StoreRejection::NoPixelDataFragments);
            }
            Ok(())
        }
        PixelDataLength::Defined(actual) => {
            if check.transfer_syntax.encapsulated {
                return findings.found(StoreRejection::PixelDataEncapsulationMismatch {
                    encapsulated: false,
                });
            }
            let (
                Some(rows),
                Some(columns),
                Some(bits_allocated),
                Some(samples_per_pixel),
                Some(()),
                Some(frames),
            ) = (
                rows,
                columns,
                bits_allocated,
                samples_per_pixel,
                photometric,
                frames,
            )
            else {
                // Without the attributes the length cannot be computed.
                return Ok(());
            };
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
                findings.found(StoreRejection::PixelDataLengthMismatch { expected, actual })
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

/// A required US of the image module: `Some` when present and non-zero,
/// `None` when its finding was only a warning.
fn present_us(
    head: &DatasetHead,
    field: Field,
    findings: &mut Findings,
) -> Result<Option<u16>, StoreRejection> {
    match required_us(head, field) {
        Ok(value) => Ok(Some(value)),
        Err(finding) => findings.found(finding).map(|()| None),
    }
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
