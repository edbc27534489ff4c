//! Admission of associations: the A-ASSOCIATE-RQ negotiated with the policy
//! of the AE it calls (the main AE, or the separate commitment AE), under
//! the association limits counted across cores: `network.max_associations`
//! in total and `network.max_associations_per_calling_ae` per calling AE
//! title (incremented before negotiation and undone on refusal, so two cores
//! cannot both take the last slot). Both refuse with 2/3/2.

use std::sync::atomic::Ordering;

use sluice_net::assoc::{negotiate, AssociationLoad, NegotiationOutcome};
use sluice_net::pdu::{AssociateRj, AssociateRq, RejectReason, RejectResult};

use super::shared::ServerShared;

/// Negotiates `rq`, which arrived on listener `listener`. An accepted
/// association is counted until [`release`].
/// Returns the outcome and the SOP Class Extended Negotiation granted (per
/// Q/R SOP class UID), after narrowing the Q/R contexts to what the
/// calling AE may use (`query::narrow_association`).
pub(crate) fn negotiate_limited(
    shared: &ServerShared,
    rq: &AssociateRq,
    listener: usize,
) -> (NegotiationOutcome, Vec<(String, Vec<u8>)>) {
    let config = shared.store.config();
    let network = &config.network;
    // The separate commitment AE: on its own port, or on the main port
    // under its own called AE title.
    let policy = match &shared.commitment_policy {
        Some(commitment)
            if Some(listener) == shared.commitment_listener
                || (shared.commitment_listener.is_none()
                    && rq.called_ae_title.trim() == config.commitment_ae_title().as_str()) =>
        {
            commitment
        }
        _ => &shared.policy,
    };
    let current = shared.established.fetch_add(1, Ordering::SeqCst);
    let load = AssociationLoad {
        current,
        limit: network.max_associations,
    };
    let mut outcome = negotiate(policy, rq, load);
    let grants = super::query::narrow_association(config, rq, &mut outcome);
    if matches!(outcome, NegotiationOutcome::Accept { .. }) {
        let calling = rq.calling_ae_title.trim().to_owned();
        let over = match shared.per_calling_ae.lock() {
            Ok(mut per_ae) => {
                let count = per_ae.entry(calling).or_insert(0);
                if *count >= network.max_associations_per_calling_ae {
                    true
                } else {
                    *count += 1;
                    false
                }
            }
            // A panic elsewhere held the lock: refuse rather than count wrong.
            Err(_) => true,
        };
        if over {
            outcome = NegotiationOutcome::Reject(AssociateRj {
                result: RejectResult::Transient,
                reason: RejectReason::LocalLimitExceeded,
            });
        }
    }
    if !matches!(outcome, NegotiationOutcome::Accept { .. }) {
        shared.established.fetch_sub(1, Ordering::SeqCst);
    }
    (outcome, grants)
}

/// An accepted association of `calling_ae_title` ended: its slots are free.
pub(crate) fn release(shared: &ServerShared, calling_ae_title: &str) {
    shared.established.fetch_sub(1, Ordering::SeqCst);
    if let Ok(mut per_ae) = shared.per_calling_ae.lock() {
        if let Some(count) = per_ae.get_mut(calling_ae_title) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ae.remove(calling_ae_title);
            }
        }
    }
}
