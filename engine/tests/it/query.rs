//! The Query/Retrieve SCP end to end: `sluice serve` queried and retrieved
//! from by real SCUs (DCMTK findscu, movescu and getscu, pynetdicom, and
//! Orthanc through its REST API), with real destinations (DCMTK storescp, a
//! second `sluice serve`, Orthanc, and a pynetdicom SCP that is picky or
//! dies). The corpus is tests/fixtures/qr_corpus.py: four patients (one in
//! ISO 2022 IR 87, one in UTF-8), five studies, native images in Explicit
//! and Implicit VR Little Endian and Explicit VR Big Endian.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{
    dcmtk, free_port, part10_dataset, part10_meta_value, python, python_peer, run, scripts_dir,
    ChildGuard, PeerOutput,
};

use crate::serve::Served;

use crate::qr_corpus::{AE, PEER_TIMEOUT};

pub(crate) use crate::qr_corpus::{corpus, corpus_with, store_instances, Instance};

/// A server with the corpus stored; `extra` flags for `sluice serve`.
fn served_with_corpus(bulk: usize, extra: &[&str]) -> (Served, Vec<Instance>, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let instances = corpus(&files.path().join("corpus"), bulk);
    let mut flags = vec!["--transfer-syntaxes", "all"];
    flags.extend_from_slice(extra);
    let served = Served::start("uring", &flags);
    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store_instances(served.port, &instances)
    }));
    if let Err(panic) = stored {
        // The server's side of a failed load, to tell its cause from the
        // peer's.
        eprintln!("server log:\n{}", served.log());
        std::panic::resume_unwind(panic);
    }
    (served, instances, files)
}

fn qr_scu(args: &[&str]) -> PeerOutput {
    python_peer("qr_scu.py", args, PEER_TIMEOUT)
}

/// Every response identifier of a DCMTK `findscu` run (as JSON text, one
/// object per answer), and its log.
pub(crate) fn findscu(port: u16, args: &[&str]) -> (Vec<String>, String) {
    let out = tempfile::tempdir().unwrap();
    let output = run(
        Command::new(dcmtk("findscu"))
            .current_dir(out.path())
            .env("TCP_NODELAY", "1")
            .args(["-v", "-aec", AE, "-X"])
            .args(args)
            .args(["127.0.0.1", &port.to_string()]),
        PEER_TIMEOUT,
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "dcm"))
        .collect();
    files.sort();
    if files.is_empty() {
        return (Vec::new(), log);
    }
    let mut args = vec!["dump".to_owned()];
    args.extend(files.iter().map(|path| path.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dumped = python_peer("qr_scu.py", &args, PEER_TIMEOUT).0;
    // One JSON object per answer: split the array at its top-level braces.
    let answers = dumped
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split("}, {")
        .map(str::to_owned)
        .collect();
    (answers, log)
}

fn count_with(answers: &[String], fragment: &str) -> usize {
    answers
        .iter()
        .filter(|answer| answer.contains(fragment))
        .count()
}

/// A DCMTK storescp on a free port, storing under `dir`.
pub(crate) fn storescp(ae: &str, dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let child = Command::new(dcmtk("storescp"))
        .env("TCP_NODELAY", "1")
        .args(["-aet", ae, "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start storescp");
    wait_listening(port);
    (ChildGuard::new(child), port)
}

/// The pynetdicom destination (tests/fixtures/qr_dest.py) with `args`.
fn qr_dest(dir: &Path, args: &[&str]) -> (ChildGuard, u16) {
    let port = free_port();
    let child = Command::new(python())
        .arg(scripts_dir().join("qr_dest.py"))
        .arg(port.to_string())
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qr_dest.py");
    wait_listening(port);
    (ChildGuard::new(child), port)
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every Part 10 file under `dir`, by SOP Instance UID.
pub(crate) fn received(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
                    found.insert(part10_meta_value(&bytes, 0x0002, 0x0003), bytes);
                }
            }
        }
    }
    found
}

/// Waits until `dir` holds `count` Part 10 files.
pub(crate) fn wait_received(dir: &Path, count: usize) -> BTreeMap<String, Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = received(dir);
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that each of `instances` arrived with its data set byte for
/// byte as stored.
pub(crate) fn assert_same_data_sets(instances: &[&Instance], arrived: &BTreeMap<String, Vec<u8>>) {
    for instance in instances {
        let bytes = arrived
            .get(&instance.sop)
            .unwrap_or_else(|| panic!("{} did not arrive", instance.sop));
        let original = std::fs::read(&instance.file).unwrap();
        assert!(
            part10_dataset(bytes) == part10_dataset(&original),
            "{} arrived changed",
            instance.sop
        );
    }
}

