//! sluice-index: growth to millions of instances, lookups, queries, size.
//!
//! One run builds an index of `SLUICE_BENCH_INDEX_N` instances (default
//! 10,000,000 under `cargo bench`, 2,000 when criterion runs this file as a
//! smoke test under `cargo test --benches`) in a scratch directory
//! (`SLUICE_BENCH_DIR`, default the system temp dir; deleted at the end),
//! printing as it goes:
//! - batched insert throughput per million instances (target >= 100,000/s
//!   sustained to 10 M), with batches of `SLUICE_BENCH_INDEX_BATCH` (1,000)
//!   and up to `SLUICE_BENCH_INDEX_IN_FLIGHT` (8) batches in flight, as the
//!   engine's cores would submit them;
//! - bytes of index per instance (target < 1 KiB), per table;
//! - cold open time (close, reopen);
//! - p50/p99/p99.9 of lookup by triplet and by SOP Instance UID, of the
//!   storage-commitment presence check, and of a fresh read transaction plus a
//!   lookup (target p99 < 20 µs at 10 M); 10,000 presence checks in one
//!   transaction (target well under 100 ms); study queries.
//!
//! Then criterion measures the same lookups and a batch insert on the grown index.
//!
//! `SLUICE_BENCH_INDEX_UIDS=random` makes every UID random (`2.25.<128-bit
//! decimal>`) instead of modality-style (a root, a timestamp, counters); the
//! stream is `index_workload`'s, shared with the long-run `index_scale`
//! bench.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use hdrhistogram::Histogram;
use sluice_index::{Index, IndexOptions, StudyQuery, Triplet};

mod index_workload;
use index_workload::{duplicate_check, env_u64, mix, submit_all, Shape, SOP_CLASS_UID};

const SAMPLES: u64 = 100_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "index: {name:<34} p50 {:>7.2} µs  p99 {:>7.2} µs  p99.9 {:>7.2} µs  max {:>8.2} µs  ({} samples)",
        histogram.value_at_quantile(0.50) as f64 / 1_000.0,
        histogram.value_at_quantile(0.99) as f64 / 1_000.0,
        histogram.value_at_quantile(0.999) as f64 / 1_000.0,
        histogram.max() as f64 / 1_000.0,
        histogram.len(),
    );
}

/// Grows the index to `total` instances, printing throughput per step. Each
/// step's instances are generated before its clock starts, so the figure is
/// the index's (the engine hands over instances it has already parsed).
fn grow(index: &Index, shape: Shape, total: u64, batch_size: u64, step: u64, in_flight_max: usize) {
    let writer = index.writer();
    let mut timed = Duration::ZERO;
    let mut slowest_step_rate = f64::INFINITY;
    let mut next = 0u64;
    while next < total {
        let step_end = (next + step).min(total);
        let batches = shape.batches(next, step_end, batch_size);
        let step_started = Instant::now();
        submit_all(&writer, batches, in_flight_max, false);
        let elapsed = step_started.elapsed();
        timed += elapsed;
        let rate = (step_end - next) as f64 / elapsed.as_secs_f64();
        slowest_step_rate = slowest_step_rate.min(rate);
        next = step_end;
        println!(
            "index: grow {:>11} instances  {:>9.0} instances/s this step  {:>9.0} overall",
            next,
            rate,
            next as f64 / timed.as_secs_f64()
        );
    }
    println!(
        "index: grew to {total} instances in {:.1} s of index time: {:.0} instances/s overall, slowest step {:.0} instances/s",
        timed.as_secs_f64(),
        total as f64 / timed.as_secs_f64(),
        slowest_step_rate
    );
}

