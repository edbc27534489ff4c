//! One DICOM association endpoint, sans-I/O, for either role: bytes in,
//! [`Incoming`] events out, messages encoded on the way back.
//!
//! An [`Endpoint`] combines what every user of an association needs and
//! would otherwise write again: the stream decoder
//! ([`crate::pdata::StreamDecoder`]), the PS3.8 state machine
//! ([`crate::assoc::Association`]), DIMSE message reassembly, encoding of
//! commands and data sets within the peer's maximum PDU length, the ARTIM
//! and idle deadlines, and Message IDs. It is the one type every user of an
//! association drives: the load generator (requestor, and acceptor for
//! commitment reports) and the test acceptor do, the Storage SCP's
//! connection is to; Query/Retrieve needs it on both sides (C-FIND pending
//! responses and C-CANCEL, C-GET sub-operations on the same association as
//! SCP; C-FIND/C-MOVE responses and C-GET's incoming C-STORE data sets as
//! SCU), which its tests exercise.
//!
//! # Driving it
//!
//! The caller owns the socket, the clock and the timers; every call that
//! can move the state machine takes `now`.
//!
//! - Connect (requestor: [`Endpoint::request_association`], then connect,
//!   then [`Endpoint::transport_connected`]; acceptor: accept, then
//!   [`Endpoint::transport_connected`]).
//! - For each received slice, loop [`Endpoint::receive`] with a cursor
//!   until it returns `None`, and handle each [`Incoming`]: answer an
//!   A-ASSOCIATE-RQ ([`Endpoint::answer_association`]) or a release
//!   ([`Endpoint::answer_release`]) *before* the next `receive`, as the
//!   state machine expects the answer before the next PDU.
//! - After any call, send what [`Endpoint::poll_transmit`] gives (in that
//!   order, before bytes of your own), arm a timer for
//!   [`Endpoint::next_deadline`] and call [`Endpoint::handle_timeout`] when
//!   it passes, drain [`Endpoint::poll_event`] (events raised by local calls
//!   and timeouts), and close the transport once [`Endpoint::close_requested`]
//!   and the queued bytes are sent. Call [`Endpoint::transport_closed`] when
//!   the peer closes.
//!
//! # Design decisions
//!
//! **Zero copy in, both roles.** [`Incoming::Data`] carries a *range* of the
//! slice given to `receive`, not bytes: a caller holding the slice in a
//! refcounted receive buffer lends that range to a file write with no copy.
//! Only C-STORE-RQ data sets stream this way ([`streams_data_set`]), on
//! either role (a Storage SCP, or a C-GET SCU receiving its sub-operations).
//! Every other data set is small (responses' identifiers, N-ACTION and
//! N-EVENT-REPORT information, C-FIND/C-MOVE/C-GET identifiers) and is
//! collected whole, bounded by [`EndpointConfig::collect_length_max`], and
//! handed out with its command ([`DataSet::Collected`]), so no caller
//! reassembles messages. A collected data set over the bound is read and
//! dropped ([`DataSet::TooLong`]) so the caller can answer with a status.
//!
//! **Events are owned, and stepped.** `receive` returns one event at a time
//! and advances the caller's cursor, so the caller acts on an A-ASSOCIATE-RQ
//! (negotiation sets the P-DATA limit the decoder checks next) or a
//! C-STORE-RQ (open the file) before the next bytes are decoded, and no
//! event borrows the endpoint or the input.
//!
//! **Outgoing bytes are polled, not returned as actions** (quinn-proto's
//! `poll_transmit`). The state machine's sends and every encoded message
//! append to one buffer that `poll_transmit` hands over whole: a command
//! and its data set, or an AC and nothing else, leave in one send; the
//! caller's code is one loop after any call instead of an action match
//! written per caller (that match is the glue this module replaced three
//! times). The cost is that a caller must drain it; bytes the caller sends
//! itself (a large data set, framed with the
//! [`PDataFragmenter`](crate::pdata::PDataFragmenter) that
//! [`Endpoint::send_command_for_data_set`] returns) go after what is queued.
//! The same holds for timers: deadlines out ([`Endpoint::next_deadline`]),
//! expiries in ([`Endpoint::handle_timeout`]), no Start/Stop actions.
//!
//! **Peer errors are events, local errors are `Result`s.** A malformed PDU
//! or a broken DIMSE rule ([`Violation`]) is answered by the endpoint (an
//! A-ABORT is queued) and reported as [`Incoming::Violation`]; the
//! endpoint then reads nothing more. A local request the state does not
//! allow ([`SendError`], [`AssocError`]) changes nothing.
//!
//! Deviation, on purpose: [`Endpoint::abort`] (AA-1) also asks for the
//! transport to close once the A-ABORT is sent rather than waiting in Sta13
//! for the peer to close or ARTIM to expire, as every user did before the
//! endpoint existed.
//!
//! # Example: a requestor and an acceptor, back to back
//! ```
//! use std::time::Instant;
//! use sluice_net::assoc::*;
//! use sluice_net::dimse::{CEchoRq, CEchoRsp, Command, Status, StatusDetail};
//! use sluice_net::endpoint::{DataSet, Endpoint, EndpointConfig, Incoming};
//!
//! const VERIFICATION: &str = "1.2.840.10008.1.1";
//! const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
//! let now = Instant::now();
//! let mut policy = AcceptorPolicy::new(AeTitleFilter::Any, "1.2.3.4");
//! policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(VERIFICATION, [IMPLICIT_LE]));
//! let proposal = AssociationProposal {
//!     calling_ae_title: "ECHOSCU".into(),
//!     called_ae_title: "SLUICE".into(),
//!     presentation_contexts: vec![ProposedPresentationContext {
//!         abstract_syntax: VERIFICATION.into(),
//!         transfer_syntaxes: vec![IMPLICIT_LE.into()],
//!         roles: None,
//!     }],
//!     pdu_length_max_receive: 16384,
//!     implementation_class_uid: "1.2.3".into(),
//!     implementation_version_name: None,
//!     asynchronous_operations_window: None,
//!     user_identity: None,
//! };
//!
//! let mut scu = Endpoint::new(Role::Requestor, EndpointConfig::default());
//! let mut scp = Endpoint::new(Role::Acceptor, EndpointConfig::default());
//! scu.request_association(Box::new(proposal.to_associate_rq()?), now)?;
//! scu.transport_connected(now)?; // the caller connected
//! scp.transport_connected(now)?; // the caller accepted
//!
//! // SCU -> SCP: the A-ASSOCIATE-RQ.
//! let wire = scu.poll_transmit().unwrap();
//! let mut cursor = 0;
//! while let Some(incoming) = scp.receive(&wire, &mut cursor, now) {
//!     if let Incoming::Indication(Indication::AssociateRequest(rq)) = incoming {
//!         let outcome = negotiate(&policy, &rq, AssociationLoad::UNLIMITED);
//!         scp.answer_association(outcome.into(), now)?;
//!     }
//! }
//! // SCP -> SCU: the A-ASSOCIATE-AC; the SCU sends a C-ECHO-RQ.
//! let wire = scp.poll_transmit().unwrap();
//! let mut cursor = 0;
//! while let Some(incoming) = scu.receive(&wire, &mut cursor, now) {
//!     if let Incoming::Indication(Indication::AssociateAccepted(negotiated)) = incoming {
//!         let context_id = negotiated.presentation_contexts[0].id;
//!         let message_id = scu.next_message_id();
//!         let rq = Command::CEchoRq(CEchoRq { message_id, affected_sop_class_uid: VERIFICATION.into() });
//!         scu.send_message(context_id, &rq, None)?;
//!     }
//! }
//! // SCU -> SCP: the command, decoded and handed out whole.
//! let wire = scu.poll_transmit().unwrap();
//! let mut cursor = 0;
//! let Some(Incoming::Command { context_id, command: Command::CEchoRq(rq), data_set: DataSet::Absent }) =
//!     scp.receive(&wire, &mut cursor, now) else { panic!("a C-ECHO-RQ") };
//! let rsp = Command::CEchoRsp(CEchoRsp {
//!     message_id_being_responded_to: rq.message_id,
//!     affected_sop_class_uid: Some(rq.affected_sop_class_uid),
//!     status: Status::SUCCESS,
//!     detail: StatusDetail::default(),
//! });
//! scp.send_message(context_id, &rsp, None)?;
//! let wire = scp.poll_transmit().unwrap();
//! let mut cursor = 0;
//! let Some(Incoming::Command { command: Command::CEchoRsp(rsp), .. }) =
//!     scu.receive(&wire, &mut cursor, now) else { panic!("a C-ECHO-RSP") };
//! assert_eq!(rsp.status, Status::SUCCESS);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod incoming;
mod outgoing;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use incoming::{streams_data_set, DataSet, Incoming, Violation};
pub use outgoing::SendError;

