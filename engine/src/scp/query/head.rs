//! A stored file's head as a C-FIND candidate (`query.file_keys_on_find`):
//! the first bytes of a data set, cut to its complete top-level elements
//! before Pixel Data, decoded with net's small data-set codec.
//!
//! A head read from a file ends anywhere, often inside an element; the
//! codec decodes whole data sets only. [`complete_prefix`] walks element
//! headers (into sequences and items of undefined length, bounded in depth)
//! to find where the last complete top-level element ends, so the codec
//! gets exactly the elements that arrived whole.

use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding};

/// Deepest nesting walked (sequence in item in sequence... ).
const DEPTH_MAX: usize = 8;
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITATION: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: (u16, u16) = (0xFFFE, 0xE0DD);

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The tag, value length and header length of the element at `at`.
fn header(bytes: &[u8], at: usize, explicit: bool) -> Option<((u16, u16), u32, usize)> {
    let tag = (u16_at(bytes, at)?, u16_at(bytes, at + 2)?);
    // Items and delimiters have no VR in either encoding.
    if tag.0 == 0xFFFE || !explicit {
        return Some((tag, u32_at(bytes, at + 4)?, 8));
    }
    let vr = bytes.get(at + 4..at + 6)?;
    if matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    ) {
        Some((tag, u32_at(bytes, at + 8)?, 12))
    } else {
        Some((tag, u32::from(u16_at(bytes, at + 6)?), 8))
    }
}

/// Where the element (or item) at `at` ends, if it ends within `bytes`.
fn element_end(bytes: &[u8], at: usize, explicit: bool, depth: usize) -> Option<usize> {
    let (tag, length, header_length) = header(bytes, at, explicit)?;
    let value = at.checked_add(header_length)?;
    if length != UNDEFINED_LENGTH {
        let end = value.checked_add(length as usize)?;
        return (end <= bytes.len()).then_some(end);
    }
    if depth >= DEPTH_MAX {
        return None;
    }
    // Undefined length: a sequence's items (or an item's elements) up to
    // the matching delimiter. Items of a sequence, and sequences' items,
    // are walked the same way: whatever comes, until the delimiter.
    let delimiter = if tag == ITEM {
        ITEM_DELIMITATION
    } else {
        SEQUENCE_DELIMITATION
    };
    let mut position = value;
    loop {
        let (inner_tag, _, _) = header(bytes, position, explicit)?;
        if inner_tag == delimiter {
            return position.checked_add(8).filter(|end| *end <= bytes.len());
        }
        position = element_end(bytes, position, explicit, depth + 1)?;
    }
}

/// The length of the longest prefix of `bytes` made of complete top-level
/// elements, stopping before Pixel Data.
pub(crate) fn complete_prefix(bytes: &[u8], explicit: bool) -> usize {
    let mut position = 0;
    while position < bytes.len() {
        let Some((tag, _, _)) = header(bytes, position, explicit) else {
            break;
        };
        if tag >= PIXEL_DATA {
            break;
        }
        match element_end(bytes, position, explicit, 0) {
            Some(end) => position = end,
            None => break,
        }
    }
    position
}

/// The elements of a data set's head that arrived whole, when its
/// transfer syntax is one the small codec reads (Implicit or Explicit VR
/// Little Endian); `None` otherwise, or when the head does not decode.
pub(crate) fn decode_head(head: &[u8], transfer_syntax_uid: &str) -> Option<SmallDataset> {
    let encoding = SmallDatasetEncoding::from_transfer_syntax(transfer_syntax_uid)?;
    let explicit = encoding == SmallDatasetEncoding::ExplicitVrLittleEndian;
    let prefix = head.get(..complete_prefix(head, explicit))?;
    let limits = DatasetLimits {
        length_max: prefix.len().max(1),
        depth_max: DEPTH_MAX,
    };
    SmallDataset::decode(prefix, encoding, limits).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_net::dimse::dataset::{Element, Value, Vr};
    use sluice_net::dimse::Tag;

    fn sample() -> SmallDataset {
        let mut dataset = SmallDataset::new();
        dataset.put_str(Tag(0x0008, 0x0060), Some(Vr::CS), "CT");
        let mut item = SmallDataset::new();
        item.put_str(Tag(0x0008, 0x0100), Some(Vr::SH), "CODE");
        dataset.put_sequence(Tag(0x0008, 0x1032), vec![item]);
        dataset.put_str(Tag(0x0010, 0x0010), Some(Vr::PN), "Doe^John");
        dataset.put(Element {
            tag: Tag(0x7FE0, 0x0010),
            vr: Vr::OW,
            value: Value::Bytes(vec![0; 64]),
        });
        dataset
    }

    #[test]
    fn every_cut_keeps_the_whole_elements_before_it() {
        for encoding in [
            SmallDatasetEncoding::ExplicitVrLittleEndian,
            SmallDatasetEncoding::ImplicitVrLittleEndian,
        ] {
            let explicit = encoding == SmallDatasetEncoding::ExplicitVrLittleEndian;
            let bytes = sample().encode(encoding).unwrap();
            let full = complete_prefix(&bytes, explicit);
            let decoded =
                SmallDataset::decode(&bytes[..full], encoding, DatasetLimits::default()).unwrap();
            assert_eq!(decoded.str(Tag(0x0010, 0x0010)), Some("Doe^John"));
            assert!(
                decoded.get(Tag(0x7FE0, 0x0010)).is_none(),
                "stops at pixel data"
            );
            for cut in 0..bytes.len() {
                let prefix = complete_prefix(&bytes[..cut], explicit);
                assert!(prefix <= cut);
                let decoded =
                    SmallDataset::decode(&bytes[..prefix], encoding, DatasetLimits::default());
                assert!(decoded.is_ok(), "cut {cut}: {decoded:?}");
            }
        }
    }

    #[test]
    fn undefined_length_sequences_are_walked_to_their_delimiter() {
        // (0008,1032) SQ of undefined length, one item of undefined length.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[
            0x08, 0x00, 0x32, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend_from_slice(&[
            0x08, 0x00, 0x00, 0x01, b'S', b'H', 4, 0, b'C', b'O', b'D', b'E',
        ]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let sequence_end = bytes.len();
        bytes.extend_from_slice(&[
            0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'D', b'o', b'e', b' ',
        ]);
        assert_eq!(complete_prefix(&bytes, true), bytes.len());
        assert_eq!(
            complete_prefix(&bytes[..bytes.len() - 1], true),
            sequence_end
        );
        assert_eq!(complete_prefix(&bytes[..sequence_end - 1], true), 0);
        let head = decode_head(&bytes, sluice_net::uid::ts::EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
        assert_eq!(head.str(Tag(0x0010, 0x0010)), Some("Doe"));
    }
}
