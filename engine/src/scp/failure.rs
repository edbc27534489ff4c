//! Why a DIMSE request of the Storage SCP fails: one typed [`Failure`] for
//! every C-STORE and N-ACTION refusal and every failure on an instance's way
//! to durable, with its status ([`Failure::status`]) and its reason for
//! people (`Display`, also the N-ACTION-RSP's Error Comment and the
//! `Rejected` event's reason). The mapping to DICOM statuses lives here and
//! nowhere else (docs/design/ingest.md has the table).

use std::path::PathBuf;
use std::sync::Arc;

use sluice_index::{IndexError, InvalidInput};
use sluice_io::{IoError, SubmitError};
use sluice_net::dimse::commitment::CommitmentError;
use sluice_net::dimse::Status;
use sluice_net::scan::StoreRejection;

use crate::commit::messages::Refusal;
use crate::store::part10::FileMetaError;

/// Why a C-STORE or an N-ACTION fails.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Failure {
    // ----- C-STORE, refused at the command -----
    /// The command's SOP class is not its presentation context's (0122).
    #[error("SOP class {sop_class_uid} sent on the presentation context of {abstract_syntax}")]
    SopClassNotOnContext {
        /// The command's Affected SOP Class UID.
        sop_class_uid: String,
        /// The context's abstract syntax.
        abstract_syntax: String,
    },
    /// The association's access rule does not grant the service (0124).
    #[error("{0}")]
    NotAuthorized(super::access::NotAuthorized),
    /// The store is in its refusing state (A700).
    #[error("the store refuses after repeated durability failures")]
    Refusing,
    /// The server is stopping: it answers what is in flight and takes
    /// nothing new (A700; the sender retries later).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// `storage.instances_in_flight_max_per_core` instances on this core (A710).
    #[error("{max} instances in flight on this core")]
    InFlightLimit {
        /// The limit.
        max: usize,
    },
    /// Free space below `storage.free_space_floor` (A711).
    #[error("free space below the floor of {floor} bytes")]
    BelowFreeSpaceFloor {
        /// The floor, in bytes.
        floor: u64,
    },
    /// The context's transfer syntax cannot be scanned (C000).
    #[error("transfer syntax {transfer_syntax_uid} cannot be scanned")]
    TransferSyntaxNotScannable {
        /// The transfer syntax.
        transfer_syntax_uid: String,
    },
    /// The command's values cannot go into the file meta group (A900).
    #[error("{0}")]
    FileMeta(FileMetaError),
    /// This core's file id counter is exhausted (A700).
    #[error("file id counter exhausted")]
    FileIdsExhausted,
    /// The core's temporary directory could not be created (A700).
    #[error("cannot create the temporary directory: {0}")]
    TemporaryDirectory(Arc<std::io::Error>),
    /// Too many entries of failed instances wait for the index to remove
    /// them (index transactions failing: A700).
    #[error("{owed} index entries of failed instances wait to be removed")]
    RemovalsOwed {
        /// How many.
        owed: usize,
    },

    // ----- C-STORE, the data set -----
    /// The head scanner's verdict (A900, C010, C011, C012).
    #[error("{0}")]
    Rejected(StoreRejection),
    /// The index refused the instance's values (A900).
    #[error("refused by the index: {0}")]
    IndexRefused(InvalidInput),
    /// A receive-buffer range the decoder gave is not in the buffer (A710;
    /// a decoder bug, asserted in debug builds).
    #[error("receive buffer slice out of range")]
    ReceiveSliceOutOfRange,

    // ----- C-STORE, on the way to durable -----
    /// The io operation table is full: the temporary file's open (A710).
    #[error("cannot open a temporary file: {0}")]
    OpenSubmit(SubmitError),
    /// The io operation table is full: a write (A710).
    #[error("cannot submit a write: {0}")]
    WriteSubmit(SubmitError),
    /// The io operation table is full: the seal's write (A710).
    #[error("cannot submit the seal's write: {0}")]
    SealSubmit(SubmitError),
    /// The temporary file could not be created (A700).
    #[error("cannot create the temporary file: {0}")]
    Open(IoError),
    /// A write failed (A700).
    #[error("write failed: {0}")]
    Write(IoError),
    /// A fan-out directory could not be created (A700).
    #[error("cannot create {}: {source}", path.display())]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// The core's segment could not be created (layout `segments`: A700,
    /// A711 when the disk is full).
    #[error("cannot create a segment: {0}")]
    Segment(Arc<std::io::Error>),
    /// The rename into the area could not be submitted (A700).
    #[error("cannot submit rename: {0}")]
    RenameSubmit(SubmitError),
    /// The rename into the area failed (A700).
    #[error("rename failed: {0}")]
    Rename(IoError),
    /// The file's `fdatasync` could not be submitted (A700).
    #[error("cannot submit fdatasync: {0}")]
    SyncSubmit(SubmitError),
    /// The file's `fdatasync` or its directory's `fsync` failed (A700).
    #[error("fsync failed: {0}")]
    Fsync(IoError),
    /// The directory to sync could not be opened (A700).
    #[error("cannot open the directory: {0}")]
    OpenDirectorySubmit(SubmitError),
    /// The directory to sync could not be opened (A700).
    #[error("cannot open the directory: {0}")]
    OpenDirectory(IoError),
    /// The directory's `fsync` could not be submitted (A700).
    #[error("cannot submit the directory sync: {0}")]
    DirectorySyncSubmit(SubmitError),
    /// The index transaction failed (A711 when full, else A700).
    #[error("index commit failed: {0}")]
    IndexCommit(IndexError),

    // ----- N-ACTION (Storage Commitment), refused by the core -----
    /// Not the Storage Commitment Push Model (0122).
    #[error("N-ACTION for {sop_class_uid} is not served")]
    ActionNotServed {
        /// The Requested SOP Class UID.
        sop_class_uid: String,
    },
    /// Not the well-known SOP instance (0112).
    #[error("no SOP instance {sop_instance_uid}")]
    NoSuchCommitmentInstance {
        /// The Requested SOP Instance UID.
        sop_instance_uid: String,
    },
    /// Not action type 1 (0123).
    #[error("no action type {action_type_id}")]
    NoSuchAction {
        /// The Action Type ID.
        action_type_id: u16,
    },
    /// No data set (0120).
    #[error("N-ACTION-RQ without action information")]
    NoActionInformation,
    /// The data set exceeds `DatasetLimits` (0213).
    #[error("action information too long")]
    ActionInformationTooLong,
    /// The context's transfer syntax cannot be decoded (0110).
    #[error("action information in a transfer syntax that cannot be decoded")]
    ActionTransferSyntax,
    /// The action information is not a valid request (0120, 0121, 0106, 0110).
    #[error("{0}")]
    CommitmentRequest(CommitmentError),
    /// The tracker's channel is full (0213).
    #[error("the commitment tracker is busy")]
    TrackerBusy,
    /// The tracker refused the request.
    #[error("{0}")]
    Commitment(Refusal),
}

