//! Cluster-wide C-MOVE and C-GET: the instances a retrieve names that
//! other nodes hold are moved by those nodes, to the same destination, or
//! fetched from them and sent on the requester's association (docs/design/
//! scale-out.md, "Cluster-wide C-MOVE and C-GET").
//!
//! The node asked sends what it holds itself (the Q/R SCP's lanes, as on
//! one node) and starts one thread ([`Cluster::forward`]) that asks the
//! catalogue which instances the retrieve names (the cluster C-FIND of its
//! identifier, each entity expanded into its rows), keeps those held by
//! other nodes and not here, and asks each holder in turn, one retrieve
//! per series (IMAGE level, its SOP Instance UIDs), through the Q/R SCU.
//! The thread reports to the Q/R core as it goes ([`Event`]): how many
//! instances the holders have (they count in every pending response's
//! remaining), the holders' counts so far (from their pending responses),
//! each fetched instance (C-GET), and the end (their final counts and
//! Failed SOP Instance UID List). A holder that cannot be reached (no DICOM
//! address published, refused, killed) fails its instances, named in the
//! list.
//!
//! C-MOVE: each holder moves its instances with the same Move Destination.
//!
//! C-GET: the instances must come back on the requester's association.
//! Each holder is asked for a C-GET; each data set is written to a file of
//! a staging directory as it arrives and handed to the core at once, which
//! sends it like its own and deletes it once its sub-operation is
//! answered. At most [`STREAM_WINDOW`] fetched instances wait in the
//! channel to the core (and as many taken by it and unanswered): when
//! they are all unsent, the holder's next sub-operation waits for the
//! answer to this one, so a slow requester holds the holder back instead
//! of filling the disk.
//!
//! C-CANCEL: the core sets the forward's cancel flag ([`Forward::cancel`],
//! also when it drops the forward); the thread starts no other holder and
//! sends the holder at work a C-CANCEL-RQ before it next waits for it
//! ([`qr::cancel_once`]); the holders' instances not done count remaining
//! in the FE00 answer.
//!
//! Each node publishes its DICOM address (`cluster.dicom_address`) in
//! `sluice_nodes`; the Move Destination must be known on every node (the
//! same `network.remote_aes` everywhere), and each node must accept C-MOVE
//! and C-GET from the others' AE title (README, "Run a cluster").

use std::collections::{BTreeMap, HashSet};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use sluice_net::query::{InformationModel, Level, Query};

use super::find::{connect as find_connect, run as find_run, Message};
use super::stored::{Destination, Fallback, Uploaded};
use super::Cluster;
use crate::objects::Objects;
use crate::qr::{self, RemoteArchive, RetrieveRequest};
use crate::store::{DatasetLocation, StoredDataset};

/// Under the cluster directory: C-GET's staging directories.
pub(crate) const STAGING_DIR: &str = "staging";

/// Fetched instances that may wait in the channel to the Q/R core; the
/// core takes more only while fewer than as many it took are unanswered,
/// so at most twice this many staged files exist per C-GET, plus the one
/// being written. Four keeps the requester's association busy across the
/// core's 20 ms poll at the rate one holder's C-GET delivers, and bounds
/// the disk one C-GET holds to a handful of instances whatever the
/// study's size.
pub(crate) const STREAM_WINDOW: usize = 4;

/// Sub-operation counts of the holders, summed over them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Completed.
    pub(crate) completed: usize,
    /// Completed with a warning.
    pub(crate) warning: usize,
    /// Failed (at a holder, or the holder unreachable).
    pub(crate) failed: usize,
}

impl Counts {
    /// Every sub-operation these count.
    pub(crate) fn total(&self) -> usize {
        self.completed + self.warning + self.failed
    }

    /// These with `failed` more failed.
    pub(crate) fn plus_failed(self, failed: usize) -> Counts {
        Counts {
            failed: self.failed + failed,
            ..self
        }
    }

