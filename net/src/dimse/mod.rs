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
//! can answer with a status.
//!
//! Laid out like [`crate::pdu`], by what each part owns: `tag` (data element
//! tags and the command group's), `types` (the typed commands and their
//! fields), `encode` and `decode` (the command-set codec, each way), `error`
//! ([`DimseError`]); [`status`] (status codes), [`dataset`] (a bounded codec
//! for tiny data sets: commitment, identifiers), [`commitment`] (the Storage
//! Commitment data sets).

pub mod commitment;
pub mod dataset;
mod decode;
mod encode;
mod error;
pub mod status;
mod tag;
mod types;

pub use error::DimseError;
pub use status::{Status, StatusCategory};
pub use tag::{tags, Tag};
pub use types::*;

/// The longest command set accepted or produced, in bytes. Real command sets
/// are a few hundred bytes; the cap bounds what a peer can make us buffer.
pub const COMMAND_SET_LENGTH_MAX: usize = 64 * 1024;

/// The most elements a command set may hold (PS3.7 defines fewer than 30).
pub const COMMAND_ELEMENTS_MAX: usize = 64;

/// The longest AE title, in characters.
pub const AE_TITLE_LENGTH_MAX: usize = 16;
/// The longest LO value (Error Comment), in characters.
const LO_LENGTH_MAX: usize = 64;

#[cfg(test)]
mod tests;
