//! `sluice serve` on the segments layout (docs/design/segments.md): a real
//! server process fed by DCMTK storescu and pynetdicom; what it stored is
//! read back through the embedding API and the operator commands.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sluice_engine::config::Config;
use sluice_engine::store::Store;
use sluice_index::Location;
use sluice_tests::{dcmtk, part10_dataset, part10_meta_value, python, run, scripts_dir};

use crate::ingest::generated_files;
use crate::operator::sluice_ok;
use crate::serve::Served;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The segments layout, one core, 1 MiB segments (small, so a run fills
/// and seals some).
pub(crate) const SEGMENTS: [&str; 6] = [
    "--storage-layout",
    "segments",
    "--segment-size-mib",
    "1",
    "--cores",
    "1",
];

/// A data directory that outlives the servers started on it.
pub(crate) fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data");
    (shared, data)
}

/// `sluice serve` (io_uring) on `data` with `args` (its log in a
/// directory of its own).
pub(crate) fn serve_on(data: &Path, args: &[&str]) -> Served {
    Served::start_in(tempfile::tempdir().unwrap(), data.to_owned(), "uring", args)
}

pub(crate) fn storescu(port: u16, files: &[PathBuf]) {
    let output = run(
        Command::new(dcmtk("storescu"))
            .args([
                "-aec",
                "SLUICE",
                "-aet",
                "SEGSCU",
                "127.0.0.1",
                &port.to_string(),
            ])
            .args(files),
        TIMEOUT,
    );
    assert!(output.status.success(), "storescu: {output:?}");
}

/// Stores `files` on one pynetdicom association; its output.
pub(crate) fn pynetdicom_store(port: u16, files: &[PathBuf]) -> String {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("pynetdicom_scu.py"))
            .args([&port.to_string(), "SLUICE", "SEGPY", "store"])
            .args(files),
        TIMEOUT,
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stops the server as an operator does (SIGTERM: it drains and clears
/// its in-doubt marks), waits for it to exit, and returns its log.
pub(crate) fn terminate(served: Served) -> String {
    let pid = served.pid().to_string();
    let output = run(Command::new("kill").args(["-TERM", &pid]), TIMEOUT);
    assert!(output.status.success(), "kill: {output:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for the guard's reap.
        if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sluice serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    served.stop()
}

fn store_of(data: &Path) -> Store {
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        data.to_str().unwrap(),
        "--storage-layout",
        "segments",
    ])
    .unwrap();
    Store::open(config).unwrap()
}

pub(crate) fn sop_of(file: &Path) -> String {
    part10_meta_value(&std::fs::read(file).unwrap(), 0x0002, 0x0003)
}

/// Every file sent is stored as a record: read back byte-exact (its data
/// set), its index location a record in a segment file; the segment files
/// are `segments/<16 hex>.seg`.
fn assert_records(store: &Store, files: &[PathBuf]) -> Vec<u64> {
    let mut segments = Vec::new();
    let read = store.index().read().unwrap();
    for file in files {
        let sop = sop_of(file);
        let entry = store
            .instance_by_sop(&sop)
            .unwrap()
            .unwrap_or_else(|| panic!("{sop} not stored"));
        match read.location(entry.record.file_id).unwrap() {
            Location::Record(place) => {
                assert!(
                    store.layout().segment_path(place.segment).is_file(),
                    "segment {} of {sop}",
                    place.segment
                );
                segments.push(place.segment);
            }
            Location::File => panic!("{sop} stored as a file"),
        }
        let bytes = store.read_instance(&sop).unwrap().expect("readable");
        assert_eq!(
            part10_dataset(&bytes),
            part10_dataset(&std::fs::read(file).unwrap()),
            "{sop}"
        );
    }
    segments.sort_unstable();
    segments.dedup();
    segments
}

