//! Association negotiation: the acceptor's policy (requirements §1) turning
//! an A-ASSOCIATE-RQ into an A-ASSOCIATE-AC or -RJ, and the requestor's
//! proposal and its reading of the AC. Both sides end with the same
//! [`NegotiatedAssociation`].
//!
//! UIDs are plain strings so the caller builds the policy from net's uid
//! catalogue (or its configuration) without this module depending on it.

use crate::pdu::{
    AssociateAc, AssociateRj, AssociateRq, AsynchronousOperationsWindow,
    PresentationContextProposed, PresentationContextResult, PresentationContextResultReason,
    RejectReason, RejectResult, RoleSelection, UserIdentityRequest, UserInformation,
    DICOM_APPLICATION_CONTEXT_NAME, PROTOCOL_VERSION,
};

/// Which AE titles a filter lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AeTitleFilter {
    /// Every AE title.
    #[default]
    Any,
    /// Only these (compared exactly, after the trimming decode does; AE titles are case sensitive).
    Only(Vec<String>),
}

impl AeTitleFilter {
    /// True if `title` passes.
    pub fn allows(&self, title: &str) -> bool {
        match self {
            AeTitleFilter::Any => true,
            AeTitleFilter::Only(titles) => titles.iter().any(|t| t == title),
        }
    }
}

/// An abstract syntax the acceptor accepts, with its transfer syntaxes in
/// our order of preference and the roles it lets the requestor take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedAbstractSyntax {
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// Transfer syntax UIDs, preferred first.
    pub transfer_syntaxes: Vec<String>,
    /// The requestor may act as SCU (we are SCP): the default role.
    pub requestor_may_be_scu: bool,
    /// The requestor may act as SCP (we are SCU) when it asks for it with
    /// SCP/SCU role selection, e.g. Storage Commitment Push Model on an
    /// association we accept from an SCU that wants to receive N-EVENT-REPORT.
    pub requestor_may_be_scp: bool,
}

impl AcceptedAbstractSyntax {
    /// Accepts `abstract_syntax` with `transfer_syntaxes` (preferred first),
    /// the requestor as SCU only.
    pub fn new(
        abstract_syntax: impl Into<String>,
        transfer_syntaxes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        AcceptedAbstractSyntax {
            abstract_syntax: abstract_syntax.into(),
            transfer_syntaxes: transfer_syntaxes.into_iter().map(Into::into).collect(),
            requestor_may_be_scu: true,
            requestor_may_be_scp: false,
        }
    }

    /// Also lets the requestor take the SCP role through role selection.
    pub fn with_requestor_scp_role(mut self) -> Self {
        self.requestor_may_be_scp = true;
        self
    }
}

/// The acceptor's negotiation policy (requirements §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptorPolicy {
    /// Called AE titles we serve; another gets A-ASSOCIATE-RJ 1/1/7.
    pub called_ae_titles: AeTitleFilter,
    /// Calling AE titles allowed (not checked by default); another gets 1/1/3.
    pub calling_ae_titles: AeTitleFilter,
    /// Abstract syntaxes accepted, each with its transfer syntaxes.
    pub abstract_syntaxes: Vec<AcceptedAbstractSyntax>,
    /// When set, any abstract syntax not listed above is accepted with these
    /// transfer syntaxes (the "accept any SOP class" option), requestor as SCU.
    pub any_abstract_syntax_transfer_syntaxes: Option<Vec<String>>,
    /// Answer SCP/SCU role selection sub-items. When false they are ignored
    /// and the default roles apply (requestor SCU, acceptor SCP).
    pub role_selection: bool,
    /// Our Maximum Length (largest P-DATA-TF PDU-length we receive); never 0.
    pub pdu_length_max_receive: u32,
    /// Our Implementation Class UID.
    pub implementation_class_uid: String,
    /// Our Implementation Version Name (1-16 characters).
    pub implementation_version_name: Option<String>,
    /// The asynchronous operations window we support, in the AC's sense
    /// (PS3.7 D.3.3.3): `operations_invoked_max` is how many outstanding
    /// operations we let the requestor invoke (we perform them),
    /// `operations_performed_max` how many we let it perform (we invoke
    /// them; a C-GET's C-STOREs). Each is answered as the smaller of this
    /// and the requestor's proposal (0 = unlimited), and only when the
    /// requestor proposed a window. `None` answers no window sub-item, i.e.
    /// synchronous operation (1/1).
    pub asynchronous_operations_window: Option<AsynchronousOperationsWindow>,
    /// Whose order picks the transfer syntax of a context when the requestor
    /// proposes several we accept.
    pub transfer_syntax_choice: TransferSyntaxChoice,
}

