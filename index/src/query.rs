//! Study queries: parsing C-FIND-style key values and matching study records.
//!
//! Pure code (no LMDB): [`StudyQuery`] holds the key values as they arrive in
//! a query identifier, [`StudyQuery::compile`] checks and parses them, and the
//! compiled form matches an archived study record in place. The reader in
//! `read.rs` picks a table to scan with [`CompiledStudyQuery::plan`].
//!
//! Matching follows PS3.4 C.2.2.2: an absent key constrains nothing; an empty
//! value is universal matching; `*` and `?` are wildcards in string keys; `A-B`,
//! `-B` and `A-` are inclusive ranges in date and time keys; a
//! backslash-separated list of UIDs matches any of them. Person names match
//! case-insensitively (PS3.4 allows it, and users expect it); other keys match
//! exactly. A stored empty value matches only universal matching (and `*`).
//! Modalities in Study takes a backslash list and matches if any query value
//! matches any of the study's modalities.

use crate::error::QueryError;
use crate::keys::{check_uid, INDEXED_VALUE_BYTES_MAX};
use crate::records::{normalize_person_name, normalize_text, ArchivedStudyRecord};

/// A study-level query. `None` means the key is absent (no constraint);
/// `Some("")` is universal matching (the key is requested, anything matches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyQuery {
    /// Patient's Name (PN): single value or wildcard, case-insensitive.
    pub patient_name: Option<String>,
    /// Patient ID (LO): single value or wildcard.
    pub patient_id: Option<String>,
    /// Patient's Birth Date (DA): single value or range.
    pub patient_birth_date: Option<String>,
    /// Patient's Sex (CS): single value or wildcard.
    pub patient_sex: Option<String>,
    /// Study Date (DA): single value or range.
    pub study_date: Option<String>,
    /// Study Time (TM): single value or range.
    pub study_time: Option<String>,
    /// Accession Number (SH): single value or wildcard.
    pub accession_number: Option<String>,
    /// Study ID (SH): single value or wildcard.
    pub study_id: Option<String>,
    /// Study Instance UID (UI): single UID or a backslash-separated list.
    pub study_instance_uid: Option<String>,
    /// Study Description (LO): single value or wildcard.
    pub study_description: Option<String>,
    /// Referring Physician's Name (PN): single value or wildcard, case-insensitive.
    pub referring_physician_name: Option<String>,
    /// Modalities in Study (CS): one or more values (backslash list), wildcards allowed.
    pub modalities_in_study: Option<String>,
}

/// A string key's matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TextMatcher {
    Any,
    Exact(String),
    Wildcard(Vec<char>),
}

/// A date or time key's matcher; values are canonical sortable strings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RangeMatcher {
    Any,
    Exact(String),
    Range {
        low: Option<String>,
        high: Option<String>,
    },
}

/// A compiled, checked study query.
#[derive(Debug, Clone)]
pub struct CompiledStudyQuery {
    patient_name: TextMatcher,
    patient_id: TextMatcher,
    patient_birth_date: RangeMatcher,
    patient_sex: TextMatcher,
    study_date: RangeMatcher,
    study_time: RangeMatcher,
    accession_number: TextMatcher,
    study_id: TextMatcher,
    study_instance_uids: Option<Vec<String>>,
    study_description: TextMatcher,
    referring_physician_name: TextMatcher,
    modalities_in_study: Option<Vec<TextMatcher>>,
}

/// Which table a query reads: the most selective index its keys allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryPlan {
    /// Point lookups in `studies`.
    StudyUids(Vec<String>),
    /// A prefix scan of `study_by_patient_id`.
    PatientIdPrefix(Vec<u8>),
    /// A prefix scan of `study_by_accession`.
    AccessionPrefix(Vec<u8>),
    /// A range scan of `study_by_date` (inclusive bounds, YYYYMMDD).
    StudyDateRange {
        low: Option<String>,
        high: Option<String>,
    },
    /// Every study.
    FullScan,
}

