//! One association on a core ([`Connection`]) and the core's table of them
//! ([`Connections`]).
//!
//! A connection owns what one association needs whatever service it
//! carries: the `sluice-net` upper-layer state machine and stream decoder,
//! the reassembly of command sets, the one io timer behind its ARTIM and
//! idle timers, its sends in flight and the closing that waits for them,
//! what its data PDVs go to ([`Receiving`]), and the counters of its
//! "association ended" log line. Bytes come in through
//! [`Connection::next_incoming`], which yields [`Incoming`] items: the
//! association's indications, whole command sets, and data-set fragments as
//! ranges of the receive buffer (never copied). That is the shape of
//! `sluice_net::endpoint`, which replaces the decoder, state machine and
//! assembly held here once it lands.
//!
//! The services (ingest, commitment, later Query/Retrieve) and the handler
//! reach a connection by its serial through [`Connections::get_mut`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use sluice_io::{ConnId, Core, TimerId};
use sluice_net::assoc::{
    Action, AssocError, Association, Indication, Input, InvalidPdu, NegotiatedAssociation, Role,
};
use sluice_net::dimse::{Command, NActionRq};
use sluice_net::pdata::{encode_message, StreamDecoder, StreamEvent};
use sluice_net::pdu::DecodeLimits;

use super::failure::Failure;
use super::ingest::{JobKey, Refused};
use super::tag::{tag, TagKind};

/// Longest command set accepted (a C-STORE-RQ is ~200 bytes).
const COMMAND_BYTES_MAX: usize = 64 * 1024;

/// The association timers' durations (`network.artim_timeout_ms`,
/// `network.idle_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) artim: Duration,
    pub(crate) idle: Duration,
}

/// What a connection's incoming data PDVs go to.
#[derive(Debug)]
pub(crate) enum Receiving {
    /// A C-STORE's data set, streamed into its job's file.
    Store(JobKey),
    /// A C-STORE refused at its command: read and dropped, then answered.
    Discard(Refused),
    /// An N-ACTION-RQ's action information, collected then decoded.
    Action(ActionCollection),
    /// A data set nobody needs (an N-EVENT-REPORT-RSP's reply): dropped.
    Ignore,
}

/// The action information of an N-ACTION-RQ being collected. It is small:
/// at most `DatasetLimits`' length.
#[derive(Debug)]
pub(crate) struct ActionCollection {
    /// The N-ACTION's presentation context.
    pub(crate) context_id: u8,
    /// The command.
    pub(crate) rq: NActionRq,
    /// The bytes so far.
    pub(crate) bytes: Vec<u8>,
    /// Refused already (the bytes are then dropped).
    pub(crate) refusal: Option<Failure>,
}

/// What arrived on a connection.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The association layer's news for the service user.
    Indication(Indication),
    /// A whole command set.
    Command {
        /// Its presentation context.
        context_id: u8,
        /// The encoded command set.
        bytes: Vec<u8>,
    },
    /// A fragment of a data set: this range of the receive buffer.
    Data {
        /// Its presentation context.
        context_id: u8,
        /// Where its bytes are in the receive buffer.
        range: Range<usize>,
        /// It ends the data set.
        last: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Artim,
    Idle,
}

/// Whether the transport is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Open: bytes are read and answered.
    Open,
    /// Close once the sends in flight completed; nothing more is read.
    WhenSent,
    /// The close is submitted.
    Closed,
}

/// The counters of the "association ended" line.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) contexts_accepted: usize,
    pub(crate) instances_stored: u64,
    pub(crate) instances_failed: u64,
    pub(crate) bytes_received: u64,
    started: Instant,
}

