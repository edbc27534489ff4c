//! The `sluice` binary: `sluice serve` runs the Storage SCP; the operator
//! commands (`ls`, `show`, `quarantine`, `commitments`, `verify`, `stats`,
//! `export-instance`) inspect and manage a data directory; `query`,
//! `retrieve` and `prefetch` are the Query/Retrieve SCU (`cli::qr`).
//!
//! Under systemd (`Type=notify`, packaging/debian/sluice.service) `serve`
//! reports READY=1 once start-up recovery is done and the listeners are
//! bound, STOPPING=1 when a signal starts the shutdown, and, when systemd
//! set WATCHDOG_USEC (`WatchdogSec=`), WATCHDOG=1 every half interval as
//! long as every core still turns its event loop ([`Server::liveness`]);
//! without a NOTIFY_SOCKET these are no-ops.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use sd_notify::NotifyState;
use sluice_engine::cli::qr::QrCommand;
use sluice_engine::cli::OperatorCommand;
use sluice_engine::config::{Config, ConfigArgs, LogFormat, LogLevel};
use sluice_engine::scp::{ServeOptions, Server};
use sluice_engine::store::Store;

/// How long shutdown waits for the cores to stop once drained.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Sluice, a DICOM storage engine: the Storage SCP (`serve`) and the
/// operator commands on its data directory.
// `about` comes from this comment, not from the crate's description (which
// describes the library): it heads `--help` and the NAME line of sluice(1).
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the DICOM Storage SCP (with Verification and Storage
    /// Commitment). With no options it stores into ./sluice-data as AE
    /// SLUICE on port 11112.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Check the whole archive at this start (walk objects/ and
        /// quarantine/, check every index entry's file), even after a
        /// clean stop, which otherwise skips it: for a disk you suspect.
        #[arg(long)]
        full_recovery: bool,
    },
    #[command(flatten)]
    Operator(OperatorCommand),
    #[command(flatten)]
    Qr(QrCommand),
    /// Writes the manual pages, sluice(1) and one per subcommand, into a
    /// directory (packaging/build-deb ships them).
    #[command(hide = true)]
    GenerateManPages {
        /// The directory to write into; created if missing.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            full_recovery,
        } => match config.resolve() {
            Ok(config) => serve(
                config,
                ServeOptions {
                    full_recovery,
                    ..ServeOptions::default()
                },
            ),
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::GenerateManPages { out_dir } => match write_man_pages(&out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!(
                    "error: cannot write the man pages into {}: {error}",
                    out_dir.display()
                );
                ExitCode::from(1)
            }
        },
        Command::Operator(command) => {
            init_logging(LogFormat::Text, LogLevel::Warn);
            let mut stdout = std::io::stdout().lock();
            report(sluice_engine::cli::run(command, &mut stdout))
        }
        Command::Qr(command) => {
            init_logging(LogFormat::Text, LogLevel::Warn);
            let mut stdout = std::io::stdout().lock();
            report(sluice_engine::cli::qr::run(command, &mut stdout))
        }
    }
}

/// A command's exit status; its error printed.
fn report(result: Result<ExitCode, sluice_engine::cli::CliError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// clap_mangen writes one page per visible command (hidden ones, such as
/// this one, are left out), named `sluice-serve.1`, `sluice-quarantine-list.1`.
fn write_man_pages(out_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    clap_mangen::generate_to(Cli::command(), out_dir)
}

fn init_logging(format: LogFormat, level: LogLevel) {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

/// Descriptors `sluice serve` holds besides those the configuration
/// scales: LMDB's two files, the lock file and the port locks, each core's
/// ring, eventfd and listeners, the directory fsyncs in flight, standard
/// streams; generous (docs/operations.md, "File descriptors").
const DESCRIPTORS_FIXED: u64 = 256;

/// Raises the soft RLIMIT_NOFILE to the hard one (the default soft limit,
/// often 1024, is far below what thousands of associations need; only the
/// hard limit is an administrator's decision) and says so, with a warning
/// when even the hard limit is below what the configuration may use at
/// once: one descriptor per association and one per instance in flight.
fn raise_descriptor_limit(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if let (Some(current), Some(hard)) = (limit.current, limit.maximum) {
        if current < hard {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(
                        "descriptor limit (RLIMIT_NOFILE) raised from {current} to {hard}"
                    );
                    soft = Some(hard);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot raise the descriptor limit (RLIMIT_NOFILE) from {current} to {hard}");
                }
            }
        }
    }
    let cores = config.server.cores.count().max(1) as u64;
    let needed = u64::from(config.network.max_associations)
        + cores * u64::from(config.storage.instances_in_flight_max_per_core)
        + DESCRIPTORS_FIXED;
    match soft {
        Some(soft) if soft < needed => tracing::warn!(
            limit = soft,
            needed,
            "the descriptor limit (RLIMIT_NOFILE) is below what the configuration may hold open at once (network.max_associations + cores x storage.instances_in_flight_max_per_core + {DESCRIPTORS_FIXED}): raise the hard limit (LimitNOFILE= in a systemd unit, ulimit -Hn) or lower those options, else stores fail with A700 \"Too many open files\" under load"
        ),
        _ => tracing::info!(
            limit = %soft.map_or_else(|| "unlimited".to_owned(), |soft| soft.to_string()),
            needed,
            "descriptor limit (RLIMIT_NOFILE)"
        ),
    }
}

