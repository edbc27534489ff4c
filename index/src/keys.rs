//! Key encoding: how UIDs and numbers become LMDB keys.
//!
//! Every key sorts in the order the readers need, and no two different
//! logical keys can encode to the same bytes:
//! - UIDs never contain NUL (checked on input), and NUL sorts before every
//!   character a UID may hold, so components joined with one `0x00` sort as the
//!   tuple `(study, series, sop)` and `study ++ 0x00` is an exact prefix of the
//!   study's keys and of nothing else.
//! - Numbers are fixed-width big endian, so byte order is numeric order.
//! - Secondary study keys are `value ++ 0x00 ++ study_uid`; values have their
//!   NULs removed at normalisation, so the same argument holds.
//! - An instance's key is its series id (8 bytes, big endian) followed by its
//!   SOP Instance UID: a series' instances are one contiguous run in UID
//!   order, and series ids are allocated in increasing order, so a new
//!   series' instances are written at the end of the table.

use crate::error::InvalidInput;
use crate::records::FileId;

/// The longest UID the index accepts, in bytes. DICOM says 64; real archives
/// meet longer non-conformant UIDs, which must not make an instance unstorable.
pub const UID_BYTES_MAX: usize = 128;

/// The longest attribute value kept for a secondary-index key, in bytes.
pub(crate) const INDEXED_VALUE_BYTES_MAX: usize = 256;

/// LMDB's compiled-in maximum key size (`MDB_MAXKEYSIZE` default).
const LMDB_KEY_BYTES_MAX: usize = 511;

const _: () = assert!(
    3 * UID_BYTES_MAX + 2 <= LMDB_KEY_BYTES_MAX,
    "triplet keys must fit LMDB"
);
const _: () = assert!(
    INDEXED_VALUE_BYTES_MAX + 1 + UID_BYTES_MAX <= LMDB_KEY_BYTES_MAX,
    "secondary keys must fit LMDB"
);
const _: () = assert!(
    SERIES_ID_BYTES + UID_BYTES_MAX <= LMDB_KEY_BYTES_MAX,
    "instance keys must fit LMDB"
);

/// Bytes of a series id in keys.
pub(crate) const SERIES_ID_BYTES: usize = 8;

/// The largest series id: below 2^56, so the first byte of an instance key
/// is 0x00, which no schema 3 key (a UID: no NUL) starts with.
pub(crate) const SERIES_ID_MAX: u64 = (1 << 56) - 1;

/// Separator between key components.
pub(crate) const SEPARATOR: u8 = 0x00;

/// Checks that a UID can be a key component.
pub(crate) fn check_uid(field: &'static str, uid: &str) -> Result<(), InvalidInput> {
    if uid.is_empty() {
        return Err(InvalidInput::Uid {
            field,
            reason: "empty",
        });
    }
    if uid.len() > UID_BYTES_MAX {
        return Err(InvalidInput::Uid {
            field,
            reason: "longer than 128 bytes",
        });
    }
    if uid.as_bytes().contains(&SEPARATOR) {
        return Err(InvalidInput::Uid {
            field,
            reason: "contains a NUL byte",
        });
    }
    Ok(())
}