/// One association (see the module documentation).
#[derive(Debug)]
pub(crate) struct Connection {
    /// The io runtime's id of the socket.
    pub(crate) id: ConnId,
    /// This core's serial of the association (its tags' value).
    pub(crate) serial: u64,
    /// The peer.
    pub(crate) peer: Option<SocketAddr>,
    /// The listener it came through (0: main port); 0 when outbound.
    pub(crate) listener: usize,
    /// The calling AE title (ours when outbound).
    pub(crate) calling_ae_title: String,
    /// The called AE title.
    pub(crate) called_ae_title: String,
    /// Counted in the association limits (released when it ends).
    pub(crate) counted: bool,
    /// What its data PDVs go to.
    pub(crate) receiving: Option<Receiving>,
    /// How it ended, for the log line.
    pub(crate) outcome: Option<String>,
    /// Its counters.
    pub(crate) counters: Counters,
    association: Association,
    decoder: StreamDecoder,
    timeouts: Timeouts,
    /// The P-DATA-TF being read is for the service user.
    deliver_pdata: bool,
    command_bytes: Vec<u8>,
    /// The association's indications not yet handed out.
    indications: VecDeque<Indication>,
    timer_kind: Option<TimerKind>,
    timer_deadline: Instant,
    timer_armed: Option<TimerId>,
    sends_in_flight: u32,
    closing: Closing,
    next_message_id: u16,
}

impl Connection {
    fn new(
        id: ConnId,
        serial: u64,
        peer: Option<SocketAddr>,
        role: Role,
        listener: usize,
        timeouts: Timeouts,
    ) -> Connection {
        Connection {
            id,
            serial,
            peer,
            listener,
            calling_ae_title: String::new(),
            called_ae_title: String::new(),
            counted: false,
            receiving: None,
            outcome: None,
            counters: Counters {
                contexts_accepted: 0,
                instances_stored: 0,
                instances_failed: 0,
                bytes_received: 0,
                started: Instant::now(),
            },
            association: Association::new(role),
            decoder: StreamDecoder::new(DecodeLimits::default()),
            timeouts,
            deliver_pdata: false,
            command_bytes: Vec::new(),
            indications: VecDeque::new(),
            timer_kind: None,
            timer_deadline: Instant::now(),
            timer_armed: None,
            sends_in_flight: 0,
            closing: Closing::Open,
            next_message_id: 0,
        }
    }

    /// An association a peer opened on `listener`.
    pub(crate) fn accepted(
        id: ConnId,
        serial: u64,
        peer: Option<SocketAddr>,
        listener: usize,
        timeouts: Timeouts,
    ) -> Connection {
        Connection::new(id, serial, peer, Role::Acceptor, listener, timeouts)
    }

    /// An association this core opens (to deliver commitment reports).
    pub(crate) fn outbound(
        id: ConnId,
        serial: u64,
        peer: SocketAddr,
        calling_ae_title: String,
        called_ae_title: String,
        timeouts: Timeouts,
    ) -> Connection {
        let mut conn = Connection::new(id, serial, Some(peer), Role::Requestor, 0, timeouts);
        conn.calling_ae_title = calling_ae_title;
        conn.called_ae_title = called_ae_title;
        conn
    }

    /// Opened by this core.
    pub(crate) fn is_outbound(&self) -> bool {
        self.association.role() == Role::Requestor
    }

    /// What was negotiated, once established.
    pub(crate) fn negotiated(&self) -> Option<&NegotiatedAssociation> {
        self.association.negotiated()
    }

    /// Established, and not closing: P-DATA may be sent.
    pub(crate) fn may_send_pdata(&self) -> bool {
        self.is_established() && self.closing == Closing::Open
    }

    /// The association state machine is established (Sta6, or Sta8 with a
    /// release to answer).
    pub(crate) fn is_established(&self) -> bool {
        self.association.may_send_pdata()
    }

