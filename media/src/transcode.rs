//! The streaming data-set transcoder: native data sets from one encoding to
//! another (Implicit VR Little Endian, Explicit VR Little Endian, Explicit VR
//! Big Endian in; Implicit or Explicit VR Little Endian out), fed in chunks of
//! any size, with memory bounded by the nesting depth, never by the size of a
//! value: multi-gigabyte pixel data passes through in the caller's chunks.
//!
//! Used by media export (STD-GEN-CD wants Explicit VR Little Endian) and by
//! retrieval when a destination accepts only another native syntax.
//!
//! Rules (PS3.5):
//! - Implicit VR in: each VR comes from the standard data dictionary
//!   ([`crate::vr`]); "OB or OW", "US or SS" and "US or OW" are settled from
//!   Bits Allocated and Pixel Representation of the data set or item in scope;
//!   private elements other than private creators, and unknown public tags,
//!   become UN (§6.2.2). A value too long for a 2-byte length field becomes
//!   UN too (§6.2.2 Note).
//! - An element of undefined length that the dictionary does not call a
//!   sequence (a private sequence) is written as UN of undefined length whose
//!   items stay in Implicit VR Little Endian (§6.2.2): no VR is guessed inside.
//! - Every sequence and item is written with undefined length and
//!   delimiters (a defined length cannot be known before the content is
//!   re-encoded without holding it); the elements and values are the same.
//! - Group lengths (gggg,0000) and Length to End (0008,0001), retired and
//!   wrong once lengths change, are dropped.
//! - Explicit VR Big Endian in: values are byte-swapped by VR (2 bytes for
//!   US, SS, OW, AT; 4 for UL, SL, FL, OL, OF; 8 for FD, SV, UV, OD, OV).
//! - Encapsulated pixel data (undefined-length OB/OW with fragments) is
//!   copied through for Explicit VR Little Endian output, and refused for
//!   Implicit VR output, which cannot hold it.

use sluice_net::dimse::dataset::Vr;
use sluice_net::dimse::Tag;
use sluice_net::scan::DatasetEncoding;

use crate::vr::{dictionary_vr, DictionaryVr, VrContext};

/// Deepest nesting of sequences and items accepted (a sequence in an item
/// in a sequence is depth 3).
pub const TRANSCODE_DEPTH_MAX: usize = 64;

const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
const BITS_ALLOCATED: Tag = Tag(0x0028, 0x0100);
const PIXEL_REPRESENTATION: Tag = Tag(0x0028, 0x0103);
const LENGTH_TO_END: Tag = Tag(0x0008, 0x0001);

