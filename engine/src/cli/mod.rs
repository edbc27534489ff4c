//! The operator commands of the `sluice` binary: `ls`, `show`, `quarantine`,
//! `flagged`, `commitments`, `verify`, `stats`, `export-instance`,
//! `migrate` (between the storage layouts, offline), `compact` (segments'
//! dead bytes, offline), and `media export` /
//! `media import` (`media`).
//!
//! What this module owns: the clap declaration of those commands
//! ([`OperatorCommand`]), how a command finds its store (`--data-dir`,
//! `--config`, the same resolution `sluice serve` uses), their output
//! formats, and their errors ([`CliError`]). The binary parses the command
//! line and calls [`run`]; output goes to a `&mut dyn Write` so tests read it.
//!
//! Running beside a server: LMDB lets several processes read one index at
//! once, so every reading command works while `sluice serve` runs on the
//! same data directory and sees the last committed state. The writing
//! commands (`quarantine release`, `quarantine purge`, `migrate`, `compact`) take the data
//! directory's lock (`crate::lock`), as `sluice serve` does: while a server
//! runs they are refused with its process id, and a server does not start
//! while one of them runs. (They move files the server's ingest and
//! recovery also decide about; one writer at a time keeps those decisions
//! whole.) The reading commands never submit a write, but `sluice-index`
//! has no read-only open yet, so they open the environment as the server
//! does (it creates nothing in an existing index); a missing data directory
//! or index is an error, never created.
//!
//! Exit codes: 0 success; 1 when `verify` found problems; an `Err` from
//! [`run`] is for the binary to print (`error: ...`) and exit non-zero
//! ([`CliError::exit_code`]).

mod browse;
mod cluster;
mod commitments;
pub(crate) mod compact;
mod flagged;
mod format;
pub(crate) mod media;
mod migrate;
pub mod qr;
mod quarantine;
pub(crate) mod relocation;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice_index::{Index, IndexError, IndexOptions};

pub use cluster::ClusterCommand;

use crate::config::{Config, ConfigError};
use crate::lock::{DataDirectoryLock, LockError};
use crate::store::layout::Layout;

pub use commitments::CommitmentsCommand;
pub use media::MediaCommand;
pub use migrate::Target as MigrateTarget;
pub use quarantine::QuarantineCommand;

/// Where a command finds its store: the same `--config` and `--data-dir` as
/// `sluice serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// The TOML configuration file of `sluice serve` (its
    /// `server.data_directory` and `storage.index_map_size` are used; pass
    /// the server's own file so both processes map the index alike).
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// The data directory [default: the configuration's, else ./sluice-data].
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Most lines a listing prints unless `--limit` says otherwise.
pub const LISTING_LIMIT_DEFAULT: u64 = 1000;

