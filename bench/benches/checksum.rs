//! Data set checksum: the CPU the index checksum costs per byte received.
//!
//! The engine hashes every data set byte once, as the receive-buffer slices
//! arrive (`sluice_engine::store::layout::DatasetHasher`, a thin wrapper over
//! `xxhash_rust::xxh3::Xxh3Default`). This bench feeds a 512 KiB data set (a
//! CT-like instance) in 16 KiB slices, as P-DATA fragments would arrive, to
//! - `xxh3_128`: the checksum the index records (schema version 2);
//! - `blake3`: the checksum it replaced (schema version 1), kept here only as
//!   the reference the change was measured against.
//!
//! Throughput is printed in bytes/s; the ingest budget is 0.5 s of server CPU
//! per GB for everything (issue 8), so the checksum should cost well under
//! 0.1 s/GB (above 10 GB/s). Under `cargo test --benches` criterion runs each
//! benchmark once, as a smoke test.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A CT-like instance's data set.
const DATASET_BYTES: usize = 512 * 1024;
/// One P-DATA fragment's worth of bytes, the slice the engine hashes at once.
const SLICE_BYTES: usize = 16 * 1024;

fn dataset() -> Vec<u8> {
    // Patterned, not constant, so nothing can shortcut on repeated bytes.
    (0..DATASET_BYTES as u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn checksum(criterion: &mut Criterion) {
    let dataset = dataset();
    let mut group = criterion.benchmark_group("checksum_512k_in_16k_slices");
    group.throughput(Throughput::Bytes(DATASET_BYTES as u64));
    group.bench_function("xxh3_128", |bencher| {
        bencher.iter(|| {
            let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
            for slice in black_box(&dataset).chunks(SLICE_BYTES) {
                hasher.update(slice);
            }
            hasher.digest128().to_be_bytes()
        })
    });
    group.bench_function("blake3", |bencher| {
        bencher.iter(|| {
            let mut hasher = blake3::Hasher::new();
            for slice in black_box(&dataset).chunks(SLICE_BYTES) {
                hasher.update(slice);
            }
            *hasher.finalize().as_bytes()
        })
    });
    group.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);
