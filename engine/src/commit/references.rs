//! [`References`]: the referenced SOP instances of one commitment
//! transaction, packed. A request may name 100,000 instances and wait an
//! hour for them; as decoded (two `String`s a reference) 50,000 references
//! held about 20 MiB (issue #19). Packed they take about 33 bytes each:
//!
//! - the SOP Class UIDs in a small table (a request names a handful), each
//!   reference a one-byte index into it;
//! - each SOP Instance UID as one record in a single buffer: a header (the
//!   class index, then the length and whether the text is packed), then the
//!   text, two characters a byte when it is made of digits and dots (every
//!   valid UID), else as received;
//! - the start of each record, to reach reference `i` at once.
//!
//! The same bytes are the references' part of the index record
//! (`super::payload`, version 2): nothing to convert on the way in or out.

use sluice_net::dimse::commitment::SopReference;

/// At most this many distinct SOP classes in one transaction (a request
/// naming more is refused: no archive has that many storage classes).
pub const CLASSES_MAX: usize = 255;

/// The longest SOP Instance UID kept (bytes); a longer one is refused.
pub const INSTANCE_UID_BYTES_MAX: usize = 1024;

/// Why references cannot be packed or unpacked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferencesError {
    /// More than [`CLASSES_MAX`] distinct SOP classes.
    #[error("more than {CLASSES_MAX} distinct SOP classes in one request")]
    TooManyClasses,
    /// A SOP Instance UID longer than [`INSTANCE_UID_BYTES_MAX`].
    #[error("a SOP Instance UID of {0} bytes (at most {INSTANCE_UID_BYTES_MAX})")]
    InstanceUidTooLong(usize),
    /// Stored bytes that do not hold references.
    #[error("packed references are damaged: {0}")]
    Damaged(&'static str),
}

/// The packed references of one transaction (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    classes: Vec<String>,
    /// Each reference's record: class index (u8), header (u16 LE: length
    /// in characters << 1 | packed), text.
    records: Vec<u8>,
    /// Where each record starts in `records`.
    starts: Vec<u32>,
}

/// Bytes of a record's class index and header.
const RECORD_HEADER_BYTES: usize = 3;

/// A character of a packed UID: '0'..='9' are 0..=9, '.' is 10.
fn nibble(character: u8) -> Option<u8> {
    match character {
        b'0'..=b'9' => Some(character - b'0'),
        b'.' => Some(10),
        _ => None,
    }
}

fn character(nibble: u8) -> Option<char> {
    match nibble {
        0..=9 => Some(char::from(b'0' + nibble)),
        10 => Some('.'),
        _ => None,
    }
}

impl References {
    /// Packs `references`.
    pub fn pack(references: &[SopReference]) -> Result<References, ReferencesError> {
        let mut packed = References {
            classes: Vec::new(),
            records: Vec::with_capacity(references.len() * 32),
            starts: Vec::with_capacity(references.len()),
        };
        for reference in references {
            packed.push(&reference.sop_class_uid, &reference.sop_instance_uid)?;
        }
        packed.records.shrink_to_fit();
        Ok(packed)
    }

    fn push(&mut self, class: &str, instance: &str) -> Result<(), ReferencesError> {
        let class_index = match self.classes.iter().position(|known| known == class) {
            Some(index) => index,
            None => {
                if self.classes.len() >= CLASSES_MAX {
                    return Err(ReferencesError::TooManyClasses);
                }
                self.classes.push(class.to_owned());
                self.classes.len() - 1
            }
        };
        let text = instance.as_bytes();
        if text.len() > INSTANCE_UID_BYTES_MAX {
            return Err(ReferencesError::InstanceUidTooLong(text.len()));
        }
        let start = u32::try_from(self.records.len())
            .map_err(|_| ReferencesError::Damaged("more than 4 GiB of references"))?;
        self.starts.push(start);
        let packable = text.iter().all(|byte| nibble(*byte).is_some());
        // Bounded above: the length fits 15 bits.
        let header = (text.len() as u16) << 1 | u16::from(packable);
        self.records.push(class_index as u8);
        self.records.extend_from_slice(&header.to_le_bytes());
        if packable {
            for pair in text.chunks(2) {
                let high = pair.first().and_then(|byte| nibble(*byte)).unwrap_or(0);
                let low = pair.get(1).and_then(|byte| nibble(*byte)).unwrap_or(0xF);
                self.records.push(high << 4 | low);
            }
        } else {
            self.records.extend_from_slice(text);
        }
        Ok(())
    }