fn sample_lookups(index: &Index, shape: Shape, total: u64, samples: u64, pass: &str) {
    println!("index: lookups, {pass}:");
    let mut by_triplet = histogram();
    let mut by_sop = histogram();
    let mut presence = histogram();
    let mut fresh_txn = histogram();
    let mut missing = histogram();
    let picks: Vec<(Triplet, u64)> = (0..samples)
        .map(|i| (shape.triplet(mix(i) % total), i))
        .collect();
    {
        let read = index.read().expect("read");
        for (triplet, _) in &picks {
            let started = Instant::now();
            let found = read
                .instance(
                    &triplet.study_instance_uid,
                    &triplet.series_instance_uid,
                    &triplet.sop_instance_uid,
                )
                .expect("lookup");
            by_triplet.saturating_record(started.elapsed().as_nanos() as u64);
            assert!(found.is_some());
        }
        for (triplet, _) in &picks {
            let started = Instant::now();
            let found = read
                .instance_by_sop(&triplet.sop_instance_uid)
                .expect("lookup");
            by_sop.saturating_record(started.elapsed().as_nanos() as u64);
            assert!(found.is_some());
        }
        for (triplet, _) in &picks {
            let started = Instant::now();
            let found = read
                .sop_presence(&triplet.sop_instance_uid, SOP_CLASS_UID)
                .expect("presence");
            presence.saturating_record(started.elapsed().as_nanos() as u64);
            black_box(found);
        }
        for (_, i) in &picks {
            // A duplicate check that finds nothing: a new SOP Instance UID in
            // a stored series (so the lookup walks to where a real new
            // instance's would).
            let absent = shape.absent_triplet(mix(*i) % total);
            let started = Instant::now();
            let found = read
                .contains(
                    &absent.study_instance_uid,
                    &absent.series_instance_uid,
                    &absent.sop_instance_uid,
                )
                .expect("contains");
            missing.saturating_record(started.elapsed().as_nanos() as u64);
            assert!(!found);
        }
    }
    for (triplet, _) in picks.iter().take(20_000) {
        let started = Instant::now();
        let found = duplicate_check(index, triplet);
        fresh_txn.saturating_record(started.elapsed().as_nanos() as u64);
        assert!(found);
    }
    report("lookup by triplet (record copied)", &by_triplet);
    report("lookup by SOP UID (record copied)", &by_sop);
    report("SOP presence (commitment check)", &presence);
    report("duplicate check, absent triplet", &missing);
    report("read txn + duplicate check", &fresh_txn);

    let references: Vec<String> = (0..10_000u64)
        .map(|i| shape.triplet(mix(i ^ 0xc0_ffee) % total).sop_instance_uid)
        .collect();
    let started = Instant::now();
    let read = index.read().expect("read");
    let stored = references
        .iter()
        .filter(|sop| {
            read.sop_presence(sop, SOP_CLASS_UID).expect("presence")
                == sluice_index::SopPresence::Stored
        })
        .count();
    drop(read);
    println!(
        "index: 10,000 commitment references checked in one transaction: {:.2} ms ({stored} stored)",
        started.elapsed().as_secs_f64() * 1_000.0
    );
}

fn time_queries(index: &Index, shape: Shape, total: u64) {
    let probe = shape.instance(total / 2);
    let queries = [
        (
            "patient ID (index)",
            StudyQuery {
                patient_id: Some(probe.study.patient_id.clone()),
                ..Default::default()
            },
        ),
        (
            "accession (index)",
            StudyQuery {
                accession_number: Some(probe.study.accession_number.clone()),
                ..Default::default()
            },
        ),
        (
            "study date range, 1 day (index)",
            StudyQuery {
                study_date: Some(format!("{0}-{0}", probe.study.study_date)),
                ..Default::default()
            },
        ),
        (
            "patient name wildcard (full scan)",
            StudyQuery {
                patient_name: Some("patient12*".into()),
                modalities_in_study: Some("CT".into()),
                ..Default::default()
            },
        ),
    ];
    for (name, query) in queries {
        let started = Instant::now();
        let read = index.read().expect("read");
        let found = read.query_studies(&query, 1_000).expect("query");
        println!(
            "index: study query {name:<34} {:>9.2} ms, {} matches{}",
            started.elapsed().as_secs_f64() * 1_000.0,
            found.items.len(),
            if found.truncated { " (limit)" } else { "" }
        );
    }
}

