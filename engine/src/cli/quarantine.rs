//! `sluice quarantine list|show|release|purge`: the duplicates held aside.
//!
//! Release semantics (also in the command's help): the quarantined instance
//! becomes the stored one (index writer `ReleaseQuarantine`), its file moves
//! from `quarantine/` to `objects/`, and the instance it replaces — an
//! acknowledged instance, possibly the only copy of those bytes — is never
//! deleted: its file moves to `orphans/<id>.dcm`, named by its file id, for
//! the operator to review and delete by hand. Purge deletes the entry and its
//! file: that is what the operator asked for, and the command says what it
//! deleted. A segment record (docs/design/segments.md) moves nowhere: a
//! quarantined record is checked (`check_record`) and released where it is
//! (the index keeps its place), a replaced or purged record becomes dead
//! bytes of its segment (the index drops it from the segment's live bytes
//! and records); nothing in a segment is ever unlinked.
//!
//! Crash safety of release: the file is first hard-linked to its new name in
//! `objects/` (directory synced), then the index commits, then the old
//! quarantine name is removed and the replaced file moved. A crash at any
//! point leaves an extra name or a file in `orphans/`, never an index entry
//! without its file, and recovery never moves a file whose id the index
//! references. In cluster mode the outbox's clean-stop marker is taken
//! before anything else (as `sluice compact` and `sluice migrate` do) and
//! put back only once the release's outbox line is flushed: a crash between
//! the commit and that line leaves no marker, so the server's next start
//! reconciles the catalogue with the index, which finds the release.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use sluice_index::{
    FileId, Location, QuarantineEntry, QuarantineReason, Released, WriteOp, WriteOutcome,
};

use super::browse::{place_of, write_record};
use super::format::{or_dash, rfc3339_utc, Table};
use super::{CliError, OpenStore, StoreArgs, LISTING_LIMIT_DEFAULT};
use crate::escape::Escaped;
use crate::store::check::{check_record, READ_CHUNK_BYTES};
use crate::store::layout::Area;

