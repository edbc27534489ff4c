//! DIMSE command sets (PS3.7 §9.3, §10.3, Annex E) and the small data sets
//! that travel with them.
//!
//! Owns the encoding and decoding of group 0000 command sets, always in
//! Implicit VR Little Endian with a correct Command Group Length (0000,0000):
//! C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, C-CANCEL, N-ACTION and
//! N-EVENT-REPORT, requests and responses, as one typed [`Command`] enum. A
//! command set that is too long, cut short, has a wrong group length, lacks a
//! required element, or has a value of the wrong size is a specific
//! [`DimseError`] carrying the tag and the command field, so the service layer
//! can answer with a status. Submodules: [`status`] (status codes),
//! [`dataset`] (a bounded codec for tiny data sets: commitment, identifiers),
//! [`commitment`] (the Storage Commitment data sets).

pub mod commitment;
pub mod dataset;
pub mod status;

use std::fmt;

pub use status::{Status, StatusCategory};

use crate::uid::{check_uid, UidError, UID_LENGTH_MAX};

/// The longest command set accepted or produced, in bytes. Real command sets
/// are a few hundred bytes; the cap bounds what a peer can make us buffer.
pub const COMMAND_SET_LENGTH_MAX: usize = 64 * 1024;

/// The most elements a command set may hold (PS3.7 defines fewer than 30).
pub const COMMAND_ELEMENTS_MAX: usize = 64;

/// A data element tag (group, element).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u16, pub u16);

impl Tag {
    /// The tag as one u32, group in the high half (sort order of PS3.5 §7.1).
    pub const fn to_u32(self) -> u32 {
        ((self.0 as u32) << 16) | self.1 as u32
    }

    /// The tag from its u32 form.
    pub const fn from_u32(value: u32) -> Self {
        Self((value >> 16) as u16, value as u16)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "({:04X},{:04X})", self.0, self.1)
    }
}

/// Command-group element tags (PS3.7 Annex E.1).
pub mod tags {
    use super::Tag;

    /// Command Group Length, UL.
    pub const COMMAND_GROUP_LENGTH: Tag = Tag(0x0000, 0x0000);
    /// Affected SOP Class UID, UI.
    pub const AFFECTED_SOP_CLASS_UID: Tag = Tag(0x0000, 0x0002);
    /// Requested SOP Class UID, UI.
    pub const REQUESTED_SOP_CLASS_UID: Tag = Tag(0x0000, 0x0003);
    /// Command Field, US.
    pub const COMMAND_FIELD: Tag = Tag(0x0000, 0x0100);
    /// Message ID, US.
    pub const MESSAGE_ID: Tag = Tag(0x0000, 0x0110);
    /// Message ID Being Responded To, US.
    pub const MESSAGE_ID_BEING_RESPONDED_TO: Tag = Tag(0x0000, 0x0120);
    /// Move Destination, AE.
    pub const MOVE_DESTINATION: Tag = Tag(0x0000, 0x0600);
    /// Priority, US.
    pub const PRIORITY: Tag = Tag(0x0000, 0x0700);
    /// Command Data Set Type, US.
    pub const COMMAND_DATA_SET_TYPE: Tag = Tag(0x0000, 0x0800);
    /// Status, US.
    pub const STATUS: Tag = Tag(0x0000, 0x0900);
    /// Offending Element, AT (multi-valued).
    pub const OFFENDING_ELEMENT: Tag = Tag(0x0000, 0x0901);
    /// Error Comment, LO.
    pub const ERROR_COMMENT: Tag = Tag(0x0000, 0x0902);
    /// Error ID, US.
    pub const ERROR_ID: Tag = Tag(0x0000, 0x0903);
    /// Affected SOP Instance UID, UI.
    pub const AFFECTED_SOP_INSTANCE_UID: Tag = Tag(0x0000, 0x1000);
    /// Requested SOP Instance UID, UI.
    pub const REQUESTED_SOP_INSTANCE_UID: Tag = Tag(0x0000, 0x1001);
    /// Event Type ID, US.
    pub const EVENT_TYPE_ID: Tag = Tag(0x0000, 0x1002);
    /// Action Type ID, US.
    pub const ACTION_TYPE_ID: Tag = Tag(0x0000, 0x1008);
    /// Number of Remaining Sub-operations, US.
    pub const NUMBER_OF_REMAINING_SUB_OPERATIONS: Tag = Tag(0x0000, 0x1020);
    /// Number of Completed Sub-operations, US.
    pub const NUMBER_OF_COMPLETED_SUB_OPERATIONS: Tag = Tag(0x0000, 0x1021);
    /// Number of Failed Sub-operations, US.
    pub const NUMBER_OF_FAILED_SUB_OPERATIONS: Tag = Tag(0x0000, 0x1022);
    /// Number of Warning Sub-operations, US.
    pub const NUMBER_OF_WARNING_SUB_OPERATIONS: Tag = Tag(0x0000, 0x1023);
    /// Move Originator Application Entity Title, AE.
    pub const MOVE_ORIGINATOR_AE_TITLE: Tag = Tag(0x0000, 0x1030);
    /// Move Originator Message ID, US.
    pub const MOVE_ORIGINATOR_MESSAGE_ID: Tag = Tag(0x0000, 0x1031);
}

/// The Command Field (0000,0100) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandField(pub u16);

impl CommandField {
    /// C-STORE-RQ.
    pub const C_STORE_RQ: Self = Self(0x0001);
    /// C-STORE-RSP.
    pub const C_STORE_RSP: Self = Self(0x8001);
    /// C-GET-RQ.
    pub const C_GET_RQ: Self = Self(0x0010);
    /// C-GET-RSP.
    pub const C_GET_RSP: Self = Self(0x8010);
    /// C-FIND-RQ.
    pub const C_FIND_RQ: Self = Self(0x0020);
    /// C-FIND-RSP.
    pub const C_FIND_RSP: Self = Self(0x8020);
    /// C-MOVE-RQ.
    pub const C_MOVE_RQ: Self = Self(0x0021);
    /// C-MOVE-RSP.
    pub const C_MOVE_RSP: Self = Self(0x8021);
    /// C-ECHO-RQ.
    pub const C_ECHO_RQ: Self = Self(0x0030);
    /// C-ECHO-RSP.
    pub const C_ECHO_RSP: Self = Self(0x8030);
    /// N-EVENT-REPORT-RQ.
    pub const N_EVENT_REPORT_RQ: Self = Self(0x0100);
    /// N-EVENT-REPORT-RSP.
    pub const N_EVENT_REPORT_RSP: Self = Self(0x8100);
    /// N-GET-RQ (recognized, not decoded).
    pub const N_GET_RQ: Self = Self(0x0110);
    /// N-SET-RQ (recognized, not decoded).
    pub const N_SET_RQ: Self = Self(0x0120);
    /// N-ACTION-RQ.
    pub const N_ACTION_RQ: Self = Self(0x0130);
    /// N-ACTION-RSP.
    pub const N_ACTION_RSP: Self = Self(0x8130);
    /// N-CREATE-RQ (recognized, not decoded).
    pub const N_CREATE_RQ: Self = Self(0x0140);
    /// N-DELETE-RQ (recognized, not decoded).
    pub const N_DELETE_RQ: Self = Self(0x0150);
    /// C-CANCEL-RQ.
    pub const C_CANCEL_RQ: Self = Self(0x0FFF);

