//! Differential tests against dicom-ul 0.10 on the same bytes: our encoding
//! read by dicom-ul, dicom-ul's encoding read by us, and the P-DATA fast
//! path against dicom-ul's P-DATA reader. Restricted to what both codecs
//! type (dicom-ul keeps 53H/59H as unknown sub-items and drops user
//! identity types outside 1-5).

use super::strategies::{self, config};
use dicom_ul::pdu as ul;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sluice_net::pdata::{frame_pdu, Frame, StreamDecoder, StreamEvent};
use sluice_net::pdu::*;

fn ul_read(bytes: &[u8]) -> ul::Pdu {
    ul::read_pdu(bytes, ul::MAXIMUM_PDU_SIZE, false)
        .expect("dicom-ul must read our bytes")
        .expect("dicom-ul must find a whole PDU")
}

fn ul_write(pdu: &ul::Pdu) -> Vec<u8> {
    let mut bytes = Vec::new();
    ul::write_pdu(&mut bytes, pdu).expect("dicom-ul must write");
    bytes
}

fn ours_read(bytes: &[u8]) -> Pdu {
    let limits = DecodeLimits {
        pdata_length_max: 0,
        associate_length_max: u32::MAX - 1,
    };
    let (pdu, used) = decode_pdu(bytes, &limits).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    pdu
}

fn identity_type(code: u8) -> ul::UserIdentityType {
    match code {
        1 => ul::UserIdentityType::Username,
        2 => ul::UserIdentityType::UsernamePassword,
        3 => ul::UserIdentityType::KerberosServiceTicket,
        4 => ul::UserIdentityType::SamlAssertion,
        _ => ul::UserIdentityType::Jwt,
    }
}

/// Our user information as dicom-ul represents it, in our encoding order.
fn user_items_to_ul(info: &UserInformation) -> Vec<ul::UserVariableItem> {
    use ul::UserVariableItem as U;
    let mut items = Vec::new();
    if let Some(length) = info.maximum_length {
        items.push(U::MaxLength(length));
    }
    if let Some(uid) = &info.implementation_class_uid {
        items.push(U::ImplementationClassUID(uid.clone()));
    }
    if let Some(window) = info.asynchronous_operations_window {
        let mut bytes = window.operations_invoked_max.to_be_bytes().to_vec();
        bytes.extend_from_slice(&window.operations_performed_max.to_be_bytes());
        items.push(U::Unknown(0x53, bytes));
    }
    for role in &info.role_selections {
        items.push(U::ScuScpRoleSelectionSubItem(
            role.sop_class_uid.clone(),
            ul::RequestorRoles {
                scu: role.scu_role,
                scp: role.scp_role,
            },
        ));
    }
    if let Some(name) = &info.implementation_version_name {
        items.push(U::ImplementationVersionName(name.clone()));
    }
    for negotiation in &info.sop_class_extended_negotiations {
        items.push(U::SopClassExtendedNegotiationSubItem(
            negotiation.sop_class_uid.clone(),
            negotiation.service_class_application_information.clone(),
        ));
    }
    assert!(info.sop_class_common_extended_negotiations.is_empty());
    if let Some(identity) = &info.user_identity_request {
        items.push(U::UserIdentityItem(ul::UserIdentity::new(
            identity.positive_response_requested,
            identity_type(identity.identity_type),
            identity.primary_field.clone(),
            identity.secondary_field.clone(),
        )));
    }
    if let Some(response) = &info.user_identity_response {
        let mut bytes = (response.server_response.len() as u16)
            .to_be_bytes()
            .to_vec();
        bytes.extend_from_slice(&response.server_response);
        items.push(U::Unknown(0x59, bytes));
    }
    for unknown in &info.unknown_sub_items {
        items.push(U::Unknown(unknown.item_type, unknown.bytes.clone()));
    }
    items
}