fn print_sizes(index: &Index, total: u64) {
    let stats = index.stats().expect("stats");
    println!(
        "index: size: {:.1} MiB file, {:.1} MiB used: {:.0} bytes per instance ({:.0} MiB per million)",
        stats.file_size_bytes as f64 / 1_048_576.0,
        stats.used_bytes as f64 / 1_048_576.0,
        stats.used_bytes as f64 / total as f64,
        stats.used_bytes as f64 / total as f64,
    );
    for table in &stats.tables {
        if table.entries > 0 {
            println!(
                "index:   table {:<22} {:>11} entries {:>10.1} MiB {:>6.0} bytes/instance, depth {}",
                table.name,
                table.entries,
                table.bytes as f64 / 1_048_576.0,
                table.bytes as f64 / total as f64,
                table.depth
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let full = std::env::args().any(|arg| arg == "--bench");
    let total = env_u64("SLUICE_BENCH_INDEX_N")
        .unwrap_or(if full { 10_000_000 } else { 2_000 })
        .max(1_000);
    let batch_size = env_u64("SLUICE_BENCH_INDEX_BATCH")
        .unwrap_or(1_000)
        .clamp(1, 10_000);
    let shape = Shape::from_env();
    let scratch_parent =
        std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-index")
        .tempdir_in(scratch_parent)
        .expect("scratch dir");
    let path = scratch.path().join("index");
    println!(
        "index: growing to {total} instances ({} UIDs), batches of {batch_size}, in {}",
        shape.name(),
        path.display()
    );

    let options = IndexOptions::default();
    let index = Index::open(&path, options).expect("open");
    let in_flight_max = env_u64("SLUICE_BENCH_INDEX_IN_FLIGHT")
        .unwrap_or(8)
        .clamp(1, 1_000) as usize;
    let step = (total / 40).clamp(1_000, 250_000);
    grow(&index, shape, total, batch_size, step, in_flight_max);
    print_sizes(&index, total);
    index.close();

    let started = Instant::now();
    let index = Index::open(&path, options).expect("reopen");
    println!(
        "index: open of an existing index: {:.2} ms",
        started.elapsed().as_secs_f64() * 1_000.0
    );
    // The first pass maps each page into this process on first touch (a minor
    // fault per page); the second is the steady state of a running server.
    sample_lookups(
        &index,
        shape,
        total,
        SAMPLES.min(total * 10),
        "first touch after open",
    );
    sample_lookups(
        &index,
        shape,
        total,
        SAMPLES.min(total * 10),
        "same keys again (warm)",
    );
    time_queries(&index, shape, total);

    let mut group = criterion.benchmark_group("index");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut n = 0u64;
    group.bench_function("lookup_by_triplet", |b| {
        let read = index.read().expect("read");
        b.iter(|| {
            n = n.wrapping_add(1);
            let triplet = shape.triplet(mix(n) % total);
            black_box(
                read.instance(
                    &triplet.study_instance_uid,
                    &triplet.series_instance_uid,
                    &triplet.sop_instance_uid,
                )
                .expect("lookup"),
            )
        })
    });
    group.bench_function("lookup_by_sop", |b| {
        let read = index.read().expect("read");
        b.iter(|| {
            n = n.wrapping_add(1);
            let triplet = shape.triplet(mix(n) % total);
            black_box(
                read.instance_by_sop(&triplet.sop_instance_uid)
                    .expect("lookup"),
            )
        })
    });
    group.bench_function("query_patient_id", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let probe = shape.instance(mix(n) % total);
            let query = StudyQuery {
                patient_id: Some(probe.study.patient_id),
                ..Default::default()
            };
            black_box(
                index
                    .read()
                    .expect("read")
                    .query_studies(&query, 100)
                    .expect("query"),
            )
        })
    });
    let writer = index.writer();
    let mut next = total;
    group.throughput(criterion::Throughput::Elements(batch_size));
    group.bench_function("insert_batch", |b| {
        b.iter_batched(
            || {
                let ops = shape.batch(next, batch_size);
                next += batch_size;
                ops
            },
            |ops| writer.execute(ops).expect("batch"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    drop(writer);
    index.close();
    drop(scratch);
    criterion.final_summary();
}
