//! What the commitment tracker and the cores say to each other, and how the
//! tracker reaches the cores: the only types the two sides share, so the
//! tracker needs nothing of the Storage SCP (`crate::scp`) and the SCP
//! nothing of the tracker's internals.
//!
//! - cores -> tracker: a decoded N-ACTION ([`Request`]), "this instance is
//!   durably stored" ([`super::tracker::TrackerHandle::instance_stored`]),
//!   and what became of a report's delivery ([`DeliveryOutcome`]);
//! - tracker -> a core ([`ToCore`], through [`Cores::post`]): answer an
//!   N-ACTION, send a report on the requester's association, or open an
//!   association to deliver reports ([`ReportAssociation`]).

use std::net::SocketAddr;

use sluice_net::dimse::commitment::{CommitmentRequest, CommitmentResult};
use sluice_net::dimse::Status;

/// An N-ACTION request decoded by a core.
#[derive(Debug)]
pub(crate) struct Request {
    /// The core that owns the requester's association.
    pub(crate) core: usize,
    /// The association's serial on that core.
    pub(crate) serial: u64,
    /// The presentation context of the N-ACTION.
    pub(crate) context_id: u8,
    /// The N-ACTION-RQ's Message ID.
    pub(crate) message_id: u16,
    /// The requester's (calling) AE title.
    pub(crate) requester_ae_title: String,
    /// The action information.
    pub(crate) request: CommitmentRequest,
}

/// What became of one report's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryOutcome {
    /// The peer answered this status (0000 or 0107): delivered.
    Delivered(Status),
    /// The peer answered another status: a permanent failure.
    Refused(Status),
    /// The requester's association is no longer open (not an attempt).
    NotOpen,
    /// The association could not be opened, was rejected or broke.
    CommunicationFailure(String),
}

/// Reports for a core to deliver on a new association.
#[derive(Debug)]
pub(crate) struct ReportAssociation {
    /// Our AE title (the Calling AE Title).
    pub(crate) calling_ae_title: String,
    /// The AE the reports go to (the Called AE Title).
    pub(crate) called_ae_title: String,
    /// Its address.
    pub(crate) address: SocketAddr,
    /// The reports, in order.
    pub(crate) reports: Vec<CommitmentResult>,
}

/// Why the tracker refused a request it was handed (the N-ACTION-RSP's
/// status and Error Comment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The Transaction UID is pending with other references.
    #[error("Transaction UID already pending with other references")]
    OtherReferencesPending,
    /// `commitment.max_pending_requests` transactions are held.
    #[error("{max_pending} commitment requests pending")]
    TooManyPending {
        /// The limit.
        max_pending: usize,
    },
    /// The references could not be checked.
    #[error("index unavailable")]
    IndexUnavailable,
    /// The request could not be written to the index.
    #[error("cannot record the request")]
    CannotRecord,
}

impl Refusal {
    /// The N-ACTION-RSP status.
    pub(crate) fn status(&self) -> Status {
        match self {
            Refusal::TooManyPending { .. } => Status::RESOURCE_LIMITATION,
            Refusal::OtherReferencesPending | Refusal::IndexUnavailable | Refusal::CannotRecord => {
                Status::PROCESSING_FAILURE
            }
        }
    }
}

/// What the tracker asks a core to do.
#[derive(Debug)]
pub(crate) enum ToCore {
    /// Send the N-ACTION-RSP of a request: success once it is in the index.
    Answer {
        /// The requester's association.
        serial: u64,
        /// The N-ACTION's presentation context.
        context_id: u8,
        /// The N-ACTION-RQ's Message ID.
        message_id: u16,
        /// Accepted, or why not.
        result: Result<(), Refusal>,
    },
    /// Send this report on the requester's association if it is still open
    /// (else answer [`DeliveryOutcome::NotOpen`]).
    DeliverReport {
        /// The requester's association.
        serial: u64,
        /// The event information.
        report: CommitmentResult,
    },
    /// Open an association to the requester (or its mapped AE) and deliver
    /// these reports on it.
    OpenReportAssociation(Box<ReportAssociation>),
}

/// How the tracker reaches the cores: the running server's mailboxes.
pub(crate) trait Cores: Send + 'static {
    /// Posts to core `core`'s mailbox, waiting a little for room; false when
    /// the core cannot be reached (stopped, or its mailbox stayed full).
    fn post(&self, core: usize, message: ToCore) -> bool;
    /// How many cores there are (at least 1).
    fn count(&self) -> usize;
    /// Whether the server is stopping (the tracker then ends too).
    fn shutdown_requested(&self) -> bool;
}
