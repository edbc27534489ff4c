//! What a retrieval workload asks for: the operation (C-FIND, C-MOVE or
//! C-GET), the information model and level, the matching keys
//! ([`KeyKind`]), and, per operation, the request identifier built from an
//! entity drawn from the [`KeyPool`] ([`RetrieveSpec::request`]), with the
//! number of matches or instances the pool says it should give.
//!
//! Identifiers follow the hierarchical model (PS3.4 C.4.1.2.1): the unique
//! key of every level above the query level as a single value, the level's
//! own unique key (universal unless it is matched on), the chosen keys, and
//! a few return keys of the level, as a viewer or a PACS would ask.

use sluice_net::dimse::dataset::SmallDataset;
use sluice_net::dimse::Tag;
use sluice_net::query::model::tags;
use sluice_net::query::{IdentifierBuilder, InformationModel, Level, Operation};

use crate::keys::{KeyPool, SeriesEntry, StudyEntry};
use crate::study::{format_date, parse_date};

/// Series Description (0008,103E), LO: a return key of series queries.
const SERIES_DESCRIPTION: Tag = Tag(0x0008, 0x103E);
/// Attempts at drawing an entity that has the values the keys need.
const DRAW_ATTEMPTS: usize = 32;

/// A matching key of a C-FIND, and the value it takes from a drawn entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Patient ID, single value (exact).
    PatientId,
    /// Patient's Name, wildcard: the name without its last two characters, then `*`.
    PatientName,
    /// Study Date, range: the study's date to `date_window_days` later.
    StudyDate,
    /// Study Instance UID, single value.
    StudyUid,
    /// Series Instance UID, single value.
    SeriesUid,
    /// SOP Instance UID, single value.
    SopInstanceUid,
    /// Modality at the series level, Modalities in Study at the study level.
    Modality,
}

impl KeyKind {
    /// Every kind, in the order of their names.
    pub const ALL: [KeyKind; 7] = [
        KeyKind::PatientId,
        KeyKind::PatientName,
        KeyKind::StudyDate,
        KeyKind::StudyUid,
        KeyKind::SeriesUid,
        KeyKind::SopInstanceUid,
        KeyKind::Modality,
    ];

    /// The name on the command line and in result files.
    pub const fn name(self) -> &'static str {
        match self {
            KeyKind::PatientId => "patient-id",
            KeyKind::PatientName => "patient-name",
            KeyKind::StudyDate => "study-date",
            KeyKind::StudyUid => "study-uid",
            KeyKind::SeriesUid => "series-uid",
            KeyKind::SopInstanceUid => "sop-uid",
            KeyKind::Modality => "modality",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The attribute this key matches at `level`, and the level of that
    /// attribute in `model`; `None` where it has no attribute (Modality
    /// above the series level or below it, where it is not a key).
    fn attribute(self, model: InformationModel, level: Level) -> Option<(Tag, Level)> {
        let patient_level = if model == InformationModel::PatientRoot {
            Level::Patient
        } else {
            Level::Study
        };
        Some(match self {
            KeyKind::PatientId => (tags::PATIENT_ID, patient_level),
            KeyKind::PatientName => (tags::PATIENT_NAME, patient_level),
            KeyKind::StudyDate => (tags::STUDY_DATE, Level::Study),
            KeyKind::StudyUid => (tags::STUDY_INSTANCE_UID, Level::Study),
            KeyKind::SeriesUid => (tags::SERIES_INSTANCE_UID, Level::Series),
            KeyKind::SopInstanceUid => (tags::SOP_INSTANCE_UID, Level::Image),
            KeyKind::Modality => match level {
                Level::Study => (tags::MODALITIES_IN_STUDY, Level::Study),
                Level::Series => (tags::MODALITY, Level::Series),
                Level::Patient | Level::Image => return None,
            },
        })
    }
}

/// Parses `patient-id,modality` into key kinds.
pub fn parse_keys(text: &str) -> Result<Vec<KeyKind>, SpecError> {
    let mut keys = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let kind = KeyKind::parse(name).ok_or_else(|| SpecError::UnknownKey(name.to_string()))?;
        if !keys.contains(&kind) {
            keys.push(kind);
        }
    }
    Ok(keys)
}

