//! Random conversations, their byte stream cut at random points (as reads
//! from a socket cut it): the receiving endpoint hands out the same events
//! and answers the same bytes however the stream is cut, for valid streams
//! and for streams with one byte changed.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::upper_layer::strategies::config as proptest_config;
use sluice_net::assoc::State;
use sluice_net::dimse::commitment::ACTION_TYPE_REQUEST_STORAGE_COMMITMENT;
use sluice_net::dimse::{CEchoRq, NActionRq, NEventReportRq};

/// One message of a conversation, by kind and data set length.
#[derive(Clone, Debug)]
enum Message {
    Echo,
    Store(usize),
    Find(usize),
    Action(usize),
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::Echo),
        (0usize..20_000).prop_map(Message::Store),
        (0usize..3000).prop_map(Message::Find),
        (0usize..3000).prop_map(Message::Action),
    ]
}

fn pdu_length_max() -> impl Strategy<Value = u32> {
    prop_oneof![Just(16384u32), Just(4096), 64u32..5000]
}

/// What one endpoint made of one stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    seen: Vec<Seen>,
    /// Bytes of a streamed data set not ended when the stream ended.
    partial: Option<(u8, Vec<u8>)>,
    answered: Vec<u8>,
    state: State,
    close_requested: bool,
}

fn outcome(
    mut endpoint: Endpoint,
    wire: &[u8],
    reads: &[usize],
    policy: &AcceptorPolicy,
    now: Instant,
) -> (Outcome, usize) {
    let collector = feed(&mut endpoint, wire, reads, policy, now);
    let mut answered = Vec::new();
    while let Some(bytes) = endpoint.poll_transmit() {
        answered.extend(bytes);
    }
    (
        Outcome {
            seen: collector.seen.clone(),
            partial: collector.partial(),
            answered,
            state: endpoint.state(),
            close_requested: endpoint.close_requested(),
        },
        collector.data_events,
    )
}

/// A conversation: the SCU's bytes (A-ASSOCIATE-RQ, the messages,
/// A-RELEASE-RQ) and the SCP's (A-ASSOCIATE-AC, answers, A-RELEASE-RP).
struct Conversation {
    to_scp: Vec<u8>,
    to_scu: Vec<u8>,
    sent: Vec<Seen>,
}

fn conversation(
    messages: &[Message],
    scu_pdu_max: u32,
    scp_pdu_max: u32,
    now: Instant,
) -> Conversation {
    let policy = policy(scp_pdu_max);
    let mut scu = Endpoint::new(Role::Requestor, super::config());
    let mut scp = Endpoint::new(Role::Acceptor, super::config());
    scu.request_association(Box::new(proposal(scu_pdu_max)), now)
        .unwrap();
    scu.transport_connected(now).unwrap();
    scp.transport_connected(now).unwrap();
    let mut to_scp = scu.poll_transmit().unwrap();
    feed(&mut scp, &to_scp, &[], &policy, now);
    let mut to_scu = scp.poll_transmit().unwrap();
    feed(&mut scu, &to_scu, &[], &policy, now);
    assert_eq!(scu.state(), State::Sta6Established);

    let mut sent = vec![Seen::Indication(Indication::AssociateRequest(Box::new(
        proposal(scu_pdu_max),
    )))];
    for message in messages {
        let message_id = scu.next_message_id();
        match message {
            Message::Echo => {
                let rq = Command::CEchoRq(CEchoRq {
                    message_id,
                    affected_sop_class_uid: uid::VERIFICATION.into(),
                });
                scu.send_message(VERIFICATION_CONTEXT, &rq, None).unwrap();
                to_scp.extend(scu.poll_transmit().unwrap());
                sent.push(Seen::Command {
                    context_id: VERIFICATION_CONTEXT,
                    command: rq,
                    data_set: DataSet::Absent,
                });
            }
            Message::Store(length) => {
                let data = data_set(*length);
                let fragmenter = scu
                    .send_command_for_data_set(CT_CONTEXT, &store_rq(message_id), data.len() as u64)
                    .unwrap();
                to_scp.extend(scu.poll_transmit().unwrap());
                for fragment in fragmenter {
                    to_scp.extend_from_slice(&fragment.headers);
                    to_scp.extend_from_slice(&data[fragment.value_range().unwrap()]);
                }
                sent.push(Seen::Command {
                    context_id: CT_CONTEXT,
                    command: store_rq(message_id),
                    data_set: DataSet::Streamed,
                });
                sent.push(Seen::DataSet {
                    context_id: CT_CONTEXT,
                    bytes: data,
                });
                scp.send_message(CT_CONTEXT, &store_rsp(message_id, Status::SUCCESS), None)
                    .unwrap();
            }
            Message::Find(length) => {
                let identifier = data_set(*length);
                scu.send_message(FIND_CONTEXT, &find_rq(message_id), Some(&identifier))
                    .unwrap();
                to_scp.extend(scu.poll_transmit().unwrap());
                sent.push(Seen::Command {
                    context_id: FIND_CONTEXT,
                    command: find_rq(message_id),
                    data_set: DataSet::Collected(identifier.clone()),
                });
                scp.send_message(
                    FIND_CONTEXT,
                    &find_rsp(message_id, Status::PENDING, true),
                    Some(&identifier),
                )
                .unwrap();
                scp.send_message(
                    FIND_CONTEXT,
                    &find_rsp(message_id, Status::SUCCESS, false),
                    None,
                )
                .unwrap();
            }
            Message::Action(length) => {
                let information = data_set(*length);
                let rq = Command::NActionRq(NActionRq {
                    message_id,
                    requested_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.into(),
                    requested_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.into(),
                    action_type_id: ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
                    data_set: true,
                });
                scu.send_message(COMMITMENT_CONTEXT, &rq, Some(&information))
                    .unwrap();
                to_scp.extend(scu.poll_transmit().unwrap());
                sent.push(Seen::Command {
                    context_id: COMMITMENT_CONTEXT,
                    command: rq,
                    data_set: DataSet::Collected(information.clone()),
                });
                let report = Command::NEventReportRq(NEventReportRq {
                    message_id: scp.next_message_id(),
                    affected_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.into(),
                    affected_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.into(),
                    event_type_id: 1,
                    data_set: true,
                });
                scp.send_message(COMMITMENT_CONTEXT, &report, Some(&information))
                    .unwrap();
            }
        }
        if let Some(bytes) = scp.poll_transmit() {
            to_scu.extend(bytes);
        }
    }
    scu.release(now).unwrap();
    to_scp.extend(scu.poll_transmit().unwrap());
    sent.push(Seen::Indication(Indication::ReleaseRequest));
    Conversation {
        to_scp,
        to_scu,
        sent,
    }
}

