//! C-GET: the remote sends the instances back on our association as
//! C-STORE sub-operations; each is relayed, as a C-STORE, to a local
//! Storage SCP ([`GetTarget`]) and the remote is answered with the local
//! SCP's status. The instances so take Sluice's one durable ingest path
//! (file fsynced and indexed before success is answered, duplicates
//! decided by `storage.duplicate_policy`), and a sub-operation the local
//! store refused is reported to the remote as failed, never acknowledged
//! before it is durable.
//!
//! The SOP classes proposed with the SCP role: the ones an IMAGE-level
//! C-FIND of the study names (on the same association), then common
//! storage classes, up to 127 contexts. A sub-operation's data set is
//! relayed as it arrives, a chunk at a time (the local C-STORE is sent in
//! parts: `Client::send_command_before_parts`), so an instance of any size
//! passes with one receive chunk held, never the instance.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use sluice_net::assoc::ProposedPresentationContext;
use sluice_net::client::{Client, Received};
use sluice_net::dimse::{
    CGetRq, CStoreRq, CStoreRsp, Command, Priority, Status, StatusCategory, StatusDetail,
};
use sluice_net::endpoint::{DataSet, EndpointConfig};
use sluice_net::query::model::tags;
use sluice_net::query::{Level, Operation};
use sluice_net::uid::{self, ts};

use super::{
    accepted_context, associate_rq, cancel_once, finish, qr_context, retrieve_response,
    send_request, Progress, QrError, QueryRequest, RemoteArchive, RetrieveOutcome, RetrieveRequest,
};

/// Most presentation contexts of one association (PS3.8: odd IDs 1-255).
const CONTEXTS_MAX: usize = 128;

/// Storage classes proposed for C-GET besides those a C-FIND names.
const COMMON_STORAGE_CLASSES: &[&str] = &[
    uid::CT_IMAGE_STORAGE,
    uid::MR_IMAGE_STORAGE,
    uid::SECONDARY_CAPTURE_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.1",      // CR
    "1.2.840.10008.5.1.4.1.1.1.1",    // DX, for presentation
    "1.2.840.10008.5.1.4.1.1.1.2",    // MG, for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",    // US
    "1.2.840.10008.5.1.4.1.1.3.1",    // US multi-frame
    "1.2.840.10008.5.1.4.1.1.20",     // NM
    "1.2.840.10008.5.1.4.1.1.128",    // PET
    "1.2.840.10008.5.1.4.1.1.12.1",   // XA
    "1.2.840.10008.5.1.4.1.1.12.2",   // RF
    "1.2.840.10008.5.1.4.1.1.2.1",    // Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",    // Enhanced MR
    "1.2.840.10008.5.1.4.1.1.88.11",  // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  // Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  // Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  // Key Object Selection
    "1.2.840.10008.5.1.4.1.1.11.1",   // Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  // Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.481.1",  // RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  // RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  // RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  // RT Plan
    "1.2.840.10008.5.1.4.1.1.77.1.4", // VL Photographic
];

/// Transfer syntaxes offered for the sub-operations: uncompressed first,
/// then the compressed ones Sluice stores as they come.
const STORAGE_TRANSFER_SYNTAXES: &[&str] = &[
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::IMPLICIT_VR_LITTLE_ENDIAN,
    ts::JPEG_LOSSLESS_SV1,
    ts::JPEG_BASELINE,
    ts::JPEG_2000_LOSSLESS,
    ts::JPEG_2000,
    ts::RLE_LOSSLESS,
];

/// The local Storage SCP a C-GET's instances are relayed to.
#[derive(Debug, Clone)]
pub struct GetTarget {
    /// Where it listens (loopback, usually `Server::local_addr`).
    pub address: SocketAddr,
    /// Its AE title (`server.ae_title`).
    pub ae_title: String,
}

/// The relay association to the local Storage SCP, reopened when a
/// sub-operation brings a (class, transfer syntax) it does not carry.
struct Relay {
    target: GetTarget,
    calling_ae_title: String,
    timeout: std::time::Duration,
    pairs: Vec<(String, String)>,
    client: Option<Client>,
}

