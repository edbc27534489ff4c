//! DIMSE status codes (PS3.7 Annex C) and their categories.
//!
//! A [`Status`] is the raw u16 of (0000,0900); the named constants are the
//! codes Sluice's services send or must understand (C-STORE table 2.3.2-7 of
//! the seed, Storage Commitment, Q/R), and [`Status::category`] sorts any code
//! into success, warning, failure, pending or cancel.

use std::fmt;

/// A DIMSE status code (0000,0900).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u16);

/// The broad class of a status (PS3.7 Annex C.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCategory {
    /// 0000.
    Success,
    /// 0001, 0107, 0116, Bxxx: completed with a warning.
    Warning,
    /// Anything else that is not pending or cancel.
    Failure,
    /// FF00, FF01: more responses follow.
    Pending,
    /// FE00: the operation was cancelled.
    Cancel,
}

impl Status {
    /// 0000 Success.
    pub const SUCCESS: Self = Self(0x0000);
    /// FF00 Pending: matches/sub-operations are continuing.
    pub const PENDING: Self = Self(0xFF00);
    /// FF01 Pending: matches continue, but optional keys were not supported.
    pub const PENDING_WARNING: Self = Self(0xFF01);
    /// FE00 Cancel: the operation was terminated by a C-CANCEL.
    pub const CANCEL: Self = Self(0xFE00);

    /// 0001 Warning: requested optional attributes are not supported.
    pub const OPTIONAL_ATTRIBUTES_NOT_SUPPORTED: Self = Self(0x0001);
    /// 0107 Warning: attribute list error.
    pub const ATTRIBUTE_LIST_ERROR: Self = Self(0x0107);
    /// 0116 Warning: attribute value out of range.
    pub const ATTRIBUTE_VALUE_OUT_OF_RANGE: Self = Self(0x0116);
    /// 0105 Failure: no such attribute.
    pub const NO_SUCH_ATTRIBUTE: Self = Self(0x0105);
    /// 0106 Failure: invalid attribute value.
    pub const INVALID_ATTRIBUTE_VALUE: Self = Self(0x0106);
    /// 0110 Failure: processing failure.
    pub const PROCESSING_FAILURE: Self = Self(0x0110);
    /// 0111 Failure: duplicate SOP instance.
    pub const DUPLICATE_SOP_INSTANCE: Self = Self(0x0111);
    /// 0112 Failure: no such SOP instance (commitment failure reason).
    pub const NO_SUCH_OBJECT_INSTANCE: Self = Self(0x0112);
    /// 0113 Failure: no such event type.
    pub const NO_SUCH_EVENT_TYPE: Self = Self(0x0113);
    /// 0114 Failure: no such argument.
    pub const NO_SUCH_ARGUMENT: Self = Self(0x0114);
    /// 0115 Failure: invalid argument value.
    pub const INVALID_ARGUMENT_VALUE: Self = Self(0x0115);
    /// 0117 Failure: invalid object instance.
    pub const INVALID_OBJECT_INSTANCE: Self = Self(0x0117);
    /// 0118 Failure: no such SOP class.
    pub const NO_SUCH_SOP_CLASS: Self = Self(0x0118);
    /// 0119 Failure: class-instance conflict (commitment failure reason).
    pub const CLASS_INSTANCE_CONFLICT: Self = Self(0x0119);
    /// 0120 Failure: missing attribute.
    pub const MISSING_ATTRIBUTE: Self = Self(0x0120);
    /// 0121 Failure: missing attribute value (Type 1 attribute without value).
    pub const MISSING_ATTRIBUTE_VALUE: Self = Self(0x0121);
    /// 0122 Failure: SOP class not supported (also a commitment failure reason).
    pub const SOP_CLASS_NOT_SUPPORTED: Self = Self(0x0122);
    /// 0123 Failure: no such action.
    pub const NO_SUCH_ACTION: Self = Self(0x0123);
    /// 0124 Failure: refused, not authorized.
    pub const NOT_AUTHORIZED: Self = Self(0x0124);
    /// 0210 Failure: duplicate invocation.
    pub const DUPLICATE_INVOCATION: Self = Self(0x0210);
    /// 0211 Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: Self = Self(0x0211);
    /// 0212 Failure: mistyped argument.
    pub const MISTYPED_ARGUMENT: Self = Self(0x0212);
    /// 0213 Failure: resource limitation.
    pub const RESOURCE_LIMITATION: Self = Self(0x0213);