use crate::assoc::{
    Action, AssocError, AssociateResponse, Association, Indication, Input, InvalidPdu,
    NegotiatedAssociation, NegotiatedPresentationContext, Role, State,
};
use crate::dimse::dataset::DatasetLimits;
use crate::pdata::{StreamDecoder, StreamEvent};
use crate::pdu::{AssociateRq, DecodeLimits};
use incoming::{Fragment, Reassembly};

/// An endpoint's settings. Start from [`EndpointConfig::default`] and set
/// fields (`#[non_exhaustive]`: settings may be added).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// The stream decoder's limits before negotiation (the A-ASSOCIATE PDU
    /// cap, and the P-DATA-TF cap until our Maximum Length is agreed, when
    /// it becomes the negotiated one).
    pub decode_limits: DecodeLimits,
    /// The ARTIM timer (PS3.8 §9.1.5): how long the acceptor waits for an
    /// A-ASSOCIATE-RQ, and either side for the transport to close after an
    /// A-ASSOCIATE-RJ, A-RELEASE-RP or A-ABORT.
    pub artim: Duration,
    /// How long an association (or a request awaiting its AC) may stay
    /// without a PDU from the peer before it is aborted (Sluice's idle
    /// timer, not in PS3.8).
    pub idle: Duration,
    /// Largest data set collected whole ([`DataSet::Collected`]); a longer
    /// one comes out as [`DataSet::TooLong`].
    pub collect_length_max: usize,
}

