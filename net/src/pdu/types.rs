//! The PDU value types: what a decoded PDU holds and what an encoder takes.

/// One PDU, owned. Control PDUs are what the association state machine
/// consumes; [`Pdu::PDataTf`] copies its values and exists for tests and
/// small messages (the hot path is [`crate::pdata`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    /// A-ASSOCIATE-RQ (boxed: it is large and rare).
    AssociateRq(Box<AssociateRq>),
    /// A-ASSOCIATE-AC (boxed: it is large and rare).
    AssociateAc(Box<AssociateAc>),
    /// A-ASSOCIATE-RJ.
    AssociateRj(AssociateRj),
    /// P-DATA-TF with its presentation data values, copied.
    PDataTf(Vec<PresentationDataValue>),
    /// A-RELEASE-RQ.
    ReleaseRq,
    /// A-RELEASE-RP.
    ReleaseRp,
    /// A-ABORT.
    Abort(Abort),
}

impl Pdu {
    /// This PDU's type.
    pub fn pdu_type(&self) -> super::PduType {
        use super::PduType;
        match self {
            Pdu::AssociateRq(_) => PduType::AssociateRq,
            Pdu::AssociateAc(_) => PduType::AssociateAc,
            Pdu::AssociateRj(_) => PduType::AssociateRj,
            Pdu::PDataTf(_) => PduType::PDataTf,
            Pdu::ReleaseRq => PduType::ReleaseRq,
            Pdu::ReleaseRp => PduType::ReleaseRp,
            Pdu::Abort(_) => PduType::Abort,
        }
    }
}

/// A-ASSOCIATE-RQ (PS3.8 §9.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociateRq {
    /// Protocol-version bit field; bit 0 is version 1.
    pub protocol_version: u16,
    /// Called AE title, trimmed.
    pub called_ae_title: String,
    /// Calling AE title, trimmed.
    pub calling_ae_title: String,
    /// Application context name (a UID).
    pub application_context_name: String,
    /// Proposed presentation contexts, in the order received (at least one).
    pub presentation_contexts: Vec<PresentationContextProposed>,
    /// User information item.
    pub user_information: UserInformation,
}

/// A-ASSOCIATE-AC (PS3.8 §9.3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociateAc {
    /// Protocol-version bit field.
    pub protocol_version: u16,
    /// Echo of the RQ's called AE title (bytes 11-26, "not tested" on receipt).
    pub called_ae_title: String,
    /// Echo of the RQ's calling AE title (bytes 27-42, "not tested" on receipt).
    pub calling_ae_title: String,
    /// Application context name.
    pub application_context_name: String,
    /// One result per proposed presentation context.
    pub presentation_contexts: Vec<PresentationContextResult>,
    /// User information item.
    pub user_information: UserInformation,
}

/// Presentation context item of an A-ASSOCIATE-RQ (PS3.8 §9.3.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentationContextProposed {
    /// Presentation-context-ID; PS3.8 says odd, 1-255 (checked by negotiation, not the codec).
    pub id: u8,
    /// Abstract syntax name (a SOP class UID).
    pub abstract_syntax: String,
    /// Transfer syntax names, in the requestor's order (at least one).
    pub transfer_syntaxes: Vec<String>,
}

/// Presentation context item of an A-ASSOCIATE-AC (PS3.8 §9.3.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentationContextResult {
    /// Presentation-context-ID of the proposal this answers.
    pub id: u8,
    /// Result/reason (byte 7).
    pub result: PresentationContextResultReason,
    /// The accepted transfer syntax. Not significant unless accepted; empty
    /// when a peer omitted the sub-item of a rejected context.
    pub transfer_syntax: String,
}

/// Result/reason of a presentation context (PS3.8 Table 9-18, byte 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PresentationContextResultReason {
    /// 0: acceptance.
    Acceptance = 0,
    /// 1: user-rejection.
    UserRejection = 1,
    /// 2: no-reason (provider rejection).
    NoReason = 2,
    /// 3: abstract-syntax-not-supported (provider rejection).
    AbstractSyntaxNotSupported = 3,
    /// 4: transfer-syntaxes-not-supported (provider rejection).
    TransferSyntaxesNotSupported = 4,
}

