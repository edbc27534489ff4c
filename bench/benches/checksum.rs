//! Data set checksum: the CPU the seal's XXH3-128 costs per byte received.
//!
//! The engine hashes every data set byte once, as the receive-buffer slices
//! arrive (`sluice_engine::store::layout::DatasetHasher`, over `twox-hash`,
//! whose SIMD kernel is picked at run time: AVX2 where the CPU has it). This
//! bench feeds a data set in the pieces the ingest path hands over (with
//! 256 KiB PDUs: a 512 KiB CT-like instance in 256 KiB pieces, a 40 KiB
//! small one in 32 KiB pieces) to
//! - `dataset_hasher`: the engine's checksum;
//! - `xxhash_rust`: the same XXH3-128 by `xxhash-rust`, the implementation
//!   the engine used before, whose kernel is picked at compile time (SSE2 in
//!   a build for the x86-64 baseline): the before of the change;
//! - `blake3` (512 KiB only): the checksum of index schema version 1, kept
//!   as the reference XXH3 was measured against.
//!
//! Throughput is printed in bytes/s; the ingest budget is 0.5 s of server CPU
//! per GB for everything (issue 8), so the checksum should cost well under
//! 0.1 s/GB (above 10 GB/s). Under `cargo test --benches` criterion runs each
//! benchmark once, as a smoke test.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_engine::store::layout::{dataset_checksum, DatasetHasher};

fn dataset(bytes: usize) -> Vec<u8> {
    // Patterned, not constant, so nothing can shortcut on repeated bytes.
    (0..bytes as u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// One group: a data set of `dataset_bytes` hashed in `piece_bytes` pieces.
fn group(criterion: &mut Criterion, name: &str, dataset_bytes: usize, piece_bytes: usize) {
    let dataset = dataset(dataset_bytes);
    assert_eq!(
        dataset_checksum(&dataset).0,
        xxhash_rust::xxh3::xxh3_128(&dataset).to_be_bytes(),
        "the two implementations agree"
    );
    let mut group = criterion.benchmark_group(name);
    group.throughput(Throughput::Bytes(dataset_bytes as u64));
    group.bench_function("dataset_hasher", |bencher| {
        bencher.iter(|| {
            let mut hasher = DatasetHasher::new();
            for piece in black_box(&dataset).chunks(piece_bytes) {
                hasher.update(piece);
            }
            hasher.finish()
        })
    });
    group.bench_function("xxhash_rust", |bencher| {
        bencher.iter(|| {
            let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
            for piece in black_box(&dataset).chunks(piece_bytes) {
                hasher.update(piece);
            }
            hasher.digest128().to_be_bytes()
        })
    });
    if dataset_bytes >= 512 * 1024 {
        group.bench_function("blake3", |bencher| {
            bencher.iter(|| {
                let mut hasher = blake3::Hasher::new();
                for piece in black_box(&dataset).chunks(piece_bytes) {
                    hasher.update(piece);
                }
                *hasher.finalize().as_bytes()
            })
        });
    }
    group.finish();
}

fn checksum(criterion: &mut Criterion) {
    group(
        criterion,
        "checksum_512k_in_256k_pieces",
        512 * 1024,
        256 * 1024,
    );
    group(
        criterion,
        "checksum_40k_in_32k_pieces",
        40 * 1024,
        32 * 1024,
    );
}

criterion_group!(benches, checksum);
criterion_main!(benches);