    /// The standard's name of this command, or "unknown".
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x0001 => "C-STORE-RQ",
            0x8001 => "C-STORE-RSP",
            0x0010 => "C-GET-RQ",
            0x8010 => "C-GET-RSP",
            0x0020 => "C-FIND-RQ",
            0x8020 => "C-FIND-RSP",
            0x0021 => "C-MOVE-RQ",
            0x8021 => "C-MOVE-RSP",
            0x0030 => "C-ECHO-RQ",
            0x8030 => "C-ECHO-RSP",
            0x0100 => "N-EVENT-REPORT-RQ",
            0x8100 => "N-EVENT-REPORT-RSP",
            0x0110 => "N-GET-RQ",
            0x8110 => "N-GET-RSP",
            0x0120 => "N-SET-RQ",
            0x8120 => "N-SET-RSP",
            0x0130 => "N-ACTION-RQ",
            0x8130 => "N-ACTION-RSP",
            0x0140 => "N-CREATE-RQ",
            0x8140 => "N-CREATE-RSP",
            0x0150 => "N-DELETE-RQ",
            0x8150 => "N-DELETE-RSP",
            0x0FFF => "C-CANCEL-RQ",
            _ => "unknown",
        }
    }
}

impl fmt::Display for CommandField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({:04X})", self.name(), self.0)
    }
}

/// Command Data Set Type (0000,0800): 0101 means no data set follows, any
/// other value means one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandDataSetType(pub u16);

impl CommandDataSetType {
    /// 0101: no data set.
    pub const NONE: Self = Self(0x0101);
    /// The value Sluice writes when a data set follows.
    pub const PRESENT: Self = Self(0x0001);

    /// Whether a data set follows the command.
    pub const fn is_present(self) -> bool {
        self.0 != Self::NONE.0
    }

    const fn from_present(present: bool) -> Self {
        if present {
            Self::PRESENT
        } else {
            Self::NONE
        }
    }
}

/// Priority (0000,0700) of C-STORE, C-FIND, C-MOVE and C-GET requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// 0000.
    #[default]
    Medium,
    /// 0001.
    High,
    /// 0002.
    Low,
}

impl Priority {
    /// The encoded value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Medium => 0,
            Self::High => 1,
            Self::Low => 2,
        }
    }

    /// Decodes the value; anything but 0, 1, 2 is `None`.
    pub const fn from_u16(value: u16) -> Option<Self> {
        match value {
            0 => Some(Self::Medium),
            1 => Some(Self::High),
            2 => Some(Self::Low),
            _ => None,
        }
    }
}

/// Optional error details of a response (PS3.7 C.4): Offending Element,
/// Error Comment, Error ID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusDetail {
    /// Error Comment (0000,0902), at most 64 characters.
    pub error_comment: Option<String>,
    /// Offending Element (0000,0901): the tags at fault.
    pub offending_elements: Vec<Tag>,
    /// Error ID (0000,0903).
    pub error_id: Option<u16>,
}

/// Move Originator of a C-STORE sub-operation of a C-MOVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOriginator {
    /// Move Originator Application Entity Title (0000,1030).
    pub ae_title: String,
    /// Move Originator Message ID (0000,1031).
    pub message_id: u16,
}

/// Sub-operation counts of C-MOVE and C-GET responses; each is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOperationCounts {
    /// Number of Remaining Sub-operations (0000,1020).
    pub remaining: Option<u16>,
    /// Number of Completed Sub-operations (0000,1021).
    pub completed: Option<u16>,
    /// Number of Failed Sub-operations (0000,1022).
    pub failed: Option<u16>,
    /// Number of Warning Sub-operations (0000,1023).
    pub warning: Option<u16>,
}

/// C-ECHO-RQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CEchoRq {
    /// Message ID.
    pub message_id: u16,
    /// Affected SOP Class UID (Verification).
    pub affected_sop_class_uid: String,
}

/// C-ECHO-RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CEchoRsp {
    /// Message ID Being Responded To.
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (optional in the response).
    pub affected_sop_class_uid: Option<String>,
    /// Status.
    pub status: Status,
    /// Optional error details.
    pub detail: StatusDetail,
}

/// C-STORE-RQ; a data set always follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CStoreRq {
    /// Message ID.
    pub message_id: u16,
    /// Priority.
    pub priority: Priority,
    /// Affected SOP Class UID.
    pub affected_sop_class_uid: String,
    /// Affected SOP Instance UID.
    pub affected_sop_instance_uid: String,
    /// Present when the C-STORE is a sub-operation of a C-MOVE.
    pub move_originator: Option<MoveOriginator>,
}

/// C-STORE-RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CStoreRsp {
    /// Message ID Being Responded To.
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (optional in the response).
    pub affected_sop_class_uid: Option<String>,
    /// Affected SOP Instance UID (optional in the response).
    pub affected_sop_instance_uid: Option<String>,
    /// Status.
    pub status: Status,
    /// Optional error details.
    pub detail: StatusDetail,
}

/// C-FIND-RQ; an identifier data set always follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CFindRq {
    /// Message ID.
    pub message_id: u16,
    /// Priority.
    pub priority: Priority,
    /// Affected SOP Class UID (the information model).
    pub affected_sop_class_uid: String,
}

