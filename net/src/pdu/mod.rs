//! PS3.8 upper-layer PDUs: the seven PDU types, every A-ASSOCIATE item and
//! user-information sub-item, their encoding and decoding, and the 6-byte
//! header peek that framing starts from.
//!
//! We write our own control-PDU codec instead of using dicom-ul's types:
//! dicom-ul 0.10 has no typed asynchronous-operations-window sub-item nor the
//! user-identity server-response (A-ASSOCIATE-AC) sub-item, and it copies
//! P-DATA values into `Vec`s. dicom-ul stays a dev-dependency: the
//! integration tests decode its bytes with this codec and ours with it.
//!
//! Byte offsets in comments are PS3.8 §9.3 (and PS3.7 Annex D for the
//! user-information sub-items), 1-based as the standard writes them.
//!
//! The zero-copy P-DATA-TF path is [`crate::pdata`]; the owned
//! [`Pdu::PDataTf`] here copies and serves tests and small messages only.
//!
//! Decoding is strict where the standard says "shall" about structure
//! (lengths, mandatory items, AE-title characters) and lenient where it says
//! "shall not be tested" (reserved fields, the echoed AE titles of an
//! A-ASSOCIATE-AC). Every allocation is bounded by the PDU length, which is
//! bounded by [`DecodeLimits`] before any byte of the body is buffered.

mod decode;
mod encode;
mod error;
mod types;

pub use decode::{decode_pdu, decode_pdu_body};
pub use error::{AeTitleError, DecodeError, EncodeError};
pub use types::*;

/// Length of the PDU header: type (1), reserved (1), PDU-length (4).
pub const PDU_HEADER_LENGTH: usize = 6;
/// Length of a PDV item header: item-length (4), presentation-context-ID (1),
/// message control header (1).
pub const PDV_ITEM_HEADER_LENGTH: usize = 6;
/// Length of the fixed AE-title fields of A-ASSOCIATE-RQ/AC.
pub const AE_TITLE_LENGTH: usize = 16;
/// Protocol version 1 (bit 0 set), the only one PS3.8 defines.
pub const PROTOCOL_VERSION: u16 = 0x0001;
/// The DICOM application context name (PS3.7 Annex A.2.1).
pub const DICOM_APPLICATION_CONTEXT_NAME: &str = "1.2.840.10008.3.1.1.1";
/// Default cap on an A-ASSOCIATE-RQ/AC PDU-length: 64 KiB is 128 presentation
/// contexts with a dozen transfer syntaxes each, and more than any real peer sends.
pub const ASSOCIATE_LENGTH_MAX_DEFAULT: u32 = 64 * 1024;
/// Default maximum P-DATA-TF PDU-length we receive: the seed's 16384. The
/// engine overrides it with the value its benchmarks pick.
pub const PDATA_LENGTH_MAX_DEFAULT: u32 = 16_384;
/// PDU-length of A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT (PS3.8 Tables
/// 9-21, 9-24, 9-25, 9-26).
pub const FIXED_BODY_LENGTH: u32 = 4;
/// Length of the fixed part of an A-ASSOCIATE-RQ/AC body, bytes 7-74.
pub const ASSOCIATE_FIXED_LENGTH: usize = 68;

/// The seven PDU types of PS3.8 §9.3.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// A-ASSOCIATE-RQ, 01H.
    AssociateRq = 0x01,
    /// A-ASSOCIATE-AC, 02H.
    AssociateAc = 0x02,
    /// A-ASSOCIATE-RJ, 03H.
    AssociateRj = 0x03,
    /// P-DATA-TF, 04H.
    PDataTf = 0x04,
    /// A-RELEASE-RQ, 05H.
    ReleaseRq = 0x05,
    /// A-RELEASE-RP, 06H.
    ReleaseRp = 0x06,
    /// A-ABORT, 07H.
    Abort = 0x07,
}

impl PduType {
    /// The type for a PDU-type byte, `None` for an unknown one.
    pub fn from_code(code: u8) -> Option<PduType> {
        Some(match code {
            0x01 => PduType::AssociateRq,
            0x02 => PduType::AssociateAc,
            0x03 => PduType::AssociateRj,
            0x04 => PduType::PDataTf,
            0x05 => PduType::ReleaseRq,
            0x06 => PduType::ReleaseRp,
            0x07 => PduType::Abort,
            _ => return None,
        })
    }

    /// The PDU-type byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The standard's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            PduType::AssociateRq => "A-ASSOCIATE-RQ",
            PduType::AssociateAc => "A-ASSOCIATE-AC",
            PduType::AssociateRj => "A-ASSOCIATE-RJ",
            PduType::PDataTf => "P-DATA-TF",
            PduType::ReleaseRq => "A-RELEASE-RQ",
            PduType::ReleaseRp => "A-RELEASE-RP",
            PduType::Abort => "A-ABORT",
        }
    }
}

