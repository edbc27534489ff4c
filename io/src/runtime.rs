//! Starting and stopping the runtime: backend selection (one log line),
//! listeners, one pinned thread per core, the handles other threads use to
//! reach a core (mailboxes plus an eventfd wake-up), and shutdown with a
//! bounded join.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::backend::portable::FilePool;
use crate::backend::{probe, Backend, BackendSetup};
use crate::config::{AcceptMode, BackendKind, RuntimeConfig};
use crate::core::handler::Handler;
use crate::core::run::run_core;
use crate::core::shared::{CoreShared, RuntimeShared};
use crate::core::{Core, CoreLimits};
use crate::error::{JoinError, StartError};
use crate::fault::FaultInjector;
use crate::socket;
use crate::sys;
use crate::wake::WakeSignal;

/// Sends messages to one core's handler ([`Handler::on_message`]) from any
/// thread, e.g. the index writer handing back a committed batch. The queue
/// is bounded (`mailbox_capacity`).
#[derive(Debug)]
pub struct CoreSender<M> {
    sender: Sender<M>,
    wake: Arc<WakeSignal>,
}

impl<M> Clone for CoreSender<M> {
    fn clone(&self) -> CoreSender<M> {
        CoreSender {
            sender: self.sender.clone(),
            wake: Arc::clone(&self.wake),
        }
    }
}

impl<M: Send> CoreSender<M> {
    /// Queues without blocking; `Full` is backpressure, `Disconnected`
    /// means the core has stopped.
    pub fn try_send(&self, message: M) -> Result<(), TrySendError<M>> {
        self.sender.try_send(message)?;
        self.wake.signal();
        Ok(())
    }

    /// Queues, waiting at most `timeout` for room.
    pub fn send_timeout(
        &self,
        message: M,
        timeout: Duration,
    ) -> Result<(), crossbeam_channel::SendTimeoutError<M>> {
        self.sender.send_timeout(message, timeout)?;
        self.wake.signal();
        Ok(())
    }
}

/// A cloneable, `Send` handle to a running runtime.
#[derive(Debug)]
pub struct RuntimeHandle<M> {
    shared: Arc<RuntimeShared>,
    mailboxes: Arc<Vec<Sender<M>>>,
    backend: BackendKind,
}

impl<M> Clone for RuntimeHandle<M> {
    fn clone(&self) -> RuntimeHandle<M> {
        RuntimeHandle {
            shared: Arc::clone(&self.shared),
            mailboxes: Arc::clone(&self.mailboxes),
            backend: self.backend,
        }
    }
}

impl<M: Send> RuntimeHandle<M> {
    /// Asks every core to stop: each cancels its connections and operations,
    /// waits for their completions, closes its descriptors and exits.
    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown_requested(&self) -> bool {
        self.shared.is_shutdown_requested()
    }

    /// Number of cores.
    pub fn core_count(&self) -> usize {
        self.shared.cores.len()
    }

    /// The backend running.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// A sender to core `core`'s handler, `None` if there is no such core.
    pub fn sender(&self, core: usize) -> Option<CoreSender<M>> {
        let sender = self.mailboxes.get(core)?.clone();
        let wake = Arc::clone(&self.shared.cores.get(core)?.wake);
        Some(CoreSender { sender, wake })
    }

    /// Connections currently held by each core.
    pub fn connections_per_core(&self) -> Vec<usize> {
        self.shared
            .cores
            .iter()
            .map(CoreShared::connections)
            .collect()
    }
}

/// A running runtime: its threads and the handle to reach them.
#[derive(Debug)]
pub struct Runtime<M> {
    handle: RuntimeHandle<M>,
    threads: Vec<JoinHandle<()>>,
    exited: Receiver<usize>,
    file_pool: Option<FilePool>,
    listen_addrs: Vec<SocketAddr>,
    backend_reason: String,
}