impl Failure {
    /// Whether the failure is the lack of space of the data directory's
    /// file system or of the index (ENOSPC, EDQUOT, the index map or its
    /// disk full, the free-space floor). Not a sign that stored data is at
    /// risk: answered A711, which senders retry, and never counted towards
    /// the refusing state, so the store takes instances again by itself
    /// once space returns.
    pub(crate) fn is_out_of_space(&self) -> bool {
        match self {
            Failure::BelowFreeSpaceFloor { .. } => true,
            Failure::Open(error)
            | Failure::Write(error)
            | Failure::Rename(error)
            | Failure::Fsync(error)
            | Failure::OpenDirectory(error) => is_no_space(error.errno),
            Failure::TemporaryDirectory(source)
            | Failure::CreateDirectory { source, .. }
            | Failure::Segment(source) => source.raw_os_error().is_some_and(is_no_space),
            Failure::IndexCommit(error) => matches!(
                error,
                IndexError::MapFull { .. } | IndexError::DiskFull { .. }
            ),
            _ => false,
        }
    }

    /// Whether the failure counts towards the refusing state
    /// ([`crate::scp::ingest::DURABILITY_FAILURES_BEFORE_REFUSING`]): an
    /// fsync, write, rename, directory or index failure that may mean the
    /// disk or the index cannot keep what it is given. Not the lack of
    /// space, nor a busy index (too many readers), nor a submission the io
    /// runtime's full table refused.
    pub(crate) fn is_durability_failure(&self) -> bool {
        if self.is_out_of_space() {
            return false;
        }
        match self {
            Failure::Open(_)
            | Failure::Write(_)
            | Failure::Rename(_)
            | Failure::RenameSubmit(_)
            | Failure::SyncSubmit(_)
            | Failure::Fsync(_)
            | Failure::CreateDirectory { .. }
            | Failure::Segment(_)
            | Failure::OpenDirectorySubmit(_)
            | Failure::OpenDirectory(_)
            | Failure::DirectorySyncSubmit(_) => true,
            Failure::IndexCommit(error) => !error.is_out_of_resources(),
            _ => false,
        }
    }

