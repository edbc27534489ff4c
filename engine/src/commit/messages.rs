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
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_net::dimse::commitment::CommitmentResult;
use sluice_net::dimse::Status;

use super::references::References;

/// What an N-ACTION request may cost in memory while it waits, besides its
/// packed references: the tracker's map entry of each reference not yet
/// stored (a hash and two indices, with the table's slack).
pub(crate) const WAITING_BYTES_PER_REFERENCE: usize = 32;

/// The bytes the commitment requests held in memory may take
/// (`commitment.memory_budget`): reserved by a core before it hands a
/// request to the tracker (a request over it is refused with 0213),
/// released by the tracker when it drops the request (refused, or its
/// report finished). Counts the requests queued for the tracker as well as
/// those it holds.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    used: AtomicUsize,
    budget: usize,
}

impl MemoryBudget {
    pub(crate) fn new(budget: usize) -> MemoryBudget {
        MemoryBudget {
            used: AtomicUsize::new(0),
            budget,
        }
    }

    /// Reserves `bytes`, or says why not.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Result<(), Refusal> {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            let wanted = used.saturating_add(bytes);
            if wanted > self.budget {
                return Err(Refusal::MemoryBudget {
                    budget_bytes: self.budget,
                    used_bytes: used,
                    request_bytes: bytes,
                });
            }
            match self
                .used
                .compare_exchange(used, wanted, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Reserves `bytes` whatever the budget (requests read back from the
    /// index at start were accepted once: they are kept).
    pub(crate) fn force_reserve(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Releases `bytes` reserved before.
    pub(crate) fn release(&self, bytes: usize) {
        let previous = self.used.fetch_sub(bytes, Ordering::SeqCst);
        debug_assert!(previous >= bytes, "released more than was reserved");
    }

    /// The bytes reserved now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// The bytes to reserve for a request of `references`.
pub(crate) fn request_bytes(references: &References) -> usize {
    references
        .heap_bytes()
        .saturating_add(references.len().saturating_mul(WAITING_BYTES_PER_REFERENCE))
}

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
    /// The Transaction UID.
    pub(crate) transaction_uid: String,
    /// The referenced instances, packed.
    pub(crate) references: References,
    /// What the core reserved for it in the [`MemoryBudget`].
    pub(crate) reserved_bytes: usize,
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
    /// The requests held would take more than `commitment.memory_budget`.
    #[error("commitment memory budget of {budget_bytes} bytes exceeded ({used_bytes} in use, {request_bytes} asked)")]
    MemoryBudget {
        /// The budget.
        budget_bytes: usize,
        /// What the held requests take.
        used_bytes: usize,
        /// What this one would take.
        request_bytes: usize,
    },
    /// The references cannot be kept (too many classes, an instance UID
    /// too long).
    #[error("{0}")]
    References(#[from] super::references::ReferencesError),
}

impl Refusal {
    /// The N-ACTION-RSP status.
    pub(crate) fn status(&self) -> Status {
        match self {
            Refusal::TooManyPending { .. } | Refusal::MemoryBudget { .. } => {
                Status::RESOURCE_LIMITATION
            }
            Refusal::OtherReferencesPending
            | Refusal::IndexUnavailable
            | Refusal::CannotRecord
            | Refusal::References(_) => Status::PROCESSING_FAILURE,
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