/// Tells `Runtime::join` that a core thread ended, also when it unwinds from
/// a handler panic (which then stops the other cores too).
struct ExitNotice {
    exited: Sender<usize>,
    core: usize,
    shared: Arc<RuntimeShared>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                core = self.core,
                "core thread panicked; shutting the runtime down"
            );
            self.shared.request_shutdown();
        }
        let _ = self.exited.send(self.core);
    }
}

/// Per core, the listeners (address index, socket) it accepts on.
type CoreListeners = Vec<Vec<(usize, OwnedFd)>>;

fn create_listeners(
    config: &RuntimeConfig,
    backend: BackendKind,
) -> Result<(CoreListeners, Vec<SocketAddr>), StartError> {
    let mut per_core: CoreListeners = (0..config.core_count).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let accepting_cores = match config.accept_mode {
        AcceptMode::ReusePortPerCore => config.core_count,
        AcceptMode::SingleAcceptor => 1,
    };
    for (address_index, &requested) in config.listen_addrs.iter().enumerate() {
        let mut address = requested;
        for listeners in per_core.iter_mut().take(accepting_cores) {
            let socket =
                socket::listener(address, config.listen_backlog, backend).map_err(|source| {
                    StartError::Listen {
                        addr: address,
                        source,
                    }
                })?;
            if address.port() == 0 {
                // Port 0: the first core's listener picks the port, the
                // others join it (SO_REUSEPORT).
                address = socket
                    .local_addr()
                    .ok()
                    .and_then(|local| local.as_socket())
                    .ok_or_else(|| StartError::Listen {
                        addr: requested,
                        source: std::io::Error::other("no local address"),
                    })?;
            }
            listeners.push((address_index, OwnedFd::from(socket)));
        }
        bound.push(address);
    }
    Ok((per_core, bound))
}