impl Default for EndpointConfig {
    /// Default decode limits, ARTIM 30 s, idle 60 s (Sluice's defaults), and
    /// the small-data-set codec's 16 MiB as the collect bound.
    fn default() -> Self {
        EndpointConfig {
            decode_limits: DecodeLimits::default(),
            artim: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            collect_length_max: DatasetLimits::default().length_max,
        }
    }
}

/// Which timer expired ([`Endpoint::handle_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timer {
    /// The ARTIM timer: the transport is to be closed.
    Artim,
    /// The idle timer: the association was aborted.
    Idle,
}

/// What the stream carries next ([`Endpoint::ahead`]), for a caller that
/// receives exactly the bytes it wants rather than whatever has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ahead {
    /// The next `bytes` complete a PDU header (`pdu`) or a PDV item header.
    Header {
        /// Bytes that complete the header.
        bytes: usize,
        /// It is a PDU header (its PDV item header, if it is a P-DATA-TF,
        /// follows it).
        pdu: bool,
    },
    /// The next `remaining` bytes are the rest of a PDV's value.
    Value {
        /// Value bytes still to come.
        remaining: u32,
        /// They are bytes of a streamed data set, handed out as
        /// [`Incoming::Data`] ranges ([`Endpoint::pending_data_bytes`]);
        /// else of a command or a data set collected whole.
        streamed: bool,
        /// The PDV ends its command or data set.
        last: bool,
        /// The header after it is a PDU header (else a PDV item header).
        pdu_ends: bool,
    },
}

/// One association, either role. See the [module documentation](self).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    association: Association,
    decoder: StreamDecoder,
    reassembly: Reassembly,
    /// The state machine's actions, reused between calls.
    actions: Vec<Action>,
    /// Events raised and not yet handed out.
    events: VecDeque<Incoming>,
    /// Bytes to send, in order.
    transmit: Vec<u8>,
    /// An encoded command set, reused between messages.
    command_scratch: Vec<u8>,
    artim_deadline: Option<Instant>,
    idle_deadline: Option<Instant>,
    /// The PDVs of the P-DATA-TF being decoded are for the user (DT-2, AR-6).
    deliver_pdata: bool,
    /// False once a PDU failed to decode or the transport is to close:
    /// nothing more is decoded.
    reading: bool,
    close_requested: bool,
    /// The transport has been connected (Evt2/Evt5) at some point.
    transport_seen: bool,
    message_id: u16,
}

