//! `sluice migrate` (docs/design/segments.md, "Migrating between layouts"):
//! the real `sluice` binary converting a store `sluice serve` wrote in the
//! files layout to segments and back, a damaged file left and reported, a
//! run killed mid-way and run again, and the refusal while a server runs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_index::Location;
use sluice_tests::{dcmtk, part10_dataset, run};

use crate::ingest::generated_files;
use crate::operator::{sluice_binary, sluice_ok};
use crate::segment_ingest::{
    data_dir, pynetdicom_store, serve_on, sop_of, storescu, terminate, SEGMENTS,
};

const FILES: [&str; 4] = ["--storage-layout", "files", "--cores", "1"];

/// A configuration file with 1 MiB segments (so a migration fills and
/// seals several), beside the data directory.
fn config_file(data: &Path) -> PathBuf {
    let path = data.with_extension("toml");
    std::fs::write(&path, "[storage]\nsegment_size_mib = 1\n").unwrap();
    path
}

/// `sluice migrate --to <to>` on `data`: exit code, stdout, stderr.
pub(crate) fn migrate(data: &Path, to: &str, batch: &str) -> (Option<i32>, String, String) {
    let config = config_file(data);
    sluice_binary(&[
        "migrate",
        "--to",
        to,
        "--batch",
        batch,
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
}

/// A files-layout store written by `sluice serve`: `count` instances by
/// storescu and the first one again by pynetdicom (held in quarantine).
pub(crate) fn files_store(sent: &Path, count: usize) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let files = generated_files(sent, count);
    let (shared, data) = data_dir();
    let served = serve_on(&data, &FILES);
    storescu(served.port, &files);
    let out = pynetdicom_store(served.port, &files[..1]);
    assert!(out.contains("\"statuses\": [0]"), "{out}");
    assert_eq!(served.files("quarantine").len(), 1);
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    (shared, data, files)
}

/// Every stored instance exported by `sluice export-instance`, by SOP
/// Instance UID.
pub(crate) fn exports(data: &Path, files: &[PathBuf]) -> BTreeMap<String, Vec<u8>> {
    let out = tempfile::tempdir().unwrap();
    crate::serve::export_instances(data, files.iter().map(|file| sop_of(file)), out.path())
        .into_iter()
        .map(|(sop, path)| (sop, std::fs::read(path).unwrap()))
        .collect()
}

/// Regular files under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path)
            } else {
                1
            }
        })
        .sum()
}

/// Each instance's index location, and the live records the segments count.
pub(crate) fn locations(data: &Path, files: &[PathBuf]) -> (Vec<Location>, u64) {
    let index =
        sluice_index::Index::open(data.join("index"), sluice_index::IndexOptions::default())
            .unwrap();
    let read = index.read().unwrap();
    let places = files
        .iter()
        .map(|file| {
            let entry = read.instance_by_sop(&sop_of(file)).unwrap().unwrap();
            read.location(entry.record.file_id).unwrap()
        })
        .collect();
    let live = read
        .segments()
        .unwrap()
        .iter()
        .map(|(_, state)| state.live_records)
        .sum();
    (places, live)
}

/// Every instance of `study` retrieved with C-GET (DCMTK getscu, as
/// `aet`) from a `sluice serve` started on `data` in the segments layout,
/// and stopped after.
pub(crate) fn c_get_study(data: &Path, study: &str, aet: &str) -> Vec<Vec<u8>> {
    let served = serve_on(data, &SEGMENTS);
    let got = tempfile::tempdir().unwrap();
    let output = run(
        Command::new(dcmtk("getscu"))
            .args(["-S", "-aec", "SLUICE", "-aet", aet, "-od"])
            .arg(got.path())
            .args(["-k", "0008,0052=STUDY", "-k"])
            .arg(format!("0020,000D={study}"))
            .args(["127.0.0.1", &served.port.to_string()]),
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "getscu: {output:?}");
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    std::fs::read_dir(got.path())
        .unwrap()
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect()
}

