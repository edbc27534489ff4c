//! The VR of a tag when the encoding does not carry it (Implicit VR), from
//! the standard data dictionary, and the rules of PS3.5 for the VRs the
//! dictionary leaves open ("US or SS", "OB or OW", "US or OW").

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;
use sluice_net::dimse::dataset::Vr;
use sluice_net::dimse::Tag;

/// What the dictionary says of a tag's VR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DictionaryVr {
    /// One VR, whatever the context.
    Exact(Vr),
    /// Pixel Data (7FE0,0010) and the like, "OB or OW": OW when Bits
    /// Allocated is above 8, else OB (PS3.5 §8.1.1, A.2).
    PixelData,
    /// Overlay Data (60xx,3000) and the like, "OB or OW": OW (PS3.5 A.1
    /// gives OW for Implicit VR, which is what the value bytes are).
    OverlayData,
    /// "US or SS": SS when the Pixel Representation in scope is 1, else US
    /// (PS3.5 A.1; LUT and palette descriptors are unsigned in their first
    /// and third values and take US).
    UsOrSs,
    /// "US or OW" (LUT Data): OW, whose 4-byte length holds any LUT.
    UsOrOw,
    /// Not in the dictionary: a private element (other than a private
    /// creator) or an unknown public one. UN (PS3.5 §6.2.2).
    Unknown,
}

/// The dictionary's VR of `tag`.
pub(crate) fn dictionary_vr(tag: Tag) -> DictionaryVr {
    if tag.0 % 2 == 1 {
        // Private. Only the creators (gggg,0010-00FF) have a VR (LO) that
        // does not depend on a private dictionary. The standard dictionary's
        // repeating groups (60xx) must not match odd groups.
        return if (0x0010..=0x00FF).contains(&tag.1) {
            DictionaryVr::Exact(Vr::LO)
        } else {
            DictionaryVr::Unknown
        };
    }
    let Some(entry) = StandardDataDictionary.by_tag(dicom_core::Tag(tag.0, tag.1)) else {
        return DictionaryVr::Unknown;
    };
    match entry.vr() {
        VirtualVr::Exact(vr) => match vr.to_string().as_bytes() {
            [first, second] => DictionaryVr::Exact(Vr([*first, *second])),
            _ => DictionaryVr::Unknown,
        },
        VirtualVr::Px => DictionaryVr::PixelData,
        VirtualVr::Ox => DictionaryVr::OverlayData,
        VirtualVr::Xs => DictionaryVr::UsOrSs,
        VirtualVr::Lt => DictionaryVr::UsOrOw,
        // A context-dependent VR the dictionary may add later: UN keeps
        // the value bytes readable.
        _ => DictionaryVr::Unknown,
    }
}

/// The data-set facts that settle an ambiguous VR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct VrContext {
    /// Bits Allocated (0028,0100) of the innermost data set that has one.
    pub bits_allocated: Option<u16>,
    /// Pixel Representation (0028,0103) of the innermost data set that has one.
    pub pixel_representation: Option<u16>,
}

impl DictionaryVr {
    /// The VR to write in Explicit VR, `context` settling the ambiguous ones.
    pub(crate) fn resolve(self, tag: Tag, context: VrContext) -> Vr {
        match self {
            Self::Exact(vr) => vr,
            Self::PixelData => {
                if context.bits_allocated.is_some_and(|bits| bits <= 8) {
                    Vr::OB
                } else {
                    Vr::OW
                }
            }
            Self::OverlayData | Self::UsOrOw => Vr::OW,
            Self::UsOrSs => {
                // Descriptors: first value unsigned whatever the pixels are.
                let descriptor = matches!(
                    (tag.0, tag.1),
                    (0x0028, 0x1101..=0x1104 | 0x1111..=0x1113 | 0x3002)
                );
                if !descriptor && context.pixel_representation == Some(1) {
                    Vr::SS
                } else {
                    Vr::US
                }
            }
            Self::Unknown => Vr::UN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_answers() {
        assert_eq!(
            dictionary_vr(Tag(0x0010, 0x0010)),
            DictionaryVr::Exact(Vr::PN)
        );
        assert_eq!(
            dictionary_vr(Tag(0x0008, 0x1115)),
            DictionaryVr::Exact(Vr::SQ)
        );
        assert_eq!(dictionary_vr(Tag(0x7FE0, 0x0010)), DictionaryVr::PixelData);
        assert_eq!(
            dictionary_vr(Tag(0x6002, 0x3000)),
            DictionaryVr::OverlayData
        );
        // A private group that the repeating 60xx group would match.
        assert_eq!(dictionary_vr(Tag(0x6001, 0x3000)), DictionaryVr::Unknown);
        assert_eq!(
            dictionary_vr(Tag(0x0029, 0x0010)),
            DictionaryVr::Exact(Vr::LO)
        );
        assert_eq!(dictionary_vr(Tag(0x0029, 0x1010)), DictionaryVr::Unknown);
        assert_eq!(dictionary_vr(Tag(0x0028, 0x0106)), DictionaryVr::UsOrSs);
        assert_eq!(dictionary_vr(Tag(0x0028, 0x3006)), DictionaryVr::UsOrOw);
        assert_eq!(dictionary_vr(Tag(0x0010, 0xFFF0)), DictionaryVr::Unknown);
    }

    #[test]
    fn ambiguous_vrs_resolve_from_context() {
        let signed = VrContext {
            bits_allocated: Some(16),
            pixel_representation: Some(1),
        };
        let bytes = VrContext {
            bits_allocated: Some(8),
            pixel_representation: Some(0),
        };
        let pixel = Tag(0x7FE0, 0x0010);
        assert_eq!(DictionaryVr::PixelData.resolve(pixel, signed), Vr::OW);
        assert_eq!(DictionaryVr::PixelData.resolve(pixel, bytes), Vr::OB);
        assert_eq!(
            DictionaryVr::PixelData.resolve(pixel, VrContext::default()),
            Vr::OW
        );
        let smallest = Tag(0x0028, 0x0106);
        assert_eq!(DictionaryVr::UsOrSs.resolve(smallest, signed), Vr::SS);
        assert_eq!(DictionaryVr::UsOrSs.resolve(smallest, bytes), Vr::US);
        assert_eq!(
            DictionaryVr::UsOrSs.resolve(Tag(0x0028, 0x3002), signed),
            Vr::US
        );
    }
}
