//! A blocking requestor association on a `std` TCP socket, driving the
//! sans-I/O [`Endpoint`]: for the one-off SCU work that gains nothing from
//! the `sluice-io` runtime (the Q/R SCU commands, the load generator's key
//! discovery, relaying a C-GET's sub-operations to a local Storage SCP).
//!
//! One call sends, one call waits for the peer's next event
//! ([`Client::receive`]); streamed data sets (C-STORE-RQs a C-GET brings) come
//! out as owned chunks ([`Received::Data`]), since the receive buffer is
//! reused. Every wait is bounded by the timeout given at connect (or set
//! later by [`Client::set_receive_timeout`]): when the peer says nothing for
//! that long the association is aborted (A-ABORT) and
//! [`ClientError::Timeout`] returned.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::assoc::{Indication, NegotiatedAssociation, Role};
use crate::dimse::Command;
use crate::endpoint::{DataSet, Endpoint, EndpointConfig, Incoming, SendError};
use crate::pdu::AssociateRq;

/// Size of the receive buffer.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// Bytes read from a streamed data set's source at a time.
const STREAM_CHUNK: usize = 256 * 1024;

/// Why a client association failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// Where.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer said nothing within the timeout; the association was aborted.
    #[error("no answer from the peer within {} s: association aborted (A-ABORT)", .0.as_secs_f64())]
    Timeout(Duration),
    /// The peer rejected the association.
    #[error(
        "association rejected (result {result}, source {reject_source}, reason {reason}): {text}"
    )]
    Rejected {
        /// Result (1 permanent, 2 transient).
        result: u8,
        /// Source (1 user, 2 ACSE, 3 presentation).
        reject_source: u8,
        /// Reason code.
        reason: u8,
        /// What the codes mean.
        text: String,
    },
    /// The peer aborted, closed the connection, or broke the protocol.
    #[error("association ended by the peer: {0}")]
    Ended(String),
    /// A message could not be sent (a local error).
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
}

/// What the peer did next.
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// A complete command (its data set collected, absent, or streamed as
    /// [`Received::Data`] chunks that follow).
    Command {
        /// The presentation context.
        context_id: u8,
        /// The command.
        command: Command,
        /// Its data set.
        data_set: DataSet,
    },
    /// Bytes of a streamed data set.
    Data {
        /// The bytes.
        bytes: Vec<u8>,
        /// They end the data set.
        last: bool,
    },
    /// The peer asked to release; [`Client::answer_release`] answers.
    ReleaseRequested,
    /// Our release was confirmed.
    Released,
}

/// One requestor association. See the [module documentation](self).
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    endpoint: Endpoint,
    timeout: Duration,
    buffer: Vec<u8>,
    queued: VecDeque<Step>,
    ended: Option<String>,
}

