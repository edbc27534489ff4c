//! Group commit on a segment, two ways (issue 17: "fdatasync on
//! preallocated extents, or RWF_DSYNC/FUA writes where the device honours
//! them - measure both"):
//!
//! - `fdatasync`: `group` threads each write one record with `O_DIRECT` at
//!   its own place (concurrently, as a core's ring does), then one
//!   `fdatasync` of the segment covers them all (what `sluice serve` does:
//!   one flush per batch per segment);
//! - `dsync`: the same writes with `RWF_DSYNC` (`pwritev2`), each durable on
//!   its own (a FUA write where the device honours FUA, else the kernel's
//!   write and cache flush per write), and no flush after.
//!
//! Records are written into a preallocated segment made by Sluice's own
//! writer (`SegmentWriter::create`: `fallocate`, `O_DIRECT`), one round after
//! the other, the two modes interleaved round by round so that drift on a
//! shared machine falls on both. Prints one JSON line per mode: records/s,
//! MB/s and the round's latency (first write submitted to the group
//! durable) p50/p99.
//!
//!
//! With `--prepared` the two modes are instead the segment's preparation
//! (docs/design/segments.md, "Written blocks"), both `fdatasync` per
//! round, each round on blocks not written since the segment was made
//! (the segments hold every round: no wrapping):
//!
//! - `fallocated`: a segment made by `SegmentWriter::create` (ext4 leaves
//!   its extents unwritten: each flush also commits the journal, for the
//!   extents the round's writes converted);
//! - `prepared`: one made by `SegmentWriter::create_zeroed` (every block
//!   written with zeros and flushed first: the flush has no metadata).
//!
//! ```text
//! flush_modes <dir> <record KiB> <group> <rounds per mode> [--prepared]
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sluice_engine::store::segment::{AlignedBuf, SegmentWriter};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Fdatasync,
    Dsync,
    Fallocated,
    Prepared,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fdatasync => "write+fdatasync",
            Mode::Dsync => "RWF_DSYNC",
            Mode::Fallocated => "fallocated+fdatasync",
            Mode::Prepared => "prepared+fdatasync",
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prepared = args.get(5).is_some_and(|flag| flag == "--prepared");
    let args = &args[..args.len().min(5)];
    let parsed = match args {
        [_, dir, kib, group, rounds] => {
            match (
                kib.parse::<usize>(),
                group.parse::<usize>(),
                rounds.parse::<usize>(),
            ) {
                (Ok(kib), Ok(group), Ok(rounds)) if kib > 0 && group > 0 && rounds > 0 => {
                    Ok((Path::new(dir), kib * 1024, group, rounds))
                }
                _ => Err("record KiB, group and rounds must be positive numbers".to_owned()),
            }
        }
        _ => Err(
            "usage: flush_modes <dir> <record KiB> <group> <rounds per mode> [--prepared]"
                .to_owned(),
        ),
    };
    let modes = if prepared {
        [Mode::Fallocated, Mode::Prepared]
    } else {
        [Mode::Fdatasync, Mode::Dsync]
    };
    match parsed.and_then(|(dir, bytes, group, rounds)| run(dir, bytes, group, rounds, modes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flush_modes: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    dir: &Path,
    record_bytes: usize,
    group: usize,
    rounds: usize,
    modes: [Mode; 2],
) -> Result<(), String> {
    let record_bytes = record_bytes.next_multiple_of(4096);
    let round_bytes = (record_bytes * group) as u64;
    // Fresh blocks every round (the preparation modes: every round in
    // the segment), else room for 64 rounds, offsets wrapping (the blocks
    // stay allocated).
    let fresh = modes.contains(&Mode::Prepared);
    let wrap = if fresh { rounds as u64 } else { 64 };
    let segment_bytes = (round_bytes * wrap).max(1 << 20);
    let mut paths = Vec::new();
    let mut files = Vec::new();
    for mode in modes {
        let path = dir.join(format!("flush-modes-{:?}.seg", mode).to_lowercase());
        let _ = std::fs::remove_file(&path);
        let writer = if mode == Mode::Prepared {
            SegmentWriter::create_zeroed(&path, segment_bytes, &|| false)
        } else {
            SegmentWriter::create(&path, segment_bytes)
        }
        .map_err(|error| format!("{}: {error}", path.display()))?;
        if !writer.is_direct() {
            return Err(format!(
                "{}: the file system refuses O_DIRECT",
                dir.display()
            ));
        }
        files.push(Arc::new(
            writer.try_clone_file().map_err(|error| error.to_string())?,
        ));
        paths.push(path);
        if !fresh {
            // One segment for both modes, as before.
            files.push(Arc::clone(&files[0]));
            break;
        }
    }
    let files = Arc::new(files);
    // Every thread waits here before a round and after its writes.
    let start = Arc::new(Barrier::new(group + 1));
    let written = Arc::new(Barrier::new(group + 1));
    let plan: Vec<Mode> = (0..rounds * 2).map(|round| modes[round % 2]).collect();
    let plan = Arc::new(plan);
    let workers: Vec<_> = (0..group)
        .map(|index| {
            let (files, start, written, plan) = (
                Arc::clone(&files),
                Arc::clone(&start),
                Arc::clone(&written),
                Arc::clone(&plan),
            );
            std::thread::spawn(move || -> Result<(), String> {
                let mut record = AlignedBuf::zeroed(record_bytes);
                record.as_mut_slice().fill(index as u8 | 0x80);
                for (round, mode) in plan.iter().enumerate() {
                    start.wait();
                    let slot = round / 2;
                    let offset = (slot as u64 % wrap) * round_bytes + (index * record_bytes) as u64;
                    let file = &files[round % 2];
                    let result = write(file, *mode, &record, offset);
                    written.wait();
                    result?;
                }
                Ok(())
            })
        })
        .collect();
    let mut latencies = [Vec::new(), Vec::new()];
    for (round, mode) in plan.iter().enumerate() {
        let began = Instant::now();
        start.wait();
        written.wait();
        if *mode != Mode::Dsync {
            files[round % 2]
                .sync_data()
                .map_err(|error| format!("fdatasync: {error}"))?;
        }
        latencies[round % 2].push(began.elapsed());
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a writer thread panicked".to_owned())??;
    }
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    for (mode, mut latencies) in modes.into_iter().zip(latencies) {
        let seconds: f64 = latencies.iter().map(Duration::as_secs_f64).sum();
        latencies.sort();
        let percentile = |fraction: f64| {
            let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
            latencies
                .get(index.min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
        };
        let records = (latencies.len() * group) as f64;
        println!(
            "{{\"mode\": \"{}\", \"record_bytes\": {record_bytes}, \"group\": {group}, \
             \"rounds\": {}, \"records_per_s\": {:.0}, \"mb_per_s\": {:.1}, \
             \"round_ms_p50\": {:.2}, \"round_ms_p99\": {:.2}}}",
            mode.name(),
            latencies.len(),
            records / seconds,
            records * record_bytes as f64 / seconds / 1e6,
            percentile(0.5),
            percentile(0.99),
        );
    }
    Ok(())
}

fn write(file: &File, mode: Mode, record: &AlignedBuf, offset: u64) -> Result<(), String> {
    match mode {
        Mode::Fdatasync | Mode::Fallocated | Mode::Prepared => file
            .write_all_at(record.as_slice(), offset)
            .map_err(|error| format!("write: {error}")),
        Mode::Dsync => {
            let slice = [std::io::IoSlice::new(record.as_slice())];
            let written =
                rustix::io::pwritev2(file, &slice, offset, rustix::io::ReadWriteFlags::DSYNC)
                    .map_err(|error| format!("pwritev2(RWF_DSYNC): {error}"))?;
            if written != record.len() {
                return Err(format!(
                    "short RWF_DSYNC write: {written} of {}",
                    record.len()
                ));
            }
            Ok(())
        }
    }
}
