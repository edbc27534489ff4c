//! One seeded power-loss round of `sluice serve`: the data directory (Part
//! 10 files and the LMDB index) on the crash file system, load from
//! `sluice-loadgen` (C-STOREs and Storage Commitment) and from a
//! pynetdicom commitment requester that records every accepted request,
//! the power cut before a seeded mutation, `sluice serve` killed at that
//! instant, the surviving image mounted again, `sluice serve` restarted (its
//! start-up recovery runs), then the promises checked:
//!
//! - every instance the load generator saw acknowledged (0000) is in
//!   `objects/`, its data set byte for byte (`sluice-loadgen check --hashes`;
//!   on the segments layout, [`Layout::Segments`], on each instance exported
//!   through the index with `sluice export-instance`);
//! - `sluice verify` passes (every index entry has its complete file);
//! - every commitment request answered 0000 is in `sluice commitments list`.
//!
//! The checks run twice: after recovery (server stopped), and again after
//! one more clean power cut, so recovery's own repairs must be durable.
//!
//! What a seed fixes: the cut point (the N-th state-changing operation the
//! file system receives after the server listens), whether the cut tears
//! unsynced writes and how, the I/O backend, the load's shape and UIDs.
//! Which instance is in flight at mutation N still depends on thread
//! scheduling, so a seed replays the same kind of cut, not always the same
//! bytes; a violation prints everything needed to look at it.

use std::fmt;
use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

mod clean_stop;
mod offline;

pub use offline::Scenario;

use crate::model::{CutSummary, Image, PowerLoss};
use crate::mount::{MountError, Mounted, CAPACITY_BYTES_DEFAULT};

/// How long `sluice serve` may take to listen (recovery included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack after the load's duration for the load generator to finish.
const LOAD_END_SLACK: Duration = Duration::from_secs(30);
/// How long one checking command may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// The programs a round runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `sluice` (serve, verify, commitments).
    pub sluice: PathBuf,
    /// `sluice-loadgen` (run, check).
    pub loadgen: PathBuf,
    /// A Python with pynetdicom and pydicom.
    pub python: PathBuf,
    /// `fixtures/commit_sender.py`.
    pub commit_sender: PathBuf,
}

impl Tools {
    /// The workspace's binaries of the running profile (built if missing)
    /// and the Python the end-to-end tests use; fails with a message saying
    /// what is missing.
    pub fn locate() -> Tools {
        Tools {
            sluice: sluice_tests::binaries::workspace_binary("sluice-engine", "sluice"),
            loadgen: sluice_tests::binaries::workspace_binary("sluice-loadgen", "sluice-loadgen"),
            python: sluice_tests::python(),
            commit_sender: Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/commit_sender.py"),
        }
    }
}

/// What a seed decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The seed everything below comes from.
    pub seed: u64,
    /// Cut before this mutation, counted from the moment the server listens.
    pub cut_after_mutations: u64,
    /// How the cut treats what was not synced.
    pub loss: PowerLoss,
    /// `--io-backend` of `sluice serve`: `uring` or `portable`.
    pub io_backend: &'static str,
    /// Concurrent load generator associations.
    pub associations: u32,
    /// How long the load generator runs (it outlives the cut: the server is
    /// gone, its connection attempts fail until the end).
    pub load_seconds: u64,
    /// What the disk holds when the server starts.
    pub start: Start,
    /// The storage layout `sluice serve` writes (`storage.layout` in its
    /// configuration file).
    pub layout: Layout,
    /// What the cut interrupts: `sluice serve` under load, or an offline
    /// command moving records (`offline`; its layouts are its own).
    pub scenario: Scenario,
}

/// The storage layout of a round (`storage.layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One Part 10 file per instance.
    Files,
    /// Records in per-core segment files (docs/design/segments.md; the
    /// default of `sluice serve` and of `sluice-power-loss`): the
    /// acknowledged instances are then checked through the index, each
    /// exported with `sluice export-instance`, not read from `objects/`.
    Segments,
}

impl Layout {
    /// The name on the command line and in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Files => "files",
            Layout::Segments => "segments",
        }
    }

    /// The configuration file `sluice serve` runs with: the layout, and on
    /// segments a segment size the crash file system's memory holds (two
    /// cores, a few segments a round) and a record memory budget small
    /// enough that the larger instances (CT) spill to files while the
    /// others are records: the spill is on the durability path too.
    pub fn config_toml(self) -> String {
        match self {
            Layout::Files => format!("[storage]\nlayout = \"{}\"\n", self.name()),
            Layout::Segments => format!(
                "[storage]\nlayout = \"{}\"\nsegment_size_mib = {SEGMENT_SIZE_MIB}\n\
                 record_memory_per_core = \"{RECORD_MEMORY_PER_CORE}\"\n",
                self.name()
            ),
        }
    }
}

