//! A small, bounded data-set codec for the tiny data sets DIMSE services
//! exchange: Storage Commitment action and event information, C-FIND and
//! C-MOVE identifiers. Not for images: a whole data set is held in memory, so
//! [`DatasetLimits`] caps its length and nesting.
//!
//! Reads and writes Implicit VR Little Endian and Explicit VR Little Endian,
//! sequences and items included (defined or undefined length on input;
//! undefined length with delimiters on output). Implicit VR needs VRs from a
//! dictionary: [`implicit_vr`] knows the attributes the services use, every
//! other tag is UN (and an undefined-length element is a sequence, PS3.5
//! §6.2.2). Explicit VR Big Endian is not supported here: the services
//! negotiate little-endian transfer syntaxes for these SOP classes.

use super::Tag;

/// A value representation, as its two ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vr(pub [u8; 2]);

impl Vr {
    /// VR AE.
    pub const AE: Self = Self(*b"AE");
    /// VR AS.
    pub const AS: Self = Self(*b"AS");
    /// VR AT.
    pub const AT: Self = Self(*b"AT");
    /// VR CS.
    pub const CS: Self = Self(*b"CS");
    /// VR DA.
    pub const DA: Self = Self(*b"DA");
    /// VR DS.
    pub const DS: Self = Self(*b"DS");
    /// VR DT.
    pub const DT: Self = Self(*b"DT");
    /// VR FD.
    pub const FD: Self = Self(*b"FD");
    /// VR FL.
    pub const FL: Self = Self(*b"FL");
    /// VR IS.
    pub const IS: Self = Self(*b"IS");
    /// VR LO.
    pub const LO: Self = Self(*b"LO");
    /// VR LT.
    pub const LT: Self = Self(*b"LT");
    /// VR OB.
    pub const OB: Self = Self(*b"OB");
    /// VR OD.
    pub const OD: Self = Self(*b"OD");
    /// VR OF.
    pub const OF: Self = Self(*b"OF");
    /// VR OL.
    pub const OL: Self = Self(*b"OL");
    /// VR OV.
    pub const OV: Self = Self(*b"OV");
    /// VR OW.
    pub const OW: Self = Self(*b"OW");
    /// VR PN.
    pub const PN: Self = Self(*b"PN");
    /// VR SH.
    pub const SH: Self = Self(*b"SH");
    /// VR SL.
    pub const SL: Self = Self(*b"SL");
    /// VR SQ.
    pub const SQ: Self = Self(*b"SQ");
    /// VR SS.
    pub const SS: Self = Self(*b"SS");
    /// VR ST.
    pub const ST: Self = Self(*b"ST");
    /// VR SV.
    pub const SV: Self = Self(*b"SV");
    /// VR TM.
    pub const TM: Self = Self(*b"TM");
    /// VR UC.
    pub const UC: Self = Self(*b"UC");
    /// VR UI.
    pub const UI: Self = Self(*b"UI");
    /// VR UL.
    pub const UL: Self = Self(*b"UL");
    /// VR UN.
    pub const UN: Self = Self(*b"UN");
    /// VR UR.
    pub const UR: Self = Self(*b"UR");
    /// VR US.
    pub const US: Self = Self(*b"US");
    /// VR UT.
    pub const UT: Self = Self(*b"UT");
    /// VR UV.
    pub const UV: Self = Self(*b"UV");
}

impl Vr {
    /// Whether Explicit VR encodes this VR with a 2-byte reserved field and a
    /// 4-byte length (PS3.5 Table 7.1-1); unknown VRs do too (PS3.5 §7.1.2).
    pub const fn has_long_length(self) -> bool {
        !matches!(
            &self.0,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FD"
                | b"FL"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        )
    }

    /// The byte a value of this VR is padded with to even length.
    const fn padding(self) -> u8 {
        match &self.0 {
            b"UI" | b"OB" | b"UN" => 0,
            _ => b' ',
        }
    }
}