impl<M: Send + 'static> Runtime<M> {
    /// Starts the runtime: probes and selects the backend (logging one line
    /// saying which and why), binds the listeners, starts one thread per
    /// core, and makes each core's handler there with `make_handler(index)`.
    /// Returns once every core is ready, or the first error.
    pub fn start<H, F>(config: RuntimeConfig, make_handler: F) -> Result<Runtime<M>, StartError>
    where
        H: Handler<Message = M>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        Self::start_with_mailbox(config, move |index, _| make_handler(index))
    }

    /// Like [`Runtime::start`], and hands each core's handler the sender
    /// of its own mailbox when it is made, so a handler can give other
    /// threads (a writer's completion callback, say) a way back to its core
    /// from its first event on, before `start` has returned.
    pub fn start_with_mailbox<H, F>(
        config: RuntimeConfig,
        make_handler: F,
    ) -> Result<Runtime<M>, StartError>
    where
        H: Handler<Message = M>,
        F: Fn(usize, CoreSender<M>) -> H + Send + Sync + 'static,
    {
        config.validate()?;
        #[cfg(feature = "fault-injection")]
        let simulated_probe_errno = config
            .fault_plan
            .as_ref()
            .and_then(|plan| plan.probe_failure_errno());
        #[cfg(not(feature = "fault-injection"))]
        let simulated_probe_errno = None;
        let (backend, backend_reason) =
            probe::select_backend(config.backend, || probe::probe_uring(simulated_probe_errno))?;
        tracing::info!(backend = %backend, reason = %backend_reason, "sluice-io backend: {backend} ({backend_reason})");

        let (mut listeners, listen_addrs) = create_listeners(&config, backend)?;
        let mut cores_shared = Vec::with_capacity(config.core_count);
        let mut internal_receivers = Vec::with_capacity(config.core_count);
        let mut mailboxes = Vec::with_capacity(config.core_count);
        let mut mailbox_receivers = Vec::with_capacity(config.core_count);
        for core in 0..config.core_count {
            let wake = WakeSignal::new(backend == BackendKind::Portable)
                .map_err(|source| StartError::Core { core, source })?;
            let (internal, internal_receiver) =
                crossbeam_channel::bounded(config.connections_max_per_core);
            cores_shared.push(CoreShared::new(Arc::new(wake), internal));
            internal_receivers.push(internal_receiver);
            let (mailbox, mailbox_receiver) =
                crossbeam_channel::bounded::<M>(config.mailbox_capacity);
            mailboxes.push(mailbox);
            mailbox_receivers.push(mailbox_receiver);
        }
        let shared = Arc::new(RuntimeShared::new(cores_shared));
        let file_pool = match backend {
            BackendKind::Portable => Some(
                FilePool::start(
                    config.portable_file_threads,
                    config.core_count * (config.ops_in_flight_max + 64),
                )
                .map_err(StartError::Spawn)?,
            ),
            BackendKind::Uring => None,
        };
        let handle = RuntimeHandle {
            shared: Arc::clone(&shared),
            mailboxes: Arc::new(mailboxes),
            backend,
        };
        let cpus = sys::allowed_cpus();
        let make_handler = Arc::new(make_handler);
        let (ready_sender, ready_receiver) =
            crossbeam_channel::bounded::<(usize, std::io::Result<()>)>(config.core_count);
        let (exited_sender, exited) = crossbeam_channel::bounded::<usize>(config.core_count);
        let mut threads = Vec::with_capacity(config.core_count);
        let limits = CoreLimits {
            connections_max: config.connections_max_per_core,
            ops_in_flight_max: config.ops_in_flight_max,
            sends_queued_max: config.sends_queued_max_per_connection,
            quickack_after_recv: config.quickack_after_recv,
            accept_mode: config.accept_mode,
            drain_max: config.shutdown_drain_max,
            mailbox_batch_max: config.mailbox_capacity,
        };
        let backend_setup = BackendSetup {
            ring_entries: config.ring_entries,
            // Room for a completion per connection (multishot receives) and
            // per operation; beyond it the kernel queues overflow
            // (IORING_FEAT_NODROP).
            completion_entries: (config.ring_entries * 4)
                .max(
                    u32::try_from(config.connections_max_per_core + config.ops_in_flight_max)
                        .unwrap_or(u32::MAX),
                )
                .next_power_of_two()
                .min(65536),
            buffer_size_bytes: config.recv_buffer_size_bytes,
            buffer_count: config.recv_buffer_count,
            file_workers_max: config.uring_file_workers_max,
            reply_capacity: 2 * (config.ops_in_flight_max + 64),
        };
        let mailbox_receivers_iter = mailbox_receivers.into_iter();
        for (index, (internal, mailbox)) in internal_receivers
            .into_iter()
            .zip(mailbox_receivers_iter)
            .enumerate()
        {
            let core_listeners =
                std::mem::take(listeners.get_mut(index).unwrap_or(&mut Vec::new()));
            let core_shared = Arc::clone(&shared);
            let make_handler = Arc::clone(&make_handler);
            let own_mailbox = handle.sender(index).ok_or_else(|| StartError::Core {
                core: index,
                source: std::io::Error::other("no mailbox for this core"),
            })?;
            let ready = ready_sender.clone();
            let exit_sender = exited_sender.clone();
            let limits = limits.clone();
            let cpu = if config.pin_threads && !cpus.is_empty() {
                cpus.get(index % cpus.len()).copied()
            } else {
                None
            };
            let file_jobs = file_pool.as_ref().and_then(FilePool::sender);
            #[cfg(feature = "fault-injection")]
            let faults = FaultInjector::new(index, config.fault_plan.clone());
            #[cfg(not(feature = "fault-injection"))]
            let faults = FaultInjector;
            let backend_setup = backend_setup.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-core-{index}"))
                .spawn(move || {
                    let shared = core_shared;
                    let _exit_notice = ExitNotice {
                        exited: exit_sender,
                        core: index,
                        shared: Arc::clone(&shared),
                    };
                    if let Some(cpu) = cpu {
                        if let Err(errno) = sys::pin_current_thread(cpu) {
                            tracing::warn!(core = index, cpu, errno, "could not pin core thread");
                        }
                    }
                    let wake = shared.cores.get(index).map(|core| Arc::clone(&core.wake));
                    let built = wake
                        .ok_or_else(|| std::io::Error::other("no wake signal"))
                        .and_then(|wake| Backend::new(backend, &backend_setup, wake, file_jobs));
                    if let Some(setup) = built.as_ref().ok().and_then(|(b, _)| b.uring_setup()) {
                        tracing::debug!(core = index, setup, "io_uring ready");
                    }
                    match built {
                        Ok((backend, pool)) => {
                            let core = Core::new(
                                index,
                                limits,
                                backend,
                                pool,
                                core_listeners,
                                shared,
                                internal,
                                faults,
                            );
                            let _ = ready.send((index, Ok(())));
                            drop(ready);
                            let handler = make_handler(index, own_mailbox);
                            run_core(core, handler, &mailbox);
                        }
                        Err(error) => {
                            drop(core_listeners);
                            let _ = ready.send((index, Err(error)));
                        }
                    }
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    shared.request_shutdown();
                    let runtime = Runtime {
                        handle,
                        threads,
                        exited,
                        file_pool,
                        listen_addrs,
                        backend_reason,
                    };
                    let _ = runtime.join(Duration::from_secs(10));
                    return Err(StartError::Spawn(error));
                }
            }
        }
        drop(ready_sender);
        drop(exited_sender);
        let mut failure = None;
        for _ in 0..config.core_count {
            match ready_receiver.recv() {
                Ok((_, Ok(()))) => {}
                Ok((core, Err(source))) => {
                    failure.get_or_insert(StartError::Core { core, source });
                }
                Err(_) => {
                    failure.get_or_insert(StartError::Core {
                        core: 0,
                        source: std::io::Error::other("core thread died"),
                    });
                    break;
                }
            }
        }
        let runtime = Runtime {
            handle,
            threads,
            exited,
            file_pool,
            listen_addrs,
            backend_reason,
        };
        if let Some(error) = failure {
            runtime.handle.shutdown();
            let _ = runtime.join(Duration::from_secs(10));
            return Err(error);
        }
        Ok(runtime)
    }
}

