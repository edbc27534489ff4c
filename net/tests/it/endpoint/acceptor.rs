//! The endpoint as acceptor (and the association's life from both ends):
//! messages by table, every DIMSE violation, timers, release, abort.

use std::time::Duration;

use super::*;
use sluice_net::assoc::{AbortCause, AssocError, InvalidPdu};
use sluice_net::dimse::commitment::ACTION_TYPE_REQUEST_STORAGE_COMMITMENT;
use sluice_net::dimse::{CCancelRq, CEchoRq, CEchoRsp, CommandField, DimseError, NActionRq};
use sluice_net::endpoint::{Ahead, SendError, Timer};
use sluice_net::pdata::{encode_message, encode_pdata_tf, Pdv};
use sluice_net::pdu::{AbortReason, DecodeError, PduType};

fn echo_rq(message_id: u16) -> Command {
    Command::CEchoRq(CEchoRq {
        message_id,
        affected_sop_class_uid: uid::VERIFICATION.into(),
    })
}

fn action_rq(message_id: u16) -> Command {
    Command::NActionRq(NActionRq {
        message_id,
        requested_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.into(),
        requested_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.into(),
        action_type_id: ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
        data_set: true,
    })
}

#[test]
fn echo_is_answered() {
    let mut pair = Pair::established(16384, 16384);
    let message_id = pair.scu.next_message_id();
    pair.scu
        .send_message(VERIFICATION_CONTEXT, &echo_rq(message_id), None)
        .unwrap();
    assert_eq!(
        pair.scu_to_scp(),
        [Seen::Command {
            context_id: VERIFICATION_CONTEXT,
            command: echo_rq(1),
            data_set: DataSet::Absent,
        }]
    );
    let rsp = Command::CEchoRsp(CEchoRsp {
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(uid::VERIFICATION.into()),
        status: Status::SUCCESS,
        detail: StatusDetail::default(),
    });
    pair.scp
        .send_message(VERIFICATION_CONTEXT, &rsp, None)
        .unwrap();
    assert_eq!(
        pair.scp_to_scu(),
        [Seen::Command {
            context_id: VERIFICATION_CONTEXT,
            command: rsp,
            data_set: DataSet::Absent,
        }]
    );
}

/// A data set sent in parts of unknown total length (a relay): each part
/// framed within the peer's maximum, only the last part's final fragment
/// flagged last, an empty last part included; the SCP gets the bytes whole
/// and in order, and the data set ends exactly once.
#[test]
fn a_data_set_sent_in_parts_arrives_whole_with_one_last_fragment() {
    for (parts, empty_last) in [
        (vec![7_000usize, 1, 9_000], false),
        (vec![5_000, 3_000], true),
    ] {
        let mut pair = Pair::established(16384, 4096);
        let data = data_set(parts.iter().sum());
        pair.scu
            .send_command_before_parts(CT_CONTEXT, &store_rq(1))
            .unwrap();
        let mut offset = 0;
        for (index, length) in parts.iter().enumerate() {
            let last = !empty_last && index + 1 == parts.len();
            pair.scu
                .send_data_set_part(CT_CONTEXT, &data[offset..offset + length], last)
                .unwrap();
            offset += length;
        }
        if empty_last {
            pair.scu.send_data_set_part(CT_CONTEXT, &[], true).unwrap();
        }
        let mut wire = Vec::new();
        while let Some(bytes) = pair.scu.poll_transmit() {
            wire.extend_from_slice(&bytes);
        }
        let mut cursor = 0;
        let now = pair.now;
        let Some(Incoming::Command {
            data_set: DataSet::Streamed,
            ..
        }) = pair.scp.receive(&wire, &mut cursor, now)
        else {
            panic!("the C-STORE-RQ first")
        };
        let mut received = Vec::new();
        let mut lasts = 0;
        let mut last_seen_at_end = false;
        while let Some(incoming) = pair.scp.receive(&wire, &mut cursor, now) {
            let Incoming::Data { range, last, .. } = incoming else {
                panic!("only data follows, got {incoming:?}")
            };
            received.extend_from_slice(&wire[range]);
            lasts += usize::from(last);
            last_seen_at_end = last;
        }
        assert_eq!(received, data, "{parts:?}");
        assert_eq!(lasts, 1, "{parts:?}");
        assert!(last_seen_at_end, "{parts:?}");
        assert_eq!(cursor, wire.len());
    }
}

