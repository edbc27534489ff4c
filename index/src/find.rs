//! Query/Retrieve over the catalogue: the entities of one level (patients,
//! studies, series or instances) that match a decoded request identifier
//! (`sluice_net::query::Query`), found in pages that resume where the last
//! one stopped.
//!
//! The matching rules are net's (`Query::matches_level`); this module only
//! decides where to look and reads the records as [`Candidate`]s:
//!
//! - **Plan.** The outer scan is over studies (or, at PATIENT level, over
//!   `study_by_patient_id` grouped by patient), by the most selective key the
//!   query constrains: a list of Study Instance UIDs (point lookups), an
//!   exact Patient ID or Accession Number, the literal head of a wildcard on
//!   one of them, a Study Date range, or every study. At IMAGE level a list
//!   of SOP Instance UIDs is looked up directly (relational retrieval names
//!   instances alone). Inside a study, series (and a series' instances) are
//!   listed in UID order, or looked up when their UIDs are given.
//! - **Check.** Every candidate is matched against the keys of its own level
//!   and of every level above (the patient's and study's keys against the
//!   study record, which holds them), so a loose plan is never wrong.
//! - **Pages.** A page stops after `matches_max` matches or `scanned_max`
//!   candidates, whichever comes first, and returns a [`FindResume`]: the
//!   position of the last candidate looked at. The next page starts right
//!   after it in a new read transaction, so a long query never holds a
//!   reader (or the caller's thread) for long, and never repeats or skips an
//!   entity that stayed in the index. Entities added meanwhile may or may
//!   not be seen, as in any cursor over a live catalogue.
//!
//! Computed keys (PS3.4 C.3-1): Number of Patient/Study/Series Related
//! Studies/Series/Instances and Modalities in Study come from the records'
//! counts; SOP Classes in Study is not kept and is reported unsupported.

use std::borrow::Cow;
use std::ops::Bound;

use sluice_net::dimse::Tag;
use sluice_net::query::model::tags;
use sluice_net::query::{fold_person_name, Attribute, Candidate, Constraint, Level, Query};

use crate::error::IndexError;
use crate::keys::{
    check_uid, patient_name_values, prefix_of, secondary_key, series_key, split_key,
    study_of_secondary_key, INDEXED_VALUE_BYTES_MAX, SEPARATOR,
};
use crate::read::{InstanceEntry, ReadTxn};
use crate::records::{access, ArchivedStudyRecord, SeriesRecord, StudyRecord, Triplet};
use crate::tables::Table;

/// How much one page may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindBudget {
    /// Stop after this many matches.
    pub matches_max: usize,
    /// Stop after looking at this many candidates (matching or not).
    pub scanned_max: usize,
}

/// Where the next page starts: just after the candidate a page looked at
/// last. Opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindResume {
    /// The outer scan's key of the study (or patient) being looked at.
    outer: Vec<u8>,
    /// Inside it: the last series looked at (series and image levels).
    series: Option<String>,
    /// Inside that series: the last instance looked at (image level).
    sop: Option<String>,
    /// The outer entity itself was finished (look at the next one).
    outer_done: bool,
}

/// One page of matches.
#[derive(Debug, Clone, Default)]
pub struct FindPage {
    /// The matches, in the scan's order.
    pub matches: Vec<FindMatch>,
    /// Where the next page starts; `None` when the scan is complete.
    pub resume: Option<FindResume>,
    /// Candidates looked at.
    pub scanned: usize,
}

/// A patient, as the studies filed under one Patient ID describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientSummary {
    /// Patient ID (possibly empty).
    pub patient_id: String,
    /// The first study's record (it holds the patient's attributes).
    pub first_study: StudyRecord,
    /// Number of Patient Related Studies.
    pub studies: u64,
    /// Number of Patient Related Series.
    pub series: u64,
    /// Number of Patient Related Instances.
    pub instances: u64,
}

/// One matching entity, with the records above it (they hold the keys of
/// the higher levels a response returns).
#[derive(Debug, Clone, PartialEq)]
pub struct FindMatch {
    /// The level of the entity.
    pub level: Level,
    /// At PATIENT level: the patient.
    pub patient: Option<PatientSummary>,
    /// Study Instance UID and record (STUDY level and below).
    pub study: Option<(String, StudyRecord)>,
    /// Series Instance UID and record (SERIES and IMAGE levels).
    pub series: Option<(String, SeriesRecord)>,
    /// The instance (IMAGE level).
    pub instance: Option<InstanceEntry>,
}

impl FindMatch {
    /// Study Instance UID, when the entity is a study or below one.
    pub fn study_instance_uid(&self) -> Option<&str> {
        self.study.as_ref().map(|(uid, _)| uid.as_str())
    }

    /// Series Instance UID, when the entity is a series or an instance.
    pub fn series_instance_uid(&self) -> Option<&str> {
        self.series.as_ref().map(|(uid, _)| uid.as_str())
    }
}

fn text(value: &str) -> Attribute<'_> {
    if value.is_empty() {
        Attribute::Empty
    } else {
        Attribute::Text(Cow::Borrowed(value))
    }
}

fn owned_text(value: String) -> Attribute<'static> {
    if value.is_empty() {
        Attribute::Empty
    } else {
        Attribute::Text(Cow::Owned(value))
    }
}