    /// The refusal of `service` by the association's access rule
    /// (`grant`, from `rules`), if its rule does not grant it.
    pub(crate) fn unauthorized(
        grant: super::access::Grant,
        rules: &[crate::config::AccessRule],
        service: crate::config::AccessService,
    ) -> Option<Failure> {
        grant
            .check(rules, service)
            .err()
            .map(Failure::NotAuthorized)
    }

    /// The C-STORE-RSP or N-ACTION-RSP status.
    pub(crate) fn status(&self) -> Status {
        if self.is_out_of_space() {
            return Status::OUT_OF_DISK_SPACE;
        }
        match self {
            Failure::SopClassNotOnContext { .. } | Failure::ActionNotServed { .. } => {
                Status::SOP_CLASS_NOT_SUPPORTED
            }
            Failure::InFlightLimit { .. }
            | Failure::ReceiveSliceOutOfRange
            | Failure::OpenSubmit(_)
            | Failure::WriteSubmit(_)
            | Failure::SealSubmit(_) => Status::OUT_OF_MEMORY,
            Failure::BelowFreeSpaceFloor { .. } => Status::OUT_OF_DISK_SPACE,
            Failure::TransferSyntaxNotScannable { .. } => Status::CANNOT_UNDERSTAND,
            Failure::FileMeta(_) | Failure::IndexRefused(_) => {
                Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS
            }
            Failure::Rejected(rejection) => rejection.status(),
            Failure::IndexCommit(error) => status_of_index_error(error),
            Failure::Refusing
            | Failure::RemovalsOwed { .. }
            | Failure::ShuttingDown
            | Failure::FileIdsExhausted
            | Failure::TemporaryDirectory(_)
            | Failure::Open(_)
            | Failure::Write(_)
            | Failure::CreateDirectory { .. }
            | Failure::Segment(_)
            | Failure::RenameSubmit(_)
            | Failure::Rename(_)
            | Failure::SyncSubmit(_)
            | Failure::Fsync(_)
            | Failure::OpenDirectorySubmit(_)
            | Failure::OpenDirectory(_)
            | Failure::DirectorySyncSubmit(_) => Status::OUT_OF_RESOURCES,
            Failure::NotAuthorized(_) => Status::NOT_AUTHORIZED,
            Failure::NoSuchCommitmentInstance { .. } => Status::NO_SUCH_OBJECT_INSTANCE,
            Failure::NoSuchAction { .. } => Status::NO_SUCH_ACTION,
            Failure::NoActionInformation => Status::MISSING_ATTRIBUTE,
            Failure::ActionInformationTooLong | Failure::TrackerBusy => Status::RESOURCE_LIMITATION,
            Failure::ActionTransferSyntax => Status::PROCESSING_FAILURE,
            Failure::CommitmentRequest(error) => crate::commit::status_of_commitment_error(error),
            Failure::Commitment(refusal) => refusal.status(),
        }
    }
}

