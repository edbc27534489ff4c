//! sluice-index at archive scale: a long run to 100 million instances.
//!
//! ```text
//! SLUICE_BENCH_INDEX_UIDS=random SLUICE_BENCH_DIR=/big/disk \
//!     nice -n 10 cargo bench -p sluice-bench --bench index_scale
//! ```
//!
//! Grows one index to `SLUICE_BENCH_INDEX_N` instances (default 100,000,000
//! under `cargo bench`, 3,000 as the smoke test `cargo test --benches` runs)
//! from `index_workload`'s stream, modality-style or random UIDs
//! (`SLUICE_BENCH_INDEX_UIDS=random`), submitted as the engine's cores submit
//! them: batches of `SLUICE_BENCH_INDEX_BATCH` (256, the engine's
//! `storage.group_commit_max_instances`) answered at commit, up to
//! `SLUICE_BENCH_INDEX_IN_FLIGHT` (32) in flight, which the writer coalesces
//! into its transactions. Every `SLUICE_BENCH_INDEX_REPORT` instances
//! (1,000,000) it prints one line:
//! - inserts/s of the step and overall, in index time (each chunk of the
//!   stream is generated before its clock starts) and in wall time;
//! - the index directory's allocated bytes per instance;
//! - this process's resident memory (anonymous, and file-backed: LMDB's map
//!   pages it touched) and its CPU time per instance;
//! - bytes this process wrote to storage per instance (`/proc/self/io`), and
//!   the disk's write operations and bytes during the step (`/proc/diskstats`
//!   of `SLUICE_BENCH_DISK`, default `vda`: the whole machine's, other
//!   processes included);
//! - the machine's load average.
//!
//! Every `SLUICE_BENCH_INDEX_CHECKPOINT` instances (10,000,000) and at the
//! end it samples `SLUICE_BENCH_INDEX_SAMPLES` (100,000) instances and times,
//! warm (a first untimed pass brings their pages in, as a running server has
//! them): the engine's duplicate check (a read transaction and a lookup by
//! triplet) of a stored instance and of a new one, and the lookup by SOP
//! Instance UID alone (storage commitment's presence check) of a stored and
//! an absent instance; p50, p99, p99.9 and max.
//!
//! `SLUICE_BENCH_INDEX_STOP_BELOW=R` stops the run once a step falls below
//! R inserts/s (to measure a design up to where it collapses).
//! `SLUICE_BENCH_KEEP=1` keeps the index directory (it is deleted otherwise).
//! `SLUICE_BENCH_INDEX_OPEN=<index dir>` grows nothing: it opens that index
//! (one kept by an earlier run, maybe of an older schema, which the open
//! then upgrades), prints how long the open took and its tables, and
//! closes it.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sluice_index::{Index, IndexOptions, SopPresence, Triplet};

mod index_workload;
use index_workload::{duplicate_check, env_u64, mix, submit_all, Shape, SOP_CLASS_UID};

/// Instances generated at once before their clock starts.
const CHUNK_INSTANCES: u64 = 20_000;

#[derive(Debug, Clone, Copy)]
struct Settings {
    total: u64,
    batch: u64,
    in_flight: usize,
    report_every: u64,
    checkpoint_every: u64,
    samples: u64,
    stop_below: Option<f64>,
}

impl Settings {
    fn from_env(full: bool) -> Settings {
        let total = env_u64("SLUICE_BENCH_INDEX_N")
            .unwrap_or(if full { 100_000_000 } else { 3_000 })
            .max(1_000);
        Settings {
            total,
            batch: env_u64("SLUICE_BENCH_INDEX_BATCH")
                .unwrap_or(256)
                .clamp(1, 10_000),
            in_flight: env_u64("SLUICE_BENCH_INDEX_IN_FLIGHT")
                .unwrap_or(32)
                .clamp(1, 1_000) as usize,
            report_every: env_u64("SLUICE_BENCH_INDEX_REPORT")
                .unwrap_or(if full { 1_000_000 } else { 1_000 })
                .max(1_000),
            checkpoint_every: env_u64("SLUICE_BENCH_INDEX_CHECKPOINT")
                .unwrap_or(if full { 10_000_000 } else { 2_000 })
                .max(1_000),
            samples: env_u64("SLUICE_BENCH_INDEX_SAMPLES")
                .unwrap_or(if full { 100_000 } else { 500 })
                .max(1),
            stop_below: env_u64("SLUICE_BENCH_INDEX_STOP_BELOW").map(|rate| rate as f64),
        }
    }
}

/// Counters of this process and of the machine, read from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cpu_seconds: f64,
    process_write_bytes: u64,
    disk_write_ops: u64,
    disk_write_bytes: u64,
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The number after `key` on its line of a `key: value` file.
fn proc_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

