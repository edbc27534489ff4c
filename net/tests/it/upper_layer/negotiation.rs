//! Acceptor policy (requirements §1): every rejection with its
//! result/source/reason, per-context results, role selection, and the
//! requestor's reading of the AC.

use super::association::{policy, proposal};
use sluice_net::assoc::*;
use sluice_net::pdu::*;

const ECHO: &str = "1.2.840.10008.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
const COMMITMENT: &str = "1.2.840.10008.1.20.1";
const IMPLICIT: &str = "1.2.840.10008.1.2";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

fn rq() -> AssociateRq {
    proposal("SLUICE").to_associate_rq().unwrap()
}

fn rejection(outcome: NegotiationOutcome) -> (u8, u8, u8) {
    match outcome {
        NegotiationOutcome::Reject(rj) => rj.codes(),
        NegotiationOutcome::Accept { .. } => panic!("expected a rejection"),
    }
}

fn accepted(outcome: NegotiationOutcome) -> (AssociateAc, NegotiatedAssociation) {
    match outcome {
        NegotiationOutcome::Accept { ac, negotiated } => (*ac, *negotiated),
        NegotiationOutcome::Reject(rj) => panic!("rejected {rj:?}"),
    }
}

#[test]
fn unsupported_application_context_is_1_1_2() {
    let mut rq = rq();
    rq.application_context_name = "1.2.3.4.5".into();
    assert_eq!(
        rejection(negotiate(&policy(), &rq, AssociationLoad::UNLIMITED)),
        (1, 1, 2)
    );
}

#[test]
fn called_ae_not_served_is_1_1_7() {
    let mut rq = rq();
    rq.called_ae_title = "ORTHANC".into();
    assert_eq!(
        rejection(negotiate(&policy(), &rq, AssociationLoad::UNLIMITED)),
        (1, 1, 7)
    );
    // AE titles are case sensitive.
    rq.called_ae_title = "sluice".into();
    assert_eq!(
        rejection(negotiate(&policy(), &rq, AssociationLoad::UNLIMITED)),
        (1, 1, 7)
    );
}

#[test]
fn calling_ae_not_allowed_is_1_1_3_and_unchecked_by_default() {
    let rq = rq();
    let mut policy = policy();
    assert!(matches!(
        negotiate(&policy, &rq, AssociationLoad::UNLIMITED),
        NegotiationOutcome::Accept { .. }
    ));
    policy.calling_ae_titles = AeTitleFilter::Only(vec!["CT-SCANNER".into()]);
    assert_eq!(
        rejection(negotiate(&policy, &rq, AssociationLoad::UNLIMITED)),
        (1, 1, 3)
    );
    policy.calling_ae_titles = AeTitleFilter::Only(vec!["STORESCU".into()]);
    assert!(matches!(
        negotiate(&policy, &rq, AssociationLoad::UNLIMITED),
        NegotiationOutcome::Accept { .. }
    ));
}

#[test]
fn no_acceptable_presentation_context_is_1_1_1() {
    let mut rq = rq();
    for context in &mut rq.presentation_contexts {
        context.abstract_syntax = MR.into();
    }
    assert_eq!(
        rejection(negotiate(&policy(), &rq, AssociationLoad::UNLIMITED)),
        (1, 1, 1)
    );
}

#[test]
fn too_many_associations_is_2_3_2() {
    let load = AssociationLoad {
        current: 10,
        limit: 10,
    };
    assert_eq!(rejection(negotiate(&policy(), &rq(), load)), (2, 3, 2));
    // The limit is checked before anything else.
    let mut rq = rq();
    rq.called_ae_title = "ORTHANC".into();
    assert_eq!(rejection(negotiate(&policy(), &rq, load)), (2, 3, 2));
    assert!(matches!(
        negotiate(
            &policy(),
            &self::rq(),
            AssociationLoad {
                current: 9,
                limit: 10
            }
        ),
        NegotiationOutcome::Accept { .. }
    ));
}

