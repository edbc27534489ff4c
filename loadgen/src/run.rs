//! One measured run: start a `sluice-io` runtime whose cores are
//! [`LoadCore`]s, show progress while it runs, collect and merge the cores'
//! stats, and turn them into a [`RunResult`] with the loadgen's own cost.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_io::{BackendChoice, Runtime, RuntimeConfig};

use sluice_net::query::Operation;

use crate::driver::{build_proposal, LoadCore, LoadShape, RetrievePlan, RunPlan, Shared};
use crate::retrieve::{model_name, operation_name};
use crate::stats::{
    own_usage, Lane, LoadConfig, Measurements, OwnCost, RetrievalConfig, RunResult, Target,
};

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The plan is inconsistent.
    #[error("invalid run: {0}")]
    InvalidPlan(String),
    /// The runtime did not start.
    #[error("cannot start the I/O runtime: {0}")]
    Start(#[from] sluice_io::StartError),
    /// The history file could not be written.
    #[error("history file {path}: {source}")]
    History {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How the run is executed (not part of the load itself).
#[derive(Debug, Clone)]
pub struct Execution {
    /// Loadgen cores (threads).
    pub cores: usize,
    /// io backend.
    pub backend: BackendChoice,
    /// What the target is, for the report ("sluice", "storescp", ...).
    pub label: String,
    /// The workload's description for the result file.
    pub workload_label: String,
    /// Transfer syntax of synthetic data, for the result file.
    pub transfer_syntax_uid: String,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
}

/// Runs `plan` to completion and returns its result.
pub fn run(plan: RunPlan, execution: &Execution) -> Result<RunResult, RunError> {
    check_plan(&plan)?;
    let cores = execution.cores.clamp(1, 64);
    let per_core = (plan.lane_associations(Lane::Store) + plan.lane_associations(Lane::Retrieve))
        .div_ceil(cores);
    let config = RuntimeConfig {
        listen_addrs: plan.listen_addresses(),
        core_count: cores,
        backend: execution.backend,
        // The machine is shared with the server under test: no pinning.
        pin_threads: false,
        connections_max_per_core: per_core + 64,
        ops_in_flight_max: (per_core * 4 + 1024).min(1 << 24),
        recv_buffer_size_bytes: 16 * 1024,
        recv_buffer_count: 1024,
        ring_entries: 4096,
        ..RuntimeConfig::default()
    };
    let load = LoadConfig {
        mode: plan.shape.mode_name().into(),
        associations: plan.associations as u64,
        rate_per_s: plan.shape.rate_per_s(),
        duration_s: plan.duration.map(|duration| duration.as_secs_f64()),
        count: plan.count,
        ramp_up_s: plan.ramp_up.as_secs_f64(),
        instances_per_association: plan.instances_per_association,
        study_size: plan.study_size,
        workload: execution.workload_label.clone(),
        transfer_syntax_uid: execution.transfer_syntax_uid.clone(),
        pdu_length_max: plan.pdu_length_max_receive,
        commitment: plan.commitment,
        cores: cores as u64,
    };
    let retrieval = plan.retrieve.as_ref().map(retrieval_config);
    let target = Target {
        address: plan.address.to_string(),
        called_ae_title: plan.called_ae_title.clone(),
        calling_ae_title: plan.calling_ae_title.clone(),
        label: execution.label.clone(),
    };
    let history = plan.history.clone();
    let hard_limit = plan
        .duration
        .map(|duration| duration + plan.response_timeout + Duration::from_secs(10));
    let (user_before, system_before, _) = own_usage();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let shared = Arc::new(Shared::new(plan, cores));
    let factory_shared = Arc::clone(&shared);
    let runtime = Runtime::start(config, move |index| {
        LoadCore::new(Arc::clone(&factory_shared), index)
    })?;
    let backend = runtime.backend().to_string();
    let handle = runtime.handle();
    let bar = if execution.progress {
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        Some(bar)
    } else {
        None
    };
    loop {
        if shared.cores_done.load(Ordering::Acquire) >= cores {
            break;
        }
        if hard_limit.is_some_and(|limit| shared.start.elapsed() > limit) {
            break;
        }
        // A core that failed (or panicked) shuts the runtime down.
        if handle.is_shutdown_requested() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Some(bar) = &bar {
            let seconds = shared.start.elapsed().as_secs_f64().max(1e-3);
            let instances = shared.live_instances_ok.load(Ordering::Relaxed);
            let bytes = shared.live_bytes_ok.load(Ordering::Relaxed);
            let operations = shared.live_operations.load(Ordering::Relaxed);
            let received = shared.live_bytes_received.load(Ordering::Relaxed);
            bar.set_message(format!(
                "{} stored ({:.0}/s, {:.1} MB/s), {} retrievals ({:.0}/s, {:.1} MB/s received), {} failed, {} associations open",
                instances,
                instances as f64 / seconds,
                bytes as f64 / 1e6 / seconds,
                operations,
                operations as f64 / seconds,
                received as f64 / 1e6 / seconds,
                shared.live_failures.load(Ordering::Relaxed),
                shared.live_associations.load(Ordering::Relaxed),
            ));
            bar.tick();
        }
    }
    let finished = shared
        .finished_at
        .lock()
        .ok()
        .and_then(|finished| *finished)
        .unwrap_or_else(Instant::now);
    let _ = runtime.shutdown_and_join(Duration::from_secs(10));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed_s = finished
        .saturating_duration_since(shared.start)
        .as_secs_f64();
    let mut merged = Measurements::default();
    if let Ok(results) = shared.results.lock() {
        for stats in results.iter() {
            merged.merge(stats);
        }
    }
    // Requests whose report never came, on either path.
    let unanswered_commits = shared
        .pending_commits
        .lock()
        .map_or(0, |pending| pending.len());
    if unanswered_commits > 0 {
        *merged
            .commit_errors
            .entry("report not received by the end of the run".into())
            .or_insert(0) += unanswered_commits as u64;
    }
    let (user_after, system_after, peak_rss_mib) = own_usage();
    let cpu_user_s = (user_after - user_before).max(0.0);
    let cpu_system_s = (system_after - system_before).max(0.0);
    let gigabytes = (merged.bytes_ok + merged.retrieve.counts.bytes_received) as f64 / 1e9;
    let own = OwnCost {
        cpu_user_s,
        cpu_system_s,
        cpu_s_per_gb: if gigabytes > 0.0 {
            (cpu_user_s + cpu_system_s) / gigabytes
        } else {
            0.0
        },
        peak_rss_mib,
        backend,
    };
    if let Some(path) = history {
        merge_history(&path, cores).map_err(|source| RunError::History { path, source })?;
    }
    Ok(RunResult::from_stats(
        &merged,
        target,
        load,
        elapsed_s,
        started_unix_s,
        own,
        retrieval,
    ))
}

/// Refuses a plan that cannot run.
fn check_plan(plan: &RunPlan) -> Result<(), RunError> {
    let invalid = |why: &str| Err(RunError::InvalidPlan(why.to_string()));
    if plan.duration.is_none() && plan.count.is_none() {
        return invalid("give a duration or a count");
    }
    if plan.associations == 0 && plan.retrieve.is_none() {
        return invalid("at least one association");
    }
    if plan.associations > 0 && plan.workload.is_empty() {
        return invalid("no workload");
    }
    for lane in Lane::ALL {
        if plan.lane_associations(lane) == 0 {
            continue;
        }
        if let LoadShape::Open { rate_per_s } = plan.lane_shape(lane) {
            if !(rate_per_s > 0.0 && rate_per_s.is_finite()) {
                return invalid("the rate must be positive");
            }
        }
        build_proposal(plan, lane).map_err(RunError::InvalidPlan)?;
    }
    if let Some(retrieve) = &plan.retrieve {
        if retrieve.associations == 0 {
            return invalid("the retrieval lane needs at least one association");
        }
        retrieve
            .spec
            .check()
            .and_then(|()| retrieve.spec.check_pool(&retrieve.pool))
            .map_err(|error| RunError::InvalidPlan(error.to_string()))?;
        if retrieve.spec.operation == Operation::Move && retrieve.move_listen.is_none() {
            return invalid(
                "a C-MOVE workload needs --move-listen (our storage SCP, the destination)",
            );
        }
    }
    Ok(())
}

/// The result file's description of the retrieval lane.
fn retrieval_config(plan: &RetrievePlan) -> RetrievalConfig {
    let spec = &plan.spec;
    RetrievalConfig {
        operation: operation_name(spec.operation).to_string(),
        model: model_name(spec.model).to_string(),
        level: spec.level.to_string(),
        keys: spec.keys.iter().map(|key| key.name().to_string()).collect(),
        key_source: plan.pool.description.clone(),
        mode: plan.shape.mode_name().into(),
        associations: plan.associations as u64,
        rate_per_s: plan.shape.rate_per_s(),
        operations_per_association: plan.operations_per_association,
        move_destination: (spec.operation == Operation::Move)
            .then(|| spec.move_destination.clone()),
        move_listen: plan.move_listen.map(|address| address.to_string()),
    }
}

/// Concatenates the per-core history files into `path` and removes them.
fn merge_history(path: &std::path::Path, cores: usize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for index in 0..cores {
        let mut name = path.to_path_buf().into_os_string();
        name.push(format!(".core{index}"));
        if let Ok(mut part) = std::fs::File::open(&name) {
            std::io::copy(&mut part, &mut out)?;
            let _ = std::fs::remove_file(&name);
        }
    }
    out.flush()
}
