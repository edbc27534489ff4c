//! The data-set head scanner.
//!
//! Owns finding, in the bytes of one data set as they arrive (C-STORE data
//! PDVs, split anywhere, even inside an element header), the facts the engine
//! needs before it answers a C-STORE: the UID triplet and SOP class, the
//! study-level keys of the index, the image geometry, and where Pixel Data
//! starts and how long it is; and the check that turns those facts into the
//! seed's statuses A900, C010, C011 and C012 ([`check_store`]).
//!
//! Bounded and allocation-light by construction: a 12-byte carry buffer for a
//! split header, a fixed stack of open sequences ([`ScanLimits::depth_max`]),
//! and one small arena for the values of the [`Field`]s of interest, each cut
//! at [`ScanLimits::value_capture_max`]. Every other value, private elements
//! and pixel data included, is skipped by length without being looked at.
//! Defined-length sequences are skipped whole; undefined-length sequences and
//! items are walked header by header (nested, with delimitation items);
//! encapsulated pixel data is walked item header by item header to find its
//! end, never decoded. After pixel data the scanner keeps following element
//! boundaries to the end, so [`HeadScanner::finish`] can tell whether the data
//! set ended cleanly on an element boundary.
//!
//! A deflated transfer syntax cannot be scanned without inflating the stream:
//! [`DatasetEncoding::from_transfer_syntax`] says so with
//! [`NotScannable::Deflated`]; [`DatasetScanner`] (module `deflated`)
//! inflates through a small window into a [`HeadScanner`] and is what the
//! engine uses for every transfer syntax.

use std::borrow::Cow;

use crate::charset::SpecificCharacterSet;
use crate::dimse::{Status, Tag};
use crate::uid::{ByteOrder, TransferSyntaxFacts};

/// How the data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetEncoding {
    /// Implicit VR Little Endian.
    ImplicitVrLittleEndian,
    /// Explicit VR Little Endian (and every encapsulated syntax).
    ExplicitVrLittleEndian,
    /// Explicit VR Big Endian (retired).
    ExplicitVrBigEndian,
}

/// Why a data set cannot be head-scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum NotScannable {
    /// The data set is deflated: it must be inflated before anything in it
    /// can be found. The engine decides (store without the head checks, or
    /// inflate first).
    #[error("deflated transfer syntax: the data set must be inflated before it can be scanned")]
    Deflated,
    /// The transfer syntax is not in the catalogue, so its encoding is unknown.
    #[error("unknown transfer syntax")]
    UnknownTransferSyntax,
}

impl DatasetEncoding {
    /// The encoding of a transfer syntax with these facts.
    pub fn from_facts(facts: TransferSyntaxFacts) -> Result<Self, NotScannable> {
        if facts.deflated {
            return Err(NotScannable::Deflated);
        }
        Ok(match (facts.explicit_vr, facts.byte_order) {
            (false, _) => Self::ImplicitVrLittleEndian,
            (true, ByteOrder::Little) => Self::ExplicitVrLittleEndian,
            (true, ByteOrder::Big) => Self::ExplicitVrBigEndian,
        })
    }

    /// The encoding of a catalogued transfer syntax UID.
    pub fn from_transfer_syntax(uid: &str) -> Result<Self, NotScannable> {
        let syntax = crate::uid::transfer_syntax(uid).ok_or(NotScannable::UnknownTransferSyntax)?;
        Self::from_facts(syntax.facts)
    }

    const fn explicit(self) -> bool {
        !matches!(self, Self::ImplicitVrLittleEndian)
    }

    const fn big_endian(self) -> bool {
        matches!(self, Self::ExplicitVrBigEndian)
    }
}

/// Bounds on the scanner's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Bytes kept of each value of interest; longer values are cut (and
    /// flagged, see [`DatasetHead::is_cut`]).
    pub value_capture_max: usize,
    /// Deepest nesting of undefined-length sequences/items (at most
    /// [`SCAN_DEPTH_MAX`]).
    pub depth_max: usize,
}

/// Hard cap on [`ScanLimits::depth_max`]: the frame stack is a fixed array.
pub const SCAN_DEPTH_MAX: usize = 64;