/// Records byte-exact over two runs of `sluice serve`: the first run's
/// segments fill and are sealed; the second starts a new segment past every
/// id of the first and the first run's records stay readable; `sluice
/// verify` finds everything clean, and nothing is left in `objects/`.
#[test]
fn instances_are_stored_as_records_byte_exact_across_restarts() {
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 60);
    let (first, second) = files.split_at(40);
    let (_shared, data) = data_dir();
    let served = serve_on(&data, &SEGMENTS);
    storescu(served.port, first);
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    let store = store_of(&data);
    let first_segments = assert_records(&store, first);
    let total: u64 = first
        .iter()
        .map(|file| std::fs::metadata(file).unwrap().len())
        .sum();
    if total > 1 << 20 {
        assert!(
            first_segments.len() > 1,
            "{total} bytes in one 1 MiB segment"
        );
    }
    // Every full segment is sealed in the index.
    let states = store.index().read().unwrap().segments().unwrap();
    let sealed = states.iter().filter(|(_, state)| state.sealed).count();
    assert!(
        sealed + 1 >= first_segments.len(),
        "segments {first_segments:?}, states {states:?}"
    );
    drop(store);

    let served = serve_on(&data, &SEGMENTS);
    let out = pynetdicom_store(served.port, second);
    assert!(
        out.contains(&format!(
            "\"statuses\": [{}]",
            vec!["0"; second.len()].join(", ")
        )),
        "{out}"
    );
    terminate(served);
    let store = store_of(&data);
    let second_segments = assert_records(&store, second);
    let first_max = *first_segments.last().unwrap();
    assert!(
        second_segments.iter().all(|&id| id > first_max),
        "a restart starts new segments: {first_segments:?} then {second_segments:?}"
    );
    assert_records(&store, first);
    drop(store);
    let objects = std::fs::read_dir(data.join("objects"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(objects, 0, "no instance stored as a file");
    let output = sluice_ok(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(output.contains("60"), "{output}");
}

/// The segment files in `data`, with whether the index has a row for
/// each.
fn segment_files(data: &Path) -> Vec<(PathBuf, bool)> {
    let store = store_of(data);
    let rows: Vec<u64> = store
        .index()
        .read()
        .unwrap()
        .segments()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut files: Vec<(PathBuf, bool)> = std::fs::read_dir(data.join("segments"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap();
            (path, rows.contains(&id))
        })
        .collect();
    files.sort();
    files
}

/// Whether `filefrag -v` lists an unwritten extent of `path` (blocks
/// allocated by `fallocate` and never written).
fn has_unwritten_extents(path: &Path) -> bool {
    let output = run(Command::new("filefrag").arg("-v").arg(path), TIMEOUT);
    assert!(output.status.success(), "filefrag: {output:?}");
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(listing.contains("ext:"), "{listing}");
    listing.contains("unwritten")
}

/// `storage.segment_zero_fill` (`"auto"` by default): the first segment is
/// prepared before the server listens, the records go to segments whose
/// blocks are all written (no unwritten extent) but for those taken partly
/// written (logged: the core filled its segment before the preparer's
/// paced zeros covered the next), the prepared segment no core took is
/// deleted at a clean stop, and after a SIGKILL the next start's recovery
/// removes it (never sealed as an empty segment); the records stay
/// byte-exact throughout. With the key off, segments are fallocated only,
/// as before.
#[test]
fn segments_are_written_before_records_and_unused_ones_do_not_pile_up() {
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 30);
    let (first, second) = files.split_at(20);
    // Data on ext4 (the crate's directory), where fallocate leaves
    // unwritten extents; /tmp may be tmpfs.
    let ext4 = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let data = ext4.path().join("data");
    let served = serve_on(&data, &SEGMENTS);
    storescu(served.port, first);
    let log = terminate(served);
    assert!(log.contains("first segments prepared"), "{log}");
    let fallocated = log.matches("no prepared segment ready").count()
        + log.matches("next segment taken partly written").count();
    let files_after_stop = segment_files(&data);
    let store = store_of(&data);
    let used = assert_records(&store, first);
    drop(store);
    // Every file left is one a record went to: the unused prepared one
    // was deleted at the stop.
    assert_eq!(
        files_after_stop.len(),
        used.len(),
        "{files_after_stop:?} {used:?}"
    );
    let unwritten = files_after_stop
        .iter()
        .filter(|(path, _)| has_unwritten_extents(path))
        .count();
    assert!(
        unwritten <= fallocated,
        "{unwritten} segments with unwritten extents, {fallocated} fallocated or partly written"
    );
    // The first one was written whole before the listeners opened.
    let first_segment = files_after_stop
        .iter()
        .map(|(path, _)| path)
        .min()
        .expect("a segment");
    assert!(!has_unwritten_extents(first_segment), "{first_segment:?}");

    // SIGKILL right after start: the core's prepared segment is left.
    let served = serve_on(&data, &SEGMENTS);
    let while_serving = std::fs::read_dir(data.join("segments")).unwrap().count();
    drop(served.stop());
    assert_eq!(
        while_serving,
        used.len() + 1,
        "the core's prepared segment beside the used ones"
    );
    let served = serve_on(&data, &SEGMENTS);
    storescu(served.port, second);
    let log = terminate(served);
    assert!(log.contains("unused segment"), "{log}");
    let store = store_of(&data);
    assert_records(&store, first);
    let second_segments = assert_records(&store, second);
    let states = store.index().read().unwrap().segments().unwrap();
    drop(store);
    // No empty sealed segment: every sealed row names records, every file
    // is a row's.
    assert!(
        states
            .iter()
            .all(|(id, state)| state.live_records > 0 || second_segments.contains(id)),
        "{states:?}"
    );
    assert!(segment_files(&data).iter().all(|(_, row)| *row));

    // Off: allocated only (unwritten extents), nothing prepared.
    let off = ext4.path().join("off");
    let mut args = SEGMENTS.to_vec();
    args.extend(["--segment-zero-fill", "off"]);
    let served = serve_on(&off, &args);
    storescu(served.port, &first[..2]);
    let log = terminate(served);
    assert!(!log.contains("first segments prepared"), "{log}");
    let off_files = segment_files(&off);
    assert_eq!(off_files.len(), 1, "{off_files:?}");
    assert!(has_unwritten_extents(&off_files[0].0));
}

/// A duplicate held in quarantine is a file in `quarantine/` (quarantine
/// stays files), the original a record.
#[test]
fn duplicates_held_in_quarantine_are_files() {
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 1);
    let (_shared, data) = data_dir();
    let served = serve_on(&data, &SEGMENTS);
    let twice = [files[0].clone(), files[0].clone()];
    let out = pynetdicom_store(served.port, &twice);
    assert!(out.contains("\"statuses\": [0, 0]"), "{out}");
    let quarantined = served.files("quarantine");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let held = std::fs::read(quarantined.values().next().unwrap()).unwrap();
    assert_eq!(
        part10_dataset(&held),
        part10_dataset(&std::fs::read(&files[0]).unwrap())
    );
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    let store = store_of(&data);
    assert_records(&store, &files);
}

