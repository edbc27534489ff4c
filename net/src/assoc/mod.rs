//! Associations: the PS3.8 §9.2 state machine for acceptor and requestor
//! ([`Association`]) and presentation-context/role negotiation
//! ([`negotiate`], [`AssociationProposal`]).
//!
//! Sans-I/O like the rest of net: the caller turns socket events, decoded
//! PDUs ([`crate::pdata::StreamDecoder`]), timer expiries and its own
//! requests into [`Input`]s and carries out the [`Action`]s that come back
//! (send these bytes, start or stop a timer, deliver an indication, close).
//!
//! Acceptor path in brief (bytes in -> negotiation -> AC bytes out -> P-DATA events):
//! ```
//! use sluice_net::assoc::*;
//! use sluice_net::pdata::{encode_message, StreamDecoder, StreamEvent};
//! use sluice_net::pdu::{DecodeLimits, Pdu};
//!
//! let mut policy = AcceptorPolicy::new(AeTitleFilter::Only(vec!["SLUICE".into()]), "1.2.826.0.1.3680043.10.1");
//! policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new("1.2.840.10008.1.1", ["1.2.840.10008.1.2"]));
//!
//! // What a peer sends: an A-ASSOCIATE-RQ, then a command in P-DATA-TF.
//! let proposal = AssociationProposal {
//!     calling_ae_title: "ECHOSCU".into(),
//!     called_ae_title: "SLUICE".into(),
//!     presentation_contexts: vec![ProposedPresentationContext {
//!         abstract_syntax: "1.2.840.10008.1.1".into(),
//!         transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
//!         roles: None,
//!     }],
//!     pdu_length_max_receive: 16384,
//!     implementation_class_uid: "1.2.3".into(),
//!     implementation_version_name: None,
//!     asynchronous_operations_window: None,
//!     user_identity: None,
//! };
//! let mut from_peer = Pdu::AssociateRq(Box::new(proposal.to_associate_rq()?)).to_bytes()?;
//! encode_message(1, true, b"command set bytes", 16384, &mut from_peer)?;
//!
//! let mut association = Association::new(Role::Acceptor);
//! let mut decoder = StreamDecoder::new(DecodeLimits::default());
//! let mut to_peer = Vec::new();
//! let mut delivered = Vec::new();
//! let mut deliver_pdata = false;
//! assert_eq!(association.handle(Input::TransportConnectIndication)?, [Action::StartArtimTimer]);
//! let mut offset = 0;
//! while offset < from_peer.len() {
//!     // A decode error would become Input::InvalidPdu(InvalidPdu::new(decoder.failed_pdu_type(), &error)).
//!     let step = decoder.next_event(&from_peer[offset..])?;
//!     offset += step.consumed;
//!     let Some(event) = step.event else { break }; // need more bytes
//!     let input = match event {
//!         StreamEvent::Control(pdu) => Input::PduReceived(pdu),
//!         StreamEvent::PDataStart { .. } => Input::PDataReceived,
//!         StreamEvent::PdvFragment(fragment) => {
//!             if deliver_pdata {
//!                 delivered.extend_from_slice(fragment.bytes); // borrowed from from_peer
//!             }
//!             continue;
//!         }
//!     };
//!     let mut actions = association.handle(input)?;
//!     while let Some(action) = actions.first().cloned() {
//!         actions.remove(0);
//!         match action {
//!             Action::Indication(Indication::AssociateRequest(rq)) => {
//!                 let outcome = negotiate(&policy, &rq, AssociationLoad { current: 0, limit: 100 });
//!                 if let NegotiationOutcome::Accept { negotiated, .. } = &outcome {
//!                     decoder.set_pdata_length_max(negotiated.pdu_length_max_local);
//!                 }
//!                 actions.extend(association.handle(Input::AssociateResponse(outcome.into()))?);
//!             }
//!             Action::Indication(Indication::PData) => deliver_pdata = true,
//!             Action::SendPdu(bytes) => to_peer.extend(bytes), // the A-ASSOCIATE-AC
//!             _ => {} // timers, close
//!         }
//!     }
//! }
//! assert_eq!(association.state(), State::Sta6Established);
//! assert_eq!(to_peer[0], 0x02); // A-ASSOCIATE-AC
//! assert_eq!(association.negotiated().unwrap().presentation_contexts[0].id, 1);
//! assert_eq!(delivered, b"command set bytes");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod negotiate;
mod state;

pub use negotiate::{
    interpret_associate_ac, negotiate, refused_contexts, reject_unparseable,
    AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter, AssociationLoad, AssociationProposal,
    NegotiatedAssociation, NegotiatedPresentationContext, NegotiationError, NegotiationOutcome,
    ProposedPresentationContext, RefusedContext, TransferSyntaxChoice,
};
pub use state::{
    AbortCause, Action, AssocError, AssociateResponse, Association, Indication, Input, InvalidPdu,
    Role, State,
};
