//! Cluster mode, the part that does not depend on segments
//! (docs/design/scale-out.md): each node publishes its committed index
//! entries to a shared PostgreSQL catalogue, where the SOP Instance UID is
//! unique cluster-wide, and quarantines the instances another node
//! published first.
//!
//! - [`hook`] is the one call in the ingest path: the index writer's answer
//!   to a store batch passes through it. It appends the batch's stored
//!   entries to the [`outbox`] (after the LMDB commit, before any
//!   C-STORE response they cover), then answers the batch at once
//!   (`publish = "after-answer"`) or leaves the answer to the publisher
//!   (`"before-answer"`).
//! - [`publisher`] is one std thread: it reads the outbox from its cursor,
//!   publishes in batches ([`catalogue`], one transaction each), moves the
//!   losers into quarantine, and advances the cursor. While PostgreSQL is
//!   unreachable ingest goes on locally; the outbox keeps the backlog, and
//!   `/readyz` and the metrics say so.
//!
//! Architecture invariant: nothing here is on the acknowledgement path in
//! `after-answer` mode but one buffered `write` per index batch; a stored
//! entry is published only while the local index still holds it, and a
//! removal line only ever deletes this node's own row naming its file.

mod catalogue;
mod find;
mod forward;
mod outbox;
mod publisher;
mod reconcile;
mod stored;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use sluice_index::{BatchResult, Disposition, NewInstance, WriteOp, WriteOutcome};

pub use catalogue::{not_uploaded, status, CatalogueError, NodeStatus};
pub(crate) use find::{FindStream, Polled};
pub(crate) use forward::{Counts, Event, Forward, Forwarded, StagingDir, STREAM_WINDOW};
use outbox::{Entry, Outbox};

use crate::config::{Config, ConfigEnum, PublishMode};
use crate::store::in_doubt::InDoubtSet;
use crate::store::Store;

/// The cluster directory under the data directory (the outbox).
pub const CLUSTER_DIR: &str = "cluster";

/// How many batches may wait for the publisher before the next is
/// answered without waiting (before-answer mode).
const WAITING_BATCHES_MAX: usize = 4096;

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// `cluster.catalogue` is set without `cluster.node_name`.
    #[error("cluster.catalogue is set but cluster.node_name is not: each node needs its own name")]
    NodeNameMissing,
    /// The outbox could not be opened.
    #[error("cannot open the cluster outbox in {path}: {source}")]
    Outbox {
        /// The cluster directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What the publisher reports, read by `/readyz` and the metrics.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The catalogue answered the last attempt.
    pub(crate) reachable: AtomicBool,
    /// Since when it does not (Unix seconds; 0 while reachable).
    pub(crate) unreachable_since_unix_s: AtomicU64,
    /// Outbox bytes not yet published.
    pub(crate) backlog_bytes: AtomicU64,
    /// Receive time of the oldest entry not yet published (0: none).
    pub(crate) oldest_unpublished_unix_ns: AtomicU64,
    /// Entries published by this process.
    pub(crate) published: AtomicU64,
    /// Instances moved into quarantine because another node held them.
    pub(crate) demoted: AtomicU64,
    /// The last catalogue error, for `/readyz`.
    pub(crate) last_error: Mutex<String>,
}

/// A batch answer the publisher holds until its entries are published
/// (before-answer mode).
pub(crate) struct Waiting {
    /// The outbox offset just past this batch's entries.
    pub(crate) end_offset: u64,
    /// For each published entry, its item's index in `result`.
    pub(crate) items: Vec<(usize, sluice_index::FileId)>,
    pub(crate) result: BatchResult,
    pub(crate) post: Box<dyn FnOnce(BatchResult) + Send>,
    pub(crate) deadline: Instant,
}

/// This node's side of the cluster (cloned into every core's ingest).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Cluster")
            .field("node", &self.inner.settings.node)
            .finish_non_exhaustive()
    }
}

