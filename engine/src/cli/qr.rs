//! The Query/Retrieve SCU commands: `sluice query`, `sluice retrieve` and
//! `sluice prefetch`, thin shells over [`crate::qr`] (which an embedder
//! calls directly). The remote AE's address comes from
//! `network.remote_aes` (or `--address`), our calling AE title from
//! `network.ae_title`, both from the `--config` file `sluice serve` uses.
//!
//! Where retrieved instances land (docs/design/query-retrieve.md, "The
//! SCU"): C-MOVE names our AE as the destination, so the running server
//! stores them. `--get` (C-GET) brings them on the command's own
//! association: the command then embeds the engine (opens the store and
//! starts a Storage SCP on a loopback port for the duration) and relays
//! every instance to it, which needs the data directory's lock: while a
//! `sluice serve` runs on that data directory `--get` is refused at once
//! with a message naming C-MOVE instead.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use sluice_net::query::{InformationModel, Level};

use super::{CliError, StoreArgs};
use crate::config::Config;
use crate::qr::{
    self, key_name, Fetch, GetTarget, PrefetchFilter, PrefetchVerdict, Progress, QrError,
    QueryRequest, RemoteArchive, RetrieveOutcome, RetrieveRequest,
};
use crate::scp::{ServeError, Server};
use crate::store::Store;

/// How long the embedded Storage SCP of `--get` may take to drain.
const EMBEDDED_SHUTDOWN: Duration = Duration::from_secs(30);

/// Where the remote is and how long to wait for it.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// The remote AE title (its address from `network.remote_aes`).
    pub remote_ae: String,
    /// The remote's address as host:port, instead of `network.remote_aes`.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// Seconds the remote may stay silent before the association is aborted.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Seconds a C-MOVE or C-GET may wait for the remote's next response
    /// once requested (pending responses are optional, so a long move may
    /// send none until it ends); 0 waits as long as the association lives.
    #[arg(long, value_name = "SECONDS", default_value_t = qr::RETRIEVE_TIMEOUT_DEFAULT.as_secs())]
    pub retrieve_timeout: u64,
    /// The configuration (`network.ae_title`, `network.remote_aes`) and data directory.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// A query level, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LevelArg {
    /// PATIENT (Patient Root only).
    Patient,
    /// STUDY.
    Study,
    /// SERIES.
    Series,
    /// IMAGE.
    Image,
}

/// An information model, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelArg {
    /// Study Root.
    Study,
    /// Patient Root.
    Patient,
}

/// The Q/R SCU commands. The binary adds them beside `serve` and the
/// operator commands (`#[command(flatten)]`) and calls [`run`].
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum QrCommand {
    /// Query a remote archive (C-FIND).
    ///
    /// Keys are KEY=VALUE: KEY a keyword (PatientID, PatientName,
    /// StudyDate, AccessionNumber, StudyInstanceUID, ModalitiesInStudy,
    /// Modality, SeriesInstanceUID, SOPInstanceUID, ...) or a tag
    /// gggg,eeee; VALUE a single value, a wildcard (`DOE*`, `?`), a date or
    /// time range (`20240101-20240131`, `20240101-`), or empty to ask for
    /// the attribute (universal matching). Each level has default return
    /// keys. Prints an aligned table, or JSON lines with --json; records
    /// received before a failure are printed before it.
    Query {
        /// The remote.
        #[command(flatten)]
        remote: RemoteArgs,
        /// The Query/Retrieve Level.
        #[arg(long, value_enum, default_value_t = LevelArg::Study)]
        level: LevelArg,
        /// The information model.
        #[arg(long, value_enum, default_value_t = ModelArg::Study)]
        model: ModelArg,
        /// One JSON object per match (keyword: value) instead of a table.
        #[arg(long)]
        json: bool,
        /// Matching and return keys, KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        keys: Vec<String>,
    },
    /// Retrieve a study (or series of it) from a remote archive into this store.
    ///
    /// C-MOVE with our own AE title (`network.ae_title`) as the destination:
    /// the running `sluice serve` receives and stores the instances (the
    /// remote must know our address). With --get, C-GET: the instances
    /// come back on this command's association and are stored through an
    /// embedded engine, which needs the data directory for itself (no
    /// `sluice serve` on it). Prints progress on stderr, then the final
    /// counts and the failed SOP Instance UIDs; exits 1 if any failed.
    Retrieve {
        /// The remote.
        #[command(flatten)]
        remote: RemoteArgs,
        /// The Study Instance UID.
        #[arg(long, value_name = "UID")]
        study: String,
        /// Only these series of the study (repeatable).
        #[arg(long, value_name = "UID")]
        series: Vec<String>,
        /// C-GET instead of C-MOVE (needs no inbound connection).
        #[arg(long)]
        get: bool,
    },
    /// Retrieve a patient's studies that this store does not hold yet.
    ///
    /// Queries the remote for the patient's studies (optionally since a
    /// date and with a modality), checks each against the local catalogue
    /// (read only), and retrieves the missing ones as `retrieve` does.
    Prefetch {
        /// The remote.
        #[command(flatten)]
        remote: RemoteArgs,
        /// The Patient ID.
        #[arg(long, value_name = "ID")]
        patient_id: String,
        /// Only studies on or after this date (YYYYMMDD).
        #[arg(long, value_name = "YYYYMMDD")]
        since: Option<String>,
        /// Only studies with this modality.
        #[arg(long, value_name = "MODALITY")]
        modality: Option<String>,
        /// C-GET instead of C-MOVE.
        #[arg(long)]
        get: bool,
    },
}

