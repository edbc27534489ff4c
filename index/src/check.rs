//! The consistency check: every table agrees with every other.
//!
//! Used by the crash tests after each recovery and meant for a `sluice check`
//! command. It reads the whole index in one transaction and keeps a count per
//! series and per study in memory (tens of bytes per series), so it is an
//! offline tool, not something to run on the ingest path.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::IndexError;
use crate::keys::{check_uid, file_id_key, read_u64, secondary_key, split_key, triplet_key};
use crate::read::ReadTxn;
use crate::records::{
    decode, CommitmentRecord, QuarantineEntry, SeriesRecord, StoredInstance, StudyRecord,
};
use crate::tables::{Table, FILE_ROLE_INSTANCE, FILE_ROLE_QUARANTINE, META_NEXT_QUARANTINE_ID};

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyReport {
    /// Stored instances.
    pub instances: u64,
    /// Series records.
    pub series: u64,
    /// Study records.
    pub studies: u64,
    /// Quarantine entries.
    pub quarantine_entries: u64,
    /// Commitment records.
    pub commitments: u64,
    /// Disagreements found (at most the limit given).
    pub problems: Vec<String>,
    /// More problems were found than listed.
    pub problems_truncated: bool,
}

impl ConsistencyReport {
    /// True if no problem was found.
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, limit: usize, text: String) {
        if self.problems.len() < limit {
            self.problems.push(text);
        } else {
            self.problems_truncated = true;
        }
    }
}

#[derive(Default)]
struct StudyCount {
    instances: u32,
    series: BTreeSet<String>,
    modalities: BTreeSet<String>,
}

