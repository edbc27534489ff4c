//! The endpoint as requestor: Query/Retrieve user side (C-FIND identifiers,
//! C-MOVE pending counts, C-GET sub-operations streamed to the requestor
//! without a copy), and the requestor's own set-up failures.

use std::time::Duration;

use super::*;
use sluice_net::assoc::{AbortCause, NegotiationError};
use sluice_net::dimse::{CGetRq, CMoveRq, CMoveRsp, SubOperationCounts};
use sluice_net::endpoint::Timer;
use sluice_net::pdu::{
    AssociateAc, Pdu, PresentationContextResult, PresentationContextResultReason, UserInformation,
    DICOM_APPLICATION_CONTEXT_NAME, PROTOCOL_VERSION,
};

#[test]
fn find_responses_come_with_their_identifiers() {
    let mut pair = Pair::established(4096, 16384);
    pair.scu
        .send_message(FIND_CONTEXT, &find_rq(3), Some(&data_set(80)))
        .unwrap();
    pair.scu_to_scp();
    let answers: Vec<Vec<u8>> = (0..3).map(|i| data_set(100 + 3000 * i)).collect();
    for answer in &answers {
        pair.scp
            .send_message(
                FIND_CONTEXT,
                &find_rsp(3, Status::PENDING, true),
                Some(answer),
            )
            .unwrap();
    }
    pair.scp
        .send_message(FIND_CONTEXT, &find_rsp(3, Status::SUCCESS, false), None)
        .unwrap();
    // All four in one transmit, fed to the SCU in 100-byte reads.
    let wire = pair.scp.poll_transmit().unwrap();
    let seen = feed(&mut pair.scu, &wire, &[100], &pair.policy, pair.now).seen;
    let mut expected: Vec<Seen> = answers
        .into_iter()
        .map(|answer| Seen::Command {
            context_id: FIND_CONTEXT,
            command: find_rsp(3, Status::PENDING, true),
            data_set: DataSet::Collected(answer),
        })
        .collect();
    expected.push(Seen::Command {
        context_id: FIND_CONTEXT,
        command: find_rsp(3, Status::SUCCESS, false),
        data_set: DataSet::Absent,
    });
    assert_eq!(seen, expected);
}

#[test]
fn move_pending_responses_and_the_failed_list() {
    let mut pair = Pair::established(16384, 16384);
    let rq = Command::CMoveRq(CMoveRq {
        message_id: 11,
        priority: Priority::Medium,
        affected_sop_class_uid: uid::STUDY_ROOT_QR_MOVE.into(),
        move_destination: "STORESCP".into(),
    });
    pair.scu
        .send_message(MOVE_CONTEXT, &rq, Some(&data_set(60)))
        .unwrap();
    assert!(matches!(
        pair.scu_to_scp().as_slice(),
        [Seen::Command { command: Command::CMoveRq(_), data_set: DataSet::Collected(identifier), .. }] if identifier.len() == 60
    ));
    let rsp = |status: Status, remaining: Option<u16>, failed_list: bool| {
        Command::CMoveRsp(CMoveRsp {
            message_id_being_responded_to: 11,
            affected_sop_class_uid: Some(uid::STUDY_ROOT_QR_MOVE.into()),
            status,
            sub_operations: SubOperationCounts {
                remaining,
                completed: Some(2),
                failed: Some(u16::from(failed_list)),
                warning: Some(0),
            },
            data_set: failed_list,
            detail: StatusDetail::default(),
        })
    };
    let failed_list = data_set(44);
    pair.scp
        .send_message(MOVE_CONTEXT, &rsp(Status::PENDING, Some(1), false), None)
        .unwrap();
    pair.scp
        .send_message(
            MOVE_CONTEXT,
            &rsp(Status(0xB000), None, true),
            Some(&failed_list),
        )
        .unwrap();
    assert_eq!(
        pair.scp_to_scu(),
        [
            Seen::Command {
                context_id: MOVE_CONTEXT,
                command: rsp(Status::PENDING, Some(1), false),
                data_set: DataSet::Absent,
            },
            Seen::Command {
                context_id: MOVE_CONTEXT,
                command: rsp(Status(0xB000), None, true),
                data_set: DataSet::Collected(failed_list),
            },
        ]
    );
}

