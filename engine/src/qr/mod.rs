//! The Query/Retrieve SCU: C-FIND, C-MOVE and C-GET against a remote
//! archive, and prefetch (find a patient's studies, retrieve the ones not
//! stored here). The `sluice query`, `retrieve` and `prefetch` commands
//! are thin shells over these functions; an embedder calls them directly.
//!
//! Each operation is one association to the remote AE (a blocking
//! [`sluice_net::client::Client`] on the sans-I/O endpoint), released once
//! the final response arrived. Statuses follow the seed's tables 2.3.1-7
//! and 2.3.1-11: pending responses are matches (C-FIND) or progress
//! (C-MOVE/C-GET); success and warning end the operation; cancel ends it
//! with what came; every failure is a [`QrError::Failed`] with its Error
//! Comment. A remote silent for [`RemoteArchive::timeout`] gets an A-ABORT
//! ([`QrError::Association`] with a timeout).
//!
//! Where retrieved instances land: C-MOVE names our AE as the destination,
//! so the running server ingests them through its normal durable path.
//! C-GET brings them on the SCU's own association; [`get`] relays each one
//! as a C-STORE to a local Storage SCP (an embedder's [`crate::scp::Server`],
//! or the one `sluice retrieve --get` starts on loopback), so they take the
//! same durable ingest path and duplicates are decided as usual.
//! docs/design/query-retrieve.md, "The SCU".
//!
//! ```no_run
//! use sluice_engine::config::Config;
//! use sluice_engine::qr::{self, QueryRequest, RemoteArchive};
//! use sluice_net::query::{InformationModel, Level};
//! let config = Config::from_args(["sluice", "--remote-ae", "PACS=127.0.0.1:104"])?;
//! let remote = RemoteArchive::from_config(&config, "PACS", None)?;
//! let mut request = QueryRequest::new(InformationModel::StudyRoot, Level::Study);
//! request.add_key("PatientID=12345")?;
//! request.add_key("StudyDate=20240101-")?;
//! let summary = qr::find(&remote, &request, &mut |found| {
//!     println!("{:?}", found.values);
//! })?;
//! println!("{} studies", summary.matches);
//! // C-MOVE the first study to our own AE (the running server stores it).
//! let retrieve = qr::RetrieveRequest::study("1.2.3.4");
//! let outcome = qr::move_to(&remote, config.network.ae_title.as_str(), &retrieve, &mut |_| {})?;
//! println!("{} completed, {} failed", outcome.completed, outcome.failed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod get;
mod prefetch;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_net::assoc::{AssociationProposal, NegotiatedAssociation, ProposedPresentationContext};
use sluice_net::client::{Client, ClientError, Received};
use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::{
    CCancelRq, CFindRq, CMoveRq, Command, Priority, Status, StatusCategory, StatusDetail,
    SubOperationCounts, Tag,
};
use sluice_net::endpoint::{DataSet, EndpointConfig};
use sluice_net::query::model::{self, tags};
use sluice_net::query::{CharacterSet, IdentifierBuilder, InformationModel, Level, Operation};
use sluice_net::uid::ts;

use crate::config::Config;
use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

pub(crate) use get::get_streamed;
pub use get::{get, GetTarget};
pub use prefetch::{
    prefetch, Fetch, PrefetchFilter, PrefetchOutcome, PrefetchStudy, PrefetchVerdict,
};

/// How long the remote may stay silent before the association is aborted.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How long a C-MOVE or C-GET may wait for the remote's next message once
/// its request is sent: an hour, since a C-MOVE SCP need send no pending
/// response while its sub-operations run (PS3.4 C.4.2.1.4; DCMTK's
/// `movescu` waits without limit by default).
pub const RETRIEVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3600);
/// Largest response identifier collected.
const IDENTIFIER_LENGTH_MAX: usize = 1024 * 1024;
/// Failed SOP Instance UID List (0008,0058).
const FAILED_SOP_INSTANCE_UID_LIST: Tag = Tag(0x0008, 0x0058);