fn number(value: Option<i32>) -> Attribute<'static> {
    value.map_or(Attribute::Empty, |value| owned_text(value.to_string()))
}

/// The patient's and study's attributes of a study record, for any shape of
/// it (archived in place, or owned).
trait StudyFields {
    fn field(&self, tag: Tag) -> Option<Attribute<'_>>;
}

macro_rules! study_fields {
    ($record:expr, $tag:expr) => {{
        let record = $record;
        let attributes = &record.attributes;
        match $tag {
            tags::PATIENT_NAME => Some(text(&attributes.patient_name)),
            tags::PATIENT_ID => Some(text(&attributes.patient_id)),
            tags::PATIENT_BIRTH_DATE => Some(text(&attributes.patient_birth_date)),
            tags::PATIENT_SEX => Some(text(&attributes.patient_sex)),
            tags::STUDY_DATE => Some(text(&attributes.study_date)),
            tags::STUDY_TIME => Some(text(&attributes.study_time)),
            tags::ACCESSION_NUMBER => Some(text(&attributes.accession_number)),
            tags::STUDY_ID => Some(text(&attributes.study_id)),
            tags::STUDY_DESCRIPTION => Some(text(&attributes.study_description)),
            tags::REFERRING_PHYSICIAN_NAME => Some(text(&attributes.referring_physician_name)),
            tags::MODALITIES_IN_STUDY => {
                let joined = record
                    .modalities_in_study
                    .iter()
                    .map(|modality| modality.as_ref())
                    .collect::<Vec<&str>>()
                    .join("\\");
                Some(owned_text(joined))
            }
            tags::NUMBER_OF_STUDY_RELATED_SERIES => {
                Some(owned_text(u32::from(record.number_of_series).to_string()))
            }
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES => Some(owned_text(
                u32::from(record.number_of_instances).to_string(),
            )),
            _ => None,
        }
    }};
}

impl StudyFields for ArchivedStudyRecord {
    fn field(&self, tag: Tag) -> Option<Attribute<'_>> {
        study_fields!(self, tag)
    }
}

impl StudyFields for StudyRecord {
    fn field(&self, tag: Tag) -> Option<Attribute<'_>> {
        study_fields!(self, tag)
    }
}

/// A study (and its patient) as a candidate.
struct StudyCandidate<'a, R: StudyFields + ?Sized> {
    uid: &'a str,
    record: &'a R,
}

impl<R: StudyFields + ?Sized> Candidate for StudyCandidate<'_, R> {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        if tag == tags::STUDY_INSTANCE_UID {
            return text(self.uid);
        }
        self.record.field(tag).unwrap_or(Attribute::Unavailable)
    }
}

fn series_field<'a>(uid: &'a str, record: &'a SeriesRecord, tag: Tag) -> Option<Attribute<'a>> {
    Some(match tag {
        tags::SERIES_INSTANCE_UID => text(uid),
        tags::MODALITY => text(&record.attributes.modality),
        tags::SERIES_NUMBER => number(record.attributes.series_number),
        Tag(0x0008, 0x103E) => text(&record.attributes.series_description),
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES => {
            owned_text(record.number_of_instances.to_string())
        }
        _ => return None,
    })
}

fn instance_field(entry: &InstanceEntry, tag: Tag) -> Option<Attribute<'_>> {
    Some(match tag {
        tags::SOP_INSTANCE_UID => text(&entry.triplet.sop_instance_uid),
        tags::SOP_CLASS_UID => text(&entry.record.sop_class_uid),
        tags::INSTANCE_NUMBER => number(entry.record.instance_number),
        _ => return None,
    })
}

fn patient_field(patient: &PatientSummary, tag: Tag) -> Option<Attribute<'_>> {
    Some(match tag {
        tags::PATIENT_ID => text(&patient.patient_id),
        tags::NUMBER_OF_PATIENT_RELATED_STUDIES => owned_text(patient.studies.to_string()),
        tags::NUMBER_OF_PATIENT_RELATED_SERIES => owned_text(patient.series.to_string()),
        tags::NUMBER_OF_PATIENT_RELATED_INSTANCES => owned_text(patient.instances.to_string()),
        tags::PATIENT_NAME | tags::PATIENT_BIRTH_DATE | tags::PATIENT_SEX => {
            return patient.first_study.field(tag)
        }
        _ => return None,
    })
}

impl Candidate for FindMatch {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        let found = match self.level {
            Level::Patient => self
                .patient
                .as_ref()
                .and_then(|patient| patient_field(patient, tag)),
            _ => None,
        };
        let found = found
            .or_else(|| {
                self.instance
                    .as_ref()
                    .and_then(|entry| instance_field(entry, tag))
            })
            .or_else(|| {
                self.series
                    .as_ref()
                    .and_then(|(uid, record)| series_field(uid, record, tag))
            })
            .or_else(|| {
                self.study.as_ref().and_then(|(uid, record)| {
                    if tag == tags::STUDY_INSTANCE_UID {
                        Some(text(uid))
                    } else {
                        record.field(tag)
                    }
                })
            });
        found.unwrap_or(Attribute::Unavailable)
    }
}

