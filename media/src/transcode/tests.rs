use super::*;
use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding, Value};

fn implicit_element(tag: Tag, value: &[u8], out: &mut Vec<u8>) {
    write_tag(tag, out);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// An Implicit VR LE data set with what the rules are about: a group length
/// (dropped), text, Bits Allocated 8 (so Pixel Data is OB), a signed Pixel
/// Representation (so Smallest Image Pixel Value is SS), a defined-length
/// sequence with a defined-length item, a private creator and a private
/// element, a private sequence of undefined length, and pixel data.
fn sample_implicit() -> Vec<u8> {
    let mut bytes = Vec::new();
    implicit_element(Tag(0x0008, 0x0000), &[0, 0, 0, 0], &mut bytes);
    implicit_element(Tag(0x0008, 0x0060), b"CT", &mut bytes);
    // (0008,1140) Referenced Image Sequence, defined length, one item.
    let mut item = Vec::new();
    implicit_element(Tag(0x0008, 0x1155), b"1.2.3\0", &mut item);
    let mut sequence = Vec::new();
    write_tag(ITEM, &mut sequence);
    sequence.extend_from_slice(&(item.len() as u32).to_le_bytes());
    sequence.extend_from_slice(&item);
    implicit_element(Tag(0x0008, 0x1140), &sequence, &mut bytes);
    implicit_element(Tag(0x0009, 0x0010), b"ACME 1.0", &mut bytes);
    implicit_element(Tag(0x0009, 0x1001), &[1, 2, 3, 4], &mut bytes);
    // (0009,1002): a private sequence of undefined length, one
    // undefined-length item holding a private element.
    write_tag(Tag(0x0009, 0x1002), &mut bytes);
    bytes.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
    write_tag(ITEM, &mut bytes);
    bytes.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
    implicit_element(Tag(0x0009, 0x1003), b"AB", &mut bytes);
    write_tag(ITEM_DELIMITATION, &mut bytes);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    write_tag(SEQUENCE_DELIMITATION, &mut bytes);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    implicit_element(Tag(0x0010, 0x0010), b"Doe^Jane", &mut bytes);
    implicit_element(Tag(0x0028, 0x0100), &8u16.to_le_bytes(), &mut bytes);
    implicit_element(Tag(0x0028, 0x0103), &1u16.to_le_bytes(), &mut bytes);
    implicit_element(Tag(0x0028, 0x0106), &(-5i16).to_le_bytes(), &mut bytes);
    implicit_element(Tag(0x7FE0, 0x0010), &[9, 8, 7, 6, 5, 4], &mut bytes);
    bytes
}

fn decode_explicit(bytes: &[u8]) -> SmallDataset {
    SmallDataset::decode(
        bytes,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
        DatasetLimits::default(),
    )
    .unwrap()
}

#[test]
fn implicit_to_explicit_applies_the_rules() {
    let out = transcode(
        &sample_implicit(),
        DatasetEncoding::ImplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
    )
    .unwrap();
    let dataset = decode_explicit(&out);
    assert!(
        dataset.get(Tag(0x0008, 0x0000)).is_none(),
        "group length dropped"
    );
    assert_eq!(dataset.get(Tag(0x0008, 0x0060)).unwrap().vr, Vr::CS);
    assert_eq!(dataset.get(Tag(0x0010, 0x0010)).unwrap().vr, Vr::PN);
    let items = dataset.sequence(Tag(0x0008, 0x1140)).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].get(Tag(0x0008, 0x1155)).unwrap().vr, Vr::UI);
    assert_eq!(items[0].str(Tag(0x0008, 0x1155)), Some("1.2.3"));
    assert_eq!(dataset.get(Tag(0x0009, 0x0010)).unwrap().vr, Vr::LO);
    assert_eq!(dataset.get(Tag(0x0009, 0x1001)).unwrap().vr, Vr::UN);
    // The private sequence is UN of undefined length, decoded (by rule) as a
    // sequence of Implicit VR items.
    let private = dataset.get(Tag(0x0009, 0x1002)).unwrap();
    assert_eq!(private.vr, Vr::SQ);
    match &private.value {
        Value::Sequence(items) => {
            assert_eq!(items[0].bytes(Tag(0x0009, 0x1003)), Some(&b"AB"[..]))
        }
        Value::Bytes(_) => panic!("expected a sequence"),
    }
    // In the output bytes the private sequence's VR is UN.
    let at = out
        .windows(6)
        .position(|window| window == [0x09, 0x00, 0x02, 0x10, b'U', b'N'])
        .unwrap();
    assert_eq!(&out[at + 8..at + 12], &UNDEFINED_LENGTH.to_le_bytes());
    assert_eq!(dataset.get(Tag(0x0028, 0x0106)).unwrap().vr, Vr::SS);
    let pixel_data = dataset.get(Tag(0x7FE0, 0x0010)).unwrap();
    assert_eq!(pixel_data.vr, Vr::OB);
    assert_eq!(
        dataset.bytes(Tag(0x7FE0, 0x0010)),
        Some(&[9u8, 8, 7, 6, 5, 4][..])
    );
}

