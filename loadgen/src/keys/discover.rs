//! `--keys-from query`: fills a [`KeyPool`] from the target itself before
//! a run, for archives the loadgen did not fill. One association, Study
//! Root C-FINDs in turn: a universal STUDY query (UIDs, patient, date,
//! modalities, instance counts, SOP classes), then, when the workload draws
//! series, a SERIES query per study and, when it queries images by UID, an
//! IMAGE query per series - each bounded by the pool's limits.
//!
//! Blocking, on `sluice_net::client` (a `std` socket driving net's sans-I/O
//! endpoint): it runs once
//! before the measured run, where the `sluice-io` runtime brings nothing.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_net::assoc::{AssociationProposal, ProposedPresentationContext};
use sluice_net::client::{Client, ClientError, Received};
use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::{CFindRq, Command, Priority, StatusCategory, Tag};
use sluice_net::endpoint::{DataSet, EndpointConfig};
use sluice_net::query::model::tags;
use sluice_net::query::{CharacterSet, IdentifierBuilder, Level};
use sluice_net::uid::{self, ts};

use super::{KeyPool, PoolBuilder, PoolLimits, StudyEntry};
use crate::retrieve::PoolNeeds;

/// Largest response identifier buffered.
const IDENTIFIER_LENGTH_MAX: usize = 1024 * 1024;

/// Where to discover keys.
#[derive(Debug, Clone)]
pub struct DiscoverTarget {
    /// The Q/R SCP.
    pub address: SocketAddr,
    /// Called AE title.
    pub called_ae_title: String,
    /// Calling AE title.
    pub calling_ae_title: String,
    /// Give up when the target says nothing for this long.
    pub timeout: Duration,
}

/// Why the keys could not be discovered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The connection failed, broke, timed out, or was rejected or aborted.
    #[error("key discovery: {0}")]
    Client(#[from] ClientError),
    /// The association was rejected, aborted, or refused Study Root C-FIND.
    #[error("key discovery: {0}")]
    Association(String),
    /// A C-FIND ended with a failure status.
    #[error("key discovery: C-FIND at the {level} level failed with status {status:04X}")]
    Failed {
        /// The query level.
        level: Level,
        /// The final status.
        status: u16,
    },
}

/// One association to the target, C-FINDs in turn.
struct Session {
    client: Client,
    context: (u8, SmallDatasetEncoding),
}

impl Session {
    fn open(target: &DiscoverTarget) -> Result<Session, DiscoverError> {
        let mut config = EndpointConfig::default();
        config.collect_length_max = IDENTIFIER_LENGTH_MAX;
        let proposal = AssociationProposal {
            calling_ae_title: target.calling_ae_title.clone(),
            called_ae_title: target.called_ae_title.clone(),
            presentation_contexts: vec![ProposedPresentationContext {
                abstract_syntax: uid::STUDY_ROOT_QR_FIND.to_string(),
                transfer_syntaxes: vec![
                    ts::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                    ts::IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
                ],
                roles: None,
            }],
            pdu_length_max_receive: 65536,
            implementation_class_uid: uid::LOADGEN_IMPLEMENTATION_CLASS_UID.to_string(),
            implementation_version_name: Some(uid::LOADGEN_IMPLEMENTATION_VERSION_NAME.to_string()),
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let rq = proposal
            .to_associate_rq()
            .map_err(|error| DiscoverError::Association(error.to_string()))?;
        let (client, negotiated) = Client::connect(target.address, rq, config, target.timeout)?;
        let context = negotiated
            .presentation_context_for(uid::STUDY_ROOT_QR_FIND)
            .and_then(|context| {
                SmallDatasetEncoding::from_transfer_syntax(&context.transfer_syntax)
                    .map(|encoding| (context.id, encoding))
            })
            .ok_or_else(|| DiscoverError::Association("Study Root C-FIND not accepted".into()))?;
        Ok(Session { client, context })
    }

    /// One C-FIND: the identifiers of its matches, in order, up to `max`
    /// (the rest are read and dropped).
    fn find(
        &mut self,
        identifier: &IdentifierBuilder,
        max: usize,
    ) -> Result<Vec<SmallDataset>, DiscoverError> {
        let (context, encoding) = self.context;
        let level = identifier
            .dataset()
            .str(tags::QUERY_RETRIEVE_LEVEL)
            .and_then(Level::parse)
            .unwrap_or(Level::Study);
        let bytes = identifier
            .encode(encoding)
            .map_err(|error| DiscoverError::Association(error.to_string()))?;
        let message_id = self.client.endpoint().next_message_id();
        let command = Command::CFindRq(CFindRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: uid::STUDY_ROOT_QR_FIND.to_string(),
        });
        self.client.send(context, &command, Some(&bytes))?;
        let mut matches = Vec::new();
        loop {
            match self.client.receive()? {
                Received::Command {
                    command: Command::CFindRsp(rsp),
                    data_set,
                    ..
                } if rsp.message_id_being_responded_to == message_id => {
                    match rsp.status.category() {
                        StatusCategory::Pending => {
                            if let DataSet::Collected(bytes) = data_set {
                                let decoded = SmallDataset::decode(
                                    &bytes,
                                    encoding,
                                    DatasetLimits::default(),
                                );
                                if let (Ok(dataset), true) = (decoded, matches.len() < max) {
                                    matches.push(dataset);
                                }
                            }
                        }
                        StatusCategory::Success | StatusCategory::Warning => return Ok(matches),
                        _ => {
                            return Err(DiscoverError::Failed {
                                level,
                                status: rsp.status.0,
                            })
                        }
                    }
                }
                other => {
                    return Err(DiscoverError::Association(format!(
                        "unexpected answer: {other:?}"
                    )))
                }
            }
        }
    }

