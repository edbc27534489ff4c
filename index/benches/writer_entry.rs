//! The index writer's cost per stored entry (issue 17, session 11).
//!
//! Transactions as the engine's segments layout submits them: each batch is
//! the previous batch's in-doubt clears and `SLUICE_BENCH_WRITER_TXN` (8)
//! stores, each in doubt, its bytes a record in one of two segments (one per
//! core), answered at commit; one batch a transaction, one at a time. Four
//! cases, from the two ingest workloads of `bench/peers/run.py`:
//! - `ct-*`: studies of 10 instances in one series (loadgen's `--mix ct`);
//! - `new-*`: every instance its own study and series (the 40 KB files sent
//!   with `--new-uids`);
//!
//! each with modality-style UIDs (`*-seq`: a root and counters, so consecutive
//! instances sort together, as loadgen's do) or random ones (`*-random`:
//! `2.25.` and a 128-bit number). The study attributes are loadgen's:
//! patient name and ID, study date and time, modality, series number; the
//! others empty.
//!
//! Per case, after growing the index to `SLUICE_BENCH_WRITER_N` (20,000
//! under `cargo bench`, 400 as a smoke test) entries untimed, the next as
//! many are timed and printed per entry: wall time, the writer thread's CPU
//! (`/proc/self/task/<tid>/schedstat`), the process's CPU (every thread),
//! the bytes the process wrote (`wchar`: LMDB's page writes and the SOP
//! index's journal) in 4 KiB pages, and how much of that the SOP index's
//! directory grew by. The index lives in `SLUICE_BENCH_DIR` (default
//! `/dev/shm` when it exists: a commit's `fdatasync` is then free, and what
//! is left is CPU). Then criterion times one transaction per case.
//!
//! The instruction counts, allocations and LMDB calls per entry come from
//! running it under callgrind, collecting inside the writer's transactions
//! only (docs/design/index-format.md, "The writer's cost per entry, session
//! 11"):
//!
//! ```text
//! SLUICE_BENCH_WRITER_N=2000 SLUICE_BENCH_WRITER_CASE=ct-random \
//!   valgrind --tool=callgrind --toggle-collect='*run_transaction*' \
//!   target/release/deps/writer_entry-<hash> --bench --profile-time 1
//! ```

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use sluice_index::{
    Batch, Checksum, FileId, Index, IndexOptions, IndexWriter, InstanceRecord, Location,
    NewInstance, RecordPlace, SeriesAttributes, StoreRequest, StudyAttributes, Triplet, WriteOp,
};

const ROOT: &str = "1.2.826.0.1.3680043.10.1137";
/// Where the file ids' counters start (as `FileIdGenerator`: start time,
/// core, counter).
const START_NS: u128 = 1_796_000_000_000_000_000;

/// splitmix64: reproducible "random" UIDs.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.replace('_', "").parse().ok()
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    /// Instances per study (one series each).
    per_study: u64,
    random_uids: bool,
    /// The Part 10 file's size.
    file_bytes: u64,
}

const CASES: [Case; 4] = [
    Case {
        name: "ct-seq",
        per_study: 10,
        random_uids: false,
        file_bytes: 525_000,
    },
    Case {
        name: "ct-random",
        per_study: 10,
        random_uids: true,
        file_bytes: 525_000,
    },
    Case {
        name: "new-seq",
        per_study: 1,
        random_uids: false,
        file_bytes: 41_000,
    },
    Case {
        name: "new-random",
        per_study: 1,
        random_uids: true,
        file_bytes: 41_000,
    },
];

impl Case {
    fn uid(&self, kind: u64, n: u64) -> String {
        if self.random_uids {
            let hash = mix(kind ^ mix(n));
            let value = (u128::from(mix(hash)) << 64) | u128::from(mix(hash ^ 1));
            format!("2.25.{value}")
        } else {
            format!("{ROOT}.{kind}.20261207{n:012}")
        }
    }

    /// The record's length in its segment (header and padding to 4 KiB).
    fn record_bytes(&self) -> u64 {
        (self.file_bytes + 4096).div_ceil(4096) * 4096
    }

    /// Store request `n`: in doubt, a record of core `n % 2`'s segment.
    fn store(&self, n: u64) -> WriteOp {
        let study = n / self.per_study;
        let patient = study / 3;
        let core = n % 2;
        let instance = NewInstance {
            triplet: Triplet::new(self.uid(1, study), self.uid(2, study), self.uid(3, n)),
            record: InstanceRecord {
                file_id: FileId((START_NS << 64) | (u128::from(core) << 48) | u128::from(n / 2)),
                file_size_bytes: self.file_bytes,
                dataset_offset_bytes: 348,
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                checksum: Checksum(((u128::from(mix(n)) << 64) | u128::from(n)).to_be_bytes()),
                received_at_unix_ns: 1_796_000_000_000_000_000 + n * 1_000,
                calling_ae_title: "BENCH".into(),
                instance_number: Some((n % self.per_study) as i32 + 1),
            },
            study: StudyAttributes {
                patient_name: format!("LOADGEN^P{patient:09}"),
                patient_id: format!("LG123456{patient:010}"),
                study_date: format!(
                    "20{:02}{:02}{:02}",
                    16 + study % 10,
                    study % 12 + 1,
                    study % 28 + 1
                ),
                study_time: "120000".into(),
                ..StudyAttributes::default()
            },
            series: SeriesAttributes {
                modality: "CT".into(),
                series_number: Some(1),
                series_description: String::new(),
            },
        };
        let mut request = StoreRequest::new(instance);
        request.in_doubt = true;
        request.location = Location::Record(RecordPlace {
            segment: core + 1,
            offset: (n / 2) * self.record_bytes(),
            length: self.record_bytes(),
        });
        WriteOp::Store(request)
    }

