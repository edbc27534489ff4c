//! The instances a C-MOVE or C-GET names ([`Store::datasets_to_send`]:
//! the entities its identifier matches at its level, each expanded into its
//! instances), put in the order their bytes lie on disk
//! ([`in_read_order`]), and the status a failure to list them is answered
//! with. Bounded by [`RETRIEVE_INSTANCES_MAX`]: the list is held while the
//! sub-operations run.

use sluice_net::dimse::Status;
use sluice_net::query::Query;

use super::STATUS_UNABLE_TO_PROCESS;
use crate::store::{DatasetLocation, QueryError, Store, StoredDataset};

/// The most instances one C-MOVE or C-GET sends (the list of what is left
/// is held in memory: about 300 bytes each).
pub(super) const RETRIEVE_INSTANCES_MAX: usize = 1_000_000;

/// The instances `query` names, in read order; `Err` is the status and
/// reason to answer.
pub(super) fn resolve(
    store: &Store,
    query: &Query,
) -> Result<Vec<StoredDataset>, (Status, String)> {
    let mut datasets = store
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
        })?;
    in_read_order(&mut datasets);
    Ok(datasets)
}

/// Puts segment records in the order they lie on disk: by segment, then
/// by offset in it. The index lists a study by series and SOP Instance
/// UID, which is not the order the records were written in (UIDs are
/// random to the writer), so read in the listing's order a retrieve's
/// records are random reads all over its segments: on a cold page cache
/// each one a disk seek and a readahead window read for one record. In
/// place order they are one sequential read per segment, which the
/// kernel's readahead keeps ahead of the sender. PS3.4 sets no order for
/// a retrieve's sub-operations. Files (the files layout) keep the
/// listing's order, before the records (the sort is stable).
pub(super) fn in_read_order(datasets: &mut [StoredDataset]) {
    datasets.sort_by_key(|dataset| match &dataset.location {
        DatasetLocation::File { .. } => None,
        DatasetLocation::Record {
            segment,
            record_offset,
            ..
        } => Some((*segment, *record_offset)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_index::Triplet;

    fn record(sop: &str, segment: u64, record_offset: u64) -> StoredDataset {
        StoredDataset {
            triplet: Triplet::new("1", "1.1", sop),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            location: DatasetLocation::Record {
                path: format!("segments/{segment:016x}.seg").into(),
                segment,
                record_offset,
                part10_offset: record_offset + 64,
                offset: record_offset + 200,
                length: 1000,
                evicted: None,
            },
        }
    }

    fn file(sop: &str) -> StoredDataset {
        StoredDataset {
            location: DatasetLocation::File {
                path: format!("objects/{sop}").into(),
                offset: 132,
                length: 1000,
            },
            ..record(sop, 0, 0)
        }
    }

    /// Records go by segment, then offset, whatever order the index
    /// listed them in; files keep their order, ahead of the records.
    #[test]
    fn records_go_in_segment_then_offset_order_and_files_keep_theirs() {
        let mut datasets = vec![
            record("a", 2, 4096),
            file("f1"),
            record("b", 1, 900_000),
            record("c", 2, 0),
            file("f2"),
            record("d", 1, 4096),
            file("f0"),
        ];
        in_read_order(&mut datasets);
        let order: Vec<&str> = datasets
            .iter()
            .map(|dataset| dataset.triplet.sop_instance_uid.as_str())
            .collect();
        assert_eq!(order, ["f1", "f2", "f0", "d", "b", "c", "a"]);
    }
}
