//! Storage Commitment Push Model SCP: the commitment tracker
//! (requirements §3, docs/design/commitment.md).
//!
//! What this module owns: the tracker thread (`tracker`) that records every
//! N-ACTION request in the index before it is accepted, watches the
//! references that have not arrived (an in-memory map SOP Instance UID ->
//! waiting transactions, fed by the cores when an instance is durably stored
//! and indexed), decides the report (event type 1, or 2 with the Failed SOP
//! Sequence when the wait ends), and drives its delivery with retries; the
//! messages it exchanges with the cores (`messages`); the engine's
//! encoding of a commitment record's payload ([`payload`]); and the mapping
//! of a bad request to its N-ACTION-RSP status
//! ([`status_of_commitment_error`]).
//!
//! The cores own the DIMSE side (`crate::scp::commitment`: decoding
//! N-ACTION, sending N-ACTION-RSP and N-EVENT-REPORT on an open association
//! or on a new one they open); the tracker owns every decision and every
//! index write of commitment records.
//!
//! Architecture invariant: nothing here imports `crate::scp`. The tracker
//! reaches the cores only through `messages::Cores`, which the SCP
//! implements over its runtime's mailboxes.

pub(crate) mod messages;
pub mod payload;
mod presence;
pub mod references;
pub(crate) mod tracker;

use sluice_net::dimse::commitment::CommitmentError;
use sluice_net::dimse::Status;

pub use payload::{Payload, PayloadError};
pub use references::{References, ReferencesError};

/// The N-ACTION-RSP status of a request that cannot be accepted as sent:
/// 0120 for a missing Type 1 attribute, 0121 for a Type 1 attribute (or
/// sequence) without value, 0106 for a value that cannot be a UID, and 0110
/// (processing failure) for a data set that cannot be decoded.
pub fn status_of_commitment_error(error: &CommitmentError) -> Status {
    match error {
        CommitmentError::MissingAttribute { .. } | CommitmentError::ItemMissingAttribute { .. } => {
            Status::MISSING_ATTRIBUTE
        }
        CommitmentError::EmptyValue { .. }
        | CommitmentError::EmptySequence { .. }
        | CommitmentError::ItemEmptyValue { .. } => Status::MISSING_ATTRIBUTE_VALUE,
        CommitmentError::InvalidValue { .. } => Status::INVALID_ATTRIBUTE_VALUE,
        _ => Status::PROCESSING_FAILURE,
    }
}

/// Whether an N-EVENT-REPORT-RSP status means the report was taken: 0000,
/// or 0107 (attribute list error: a warning, the report was received).
/// Anything else is a permanent failure (requirements §3).
pub fn report_accepted(status: Status) -> bool {
    status == Status::SUCCESS || status == Status::ATTRIBUTE_LIST_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_net::dimse::commitment::tags;

    #[test]
    fn statuses_of_bad_requests() {
        assert_eq!(
            status_of_commitment_error(&CommitmentError::MissingAttribute {
                tag: tags::TRANSACTION_UID
            }),
            Status(0x0120)
        );
        assert_eq!(
            status_of_commitment_error(&CommitmentError::EmptySequence {
                tag: tags::REFERENCED_SOP_SEQUENCE
            }),
            Status(0x0121)
        );
        assert_eq!(
            status_of_commitment_error(&CommitmentError::ItemMissingAttribute {
                sequence: tags::REFERENCED_SOP_SEQUENCE,
                item: 0,
                tag: tags::REFERENCED_SOP_INSTANCE_UID
            }),
            Status(0x0120)
        );
        assert!(report_accepted(Status(0x0107)));
        assert!(!report_accepted(Status(0x0110)));
    }
}