/// Whose order of preference decides a presentation context's transfer
/// syntax among those both sides support.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransferSyntaxChoice {
    /// The requestor's: the first proposed transfer syntax we accept. The
    /// default, because a store that keeps data sets as received should let
    /// the sender send what it holds: a sender proposing [RLE, Explicit VR
    /// LE] for an RLE file would otherwise have to decompress (DCMTK
    /// `storescu` cannot, and fails the C-STORE).
    #[default]
    Requestor,
    /// Ours: the first of the policy's transfer syntaxes that was proposed.
    Acceptor,
}

impl AcceptorPolicy {
    /// A policy serving `called_ae_titles`, accepting nothing yet, with role
    /// selection answered and the default maximum length.
    pub fn new(
        called_ae_titles: AeTitleFilter,
        implementation_class_uid: impl Into<String>,
    ) -> Self {
        AcceptorPolicy {
            called_ae_titles,
            calling_ae_titles: AeTitleFilter::Any,
            abstract_syntaxes: Vec::new(),
            any_abstract_syntax_transfer_syntaxes: None,
            role_selection: true,
            pdu_length_max_receive: crate::pdu::PDATA_LENGTH_MAX_DEFAULT,
            implementation_class_uid: implementation_class_uid.into(),
            implementation_version_name: None,
            asynchronous_operations_window: None,
            transfer_syntax_choice: TransferSyntaxChoice::default(),
        }
    }

    fn find(&self, abstract_syntax: &str) -> Option<AcceptedView<'_>> {
        if let Some(accepted) = self
            .abstract_syntaxes
            .iter()
            .find(|a| a.abstract_syntax == abstract_syntax)
        {
            return Some(AcceptedView {
                transfer_syntaxes: &accepted.transfer_syntaxes,
                requestor_may_be_scu: accepted.requestor_may_be_scu,
                requestor_may_be_scp: accepted.requestor_may_be_scp,
            });
        }
        self.any_abstract_syntax_transfer_syntaxes
            .as_ref()
            .map(|transfer_syntaxes| AcceptedView {
                transfer_syntaxes,
                requestor_may_be_scu: true,
                requestor_may_be_scp: false,
            })
    }
}

struct AcceptedView<'a> {
    transfer_syntaxes: &'a [String],
    requestor_may_be_scu: bool,
    requestor_may_be_scp: bool,
}

/// The association count input of [`negotiate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssociationLoad {
    /// Associations established now, not counting the one being negotiated.
    pub current: u32,
    /// Most associations allowed at once.
    pub limit: u32,
}

impl AssociationLoad {
    /// No limit.
    pub const UNLIMITED: AssociationLoad = AssociationLoad {
        current: 0,
        limit: u32::MAX,
    };
}

/// One accepted presentation context of an established association.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedPresentationContext {
    /// Presentation-context-ID.
    pub id: u8,
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// The accepted transfer syntax UID.
    pub transfer_syntax: String,
    /// The requestor acts as SCU (the acceptor as SCP) on this context.
    pub requestor_is_scu: bool,
    /// The requestor acts as SCP (the acceptor as SCU) on this context.
    pub requestor_is_scp: bool,
}