/// Why a data set cannot be transcoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// The output encoding is not one this transcoder writes.
    #[error("cannot write {0:?}: only Implicit and Explicit VR Little Endian are written")]
    UnsupportedOutput(DatasetEncoding),
    /// An Explicit VR header whose VR is not two uppercase letters.
    #[error("element {tag} at offset {offset} has an invalid VR")]
    InvalidVr {
        /// Input offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// An undefined length on an element that cannot have one.
    #[error("element {tag} at offset {offset} has an undefined length it cannot have")]
    UndefinedLength {
        /// Input offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// A delimiter or item where none belongs, or something other than an
    /// item inside a sequence.
    #[error("unexpected {tag} at offset {offset}")]
    Unexpected {
        /// Input offset.
        offset: u64,
        /// Tag found.
        tag: Tag,
    },
    /// An element or item runs past the end of its defined-length container.
    #[error("element {tag} at offset {offset} runs past the end of its container")]
    Overrun {
        /// Input offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// Sequences nested deeper than [`TRANSCODE_DEPTH_MAX`].
    #[error("sequences nested deeper than {TRANSCODE_DEPTH_MAX} at offset {offset}")]
    TooDeep {
        /// Input offset.
        offset: u64,
    },
    /// Encapsulated pixel data cannot be written in Implicit VR.
    #[error("encapsulated pixel data at offset {offset} cannot be written in Implicit VR")]
    EncapsulatedToImplicit {
        /// Input offset.
        offset: u64,
    },
    /// The input ended inside an element, or with a sequence or item open.
    #[error("data set truncated at offset {offset}")]
    Truncated {
        /// Input bytes seen.
        offset: u64,
    },
}

/// What an open container holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// The data set.
    Root,
    /// A sequence: items until its end or its delimiter.
    Sequence,
    /// An item: elements until its end or its delimiter.
    Item,
    /// Encapsulated pixel data: fragment items copied raw until the delimiter.
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: FrameKind,
    /// Input offset where a defined-length container ends.
    end: Option<u64>,
    /// Encoding of the headers inside, in and out (an undefined-length UN
    /// holds Implicit VR Little Endian both ways).
    input: DatasetEncoding,
    output: DatasetEncoding,
    /// Whether anything inside is written (false under a filtered element).
    emit: bool,
    /// Bits Allocated and Pixel Representation of this data set or item.
    context: VrContext,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// At a header.
    Header,
    /// Passing a value through (or skipping it).
    Value {
        remaining: u64,
        emit: bool,
        /// Byte-swap unit (1: none).
        swap: u8,
        /// Record the first US value into the frame's context.
        capture: Option<Capture>,
    },
    /// An error was returned; nothing more is accepted.
    Failed(TranscodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    BitsAllocated,
    PixelRepresentation,
}

/// Which top-level elements to keep (the rest are consumed, not written).
pub type TopLevelFilter = fn(Tag) -> bool;

/// The transcoder: [`feed`](Self::feed) the data set's bytes in order, then
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct Transcoder {
    position: u64,
    state: State,
    header: [u8; 12],
    header_length: usize,
    frames: Vec<Frame>,
    swap_carry: [u8; 8],
    swap_carry_length: usize,
    capture_bytes: [u8; 2],
    capture_length: usize,
    keep_top_level: Option<TopLevelFilter>,
    last_top_level_tag: Option<Tag>,
}

impl Transcoder {
    /// A transcoder from `input` to `output` (Implicit or Explicit VR Little
    /// Endian).
    pub fn new(input: DatasetEncoding, output: DatasetEncoding) -> Result<Self, TranscodeError> {
        if output == DatasetEncoding::ExplicitVrBigEndian {
            return Err(TranscodeError::UnsupportedOutput(output));
        }
        Ok(Self::start(input, output))
    }

    fn start(input: DatasetEncoding, output: DatasetEncoding) -> Self {
        debug_assert_ne!(output, DatasetEncoding::ExplicitVrBigEndian);
        let mut frames = Vec::with_capacity(8);
        frames.push(Frame {
            kind: FrameKind::Root,
            end: None,
            input,
            output,
            emit: true,
            context: VrContext::default(),
        });
        Self {
            position: 0,
            state: State::Header,
            header: [0; 12],
            header_length: 0,
            frames,
            swap_carry: [0; 8],
            swap_carry_length: 0,
            capture_bytes: [0; 2],
            capture_length: 0,
            keep_top_level: None,
            last_top_level_tag: None,
        }
    }

    /// A transcoder from `input` to Explicit VR Little Endian (what every
    /// media profile takes), which cannot fail to start.
    pub fn to_explicit_little_endian(input: DatasetEncoding) -> Self {
        Self::start(input, DatasetEncoding::ExplicitVrLittleEndian)
    }

    /// Writes only the top-level elements `keep` accepts (and everything
    /// inside them); the others are read and dropped.
    pub fn keep_top_level(mut self, keep: TopLevelFilter) -> Self {
        self.keep_top_level = Some(keep);
        self
    }

    /// Input bytes consumed so far.
    pub const fn position(&self) -> u64 {
        self.position
    }

    /// Whether the transcoder is between top-level elements (nothing open,
    /// no partial header or value): a caller that only wants the head may
    /// stop here.
    pub fn at_top_level_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.header_length == 0 && self.frames.len() == 1
    }

    /// The tag of the last top-level element whose header was read.
    pub const fn last_top_level_tag(&self) -> Option<Tag> {
        self.last_top_level_tag
    }

    /// The innermost open frame.
    fn frame(&self) -> Frame {
        // The root frame is never popped.
        debug_assert!(!self.frames.is_empty());
        self.frames.last().copied().unwrap_or(Frame {
            kind: FrameKind::Root,
            end: None,
            input: DatasetEncoding::ExplicitVrLittleEndian,
            output: DatasetEncoding::ExplicitVrLittleEndian,
            emit: false,
            context: VrContext::default(),
        })
    }

    /// Feeds the next bytes; appends what they transcode to onto `out`.
    /// After an error, every later call returns it again.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        loop {
            match self.state {
                State::Failed(error) => return Err(error),
                State::Value {
                    remaining,
                    emit,
                    swap,
                    capture,
                } => {
                    if remaining == 0 {
                        self.end_value(emit, out);
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let step = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (value, rest) = input.split_at(step);
                    input = rest;
                    if let Some(capture) = capture {
                        self.capture(capture, value);
                    }
                    if emit {
                        self.emit_value(value, swap, out);
                    }
                    self.position = self.position.saturating_add(step as u64);
                    let remaining = remaining.saturating_sub(step as u64);
                    self.state = State::Value {
                        remaining,
                        emit,
                        swap,
                        capture,
                    };
                    if remaining == 0 {
                        self.end_value(emit, out);
                    }
                }
                State::Header => {
                    // Close the defined-length containers that end here.
                    if self.header_length == 0 {
                        if let Err(error) = self.close_ended(out) {
                            self.state = State::Failed(error);
                            continue;
                        }
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let wanted = self.header_wanted();
                    let take = wanted.saturating_sub(self.header_length).min(input.len());
                    let (bytes, rest) = input.split_at(take);
                    if let Some(slot) = self
                        .header
                        .get_mut(self.header_length..self.header_length.saturating_add(take))
                    {
                        slot.copy_from_slice(bytes);
                    }
                    self.header_length = self.header_length.saturating_add(take);
                    input = rest;
                    if self.header_length < self.header_wanted() {
                        continue;
                    }
                    let length = self.header_length;
                    self.header_length = 0;
                    let offset = self.position;
                    self.position = self.position.saturating_add(length as u64);
                    if let Err(error) = self.on_header(offset, length, out) {
                        self.state = State::Failed(error);
                    }
                }
            }
        }
    }

    /// Ends the data set: everything must be closed.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        if let State::Failed(error) = self.state {
            return Err(error);
        }
        let truncated = TranscodeError::Truncated {
            offset: self.position,
        };
        if !matches!(self.state, State::Header) || self.header_length != 0 {
            self.state = State::Failed(truncated);
            return Err(truncated);
        }
        self.close_ended(out)?;
        if self.frames.len() != 1 {
            self.state = State::Failed(truncated);
            return Err(truncated);
        }
        Ok(())
    }

    fn header_wanted(&self) -> usize {
        let frame = self.frame();
        if matches!(frame.kind, FrameKind::Sequence | FrameKind::Fragments) {
            return 8;
        }
        if frame.input == DatasetEncoding::ImplicitVrLittleEndian || self.header_length < 6 {
            return 8;
        }
        let group = self.read_u16(0);
        if group == 0xFFFE {
            return 8;
        }
        match self.header.get(4..6) {
            // An invalid VR is reported from the short form, without
            // waiting for more bytes.
            Some([v0, v1])
                if v0.is_ascii_uppercase()
                    && v1.is_ascii_uppercase()
                    && Vr([*v0, *v1]).has_long_length() =>
            {
                12
            }
            _ => 8,
        }
    }

    fn read_u16(&self, at: usize) -> u16 {
        let bytes = match self.header.get(at..at.saturating_add(2)) {
            Some([b0, b1]) => [*b0, *b1],
            _ => [0, 0],
        };
        if self.frame().input == DatasetEncoding::ExplicitVrBigEndian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        }
    }

    fn read_u32(&self, at: usize) -> u32 {
        let bytes = match self.header.get(at..at.saturating_add(4)) {
            Some([b0, b1, b2, b3]) => [*b0, *b1, *b2, *b3],
            _ => [0, 0, 0, 0],
        };
        if self.frame().input == DatasetEncoding::ExplicitVrBigEndian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    }

    fn push(&mut self, frame: Frame, offset: u64) -> Result<(), TranscodeError> {
        if self.frames.len() >= TRANSCODE_DEPTH_MAX {
            return Err(TranscodeError::TooDeep { offset });
        }
        self.frames.push(frame);
        Ok(())
    }

    /// Pops the innermost frame, writing its delimiter.
    fn pop(&mut self, out: &mut Vec<u8>) {
        debug_assert!(self.frames.len() > 1, "the root frame is never popped");
        if self.frames.len() <= 1 {
            return;
        }
        if let Some(frame) = self.frames.pop() {
            if frame.emit {
                let delimiter = match frame.kind {
                    FrameKind::Item => ITEM_DELIMITATION,
                    FrameKind::Sequence | FrameKind::Fragments => SEQUENCE_DELIMITATION,
                    FrameKind::Root => return,
                };
                write_tag(delimiter, out);
                out.extend_from_slice(&0u32.to_le_bytes());
            }
        }
    }

    fn close_ended(&mut self, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        while let Some(end) = self.frame().end {
            if self.position < end {
                return Ok(());
            }
            if self.position > end {
                return Err(TranscodeError::Overrun {
                    offset: self.position,
                    tag: Tag(0, 0),
                });
            }
            self.pop(out);
        }
        Ok(())
    }

    /// Checks that a value of `length` bytes after the header fits the
    /// innermost defined-length container.
    fn check_fits(&self, offset: u64, tag: Tag, length: u32) -> Result<(), TranscodeError> {
        if length == UNDEFINED_LENGTH {
            return Ok(());
        }
        match self.frame().end {
            Some(end) if self.position.saturating_add(u64::from(length)) > end => {
                Err(TranscodeError::Overrun { offset, tag })
            }
            _ => Ok(()),
        }
    }

    fn on_header(
        &mut self,
        offset: u64,
        header_length: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), TranscodeError> {
        let frame = self.frame();
        let tag = Tag(self.read_u16(0), self.read_u16(2));
        if let Some(end) = frame.end {
            if self.position > end {
                return Err(TranscodeError::Overrun { offset, tag });
            }
        }
        match frame.kind {
            FrameKind::Sequence => {
                let length = self.read_u32(4);
                match tag {
                    ITEM => {
                        self.check_fits(offset, tag, length)?;
                        let end = (length != UNDEFINED_LENGTH)
                            .then(|| self.position.saturating_add(u64::from(length)));
                        self.push(
                            Frame {
                                kind: FrameKind::Item,
                                end,
                                context: VrContext::default(),
                                ..frame
                            },
                            offset,
                        )?;
                        if frame.emit {
                            write_tag(ITEM, out);
                            out.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
                        }
                        Ok(())
                    }
                    SEQUENCE_DELIMITATION if frame.end.is_none() => {
                        self.pop(out);
                        Ok(())
                    }
                    _ => Err(TranscodeError::Unexpected { offset, tag }),
                }
            }
            FrameKind::Fragments => {
                let length = self.read_u32(4);
                match tag {
                    ITEM if length != UNDEFINED_LENGTH => {
                        if frame.emit {
                            write_tag(ITEM, out);
                            out.extend_from_slice(&length.to_le_bytes());
                        }
                        self.state = State::Value {
                            remaining: u64::from(length),
                            emit: frame.emit,
                            swap: 1,
                            capture: None,
                        };
                        Ok(())
                    }
                    SEQUENCE_DELIMITATION => {
                        self.pop(out);
                        Ok(())
                    }
                    _ => Err(TranscodeError::Unexpected { offset, tag }),
                }
            }
            FrameKind::Item | FrameKind::Root => {
                if tag == ITEM_DELIMITATION && frame.kind == FrameKind::Item && frame.end.is_none()
                {
                    self.pop(out);
                    return Ok(());
                }
                if tag.0 == 0xFFFE {
                    return Err(TranscodeError::Unexpected { offset, tag });
                }
                self.on_element(offset, header_length, tag, frame, out)
            }
        }
    }

    fn on_element(
        &mut self,
        offset: u64,
        header_length: usize,
        tag: Tag,
        frame: Frame,
        out: &mut Vec<u8>,
    ) -> Result<(), TranscodeError> {
        let input_explicit = frame.input != DatasetEncoding::ImplicitVrLittleEndian;
        let (source_vr, length) = if input_explicit {
            let vr = match self.header.get(4..6) {
                Some([v0, v1]) if v0.is_ascii_uppercase() && v1.is_ascii_uppercase() => {
                    Vr([*v0, *v1])
                }
                _ => return Err(TranscodeError::InvalidVr { offset, tag }),
            };
            let length = if header_length == 12 {
                self.read_u32(8)
            } else {
                u32::from(self.read_u16(6))
            };
            (Some(vr), length)
        } else {
            (None, self.read_u32(4))
        };
        self.check_fits(offset, tag, length)?;
        let top_level = frame.kind == FrameKind::Root;
        if top_level {
            self.last_top_level_tag = Some(tag);
        }
        let dropped = tag.1 == 0x0000 || tag == LENGTH_TO_END;
        let filtered = top_level && self.keep_top_level.is_some_and(|keep| !keep(tag));
        let emit = frame.emit && !dropped && !filtered;
        let output_explicit = frame.output != DatasetEncoding::ImplicitVrLittleEndian;
        let dictionary = match source_vr {
            Some(_) => None,
            None => Some(dictionary_vr(tag)),
        };
        let is_sequence = match (source_vr, dictionary) {
            (Some(vr), _) => vr == Vr::SQ || (vr == Vr::UN && length == UNDEFINED_LENGTH),
            (None, Some(DictionaryVr::Exact(Vr::SQ))) => true,
            (None, Some(DictionaryVr::Unknown)) => length == UNDEFINED_LENGTH,
            (None, _) => false,
        };
        if is_sequence {
            // A sequence whose VR is known (SQ) is transcoded item by item;
            // an unknown one (UN of undefined length) keeps its Implicit VR
            // Little Endian content (PS3.5 §6.2.2).
            let known =
                source_vr == Some(Vr::SQ) || dictionary == Some(DictionaryVr::Exact(Vr::SQ));
            let (inner_input, inner_output, out_vr) = if known {
                (frame.input, frame.output, Vr::SQ)
            } else {
                (
                    DatasetEncoding::ImplicitVrLittleEndian,
                    DatasetEncoding::ImplicitVrLittleEndian,
                    Vr::UN,
                )
            };
            let end = (length != UNDEFINED_LENGTH)
                .then(|| self.position.saturating_add(u64::from(length)));
            self.push(
                Frame {
                    kind: FrameKind::Sequence,
                    end,
                    input: inner_input,
                    output: inner_output,
                    emit,
                    context: VrContext::default(),
                },
                offset,
            )?;
            if emit {
                write_header(tag, out_vr, UNDEFINED_LENGTH, output_explicit, out);
            }
            return Ok(());
        }
        if length == UNDEFINED_LENGTH {
            let pixel_like = matches!(source_vr, Some(Vr::OB | Vr::OW | Vr::UN));
            if !pixel_like || !input_explicit {
                return Err(TranscodeError::UndefinedLength { offset, tag });
            }
            if emit && !output_explicit {
                return Err(TranscodeError::EncapsulatedToImplicit { offset });
            }
            self.push(
                Frame {
                    kind: FrameKind::Fragments,
                    end: None,
                    emit,
                    ..frame
                },
                offset,
            )?;
            if emit {
                write_header(
                    tag,
                    source_vr.unwrap_or(Vr::OB),
                    UNDEFINED_LENGTH,
                    true,
                    out,
                );
            }
            return Ok(());
        }
        let context = self.context();
        let mut vr = match (source_vr, dictionary) {
            (Some(vr), _) => vr,
            (None, Some(dictionary)) => dictionary.resolve(tag, context),
            (None, None) => Vr::UN,
        };
        if !vr.has_long_length() && length > u32::from(u16::MAX) {
            vr = Vr::UN;
        }
        let swap = if frame.input == DatasetEncoding::ExplicitVrBigEndian {
            swap_unit(vr)
        } else {
            1
        };
        let capture = if frame.kind == FrameKind::Root || frame.kind == FrameKind::Item {
            match tag {
                BITS_ALLOCATED => Some(Capture::BitsAllocated),
                PIXEL_REPRESENTATION => Some(Capture::PixelRepresentation),
                _ => None,
            }
        } else {
            None
        };
        if emit {
            write_header(tag, vr, length, output_explicit, out);
        }
        self.capture_length = 0;
        self.state = State::Value {
            remaining: u64::from(length),
            emit,
            swap,
            capture,
        };
        Ok(())
    }

    /// Bits Allocated and Pixel Representation in scope: the innermost data
    /// set or item that has each.
    fn context(&self) -> VrContext {
        let mut context = VrContext::default();
        for frame in self.frames.iter().rev() {
            context.bits_allocated = context.bits_allocated.or(frame.context.bits_allocated);
            context.pixel_representation = context
                .pixel_representation
                .or(frame.context.pixel_representation);
        }
        context
    }

    fn capture(&mut self, capture: Capture, value: &[u8]) {
        for byte in value {
            if let Some(slot) = self.capture_bytes.get_mut(self.capture_length) {
                *slot = *byte;
                self.capture_length = self.capture_length.saturating_add(1);
            } else {
                break;
            }
        }
        if self.capture_length < 2 {
            return;
        }
        let value = if self.frame().input == DatasetEncoding::ExplicitVrBigEndian {
            u16::from_be_bytes(self.capture_bytes)
        } else {
            u16::from_le_bytes(self.capture_bytes)
        };
        if let Some(frame) = self.frames.last_mut() {
            match capture {
                Capture::BitsAllocated => frame.context.bits_allocated = Some(value),
                Capture::PixelRepresentation => frame.context.pixel_representation = Some(value),
            }
        }
    }

    fn emit_value(&mut self, value: &[u8], swap: u8, out: &mut Vec<u8>) {
        if swap <= 1 {
            out.extend_from_slice(value);
            return;
        }
        let unit = usize::from(swap);
        let mut value = value;
        // Complete a unit split across feeds.
        if self.swap_carry_length > 0 {
            let take = unit.saturating_sub(self.swap_carry_length).min(value.len());
            let (head, rest) = value.split_at(take);
            if let Some(slot) = self
                .swap_carry
                .get_mut(self.swap_carry_length..self.swap_carry_length.saturating_add(take))
            {
                slot.copy_from_slice(head);
            }
            self.swap_carry_length = self.swap_carry_length.saturating_add(take);
            value = rest;
            if self.swap_carry_length < unit {
                return;
            }
            if let Some(carry) = self.swap_carry.get_mut(..unit) {
                carry.reverse();
                out.extend_from_slice(carry);
            }
            self.swap_carry_length = 0;
        }
        let mut units = value.chunks_exact(unit);
        for chunk in units.by_ref() {
            out.extend(chunk.iter().rev());
        }
        let rest = units.remainder();
        if let Some(slot) = self.swap_carry.get_mut(..rest.len()) {
            slot.copy_from_slice(rest);
            self.swap_carry_length = rest.len();
        }
    }

    fn end_value(&mut self, emit: bool, out: &mut Vec<u8>) {
        // A value whose length is not a multiple of its unit keeps its
        // last bytes as they were (nothing is dropped).
        debug_assert!(self.swap_carry_length < 8);
        if emit {
            if let Some(rest) = self.swap_carry.get(..self.swap_carry_length) {
                out.extend_from_slice(rest);
            }
        }
        self.swap_carry_length = 0;
        self.state = State::Header;
    }
}

