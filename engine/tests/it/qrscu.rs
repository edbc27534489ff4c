//! The Query/Retrieve SCU (`sluice query`, `retrieve`, `prefetch`) end to
//! end against real remote archives: DCMTK `dcmqrscp` (configured here)
//! and Orthanc, loaded with the Q/R corpus (tests/fixtures/qr_corpus.py)
//! by `storescu` over one association; C-MOVE into a real `sluice serve`
//! and C-GET through the embedded engine, what landed checked byte for
//! byte against the corpus; statuses and failures (unknown remote AE, a
//! remote that rejects us, one that never answers, a key with a bad value)
//! checked for their messages.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{dcmtk, free_port, part10_dataset, run, ChildGuard};

use crate::ingest::files_under;
use crate::query::Instance;
use crate::serve::{stored_instances, Served};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The Q/R corpus (tests/fixtures/qr_corpus.py), no bulk study.
fn corpus(dir: &Path) -> Vec<Instance> {
    crate::query::corpus(dir, 0)
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A remote archive process and where it listens.
struct Archive {
    _guard: ChildGuard,
    ae: &'static str,
    port: u16,
    /// Where it keeps its Part 10 files.
    storage: PathBuf,
}

/// DCMTK `dcmqrscp` as AE `QRSCP`, knowing `SLUICE` at `sluice_port`.
fn dcmqrscp(dir: &Path, sluice_port: u16) -> Archive {
    let port = free_port();
    let db = dir.join("dcmqrscp");
    std::fs::create_dir_all(&db).unwrap();
    let config = dir.join("dcmqrscp.cfg");
    std::fs::write(
        &config,
        format!(
            "NetworkTCPPort  = {port}\nMaxPDUSize      = 16384\nMaxAssociations = 16\n\
             HostTable BEGIN\nsluice = (SLUICE, 127.0.0.1, {sluice_port})\nHostTable END\n\
             VendorTable BEGIN\nVendorTable END\n\
             AETable BEGIN\nQRSCP {} RW (500, 1024mb) ANY\nAETable END\n",
            db.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/dcmqrscp")
        .env("TCP_NODELAY", "1")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("dcmqrscp.log")).unwrap())
        .spawn()
        .expect("start /usr/bin/dcmqrscp");
    let guard = ChildGuard::new(child);
    wait_listening(port, "dcmqrscp");
    Archive {
        _guard: guard,
        ae: "QRSCP",
        port,
        storage: db,
    }
}

/// Orthanc as AE `ORTHANC`, knowing `SLUICE` at `sluice_port`.
fn orthanc(dir: &Path, sluice_port: u16) -> Archive {
    let port = free_port();
    let storage = dir.join("orthanc");
    std::fs::create_dir_all(&storage).unwrap();
    let config = dir.join("orthanc.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"Name": "qrscu-test", "StorageDirectory": "{s}", "IndexDirectory": "{s}",
               "StorageCompression": false, "HttpServerEnabled": true, "HttpPort": {http},
               "RemoteAccessAllowed": false, "DicomServerEnabled": true, "DicomAet": "ORTHANC",
               "DicomPort": {port}, "DicomCheckCalledAet": true, "DicomAlwaysAllowStore": true,
               "DicomAlwaysAllowFind": true, "DicomAlwaysAllowGet": true,
               "DicomAlwaysAllowMove": true,
               "DicomModalities": {{"sluice": ["SLUICE", "127.0.0.1", {sluice_port}]}},
               "Plugins": [], "LuaScripts": []}}"#,
            s = storage.display(),
            http = free_port(),
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/Orthanc")
        .env("TCP_NODELAY", "1")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("orthanc.log")).unwrap())
        .spawn()
        .expect("start /usr/sbin/Orthanc");
    let guard = ChildGuard::new(child);
    wait_listening(port, "Orthanc");
    Archive {
        _guard: guard,
        ae: "ORTHANC",
        port,
        storage,
    }
}

/// Loads `instances` into `archive` with `storescu`, one association
/// (dcmqrscp can lose acknowledged stores across concurrent associations).
fn load(archive: &Archive, instances: &[Instance]) {
    let mut storescu = Command::new(dcmtk("storescu"));
    storescu
        .args(["-aec", archive.ae, "-aet", "LOADER"])
        .arg("127.0.0.1")
        .arg(archive.port.to_string());
    storescu.args(instances.iter().map(|instance| &instance.file));
    let output = run(&mut storescu, TIMEOUT);
    assert!(output.status.success(), "storescu: {output:?}");
}