impl Relay {
    /// Stores one instance locally, its data set `data` (whole, or still
    /// arriving from the remote); the local SCP's status. A data set the
    /// local store has no context for is still read to its end.
    fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        data: Data<'_>,
    ) -> Result<(Status, StatusDetail), QrError> {
        let pair = (sop_class.to_owned(), transfer_syntax.to_owned());
        if !self.pairs.contains(&pair) {
            self.pairs.push(pair);
            if let Some(client) = self.client.take() {
                let _ = client.release();
            }
        }
        if self.client.is_none() {
            self.client = Some(self.open()?);
        }
        let local = |error: String| QrError::Local(format!("local Storage SCP: {error}"));
        let Some(client) = self.client.as_mut() else {
            return Err(local("no association".into()));
        };
        let context = client
            .endpoint()
            .negotiated()
            .and_then(|negotiated| {
                negotiated.presentation_contexts.iter().find(|context| {
                    context.abstract_syntax == sop_class
                        && context.transfer_syntax == transfer_syntax
                })
            })
            .map(|context| context.id);
        let Some(context) = context else {
            if let Data::Arriving { remote, archive } = data {
                drain(remote, archive)?;
            }
            return Ok((
                Status(0x0122), // SOP class not supported (locally)
                StatusDetail {
                    error_comment: Some(format!(
                        "the local store does not accept {sop_class} in {transfer_syntax}"
                    )),
                    ..StatusDetail::default()
                },
            ));
        };
        let message_id = client.endpoint().next_message_id();
        let command = Command::CStoreRq(CStoreRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: sop_class.to_owned(),
            affected_sop_instance_uid: sop_instance.to_owned(),
            move_originator: None,
        });
        let sent = match data {
            Data::Whole(bytes) => client
                .send(context, &command, Some(bytes))
                .map_err(|error| local(error.to_string())),
            Data::Arriving { remote, archive } => {
                relay_parts(client, context, &command, remote, archive)
            }
        };
        let result = sent.and_then(|()| match client.receive() {
            Ok(Received::Command {
                command: Command::CStoreRsp(rsp),
                ..
            }) if rsp.message_id_being_responded_to == message_id => Ok((rsp.status, rsp.detail)),
            Ok(other) => Err(local(format!("unexpected answer {other:?}"))),
            Err(error) => Err(local(error.to_string())),
        });
        if result.is_err() {
            if let Some(client) = self.client.take() {
                client.abort();
            }
        }
        result
    }

    fn open(&self) -> Result<Client, QrError> {
        let contexts = self
            .pairs
            .iter()
            .map(|(class, syntax)| ProposedPresentationContext {
                abstract_syntax: class.clone(),
                transfer_syntaxes: vec![syntax.clone()],
                roles: None,
            })
            .collect();
        let rq = associate_rq(&self.calling_ae_title, &self.target.ae_title, contexts)
            .map_err(QrError::Local)?;
        Client::connect(
            self.target.address,
            rq,
            EndpointConfig::default(),
            self.timeout,
        )
        .map(|(client, _)| client)
        .map_err(|error| {
            QrError::Local(format!(
                "cannot reach the local Storage SCP {} at {}: {error}",
                self.target.ae_title, self.target.address
            ))
        })
    }

    fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.release();
        }
    }
}

/// C-GET of `request` from `remote`, each instance relayed to `target`
/// (whose calling AE is the remote's AE title, so the store records where
/// the instance came from). `progress` hears every pending response.
pub fn get(
    remote: &RemoteArchive,
    request: &RetrieveRequest,
    target: &GetTarget,
    progress: &mut dyn FnMut(Progress),
) -> Result<RetrieveOutcome, QrError> {
    let mut relay = Relay {
        target: target.clone(),
        calling_ae_title: remote.ae_title.clone(),
        timeout: remote.timeout,
        pairs: Vec::new(),
        client: None,
    };
    let never = AtomicBool::new(false);
    let result = get_into(remote, request, &mut relay, progress, &never);
    relay.close();
    result
}

