//! The write vocabulary: operations the engine submits and their outcomes.
//!
//! Every operation is applied by the single writer thread inside one LMDB
//! write transaction, so the duplicate decision for a triplet and the write
//! that follows it are atomic with respect to every other submitter.

use crate::error::{IndexError, InvalidInput};
use crate::location::{Location, SegmentObject};
use crate::records::{
    CommitmentRecord, FileId, InstanceRecord, NewInstance, QuarantineEntry, QuarantineReason,
    Triplet,
};

/// What to do when the triplet is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DuplicatePolicy {
    /// Keep the stored instance; hold the new one in quarantine (the seed's behaviour).
    #[default]
    Quarantine,
    /// Keep the stored instance; write nothing (the engine discards the new file).
    Reject,
    /// Store the new instance in place of the old one (the engine deletes the old file).
    Replace,
    /// Like `Quarantine`, but a byte-identical duplicate (same data set checksum
    /// and size) is dropped: nothing written, the engine discards the new file.
    /// Not while the stored entry is in doubt (its instance may still fail and
    /// have it removed): the newcomer is then quarantined.
    DropIfIdentical,
}

/// What to do when the SOP Instance UID is stored under another study or series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConflictPolicy {
    /// Keep the stored instance; hold the new one in quarantine.
    #[default]
    Quarantine,
    /// Keep the stored instance; write nothing.
    Reject,
    /// Remove the stored instance (from its study and series) and store the new one.
    Replace,
}

/// A request to store one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRequest {
    /// The instance.
    pub instance: NewInstance,
    /// What to do if the triplet is already stored.
    pub duplicate_policy: DuplicatePolicy,
    /// What to do if the SOP Instance UID is stored under another triplet.
    pub conflict_policy: ConflictPolicy,
    /// The file's data or directory entry may not be durable yet: the engine
    /// commits while they are being synced. When the store creates an entry
    /// naming the file (stored or quarantined), the file id is recorded in
    /// the `in_doubt` table in the same transaction, until a later
    /// [`WriteOp::ClearInDoubt`]; start-up recovery verifies such files
    /// (size and checksum) before trusting their entries.
    pub in_doubt: bool,
    /// What lenient checks found in the instance, as the engine words it
    /// (at most [`crate::FLAGGED_PAYLOAD_BYTES_MAX`] bytes): when the store
    /// makes an entry name the file (stored, or held in quarantine), it is
    /// recorded in the `flagged` table in the same transaction, for
    /// [`crate::ReadTxn::flagged`]. `None`: nothing was found.
    pub flagged: Option<Vec<u8>>,
    /// Where the instance's bytes are: when the store makes an entry name
    /// the file id (stored, or held in quarantine) and this is a record,
    /// the record's place goes in the `locations` table and its segment's
    /// state follows (see [`crate::SegmentState`]).
    pub location: Location,
}

impl StoreRequest {
    /// A request with the default policies (quarantine both).
    pub fn new(instance: NewInstance) -> Self {
        StoreRequest {
            instance,
            duplicate_policy: DuplicatePolicy::default(),
            conflict_policy: ConflictPolicy::default(),
            in_doubt: false,
            flagged: None,
            location: Location::File,
        }
    }
}

/// One write operation.
// Stores are nearly every operation: boxing them would add an allocation per
// instance to make the rare variants smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOp {
    /// Store an instance, deciding duplicates.
    Store(StoreRequest),
    /// Remove a stored instance (its study and series counts follow).
    Remove(Triplet),
    /// Store a quarantined instance, replacing whatever holds its triplet or
    /// SOP Instance UID, and delete the quarantine entry.
    ReleaseQuarantine(u64),
    /// Delete a quarantine entry.
    PurgeQuarantine(u64),
    /// Create or overwrite a storage-commitment record.
    PutCommitment {
        /// Transaction UID (0008,1195).
        transaction_uid: String,
        /// The record.
        record: CommitmentRecord,
    },
    /// Delete a storage-commitment record.
    RemoveCommitment {
        /// Transaction UID (0008,1195).
        transaction_uid: String,
    },
    /// These files are now durable (data and directory entry): forget that
    /// their entries were committed in doubt. Ids not in doubt are ignored.
    ClearInDoubt(Vec<FileId>),
    /// This file's instance failed after its entry committed in doubt:
    /// remove the entry its in-doubt mark names (the stored instance, or
    /// the quarantine entry) if that entry still names this file, and the
    /// mark. Keyed by the file id alone, so it never removes another
    /// file's entry and repeating it is harmless (a file not in doubt is
    /// ignored): the engine can submit it again with every batch until one
    /// commits.
    RemoveInDoubt(FileId),
    /// Cluster mode: this stored instance lost the cluster-wide decision on
    /// its SOP Instance UID (another node published it first). If the
    /// stored entry of its SOP Instance UID still names
    /// `instance.record.file_id`, the entry is removed and, with a
    /// `hold` reason, moved into quarantine (an in-doubt mark on the file
    /// then names the quarantine entry); without one (the duplicate
    /// policies that keep nothing), the file's in-doubt mark goes too and
    /// the file is referenced by nothing. The file itself is the engine's
    /// to move or discard.
    Demote {
        /// The instance as it was stored (its file id decides).
        instance: NewInstance,
        /// Why it is held in quarantine; `None`: it is not kept.
        hold: Option<QuarantineReason>,
    },
    /// This segment is sealed (full, or a write or flush in it failed):
    /// recovery no longer scans it. Idempotent.
    SealSegment(u64),
    /// This sealed segment was uploaded to the object store and verified
    /// there: `object` (not evicted) is recorded. Refused for a segment
    /// that is not sealed (its bytes may still change). Idempotent; a
    /// segment already recorded keeps its eviction.
    SegmentUploaded {
        /// The segment.
        segment: u64,
        /// Its object (key and size; `evicted` must be false).
        object: SegmentObject,
    },
    /// The uploaded segment's local file is (about to be) deleted: its
    /// records are read from the object from this commit on. Refused for a
    /// segment not recorded as uploaded. Idempotent.
    SegmentEvicted(u64),
}