/// A configuration file naming the archives in `network.remote_aes`.
fn config_file(dir: &Path, archives: &[&Archive]) -> PathBuf {
    let mut text = String::from("[network]\nae_title = \"SLUICE\"\n[network.remote_aes]\n");
    for archive in archives {
        text.push_str(&format!(
            "{} = \"127.0.0.1:{}\"\n",
            archive.ae, archive.port
        ));
    }
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `sluice ARGS --config CONFIG --data-dir DATA` (the media tests'
/// commands too), for at most 300 s.
pub(crate) fn sluice(args: &[&str], config: &Path, data: &Path) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data),
        Duration::from_secs(300),
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON lines of `sluice query --json`, parsed.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "sluice query: {output:?}");
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON line {line:?}")))
        .collect()
}

fn values(lines: &[serde_json::Value], key: &str) -> Vec<String> {
    let mut found: Vec<String> = lines
        .iter()
        .map(|line| line[key].as_str().unwrap_or("").to_owned())
        .collect();
    found.sort();
    found
}

fn studies_of(instances: &[Instance], patient: &str) -> Vec<String> {
    let mut studies: Vec<String> = instances
        .iter()
        .filter(|instance| instance.patient_id == patient)
        .map(|instance| instance.study.clone())
        .collect();
    studies.sort();
    studies.dedup();
    studies
}

/// Every instance of `study` is in `landed` (a data directory's stored
/// instances, as `serve::stored_instances` exports them) with the data set and transfer syntax of the file `archive` holds, byte
/// for byte (storescu may have converted a corpus file to the transfer
/// syntax the archive chose when it was loaded), and nothing else is.
fn assert_landed(
    landed: &BTreeMap<String, Vec<u8>>,
    archive: &Archive,
    instances: &[Instance],
    study: &str,
) {
    let held = part10_files(&archive.storage);
    let wanted: Vec<&Instance> = instances.iter().filter(|i| i.study == study).collect();
    assert!(!wanted.is_empty());
    for instance in wanted {
        let here = landed
            .get(&instance.sop)
            .unwrap_or_else(|| panic!("{} not stored", instance.sop));
        let remote = std::fs::read(&held[&instance.sop]).unwrap();
        assert!(
            part10_dataset(here) == part10_dataset(&remote),
            "{} differs from {}'s file",
            instance.sop,
            archive.ae
        );
        assert_eq!(
            sluice_tests::part10_transfer_syntax(&remote),
            sluice_tests::part10_transfer_syntax(here)
        );
    }
}

/// The Part 10 files under `root` (recursively), by SOP Instance UID;
/// other files (an archive's own database) are left out.
fn part10_files(root: &Path) -> BTreeMap<String, PathBuf> {
    files_under(root)
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (bytes.len() >= 144 && &bytes[128..132] == b"DICM").then(|| {
                (
                    sluice_tests::part10_meta_value(&bytes, 0x0002, 0x0003),
                    path,
                )
            })
        })
        .collect()
}

/// Little Endian instances only: what every archive here keeps as sent.
fn little_endian(instances: Vec<Instance>) -> Vec<Instance> {
    instances
        .into_iter()
        .filter(|instance| {
            let bytes = std::fs::read(&instance.file).unwrap();
            sluice_tests::part10_transfer_syntax(&bytes) != "1.2.840.10008.1.2.2"
        })
        .collect()
}

#[test]
fn query_dcmqrscp_single_wildcard_range_universal_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dcmqrscp(dir.path(), free_port());
    queries(dir.path(), &archive);
}

#[test]
fn query_orthanc_single_wildcard_range_universal_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    let archive = orthanc(dir.path(), free_port());
    queries(dir.path(), &archive);
}

