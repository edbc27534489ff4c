//! Who may use Query/Retrieve, decided at association time, and what the
//! Q/R SOP classes' Extended Negotiation grants.
//!
//! The acceptor policy accepts the six Q/R SOP classes for everyone; this
//! module then narrows an accepted association for its Calling AE Title
//! (`query.find_allowed_from`, `move_allowed_from`, `get_allowed_from`):
//! a Q/R context the caller may not use is answered "user rejection" and
//! logged, like Orthanc's per-modality AllowFind/AllowMove/AllowGet. An SCU
//! learns at association time what it may do, instead of at its first
//! request. An association left with no context is rejected (1/1/1, as
//! when nothing proposed is acceptable).
//!
//! Extended Negotiation (PS3.4 C.5): for each Q/R class the SCU sent a SOP
//! Class Extended Negotiation sub-item for, the reply grants what Sluice
//! supports of what was asked (relational queries and retrieval, combined
//! date-time matching, empty value and multiple value matching; not fuzzy
//! names, timezone adjustment or enhanced multi-frame conversion), no longer
//! than the request's field. The grants are kept on the connection and read
//! back when an identifier is decoded.

use sluice_net::assoc::NegotiationOutcome;
use sluice_net::pdu::{
    AssociateRj, AssociateRq, PresentationContextResultReason, RejectReason, RejectResult,
    SopClassExtendedNegotiation,
};
use sluice_net::query::{FindNegotiation, InformationModel, Operation, RetrieveNegotiation};

use crate::config::{AeSelection, Config};

/// What Sluice supports of C-FIND's Extended Negotiation.
pub(crate) const FIND_SUPPORTED: FindNegotiation = FindNegotiation {
    relational_queries: true,
    combined_datetime_matching: true,
    fuzzy_person_name_matching: false,
    timezone_query_adjustment: false,
    enhanced_multiframe_conversion: false,
    empty_value_matching: true,
    multiple_value_matching: true,
};

/// What Sluice supports of C-MOVE's and C-GET's Extended Negotiation.
pub(crate) const RETRIEVE_SUPPORTED: RetrieveNegotiation = RetrieveNegotiation {
    relational_retrieval: true,
    enhanced_multiframe_conversion: false,
};

/// The rule of `config` for `operation`.
fn rule(config: &Config, operation: Operation) -> &AeSelection {
    match operation {
        Operation::Find => &config.query.find_allowed_from,
        Operation::Move => &config.query.move_allowed_from,
        Operation::Get => &config.query.get_allowed_from,
    }
}

/// Whether `calling_ae_title` may use `operation`.
pub(crate) fn allowed(config: &Config, calling_ae_title: &str, operation: Operation) -> bool {
    rule(config, operation).allows(calling_ae_title, &config.network.remote_aes)
}

/// The Extended Negotiation reply for one sub-item of the request, when it
/// is for a Q/R class.
fn grant(proposed: &SopClassExtendedNegotiation) -> Option<SopClassExtendedNegotiation> {
    let (_, operation) = InformationModel::from_sop_class(&proposed.sop_class_uid)?;
    let information = &proposed.service_class_application_information;
    let length = information.len();
    let granted = match operation {
        Operation::Find => FindNegotiation::parse(information)
            .granted(&FIND_SUPPORTED)
            .encode(length),
        Operation::Move | Operation::Get => RetrieveNegotiation::parse(information)
            .granted(&RETRIEVE_SUPPORTED)
            .encode(length),
    };
    Some(SopClassExtendedNegotiation {
        sop_class_uid: proposed.sop_class_uid.clone(),
        service_class_application_information: granted,
    })
}

/// Narrows an accepted association to the Q/R contexts its caller may use
/// and adds the Extended Negotiation replies; returns the grants to keep
/// on the connection (SOP class UID, granted bytes). A rejected outcome is
/// left alone.
pub(crate) fn apply(
    config: &Config,
    rq: &AssociateRq,
    outcome: &mut NegotiationOutcome,
) -> Vec<(String, Vec<u8>)> {
    let NegotiationOutcome::Accept { ac, negotiated } = outcome else {
        return Vec::new();
    };
    let calling = rq.calling_ae_title.trim();
    let mut refused: Vec<u8> = Vec::new();
    for context in &negotiated.presentation_contexts {
        if let Some((_, operation)) = InformationModel::from_sop_class(&context.abstract_syntax) {
            if !allowed(config, calling, operation) {
                refused.push(context.id);
            }
        }
    }
    if !refused.is_empty() {
        tracing::warn!(
            calling_ae = calling,
            contexts = refused.len(),
            "Query/Retrieve refused to this calling AE (query.*_allowed_from): its contexts answered user-rejection"
        );
        negotiated
            .presentation_contexts
            .retain(|context| !refused.contains(&context.id));
        for result in &mut ac.presentation_contexts {
            if refused.contains(&result.id) {
                result.result = PresentationContextResultReason::UserRejection;
            }
        }
    }
    if negotiated.presentation_contexts.is_empty() {
        *outcome = NegotiationOutcome::Reject(AssociateRj {
            result: RejectResult::Permanent,
            reason: RejectReason::ServiceUserNoReasonGiven,
        });
        return Vec::new();
    }
    let mut grants = Vec::new();
    for proposed in &rq.user_information.sop_class_extended_negotiations {
        let accepted = negotiated
            .presentation_contexts
            .iter()
            .any(|context| context.abstract_syntax == proposed.sop_class_uid);
        if !accepted {
            continue;
        }
        if let Some(reply) = grant(proposed) {
            grants.push((
                reply.sop_class_uid.clone(),
                reply.service_class_application_information.clone(),
            ));
            ac.user_information
                .sop_class_extended_negotiations
                .push(reply);
        }
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_what_is_supported_of_what_was_asked() {
        let proposed = SopClassExtendedNegotiation {
            sop_class_uid: sluice_net::uid::STUDY_ROOT_QR_FIND.to_owned(),
            service_class_application_information: vec![1, 1, 1, 1, 0, 1, 1],
        };
        let reply = grant(&proposed).expect("a Q/R class");
        assert_eq!(
            reply.service_class_application_information,
            vec![1, 1, 0, 0, 0, 1, 1]
        );
        let short = SopClassExtendedNegotiation {
            sop_class_uid: sluice_net::uid::PATIENT_ROOT_QR_MOVE.to_owned(),
            service_class_application_information: vec![1],
        };
        assert_eq!(
            grant(&short)
                .expect("a Q/R class")
                .service_class_application_information,
            vec![1]
        );
        let other = SopClassExtendedNegotiation {
            sop_class_uid: sluice_net::uid::CT_IMAGE_STORAGE.to_owned(),
            service_class_application_information: vec![1],
        };
        assert!(grant(&other).is_none());
    }
}