/// `storage.segment_size_mib` of a round on segments.
pub const SEGMENT_SIZE_MIB: u64 = 16;

/// `storage.record_memory_per_core` of a round on segments: a 512 KB CT
/// instance's buffer cannot grow to 1 MiB within it (the old and the new
/// buffer both count), so it spills; a small MR or SR instance stays a
/// record.
pub const RECORD_MEMORY_PER_CORE: &str = "1MiB";

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(text: &str) -> Result<Layout, String> {
        [Layout::Files, Layout::Segments]
            .into_iter()
            .find(|layout| layout.name() == text)
            .ok_or_else(|| format!("{text:?}: expected files or segments"))
    }
}

/// What the disk holds when the loaded server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// An established store: the server's first start is settled (everything
    /// made durable, as a journal commit does within seconds) before the
    /// load and the cut. What the seeded rounds test.
    Settled,
    /// The operator made an empty data directory (durably) and this is the
    /// server's first run: its subdirectories and index are created during
    /// the round.
    FreshDataDir,
    /// No data directory: `sluice serve` creates it during the round.
    NoDataDir,
}

impl Start {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Start::Settled => "settled",
            Start::FreshDataDir => "fresh-data-dir",
            Start::NoDataDir => "no-data-dir",
        }
    }
}

impl std::str::FromStr for Start {
    type Err = String;

    fn from_str(text: &str) -> Result<Start, String> {
        [Start::Settled, Start::FreshDataDir, Start::NoDataDir]
            .into_iter()
            .find(|start| start.name() == text)
            .ok_or_else(|| format!("{text:?}: expected settled, fresh-data-dir or no-data-dir"))
    }
}

/// The range of cut points, in mutations after the server listens. The
/// load makes a few thousand mutations per second in a debug build, so the
/// range covers from the first instances to a few seconds in.
pub const CUT_AFTER_MUTATIONS_MIN: u64 = 20;
/// See [`CUT_AFTER_MUTATIONS_MIN`].
pub const CUT_AFTER_MUTATIONS_MAX: u64 = 8_000;

impl Plan {
    /// The plan of `seed`.
    pub fn from_seed(seed: u64) -> Plan {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        Plan {
            seed,
            cut_after_mutations: rng
                .random_range(CUT_AFTER_MUTATIONS_MIN..=CUT_AFTER_MUTATIONS_MAX),
            loss: PowerLoss {
                seed: rng.random(),
                tear: rng.random_bool(0.75),
            },
            io_backend: if rng.random_bool(0.5) {
                "uring"
            } else {
                "portable"
            },
            associations: rng.random_range(2..=6),
            load_seconds: 2,
            start: Start::Settled,
            // Not drawn from the seed: a seed replays the same cut on
            // either layout.
            layout: Layout::Files,
            scenario: Scenario::Serve,
        }
    }
}

/// A broken promise: what was acknowledged and is not there any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When it was seen: after recovery, or after the second cut.
    pub stage: &'static str,
    /// What is wrong, with the checking tool's own words.
    pub detail: String,
}

/// What a round did and found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The plan it ran.
    pub plan: Plan,
    /// What the power cut found.
    pub cut: CutSummary,
    /// False when the load ended before the cut point (cut then instead).
    pub cut_during_load: bool,
    /// Time from the start of the load to the cut.
    pub cut_after: Duration,
    /// Instances acknowledged 0000 to the load generator.
    pub instances_acknowledged: u64,
    /// Commitment requests answered 0000 to the recording requester.
    pub commitments_acknowledged: usize,
    /// Start-up recovery's summary line after the cut.
    pub recovery: String,
    /// Broken promises (empty: the round passed).
    pub violations: Vec<Violation>,
    /// Where the round's files are (logs, history, acknowledgements, and
    /// `data-at-cut/`: the data directory as the cut left it).
    pub work_dir: PathBuf,
}