/// A `--limit` as a listing bound.
fn listing_limit(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The operator commands. The binary adds them beside `serve`
/// (`#[command(flatten)]` into its own subcommand enum) and calls [`run`].
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum OperatorCommand {
    /// List studies, a study's series, or a series' instances.
    ///
    /// With no UID: the studies (patient, date, modalities, counts,
    /// accession). With a Study Instance UID: its series. With a Series
    /// Instance UID too: that series' instances.
    Ls {
        /// List the series of this study.
        study_instance_uid: Option<String>,
        /// List the instances of this series (of the study above).
        series_instance_uid: Option<String>,
        /// Most rows to print (at least 1).
        #[arg(long, default_value_t = LISTING_LIMIT_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show the index record of one stored instance.
    ///
    /// Its UIDs, file path and size, transfer syntax, SOP class, XXH3-128
    /// checksum of the data set, when (RFC 3339, UTC) and from which
    /// calling AE it was received.
    Show {
        /// The SOP Instance UID.
        sop_instance_uid: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Inspect, release or purge quarantined duplicates.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// List the instances stored although a lenient check found something.
    ///
    /// Each with its SOP and Study Instance UIDs, where its file is
    /// (objects or quarantine), its sender and when it arrived, and what the
    /// checks of `[validation]` set to "lenient" found in it.
    Flagged {
        /// Most rows to print (at least 1).
        #[arg(long, default_value_t = LISTING_LIMIT_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List and inspect Storage Commitment transactions.
    #[command(subcommand)]
    Commitments(CommitmentsCommand),
    /// Re-read every stored file and compare it with the index.
    ///
    /// For every stored instance and quarantine entry: the file must exist,
    /// have the recorded size, and its data set must hash to the recorded
    /// XXH3-128 checksum. Prints one line per problem and a summary; exits with
    /// status 1 if any file is missing, of the wrong size, unreadable or
    /// altered.
    Verify {
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Index table sizes, and files and bytes in each area on disk.
    Stats {
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Copy the Part 10 file of a stored instance to PATH, byte for byte.
    ///
    /// Refuses to overwrite an existing file unless --force is given.
    ExportInstance {
        /// The SOP Instance UID.
        sop_instance_uid: String,
        /// Where to write the copy.
        path: PathBuf,
        /// Overwrite PATH if it exists.
        #[arg(long)]
        force: bool,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// DICOM media: export stored studies as a File-set with a DICOMDIR,
    /// import a File-set or a directory of Part 10 files.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Convert the store between the storage layouts, offline.
    ///
    /// Takes the data directory's lock (refused while `sluice serve`
    /// runs). Every stored instance not in the target layout is read,
    /// checked against the index (a damaged one is reported and left as it
    /// is), written in the target layout and flushed, then the index
    /// switched batch by batch, then the old copy removed. Quarantine stays
    /// files in the segments layout. Interrupted, it is run again to
    /// finish. Exits 0 only when everything was migrated; the
    /// configuration's `storage.layout` is the operator's to change.
    Migrate {
        /// The layout to convert to.
        #[arg(long, value_enum)]
        to: MigrateTarget,
        /// Instances switched in the index per transaction (at least 1).
        #[arg(long, default_value_t = migrate::BATCH_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Reclaim the dead bytes of sealed segments, offline.
    ///
    /// Takes the data directory's lock (refused while `sluice serve`
    /// runs). A sealed segment at least `storage.compaction_dead_percent`
    /// dead (and `storage.compaction_dead_min` bytes), or with no live
    /// record, has its live records copied and checked into new segments,
    /// flushed, then the index switched batch by batch, then the old
    /// segment deleted. Segments uploaded to the object store are left.
    /// Interrupted, it is run again. Exits 0 when every live record of
    /// every candidate moved.
    Compact {
        /// List the candidates and the bytes they would free; change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Records switched in the index per transaction (at least 1).
        #[arg(long, default_value_t = compact::BATCH_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Copy at most this many MiB of records per second (0: as fast as
        /// the disk goes).
        #[arg(long, default_value_t = 0)]
        rate_mib_s: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Cluster mode: the nodes as the shared catalogue sees them.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration file named by `--config` could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory does not exist.
    #[error(
        "data directory {} does not exist (pass --data-dir or --config, or start `sluice serve` once to create it)",
        data_dir.display()
    )]
    NoDataDirectory {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The data directory exists but holds no index.
    #[error(
        "{} is not a Sluice data directory: it has no index/ (start `sluice serve` once to create one)",
        data_dir.display()
    )]
    NoIndex {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The index could not be opened or read.
    #[error("index of {}: {source}", data_dir.display())]
    Index {
        /// The data directory.
        data_dir: PathBuf,
        /// The index's error.
        source: IndexError,
    },
    /// A UID or quarantine id that the store does not hold.
    #[error("{what} in {}", data_dir.display())]
    NotFound {
        /// What was looked for, as a sentence start
        /// (`no instance with SOP Instance UID 1.2.3`).
        what: String,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// Arguments that cannot work together.
    #[error("{0}")]
    BadArgument(String),
    /// `export-instance` would overwrite a file.
    #[error("{} exists; refusing to overwrite it (pass --force to replace it)", path.display())]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("cannot {operation} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `copy`, `move`).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The index refused a write (a quarantine operation).
    #[error("the index refused {operation}: {reason}")]
    IndexRefused {
        /// The operation.
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// Another process (a running server) holds the data directory.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// `media import` found problems in the File-set (listed before): it
    /// imported nothing.
    #[error("{problems} problems in {} (listed above); nothing was imported", dir.display())]
    MediaInvalid {
        /// The File-set's directory.
        dir: PathBuf,
        /// How many problems.
        problems: usize,
    },
    /// `media import` embeds the engine, which a running server excludes.
    #[error(
        "data directory {} is in use by {holder}: `sluice media import` embeds the engine and needs the data directory to itself; stop the server and run the import again, or send the files to the running server with a Storage SCU (e.g. `storescu +sd +r`). Nothing was imported",
        path.display()
    )]
    ServerRunning {
        /// The data directory.
        path: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// A Query/Retrieve SCU operation failed (the remote, the association,
    /// or the local store behind a C-GET).
    #[error(transparent)]
    Qr(crate::qr::QrError),
    /// Writing the command's output failed (a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl CliError {
    /// The process exit status for this error: 2 for usage problems (bad
    /// arguments, no store where one was named), 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_)
            | CliError::BadArgument(_)
            | CliError::NoDataDirectory { .. }
            | CliError::NoIndex { .. } => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    pub(crate) fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| CliError::Io {
            operation,
            path,
            source,
        }
    }
}

impl From<std::io::Error> for CliError {
    /// Only for errors writing the output; file errors carry their path.
    fn from(error: std::io::Error) -> Self {
        CliError::Output(error)
    }
}

/// An opened store: its layout and its index (and, for a command that
/// writes, the data directory's lock).
pub(crate) struct OpenStore {
    pub(crate) layout: Layout,
    pub(crate) index: Index,
    /// The object store (`[objects]` of the configuration file), for the
    /// records of evicted segments.
    pub(crate) objects: Option<std::sync::Arc<crate::objects::Objects>>,
    _lock: Option<DataDirectoryLock>,
}

impl std::fmt::Debug for OpenStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpenStore")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl OpenStore {
    pub(crate) fn data_dir(&self) -> &Path {
        self.layout.root()
    }

    pub(crate) fn index_error(&self) -> impl Fn(IndexError) -> CliError + '_ {
        move |source| CliError::Index {
            data_dir: self.data_dir().to_owned(),
            source,
        }
    }

    /// Where the bytes of an instance's entry in `area` are (its file, or
    /// its segment record), its location read in `txn`.
    pub(crate) fn locate(
        &self,
        txn: &sluice_index::ReadTxn<'_>,
        area: crate::store::layout::Area,
        entry: &sluice_index::InstanceEntry,
    ) -> Result<crate::store::DatasetLocation, CliError> {
        crate::store::readable(&self.layout, self.objects.as_ref(), txn, area, entry).map_err(
            |error| CliError::Io {
                operation: "locate an instance in",
                path: self.data_dir().to_owned(),
                source: std::io::Error::other(error.to_string()),
            },
        )
    }

    /// The bytes of an instance's entry in `area`: its place read in a read
    /// transaction of its own and its file opened; a record that `sluice
    /// serve`'s online compaction moved (and whose old segment it deleted)
    /// in between is opened at its new place (`store::open_relocating`).
    pub(crate) fn open_located(
        &self,
        area: crate::store::layout::Area,
        entry: &sluice_index::InstanceEntry,
    ) -> Result<(crate::store::DatasetLocation, std::fs::File), CliError> {
        let first = {
            let txn = self.index.read().map_err(self.index_error())?;
            self.locate(&txn, area, entry)?
        };
        crate::store::open_relocating(first, |old| {
            let txn = self.index.read()?;
            let now =
                crate::store::readable(&self.layout, self.objects.as_ref(), &txn, area, entry)?;
            let moved = matches!(now, crate::store::DatasetLocation::Record { .. }) && now != *old;
            Ok(moved.then_some(now))
        })
        .map_err(|error| match error {
            crate::store::StoreError::ReadFile { path, source } => {
                CliError::io("open", &path)(source)
            }
            other => CliError::Io {
                operation: "open an instance in",
                path: self.data_dir().to_owned(),
                source: std::io::Error::other(other.to_string()),
            },
        })
    }

    pub(crate) fn not_found(&self, what: String) -> CliError {
        CliError::NotFound {
            what,
            data_dir: self.data_dir().to_owned(),
        }
    }
}

impl StoreArgs {
    /// The data directory and index options: `--data-dir`, else the
    /// configuration file's, else the built-in default.
    pub fn resolve(&self) -> Result<(PathBuf, IndexOptions), CliError> {
        let config = match &self.config_file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| config.server.data_directory.clone());
        let map_size_bytes = usize::try_from(config.storage.index_map_size).unwrap_or(usize::MAX);
        let options = IndexOptions {
            map_size_bytes,
            ..IndexOptions::default()
        };
        Ok((data_dir, options))
    }

    /// Opens the store without creating anything: a missing data directory
    /// or index is an error, never a fresh empty store.
    pub(crate) fn open(&self) -> Result<OpenStore, CliError> {
        self.open_locked(None)
    }

    /// Opens the store for a command that writes (`what`, as the lock file
    /// names it): the data directory's lock first, refused while a server
    /// or another writing command holds it.
    pub(crate) fn open_for_writing(&self, what: &str) -> Result<OpenStore, CliError> {
        self.open_locked(Some(what))
    }

    fn open_locked(&self, writer: Option<&str>) -> Result<OpenStore, CliError> {
        let (data_dir, options) = self.resolve()?;
        if !data_dir.is_dir() {
            return Err(CliError::NoDataDirectory { data_dir });
        }
        let layout = Layout::new(data_dir.clone());
        if !layout.index_dir().join("data.mdb").is_file() {
            return Err(CliError::NoIndex { data_dir });
        }
        let lock = writer
            .map(|what| DataDirectoryLock::acquire(&data_dir, what))
            .transpose()?;
        let index = Index::open(layout.index_dir(), options)
            .map_err(|source| CliError::Index { data_dir, source })?;
        let config = match &self.config_file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let objects = crate::objects::Objects::open(&config)
            .map_err(|error| CliError::Io {
                operation: "set up the object store ([objects]) of",
                path: layout.root().to_owned(),
                source: std::io::Error::other(error.to_string()),
            })?
            .map(std::sync::Arc::new);
        Ok(OpenStore {
            layout,
            index,
            objects,
            _lock: lock,
        })
    }
}

/// Runs one operator command, writing its report to `output`.
///
/// `Ok(ExitCode::SUCCESS)` when the command did what was asked;
/// `Ok(ExitCode::from(1))` when `verify` found problems (already printed).
pub fn run(command: OperatorCommand, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    match command {
        OperatorCommand::Ls {
            study_instance_uid,
            series_instance_uid,
            limit,
            store,
        } => {
            let store = store.open()?;
            browse::ls(
                &store,
                study_instance_uid.as_deref(),
                series_instance_uid.as_deref(),
                listing_limit(limit),
                output,
            )
        }
        OperatorCommand::Show {
            sop_instance_uid,
            store,
        } => browse::show(&store.open()?, &sop_instance_uid, output),
        OperatorCommand::Quarantine(command) => quarantine::run(command, output),
        OperatorCommand::Flagged { limit, store } => {
            flagged::list(&store.open()?, listing_limit(limit), output)
        }
        OperatorCommand::Commitments(command) => commitments::run(command, output),
        OperatorCommand::Verify { store } => verify::verify(&store.open()?, output),
        OperatorCommand::Stats { store } => browse::stats(&store.open()?, output),
        OperatorCommand::ExportInstance {
            sop_instance_uid,
            path,
            force,
            store,
        } => browse::export_instance(&store.open()?, &sop_instance_uid, &path, force, output),
        OperatorCommand::Media(command) => media::run(command, output),
        OperatorCommand::Cluster(command) => cluster::run(command, output),
        OperatorCommand::Migrate { to, batch, store } => {
            let config = match &store.config_file {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            let settings = migrate::Settings {
                target: to,
                batch: listing_limit(batch),
                segment_bytes: u64::from(config.storage.segment_size_mib) << 20,
                record_max: config.storage.segment_record_max,
            };
            migrate::migrate(&store.open_for_writing("sluice migrate")?, settings, output)
        }
        OperatorCommand::Compact {
            dry_run,
            batch,
            rate_mib_s,
            store,
        } => {
            let config = match &store.config_file {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            let settings = compact::Settings {
                dead_percent: config.storage.compaction_dead_percent,
                dead_min: config.storage.compaction_dead_min,
                batch: listing_limit(batch),
                segment_bytes: u64::from(config.storage.segment_size_mib) << 20,
                rate_bytes_per_second: rate_mib_s.saturating_mul(1 << 20),
                dry_run,
            };
            let store = if dry_run {
                store.open()?
            } else {
                store.open_for_writing("sluice compact")?
            };
            compact::compact(&store, settings, output)
        }
    }
}
