//! A blocking C-STORE SCU on one association: `sluice media import` sends
//! the File-set's files to the Storage SCP it embeds, so every instance
//! takes the durable ingest path (and its duplicate decision) that network
//! stores take. A std socket and net's sans-I/O endpoint, as the load
//! generator's key discovery does: one association at a time, one C-STORE
//! in flight, the data set streamed from its file in P-DATA fragments.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_net::assoc::{AssociationProposal, Indication, ProposedPresentationContext, Role};
use sluice_net::dimse::{CStoreRq, CStoreRsp, Command, Priority};
use sluice_net::endpoint::{Endpoint, EndpointConfig, Incoming};

use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Presentation contexts proposed per association (PS3.8 allows 128 odd IDs).
pub(crate) const CONTEXTS_PER_ASSOCIATION_MAX: usize = 127;
/// Bytes read from a file per P-DATA value.
const CHUNK: usize = 256 * 1024;
/// Largest PDU received (responses are small).
const PDU_RECEIVE_MAX: u32 = 64 * 1024;

/// Why the association failed (not one instance: the whole rest of the run).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connection to the embedded Storage SCP: {0}")]
    Io(#[from] std::io::Error),
    #[error("association with the embedded Storage SCP: {0}")]
    Association(String),
}

/// One association: the contexts accepted, by (SOP class, transfer syntax).
pub(crate) struct Association {
    stream: TcpStream,
    endpoint: Endpoint,
    accepted: Vec<(String, String, u8)>,
    buffer: Vec<u8>,
    queued: VecDeque<Incoming>,
    timeout: Duration,
}