/// Why a Q/R SCU operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// The remote AE is not in `network.remote_aes` and no address was given.
    #[error("unknown remote AE {0:?}: it is not in network.remote_aes (add `[network.remote_aes] {0} = \"host:port\"` to the configuration, or pass --address host:port)")]
    UnknownRemote(String),
    /// The address does not resolve.
    #[error("the address {address} of {ae_title} does not resolve")]
    Unresolved {
        /// The remote AE.
        ae_title: String,
        /// Its address as written.
        address: String,
    },
    /// A request argument is wrong (a key, a level).
    #[error("{0}")]
    BadRequest(String),
    /// The association could not be made or broke (rejected, aborted,
    /// closed, timed out).
    #[error("{ae_title} at {address}: {source}")]
    Association {
        /// The remote AE.
        ae_title: String,
        /// Its address.
        address: SocketAddr,
        /// What happened.
        source: ClientError,
    },
    /// The remote accepted the association but not the SOP class.
    #[error("{ae_title} does not accept {what} (presentation context refused)")]
    NotAccepted {
        /// The remote AE.
        ae_title: String,
        /// The SOP class, in words.
        what: String,
    },
    /// The remote answered with a failure status.
    #[error("{operation} failed: status {status:04X} ({meaning}){}", comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Failed {
        /// C-FIND, C-MOVE, C-GET.
        operation: &'static str,
        /// The status.
        status: u16,
        /// What the status means (the seed's tables).
        meaning: &'static str,
        /// The remote's Error Comment (0000,0902), if it gave one.
        comment: Option<String>,
        /// Sub-operation counts of a failed C-MOVE/C-GET.
        counts: Box<RetrieveOutcome>,
    },
    /// The remote broke the protocol (an answer to another message, an
    /// unreadable identifier).
    #[error("{ae_title}: {reason}")]
    Protocol {
        /// The remote AE.
        ae_title: String,
        /// What it did.
        reason: String,
    },
    /// The local store (catalogue, or the local Storage SCP for C-GET).
    #[error("{0}")]
    Local(String),
}

/// A remote Q/R SCP and how we reach it.
#[derive(Debug, Clone)]
pub struct RemoteArchive {
    /// Its AE title (our Called AE Title).
    pub ae_title: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// Our AE title (the Calling AE Title).
    pub calling_ae_title: String,
    /// How long it may stay silent before we abort.
    pub timeout: Duration,
    /// How long a C-MOVE or C-GET may wait for its next message once the
    /// request is sent (`None`: as long as the association lives); see
    /// [`RETRIEVE_TIMEOUT_DEFAULT`].
    pub retrieve_timeout: Option<Duration>,
}

impl RemoteArchive {
    /// `ae_title` at `address` (`host:port`), else at its entry in
    /// `network.remote_aes`; our calling AE title is `server.ae_title`.
    pub fn from_config(
        config: &Config,
        ae_title: &str,
        address: Option<&str>,
    ) -> Result<RemoteArchive, QrError> {
        let written = match address {
            Some(address) => address.to_owned(),
            None => config
                .network
                .remote_aes
                .iter()
                .find(|(known, _)| known.as_str() == ae_title)
                .map(|(_, address)| format!("{}:{}", address.host(), address.port()))
                .ok_or_else(|| QrError::UnknownRemote(ae_title.to_owned()))?,
        };
        let address = written
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| QrError::Unresolved {
                ae_title: ae_title.to_owned(),
                address: written.clone(),
            })?;
        Ok(RemoteArchive {
            ae_title: ae_title.to_owned(),
            address,
            calling_ae_title: config.network.ae_title.as_str().to_owned(),
            timeout: TIMEOUT_DEFAULT,
            retrieve_timeout: Some(RETRIEVE_TIMEOUT_DEFAULT),
        })
    }

    /// Opens an association proposing `contexts`.
    pub(crate) fn connect(
        &self,
        contexts: Vec<ProposedPresentationContext>,
    ) -> Result<(Client, Box<NegotiatedAssociation>), QrError> {
        let rq = associate_rq(&self.calling_ae_title, &self.ae_title, contexts)
            .map_err(QrError::BadRequest)?;
        let mut config = EndpointConfig::default();
        config.collect_length_max = IDENTIFIER_LENGTH_MAX;
        // Our own timer is the socket's; the endpoint's idle timer is longer.
        config.idle = self.timeout.saturating_mul(2);
        Client::connect(self.address, rq, config, self.timeout).map_err(|source| self.error(source))
    }

    pub(crate) fn error(&self, source: ClientError) -> QrError {
        QrError::Association {
            ae_title: self.ae_title.clone(),
            address: self.address,
            source,
        }
    }

    pub(crate) fn protocol(&self, reason: impl Into<String>) -> QrError {
        QrError::Protocol {
            ae_title: self.ae_title.clone(),
            reason: reason.into(),
        }
    }
}

