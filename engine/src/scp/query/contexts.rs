//! Which presentation contexts carry a retrieve's instances: what a C-MOVE
//! proposes to its destination, and which accepted context (and whether
//! transcoded) each instance goes out on, for C-MOVE and C-GET alike.
//!
//! The stored transfer syntax comes first: the instance goes out byte for
//! byte. Native data (Implicit or Explicit VR Little Endian, Explicit VR
//! Big Endian as stored) may also go out transcoded into Explicit or
//! Implicit VR Little Endian when the destination takes only those;
//! compressed data is never decompressed. When no context fits, the
//! sub-operation fails saying so.

use sluice_net::assoc::{NegotiatedPresentationContext, ProposedPresentationContext};
use sluice_net::scan::DatasetEncoding;
use sluice_net::uid;

use super::transfer::Mode;
use crate::store::StoredDataset;

/// The most presentation contexts an association may propose (odd IDs
/// 1-255).
const PROPOSED_CONTEXTS_MAX: usize = 128;

/// Whether a transfer syntax is native (what the transcoder reads).
fn native_encoding(transfer_syntax_uid: &str) -> Option<DatasetEncoding> {
    match uid::trim_uid_padding(transfer_syntax_uid) {
        uid::ts::IMPLICIT_VR_LITTLE_ENDIAN => Some(DatasetEncoding::ImplicitVrLittleEndian),
        uid::ts::EXPLICIT_VR_LITTLE_ENDIAN => Some(DatasetEncoding::ExplicitVrLittleEndian),
        uid::ts::EXPLICIT_VR_BIG_ENDIAN => Some(DatasetEncoding::ExplicitVrBigEndian),
        _ => None,
    }
}

/// The context and mode a data set goes out on: the stored transfer
/// syntax if a context for its class took it, else a Little Endian one for
/// native data (Explicit preferred). `get`: only contexts where the
/// requestor took the SCP role.
pub(super) fn choose_context(
    contexts: &[NegotiatedPresentationContext],
    dataset: &StoredDataset,
    get: bool,
) -> Option<(u8, Mode)> {
    let usable = |context: &&NegotiatedPresentationContext| {
        uid::trim_uid_padding(&context.abstract_syntax) == dataset.sop_class_uid
            && (!get || context.requestor_is_scp)
    };
    let stored = uid::trim_uid_padding(&dataset.transfer_syntax_uid);
    if let Some(context) = contexts
        .iter()
        .filter(usable)
        .find(|context| uid::trim_uid_padding(&context.transfer_syntax) == stored)
    {
        return Some((context.id, Mode::AsStored));
    }
    let from = native_encoding(stored)?;
    for (target, to) in [
        (
            uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
            DatasetEncoding::ExplicitVrLittleEndian,
        ),
        (
            uid::ts::IMPLICIT_VR_LITTLE_ENDIAN,
            DatasetEncoding::ImplicitVrLittleEndian,
        ),
    ] {
        if let Some(context) = contexts
            .iter()
            .filter(usable)
            .find(|context| uid::trim_uid_padding(&context.transfer_syntax) == target)
        {
            return Some((context.id, Mode::Transcode { from, to }));
        }
    }
    None
}

