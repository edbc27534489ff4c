//! The `sluice` binary: `sluice serve` runs the Storage SCP; the operator
//! commands (`ls`, `show`, `quarantine`, `commitments`, `verify`, `stats`,
//! `export-instance`) inspect and manage a data directory.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_engine::cli::OperatorCommand;
use sluice_engine::config::{Config, ConfigArgs, LogFormat, LogLevel};
use sluice_engine::scp::Server;
use sluice_engine::store::Store;

/// How long shutdown waits for the cores to stop once drained.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Sluice: a DICOM storage engine.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
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
    },
    #[command(flatten)]
    Operator(OperatorCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => match config.resolve() {
            Ok(config) => serve(config),
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Operator(command) => {
            init_logging(LogFormat::Text, LogLevel::Warn);
            let mut stdout = std::io::stdout().lock();
            match sluice_engine::cli::run(command, &mut stdout) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error}");
                    error.exit_code()
                }
            }
        }
    }
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

fn serve(config: Config) -> ExitCode {
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
    let store = match Store::open(config) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(%error, "cannot open the store");
            return ExitCode::from(1);
        }
    };
    let server = match Server::start(&store) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot start the storage SCP");
            return ExitCode::from(1);
        }
    };
    let handle = server.shutdown_handle();
    std::thread::spawn(move || {
        // The first signal drains (server.shutdown_drain_ms), a second one
        // stops at once. Shut down first, log second: a log write that
        // fails (stderr closed by a pipe reader that went away) must not
        // stop it.
        if signal_receiver.recv().is_ok() {
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
