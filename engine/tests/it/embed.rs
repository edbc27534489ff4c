//! The embedding API in-process: `Store::open`, `Server::start_with`,
//! events, lookups, reading bytes back; and the io fault seam (EIO on a
//! file fsync or a directory fsync) driving the durability failure path,
//! and counting the directory fsyncs concurrent instances share.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sluice_engine::config::Config;
use sluice_engine::scp::{ServeOptions, Server};
use sluice_engine::store::{Store, StoreEvent};
use sluice_io::{Fault, FaultPlan, OpKind};
use sluice_tests::{dcmtk, free_port, part10_dataset, part10_meta_value, python, run, scripts_dir};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Pinned to files where the test's subject is the files layout's fsyncs,
/// directories and seals.
const FILES: Option<&str> = Some("files");

/// The embedding API's configuration: the default layout unless `layout`
/// names one.
fn config(data: &std::path::Path, port: u16, backend: &str, layout: Option<&str>) -> Config {
    let layout = layout.map_or(vec![], |layout| vec!["--storage-layout", layout]);
    Config::from_args(
        [
            "sluice",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cores",
            "1",
            "--io-backend",
            backend,
            "--free-space-floor",
            "0",
            "--segment-size-mib",
            crate::serve::TEST_SEGMENT_MIB,
        ]
        .into_iter()
        .chain(layout),
    )
    .unwrap()
}

fn generated_files(dir: &std::path::Path, count: usize) -> Vec<PathBuf> {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("sluice_peer.py"))
            .args(["write", dir.to_str().unwrap(), &count.to_string()]),
        TIMEOUT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "dcm"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), count);
    paths
}

fn sop_of(path: &std::path::Path) -> String {
    part10_meta_value(&std::fs::read(path).unwrap(), 0x0002, 0x0003)
}