    /// Releases the association (best effort: the keys are already read).
    fn release(self) {
        let _ = self.client.release();
    }
}

/// Text of `tag` in a response, padding trimmed; person names decoded in
/// the response's character set.
fn text(dataset: &SmallDataset, charset: &CharacterSet, tag: Tag, vr: Vr) -> String {
    dataset
        .bytes(tag)
        .map(|bytes| {
            charset
                .decode(vr, bytes)
                .trim_matches([' ', '\0'])
                .to_string()
        })
        .unwrap_or_default()
}

fn count(dataset: &SmallDataset, tag: Tag) -> Option<u64> {
    dataset.str(tag).and_then(|value| value.trim().parse().ok())
}

/// Fills a pool from the target's own studies, series and instances as
/// `needs` asks (Study Root, whichever model the workload then uses: the
/// pool holds the values either model queries by).
pub fn discover(
    target: &DiscoverTarget,
    needs: PoolNeeds,
    limits: PoolLimits,
) -> Result<KeyPool, DiscoverError> {
    let mut session = Session::open(target)?;
    let mut builder = PoolBuilder::new(limits);
    let studies = IdentifierBuilder::new(Level::Study)
        .key(tags::STUDY_INSTANCE_UID, "")
        .key(tags::PATIENT_ID, "")
        .key(tags::PATIENT_NAME, "")
        .key(tags::STUDY_DATE, "")
        .key(tags::MODALITIES_IN_STUDY, "")
        .key(tags::SOP_CLASSES_IN_STUDY, "")
        .key(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, "");
    for study in session.find(&studies, limits.studies_max)? {
        let charset = CharacterSet::of_dataset(&study);
        let entry = StudyEntry {
            study_uid: text(&study, &charset, tags::STUDY_INSTANCE_UID, Vr::UI),
            patient_id: text(&study, &charset, tags::PATIENT_ID, Vr::LO),
            patient_name: text(&study, &charset, tags::PATIENT_NAME, Vr::PN),
            study_date: text(&study, &charset, tags::STUDY_DATE, Vr::DA),
            modalities: {
                let mut modalities: Vec<String> =
                    text(&study, &charset, tags::MODALITIES_IN_STUDY, Vr::CS)
                        .split('\\')
                        .map(|value| value.trim().to_string())
                        .filter(|value| !value.is_empty())
                        .collect();
                modalities.sort();
                modalities.dedup();
                modalities
            },
            instance_count: count(&study, tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
            ..StudyEntry::default()
        };
        for class in text(&study, &charset, tags::SOP_CLASSES_IN_STUDY, Vr::UI).split('\\') {
            builder.add_sop_class(class.trim_matches([' ', '\0']));
        }
        builder.add_study(entry);
    }
    if needs.series {
        for index in 0..builder.study_count() {
            let Some(study_uid) = builder
                .study_entry(index)
                .map(|study| study.study_uid.clone())
            else {
                continue;
            };
            let series = IdentifierBuilder::new(Level::Series)
                .key(tags::STUDY_INSTANCE_UID, &study_uid)
                .key(tags::SERIES_INSTANCE_UID, "")
                .key(tags::MODALITY, "")
                .key(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, "");
            let room = limits.series_max.saturating_sub(builder.series_count());
            let found = session.find(&series, room.max(1))?;
            let complete = found.len() <= room;
            for item in found {
                let charset = CharacterSet::of_dataset(&item);
                let _ = builder.add_series(
                    index,
                    &text(&item, &charset, tags::SERIES_INSTANCE_UID, Vr::UI),
                    &text(&item, &charset, tags::MODALITY, Vr::CS),
                    count(&item, tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
                );
            }
            if complete {
                builder.mark_series_complete(index);
            }
        }
    }
    if needs.instances {
        for index in 0..builder.series_count() {
            let Some((series_uid, study)) = builder
                .series_entry(index)
                .map(|series| (series.series_uid.clone(), series.study))
            else {
                continue;
            };
            let Some(study_uid) = builder
                .study_entry(study)
                .map(|study| study.study_uid.clone())
            else {
                continue;
            };
            let images = IdentifierBuilder::new(Level::Image)
                .key(tags::STUDY_INSTANCE_UID, &study_uid)
                .key(tags::SERIES_INSTANCE_UID, &series_uid)
                .key(tags::SOP_INSTANCE_UID, "")
                .key(tags::SOP_CLASS_UID, "");
            for item in session.find(&images, limits.instances_max)? {
                let charset = CharacterSet::of_dataset(&item);
                builder.add_series_instance(
                    index,
                    &text(&item, &charset, tags::SOP_INSTANCE_UID, Vr::UI),
                    &text(&item, &charset, tags::SOP_CLASS_UID, Vr::UI),
                );
            }
        }
    }
    session.release();
    Ok(builder.finish(&format!("query of {}", target.address)))
}