/// A requestor that has sent its A-ASSOCIATE-RQ, ready for the SCP's bytes.
fn requestor(scu_pdu_max: u32, now: Instant) -> Endpoint {
    let mut scu = Endpoint::new(Role::Requestor, super::config());
    scu.request_association(Box::new(proposal(scu_pdu_max)), now)
        .unwrap();
    scu.transport_connected(now).unwrap();
    scu.poll_transmit().unwrap();
    scu
}

fn acceptor(now: Instant) -> Endpoint {
    let mut scp = Endpoint::new(Role::Acceptor, super::config());
    scp.transport_connected(now).unwrap();
    scp
}

/// What `fresh()` makes of `wire` in one read, after checking it makes the
/// same of it in `reads`.
fn same_however_cut(
    fresh: impl Fn() -> Endpoint,
    wire: &[u8],
    reads: &[usize],
    policy: &AcceptorPolicy,
    now: Instant,
) -> Result<Outcome, TestCaseError> {
    let (whole, whole_data_events) = outcome(fresh(), wire, &[], policy, now);
    let (cut, cut_data_events) = outcome(fresh(), wire, reads, policy, now);
    prop_assert_eq!(&cut, &whole);
    prop_assert!(cut_data_events >= whole_data_events);
    Ok(whole)
}

proptest! {
    #![proptest_config(proptest_config(128))]

    /// Both directions of one conversation: the SCP hears what the SCU
    /// sent, the SCU hears the AC and the answers, however either stream is cut.
    #[test]
    fn events_do_not_depend_on_the_cuts(
        messages in vec(message(), 1..8),
        scu_pdu_max in pdu_length_max(),
        scp_pdu_max in pdu_length_max(),
        reads in vec(1usize..3000, 1..30),
    ) {
        let now = Instant::now();
        let conversation = conversation(&messages, scu_pdu_max, scp_pdu_max, now);
        let policy = policy(scp_pdu_max);
        let at_scp = same_however_cut(|| acceptor(now), &conversation.to_scp, &reads, &policy, now)?;
        prop_assert_eq!(&at_scp.seen, &conversation.sent, "the SCP hears what the SCU sent");
        prop_assert_eq!(at_scp.state, State::Sta8AwaitingLocalReleaseResponse);
        let at_scu = same_however_cut(|| requestor(scu_pdu_max, now), &conversation.to_scu, &reads, &policy, now)?;
        prop_assert!(matches!(at_scu.seen.first(), Some(Seen::Indication(Indication::AssociateAccepted(_)))));
        prop_assert!(!at_scu.seen.iter().any(|seen| matches!(seen, Seen::Violation(_))));
        prop_assert_eq!(at_scu.state, State::Sta6Established);
    }

    /// One byte changed anywhere: whatever the endpoint makes of it (a
    /// violation, an abort, or nothing at all), it makes the same of it
    /// however the stream is cut, and it never panics.
    #[test]
    fn a_changed_byte_gives_the_same_outcome_however_cut(
        messages in vec(message(), 1..5),
        scp_pdu_max in pdu_length_max(),
        position in any::<proptest::sample::Index>(),
        value in any::<u8>(),
        reads in vec(1usize..700, 1..30),
        to_requestor in any::<bool>(),
    ) {
        let now = Instant::now();
        let conversation = conversation(&messages, 16384, scp_pdu_max, now);
        let policy = policy(scp_pdu_max);
        let mut wire = if to_requestor { conversation.to_scu } else { conversation.to_scp };
        let index = position.index(wire.len());
        wire[index] = value;
        let fresh = || if to_requestor { requestor(16384, now) } else { acceptor(now) };
        same_however_cut(fresh, &wire, &reads, &policy, now)?;
    }
}