fn serve(config: Config, options: ServeOptions) -> ExitCode {
    init_logging(config.server.log_format, config.server.log_level);
    // The signal handler goes in before anything starts, so a SIGINT/SIGTERM
    // that arrives while the store opens or the cores come up is kept and
    // acted on as soon as the server exists, never lost to the default
    // action. ctrlc (with its "termination" feature) turns both signals into
    // one callback on its own thread, with no unsafe code on our side.
    let (signal_sender, signal_receiver) = std::sync::mpsc::sync_channel::<()>(1);
    if let Err(error) = ctrlc::set_handler(move || {
        let _ = signal_sender.try_send(());
    }) {
        tracing::error!(%error, "cannot install the signal handler");
        return ExitCode::from(1);
    }
    raise_descriptor_limit(&config);
    notify_service_manager(&[NotifyState::Status(
        "opening the store and running start-up recovery",
    )]);
    let store = match Store::open(config) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(%error, "cannot open the store");
            return ExitCode::from(1);
        }
    };
    let server = match Server::start_with(&store, options) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot start the storage SCP");
            return ExitCode::from(1);
        }
    };
    // Server::start returned: recovery has finished and every listener is
    // bound, so associations are accepted from now on.
    let listening: Vec<String> = server
        .listen_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    notify_service_manager(&[
        NotifyState::Ready,
        NotifyState::Status(&format!(
            "accepting associations on {}",
            listening.join(", ")
        )),
    ]);
    let stopping = Arc::new(AtomicBool::new(false));
    if let Some(interval) = sd_notify::watchdog_enabled() {
        start_watchdog(&server, interval, stopping.clone());
    }
    let handle = server.shutdown_handle();
    std::thread::spawn(move || {
        // The first signal drains (server.shutdown_drain_ms), a second one
        // stops at once. Shut down first, log second: a log write that
        // fails (stderr closed by a pipe reader that went away) must not
        // stop it.
        if signal_receiver.recv().is_ok() {
            stopping.store(true, Ordering::SeqCst);
            // STOPPING=1 before the shutdown, so systemd hears it before
            // the process can exit.
            notify_service_manager(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
            handle.shutdown();
            tracing::info!("signal received: shutting down (a second signal stops at once)");
        }
        if signal_receiver.recv().is_ok() {
            handle.shutdown_now();
            tracing::warn!("second signal received: stopping now, without waiting for the drain");
        }
    });
    match server.wait(SHUTDOWN_WAIT) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "shutdown incomplete");
            ExitCode::from(1)
        }
    }
}

/// Sends WATCHDOG=1 every half `interval` while every core turns its event
/// loop: a core stuck in a call or a loop stops the keep-alives, and
/// systemd restarts the service after `interval` (`WatchdogSec=`). Ends at
/// shutdown (systemd stops watching once STOPPING=1 is sent).
fn start_watchdog(server: &Server, interval: Duration, stopping: Arc<AtomicBool>) {
    let mut liveness = server.liveness();
    let period = (interval / 2).max(Duration::from_millis(10));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog: keep-alives while every core turns its loop"
    );
    let spawned = std::thread::Builder::new()
        .name("sluice-watchdog".into())
        .spawn(move || {
            let mut was_stuck = false;
            while !stopping.load(Ordering::SeqCst) {
                match liveness.check() {
                    Ok(()) => {
                        if was_stuck {
                            tracing::info!("systemd watchdog: every core turns again");
                            was_stuck = false;
                        }
                        notify_service_manager(&[NotifyState::Watchdog]);
                    }
                    Err(stuck) => {
                        if !was_stuck {
                            tracing::error!(
                                cores = ?stuck,
                                "systemd watchdog: cores stopped turning their event loop; keep-alives withheld"
                            );
                            was_stuck = true;
                        }
                    }
                }
                std::thread::sleep(period);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the systemd watchdog thread; systemd will restart the service");
    }
}

/// Tells the service manager the server's state (sd_notify(3)). Without a
/// NOTIFY_SOCKET (not started by systemd with `Type=notify`) it does
/// nothing; a failure to send is logged and otherwise ignored: systemd then
/// times the start out or kills the unit, which is the right outcome.
fn notify_service_manager(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
