//! The values retrieval workloads query and retrieve by: a [`KeyPool`] of
//! studies and series (their UIDs, patient, date, modalities and how many
//! instances each holds where that is known), filled before a run from
//! the loadgen's own history file ([`KeyPool::from_history`]) or from a
//! first universal query against the target ([`discover`]), then shared
//! read-only by every core, which draws from it per operation.
//!
//! The pool is bounded ([`PoolLimits`]): a history of millions of
//! instances keeps its first studies and series up to the limits, and
//! says so in its description.

pub mod discover;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::history::{HistoryError, Outcome};

/// Bounds on what a pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Studies kept.
    pub studies_max: usize,
    /// Series kept.
    pub series_max: usize,
    /// SOP Instance UIDs kept (only needed for image-level queries by UID).
    pub instances_max: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            studies_max: 100_000,
            series_max: 200_000,
            instances_max: 1_000_000,
        }
    }
}

/// One study of the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyEntry {
    /// Study Instance UID.
    pub study_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Name (Unicode text).
    pub patient_name: String,
    /// Study Date (`YYYYMMDD`, or empty when unknown).
    pub study_date: String,
    /// Modalities of its series (distinct, sorted).
    pub modalities: Vec<String>,
    /// Indices of its series in [`KeyPool::series`].
    pub series: Vec<usize>,
    /// Instances it holds, when the source says.
    pub instance_count: Option<u64>,
    /// Every series of the study is in the pool (none was left out at a limit).
    pub series_complete: bool,
}

/// One series of the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesEntry {
    /// Its study, an index in [`KeyPool::studies`].
    pub study: usize,
    /// Series Instance UID.
    pub series_uid: String,
    /// Modality.
    pub modality: String,
    /// SOP Instance UIDs known (kept up to [`PoolLimits::instances_max`]).
    pub instances: Vec<String>,
    /// Instances it holds, when the source says.
    pub instance_count: Option<u64>,
}

/// What retrieval workloads draw from. Built once, then read-only.
#[derive(Debug, Clone, Default)]
pub struct KeyPool {
    /// Studies.
    pub studies: Vec<StudyEntry>,
    /// Series.
    pub series: Vec<SeriesEntry>,
    /// Distinct SOP Class UIDs seen (the storage contexts a C-GET proposes).
    pub sop_classes: Vec<String>,
    /// Distinct transfer syntaxes the instances were stored in (a C-GET
    /// proposes them beside Little Endian, so an archive that keeps data as
    /// received can send it unconverted).
    pub transfer_syntaxes: Vec<String>,
    /// Studies per Patient ID.
    studies_of_patient: HashMap<String, u64>,
    /// Where the keys came from and what was left out, for the result file.
    pub description: String,
}

impl KeyPool {
    /// The instances a history file records as stored (the loadgen's own
    /// earlier runs against the target), up to `limits`.
    pub fn from_history(path: &Path, limits: PoolLimits) -> Result<KeyPool, HistoryError> {
        let mut builder = PoolBuilder::new(limits);
        crate::history::read(path, |line| {
            if line.outcome != Outcome::Stored {
                return;
            }
            builder.add_instance(InstanceRecord {
                study_uid: line.study_instance_uid,
                series_uid: line.series_instance_uid,
                sop_instance_uid: line.sop_instance_uid,
                sop_class_uid: line.sop_class_uid,
                patient_id: line.patient_id,
                patient_name: line.patient_name,
                study_date: line.study_date,
                modality: line.modality,
                transfer_syntax_uid: line.transfer_syntax_uid,
            });
        })?;
        Ok(builder.finish(&format!("history {}", path.display())))
    }

    /// Studies with this Patient ID in the pool.
    pub fn studies_of_patient(&self, patient_id: &str) -> u64 {
        self.studies_of_patient
            .get(patient_id)
            .copied()
            .unwrap_or(0)
    }

