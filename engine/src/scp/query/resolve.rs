//! The instances a C-MOVE or C-GET names ([`Store::datasets_to_send`]:
//! the entities its identifier matches at its level, each expanded into its
//! instances), and the status a failure to list them is answered with.
//! Bounded by [`RETRIEVE_INSTANCES_MAX`]: the list is held while the
//! sub-operations run.

use sluice_net::dimse::Status;
use sluice_net::query::Query;

use super::STATUS_UNABLE_TO_PROCESS;
use crate::store::{QueryError, Store, StoredDataset};

/// The most instances one C-MOVE or C-GET sends (the list of what is left
/// is held in memory: about 300 bytes each).
pub(super) const RETRIEVE_INSTANCES_MAX: usize = 1_000_000;

/// The instances `query` names; `Err` is the status and reason to answer.
pub(super) fn resolve(
    store: &Store,
    query: &Query,
) -> Result<Vec<StoredDataset>, (Status, String)> {
    store
        .datasets_to_send(query, RETRIEVE_INSTANCES_MAX)
        .map_err(|error| match error {
            QueryError::TooManyInstances { .. } => (
                Status::OUT_OF_RESOURCES_SUB_OPERATIONS,
                format!("{error} in one retrieve"),
            ),
            other => {
                tracing::error!(error = %other, "a retrieve failed reading the index");
                (STATUS_UNABLE_TO_PROCESS, other.to_string())
            }
        })
}
