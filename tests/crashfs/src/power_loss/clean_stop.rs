//! Power-loss rounds around the clean-stop record
//! (`engine/src/recovery/clean_stop.rs`): a drained `sluice serve` stop
//! writes `clean-stop` last, the next holder of the data directory's lock
//! takes it (removed durably before anything writes), and a start that
//! took a valid one skips the archive walk and the per-entry check.
//!
//! A round has two cuts, each followed by a restart and the promises
//! checked ([`super::check_promises`]: every acknowledged instance exported
//! byte-exact, `sluice verify` clean, every commitment answered 0000
//! listed):
//!
//! 1. **In the stop.** `sluice serve` under load (load generator and
//!    commitment requester, as the serve rounds); once the load ended and
//!    the file system is quiet, the cut is armed at a seeded mutation of
//!    what the stop does next, and the server gets SIGTERM. Some seeds cut
//!    before the record is durable, some after (a stop that ends first
//!    was clean and recorded so: its log says so; the cut comes then). The
//!    restart may skip the walk only if the record survived whole.
//! 2. **Soon after the next start.** The restart's own clean stop left a
//!    record; `sluice serve` starts again (taking it) with the cut armed at
//!    a seeded mutation counted from before the start, and is loaded once
//!    it listens: the cut falls in the lock's take of the record, in
//!    recovery, or among the first writes of the load. Once the server got
//!    past the take (its recovery line is in its log), the record must not
//!    come back, and the restart must do the full check.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::{
    check_now_and_after_a_cut, check_promises, io_error, power_back, start_committer, start_load,
    wait_for_load, whole_lines, HarnessError, Outcome, Plan, Server, Tools, Violation,
    STOP_TIMEOUT,
};
use crate::model::PowerLoss;
use crate::mount::Mounted;

/// The cut in the stop comes before one of its first `SHUTDOWN_CUT_MAX`
/// mutations (counted from the SIGTERM). A drained stop of a debug build
/// makes about 8 (measured, files layout: the index settled, the record's
/// five, the exit), so most seeds cut inside it, before or after the
/// record is durable, and some after the server exited.
const SHUTDOWN_CUT_MAX: u64 = 10;
/// The cut after the next start comes before one of its first
/// `STARTUP_CUT_EARLY` mutations (counted from before the start; the
/// server listens after about 15: the lock and its take of the record
/// first, recovery's writes after) for half the seeds, and before one of
/// the first `STARTUP_CUT_MAX` (the load's first instances) for the
/// others.
const STARTUP_CUT_EARLY: u64 = 20;
/// See [`STARTUP_CUT_EARLY`].
const STARTUP_CUT_MAX: u64 = 300;
/// How long the file system must see no mutation before the stop's cut is
/// armed (the load's last commitment reports and index commits done).
const QUIET: Duration = Duration::from_millis(500);
/// How long to wait for that quiet.
const QUIET_MAX: Duration = Duration::from_secs(20);
/// What the server logs once the record is durable.
const RECORDED: &str = "clean stop recorded";
/// What recovery's summary line says when it skipped the archive walk.
const SKIPPED: &str = "archive walk and entry check skipped";
/// The record's first words ([`is_whole_record`]).
const RECORD_MAGIC: &str = "sluice-clean-stop 1 index=";

/// True when the data directory `data` holds a whole clean-stop record
/// (its first words and its final newline: the engine parses the rest).
fn is_whole_record(data: &Path) -> Option<bool> {
    let text = std::fs::read(data.join("clean-stop")).ok()?;
    let text = String::from_utf8_lossy(&text);
    Some(text.starts_with(RECORD_MAGIC) && text.ends_with('\n'))
}

/// Waits until `fs` has seen no mutation for [`QUIET`] (at most
/// [`QUIET_MAX`]).
fn wait_quiet(fs: &Mounted) {
    let deadline = Instant::now() + QUIET_MAX;
    let mut last = fs.stats().mutations;
    while Instant::now() < deadline {
        std::thread::sleep(QUIET);
        let now = fs.stats().mutations;
        if now == last {
            return;
        }
        last = now;
    }
}

/// How the record fared across a cut, in words.
fn record_state(record: Option<bool>) -> &'static str {
    match record {
        None => "no record",
        Some(true) => "record whole",
        Some(false) => "record torn",
    }
}

