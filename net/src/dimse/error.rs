//! [`DimseError`]: why a command set cannot be decoded or encoded, with the
//! element and command at fault so the service layer can answer a status.

use super::{tags, CommandField, Tag};
use crate::uid::UidError;

/// Why a command set cannot be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DimseError {
    /// The command set is longer than [`COMMAND_SET_LENGTH_MAX`](super::COMMAND_SET_LENGTH_MAX).
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
    /// More than [`COMMAND_ELEMENTS_MAX`](super::COMMAND_ELEMENTS_MAX) elements.
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
