//! The PS3.8 §9.2 upper-layer state machine (Table 9-10): states Sta1-Sta13,
//! events Evt1-Evt19, actions AE-1..8, DT-1..2, AR-1..10, AA-1..8.
//!
//! Each `handle` call is one event; the returned actions are the table's
//! action for (state, event), translated into things the caller does.
//! Deviations, each on purpose:
//! - An A-ASSOCIATE-RQ that arrives but cannot be parsed is answered with
//!   A-ASSOCIATE-RJ 1/2/1 (requirements §1) instead of the table's AA-1;
//!   A-ABORT remains for bytes that are not recognisably an A-ASSOCIATE-RQ.
//! - An idle timer (not in PS3.8) runs while an association exists or is
//!   being requested (Sta5-Sta12) and restarts on every PDU received; on
//!   expiry we abort as the service provider (AA-8 shape), as requirements
//!   §2 asks for a timeout waiting for a PDU.
//! - An A-ASSOCIATE-AC that contradicts our request (unknown context ID,
//!   transfer syntax not proposed) is an invalid PDU (AA-8).
//! - Local requests the table does not allow in the current state return
//!   [`AssocError`] and change nothing: they are bugs in the caller, not
//!   peer behaviour.

use super::negotiate::{
    interpret_associate_ac, reject_unparseable, NegotiatedAssociation, NegotiationError,
    NegotiationOutcome,
};
use crate::pdu::{
    Abort, AbortReason, AbortSource, AssociateAc, AssociateRj, AssociateRq, DecodeError,
    EncodeError, Pdu, PduType, RejectReason, RejectResult, PROTOCOL_VERSION,
};

/// Which side of the association this machine plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens the transport and sends A-ASSOCIATE-RQ.
    Requestor,
    /// Accepts the transport and answers A-ASSOCIATE-RQ.
    Acceptor,
}

/// The states of PS3.8 Table 9-10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Sta1: idle (no transport).
    Sta1Idle,
    /// Sta2: transport open, awaiting A-ASSOCIATE-RQ (acceptor).
    Sta2AwaitingAssociateRq,
    /// Sta3: awaiting the local A-ASSOCIATE response (acceptor).
    Sta3AwaitingLocalAssociateResponse,
    /// Sta4: awaiting transport connection to open (requestor).
    Sta4AwaitingTransportOpen,
    /// Sta5: awaiting A-ASSOCIATE-AC or -RJ (requestor).
    Sta5AwaitingAssociateAcOrRj,
    /// Sta6: association established, ready for data transfer.
    Sta6Established,
    /// Sta7: awaiting A-RELEASE-RP.
    Sta7AwaitingReleaseRp,
    /// Sta8: awaiting the local A-RELEASE response.
    Sta8AwaitingLocalReleaseResponse,
    /// Sta9: release collision, requestor side, awaiting the local A-RELEASE response.
    Sta9CollisionRequestorAwaitingLocalResponse,
    /// Sta10: release collision, acceptor side, awaiting A-RELEASE-RP.
    Sta10CollisionAcceptorAwaitingReleaseRp,
    /// Sta11: release collision, requestor side, awaiting A-RELEASE-RP.
    Sta11CollisionRequestorAwaitingReleaseRp,
    /// Sta12: release collision, acceptor side, awaiting the local A-RELEASE response.
    Sta12CollisionAcceptorAwaitingLocalResponse,
    /// Sta13: awaiting transport close; the association no longer exists.
    Sta13AwaitingTransportClose,
}

impl State {
    /// The standard's number (1-13).
    pub fn number(self) -> u8 {
        match self {
            State::Sta1Idle => 1,
            State::Sta2AwaitingAssociateRq => 2,
            State::Sta3AwaitingLocalAssociateResponse => 3,
            State::Sta4AwaitingTransportOpen => 4,
            State::Sta5AwaitingAssociateAcOrRj => 5,
            State::Sta6Established => 6,
            State::Sta7AwaitingReleaseRp => 7,
            State::Sta8AwaitingLocalReleaseResponse => 8,
            State::Sta9CollisionRequestorAwaitingLocalResponse => 9,
            State::Sta10CollisionAcceptorAwaitingReleaseRp => 10,
            State::Sta11CollisionRequestorAwaitingReleaseRp => 11,
            State::Sta12CollisionAcceptorAwaitingLocalResponse => 12,
            State::Sta13AwaitingTransportClose => 13,
        }
    }