#[test]
fn unparseable_request_reason_is_1_2_1() {
    assert_eq!(reject_unparseable().codes(), (1, 2, 1));
}

#[test]
fn by_default_the_requestors_order_picks_the_transfer_syntax() {
    let mut policy = policy();
    policy.transfer_syntax_choice = TransferSyntaxChoice::default();
    let mut rq = rq();
    rq.presentation_contexts = vec![
        PresentationContextProposed {
            id: 1,
            abstract_syntax: CT.into(),
            // JPEG is not ours: skipped; implicit is the requestor's next choice.
            transfer_syntaxes: vec![JPEG_BASELINE.into(), IMPLICIT.into(), EXPLICIT.into()],
        },
        PresentationContextProposed {
            id: 3,
            abstract_syntax: CT.into(),
            transfer_syntaxes: vec![EXPLICIT.into(), IMPLICIT.into()],
        },
    ];
    let (ac, _) = accepted(negotiate(&policy, &rq, AssociationLoad::UNLIMITED));
    let chosen: Vec<_> = ac
        .presentation_contexts
        .iter()
        .map(|c| (c.id, c.result.code(), c.transfer_syntax.as_str()))
        .collect();
    assert_eq!(chosen, [(1, 0, IMPLICIT), (3, 0, EXPLICIT)]);
}

#[test]
fn per_context_results_use_our_preference_and_reasons_3_and_4() {
    let mut rq = rq();
    rq.presentation_contexts = vec![
        // Our preference (explicit first) wins over the proposal order.
        PresentationContextProposed {
            id: 1,
            abstract_syntax: CT.into(),
            transfer_syntaxes: vec![IMPLICIT.into(), EXPLICIT.into()],
        },
        // Abstract syntax not supported: 3.
        PresentationContextProposed {
            id: 3,
            abstract_syntax: MR.into(),
            transfer_syntaxes: vec![IMPLICIT.into()],
        },
        // Transfer syntaxes not supported: 4.
        PresentationContextProposed {
            id: 5,
            abstract_syntax: CT.into(),
            transfer_syntaxes: vec![JPEG_BASELINE.into()],
        },
        // Even ID and duplicate ID: 2 (no reason).
        PresentationContextProposed {
            id: 6,
            abstract_syntax: ECHO.into(),
            transfer_syntaxes: vec![IMPLICIT.into()],
        },
        PresentationContextProposed {
            id: 1,
            abstract_syntax: ECHO.into(),
            transfer_syntaxes: vec![IMPLICIT.into()],
        },
        PresentationContextProposed {
            id: 7,
            abstract_syntax: ECHO.into(),
            transfer_syntaxes: vec![IMPLICIT.into()],
        },
    ];
    let policy = policy();
    // What an acceptor logs: the refused ones, with the same reasons.
    let refused: Vec<_> = refused_contexts(&policy, &rq)
        .iter()
        .map(|refused| (refused.context.id, refused.reason.code()))
        .collect();
    assert_eq!(refused, [(3, 3), (5, 4), (6, 2), (1, 2)]);
    let (ac, negotiated) = accepted(negotiate(&policy, &rq, AssociationLoad::UNLIMITED));
    let results: Vec<_> = ac
        .presentation_contexts
        .iter()
        .map(|c| (c.id, c.result.code(), c.transfer_syntax.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            (1, 0, EXPLICIT),
            (3, 3, IMPLICIT),
            (5, 4, JPEG_BASELINE),
            (6, 2, IMPLICIT),
            (1, 2, IMPLICIT),
            (7, 0, IMPLICIT)
        ]
    );
    assert_eq!(
        negotiated
            .presentation_contexts
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        [1, 7]
    );
    assert_eq!(
        negotiated.presentation_context(1).unwrap().transfer_syntax,
        EXPLICIT
    );
    assert!(negotiated.presentation_context(3).is_none());
    assert_eq!(negotiated.presentation_context_for(ECHO).unwrap().id, 7);
    // The AC echoes the AE titles and carries our user information.
    assert_eq!(
        (ac.called_ae_title.as_str(), ac.calling_ae_title.as_str()),
        ("SLUICE", "STORESCU")
    );
    assert_eq!(
        ac.user_information.maximum_length,
        Some(policy.pdu_length_max_receive)
    );
    assert_eq!(
        ac.user_information.implementation_class_uid.as_deref(),
        Some("1.2.826.0.1.3680043.10.1")
    );
    // And it encodes.
    assert!(Pdu::AssociateAc(Box::new(ac)).to_bytes().is_ok());
}