/// An instance whose Part 10 bytes pass `storage.segment_record_max` is
/// stored as a file in `objects/` (what the buffer held is written first),
/// byte-exact; its location is a file.
#[test]
fn instances_above_the_record_bound_are_files() {
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 3);
    let mut args = SEGMENTS.to_vec();
    args.extend(["--segment-record-max", "1024"]);
    let served = Served::start("uring", &args);
    storescu(served.port, &files);
    let stored = served.files("objects");
    for file in &files {
        let sop = sop_of(file);
        let path = stored
            .get(&sop)
            .unwrap_or_else(|| panic!("{sop} not a file: {stored:?}"));
        assert_eq!(
            part10_dataset(&std::fs::read(path).unwrap()),
            part10_dataset(&std::fs::read(file).unwrap()),
        );
    }
    served.stop();
}

/// EIO injected on the core's first `kind` operation (the first record's
/// write, or its segment's flush): that instance is answered A700 and not
/// indexed, its segment is sealed in the index, and the next instance is
/// stored as a record in a new segment.
fn eio_fails_the_record_and_seals_its_segment(backend: &str, kind: sluice_io::OpKind) {
    use sluice_engine::scp::{ServeOptions, Server};
    use sluice_io::{Fault, FaultPlan};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = sluice_tests::free_port();
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        data.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--io-backend",
        backend,
        "--free-space-floor",
        "0",
        "--storage-layout",
        "segments",
        "--segment-size-mib",
        "1",
        "--cores",
        "1",
    ])
    .unwrap();
    let store = Store::open(config).unwrap();
    let plan = FaultPlan::new().fail_nth(kind, 1, Fault::Errno(5));
    let observed = plan.clone();
    let server = Server::start_with(
        &store,
        ServeOptions {
            adjust_runtime: Some(Box::new(move |runtime| runtime.fault_plan = Some(plan))),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 2);
    let out = pynetdicom_store(port, &files);
    // 0xA700 = 42752.
    assert!(out.contains("\"statuses\": [42752, 0]"), "{kind:?}: {out}");
    assert_eq!(observed.injected().len(), 1);
    server.shutdown(Duration::from_secs(10)).unwrap();

    assert!(store.instance_by_sop(&sop_of(&files[0])).unwrap().is_none());
    let segments = assert_records(&store, &files[1..]);
    let states = store.index().read().unwrap().segments().unwrap();
    let failed: Vec<u64> = states
        .iter()
        .filter(|(id, state)| state.sealed && !segments.contains(id))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(failed.len(), 1, "the failed segment sealed: {states:?}");
    assert!(
        failed[0] < segments[0],
        "the next record went to a new segment: {states:?}"
    );
    assert!(store.index().read().unwrap().in_doubt().unwrap().is_empty());
}