/// Whether a key of the table at `level` can come from the index at all (a
/// source "holds" it): what `Query::unsupported_keys` asks.
pub fn index_holds(level: Level, tag: Tag) -> bool {
    let study = matches!(
        tag,
        tags::PATIENT_NAME
            | tags::PATIENT_ID
            | tags::PATIENT_BIRTH_DATE
            | tags::PATIENT_SEX
            | tags::STUDY_DATE
            | tags::STUDY_TIME
            | tags::ACCESSION_NUMBER
            | tags::STUDY_ID
            | tags::STUDY_DESCRIPTION
            | tags::REFERRING_PHYSICIAN_NAME
            | tags::STUDY_INSTANCE_UID
    );
    let series = matches!(
        tag,
        tags::SERIES_INSTANCE_UID | tags::MODALITY | tags::SERIES_NUMBER | Tag(0x0008, 0x103E)
    );
    let instance = matches!(
        tag,
        tags::SOP_INSTANCE_UID | tags::SOP_CLASS_UID | tags::INSTANCE_NUMBER
    );
    match level {
        Level::Patient => {
            study && !is_study_only(tag)
                || matches!(
                    tag,
                    tags::NUMBER_OF_PATIENT_RELATED_STUDIES
                        | tags::NUMBER_OF_PATIENT_RELATED_SERIES
                        | tags::NUMBER_OF_PATIENT_RELATED_INSTANCES
                )
        }
        Level::Study => {
            study
                || matches!(
                    tag,
                    tags::MODALITIES_IN_STUDY
                        | tags::NUMBER_OF_STUDY_RELATED_SERIES
                        | tags::NUMBER_OF_STUDY_RELATED_INSTANCES
                )
        }
        Level::Series => study || series || tag == tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        Level::Image => study || series || instance,
    }
}

/// Study keys that a patient entity does not have.
fn is_study_only(tag: Tag) -> bool {
    !matches!(
        tag,
        tags::PATIENT_NAME | tags::PATIENT_ID | tags::PATIENT_BIRTH_DATE | tags::PATIENT_SEX
    )
}

/// The outer scan: which studies to look at, in which order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StudyScan {
    /// These Study Instance UIDs, in the request's order.
    Uids(Vec<String>),
    /// A secondary study table from `low` (inclusive) to `high` (exclusive).
    Secondary {
        table: SecondaryTable,
        low: Vec<u8>,
        high: Option<Vec<u8>>,
    },
    /// Every study, in UID order.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecondaryTable {
    PatientId,
    Accession,
    Date,
    /// `study_by_patient_name`: a study is there once per component group
    /// of its Patient's Name, so the walk visits it only at its first key
    /// within the scanned range (see `first_name_key_in`).
    PatientName,
}

/// Literal heads of a Patient's Name wildcard shorter than this leave a
/// Study Date range to narrow the scan instead (`A*` is about one name in
/// twenty; a week of dates one study in five hundred).
const NAME_PREFIX_PREFERRED_MIN: usize = 3;

/// The key prefix an exact value or a wildcard's literal head allows in a
/// secondary table (`None`: the table cannot narrow this key).
fn secondary_bounds(
    constraint: Option<Constraint<'_>>,
) -> Option<(Vec<u8>, Option<Vec<u8>>, bool)> {
    match constraint? {
        Constraint::Equals {
            value,
            case_insensitive: false,
        } if value.len() <= INDEXED_VALUE_BYTES_MAX => {
            let mut low = value.as_bytes().to_vec();
            low.push(SEPARATOR);
            let mut high = value.as_bytes().to_vec();
            high.push(SEPARATOR + 1);
            Some((low, Some(high), true))
        }
        Constraint::Prefix {
            literal,
            case_insensitive: false,
        } => {
            let literal = crate::keys::truncate_to_char_boundary(&literal, INDEXED_VALUE_BYTES_MAX);
            if literal.is_empty() {
                return None;
            }
            let low = literal.as_bytes().to_vec();
            Some((low.clone(), prefix_end(&low), false))
        }
        _ => None,
    }
}

/// The range of `study_by_patient_name` a Patient's Name key allows, and
/// whether it is one exact value: the table's keys are folded
/// (`fold_person_name`), so the key's value or literal head is folded too,
/// whichever the matching mode; in exact mode the range also holds the
/// name's case variants, which the matcher then refuses.
fn name_bounds(query: &Query) -> Option<(Vec<u8>, Option<Vec<u8>>, bool)> {
    let value;
    let folded = match constraint(query, tags::PATIENT_NAME)? {
        Constraint::Equals { value: exact, .. } => {
            value = fold_person_name(exact).into_owned();
            Constraint::Equals {
                value: &value,
                case_insensitive: false,
            }
        }
        Constraint::Prefix { literal, .. } => Constraint::Prefix {
            literal: fold_person_name(&literal).into_owned(),
            case_insensitive: false,
        },
        _ => return None,
    };
    secondary_bounds(Some(folded))
}

/// The smallest key above every key starting with `prefix` (`None`: no
/// bound, the prefix is all 0xFF).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn constraint(query: &Query, tag: Tag) -> Option<Constraint<'_>> {
    query.key(tag).and_then(|key| key.constraint())
}

/// UIDs a key names as a single value or a list.
fn listed_uids(query: &Query, tag: Tag) -> Option<Vec<String>> {
    match constraint(query, tag)? {
        Constraint::Equals { value, .. } => Some(vec![value.to_owned()]),
        Constraint::OneOf(values) => Some(values.into_iter().map(str::to_owned).collect()),
        _ => None,
    }
}