/// The VR of the attributes the services use, for Implicit VR decoding and
/// for building data sets; `UN` for anything else.
pub fn implicit_vr(tag: Tag) -> Vr {
    match (tag.0, tag.1) {
        (_, 0x0000) => Vr::UL,
        (0x0008, 0x0005) => Vr::CS,
        (0x0008, 0x0016 | 0x0018 | 0x0058 | 0x1150 | 0x1155 | 0x1195) => Vr::UI,
        (0x0008, 0x0020..=0x0023) => Vr::DA,
        (0x0008, 0x0030..=0x0033) => Vr::TM,
        (0x0008, 0x0050) => Vr::SH,
        (0x0008, 0x0052 | 0x0056 | 0x0060 | 0x0061 | 0x0062) => Vr::CS,
        (0x0008, 0x0054) => Vr::AE,
        (0x0008, 0x0090) => Vr::PN,
        (0x0008, 0x1030 | 0x103E) => Vr::LO,
        (0x0008, 0x1160) => Vr::IS,
        (0x0008, 0x1197) => Vr::US,
        (0x0008, 0x1198 | 0x1199 | 0x1115 | 0x1140 | 0x1110) => Vr::SQ,
        (0x0010, 0x0010) => Vr::PN,
        (0x0010, 0x0020 | 0x1000) => Vr::LO,
        (0x0010, 0x0030) => Vr::DA,
        (0x0010, 0x0032) => Vr::TM,
        (0x0010, 0x0040) => Vr::CS,
        (0x0010, 0x1010) => Vr::AS,
        (0x0010, 0x1020 | 0x1030) => Vr::DS,
        (0x0020, 0x000D | 0x000E) => Vr::UI,
        (0x0020, 0x0010) => Vr::SH,
        (0x0020, 0x0011 | 0x0013 | 0x1200 | 0x1202 | 0x1204 | 0x1206 | 0x1208 | 0x1209) => Vr::IS,
        (0x0028, 0x0002 | 0x0010 | 0x0011 | 0x0100 | 0x0101 | 0x0102 | 0x0103) => Vr::US,
        (0x0028, 0x0004) => Vr::CS,
        (0x0028, 0x0008) => Vr::IS,
        (0x0040, 0xA124) => Vr::UI,
        (0x0088, 0x0130) => Vr::SH,
        (0x0088, 0x0140) => Vr::UI,
        _ => Vr::UN,
    }
}

/// The encodings this codec reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmallDatasetEncoding {
    /// Implicit VR Little Endian (1.2.840.10008.1.2).
    ImplicitVrLittleEndian,
    /// Explicit VR Little Endian (1.2.840.10008.1.2.1).
    ExplicitVrLittleEndian,
}

impl SmallDatasetEncoding {
    /// The encoding of a transfer syntax UID, if this codec supports it.
    pub fn from_transfer_syntax(uid: &str) -> Option<Self> {
        match crate::uid::trim_uid_padding(uid) {
            crate::uid::ts::IMPLICIT_VR_LITTLE_ENDIAN => Some(Self::ImplicitVrLittleEndian),
            crate::uid::ts::EXPLICIT_VR_LITTLE_ENDIAN => Some(Self::ExplicitVrLittleEndian),
            _ => None,
        }
    }
}

/// Bounds on what [`SmallDataset::decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetLimits {
    /// Largest data set accepted, in bytes.
    pub length_max: usize,
    /// Deepest sequence nesting accepted (a sequence in an item in a
    /// sequence is depth 2).
    pub depth_max: usize,
}

impl Default for DatasetLimits {
    /// 16 MiB (a commitment request for ~100 000 instances) and depth 8.
    fn default() -> Self {
        Self {
            length_max: 16 * 1024 * 1024,
            depth_max: 8,
        }
    }
}

