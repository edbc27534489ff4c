//! The association endpoint (net/src/endpoint): both roles by table, the
//! byte stream cut anywhere (same events), and differential tests against
//! the decoder + state machine glue it replaced and against dicom-ul.
//!
//! Two endpoints are wired back to back in memory ([`Pair`]): what one
//! queues in `poll_transmit` is what the other receives.

mod acceptor;
mod cuts;
mod differential;
mod requestor;

use std::time::{Duration, Instant};

use sluice_net::assoc::{
    negotiate, AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter, AssociationLoad,
    AssociationProposal, Indication, ProposedPresentationContext, Role, State,
};
use sluice_net::dimse::{
    CFindRq, CFindRsp, CStoreRq, CStoreRsp, Command, Priority, Status, StatusDetail,
};
use sluice_net::endpoint::{DataSet, Endpoint, EndpointConfig, Incoming, Violation};
use sluice_net::pdu::AssociateRq;
use sluice_net::uid::{self, ts};

pub const CT: &str = uid::CT_IMAGE_STORAGE;

/// Context IDs of [`proposal`], in proposal order.
pub const VERIFICATION_CONTEXT: u8 = 1;
pub const CT_CONTEXT: u8 = 3;
pub const COMMITMENT_CONTEXT: u8 = 5;
pub const FIND_CONTEXT: u8 = 7;
pub const MOVE_CONTEXT: u8 = 9;
pub const GET_CONTEXT: u8 = 11;
/// Proposed, never accepted.
pub const REFUSED_CONTEXT: u8 = 13;

/// The acceptor's policy: Verification, CT (the requestor may also be its
/// SCP, for C-GET), Storage Commitment, Study Root FIND/MOVE/GET.
pub fn policy(pdu_length_max_receive: u32) -> AcceptorPolicy {
    let mut policy = AcceptorPolicy::new(AeTitleFilter::Any, "1.2.826.0.1.3680043.10.1234.7");
    policy.pdu_length_max_receive = pdu_length_max_receive;
    let implicit = [ts::IMPLICIT_VR_LITTLE_ENDIAN];
    policy
        .abstract_syntaxes
        .push(AcceptedAbstractSyntax::new(uid::VERIFICATION, implicit));
    policy.abstract_syntaxes.push(
        AcceptedAbstractSyntax::new(CT, [ts::EXPLICIT_VR_LITTLE_ENDIAN]).with_requestor_scp_role(),
    );
    for abstract_syntax in [
        uid::STORAGE_COMMITMENT_PUSH_MODEL,
        uid::STUDY_ROOT_QR_FIND,
        uid::STUDY_ROOT_QR_MOVE,
        uid::STUDY_ROOT_QR_GET,
    ] {
        policy
            .abstract_syntaxes
            .push(AcceptedAbstractSyntax::new(abstract_syntax, implicit));
    }
    policy
}

/// The requestor's A-ASSOCIATE-RQ for [`policy`], plus one context it refuses.
pub fn proposal(pdu_length_max_receive: u32) -> AssociateRq {
    let context =
        |abstract_syntax: &str, transfer_syntax: &str, roles| ProposedPresentationContext {
            abstract_syntax: abstract_syntax.into(),
            transfer_syntaxes: vec![transfer_syntax.into()],
            roles,
        };
    let implicit = ts::IMPLICIT_VR_LITTLE_ENDIAN;
    AssociationProposal {
        calling_ae_title: "SCU".into(),
        called_ae_title: "SCP".into(),
        presentation_contexts: vec![
            context(uid::VERIFICATION, implicit, None),
            context(CT, ts::EXPLICIT_VR_LITTLE_ENDIAN, Some((true, true))),
            context(uid::STORAGE_COMMITMENT_PUSH_MODEL, implicit, None),
            context(uid::STUDY_ROOT_QR_FIND, implicit, None),
            context(uid::STUDY_ROOT_QR_MOVE, implicit, None),
            context(uid::STUDY_ROOT_QR_GET, implicit, None),
            context(uid::MR_IMAGE_STORAGE, implicit, None),
        ],
        pdu_length_max_receive,
        implementation_class_uid: "1.2.826.0.1.3680043.10.1234.8".into(),
        implementation_version_name: None,
        asynchronous_operations_window: None,
        user_identity: None,
    }
    .to_associate_rq()
    .unwrap()
}

