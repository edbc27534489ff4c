//! The study and series records: their per-transaction caches, the
//! series ids, the counts kept in them, written once at flush.

use super::*;

impl<'t, 'e> Apply<'t, 'e> {
    /// The stored series' id (`None`: no such series).
    pub(super) fn series_id_of(&mut self, key: &[u8]) -> Result<Option<u64>, IndexError> {
        Ok(self
            .series_entry(key)?
            .current
            .as_ref()
            .map(|series| series.id))
    }

    /// The record defaults of a series that exists.
    pub(super) fn series_defaults(&self, key: &[u8]) -> Result<&RecordDefaults, IndexError> {
        self.series
            .get(key)
            .and_then(|cached| cached.current.as_ref())
            .map(|series| &series.defaults)
            .ok_or_else(|| IndexError::Corrupt {
                table: "series",
                detail: "defaults of a series that is not cached".into(),
            })
    }

    /// The study and series a series id names.
    pub(super) fn identity(&self, series_id: u64) -> Result<SeriesIdentity, IndexError> {
        let bytes = self
            .tables
            .series_ids
            .get(self.txn, &series_id_key(series_id))
            .map_err(self.lmdb("get series id"))?
            .ok_or_else(|| IndexError::Corrupt {
                table: "series_ids",
                detail: format!("series id {series_id} holds instances but names no series"),
            })?;
        decode::<SeriesIdentity>("series_ids", bytes)
    }

    pub(super) fn study_entry(&mut self, study: &str) -> Result<&mut CachedStudy, IndexError> {
        if !self.studies.contains_key(study) {
            let current = match self
                .tables
                .studies
                .get(self.txn, study.as_bytes())
                .map_err(self.lmdb("get study"))?
            {
                None => None,
                Some(bytes) => Some(decode::<StudyRecord>("studies", bytes)?),
            };
            self.studies.insert(
                study.to_owned(),
                CachedStudy {
                    current,
                    indexed: None,
                    dirty: false,
                },
            );
        }
        self.studies
            .get_mut(study)
            .ok_or_else(|| IndexError::Corrupt {
                table: "studies",
                detail: "study cache".into(),
            })
    }

    pub(super) fn series_entry(&mut self, key: &[u8]) -> Result<&mut CachedSeries, IndexError> {
        if !self.series.contains_key(key) {
            let current = match self
                .tables
                .series
                .get(self.txn, key)
                .map_err(self.lmdb("get series"))?
            {
                None => None,
                Some(bytes) => Some(decode::<StoredSeries>("series", bytes)?),
            };
            self.series.insert(
                key.to_owned(),
                CachedSeries {
                    current,
                    dirty: false,
                },
            );
        }
        self.series.get_mut(key).ok_or_else(|| IndexError::Corrupt {
            table: "series",
            detail: "series cache".into(),
        })
    }

    /// The next value of a `meta` counter (ids start at 1).
    pub(super) fn next_of(
        &mut self,
        which: fn(&mut Self) -> &mut Counter,
    ) -> Result<u64, IndexError> {
        let key = which(self).key;
        let id = match which(self).next {
            Some(id) => id,
            None => match self
                .tables
                .meta
                .get(self.txn, key)
                .map_err(self.lmdb("get meta"))?
            {
                None => 1,
                Some(bytes) => read_u64(bytes).ok_or_else(|| IndexError::Corrupt {
                    table: "meta",
                    detail: format!("{} is not 8 bytes", String::from_utf8_lossy(key)),
                })?,
            },
        };
        let counter = which(self);
        counter.next = Some(id.saturating_add(1));
        counter.dirty = true;
        Ok(id)
    }

