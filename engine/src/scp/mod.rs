//! The Storage SCP: `sluice serve`'s network side, one handler per
//! `sluice-io` core, and the [`Server`] handle that starts and stops it.
//!
//! Code map (each module's header says what it owns):
//! - `handler`: the core's router, from io events, connection bytes and
//!   other threads' messages to the services below; it holds no service
//!   state of its own.
//! - `conn`: one association (state machine, stream decoder, command
//!   assembly, timer, sends, closing, counters) and the core's table of
//!   them; `admission`: negotiation under the association limits.
//! - `storage`: the Storage service's DIMSE side (C-STORE-RQ to a job or a
//!   refusal, its data set to the job, C-STORE-RSP back); `ingest`: C-STORE
//!   to durable, indexed files. Its `job` module is the
//!   sans-I/O specification of the durability order; `dir_sync` and
//!   `batcher` are the directory fsync rounds and the group commit.
//! - `commitment`: the Storage Commitment DIMSE service (the decisions are
//!   the tracker's, `crate::commit`).
//! - `failure`: the one typed `failure::Failure` of a request, with its
//!   status; `tag`: the io operations' tags; `shared`: what the cores
//!   share; [`policy`]: the acceptor policy built from the configuration.
//!
//! docs/design/ingest.md explains the path and the status mapping;
//! docs/design/engine-structure.md why the services are laid out this way.

mod admission;
mod commitment;
mod conn;
mod failure;
mod handler;
mod ingest;
pub mod policy;
mod query;
mod shared;
mod storage;
mod tag;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_io::{
    BackendChoice, BackendKind, JoinError, Runtime, RuntimeConfig, RuntimeHandle, StartError,
};
use thiserror::Error;

use crate::commit::messages::{Cores, ToCore};
use crate::commit::tracker::{TrackerContext, TrackerHandle};
use crate::config::IoBackend;
use crate::store::in_doubt::InDoubtSet;
use crate::store::Store;
use ingest::space::SpaceAccount;

pub use failure::status_of_index_error;
pub use ingest::{DURABILITY_FAILURES_BEFORE_REFUSING, STATUS_DUPLICATE_REJECTED};

use handler::{CoreHandler, CoreMessage};
use shared::ServerShared;

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
}

/// A hook that adjusts the I/O runtime's configuration before start.
pub type RuntimeAdjustment = Box<dyn FnOnce(&mut RuntimeConfig) + Send>;

/// Settings of a server start beyond the configuration: a hook to adjust
/// the I/O runtime's configuration (tests use it to install a fault plan).
#[derive(Default)]
pub struct ServeOptions {
    /// Called with the runtime configuration just before start.
    pub adjust_runtime: Option<RuntimeAdjustment>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("adjust_runtime", &self.adjust_runtime.is_some())
            .finish()
    }
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

/// A running Storage SCP. Stop it with [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    runtime: Runtime<CoreMessage>,
    shared: Arc<ServerShared>,
    listen_addrs: Vec<SocketAddr>,
}

/// A cloneable handle that asks a running server to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    runtime: RuntimeHandle<CoreMessage>,
}

impl ShutdownHandle {
    /// Asks every core to stop; [`Server::wait`] then returns.
    pub fn shutdown(&self) {
        self.runtime.shutdown();
    }
}

impl Server {
    /// Starts the SCP of `store` with its configuration.
    pub fn start(store: &Store) -> Result<Server, ServeError> {
        Self::start_with(store, ServeOptions::default())
    }

    /// Starts the SCP with extra options.
    pub fn start_with(store: &Store, options: ServeOptions) -> Result<Server, ServeError> {
        let config = store.config();
        // Start-up recovery before accepting anything: it logs its own
        // one-line summary.
        crate::recovery::recover(store.layout(), store.index())
            .map_err(|error| ServeError::Config(format!("start-up recovery failed: {error}")))?;
        let policy = policy::acceptor_policy(config);
        let commitment_policy = policy::commitment_policy(config);
        let mut listen_addrs = vec![SocketAddr::new(
            config.network.bind_address,
            config.network.port,
        )];
        let commitment_listener = if config.commitment_port() != config.network.port {
            listen_addrs.push(SocketAddr::new(
                config.network.bind_address,
                config.commitment_port(),
            ));
            Some(1)
        } else {
            None
        };
        let shared = Arc::new(ServerShared {
            store: store.clone(),
            policy,
            commitment_policy,
            commitment_listener,
            tracker: TrackerHandle::new(),
            established: AtomicU32::new(0),
            per_calling_ae: Mutex::new(std::collections::HashMap::new()),
            in_doubt: InDoubtSet::default(),
            space: SpaceAccount::default(),
            move_destinations: resolve_remote_aes(config),
        });
        let core_count = config.server.cores.count().max(1);
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
        };
        if let Err(error) = shared.tracker.start(context) {
            runtime.handle().shutdown();
            return Err(ServeError::Config(format!(
                "cannot start the commitment tracker: {error}"
            )));
        }
        let listen_addrs = runtime.listen_addrs().to_vec();
        tracing::info!(
            address = %listen_addrs.first().map(ToString::to_string).unwrap_or_default(),
            ae_title = config.network.ae_title.as_str(),
            cores = core_count,
            backend = %runtime.backend(),
            backend_reason = runtime.backend_reason(),
            data_directory = %store.layout().root().display(),
            "storage SCP listening"
        );
        Ok(Server {
            runtime,
            shared,
            listen_addrs,
        })
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
        }
    }

    /// Stops accepting, drops open associations (data sets in flight are
    /// not acknowledged; their temporary files are cleared at next start),
    /// and waits at most `wait_max` for the cores to exit.
    pub fn shutdown(self, wait_max: Duration) -> Result<(), ServeError> {
        let result = self.runtime.shutdown_and_join(wait_max);
        self.shared.tracker.stop();
        Ok(result?)
    }

    /// The addresses of every listener: the main one, then the separate
    /// commitment port when configured.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Waits until a [`ShutdownHandle`] asked the server to stop, then joins
    /// the cores (waiting at most `wait_max` for them once asked).
    pub fn wait(self, wait_max: Duration) -> Result<(), ServeError> {
        let handle = self.runtime.handle();
        while !handle.is_shutdown_requested() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let result = self.runtime.join(wait_max);
        self.shared.tracker.stop();
        Ok(result?)
    }
}