fn plan_studies(query: &Query) -> StudyScan {
    if let Some(uids) = listed_uids(query, tags::STUDY_INSTANCE_UID) {
        return StudyScan::Uids(uids);
    }
    let patient_id = secondary_bounds(constraint(query, tags::PATIENT_ID));
    let accession = secondary_bounds(constraint(query, tags::ACCESSION_NUMBER));
    let pick = |table, (low, high, _): (Vec<u8>, Option<Vec<u8>>, bool)| StudyScan::Secondary {
        table,
        low,
        high,
    };
    // Exact values first, then literal heads of wildcards, then dates.
    match (patient_id, accession) {
        (Some(bounds @ (_, _, true)), _) => return pick(SecondaryTable::PatientId, bounds),
        (_, Some(bounds @ (_, _, true))) => return pick(SecondaryTable::Accession, bounds),
        (Some(bounds), _) => return pick(SecondaryTable::PatientId, bounds),
        (_, Some(bounds)) => return pick(SecondaryTable::Accession, bounds),
        (None, None) => {}
    }
    let date = constraint(query, tags::STUDY_DATE);
    if let Some((low, high, exact)) = name_bounds(query) {
        let literal_chars = std::str::from_utf8(&low).map_or(0, |low| low.chars().count());
        if exact || date.is_none() || literal_chars >= NAME_PREFIX_PREFERRED_MIN {
            return StudyScan::Secondary {
                table: SecondaryTable::PatientName,
                low,
                high,
            };
        }
    }
    match date {
        Some(Constraint::Range { low, high }) => StudyScan::Secondary {
            table: SecondaryTable::Date,
            low: low.map(String::into_bytes).unwrap_or_default(),
            // Keys are `date\0study`: everything of date `high` sorts below `high\x01`.
            high: high.map(|high| {
                let mut key = high.into_bytes();
                key.push(SEPARATOR + 1);
                key
            }),
        },
        Some(Constraint::Equals { value, .. }) => {
            let mut low = value.as_bytes().to_vec();
            low.push(SEPARATOR);
            let mut high = value.as_bytes().to_vec();
            high.push(SEPARATOR + 1);
            StudyScan::Secondary {
                table: SecondaryTable::Date,
                low,
                high: Some(high),
            }
        }
        _ => StudyScan::All,
    }
}

fn corrupt(table: &'static str, detail: &str) -> IndexError {
    IndexError::Corrupt {
        table,
        detail: detail.to_owned(),
    }
}

/// What a page collects, and when it must stop.
struct Page<'q> {
    query: &'q Query,
    budget: FindBudget,
    out: FindPage,
}

impl Page<'_> {
    /// Keeps `patient` when it matches the query's PATIENT keys.
    fn offer_patient(&mut self, patient: PatientSummary) {
        let candidate = FindMatch {
            level: Level::Patient,
            patient: Some(patient),
            study: None,
            series: None,
            instance: None,
        };
        if self.query.matches_level(Level::Patient, &candidate) {
            self.out.matches.push(candidate);
        }
    }

    fn full(&self) -> bool {
        self.out.matches.len() >= self.budget.matches_max
            || self.out.scanned >= self.budget.scanned_max
    }
}