impl<M> Drop for Runtime<M> {
    /// Dropping a runtime without [`Runtime::join`] still stops its cores
    /// (without waiting for them).
    fn drop(&mut self) {
        self.handle.shared.request_shutdown();
    }
}

impl<M: Send> Runtime<M> {
    /// A handle for other threads.
    pub fn handle(&self) -> RuntimeHandle<M> {
        self.handle.clone()
    }

    /// The backend running.
    pub fn backend(&self) -> BackendKind {
        self.handle.backend
    }

    /// Why this backend was chosen (the text of the start-up log line).
    pub fn backend_reason(&self) -> &str {
        &self.backend_reason
    }

    /// The bound listen addresses (port 0 resolved), in configuration order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Requests shutdown and waits for the threads (see [`Runtime::join`]).
    pub fn shutdown_and_join(self, wait_max: Duration) -> Result<(), JoinError> {
        self.handle.shutdown();
        self.join(wait_max)
    }

    /// Waits at most `wait_max` for every core thread (and the portable
    /// backend's file helpers) to exit. Threads still running are detached
    /// and reported.
    pub fn join(mut self, wait_max: Duration) -> Result<(), JoinError> {
        let deadline = Instant::now() + wait_max;
        let mut exited = 0;
        while exited < self.threads.len() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.exited.recv_timeout(deadline - now) {
                Ok(_) => exited += 1,
                Err(_) => break,
            }
        }
        let mut running = 0;
        let mut panicked = None;
        for (core, thread) in self.threads.drain(..).enumerate() {
            // A thread that sent its exit message (or unwound) finishes at
            // once; give it a moment rather than risk a blocking join.
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                if thread.join().is_err() {
                    panicked.get_or_insert(core);
                }
            } else {
                running += 1;
            }
        }
        if let Some(file_pool) = self.file_pool.take() {
            running += file_pool.stop(deadline.max(Instant::now() + Duration::from_millis(100)));
        }
        if running > 0 {
            return Err(JoinError::Timeout {
                threads: running,
                waited: wait_max,
            });
        }
        if let Some(core) = panicked {
            return Err(JoinError::Panicked { core });
        }
        Ok(())
    }
}