/// The presentation contexts a C-MOVE proposes to its destination: for
/// each SOP class, one context per stored transfer syntax, then one with
/// Explicit and Implicit VR Little Endian when some of its data is native
/// (the transcoding fallback). Classes past the 128 contexts an
/// association can carry are left out (their instances fail, said so).
pub(super) fn move_proposal(datasets: &[StoredDataset]) -> Vec<ProposedPresentationContext> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut native_classes: Vec<&str> = Vec::new();
    for dataset in datasets {
        let class = uid::trim_uid_padding(&dataset.sop_class_uid);
        let syntax = uid::trim_uid_padding(&dataset.transfer_syntax_uid);
        if !pairs.contains(&(class, syntax)) {
            pairs.push((class, syntax));
        }
        if native_encoding(syntax).is_some() && !native_classes.contains(&class) {
            native_classes.push(class);
        }
    }
    let mut contexts = Vec::new();
    let mut classes: Vec<&str> = Vec::new();
    for (class, _) in &pairs {
        if !classes.contains(class) {
            classes.push(class);
        }
    }
    for class in classes {
        let mut wanted: Vec<Vec<String>> = pairs
            .iter()
            .filter(|(other, _)| *other == class)
            .map(|(_, syntax)| vec![(*syntax).to_owned()])
            .collect();
        if native_classes.contains(&class) {
            wanted.push(vec![
                uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                uid::ts::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            ]);
        }
        if contexts.len() + wanted.len() > PROPOSED_CONTEXTS_MAX {
            break;
        }
        for transfer_syntaxes in wanted {
            contexts.push(ProposedPresentationContext {
                abstract_syntax: class.to_owned(),
                transfer_syntaxes,
                roles: None,
            });
        }
    }
    contexts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatasetLocation;
    use sluice_index::Triplet;

    fn dataset(class: &str, syntax: &str) -> StoredDataset {
        StoredDataset {
            triplet: Triplet::new("1", "1.1", "1.1.1"),
            sop_class_uid: class.into(),
            transfer_syntax_uid: syntax.into(),
            location: DatasetLocation::File {
                path: "x".into(),
                offset: 0,
                length: 1,
            },
        }
    }

    fn context(
        id: u8,
        class: &str,
        syntax: &str,
        requestor_is_scp: bool,
    ) -> NegotiatedPresentationContext {
        NegotiatedPresentationContext {
            id,
            abstract_syntax: class.into(),
            transfer_syntax: syntax.into(),
            requestor_is_scu: !requestor_is_scp,
            requestor_is_scp,
        }
    }

    #[test]
    fn the_stored_syntax_first_then_native_fallbacks() {
        let ct = uid::CT_IMAGE_STORAGE;
        let contexts = [
            context(1, ct, uid::ts::IMPLICIT_VR_LITTLE_ENDIAN, false),
            context(3, ct, uid::ts::EXPLICIT_VR_LITTLE_ENDIAN, false),
            context(5, ct, "1.2.840.10008.1.2.4.50", false),
        ];
        assert_eq!(
            choose_context(&contexts, &dataset(ct, "1.2.840.10008.1.2.4.50"), false),
            Some((5, Mode::AsStored))
        );
        assert_eq!(
            choose_context(
                &contexts,
                &dataset(ct, uid::ts::IMPLICIT_VR_LITTLE_ENDIAN),
                false
            ),
            Some((1, Mode::AsStored))
        );
        assert_eq!(
            choose_context(
                &contexts[..1],
                &dataset(ct, uid::ts::EXPLICIT_VR_BIG_ENDIAN),
                false
            ),
            Some((
                1,
                Mode::Transcode {
                    from: DatasetEncoding::ExplicitVrBigEndian,
                    to: DatasetEncoding::ImplicitVrLittleEndian
                }
            ))
        );
        // Compressed data is never decompressed.
        assert_eq!(
            choose_context(
                &contexts[..2],
                &dataset(ct, "1.2.840.10008.1.2.4.70"),
                false
            ),
            None
        );
        // C-GET: only contexts where the requestor took the SCP role.
        assert_eq!(
            choose_context(
                &contexts,
                &dataset(ct, uid::ts::IMPLICIT_VR_LITTLE_ENDIAN),
                true
            ),
            None
        );
    }

    #[test]
    fn a_move_proposes_stored_syntaxes_and_native_fallbacks_per_class() {
        let ct = uid::CT_IMAGE_STORAGE;
        let mr = uid::MR_IMAGE_STORAGE;
        let proposal = move_proposal(&[
            dataset(ct, "1.2.840.10008.1.2.4.70"),
            dataset(ct, uid::ts::IMPLICIT_VR_LITTLE_ENDIAN),
            dataset(mr, "1.2.840.10008.1.2.4.90"),
            dataset(ct, uid::ts::IMPLICIT_VR_LITTLE_ENDIAN),
        ]);
        let summary: Vec<(&str, Vec<&str>)> = proposal
            .iter()
            .map(|context| {
                (
                    context.abstract_syntax.as_str(),
                    context
                        .transfer_syntaxes
                        .iter()
                        .map(String::as_str)
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (ct, vec!["1.2.840.10008.1.2.4.70"]),
                (ct, vec![uid::ts::IMPLICIT_VR_LITTLE_ENDIAN]),
                (
                    ct,
                    vec![
                        uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
                        uid::ts::IMPLICIT_VR_LITTLE_ENDIAN
                    ]
                ),
                (mr, vec!["1.2.840.10008.1.2.4.90"]),
            ]
        );
    }
}