fn text_matcher(value: &Option<String>, person_name: bool) -> TextMatcher {
    let Some(raw) = value else {
        return TextMatcher::Any;
    };
    let value = if person_name {
        normalize_person_name(raw)
    } else {
        normalize_text(raw)
    };
    let value = if person_name {
        value.to_lowercase()
    } else {
        value
    };
    if value.is_empty() || value.chars().all(|character| character == '*') {
        TextMatcher::Any
    } else if value.contains(['*', '?']) {
        TextMatcher::Wildcard(value.chars().collect())
    } else {
        TextMatcher::Exact(value)
    }
}

fn check_digits(
    key: &'static str,
    raw: &str,
    value: &str,
    lengths: &[usize],
) -> Result<(), QueryError> {
    if !lengths.contains(&value.len()) || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(QueryError {
            key,
            value: raw.to_owned(),
            reason: "not a valid date (YYYYMMDD)",
        });
    }
    Ok(())
}

fn date_matcher(key: &'static str, value: &Option<String>) -> Result<RangeMatcher, QueryError> {
    let Some(raw) = value else {
        return Ok(RangeMatcher::Any);
    };
    let text = normalize_text(raw).replace('.', "");
    if text.is_empty() {
        return Ok(RangeMatcher::Any);
    }
    match text.split_once('-') {
        None => {
            check_digits(key, raw, &text, &[8])?;
            Ok(RangeMatcher::Exact(text))
        }
        Some((low, high)) => {
            let low = low.trim();
            let high = high.trim();
            if low.is_empty() && high.is_empty() {
                return Err(QueryError {
                    key,
                    value: raw.clone(),
                    reason: "a range needs a bound",
                });
            }
            for bound in [low, high] {
                if !bound.is_empty() {
                    check_digits(key, raw, bound, &[8])?;
                }
            }
            Ok(RangeMatcher::Range {
                low: (!low.is_empty()).then(|| low.to_owned()),
                high: (!high.is_empty()).then(|| high.to_owned()),
            })
        }
    }
}

/// A TM value as a fixed-width sortable string `HHMMSS.FFFFFF`, missing digits
/// filled with `fill` ('0' for a value or low bound, '9' for a high bound, so
/// that `12` as a high bound includes 12:59:59.999999).
fn canonical_time(value: &str, fill: char) -> Option<String> {
    let (whole, fraction) = match value.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (value, ""),
    };
    let digits_only = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if !matches!(whole.len(), 2 | 4 | 6)
        || !digits_only(whole)
        || fraction.len() > 6
        || !digits_only(fraction)
    {
        return None;
    }
    if !fraction.is_empty() && whole.len() != 6 {
        return None;
    }
    let mut canonical = String::with_capacity(13);
    canonical.push_str(whole);
    while canonical.len() < 6 {
        canonical.push(fill);
    }
    canonical.push('.');
    canonical.push_str(fraction);
    while canonical.len() < 13 {
        canonical.push(fill);
    }
    Some(canonical)
}

fn time_matcher(value: &Option<String>) -> Result<RangeMatcher, QueryError> {
    const KEY: &str = "StudyTime";
    let Some(raw) = value else {
        return Ok(RangeMatcher::Any);
    };
    let text = normalize_text(raw).replace(':', "");
    if text.is_empty() {
        return Ok(RangeMatcher::Any);
    }
    let invalid = || QueryError {
        key: KEY,
        value: raw.clone(),
        reason: "not a valid time (HHMMSS.FFFFFF)",
    };
    match text.split_once('-') {
        None => Ok(RangeMatcher::Exact(
            canonical_time(&text, '0').ok_or_else(invalid)?,
        )),
        Some((low, high)) => {
            let low = low.trim();
            let high = high.trim();
            if low.is_empty() && high.is_empty() {
                return Err(QueryError {
                    key: KEY,
                    value: raw.clone(),
                    reason: "a range needs a bound",
                });
            }
            let low = if low.is_empty() {
                None
            } else {
                Some(canonical_time(low, '0').ok_or_else(invalid)?)
            };
            let high = if high.is_empty() {
                None
            } else {
                Some(canonical_time(high, '9').ok_or_else(invalid)?)
            };
            Ok(RangeMatcher::Range { low, high })
        }
    }
}