    /// A fresh Message ID for a request this side sends.
    pub(crate) fn message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        self.next_message_id
    }

    /// The largest P-DATA-TF the peer takes, from now on.
    pub(crate) fn negotiated_pdu_length(&mut self, negotiated: &NegotiatedAssociation) {
        self.decoder
            .set_pdata_length_max(negotiated.pdu_length_max_local);
        self.counters.contexts_accepted = negotiated.presentation_contexts.len();
    }

    // ----- bytes in -----

    /// The next thing that arrived in `data` from `offset` on (advanced past
    /// what is consumed), or `None` when the buffer is used up or the
    /// connection stopped reading. Indications of the association come out
    /// first, in order.
    pub(crate) fn next_incoming(
        &mut self,
        core: &mut Core,
        data: &[u8],
        offset: &mut usize,
    ) -> Option<Incoming> {
        loop {
            if let Some(indication) = self.indications.pop_front() {
                return Some(Incoming::Indication(indication));
            }
            if self.closing != Closing::Open {
                return None;
            }
            let input = data.get(*offset..).filter(|input| !input.is_empty())?;
            let step = match self.decoder.next_event(input) {
                Ok(step) => step,
                Err(error) => {
                    tracing::warn!(peer = ?self.peer, calling_ae = %self.calling_ae_title, %error, "malformed PDU; aborting the association");
                    let pdu_type = self.decoder.failed_pdu_type();
                    self.input(core, Input::InvalidPdu(InvalidPdu::new(pdu_type, &error)));
                    // Nothing more of this buffer is read.
                    *offset = data.len();
                    continue;
                }
            };
            let step_end = *offset + step.consumed;
            *offset = step_end;
            match step.event {
                None => {
                    // The decoder keeps what it could not finish.
                    debug_assert_eq!(
                        step_end,
                        data.len(),
                        "a step consumed less without an event"
                    );
                    *offset = data.len();
                }
                Some(StreamEvent::Control(pdu)) => self.input(core, Input::PduReceived(pdu)),
                Some(StreamEvent::PDataStart { .. }) => {
                    let actions = match self.association.handle(Input::PDataReceived) {
                        Ok(actions) => actions,
                        Err(error) => {
                            // P-DATA in a state with no transport: not possible
                            // while bytes arrive; nothing to do.
                            tracing::debug!(peer = ?self.peer, %error, "association state machine refused P-DATA");
                            Vec::new()
                        }
                    };
                    self.deliver_pdata = actions.contains(&Action::Indication(Indication::PData));
                    self.perform(core, actions);
                }
                Some(StreamEvent::PdvFragment(fragment)) => {
                    if !self.deliver_pdata {
                        continue;
                    }
                    let last = fragment.is_last && fragment.pdv_complete;
                    let context_id = fragment.presentation_context_id;
                    if !fragment.is_command {
                        // A fragment is the last bytes its step consumed:
                        // that range of the receive buffer is lent on.
                        let begin = step_end.saturating_sub(fragment.bytes.len());
                        return Some(Incoming::Data {
                            context_id,
                            range: begin..step_end,
                            last,
                        });
                    }
                    if self.command_bytes.len() + fragment.bytes.len() > COMMAND_BYTES_MAX {
                        self.abort(core, "command set too long");
                        continue;
                    }
                    self.command_bytes.extend_from_slice(fragment.bytes);
                    if last {
                        return Some(Incoming::Command {
                            context_id,
                            bytes: std::mem::take(&mut self.command_bytes),
                        });
                    }
                }
            }
        }
    }

    /// The next indication an input outside the receive path produced.
    pub(crate) fn next_indication(&mut self) -> Option<Indication> {
        self.indications.pop_front()
    }

    // ----- the state machine -----

    /// Feeds the association state machine and takes its actions; its
    /// indications wait for [`Connection::next_incoming`] or
    /// [`Connection::next_indication`].
    pub(crate) fn input(&mut self, core: &mut Core, input: Input) {
        match self.association.handle(input) {
            Ok(actions) => self.perform(core, actions),
            // A local request the state does not allow any more (the peer
            // released or aborted meanwhile): nothing to do.
            Err(error) => {
                tracing::debug!(peer = ?self.peer, %error, "association state machine refused an input");
            }
        }
    }

    fn perform(&mut self, core: &mut Core, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendPdu(bytes) => self.send(core, bytes),
                Action::StartArtimTimer => {
                    self.arm_timer(core, TimerKind::Artim, self.timeouts.artim);
                }
                Action::StartIdleTimer => {
                    self.arm_timer(core, TimerKind::Idle, self.timeouts.idle);
                }
                Action::StopArtimTimer | Action::StopIdleTimer => self.timer_kind = None,
                Action::CloseTransport => self.close_when_sent(core),
                // The connect was submitted with the request.
                Action::ConnectTransport => {}
                // Said by `deliver_pdata`.
                Action::Indication(Indication::PData) => {}
                Action::Indication(indication) => self.indications.push_back(indication),
            }
        }
    }

    /// Aborts the association (A-ABORT) and closes the transport once sent.
    pub(crate) fn abort(&mut self, core: &mut Core, reason: &str) {
        tracing::warn!(peer = ?self.peer, calling_ae = %self.calling_ae_title, reason, "aborting the association");
        self.outcome = Some(format!("aborted by Sluice: {reason}"));
        self.input(core, Input::AbortRequest);
        self.close_when_sent(core);
    }

    // ----- bytes out -----

    /// Sends encoded PDUs.
    pub(crate) fn send(&mut self, core: &mut Core, bytes: Vec<u8>) {
        if self.closing == Closing::Closed {
            // The transport is being closed: nothing reaches the peer.
            return;
        }
        let length = bytes.len();
        match core.send(self.id, bytes, tag(TagKind::Send, self.serial)) {
            Ok(()) => {
                self.sends_in_flight += 1;
                tracing::trace!(
                    serial = self.serial,
                    length,
                    in_flight = self.sends_in_flight,
                    "send queued"
                );
            }
            Err(error) => {
                tracing::warn!(peer = ?self.peer, %error, "cannot queue a send; closing");
                self.outcome
                    .get_or_insert_with(|| format!("send failed: {error}"));
                if self.closing == Closing::Open {
                    self.closing = Closing::WhenSent;
                }
            }
        }
    }

    /// Sends P-DATA-TF PDUs (already encoded) after the state machine
    /// allowed it.
    pub(crate) fn send_pdata(&mut self, core: &mut Core, pdus: Vec<u8>) -> Result<(), AssocError> {
        let actions = self.association.handle(Input::PDataRequest)?;
        self.perform(core, actions);
        self.send(core, pdus);
        Ok(())
    }

    /// Sends a command set (no data set) on `context_id`.
    pub(crate) fn send_command(&mut self, core: &mut Core, context_id: u8, command: &Command) {
        let Ok(actions) = self.association.handle(Input::PDataRequest) else {
            // No longer established (released or aborted while the answer
            // was on its way): the peer gets no answer.
            return;
        };
        self.perform(core, actions);
        let Some(pdu_length_max_peer) = self.negotiated().map(|n| n.pdu_length_max_peer) else {
            panic!("P-DATA allowed on an association that was not negotiated");
        };
        let mut out = Vec::new();
        let encoded = command.encode().ok().and_then(|bytes| {
            encode_message(context_id, true, &bytes, pdu_length_max_peer, &mut out).ok()
        });
        // A command that cannot be encoded is not sent (issue #19: an
        // invalid UID echoed from the request leaves it unanswered).
        if encoded.is_some() {
            self.send(core, out);
        }
    }

    /// A send completed.
    pub(crate) fn sent(&mut self, core: &mut Core, result: Result<(), String>) {
        assert!(
            self.sends_in_flight > 0,
            "a send completed that was not in flight"
        );
        self.sends_in_flight -= 1;
        tracing::trace!(
            serial = self.serial,
            ok = result.is_ok(),
            in_flight = self.sends_in_flight,
            "send completed"
        );
        if let Err(error) = result {
            self.outcome
                .get_or_insert_with(|| format!("send failed: {error}"));
            if self.closing == Closing::Open {
                self.closing = Closing::WhenSent;
            }
        }
        self.maybe_close(core);
    }

    /// The peer closed its side (or receiving failed).
    pub(crate) fn receive_ended(&mut self, core: &mut Core, error: Option<String>) {
        if let Some(error) = error {
            self.outcome
                .get_or_insert_with(|| format!("receive failed: {error}"));
        }
        if !self.association.is_closed() {
            self.input(core, Input::TransportClosed);
        }
        self.close_when_sent(core);
    }

    fn close_when_sent(&mut self, core: &mut Core) {
        if self.closing == Closing::Open {
            self.closing = Closing::WhenSent;
        }
        self.maybe_close(core);
    }

    fn maybe_close(&mut self, core: &mut Core) {
        if self.closing == Closing::WhenSent && self.sends_in_flight == 0 {
            self.closing = Closing::Closed;
            core.close_connection(self.id);
        }
    }

    // ----- the timer -----

    /// One timer per connection: a later deadline only moves the deadline,
    /// the armed timer re-arms itself when it fires early. This keeps the
    /// idle timer (restarted on every PDU) at one operation per period.
    fn arm_timer(&mut self, core: &mut Core, kind: TimerKind, after: Duration) {
        self.timer_kind = Some(kind);
        self.timer_deadline = Instant::now() + after;
        if self.timer_armed.is_none() {
            match core.timer(after, tag(TagKind::ConnTimer, self.serial)) {
                Ok(timer) => self.timer_armed = Some(timer),
                Err(error) => tracing::warn!(%error, "cannot arm an association timer"),
            }
        }
    }

    /// The connection's timer fired: early (re-armed for the rest), stopped
    /// meanwhile (nothing), or expired (the state machine aborts).
    pub(crate) fn timer_fired(&mut self, core: &mut Core) {
        self.timer_armed = None;
        let Some(kind) = self.timer_kind else {
            // Stopped since it was armed.
            return;
        };
        let now = Instant::now();
        if now < self.timer_deadline {
            // Restarted since it was armed: wait for the rest. Without a
            // timer the association waits for its peer (or its end).
            let remaining = self.timer_deadline - now;
            if let Ok(timer) = core.timer(remaining, tag(TagKind::ConnTimer, self.serial)) {
                self.timer_armed = Some(timer);
            }
            return;
        }
        self.timer_kind = None;
        let (input, what) = match kind {
            TimerKind::Artim => (Input::ArtimExpired, "ARTIM timeout"),
            TimerKind::Idle => (Input::IdleExpired, "idle timeout"),
        };
        tracing::warn!(peer = ?self.peer, calling_ae = %self.calling_ae_title, "{what}: aborting the association");
        self.outcome = Some(what.to_owned());
        self.input(core, input);
    }

    /// Cancels the timer of a connection that ended.
    pub(crate) fn cancel_timer(&mut self, core: &mut Core) {
        if let Some(timer) = self.timer_armed.take() {
            core.cancel_timer(timer);
        }
    }

    /// The "association ended" line.
    pub(crate) fn log_ended(&mut self) {
        tracing::info!(
            peer = %self.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            calling_ae = %self.calling_ae_title,
            called_ae = %self.called_ae_title,
            contexts_accepted = self.counters.contexts_accepted,
            instances_stored = self.counters.instances_stored,
            instances_failed = self.counters.instances_failed,
            bytes = self.counters.bytes_received,
            duration_ms = self.counters.started.elapsed().as_millis() as u64,
            outcome = %self.outcome.take().unwrap_or_else(|| "connection closed".to_owned()),
            "association ended"
        );
    }
}

/// The connections of one core, by serial.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    by_serial: HashMap<u64, Connection>,
    serial_of: HashMap<ConnId, u64>,
    last_serial: u64,
}

impl Connections {
    /// The serial of the next connection.
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.last_serial += 1;
        self.last_serial
    }

    pub(crate) fn insert(&mut self, conn: Connection) {
        let previous = self.serial_of.insert(conn.id, conn.serial);
        assert!(previous.is_none(), "connection id {:?} in use", conn.id);
        self.by_serial.insert(conn.serial, conn);
    }

    pub(crate) fn get_mut(&mut self, serial: u64) -> Option<&mut Connection> {
        self.by_serial.get_mut(&serial)
    }

    /// The serial of the connection with this io id.
    pub(crate) fn serial_of(&self, id: ConnId) -> Option<u64> {
        self.serial_of.get(&id).copied()
    }

    /// Takes out a connection whose socket is gone (closed, or its connect
    /// failed).
    pub(crate) fn remove(&mut self, serial: u64) -> Option<Connection> {
        let conn = self.by_serial.remove(&serial)?;
        self.serial_of.remove(&conn.id);
        Some(conn)
    }
}
