//! The `online-compact` round's cut: in what `sluice serve`'s compactor
//! does after the loads (see the parent module).

use std::path::Path;
use std::time::{Duration, Instant};

use super::super::{
    check_promises, copy_tree, HarnessError, Layout, Outcome, Plan, Server, Tools, Violation,
    STOP_TIMEOUT,
};
use super::{CUT_MIN, CUT_PER_INSTANCE};
use crate::mount::{Mounted, CAPACITY_BYTES_DEFAULT};

/// How long the compactor has to reach the cut before the harness cuts
/// anyway (its survey runs every 2 s; a debug build on the crash file
/// system copies slowly).
const COMPACTOR_WINDOW: Duration = Duration::from_secs(30);

/// After the restart: three surveys' worth of running (recovery, then
/// the compactor finishing what the cut interrupted).
const SECOND_RUN: Duration = Duration::from_secs(7);

pub(super) fn cut_the_compactor(
    (plan, tools, work): (&Plan, &Tools, &Path),
    (fs, mut server): (Mounted, Server),
    (data, config, history): (&Path, &Path, &Path),
    (instances_acknowledged, cut_fraction): (u64, f64),
) -> Result<Outcome, HarnessError> {
    let mut violations = Vec::new();
    // The cut among the compactor's next mutations (the loads ended, so
    // nothing else writes), the server killed with it.
    let cut_after_mutations =
        CUT_MIN + (cut_fraction * (CUT_PER_INSTANCE * instances_acknowledged) as f64) as u64;
    let armed_at = fs.stats().mutations;
    fs.arm_cut(armed_at + cut_after_mutations, plan.loss);
    let started = Instant::now();
    let cut_during_compaction = fs.wait_for_cut(COMPACTOR_WINDOW);
    let compactor_mutations = fs.stats().mutations.saturating_sub(armed_at);
    fs.cut_now(plan.loss);
    let cut_after = started.elapsed();
    server.process.kill();
    let first_log = server.log();
    let passes_before = first_log.matches("online compaction pass").count();
    let (image, cut) = fs
        .unmount()?
        .ok_or_else(|| HarnessError::Step("no image after the cut".to_owned()))?;

    // Power back: the server again (recovery, its compactor), stopped.
    let fs = Mounted::mount(image, &mountpoint_of(data)?, CAPACITY_BYTES_DEFAULT)?;
    copy_tree(data, &work.join("data-at-cut"))?;
    let serve_plan = Plan {
        layout: Layout::Segments,
        ..*plan
    };
    let second_log = match Server::start_with(
        tools,
        &serve_plan,
        data,
        work.join("serve-2.log"),
        Some(config),
    )? {
        Ok(mut server) => {
            std::thread::sleep(SECOND_RUN);
            let status = server.process.terminate(STOP_TIMEOUT)?;
            if !status.success() {
                violations.push(Violation {
                    stage: "restart",
                    detail: format!("sluice serve did not stop cleanly ({status})"),
                });
            }
            server.log()
        }
        Err(log) => {
            violations.push(Violation {
                stage: "restart",
                detail: log.clone(),
            });
            log
        }
    };
    if second_log.contains("online compaction pass stopped") {
        violations.push(Violation {
            stage: "restart",
            detail: super::super::head(
                &second_log
                    .lines()
                    .filter(|line| line.contains("online compaction"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                8,
            ),
        });
    }
    let passes_after = second_log.matches("online compaction pass").count();
    check_promises(
        tools,
        Layout::Segments,
        data,
        history,
        &[],
        "after the restart",
        &mut violations,
    )?;
    // Another cut, clean: what the second run did must have been durable.
    super::super::cut_clean_and_check(
        (fs, &mountpoint_of(data)?, plan),
        (tools, Layout::Segments, data, history, &[]),
        "after a second cut following the restart",
        &mut violations,
    )?;
    let when = if cut_during_compaction {
        format!("cut after {compactor_mutations} of the compactor's mutations")
    } else {
        format!("(the compactor went quiet first, after {compactor_mutations} mutations: cut then)")
    };
    Ok(Outcome {
        plan: *plan,
        cut,
        cut_during_load: cut_during_compaction,
        cut_after,
        instances_acknowledged,
        commitments_acknowledged: 0,
        recovery: format!(
            "online-compact: {when}; passes {passes_before} before the cut, {passes_after} after \
             the restart; {}",
            super::super::recovery_line(&second_log)
        ),
        violations,
        work_dir: work.to_owned(),
    })
}

/// The crash file system's mount point: the data directory's parent.
fn mountpoint_of(data: &Path) -> Result<std::path::PathBuf, HarnessError> {
    data.parent()
        .map(Path::to_owned)
        .ok_or_else(|| HarnessError::Step("the data directory has no parent".to_owned()))
}
