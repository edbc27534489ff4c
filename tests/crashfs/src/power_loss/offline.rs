//! Power-loss rounds of the offline commands that move stored records:
//! `sluice migrate` and `sluice compact` (docs/design/segments.md,
//! "Migrating between layouts" and "Compaction"). A store is written by
//! `sluice serve` on the crash file system and settled (made durable, as
//! time does); then the command runs with a power cut armed at a seeded
//! mutation, is killed at the cut, the surviving image is mounted again and
//! the command run again to its end; then the promises are checked as after
//! a serve round (every instance acknowledged before is exported
//! byte-exact, `sluice verify` clean), and again after one more clean cut.
//!
//! - **migrate**: the seed picks the direction: a files store migrated to
//!   segments, or a segments store to files.
//! - **compact**: a segments store with `duplicate_policy = "replace"`
//!   loaded twice with the same load-generator seed (the second, shorter
//!   load sends the same instances again, so the first records of those
//!   are dead; one resent under another study is refused,
//!   `uid_conflict_policy = "reject"`), segments of 1 MiB and any dead byte a reason to compact.
//! - **online-compact**: the same store, written by a server whose online
//!   compaction (`storage.compaction_rate_mib_s`) runs while the second
//!   load replaces records; the cut is armed once both loads ended and
//!   falls in what the server's compactor does next (the server is killed
//!   with it); power back, the server runs again (recovery, then its
//!   compactor) until its compactor has surveyed three times, and stops.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::{
    check_promises, io_error, HarnessError, Layout, Outcome, Plan, Process, Server, Tools,
    Violation, STOP_TIMEOUT,
};

mod online;
use crate::mount::{Mounted, CAPACITY_BYTES_DEFAULT};

/// How long the command may take (debug build, crash file system).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// The cut comes before a mutation between `CUT_MIN` and
/// `CUT_PER_INSTANCE` times the instances the store holds after the command
/// starts (a debug run makes about 4 to 5 per instance, so most cuts fall
/// inside it); a command that ends first is cut after it (still a valid
/// round: what it synced must hold; the outcome says so).
const CUT_MIN: u64 = 5;
const CUT_PER_INSTANCE: u64 = 4;

/// Which offline command a round cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `sluice serve` under load (the default rounds).
    Serve,
    /// `sluice migrate` (direction from the seed).
    Migrate,
    /// `sluice compact` on a store with replaced records.
    Compact,
    /// `sluice serve`'s online compaction on a store with replaced
    /// records.
    OnlineCompact,
    /// `sluice serve`'s clean stop (SIGTERM) and the next start, which
    /// consumes its record (`power_loss/clean_stop.rs`).
    CleanStop,
}

impl Scenario {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Serve => "serve",
            Scenario::Migrate => "migrate",
            Scenario::Compact => "compact",
            Scenario::OnlineCompact => "online-compact",
            Scenario::CleanStop => "clean-stop",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Scenario, String> {
        [
            Scenario::Serve,
            Scenario::Migrate,
            Scenario::Compact,
            Scenario::OnlineCompact,
            Scenario::CleanStop,
        ]
        .into_iter()
        .find(|scenario| scenario.name() == text)
        .ok_or_else(|| {
            format!("{text:?}: expected serve, migrate, compact, online-compact or clean-stop")
        })
    }
}

/// The configuration the server and the command share: the layout the
/// server writes in, 1 MiB segments, compaction of any dead byte, and for
/// compaction the `replace` duplicate policy.
fn config(layout: Layout, scenario: Scenario) -> String {
    let mut text = format!(
        "[storage]\nlayout = \"{}\"\nsegment_size_mib = 1\n\
         compaction_dead_percent = 1\ncompaction_dead_min = 0\n",
        layout.name()
    );
    if matches!(scenario, Scenario::Compact | Scenario::OnlineCompact) {
        // A second load with the same seed resends some SOP Instance UIDs
        // under other studies: refused, so what is stored stays the
        // first version (the check's expectation).
        text.push_str("duplicate_policy = \"replace\"\nuid_conflict_policy = \"reject\"\n");
    }
    // Online compaction only where it is the subject: the offline
    // command's rounds get the dead records whole.
    let rate = if scenario == Scenario::OnlineCompact {
        64
    } else {
        0
    };
    text.push_str(&format!("compaction_rate_mib_s = {rate}\n"));
    text
}

