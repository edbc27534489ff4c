//! Proptest strategies for PDUs and a fixed-seed configuration.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use sluice_net::pdu::*;

/// Small, reproducible property runs: the suite must stay fast and a failure must replay.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_0001),
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn uid() -> impl Strategy<Value = String> {
    "[1-9][0-9]{0,2}(\\.[0-9]{1,4}){1,10}"
}

pub fn ae_title() -> impl Strategy<Value = String> {
    "[A-Z0-9_-]([A-Z0-9 _-]{0,14}[A-Z0-9_-])?"
}

pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn role_selection() -> impl Strategy<Value = RoleSelection> {
    (uid(), any::<bool>(), any::<bool>()).prop_map(|(sop_class_uid, scu_role, scp_role)| {
        RoleSelection {
            sop_class_uid,
            scu_role,
            scp_role,
        }
    })
}

fn extended_negotiation() -> impl Strategy<Value = SopClassExtendedNegotiation> {
    (uid(), bytes(16)).prop_map(|(sop_class_uid, service_class_application_information)| {
        SopClassExtendedNegotiation {
            sop_class_uid,
            service_class_application_information,
        }
    })
}

fn common_extended_negotiation() -> impl Strategy<Value = SopClassCommonExtendedNegotiation> {
    (any::<u8>(), uid(), uid(), vec(uid(), 0..3)).prop_map(
        |(sub_item_version, sop_class_uid, service_class_uid, related_general_sop_class_uids)| {
            SopClassCommonExtendedNegotiation {
                sub_item_version,
                sop_class_uid,
                service_class_uid,
                related_general_sop_class_uids,
            }
        },
    )
}

/// Item types this codec does not interpret (everything but 51H-59H).
pub fn unknown_item_type() -> impl Strategy<Value = u8> {
    prop_oneof![0x00..=0x50u8, 0x5a..=0xffu8]
}

fn unknown_sub_item() -> impl Strategy<Value = UnknownSubItem> {
    (unknown_item_type(), bytes(12))
        .prop_map(|(item_type, bytes)| UnknownSubItem { item_type, bytes })
}

pub fn user_information() -> impl Strategy<Value = UserInformation> {
    (
        (
            option::of(any::<u32>()),
            option::of(uid()),
            option::of((any::<u16>(), any::<u16>())),
            vec(role_selection(), 0..3),
            option::of("[A-Z0-9_.]{1,16}"),
        ),
        (
            vec(extended_negotiation(), 0..2),
            vec(common_extended_negotiation(), 0..2),
            option::of((any::<u8>(), any::<bool>(), bytes(24), bytes(24))),
            option::of(bytes(24)),
            vec(unknown_sub_item(), 0..2),
        ),
    )
        .prop_map(
            |(
                (
                    maximum_length,
                    implementation_class_uid,
                    window,
                    role_selections,
                    implementation_version_name,
                ),
                (extended, common, identity, response, unknown_sub_items),
            )| UserInformation {
                maximum_length,
                implementation_class_uid,
                asynchronous_operations_window: window.map(|(invoked, performed)| {
                    AsynchronousOperationsWindow {
                        operations_invoked_max: invoked,
                        operations_performed_max: performed,
                    }
                }),
                role_selections,
                implementation_version_name,
                sop_class_extended_negotiations: extended,
                sop_class_common_extended_negotiations: common,
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
                unknown_sub_items,
            },
        )
}

pub fn presentation_context_proposed() -> impl Strategy<Value = PresentationContextProposed> {
    (any::<u8>(), uid(), vec(uid(), 1..4)).prop_map(|(id, abstract_syntax, transfer_syntaxes)| {
        PresentationContextProposed {
            id,
            abstract_syntax,
            transfer_syntaxes,
        }
    })
}

pub fn result_reason() -> impl Strategy<Value = PresentationContextResultReason> {
    (0u8..=4).prop_map(|code| PresentationContextResultReason::from_code(code).unwrap())
}

pub fn presentation_context_result() -> impl Strategy<Value = PresentationContextResult> {
    (any::<u8>(), result_reason(), uid()).prop_map(|(id, result, transfer_syntax)| {
        PresentationContextResult {
            id,
            result,
            transfer_syntax,
        }
    })
}

