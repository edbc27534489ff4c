//! Speed-of-light baselines for the SOP Instance UID lookup at scale: the
//! two stores the index could keep it in, with nothing of the index around
//! them (docs/design/index-at-scale.md, "Alternatives").
//!
//! ```text
//! SLUICE_BENCH_DIR=/big/disk nice -n 10 cargo bench -p sluice-bench --bench index_baselines
//! ```
//!
//! Each inserts `SLUICE_BENCH_BASELINE_N` (default 30,000,000 under `cargo
//! bench`, 20,000 as the smoke test) random 8-byte keys with 8-byte values,
//! `SLUICE_BENCH_BASELINE_TXN` (8,192) per transaction or batch, each key
//! looked up first (the writer's duplicate decision), and prints inserts/s
//! and bytes this process wrote per key every `SLUICE_BENCH_BASELINE_REPORT`
//! (1,000,000) keys:
//! - `lmdb`: one LMDB table keyed by the random key, as a hash-keyed SOP
//!   table in LMDB would be (environment opened as the index opens it:
//!   `MDB_NOMETASYNC`, one commit per transaction);
//! - `fjall`: one fjall 2 partition configured as the index's SOP index
//!   (2 MiB memtable, 1 KiB data blocks, 256 MiB cache, no compression),
//!   one atomic batch per transaction.
//!
//! `SLUICE_BENCH_BASELINE_STOP_BELOW=R` stops a store once a step falls below
//! R inserts/s. After the inserts, each store times 100,000 lookups of keys
//! it holds and 100,000 of keys it does not, warm (a first, untimed pass
//! brings them in), and prints p50/p99. `SLUICE_BENCH_BASELINE_BLOCK` sets
//! fjall's data block size, `SLUICE_BENCH_BASELINE_CACHE_MIB` its block
//! cache (defaults: the index's).

use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use heed::types::Bytes;

// Only its hash and environment helpers: the stream itself is not used here.
#[allow(dead_code)]
mod index_workload;
use index_workload::{env_u64, mix};

fn process_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

struct Run {
    name: &'static str,
    total: u64,
    per_txn: u64,
    report_every: u64,
    stop_below: Option<f64>,
}

impl Run {
    /// Calls `txn` for each transaction's keys, printing a line per report
    /// step; stops early below the floor.
    fn drive(&self, mut txn: impl FnMut(&[u64])) {
        let mut done = 0u64;
        let mut step_started = (Instant::now(), process_write_bytes(), 0u64);
        let started = Instant::now();
        let mut keys = Vec::with_capacity(self.per_txn as usize);
        while done < self.total {
            keys.clear();
            let end = (done + self.per_txn).min(self.total);
            keys.extend((done..end).map(|n| mix(n ^ 0x5eed)));
            txn(&keys);
            done = end;
            if done % self.report_every == 0 || done == self.total {
                let (at, written, from) = step_started;
                let rate = (done - from) as f64 / at.elapsed().as_secs_f64();
                println!(
                    "index_baselines: {:<6} {:>11} keys  {:>9.0}/s step  {:>9.0}/s overall  wrote {:>7.0} B/key",
                    self.name,
                    done,
                    rate,
                    done as f64 / started.elapsed().as_secs_f64(),
                    (process_write_bytes() - written) as f64 / (done - from) as f64,
                );
                step_started = (Instant::now(), process_write_bytes(), done);
                if self.stop_below.is_some_and(|floor| rate < floor) {
                    println!("index_baselines: {} stopped below the floor", self.name);
                    break;
                }
            }
        }
    }
}

/// Times `lookup` on 100,000 held and 100,000 absent keys (after an untimed
/// pass over the same keys), and prints p50/p99 of each.
fn time_lookups(name: &str, inserted: u64, mut lookup: impl FnMut(u64) -> bool) {
    const SAMPLES: u64 = 100_000;
    let held: Vec<u64> = (0..SAMPLES)
        .map(|i| mix((mix(i ^ 0xabc) % inserted) ^ 0x5eed))
        .collect();
    let absent: Vec<u64> = (0..SAMPLES)
        .map(|i| mix(i ^ 0xdead_beef) | 1 << 63)
        .collect();
    for (what, keys, expected) in [("held", &held, true), ("absent", &absent, false)] {
        for &key in keys {
            lookup(key);
        }
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
        let mut found = 0u64;
        for &key in keys {
            let started = Instant::now();
            found += u64::from(lookup(key) == expected);
            histogram.saturating_record(started.elapsed().as_nanos() as u64);
        }
        println!(
            "index_baselines: {name:<6} lookup of {what:<6} keys p50 {:>6.2} µs  p99 {:>7.2} µs  ({found} of {SAMPLES} as expected)",
            histogram.value_at_quantile(0.5) as f64 / 1_000.0,
            histogram.value_at_quantile(0.99) as f64 / 1_000.0,
        );
    }
}