/// The settings the publisher runs with (from `[cluster]`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) address: String,
    pub(crate) node: String,
    pub(crate) mode: PublishMode,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) batch_max: usize,
    pub(crate) retry: Duration,
    pub(crate) find: crate::config::FindScope,
    /// `cluster.find_connections`.
    pub(crate) find_connections: usize,
    /// `cluster.retrieve_holders_parallel`.
    pub(crate) holders_parallel: usize,
    /// This node's AE title (`network.ae_title`).
    pub(crate) ae_title: String,
    /// This node's DICOM address as the others reach it (`host:port`).
    pub(crate) dicom_address: Option<String>,
}

struct Inner {
    settings: Settings,
    outbox: Outbox,
    /// An append failed (entries the outbox lacks): the stop is not marked
    /// clean, so the next start reconciles.
    outbox_failed: AtomicBool,
    /// The last run did not stop cleanly: reconcile before publishing.
    reconcile: bool,
    state: Arc<State>,
    /// Before-answer: the batches waiting for publication.
    wake: Sender<Waiting>,
    wake_receiver: Mutex<Option<Receiver<Waiting>>>,
    publisher: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// C-GET's staging directories (`<data>/cluster/staging`).
    staging: std::path::PathBuf,
    /// The commitment tracker's connection to the catalogue (lazily made).
    lookup: Mutex<Option<postgres::Client>>,
    /// C-FIND's catalogue connections.
    finds: find::Pool,
}