/// Our A-ASSOCIATE-RQ from `calling` to `called` proposing `contexts`
/// (Sluice's Implementation Class UID and version name, 64 KiB PDUs).
pub(crate) fn associate_rq(
    calling: &str,
    called: &str,
    contexts: Vec<ProposedPresentationContext>,
) -> Result<sluice_net::pdu::AssociateRq, String> {
    AssociationProposal {
        calling_ae_title: calling.to_owned(),
        called_ae_title: called.to_owned(),
        presentation_contexts: contexts,
        pdu_length_max_receive: 65536,
        implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
        implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_owned()),
        asynchronous_operations_window: None,
        user_identity: None,
    }
    .to_associate_rq()
    .map_err(|error| error.to_string())
}

/// The presentation context of a Q/R SOP class: Explicit then Implicit VR
/// Little Endian.
pub(crate) fn qr_context(
    model: InformationModel,
    operation: Operation,
) -> ProposedPresentationContext {
    ProposedPresentationContext {
        abstract_syntax: model.sop_class(operation).to_owned(),
        transfer_syntaxes: vec![
            ts::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            ts::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
        ],
        roles: None,
    }
}

/// The accepted context of `model`'s `operation` class and its encoding.
pub(crate) fn accepted_context(
    remote: &RemoteArchive,
    negotiated: &NegotiatedAssociation,
    model: InformationModel,
    operation: Operation,
) -> Result<(u8, SmallDatasetEncoding), QrError> {
    let sop_class = model.sop_class(operation);
    negotiated
        .presentation_context_for(sop_class)
        .and_then(|context| {
            SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)
                .map(|encoding| (context.id, encoding))
        })
        .ok_or_else(|| QrError::NotAccepted {
            ae_title: remote.ae_title.clone(),
            what: format!("{} {}", model.name(), operation_name(operation)),
        })
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Find => "C-FIND",
        Operation::Move => "C-MOVE",
        Operation::Get => "C-GET",
    }
}

/// A C-FIND request: model, level, keys (matching keys with a value,
/// return keys empty).
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// Study Root or Patient Root.
    pub model: InformationModel,
    /// The Query/Retrieve Level.
    pub level: Level,
    /// The keys, in order; the response columns follow this order.
    pub keys: Vec<(Tag, String)>,
}

