//! The Storage SCP: `sluice serve`'s network side, one handler per
//! `sluice-io` core, and the [`Server`] handle that starts and stops it.
//!
//! Code map (each module's header says what it owns):
//! - `handler`: the core's router, from io events, connection bytes and
//!   other threads' messages to the services below; it holds no service
//!   state of its own.
//! - `conn`: one association (state machine, stream decoder, command
//!   assembly, timer, sends, closing, counters) and the core's table of
//!   them; `admission`: negotiation under the association limits;
//!   `access`: the access rules (`access.rule`) of an association.
//! - `storage`: the Storage service's DIMSE side (C-STORE-RQ to a job or a
//!   refusal, its data set to the job, C-STORE-RSP back); `ingest`: C-STORE
//!   to durable, indexed files. Its `job` module is the
//!   sans-I/O specification of the durability order; `dir_sync` and
//!   `batcher` are the directory fsync rounds and the group commit.
//! - `commitment`: the Storage Commitment DIMSE service (the decisions are
//!   the tracker's, `crate::commit`).
//! - `failure`: the one typed `failure::Failure` of a request, with its
//!   status; `tag`: the io operations' tags; `shared`: what the cores
//!   share; [`policy`]: the acceptor policy built from the configuration;
//!   `tls`: DICOM TLS between the io layer and a connection's endpoint.
//!
//! docs/design/ingest.md explains the path and the status mapping;
//! docs/design/engine-structure.md why the services are laid out this way.

mod access;
mod admission;
mod commitment;
mod conn;
mod exact;
mod failure;
mod handler;
mod ingest;
mod monitor;
pub mod policy;
mod query;
mod shared;
mod storage;
mod tag;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_io::{
    BackendChoice, BackendKind, JoinError, Runtime, RuntimeConfig, RuntimeHandle, StartError,
};
use thiserror::Error;

use crate::commit::messages::{Cores, ToCore};
use crate::commit::tracker::{TrackerContext, TrackerHandle};
use crate::config::IoBackend;
use crate::lock::{probe_port, DataDirectoryLock, LockError, PortLock};
use crate::store::in_doubt::InDoubtSet;
use crate::store::Store;
pub use ingest::segments::SegmentIds;
use ingest::space::SpaceAccount;

pub use crate::tls::TlsConfigError;
pub use failure::status_of_index_error;
/// The segment preparer (`storage.segment_zero_fill`), for the
/// speed-of-light receiver (`bench`), which prepares its segments the same
/// way.
pub use ingest::prepare::{CoreLoad, Prepared, SegmentPreparer, START_WAIT_MAX};
pub use ingest::{DURABILITY_FAILURES_BEFORE_REFUSING, STATUS_DUPLICATE_REJECTED};

use crate::metrics::{Metrics, Phase};
use handler::{CoreHandler, CoreMessage};
use monitor::Monitor;
use shared::{DrainReport, ServerShared};

/// How long the commitment tracker may wait for room in a core's mailbox.
const TRACKER_MAILBOX_SEND_WAIT: Duration = Duration::from_secs(5);