/// The SCU frames a C-STORE data set itself (headers from the endpoint's
/// fragmenter, value bytes from its own buffer); the SCP gets it as ranges
/// of the very slice it was given.
#[test]
fn store_data_set_streams_as_ranges_of_the_input() {
    let mut pair = Pair::established(16384, 4096);
    let data = data_set(20_000);
    let fragmenter = pair
        .scu
        .send_command_for_data_set(CT_CONTEXT, &store_rq(1), data.len() as u64)
        .unwrap();
    let mut wire = pair.scu.poll_transmit().unwrap();
    let command_length = wire.len();
    let mut pdus = 0;
    for fragment in fragmenter {
        let pdu_length = u32::from_be_bytes(fragment.headers[2..6].try_into().unwrap());
        assert!(pdu_length <= 4096, "within the SCP's maximum");
        wire.extend_from_slice(&fragment.headers);
        wire.extend_from_slice(&data[fragment.value_range().unwrap()]);
        pdus += 1;
    }
    assert_eq!(pdus, 5);

    let mut cursor = 0;
    let now = pair.now;
    let Some(Incoming::Command {
        context_id: CT_CONTEXT,
        command,
        data_set: DataSet::Streamed,
    }) = pair.scp.receive(&wire, &mut cursor, now)
    else {
        panic!("the C-STORE-RQ first")
    };
    assert_eq!(command, store_rq(1));
    assert!(
        cursor <= command_length,
        "handed out before any data is read"
    );
    let mut received = Vec::new();
    let mut lasts = 0;
    while let Some(incoming) = pair.scp.receive(&wire, &mut cursor, now) {
        let Incoming::Data {
            context_id: CT_CONTEXT,
            range,
            last,
        } = incoming
        else {
            panic!("only data follows, got {incoming:?}")
        };
        // Zero copy: the range names bytes of the input, where they are.
        assert_eq!(wire[range.clone()], data[received.len()..][..range.len()]);
        received.extend_from_slice(&wire[range]);
        lasts += usize::from(last);
    }
    assert_eq!(received, data);
    assert_eq!(lasts, 1);
    assert_eq!(cursor, wire.len());
    pair.scp
        .send_message(CT_CONTEXT, &store_rsp(1, Status::SUCCESS), None)
        .unwrap();
    assert!(matches!(
        pair.scp_to_scu().as_slice(),
        [Seen::Command {
            command: Command::CStoreRsp(_),
            ..
        }]
    ));
}

/// Inside a streamed data set's PDV the endpoint says how many value bytes
/// are still to come; fed from another buffer (where a caller received
/// them in place), they come out as one range covering that buffer, and
/// the stream goes on after them. Nowhere else is anything pending.
#[test]
fn the_rest_of_a_data_pdv_fed_from_another_buffer_is_one_range() {
    let mut pair = Pair::established(16384, 65536);
    let data = data_set(150_000);
    let fragmenter = pair
        .scu
        .send_command_for_data_set(CT_CONTEXT, &store_rq(1), data.len() as u64)
        .unwrap();
    let mut wire = pair.scu.poll_transmit().unwrap();
    let mut first_pdv = None;
    for fragment in fragmenter {
        let value = fragment.value_range().unwrap();
        first_pdv.get_or_insert((wire.len() + fragment.headers.len(), value.len()));
        wire.extend_from_slice(&fragment.headers);
        wire.extend_from_slice(&data[value]);
    }
    let (value_start, value_length) = first_pdv.unwrap();
    assert!(value_length > 60_000, "a large first PDV: {value_length}");
    let now = pair.now;
    assert_eq!(pair.scp.pending_data_bytes(), None, "between messages");
    assert_eq!(
        pair.scp.pending_header_bytes(),
        None,
        "no data set arriving"
    );

    // The command and 1,000 bytes of the first PDV's value.
    let head = &wire[..value_start + 1000];
    let mut cursor = 0;
    let mut received = Vec::new();
    while let Some(incoming) = pair.scp.receive(head, &mut cursor, now) {
        if let Incoming::Data { range, .. } = incoming {
            received.extend_from_slice(&head[range]);
        }
    }
    assert_eq!(received.len(), 1000);
    let rest = value_length - 1000;
    assert_eq!(pair.scp.pending_data_bytes(), Some(rest as u32));

    // The rest of the PDV, from a buffer of its own.
    let elsewhere = wire[value_start + 1000..][..rest].to_vec();
    let mut cursor = 0;
    let Some(Incoming::Data { range, last, .. }) = pair.scp.receive(&elsewhere, &mut cursor, now)
    else {
        panic!("the rest as data");
    };
    assert_eq!((range.clone(), last), (0..rest, false));
    assert_eq!(pair.scp.receive(&elsewhere, &mut cursor, now), None);
    received.extend_from_slice(&elsewhere[range]);
    assert_eq!(pair.scp.pending_data_bytes(), None, "at the next PDU");
    assert_eq!(
        pair.scp.pending_header_bytes(),
        Some(6),
        "a PDU header next"
    );

    // Two bytes of the next header: four complete it.
    let tail = &wire[value_start + value_length..];
    let mut cursor = 0;
    assert_eq!(pair.scp.receive(&tail[..2], &mut cursor, now), None);
    assert_eq!(pair.scp.pending_header_bytes(), Some(4));

    // The rest of the stream as usual.
    let tail = &tail[2..];
    let mut cursor = 0;
    let mut lasts = 0;
    while let Some(incoming) = pair.scp.receive(tail, &mut cursor, now) {
        let Incoming::Data { range, last, .. } = incoming else {
            panic!("only data follows, got {incoming:?}")
        };
        received.extend_from_slice(&tail[range]);
        lasts += usize::from(last);
    }
    assert_eq!(received, data);
    assert_eq!(lasts, 1);
    assert_eq!(pair.scp.pending_header_bytes(), None, "the data set ended");

    // A command's PDV is never pending data.
    let command = command_pdus(VERIFICATION_CONTEXT, &echo_rq(2));
    let mut cursor = 0;
    assert_eq!(pair.scp.receive(&command[..14], &mut cursor, now), None);
    assert_eq!(pair.scp.pending_data_bytes(), None, "inside a command PDV");
}

