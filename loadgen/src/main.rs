//! The `sluice-loadgen` command: `run` one load, `sweep` a series of load
//! levels, `report` result files as HTML and Markdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand};
use sluice_io::BackendChoice;
use sluice_loadgen::driver::{LoadShape, RetrievePlan, RunPlan};
use sluice_loadgen::keys::discover::{discover, DiscoverTarget};
use sluice_loadgen::keys::{KeyPool, PoolLimits};
use sluice_loadgen::report;
use sluice_loadgen::retrieve::{parse_keys, RetrieveSpec};
use sluice_loadgen::run::{run, Execution};
use sluice_loadgen::stats::RunResult;
use sluice_loadgen::workload;
use sluice_net::query::{InformationModel, Level, Operation};
use sluice_net::uid::ts;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-loadgen",
    version,
    about = "Drives any DICOM Storage or Query/Retrieve SCP with many associations and reports capacity."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// One run: a load shape against a target; prints a summary, writes a JSON result.
    Run(RunArgs),
    /// Several runs at increasing load (associations, or rates with --rate), then a report.
    Sweep(SweepArgs),
    /// Renders result files into an HTML report and a Markdown summary.
    Report(ReportArgs),
    /// Checks a receiver's directory of Part 10 files against a history file:
    /// every acknowledged instance present (and byte-identical with --hashes).
    Check(CheckArgs),
    /// Writes the manual pages, sluice-loadgen(1) and one per subcommand,
    /// into a directory (packaging/build-deb ships them).
    #[command(hide = true)]
    GenerateManPages {
        /// The directory to write into; created if missing.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The history file written by `run --history`.
    #[arg(long)]
    history: PathBuf,
    /// The receiver's storage directory (e.g. Sluice's <data>/objects).
    #[arg(long)]
    dir: PathBuf,
    /// Also require the data set to hash to the SHA-256 recorded when sent
    /// (for receivers that store data sets as received, like Sluice).
    #[arg(long)]
    hashes: bool,
}

#[derive(Debug, Args, Clone)]
struct LoadArgs {
    /// The SCP, host:port.
    #[arg(long)]
    target: String,
    /// Called AE title.
    #[arg(long, default_value = "SLUICE")]
    called_ae: String,
    /// Calling AE title.
    #[arg(long, default_value = "LOADGEN")]
    calling_ae: String,
    /// What the target is, for the report (e.g. "sluice", "storescp").
    #[arg(long, default_value = "target")]
    label: String,
    /// Closed loop: concurrent associations. Open loop: the most at once.
    #[arg(long, default_value_t = 1)]
    associations: usize,
    /// Open loop: target instances per second (Poisson arrivals).
    #[arg(long)]
    rate: Option<f64>,
    /// Run length in seconds (in-flight stores are answered after it).
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many instances.
    #[arg(long)]
    count: Option<u64>,
    /// Spread association starts over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// Release and re-associate after this many instances (0: keep the association).
    #[arg(long, default_value_t = 0)]
    instances_per_association: u64,
    /// Instances per study (one commitment request per study).
    #[arg(long, default_value_t = 10)]
    study_size: u64,
    /// Series per study.
    #[arg(long, default_value_t = 1)]
    series_per_study: u64,
    /// Synthetic workload: profiles and weights, e.g. ct=70,mr=20,cr=5,sr=5 (profiles: ct, mr, cr, mg, sr).
    #[arg(long, default_value = "ct")]
    mix: String,
    /// Send the Part 10 files of this directory (memory-mapped: they must not change during the run) instead of synthetic data.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// With --dir: give every send new Study/Series/SOP Instance UIDs.
    #[arg(long)]
    new_uids: bool,
    /// Transfer syntax of synthetic data: explicit, implicit, or a UID of those two.
    #[arg(long, default_value = "explicit")]
    transfer_syntax: String,
    /// Maximum PDU length we announce (we send at the peer's maximum).
    #[arg(long, default_value_t = 16384)]
    max_pdu: u32,
    /// Storage commitment (N-ACTION) after each study; report expected on the same association.
    #[arg(long)]
    commitment: bool,
    /// Receive commitment reports on a listener of our own at host:port (the
    /// SCP must know our calling AE title at that address); each association
    /// is released after its N-ACTION so the SCP opens a new one.
    #[arg(long)]
    commit_listen: Option<String>,
    /// Seconds to wait for a commitment report.
    #[arg(long, default_value_t = 30.0)]
    commit_timeout: f64,
    /// Abort an association whose answer takes longer than this many seconds.
    #[arg(long, default_value_t = 60.0)]
    response_timeout: f64,
    /// Loadgen threads (default: available cores).
    #[arg(long)]
    cores: Option<usize>,
    /// I/O backend: auto, uring, portable.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Write one JSON line per instance sent (UIDs, SHA-256 of the data set, outcome).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Seed of the random choices (Poisson arrivals, mix) and of the UIDs'
    /// run id, for reproducible runs; random by default. Two runs with the
    /// same seed against one SCP send the same UIDs (duplicates).
    #[arg(long)]
    seed: Option<u64>,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
    /// Synthetic data: consecutive studies of one patient (Patient ID,
    /// Patient's Name), so queries by patient select a few studies.
    #[arg(long, default_value_t = 1)]
    studies_per_patient: u64,
    #[command(flatten)]
    retrieval: RetrievalArgs,
}