    /// How many references.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// No reference.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The record of reference `index`: class index, packed, length, text.
    fn record(&self, index: usize) -> Option<(usize, bool, usize, &[u8])> {
        let start = usize::try_from(*self.starts.get(index)?).ok()?;
        let header = self.records.get(start..start + RECORD_HEADER_BYTES)?;
        let class = usize::from(*header.first()?);
        let header = u16::from_le_bytes([*header.get(1)?, *header.get(2)?]);
        let (length, packed) = (usize::from(header >> 1), header & 1 == 1);
        let bytes = if packed { length.div_ceil(2) } else { length };
        let text_start = start + RECORD_HEADER_BYTES;
        let text = self.records.get(text_start..text_start + bytes)?;
        Some((class, packed, length, text))
    }

    /// The SOP Class UID of reference `index`.
    pub fn class_uid(&self, index: usize) -> Option<&str> {
        let (class, ..) = self.record(index)?;
        self.classes.get(class).map(String::as_str)
    }

    /// Writes the SOP Instance UID of reference `index` into `out`
    /// (cleared first); false when there is no such reference.
    pub fn instance_uid_into(&self, index: usize, out: &mut String) -> bool {
        out.clear();
        let Some((_, packed, length, text)) = self.record(index) else {
            return false;
        };
        if packed {
            for byte in text {
                for nibble in [byte >> 4, byte & 0xF] {
                    if out.len() < length {
                        out.extend(character(nibble));
                    }
                }
            }
        } else {
            out.push_str(&String::from_utf8_lossy(text));
        }
        true
    }

    /// The SOP Instance UID of reference `index`.
    pub fn instance_uid(&self, index: usize) -> Option<String> {
        let mut uid = String::new();
        self.instance_uid_into(index, &mut uid).then_some(uid)
    }

    /// Whether reference `index` is SOP instance `uid`, without unpacking
    /// it into memory.
    pub fn instance_uid_is(&self, index: usize, uid: &str) -> bool {
        let Some((_, packed, length, text)) = self.record(index) else {
            return false;
        };
        if !packed {
            return text == uid.as_bytes();
        }
        if uid.len() != length {
            return false;
        }
        uid.as_bytes().chunks(2).zip(text).all(|(pair, byte)| {
            let high = pair.first().and_then(|byte| nibble(*byte));
            let low = match pair.get(1) {
                Some(byte) => nibble(*byte),
                None => Some(0xF),
            };
            high == Some(byte >> 4) && low == Some(byte & 0xF)
        })
    }

    /// Reference `index` as decoded.
    pub fn get(&self, index: usize) -> Option<SopReference> {
        Some(SopReference {
            sop_class_uid: self.class_uid(index)?.to_owned(),
            sop_instance_uid: self.instance_uid(index)?,
        })
    }