/// Fed exactly what `ahead` says comes next, header by header and value
/// by value (as a caller that receives exactly does), a C-STORE goes
/// through as from any other cut: the command, then the data set whole;
/// the command's value is not streamed, the data PDVs' are; at the end
/// the stream is at the next PDU's header, and `take_data_pdv_max` gives
/// the largest data PDV value once.
#[test]
fn fed_exactly_what_ahead_says_a_store_goes_through_piece_by_piece() {
    let mut pair = Pair::established(16384, 65536);
    let data = data_set(150_000);
    let fragmenter = pair
        .scu
        .send_command_for_data_set(CT_CONTEXT, &store_rq(1), data.len() as u64)
        .unwrap();
    let mut wire = pair.scu.poll_transmit().unwrap();
    let mut largest = 0;
    for fragment in fragmenter {
        let value = fragment.value_range().unwrap();
        largest = largest.max(value.len());
        wire.extend_from_slice(&fragment.headers);
        wire.extend_from_slice(&data[value]);
    }
    let now = pair.now;
    assert_eq!(
        pair.scp.ahead(),
        Some(Ahead::Header {
            bytes: 6,
            pdu: true
        })
    );
    let (mut at, mut received, mut commands) = (0, Vec::new(), 0);
    let (mut streamed_values, mut other_values, mut lasts) = (0, 0, 0);
    while at < wire.len() {
        let want = match pair.scp.ahead() {
            Some(Ahead::Header { bytes, .. }) => bytes,
            Some(Ahead::Value {
                remaining,
                streamed,
                last,
                ..
            }) => {
                if streamed {
                    streamed_values += 1;
                    lasts += usize::from(last);
                } else {
                    other_values += 1;
                }
                remaining as usize
            }
            None => panic!("nothing ahead at {at} of {}", wire.len()),
        };
        let piece = &wire[at..at + want];
        at += want;
        let mut cursor = 0;
        while let Some(incoming) = pair.scp.receive(piece, &mut cursor, now) {
            match incoming {
                Incoming::Command { .. } => commands += 1,
                Incoming::Data { range, .. } => {
                    assert_eq!(range, 0..piece.len(), "a value in one range");
                    received.extend_from_slice(&piece[range]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(cursor, piece.len());
    }
    assert_eq!(commands, 1);
    assert!(received == data, "the data set, whole");
    assert_eq!(other_values, 1, "the command's value");
    assert!(streamed_values >= 3, "{streamed_values} data PDVs");
    assert_eq!(lasts, 1);
    assert_eq!(
        pair.scp.ahead(),
        Some(Ahead::Header {
            bytes: 6,
            pdu: true
        })
    );
    assert_eq!(pair.scp.take_data_pdv_max(), largest as u32);
    assert_eq!(pair.scp.take_data_pdv_max(), 0, "taken");
}

#[test]
fn action_information_is_collected_with_its_command() {
    let mut pair = Pair::established(16384, 16384);
    let information = data_set(1000);
    pair.scu
        .send_message(COMMITMENT_CONTEXT, &action_rq(9), Some(&information))
        .unwrap();
    assert_eq!(
        pair.scu_to_scp(),
        [Seen::Command {
            context_id: COMMITMENT_CONTEXT,
            command: action_rq(9),
            data_set: DataSet::Collected(information),
        }]
    );
}

#[test]
fn a_collected_data_set_over_the_bound_is_dropped_and_said_too_long() {
    let mut scp_config = config();
    scp_config.collect_length_max = 100;
    let mut pair = Pair::established_with(16384, 16384, scp_config);
    for (length, expected) in [
        (100, DataSet::Collected(data_set(100))),
        (101, DataSet::TooLong { length: 101 }),
        (5000, DataSet::TooLong { length: 5000 }),
    ] {
        pair.scu
            .send_message(COMMITMENT_CONTEXT, &action_rq(2), Some(&data_set(length)))
            .unwrap();
        let wire = pair.scu.poll_transmit().unwrap();
        // Cut finely, so a too-long data set arrives in many pieces.
        let seen = feed(&mut pair.scp, &wire, &[7, 64], &pair.policy, pair.now).seen;
        assert_eq!(
            seen,
            [Seen::Command {
                context_id: COMMITMENT_CONTEXT,
                command: action_rq(2),
                data_set: expected,
            }]
        );
        assert_eq!(pair.scp.state(), State::Sta6Established, "not an abort");
    }
}

/// Query/Retrieve as SCP: pending C-FIND responses streamed with their
/// identifiers while a C-CANCEL-RQ arrives; the final response follows.
#[test]
fn find_responses_stream_and_a_cancel_arrives_mid_stream() {
    let mut pair = Pair::established(4096, 16384);
    let identifier = data_set(300);
    pair.scu
        .send_message(FIND_CONTEXT, &find_rq(5), Some(&identifier))
        .unwrap();
    assert_eq!(
        pair.scu_to_scp(),
        [Seen::Command {
            context_id: FIND_CONTEXT,
            command: find_rq(5),
            data_set: DataSet::Collected(identifier),
        }]
    );
    let answer = data_set(6000);
    pair.scp
        .send_message(
            FIND_CONTEXT,
            &find_rsp(5, Status::PENDING, true),
            Some(&answer),
        )
        .unwrap();
    let cancel = Command::CCancelRq(CCancelRq {
        message_id_being_responded_to: 5,
    });
    pair.scu.send_message(FIND_CONTEXT, &cancel, None).unwrap();
    // Both directions are in flight at once.
    let at_scp = pair.scu_to_scp();
    let at_scu = pair.scp_to_scu();
    assert_eq!(
        at_scp,
        [Seen::Command {
            context_id: FIND_CONTEXT,
            command: cancel,
            data_set: DataSet::Absent,
        }]
    );
    assert_eq!(
        at_scu,
        [Seen::Command {
            context_id: FIND_CONTEXT,
            command: find_rsp(5, Status::PENDING, true),
            data_set: DataSet::Collected(answer),
        }]
    );
    pair.scp
        .send_message(FIND_CONTEXT, &find_rsp(5, Status::CANCEL, false), None)
        .unwrap();
    assert!(matches!(
        pair.scp_to_scu().as_slice(),
        [Seen::Command { command: Command::CFindRsp(rsp), data_set: DataSet::Absent, .. }] if rsp.status == Status::CANCEL
    ));
}

/// One PDV, value as given, for hand-built violations.
fn pdv(context_id: u8, is_command: bool, is_last: bool, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_pdata_tf(
        &[Pdv {
            presentation_context_id: context_id,
            is_command,
            is_last,
            bytes,
        }],
        &mut out,
    )
    .unwrap();
    out
}

fn command_pdus(context_id: u8, command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(
        context_id,
        true,
        &command.encode().unwrap(),
        16384,
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn every_dimse_violation_aborts_the_association() {
    let store = command_pdus(CT_CONTEXT, &store_rq(1));
    let echo = command_pdus(VERIFICATION_CONTEXT, &echo_rq(2));
    let mut too_long = Vec::new();
    for _ in 0..17 {
        too_long.extend(pdv(VERIFICATION_CONTEXT, true, false, &[0; 4000]));
    }
    let cases: Vec<(&str, Vec<u8>, Violation)> = vec![
        (
            "data set without a command",
            pdv(CT_CONTEXT, false, true, b"data"),
            Violation::DataWithoutCommand {
                context_id: CT_CONTEXT,
            },
        ),
        (
            "data set on another context than its command",
            [
                store.clone(),
                pdv(VERIFICATION_CONTEXT, false, true, b"data"),
            ]
            .concat(),
            Violation::DataOnOtherContext {
                command: CT_CONTEXT,
                data: VERIFICATION_CONTEXT,
            },
        ),
        (
            "command on a refused context",
            command_pdus(REFUSED_CONTEXT, &echo_rq(3)),
            Violation::ContextNotAccepted {
                context_id: REFUSED_CONTEXT,
            },
        ),
        (
            "command on a context never proposed",
            command_pdus(99, &echo_rq(3)),
            Violation::ContextNotAccepted { context_id: 99 },
        ),
        (
            "command before the data set ended",
            [
                store.clone(),
                pdv(CT_CONTEXT, false, false, b"half"),
                echo.clone(),
            ]
            .concat(),
            Violation::CommandBeforeDataSetEnded {
                context_id: VERIFICATION_CONTEXT,
                previous: CommandField::C_STORE_RQ,
            },
        ),
        (
            "command before a collected data set ended",
            [
                command_pdus(COMMITMENT_CONTEXT, &action_rq(4)),
                echo.clone(),
            ]
            .concat(),
            Violation::CommandBeforeDataSetEnded {
                context_id: VERIFICATION_CONTEXT,
                previous: CommandField::N_ACTION_RQ,
            },
        ),
        (
            "command fragments on two contexts",
            [
                pdv(
                    VERIFICATION_CONTEXT,
                    true,
                    false,
                    &echo_rq(5).encode().unwrap()[..10],
                ),
                pdv(CT_CONTEXT, true, true, &echo_rq(5).encode().unwrap()[10..]),
            ]
            .concat(),
            Violation::CommandOnOtherContext {
                first: VERIFICATION_CONTEXT,
                then: CT_CONTEXT,
            },
        ),
        (
            "undecodable command set",
            // Command Field (0000,0100) first, without the group length.
            pdv(
                VERIFICATION_CONTEXT,
                true,
                true,
                &[0, 0, 0, 1, 2, 0, 0, 0, 0x30, 0],
            ),
            Violation::Command(DimseError::GroupLengthMissing),
        ),
        (
            "command set over the limit",
            too_long,
            Violation::CommandTooLong { limit: 64 * 1024 },
        ),
    ];
    for (name, wire, expected) in cases {
        for reads in [&[][..], &[1][..], &[5, 13, 2][..]] {
            let mut pair = Pair::established(16384, 16384);
            let wire = [wire.clone(), echo.clone()].concat();
            let seen = feed(&mut pair.scp, &wire, reads, &pair.policy, pair.now).seen;
            let violation = seen.iter().find_map(|seen| match seen {
                Seen::Violation(violation) => Some(violation.clone()),
                _ => None,
            });
            assert_eq!(
                violation.as_ref(),
                Some(&expected),
                "{name}, reads {reads:?}"
            );
            assert!(
                matches!(seen.last(), Some(Seen::Violation(_))),
                "{name}: nothing is read after the violation: {seen:?}"
            );
            assert!(pair.scp.close_requested(), "{name}");
            let sent = pair.scp.poll_transmit().unwrap();
            assert_eq!(
                sent,
                [7, 0, 0, 0, 0, 4, 0, 0, 0, 0],
                "{name}: A-ABORT, service user"
            );
            assert_eq!(pair.scp.state(), State::Sta13AwaitingTransportClose);
            let mut cursor = 0;
            assert_eq!(pair.scp.receive(&echo, &mut cursor, pair.now), None);
            assert_eq!(cursor, echo.len(), "the rest is consumed unread");
        }
    }
}

#[test]
fn a_malformed_pdu_is_answered_by_the_state_machine() {
    let mut pair = Pair::established(16384, 16384);
    // PDU type 0x99.
    let wire = [0x99, 0, 0, 0, 0, 2, 1, 2];
    let seen = feed(&mut pair.scp, &wire, &[3], &pair.policy, pair.now).seen;
    let invalid = InvalidPdu {
        pdu_type: None,
        reason: AbortReason::UnrecognizedPdu,
    };
    assert_eq!(
        seen,
        [
            Seen::Violation(Violation::Pdu(DecodeError::UnknownPduType {
                pdu_type: 0x99
            })),
            Seen::Indication(Indication::Aborted(AbortCause::InvalidPdu(invalid))),
        ]
    );
    // AA-8: A-ABORT (service provider), then Sta13 until the peer closes or ARTIM.
    assert_eq!(
        pair.scp.poll_transmit().unwrap(),
        [7, 0, 0, 0, 0, 4, 0, 0, 2, 1]
    );
    assert_eq!(pair.scp.state(), State::Sta13AwaitingTransportClose);
    assert!(!pair.scp.close_requested());
    let deadline = pair.scp.next_deadline().unwrap();
    assert_eq!(deadline, pair.now + config().artim);
    assert_eq!(
        pair.scp.handle_timeout(deadline - Duration::from_millis(1)),
        None
    );
    assert_eq!(pair.scp.handle_timeout(deadline), Some(Timer::Artim));
    assert!(pair.scp.close_requested());
    assert!(pair.scp.is_closed());
    assert_eq!(pair.scp.next_deadline(), None);
}

#[test]
fn an_unparseable_associate_rq_is_rejected() {
    let now = Instant::now();
    let mut scp = Endpoint::new(Role::Acceptor, config());
    scp.transport_connected(now).unwrap();
    // A-ASSOCIATE-RQ whose body is too short for its fixed fields.
    let wire = [1, 0, 0, 0, 0, 4, 0, 1, 0, 0];
    let seen = feed(&mut scp, &wire, &[], &policy(16384), now).seen;
    assert!(
        matches!(
            seen.as_slice(),
            [
                Seen::Violation(Violation::Pdu(_)),
                Seen::Indication(Indication::Aborted(AbortCause::InvalidPdu(InvalidPdu {
                    pdu_type: Some(PduType::AssociateRq),
                    ..
                }))),
            ]
        ),
        "{seen:?}"
    );
    // A-ASSOCIATE-RJ 1/2/1.
    assert_eq!(scp.poll_transmit().unwrap(), [3, 0, 0, 0, 0, 4, 0, 1, 2, 1]);
}

#[test]
fn artim_closes_a_connection_that_never_asks() {
    let now = Instant::now();
    let mut scp = Endpoint::new(Role::Acceptor, config());
    assert_eq!(scp.next_deadline(), None);
    scp.transport_connected(now).unwrap();
    assert_eq!(scp.state(), State::Sta2AwaitingAssociateRq);
    assert_eq!(scp.next_deadline(), Some(now + config().artim));
    assert_eq!(scp.handle_timeout(now), None);
    assert_eq!(scp.handle_timeout(now + config().artim), Some(Timer::Artim));
    assert!(scp.close_requested() && scp.is_closed());
    assert_eq!(scp.poll_transmit(), None);
    assert_eq!(scp.poll_event(), None);
}

#[test]
fn every_pdu_restarts_the_idle_timer_and_its_expiry_aborts() {
    let mut pair = Pair::established(16384, 16384);
    let idle = config().idle;
    assert_eq!(pair.scp.next_deadline(), Some(pair.now + idle));
    // A PDU 10 s later moves the deadline.
    pair.now += Duration::from_secs(10);
    pair.scu
        .send_message(VERIFICATION_CONTEXT, &echo_rq(1), None)
        .unwrap();
    pair.scu_to_scp();
    assert_eq!(pair.scp.next_deadline(), Some(pair.now + idle));
    let deadline = pair.now + idle;
    assert_eq!(
        pair.scp.handle_timeout(deadline - Duration::from_secs(1)),
        None
    );
    assert_eq!(pair.scp.handle_timeout(deadline), Some(Timer::Idle));
    assert_eq!(
        pair.scp.poll_event(),
        Some(Incoming::Indication(Indication::Aborted(
            AbortCause::IdleTimeout
        )))
    );
    let abort = pair.scp.poll_transmit().unwrap();
    assert_eq!(
        abort,
        [7, 0, 0, 0, 0, 4, 0, 0, 2, 0],
        "A-ABORT, service provider"
    );
    // AA-8 then waits for the close under ARTIM.
    assert_eq!(pair.scp.next_deadline(), Some(deadline + config().artim));
    let seen = feed(&mut pair.scu, &abort, &[], &pair.policy, pair.now).seen;
    assert_eq!(
        seen,
        [Seen::Indication(Indication::Aborted(
            AbortCause::PeerServiceProvider {
                reason: AbortReason::NotSpecified
            }
        ))]
    );
    assert!(pair.scu.close_requested() && pair.scu.is_closed());
}

#[test]
fn release_from_the_requestor() {
    let mut pair = Pair::established(16384, 16384);
    pair.scu.release(pair.now).unwrap();
    assert_eq!(pair.scu.state(), State::Sta7AwaitingReleaseRp);
    assert_eq!(
        pair.scu_to_scp(),
        [Seen::Indication(Indication::ReleaseRequest)]
    );
    // AR-7: a response still owed goes out before the A-RELEASE-RP.
    pair.scp
        .send_message(CT_CONTEXT, &store_rsp(1, Status::SUCCESS), None)
        .unwrap();
    pair.scp.answer_release(pair.now).unwrap();
    assert_eq!(
        pair.scp
            .send_message(CT_CONTEXT, &store_rsp(2, Status::SUCCESS), None),
        Err(SendError::NotAllowed(AssocError::NotAllowed {
            input: "P-DATA request",
            state: State::Sta13AwaitingTransportClose
        }))
    );
    // AR-6: P-DATA still delivered while awaiting the A-RELEASE-RP.
    assert_eq!(
        pair.scp_to_scu(),
        [
            Seen::Command {
                context_id: CT_CONTEXT,
                command: store_rsp(1, Status::SUCCESS),
                data_set: DataSet::Absent
            },
            Seen::Indication(Indication::ReleaseConfirm),
        ]
    );
    assert!(pair.scu.close_requested() && pair.scu.is_closed());
    assert_eq!(pair.scp.next_deadline(), Some(pair.now + config().artim));
    pair.scp.transport_closed(pair.now);
    assert!(pair.scp.is_closed());
    assert_eq!(pair.scp.poll_event(), None, "a close in Sta13 is no abort");
}

#[test]
fn release_collision_from_both_ends() {
    let mut pair = Pair::established(16384, 16384);
    pair.scu.release(pair.now).unwrap();
    pair.scp.release(pair.now).unwrap();
    let at_scp = pair.scu_to_scp();
    let at_scu = pair.scp_to_scu();
    assert_eq!(at_scp, [Seen::Indication(Indication::ReleaseCollision)]);
    assert_eq!(at_scu, [Seen::Indication(Indication::ReleaseCollision)]);
    assert_eq!(
        pair.scu.state(),
        State::Sta9CollisionRequestorAwaitingLocalResponse
    );
    assert_eq!(
        pair.scp.state(),
        State::Sta10CollisionAcceptorAwaitingReleaseRp
    );
    pair.scu.answer_release(pair.now).unwrap();
    assert_eq!(
        pair.scu_to_scp(),
        [Seen::Indication(Indication::ReleaseConfirm)]
    );
    pair.scp.answer_release(pair.now).unwrap();
    assert_eq!(
        pair.scp_to_scu(),
        [Seen::Indication(Indication::ReleaseConfirm)]
    );
    assert!(pair.scu.is_closed() && pair.scu.close_requested());
    assert_eq!(pair.scp.state(), State::Sta13AwaitingTransportClose);
}

#[test]
fn an_abort_closes_both_ends() {
    let mut pair = Pair::established(16384, 16384);
    pair.scu.abort(pair.now);
    assert!(pair.scu.close_requested());
    assert_eq!(
        pair.scu_to_scp(),
        [Seen::Indication(Indication::Aborted(
            AbortCause::PeerServiceUser {
                reason: AbortReason::NotSpecified
            }
        ))]
    );
    assert!(pair.scp.close_requested() && pair.scp.is_closed());
    // Aborting again, or in a state without an association, only closes.
    pair.scp.abort(pair.now);
    assert_eq!(pair.scp.poll_transmit(), None);
    let mut fresh = Endpoint::new(Role::Acceptor, config());
    fresh.transport_connected(pair.now).unwrap();
    fresh.abort(pair.now);
    assert!(fresh.close_requested());
    assert_eq!(
        fresh.poll_transmit(),
        None,
        "no A-ABORT before an A-ASSOCIATE-RQ"
    );
}

#[test]
fn a_transport_closed_mid_data_set_is_an_abort() {
    let mut pair = Pair::established(16384, 16384);
    let fragmenter = pair
        .scu
        .send_command_for_data_set(CT_CONTEXT, &store_rq(1), 1000)
        .unwrap();
    let mut wire = pair.scu.poll_transmit().unwrap();
    let first = fragmenter.into_iter().next().unwrap();
    wire.extend_from_slice(&first.headers);
    wire.extend_from_slice(&data_set(500));
    let collector = feed(&mut pair.scp, &wire, &[], &pair.policy, pair.now);
    assert_eq!(collector.data_events, 1);
    pair.scp.transport_closed(pair.now);
    assert_eq!(
        pair.scp.poll_event(),
        Some(Incoming::Indication(Indication::Aborted(
            AbortCause::TransportClosed
        )))
    );
    assert!(pair.scp.close_requested() && pair.scp.is_closed());
    assert_eq!(pair.scp.next_deadline(), None);
}

#[test]
fn a_rejected_association() {
    let now = Instant::now();
    let mut scu = Endpoint::new(Role::Requestor, config());
    let mut scp = Endpoint::new(Role::Acceptor, config());
    let mut rq = proposal(16384);
    rq.called_ae_title = "SOMEONE_ELSE".into();
    scu.request_association(Box::new(rq), now).unwrap();
    scu.transport_connected(now).unwrap();
    scp.transport_connected(now).unwrap();
    let mut policy = policy(16384);
    policy.called_ae_titles = AeTitleFilter::Only(vec!["SCP".into()]);
    let wire = scu.poll_transmit().unwrap();
    feed(&mut scp, &wire, &[], &policy, now);
    assert_eq!(scp.state(), State::Sta13AwaitingTransportClose);
    let wire = scp.poll_transmit().unwrap();
    let seen = feed(&mut scu, &wire, &[], &policy, now).seen;
    let [Seen::Indication(Indication::AssociateRejected(rj))] = seen.as_slice() else {
        panic!("{seen:?}")
    };
    assert_eq!(rj.codes(), (1, 1, 7));
    assert!(scu.close_requested() && scu.is_closed());
}

#[test]
fn sends_the_state_or_the_command_does_not_allow_queue_nothing() {
    let now = Instant::now();
    let mut scu = Endpoint::new(Role::Requestor, config());
    assert!(matches!(
        scu.send_message(VERIFICATION_CONTEXT, &echo_rq(1), None),
        Err(SendError::NotAllowed(
            AssocError::PDataBeforeEstablished { .. }
        ))
    ));
    scu.request_association(Box::new(proposal(16384)), now)
        .unwrap();
    assert!(matches!(
        scu.send_message(VERIFICATION_CONTEXT, &echo_rq(1), None),
        Err(SendError::NotAllowed(_))
    ));

    let mut pair = Pair::established(16384, 16384);
    let cases = [
        (
            pair.scu
                .send_message(REFUSED_CONTEXT, &echo_rq(1), None)
                .unwrap_err(),
            SendError::ContextNotAccepted {
                context_id: REFUSED_CONTEXT,
            },
        ),
        (
            pair.scu
                .send_message(CT_CONTEXT, &store_rq(1), None)
                .unwrap_err(),
            SendError::DataSetMismatch {
                command_field: CommandField::C_STORE_RQ,
                announced: true,
            },
        ),
        (
            pair.scu
                .send_message(VERIFICATION_CONTEXT, &echo_rq(1), Some(b"xx"))
                .unwrap_err(),
            SendError::DataSetMismatch {
                command_field: CommandField::C_ECHO_RQ,
                announced: false,
            },
        ),
        (
            pair.scu
                .send_command_for_data_set(VERIFICATION_CONTEXT, &echo_rq(1), 10)
                .unwrap_err(),
            SendError::DataSetMismatch {
                command_field: CommandField::C_ECHO_RQ,
                announced: false,
            },
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error, expected);
    }
    let bad_uid = Command::CEchoRq(CEchoRq {
        message_id: 1,
        affected_sop_class_uid: "not a uid".into(),
    });
    assert!(matches!(
        pair.scu.send_message(VERIFICATION_CONTEXT, &bad_uid, None),
        Err(SendError::Command(_))
    ));
    assert_eq!(pair.scu.poll_transmit(), None, "nothing was queued");
}

#[test]
fn message_ids_skip_zero_when_they_wrap() {
    let mut endpoint = Endpoint::new(Role::Requestor, config());
    assert_eq!(endpoint.next_message_id(), 1);
    for _ in 2..u16::MAX {
        endpoint.next_message_id();
    }
    assert_eq!(endpoint.next_message_id(), u16::MAX);
    assert_eq!(endpoint.next_message_id(), 1);
}

#[test]
fn requested_abort_source_is_the_service_user() {
    let mut pair = Pair::established(16384, 16384);
    pair.scp.abort(pair.now);
    let sent = pair.scp.poll_transmit().unwrap();
    assert_eq!(sent[8], 0, "source: service user");
    let seen = feed(&mut pair.scu, &sent, &[], &pair.policy, pair.now).seen;
    assert_eq!(
        seen,
        [Seen::Indication(Indication::Aborted(
            AbortCause::PeerServiceUser {
                reason: AbortReason::NotSpecified
            }
        ))]
    );
}
