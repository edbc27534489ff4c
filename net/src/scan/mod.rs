//! The data-set head scanner.
//!
//! Owns finding, in the bytes of one data set as they arrive (C-STORE data
//! PDVs, split anywhere, even inside an element header), the facts the engine
//! needs before it answers a C-STORE: the UID triplet and SOP class, the
//! study-level keys of the index, the image geometry, and where Pixel Data
//! starts and how long it is; and the check that turns those facts into the
//! seed's statuses A900, C010, C011 and C012 ([`check_store`]).
//!
//! Bounded and allocation-light by construction: a 12-byte carry buffer for a
//! split header, a fixed stack of open sequences ([`ScanLimits::depth_max`]),
//! and one small arena for the values of the [`Field`]s of interest, each cut
//! at [`ScanLimits::value_capture_max`]. Every other value, private elements
//! and pixel data included, is skipped by length without being looked at.
//! Defined-length sequences are skipped whole; undefined-length sequences and
//! items are walked header by header (nested, with delimitation items);
//! encapsulated pixel data is walked item header by item header to find its
//! end, never decoded. After pixel data the scanner keeps following element
//! boundaries to the end, so [`HeadScanner::finish`] can tell whether the data
//! set ended cleanly on an element boundary.
//!
//! A deflated transfer syntax cannot be scanned without inflating the stream:
//! [`DatasetEncoding::from_transfer_syntax`] says so with
//! [`NotScannable::Deflated`]; [`DatasetScanner`] (module `deflated`)
//! inflates through a small window into a [`HeadScanner`] and is what the
//! engine uses for every transfer syntax.
//!
//! Laid out by what each part owns: `field` (the attributes kept, [`Field`]),
//! `scanner` (the resumable walk, [`HeadScanner`], and its bounds),
//! `head` (what a scan found, [`DatasetHead`]), `check` (the C-STORE verdict,
//! [`check_store`]), `error` ([`ScanError`]); [`deflated`] (inflation in
//! front of the scanner).

mod check;
pub mod deflated;
mod error;
mod field;
mod head;
mod scanner;

pub use check::{
    check_command, check_store, Leniency, LenientCheck, StoreCheck, StoreRejection, StoreWarnings,
};
pub use deflated::DatasetScanner;
pub use error::{ScanError, TruncatedIn};
pub use field::Field;
pub use head::{DatasetHead, PixelData, PixelDataLength};
pub use scanner::{HeadScanner, ScanLimits, SCAN_DEPTH_MAX};

use crate::uid::{ByteOrder, TransferSyntaxFacts};

/// How the data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetEncoding {
    /// Implicit VR Little Endian.
    ImplicitVrLittleEndian,
    /// Explicit VR Little Endian (and every encapsulated syntax).
    ExplicitVrLittleEndian,
    /// Explicit VR Big Endian (retired).
    ExplicitVrBigEndian,
}

/// Why a data set cannot be head-scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum NotScannable {
    /// The data set is deflated: it must be inflated before anything in it
    /// can be found. The engine decides (store without the head checks, or
    /// inflate first).
    #[error("deflated transfer syntax: the data set must be inflated before it can be scanned")]
    Deflated,
    /// The transfer syntax is not in the catalogue, so its encoding is unknown.
    #[error("unknown transfer syntax")]
    UnknownTransferSyntax,
}

impl DatasetEncoding {
    /// The encoding of a transfer syntax with these facts.
    pub fn from_facts(facts: TransferSyntaxFacts) -> Result<Self, NotScannable> {
        if facts.deflated {
            return Err(NotScannable::Deflated);
        }
        Ok(match (facts.explicit_vr, facts.byte_order) {
            (false, _) => Self::ImplicitVrLittleEndian,
            (true, ByteOrder::Little) => Self::ExplicitVrLittleEndian,
            (true, ByteOrder::Big) => Self::ExplicitVrBigEndian,
        })
    }

    /// The encoding of a catalogued transfer syntax UID.
    pub fn from_transfer_syntax(uid: &str) -> Result<Self, NotScannable> {
        let syntax = crate::uid::transfer_syntax(uid).ok_or(NotScannable::UnknownTransferSyntax)?;
        Self::from_facts(syntax.facts)
    }

    const fn explicit(self) -> bool {
        !matches!(self, Self::ImplicitVrLittleEndian)
    }

    const fn big_endian(self) -> bool {
        matches!(self, Self::ExplicitVrBigEndian)
    }
}

/// Scans a whole data set held in one buffer.
pub fn scan(bytes: &[u8], encoding: DatasetEncoding) -> DatasetHead {
    let mut scanner = HeadScanner::new(encoding);
    // The error is also in the head.
    let _ = scanner.feed(bytes);
    scanner.finish()
}

#[cfg(test)]
mod tests;
