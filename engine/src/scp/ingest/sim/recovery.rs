//! Start-up recovery over the simulation's disk and index, step by step as
//! `crate::recovery::recover` does it (its module documentation is the
//! model): entries in doubt settled against their files (where the entry
//! names them, in the other area, in `tmp/`), `tmp/` emptied, unreferenced
//! files indexed again when sealed and complete (in arrival order, the
//! `quarantine` policy) or moved to `orphans/`, then every entry checked
//! for its file (a file found in the other area with the right size moved
//! into place). The checks of a file are the simulation's own (its header
//! and seal are not a Part 10 file's): [`complete`] and [`sealed`].

use sluice_index::{
    ConflictPolicy, Disposition, DuplicatePolicy, FileId, Location, StoreRequest, WriteOp,
    WriteOutcome,
};

use super::disk::{Disk, Place};
use super::index::{Doubt, Entry, State};
use super::{checksum_of, new_instance, seal_of, sop_of_file, HEADER_BYTES};
use crate::store::part10::SEAL_BYTES;

/// What recovery did.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) in_doubt_kept: u64,
    pub(super) in_doubt_removed: u64,
    pub(super) reindexed: u64,
    pub(super) orphaned: u64,
    /// Entries whose file is missing or of the wrong size after recovery.
    pub(super) damaged: Vec<String>,
}

/// Whether `bytes` hold the instance `entry` names: its size and the
/// checksum of its data set (what `store::check::check_file` compares).
pub(super) fn complete(bytes: &[u8], entry: &Entry) -> bool {
    bytes.len() as u64 == entry.size
        && bytes.len() >= HEADER_BYTES
        && checksum_of(&bytes[HEADER_BYTES..]) == entry.checksum
}

/// The data set of a file whose seal proves it complete (what
/// `recovery::reindex` requires before indexing a file again).
pub(super) fn sealed(bytes: &[u8]) -> Option<&[u8]> {
    let seal = bytes.get(HEADER_BYTES - SEAL_BYTES..HEADER_BYTES)?;
    let data = &bytes[HEADER_BYTES..];
    (seal == seal_of(data)).then_some(data)
}

fn area_of(quarantined: bool) -> Place {
    if quarantined {
        Place::Quarantine
    } else {
        Place::Objects
    }
}

/// Runs recovery on a disk and index that survived a cut.
pub(super) fn recover(disk: &mut Disk, index: &mut State) -> Report {
    let mut report = Report::default();
    // 0. Entries in doubt.
    let doubts: Vec<(FileId, Doubt)> = std::mem::take(&mut index.in_doubt).into_iter().collect();
    for (file_id, doubt) in doubts {
        let (entry, quarantined, id) = match &doubt {
            Doubt::Instance(sop) => match index.instances.get(sop) {
                Some(entry) if entry.file_id == file_id => (entry.clone(), false, None),
                _ => continue,
            },
            Doubt::Quarantine(id) => match index.quarantine.get(id) {
                Some(entry) if entry.file_id == file_id => (entry.clone(), true, Some(*id)),
                _ => continue,
            },
        };
        let place = (area_of(quarantined), file_id);
        let candidates = [
            place,
            (area_of(!quarantined), file_id),
            (Place::Tmp, file_id),
        ];
        let complete_at = candidates.iter().find(|name| {
            disk.read(**name)
                .is_some_and(|bytes| complete(bytes, &entry))
        });
        if let Some(&found) = complete_at {
            if found != place {
                disk.move_durably(found, place);
            }
            report.in_doubt_kept += 1;
            continue;
        }
        for name in candidates {
            if disk.read(name).is_some() {
                disk.move_durably(name, (Place::Orphans, file_id));
            }
        }
        match id {
            None => index.remove_instance_of(&entry.sop, file_id),
            Some(id) => index.remove_quarantine_of(id, file_id),
        };
        report.in_doubt_removed += 1;
    }
    // 1. tmp/ emptied.
    for file_id in disk.files_in(Place::Tmp) {
        disk.remove_durably((Place::Tmp, file_id));
    }
    // 2. Unreferenced files: sealed and complete ones indexed again (in
    //    arrival order: file ids grow), the rest to orphans/.
    let mut again = Vec::new();
    for area in [Place::Objects, Place::Quarantine] {
        for file_id in disk.files_in(area) {
            if index.file_ids.contains(&file_id) {
                continue;
            }
            let name = (area, file_id);
            let bytes = disk.read(name).unwrap_or_default();
            match sealed(bytes).and_then(|data| Some((sop_of_file(bytes)?, data.to_vec()))) {
                Some((sop, data)) => again.push((file_id, area, sop, data)),
                None => {
                    disk.move_durably(name, (Place::Orphans, file_id));
                    report.orphaned += 1;
                }
            }
        }
    }
    again.sort_by_key(|(file_id, ..)| *file_id);
    for (file_id, area, sop, data) in again {
        let request = StoreRequest {
            instance: new_instance(&sop, file_id, &data),
            duplicate_policy: DuplicatePolicy::Quarantine,
            conflict_policy: ConflictPolicy::Quarantine,
            in_doubt: false,
            flagged: None,
            location: Location::File,
        };
        let target = match index.apply(&WriteOp::Store(request)) {
            Ok(WriteOutcome::Store(outcome)) => match outcome.disposition() {
                None => Some(Place::Objects),
                Some(Disposition::Quarantined { .. }) => Some(Place::Quarantine),
                Some(_) => None,
            },
            _ => None,
        };
        match target {
            Some(target) => {
                if target != area {
                    disk.move_durably((area, file_id), (target, file_id));
                }
                report.reindexed += 1;
            }
            None => {
                disk.move_durably((area, file_id), (Place::Orphans, file_id));
                report.orphaned += 1;
            }
        }
    }
    // 3. Every entry has its file, of its size (moved in from the other
    //    area if found there).
    let entries: Vec<(Entry, bool)> = index
        .entries()
        .map(|(entry, quarantined)| (entry.clone(), quarantined))
        .collect();
    for (entry, quarantined) in entries {
        let place = (area_of(quarantined), entry.file_id);
        let size_ok = |bytes: &[u8]| bytes.len() as u64 == entry.size;
        if disk.read(place).is_some_and(size_ok) {
            continue;
        }
        let other = (area_of(!quarantined), entry.file_id);
        if disk.read(place).is_none() && disk.read(other).is_some_and(size_ok) {
            disk.move_durably(other, place);
            continue;
        }
        report.damaged.push(format!(
            "{} (file {:#x}, quarantined: {quarantined})",
            entry.sop, entry.file_id.0
        ));
    }
    report
}