impl Cluster {
    /// Cluster mode as configured: `None` when `cluster.catalogue` is
    /// unset. Opens the outbox; the publisher starts with [`Cluster::start`].
    pub fn open(config: &Config) -> Result<Option<Cluster>, ClusterError> {
        let cluster = &config.cluster;
        let Some(address) = &cluster.catalogue else {
            return Ok(None);
        };
        let node = cluster
            .node_name
            .as_ref()
            .ok_or(ClusterError::NodeNameMissing)?;
        let directory = config.server.data_directory.join(CLUSTER_DIR);
        let outbox = Outbox::open(&directory).map_err(|source| ClusterError::Outbox {
            path: directory.clone(),
            source,
        })?;
        let clean = outbox
            .take_clean_stop()
            .map_err(|source| ClusterError::Outbox {
                path: directory.clone(),
                source,
            })?;
        // What a C-GET staged before a stop or crash is of no use now.
        let staging = directory.join(forward::STAGING_DIR);
        if let Err(error) = std::fs::remove_dir_all(&staging) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, path = %staging.display(), "cannot remove old C-GET staging files");
            }
        }
        let (wake, wake_receiver) = crossbeam_channel::bounded(WAITING_BATCHES_MAX);
        Ok(Some(Cluster {
            inner: Arc::new(Inner {
                settings: Settings {
                    address: address.as_str().to_owned(),
                    node: node.as_str().to_owned(),
                    mode: cluster.publish,
                    interval: cluster.publish_interval_ms,
                    timeout: cluster.publish_timeout_ms,
                    batch_max: usize::try_from(cluster.publish_batch_max).unwrap_or(1),
                    retry: cluster.retry_interval_ms,
                    find: cluster.find,
                    find_connections: usize::try_from(cluster.find_connections).unwrap_or(1),
                    holders_parallel: usize::try_from(cluster.retrieve_holders_parallel)
                        .unwrap_or(1),
                    ae_title: config.network.ae_title.as_str().to_owned(),
                    dicom_address: cluster
                        .dicom_address
                        .as_ref()
                        .map(|address| format!("{}:{}", address.host(), address.port()))
                        .or_else(|| {
                            let bind = config.network.bind_address;
                            (!bind.is_unspecified()).then(|| {
                                std::net::SocketAddr::new(bind, config.network.port).to_string()
                            })
                        }),
                },
                outbox,
                outbox_failed: AtomicBool::new(false),
                reconcile: !clean,
                state: Arc::default(),
                wake,
                wake_receiver: Mutex::new(Some(wake_receiver)),
                publisher: Mutex::new(None),
                staging,
                lookup: Mutex::new(None),
                finds: find::Pool::default(),
            }),
        }))
    }

    /// Starts the publisher (after start-up recovery: it reads the index).
    pub(crate) fn start(&self, store: Store, in_doubt: InDoubtSet) -> std::io::Result<()> {
        let receiver = self
            .inner
            .wake_receiver
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        let Some(receiver) = receiver else {
            panic!("the cluster publisher started twice");
        };
        let (stop, stop_receiver) = crossbeam_channel::bounded(1);
        let publisher = publisher::Publisher {
            settings: self.inner.settings.clone(),
            state: self.inner.state.clone(),
            cluster: self.clone(),
            store,
            in_doubt,
            reconcile: self.inner.reconcile,
        };
        let handle = std::thread::Builder::new()
            .name("cluster-publish".to_owned())
            .spawn(move || publisher.run(&receiver, &stop_receiver))?;
        *self
            .inner
            .publisher
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some((stop, handle));
        tracing::info!(
            node = %self.inner.settings.node,
            publish = self.inner.settings.mode.name(),
            "cluster mode: publishing committed entries to the shared catalogue"
        );
        Ok(())
    }

    /// Stops the publisher after one last attempt to publish the backlog.
    pub(crate) fn stop(&self) {
        let publisher = self
            .inner
            .publisher
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some((stop, handle)) = publisher {
            let _ = stop.send(());
            if handle.join().is_err() {
                tracing::error!("the cluster publisher panicked");
                return;
            }
            if self.inner.outbox_failed.load(Ordering::Relaxed) {
                tracing::warn!("entries were lost from the cluster outbox during this run; the next start reconciles the index with the catalogue");
                return;
            }
            // Everything appended is flushed: the next start needs no
            // reconciliation.
            if let Err(error) = self.inner.outbox.mark_clean_stop() {
                tracing::error!(%error, "cannot flush the cluster outbox at stop; the next start reconciles the index with the catalogue");
            }
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.inner.state
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// The SOP Class UIDs under which other nodes published those of
    /// `sops` they hold (so acknowledged them, durably), in one query:
    /// Storage Commitment on any node commits instances any node received.
    /// Empty when the catalogue cannot say now (unreachable: the request
    /// waits, and is checked again on the tracker's next round).
    pub(crate) fn published_elsewhere(
        &self,
        sops: &[String],
    ) -> std::collections::HashMap<String, String> {
        if sops.is_empty() || !self.catalogue_reachable() {
            return std::collections::HashMap::new();
        }
        let mut lookup = self
            .inner
            .lookup
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if lookup.is_none() {
            let settings = &self.inner.settings;
            let connected = tls::connect(&settings.address, |config| {
                config
                    .connect_timeout(settings.timeout)
                    .tcp_user_timeout(settings.timeout)
                    .application_name("sluice commitment");
            });
            match connected {
                Ok(client) => *lookup = Some(client),
                Err(error) => {
                    tracing::debug!(%error, "commitment cannot reach the cluster catalogue");
                    return std::collections::HashMap::new();
                }
            }
        }
        let Some(client) = lookup.as_mut() else {
            return std::collections::HashMap::new();
        };
        match client.query(
            "SELECT sop_instance_uid, sop_class_uid FROM sluice_instances
             WHERE sop_instance_uid = ANY($1) AND node <> $2",
            &[&sops, &self.inner.settings.node],
        ) {
            Ok(rows) => rows.iter().map(|row| (row.get(0), row.get(1))).collect(),
            Err(error) => {
                tracing::debug!(%error, "commitment cannot read the cluster catalogue");
                *lookup = None;
                std::collections::HashMap::new()
            }
        }
    }

    /// Whether the publisher's last attempt reached the catalogue.
    pub(crate) fn catalogue_reachable(&self) -> bool {
        self.inner.state.reachable.load(Ordering::Relaxed)
    }

    /// What `/readyz` adds: `None` while the catalogue is reachable.
    pub(crate) fn local_only_because(&self) -> Option<String> {
        let state = &self.inner.state;
        if state.reachable.load(Ordering::Relaxed) {
            return None;
        }
        let error = state
            .last_error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        Some(format!(
            "local-only ingest: the cluster catalogue is unreachable ({error}); {} bytes of entries wait to be published",
            state.backlog_bytes.load(Ordering::Relaxed)
        ))
    }

    /// The writer's answer to a store batch (see [`hook`]).
    fn committed(
        &self,
        ops_count: usize,
        instances: Vec<(usize, NewInstance)>,
        mut result: BatchResult,
        post: Box<dyn FnOnce(BatchResult) + Send>,
    ) {
        let Ok(items) = &mut result else {
            return post(result);
        };
        assert!(items.len() >= ops_count, "an answer per operation");
        let skip = items.len() - ops_count;
        let mut entries = Vec::new();
        let mut waiting_items = Vec::new();
        for (position, instance) in &instances {
            let stored = matches!(
                items.get(skip + position),
                Some(Ok(WriteOutcome::Store(outcome)))
                    if matches!(outcome.disposition(), None | Some(Disposition::Replaced { .. }))
            );
            if stored {
                entries.push(Entry::of(instance));
                waiting_items.push((skip + position, instance.record.file_id));
            }
        }
        if entries.is_empty() {
            return post(result);
        }
        let end_offset = match self.inner.outbox.append(&entries) {
            Ok(end_offset) => end_offset,
            Err(error) => {
                // Not in the outbox: these entries reach the catalogue by
                // the next start's reconciliation. Ingest is not failed for
                // it (the local store has them).
                self.inner.outbox_failed.store(true, Ordering::Relaxed);
                tracing::error!(%error, entries = entries.len(), "cannot append to the cluster outbox; these entries are published after the reconciliation at the next start");
                return post(result);
            }
        };
        let reachable = self.inner.state.reachable.load(Ordering::Relaxed);
        if self.inner.settings.mode == PublishMode::BeforeAnswer && reachable {
            let waiting = Waiting {
                end_offset,
                items: waiting_items,
                result,
                post,
                deadline: Instant::now() + self.inner.settings.timeout,
            };
            match self.inner.wake.try_send(waiting) {
                Ok(()) => {}
                Err(TrySendError::Full(waiting) | TrySendError::Disconnected(waiting)) => {
                    (waiting.post)(waiting.result);
                }
            }
        } else {
            // The publisher finds the entries on its next round (within
            // `cluster.publish_interval_ms`): rounds gather the entries of
            // many batches into one catalogue transaction.
            post(result);
        }
    }
}

/// A writing command's outbox (the data directory's, when it has one:
/// cluster mode). The command holds the data directory's lock, so no
/// server's publisher reads it meanwhile. Opening it takes the clean-stop
/// marker (durably): until [`Offline::finish`] has flushed every append
/// and put the marker back, a crash (or a failed append) leaves none, and
/// the server's next start reconciles the index with the catalogue
/// (`reconcile`), which finds what the outbox missed.
#[derive(Debug)]
pub(crate) struct Offline {
    outbox: Outbox,
    /// The marker was there: the last server stopped cleanly.
    was_clean: bool,
    /// An append failed: the marker stays away.
    failed: AtomicBool,
}

impl Offline {
    /// The outbox of `data_dir`; `None` when it has none (not a cluster
    /// node).
    pub(crate) fn open(data_dir: &std::path::Path) -> std::io::Result<Option<Offline>> {
        let directory = data_dir.join(CLUSTER_DIR);
        if !directory.is_dir() {
            return Ok(None);
        }
        let outbox = Outbox::open(&directory)?;
        let was_clean = outbox.take_clean_stop()?;
        Ok(Some(Offline {
            outbox,
            was_clean,
            failed: AtomicBool::new(false),
        }))
    }

    /// A writing command's change to the stored instances (`sluice
    /// quarantine release`: `instance` is now stored), appended for the
    /// catalogue, published by the server's next start. A failed append
    /// keeps the marker away ([`Offline::finish`]), so that start
    /// reconciles.
    pub(crate) fn stored(&self, instance: &NewInstance) -> std::io::Result<()> {
        let appended = self.outbox.append(&[Entry::of(instance)]).map(|_| ());
        if appended.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        appended
    }

    /// Everything appended flushed, then the marker put back if the last
    /// server left it and no append failed.
    pub(crate) fn finish(self) -> std::io::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        if self.was_clean {
            self.outbox.mark_clean_stop()
        } else {
            self.outbox.flush()
        }
    }
}