    /// These plus one holder's counts so far.
    fn plus(self, progress: qr::Progress) -> Counts {
        Counts {
            completed: self.completed + usize::from(progress.completed),
            warning: self.warning + usize::from(progress.warning),
            failed: self.failed + usize::from(progress.failed),
        }
    }
}

/// What the holders did, at the end.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    /// Their sub-operations (C-GET: those that failed before reaching this
    /// node; the fetched ones are counted where this node sends them).
    pub(crate) counts: Counts,
    /// The failed instances known by UID.
    pub(crate) failed_uids: Vec<String>,
    /// The first failure's reason.
    pub(crate) reason: Option<String>,
}

/// What the forwarding thread tells the Q/R core, in order.
#[derive(Debug)]
pub(crate) enum Event {
    /// The other nodes hold this many of the retrieve's instances (sent
    /// once, first).
    Found(usize),
    /// The holders' counts so far (cumulative; a later one replaces it).
    Counts(Counts),
    /// C-GET: an instance fetched, to send from here (a staging file).
    Staged(StoredDataset),
    /// The end.
    Done(Forwarded),
}

/// A staging directory, removed with what it holds when dropped (the
/// retrieve that sends from it ended).
#[derive(Debug)]
pub(crate) struct StagingDir(PathBuf);

impl StagingDir {
    /// Whether `dataset` is one of its files.
    pub(crate) fn holds<'d>(&self, dataset: &'d StoredDataset) -> Option<&'d Path> {
        match &dataset.location {
            DatasetLocation::File { path, .. } if path.starts_with(&self.0) => Some(path),
            _ => None,
        }
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            // Nothing was fetched (or the thread could not make it).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(%error, path = %self.0.display(), "cannot remove a C-GET staging directory; the next start does");
            }
        }
    }
}

/// The core's end of a forwarded retrieve.
#[derive(Debug)]
pub(crate) struct Forward {
    receiver: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    /// C-GET: where the thread stages what it fetches.
    staging: Option<StagingDir>,
}

impl Forward {
    /// The thread's next report, if there is one.
    pub(crate) fn next(&self) -> Option<Event> {
        match self.receiver.try_recv() {
            Ok(event) => Some(event),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Event::Done(Forwarded {
                reason: Some("the forwarding thread ended without an answer".into()),
                ..Forwarded::default()
            })),
        }
    }

    /// C-CANCEL: the holders are asked to stop.
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// The staging directory (C-GET).
    pub(crate) fn staging(&self) -> Option<&StagingDir> {
        self.staging.as_ref()
    }

    /// The staging directory, for the files still to send once the thread
    /// is done.
    pub(crate) fn take_staging(&mut self) -> Option<StagingDir> {
        self.staging.take()
    }
}

impl Drop for Forward {
    /// The retrieve ended (answered, or its association gone): the thread
    /// stops at its next step.
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The thread's end of a forward (one per holder asked: they are asked
/// in parallel, and each report sums them).
pub(super) struct Reports {
    pub(super) sender: Sender<Event>,
    cancel: Arc<AtomicBool>,
    /// Each holder's counts so far.
    holders: Arc<Mutex<BTreeMap<String, Counts>>>,
    /// The holder these reports are of.
    holder: String,
}

impl Reports {
    pub(super) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// The reports of one holder.
    fn of_holder(&self, node: &str) -> Reports {
        Reports {
            sender: self.sender.clone(),
            cancel: Arc::clone(&self.cancel),
            holders: Arc::clone(&self.holders),
            holder: node.to_owned(),
        }
    }