    /// A study drawn uniformly.
    pub fn draw_study(&self, rng: &mut fastrand::Rng) -> Option<&StudyEntry> {
        (!self.studies.is_empty())
            .then(|| self.studies.get(rng.usize(..self.studies.len())))
            .flatten()
    }

    /// A series drawn uniformly, with its study.
    pub fn draw_series(&self, rng: &mut fastrand::Rng) -> Option<(&StudyEntry, &SeriesEntry)> {
        if self.series.is_empty() {
            return None;
        }
        let series = self.series.get(rng.usize(..self.series.len()))?;
        Some((self.studies.get(series.study)?, series))
    }

    /// Instances the pool knows in its series (their SOP Instance UIDs).
    pub fn instances_known(&self) -> usize {
        self.series
            .iter()
            .map(|series| series.instances.len())
            .sum()
    }
}

/// One instance as a source reports it (a history line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient's Name.
    pub patient_name: String,
    /// Study Date.
    pub study_date: String,
    /// Modality.
    pub modality: String,
    /// The transfer syntax it was stored in (empty when unknown).
    pub transfer_syntax_uid: String,
}

/// Builds a [`KeyPool`] from instances, or from studies and series.
#[derive(Debug, Default)]
pub struct PoolBuilder {
    limits: PoolLimits,
    studies: Vec<StudyEntry>,
    series: Vec<SeriesEntry>,
    study_index: HashMap<String, usize>,
    series_index: HashMap<String, usize>,
    sop_classes: BTreeSet<String>,
    transfer_syntaxes: BTreeSet<String>,
    instances_kept: usize,
    /// Instance counts are those of the records added (a complete source,
    /// the history), not reported by the target.
    counted: bool,
    left_out: u64,
}

impl PoolBuilder {
    /// An empty builder.
    pub fn new(limits: PoolLimits) -> PoolBuilder {
        PoolBuilder {
            limits,
            ..PoolBuilder::default()
        }
    }

    /// Adds one instance; its study and series are created on first sight.
    /// Instances of studies or series beyond the limits are left out
    /// (counted in the description).
    pub fn add_instance(&mut self, record: InstanceRecord) {
        self.counted = true;
        let Some(study) = self.study(&record.study_uid, |entry| {
            entry.patient_id = record.patient_id.clone();
            entry.patient_name = record.patient_name.clone();
            entry.study_date = record.study_date.clone();
            entry.series_complete = true;
        }) else {
            self.left_out += 1;
            return;
        };
        let Some(series) = self.add_series(study, &record.series_uid, &record.modality, None)
        else {
            self.left_out += 1;
            if let Some(entry) = self.studies.get_mut(study) {
                entry.series_complete = false;
                entry.instance_count = None;
            }
            return;
        };
        if let Some(entry) = self.studies.get_mut(study) {
            // A study with a series left out has no count the pool can vouch for.
            if entry.series_complete {
                *entry.instance_count.get_or_insert(0) += 1;
            }
        }
        let keep = self.instances_kept < self.limits.instances_max;
        if let Some(entry) = self.series.get_mut(series) {
            *entry.instance_count.get_or_insert(0) += 1;
            if keep && !record.sop_instance_uid.is_empty() {
                entry.instances.push(record.sop_instance_uid);
                self.instances_kept += 1;
            }
        }
        if !record.sop_class_uid.is_empty() {
            self.sop_classes.insert(record.sop_class_uid);
        }
        if !record.transfer_syntax_uid.is_empty() {
            self.transfer_syntaxes.insert(record.transfer_syntax_uid);
        }
    }

    /// Adds a study (from a query); `None` when the study limit is reached.
    pub fn add_study(&mut self, entry: StudyEntry) -> Option<usize> {
        let uid = entry.study_uid.clone();
        self.study(&uid, |slot| {
            *slot = StudyEntry {
                series: Vec::new(),
                series_complete: false,
                ..entry
            }
        })
    }