/// What both sides agreed, from either side's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedAssociation {
    /// Calling (requestor) AE title.
    pub calling_ae_title: String,
    /// Called (acceptor) AE title.
    pub called_ae_title: String,
    /// Accepted presentation contexts, by ascending ID.
    pub presentation_contexts: Vec<NegotiatedPresentationContext>,
    /// Largest P-DATA-TF PDU-length the peer receives (what we may send); 0 = no limit.
    pub pdu_length_max_peer: u32,
    /// Largest P-DATA-TF PDU-length we receive (what we announced): the
    /// stream decoder's limit.
    pub pdu_length_max_local: u32,
    /// The peer's Implementation Class UID.
    pub peer_implementation_class_uid: Option<String>,
    /// The peer's Implementation Version Name.
    pub peer_implementation_version_name: Option<String>,
    /// The negotiated asynchronous operations window (1/1 unless both sides
    /// agreed otherwise), as the AC carries it: the requestor may have
    /// `operations_invoked_max` of its requests outstanding, the acceptor
    /// `operations_performed_max` of its own (0 = unlimited).
    pub asynchronous_operations_window: AsynchronousOperationsWindow,
    /// The requestor's user identity sub-item, if any (not verified by net).
    pub user_identity: Option<UserIdentityRequest>,
}

impl NegotiatedAssociation {
    /// The accepted context with this ID.
    pub fn presentation_context(&self, id: u8) -> Option<&NegotiatedPresentationContext> {
        self.presentation_contexts
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .and_then(|index| self.presentation_contexts.get(index))
    }

    /// The first accepted context for this abstract syntax.
    pub fn presentation_context_for(
        &self,
        abstract_syntax: &str,
    ) -> Option<&NegotiatedPresentationContext> {
        self.presentation_contexts
            .iter()
            .find(|c| c.abstract_syntax == abstract_syntax)
    }
}

/// The acceptor's answer to an A-ASSOCIATE-RQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiationOutcome {
    /// Accept: send this AC; the association is as described.
    Accept {
        /// The A-ASSOCIATE-AC to send.
        ac: Box<AssociateAc>,
        /// What was agreed.
        negotiated: Box<NegotiatedAssociation>,
    },
    /// Reject with this A-ASSOCIATE-RJ.
    Reject(AssociateRj),
}

/// The A-ASSOCIATE-RJ for a request that cannot be parsed: 1/2/1
/// (permanent, service-provider ACSE, no reason given).
pub fn reject_unparseable() -> AssociateRj {
    AssociateRj {
        result: RejectResult::Permanent,
        reason: RejectReason::ServiceProviderAcseNoReasonGiven,
    }
}

