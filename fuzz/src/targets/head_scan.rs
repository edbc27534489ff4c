//! `head_scan`: a C-STORE data set through [`DatasetScanner`] and
//! [`check_store`]. The first input byte picks the transfer syntax from the
//! catalogue ([`uid::transfer_syntaxes`], Deflated Explicit VR Little Endian
//! and Explicit VR Big Endian included); the rest is the data set as
//! received.
//!
//! Must hold: feeding the data set in one piece or in input-derived cuts
//! gives the same head (every field, Pixel Data, end, and length unless a
//! structure error ended the scan) and the same
//! `check_store` verdict; and for Explicit VR Little Endian, the same data
//! set deflated (RFC 1951, as a Deflated sender would send it) and scanned
//! as Deflated Explicit VR Little Endian gives that head and verdict too.

use miniz_oxide::deflate::compress_to_vec;
use sluice_net::scan::{
    check_store, DatasetHead, DatasetScanner, Field, Leniency, ScanError, StoreCheck,
    StoreRejection,
};
use sluice_net::uid::{self, TransferSyntax};

use crate::cuts::Cuts;

/// Used when the data set has no UID of its own, so `check_store` compares
/// against something.
const FALLBACK_UID: &str = "1.2.826.0.1.3680043.10.1.1";

fn scan<'a>(transfer_syntax: &str, pieces: impl IntoIterator<Item = &'a [u8]>) -> DatasetHead {
    let mut scanner =
        DatasetScanner::for_transfer_syntax(transfer_syntax).expect("a catalogued syntax");
    let mut first_error = None;
    for piece in pieces {
        let result = scanner.feed(piece);
        match (first_error, result) {
            (None, Err(error)) => first_error = Some(error),
            (Some(first), later) => {
                assert_eq!(later, Err(first), "an error must be repeated on every feed")
            }
            (None, Ok(())) => {}
        }
    }
    let head = scanner.finish();
    if let Some(error) = first_error {
        assert_eq!(
            head.end,
            Err(error),
            "the head must end with the feed's error"
        );
    }
    head
}

fn verdict(head: &DatasetHead, transfer_syntax: &TransferSyntax) -> Result<(), StoreRejection> {
    let sop_class = head.sop_class_uid().unwrap_or(uid::CT_IMAGE_STORAGE);
    let check = |lenient| {
        check_store(
            head,
            &StoreCheck {
                affected_sop_class_uid: sop_class,
                affected_sop_instance_uid: head.sop_instance_uid().unwrap_or(FALLBACK_UID),
                transfer_syntax: transfer_syntax.facts,
                image_class: uid::is_image_sop_class(sop_class),
                lenient,
            },
        )
    };
    let strict = check(Leniency::STRICT).map(|_warnings| ());
    // Leniency only relaxes: what the strict checks take, the lenient ones
    // take too.
    if strict.is_ok() {
        assert!(
            check(Leniency::ALL).is_ok(),
            "accepted strictly, refused leniently"
        );
    }
    strict
}

fn assert_same_head(expected: &DatasetHead, actual: &DatasetHead, what: &str) {
    assert_eq!(expected.encoding(), actual.encoding(), "{what}: encoding");
    assert_eq!(expected.end, actual.end, "{what}: end");
    // After a structure error the deflated scanner inflates no more, so it
    // has counted fewer bytes; a truncation is found only at the end.
    if matches!(expected.end, Ok(()) | Err(ScanError::Truncated { .. })) {
        assert_eq!(expected.length, actual.length, "{what}: length");
    }
    assert_eq!(expected.pixel_data, actual.pixel_data, "{what}: pixel data");
    for field in Field::ALL {
        assert_eq!(
            (
                expected.is_present(*field),
                expected.is_cut(*field),
                expected.raw(*field)
            ),
            (
                actual.is_present(*field),
                actual.is_cut(*field),
                actual.raw(*field)
            ),
            "{what}: {field:?}"
        );
    }
}

pub(crate) fn run(input: &[u8]) {
    let Some((selector, dataset)) = input.split_first() else {
        return;
    };
    let syntaxes = uid::transfer_syntaxes();
    let Some(syntax) = syntaxes.get(usize::from(*selector) % syntaxes.len()) else {
        return;
    };
    let mut cuts = Cuts::for_input(input);
    let whole = scan(syntax.uid, [dataset]);
    let whole_verdict = verdict(&whole, syntax);
    // The decoded accessors must not panic on whatever was captured.
    for field in Field::ALL {
        let _ = (
            whole.decoded(*field),
            whole.text(*field),
            whole.us(*field),
            whole.integer_string(*field),
        );
    }
    let _ = (whole.number_of_frames(), whole.charset());

    let cut = scan(syntax.uid, cuts.split(dataset));
    assert_same_head(&whole, &cut, "cut");
    assert_eq!(whole_verdict, verdict(&cut, syntax), "cut: verdict");

    if syntax.uid == uid::ts::EXPLICIT_VR_LITTLE_ENDIAN {
        let level = (cuts.next_u64() % 10) as u8;
        let deflated = compress_to_vec(dataset, level);
        let inflated = scan(
            uid::ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            cuts.split(&deflated),
        );
        assert_same_head(&whole, &inflated, "deflated");
        let deflated_syntax = uid::transfer_syntax(uid::ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
            .expect("Deflated Explicit VR Little Endian is catalogued");
        assert_eq!(
            whole_verdict,
            verdict(&inflated, deflated_syntax),
            "deflated: verdict"
        );
    }
}