/// The value of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The raw value bytes (padding included as received).
    Bytes(Vec<u8>),
    /// The items of a sequence.
    Sequence(Vec<SmallDataset>),
}

/// One element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Tag.
    pub tag: Tag,
    /// VR (from the stream in Explicit VR, from [`implicit_vr`] otherwise).
    pub vr: Vr,
    /// Value.
    pub value: Value,
}

/// A data set (or a sequence item): elements sorted by tag, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmallDataset {
    elements: Vec<Element>,
}

/// Why a small data set cannot be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// Longer than [`DatasetLimits::length_max`].
    #[error("data set of {length} bytes exceeds the limit of {limit}")]
    TooLong {
        /// Length in bytes.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Sequences nested deeper than [`DatasetLimits::depth_max`].
    #[error("sequences nested deeper than {limit} at offset {offset}")]
    TooDeep {
        /// Offset of the element.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// An element header or value runs past the end of its container.
    #[error("element {tag} at offset {offset} runs past the end of its container")]
    Truncated {
        /// Offset of the element.
        offset: usize,
        /// Tag (0000,0000 when the header itself was cut).
        tag: Tag,
    },
    /// An undefined length where none is allowed, or a bad delimiter.
    #[error("unexpected {what} at offset {offset} (tag {tag})")]
    Malformed {
        /// Offset.
        offset: usize,
        /// Tag found there.
        tag: Tag,
        /// What was wrong.
        what: &'static str,
    },
    /// The same tag twice in one data set or item.
    #[error("element {tag} appears twice")]
    DuplicateElement {
        /// The tag.
        tag: Tag,
    },
    /// A value too long for a 2-byte length field (Explicit VR) or for u32.
    #[error("value of {tag} is {length} bytes, too long for VR {vr}", vr = String::from_utf8_lossy(&vr.0))]
    ValueTooLong {
        /// Tag.
        tag: Tag,
        /// VR.
        vr: Vr,
        /// Length.
        length: usize,
    },
}

const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);

impl SmallDataset {
    /// An empty data set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The elements in tag order.
    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The element with `tag`.
    pub fn get(&self, tag: Tag) -> Option<&Element> {
        self.elements
            .binary_search_by(|element| element.tag.cmp(&tag))
            .ok()
            .and_then(|index| self.elements.get(index))
    }

    /// Inserts or replaces an element, keeping tag order.
    pub fn put(&mut self, element: Element) {
        match self
            .elements
            .binary_search_by(|existing| existing.tag.cmp(&element.tag))
        {
            Ok(index) => {
                if let Some(slot) = self.elements.get_mut(index) {
                    *slot = element;
                }
            }
            Err(index) => self.elements.insert(index, element),
        }
    }

    /// Removes the element with `tag`.
    pub fn remove(&mut self, tag: Tag) -> Option<Element> {
        let index = self
            .elements
            .binary_search_by(|element| element.tag.cmp(&tag))
            .ok()?;
        Some(self.elements.remove(index))
    }

    /// Puts a text element with the VR of [`implicit_vr`] (or `vr` if given).
    pub fn put_str(&mut self, tag: Tag, vr: Option<Vr>, value: &str) {
        let vr = vr.unwrap_or_else(|| implicit_vr(tag));
        self.put(Element {
            tag,
            vr,
            value: Value::Bytes(value.as_bytes().to_vec()),
        });
    }

    /// Puts a US element.
    pub fn put_u16(&mut self, tag: Tag, value: u16) {
        self.put(Element {
            tag,
            vr: Vr::US,
            value: Value::Bytes(value.to_le_bytes().to_vec()),
        });
    }

    /// Puts a sequence.
    pub fn put_sequence(&mut self, tag: Tag, items: Vec<SmallDataset>) {
        self.put(Element {
            tag,
            vr: Vr::SQ,
            value: Value::Sequence(items),
        });
    }

