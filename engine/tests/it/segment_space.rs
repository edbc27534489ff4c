//! The segments layout's free space end to end (issue 17), on a small tmpfs
//! (root: CI runs as root) under `sluice serve`: a segment is allocated
//! whole (`fallocate`) when a core needs one, so the disk fills at a
//! segment's allocation, not at a record's write.
//!
//! - a segment that cannot be allocated (ENOSPC) fails its instance A711;
//!   once space returns the core allocates again by itself, without a
//!   restart;
//! - the free-space floor counts the allocation of the core's next
//!   segment: a core whose segment is nearly full refuses (A711) before an
//!   allocation would take the disk under the floor.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_tests::part10_dataset;

use crate::ingest::generated_files;
use crate::segment_ingest::sop_of;
use crate::serve::{store_statuses, Served, SmallFilesystem};

const MIB: u64 = 1024 * 1024;

/// 0xA711 (out of resources) as pynetdicom prints it.
const A711: &str = "42769";

/// `sluice serve` on the segments layout, one core, 8 MiB segments, on
/// `filesystem`, with `extra`.
pub(crate) fn serve_on(filesystem: &SmallFilesystem, extra: &[&str]) -> Served {
    let args = [
        &[
            "--storage-layout",
            "segments",
            "--segment-size-mib",
            "8",
            "--cores",
            "1",
        ][..],
        extra,
    ]
    .concat();
    Served::start_in(
        tempfile::tempdir().unwrap(),
        filesystem.path().join("data"),
        "auto",
        &args,
    )
}

/// Fills `filesystem` with a file at `path` until `left` bytes are free.
fn fill_until(filesystem: &SmallFilesystem, path: &std::path::Path, left: u64) {
    let free = filesystem.free_bytes();
    assert!(free > left, "{free} bytes free, {left} to leave");
    std::fs::write(path, vec![0u8; (free - left) as usize]).unwrap();
}

/// Each of `sent` stored, byte for byte, and nothing else.
fn assert_stored(served: &Served, sent: &[PathBuf]) {
    let stored = served.stored();
    assert_eq!(stored.len(), sent.len(), "{:?}", stored.keys());
    for file in sent {
        let sop = sop_of(file);
        let bytes = stored
            .get(&sop)
            .unwrap_or_else(|| panic!("{sop} not stored"));
        assert!(part10_dataset(bytes) == part10_dataset(&std::fs::read(file).unwrap()));
    }
}

/// The disk full when the core needs a segment: A711 (not A700: the disk
/// is full, not failing), again while it stays full, and once space is
/// freed the core allocates a segment again by itself and stores; every
/// instance answered 0000 is there byte for byte, and `sluice verify`
/// finds the store clean after a restart. On ext4, where a failed
/// `fallocate` keeps what it allocated: the failed segment's file held
/// the disk's last free blocks, and every new attempt took what was freed
/// (A711 for good, before the fix).
///
/// Both with segments prepared ahead (`storage.segment_zero_fill`, the
/// default: the preparation fails at start as the core's allocation does,
/// and the core answers A711 the same) and without.
#[test]
fn a_segment_that_cannot_be_allocated_is_allocated_once_space_returns() {
    for zero_fill in ["on", "off"] {
        a_segment_that_cannot_be_allocated_is_allocated_once_space_returns_with(zero_fill);
    }
}