/// C-GET: the SCP sends its C-STORE sub-operations on the same
/// association; the requestor receives the data sets as ranges of its
/// input (zero copy on the requestor side too) and answers each.
#[test]
fn get_sub_operations_stream_to_the_requestor() {
    let mut pair = Pair::established(8192, 16384);
    let rq = Command::CGetRq(CGetRq {
        message_id: 21,
        priority: Priority::Medium,
        affected_sop_class_uid: uid::STUDY_ROOT_QR_GET.into(),
    });
    pair.scu
        .send_message(GET_CONTEXT, &rq, Some(&data_set(50)))
        .unwrap();
    pair.scu_to_scp();
    let instances = [data_set(30_000), data_set(7)];
    for (index, instance) in instances.iter().enumerate() {
        let message_id = pair.scp.next_message_id();
        let fragmenter = pair
            .scp
            .send_command_for_data_set(CT_CONTEXT, &store_rq(message_id), instance.len() as u64)
            .unwrap();
        let mut wire = pair.scp.poll_transmit().unwrap();
        for fragment in fragmenter {
            assert!(fragment.value_length as usize + 6 <= 8192);
            wire.extend_from_slice(&fragment.headers);
            wire.extend_from_slice(&instance[fragment.value_range().unwrap()]);
        }
        let collector = feed(&mut pair.scu, &wire, &[1000], &pair.policy, pair.now);
        assert_eq!(
            collector.seen,
            [
                Seen::Command {
                    context_id: CT_CONTEXT,
                    command: store_rq(message_id),
                    data_set: DataSet::Streamed,
                },
                Seen::DataSet {
                    context_id: CT_CONTEXT,
                    bytes: instance.clone(),
                },
            ],
            "instance {index}"
        );
        assert!(collector.data_events >= instance.len() / 1000);
        pair.scu
            .send_message(CT_CONTEXT, &store_rsp(message_id, Status::SUCCESS), None)
            .unwrap();
        assert!(matches!(
            pair.scu_to_scp().as_slice(),
            [Seen::Command { command: Command::CStoreRsp(rsp), .. }] if rsp.message_id_being_responded_to == message_id
        ));
    }
    let done = Command::CGetRsp(CMoveRsp {
        message_id_being_responded_to: 21,
        affected_sop_class_uid: Some(uid::STUDY_ROOT_QR_GET.into()),
        status: Status::SUCCESS,
        sub_operations: SubOperationCounts {
            remaining: None,
            completed: Some(2),
            failed: Some(0),
            warning: Some(0),
        },
        data_set: false,
        detail: StatusDetail::default(),
    });
    pair.scp.send_message(GET_CONTEXT, &done, None).unwrap();
    assert_eq!(
        pair.scp_to_scu(),
        [Seen::Command {
            context_id: GET_CONTEXT,
            command: done,
            data_set: DataSet::Absent,
        }]
    );
}

#[test]
fn a_requestor_without_an_answer_times_out() {
    let now = Instant::now();
    let mut scu = Endpoint::new(Role::Requestor, config());
    scu.request_association(Box::new(proposal(16384)), now)
        .unwrap();
    assert_eq!(
        scu.next_deadline(),
        None,
        "no timer before the transport opens"
    );
    scu.transport_connected(now).unwrap();
    assert_eq!(scu.poll_transmit().unwrap()[0], 0x01, "the A-ASSOCIATE-RQ");
    assert_eq!(scu.state(), State::Sta5AwaitingAssociateAcOrRj);
    let deadline = now + config().idle;
    assert_eq!(scu.next_deadline(), Some(deadline));
    assert_eq!(scu.handle_timeout(deadline - Duration::from_secs(1)), None);
    assert_eq!(scu.handle_timeout(deadline), Some(Timer::Idle));
    assert_eq!(
        scu.poll_event(),
        Some(Incoming::Indication(Indication::Aborted(
            AbortCause::IdleTimeout
        )))
    );
    assert_eq!(scu.poll_transmit().unwrap()[0], 0x07, "A-ABORT");
}

#[test]
fn an_ac_that_contradicts_the_request_aborts() {
    let now = Instant::now();
    let mut scu = Endpoint::new(Role::Requestor, config());
    scu.request_association(Box::new(proposal(16384)), now)
        .unwrap();
    scu.transport_connected(now).unwrap();
    scu.poll_transmit();
    // Context 2 was never proposed.
    let ac = AssociateAc {
        protocol_version: PROTOCOL_VERSION,
        called_ae_title: "SCP".into(),
        calling_ae_title: "SCU".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.into(),
        presentation_contexts: vec![PresentationContextResult {
            id: 2,
            result: PresentationContextResultReason::Acceptance,
            transfer_syntax: uid::ts::IMPLICIT_VR_LITTLE_ENDIAN.into(),
        }],
        user_information: UserInformation {
            maximum_length: Some(16384),
            implementation_class_uid: Some("1.2.3".into()),
            ..UserInformation::default()
        },
    };
    let wire = Pdu::AssociateAc(Box::new(ac)).to_bytes().unwrap();
    let seen = feed(&mut scu, &wire, &[9], &policy(16384), now).seen;
    assert!(
        matches!(
            seen.as_slice(),
            [Seen::Indication(Indication::Aborted(
                AbortCause::InvalidAssociateAc(NegotiationError::UnknownPresentationContextId {
                    id: 2
                })
            ))]
        ),
        "{seen:?}"
    );
    let sent = scu.poll_transmit().unwrap();
    assert_eq!(sent[0], 0x07);
    assert_eq!(sent[9], 6, "invalid-PDU-parameter value");
}

/// The decoder's P-DATA limit becomes the Maximum Length each side
/// announced once the association is agreed: a larger PDU is a violation.
#[test]
fn pdata_over_our_announced_maximum_is_refused_on_both_roles() {
    let mut pair = Pair::established(4096, 8192);
    let big = Command::CEchoRsp(sluice_net::dimse::CEchoRsp {
        message_id_being_responded_to: 1,
        affected_sop_class_uid: Some(uid::VERIFICATION.into()),
        status: Status::SUCCESS,
        detail: StatusDetail {
            error_comment: Some("x".repeat(64)),
            ..StatusDetail::default()
        },
    })
    .encode()
    .unwrap();
    // One PDU one byte over what each side announced.
    for (receiver, announced) in [(&mut pair.scu, 4096u32), (&mut pair.scp, 8192)] {
        let mut padded = big.clone();
        padded.resize(announced as usize - 6 + 1, 0);
        let mut wire = Vec::new();
        sluice_net::pdata::encode_message(VERIFICATION_CONTEXT, true, &padded, 0, &mut wire)
            .unwrap();
        let seen = feed(receiver, &wire, &[], &pair.policy, pair.now).seen;
        assert_eq!(
            seen.first(),
            Some(&Seen::Violation(Violation::Pdu(
                sluice_net::pdu::DecodeError::PDataTooLong {
                    length: announced + 1,
                    length_max: announced,
                }
            ))),
            "{seen:?}"
        );
    }
}