impl Outcome {
    /// True when every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = &self.plan;
        write!(
            formatter,
            "seed {}{}: {} backend, {} associations; power cut before mutation {} at {:.2} s{} \
             ({}; {} directory changes pending, {} kept; {} unsynced pages, {} kept); \
             {} instances and {} commitment requests acknowledged; {}",
            plan.seed,
            match plan.start {
                Start::Settled => "",
                Start::FreshDataDir => " (first start, fresh data directory)",
                Start::NoDataDir => " (first start, no data directory)",
            },
            plan.io_backend,
            plan.associations,
            self.cut.at_mutation,
            self.cut_after.as_secs_f64(),
            if self.cut_during_load {
                ""
            } else {
                " (after the load ended)"
            },
            if plan.loss.tear {
                "torn"
            } else {
                "synced only"
            },
            self.cut.pending_changes,
            self.cut.pending_changes_kept,
            self.cut.unsynced_pages,
            self.cut.unsynced_pages_kept,
            self.instances_acknowledged,
            self.commitments_acknowledged,
            self.recovery.trim(),
        )?;
        if self.passed() {
            write!(formatter, "; every promise held")
        } else {
            for violation in &self.violations {
                write!(
                    formatter,
                    "\n  VIOLATION ({}): {}",
                    violation.stage, violation.detail
                )?;
            }
            write!(
                formatter,
                "\n  files of the round: {}",
                self.work_dir.display()
            )
        }
    }
}

