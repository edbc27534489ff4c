//! `small_dataset`: the bounded data-set codec of DIMSE (N-ACTION and
//! N-EVENT-REPORT information, C-FIND identifiers). The first input byte
//! picks the encoding (bit 0) and the nesting limit (bits 1-3); the rest is
//! the data set.
//!
//! Must hold: a decoded data set encodes; decoded again it is the same data
//! set but for the one padding byte encode adds to an odd-length value
//! (decode keeps values as received, encode writes even lengths as PS3.5
//! requires); from then on decode and encode are each other's inverse.

use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding, Value};

/// The encoding and limits the first input byte picks.
pub(crate) fn knobs(first: u8) -> (SmallDatasetEncoding, DatasetLimits) {
    let encoding = if first & 1 == 0 {
        SmallDatasetEncoding::ImplicitVrLittleEndian
    } else {
        SmallDatasetEncoding::ExplicitVrLittleEndian
    };
    let limits = DatasetLimits {
        depth_max: usize::from((first >> 1) & 7) + 1,
        ..DatasetLimits::default()
    };
    (encoding, limits)
}

/// `received` and `padded` are the same but for one padding byte (space or
/// NUL) at the end of odd-length values in `received`.
fn assert_same_but_padding(received: &SmallDataset, padded: &SmallDataset) {
    assert_eq!(
        received.elements().len(),
        padded.elements().len(),
        "re-encoding changed the elements"
    );
    for (a, b) in received.elements().iter().zip(padded.elements()) {
        assert_eq!(
            (a.tag, a.vr),
            (b.tag, b.vr),
            "re-encoding changed an element"
        );
        match (&a.value, &b.value) {
            (Value::Bytes(a_bytes), Value::Bytes(b_bytes)) => {
                let same = a_bytes == b_bytes
                    || (a_bytes.len() % 2 == 1
                        && b_bytes.len() == a_bytes.len() + 1
                        && b_bytes.starts_with(a_bytes)
                        && matches!(b_bytes.last(), Some(b' ' | 0)));
                assert!(same, "re-encoding changed the value of {}", a.tag);
            }
            (Value::Sequence(a_items), Value::Sequence(b_items)) => {
                assert_eq!(a_items.len(), b_items.len(), "items of {}", a.tag);
                for (a_item, b_item) in a_items.iter().zip(b_items) {
                    assert_same_but_padding(a_item, b_item);
                }
            }
            _ => panic!("re-encoding changed the kind of {}", a.tag),
        }
    }
}

pub(crate) fn run(input: &[u8]) {
    let Some((first, bytes)) = input.split_first() else {
        return;
    };
    let (encoding, limits) = knobs(*first);
    let Ok(received) = SmallDataset::decode(bytes, encoding, limits) else {
        return;
    };
    let encoded = received
        .encode(encoding)
        .expect("a decoded data set must encode");
    let decoded = SmallDataset::decode(&encoded, encoding, limits)
        .expect("our own encoding must decode under the same limits");
    assert_same_but_padding(&received, &decoded);
    let again = decoded
        .encode(encoding)
        .expect("our own data set must encode");
    assert_eq!(again, encoded, "encoding is not stable");
}
