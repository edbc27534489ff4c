//! Tests of the command-set codec.

use super::*;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn all_commands() -> Vec<Command> {
    let detail = StatusDetail {
        error_comment: Some("disk full".to_owned()),
        offending_elements: vec![Tag(0x0008, 0x0018), Tag(0x0020, 0x000D)],
        error_id: Some(7),
    };
    vec![
        Command::CEchoRq(CEchoRq {
            message_id: 1,
            affected_sop_class_uid: crate::uid::VERIFICATION.to_owned(),
        }),
        Command::CEchoRsp(CEchoRsp {
            message_id_being_responded_to: 1,
            affected_sop_class_uid: Some(crate::uid::VERIFICATION.to_owned()),
            status: Status::SUCCESS,
            detail: StatusDetail::default(),
        }),
        Command::CStoreRq(CStoreRq {
            message_id: 7,
            priority: Priority::Medium,
            affected_sop_class_uid: CT.to_owned(),
            affected_sop_instance_uid: "1.2.3.4.5.6.7".to_owned(),
            move_originator: None,
        }),
        Command::CStoreRq(CStoreRq {
            message_id: 0xFFFF,
            priority: Priority::High,
            affected_sop_class_uid: CT.to_owned(),
            affected_sop_instance_uid: "1.2.3.4.5.6.78".to_owned(),
            move_originator: Some(MoveOriginator {
                ae_title: "MOVESCU".to_owned(),
                message_id: 33,
            }),
        }),
        Command::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: 7,
            affected_sop_class_uid: Some(CT.to_owned()),
            affected_sop_instance_uid: Some("1.2.3.4.5.6.7".to_owned()),
            status: Status::OUT_OF_DISK_SPACE,
            detail: detail.clone(),
        }),
        Command::CFindRq(CFindRq {
            message_id: 3,
            priority: Priority::Low,
            affected_sop_class_uid: crate::uid::STUDY_ROOT_QR_FIND.to_owned(),
        }),
        Command::CFindRsp(CFindRsp {
            message_id_being_responded_to: 3,
            affected_sop_class_uid: Some(crate::uid::STUDY_ROOT_QR_FIND.to_owned()),
            status: Status::PENDING,
            data_set: true,
            detail: StatusDetail::default(),
        }),
        Command::CFindRsp(CFindRsp {
            message_id_being_responded_to: 3,
            affected_sop_class_uid: None,
            status: Status::SUCCESS,
            data_set: false,
            detail: StatusDetail::default(),
        }),
        Command::CMoveRq(CMoveRq {
            message_id: 4,
            priority: Priority::Medium,
            affected_sop_class_uid: crate::uid::STUDY_ROOT_QR_MOVE.to_owned(),
            move_destination: "DEST_AE".to_owned(),
        }),
        Command::CMoveRsp(CMoveRsp {
            message_id_being_responded_to: 4,
            affected_sop_class_uid: Some(crate::uid::STUDY_ROOT_QR_MOVE.to_owned()),
            status: Status::PENDING,
            sub_operations: SubOperationCounts {
                remaining: Some(10),
                completed: Some(5),
                failed: Some(1),
                warning: Some(0),
            },
            data_set: false,
            detail: StatusDetail::default(),
        }),
        Command::CMoveRsp(CMoveRsp {
            message_id_being_responded_to: 4,
            affected_sop_class_uid: None,
            status: Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES,
            sub_operations: SubOperationCounts {
                remaining: None,
                completed: Some(15),
                failed: Some(1),
                warning: None,
            },
            data_set: true,
            detail: StatusDetail::default(),
        }),
        Command::CGetRq(CGetRq {
            message_id: 5,
            priority: Priority::Medium,
            affected_sop_class_uid: crate::uid::STUDY_ROOT_QR_GET.to_owned(),
        }),
        Command::CGetRsp(CMoveRsp {
            message_id_being_responded_to: 5,
            affected_sop_class_uid: None,
            status: Status::SUCCESS,
            sub_operations: SubOperationCounts::default(),
            data_set: false,
            detail: StatusDetail::default(),
        }),
        Command::CCancelRq(CCancelRq {
            message_id_being_responded_to: 3,
        }),
        Command::NActionRq(NActionRq {
            message_id: 9,
            requested_sop_class_uid: crate::uid::STORAGE_COMMITMENT_PUSH_MODEL.to_owned(),
            requested_sop_instance_uid: crate::uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
                .to_owned(),
            action_type_id: 1,
            data_set: true,
        }),
        Command::NActionRsp(NActionRsp {
            message_id_being_responded_to: 9,
            affected_sop_class_uid: Some(crate::uid::STORAGE_COMMITMENT_PUSH_MODEL.to_owned()),
            affected_sop_instance_uid: Some(
                crate::uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.to_owned(),
            ),
            action_type_id: Some(1),
            status: Status::MISSING_ATTRIBUTE,
            data_set: false,
            detail: StatusDetail {
                offending_elements: vec![Tag(0x0008, 0x1195)],
                ..StatusDetail::default()
            },
        }),
        Command::NEventReportRq(NEventReportRq {
            message_id: 10,
            affected_sop_class_uid: crate::uid::STORAGE_COMMITMENT_PUSH_MODEL.to_owned(),
            affected_sop_instance_uid: crate::uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
                .to_owned(),
            event_type_id: 2,
            data_set: true,
        }),
        Command::NEventReportRsp(NEventReportRsp {
            message_id_being_responded_to: 10,
            affected_sop_class_uid: None,
            affected_sop_instance_uid: None,
            event_type_id: Some(2),
            status: Status::SUCCESS,
            data_set: false,
            detail: StatusDetail::default(),
        }),
    ]
}