/// A retrieval specification that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A key name that is not one of [`KeyKind::ALL`].
    #[error("unknown key {0:?} (known: patient-id, patient-name, study-date, study-uid, series-uid, sop-uid, modality)")]
    UnknownKey(String),
    /// The level is not in the model (PATIENT in Study Root).
    #[error("{model} has no {level} level")]
    LevelNotInModel {
        /// The model's name.
        model: &'static str,
        /// The level.
        level: Level,
    },
    /// A key that is not a key of the query level.
    #[error("{key} is not a key of a {level} query in {model}{hint}")]
    KeyNotAtLevel {
        /// The key's name.
        key: &'static str,
        /// The query level.
        level: Level,
        /// The model's name.
        model: &'static str,
        /// What would work instead.
        hint: &'static str,
    },
    /// C-MOVE and C-GET retrieve whole studies or series here.
    #[error("{operation} retrieves at the STUDY or SERIES level, not {level}")]
    RetrieveLevel {
        /// The operation.
        operation: &'static str,
        /// The level asked for.
        level: Level,
    },
    /// Keys given to a C-MOVE or C-GET (they name what to retrieve by its UIDs).
    #[error("{0} names what it retrieves by UIDs: --keys applies to find only")]
    KeysOnRetrieve(&'static str),
    /// The pool has nothing the workload can draw.
    #[error("the key source has no {0} to draw from ({1})")]
    EmptyPool(&'static str, String),
}

/// What a retrieval workload sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveSpec {
    /// C-FIND, C-MOVE or C-GET.
    pub operation: Operation,
    /// Patient Root or Study Root.
    pub model: InformationModel,
    /// The query or retrieve level.
    pub level: Level,
    /// C-FIND: the matching keys (the level's unique keys above it are
    /// always sent).
    pub keys: Vec<KeyKind>,
    /// Study Date ranges span this many days after the drawn study's date
    /// (0: the date itself).
    pub date_window_days: u32,
    /// C-MOVE: the Move Destination AE title.
    pub move_destination: String,
}

/// One request drawn from the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The identifier.
    pub identifier: SmallDataset,
    /// Matches (C-FIND) or instances (C-MOVE, C-GET) the pool says the
    /// request should give, when the keys make that countable.
    pub expected: Option<u64>,
}

/// What the pool must hold for a specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolNeeds {
    /// Series (series and image levels).
    pub series: bool,
    /// SOP Instance UIDs (image-level queries by UID).
    pub instances: bool,
}

/// The name of an operation in messages and result files.
pub const fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Find => "find",
        Operation::Move => "move",
        Operation::Get => "get",
    }
}

/// The name of a model in result files.
pub const fn model_name(model: InformationModel) -> &'static str {
    match model {
        InformationModel::PatientRoot => "patient",
        InformationModel::StudyRoot => "study",
    }
}

impl RetrieveSpec {
    /// Checks that the operation, level and keys make a valid request in
    /// the model.
    pub fn check(&self) -> Result<(), SpecError> {
        if !self.model.has_level(self.level) {
            return Err(SpecError::LevelNotInModel {
                model: self.model.name(),
                level: self.level,
            });
        }
        if self.operation != Operation::Find {
            if !matches!(self.level, Level::Study | Level::Series) {
                return Err(SpecError::RetrieveLevel {
                    operation: operation_name(self.operation),
                    level: self.level,
                });
            }
            if !self.keys.is_empty() {
                return Err(SpecError::KeysOnRetrieve(operation_name(self.operation)));
            }
            return Ok(());
        }
        for &key in &self.keys {
            let at_level = key.attribute(self.model, self.level);
            let fits = match at_level {
                Some((_, level)) if level == self.level => true,
                // A unique key of a level above: sent anyway, as a single value.
                Some((tag, level)) => level < self.level && level.unique_key() == tag,
                None => false,
            };
            if !fits {
                let hint = match key {
                    KeyKind::PatientId | KeyKind::PatientName
                        if self.model == InformationModel::PatientRoot =>
                    {
                        ": it is a PATIENT key there (query --level patient, or --model study)"
                    }
                    KeyKind::Modality => {
                        ": use it at the STUDY (Modalities in Study) or SERIES level"
                    }
                    _ => ": query at its own level",
                };
                return Err(SpecError::KeyNotAtLevel {
                    key: key.name(),
                    level: self.level,
                    model: self.model.name(),
                    hint,
                });
            }
        }
        Ok(())
    }

