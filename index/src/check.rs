//! The consistency check: every table agrees with every other.
//!
//! Used by the crash tests after each recovery and meant for a `sluice check`
//! command. It reads the whole index in one transaction and keeps a count per
//! series and per study in memory (tens of bytes per series), so it is an
//! offline tool, not something to run on the ingest path. It also looks up
//! every instance's SOP Instance UID in the SOP index: each must name the
//! instance's series (the property `sop_index` relies on), and no other
//! series may hold the same UID (in a process that owns the SOP index).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::IndexError;
use crate::keys::{
    check_uid, file_id_key, instance_key, patient_name_values, read_u64, secondary_key, series_key,
    split_instance_key, split_key,
};
use crate::location::RecordPlace;
use crate::read::ReadTxn;
use crate::records::{
    decode, CommitmentRecord, QuarantineEntry, SeriesIdentity, StoredRecord, StoredSeries,
    StudyRecord,
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
        let mut file_ids_expected = 0u64;

        let mut identities: BTreeMap<u64, SeriesIdentity> = BTreeMap::new();
        for entry in tables
            .series_ids
            .iter(txn)
            .map_err(lmdb("check: scan series ids"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan series ids"))?;
            let Some(id) = read_u64(key) else {
                report.problem(problems_max, format!("series_ids: bad key {key:?}"));
                continue;
            };
            match decode::<SeriesIdentity>("series_ids", bytes) {
                Ok(identity) => {
                    identities.insert(id, identity);
                }
                Err(error) => report.problem(problems_max, format!("series id {id}: {error}")),
            }
        }

        // Without the SOP index (another process owns it) its check is left
        // out: a scan per instance would make the check quadratic.
        let check_sop_index = shared.sop_index.is_owned();
        let mut instances_by_series: BTreeMap<u64, u32> = BTreeMap::new();
        for entry in tables
            .instances
            .iter(txn)
            .map_err(lmdb("check: scan instances"))?
        {
            let (key, bytes) = entry.map_err(lmdb("check: scan instances"))?;
            report.instances += 1;
            let Some((series_id, sop)) =
                split_instance_key(key).filter(|(_, sop)| check_uid("", sop).is_ok())
            else {
                report.problem(problems_max, format!("instances: bad key {key:?}"));
                continue;
            };
            let record = match decode::<StoredRecord>("instances", bytes) {
                Ok(record) => record,
                Err(error) => {
                    report.problem(problems_max, format!("instance {series_id}/{sop}: {error}"));
                    continue;
                }
            };
            if !identities.contains_key(&series_id) {
                report.problem(
                    problems_max,
                    format!("instance {sop}: series id {series_id} names no series"),
                );
            }
            *instances_by_series.entry(series_id).or_default() += 1;
            file_ids_expected += 1;
            let file_id = record.file_id;
            if get(tables.file_ids, &file_id_key(file_id))? != Some(&[FILE_ROLE_INSTANCE][..]) {
                report.problem(
                    problems_max,
                    format!(
                        "file_ids: {:#x} of {sop} is not an instance file",
                        file_id.0
                    ),
                );
            }
            if !check_sop_index {
                continue;
            }
            let candidates = self.sop_candidates(sop)?;
            if !candidates.contains(&series_id) {
                report.problem(
                    problems_max,
                    format!("sop_index: {sop} does not name its series id {series_id}"),
                );
            }
            for other in candidates.into_iter().filter(|other| *other != series_id) {
                if get(tables.instances, &instance_key(other, sop))?.is_some() {
                    report.problem(
                        problems_max,
                        format!("{sop} is stored under series ids {series_id} and {other}"),
                    );
                }
            }
        }

        let mut study_counts: BTreeMap<String, StudyCount> = BTreeMap::new();
        let mut series_ids_seen = 0u64;
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
            let stored = match decode::<StoredSeries>("series", bytes) {
                Ok(stored) => stored,
                Err(error) => {
                    report.problem(problems_max, format!("series {study}/{series}: {error}"));
                    continue;
                }
            };
            let record = &stored.record;
            match identities.get(&stored.id) {
                Some(identity)
                    if identity.study_instance_uid == study
                        && identity.series_instance_uid == series
                        && identity.defaults == stored.defaults =>
                {
                    series_ids_seen += 1;
                }
                _ => report.problem(
                    problems_max,
                    format!(
                        "series {study}/{series}: series_ids does not name it under id {}",
                        stored.id
                    ),
                ),
            }
            let counted = instances_by_series.remove(&stored.id).unwrap_or(0);
            if counted != record.number_of_instances || counted == 0 {
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
        for (series_id, counted) in instances_by_series {
            let name = identities.get(&series_id).map(|identity| {
                String::from_utf8_lossy(&series_key(
                    &identity.study_instance_uid,
                    &identity.series_instance_uid,
                ))
                .replace('\0', "/")
            });
            report.problem(
                problems_max,
                format!(
                    "series id {series_id} ({name:?}): {counted} instances but no series record"
                ),
            );
        }
        if series_ids_seen != identities.len() as u64 {
            report.problem(
                problems_max,
                format!(
                    "series_ids has {} entries for {series_ids_seen} series",
                    identities.len()
                ),
            );
        }
        let mut secondary_expected = [0u64; 4];
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
            for value in patient_name_values(&record.attributes.patient_name) {
                secondary_expected[3] += 1;
                let key = secondary_key(&value, &study);
                if get(tables.study_by_patient_name, &key)?.is_none() {
                    report.problem(
                        problems_max,
                        format!("study_by_patient_name: no entry {value:?} for study {study}"),
                    );
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
            (tables.study_by_patient_name, "study_by_patient_name"),
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

        // Every record place belongs to a referenced file id, and each
        // segment's live count is the sum of the places in it.
        let mut live: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for entry in tables
            .locations
            .iter(txn)
            .map_err(lmdb("check: scan locations"))?
        {
            let (key, value) = entry.map_err(lmdb("check: scan locations"))?;
            if get(tables.file_ids, key)?.is_none() {
                report.problem(
                    problems_max,
                    format!("locations: {key:02x?} names a file id no entry references"),
                );
            }
            match RecordPlace::decode(value) {
                Ok(place) => {
                    let sum = live.entry(place.segment).or_default();
                    sum.0 += place.length;
                    sum.1 += 1;
                }
                Err(error) => report.problem(problems_max, format!("locations: {error}")),
            }
        }
        for (segment, state) in self.segments()? {
            let (bytes, records) = live.remove(&segment).unwrap_or_default();
            if (state.live_bytes, state.live_records) != (bytes, records) {
                report.problem(
                    problems_max,
                    format!(
                        "segment {segment}: {} live bytes in {} records counted, {bytes} in {records} placed",
                        state.live_bytes, state.live_records
                    ),
                );
            }
        }
        for segment in live.keys() {
            report.problem(
                problems_max,
                format!("segment {segment} holds placed records but has no state"),
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