#[test]
fn uring_a_failed_record_write_is_a700_and_seals_the_segment() {
    eio_fails_the_record_and_seals_its_segment("uring", sluice_io::OpKind::Write);
}

#[test]
fn uring_a_failed_segment_flush_is_a700_and_seals_the_segment() {
    eio_fails_the_record_and_seals_its_segment("uring", sluice_io::OpKind::Sync);
}

#[test]
fn portable_a_failed_segment_flush_is_a700_and_seals_the_segment() {
    eio_fails_the_record_and_seals_its_segment("portable", sluice_io::OpKind::Sync);
}

/// Query/Retrieve reads records back: the Q/R corpus stored on segments
/// (no file in `objects/`), found by DCMTK findscu, a study moved by
/// movescu to DCMTK storescp and a series fetched by getscu, each data set
/// byte for byte as sent.
#[test]
fn find_move_and_get_read_records_byte_exact() {
    use crate::query::{
        assert_same_data_sets, corpus, findscu, received, store_instances, storescp, wait_received,
        Instance,
    };

    let files = tempfile::tempdir().unwrap();
    let instances = corpus(&files.path().join("corpus"), 0);
    let destination = tempfile::tempdir().unwrap();
    let (_storescp, storescp_port) = storescp("STORESCP", destination.path());
    let remote = format!("STORESCP=127.0.0.1:{storescp_port}");
    let mut args = SEGMENTS.to_vec();
    args.extend(["--transfer-syntaxes", "all", "--remote-ae", &remote]);
    let served = Served::start("uring", &args);
    store_instances(served.port, &instances);
    assert!(
        served.all_files("objects").is_empty(),
        "every instance is a record"
    );

    let study_a1: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.file.to_string_lossy().contains("/A1_"))
        .collect();
    assert_eq!(study_a1.len(), 5);
    let output = run(
        Command::new(dcmtk("movescu"))
            .args(["-v", "-S", "-aec", "SLUICE", "-aem", "STORESCP"])
            .args(["-k", "QueryRetrieveLevel=STUDY"])
            .args(["-k", &format!("StudyInstanceUID={}", study_a1[0].study)])
            .args(["127.0.0.1", &served.port.to_string()]),
        TIMEOUT,
    );
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(log.contains("Final Move Response (Success)"), "{log}");
    let arrived = wait_received(destination.path(), study_a1.len());
    assert_eq!(arrived.len(), study_a1.len());
    assert_same_data_sets(&study_a1, &arrived);

    let series: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.file.to_string_lossy().contains("/A1_1_"))
        .collect();
    let (answers, log) = findscu(
        served.port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &format!("StudyInstanceUID={}", series[0].study),
            "-k",
            &format!("SeriesInstanceUID={}", series[0].series),
            "-k",
            "SOPInstanceUID",
        ],
    );
    assert_eq!(answers.len(), series.len(), "{log}");
    for instance in &series {
        assert_eq!(
            answers.iter().filter(|a| a.contains(&instance.sop)).count(),
            1,
            "{log}"
        );
    }
    let out = files.path().join("getscu");
    std::fs::create_dir_all(&out).unwrap();
    let output = run(
        Command::new(dcmtk("getscu"))
            .args(["-v", "-S", "-aec", "SLUICE", "-od"])
            .arg(&out)
            .args(["-k", "QueryRetrieveLevel=SERIES"])
            .args(["-k", &format!("StudyInstanceUID={}", series[0].study)])
            .args(["-k", &format!("SeriesInstanceUID={}", series[0].series)])
            .args(["127.0.0.1", &served.port.to_string()]),
        TIMEOUT,
    );
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        log.contains(&format!(
            "Number of Completed Suboperations : {}",
            series.len()
        )),
        "{log}"
    );
    assert_same_data_sets(&series, &received(&out));
    served.stop();
}