impl Default for ScanLimits {
    /// 1 KiB per value (a PN of three 64-character groups with ISO 2022
    /// escapes fits), depth 32.
    fn default() -> Self {
        Self {
            value_capture_max: 1024,
            depth_max: 32,
        }
    }
}

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

const FIELD_COUNT: usize = Field::ALL.len();

impl Field {
    /// The field of a top-level tag (literal patterns: a jump table, not a search).
    #[inline]
    fn from_tag(tag: u32) -> Option<Self> {
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

/// Where the data set ended before it was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TruncatedIn {
    /// Inside an element header.
    Header,
    /// Inside the value of the element with this tag.
    Value(Tag),
    /// Inside an undefined-length sequence or item (no delimiter seen).
    Sequence,
    /// Inside encapsulated pixel data (no sequence delimiter seen).
    PixelData,
    /// A deflated data set whose stream did not reach its final block.
    Deflate,
}

/// Why a data set cannot be parsed into elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An Explicit VR header whose VR is not two uppercase letters.
    #[error(
        "element {tag} at offset {offset} has invalid VR {:?}",
        String::from_utf8_lossy(vr)
    )]
    InvalidVr {
        /// Offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
        /// The two VR bytes.
        vr: [u8; 2],
    },
    /// An undefined length on an element that cannot have one.
    #[error("element {tag} at offset {offset} has an undefined length it cannot have")]
    UndefinedLength {
        /// Offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// A delimitation item where none belongs, or a non-zero delimiter length.
    #[error("unexpected delimiter {tag} at offset {offset}")]
    UnexpectedDelimiter {
        /// Offset.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// Something other than an item inside an undefined-length sequence.
    #[error("expected an item in a sequence at offset {offset}, found {tag}")]
    ExpectedItem {
        /// Offset.
        offset: u64,
        /// Tag found.
        tag: Tag,
    },
    /// Sequences nested deeper than [`ScanLimits::depth_max`].
    #[error("sequences nested deeper than {limit} at offset {offset}")]
    TooDeep {
        /// Offset.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// Encapsulated pixel data whose fragment structure is broken (an
    /// element other than an item or the sequence delimiter, or an item of
    /// undefined length).
    #[error("encapsulated pixel data is malformed at offset {offset} ({tag})")]
    PixelDataFragments {
        /// Offset.
        offset: u64,
        /// Tag found.
        tag: Tag,
    },
    /// A deflated data set whose stream cannot be inflated (corrupt, a
    /// preset dictionary, bytes after its end, or beyond the inflation
    /// bound of [`deflated::INFLATED_PER_RECEIVED_MAX`]).
    #[error("deflated data set cannot be inflated (after {offset} inflated bytes)")]
    Inflate {
        /// Inflated bytes produced before the failure.
        offset: u64,
    },
    /// The data set ended before its last element, sequence or pixel data did.
    #[error("data set truncated at offset {offset} ({inside:?})")]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// Where it was cut.
        inside: TruncatedIn,
    },
}

impl ScanError {
    /// Whether the error lies in the top-level Pixel Data (C012 rather than C010).
    pub const fn in_pixel_data(&self) -> bool {
        matches!(self, Self::PixelDataFragments { .. })
    }
}

const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_DELIMITATION: u32 = 0xFFFE_E00D;
const SEQUENCE_DELIMITATION: u32 = 0xFFFE_E0DD;
const PIXEL_DATA: u32 = 0x7FE0_0010;

/// What an open container expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// The data set itself.
    Root,
    /// An undefined-length sequence: items until the sequence delimiter.
    Sequence,
    /// An undefined-length item: elements until the item delimiter.
    Item,
    /// Encapsulated pixel data (or another undefined-length OB/OW): items of
    /// defined length until the sequence delimiter.
    Fragments {
        /// The top-level Pixel Data (its facts are recorded).
        root_pixel_data: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: FrameKind,
    /// Encoding of the headers inside (Implicit VR LE inside an
    /// undefined-length UN, PS3.5 §6.2.2).
    encoding: DatasetEncoding,
}

const EMPTY_FRAME: Frame = Frame {
    kind: FrameKind::Root,
    encoding: DatasetEncoding::ImplicitVrLittleEndian,
};

#[derive(Debug, Clone, Copy)]
enum State {
    /// At an element (or item) header.
    Header,
    /// Skipping a value.
    Skip { remaining: u64 },
    /// Copying the value of a field (up to the cap), then skipping.
    Capture { field: u8, remaining: u64 },
    /// A structure error was found (in `HeadScanner::error`); the rest is ignored.
    Failed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    start: u32,
    length: u32,
    present: bool,
    cut: bool,
}

/// The scanner: feed it the data set's bytes in order, in chunks of any size,
/// then [`finish`](Self::finish).
#[derive(Debug)]
pub struct HeadScanner {
    encoding: DatasetEncoding,
    limits: ScanLimits,
    position: u64,
    state: State,
    value_tag: u32,
    carry: [u8; 12],
    carry_length: usize,
    /// The innermost open container (the root when nothing is open).
    context: Frame,
    /// The enclosing containers of `context`, outermost first.
    frames: [Frame; SCAN_DEPTH_MAX],
    depth: usize,
    error: Option<ScanError>,
    arena: Vec<u8>,
    slots: [Slot; FIELD_COUNT],
    pixel_data: Option<PixelData>,
}

impl HeadScanner {
    /// A scanner for a data set in `encoding`, with default limits.
    pub fn new(encoding: DatasetEncoding) -> Self {
        Self::with_limits(encoding, ScanLimits::default())
    }

    /// A scanner for the data set of a catalogued transfer syntax.
    pub fn for_transfer_syntax(uid: &str) -> Result<Self, NotScannable> {
        Ok(Self::new(DatasetEncoding::from_transfer_syntax(uid)?))
    }

    /// A scanner with explicit limits (`depth_max` is capped at [`SCAN_DEPTH_MAX`]).
    pub fn with_limits(encoding: DatasetEncoding, limits: ScanLimits) -> Self {
        let limits = ScanLimits {
            depth_max: limits.depth_max.min(SCAN_DEPTH_MAX),
            ..limits
        };
        Self {
            encoding,
            limits,
            position: 0,
            state: State::Header,
            value_tag: 0,
            carry: [0; 12],
            carry_length: 0,
            context: Frame {
                kind: FrameKind::Root,
                encoding,
            },
            frames: [EMPTY_FRAME; SCAN_DEPTH_MAX],
            depth: 0,
            error: None,
            arena: Vec::with_capacity(512),
            slots: [Slot::default(); FIELD_COUNT],
            pixel_data: None,
        }
    }

    /// Bytes fed so far.
    pub const fn position(&self) -> u64 {
        self.position
    }

    /// The structure error found so far, if any: once set, further bytes are
    /// only counted.
    pub const fn error(&self) -> Option<ScanError> {
        self.error
    }

    /// Whether the top-level Pixel Data header has been seen.
    pub const fn pixel_data_seen(&self) -> bool {
        self.pixel_data.is_some()
    }

    /// Feeds the next bytes of the data set. Returns the structure error once
    /// one is found (and on every later call); the caller may keep feeding
    /// (the bytes are then only counted) or stop.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let mut input = chunk;
        loop {
            match self.state {
                State::Failed => {
                    self.advance(input.len());
                    return Err(self.error.unwrap_or(ScanError::Truncated {
                        offset: self.position,
                        inside: TruncatedIn::Header,
                    }));
                }
                State::Skip { remaining } => {
                    let step = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    input = input.get(step..).unwrap_or_default();
                    self.advance(step);
                    let remaining = remaining.saturating_sub(step as u64);
                    if remaining > 0 {
                        self.state = State::Skip { remaining };
                        return Ok(());
                    }
                    self.state = State::Header;
                }
                State::Capture { field, remaining } => {
                    let step = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (value, rest) = input.split_at(step);
                    input = rest;
                    self.capture(field, value);
                    self.advance(step);
                    let remaining = remaining.saturating_sub(step as u64);
                    if remaining > 0 {
                        self.state = State::Capture { field, remaining };
                        return Ok(());
                    }
                    self.state = State::Header;
                }
                State::Header => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    if self.carry_length == 0 && input.len() >= 12 {
                        input = self.headers_in_place(input);
                    } else {
                        // Slow path: gather a split header in the carry buffer.
                        let mut wanted = if self.carry_length >= 6 {
                            self.header_size(&self.carry)
                        } else {
                            8
                        };
                        while self.carry_length < wanted && !input.is_empty() {
                            let take = wanted.saturating_sub(self.carry_length).min(input.len());
                            if let (Some(slot), Some(bytes)) = (
                                self.carry.get_mut(
                                    self.carry_length..self.carry_length.saturating_add(take),
                                ),
                                input.get(..take),
                            ) {
                                slot.copy_from_slice(bytes);
                            }
                            self.carry_length = self.carry_length.saturating_add(take);
                            input = input.get(take..).unwrap_or_default();
                            if self.carry_length >= 6 {
                                wanted = self.header_size(&self.carry);
                            }
                        }
                        if self.carry_length < wanted {
                            return Ok(());
                        }
                        let carry = self.carry;
                        self.carry_length = 0;
                        self.header(carry.get(..wanted).unwrap_or_default());
                    }
                }
            }
        }
    }

    /// The fast path: while a whole header is in `input`, handle it, and
    /// skip or capture its value at once when the value is in `input` too.
    /// Returns the bytes not consumed (the state is set for them).
    #[inline]
    fn headers_in_place<'a>(&mut self, mut input: &'a [u8]) -> &'a [u8] {
        while input.len() >= 12 {
            let size = self.header_size(input);
            let (header, rest) = input.split_at(size.min(input.len()));
            input = rest;
            self.header(header);
            match self.state {
                State::Header => {}
                State::Skip { remaining } => match usize::try_from(remaining) {
                    Ok(length) if length <= input.len() => {
                        input = input.get(length..).unwrap_or_default();
                        self.advance(length);
                        self.state = State::Header;
                    }
                    _ => break,
                },
                State::Capture { field, remaining } => match usize::try_from(remaining) {
                    Ok(length) if length <= input.len() => {
                        let (value, rest) = input.split_at(length);
                        self.capture(field, value);
                        input = rest;
                        self.advance(length);
                        self.state = State::Header;
                    }
                    _ => break,
                },
                State::Failed => break,
            }
        }
        input
    }

    fn advance(&mut self, bytes: usize) {
        self.position = self.position.saturating_add(bytes as u64);
    }

    fn capture(&mut self, field: u8, value: &[u8]) {
        let Some(slot) = self.slots.get_mut(usize::from(field)) else {
            return;
        };
        let kept = usize::try_from(slot.length).unwrap_or(usize::MAX);
        let room = self.limits.value_capture_max.saturating_sub(kept);
        let take = room.min(value.len());
        if take < value.len() {
            slot.cut = true;
        }
        if let Some(bytes) = value.get(..take) {
            self.arena.extend_from_slice(bytes);
            slot.length = slot
                .length
                .saturating_add(u32::try_from(take).unwrap_or(u32::MAX));
        }
    }

    /// Size of the header starting with `bytes` (at least 6 bytes given).
    #[inline(always)]
    fn header_size(&self, bytes: &[u8]) -> usize {
        let encoding = self.context.encoding;
        let in_item_context = matches!(
            self.context.kind,
            FrameKind::Sequence | FrameKind::Fragments { .. }
        );
        if !encoding.explicit() || in_item_context {
            return 8;
        }
        match bytes {
            // Item and delimitation tags have no VR in any encoding.
            [0xFE, 0xFF, ..] if !encoding.big_endian() => 8,
            [0xFF, 0xFE, ..] if encoding.big_endian() => 8,
            // An invalid VR is reported from the short form, without waiting for more.
            [_, _, _, _, v0, v1, ..]
                if v0.is_ascii_uppercase()
                    && v1.is_ascii_uppercase()
                    && vr_has_long_length([*v0, *v1]) =>
            {
                12
            }
            _ => 8,
        }
    }

    fn push(&mut self, frame: Frame, offset: u64) -> Result<(), ScanError> {
        if self.depth >= self.limits.depth_max {
            return Err(ScanError::TooDeep {
                offset,
                limit: self.limits.depth_max,
            });
        }
        if let Some(slot) = self.frames.get_mut(self.depth) {
            *slot = self.context;
            self.context = frame;
            self.depth = self.depth.saturating_add(1);
            Ok(())
        } else {
            Err(ScanError::TooDeep {
                offset,
                limit: self.limits.depth_max,
            })
        }
    }

    fn pop(&mut self) {
        if let Some(parent) = self.depth.checked_sub(1) {
            self.depth = parent;
            if let Some(frame) = self.frames.get(parent) {
                self.context = *frame;
            }
        }
    }

    /// Handles one complete header; sets the next state.
    #[inline(always)]
    fn header(&mut self, bytes: &[u8]) {
        let offset = self.position;
        self.advance(bytes.len());
        self.state = State::Header;
        if let Err(error) = self.header_inner(bytes, offset) {
            self.error = Some(error);
            self.state = State::Failed;
        }
    }

    #[inline(always)]
    fn header_inner(&mut self, bytes: &[u8], offset: u64) -> Result<(), ScanError> {
        let encoding = self.context.encoding;
        let big = encoding.big_endian();
        let (tag, rest) = match bytes {
            [g0, g1, e0, e1, rest @ ..] => {
                let (group, element) = if big {
                    (
                        u16::from_be_bytes([*g0, *g1]),
                        u16::from_be_bytes([*e0, *e1]),
                    )
                } else {
                    (
                        u16::from_le_bytes([*g0, *g1]),
                        u16::from_le_bytes([*e0, *e1]),
                    )
                };
                ((u32::from(group) << 16) | u32::from(element), rest)
            }
            _ => return Ok(()),
        };
        let read_u32 = |b: &[u8]| match b {
            [b0, b1, b2, b3, ..] => {
                if big {
                    u32::from_be_bytes([*b0, *b1, *b2, *b3])
                } else {
                    u32::from_le_bytes([*b0, *b1, *b2, *b3])
                }
            }
            _ => 0,
        };
        let frame_kind = self.context.kind;
        match frame_kind {
            FrameKind::Sequence => {
                let length = read_u32(rest);
                match tag {
                    ITEM if length == UNDEFINED_LENGTH => {
                        self.push(
                            Frame {
                                kind: FrameKind::Item,
                                encoding,
                            },
                            offset,
                        )?;
                        Ok(())
                    }
                    // A defined-length item is skipped whole: nothing of
                    // interest lives in nested items.
                    ITEM => {
                        self.state = self.skip(tag, length);
                        Ok(())
                    }
                    SEQUENCE_DELIMITATION if length == 0 => {
                        self.pop();
                        Ok(())
                    }
                    SEQUENCE_DELIMITATION | ITEM_DELIMITATION => {
                        Err(ScanError::UnexpectedDelimiter {
                            offset,
                            tag: Tag::from_u32(tag),
                        })
                    }
                    _ => Err(ScanError::ExpectedItem {
                        offset,
                        tag: Tag::from_u32(tag),
                    }),
                }
            }
            FrameKind::Fragments { root_pixel_data } => {
                let length = read_u32(rest);
                match tag {
                    ITEM if length != UNDEFINED_LENGTH => {
                        if root_pixel_data {
                            if let Some(pixel_data) = self.pixel_data.as_mut() {
                                pixel_data.items = pixel_data.items.saturating_add(1);
                            }
                        }
                        {
                            self.state = self.skip(tag, length);
                            Ok(())
                        }
                    }
                    SEQUENCE_DELIMITATION if length == 0 => {
                        self.pop();
                        if root_pixel_data {
                            let end = self.position;
                            if let Some(pixel_data) = self.pixel_data.as_mut() {
                                pixel_data.end_offset = Some(end);
                            }
                        }
                        Ok(())
                    }
                    _ if root_pixel_data => Err(ScanError::PixelDataFragments {
                        offset,
                        tag: Tag::from_u32(tag),
                    }),
                    _ => Err(ScanError::ExpectedItem {
                        offset,
                        tag: Tag::from_u32(tag),
                    }),
                }
            }
            FrameKind::Item | FrameKind::Root => {
                if tag >> 16 == 0xFFFE {
                    let length = read_u32(rest);
                    if tag == ITEM_DELIMITATION && frame_kind == FrameKind::Item && length == 0 {
                        self.pop();
                        return Ok(());
                    }
                    return Err(ScanError::UnexpectedDelimiter {
                        offset,
                        tag: Tag::from_u32(tag),
                    });
                }
                let (vr, length) = if encoding.explicit() {
                    match rest {
                        [v0, v1, l0, l1, tail @ ..] => {
                            let vr = [*v0, *v1];
                            if !(v0.is_ascii_uppercase() && v1.is_ascii_uppercase()) {
                                return Err(ScanError::InvalidVr {
                                    offset,
                                    tag: Tag::from_u32(tag),
                                    vr,
                                });
                            }
                            let length = if vr_has_long_length(vr) {
                                read_u32(tail)
                            } else if big {
                                u32::from(u16::from_be_bytes([*l0, *l1]))
                            } else {
                                u32::from(u16::from_le_bytes([*l0, *l1]))
                            };
                            (Some(vr), length)
                        }
                        _ => return Ok(()),
                    }
                } else {
                    (None, read_u32(rest))
                };
                let root = frame_kind == FrameKind::Root;
                if length == UNDEFINED_LENGTH {
                    return self.open_undefined(tag, vr, encoding, root, offset);
                }
                if root {
                    if tag == PIXEL_DATA && self.pixel_data.is_none() {
                        self.pixel_data = Some(PixelData {
                            value_offset: self.position,
                            length: PixelDataLength::Defined(length),
                            vr,
                            items: 0,
                            end_offset: None,
                        });
                    } else if let Some(field) = Field::from_tag(tag) {
                        if let Some(slot) = self.slots.get_mut(field as usize) {
                            // The first occurrence wins; a repeat is skipped.
                            if !slot.present {
                                *slot = Slot {
                                    start: u32::try_from(self.arena.len()).unwrap_or(u32::MAX),
                                    length: 0,
                                    present: true,
                                    cut: false,
                                };
                                self.value_tag = tag;
                                self.state = if length == 0 {
                                    State::Header
                                } else {
                                    State::Capture {
                                        field: field as u8,
                                        remaining: u64::from(length),
                                    }
                                };
                                return Ok(());
                            }
                        }
                    }
                }
                {
                    self.state = self.skip(tag, length);
                    Ok(())
                }
            }
        }
    }

    fn open_undefined(
        &mut self,
        tag: u32,
        vr: Option<[u8; 2]>,
        encoding: DatasetEncoding,
        root: bool,
        offset: u64,
    ) -> Result<(), ScanError> {
        let kind = match vr {
            // Implicit VR: Pixel Data is encapsulated, anything else a sequence.
            None if tag == PIXEL_DATA => FrameKind::Fragments {
                root_pixel_data: root,
            },
            None => FrameKind::Sequence,
            Some(vr) => match &vr {
                b"SQ" => FrameKind::Sequence,
                b"UN" if tag != PIXEL_DATA => {
                    // An undefined-length UN is a sequence in Implicit VR LE.
                    self.push(
                        Frame {
                            kind: FrameKind::Sequence,
                            encoding: DatasetEncoding::ImplicitVrLittleEndian,
                        },
                        offset,
                    )?;
                    return Ok(());
                }
                b"OB" | b"OW" | b"UN" => FrameKind::Fragments {
                    root_pixel_data: root && tag == PIXEL_DATA,
                },
                _ => {
                    return Err(ScanError::UndefinedLength {
                        offset,
                        tag: Tag::from_u32(tag),
                    })
                }
            },
        };
        if let FrameKind::Fragments {
            root_pixel_data: true,
        } = kind
        {
            if self.pixel_data.is_none() {
                self.pixel_data = Some(PixelData {
                    value_offset: self.position,
                    length: PixelDataLength::Undefined,
                    vr,
                    items: 0,
                    end_offset: None,
                });
            }
        }
        self.push(Frame { kind, encoding }, offset)?;
        Ok(())
    }

    fn skip(&mut self, tag: u32, length: u32) -> State {
        if length == 0 {
            State::Header
        } else {
            self.value_tag = tag;
            State::Skip {
                remaining: u64::from(length),
            }
        }
    }

    /// Ends the scan: the data set is complete when the last byte fed ends an
    /// element at the top level with no sequence or pixel data left open.
    pub fn finish(self) -> DatasetHead {
        let end = match self.state {
            State::Failed => Err(self.error.unwrap_or(ScanError::Truncated {
                offset: self.position,
                inside: TruncatedIn::Header,
            })),
            State::Skip { .. } | State::Capture { .. } => Err(ScanError::Truncated {
                offset: self.position,
                inside: TruncatedIn::Value(Tag::from_u32(self.value_tag)),
            }),
            State::Header if self.carry_length > 0 => Err(ScanError::Truncated {
                offset: self.position,
                inside: TruncatedIn::Header,
            }),
            State::Header => match self.context.kind {
                FrameKind::Root => Ok(()),
                FrameKind::Fragments {
                    root_pixel_data: true,
                } => Err(ScanError::Truncated {
                    offset: self.position,
                    inside: TruncatedIn::PixelData,
                }),
                FrameKind::Sequence | FrameKind::Item | FrameKind::Fragments { .. } => {
                    Err(ScanError::Truncated {
                        offset: self.position,
                        inside: TruncatedIn::Sequence,
                    })
                }
            },
        };
        DatasetHead {
            encoding: self.encoding,
            slots: self.slots,
            arena: self.arena,
            pixel_data: self.pixel_data,
            length: self.position,
            end,
        }
    }
}

