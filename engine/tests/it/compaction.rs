//! `sluice compact` (docs/design/segments.md, "Compaction"): the real
//! `sluice` binary on a store `sluice serve --storage-layout segments` wrote
//! with replaced instances (duplicate policy `replace`, so the first copies
//! are dead records): dead bytes reclaimed (`sluice stats` before and
//! after), every instance byte-exact by export and by C-GET from a server
//! started on the compacted store, `verify` clean; a run killed (SIGKILL)
//! at several points and run again; the dry run changing nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice_index::Location;
use sluice_tests::part10_dataset;

use crate::ingest::generated_files;
use crate::migrate::{c_get_study, exports, files_under, locations};
use crate::operator::{sluice_binary, sluice_ok};
use crate::segment_ingest::{data_dir, serve_on, sop_of, storescu, terminate, SEGMENTS};

/// 1 MiB segments (as the server wrote them), any segment a quarter dead
/// is a candidate.
fn config_file(data: &Path) -> PathBuf {
    let path = data.with_extension("toml");
    std::fs::write(
        &path,
        "[storage]\nsegment_size_mib = 1\ncompaction_dead_percent = 25\ncompaction_dead_min = 0\n",
    )
    .unwrap();
    path
}

/// `sluice compact` with `args` on `data`: exit code, stdout, stderr.
fn compact(data: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let config = config_file(data);
    let mut all = vec!["compact"];
    all.extend_from_slice(args);
    all.extend([
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    sluice_binary(&all)
}

/// A segments store: `count` instances stored by storescu, then the first
/// `replaced` of them stored again under the `replace` policy (their first
/// records dead).
fn store_with_dead_records(
    sent: &Path,
    count: usize,
    replaced: usize,
) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let files = generated_files(sent, count);
    let (shared, data) = data_dir();
    let mut args = SEGMENTS.to_vec();
    args.extend(["--duplicate-policy", "replace"]);
    let served = serve_on(&data, &args);
    storescu(served.port, &files);
    storescu(served.port, &files[..replaced]);
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    (shared, data, files)
}

/// `sluice stats`' total dead bytes and the number of segments listed
/// with a file (not `deleted`).
pub(crate) fn dead_bytes(data: &Path) -> (u64, usize) {
    let out = sluice_ok(&["stats", "--data-dir", data.to_str().unwrap()]);
    let table = out
        .split("SEGMENT")
        .nth(1)
        .unwrap_or_else(|| panic!("no segment table: {out}"));
    let mut dead = 0;
    let mut present = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 6 {
            continue;
        }
        dead += fields[5].parse::<u64>().unwrap();
        if fields[1] != "deleted" {
            present += 1;
        }
    }
    (dead, present)
}

pub(crate) fn verify_clean(data: &Path, count: usize) {
    let output = sluice_ok(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(
        output.contains(&format!(
            "verified {count} files ({count} stored, 0 quarantined)"
        )),
        "{output}"
    );
}

/// Every instance a record, indexed once.
fn all_records(data: &Path, files: &[PathBuf]) {
    let (places, live) = locations(data, files);
    assert!(places
        .iter()
        .all(|place| matches!(place, Location::Record(_))));
    assert_eq!(live, files.len() as u64, "each instance indexed once");
}

#[test]
fn compaction_reclaims_dead_records_and_keeps_every_instance_byte_exact() {
    let sent = tempfile::tempdir().unwrap();
    let count = 60;
    let (_shared, data, files) = store_with_dead_records(sent.path(), count, 40);
    let before = exports(&data, &files);
    let (dead_before, segments_before) = dead_bytes(&data);
    assert!(dead_before > 0, "the replaced records are dead bytes");

    // The dry run lists and changes nothing.
    let (code, stdout, stderr) = compact(&data, &["--dry-run"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("dry run: nothing was changed"), "{stdout}");
    assert!(!stdout.contains(" 0 segments to compact"), "{stdout}");
    assert_eq!(dead_bytes(&data), (dead_before, segments_before));

    let (code, stdout, stderr) = compact(&data, &["--batch", "7"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stderr.contains("compact: segment"),
        "a line per segment: {stderr}"
    );
    let (dead_after, segments_after) = dead_bytes(&data);
    assert!(
        dead_after * 4 < dead_before,
        "dead bytes {dead_before} before, {dead_after} after"
    );
    assert!(
        segments_after <= segments_before,
        "{segments_before} -> {segments_after}"
    );
    assert_eq!(
        files_under(&data.join("segments")),
        segments_after,
        "deleted segments' files are gone"
    );
    all_records(&data, &files);
    verify_clean(&data, count);
    assert_eq!(exports(&data, &files), before);

    // A second run finds nothing worth compacting.
    let (code, stdout, _) = compact(&data, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("0 segments to compact"), "{stdout}");

    // `sluice serve` serves the compacted records (C-GET, DCMTK).
    let study = {
        let index =
            sluice_index::Index::open(data.join("index"), sluice_index::IndexOptions::default())
                .unwrap();
        let read = index.read().unwrap();
        read.instance_by_sop(&sop_of(&files[0]))
            .unwrap()
            .unwrap()
            .triplet
            .study_instance_uid
    };
    let received = c_get_study(&data, &study, "CMPGET");
    assert!(!received.is_empty(), "C-GET received nothing");
    for bytes in &received {
        let sop = sluice_tests::part10_meta_value(bytes, 0x0002, 0x0003);
        assert_eq!(
            part10_dataset(bytes),
            part10_dataset(&before[&sop]),
            "{sop}"
        );
    }
}

/// Killed (SIGKILL) after 2, then 5, then 9 batches of one record, then run
/// to the end: every instance a record indexed once, byte-exact, `verify`
/// clean, and the dead bytes reclaimed.
#[test]
fn a_compaction_killed_at_several_points_completes_when_run_again() {
    let sent = tempfile::tempdir().unwrap();
    let count = 60;
    let (_shared, data, files) = store_with_dead_records(sent.path(), count, 45);
    let before = exports(&data, &files);
    let (dead_before, _) = dead_bytes(&data);
    let config = config_file(&data);
    for batches in [2, 5, 9] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["compact", "--batch", "1", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut progress = 0;
        while progress < batches {
            let line = lines.next().expect("progress").unwrap();
            if line.starts_with("compact: ") && line.contains(" records moved") {
                progress += 1;
            }
        }
        let killed = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        child.wait().unwrap();
        all_records(&data, &files);
        verify_clean(&data, count);
    }
    let (code, stdout, stderr) = compact(&data, &["--batch", "16"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    all_records(&data, &files);
    verify_clean(&data, count);
    assert_eq!(exports(&data, &files), before);
    let (dead_after, _) = dead_bytes(&data);
    assert!(
        dead_after * 4 < dead_before,
        "dead bytes {dead_before} before, {dead_after} after"
    );
}

/// Refused while `sluice serve` holds the data directory, naming its PID.
#[test]
fn compact_is_refused_while_a_server_runs() {
    let (_shared, data) = data_dir();
    let served = serve_on(&data, &SEGMENTS);
    let (code, stdout, stderr) = compact(&data, &[]);
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains(&served.pid().to_string()), "{stderr}");
    terminate(served);
}