pub fn associate_rq() -> impl Strategy<Value = AssociateRq> {
    (
        any::<u16>(),
        ae_title(),
        ae_title(),
        uid(),
        vec(presentation_context_proposed(), 1..5),
        user_information(),
    )
        .prop_map(
            |(
                protocol_version,
                called_ae_title,
                calling_ae_title,
                application_context_name,
                presentation_contexts,
                user_information,
            )| {
                AssociateRq {
                    protocol_version,
                    called_ae_title,
                    calling_ae_title,
                    application_context_name,
                    presentation_contexts,
                    user_information,
                }
            },
        )
}

pub fn associate_ac() -> impl Strategy<Value = AssociateAc> {
    (
        any::<u16>(),
        ae_title(),
        ae_title(),
        uid(),
        vec(presentation_context_result(), 0..5),
        user_information(),
    )
        .prop_map(
            |(
                protocol_version,
                called_ae_title,
                calling_ae_title,
                application_context_name,
                presentation_contexts,
                user_information,
            )| {
                AssociateAc {
                    protocol_version,
                    called_ae_title,
                    calling_ae_title,
                    application_context_name,
                    presentation_contexts,
                    user_information,
                }
            },
        )
}

pub fn associate_rj() -> impl Strategy<Value = AssociateRj> {
    (any::<bool>(), 1u8..=3, any::<u8>()).prop_map(|(transient, source, reason)| AssociateRj {
        result: if transient {
            RejectResult::Transient
        } else {
            RejectResult::Permanent
        },
        reason: RejectReason::from_codes(source, reason).unwrap(),
    })
}

pub fn abort() -> impl Strategy<Value = Abort> {
    (0u8..=2, any::<u8>()).prop_map(|(source, reason)| Abort {
        source: AbortSource::from_code(source).unwrap(),
        reason: AbortReason::from_code(reason),
    })
}

pub fn presentation_data_value(value_max: usize) -> impl Strategy<Value = PresentationDataValue> {
    (any::<u8>(), any::<bool>(), any::<bool>(), bytes(value_max)).prop_map(
        |(presentation_context_id, is_command, is_last, value)| PresentationDataValue {
            presentation_context_id,
            is_command,
            is_last,
            value,
        },
    )
}

pub fn pdata_tf(value_max: usize) -> impl Strategy<Value = Pdu> {
    vec(presentation_data_value(value_max), 1..4).prop_map(Pdu::PDataTf)
}

/// Any of the seven PDU types, with every sub-item reachable.
pub fn pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        associate_rq().prop_map(|rq| Pdu::AssociateRq(Box::new(rq))),
        associate_ac().prop_map(|ac| Pdu::AssociateAc(Box::new(ac))),
        associate_rj().prop_map(Pdu::AssociateRj),
        pdata_tf(64),
        Just(Pdu::ReleaseRq),
        Just(Pdu::ReleaseRp),
        abort().prop_map(Pdu::Abort),
    ]
}

/// A user information item with every sub-item present, for fixed tests.
pub fn user_information_with_every_sub_item() -> UserInformation {
    UserInformation {
        maximum_length: Some(16384),
        implementation_class_uid: Some("1.2.826.0.1.3680043.10.1".into()),
        asynchronous_operations_window: Some(AsynchronousOperationsWindow {
            operations_invoked_max: 4,
            operations_performed_max: 0,
        }),
        role_selections: vec![RoleSelection {
            sop_class_uid: "1.2.840.10008.1.20.1".into(),
            scu_role: true,
            scp_role: true,
        }],
        implementation_version_name: Some("SLUICE_010".into()),
        sop_class_extended_negotiations: vec![SopClassExtendedNegotiation {
            sop_class_uid: "1.2.840.10008.5.1.4.1.2.2.1".into(),
            service_class_application_information: vec![1, 1, 0],
        }],
        sop_class_common_extended_negotiations: vec![SopClassCommonExtendedNegotiation {
            sub_item_version: 0,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            service_class_uid: "1.2.840.10008.4.2".into(),
            related_general_sop_class_uids: vec!["1.2.840.10008.5.1.4.1.1.88.22".into()],
        }],
        user_identity_request: Some(UserIdentityRequest {
            identity_type: 2,
            positive_response_requested: true,
            primary_field: b"alice".to_vec(),
            secondary_field: b"secret".to_vec(),
        }),
        user_identity_response: Some(UserIdentityResponse {
            server_response: b"token".to_vec(),
        }),
        unknown_sub_items: vec![UnknownSubItem {
            item_type: 0x7f,
            bytes: vec![0xde, 0xad],
        }],
    }
}