/// Splits an encoded command set into (tag, value) pairs.
fn elements_of(bytes: &[u8]) -> Vec<(Tag, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let tag = Tag(
            u16::from_le_bytes([rest[0], rest[1]]),
            u16::from_le_bytes([rest[2], rest[3]]),
        );
        let length = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        out.push((tag, rest[8..8 + length].to_vec()));
        rest = &rest[8 + length..];
    }
    assert!(rest.is_empty());
    out
}

/// Re-encodes elements (without fixing the group length).
fn encode_elements(elements: &[(Tag, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, value) in elements {
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Re-encodes elements with a correct group length in front.
fn with_group_length(elements: &[(Tag, Vec<u8>)]) -> Vec<u8> {
    let body: Vec<_> = elements
        .iter()
        .filter(|(tag, _)| *tag != tags::COMMAND_GROUP_LENGTH)
        .cloned()
        .collect();
    let body_bytes = encode_elements(&body);
    let mut all = vec![(
        tags::COMMAND_GROUP_LENGTH,
        (body_bytes.len() as u32).to_le_bytes().to_vec(),
    )];
    all.extend(body);
    encode_elements(&all)
}

#[test]
fn every_command_round_trips() {
    for command in all_commands() {
        let bytes = command.encode().unwrap();
        let decoded =
            Command::decode(&bytes).unwrap_or_else(|error| panic!("{command:?}: {error}"));
        assert_eq!(decoded, command);
        // Write again: same bytes.
        assert_eq!(decoded.encode().unwrap(), bytes);
        // Group length is right, tags ascend, all values even.
        let elements = elements_of(&bytes);
        assert_eq!(elements[0].0, tags::COMMAND_GROUP_LENGTH);
        assert_eq!(
            u32::from_le_bytes(elements[0].1.clone().try_into().unwrap()) as usize,
            bytes.len() - 12
        );
        for pair in elements.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{command:?}: {} then {}",
                pair[0].0,
                pair[1].0
            );
        }
        assert!(elements.iter().all(|(_, value)| value.len() % 2 == 0));
        // Data set type matches.
        let data_set_type = elements
            .iter()
            .find(|(tag, _)| *tag == tags::COMMAND_DATA_SET_TYPE)
            .unwrap();
        let present = u16::from_le_bytes([data_set_type.1[0], data_set_type.1[1]]) != 0x0101;
        assert_eq!(present, command.data_set_present(), "{command:?}");
    }
}

#[test]
fn c_echo_rq_matches_known_bytes() {
    // A C-ECHO-RQ as DCMTK's echoscu sends it (message ID 1).
    let command = Command::CEchoRq(CEchoRq {
        message_id: 1,
        affected_sop_class_uid: crate::uid::VERIFICATION.to_owned(),
    });
    let expected: &[u8] = &[
        0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00,
        0x00, // group length 56
        0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00, b'1', b'.', b'2', b'.', b'8', b'4', b'0',
        b'.', b'1', b'0', b'0', b'0', b'8', b'.', b'1', b'.', b'1',
        0x00, // affected SOP class, NUL padded
        0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00, // command field 0030
        0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, // message id 1
        0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // no data set
    ];
    assert_eq!(command.encode().unwrap(), expected);
    assert_eq!(Command::decode(expected).unwrap(), command);
}

#[test]
fn missing_required_elements_are_named() {
    let cases: &[(Command, Tag)] = &[
        (all_commands()[0].clone(), tags::AFFECTED_SOP_CLASS_UID),
        (all_commands()[0].clone(), tags::MESSAGE_ID),
        (all_commands()[2].clone(), tags::AFFECTED_SOP_INSTANCE_UID),
        (all_commands()[2].clone(), tags::PRIORITY),
        (all_commands()[3].clone(), tags::MOVE_ORIGINATOR_MESSAGE_ID),
        (all_commands()[4].clone(), tags::STATUS),
        (
            all_commands()[4].clone(),
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
        ),
        (all_commands()[8].clone(), tags::MOVE_DESTINATION),
        (all_commands()[14].clone(), tags::REQUESTED_SOP_INSTANCE_UID),
        (all_commands()[14].clone(), tags::ACTION_TYPE_ID),
        (all_commands()[16].clone(), tags::EVENT_TYPE_ID),
        (all_commands()[16].clone(), tags::COMMAND_DATA_SET_TYPE),
    ];
    for (command, tag) in cases {
        let elements: Vec<_> = elements_of(&command.encode().unwrap())
            .into_iter()
            .filter(|(t, _)| t != tag)
            .collect();
        let error = Command::decode(&with_group_length(&elements)).unwrap_err();
        assert_eq!(
            error,
            DimseError::MissingElement {
                tag: *tag,
                command_field: Some(command.command_field())
            }
        );
        assert_eq!(error.tag(), Some(*tag));
        assert_eq!(error.command_field(), Some(command.command_field()));
    }
    // No command field at all.
    let elements: Vec<_> = elements_of(&all_commands()[0].encode().unwrap())
        .into_iter()
        .filter(|(t, _)| *t != tags::COMMAND_FIELD)
        .collect();
    assert_eq!(
        Command::decode(&with_group_length(&elements)),
        Err(DimseError::MissingElement {
            tag: tags::COMMAND_FIELD,
            command_field: None
        })
    );
}

#[test]
fn group_length_is_checked() {
    let bytes = all_commands()[2].encode().unwrap();
    // Wrong value.
    let mut wrong = bytes.clone();
    wrong[8] = wrong[8].wrapping_add(2);
    assert!(matches!(
        Command::decode(&wrong),
        Err(DimseError::GroupLengthMismatch { .. })
    ));
    // Absent.
    let elements: Vec<_> = elements_of(&bytes).into_iter().skip(1).collect();
    assert_eq!(
        Command::decode(&encode_elements(&elements)),
        Err(DimseError::GroupLengthMissing)
    );
    // Not first.
    let mut elements = elements_of(&bytes);
    elements.swap(0, 1);
    assert_eq!(
        Command::decode(&encode_elements(&elements)),
        Err(DimseError::GroupLengthMissing)
    );
    // Bad length of the group length element itself.
    let mut elements = elements_of(&bytes);
    elements[0].1 = vec![0, 0];
    assert!(matches!(
        Command::decode(&encode_elements(&elements)),
        Err(DimseError::BadElementLength { .. })
    ));
    // Empty input.
    assert_eq!(Command::decode(&[]), Err(DimseError::GroupLengthMissing));
}

#[test]
fn bad_values_and_structure_are_specific_errors() {
    let store = all_commands()[2].clone();
    let field = Some(CommandField::C_STORE_RQ);
    let replace = |tag: Tag, value: Vec<u8>| {
        let elements: Vec<_> = elements_of(&store.encode().unwrap())
            .into_iter()
            .map(|(t, v)| if t == tag { (t, value.clone()) } else { (t, v) })
            .collect();
        Command::decode(&with_group_length(&elements))
    };
    assert_eq!(
        replace(tags::MESSAGE_ID, vec![1, 0, 0, 0]),
        Err(DimseError::BadElementLength {
            tag: tags::MESSAGE_ID,
            command_field: field,
            length: 4
        })
    );
    assert_eq!(
        replace(tags::PRIORITY, vec![7, 0]),
        Err(DimseError::InvalidValue {
            tag: tags::PRIORITY,
            command_field: field,
            reason: "priority must be 0, 1 or 2"
        })
    );
    // UIDs come out as received (padding trimmed): whether they are valid
    // is the service's question, answered with a status (issue #19).
    let uid_as_received = |value: &[u8], expected: &str| {
        assert!(
            matches!(
                replace(tags::AFFECTED_SOP_INSTANCE_UID, value.to_vec()),
                Ok(Command::CStoreRq(CStoreRq { ref affected_sop_instance_uid, .. }))
                    if affected_sop_instance_uid == expected
            ),
            "{value:?}"
        );
    };
    uid_as_received(b"1.2.A\0", "1.2.A");
    uid_as_received(&[0, 0], "");
    uid_as_received(&[b'1'; 66], &"1".repeat(66));
    uid_as_received(b"1.02.3 ", "1.02.3");
    uid_as_received(b"1.2..3", "1.2..3");
    assert_eq!(
        replace(tags::COMMAND_DATA_SET_TYPE, vec![0x01, 0x01]),
        Err(DimseError::DataSetRequired {
            command_field: CommandField::C_STORE_RQ
        })
    );
    assert_eq!(
        replace(tags::COMMAND_FIELD, vec![0x20, 0x01]),
        Err(DimseError::UnknownCommandField {
            command_field: CommandField(0x0120)
        })
    );
    // C-ECHO-RQ announcing a data set.
    let echo: Vec<_> = elements_of(&all_commands()[0].encode().unwrap())
        .into_iter()
        .map(|(t, v)| {
            if t == tags::COMMAND_DATA_SET_TYPE {
                (t, vec![0, 0])
            } else {
                (t, v)
            }
        })
        .collect();
    assert_eq!(
        Command::decode(&with_group_length(&echo)),
        Err(DimseError::UnexpectedDataSet {
            command_field: CommandField::C_ECHO_RQ
        })
    );
    // An element of another group.
    let mut foreign = elements_of(&store.encode().unwrap());
    foreign.push((Tag(0x0008, 0x0018), b"1.2\0".to_vec()));
    assert_eq!(
        Command::decode(&with_group_length(&foreign)),
        Err(DimseError::ElementOutsideCommandGroup {
            tag: Tag(0x0008, 0x0018)
        })
    );
    // Duplicate.
    let mut duplicate = elements_of(&store.encode().unwrap());
    duplicate.push((tags::MESSAGE_ID, vec![1, 0]));
    assert_eq!(
        Command::decode(&with_group_length(&duplicate)),
        Err(DimseError::DuplicateElement {
            tag: tags::MESSAGE_ID
        })
    );
    // Unknown group-0000 elements (retired ones) are ignored.
    let mut retired = elements_of(&store.encode().unwrap());
    retired.push((Tag(0x0000, 0x4000), b"XX".to_vec()));
    assert_eq!(
        Command::decode(&with_group_length(&retired)).unwrap(),
        store
    );
    // Too long.
    assert!(matches!(
        Command::decode(&vec![0u8; COMMAND_SET_LENGTH_MAX + 1]),
        Err(DimseError::TooLong { .. })
    ));
    // Encoding writes what the UI VR allows (so a response can echo a
    // malformed but transmittable UID) and refuses the rest.
    let mut bad = match store.clone() {
        Command::CStoreRq(rq) => rq,
        _ => unreachable!(),
    };
    bad.affected_sop_instance_uid = "1.2..3".to_owned();
    assert!(Command::CStoreRq(bad.clone()).encode().is_ok());
    for uid in ["1.2.x", "", &"1".repeat(65)] {
        bad.affected_sop_instance_uid = uid.to_owned();
        assert!(
            matches!(
                Command::CStoreRq(bad.clone()).encode(),
                Err(DimseError::InvalidUid { .. })
            ),
            "{uid}"
        );
    }
    bad.affected_sop_instance_uid = "1.2".to_owned();
    bad.move_originator = Some(MoveOriginator {
        ae_title: "A_TITLE_LONGER_THAN_16".to_owned(),
        message_id: 1,
    });
    assert!(matches!(
        Command::CStoreRq(bad).encode(),
        Err(DimseError::BadElementLength { .. })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    for command in all_commands() {
        let bytes = command.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Command::decode(&bytes[..cut]).is_err(),
                "{command:?} cut at {cut}"
            );
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xD135E),
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let _ = Command::decode(&bytes);
    }

    #[test]
    fn mutated_commands_never_panic(index in 0usize..18, position in 0usize..400, byte in proptest::prelude::any::<u8>()) {
        let commands = all_commands();
        let mut bytes = commands[index % commands.len()].encode().unwrap();
        let position = position % bytes.len();
        bytes[position] = byte;
        if let Ok(command) = Command::decode(&bytes) {
            // Whatever decodes re-encodes and decodes to itself.
            let again = command.encode();
            if let Ok(again) = again {
                proptest::prop_assert_eq!(Command::decode(&again).unwrap(), command);
            }
        }
    }
}