impl QueryRequest {
    /// A request at `level` with the usual return keys of that level
    /// (empty: universal matching), to which [`QueryRequest::add_key`]
    /// adds or replaces keys.
    pub fn new(model: InformationModel, level: Level) -> QueryRequest {
        let mut keys: Vec<Tag> = Vec::new();
        let patient = [tags::PATIENT_NAME, tags::PATIENT_ID];
        let study = [
            tags::STUDY_DATE,
            tags::ACCESSION_NUMBER,
            tags::MODALITIES_IN_STUDY,
            tags::STUDY_DESCRIPTION,
            tags::STUDY_INSTANCE_UID,
        ];
        match level {
            Level::Patient => keys.extend(patient),
            Level::Study => {
                keys.extend(patient);
                keys.extend(study);
                keys.push(tags::NUMBER_OF_STUDY_RELATED_INSTANCES);
            }
            Level::Series => keys.extend([
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID,
                tags::MODALITY,
                tags::SERIES_NUMBER,
                tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
            ]),
            Level::Image => keys.extend([
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID,
                tags::SOP_INSTANCE_UID,
                tags::SOP_CLASS_UID,
                tags::INSTANCE_NUMBER,
            ]),
        }
        if model == InformationModel::PatientRoot && level != Level::Patient {
            keys.insert(0, tags::PATIENT_ID);
            keys.dedup();
        }
        QueryRequest {
            model,
            level,
            keys: keys.into_iter().map(|tag| (tag, String::new())).collect(),
        }
    }

    /// Adds `KEY=VALUE` (KEY a keyword such as `PatientID`, or a tag
    /// `0010,0020`; an empty VALUE asks for the attribute), replacing a
    /// key of the same tag.
    pub fn add_key(&mut self, text: &str) -> Result<(), QrError> {
        let (name, value) = text.split_once('=').ok_or_else(|| {
            QrError::BadRequest(format!(
                "{text:?}: a key is KEY=VALUE (KEY a keyword such as PatientID or a tag 0010,0020; VALUE empty to ask for it)"
            ))
        })?;
        let tag = parse_tag(name.trim())?;
        if tag == tags::QUERY_RETRIEVE_LEVEL {
            return Err(QrError::BadRequest(
                "QueryRetrieveLevel is set with --level".into(),
            ));
        }
        self.set_key(tag, value);
        Ok(())
    }

    /// Sets the key `tag` to `value`.
    pub fn set_key(&mut self, tag: Tag, value: &str) {
        match self.keys.iter_mut().find(|(known, _)| *known == tag) {
            Some(key) => key.1 = value.to_owned(),
            None => self.keys.push((tag, value.to_owned())),
        }
    }

    fn identifier(&self) -> IdentifierBuilder {
        let mut builder = IdentifierBuilder::new(self.level);
        if self.keys.iter().any(|(_, value)| !value.is_ascii()) {
            builder = builder.character_set("ISO_IR 192");
        }
        for (tag, value) in &self.keys {
            builder = builder.key(*tag, value);
        }
        builder
    }
}

/// A keyword of the Q/R key table, or `gggg,eeee` / `ggggeeee`.
pub fn parse_tag(name: &str) -> Result<Tag, QrError> {
    if let Some(definition) = model::key_definitions()
        .iter()
        .find(|definition| definition.keyword.eq_ignore_ascii_case(name))
    {
        return Ok(definition.tag);
    }
    let hex: String = name
        .trim_matches(['(', ')'])
        .chars()
        .filter(|c| *c != ',')
        .collect();
    if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(hex.get(..4).unwrap_or_default(), 16);
        let element = u16::from_str_radix(hex.get(4..).unwrap_or_default(), 16);
        if let (Ok(group), Ok(element)) = (group, element) {
            return Ok(Tag(group, element));
        }
    }
    Err(QrError::BadRequest(format!(
        "unknown key {name:?}: give a keyword of the query key table (PatientID, PatientName, StudyDate, StudyInstanceUID, Modality, ...) or a tag as gggg,eeee"
    )))
}

/// The keyword of `tag` (or `gggg,eeee`).
pub fn key_name(tag: Tag) -> String {
    match model::keyword_of(tag) {
        "?" => format!("{:04X},{:04X}", tag.0, tag.1),
        keyword => keyword.to_owned(),
    }
}

/// One C-FIND match: the requested keys' values as the remote returned
/// them (decoded from its character set, padding trimmed), in request
/// order, then any other attribute it added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// (tag, value) pairs; an attribute the remote left out is absent.
    pub values: Vec<(Tag, String)>,
    /// Pending status FF01: an optional key was not supported.
    pub keys_unsupported: bool,
}