    /// What the pool must hold.
    pub fn needs(&self) -> PoolNeeds {
        PoolNeeds {
            series: self.level >= Level::Series,
            instances: self.keys.contains(&KeyKind::SopInstanceUid),
        }
    }

    /// Checks that the pool holds what the specification draws (after
    /// [`RetrieveSpec::check`]).
    pub fn check_pool(&self, pool: &KeyPool) -> Result<(), SpecError> {
        if pool.studies.is_empty() {
            return Err(SpecError::EmptyPool("studies", pool.description.clone()));
        }
        let needs = self.needs();
        if needs.series && pool.series.is_empty() {
            return Err(SpecError::EmptyPool("series", pool.description.clone()));
        }
        if needs.instances && pool.instances_known() == 0 {
            return Err(SpecError::EmptyPool(
                "SOP Instance UIDs",
                pool.description.clone(),
            ));
        }
        let mut rng = fastrand::Rng::with_seed(0);
        if self.request(pool, &mut rng).is_none() {
            return Err(SpecError::EmptyPool(
                "entities with the values these keys need",
                pool.description.clone(),
            ));
        }
        Ok(())
    }

    /// A request for an entity drawn from `pool`; `None` when no draw of a
    /// few gave an entity with the values the keys need.
    pub fn request(&self, pool: &KeyPool, rng: &mut fastrand::Rng) -> Option<Request> {
        (0..DRAW_ATTEMPTS).find_map(|_| self.try_request(pool, rng))
    }

    fn try_request(&self, pool: &KeyPool, rng: &mut fastrand::Rng) -> Option<Request> {
        let (study, series) = if self.level >= Level::Series {
            let (study, series) = pool.draw_series(rng)?;
            (study, Some(series))
        } else {
            (pool.draw_study(rng)?, None)
        };
        let instance = if self.keys.contains(&KeyKind::SopInstanceUid) {
            let instances = &series?.instances;
            Some(instances.get(rng.usize(..instances.len().max(1)))?.as_str())
        } else {
            None
        };
        let mut builder = IdentifierBuilder::new(self.level);
        let mut non_ascii = false;
        let mut put = |builder: IdentifierBuilder, tag: Tag, value: &str| {
            non_ascii |= !value.is_ascii();
            builder.key(tag, value)
        };
        // The unique keys of the levels above, single values.
        if self.model == InformationModel::PatientRoot && self.level > Level::Patient {
            builder = put(builder, tags::PATIENT_ID, single(&study.patient_id)?);
        }
        if self.level > Level::Study {
            builder = put(builder, tags::STUDY_INSTANCE_UID, single(&study.study_uid)?);
        }
        if self.level > Level::Series {
            builder = put(
                builder,
                tags::SERIES_INSTANCE_UID,
                single(&series?.series_uid)?,
            );
        }
        // The level's own unique key: matched when chosen, else returned.
        let unique = self.level.unique_key();
        let unique_chosen = self
            .keys
            .iter()
            .any(|key| key.attribute(self.model, self.level).map(|(tag, _)| tag) == Some(unique));
        if !unique_chosen && self.operation == Operation::Find {
            builder = builder.key(unique, "");
        }
        if self.operation == Operation::Find {
            for &key in &self.keys {
                let Some((tag, level)) = key.attribute(self.model, self.level) else {
                    continue;
                };
                if level < self.level {
                    continue; // a unique key above, already sent
                }
                let value = match key {
                    KeyKind::PatientId => single(&study.patient_id)?.to_string(),
                    KeyKind::PatientName => name_wildcard(&study.patient_name)?,
                    KeyKind::StudyDate => date_range(&study.study_date, self.date_window_days)?,
                    KeyKind::StudyUid => single(&study.study_uid)?.to_string(),
                    KeyKind::SeriesUid => single(&series?.series_uid)?.to_string(),
                    KeyKind::SopInstanceUid => single(instance?)?.to_string(),
                    KeyKind::Modality => match series {
                        Some(series) => single(&series.modality)?.to_string(),
                        None => single(
                            study
                                .modalities
                                .get(rng.usize(..study.modalities.len().max(1)))?,
                        )?
                        .to_string(),
                    },
                };
                builder = put(builder, tag, &value);
            }
            for &tag in return_keys(self.model, self.level) {
                if builder.dataset().get(tag).is_none() {
                    builder = builder.key(tag, "");
                }
            }
        } else {
            builder = match self.level {
                Level::Study => put(builder, tags::STUDY_INSTANCE_UID, single(&study.study_uid)?),
                _ => put(
                    builder,
                    tags::SERIES_INSTANCE_UID,
                    single(&series?.series_uid)?,
                ),
            };
        }
        if non_ascii {
            builder = builder.character_set("ISO_IR 192");
        }
        Some(Request {
            identifier: builder.dataset().clone(),
            expected: self.expected(pool, study, series),
        })
    }