pub fn config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.artim = Duration::from_secs(5);
    config.idle = Duration::from_secs(20);
    config
}

/// What a receiver saw, with each streamed data set joined into one
/// [`Seen::DataSet`], so that runs cut differently compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Indication(Indication),
    Command {
        context_id: u8,
        command: Command,
        data_set: DataSet,
    },
    DataSet {
        context_id: u8,
        bytes: Vec<u8>,
    },
    Violation(Violation),
}

/// Collects events into [`Seen`]s, joining streamed data sets.
#[derive(Debug, Default)]
pub struct Collector {
    pub seen: Vec<Seen>,
    streaming: Option<(u8, Vec<u8>)>,
    /// Number of `Incoming::Data` events (more when the input is cut finer).
    pub data_events: usize,
}

impl Collector {
    /// The bytes of a streamed data set that had not ended.
    pub fn partial(&self) -> Option<(u8, Vec<u8>)> {
        self.streaming.clone()
    }

    /// Takes one event; `input` is the slice given to `receive`.
    pub fn take(&mut self, input: &[u8], incoming: Incoming) {
        match incoming {
            Incoming::Data {
                context_id,
                range,
                last,
            } => {
                self.data_events += 1;
                let bytes = input.get(range).expect("a range of the input");
                let (streaming_context, collected) = self
                    .streaming
                    .get_or_insert_with(|| (context_id, Vec::new()));
                assert_eq!(*streaming_context, context_id);
                collected.extend_from_slice(bytes);
                if last {
                    let (context_id, bytes) = self.streaming.take().unwrap();
                    self.seen.push(Seen::DataSet { context_id, bytes });
                }
            }
            Incoming::Indication(indication) => self.seen.push(Seen::Indication(indication)),
            Incoming::Command {
                context_id,
                command,
                data_set,
            } => {
                assert!(self.streaming.is_none(), "a command inside a data set");
                self.seen.push(Seen::Command {
                    context_id,
                    command,
                    data_set,
                })
            }
            Incoming::Violation(violation) => self.seen.push(Seen::Violation(violation)),
            other => panic!("an event this test does not know: {other:?}"),
        }
    }
}

/// Feeds `wire` to `endpoint` in reads of the given lengths (cycled; the
/// rest in one read when empty), answering an A-ASSOCIATE-RQ with `policy`.
pub fn feed(
    endpoint: &mut Endpoint,
    wire: &[u8],
    reads: &[usize],
    policy: &AcceptorPolicy,
    now: Instant,
) -> Collector {
    let mut collector = Collector::default();
    let mut offset = 0;
    let mut lengths = reads.iter().copied().filter(|&length| length > 0).cycle();
    while offset < wire.len() {
        let length = lengths
            .next()
            .unwrap_or(wire.len())
            .min(wire.len() - offset);
        let read = &wire[offset..offset + length];
        offset += length;
        let mut cursor = 0;
        while let Some(incoming) = endpoint.receive(read, &mut cursor, now) {
            if let Incoming::Indication(Indication::AssociateRequest(rq)) = &incoming {
                let outcome = negotiate(policy, rq, AssociationLoad::UNLIMITED);
                endpoint.answer_association(outcome.into(), now).unwrap();
            }
            collector.take(read, incoming);
        }
        assert_eq!(
            cursor,
            read.len(),
            "receive stops only at the end of its input"
        );
    }
    while let Some(incoming) = endpoint.poll_event() {
        collector.take(&[], incoming);
    }
    collector
}

