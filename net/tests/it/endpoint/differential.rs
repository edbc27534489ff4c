//! The endpoint against other paths over the same bytes:
//! - the glue it replaced (stream decoder + state machine + concatenated
//!   PDVs, as the load generator's inbox and the test acceptor wrote it),
//!   kept here as an oracle;
//! - dicom-ul's P-DATA writer (several PDVs per PDU, which our encoder never
//!   produces) read by the endpoint, and the endpoint's output read by
//!   dicom-ul's PDU reader.

use dicom_ul::pdu as ul;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::upper_layer::strategies::config as proptest_config;
use sluice_net::assoc::{Action, Association, Input, InvalidPdu};
use sluice_net::pdata::{StreamDecoder, StreamEvent};
use sluice_net::pdu::DecodeLimits;

/// Today's glue, written the way its three copies wrote it: feed the
/// decoder, hand control PDUs and P-DATA starts to the state machine,
/// concatenate PDV bytes per command and data set, decode the command.
struct Oracle {
    association: Association,
    decoder: StreamDecoder,
    deliver: bool,
    command: Vec<u8>,
    data: Vec<u8>,
    /// The command whose data set is coming (`None`: streamed).
    pending: Option<(u8, Option<Command>)>,
    seen: Vec<Seen>,
}

impl Oracle {
    fn acceptor() -> Oracle {
        let mut association = Association::new(Role::Acceptor);
        association
            .handle(Input::TransportConnectIndication)
            .unwrap();
        Oracle {
            association,
            decoder: StreamDecoder::new(DecodeLimits::default()),
            deliver: false,
            command: Vec::new(),
            data: Vec::new(),
            pending: None,
            seen: Vec::new(),
        }
    }

    fn input(&mut self, input: Input, policy: &AcceptorPolicy) {
        let actions = self.association.handle(input).unwrap();
        for action in actions {
            match action {
                Action::Indication(Indication::PData) => self.deliver = true,
                Action::Indication(Indication::AssociateRequest(rq)) => {
                    let outcome = negotiate(policy, &rq, AssociationLoad::UNLIMITED);
                    if let sluice_net::assoc::NegotiationOutcome::Accept { negotiated, .. } =
                        &outcome
                    {
                        self.decoder
                            .set_pdata_length_max(negotiated.pdu_length_max_local);
                    }
                    self.seen
                        .push(Seen::Indication(Indication::AssociateRequest(rq)));
                    self.input(Input::AssociateResponse(outcome.into()), policy);
                }
                Action::Indication(indication) => self.seen.push(Seen::Indication(indication)),
                _ => {}
            }
        }
    }