#[test]
fn any_cut_of_the_input_gives_the_same_output() {
    let input = sample_implicit();
    let whole = transcode(
        &input,
        DatasetEncoding::ImplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
    )
    .unwrap();
    for chunk in 1..=13 {
        let mut transcoder = Transcoder::new(
            DatasetEncoding::ImplicitVrLittleEndian,
            DatasetEncoding::ExplicitVrLittleEndian,
        )
        .unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            transcoder.feed(piece, &mut out).unwrap();
        }
        transcoder.finish(&mut out).unwrap();
        assert_eq!(out, whole, "chunks of {chunk}");
    }
}

#[test]
fn explicit_back_to_implicit_keeps_the_elements() {
    let explicit = transcode(
        &sample_implicit(),
        DatasetEncoding::ImplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
    )
    .unwrap();
    let implicit = transcode(
        &explicit,
        DatasetEncoding::ExplicitVrLittleEndian,
        DatasetEncoding::ImplicitVrLittleEndian,
    )
    .unwrap();
    let again = transcode(
        &implicit,
        DatasetEncoding::ImplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
    )
    .unwrap();
    assert_eq!(again, explicit);
}

#[test]
fn big_endian_values_are_swapped_by_vr() {
    // Explicit VR BE: US 0x0102, UL 0x01020304, AT (0028,0010), a PN.
    let mut bytes = Vec::new();
    let header = |tag: Tag, vr: &[u8; 2], length: u16, out: &mut Vec<u8>| {
        out.extend_from_slice(&tag.0.to_be_bytes());
        out.extend_from_slice(&tag.1.to_be_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&length.to_be_bytes());
    };
    header(Tag(0x0010, 0x0010), b"PN", 4, &mut bytes);
    bytes.extend_from_slice(b"A^B ");
    header(Tag(0x0020, 0x5000), b"AT", 4, &mut bytes);
    bytes.extend_from_slice(&[0x00, 0x28, 0x00, 0x10]);
    header(Tag(0x0028, 0x0010), b"US", 2, &mut bytes);
    bytes.extend_from_slice(&[0x01, 0x02]);
    header(Tag(0x0028, 0x9001), b"UL", 4, &mut bytes);
    bytes.extend_from_slice(&[0x01, 0x02, 0x03, 0x04]);
    for chunk in [1, 3, bytes.len()] {
        let mut transcoder = Transcoder::new(
            DatasetEncoding::ExplicitVrBigEndian,
            DatasetEncoding::ExplicitVrLittleEndian,
        )
        .unwrap();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            transcoder.feed(piece, &mut out).unwrap();
        }
        transcoder.finish(&mut out).unwrap();
        let dataset = decode_explicit(&out);
        assert_eq!(dataset.str(Tag(0x0010, 0x0010)), Some("A^B"));
        assert_eq!(
            dataset.bytes(Tag(0x0020, 0x5000)),
            Some(&[0x28u8, 0x00, 0x10, 0x00][..])
        );
        assert_eq!(dataset.u16(Tag(0x0028, 0x0010)), Some(0x0102));
        assert_eq!(
            dataset.bytes(Tag(0x0028, 0x9001)),
            Some(&0x0102_0304u32.to_le_bytes()[..])
        );
    }
}

#[test]
fn encapsulated_pixel_data_passes_to_explicit_and_is_refused_for_implicit() {
    let mut bytes = Vec::new();
    write_header(Tag(0x0028, 0x0010), Vr::US, 2, true, &mut bytes);
    bytes.extend_from_slice(&4u16.to_le_bytes());
    write_header(
        Tag(0x7FE0, 0x0010),
        Vr::OB,
        UNDEFINED_LENGTH,
        true,
        &mut bytes,
    );
    write_tag(ITEM, &mut bytes);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    write_tag(ITEM, &mut bytes);
    bytes.extend_from_slice(&4u32.to_le_bytes());
    bytes.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xD9]);
    write_tag(SEQUENCE_DELIMITATION, &mut bytes);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let same = transcode(
        &bytes,
        DatasetEncoding::ExplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
    )
    .unwrap();
    assert_eq!(same, bytes);
    assert!(matches!(
        transcode(
            &bytes,
            DatasetEncoding::ExplicitVrLittleEndian,
            DatasetEncoding::ImplicitVrLittleEndian,
        ),
        Err(TranscodeError::EncapsulatedToImplicit { .. })
    ));
}

