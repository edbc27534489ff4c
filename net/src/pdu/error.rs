//! Decode and encode errors of the upper-layer codec. Each names what was
//! wrong and where, so a log line can say why a peer was aborted or rejected;
//! the mapping to A-ABORT / A-ASSOCIATE-RJ is done in [`crate::assoc`].

use super::PduType;

/// Why bytes from a peer are not a valid PDU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The PDU-type byte is none of 01H-07H.
    #[error("unknown PDU type {pdu_type:#04x}")]
    UnknownPduType {
        /// The byte received.
        pdu_type: u8,
    },
    /// PDU-length 0xFFFFFFFF, which PS3.8 does not allow.
    #[error("{pdu_type} with PDU-length 0xFFFFFFFF")]
    UndefinedPduLength {
        /// The PDU's type.
        pdu_type: PduType,
    },
    /// A control PDU longer than its configured cap.
    #[error("{pdu_type} PDU-length {length} over the cap of {length_max}")]
    PduTooLong {
        /// The PDU's type.
        pdu_type: PduType,
        /// PDU-length received.
        length: u32,
        /// The configured cap.
        length_max: u32,
    },
    /// A P-DATA-TF longer than the maximum length we announced.
    #[error("P-DATA-TF PDU-length {length} over the negotiated maximum {length_max}")]
    PDataTooLong {
        /// PDU-length received.
        length: u32,
        /// Our announced maximum.
        length_max: u32,
    },
    /// A P-DATA-TF with PDU-length 0 (PS3.8: one or more PDV items).
    #[error("P-DATA-TF without any presentation data value item")]
    PDataEmpty,
    /// A-ASSOCIATE-RJ, A-RELEASE-RQ/RP or A-ABORT whose PDU-length is not 4.
    #[error("{pdu_type} PDU-length {length}, expected {expected}")]
    FixedLengthMismatch {
        /// The PDU's type.
        pdu_type: PduType,
        /// PDU-length received.
        length: u32,
        /// The length PS3.8 fixes.
        expected: u32,
    },
    /// The buffer ends before the PDU-length says the PDU does.
    #[error("{pdu_type} truncated: PDU-length {length}, {available} bytes present")]
    PduTruncated {
        /// The PDU's type.
        pdu_type: PduType,
        /// PDU-length from the header.
        length: u32,
        /// Body bytes present.
        available: usize,
    },
    /// A fixed field runs past the end of its PDU or item.
    #[error("field {field} runs past the end of its PDU or item")]
    FieldTruncated {
        /// Field name, as PS3.8 writes it.
        field: &'static str,
    },
    /// Fewer than 4 bytes left in a parent for an item header.
    #[error("item header truncated in {parent}: {available} bytes left")]
    ItemHeaderTruncated {
        /// What contains the item.
        parent: &'static str,
        /// Bytes left.
        available: usize,
    },
    /// An item or sub-item length runs past the end of its parent.
    #[error("item {item_type:#04x} length {length} runs past its parent {parent} ({available} bytes left)")]
    ItemLengthPastParent {
        /// Item-type byte.
        item_type: u8,
        /// Item-length received.
        length: usize,
        /// Bytes left in the parent after the item header.
        available: usize,
        /// What contains the item.
        parent: &'static str,
    },
    /// An item whose length PS3.7/PS3.8 fixes, or whose inner lengths do not add up.
    #[error(
        "item {item_type:#04x} length {length} does not match its content ({expected} expected)"
    )]
    ItemLengthMismatch {
        /// Item-type byte.
        item_type: u8,
        /// Item-length received.
        length: usize,
        /// Length implied by the content or fixed by the standard.
        expected: usize,
    },
    /// A mandatory item is missing.
    #[error("missing mandatory {item}")]
    MissingItem {
        /// Which item, as PS3.8 names it.
        item: &'static str,
    },
    /// An item appears twice where PS3.8 allows one.
    #[error("duplicate item {item_type:#04x} in {parent}")]
    DuplicateItem {
        /// Item-type byte.
        item_type: u8,
        /// What contains the item.
        parent: &'static str,
    },
    /// An item type that does not belong in its parent.
    #[error("unexpected item {item_type:#04x} in {parent}")]
    UnexpectedItem {
        /// Item-type byte.
        item_type: u8,
        /// What contains the item.
        parent: &'static str,
    },
    /// An AE-title field with bytes outside ISO 646 G0, or all spaces.
    #[error("bad {field}: {reason}")]
    BadAeTitle {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: AeTitleError,
    },
    /// A text field (UID, version name) with bytes outside printable ASCII.
    #[error("field {field} holds a byte outside printable ASCII")]
    BadText {
        /// Which field.
        field: &'static str,
    },
    /// A field with a value PS3.8 does not define.
    #[error("field {field} has undefined value {value}")]
    InvalidFieldValue {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: u8,
    },
    /// Fewer than 6 bytes left in a P-DATA-TF for a PDV item header.
    #[error("PDV item header runs past its P-DATA-TF ({remaining} bytes left)")]
    PdvHeaderPastPdu {
        /// Bytes left in the PDU.
        remaining: u32,
    },
    /// A PDV item-length below 2 (it must cover the context ID and control header).
    #[error("PDV item-length {length} below 2")]
    PdvLengthTooShort {
        /// Item-length received.
        length: u32,
    },
    /// A PDV item-length past the end of its P-DATA-TF.
    #[error("PDV item-length {length} runs past its P-DATA-TF ({remaining} bytes left after the length field)")]
    PdvLengthPastPdu {
        /// Item-length received.
        length: u32,
        /// Bytes left in the PDU after the item-length field.
        remaining: u32,
    },
    /// The streaming decoder was called again after it returned an error.
    #[error("stream decoder called after an earlier error")]
    DecoderFailed,
}

