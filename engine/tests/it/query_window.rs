//! C-GET with an Asynchronous Operations Window (PS3.7 D.3.3.3), end to
//! end: `sluice serve` and pynetdicom 3.0.4 (tests/fixtures/qr_scu.py) as
//! the C-GET SCU proposing a window, beside DCMTK getscu, which proposes
//! none. The requester's handler waits in each sub-operation and counts the
//! C-STORE requests already waiting unanswered in its association's
//! message queue: more than none only when Sluice had several outstanding.

use std::path::Path;

use sluice_tests::{python_peer, PeerOutput};

use crate::qr_corpus::{corpus_with, store_instances, Instance, AE, PEER_TIMEOUT};
use crate::query::{assert_same_data_sets, getscu_study_root, received};
use crate::serve::Served;

/// Instances of 300 KB: more than a send chunk (256 KiB) each, so an
/// answer can come while the next data set is still going out.
const BULK: usize = 16;
const BULK_BYTES: usize = 300_000;

/// A server with the bulk study stored; the instances.
fn served_with_bulk(dir: &Path) -> (Served, Vec<Instance>) {
    let bulk: Vec<Instance> = corpus_with(dir, BULK, Some(BULK_BYTES))
        .into_iter()
        .filter(|instance| instance.patient_id == "QR-PAT-BULK")
        .collect();
    assert_eq!(bulk.len(), BULK);
    let served = Served::start("uring", &[]);
    store_instances(served.port, &bulk);
    (served, bulk)
}

/// A pynetdicom C-GET of the bulk study into `out` with `extra` flags.
fn pynetdicom_get(port: u16, study: &str, out: &Path, extra: &[&str]) -> PeerOutput {
    let port = port.to_string();
    let keys = format!(r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{study}"}}"#);
    let out = out.to_str().unwrap();
    let mut args = vec!["get", port.as_str(), AE, "PYGET", "study", &keys, out];
    args.extend_from_slice(extra);
    python_peer("qr_scu.py", &args, PEER_TIMEOUT)
}

/// Asserts that a C-GET of the bulk study completed every sub-operation
/// (0000, `-/BULK/0/0`) with the window `answered` ("invoked/performed").
fn assert_whole(result: &PeerOutput, answered: &str) {
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}"
    );
    let total = format!("-/{BULK}/0/0");
    assert_eq!(
        result.string("final_counts").as_deref(),
        Some(total.as_str()),
        "{result:?}"
    );
    assert_eq!(
        result.string("window_answered").as_deref(),
        Some(answered),
        "{result:?}"
    );
}

/// How many segment files (`*.seg`) process `pid` has open.
fn segment_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.extension().is_some_and(|ext| ext == "seg"))
        })
        .count()
}