/// A requestor and an acceptor wired back to back.
#[derive(Debug)]
pub struct Pair {
    pub scu: Endpoint,
    pub scp: Endpoint,
    pub policy: AcceptorPolicy,
    pub now: Instant,
}

impl Pair {
    /// Both ends established: the SCU announces `scu_pdu_max`, the SCP `scp_pdu_max`.
    pub fn established(scu_pdu_max: u32, scp_pdu_max: u32) -> Pair {
        Pair::established_with(scu_pdu_max, scp_pdu_max, config())
    }

    /// Like [`Pair::established`], the SCP with its own settings.
    pub fn established_with(
        scu_pdu_max: u32,
        scp_pdu_max: u32,
        scp_config: EndpointConfig,
    ) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            scu: Endpoint::new(Role::Requestor, config()),
            scp: Endpoint::new(Role::Acceptor, scp_config),
            policy: policy(scp_pdu_max),
            now,
        };
        pair.scu
            .request_association(Box::new(proposal(scu_pdu_max)), now)
            .unwrap();
        assert_eq!(pair.scu.state(), State::Sta4AwaitingTransportOpen);
        assert!(
            pair.scu.poll_transmit().is_none(),
            "nothing before connecting"
        );
        pair.scu.transport_connected(now).unwrap();
        pair.scp.transport_connected(now).unwrap();
        let to_scp = pair.scu_to_scp();
        assert!(matches!(
            to_scp.as_slice(),
            [Seen::Indication(Indication::AssociateRequest(_))]
        ));
        let to_scu = pair.scp_to_scu();
        let [Seen::Indication(Indication::AssociateAccepted(negotiated))] = to_scu.as_slice()
        else {
            panic!("expected the AC, got {to_scu:?}")
        };
        assert_eq!(negotiated.pdu_length_max_peer, scp_pdu_max);
        assert!(pair.scp.presentation_context(REFUSED_CONTEXT).is_none());
        assert_eq!(pair.scu.state(), State::Sta6Established);
        assert_eq!(pair.scp.state(), State::Sta6Established);
        pair
    }

    /// Moves what the SCU queued to the SCP, in one read.
    pub fn scu_to_scp(&mut self) -> Vec<Seen> {
        let wire = self.scu.poll_transmit().unwrap_or_default();
        feed(&mut self.scp, &wire, &[], &self.policy, self.now).seen
    }

    /// Moves what the SCP queued to the SCU, in one read.
    pub fn scp_to_scu(&mut self) -> Vec<Seen> {
        let wire = self.scp.poll_transmit().unwrap_or_default();
        feed(&mut self.scu, &wire, &[], &self.policy, self.now).seen
    }
}

/// A synthetic data set of `length` bytes (its content does not matter here).
pub fn data_set(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i % 251) as u8).collect()
}

pub fn store_rq(message_id: u16) -> Command {
    Command::CStoreRq(CStoreRq {
        message_id,
        priority: Priority::Medium,
        affected_sop_class_uid: CT.into(),
        affected_sop_instance_uid: format!("1.2.826.0.1.3680043.10.1234.{message_id}"),
        move_originator: None,
    })
}

pub fn store_rsp(message_id: u16, status: Status) -> Command {
    Command::CStoreRsp(CStoreRsp {
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(CT.into()),
        affected_sop_instance_uid: None,
        status,
        detail: StatusDetail::default(),
    })
}

pub fn find_rq(message_id: u16) -> Command {
    Command::CFindRq(CFindRq {
        message_id,
        priority: Priority::Medium,
        affected_sop_class_uid: uid::STUDY_ROOT_QR_FIND.into(),
    })
}

pub fn find_rsp(message_id: u16, status: Status, identifier: bool) -> Command {
    Command::CFindRsp(CFindRsp {
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(uid::STUDY_ROOT_QR_FIND.into()),
        status,
        data_set: identifier,
        detail: StatusDetail::default(),
    })
}