pub(crate) fn verify_clean(data: &Path, count: usize) {
    let output = sluice_ok(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(
        output.contains(&format!(
            "verified {} files ({count} stored, 1 quarantined)",
            count + 1
        )),
        "{output}"
    );
}

/// Files to segments and back: byte-exact exports, `verify` clean, nothing
/// left in `objects/` (then nothing in `segments/`), the quarantined
/// duplicate kept as a file, and `sluice serve` on the segments layout
/// serving the migrated records over C-GET.
#[test]
fn a_store_migrates_to_segments_and_back_byte_exact() {
    let sent = tempfile::tempdir().unwrap();
    let count = 30;
    let (_shared, data, files) = files_store(sent.path(), count);
    let before = exports(&data, &files);

    let (code, stdout, stderr) = migrate(&data, "segments", "7");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "migrated {count} of {count} instances to segments"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 quarantined instances stay files"),
        "{stdout}"
    );
    assert!(stdout.contains("storage.layout = \"segments\""), "{stdout}");
    assert!(
        stderr.contains(&format!("migrate: {count} of {count}")),
        "{stderr}"
    );
    assert_eq!(files_under(&data.join("objects")), 0);
    assert_eq!(files_under(&data.join("quarantine")), 1);
    let (places, live) = locations(&data, &files);
    assert!(places
        .iter()
        .all(|place| matches!(place, Location::Record(_))));
    assert_eq!(live, count as u64, "each instance indexed once");
    verify_clean(&data, count);
    assert_eq!(exports(&data, &files), before);
    // A second run finds nothing to do.
    let (code, stdout, _) = migrate(&data, "segments", "7");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("migrated 0 of 0 instances to segments"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{count} already there")),
        "{stdout}"
    );

    // `sluice serve` on the segments layout serves them (C-GET, DCMTK).
    let study = {
        let bytes = &before[&sop_of(&files[0])];
        let index =
            sluice_index::Index::open(data.join("index"), sluice_index::IndexOptions::default())
                .unwrap();
        let entry = index
            .read()
            .unwrap()
            .instance_by_sop(&sop_of(&files[0]))
            .unwrap()
            .unwrap();
        assert!(!bytes.is_empty());
        entry.triplet.study_instance_uid
    };
    let received = c_get_study(&data, &study, "MIGGET");
    assert!(!received.is_empty(), "C-GET received nothing");
    for bytes in &received {
        let sop = sluice_tests::part10_meta_value(bytes, 0x0002, 0x0003);
        assert_eq!(
            part10_dataset(bytes),
            part10_dataset(&before[&sop]),
            "{sop}"
        );
    }

    let (code, stdout, stderr) = migrate(&data, "files", "5");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("migrated {count} of {count} instances to files")),
        "{stdout}"
    );
    assert_eq!(files_under(&data.join("objects")), count);
    assert_eq!(
        files_under(&data.join("segments")),
        0,
        "emptied segments deleted"
    );
    let (places, live) = locations(&data, &files);
    assert!(places.iter().all(|place| *place == Location::File));
    assert_eq!(live, 0);
    verify_clean(&data, count);
    assert_eq!(exports(&data, &files), before);
}

/// A file whose data set no longer matches the index is reported, left
/// where it is and indexed as a file; the rest migrate; exit code 1.
#[test]
fn a_damaged_file_is_reported_and_left() {
    let sent = tempfile::tempdir().unwrap();
    let (_shared, data, files) = files_store(sent.path(), 5);
    let store_path = |sop: &str| {
        let index =
            sluice_index::Index::open(data.join("index"), sluice_index::IndexOptions::default())
                .unwrap();
        let entry = index.read().unwrap().instance_by_sop(sop).unwrap().unwrap();
        sluice_engine::store::layout::Layout::new(&data).object_path(entry.record.file_id)
    };
    let damaged_sop = sop_of(&files[2]);
    let path = store_path(&damaged_sop);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let (code, stdout, stderr) = migrate(&data, "segments", "256");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("migrated 4 of 5"), "{stdout}");
    assert!(stdout.contains("1 damaged left as they are"), "{stdout}");
    assert!(
        stderr.contains("DAMAGED") && stderr.contains(&damaged_sop),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it is");
    let (places, _) = locations(&data, &files);
    assert_eq!(places[2], Location::File);
    assert_eq!(
        places
            .iter()
            .filter(|place| matches!(place, Location::Record(_)))
            .count(),
        4
    );
}

/// Killed (SIGKILL) mid-run, then run again: everything migrated, `verify`
/// clean, each instance indexed once (live records = instances).
#[test]
fn an_interrupted_migration_completes_when_run_again() {
    let sent = tempfile::tempdir().unwrap();
    let count = 150;
    let (_shared, data, files) = files_store(sent.path(), count);
    let config = config_file(&data);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["migrate", "--to", "segments", "--batch", "1", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Some batches done, not all.
    for _ in 0..10 {
        let line = lines.next().expect("progress").unwrap();
        assert!(line.starts_with("migrate: "), "{line}");
    }
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    let (places, _) = locations(&data, &files);
    let done = places
        .iter()
        .filter(|place| matches!(place, Location::Record(_)))
        .count();
    assert!(
        done >= 10 && done < count,
        "{done} migrated before the kill"
    );

    let (code, stdout, stderr) = migrate(&data, "segments", "16");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{done} already there")),
        "{stdout}"
    );
    let (places, live) = locations(&data, &files);
    assert!(places
        .iter()
        .all(|place| matches!(place, Location::Record(_))));
    assert_eq!(live, count as u64, "nothing indexed twice");
    assert_eq!(files_under(&data.join("objects")), 0);
    verify_clean(&data, count);
}

/// Refused while `sluice serve` holds the data directory, naming its PID.
#[test]
fn migrate_is_refused_while_a_server_runs() {
    let (_shared, data) = data_dir();
    let served = serve_on(&data, &FILES);
    let (code, stdout, stderr) = migrate(&data, "segments", "256");
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains(&served.pid().to_string()), "{stderr}");
    terminate(served);
}
