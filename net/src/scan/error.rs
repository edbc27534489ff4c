//! Why a data set cannot be parsed into elements ([`ScanError`]), and where
//! a truncated one ended ([`TruncatedIn`]).

use crate::dimse::Tag;

/// Where the data set ended before it was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TruncatedIn {
    /// Inside an element header.
    Header,
    /// Inside the value of the element with this tag.
    Value(Tag),
    /// Inside an undefined-length sequence or item (no delimiter seen).
    Sequence,
    /// Inside encapsulated pixel data (no sequence delimiter seen).
    PixelData,
    /// A deflated data set whose stream did not reach its final block.
    Deflate,
}

/// Why a data set cannot be parsed into elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An Explicit VR header whose VR is not two uppercase letters.
    #[error(
        "element {tag} at offset {offset} has invalid VR {:?}",
        String::from_utf8_lossy(vr)
    )]
    InvalidVr {
        /// Offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
        /// The two VR bytes.
        vr: [u8; 2],
    },
    /// An undefined length on an element that cannot have one.
    #[error("element {tag} at offset {offset} has an undefined length it cannot have")]
    UndefinedLength {
        /// Offset of the element header.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// A delimitation item where none belongs, or a non-zero delimiter length.
    #[error("unexpected delimiter {tag} at offset {offset}")]
    UnexpectedDelimiter {
        /// Offset.
        offset: u64,
        /// Tag.
        tag: Tag,
    },
    /// Something other than an item inside an undefined-length sequence.
    #[error("expected an item in a sequence at offset {offset}, found {tag}")]
    ExpectedItem {
        /// Offset.
        offset: u64,
        /// Tag found.
        tag: Tag,
    },
    /// Sequences nested deeper than [`ScanLimits::depth_max`](super::ScanLimits::depth_max).
    #[error("sequences nested deeper than {limit} at offset {offset}")]
    TooDeep {
        /// Offset.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// Encapsulated pixel data whose fragment structure is broken (an
    /// element other than an item or the sequence delimiter, or an item of
    /// undefined length).
    #[error("encapsulated pixel data is malformed at offset {offset} ({tag})")]
    PixelDataFragments {
        /// Offset.
        offset: u64,
        /// Tag found.
        tag: Tag,
    },
    /// A deflated data set whose stream cannot be inflated (corrupt, a
    /// preset dictionary, bytes after its end, or beyond the inflation
    /// bound of [`INFLATED_PER_RECEIVED_MAX`](super::deflated::INFLATED_PER_RECEIVED_MAX)).
    #[error("deflated data set cannot be inflated (after {offset} inflated bytes)")]
    Inflate {
        /// Inflated bytes produced before the failure.
        offset: u64,
    },
    /// The data set ended before its last element, sequence or pixel data did.
    #[error("data set truncated at offset {offset} ({inside:?})")]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// Where it was cut.
        inside: TruncatedIn,
    },
}

impl ScanError {
    /// Whether the error lies in the top-level Pixel Data (C012 rather than C010).
    pub const fn in_pixel_data(&self) -> bool {
        matches!(self, Self::PixelDataFragments { .. })
    }
}