impl PresentationContextResultReason {
    /// From the wire byte; `None` for values PS3.8 does not define.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Acceptance,
            1 => Self::UserRejection,
            2 => Self::NoReason,
            3 => Self::AbstractSyntaxNotSupported,
            4 => Self::TransferSyntaxesNotSupported,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// User information item (PS3.8 §9.3.2.3, sub-items of PS3.7 Annex D and PS3.8 Annex D).
///
/// Sub-items are encoded in item-type order (51H, 52H, 53H, 54H, 55H, 56H,
/// 57H, 58H, 59H, then unknown ones as received); decoding accepts any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInformation {
    /// 51H Maximum Length: the largest P-DATA-TF PDU-length the sender
    /// receives; 0 = no limit. `None` when the peer omitted the sub-item.
    pub maximum_length: Option<u32>,
    /// 52H Implementation Class UID.
    pub implementation_class_uid: Option<String>,
    /// 53H Asynchronous Operations Window.
    pub asynchronous_operations_window: Option<AsynchronousOperationsWindow>,
    /// 54H SCP/SCU Role Selection, one per SOP class.
    pub role_selections: Vec<RoleSelection>,
    /// 55H Implementation Version Name.
    pub implementation_version_name: Option<String>,
    /// 56H SOP Class Extended Negotiation.
    pub sop_class_extended_negotiations: Vec<SopClassExtendedNegotiation>,
    /// 57H SOP Class Common Extended Negotiation (RQ only).
    pub sop_class_common_extended_negotiations: Vec<SopClassCommonExtendedNegotiation>,
    /// 58H User Identity (RQ).
    pub user_identity_request: Option<UserIdentityRequest>,
    /// 59H User Identity server response (AC).
    pub user_identity_response: Option<UserIdentityResponse>,
    /// Sub-items of types this codec does not know, kept as received.
    pub unknown_sub_items: Vec<UnknownSubItem>,
}

/// Asynchronous Operations Window sub-item, 53H (PS3.7 D.3.3.3). 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsynchronousOperationsWindow {
    /// Maximum-number-operations-invoked (bytes 5-6).
    pub operations_invoked_max: u16,
    /// Maximum-number-operations-performed (bytes 7-8).
    pub operations_performed_max: u16,
}

impl Default for AsynchronousOperationsWindow {
    /// 1/1: the window when the sub-item is absent (synchronous operation).
    fn default() -> Self {
        AsynchronousOperationsWindow {
            operations_invoked_max: 1,
            operations_performed_max: 1,
        }
    }
}

/// SCP/SCU Role Selection sub-item, 54H (PS3.7 D.3.3.4). In an RQ the
/// roles the requestor proposes for itself; in an AC which of them the
/// acceptor accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSelection {
    /// SOP class UID.
    pub sop_class_uid: String,
    /// SCU-role byte (non-zero read as 1).
    pub scu_role: bool,
    /// SCP-role byte (non-zero read as 1).
    pub scp_role: bool,
}

/// SOP Class Extended Negotiation sub-item, 56H (PS3.7 D.3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SopClassExtendedNegotiation {
    /// SOP class UID.
    pub sop_class_uid: String,
    /// Service-class-application-information, opaque here.
    pub service_class_application_information: Vec<u8>,
}

/// SOP Class Common Extended Negotiation sub-item, 57H (PS3.7 D.3.3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SopClassCommonExtendedNegotiation {
    /// Sub-item-version (byte 2), 0 in the current standard.
    pub sub_item_version: u8,
    /// SOP class UID.
    pub sop_class_uid: String,
    /// Service class UID.
    pub service_class_uid: String,
    /// Related general SOP class UIDs.
    pub related_general_sop_class_uids: Vec<String>,
}

/// User Identity negotiation sub-item of an RQ, 58H (PS3.7 D.3.3.7.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentityRequest {
    /// User-Identity-Type: 1 username, 2 username and passcode, 3 Kerberos,
    /// 4 SAML, 5 JWT (kept as the byte so new types pass through).
    pub identity_type: u8,
    /// Positive-response-requested.
    pub positive_response_requested: bool,
    /// Primary field.
    pub primary_field: Vec<u8>,
    /// Secondary field (passcode for type 2, else empty).
    pub secondary_field: Vec<u8>,
}

/// User Identity server response sub-item of an AC, 59H (PS3.7 D.3.3.7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentityResponse {
    /// Server-response (a Kerberos ticket, SAML response or JWT; empty otherwise).
    pub server_response: Vec<u8>,
}

/// A user-information sub-item this codec does not interpret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSubItem {
    /// Item-type byte.
    pub item_type: u8,
    /// The item's bytes after its 4-byte header.
    pub bytes: Vec<u8>,
}

/// A-ASSOCIATE-RJ (PS3.8 §9.3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AssociateRj {
    /// Result (byte 8).
    pub result: RejectResult,
    /// Source and reason (bytes 9 and 10).
    pub reason: RejectReason,
}

impl AssociateRj {
    /// The (result, source, reason) bytes, as conformance statements write them.
    pub fn codes(&self) -> (u8, u8, u8) {
        (
            self.result as u8,
            self.reason.source(),
            self.reason.reason(),
        )
    }
}

/// A-ASSOCIATE-RJ result (PS3.8 Table 9-21, byte 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectResult {
    /// 1: rejected-permanent.
    Permanent = 1,
    /// 2: rejected-transient.
    Transient = 2,
}

