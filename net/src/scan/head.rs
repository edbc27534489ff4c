//! What a scan found in one data set ([`DatasetHead`]): the captured values,
//! decoded on demand in the data set's character set and byte order, and
//! where the top-level Pixel Data is ([`PixelData`]).

use std::borrow::Cow;

use super::field::FIELD_COUNT;
use super::{DatasetEncoding, Field, ScanError};
use crate::charset::SpecificCharacterSet;

/// The length of the Pixel Data value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelDataLength {
    /// Native: the value length in bytes.
    Defined(u32),
    /// Encapsulated: undefined length, fragments in items.
    Undefined,
}

/// Where the top-level Pixel Data (7FE0,0010) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelData {
    /// Offset of the first value byte (after the element header) within the
    /// data set.
    pub value_offset: u64,
    /// Its length, or undefined (encapsulated).
    pub length: PixelDataLength,
    /// The VR in Explicit VR encodings (OB or OW normally).
    pub vr: Option<[u8; 2]>,
    /// Encapsulated only: items seen, the Basic Offset Table included.
    pub items: u32,
    /// Encapsulated only: offset just after the sequence delimitation item,
    /// once seen.
    pub end_offset: Option<u64>,
}

/// Where one captured value is in the arena (written by the scanner).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Slot {
    pub(super) start: u32,
    pub(super) length: u32,
    pub(super) present: bool,
    pub(super) cut: bool,
}

/// What the scanner found in one data set.
#[derive(Debug, Clone)]
pub struct DatasetHead {
    pub(super) encoding: DatasetEncoding,
    pub(super) slots: [Slot; FIELD_COUNT],
    pub(super) arena: Vec<u8>,
    /// The top-level Pixel Data, if any.
    pub pixel_data: Option<PixelData>,
    /// Bytes scanned (the data set's length when complete).
    pub length: u64,
    /// `Ok` when the data set ended cleanly on an element boundary, else the
    /// structure error or the truncation.
    pub end: Result<(), ScanError>,
    /// Deflated data sets only: bytes received after the end of the deflate
    /// stream, other than PS3.5 A.5's one zero pad byte or a gzip trailer
    /// (see [`super::deflated`]). Not part of the data set; stored as
    /// received.
    pub trailing_bytes: u64,
}

impl DatasetHead {
    /// The encoding scanned.
    pub const fn encoding(&self) -> DatasetEncoding {
        self.encoding
    }

    /// Whether the element was present at the top level (even if empty).
    pub fn is_present(&self, field: Field) -> bool {
        self.slots
            .get(field as usize)
            .is_some_and(|slot| slot.present)
    }

    /// Whether the value was longer than the capture cap and was cut.
    pub fn is_cut(&self, field: Field) -> bool {
        self.slots.get(field as usize).is_some_and(|slot| slot.cut)
    }

    /// The value bytes as received (padding included, cut at the cap).
    pub fn raw(&self, field: Field) -> Option<&[u8]> {
        let slot = self.slots.get(field as usize).filter(|slot| slot.present)?;
        let start = usize::try_from(slot.start).ok()?;
        let end = start.checked_add(usize::try_from(slot.length).ok()?)?;
        self.arena.get(start..end)
    }

    /// A string value without its padding (trailing spaces and NULs, leading
    /// spaces): the bytes to decode with [`charset`](Self::charset).
    pub fn text(&self, field: Field) -> Option<&[u8]> {
        self.raw(field).map(trim_padding)
    }

    /// A UID value without padding, if it is ASCII.
    pub fn uid(&self, field: Field) -> Option<&str> {
        self.text(field)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    /// The Specific Character Set of the data set (lenient: unknown terms ignored).
    pub fn charset(&self) -> SpecificCharacterSet {
        self.raw(Field::SpecificCharacterSet)
            .map(SpecificCharacterSet::parse_lenient)
            .unwrap_or_default()
    }

    /// A text value decoded with the data set's character set.
    pub fn decoded(&self, field: Field) -> Option<Cow<'_, str>> {
        let bytes = self.text(field)?;
        let charset = self.charset();
        Some(if field.is_person_name() {
            charset.decode_person_name(bytes)
        } else {
            charset.decode(bytes)
        })
    }

    /// A US value (first value) in the data set's byte order; `None` if absent
    /// or not 2 bytes long.
    pub fn us(&self, field: Field) -> Option<u16> {
        match self.raw(field)? {
            [b0, b1, ..] => Some(if self.encoding.big_endian() {
                u16::from_be_bytes([*b0, *b1])
            } else {
                u16::from_le_bytes([*b0, *b1])
            }),
            _ => None,
        }
    }

    /// An IS value (first value) as an integer; `Some(None)` if present but
    /// not an integer.
    pub fn integer_string(&self, field: Field) -> Option<Option<i64>> {
        let text = self.text(field)?;
        let first = text.split(|byte| *byte == b'\\').next().unwrap_or_default();
        let first = std::str::from_utf8(trim_padding(first)).ok();
        Some(first.and_then(|text| text.trim_start_matches('+').parse::<i64>().ok()))
    }

    /// SOP Class UID.
    pub fn sop_class_uid(&self) -> Option<&str> {
        self.uid(Field::SopClassUid)
    }

    /// SOP Instance UID.
    pub fn sop_instance_uid(&self) -> Option<&str> {
        self.uid(Field::SopInstanceUid)
    }

    /// Study Instance UID.
    pub fn study_instance_uid(&self) -> Option<&str> {
        self.uid(Field::StudyInstanceUid)
    }

    /// Series Instance UID.
    pub fn series_instance_uid(&self) -> Option<&str> {
        self.uid(Field::SeriesInstanceUid)
    }

    /// Rows.
    pub fn rows(&self) -> Option<u16> {
        self.us(Field::Rows)
    }

    /// Columns.
    pub fn columns(&self) -> Option<u16> {
        self.us(Field::Columns)
    }

    /// Bits Allocated.
    pub fn bits_allocated(&self) -> Option<u16> {
        self.us(Field::BitsAllocated)
    }

    /// Samples per Pixel.
    pub fn samples_per_pixel(&self) -> Option<u16> {
        self.us(Field::SamplesPerPixel)
    }

    /// Number of Frames (1 when absent); `None` when present but not a
    /// positive integer.
    pub fn number_of_frames(&self) -> Option<u64> {
        match self.integer_string(Field::NumberOfFrames) {
            None => Some(1),
            Some(Some(frames)) if frames > 0 => u64::try_from(frames).ok(),
            Some(_) => None,
        }
    }
}

fn trim_padding(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|byte| *byte != b' ' && *byte != 0)
        .map_or(0, |last| last.saturating_add(1));
    let bytes = bytes.get(..end).unwrap_or_default();
    let start = bytes
        .iter()
        .position(|byte| *byte != b' ')
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}