impl DecodeError {
    /// The PDU type the error was found in, when the header was readable.
    pub fn pdu_type(&self) -> Option<PduType> {
        match self {
            DecodeError::UndefinedPduLength { pdu_type }
            | DecodeError::PduTooLong { pdu_type, .. }
            | DecodeError::FixedLengthMismatch { pdu_type, .. }
            | DecodeError::PduTruncated { pdu_type, .. } => Some(*pdu_type),
            DecodeError::PDataTooLong { .. }
            | DecodeError::PDataEmpty
            | DecodeError::PdvHeaderPastPdu { .. }
            | DecodeError::PdvLengthTooShort { .. }
            | DecodeError::PdvLengthPastPdu { .. } => Some(PduType::PDataTf),
            _ => None,
        }
    }
}

/// Why an AE title cannot be encoded or was not valid on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AeTitleError {
    /// Empty or all spaces.
    #[error("empty or all spaces")]
    Empty,
    /// Longer than 16 characters.
    #[error("{length} characters, at most 16")]
    TooLong {
        /// Characters after trimming.
        length: usize,
    },
    /// A control character, backslash or a byte outside ISO 646 G0.
    #[error("byte {byte:#04x} not allowed")]
    BadCharacter {
        /// The offending byte.
        byte: u8,
    },
}

/// Why a PDU cannot be encoded. Encoders leave their output buffer as it was
/// on entry when they fail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An AE title that PS3.8 does not allow.
    #[error("bad {field}: {reason}")]
    BadAeTitle {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: AeTitleError,
    },
    /// A text field with a byte outside printable ASCII.
    #[error("field {field} holds a byte outside printable ASCII")]
    BadText {
        /// Which field.
        field: &'static str,
    },
    /// An item whose content does not fit its 16-bit length field.
    #[error("{item} is {length} bytes, over the 65535 its length field holds")]
    ItemTooLong {
        /// Which item.
        item: &'static str,
        /// Its content length.
        length: usize,
    },
    /// A PDU whose content does not fit its 32-bit length field.
    #[error("PDU body of {length} bytes does not fit PDU-length")]
    PduTooLong {
        /// Its body length.
        length: usize,
    },
    /// An Implementation Version Name outside 1 to 16 characters (PS3.7 D.3.3.2).
    #[error("implementation version name of {length} characters, 1 to 16 allowed")]
    ImplementationVersionNameLength {
        /// Its length.
        length: usize,
    },
    /// An A-ASSOCIATE-RQ without presentation contexts (PS3.8: one or more).
    #[error("A-ASSOCIATE-RQ without presentation contexts")]
    NoPresentationContext,
    /// A P-DATA-TF without presentation data values.
    #[error("P-DATA-TF without presentation data values")]
    NoPresentationDataValue,
    /// The peer's maximum PDU length leaves no room for a PDV value byte.
    #[error("peer maximum PDU length {length_max} too small for any P-DATA-TF")]
    PduLengthMaxTooSmall {
        /// The maximum given.
        length_max: u32,
    },
}