/// The corpus loaded into `archive`, queried every way.
fn queries(dir: &Path, archive: &Archive) {
    let instances = little_endian(corpus(&dir.join("corpus")));
    load(archive, &instances);
    let config = config_file(dir, &[archive]);
    let data = dir.join("data");
    let ae = archive.ae;

    // Single value: the two studies of QR-PAT-A, with their UIDs.
    let lines = json_lines(&sluice(
        &["query", ae, "--json", "PatientID=QR-PAT-A", "StudyDate="],
        &config,
        &data,
    ));
    assert_eq!(
        values(&lines, "StudyInstanceUID"),
        studies_of(&instances, "QR-PAT-A")
    );
    // Universal matching returns the value.
    assert_eq!(values(&lines, "StudyDate"), ["20240110", "20240220"]);

    // Wildcard on the name, date range.
    let lines = json_lines(&sluice(
        &[
            "query",
            ae,
            "--json",
            "PatientName=Doe*",
            "StudyDate=20240101-20240131",
        ],
        &config,
        &data,
    ));
    assert_eq!(values(&lines, "StudyDate"), ["20240110"]);
    assert_eq!(values(&lines, "PatientID"), ["QR-PAT-A"]);

    // SERIES level of one study; the table output aligned with a header.
    let study = studies_of(&instances, "QR-PAT-B")[0].clone();
    let output = sluice(
        &[
            "query",
            ae,
            "--level",
            "series",
            &format!("StudyInstanceUID={study}"),
        ],
        &config,
        &data,
    );
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.starts_with("StudyInstanceUID"), "{text}");
    assert!(text.contains(&study), "{text}");
    assert!(text.trim_end().ends_with("1 match(es)"), "{text}");

    // Patient Root at the PATIENT level.
    let lines = json_lines(&sluice(
        &[
            "query",
            ae,
            "--json",
            "--model",
            "patient",
            "--level",
            "patient",
            "PatientID=QR-PAT-*",
        ],
        &config,
        &data,
    ));
    let patients = values(&lines, "PatientID");
    assert!(
        patients.contains(&"QR-PAT-A".to_owned()) && patients.contains(&"QR-PAT-B".to_owned()),
        "{patients:?}"
    );
}

#[test]
fn retrieve_moves_from_dcmqrscp_into_sluice_serve_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let instances = little_endian(corpus(&dir.path().join("corpus")));
    let served = Served::start(
        "uring",
        &["--transfer-syntaxes", "all", "--ae-title", "SLUICE"],
    );
    let archive = dcmqrscp(dir.path(), served.port);
    load(&archive, &instances);
    let config = config_file(dir.path(), &[&archive]);
    let study = studies_of(&instances, "QR-PAT-A")[0].clone();
    let count = instances.iter().filter(|i| i.study == study).count();

    let output = sluice(
        &["retrieve", "QRSCP", "--study", &study],
        &config,
        &served.data(),
    );
    assert!(output.status.success(), "{output:?}\n{}", served.log());
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "status 0000 (success): {count} completed, 0 failed"
        )),
        "{text}"
    );
    assert!(
        stderr(&output).contains("completed"),
        "progress: {output:?}"
    );
    let landed = served.stored();
    assert_landed(&landed, &archive, &instances, &study);
    assert_eq!(landed.len(), count, "only the study landed");

    // Again: the duplicates are decided by the ingest path as for any
    // sender (the default policy quarantines them; the stored files stay).
    let output = sluice(
        &["retrieve", "QRSCP", "--study", &study],
        &config,
        &served.data(),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(served.all_files("quarantine").len(), count);
    assert!(served.stored() == landed);
    let listed = sluice(&["quarantine", "list"], &config, &served.data());
    assert!(stdout(&listed).contains("identical"), "{listed:?}");

    // C-GET while the server holds the data directory: refused at once.
    let started = Instant::now();
    let output = sluice(
        &["retrieve", "QRSCP", "--study", &study, "--get"],
        &config,
        &served.data(),
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("Retrieve with C-MOVE instead"),
        "{output:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// The C-GET relay passes instances on as they arrive: the corpus's study
/// and one of a single 40 MB instance (about 640 receive chunks), each
/// stored here byte for byte.
#[test]
fn retrieve_gets_from_orthanc_through_the_embedded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let mut instances = little_endian(corpus(&dir.path().join("corpus")));
    let bulk: Vec<Instance> =
        crate::query::corpus_with(&dir.path().join("bulk"), 1, Some(40_000_000))
            .into_iter()
            .filter(|instance| instance.patient_id == "QR-PAT-BULK")
            .collect();
    assert_eq!(bulk.len(), 1);
    assert!(std::fs::metadata(&bulk[0].file).unwrap().len() > 39_000_000);
    instances.extend(bulk.iter().cloned());
    let archive = orthanc(dir.path(), free_port());
    load(&archive, &instances);
    let config = config_file(dir.path(), &[&archive]);
    // The default layout, with segments no larger than the tests' servers.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[storage]\nsegment_size_mib = {}\n",
        crate::serve::TEST_SEGMENT_MIB
    ));
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let study = studies_of(&instances, "QR-PAT-A")[1].clone();
    let count = instances.iter().filter(|i| i.study == study).count();

    let output = sluice(
        &["retrieve", "ORTHANC", "--study", &study, "--get"],
        &config,
        &data,
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains(&format!("{count} completed, 0 failed")),
        "{output:?}"
    );
    assert_landed(&stored_instances(&data), &archive, &instances, &study);
    // The catalogue has them: `sluice ls` lists the study.
    let listed = sluice(&["ls"], &config, &data);
    assert!(stdout(&listed).contains(&study), "{listed:?}");

    let output = sluice(
        &["retrieve", "ORTHANC", "--study", &bulk[0].study, "--get"],
        &config,
        &data,
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains("1 completed, 0 failed"),
        "{output:?}"
    );
    assert_landed(
        &stored_instances(&data),
        &archive,
        &instances,
        &bulk[0].study,
    );
}