/// Where relocations (`WriteOp::Relocate`: compaction, migration) are
/// told to the catalogue: one place change entry per relocated instance,
/// appended to the outbox once the relocation committed; the publisher
/// reads the record's new place from the index and updates the row
/// (docs/design/scale-out.md, "Relocated records").
#[derive(Debug)]
pub(crate) enum Places {
    /// `sluice serve`'s outbox (the online compactor).
    Serving(Cluster),
    /// A command's, holding the data directory's lock (`sluice compact`,
    /// `sluice migrate`).
    Offline(Offline),
}

impl Places {
    /// Records that the instances `moved` (SOP Instance UID, file id) were
    /// relocated. A failed append is logged here and leaves the stale
    /// places to the next start's reconciliation (see [`Offline`]; a
    /// server does not mark its stop clean after one).
    pub(crate) fn relocated(&self, moved: &[(&str, sluice_index::FileId)]) {
        if moved.is_empty() {
            return;
        }
        let entries: Vec<Entry> = moved
            .iter()
            .map(|(sop, file_id)| Entry::relocation(sop, *file_id))
            .collect();
        let (outbox, failed) = match self {
            Places::Serving(cluster) => (&cluster.inner.outbox, &cluster.inner.outbox_failed),
            Places::Offline(offline) => (&offline.outbox, &offline.failed),
        };
        if let Err(error) = outbox.append(&entries) {
            failed.store(true, Ordering::Relaxed);
            tracing::error!(%error, entries = entries.len(), "cannot append relocated records to the cluster outbox; their catalogue places are repaired by the reconciliation at the server's next start");
        }
    }