impl ReadTxn<'_> {
    /// Checks that the tables agree; lists at most `problems_max` problems.
    pub fn check_consistency(&self, problems_max: usize) -> Result<ConsistencyReport, IndexError> {
        let shared = self.shared();
        let tables = shared.tables;
        let txn = self.raw_txn();
        let lmdb = |operation| move |error| IndexError::from_heed(operation, error, shared.limits);
        let get = |table: Table, key: &[u8]| table.get(txn, key).map_err(lmdb("check: get"));
        let mut report = ConsistencyReport::default();
        let mut series_counts: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut file_ids_expected = 0u64;

        for entry in tables
            .instances
            .iter(txn)
            .map_err(lmdb("check: scan instances"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan instances"))?;
            report.instances += 1;
            let Some(sop) = std::str::from_utf8(key)
                .ok()
                .filter(|sop| check_uid("", sop).is_ok())
            else {
                report.problem(problems_max, format!("instances: bad key {key:?}"));
                continue;
            };
            let stored = match decode::<StoredInstance>("instances", bytes) {
                Ok(stored) => stored,
                Err(error) => {
                    report.problem(problems_max, format!("instances: {sop}: {error}"));
                    continue;
                }
            };
            let (study, series) = (&stored.study_instance_uid, &stored.series_instance_uid);
            if check_uid("", study).is_err() || check_uid("", series).is_err() {
                report.problem(
                    problems_max,
                    format!("instances: {sop}: invalid study or series UID"),
                );
                continue;
            }
            if get(tables.series_instances, &triplet_key(study, series, sop))?.is_none() {
                report.problem(
                    problems_max,
                    format!("series_instances: {study}/{series}/{sop} is not listed"),
                );
            }
            file_ids_expected += 1;
            let file_id = stored.record.file_id;
            if get(tables.file_ids, &file_id_key(file_id))? != Some(&[FILE_ROLE_INSTANCE][..]) {
                report.problem(
                    problems_max,
                    format!(
                        "file_ids: {:#x} of {sop} is not an instance file",
                        file_id.0
                    ),
                );
            }
            *series_counts
                .entry((study.clone(), series.clone()))
                .or_default() += 1;
        }
        let listed = tables
            .series_instances
            .len(txn)
            .map_err(lmdb("check: count listing"))?;
        if listed != report.instances {
            report.problem(
                problems_max,
                format!(
                    "series_instances has {listed} entries for {} instances",
                    report.instances
                ),
            );
        }

        let mut study_counts: BTreeMap<String, StudyCount> = BTreeMap::new();
        for entry in tables
            .series
            .iter(txn)
            .map_err(lmdb("check: scan series"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan series"))?;
            report.series += 1;
            let Some([study, series]) = split_key::<2>(key) else {
                report.problem(problems_max, format!("series: bad key {key:?}"));
                continue;
            };
            let record = match decode::<SeriesRecord>("series", bytes) {
                Ok(record) => record,
                Err(error) => {
                    report.problem(problems_max, format!("series {study}/{series}: {error}"));
                    continue;
                }
            };
            let counted = series_counts
                .remove(&(study.to_owned(), series.to_owned()))
                .unwrap_or(0);
            if counted != record.number_of_instances {
                report.problem(
                    problems_max,
                    format!(
                        "series {study}/{series}: records {} instances, has {counted}",
                        record.number_of_instances
                    ),
                );
            }
            let study_count = study_counts.entry(study.to_owned()).or_default();
            study_count.instances += counted;
            study_count.series.insert(series.to_owned());
            if !record.attributes.modality.is_empty() {
                study_count
                    .modalities
                    .insert(record.attributes.modality.clone());
            }
        }
        for ((study, series), counted) in series_counts {
            report.problem(
                problems_max,
                format!("series {study}/{series}: {counted} instances but no series record"),
            );
        }

        let mut secondary_expected = [0u64; 3];
        for entry in tables
            .studies
            .iter(txn)
            .map_err(lmdb("check: scan studies"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan studies"))?;
            report.studies += 1;
            let study = String::from_utf8_lossy(key).into_owned();
            let record = match decode::<StudyRecord>("studies", bytes) {
                Ok(record) => record,
                Err(error) => {
                    report.problem(problems_max, format!("study {study}: {error}"));
                    continue;
                }
            };
            let counted = study_counts.remove(&study).unwrap_or_default();
            if counted.instances != record.number_of_instances || counted.instances == 0 {
                report.problem(
                    problems_max,
                    format!(
                        "study {study}: records {} instances, has {}",
                        record.number_of_instances, counted.instances
                    ),
                );
            }
            if counted.series.len() as u32 != record.number_of_series {
                report.problem(
                    problems_max,
                    format!(
                        "study {study}: records {} series, has {}",
                        record.number_of_series,
                        counted.series.len()
                    ),
                );
            }
            let modalities: Vec<String> = counted.modalities.into_iter().collect();
            if modalities != record.modalities_in_study {
                report.problem(
                    problems_max,
                    format!(
                        "study {study}: modalities {:?}, series say {modalities:?}",
                        record.modalities_in_study
                    ),
                );
            }
            let indexed = [
                (
                    tables.study_by_patient_id,
                    "study_by_patient_id",
                    &record.attributes.patient_id,
                ),
                (
                    tables.study_by_date,
                    "study_by_date",
                    &record.attributes.study_date,
                ),
                (
                    tables.study_by_accession,
                    "study_by_accession",
                    &record.attributes.accession_number,
                ),
            ];
            for (position, (table, name, value)) in indexed.into_iter().enumerate() {
                if value.is_empty() {
                    continue;
                }
                secondary_expected[position] += 1;
                if get(table, &secondary_key(value, &study))?.is_none() {
                    report.problem(problems_max, format!("{name}: no entry for study {study}"));
                }
            }
        }
        for (study, _) in study_counts {
            report.problem(
                problems_max,
                format!("study {study}: has series but no study record"),
            );
        }
        for (position, (table, name)) in [
            (tables.study_by_patient_id, "study_by_patient_id"),
            (tables.study_by_date, "study_by_date"),
            (tables.study_by_accession, "study_by_accession"),
        ]
        .into_iter()
        .enumerate()
        {
            let entries = table.len(txn).map_err(lmdb("check: count secondary"))?;
            if entries != secondary_expected[position] {
                report.problem(
                    problems_max,
                    format!(
                        "{name} has {entries} entries, studies need {}",
                        secondary_expected[position]
                    ),
                );
            }
        }

        let next_quarantine_id = match get(tables.meta, META_NEXT_QUARANTINE_ID)? {
            None => 1,
            Some(bytes) => read_u64(bytes).unwrap_or(0),
        };
        for entry in tables
            .quarantine
            .iter(txn)
            .map_err(lmdb("check: scan quarantine"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan quarantine"))?;
            report.quarantine_entries += 1;
            let entry = match decode::<QuarantineEntry>("quarantine", bytes) {
                Ok(entry) => entry,
                Err(error) => {
                    report.problem(problems_max, format!("quarantine {key:?}: {error}"));
                    continue;
                }
            };
            if read_u64(key) != Some(entry.id) || entry.id >= next_quarantine_id {
                report.problem(
                    problems_max,
                    format!("quarantine {}: bad key or id past the counter", entry.id),
                );
            }
            file_ids_expected += 1;
            let file_id = entry.instance.record.file_id;
            if get(tables.file_ids, &file_id_key(file_id))? != Some(&[FILE_ROLE_QUARANTINE][..]) {
                report.problem(
                    problems_max,
                    format!(
                        "file_ids: {:#x} of quarantine {} is not a quarantine file",
                        file_id.0, entry.id
                    ),
                );
            }
        }
        let file_entries = tables
            .file_ids
            .len(txn)
            .map_err(lmdb("check: count file ids"))?;
        if file_entries != file_ids_expected {
            report.problem(
                problems_max,
                format!("file_ids has {file_entries} entries, {file_ids_expected} expected"),
            );
        }

        for entry in tables
            .commitments
            .iter(txn)
            .map_err(lmdb("check: scan commitments"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan commitments"))?;
            report.commitments += 1;
            if let Err(error) = decode::<CommitmentRecord>("commitments", bytes) {
                report.problem(
                    problems_max,
                    format!("commitment {}: {error}", String::from_utf8_lossy(key)),
                );
            }
        }
        Ok(report)
    }
}