/// The `quarantine` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum QuarantineCommand {
    /// List quarantine entries, oldest first.
    ///
    /// Id, reason, UIDs, calling AE, receive time and size of each.
    List {
        /// Most rows to print (at least 1).
        #[arg(long, default_value_t = LISTING_LIMIT_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one quarantine entry and how it compares with the stored instance.
    Show {
        /// The quarantine entry's id (from `quarantine list`).
        id: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Store a quarantined instance in place of the stored one.
    ///
    /// The quarantined instance replaces the one holding its triplet (or its
    /// SOP Instance UID), and its file moves from quarantine/ to objects/.
    /// The replaced instance is NOT deleted: its file is moved to
    /// orphans/<file id>.dcm for review; delete it by hand once you are sure.
    /// Safe while `sluice serve` runs: the index write waits for LMDB's
    /// inter-process writer lock (the server's group commits are short).
    Release {
        /// The quarantine entry's id.
        id: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a quarantine entry and its file.
    ///
    /// The stored instance is untouched. Safe while `sluice serve` runs.
    Purge {
        /// The quarantine entry's id.
        id: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub(crate) fn run(
    command: QuarantineCommand,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    match command {
        QuarantineCommand::List { limit, store } => {
            list(&store.open()?, super::listing_limit(limit), output)
        }
        QuarantineCommand::Show { id, store } => show(&store.open()?, id, output),
        QuarantineCommand::Release { id, store } => release(
            &store.open_for_writing("sluice quarantine release")?,
            id,
            output,
        ),
        QuarantineCommand::Purge { id, store } => purge(
            &store.open_for_writing("sluice quarantine purge")?,
            id,
            output,
        ),
    }
}

fn reason_short(reason: &QuarantineReason) -> &'static str {
    match reason {
        QuarantineReason::Duplicate => "duplicate",
        QuarantineReason::DuplicateIdentical => "identical",
        QuarantineReason::SopInstanceConflict { .. } => "uid-conflict",
    }
}

fn reason_long(reason: &QuarantineReason) -> String {
    match reason {
        QuarantineReason::Duplicate => {
            "duplicate: the triplet was already stored, with a different data set".to_owned()
        }
        QuarantineReason::DuplicateIdentical => {
            "identical duplicate: the triplet was already stored with the same data set".to_owned()
        }
        QuarantineReason::SopInstanceConflict { stored } => format!(
            "SOP Instance UID conflict: the SOP Instance UID is stored in study {} series {}",
            stored.study_instance_uid, stored.series_instance_uid
        ),
    }
}

fn entry(store: &OpenStore, id: u64) -> Result<QuarantineEntry, CliError> {
    let txn = store.index.read().map_err(store.index_error())?;
    txn.quarantine_entry(id)
        .map_err(store.index_error())?
        .ok_or_else(|| store.not_found(format!("no quarantine entry with id {id}")))
}

/// Where the bytes of `file_id` are: a file, or a segment record.
fn location_of(store: &OpenStore, file_id: FileId) -> Result<Location, CliError> {
    let txn = store.index.read().map_err(store.index_error())?;
    txn.location(file_id).map_err(store.index_error())
}

fn list(store: &OpenStore, limit: usize, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    let listing = {
        let txn = store.index.read().map_err(store.index_error())?;
        txn.quarantine_entries(None, limit)
            .map_err(store.index_error())?
    };
    if listing.items.is_empty() {
        writeln!(
            output,
            "no quarantine entries in {}",
            store.data_dir().display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "ID",
        "REASON",
        "SOP INSTANCE UID",
        "STUDY INSTANCE UID",
        "CALLING AE",
        "RECEIVED",
        "SIZE",
    ]);
    for entry in &listing.items {
        let instance = &entry.instance;
        table.push(vec![
            entry.id.to_string(),
            reason_short(&entry.reason).to_owned(),
            instance.triplet.sop_instance_uid.clone(),
            instance.triplet.study_instance_uid.clone(),
            or_dash(&instance.record.calling_ae_title),
            rfc3339_utc(instance.record.received_at_unix_ns),
            instance.record.file_size_bytes.to_string(),
        ]);
    }
    table.write(output)?;
    if listing.truncated {
        writeln!(
            output,
            "(first {} entries shown; pass --limit to see more)",
            table.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(store: &OpenStore, id: u64, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    let entry = entry(store, id)?;
    let (location, stored) = {
        let txn = store.index.read().map_err(store.index_error())?;
        let location = txn
            .location(entry.instance.record.file_id)
            .map_err(store.index_error())?;
        let stored = match txn
            .instance_by_sop(&entry.instance.triplet.sop_instance_uid)
            .map_err(store.index_error())?
        {
            Some(stored) => {
                let at = txn
                    .location(stored.record.file_id)
                    .map_err(store.index_error())?;
                Some((stored, at))
            }
            None => None,
        };
        (location, stored)
    };
    writeln!(output, "{:<20} {}", "Quarantine id:", entry.id)?;
    writeln!(output, "{:<20} {}", "Reason:", reason_long(&entry.reason))?;
    write_record(
        output,
        &store.layout,
        Area::Quarantine,
        &entry.instance.triplet,
        &entry.instance.record,
        location,
    )?;
    let comparison = match stored {
        None => "none: no instance holds this SOP Instance UID now".to_owned(),
        Some((stored, at)) => {
            let same_data = stored.record.checksum == entry.instance.record.checksum
                && stored.record.dataset_size_bytes() == entry.instance.record.dataset_size_bytes();
            format!(
                "{} (received {} from {}); data set {}",
                place_of(&store.layout, Area::Objects, stored.record.file_id, at),
                rfc3339_utc(stored.record.received_at_unix_ns),
                or_dash(&stored.record.calling_ae_title),
                if same_data { "identical" } else { "differs" },
            )
        }
    };
    writeln!(output, "{:<20} {}", "Stored instance:", Escaped(comparison))?;
    Ok(ExitCode::SUCCESS)
}

/// Makes a directory's entries durable (a rename or link into it).
pub(super) fn sync_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(CliError::io("sync directory", dir))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The one outcome of a one-operation batch.
fn single_outcome(
    store: &OpenStore,
    operation: &'static str,
    op: WriteOp,
) -> Result<WriteOutcome, CliError> {
    let results = store
        .index
        .writer()
        .execute(vec![op])
        .map_err(store.index_error())?;
    match results.into_iter().next() {
        Some(Ok(outcome)) => Ok(outcome),
        Some(Err(invalid)) => Err(CliError::IndexRefused {
            operation,
            reason: invalid.to_string(),
        }),
        None => Err(CliError::IndexRefused {
            operation,
            reason: "the index answered nothing".to_owned(),
        }),
    }
}

/// Links a quarantined file to its object name before the release commits
/// (until the index commits, the file is reachable under its quarantine
/// name; after, under its object name; never neither); whether the link was
/// made now (not left by an interrupted release).
fn link_for_release(store: &OpenStore, entry: &QuarantineEntry) -> Result<bool, CliError> {
    let layout = &store.layout;
    let file_id = entry.instance.record.file_id;
    let quarantine_path = layout.quarantine_path(file_id);
    let object_path = layout.object_path(file_id);
    let quarantined_size = std::fs::metadata(&quarantine_path)
        .map_err(CliError::io("read", &quarantine_path))?
        .len();
    if quarantined_size != entry.instance.record.file_size_bytes {
        return Err(CliError::BadArgument(format!(
            "quarantined file {} has {quarantined_size} bytes, the index records {}; \
             not releasing a damaged file (inspect it, or purge the entry)",
            quarantine_path.display(),
            entry.instance.record.file_size_bytes
        )));
    }
    let object_dir = parent(&object_path);
    std::fs::create_dir_all(object_dir).map_err(CliError::io("create", object_dir))?;
    let linked_now = match std::fs::hard_link(&quarantine_path, &object_path) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            // Left by an interrupted release of this entry: the same id, so
            // the same file, if the size agrees.
            let existing = std::fs::metadata(&object_path)
                .map_err(CliError::io("read", &object_path))?
                .len();
            if existing != quarantined_size {
                return Err(CliError::BadArgument(format!(
                    "{} exists with {existing} bytes and is not this entry's file; not releasing",
                    object_path.display()
                )));
            }
            false
        }
        Err(error) => return Err(CliError::io("link", &object_path)(error)),
    };
    sync_dir(object_dir)?;
    Ok(linked_now)
}

/// A quarantined record is released where it is (the index keeps its place
/// through the release): it is checked first, so a damaged record is never
/// made the stored instance.
fn check_record_for_release(
    store: &OpenStore,
    entry: &QuarantineEntry,
    place: sluice_index::RecordPlace,
) -> Result<(), CliError> {
    let path = store.layout.segment_path(place.segment);
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    match check_record(
        &path,
        place.offset,
        &entry.instance.triplet,
        &entry.instance.record,
        &mut buffer,
    ) {
        None => Ok(()),
        Some(problem) => Err(CliError::BadArgument(format!(
            "quarantined record at offset {} of segment {:016x} ({}) is not whole and valid \
             ({problem:?}); not releasing a damaged record (inspect it, or purge the entry)",
            place.offset,
            place.segment,
            path.display()
        ))),
    }
}

fn release(store: &OpenStore, id: u64, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    release_then(store, id, output, || {})
}

/// [`release`], `committed` called as soon as the index committed it (a
/// test's kill point).
fn release_then(
    store: &OpenStore,
    id: u64,
    output: &mut dyn Write,
    committed: impl FnOnce(),
) -> Result<ExitCode, CliError> {
    let entry = entry(store, id)?;
    let layout = &store.layout;
    let file_id = entry.instance.record.file_id;
    let quarantine_path = layout.quarantine_path(file_id);
    let object_path = layout.object_path(file_id);
    // Where the entry's bytes are, and the stored instance's (a record the
    // release replaces becomes dead bytes, nothing to move): read before
    // the release, which forgets a replaced record's place.
    let (location, stored) = {
        let txn = store.index.read().map_err(store.index_error())?;
        let location = txn.location(file_id).map_err(store.index_error())?;
        let stored = match txn
            .file_id_of_sop(&entry.instance.triplet.sop_instance_uid)
            .map_err(store.index_error())?
        {
            Some(stored) => Some((stored, txn.location(stored).map_err(store.index_error())?)),
            None => None,
        };
        (location, stored)
    };
    // Cluster mode: the outbox's clean-stop marker is taken before the
    // release commits, so no crash after the commit leaves the marker
    // without the release's outbox line (see the module documentation).
    let cluster = store.data_dir().join(crate::cluster::CLUSTER_DIR);
    let offline = crate::cluster::Offline::open(store.data_dir())
        .map_err(CliError::io("open the cluster outbox in", &cluster))?;
    // Nothing committed: the marker goes back as it was.
    let untouched = |offline: Option<crate::cluster::Offline>| {
        if let Some(Err(error)) = offline.map(crate::cluster::Offline::finish) {
            tracing::warn!(%error, "cannot put the cluster outbox's clean-stop marker back; the next start reconciles the catalogue");
        }
    };
    let linked = match location {
        Location::File => link_for_release(store, &entry),
        Location::Record(place) => check_record_for_release(store, &entry, place).map(|()| false),
    };
    let linked_now = match linked {
        Ok(linked_now) => linked_now,
        Err(error) => {
            untouched(offline);
            return Err(error);
        }
    };
    let outcome = single_outcome(store, "the release", WriteOp::ReleaseQuarantine(id));
    let released: Released = match outcome {
        Ok(WriteOutcome::Released(Some(released))) => released,
        other => {
            untouched(offline);
            if linked_now {
                // Nothing references the new name: take it back.
                let _ = std::fs::remove_file(&object_path);
            }
            return match other {
                Ok(WriteOutcome::Released(None)) => {
                    Err(store.not_found(format!("no quarantine entry with id {id}")))
                }
                Ok(unexpected) => Err(CliError::IndexRefused {
                    operation: "the release",
                    reason: format!("unexpected outcome {unexpected:?}"),
                }),
                Err(error) => Err(error),
            };
        }
    };
    committed();
    // Cluster mode: the catalogue learns of it at the server's next start
    // (its row, or this node's row of the instance it replaces, takes the
    // released version; another node's row decides as for any store).
    // The release stands either way (the index committed it).
    if let Some(offline) = offline {
        let told = offline
            .stored(&released.instance)
            .and_then(|()| offline.finish());
        if let Err(error) = told {
            writeln!(
                output,
                "warning: cannot append the release to the cluster outbox in {} ({error}); \
                 the catalogue learns of it at the next reconciliation",
                cluster.display()
            )?;
        }
    }
    if location == Location::File {
        std::fs::remove_file(&quarantine_path).map_err(CliError::io("remove", &quarantine_path))?;
        sync_dir(parent(&quarantine_path))?;
    }
    let sop = Escaped(&released.instance.triplet.sop_instance_uid);
    writeln!(
        output,
        "released quarantine entry {id}: SOP Instance UID {sop} is now stored as {}",
        place_of(layout, Area::Objects, file_id, location)
    )?;
    if let Some(replaced) = released.replaced {
        let replaced_location = stored
            .filter(|(stored, _)| *stored == replaced.file_id)
            .map_or(Location::File, |(_, at)| at);
        if let Location::Record(place) = replaced_location {
            writeln!(
                output,
                "the instance it replaced (received {} from {}) is dead bytes of its record \
                 at {}; nothing to delete (compaction reclaims segment space)",
                rfc3339_utc(replaced.received_at_unix_ns),
                Escaped(or_dash(&replaced.calling_ae_title)),
                place_of(
                    layout,
                    Area::Objects,
                    replaced.file_id,
                    Location::Record(place)
                )
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let replaced_path = layout.object_path(replaced.file_id);
        let orphan_path = layout.orphan_path(replaced.file_id);
        let orphans_dir = layout.orphans_dir();
        std::fs::create_dir_all(&orphans_dir).map_err(CliError::io("create", &orphans_dir))?;
        match std::fs::rename(&replaced_path, &orphan_path) {
            Ok(()) => {
                sync_dir(&orphans_dir)?;
                sync_dir(parent(&replaced_path))?;
                writeln!(
                    output,
                    "the instance it replaced (received {} from {}) was moved to {}; \
                     delete it once reviewed",
                    rfc3339_utc(replaced.received_at_unix_ns),
                    Escaped(or_dash(&replaced.calling_ae_title)),
                    orphan_path.display()
                )?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                writeln!(
                    output,
                    "the instance it replaced had no file at {} (nothing moved)",
                    replaced_path.display()
                )?;
            }
            Err(error) => return Err(CliError::io("move", &replaced_path)(error)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn purge(store: &OpenStore, id: u64, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    // Read before the purge, which forgets a record's place.
    let location = location_of(store, entry(store, id)?.instance.record.file_id)?;
    let purged = match single_outcome(store, "the purge", WriteOp::PurgeQuarantine(id))? {
        WriteOutcome::Purged(Some(entry)) => entry,
        WriteOutcome::Purged(None) => {
            return Err(store.not_found(format!("no quarantine entry with id {id}")))
        }
        unexpected => {
            return Err(CliError::IndexRefused {
                operation: "the purge",
                reason: format!("unexpected outcome {unexpected:?}"),
            })
        }
    };
    let file_id = purged.instance.record.file_id;
    let deleted = match location {
        // A record in a segment is never unlinked: its bytes are dead until
        // compaction copies the live records out (the purge dropped them
        // from the segment's live bytes and records).
        Location::Record(_) => format!(
            "its record {} is now dead bytes (compaction reclaims segment space)",
            place_of(&store.layout, Area::Quarantine, file_id, location)
        ),
        Location::File => {
            let path = store.layout.quarantine_path(file_id);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    sync_dir(parent(&path))?;
                    format!("deleted {}", path.display())
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    format!("its file {} was already gone", path.display())
                }
                Err(error) => return Err(CliError::io("remove", &path)(error)),
            }
        }
    };
    writeln!(
        output,
        "purged quarantine entry {id} (SOP Instance UID {}, received {} from {}): {deleted}",
        Escaped(&purged.instance.triplet.sop_instance_uid),
        rfc3339_utc(purged.instance.record.received_at_unix_ns),
        Escaped(or_dash(&purged.instance.record.calling_ae_title)),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::Layout;
    use sluice_index::{
        Checksum, Index, IndexOptions, InstanceRecord, NewInstance, StoreOutcome, StoreRequest,
        Triplet,
    };

    const SOP: &str = "1.2.3.4.5";

    /// A cluster node's data directory (its `cluster/` with the marker a
    /// clean stop leaves) whose instance `SOP` has a quarantined duplicate
    /// file of `quarantined_bytes` bytes (the index says 100): the
    /// directory and the quarantine id.
    fn node_with_a_duplicate(quarantined_bytes: usize) -> (tempfile::TempDir, Layout, u64) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("data"));
        layout.create_dirs().unwrap();
        let cluster = layout.root().join(crate::cluster::CLUSTER_DIR);
        std::fs::create_dir_all(&cluster).unwrap();
        std::fs::write(cluster.join("clean-stop"), b"").unwrap();
        let index = Index::open(
            layout.index_dir(),
            IndexOptions {
                map_size_bytes: 64 << 20,
                ..IndexOptions::default()
            },
        )
        .unwrap();
        let version = |file_id: u128, checksum: u8| NewInstance {
            triplet: Triplet::new("1.2.3", "1.2.3.4", SOP),
            record: InstanceRecord {
                file_id: FileId(file_id),
                file_size_bytes: 100,
                dataset_offset_bytes: 10,
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                checksum: Checksum([checksum; 16]),
                received_at_unix_ns: 1,
                calling_ae_title: "MODALITY".into(),
                instance_number: None,
            },
            study: Default::default(),
            series: Default::default(),
        };
        let mut outcomes = Vec::new();
        for (file_id, checksum) in [(1, 1), (2, 2)] {
            let results = index
                .writer()
                .execute(vec![WriteOp::Store(StoreRequest::new(version(
                    file_id, checksum,
                )))])
                .unwrap();
            outcomes.extend(results.into_iter().map(Result::unwrap));
        }
        index.close();
        let id = match &outcomes[..] {
            [WriteOutcome::Store(StoreOutcome::Stored), WriteOutcome::Store(StoreOutcome::Duplicate(
                sluice_index::Disposition::Quarantined { quarantine_id },
            ))] => *quarantine_id,
            other => panic!("not a stored instance and its duplicate: {other:?}"),
        };
        let object = layout.object_path(FileId(1));
        std::fs::create_dir_all(parent(&object)).unwrap();
        std::fs::write(&object, [1; 100]).unwrap();
        let quarantined = layout.quarantine_path(FileId(2));
        std::fs::create_dir_all(parent(&quarantined)).unwrap();
        std::fs::write(&quarantined, vec![2; quarantined_bytes]).unwrap();
        (dir, layout, id)
    }

    fn open(layout: &Layout) -> OpenStore {
        StoreArgs {
            config_file: None,
            data_dir: Some(layout.root().to_owned()),
        }
        .open_for_writing("sluice quarantine release")
        .unwrap()
    }

    fn outbox(layout: &Layout) -> String {
        let path = layout
            .root()
            .join(crate::cluster::CLUSTER_DIR)
            .join("outbox.jsonl");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn marked_clean(layout: &Layout) -> bool {
        layout
            .root()
            .join(crate::cluster::CLUSTER_DIR)
            .join("clean-stop")
            .exists()
    }

    /// A kill right after the release committed, before its outbox line:
    /// the cluster's clean-stop marker is already gone then, so the
    /// server's next start reconciles the catalogue with the index (which
    /// holds the released instance) instead of trusting an outbox without
    /// it. A release that runs to its end leaves the line, flushed, and the
    /// marker back.
    #[test]
    fn a_release_killed_after_its_commit_leaves_no_clean_stop_marker() {
        let (_dir, layout, id) = node_with_a_duplicate(100);
        let store = open(&layout);
        let mut seen_at_the_commit = None;
        let mut output = Vec::new();
        release_then(&store, id, &mut output, || {
            // What a kill here leaves on disk.
            let stored = store.index.read().unwrap().file_id_of_sop(SOP).unwrap();
            seen_at_the_commit = Some((stored, marked_clean(&layout), outbox(&layout)));
        })
        .unwrap();
        let (stored, marked, lines) = seen_at_the_commit.expect("the release committed");
        assert_eq!(stored, Some(FileId(2)), "the release is committed");
        assert!(!marked, "the marker outlived the commit");
        assert!(!lines.contains(SOP), "{lines}");
        // Done: the line (the released file) and the marker.
        let lines = outbox(&layout);
        assert_eq!(lines.lines().count(), 1, "{lines}");
        assert!(
            lines.contains(&format!("\"file_id\":\"{:032x}\"", 2)),
            "{lines}"
        );
        assert!(marked_clean(&layout));
    }

    /// A release refused before its commit (a damaged quarantined file)
    /// changes nothing the catalogue sees: no line, the marker back.
    #[test]
    fn a_release_refused_before_its_commit_puts_the_marker_back() {
        let (_dir, layout, id) = node_with_a_duplicate(99);
        let store = open(&layout);
        let error = release(&store, id, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("not releasing"), "{error}");
        assert_eq!(
            store.index.read().unwrap().file_id_of_sop(SOP).unwrap(),
            Some(FileId(1))
        );
        assert!(marked_clean(&layout));
        assert!(!outbox(&layout).contains(SOP));
    }
}