    /// Sta6-Sta12: the association exists (for data or release).
    fn is_associated(self) -> bool {
        (6..=12).contains(&self.number())
    }
}

/// The local A-ASSOCIATE response (Evt7 accept / Evt8 reject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssociateResponse {
    /// Accept with this AC; `negotiated` is kept by the machine.
    Accept {
        /// The A-ASSOCIATE-AC to send.
        ac: Box<AssociateAc>,
        /// What it agrees.
        negotiated: Box<NegotiatedAssociation>,
    },
    /// Reject with this RJ.
    Reject(AssociateRj),
}

impl From<NegotiationOutcome> for AssociateResponse {
    fn from(outcome: NegotiationOutcome) -> Self {
        match outcome {
            NegotiationOutcome::Accept { ac, negotiated } => {
                AssociateResponse::Accept { ac, negotiated }
            }
            NegotiationOutcome::Reject(rj) => AssociateResponse::Reject(rj),
        }
    }
}

/// A PDU that could not be decoded (Evt19), as the state machine needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidPdu {
    /// The PDU type, when the header was readable.
    pub pdu_type: Option<PduType>,
    /// The A-ABORT reason to send.
    pub reason: AbortReason,
}

impl InvalidPdu {
    /// The invalid-PDU event for `error`. `pdu_type` is the type from the
    /// PDU header when the caller knows it (errors in a PDU body do not carry
    /// it; [`crate::pdata::StreamDecoder::failed_pdu_type`] does); the
    /// error's own type wins when it has one.
    pub fn new(pdu_type: Option<PduType>, error: &DecodeError) -> Self {
        let reason = match error {
            DecodeError::UnknownPduType { .. } => AbortReason::UnrecognizedPdu,
            DecodeError::UnexpectedItem { .. } | DecodeError::DuplicateItem { .. } => {
                AbortReason::UnexpectedPduParameter
            }
            _ => AbortReason::InvalidPduParameterValue,
        };
        InvalidPdu {
            pdu_type: error.pdu_type().or(pdu_type),
            reason,
        }
    }
}

/// One event for the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Evt1, requestor: the local user asks for an association with this RQ.
    AssociateRequest(Box<AssociateRq>),
    /// Evt2, requestor: the transport connection is open.
    TransportConnectConfirm,
    /// Evt5, acceptor: a transport connection was accepted.
    TransportConnectIndication,
    /// Evt7/Evt8, acceptor: the local answer to an A-ASSOCIATE indication.
    AssociateResponse(AssociateResponse),
    /// Evt9: the local user wants to send P-DATA-TF. Answers with no action
    /// when allowed; the caller then writes its own PDUs (zero copy).
    PDataRequest,
    /// Evt11: the local user asks to release.
    ReleaseRequest,
    /// Evt14: the local user answers an A-RELEASE indication (or collision).
    ReleaseResponse,
    /// Evt15: the local user aborts.
    AbortRequest,
    /// Evt3/4/6/10/12/13/16: a PDU was received.
    PduReceived(Pdu),
    /// Evt10 from the streaming decoder's [`crate::pdata::StreamEvent::PDataStart`].
    PDataReceived,
    /// Evt19: bytes that do not decode as a PDU.
    InvalidPdu(InvalidPdu),
    /// Evt17: the transport connection closed.
    TransportClosed,
    /// Evt18: the ARTIM timer expired.
    ArtimExpired,
    /// The idle timer expired (Sluice's, not in PS3.8).
    IdleExpired,
}

