//! The C-STORE SCU of `sluice media import`: one association (net's
//! blocking [`Client`]) to the Storage SCP the import embeds, so every
//! instance takes the durable ingest path (and its duplicate decision)
//! that network stores take. One C-STORE in flight, the data set streamed
//! from its file. Cluster mode's C-MOVE of instances read from the object
//! store sends them with it too (`crate::cluster::stored`).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sluice_net::assoc::ProposedPresentationContext;
use sluice_net::client::{Client, ClientError, Received};
use sluice_net::dimse::{CStoreRq, CStoreRsp, Command, Priority};
use sluice_net::endpoint::EndpointConfig;

/// Presentation contexts proposed per association (PS3.8 allows 128 odd IDs).
pub(crate) const CONTEXTS_PER_ASSOCIATION_MAX: usize = 127;

/// Why the association failed (not one instance: the whole rest of the run).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("association with the Storage SCP: {0}")]
    Client(#[from] ClientError),
    #[error("reading {}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("association with the Storage SCP: {0}")]
    Unexpected(String),
}

/// One association: the contexts accepted, by (SOP class, transfer syntax).
pub(crate) struct Association {
    client: Client,
    accepted: Vec<(String, String, u8)>,
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
        let proposed = contexts
            .iter()
            .map(|(class, syntax)| ProposedPresentationContext {
                abstract_syntax: class.clone(),
                transfer_syntaxes: vec![syntax.clone()],
                roles: None,
            })
            .collect();
        let rq = crate::qr::associate_rq(calling_ae_title, called_ae_title, proposed)
            .map_err(SendError::Unexpected)?;
        let (client, negotiated) =
            Client::connect(address, rq, EndpointConfig::default(), timeout)?;
        let mut accepted = Vec::new();
        for (class, syntax) in contexts {
            if let Some(context) = negotiated.presentation_context_for(class) {
                if context.transfer_syntax == *syntax {
                    accepted.push((class.clone(), syntax.clone(), context.id));
                }
            }
        }
        Ok(Association { client, accepted })
    }

    /// The accepted context for an instance, if any.
    pub(crate) fn context_for(&self, sop_class: &str, syntax: &str) -> Option<u8> {
        self.accepted
            .iter()
            .find(|(class, accepted, _)| class == sop_class && accepted == syntax)
            .map(|(_, _, id)| *id)
    }

    /// One C-STORE of the data set at `offset..offset+length` of `path`,
    /// and its answer. A file that cannot be read to the end (changed since
    /// it was validated) aborts the association.
    pub(crate) fn store(
        &mut self,
        context_id: u8,
        sop_class: &str,
        sop_instance: &str,
        path: &Path,
        offset: u64,
        length: u64,
    ) -> Result<CStoreRsp, SendError> {
        let file_error = |source| SendError::File {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(file_error)?;
        file.seek(SeekFrom::Start(offset)).map_err(file_error)?;
        self.store_from(context_id, sop_class, sop_instance, &mut file, length)
    }

    /// One C-STORE of the `length` bytes of data set `source` gives, and
    /// its answer (a source that ends early aborts the association).
    pub(crate) fn store_from(
        &mut self,
        context_id: u8,
        sop_class: &str,
        sop_instance: &str,
        source: &mut dyn std::io::Read,
        length: u64,
    ) -> Result<CStoreRsp, SendError> {
        let message_id = self.client.endpoint().next_message_id();
        let command = Command::CStoreRq(CStoreRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: sop_class.to_owned(),
            affected_sop_instance_uid: sop_instance.to_owned(),
            move_originator: None,
        });
        self.client
            .send_streamed(context_id, &command, length, source)?;
        match self.client.receive()? {
            Received::Command {
                command: Command::CStoreRsp(rsp),
                ..
            } if rsp.message_id_being_responded_to == message_id => Ok(rsp),
            other => Err(SendError::Unexpected(format!("unexpected {other:?}"))),
        }
    }

    /// Releases the association.
    pub(crate) fn release(self) -> Result<(), SendError> {
        Ok(self.client.release()?)
    }
}