impl StudyQuery {
    /// Checks and parses every key.
    pub fn compile(&self) -> Result<CompiledStudyQuery, QueryError> {
        let study_instance_uids = match &self.study_instance_uid {
            None => None,
            Some(raw) => {
                let uids: Vec<String> = raw
                    .split('\\')
                    .map(|uid| uid.trim_matches([' ', '\0']).to_owned())
                    .filter(|uid| !uid.is_empty())
                    .collect();
                for uid in &uids {
                    if uid.contains(['*', '?']) {
                        return Err(QueryError {
                            key: "StudyInstanceUID",
                            value: raw.clone(),
                            reason: "wildcards are not allowed in UIDs",
                        });
                    }
                    if check_uid("StudyInstanceUID", uid).is_err() {
                        return Err(QueryError {
                            key: "StudyInstanceUID",
                            value: raw.clone(),
                            reason: "not a valid UID",
                        });
                    }
                }
                // An empty list is universal matching.
                (!uids.is_empty()).then_some(uids)
            }
        };
        let modalities_in_study = match &self.modalities_in_study {
            None => None,
            Some(raw) => {
                let matchers: Vec<TextMatcher> = raw
                    .split('\\')
                    .map(|value| text_matcher(&Some(value.to_owned()), false))
                    .collect();
                if matchers.contains(&TextMatcher::Any) {
                    None
                } else {
                    Some(matchers)
                }
            }
        };
        Ok(CompiledStudyQuery {
            patient_name: text_matcher(&self.patient_name, true),
            patient_id: text_matcher(&self.patient_id, false),
            patient_birth_date: date_matcher("PatientBirthDate", &self.patient_birth_date)?,
            patient_sex: text_matcher(&self.patient_sex, false),
            study_date: date_matcher("StudyDate", &self.study_date)?,
            study_time: time_matcher(&self.study_time)?,
            accession_number: text_matcher(&self.accession_number, false),
            study_id: text_matcher(&self.study_id, false),
            study_instance_uids,
            study_description: text_matcher(&self.study_description, false),
            referring_physician_name: text_matcher(&self.referring_physician_name, true),
            modalities_in_study,
        })
    }
}

/// Glob matching over characters: `*` any run (also empty), `?` one character.
fn wildcard_matches(pattern: &[char], candidate: &str) -> bool {
    let text: Vec<char> = candidate.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    // Where the last `*` was, and where in the text it currently resumes.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&expected) if expected == '?' || Some(&expected) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|character| *character == '*'))
}

impl TextMatcher {
    fn matches(&self, stored: &str, person_name: bool) -> bool {
        match self {
            TextMatcher::Any => true,
            TextMatcher::Exact(value) => {
                if person_name {
                    stored.to_lowercase() == *value
                } else {
                    stored == value
                }
            }
            TextMatcher::Wildcard(pattern) => {
                if person_name {
                    wildcard_matches(pattern, &stored.to_lowercase())
                } else {
                    wildcard_matches(pattern, stored)
                }
            }
        }
    }

    /// The literal bytes every matching value starts with, if the index may
    /// be used (`exact`: the whole value, so the prefix gets the separator).
    fn index_prefix(&self) -> Option<(String, bool)> {
        match self {
            TextMatcher::Any => None,
            TextMatcher::Exact(value) => {
                (value.len() <= INDEXED_VALUE_BYTES_MAX).then(|| (value.clone(), true))
            }
            TextMatcher::Wildcard(pattern) => {
                let literal: String = pattern
                    .iter()
                    .take_while(|c| **c != '*' && **c != '?')
                    .collect();
                let literal =
                    crate::keys::truncate_to_char_boundary(&literal, INDEXED_VALUE_BYTES_MAX);
                (!literal.is_empty()).then(|| (literal.to_owned(), false))
            }
        }
    }
}