impl Match {
    /// The value of `tag`, if the remote returned it.
    pub fn value(&self, tag: Tag) -> Option<&str> {
        self.values
            .iter()
            .find(|(known, _)| *known == tag)
            .map(|(_, value)| value.as_str())
    }
}

/// How a C-FIND ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindSummary {
    /// Matches received.
    pub matches: u64,
    /// The final status.
    pub status: u16,
    /// The remote cancelled (FE00): the matches are what came before.
    pub cancelled: bool,
    /// A warning's Error Comment, if any.
    pub comment: Option<String>,
}

/// What a status means, after the seed's tables 2.3.1-7 and 2.3.1-11.
pub fn status_meaning(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0xFF00 => "pending",
        0xFF01 => "pending, optional keys not supported",
        0xFE00 => "cancelled",
        0xB000 => "warning: sub-operations complete, one or more failures",
        0xA700..=0xA7FF => "refused: out of resources",
        0xA801 => "refused: move destination unknown",
        0xA900..=0xA9FF => "error: identifier does not match SOP class",
        0xC000..=0xCFFF => "error: unable to process",
        0x0122 => "refused: SOP class not supported",
        _ => "failure",
    }
}

/// Runs a C-FIND, handing each match to `on_match` as it arrives.
pub fn find(
    remote: &RemoteArchive,
    request: &QueryRequest,
    on_match: &mut dyn FnMut(&Match),
) -> Result<FindSummary, QrError> {
    if !request.model.has_level(request.level) {
        return Err(QrError::BadRequest(format!(
            "{} has no {} level",
            request.model.name(),
            request.level.as_str()
        )));
    }
    let (mut client, negotiated) =
        remote.connect(vec![qr_context(request.model, Operation::Find)])?;
    let (context, encoding) =
        match accepted_context(remote, &negotiated, request.model, Operation::Find) {
            Ok(context) => context,
            Err(error) => {
                let _ = client.release();
                return Err(error);
            }
        };
    let result = find_on(&mut client, remote, request, context, encoding, on_match);
    finish(client, remote, result)
}

/// Releases after a final response; aborts after a broken exchange.
pub(crate) fn finish<T>(
    client: Client,
    remote: &RemoteArchive,
    result: Result<T, QrError>,
) -> Result<T, QrError> {
    match result {
        Ok(value) => {
            client.release().map_err(|source| remote.error(source))?;
            Ok(value)
        }
        Err(error @ (QrError::Failed { .. } | QrError::NotAccepted { .. })) => {
            let _ = client.release();
            Err(error)
        }
        Err(error) => {
            client.abort();
            Err(error)
        }
    }
}

/// Sends a request with `identifier` on `context`: `command` builds it
/// from its new Message ID, which is returned.
pub(crate) fn send_request(
    client: &mut Client,
    remote: &RemoteArchive,
    context: u8,
    encoding: SmallDatasetEncoding,
    identifier: &IdentifierBuilder,
    command: impl FnOnce(u16) -> Command,
) -> Result<u16, QrError> {
    let identifier = identifier
        .encode(encoding)
        .map_err(|error| QrError::BadRequest(format!("cannot encode the identifier: {error}")))?;
    let message_id = client.endpoint().next_message_id();
    client
        .send(context, &command(message_id), Some(&identifier))
        .map_err(|source| remote.error(source))?;
    Ok(message_id)
}