    /// The raw bytes of a non-sequence element.
    pub fn bytes(&self, tag: Tag) -> Option<&[u8]> {
        match &self.get(tag)?.value {
            Value::Bytes(bytes) => Some(bytes),
            Value::Sequence(_) => None,
        }
    }

    /// A text value with its padding (trailing spaces and NULs, leading
    /// spaces) removed; `None` if absent, a sequence, or not UTF-8. The text
    /// is returned as stored: decode it with the data set's character set
    /// ([`crate::charset`]) when it may hold non-ASCII bytes.
    pub fn str(&self, tag: Tag) -> Option<&str> {
        let bytes = self.bytes(tag)?;
        std::str::from_utf8(bytes)
            .ok()
            .map(|text| text.trim_end_matches([' ', '\0']).trim_start_matches(' '))
    }

    /// A US value (little endian).
    pub fn u16(&self, tag: Tag) -> Option<u16> {
        match self.bytes(tag)? {
            [b0, b1] => Some(u16::from_le_bytes([*b0, *b1])),
            _ => None,
        }
    }

    /// The items of a sequence element.
    pub fn sequence(&self, tag: Tag) -> Option<&[SmallDataset]> {
        match &self.get(tag)?.value {
            Value::Sequence(items) => Some(items),
            Value::Bytes(_) => None,
        }
    }

    /// Decodes a whole data set.
    pub fn decode(
        bytes: &[u8],
        encoding: SmallDatasetEncoding,
        limits: DatasetLimits,
    ) -> Result<Self, DatasetError> {
        if bytes.len() > limits.length_max {
            return Err(DatasetError::TooLong {
                length: bytes.len(),
                limit: limits.length_max,
            });
        }
        let mut reader = Reader {
            bytes,
            position: 0,
            limits,
        };
        let explicit = encoding == SmallDatasetEncoding::ExplicitVrLittleEndian;
        reader.dataset(bytes.len(), explicit, 0, false)
    }

    /// Encodes the data set, appending to `out`.
    pub fn encode_into(
        &self,
        encoding: SmallDatasetEncoding,
        out: &mut Vec<u8>,
    ) -> Result<(), DatasetError> {
        let explicit = encoding == SmallDatasetEncoding::ExplicitVrLittleEndian;
        for element in &self.elements {
            write_element(element, explicit, out)?;
        }
        Ok(())
    }

    /// Encodes the data set.
    pub fn encode(&self, encoding: SmallDatasetEncoding) -> Result<Vec<u8>, DatasetError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(encoding, &mut out)?;
        Ok(out)
    }
}

fn write_tag(tag: Tag, out: &mut Vec<u8>) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
}

fn write_header(
    tag: Tag,
    vr: Vr,
    length: u32,
    explicit: bool,
    out: &mut Vec<u8>,
) -> Result<(), DatasetError> {
    write_tag(tag, out);
    if explicit {
        out.extend_from_slice(&vr.0);
        if vr.has_long_length() {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&length.to_le_bytes());
        } else {
            let short = u16::try_from(length).map_err(|_| DatasetError::ValueTooLong {
                tag,
                vr,
                length: usize::try_from(length).unwrap_or(usize::MAX),
            })?;
            out.extend_from_slice(&short.to_le_bytes());
        }
    } else {
        out.extend_from_slice(&length.to_le_bytes());
    }
    Ok(())
}