/// An instance a C-GET staged as a file of its data set alone
/// ([`get_streamed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staged {
    pub(crate) sop_instance_uid: String,
    pub(crate) sop_class_uid: String,
    pub(crate) transfer_syntax_uid: String,
    /// The file: the data set, from offset 0.
    pub(crate) path: std::path::PathBuf,
    pub(crate) length: u64,
}

/// C-GET of `request` from `remote`, each instance's data set written as
/// it arrives to a file of its own under `directory` and handed to
/// `staged` before the remote's sub-operation is answered (cluster mode: a
/// C-GET on one node of instances another node holds; the caller sends
/// each file on and deletes it). `staged` may wait, which holds the remote
/// back (its next sub-operation waits for this one's answer); its `Err`
/// (the reason) ends the C-GET. Cancelled (C-CANCEL-RQ) once `cancel` is
/// set.
pub(crate) fn get_streamed(
    remote: &RemoteArchive,
    request: &RetrieveRequest,
    directory: &std::path::Path,
    cancel: &AtomicBool,
    staged: &mut dyn FnMut(Staged) -> Result<(), String>,
) -> Result<RetrieveOutcome, QrError> {
    let mut sink = Stage {
        directory: directory.to_owned(),
        staged,
    };
    get_into(remote, request, &mut sink, &mut |_| {}, cancel)
}

/// Where a C-GET's sub-operations go.
trait Sink {
    /// Takes one instance, its data set `data`; the status to answer.
    fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        data: Data<'_>,
    ) -> Result<(Status, StatusDetail), QrError>;
}

impl Sink for Relay {
    fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        data: Data<'_>,
    ) -> Result<(Status, StatusDetail), QrError> {
        Relay::store(self, sop_class, sop_instance, transfer_syntax, data)
    }
}

/// The staging sink of [`get_streamed`].
struct Stage<'a> {
    directory: std::path::PathBuf,
    staged: &'a mut dyn FnMut(Staged) -> Result<(), String>,
}

impl Sink for Stage<'_> {
    fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        data: Data<'_>,
    ) -> Result<(Status, StatusDetail), QrError> {
        use std::io::Write;
        // Unique in the process: several C-GETs may stage into one directory.
        static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let number = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.directory.join(format!("{number}.ds"));
        let local =
            |error: std::io::Error| QrError::Local(format!("staging {}: {error}", path.display()));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(local)?);
        let mut length = 0u64;
        match data {
            Data::Whole(bytes) => {
                file.write_all(bytes).map_err(local)?;
                length = bytes.len() as u64;
            }
            Data::Arriving { remote, archive } => loop {
                match remote.receive().map_err(|source| archive.error(source))? {
                    Received::Data { bytes, last } => {
                        file.write_all(&bytes).map_err(local)?;
                        length += bytes.len() as u64;
                        if last {
                            break;
                        }
                    }
                    other => {
                        return Err(archive
                            .protocol(format!("a C-STORE data set was interrupted by {other:?}")))
                    }
                }
            },
        }
        file.flush().map_err(local)?;
        drop(file);
        (self.staged)(Staged {
            sop_instance_uid: sop_instance.to_owned(),
            sop_class_uid: sop_class.to_owned(),
            transfer_syntax_uid: transfer_syntax.to_owned(),
            path: path.clone(),
            length,
        })
        .map_err(QrError::Local)?;
        Ok((Status::SUCCESS, StatusDetail::default()))
    }
}

