//! The PS3.8 §9.2 state machine, requestor and acceptor wired together
//! through the real encoders and the streaming decoder.

use sluice_net::assoc::*;
use sluice_net::pdata::{encode_message, StreamDecoder, StreamEvent};
use sluice_net::pdu::*;

const ECHO: &str = "1.2.840.10008.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const IMPLICIT: &str = "1.2.840.10008.1.2";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";

pub fn policy() -> AcceptorPolicy {
    let mut policy = AcceptorPolicy::new(
        AeTitleFilter::Only(vec!["SLUICE".into()]),
        "1.2.826.0.1.3680043.10.1",
    );
    policy
        .abstract_syntaxes
        .push(AcceptedAbstractSyntax::new(ECHO, [IMPLICIT]));
    policy
        .abstract_syntaxes
        .push(AcceptedAbstractSyntax::new(CT, [EXPLICIT, IMPLICIT]));
    policy.implementation_version_name = Some("SLUICE_010".into());
    // These tests pin our own order; the requestor-order default has its own test.
    policy.transfer_syntax_choice = TransferSyntaxChoice::Acceptor;
    policy
}

pub fn proposal(called: &str) -> AssociationProposal {
    AssociationProposal {
        calling_ae_title: "STORESCU".into(),
        called_ae_title: called.into(),
        presentation_contexts: vec![
            ProposedPresentationContext {
                abstract_syntax: ECHO.into(),
                transfer_syntaxes: vec![IMPLICIT.into()],
                roles: None,
            },
            ProposedPresentationContext {
                abstract_syntax: CT.into(),
                transfer_syntaxes: vec![IMPLICIT.into(), EXPLICIT.into()],
                roles: None,
            },
        ],
        pdu_length_max_receive: 32_768,
        implementation_class_uid: "1.2.3.4".into(),
        implementation_version_name: Some("TEST".into()),
        asynchronous_operations_window: None,
        user_identity: None,
    }
}

/// One side: its machine, its decoder, and what its user saw.
struct Side {
    machine: Association,
    decoder: StreamDecoder,
    indications: Vec<Indication>,
    pdv_bytes: Vec<u8>,
    closed_transport: bool,
    deliver_pdata: bool,
}

impl Side {
    fn new(role: Role) -> Self {
        Side {
            machine: Association::new(role),
            decoder: StreamDecoder::new(DecodeLimits::default()),
            indications: Vec::new(),
            pdv_bytes: Vec::new(),
            closed_transport: false,
            deliver_pdata: false,
        }
    }

    /// Carries out actions; returns the bytes to send to the peer.
    fn run(&mut self, actions: Vec<Action>) -> Vec<u8> {
        let mut outgoing = Vec::new();
        for action in actions {
            match action {
                Action::SendPdu(bytes) => outgoing.extend(bytes),
                Action::Indication(indication) => {
                    if indication == Indication::PData {
                        self.deliver_pdata = true;
                    }
                    if let Indication::AssociateAccepted(negotiated) = &indication {
                        self.decoder
                            .set_pdata_length_max(negotiated.pdu_length_max_local);
                    }
                    self.indications.push(indication);
                }
                Action::CloseTransport => self.closed_transport = true,
                _ => {}
            }
        }
        outgoing
    }

    fn handle(&mut self, input: Input) -> Vec<u8> {
        let actions = self.machine.handle(input).unwrap();
        self.run(actions)
    }

    /// Feeds bytes from the peer through the decoder and the machine.
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut outgoing = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let step = self.decoder.next_event(&bytes[offset..]).unwrap();
            offset += step.consumed;
            let Some(event) = step.event else { break };
            let input = match event {
                StreamEvent::Control(pdu) => Input::PduReceived(pdu),
                StreamEvent::PDataStart { .. } => {
                    self.deliver_pdata = false;
                    Input::PDataReceived
                }
                StreamEvent::PdvFragment(fragment) => {
                    if self.deliver_pdata {
                        self.pdv_bytes.extend_from_slice(fragment.bytes);
                    }
                    continue;
                }
            };
            let actions = self.machine.handle(input).unwrap();
            outgoing.extend(self.run(actions));
        }
        outgoing
    }

    fn last(&self) -> &Indication {
        self.indications.last().expect("an indication")
    }
}