/// Why a round could not run (not a durability finding: the harness or
/// the machine failed).
#[derive(Debug)]
pub enum HarnessError {
    /// The crash file system could not be mounted or unmounted.
    Mount(MountError),
    /// A process or file of the round failed.
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A step did not go as the harness needs (with the logs to see why).
    Step(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Mount(error) => write!(formatter, "{error}"),
            HarnessError::Io { what, source } => write!(formatter, "{what}: {source}"),
            HarnessError::Step(text) => write!(formatter, "{text}"),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<MountError> for HarnessError {
    fn from(error: MountError) -> Self {
        HarnessError::Mount(error)
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// A child process killed (SIGKILL, by PID) and reaped on drop.
struct Process {
    child: Option<Child>,
    name: &'static str,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Process, HarnessError> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .map_err(io_error(format!("start {name}")))?;
        Ok(Process {
            child: Some(child),
            name,
        })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("present until dropped")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for it to exit by itself; kills it after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(HarnessError::Step(format!(
                    "{} did not end within {timeout:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends it SIGTERM (a graceful stop), by PID.
    fn signal_term(&mut self) {
        let pid = self.child().id();
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Its exit status if it has exited (reaped then).
    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, HarnessError> {
        let status = self
            .child()
            .try_wait()
            .map_err(io_error(format!("wait for {}", self.name)))?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, HarnessError> {
        self.signal_term();
        self.wait(timeout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `sluice serve`.
struct Server {
    process: Process,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts it and waits until it listens (its start-up recovery done).
    /// `Ok(Err(log))`: it exited or never listened (after a cut, a finding).
    fn start(
        tools: &Tools,
        plan: &Plan,
        data: &Path,
        log: PathBuf,
    ) -> Result<Result<Server, String>, HarnessError> {
        Server::start_with(tools, plan, data, log, None)
    }

    /// [`Server::start`] with the configuration file `config` (else the
    /// plan's layout's).
    fn start_with(
        tools: &Tools,
        plan: &Plan,
        data: &Path,
        log: PathBuf,
        config: Option<&Path>,
    ) -> Result<Result<Server, String>, HarnessError> {
        let port = sluice_tests::free_port();
        let log_file = File::create(&log).map_err(io_error("create the server log"))?;
        let mut command = Command::new(&tools.sluice);
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        } else {
            // Beside the log, off the crash file system: the configuration
            // is not what the round tests.
            let config = log.with_file_name("sluice.toml");
            std::fs::write(&config, plan.layout.config_toml())
                .map_err(io_error("write the server configuration"))?;
            command.arg("--config").arg(config);
        }
        let mut process = Process::spawn(
            "sluice serve",
            command
                .arg("--data-dir")
                .arg(data)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--io-backend", plan.io_backend, "--cores", "2"])
                .args(["--free-space-floor", "0"])
                // Recovery says at debug why a file went to orphans/.
                .env("RUST_LOG", "info,sluice_engine::recovery=debug")
                .stdout(Stdio::null())
                .stderr(log_file),
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = process
                .child()
                .try_wait()
                .map_err(io_error("wait for sluice serve"))?;
            if let Some(status) = exited {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Ok(Err(format!(
                    "sluice serve exited at start ({status}):\n{text}"
                )));
            }
            if Instant::now() >= deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Ok(Err(format!(
                    "sluice serve did not listen within {START_TIMEOUT:?}:\n{text}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Ok(Server { process, port, log }))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The recovery summary line of a server log (`recovery: ...`).
fn recovery_line(log: &str) -> String {
    log.lines()
        .find(|line| line.contains("recovery: ") && line.contains("temporary file"))
        .map(|line| line[line.rfind("recovery: ").unwrap_or(0)..].to_owned())
        .unwrap_or_else(|| "no recovery line".to_owned())
}

/// At most `lines` lines of a tool's output, and how many were left out.
fn head(text: &str, lines: usize) -> String {
    let total = text.trim().lines().count();
    let mut out: Vec<&str> = text.trim().lines().take(lines).collect();
    let more = format!("... ({} more lines)", total.saturating_sub(lines));
    if total > lines {
        out.push(&more);
    }
    out.join("\n    ")
}

fn run_checked(command: &mut Command, name: &str) -> Result<(bool, String), HarnessError> {
    let mut process = Process::spawn(
        "check",
        command.stdout(Stdio::piped()).stderr(Stdio::piped()),
    )?;
    let child = process.child.take().expect("just spawned");
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if Instant::now() >= deadline {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return Err(HarnessError::Step(format!(
                "{name} did not end within {CHECK_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = waiter
        .join()
        .map_err(|_| HarnessError::Step(format!("waiting for {name} panicked")))?
        .map_err(io_error(format!("run {name}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

/// The SOP Instance UIDs a load generator history records as acknowledged
/// (0000), in order.
fn acknowledged_sops(history: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(history).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["outcome"] == "stored")
        .filter_map(|line| line["sop_instance_uid"].as_str().map(str::to_owned))
        .collect()
}

/// On segments the instances are records, not files in `objects/`: each
/// acknowledged one is exported through the index (`sluice export-instance`,
/// which checks the record's checksums) into a directory beside the data
/// directory, for `sluice-loadgen check` to compare. One that cannot be
/// exported is a violation (the check then also reports it missing).
fn export_acknowledged(
    tools: &Tools,
    data: &Path,
    history: &Path,
    stage: &'static str,
    violations: &mut Vec<Violation>,
) -> Result<PathBuf, HarnessError> {
    let work = history.parent().unwrap_or(Path::new("."));
    let out = work.join(format!("exported-{}", stage.replace(' ', "-")));
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(io_error(format!("clear {}", out.display())))?;
    }
    std::fs::create_dir_all(&out).map_err(io_error(format!("create {}", out.display())))?;
    let mut failed = Vec::new();
    for (n, sop) in acknowledged_sops(history).iter().enumerate() {
        let (ok, text) = run_checked(
            Command::new(&tools.sluice)
                .arg("export-instance")
                .arg("--data-dir")
                .arg(data)
                .arg(sop)
                .arg(out.join(format!("{n}.dcm"))),
            "sluice export-instance",
        )?;
        if !ok {
            failed.push(format!("{sop}: {}", text.trim()));
        }
    }
    if !failed.is_empty() {
        violations.push(Violation {
            stage,
            detail: format!(
                "{} acknowledged instances could not be exported: {}",
                failed.len(),
                head(&failed.join("\n"), 4)
            ),
        });
    }
    Ok(out)
}

/// The promises, checked on the data directory `data` (of `layout`) as it
/// is now.
fn check_promises(
    tools: &Tools,
    layout: Layout,
    data: &Path,
    history: &Path,
    commitments: &[String],
    stage: &'static str,
    violations: &mut Vec<Violation>,
) -> Result<(), HarnessError> {
    let instances_dir = match layout {
        Layout::Files => data.join("objects"),
        Layout::Segments => export_acknowledged(tools, data, history, stage, violations)?,
    };
    let (ok, text) = run_checked(
        Command::new(&tools.loadgen)
            .args(["check", "--hashes", "--history"])
            .arg(history)
            .arg("--dir")
            .arg(&instances_dir),
        "sluice-loadgen check",
    )?;
    if !ok {
        violations.push(Violation {
            stage,
            detail: format!(
                "acknowledged instances missing or altered: {}",
                head(&text, 8)
            ),
        });
    }
    let (ok, text) = run_checked(
        Command::new(&tools.sluice)
            .arg("verify")
            .arg("--data-dir")
            .arg(data),
        "sluice verify",
    )?;
    if !ok {
        violations.push(Violation {
            stage,
            detail: format!("sluice verify failed: {}", head(&text, 8)),
        });
    }
    if !commitments.is_empty() {
        let (ok, text) = run_checked(
            Command::new(&tools.sluice)
                .args(["commitments", "list", "--limit", "1000000", "--data-dir"])
                .arg(data),
            "sluice commitments list",
        )?;
        if !ok {
            violations.push(Violation {
                stage,
                detail: format!("sluice commitments list failed: {}", head(&text, 4)),
            });
        }
        let listed: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        let forgotten: Vec<&String> = commitments
            .iter()
            .filter(|uid| !listed.contains(uid.as_str()))
            .collect();
        if !forgotten.is_empty() {
            violations.push(Violation {
                stage,
                detail: format!(
                    "{} of {} commitment requests answered 0000 are not in the index, first {:?}",
                    forgotten.len(),
                    commitments.len(),
                    &forgotten[..forgotten.len().min(3)]
                ),
            });
        }
    }
    Ok(())
}

/// Checks the promises now (`stages[0]`), then cuts the power once more,
/// cleanly, and checks them again (`stages[1]`): [`check_promises`], then
/// [`cut_clean_and_check`]. Unmounts.
fn check_now_and_after_a_cut(
    (fs, mountpoint, plan): (Mounted, &Path, &Plan),
    (tools, layout, data, history, commitments): (&Tools, Layout, &Path, &Path, &[String]),
    stages: [&'static str; 2],
    violations: &mut Vec<Violation>,
) -> Result<(), HarnessError> {
    check_promises(
        tools,
        layout,
        data,
        history,
        commitments,
        stages[0],
        violations,
    )?;
    cut_clean_and_check(
        (fs, mountpoint, plan),
        (tools, layout, data, history, commitments),
        stages[1],
        violations,
    )
}

/// Power back after a cut: mounts what survived (`image`) on `mountpoint`,
/// keeps a copy of the data directory `data` as it was in `work/copy`
/// (a failing round is looked at from there), and restarts `sluice serve`
/// on it (its log in `work/log`; recovery runs) and stops it
/// ([`restart_and_stop`]): the file system and the recovery line.
fn power_back(
    (image, mountpoint): (Image, &Path),
    (tools, plan, data): (&Tools, &Plan, &Path),
    (work, copy, log): (&Path, &str, &str),
    violations: &mut Vec<Violation>,
) -> Result<(Mounted, String), HarnessError> {
    let fs = Mounted::mount(image, mountpoint, CAPACITY_BYTES_DEFAULT)?;
    copy_tree(data, &work.join(copy))?;
    let recovery = restart_and_stop(tools, plan, data, &work.join(log), violations)?;
    Ok((fs, recovery))
}

/// Cuts the power once more, cleanly (unsynced writes dropped, nothing
/// torn), mounts what survived and checks the promises again (`stage`):
/// what the round's last step did must have been durable. Unmounts.
fn cut_clean_and_check(
    (fs, mountpoint, plan): (Mounted, &Path, &Plan),
    (tools, layout, data, history, commitments): (&Tools, Layout, &Path, &Path, &[String]),
    stage: &'static str,
    violations: &mut Vec<Violation>,
) -> Result<(), HarnessError> {
    fs.cut_now(PowerLoss {
        seed: plan.loss.seed,
        tear: false,
    });
    let (image, _) = fs
        .unmount()?
        .ok_or_else(|| HarnessError::Step("no image after the second cut".to_owned()))?;
    let fs = Mounted::mount(image, mountpoint, CAPACITY_BYTES_DEFAULT)?;
    check_promises(tools, layout, data, history, commitments, stage, violations)?;
    fs.unmount()?;
    Ok(())
}

/// Copies the directory tree `from` (if it exists) to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), HarnessError> {
    if !from.exists() {
        return Ok(());
    }
    let mut stack = vec![(from.to_owned(), to.to_owned())];
    while let Some((source, target)) = stack.pop() {
        std::fs::create_dir_all(&target)
            .map_err(io_error(format!("create {}", target.display())))?;
        let entries =
            std::fs::read_dir(&source).map_err(io_error(format!("read {}", source.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_error(format!("read {}", source.display())))?;
            let path = entry.path();
            let destination = target.join(entry.file_name());
            if path.is_dir() {
                stack.push((path, destination));
            } else {
                std::fs::copy(&path, &destination)
                    .map_err(io_error(format!("copy {}", path.display())))?;
            }
        }
    }
    Ok(())
}

/// Lines of the acknowledgement file that are whole (ended by a newline).
fn whole_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete.lines().map(str::to_owned).collect()
}

/// Instances acknowledged in a load generator history file.
fn acknowledged_instances(history: &Path) -> u64 {
    let text = std::fs::read_to_string(history).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("\"outcome\":\"stored\""))
        .count() as u64
}

/// Starts the commitment requester on `port` (transaction UIDs from
/// `seed`; its acknowledgements in `commitments{tag}.txt`, its log in
/// `commit_sender{tag}.log` of `work`) and waits until it has been answered
/// once, or until the power of `fs` is off.
fn start_committer(
    tools: &Tools,
    port: u16,
    seed: u64,
    work: &Path,
    tag: &str,
    fs: Option<&Mounted>,
) -> Result<Process, HarnessError> {
    let acks = work.join(format!("commitments{tag}.txt"));
    let log = work.join(format!("commit_sender{tag}.log"));
    let mut committer = Process::spawn(
        "commit_sender.py",
        Command::new(&tools.python)
            .arg(&tools.commit_sender)
            .arg(port.to_string())
            .arg("SLUICE")
            .arg(&acks)
            .arg(seed.to_string())
            .stdout(Stdio::null())
            .stderr(File::create(&log).map_err(io_error("create the committer log"))?),
    )?;
    let deadline = Instant::now() + START_TIMEOUT;
    while whole_lines(&acks).is_empty() && !fs.is_some_and(Mounted::is_cut) {
        if Instant::now() >= deadline || committer.child().try_wait().ok().flatten().is_some() {
            return Err(HarnessError::Step(format!(
                "the commitment requester got no answer: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(committer)
}

/// Starts the load generator (C-STOREs and Storage Commitment, UIDs from
/// `seed`) on `port` for the plan's load; its history in `history`, its
/// log and summary `loadgen{tag}.log` and `.json` in `work`.
fn start_load(
    tools: &Tools,
    plan: &Plan,
    port: u16,
    seed: u64,
    history: &Path,
    work: &Path,
    tag: &str,
) -> Result<Process, HarnessError> {
    Process::spawn(
        "sluice-loadgen run",
        Command::new(&tools.loadgen)
            .args(["run", "--target", &format!("127.0.0.1:{port}")])
            .args(["--quiet", "--commitment"])
            .args(["--associations", &plan.associations.to_string()])
            .args(["--duration", &plan.load_seconds.to_string()])
            .args([
                "--mix",
                "mr=4,sr=4,ct=2",
                "--study-size",
                "5",
                "--cores",
                "1",
            ])
            .args(["--response-timeout", "10", "--commit-timeout", "2"])
            .args(["--seed", &seed.to_string()])
            .arg("--history")
            .arg(history)
            .arg("--out")
            .arg(work.join(format!("loadgen{tag}.json")))
            .stdout(Stdio::null())
            .stderr(
                File::create(work.join(format!("loadgen{tag}.log")))
                    .map_err(io_error("create the loadgen log"))?,
            ),
    )
}

/// Waits for the load generator started by [`start_load`] with `tag` to end;
/// fails the round if it failed.
fn wait_for_load(
    mut loadgen: Process,
    plan: &Plan,
    work: &Path,
    tag: &str,
) -> Result<(), HarnessError> {
    let status = loadgen.wait(Duration::from_secs(plan.load_seconds) + LOAD_END_SLACK)?;
    if !status.success() {
        return Err(HarnessError::Step(format!(
            "sluice-loadgen run failed ({status}): {}",
            std::fs::read_to_string(work.join(format!("loadgen{tag}.log"))).unwrap_or_default()
        )));
    }
    Ok(())
}

/// Power back: starts `sluice serve` on `data` (its start-up recovery
/// runs; its log in `log`) and stops it (SIGTERM); its recovery line. A
/// start that fails, or a stop that is not clean, is a violation.
fn restart_and_stop(
    tools: &Tools,
    plan: &Plan,
    data: &Path,
    log: &Path,
    violations: &mut Vec<Violation>,
) -> Result<String, HarnessError> {
    Ok(match Server::start(tools, plan, data, log.to_owned())? {
        Ok(mut server) => {
            let log = server.log();
            let status = server.process.terminate(STOP_TIMEOUT)?;
            if !status.success() {
                violations.push(Violation {
                    stage: "restart",
                    detail: format!(
                        "sluice serve did not stop cleanly ({status}):\n{}",
                        server.log()
                    ),
                });
            }
            recovery_line(&log)
        }
        Err(log) => {
            violations.push(Violation {
                stage: "restart",
                detail: log.clone(),
            });
            recovery_line(&log)
        }
    })
}

/// Runs one round in `work` (an empty directory that outlives the round).
pub fn run(plan: &Plan, tools: &Tools, work: &Path) -> Result<Outcome, HarnessError> {
    match plan.scenario {
        Scenario::Serve => {}
        Scenario::CleanStop => return clean_stop::run(plan, tools, work),
        _ => return offline::run(plan, tools, work),
    }
    let mountpoint = work.join("mnt");
    std::fs::create_dir_all(&mountpoint).map_err(io_error("create the mount point"))?;
    let data = mountpoint.join("data");
    let history = work.join("history.jsonl");
    let commit_acks = work.join("commitments.txt");
    let mut violations = Vec::new();

    // 1. Serve on an empty crash file system, arm the cut, load it.
    let fs = Mounted::mount_empty(&mountpoint)?;
    if plan.start == Start::FreshDataDir {
        std::fs::create_dir(&data).map_err(io_error("create the data directory"))?;
        fs.sync_all();
    }
    let mut server = Server::start(tools, plan, &data, work.join("serve-1.log"))?
        .map_err(|log| HarnessError::Step(format!("first start failed: {log}")))?;
    if plan.start == Start::Settled {
        fs.sync_all();
    }
    // The commitment requester first, and the cut armed once it has been
    // answered, so every round has commitments to check (pynetdicom takes
    // a moment to start).
    let mut committer = start_committer(tools, server.port, plan.seed, work, "", None)?;
    fs.arm_cut(fs.stats().mutations + plan.cut_after_mutations, plan.loss);
    let load_started = Instant::now();
    let loadgen = start_load(tools, plan, server.port, plan.seed, &history, work, "")?;

    // 2. The power cut, and the server dies with it.
    let cut_during_load =
        fs.wait_for_cut(Duration::from_secs(plan.load_seconds) + Duration::from_secs(2));
    fs.cut_now(plan.loss);
    let cut_after = load_started.elapsed();
    server.process.kill();
    committer.kill();
    wait_for_load(loadgen, plan, work, "")?;
    let (image, cut) = fs
        .unmount()?
        .ok_or_else(|| HarnessError::Step("the power was cut but no image was kept".to_owned()))?;
    let commitments = whole_lines(&commit_acks);
    let instances_acknowledged = acknowledged_instances(&history);

    // 3. Power back: mount what survived, keep a copy of it as it was
    // (a failing round is looked at from there), restart (recovery runs),
    // stop.
    let (fs, recovery) = power_back(
        (image, &mountpoint),
        (tools, plan, &data),
        (work, "data-at-cut", "serve-2.log"),
        &mut violations,
    )?;
    // 4. The checks, and another cut, clean: what recovery repaired must
    // have been durable.
    check_now_and_after_a_cut(
        (fs, &mountpoint, plan),
        (tools, plan.layout, &data, &history, &commitments),
        ["after recovery", "after a second cut following recovery"],
        &mut violations,
    )?;

    Ok(Outcome {
        plan: *plan,
        cut,
        cut_during_load,
        cut_after,
        instances_acknowledged,
        commitments_acknowledged: commitments.len(),
        recovery,
        violations,
        work_dir: work.to_owned(),
    })
}

/// Runs a round in a fresh temporary directory, kept (and named in the
/// outcome) when the round fails or `keep` is set, removed otherwise.
pub fn run_in_temp_dir(plan: &Plan, tools: &Tools, keep: bool) -> Result<Outcome, HarnessError> {
    let work = tempfile::Builder::new()
        .prefix(&format!("sluice-power-loss-{}-", plan.seed))
        .tempdir()
        .map_err(io_error("create the round's directory"))?;
    let outcome = run(plan, tools, work.path());
    match &outcome {
        Ok(outcome) if outcome.passed() && !keep => {}
        _ => {
            let _ = work.keep();
        }
    }
    outcome
}