/// C-GET of `request` from `remote`, each sub-operation's instance given
/// to `sink`.
fn get_into(
    remote: &RemoteArchive,
    request: &RetrieveRequest,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RetrieveOutcome, QrError> {
    // The classes to offer: what an IMAGE-level C-FIND names, then common ones.
    let mut classes: Vec<String> = Vec::new();
    let mut query = QueryRequest::new(request.model, Level::Image);
    query.keys.clear();
    if let Some(patient) = &request.patient_id {
        query.set_key(tags::PATIENT_ID, patient);
    }
    query.set_key(tags::STUDY_INSTANCE_UID, &request.study_instance_uid);
    query.set_key(
        tags::SERIES_INSTANCE_UID,
        &request.series_instance_uids.join("\\"),
    );
    query.set_key(tags::SOP_INSTANCE_UID, "");
    query.set_key(tags::SOP_CLASS_UID, "");
    let found = super::find(remote, &query, &mut |found| {
        if let Some(class) = found.value(tags::SOP_CLASS_UID) {
            if !class.is_empty() && !classes.iter().any(|known| known == class) {
                classes.push(class.to_owned());
            }
        }
    });
    // A remote that cannot answer the query may still serve the C-GET.
    if let Err(error) = found {
        tracing::info!(%error, "C-GET: the IMAGE-level C-FIND for SOP classes failed; proposing the common storage classes");
    }
    for class in COMMON_STORAGE_CLASSES {
        if !classes.iter().any(|known| known == class) {
            classes.push((*class).to_owned());
        }
    }
    classes.truncate(CONTEXTS_MAX - 1);
    let mut contexts = vec![qr_context(request.model, Operation::Get)];
    contexts.extend(classes.into_iter().map(|class| {
        ProposedPresentationContext {
            abstract_syntax: class,
            transfer_syntaxes: STORAGE_TRANSFER_SYNTAXES
                .iter()
                .map(|syntax| (*syntax).to_owned())
                .collect(),
            roles: Some((false, true)),
        }
    }));
    let (mut client, negotiated) = remote.connect(contexts)?;
    let (context, encoding) =
        match accepted_context(remote, &negotiated, request.model, Operation::Get) {
            Ok(context) => context,
            Err(error) => {
                let _ = client.release();
                return Err(error);
            }
        };
    let result = get_on(
        &mut client,
        sink,
        remote,
        request,
        (context, encoding),
        progress,
        cancel,
    );
    finish(client, remote, result)
}

/// A sub-operation's data set, as the relay gets it.
enum Data<'a> {
    /// Collected by the endpoint (small).
    Whole(&'a [u8]),
    /// Streamed: still arriving on the remote's association.
    Arriving {
        remote: &'a mut Client,
        archive: &'a RemoteArchive,
    },
}

/// Sends `command` to the local SCP and the data set after it as it comes
/// from the remote, chunk by chunk. One chunk is held back so that the
/// remote's last one, which may be empty, can be flagged last on the bytes
/// before it. A remote that fails ends the C-GET (`Err`); so does a local
/// send that fails, once the local association is aborted by the caller.
fn relay_parts(
    client: &mut Client,
    context: u8,
    command: &Command,
    remote: &mut Client,
    archive: &RemoteArchive,
) -> Result<(), QrError> {
    let local = |error: sluice_net::client::ClientError| {
        QrError::Local(format!("local Storage SCP: {error}"))
    };
    client
        .send_command_before_parts(context, command)
        .map_err(local)?;
    let mut held: Option<Vec<u8>> = None;
    loop {
        match remote.receive().map_err(|source| archive.error(source))? {
            Received::Data { bytes, last: false } => {
                if bytes.is_empty() {
                    continue;
                }
                if let Some(before) = held.replace(bytes) {
                    client
                        .send_data_set_part(context, &before, false)
                        .map_err(local)?;
                }
            }
            Received::Data { bytes, last: true } => {
                let final_part = if bytes.is_empty() {
                    held.take().unwrap_or_default()
                } else {
                    if let Some(before) = held.take() {
                        client
                            .send_data_set_part(context, &before, false)
                            .map_err(local)?;
                    }
                    bytes
                };
                return client
                    .send_data_set_part(context, &final_part, true)
                    .map_err(local);
            }
            other => {
                return Err(
                    archive.protocol(format!("a C-STORE data set was interrupted by {other:?}"))
                )
            }
        }
    }
}

/// Reads a streamed sub-operation data set to its end, dropping it.
fn drain(remote: &mut Client, archive: &RemoteArchive) -> Result<(), QrError> {
    loop {
        match remote.receive().map_err(|source| archive.error(source))? {
            Received::Data { last: true, .. } => return Ok(()),
            Received::Data { .. } => {}
            other => {
                return Err(
                    archive.protocol(format!("a C-STORE data set was interrupted by {other:?}"))
                )
            }
        }
    }
}

fn get_on(
    client: &mut Client,
    relay: &mut dyn Sink,
    remote: &RemoteArchive,
    request: &RetrieveRequest,
    (context, encoding): (u8, sluice_net::dimse::dataset::SmallDatasetEncoding),
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RetrieveOutcome, QrError> {
    let message_id = send_request(
        client,
        remote,
        context,
        encoding,
        &request.identifier(),
        |message_id| {
            Command::CGetRq(CGetRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: request.model.sop_class(Operation::Get).to_owned(),
            })
        },
    )?;
    client
        .set_receive_timeout(remote.retrieve_timeout)
        .map_err(|source| remote.error(source))?;
    let mut local_failures: Vec<String> = Vec::new();
    let mut cancelled = false;
    loop {
        cancel_once(
            client,
            remote,
            (context, message_id),
            cancel,
            &mut cancelled,
        )?;
        match client.receive().map_err(|source| remote.error(source))? {
            Received::Command {
                command: Command::CGetRsp(rsp),
                data_set,
                ..
            } => {
                if let Some(mut outcome) = retrieve_response(
                    remote, "C-GET", message_id, &rsp, data_set, encoding, progress,
                )? {
                    for uid in local_failures {
                        if !outcome.failed_sop_instance_uids.contains(&uid) {
                            outcome.failed_sop_instance_uids.push(uid);
                        }
                    }
                    return Ok(outcome);
                }
            }
            Received::Command {
                context_id,
                command: Command::CStoreRq(rq),
                data_set,
            } => {
                let transfer_syntax = client
                    .endpoint()
                    .presentation_context(context_id)
                    .map(|context| context.transfer_syntax.clone())
                    .unwrap_or_default();
                let data = match &data_set {
                    DataSet::Collected(bytes) => Some(Data::Whole(bytes)),
                    DataSet::Streamed => Some(Data::Arriving {
                        remote: client,
                        archive: remote,
                    }),
                    // Absent: a C-STORE-RQ must carry one.
                    _ => None,
                };
                let (status, detail) = match data {
                    None => (
                        // Cannot understand: no data set to store.
                        Status(0xC000),
                        StatusDetail {
                            error_comment: Some("the C-STORE-RQ carries no data set".into()),
                            ..StatusDetail::default()
                        },
                    ),
                    Some(data) => relay.store(
                        &rq.affected_sop_class_uid,
                        &rq.affected_sop_instance_uid,
                        &transfer_syntax,
                        data,
                    )?,
                };
                if status.category() == StatusCategory::Failure {
                    tracing::warn!(
                        sop_instance_uid = %crate::escape::Escaped(&rq.affected_sop_instance_uid),
                        status = format_args!("{:04X}", status.0),
                        comment = detail.error_comment.as_deref().unwrap_or(""),
                        "C-GET sub-operation refused by the local store"
                    );
                    local_failures.push(rq.affected_sop_instance_uid.clone());
                }
                let response = Command::CStoreRsp(CStoreRsp {
                    message_id_being_responded_to: rq.message_id,
                    affected_sop_class_uid: Some(rq.affected_sop_class_uid),
                    affected_sop_instance_uid: Some(rq.affected_sop_instance_uid),
                    status,
                    detail,
                });
                client
                    .send(context_id, &response, None)
                    .map_err(|source| remote.error(source))?;
            }
            other => return Err(remote.protocol(format!("unexpected during C-GET: {other:?}"))),
        }
    }
}