impl From<QrError> for CliError {
    fn from(error: QrError) -> Self {
        match error {
            QrError::BadRequest(message) => CliError::BadArgument(message),
            other => CliError::Qr(other),
        }
    }
}

impl RemoteArgs {
    fn resolve(&self) -> Result<(Config, RemoteArchive), CliError> {
        let mut config = match &self.store.config_file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(data_dir) = &self.store.data_dir {
            config.server.data_directory = data_dir.clone();
        }
        let mut remote =
            RemoteArchive::from_config(&config, &self.remote_ae, self.address.as_deref())?;
        remote.timeout = Duration::from_secs(self.timeout);
        remote.retrieve_timeout =
            Some(Duration::from_secs(self.retrieve_timeout)).filter(|timeout| !timeout.is_zero());
        Ok((config, remote))
    }
}

/// Runs one Q/R SCU command; `output` gets the results, stderr the progress.
pub fn run(command: QrCommand, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    match command {
        QrCommand::Query {
            remote,
            level,
            model,
            json,
            keys,
        } => query(&remote, level, model, json, &keys, output),
        QrCommand::Retrieve {
            remote,
            study,
            series,
            get,
        } => retrieve(&remote, &study, series, get, output),
        QrCommand::Prefetch {
            remote,
            patient_id,
            since,
            modality,
            get,
        } => prefetch(&remote, patient_id, since, modality, get, output),
    }
}