    /// The stores of `start..start + count`, behind the clears of the
    /// `previous` batch's file ids.
    fn batch(&self, start: u64, count: u64) -> Vec<WriteOp> {
        let mut ops = Vec::with_capacity(count as usize + 1);
        if start >= count {
            let previous = (start - count..start)
                .map(|n| match self.store(n) {
                    WriteOp::Store(request) => request.instance.record.file_id,
                    _ => unreachable!("stores only"),
                })
                .collect();
            ops.push(WriteOp::ClearInDoubt(previous));
        }
        ops.extend((start..start + count).map(|n| self.store(n)));
        ops
    }
}

/// Submits one batch, answered at commit, and waits for its answer.
fn run_batch(writer: &IndexWriter, ops: Vec<WriteOp>) {
    let (sender, receiver) = mpsc::sync_channel(1);
    let batch = Batch::with_callback(ops, move |result| {
        let _ = sender.send(result);
    })
    .answered_at_commit();
    writer.submit(batch).expect("submit");
    let items = receiver
        .recv()
        .expect("the writer answers")
        .expect("the batch commits");
    assert!(items.iter().all(Result::is_ok), "every item succeeds");
}

/// Nanoseconds on a CPU of thread `tid` (`schedstat`'s first field).
fn thread_cpu_ns(tid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The writer thread's id.
fn writer_tid() -> Option<String> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .find_map(|entry| {
            let entry = entry.ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "sluice-index-wr").then(|| entry.file_name().to_string_lossy().into())
        })
}

/// Nanoseconds on a CPU of every live thread of the process.
fn process_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| thread_cpu_ns(&entry.file_name().to_string_lossy()))
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes passed to write calls by the process (`wchar`).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn options() -> IndexOptions {
    IndexOptions {
        // Enough for these runs, and a map valgrind can make (64 GiB, the
        // default, it cannot).
        map_size_bytes: 4 << 30,
        zero_ahead_bytes: 0,
        ..IndexOptions::default()
    }
}

/// Grows a fresh index to `entries`, times the next `entries`, prints the
/// figures per entry; returns the index and the next entry's number.
fn measure(case: Case, dir: &Path, entries: u64, per_txn: u64) -> (Index, u64) {
    let path = dir.join(case.name);
    let index = Index::open(&path, options()).expect("open");
    let writer = index.writer();
    for start in (0..entries).step_by(per_txn as usize) {
        run_batch(&writer, case.batch(start, per_txn));
    }
    let batches: Vec<Vec<WriteOp>> = (entries..2 * entries)
        .step_by(per_txn as usize)
        .map(|start| case.batch(start, per_txn))
        .collect();
    let timed = batches.len() as u64 * per_txn;
    let tid = writer_tid().expect("the writer thread is running");
    let sop_dir = path.join("sop-index");
    let (cpu0, all0, written0, sop0) = (
        thread_cpu_ns(&tid),
        process_cpu_ns(),
        written_bytes(),
        dir_bytes(&sop_dir),
    );
    let started = Instant::now();
    for ops in batches {
        run_batch(&writer, ops);
    }
    let wall = started.elapsed();
    let (cpu1, all1, written1, sop1) = (
        thread_cpu_ns(&tid),
        process_cpu_ns(),
        written_bytes(),
        dir_bytes(&sop_dir),
    );
    let per = |value: u64| value as f64 / timed as f64;
    println!(
        "writer: {:<10} {timed} entries, {per_txn} a transaction: {:>6.0} ns/entry wall, writer thread {:>6.0} ns/entry CPU, process {:>6.0}; wrote {:>5.2} pages/entry (SOP index dir {:+.0} bytes/entry)",
        case.name,
        wall.as_nanos() as f64 / timed as f64,
        per(cpu1.saturating_sub(cpu0)),
        per(all1.saturating_sub(all0)),
        per(written1.saturating_sub(written0)) / 4096.0,
        (sop1 as f64 - sop0 as f64) / timed as f64,
    );
    drop(writer);
    (index, 2 * entries)
}

fn scratch_parent() -> PathBuf {
    match std::env::var_os("SLUICE_BENCH_DIR") {
        Some(dir) => dir.into(),
        None if Path::new("/dev/shm").is_dir() => "/dev/shm".into(),
        None => std::env::temp_dir(),
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let full = std::env::args().any(|arg| arg == "--bench");
    let per_txn = env_u64("SLUICE_BENCH_WRITER_TXN")
        .unwrap_or(8)
        .clamp(1, 1_000);
    let entries = env_u64("SLUICE_BENCH_WRITER_N")
        .unwrap_or(if full { 20_000 } else { 400 })
        .max(per_txn)
        / per_txn
        * per_txn;
    let only = std::env::var("SLUICE_BENCH_WRITER_CASE").ok();
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-writer")
        .tempdir_in(scratch_parent())
        .expect("scratch dir");
    let mut group = criterion.benchmark_group("index_writer");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(per_txn));
    for case in CASES {
        if only.as_deref().is_some_and(|only| only != case.name) {
            continue;
        }
        let (index, mut next) = measure(case, scratch.path(), entries, per_txn);
        let writer = index.writer();
        group.bench_function(format!("transaction_{}", case.name), |bencher| {
            bencher.iter_batched(
                || {
                    let ops = case.batch(next, per_txn);
                    next += per_txn;
                    ops
                },
                |ops| run_batch(&writer, ops),
                BatchSize::PerIteration,
            )
        });
        drop(writer);
        index.close();
        let _ = std::fs::remove_dir_all(scratch.path().join(case.name));
    }
    group.finish();
    drop(scratch);
    criterion.final_summary();
}