/// What examples/embed.rs does, checked: an in-process server, DCMTK
/// storescu sends, the subscriber sees Stored, the bytes read back are the
/// Part 10 file whose data set is the one sent.
#[test]
fn embedded_store_events_lookup_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = Store::open(config(&dir.path().join("data"), port, "auto", None)).unwrap();
    let events = store.subscribe(16).unwrap();
    let server = Server::start(&store).unwrap();
    assert_eq!(server.local_addr().map(|addr| addr.port()), Some(port));

    let sent_dir = tempfile::tempdir().unwrap();
    let file = generated_files(sent_dir.path(), 1).remove(0);
    let output = run(
        Command::new(dcmtk("storescu"))
            .args([
                "-aec",
                "SLUICE",
                "-aet",
                "EMBEDDER",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg(&file)
            .env("TCP_NODELAY", "1"),
        TIMEOUT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let event = events.receiver().recv_timeout(TIMEOUT).expect("an event");
    let sop = sop_of(&file);
    let StoreEvent::Stored { triplet, record } = event else {
        panic!("expected Stored, got {event:?}");
    };
    assert_eq!(triplet.sop_instance_uid, sop);
    assert_eq!(record.calling_ae_title, "EMBEDDER");
    assert_eq!(events.lost_count(), 0);

    let entry = store.instance_by_sop(&sop).unwrap().expect("indexed");
    assert_eq!(entry.triplet, triplet);
    assert_eq!(store.instance(&triplet).unwrap(), Some(record.clone()));
    let bytes = store.read_instance(&sop).unwrap().expect("readable");
    assert_eq!(bytes.len() as u64, record.file_size_bytes);
    let sent = std::fs::read(&file).unwrap();
    assert_eq!(part10_dataset(&bytes), part10_dataset(&sent));
    assert_eq!(store.read_instance("1.2.3.4.404").unwrap(), None);
    server.shutdown(Duration::from_secs(10)).unwrap();
}

/// EIO on the `nth` sync: that instance fails with A700, nothing is
/// indexed or left on disk for it, and the next one is stored. The first
/// sync of an instance is its file's fdatasync (submitted on the rename),
/// the second its directory's fsync (submitted once the directory opens).
fn eio_on_fsync(backend: &str, nth: u64) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let store = Store::open(config(&data, port, backend, FILES)).unwrap();
    let events = store.subscribe(16).unwrap();
    let plan = FaultPlan::new().fail_nth(OpKind::Sync, nth, Fault::Errno(libc_eio()));
    let observed_plan = plan.clone();
    let server = Server::start_with(
        &store,
        ServeOptions {
            adjust_runtime: Some(Box::new(move |runtime| runtime.fault_plan = Some(plan))),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    let sent_dir = tempfile::tempdir().unwrap();
    let files = generated_files(sent_dir.path(), 2);
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("pynetdicom_scu.py"))
            .args([&port.to_string(), "SLUICE", "FAULTY", "store"])
            .args(&files),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    // 0xA700 = 42752.
    assert!(
        stdout.contains("\"statuses\": [42752, 0]"),
        "{backend}: {stdout}"
    );
    assert_eq!(observed_plan.injected().len(), 1);

    let (failed, stored) = (sop_of(&files[0]), sop_of(&files[1]));
    assert!(store.instance_by_sop(&failed).unwrap().is_none());
    assert!(store.instance_by_sop(&stored).unwrap().is_some());
    let first = events.receiver().recv_timeout(TIMEOUT).unwrap();
    assert!(
        matches!(&first, StoreEvent::Rejected { sop_instance_uid, status: 0xA700, .. } if *sop_instance_uid == failed),
        "{first:?}"
    );
    let second = events.receiver().recv_timeout(TIMEOUT).unwrap();
    assert!(matches!(second, StoreEvent::Stored { .. }), "{second:?}");
    server.shutdown(Duration::from_secs(10)).unwrap();
    // Both entries were committed in doubt while their syncs ran: the failed
    // one was removed again, the stored one's mark cleared by the shutdown.
    assert!(store.index().read().unwrap().in_doubt().unwrap().is_empty());
    assert!(store
        .index()
        .read()
        .unwrap()
        .check_consistency(10)
        .unwrap()
        .is_consistent());
    // Only the stored instance's file exists anywhere in the data directory.
    let mut files_on_disk = Vec::new();
    let mut stack = vec![
        data.join("objects"),
        data.join("tmp"),
        data.join("quarantine"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files_on_disk.push(path);
            }
        }
    }
    assert_eq!(files_on_disk.len(), 1, "{files_on_disk:?}");
    assert_eq!(sop_of(&files_on_disk[0]), stored);
    assert!(!store.is_refusing());
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn uring_eio_on_file_fsync_fails_that_instance_only() {
    eio_on_fsync("uring", 1);
}

#[test]
fn portable_eio_on_file_fsync_fails_that_instance_only() {
    eio_on_fsync("portable", 1);
}

#[test]
fn uring_eio_on_directory_fsync_fails_that_instance_only() {
    eio_on_fsync("uring", 2);
}

#[test]
fn portable_eio_on_directory_fsync_fails_that_instance_only() {
    eio_on_fsync("portable", 2);
}

/// Concurrent instances renamed into one fan-out directory share its
/// fsync: with 16 associations storing at once, the syncs submitted are
/// fewer than one file fdatasync plus one directory fsync per instance.
/// (Every file still gets its own fdatasync.)
#[test]
fn concurrent_instances_share_directory_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let store = Store::open(config(&data, port, "uring", FILES)).unwrap();
    let plan = FaultPlan::new();
    let observed_plan = plan.clone();
    let server = Server::start_with(
        &store,
        ServeOptions {
            adjust_runtime: Some(Box::new(move |runtime| runtime.fault_plan = Some(plan))),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    let sent_dir = tempfile::tempdir().unwrap();
    let (associations, per_association) = (16u64, 10u64);
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("sluice_peer.py"))
            .args([
                "concurrent",
                &port.to_string(),
                "SLUICE",
                &associations.to_string(),
                &per_association.to_string(),
                sent_dir.path().to_str().unwrap(),
            ]),
        TIMEOUT,
    );
    let instances = associations * per_association;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("\"statuses\": {{\"0000\": {instances}}}")),
        "{stdout}"
    );
    server.shutdown(Duration::from_secs(10)).unwrap();
    let syncs = observed_plan.operations_seen(OpKind::Sync);
    let directory_syncs = syncs.saturating_sub(instances);
    assert!(
        directory_syncs >= 1 && directory_syncs < instances,
        "{syncs} syncs for {instances} instances"
    );
    eprintln!("{instances} instances: {directory_syncs} directory fsyncs");
}