fn result_to_ul(result: PresentationContextResultReason) -> ul::PresentationContextResultReason {
    use ul::PresentationContextResultReason as R;
    match result {
        PresentationContextResultReason::Acceptance => R::Acceptance,
        PresentationContextResultReason::UserRejection => R::UserRejection,
        PresentationContextResultReason::NoReason => R::NoReason,
        PresentationContextResultReason::AbstractSyntaxNotSupported => {
            R::AbstractSyntaxNotSupported
        }
        PresentationContextResultReason::TransferSyntaxesNotSupported => {
            R::TransferSyntaxesNotSupported
        }
    }
}

fn rj_codes_of_ul(rj: &ul::AssociationRJ) -> (u8, u8, u8) {
    use ul::AssociationRJServiceProviderASCEReason as Acse;
    use ul::AssociationRJServiceProviderPresentationReason as Presentation;
    use ul::AssociationRJServiceUserReason as User;
    let result = match rj.result {
        ul::AssociationRJResult::Permanent => 1,
        ul::AssociationRJResult::Transient => 2,
    };
    let (source, reason) = match &rj.source {
        ul::AssociationRJSource::ServiceUser(reason) => (
            1,
            match reason {
                User::NoReasonGiven => 1,
                User::ApplicationContextNameNotSupported => 2,
                User::CallingAETitleNotRecognized => 3,
                User::CalledAETitleNotRecognized => 7,
                User::Reserved(code) => *code,
            },
        ),
        ul::AssociationRJSource::ServiceProviderASCE(reason) => (
            2,
            match reason {
                Acse::NoReasonGiven => 1,
                Acse::ProtocolVersionNotSupported => 2,
            },
        ),
        ul::AssociationRJSource::ServiceProviderPresentation(reason) => (
            3,
            match reason {
                Presentation::TemporaryCongestion => 1,
                Presentation::LocalLimitExceeded => 2,
                Presentation::Reserved(code) => *code,
            },
        ),
    };
    (result, source, reason)
}

/// Our PDU as dicom-ul represents it (for the PDUs and fields both type).
fn to_ul(pdu: &Pdu) -> ul::Pdu {
    match pdu {
        Pdu::AssociateRq(rq) => ul::Pdu::AssociationRQ(ul::AssociationRQ {
            protocol_version: rq.protocol_version,
            calling_ae_title: rq.calling_ae_title.clone(),
            called_ae_title: rq.called_ae_title.clone(),
            application_context_name: rq.application_context_name.clone(),
            presentation_contexts: rq
                .presentation_contexts
                .iter()
                .map(|c| ul::PresentationContextProposed {
                    id: c.id,
                    abstract_syntax: c.abstract_syntax.clone(),
                    transfer_syntaxes: c.transfer_syntaxes.clone(),
                })
                .collect(),
            user_variables: user_items_to_ul(&rq.user_information),
        }),
        Pdu::AssociateAc(ac) => ul::Pdu::AssociationAC(ul::AssociationAC {
            protocol_version: ac.protocol_version,
            calling_ae_title: ac.calling_ae_title.clone(),
            called_ae_title: ac.called_ae_title.clone(),
            application_context_name: ac.application_context_name.clone(),
            presentation_contexts: ac
                .presentation_contexts
                .iter()
                .map(|c| ul::PresentationContextResult {
                    id: c.id,
                    reason: result_to_ul(c.result),
                    transfer_syntax: c.transfer_syntax.clone(),
                })
                .collect(),
            user_variables: user_items_to_ul(&ac.user_information),
        }),
        Pdu::PDataTf(values) => ul::Pdu::PData {
            data: values
                .iter()
                .map(|v| ul::PDataValue {
                    presentation_context_id: v.presentation_context_id,
                    value_type: if v.is_command {
                        ul::PDataValueType::Command
                    } else {
                        ul::PDataValueType::Data
                    },
                    is_last: v.is_last,
                    data: v.value.clone(),
                })
                .collect(),
        },
        Pdu::ReleaseRq => ul::Pdu::ReleaseRQ,
        Pdu::ReleaseRp => ul::Pdu::ReleaseRP,
        Pdu::AssociateRj(_) | Pdu::Abort(_) => unreachable!("compared by codes"),
    }
}