impl RangeMatcher {
    fn matches(&self, stored: &str) -> bool {
        match self {
            RangeMatcher::Any => true,
            RangeMatcher::Exact(value) => !stored.is_empty() && stored == value,
            RangeMatcher::Range { low, high } => {
                !stored.is_empty()
                    && low.as_deref().is_none_or(|low| stored >= low)
                    && high.as_deref().is_none_or(|high| stored <= high)
            }
        }
    }
}

impl CompiledStudyQuery {
    /// Whether the study `study_uid` with record `record` matches every key.
    pub(crate) fn matches(&self, study_uid: &str, record: &ArchivedStudyRecord) -> bool {
        let attributes = &record.attributes;
        if let Some(uids) = &self.study_instance_uids {
            if !uids.iter().any(|uid| uid == study_uid) {
                return false;
            }
        }
        let stored_time = if self.study_time == RangeMatcher::Any {
            None
        } else {
            canonical_time(attributes.study_time.as_str(), '0')
        };
        let time_matches = match &self.study_time {
            RangeMatcher::Any => true,
            matcher => stored_time
                .as_deref()
                .is_some_and(|time| matcher.matches(time)),
        };
        time_matches
            && self
                .patient_name
                .matches(attributes.patient_name.as_str(), true)
            && self
                .patient_id
                .matches(attributes.patient_id.as_str(), false)
            && self
                .patient_birth_date
                .matches(attributes.patient_birth_date.as_str())
            && self
                .patient_sex
                .matches(attributes.patient_sex.as_str(), false)
            && self.study_date.matches(attributes.study_date.as_str())
            && self
                .accession_number
                .matches(attributes.accession_number.as_str(), false)
            && self.study_id.matches(attributes.study_id.as_str(), false)
            && self
                .study_description
                .matches(attributes.study_description.as_str(), false)
            && self
                .referring_physician_name
                .matches(attributes.referring_physician_name.as_str(), true)
            && self.modalities_in_study.as_ref().is_none_or(|matchers| {
                matchers.iter().any(|matcher| {
                    record
                        .modalities_in_study
                        .iter()
                        .any(|modality| matcher.matches(modality.as_str(), false))
                })
            })
    }

