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
//! Each node publishes its DICOM address (`cluster.dicom_address`) in
//! `sluice_nodes`; the Move Destination must be known on every node (the
//! same `network.remote_aes` everywhere), and each node must accept C-MOVE
//! from the others' AE title (docs/operations.md's cluster section).

use std::collections::{BTreeMap, HashSet};
use std::net::ToSocketAddrs;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use postgres::NoTls;
use sluice_net::query::{InformationModel, Level, Query};

use super::find::{run as find_run, Message};
use super::Cluster;
use crate::qr::{self, RemoteArchive, RetrieveRequest};

/// What the holders did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
        let spawned = std::thread::Builder::new()
            .name("cluster-move".to_owned())
            .spawn(move || {
                let outcome = match remote_instances(&settings, &query, &local) {
                    Ok(remote) => match &destination {
                        Some(destination) => move_from_holders(&settings, remote, destination),
                        None => not_here(remote),
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
    find_run(&settings.address, settings.timeout, query, &sender).map_err(|e| e.to_string())?;
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

/// C-GET: the instances other nodes hold fail, named.
fn not_here(remote: Vec<Remote>) -> Forwarded {
    let mut done = Forwarded::default();
    if let Some(first) = remote.first() {
        done.reason = Some(format!(
            "held by node {}: C-GET across nodes is not built (C-MOVE is)",
            first.node
        ));
    }
    done.failed = remote.len();
    done.failed_uids = remote.into_iter().map(|instance| instance.sop).collect();
    done
}

/// One C-MOVE per holder and series; the holders' outcome.
fn move_from_holders(
    settings: &super::Settings,
    remote: Vec<Remote>,
    destination: &str,
) -> Forwarded {
    let mut groups = Groups::new();
    for instance in remote {
        let group = groups
            .entry((instance.node, instance.study, instance.series))
            .or_insert((instance.address, instance.ae_title, Vec::new()));
        group.2.push(instance.sop);
    }
    let mut done = Forwarded::default();
    for ((node, study, series), (address, ae_title, sops)) in groups {
        let fail = |done: &mut Forwarded, sops: Vec<String>, reason: String| {
            tracing::warn!(node = %node, instances = sops.len(), reason = %reason, "C-MOVE: instances held by another node cannot be moved");
            done.failed += sops.len();
            done.failed_uids.extend(sops);
            done.reason.get_or_insert(reason);
        };
        let Some(address) = address.and_then(|address| {
            address
                .to_socket_addrs()
                .ok()
                .and_then(|mut found| found.next())
        }) else {
            fail(
                &mut done,
                sops,
                format!("node {node} publishes no reachable DICOM address"),
            );
            continue;
        };
        let remote = RemoteArchive {
            ae_title: ae_title.unwrap_or_else(|| settings.ae_title.clone()),
            address,
            calling_ae_title: settings.ae_title.clone(),
            timeout: settings.timeout.max(Duration::from_secs(5)),
            retrieve_timeout: Some(qr::RETRIEVE_TIMEOUT_DEFAULT),
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
            Err(error) => fail(&mut done, sops, format!("node {node}: {error}")),
        }
    }
    done
}
