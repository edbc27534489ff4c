//! Kinds of DICOM selections: transfer syntaxes, AE titles and the
//! access rules.

use super::*;

/// Longest explicit transfer syntax list: more than every transfer syntax
/// DICOM defines.
const TRANSFER_SYNTAX_LIST_LENGTH_MAX: usize = 256;

/// `"seed"`, `"all"`, or an explicit list of transfer syntax UIDs
/// (comma-separated on the command line: UIDs contain no commas).
#[derive(Debug)]
pub(crate) struct TransferSyntaxKind;

impl TransferSyntaxKind {
    fn parse_list<'a>(
        uids: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<TransferSyntaxSelection, String> {
        if uids.len() == 0 {
            return Err("the list is empty: no sender could store anything".into());
        }
        if uids.len() > TRANSFER_SYNTAX_LIST_LENGTH_MAX {
            return Err(format!(
                "{} transfer syntaxes is above the maximum {TRANSFER_SYNTAX_LIST_LENGTH_MAX}",
                uids.len()
            ));
        }
        uids.map(|uid| {
            uid.trim()
                .parse::<Uid>()
                .map_err(|e| e.message().to_owned())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TransferSyntaxSelection::List)
    }

    fn named(text: &str) -> Option<TransferSyntaxSelection> {
        match text {
            "seed" => Some(TransferSyntaxSelection::Seed),
            "all" => Some(TransferSyntaxSelection::All),
            _ => None,
        }
    }
}

impl Kind for TransferSyntaxKind {
    type Value = TransferSyntaxSelection;

    fn type_doc(&self) -> String {
        "`\"seed\"`, `\"all\"`, or an array of transfer syntax UIDs".into()
    }

    fn choices(&self) -> Vec<(String, String)> {
        TransferSyntaxSelection::NAMES
            .iter()
            .map(|(name, doc)| ((*name).to_owned(), (*doc).to_owned()))
            .collect()
    }

    fn value_name(&self) -> &'static str {
        "seed|all|UID,UID,..."
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        match value.get_ref() {
            DeValue::String(text) => Self::named(text).ok_or_else(|| {
                SpannedError::at(
                    value,
                    format!("{text:?} is neither \"seed\" nor \"all\"; for explicit transfer syntaxes write an array of UIDs"),
                )
            }),
            DeValue::Array(array) => {
                let mut uids = Vec::with_capacity(array.len().min(TRANSFER_SYNTAX_LIST_LENGTH_MAX));
                for element in array.iter() {
                    uids.push(expect_str(element, "a UID string")?);
                }
                Self::parse_list(uids.into_iter()).map_err(|m| SpannedError::at(value, m))
            }
            other => Err(SpannedError::at(
                value,
                format!(
                    "expected \"seed\", \"all\" or an array of UIDs, found {}",
                    type_with_article(other)
                ),
            )),
        }
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        let text = single(arguments);
        match Self::named(text) {
            Some(selection) => Ok(selection),
            None => {
                let uids: Vec<&str> = text.split(',').collect();
                Self::parse_list(uids.into_iter())
            }
        }
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        match value {
            TransferSyntaxSelection::List(uids) if uids.is_empty() => {
                Err("the list is empty: no sender could store anything".into())
            }
            TransferSyntaxSelection::List(uids) if uids.len() > TRANSFER_SYNTAX_LIST_LENGTH_MAX => {
                Err(format!(
                    "{} transfer syntaxes is above the maximum {TRANSFER_SYNTAX_LIST_LENGTH_MAX}",
                    uids.len()
                ))
            }
            _ => Ok(()),
        }
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        Some(match value {
            TransferSyntaxSelection::Seed => toml_string("seed"),
            TransferSyntaxSelection::All => toml_string("all"),
            TransferSyntaxSelection::List(uids) => {
                let uids: Vec<String> = uids.iter().map(|uid| toml_string(uid.as_str())).collect();
                format!("[{}]", uids.join(", "))
            }
        })
    }
}

/// Most AE titles in an [`AeSelection`] list.
const AE_SELECTION_LENGTH_MAX: usize = 4096;

/// An [`AeSelection`]: `"any"`, `"known"`, `"none"` or an array of AE titles
/// (on the command line, a comma-separated list).
pub(crate) struct AeSelectionKind;

impl AeSelectionKind {
    fn named(text: &str) -> Option<AeSelection> {
        match text {
            "any" => Some(AeSelection::Any),
            "known" => Some(AeSelection::Known),
            "none" => Some(AeSelection::None),
            _ => None,
        }
    }

