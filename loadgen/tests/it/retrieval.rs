//! Retrieval workloads against real Query/Retrieve SCPs (DCMTK `dcmqrscp`
//! configured by the test, Orthanc): C-FIND at several levels and keys,
//! C-MOVE to the loadgen's own listener, C-GET, and a mixed run. The
//! archive is filled by the loadgen itself (its history is the key source)
//! or by `storescu` (keys discovered by a query); every operation's count
//! is checked against what was stored, and latencies must be reported.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_loadgen::stats::{RetrievalResult, RunResult};
use sluice_tests::{dcmtk, free_port, make_fixtures, run};

use crate::{loadgen_named, peers};

/// Studies of 4 instances in 2 series, 2 studies per patient: 6 studies,
/// 12 series, 3 patients.
const STORED: u64 = 24;

/// A retrieval run (`name` names its result file) with `args`.
fn retrieval(dir: &Path, name: &str, args: &[&str]) -> (RunResult, RetrievalResult) {
    let (result, _) = loadgen_named(dir, &format!("{name}.json"), &format!("{name}.jsonl"), args);
    let retrieval = result
        .retrieval
        .clone()
        .unwrap_or_else(|| panic!("{name}: no retrieval lane in\n{}", result.summary()));
    (result, retrieval)
}

fn as_refs(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

/// Every operation answered with success, latencies recorded for each.
fn all_ok(name: &str, result: &RunResult, retrieval: &RetrievalResult, operations: u64) {
    let totals = &retrieval.totals;
    let summary = result.summary();
    assert_eq!(
        totals.counts.operations_ok, operations,
        "{name}:\n{summary}"
    );
    assert_eq!(
        totals.counts.operations_failed
            + totals.counts.operations_warning
            + totals.counts.operations_unanswered,
        0,
        "{name}:\n{summary}"
    );
    assert_eq!(retrieval.statuses.get("0000"), Some(&operations), "{name}");
    let latency = &retrieval.latency_ms.operation;
    assert_eq!(latency.count, operations, "{name}:\n{summary}");
    assert!(
        latency.p50 > 0.0 && latency.max >= latency.p99,
        "{name}:\n{summary}"
    );
    assert!(retrieval.operations_per_s > 0.0, "{name}:\n{summary}");
    assert!(summary.contains("operation latency ms: p50"), "{summary}");
    // Every operation's outcome was predicted by the key source and matched.
    assert_eq!(
        totals.counts.expectations_checked, operations,
        "{name}:\n{summary}"
    );
    assert_eq!(totals.counts.expectations_differed, 0, "{name}:\n{summary}");
}

/// Fills the archive at `target` (AE `ae`) with the loadgen, then queries
/// and retrieves it in every workload.
fn find_move_get_and_mixed(
    dir: &Path,
    target: &str,
    ae: &str,
    move_port: u16,
    log: &dyn Fn() -> String,
) {
    let common = [
        "--target",
        target,
        "--called-ae",
        ae,
        "--calling-ae",
        "LOADGEN",
    ];
    // One storing association: dcmqrscp answers 0000 to concurrent stores
    // it then does not hold (100 sent on 4 associations left 90 files and
    // image queries that match nothing), which would fail the exact counts.
    let (stored, _) = loadgen_named(
        dir,
        "store.json",
        "stored.jsonl",
        &[
            &common[..],
            &[
                "--associations",
                "1",
                "--count",
                "24",
                "--study-size",
                "4",
                "--series-per-study",
                "2",
                "--studies-per-patient",
                "2",
            ],
        ]
        .concat(),
    );
    assert_eq!(
        stored.totals.instances_ok,
        STORED,
        "{}\n{}",
        stored.summary(),
        log()
    );
    let keys = format!("history:{}", dir.join("stored.jsonl").display());
    let args = |extra: &[&str]| -> Vec<String> {
        common
            .iter()
            .chain(["--keys-from", keys.as_str(), "--associations", "2"].iter())
            .chain(extra.iter())
            .map(|arg| arg.to_string())
            .collect()
    };

    // C-FIND STUDY by Patient ID: each patient has two studies.
    let find = args(&[
        "--workload",
        "find",
        "--level",
        "study",
        "--keys",
        "patient-id",
        "--count",
        "40",
    ]);
    let (result, by_patient) = retrieval(dir, "find-patient", &as_refs(&find));
    all_ok("find by patient", &result, &by_patient, 40);
    assert_eq!(
        by_patient.totals.matches,
        80,
        "{}\n{}",
        result.summary(),
        log()
    );
    assert_eq!(
        by_patient.matches_per_query.as_ref().map(|m| m.max),
        Some(2.0)
    );
    assert!(by_patient.latency_ms.first_response.is_some());
    assert_eq!(by_patient.config.operation, "find");
    assert_eq!(by_patient.config.keys, vec!["patient-id"]);
    assert!(!result.has_store_lane());

    // C-FIND IMAGE by SOP Instance UID: one match each.
    let find = args(&[
        "--workload",
        "find",
        "--level",
        "image",
        "--keys",
        "sop-uid",
        "--count",
        "30",
    ]);
    let (result, by_uid) = retrieval(dir, "find-image", &as_refs(&find));
    all_ok("find by SOP Instance UID", &result, &by_uid, 30);
    assert_eq!(by_uid.totals.matches, 30, "{}", result.summary());
    assert_eq!(by_uid.totals.counts.empty_results, 0);

    // C-MOVE SERIES to our own listener: two instances per series.
    let listen = format!("127.0.0.1:{move_port}");
    let moves = args(&[
        "--workload",
        "move",
        "--level",
        "series",
        "--count",
        "12",
        "--move-listen",
        &listen,
        "--move-dest",
        "LOADGEN",
    ]);
    let (result, moved) = retrieval(dir, "move", &as_refs(&moves));
    all_ok("move", &result, &moved, 12);
    let totals = &moved.totals;
    assert_eq!(
        totals.counts.instances_received,
        24,
        "{}\n{}",
        result.summary(),
        log()
    );
    assert_eq!(totals.counts.stores_attributed, 24, "{}", result.summary());
    assert_eq!(
        totals.counts.sub_operations_completed,
        24,
        "{}",
        result.summary()
    );
    assert_eq!(totals.counts.sub_operations_failed, 0);
    assert!(
        totals.counts.bytes_received > 24 * 500_000,
        "{}",
        result.summary()
    );
    assert!(moved.latency_ms.first_sub_operation.is_some());
    assert!(moved.instances_per_s > 0.0 && moved.megabytes_per_s > 0.0);

    // C-GET STUDY on the association: four instances per study.
    let get = args(&["--workload", "get", "--level", "study", "--count", "6"]);
    let (result, got) = retrieval(dir, "get", &as_refs(&get));
    all_ok("get", &result, &got, 6);
    assert_eq!(
        got.totals.counts.instances_received,
        24,
        "{}\n{}",
        result.summary(),
        log()
    );
    assert_eq!(
        got.totals.counts.sub_operations_completed,
        24,
        "{}",
        result.summary()
    );
    assert!(got.latency_ms.first_sub_operation.is_some());

    // Mixed: C-FINDs beside ingest, both lanes measured in one result.
    let mixed = args(&[
        "--workload",
        "find",
        "--level",
        "series",
        "--duration",
        "2",
        "--store-associations",
        "1",
        "--study-size",
        "4",
    ]);
    let (result, found) = retrieval(dir, "mixed", &as_refs(&mixed));
    assert!(result.has_store_lane(), "{}", result.summary());
    assert!(
        result.totals.instances_ok > 0,
        "{}\n{}",
        result.summary(),
        log()
    );
    assert_eq!(
        result.totals.instances_failed + result.totals.instances_unanswered,
        0
    );
    assert!(
        found.totals.counts.operations_ok > 0,
        "{}",
        result.summary()
    );
    assert_eq!(
        found.totals.counts.operations_failed + found.totals.counts.operations_unanswered,
        0
    );
    assert_eq!(
        found.totals.counts.expectations_differed,
        0,
        "{}",
        result.summary()
    );
    let summary = result.summary();
    assert!(
        summary.contains("store mode closed") && summary.contains("retrieval find SERIES"),
        "{summary}"
    );
}

#[test]
fn dcmqrscp_answers_every_find_move_and_get_of_what_the_loadgen_stored() {
    let dir = tempfile::tempdir().unwrap();
    let move_port = free_port();
    let peer = peers::dcmqrscp(dir.path(), move_port);
    find_move_get_and_mixed(dir.path(), &peer.target(), "QRSCP", move_port, &|| {
        peer.log_text()
    });
    // A sweep of C-FIND load levels renders the retrieval section of the report.
    let out = dir.path().join("sweep");
    let keys = format!("history:{}", dir.path().join("stored.jsonl").display());
    let output = run(
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
            .arg("sweep")
            .args([
                "--target",
                &peer.target(),
                "--called-ae",
                "QRSCP",
                "--label",
                "dcmqrscp",
            ])
            .args([
                "--workload",
                "find",
                "--level",
                "series",
                "--keys-from",
                &keys,
            ])
            .args([
                "--levels", "1,2", "--count", "20", "--quiet", "--cores", "2",
            ])
            .arg("--out-dir")
            .arg(&out),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(html.contains("<section id=\"retrieval-vs-load\">"));
    assert!(html.contains("<svg id=\"chart-retrieval-operations\""));
    assert!(html.contains("<svg id=\"chart-retrieval-latency\""));
    assert_eq!(
        markdown
            .matches("| dcmqrscp | find SERIES | closed |")
            .count(),
        2,
        "{markdown}"
    );
    assert!(
        markdown.contains("- **dcmqrscp: find SERIES**: best"),
        "{markdown}"
    );
}

#[test]
fn orthanc_answers_every_find_move_and_get_of_what_the_loadgen_stored() {
    let dir = tempfile::tempdir().unwrap();
    let move_port = free_port();
    let peer = peers::orthanc(dir.path(), move_port);
    find_move_get_and_mixed(dir.path(), &peer.target(), "ORTHANC", move_port, &|| {
        peer.log_text()
    });
}

#[test]
fn keys_discovered_by_a_query_find_what_storescu_stored_in_dcmqrscp() {
    let dir = tempfile::tempdir().unwrap();
    let peer = peers::dcmqrscp(dir.path(), free_port());
    // The little-endian fixtures (dcmqrscp keeps what it is sent as is).
    let fixtures: Vec<_> = make_fixtures(&dir.path().join("fixtures"))
        .into_iter()
        .filter(|fixture| {
            ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
                .contains(&fixture.transfer_syntax_uid.as_str())
        })
        .collect();
    assert!(!fixtures.is_empty());
    let mut storescu = Command::new(dcmtk("storescu"));
    storescu
        .env("TCP_NODELAY", "1")
        .args(["-aec", "QRSCP", "-aet", "LOADGEN", "127.0.0.1"])
        .arg(peer.port.to_string())
        .args(fixtures.iter().map(|fixture| &fixture.path));
    let output = run(&mut storescu, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "storescu failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        peer.log_text()
    );
    let target = peer.target();
    let (result, found) = retrieval(
        dir.path(),
        "discovered",
        &[
            "--target",
            &target,
            "--called-ae",
            "QRSCP",
            "--keys-from",
            "query",
            "--workload",
            "find",
            "--level",
            "image",
            "--keys",
            "sop-uid",
            "--associations",
            "2",
            "--count",
            "20",
        ],
    );
    all_ok("find by discovered SOP Instance UID", &result, &found, 20);
    assert_eq!(found.totals.matches, 20, "{}", result.summary());
    assert!(
        found.config.key_source.starts_with("query of 127.0.0.1:"),
        "{}",
        found.config.key_source
    );
}