impl Client {
    /// Connects to `address` within `timeout` and asks for the association
    /// `rq`; returns the client and what was accepted.
    pub fn connect(
        address: SocketAddr,
        rq: AssociateRq,
        config: EndpointConfig,
        timeout: Duration,
    ) -> Result<(Client, Box<NegotiatedAssociation>), ClientError> {
        let stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|source| ClientError::Connect { address, source })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            endpoint: Endpoint::new(Role::Requestor, config),
            timeout,
            buffer: vec![0; RECEIVE_BUFFER],
            queued: VecDeque::new(),
            ended: None,
        };
        let now = Instant::now();
        let refused = |error: crate::assoc::AssocError| ClientError::Ended(error.to_string());
        client
            .endpoint
            .request_association(Box::new(rq), now)
            .map_err(refused)?;
        client.endpoint.transport_connected(now).map_err(refused)?;
        match client.next_step()? {
            Step::Association(Incoming::Indication(Indication::AssociateAccepted(negotiated))) => {
                Ok((client, negotiated))
            }
            Step::Association(Incoming::Indication(Indication::AssociateRejected(rj))) => {
                let (result, source, reason) = rj.codes();
                Err(ClientError::Rejected {
                    result,
                    reject_source: source,
                    reason,
                    text: reject_text(source, reason).to_string(),
                })
            }
            Step::Association(other) => Err(ClientError::Ended(describe(&other))),
            Step::Received(_) => Err(ClientError::Ended(
                "a message before the association was accepted".into(),
            )),
        }
    }

    /// The endpoint (Message IDs, negotiated contexts).
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Sends `command` with its data set now.
    pub fn send(
        &mut self,
        context_id: u8,
        command: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), ClientError> {
        self.endpoint.send_message(context_id, command, data_set)?;
        self.flush()
    }

    /// Sends `command`, whose data set follows in parts
    /// ([`Client::send_data_set_part`]) as the caller gets them: for
    /// relaying a data set whose length is known only at its end, holding
    /// one part at a time. No other message may be sent before the last part.
    pub fn send_command_before_parts(
        &mut self,
        context_id: u8,
        command: &Command,
    ) -> Result<(), ClientError> {
        self.endpoint
            .send_command_before_parts(context_id, command)?;
        self.flush()
    }

    /// Sends one part of the data set announced by
    /// [`Client::send_command_before_parts`]; `last` ends it.
    pub fn send_data_set_part(
        &mut self,
        context_id: u8,
        part: &[u8],
        last: bool,
    ) -> Result<(), ClientError> {
        self.endpoint.send_data_set_part(context_id, part, last)?;
        self.flush()
    }

    /// Sends `command` and then its data set of `length` bytes read from
    /// `source` as it goes (a large data set from a file, never held whole).
    /// A source that ends early, or fails, aborts the association: a data
    /// set whose length was announced cannot be cut short.
    pub fn send_streamed(
        &mut self,
        context_id: u8,
        command: &Command,
        length: u64,
        source: &mut dyn Read,
    ) -> Result<(), ClientError> {
        let fragmenter = self
            .endpoint
            .send_command_for_data_set(context_id, command, length)?;
        self.flush()?;
        let mut chunk = Vec::with_capacity(STREAM_CHUNK);
        for fragment in fragmenter {
            self.stream.write_all(&fragment.headers)?;
            let mut left = u64::from(fragment.value_length);
            while left > 0 {
                let want = usize::try_from(left.min(STREAM_CHUNK as u64)).unwrap_or(STREAM_CHUNK);
                chunk.resize(want, 0);
                if let Err(error) = source.read_exact(&mut chunk) {
                    self.abort_now();
                    return Err(ClientError::Io(error));
                }
                self.stream.write_all(&chunk)?;
                left -= want as u64;
            }
        }
        Ok(())
    }

    /// The peer's next command, data chunk or release event. An abort, a
    /// closed connection or a protocol violation is an error
    /// ([`ClientError::Ended`]), silence for the timeout too
    /// ([`ClientError::Timeout`], after our A-ABORT).
    pub fn receive(&mut self) -> Result<Received, ClientError> {
        match self.next_step()? {
            Step::Received(received) => Ok(received),
            Step::Association(other) => Err(ClientError::Ended(describe(&other))),
        }
    }

    /// How long each wait for the peer may last from now on: `Some` bounds
    /// every read as the connect timeout did (and [`ClientError::Timeout`]
    /// then names it), `None` waits as long as the connection lives. For an
    /// operation whose answer may take long without anything in between,
    /// such as a C-MOVE whose SCP sends no pending responses while its
    /// sub-operations run (they are optional, PS3.4 C.4.2.1.4).
    pub fn set_receive_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        if let Some(timeout) = timeout {
            self.timeout = timeout;
        }
        Ok(())
    }

    /// Answers the peer's release request.
    pub fn answer_release(&mut self) -> Result<(), ClientError> {
        self.endpoint
            .answer_release(Instant::now())
            .map_err(|error| ClientError::Ended(error.to_string()))?;
        self.flush()
    }

    /// Releases the association and waits (bounded) for the confirmation.
    /// Answers still arriving for earlier requests are dropped.
    pub fn release(mut self) -> Result<(), ClientError> {
        self.endpoint
            .release(Instant::now())
            .map_err(|error| ClientError::Ended(error.to_string()))?;
        self.flush()?;
        loop {
            match self.receive() {
                Ok(Received::Released) => return Ok(()),
                Ok(_) => {}
                // The peer closing right after its A-RELEASE-RP is a release.
                Err(ClientError::Ended(_)) if self.endpoint.is_closed() => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    /// Aborts the association (A-ABORT) and closes the connection.
    pub fn abort(mut self) {
        self.abort_now();
    }

    fn abort_now(&mut self) {
        self.endpoint.abort(Instant::now());
        let _ = self.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        while let Some(bytes) = self.endpoint.poll_transmit() {
            self.stream.write_all(&bytes)?;
        }
        Ok(())
    }

    /// The next thing the peer did, reading as needed.
    fn next_step(&mut self) -> Result<Step, ClientError> {
        loop {
            self.flush()?;
            if let Some(step) = self.queued.pop_front() {
                return Ok(step);
            }
            if let Some(incoming) = self.endpoint.poll_event() {
                return Ok(Step::Association(incoming));
            }
            if let Some(reason) = &self.ended {
                return Err(ClientError::Ended(reason.clone()));
            }
            if self.endpoint.is_closed() || self.endpoint.close_requested() {
                self.ended = Some("the association is closed".into());
                continue;
            }
            let read = match self.stream.read(&mut self.buffer) {
                Ok(read) => read,
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    self.abort_now();
                    self.ended = Some("timed out".into());
                    return Err(ClientError::Timeout(self.timeout));
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            };
            let now = Instant::now();
            if read == 0 {
                self.endpoint.transport_closed(now);
                if let Some(incoming) = self.endpoint.poll_event() {
                    self.queued.push_back(Step::Association(incoming));
                }
                self.ended = Some("the peer closed the connection".into());
                continue;
            }
            let input = self.buffer.get(..read).unwrap_or_default();
            let mut cursor = 0;
            while let Some(incoming) = self.endpoint.receive(input, &mut cursor, now) {
                let step = match incoming {
                    Incoming::Data { range, last, .. } => Step::Received(Received::Data {
                        bytes: input.get(range).unwrap_or_default().to_vec(),
                        last,
                    }),
                    Incoming::Command {
                        context_id,
                        command,
                        data_set,
                    } => Step::Received(Received::Command {
                        context_id,
                        command,
                        data_set,
                    }),
                    Incoming::Indication(Indication::ReleaseRequest) => {
                        Step::Received(Received::ReleaseRequested)
                    }
                    Incoming::Indication(Indication::ReleaseConfirm) => {
                        Step::Received(Received::Released)
                    }
                    other => Step::Association(other),
                };
                self.queued.push_back(step);
            }
        }
    }
}

/// What the peer did: a service-level event, or an association-level one
/// (accept, reject, abort, violation).
#[derive(Debug)]
enum Step {
    Received(Received),
    Association(Incoming),
}

/// An association-level event as words.
fn describe(incoming: &Incoming) -> String {
    match incoming {
        Incoming::Indication(Indication::Aborted(cause)) => format!("aborted ({cause:?})"),
        Incoming::Violation(violation) => format!("protocol violation: {violation}"),
        other => format!("unexpected event {other:?}"),
    }
}

/// PS3.8 Table 9-21's reasons, in words.
fn reject_text(source: u8, reason: u8) -> &'static str {
    match (source, reason) {
        (1, 1) => "no reason given",
        (1, 2) => "application context name not supported",
        (1, 3) => "calling AE title not recognized",
        (1, 7) => "called AE title not recognized",
        (2, 1) => "no reason given (ACSE)",
        (2, 2) => "protocol version not supported",
        (3, 1) => "temporary congestion",
        (3, 2) => "local limit exceeded",
        _ => "reason not defined by PS3.8",
    }
}