/// Sends `files` with pynetdicom's SCU and checks every answer is 0000.
fn store_all(port: u16, files: &[PathBuf]) {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("pynetdicom_scu.py"))
            .args([&port.to_string(), "SLUICE", "LOSTCOMMIT", "store"])
            .args(files),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let zeros = vec!["0"; files.len()].join(", ");
    assert!(
        stdout.contains(&format!("\"statuses\": [{zeros}]")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The index answers C-STORE batches at commit, before the flush that
/// makes the commit durable, so a crash may take the entries of answered
/// instances. This puts a data directory in that state (the index files
/// from before the last three instances, their files in place) and checks
/// that start-up recovery indexes the three again from their sealed files:
/// every instance is found, its bytes read back as sent, and the index is
/// consistent.
#[test]
fn answered_instances_whose_commit_was_lost_are_indexed_again_from_their_seals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sent_dir = tempfile::tempdir().unwrap();
    let files = generated_files(sent_dir.path(), 6);
    let snapshot = dir.path().join("index-before");
    for (round, batch) in files.chunks(3).enumerate() {
        let port = free_port();
        let store = Store::open(config(&data, port, "auto", FILES)).unwrap();
        let server = Server::start(&store).unwrap();
        store_all(port, batch);
        server.shutdown(Duration::from_secs(10)).unwrap();
        drop(store);
        if round == 0 {
            std::fs::create_dir_all(&snapshot).unwrap();
            for name in ["data.mdb", "lock.mdb"] {
                std::fs::copy(data.join("index").join(name), snapshot.join(name)).unwrap();
            }
        }
    }
    // The crash: the commits of the last three are gone, their files not.
    for name in ["data.mdb", "lock.mdb"] {
        std::fs::copy(snapshot.join(name), data.join("index").join(name)).unwrap();
    }
    let lost: Vec<String> = files[3..].iter().map(|file| sop_of(file)).collect();
    {
        let store = Store::open(config(&data, free_port(), "auto", FILES)).unwrap();
        for sop in &lost {
            assert!(store.instance_by_sop(sop).unwrap().is_none(), "{sop}");
        }
    }

    let port = free_port();
    let store = Store::open(config(&data, port, "auto", FILES)).unwrap();
    let server = Server::start(&store).unwrap();
    for file in &files {
        let sop = sop_of(file);
        let entry = store.instance_by_sop(&sop).unwrap();
        assert!(entry.is_some(), "{sop} not indexed after recovery");
        let bytes = store.read_instance(&sop).unwrap().expect("readable");
        assert_eq!(
            part10_dataset(&bytes),
            part10_dataset(&std::fs::read(file).unwrap()),
            "{sop}"
        );
    }
    let record = store.instance_by_sop(&lost[0]).unwrap().unwrap().record;
    assert_eq!(record.calling_ae_title, "LOSTCOMMIT");
    let read = store.index().read().unwrap();
    assert!(read.check_consistency(10).unwrap().is_consistent());
    assert!(read.in_doubt().unwrap().is_empty());
    drop(read);
    let orphans = std::fs::read_dir(data.join("orphans"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(orphans, 0, "nothing goes to orphans/");
    server.shutdown(Duration::from_secs(10)).unwrap();
}