/// Why an association ended abnormally (A-ABORT / A-P-ABORT indications).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// The peer's service user sent A-ABORT (A-ABORT indication).
    PeerServiceUser {
        /// The reason byte it sent (not significant for this source).
        reason: AbortReason,
    },
    /// The peer's service provider sent A-ABORT (A-P-ABORT indication).
    PeerServiceProvider {
        /// The reason it gave.
        reason: AbortReason,
    },
    /// The transport closed without release (AA-4).
    TransportClosed,
    /// The peer sent P-DATA-TF before the association was established.
    PDataBeforeAssociation {
        /// The state it arrived in.
        state: State,
    },
    /// A valid PDU that the current state does not allow (AA-8, AA-1, AA-7).
    UnexpectedPdu {
        /// Its type.
        pdu_type: PduType,
        /// The state it arrived in.
        state: State,
    },
    /// Bytes that do not decode as a PDU (Evt19).
    InvalidPdu(InvalidPdu),
    /// The A-ASSOCIATE-AC contradicts our request.
    InvalidAssociateAc(NegotiationError),
    /// No PDU within the idle time.
    IdleTimeout,
}

/// Indications and confirmations for the local service user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Indication {
    /// Acceptor (AE-6): a peer asks for an association; answer with
    /// [`Input::AssociateResponse`] (see [`super::negotiate`]).
    AssociateRequest(Box<AssociateRq>),
    /// Requestor (AE-3): the association is accepted.
    AssociateAccepted(Box<NegotiatedAssociation>),
    /// Requestor (AE-4): the association is rejected; the transport is being closed.
    AssociateRejected(AssociateRj),
    /// DT-2/AR-6: deliver the PDVs of the P-DATA-TF just received. Without
    /// this indication they are to be dropped.
    PData,
    /// AR-2: the peer asks to release; answer with [`Input::ReleaseResponse`]
    /// once the work in flight is done (P-DATA may still be sent, AR-7).
    ReleaseRequest,
    /// AR-8: both sides asked to release at once; answer with [`Input::ReleaseResponse`].
    ReleaseCollision,
    /// AR-3/AR-10: our release request is confirmed.
    ReleaseConfirm,
    /// The association ended abnormally.
    Aborted(AbortCause),
}

/// What the caller does after an event, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// AE-1: open the transport connection to the peer.
    ConnectTransport,
    /// Send these PDU bytes.
    SendPdu(Vec<u8>),
    /// Deliver this to the local service user.
    Indication(Indication),
    /// Start (or restart) the ARTIM timer.
    StartArtimTimer,
    /// Stop the ARTIM timer.
    StopArtimTimer,
    /// Start or restart the idle timer.
    StartIdleTimer,
    /// Stop the idle timer.
    StopIdleTimer,
    /// Close the transport connection.
    CloseTransport,
}

/// A local request the current state does not allow, or that cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssocError {
    /// P-DATA requested before the association is established.
    #[error("P-DATA request before the association is established (state {state:?})")]
    PDataBeforeEstablished {
        /// The current state.
        state: State,
    },
    /// A request the current state does not allow.
    #[error("{input} not allowed in state {state:?}")]
    NotAllowed {
        /// The request.
        input: &'static str,
        /// The current state.
        state: State,
    },
    /// An input only the other role can receive.
    #[error("{input} not allowed for the {role:?}")]
    WrongRole {
        /// The request.
        input: &'static str,
        /// This machine's role.
        role: Role,
    },
    /// The PDU to send cannot be encoded.
    #[error("cannot encode the PDU to send: {0}")]
    Encode(#[from] EncodeError),
}

/// One association's upper-layer state machine.
#[derive(Debug)]
pub struct Association {
    role: Role,
    state: State,
    artim_running: bool,
    idle_running: bool,
    /// Requestor: the RQ sent, to read the AC against.
    request: Option<Box<AssociateRq>>,
    negotiated: Option<Box<NegotiatedAssociation>>,
}