fn lmdb(run: &Run, dir: &Path) {
    let env = sluice_io::lmdb::open_lmdb_env(
        dir,
        256 << 30,
        16,
        4,
        sluice_io::lmdb::FilesOnlyWrittenByLmdb::caller_guarantees(
            "the bench's own temporary directory",
        ),
    )
    .expect("open lmdb");
    let wtxn = env.write_txn().expect("txn");
    let table: heed::Database<Bytes, Bytes> = env
        .create_databases_and_commit(wtxn, |creator, wtxn| {
            creator
                .create_database(wtxn, Some("sop"))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .expect("table")
        .unwrap_commit();
    run.drive(|keys| {
        let mut wtxn = env.write_txn().expect("txn");
        for key in keys {
            let key = key.to_be_bytes();
            assert!(table.get(&wtxn, &key).expect("get").is_none());
            table.put(&mut wtxn, &key, &key).expect("put");
        }
        wtxn.commit().expect("commit");
    });
    println!(
        "index_baselines: lmdb   {:.0} bytes per key on disk",
        env.real_disk_size().expect("size") as f64 / run.total as f64
    );
    time_lookups("lmdb", run.total, |key| {
        let rtxn = env.read_txn().expect("txn");
        let found = table.get(&rtxn, &key.to_be_bytes()).expect("get").is_some();
        found
    });
}

fn fjall(run: &Run, dir: &Path) {
    let keyspace = fjall::Config::new(dir)
        .cache_size(env_u64("SLUICE_BENCH_BASELINE_CACHE_MIB").unwrap_or(256) << 20)
        .flush_workers(1)
        .compaction_workers(1)
        .max_journaling_size(64 << 20)
        .open()
        .expect("open fjall");
    let mut options = fjall::PartitionCreateOptions::default()
        .max_memtable_size(2 << 20)
        .compression(fjall::CompressionType::None);
    options.data_block_size = env_u64("SLUICE_BENCH_BASELINE_BLOCK").unwrap_or(1024) as u32;
    let partition = keyspace.open_partition("sop", options).expect("partition");
    run.drive(|keys| {
        let mut batch = keyspace.batch();
        for key in keys {
            let key = key.to_be_bytes();
            assert!(partition.get(key).expect("get").is_none());
            batch.insert(&partition, key, key);
        }
        batch.commit().expect("commit");
    });
    keyspace
        .persist(fjall::PersistMode::SyncAll)
        .expect("persist");
    println!(
        "index_baselines: fjall  {:.0} bytes per key on disk",
        keyspace.disk_space() as f64 / run.total as f64
    );
    time_lookups("fjall", run.total, |key| {
        partition.get(key.to_be_bytes()).expect("get").is_some()
    });
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let parent = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let total =
        env_u64("SLUICE_BENCH_BASELINE_N").unwrap_or(if full { 30_000_000 } else { 20_000 });
    let run = |name| Run {
        name,
        total,
        per_txn: env_u64("SLUICE_BENCH_BASELINE_TXN").unwrap_or(8_192).max(1),
        report_every: env_u64("SLUICE_BENCH_BASELINE_REPORT")
            .unwrap_or(if full { 1_000_000 } else { 10_000 })
            .max(1),
        stop_below: env_u64("SLUICE_BENCH_BASELINE_STOP_BELOW").map(|rate| rate as f64),
    };
    let only = std::env::var("SLUICE_BENCH_BASELINE_ONLY").ok();
    for (name, body) in [("lmdb", lmdb as fn(&Run, &Path)), ("fjall", fjall)] {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let scratch = tempfile::Builder::new()
            .prefix("sluice-bench-baseline")
            .tempdir_in(&parent)
            .expect("scratch dir");
        body(&run(name), scratch.path());
    }
}
