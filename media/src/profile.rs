//! The general-purpose media application profiles (PS3.11 Annexes D, H and
//! J) and the decision for each instance: write it as stored, transcode it,
//! or refuse it with the reason (listed to the user; nothing is silently
//! changed).
//!
//! | profile | transfer syntaxes allowed (besides the DICOMDIR's Explicit VR LE) |
//! | --- | --- |
//! | STD-GEN-CD, STD-GEN-DVD-RAM | Explicit VR Little Endian |
//! | STD-GEN-DVD-JPEG, STD-GEN-USB-JPEG | Explicit VR LE, JPEG Baseline (.50), JPEG Extended (.51), JPEG Lossless SV1 (.70) |
//! | STD-GEN-DVD-J2K, STD-GEN-USB-J2K | Explicit VR LE, JPEG 2000 Lossless Only (.90), JPEG 2000 (.91) |
//!
//! Native data in another encoding (Implicit VR Little Endian, Explicit VR
//! Big Endian) is transcoded to Explicit VR Little Endian: same elements,
//! same pixels. Compressed data in a syntax the profile does not allow is
//! refused: Sluice does not decompress or recompress on export. Every profile
//! takes the composite storage SOP classes of the standard (PS3.4); private
//! classes are refused.

use sluice_net::scan::DatasetEncoding;
use sluice_net::uid::{self, ts};

use crate::record::RecordType;

/// A general-purpose application profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// STD-GEN-CD (the seed's).
    GeneralCd,
    /// STD-GEN-DVD-RAM (the seed's).
    GeneralDvdRam,
    /// STD-GEN-DVD-JPEG.
    GeneralDvdJpeg,
    /// STD-GEN-DVD-J2K.
    GeneralDvdJpeg2000,
    /// STD-GEN-USB-JPEG.
    GeneralUsbJpeg,
    /// STD-GEN-USB-J2K.
    GeneralUsbJpeg2000,
}

const UNCOMPRESSED: &[&str] = &[ts::EXPLICIT_VR_LITTLE_ENDIAN];
const JPEG: &[&str] = &[
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::JPEG_BASELINE,
    ts::JPEG_EXTENDED,
    ts::JPEG_LOSSLESS_SV1,
];
const JPEG_2000: &[&str] = &[
    ts::EXPLICIT_VR_LITTLE_ENDIAN,
    ts::JPEG_2000_LOSSLESS,
    ts::JPEG_2000,
];

/// What to do with an instance under a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy the data set as stored (its transfer syntax is allowed).
    AsStored,
    /// Transcode the data set ([`crate::Transcoder`]) from `from` to
    /// Explicit VR Little Endian, and write that syntax in its file meta.
    Transcode {
        /// The stored encoding.
        from: DatasetEncoding,
    },
}

/// Why an instance cannot be written under a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileRefusal {
    /// Not a storage SOP class of the standard (private or unknown).
    #[error("SOP class {0} is not a standard storage SOP class; {1} takes only those")]
    SopClassNotAllowed(String, &'static str),
    /// A standard storage class Sluice writes no directory record for.
    #[error("Sluice writes no directory record for SOP class {0}")]
    NoRecordType(String),
    /// A compressed (or deflated) syntax the profile does not allow.
    #[error("transfer syntax {uid} ({name}) is not allowed by {profile}, and Sluice does not decompress on export{hint}")]
    TransferSyntaxNotAllowed {
        /// The stored syntax.
        uid: String,
        /// Its name.
        name: &'static str,
        /// The profile.
        profile: &'static str,
        /// Which profile would take it, if any.
        hint: &'static str,
    },
    /// A syntax missing from the catalogue.
    #[error("unknown transfer syntax {0}")]
    UnknownTransferSyntax(String),
}