#[test]
fn prefetch_from_orthanc_fetches_what_is_missing_and_skips_what_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        "uring",
        &["--transfer-syntaxes", "all", "--ae-title", "SLUICE"],
    );
    let archive = orthanc(dir.path(), served.port);
    prefetches(dir.path(), &archive, &served);
}

#[test]
fn prefetch_from_dcmqrscp_fetches_what_is_missing_and_skips_what_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        "uring",
        &["--transfer-syntaxes", "all", "--ae-title", "SLUICE"],
    );
    let archive = dcmqrscp(dir.path(), served.port);
    prefetches(dir.path(), &archive, &served);
}

/// The corpus in `archive`; one series of QR-PAT-A's two-series study
/// retrieved first, then the patient prefetched into `served`: the rest
/// of that study comes instance by instance (nothing held is sent again,
/// so nothing is quarantined), the other study whole; prefetched again,
/// both are skipped.
fn prefetches(dir: &Path, archive: &Archive, served: &Served) {
    let instances = little_endian(corpus(&dir.join("corpus")));
    load(archive, &instances);
    let config = config_file(dir, &[archive]);
    let ae = archive.ae;
    let mut studies = studies_of(&instances, "QR-PAT-A");
    assert_eq!(studies.len(), 2);
    let series_of = |study: &str| -> BTreeMap<String, usize> {
        let mut series = BTreeMap::new();
        for instance in instances.iter().filter(|i| i.study == study) {
            *series.entry(instance.series.clone()).or_insert(0) += 1;
        }
        series
    };
    studies.sort_by_key(|study| std::cmp::Reverse(series_of(study).len()));
    let partial = series_of(&studies[0]);
    assert_eq!(partial.len(), 2, "the corpus's study A1 has two series");
    let (held_series, held_count) = partial.iter().next().unwrap();
    let missing_count = partial.values().sum::<usize>() - held_count;

    // One series of the first study already here.
    let output = sluice(
        &[
            "retrieve",
            ae,
            "--study",
            &studies[0],
            "--series",
            held_series,
        ],
        &config,
        &served.data(),
    );
    assert!(output.status.success(), "{output:?}");

    let output = sluice(
        &["prefetch", ae, "--patient-id", "QR-PAT-A"],
        &config,
        &served.data(),
    );
    assert!(output.status.success(), "{output:?}\n{}", served.log());
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "fetched {}: {missing_count} completed, 0 failed",
            studies[0]
        )),
        "{text}"
    );
    assert!(text.contains(&format!("fetched {}", studies[1])), "{text}");
    assert!(
        text.contains("2 studies: 2 fetched, 0 skipped, 0 failed"),
        "{text}"
    );
    assert!(
        served.files("quarantine").is_empty(),
        "nothing held was sent again: {:?}",
        served.files("quarantine")
    );
    let output = sluice(
        &["prefetch", ae, "--patient-id", "QR-PAT-A"],
        &config,
        &served.data(),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains("2 studies: 0 fetched, 2 skipped, 0 failed"),
        "{output:?}"
    );
    let files = served.stored();
    assert_landed(&files, archive, &instances, &studies[0]);
    assert_landed(&files, archive, &instances, &studies[1]);
    // Nothing of the other patients came.
    assert!(instances
        .iter()
        .filter(|i| i.patient_id != "QR-PAT-A")
        .all(|i| !files.contains_key(&i.sop)));

    // With a date window that excludes both: nothing to do.
    let output = sluice(
        &[
            "prefetch",
            ae,
            "--patient-id",
            "QR-PAT-A",
            "--since",
            "20250101",
        ],
        &config,
        &served.data(),
    );
    assert!(stdout(&output).contains("0 studies"), "{output:?}");
}

