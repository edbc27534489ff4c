//! Written zeros ahead of the data file's last page
//! (`IndexOptions::zero_ahead_bytes`; docs/design/segments.md, "Written
//! blocks"): the writer keeps the slack, the pages later commits add land
//! over the zeros, and LMDB opens, reads and checks a data file longer than
//! its last page, with or without the option.

use sluice_index::{Index, IndexOptions, StoreOutcome, WriteOutcome};

use crate::common::{assert_consistent, options, store};

const CHUNK: usize = 2 << 20;

fn open_with(dir: &std::path::Path, zero_ahead_bytes: usize) -> Index {
    Index::open(
        dir,
        IndexOptions {
            zero_ahead_bytes,
            ..options()
        },
    )
    .expect("open index")
}

/// Stores instances `from..to` in batches of 50.
fn store_range(index: &Index, from: u32, to: u32) {
    for start in (from..to).step_by(50) {
        let ops = (start..(start + 50).min(to))
            .map(|n| {
                store(
                    &format!("1.{}", n / 100),
                    &format!("1.{}.{}", n / 100, n / 10),
                    &format!("1.{}.{}.{n}", n / 100, n / 10),
                    u128::from(n) + 1,
                    n as u8,
                )
            })
            .collect();
        let results = index.writer().execute(ops).expect("batch");
        assert!(results.iter().all(|result| matches!(
            result,
            Ok(WriteOutcome::Store(outcome)) if *outcome == StoreOutcome::Stored
        )));
    }
    // The writer keeps the slack after a commit, before it takes the next
    // batch: an empty batch behind them returns once it did.
    index.writer().execute(Vec::new()).expect("empty batch");
}

fn slack(index: &Index) -> (u64, u64) {
    let stats = index.stats().expect("stats");
    assert!(stats.file_size_bytes >= stats.used_bytes, "{stats:?}");
    (
        stats.file_size_bytes - stats.used_bytes,
        stats.file_size_bytes,
    )
}

fn assert_all_there(index: &Index, to: u32) {
    let read = index.read().expect("read");
    for n in 0..to {
        let sop = format!("1.{}.{}.{n}", n / 100, n / 10);
        let entry = read.instance_by_sop(&sop).expect("lookup").expect(&sop);
        assert_eq!(entry.record.file_id.0, u128::from(n) + 1);
    }
}

#[test]
fn the_writer_keeps_zeros_ahead_and_lmdb_grows_over_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let index = open_with(dir.path(), CHUNK);
        store_range(&index, 0, 200);
        let (first_slack, first_size) = slack(&index);
        assert!(
            first_slack >= (CHUNK / 2) as u64,
            "{first_slack} bytes past the last page"
        );
        // Enough entries that the pages pass the first chunk's zeros.
        store_range(&index, 200, 6000);
        let (later_slack, later_size) = slack(&index);
        assert!(later_size > first_size, "the file grew: {later_size}");
        assert!(
            later_slack >= (CHUNK / 2) as u64 && later_slack <= (CHUNK + CHUNK / 2) as u64,
            "{later_slack} bytes past the last page"
        );
        assert_all_there(&index, 6000);
        assert_consistent(&index);
    }
    // Reopened without the option: opens, reads, checks, and grows as
    // before (its pages over the zeros left).
    let index = open_with(dir.path(), 0);
    assert_all_there(&index, 6000);
    assert_consistent(&index);
    store_range(&index, 6000, 6500);
    assert_all_there(&index, 6500);
    assert_consistent(&index);
    drop(index);
    let index = open_with(dir.path(), CHUNK);
    assert_all_there(&index, 6500);
    assert_consistent(&index);
}

/// Without the option the file ends within a chunk's half of its last
/// page: the slack is the option's.
#[test]
fn without_the_option_no_zeros_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open_with(dir.path(), 0);
    store_range(&index, 0, 2000);
    let (slack, _) = slack(&index);
    assert!(slack < (CHUNK / 2) as u64, "{slack}");
}
