//! The publisher thread: outbox -> catalogue, in batches, and the losers of
//! the cluster-wide decision into quarantine.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver};
use sluice_index::{
    Disposition, FileId, QuarantineReason, StoreOutcome, Triplet, WriteOp, WriteOutcome,
};

use super::catalogue::{Catalogue, CatalogueError, Holder};
use super::outbox::Entry;
use super::{Cluster, Settings, State, Waiting};
use crate::config::{DuplicatePolicy, UidConflictPolicy};
use crate::store::in_doubt::InDoubtSet;
use crate::store::Store;

pub(crate) struct Publisher {
    pub(crate) settings: Settings,
    pub(crate) state: Arc<State>,
    pub(crate) cluster: Cluster,
    pub(crate) store: Store,
    pub(crate) in_doubt: InDoubtSet,
    /// The last run stopped uncleanly: reconcile at the first connect.
    pub(crate) reconcile: bool,
}

/// Why a publishing round stopped short.
enum Stopped {
    /// The catalogue failed: try again after the retry interval.
    Catalogue(CatalogueError),
    /// The outbox could not be read or its cursor written.
    Outbox(std::io::Error),
}

impl Publisher {
    pub(crate) fn run(self, wake: &Receiver<Waiting>, stop: &Receiver<()>) {
        let outbox = self.cluster.outbox();
        let mut reconcile = self.reconcile;
        let mut cursor = match outbox.cursor() {
            // A cursor renamed into place while the outbox's tail was lost
            // (a power loss) points past the end: new entries go there.
            Ok(cursor) => cursor.min(outbox.backlog_bytes(0)),
            Err(error) => {
                tracing::error!(%error, "cannot read the cluster outbox's cursor; publishing from its start (republishing is harmless)");
                0
            }
        };
        let mut catalogue: Option<Catalogue> = None;
        let mut next_attempt = Instant::now();
        let mut waiting: Vec<Waiting> = Vec::new();
        // Before-answer: the quarantine ids of demoted files whose batch
        // still waits for its answer.
        let mut demoted: HashMap<FileId, WriteOutcome> = HashMap::new();
        let mut stopping = false;
        let mut ever_connected = false;
        // The segments whose upload the catalogue has (and the uploader's
        // count when last checked).
        let mut uploads: (Option<u64>, HashSet<u64>) = (None, HashSet::new());
        // The first round runs at once: the backlog a restart left.
        let mut first = true;
        loop {
            let timeout = if waiting.is_empty() && !first {
                self.settings.interval
            } else {
                Duration::ZERO
            };
            first = false;
            select! {
                recv(wake) -> message => match message {
                    Ok(batch) => waiting.push(batch),
                    Err(_) => stopping = true,
                },
                recv(stop) -> _ => stopping = true,
                default(timeout) => {}
            }
            while let Ok(batch) = wake.try_recv() {
                waiting.push(batch);
            }
            if catalogue.is_none() && (Instant::now() >= next_attempt || stopping) {
                match Catalogue::connect(
                    &self.settings.address,
                    (
                        &self.settings.node,
                        self.settings.dicom_address.as_deref(),
                        &self.settings.ae_title,
                    ),
                    self.settings.timeout,
                ) {
                    Ok(connected) => {
                        if ever_connected {
                            tracing::info!(
                                backlog_bytes = outbox.backlog_bytes(cursor),
                                "the cluster catalogue is reachable again; publishing the backlog"
                            );
                        } else {
                            tracing::info!("connected to the cluster catalogue");
                        }
                        ever_connected = true;
                        self.state.reachable.store(true, Ordering::Relaxed);
                        self.state
                            .unreachable_since_unix_s
                            .store(0, Ordering::Relaxed);
                        catalogue = Some(connected);
                    }
                    Err(error) => {
                        self.unreachable(&error);
                        next_attempt = Instant::now() + self.settings.retry;
                    }
                }
            }
            if reconcile {
                if let Some(connected) = catalogue.as_mut() {
                    match self.reconcile(connected) {
                        Ok(()) => reconcile = false,
                        Err(error) => {
                            self.unreachable(&error);
                            catalogue = None;
                            next_attempt = Instant::now() + self.settings.retry;
                        }
                    }
                }
            }
            if let Some(connected) = catalogue.as_mut() {
                let covered: HashSet<FileId> = waiting
                    .iter()
                    .flat_map(|batch| batch.items.iter().map(|(_, file_id)| *file_id))
                    .collect();
                let published = self
                    .publish_backlog(connected, &mut cursor, &covered, &mut demoted)
                    .and_then(|()| {
                        self.publish_uploads(connected, &mut uploads)
                            .map_err(Stopped::Catalogue)
                    });
                match published {
                    Ok(()) => {}
                    Err(Stopped::Catalogue(error)) => {
                        self.unreachable(&error);
                        catalogue = None;
                        next_attempt = Instant::now() + self.settings.retry;
                    }
                    Err(Stopped::Outbox(error)) => {
                        tracing::error!(%error, "the cluster outbox failed; publishing stops until it is readable again");
                        next_attempt = Instant::now() + self.settings.retry;
                    }
                }
            }
            // Answer the waiting batches that are published, or that can
            // wait no longer (their entries are published later).
            let published_through = outbox.logical(cursor);
            let now = Instant::now();
            for batch in std::mem::take(&mut waiting) {
                if batch.end_offset <= published_through {
                    answer(batch, &mut demoted);
                } else if catalogue.is_none() || now >= batch.deadline || stopping {
                    (batch.post)(batch.result);
                } else {
                    waiting.push(batch);
                }
            }
            if waiting.is_empty() {
                debug_assert!(demoted.is_empty(), "a demotion without its batch");
                demoted.clear();
                match outbox.compact(cursor) {
                    Ok(compacted) => cursor = compacted,
                    Err(error) => tracing::warn!(%error, "cannot cut back the cluster outbox"),
                }
            }
            self.state
                .backlog_bytes
                .store(outbox.backlog_bytes(cursor), Ordering::Relaxed);
            if let Some(connected) = catalogue.as_mut() {
                if let Err(error) = connected.heartbeat(outbox.backlog_bytes(cursor), self.lag()) {
                    self.unreachable(&error);
                    catalogue = None;
                    next_attempt = Instant::now() + self.settings.retry;
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// The reconciliation pass after an unclean stop (`super::reconcile`);
    /// `Err` only for a catalogue error (the pass runs again at the next
    /// connect). Other failures are logged and end the pass.
    fn reconcile(&self, catalogue: &mut Catalogue) -> Result<(), CatalogueError> {
        let started = Instant::now();
        match super::reconcile::run(&self.store, catalogue, self.cluster.outbox()) {
            Ok(done) => {
                tracing::info!(
                    scanned = done.scanned,
                    appended = done.appended,
                    relocated = done.relocated,
                    catalogued = done.catalogued,
                    removed = done.removed,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "the last run did not stop cleanly: the local index was reconciled with the cluster catalogue"
                );
                Ok(())
            }
            Err(super::reconcile::ReconcileError::Catalogue(error)) => Err(error),
            Err(error) => {
                tracing::error!(%error, "the reconciliation of the local index with the cluster catalogue failed; entries the outbox lost stay unpublished");
                Ok(())
            }
        }
    }

    /// How old the oldest unpublished entry is (zero when none waits).
    fn lag(&self) -> Duration {
        let oldest = self
            .state
            .oldest_unpublished_unix_ns
            .load(Ordering::Relaxed);
        if oldest == 0 {
            return Duration::ZERO;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        Duration::from_nanos(now.saturating_sub(oldest))
    }

    /// Notes the catalogue unreachable (logged once per outage).
    fn unreachable(&self, error: &CatalogueError) {
        let was = self.state.reachable.swap(false, Ordering::Relaxed);
        let first = self.state.unreachable_since_unix_s.load(Ordering::Relaxed) == 0;
        if was || first {
            tracing::error!(%error, "the cluster catalogue is unreachable: ingest goes on local-only, entries wait in the outbox to be published");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_secs().max(1));
            self.state
                .unreachable_since_unix_s
                .store(now, Ordering::Relaxed);
        }
        *self
            .state
            .last_error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = error.to_string();
    }

    /// Publishes from `cursor` until the outbox is empty or an entry must
    /// wait (in doubt, and no batch waits for it).
    fn publish_backlog(
        &self,
        catalogue: &mut Catalogue,
        cursor: &mut u64,
        covered: &HashSet<FileId>,
        demoted: &mut HashMap<FileId, WriteOutcome>,
    ) -> Result<(), Stopped> {
        let outbox = self.cluster.outbox();
        loop {
            let read = outbox
                .read_from(*cursor, self.settings.batch_max)
                .map_err(Stopped::Outbox)?;
            if read.damaged_lines > 0 {
                tracing::error!(
                    lines = read.damaged_lines,
                    "damaged lines in the cluster outbox were skipped"
                );
            }
            if read.entries.is_empty() {
                if read.end_offset != *cursor {
                    *cursor = read.end_offset;
                    outbox.advance(*cursor).map_err(Stopped::Outbox)?;
                }
                self.state
                    .oldest_unpublished_unix_ns
                    .store(0, Ordering::Relaxed);
                return Ok(());
            }
            if let Some(first) = read.entries.first() {
                self.state
                    .oldest_unpublished_unix_ns
                    .store(first.received_at_unix_ns, Ordering::Relaxed);
            }
            let in_doubt = self.in_doubt.snapshot();
            // An entry in doubt may still fail (and be removed): it waits,
            // unless its batch waits for it (before-answer). The rest of
            // the read waits with it, to keep the cursor a single offset.
            let ready = read
                .entries
                .iter()
                .position(|entry| {
                    !entry.removed
                        && entry
                            .file_id()
                            .is_some_and(|id| in_doubt.contains(&id) && !covered.contains(&id))
                })
                .unwrap_or(read.entries.len());
            if ready == 0 {
                return Ok(());
            }
            let complete = ready == read.entries.len();
            let entries = read.entries.get(..ready).unwrap_or_default();
            let held = self.held_locally(entries);
            // A store the index still holds (the last line of each SOP
            // Instance UID: a republish after reconciliation may repeat
            // one), a place change of a file it still holds, and every
            // removal (the catalogue keeps a row that names another file).
            let mut seen = HashSet::new();
            let mut to_publish: Vec<Entry> = entries
                .iter()
                .zip(&held)
                .rev()
                .filter(|(entry, held)| {
                    entry.removed
                        || (**held
                            && (entry.relocated || seen.insert(entry.sop_instance_uid.as_str())))
                })
                .map(|(entry, _)| entry.clone())
                .collect();
            to_publish.reverse();
            self.locate_records(&mut to_publish);
            if !to_publish.is_empty() {
                let published = catalogue.publish(&to_publish).map_err(Stopped::Catalogue)?;
                self.state
                    .published
                    .fetch_add(to_publish.len() as u64, Ordering::Relaxed);
                for (entry, holder) in to_publish.iter().zip(published) {
                    if let Some(holder) = holder {
                        self.demote(entry, &holder, covered, demoted);
                    }
                }
            }
            if !complete {
                // Up to the first entry that waits: the offset of an entry
                // is not kept, so read again from the cursor next round
                // (publishing again is harmless: the catalogue knows them).
                return Ok(());
            }
            *cursor = read.end_offset;
            outbox.advance(*cursor).map_err(Stopped::Outbox)?;
        }
    }

    /// Fills each stored or relocated entry's record place and its
    /// segment's object key (once uploaded) from the local index: where the
    /// record lives now, for the catalogue. A file of the files layout has
    /// none.
    fn locate_records(&self, entries: &mut [Entry]) {
        let read = match self.store.index().read() {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "cannot read the index for the places of the entries published");
                return;
            }
        };
        for entry in entries.iter_mut().filter(|entry| !entry.removed) {
            let Some(file_id) = entry.file_id() else {
                continue;
            };
            if let Ok(sluice_index::Location::Record(place)) = read.location(file_id) {
                let key = read
                    .segment_object(place.segment)
                    .ok()
                    .flatten()
                    .map(|object| object.key);
                entry.record = Some((place, key));
            }
        }
    }

    /// Records the segments uploaded since the last call in the catalogue
    /// (their rows name the object key): one UPDATE per segment. Checked
    /// only when the uploader's count moved (and at the first round, for
    /// the uploads of an earlier run).
    fn publish_uploads(
        &self,
        catalogue: &mut Catalogue,
        published: &mut (Option<u64>, HashSet<u64>),
    ) -> Result<(), CatalogueError> {
        let Some(objects) = self.store.objects() else {
            return Ok(());
        };
        let count = objects.counters.uploaded_segments.load(Ordering::Relaxed);
        if published.0 == Some(count) {
            return Ok(());
        }
        let found = self
            .store
            .index()
            .read()
            .and_then(|read| read.segment_objects());
        let uploaded = match found {
            Ok(uploaded) => uploaded,
            Err(error) => {
                tracing::warn!(%error, "cannot read the index for the segments uploaded");
                return Ok(());
            }
        };
        let new: Vec<(u64, String)> = uploaded
            .into_iter()
            .filter(|(id, _)| !published.1.contains(id))
            .map(|(id, object)| (id, object.key))
            .collect();
        catalogue.segments_uploaded(&new)?;
        published.1.extend(new.iter().map(|(id, _)| *id));
        published.0 = Some(count);
        Ok(())
    }

    /// For each entry, whether the local index still holds it (stored
    /// under its file): one removed, replaced or demoted since is not
    /// published.
    fn held_locally(&self, entries: &[Entry]) -> Vec<bool> {
        let read = match self.store.index().read() {
            Ok(read) => read,
            Err(error) => {
                // Publishing an entry is safe to repeat, so publish them all.
                tracing::warn!(%error, "cannot read the index to check the entries before publishing them");
                return vec![true; entries.len()];
            }
        };
        entries
            .iter()
            .map(|entry| {
                entry.removed
                    || match read.instance_by_sop(&entry.sop_instance_uid) {
                        Ok(Some(found)) => Some(found.record.file_id) == entry.file_id(),
                        Ok(None) => false,
                        Err(_) => true,
                    }
            })
            .collect()
    }

    /// This node's entry lost to `holder`: the duplicate policies decide
    /// as on one node ([`verdict`]); the index entry goes now, the file by
    /// the job when its batch waits for the answer, else here.
    fn demote(
        &self,
        entry: &Entry,
        holder: &Holder,
        covered: &HashSet<FileId>,
        demoted: &mut HashMap<FileId, WriteOutcome>,
    ) {
        let Some(instance) = entry.instance() else {
            tracing::error!(sop = %entry.sop_instance_uid, "a damaged outbox entry lost in the catalogue; not quarantined");
            return;
        };
        let file_id = instance.record.file_id;
        let waiting = covered.contains(&file_id);
        let storage = &self.store.config().storage;
        let (hold, disposition) = verdict(
            entry,
            holder,
            storage.duplicate_policy,
            storage.uid_conflict_policy,
            waiting,
        );
        // Where its bytes are, before the demotion forgets a dropped
        // record's place: only a file of the files layout moves or goes.
        let is_record = matches!(
            self.store
                .index()
                .read()
                .and_then(|read| read.location(file_id)),
            Ok(sluice_index::Location::Record(_))
        );
        let writer = self.store.index().writer();
        let quarantine_id = match writer.execute(vec![WriteOp::Demote {
            instance,
            hold: hold.clone(),
        }]) {
            Ok(items) => match items.into_iter().next() {
                Some(Ok(WriteOutcome::Demoted {
                    removed: true,
                    quarantine_id,
                })) => quarantine_id,
                // Removed or replaced here meanwhile: nothing to do.
                Some(Ok(WriteOutcome::Demoted { removed: false, .. })) => return,
                other => panic!("a demotion answered {other:?}"),
            },
            Err(error) => {
                tracing::error!(%error, sop = %entry.sop_instance_uid, node = %holder.node, "cannot take back an instance another node holds; it stays stored here too");
                return;
            }
        };
        self.state.demoted.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            sop = %entry.sop_instance_uid,
            node = %holder.node,
            ?quarantine_id,
            "the SOP Instance UID is held by another node in the cluster catalogue; this node's copy is {}",
            if quarantine_id.is_some() { "quarantined" } else { "not kept (duplicate policy)" }
        );
        let outcome = match (quarantine_id, disposition) {
            (Some(quarantine_id), _) => {
                outcome_with(&hold, Disposition::Quarantined { quarantine_id })
            }
            (None, disposition) => outcome_with(&hold, disposition),
        };
        match (waiting, is_record, quarantine_id) {
            (true, _, _) => {
                demoted.insert(file_id, outcome);
            }
            // A record in a segment stays where it is (its place follows
            // the entry; a dropped one is dead bytes for compaction).
            (false, true, _) => {}
            (false, false, Some(_)) => self.move_to_quarantine(file_id),
            (false, false, None) => self.discard(file_id),
        }
    }

    /// Deletes an answered instance's file that nothing references now
    /// (dropped as a byte-identical duplicate).
    fn discard(&self, file_id: FileId) {
        let path = self.store.layout().object_path(file_id);
        if let Err(error) = std::fs::remove_file(&path).and_then(|()| sync_parent(&path)) {
            tracing::error!(%error, path = %path.display(), "cannot delete a dropped duplicate's file; start-up recovery will find it unreferenced");
        }
    }

    /// Moves an answered instance's file from `objects/` to `quarantine/`.
    fn move_to_quarantine(&self, file_id: FileId) {
        let layout = self.store.layout();
        let from = layout.object_path(file_id);
        let to = layout.quarantine_path(file_id);
        let moved = to
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&from, &to))
            .and_then(|()| sync_parent(&to))
            .and_then(|()| sync_parent(&from));
        if let Err(error) = moved {
            tracing::error!(%error, from = %from.display(), to = %to.display(), "cannot move a quarantined file; start-up recovery will find it in the wrong area");
        }
    }
}

