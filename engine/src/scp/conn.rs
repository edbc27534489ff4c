//! One association on a core ([`Connection`]) and the core's table of them
//! ([`Connections`]).
//!
//! A connection owns what one association needs whatever service it
//! carries: its `sluice_net::endpoint::Endpoint` (the upper-layer state
//! machine, the stream decoder, DIMSE message reassembly and encoding, the
//! ARTIM and idle deadlines), the one io timer behind those deadlines, its
//! sends in flight and the close that waits for them, what its data-set
//! fragments go to ([`Receiving`]), and the counters of its "association
//! ended" line. Bytes come in through [`Connection::next_incoming`], which
//! yields the endpoint's `Incoming` items: indications, decoded commands
//! (small data sets collected whole), data-set fragments of a C-STORE as
//! ranges of the receive buffer (never copied), and the peer's violations
//! (already answered with an A-ABORT). After every call that moves the
//! endpoint, the connection sends what it queued, re-arms the timer, and
//! closes the transport when asked.
//!
//! The services (ingest, commitment, later Query/Retrieve) and the handler
//! reach a connection by its serial through [`Connections::get_mut`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_io::{ConnId, Core, FileHandle, FileSend, IoBuf, SubmitError, TimerId};
use sluice_net::assoc::{AssociateResponse, NegotiatedAssociation, Role};
use sluice_net::dimse::Command;
use sluice_net::endpoint::{Ahead, Endpoint, EndpointConfig, Incoming, SendError, Timer};
use sluice_net::pdu::AssociateRq;

use super::exact::Exact;
use super::ingest::segments::Landing;
use super::ingest::{JobKey, Refused};
use super::tag::{tag, TagKind};
use super::tls::TlsSession;
use crate::escape::Escaped;
use crate::metrics::AeCounters;

/// Room for a TLS record's header, tag and padding per send, so that the
/// encrypted copy of a small send is allocated once.
const TLS_RECORD_OVERHEAD: usize = 64;

/// The association timers' durations (`network.artim_timeout_ms`,
/// `network.idle_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) artim: Duration,
    pub(crate) idle: Duration,
}

/// What a connection's incoming data-set fragments go to (a C-STORE's:
/// every other data set is collected whole by the endpoint).
#[derive(Debug)]
pub(crate) enum Receiving {
    /// Streamed into its job's file.
    Store(JobKey),
    /// Refused at its command: read and dropped, then answered.
    Discard(Refused),
}