impl Association {
    /// Connects and proposes one context per (SOP class, transfer syntax).
    pub(crate) fn open(
        address: SocketAddr,
        called_ae_title: &str,
        calling_ae_title: &str,
        contexts: &[(String, String)],
        timeout: Duration,
    ) -> Result<Association, SendError> {
        debug_assert!(contexts.len() <= CONTEXTS_PER_ASSOCIATION_MAX);
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut association = Association {
            stream,
            endpoint: Endpoint::new(Role::Requestor, EndpointConfig::default()),
            accepted: Vec::new(),
            buffer: vec![0; 64 * 1024],
            queued: VecDeque::new(),
            timeout,
        };
        let proposal = AssociationProposal {
            calling_ae_title: calling_ae_title.to_owned(),
            called_ae_title: called_ae_title.to_owned(),
            presentation_contexts: contexts
                .iter()
                .map(|(class, syntax)| ProposedPresentationContext {
                    abstract_syntax: class.clone(),
                    transfer_syntaxes: vec![syntax.clone()],
                    roles: None,
                })
                .collect(),
            pdu_length_max_receive: PDU_RECEIVE_MAX,
            implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
            implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let rq = proposal
            .to_associate_rq()
            .map_err(|error| SendError::Association(error.to_string()))?;
        let now = Instant::now();
        let refused = |_| SendError::Association("the state machine refused the request".into());
        association
            .endpoint
            .request_association(Box::new(rq), now)
            .map_err(refused)?;
        association
            .endpoint
            .transport_connected(now)
            .map_err(refused)?;
        match association.next()? {
            Incoming::Indication(Indication::AssociateAccepted(negotiated)) => {
                for (class, syntax) in contexts {
                    if let Some(context) = negotiated.presentation_context_for(class) {
                        if context.transfer_syntax == *syntax {
                            association
                                .accepted
                                .push((class.clone(), syntax.clone(), context.id));
                        }
                    }
                }
                Ok(association)
            }
            Incoming::Indication(Indication::AssociateRejected(rj)) => {
                let (result, source, reason) = rj.codes();
                Err(SendError::Association(format!(
                    "rejected (result {result}, source {source}, reason {reason})"
                )))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The accepted context for an instance, if any.
    pub(crate) fn context_for(&self, sop_class: &str, syntax: &str) -> Option<u8> {
        self.accepted
            .iter()
            .find(|(class, accepted, _)| class == sop_class && accepted == syntax)
            .map(|(_, _, id)| *id)
    }

    /// Sends what the endpoint queued.
    fn flush(&mut self) -> Result<(), SendError> {
        while let Some(bytes) = self.endpoint.poll_transmit() {
            self.stream.write_all(&bytes)?;
        }
        Ok(())
    }

    /// The next thing the peer did.
    fn next(&mut self) -> Result<Incoming, SendError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            self.flush()?;
            if let Some(incoming) = self.queued.pop_front() {
                return Ok(incoming);
            }
            if let Some(incoming) = self.endpoint.poll_event() {
                return Ok(incoming);
            }
            if self.endpoint.is_closed() {
                return Err(SendError::Association("closed by the SCP".into()));
            }
            if Instant::now() > deadline {
                self.endpoint.abort(Instant::now());
                let _ = self.flush();
                return Err(SendError::Association(format!(
                    "no answer in {} s",
                    self.timeout.as_secs()
                )));
            }
            let read = self.stream.read(&mut self.buffer)?;
            let now = Instant::now();
            if read == 0 {
                self.endpoint.transport_closed(now);
                continue;
            }
            let input = self.buffer.get(..read).unwrap_or_default();
            let mut cursor = 0;
            while let Some(incoming) = self.endpoint.receive(input, &mut cursor, now) {
                self.queued.push_back(incoming);
            }
        }
    }

    /// One C-STORE of the data set at `offset..offset+length` of `path`,
    /// and its answer. A file that cannot be read to the end (changed since
    /// it was validated) aborts the association: a data set whose length
    /// was announced cannot be cut short.
    pub(crate) fn store(
        &mut self,
        context_id: u8,
        sop_class: &str,
        sop_instance: &str,
        path: &Path,
        offset: u64,
        length: u64,
    ) -> Result<CStoreRsp, SendError> {
        let message_id = self.endpoint.next_message_id();
        let command = Command::CStoreRq(CStoreRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: sop_class.to_owned(),
            affected_sop_instance_uid: sop_instance.to_owned(),
            move_originator: None,
        });
        let fragmenter = self
            .endpoint
            .send_command_for_data_set(context_id, &command, length)
            .map_err(|error| SendError::Association(error.to_string()))?;
        self.flush()?;
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut chunk = Vec::with_capacity(CHUNK + 12);
        for fragment in fragmenter {
            let mut value_left = u64::from(fragment.value_length);
            chunk.clear();
            chunk.extend_from_slice(&fragment.headers);
            self.stream.write_all(&chunk)?;
            while value_left > 0 {
                let want = usize::try_from(value_left.min(CHUNK as u64)).unwrap_or(CHUNK);
                chunk.resize(want, 0);
                if let Err(error) = file.read_exact(&mut chunk) {
                    // A file cut short since it was validated: the PDU is
                    // half sent, so the association cannot go on.
                    self.endpoint.abort(Instant::now());
                    let _ = self.flush();
                    return Err(SendError::Io(error));
                }
                self.stream.write_all(&chunk)?;
                value_left -= want as u64;
            }
        }
        match self.next()? {
            Incoming::Command {
                command: Command::CStoreRsp(rsp),
                ..
            } if rsp.message_id_being_responded_to == message_id => Ok(rsp),
            other => Err(unexpected(&other)),
        }
    }

    /// Releases the association.
    pub(crate) fn release(mut self) -> Result<(), SendError> {
        self.endpoint
            .release(Instant::now())
            .map_err(|error| SendError::Association(error.to_string()))?;
        match self.next() {
            Ok(Incoming::Indication(Indication::ReleaseConfirm)) => Ok(()),
            Ok(other) => Err(unexpected(&other)),
            Err(_) if self.endpoint.is_closed() => Ok(()),
            Err(error) => Err(error),
        }
    }
}

fn unexpected(incoming: &Incoming) -> SendError {
    SendError::Association(format!("unexpected {}", describe(incoming)))
}

fn describe(incoming: &Incoming) -> String {
    match incoming {
        Incoming::Indication(indication) => format!("{indication:?}"),
        Incoming::Command { command, .. } => format!("{:?}", command.command_field()),
        Incoming::Violation(violation) => format!("protocol violation: {violation}"),
        _ => "event".into(),
    }
}