/// The server's open segment files once the count has held still for
/// half a second (ingest's open segment, the preparer's next).
fn settled_segment_fds(served: &Served) -> usize {
    let mut last = segment_fds(served.pid());
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = segment_fds(served.pid());
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits (at most 10 s: a close completes after the answer) until the
/// server has `expected` segment files open again: the lane closed the
/// segments it held and every file its transfers read ahead.
fn assert_segment_files_closed(served: &Served, expected: usize, when: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = segment_fds(served.pid());
        if now == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{when}: {now} segment files open, {expected} before the C-GET"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The `key=value` of the server's last "retrieve answered" line.
fn last_answer_field(log: &str, key: &str) -> Option<String> {
    let line = log
        .lines()
        .rfind(|line| line.contains("retrieve answered"))?;
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    Some(rest[..rest.find(' ').unwrap_or(rest.len())].to_owned())
}

#[test]
fn a_get_with_a_window_keeps_several_sub_operations_outstanding_and_arrives_byte_for_byte() {
    let files = tempfile::tempdir().unwrap();
    let (served, bulk) = served_with_bulk(&files.path().join("corpus"));
    let refs: Vec<&Instance> = bulk.iter().collect();
    let study = bulk[0].study.clone();

    // A window of 4: Sluice answers 1 invoked / 4 performed, and has the
    // requester's window full while it waits in each sub-operation.
    let out = files.path().join("window");
    let result = pynetdicom_get(
        served.port,
        &study,
        &out,
        &["--window", "4", "--store-delay", "0.1"],
    );
    let log = served.log();
    assert_whole(&result, "1/4");
    let queued: usize = result.string("stores_queued_max").unwrap().parse().unwrap();
    assert!(
        queued >= 2,
        "at most {queued} C-STORE requests waited behind the one answered: {result:?}"
    );
    assert_eq!(last_answer_field(&log, "window").as_deref(), Some("4"));
    assert_eq!(
        last_answer_field(&log, "outstanding_max").as_deref(),
        Some("4"),
        "{log}"
    );
    assert_same_data_sets(&refs, &received(&out));

    // More than the server's query.get_operations_outstanding_max (16)
    // proposed: 16 answered; nothing delayed, every byte still right.
    let out = files.path().join("wide");
    let result = pynetdicom_get(served.port, &study, &out, &["--window", "100"]);
    assert_whole(&result, "1/16");
    assert_same_data_sets(&refs, &received(&out));

    // No window proposed: none answered, one sub-operation at a time.
    let out = files.path().join("synchronous");
    let result = pynetdicom_get(served.port, &study, &out, &["--store-delay", "0.05"]);
    assert_whole(&result, "1/1");
    assert_eq!(
        result.string("stores_queued_max").as_deref(),
        Some("0"),
        "{result:?}"
    );
    let log = served.log();
    assert_eq!(
        last_answer_field(&log, "outstanding_max").as_deref(),
        Some("1"),
        "{log}"
    );
    assert_same_data_sets(&refs, &received(&out));

    // DCMTK getscu proposes no window: as before.
    let out = files.path().join("getscu");
    let getscu_log = getscu_study_root(
        served.port,
        &out,
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={study}"),
        ],
    );
    assert!(
        getscu_log.contains(&format!("Number of Completed Suboperations : {BULK}")),
        "{getscu_log}"
    );
    let log = served.log();
    assert_eq!(
        last_answer_field(&log, "window").as_deref(),
        Some("1"),
        "{log}"
    );
    assert_eq!(
        last_answer_field(&log, "outstanding_max").as_deref(),
        Some("1"),
        "{log}"
    );
    assert_same_data_sets(&refs, &received(&out));
    served.stop();
}

/// C-CANCEL while sub-operations are outstanding: no new one starts, those
/// outstanding are answered and counted, the final answer (FE00) comes
/// after the last of them with the counts exact; the instances read ahead
/// are given back, and no segment file stays open.
#[test]
fn a_get_with_a_window_can_be_cancelled() {
    let files = tempfile::tempdir().unwrap();
    let (served, bulk) = served_with_bulk(&files.path().join("corpus"));
    let open_before = settled_segment_fds(&served);
    let out = files.path().join("cancelled");
    let result = pynetdicom_get(
        served.port,
        &bulk[0].study,
        &out,
        &[
            "--window",
            "4",
            "--store-delay",
            "0.1",
            "--cancel-after",
            "2",
        ],
    );
    let log = served.log();
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("FE00"),
        "{result:?}\n{log}"
    );
    let counts: Vec<usize> = result
        .string("final_counts")
        .unwrap()
        .split('/')
        .map(|count| count.parse().unwrap())
        .collect();
    let [remaining, completed, failed, warning] = counts[..] else {
        panic!("counts {counts:?}");
    };
    let stored: usize = result.string("stored_count").unwrap().parse().unwrap();
    assert_eq!(
        completed, stored,
        "every C-STORE sent was answered and counted: {result:?}"
    );
    assert_eq!((failed, warning), (0, 0), "{result:?}");
    assert_eq!(remaining + completed, BULK, "{result:?}");
    assert!(remaining > 0 && completed > 2, "{result:?}");
    let arrived = received(&out);
    assert_eq!(arrived.len(), stored);
    let sent: Vec<&Instance> = bulk
        .iter()
        .filter(|instance| arrived.contains_key(&instance.sop))
        .collect();
    assert_same_data_sets(&sent, &arrived);
    assert_segment_files_closed(&served, open_before, "after the cancelled C-GET");
    // The server goes on: the whole study again.
    let again = files.path().join("again");
    let result = pynetdicom_get(served.port, &bulk[0].study, &again, &["--window", "4"]);
    assert_whole(&result, "1/4");
    assert_segment_files_closed(&served, open_before, "after the whole C-GET");
    served.stop();
}

/// A requester that answers a Message ID Sluice never sent, or answers a
/// sub-operation twice, is aborted, and said so; the server goes on.
#[test]
fn a_requester_answering_an_unknown_message_id_or_twice_is_aborted() {
    let files = tempfile::tempdir().unwrap();
    let (served, bulk) = served_with_bulk(&files.path().join("corpus"));
    let open_before = settled_segment_fds(&served);
    for (n, flag) in ["--answer-unknown-id", "--answer-twice"]
        .into_iter()
        .enumerate()
    {
        let out = files.path().join(format!("broken-{n}"));
        let result = pynetdicom_get(served.port, &bulk[0].study, &out, &["--window", "4", flag]);
        assert_eq!(
            result.string("status_hex").as_deref(),
            Some("none"),
            "{flag}: {result:?}"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while served
            .log()
            .matches("which has no C-STORE outstanding")
            .count()
            <= n
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{flag}: {}",
                served.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Aborted with transfers read ahead: their files and the lane's
        // segment closed.
        assert_segment_files_closed(&served, open_before, flag);
    }
    let out = files.path().join("after");
    let result = pynetdicom_get(served.port, &bulk[0].study, &out, &["--window", "4"]);
    assert_whole(&result, "1/4");
    assert_eq!(received(&out).len(), BULK);
    served.stop();
}