fn user_information_both_type() -> impl Strategy<Value = UserInformation> {
    (
        (
            option::of(any::<u32>()),
            option::of(strategies::uid()),
            option::of((any::<u16>(), any::<u16>())),
        ),
        (
            vec((strategies::uid(), any::<bool>(), any::<bool>()), 0..3),
            option::of("[A-Z0-9_.]{1,16}"),
            vec((strategies::uid(), strategies::bytes(12)), 0..2),
        ),
        (
            option::of((
                1u8..=5,
                any::<bool>(),
                strategies::bytes(20),
                strategies::bytes(20),
            )),
            option::of(strategies::bytes(20)),
            vec(
                (strategies::unknown_item_type(), strategies::bytes(12)),
                0..2,
            ),
        ),
    )
        .prop_map(
            |(
                (maximum_length, class_uid, window),
                (roles, version, extended),
                (identity, response, unknown),
            )| {
                UserInformation {
                    maximum_length,
                    implementation_class_uid: class_uid,
                    asynchronous_operations_window: window.map(|(i, p)| {
                        AsynchronousOperationsWindow {
                            operations_invoked_max: i,
                            operations_performed_max: p,
                        }
                    }),
                    role_selections: roles
                        .into_iter()
                        .map(|(sop_class_uid, scu_role, scp_role)| RoleSelection {
                            sop_class_uid,
                            scu_role,
                            scp_role,
                        })
                        .collect(),
                    implementation_version_name: version,
                    sop_class_extended_negotiations: extended
                        .into_iter()
                        .map(|(sop_class_uid, information)| SopClassExtendedNegotiation {
                            sop_class_uid,
                            service_class_application_information: information,
                        })
                        .collect(),
                    sop_class_common_extended_negotiations: Vec::new(),
                    user_identity_request: identity.map(
                        |(
                            identity_type,
                            positive_response_requested,
                            primary_field,
                            secondary_field,
                        )| {
                            UserIdentityRequest {
                                identity_type,
                                positive_response_requested,
                                primary_field,
                                secondary_field,
                            }
                        },
                    ),
                    user_identity_response: response
                        .map(|server_response| UserIdentityResponse { server_response }),
                    unknown_sub_items: unknown
                        .into_iter()
                        .map(|(item_type, bytes)| UnknownSubItem { item_type, bytes })
                        .collect(),
                }
            },
        )
}