fn query(
    args: &RemoteArgs,
    level: LevelArg,
    model: ModelArg,
    json: bool,
    keys: &[String],
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let model = match model {
        ModelArg::Study => InformationModel::StudyRoot,
        ModelArg::Patient => InformationModel::PatientRoot,
    };
    let level = match level {
        LevelArg::Patient => Level::Patient,
        LevelArg::Study => Level::Study,
        LevelArg::Series => Level::Series,
        LevelArg::Image => Level::Image,
    };
    if !model.has_level(level) {
        return Err(CliError::BadArgument(format!(
            "{} has no {} level (use --model patient)",
            model.name(),
            level.as_str()
        )));
    }
    let mut request = QueryRequest::new(model, level);
    for key in keys {
        request.add_key(key)?;
    }
    let (_, remote) = args.resolve()?;
    let mut rows: Vec<qr::Match> = Vec::new();
    let mut write_error: Option<std::io::Error> = None;
    let result = qr::find(&remote, &request, &mut |found| {
        if json {
            let line = json_line(found);
            if let Err(error) = writeln!(output, "{line}") {
                write_error.get_or_insert(error);
            }
        } else {
            rows.push(found.clone());
        }
    });
    if let Some(error) = write_error {
        return Err(CliError::Output(error));
    }
    // The records received before a failure are shown, then the failure.
    if !json {
        write_table(&request, &rows, output)?;
    }
    let summary = result?;
    if rows.iter().any(|row| row.keys_unsupported) {
        eprintln!("warning: the remote did not support one or more optional keys (FF01)");
    }
    if summary.cancelled {
        eprintln!(
            "warning: the remote cancelled the query (FE00) after {} matches",
            summary.matches
        );
    } else if summary.status != 0 {
        eprintln!(
            "warning: status {:04X} ({}){}",
            summary.status,
            qr::status_meaning(summary.status),
            summary
                .comment
                .as_ref()
                .map(|comment| format!(": {comment}"))
                .unwrap_or_default()
        );
    }
    if !json {
        writeln!(output, "{} match(es)", summary.matches)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One match as a JSON object, keys by keyword, in the match's order.
fn json_line(found: &qr::Match) -> String {
    let members: Vec<String> = found
        .values
        .iter()
        .map(|(tag, value)| {
            format!(
                "{}: {}",
                serde_json::Value::String(key_name(*tag)),
                serde_json::Value::String(value.clone())
            )
        })
        .collect();
    format!("{{{}}}", members.join(", "))
}

/// The matches as an aligned table: one column per requested key, then
/// any other attribute a remote added; control characters escaped.
fn write_table(
    request: &QueryRequest,
    rows: &[qr::Match],
    output: &mut dyn Write,
) -> Result<(), CliError> {
    let mut columns: Vec<sluice_net::dimse::Tag> =
        request.keys.iter().map(|(tag, _)| *tag).collect();
    for row in rows {
        for (tag, _) in &row.values {
            if !columns.contains(tag) {
                columns.push(*tag);
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|tag| crate::escape::Escaped(row.value(*tag).unwrap_or("")).to_string())
                .collect()
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|tag| key_name(*tag)).collect();
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(column, name)| {
            cells
                .iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .chain(std::iter::once(name.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| {
        values
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!("{value:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(output, "{}", line(&header))?;
    for row in &cells {
        writeln!(output, "{}", line(row))?;
    }
    Ok(())
}

fn progress_line(label: &str, progress: Progress) {
    let remaining = progress
        .remaining
        .map_or_else(|| "?".to_owned(), |remaining| remaining.to_string());
    eprintln!(
        "{label}{} completed, {} failed, {} warning, {remaining} remaining",
        progress.completed, progress.failed, progress.warning
    );
}

/// The embedded engine of `--get`: the store and a Storage SCP on a
/// loopback port, for this command's life.
struct Embedded {
    server: Server,
    target: GetTarget,
    store: Store,
}

impl Embedded {
    fn start(mut config: Config) -> Result<Embedded, CliError> {
        let data_dir = config.server.data_directory.clone();
        config.network.bind_address = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        config.network.port = 0;
        config.network.commitment_port = None;
        // Its one listener is the plain loopback one the C-GET is relayed
        // to (a site that serves TLS only, or on a TLS port, has no
        // business opening those here).
        config.network.plain_listener = crate::config::PlainListener::On;
        config.network.tls_port = None;
        let ae_title = config.network.ae_title.as_str().to_owned();
        let store = Store::open(config).map_err(|error| {
            CliError::Qr(QrError::Local(format!(
                "cannot open the store in {}: {error}",
                data_dir.display()
            )))
        })?;
        let server = Server::start(&store).map_err(|error| match error {
            ServeError::Locked(lock) => CliError::BadArgument(format!(
                "--get stores through an embedded engine, which needs the data directory for itself, but {lock}. \
                 Retrieve with C-MOVE instead (drop --get): the running server is the destination and stores the instances"
            )),
            other => CliError::Qr(QrError::Local(format!(
                "cannot start the embedded Storage SCP: {other}"
            ))),
        })?;
        let address = server.local_addr().ok_or_else(|| {
            CliError::Qr(QrError::Local(
                "the embedded Storage SCP has no listener".into(),
            ))
        })?;
        Ok(Embedded {
            server,
            target: GetTarget { address, ae_title },
            store,
        })
    }

    fn stop(self) -> Result<(), CliError> {
        self.server
            .shutdown(EMBEDDED_SHUTDOWN)
            .map_err(|error| CliError::Qr(QrError::Local(format!("embedded engine: {error}"))))
    }
}

fn write_outcome(outcome: &RetrieveOutcome, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    writeln!(
        output,
        "status {:04X} ({}): {} completed, {} failed, {} warning",
        outcome.status,
        qr::status_meaning(outcome.status),
        outcome.completed,
        outcome.failed,
        outcome.warning
    )?;
    if let Some(comment) = &outcome.comment {
        writeln!(output, "comment: {}", crate::escape::Escaped(comment))?;
    }
    for uid in &outcome.failed_sop_instance_uids {
        writeln!(output, "failed: {}", crate::escape::Escaped(uid))?;
    }
    let failed = outcome.failed > 0 || !outcome.failed_sop_instance_uids.is_empty();
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn retrieve(
    args: &RemoteArgs,
    study: &str,
    series: Vec<String>,
    get: bool,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (config, remote) = args.resolve()?;
    let mut request = RetrieveRequest::study(study);
    request.series_instance_uids = series;
    let mut progress = |step| progress_line("progress: ", step);
    let result = if get {
        let embedded = Embedded::start(config)?;
        let result = qr::get(&remote, &request, &embedded.target, &mut progress);
        embedded.stop()?;
        result
    } else {
        let destination = config.network.ae_title.as_str().to_owned();
        qr::move_to(&remote, &destination, &request, &mut progress)
    };
    match result {
        Ok(outcome) => write_outcome(&outcome, output),
        Err(QrError::Failed {
            operation,
            status,
            meaning,
            comment,
            counts,
        }) => {
            // The counts and failed UIDs of a failed retrieval are shown too.
            write_outcome(&counts, output)?;
            Err(CliError::Qr(QrError::Failed {
                operation,
                status,
                meaning,
                comment,
                counts,
            }))
        }
        Err(error) => Err(error.into()),
    }
}

fn prefetch(
    args: &RemoteArgs,
    patient_id: String,
    since: Option<String>,
    modality: Option<String>,
    get: bool,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (config, remote) = args.resolve()?;
    let filter = PrefetchFilter {
        patient_id,
        since,
        modality,
    };
    let mut progress = |uid: &str, step| progress_line(&format!("{uid}: "), step);
    let outcome = if get {
        let embedded = Embedded::start(config)?;
        let fetch = Fetch::Get(embedded.target.clone());
        let outcome = qr::prefetch(
            &remote,
            &filter,
            embedded.store.index(),
            &fetch,
            &mut progress,
        );
        embedded.stop()?;
        outcome?
    } else {
        // The catalogue is read only (as `sluice ls` reads it beside a server).
        let store = args.store.open()?;
        let fetch = Fetch::Move(config.network.ae_title.as_str().to_owned());
        qr::prefetch(&remote, &filter, &store.index, &fetch, &mut progress)?
    };
    let mut fetched = 0usize;
    let mut skipped = 0usize;
    let mut failed = 0usize;
    for study in &outcome.studies {
        let uid = crate::escape::Escaped(&study.study_instance_uid);
        match &study.verdict {
            PrefetchVerdict::Skipped { local_instances } => {
                skipped += 1;
                writeln!(
                    output,
                    "skipped {uid}: held here ({local_instances} instances)"
                )?;
            }
            PrefetchVerdict::Fetched(retrieved) => {
                let whole = retrieved.failed == 0 && retrieved.failed_sop_instance_uids.is_empty();
                if whole {
                    fetched += 1;
                } else {
                    failed += 1;
                }
                writeln!(
                    output,
                    "fetched {uid}: {} completed, {} failed, {} warning",
                    retrieved.completed, retrieved.failed, retrieved.warning
                )?;
                for failed_uid in &retrieved.failed_sop_instance_uids {
                    writeln!(output, "failed: {}", crate::escape::Escaped(failed_uid))?;
                }
            }
            PrefetchVerdict::Failed(reason) => {
                failed += 1;
                writeln!(output, "failed {uid}: {reason}")?;
            }
        }
    }
    writeln!(
        output,
        "{} studies: {fetched} fetched, {skipped} skipped, {failed} failed",
        outcome.studies.len()
    )?;
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
