//! Malformed input: each gets its specific error, and no decoder panics
//! on any bytes (fixed-seed property tests).

use super::strategies::{self, config};
use proptest::collection::vec;
use proptest::prelude::*;
use sluice_net::pdata::*;
use sluice_net::pdu::*;

/// Runs `bytes` through every decoder with the same limits; returns the
/// contiguous framer's error and checks the streaming decoder's agrees.
fn every_decoder_error(bytes: &[u8], limits: DecodeLimits) -> DecodeError {
    let framed = frame_pdu(bytes, &limits).expect_err("the framer must reject");
    if let Err(whole) = decode_pdu(bytes, &limits) {
        assert_eq!(whole, framed, "decode_pdu and frame_pdu disagree");
    }
    let mut decoder = StreamDecoder::new(limits);
    let streamed = decoder
        .feed(bytes)
        .find_map(Result::err)
        .expect("the stream decoder must reject");
    assert_eq!(streamed, framed, "stream decoder and framer disagree");
    // Once failed, the decoder stays failed.
    assert_eq!(decoder.next_event(&[0; 8]), Err(DecodeError::DecoderFailed));
    framed
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn pdu_length_all_ones_is_specific() {
    for pdu_type in 1..=7u8 {
        let bytes = [pdu_type, 0, 0xff, 0xff, 0xff, 0xff];
        let expected = DecodeError::UndefinedPduLength {
            pdu_type: PduType::from_code(pdu_type).unwrap(),
        };
        assert_eq!(peek_header(&bytes), Err(expected.clone()));
        assert_eq!(every_decoder_error(&bytes, limits()), expected);
    }
}

#[test]
fn unknown_pdu_type_is_specific() {
    for pdu_type in [0u8, 8, 0x10, 0xff] {
        let bytes = [pdu_type, 0, 0, 0, 0, 4, 0, 0, 0, 0];
        assert_eq!(
            every_decoder_error(&bytes, limits()),
            DecodeError::UnknownPduType { pdu_type }
        );
    }
}

#[test]
fn header_peek_needs_six_bytes() {
    for length in 0..6 {
        assert_eq!(peek_header(&[4, 0, 0, 0, 0, 8][..length]), Ok(None));
    }
    assert_eq!(
        peek_header(&[4, 0, 0, 0, 0, 8]),
        Ok(Some(PduHeader {
            pdu_type: PduType::PDataTf,
            pdu_length: 8
        }))
    );
}

#[test]
fn pdv_length_past_its_pdu_is_specific() {
    // PDU-length 8, PDV item-length 100.
    let bytes = [4, 0, 0, 0, 0, 8, 0, 0, 0, 100, 1, 2, 0xaa, 0xbb];
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::PdvLengthPastPdu {
            length: 100,
            remaining: 4
        }
    );
}

#[test]
fn second_pdv_past_its_pdu_is_specific() {
    // First PDV fine (item-length 3), second claims 9 with 2 left after its length.
    let bytes = [4, 0, 0, 0, 0, 13, 0, 0, 0, 3, 1, 2, 0xaa, 0, 0, 0, 9, 1, 2];
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::PdvLengthPastPdu {
            length: 9,
            remaining: 2
        }
    );
}

#[test]
fn pdv_length_below_two_is_specific() {
    for length in [0u8, 1] {
        let bytes = [4, 0, 0, 0, 0, 6, 0, 0, 0, length, 1, 2];
        assert_eq!(
            every_decoder_error(&bytes, limits()),
            DecodeError::PdvLengthTooShort {
                length: u32::from(length)
            }
        );
    }
}

#[test]
fn pdv_header_past_its_pdu_is_specific() {
    let bytes = [4, 0, 0, 0, 0, 3, 0, 0, 0];
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::PdvHeaderPastPdu { remaining: 3 }
    );
}

#[test]
fn empty_pdata_is_specific() {
    assert_eq!(
        every_decoder_error(&[4, 0, 0, 0, 0, 0], limits()),
        DecodeError::PDataEmpty
    );
}

#[test]
fn pdata_over_the_negotiated_maximum_is_specific() {
    let mut bytes = Vec::new();
    encode_message(1, false, &[7u8; 20_000], 32_768, &mut bytes).unwrap();
    let limits = DecodeLimits {
        pdata_length_max: 16_384,
        ..DecodeLimits::default()
    };
    assert_eq!(
        every_decoder_error(&bytes, limits),
        DecodeError::PDataTooLong {
            length: 20_006,
            length_max: 16_384
        }
    );
    // Detected from the header alone: no value byte is needed.
    let mut decoder = StreamDecoder::new(limits);
    assert_eq!(
        decoder.next_event(&bytes[..6]),
        Err(DecodeError::PDataTooLong {
            length: 20_006,
            length_max: 16_384
        })
    );
    assert_eq!(decoder.failed_pdu_type(), Some(PduType::PDataTf));
}

