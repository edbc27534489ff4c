//! Cluster-wide C-MOVE: the instances a C-MOVE names that other nodes hold
//! are moved by those nodes, to the same destination (docs/design/
//! scale-out.md, "Cluster-wide C-MOVE").
//!
//! The node asked sends what it holds itself (the Q/R SCP's lanes, as on
//! one node) and starts one thread ([`Cluster::forward`]) that asks the
//! catalogue which instances the C-MOVE names (the cluster C-FIND of its
//! identifier, each entity expanded into its rows), keeps those held by
//! other nodes and not here, and sends each holder one C-MOVE per series
//! (IMAGE level, its SOP Instance UIDs) with the same Move Destination,
//! through the Q/R SCU ([`crate::qr::move_to`]). The holders' counts and
//! Failed SOP Instance UID Lists are added to the node's own in the final
//! response. A holder that cannot be reached (no DICOM address published,
//! refused, killed) fails its instances, named in the list.
//!
//! C-GET's instances must come back on the requester's association: the
//! thread fetches the other nodes' instances from their holders (C-GET
//! through the Q/R SCU, each data set written to a file of a staging
//! directory as it arrives), and the node sends them from there like its
//! own; the directory goes when the retrieve ends.
//!
//! Each node publishes its DICOM address (`cluster.dicom_address`) in
//! `sluice_nodes`; the Move Destination must be known on every node (the
//! same `network.remote_aes` everywhere), and each node must accept C-MOVE
//! and C-GET from the others' AE title (README, "Run a (partial) cluster").

use std::collections::{BTreeMap, HashSet};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use postgres::NoTls;
use sluice_net::query::{InformationModel, Level, Query};

use super::find::{connect as find_connect, run as find_run, Message};
use super::Cluster;
use crate::qr::{self, RemoteArchive, RetrieveRequest};
use crate::store::{DatasetLocation, StoredDataset};

/// Under the cluster directory: C-GET's staging directories.
pub(crate) const STAGING_DIR: &str = "staging";

/// What the holders did.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    /// Sub-operations the holders completed.
    pub(crate) completed: usize,
    /// Sub-operations that completed with a warning.
    pub(crate) warning: usize,
    /// Sub-operations that failed (at a holder, or the holder unreachable).
    pub(crate) failed: usize,
    /// The failed instances known by UID.
    pub(crate) failed_uids: Vec<String>,
    /// The first failure's reason.
    pub(crate) reason: Option<String>,
    /// C-GET: the instances fetched from their holders, to send on the
    /// requester's association (files under `staging`).
    pub(crate) staged: Vec<StoredDataset>,
    /// The directory of `staged`, removed when dropped.
    pub(crate) staging: Option<StagingDir>,
}

/// A staging directory, removed with what it holds when dropped (the
/// retrieve that sends from it ended).
#[derive(Debug)]
pub(crate) struct StagingDir(PathBuf);

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, path = %self.0.display(), "cannot remove a C-GET staging directory; the next start does");
        }
    }
}

/// The core's end of a forwarded C-MOVE.
#[derive(Debug)]
pub(crate) struct Forward {
    receiver: Receiver<Forwarded>,
}

impl Forward {
    /// The holders' outcome once every one answered.
    pub(crate) fn poll(&self) -> Option<Forwarded> {
        match self.receiver.try_recv() {
            Ok(done) => Some(done),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Forwarded {
                reason: Some("the forwarding thread ended without an answer".into()),
                ..Forwarded::default()
            }),
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
}

impl Cluster {
    /// Starts moving the instances `query` names that other nodes hold and
    /// this node does not (`local`) to `destination` (see the module
    /// documentation). Without a destination (C-GET: the instances must
    /// come on the requester's association, which is not built across
    /// nodes) they are counted failed, named, with the reason.
    pub(crate) fn forward(
        &self,
        query: Query,
        local: HashSet<String>,
        destination: Option<String>,
    ) -> Forward {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let settings = self.inner.settings.clone();
        let staging = self.inner.staging.clone();
        let spawned = std::thread::Builder::new()
            .name("cluster-move".to_owned())
            .spawn(move || {
                let outcome = match remote_instances(&settings, &query, &local) {
                    Ok(remote) => match &destination {
                        Some(destination) => move_from_holders(&settings, remote, destination),
                        None => fetch_from_holders(&settings, remote, &staging),
                    },
                    Err(error) => {
                        // Nothing is known of other nodes: the C-MOVE is
                        // answered for this node's instances.
                        tracing::warn!(%error, "the cluster catalogue cannot say which nodes hold a C-MOVE's instances: this node moves its own only");
                        Forwarded::default()
                    }
                };
                let _ = sender.send(outcome);
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a cluster C-MOVE thread: this node moves its own only");
        }
        Forward { receiver }
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
    let mut config: postgres::Config = settings.address.parse().map_err(|e| format!("{e}"))?;
    config
        .connect_timeout(settings.timeout)
        .tcp_user_timeout(settings.timeout)
        .application_name("sluice move");
    let mut client = config.connect(NoTls).map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT i.sop_instance_uid, i.study_instance_uid, i.series_instance_uid, i.node,
                    n.dicom_address, n.ae_title
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
        })
        .filter(|remote| !local.contains(&remote.sop))
        .collect())
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
    /// `sops` failed for `reason` (logged).
    fn fail(&mut self, node: &str, sops: Vec<String>, reason: String) {
        tracing::warn!(node = %node, instances = sops.len(), reason = %reason, "instances held by another node cannot be retrieved");
        self.failed += sops.len();
        self.failed_uids.extend(sops);
        self.reason.get_or_insert(reason);
    }
}