/// Who an association is for: which service its indications and
/// responses go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A peer opened it (any service, by command).
    Inbound,
    /// Opened by this core to deliver commitment reports.
    CommitmentReports,
    /// Opened by this core to send a C-MOVE's sub-operations.
    MoveSubOperations,
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
    /// Answered 0000 and stored (or dropped as a byte-identical duplicate).
    pub(crate) instances_stored: u64,
    /// Answered 0000 and held in quarantine.
    pub(crate) instances_quarantined: u64,
    pub(crate) instances_failed: u64,
    pub(crate) bytes_received: u64,
    /// C-STORE sub-operations this side sent on it (C-MOVE, C-GET).
    pub(crate) instances_sent: u64,
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
    /// What its access rule grants (everything when Sluice opened it).
    pub(crate) access: super::access::Grant,
    /// Its TLS session, when it came in on the TLS listener: what arrives
    /// is decrypted before the endpoint reads it ([`Connection::decrypt`]),
    /// what the endpoint transmits encrypted before it is sent.
    pub(crate) tls: Option<Box<TlsSession>>,
    /// Who it is for.
    pub(crate) purpose: Purpose,
    /// The SOP Class Extended Negotiation granted, per SOP class UID (the
    /// service-class-application-information answered; Q/R classes).
    pub(crate) extended_negotiation: Vec<(String, Vec<u8>)>,
    /// What its data-set fragments go to.
    pub(crate) receiving: Option<Receiving>,
    /// The record buffer of its data set, lent to a receive of the rest
    /// of a data PDV straight into it (`Core::recv_into`): the job's, and
    /// where the bytes land.
    pub(crate) lent: Option<(JobKey, Landing)>,
    /// The instance whose lent buffer came back unused (the pooled
    /// receive had taken the bytes first): not lent again, so a sender
    /// ahead of the core costs one stop of the pooled receive an
    /// instance, not one per buffer.
    pub(crate) lend_preempted: Option<JobKey>,
    /// Its exact receive of headers, commands and small values, on an
    /// association that sends large data PDVs.
    pub(crate) exact: Exact,
    /// How it ended, for the log line.
    pub(crate) outcome: Option<String>,
    /// Its counters.
    pub(crate) counters: Counters,
    /// Its calling AE's metrics, from its acceptance (when counting).
    pub(crate) ae_metrics: Option<Arc<AeCounters>>,
    endpoint: Endpoint,
    /// Requests received and not yet answered (C-STORE-RQ, N-ACTION-RQ):
    /// a stopping server waits for them before it aborts the association.
    owed: u32,
    /// The io timer armed for the endpoint's earliest deadline, and the
    /// deadline it was armed for.
    timer_armed: Option<(TimerId, Instant)>,
    sends_in_flight: u32,
    closing: Closing,
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
        let mut config = EndpointConfig::default();
        config.artim = timeouts.artim;
        config.idle = timeouts.idle;
        Connection {
            id,
            serial,
            peer,
            listener,
            calling_ae_title: String::new(),
            called_ae_title: String::new(),
            counted: false,
            ae_metrics: None,
            access: super::access::Grant::OPEN,
            tls: None,
            purpose: Purpose::Inbound,
            extended_negotiation: Vec::new(),
            receiving: None,
            lent: None,
            lend_preempted: None,
            exact: Exact::default(),
            outcome: None,
            counters: Counters {
                contexts_accepted: 0,
                instances_stored: 0,
                instances_quarantined: 0,
                instances_failed: 0,
                bytes_received: 0,
                instances_sent: 0,
                started: Instant::now(),
            },
            endpoint: Endpoint::new(role, config),
            owed: 0,
            timer_armed: None,
            sends_in_flight: 0,
            closing: Closing::Open,
        }
    }

    /// An association a peer opened on `listener`: its ARTIM timer runs.
    pub(crate) fn accepted(
        core: &mut Core,
        id: ConnId,
        serial: u64,
        peer: Option<SocketAddr>,
        listener: usize,
        timeouts: Timeouts,
    ) -> Connection {
        let mut conn = Connection::new(id, serial, peer, Role::Acceptor, listener, timeouts);
        let connected = conn.endpoint.transport_connected(Instant::now());
        assert!(connected.is_ok(), "a new endpoint refused its transport");
        conn.flush(core);
        conn
    }

    /// An association this core opens for `purpose` with `rq`, on a
    /// connection whose connect was submitted.
    pub(crate) fn outbound(
        id: ConnId,
        serial: u64,
        peer: SocketAddr,
        (calling_ae_title, called_ae_title): (String, String),
        rq: AssociateRq,
        (purpose, timeouts): (Purpose, Timeouts),
    ) -> Connection {
        debug_assert_ne!(purpose, Purpose::Inbound);
        let mut conn = Connection::new(id, serial, Some(peer), Role::Requestor, 0, timeouts);
        conn.purpose = purpose;
        conn.calling_ae_title = calling_ae_title;
        conn.called_ae_title = called_ae_title;
        let requested = conn
            .endpoint
            .request_association(Box::new(rq), Instant::now());
        assert!(
            requested.is_ok(),
            "a new endpoint refused an association request"
        );
        conn
    }

    /// The outbound connection connected: the A-ASSOCIATE-RQ goes out.
    pub(crate) fn connected(&mut self, core: &mut Core) {
        let connected = self.endpoint.transport_connected(Instant::now());
        assert!(connected.is_ok(), "the endpoint refused its transport");
        self.flush(core);
    }

    /// Opened by this core.
    pub(crate) fn is_outbound(&self) -> bool {
        self.endpoint.role() == Role::Requestor
    }

    /// What was negotiated, once established.
    pub(crate) fn negotiated(&self) -> Option<&NegotiatedAssociation> {
        self.endpoint.negotiated()
    }

    /// Established, and not closing: P-DATA may be sent.
    pub(crate) fn may_send_pdata(&self) -> bool {
        self.is_established() && self.closing == Closing::Open
    }

    /// The association is established (Sta6, or Sta8 with a release to
    /// answer).
    pub(crate) fn is_established(&self) -> bool {
        self.endpoint.may_send_pdata()
    }

    /// A request that owes its peer an answer (C-STORE-RQ, N-ACTION-RQ,
    /// C-FIND-RQ, C-MOVE-RQ, C-GET-RQ) arrived.
    pub(crate) fn request_received(&mut self) {
        self.owed += 1;
    }

    /// Nothing owed and nothing arriving: a stopping server may abort it
    /// without leaving a request unanswered.
    pub(crate) fn is_idle(&self) -> bool {
        self.owed == 0 && self.receiving.is_none()
    }

    /// The transport is closing (or closed): nothing more to do with it.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing != Closing::Open || self.endpoint.close_requested()
    }

    /// A fresh Message ID for a request this side sends.
    pub(crate) fn message_id(&mut self) -> u16 {
        self.endpoint.next_message_id()
    }

    // ----- bytes in -----

    /// The next thing that arrived in `data` from `offset` on (advanced past
    /// what is consumed), or `None` when the buffer is used up or the
    /// endpoint reads nothing more. What the endpoint queued on the way
    /// (an A-ABORT for a violation) is sent before.
    pub(crate) fn next_incoming(
        &mut self,
        core: &mut Core,
        data: &[u8],
        offset: &mut usize,
    ) -> Option<Incoming> {
        let incoming = self.endpoint.receive(data, offset, Instant::now());
        self.flush(core);
        incoming
    }

    /// Where the stream is, when the next receive may go into a buffer
    /// (`Core::recv_into`, `Core::recv_some_into`): a plain association
    /// (TLS decrypts in user space), open, with no such receive pending.
    pub(crate) fn ahead(&self) -> Option<Ahead> {
        if self.tls.is_some() || self.lent.is_some() || self.exact.is_lent() || self.is_closing() {
            return None;
        }
        self.endpoint.ahead()
    }

    /// The largest data PDV value the peer sent since the last call.
    pub(crate) fn take_data_pdv_max(&mut self) -> u32 {
        self.endpoint.take_data_pdv_max()
    }

    /// The next event raised outside the receive path (by a timeout, the
    /// transport's end, or a local request).
    pub(crate) fn next_event(&mut self) -> Option<Incoming> {
        self.endpoint.poll_event()
    }

    // ----- the association -----

    /// Answers the peer's A-ASSOCIATE-RQ.
    pub(crate) fn answer_association(&mut self, core: &mut Core, response: AssociateResponse) {
        let answered = self.endpoint.answer_association(response, Instant::now());
        // The indication was just handed out: the state awaits the answer.
        assert!(
            answered.is_ok(),
            "the endpoint refused the association's answer"
        );
        self.flush(core);
    }

    /// Answers the peer's release request (or a collision).
    pub(crate) fn answer_release(&mut self, core: &mut Core) {
        if let Err(error) = self.endpoint.answer_release(Instant::now()) {
            // The peer aborted meanwhile: nothing to answer.
            tracing::debug!(peer = ?self.peer, %error, "association state machine refused the release answer");
        }
        self.flush(core);
    }

    /// Asks the peer to release.
    pub(crate) fn release(&mut self, core: &mut Core) {
        if let Err(error) = self.endpoint.release(Instant::now()) {
            // Not established any more: nothing to release.
            tracing::debug!(peer = ?self.peer, %error, "association state machine refused the release request");
        }
        self.flush(core);
    }

    /// Aborts the association (A-ABORT) and closes the transport once sent.
    pub(crate) fn abort(&mut self, core: &mut Core, reason: &str) {
        tracing::warn!(peer = ?self.peer, calling_ae = %Escaped(&self.calling_ae_title), reason, "aborting the association");
        self.abort_quietly(core, reason);
    }

    /// [`Connection::abort`] without its warning: the shutdown's aborts,
    /// which its "association ended" lines and the drain's summary report.
    pub(crate) fn abort_quietly(&mut self, core: &mut Core, reason: &str) {
        self.outcome = Some(format!("aborted by Sluice: {reason}"));
        self.endpoint.abort(Instant::now());
        self.flush(core);
    }

    // ----- bytes out -----

    /// Sends a DIMSE message (command, and its data set when it announces
    /// one). `Err` when it cannot go out (nothing was sent).
    pub(crate) fn send_message(
        &mut self,
        core: &mut Core,
        context_id: u8,
        command: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), SendError> {
        let sent = self.queue_message(context_id, command, data_set);
        self.flush(core);
        sent
    }

    /// A message went out: a final answer to a counted request (C-STORE,
    /// N-ACTION, C-FIND, C-MOVE, C-GET; a pending answer is not final)
    /// settles it.
    fn answered(&mut self, command: &Command) {
        let settles = match command {
            Command::CStoreRsp(_) | Command::NActionRsp(_) => true,
            Command::CFindRsp(rsp) => !rsp.status.is_pending(),
            Command::CMoveRsp(rsp) | Command::CGetRsp(rsp) => !rsp.status.is_pending(),
            _ => false,
        };
        if settles {
            // Every request answered was counted by `request_received`.
            debug_assert!(self.owed > 0, "an answer to a request not counted");
            self.owed = self.owed.saturating_sub(1);
        }
    }

    /// Queues a DIMSE message without sending it yet: several go out in
    /// one send at the next [`Connection::flush_sends`] (or any call that
    /// sends). `Err` when it cannot go out (nothing was queued).
    pub(crate) fn queue_message(
        &mut self,
        context_id: u8,
        command: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), SendError> {
        let sent = self.endpoint.send_message(context_id, command, data_set);
        if sent.is_ok() {
            self.answered(command);
        }
        sent
    }

    /// Sends what was queued.
    pub(crate) fn flush_sends(&mut self, core: &mut Core) {
        self.flush(core);
    }

    /// Sends `command`, whose data set of `data_set_length` bytes the
    /// caller sends next with [`Connection::send_bytes`], framed in
    /// P-DATA-TF PDUs of its own (no other message may come between).
    pub(crate) fn send_command_for_data_set(
        &mut self,
        core: &mut Core,
        context_id: u8,
        command: &Command,
        data_set_length: u64,
    ) -> Result<(), SendError> {
        let sent = self
            .endpoint
            .send_command_for_data_set(context_id, command, data_set_length)
            .map(drop);
        self.flush(core);
        sent
    }

    /// Like [`Connection::send_command_for_data_set`], without sending: the
    /// caller takes the queued bytes with [`Connection::take_transmit`] to
    /// send them in one buffer with the data set's first PDUs.
    pub(crate) fn queue_command_for_data_set(
        &mut self,
        context_id: u8,
        command: &Command,
        data_set_length: u64,
    ) -> Result<(), SendError> {
        self.endpoint
            .send_command_for_data_set(context_id, command, data_set_length)
            .map(drop)
    }

    /// The bytes the endpoint queued and nobody sent yet; the caller sends
    /// them (before anything else on the association).
    pub(crate) fn take_transmit(&mut self) -> Option<Vec<u8>> {
        self.endpoint.poll_transmit()
    }

    /// Sends bytes the caller framed (a data set's P-DATA-TF PDUs), after
    /// what the endpoint queued.
    pub(crate) fn send_bytes(&mut self, core: &mut Core, bytes: IoBuf) {
        self.flush(core);
        self.send(core, bytes);
    }

    /// Sends `send` (a data set's PDUs, their values read from `file` from
    /// `offset`) after what the endpoint queued, from the file to the
    /// socket without a copy in user space (`Core::send_file`). `Err` when
    /// the core refuses it (nothing of it was sent: the caller sends the
    /// same bytes by copy). Never on a TLS association (its bytes must be
    /// encrypted): refused with `Unsupported`.
    pub(crate) fn send_file(
        &mut self,
        core: &mut Core,
        file: FileHandle,
        offset: u64,
        send: FileSend,
    ) -> Result<(), SubmitError> {
        if self.tls.is_some() {
            return Err(SubmitError::Unsupported);
        }
        self.flush(core);
        if self.closing == Closing::Closed {
            // The transport is being closed: nothing reaches the peer.
            return Ok(());
        }
        core.send_file(self.id, file, offset, send, tag(TagKind::Send, self.serial))?;
        self.sends_in_flight += 1;
        Ok(())
    }

    /// Sends in flight on the transport (each `send_bytes`, and each flush
    /// with something queued, is one).
    pub(crate) fn sends_in_flight(&self) -> u32 {
        self.sends_in_flight
    }

    /// The peer's Maximum Length (0: no limit), once established.
    pub(crate) fn pdu_length_max_peer(&self) -> Option<u32> {
        self.endpoint.pdu_length_max_peer()
    }

    /// Sends a response (no data set) on `context_id`. Every request gets
    /// its answer or, when the answer cannot be encoded (a service echoed a
    /// value the encoder refuses), the association is aborted and the
    /// reason logged at error: never a silent drop (issue #19: a response
    /// that could not be encoded left its sender waiting forever).
    pub(crate) fn send_command(&mut self, core: &mut Core, context_id: u8, command: &Command) {
        match self.send_message(core, context_id, command, None) {
            // Counted as answered by `send_message`.
            Ok(()) => {}
            // No longer established (released or aborted while the answer
            // was on its way): the peer gets no answer.
            Err(SendError::NotAllowed(error)) => {
                tracing::debug!(peer = ?self.peer, %error, "response not sent: the association has ended");
            }
            Err(error) => {
                tracing::error!(
                    peer = ?self.peer,
                    calling_ae = %Escaped(&self.calling_ae_title),
                    command = ?command.command_field(),
                    %error,
                    "a response cannot be sent; aborting the association"
                );
                self.abort(core, "a response could not be encoded");
            }
        }
    }

    /// Sends what the endpoint queued, arms the timer for its next
    /// deadline, and closes the transport once it asks and the sends
    /// completed.
    fn flush(&mut self, core: &mut Core) {
        if let Some(bytes) = self.endpoint.poll_transmit() {
            self.send(core, bytes);
        }
        self.arm_timer(core);
        if self.endpoint.close_requested() {
            self.close_when_sent(core);
        }
    }

    /// Sends `bytes` of the association: as they are, or encrypted on a
    /// TLS association.
    fn send(&mut self, core: &mut Core, bytes: impl Into<IoBuf>) {
        let bytes = bytes.into();
        let Some(tls) = self.tls.as_mut() else {
            self.send_transport(core, bytes);
            return;
        };
        let mut records = Vec::with_capacity(bytes.len().saturating_add(TLS_RECORD_OVERHEAD));
        let encrypted = tls.send(bytes.as_slice(), &mut records);
        if let Err(error) = encrypted {
            tracing::warn!(peer = ?self.peer, %error, "cannot encrypt a send; closing");
            self.outcome
                .get_or_insert_with(|| format!("TLS send failed: {error}"));
            self.close_when_sent(core);
            return;
        }
        if !records.is_empty() {
            self.send_transport(core, IoBuf::from(records));
        }
    }

    /// Received bytes of a TLS association, decrypted: the plaintext they
    /// hold (empty during the handshake, or after a failure); `None` on a
    /// plain association, whose bytes are the plaintext. What the session
    /// has to send (its handshake, an alert) is sent. A failure (a
    /// certificate refused, a plain client on the TLS port, a bad record)
    /// is logged and ends the connection as if the peer had closed it.
    pub(crate) fn decrypt(
        &mut self,
        core: &mut Core,
        ciphertext: &[u8],
        audit: &crate::audit::Audit,
    ) -> Option<Vec<u8>> {
        let tls = self.tls.as_mut()?;
        if tls.has_failed() {
            return Some(Vec::new());
        }
        let mut plaintext = Vec::new();
        let mut to_send = Vec::new();
        let result = tls.receive(ciphertext, &mut plaintext, &mut to_send);
        if !to_send.is_empty() {
            self.send_transport(core, IoBuf::from(to_send));
        }
        if let Err(error) = result {
            tracing::warn!(
                peer = ?self.peer,
                listener = self.listener,
                %error,
                "TLS refused: closing the connection"
            );
            // Inbound, the peer's AE is not known yet (the handshake
            // comes first); outbound, it is the remote Sluice called.
            let (alert, remote_ae) = match self.purpose {
                Purpose::Inbound => (crate::audit::Alert::TlsRefused, ""),
                Purpose::CommitmentReports | Purpose::MoveSubOperations => (
                    crate::audit::Alert::TlsRefusedOutbound,
                    self.called_ae_title.as_str(),
                ),
            };
            audit.security_alert(
                alert,
                self.peer,
                remote_ae,
                &format!("TLS refused: {error}"),
            );
            self.outcome
                .get_or_insert_with(|| format!("TLS refused: {error}"));
            self.receive_ended(core, None);
            return Some(Vec::new());
        }
        Some(plaintext)
    }

    /// Sends `bytes` on the transport as they are.
    fn send_transport(&mut self, core: &mut Core, bytes: IoBuf) {
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
        self.endpoint.transport_closed(Instant::now());
        self.flush(core);
        self.close_when_sent(core);
    }

    fn close_when_sent(&mut self, core: &mut Core) {
        if self.closing == Closing::Open {
            // A TLS association says it is closing (close_notify), so the
            // peer can tell the end from a truncation.
            if let Some(tls) = self.tls.as_mut().filter(|tls| !tls.has_failed()) {
                let mut alert = Vec::new();
                tls.close(&mut alert);
                if !alert.is_empty() {
                    self.send_transport(core, IoBuf::from(alert));
                }
            }
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

    /// One io timer per connection, for the endpoint's earliest deadline. A
    /// deadline that moves later (the idle timer restarts on every PDU)
    /// costs nothing: the timer fires early and is armed again for the
    /// rest, one operation per period. A deadline earlier than the armed
    /// one (ARTIM after a release or an abort, while the idle timer's is
    /// armed) re-arms it: it used to fire only at the idle deadline.
    fn arm_timer(&mut self, core: &mut Core) {
        let Some(deadline) = self.endpoint.next_deadline() else {
            return;
        };
        if let Some((timer, armed_for)) = self.timer_armed {
            if armed_for <= deadline {
                return;
            }
            core.cancel_timer(timer);
            self.timer_armed = None;
        }
        let after = deadline.saturating_duration_since(Instant::now());
        match core.timer(after, tag(TagKind::ConnTimer, self.serial)) {
            Ok(timer) => self.timer_armed = Some((timer, deadline)),
            // Without it the association waits for its peer (or its end).
            Err(error) => tracing::warn!(%error, "cannot arm an association timer"),
        }
    }

    /// The connection's timer fired: a deadline that passed fires (ARTIM:
    /// the transport closes; idle: the association is aborted), else the
    /// timer is armed again for the next one.
    pub(crate) fn timer_fired(&mut self, core: &mut Core) {
        self.timer_armed = None;
        let what = match self.endpoint.handle_timeout(Instant::now()) {
            Some(Timer::Artim) => Some("ARTIM timeout"),
            Some(Timer::Idle) => Some("idle timeout"),
            Some(_) | None => None,
        };
        if let Some(what) = what {
            tracing::warn!(peer = ?self.peer, calling_ae = %Escaped(&self.calling_ae_title), "{what}: aborting the association");
            self.outcome = Some(what.to_owned());
        }
        self.flush(core);
    }

    /// Cancels the timer of a connection that ended.
    pub(crate) fn cancel_timer(&mut self, core: &mut Core) {
        if let Some((timer, _)) = self.timer_armed.take() {
            core.cancel_timer(timer);
        }
    }

    /// The "association ended" line.
    pub(crate) fn log_ended(&mut self) {
        tracing::info!(
            peer = %self.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            calling_ae = %Escaped(&self.calling_ae_title),
            called_ae = %Escaped(&self.called_ae_title),
            contexts_accepted = self.counters.contexts_accepted,
            instances_stored = self.counters.instances_stored,
            instances_quarantined = self.counters.instances_quarantined,
            instances_failed = self.counters.instances_failed,
            instances_sent = self.counters.instances_sent,
            bytes = self.counters.bytes_received,
            duration_ms = self.counters.started.elapsed().as_millis() as u64,
            outcome = %Escaped(self.outcome.take().unwrap_or_else(|| "connection closed".to_owned())),
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

    /// No connection left.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }

    /// The serials of the connections for which `keep` holds.
    pub(crate) fn serials_where(&self, keep: impl Fn(&Connection) -> bool) -> Vec<u64> {
        self.by_serial
            .values()
            .filter(|conn| keep(conn))
            .map(|conn| conn.serial)
            .collect()
    }

    /// Takes out a connection whose socket is gone (closed, or its connect
    /// failed).
    pub(crate) fn remove(&mut self, serial: u64) -> Option<Connection> {
        let conn = self.by_serial.remove(&serial)?;
        self.serial_of.remove(&conn.id);
        Some(conn)
    }
}