    /// The most selective way to find candidates; every candidate is still
    /// checked with [`CompiledStudyQuery::matches`].
    pub(crate) fn plan(&self) -> QueryPlan {
        if let Some(uids) = &self.study_instance_uids {
            return QueryPlan::StudyUids(uids.clone());
        }
        let as_prefix = |(value, exact): (String, bool)| {
            let mut prefix = value.into_bytes();
            if exact {
                prefix.push(crate::keys::SEPARATOR);
            }
            prefix
        };
        let patient_id = self.patient_id.index_prefix();
        let accession = self.accession_number.index_prefix();
        // Exact values first, then literal prefixes of wildcards, then dates.
        if let Some(prefix) = patient_id.clone().filter(|(_, exact)| *exact) {
            return QueryPlan::PatientIdPrefix(as_prefix(prefix));
        }
        if let Some(prefix) = accession.clone().filter(|(_, exact)| *exact) {
            return QueryPlan::AccessionPrefix(as_prefix(prefix));
        }
        if let Some(prefix) = patient_id {
            return QueryPlan::PatientIdPrefix(as_prefix(prefix));
        }
        if let Some(prefix) = accession {
            return QueryPlan::AccessionPrefix(as_prefix(prefix));
        }
        match &self.study_date {
            RangeMatcher::Any => QueryPlan::FullScan,
            RangeMatcher::Exact(date) => QueryPlan::StudyDateRange {
                low: Some(date.clone()),
                high: Some(date.clone()),
            },
            RangeMatcher::Range { low, high } => QueryPlan::StudyDateRange {
                low: low.clone(),
                high: high.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{encode_into, StudyAttributes, StudyRecord};

    fn record(attributes: StudyAttributes, modalities: &[&str]) -> Vec<u8> {
        let record = StudyRecord {
            attributes,
            modalities_in_study: modalities.iter().map(|m| m.to_string()).collect(),
            number_of_series: 1,
            number_of_instances: 1,
        };
        encode_into("studies", &record, Vec::new()).expect("encode")
    }

    fn matches(query: &StudyQuery, uid: &str, bytes: &[u8]) -> bool {
        let archived =
            crate::records::access::<ArchivedStudyRecord>("studies", bytes).expect("access");
        query.compile().expect("compile").matches(uid, archived)
    }

    fn sample() -> Vec<u8> {
        record(
            StudyAttributes {
                patient_name: "Doe^John".into(),
                patient_id: "PID-1".into(),
                patient_birth_date: "19700101".into(),
                patient_sex: "M".into(),
                study_date: "20240115".into(),
                study_time: "093000".into(),
                accession_number: "ACC1".into(),
                study_id: "S1".into(),
                study_description: "CT Chest".into(),
                referring_physician_name: "House^Gregory".into(),
            },
            &["CT", "SR"],
        )
    }

    #[test]
    fn wildcards() {
        let p = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(wildcard_matches(&p("d*"), "doe"));
        assert!(wildcard_matches(&p("*"), ""));
        assert!(wildcard_matches(&p("d?e"), "doe"));
        assert!(!wildcard_matches(&p("d?e"), "de"));
        assert!(wildcard_matches(&p("*o*n"), "doe^john"));
        assert!(!wildcard_matches(&p("*x*"), "doe^john"));
        assert!(wildcard_matches(&p("é?"), "éa"));
        assert!(wildcard_matches(&p("a*b*c"), "aXbYbZc"));
        assert!(!wildcard_matches(&p("a*b*c"), "aXbYbZ"));
    }

    #[test]
    fn keys_match_as_ps3_4_says() {
        let bytes = sample();
        let uid = "1.2.3";
        let q = |f: fn(&mut StudyQuery)| {
            let mut query = StudyQuery::default();
            f(&mut query);
            query
        };
        assert!(matches(&StudyQuery::default(), uid, &bytes));
        assert!(matches(
            &q(|q| q.patient_name = Some("DOE^JOHN".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.patient_name = Some("doe*".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.patient_name = Some("Doe^John^^".into())),
            uid,
            &bytes
        ));
        assert!(!matches(
            &q(|q| q.patient_name = Some("Roe*".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.patient_id = Some("PID-?".into())),
            uid,
            &bytes
        ));
        assert!(
            !matches(&q(|q| q.patient_id = Some("pid-1".into())), uid, &bytes),
            "LO is case-sensitive"
        );
        assert!(matches(
            &q(|q| q.study_date = Some("20240101-20240131".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_date = Some("-20240115".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_date = Some("20240115-".into())),
            uid,
            &bytes
        ));
        assert!(!matches(
            &q(|q| q.study_date = Some("20240116-".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_date = Some("2024.01.15".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_time = Some("09-10".into())),
            uid,
            &bytes
        ));
        assert!(
            matches(&q(|q| q.study_time = Some("0930-0930".into())), uid, &bytes),
            "high bound at its precision"
        );
        assert!(!matches(
            &q(|q| q.study_time = Some("0931-".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_time = Some("093000".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_instance_uid = Some("9.9\\1.2.3".into())),
            uid,
            &bytes
        ));
        assert!(!matches(
            &q(|q| q.study_instance_uid = Some("9.9".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_instance_uid = Some(String::new())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.modalities_in_study = Some("MR\\CT".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.modalities_in_study = Some("S?".into())),
            uid,
            &bytes
        ));
        assert!(!matches(
            &q(|q| q.modalities_in_study = Some("MR".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.referring_physician_name = Some("house*".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.study_description = Some("CT*".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.patient_sex = Some("M".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.patient_birth_date = Some("19690101-19701231".into())),
            uid,
            &bytes
        ));
        assert!(matches(
            &q(|q| q.accession_number = Some(String::new())),
            uid,
            &bytes
        ));
    }

    #[test]
    fn empty_stored_values_match_only_universal() {
        let bytes = record(StudyAttributes::default(), &[]);
        let mut query = StudyQuery {
            study_date: Some("20240101-".into()),
            ..Default::default()
        };
        assert!(!matches(&query, "1", &bytes));
        query.study_date = Some(String::new());
        assert!(matches(&query, "1", &bytes));
        query.patient_name = Some("*".into());
        assert!(matches(&query, "1", &bytes));
        query.patient_name = Some("A*".into());
        assert!(!matches(&query, "1", &bytes));
        let query = StudyQuery {
            modalities_in_study: Some("CT".into()),
            ..Default::default()
        };
        assert!(!matches(&query, "1", &bytes));
    }

    #[test]
    fn bad_keys_are_refused() {
        for (query, key) in [
            (
                StudyQuery {
                    study_date: Some("2024-13".into()),
                    ..Default::default()
                },
                "StudyDate",
            ),
            (
                StudyQuery {
                    study_date: Some("-".into()),
                    ..Default::default()
                },
                "StudyDate",
            ),
            (
                StudyQuery {
                    study_time: Some("9".into()),
                    ..Default::default()
                },
                "StudyTime",
            ),
            (
                StudyQuery {
                    study_instance_uid: Some("1.2*".into()),
                    ..Default::default()
                },
                "StudyInstanceUID",
            ),
            (
                StudyQuery {
                    patient_birth_date: Some("abc".into()),
                    ..Default::default()
                },
                "PatientBirthDate",
            ),
        ] {
            let error = query.compile().expect_err("must be refused");
            assert_eq!(error.key, key);
        }
    }

    #[test]
    fn plans_pick_the_most_selective_index() {
        let plan = |query: StudyQuery| query.compile().expect("compile").plan();
        assert_eq!(
            plan(StudyQuery {
                study_instance_uid: Some("1\\2".into()),
                patient_id: Some("P".into()),
                ..Default::default()
            }),
            QueryPlan::StudyUids(vec!["1".into(), "2".into()])
        );
        assert_eq!(
            plan(StudyQuery {
                patient_id: Some("P".into()),
                study_date: Some("20240101".into()),
                ..Default::default()
            }),
            QueryPlan::PatientIdPrefix(b"P\0".to_vec())
        );
        assert_eq!(
            plan(StudyQuery {
                patient_id: Some("P*".into()),
                accession_number: Some("A".into()),
                ..Default::default()
            }),
            QueryPlan::AccessionPrefix(b"A\0".to_vec())
        );
        assert_eq!(
            plan(StudyQuery {
                patient_id: Some("*P".into()),
                study_date: Some("-20240101".into()),
                ..Default::default()
            }),
            QueryPlan::StudyDateRange {
                low: None,
                high: Some("20240101".into())
            }
        );
        assert_eq!(
            plan(StudyQuery {
                patient_name: Some("D*".into()),
                ..Default::default()
            }),
            QueryPlan::FullScan
        );
    }

    #[test]
    fn canonical_times() {
        assert_eq!(canonical_time("12", '0').as_deref(), Some("120000.000000"));
        assert_eq!(canonical_time("12", '9').as_deref(), Some("129999.999999"));
        assert_eq!(
            canonical_time("123456.5", '0').as_deref(),
            Some("123456.500000")
        );
        assert_eq!(canonical_time("1234.5", '0'), None);
        assert_eq!(canonical_time("12a4", '0'), None);
    }
}
