//! Prefetch: a patient's studies on a remote archive (optionally since a
//! date and of a modality), each retrieved unless the local catalogue
//! already holds it whole. The catalogue is only read: a study is "held
//! whole" when the index has it with at least as many instances as the
//! remote's Number of Study Related Instances (0020,1208); a remote that
//! does not return the count gets every study the index lacks fetched,
//! and a study partly here is fetched again (duplicates are then decided
//! by the ingest path as for any store).

use sluice_index::Index;
use sluice_net::query::model::tags;
use sluice_net::query::{InformationModel, Level};

use super::{
    find, get, move_to, GetTarget, Progress, QrError, QueryRequest, RemoteArchive, RetrieveOutcome,
    RetrieveRequest,
};

/// Which of the patient's studies to consider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefetchFilter {
    /// The Patient ID (0010,0020).
    pub patient_id: String,
    /// Studies on or after this date (`YYYYMMDD`).
    pub since: Option<String>,
    /// Studies with this modality in Modalities in Study (0008,0061).
    pub modality: Option<String>,
}

/// How the studies are fetched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Fetch {
    /// C-MOVE to this destination AE (our own, for the running server).
    Move(String),
    /// C-GET, relayed to this local Storage SCP.
    Get(GetTarget),
}

/// What prefetch did with one study.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefetchVerdict {
    /// Already held whole here: not retrieved.
    Skipped {
        /// Instances in the local index.
        local_instances: u32,
    },
    /// Retrieved.
    Fetched(RetrieveOutcome),
    /// The retrieval failed (the others went on).
    Failed(String),
}

/// One of the patient's studies on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchStudy {
    /// Its Study Instance UID.
    pub study_instance_uid: String,
    /// Its Study Date, as the remote gave it.
    pub study_date: String,
    /// Its modalities, as the remote gave them.
    pub modalities: String,
    /// Number of Study Related Instances on the remote, if given.
    pub remote_instances: Option<u32>,
    /// What was done.
    pub verdict: PrefetchVerdict,
}

/// The studies found and what was done with each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefetchOutcome {
    /// In the remote's order.
    pub studies: Vec<PrefetchStudy>,
}

/// Prefetches the studies of `filter` from `remote` that `index` does not
/// hold whole, fetching with `fetch`; `progress` hears each retrieval's
/// pending responses with the study's UID.
pub fn prefetch(
    remote: &RemoteArchive,
    filter: &PrefetchFilter,
    index: &Index,
    fetch: &Fetch,
    progress: &mut dyn FnMut(&str, Progress),
) -> Result<PrefetchOutcome, QrError> {
    if filter.patient_id.is_empty() {
        return Err(QrError::BadRequest("prefetch needs a Patient ID".into()));
    }
    let mut request = QueryRequest::new(InformationModel::StudyRoot, Level::Study);
    request.set_key(tags::PATIENT_ID, &filter.patient_id);
    if let Some(since) = &filter.since {
        request.set_key(tags::STUDY_DATE, &format!("{since}-"));
    }
    if let Some(modality) = &filter.modality {
        request.set_key(tags::MODALITIES_IN_STUDY, modality);
    }
    let mut found = Vec::new();
    find(remote, &request, &mut |study| found.push(study.clone()))?;
    let mut outcome = PrefetchOutcome::default();
    for study in found {
        let Some(uid) = study
            .value(tags::STUDY_INSTANCE_UID)
            .filter(|uid| !uid.is_empty())
        else {
            continue;
        };
        let remote_instances = study
            .value(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
            .and_then(|count| count.trim().parse::<u32>().ok());
        let local_instances = index
            .read()
            .and_then(|txn| txn.study(uid))
            .map_err(|error| QrError::Local(format!("the local catalogue: {error}")))?
            .map(|record| record.number_of_instances);
        let held_whole = match (local_instances, remote_instances) {
            (Some(local), Some(remote)) => local >= remote,
            (Some(local), None) => local > 0,
            (None, _) => false,
        };
        let verdict = if held_whole {
            PrefetchVerdict::Skipped {
                local_instances: local_instances.unwrap_or(0),
            }
        } else {
            let retrieve = RetrieveRequest::study(uid);
            let result = match fetch {
                Fetch::Move(destination) => move_to(remote, destination, &retrieve, &mut |step| {
                    progress(uid, step)
                }),
                Fetch::Get(target) => {
                    get(remote, &retrieve, target, &mut |step| progress(uid, step))
                }
            };
            match result {
                Ok(retrieved) => PrefetchVerdict::Fetched(retrieved),
                Err(error) => PrefetchVerdict::Failed(error.to_string()),
            }
        };
        outcome.studies.push(PrefetchStudy {
            study_instance_uid: uid.to_owned(),
            study_date: study.value(tags::STUDY_DATE).unwrap_or_default().to_owned(),
            modalities: study
                .value(tags::MODALITIES_IN_STUDY)
                .unwrap_or_default()
                .to_owned(),
            remote_instances,
            verdict,
        });
    }
    Ok(outcome)
}