/// One round of `--scenario clean-stop` in `work`.
pub(super) fn run(plan: &Plan, tools: &Tools, work: &Path) -> Result<Outcome, HarnessError> {
    let mut rng = XorShiftRng::seed_from_u64(plan.seed ^ 0x636c_6561_6e2d_7374);
    let shutdown_cut = rng.random_range(1..=SHUTDOWN_CUT_MAX);
    let startup_cut = if rng.random_bool(0.5) {
        rng.random_range(1..=STARTUP_CUT_EARLY)
    } else {
        rng.random_range(STARTUP_CUT_EARLY + 1..=STARTUP_CUT_MAX)
    };
    let startup_loss = PowerLoss {
        seed: rng.random(),
        tear: rng.random_bool(0.75),
    };
    // The second load's UIDs (instances and commitment transactions) are
    // not the first one's.
    let second_seed = plan.seed.wrapping_add(1 << 40);
    let mountpoint = work.join("mnt");
    std::fs::create_dir_all(&mountpoint).map_err(io_error("create the mount point"))?;
    let data = mountpoint.join("data");
    let history = work.join("history.jsonl");
    let mut violations = Vec::new();

    // 1. Serve, load, quiet; the cut armed in the stop; SIGTERM.
    let fs = Mounted::mount_empty(&mountpoint)?;
    let mut server = Server::start(tools, plan, &data, work.join("serve-1.log"))?
        .map_err(|log| HarnessError::Step(format!("first start failed: {log}")))?;
    fs.sync_all();
    let mut committer = start_committer(tools, server.port, plan.seed, work, "", None)?;
    let loadgen = start_load(tools, plan, server.port, plan.seed, &history, work, "")?;
    wait_for_load(loadgen, plan, work, "")?;
    committer.kill();
    wait_quiet(&fs);
    let armed_at = fs.stats().mutations;
    fs.arm_cut(armed_at + shutdown_cut, plan.loss);
    let stop_started = Instant::now();
    server.process.signal_term();
    let stop_exit = loop {
        if fs.is_cut() {
            server.process.kill();
            break None;
        }
        if let Some(status) = server.process.try_wait()? {
            break Some(status);
        }
        if stop_started.elapsed() >= STOP_TIMEOUT {
            return Err(HarnessError::Step(format!(
                "sluice serve did not stop within {STOP_TIMEOUT:?}: {}",
                server.log()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stop_mutations = fs.stats().mutations - armed_at;
    let stop_log = server.log();
    let recorded = stop_log.contains(RECORDED);
    let stop_cut = match stop_exit {
        None if recorded => {
            format!("cut before mutation {shutdown_cut} of the stop, after the record was durable")
        }
        None => {
            format!("cut before mutation {shutdown_cut} of the stop, before the record was durable")
        }
        Some(status) => {
            if !status.success() || !recorded {
                return Err(HarnessError::Step(format!(
                    "the stop before the cut was not clean ({status}): {stop_log}"
                )));
            }
            format!(
                "the stop ended first (clean, recorded; {stop_mutations} mutations), cut after it"
            )
        }
    };
    fs.cut_now(plan.loss);
    let (image, first_cut) = fs
        .unmount()?
        .ok_or_else(|| HarnessError::Step("no image after the stop's cut".to_owned()))?;
    let commitments_first = whole_lines(&work.join("commitments.txt"));

    // Power back: the record as the cut left it, the restart (which stops
    // cleanly, so a record is there for step 2).
    let (fs, recovery_1) = power_back(
        (image, &mountpoint),
        (tools, plan, &data),
        (work, "data-at-cut", "serve-2.log"),
        &mut violations,
    )?;
    let record_after_stop = is_whole_record(&work.join("data-at-cut"));
    let skipped_1 = recovery_1.contains(SKIPPED);
    if skipped_1 && record_after_stop != Some(true) {
        violations.push(Violation {
            stage: "restart after the stop's cut",
            detail: format!(
                "recovery skipped the archive walk with {}: {recovery_1}",
                record_state(record_after_stop)
            ),
        });
    }
    if recorded && record_after_stop != Some(true) {
        violations.push(Violation {
            stage: "restart after the stop's cut",
            detail: format!(
                "the stop logged {RECORDED:?} before the cut, but the cut left {}",
                record_state(record_after_stop)
            ),
        });
    }
    check_promises(
        tools,
        plan.layout,
        &data,
        &history,
        &commitments_first,
        "after the stop's cut",
        &mut violations,
    )?;
    if is_whole_record(&data) != Some(true) {
        return Err(HarnessError::Step(format!(
            "the restart's clean stop left no record: {}",
            std::fs::read_to_string(work.join("serve-2.log")).unwrap_or_default()
        )));
    }

    // 2. The next start takes the record, with the cut armed from before
    // it; load once it listens.
    fs.sync_all();
    let armed_at = fs.stats().mutations;
    fs.arm_cut(armed_at + startup_cut, startup_loss);
    let second_history = work.join("history-2.jsonl");
    let started = Instant::now();
    let (listened_after, mut processes) =
        match Server::start(tools, plan, &data, work.join("serve-3.log"))? {
            Ok(server) => {
                let listened_after = fs.stats().mutations - armed_at;
                let committer =
                    start_committer(tools, server.port, second_seed, work, "-2", Some(&fs))?;
                let loadgen = start_load(
                    tools,
                    plan,
                    server.port,
                    second_seed,
                    &second_history,
                    work,
                    "-2",
                )?;
                (Some(listened_after), Some((server, committer, loadgen)))
            }
            Err(_) if fs.is_cut() => (None, None),
            Err(log) => {
                return Err(HarnessError::Step(format!(
                    "the start after the clean stop failed before its cut: {log}"
                )))
            }
        };
    let cut_during_load =
        fs.wait_for_cut(Duration::from_secs(plan.load_seconds) + Duration::from_secs(2));
    fs.cut_now(startup_loss);
    let cut_after = started.elapsed();
    if let Some((mut server, mut committer, loadgen)) = processes.take() {
        server.process.kill();
        committer.kill();
        // A cut before its first association fails it: nothing of it to
        // check then.
        let loaded = wait_for_load(loadgen, plan, work, "-2");
        if loaded.is_err() && super::acknowledged_instances(&second_history) > 0 {
            loaded?;
        }
    }
    let serve_3_log = std::fs::read_to_string(work.join("serve-3.log")).unwrap_or_default();
    let took_record = serve_3_log.contains("recovery: ");
    let (image, cut) = fs
        .unmount()?
        .ok_or_else(|| HarnessError::Step("no image after the start's cut".to_owned()))?;
    let start_cut = format!(
        "cut before mutation {} of the start ({}{})",
        cut.at_mutation - armed_at,
        match listened_after {
            Some(listened) => format!("it listened after {listened}"),
            None => "before it listened".to_owned(),
        },
        if took_record {
            ", the record taken"
        } else {
            ", before its recovery"
        }
    );

    // Power back: the record must be gone once taken; recovery then does
    // the full check.
    let (fs, recovery_2) = power_back(
        (image, &mountpoint),
        (tools, plan, &data),
        (work, "data-at-second-cut", "serve-4.log"),
        &mut violations,
    )?;
    let record_after_start = is_whole_record(&work.join("data-at-second-cut"));
    let skipped_2 = recovery_2.contains(SKIPPED);
    if took_record && record_after_start.is_some() {
        violations.push(Violation {
            stage: "restart after the start's cut",
            detail: format!(
                "the record came back ({}) after the start took it",
                record_state(record_after_start)
            ),
        });
    }
    if skipped_2 && record_after_start != Some(true) {
        violations.push(Violation {
            stage: "restart after the start's cut",
            detail: format!(
                "recovery skipped the archive walk with {}: {recovery_2}",
                record_state(record_after_start)
            ),
        });
    }
    // Both loads' promises: the histories and acknowledgements together.
    let mut histories = std::fs::read_to_string(&history).map_err(io_error("read the history"))?;
    histories.push_str(&std::fs::read_to_string(&second_history).unwrap_or_default());
    let all_history = work.join("history-all.jsonl");
    std::fs::write(&all_history, histories).map_err(io_error("write the joined history"))?;
    let mut commitments = commitments_first;
    commitments.extend(whole_lines(&work.join("commitments-2.txt")));
    check_now_and_after_a_cut(
        (fs, &mountpoint, plan),
        (tools, plan.layout, &data, &all_history, &commitments),
        [
            "after the start's cut",
            "after a second cut following recovery",
        ],
        &mut violations,
    )?;

    Ok(Outcome {
        plan: *plan,
        cut,
        cut_during_load,
        cut_after,
        instances_acknowledged: super::acknowledged_instances(&all_history),
        commitments_acknowledged: commitments.len(),
        recovery: format!(
            "stop: {stop_cut} ({}), {} -> restart {}; start: {start_cut} ({}), {} -> restart {}",
            if first_cut.pending_changes > 0 || first_cut.unsynced_pages > 0 {
                format!(
                    "{} directory changes pending, {} kept",
                    first_cut.pending_changes, first_cut.pending_changes_kept
                )
            } else {
                "nothing unsynced".to_owned()
            },
            record_state(record_after_stop),
            if skipped_1 {
                "skipped the walk"
            } else {
                "did the full check"
            },
            if startup_loss.tear {
                "torn"
            } else {
                "synced only"
            },
            record_state(record_after_start),
            if skipped_2 {
                "skipped the walk"
            } else {
                "did the full check"
            },
        ),
        violations,
        work_dir: work.to_owned(),
    })
}