    /// This holder's counts so far, reported summed with the others'
    /// (dropped when the channel is full: a later report or the end
    /// carries them).
    pub(super) fn counts(&self, counts: Counts) {
        let total = {
            let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            holders.insert(self.holder.clone(), counts);
            holders
                .values()
                .fold(Counts::default(), |sum, counts| Counts {
                    completed: sum.completed + counts.completed,
                    warning: sum.warning + counts.warning,
                    failed: sum.failed + counts.failed,
                })
        };
        match self.sender.try_send(Event::Counts(total)) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The instances of one series one node holds, with the node's DICOM
/// address and AE title, by (node, study, series).
type Groups = BTreeMap<(String, String, String), (Option<String>, Option<String>, Vec<String>)>;

/// An instance another node holds.
struct Remote {
    sop: String,
    study: String,
    series: String,
    node: String,
    address: Option<String>,
    ae_title: Option<String>,
    /// Its record's place and object, once its segment was uploaded.
    uploaded: Option<Uploaded>,
}

impl Cluster {
    /// Starts moving the instances `query` names that other nodes hold and
    /// this node does not (`local`) to `destination`, or (C-GET, no
    /// destination) fetching them to send from here (see the module
    /// documentation).
    pub(crate) fn forward(
        &self,
        query: Query,
        local: HashSet<String>,
        destination: Option<Destination>,
        objects: Option<Arc<Objects>>,
    ) -> Forward {
        let (sender, receiver) = crossbeam_channel::bounded(STREAM_WINDOW);
        let cancel = Arc::new(AtomicBool::new(false));
        let reports = Reports {
            sender,
            cancel: Arc::clone(&cancel),
            holders: Arc::default(),
            holder: String::new(),
        };
        let settings = self.inner.settings.clone();
        let staging = destination.is_none().then(|| {
            StagingDir(self.inner.staging.join(format!(
                "{}-{}",
                std::process::id(),
                STAGED.fetch_add(1, Ordering::Relaxed)
            )))
        });
        let directory = staging.as_ref().map(|staging| staging.0.clone());
        let spawned = std::thread::Builder::new()
            .name("cluster-move".to_owned())
            .spawn(move || {
                let outcome = match remote_instances(&settings, &query, &local) {
                    Ok(mut remote) => {
                        // The core may be gone already: then nobody waits.
                        if reports.sender.send(Event::Found(remote.len())).is_err() {
                            return;
                        }
                        let uploads = remote
                            .iter_mut()
                            .filter_map(|instance| {
                                Some((instance.sop.clone(), instance.uploaded.take()?))
                            })
                            .collect();
                        let fallback = Fallback::new(
                            objects,
                            uploads,
                            settings.ae_title.clone(),
                            settings.timeout.max(Duration::from_secs(5)),
                        );
                        match (&destination, &directory) {
                            (Some(destination), _) => {
                                per_holder(&settings, remote, &reports, &|groups, reports| {
                                    move_from_holder(
                                        &settings,
                                        groups,
                                        destination,
                                        reports,
                                        &fallback,
                                    )
                                })
                            }
                            (None, Some(directory)) => {
                                if let Err(error) = std::fs::create_dir_all(directory) {
                                    let mut done = Forwarded::default();
                                    let sops = remote.into_iter().map(|one| one.sop).collect();
                                    done.fail(
                                        "-",
                                        sops,
                                        format!("cannot make a staging directory: {error}"),
                                    );
                                    done
                                } else {
                                    per_holder(&settings, remote, &reports, &|groups, reports| {
                                        fetch_from_holder(
                                            &settings, groups, directory, reports, &fallback,
                                        )
                                    })
                                }
                            }
                            (None, None) => unreachable!("a C-GET forward has a staging directory"),
                        }
                    }
                    Err(error) => {
                        // Nothing is known of other nodes: the retrieve is
                        // answered for this node's instances.
                        tracing::warn!(%error, "the cluster catalogue cannot say which nodes hold a retrieve's instances: this node sends its own only");
                        Forwarded::default()
                    }
                };
                let _ = reports.sender.send(Event::Done(outcome));
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a cluster C-MOVE thread: this node moves its own only");
        }
        Forward {
            receiver,
            cancel,
            staging,
        }
    }
}

/// The instances `query` names that another node holds and this one does not.
fn remote_instances(
    settings: &super::Settings,
    query: &Query,
    local: &HashSet<String>,
) -> Result<Vec<Remote>, String> {
    let (sender, receiver) = crossbeam_channel::unbounded();
    let mut client =
        find_connect(&settings.address, settings.timeout).map_err(|e| e.to_string())?;
    find_run(&mut client, query, &sender).map_err(|e| e.to_string())?;
    drop(sender);
    let (mut studies, mut series, mut sops) = (Vec::new(), Vec::new(), Vec::new());
    for message in receiver.iter() {
        match message {
            Message::Matches(matches) => {
                for found in matches {
                    match found.level {
                        Level::Image => sops.extend(
                            found
                                .instance
                                .map(|entry| entry.triplet.sop_instance_uid.clone()),
                        ),
                        Level::Series => series.extend(found.series.map(|(uid, _)| uid)),
                        _ => studies.extend(found.study.map(|(uid, _)| uid)),
                    }
                }
            }
            Message::Done => {}
            Message::Failed(error) => return Err(error),
        }
    }
    let mut client = super::tls::connect(&settings.address, |config| {
        config
            .connect_timeout(settings.timeout)
            .tcp_user_timeout(settings.timeout)
            .application_name("sluice move");
    })
    .map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT i.sop_instance_uid, i.study_instance_uid, i.series_instance_uid, i.node,
                    n.dicom_address, n.ae_title,
                    i.segment, i.record_offset, i.record_length, i.object_key,
                    i.file_size_bytes, i.dataset_offset_bytes, i.checksum,
                    i.sop_class_uid, i.transfer_syntax_uid
             FROM sluice_instances i LEFT JOIN sluice_nodes n ON n.node = i.node
             WHERE (i.study_instance_uid = ANY($1) OR i.series_instance_uid = ANY($2)
                    OR i.sop_instance_uid = ANY($3))
               AND i.node <> $4",
            &[&studies, &series, &sops, &settings.node],
        )
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|row| Remote {
            sop: row.get(0),
            study: row.get(1),
            series: row.get(2),
            node: row.get(3),
            address: row.get(4),
            ae_title: row.get(5),
            uploaded: uploaded_of(row),
        })
        .filter(|remote| !local.contains(&remote.sop))
        .collect())
}

/// What `row` (of [`remote_instances`]' statement) says of its record
/// once its segment was uploaded; `None` before, or for a file.
fn uploaded_of(row: &postgres::Row) -> Option<Uploaded> {
    let at = |column| {
        row.get::<_, Option<i64>>(column)
            .and_then(|value| u64::try_from(value).ok())
    };
    Some(Uploaded {
        place: sluice_index::RecordPlace {
            segment: at(6)?,
            offset: at(7)?,
            length: at(8)?,
        },
        object_key: row.get::<_, Option<String>>(9)?,
        file_size: at(10)?,
        dataset_offset: at(11)?,
        checksum: row.get(12),
        sop_class_uid: row.get(13),
        transfer_syntax_uid: row.get(14),
    })
}

/// Staging directories made by this process.
static STAGED: AtomicU64 = AtomicU64::new(0);

/// The instances of `remote` grouped by holder and series.
fn groups_of(remote: Vec<Remote>) -> Groups {
    let mut groups = Groups::new();
    for instance in remote {
        let group = groups
            .entry((instance.node, instance.study, instance.series))
            .or_insert((instance.address, instance.ae_title, Vec::new()));
        group.2.push(instance.sop);
    }
    groups
}

/// Asks each holder of `remote` for its instances with `ask` (its groups,
/// its reports: what it did), at most `cluster.retrieve_holders_parallel`
/// holders at once, one on this thread; their outcomes summed. A holder
/// not started before a C-CANCEL is not asked (its instances count
/// remaining).
fn per_holder(
    settings: &super::Settings,
    remote: Vec<Remote>,
    reports: &Reports,
    ask: &(dyn Fn(Groups, &Reports) -> Forwarded + Sync),
) -> Forwarded {
    let mut holders: BTreeMap<String, Groups> = BTreeMap::new();
    for (key, group) in groups_of(remote) {
        holders.entry(key.0.clone()).or_default().insert(key, group);
    }
    let workers = settings.holders_parallel.clamp(1, holders.len().max(1));
    let queue = Mutex::new(holders.into_iter());
    let total = Mutex::new(Forwarded::default());
    let work = || loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        let Some((node, groups)) = next else {
            break;
        };
        if reports.cancelled() {
            break;
        }
        let done = ask(groups, &reports.of_holder(&node));
        total
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(done);
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            let spawned = std::thread::Builder::new()
                .name("cluster-holder".to_owned())
                .spawn_scoped(scope, work);
            if let Err(error) = spawned {
                // Fewer holders at once: the others take the rest.
                tracing::warn!(%error, "cannot start a thread to ask a holder");
                break;
            }
        }
        work();
    });
    total.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// A holder's address and how to call it; `Err` is why it cannot be.