/// What is measured: ingest, or a retrieval operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadKind {
    /// C-STORE (the default).
    Store,
    /// C-FIND.
    Find,
    /// C-MOVE, to our own storage SCP (--move-listen).
    Move,
    /// C-GET, the instances coming back on the association.
    Get,
}

#[derive(Debug, Args, Clone)]
struct RetrievalArgs {
    /// The load: store (C-STORE), or find, move, get (retrieval). With a
    /// retrieval workload --associations, --rate, --count and the sweep's
    /// levels apply to the retrieval operations; --store-associations adds
    /// ingest beside them (a mixed run).
    #[arg(long, value_enum, default_value = "store")]
    workload: WorkloadKind,
    /// Query/Retrieve information model: study (Study Root) or patient (Patient Root).
    #[arg(long, default_value = "study")]
    model: String,
    /// Query/Retrieve level: patient, study, series, image (move and get: study or series).
    #[arg(long, default_value = "study")]
    level: String,
    /// C-FIND matching keys, comma-separated: patient-id, patient-name,
    /// study-date, study-uid, series-uid, sop-uid, modality (none: the
    /// level's universal query under one drawn parent).
    #[arg(long, default_value = "")]
    keys: String,
    /// Study Date ranges (key study-date) span this many days.
    #[arg(long, default_value_t = 7)]
    date_window_days: u32,
    /// Where queried and retrieved values come from: history:FILE (a
    /// history written by an earlier `run --history` against the target)
    /// or query (a universal C-FIND of the target's studies and series first).
    #[arg(long)]
    keys_from: Option<String>,
    /// C-MOVE: the Move Destination AE title (the target must know it at --move-listen).
    #[arg(long)]
    move_dest: Option<String>,
    /// C-MOVE: our storage SCP listens here, host:port (the move destination).
    #[arg(long)]
    move_listen: Option<String>,
    /// Release and re-associate after this many retrieval operations (0: never).
    #[arg(long, default_value_t = 0)]
    operations_per_association: u64,
    /// Mixed run: store-lane associations beside the retrieval load.
    #[arg(long, default_value_t = 0)]
    store_associations: usize,
    /// Mixed run: the store lane's open-loop rate, instances/s (default: closed loop).
    #[arg(long)]
    store_rate: Option<f64>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Where to write the JSON result.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SweepArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Load levels: association counts (closed loop), or rates in inst/s when --rate is given.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    levels: Vec<f64>,
    /// Directory for the result files and the report.
    #[arg(long)]
    out_dir: PathBuf,
    /// Latency objective for the capacity answer: p99 latency in ms of a
    /// C-STORE (ingest) or of a retrieval operation.
    #[arg(long, default_value_t = 500.0)]
    slo_p99_ms: f64,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Result files (JSON) of `run` or `sweep`.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Directory for report.html and report.md.
    #[arg(long)]
    out_dir: PathBuf,
    /// Latency objective for the capacity answer: p99 C-STORE latency in ms.
    #[arg(long, default_value_t = 500.0)]
    slo_p99_ms: f64,
    /// Report title.
    #[arg(long, default_value = "Sluice capacity report")]
    title: String,
}

fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve target {target:?} (expected host:port)"))?
        .next()
        .with_context(|| format!("target {target:?} resolves to no address"))
}

fn transfer_syntax(text: &str) -> anyhow::Result<&'static str> {
    Ok(match text {
        "explicit" | ts::EXPLICIT_VR_LITTLE_ENDIAN => ts::EXPLICIT_VR_LITTLE_ENDIAN,
        "implicit" | ts::IMPLICIT_VR_LITTLE_ENDIAN => ts::IMPLICIT_VR_LITTLE_ENDIAN,
        other => bail!("unsupported transfer syntax {other:?}: synthetic data is explicit or implicit VR little endian"),
    })
}

/// The workload, its weights, its label and the retrieval key pool,
/// prepared once for all levels.
type Prepared = (
    Vec<Arc<workload::Prepared>>,
    Vec<u32>,
    String,
    Option<Arc<KeyPool>>,
);

/// The store workload, its weights and its label, and the key pool of a
/// retrieval workload, prepared once for all levels.
fn prepare(load: &LoadArgs) -> anyhow::Result<Prepared> {
    let pool = match load.retrieval.workload {
        WorkloadKind::Store => None,
        _ => Some(Arc::new(key_pool(load)?)),
    };
    let label = match load.retrieval.workload {
        WorkloadKind::Store => String::new(),
        _ => retrieve_spec(load)?.describe(),
    };
    let (store, weights, store_label) = prepare_store(load)?;
    let label = match (label.is_empty(), load.retrieval.store_associations) {
        (true, _) => store_label,
        (false, 0) => label,
        (false, _) => format!("{label} + store {store_label}"),
    };
    Ok((store, weights, label, pool))
}

/// The retrieval specification of the command line.
fn retrieve_spec(load: &LoadArgs) -> anyhow::Result<RetrieveSpec> {
    let retrieval = &load.retrieval;
    let operation = match retrieval.workload {
        WorkloadKind::Find | WorkloadKind::Store => Operation::Find,
        WorkloadKind::Move => Operation::Move,
        WorkloadKind::Get => Operation::Get,
    };
    let model = match retrieval.model.to_ascii_lowercase().as_str() {
        "study" => InformationModel::StudyRoot,
        "patient" => InformationModel::PatientRoot,
        other => bail!("unknown --model {other:?}: study or patient"),
    };
    let level = Level::parse(&retrieval.level.to_ascii_uppercase()).with_context(|| {
        format!(
            "unknown --level {:?}: patient, study, series, image",
            retrieval.level
        )
    })?;
    let spec = RetrieveSpec {
        operation,
        model,
        level,
        keys: parse_keys(&retrieval.keys)?,
        date_window_days: retrieval.date_window_days,
        move_destination: retrieval
            .move_dest
            .clone()
            .unwrap_or_else(|| load.calling_ae.clone()),
    };
    spec.check()?;
    Ok(spec)
}

/// The key pool of `--keys-from`.
fn key_pool(load: &LoadArgs) -> anyhow::Result<KeyPool> {
    let source = load
        .retrieval
        .keys_from
        .as_deref()
        .context("a retrieval workload needs --keys-from history:FILE or --keys-from query")?;
    if let Some(path) = source.strip_prefix("history:") {
        return Ok(KeyPool::from_history(
            std::path::Path::new(path),
            PoolLimits::default(),
        )?);
    }
    if source == "query" {
        let target = DiscoverTarget {
            address: resolve(&load.target)?,
            called_ae_title: load.called_ae.clone(),
            calling_ae_title: load.calling_ae.clone(),
            timeout: Duration::try_from_secs_f64(load.response_timeout)
                .context("--response-timeout must be a non-negative number of seconds")?,
        };
        let spec = retrieve_spec(load)?;
        return Ok(discover(&target, spec.needs(), PoolLimits::default())?);
    }
    bail!("unknown --keys-from {source:?}: history:FILE or query")
}