fn big_rq(context_count: u8) -> Vec<u8> {
    let rq = AssociateRq {
        protocol_version: 1,
        called_ae_title: "SLUICE".into(),
        calling_ae_title: "SCU".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.into(),
        presentation_contexts: (0..context_count)
            .map(|i| PresentationContextProposed {
                id: i.wrapping_mul(2).wrapping_add(1),
                abstract_syntax: format!("1.2.840.10008.5.1.4.1.1.{i}"),
                transfer_syntaxes: (0..12)
                    .map(|t| format!("1.2.840.10008.1.2.4.{t}"))
                    .collect(),
            })
            .collect(),
        user_information: UserInformation::default(),
    };
    Pdu::AssociateRq(Box::new(rq)).to_bytes().unwrap()
}

#[test]
fn associate_rq_over_its_cap_is_specific() {
    let bytes = big_rq(128);
    let length = (bytes.len() - 6) as u32;
    assert!(length > 8192);
    let limits = DecodeLimits {
        associate_length_max: 8192,
        ..DecodeLimits::default()
    };
    let expected = DecodeError::PduTooLong {
        pdu_type: PduType::AssociateRq,
        length,
        length_max: 8192,
    };
    assert_eq!(every_decoder_error(&bytes, limits), expected);
    // The default cap (64 KiB) takes it.
    assert!(decode_pdu(&bytes, &DecodeLimits::default())
        .unwrap()
        .is_some());
    // Detected from the header: nothing of the body is buffered.
    let mut decoder = StreamDecoder::new(limits);
    assert_eq!(decoder.next_event(&bytes[..6]), Err(expected));
}

#[test]
fn fixed_size_pdus_with_other_lengths_are_specific() {
    for (pdu_type, code) in [
        (PduType::ReleaseRq, 5u8),
        (PduType::ReleaseRp, 6),
        (PduType::Abort, 7),
        (PduType::AssociateRj, 3),
    ] {
        let bytes = [code, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0];
        assert_eq!(
            every_decoder_error(&bytes, limits()),
            DecodeError::FixedLengthMismatch {
                pdu_type,
                length: 5,
                expected: 4
            }
        );
    }
}

/// A valid RQ's bytes with `edit` applied to the body, PDU-length fixed up.
fn edited_rq(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = big_rq(1);
    let mut body = bytes.split_off(6);
    edit(&mut body);
    bytes[2..6].copy_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Offset in the RQ body of the first variable item (byte 75 of the PDU).
const ITEMS: usize = 68;

#[test]
fn truncated_fixed_fields_are_specific() {
    let bytes = edited_rq(|body| body.truncate(40));
    assert!(matches!(
        every_decoder_error(&bytes, limits()),
        DecodeError::FieldTruncated { .. }
    ));
}

#[test]
fn truncated_item_header_is_specific() {
    let bytes = edited_rq(|body| body.extend_from_slice(&[0x50, 0]));
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::ItemHeaderTruncated {
            parent: "A-ASSOCIATE-RQ",
            available: 2
        }
    );
}

#[test]
fn item_length_past_its_parent_is_specific() {
    // Grow the application context item's length by 0x1000.
    let bytes = edited_rq(|body| body[ITEMS + 2] = 0x10);
    assert!(matches!(
        every_decoder_error(&bytes, limits()),
        DecodeError::ItemLengthPastParent {
            item_type: 0x10,
            parent: "A-ASSOCIATE-RQ",
            ..
        }
    ));
}

#[test]
fn missing_mandatory_items_are_specific() {
    let app_context_length = 4 + DICOM_APPLICATION_CONTEXT_NAME.len();
    let bytes = edited_rq(|body| {
        body.drain(ITEMS..ITEMS + app_context_length);
    });
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::MissingItem {
            item: "Application Context Item"
        }
    );

    let bytes = edited_rq(|body| {
        let user_info = body.len() - 4; // empty user information item at the end
        assert_eq!(body[user_info], 0x50);
        body.truncate(user_info);
    });
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::MissingItem {
            item: "User Information Item"
        }
    );

    let bytes = edited_rq(|body| {
        let context = ITEMS + app_context_length;
        assert_eq!(body[context], 0x20);
        let length = u16::from_be_bytes([body[context + 2], body[context + 3]]) as usize;
        body.drain(context..context + 4 + length);
    });
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::MissingItem {
            item: "Presentation Context Item"
        }
    );
}

#[test]
fn duplicate_and_unexpected_items_are_specific() {
    let bytes = edited_rq(|body| body.extend_from_slice(&[0x50, 0, 0, 0]));
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::DuplicateItem {
            item_type: 0x50,
            parent: "A-ASSOCIATE-RQ"
        }
    );
    let bytes = edited_rq(|body| body.extend_from_slice(&[0x21, 0, 0, 0]));
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::UnexpectedItem {
            item_type: 0x21,
            parent: "A-ASSOCIATE-RQ"
        }
    );
}