fn a_segment_that_cannot_be_allocated_is_allocated_once_space_returns_with(zero_fill: &str) {
    let filesystem = SmallFilesystem::mount_ext4(40);
    let sent_dir = tempfile::tempdir().unwrap();
    let files = generated_files(sent_dir.path(), 4);
    // Less than a segment free: the core's first segment cannot be had
    // (nor prepared at start).
    fill_until(&filesystem, &filesystem.path().join("filler"), 10 * MIB);
    let small = filesystem.path().join("small");
    std::fs::write(&small, vec![0u8; 6 * MIB as usize]).unwrap();
    let served = serve_on(&filesystem, &["--segment-zero-fill", zero_fill]);
    assert_eq!(
        store_statuses(served.port, &files[..1]),
        format!("[{A711}]")
    );
    assert_eq!(
        store_statuses(served.port, &files[1..2]),
        format!("[{A711}]"),
        "still full"
    );
    // 10 MiB free again, room for a segment (with the failed attempts'
    // blocks kept, less than one); stored again without a restart (within
    // a few seconds: the core waits a while before it tries again).
    std::fs::remove_file(&small).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stored = Vec::new();
    for file in &files {
        loop {
            let status = store_statuses(served.port, std::slice::from_ref(file));
            if status == "[0]" {
                stored.push(file.clone());
                break;
            }
            assert_eq!(status, format!("[{A711}]"));
            assert!(
                Instant::now() < deadline,
                "still refused after space returned:\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_stored(&served, &stored);
    let data = served.data();
    // The failed allocations left nothing behind: one segment, whole.
    let segments: Vec<u64> = std::fs::read_dir(data.join("segments"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(segments, [8 * MIB], "{}", served.log());
    let log = crate::segment_ingest::terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(data, filesystem.path().join("data"));
    let restarted = serve_on(&filesystem, &["--segment-zero-fill", zero_fill]);
    assert_stored(&restarted, &stored);
    let log = crate::segment_ingest::terminate(restarted);
    assert!(!log.contains("ERROR"), "{log}");
    let verify = crate::operator::sluice_ok(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(verify.contains("0 missing, 0 wrong size"), "{verify}");
}

/// A 16 MiB floor, 8 MiB segments: with 20 MiB free and the core's
/// segment filling, the next segment would take the disk to 12 MiB, under
/// the floor: the instance that needs it is refused A711 before the
/// allocation, and the free space never goes under the floor. Segments
/// allocated as the core needs them (`storage.segment_zero_fill` off): with
/// it on, the core's next segment is allocated ahead (and the preparer
/// keeps to the floor itself: `scp::ingest::prepare`'s tests).
#[test]
fn the_free_space_floor_counts_the_next_segment() {
    let filesystem = SmallFilesystem::mount(48);
    let floor = 16 * MIB;
    let served = serve_on(
        &filesystem,
        &[
            "--free-space-floor",
            &floor.to_string(),
            "--segment-zero-fill",
            "off",
        ],
    );
    let sent_dir = tempfile::tempdir().unwrap();
    // 128 KiB of pixel data each: about 70 fill a segment.
    let output = sluice_tests::run(
        std::process::Command::new(sluice_tests::python())
            .arg(sluice_tests::scripts_dir().join("sluice_peer.py"))
            .args(["write", sent_dir.path().to_str().unwrap(), "90", "256"]),
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "{output:?}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(sent_dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    // The first instance allocates the core's first segment.
    assert_eq!(store_statuses(served.port, &files[..1]), "[0]");
    let filler = filesystem.path().join("filler");
    fill_until(&filesystem, &filler, floor + 4 * MIB);
    // The free-space reading is cached for 100 ms per core.
    std::thread::sleep(Duration::from_millis(300));
    let statuses = store_statuses(served.port, &files[1..]);
    let statuses: Vec<&str> = statuses
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .collect();
    let stored = statuses.iter().filter(|status| **status == "0").count();
    assert!(
        stored > 0 && statuses.iter().all(|s| *s == "0" || *s == A711),
        "{statuses:?}"
    );
    // What fit the first segment was stored, in order; then refused.
    assert!(
        statuses[..stored].iter().all(|s| *s == "0") && stored < statuses.len(),
        "the segment filled and the next was refused: {statuses:?}"
    );
    let free = filesystem.free_bytes();
    assert!(
        free >= floor,
        "free space {:.1} MiB under the floor of {} MiB",
        free as f64 / MIB as f64,
        floor / MIB
    );
    assert_stored(&served, &files[..=stored]);
    let log = served.stop();
    assert!(!log.contains("ERROR"), "{log}");
}