    /// Says that every series of study `study` has been added.
    pub fn mark_series_complete(&mut self, study: usize) {
        if let Some(entry) = self.studies.get_mut(study) {
            entry.series_complete = true;
        }
    }

    /// Adds a series to study `study` (its index); `None` when the series
    /// limit is reached. The study's modalities are updated.
    pub fn add_series(
        &mut self,
        study: usize,
        series_uid: &str,
        modality: &str,
        instance_count: Option<u64>,
    ) -> Option<usize> {
        if let Some(&index) = self.series_index.get(series_uid) {
            return Some(index);
        }
        if self.series.len() >= self.limits.series_max || series_uid.is_empty() {
            return None;
        }
        let index = self.series.len();
        self.series.push(SeriesEntry {
            study,
            series_uid: series_uid.to_string(),
            modality: modality.to_string(),
            instances: Vec::new(),
            instance_count,
        });
        self.series_index.insert(series_uid.to_string(), index);
        if let Some(entry) = self.studies.get_mut(study) {
            entry.series.push(index);
            if !modality.is_empty() && !entry.modalities.iter().any(|known| known == modality) {
                entry.modalities.push(modality.to_string());
                entry.modalities.sort();
            }
        }
        Some(index)
    }

    /// Adds an instance UID (and its class) to series `series` (from a query).
    pub fn add_series_instance(
        &mut self,
        series: usize,
        sop_instance_uid: &str,
        sop_class_uid: &str,
    ) {
        if !sop_class_uid.is_empty() {
            self.sop_classes.insert(sop_class_uid.to_string());
        }
        if self.instances_kept >= self.limits.instances_max || sop_instance_uid.is_empty() {
            return;
        }
        if let Some(entry) = self.series.get_mut(series) {
            entry.instances.push(sop_instance_uid.to_string());
            self.instances_kept += 1;
        }
    }

    /// Notes a SOP class the target reports (SOP Classes in Study).
    pub fn add_sop_class(&mut self, sop_class_uid: &str) {
        if !sop_class_uid.is_empty() {
            self.sop_classes.insert(sop_class_uid.to_string());
        }
    }

    /// The study `uid`, created with `fill` on first sight; `None` at the limit.
    fn study(&mut self, uid: &str, fill: impl FnOnce(&mut StudyEntry)) -> Option<usize> {
        if let Some(&index) = self.study_index.get(uid) {
            return Some(index);
        }
        if self.studies.len() >= self.limits.studies_max || uid.is_empty() {
            return None;
        }
        let mut entry = StudyEntry {
            study_uid: uid.to_string(),
            ..StudyEntry::default()
        };
        fill(&mut entry);
        entry.study_uid = uid.to_string();
        let index = self.studies.len();
        self.studies.push(entry);
        self.study_index.insert(uid.to_string(), index);
        Some(index)
    }

    /// Studies added so far.
    pub fn study_count(&self) -> usize {
        self.studies.len()
    }

    /// Series added so far.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The study at `index`.
    pub fn study_entry(&self, index: usize) -> Option<&StudyEntry> {
        self.studies.get(index)
    }

    /// Series at `index`.
    pub fn series_entry(&self, index: usize) -> Option<&SeriesEntry> {
        self.series.get(index)
    }

