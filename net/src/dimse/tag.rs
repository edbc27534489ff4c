//! Data element tags: [`Tag`], and the command group's ([`tags`], PS3.7 Annex E.1).

use std::fmt;

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
