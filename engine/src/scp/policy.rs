//! The acceptor policy built from the configuration: which AE titles, SOP
//! classes and transfer syntaxes the Storage SCP accepts (requirements §1).

use sluice_net::assoc::{AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter};
use sluice_net::uid;

use crate::config::{Config, SopClassSelection, TransferSyntaxSelection};
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

/// The acceptor policy of the Storage SCP: the called AE title, the
/// optional calling AE allow-list, Verification, and the storage SOP classes
/// with the storage transfer syntaxes. The association limits are checked by
/// the handler (global and per calling AE), not here.
pub fn acceptor_policy(config: &Config) -> AcceptorPolicy {
    let mut policy = AcceptorPolicy::new(
        AeTitleFilter::Only(vec![config.network.ae_title.as_str().to_owned()]),
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
    let transfer_syntaxes = storage_transfer_syntaxes(config);
    match storage_sop_classes(config) {
        Some(classes) => {
            for class in classes {
                policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(
                    class,
                    transfer_syntaxes.clone(),
                ));
            }
        }
        None => policy.any_abstract_syntax_transfer_syntaxes = Some(transfer_syntaxes),
    }
    policy
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
        assert_eq!(
            storage_transfer_syntaxes(&config).len(),
            uid::SEED_TRANSFER_SYNTAXES.len()
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
}