/// Requestor and acceptor through association establishment.
fn establish(policy: &AcceptorPolicy, called: &str) -> (Side, Side) {
    let mut requestor = Side::new(Role::Requestor);
    let mut acceptor = Side::new(Role::Acceptor);
    let rq = proposal(called).to_associate_rq().unwrap();
    let actions = requestor
        .machine
        .handle(Input::AssociateRequest(Box::new(rq)))
        .unwrap();
    assert_eq!(actions, [Action::ConnectTransport]);
    assert_eq!(requestor.machine.state(), State::Sta4AwaitingTransportOpen);
    assert_eq!(
        acceptor
            .machine
            .handle(Input::TransportConnectIndication)
            .unwrap(),
        [Action::StartArtimTimer]
    );
    let rq_bytes = requestor.handle(Input::TransportConnectConfirm);
    assert_eq!(
        requestor.machine.state(),
        State::Sta5AwaitingAssociateAcOrRj
    );
    assert!(acceptor.receive(&rq_bytes).is_empty());
    assert_eq!(
        acceptor.machine.state(),
        State::Sta3AwaitingLocalAssociateResponse
    );
    let Indication::AssociateRequest(rq) = acceptor.last().clone() else {
        panic!("{:?}", acceptor.indications)
    };
    let outcome = negotiate(
        policy,
        &rq,
        AssociationLoad {
            current: 3,
            limit: 10,
        },
    );
    if let NegotiationOutcome::Accept { negotiated, .. } = &outcome {
        acceptor
            .decoder
            .set_pdata_length_max(negotiated.pdu_length_max_local);
    }
    let answer = acceptor.handle(Input::AssociateResponse(outcome.into()));
    assert!(requestor.receive(&answer).is_empty());
    (requestor, acceptor)
}

#[test]
fn accept_then_pdata_then_release() {
    let (mut requestor, mut acceptor) = establish(&policy(), "SLUICE");
    assert_eq!(requestor.machine.state(), State::Sta6Established);
    assert_eq!(acceptor.machine.state(), State::Sta6Established);
    let Indication::AssociateAccepted(negotiated) = requestor.last().clone() else {
        panic!()
    };
    // Both sides agree on contexts, syntaxes and lengths.
    assert_eq!(
        negotiated.presentation_contexts,
        acceptor.machine.negotiated().unwrap().presentation_contexts
    );
    assert_eq!(
        negotiated.presentation_context(3).unwrap().transfer_syntax,
        EXPLICIT
    );
    assert_eq!(
        negotiated.pdu_length_max_peer,
        policy().pdu_length_max_receive
    );
    assert_eq!(
        acceptor.machine.negotiated().unwrap().pdu_length_max_peer,
        32_768
    );
    assert_eq!(
        negotiated.peer_implementation_version_name.as_deref(),
        Some("SLUICE_010")
    );

    // P-DATA: permitted, written by the caller, delivered on the other side.
    assert!(requestor.machine.may_send_pdata());
    assert_eq!(requestor.machine.handle(Input::PDataRequest).unwrap(), []);
    let mut bytes = Vec::new();
    let message: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    encode_message(
        3,
        false,
        &message,
        negotiated.pdu_length_max_peer,
        &mut bytes,
    )
    .unwrap();
    assert!(acceptor.receive(&bytes).is_empty());
    assert_eq!(acceptor.pdv_bytes, message);
    assert_eq!(
        acceptor
            .indications
            .iter()
            .filter(|i| **i == Indication::PData)
            .count(),
        4
    );

    // Release.
    let release_rq = requestor.handle(Input::ReleaseRequest);
    assert_eq!(requestor.machine.state(), State::Sta7AwaitingReleaseRp);
    assert!(acceptor.receive(&release_rq).is_empty());
    assert_eq!(acceptor.last(), &Indication::ReleaseRequest);
    assert_eq!(
        acceptor.machine.state(),
        State::Sta8AwaitingLocalReleaseResponse
    );
    // AR-7: the acceptor may still send P-DATA before answering.
    assert_eq!(acceptor.machine.handle(Input::PDataRequest).unwrap(), []);
    let actions = acceptor.machine.handle(Input::ReleaseResponse).unwrap();
    assert_eq!(
        actions[0],
        Action::SendPdu(Pdu::ReleaseRp.to_bytes().unwrap())
    );
    assert!(actions.contains(&Action::StartArtimTimer) && actions.contains(&Action::StopIdleTimer));
    assert_eq!(acceptor.machine.state(), State::Sta13AwaitingTransportClose);
    assert!(requestor
        .receive(&Pdu::ReleaseRp.to_bytes().unwrap())
        .is_empty());
    assert_eq!(requestor.last(), &Indication::ReleaseConfirm);
    assert!(requestor.closed_transport);
    assert_eq!(requestor.machine.state(), State::Sta1Idle);
    // The requestor closed: AR-5 on the acceptor.
    assert_eq!(
        acceptor.machine.handle(Input::TransportClosed).unwrap(),
        [Action::StopArtimTimer]
    );
    assert_eq!(acceptor.machine.state(), State::Sta1Idle);
}