/// Negotiates an A-ASSOCIATE-RQ under `policy` with `load` associations open.
///
/// Checks, in order: association limit (2/3/2), application context
/// (1/1/2), called AE title (1/1/7), calling AE title (1/1/3), then each
/// presentation context; no acceptable context rejects with 1/1/1. The
/// protocol version (1/2/2) is the state machine's check.
pub fn negotiate(
    policy: &AcceptorPolicy,
    rq: &AssociateRq,
    load: AssociationLoad,
) -> NegotiationOutcome {
    let reject = |result, reason| NegotiationOutcome::Reject(AssociateRj { result, reason });
    if load.current >= load.limit {
        return reject(RejectResult::Transient, RejectReason::LocalLimitExceeded);
    }
    if rq.application_context_name != DICOM_APPLICATION_CONTEXT_NAME {
        return reject(
            RejectResult::Permanent,
            RejectReason::ApplicationContextNameNotSupported,
        );
    }
    if !policy.called_ae_titles.allows(&rq.called_ae_title) {
        return reject(
            RejectResult::Permanent,
            RejectReason::CalledAeTitleNotRecognized,
        );
    }
    if !policy.calling_ae_titles.allows(&rq.calling_ae_title) {
        return reject(
            RejectResult::Permanent,
            RejectReason::CallingAeTitleNotRecognized,
        );
    }

    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut accepted = Vec::new();
    let mut role_replies: Vec<RoleSelection> = Vec::new();
    for (context, (result, transfer_syntax, roles)) in negotiate_contexts(policy, rq) {
        if result == PresentationContextResultReason::Acceptance {
            if let Some(reply) = roles.reply {
                if !role_replies
                    .iter()
                    .any(|r| r.sop_class_uid == reply.sop_class_uid)
                {
                    role_replies.push(reply);
                }
            }
            accepted.push(NegotiatedPresentationContext {
                id: context.id,
                abstract_syntax: context.abstract_syntax.clone(),
                transfer_syntax: transfer_syntax.clone(),
                requestor_is_scu: roles.requestor_is_scu,
                requestor_is_scp: roles.requestor_is_scp,
            });
        }
        results.push(PresentationContextResult {
            id: context.id,
            result,
            transfer_syntax,
        });
    }
    if accepted.is_empty() {
        // PS3.8 has no reject reason for "no acceptable presentation
        // context"; DCMTK and the seed reject the association, and 1/1/1
        // (permanent, service-user, no reason given) is what they send.
        return reject(
            RejectResult::Permanent,
            RejectReason::ServiceUserNoReasonGiven,
        );
    }
    accepted.sort_by_key(|c| c.id);

    let asynchronous_operations_window = match (
        rq.user_information.asynchronous_operations_window,
        policy.asynchronous_operations_window,
    ) {
        (Some(proposed), Some(supported)) => Some(AsynchronousOperationsWindow {
            operations_invoked_max: window_min(
                proposed.operations_invoked_max,
                supported.operations_invoked_max,
            ),
            operations_performed_max: window_min(
                proposed.operations_performed_max,
                supported.operations_performed_max,
            ),
        }),
        _ => None,
    };
    let ac = AssociateAc {
        protocol_version: PROTOCOL_VERSION,
        called_ae_title: rq.called_ae_title.clone(),
        calling_ae_title: rq.calling_ae_title.clone(),
        application_context_name: DICOM_APPLICATION_CONTEXT_NAME.to_owned(),
        presentation_contexts: results,
        user_information: UserInformation {
            maximum_length: Some(policy.pdu_length_max_receive),
            implementation_class_uid: Some(policy.implementation_class_uid.clone()),
            asynchronous_operations_window,
            role_selections: role_replies,
            implementation_version_name: policy.implementation_version_name.clone(),
            ..UserInformation::default()
        },
    };
    let negotiated = NegotiatedAssociation {
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        presentation_contexts: accepted,
        pdu_length_max_peer: rq.user_information.maximum_length.unwrap_or(0),
        pdu_length_max_local: policy.pdu_length_max_receive,
        peer_implementation_class_uid: rq.user_information.implementation_class_uid.clone(),
        peer_implementation_version_name: rq.user_information.implementation_version_name.clone(),
        asynchronous_operations_window: asynchronous_operations_window.unwrap_or_default(),
        user_identity: rq.user_information.user_identity_request.clone(),
    };
    NegotiationOutcome::Accept {
        ac: Box::new(ac),
        negotiated: Box::new(negotiated),
    }
}

/// Each proposed presentation context with what [`negotiate`] answers it.
fn negotiate_contexts<'r>(
    policy: &'r AcceptorPolicy,
    rq: &'r AssociateRq,
) -> impl Iterator<
    Item = (
        &'r PresentationContextProposed,
        (PresentationContextResultReason, String, ContextRoles),
    ),
> + 'r {
    let mut seen_ids = [false; 256];
    rq.presentation_contexts.iter().map(move |context| {
        let duplicate = match seen_ids.get_mut(usize::from(context.id)) {
            Some(seen) => std::mem::replace(seen, true),
            None => true,
        };
        let answer = negotiate_context(
            policy,
            context,
            duplicate,
            &rq.user_information.role_selections,
        );
        (context, answer)
    })
}

/// A presentation context [`negotiate`] refuses, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedContext<'r> {
    /// The context as proposed.
    pub context: &'r PresentationContextProposed,
    /// The result [`negotiate`] gives it (never acceptance).
    pub reason: PresentationContextResultReason,
}

