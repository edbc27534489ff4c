//! A cross-node retrieve's instances whose holder is down, read from the
//! object store instead (docs/design/scale-out.md, "A holder down").
//!
//! The catalogue names, for each instance of the segments layout, its
//! record's place (segment, offset, length) and, once its segment was
//! uploaded, the segment's object key. When the holder does not answer
//! (its association refused or broken before it reported anything), the
//! forwarding thread reads each such record itself with one ranged GET of
//! the holder's object (the key made from this node's `[objects]` prefix,
//! the holder's node name and the segment id, and required to be the one
//! the catalogue names), checks it (a valid header naming the instance, the
//! payload's checksum, the Part 10 length and the data set's XXH3-128 the
//! catalogue holds) and sends it: C-GET through the requester's association
//! (a staging file, as a holder's instance), C-MOVE on an association of
//! its own to the Move Destination. An instance whose segment was not
//! uploaded cannot be had while its holder is down: it fails, named in the
//! Failed SOP Instance UID List (and `sluice cluster status` names it).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_index::{RecordPlace, Triplet};
use sluice_net::dimse::StatusCategory;

use super::forward::{Event, Forwarded, Reports};
use crate::cli::media::send::{Association, CONTEXTS_PER_ASSOCIATION_MAX};
use crate::objects::Objects;
use crate::store::{DatasetLocation, StoredDataset};

/// What the catalogue says of an instance whose segment was uploaded.
#[derive(Debug, Clone)]
pub(super) struct Uploaded {
    pub(super) place: RecordPlace,
    /// The object key the catalogue names.
    pub(super) object_key: String,
    /// The Part 10 file's length and where its data set starts.
    pub(super) file_size: u64,
    pub(super) dataset_offset: u64,
    /// XXH3-128 of the data set, hex.
    pub(super) checksum: String,
    pub(super) sop_class_uid: String,
    pub(super) transfer_syntax_uid: String,
}

/// A Move Destination: its AE title and address (`None`: it does not
/// resolve on this node).
pub(crate) type Destination = (String, Option<SocketAddr>);

/// Files staged from the object store by this process (unique names).
static STAGED: AtomicU64 = AtomicU64::new(0);

/// The object store's side of one forwarded retrieve.
pub(super) struct Fallback {
    objects: Option<Arc<Objects>>,
    /// By SOP Instance UID: the instances whose segment was uploaded.
    uploads: HashMap<String, Uploaded>,
    /// Holders found down during this retrieve (not asked again).
    down: Mutex<HashSet<String>>,
    /// This node's AE title (C-MOVE: the calling AE title).
    ae_title: String,
    timeout: Duration,
}

impl Fallback {
    pub(super) fn new(
        objects: Option<Arc<Objects>>,
        uploads: HashMap<String, Uploaded>,
        ae_title: String,
        timeout: Duration,
    ) -> Fallback {
        Fallback {
            objects,
            uploads,
            down: Mutex::default(),
            ae_title,
            timeout,
        }
    }

    /// Whether `node` was found down during this retrieve.
    pub(super) fn is_down(&self, node: &str) -> bool {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(node)
    }

