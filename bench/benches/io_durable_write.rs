//! Speed of light for durable writes on this machine, through `sluice-io`.
//!
//! Each object is appended to its own file and made durable with
//! `fdatasync`, the cost the engine pays per instance before it may answer
//! C-STORE success (an append allocates blocks and grows the file, so the
//! sync commits metadata too, as for a newly received instance). Objects of
//! 64 KiB and 512 KiB, one at a time and in batches of 16 and 128 (group
//! commit), on io_uring and on the portable backend, plus a plain `std::fs`
//! loop as the no-runtime baseline:
//!
//! - `uring_chained` / `portable_chained`: every object of a batch gets a
//!   write with a linked `fdatasync` (`Core::write_at_and_sync`: one linked
//!   SQE pair on io_uring; write-then-sync on a helper thread on portable),
//!   all in flight at once, so the file system can commit them together.
//! - `uring_write_then_sync` / `portable_write_then_sync`: all writes of the
//!   batch first, then, once every write has completed, all syncs (two
//!   round trips: the ordering rule for unlinked operations).
//! - `std_sequential`: `write_all_at` + `sync_data` per object, one after
//!   the other, on the bench thread.
//!
//! Every file is truncated to zero (outside the timed region) before it
//! would pass `FILE_BYTES_MAX`, so every timed write is a fresh append.
//!
//! `cargo bench -p sluice-bench --bench io_durable_write` runs it in full;
//! under `cargo test` (no `--bench`) it runs a reduced set once as a smoke
//! test.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use sluice_io::{
    BackendChoice, Core, CoreSender, Event, FileHandle, Handler, IoBuf, Runtime, RuntimeConfig,
    SyncKind,
};

/// A file is truncated before it would grow past this.
const FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
const FILES: usize = 128;

fn full_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Chained,
    WriteThenSync,
}

struct Batch {
    mode: Mode,
    data: Arc<[u8]>,
    count: usize,
    offset: u64,
    done: mpsc::Sender<()>,
}

/// Writes a batch of objects (one per file, all at `offset`) and answers
/// when all are durable.
struct DurableWriter {
    paths: Vec<PathBuf>,
    files: Vec<FileHandle>,
    pending: usize,
    syncing: bool,
    current: Option<Batch>,
}

impl Handler for DurableWriter {
    type Message = Batch;

    fn on_start(&mut self, core: &mut Core) {
        for path in &self.paths {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)
                .unwrap();
            self.files.push(core.adopt_file(file.into()).unwrap());
        }
    }

    fn on_message(&mut self, core: &mut Core, batch: Batch) {
        for (index, file) in self.files.iter().take(batch.count).enumerate() {
            let bufs = vec![IoBuf::Shared(Arc::clone(&batch.data))];
            let tag = index as u64;
            match batch.mode {
                Mode::Chained => {
                    core.write_at_and_sync(*file, batch.offset, bufs, SyncKind::Data, tag)
                }
                Mode::WriteThenSync => core.write_at(*file, batch.offset, bufs, tag),
            }
            .unwrap();
        }
        self.pending = batch.count;
        self.syncing = false;
        self.current = Some(batch);
    }

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::Written { result: Ok(_), .. } | Event::Synced { result: Ok(()), .. } => {
                self.pending -= 1;
                if self.pending > 0 {
                    return;
                }
                let mode = self.current.as_ref().map(|batch| batch.mode);
                if mode == Some(Mode::WriteThenSync) && !self.syncing {
                    // Every write has completed: now the syncs cover them.
                    self.syncing = true;
                    let count = self.current.as_ref().map_or(0, |batch| batch.count);
                    for (index, file) in self.files.iter().take(count).enumerate() {
                        core.sync(*file, SyncKind::Data, index as u64).unwrap();
                    }
                    self.pending = count;
                } else if let Some(batch) = self.current.take() {
                    let _ = batch.done.send(());
                }
            }
            other => panic!("durable write failed: {other:?}"),
        }
    }
}

/// Files written by one contender, and where the next append goes.
struct Files {
    paths: Vec<PathBuf>,
    offset: u64,
}

impl Files {
    fn new(dir: &Path, prefix: &str) -> Files {
        let paths = (0..FILES)
            .map(|index| dir.join(format!("{prefix}-{index}")))
            .collect();
        Files { paths, offset: 0 }
    }