#[test]
fn failures_are_clear_unknown_remote_rejection_timeout_and_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let instances = little_endian(corpus(&dir.path().join("corpus")));
    let archive = dcmqrscp(dir.path(), free_port());
    load(&archive, &instances[..1]);
    let config = config_file(dir.path(), &[&archive]);
    let data = dir.path().join("data");

    // Not in network.remote_aes.
    let output = sluice(&["query", "NOSUCHAE", "PatientID=X"], &config, &data);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("unknown remote AE \"NOSUCHAE\""),
        "{output:?}"
    );

    // dcmqrscp rejects a called AE title it does not serve.
    let address = format!("127.0.0.1:{}", archive.port);
    let output = sluice(
        &["query", "WRONGAE", "--address", &address, "PatientID=X"],
        &config,
        &data,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("association rejected"),
        "{output:?}"
    );

    // A remote that accepts the connection and never answers: A-ABORT
    // after the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let output = sluice(
        &[
            "query",
            "SILENT",
            "--address",
            &silent_address,
            "--timeout",
            "2",
            "PatientID=X",
        ],
        &config,
        &data,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("no answer from the peer within 2 s"),
        "{output:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The A-ABORT reached the socket: the peer reads its 10 bytes (type 07).
    let (mut accepted, _) = silent.accept().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut accepted, &mut bytes).unwrap();
    assert!(bytes.first() == Some(&0x01), "an A-ASSOCIATE-RQ first");
    assert!(
        bytes.windows(2).any(|w| w == [0x07, 0x00]),
        "an A-ABORT after it: {bytes:?}"
    );

    // A key with a bad value: Sluice's own Q/R SCP answers A900 with a
    // comment, which the command shows.
    let served = Served::start("uring", &["--ae-title", "SLUICE"]);
    let output = sluice(
        &[
            "query",
            "SLUICE",
            "--address",
            &format!("127.0.0.1:{}", served.port),
            "StudyDate=2024-13-45",
        ],
        &config,
        &data,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains("C-FIND failed: status A9"), "{message}");
    assert!(
        message.contains("StudyDate") || message.contains("0008,0020"),
        "{message}"
    );

    // A C-MOVE to a destination dcmqrscp does not know: A801, shown with
    // its meaning.
    let stranger = dir.path().join("stranger.toml");
    std::fs::write(
        &stranger,
        format!(
            "[network]\nae_title = \"STRANGER\"\n[network.remote_aes]\nQRSCP = \"127.0.0.1:{}\"\n",
            archive.port
        ),
    )
    .unwrap();
    let output = sluice(
        &["retrieve", "QRSCP", "--study", &instances[0].study],
        &stranger,
        &data,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("C-MOVE failed: status A801 (refused: move destination unknown)"),
        "{output:?}"
    );

    // An unknown key name is a usage error, before any association.
    let output = sluice(&["query", "QRSCP", "Nonsense=1"], &config, &data);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("unknown key \"Nonsense\""),
        "{output:?}"
    );
}