fn pdu_both_type() -> impl Strategy<Value = Pdu> {
    let rq =
        (strategies::associate_rq(), user_information_both_type()).prop_map(|(mut rq, info)| {
            rq.user_information = info;
            Pdu::AssociateRq(Box::new(rq))
        });
    let ac =
        (strategies::associate_ac(), user_information_both_type()).prop_map(|(mut ac, info)| {
            ac.user_information = info;
            Pdu::AssociateAc(Box::new(ac))
        });
    prop_oneof![
        rq,
        ac,
        strategies::pdata_tf(200),
        Just(Pdu::ReleaseRq),
        Just(Pdu::ReleaseRp)
    ]
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn dicom_ul_reads_our_bytes(pdu in pdu_both_type()) {
        let ours = pdu.to_bytes().unwrap();
        prop_assert_eq!(ul_read(&ours), to_ul(&pdu));
    }

    #[test]
    fn we_read_dicom_ul_bytes(pdu in pdu_both_type()) {
        let theirs = ul_write(&to_ul(&pdu));
        prop_assert_eq!(&ours_read(&theirs), &pdu);
        // Same structure in the same order: the same bytes.
        prop_assert_eq!(theirs, pdu.to_bytes().unwrap());
    }

    #[test]
    fn reject_codes_agree(transient in any::<bool>(), (source, reason) in prop_oneof![
        (Just(1u8), 1u8..=10),
        (Just(2u8), 1u8..=2),
        (Just(3u8), 0u8..=7),
    ]) {
        let rj = AssociateRj {
            result: if transient { RejectResult::Transient } else { RejectResult::Permanent },
            reason: RejectReason::from_codes(source, reason).unwrap(),
        };
        let ours = Pdu::AssociateRj(rj).to_bytes().unwrap();
        let ul::Pdu::AssociationRJ(theirs) = ul_read(&ours) else { panic!("not an RJ") };
        prop_assert_eq!(rj_codes_of_ul(&theirs), rj.codes());
        prop_assert_eq!(ours_read(&ul_write(&ul::Pdu::AssociationRJ(theirs))), Pdu::AssociateRj(rj));
    }

    #[test]
    fn abort_agrees(reason in 0u8..=6) {
        let abort = Abort { source: AbortSource::ServiceProvider, reason: AbortReason::from_code(reason) };
        let ours = Pdu::Abort(abort).to_bytes().unwrap();
        let theirs = ul_read(&ours);
        let ul::Pdu::AbortRQ { source: ul::AbortRQSource::ServiceProvider(_) } = &theirs else {
            panic!("dicom-ul read {theirs:?}")
        };
        prop_assert_eq!(ul_write(&theirs), ours);
    }

    /// The zero-copy framer and the streaming decoder see exactly the PDVs
    /// dicom-ul's reader copies out, on a stream dicom-ul wrote.
    #[test]
    fn pdata_fast_path_matches_dicom_ul(
        pdus in vec(strategies::pdata_tf(3000), 1..5),
        piece_length in 1usize..5000,
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for pdu in &pdus {
            let theirs = to_ul(pdu);
            let ul::Pdu::PData { data } = &theirs else { unreachable!() };
            expected.extend(data.iter().map(|v| (v.presentation_context_id, v.value_type == ul::PDataValueType::Command, v.is_last, v.data.clone())));
            stream.extend(ul_write(&theirs));
        }
        // dicom-ul reads its own stream back PDU by PDU.
        let mut rest = &stream[..];
        let mut ul_values = Vec::new();
        while !rest.is_empty() {
            let length = 6 + u32::from_be_bytes(rest[2..6].try_into().unwrap()) as usize;
            let ul::Pdu::PData { data } = ul_read(&rest[..length]) else { panic!() };
            ul_values.extend(data.into_iter().map(|v| (v.presentation_context_id, v.value_type == ul::PDataValueType::Command, v.is_last, v.data)));
            rest = &rest[length..];
        }
        prop_assert_eq!(&ul_values, &expected);

        // Contiguous framer.
        let limits = DecodeLimits { pdata_length_max: 0, ..DecodeLimits::default() };
        let mut framed = Vec::new();
        let mut offset = 0;
        while offset < stream.len() {
            let (Frame::PData(pdata), used) = frame_pdu(&stream[offset..], &limits).unwrap().unwrap() else { panic!() };
            framed.extend(pdata.pdvs().map(|p| (p.presentation_context_id, p.is_command, p.is_last, p.bytes.to_vec())));
            offset += used;
        }
        prop_assert_eq!(&framed, &expected);

        // Streaming decoder, fixed-size reads.
        let mut decoder = StreamDecoder::new(limits);
        let mut streamed = Vec::new();
        let mut current: Option<(u8, bool, bool, Vec<u8>)> = None;
        for piece in stream.chunks(piece_length) {
            for event in decoder.feed(piece) {
                if let StreamEvent::PdvFragment(f) = event.unwrap() {
                    let entry = current.get_or_insert_with(|| (f.presentation_context_id, f.is_command, f.is_last, Vec::new()));
                    entry.3.extend_from_slice(f.bytes);
                    if f.pdv_complete {
                        streamed.push(current.take().unwrap());
                    }
                }
            }
        }
        prop_assert_eq!(&streamed, &expected);
    }
}

#[test]
fn dicom_ul_reads_our_associate_rq_with_every_shared_sub_item() {
    let mut info = strategies::user_information_with_every_sub_item();
    info.sop_class_common_extended_negotiations.clear();
    let rq = AssociateRq {
        protocol_version: 1,
        called_ae_title: "SLUICE".into(),
        calling_ae_title: "STORESCU".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_information: info,
    };
    let pdu = Pdu::AssociateRq(Box::new(rq));
    assert_eq!(ul_read(&pdu.to_bytes().unwrap()), to_ul(&pdu));
}