#[test]
fn findscu_queries_every_level_with_every_matching_rule() {
    let (served, instances, _files) = served_with_corpus(0, &[]);
    let port = served.port;
    let study_a1 = &instances
        .iter()
        .find(|i| i.file.ends_with("A1_1_1.dcm"))
        .unwrap()
        .study;

    // STUDY level by Patient ID, with computed keys.
    let (answers, log) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=QR-PAT-A",
            "-k",
            "StudyInstanceUID",
            "-k",
            "NumberOfStudyRelatedInstances",
            "-k",
            "NumberOfStudyRelatedSeries",
            "-k",
            "ModalitiesInStudy",
            "-k",
            "StudyDescription",
        ],
    );
    assert_eq!(answers.len(), 2, "{log}");
    assert_eq!(
        count_with(&answers, "\"NumberOfStudyRelatedInstances\": \"5\""),
        1,
        "{answers:?}"
    );
    assert_eq!(
        count_with(&answers, "\"ModalitiesInStudy\": \"CT\\\\MR\""),
        1,
        "{answers:?}"
    );
    assert_eq!(
        count_with(&answers, "\"NumberOfStudyRelatedSeries\": \"2\""),
        1
    );
    assert_eq!(count_with(&answers, "\"RetrieveAETitle\": \"SLUICE\""), 2);

    // Wildcard on a name, a date range, a UID list.
    let (answers, _) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=Doe*",
            "-k",
            "StudyInstanceUID",
        ],
    );
    assert_eq!(answers.len(), 2);
    let (answers, _) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=20231101-20240131",
            "-k",
            "AccessionNumber",
        ],
    );
    assert_eq!(answers.len(), 2);
    assert_eq!(count_with(&answers, "ACC-A1"), 1);
    assert_eq!(count_with(&answers, "ACC-B1"), 1);
    let (answers, _) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "AccessionNumber=ACC-?1",
            "-k",
            "StudyTime=-1200",
        ],
    );
    // ACC-A1 (10:15), ACC-J1 (12:00) and ACC-U1 (08:00); not ACC-B1 (14:00).
    assert_eq!(answers.len(), 3, "{answers:?}");

    // SERIES and IMAGE levels under one study (hierarchical).
    let (answers, _) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            &format!("StudyInstanceUID={study_a1}"),
            "-k",
            "SeriesInstanceUID",
            "-k",
            "Modality",
            "-k",
            "NumberOfSeriesRelatedInstances",
        ],
    );
    assert_eq!(answers.len(), 2);
    assert_eq!(
        count_with(&answers, "\"NumberOfSeriesRelatedInstances\": \"3\""),
        1
    );
    for modality in ["CT", "MR"] {
        let series: std::collections::BTreeSet<&str> = instances
            .iter()
            .filter(|i| &i.study == study_a1 && i.modality == modality)
            .map(|i| i.series.as_str())
            .collect();
        assert_eq!(
            count_with(&answers, &format!("\"Modality\": \"{modality}\"")),
            series.len()
        );
    }
    let series_ct = &instances
        .iter()
        .find(|i| i.file.ends_with("A1_1_1.dcm"))
        .unwrap()
        .series;
    let (answers, _) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &format!("StudyInstanceUID={study_a1}"),
            "-k",
            &format!("SeriesInstanceUID={series_ct}"),
            "-k",
            "SOPInstanceUID",
            "-k",
            "InstanceNumber=2",
        ],
    );
    assert_eq!(answers.len(), 1);

    // PATIENT level of Patient Root, with its counts.
    let (answers, _) = findscu(
        port,
        &[
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
            "-k",
            "PatientName",
            "-k",
            "NumberOfPatientRelatedStudies",
            "-k",
            "NumberOfPatientRelatedInstances",
        ],
    );
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(
        count_with(&answers, "\"NumberOfPatientRelatedStudies\": \"2\""),
        1
    );
    assert_eq!(
        count_with(&answers, "\"NumberOfPatientRelatedInstances\": \"7\""),
        1
    );

    // A key the index does not hold: answered empty, with FF01.
    let (answers, log) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=QR-PAT-B",
            "-k",
            "0010,2160",
        ],
    );
    assert_eq!(answers.len(), 1);
    assert!(
        log.contains("Pending: WarningUnsupportedOptionalKeys"),
        "{log}"
    );

    // Bad identifiers: A900 / C000 with the reason, logged.
    let (answers, log) = findscu(
        port,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=2024x",
        ],
    );
    assert!(answers.is_empty());
    assert!(
        log.to_lowercase().contains("a900") || log.contains("DataSetDoesNotMatchSOPClass"),
        "{log}"
    );
    let (_, log) = findscu(
        port,
        &["-S", "-k", "QueryRetrieveLevel=SERIES", "-k", "Modality=CT"],
    );
    assert!(
        log.to_lowercase().contains("a900") || log.contains("DataSetDoesNotMatchSOPClass"),
        "a hierarchical SERIES query without its study: {log}"
    );
    let server_log = served.stop();
    assert!(server_log.contains("C-FIND refused"), "{server_log}");
    assert!(
        server_log.contains("StudyDate"),
        "the reason names the key: {server_log}"
    );
}

#[test]
fn movescu_to_storescp_and_to_a_second_sluice_byte_for_byte() {
    let destination_dir = tempfile::tempdir().unwrap();
    let (_storescp, storescp_port) = storescp("STORESCP", destination_dir.path());
    let second = Served::start(
        "uring",
        &["--transfer-syntaxes", "all", "--ae-title", "SECOND"],
    );
    let (served, instances, _files) = served_with_corpus(
        0,
        &[
            "--remote-ae",
            &format!("STORESCP=127.0.0.1:{storescp_port}"),
            "--remote-ae",
            &format!("SECOND=127.0.0.1:{}", second.port),
        ],
    );
    let study_a1: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.file.to_string_lossy().contains("/A1_"))
        .collect();
    assert_eq!(study_a1.len(), 5);
    let output = run(
        Command::new(dcmtk("movescu"))
            .env("TCP_NODELAY", "1")
            .args(["-v", "-S", "-aec", AE, "-aem", "STORESCP"])
            .args([
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &format!("StudyInstanceUID={}", study_a1[0].study),
            ])
            .args(["127.0.0.1", &served.port.to_string()]),
        PEER_TIMEOUT,
    );
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("Final Move Response (Success)"), "{log}");
    let arrived = wait_received(destination_dir.path(), 5);
    assert_eq!(arrived.len(), 5);
    assert_same_data_sets(&study_a1, &arrived);

    // To a second Sluice, at PATIENT level (Patient Root): every study of
    // the patient, each instance indexed there as stored.
    let patient_a: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.patient_id == "QR-PAT-A")
        .collect();
    let output = run(
        Command::new(dcmtk("movescu"))
            .env("TCP_NODELAY", "1")
            .args(["-v", "-P", "-aec", AE, "-aem", "SECOND"])
            .args([
                "-k",
                "QueryRetrieveLevel=PATIENT",
                "-k",
                "PatientID=QR-PAT-A",
            ])
            .args(["127.0.0.1", &served.port.to_string()]),
        PEER_TIMEOUT,
    );
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(log.contains("Final Move Response (Success)"), "{log}");
    // Every C-STORE was answered (and so stored) before the final response.
    let arrived = second.stored();
    assert_eq!(arrived.len(), patient_a.len());
    assert_same_data_sets(&patient_a, &arrived);
    let server_log = served.stop();
    assert!(server_log.contains("retrieve answered"), "{server_log}");
    assert!(server_log.contains("completed=7"), "{server_log}");
}