    /// Counts a new instance in its series (`key`, which exists) and study.
    /// Attributes are normalised only when they are used: the whole study
    /// for a new study, else only a value that fills an empty attribute.
    pub(super) fn count_in_series_and_study(
        &mut self,
        instance: &NewInstance,
        key: &[u8],
        raw: bool,
    ) -> Result<(), IndexError> {
        let study = instance.triplet.study_instance_uid.as_str();
        // Both records loaded, then changed side by side.
        self.series_entry(key)?;
        self.study_entry(study)?;
        let (Some(series_entry), Some(study_entry)) =
            (self.series.get_mut(key), self.studies.get_mut(study))
        else {
            return Err(IndexError::Corrupt {
                table: "series",
                detail: "an instance counted in a series or study not cached".into(),
            });
        };
        series_entry.dirty = true;
        let series_record = &mut series_entry
            .current
            .as_mut()
            .ok_or_else(|| IndexError::Corrupt {
                table: "series",
                detail: "an instance counted in a series that does not exist".into(),
            })?
            .record;
        let new_series = series_record.number_of_instances == 0;
        series_record.number_of_instances = series_record.number_of_instances.saturating_add(1);
        if !new_series && series_record.attributes.has_empty() {
            series_record
                .attributes
                .fill_empty_from(&instance.series, raw);
        }
        let modality = &series_record.attributes.modality;

        study_entry.dirty = true;
        let new_study = study_entry.current.is_none();
        let fills = study_entry
            .current
            .as_ref()
            .is_some_and(|record| record.attributes.may_fill_from(&instance.study));
        if new_study || fills {
            study_entry.attributes_change();
        }
        let study_record = study_entry.current.get_or_insert_with(|| StudyRecord {
            attributes: if raw {
                instance.study.normalized()
            } else {
                instance.study.clone()
            },
            modalities_in_study: Vec::new(),
            number_of_series: 0,
            number_of_instances: 0,
        });
        study_record.number_of_instances = study_record.number_of_instances.saturating_add(1);
        if new_series {
            study_record.number_of_series = study_record.number_of_series.saturating_add(1);
        }
        if fills {
            study_record
                .attributes
                .fill_empty_from(&instance.study, raw);
        }
        if !modality.is_empty() {
            if let Err(position) = study_record.modalities_in_study.binary_search(modality) {
                study_record
                    .modalities_in_study
                    .insert(position, modality.clone());
            }
        }
        Ok(())
    }

    /// Fills empty series and study attributes from a replacing instance.
    pub(super) fn fill_series_and_study(
        &mut self,
        instance: &NewInstance,
    ) -> Result<(), IndexError> {
        let triplet = &instance.triplet;
        let series_entry = self.series_entry(&series_key(
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
        ))?;
        if let Some(series) = series_entry.current.as_mut() {
            if series.record.attributes.has_empty() {
                series_entry.dirty |= series
                    .record
                    .attributes
                    .fill_empty_from(&instance.series, true);
            }
        }
        let study_entry = self.study_entry(&triplet.study_instance_uid)?;
        let fills = study_entry
            .current
            .as_ref()
            .is_some_and(|record| record.attributes.may_fill_from(&instance.study));
        if fills {
            study_entry.attributes_change();
            if let Some(record) = study_entry.current.as_mut() {
                study_entry.dirty |= record.attributes.fill_empty_from(&instance.study, true);
            }
        }
        Ok(())
    }

    /// The distinct modalities of a study's series, sorted, as of now.
    pub(super) fn modalities_of_study(&mut self, study: &str) -> Result<Vec<String>, IndexError> {
        self.flush_series()?;
        let prefix = prefix_of(study.as_bytes());
        let mut modalities: Vec<String> = Vec::new();
        let iter = self
            .tables
            .series
            .prefix_iter(self.txn, &prefix)
            .map_err(self.lmdb("scan series"))?;
        for entry in iter {
            let (_, bytes) = entry.map_err(self.lmdb("scan series"))?;
            let series =
                crate::records::access::<crate::records::ArchivedStoredSeries>("series", bytes)?;
            let modality = series.record.attributes.modality.as_str();
            if !modality.is_empty() && !modalities.iter().any(|known| known == modality) {
                modalities.push(modality.to_owned());
            }
        }
        modalities.sort();
        Ok(modalities)
    }

    /// Writes the series records this transaction changed.
    pub(super) fn flush_series(&mut self) -> Result<(), IndexError> {
        let limits = self.limits;
        let lmdb = |operation| move |error| IndexError::from_heed(operation, error, limits);
        for (key, cached) in self.series.iter_mut() {
            if !std::mem::take(&mut cached.dirty) {
                continue;
            }
            match &cached.current {
                Some(series) => {
                    let buffer = encode_into("series", series, std::mem::take(&mut self.buffer))?;
                    let put = self.tables.series.put(self.txn, key, &buffer);
                    self.buffer = buffer;
                    put.map_err(lmdb("put record"))?;
                }
                None => {
                    self.tables
                        .series
                        .delete(self.txn, key)
                        .map_err(lmdb("delete series"))?;
                }
            }
        }
        Ok(())
    }
}