/// Errors starting or stopping the SCP.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The I/O runtime could not start (bind failed, io_uring unavailable...).
    #[error("cannot start the I/O runtime: {0}")]
    Start(#[from] StartError),
    /// Core threads did not stop in time.
    #[error("cannot stop the I/O runtime: {0}")]
    Join(#[from] JoinError),
    /// The configuration cannot be served, or start-up recovery failed.
    #[error("{0}")]
    Config(String),
    /// Another process holds the data directory or serves the port.
    #[error(transparent)]
    Locked(#[from] LockError),
}

/// Refuses to serve segments no part of the data directory's file system
/// can hold: each would fail its allocation, so every instance would be
/// refused A711 however much space is freed (a transient lack of space is
/// the ingest path's to answer, not this).
fn refuse_segments_larger_than_the_file_system(
    config: &crate::config::Config,
    root: &std::path::Path,
) -> Result<(), ServeError> {
    let segment_bytes = u64::from(config.storage.segment_size_mib) << 20;
    let stats = rustix::fs::statvfs(root)
        .map_err(|error| ServeError::Config(format!("statvfs {}: {error}", root.display())))?;
    let total_bytes = stats.f_blocks.saturating_mul(stats.f_frsize);
    if segment_bytes > total_bytes {
        return Err(ServeError::Config(format!(
            "storage.segment_size_mib = {} is larger than the file system of {} ({} MiB in all): \
             no segment can be allocated there; set a smaller storage.segment_size_mib, or \
             storage.layout = \"files\"",
            config.storage.segment_size_mib,
            root.display(),
            total_bytes >> 20
        )));
    }
    Ok(())
}

/// Starts the preparer of written segments (layout `"segments"` with
/// `storage.segment_zero_fill`: docs/design/segments.md, "Written blocks")
/// after start-up recovery (which deletes the unused prepared segments a
/// crash left) and waits for each core's first one, so the first instances
/// go to written blocks too: one segment's writes per core before the
/// listeners open.
fn start_segment_preparer(
    config: &crate::config::Config,
    shared: &ServerShared,
    core_count: usize,
) -> Result<(), ServeError> {
    let Some(ids) = &shared.segment_ids else {
        return Ok(());
    };
    if config.storage.segment_zero_fill == crate::config::ZeroFill::Off {
        return Ok(());
    }
    let started = Instant::now();
    let preparer = ingest::prepare::SegmentPreparer::start(
        shared.store.layout().clone(),
        ids.clone(),
        config.storage.segment_zero_fill,
        u64::from(config.storage.segment_size_mib) << 20,
        config.storage.free_space_floor,
        core_count,
    )
    .map_err(|error| ServeError::Config(format!("cannot start the segment preparer: {error}")))?;
    let (ready, zeroed) = preparer.wait_first(ingest::prepare::START_WAIT_MAX);
    tracing::info!(
        ready,
        cores = core_count,
        segment_mib = config.storage.segment_size_mib,
        zeroed_mib = zeroed >> 20,
        ms = started.elapsed().as_millis() as u64,
        "first segments prepared (blocks written with zeros and flushed, up to 2 s)"
    );
    let _ = shared.segment_preparer.set(Arc::new(preparer));
    Ok(())
}

/// A hook that adjusts the I/O runtime's configuration before start.
pub type RuntimeAdjustment = Box<dyn FnOnce(&mut RuntimeConfig) + Send>;

/// Settings of a server start beyond the configuration: what holds for
/// this start only (`sluice serve --full-recovery`), and a hook to adjust
/// the I/O runtime's configuration (tests use it to install a fault plan).
#[derive(Default)]
pub struct ServeOptions {
    /// Start-up recovery checks the whole archive even after a clean stop
    /// (`recovery::recover_after`).
    pub full_recovery: bool,
    /// Called with the runtime configuration just before start.
    pub adjust_runtime: Option<RuntimeAdjustment>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("full_recovery", &self.full_recovery)
            .field("adjust_runtime", &self.adjust_runtime.is_some())
            .finish()
    }
}

/// The number of cores the configuration asks for.
fn core_count_of(config: &crate::config::Config) -> usize {
    config.server.cores.count().max(1)
}

/// The cores as the commitment tracker reaches them: the runtime's
/// mailboxes.
struct RuntimeCores(RuntimeHandle<CoreMessage>);

impl Cores for RuntimeCores {
    fn post(&self, core: usize, message: ToCore) -> bool {
        self.0.sender(core).is_some_and(|sender| {
            sender
                .send_timeout(CoreMessage::Commitment(message), TRACKER_MAILBOX_SEND_WAIT)
                .is_ok()
        })
    }

    fn count(&self) -> usize {
        self.0.core_count()
    }

    fn shutdown_requested(&self) -> bool {
        self.0.is_shutdown_requested()
    }
}

/// Every AE of `network.remote_aes` with its address, resolved now (a name
/// that does not resolve is logged and kept as `None`).
fn resolve_remote_aes(
    config: &crate::config::Config,
) -> std::collections::HashMap<String, Option<SocketAddr>> {
    use std::net::ToSocketAddrs;
    config
        .network
        .remote_aes
        .iter()
        .map(|(ae, address)| {
            let resolved = (address.host(), address.port())
                .to_socket_addrs()
                .ok()
                .and_then(|mut addresses| addresses.next());
            if resolved.is_none() {
                tracing::warn!(
                    ae_title = ae.as_str(),
                    host = address.host(),
                    "the address of a remote AE does not resolve; C-MOVE to it will fail (A801)"
                );
            }
            (ae.as_str().to_owned(), resolved)
        })
        .collect()
}

/// A running Storage SCP. Stop it with [`Server::shutdown`] (or a
/// [`ShutdownHandle`] and [`Server::wait`]): it drains first (see
/// [`Server::shutdown`]).
#[derive(Debug)]
pub struct Server {
    runtime: Runtime<CoreMessage>,
    shared: Arc<ServerShared>,
    listen_addrs: Vec<SocketAddr>,
    /// Set by a [`ShutdownHandle`]: [`Server::wait`] drains and stops.
    stop_requested: Arc<AtomicBool>,
    /// The cores' drain reports.
    drained: crossbeam_channel::Receiver<DrainReport>,
    /// The metrics and health endpoint (`[metrics]`), stopped when the
    /// server is dropped.
    monitor: Option<Monitor>,
    /// The audit trail's thread (`[audit]`), stopped after the cores.
    audit_thread: Option<crate::audit::AuditThread>,
    /// The object store's uploader (`[objects]`), stopped after the cores.
    uploader: Option<crate::objects::UploaderThread>,
    /// Online compaction (`storage.compaction_rate_mib_s`), stopped first.
    compactor: Option<crate::compactor::CompactorThread>,
    /// The data directory's and the ports' locks, held until the server is
    /// dropped (after its cores stopped).
    _locks: (DataDirectoryLock, Vec<PortLock>),
}

/// A cloneable handle that asks a running server to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    runtime: RuntimeHandle<CoreMessage>,
    stop_requested: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Asks the server to stop gracefully: [`Server::wait`] drains it (in
    /// flight answered, then every association aborted, within
    /// `server.shutdown_drain_ms`) and stops the cores.
    pub fn shutdown(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
    }

    /// Stops the cores now, without a drain: associations are closed
    /// under their peers and instances in flight go unanswered (start-up
    /// recovery checks them). For a second SIGTERM.
    pub fn shutdown_now(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.runtime.shutdown();
    }
}

/// Writes the clean-stop record of `store`'s data directory, naming the
/// index's content (`recovery::clean_stop`); a failure is logged
/// and costs the next start its full check, nothing else.
fn write_clean_stop(store: &Store) {
    if store.index().writer_halted() {
        // Instances it answered are indexed again only by the next start's
        // full recovery (docs/design/index-format.md, "Answered when applied").
        tracing::error!("not recording a clean stop: the index writer halted after a failed commit; the next start recovers the whole archive");
        return;
    }
    let written = store
        .index()
        .stats()
        .map_err(|error| std::io::Error::other(error.to_string()))
        .and_then(|stats| {
            let stopped_at_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64);
            crate::recovery::clean_stop::write(
                store.layout().root(),
                &crate::recovery::clean_stop::CleanStop {
                    index_fingerprint: crate::recovery::clean_stop::index_fingerprint(&stats),
                    stopped_at_unix_ms,
                },
            )
        });
    match written {
        Ok(()) => {
            tracing::info!("clean stop recorded: the next start skips the walk of the archive")
        }
        Err(error) => {
            tracing::warn!(%error, "cannot record the clean stop: the next start checks the whole archive")
        }
    }
}

