//! `association`: the acceptor side of an association, as the server runs
//! it. The first input byte picks the acceptor policy and the timers that
//! expire at the end (bits below); the rest is what the peer sends, decoded
//! by the stream decoder in input-derived cuts and handed to the PS3.8 state
//! machine. A-ASSOCIATE indications are answered through
//! [`negotiate`] under the policy, A-RELEASE indications at once.
//!
//! Must hold: no peer input (PDU, P-DATA, invalid PDU, transport close,
//! expired timer) is refused by the machine with an error; every PDU it asks
//! to send decodes; an accepted association agrees only contexts the peer
//! proposed, with a transfer syntax the peer proposed and the policy
//! accepts; P-DATA is delivered only on an accepted association; once the
//! transport closes the machine is idle.

use std::collections::VecDeque;
use std::sync::OnceLock;

use sluice_net::assoc::{
    negotiate, AcceptedAbstractSyntax, AcceptorPolicy, Action, AeTitleFilter, Association,
    AssociationLoad, Indication, Input, InvalidPdu, NegotiationOutcome, Role, TransferSyntaxChoice,
};
use sluice_net::pdata::{StreamDecoder, StreamEvent};
use sluice_net::pdu::{decode_pdu, AssociateRq, AsynchronousOperationsWindow, DecodeLimits};
use sluice_net::uid;

use crate::cuts::Cuts;

/// Bit 0: serve only the called AE titles `SLUICE`, `STORESCP`, `ANY-SCP`.
const ONLY_CALLED_AE_TITLES: u8 = 0x01;
/// Bit 1: accept any abstract syntax (with every catalogued transfer syntax).
const ANY_ABSTRACT_SYNTAX: u8 = 0x02;
/// Bit 2: ignore role selection.
const NO_ROLE_SELECTION: u8 = 0x04;
/// Bit 3: our transfer-syntax order wins, and an asynchronous window is offered.
const ACCEPTOR_CHOICE_AND_WINDOW: u8 = 0x08;
/// Bit 4: the association limit is reached.
const AT_ASSOCIATION_LIMIT: u8 = 0x10;
/// Bit 5: the ARTIM timer, if running, expires after the input.
const ARTIM_EXPIRES: u8 = 0x20;
/// Bit 6: the idle timer, if running, expires after the input.
const IDLE_EXPIRES: u8 = 0x40;
const POLICY_BITS: u8 = 0x0F;

fn build_policy(bits: u8) -> AcceptorPolicy {
    let called = if bits & ONLY_CALLED_AE_TITLES != 0 {
        AeTitleFilter::Only(vec!["SLUICE".into(), "STORESCP".into(), "ANY-SCP".into()])
    } else {
        AeTitleFilter::Any
    };
    let mut policy = AcceptorPolicy::new(called, "1.2.826.0.1.3680043.10.1");
    let every_syntax: Vec<String> = uid::transfer_syntaxes()
        .iter()
        .map(|syntax| syntax.uid.to_owned())
        .collect();
    let little_endian = [
        uid::ts::IMPLICIT_VR_LITTLE_ENDIAN,
        uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ];
    policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(
        uid::VERIFICATION,
        little_endian,
    ));
    policy.abstract_syntaxes.push(
        AcceptedAbstractSyntax::new(uid::STORAGE_COMMITMENT_PUSH_MODEL, little_endian)
            .with_requestor_scp_role(),
    );
    for class in uid::SEED_STORAGE_SOP_CLASSES {
        policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(
            *class,
            every_syntax.iter().cloned(),
        ));
    }
    if bits & ANY_ABSTRACT_SYNTAX != 0 {
        policy.any_abstract_syntax_transfer_syntaxes = Some(every_syntax);
    }
    policy.role_selection = bits & NO_ROLE_SELECTION == 0;
    if bits & ACCEPTOR_CHOICE_AND_WINDOW != 0 {
        policy.transfer_syntax_choice = TransferSyntaxChoice::Acceptor;
        policy.asynchronous_operations_window = Some(AsynchronousOperationsWindow {
            operations_invoked_max: 4,
            operations_performed_max: 4,
        });
    }
    policy
}