/// `study ++ 0 ++ series ++ 0 ++ sop`: schema 3's `series_instances` key
/// (read by the upgrade, which splits it with [`split_key`]).
#[cfg(test)]
pub(crate) fn triplet_key(study: &str, series: &str, sop: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(study.len() + series.len() + sop.len() + 2);
    key.extend_from_slice(study.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(series.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(sop.as_bytes());
    key
}

/// `study ++ 0 ++ series`: the `series` key (and, in schema 3, the prefix of a series in `series_instances`).
pub(crate) fn series_key(study: &str, series: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(study.len() + series.len() + 1);
    key.extend_from_slice(study.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(series.as_bytes());
    key
}

/// `component ++ 0`: the prefix of every key below one study (or series).
pub(crate) fn prefix_of(key: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(key.len() + 1);
    prefix.extend_from_slice(key);
    prefix.push(SEPARATOR);
    prefix
}

/// Splits a key into its NUL-separated components (exactly `N` of them).
pub(crate) fn split_key<const N: usize>(key: &[u8]) -> Option<[&str; N]> {
    let mut parts = [""; N];
    let mut pieces = key.split(|byte| *byte == SEPARATOR);
    for part in parts.iter_mut() {
        *part = std::str::from_utf8(pieces.next()?).ok()?;
    }
    if pieces.next().is_some() {
        return None;
    }
    Some(parts)
}

/// A secondary study key: `value ++ 0 ++ study_uid`.
pub(crate) fn secondary_key(value: &str, study: &str) -> Vec<u8> {
    let value = truncate_to_char_boundary(value, INDEXED_VALUE_BYTES_MAX);
    let mut key = Vec::with_capacity(value.len() + study.len() + 1);
    key.extend_from_slice(value.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(study.as_bytes());
    key
}

/// The values a study's Patient's Name is indexed under in
/// `study_by_patient_name`: its distinct non-empty component groups (a PN
/// key without `=` matches when one of them does), case-folded
/// (`sluice_net::query::fold_person_name`: one table serves exact and
/// case-insensitive name queries, the exact comparison being the matcher's),
/// each cut to the indexed length as [`secondary_key`] cuts it.
pub(crate) fn patient_name_values(name: &str) -> Vec<String> {
    let folded = sluice_net::query::fold_person_name(name);
    let mut values: Vec<String> = sluice_net::query::person_name_groups(&folded)
        .filter(|group| !group.is_empty())
        .map(|group| truncate_to_char_boundary(group, INDEXED_VALUE_BYTES_MAX).to_owned())
        .collect();
    values.sort_unstable();
    values.dedup();
    values
}

/// The study UID at the end of a secondary key.
pub(crate) fn study_of_secondary_key(key: &[u8]) -> Option<&str> {
    let position = key.iter().rposition(|byte| *byte == SEPARATOR)?;
    std::str::from_utf8(key.get(position + 1..)?).ok()
}

/// A series id's key: the `series_ids` key, and the prefix of the series'
/// `instances` keys.
pub(crate) fn series_id_key(series_id: u64) -> [u8; SERIES_ID_BYTES] {
    series_id.to_be_bytes()
}

/// The most bytes [`ShortBytes`] holds without a heap allocation: an
/// instance key of a UID the index accepts.
const SHORT_BYTES_MAX: usize = SERIES_ID_BYTES + UID_BYTES_MAX;

/// A key or value made of two parts, built on the stack when it fits in
/// [`SHORT_BYTES_MAX`] (every instance key and in-doubt value of a valid
/// UID: the writer makes one or two per instance it stores), on the heap
/// otherwise.
#[derive(Debug, Clone)]
pub(crate) enum ShortBytes {
    Inline {
        bytes: [u8; SHORT_BYTES_MAX],
        len: usize,
    },
    Heap(Vec<u8>),
}

impl ShortBytes {
    /// `head ++ tail`.
    pub(crate) fn joined(head: &[u8], tail: &[u8]) -> ShortBytes {
        let len = head.len() + tail.len();
        if len > SHORT_BYTES_MAX {
            return ShortBytes::Heap([head, tail].concat());
        }
        let mut bytes = [0u8; SHORT_BYTES_MAX];
        bytes[..head.len()].copy_from_slice(head);
        bytes[head.len()..len].copy_from_slice(tail);
        ShortBytes::Inline { bytes, len }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ShortBytes::Inline { bytes, len } => bytes.get(..*len).unwrap_or(bytes),
            ShortBytes::Heap(bytes) => bytes,
        }
    }
}

impl std::ops::Deref for ShortBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// `series id ++ sop`: the `instances` key.
pub(crate) fn instance_key(series_id: u64, sop: &str) -> ShortBytes {
    ShortBytes::joined(&series_id.to_be_bytes(), sop.as_bytes())
}

/// The series id and SOP Instance UID of an `instances` key.
pub(crate) fn split_instance_key(key: &[u8]) -> Option<(u64, &str)> {
    let series_id = read_u64(key.get(..SERIES_ID_BYTES)?)?;
    let sop = std::str::from_utf8(key.get(SERIES_ID_BYTES..)?).ok()?;
    (!sop.is_empty()).then_some((series_id, sop))
}

/// Big-endian file id: the `file_ids` key.
pub(crate) fn file_id_key(file_id: FileId) -> [u8; 16] {
    file_id.0.to_be_bytes()
}

/// `in_doubt` value tag: the file belongs to the instance stored under the SOP
/// Instance UID that follows.
pub(crate) const IN_DOUBT_INSTANCE: u8 = b'I';
/// `in_doubt` value tag: the file belongs to the quarantine entry whose
/// big-endian id follows.
pub(crate) const IN_DOUBT_QUARANTINE: u8 = b'Q';

/// The `in_doubt` value naming the entry that references the file.
pub(crate) fn in_doubt_value(tag: u8, subject: &[u8]) -> ShortBytes {
    ShortBytes::joined(&[tag], subject)
}

/// Big-endian quarantine id: the `quarantine` key.
pub(crate) fn quarantine_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Big-endian group number: the `sop_pending` key.
pub(crate) fn group_key(group: u64) -> [u8; 8] {
    group.to_be_bytes()
}

/// Reads a big-endian `u64` key or value.
pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The longest prefix of `value` of at most `bytes_max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate_to_char_boundary(value: &str, bytes_max: usize) -> &str {
    if value.len() <= bytes_max {
        return value;
    }
    let mut end = bytes_max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplet_keys_sort_as_tuples_and_prefixes_are_exact() {
        // "1.2" < "1.2.3" as tuples, and the study "1.2" prefix must not cover "1.23".
        let a = triplet_key("1.2", "9", "9");
        let b = triplet_key("1.2.3", "1", "1");
        let c = triplet_key("1.23", "1", "1");
        assert!(a < b && b < c);
        let prefix = prefix_of(b"1.2");
        assert!(a.starts_with(&prefix));
        assert!(!b.starts_with(&prefix) && !c.starts_with(&prefix));
    }

    #[test]
    fn split_roundtrips_and_rejects_wrong_arity() {
        let key = triplet_key("1.2", "3.4", "5.6");
        assert_eq!(split_key::<3>(&key), Some(["1.2", "3.4", "5.6"]));
        assert_eq!(split_key::<2>(&key), None);
        assert_eq!(split_key::<2>(&series_key("1", "2")), Some(["1", "2"]));
    }

    #[test]
    fn uid_checks() {
        assert!(check_uid("f", "1.2.3").is_ok());
        assert!(check_uid("f", "").is_err());
        assert!(check_uid("f", "1.2\0").is_err());
        assert!(check_uid("f", &"1".repeat(UID_BYTES_MAX)).is_ok());
        assert!(check_uid("f", &"1".repeat(UID_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn secondary_keys_truncate_on_char_boundaries() {
        let long = "é".repeat(INDEXED_VALUE_BYTES_MAX);
        let key = secondary_key(&long, "1.2");
        assert!(key.len() <= INDEXED_VALUE_BYTES_MAX + 1 + 3);
        assert_eq!(study_of_secondary_key(&key), Some("1.2"));
        assert!(std::str::from_utf8(&key[..key.len() - 4]).is_ok());
    }

    #[test]
    fn instance_keys_group_a_series_and_split_back() {
        let a = instance_key(1, "9.9");
        let b = instance_key(2, "1.1");
        assert!(*a < *b, "series first");
        assert!(a.starts_with(&series_id_key(1)));
        assert_eq!(split_instance_key(&b), Some((2, "1.1")));
        assert_eq!(split_instance_key(&series_id_key(2)), None);
        assert_eq!(split_instance_key(b"short"), None);
    }

    #[test]
    fn short_bytes_are_the_parts_joined_on_the_stack_or_the_heap() {
        let longest = "1".repeat(UID_BYTES_MAX);
        let key = instance_key(7, &longest);
        assert!(matches!(key, ShortBytes::Inline { .. }));
        assert_eq!(split_instance_key(&key), Some((7, longest.as_str())));
        let longer = "1".repeat(UID_BYTES_MAX + 1);
        let key = instance_key(7, &longer);
        assert!(matches!(key, ShortBytes::Heap(_)));
        assert_eq!(split_instance_key(&key), Some((7, longer.as_str())));
        assert_eq!(&*in_doubt_value(IN_DOUBT_INSTANCE, b"1.2"), b"I1.2");
    }

    #[test]
    fn numbers_sort_numerically() {
        assert!(quarantine_key(255) < quarantine_key(256));
        assert!(file_id_key(FileId(1)) < file_id_key(FileId(1 << 64)));
        assert_eq!(read_u64(&quarantine_key(42)), Some(42));
        assert_eq!(read_u64(b"short"), None);
    }
}
