//! Admission of associations: the A-ASSOCIATE-RQ negotiated with the policy
//! of the AE it calls (the main AE, or the separate commitment AE), under
//! the association limits counted across cores: `network.max_associations`
//! in total and `network.max_associations_per_calling_ae` per calling AE
//! title (incremented before negotiation and undone on refusal, so two cores
//! cannot both take the last slot). Both refuse with 2/3/2.

use std::sync::atomic::Ordering;

use sluice_net::assoc::{
    negotiate, refused_contexts, AcceptorPolicy, AeTitleFilter, AssociationLoad, NegotiationOutcome,
};
use sluice_net::pdu::{
    AssociateRj, AssociateRq, PresentationContextResultReason, RejectReason, RejectResult,
};
use sluice_net::uid;

use super::shared::ServerShared;
use crate::escape::Escaped;

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
    let policy = policy_for(shared, rq, listener);
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

/// The policy `rq` is negotiated under: the separate commitment AE's (on
/// its own port, or on the main port under its own called AE title), or
/// the main AE's.
fn policy_for<'s>(
    shared: &'s ServerShared,
    rq: &AssociateRq,
    listener: usize,
) -> &'s AcceptorPolicy {
    let config = shared.store.config();
    match &shared.commitment_policy {
        Some(commitment)
            if Some(listener) == shared.commitment_listener
                || (shared.commitment_listener.is_none()
                    && rq.called_ae_title.trim() == config.commitment_ae_title().as_str()) =>
        {
            commitment
        }
        _ => &shared.policy,
    }
}

/// Why `rq`, which arrived on `listener`, got `rj`, in words for the log:
/// the AE title not served and the ones that are, the limits reached, or
/// each presentation context refused and why.
pub(crate) fn rejection_reason(
    shared: &ServerShared,
    rq: &AssociateRq,
    listener: usize,
    rj: &AssociateRj,
    draining: bool,
) -> String {
    let network = &shared.store.config().network;
    let policy = policy_for(shared, rq, listener);
    let titles = |filter: &AeTitleFilter| match filter {
        AeTitleFilter::Any => "any".to_owned(),
        AeTitleFilter::Only(titles) => titles.join(", "),
    };
    match rj.reason {
        RejectReason::TemporaryCongestion if draining => {
            "the server is shutting down (transient: retry later)".to_owned()
        }
        RejectReason::LocalLimitExceeded => format!(
            "association limits reached (network.max_associations {}, \
             network.max_associations_per_calling_ae {}; transient)",
            network.max_associations, network.max_associations_per_calling_ae
        ),
        RejectReason::ApplicationContextNameNotSupported => format!(
            "application context {} is not DICOM's",
            Escaped(&rq.application_context_name)
        ),
        RejectReason::CalledAeTitleNotRecognized => format!(
            "called AE title {} is not served here (served: {})",
            Escaped(rq.called_ae_title.trim()),
            titles(&policy.called_ae_titles)
        ),
        RejectReason::CallingAeTitleNotRecognized => format!(
            "calling AE title {} is not allowed (allowed: {})",
            Escaped(rq.calling_ae_title.trim()),
            Escaped(&titles(&policy.calling_ae_titles))
        ),
        RejectReason::ServiceUserNoReasonGiven => match refused_contexts_text(policy, rq) {
            Some(refused) => format!("no presentation context acceptable: {refused}"),
            None => "no presentation context proposed".to_owned(),
        },
        _ => "the request cannot be served".to_owned(),
    }
}

/// The presentation contexts of `rq` that the association, accepted, goes
/// on without, in words for the log (`None`: every one was accepted).
pub(crate) fn refused_contexts_accepted(
    shared: &ServerShared,
    rq: &AssociateRq,
    listener: usize,
) -> Option<String> {
    refused_contexts_text(policy_for(shared, rq, listener), rq)
}

/// Each refused context: its id, abstract syntax (with the class's name,
/// or the class it likely misprints), transfer syntaxes and why.
fn refused_contexts_text(policy: &AcceptorPolicy, rq: &AssociateRq) -> Option<String> {
    let refused = refused_contexts(policy, rq);
    if refused.is_empty() {
        return None;
    }
    let described: Vec<String> = refused
        .iter()
        .map(|refused| {
            let context = refused.context;
            let abstract_syntax = uid::trim_uid_padding(&context.abstract_syntax);
            let name = match uid::storage_sop_class(abstract_syntax) {
                Some(class) => class.name.to_owned(),
                None => match abstract_syntax {
                    uid::VERIFICATION => "Verification".to_owned(),
                    uid::STORAGE_COMMITMENT_PUSH_MODEL => {
                        "Storage Commitment Push Model".to_owned()
                    }
                    _ => match uid::storage_sop_class_misprinted_as(abstract_syntax) {
                        Some(meant) => format!(
                            "not a SOP class; did you mean {} ({})?",
                            meant.uid, meant.name
                        ),
                        None => "not a SOP class Sluice knows".to_owned(),
                    },
                },
            };
            let why = match refused.reason {
                PresentationContextResultReason::AbstractSyntaxNotSupported => {
                    "abstract syntax not accepted"
                }
                PresentationContextResultReason::TransferSyntaxesNotSupported => {
                    "none of its transfer syntaxes accepted"
                }
                PresentationContextResultReason::UserRejection => "no role left for the requestor",
                PresentationContextResultReason::NoReason
                | PresentationContextResultReason::Acceptance => "id even or proposed twice",
            };
            format!(
                "context {} {} ({name}) with [{}]: {why}",
                context.id,
                Escaped(abstract_syntax),
                Escaped(&context.transfer_syntaxes.join(", "))
            )
        })
        .collect();
    Some(described.join("; "))
}