    /// `node` does not answer: its instances are read from the object store
    /// from now on (logged once per retrieve and node).
    pub(super) fn mark_down(&self, node: &str, why: &str) {
        let new = self
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node.to_owned());
        if new {
            tracing::warn!(node = %node, reason = %why, "a holder does not answer: its instances uploaded to the object store are read from there");
        }
    }

    /// The data set of instance `triplet` of `node`, read from the object
    /// store and checked; `Err` says why it cannot be.
    fn dataset(&self, node: &str, triplet: &Triplet) -> Result<(Vec<u8>, &Uploaded), String> {
        let sop = &triplet.sop_instance_uid;
        let uploaded = self.uploads.get(sop).ok_or_else(|| {
            format!("node {node} is down and its segment holding the instance was not uploaded to the object store")
        })?;
        let objects = self.objects.as_ref().ok_or_else(|| {
            format!("node {node} is down and this node has no object store configured ([objects]) to read it from")
        })?;
        let key = objects.key_of_node(node, uploaded.place.segment);
        if key != uploaded.object_key {
            return Err(format!(
                "the catalogue names object {:?} for it, not {key} ([objects] key_prefix differs between the nodes?)",
                uploaded.object_key
            ));
        }
        let read = || {
            let mut part10 = objects
                .read_part10(node, &uploaded.place, triplet)
                .map_err(|error| format!("node {node} is down; the object store: {error}"))?;
            if part10.len() as u64 != uploaded.file_size {
                return Err(format!(
                    "object {key}: the record holds {} bytes of Part 10 file, the catalogue says {}",
                    part10.len(),
                    uploaded.file_size
                ));
            }
            let offset = usize::try_from(uploaded.dataset_offset)
                .ok()
                .filter(|offset| *offset <= part10.len())
                .ok_or_else(|| format!("object {key}: the data set offset lies past the record"))?;
            part10.drain(..offset);
            let checksum = format!("{:032x}", crate::store::xxh3::xxh3_128(&part10));
            if !checksum.eq_ignore_ascii_case(&uploaded.checksum) {
                return Err(format!(
                    "object {key}: the data set's checksum is not the one the catalogue holds"
                ));
            }
            Ok(part10)
        };
        match read() {
            Ok(dataset) => Ok((dataset, uploaded)),
            Err(reason) => {
                tracing::warn!(node = %node, sop_instance_uid = %sop, offset = uploaded.place.offset, reason = %reason, "an instance of a down holder cannot be read from the object store");
                Err(reason)
            }
        }
    }

    /// C-GET: the instances `sops` of (`node`, `study`, `series`) read from
    /// the object store into files of `directory`, each handed to the core
    /// as it is read; those that cannot be fail.
    pub(super) fn get(
        &self,
        (node, study, series): (&str, &str, &str),
        sops: Vec<String>,
        directory: &Path,
        done: &mut Forwarded,
        reports: &Reports,
    ) {
        let mut failed = Failures::default();
        for sop in sops {
            if reports.cancelled() {
                return;
            }
            let triplet = Triplet::new(study, series, &sop);
            let staged = self
                .dataset(node, &triplet)
                .and_then(|(dataset, uploaded)| {
                    let path = directory.join(format!(
                        "object-{}.dcm",
                        STAGED.fetch_add(1, Ordering::Relaxed)
                    ));
                    write_file(&path, &dataset)?;
                    Ok(StoredDataset {
                        triplet: triplet.clone(),
                        sop_class_uid: uploaded.sop_class_uid.clone(),
                        transfer_syntax_uid: uploaded.transfer_syntax_uid.clone(),
                        location: DatasetLocation::File {
                            path,
                            offset: 0,
                            length: dataset.len() as u64,
                        },
                    })
                });
            match staged {
                Ok(dataset) => {
                    tracing::debug!(node = %node, sop_instance_uid = %sop, "an instance of a down holder read from the object store for a C-GET");
                    // Waits while the window is full.
                    if reports.sender.send(Event::Staged(dataset)).is_err() {
                        return;
                    }
                }
                Err(reason) => failed.add(sop, reason),
            }
        }
        failed.count_in(node, done);
        reports.counts(done.counts);
    }

    /// C-MOVE: the instances `sops` of (`node`, `study`, `series`) read from
    /// the object store and sent to `destination` on an association of this
    /// node's own; counted in `done`.
    pub(super) fn send(
        &self,
        (node, study, series): (&str, &str, &str),
        sops: Vec<String>,
        destination: &Destination,
        done: &mut Forwarded,
        reports: &Reports,
    ) {
        let mut failed = Failures::default();
        let (ae_title, address) = destination;
        // The contexts to propose: each (SOP class, transfer syntax) the
        // catalogue names for the uploaded ones, as stored (no conversion).
        let contexts: Vec<(String, String)> = sops
            .iter()
            .filter_map(|sop| self.uploads.get(sop))
            .map(|uploaded| {
                (
                    uploaded.sop_class_uid.clone(),
                    uploaded.transfer_syntax_uid.clone(),
                )
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(CONTEXTS_PER_ASSOCIATION_MAX)
            .collect();
        let mut association = match address {
            _ if contexts.is_empty() => None,
            None => {
                for sop in &sops {
                    failed.add(
                        sop.clone(),
                        format!("move destination {ae_title}: its address does not resolve"),
                    );
                }
                failed.count_in(node, done);
                reports.counts(done.counts);
                return;
            }
            Some(address) => {
                match Association::open(*address, ae_title, &self.ae_title, &contexts, self.timeout)
                {
                    Ok(association) => Some(association),
                    Err(error) => {
                        for sop in &sops {
                            failed
                                .add(sop.clone(), format!("move destination {ae_title}: {error}"));
                        }
                        failed.count_in(node, done);
                        reports.counts(done.counts);
                        return;
                    }
                }
            }
        };
        for sop in sops {
            if reports.cancelled() {
                break;
            }
            let triplet = Triplet::new(study, series, &sop);
            let (dataset, uploaded) = match self.dataset(node, &triplet) {
                Ok(found) => found,
                Err(reason) => {
                    failed.add(sop, reason);
                    continue;
                }
            };
            let Some(open) = association.as_mut() else {
                failed.add(
                    sop,
                    "the association to the move destination broke".to_owned(),
                );
                continue;
            };
            let Some(context) =
                open.context_for(&uploaded.sop_class_uid, &uploaded.transfer_syntax_uid)
            else {
                failed.add(
                    sop,
                    format!(
                        "move destination {ae_title} does not accept SOP class {} in transfer syntax {}",
                        uploaded.sop_class_uid, uploaded.transfer_syntax_uid
                    ),
                );
                continue;
            };
            let length = dataset.len() as u64;
            match open.store_from(
                context,
                &uploaded.sop_class_uid,
                &sop,
                &mut &dataset[..],
                length,
            ) {
                Ok(response) => match response.status.category() {
                    StatusCategory::Success => done.counts.completed += 1,
                    StatusCategory::Warning => done.counts.warning += 1,
                    _ => failed.add(
                        sop,
                        format!(
                            "move destination {ae_title} answered status {}",
                            response.status
                        ),
                    ),
                },
                Err(error) => {
                    failed.add(sop, format!("move destination {ae_title}: {error}"));
                    // The association is gone: the rest fail.
                    association = None;
                }
            }
            reports.counts(done.counts.plus_failed(failed.uids.len()));
        }
        if let Some(open) = association {
            if let Err(error) = open.release() {
                tracing::debug!(%error, "the association to the move destination did not release cleanly");
            }
        }
        failed.count_in(node, done);
        reports.counts(done.counts);
    }
}

/// Instances that failed, and the first reason.
#[derive(Default)]
struct Failures {
    uids: Vec<String>,
    reason: Option<String>,
}

impl Failures {
    fn add(&mut self, sop: String, reason: String) {
        self.uids.push(sop);
        self.reason.get_or_insert(reason);
    }

    /// Counted in `done` (logged once).
    fn count_in(self, node: &str, done: &mut Forwarded) {
        if let Some(reason) = self.reason {
            done.fail(node, self.uids, reason);
        }
    }
}

/// Writes `bytes` to a new file at `path`.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::File::create_new(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