#[test]
fn reject_closes_both_sides() {
    let (requestor, mut acceptor) = establish(&policy(), "SOMEONE-ELSE");
    let Indication::AssociateRejected(rj) = requestor.last() else {
        panic!("{:?}", requestor.indications)
    };
    assert_eq!(rj.codes(), (1, 1, 7));
    assert!(requestor.closed_transport);
    assert_eq!(requestor.machine.state(), State::Sta1Idle);
    assert_eq!(acceptor.machine.state(), State::Sta13AwaitingTransportClose);
    // The peer never closes: ARTIM expiry closes (AA-2).
    assert_eq!(
        acceptor.machine.handle(Input::ArtimExpired).unwrap(),
        [Action::StopArtimTimer, Action::CloseTransport]
    );
    assert_eq!(acceptor.machine.state(), State::Sta1Idle);
}

#[test]
fn release_collision_resolves_on_both_sides() {
    let (mut requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let from_requestor = requestor.handle(Input::ReleaseRequest);
    let from_acceptor = acceptor.handle(Input::ReleaseRequest);
    assert_eq!(requestor.machine.state(), State::Sta7AwaitingReleaseRp);
    assert_eq!(acceptor.machine.state(), State::Sta7AwaitingReleaseRp);
    // The requests cross (AR-8).
    assert!(requestor.receive(&from_acceptor).is_empty());
    assert!(acceptor.receive(&from_requestor).is_empty());
    assert_eq!(requestor.last(), &Indication::ReleaseCollision);
    assert_eq!(acceptor.last(), &Indication::ReleaseCollision);
    assert_eq!(
        requestor.machine.state(),
        State::Sta9CollisionRequestorAwaitingLocalResponse
    );
    assert_eq!(
        acceptor.machine.state(),
        State::Sta10CollisionAcceptorAwaitingReleaseRp
    );
    // The acceptor may not answer yet: it waits for the requestor's RP.
    assert!(matches!(
        acceptor.machine.handle(Input::ReleaseResponse),
        Err(AssocError::NotAllowed { .. })
    ));
    // AR-9: the requestor answers first.
    let rp = requestor.handle(Input::ReleaseResponse);
    assert_eq!(rp, Pdu::ReleaseRp.to_bytes().unwrap());
    assert_eq!(
        requestor.machine.state(),
        State::Sta11CollisionRequestorAwaitingReleaseRp
    );
    // AR-10 on the acceptor, then AR-4.
    assert!(acceptor.receive(&rp).is_empty());
    assert_eq!(acceptor.last(), &Indication::ReleaseConfirm);
    assert_eq!(
        acceptor.machine.state(),
        State::Sta12CollisionAcceptorAwaitingLocalResponse
    );
    let rp = acceptor.handle(Input::ReleaseResponse);
    assert_eq!(acceptor.machine.state(), State::Sta13AwaitingTransportClose);
    // AR-3 on the requestor: confirmed and closed.
    assert!(requestor.receive(&rp).is_empty());
    assert_eq!(requestor.last(), &Indication::ReleaseConfirm);
    assert!(requestor.closed_transport);
    assert_eq!(requestor.machine.state(), State::Sta1Idle);
}

#[test]
fn user_abort_reaches_the_peer() {
    let (mut requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let actions = requestor.machine.handle(Input::AbortRequest).unwrap();
    let abort = Pdu::Abort(Abort {
        source: AbortSource::ServiceUser,
        reason: AbortReason::NotSpecified,
    })
    .to_bytes()
    .unwrap();
    assert_eq!(
        actions,
        [
            Action::SendPdu(abort.clone()),
            Action::StopIdleTimer,
            Action::StartArtimTimer
        ]
    );
    assert_eq!(
        requestor.machine.state(),
        State::Sta13AwaitingTransportClose
    );
    assert!(acceptor.receive(&abort).is_empty());
    assert_eq!(
        acceptor.last(),
        &Indication::Aborted(AbortCause::PeerServiceUser {
            reason: AbortReason::NotSpecified
        })
    );
    assert!(acceptor.closed_transport);
    assert_eq!(acceptor.machine.state(), State::Sta1Idle);
    // AR-5: the requestor sees the close.
    assert_eq!(
        requestor.machine.handle(Input::TransportClosed).unwrap(),
        [Action::StopArtimTimer]
    );
}

#[test]
fn provider_abort_from_the_peer_is_an_a_p_abort() {
    let (_requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let abort = Pdu::Abort(Abort {
        source: AbortSource::ServiceProvider,
        reason: AbortReason::InvalidPduParameterValue,
    });
    let actions = acceptor.machine.handle(Input::PduReceived(abort)).unwrap();
    assert!(actions.contains(&Action::Indication(Indication::Aborted(
        AbortCause::PeerServiceProvider {
            reason: AbortReason::InvalidPduParameterValue
        }
    ))));
    assert!(actions.contains(&Action::CloseTransport));
}

#[test]
fn idle_expiry_aborts_as_the_provider() {
    let (_requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let actions = acceptor.machine.handle(Input::IdleExpired).unwrap();
    let abort = Pdu::Abort(Abort {
        source: AbortSource::ServiceProvider,
        reason: AbortReason::NotSpecified,
    })
    .to_bytes()
    .unwrap();
    assert_eq!(
        actions,
        [
            Action::SendPdu(abort),
            Action::Indication(Indication::Aborted(AbortCause::IdleTimeout)),
            Action::StartArtimTimer
        ]
    );
    assert_eq!(acceptor.machine.state(), State::Sta13AwaitingTransportClose);
    // ARTIM then closes (AA-2); a stale idle expiry is ignored.
    assert_eq!(acceptor.machine.handle(Input::IdleExpired).unwrap(), []);
    assert_eq!(
        acceptor.machine.handle(Input::ArtimExpired).unwrap(),
        [Action::StopArtimTimer, Action::CloseTransport]
    );
}

#[test]
fn received_pdus_restart_the_idle_timer() {
    let (_requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let actions = acceptor.machine.handle(Input::PDataReceived).unwrap();
    assert_eq!(
        actions,
        [
            Action::StartIdleTimer,
            Action::Indication(Indication::PData)
        ]
    );
}

#[test]
fn artim_expiry_before_a_request_closes() {
    let mut acceptor = Association::new(Role::Acceptor);
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    assert_eq!(
        acceptor.handle(Input::ArtimExpired).unwrap(),
        [Action::StopArtimTimer, Action::CloseTransport]
    );
    assert_eq!(acceptor.state(), State::Sta1Idle);
}

#[test]
fn pdata_before_association_aborts() {
    // Sta2: AA-1.
    let mut acceptor = Association::new(Role::Acceptor);
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    let actions = acceptor.handle(Input::PDataReceived).unwrap();
    assert!(
        matches!(&actions[..], [Action::StopArtimTimer, Action::SendPdu(bytes), Action::StartArtimTimer, Action::Indication(Indication::Aborted(AbortCause::PDataBeforeAssociation { state: State::Sta2AwaitingAssociateRq }))] if bytes[0] == 7)
    );
    assert_eq!(acceptor.state(), State::Sta13AwaitingTransportClose);
    // Sta13: further P-DATA is ignored (AA-6).
    assert_eq!(acceptor.handle(Input::PDataReceived).unwrap(), []);

    // Sta3: AA-8 (service-provider, unexpected PDU).
    let mut acceptor = Association::new(Role::Acceptor);
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    acceptor
        .handle(Input::PduReceived(Pdu::AssociateRq(Box::new(rq))))
        .unwrap();
    let actions = acceptor.handle(Input::PDataReceived).unwrap();
    let abort = Pdu::Abort(Abort {
        source: AbortSource::ServiceProvider,
        reason: AbortReason::UnexpectedPdu,
    })
    .to_bytes()
    .unwrap();
    assert_eq!(actions[0], Action::SendPdu(abort));
    assert!(actions.contains(&Action::Indication(Indication::Aborted(
        AbortCause::PDataBeforeAssociation {
            state: State::Sta3AwaitingLocalAssociateResponse
        }
    ))));

    // Local P-DATA request before establishment is an error.
    let mut requestor = Association::new(Role::Requestor);
    assert_eq!(
        requestor.handle(Input::PDataRequest),
        Err(AssocError::PDataBeforeEstablished {
            state: State::Sta1Idle
        })
    );
}

#[test]
fn unexpected_pdu_in_sta6_is_aa8() {
    let (_requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    let actions = acceptor
        .machine
        .handle(Input::PduReceived(Pdu::AssociateRq(Box::new(rq))))
        .unwrap();
    let abort = Pdu::Abort(Abort {
        source: AbortSource::ServiceProvider,
        reason: AbortReason::UnexpectedPdu,
    })
    .to_bytes()
    .unwrap();
    assert_eq!(actions[1], Action::SendPdu(abort));
    assert!(actions.contains(&Action::Indication(Indication::Aborted(
        AbortCause::UnexpectedPdu {
            pdu_type: PduType::AssociateRq,
            state: State::Sta6Established
        }
    ))));
    assert_eq!(acceptor.machine.state(), State::Sta13AwaitingTransportClose);
    // AA-7 in Sta13 for another RQ: A-ABORT again, still Sta13.
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    let actions = acceptor
        .machine
        .handle(Input::PduReceived(Pdu::AssociateRq(Box::new(rq))))
        .unwrap();
    assert!(matches!(&actions[..], [Action::SendPdu(bytes)] if bytes[0] == 7));
    assert_eq!(acceptor.machine.state(), State::Sta13AwaitingTransportClose);
}

#[test]
fn invalid_pdu_in_sta6_is_aa8_with_its_reason() {
    let (_requestor, mut acceptor) = establish(&policy(), "SLUICE");
    let error = DecodeError::UnknownPduType { pdu_type: 0x42 };
    let invalid = InvalidPdu::new(None, &error);
    assert_eq!(invalid.reason, AbortReason::UnrecognizedPdu);
    let actions = acceptor.machine.handle(Input::InvalidPdu(invalid)).unwrap();
    let abort = Pdu::Abort(Abort {
        source: AbortSource::ServiceProvider,
        reason: AbortReason::UnrecognizedPdu,
    })
    .to_bytes()
    .unwrap();
    assert_eq!(actions[0], Action::SendPdu(abort));
    assert!(actions.contains(&Action::Indication(Indication::Aborted(
        AbortCause::InvalidPdu(invalid)
    ))));
}

#[test]
fn unparseable_associate_rq_gets_rj_1_2_1() {
    let mut acceptor = Association::new(Role::Acceptor);
    let mut decoder = StreamDecoder::new(DecodeLimits::default());
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    // An A-ASSOCIATE-RQ with a control character in its called AE title.
    let mut bytes = proposal("SLUICE")
        .to_associate_rq()
        .map(|rq| Pdu::AssociateRq(Box::new(rq)))
        .unwrap()
        .to_bytes()
        .unwrap();
    bytes[12] = 0x01;
    let error = decoder.feed(&bytes).find_map(Result::err).unwrap();
    assert!(matches!(error, DecodeError::BadAeTitle { .. }));
    let invalid = InvalidPdu::new(decoder.failed_pdu_type(), &error);
    let actions = acceptor.handle(Input::InvalidPdu(invalid)).unwrap();
    let rj = AssociateRj {
        result: RejectResult::Permanent,
        reason: RejectReason::ServiceProviderAcseNoReasonGiven,
    };
    assert_eq!(actions[0], Action::StopArtimTimer);
    assert_eq!(
        actions[1],
        Action::SendPdu(Pdu::AssociateRj(rj).to_bytes().unwrap())
    );
    assert_eq!(rj.codes(), (1, 2, 1));
    assert_eq!(acceptor.state(), State::Sta13AwaitingTransportClose);

    // An RQ over the size cap is known to be an RQ from its header: RJ too.
    let mut acceptor = Association::new(Role::Acceptor);
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    let mut decoder = StreamDecoder::new(DecodeLimits {
        associate_length_max: 100,
        ..DecodeLimits::default()
    });
    let error = decoder.next_event(&bytes[..6]).unwrap_err();
    let actions = acceptor
        .handle(Input::InvalidPdu(InvalidPdu::new(
            decoder.failed_pdu_type(),
            &error,
        )))
        .unwrap();
    assert_eq!(
        actions[1],
        Action::SendPdu(Pdu::AssociateRj(rj).to_bytes().unwrap())
    );

    // Bytes that are no PDU at all: no RJ can be formed, A-ABORT (AA-1).
    let mut acceptor = Association::new(Role::Acceptor);
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    let invalid = InvalidPdu::new(None, &DecodeError::UnknownPduType { pdu_type: 0x16 });
    let actions = acceptor.handle(Input::InvalidPdu(invalid)).unwrap();
    assert!(matches!(&actions[1], Action::SendPdu(bytes) if bytes[0] == 7));
}

#[test]
fn unsupported_protocol_version_gets_rj_1_2_2() {
    let mut acceptor = Association::new(Role::Acceptor);
    acceptor.handle(Input::TransportConnectIndication).unwrap();
    let mut rq = proposal("SLUICE").to_associate_rq().unwrap();
    rq.protocol_version = 2;
    let actions = acceptor
        .handle(Input::PduReceived(Pdu::AssociateRq(Box::new(rq))))
        .unwrap();
    let rj = AssociateRj {
        result: RejectResult::Permanent,
        reason: RejectReason::ProtocolVersionNotSupported,
    };
    assert_eq!(rj.codes(), (1, 2, 2));
    assert_eq!(
        actions,
        [
            Action::StopArtimTimer,
            Action::SendPdu(Pdu::AssociateRj(rj).to_bytes().unwrap()),
            Action::StartArtimTimer
        ]
    );
}

#[test]
fn requestor_aborts_an_ac_that_contradicts_its_rq() {
    let mut requestor = Association::new(Role::Requestor);
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    requestor
        .handle(Input::AssociateRequest(Box::new(rq.clone())))
        .unwrap();
    requestor.handle(Input::TransportConnectConfirm).unwrap();
    let NegotiationOutcome::Accept { mut ac, .. } =
        negotiate(&policy(), &rq, AssociationLoad::UNLIMITED)
    else {
        panic!()
    };
    ac.presentation_contexts[0].id = 99;
    let actions = requestor
        .handle(Input::PduReceived(Pdu::AssociateAc(ac)))
        .unwrap();
    assert!(actions.contains(&Action::Indication(Indication::Aborted(
        AbortCause::InvalidAssociateAc(NegotiationError::UnknownPresentationContextId { id: 99 })
    ))));
    assert_eq!(requestor.state(), State::Sta13AwaitingTransportClose);
}

#[test]
fn requestor_transport_failure_and_abort_while_connecting() {
    let mut requestor = Association::new(Role::Requestor);
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    requestor
        .handle(Input::AssociateRequest(Box::new(rq)))
        .unwrap();
    // AA-2 in Sta4.
    assert_eq!(
        requestor.handle(Input::AbortRequest).unwrap(),
        [Action::CloseTransport]
    );
    assert_eq!(requestor.state(), State::Sta1Idle);
    // Waiting for the AC, the idle timer guards; the transport drops (AA-4).
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    requestor
        .handle(Input::AssociateRequest(Box::new(rq)))
        .unwrap();
    let actions = requestor.handle(Input::TransportConnectConfirm).unwrap();
    assert_eq!(actions[1], Action::StartIdleTimer);
    assert_eq!(
        requestor.handle(Input::TransportClosed).unwrap(),
        [
            Action::StopIdleTimer,
            Action::Indication(Indication::Aborted(AbortCause::TransportClosed))
        ]
    );
}

#[test]
fn local_requests_out_of_state_are_errors_and_change_nothing() {
    let mut acceptor = Association::new(Role::Acceptor);
    assert!(matches!(
        acceptor.handle(Input::ReleaseRequest),
        Err(AssocError::NotAllowed {
            state: State::Sta1Idle,
            ..
        })
    ));
    assert!(matches!(
        acceptor.handle(Input::TransportConnectConfirm),
        Err(AssocError::WrongRole { .. })
    ));
    let rq = proposal("SLUICE").to_associate_rq().unwrap();
    assert!(matches!(
        acceptor.handle(Input::AssociateRequest(Box::new(rq))),
        Err(AssocError::WrongRole { .. })
    ));
    assert_eq!(acceptor.state(), State::Sta1Idle);
    // A bad AE title in the RQ fails before connecting.
    let mut requestor = Association::new(Role::Requestor);
    let mut rq = proposal("SLUICE").to_associate_rq().unwrap();
    rq.calling_ae_title = String::new();
    assert!(matches!(
        requestor.handle(Input::AssociateRequest(Box::new(rq))),
        Err(AssocError::Encode(_))
    ));
    assert_eq!(requestor.state(), State::Sta1Idle);
}