#[test]
fn bad_ae_title_is_specific() {
    // Called-AE-title is body bytes 4..20 (PDU bytes 11-26).
    let bytes = edited_rq(|body| body[5] = 0x01);
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::BadAeTitle {
            field: "Called-AE-title",
            reason: AeTitleError::BadCharacter { byte: 0x01 }
        }
    );
    let bytes = edited_rq(|body| body[20..36].fill(b' '));
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::BadAeTitle {
            field: "Calling-AE-title",
            reason: AeTitleError::Empty
        }
    );
}

#[test]
fn sub_item_errors_are_specific() {
    // Maximum Length sub-item with item-length 3.
    let bytes = edited_rq(|body| {
        let end = body.len();
        body[end - 1] = 7; // user information length 0 -> 7
        body.extend_from_slice(&[0x51, 0, 0, 3, 0, 0x40, 0]);
    });
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::ItemLengthMismatch {
            item_type: 0x51,
            length: 3,
            expected: 4
        }
    );
    // Role selection whose UID-length runs past the sub-item.
    let bytes = edited_rq(|body| {
        let end = body.len();
        body[end - 1] = 8;
        body.extend_from_slice(&[0x54, 0, 0, 4, 0, 9, b'1', b'2']);
    });
    assert_eq!(
        every_decoder_error(&bytes, limits()),
        DecodeError::FieldTruncated {
            field: "SOP-class-uid"
        }
    );
}

#[test]
fn undefined_field_values_are_specific() {
    assert_eq!(
        every_decoder_error(&[3, 0, 0, 0, 0, 4, 0, 9, 1, 1], limits()),
        DecodeError::InvalidFieldValue {
            field: "Result",
            value: 9
        }
    );
    assert_eq!(
        every_decoder_error(&[3, 0, 0, 0, 0, 4, 0, 1, 4, 1], limits()),
        DecodeError::InvalidFieldValue {
            field: "Source",
            value: 4
        }
    );
    assert_eq!(
        every_decoder_error(&[7, 0, 0, 0, 0, 4, 0, 0, 3, 0], limits()),
        DecodeError::InvalidFieldValue {
            field: "Source",
            value: 3
        }
    );
}

#[test]
fn body_errors_name_their_pdu_type_through_the_stream_decoder() {
    let bytes = edited_rq(|body| body[5] = 0x01);
    let mut decoder = StreamDecoder::new(limits());
    assert!(decoder.feed(&bytes).any(|e| e.is_err()));
    assert_eq!(decoder.failed_pdu_type(), Some(PduType::AssociateRq));
    let mut decoder = StreamDecoder::new(limits());
    assert!(decoder.feed(&[9, 0, 0, 0, 0, 0]).any(|e| e.is_err()));
    assert_eq!(decoder.failed_pdu_type(), None);
}

/// Random bytes, and valid PDUs with bytes flipped, through every decoder:
/// never a panic; whatever decodes re-encodes to something that decodes the same.
fn fuzz_all_decoders(bytes: &[u8], cuts: &[usize]) {
    let limits = DecodeLimits {
        pdata_length_max: 4096,
        associate_length_max: 4096,
    };
    let _ = peek_header(bytes);
    if let Ok(Some((pdu, _))) = decode_pdu(bytes, &limits) {
        if let Ok(again) = pdu.to_bytes() {
            let reread = decode_pdu(
                &again,
                &DecodeLimits {
                    pdata_length_max: 0,
                    associate_length_max: u32::MAX - 1,
                },
            );
            assert_eq!(reread.unwrap().unwrap().0, pdu);
        }
    }
    if let Ok(Some((Frame::PData(pdata), _))) = frame_pdu(bytes, &limits) {
        assert!(pdata.pdvs().count() > 0);
    }
    for pdu_type in 1..=7 {
        let _ = decode_pdu_body(PduType::from_code(pdu_type).unwrap(), bytes);
    }
    let _ = PDataTf::parse(bytes).map(|p| p.pdvs().count());
    let mut decoder = StreamDecoder::new(limits);
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    bounds.push(bytes.len());
    bounds.sort_unstable();
    'pieces: for end in bounds {
        let piece = &bytes[start..end];
        let mut offset = 0;
        loop {
            match decoder.next_event(&piece[offset..]) {
                Ok(step) => {
                    offset += step.consumed;
                    assert!(offset <= piece.len());
                    if step.event.is_none() {
                        break;
                    }
                }
                Err(_) => break 'pieces,
            }
        }
        start = end;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_bytes_never_panic(bytes in strategies::bytes(300), cuts in vec(any::<usize>(), 0..4)) {
        fuzz_all_decoders(&bytes, &cuts);
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(
        pdu_type in 1u8..=7,
        body in strategies::bytes(300),
        cuts in vec(any::<usize>(), 0..4),
    ) {
        let mut bytes = vec![pdu_type, 0];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        fuzz_all_decoders(&bytes, &cuts);
    }

    #[test]
    fn mutated_valid_pdus_never_panic(
        pdu in strategies::pdu(),
        flips in vec((any::<usize>(), any::<u8>()), 1..6),
        cuts in vec(any::<usize>(), 0..4),
    ) {
        let mut bytes = pdu.to_bytes().unwrap();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        fuzz_all_decoders(&bytes, &cuts);
    }
}