/// Whether an errno says "no space" (ENOSPC, EDQUOT).
fn is_no_space(errno: i32) -> bool {
    matches!(
        std::io::Error::from_raw_os_error(errno).kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The longest Error Comment (0000,0902) sent: its VR (LO) allows 64
/// characters.
pub(crate) const ERROR_COMMENT_CHARS_MAX: usize = 64;

impl Failure {
    /// The reason as an Error Comment (0000,0902): the first 64 characters
    /// of the `Display` text, every character outside printable ASCII (and
    /// the backslash, LO's value separator) replaced by `?`, so it always
    /// encodes (a reason may quote a peer's value).
    pub(crate) fn error_comment(&self) -> String {
        self.to_string()
            .chars()
            .take(ERROR_COMMENT_CHARS_MAX)
            .map(|character| match character {
                ' '..='~' if character != '\\' => character,
                _ => '?',
            })
            .collect()
    }
}

/// The C-STORE status for an index failure: the disk-space statuses for a
/// full map or disk (A711: resources the operator must add), A700 otherwise.
pub fn status_of_index_error(error: &IndexError) -> Status {
    match error {
        IndexError::MapFull { .. } | IndexError::DiskFull { .. } => Status::OUT_OF_DISK_SPACE,
        _ => Status::OUT_OF_RESOURCES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_comments_always_encode() {
        let failure = Failure::SopClassNotOnContext {
            sop_class_uid: "1.2\n\u{1b}[31m\\é".into(),
            abstract_syntax: "x".repeat(100),
        };
        let comment = failure.error_comment();
        assert_eq!(comment.chars().count(), ERROR_COMMENT_CHARS_MAX);
        assert!(
            comment.starts_with("SOP class 1.2??[31m?? sent"),
            "{comment}"
        );
        let rsp = sluice_net::dimse::Command::CStoreRsp(sluice_net::dimse::CStoreRsp {
            message_id_being_responded_to: 1,
            affected_sop_class_uid: None,
            affected_sop_instance_uid: None,
            status: failure.status(),
            detail: sluice_net::dimse::StatusDetail {
                error_comment: Some(comment),
                ..Default::default()
            },
        });
        assert!(rsp.encode().is_ok());
    }

    #[test]
    fn statuses_and_reasons_of_store_failures() {
        let cases = [
            (
                Failure::SopClassNotOnContext {
                    sop_class_uid: "1.2".into(),
                    abstract_syntax: "1.3".into(),
                },
                0x0122,
                "SOP class 1.2 sent on the presentation context of 1.3",
            ),
            (
                Failure::InFlightLimit { max: 4 },
                0xA710,
                "4 instances in flight on this core",
            ),
            (
                Failure::BelowFreeSpaceFloor { floor: 10 },
                0xA711,
                "free space below the floor of 10 bytes",
            ),
            (
                Failure::Refusing,
                0xA700,
                "the store refuses after repeated durability failures",
            ),
            (
                Failure::IndexCommit(IndexError::MapFull { map_size_bytes: 1 }),
                0xA711,
                "index commit failed: index map is full",
            ),
            (
                Failure::TrackerBusy,
                0x0213,
                "the commitment tracker is busy",
            ),
            (
                Failure::Write(IoError {
                    op: sluice_io::OpKind::Write,
                    errno: 28,
                }),
                0xA711,
                "write failed",
            ),
            (
                Failure::Fsync(IoError {
                    op: sluice_io::OpKind::Sync,
                    errno: 122,
                }),
                0xA711,
                "fsync failed",
            ),
            (
                Failure::Fsync(IoError {
                    op: sluice_io::OpKind::Sync,
                    errno: 5,
                }),
                0xA700,
                "fsync failed",
            ),
            (
                Failure::Commitment(Refusal::OtherReferencesPending),
                0x0110,
                "Transaction UID already pending with other references",
            ),
        ];
        for (failure, status, reason) in cases {
            assert_eq!(failure.status(), Status(status), "{failure}");
            assert!(failure.to_string().starts_with(reason), "{failure}");
            // Out of space: never a durability failure.
            if status == 0xA711 {
                assert!(!failure.is_durability_failure(), "{failure}");
            }
        }
    }

    #[test]
    fn only_failures_of_the_disk_or_the_index_count_towards_refusing() {
        let io = |errno| IoError {
            op: sluice_io::OpKind::Sync,
            errno,
        };
        assert!(Failure::Fsync(io(5)).is_durability_failure());
        assert!(!Failure::Fsync(io(28)).is_durability_failure());
        assert!(Failure::IndexCommit(IndexError::WriterUnavailable).is_durability_failure());
        assert!(
            !Failure::IndexCommit(IndexError::MapFull { map_size_bytes: 1 })
                .is_durability_failure()
        );
        assert!(!Failure::InFlightLimit { max: 1 }.is_durability_failure());
        assert!(!Failure::BelowFreeSpaceFloor { floor: 1 }.is_durability_failure());
    }
}