impl Association {
    /// A machine in Sta1.
    pub fn new(role: Role) -> Self {
        Association {
            role,
            state: State::Sta1Idle,
            artim_running: false,
            idle_running: false,
            request: None,
            negotiated: None,
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What was negotiated, once accepted (kept until the machine is dropped).
    pub fn negotiated(&self) -> Option<&NegotiatedAssociation> {
        self.negotiated.as_deref()
    }

    /// True when P-DATA may be sent (Sta6, or Sta8 after the peer asked to release).
    pub fn may_send_pdata(&self) -> bool {
        matches!(
            self.state,
            State::Sta6Established | State::Sta8AwaitingLocalReleaseResponse
        )
    }

    /// True in Sta1: no association and no transport (before the first event,
    /// or once everything is closed).
    pub fn is_closed(&self) -> bool {
        self.state == State::Sta1Idle
    }

    /// Handles one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, input: Input) -> Result<Vec<Action>, AssocError> {
        let mut actions = Vec::new();
        self.handle_into(input, &mut actions)?;
        Ok(actions)
    }

    /// Like [`Association::handle`], appending to a caller's vector (no
    /// allocation on the P-DATA path once it has capacity). On error nothing
    /// is appended and the state is unchanged.
    pub fn handle_into(
        &mut self,
        input: Input,
        actions: &mut Vec<Action>,
    ) -> Result<(), AssocError> {
        let start = actions.len();
        let result = self.dispatch(input, actions);
        if result.is_err() {
            actions.truncate(start);
        }
        result
    }

    fn dispatch(&mut self, input: Input, actions: &mut Vec<Action>) -> Result<(), AssocError> {
        use State::*;
        let state = self.state;
        match input {
            // Evt1: only AE-1 in Sta1.
            Input::AssociateRequest(rq) => {
                self.require_role(Role::Requestor, "A-ASSOCIATE request")?;
                if state != Sta1Idle {
                    return Err(self.not_allowed("A-ASSOCIATE request"));
                }
                // Encode now so a bad RQ fails here, not after connecting.
                Pdu::AssociateRq(rq.clone()).to_bytes()?;
                self.request = Some(rq);
                self.negotiated = None;
                actions.push(Action::ConnectTransport);
                self.state = Sta4AwaitingTransportOpen;
            }
            // Evt2: AE-2 in Sta4.
            Input::TransportConnectConfirm => {
                self.require_role(Role::Requestor, "transport connect confirmation")?;
                if state != Sta4AwaitingTransportOpen {
                    return Err(self.not_allowed("transport connect confirmation"));
                }
                let rq = self.request.clone().ok_or(AssocError::NotAllowed {
                    input: "transport connect confirmation",
                    state,
                })?;
                actions.push(Action::SendPdu(Pdu::AssociateRq(rq).to_bytes()?));
                self.start_idle(actions);
                self.state = Sta5AwaitingAssociateAcOrRj;
            }
            // Evt5: AE-5 in Sta1.
            Input::TransportConnectIndication => {
                self.require_role(Role::Acceptor, "transport connect indication")?;
                if state != Sta1Idle {
                    return Err(self.not_allowed("transport connect indication"));
                }
                self.negotiated = None;
                self.start_artim(actions);
                self.state = Sta2AwaitingAssociateRq;
            }
            // Evt7 (AE-7) / Evt8 (AE-8) in Sta3.
            Input::AssociateResponse(response) => {
                if state != Sta3AwaitingLocalAssociateResponse {
                    return Err(self.not_allowed("A-ASSOCIATE response"));
                }
                match response {
                    AssociateResponse::Accept { ac, negotiated } => {
                        actions.push(Action::SendPdu(Pdu::AssociateAc(ac).to_bytes()?));
                        self.negotiated = Some(negotiated);
                        self.start_idle(actions);
                        self.state = Sta6Established;
                    }
                    AssociateResponse::Reject(rj) => {
                        actions.push(Action::SendPdu(Pdu::AssociateRj(rj).to_bytes()?));
                        self.start_artim(actions);
                        self.state = Sta13AwaitingTransportClose;
                    }
                }
            }
            // Evt9: DT-1 in Sta6, AR-7 in Sta8.
            Input::PDataRequest => match state {
                Sta6Established | Sta8AwaitingLocalReleaseResponse => {}
                Sta1Idle
                | Sta2AwaitingAssociateRq
                | Sta3AwaitingLocalAssociateResponse
                | Sta4AwaitingTransportOpen
                | Sta5AwaitingAssociateAcOrRj => {
                    return Err(AssocError::PDataBeforeEstablished { state })
                }
                _ => return Err(self.not_allowed("P-DATA request")),
            },
            // Evt11: AR-1 in Sta6.
            Input::ReleaseRequest => {
                if state != Sta6Established {
                    return Err(self.not_allowed("A-RELEASE request"));
                }
                actions.push(Action::SendPdu(Pdu::ReleaseRq.to_bytes()?));
                self.state = Sta7AwaitingReleaseRp;
            }
            // Evt14: AR-4 in Sta8 and Sta12, AR-9 in Sta9.
            Input::ReleaseResponse => match state {
                Sta8AwaitingLocalReleaseResponse | Sta12CollisionAcceptorAwaitingLocalResponse => {
                    actions.push(Action::SendPdu(Pdu::ReleaseRp.to_bytes()?));
                    self.stop_idle(actions);
                    self.start_artim(actions);
                    self.state = Sta13AwaitingTransportClose;
                }
                Sta9CollisionRequestorAwaitingLocalResponse => {
                    actions.push(Action::SendPdu(Pdu::ReleaseRp.to_bytes()?));
                    self.state = Sta11CollisionRequestorAwaitingReleaseRp;
                }
                _ => return Err(self.not_allowed("A-RELEASE response")),
            },
            // Evt15: AA-1 in Sta3 and Sta5-Sta12, AA-2 in Sta4.
            Input::AbortRequest => match state {
                Sta4AwaitingTransportOpen => self.aa2_close(actions),
                Sta3AwaitingLocalAssociateResponse => {
                    self.aa1_abort(actions, AbortSource::ServiceUser, AbortReason::NotSpecified)?
                }
                s if s == Sta5AwaitingAssociateAcOrRj || s.is_associated() => {
                    self.aa1_abort(actions, AbortSource::ServiceUser, AbortReason::NotSpecified)?
                }
                _ => return Err(self.not_allowed("A-ABORT request")),
            },
            Input::PduReceived(pdu) => self.pdu_received(pdu, actions)?,
            Input::PDataReceived => self.pdata_received(actions)?,
            Input::InvalidPdu(invalid) => self.invalid_pdu(invalid, actions)?,
            // Evt17: AA-5 in Sta2, AA-4 in Sta3-Sta12, AR-5 in Sta13.
            Input::TransportClosed => match state {
                Sta1Idle => {}
                Sta2AwaitingAssociateRq | Sta13AwaitingTransportClose => {
                    self.stop_artim(actions);
                    self.state = Sta1Idle;
                }
                _ => {
                    self.stop_idle(actions);
                    actions.push(Action::Indication(Indication::Aborted(
                        AbortCause::TransportClosed,
                    )));
                    self.state = Sta1Idle;
                }
            },
            // Evt18: AA-2 in Sta2 and Sta13; elsewhere a stale timer, ignored.
            Input::ArtimExpired => {
                if matches!(state, Sta2AwaitingAssociateRq | Sta13AwaitingTransportClose) {
                    self.aa2_close(actions);
                }
            }
            Input::IdleExpired => {
                if state == Sta5AwaitingAssociateAcOrRj || state.is_associated() {
                    self.idle_running = false;
                    self.aa8_abort(actions, AbortReason::NotSpecified, AbortCause::IdleTimeout)?;
                }
            }
        }
        Ok(())
    }

    fn pdu_received(&mut self, pdu: Pdu, actions: &mut Vec<Action>) -> Result<(), AssocError> {
        use State::*;
        let state = self.state;
        let pdu_type = pdu.pdu_type();
        if state == Sta1Idle || state == Sta4AwaitingTransportOpen {
            // No transport in these states: a PDU cannot have arrived.
            return Err(self.not_allowed("PDU received"));
        }
        if state.is_associated() || state == Sta5AwaitingAssociateAcOrRj {
            self.restart_idle(actions);
        }
        match pdu {
            Pdu::PDataTf(_) => return self.pdata_received(actions),
            // Evt16: AA-2 in Sta2 and Sta13, AA-3 elsewhere.
            Pdu::Abort(abort) => {
                if matches!(state, Sta2AwaitingAssociateRq | Sta13AwaitingTransportClose) {
                    self.aa2_close(actions);
                } else {
                    self.stop_idle(actions);
                    let cause = if abort.source == AbortSource::ServiceUser {
                        AbortCause::PeerServiceUser {
                            reason: abort.reason,
                        }
                    } else {
                        AbortCause::PeerServiceProvider {
                            reason: abort.reason,
                        }
                    };
                    actions.push(Action::Indication(Indication::Aborted(cause)));
                    actions.push(Action::CloseTransport);
                    self.state = Sta1Idle;
                }
                return Ok(());
            }
            Pdu::AssociateRq(rq) if state == Sta2AwaitingAssociateRq => {
                // AE-6: stop ARTIM; accept for the user or reject as the provider.
                self.stop_artim(actions);
                if rq.protocol_version & PROTOCOL_VERSION == 0 {
                    let rj = AssociateRj {
                        result: RejectResult::Permanent,
                        reason: RejectReason::ProtocolVersionNotSupported,
                    };
                    actions.push(Action::SendPdu(Pdu::AssociateRj(rj).to_bytes()?));
                    self.start_artim(actions);
                    self.state = Sta13AwaitingTransportClose;
                } else {
                    actions.push(Action::Indication(Indication::AssociateRequest(rq)));
                    self.state = Sta3AwaitingLocalAssociateResponse;
                }
                return Ok(());
            }
            Pdu::AssociateAc(ac)
                if state == Sta5AwaitingAssociateAcOrRj && self.role == Role::Requestor =>
            {
                // AE-3, after checking the AC against our RQ.
                let interpreted = match &self.request {
                    Some(rq) => interpret_associate_ac(rq, &ac),
                    None => Err(NegotiationError::NoPresentationContext),
                };
                match interpreted {
                    Ok(negotiated) => {
                        let negotiated = Box::new(negotiated);
                        self.negotiated = Some(negotiated.clone());
                        actions.push(Action::Indication(Indication::AssociateAccepted(
                            negotiated,
                        )));
                        self.state = Sta6Established;
                    }
                    Err(error) => {
                        self.aa8_abort(
                            actions,
                            AbortReason::InvalidPduParameterValue,
                            AbortCause::InvalidAssociateAc(error),
                        )?;
                    }
                }
                return Ok(());
            }
            Pdu::AssociateRj(rj) if state == Sta5AwaitingAssociateAcOrRj => {
                // AE-4.
                self.stop_idle(actions);
                actions.push(Action::Indication(Indication::AssociateRejected(rj)));
                actions.push(Action::CloseTransport);
                self.state = Sta1Idle;
                return Ok(());
            }
            Pdu::ReleaseRq => match state {
                Sta6Established => {
                    // AR-2.
                    actions.push(Action::Indication(Indication::ReleaseRequest));
                    self.state = Sta8AwaitingLocalReleaseResponse;
                    return Ok(());
                }
                Sta7AwaitingReleaseRp => {
                    // AR-8: release collision.
                    actions.push(Action::Indication(Indication::ReleaseCollision));
                    self.state = match self.role {
                        Role::Requestor => Sta9CollisionRequestorAwaitingLocalResponse,
                        Role::Acceptor => Sta10CollisionAcceptorAwaitingReleaseRp,
                    };
                    return Ok(());
                }
                _ => {}
            },
            Pdu::ReleaseRp => match state {
                Sta7AwaitingReleaseRp | Sta11CollisionRequestorAwaitingReleaseRp => {
                    // AR-3.
                    self.stop_idle(actions);
                    actions.push(Action::Indication(Indication::ReleaseConfirm));
                    actions.push(Action::CloseTransport);
                    self.state = Sta1Idle;
                    return Ok(());
                }
                Sta10CollisionAcceptorAwaitingReleaseRp => {
                    // AR-10.
                    actions.push(Action::Indication(Indication::ReleaseConfirm));
                    self.state = Sta12CollisionAcceptorAwaitingLocalResponse;
                    return Ok(());
                }
                _ => {}
            },
            _ => {}
        }
        // Anything else is a PDU the state does not allow.
        self.unexpected_pdu(pdu_type, actions)
    }

    /// Evt10: DT-2 in Sta6, AR-6 in Sta7; abort elsewhere, AA-6 in Sta13.
    fn pdata_received(&mut self, actions: &mut Vec<Action>) -> Result<(), AssocError> {
        use State::*;
        match self.state {
            Sta1Idle | Sta4AwaitingTransportOpen => Err(self.not_allowed("P-DATA-TF received")),
            Sta6Established | Sta7AwaitingReleaseRp => {
                self.restart_idle(actions);
                actions.push(Action::Indication(Indication::PData));
                Ok(())
            }
            Sta13AwaitingTransportClose => Ok(()),
            state @ (Sta2AwaitingAssociateRq
            | Sta3AwaitingLocalAssociateResponse
            | Sta5AwaitingAssociateAcOrRj) => {
                let cause = AbortCause::PDataBeforeAssociation { state };
                if state == Sta2AwaitingAssociateRq {
                    self.aa1_abort_with_cause(actions, cause)
                } else {
                    self.aa8_abort(actions, AbortReason::UnexpectedPdu, cause)
                }
            }
            _ => self.unexpected_pdu(PduType::PDataTf, actions),
        }
    }

    /// A valid PDU the state does not allow: AA-1 in Sta2, AA-6/AA-7 in
    /// Sta13, AA-8 elsewhere.
    fn unexpected_pdu(
        &mut self,
        pdu_type: PduType,
        actions: &mut Vec<Action>,
    ) -> Result<(), AssocError> {
        use State::*;
        let state = self.state;
        let cause = AbortCause::UnexpectedPdu { pdu_type, state };
        match state {
            Sta2AwaitingAssociateRq => self.aa1_abort_with_cause(actions, cause),
            Sta13AwaitingTransportClose => {
                if pdu_type == PduType::AssociateRq {
                    // AA-7: send A-ABORT, stay in Sta13.
                    let abort = Abort {
                        source: AbortSource::ServiceProvider,
                        reason: AbortReason::UnexpectedPdu,
                    };
                    actions.push(Action::SendPdu(Pdu::Abort(abort).to_bytes()?));
                }
                // AA-6 otherwise: ignore.
                Ok(())
            }
            _ => self.aa8_abort(actions, AbortReason::UnexpectedPdu, cause),
        }
    }

    /// Evt19: AA-1 in Sta2 (but A-ASSOCIATE-RJ 1/2/1 for an unparseable
    /// A-ASSOCIATE-RQ), AA-7 in Sta13, AA-8 elsewhere.
    fn invalid_pdu(
        &mut self,
        invalid: InvalidPdu,
        actions: &mut Vec<Action>,
    ) -> Result<(), AssocError> {
        use State::*;
        let cause = AbortCause::InvalidPdu(invalid);
        match self.state {
            Sta1Idle | Sta4AwaitingTransportOpen => Err(self.not_allowed("invalid PDU")),
            Sta2AwaitingAssociateRq if invalid.pdu_type == Some(PduType::AssociateRq) => {
                self.stop_artim(actions);
                actions.push(Action::SendPdu(
                    Pdu::AssociateRj(reject_unparseable()).to_bytes()?,
                ));
                actions.push(Action::Indication(Indication::Aborted(cause)));
                self.start_artim(actions);
                self.state = Sta13AwaitingTransportClose;
                Ok(())
            }
            Sta2AwaitingAssociateRq => self.aa1_abort_with_cause(actions, cause),
            Sta13AwaitingTransportClose => {
                let abort = Abort {
                    source: AbortSource::ServiceProvider,
                    reason: invalid.reason,
                };
                actions.push(Action::SendPdu(Pdu::Abort(abort).to_bytes()?));
                Ok(())
            }
            _ => self.aa8_abort(actions, invalid.reason, cause),
        }
    }

    /// AA-1: send A-ABORT, (re)start ARTIM, Sta13. Used for the local abort
    /// request (user source) and for bad PDUs in Sta2.
    fn aa1_abort(
        &mut self,
        actions: &mut Vec<Action>,
        source: AbortSource,
        reason: AbortReason,
    ) -> Result<(), AssocError> {
        let abort = Abort { source, reason };
        actions.push(Action::SendPdu(Pdu::Abort(abort).to_bytes()?));
        self.stop_idle(actions);
        self.start_artim(actions);
        self.state = State::Sta13AwaitingTransportClose;
        Ok(())
    }

    fn aa1_abort_with_cause(
        &mut self,
        actions: &mut Vec<Action>,
        cause: AbortCause,
    ) -> Result<(), AssocError> {
        // In Sta2 there is no service user yet; the indication tells the
        // caller why the connection is being dropped (for its log).
        self.stop_artim(actions);
        self.aa1_abort(actions, AbortSource::ServiceUser, AbortReason::NotSpecified)?;
        actions.push(Action::Indication(Indication::Aborted(cause)));
        Ok(())
    }

    /// AA-8: send A-ABORT (service-provider), A-P-ABORT indication, start ARTIM, Sta13.
    fn aa8_abort(
        &mut self,
        actions: &mut Vec<Action>,
        reason: AbortReason,
        cause: AbortCause,
    ) -> Result<(), AssocError> {
        let abort = Abort {
            source: AbortSource::ServiceProvider,
            reason,
        };
        actions.push(Action::SendPdu(Pdu::Abort(abort).to_bytes()?));
        self.stop_idle(actions);
        actions.push(Action::Indication(Indication::Aborted(cause)));
        self.start_artim(actions);
        self.state = State::Sta13AwaitingTransportClose;
        Ok(())
    }

    /// AA-2: stop ARTIM if running, close the transport, Sta1.
    fn aa2_close(&mut self, actions: &mut Vec<Action>) {
        self.stop_artim(actions);
        self.stop_idle(actions);
        actions.push(Action::CloseTransport);
        self.state = State::Sta1Idle;
    }

    fn start_artim(&mut self, actions: &mut Vec<Action>) {
        self.artim_running = true;
        actions.push(Action::StartArtimTimer);
    }

    fn stop_artim(&mut self, actions: &mut Vec<Action>) {
        if std::mem::replace(&mut self.artim_running, false) {
            actions.push(Action::StopArtimTimer);
        }
    }

    fn start_idle(&mut self, actions: &mut Vec<Action>) {
        self.idle_running = true;
        actions.push(Action::StartIdleTimer);
    }

    fn restart_idle(&mut self, actions: &mut Vec<Action>) {
        if self.idle_running {
            actions.push(Action::StartIdleTimer);
        }
    }

    fn stop_idle(&mut self, actions: &mut Vec<Action>) {
        if std::mem::replace(&mut self.idle_running, false) {
            actions.push(Action::StopIdleTimer);
        }
    }

    fn not_allowed(&self, input: &'static str) -> AssocError {
        AssocError::NotAllowed {
            input,
            state: self.state,
        }
    }

    fn require_role(&self, role: Role, input: &'static str) -> Result<(), AssocError> {
        if self.role == role {
            Ok(())
        } else {
            Err(AssocError::WrongRole {
                input,
                role: self.role,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptor_starts_artim_on_connection() {
        let mut association = Association::new(Role::Acceptor);
        assert_eq!(
            association
                .handle(Input::TransportConnectIndication)
                .unwrap(),
            [Action::StartArtimTimer]
        );
        assert_eq!(association.state(), State::Sta2AwaitingAssociateRq);
    }

    #[test]
    fn artim_expiry_in_sta2_closes() {
        let mut association = Association::new(Role::Acceptor);
        association
            .handle(Input::TransportConnectIndication)
            .unwrap();
        assert_eq!(
            association.handle(Input::ArtimExpired).unwrap(),
            [Action::StopArtimTimer, Action::CloseTransport]
        );
        assert_eq!(association.state(), State::Sta1Idle);
    }

    #[test]
    fn local_pdata_before_establishment_is_an_error() {
        let mut association = Association::new(Role::Acceptor);
        association
            .handle(Input::TransportConnectIndication)
            .unwrap();
        assert_eq!(
            association.handle(Input::PDataRequest),
            Err(AssocError::PDataBeforeEstablished {
                state: State::Sta2AwaitingAssociateRq
            })
        );
        assert_eq!(association.state(), State::Sta2AwaitingAssociateRq);
    }
}