/// Whether the walk goes on after an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl ReadTxn<'_> {
    fn table_of(&self, table: SecondaryTable) -> Table {
        let tables = &self.shared().tables;
        match table {
            SecondaryTable::PatientId => tables.study_by_patient_id,
            SecondaryTable::Accession => tables.study_by_accession,
            SecondaryTable::Date => tables.study_by_date,
            SecondaryTable::PatientName => tables.study_by_patient_name,
        }
    }

    fn lmdb_error(&self, operation: &'static str) -> impl Fn(heed::Error) -> IndexError {
        let limits = self.shared().limits;
        move |error| IndexError::from_heed(operation, error, limits)
    }

    /// One page of the entities at `query`'s level that match it, starting
    /// after `resume` (from the start when `None`).
    pub fn find(
        &self,
        query: &Query,
        resume: Option<&FindResume>,
        budget: FindBudget,
    ) -> Result<FindPage, IndexError> {
        assert!(
            budget.matches_max > 0 && budget.scanned_max > 0,
            "an empty find budget"
        );
        let mut page = Page {
            query,
            budget,
            out: FindPage::default(),
        };
        match query.level() {
            Level::Patient => self.find_patients(&mut page, resume)?,
            Level::Image
                if query
                    .key(tags::STUDY_INSTANCE_UID)
                    .is_none_or(|key| key.is_universal())
                    && listed_uids(query, tags::SOP_INSTANCE_UID).is_some() =>
            {
                self.find_instances_by_sop(&mut page, resume)?;
            }
            Level::Series
                if query
                    .key(tags::STUDY_INSTANCE_UID)
                    .is_none_or(|key| key.is_universal())
                    && listed_uids(query, tags::SERIES_INSTANCE_UID).is_some() =>
            {
                // A relational request naming series alone: which study holds
                // them is not indexed by series UID, so every study is looked
                // at (its series by point lookup).
                self.find_in_studies(&mut page, StudyScan::All, resume)?;
            }
            _ => self.find_in_studies(&mut page, plan_studies(query), resume)?,
        }
        Ok(page.out)
    }

    /// STUDY, SERIES and IMAGE levels: the outer scan over studies.
    fn find_in_studies(
        &self,
        page: &mut Page<'_>,
        scan: StudyScan,
        resume: Option<&FindResume>,
    ) -> Result<(), IndexError> {
        let tables = self.shared().tables;
        let visit =
            |outer: Vec<u8>, study: &str, page: &mut Page<'_>| -> Result<Flow, IndexError> {
                let inner = resume.filter(|resume| resume.outer == outer && !resume.outer_done);
                let Some(bytes) = self.raw_get(tables.studies, study.as_bytes(), "get study")?
                else {
                    // A secondary key whose study is gone (removed since): skip.
                    return Ok(Flow::Continue);
                };
                self.visit_study(page, outer, study, bytes, inner)
            };
        match scan {
            StudyScan::Uids(uids) => {
                let start = resume.map_or(0, |resume| {
                    let index = read_index(&resume.outer);
                    if resume.outer_done {
                        index + 1
                    } else {
                        index
                    }
                });
                for (index, uid) in uids.iter().enumerate().skip(start) {
                    if check_uid("", uid).is_err() {
                        continue;
                    }
                    let outer = (index as u32).to_be_bytes().to_vec();
                    if visit(outer, uid, page)? == Flow::Stop {
                        return Ok(());
                    }
                }
            }
            StudyScan::Secondary { table, low, high } => {
                let start = match resume {
                    Some(resume) if resume.outer_done => Bound::Excluded(resume.outer.as_slice()),
                    Some(resume) => Bound::Included(resume.outer.as_slice()),
                    None => included_unless_empty(&low),
                };
                let end = high.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let iter = self
                    .table_of(table)
                    .range(self.raw_txn(), &(start, end))
                    .map_err(self.lmdb_error("scan study index"))?;
                for entry in iter {
                    let (key, _) = entry.map_err(self.lmdb_error("scan study index"))?;
                    let study = study_of_secondary_key(key)
                        .ok_or_else(|| corrupt("study index", "bad key"))?;
                    if table == SecondaryTable::PatientName
                        && !self.first_name_key_in(key, study, (&low, high.as_deref()))?
                    {
                        // The study comes (or came) at another of its names.
                        continue;
                    }
                    if visit(key.to_vec(), study, page)? == Flow::Stop {
                        return Ok(());
                    }
                }
            }
            StudyScan::All => {
                let start = match resume {
                    Some(resume) if resume.outer_done => Bound::Excluded(resume.outer.as_slice()),
                    Some(resume) => Bound::Included(resume.outer.as_slice()),
                    None => Bound::Unbounded,
                };
                let iter = tables
                    .studies
                    .range(self.raw_txn(), &(start, Bound::Unbounded))
                    .map_err(self.lmdb_error("scan studies"))?;
                for entry in iter {
                    let (key, bytes) = entry.map_err(self.lmdb_error("scan studies"))?;
                    let study = std::str::from_utf8(key)
                        .map_err(|_| corrupt("studies", "key is not UTF-8"))?;
                    let inner = resume.filter(|resume| resume.outer == key && !resume.outer_done);
                    if self.visit_study(page, key.to_vec(), study, bytes, inner)? == Flow::Stop {
                        return Ok(());
                    }
                }
            }
        }
        page.out.resume = None;
        Ok(())
    }

    /// Whether `key`, an entry of `study_by_patient_name` for `study`, is
    /// the lowest of that study's name keys within `[low, high)` (a study
    /// whose several name groups match is visited once, at that key,
    /// whichever page the walk is on). A study gone since is "first": the
    /// visit skips it.
    fn first_name_key_in(
        &self,
        key: &[u8],
        study: &str,
        (low, high): (&[u8], Option<&[u8]>),
    ) -> Result<bool, IndexError> {
        let tables = self.shared().tables;
        let Some(bytes) = self.raw_get(tables.studies, study.as_bytes(), "get study")? else {
            return Ok(true);
        };
        let record = access::<ArchivedStudyRecord>("studies", bytes)?;
        let first = patient_name_values(&record.attributes.patient_name)
            .into_iter()
            .map(|value| secondary_key(&value, study))
            .filter(|candidate| {
                candidate.as_slice() >= low && high.is_none_or(|high| candidate.as_slice() < high)
            })
            .min();
        Ok(first.is_none_or(|first| first == key))
    }

    fn raw_get(
        &self,
        table: Table,
        key: &[u8],
        operation: &'static str,
    ) -> Result<Option<&[u8]>, IndexError> {
        table
            .get(self.raw_txn(), key)
            .map_err(self.lmdb_error(operation))
    }

    /// One study of the outer scan: matched itself at STUDY level, or its
    /// series (and their instances) below it. `inner` resumes inside it.
    fn visit_study(
        &self,
        page: &mut Page<'_>,
        outer: Vec<u8>,
        study: &str,
        bytes: &[u8],
        inner: Option<&FindResume>,
    ) -> Result<Flow, IndexError> {
        let query = page.query;
        let archived = access::<ArchivedStudyRecord>("studies", bytes)?;
        let candidate = StudyCandidate {
            uid: study,
            record: archived,
        };
        let study_matches = query.matches_level(Level::Patient, &candidate)
            && query.matches_level(Level::Study, &candidate);
        if query.level() == Level::Study {
            page.out.scanned += 1;
            if study_matches {
                page.out.matches.push(FindMatch {
                    level: Level::Study,
                    patient: None,
                    study: Some((study.to_owned(), deserialize_study(archived)?)),
                    series: None,
                    instance: None,
                });
            }
            return Ok(stop_if_full(page, outer, None, None));
        }
        if !study_matches {
            page.out.scanned += 1;
            return Ok(stop_if_full(page, outer, None, None));
        }
        let study_record = deserialize_study(archived)?;
        let after_series = inner.and_then(|resume| resume.series.clone());
        let series_list = match listed_uids(query, tags::SERIES_INSTANCE_UID) {
            Some(mut uids) => {
                uids.sort();
                uids.dedup();
                if let Some(after) = &after_series {
                    uids.retain(|uid| uid >= after);
                }
                uids
            }
            None => self.series_uids_from(study, after_series.as_deref())?,
        };
        for series_uid in series_list {
            // The resumed series itself is finished at SERIES level; at
            // IMAGE level it goes on after its last instance.
            let resuming_here = after_series.as_deref() == Some(series_uid.as_str());
            if resuming_here
                && (query.level() == Level::Series || inner.is_some_and(|r| r.sop.is_none()))
            {
                continue;
            }
            let Some(series_record) = self.series(study, &series_uid)? else {
                continue;
            };
            let series_matches =
                query.matches_level(Level::Series, &SeriesView(&series_uid, &series_record));
            if query.level() == Level::Series {
                page.out.scanned += 1;
                if series_matches {
                    page.out.matches.push(FindMatch {
                        level: Level::Series,
                        patient: None,
                        study: Some((study.to_owned(), study_record.clone())),
                        series: Some((series_uid.clone(), series_record)),
                        instance: None,
                    });
                }
                if page.full() {
                    return Ok(stop_at(page, outer, Some(series_uid), None));
                }
                continue;
            }
            if !series_matches {
                page.out.scanned += 1;
                if page.full() {
                    return Ok(stop_at(page, outer, Some(series_uid), None));
                }
                continue;
            }
            let after_sop = if resuming_here {
                inner.and_then(|resume| resume.sop.clone())
            } else {
                None
            };
            let flow = self.visit_instances(
                page,
                &outer,
                (study, &study_record),
                (&series_uid, &series_record),
                after_sop.as_deref(),
            )?;
            if flow == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(stop_if_full(page, outer, None, None))
    }

    /// The instances of one matching series (IMAGE level).
    fn visit_instances(
        &self,
        page: &mut Page<'_>,
        outer: &[u8],
        (study, study_record): (&str, &StudyRecord),
        (series_uid, series_record): (&str, &SeriesRecord),
        after_sop: Option<&str>,
    ) -> Result<Flow, IndexError> {
        let query = page.query;
        let listed = listed_uids(query, tags::SOP_INSTANCE_UID);
        let mut after = after_sop.map(str::to_owned);
        loop {
            let batch = match &listed {
                Some(uids) => {
                    let mut uids: Vec<&String> = uids
                        .iter()
                        .filter(|uid| after.as_ref().is_none_or(|after| *uid > after))
                        .collect();
                    uids.sort();
                    uids.dedup();
                    let mut entries = Vec::new();
                    for uid in uids {
                        if let Some(record) = self.instance(study, series_uid, uid)? {
                            entries.push(InstanceEntry {
                                triplet: Triplet::new(study, series_uid, uid.as_str()),
                                record,
                            });
                        }
                    }
                    entries
                }
                None => self.instances_of_series_after(
                    study,
                    series_uid,
                    after.as_deref(),
                    INSTANCE_BATCH,
                )?,
            };
            let last_batch = listed.is_some() || batch.len() < INSTANCE_BATCH;
            for entry in batch {
                page.out.scanned += 1;
                let sop = entry.triplet.sop_instance_uid.clone();
                if query.matches_level(Level::Image, &InstanceView(&entry)) {
                    page.out.matches.push(FindMatch {
                        level: Level::Image,
                        patient: None,
                        study: Some((study.to_owned(), study_record.clone())),
                        series: Some((series_uid.to_owned(), series_record.clone())),
                        instance: Some(entry),
                    });
                }
                if page.full() {
                    return Ok(stop_at(
                        page,
                        outer.to_vec(),
                        Some(series_uid.to_owned()),
                        Some(sop),
                    ));
                }
                after = Some(sop);
            }
            if last_batch {
                return Ok(Flow::Continue);
            }
        }
    }

    /// The Series Instance UIDs of a study after `after`, in order.
    fn series_uids_from(
        &self,
        study: &str,
        after: Option<&str>,
    ) -> Result<Vec<String>, IndexError> {
        let prefix = prefix_of(study.as_bytes());
        let start_key = after.map(|after| series_key(study, after));
        let start = match &start_key {
            Some(key) => Bound::Included(key.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        let end = prefix_end(&prefix);
        let end = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let iter = self
            .shared()
            .tables
            .series
            .range(self.raw_txn(), &(start, end))
            .map_err(self.lmdb_error("scan series"))?;
        let mut uids = Vec::new();
        for entry in iter {
            let (key, _) = entry.map_err(self.lmdb_error("scan series"))?;
            let [_, series] = split_key::<2>(key).ok_or_else(|| corrupt("series", "bad key"))?;
            uids.push(series.to_owned());
        }
        Ok(uids)
    }

    /// IMAGE level by SOP Instance UIDs alone (relational): point lookups.
    fn find_instances_by_sop(
        &self,
        page: &mut Page<'_>,
        resume: Option<&FindResume>,
    ) -> Result<(), IndexError> {
        let query = page.query;
        let uids = listed_uids(query, tags::SOP_INSTANCE_UID).unwrap_or_default();
        let start = resume.map_or(0, |resume| read_index(&resume.outer) + 1);
        for (index, uid) in uids.iter().enumerate().skip(start) {
            page.out.scanned += 1;
            if let Some(entry) = self.instance_by_sop(uid)? {
                let study_uid = entry.triplet.study_instance_uid.clone();
                let series_uid = entry.triplet.series_instance_uid.clone();
                if let (Some(study), Some(series)) = (
                    self.study(&study_uid)?,
                    self.series(&study_uid, &series_uid)?,
                ) {
                    let matches = query.matches_level(
                        Level::Patient,
                        &StudyCandidate {
                            uid: &study_uid,
                            record: &study,
                        },
                    ) && query.matches_level(
                        Level::Study,
                        &StudyCandidate {
                            uid: &study_uid,
                            record: &study,
                        },
                    ) && query
                        .matches_level(Level::Series, &SeriesView(&series_uid, &series))
                        && query.matches_level(Level::Image, &InstanceView(&entry));
                    if matches {
                        page.out.matches.push(FindMatch {
                            level: Level::Image,
                            patient: None,
                            study: Some((study_uid, study)),
                            series: Some((series_uid, series)),
                            instance: Some(entry),
                        });
                    }
                }
            }
            if page.full() {
                stop_at(page, (index as u32).to_be_bytes().to_vec(), None, None);
                return Ok(());
            }
        }
        page.out.resume = None;
        Ok(())
    }

    /// PATIENT level: `study_by_patient_id` grouped by Patient ID.
    fn find_patients(
        &self,
        page: &mut Page<'_>,
        resume: Option<&FindResume>,
    ) -> Result<(), IndexError> {
        let query = page.query;
        let tables = self.shared().tables;
        let bounds = secondary_bounds(constraint(query, tags::PATIENT_ID));
        if bounds.is_none() {
            if let Some((low, high, _)) = name_bounds(query) {
                return self.find_patients_by_name(page, resume, (&low, high.as_deref()));
            }
        }
        let (low, high) = match &bounds {
            Some((low, high, _)) => (low.clone(), high.clone()),
            None => (Vec::new(), None),
        };
        let start = match resume {
            Some(resume) => Bound::Included(resume.outer.as_slice()),
            None => included_unless_empty(&low),
        };
        let end = high.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let iter = tables
            .study_by_patient_id
            .range(self.raw_txn(), &(start, end))
            .map_err(self.lmdb_error("scan patients"))?;
        let mut current: Option<PatientSummary> = None;
        let flush = |patient: PatientSummary, page: &mut Page<'_>| -> Flow {
            page.out.scanned += 1;
            page.offer_patient(patient);
            if page.full() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        for entry in iter {
            let (key, _) = entry.map_err(self.lmdb_error("scan patients"))?;
            let position = key
                .iter()
                .rposition(|byte| *byte == SEPARATOR)
                .ok_or_else(|| corrupt("study_by_patient_id", "bad key"))?;
            let (patient_id, study) = key.split_at(position);
            let patient_id = std::str::from_utf8(patient_id)
                .map_err(|_| corrupt("study_by_patient_id", "not UTF-8"))?;
            let study = std::str::from_utf8(study.get(1..).unwrap_or_default())
                .map_err(|_| corrupt("study_by_patient_id", "not UTF-8"))?;
            if current
                .as_ref()
                .is_some_and(|patient| patient.patient_id != patient_id)
            {
                let done = current
                    .take()
                    .map(|patient| (patient.patient_id.clone(), patient));
                if let Some((done_id, patient)) = done {
                    if flush(patient, page) == Flow::Stop {
                        page.out.resume = Some(patient_resume(&done_id));
                        return Ok(());
                    }
                }
            }
            let Some(record) = self.study(study)? else {
                continue;
            };
            match &mut current {
                Some(patient) => {
                    patient.studies += 1;
                    patient.series += u64::from(record.number_of_series);
                    patient.instances += u64::from(record.number_of_instances);
                }
                None => {
                    current = Some(PatientSummary {
                        patient_id: patient_id.to_owned(),
                        studies: 1,
                        series: u64::from(record.number_of_series),
                        instances: u64::from(record.number_of_instances),
                        first_study: record,
                    });
                }
            }
        }
        if let Some(patient) = current.take() {
            let patient_id = patient.patient_id.clone();
            if flush(patient, page) == Flow::Stop {
                page.out.resume = Some(patient_resume(&patient_id));
                return Ok(());
            }
        }
        page.out.resume = None;
        Ok(())
    }
}

impl ReadTxn<'_> {
    /// PATIENT level by Patient's Name, without a Patient ID to narrow by:
    /// the range `[low, high)` of `study_by_patient_name`. A patient is
    /// what `find_patients` summarises (its studies under one Patient ID,
    /// the first of them holding its attributes), so it is answered once,
    /// at the entry of its first study that is that study's lowest name key
    /// in the range; the entries of its other studies and names are passed
    /// over (and counted as looked at, so a page stays bounded).
    fn find_patients_by_name(
        &self,
        page: &mut Page<'_>,
        resume: Option<&FindResume>,
        (low, high): (&[u8], Option<&[u8]>),
    ) -> Result<(), IndexError> {
        let start = match resume {
            Some(resume) => Bound::Excluded(resume.outer.as_slice()),
            None => included_unless_empty(low),
        };
        let end = high.map_or(Bound::Unbounded, Bound::Excluded);
        let iter = self
            .shared()
            .tables
            .study_by_patient_name
            .range(self.raw_txn(), &(start, end))
            .map_err(self.lmdb_error("scan patients by name"))?;
        for entry in iter {
            let (key, _) = entry.map_err(self.lmdb_error("scan patients by name"))?;
            let study = study_of_secondary_key(key)
                .ok_or_else(|| corrupt("study_by_patient_name", "bad key"))?;
            page.out.scanned += 1;
            if self.first_name_key_in(key, study, (low, high))? {
                if let Some(patient) = self.patient_first_studied_in(study)? {
                    page.offer_patient(patient);
                }
            }
            if page.full() {
                stop_at(page, key.to_vec(), None, None);
                return Ok(());
            }
        }
        page.out.resume = None;
        Ok(())
    }

    /// The patient whose first study (in `study_by_patient_id`) is `study`,
    /// summarised; `None` when `study` is gone, has no Patient ID (no
    /// patient entity: `find_patients` lists Patient IDs) or is not its
    /// patient's first study.
    fn patient_first_studied_in(&self, study: &str) -> Result<Option<PatientSummary>, IndexError> {
        let Some(record) = self.study(study)? else {
            return Ok(None);
        };
        let patient_id = record.attributes.patient_id.clone();
        if patient_id.is_empty() {
            return Ok(None);
        }
        let prefix = secondary_key(&patient_id, "");
        let mut summary: Option<PatientSummary> = None;
        for entry in self
            .shared()
            .tables
            .study_by_patient_id
            .prefix_iter(self.raw_txn(), &prefix)
            .map_err(self.lmdb_error("scan a patient's studies"))?
        {
            let (key, _) = entry.map_err(self.lmdb_error("scan a patient's studies"))?;
            let other = key
                .get(prefix.len()..)
                .and_then(|uid| std::str::from_utf8(uid).ok())
                .ok_or_else(|| corrupt("study_by_patient_id", "bad key"))?;
            match &mut summary {
                None if other != study => return Ok(None),
                None => {
                    summary = Some(PatientSummary {
                        patient_id: patient_id.clone(),
                        studies: 1,
                        series: u64::from(record.number_of_series),
                        instances: u64::from(record.number_of_instances),
                        first_study: record.clone(),
                    });
                }
                Some(patient) => {
                    let Some(other) = self.study(other)? else {
                        continue;
                    };
                    patient.studies += 1;
                    patient.series += u64::from(other.number_of_series);
                    patient.instances += u64::from(other.number_of_instances);
                }
            }
        }
        Ok(summary)
    }
}

/// The resume position after every study of a patient: the first key of the
/// next Patient ID (`id ++ 0x01` sorts after every `id ++ 0x00 ++ study`).
fn patient_resume(patient_id: &str) -> FindResume {
    let mut outer = patient_id.as_bytes().to_vec();
    outer.push(SEPARATOR + 1);
    FindResume {
        outer,
        series: None,
        sop: None,
        outer_done: false,
    }
}

/// A scan's start: LMDB refuses an empty key, which would mean "from the
/// first key" anyway.
fn included_unless_empty(low: &[u8]) -> Bound<&[u8]> {
    if low.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(low)
    }
}

