//! The A-ASSOCIATE-RQ of each lane's associations: the store lane proposes
//! one context per distinct (SOP class, transfer syntax) of the workload,
//! plus Storage Commitment when asked; the retrieval lane proposes the
//! Q/R SOP class of its operation and model and, for C-GET, the storage
//! SOP classes it expects back with the SCP role for itself (PS3.7 D.3.3.4).

use sluice_net::assoc::{AssociationProposal, ProposedPresentationContext};
use sluice_net::query::Operation;
use sluice_net::uid::{self, ts};

use super::RunPlan;
use crate::stats::Lane;

/// Presentation contexts of one association (PS3.8: odd IDs 1-255).
const CONTEXTS_MAX: usize = 128;

/// Storage SOP classes a C-GET proposes when the key source names none
/// (a query that returned no SOP Classes in Study): the loadgen's own
/// synthetic profiles and the commonest image classes.
const DEFAULT_GET_CLASSES: [&str; 6] = [
    uid::CT_IMAGE_STORAGE,
    uid::MR_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.1",   // CR
    "1.2.840.10008.5.1.4.1.1.1.2", // Digital Mammography, for presentation
    uid::SECONDARY_CAPTURE_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
];

/// The A-ASSOCIATE-RQ of every association of `lane` in a run.
pub fn build_proposal(plan: &RunPlan, lane: Lane) -> Result<sluice_net::pdu::AssociateRq, String> {
    let contexts = match lane {
        Lane::Store => store_contexts(plan),
        Lane::Retrieve => retrieve_contexts(plan),
    };
    if contexts.is_empty() {
        return Err("the lane has nothing to propose".into());
    }
    if contexts.len() > CONTEXTS_MAX {
        return Err(format!(
            "the workload needs {} presentation contexts; an association carries at most {CONTEXTS_MAX}",
            contexts.len()
        ));
    }
    let proposal = AssociationProposal {
        calling_ae_title: plan.calling_ae_title.clone(),
        called_ae_title: plan.called_ae_title.clone(),
        presentation_contexts: contexts,
        pdu_length_max_receive: plan.pdu_length_max_receive,
        implementation_class_uid: uid::LOADGEN_IMPLEMENTATION_CLASS_UID.to_string(),
        implementation_version_name: Some(uid::LOADGEN_IMPLEMENTATION_VERSION_NAME.to_string()),
        asynchronous_operations_window: None,
        user_identity: None,
    };
    proposal
        .to_associate_rq()
        .map_err(|error| error.to_string())
}

fn store_contexts(plan: &RunPlan) -> Vec<ProposedPresentationContext> {
    let mut contexts: Vec<ProposedPresentationContext> = Vec::new();
    for prepared in &plan.workload {
        let exists = contexts.iter().any(|context| {
            context.abstract_syntax == prepared.sop_class_uid
                && context.transfer_syntaxes.first() == Some(&prepared.transfer_syntax_uid)
        });
        if !exists {
            contexts.push(ProposedPresentationContext {
                abstract_syntax: prepared.sop_class_uid.clone(),
                transfer_syntaxes: vec![prepared.transfer_syntax_uid.clone()],
                roles: None,
            });
        }
    }
    if plan.commitment {
        contexts.push(ProposedPresentationContext {
            abstract_syntax: uid::STORAGE_COMMITMENT_PUSH_MODEL.to_string(),
            transfer_syntaxes: vec![ts::IMPLICIT_VR_LITTLE_ENDIAN.to_string()],
            roles: None,
        });
    }
    contexts
}

