//! `sluice-index`: the LMDB catalogue of stored instances.
//!
//! It knows LMDB and records, nothing of networking or DICOM parsing: the
//! engine hands it plain strings and numbers. What it owns:
//! - the tables and their encoding (`tables`, `keys`, `records`; the on-disk
//!   format is specified in docs/design/index-format.md), and the upgrade of
//!   an older schema (`migrate`);
//! - the SOP Instance UID index, an LSM tree beside LMDB (`sop_index`;
//!   docs/design/index-at-scale.md);
//! - the one writer thread that owns every write transaction and decides
//!   duplicates inside it (`writer`, `apply`, `ops`);
//! - readers on any thread: lookups, listings, study queries (`read`, `query`),
//!   and Query/Retrieve's entities of every level in pages (`find`);
//! - stats and a consistency check (`index`, `check`).
//!
//! ```no_run
//! use sluice_index::{Index, IndexError, IndexOptions, NewInstance, StoreRequest, WriteOp};
//!
//! fn store_and_find(instance: NewInstance) -> Result<(), IndexError> {
//!     let index = Index::open("/var/lib/sluice/index", IndexOptions::default())?;
//!     let sop_instance_uid = instance.triplet.sop_instance_uid.clone();
//!     let _outcomes = index.writer().execute(vec![WriteOp::Store(StoreRequest::new(instance))])?;
//!     let _found = index.read()?.instance_by_sop(&sop_instance_uid)?;
//!     Ok(())
//! }
//! ```

mod apply;
mod check;
mod error;
mod find;
mod index;
mod keys;
mod location;
mod migrate;
mod ops;
mod query;
mod read;
mod records;
mod sop_index;
mod tables;
mod visibility;
mod writer;

pub use check::ConsistencyReport;
pub use error::{IndexError, InvalidInput, QueryError};
pub use find::{index_holds, FindBudget, FindMatch, FindPage, FindResume, PatientSummary};
pub use index::{AnsweredMark, Index, IndexOptions, IndexStats, TableStats, SOP_INDEX_TABLE_NAME};
pub use keys::UID_BYTES_MAX;
pub use location::{Location, RecordPlace, SegmentObject, SegmentState, OBJECT_KEY_BYTES_MAX};
pub use ops::{
    BatchResult, ConflictPolicy, Disposition, DuplicatePolicy, FileRole, ItemResult, Released,
    SopPresence, StoreOutcome, StoreRequest, WriteOp, WriteOutcome,
};
pub use query::{CompiledStudyQuery, StudyQuery};
pub use read::{
    CommitmentEntry, Flagged, InDoubt, InDoubtEntry, InstanceEntry, Listing, ReadTxn, SeriesEntry,
    StudyMatch,
};
pub use records::{
    Checksum, CommitmentRecord, CommitmentState, FileId, InstanceRecord, NewInstance,
    QuarantineEntry, QuarantineReason, SeriesAttributes, SeriesRecord, StudyAttributes,
    StudyRecord, Triplet, AE_TITLE_BYTES_MAX, ATTRIBUTE_BYTES_MAX, COMMITMENT_PAYLOAD_BYTES_MAX,
    FLAGGED_PAYLOAD_BYTES_MAX,
};
pub use tables::SCHEMA_VERSION;
pub use writer::{Batch, IndexWriter, SubmitError};

#[cfg(test)]
mod tests {
    /// The engine shares the index across its cores and moves readers between
    /// tasks: these must stay thread-safe.
    #[test]
    fn handles_are_thread_safe() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<crate::Index>();
        send_sync::<crate::IndexWriter>();
        send::<crate::ReadTxn<'static>>();
        send::<crate::Batch>();
        send_sync::<crate::IndexError>();
    }
}
