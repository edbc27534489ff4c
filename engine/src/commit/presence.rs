//! Whether an instance named by a commitment request is stored, durable,
//! here or (in cluster mode) on another node: the tracker's one question
//! to the index and the catalogue, asked per request and per retry round.

use std::collections::{HashMap, HashSet};

use sluice_index::{FileId, IndexError, ReadTxn, SopPresence};

/// The SOP Class UIDs under which other nodes published those of `uids`
/// this node does not store, in one catalogue query per round (empty
/// without cluster mode, when none is missing here, or when the catalogue
/// cannot say now: those wait for the next round).
pub(super) fn published_elsewhere(
    read: &ReadTxn<'_>,
    cluster: Option<&crate::cluster::Cluster>,
    uids: Vec<String>,
) -> HashMap<String, String> {
    let Some(cluster) = cluster else {
        return HashMap::new();
    };
    let missing: Vec<String> = uids
        .into_iter()
        .filter(|uid| matches!(read.file_id_of_sop(uid), Ok(None)))
        .collect();
    cluster.published_elsewhere(&missing)
}

/// [`ReadTxn::sop_presence`] for commitment: an instance whose file is still
/// in doubt (its entry committed, its data or directory entry not yet
/// durable) is not stored yet; its core notifies the tracker once it is.
/// In cluster mode an instance not stored here is stored when another node
/// published it (the catalogue names only acknowledged, durable instances).
/// `elsewhere`: what [`published_elsewhere`] found for this round.
pub(super) fn durable_presence(
    read: &ReadTxn<'_>,
    in_doubt: &HashSet<FileId>,
    sop_instance_uid: &str,
    sop_class_uid: &str,
    elsewhere: &HashMap<String, String>,
) -> Result<SopPresence, IndexError> {
    let presence = read.sop_presence(sop_instance_uid, sop_class_uid)?;
    if presence == SopPresence::Absent {
        return Ok(match elsewhere.get(sop_instance_uid).cloned() {
            Some(stored) if stored == sop_class_uid => SopPresence::Stored,
            Some(stored_sop_class_uid) => SopPresence::ClassMismatch {
                stored_sop_class_uid,
            },
            None => SopPresence::Absent,
        });
    }
    if in_doubt.is_empty() || presence == SopPresence::Absent {
        return Ok(presence);
    }
    match read.file_id_of_sop(sop_instance_uid)? {
        Some(file_id) if in_doubt.contains(&file_id) => Ok(SopPresence::Absent),
        _ => Ok(presence),
    }
}