    /// A700 Refused: out of resources (C-STORE, C-FIND).
    pub const OUT_OF_RESOURCES: Self = Self(0xA700);
    /// A701 Refused: out of resources, unable to calculate number of matches (C-MOVE, C-GET).
    pub const OUT_OF_RESOURCES_MATCHES: Self = Self(0xA701);
    /// A702 Refused: out of resources, unable to perform sub-operations (C-MOVE, C-GET).
    pub const OUT_OF_RESOURCES_SUB_OPERATIONS: Self = Self(0xA702);
    /// A710 Refused: out of memory (seed table 2.3.2-7).
    pub const OUT_OF_MEMORY: Self = Self(0xA710);
    /// A711 Refused: out of disk space, first of the A711..=A717 range the seed uses.
    pub const OUT_OF_DISK_SPACE: Self = Self(0xA711);
    /// A717, last code of the seed's disk-space range.
    pub const OUT_OF_DISK_SPACE_LAST: Self = Self(0xA717);
    /// A801 Refused: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: Self = Self(0xA801);
    /// A900 Error: data set does not match SOP class (C-STORE) / identifier does not match (Q/R).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Self = Self(0xA900);
    /// B000 Warning: coercion of data elements (C-STORE), or sub-operations
    /// complete with one or more failures (C-MOVE, C-GET).
    pub const COERCION_OF_DATA_ELEMENTS: Self = Self(0xB000);
    /// B000 under its C-MOVE/C-GET meaning.
    pub const SUB_OPERATIONS_COMPLETE_WITH_FAILURES: Self = Self(0xB000);
    /// B006 Warning: elements discarded.
    pub const ELEMENTS_DISCARDED: Self = Self(0xB006);
    /// B007 Warning: data set does not match SOP class.
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Self = Self(0xB007);
    /// C000 Error: cannot understand / unable to process.
    pub const CANNOT_UNDERSTAND: Self = Self(0xC000);
    /// C010 Error: cannot be parsed into elements; image class without pixel data (seed).
    pub const CANNOT_PARSE: Self = Self(0xC010);
    /// C011 Error: pixel data length does not match rows/columns/bits/frames (seed).
    pub const PIXEL_DATA_LENGTH_MISMATCH: Self = Self(0xC011);
    /// C012 Error: pixel data cannot be read (seed).
    pub const PIXEL_DATA_UNREADABLE: Self = Self(0xC012);

    /// The category of this status (PS3.7 Annex C).
    pub const fn category(self) -> StatusCategory {
        match self.0 {
            0x0000 => StatusCategory::Success,
            0xFF00 | 0xFF01 => StatusCategory::Pending,
            0xFE00 => StatusCategory::Cancel,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusCategory::Warning,
            _ => StatusCategory::Failure,
        }
    }

    /// Whether this is 0000.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Whether this is FF00 or FF01.
    pub const fn is_pending(self) -> bool {
        matches!(self.category(), StatusCategory::Pending)
    }

    /// Whether this status is one of the seed's out-of-disk-space codes A711..=A717.
    pub const fn is_out_of_disk_space(self) -> bool {
        matches!(self.0, 0xA711..=0xA717)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:04X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(Status::SUCCESS.category(), StatusCategory::Success);
        assert_eq!(Status::PENDING.category(), StatusCategory::Pending);
        assert_eq!(Status::PENDING_WARNING.category(), StatusCategory::Pending);
        assert_eq!(Status::CANCEL.category(), StatusCategory::Cancel);
        for warning in [
            Status(0x0001),
            Status::ATTRIBUTE_LIST_ERROR,
            Status(0x0116),
            Status(0xB000),
            Status(0xB006),
            Status(0xB007),
        ] {
            assert_eq!(warning.category(), StatusCategory::Warning, "{warning}");
        }
        for failure in [
            Status::OUT_OF_RESOURCES,
            Status::OUT_OF_MEMORY,
            Status(0xA714),
            Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            Status::CANNOT_UNDERSTAND,
            Status::CANNOT_PARSE,
            Status::PIXEL_DATA_LENGTH_MISMATCH,
            Status::PIXEL_DATA_UNREADABLE,
            Status::PROCESSING_FAILURE,
            Status::MISSING_ATTRIBUTE,
            Status::MISSING_ATTRIBUTE_VALUE,
            Status::NO_SUCH_OBJECT_INSTANCE,
            Status::CLASS_INSTANCE_CONFLICT,
            Status::SOP_CLASS_NOT_SUPPORTED,
            Status::UNRECOGNIZED_OPERATION,
            Status::MOVE_DESTINATION_UNKNOWN,
        ] {
            assert_eq!(failure.category(), StatusCategory::Failure, "{failure}");
        }
        assert!(Status(0xA711).is_out_of_disk_space() && Status(0xA717).is_out_of_disk_space());
        assert!(!Status(0xA710).is_out_of_disk_space() && !Status(0xA718).is_out_of_disk_space());
        assert_eq!(Status::CANNOT_PARSE.to_string(), "C010");
    }
}