/// C-FIND-RSP; pending responses carry an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CFindRsp {
    /// Message ID Being Responded To.
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (optional in the response).
    pub affected_sop_class_uid: Option<String>,
    /// Status.
    pub status: Status,
    /// Whether an identifier data set follows.
    pub data_set: bool,
    /// Optional error details.
    pub detail: StatusDetail,
}

/// C-MOVE-RQ; an identifier data set always follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CMoveRq {
    /// Message ID.
    pub message_id: u16,
    /// Priority.
    pub priority: Priority,
    /// Affected SOP Class UID (the information model).
    pub affected_sop_class_uid: String,
    /// Move Destination AE title.
    pub move_destination: String,
}

/// C-MOVE-RSP (and C-GET-RSP, same shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CMoveRsp {
    /// Message ID Being Responded To.
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (optional in the response).
    pub affected_sop_class_uid: Option<String>,
    /// Status.
    pub status: Status,
    /// Sub-operation counts.
    pub sub_operations: SubOperationCounts,
    /// Whether an identifier (Failed SOP Instance UID List) follows.
    pub data_set: bool,
    /// Optional error details.
    pub detail: StatusDetail,
}

/// C-GET-RQ; an identifier data set always follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CGetRq {
    /// Message ID.
    pub message_id: u16,
    /// Priority.
    pub priority: Priority,
    /// Affected SOP Class UID (the information model).
    pub affected_sop_class_uid: String,
}

/// C-CANCEL-RQ (of a C-FIND, C-MOVE or C-GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CCancelRq {
    /// The Message ID of the operation to cancel.
    pub message_id_being_responded_to: u16,
}

/// N-ACTION-RQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NActionRq {
    /// Message ID.
    pub message_id: u16,
    /// Requested SOP Class UID.
    pub requested_sop_class_uid: String,
    /// Requested SOP Instance UID.
    pub requested_sop_instance_uid: String,
    /// Action Type ID.
    pub action_type_id: u16,
    /// Whether an action information data set follows.
    pub data_set: bool,
}

/// N-ACTION-RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NActionRsp {
    /// Message ID Being Responded To.
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (optional).
    pub affected_sop_class_uid: Option<String>,
    /// Affected SOP Instance UID (optional).
    pub affected_sop_instance_uid: Option<String>,
    /// Action Type ID (conditional).
    pub action_type_id: Option<u16>,
    /// Status.
    pub status: Status,
    /// Whether an action reply data set follows.
    pub data_set: bool,
    /// Optional error details.
    pub detail: StatusDetail,
}

/// N-EVENT-REPORT-RQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NEventReportRq {
    /// Message ID.
    pub message_id: u16,
    /// Affected SOP Class UID.
    pub affected_sop_class_uid: String,
    /// Affected SOP Instance UID.
    pub affected_sop_instance_uid: String,
    /// Event Type ID.
    pub event_type_id: u16,
    /// Whether an event information data set follows.
    pub data_set: bool,
}

/// N-EVENT-REPORT-RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NEventReportRsp {
    /// Message ID Being Responded To.
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (optional).
    pub affected_sop_class_uid: Option<String>,
    /// Affected SOP Instance UID (optional).
    pub affected_sop_instance_uid: Option<String>,
    /// Event Type ID (conditional).
    pub event_type_id: Option<u16>,
    /// Status.
    pub status: Status,
    /// Whether an event reply data set follows.
    pub data_set: bool,
    /// Optional error details.
    pub detail: StatusDetail,
}

/// One DIMSE command, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// C-ECHO-RQ.
    CEchoRq(CEchoRq),
    /// C-ECHO-RSP.
    CEchoRsp(CEchoRsp),
    /// C-STORE-RQ.
    CStoreRq(CStoreRq),
    /// C-STORE-RSP.
    CStoreRsp(CStoreRsp),
    /// C-FIND-RQ.
    CFindRq(CFindRq),
    /// C-FIND-RSP.
    CFindRsp(CFindRsp),
    /// C-MOVE-RQ.
    CMoveRq(CMoveRq),
    /// C-MOVE-RSP.
    CMoveRsp(CMoveRsp),
    /// C-GET-RQ.
    CGetRq(CGetRq),
    /// C-GET-RSP.
    CGetRsp(CMoveRsp),
    /// C-CANCEL-RQ.
    CCancelRq(CCancelRq),
    /// N-ACTION-RQ.
    NActionRq(NActionRq),
    /// N-ACTION-RSP.
    NActionRsp(NActionRsp),
    /// N-EVENT-REPORT-RQ.
    NEventReportRq(NEventReportRq),
    /// N-EVENT-REPORT-RSP.
    NEventReportRsp(NEventReportRsp),
}

/// Why a command set cannot be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DimseError {
    /// The command set is longer than [`COMMAND_SET_LENGTH_MAX`].
    #[error("command set of {length} bytes exceeds the limit of {limit}")]
    TooLong {
        /// Length in bytes.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// An element header or value runs past the end of the command set.
    #[error("command set truncated: element at offset {offset} needs {needed} bytes, {available} remain")]
    Truncated {
        /// Offset of the element.
        offset: usize,
        /// Bytes the element needs.
        needed: u64,
        /// Bytes left.
        available: usize,
    },
    /// More than [`COMMAND_ELEMENTS_MAX`] elements.
    #[error("command set has more than {limit} elements")]
    TooManyElements {
        /// The limit.
        limit: usize,
    },
    /// An element outside group 0000.
    #[error("element {tag} is outside the command group")]
    ElementOutsideCommandGroup {
        /// The tag.
        tag: Tag,
    },
    /// The same element twice.
    #[error("element {tag} appears twice")]
    DuplicateElement {
        /// The tag.
        tag: Tag,
    },
    /// The first element is not Command Group Length (0000,0000).
    #[error("command set does not start with Command Group Length (0000,0000)")]
    GroupLengthMissing,
    /// Command Group Length disagrees with the bytes that follow it.
    #[error("Command Group Length says {declared} bytes, {actual} follow")]
    GroupLengthMismatch {
        /// The declared value.
        declared: u32,
        /// The actual number of bytes after the group length element.
        actual: usize,
    },
    /// The command field names no command Sluice decodes.
    #[error("unknown or unsupported command field {command_field}")]
    UnknownCommandField {
        /// The value of (0000,0100).
        command_field: CommandField,
    },
    /// A required element is absent.
    #[error("{} lacks required element {tag}", command_name(*command_field))]
    MissingElement {
        /// The missing tag.
        tag: Tag,
        /// The command, when known.
        command_field: Option<CommandField>,
    },
    /// An element's length does not fit its VR (US not 2 bytes, UI over 64...).
    #[error("{} element {tag} has a bad length {length}", command_name(*command_field))]
    BadElementLength {
        /// The tag.
        tag: Tag,
        /// The command, when known.
        command_field: Option<CommandField>,
        /// The element's length.
        length: usize,
    },
    /// An element's value is not valid (empty UID, priority 7, non-ASCII AE...).
    #[error("{} element {tag} has an invalid value: {reason}", command_name(*command_field))]
    InvalidValue {
        /// The tag.
        tag: Tag,
        /// The command, when known.
        command_field: Option<CommandField>,
        /// What is wrong.
        reason: &'static str,
    },
    /// A UID element whose value is not a UID.
    #[error("{} element {tag} is not a valid UID: {error}", command_name(*command_field))]
    InvalidUid {
        /// The tag.
        tag: Tag,
        /// The command, when known.
        command_field: Option<CommandField>,
        /// The syntax error.
        error: UidError,
    },
    /// A request that must carry a data set says none follows.
    #[error("{command_field} must be followed by a data set but Command Data Set Type is 0101")]
    DataSetRequired {
        /// The command.
        command_field: CommandField,
    },
    /// A command that never carries a data set says one follows.
    #[error("{command_field} must not be followed by a data set")]
    UnexpectedDataSet {
        /// The command.
        command_field: CommandField,
    },
}

