//! Study queries: parsing C-FIND-style key values and matching study records.
//!
//! Pure code (no LMDB): [`StudyQuery`] holds the key values as they arrive in
//! a query identifier, [`StudyQuery::compile`] checks and parses them, and the
//! compiled form matches an archived study record in place.
//! [`StudyQuery::identifier`] makes the same keys a STUDY-level C-FIND
//! identifier, which `ReadTxn::query_studies` answers with the planner and
//! walk the C-FIND SCP uses (`find.rs`: the most selective of the study
//! tables, `study_by_patient_name` for a name wildcard included), so the
//! embedding API and the SCP never plan differently.
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
use sluice_net::dimse::Tag;
use sluice_net::query::model::tags;
use sluice_net::query::{
    IdentifierBuilder, InformationModel, Level, MatchOptions, Operation, Query, QueryContext,
    ValueMatcher,
};

use crate::error::QueryError;
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

/// How this API matches: person names case-insensitively, the rest as the
/// C-FIND SCP's defaults.
const OPTIONS: MatchOptions = MatchOptions {
    person_name_case_insensitive: true,
    empty_value_matching: false,
    multiple_value_matching: false,
};

impl StudyQuery {
    /// Each key's attribute and value, absent keys left out.
    fn keys(&self) -> [(Tag, &Option<String>); 12] {
        [
            (tags::PATIENT_NAME, &self.patient_name),
            (tags::PATIENT_ID, &self.patient_id),
            (tags::PATIENT_BIRTH_DATE, &self.patient_birth_date),
            (tags::PATIENT_SEX, &self.patient_sex),
            (tags::STUDY_DATE, &self.study_date),
            (tags::STUDY_TIME, &self.study_time),
            (tags::ACCESSION_NUMBER, &self.accession_number),
            (tags::STUDY_ID, &self.study_id),
            (tags::STUDY_INSTANCE_UID, &self.study_instance_uid),
            (tags::STUDY_DESCRIPTION, &self.study_description),
            (
                tags::REFERRING_PHYSICIAN_NAME,
                &self.referring_physician_name,
            ),
            (tags::MODALITIES_IN_STUDY, &self.modalities_in_study),
        ]
    }

    /// The query as a STUDY-level C-FIND identifier (Study Root, UTF-8,
    /// person names case-insensitive), checked key by key first
    /// ([`StudyQuery::compile`]'s errors).
    pub fn identifier(&self) -> Result<Query, QueryError> {
        self.compile()?;
        let mut builder = IdentifierBuilder::new(Level::Study).character_set("ISO_IR 192");
        for (tag, value) in self.keys() {
            let Some(value) = value else { continue };
            let mut bytes = value.as_bytes().to_vec();
            // Even lengths (PS3.5 7.1.1); the padding is not part of the value.
            if bytes.len() % 2 == 1 {
                bytes.push(if tag == tags::STUDY_INSTANCE_UID {
                    0
                } else {
                    b' '
                });
            }
            builder = builder.key_bytes(tag, bytes);
        }
        let mut context = QueryContext::new(InformationModel::StudyRoot, Operation::Find);
        context.options = OPTIONS;
        Query::read(builder.dataset(), false, &context).map_err(|error| QueryError {
            key: "identifier",
            value: error.to_string(),
            reason: "the keys do not make a valid C-FIND identifier",
        })
    }

    /// Checks and parses every key.
    pub fn compile(&self) -> Result<CompiledStudyQuery, QueryError> {
        let options = OPTIONS;
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
    fn the_identifier_carries_every_key_as_given() {
        let query = StudyQuery {
            patient_name: Some("doe*".into()),
            patient_id: Some("PID-1".into()),
            study_date: Some("20240101-20240131".into()),
            study_instance_uid: Some("1.2.3\\1.2.45".into()),
            modalities_in_study: Some("CT".into()),
            ..Default::default()
        };
        let identifier = query.identifier().expect("identifier");
        assert_eq!(identifier.level(), Level::Study);
        let value = |tag| identifier.key(tag).map(|key| key.value.as_str());
        assert_eq!(value(tags::PATIENT_NAME), Some("doe*"));
        assert_eq!(
            value(tags::PATIENT_ID),
            Some("PID-1"),
            "odd length padded, then trimmed"
        );
        assert_eq!(value(tags::STUDY_DATE), Some("20240101-20240131"));
        assert_eq!(value(tags::STUDY_INSTANCE_UID), Some("1.2.3\\1.2.45"));
        assert_eq!(value(tags::MODALITIES_IN_STUDY), Some("CT"));
        assert_eq!(
            value(tags::ACCESSION_NUMBER),
            None,
            "absent keys stay absent"
        );
        let error = StudyQuery {
            study_date: Some("2024-01".into()),
            ..Default::default()
        }
        .identifier()
        .expect_err("a bad date is refused");
        assert_eq!(error.key, "StudyDate");
    }
}