fn find_on(
    client: &mut Client,
    remote: &RemoteArchive,
    request: &QueryRequest,
    context: u8,
    encoding: SmallDatasetEncoding,
    on_match: &mut dyn FnMut(&Match),
) -> Result<FindSummary, QrError> {
    let message_id = send_request(
        client,
        remote,
        context,
        encoding,
        &request.identifier(),
        |message_id| {
            Command::CFindRq(CFindRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: request.model.sop_class(Operation::Find).to_owned(),
            })
        },
    )?;
    let mut matches = 0u64;
    loop {
        let (rsp, data_set) = match client.receive().map_err(|source| remote.error(source))? {
            Received::Command {
                command: Command::CFindRsp(rsp),
                data_set,
                ..
            } => (rsp, data_set),
            other => return Err(remote.protocol(format!("unexpected during C-FIND: {other:?}"))),
        };
        if rsp.message_id_being_responded_to != message_id {
            return Err(remote.protocol(format!(
                "a C-FIND-RSP to message {} (ours is {message_id})",
                rsp.message_id_being_responded_to
            )));
        }
        match rsp.status.category() {
            StatusCategory::Pending => {
                let DataSet::Collected(bytes) = data_set else {
                    return Err(remote.protocol("a pending C-FIND-RSP without an identifier"));
                };
                let dataset = SmallDataset::decode(&bytes, encoding, DatasetLimits::default())
                    .map_err(|error| {
                        remote.protocol(format!("unreadable C-FIND response identifier: {error}"))
                    })?;
                matches += 1;
                on_match(&to_match(&dataset, request, rsp.status));
            }
            StatusCategory::Success | StatusCategory::Warning | StatusCategory::Cancel => {
                return Ok(FindSummary {
                    matches,
                    status: rsp.status.0,
                    cancelled: rsp.status.category() == StatusCategory::Cancel,
                    comment: rsp.detail.error_comment,
                })
            }
            _ => {
                return Err(failed(
                    "C-FIND",
                    rsp.status,
                    &rsp.detail,
                    RetrieveOutcome::default(),
                ))
            }
        }
    }
}

pub(crate) fn failed(
    operation: &'static str,
    status: Status,
    detail: &StatusDetail,
    counts: RetrieveOutcome,
) -> QrError {
    QrError::Failed {
        operation,
        status: status.0,
        meaning: status_meaning(status.0),
        comment: detail.error_comment.clone(),
        counts: Box::new(counts),
    }
}

fn to_match(dataset: &SmallDataset, request: &QueryRequest, status: Status) -> Match {
    let charset = CharacterSet::of_dataset(dataset);
    let text = |tag: Tag| {
        dataset.get(tag).and_then(|element| {
            dataset.bytes(tag).map(|bytes| {
                charset
                    .decode(element.vr, bytes)
                    .trim_matches([' ', '\0'])
                    .to_owned()
            })
        })
    };
    let mut values: Vec<(Tag, String)> = request
        .keys
        .iter()
        .filter_map(|(tag, _)| text(*tag).map(|value| (*tag, value)))
        .collect();
    for element in dataset.elements() {
        let extra = element.tag != tags::QUERY_RETRIEVE_LEVEL
            && element.tag != tags::SPECIFIC_CHARACTER_SET
            && element.vr != Vr::SQ
            && !request.keys.iter().any(|(tag, _)| *tag == element.tag);
        if extra {
            if let Some(value) = text(element.tag) {
                values.push((element.tag, value));
            }
        }
    }
    Match {
        values,
        keys_unsupported: status.0 == 0xFF01,
    }
}

/// What a C-MOVE or C-GET retrieves: a study, series of it, or instances
/// of one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveRequest {
    /// Study Root or Patient Root.
    pub model: InformationModel,
    /// The patient (Patient Root requires it).
    pub patient_id: Option<String>,
    /// The study.
    pub study_instance_uid: String,
    /// Series of the study; empty: the whole study.
    pub series_instance_uids: Vec<String>,
    /// Instances of the one series named (IMAGE level); empty: the series
    /// whole.
    pub sop_instance_uids: Vec<String>,
}

impl RetrieveRequest {
    /// The whole study, Study Root.
    pub fn study(study_instance_uid: &str) -> RetrieveRequest {
        RetrieveRequest {
            model: InformationModel::StudyRoot,
            patient_id: None,
            study_instance_uid: study_instance_uid.to_owned(),
            series_instance_uids: Vec::new(),
            sop_instance_uids: Vec::new(),
        }
    }