    /// What the pool says a request on `study` (and `series`) should give:
    /// counted only where the keys select by unique keys or Patient ID
    /// alone (a wildcard or a range may match entities the pool does not
    /// hold; a drawn entity still always matches, so every find expects at
    /// least one match).
    fn expected(
        &self,
        pool: &KeyPool,
        study: &StudyEntry,
        series: Option<&SeriesEntry>,
    ) -> Option<u64> {
        if self.operation != Operation::Find {
            return match self.level {
                Level::Study => study.instance_count,
                _ => series?.instance_count,
            };
        }
        let chosen: Vec<KeyKind> = self
            .keys
            .iter()
            .copied()
            .filter(|key| {
                key.attribute(self.model, self.level)
                    .is_some_and(|(_, level)| level == self.level)
            })
            .collect();
        let only = |allowed: &[KeyKind]| chosen.iter().all(|key| allowed.contains(key));
        match self.level {
            Level::Patient if chosen.contains(&KeyKind::PatientId) => Some(1),
            Level::Study
                if chosen.contains(&KeyKind::StudyUid)
                    && only(&[KeyKind::StudyUid, KeyKind::PatientId]) =>
            {
                Some(1)
            }
            Level::Study
                if (chosen == [KeyKind::PatientId])
                    || (chosen.is_empty() && self.model == InformationModel::PatientRoot) =>
            {
                Some(pool.studies_of_patient(&study.patient_id))
            }
            Level::Series
                if chosen.contains(&KeyKind::SeriesUid) && only(&[KeyKind::SeriesUid]) =>
            {
                Some(1)
            }
            Level::Series if chosen.is_empty() && study.series_complete => {
                Some(study.series.len() as u64)
            }
            Level::Image
                if chosen.contains(&KeyKind::SopInstanceUid)
                    && only(&[KeyKind::SopInstanceUid]) =>
            {
                Some(1)
            }
            Level::Image if chosen.is_empty() => series?.instance_count,
            _ => None,
        }
    }

    /// A short description for results: `find STUDY patient-id,study-date (study root)`.
    pub fn describe(&self) -> String {
        let keys: Vec<&str> = self.keys.iter().map(|key| key.name()).collect();
        let mut text = format!("{} {}", operation_name(self.operation), self.level);
        if !keys.is_empty() {
            text.push(' ');
            text.push_str(&keys.join(","));
        }
        text.push_str(&format!(" ({})", self.model.name()));
        if self.operation == Operation::Move {
            text.push_str(&format!(" to {}", self.move_destination));
        }
        text
    }
}