/// One load of `seconds` against `port`, its history in `history`.
fn load(
    tools: &Tools,
    plan: &Plan,
    port: u16,
    seconds: u64,
    history: &Path,
    log: &Path,
) -> Result<(), HarnessError> {
    let mut loadgen = Process::spawn(
        "sluice-loadgen run",
        Command::new(&tools.loadgen)
            .args(["run", "--target", &format!("127.0.0.1:{port}"), "--quiet"])
            .args(["--associations", &plan.associations.to_string()])
            .args(["--duration", &seconds.to_string()])
            .args([
                "--mix",
                "mr=4,sr=4,ct=2",
                "--study-size",
                "5",
                "--cores",
                "1",
            ])
            .args(["--response-timeout", "10"])
            .args(["--seed", &plan.seed.to_string()])
            .arg("--history")
            .arg(history)
            .stdout(Stdio::null())
            .stderr(File::create(log).map_err(io_error("create the loadgen log"))?),
    )?;
    let status = loadgen.wait(Duration::from_secs(seconds) + super::LOAD_END_SLACK)?;
    if !status.success() {
        return Err(HarnessError::Step(format!(
            "sluice-loadgen run failed ({status}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )));
    }
    Ok(())
}

/// Rewrites `first` (a load generator history) to what must be stored
/// after `again` replaced some of its instances: the lines of `first` whose
/// SOP Instance UID `again` did not store (0000), then every line of
/// `again`.
fn latest_versions(first: &Path, again: &Path) -> Result<(), HarnessError> {
    let later = std::fs::read_to_string(again).map_err(io_error("read the second history"))?;
    let replaced: std::collections::BTreeSet<String> = later
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["outcome"] == "stored")
        .filter_map(|line| line["sop_instance_uid"].as_str().map(str::to_owned))
        .collect();
    let earlier = std::fs::read_to_string(first).map_err(io_error("read the first history"))?;
    let mut merged = String::new();
    for line in earlier.lines() {
        let sop = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|value| value["sop_instance_uid"].as_str().map(str::to_owned));
        if sop.is_some_and(|sop| replaced.contains(&sop)) {
            continue;
        }
        merged.push_str(line);
        merged.push('\n');
    }
    merged.push_str(&later);
    std::fs::write(first, merged).map_err(io_error("write the merged history"))
}

/// Runs the command once; its exit status and output, or `None` when the
/// power went first (it is killed then).
fn run_command(
    tools: &Tools,
    args: &[&str],
    data: &Path,
    config: &Path,
    log: &Path,
    fs: Option<&Mounted>,
) -> Result<Option<(bool, String)>, HarnessError> {
    let mut process = Process::spawn(
        "the offline command",
        Command::new(&tools.sluice)
            .args(args)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .stdout(File::create(log).map_err(io_error("create the command log"))?)
            .stderr(Stdio::null()),
    )?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if fs.is_some_and(Mounted::is_cut) {
            process.kill();
            return Ok(None);
        }
        if let Some(status) = process
            .child()
            .try_wait()
            .map_err(io_error("wait for the command"))?
        {
            process.child = None;
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Ok(Some((status.success(), text)));
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Step(format!(
                "{args:?} did not end within {COMMAND_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One round of `plan.scenario` (migrate or compact) in `work`.
pub(super) fn run(plan: &Plan, tools: &Tools, work: &Path) -> Result<Outcome, HarnessError> {
    let mut rng = XorShiftRng::seed_from_u64(plan.seed ^ 0x006f_6666_6c69_6e65);
    let cut_fraction: f64 = rng.random();
    let to_segments = rng.random_bool(0.5);
    let (serve_layout, after_layout, args): (Layout, Layout, &[&str]) = match plan.scenario {
        Scenario::Migrate if to_segments => (
            Layout::Files,
            Layout::Segments,
            &["migrate", "--to", "segments", "--batch", "8"],
        ),
        Scenario::Migrate => (
            Layout::Segments,
            Layout::Files,
            &["migrate", "--to", "files", "--batch", "8"],
        ),
        Scenario::Compact => (
            Layout::Segments,
            Layout::Segments,
            &["compact", "--batch", "8"],
        ),
        Scenario::OnlineCompact => (Layout::Segments, Layout::Segments, &[]),
        Scenario::Serve | Scenario::CleanStop => {
            unreachable!("serve and clean-stop rounds run in power_loss::run")
        }
    };
    let mountpoint = work.join("mnt");
    std::fs::create_dir_all(&mountpoint).map_err(io_error("create the mount point"))?;
    let data = mountpoint.join("data");
    let config_path = work.join("sluice.toml");
    std::fs::write(&config_path, config(serve_layout, plan.scenario))
        .map_err(io_error("write the configuration"))?;
    let mut violations = Vec::new();

    // 1. A store written by `sluice serve`, stopped, settled.
    let fs = Mounted::mount_empty(&mountpoint)?;
    let serve_plan = Plan {
        layout: serve_layout,
        ..*plan
    };
    let mut server = Server::start_with(
        tools,
        &serve_plan,
        &data,
        work.join("serve-1.log"),
        Some(&config_path),
    )?
    .map_err(|log| HarnessError::Step(format!("the server did not start: {log}")))?;
    let history = work.join("history.jsonl");
    load(
        tools,
        plan,
        server.port,
        plan.load_seconds,
        &history,
        &work.join("loadgen.log"),
    )?;
    let mut instances_acknowledged = super::acknowledged_instances(&history);
    if plan.scenario != Scenario::Migrate {
        // The same UIDs again (other bytes), shorter: the first ones
        // replaced. What must be there is the last acknowledged version.
        let again = work.join("history-again.jsonl");
        load(
            tools,
            plan,
            server.port,
            1,
            &again,
            &work.join("loadgen-again.log"),
        )?;
        instances_acknowledged += super::acknowledged_instances(&again);
        latest_versions(&history, &again)?;
    }
    if plan.scenario == Scenario::OnlineCompact {
        return online::cut_the_compactor(
            (plan, tools, work),
            (fs, server),
            (&data, &config_path, &history),
            (instances_acknowledged, cut_fraction),
        );
    }
    let status = server.process.terminate(STOP_TIMEOUT)?;
    if !status.success() {
        return Err(HarnessError::Step(format!(
            "sluice serve did not stop cleanly: {}",
            server.log()
        )));
    }
    fs.sync_all();
    // 2. The command, and the power cut in it.
    let cut_after_mutations =
        CUT_MIN + (cut_fraction * (CUT_PER_INSTANCE * instances_acknowledged) as f64) as u64;
    let armed_at = fs.stats().mutations;
    fs.arm_cut(armed_at + cut_after_mutations, plan.loss);
    let started = Instant::now();
    let first = run_command(
        tools,
        args,
        &data,
        &config_path,
        &work.join("command-1.log"),
        Some(&fs),
    )?;
    let cut_during_command = first.is_none();
    let command_mutations = fs.stats().mutations.saturating_sub(armed_at);
    let cut = fs.cut_now(plan.loss);
    let cut_after = started.elapsed();
    if let Some((false, text)) = &first {
        violations.push(Violation {
            stage: "first run",
            detail: format!("{args:?} failed before the cut: {}", super::head(text, 8)),
        });
    }
    let (image, cut) = match fs.unmount()? {
        Some(kept) => kept,
        None => {
            return Err(HarnessError::Step(format!(
                "no image after the cut ({cut:?})"
            )))
        }
    };

    // 3. Power back: the command run again, to its end.
    let fs = Mounted::mount(image, &mountpoint, CAPACITY_BYTES_DEFAULT)?;
    super::copy_tree(&data, &work.join("data-at-cut"))?;
    let rerun = run_command(
        tools,
        args,
        &data,
        &config_path,
        &work.join("command-2.log"),
        None,
    )?
    .unwrap_or_default();
    if !rerun.0 {
        violations.push(Violation {
            stage: "run again",
            detail: format!("{args:?} failed: {}", super::head(&rerun.1, 12)),
        });
    }
    let summary = rerun
        .1
        .lines()
        .find(|line| line.starts_with("migrated ") || line.starts_with("compacted:"))
        .unwrap_or("no summary line")
        .to_owned();
    let summary = if cut_during_command {
        summary
    } else {
        // The cut came after the first run ended: a weaker round, named.
        format!("(the first run ended first, after {command_mutations} mutations) {summary}")
    };
    check_promises(
        tools,
        after_layout,
        &data,
        &history,
        &[],
        "after the rerun",
        &mut violations,
    )?;
    // Another cut, clean: what the rerun did must have been durable.
    super::cut_clean_and_check(
        (fs, &mountpoint, plan),
        (tools, after_layout, &data, &history, &[]),
        "after a second cut following the rerun",
        &mut violations,
    )?;
    Ok(Outcome {
        plan: *plan,
        cut,
        cut_during_load: cut_during_command,
        cut_after,
        instances_acknowledged,
        commitments_acknowledged: 0,
        recovery: format!(
            "{} run again: {summary}; {}",
            plan.scenario.name(),
            rerun
                .1
                .lines()
                .find(|line| line.starts_with("start-up recovery first"))
                .unwrap_or("nothing for recovery")
        ),
        violations,
        work_dir: work.to_owned(),
    })
}