/// The VRs that Explicit VR encodes with a 2-byte length (PS3.5 Table
/// 7.1-1), as one bit per second letter for each first letter: a table
/// lookup instead of a chain of comparisons on the hot path.
// Evaluated at compile time: an index out of range fails the build, it
// cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const SHORT_LENGTH_VRS: [u32; 26] = {
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    let mut table = [0u32; 26];
    let mut index = 0;
    while index < SHORT.len() {
        let [first, second] = *SHORT[index];
        table[(first - b'A') as usize] |= 1 << (second - b'A');
        index += 1;
    }
    table
};

/// Whether Explicit VR gives this VR a 4-byte length (PS3.5 Table 7.1-1;
/// unknown VRs too, PS3.5 §7.1.2).
#[inline]
fn vr_has_long_length(vr: [u8; 2]) -> bool {
    let [first, second] = vr;
    let row = SHORT_LENGTH_VRS
        .get(usize::from(first.wrapping_sub(b'A')))
        .copied()
        .unwrap_or(0);
    let bit = second.wrapping_sub(b'A');
    bit >= 26 || row & (1 << bit) == 0
}

/// Scans a whole data set held in one buffer.
pub fn scan(bytes: &[u8], encoding: DatasetEncoding) -> DatasetHead {
    let mut scanner = HeadScanner::new(encoding);
    // The error is also in the head.
    let _ = scanner.feed(bytes);
    scanner.finish()
}

/// What the scanner found in one data set.
#[derive(Debug, Clone)]
pub struct DatasetHead {
    encoding: DatasetEncoding,
    slots: [Slot; FIELD_COUNT],
    arena: Vec<u8>,
    /// The top-level Pixel Data, if any.
    pub pixel_data: Option<PixelData>,
    /// Bytes scanned (the data set's length when complete).
    pub length: u64,
    /// `Ok` when the data set ended cleanly on an element boundary, else the
    /// structure error or the truncation.
    pub end: Result<(), ScanError>,
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

pub mod deflated;
pub use deflated::DatasetScanner;

#[cfg(test)]
mod tests;
