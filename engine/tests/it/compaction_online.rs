//! Online compaction (docs/design/segments.md, "Compaction"): a real
//! `sluice serve --storage-layout segments` with 1 MiB segments and the
//! `replace` duplicate policy (a replaced instance's first record is dead)
//! reclaims dead bytes while it runs: a C-GET whose list named records in
//! segments the compactor then deleted still sends every instance
//! byte-exact (the sender looks a record up again when its segment is
//! gone), ingest keeps answering, the metrics count it, and `sluice stats`
//! and `verify` agree after; a server killed (SIGKILL) mid-pass loses
//! nothing and the next one finishes the work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_tests::{free_port, part10_dataset, part10_meta_value, python_peer};

use crate::compaction::{dead_bytes, verify_clean};
use crate::ingest::generated_files_of;
use crate::migrate::{exports, files_under};
use crate::monitoring::{scrape, value};
use crate::process::signal;
use crate::segment_ingest::{data_dir, serve_on, sop_of, storescu, terminate, SEGMENTS};
use crate::serve::Served;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `count` generated CT files of 256 x 256 pixels (about 128 KiB each:
/// seven or so to a 1 MiB segment), all of patient `PEER1`.
fn ct_files(dir: &Path, count: usize) -> Vec<PathBuf> {
    generated_files_of(dir, count, 256)
}

/// The segments layout with 1 MiB segments, `replace`, any segment a
/// quarter dead a candidate, online compaction at `rate` MiB/s, and the
/// metrics endpoint on `metrics_port`.
fn serve_compacting(data: &Path, rate: &str, metrics_port: u16) -> Served {
    let metrics_port = metrics_port.to_string();
    let mut args = SEGMENTS.to_vec();
    args.extend([
        "--duplicate-policy",
        "replace",
        "--compaction-dead-percent",
        "25",
        "--compaction-dead-min",
        "0",
        "--compaction-rate-mib-s",
        rate,
        "--metrics-port",
        &metrics_port,
    ]);
    serve_on(data, &args)
}

/// The `sluice_compaction_*` counter `name` (without `_total`).
fn compaction_metric(metrics_port: u16, name: &str) -> f64 {
    value(&scrape(metrics_port), &format!("{name}_total"), &[])
}

/// Waits until the compactor deleted at least `segments` segments in all.
fn wait_for_deletions(served: &Served, metrics_port: u16, segments: f64) {
    let deadline = Instant::now() + TIMEOUT;
    while compaction_metric(metrics_port, "sluice_compaction_deleted_segments") < segments {
        assert!(
            Instant::now() < deadline,
            "no compaction deleted {segments} segments: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The data sets of the files a retrieve wrote, by SOP Instance UID.
fn data_sets(paths: &[PathBuf]) -> BTreeMap<String, Vec<u8>> {
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            (
                part10_meta_value(&bytes, 0x0002, 0x0003),
                part10_dataset(&bytes).to_vec(),
            )
        })
        .collect()
}

/// Every instance of `files` exported byte-exact (its data set).
fn exports_match(data: &Path, files: &[PathBuf]) {
    for (sop, bytes) in exports(data, files) {
        let original = files.iter().find(|file| sop_of(file) == sop).unwrap();
        let original = std::fs::read(original).unwrap();
        assert_eq!(part10_dataset(&bytes), part10_dataset(&original), "{sop}");
    }
}

#[test]
fn online_compaction_reclaims_dead_bytes_while_a_c_get_and_ingest_run() {
    let sent = tempfile::tempdir().unwrap();
    let files = ct_files(sent.path(), 60);
    let later = tempfile::tempdir().unwrap();
    let later_files = ct_files(later.path(), 20);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve_compacting(&data, "64", metrics_port);
    storescu(served.port, &files);

    // A slow requester (a quarter second per sub-operation): the server
    // lists the 60 instances' places first and opens each in its turn.
    let got = tempfile::tempdir().unwrap();
    let got_dir = got.path().to_str().unwrap().to_owned();
    let port = served.port.to_string();
    let c_get = std::thread::spawn(move || {
        python_peer(
            "qr_scu.py",
            &[
                "get",
                &port,
                "SLUICE",
                "ONLINEGET",
                "patient",
                r#"{"QueryRetrieveLevel": "PATIENT", "PatientID": "PEER1"}"#,
                &got_dir,
                "--store-delay",
                "0.25",
            ],
            TIMEOUT,
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    // Three quarters replaced: most segments the list names become
    // candidates, and the compactor moves their last live records out and
    // deletes them while the C-GET is still sending.
    storescu(served.port, &files[..45]);
    wait_for_deletions(&served, metrics_port, 1.0);
    // Ingest answers meanwhile.
    storescu(served.port, &later_files);
    let deleted_while_sending =
        compaction_metric(metrics_port, "sluice_compaction_deleted_segments");
    assert!(!c_get.is_finished(), "the C-GET ended before any deletion");

    let result = c_get.join().unwrap();
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}\n{}",
        served.log()
    );
    assert_eq!(
        result.string("final_counts").as_deref(),
        Some("-/60/0/0"),
        "{result:?}"
    );
    let received: Vec<PathBuf> = std::fs::read_dir(got.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let received = data_sets(&received);
    let sent_sets = data_sets(&files);
    assert_eq!(received.len(), 60);
    assert_eq!(received, sent_sets, "every instance sent byte-exact");
    assert!(deleted_while_sending >= 1.0);

    // The metrics count the work; its passes are logged.
    let samples = scrape(metrics_port);
    assert!(value(&samples, "sluice_compaction_relocated_records_total", &[]) >= 1.0);
    assert!(value(&samples, "sluice_compaction_copied_bytes_total", &[]) > 0.0);
    assert_eq!(
        value(&samples, "sluice_compaction_errors_total", &[]),
        0.0,
        "{}",
        served.log()
    );
    assert!(value(&samples, "sluice_compaction_last_pass_unix_seconds", &[]) > 0.0);
    let log = terminate(served);
    assert!(log.contains("online compaction pass"), "{log}");
    // A record whose segment was deleted while the C-GET sent was either
    // read through the segment its lane held open (the same bytes: records
    // are never rewritten in place) or looked up again at its new place
    // ("a record compaction moved is sent from its new place"): both end
    // in the byte-exact comparison above.
    assert!(!log.contains("ERROR"), "{log}");

    // Everything stored is there, byte-exact, `verify` clean; what stays
    // dead is below the threshold (`sluice stats`, counted from the index
    // the compactor kept).
    let mut all = files.clone();
    all.extend(later_files);
    verify_clean(&data, all.len());
    exports_match(&data, &all);
    let (dead, present) = dead_bytes(&data);
    assert_eq!(
        files_under(&data.join("segments")),
        present,
        "deleted segments' files are gone"
    );
    assert!(
        dead < present as u64 * (1 << 20) / 4 + (1 << 20),
        "{dead} dead bytes in {present} segments"
    );
}

/// Killed (SIGKILL) while a slow pass copies, then served again with
/// online compaction: every instance byte-exact, `verify` clean, dead bytes
/// reclaimed.
#[test]
fn a_server_killed_mid_pass_loses_nothing_and_the_next_finishes() {
    let sent = tempfile::tempdir().unwrap();
    let files = ct_files(sent.path(), 60);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    // 1 MiB/s: a pass over the candidates takes seconds.
    let served = serve_compacting(&data, "1", metrics_port);
    storescu(served.port, &files);
    // Every other one replaced: every segment of the first run half dead,
    // about 30 live records (4 MiB) to copy.
    let every_other: Vec<PathBuf> = files.iter().step_by(2).cloned().collect();
    storescu(served.port, &every_other);
    let deadline = Instant::now() + TIMEOUT;
    // Killed once a copy began: at 1 MiB/s the pass goes on copying for
    // seconds (the records are 128 KiB), so the kill finds records copied
    // and not switched, or switched with their old segment not deleted.
    loop {
        let copied = compaction_metric(metrics_port, "sluice_compaction_copied_bytes");
        if copied > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no copy began: {}", served.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(served.pid(), "KILL");
    drop(served.stop());

    let metrics_port = free_port();
    let served = serve_compacting(&data, "64", metrics_port);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let samples = scrape(metrics_port);
        let passes = value(&samples, "sluice_compaction_passes_total", &[]);
        if passes >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no pass: {}", served.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A survey after the last pass finds nothing worth a pass.
    std::thread::sleep(Duration::from_secs(5));
    let log = terminate(served);
    assert!(!log.contains("ERROR"), "{log}");
    verify_clean(&data, files.len());
    exports_match(&data, &files);
    let (dead, present) = dead_bytes(&data);
    assert!(
        dead < present as u64 * (1 << 20) / 4 + (1 << 20),
        "{dead} dead bytes in {present} segments"
    );
}