fn write_element(element: &Element, explicit: bool, out: &mut Vec<u8>) -> Result<(), DatasetError> {
    match &element.value {
        Value::Bytes(bytes) => {
            let padded_length = bytes.len().saturating_add(bytes.len() % 2);
            let length = u32::try_from(padded_length)
                .ok()
                .filter(|length| *length != UNDEFINED_LENGTH)
                .ok_or(DatasetError::ValueTooLong {
                    tag: element.tag,
                    vr: element.vr,
                    length: bytes.len(),
                })?;
            write_header(element.tag, element.vr, length, explicit, out)?;
            out.extend_from_slice(bytes);
            if bytes.len() % 2 == 1 {
                out.push(element.vr.padding());
            }
        }
        Value::Sequence(items) => {
            write_header(element.tag, Vr::SQ, UNDEFINED_LENGTH, explicit, out)?;
            for item in items {
                write_tag(ITEM, out);
                out.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
                item.encode_into(
                    if explicit {
                        SmallDatasetEncoding::ExplicitVrLittleEndian
                    } else {
                        SmallDatasetEncoding::ImplicitVrLittleEndian
                    },
                    out,
                )?;
                write_tag(ITEM_DELIMITATION, out);
                out.extend_from_slice(&0u32.to_le_bytes());
            }
            write_tag(SEQUENCE_DELIMITATION, out);
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    limits: DatasetLimits,
}

/// One element header as read.
struct Header {
    tag: Tag,
    vr: Vr,
    length: u32,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, end: usize, tag: Tag) -> Result<[u8; N], DatasetError> {
        let offset = self.position;
        let next = offset.checked_add(N).filter(|next| *next <= end);
        match next
            .and_then(|next| self.bytes.get(offset..next))
            .and_then(|slice| slice.first_chunk::<N>())
        {
            Some(chunk) => {
                self.position = offset.saturating_add(N);
                Ok(*chunk)
            }
            None => Err(DatasetError::Truncated { offset, tag }),
        }
    }

    fn tag(&mut self, end: usize) -> Result<Tag, DatasetError> {
        let [g0, g1, e0, e1] = self.take::<4>(end, Tag(0, 0))?;
        Ok(Tag(
            u16::from_le_bytes([g0, g1]),
            u16::from_le_bytes([e0, e1]),
        ))
    }

    fn header(&mut self, end: usize, explicit: bool) -> Result<Header, DatasetError> {
        let tag = self.tag(end)?;
        if tag.0 == 0xFFFE || !explicit {
            let length = u32::from_le_bytes(self.take::<4>(end, tag)?);
            let vr = if tag.0 == 0xFFFE {
                Vr::UN
            } else {
                implicit_vr(tag)
            };
            return Ok(Header { tag, vr, length });
        }
        let vr = Vr(self.take::<2>(end, tag)?);
        if !vr.0.iter().all(u8::is_ascii_uppercase) {
            return Err(DatasetError::Malformed {
                offset: self.position,
                tag,
                what: "invalid VR",
            });
        }
        let length = if vr.has_long_length() {
            self.take::<2>(end, tag)?;
            u32::from_le_bytes(self.take::<4>(end, tag)?)
        } else {
            u32::from(u16::from_le_bytes(self.take::<2>(end, tag)?))
        };
        Ok(Header { tag, vr, length })
    }

    /// Reads elements until `end`, or until an item delimitation if
    /// `delimited` (undefined-length item).
    fn dataset(
        &mut self,
        end: usize,
        explicit: bool,
        depth: usize,
        delimited: bool,
    ) -> Result<SmallDataset, DatasetError> {
        let mut dataset = SmallDataset::new();
        loop {
            if self.position >= end {
                if delimited {
                    return Err(DatasetError::Truncated {
                        offset: self.position,
                        tag: ITEM_DELIMITATION,
                    });
                }
                return Ok(dataset);
            }
            let offset = self.position;
            let header = self.header(end, explicit)?;
            if header.tag == ITEM_DELIMITATION && delimited {
                return Ok(dataset);
            }
            if header.tag.0 == 0xFFFE {
                return Err(DatasetError::Malformed {
                    offset,
                    tag: header.tag,
                    what: "delimiter outside its context",
                });
            }
            let is_sequence =
                header.vr == Vr::SQ || (header.length == UNDEFINED_LENGTH && header.vr == Vr::UN);
            let value = if is_sequence {
                if depth >= self.limits.depth_max {
                    return Err(DatasetError::TooDeep {
                        offset,
                        limit: self.limits.depth_max,
                    });
                }
                // An undefined-length UN holds Implicit VR LE (PS3.5 §6.2.2).
                let inner_explicit = explicit && header.vr == Vr::SQ;
                Value::Sequence(self.sequence(
                    header.tag,
                    header.length,
                    end,
                    inner_explicit,
                    depth.saturating_add(1),
                    offset,
                )?)
            } else {
                if header.length == UNDEFINED_LENGTH {
                    return Err(DatasetError::Malformed {
                        offset,
                        tag: header.tag,
                        what: "undefined length",
                    });
                }
                let value_end = self.value_end(header.length, end, offset, header.tag)?;
                let value = self
                    .bytes
                    .get(self.position..value_end)
                    .unwrap_or_default()
                    .to_vec();
                self.position = value_end;
                Value::Bytes(value)
            };
            if dataset.get(header.tag).is_some() {
                return Err(DatasetError::DuplicateElement { tag: header.tag });
            }
            // Elements normally arrive in order: push is then an append.
            dataset.put(Element {
                tag: header.tag,
                vr: if is_sequence { Vr::SQ } else { header.vr },
                value,
            });
        }
    }

    fn value_end(
        &self,
        length: u32,
        end: usize,
        offset: usize,
        tag: Tag,
    ) -> Result<usize, DatasetError> {
        usize::try_from(length)
            .ok()
            .and_then(|length| self.position.checked_add(length))
            .filter(|value_end| *value_end <= end)
            .ok_or(DatasetError::Truncated { offset, tag })
    }

    fn sequence(
        &mut self,
        sequence_tag: Tag,
        sequence_length: u32,
        end: usize,
        explicit: bool,
        depth: usize,
        offset: usize,
    ) -> Result<Vec<SmallDataset>, DatasetError> {
        let delimited = sequence_length == UNDEFINED_LENGTH;
        let sequence_end = if delimited {
            end
        } else {
            self.value_end(sequence_length, end, offset, sequence_tag)?
        };
        let mut items = Vec::new();
        loop {
            if self.position >= sequence_end {
                if delimited {
                    return Err(DatasetError::Truncated {
                        offset: self.position,
                        tag: SEQUENCE_DELIMITATION,
                    });
                }
                return Ok(items);
            }
            let item_offset = self.position;
            let tag = self.tag(sequence_end)?;
            let length = u32::from_le_bytes(self.take::<4>(sequence_end, tag)?);
            match tag {
                SEQUENCE_DELIMITATION if delimited => return Ok(items),
                ITEM if length == UNDEFINED_LENGTH => {
                    items.push(self.dataset(sequence_end, explicit, depth, true)?)
                }
                ITEM => {
                    let item_end = self.value_end(length, sequence_end, item_offset, tag)?;
                    let item = self.dataset(item_end, explicit, depth, false)?;
                    items.push(item);
                }
                _ => {
                    return Err(DatasetError::Malformed {
                        offset: item_offset,
                        tag,
                        what: "non-item in a sequence",
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SmallDataset {
        let mut item = SmallDataset::new();
        item.put_str(Tag(0x0008, 0x1150), None, "1.2.840.10008.5.1.4.1.1.2");
        item.put_str(Tag(0x0008, 0x1155), None, "1.2.3.4.5");
        let mut dataset = SmallDataset::new();
        dataset.put_str(Tag(0x0010, 0x0010), None, "Doe^Jane");
        dataset.put_str(Tag(0x0008, 0x1195), None, "1.2.3");
        dataset.put_sequence(Tag(0x0008, 0x1199), vec![item.clone(), item]);
        dataset.put_u16(Tag(0x0028, 0x0010), 512);
        dataset
    }

    #[test]
    fn round_trip_both_encodings() {
        for encoding in [
            SmallDatasetEncoding::ImplicitVrLittleEndian,
            SmallDatasetEncoding::ExplicitVrLittleEndian,
        ] {
            let dataset = sample();
            let bytes = dataset.encode(encoding).unwrap();
            assert_eq!(bytes.len() % 2, 0);
            let decoded = SmallDataset::decode(&bytes, encoding, DatasetLimits::default()).unwrap();
            assert_eq!(decoded.str(Tag(0x0008, 0x1195)), Some("1.2.3"));
            assert_eq!(decoded.str(Tag(0x0010, 0x0010)), Some("Doe^Jane"));
            assert_eq!(decoded.u16(Tag(0x0028, 0x0010)), Some(512));
            let items = decoded.sequence(Tag(0x0008, 0x1199)).unwrap();
            assert_eq!(items.len(), 2);
            assert_eq!(items[1].str(Tag(0x0008, 0x1155)), Some("1.2.3.4.5"));
            // Write again: identical bytes.
            assert_eq!(decoded.encode(encoding).unwrap(), bytes);
        }
    }

    #[test]
    fn c_find_identifier_with_universal_and_wildcard_keys() {
        // A study-level Study Root C-FIND identifier: empty values ask for
        // the attribute (universal matching), others are match keys.
        let mut identifier = SmallDataset::new();
        identifier.put_str(Tag(0x0008, 0x0052), None, "STUDY");
        identifier.put_str(Tag(0x0010, 0x0010), None, "DOE*");
        identifier.put_str(Tag(0x0008, 0x0020), None, "20240101-20240131");
        identifier.put_str(Tag(0x0020, 0x000D), None, "");
        identifier.put_str(Tag(0x0008, 0x0061), None, "");
        identifier.put_str(Tag(0x0020, 0x1208), None, "");
        for encoding in [
            SmallDatasetEncoding::ImplicitVrLittleEndian,
            SmallDatasetEncoding::ExplicitVrLittleEndian,
        ] {
            let bytes = identifier.encode(encoding).unwrap();
            let decoded = SmallDataset::decode(&bytes, encoding, DatasetLimits::default()).unwrap();
            assert_eq!(decoded.elements().len(), 6);
            assert_eq!(decoded.str(Tag(0x0008, 0x0052)), Some("STUDY"));
            assert_eq!(decoded.str(Tag(0x0010, 0x0010)), Some("DOE*"));
            assert_eq!(decoded.str(Tag(0x0020, 0x000D)), Some(""));
            assert_eq!(decoded.get(Tag(0x0008, 0x0061)).unwrap().vr, Vr::CS);
            assert_eq!(decoded.get(Tag(0x0020, 0x1208)).unwrap().vr, Vr::IS);
            // Tags come back in ascending order.
            let tags: Vec<Tag> = decoded
                .elements()
                .iter()
                .map(|element| element.tag)
                .collect();
            let mut sorted = tags.clone();
            sorted.sort();
            assert_eq!(tags, sorted);
        }
    }

    #[test]
    fn explicit_vr_header_forms() {
        let mut dataset = SmallDataset::new();
        dataset.put_str(Tag(0x0008, 0x0018), None, "1.2");
        dataset.put(Element {
            tag: Tag(0x0009, 0x0010),
            vr: Vr::OB,
            value: Value::Bytes(vec![1, 2, 3]),
        });
        let bytes = dataset
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .unwrap();
        assert_eq!(
            bytes,
            [
                8, 0, 0x18, 0, b'U', b'I', 4, 0, b'1', b'.', b'2', 0, //
                9, 0, 0x10, 0, b'O', b'B', 0, 0, 4, 0, 0, 0, 1, 2, 3, 0
            ]
        );
    }

    #[test]
    fn defined_length_sequences_and_un_sequences_decode() {
        // Implicit VR: (0008,1199) with a defined length holding one
        // defined-length item, then a private undefined-length element that
        // is a sequence by rule.
        let mut bytes = vec![0x08, 0x00, 0x99, 0x11, 20, 0, 0, 0];
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 12, 0, 0, 0]);
        bytes.extend_from_slice(&[0x08, 0x00, 0x55, 0x11, 4, 0, 0, 0, b'1', b'.', b'2', 0]);
        bytes.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let decoded = SmallDataset::decode(
            &bytes,
            SmallDatasetEncoding::ImplicitVrLittleEndian,
            DatasetLimits::default(),
        )
        .unwrap();
        let items = decoded.sequence(Tag(0x0008, 0x1199)).unwrap();
        assert_eq!(items[0].str(Tag(0x0008, 0x1155)), Some("1.2"));
        assert_eq!(decoded.sequence(Tag(0x0009, 0x1010)).unwrap().len(), 0);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let limits = DatasetLimits::default();
        let implicit = SmallDatasetEncoding::ImplicitVrLittleEndian;
        let good = sample().encode(implicit).unwrap();
        // Every truncation is an error, except at the three boundaries
        // between top-level elements (a shorter but valid data set).
        let whole = SmallDataset::decode(&good, implicit, limits).unwrap();
        let mut valid_cuts = 0;
        for cut in 1..good.len() {
            if let Ok(shorter) = SmallDataset::decode(&good[..cut], implicit, limits) {
                assert!(shorter.elements().len() < whole.elements().len());
                assert_eq!(
                    shorter.elements(),
                    &whole.elements()[..shorter.elements().len()]
                );
                valid_cuts += 1;
            }
        }
        assert_eq!(valid_cuts, 3);
        // Value length past the end.
        let bytes = [0x08, 0x00, 0x18, 0x00, 0xFF, 0xFF, 0xFF, 0x7F, b'1', 0];
        assert!(matches!(
            SmallDataset::decode(&bytes, implicit, limits),
            Err(DatasetError::Truncated {
                tag: Tag(0x0008, 0x0018),
                ..
            })
        ));
        // Too long.
        assert!(matches!(
            SmallDataset::decode(
                &good,
                implicit,
                DatasetLimits {
                    length_max: 8,
                    depth_max: 8
                }
            ),
            Err(DatasetError::TooLong { .. })
        ));
        // Too deep.
        assert!(matches!(
            SmallDataset::decode(
                &good,
                implicit,
                DatasetLimits {
                    length_max: 1 << 20,
                    depth_max: 0
                }
            ),
            Err(DatasetError::TooDeep { .. })
        ));
        // Duplicate.
        let mut twice = good[..16].to_vec();
        twice.extend_from_slice(&good[..16]);
        assert!(SmallDataset::decode(&twice, implicit, limits).is_err());
        // Stray delimiter.
        let stray = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        assert!(matches!(
            SmallDataset::decode(&stray, implicit, limits),
            Err(DatasetError::Malformed { .. })
        ));
        // Bad explicit VR.
        let bad_vr = [0x08, 0x00, 0x18, 0x00, b'u', b'i', 0, 0];
        assert!(matches!(
            SmallDataset::decode(
                &bad_vr,
                SmallDatasetEncoding::ExplicitVrLittleEndian,
                limits
            ),
            Err(DatasetError::Malformed {
                what: "invalid VR",
                ..
            })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0DA7_A5E7),
            ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
                                    explicit in proptest::prelude::any::<bool>()) {
            let encoding = if explicit {
                SmallDatasetEncoding::ExplicitVrLittleEndian
            } else {
                SmallDatasetEncoding::ImplicitVrLittleEndian
            };
            if let Ok(dataset) = SmallDataset::decode(&bytes, encoding, DatasetLimits::default()) {
                // Whatever decodes re-encodes, and decodes again to the same.
                let again = dataset.encode(encoding).unwrap();
                let decoded = SmallDataset::decode(&again, encoding, DatasetLimits::default()).unwrap();
                proptest::prop_assert_eq!(decoded.elements().len(), dataset.elements().len());
            }
        }
    }
}