    /// The pool, described as coming from `source`.
    pub fn finish(self, source: &str) -> KeyPool {
        let mut studies_of_patient: HashMap<String, u64> = HashMap::new();
        for study in &self.studies {
            if !study.patient_id.is_empty() {
                *studies_of_patient
                    .entry(study.patient_id.clone())
                    .or_insert(0) += 1;
            }
        }
        let mut description = format!(
            "{source}: {} studies, {} series, {} instance UIDs",
            self.studies.len(),
            self.series.len(),
            self.instances_kept
        );
        if self.left_out > 0 {
            description.push_str(&format!(
                " ({} instances of studies or series beyond the pool's limits left out)",
                self.left_out
            ));
        }
        if !self.counted {
            description.push_str(", instance counts as the target reports them");
        }
        KeyPool {
            studies: self.studies,
            series: self.series,
            sop_classes: self.sop_classes.into_iter().collect(),
            transfer_syntaxes: self.transfer_syntaxes.into_iter().collect(),
            studies_of_patient,
            description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        study: &str,
        series: &str,
        instance: &str,
        patient: &str,
        modality: &str,
    ) -> InstanceRecord {
        InstanceRecord {
            study_uid: study.into(),
            series_uid: series.into(),
            sop_instance_uid: instance.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            patient_id: patient.into(),
            patient_name: "DOE^J".into(),
            study_date: "20200101".into(),
            modality: modality.into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        }
    }

    #[test]
    fn instances_group_into_studies_and_series_with_counts() {
        let mut builder = PoolBuilder::new(PoolLimits::default());
        builder.add_instance(record("1.1", "1.1.1", "1.1.1.1", "P1", "CT"));
        builder.add_instance(record("1.2", "1.2.1", "1.2.1.1", "P1", "MR"));
        builder.add_instance(record("1.1", "1.1.1", "1.1.1.2", "P1", "CT"));
        builder.add_instance(record("1.1", "1.1.2", "1.1.2.1", "P1", "SR"));
        let pool = builder.finish("history");
        assert_eq!(pool.studies.len(), 2);
        assert_eq!(pool.series.len(), 3);
        let first = &pool.studies[0];
        assert_eq!(first.instance_count, Some(3));
        assert_eq!(first.series.len(), 2);
        assert_eq!(first.modalities, vec!["CT", "SR"]);
        assert_eq!(pool.series[0].instances, vec!["1.1.1.1", "1.1.1.2"]);
        assert_eq!(pool.series[0].instance_count, Some(2));
        assert_eq!(pool.studies_of_patient("P1"), 2);
        assert_eq!(pool.studies_of_patient("P2"), 0);
        assert_eq!(pool.sop_classes.len(), 1);
        assert_eq!(pool.transfer_syntaxes, vec!["1.2.840.10008.1.2.1"]);
        assert!(pool
            .description
            .starts_with("history: 2 studies, 3 series, 4 instance UIDs"));
    }

    #[test]
    fn limits_bound_the_pool_and_are_reported() {
        let mut builder = PoolBuilder::new(PoolLimits {
            studies_max: 1,
            series_max: 10,
            instances_max: 1,
        });
        builder.add_instance(record("1.1", "1.1.1", "a", "P1", "CT"));
        builder.add_instance(record("1.1", "1.1.1", "b", "P1", "CT"));
        builder.add_instance(record("1.2", "1.2.1", "c", "P2", "CT"));
        let pool = builder.finish("history");
        assert_eq!(pool.studies.len(), 1);
        assert_eq!(pool.series[0].instances, vec!["a"]);
        assert_eq!(pool.series[0].instance_count, Some(2));
        assert!(
            pool.description
                .contains("1 instances of studies or series beyond"),
            "{}",
            pool.description
        );
    }

    #[test]
    fn draws_cover_the_pool_and_an_empty_pool_draws_nothing() {
        let empty = PoolBuilder::new(PoolLimits::default()).finish("query");
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(empty.draw_study(&mut rng).is_none());
        assert!(empty.draw_series(&mut rng).is_none());
        let mut builder = PoolBuilder::new(PoolLimits::default());
        for index in 0..4 {
            builder.add_instance(record(
                &format!("1.{index}"),
                &format!("1.{index}.1"),
                "",
                "P",
                "CT",
            ));
        }
        let pool = builder.finish("history");
        let drawn: std::collections::BTreeSet<&str> = (0..200)
            .filter_map(|_| pool.draw_series(&mut rng))
            .map(|(study, series)| {
                assert_eq!(pool.studies[series.study].study_uid, study.study_uid);
                study.study_uid.as_str()
            })
            .collect();
        assert_eq!(drawn.len(), 4);
    }
}