    /// These instances of one series of a study, Study Root.
    pub fn instances(
        study_instance_uid: &str,
        series_instance_uid: &str,
        sop_instance_uids: Vec<String>,
    ) -> RetrieveRequest {
        RetrieveRequest {
            series_instance_uids: vec![series_instance_uid.to_owned()],
            sop_instance_uids,
            ..RetrieveRequest::study(study_instance_uid)
        }
    }

    pub(crate) fn identifier(&self) -> IdentifierBuilder {
        debug_assert!(
            self.sop_instance_uids.is_empty() || self.series_instance_uids.len() == 1,
            "an IMAGE-level retrieval names exactly one series"
        );
        let level = if !self.sop_instance_uids.is_empty() {
            Level::Image
        } else if self.series_instance_uids.is_empty() {
            Level::Study
        } else {
            Level::Series
        };
        let mut builder = IdentifierBuilder::new(level);
        if self.model == InformationModel::PatientRoot {
            builder = builder.key(tags::PATIENT_ID, self.patient_id.as_deref().unwrap_or(""));
        }
        builder = builder.key(tags::STUDY_INSTANCE_UID, &self.study_instance_uid);
        if !self.series_instance_uids.is_empty() {
            // UID list matching (PS3.4 C.2.2.2.2): backslash-separated.
            builder = builder.key(
                tags::SERIES_INSTANCE_UID,
                &self.series_instance_uids.join("\\"),
            );
        }
        if !self.sop_instance_uids.is_empty() {
            builder = builder.key(tags::SOP_INSTANCE_UID, &self.sop_instance_uids.join("\\"));
        }
        builder
    }
}

/// How a C-MOVE or C-GET went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrieveOutcome {
    /// The final status.
    pub status: u16,
    /// Sub-operations completed, failed, with a warning (the final counts).
    pub completed: u32,
    /// Failed sub-operations.
    pub failed: u32,
    /// Sub-operations that completed with a warning.
    pub warning: u32,
    /// The Failed SOP Instance UID List of the final response.
    pub failed_sop_instance_uids: Vec<String>,
    /// The final response's Error Comment, if any.
    pub comment: Option<String>,
}

/// A pending response's counts, for progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Remaining sub-operations.
    pub remaining: Option<u16>,
    /// Completed so far.
    pub completed: u16,
    /// Failed so far.
    pub failed: u16,
    /// With a warning so far.
    pub warning: u16,
}

impl Progress {
    fn of(counts: SubOperationCounts) -> Progress {
        Progress {
            remaining: counts.remaining,
            completed: counts.completed.unwrap_or(0),
            failed: counts.failed.unwrap_or(0),
            warning: counts.warning.unwrap_or(0),
        }
    }
}