fn holder(
    settings: &super::Settings,
    node: &str,
    address: Option<String>,
    ae_title: Option<String>,
) -> Result<RemoteArchive, String> {
    let address = address
        .and_then(|address| {
            address
                .to_socket_addrs()
                .ok()
                .and_then(|mut found| found.next())
        })
        .ok_or_else(|| format!("node {node} publishes no reachable DICOM address"))?;
    Ok(RemoteArchive {
        ae_title: ae_title.unwrap_or_else(|| settings.ae_title.clone()),
        address,
        calling_ae_title: settings.ae_title.clone(),
        timeout: settings.timeout.max(Duration::from_secs(5)),
        retrieve_timeout: Some(qr::RETRIEVE_TIMEOUT_DEFAULT),
    })
}

impl Forwarded {
    /// Adds another holder's outcome.
    fn merge(&mut self, other: Forwarded) {
        self.counts.completed += other.counts.completed;
        self.counts.warning += other.counts.warning;
        self.counts.failed += other.counts.failed;
        self.failed_uids.extend(other.failed_uids);
        if let Some(reason) = other.reason {
            self.reason.get_or_insert(reason);
        }
    }

    /// `sops` failed for `reason` (logged).
    pub(super) fn fail(&mut self, node: &str, sops: Vec<String>, reason: String) {
        tracing::warn!(node = %node, instances = sops.len(), reason = %reason, "instances held by another node cannot be retrieved");
        self.counts.failed += sops.len();
        self.failed_uids.extend(sops);
        self.reason.get_or_insert(reason);
    }
}