/// The embedding API: `qr::find` and `qr::get` from dcmqrscp into an
/// in-process `Server`, its events heard, the bytes read back.
#[test]
fn embedding_api_finds_and_gets_from_dcmqrscp_into_a_running_server() {
    use sluice_engine::config::Config;
    use sluice_engine::qr::{self, GetTarget, QueryRequest, RemoteArchive, RetrieveRequest};
    use sluice_engine::scp::Server;
    use sluice_engine::store::{Store, StoreEvent};
    use sluice_net::query::model::tags;
    use sluice_net::query::{InformationModel, Level};

    let dir = tempfile::tempdir().unwrap();
    let instances = little_endian(corpus(&dir.path().join("corpus")));
    let archive = dcmqrscp(dir.path(), free_port());
    load(&archive, &instances);
    let data = dir.path().join("data");
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        data.to_str().unwrap(),
        "--port",
        &free_port().to_string(),
        "--bind",
        "127.0.0.1",
        "--cores",
        "1",
        "--free-space-floor",
        "0",
        "--transfer-syntaxes",
        "all",
        "--remote-ae",
        &format!("QRSCP=127.0.0.1:{}", archive.port),
    ])
    .unwrap();
    let store = Store::open(config).unwrap();
    let events = store.subscribe(1024).unwrap();
    let server = Server::start(&store).unwrap();

    let remote = RemoteArchive::from_config(store.config(), "QRSCP", None).unwrap();
    let mut request = QueryRequest::new(InformationModel::StudyRoot, Level::Study);
    request.add_key("PatientID=QR-PAT-B").unwrap();
    let mut found = Vec::new();
    let summary = qr::find(&remote, &request, &mut |study| found.push(study.clone())).unwrap();
    assert_eq!(summary.matches, 1);
    assert_eq!(summary.status, 0);
    let study = found[0].value(tags::STUDY_INSTANCE_UID).unwrap().to_owned();
    assert_eq!(vec![study.clone()], studies_of(&instances, "QR-PAT-B"));
    let count = instances.iter().filter(|i| i.study == study).count();

    let target = GetTarget {
        address: server.local_addr().unwrap(),
        ae_title: "SLUICE".into(),
    };
    let mut pending = 0;
    let outcome = qr::get(
        &remote,
        &RetrieveRequest::study(&study),
        &target,
        &mut |_| pending += 1,
    )
    .unwrap();
    assert_eq!(outcome.status, 0, "{outcome:?}");
    assert_eq!(outcome.completed as usize, count, "{outcome:?}");
    assert_eq!(outcome.failed, 0);
    let mut stored = Vec::new();
    while stored.len() < count {
        match events.receiver().recv_timeout(Duration::from_secs(30)) {
            Ok(StoreEvent::Stored { triplet, .. }) => stored.push(triplet.sop_instance_uid),
            Ok(_) => {}
            Err(error) => panic!("no Stored event: {error} (got {stored:?})"),
        }
    }
    let held = part10_files(&archive.storage);
    for instance in instances.iter().filter(|i| i.study == study) {
        assert!(stored.contains(&instance.sop));
        let bytes = store.read_instance(&instance.sop).unwrap().unwrap();
        let remote_file = std::fs::read(&held[&instance.sop]).unwrap();
        assert!(part10_dataset(&bytes) == part10_dataset(&remote_file));
    }
    server.shutdown(Duration::from_secs(10)).unwrap();
}

/// A C-MOVE whose SCP sends no pending response outlives `--timeout` (the
/// per-read bound of queries and association set-up) and ends with the
/// remote's final status; `--retrieve-timeout` bounds it instead, with an
/// A-ABORT and a message naming the wait.
#[test]
fn a_move_without_pending_responses_waits_past_the_read_timeout_until_the_retrieve_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(sluice_tests::python())
        .arg(sluice_tests::scripts_dir().join("slow_move_scp.py"))
        .arg(port.to_string())
        .arg("4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start slow_move_scp.py");
    let _guard = ChildGuard::new(child);
    wait_listening(port, "slow_move_scp.py");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!("[network]\nae_title = \"SLUICE\"\n[network.remote_aes]\nSLOWMOVE = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let data = dir.path().join("data");

    let started = Instant::now();
    let output = sluice(
        &[
            "retrieve",
            "SLOWMOVE",
            "--timeout",
            "2",
            "--study",
            "1.2.3.4",
        ],
        &config,
        &data,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout(&output).contains("status 0000"), "{output:?}");
    assert!(started.elapsed() >= Duration::from_secs(4), "{output:?}");

    let output = sluice(
        &[
            "retrieve",
            "SLOWMOVE",
            "--timeout",
            "2",
            "--retrieve-timeout",
            "1",
            "--study",
            "1.2.3.4",
        ],
        &config,
        &data,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("no answer from the peer within 1 s"),
        "{output:?}"
    );
}