#[test]
fn getscu_and_pynetdicom_get_receive_on_the_same_association() {
    let (served, instances, files) = served_with_corpus(0, &[]);
    let series: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.file.to_string_lossy().contains("/A1_1_"))
        .collect();
    assert_eq!(series.len(), 3);
    let out = files.path().join("getscu");
    let log = getscu_study_root(
        served.port,
        &out,
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={}", series[0].study),
            &format!("SeriesInstanceUID={}", series[0].series),
        ],
    );
    assert!(
        log.contains("Number of Completed Suboperations : 3"),
        "{log}"
    );
    let arrived = received(&out);
    assert_same_data_sets(&series, &arrived);

    // pynetdicom, relational (no study UID): the Implicit VR series is
    // offered Explicit first by the SCU and sent transcoded when needed.
    let mr: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.file.to_string_lossy().contains("/A1_2_"))
        .collect();
    let out = files.path().join("pynetdicom");
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "{}"}}"#,
        mr[0].series
    );
    pynetdicom_get(served.port, &keys, &out, &["--relational"], 2);
    assert_eq!(received(&out).len(), 2);
}

/// One DCMTK getscu (Study Root) of `keys` into `out` (made); its log.
pub(crate) fn getscu_study_root(port: u16, out: &Path, keys: &[&str]) -> String {
    std::fs::create_dir_all(out).unwrap();
    let mut command = Command::new(dcmtk("getscu"));
    command
        .env("TCP_NODELAY", "1")
        .args(["-v", "-S", "-aec", AE, "-od"])
        .arg(out);
    for key in keys {
        command.args(["-k", key]);
    }
    let output = run(command.args(["127.0.0.1", &port.to_string()]), PEER_TIMEOUT);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// C-GETs of instances larger than a send chunk (256 KiB: several chunks
/// each, the first read ahead while the previous instance's C-STORE-RSP is
/// awaited, `transfer.rs`'s `Transfer::prime`) arrive byte for byte at
/// every maximum PDU length DCMTK getscu can ask for, on both layouts, sent
/// both ways (`query.retrieve_send`): by splice from the file to the socket
/// (the PDUs' headers and the command written into the association's pipe
/// between the file's runs) and by copy; the metrics say which way each
/// data set went.
#[test]
fn a_get_arrives_byte_for_byte_at_every_pdu_length_the_peer_asks() {
    use crate::monitoring::{scrape, value};
    let files = tempfile::tempdir().unwrap();
    let bulk: Vec<Instance> = corpus_with(&files.path().join("corpus"), 6, Some(600_000))
        .into_iter()
        .filter(|instance| instance.patient_id == "QR-PAT-BULK")
        .collect();
    assert_eq!(bulk.len(), 6);
    let bulk_refs: Vec<&Instance> = bulk.iter().collect();
    let pdus = ["4096", "16384", "131072"];
    for layout in ["segments", "files"] {
        for send in ["splice", "copy"] {
            let metrics_port = free_port().to_string();
            let served = Served::start(
                "uring",
                &[
                    "--storage-layout",
                    layout,
                    "--query-retrieve-send",
                    send,
                    "--metrics-port",
                    &metrics_port,
                ],
            );
            store_instances(served.port, &bulk);
            for pdu in pdus {
                let out = files.path().join(format!("get-{layout}-{send}-{pdu}"));
                std::fs::create_dir_all(&out).unwrap();
                let output = run(
                    Command::new(dcmtk("getscu"))
                        .env("TCP_NODELAY", "1")
                        .args(["-v", "-S", "-aec", AE, "--max-pdu", pdu, "-od"])
                        .arg(&out)
                        .args(["-k", "QueryRetrieveLevel=STUDY"])
                        .args(["-k", &format!("StudyInstanceUID={}", bulk[0].study)])
                        .args(["127.0.0.1", &served.port.to_string()]),
                    PEER_TIMEOUT,
                );
                let log = String::from_utf8_lossy(&output.stderr).into_owned();
                assert!(
                    log.contains("Number of Completed Suboperations : 6"),
                    "{layout}, {send}, max PDU {pdu}: {log}"
                );
                let arrived = received(&out);
                assert_eq!(arrived.len(), 6, "{layout}, {send}, max PDU {pdu}");
                assert_same_data_sets(&bulk_refs, &arrived);
            }
            let samples = scrape(metrics_port.parse().unwrap());
            let sent = (6 * pdus.len()) as f64;
            let (spliced, copied) = (
                value(&samples, "sluice_retrieve_data_sets_spliced_total", &[]),
                value(&samples, "sluice_retrieve_data_sets_copied_total", &[]),
            );
            match send {
                "splice" => assert_eq!((spliced, copied), (sent, 0.0), "{layout}"),
                _ => assert_eq!((spliced, copied), (0.0, sent), "{layout}"),
            }
            served.stop();
        }
    }
}

/// With `query.retrieve_send = "splice"`, a C-MOVE to a destination
/// reached over TLS still sends by copy (its bytes are encrypted in user
/// space: no splice), one to a plain destination by splice; both arrive
/// whole, from the same server.
#[test]
fn a_move_over_tls_is_sent_by_copy_and_a_plain_one_by_splice() {
    use crate::monitoring::{scrape, value};
    use crate::tls::{
        certificates, move_study, storescp_destination, storescp_tls_args, study_uids, tls_flags,
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(&dir.path().join("certs"));
    let instances = corpus(&dir.path().join("corpus"), 0);
    let tls_args = storescp_tls_args(&certs);
    let (_tls_destination, tls_port_destination) =
        storescp_destination(&dir.path().join("over-tls"), &tls_args);
    let (_plain_destination, plain_port_destination) =
        storescp_destination(&dir.path().join("plain"), &[]);
    let metrics_port = free_port();
    let mut args = tls_flags(&certs, free_port());
    args.extend([
        "--query-retrieve-send".to_owned(),
        "splice".to_owned(),
        "--transfer-syntaxes".to_owned(),
        "all".to_owned(),
        "--metrics-port".to_owned(),
        metrics_port.to_string(),
        "--remote-ae".to_owned(),
        format!("DEST=tls://127.0.0.1:{tls_port_destination}"),
        "--remote-ae".to_owned(),
        format!("PLAIN=127.0.0.1:{plain_port_destination}"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let served = Served::start("uring", &args);
    store_instances(served.port, &instances);
    let port = served.port.to_string();
    let studies = study_uids(&port);
    let count = |samples: &[crate::monitoring::Sample]| {
        (
            value(samples, "sluice_retrieve_data_sets_spliced_total", &[]),
            value(samples, "sluice_retrieve_data_sets_copied_total", &[]),
        )
    };
    let study = &studies[0];
    let in_study = instances.iter().filter(|i| &i.study == study).count();
    assert!(in_study > 0);
    move_study(&port, study, "DEST");
    let arrived = std::fs::read_dir(dir.path().join("over-tls"))
        .unwrap()
        .count();
    assert_eq!(arrived, in_study, "moved over TLS");
    let (spliced, copied) = count(&scrape(metrics_port));
    assert_eq!(spliced, 0.0, "nothing spliced over TLS");
    assert!(copied >= in_study as f64, "{copied}");
    move_study(&port, study, "PLAIN");
    let arrived = std::fs::read_dir(dir.path().join("plain")).unwrap().count();
    assert_eq!(arrived, in_study, "moved in plain");
    let (spliced_after, copied_after) = count(&scrape(metrics_port));
    // Native data the destination takes only in another syntax is
    // transcoded, which copies; storescp takes every stored syntax.
    assert_eq!(spliced_after, in_study as f64, "the plain move spliced");
    assert_eq!(copied_after, copied);
    served.stop();
}

/// A pynetdicom C-GET (Study Root, calling AE PYGET) of `keys` into
/// `out`, with `extra` flags, answered 0000 with `completed` sub-operations
/// completed; its output.
fn pynetdicom_get(
    port: u16,
    keys: &str,
    out: &Path,
    extra: &[&str],
    completed: usize,
) -> PeerOutput {
    let port = port.to_string();
    let out = out.to_str().unwrap();
    let mut args = vec!["get", port.as_str(), AE, "PYGET", "study", keys, out];
    args.extend_from_slice(extra);
    let result = qr_scu(&args);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}"
    );
    assert_eq!(
        result.string("final_counts").as_deref(),
        Some(format!("-/{completed}/0/0").as_str()),
        "{result:?}"
    );
    result
}

/// On the segments layout a retrieve sends its records in the order they
/// lie on disk (segment, then offset: here the order they were stored in),
/// not in the index's listing order (series, then SOP Instance UID), so a
/// retrieve from a cold page cache reads its segments front to back
/// (`scp/query/resolve.rs`, `in_read_order`). The instances are stored in
/// descending SOP Instance UID order, which the index never lists them in.
#[test]
fn a_retrieve_sends_records_in_the_order_they_lie_in_their_segment() {
    const BULK: usize = 24;
    let files = tempfile::tempdir().unwrap();
    let mut bulk: Vec<Instance> = corpus(&files.path().join("corpus"), BULK)
        .into_iter()
        .filter(|instance| instance.patient_id == "QR-PAT-BULK")
        .collect();
    assert_eq!(bulk.len(), BULK);
    bulk.sort_by(|a, b| b.sop.cmp(&a.sop));
    let served = Served::start("uring", &["--storage-layout", "segments"]);
    // One association (fewer than a batch): one core, one segment, the
    // records appended in this order.
    store_instances(served.port, &bulk);
    let out = files.path().join("get");
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{}"}}"#,
        bulk[0].study
    );
    let result = pynetdicom_get(served.port, &keys, &out, &[], BULK);
    // qr_scu lists the files it wrote in the order their C-STOREs came.
    let arrival: Vec<usize> = bulk
        .iter()
        .map(|instance| {
            result
                .0
                .find(&format!("/{}.dcm", instance.sop))
                .unwrap_or_else(|| panic!("{} not received: {result:?}", instance.sop))
        })
        .collect();
    assert!(
        arrival.windows(2).all(|pair| pair[0] < pair[1]),
        "the records were not sent in the order they were stored: {result:?}"
    );
    served.stop();
}

#[test]
fn pynetdicom_relational_queries_character_sets_and_cancel() {
    let (served, _instances, _files) = served_with_corpus(300, &[]);
    let port = served.port.to_string();

    // Relational IMAGE query by a series key alone: granted, answered.
    let keys = r#"{"QueryRetrieveLevel": "IMAGE", "Modality": "MR", "PatientID": "QR-PAT-A", "SOPInstanceUID": null}"#;
    let result = qr_scu(&["find", &port, AE, "PYFIND", "study", keys, "--relational"]);
    assert!(
        result.has("\"extended\": {\"1.2.840.10008.5.1.4.1.2.2.1\": \"01\"}"),
        "{result:?}"
    );
    assert_eq!(result.string("status_hex").as_deref(), Some("0000"));
    assert_eq!(
        result.string("uids").unwrap().split('|').count(),
        4,
        "{result:?}"
    );
    // Without the negotiation it is hierarchical: refused A900.
    let result = qr_scu(&["find", &port, AE, "PYFIND", "study", keys]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("A900"),
        "{result:?}"
    );

    // Character sets: a Japanese name stored in ISO 2022 IR 87, found by
    // its ideographic group sent in UTF-8 and by its phonetic group sent in
    // ISO 2022 IR 87; a UTF-8 name found in UTF-8. Answers decode to the
    // stored names.
    let name_keys = |name: &str| {
        format!(r#"{{"QueryRetrieveLevel": "STUDY", "PatientName": "{name}", "PatientID": null}}"#)
    };
    let result = qr_scu(&[
        "find",
        &port,
        AE,
        "PYFIND",
        "study",
        &name_keys("山田*"),
        "--charset",
        "ISO_IR 192",
    ]);
    assert!(result.has("\"PatientID\": \"QR-PAT-J\""), "{result:?}");
    assert!(
        result.has("\\u5c71\\u7530^\\u592a\\u90ce"),
        "the ideographic group comes back: {result:?}"
    );
    let result = qr_scu(&[
        "find",
        &port,
        AE,
        "PYFIND",
        "study",
        &name_keys("やまだ*"),
        "--charset",
        "\\ISO 2022 IR 87",
    ]);
    assert!(result.has("\"PatientID\": \"QR-PAT-J\""), "{result:?}");
    let result = qr_scu(&[
        "find",
        &port,
        AE,
        "PYFIND",
        "study",
        &name_keys("王^小明"),
        "--charset",
        "ISO_IR 192",
    ]);
    assert!(result.has("\"PatientID\": \"QR-PAT-U\""), "{result:?}");
    assert_eq!(result.string("uids").unwrap().split('|').count(), 1);
    let result = qr_scu(&[
        "find",
        &port,
        AE,
        "PYFIND",
        "study",
        &name_keys("Yamada^Tarou"),
    ]);
    assert!(result.has("\"PatientID\": \"QR-PAT-J\""), "{result:?}");

    // C-CANCEL mid-stream: 300 matches, the C-CANCEL sent right behind the
    // C-FIND; Sluice answers a page at a time and stops at the cancel.
    let bulk =
        r#"{"QueryRetrieveLevel": "IMAGE", "PatientID": "QR-PAT-BULK", "SOPInstanceUID": null}"#;
    let result = qr_scu(&[
        "find",
        &port,
        AE,
        "PYFIND",
        "study",
        bulk,
        "--relational",
        "--cancel-pipelined",
    ]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("FE00"),
        "{result:?}"
    );
    let answered = result.string("uids").unwrap().split('|').count();
    assert!(
        (1..300).contains(&answered),
        "{answered} answers before the cancel took"
    );
    let result = qr_scu(&["find", &port, AE, "PYFIND", "study", bulk, "--relational"]);
    assert_eq!(result.string("uids").unwrap().split('|').count(), 300);
}

#[test]
fn find_result_limit_is_a_clear_failure() {
    let (served, _instances, _files) = served_with_corpus(20, &["--query-find-results-max", "5"]);
    let keys =
        r#"{"QueryRetrieveLevel": "IMAGE", "PatientID": "QR-PAT-BULK", "SOPInstanceUID": null}"#;
    let result = qr_scu(&[
        "find",
        &served.port.to_string(),
        AE,
        "PYFIND",
        "study",
        keys,
        "--relational",
    ]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("A700"),
        "{result:?}"
    );
    assert_eq!(result.string("uids").unwrap().split('|').count(), 5);
    assert!(result.has("query.find_results_max"), "{result:?}");
    let log = served.stop();
    assert!(
        log.contains("more matches than query.find_results_max"),
        "{log}"
    );
}

#[test]
fn access_rules_and_unknown_destinations_are_refused() {
    let dest_dir = tempfile::tempdir().unwrap();
    let (_dest, dest_port) = qr_dest(dest_dir.path(), &[]);
    let (served, instances, _files) = served_with_corpus(
        0,
        &[
            "--query-find-from",
            "VIEWER",
            "--query-get-from",
            "none",
            "--query-move-destinations",
            "ALLOWED",
            "--remote-ae",
            &format!("ALLOWED=127.0.0.1:{dest_port}"),
            "--remote-ae",
            &format!("KNOWN=127.0.0.1:{dest_port}"),
        ],
    );
    let port = served.port.to_string();
    let keys = r#"{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": null}"#;
    // C-FIND only from VIEWER: another calling AE has no FIND context.
    let result = qr_scu(&["find", &port, AE, "OTHER", "study", keys]);
    assert!(
        result.has("\"associated\": false") || !result.has("1.2.840.10008.5.1.4.1.2.2.1"),
        "{result:?}"
    );
    let result = qr_scu(&["find", &port, AE, "VIEWER", "study", keys]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}"
    );
    // C-GET from nobody.
    let out = tempfile::tempdir().unwrap();
    let get_keys = format!(
        r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{}"}}"#,
        instances[0].study
    );
    let result = qr_scu(&[
        "get",
        &port,
        AE,
        "VIEWER",
        "study",
        &get_keys,
        out.path().to_str().unwrap(),
    ]);
    assert!(!result.has("1.2.840.10008.5.1.4.1.2.2.3"), "{result:?}");
    // C-MOVE to a known AE that is not allowed, and to an unknown one: A801.
    let move_keys = get_keys.clone();
    for destination in ["KNOWN", "NOBODY"] {
        let result = qr_scu(&[
            "move",
            &port,
            AE,
            "VIEWER",
            "study",
            &move_keys,
            destination,
        ]);
        assert_eq!(
            result.string("status_hex").as_deref(),
            Some("A801"),
            "{destination}: {result:?}"
        );
    }
    let result = qr_scu(&["move", &port, AE, "VIEWER", "study", &move_keys, "ALLOWED"]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}"
    );
    let log = served.stop();
    assert!(
        log.contains("Query/Retrieve refused to this calling AE"),
        "{log}"
    );
    assert!(
        log.contains("is not allowed (query.move_destinations)"),
        "{log}"
    );
    assert!(
        log.contains("is unknown (not in network.remote_aes)"),
        "{log}"
    );
}

#[test]
fn destinations_that_refuse_every_context_or_take_only_another_syntax() {
    let none_dir = tempfile::tempdir().unwrap();
    let (_none, none_port) = qr_dest(none_dir.path(), &["--classes", "none"]);
    let implicit_dir = tempfile::tempdir().unwrap();
    let (_implicit, implicit_port) = qr_dest(implicit_dir.path(), &["--syntaxes", "implicit"]);
    let (served, instances, _files) = served_with_corpus(
        0,
        &[
            "--remote-ae",
            &format!("NOCONTEXT=127.0.0.1:{none_port}"),
            "--remote-ae",
            &format!("IMPLICIT=127.0.0.1:{implicit_port}"),
        ],
    );
    let port = served.port.to_string();
    let study_b1: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.patient_id == "QR-PAT-B")
        .collect();
    assert!(
        study_b1.iter().any(|i| i.syntax == "1.2.840.10008.1.2.2"),
        "the corpus keeps one Big Endian instance to transcode"
    );
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{}"}}"#,
        study_b1[0].study
    );
    let result = qr_scu(&["move", &port, AE, "MOVER", "study", &keys, "NOCONTEXT"]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("A702"),
        "{result:?}"
    );
    assert_eq!(
        result.string("final_counts").as_deref(),
        Some("-/0/2/0"),
        "{result:?}"
    );
    assert!(
        result.has(&study_b1[0].sop) && result.has(&study_b1[1].sop),
        "the failed list: {result:?}"
    );
    assert!(received(none_dir.path()).is_empty());

    // Explicit VR LE and Big Endian data to a destination taking only
    // Implicit VR LE: transcoded, the same elements arrive.
    let result = qr_scu(&["move", &port, AE, "MOVER", "study", &keys, "IMPLICIT"]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}"
    );
    let arrived = wait_received(implicit_dir.path(), 2);
    assert_eq!(arrived.len(), 2);
    for instance in &study_b1 {
        let bytes = &arrived[&instance.sop];
        assert_eq!(
            sluice_tests::part10_transfer_syntax(bytes),
            "1.2.840.10008.1.2"
        );
        let compare = python_peer(
            "qr_scu.py",
            &["dump", instance.file.to_str().unwrap()],
            PEER_TIMEOUT,
        );
        let path = implicit_dir.path().join(format!("{}.dcm", instance.sop));
        let moved = python_peer("qr_scu.py", &["dump", path.to_str().unwrap()], PEER_TIMEOUT);
        assert_eq!(
            compare.0, moved.0,
            "{} changed in transcoding",
            instance.sop
        );
    }
    let log = served.stop();
    assert!(log.contains("retrieve answered"), "{log}");
}