/// How long [`Server::drain`] waits past the deadline for instances whose
/// data sets were whole to finish their fsyncs and index commit.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl Server {
    /// Starts the SCP of `store` with its configuration.
    pub fn start(store: &Store) -> Result<Server, ServeError> {
        Self::start_with(store, ServeOptions::default())
    }

    /// Starts the SCP with extra options.
    pub fn start_with(store: &Store, options: ServeOptions) -> Result<Server, ServeError> {
        let config = store.config();
        // One server per data directory: taken before anything is touched
        // (recovery under a running server would remove its files).
        let data_lock = DataDirectoryLock::acquire(store.layout().root(), "sluice serve")?;
        let policy = policy::acceptor_policy(config);
        let commitment_policy = policy::commitment_policy(config);
        // The plain listener first (index 0), unless TLS-only
        // (`network.plain_listener = "off"`: then the TLS one is first).
        let plain = config.network.plain_listener == crate::config::PlainListener::On;
        let mut listen_addrs = Vec::new();
        if plain {
            listen_addrs.push(SocketAddr::new(
                config.network.bind_address,
                config.network.port,
            ));
        }
        let commitment_listener = if plain && config.commitment_port() != config.network.port {
            listen_addrs.push(SocketAddr::new(
                config.network.bind_address,
                config.commitment_port(),
            ));
            Some(1)
        } else {
            None
        };
        // The TLS listener, its configuration read from the PEM files now:
        // a bad file stops the start with its path, not the first handshake.
        let tls = match (
            config.network.tls_port,
            &config.network.tls_certificate,
            &config.network.tls_private_key,
        ) {
            (Some(port), Some(certificate), Some(private_key)) => {
                let server_config = crate::tls::server_config(
                    certificate,
                    private_key,
                    config.network.tls_client_ca.as_deref(),
                )
                .map_err(|error| ServeError::Config(format!("DICOM TLS: {error}")))?;
                listen_addrs.push(SocketAddr::new(config.network.bind_address, port));
                Some((listen_addrs.len() - 1, server_config))
            }
            // `check_tls` refuses a port without its files.
            _ => None,
        };
        let network = &config.network;
        let tls_client = match &network.tls_remote_ca {
            Some(remote_ca) if network.remote_aes.values().any(|remote| remote.tls()) => {
                let identity = network
                    .tls_certificate
                    .as_deref()
                    .zip(network.tls_private_key.as_deref());
                Some(
                    crate::tls::client_config(remote_ca, identity)
                        .map_err(|error| ServeError::Config(format!("DICOM TLS: {error}")))?,
                )
            }
            _ => None,
        };
        let cluster = crate::cluster::Cluster::open(config)
            .map_err(|error| ServeError::Config(error.to_string()))?;
        let (audit, audit_thread) = crate::audit::Audit::start(config, store)
            .map_err(|error| ServeError::Config(format!("audit trail: {error}")))?;
        let (drained_sender, drained) = crossbeam_channel::bounded(core_count_of(config));
        // Every run starts new segments, past every id known (the index's
        // segments and the files in segments/). Read before start-up
        // recovery, which changes neither largest id: it scans, cuts and
        // seals the segments it finds, and its entries name records in
        // them (their own ids); it creates and renumbers none and removes
        // only segments no entry names (so ids read before it stay past
        // every id), and writes no record (so this run's epoch is past
        // theirs either way).
        let segment_ids = if config.storage.layout == crate::config::StorageLayout::Segments {
            refuse_segments_larger_than_the_file_system(config, store.layout().root())?;
            let ids = ingest::segments::SegmentIds::at_start(store)
                .map_err(|error| ServeError::Config(format!("segments: {error}")))?;
            Some(Arc::new(ids))
        } else {
            None
        };
        let shared = Arc::new(ServerShared {
            store: store.clone(),
            policy,
            commitment_policy,
            commitment_listener,
            tls,
            tls_client,
            leniency: policy::leniency(config),
            segment_ids,
            segment_preparer: std::sync::OnceLock::new(),
            compaction: Arc::default(),
            tracker: TrackerHandle::new(
                usize::try_from(config.commitment.memory_budget).unwrap_or(usize::MAX),
            ),
            established: AtomicU32::new(0),
            per_calling_ae: Mutex::new(std::collections::HashMap::new()),
            in_doubt: InDoubtSet::default(),
            move_destinations: resolve_remote_aes(config),
            space: SpaceAccount::default(),
            metrics: Metrics::new(core_count_of(config), config.metrics.metrics_port.is_some()),
            cluster,
            audit,
            drained: drained_sender,
        });
        let core_count = core_count_of(config);
        let connections_per_core = (config.network.max_associations as usize)
            .clamp(16, 16_384)
            .max(64);
        let mut runtime_config = RuntimeConfig {
            core_count,
            backend: match config.server.io_backend {
                IoBackend::Uring => BackendChoice::Uring,
                IoBackend::Portable => BackendChoice::Portable,
                IoBackend::Auto => BackendChoice::Auto,
            },
            listen_addrs,
            connections_max_per_core: connections_per_core,
            // Every association holds one timer (ARTIM or idle) in flight
            // for its whole life, and may have a send and its instances'
            // file operations in flight too: size the operation table by
            // the connections, or a core full of idle associations could
            // not arm the next one's timer.
            ops_in_flight_max: 2 * connections_per_core + 4096,
            quickack_after_recv: true,
            ..RuntimeConfig::default()
        };
        if let Some(adjust) = options.adjust_runtime {
            adjust(&mut runtime_config);
        }
        // One server per port: its lock (held for the server's life; two
        // servers starting at once cannot both pass), then a probe without
        // SO_REUSEPORT, which fails while anyone else listens there (the
        // per-core listeners set SO_REUSEPORT and would silently join them).
        let mut port_locks = Vec::new();
        for address in &runtime_config.listen_addrs {
            if address.port() != 0 {
                port_locks.push(PortLock::acquire(*address)?);
                probe_port(*address)?;
            }
        }
        // The monitoring endpoint before recovery: /readyz answers 503 (and
        // /healthz 200) while it runs, which can take minutes.
        let monitor = match config.metrics.metrics_port {
            Some(port) => {
                let address = SocketAddr::new(config.metrics.metrics_bind_address, port);
                Some(Monitor::start(shared.clone(), address).map_err(|error| {
                    ServeError::Config(format!(
                        "cannot listen on {address} for the metrics endpoint ([metrics]): {error}"
                    ))
                })?)
            }
            None => None,
        };
        // Start-up recovery before accepting anything: it logs its own
        // one-line summary.
        crate::recovery::recover_after(
            store.layout(),
            store.index(),
            data_lock.last_stop(),
            options.full_recovery,
        )
        .map_err(|error| ServeError::Config(format!("start-up recovery failed: {error}")))?;
        start_segment_preparer(config, &shared, core_count)?;
        if let Some(cluster) = &shared.cluster {
            cluster
                .start(store.clone(), shared.in_doubt.clone())
                .map_err(|error| {
                    ServeError::Config(format!("cannot start the cluster publisher: {error}"))
                })?;
        }
        let uploader = crate::objects::Uploader::start(store).map_err(|error| {
            ServeError::Config(format!("cannot start the object store uploader: {error}"))
        })?;
        let compactor = crate::compactor::start(
            store,
            shared.segment_ids.clone(),
            shared.compaction.clone(),
            shared.cluster.clone(),
        )
        .map_err(|error| ServeError::Config(format!("cannot start the compactor: {error}")))?;
        // Application Start before the listeners open, so it comes before
        // any association's messages.
        shared.audit.application(true);
        let factory_shared = shared.clone();
        let runtime = Runtime::start_with_mailbox(runtime_config, move |core_index, mailbox| {
            CoreHandler::new(factory_shared.clone(), core_index, mailbox)
        })?;
        // The tracker starts once the cores can be reached (each core's
        // handler got its own mailbox when it was made); requests that
        // arrive before wait in its channel.
        let context = TrackerContext {
            store: store.clone(),
            in_doubt: shared.in_doubt.clone(),
            cores: Box::new(RuntimeCores(runtime.handle())),
            cluster: shared.cluster.clone(),
        };
        if let Err(error) = shared.tracker.start(context) {
            runtime.handle().shutdown();
            return Err(ServeError::Config(format!(
                "cannot start the commitment tracker: {error}"
            )));
        }
        let listen_addrs = runtime.listen_addrs().to_vec();
        let _ = shared.metrics.backend.set(runtime.backend().to_string());
        shared.metrics.set_phase(Phase::Serving);
        tracing::info!(
            address = %listen_addrs.first().map(ToString::to_string).unwrap_or_default(),
            ae_title = config.network.ae_title.as_str(),
            cores = core_count,
            backend = %runtime.backend(),
            backend_reason = runtime.backend_reason(),
            data_directory = %store.layout().root().display(),
            "storage SCP listening"
        );
        if let Some((index, _)) = &shared.tls {
            tracing::info!(
                address = %listen_addrs.get(*index).map(ToString::to_string).unwrap_or_default(),
                client_certificates = if config.network.tls_client_ca.is_some() {
                    "required"
                } else {
                    "not asked"
                },
                "DICOM TLS listening (TLS 1.2 and 1.3)"
            );
        }
        Ok(Server {
            runtime,
            shared,
            listen_addrs,
            stop_requested: Arc::new(AtomicBool::new(false)),
            drained,
            monitor,
            audit_thread,
            uploader,
            compactor,
            _locks: (data_lock, port_locks),
        })
    }

    /// The address of the metrics and health endpoint, when `[metrics]`
    /// opened one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().map(Monitor::local_addr)
    }

    /// A probe of the cores' liveness, for a watchdog (systemd's
    /// `WatchdogSec=`): see [`Liveness`].
    pub fn liveness(&self) -> Liveness {
        Liveness {
            runtime: self.runtime.handle(),
            shared: self.shared.clone(),
            last_turns: Vec::new(),
        }
    }

    /// The address the main listener is bound to (the real port when the
    /// configuration asked for port 0 — not possible from the file, but from
    /// embedding code adjusting the runtime).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listen_addrs.first().copied()
    }

    /// The I/O backend that runs.
    pub fn backend(&self) -> BackendKind {
        self.runtime.backend()
    }

    /// A handle to stop the server from another thread (signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            runtime: self.runtime.handle(),
            stop_requested: self.stop_requested.clone(),
        }
    }

    /// Stops gracefully: drains ([`Server::drain`]), stops the cores
    /// (waiting at most `wait_max` for them), waits for the index to have
    /// committed and flushed what they left (the in-doubt marks of answered
    /// instances cleared), and stops the commitment tracker. What it leaves
    /// passes `sluice verify` without a restart.
    pub fn shutdown(self, wait_max: Duration) -> Result<(), ServeError> {
        let drained = self.drain();
        self.stop(wait_max, drained)
    }

    /// The graceful part of a stop, within `server.shutdown_drain_ms`: new
    /// associations are refused (A-ASSOCIATE-RJ, transient) and new
    /// C-STOREs answered A700; each association is aborted (A-ABORT) as soon
    /// as everything it asked is answered; at the deadline the rest are
    /// aborted. Returns once every core has no association and no instance
    /// left, or the deadline and a grace for the instances already whole
    /// passed; true in the first case with no request cut short (what a
    /// clean-stop record requires: `recovery::clean_stop`).
    pub fn drain(&self) -> bool {
        let drain_max = self.shared.store.config().server.shutdown_drain_ms;
        self.shared.metrics.set_phase(Phase::Draining);
        let started = Instant::now();
        let deadline = started + drain_max;
        let handle = self.runtime.handle();
        let cores = handle.core_count();
        let mut asked = 0;
        for core in 0..cores {
            let posted = handle.sender(core).is_some_and(|sender| {
                sender
                    .send_timeout(CoreMessage::Drain { deadline }, TRACKER_MAILBOX_SEND_WAIT)
                    .is_ok()
            });
            if posted {
                asked += 1;
            }
        }
        tracing::info!(
            drain_ms = drain_max.as_millis() as u64,
            "shutting down: new associations refused, draining those open"
        );
        let mut drained = 0;
        let mut aborted_busy = 0;
        while drained < asked {
            let Some(left) = (deadline + DRAIN_GRACE).checked_duration_since(Instant::now()) else {
                break;
            };
            match self.drained.recv_timeout(left) {
                Ok(report) => {
                    drained += 1;
                    aborted_busy += report.aborted_busy;
                }
                Err(_) => break,
            }
        }
        let took_ms = started.elapsed().as_millis() as u64;
        if drained == cores && aborted_busy == 0 {
            tracing::info!(
                took_ms,
                "drained: every request answered, every association ended"
            );
            true
        } else {
            tracing::warn!(
                took_ms,
                cores_drained = drained,
                cores,
                associations_aborted_with_requests_in_flight = aborted_busy,
                "drain time over: associations with requests in flight were aborted (their senders retry; nothing unanswered was kept as stored)"
            );
            false
        }
    }

    /// Stops the cores, settles the index, stops the tracker; after a
    /// clean drain (`drained`) with every step done, writes the clean-stop
    /// record last (`recovery::clean_stop`), so the next start skips the
    /// walk of the archive.
    fn stop(self, wait_max: Duration, drained: bool) -> Result<(), ServeError> {
        // Its batch in hand switched and its emptied segments deleted.
        if let Some(compactor) = self.compactor {
            compactor.stop();
        }
        let result = self.runtime.shutdown_and_join(wait_max);
        // The cores are gone: the segments prepared for them are unused.
        if let Some(preparer) = self.shared.segment_preparer.get() {
            preparer.stop();
        }
        // The cores submitted their last in-doubt clears as they stopped:
        // an empty batch behind them returns once they are committed and
        // flushed (the writer keeps order).
        let settled = match self.shared.store.index().writer().execute(Vec::new()) {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "the index did not settle at shutdown; start-up recovery will check the instances in doubt");
                false
            }
        };
        self.shared.tracker.stop();
        if let Some(cluster) = &self.shared.cluster {
            cluster.stop();
        }
        if let Some(uploader) = self.uploader {
            uploader.stop();
        }
        self.shared.audit.application(false);
        if let Some(audit_thread) = self.audit_thread {
            audit_thread.stop();
        }
        let clean = drained && settled && result.is_ok();
        if clean {
            write_clean_stop(&self.shared.store);
        } else {
            tracing::info!(
                drained,
                settled,
                cores_joined = result.is_ok(),
                "no clean-stop record: the next start checks the whole archive"
            );
        }
        Ok(result?)
    }

    /// The addresses of every listener: the plain one (absent when
    /// TLS-only), then the separate commitment port when configured, then
    /// the TLS one.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Waits until a [`ShutdownHandle`] asked the server to stop, then
    /// stops it as [`Server::shutdown`] does (a drain first, unless
    /// [`ShutdownHandle::shutdown_now`] asked, or a core failed, in which
    /// case the cores are already stopping).
    pub fn wait(self, wait_max: Duration) -> Result<(), ServeError> {
        let handle = self.runtime.handle();
        while !self.stop_requested.load(Ordering::SeqCst) && !handle.is_shutdown_requested() {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A stop without a drain (shutdown_now, a failed core) may leave
        // instances in flight: no clean-stop record.
        let drained = !handle.is_shutdown_requested() && self.drain();
        self.stop(wait_max, drained)
    }
}