/// The presentation contexts of `rq` that `policy` refuses, in the order
/// proposed: what an acceptor logs to say why an association was rejected
/// (no acceptable context) or accepted without some of them. The same
/// decision as [`negotiate`]'s, context by context.
pub fn refused_contexts<'r>(
    policy: &'r AcceptorPolicy,
    rq: &'r AssociateRq,
) -> Vec<RefusedContext<'r>> {
    negotiate_contexts(policy, rq)
        .filter(|(_, (result, _, _))| *result != PresentationContextResultReason::Acceptance)
        .map(|(context, (reason, _, _))| RefusedContext { context, reason })
        .collect()
}

/// Minimum of two window sizes where 0 means unlimited.
fn window_min(a: u16, b: u16) -> u16 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

struct ContextRoles {
    requestor_is_scu: bool,
    requestor_is_scp: bool,
    reply: Option<RoleSelection>,
}

fn negotiate_context(
    policy: &AcceptorPolicy,
    context: &PresentationContextProposed,
    duplicate_id: bool,
    proposed_roles: &[RoleSelection],
) -> (PresentationContextResultReason, String, ContextRoles) {
    use PresentationContextResultReason as R;
    // For a rejected context the transfer syntax "shall not be tested";
    // echoing the first proposed one keeps strict decoders (dicom-ul) happy.
    let first_proposed = context
        .transfer_syntaxes
        .first()
        .cloned()
        .unwrap_or_default();
    let default_roles = ContextRoles {
        requestor_is_scu: true,
        requestor_is_scp: false,
        reply: None,
    };
    // PS3.8 §9.3.2.2: IDs are odd and unique; a context breaking that is
    // refused with provider rejection "no reason" and the rest still negotiated.
    if duplicate_id || context.id % 2 == 0 {
        return (R::NoReason, first_proposed, default_roles);
    }
    let Some(accepted) = policy.find(&context.abstract_syntax) else {
        return (R::AbstractSyntaxNotSupported, first_proposed, default_roles);
    };
    let chosen = match policy.transfer_syntax_choice {
        TransferSyntaxChoice::Requestor => context
            .transfer_syntaxes
            .iter()
            .find(|theirs| accepted.transfer_syntaxes.contains(theirs)),
        TransferSyntaxChoice::Acceptor => accepted
            .transfer_syntaxes
            .iter()
            .find(|ours| context.transfer_syntaxes.contains(ours)),
    };
    let Some(transfer_syntax) = chosen else {
        return (
            R::TransferSyntaxesNotSupported,
            first_proposed,
            default_roles,
        );
    };
    let proposal = proposed_roles
        .iter()
        .find(|r| r.sop_class_uid == context.abstract_syntax)
        .filter(|_| policy.role_selection);
    let roles = match proposal {
        // PS3.7 D.3.3.4: the acceptor may only accept roles that were proposed.
        Some(proposal) => {
            let scu = proposal.scu_role && accepted.requestor_may_be_scu;
            let scp = proposal.scp_role && accepted.requestor_may_be_scp;
            ContextRoles {
                requestor_is_scu: scu,
                requestor_is_scp: scp,
                reply: Some(RoleSelection {
                    sop_class_uid: context.abstract_syntax.clone(),
                    scu_role: scu,
                    scp_role: scp,
                }),
            }
        }
        None => ContextRoles {
            requestor_is_scu: accepted.requestor_may_be_scu,
            requestor_is_scp: false,
            reply: None,
        },
    };
    if !roles.requestor_is_scu && !roles.requestor_is_scp {
        // Neither side could invoke anything on this context: a user
        // rejection, as pynetdicom answers it.
        return (R::UserRejection, first_proposed, default_roles);
    }
    (R::Acceptance, transfer_syntax.clone(), roles)
}

/// One presentation context a requestor proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedPresentationContext {
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// Transfer syntax UIDs, preferred first.
    pub transfer_syntaxes: Vec<String>,
    /// SCP/SCU role selection to propose for this abstract syntax: (we as
    /// SCU, we as SCP). `None` proposes nothing: default roles (we are SCU).
    pub roles: Option<(bool, bool)>,
}