#[test]
fn any_abstract_syntax_option_accepts_unlisted_classes() {
    let mut policy = policy();
    policy.any_abstract_syntax_transfer_syntaxes = Some(vec![EXPLICIT.into()]);
    let mut rq = rq();
    rq.presentation_contexts = vec![PresentationContextProposed {
        id: 1,
        abstract_syntax: "1.2.840.113619.4.26".into(),
        transfer_syntaxes: vec![IMPLICIT.into(), EXPLICIT.into()],
    }];
    let (_, negotiated) = accepted(negotiate(&policy, &rq, AssociationLoad::UNLIMITED));
    assert_eq!(
        negotiated.presentation_contexts[0].transfer_syntax,
        EXPLICIT
    );
}

fn commitment_rq(scu_role: bool, scp_role: bool) -> AssociateRq {
    let mut rq = rq();
    rq.presentation_contexts = vec![PresentationContextProposed {
        id: 1,
        abstract_syntax: COMMITMENT.into(),
        transfer_syntaxes: vec![IMPLICIT.into()],
    }];
    rq.user_information.role_selections = vec![RoleSelection {
        sop_class_uid: COMMITMENT.into(),
        scu_role,
        scp_role,
    }];
    rq
}

#[test]
fn scp_role_is_granted_only_where_the_policy_allows_it() {
    let mut policy = policy();
    policy
        .abstract_syntaxes
        .push(AcceptedAbstractSyntax::new(COMMITMENT, [IMPLICIT]).with_requestor_scp_role());
    policy
        .abstract_syntaxes
        .push(AcceptedAbstractSyntax::new(MR, [IMPLICIT]));

    // Commitment, both roles proposed: both accepted, answered in the AC.
    let (ac, negotiated) = accepted(negotiate(
        &policy,
        &commitment_rq(true, true),
        AssociationLoad::UNLIMITED,
    ));
    assert_eq!(
        ac.user_information.role_selections,
        [RoleSelection {
            sop_class_uid: COMMITMENT.into(),
            scu_role: true,
            scp_role: true
        }]
    );
    let context = &negotiated.presentation_contexts[0];
    assert!(context.requestor_is_scu && context.requestor_is_scp);

    // A storage class with an SCP-role request: SCP refused, SCU kept.
    let mut rq = commitment_rq(true, true);
    rq.presentation_contexts[0].abstract_syntax = MR.into();
    rq.user_information.role_selections[0].sop_class_uid = MR.into();
    let (ac, negotiated) = accepted(negotiate(&policy, &rq, AssociationLoad::UNLIMITED));
    assert_eq!(
        ac.user_information.role_selections,
        [RoleSelection {
            sop_class_uid: MR.into(),
            scu_role: true,
            scp_role: false
        }]
    );
    assert!(
        negotiated.presentation_contexts[0].requestor_is_scu
            && !negotiated.presentation_contexts[0].requestor_is_scp
    );

    // Only the SCP role proposed where it is not allowed: the context is
    // useless, user rejection (1), and so no context: 1/1/1.
    rq.user_information.role_selections[0].scu_role = false;
    assert_eq!(
        rejection(negotiate(&policy, &rq, AssociationLoad::UNLIMITED)),
        (1, 1, 1)
    );

    // Without role selection support the sub-item is ignored: default roles, no reply.
    policy.role_selection = false;
    let (ac, negotiated) = accepted(negotiate(
        &policy,
        &commitment_rq(true, true),
        AssociationLoad::UNLIMITED,
    ));
    assert!(ac.user_information.role_selections.is_empty());
    assert!(
        negotiated.presentation_contexts[0].requestor_is_scu
            && !negotiated.presentation_contexts[0].requestor_is_scp
    );
}