/// Flushes the directory holding `path` (the rename's entries).
fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// What the duplicate policies make of an entry that lost to `holder`:
/// the quarantine reason when it is held (else it is not kept), and the
/// disposition its answer names when not held. Rejecting needs the answer
/// still to come (`waiting`): an instance already answered success is held
/// instead, never deleted. `replace` would need the holder to give way,
/// which is not built: held too (docs/design/scale-out.md).
pub(crate) fn verdict(
    entry: &Entry,
    holder: &Holder,
    duplicate_policy: DuplicatePolicy,
    conflict_policy: UidConflictPolicy,
    waiting: bool,
) -> (Option<QuarantineReason>, Disposition) {
    let same_triplet = holder.study_instance_uid == entry.study_instance_uid
        && holder.series_instance_uid == entry.series_instance_uid;
    if !same_triplet {
        let reason = QuarantineReason::SopInstanceConflict {
            stored: Triplet::new(
                &holder.study_instance_uid,
                &holder.series_instance_uid,
                &entry.sop_instance_uid,
            ),
        };
        return match conflict_policy {
            UidConflictPolicy::Reject if waiting => (None, Disposition::Rejected),
            _ => (Some(reason), Disposition::Rejected),
        };
    }
    let identical =
        holder.checksum == entry.checksum && holder.file_size_bytes == entry.file_size_bytes;
    match duplicate_policy {
        DuplicatePolicy::DropIfIdentical if identical => (None, Disposition::Dropped),
        DuplicatePolicy::Reject if waiting => (None, Disposition::Rejected),
        _ if identical => (
            Some(QuarantineReason::DuplicateIdentical),
            Disposition::Rejected,
        ),
        _ => (Some(QuarantineReason::Duplicate), Disposition::Rejected),
    }
}