#[test]
fn a_destination_that_dies_mid_move_fails_the_rest_and_the_server_goes_on() {
    let dest_dir = tempfile::tempdir().unwrap();
    let (_dest, dest_port) = qr_dest(dest_dir.path(), &["--die-after", "4"]);
    let (served, instances, _files) = served_with_corpus(
        20,
        &[
            "--remote-ae",
            &format!("FRAGILE=127.0.0.1:{dest_port}"),
            "--query-move-associations",
            "1",
        ],
    );
    let bulk = instances
        .iter()
        .find(|i| i.patient_id == "QR-PAT-BULK")
        .unwrap();
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{}"}}"#,
        bulk.study
    );
    let port = served.port.to_string();
    let result = qr_scu(&["move", &port, AE, "MOVER", "study", &keys, "FRAGILE"]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("B000"),
        "{result:?}"
    );
    assert_eq!(
        result.string("final_counts").as_deref(),
        Some("-/3/17/0"),
        "{result:?}"
    );
    // The server still answers.
    let result = qr_scu(&[
        "find",
        &port,
        AE,
        "PYFIND",
        "study",
        r#"{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": null}"#,
    ]);
    assert_eq!(result.string("status_hex").as_deref(), Some("0000"));
    let log = served.stop();
    assert!(
        log.contains("the association to the destination ended"),
        "{log}"
    );
}