/// Storage Commitment on records: pynetdicom's commitment SCU stores three
/// instances (records, whose entries commit in doubt beside their segment's
/// flush) and asks for their commitment: all committed, on the same
/// association; nothing of them is a file.
#[test]
fn storage_commitment_commits_records() {
    let (_shared, data) = data_dir();
    let served = serve_on(&data, &SEGMENTS);
    let port = served.port.to_string();
    let out = sluice_tests::python_peer(
        "commit_scu.py",
        &[
            &port,
            "SLUICE",
            "COMMITSCU",
            "--instances",
            "3",
            "--store-before",
            "all",
            "--wait-report",
            "60",
        ],
        TIMEOUT,
    );
    for fragment in [
        "\"action_status\": \"0000\"",
        "\"stored\": {\"0000\": 3}",
        "\"via\": \"same\", \"event_type\": 1",
        "\"committed\": 3, \"failed\": []",
    ] {
        assert!(
            out.has(fragment),
            "{fragment} not in {}\n{}",
            out.0,
            served.log()
        );
    }
    assert!(served.all_files("objects").is_empty());
    terminate(served);
    let store = store_of(&data);
    let read = store.index().read().unwrap();
    let segments = read.segments().unwrap();
    let records: u64 = segments.iter().map(|(_, state)| state.live_records).sum();
    assert_eq!(records, 3, "{segments:?}");
}

/// Every duplicate policy on records: the same instance sent twice (two
/// associations). The first is a record; the second is answered as the
/// policy says, and what the policy keeps of it is a file in quarantine
/// (quarantine) or a record (replace: the newcomer replaces the stored
/// record, which becomes dead bytes); `sluice verify` is clean.
#[test]
fn every_duplicate_policy_on_records() {
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 1);
    // (policy, second status as pynetdicom prints it, files in quarantine)
    for (policy, second_status, quarantined) in [
        ("reject", "273", 0),
        ("replace", "0", 0),
        ("drop-if-identical", "0", 0),
        ("quarantine", "0", 1),
    ] {
        let (_shared, data) = data_dir();
        let mut args = SEGMENTS.to_vec();
        args.extend(["--duplicate-policy", policy]);
        let served = serve_on(&data, &args);
        let out = pynetdicom_store(served.port, &files);
        assert!(out.contains("\"statuses\": [0]"), "{policy}: {out}");
        // Past the in-doubt clear of the first (drop-if-identical drops
        // only a duplicate of a copy known durable).
        std::thread::sleep(Duration::from_millis(300));
        let out = pynetdicom_store(served.port, &files);
        assert!(
            out.contains(&format!("\"statuses\": [{second_status}]")),
            "{policy}: {out}\n{}",
            served.log()
        );
        assert_eq!(
            served.all_files("quarantine").len(),
            quarantined,
            "{policy}"
        );
        assert!(served.all_files("objects").is_empty(), "{policy}");
        assert!(served.all_files("orphans").is_empty(), "{policy}");
        let log = terminate(served);
        assert!(
            !log.contains("WARN sluice_engine::scp::ingest"),
            "{policy}: {log}"
        );
        let store = store_of(&data);
        assert_records(&store, &files);
        let segments = store.index().read().unwrap().segments().unwrap();
        let live: u64 = segments.iter().map(|(_, state)| state.live_records).sum();
        assert_eq!(live, 1, "{policy}: {segments:?}");
        drop(store);
        sluice_ok(&["verify", "--data-dir", data.to_str().unwrap()]);
    }
}