impl Endpoint {
    /// An endpoint in Sta1, no transport yet.
    pub fn new(role: Role, config: EndpointConfig) -> Self {
        assert!(
            config.collect_length_max > 0,
            "collect_length_max must allow a data set"
        );
        Endpoint {
            association: Association::new(role),
            decoder: StreamDecoder::new(config.decode_limits),
            reassembly: Reassembly::new(config.collect_length_max),
            actions: Vec::new(),
            events: VecDeque::new(),
            transmit: Vec::new(),
            command_scratch: Vec::new(),
            artim_deadline: None,
            idle_deadline: None,
            deliver_pdata: false,
            reading: true,
            close_requested: false,
            transport_seen: false,
            message_id: 0,
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.association.role()
    }

    /// The PS3.8 state.
    pub fn state(&self) -> State {
        self.association.state()
    }

    /// What was negotiated, once the association is accepted (kept after it ends).
    pub fn negotiated(&self) -> Option<&NegotiatedAssociation> {
        self.association.negotiated()
    }

    /// The accepted presentation context with this ID.
    pub fn presentation_context(&self, context_id: u8) -> Option<&NegotiatedPresentationContext> {
        self.negotiated()
            .and_then(|negotiated| negotiated.presentation_context(context_id))
    }

    /// The peer's Maximum Length (0: no limit), once negotiated.
    pub fn pdu_length_max_peer(&self) -> Option<u32> {
        self.negotiated()
            .map(|negotiated| negotiated.pdu_length_max_peer)
    }

    /// True when P-DATA may be sent (Sta6, or Sta8 after the peer asked to release).
    pub fn may_send_pdata(&self) -> bool {
        self.association.may_send_pdata()
    }

    /// True in Sta1: no association, and no transport as far as the state
    /// machine knows (before the first call, or once everything ended).
    pub fn is_closed(&self) -> bool {
        self.association.is_closed()
    }

    /// True once the transport is to be closed (after the bytes queued in
    /// [`Endpoint::poll_transmit`] are sent). The endpoint reads nothing more.
    /// (After a malformed PDU it reads nothing more either, but the state
    /// machine waits in Sta13 for the peer to close or ARTIM to expire.)
    pub fn close_requested(&self) -> bool {
        self.close_requested
    }

    /// A new Message ID for a request: 1, 2, ... 65535, 1, ... (never 0).
    pub fn next_message_id(&mut self) -> u16 {
        self.message_id = self.message_id.wrapping_add(1).max(1);
        debug_assert_ne!(self.message_id, 0);
        self.message_id
    }

    // ----- the association's life -----

    /// Requestor, Evt1: asks for an association with `rq`. The caller then
    /// opens the transport and calls [`Endpoint::transport_connected`].
    pub fn request_association(
        &mut self,
        rq: Box<AssociateRq>,
        now: Instant,
    ) -> Result<(), AssocError> {
        self.handle(Input::AssociateRequest(rq), now)?;
        assert_eq!(self.state(), State::Sta4AwaitingTransportOpen);
        Ok(())
    }

    /// The transport is open: Evt5 for an acceptor (ARTIM starts), Evt2
    /// for a requestor (the A-ASSOCIATE-RQ is queued).
    pub fn transport_connected(&mut self, now: Instant) -> Result<(), AssocError> {
        let input = match self.role() {
            Role::Acceptor => Input::TransportConnectIndication,
            Role::Requestor => Input::TransportConnectConfirm,
        };
        self.handle(input, now)?;
        assert!(matches!(
            (self.role(), self.state()),
            (Role::Acceptor, State::Sta2AwaitingAssociateRq)
                | (Role::Requestor, State::Sta5AwaitingAssociateAcOrRj)
        ));
        self.transport_seen = true;
        Ok(())
    }

    /// Acceptor, Evt7/Evt8: the answer to an
    /// [`Indication::AssociateRequest`] (from [`crate::assoc::negotiate`]).
    /// On accept, the decoder's P-DATA limit becomes our Maximum Length.
    pub fn answer_association(
        &mut self,
        response: AssociateResponse,
        now: Instant,
    ) -> Result<(), AssocError> {
        let pdata_length_max = match &response {
            AssociateResponse::Accept { negotiated, .. } => Some(negotiated.pdu_length_max_local),
            AssociateResponse::Reject(_) => None,
        };
        self.handle(Input::AssociateResponse(response), now)?;
        match pdata_length_max {
            Some(pdata_length_max) => {
                assert_eq!(self.state(), State::Sta6Established);
                self.decoder.set_pdata_length_max(pdata_length_max);
            }
            None => assert_eq!(self.state(), State::Sta13AwaitingTransportClose),
        }
        Ok(())
    }

    /// Evt11: asks the peer to release (Sta6 only).
    pub fn release(&mut self, now: Instant) -> Result<(), AssocError> {
        self.handle(Input::ReleaseRequest, now)
    }

    /// Evt14: answers the peer's release request (or a release collision).
    /// Responses still owed should be sent before: nothing can follow.
    pub fn answer_release(&mut self, now: Instant) -> Result<(), AssocError> {
        self.handle(Input::ReleaseResponse, now)
    }

    /// Evt15: aborts the association (A-ABORT, service user) where the state
    /// allows one, and asks for the transport to close once it is sent (see
    /// the module's deviation). Total: in a state without an association
    /// (awaiting the A-ASSOCIATE-RQ, already aborting) it only asks to close.
    pub fn abort(&mut self, now: Instant) {
        let state = self.state();
        let aborts = state == State::Sta3AwaitingLocalAssociateResponse
            || state == State::Sta4AwaitingTransportOpen
            || state == State::Sta5AwaitingAssociateAcOrRj
            || (6..=12).contains(&state.number());
        if aborts {
            let result = self.handle(Input::AbortRequest, now);
            debug_assert!(result.is_ok(), "AbortRequest refused in {state:?}");
        }
        self.stop_reading();
    }

    /// Evt17: the transport closed (the peer closed it, or it failed).
    pub fn transport_closed(&mut self, now: Instant) {
        if !self.is_closed() {
            let result = self.handle(Input::TransportClosed, now);
            debug_assert!(result.is_ok(), "TransportClosed refused: {result:?}");
        }
        assert!(self.is_closed());
        self.artim_deadline = None;
        self.idle_deadline = None;
        self.stop_reading();
    }

    // ----- receiving -----

    /// Decodes `input` from `*cursor` up to the next event and returns it,
    /// advancing `*cursor` past what it used. `None`: all of `input` is
    /// consumed (or the endpoint reads nothing more, having aborted or
    /// being closed) and more bytes are needed. Events raised earlier
    /// ([`Endpoint::poll_event`]) come out first.
    ///
    /// [`Incoming::Data`] ranges index `input`. A peer error is answered
    /// here and reported as [`Incoming::Violation`] or an abort indication.
    pub fn receive(&mut self, input: &[u8], cursor: &mut usize, now: Instant) -> Option<Incoming> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        loop {
            if !self.reading || self.is_closed() {
                // Closed before the transport ever opened is the caller's bug.
                debug_assert!(self.transport_seen, "receive before transport_connected");
                *cursor = input.len();
                return None;
            }
            let start = *cursor;
            let rest = input.get(start..).unwrap_or_default();
            if rest.is_empty() {
                return None;
            }
            let step = match self.decoder.next_event(rest) {
                Ok(step) => step,
                Err(error) => {
                    *cursor = input.len();
                    self.malformed(error, now);
                    return self.events.pop_front();
                }
            };
            debug_assert!(step.consumed <= rest.len());
            *cursor = start.saturating_add(step.consumed);
            let Some(event) = step.event else {
                debug_assert_eq!(*cursor, input.len());
                return None;
            };
            match event {
                StreamEvent::Control(pdu) => {
                    self.peer_input(Input::PduReceived(pdu), now);
                }
                StreamEvent::PDataStart { .. } => {
                    self.deliver_pdata = false;
                    self.peer_input(Input::PDataReceived, now);
                }
                StreamEvent::PdvFragment(fragment) => {
                    if !self.deliver_pdata {
                        // P-DATA the state does not deliver (Sta13): dropped.
                        continue;
                    }
                    // A fragment is always the last bytes its step consumed.
                    let end = *cursor;
                    let range = end.saturating_sub(fragment.bytes.len())..end;
                    debug_assert!(range.start >= start);
                    debug_assert_eq!(input.get(range.clone()), Some(fragment.bytes));
                    let fragment = Fragment {
                        context_id: fragment.presentation_context_id,
                        is_command: fragment.is_command,
                        last: fragment.is_last && fragment.pdv_complete,
                        bytes: fragment.bytes,
                        range,
                    };
                    let negotiated = self.association.negotiated();
                    let accepted = |context_id: u8| {
                        negotiated.is_some_and(|negotiated| {
                            negotiated.presentation_context(context_id).is_some()
                        })
                    };
                    match self.reassembly.fragment(fragment, accepted) {
                        Ok(Some(incoming)) => {
                            debug_assert!(self.events.is_empty());
                            return Some(incoming);
                        }
                        Ok(None) => {}
                        Err(violation) => {
                            *cursor = input.len();
                            self.abort(now);
                            return Some(Incoming::Violation(violation));
                        }
                    }
                }
            }
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
        }
    }

