//! Prefetch: a patient's studies on a remote archive (optionally since a
//! date and of a modality), each retrieved unless the local catalogue
//! already holds it whole. The catalogue is only read. A study the index
//! lacks is retrieved whole. One it has with at least as many instances as
//! the remote's Number of Study Related Instances (0020,1208) is held
//! whole. One it has with fewer, or whose count the remote does not
//! return, is compared instance by instance: the remote's series (SERIES
//! level) and their instances (IMAGE level, hierarchical, so archives
//! without relational queries answer too) against the index, and only the
//! instances not here are retrieved, series by series, by their SOP
//! Instance UIDs. Retrieving such a study whole would send every instance
//! already held again, and each would be quarantined as a duplicate.

use sluice_index::Index;
use sluice_net::query::model::tags;
use sluice_net::query::{InformationModel, Level};

use std::collections::BTreeMap;

use super::{
    find, get, move_to, GetTarget, Progress, QrError, QueryRequest, RemoteArchive, RetrieveOutcome,
    RetrieveRequest,
};

/// SOP Instance UIDs named in one IMAGE-level retrieval (a list of 256
/// UIDs of up to 64 characters is an identifier of about 16 KiB).
const UIDS_PER_RETRIEVAL: usize = 256;

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
        let mut retrieve_one = |retrieve: &RetrieveRequest| match fetch {
            Fetch::Move(destination) => move_to(remote, destination, retrieve, &mut |step| {
                progress(uid, step)
            }),
            Fetch::Get(target) => get(remote, retrieve, target, &mut |step| progress(uid, step)),
        };
        let verdict = match (local_instances, remote_instances) {
            (None | Some(0), _) => match retrieve_one(&RetrieveRequest::study(uid)) {
                Ok(retrieved) => PrefetchVerdict::Fetched(retrieved),
                Err(error) => PrefetchVerdict::Failed(error.to_string()),
            },
            (Some(local), Some(remote)) if local >= remote => PrefetchVerdict::Skipped {
                local_instances: local,
            },
            (Some(local), _) => match missing_instances(remote, index, uid) {
                Ok(missing) if missing.is_empty() => PrefetchVerdict::Skipped {
                    local_instances: local,
                },
                Ok(missing) => {
                    let mut total = RetrieveOutcome::default();
                    let mut failure = None;
                    'series: for (series, sops) in &missing {
                        for chunk in sops.chunks(UIDS_PER_RETRIEVAL) {
                            let retrieve = RetrieveRequest::instances(uid, series, chunk.to_vec());
                            match retrieve_one(&retrieve) {
                                Ok(retrieved) => add_outcome(&mut total, retrieved),
                                Err(error) => {
                                    failure = Some(format!(
                                        "{error} (after {} instances retrieved)",
                                        total.completed
                                    ));
                                    break 'series;
                                }
                            }
                        }
                    }
                    match failure {
                        Some(failure) => PrefetchVerdict::Failed(failure),
                        None => PrefetchVerdict::Fetched(total),
                    }
                }
                Err(error) => PrefetchVerdict::Failed(error.to_string()),
            },
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

/// The instances of `study` on `remote` that `index` does not hold, by
/// series: the remote's series (SERIES level), then each one's instances
/// (IMAGE level), each looked up by SOP Instance UID.
fn missing_instances(
    remote: &RemoteArchive,
    index: &Index,
    study: &str,
) -> Result<BTreeMap<String, Vec<String>>, QrError> {
    let mut series_request = QueryRequest::new(InformationModel::StudyRoot, Level::Series);
    series_request.set_key(tags::STUDY_INSTANCE_UID, study);
    let mut series_uids = Vec::new();
    find(remote, &series_request, &mut |series| {
        if let Some(uid) = series
            .value(tags::SERIES_INSTANCE_UID)
            .filter(|uid| !uid.is_empty())
        {
            series_uids.push(uid.to_owned());
        }
    })?;
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for series in series_uids {
        let mut image_request = QueryRequest::new(InformationModel::StudyRoot, Level::Image);
        image_request.set_key(tags::STUDY_INSTANCE_UID, study);
        image_request.set_key(tags::SERIES_INSTANCE_UID, &series);
        let mut sops = Vec::new();
        find(remote, &image_request, &mut |instance| {
            if let Some(sop) = instance
                .value(tags::SOP_INSTANCE_UID)
                .filter(|sop| !sop.is_empty())
            {
                sops.push(sop.to_owned());
            }
        })?;
        let txn = index
            .read()
            .map_err(|error| QrError::Local(format!("the local catalogue: {error}")))?;
        for sop in sops {
            let held = txn
                .instance_by_sop(&sop)
                .map_err(|error| QrError::Local(format!("the local catalogue: {error}")))?
                .is_some();
            if !held {
                missing.entry(series.clone()).or_default().push(sop);
            }
        }
    }
    Ok(missing)
}

/// Adds one retrieval's outcome to a study's: counts summed, the failed
/// UIDs joined, the first status other than success and its comment kept.
fn add_outcome(total: &mut RetrieveOutcome, part: RetrieveOutcome) {
    if total.status == 0x0000 && part.status != 0x0000 {
        total.status = part.status;
        total.comment = part.comment;
    }
    total.completed = total.completed.saturating_add(part.completed);
    total.failed = total.failed.saturating_add(part.failed);
    total.warning = total.warning.saturating_add(part.warning);
    total
        .failed_sop_instance_uids
        .extend(part.failed_sop_instance_uids);
}