fn command_name(command_field: Option<CommandField>) -> &'static str {
    command_field.map_or("command set", CommandField::name)
}

impl DimseError {
    /// The element at fault, where there is one.
    pub fn tag(&self) -> Option<Tag> {
        match self {
            Self::ElementOutsideCommandGroup { tag }
            | Self::DuplicateElement { tag }
            | Self::MissingElement { tag, .. }
            | Self::BadElementLength { tag, .. }
            | Self::InvalidValue { tag, .. }
            | Self::InvalidUid { tag, .. } => Some(*tag),
            Self::GroupLengthMissing | Self::GroupLengthMismatch { .. } => {
                Some(tags::COMMAND_GROUP_LENGTH)
            }
            Self::UnknownCommandField { .. } => Some(tags::COMMAND_FIELD),
            Self::DataSetRequired { .. } | Self::UnexpectedDataSet { .. } => {
                Some(tags::COMMAND_DATA_SET_TYPE)
            }
            Self::TooLong { .. } | Self::Truncated { .. } | Self::TooManyElements { .. } => None,
        }
    }

    /// The command the error was found in, when it was known by then.
    pub fn command_field(&self) -> Option<CommandField> {
        match self {
            Self::MissingElement { command_field, .. }
            | Self::BadElementLength { command_field, .. }
            | Self::InvalidValue { command_field, .. }
            | Self::InvalidUid { command_field, .. } => *command_field,
            Self::UnknownCommandField { command_field }
            | Self::DataSetRequired { command_field }
            | Self::UnexpectedDataSet { command_field } => Some(*command_field),
            _ => None,
        }
    }
}

impl Command {
    /// The Command Field of this command.
    pub const fn command_field(&self) -> CommandField {
        match self {
            Self::CEchoRq(_) => CommandField::C_ECHO_RQ,
            Self::CEchoRsp(_) => CommandField::C_ECHO_RSP,
            Self::CStoreRq(_) => CommandField::C_STORE_RQ,
            Self::CStoreRsp(_) => CommandField::C_STORE_RSP,
            Self::CFindRq(_) => CommandField::C_FIND_RQ,
            Self::CFindRsp(_) => CommandField::C_FIND_RSP,
            Self::CMoveRq(_) => CommandField::C_MOVE_RQ,
            Self::CMoveRsp(_) => CommandField::C_MOVE_RSP,
            Self::CGetRq(_) => CommandField::C_GET_RQ,
            Self::CGetRsp(_) => CommandField::C_GET_RSP,
            Self::CCancelRq(_) => CommandField::C_CANCEL_RQ,
            Self::NActionRq(_) => CommandField::N_ACTION_RQ,
            Self::NActionRsp(_) => CommandField::N_ACTION_RSP,
            Self::NEventReportRq(_) => CommandField::N_EVENT_REPORT_RQ,
            Self::NEventReportRsp(_) => CommandField::N_EVENT_REPORT_RSP,
        }
    }

    /// Whether a data set follows this command on the association.
    pub const fn data_set_present(&self) -> bool {
        match self {
            Self::CStoreRq(_) | Self::CFindRq(_) | Self::CMoveRq(_) | Self::CGetRq(_) => true,
            Self::CEchoRq(_) | Self::CEchoRsp(_) | Self::CStoreRsp(_) | Self::CCancelRq(_) => false,
            Self::CFindRsp(rsp) => rsp.data_set,
            Self::CMoveRsp(rsp) | Self::CGetRsp(rsp) => rsp.data_set,
            Self::NActionRq(rq) => rq.data_set,
            Self::NActionRsp(rsp) => rsp.data_set,
            Self::NEventReportRq(rq) => rq.data_set,
            Self::NEventReportRsp(rsp) => rsp.data_set,
        }
    }

    /// The Message ID of a request, or the Message ID Being Responded To of a
    /// response or C-CANCEL.
    pub const fn message_id(&self) -> u16 {
        match self {
            Self::CEchoRq(rq) => rq.message_id,
            Self::CStoreRq(rq) => rq.message_id,
            Self::CFindRq(rq) => rq.message_id,
            Self::CMoveRq(rq) => rq.message_id,
            Self::CGetRq(rq) => rq.message_id,
            Self::NActionRq(rq) => rq.message_id,
            Self::NEventReportRq(rq) => rq.message_id,
            Self::CEchoRsp(rsp) => rsp.message_id_being_responded_to,
            Self::CStoreRsp(rsp) => rsp.message_id_being_responded_to,
            Self::CFindRsp(rsp) => rsp.message_id_being_responded_to,
            Self::CMoveRsp(rsp) | Self::CGetRsp(rsp) => rsp.message_id_being_responded_to,
            Self::CCancelRq(rq) => rq.message_id_being_responded_to,
            Self::NActionRsp(rsp) => rsp.message_id_being_responded_to,
            Self::NEventReportRsp(rsp) => rsp.message_id_being_responded_to,
        }
    }