    /// Done: a command's outbox flushed and its marker put back
    /// ([`Offline::finish`]).
    pub(crate) fn finish(self) -> std::io::Result<()> {
        match self {
            Places::Serving(_) => Ok(()),
            Places::Offline(offline) => offline.finish(),
        }
    }
}

/// The one call of the ingest path (the index batch of store operations
/// `ops`, answered by `post`): without cluster mode, `post` itself; with
/// it, a callback that records the batch's stored entries for the
/// catalogue first (see the module documentation).
pub(crate) fn hook(
    cluster: Option<&Cluster>,
    ops: &[WriteOp],
    post: impl FnOnce(BatchResult) + Send + 'static,
) -> Box<dyn FnOnce(BatchResult) + Send> {
    let Some(cluster) = cluster else {
        return Box::new(post);
    };
    // Each store with its position among `ops` (the answer has one item
    // per operation, after those of the removals put in front of them).
    let instances: Vec<(usize, NewInstance)> = ops
        .iter()
        .enumerate()
        .filter_map(|(position, op)| match op {
            WriteOp::Store(request) => Some((position, request.instance.clone())),
            _ => None,
        })
        .collect();
    let ops_count = ops.len();
    let cluster = cluster.clone();
    Box::new(move |result| cluster.committed(ops_count, instances, result, Box::new(post)))
}