/// The keys a query asks to have returned at `level`, beside its matching keys.
fn return_keys(model: InformationModel, level: Level) -> &'static [Tag] {
    match (level, model) {
        (Level::Patient, _) => &[
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::PATIENT_BIRTH_DATE,
            tags::PATIENT_SEX,
        ],
        (Level::Study, InformationModel::StudyRoot) => &[
            tags::STUDY_DATE,
            tags::STUDY_TIME,
            tags::ACCESSION_NUMBER,
            tags::MODALITIES_IN_STUDY,
            tags::STUDY_DESCRIPTION,
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::STUDY_INSTANCE_UID,
            tags::STUDY_ID,
        ],
        (Level::Study, InformationModel::PatientRoot) => &[
            tags::STUDY_DATE,
            tags::STUDY_TIME,
            tags::ACCESSION_NUMBER,
            tags::MODALITIES_IN_STUDY,
            tags::STUDY_DESCRIPTION,
            tags::STUDY_INSTANCE_UID,
            tags::STUDY_ID,
        ],
        (Level::Series, _) => &[
            tags::MODALITY,
            SERIES_DESCRIPTION,
            tags::SERIES_INSTANCE_UID,
            tags::SERIES_NUMBER,
        ],
        (Level::Image, _) => &[
            tags::SOP_CLASS_UID,
            tags::SOP_INSTANCE_UID,
            tags::INSTANCE_NUMBER,
        ],
    }
}

/// A value usable as a single-value key: present, and without the
/// characters that would make it a wildcard or a list.
fn single(value: &str) -> Option<&str> {
    let usable = !value.is_empty() && !value.contains(['*', '?', '\\']);
    usable.then_some(value)
}

/// `SMITH^JOHN` -> `SMITH^JO*`: the name without its last two characters
/// (the whole name when shorter than five), then `*`.
fn name_wildcard(name: &str) -> Option<String> {
    let name = single(name.trim_end())?;
    let length = name.chars().count();
    let keep = if length >= 5 { length - 2 } else { length };
    Some(
        name.chars()
            .take(keep)
            .chain(std::iter::once('*'))
            .collect(),
    )
}