/// A-ASSOCIATE-RJ source and reason (PS3.8 Table 9-21, bytes 9-10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Source 1 (service-user), reason 1: no-reason-given.
    ServiceUserNoReasonGiven,
    /// Source 1, reason 2: application-context-name-not-supported.
    ApplicationContextNameNotSupported,
    /// Source 1, reason 3: calling-AE-title-not-recognized.
    CallingAeTitleNotRecognized,
    /// Source 1, reason 7: called-AE-title-not-recognized.
    CalledAeTitleNotRecognized,
    /// Source 2 (service-provider, ACSE), reason 1: no-reason-given.
    ServiceProviderAcseNoReasonGiven,
    /// Source 2, reason 2: protocol-version-not-supported.
    ProtocolVersionNotSupported,
    /// Source 3 (service-provider, presentation), reason 1: temporary-congestion.
    TemporaryCongestion,
    /// Source 3, reason 2: local-limit-exceeded.
    LocalLimitExceeded,
    /// A source/reason pair PS3.8 marks reserved, kept as received.
    Reserved {
        /// Source byte (1-3).
        source: u8,
        /// Reason byte.
        reason: u8,
    },
}

impl RejectReason {
    /// From the source and reason bytes; `None` for a source other than 1-3.
    pub fn from_codes(source: u8, reason: u8) -> Option<Self> {
        Some(match (source, reason) {
            (1, 1) => Self::ServiceUserNoReasonGiven,
            (1, 2) => Self::ApplicationContextNameNotSupported,
            (1, 3) => Self::CallingAeTitleNotRecognized,
            (1, 7) => Self::CalledAeTitleNotRecognized,
            (2, 1) => Self::ServiceProviderAcseNoReasonGiven,
            (2, 2) => Self::ProtocolVersionNotSupported,
            (3, 1) => Self::TemporaryCongestion,
            (3, 2) => Self::LocalLimitExceeded,
            (1..=3, _) => Self::Reserved { source, reason },
            _ => return None,
        })
    }

    /// The source byte.
    pub fn source(&self) -> u8 {
        match *self {
            Self::ServiceUserNoReasonGiven
            | Self::ApplicationContextNameNotSupported
            | Self::CallingAeTitleNotRecognized
            | Self::CalledAeTitleNotRecognized => 1,
            Self::ServiceProviderAcseNoReasonGiven | Self::ProtocolVersionNotSupported => 2,
            Self::TemporaryCongestion | Self::LocalLimitExceeded => 3,
            Self::Reserved { source, .. } => source,
        }
    }

    /// The reason/diag byte.
    pub fn reason(&self) -> u8 {
        match *self {
            Self::ServiceUserNoReasonGiven
            | Self::ServiceProviderAcseNoReasonGiven
            | Self::TemporaryCongestion => 1,
            Self::ApplicationContextNameNotSupported
            | Self::ProtocolVersionNotSupported
            | Self::LocalLimitExceeded => 2,
            Self::CallingAeTitleNotRecognized => 3,
            Self::CalledAeTitleNotRecognized => 7,
            Self::Reserved { reason, .. } => reason,
        }
    }
}

/// A-ABORT (PS3.8 §9.3.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Abort {
    /// Source (byte 9).
    pub source: AbortSource,
    /// Reason/diag (byte 10); significant only for a service-provider source.
    pub reason: AbortReason,
}

/// A-ABORT source (PS3.8 Table 9-26, byte 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AbortSource {
    /// 0: DICOM UL service-user (initiated abort).
    ServiceUser = 0,
    /// 1: reserved.
    Reserved = 1,
    /// 2: DICOM UL service-provider (initiated abort).
    ServiceProvider = 2,
}

impl AbortSource {
    /// From the wire byte; `None` above 2.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::ServiceUser,
            1 => Self::Reserved,
            2 => Self::ServiceProvider,
            _ => return None,
        })
    }
}

/// A-ABORT reason/diag (PS3.8 Table 9-26, byte 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortReason {
    /// 0: reason-not-specified.
    NotSpecified,
    /// 1: unrecognized-PDU.
    UnrecognizedPdu,
    /// 2: unexpected-PDU.
    UnexpectedPdu,
    /// 4: unrecognized-PDU-parameter.
    UnrecognizedPduParameter,
    /// 5: unexpected-PDU-parameter.
    UnexpectedPduParameter,
    /// 6: invalid-PDU-parameter-value.
    InvalidPduParameterValue,
    /// Any other byte (3 is reserved), kept as received.
    Other(u8),
}

impl AbortReason {
    /// From the wire byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::NotSpecified,
            1 => Self::UnrecognizedPdu,
            2 => Self::UnexpectedPdu,
            4 => Self::UnrecognizedPduParameter,
            5 => Self::UnexpectedPduParameter,
            6 => Self::InvalidPduParameterValue,
            other => Self::Other(other),
        }
    }

    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            Self::NotSpecified => 0,
            Self::UnrecognizedPdu => 1,
            Self::UnexpectedPdu => 2,
            Self::UnrecognizedPduParameter => 4,
            Self::UnexpectedPduParameter => 5,
            Self::InvalidPduParameterValue => 6,
            Self::Other(code) => code,
        }
    }
}

/// One presentation data value, owned (PS3.8 §9.3.5.1 and Annex E).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentationDataValue {
    /// Presentation-context-ID.
    pub presentation_context_id: u8,
    /// Message control header bit 0: command (true) or data set fragment.
    pub is_command: bool,
    /// Message control header bit 1: last fragment of the command or data set.
    pub is_last: bool,
    /// The fragment's bytes.
    pub value: Vec<u8>,
}