    /// When the stream is inside a PDV of a streamed data set
    /// ([`DataSet::Streamed`]) whose value bytes will be handed out as
    /// [`Incoming::Data`]: how many value bytes of it remain. The next that
    /// many bytes of the stream are data-set bytes whatever they hold: a
    /// caller may receive them straight into their place and then pass
    /// them to [`Endpoint::receive`] in one slice, which yields them as one
    /// [`Incoming::Data`] range covering the slice (nothing else is checked
    /// in them). `None` anywhere else (between PDVs, in a command, a
    /// collected data set, a PDU not delivered, after an abort).
    pub fn pending_data_bytes(&self) -> Option<u32> {
        if !self.reading || !self.deliver_pdata || !self.events.is_empty() {
            return None;
        }
        let pending = self.decoder.pending_value()?;
        let streaming =
            !pending.is_command && self.reassembly.streams_on(pending.presentation_context_id);
        streaming.then_some(pending.remaining)
    }

    /// While a streamed data set is arriving, at (or inside) a PDU header
    /// or a PDV item header: how many bytes complete that header. A caller
    /// that receives exactly those (and passes them to
    /// [`Endpoint::receive`]) takes nothing of what follows, so it can then
    /// ask [`Endpoint::pending_data_bytes`] where the next value goes.
    pub fn pending_header_bytes(&self) -> Option<usize> {
        if !self.reading || !self.events.is_empty() || !self.reassembly.is_streaming() {
            return None;
        }
        self.decoder.header_bytes_ahead()
    }