/// Whether every core still turns its event loop, for a watchdog: each
/// [`Liveness::check`] asks every core for one turn (a message through its
/// mailbox, so an idle core turns too) and says whether every core turned
/// since the previous check. A core stuck in a system call or a loop stops
/// turning, and the check fails until it turns again.
#[derive(Debug)]
pub struct Liveness {
    runtime: RuntimeHandle<CoreMessage>,
    shared: Arc<ServerShared>,
    /// Each core's turn count at the previous check (empty before the first).
    last_turns: Vec<u64>,
}

impl Liveness {
    /// Whether every core turned since the previous call: `Err` with the
    /// cores that did not (the first call: `Ok`, and it asks for the turns
    /// the next one looks for). Call it at intervals well above a core's
    /// worst turn, such as half the watchdog interval.
    pub fn check(&mut self) -> Result<(), Vec<usize>> {
        let turns: Vec<u64> = self
            .shared
            .metrics
            .cores()
            .iter()
            .map(crate::metrics::CoreMetrics::loop_turns)
            .collect();
        let stuck: Vec<usize> = if self.last_turns.is_empty() {
            Vec::new()
        } else {
            turns
                .iter()
                .zip(&self.last_turns)
                .enumerate()
                .filter(|(_, (now, before))| now == before)
                .map(|(core, _)| core)
                .collect()
        };
        self.last_turns = turns;
        for core in 0..self.runtime.core_count() {
            if let Some(sender) = self.runtime.sender(core) {
                // A full mailbox holds messages already: the core turns for
                // them.
                let _ = sender.try_send(CoreMessage::Heartbeat);
            }
        }
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(stuck)
        }
    }
}