    /// The status of a response; `None` for requests.
    pub const fn status(&self) -> Option<Status> {
        match self {
            Self::CEchoRsp(rsp) => Some(rsp.status),
            Self::CStoreRsp(rsp) => Some(rsp.status),
            Self::CFindRsp(rsp) => Some(rsp.status),
            Self::CMoveRsp(rsp) | Self::CGetRsp(rsp) => Some(rsp.status),
            Self::NActionRsp(rsp) => Some(rsp.status),
            Self::NEventReportRsp(rsp) => Some(rsp.status),
            _ => None,
        }
    }

    /// Encodes the command set (Implicit VR Little Endian, group length first).
    pub fn encode(&self) -> Result<Vec<u8>, DimseError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Encodes the command set, appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), DimseError> {
        let start = out.len();
        let mut writer = Writer {
            out,
            command_field: Some(self.command_field()),
        };
        // Placeholder for the group length, patched below.
        writer.element_header(tags::COMMAND_GROUP_LENGTH, 4);
        writer.out.extend_from_slice(&[0; 4]);
        let body_start = writer.out.len();
        // Elements in ascending tag order (PS3.5 §7.1).
        match self {
            Self::CEchoRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.header_common(self.command_field(), Some(rq.message_id), None, false);
            }
            Self::CEchoRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    false,
                );
                writer.status(rsp.status, &rsp.detail)?;
            }
            Self::CStoreRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.us(tags::COMMAND_FIELD, self.command_field().0);
                writer.us(tags::MESSAGE_ID, rq.message_id);
                writer.us(tags::PRIORITY, rq.priority.to_u16());
                writer.us(tags::COMMAND_DATA_SET_TYPE, CommandDataSetType::PRESENT.0);
                writer.uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    &rq.affected_sop_instance_uid,
                )?;
                if let Some(originator) = &rq.move_originator {
                    writer.ae(tags::MOVE_ORIGINATOR_AE_TITLE, &originator.ae_title)?;
                    writer.us(tags::MOVE_ORIGINATOR_MESSAGE_ID, originator.message_id);
                }
            }
            Self::CStoreRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    false,
                );
                writer.status(rsp.status, &rsp.detail)?;
                writer.opt_uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    rsp.affected_sop_instance_uid.as_deref(),
                )?;
            }
            Self::CFindRq(CFindRq {
                message_id,
                priority,
                affected_sop_class_uid,
            })
            | Self::CGetRq(CGetRq {
                message_id,
                priority,
                affected_sop_class_uid,
            }) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, affected_sop_class_uid)?;
                writer.us(tags::COMMAND_FIELD, self.command_field().0);
                writer.us(tags::MESSAGE_ID, *message_id);
                writer.us(tags::PRIORITY, priority.to_u16());
                writer.us(tags::COMMAND_DATA_SET_TYPE, CommandDataSetType::PRESENT.0);
            }
            Self::CFindRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
            }
            Self::CMoveRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.us(tags::COMMAND_FIELD, self.command_field().0);
                writer.us(tags::MESSAGE_ID, rq.message_id);
                writer.ae(tags::MOVE_DESTINATION, &rq.move_destination)?;
                writer.us(tags::PRIORITY, rq.priority.to_u16());
                writer.us(tags::COMMAND_DATA_SET_TYPE, CommandDataSetType::PRESENT.0);
            }
            Self::CMoveRsp(rsp) | Self::CGetRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
                let counts = rsp.sub_operations;
                writer.opt_us(tags::NUMBER_OF_REMAINING_SUB_OPERATIONS, counts.remaining);
                writer.opt_us(tags::NUMBER_OF_COMPLETED_SUB_OPERATIONS, counts.completed);
                writer.opt_us(tags::NUMBER_OF_FAILED_SUB_OPERATIONS, counts.failed);
                writer.opt_us(tags::NUMBER_OF_WARNING_SUB_OPERATIONS, counts.warning);
            }
            Self::CCancelRq(rq) => {
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rq.message_id_being_responded_to),
                    false,
                );
            }
            Self::NActionRq(rq) => {
                writer.uid(tags::REQUESTED_SOP_CLASS_UID, &rq.requested_sop_class_uid)?;
                writer.header_common(self.command_field(), Some(rq.message_id), None, rq.data_set);
                writer.uid(
                    tags::REQUESTED_SOP_INSTANCE_UID,
                    &rq.requested_sop_instance_uid,
                )?;
                writer.us(tags::ACTION_TYPE_ID, rq.action_type_id);
            }
            Self::NActionRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
                writer.opt_uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    rsp.affected_sop_instance_uid.as_deref(),
                )?;
                writer.opt_us(tags::ACTION_TYPE_ID, rsp.action_type_id);
            }
            Self::NEventReportRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.header_common(self.command_field(), Some(rq.message_id), None, rq.data_set);
                writer.uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    &rq.affected_sop_instance_uid,
                )?;
                writer.us(tags::EVENT_TYPE_ID, rq.event_type_id);
            }
            Self::NEventReportRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
                writer.opt_uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    rsp.affected_sop_instance_uid.as_deref(),
                )?;
                writer.opt_us(tags::EVENT_TYPE_ID, rsp.event_type_id);
            }
        }
        let body_length = out.len().saturating_sub(body_start);
        let total = out.len().saturating_sub(start);
        if total > COMMAND_SET_LENGTH_MAX {
            out.truncate(start);
            return Err(DimseError::TooLong {
                length: total,
                limit: COMMAND_SET_LENGTH_MAX,
            });
        }
        let body_length = u32::try_from(body_length).unwrap_or(u32::MAX);
        if let Some(slot) = out.get_mut(body_start.saturating_sub(4)..body_start) {
            slot.copy_from_slice(&body_length.to_le_bytes());
        }
        Ok(())
    }

    /// Decodes a command set. The bytes must be exactly one command set (the
    /// concatenated command PDV fragments).
    pub fn decode(bytes: &[u8]) -> Result<Self, DimseError> {
        let elements = Elements::parse(bytes)?;
        let command_field = CommandField(elements.us(tags::COMMAND_FIELD, None)?);
        let fields = Fields {
            elements,
            command_field,
        };
        fields.command()
    }
}

/// Writes Implicit VR LE elements.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    command_field: Option<CommandField>,
}