    /// Where the stream is, for a caller that receives exactly: at (or
    /// inside) a PDU or PDV item header, or inside a PDV's value, with how
    /// many bytes complete it. The next that many bytes of the stream are
    /// that header's or value's whatever they hold; passed to
    /// [`Endpoint::receive`] they come out as from any other cut (a
    /// streamed value's as one [`Incoming::Data`] range). `None` elsewhere
    /// (a control PDU's body, a PDV of a PDU not delivered, an empty
    /// value), with events waiting, or once nothing more is read.
    pub fn ahead(&self) -> Option<Ahead> {
        if !self.reading || self.is_closed() || !self.events.is_empty() {
            return None;
        }
        if let Some(bytes) = self.decoder.header_bytes_ahead() {
            return Some(Ahead::Header {
                bytes,
                pdu: self.decoder.at_pdu_header(),
            });
        }
        if !self.deliver_pdata {
            return None;
        }
        let pending = self.decoder.pending_value()?;
        Some(Ahead::Value {
            remaining: pending.remaining,
            streamed: !pending.is_command
                && self.reassembly.streams_on(pending.presentation_context_id),
            last: pending.is_last,
            pdu_ends: pending.pdu_remaining == 0,
        })
    }

    /// The largest value of the data-set PDVs read since the last call
    /// (their item headers), and counting starts again: how large the PDVs
    /// the peer sends are.
    pub fn take_data_pdv_max(&mut self) -> u32 {
        self.decoder.take_data_value_max()
    }

    /// The next event raised outside [`Endpoint::receive`] (by a timeout, a
    /// transport close or a local request), if any.
    pub fn poll_event(&mut self) -> Option<Incoming> {
        self.events.pop_front()
    }

    // ----- sending and timers -----

