//! A full disk under the SOP Instance UID index (fjall): the write or flush
//! that runs out of space poisons the tree, and fjall refuses every later
//! write until it is reopened. The writer must answer the batches it cannot
//! keep as a full disk (out of resources) and reopen the tree by itself once
//! space returns, losing nothing it acknowledged.
//!
//! A small tmpfs (root: CI runs as root) holds the index; a filler file
//! takes every free byte, so the tree's next journal flush fails.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_index::{Index, IndexError, IndexOptions, WriteOp, SOP_INDEX_TABLE_NAME};

use crate::common::store;

/// A tmpfs of `size_mib`, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m"),
                "sluice-test",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xA5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling: {error}"),
        }
    }
    // The last pages of a tmpfs: bytes one by one.
    while file.write(&[0]).is_ok_and(|written| written == 1) {}
}

fn stores(batch: u32, count: u32) -> Vec<WriteOp> {
    (0..count)
        .map(|i| {
            let study = format!("1.2.840.99998.{batch}");
            let series = format!("{study}.1");
            store(
                &study,
                &series,
                &format!("{series}.{i}"),
                u128::from(batch * 1000 + i + 1),
                1,
            )
        })
        .collect()
}

/// Bytes of the SOP index's tree (0 while this process does not own it).
fn sop_index_bytes(index: &Index) -> u64 {
    index
        .stats()
        .expect("stats")
        .tables
        .iter()
        .find(|table| table.name == SOP_INDEX_TABLE_NAME)
        .expect("the SOP index's stats")
        .bytes
}

fn sop(batch: u32, i: u32) -> String {
    format!("1.2.840.99998.{batch}.1.{i}")
}

#[test]
fn a_full_disk_under_the_sop_index_is_out_of_resources_and_the_index_recovers() {
    let fs = Tmpfs::mount(24);
    let index_dir = fs.0.path().join("index");
    let options = IndexOptions {
        map_size_bytes: 16 << 20,
        ..crate::common::options()
    };
    let index = Index::open(&index_dir, options).expect("open");
    let writer = index.writer();
    // Acknowledged before the disk fills.
    let mut acknowledged = Vec::new();
    for batch in 0..20 {
        let results = writer
            .execute(stores(batch, 20))
            .expect("store before the fill");
        assert!(results.iter().all(Result::is_ok));
        acknowledged.push(batch);
    }

    let filler = fs.0.path().join("filler");
    fill(&filler);
    // Stores until the tree has failed a flush (the syncer flushes it about
    // once a second): every failure is a full disk, never anything else.
    let mut next = 100;
    let mut failures = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        match writer.execute(stores(next, 20)) {
            Ok(results) => {
                assert!(results.iter().all(Result::is_ok));
                acknowledged.push(next);
            }
            Err(error) => {
                assert!(
                    matches!(error, IndexError::DiskFull { .. }) && error.is_out_of_resources(),
                    "a full disk must be out of resources: {error:?}"
                );
                failures += 1;
            }
        }
        next += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(failures > 0, "the full disk failed no store");

    // Space returns: stores go through again, without a reopen of the index.
    std::fs::remove_file(&filler).expect("remove filler");
    let started = Instant::now();
    let first_after = next;
    loop {
        match writer.execute(stores(next, 20)) {
            Ok(results) => {
                assert!(results.iter().all(Result::is_ok));
                acknowledged.push(next);
                next += 1;
                if next >= first_after + 5 {
                    break;
                }
            }
            Err(error) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "stores still fail 10 s after space returned: {error:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The writer has reopened the tree (a process without it reports it
    // empty).
    let started = Instant::now();
    while sop_index_bytes(&index) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the SOP index was not reopened 10 s after space returned"
        );
        // An empty transaction's worth of waiting: the writer retries when
        // idle, at least once a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    let results = writer
        .execute(stores(next, 20))
        .expect("store after the reopen");
    assert!(results.iter().all(Result::is_ok));
    acknowledged.push(next);
    // The SOP index names every instance acknowledged, none twice.
    let check = |index: &Index| {
        let read = index.read().expect("read");
        for &batch in &acknowledged {
            for i in 0..20 {
                assert!(
                    read.instance_by_sop(&sop(batch, i))
                        .expect("by sop")
                        .is_some(),
                    "{} lost",
                    sop(batch, i)
                );
            }
        }
        drop(read);
        crate::common::assert_consistent(index);
    };
    check(&index);
    let report = crate::common::assert_consistent(&index);
    assert_eq!(report.instances, acknowledged.len() as u64 * 20);
    drop(writer);
    drop(index);

    // And after a reopen.
    let index = Index::open(&index_dir, options).expect("reopen");
    check(&index);
}
