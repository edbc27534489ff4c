//! Many threads store the same triplets at the same moment: exactly one wins
//! each triplet, every other submission is quarantined, nothing is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use sluice_index::{Disposition, FileId, StoreOutcome, WriteOutcome};

use crate::common::{open, store};

const THREADS: u128 = 8;
const TRIPLETS: u128 = 200;
const BATCH: usize = 10;

#[test]
fn concurrent_duplicates_store_exactly_one_per_triplet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let writer = index.writer();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                // Each thread walks the triplets from a different starting point,
                // in batches, so batches of different threads interleave and get
                // coalesced into shared transactions.
                let order: Vec<u128> = (0..TRIPLETS)
                    .map(|i| (i + thread * 37) % TRIPLETS)
                    .collect();
                barrier.wait();
                let mut outcomes = Vec::new();
                for chunk in order.chunks(BATCH) {
                    let ops = chunk
                        .iter()
                        .map(|&i| {
                            let study = format!("1.9.{}", i % 7);
                            let series = format!("{study}.{}", i % 3);
                            // Even threads send identical bytes, odd threads different ones.
                            let checksum = if thread % 2 == 0 { 0 } else { thread as u8 };
                            store(
                                &study,
                                &series,
                                &format!("{series}.{i}"),
                                (thread << 32) | i,
                                checksum,
                            )
                        })
                        .collect();
                    let results = writer.execute(ops).expect("batch committed");
                    outcomes.extend(chunk.iter().copied().zip(results));
                }
                (thread, outcomes)
            })
        })
        .collect();

    let mut winners: BTreeMap<u128, u128> = BTreeMap::new();
    let mut quarantined_files = BTreeSet::new();
    let mut answers = 0;
    for handle in handles {
        let (thread, outcomes) = handle.join().expect("thread");
        for (triplet, result) in outcomes {
            answers += 1;
            let file_id = (thread << 32) | triplet;
            match result.expect("valid item") {
                WriteOutcome::Store(StoreOutcome::Stored) => {
                    assert!(
                        winners.insert(triplet, file_id).is_none(),
                        "two winners for triplet {triplet}"
                    );
                }
                WriteOutcome::Store(
                    StoreOutcome::Duplicate(Disposition::Quarantined { .. })
                    | StoreOutcome::DuplicateIdentical(Disposition::Quarantined { .. }),
                ) => {
                    quarantined_files.insert(file_id);
                }
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    assert_eq!(answers, THREADS * TRIPLETS, "every submission was answered");
    assert_eq!(
        winners.len() as u128,
        TRIPLETS,
        "every triplet has exactly one winner"
    );
    assert_eq!(quarantined_files.len() as u128, (THREADS - 1) * TRIPLETS);

    let read = index.read().expect("read");
    for (&triplet, &file_id) in &winners {
        let study = format!("1.9.{}", triplet % 7);
        let series = format!("{study}.{}", triplet % 3);
        let record = read
            .instance(&study, &series, &format!("{series}.{triplet}"))
            .expect("get")
            .expect("stored");
        assert_eq!(
            record.file_id,
            FileId(file_id),
            "the stored file is the winner's"
        );
    }
    let quarantine = read.quarantine_entries(None, 10_000).expect("quarantine");
    let listed: BTreeSet<u128> = quarantine
        .items
        .iter()
        .map(|entry| entry.instance.record.file_id.0)
        .collect();
    assert_eq!(
        listed, quarantined_files,
        "every loser is in quarantine, once"
    );
    let report = read.check_consistency(10).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.instances as u128, TRIPLETS);
}