impl Writer<'_> {
    fn element_header(&mut self, tag: Tag, length: u32) {
        self.out.extend_from_slice(&tag.0.to_le_bytes());
        self.out.extend_from_slice(&tag.1.to_le_bytes());
        self.out.extend_from_slice(&length.to_le_bytes());
    }

    fn us(&mut self, tag: Tag, value: u16) {
        self.element_header(tag, 2);
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn opt_us(&mut self, tag: Tag, value: Option<u16>) {
        if let Some(value) = value {
            self.us(tag, value);
        }
    }

    /// Writes a string padded to even length with `pad`.
    fn padded(
        &mut self,
        tag: Tag,
        value: &[u8],
        pad: u8,
        length_max: usize,
    ) -> Result<(), DimseError> {
        if value.len() > length_max {
            return Err(DimseError::BadElementLength {
                tag,
                command_field: self.command_field,
                length: value.len(),
            });
        }
        let padded_length = value.len().saturating_add(value.len() % 2);
        self.element_header(tag, u32::try_from(padded_length).unwrap_or(u32::MAX));
        self.out.extend_from_slice(value);
        if value.len() % 2 == 1 {
            self.out.push(pad);
        }
        Ok(())
    }

    fn uid(&mut self, tag: Tag, value: &str) -> Result<(), DimseError> {
        check_uid(value.as_bytes()).map_err(|error| DimseError::InvalidUid {
            tag,
            command_field: self.command_field,
            error,
        })?;
        self.padded(tag, value.as_bytes(), 0, UID_LENGTH_MAX)
    }

    fn opt_uid(&mut self, tag: Tag, value: Option<&str>) -> Result<(), DimseError> {
        match value {
            Some(value) => self.uid(tag, value),
            None => Ok(()),
        }
    }

    fn ae(&mut self, tag: Tag, value: &str) -> Result<(), DimseError> {
        let trimmed = value.trim_matches(' ');
        if trimmed.is_empty()
            || !trimmed
                .bytes()
                .all(|byte| (0x20..0x7F).contains(&byte) && byte != b'\\')
        {
            return Err(DimseError::InvalidValue {
                tag,
                command_field: self.command_field,
                reason: "an AE title is 1 to 16 printable ASCII characters without backslash",
            });
        }
        self.padded(tag, trimmed.as_bytes(), b' ', AE_TITLE_LENGTH_MAX)
    }

    /// Command Field, Message ID or Message ID Being Responded To, and
    /// Command Data Set Type: the elements between 0000,0100 and 0000,0800
    /// that every command but the request-specific ones share.
    fn header_common(
        &mut self,
        command_field: CommandField,
        message_id: Option<u16>,
        message_id_being_responded_to: Option<u16>,
        data_set: bool,
    ) {
        self.us(tags::COMMAND_FIELD, command_field.0);
        self.opt_us(tags::MESSAGE_ID, message_id);
        self.opt_us(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            message_id_being_responded_to,
        );
        self.us(
            tags::COMMAND_DATA_SET_TYPE,
            CommandDataSetType::from_present(data_set).0,
        );
    }

    fn status(&mut self, status: Status, detail: &StatusDetail) -> Result<(), DimseError> {
        self.us(tags::STATUS, status.0);
        if !detail.offending_elements.is_empty() {
            let length = detail.offending_elements.len().saturating_mul(4);
            if length > COMMAND_SET_LENGTH_MAX {
                return Err(DimseError::TooLong {
                    length,
                    limit: COMMAND_SET_LENGTH_MAX,
                });
            }
            self.element_header(
                tags::OFFENDING_ELEMENT,
                u32::try_from(length).unwrap_or(u32::MAX),
            );
            for tag in &detail.offending_elements {
                self.out.extend_from_slice(&tag.0.to_le_bytes());
                self.out.extend_from_slice(&tag.1.to_le_bytes());
            }
        }
        if let Some(comment) = &detail.error_comment {
            // Backslash would split the LO into two values.
            if comment
                .bytes()
                .any(|byte| !(0x20..0x7F).contains(&byte) || byte == b'\\')
            {
                return Err(DimseError::InvalidValue {
                    tag: tags::ERROR_COMMENT,
                    command_field: self.command_field,
                    reason: "Error Comment must be printable ASCII without backslash",
                });
            }
            self.padded(tags::ERROR_COMMENT, comment.as_bytes(), b' ', LO_LENGTH_MAX)?;
        }
        self.opt_us(tags::ERROR_ID, detail.error_id);
        Ok(())
    }
}

/// The longest AE title, in characters.
pub const AE_TITLE_LENGTH_MAX: usize = 16;
const LO_LENGTH_MAX: usize = 64;

/// The elements of a command set, as (element number, value) pairs in the
/// order received.
struct Elements<'a> {
    entries: Vec<(u16, &'a [u8])>,
}

impl<'a> Elements<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, DimseError> {
        if bytes.len() > COMMAND_SET_LENGTH_MAX {
            return Err(DimseError::TooLong {
                length: bytes.len(),
                limit: COMMAND_SET_LENGTH_MAX,
            });
        }
        let mut entries: Vec<(u16, &'a [u8])> = Vec::with_capacity(16);
        let mut offset = 0usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some((header, after_header)) = rest.split_first_chunk::<8>() else {
                return Err(DimseError::Truncated {
                    offset,
                    needed: 8,
                    available: rest.len(),
                });
            };
            let [g0, g1, e0, e1, l0, l1, l2, l3] = *header;
            let tag = Tag(u16::from_le_bytes([g0, g1]), u16::from_le_bytes([e0, e1]));
            let length = u32::from_le_bytes([l0, l1, l2, l3]);
            if tag.0 != 0x0000 {
                return Err(DimseError::ElementOutsideCommandGroup { tag });
            }
            let Some(value) = usize::try_from(length)
                .ok()
                .and_then(|length| after_header.get(..length))
            else {
                return Err(DimseError::Truncated {
                    offset,
                    needed: u64::from(length).saturating_add(8),
                    available: rest.len(),
                });
            };
            if entries.is_empty() {
                if tag != tags::COMMAND_GROUP_LENGTH {
                    return Err(DimseError::GroupLengthMissing);
                }
                let [b0, b1, b2, b3] = *value else {
                    return Err(DimseError::BadElementLength {
                        tag,
                        command_field: None,
                        length: value.len(),
                    });
                };
                let declared = u32::from_le_bytes([b0, b1, b2, b3]);
                let actual = bytes.len().saturating_sub(12);
                if usize::try_from(declared).ok() != Some(actual) {
                    return Err(DimseError::GroupLengthMismatch { declared, actual });
                }
            } else if entries.iter().any(|(element, _)| *element == tag.1) {
                return Err(DimseError::DuplicateElement { tag });
            }
            if entries.len() >= COMMAND_ELEMENTS_MAX {
                return Err(DimseError::TooManyElements {
                    limit: COMMAND_ELEMENTS_MAX,
                });
            }
            entries.push((tag.1, value));
            let consumed = value.len().saturating_add(8);
            offset = offset.saturating_add(consumed);
            rest = after_header.get(value.len()..).unwrap_or_default();
        }
        if entries.is_empty() {
            return Err(DimseError::GroupLengthMissing);
        }
        Ok(Self { entries })
    }

    fn get(&self, tag: Tag) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find(|(element, _)| *element == tag.1)
            .map(|(_, value)| *value)
    }

    fn us(&self, tag: Tag, command_field: Option<CommandField>) -> Result<u16, DimseError> {
        self.opt_us(tag, command_field)?
            .ok_or(DimseError::MissingElement { tag, command_field })
    }

    fn opt_us(
        &self,
        tag: Tag,
        command_field: Option<CommandField>,
    ) -> Result<Option<u16>, DimseError> {
        match self.get(tag) {
            None => Ok(None),
            Some(&[b0, b1]) => Ok(Some(u16::from_le_bytes([b0, b1]))),
            Some(value) => Err(DimseError::BadElementLength {
                tag,
                command_field,
                length: value.len(),
            }),
        }
    }
}