/// C-GET: the instances other nodes hold fetched from them (C-GET, one per
/// holder and series) into a staging directory, to be sent on the
/// requester's association like local ones; those that cannot be fail.
fn fetch_from_holders(
    settings: &super::Settings,
    remote: Vec<Remote>,
    staging: &std::path::Path,
) -> Forwarded {
    let mut done = Forwarded::default();
    if remote.is_empty() {
        return done;
    }
    let directory = staging.join(format!(
        "{}-{}",
        std::process::id(),
        STAGED.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(error) = std::fs::create_dir_all(&directory) {
        let sops = remote.into_iter().map(|instance| instance.sop).collect();
        done.fail(
            "-",
            sops,
            format!("cannot make a staging directory: {error}"),
        );
        return done;
    }
    done.staging = Some(StagingDir(directory.clone()));
    for ((node, study, series), (address, ae_title, sops)) in groups_of(remote) {
        let remote = match holder(settings, &node, address, ae_title) {
            Ok(remote) => remote,
            Err(reason) => {
                done.fail(&node, sops, reason);
                continue;
            }
        };
        let request = RetrieveRequest::instances(&study, &series, sops.clone());
        match qr::get_staged(&remote, &request, &directory) {
            Ok((_, staged)) => {
                let arrived: HashSet<&str> = staged
                    .iter()
                    .map(|staged| staged.sop_instance_uid.as_str())
                    .collect();
                let missing: Vec<String> = sops
                    .iter()
                    .filter(|sop| !arrived.contains(sop.as_str()))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    done.fail(&node, missing, format!("node {node} did not send them"));
                }
                done.staged
                    .extend(staged.into_iter().map(|staged| StoredDataset {
                        triplet: sluice_index::Triplet::new(
                            &study,
                            &series,
                            &staged.sop_instance_uid,
                        ),
                        sop_class_uid: staged.sop_class_uid,
                        transfer_syntax_uid: staged.transfer_syntax_uid,
                        location: DatasetLocation::File {
                            path: staged.path,
                            offset: 0,
                            length: staged.length,
                        },
                    }));
            }
            Err(error) => done.fail(&node, sops, format!("node {node}: {error}")),
        }
    }
    done
}

/// One C-MOVE per holder and series; the holders' outcome.
fn move_from_holders(
    settings: &super::Settings,
    remote: Vec<Remote>,
    destination: &str,
) -> Forwarded {
    let mut done = Forwarded::default();
    for ((node, study, series), (address, ae_title, sops)) in groups_of(remote) {
        let remote = match holder(settings, &node, address, ae_title) {
            Ok(remote) => remote,
            Err(reason) => {
                done.fail(&node, sops, reason);
                continue;
            }
        };
        let mut request = RetrieveRequest::instances(&study, &series, sops.clone());
        request.model = InformationModel::StudyRoot;
        match qr::move_to(&remote, destination, &request, &mut |_| {}) {
            Ok(outcome) => {
                done.completed += outcome.completed as usize;
                done.warning += outcome.warning as usize;
                done.failed += outcome.failed as usize;
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
            Err(error) => done.fail(&node, sops, format!("node {node}: {error}")),
        }
    }
    done
}