/// `D-D'` with `D'` `window` days after `D`, or `D` alone for a window of 0.
fn date_range(date: &str, window_days: u32) -> Option<String> {
    let first = parse_date(date)?;
    if window_days == 0 {
        return Some(format_date(first));
    }
    Some(format!(
        "{}-{}",
        format_date(first),
        format_date(first + i64::from(window_days))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{InstanceRecord, PoolBuilder, PoolLimits};
    use sluice_net::dimse::dataset::SmallDatasetEncoding;
    use sluice_net::query::{CharacterSet, DatasetCandidate, Query, QueryContext};

    /// Two patients; patient A has two studies (CT+SR, MR), B one (CT).
    fn pool() -> KeyPool {
        let mut builder = PoolBuilder::new(PoolLimits::default());
        let rows = [
            (
                "1.1",
                "1.1.1",
                "1.1.1.1",
                "PA",
                "Yamada^Tarou=山田^太郎",
                "20240105",
                "CT",
            ),
            (
                "1.1",
                "1.1.1",
                "1.1.1.2",
                "PA",
                "Yamada^Tarou=山田^太郎",
                "20240105",
                "CT",
            ),
            (
                "1.1",
                "1.1.2",
                "1.1.2.1",
                "PA",
                "Yamada^Tarou=山田^太郎",
                "20240105",
                "SR",
            ),
            (
                "1.2",
                "1.2.1",
                "1.2.1.1",
                "PA",
                "Yamada^Tarou=山田^太郎",
                "20230301",
                "MR",
            ),
            (
                "1.3", "1.3.1", "1.3.1.1", "PB", "DOE^JOHN", "20240110", "CT",
            ),
        ];
        for (study, series, instance, patient, name, date, modality) in rows {
            builder.add_instance(InstanceRecord {
                study_uid: study.into(),
                series_uid: series.into(),
                sop_instance_uid: instance.into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                patient_id: patient.into(),
                patient_name: name.into(),
                study_date: date.into(),
                modality: modality.into(),
                transfer_syntax_uid: String::new(),
            });
        }
        builder.finish("test")
    }

    fn spec(
        operation: Operation,
        model: InformationModel,
        level: Level,
        keys: &[KeyKind],
    ) -> RetrieveSpec {
        RetrieveSpec {
            operation,
            model,
            level,
            keys: keys.to_vec(),
            date_window_days: 7,
            move_destination: "DEST".into(),
        }
    }

    /// The entity a request was drawn for, as a data set net's matcher reads.
    fn entity(pool: &KeyPool, request: &Request) -> SmallDataset {
        let identifier = &request.identifier;
        let study = pool
            .studies
            .iter()
            .find(|study| {
                identifier.str(tags::STUDY_INSTANCE_UID).is_none_or(|uid| uid.is_empty() || uid == study.study_uid)
                    && identifier.str(tags::PATIENT_ID).is_none_or(|id| id.is_empty() || id == study.patient_id)
                    // A name wildcard is the drawn name's head; a date range starts at its date.
                    && identifier
                        .str(tags::PATIENT_NAME)
                        .is_none_or(|name| study.patient_name.starts_with(name.trim_end_matches('*')))
                    && identifier
                        .str(tags::STUDY_DATE)
                        .is_none_or(|date| date.is_empty() || date.starts_with(&study.study_date))
                    && identifier
                        .str(tags::MODALITIES_IN_STUDY)
                        .is_none_or(|modality| modality.is_empty() || study.modalities.iter().any(|m| m == modality))
            })
            .unwrap();
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::SPECIFIC_CHARACTER_SET, None, "ISO_IR 192");
        dataset.put_str(tags::STUDY_INSTANCE_UID, None, &study.study_uid);
        dataset.put_str(tags::PATIENT_ID, None, &study.patient_id);
        dataset.put_str(tags::PATIENT_NAME, None, &study.patient_name);
        dataset.put_str(tags::STUDY_DATE, None, &study.study_date);
        dataset.put_str(
            tags::MODALITIES_IN_STUDY,
            None,
            &study.modalities.join("\\"),
        );
        let series_uid = identifier
            .str(tags::SERIES_INSTANCE_UID)
            .filter(|uid| !uid.is_empty());
        let modality = identifier
            .str(tags::MODALITY)
            .filter(|modality| !modality.is_empty());
        // The series named, or else a series of the study with the modality asked.
        let series = pool
            .series
            .iter()
            .find(|series| match (series_uid, modality) {
                (Some(uid), _) => series.series_uid == uid,
                (None, Some(modality)) => {
                    pool.studies[series.study].study_uid == study.study_uid
                        && series.modality == modality
                }
                (None, None) => false,
            });
        if let Some(series) = series {
            dataset.put_str(tags::SERIES_INSTANCE_UID, None, &series.series_uid);
            dataset.put_str(tags::MODALITY, None, &series.modality);
        }
        if let Some(uid) = identifier
            .str(tags::SOP_INSTANCE_UID)
            .filter(|uid| !uid.is_empty())
        {
            dataset.put_str(tags::SOP_INSTANCE_UID, None, uid);
        }
        dataset
    }

    #[test]
    fn every_valid_find_decodes_under_net_and_matches_the_drawn_entity() {
        let pool = pool();
        let mut rng = fastrand::Rng::with_seed(5);
        let combinations: &[(InformationModel, Level, &[KeyKind])] = &[
            (InformationModel::StudyRoot, Level::Study, &[]),
            (
                InformationModel::StudyRoot,
                Level::Study,
                &[KeyKind::StudyUid],
            ),
            (
                InformationModel::StudyRoot,
                Level::Study,
                &[KeyKind::PatientId],
            ),
            (
                InformationModel::StudyRoot,
                Level::Study,
                &[KeyKind::PatientName, KeyKind::StudyDate],
            ),
            (
                InformationModel::StudyRoot,
                Level::Study,
                &[KeyKind::Modality],
            ),
            (InformationModel::StudyRoot, Level::Series, &[]),
            (
                InformationModel::StudyRoot,
                Level::Series,
                &[KeyKind::Modality, KeyKind::StudyUid],
            ),
            (
                InformationModel::StudyRoot,
                Level::Series,
                &[KeyKind::SeriesUid],
            ),
            (InformationModel::StudyRoot, Level::Image, &[]),
            (
                InformationModel::StudyRoot,
                Level::Image,
                &[KeyKind::SopInstanceUid],
            ),
            (
                InformationModel::PatientRoot,
                Level::Patient,
                &[KeyKind::PatientId],
            ),
            (
                InformationModel::PatientRoot,
                Level::Patient,
                &[KeyKind::PatientName],
            ),
            (
                InformationModel::PatientRoot,
                Level::Study,
                &[KeyKind::StudyDate],
            ),
            (
                InformationModel::PatientRoot,
                Level::Study,
                &[KeyKind::PatientId],
            ),
            (
                InformationModel::PatientRoot,
                Level::Image,
                &[KeyKind::SopInstanceUid],
            ),
        ];
        for &(model, level, keys) in combinations {
            let spec = spec(Operation::Find, model, level, keys);
            spec.check().unwrap();
            spec.check_pool(&pool).unwrap();
            for _ in 0..20 {
                let request = spec.request(&pool, &mut rng).unwrap();
                let bytes = request
                    .identifier
                    .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
                    .unwrap();
                let context = QueryContext::new(model, Operation::Find);
                let query = Query::decode(
                    &bytes,
                    SmallDatasetEncoding::ExplicitVrLittleEndian,
                    &context,
                )
                .unwrap_or_else(|error| panic!("{}: {error:?}", spec.describe()));
                assert_eq!(query.level(), level);
                let entity = entity(&pool, &request);
                let charset = CharacterSet::of_dataset(&entity);
                assert!(
                    query.matches(&DatasetCandidate::new(&entity, &charset)),
                    "{}: {:?} does not match {:?}",
                    spec.describe(),
                    request.identifier,
                    entity
                );
            }
        }
    }

    #[test]
    fn retrieves_decode_as_net_expects_and_count_instances() {
        let pool = pool();
        let mut rng = fastrand::Rng::with_seed(9);
        for operation in [Operation::Move, Operation::Get] {
            for model in [InformationModel::StudyRoot, InformationModel::PatientRoot] {
                for level in [Level::Study, Level::Series] {
                    let spec = spec(operation, model, level, &[]);
                    spec.check().unwrap();
                    for _ in 0..10 {
                        let request = spec.request(&pool, &mut rng).unwrap();
                        let bytes = request
                            .identifier
                            .encode(SmallDatasetEncoding::ImplicitVrLittleEndian)
                            .unwrap();
                        Query::decode(
                            &bytes,
                            SmallDatasetEncoding::ImplicitVrLittleEndian,
                            &QueryContext::new(model, operation),
                        )
                        .unwrap_or_else(|error| panic!("{}: {error:?}", spec.describe()));
                        let uid = request.identifier.str(level.unique_key()).unwrap();
                        let expected = match level {
                            Level::Study => {
                                pool.studies
                                    .iter()
                                    .find(|s| s.study_uid == uid)
                                    .unwrap()
                                    .instance_count
                            }
                            _ => {
                                pool.series
                                    .iter()
                                    .find(|s| s.series_uid == uid)
                                    .unwrap()
                                    .instance_count
                            }
                        };
                        assert_eq!(request.expected, expected);
                        assert!(expected.is_some());
                    }
                }
            }
        }
    }

    #[test]
    fn expectations_follow_the_pool() {
        let pool = pool();
        let mut rng = fastrand::Rng::with_seed(3);
        let by_patient = spec(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Study,
            &[KeyKind::PatientId],
        );
        for _ in 0..20 {
            let request = by_patient.request(&pool, &mut rng).unwrap();
            let patient = request.identifier.str(tags::PATIENT_ID).unwrap();
            assert_eq!(request.expected, Some(if patient == "PA" { 2 } else { 1 }));
        }
        let series = spec(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Series,
            &[],
        );
        for _ in 0..20 {
            let request = series.request(&pool, &mut rng).unwrap();
            let study = request.identifier.str(tags::STUDY_INSTANCE_UID).unwrap();
            assert_eq!(request.expected, Some(if study == "1.1" { 2 } else { 1 }));
        }
        let dated = spec(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Study,
            &[KeyKind::StudyDate],
        );
        assert_eq!(dated.request(&pool, &mut rng).unwrap().expected, None);
    }

    #[test]
    fn values_are_built_as_documented() {
        assert_eq!(name_wildcard("SMITH^JOHN").as_deref(), Some("SMITH^JO*"));
        assert_eq!(name_wildcard("DOE").as_deref(), Some("DOE*"));
        assert_eq!(name_wildcard("山田^太郎").as_deref(), Some("山田^*"));
        assert_eq!(name_wildcard("A*B"), None);
        assert_eq!(
            date_range("20240228", 2).as_deref(),
            Some("20240228-20240301")
        );
        assert_eq!(date_range("20240228", 0).as_deref(), Some("20240228"));
        assert_eq!(date_range("", 2), None);
        assert_eq!(single("a\\b"), None);
        assert_eq!(
            parse_keys("patient-id, modality,patient-id").unwrap(),
            vec![KeyKind::PatientId, KeyKind::Modality]
        );
        assert!(parse_keys("accession").is_err());
    }

    #[test]
    fn invalid_specifications_are_refused_with_the_reason() {
        let refused = |operation, model, level, keys: &[KeyKind]| {
            spec(operation, model, level, keys)
                .check()
                .unwrap_err()
                .to_string()
        };
        assert!(refused(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Patient,
            &[]
        )
        .contains("no PATIENT level"));
        assert!(refused(
            Operation::Find,
            InformationModel::PatientRoot,
            Level::Study,
            &[KeyKind::PatientName]
        )
        .contains("PATIENT key"));
        assert!(refused(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Series,
            &[KeyKind::StudyDate]
        )
        .contains("not a key of a SERIES query"));
        assert!(refused(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Image,
            &[KeyKind::Modality]
        )
        .contains("Modalities in Study"));
        assert!(refused(
            Operation::Move,
            InformationModel::StudyRoot,
            Level::Image,
            &[]
        )
        .contains("STUDY or SERIES"));
        assert!(refused(
            Operation::Get,
            InformationModel::StudyRoot,
            Level::Study,
            &[KeyKind::PatientId]
        )
        .contains("find only"));
        let empty = PoolBuilder::new(PoolLimits::default()).finish("nothing");
        let find = spec(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Study,
            &[],
        );
        assert!(find
            .check_pool(&empty)
            .unwrap_err()
            .to_string()
            .contains("no studies"));
        let by_uid = spec(
            Operation::Find,
            InformationModel::StudyRoot,
            Level::Image,
            &[KeyKind::SopInstanceUid],
        );
        let mut builder = PoolBuilder::new(PoolLimits {
            instances_max: 0,
            ..PoolLimits::default()
        });
        builder.add_instance(InstanceRecord {
            study_uid: "1".into(),
            series_uid: "1.1".into(),
            sop_instance_uid: "1.1.1".into(),
            ..InstanceRecord::default()
        });
        assert!(by_uid
            .check_pool(&builder.finish("h"))
            .unwrap_err()
            .to_string()
            .contains("SOP Instance UIDs"));
    }
}
