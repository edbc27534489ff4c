//! Capacity failures come out as their own errors and leave the index usable.

use sluice_index::{Index, IndexError, IndexOptions, StudyQuery, WriteOp};

use crate::common::store;

#[test]
fn map_full_is_a_specific_error_and_nothing_of_the_batch_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = IndexOptions {
        map_size_bytes: 1 << 20,
        ..crate::common::options()
    };
    let index = Index::open(dir.path(), options).expect("open");
    let writer = index.writer();
    let mut committed_batches = 0u32;
    let mut failure = None;
    for batch in 0..1_000u32 {
        let ops: Vec<WriteOp> = (0..50u32)
            .map(|i| {
                let study = format!("1.2.840.99999.{batch}");
                let series = format!("{study}.1");
                let sop = format!("{series}.{i}");
                store(&study, &series, &sop, u128::from(batch * 100 + i), 1)
            })
            .collect();
        match writer.execute(ops) {
            Ok(results) => {
                assert!(results.iter().all(Result::is_ok));
                committed_batches += 1;
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let failure = failure.expect("a 1 MiB map must fill up");
    assert!(
        matches!(failure, IndexError::MapFull { map_size_bytes } if map_size_bytes == 1 << 20),
        "{failure:?}"
    );
    assert!(failure.is_out_of_resources());
    assert!(
        committed_batches > 0,
        "some batches fit before the map filled"
    );

    // The failed batch left nothing behind; earlier ones are intact; reads work.
    let read = index.read().expect("read");
    let studies = read
        .query_studies(&StudyQuery::default(), 10_000)
        .expect("query");
    assert_eq!(studies.items.len() as u32, committed_batches);
    assert!(read
        .study(&format!("1.2.840.99999.{committed_batches}"))
        .expect("study")
        .is_none());
    let report = read.check_consistency(10).expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.instances, u64::from(committed_batches) * 50);
    drop(read);

    // Deleting still works (it frees pages for later writes).
    let results = writer
        .execute(vec![WriteOp::Remove(sluice_index::Triplet::new(
            "1.2.840.99999.0",
            "1.2.840.99999.0.1",
            "1.2.840.99999.0.1.0",
        ))])
        .expect("a small write after map full");
    assert!(matches!(
        results[0],
        Ok(sluice_index::WriteOutcome::Removed(Some(_)))
    ));
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    for options in [
        IndexOptions {
            map_size_bytes: 4096,
            ..IndexOptions::default()
        },
        IndexOptions {
            max_readers: 0,
            ..IndexOptions::default()
        },
        IndexOptions {
            writer_queue_batches: 0,
            ..IndexOptions::default()
        },
        IndexOptions {
            batch_ops_max: 0,
            ..IndexOptions::default()
        },
    ] {
        let error = Index::open(dir.path(), options).expect_err("must refuse");
        assert!(
            matches!(error, IndexError::InvalidOptions { .. }),
            "{error:?}"
        );
    }
}