/// The policies, built once per process (building one per run would cost
/// more than the run).
fn policy(bits: u8) -> &'static AcceptorPolicy {
    static POLICIES: OnceLock<Vec<AcceptorPolicy>> = OnceLock::new();
    let policies = POLICIES.get_or_init(|| (0..=POLICY_BITS).map(build_policy).collect());
    policies
        .get(usize::from(bits & POLICY_BITS))
        .expect("one policy per combination of bits")
}

fn assert_negotiation_sound(
    policy: &AcceptorPolicy,
    rq: &AssociateRq,
    outcome: &NegotiationOutcome,
) {
    let NegotiationOutcome::Accept { negotiated, .. } = outcome else {
        return;
    };
    assert!(
        policy.called_ae_titles.allows(&rq.called_ae_title),
        "accepted a called AE title the policy does not serve"
    );
    let mut previous_id = None;
    for context in &negotiated.presentation_contexts {
        assert!(
            previous_id < Some(context.id),
            "context IDs not ascending and unique"
        );
        previous_id = Some(context.id);
        let proposed = rq
            .presentation_contexts
            .iter()
            .find(|proposed| proposed.id == context.id)
            .expect("accepted a context ID that was not proposed");
        assert_eq!(proposed.abstract_syntax, context.abstract_syntax);
        assert!(
            proposed
                .transfer_syntaxes
                .contains(&context.transfer_syntax),
            "accepted a transfer syntax that was not proposed"
        );
        let accepted = policy
            .abstract_syntaxes
            .iter()
            .find(|accepted| accepted.abstract_syntax == context.abstract_syntax)
            .map(|accepted| &accepted.transfer_syntaxes)
            .or(policy.any_abstract_syntax_transfer_syntaxes.as_ref())
            .expect("accepted an abstract syntax the policy does not");
        assert!(
            accepted.contains(&context.transfer_syntax),
            "accepted a transfer syntax the policy does not"
        );
    }
}

/// The acceptor as the server drives it: the machine plus what the caller
/// keeps (timers, whether P-DATA is to be delivered, the transport).
struct Acceptor {
    association: Association,
    policy: &'static AcceptorPolicy,
    load: AssociationLoad,
    artim_running: bool,
    idle_running: bool,
    transport_open: bool,
    pdata_start_seen: bool,
    pdu_length_max_local: Option<u32>,
}

impl Acceptor {
    /// Hands a peer event to the machine and carries out the actions, answering
    /// indications as the server does.
    fn peer(&mut self, input: Input) {
        let mut queue: VecDeque<Action> = self
            .association
            .handle(input.clone())
            .unwrap_or_else(|error| panic!("peer input {input:?} refused: {error}"))
            .into();
        while let Some(action) = queue.pop_front() {
            let local = match action {
                Action::SendPdu(bytes) => {
                    let decoded = decode_pdu(&bytes, &DecodeLimits::default())
                        .expect("a PDU we send must decode")
                        .expect("a PDU we send is whole");
                    assert_eq!(decoded.1, bytes.len(), "a PDU we send has trailing bytes");
                    None
                }
                Action::Indication(Indication::AssociateRequest(rq)) => {
                    let outcome = negotiate(self.policy, &rq, self.load);
                    assert_negotiation_sound(self.policy, &rq, &outcome);
                    if let NegotiationOutcome::Accept { negotiated, .. } = &outcome {
                        self.pdu_length_max_local = Some(negotiated.pdu_length_max_local);
                    }
                    Some(Input::AssociateResponse(outcome.into()))
                }
                Action::Indication(Indication::ReleaseRequest | Indication::ReleaseCollision) => {
                    Some(Input::ReleaseResponse)
                }
                Action::Indication(Indication::PData) => {
                    assert!(self.pdata_start_seen, "P-DATA indication without P-DATA");
                    assert!(
                        self.association.negotiated().is_some(),
                        "P-DATA delivered on an association never accepted"
                    );
                    None
                }
                Action::Indication(
                    Indication::AssociateAccepted(_)
                    | Indication::AssociateRejected(_)
                    | Indication::ReleaseConfirm,
                ) => panic!("a requestor indication on the acceptor"),
                Action::Indication(Indication::Aborted(_)) => None,
                Action::ConnectTransport => panic!("the acceptor opened a transport"),
                Action::StartArtimTimer => {
                    self.artim_running = true;
                    None
                }
                Action::StopArtimTimer => {
                    self.artim_running = false;
                    None
                }
                Action::StartIdleTimer => {
                    self.idle_running = true;
                    None
                }
                Action::StopIdleTimer => {
                    self.idle_running = false;
                    None
                }
                Action::CloseTransport => {
                    self.transport_open = false;
                    None
                }
            };
            if let Some(local) = local {
                let actions = self
                    .association
                    .handle(local.clone())
                    .unwrap_or_else(|error| panic!("our answer {local:?} refused: {error}"));
                queue.extend(actions);
            }
        }
    }