/// C-GET: the instances one holder holds (`groups`) fetched from it
/// (C-GET, one per series) into files of `directory` (made), each handed
/// to the core as it arrives; those that cannot be fail.
fn fetch_from_holder(
    settings: &super::Settings,
    groups: Groups,
    directory: &Path,
    reports: &Reports,
    fallback: &Fallback,
) -> Forwarded {
    let mut done = Forwarded::default();
    for ((node, study, series), (address, ae_title, sops)) in groups {
        if reports.cancelled() {
            // The rest count remaining.
            break;
        }
        let group = (node.as_str(), study.as_str(), series.as_str());
        let remote = match holder(settings, &node, address, ae_title) {
            Ok(remote) if !fallback.is_down(&node) => remote,
            Ok(_) => {
                fallback.get(group, sops, directory, &mut done, reports);
                continue;
            }
            Err(reason) => {
                fallback.mark_down(&node, &reason);
                fallback.get(group, sops, directory, &mut done, reports);
                continue;
            }
        };
        let request = RetrieveRequest::instances(&study, &series, sops.clone());
        let mut arrived: HashSet<String> = HashSet::new();
        let result = qr::get_streamed(
            &remote,
            &request,
            directory,
            &reports.cancel,
            &mut |staged| {
                tracing::debug!(node = %node, sop_instance_uid = %staged.sop_instance_uid, "a remote instance fetched for a C-GET");
                arrived.insert(staged.sop_instance_uid.clone());
                let dataset = StoredDataset {
                    triplet: sluice_index::Triplet::new(&study, &series, &staged.sop_instance_uid),
                    sop_class_uid: staged.sop_class_uid,
                    transfer_syntax_uid: staged.transfer_syntax_uid,
                    location: DatasetLocation::File {
                        path: staged.path,
                        offset: 0,
                        length: staged.length,
                    },
                };
                // Waits while the window is full: the holder waits too.
                reports
                    .sender
                    .send(Event::Staged(dataset))
                    .map_err(|_| "the C-GET it was fetched for ended".to_owned())
            },
        );
        let missing: Vec<String> = sops
            .into_iter()
            .filter(|sop| !arrived.contains(sop))
            .collect();
        match result {
            // Cancelled: what did not come counts remaining, not failed.
            _ if reports.cancelled() => break,
            Ok(_) if missing.is_empty() => {}
            Ok(_) => done.fail(&node, missing, format!("node {node} did not send them")),
            // The holder refused the association or broke it: what it did
            // not send is read from the object store.
            Err(error @ qr::QrError::Association { .. }) => {
                fallback.mark_down(&node, &error.to_string());
                fallback.get(group, missing, directory, &mut done, reports);
            }
            Err(error) => done.fail(&node, missing, format!("node {node}: {error}")),
        }
        reports.counts(done.counts);
    }
    done
}