impl Counters {
    fn now(disk: &str) -> Counters {
        // utime and stime are fields 14 and 15 of /proc/self/stat, in clock
        // ticks (100 per second on Linux); the command name before them is
        // in parentheses and may hold spaces, so count from the last ')'.
        let stat = read_proc("/proc/self/stat");
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|field| field.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        let io = read_proc("/proc/self/io");
        let diskstats = read_proc("/proc/diskstats");
        let device = diskstats
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.get(2) == Some(&disk));
        let field = |index: usize| -> u64 {
            device
                .as_ref()
                .and_then(|fields| fields.get(index))
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Counters {
            cpu_seconds: ticks as f64 / 100.0,
            process_write_bytes: proc_field(&io, "write_bytes:"),
            // Fields 8 and 10 of a diskstats line (1-based after major,
            // minor, name): writes completed, sectors (512 bytes) written.
            disk_write_ops: field(7),
            disk_write_bytes: field(9) * 512,
        }
    }
}

/// Allocated bytes of every file under `dir`.
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => allocated_bytes(&entry.path()),
            Ok(metadata) => metadata.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn load_average() -> String {
    read_proc("/proc/loadavg")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn report_latency(at: u64, name: &str, histogram: &Histogram<u64>) {
    println!(
        "index_scale: latency at {at:>11}  {name:<32} p50 {:>7.2} µs  p99 {:>7.2} µs  p99.9 {:>8.2} µs  max {:>9.2} µs",
        histogram.value_at_quantile(0.50) as f64 / 1_000.0,
        histogram.value_at_quantile(0.99) as f64 / 1_000.0,
        histogram.value_at_quantile(0.999) as f64 / 1_000.0,
        histogram.max() as f64 / 1_000.0,
    );
}

/// Times `check` on each sample, after one untimed pass over all of them.
fn timed_pass(samples: &[u64], mut check: impl FnMut(u64)) -> Histogram<u64> {
    for &n in samples {
        check(n);
    }
    let mut histogram = histogram();
    for &n in samples {
        let started = Instant::now();
        check(n);
        histogram.saturating_record(started.elapsed().as_nanos() as u64);
    }
    histogram
}

/// The duplicate checks and SOP lookups, warm, on `inserted` instances.
fn sample_latencies(index: &Index, shape: Shape, inserted: u64, settings: &Settings, seed: u64) {
    let samples: Vec<u64> = (0..settings.samples)
        .map(|i| mix(i ^ seed) % inserted)
        .collect();
    let triplets: Vec<_> = samples.iter().map(|&n| shape.triplet(n)).collect();
    let absent: Vec<_> = samples.iter().map(|&n| shape.absent_triplet(n)).collect();
    let positions: Vec<u64> = (0..samples.len() as u64).collect();
    // The engine's duplicate check: a read transaction, a lookup by triplet.
    let duplicate_checks = |triplets: &[Triplet], stored: bool| {
        timed_pass(&positions, |i| {
            let triplet = &triplets[i as usize];
            assert_eq!(duplicate_check(index, triplet), stored, "{triplet:?}");
        })
    };
    // Storage commitment's check: a lookup by SOP Instance UID alone.
    let presence_check = |triplets: &[Triplet], expected: SopPresence| {
        timed_pass(&positions, |i| {
            let read = index.read().expect("read");
            let presence = read
                .sop_presence(&triplets[i as usize].sop_instance_uid, SOP_CLASS_UID)
                .expect("presence");
            assert_eq!(presence, expected);
        })
    };
    let stored = duplicate_checks(&triplets, true);
    let new = duplicate_checks(&absent, false);
    let by_sop = presence_check(&triplets, SopPresence::Stored);
    let by_sop_absent = presence_check(&absent, SopPresence::Absent);
    report_latency(inserted, "duplicate check, stored instance", &stored);
    report_latency(inserted, "duplicate check, new instance", &new);
    report_latency(inserted, "by SOP UID, stored", &by_sop);
    report_latency(inserted, "by SOP UID, absent", &by_sop_absent);
}

fn print_tables(index: &Index, inserted: u64) {
    let stats = index.stats().expect("stats");
    println!(
        "index_scale: LMDB {:.1} MiB file, {:.1} MiB used ({:.0} bytes per instance)",
        mib(stats.file_size_bytes),
        mib(stats.used_bytes),
        stats.used_bytes as f64 / inserted as f64
    );
    for table in &stats.tables {
        if table.entries > 0 {
            println!(
                "index_scale:   table {:<22} {:>11} entries {:>10.1} MiB {:>6.1} bytes/instance, depth {}",
                table.name,
                table.entries,
                mib(table.bytes),
                table.bytes as f64 / inserted as f64,
                table.depth
            );
        }
    }
}

/// `SLUICE_BENCH_INDEX_OPEN`: times the open of an existing index.
fn open_existing(path: &Path) {
    let started = Instant::now();
    let index = Index::open(path, IndexOptions::default()).expect("open");
    println!(
        "index_scale: opened {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    let instances = index
        .stats()
        .expect("stats")
        .table("instances")
        .map_or(0, |table| table.entries);
    print_tables(&index, instances.max(1));
    index.close();
}

fn main() {
    if let Some(path) = std::env::var_os("SLUICE_BENCH_INDEX_OPEN") {
        open_existing(Path::new(&path));
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let settings = Settings::from_env(full);
    let shape = Shape::from_env();
    let disk = std::env::var("SLUICE_BENCH_DISK").unwrap_or_else(|_| "vda".into());
    let scratch_parent =
        std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-index-scale")
        .tempdir_in(scratch_parent)
        .expect("scratch dir");
    let path = scratch.path().join("index");
    let options = IndexOptions {
        map_size_bytes: env_u64("SLUICE_BENCH_INDEX_MAP_GIB").unwrap_or(256) as usize * (1 << 30),
        ..IndexOptions::default()
    };
    println!(
        "index_scale: {} instances, {} UIDs, batches of {} answered at commit, {} in flight, in {}",
        settings.total,
        shape.name(),
        settings.batch,
        settings.in_flight,
        path.display()
    );
    let index = Index::open(&path, options).expect("open");

    let run_started = Instant::now();
    let mut index_time = Duration::ZERO;
    let mut inserted = 0u64;
    let mut step_started_at = (Instant::now(), Duration::ZERO, 0u64);
    let mut step_counters = Counters::now(&disk);
    let first_counters = step_counters;
    let mut slowest_step = f64::INFINITY;
    while inserted < settings.total {
        let chunk_end = (inserted + CHUNK_INSTANCES).min(settings.total);
        let batches = shape.batches(inserted, chunk_end, settings.batch);
        let started = Instant::now();
        submit_all(&index.writer(), batches, settings.in_flight, true);
        index_time += started.elapsed();
        inserted = chunk_end;

        let at_report = inserted % settings.report_every == 0 || inserted == settings.total;
        if at_report {
            let (wall_started, index_time_before, inserted_before) = step_started_at;
            let step = (inserted - inserted_before) as f64;
            let step_rate = step / (index_time - index_time_before).as_secs_f64();
            let wall_rate = step / wall_started.elapsed().as_secs_f64();
            slowest_step = slowest_step.min(step_rate);
            let counters = Counters::now(&disk);
            let status = read_proc("/proc/self/status");
            println!(
                "index_scale: {:>11} inserted  {:>8.0}/s step  {:>8.0}/s overall  {:>8.0}/s wall  {:>6.0} B/inst on disk  rss anon {:>6.0} MiB file {:>6.0} MiB  cpu {:>5.1} µs/inst  wrote {:>6.0} B/inst  disk {:>7} writes {:>8.0} MiB  load {}",
                inserted,
                step_rate,
                inserted as f64 / index_time.as_secs_f64(),
                wall_rate,
                allocated_bytes(&path) as f64 / inserted as f64,
                proc_field(&status, "RssAnon:") as f64 / 1024.0,
                proc_field(&status, "RssFile:") as f64 / 1024.0,
                (counters.cpu_seconds - step_counters.cpu_seconds) * 1e6 / step,
                (counters.process_write_bytes - step_counters.process_write_bytes) as f64 / step,
                counters.disk_write_ops - step_counters.disk_write_ops,
                mib(counters.disk_write_bytes - step_counters.disk_write_bytes),
                load_average(),
            );
            step_counters = counters;
            step_started_at = (Instant::now(), index_time, inserted);
            if settings.stop_below.is_some_and(|floor| step_rate < floor) {
                println!("index_scale: stopped at {inserted}: {step_rate:.0}/s is below the floor");
                break;
            }
        }
        if inserted % settings.checkpoint_every == 0 || inserted == settings.total {
            sample_latencies(&index, shape, inserted, &settings, inserted);
        }
    }
    let counters = Counters::now(&disk);
    println!(
        "index_scale: {inserted} instances in {:.0} s of index time ({:.0} s wall): {:.0} inserts/s overall, slowest step {:.0}/s; {:.1} µs CPU and {:.0} bytes written per instance; {:.0} bytes per instance on disk",
        index_time.as_secs_f64(),
        run_started.elapsed().as_secs_f64(),
        inserted as f64 / index_time.as_secs_f64(),
        slowest_step,
        (counters.cpu_seconds - first_counters.cpu_seconds) * 1e6 / inserted as f64,
        (counters.process_write_bytes - first_counters.process_write_bytes) as f64
            / inserted as f64,
        allocated_bytes(&path) as f64 / inserted as f64,
    );
    print_tables(&index, inserted);
    index.close();
    let started = Instant::now();
    let index = Index::open(&path, options).expect("reopen");
    println!(
        "index_scale: open of the existing index: {:.1} ms",
        started.elapsed().as_secs_f64() * 1_000.0
    );
    index.close();
    if std::env::var("SLUICE_BENCH_KEEP").is_ok_and(|v| v == "1") {
        println!("index_scale: kept {}", scratch.keep().display());
    }
}