/// The store workload, its weights and its label.
fn prepare_store(
    load: &LoadArgs,
) -> anyhow::Result<(Vec<Arc<workload::Prepared>>, Vec<u32>, String)> {
    if let Some(dir) = &load.dir {
        let prepared = workload::load_directory(dir, load.new_uids)?;
        let label = format!("dir:{} ({} files)", dir.display(), prepared.len());
        return Ok((
            prepared.into_iter().map(Arc::new).collect(),
            Vec::new(),
            label,
        ));
    }
    let syntax = transfer_syntax(&load.transfer_syntax)?;
    let mix = workload::parse_mix(&load.mix)?;
    let mut prepared = Vec::new();
    let mut weights = Vec::new();
    for (profile, weight) in &mix {
        prepared.push(Arc::new(workload::synthetic(profile, syntax)?));
        weights.push(*weight);
    }
    Ok((prepared, weights, load.mix.clone()))
}

fn plan_and_execution(
    load: &LoadArgs,
    prepared: &Prepared,
    associations: usize,
    rate: Option<f64>,
) -> anyhow::Result<(RunPlan, Execution)> {
    let seconds = |value: f64, name: &str| -> anyhow::Result<Duration> {
        Duration::try_from_secs_f64(value)
            .with_context(|| format!("--{name} must be a non-negative number of seconds"))
    };
    let shape_of = |rate: Option<f64>| match rate {
        Some(rate_per_s) => LoadShape::Open { rate_per_s },
        None => LoadShape::Closed,
    };
    let retrieval = &load.retrieval;
    let (retrieve, store_shape, store_associations) = match (&prepared.3, retrieval.workload) {
        (Some(pool), WorkloadKind::Find | WorkloadKind::Move | WorkloadKind::Get) => (
            Some(RetrievePlan {
                spec: retrieve_spec(load)?,
                pool: Arc::clone(pool),
                shape: shape_of(rate),
                associations,
                operations_per_association: retrieval.operations_per_association,
                move_listen: retrieval.move_listen.as_deref().map(resolve).transpose()?,
            }),
            shape_of(retrieval.store_rate),
            retrieval.store_associations,
        ),
        _ => (None, shape_of(rate), associations),
    };
    let plan = RunPlan {
        address: resolve(&load.target)?,
        called_ae_title: load.called_ae.clone(),
        calling_ae_title: load.calling_ae.clone(),
        shape: store_shape,
        associations: store_associations,
        duration: load
            .duration
            .map(|value| seconds(value, "duration"))
            .transpose()?,
        count: load.count,
        ramp_up: seconds(load.ramp_up, "ramp-up")?,
        instances_per_association: load.instances_per_association,
        study_size: load.study_size.max(1),
        series_per_study: load.series_per_study.max(1),
        workload: prepared.0.clone(),
        weights: prepared.1.clone(),
        pdu_length_max_receive: load.max_pdu,
        commitment: load.commitment || load.commit_listen.is_some(),
        commit_timeout: seconds(load.commit_timeout, "commit-timeout")?,
        response_timeout: seconds(load.response_timeout, "response-timeout")?,
        commit_listen: load.commit_listen.as_deref().map(resolve).transpose()?,
        history: load.history.clone(),
        studies_per_patient: load.studies_per_patient.max(1),
        retrieve,
        run_id: load
            .seed
            .unwrap_or_else(|| fastrand::u64(1_000_000_000_000..u64::MAX)),
    };
    let execution = Execution {
        cores: load
            .cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        backend: load.backend,
        label: load.label.clone(),
        workload_label: prepared.2.clone(),
        transfer_syntax_uid: transfer_syntax(&load.transfer_syntax)
            .unwrap_or(ts::EXPLICIT_VR_LITTLE_ENDIAN)
            .to_string(),
        progress: !load.quiet,
    };
    Ok((plan, execution))
}