/// What a requestor proposes; [`AssociationProposal::to_associate_rq`] turns
/// it into an A-ASSOCIATE-RQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociationProposal {
    /// Our AE title.
    pub calling_ae_title: String,
    /// The peer's AE title.
    pub called_ae_title: String,
    /// Contexts to propose; they get IDs 1, 3, 5, ... in this order (at most 128).
    pub presentation_contexts: Vec<ProposedPresentationContext>,
    /// Our Maximum Length (largest P-DATA-TF PDU-length we receive).
    pub pdu_length_max_receive: u32,
    /// Our Implementation Class UID.
    pub implementation_class_uid: String,
    /// Our Implementation Version Name.
    pub implementation_version_name: Option<String>,
    /// Asynchronous operations window to propose; `None` for synchronous.
    pub asynchronous_operations_window: Option<AsynchronousOperationsWindow>,
    /// User identity to send.
    pub user_identity: Option<UserIdentityRequest>,
}

/// Why a proposal or an A-ASSOCIATE-AC cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// More than 128 presentation contexts (IDs are odd numbers below 256).
    #[error("{count} presentation contexts proposed, at most 128")]
    TooManyPresentationContexts {
        /// Contexts in the proposal.
        count: usize,
    },
    /// No presentation context proposed.
    #[error("no presentation context proposed")]
    NoPresentationContext,
    /// One abstract syntax proposed with two different role selections.
    #[error("conflicting role selections proposed for {abstract_syntax}")]
    ConflictingRoleSelection {
        /// The abstract syntax.
        abstract_syntax: String,
    },
    /// The AC answers a presentation context ID we did not propose.
    #[error("A-ASSOCIATE-AC answers presentation context {id}, which was not proposed")]
    UnknownPresentationContextId {
        /// The ID.
        id: u8,
    },
    /// The AC accepts a context with a transfer syntax we did not propose for it.
    #[error("A-ASSOCIATE-AC accepts context {id} with transfer syntax {transfer_syntax}, which was not proposed")]
    TransferSyntaxNotProposed {
        /// The ID.
        id: u8,
        /// The transfer syntax.
        transfer_syntax: String,
    },
    /// The AC has an application context name other than DICOM's.
    #[error("A-ASSOCIATE-AC with application context {name}")]
    ApplicationContextName {
        /// The name received.
        name: String,
    },
}

impl AssociationProposal {
    /// The A-ASSOCIATE-RQ for this proposal.
    pub fn to_associate_rq(&self) -> Result<AssociateRq, NegotiationError> {
        let count = self.presentation_contexts.len();
        if count == 0 {
            return Err(NegotiationError::NoPresentationContext);
        }
        if count > 128 {
            return Err(NegotiationError::TooManyPresentationContexts { count });
        }
        let mut role_selections: Vec<RoleSelection> = Vec::new();
        let mut presentation_contexts = Vec::with_capacity(count);
        for (id, context) in (1u8..=255).step_by(2).zip(&self.presentation_contexts) {
            if let Some((scu_role, scp_role)) = context.roles {
                match role_selections
                    .iter()
                    .find(|r| r.sop_class_uid == context.abstract_syntax)
                {
                    Some(existing)
                        if (existing.scu_role, existing.scp_role) != (scu_role, scp_role) =>
                    {
                        return Err(NegotiationError::ConflictingRoleSelection {
                            abstract_syntax: context.abstract_syntax.clone(),
                        })
                    }
                    Some(_) => {}
                    None => role_selections.push(RoleSelection {
                        sop_class_uid: context.abstract_syntax.clone(),
                        scu_role,
                        scp_role,
                    }),
                }
            }
            presentation_contexts.push(PresentationContextProposed {
                id,
                abstract_syntax: context.abstract_syntax.clone(),
                transfer_syntaxes: context.transfer_syntaxes.clone(),
            });
        }
        Ok(AssociateRq {
            protocol_version: PROTOCOL_VERSION,
            called_ae_title: self.called_ae_title.clone(),
            calling_ae_title: self.calling_ae_title.clone(),
            application_context_name: DICOM_APPLICATION_CONTEXT_NAME.to_owned(),
            presentation_contexts,
            user_information: UserInformation {
                maximum_length: Some(self.pdu_length_max_receive),
                implementation_class_uid: Some(self.implementation_class_uid.clone()),
                asynchronous_operations_window: self.asynchronous_operations_window,
                role_selections,
                implementation_version_name: self.implementation_version_name.clone(),
                user_identity_request: self.user_identity.clone(),
                ..UserInformation::default()
            },
        })
    }
}

