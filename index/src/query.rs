//! Study queries: parsing C-FIND-style key values and matching study records.
//!
//! Pure code (no LMDB): [`StudyQuery`] holds the key values as they arrive in
//! a query identifier, [`StudyQuery::compile`] checks and parses them, and the
//! compiled form matches an archived study record in place. The reader in
//! `read.rs` picks a table to scan with [`CompiledStudyQuery::plan`].
//!
//! The matching rules are sluice-net's (`sluice_net::query::matching`, PS3.4
//! C.2.2.2), one implementation for the index and the Q/R SCP: an absent key
//! constrains nothing; an empty value is universal matching; `*` and `?` are
//! wildcards in string keys; `A-B`, `-B` and `A-` are inclusive ranges in
//! date and time keys; a backslash-separated list of UIDs matches any of
//! them. This API matches person names case-insensitively (users of the CLI
//! and the embedding API expect it; PS3.4 allows it); other keys match
//! exactly. A stored empty value matches only universal matching (and `*`).
//! Modalities in Study takes a backslash list and matches if any query value
//! matches any of the study's modalities.

use sluice_net::dimse::dataset::Vr;
use sluice_net::query::{Constraint, MatchOptions, ValueMatcher};

use crate::error::QueryError;
use crate::keys::INDEXED_VALUE_BYTES_MAX;
use crate::records::ArchivedStudyRecord;

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

/// A compiled, checked study query: one matcher per key.
#[derive(Debug, Clone)]
pub struct CompiledStudyQuery {
    patient_name: ValueMatcher,
    patient_id: ValueMatcher,
    patient_birth_date: ValueMatcher,
    patient_sex: ValueMatcher,
    study_date: ValueMatcher,
    study_time: ValueMatcher,
    accession_number: ValueMatcher,
    study_id: ValueMatcher,
    study_instance_uids: ValueMatcher,
    study_description: ValueMatcher,
    referring_physician_name: ValueMatcher,
    modalities_in_study: ValueMatcher,
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

impl StudyQuery {
    /// Checks and parses every key.
    pub fn compile(&self) -> Result<CompiledStudyQuery, QueryError> {
        let options = MatchOptions {
            person_name_case_insensitive: true,
            ..MatchOptions::default()
        };
        let key = |name: &'static str, vr: Vr, value: &Option<String>| match value {
            None => Ok(ValueMatcher::universal(vr)),
            Some(raw) => ValueMatcher::parse(vr, raw, &options).map_err(|error| QueryError {
                key: name,
                value: raw.clone(),
                reason: error.reason,
            }),
        };
        Ok(CompiledStudyQuery {
            patient_name: key("PatientName", Vr::PN, &self.patient_name)?,
            patient_id: key("PatientID", Vr::LO, &self.patient_id)?,
            patient_birth_date: key("PatientBirthDate", Vr::DA, &self.patient_birth_date)?,
            patient_sex: key("PatientSex", Vr::CS, &self.patient_sex)?,
            study_date: key("StudyDate", Vr::DA, &self.study_date)?,
            study_time: key("StudyTime", Vr::TM, &self.study_time)?,
            accession_number: key("AccessionNumber", Vr::SH, &self.accession_number)?,
            study_id: key("StudyID", Vr::SH, &self.study_id)?,
            study_instance_uids: key("StudyInstanceUID", Vr::UI, &self.study_instance_uid)?,
            study_description: key("StudyDescription", Vr::LO, &self.study_description)?,
            referring_physician_name: key(
                "ReferringPhysicianName",
                Vr::PN,
                &self.referring_physician_name,
            )?,
            modalities_in_study: key("ModalitiesInStudy", Vr::CS, &self.modalities_in_study)?,
        })
    }
}

/// The index key prefix a text constraint allows, if the index may be used:
/// an exact value gets the separator, a wildcard's literal head does not.
fn index_prefix(constraint: Option<Constraint<'_>>) -> Option<(Vec<u8>, bool)> {
    match constraint? {
        Constraint::Equals {
            value,
            case_insensitive: false,
        } if value.len() <= INDEXED_VALUE_BYTES_MAX => {
            let mut prefix = value.as_bytes().to_vec();
            prefix.push(crate::keys::SEPARATOR);
            Some((prefix, true))
        }
        Constraint::Prefix {
            literal,
            case_insensitive: false,
        } => {
            let literal = crate::keys::truncate_to_char_boundary(&literal, INDEXED_VALUE_BYTES_MAX);
            (!literal.is_empty()).then(|| (literal.as_bytes().to_vec(), false))
        }
        _ => None,
    }
}

impl CompiledStudyQuery {
    /// Whether the study `study_uid` with record `record` matches every key.
    pub(crate) fn matches(&self, study_uid: &str, record: &ArchivedStudyRecord) -> bool {
        let attributes = &record.attributes;
        self.study_instance_uids.matches_text(study_uid)
            && self
                .patient_name
                .matches_text(attributes.patient_name.as_str())
            && self.patient_id.matches_text(attributes.patient_id.as_str())
            && self
                .patient_birth_date
                .matches_text(attributes.patient_birth_date.as_str())
            && self
                .patient_sex
                .matches_text(attributes.patient_sex.as_str())
            && self.study_date.matches_text(attributes.study_date.as_str())
            && self.study_time.matches_text(attributes.study_time.as_str())
            && self
                .accession_number
                .matches_text(attributes.accession_number.as_str())
            && self.study_id.matches_text(attributes.study_id.as_str())
            && self
                .study_description
                .matches_text(attributes.study_description.as_str())
            && self
                .referring_physician_name
                .matches_text(attributes.referring_physician_name.as_str())
            && (self.modalities_in_study.is_universal()
                || record
                    .modalities_in_study
                    .iter()
                    .any(|modality| self.modalities_in_study.matches_text(modality.as_str())))
    }

    /// The most selective way to find candidates; every candidate is still
    /// checked with [`CompiledStudyQuery::matches`].
    pub(crate) fn plan(&self) -> QueryPlan {
        match self.study_instance_uids.constraint() {
            Some(Constraint::Equals { value, .. }) => {
                return QueryPlan::StudyUids(vec![value.to_owned()])
            }
            Some(Constraint::OneOf(uids)) => {
                return QueryPlan::StudyUids(uids.into_iter().map(str::to_owned).collect())
            }
            _ => {}
        }
        let patient_id = index_prefix(self.patient_id.constraint());
        let accession = index_prefix(self.accession_number.constraint());
        // Exact values first, then literal prefixes of wildcards, then dates.
        if let Some((prefix, true)) = &patient_id {
            return QueryPlan::PatientIdPrefix(prefix.clone());
        }
        if let Some((prefix, true)) = &accession {
            return QueryPlan::AccessionPrefix(prefix.clone());
        }
        if let Some((prefix, _)) = patient_id {
            return QueryPlan::PatientIdPrefix(prefix);
        }
        if let Some((prefix, _)) = accession {
            return QueryPlan::AccessionPrefix(prefix);
        }
        match self.study_date.constraint() {
            Some(Constraint::Range { low, high }) => QueryPlan::StudyDateRange { low, high },
            _ => QueryPlan::FullScan,
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
}