/// Instances read per LMDB range step at IMAGE level.
const INSTANCE_BATCH: usize = 256;

fn read_index(bytes: &[u8]) -> usize {
    <[u8; 4]>::try_from(bytes).map_or(usize::MAX, |bytes| u32::from_be_bytes(bytes) as usize)
}

fn deserialize_study(archived: &ArchivedStudyRecord) -> Result<StudyRecord, IndexError> {
    rkyv::deserialize::<StudyRecord, rkyv::rancor::Error>(archived)
        .map_err(|error| corrupt("studies", &error.to_string()))
}

/// Stops the walk when the page is full, resuming after the outer entity
/// (finished) or inside it.
fn stop_if_full(
    page: &mut Page<'_>,
    outer: Vec<u8>,
    series: Option<String>,
    sop: Option<String>,
) -> Flow {
    if page.full() {
        stop_at(page, outer, series, sop)
    } else {
        Flow::Continue
    }
}

fn stop_at(
    page: &mut Page<'_>,
    outer: Vec<u8>,
    series: Option<String>,
    sop: Option<String>,
) -> Flow {
    let outer_done = series.is_none();
    page.out.resume = Some(FindResume {
        outer,
        series,
        sop,
        outer_done,
    });
    Flow::Stop
}

struct SeriesView<'a>(&'a str, &'a SeriesRecord);

impl Candidate for SeriesView<'_> {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        series_field(self.0, self.1, tag).unwrap_or(Attribute::Unavailable)
    }
}

struct InstanceView<'a>(&'a InstanceEntry);

impl Candidate for InstanceView<'_> {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        instance_field(self.0, tag).unwrap_or(Attribute::Unavailable)
    }
}