    /// The offset for the next append of `size` bytes, truncating every
    /// file first when it would grow past the maximum (not timed).
    fn next_offset(&mut self, size: u64) -> u64 {
        if self.offset + size > FILE_BYTES_MAX {
            for path in &self.paths {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
            }
            self.offset = 0;
        }
        let offset = self.offset;
        self.offset += size;
        offset
    }
}

struct Rig {
    runtime: Runtime<Batch>,
    sender: CoreSender<Batch>,
    files: Files,
}

fn start_rig(backend: BackendChoice, dir: &Path) -> Rig {
    let files = Files::new(dir, &format!("{backend:?}").to_lowercase());
    let paths = files.paths.clone();
    let config = RuntimeConfig {
        core_count: 1,
        backend,
        pin_threads: false,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::start(config, move |_| DurableWriter {
        paths: paths.clone(),
        files: Vec::new(),
        pending: 0,
        syncing: false,
        current: None,
    })
    .expect("runtime starts");
    let sender = runtime.handle().sender(0).unwrap();
    Rig {
        runtime,
        sender,
        files,
    }
}

/// Times `iterations` batches through the runtime.
fn time_batches(
    rig: &mut Rig,
    mode: Mode,
    data: &Arc<[u8]>,
    count: usize,
    iterations: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        let offset = rig.files.next_offset(data.len() as u64);
        let (done, finished) = mpsc::channel();
        let batch = Batch {
            mode,
            data: Arc::clone(data),
            count,
            offset,
            done,
        };
        let started = Instant::now();
        if rig.sender.try_send(batch).is_err() {
            panic!("core mailbox refused the batch");
        }
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("batch completes");
        total += started.elapsed();
    }
    total
}

fn durable_writes(criterion: &mut Criterion) {
    let full = full_run();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let mut uring = start_rig(BackendChoice::Uring, dir.path());
    let mut portable = start_rig(BackendChoice::Portable, dir.path());
    let mut std_files = Files::new(dir.path(), "std");
    let std_handles: Vec<std::fs::File> = std_files
        .paths
        .iter()
        .map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)
                .unwrap()
        })
        .collect();

    let sizes: &[usize] = if full {
        &[64 * 1024, 512 * 1024]
    } else {
        &[64 * 1024]
    };
    let batches: &[usize] = if full { &[1, 16, 128] } else { &[1, 16] };
    for &size in sizes {
        let data: Arc<[u8]> = (0..size)
            .map(|index| (index % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut group = criterion.benchmark_group(format!("durable_write/{}KiB", size / 1024));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for &count in batches {
            group.throughput(Throughput::Elements(count as u64));
            let contenders = [
                ("uring_chained", &mut uring, Mode::Chained),
                ("portable_chained", &mut portable, Mode::Chained),
            ];
            for (name, rig, mode) in contenders {
                group.bench_with_input(BenchmarkId::new(name, count), &count, |bencher, &count| {
                    bencher
                        .iter_custom(|iterations| time_batches(rig, mode, &data, count, iterations))
                });
            }
            if count > 1 {
                let contenders = [
                    ("uring_write_then_sync", &mut uring, Mode::WriteThenSync),
                    (
                        "portable_write_then_sync",
                        &mut portable,
                        Mode::WriteThenSync,
                    ),
                ];
                for (name, rig, mode) in contenders {
                    group.bench_with_input(
                        BenchmarkId::new(name, count),
                        &count,
                        |bencher, &count| {
                            bencher.iter_custom(|iterations| {
                                time_batches(rig, mode, &data, count, iterations)
                            })
                        },
                    );
                }
            }
            group.bench_with_input(
                BenchmarkId::new("std_sequential", count),
                &count,
                |bencher, &count| {
                    bencher.iter_custom(|iterations| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iterations {
                            let offset = std_files.next_offset(size as u64);
                            let started = Instant::now();
                            for file in std_handles.iter().take(count) {
                                file.write_all_at(&data, offset).unwrap();
                                file.sync_data().unwrap();
                            }
                            total += started.elapsed();
                        }
                        total
                    })
                },
            );
        }
        group.finish();
    }
    uring
        .runtime
        .shutdown_and_join(Duration::from_secs(30))
        .unwrap();
    portable
        .runtime
        .shutdown_and_join(Duration::from_secs(30))
        .unwrap();
}

criterion_group!(benches, durable_writes);
criterion_main!(benches);