/// Byte-swap unit of a VR's values in Big Endian.
fn swap_unit(vr: Vr) -> u8 {
    match &vr.0 {
        b"US" | b"SS" | b"OW" | b"AT" => 2,
        b"UL" | b"SL" | b"FL" | b"OL" | b"OF" => 4,
        b"FD" | b"SV" | b"UV" | b"OD" | b"OV" => 8,
        _ => 1,
    }
}

fn write_tag(tag: Tag, out: &mut Vec<u8>) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
}

/// An element header in Little Endian; `length` fits the VR's field (the
/// caller turned short-length VRs with longer values into UN).
fn write_header(tag: Tag, vr: Vr, length: u32, explicit: bool, out: &mut Vec<u8>) {
    write_tag(tag, out);
    if !explicit {
        out.extend_from_slice(&length.to_le_bytes());
        return;
    }
    out.extend_from_slice(&vr.0);
    if vr.has_long_length() {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&length.to_le_bytes());
    } else {
        debug_assert!(length <= u32::from(u16::MAX));
        out.extend_from_slice(&u16::try_from(length).unwrap_or(u16::MAX).to_le_bytes());
    }
}

/// Transcodes a whole data set held in memory.
pub fn transcode(
    bytes: &[u8],
    input: DatasetEncoding,
    output: DatasetEncoding,
) -> Result<Vec<u8>, TranscodeError> {
    let mut transcoder = Transcoder::new(input, output)?;
    let mut out = Vec::with_capacity(bytes.len().saturating_add(bytes.len() / 8));
    transcoder.feed(bytes, &mut out)?;
    transcoder.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