/// Reads the A-ASSOCIATE-AC a peer answered to our `rq`.
pub fn interpret_associate_ac(
    rq: &AssociateRq,
    ac: &AssociateAc,
) -> Result<NegotiatedAssociation, NegotiationError> {
    if ac.application_context_name != DICOM_APPLICATION_CONTEXT_NAME {
        return Err(NegotiationError::ApplicationContextName {
            name: ac.application_context_name.clone(),
        });
    }
    let mut accepted = Vec::new();
    for result in &ac.presentation_contexts {
        let proposed = rq
            .presentation_contexts
            .iter()
            .find(|p| p.id == result.id)
            .ok_or(NegotiationError::UnknownPresentationContextId { id: result.id })?;
        if result.result != PresentationContextResultReason::Acceptance {
            continue;
        }
        if !proposed.transfer_syntaxes.contains(&result.transfer_syntax) {
            return Err(NegotiationError::TransferSyntaxNotProposed {
                id: result.id,
                transfer_syntax: result.transfer_syntax.clone(),
            });
        }
        let ours = rq
            .user_information
            .role_selections
            .iter()
            .find(|r| r.sop_class_uid == proposed.abstract_syntax);
        let theirs = ac
            .user_information
            .role_selections
            .iter()
            .find(|r| r.sop_class_uid == proposed.abstract_syntax);
        // PS3.7 D.3.3.4: without a reply the default roles apply; a reply
        // can only confirm what was proposed.
        let (requestor_is_scu, requestor_is_scp) = match (ours, theirs) {
            (Some(ours), Some(theirs)) => (
                ours.scu_role && theirs.scu_role,
                ours.scp_role && theirs.scp_role,
            ),
            _ => (true, false),
        };
        accepted.push(NegotiatedPresentationContext {
            id: result.id,
            abstract_syntax: proposed.abstract_syntax.clone(),
            transfer_syntax: result.transfer_syntax.clone(),
            requestor_is_scu,
            requestor_is_scp,
        });
    }
    accepted.sort_by_key(|c| c.id);
    accepted.dedup_by_key(|c| c.id);
    Ok(NegotiatedAssociation {
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        presentation_contexts: accepted,
        pdu_length_max_peer: ac.user_information.maximum_length.unwrap_or(0),
        pdu_length_max_local: rq.user_information.maximum_length.unwrap_or(0),
        peer_implementation_class_uid: ac.user_information.implementation_class_uid.clone(),
        peer_implementation_version_name: ac.user_information.implementation_version_name.clone(),
        asynchronous_operations_window: ac
            .user_information
            .asynchronous_operations_window
            .unwrap_or_default(),
        user_identity: rq.user_information.user_identity_request.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_min_treats_zero_as_unlimited() {
        assert_eq!(window_min(0, 5), 5);
        assert_eq!(window_min(5, 0), 5);
        assert_eq!(window_min(3, 5), 3);
        assert_eq!(window_min(0, 0), 0);
    }

    #[test]
    fn proposal_assigns_odd_ids() {
        let proposal = AssociationProposal {
            calling_ae_title: "SCU".into(),
            called_ae_title: "SCP".into(),
            presentation_contexts: (0..3)
                .map(|i| ProposedPresentationContext {
                    abstract_syntax: format!("1.2.3.{i}"),
                    transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
                    roles: None,
                })
                .collect(),
            pdu_length_max_receive: 16384,
            implementation_class_uid: "1.2.3.4".into(),
            implementation_version_name: None,
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let rq = proposal.to_associate_rq().unwrap();
        assert_eq!(
            rq.presentation_contexts
                .iter()
                .map(|c| c.id)
                .collect::<Vec<_>>(),
            [1, 3, 5]
        );
    }
}