/// What became of the new instance when it was not simply stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Held in quarantine under this id; the new file belongs to the entry.
    Quarantined {
        /// The quarantine entry.
        quarantine_id: u64,
    },
    /// Nothing written; the new file is referenced by nothing.
    Rejected,
    /// Byte-identical: nothing written; the new file is referenced by nothing.
    Dropped,
    /// The new instance is stored; `previous` was removed and its file is
    /// referenced by nothing.
    Replaced {
        /// The record that was replaced.
        previous: InstanceRecord,
    },
}

/// The outcome of a [`WriteOp::Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOutcome {
    /// A new instance, stored and indexed.
    Stored,
    /// The triplet was stored, with different bytes.
    Duplicate(Disposition),
    /// The triplet was stored with the same data set checksum and size.
    DuplicateIdentical(Disposition),
    /// The SOP Instance UID was stored under another study or series.
    SopInstanceConflict {
        /// Where the SOP Instance UID is stored (before this operation).
        stored: Triplet,
        /// What became of the new instance.
        disposition: Disposition,
    },
}

impl StoreOutcome {
    /// The disposition of a non-`Stored` outcome.
    pub fn disposition(&self) -> Option<&Disposition> {
        match self {
            StoreOutcome::Stored => None,
            StoreOutcome::Duplicate(disposition)
            | StoreOutcome::DuplicateIdentical(disposition) => Some(disposition),
            StoreOutcome::SopInstanceConflict { disposition, .. } => Some(disposition),
        }
    }
}

/// The outcome of a [`WriteOp::ReleaseQuarantine`] that found its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The instance now stored (it was the entry's).
    pub instance: NewInstance,
    /// The record it replaced (same triplet or same SOP Instance UID); its file
    /// is referenced by nothing.
    pub replaced: Option<InstanceRecord>,
}

/// The outcome of one write operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// For [`WriteOp::Store`].
    Store(StoreOutcome),
    /// For [`WriteOp::Remove`]: the removed record, `None` if not stored.
    Removed(Option<InstanceRecord>),
    /// For [`WriteOp::ReleaseQuarantine`]: `None` if there is no such entry.
    Released(Option<Released>),
    /// For [`WriteOp::PurgeQuarantine`]: the deleted entry, `None` if there is none.
    Purged(Option<QuarantineEntry>),
    /// For [`WriteOp::PutCommitment`]: whether a record was overwritten.
    CommitmentPut {
        /// A record with this Transaction UID existed.
        replaced: bool,
    },
    /// For [`WriteOp::RemoveCommitment`]: whether a record existed.
    CommitmentRemoved {
        /// A record with this Transaction UID existed.
        existed: bool,
    },
    /// For [`WriteOp::ClearInDoubt`]: how many of the ids were in doubt.
    InDoubtCleared {
        /// Ids found in doubt (and now cleared).
        cleared: u64,
    },
    /// For [`WriteOp::RemoveInDoubt`]: whether an entry naming the file
    /// was removed.
    InDoubtRemoved {
        /// An entry was found and removed.
        removed: bool,
    },
    /// For [`WriteOp::Demote`].
    Demoted {
        /// The stored entry was removed; false if its SOP Instance UID no
        /// longer named the file (removed or replaced meanwhile: nothing
        /// done).
        removed: bool,
        /// The quarantine entry now holding the instance, when held.
        quarantine_id: Option<u64>,
    },
    /// For [`WriteOp::SealSegment`].
    SegmentSealed,
    /// For [`WriteOp::SegmentUploaded`] and [`WriteOp::SegmentEvicted`]:
    /// the segment's object as recorded now.
    SegmentObject(SegmentObject),
}

/// One operation's result: refused input leaves the rest of the batch alone.
pub type ItemResult = Result<WriteOutcome, InvalidInput>;

/// A batch's result: one item result per operation, in order; or the failure
/// of the transaction, in which case nothing of the batch was committed.
pub type BatchResult = Result<Vec<ItemResult>, IndexError>;

/// Which kind of entry references a file id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileRole {
    /// A stored instance.
    Instance,
    /// A quarantine entry.
    Quarantine,
}

/// The answer of [`crate::ReadTxn::sop_presence`], in the terms of a
/// storage-commitment failure reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SopPresence {
    /// Stored with the expected SOP class: committed.
    Stored,
    /// Not stored (failure reason 0112, no such object instance).
    Absent,
    /// Stored with another SOP class (failure reason 0119, class/instance conflict).
    ClassMismatch {
        /// The class it is stored with.
        stored_sop_class_uid: String,
    },
}