/// C-MOVE of `request` to `destination` (an AE title the remote knows the
/// address of; Sluice's own `server.ae_title` to store here through the
/// running server). `progress` hears every pending response.
pub fn move_to(
    remote: &RemoteArchive,
    destination: &str,
    request: &RetrieveRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<RetrieveOutcome, QrError> {
    move_cancellable(
        remote,
        destination,
        request,
        progress,
        &AtomicBool::new(false),
    )
}

/// [`move_to`], cancelled (C-CANCEL-RQ, [`cancel_once`]) once `cancel` is
/// set: the outcome is then the SCP's FE00 answer with its counts so far.
pub(crate) fn move_cancellable(
    remote: &RemoteArchive,
    destination: &str,
    request: &RetrieveRequest,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RetrieveOutcome, QrError> {
    let (mut client, negotiated) =
        remote.connect(vec![qr_context(request.model, Operation::Move)])?;
    let (context, encoding) =
        match accepted_context(remote, &negotiated, request.model, Operation::Move) {
            Ok(context) => context,
            Err(error) => {
                let _ = client.release();
                return Err(error);
            }
        };
    let result = (|| {
        let message_id = send_request(
            &mut client,
            remote,
            context,
            encoding,
            &request.identifier(),
            |message_id| {
                Command::CMoveRq(CMoveRq {
                    message_id,
                    priority: Priority::Medium,
                    affected_sop_class_uid: request.model.sop_class(Operation::Move).to_owned(),
                    move_destination: destination.to_owned(),
                })
            },
        )?;
        client
            .set_receive_timeout(remote.retrieve_timeout)
            .map_err(|source| remote.error(source))?;
        let mut cancelled = false;
        loop {
            cancel_once(
                &mut client,
                remote,
                (context, message_id),
                cancel,
                &mut cancelled,
            )?;
            match client.receive().map_err(|source| remote.error(source))? {
                Received::Command {
                    command: Command::CMoveRsp(rsp),
                    data_set,
                    ..
                } => {
                    if let Some(outcome) = retrieve_response(
                        remote, "C-MOVE", message_id, &rsp, data_set, encoding, progress,
                    )? {
                        return Ok(outcome);
                    }
                }
                other => {
                    return Err(remote.protocol(format!("unexpected during C-MOVE: {other:?}")))
                }
            }
        }
    })();
    finish(client, remote, result)
}

/// Sends the C-CANCEL-RQ of the operation `message_id` on `context` once
/// `cancel` is set (`sent` remembers it went). Called before each wait for
/// the SCP, so a cancel goes out within one of its responses (a pending
/// one follows every sub-operation of an SCP that sends them).
pub(crate) fn cancel_once(
    client: &mut Client,
    remote: &RemoteArchive,
    (context, message_id): (u8, u16),
    cancel: &AtomicBool,
    sent: &mut bool,
) -> Result<(), QrError> {
    if *sent || !cancel.load(Ordering::Acquire) {
        return Ok(());
    }
    *sent = true;
    tracing::debug!(remote = %remote.ae_title, message_id, "C-CANCEL-RQ sent");
    let command = Command::CCancelRq(CCancelRq {
        message_id_being_responded_to: message_id,
    });
    client
        .send(context, &command, None)
        .map_err(|source| remote.error(source))
}

/// A C-MOVE-RSP or C-GET-RSP: `None` while pending (progress reported),
/// the outcome at the end, an error for a failure.
pub(crate) fn retrieve_response(
    remote: &RemoteArchive,
    operation: &'static str,
    message_id: u16,
    rsp: &sluice_net::dimse::CMoveRsp,
    data_set: DataSet,
    encoding: SmallDatasetEncoding,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<RetrieveOutcome>, QrError> {
    if rsp.message_id_being_responded_to != message_id {
        return Err(remote.protocol(format!(
            "a {operation}-RSP to message {} (ours is {message_id})",
            rsp.message_id_being_responded_to
        )));
    }
    let counts = rsp.sub_operations;
    if rsp.status.category() == StatusCategory::Pending {
        progress(Progress::of(counts));
        return Ok(None);
    }
    let failed_sop_instance_uids = match data_set {
        DataSet::Collected(bytes) => {
            SmallDataset::decode(&bytes, encoding, DatasetLimits::default())
                .ok()
                .and_then(|dataset| {
                    dataset.str(FAILED_SOP_INSTANCE_UID_LIST).map(|list| {
                        list.split('\\')
                            .map(|uid| uid.trim_matches([' ', '\0']).to_owned())
                            .filter(|uid| !uid.is_empty())
                            .collect()
                    })
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let outcome = RetrieveOutcome {
        status: rsp.status.0,
        completed: u32::from(counts.completed.unwrap_or(0)),
        failed: u32::from(counts.failed.unwrap_or(0)),
        warning: u32::from(counts.warning.unwrap_or(0)),
        failed_sop_instance_uids,
        comment: rsp.detail.error_comment.clone(),
    };
    match rsp.status.category() {
        StatusCategory::Success | StatusCategory::Warning | StatusCategory::Cancel => {
            Ok(Some(outcome))
        }
        _ => Err(failed(operation, rsp.status, &rsp.detail, outcome)),
    }
}
