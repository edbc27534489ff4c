//! The acceptor policy built from the configuration: which AE titles, SOP
//! classes and transfer syntaxes the Storage SCP accepts (requirements §1),
//! and the Storage Commitment Push Model SOP class on the AE that serves
//! commitment (the main AE, or a separate one: requirements §3).

use sluice_net::assoc::{AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter};
use sluice_net::pdu::AsynchronousOperationsWindow;
use sluice_net::scan::{Leniency, LenientCheck};
use sluice_net::uid;

use crate::config::{CheckMode, Config, SopClassSelection, TransferSyntaxSelection};
use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// The transfer syntaxes accepted for storage: the selection, restricted to
/// those in the catalogue (whose encoding the head scanner knows; Deflated
/// Explicit VR Little Endian is inflated on the fly for the scan and stored
/// as received).
pub fn storage_transfer_syntaxes(config: &Config) -> Vec<String> {
    let selected: Vec<String> = match &config.accept.transfer_syntaxes {
        TransferSyntaxSelection::Seed => uid::SEED_TRANSFER_SYNTAXES
            .iter()
            .map(|ts| (*ts).to_owned())
            .collect(),
        TransferSyntaxSelection::All => uid::transfer_syntaxes()
            .iter()
            .map(|ts| ts.uid.to_owned())
            .collect(),
        TransferSyntaxSelection::List(list) => {
            list.iter().map(|ts| ts.as_str().to_owned()).collect()
        }
    };
    selected
        .into_iter()
        .filter(|ts| uid::transfer_syntax(ts).is_some())
        .collect()
}

/// The checks of received instances that only warn (`[validation]`).
pub fn leniency(config: &Config) -> Leniency {
    let validation = &config.validation;
    [
        (LenientCheck::UidLeadingZero, validation.uid_leading_zero),
        (LenientCheck::SopUidsMissing, validation.sop_uids_missing),
        (
            LenientCheck::ImagePixelModule,
            validation.image_pixel_module,
        ),
        (
            LenientCheck::PixelDataEncapsulation,
            validation.pixel_data_encapsulation,
        ),
        (
            LenientCheck::PixelDataTrailingBytes,
            validation.pixel_data_trailing_bytes,
        ),
        (LenientCheck::PixelDataShort, validation.pixel_data_short),
        (
            LenientCheck::DeflateTrailingBytes,
            validation.deflate_trailing_bytes,
        ),
    ]
    .into_iter()
    .filter(|(_, mode)| *mode == CheckMode::Lenient)
    .fold(Leniency::STRICT, |leniency, (check, _)| {
        leniency.with(check)
    })
}

/// The storage SOP classes accepted (`None` for "any").
pub fn storage_sop_classes(config: &Config) -> Option<Vec<String>> {
    let mut classes: Vec<String> = match config.accept.sop_classes {
        SopClassSelection::Seed => uid::SEED_STORAGE_SOP_CLASSES
            .iter()
            .map(|class| (*class).to_owned())
            .collect(),
        SopClassSelection::AllStorage => uid::standard_storage_sop_classes()
            .iter()
            .map(|class| class.uid.to_owned())
            .collect(),
        _ => return None,
    };
    for extra in &config.accept.extra_sop_classes {
        if !classes.iter().any(|class| class == extra.as_str()) {
            classes.push(extra.as_str().to_owned());
        }
    }
    Some(classes)
}

/// The Storage Commitment Push Model context: Implicit and Explicit VR
/// Little Endian, and the requestor may take the SCP role too when it asks
/// with role selection (some SCUs propose both roles on the association
/// that carries their N-ACTION, to receive the N-EVENT-REPORT on it).
fn commitment_abstract_syntax() -> AcceptedAbstractSyntax {
    AcceptedAbstractSyntax::new(
        uid::STORAGE_COMMITMENT_PUSH_MODEL,
        [
            uid::ts::IMPLICIT_VR_LITTLE_ENDIAN,
            uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
        ],
    )
    .with_requestor_scp_role()
}