    fn parse_list<'a>(
        titles: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<AeSelection, String> {
        if titles.len() > AE_SELECTION_LENGTH_MAX {
            return Err(format!(
                "{} AE titles is above the maximum {AE_SELECTION_LENGTH_MAX}",
                titles.len()
            ));
        }
        titles
            .map(|title| title.parse::<AeTitle>().map_err(|e| e.message().to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(AeSelection::List)
    }
}

impl Kind for AeSelectionKind {
    type Value = AeSelection;

    fn type_doc(&self) -> String {
        "`\"any\"`, `\"known\"`, `\"none\"`, or an array of AE titles".into()
    }

    fn choices(&self) -> Vec<(String, String)> {
        AeSelection::NAMES
            .iter()
            .map(|(name, doc)| ((*name).to_owned(), (*doc).to_owned()))
            .collect()
    }

    fn value_name(&self) -> &'static str {
        "any|known|none|AE,AE,..."
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        match value.get_ref() {
            DeValue::String(text) => Self::named(text).ok_or_else(|| {
                SpannedError::at(
                    value,
                    format!("{text:?} is not \"any\", \"known\" or \"none\"; for AE titles write an array"),
                )
            }),
            DeValue::Array(array) => {
                let mut titles = Vec::with_capacity(array.len().min(AE_SELECTION_LENGTH_MAX));
                for element in array.iter() {
                    titles.push(expect_str(element, "an AE title string")?);
                }
                Self::parse_list(titles.into_iter()).map_err(|m| SpannedError::at(value, m))
            }
            other => Err(SpannedError::at(
                value,
                format!(
                    "expected \"any\", \"known\", \"none\" or an array of AE titles, found {}",
                    type_with_article(other)
                ),
            )),
        }
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        let text = single(arguments);
        match Self::named(text) {
            Some(selection) => Ok(selection),
            None => Self::parse_list(text.split(',').collect::<Vec<_>>().into_iter()),
        }
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        match value {
            AeSelection::List(titles) if titles.len() > AE_SELECTION_LENGTH_MAX => Err(format!(
                "{} AE titles is above the maximum {AE_SELECTION_LENGTH_MAX}",
                titles.len()
            )),
            _ => Ok(()),
        }
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        Some(match value {
            AeSelection::Any => toml_string("any"),
            AeSelection::Known => toml_string("known"),
            AeSelection::None => toml_string("none"),
            AeSelection::List(titles) => {
                let titles: Vec<String> = titles.iter().map(|t| toml_string(t.as_str())).collect();
                format!("[{}]", titles.join(", "))
            }
        })
    }
}

/// One rule of the access table: in the file a table
/// `{ calling_ae = "CT_ROOM_1", addresses = ["10.1.2.0/24"], services =
/// ["store", "commitment"] }` (one `[[access.rule]]` block each); on the
/// command line `CT_ROOM_1@10.1.2.0/24=store,commitment`.
#[derive(Debug)]
pub(crate) struct AccessRuleKind;

impl AccessRuleKind {
    fn strings<'a>(
        value: &'a TomlValue<'_>,
        what: &str,
        length_max: usize,
    ) -> Result<Vec<(&'a TomlValue<'a>, &'a str)>, SpannedError> {
        let DeValue::Array(array) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected an array of {what}, found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        if array.len() > length_max {
            return Err(SpannedError::at(
                value,
                format!("{} elements is above the maximum {length_max}", array.len()),
            ));
        }
        array
            .iter()
            .map(|element| expect_str(element, what).map(|text| (element, text)))
            .collect()
    }
}

impl Kind for AccessRuleKind {
    type Value = AccessRule;

    fn type_doc(&self) -> String {
        "table: `calling_ae` (AE title, or `\"*\"` for any), `addresses` (optional array of \
         IP addresses or CIDR networks; absent: any), `services` (array of `\"store\"`, \
         `\"commitment\"`, `\"query\"`, `\"retrieve\"`)"
            .into()
    }

    fn value_name(&self) -> &'static str {
        "AE_TITLE[@ADDRESS,...]=SERVICE,..."
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected a table (calling_ae, addresses, services), found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        let mut calling_ae_title = None;
        let mut addresses = Vec::new();
        let mut services = None;
        for (key, entry) in table.iter() {
            match key.get_ref().as_ref() {
                "calling_ae" => {
                    let text = expect_str(entry, "an AE title string, or \"*\"")?;
                    calling_ae_title = Some(
                        AccessRule::parse_calling_ae(text)
                            .map_err(|error| SpannedError::at(entry, error.message()))?,
                    );
                }
                "addresses" => {
                    for (element, text) in Self::strings(
                        entry,
                        "IP address or network strings",
                        ACCESS_RULE_ADDRESSES_MAX,
                    )? {
                        addresses.push(
                            AccessRule::parse_address(text)
                                .map_err(|error| SpannedError::at(element, error.message()))?,
                        );
                    }
                }
                "services" => {
                    let mut set = AccessServices::default();
                    for (element, text) in
                        Self::strings(entry, "service strings", AccessService::ALL.len())?
                    {
                        set = set.with(
                            text.parse()
                                .map_err(|error: ValueError| SpannedError::at(element, error.message()))?,
                        );
                    }
                    services = Some(set);
                }
                other => {
                    return Err(SpannedError {
                        span: key.span(),
                        message: format!(
                            "unknown key {other:?} in an access rule; the keys are calling_ae, addresses, services"
                        ),
                    })
                }
            }
        }
        let Some(calling_ae_title) = calling_ae_title else {
            return Err(SpannedError::at(
                value,
                "the rule has no calling_ae (an AE title, or \"*\" for any)",
            ));
        };
        let Some(services) = services else {
            return Err(SpannedError::at(
                value,
                "the rule has no services (an array; empty grants Verification only)",
            ));
        };
        Ok(AccessRule {
            calling_ae_title,
            addresses,
            services,
        })
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        single(arguments)
            .parse()
            .map_err(|error: ValueError| error.message().to_owned())
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        if value.addresses.len() > ACCESS_RULE_ADDRESSES_MAX {
            return Err(format!(
                "{} addresses is above the maximum {ACCESS_RULE_ADDRESSES_MAX}",
                value.addresses.len()
            ));
        }
        Ok(())
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        let mut fields = vec![format!(
            "calling_ae = {}",
            toml_string(value.calling_ae_text())
        )];
        if !value.addresses.is_empty() {
            let addresses: Vec<String> = value
                .addresses
                .iter()
                .map(|net| toml_string(&net.to_string()))
                .collect();
            fields.push(format!("addresses = [{}]", addresses.join(", ")));
        }
        let services: Vec<String> = value
            .services
            .iter()
            .map(|service| toml_string(service.name()))
            .collect();
        fields.push(format!("services = [{}]", services.join(", ")));
        Some(format!("{{ {} }}", fields.join(", ")))
    }
}
