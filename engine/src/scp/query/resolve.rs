//! The instances a C-MOVE or C-GET names: the entities its identifier
//! matches at its level (`sluice_index::ReadTxn::find`, the same planner as
//! C-FIND), each expanded into its instances, as the store's read API
//! describes them ([`StoredDataset`]). Bounded by
//! [`RETRIEVE_INSTANCES_MAX`]: the list is held while the sub-operations
//! run.

use sluice_net::dimse::Status;
use sluice_net::query::{Level, Query};

use super::STATUS_UNABLE_TO_PROCESS;
use crate::store::{Store, StoredDataset};

/// The most instances one C-MOVE or C-GET sends (the list of what is left
/// is held in memory: about 300 bytes each).
pub(super) const RETRIEVE_INSTANCES_MAX: usize = 1_000_000;

/// The instances a retrieve names, from the index.
pub(super) fn resolve(
    store: &Store,
    query: &Query,
) -> Result<Vec<StoredDataset>, (Status, String)> {
    let unable = |error: sluice_index::IndexError| {
        tracing::error!(%error, "a retrieve failed reading the index");
        (STATUS_UNABLE_TO_PROCESS, format!("index: {error}"))
    };
    let read = store.index().read().map_err(unable)?;
    let too_many = || {
        (
            Status::OUT_OF_RESOURCES_SUB_OPERATIONS,
            format!("more than {RETRIEVE_INSTANCES_MAX} instances in one retrieve"),
        )
    };
    let mut datasets = Vec::new();
    let push = |entry: &sluice_index::InstanceEntry,
                datasets: &mut Vec<StoredDataset>|
     -> Result<(), (Status, String)> {
        if datasets.len() >= RETRIEVE_INSTANCES_MAX {
            return Err(too_many());
        }
        datasets.push(store.dataset_of(entry));
        Ok(())
    };
    let mut resume = None;
    loop {
        let page = read
            .find(
                query,
                resume.as_ref(),
                sluice_index::FindBudget {
                    matches_max: 4096,
                    scanned_max: 65_536,
                },
            )
            .map_err(unable)?;
        for found in &page.matches {
            match found.level {
                Level::Image => {
                    if let Some(entry) = &found.instance {
                        push(entry, &mut datasets)?;
                    }
                }
                Level::Series | Level::Study => {
                    let Some(study) = found.study_instance_uid() else {
                        continue;
                    };
                    let listing = read
                        .instances_of_study(
                            study,
                            found.series_instance_uid(),
                            RETRIEVE_INSTANCES_MAX,
                        )
                        .map_err(unable)?;
                    if listing.truncated {
                        return Err(too_many());
                    }
                    for entry in &listing.items {
                        push(entry, &mut datasets)?;
                    }
                }
                Level::Patient => {
                    let Some(patient) = &found.patient else {
                        continue;
                    };
                    let studies = read
                        .query_studies(
                            &sluice_index::StudyQuery {
                                patient_id: Some(patient.patient_id.clone()),
                                ..Default::default()
                            },
                            RETRIEVE_INSTANCES_MAX,
                        )
                        .map_err(|error| (STATUS_UNABLE_TO_PROCESS, format!("index: {error}")))?;
                    for study in &studies.items {
                        let listing = read
                            .instances_of_study(
                                &study.study_instance_uid,
                                None,
                                RETRIEVE_INSTANCES_MAX,
                            )
                            .map_err(unable)?;
                        for entry in &listing.items {
                            push(entry, &mut datasets)?;
                        }
                    }
                }
            }
        }
        match page.resume {
            Some(next) => resume = Some(next),
            None => return Ok(datasets),
        }
    }
}