/// Typed access to the elements of one command.
struct Fields<'a> {
    elements: Elements<'a>,
    command_field: CommandField,
}

impl Fields<'_> {
    fn cf(&self) -> Option<CommandField> {
        Some(self.command_field)
    }

    fn us(&self, tag: Tag) -> Result<u16, DimseError> {
        self.elements.us(tag, self.cf())
    }

    fn opt_us(&self, tag: Tag) -> Result<Option<u16>, DimseError> {
        self.elements.opt_us(tag, self.cf())
    }

    fn uid(&self, tag: Tag) -> Result<String, DimseError> {
        self.opt_uid(tag)?.ok_or(DimseError::MissingElement {
            tag,
            command_field: self.cf(),
        })
    }

    /// A UID element. Leading zeros and empty components are tolerated (old
    /// devices emit them and refusing them gains nothing); emptiness, length
    /// and characters are checked. Trailing NUL or space padding is removed.
    fn opt_uid(&self, tag: Tag) -> Result<Option<String>, DimseError> {
        let Some(value) = self.elements.get(tag) else {
            return Ok(None);
        };
        let trimmed = trim_end(value, |byte| byte == 0 || byte == b' ');
        match check_uid(trimmed) {
            Ok(uid) => Ok(Some(uid.to_owned())),
            Err(UidError::LeadingZero { .. } | UidError::EmptyComponent { .. }) => {
                Ok(Some(String::from_utf8_lossy(trimmed).into_owned()))
            }
            Err(UidError::TooLong { .. }) => Err(DimseError::BadElementLength {
                tag,
                command_field: self.cf(),
                length: value.len(),
            }),
            Err(error) => Err(DimseError::InvalidUid {
                tag,
                command_field: self.cf(),
                error,
            }),
        }
    }

    fn string(&self, tag: Tag, length_max: usize) -> Result<Option<String>, DimseError> {
        let Some(value) = self.elements.get(tag) else {
            return Ok(None);
        };
        if value.len() > length_max.saturating_add(1) {
            return Err(DimseError::BadElementLength {
                tag,
                command_field: self.cf(),
                length: value.len(),
            });
        }
        let trimmed = trim_end(value, |byte| byte == b' ' || byte == 0);
        let trimmed = trimmed.get(
            trimmed
                .iter()
                .position(|byte| *byte != b' ')
                .unwrap_or(trimmed.len())..,
        );
        let trimmed = trimmed.unwrap_or_default();
        if trimmed.len() > length_max || !trimmed.iter().all(|byte| (0x20..0x7F).contains(byte)) {
            return Err(DimseError::InvalidValue {
                tag,
                command_field: self.cf(),
                reason: "not a printable ASCII string of the allowed length",
            });
        }
        Ok(Some(String::from_utf8_lossy(trimmed).into_owned()))
    }

    fn ae(&self, tag: Tag) -> Result<String, DimseError> {
        match self.string(tag, AE_TITLE_LENGTH_MAX)? {
            Some(title) if !title.is_empty() => Ok(title),
            Some(_) => Err(DimseError::InvalidValue {
                tag,
                command_field: self.cf(),
                reason: "empty AE title",
            }),
            None => Err(DimseError::MissingElement {
                tag,
                command_field: self.cf(),
            }),
        }
    }

    fn priority(&self) -> Result<Priority, DimseError> {
        let value = self.us(tags::PRIORITY)?;
        Priority::from_u16(value).ok_or(DimseError::InvalidValue {
            tag: tags::PRIORITY,
            command_field: self.cf(),
            reason: "priority must be 0, 1 or 2",
        })
    }

    fn data_set(&self) -> Result<bool, DimseError> {
        Ok(CommandDataSetType(self.us(tags::COMMAND_DATA_SET_TYPE)?).is_present())
    }

    fn require_data_set(&self) -> Result<(), DimseError> {
        if self.data_set()? {
            Ok(())
        } else {
            Err(DimseError::DataSetRequired {
                command_field: self.command_field,
            })
        }
    }

    fn forbid_data_set(&self) -> Result<(), DimseError> {
        if self.data_set()? {
            Err(DimseError::UnexpectedDataSet {
                command_field: self.command_field,
            })
        } else {
            Ok(())
        }
    }

    fn status(&self) -> Result<Status, DimseError> {
        Ok(Status(self.us(tags::STATUS)?))
    }

    fn detail(&self) -> Result<StatusDetail, DimseError> {
        let offending_elements = match self.elements.get(tags::OFFENDING_ELEMENT) {
            None => Vec::new(),
            Some(value) => {
                if value.len() % 4 != 0 {
                    return Err(DimseError::BadElementLength {
                        tag: tags::OFFENDING_ELEMENT,
                        command_field: self.cf(),
                        length: value.len(),
                    });
                }
                value
                    .chunks_exact(4)
                    .map(|chunk| match *chunk {
                        [g0, g1, e0, e1] => {
                            Tag(u16::from_le_bytes([g0, g1]), u16::from_le_bytes([e0, e1]))
                        }
                        _ => Tag(0, 0),
                    })
                    .collect()
            }
        };
        // Error Comment is LO: be lenient with its content (it is only logged).
        let error_comment = self.elements.get(tags::ERROR_COMMENT).map(|value| {
            let trimmed = trim_end(value, |byte| byte == b' ' || byte == 0);
            String::from_utf8_lossy(
                trimmed
                    .get(..trimmed.len().min(LO_LENGTH_MAX * 4))
                    .unwrap_or_default(),
            )
            .into_owned()
        });
        Ok(StatusDetail {
            error_comment,
            offending_elements,
            error_id: self.opt_us(tags::ERROR_ID)?,
        })
    }

    fn message_id(&self) -> Result<u16, DimseError> {
        self.us(tags::MESSAGE_ID)
    }

    fn responded_to(&self) -> Result<u16, DimseError> {
        self.us(tags::MESSAGE_ID_BEING_RESPONDED_TO)
    }

    fn command(&self) -> Result<Command, DimseError> {
        let command = match self.command_field {
            CommandField::C_ECHO_RQ => {
                self.forbid_data_set()?;
                Command::CEchoRq(CEchoRq {
                    message_id: self.message_id()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                })
            }
            CommandField::C_ECHO_RSP => {
                self.forbid_data_set()?;
                Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: self.responded_to()?,
                    affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    status: self.status()?,
                    detail: self.detail()?,
                })
            }
            CommandField::C_STORE_RQ => {
                self.require_data_set()?;
                let move_originator = match self.elements.get(tags::MOVE_ORIGINATOR_AE_TITLE) {
                    None => None,
                    // Some SCUs send an empty originator for non-move stores.
                    Some(value) if trim_end(value, |byte| byte == b' ' || byte == 0).is_empty() => {
                        None
                    }
                    Some(_) => Some(MoveOriginator {
                        ae_title: self.ae(tags::MOVE_ORIGINATOR_AE_TITLE)?,
                        message_id: self.us(tags::MOVE_ORIGINATOR_MESSAGE_ID)?,
                    }),
                };
                Command::CStoreRq(CStoreRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    affected_sop_instance_uid: self.uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                    move_originator,
                })
            }
            CommandField::C_STORE_RSP => {
                self.forbid_data_set()?;
                Command::CStoreRsp(CStoreRsp {
                    message_id_being_responded_to: self.responded_to()?,
                    affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    affected_sop_instance_uid: self.opt_uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                    status: self.status()?,
                    detail: self.detail()?,
                })
            }
            CommandField::C_FIND_RQ => {
                self.require_data_set()?;
                Command::CFindRq(CFindRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                })
            }
            CommandField::C_GET_RQ => {
                self.require_data_set()?;
                Command::CGetRq(CGetRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                })
            }
            CommandField::C_FIND_RSP => Command::CFindRsp(CFindRsp {
                message_id_being_responded_to: self.responded_to()?,
                affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                status: self.status()?,
                data_set: self.data_set()?,
                detail: self.detail()?,
            }),
            CommandField::C_MOVE_RQ => {
                self.require_data_set()?;
                Command::CMoveRq(CMoveRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    move_destination: self.ae(tags::MOVE_DESTINATION)?,
                })
            }
            CommandField::C_MOVE_RSP | CommandField::C_GET_RSP => {
                let rsp = CMoveRsp {
                    message_id_being_responded_to: self.responded_to()?,
                    affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    status: self.status()?,
                    sub_operations: SubOperationCounts {
                        remaining: self.opt_us(tags::NUMBER_OF_REMAINING_SUB_OPERATIONS)?,
                        completed: self.opt_us(tags::NUMBER_OF_COMPLETED_SUB_OPERATIONS)?,
                        failed: self.opt_us(tags::NUMBER_OF_FAILED_SUB_OPERATIONS)?,
                        warning: self.opt_us(tags::NUMBER_OF_WARNING_SUB_OPERATIONS)?,
                    },
                    data_set: self.data_set()?,
                    detail: self.detail()?,
                };
                if self.command_field == CommandField::C_MOVE_RSP {
                    Command::CMoveRsp(rsp)
                } else {
                    Command::CGetRsp(rsp)
                }
            }
            CommandField::C_CANCEL_RQ => {
                self.forbid_data_set()?;
                Command::CCancelRq(CCancelRq {
                    message_id_being_responded_to: self.responded_to()?,
                })
            }
            CommandField::N_ACTION_RQ => Command::NActionRq(NActionRq {
                message_id: self.message_id()?,
                requested_sop_class_uid: self.uid(tags::REQUESTED_SOP_CLASS_UID)?,
                requested_sop_instance_uid: self.uid(tags::REQUESTED_SOP_INSTANCE_UID)?,
                action_type_id: self.us(tags::ACTION_TYPE_ID)?,
                data_set: self.data_set()?,
            }),
            CommandField::N_ACTION_RSP => Command::NActionRsp(NActionRsp {
                message_id_being_responded_to: self.responded_to()?,
                affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: self.opt_uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                action_type_id: self.opt_us(tags::ACTION_TYPE_ID)?,
                status: self.status()?,
                data_set: self.data_set()?,
                detail: self.detail()?,
            }),
            CommandField::N_EVENT_REPORT_RQ => Command::NEventReportRq(NEventReportRq {
                message_id: self.message_id()?,
                affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: self.uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                event_type_id: self.us(tags::EVENT_TYPE_ID)?,
                data_set: self.data_set()?,
            }),
            CommandField::N_EVENT_REPORT_RSP => Command::NEventReportRsp(NEventReportRsp {
                message_id_being_responded_to: self.responded_to()?,
                affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: self.opt_uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                event_type_id: self.opt_us(tags::EVENT_TYPE_ID)?,
                status: self.status()?,
                data_set: self.data_set()?,
                detail: self.detail()?,
            }),
            command_field => return Err(DimseError::UnknownCommandField { command_field }),
        };
        Ok(command)
    }
}

/// `bytes` without the trailing bytes for which `strip` holds.
fn trim_end(bytes: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|byte| !strip(*byte))
        .map_or(0, |last| last.saturating_add(1));
    bytes.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests;