/// One C-MOVE per series of one holder (`groups`); its outcome.
fn move_from_holder(
    settings: &super::Settings,
    groups: Groups,
    destination: &Destination,
    reports: &Reports,
    fallback: &Fallback,
) -> Forwarded {
    let mut done = Forwarded::default();
    for ((node, study, series), (address, ae_title, sops)) in groups {
        if reports.cancelled() {
            // The rest count remaining.
            break;
        }
        let group = (node.as_str(), study.as_str(), series.as_str());
        let remote = match holder(settings, &node, address, ae_title) {
            Ok(remote) if !fallback.is_down(&node) => remote,
            Ok(_) => {
                fallback.send(group, sops, destination, &mut done, reports);
                continue;
            }
            Err(reason) => {
                fallback.mark_down(&node, &reason);
                fallback.send(group, sops, destination, &mut done, reports);
                continue;
            }
        };
        let mut request = RetrieveRequest::instances(&study, &series, sops.clone());
        request.model = InformationModel::StudyRoot;
        let before = done.counts;
        let mut so_far = before;
        let result = qr::move_cancellable(
            &remote,
            &destination.0,
            &request,
            &mut |progress| {
                so_far = before.plus(progress);
                reports.counts(so_far);
            },
            &reports.cancel,
        );
        match result {
            Ok(outcome) => {
                done.counts.completed += outcome.completed as usize;
                done.counts.warning += outcome.warning as usize;
                done.counts.failed += outcome.failed as usize;
                done.failed_uids.extend(outcome.failed_sop_instance_uids);
                if outcome.failed > 0 {
                    done.reason.get_or_insert_with(|| {
                        format!(
                            "node {node}: {}",
                            outcome
                                .comment
                                .unwrap_or_else(|| "sub-operations failed".into())
                        )
                    });
                }
            }
            // Cancelled: what the holder did not report counts remaining.
            Err(error) if reports.cancelled() => {
                tracing::info!(node = %node, %error, "a cancelled holder's C-MOVE ended");
                done.counts = so_far;
                break;
            }
            // The holder refused the association, or broke it before it
            // reported anything: its instances are read from the object
            // store. (Once it reported progress some may have been sent:
            // those fail rather than go twice.)
            Err(error @ qr::QrError::Association { .. }) if so_far == before => {
                fallback.mark_down(&node, &error.to_string());
                fallback.send(group, sops, destination, &mut done, reports);
            }
            Err(error) => done.fail(&node, sops, format!("node {node}: {error}")),
        }
        reports.counts(done.counts);
    }
    done
}