    fn take(&mut self, mut bytes: &[u8], policy: &AcceptorPolicy) {
        while !bytes.is_empty() {
            let step = match self.decoder.next_event(bytes) {
                Ok(step) => step,
                Err(error) => {
                    let invalid = InvalidPdu::new(self.decoder.failed_pdu_type(), &error);
                    self.input(Input::InvalidPdu(invalid), policy);
                    return;
                }
            };
            bytes = &bytes[step.consumed..];
            match step.event {
                None => return,
                Some(StreamEvent::Control(pdu)) => self.input(Input::PduReceived(pdu), policy),
                Some(StreamEvent::PDataStart { .. }) => {
                    self.deliver = false;
                    self.input(Input::PDataReceived, policy);
                }
                Some(StreamEvent::PdvFragment(fragment)) => {
                    if !self.deliver {
                        continue;
                    }
                    let complete = fragment.is_last && fragment.pdv_complete;
                    let context_id = fragment.presentation_context_id;
                    if fragment.is_command {
                        self.command.extend_from_slice(fragment.bytes);
                        if complete {
                            let command =
                                Command::decode(&std::mem::take(&mut self.command)).unwrap();
                            if !command.data_set_present() {
                                self.seen.push(Seen::Command {
                                    context_id,
                                    command,
                                    data_set: DataSet::Absent,
                                });
                            } else if matches!(command, Command::CStoreRq(_)) {
                                self.seen.push(Seen::Command {
                                    context_id,
                                    command,
                                    data_set: DataSet::Streamed,
                                });
                                self.pending = Some((context_id, None));
                            } else {
                                self.pending = Some((context_id, Some(command)));
                            }
                        }
                    } else {
                        self.data.extend_from_slice(fragment.bytes);
                        if complete {
                            let (context_id, command) = self.pending.take().unwrap();
                            let bytes = std::mem::take(&mut self.data);
                            match command {
                                None => self.seen.push(Seen::DataSet { context_id, bytes }),
                                Some(command) => self.seen.push(Seen::Command {
                                    context_id,
                                    command,
                                    data_set: DataSet::Collected(bytes),
                                }),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Data set lengths of the messages of a stream: C-STORE (streamed),
/// C-FIND (collected), C-ECHO (none).
fn messages() -> impl Strategy<Value = Vec<(u8, usize)>> {
    vec((0u8..3, 0usize..9000), 1..10)
}

/// An SCU's bytes for `messages`, framed at `pdu_length_max`.
fn stream(messages: &[(u8, usize)], pdu_length_max: u32, now: Instant) -> Vec<u8> {
    let policy = policy(pdu_length_max);
    let mut scu = Endpoint::new(Role::Requestor, config());
    let mut scp = Endpoint::new(Role::Acceptor, config());
    scu.request_association(Box::new(proposal(16384)), now)
        .unwrap();
    scu.transport_connected(now).unwrap();
    scp.transport_connected(now).unwrap();
    let mut wire = scu.poll_transmit().unwrap();
    feed(&mut scp, &wire, &[], &policy, now);
    let ac = scp.poll_transmit().unwrap();
    feed(&mut scu, &ac, &[], &policy, now);
    for (index, &(kind, length)) in messages.iter().enumerate() {
        let message_id = index as u16 + 1;
        let data = data_set(length);
        match kind {
            0 => {
                let fragmenter = scu
                    .send_command_for_data_set(CT_CONTEXT, &store_rq(message_id), length as u64)
                    .unwrap();
                wire.extend(scu.poll_transmit().unwrap());
                for fragment in fragmenter {
                    wire.extend_from_slice(&fragment.headers);
                    wire.extend_from_slice(&data[fragment.value_range().unwrap()]);
                }
            }
            1 => scu
                .send_message(FIND_CONTEXT, &find_rq(message_id), Some(&data))
                .unwrap(),
            _ => {
                let echo = Command::CEchoRq(sluice_net::dimse::CEchoRq {
                    message_id,
                    affected_sop_class_uid: uid::VERIFICATION.into(),
                });
                scu.send_message(VERIFICATION_CONTEXT, &echo, None).unwrap();
            }
        }
        if let Some(bytes) = scu.poll_transmit() {
            wire.extend(bytes);
        }
    }
    scu.release(now).unwrap();
    wire.extend(scu.poll_transmit().unwrap());
    wire
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn the_endpoint_agrees_with_the_glue_it_replaced(
        messages in messages(),
        pdu_length_max in prop_oneof![Just(16384u32), 100u32..6000],
        read_length in 1usize..4000,
    ) {
        let now = Instant::now();
        let wire = stream(&messages, pdu_length_max, now);
        let policy = policy(pdu_length_max);
        let mut oracle = Oracle::acceptor();
        for read in wire.chunks(read_length) {
            oracle.take(read, &policy);
        }
        let mut endpoint = Endpoint::new(Role::Acceptor, config());
        endpoint.transport_connected(now).unwrap();
        let seen = feed(&mut endpoint, &wire, &[read_length], &policy, now).seen;
        prop_assert_eq!(&seen, &oracle.seen);
        prop_assert_eq!(seen.len(), 2 + messages.len() + messages.iter().filter(|(kind, _)| *kind == 0).count());
    }
}

fn pdv(context_id: u8, command: bool, is_last: bool, data: &[u8]) -> ul::PDataValue {
    ul::PDataValue {
        presentation_context_id: context_id,
        value_type: if command {
            ul::PDataValueType::Command
        } else {
            ul::PDataValueType::Data
        },
        is_last,
        data: data.to_vec(),
    }
}

/// dicom-ul puts a command and the first pieces of its data set in one
/// P-DATA-TF (several PDVs per PDU); the endpoint reads the same messages.
#[test]
fn the_endpoint_reads_pdata_written_by_dicom_ul() {
    let store = store_rq(1).encode().unwrap();
    let find = find_rq(2).encode().unwrap();
    let instance = data_set(5000);
    let identifier = data_set(90);
    let pdus = [
        ul::Pdu::PData {
            data: vec![
                pdv(CT_CONTEXT, true, false, &store[..20]),
                pdv(CT_CONTEXT, true, true, &store[20..]),
                pdv(CT_CONTEXT, false, false, &instance[..1000]),
            ],
        },
        ul::Pdu::PData {
            data: vec![
                pdv(CT_CONTEXT, false, false, &instance[1000..1001]),
                pdv(CT_CONTEXT, false, false, &[]),
                pdv(CT_CONTEXT, false, true, &instance[1001..]),
                pdv(FIND_CONTEXT, true, true, &find),
                pdv(FIND_CONTEXT, false, true, &identifier),
            ],
        },
    ];
    let mut wire = Vec::new();
    for pdu in &pdus {
        ul::write_pdu(&mut wire, pdu).unwrap();
    }
    for reads in [&[][..], &[1][..], &[33, 7][..]] {
        let mut pair = Pair::established(16384, 16384);
        let collector = feed(&mut pair.scp, &wire, reads, &pair.policy, pair.now);
        assert_eq!(
            collector.seen,
            [
                Seen::Command {
                    context_id: CT_CONTEXT,
                    command: store_rq(1),
                    data_set: DataSet::Streamed
                },
                Seen::DataSet {
                    context_id: CT_CONTEXT,
                    bytes: instance.clone()
                },
                Seen::Command {
                    context_id: FIND_CONTEXT,
                    command: find_rq(2),
                    data_set: DataSet::Collected(identifier.clone())
                },
            ],
            "reads {reads:?}"
        );
    }
}

/// What the endpoint sends, dicom-ul reads: every PDU within the peer's
/// maximum, the PDVs concatenating to the command set and the data set.
#[test]
fn dicom_ul_reads_what_the_endpoint_sends() {
    for peer_max in [16384u32, 4096, 200] {
        let mut pair = Pair::established(16384, peer_max);
        let identifier = data_set(3000);
        pair.scu
            .send_message(FIND_CONTEXT, &find_rq(4), Some(&identifier))
            .unwrap();
        let wire = pair.scu.poll_transmit().unwrap();
        let (mut command, mut data, mut lasts) = (Vec::new(), Vec::new(), 0);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let length = u32::from_be_bytes(rest[2..6].try_into().unwrap());
            assert!(
                length <= peer_max,
                "PDU of {length} over the peer's {peer_max}"
            );
            let total = 6 + length as usize;
            let Some(ul::Pdu::PData { data: values }) =
                ul::read_pdu(&rest[..total], ul::MAXIMUM_PDU_SIZE, true).unwrap()
            else {
                panic!("a P-DATA-TF")
            };
            for value in values {
                assert_eq!(value.presentation_context_id, FIND_CONTEXT);
                lasts += usize::from(value.is_last);
                match value.value_type {
                    ul::PDataValueType::Command => command.extend(value.data),
                    ul::PDataValueType::Data => data.extend(value.data),
                }
            }
            rest = &rest[total..];
        }
        assert_eq!(command, find_rq(4).encode().unwrap(), "peer max {peer_max}");
        assert_eq!(data, identifier);
        assert_eq!(lasts, 2);
    }
}