fn retrieve_contexts(plan: &RunPlan) -> Vec<ProposedPresentationContext> {
    let Some(retrieve) = &plan.retrieve else {
        return Vec::new();
    };
    let spec = &retrieve.spec;
    let little_endian = || {
        vec![
            ts::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
            ts::IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
        ]
    };
    let mut contexts = vec![ProposedPresentationContext {
        abstract_syntax: spec.model.sop_class(spec.operation).to_string(),
        transfer_syntaxes: little_endian(),
        roles: None,
    }];
    if spec.operation == Operation::Get {
        let classes: Vec<&str> = if retrieve.pool.sop_classes.is_empty() {
            DEFAULT_GET_CLASSES.to_vec()
        } else {
            retrieve
                .pool
                .sop_classes
                .iter()
                .map(String::as_str)
                .collect()
        };
        // Little Endian, then the syntaxes the instances were stored in.
        let mut syntaxes = little_endian();
        for syntax in &retrieve.pool.transfer_syntaxes {
            if !syntaxes.contains(syntax) {
                syntaxes.push(syntax.clone());
            }
        }
        // We are the SCP of the sub-operations' C-STOREs: SCU role no, SCP role yes.
        contexts.extend(
            classes
                .into_iter()
                .map(|class| ProposedPresentationContext {
                    abstract_syntax: class.to_string(),
                    transfer_syntaxes: syntaxes.clone(),
                    roles: Some((false, true)),
                }),
        );
    }
    contexts
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_net::query::{InformationModel, Level};

    use super::*;
    use crate::driver::{LoadShape, RetrievePlan};
    use crate::keys::{InstanceRecord, PoolBuilder, PoolLimits};
    use crate::retrieve::RetrieveSpec;

    /// A store-only plan: CT, MR, CT again, with commitment.
    pub(in crate::driver) fn plan() -> RunPlan {
        let ct = Arc::new(crate::workload::synthetic("ct", ts::EXPLICIT_VR_LITTLE_ENDIAN).unwrap());
        let mr = Arc::new(crate::workload::synthetic("mr", ts::EXPLICIT_VR_LITTLE_ENDIAN).unwrap());
        RunPlan {
            address: "127.0.0.1:104".parse().unwrap(),
            called_ae_title: "SLUICE".into(),
            calling_ae_title: "LOADGEN".into(),
            shape: LoadShape::Closed,
            associations: 1,
            duration: None,
            count: Some(1),
            ramp_up: Duration::ZERO,
            instances_per_association: 0,
            study_size: 1,
            series_per_study: 1,
            studies_per_patient: 1,
            workload: vec![Arc::clone(&ct), mr, ct],
            weights: vec![1, 1, 1],
            pdu_length_max_receive: 16384,
            commitment: true,
            commit_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            commit_listen: None,
            history: None,
            run_id: 1,
            retrieve: None,
        }
    }

    fn text_of(rq: sluice_net::pdu::AssociateRq) -> String {
        let bytes = sluice_net::pdu::Pdu::AssociateRq(Box::new(rq))
            .to_bytes()
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn store_lane_has_one_context_per_class_and_syntax_plus_commitment() {
        let text = text_of(build_proposal(&plan(), Lane::Store).unwrap());
        // Three contexts: CT, MR, Storage Commitment (the duplicate CT entry shares one).
        assert_eq!(text.matches(uid::CT_IMAGE_STORAGE).count(), 1);
        assert_eq!(text.matches(uid::MR_IMAGE_STORAGE).count(), 1);
        assert_eq!(text.matches(uid::STORAGE_COMMITMENT_PUSH_MODEL).count(), 1);
    }

    #[test]
    fn retrieval_lane_proposes_its_model_and_for_get_the_pool_classes() {
        let mut builder = PoolBuilder::new(PoolLimits::default());
        builder.add_instance(InstanceRecord {
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            sop_instance_uid: "1.2.3.4".into(),
            sop_class_uid: uid::MR_IMAGE_STORAGE.into(),
            transfer_syntax_uid: ts::JPEG_2000_LOSSLESS.into(),
            ..InstanceRecord::default()
        });
        let mut plan = plan();
        plan.associations = 0;
        plan.retrieve = Some(RetrievePlan {
            spec: RetrieveSpec {
                operation: Operation::Get,
                model: InformationModel::StudyRoot,
                level: Level::Study,
                keys: Vec::new(),
                date_window_days: 0,
                move_destination: String::new(),
            },
            pool: Arc::new(builder.finish("test")),
            shape: LoadShape::Closed,
            associations: 1,
            operations_per_association: 0,
            move_listen: None,
        });
        let text = text_of(build_proposal(&plan, Lane::Retrieve).unwrap());
        assert_eq!(text.matches(uid::STUDY_ROOT_QR_GET).count(), 1);
        // MR's context and its SCP/SCU role selection sub-item.
        assert_eq!(text.matches(uid::MR_IMAGE_STORAGE).count(), 2);
        assert_eq!(text.matches(uid::CT_IMAGE_STORAGE).count(), 0);
        // Offered in the syntax it was stored in, beside Little Endian.
        assert_eq!(text.matches(ts::JPEG_2000_LOSSLESS).count(), 1);
        // A C-FIND proposes its SOP class alone.
        if let Some(retrieve) = plan.retrieve.as_mut() {
            retrieve.spec.operation = Operation::Find;
        }
        let text = text_of(build_proposal(&plan, Lane::Retrieve).unwrap());
        assert_eq!(text.matches(uid::STUDY_ROOT_QR_FIND).count(), 1);
        assert_eq!(text.matches(uid::MR_IMAGE_STORAGE).count(), 0);
    }
}
