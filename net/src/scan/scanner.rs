//! The resumable walk over a data set's elements ([`HeadScanner`]), fed in
//! chunks cut anywhere, bounded by [`ScanLimits`].

use super::field::FIELD_COUNT;
use super::head::Slot;
use super::{
    DatasetEncoding, DatasetHead, Field, NotScannable, PixelData, PixelDataLength, ScanError,
    TruncatedIn,
};
use crate::dimse::Tag;

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

pub(super) const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
pub(super) const ITEM: u32 = 0xFFFE_E000;
pub(super) const ITEM_DELIMITATION: u32 = 0xFFFE_E00D;
pub(super) const SEQUENCE_DELIMITATION: u32 = 0xFFFE_E0DD;
pub(super) const PIXEL_DATA: u32 = 0x7FE0_0010;

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
            trailing_bytes: 0,
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
pub(super) fn vr_has_long_length(vr: [u8; 2]) -> bool {
    let [first, second] = vr;
    let row = SHORT_LENGTH_VRS
        .get(usize::from(first.wrapping_sub(b'A')))
        .copied()
        .unwrap_or(0);
    let bit = second.wrapping_sub(b'A');
    bit >= 26 || row & (1 << bit) == 0
}