#[test]
fn a_move_can_be_cancelled() {
    let dest_dir = tempfile::tempdir().unwrap();
    let (_dest, dest_port) = qr_dest(dest_dir.path(), &["--delay", "0.05"]);
    let (served, instances, _files) = served_with_corpus(
        40,
        &[
            "--remote-ae",
            &format!("SLOW=127.0.0.1:{dest_port}"),
            "--query-move-associations",
            "1",
        ],
    );
    let bulk = instances
        .iter()
        .find(|i| i.patient_id == "QR-PAT-BULK")
        .unwrap();
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{}"}}"#,
        bulk.study
    );
    let result = qr_scu(&[
        "move",
        &served.port.to_string(),
        AE,
        "MOVER",
        "study",
        &keys,
        "SLOW",
        "--cancel-after",
        "2",
    ]);
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("FE00"),
        "{result:?}"
    );
    let counts = result.string("final_counts").unwrap();
    let remaining: u32 = counts.split('/').next().unwrap().parse().unwrap();
    assert!(remaining > 0, "{counts}");
}

/// Orthanc as the Q/R SCU: it queries Sluice through its REST API
/// (`/modalities/sluice/query`) and retrieves the study into itself
/// (C-MOVE with Orthanc as the destination).
#[test]
fn orthanc_queries_and_retrieves_from_sluice() {
    let orthanc_dir = tempfile::tempdir().unwrap();
    let orthanc_dicom = free_port();
    let orthanc_http = free_port();
    let (served, instances, _files) = served_with_corpus(
        0,
        &["--remote-ae", &format!("ORTHANC=127.0.0.1:{orthanc_dicom}")],
    );
    let config = orthanc_dir.path().join("orthanc.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"Name": "qr-test", "StorageDirectory": "{dir}", "IndexDirectory": "{dir}",
               "HttpServerEnabled": true, "HttpPort": {orthanc_http}, "RemoteAccessAllowed": false,
               "AuthenticationEnabled": false, "DicomServerEnabled": true, "DicomAet": "ORTHANC",
               "DicomPort": {orthanc_dicom}, "DicomCheckCalledAet": false,
               "DicomModalities": {{ "sluice": ["SLUICE", "127.0.0.1", {sluice}] }},
               "Plugins": [], "LuaScripts": []}}"#,
            dir = orthanc_dir.path().join("storage").display(),
            sluice = served.port,
        ),
    )
    .unwrap();
    let orthanc = Command::new("/usr/sbin/Orthanc")
        .arg(&config)
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Orthanc at /usr/sbin/Orthanc");
    let _orthanc = ChildGuard::new(orthanc);
    wait_listening(orthanc_http);
    let study_a2: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.file.to_string_lossy().contains("/A2_"))
        .collect();
    let result = python_peer(
        "orthanc_qr.py",
        &[
            &orthanc_http.to_string(),
            "sluice",
            "QR-PAT-A",
            &study_a2[0].study,
        ],
        PEER_TIMEOUT,
    );
    assert!(result.has("\"studies_found\": 2"), "{result:?}");
    assert!(
        result.has(&format!("\"instances_in_orthanc\": {}", study_a2.len())),
        "{result:?}"
    );
    let log = served.stop();
    assert!(log.contains("calling_ae=ORTHANC"), "{log}");
}