    /// The transport closes (the peer's or ours); the machine must be idle after.
    fn close(&mut self) {
        self.peer(Input::TransportClosed);
        assert!(
            self.association.is_closed(),
            "not idle after the transport closed"
        );
        assert!(
            !self.artim_running && !self.idle_running,
            "a timer outlived the transport"
        );
    }
}

pub(crate) fn run(input: &[u8]) {
    let Some((bits, stream)) = input.split_first() else {
        return;
    };
    let mut acceptor = Acceptor {
        association: Association::new(Role::Acceptor),
        policy: policy(*bits),
        load: if bits & AT_ASSOCIATION_LIMIT != 0 {
            AssociationLoad {
                current: 8,
                limit: 8,
            }
        } else {
            AssociationLoad {
                current: 0,
                limit: 8,
            }
        },
        artim_running: false,
        idle_running: false,
        transport_open: true,
        pdata_start_seen: false,
        pdu_length_max_local: None,
    };
    acceptor.peer(Input::TransportConnectIndication);
    let mut decoder = StreamDecoder::new(DecodeLimits::default());
    'pieces: for piece in Cuts::for_input(input).split(stream) {
        let mut rest = piece;
        while acceptor.transport_open {
            if let Some(length) = acceptor.pdu_length_max_local.take() {
                decoder.set_pdata_length_max(length);
            }
            let step = match decoder.next_event(rest) {
                Ok(step) => step,
                Err(error) => {
                    let invalid = InvalidPdu::new(decoder.failed_pdu_type(), &error);
                    acceptor.peer(Input::InvalidPdu(invalid));
                    break 'pieces;
                }
            };
            rest = rest.get(step.consumed..).unwrap_or_default();
            match step.event {
                None => break,
                Some(StreamEvent::Control(pdu)) => {
                    acceptor.pdata_start_seen = false;
                    acceptor.peer(Input::PduReceived(pdu));
                }
                Some(StreamEvent::PDataStart { .. }) => {
                    acceptor.pdata_start_seen = true;
                    acceptor.peer(Input::PDataReceived);
                }
                Some(StreamEvent::PdvFragment(_)) => {}
            }
        }
        if !acceptor.transport_open {
            break;
        }
    }
    // A timer that expires is no longer running (the machine may start it
    // again).
    if acceptor.transport_open && acceptor.artim_running && bits & ARTIM_EXPIRES != 0 {
        acceptor.artim_running = false;
        acceptor.peer(Input::ArtimExpired);
    }
    if acceptor.transport_open && acceptor.idle_running && bits & IDLE_EXPIRES != 0 {
        acceptor.idle_running = false;
        acceptor.peer(Input::IdleExpired);
    }
    acceptor.close();
}
