//! The typed DIMSE commands (PS3.7 §9.3, §10.3): one struct per request
//! and response, [`Command`] over them, and the values of their fields
//! (Command Field, Command Data Set Type, Priority, status details,
//! sub-operation counts).

use std::fmt;

use super::{Status, Tag};

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

    pub(super) const fn from_present(present: bool) -> Self {
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
}