#[test]
fn requestor_reads_roles_and_window_from_the_ac() {
    // Sluice as requestor delivering N-EVENT-REPORT on a new association:
    // it proposes the commitment class with the SCP role.
    let mut proposal = proposal("SCU-AE");
    proposal.presentation_contexts = vec![ProposedPresentationContext {
        abstract_syntax: COMMITMENT.into(),
        transfer_syntaxes: vec![IMPLICIT.into()],
        roles: Some((false, true)),
    }];
    proposal.asynchronous_operations_window = Some(AsynchronousOperationsWindow {
        operations_invoked_max: 8,
        operations_performed_max: 0,
    });
    let rq = proposal.to_associate_rq().unwrap();
    assert_eq!(
        rq.user_information.role_selections,
        [RoleSelection {
            sop_class_uid: COMMITMENT.into(),
            scu_role: false,
            scp_role: true
        }]
    );

    let mut peer = AcceptorPolicy::new(AeTitleFilter::Any, "1.2.3");
    peer.abstract_syntaxes
        .push(AcceptedAbstractSyntax::new(COMMITMENT, [IMPLICIT]).with_requestor_scp_role());
    peer.asynchronous_operations_window = Some(AsynchronousOperationsWindow {
        operations_invoked_max: 2,
        operations_performed_max: 4,
    });
    let (ac, acceptor_view) = accepted(negotiate(&peer, &rq, AssociationLoad::UNLIMITED));
    let requestor_view = interpret_associate_ac(&rq, &ac).unwrap();
    assert_eq!(
        requestor_view.presentation_contexts,
        acceptor_view.presentation_contexts
    );
    let context = &requestor_view.presentation_contexts[0];
    assert!(!context.requestor_is_scu && context.requestor_is_scp);
    let window = AsynchronousOperationsWindow {
        operations_invoked_max: 2,
        operations_performed_max: 4,
    };
    assert_eq!(requestor_view.asynchronous_operations_window, window);
    assert_eq!(acceptor_view.asynchronous_operations_window, window);
    assert_eq!(
        requestor_view.pdu_length_max_peer,
        peer.pdu_length_max_receive
    );
    assert_eq!(requestor_view.pdu_length_max_local, 32_768);

    // An acceptor that ignores role selection: default roles for the requestor.
    let mut ac_without_roles = ac.clone();
    ac_without_roles.user_information.role_selections.clear();
    let view = interpret_associate_ac(&rq, &ac_without_roles).unwrap();
    assert!(
        view.presentation_contexts[0].requestor_is_scu
            && !view.presentation_contexts[0].requestor_is_scp
    );

    // An AC accepting a transfer syntax we never proposed is refused.
    let mut bad = ac;
    bad.presentation_contexts[0].transfer_syntax = JPEG_BASELINE.into();
    assert_eq!(
        interpret_associate_ac(&rq, &bad),
        Err(NegotiationError::TransferSyntaxNotProposed {
            id: 1,
            transfer_syntax: JPEG_BASELINE.into()
        })
    );
}

#[test]
fn proposal_limits_are_checked() {
    let mut proposal = proposal("SLUICE");
    proposal.presentation_contexts = vec![proposal.presentation_contexts[0].clone(); 129];
    assert_eq!(
        proposal.to_associate_rq(),
        Err(NegotiationError::TooManyPresentationContexts { count: 129 })
    );
    proposal.presentation_contexts.truncate(128);
    let rq = proposal.to_associate_rq().unwrap();
    assert_eq!(rq.presentation_contexts.last().unwrap().id, 255);
    proposal.presentation_contexts.clear();
    assert_eq!(
        proposal.to_associate_rq(),
        Err(NegotiationError::NoPresentationContext)
    );
}
