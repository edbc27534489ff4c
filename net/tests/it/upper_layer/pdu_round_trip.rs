//! Read -> write -> read for every PDU type and sub-item.

use super::strategies::{self, config};
use proptest::prelude::*;
use sluice_net::pdata::{frame_pdu, Frame};
use sluice_net::pdu::*;

fn decode_whole(bytes: &[u8]) -> Pdu {
    let limits = DecodeLimits {
        pdata_length_max: 0,
        associate_length_max: u32::MAX - 1,
    };
    let (pdu, used) = decode_pdu(bytes, &limits).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "the PDU must take exactly its bytes");
    pdu
}

/// Encode, decode, compare; then re-encode and compare the bytes.
fn assert_round_trip(pdu: &Pdu) {
    let bytes = pdu.to_bytes().unwrap();
    let header = peek_header(&bytes).unwrap().unwrap();
    assert_eq!(header.pdu_type, pdu.pdu_type());
    assert_eq!(header.total_length(), bytes.len() as u64);
    let decoded = decode_whole(&bytes);
    assert_eq!(&decoded, pdu);
    assert_eq!(decoded.to_bytes().unwrap(), bytes);
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn every_pdu_type_round_trips(pdu in strategies::pdu()) {
        assert_round_trip(&pdu);
    }

    #[test]
    fn associate_rq_round_trips_with_generated_sub_items(rq in strategies::associate_rq()) {
        assert_round_trip(&Pdu::AssociateRq(Box::new(rq)));
    }

    #[test]
    fn associate_ac_round_trips_with_generated_sub_items(ac in strategies::associate_ac()) {
        assert_round_trip(&Pdu::AssociateAc(Box::new(ac)));
    }

    /// The owned P-DATA decode and the zero-copy framer agree.
    #[test]
    fn pdata_owned_and_borrowed_agree(pdu in strategies::pdata_tf(300)) {
        let bytes = pdu.to_bytes().unwrap();
        let Pdu::PDataTf(values) = decode_whole(&bytes) else { panic!("not P-DATA") };
        let (Frame::PData(pdata), used) = frame_pdu(&bytes, &DecodeLimits { pdata_length_max: 0, ..DecodeLimits::default() }).unwrap().unwrap() else {
            panic!("not framed as P-DATA")
        };
        prop_assert_eq!(used, bytes.len());
        let borrowed: Vec<_> = pdata.pdvs().map(|pdv| PresentationDataValue {
            presentation_context_id: pdv.presentation_context_id,
            is_command: pdv.is_command,
            is_last: pdv.is_last,
            value: pdv.bytes.to_vec(),
        }).collect();
        prop_assert_eq!(borrowed, values);
    }
}

fn rq_with_every_sub_item() -> AssociateRq {
    AssociateRq {
        protocol_version: PROTOCOL_VERSION,
        called_ae_title: "SLUICE".into(),
        calling_ae_title: "MODALITY 1".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.into(),
        presentation_contexts: vec![
            PresentationContextProposed {
                id: 1,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            },
            PresentationContextProposed {
                id: 3,
                abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into(), "1.2.840.10008.1.2".into()],
            },
        ],
        user_information: strategies::user_information_with_every_sub_item(),
    }
}

#[test]
fn associate_rq_with_every_sub_item_round_trips() {
    let rq = rq_with_every_sub_item();
    assert_round_trip(&Pdu::AssociateRq(Box::new(rq.clone())));
    // AE titles are space padded to 16 bytes at offsets 11-26 and 27-42.
    let bytes = Pdu::AssociateRq(Box::new(rq)).to_bytes().unwrap();
    assert_eq!(&bytes[10..26], b"SLUICE          ");
    assert_eq!(&bytes[26..42], b"MODALITY 1      ");
}

#[test]
fn associate_ac_with_every_result_round_trips() {
    let ac = AssociateAc {
        protocol_version: PROTOCOL_VERSION,
        called_ae_title: "SLUICE".into(),
        calling_ae_title: "MODALITY".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.into(),
        presentation_contexts: (0u8..=4)
            .map(|code| PresentationContextResult {
                id: 2 * code + 1,
                result: PresentationContextResultReason::from_code(code).unwrap(),
                transfer_syntax: "1.2.840.10008.1.2".into(),
            })
            .collect(),
        user_information: strategies::user_information_with_every_sub_item(),
    };
    assert_round_trip(&Pdu::AssociateAc(Box::new(ac)));
}