/// The embedding API's query functions answer as the SCP does: `find` the
/// identifiers a C-FIND gets, `datasets_matching` the instances a retrieve
/// sends, whose bytes the store's read API gives back as stored.
#[test]
fn the_embedding_api_finds_and_lists_what_the_scp_serves() {
    use sluice_engine::config::Config;
    use sluice_engine::scp::Server;
    use sluice_engine::store::Store;
    use sluice_net::query::model::tags;
    use sluice_net::query::{
        IdentifierBuilder, InformationModel, Level, Operation, Query, QueryContext,
    };

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cores",
        "1",
        "--free-space-floor",
        "0",
        "--transfer-syntaxes",
        "all",
    ])
    .unwrap();
    let store = Store::open(config).unwrap();
    let server = Server::start(&store).unwrap();
    let instances = corpus(&dir.path().join("corpus"), 0);
    store_instances(port, &instances);

    let query = |level: Level, keys: &[(sluice_net::dimse::Tag, &str)], operation: Operation| {
        let mut builder = IdentifierBuilder::new(level);
        for (tag, value) in keys {
            builder = builder.key(*tag, value);
        }
        let encoding = sluice_net::dimse::dataset::SmallDatasetEncoding::ExplicitVrLittleEndian;
        Query::decode(
            &builder.encode(encoding).unwrap(),
            encoding,
            &QueryContext::new(InformationModel::StudyRoot, operation),
        )
        .unwrap()
    };
    let found = store
        .find(
            &query(
                Level::Study,
                &[
                    (tags::PATIENT_ID, "QR-PAT-A"),
                    (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, ""),
                ],
                Operation::Find,
            ),
            10,
        )
        .unwrap();
    assert_eq!(found.answers.len(), 2);
    assert!(!found.truncated);
    let counts: Vec<&str> = found
        .answers
        .iter()
        .map(|answer| {
            answer
                .identifier
                .str(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
                .unwrap()
        })
        .collect();
    assert!(counts.contains(&"5") && counts.contains(&"2"), "{counts:?}");
    let limited = store
        .find(
            &query(
                Level::Study,
                &[(tags::STUDY_INSTANCE_UID, "")],
                Operation::Find,
            ),
            3,
        )
        .unwrap();
    assert!(limited.truncated && limited.answers.len() == 3);

    let a1 = instances
        .iter()
        .find(|i| i.file.ends_with("A1_1_1.dcm"))
        .unwrap();
    let datasets = store
        .datasets_matching(
            &query(
                Level::Study,
                &[(tags::STUDY_INSTANCE_UID, &a1.study)],
                Operation::Move,
            ),
            100,
        )
        .unwrap();
    assert_eq!(datasets.len(), 5);
    for dataset in &datasets {
        let original = instances
            .iter()
            .find(|i| i.sop == dataset.triplet.sop_instance_uid)
            .unwrap();
        let bytes = store.read_dataset_head(dataset, u64::MAX).unwrap();
        assert!(bytes == part10_dataset(&std::fs::read(&original.file).unwrap()));
    }
    assert!(store
        .datasets_matching(
            &query(
                Level::Study,
                &[(tags::STUDY_INSTANCE_UID, &a1.study)],
                Operation::Move
            ),
            4,
        )
        .is_err());
    server.shutdown(Duration::from_secs(10)).unwrap();
}