/// What every served AE shares: its called AE title, the optional calling
/// AE allow-list, the PDU limit, Verification.
fn base_policy(config: &Config, ae_title: &str) -> AcceptorPolicy {
    let mut policy = AcceptorPolicy::new(
        AeTitleFilter::Only(vec![ae_title.to_owned()]),
        IMPLEMENTATION_CLASS_UID,
    );
    policy.implementation_version_name = Some(IMPLEMENTATION_VERSION_NAME.to_owned());
    policy.pdu_length_max_receive = config.network.max_pdu_length;
    if !config.network.calling_ae_allow_list.is_empty() {
        policy.calling_ae_titles = AeTitleFilter::Only(
            config
                .network
                .calling_ae_allow_list
                .iter()
                .map(|ae| ae.as_str().to_owned())
                .collect(),
        );
    }
    policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(
        uid::VERIFICATION,
        [
            uid::ts::IMPLICIT_VR_LITTLE_ENDIAN,
            uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
        ],
    ));
    policy
}

/// The six Query/Retrieve SOP classes (Patient Root and Study Root, FIND,
/// MOVE and GET), whose identifiers Sluice reads in Implicit and Explicit
/// VR Little Endian (`query::access` narrows them per calling AE).
fn query_abstract_syntaxes() -> impl Iterator<Item = AcceptedAbstractSyntax> {
    [
        uid::PATIENT_ROOT_QR_FIND,
        uid::PATIENT_ROOT_QR_MOVE,
        uid::PATIENT_ROOT_QR_GET,
        uid::STUDY_ROOT_QR_FIND,
        uid::STUDY_ROOT_QR_MOVE,
        uid::STUDY_ROOT_QR_GET,
    ]
    .into_iter()
    .map(|class| {
        AcceptedAbstractSyntax::new(
            class,
            [
                uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
                uid::ts::IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        )
    })
}

/// The acceptor policy of the main AE (`network.ae_title`): Verification,
/// the storage SOP classes with the storage transfer syntaxes (the
/// requestor may also take the SCP role through role selection: a C-GET
/// SCU receives its instances on them), Storage Commitment unless a
/// separate commitment AE serves it, and Query/Retrieve. The association
/// limits are checked by the handler (global and per calling AE), not here.
pub fn acceptor_policy(config: &Config) -> AcceptorPolicy {
    let mut policy = base_policy(config, config.network.ae_title.as_str());
    let serves_commitment = config
        .served_aes()
        .first()
        .is_some_and(|served| served.commitment);
    if serves_commitment {
        policy.abstract_syntaxes.push(commitment_abstract_syntax());
    }
    let transfer_syntaxes = storage_transfer_syntaxes(config);
    match storage_sop_classes(config) {
        Some(classes) => {
            for class in classes {
                policy.abstract_syntaxes.push(
                    AcceptedAbstractSyntax::new(class, transfer_syntaxes.clone())
                        .with_requestor_scp_role(),
                );
            }
        }
        None => {
            // Any SOP class is stored; the standard's storage classes are
            // listed too, so a C-GET SCU can take the SCP role on them.
            for class in uid::standard_storage_sop_classes() {
                policy.abstract_syntaxes.push(
                    AcceptedAbstractSyntax::new(class.uid, transfer_syntaxes.clone())
                        .with_requestor_scp_role(),
                );
            }
            policy.any_abstract_syntax_transfer_syntaxes = Some(transfer_syntaxes);
        }
    }
    policy.abstract_syntaxes.extend(query_abstract_syntaxes());
    policy.asynchronous_operations_window = get_window(config);
    policy
}

/// The Asynchronous Operations Window answered to a requester that proposes
/// one (PS3.7 D.3.3.3; the AC's fields are what the requester may do): it
/// may invoke one operation at a time (Sluice performs its requests one
/// after the other), and perform up to `query.get_operations_outstanding_max`
/// (the C-STORE sub-operations of a C-GET Sluice keeps outstanding);
/// `net`'s negotiation takes the smaller of each and the requester's.
/// `None` (synchronous, no item answered) when that key is 1.
fn get_window(config: &Config) -> Option<AsynchronousOperationsWindow> {
    let outstanding = config.query.get_operations_outstanding_max;
    (outstanding > 1).then(|| AsynchronousOperationsWindow {
        operations_invoked_max: 1,
        operations_performed_max: u16::try_from(outstanding).unwrap_or(u16::MAX),
    })
}

/// The acceptor policy of a separate Storage Commitment AE
/// (`network.commitment_ae_title` / `network.commitment_port`):
/// Verification and Storage Commitment only. `None` when the main AE serves
/// commitment.
pub fn commitment_policy(config: &Config) -> Option<AcceptorPolicy> {
    let served = config.served_aes();
    let commitment_ae = served
        .iter()
        .find(|served| served.commitment && !served.storage)?;
    let mut policy = base_policy(config, commitment_ae.ae_title.as_str());
    policy.abstract_syntaxes.push(commitment_abstract_syntax());
    Some(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_serves_seed_classes_and_verification() {
        let config = Config::from_args(["sluice"]).unwrap();
        let policy = acceptor_policy(&config);
        assert!(policy
            .abstract_syntaxes
            .iter()
            .any(|a| a.abstract_syntax == uid::VERIFICATION));
        assert!(policy
            .abstract_syntaxes
            .iter()
            .any(|a| a.abstract_syntax == uid::CT_IMAGE_STORAGE));
        assert_eq!(policy.calling_ae_titles, AeTitleFilter::Any);
        assert!(policy
            .abstract_syntaxes
            .iter()
            .any(|a| a.abstract_syntax == uid::STORAGE_COMMITMENT_PUSH_MODEL));
        assert!(commitment_policy(&config).is_none());
        assert_eq!(
            storage_transfer_syntaxes(&config).len(),
            uid::SEED_TRANSFER_SYNTAXES.len()
        );
    }

    /// The window answered: one operation the requester invokes, up to
    /// `query.get_operations_outstanding_max` it performs (a C-GET's
    /// C-STOREs); none at 1.
    #[test]
    fn the_get_window_is_one_invoked_and_the_configured_performed() {
        let policy = acceptor_policy(&Config::from_args(["sluice"]).unwrap());
        assert_eq!(
            policy.asynchronous_operations_window,
            Some(AsynchronousOperationsWindow {
                operations_invoked_max: 1,
                operations_performed_max: 16,
            })
        );
        let config = Config::from_args(["sluice", "--query-get-outstanding-max", "1"]).unwrap();
        assert_eq!(
            acceptor_policy(&config).asynchronous_operations_window,
            None
        );
    }

    #[test]
    fn every_relaxable_check_has_its_option() {
        let mut args = vec!["sluice".to_owned()];
        for option in [
            "uid-leading-zero",
            "sop-uids-missing",
            "image-pixel-module",
            "pixel-data-encapsulation",
            "pixel-data-trailing-bytes",
            "pixel-data-short",
            "deflate-trailing-bytes",
        ] {
            args.push(format!("--validation-{option}"));
            args.push("lenient".to_owned());
        }
        let config = Config::from_args(args).unwrap();
        assert_eq!(leniency(&config), Leniency::ALL);
        // The defaults: lenient where the data is intact, strict where it
        // is incomplete or contradicts itself (docs/design/ingest.md).
        let defaults = leniency(&Config::from_args(["sluice"]).unwrap());
        let lenient: Vec<LenientCheck> = LenientCheck::ALL
            .into_iter()
            .filter(|check| defaults.is_lenient(*check))
            .collect();
        assert_eq!(
            lenient,
            [
                LenientCheck::UidLeadingZero,
                LenientCheck::SopUidsMissing,
                LenientCheck::PixelDataTrailingBytes,
                LenientCheck::DeflateTrailingBytes,
            ]
        );
    }

    #[test]
    fn deflate_is_accepted_under_all_but_not_by_default() {
        let config = Config::from_args(["sluice", "--transfer-syntaxes", "all"]).unwrap();
        let accepted = storage_transfer_syntaxes(&config);
        assert!(accepted
            .iter()
            .any(|ts| ts == uid::ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN));
        let seed = storage_transfer_syntaxes(&Config::from_args(["sluice"]).unwrap());
        assert!(!seed
            .iter()
            .any(|ts| ts == uid::ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN));
        assert!(accepted.len() > uid::SEED_TRANSFER_SYNTAXES.len());
    }

    #[test]
    fn separate_commitment_ae_has_its_own_policy() {
        let config = Config::from_args([
            "sluice",
            "--commitment-ae-title",
            "SCSERVER",
            "--commitment-port",
            "1104",
        ])
        .unwrap();
        let storage = acceptor_policy(&config);
        assert!(!storage
            .abstract_syntaxes
            .iter()
            .any(|a| a.abstract_syntax == uid::STORAGE_COMMITMENT_PUSH_MODEL));
        let commitment = commitment_policy(&config).unwrap();
        assert_eq!(
            commitment.called_ae_titles,
            AeTitleFilter::Only(vec!["SCSERVER".into()])
        );
        assert!(commitment
            .abstract_syntaxes
            .iter()
            .any(|a| a.abstract_syntax == uid::STORAGE_COMMITMENT_PUSH_MODEL));
        assert!(!commitment
            .abstract_syntaxes
            .iter()
            .any(|a| a.abstract_syntax == uid::CT_IMAGE_STORAGE));
    }
}