/// The store outcome an answer names for a demoted instance.
fn outcome_with(hold: &Option<QuarantineReason>, disposition: Disposition) -> WriteOutcome {
    let outcome = match hold {
        Some(QuarantineReason::SopInstanceConflict { stored }) => {
            StoreOutcome::SopInstanceConflict {
                stored: stored.clone(),
                disposition,
            }
        }
        Some(QuarantineReason::DuplicateIdentical) => StoreOutcome::DuplicateIdentical(disposition),
        Some(_) => StoreOutcome::Duplicate(disposition),
        None => match disposition {
            Disposition::Dropped => StoreOutcome::DuplicateIdentical(disposition),
            _ => StoreOutcome::Duplicate(disposition),
        },
    };
    WriteOutcome::Store(outcome)
}

/// Answers a batch whose entries are published, its losers as what the
/// policies made of them.
fn answer(mut batch: Waiting, demoted: &mut HashMap<FileId, WriteOutcome>) {
    if let Ok(items) = &mut batch.result {
        for (position, file_id) in &batch.items {
            if let Some(outcome) = demoted.remove(file_id) {
                if let Some(item) = items.get_mut(*position) {
                    *item = Ok(outcome);
                }
            }
        }
    }
    (batch.post)(batch.result);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(study: &str, checksum: &str) -> Entry {
        let instance = sluice_index::NewInstance {
            triplet: Triplet::new(study, "1.2.3", "1.2.3.4"),
            record: sluice_index::InstanceRecord {
                file_id: FileId(9),
                file_size_bytes: 100,
                dataset_offset_bytes: 0,
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
                checksum: sluice_index::Checksum([0; 16]),
                received_at_unix_ns: 1,
                calling_ae_title: "A".into(),
                instance_number: None,
            },
            study: sluice_index::StudyAttributes::default(),
            series: sluice_index::SeriesAttributes::default(),
        };
        let mut entry = Entry::of(&instance);
        entry.checksum = checksum.to_owned();
        assert_eq!(entry.instance().map(|i| i.triplet), Some(instance.triplet));
        entry
    }

    fn holder(study: &str, checksum: &str) -> Holder {
        Holder {
            node: "other".into(),
            study_instance_uid: study.into(),
            series_instance_uid: "1.2.3".into(),
            checksum: checksum.into(),
            file_size_bytes: 100,
        }
    }

    #[test]
    fn the_duplicate_policies_decide_as_on_one_node_but_never_delete_what_was_answered() {
        use DuplicatePolicy as D;
        use UidConflictPolicy as C;
        let same = holder("1.2", "aa");
        let other_bytes = holder("1.2", "bb");
        let other_study = holder("1.9", "aa");
        let ours = entry("1.2", "aa");
        let conflict = QuarantineReason::SopInstanceConflict {
            stored: Triplet::new("1.9", "1.2.3", "1.2.3.4"),
        };
        // (holder, duplicate policy, conflict policy, waiting) -> hold, disposition
        let table = [
            (
                &same,
                D::Quarantine,
                C::Quarantine,
                true,
                Some(QuarantineReason::DuplicateIdentical),
                Disposition::Rejected,
            ),
            (
                &other_bytes,
                D::Quarantine,
                C::Quarantine,
                false,
                Some(QuarantineReason::Duplicate),
                Disposition::Rejected,
            ),
            (
                &same,
                D::DropIfIdentical,
                C::Quarantine,
                false,
                None,
                Disposition::Dropped,
            ),
            (
                &other_bytes,
                D::DropIfIdentical,
                C::Quarantine,
                true,
                Some(QuarantineReason::Duplicate),
                Disposition::Rejected,
            ),
            (
                &other_bytes,
                D::Reject,
                C::Quarantine,
                true,
                None,
                Disposition::Rejected,
            ),
            // Answered success already: held, not deleted.
            (
                &other_bytes,
                D::Reject,
                C::Quarantine,
                false,
                Some(QuarantineReason::Duplicate),
                Disposition::Rejected,
            ),
            (
                &other_bytes,
                D::Replace,
                C::Quarantine,
                true,
                Some(QuarantineReason::Duplicate),
                Disposition::Rejected,
            ),
            (
                &other_study,
                D::Quarantine,
                C::Quarantine,
                true,
                Some(conflict.clone()),
                Disposition::Rejected,
            ),
            (
                &other_study,
                D::Quarantine,
                C::Reject,
                true,
                None,
                Disposition::Rejected,
            ),
            (
                &other_study,
                D::Quarantine,
                C::Reject,
                false,
                Some(conflict),
                Disposition::Rejected,
            ),
        ];
        for (row, (holder, duplicate, conflict, waiting, hold, disposition)) in
            table.into_iter().enumerate()
        {
            assert_eq!(
                verdict(&ours, holder, duplicate, conflict, waiting),
                (hold, disposition),
                "row {row}"
            );
        }
    }
}
