//! Access control per remote AE (`access.rule`): which rule admits an
//! association, from its Calling AE Title and the peer's address, and what
//! it grants. The admission refusal (A-ASSOCIATE-RJ 1/1/3) is
//! `handler`'s; the per-request refusals (status 0124) are each
//! service's, through [`Grant::check`].
//!
//! Pure: no sockets, no logging; the callers log with the peer.

use std::net::IpAddr;

use crate::config::{AccessRule, AccessService, AccessServices};
use crate::escape::Escaped;

/// What an admitted association may use, and the rule that said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The rule's number (1-based, in file order); `None`: no access table.
    pub(crate) rule: Option<usize>,
    /// The services besides Verification.
    pub(crate) services: AccessServices,
}

impl Grant {
    /// Everything: no access table is configured, or the association is
    /// one Sluice opened.
    pub(crate) const OPEN: Grant = Grant {
        rule: None,
        services: AccessServices::ALL,
    };

    /// `Ok` when `service` is granted; otherwise why not, in words for the
    /// log line and the response's Error Comment.
    pub(crate) fn check(
        self,
        rules: &[AccessRule],
        service: AccessService,
    ) -> Result<(), NotAuthorized> {
        if self.services.contains(service) {
            return Ok(());
        }
        let rule = self
            .rule
            .and_then(|number| number.checked_sub(1))
            .and_then(|index| rules.get(index));
        debug_assert!(rule.is_some(), "a restricted grant without its rule");
        Err(NotAuthorized {
            service,
            rule: self.rule.unwrap_or(0),
            rule_text: rule.map(ToString::to_string).unwrap_or_default(),
            granted: self.services,
        })
    }
}

/// A request refused by its association's access rule (status 0124).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not authorized: access rule {rule} ({}) grants {granted}, not {}", Escaped(&.rule_text), .service.name())]
pub(crate) struct NotAuthorized {
    /// The service asked for.
    pub(crate) service: AccessService,
    /// The rule's number.
    pub(crate) rule: usize,
    /// The rule, in its command-line form.
    pub(crate) rule_text: String,
    /// What the rule grants.
    pub(crate) granted: AccessServices,
}

/// Admits or refuses an association of `calling_ae_title` from `peer`
/// under `rules`; `Err` is why, for the log line.
pub(crate) fn admit(
    rules: &[AccessRule],
    calling_ae_title: &str,
    peer: Option<IpAddr>,
) -> Result<Grant, String> {
    if rules.is_empty() {
        return Ok(Grant::OPEN);
    }
    let mut named_by = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if !rule.names(calling_ae_title) {
            continue;
        }
        // A peer without a known address passes only rules without addresses.
        let admitted = match peer {
            Some(address) => rule.admits_address(address),
            None => rule.addresses.is_empty(),
        };
        if admitted {
            return Ok(Grant {
                rule: Some(index + 1),
                services: rule.services,
            });
        }
        named_by.push(format!("{} ({})", index + 1, Escaped(&rule.to_string())));
    }
    let peer = peer.map_or_else(|| "an unknown address".to_owned(), |peer| peer.to_string());
    Err(if named_by.is_empty() {
        format!(
            "calling AE title {} matches no access rule (access.rule)",
            Escaped(calling_ae_title)
        )
    } else {
        format!(
            "calling AE title {} from {peer} is not admitted by access rule {}: the address is not listed",
            Escaped(calling_ae_title),
            named_by.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(texts: &[&str]) -> Vec<AccessRule> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn no_rules_admit_everyone_to_everything() {
        assert_eq!(admit(&[], "ANY", None), Ok(Grant::OPEN));
        assert!(Grant::OPEN.check(&[], AccessService::Retrieve).is_ok());
    }

    #[test]
    fn the_first_rule_naming_the_ae_and_address_decides() {
        let rules = rules(&[
            "CT@10.0.0.0/8=store",
            "CT=query",
            "VIEWER@192.168.1.5=query,retrieve",
            "*@127.0.0.1=",
        ]);
        let ten = Some("10.1.1.1".parse().unwrap());
        let other = Some("172.16.0.1".parse().unwrap());
        let grant = admit(&rules, "CT", ten).unwrap();
        assert_eq!(grant.rule, Some(1));
        assert!(grant.check(&rules, AccessService::Store).is_ok());
        let refused = grant.check(&rules, AccessService::Query).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "not authorized: access rule 1 (CT@10.0.0.0/8=store) grants store, not query"
        );
        assert_eq!(admit(&rules, "CT", other).unwrap().rule, Some(2));
        let why = admit(&rules, "VIEWER", other).unwrap_err();
        assert!(
            why.contains("access rule 3") && why.contains("172.16.0.1"),
            "{why}"
        );
        // `*` names every AE, so the address decides.
        let why = admit(&rules, "STRANGER", other).unwrap_err();
        assert!(why.contains("access rule 4 (*@127.0.0.1/32=)"), "{why}");
        let why = admit(&rules[..3], "STRANGER", other).unwrap_err();
        assert!(why.contains("matches no access rule"), "{why}");
        let local = admit(&rules, "STRANGER", Some("127.0.0.1".parse().unwrap())).unwrap();
        assert_eq!(local.rule, Some(4));
        assert!(local.check(&rules, AccessService::Store).is_err());
        assert!(admit(&rules, "VIEWER", None).is_err());
    }
}