impl Profile {
    /// Every profile.
    pub const ALL: &'static [Profile] = &[
        Self::GeneralCd,
        Self::GeneralDvdRam,
        Self::GeneralDvdJpeg,
        Self::GeneralDvdJpeg2000,
        Self::GeneralUsbJpeg,
        Self::GeneralUsbJpeg2000,
    ];

    /// The profile's identifier (PS3.11).
    pub const fn identifier(self) -> &'static str {
        match self {
            Self::GeneralCd => "STD-GEN-CD",
            Self::GeneralDvdRam => "STD-GEN-DVD-RAM",
            Self::GeneralDvdJpeg => "STD-GEN-DVD-JPEG",
            Self::GeneralDvdJpeg2000 => "STD-GEN-DVD-J2K",
            Self::GeneralUsbJpeg => "STD-GEN-USB-JPEG",
            Self::GeneralUsbJpeg2000 => "STD-GEN-USB-J2K",
        }
    }

    /// The profile of an identifier (case-insensitive).
    pub fn from_identifier(identifier: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|profile| profile.identifier().eq_ignore_ascii_case(identifier))
    }

    /// The transfer syntaxes the profile allows for instances.
    pub const fn transfer_syntaxes(self) -> &'static [&'static str] {
        match self {
            Self::GeneralCd | Self::GeneralDvdRam => UNCOMPRESSED,
            Self::GeneralDvdJpeg | Self::GeneralUsbJpeg => JPEG,
            Self::GeneralDvdJpeg2000 | Self::GeneralUsbJpeg2000 => JPEG_2000,
        }
    }

    /// The decision for an instance of `sop_class_uid` stored in
    /// `transfer_syntax_uid`, with its directory record type.
    pub fn decide(
        self,
        sop_class_uid: &str,
        transfer_syntax_uid: &str,
    ) -> Result<(Action, RecordType), ProfileRefusal> {
        let sop_class_uid = uid::trim_uid_padding(sop_class_uid);
        let transfer_syntax_uid = uid::trim_uid_padding(transfer_syntax_uid);
        let standard = uid::standard_storage_sop_classes()
            .binary_search_by(|class| class.uid.cmp(sop_class_uid))
            .is_ok();
        if !standard {
            return Err(ProfileRefusal::SopClassNotAllowed(
                sop_class_uid.to_owned(),
                self.identifier(),
            ));
        }
        let record_type = RecordType::for_sop_class(sop_class_uid)
            .ok_or_else(|| ProfileRefusal::NoRecordType(sop_class_uid.to_owned()))?;
        if self.transfer_syntaxes().contains(&transfer_syntax_uid) {
            return Ok((Action::AsStored, record_type));
        }
        let syntax = uid::transfer_syntax(transfer_syntax_uid)
            .ok_or_else(|| ProfileRefusal::UnknownTransferSyntax(transfer_syntax_uid.to_owned()))?;
        if !syntax.facts.encapsulated && !syntax.facts.deflated {
            // Native: the transcoder writes Explicit VR Little Endian, which
            // every profile allows.
            let from = DatasetEncoding::from_facts(syntax.facts).map_err(|_| {
                ProfileRefusal::UnknownTransferSyntax(transfer_syntax_uid.to_owned())
            })?;
            debug_assert!(self
                .transfer_syntaxes()
                .contains(&ts::EXPLICIT_VR_LITTLE_ENDIAN));
            return Ok((Action::Transcode { from }, record_type));
        }
        let hint = if JPEG.contains(&transfer_syntax_uid) {
            " (STD-GEN-DVD-JPEG or STD-GEN-USB-JPEG allows it)"
        } else if JPEG_2000.contains(&transfer_syntax_uid) {
            " (STD-GEN-DVD-J2K or STD-GEN-USB-J2K allows it)"
        } else {
            " (no general-purpose profile allows it)"
        };
        Err(ProfileRefusal::TransferSyntaxNotAllowed {
            uid: transfer_syntax_uid.to_owned(),
            name: syntax.name,
            profile: self.identifier(),
            hint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

    #[test]
    fn decisions_by_profile() {
        use Profile::*;
        let as_stored = Ok((Action::AsStored, RecordType::Image));
        let from_implicit = Ok((
            Action::Transcode {
                from: DatasetEncoding::ImplicitVrLittleEndian,
            },
            RecordType::Image,
        ));
        let from_big = Ok((
            Action::Transcode {
                from: DatasetEncoding::ExplicitVrBigEndian,
            },
            RecordType::Image,
        ));
        for profile in Profile::ALL {
            assert_eq!(profile.decide(CT, ts::EXPLICIT_VR_LITTLE_ENDIAN), as_stored);
            assert_eq!(
                profile.decide(CT, ts::IMPLICIT_VR_LITTLE_ENDIAN),
                from_implicit
            );
            assert_eq!(profile.decide(CT, ts::EXPLICIT_VR_BIG_ENDIAN), from_big);
            assert!(matches!(
                profile.decide(CT, ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
                Err(ProfileRefusal::TransferSyntaxNotAllowed { .. })
            ));
            assert!(matches!(
                profile.decide(CT, ts::RLE_LOSSLESS),
                Err(ProfileRefusal::TransferSyntaxNotAllowed { .. })
            ));
            assert!(matches!(
                profile.decide(
                    uid::GE_PRIVATE_3D_MODEL_STORAGE,
                    ts::EXPLICIT_VR_LITTLE_ENDIAN
                ),
                Err(ProfileRefusal::SopClassNotAllowed(..))
            ));
            assert_eq!(
                Profile::from_identifier(profile.identifier()),
                Some(*profile)
            );
        }
        assert_eq!(GeneralDvdJpeg.decide(CT, ts::JPEG_BASELINE), as_stored);
        assert_eq!(GeneralUsbJpeg.decide(CT, ts::JPEG_LOSSLESS_SV1), as_stored);
        assert_eq!(GeneralDvdJpeg2000.decide(CT, ts::JPEG_2000), as_stored);
        assert_eq!(
            GeneralUsbJpeg2000.decide(CT, ts::JPEG_2000_LOSSLESS),
            as_stored
        );
        // JPEG Lossless process 14 (.57) is in no general-purpose profile.
        let refusal = GeneralDvdJpeg.decide(CT, ts::JPEG_LOSSLESS).unwrap_err();
        assert!(refusal.to_string().contains("no general-purpose profile"));
        let refusal = GeneralCd.decide(CT, ts::JPEG_BASELINE).unwrap_err();
        assert!(
            refusal.to_string().contains("STD-GEN-DVD-JPEG"),
            "{refusal}"
        );
        assert!(matches!(
            GeneralCd.decide(CT, "1.2.3.4"),
            Err(ProfileRefusal::UnknownTransferSyntax(_))
        ));
    }
}