#[test]
fn long_values_of_short_vrs_become_un() {
    let mut bytes = Vec::new();
    implicit_element(Tag(0x0008, 0x1030), &vec![b'A'; 70_000], &mut bytes);
    let out = transcode(
        &bytes,
        DatasetEncoding::ImplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
    )
    .unwrap();
    assert_eq!(&out[4..6], b"UN");
    assert_eq!(out.len(), 12 + 70_000);
}

#[test]
fn broken_inputs_are_errors() {
    let implicit = DatasetEncoding::ImplicitVrLittleEndian;
    let explicit = DatasetEncoding::ExplicitVrLittleEndian;
    let good = sample_implicit();
    // Every cut inside an element is a truncation; cuts between top-level
    // elements are shorter data sets.
    let mut clean_cuts = 0;
    for cut in 0..good.len() {
        match transcode(&good[..cut], implicit, explicit) {
            Ok(_) => clean_cuts += 1,
            Err(TranscodeError::Truncated { .. } | TranscodeError::Overrun { .. }) => {}
            Err(other) => panic!("cut {cut}: {other}"),
        }
    }
    // Eleven top-level elements: the empty cut and one after each but the last.
    assert_eq!(clean_cuts, 11, "one per top-level element boundary");
    // A value longer than its container.
    let mut bytes = Vec::new();
    let mut item = Vec::new();
    implicit_element(Tag(0x0008, 0x1155), b"1.2.3\0", &mut item);
    let mut sequence = Vec::new();
    write_tag(ITEM, &mut sequence);
    sequence.extend_from_slice(&4u32.to_le_bytes());
    sequence.extend_from_slice(&item);
    implicit_element(Tag(0x0008, 0x1140), &sequence, &mut bytes);
    assert!(matches!(
        transcode(&bytes, implicit, explicit),
        Err(TranscodeError::Overrun { .. })
    ));
    // A stray delimiter.
    let stray = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
    assert!(matches!(
        transcode(&stray, implicit, explicit),
        Err(TranscodeError::Unexpected { .. })
    ));
    // An undefined length on a known non-sequence.
    let mut bytes = Vec::new();
    write_tag(Tag(0x0010, 0x0010), &mut bytes);
    bytes.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
    assert!(matches!(
        transcode(&bytes, implicit, explicit),
        Err(TranscodeError::UndefinedLength { .. })
    ));
    // A bad explicit VR.
    let bad_vr = [0x08, 0x00, 0x18, 0x00, b'u', b'i', 0, 0];
    assert!(matches!(
        transcode(&bad_vr, explicit, explicit),
        Err(TranscodeError::InvalidVr { .. })
    ));
    // Too deep: sequences of undefined length nested past the limit.
    let mut deep = Vec::new();
    for _ in 0..TRANSCODE_DEPTH_MAX {
        write_tag(Tag(0x0008, 0x1140), &mut deep);
        deep.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
        write_tag(ITEM, &mut deep);
        deep.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
    }
    assert!(matches!(
        transcode(&deep, implicit, explicit),
        Err(TranscodeError::TooDeep { .. })
    ));
    assert!(matches!(
        Transcoder::new(implicit, DatasetEncoding::ExplicitVrBigEndian),
        Err(TranscodeError::UnsupportedOutput(_))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7AC0_DE55),
        ..proptest::prelude::ProptestConfig::default()
    })]
    /// Random and mutated bytes never panic, in any encoding pair.
    #[test]
    fn random_bytes_never_panic(
        mutations in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
        random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        pair in 0usize..6,
        chunk in 1usize..64,
    ) {
        let encodings = [
            DatasetEncoding::ImplicitVrLittleEndian,
            DatasetEncoding::ExplicitVrLittleEndian,
            DatasetEncoding::ExplicitVrBigEndian,
        ];
        let input = encodings[pair % 3];
        let output = encodings[pair / 3];
        let mut bytes = sample_implicit();
        for (at, byte) in mutations {
            if let Some(slot) = bytes.get_mut(at) {
                *slot = byte;
            }
        }
        bytes.extend_from_slice(&random);
        let mut transcoder = Transcoder::new(input, output).unwrap();
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in bytes.chunks(chunk) {
            result = transcoder.feed(piece, &mut out);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            let _ = transcoder.finish(&mut out);
        }
        // Output never runs away from the input: headers grow by at most
        // 4 bytes per 8 read, delimiters by 16 per item or sequence header.
        proptest::prop_assert!(out.len() <= bytes.len() * 3 + 64);
    }
}
