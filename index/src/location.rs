//! Where an instance's bytes are: its own file (the files layout, and every
//! quarantined instance the engine writes) or a record in a segment (the
//! segments layout, docs/design/segments.md), and the index's state of each
//! segment. Schema 6 (`locations`, `segments`); a file id without a
//! `locations` row is a file, so an index of schema 5 reads unchanged.
//!
//! Schema 8 adds `segment_objects`: per sealed segment, the object it was
//! uploaded to (verified) and whether the local file was evicted since
//! ([`SegmentObject`], docs/design/scale-out.md, "Object store").
//!
//! Both values are fixed-width big-endian fields, not rkyv records: they are
//! small, read on every retrieval, and never grow optional fields.

use crate::error::IndexError;

/// Where an instance's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Location {
    /// Its own file, named by its file id (the files layout).
    #[default]
    File,
    /// A record in a segment.
    Record(RecordPlace),
}

/// A record's place in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPlace {
    /// The segment (the engine names its file from this id).
    pub segment: u64,
    /// Where the record starts in the segment.
    pub offset: u64,
    /// The record's length on disk (header, Part 10 bytes, padding).
    pub length: u64,
}

impl RecordPlace {
    /// Where the record ends in the segment.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// The index's state of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentState {
    /// Sealed: full, or a write or flush in it failed; never written again.
    /// Recovery scans only the segments not sealed.
    pub sealed: bool,
    /// The end of the furthest record an entry ever named (where recovery
    /// scans from): records past it were never indexed.
    pub indexed_end: u64,
    /// Where that furthest record starts (0 when none): recovery reads its
    /// header for the epoch that the records after it must not precede
    /// (an earlier one marks stale bytes past a cut tail).
    pub indexed_last: u64,
    /// The bytes of the records entries name now (stored or quarantined).
    pub live_bytes: u64,
    /// How many records entries name now.
    pub live_records: u64,
}

/// A sealed segment's copy in the object store: uploaded and verified (its
/// size and checksum checked by the store and by a HEAD), then perhaps
/// evicted (the local file deleted: its records are read from the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentObject {
    /// The object's key in the bucket (the engine's, from the node and the
    /// segment id).
    pub key: String,
    /// The object's size: the segment file's, checked after the upload.
    pub size_bytes: u64,
    /// The local file was deleted; reads go to the object.
    pub evicted: bool,
}

/// The longest object key [`SegmentObject`] keeps (S3's limit).
pub const OBJECT_KEY_BYTES_MAX: usize = 1024;

pub(crate) const PLACE_BYTES: usize = 24;
pub(crate) const SEGMENT_STATE_BYTES: usize = 33;

pub(crate) fn segment_key(segment: u64) -> [u8; 8] {
    segment.to_be_bytes()
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

impl RecordPlace {
    pub(crate) fn encode(&self) -> [u8; PLACE_BYTES] {
        let mut out = [0u8; PLACE_BYTES];
        out[0..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..16].copy_from_slice(&self.offset.to_be_bytes());
        out[16..24].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<RecordPlace, IndexError> {
        if bytes.len() != PLACE_BYTES {
            return Err(IndexError::Corrupt {
                table: "locations",
                detail: format!("a value of {} bytes, {PLACE_BYTES} expected", bytes.len()),
            });
        }
        Ok(RecordPlace {
            segment: u64_at(bytes, 0),
            offset: u64_at(bytes, 8),
            length: u64_at(bytes, 16),
        })
    }
}

impl SegmentState {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_STATE_BYTES] {
        let mut out = [0u8; SEGMENT_STATE_BYTES];
        out[0] = u8::from(self.sealed);
        out[1..9].copy_from_slice(&self.indexed_end.to_be_bytes());
        out[9..17].copy_from_slice(&self.live_bytes.to_be_bytes());
        out[17..25].copy_from_slice(&self.live_records.to_be_bytes());
        out[25..33].copy_from_slice(&self.indexed_last.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentState, IndexError> {
        if bytes.len() != SEGMENT_STATE_BYTES || bytes[0] > 1 {
            return Err(IndexError::Corrupt {
                table: "segments",
                detail: format!("a value of {} bytes: {bytes:02x?}", bytes.len()),
            });
        }
        Ok(SegmentState {
            sealed: bytes[0] == 1,
            indexed_end: u64_at(bytes, 1),
            live_bytes: u64_at(bytes, 9),
            live_records: u64_at(bytes, 17),
            indexed_last: u64_at(bytes, 25),
        })
    }
}

impl SegmentObject {
    /// `evicted` (1 byte), `size_bytes` (8 bytes BE), then the key (UTF-8).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.key.len());
        out.push(u8::from(self.evicted));
        out.extend_from_slice(&self.size_bytes.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentObject, IndexError> {
        let corrupt = || IndexError::Corrupt {
            table: "segment_objects",
            detail: format!("a value of {} bytes: {bytes:02x?}", bytes.len()),
        };
        let (&evicted, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if evicted > 1 || rest.len() < 9 {
            return Err(corrupt());
        }
        let key = std::str::from_utf8(&rest[8..]).map_err(|_| corrupt())?;
        if key.is_empty() {
            return Err(corrupt());
        }
        Ok(SegmentObject {
            key: key.to_owned(),
            size_bytes: u64_at(rest, 0),
            evicted: evicted == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_lengths_are_corrupt() {
        let place = RecordPlace {
            segment: 7,
            offset: 4096,
            length: 8192,
        };
        assert_eq!(RecordPlace::decode(&place.encode()).unwrap(), place);
        assert!(RecordPlace::decode(&place.encode()[..23]).is_err());
        let state = SegmentState {
            sealed: true,
            indexed_end: 12288,
            indexed_last: 4096,
            live_bytes: 8192,
            live_records: 1,
        };
        assert_eq!(SegmentState::decode(&state.encode()).unwrap(), state);
        let mut bad = state.encode();
        bad[0] = 2;
        assert!(SegmentState::decode(&bad).is_err());
        assert!(SegmentState::decode(&[]).is_err());
    }

    #[test]
    fn segment_objects_round_trip_and_bad_values_are_corrupt() {
        let object = SegmentObject {
            key: "sluice/node-1/segments/000000000000002a.seg".into(),
            size_bytes: 1 << 30,
            evicted: true,
        };
        assert_eq!(SegmentObject::decode(&object.encode()).unwrap(), object);
        let mut bad = object.encode();
        bad[0] = 2;
        assert!(SegmentObject::decode(&bad).is_err());
        // No key, a short size, nothing at all, a key that is not UTF-8.
        assert!(SegmentObject::decode(&object.encode()[..9]).is_err());
        assert!(SegmentObject::decode(&object.encode()[..5]).is_err());
        assert!(SegmentObject::decode(&[]).is_err());
        let mut not_utf8 = object.encode();
        not_utf8[9] = 0xff;
        assert!(SegmentObject::decode(&not_utf8).is_err());
    }
}