/// SIGTERM during a C-MOVE: the drain waits for the retrieve's final
/// answer (every sub-operation completed, 0000) before it ends the
/// requester's association, as it does for a C-STORE.
#[test]
fn sigterm_during_a_move_answers_it_before_the_server_stops() {
    let dest_dir = tempfile::tempdir().unwrap();
    let (_dest, dest_port) = qr_dest(dest_dir.path(), &["--delay", "0.05"]);
    let (served, instances, _files) = served_with_corpus(
        40,
        &[
            "--remote-ae",
            &format!("SLOW=127.0.0.1:{dest_port}"),
            "--query-move-associations",
            "1",
            "--shutdown-drain-ms",
            "120000",
        ],
    );
    let bulk = instances
        .iter()
        .find(|i| i.patient_id == "QR-PAT-BULK")
        .unwrap();
    let in_study = instances.iter().filter(|i| i.study == bulk.study).count();
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{}"}}"#,
        bulk.study
    );
    let port = served.port.to_string();
    let mover =
        std::thread::spawn(move || qr_scu(&["move", &port, AE, "MOVER", "study", &keys, "SLOW"]));
    // Some sub-operations done, most still to come.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(dest_dir.path()).map_or(0, Iterator::count) < 3 {
        assert!(Instant::now() < deadline, "the move did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &served.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = mover.join().unwrap();
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}\n{}",
        served.log()
    );
    assert_eq!(
        std::fs::read_dir(dest_dir.path()).unwrap().count(),
        in_study,
        "every instance moved"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !served
        .log()
        .contains("drained: every request answered, every association ended")
    {
        assert!(Instant::now() < deadline, "no drain: {}", served.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One DCMTK getscu of every instance of patient `PEER1` (Patient Root),
/// into `out`: the number of completed sub-operations it reports.
pub(crate) fn getscu_patient(port: u16, out: &Path) -> usize {
    std::fs::create_dir_all(out).unwrap();
    let output = run(
        Command::new(dcmtk("getscu"))
            .env("TCP_NODELAY", "1")
            .args(["-v", "-P", "-aec", AE, "-od"])
            .arg(out)
            .args(["-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PEER1"])
            .args(["127.0.0.1", &port.to_string()]),
        PEER_TIMEOUT,
    );
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    log.lines()
        .find_map(|line| {
            line.split_once("Number of Completed Suboperations : ")
                .and_then(|(_, count)| count.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("getscu reported no completed count: {log}"))
}

/// Retrieval beside ingest on one core (`query.retrieve_share_under_ingest`,
/// here 5%): a C-GET alone is never held back; while sluice-loadgen stores
/// on the same core, the C-GET's chunks are held back (the metric counts
/// them), the C-GET still completes every sub-operation, and C-STORE
/// answers keep coming while it runs.
#[test]
fn retrieval_keeps_to_its_share_while_ingest_waits() {
    use crate::monitoring::{scrape, value};
    const RETRIEVED: usize = 24;
    let metrics_port = free_port();
    let served = Served::start(
        "uring",
        &[
            "--cores",
            "1",
            "--metrics-port",
            &metrics_port.to_string(),
            "--query-retrieve-share-under-ingest",
            "5",
        ],
    );
    let files = tempfile::tempdir().unwrap();
    let study = files.path().join("study");
    std::fs::create_dir_all(&study).unwrap();
    // 512 x 512 pixels of 16 bits: 512 KiB each.
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("sluice_peer.py"))
            .args([
                "write",
                study.to_str().unwrap(),
                &RETRIEVED.to_string(),
                "512",
            ]),
        PEER_TIMEOUT,
    );
    assert!(output.status.success(), "{output:?}");
    let stored = run(
        Command::new(dcmtk("storescu"))
            .env("TCP_NODELAY", "1")
            .args(["-aec", AE, "+sd", "127.0.0.1", &served.port.to_string()])
            .arg(&study),
        PEER_TIMEOUT,
    );
    assert!(stored.status.success(), "{stored:?}");
    let deferred = || {
        value(
            &scrape(metrics_port),
            "sluice_retrieve_chunks_deferred_total",
            &[],
        )
    };
    let answered = || {
        value(
            &scrape(metrics_port),
            "sluice_store_answers_total",
            &[("status", "0000")],
        )
    };

    // Alone: every chunk goes at once.
    assert_eq!(
        getscu_patient(served.port, &files.path().join("alone")),
        RETRIEVED
    );
    assert_eq!(deferred(), 0.0, "a retrieve alone was held back");

    // Beside ingest: loadgen sends until the C-GETs below are done (a
    // fixed duration was a race: on a loaded machine a C-GET held to its
    // share takes long enough that ingest ended before two ran beside it).
    let port = served.port;
    let loadgen = sluice_tests::binaries::workspace_binary("sluice-loadgen", "sluice-loadgen");
    let mut loadgen = ChildGuard::new(
        Command::new(loadgen)
            .args(["run", "--target", &format!("127.0.0.1:{port}"), "--quiet"])
            .args([
                "--calling-ae",
                "INGEST",
                "--associations",
                "4",
                "--cores",
                "1",
            ])
            .args(["--mix", "ct", "--duration", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(files.path().join("loadgen.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let sending = |loadgen: &mut ChildGuard| {
        let exited = loadgen.child_mut().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "loadgen stopped ({exited:?}): {}",
            std::fs::read_to_string(files.path().join("loadgen.log")).unwrap_or_default()
        );
    };
    let started = Instant::now();
    while answered() <= RETRIEVED as f64 {
        sending(&mut loadgen);
        assert!(
            started.elapsed() < PEER_TIMEOUT,
            "ingest never got going:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two C-GETs run whole while ingest goes on (C-STOREs answered during
    // each, loadgen still sending after it).
    let mut retrieves = 0;
    while retrieves < 2 {
        let before = answered();
        let out = files.path().join(format!("beside-{retrieves}"));
        assert_eq!(getscu_patient(served.port, &out), RETRIEVED);
        let after = answered();
        sending(&mut loadgen);
        assert!(after > before, "no C-STORE answered during a C-GET");
        std::fs::remove_dir_all(&out).unwrap();
        retrieves += 1;
    }
    drop(loadgen);
    assert!(
        deferred() > 0.0,
        "ingest was waiting, yet no retrieve chunk was held back:\n{}",
        served.log()
    );
    served.stop();
}

/// Read-your-answers under ingest: a C-STORE answered when applied (its
/// index commit still running) is found by a C-FIND sent on the same
/// association as soon as the answer is in, 150 times, while 8 other
/// associations store beside it (so commits are in flight all the time);
/// the C-FIND waits for that commit without blocking its core.
#[test]
fn an_instance_is_found_as_soon_as_its_store_is_answered() {
    let served = Served::start("uring", &[]);
    let _load = crate::serve::background_load(served.port, 8, 120, Some("cr"));
    std::thread::sleep(Duration::from_millis(500));
    let port = served.port.to_string();
    let out = python_peer(
        "store_then_find.py",
        &[&port, AE, "READER", "150"],
        PEER_TIMEOUT,
    );
    assert!(out.has("\"stored\": 150"), "{}", out.0);
    assert!(out.has("\"found\": 150"), "{}", out.0);
    assert!(out.has("\"missed\": []"), "{}", out.0);
}
