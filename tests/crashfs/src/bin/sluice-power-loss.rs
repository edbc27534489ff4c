//! The power-loss test's long-run mode: many seeded rounds of
//! `sluice_crashfs::power_loss`, outside `cargo test`.
//!
//! ```text
//! cargo build -p sluice-engine -p sluice-loadgen -p sluice-crashfs
//! target/debug/sluice-power-loss --seeds 1000 [--first-seed 1] [--stop-on-violation]
//! target/debug/sluice-power-loss --seed 1234      # replay one
//! target/debug/sluice-power-loss --layout files --seeds 10
//! target/debug/sluice-power-loss --scenario migrate --seeds 5
//! target/debug/sluice-power-loss --scenario compact --seeds 5
//! target/debug/sluice-power-loss --scenario online-compact --seeds 5
//! target/debug/sluice-power-loss --scenario clean-stop --seeds 5
//! ```
//!
//! One line per round; a round that breaks a promise keeps its directory
//! (logs, history, acknowledgements) and is named at the end. Exit status
//! 1 if any round broke a promise, 2 if the harness itself failed.

use std::process::ExitCode;

use clap::Parser;
use sluice_crashfs::power_loss::{self, Layout, Plan, Scenario, Start, Tools};

#[derive(Debug, Parser)]
#[command(about = "Seeded power-loss rounds of sluice serve on the crash file system")]
struct Args {
    /// Rounds to run (seeds first-seed, first-seed + 1, ...).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Run only this seed (replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop at the first round that breaks a promise.
    #[arg(long)]
    stop_on_violation: bool,
    /// What the disk holds when the server starts: settled (an established
    /// store), fresh-data-dir (an empty data directory, first run),
    /// no-data-dir (sluice serve creates it).
    #[arg(long, default_value = "settled")]
    start: Start,
    /// The storage layout of `sluice serve` (`storage.layout` in the
    /// configuration file the round writes): segments (the default of
    /// `sluice serve`) or files.
    #[arg(long, default_value = "segments")]
    layout: Layout,
    /// What the cut interrupts: serve (sluice serve under load), migrate
    /// (`sluice migrate` of a store serve wrote, direction from the seed),
    /// compact (`sluice compact` of a segments store with replaced
    /// records; the offline ones are run again after the cut) or
    /// online-compact (`sluice serve`'s compactor on such a store, the
    /// server run again after the cut) or clean-stop (a cut in a clean
    /// stop, then one soon after the next start, which takes its record).
    #[arg(long, default_value = "serve")]
    scenario: Scenario,
    /// Keep every round's directory (logs, history), not only failed ones.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tools = Tools::locate();
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect(),
    };
    let mut failed = Vec::new();
    let mut harness_errors = 0u64;
    let mut instances = 0u64;
    let mut commitments = 0u64;
    for (done, &seed) in seeds.iter().enumerate() {
        let plan = Plan {
            start: args.start,
            layout: args.layout,
            scenario: args.scenario,
            ..Plan::from_seed(seed)
        };
        match power_loss::run_in_temp_dir(&plan, &tools, args.keep) {
            Ok(outcome) => {
                println!("[{}/{}] {outcome}", done + 1, seeds.len());
                instances += outcome.instances_acknowledged;
                commitments += outcome.commitments_acknowledged as u64;
                if !outcome.passed() {
                    failed.push(seed);
                    if args.stop_on_violation {
                        break;
                    }
                }
            }
            Err(error) => {
                harness_errors += 1;
                println!(
                    "[{}/{}] seed {seed}: HARNESS ERROR: {error}",
                    done + 1,
                    seeds.len()
                );
            }
        }
    }
    println!(
        "{} rounds, {} with a broken promise {:?}, {} harness errors; {} instances and {} commitment requests acknowledged before the cuts",
        seeds.len(),
        failed.len(),
        failed,
        harness_errors,
        instances,
        commitments
    );
    if !failed.is_empty() {
        ExitCode::from(1)
    } else if harness_errors > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