#[test]
fn fixed_size_pdus_round_trip() {
    assert_round_trip(&Pdu::ReleaseRq);
    assert_round_trip(&Pdu::ReleaseRp);
    for (source, reason) in [
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 7),
        (2, 1),
        (2, 2),
        (3, 1),
        (3, 2),
        (1, 5),
    ] {
        let rj = AssociateRj {
            result: RejectResult::Permanent,
            reason: RejectReason::from_codes(source, reason).unwrap(),
        };
        assert_eq!(rj.codes(), (1, source, reason));
        assert_round_trip(&Pdu::AssociateRj(rj));
    }
    for reason in 0..=7 {
        assert_round_trip(&Pdu::Abort(Abort {
            source: AbortSource::ServiceProvider,
            reason: AbortReason::from_code(reason),
        }));
    }
}

#[test]
fn ae_titles_are_trimmed_on_decode_and_validated_on_encode() {
    let mut rq = rq_with_every_sub_item();
    rq.called_ae_title = "  PADDED  ".into();
    let bytes = Pdu::AssociateRq(Box::new(rq.clone())).to_bytes().unwrap();
    let Pdu::AssociateRq(decoded) = decode_whole(&bytes) else {
        panic!()
    };
    assert_eq!(decoded.called_ae_title, "PADDED");

    for (title, reason) in [
        ("", AeTitleError::Empty),
        ("                ", AeTitleError::Empty),
        ("SEVENTEEN-CHARS-X", AeTitleError::TooLong { length: 17 }),
        ("BACK\\SLASH", AeTitleError::BadCharacter { byte: b'\\' }),
        ("TAB\tHERE", AeTitleError::BadCharacter { byte: b'\t' }),
    ] {
        rq.called_ae_title = title.into();
        assert_eq!(
            Pdu::AssociateRq(Box::new(rq.clone())).to_bytes(),
            Err(EncodeError::BadAeTitle {
                field: "Called-AE-title",
                reason
            }),
            "title {title:?}"
        );
        assert_eq!(validate_ae_title(title), Err(reason));
    }
}

#[test]
fn uid_padding_from_peers_is_trimmed() {
    // A peer that pads an odd-length UID with a NUL, as some do.
    let rq = rq_with_every_sub_item();
    let mut bytes = Pdu::AssociateRq(Box::new(rq)).to_bytes().unwrap();
    // Application context item starts at byte 74: 10H, 0, length, name.
    assert_eq!(bytes[74], 0x10);
    let name_length = u16::from_be_bytes([bytes[76], bytes[77]]) as usize;
    bytes.insert(78 + name_length, 0);
    bytes[77] += 1;
    let pdu_length = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) + 1;
    bytes[2..6].copy_from_slice(&pdu_length.to_be_bytes());
    let Pdu::AssociateRq(decoded) = decode_whole(&bytes) else {
        panic!()
    };
    assert_eq!(
        decoded.application_context_name,
        DICOM_APPLICATION_CONTEXT_NAME
    );
}

#[test]
fn rejected_context_without_transfer_syntax_decodes() {
    // PS3.8: the transfer syntax of a rejected context is not significant;
    // some peers omit the sub-item.
    let ac = AssociateAc {
        protocol_version: 1,
        called_ae_title: "A".into(),
        calling_ae_title: "B".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.into(),
        presentation_contexts: vec![PresentationContextResult {
            id: 1,
            result: PresentationContextResultReason::AbstractSyntaxNotSupported,
            transfer_syntax: "1.2".into(),
        }],
        user_information: UserInformation::default(),
    };
    let mut bytes = Pdu::AssociateAc(Box::new(ac)).to_bytes().unwrap();
    // Remove the 40H sub-item (4 + 3 bytes) from the 21H item at offset 96.
    let item_at = 74 + 4 + DICOM_APPLICATION_CONTEXT_NAME.len();
    assert_eq!(bytes[item_at], 0x21);
    bytes.drain(item_at + 8..item_at + 15);
    bytes[item_at + 3] -= 7;
    let pdu_length = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) - 7;
    bytes[2..6].copy_from_slice(&pdu_length.to_be_bytes());
    let Pdu::AssociateAc(decoded) = decode_whole(&bytes) else {
        panic!()
    };
    assert_eq!(decoded.presentation_contexts[0].transfer_syntax, "");
    assert_eq!(
        decoded.presentation_contexts[0].result,
        PresentationContextResultReason::AbstractSyntaxNotSupported
    );
}