    /// Every reference, decoded.
    pub fn iter(&self) -> impl Iterator<Item = SopReference> + '_ {
        (0..self.len()).filter_map(|index| self.get(index))
    }

    /// Only the references at `indices` (in that order), packed again.
    pub fn subset(&self, indices: impl IntoIterator<Item = usize>) -> References {
        let mut subset = References::default();
        let mut uid = String::new();
        for index in indices {
            if let (Some(class), true) = (
                self.class_uid(index),
                self.instance_uid_into(index, &mut uid),
            ) {
                // Classes and lengths were accepted once already.
                let _ = subset.push(class, &uid);
            }
        }
        subset
    }

    /// The heap bytes this value holds (what a memory budget counts).
    pub fn heap_bytes(&self) -> usize {
        self.records.capacity()
            + self.starts.capacity() * std::mem::size_of::<u32>()
            + self.classes.capacity() * std::mem::size_of::<String>()
            + self.classes.iter().map(String::capacity).sum::<usize>()
    }

    /// Appends the stored form: the class count (u8) and each class (u16
    /// LE length, bytes), the reference count (u32 LE), the records' length
    /// (u32 LE) and the records.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.classes.len() as u8);
        for class in &self.classes {
            let bytes = class.as_bytes();
            let length = bytes.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(length as u16).to_le_bytes());
            out.extend_from_slice(bytes.get(..length).unwrap_or_default());
        }
        out.extend_from_slice(&(self.starts.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.records);
    }

    /// Reads the stored form from the start of `bytes`; the rest of `bytes`
    /// after it. Every record is checked, so a damaged form is an error.
    pub fn decode(bytes: &[u8]) -> Result<(References, &[u8]), ReferencesError> {
        let damaged = ReferencesError::Damaged;
        let (&class_count, mut rest) = bytes.split_first().ok_or(damaged("truncated"))?;
        let mut classes = Vec::with_capacity(usize::from(class_count));
        for _ in 0..class_count {
            let (length, after) = rest.split_first_chunk::<2>().ok_or(damaged("truncated"))?;
            let length = usize::from(u16::from_le_bytes(*length));
            let class = after.get(..length).ok_or(damaged("truncated"))?;
            classes
                .push(String::from_utf8(class.to_vec()).map_err(|_| damaged("class not UTF-8"))?);
            rest = after.get(length..).unwrap_or_default();
        }
        let (count, after) = rest.split_first_chunk::<4>().ok_or(damaged("truncated"))?;
        let count = u32::from_le_bytes(*count) as usize;
        let (length, after) = after.split_first_chunk::<4>().ok_or(damaged("truncated"))?;
        let length = u32::from_le_bytes(*length) as usize;
        let records = after.get(..length).ok_or(damaged("truncated"))?;
        let rest = after.get(length..).unwrap_or_default();
        // Each record is at least its header: bound the allocation.
        let mut starts = Vec::with_capacity(count.min(records.len() / RECORD_HEADER_BYTES));
        let mut at = 0usize;
        for _ in 0..count {
            let header = records
                .get(at..at + RECORD_HEADER_BYTES)
                .ok_or(damaged("record cut"))?;
            let (class, header) = match header {
                [class, low, high] => (*class, u16::from_le_bytes([*low, *high])),
                _ => return Err(damaged("record cut")),
            };
            if usize::from(class) >= classes.len() {
                return Err(damaged("class index out of range"));
            }
            let (length, packed) = (usize::from(header >> 1), header & 1 == 1);
            let text = if packed { length.div_ceil(2) } else { length };
            if records.len() < at + RECORD_HEADER_BYTES + text {
                return Err(damaged("record cut"));
            }
            starts.push(u32::try_from(at).map_err(|_| damaged("too long"))?);
            at += RECORD_HEADER_BYTES + text;
        }
        if at != records.len() {
            return Err(damaged("bytes after the last record"));
        }
        Ok((
            References {
                classes,
                records: records.to_vec(),
                starts,
            },
            rest,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(class: &str, instance: &str) -> SopReference {
        SopReference {
            sop_class_uid: class.into(),
            sop_instance_uid: instance.into(),
        }
    }

    #[test]
    fn references_round_trip_packed_or_as_received() {
        let input = vec![
            reference("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.1"),
            reference("1.2.840.10008.5.1.4.1.1.4", "1.2.3"),
            reference("1.2.840.10008.5.1.4.1.1.2", "12"),
            // Not a UID: kept as received.
            reference("1.2.840.10008.5.1.4.1.1.2", "1.2.x\u{e9}"),
            reference("1.2.840.10008.5.1.4.1.1.2", ""),
        ];
        let packed = References::pack(&input).unwrap();
        assert_eq!(packed.len(), input.len());
        assert_eq!(packed.iter().collect::<Vec<_>>(), input);
        for (index, reference) in input.iter().enumerate() {
            assert!(packed.instance_uid_is(index, &reference.sop_instance_uid));
            assert!(!packed.instance_uid_is(index, "1.2.4"));
        }
        assert!(!packed.instance_uid_is(1, "1.2.30"));
        assert!(!packed.instance_uid_is(99, "1.2.3"));
        let mut stored = Vec::new();
        packed.encode_into(&mut stored);
        stored.extend_from_slice(b"tail");
        let (decoded, rest) = References::decode(&stored).unwrap();
        assert_eq!(decoded, packed);
        assert_eq!(rest, b"tail");
        // Every cut is an error, never a panic.
        for end in 0..stored.len() - 4 {
            assert!(References::decode(&stored[..end]).is_err(), "cut at {end}");
        }
        let subset = packed.subset([3, 0]);
        assert_eq!(subset.get(0), Some(input[3].clone()));
        assert_eq!(subset.get(1), Some(input[0].clone()));
        assert_eq!(subset.len(), 2);
    }

    #[test]
    fn fifty_thousand_references_take_about_thirty_three_bytes_each() {
        let input: Vec<SopReference> = (0..50_000)
            .map(|index| {
                reference(
                    "1.2.840.10008.5.1.4.1.1.2",
                    &format!("1.2.826.0.1.3680043.10.1234.81.1.{:020}", index * 7919),
                )
            })
            .collect();
        let packed = References::pack(&input).unwrap();
        let per_reference = packed.heap_bytes() / input.len();
        assert!(per_reference <= 40, "{per_reference} bytes per reference");
        let mut stored = Vec::new();
        packed.encode_into(&mut stored);
        assert!(stored.len() / input.len() <= 36, "{} stored", stored.len());
    }

    #[test]
    fn too_many_classes_or_too_long_uids_are_refused() {
        let classes: Vec<SopReference> = (0..=CLASSES_MAX)
            .map(|class| reference(&format!("1.2.{class}"), "1.2.3"))
            .collect();
        assert_eq!(
            References::pack(&classes),
            Err(ReferencesError::TooManyClasses)
        );
        let long = "1".repeat(INSTANCE_UID_BYTES_MAX + 1);
        assert_eq!(
            References::pack(&[reference("1.2", &long)]),
            Err(ReferencesError::InstanceUidTooLong(
                INSTANCE_UID_BYTES_MAX + 1
            ))
        );
    }
}