impl std::fmt::Display for PduType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits applied before a PDU body is buffered or walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest P-DATA-TF PDU-length accepted: the Maximum Length we announced
    /// (PS3.8 D.1). 0 means no limit (PS3.8 semantics), which Sluice never
    /// announces.
    pub pdata_length_max: u32,
    /// Largest A-ASSOCIATE-RQ/AC PDU-length accepted.
    pub associate_length_max: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            pdata_length_max: PDATA_LENGTH_MAX_DEFAULT,
            associate_length_max: ASSOCIATE_LENGTH_MAX_DEFAULT,
        }
    }
}

/// A decoded PDU header (PS3.8 §9.3.1: bytes 1 type, 2 reserved, 3-6 length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduHeader {
    /// The PDU type.
    pub pdu_type: PduType,
    /// The PDU-length field: bytes after the 6-byte header.
    pub pdu_length: u32,
}

impl PduHeader {
    /// Header plus body, in bytes.
    pub fn total_length(&self) -> u64 {
        u64::from(self.pdu_length) + PDU_HEADER_LENGTH as u64
    }

    /// Checks the PDU-length against its type's limit. Called by every
    /// decoder before a body byte is buffered.
    pub fn check_limits(&self, limits: &DecodeLimits) -> Result<(), DecodeError> {
        let length = self.pdu_length;
        match self.pdu_type {
            PduType::PDataTf => {
                if limits.pdata_length_max != 0 && length > limits.pdata_length_max {
                    return Err(DecodeError::PDataTooLong {
                        length,
                        length_max: limits.pdata_length_max,
                    });
                }
                if length == 0 {
                    return Err(DecodeError::PDataEmpty);
                }
            }
            PduType::AssociateRq | PduType::AssociateAc => {
                if length > limits.associate_length_max {
                    return Err(DecodeError::PduTooLong {
                        pdu_type: self.pdu_type,
                        length,
                        length_max: limits.associate_length_max,
                    });
                }
            }
            PduType::AssociateRj | PduType::ReleaseRq | PduType::ReleaseRp | PduType::Abort => {
                if length != FIXED_BODY_LENGTH {
                    return Err(DecodeError::FixedLengthMismatch {
                        pdu_type: self.pdu_type,
                        length,
                        expected: FIXED_BODY_LENGTH,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Reads the 6-byte PDU header at the start of `bytes`.
///
/// `Ok(None)` when fewer than 6 bytes are there (need more bytes: a normal
/// answer). Errors on an unknown PDU type and on PDU-length 0xFFFFFFFF; the
/// per-type length limit is [`PduHeader::check_limits`].
pub fn peek_header(bytes: &[u8]) -> Result<Option<PduHeader>, DecodeError> {
    // PS3.8 §9.3.1: 1 PDU-type, 2 reserved (not tested), 3-6 PDU-length (big endian).
    let [pdu_type, _reserved, l0, l1, l2, l3, ..] = *bytes else {
        return Ok(None);
    };
    let pdu_length = u32::from_be_bytes([l0, l1, l2, l3]);
    let Some(known_type) = PduType::from_code(pdu_type) else {
        return Err(DecodeError::UnknownPduType { pdu_type });
    };
    if pdu_length == u32::MAX {
        // PS3.8 has no "undefined length" for PDUs; this is a hostile or
        // corrupt stream, and would overflow length arithmetic downstream.
        return Err(DecodeError::UndefinedPduLength {
            pdu_type: known_type,
        });
    }
    Ok(Some(PduHeader {
        pdu_type: known_type,
        pdu_length,
    }))
}

/// Checks an AE title for encoding and returns it trimmed of surrounding
/// spaces: 1 to 16 characters of ISO 646 G0 without control characters or
/// backslash (PS3.5 AE value representation), not all spaces (PS3.8 §9.3.2).
pub fn validate_ae_title(title: &str) -> Result<&str, AeTitleError> {
    let trimmed = title.trim_matches(' ');
    if trimmed.is_empty() {
        return Err(AeTitleError::Empty);
    }
    if trimmed.len() > AE_TITLE_LENGTH {
        return Err(AeTitleError::TooLong {
            length: trimmed.len(),
        });
    }
    if let Some(byte) = trimmed
        .bytes()
        .find(|&b| !(0x20..=0x7e).contains(&b) || b == b'\\')
    {
        return Err(AeTitleError::BadCharacter { byte });
    }
    Ok(trimmed)
}