    /// The bytes queued for the peer, all of them, or `None`. Send them in
    /// order, before any bytes of your own.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmit.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.transmit))
        }
    }

    /// True when bytes are queued for [`Endpoint::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The earliest running timer's deadline: call
    /// [`Endpoint::handle_timeout`] at or after it.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.artim_deadline, self.idle_deadline) {
            (Some(artim), Some(idle)) => Some(artim.min(idle)),
            (artim, idle) => artim.or(idle),
        }
    }

    /// Fires the timer whose deadline is at or before `now` (ARTIM: the
    /// transport is to close; idle: the association is aborted), and says
    /// which. `None` when none is due (a timer that fires early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Timer> {
        if self.artim_deadline.is_some_and(|deadline| deadline <= now) {
            self.artim_deadline = None;
            self.peer_input(Input::ArtimExpired, now);
            return Some(Timer::Artim);
        }
        if self.idle_deadline.is_some_and(|deadline| deadline <= now) {
            self.idle_deadline = None;
            self.peer_input(Input::IdleExpired, now);
            return Some(Timer::Idle);
        }
        None
    }

    // ----- the state machine -----

    /// Feeds the state machine and carries out its actions.
    fn handle(&mut self, input: Input, now: Instant) -> Result<(), AssocError> {
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let result = self.association.handle_into(input, &mut actions);
        for action in actions.drain(..) {
            self.perform(action, now);
        }
        self.actions = actions;
        self.check_timers();
        result
    }

    /// An input caused by the peer or a timer: the machine cannot refuse it
    /// in a state the endpoint reads in.
    fn peer_input(&mut self, input: Input, now: Instant) {
        if let Err(error) = self.handle(input, now) {
            // Cannot happen: the endpoint reads only between the transport
            // opening and closing. Surface it in tests; stop in release.
            debug_assert!(false, "the state machine refused peer input: {error}");
            self.stop_reading();
        }
    }

    fn perform(&mut self, action: Action, now: Instant) {
        match action {
            Action::SendPdu(bytes) => {
                if self.transmit.is_empty() {
                    self.transmit = bytes;
                } else {
                    self.transmit.extend_from_slice(&bytes);
                }
            }
            Action::StartArtimTimer => {
                self.artim_deadline = Some(now.checked_add(self.config.artim).unwrap_or(now));
            }
            Action::StopArtimTimer => self.artim_deadline = None,
            Action::StartIdleTimer => {
                self.idle_deadline = Some(now.checked_add(self.config.idle).unwrap_or(now));
            }
            Action::StopIdleTimer => self.idle_deadline = None,
            Action::CloseTransport => self.stop_reading(),
            Action::ConnectTransport => {
                // AE-1: the caller opens the transport after request_association.
                assert_eq!(self.state(), State::Sta4AwaitingTransportOpen);
            }
            Action::Indication(Indication::PData) => self.deliver_pdata = true,
            Action::Indication(indication) => {
                match &indication {
                    Indication::AssociateAccepted(negotiated) => {
                        self.decoder
                            .set_pdata_length_max(negotiated.pdu_length_max_local);
                    }
                    Indication::Aborted(_) => self.reassembly.reset(),
                    _ => {}
                }
                self.events.push_back(Incoming::Indication(indication));
            }
        }
    }

    /// A PDU that does not decode: Evt19. The stream cannot be
    /// resynchronised, so nothing more is read; the state machine's answer
    /// (AA-8: A-ABORT, then Sta13 until the peer closes or ARTIM expires)
    /// decides when the transport closes.
    fn malformed(&mut self, error: crate::pdu::DecodeError, now: Instant) {
        let invalid = InvalidPdu::new(self.decoder.failed_pdu_type(), &error);
        self.reading = false;
        self.deliver_pdata = false;
        self.events
            .push_back(Incoming::Violation(Violation::Pdu(error)));
        self.reassembly.reset();
        self.peer_input(Input::InvalidPdu(invalid), now);
    }

    fn stop_reading(&mut self) {
        self.reading = false;
        self.close_requested = true;
        self.deliver_pdata = false;
        self.reassembly.reset();
    }

    /// The deadlines follow the state machine's timers: ARTIM runs only
    /// in Sta2 and Sta13, the idle timer only in Sta5-Sta12.
    fn check_timers(&self) {
        let state = self.state();
        debug_assert!(
            self.artim_deadline.is_none()
                || matches!(
                    state,
                    State::Sta2AwaitingAssociateRq | State::Sta13AwaitingTransportClose
                ),
            "ARTIM running in {state:?}"
        );
        debug_assert!(
            self.idle_deadline.is_none() || (5..=12).contains(&state.number()),
            "idle timer running in {state:?}"
        );
    }
}