fn write_result(result: &RunResult, path: &std::path::Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(result)?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Run(args) => {
            let prepared = prepare(&args.load)?;
            let (plan, execution) = plan_and_execution(
                &args.load,
                &prepared,
                args.load.associations,
                args.load.rate,
            )?;
            let result = run(plan, &execution)?;
            print!("{}", result.summary());
            if let Some(out) = &args.out {
                write_result(&result, out)?;
            }
            if let Some(why) = result.nothing_measured() {
                eprintln!("sluice-loadgen: {why}");
                std::process::exit(1);
            }
        }
        Commands::Sweep(args) => {
            std::fs::create_dir_all(&args.out_dir)
                .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
            let prepared = prepare(&args.load)?;
            let mut results = Vec::new();
            for (index, level) in args.levels.iter().enumerate() {
                let (associations, rate) = match args.load.rate {
                    Some(_) => (args.load.associations, Some(*level)),
                    None => (level.round().max(1.0) as usize, None),
                };
                let mut load = args.load.clone();
                if let Some(history) = &args.load.history {
                    let mut name = history.clone().into_os_string();
                    name.push(format!(".level{index}"));
                    load.history = Some(name.into());
                }
                let (plan, execution) = plan_and_execution(&load, &prepared, associations, rate)?;
                eprintln!(
                    "sweep level {}/{}: {} associations{}",
                    index + 1,
                    args.levels.len(),
                    associations,
                    rate.map(|rate| format!(
                        ", {rate} {}/s",
                        if prepared.3.is_some() {
                            "operations"
                        } else {
                            "instances"
                        }
                    ))
                    .unwrap_or_default()
                );
                let result = run(plan, &execution)?;
                print!("{}", result.summary());
                let path = args.out_dir.join(format!(
                    "result-{:02}-{}.json",
                    index,
                    if rate.is_some() {
                        format!("rate{level}")
                    } else {
                        format!("assoc{associations}")
                    }
                ));
                write_result(&result, &path)?;
                results.push(result);
            }
            let title = format!("Capacity of {} ({})", args.load.label, args.load.target);
            report::write_report(&results, &args.out_dir, &title, args.slo_p99_ms)?;
            eprintln!(
                "report written to {}",
                args.out_dir.join("report.html").display()
            );
        }
        Commands::Check(args) => {
            let report = sluice_loadgen::check::check(&args.history, &args.dir, args.hashes)?;
            println!(
                "acknowledged {} present {} missing {} different {} (files scanned {})",
                report.acknowledged,
                report.matching,
                report.missing.len(),
                report.different.len(),
                report.files
            );
            for uid in &report.missing {
                println!("missing {uid}");
            }
            for uid in &report.different {
                println!("different {uid}");
            }
            if !report.missing.is_empty() || !report.different.is_empty() {
                std::process::exit(1);
            }
        }
        Commands::GenerateManPages { out_dir } => {
            // clap_mangen writes one page per visible command (this hidden
            // one is left out): sluice-loadgen.1, sluice-loadgen-run.1, ...
            std::fs::create_dir_all(&out_dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &out_dir))
                .with_context(|| {
                    format!("cannot write the man pages into {}", out_dir.display())
                })?;
        }
        Commands::Report(args) => {
            let mut results = Vec::new();
            for path in &args.results {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let result: RunResult = serde_json::from_str(&text).with_context(|| {
                    format!("{} is not a sluice-loadgen result file", path.display())
                })?;
                results.push(result);
            }
            std::fs::create_dir_all(&args.out_dir)
                .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
            report::write_report(&results, &args.out_dir, &args.title, args.slo_p99_ms)?;
            println!("{}", args.out_dir.join("report.html").display());
        }
    }
    Ok(())
}
