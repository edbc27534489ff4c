//! Storage Commitment Push Model SCP end to end (issue 6): a real
//! `sluice serve` on loopback and a pynetdicom Storage Commitment SCU
//! (tests/fixtures/commit_scu.py) that sends N-ACTION, waits for the
//! N-EVENT-REPORT on its association, and can listen for reports on a new
//! association (accepting the SCP/SCU role selection).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::{dcmtk, free_port, python_peer, run, ChildGuard, PeerOutput};

const AE: &str = "SLUICE";
const SCU_AE: &str = "COMMITSCU";
const PEER_TIMEOUT: Duration = Duration::from_secs(240);

/// A `sluice serve` on a data directory that outlives it (restarts reuse it).
struct Server {
    guard: Option<ChildGuard>,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, port: u16, backend: &str, extra: &[&str]) -> Server {
        let data = dir.join("data");
        // One log per start, so a restart's log is read on its own.
        let mut log = dir.join("server-0.log");
        let mut n = 0;
        while log.exists() {
            n += 1;
            log = dir.join(format!("server-{n}.log"));
        }
        let guard = crate::serve::spawn_serve(&data, port, backend, extra, &log);
        Server {
            guard: Some(guard),
            port,
            data,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `count` lines containing `fragment`.
    fn wait_for_log(&self, fragment: &str, count: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.matches(fragment).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {count} x {fragment:?} in the log within {within:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (by PID, through the guard) and reap.
    fn kill(mut self) {
        drop(self.guard.take());
    }

    /// `sluice commitments ARGS --data-dir DATA`.
    fn commitments(&self, args: &[&str]) -> String {
        let output = run(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("commitments")
                .args(args)
                .arg("--data-dir")
                .arg(&self.data),
            Duration::from_secs(60),
        );
        assert!(
            output.status.success(),
            "sluice commitments {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn scu(&self, args: &[&str]) -> PeerOutput {
        let port = self.port.to_string();
        let mut all = vec![port.as_str(), AE, SCU_AE];
        all.extend_from_slice(args);
        python_peer("commit_scu.py", &all, PEER_TIMEOUT)
    }
}

/// The value of `Label:` in `sluice commitments show` output.
fn field(shown: &str, label: &str) -> String {
    shown
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{label}:")))
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label} in {shown}"))
}

fn listener_flag(listen_port: u16) -> String {
    format!("{SCU_AE}=127.0.0.1:{listen_port}")
}

fn assert_has(output: &PeerOutput, fragment: &str, server: &Server) {
    assert!(
        output.has(fragment),
        "{fragment:?} not in {}\nserver log:\n{}",
        output.0,
        server.log()
    );
}

/// Scenario 1 (both I/O backends): every instance present, event type 1 on
/// the requester's own association; the operator view shows it delivered.
#[test]
fn all_present_is_reported_on_the_same_association() {
    for backend in ["uring", "portable"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), free_port(), backend, &[]);
        let out = server.scu(&[
            "--instances",
            "3",
            "--store-before",
            "all",
            "--wait-report",
            "60",
        ]);
        assert_has(&out, "\"action_status\": \"0000\"", &server);
        assert_has(&out, "\"stored\": {\"0000\": 3}", &server);
        assert_has(&out, "\"via\": \"same\", \"event_type\": 1", &server);
        assert_has(&out, "\"committed\": 3, \"failed\": []", &server);
        assert_has(&out, "\"report_count\": 1", &server);
        let transaction = out.string("transaction_uid").unwrap();
        server.wait_for_log("commitment report delivered", 1, Duration::from_secs(20));
        let shown = server.commitments(&["show", &transaction]);
        assert_eq!(field(&shown, "State"), "delivered", "{shown}");
        assert_eq!(field(&shown, "Last RSP status"), "0000", "{shown}");
        assert_eq!(field(&shown, "Delivery attempts"), "1", "{shown}");
        let listed = server.commitments(&["list"]);
        assert!(
            listed.contains(&transaction) && listed.contains(SCU_AE),
            "{listed}"
        );
    }
}

/// Scenario 2: some instances arrive after the N-ACTION; event type 1 once
/// the last is stored, still on the requester's association.
#[test]
fn late_instances_complete_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), "uring", &[]);
    let out = server.scu(&[
        "--instances",
        "4",
        "--store-before",
        "0",
        "--store-after",
        "1-3",
        "--wait-report",
        "60",
    ]);
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    assert_has(&out, "\"stored\": {\"0000\": 4}", &server);
    assert_has(&out, "\"via\": \"same\", \"event_type\": 1", &server);
    assert_has(&out, "\"committed\": 4, \"failed\": []", &server);
    let log = server.log();
    assert!(log.contains("missing=3"), "{log}");
}

/// Scenario 3: the wait expires; event type 2 with the missing instances
/// failed as 0112 (no such object instance) and the stored one committed.
#[test]
fn missing_until_the_wait_expires_fails_with_0112() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        free_port(),
        "uring",
        &["--commitment-instance-wait-s", "2"],
    );
    let out = server.scu(&[
        "--instances",
        "3",
        "--store-before",
        "0",
        "--wait-report",
        "60",
    ]);
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    assert_has(&out, "\"via\": \"same\", \"event_type\": 2", &server);
    assert_has(&out, "\"committed\": 1", &server);
    let transaction = out.string("transaction_uid").unwrap();
    assert_has(&out, &format!("[\"{transaction}.2\", \"0112\"]"), &server);
    assert_has(&out, &format!("[\"{transaction}.3\", \"0112\"]"), &server);
    server.wait_for_log("commitment report delivered", 1, Duration::from_secs(20));
    let shown = server.commitments(&["show", &transaction]);
    assert_eq!(field(&shown, "Failed"), "2", "{shown}");
    assert_eq!(field(&shown, "Committed"), "1", "{shown}");
    assert!(
        shown.contains(&format!("{transaction}.2")) && shown.contains("0112"),
        "{shown}"
    );
}

/// Scenario 4: an instance stored under another SOP class than referenced
/// fails with 0119 (class/instance conflict), at once (no wait).
#[test]
fn sop_class_mismatch_fails_with_0119() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), "portable", &[]);
    let out = server.scu(&[
        "--instances",
        "2",
        "--store-before",
        "all",
        "--wrong-class",
        "1",
        "--wait-report",
        "60",
    ]);
    let transaction = out.string("transaction_uid").unwrap();
    assert_has(&out, "\"via\": \"same\", \"event_type\": 2", &server);
    assert_has(&out, "\"committed\": 1", &server);
    assert_has(&out, &format!("[\"{transaction}.2\", \"0119\"]"), &server);
}

/// Scenario 5: the requester releases before the report; it goes on a new
/// association (to the AE `report_ae_map` names, at the address of the
/// remote AE table) with the SCP/SCU role selection, then is released.
#[test]
fn released_requester_gets_the_report_on_a_new_association() {
    let dir = tempfile::tempdir().unwrap();
    let listen_port = free_port();
    let remote = format!("COMMITSCU_SC=127.0.0.1:{listen_port}");
    let server = Server::start(
        dir.path(),
        free_port(),
        "uring",
        &[
            "--remote-ae",
            &remote,
            "--commitment-report-ae",
            "COMMITSCU=COMMITSCU_SC",
        ],
    );
    let listen = listen_port.to_string();
    let out = server.scu(&[
        "--instances",
        "2",
        "--store-before",
        "0",
        "--store-after",
        "1",
        "--listen",
        &listen,
        "--listen-ae",
        "COMMITSCU_SC",
        "--listen-wait",
        "60",
    ]);
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    assert_has(&out, "\"via\": \"new\", \"event_type\": 1", &server);
    assert_has(&out, "\"committed\": 2, \"failed\": []", &server);
    // The listener agreed to be the SCU: Sluice asked for the SCP role.
    assert_has(&out, "\"listener_is_scu\": true", &server);
    let log = server.wait_for_log("commitment report delivered", 1, Duration::from_secs(20));
    assert!(
        log.contains("called_ae=COMMITSCU_SC") && log.contains("outcome=released"),
        "{log}"
    );
}

/// Scenario 6a: the requester's listener is down; the delivery is retried
/// as configured, then given up with a log line and shown as failed.
#[test]
fn undeliverable_report_is_retried_then_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let listen_port = free_port();
    let remote = listener_flag(listen_port);
    let server = Server::start(
        dir.path(),
        free_port(),
        "uring",
        &[
            "--remote-ae",
            &remote,
            "--commitment-report-delivery",
            "new-association",
            "--commitment-retry-delay-s",
            "1",
            "--commitment-retry-backoff-cap-s",
            "1",
            "--commitment-retry-count",
            "2",
        ],
    );
    let out = server.scu(&["--instances", "1", "--store-before", "all"]);
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    let transaction = out.string("transaction_uid").unwrap();
    let log = server.wait_for_log(
        "commitment report given up after its retries",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(log.matches("will retry").count(), 2, "{log}");
    let shown = server.commitments(&["show", &transaction]);
    assert_eq!(field(&shown, "State"), "failed", "{shown}");
    assert_eq!(field(&shown, "Delivery attempts"), "3", "{shown}");
    assert!(
        field(&shown, "Last error").contains("Connection refused"),
        "{shown}"
    );
}

/// Scenario 6b: the listener comes back within the retry window; the
/// report is delivered.
#[test]
fn report_is_delivered_when_the_listener_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let listen_port = free_port();
    let remote = listener_flag(listen_port);
    let server = Server::start(
        dir.path(),
        free_port(),
        "portable",
        &[
            "--remote-ae",
            &remote,
            "--commitment-report-delivery",
            "new-association",
            "--commitment-retry-delay-s",
            "1",
            "--commitment-retry-backoff-cap-s",
            "2",
            "--commitment-retry-count",
            "30",
        ],
    );
    let out = server.scu(&["--instances", "1", "--store-before", "all"]);
    let transaction = out.string("transaction_uid").unwrap();
    server.wait_for_log("will retry", 2, Duration::from_secs(30));
    let listen = listen_port.to_string();
    let out = server.scu(&[
        "--transaction",
        &transaction,
        "--no-action",
        "--listen",
        &listen,
        "--listen-wait",
        "60",
    ]);
    assert_has(&out, "\"via\": \"new\", \"event_type\": 1", &server);
    assert_has(
        &out,
        &format!("\"transaction_uid\": \"{transaction}\""),
        &server,
    );
    server.wait_for_log("commitment report delivered", 1, Duration::from_secs(20));
}

/// Scenario 7: SIGKILL after the N-ACTION-RSP and before the report; after
/// a restart the request is still pending, the last instance completes it,
/// and the report is delivered exactly once.
#[test]
fn pending_request_survives_sigkill_and_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen_port = free_port();
    let remote = listener_flag(listen_port);
    let flags = ["--remote-ae", remote.as_str()];
    let server = Server::start(dir.path(), port, "uring", &flags);
    let out = server.scu(&["--instances", "2", "--store-before", "0"]);
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    assert_has(&out, "\"report_count\": 0", &server);
    let transaction = out.string("transaction_uid").unwrap();
    server.kill();

    let server = Server::start(dir.path(), port, "uring", &flags);
    let log = server.wait_for_log("commitment tracker resumed", 1, Duration::from_secs(20));
    assert!(log.contains("pending=1"), "{log}");
    let listen = listen_port.to_string();
    let out = server.scu(&[
        "--transaction",
        &transaction,
        "--instances",
        "2",
        "--no-action",
        "--store-after",
        "1",
        "--listen",
        &listen,
        "--listen-wait",
        "60",
        "--linger",
        "3",
    ]);
    assert_has(&out, "\"via\": \"new\", \"event_type\": 1", &server);
    assert_has(&out, "\"committed\": 2, \"failed\": []", &server);
    assert_has(&out, "\"report_count\": 1", &server);
    server.wait_for_log("commitment report delivered", 1, Duration::from_secs(20));
    let shown = server.commitments(&["show", &transaction]);
    assert_eq!(field(&shown, "State"), "delivered", "{shown}");
}

/// Scenario 8: malformed N-ACTION requests get 0120 (missing attribute) or
/// 0121 (Type 1 attribute without value), and nothing is recorded.
#[test]
fn malformed_requests_get_their_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), "portable", &[]);
    for (kind, status) in [
        ("missing_transaction", "0120"),
        ("empty_sequence", "0121"),
        ("missing_item_uid", "0120"),
    ] {
        let out = server.scu(&["--instances", "2", "--malformed", kind]);
        assert_has(&out, &format!("\"action_status\": \"{status}\""), &server);
        assert_has(&out, "\"report_count\": 0", &server);
    }
    let listed = server.commitments(&["list"]);
    assert!(listed.contains("no commitment transactions"), "{listed}");
}

/// Writes `count` copies of the Part 10 file `template` into `dirs`
/// subdirectories of `out`, each with its own SOP Instance UID: the
/// template's UID with its last 5 digits replaced (same length, so no
/// length field changes). Returns the UIDs.
fn replicate(template: &Path, out: &Path, count: usize, dirs: usize) -> Vec<String> {
    let bytes = std::fs::read(template).unwrap();
    let uid = template.file_stem().unwrap().to_str().unwrap().to_owned();
    let last = uid.rsplit('.').next().unwrap();
    assert!(last.len() > 6 && !uid.ends_with(".0"), "template UID {uid}");
    let stem = &uid[..uid.len() - 5];
    let mut uids = Vec::with_capacity(count);
    for n in 0..count {
        let new_uid = format!("{stem}{n:05}");
        let mut copy = bytes.clone();
        let mut at = 0;
        let mut replaced = 0;
        while let Some(found) = copy[at..]
            .windows(uid.len())
            .position(|window| window == uid.as_bytes())
        {
            let start = at + found;
            copy[start..start + uid.len()].copy_from_slice(new_uid.as_bytes());
            at = start + uid.len();
            replaced += 1;
        }
        assert_eq!(replaced, 2, "the UID is in the file meta and the data set");
        let sub = out.join(format!("{}", n % dirs));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("{new_uid}.dcm")), copy).unwrap();
        uids.push(new_uid);
    }
    uids
}

/// Scenario 9: 10,000 references, every instance present: the report's
/// latency (from the N-ACTION to the N-EVENT-REPORT) and the server's check
/// time are printed, not asserted.
#[test]
fn ten_thousand_references_are_checked_at_once() {
    const COUNT: usize = 10_000;
    const SENDERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), "uring", &[]);
    let template_dir = dir.path().join("template");
    std::fs::create_dir_all(&template_dir).unwrap();
    let written = python_peer(
        "sluice_peer.py",
        &["write", template_dir.to_str().unwrap(), "1"],
        PEER_TIMEOUT,
    );
    assert!(written.has(".dcm"), "{}", written.0);
    let template = std::fs::read_dir(&template_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let files = dir.path().join("files");
    let uids = replicate(&template, &files, COUNT, SENDERS);
    assert_eq!(uids.len(), COUNT);
    // DCMTK storescu, several associations at once (group commit).
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| {
            let sub = files.join(n.to_string());
            let port = server.port.to_string();
            std::thread::spawn(move || {
                run(
                    Command::new(dcmtk("storescu"))
                        .args(["-aec", AE, "-aet", "STORESCU", "+sd"])
                        .args(["127.0.0.1", &port])
                        .arg(&sub),
                    PEER_TIMEOUT,
                )
            })
        })
        .collect();
    crate::serve::all_succeed(senders);
    let out = server.scu(&[
        "--refs-from",
        files.to_str().unwrap(),
        "--wait-report",
        "120",
    ]);
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    assert_has(&out, "\"via\": \"same\", \"event_type\": 1", &server);
    assert_has(
        &out,
        &format!("\"committed\": {COUNT}, \"failed\": []"),
        &server,
    );
    let log = server.log();
    let accepted = log
        .lines()
        .find(|line| line.contains("commitment request accepted"))
        .unwrap_or_default()
        .to_owned();
    assert!(accepted.contains("missing=0"), "{accepted}");
    let latency = out
        .0
        .split("\"after_action_ms\": ")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or("?");
    let check_us = accepted
        .split("check_us=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?");
    println!(
        "commitment of {COUNT} references: report {latency} ms after the N-ACTION was sent \
         (index check {check_us} us on the server)"
    );
}

/// Embedder events: an in-process server publishes `Committed` for a
/// request whose instances are all stored, `CommitmentFailed` (with each
/// failed instance and its reason) when the wait ends first.
#[test]
fn embedder_sees_committed_and_failed_events() {
    use sluice_engine::config::Config;
    use sluice_engine::scp::Server as EmbeddedServer;
    use sluice_engine::store::{Store, StoreEvent};

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
        "--commitment-instance-wait-s",
        "1",
    ])
    .unwrap();
    let store = Store::open(config).unwrap();
    let events = store.subscribe(64).unwrap();
    let server = EmbeddedServer::start(&store).unwrap();
    let scu = |args: &[&str]| {
        let port = port.to_string();
        let mut all = vec![port.as_str(), AE, SCU_AE];
        all.extend_from_slice(args);
        python_peer("commit_scu.py", &all, PEER_TIMEOUT)
    };
    let next_commitment_event = || loop {
        match events.receiver().recv_timeout(Duration::from_secs(60)) {
            Ok(StoreEvent::Stored { .. }) => continue,
            Ok(event) => return event,
            Err(error) => panic!("no commitment event: {error}"),
        }
    };

    let out = scu(&[
        "--instances",
        "2",
        "--store-before",
        "all",
        "--wait-report",
        "60",
    ]);
    let committed = out.string("transaction_uid").unwrap();
    match next_commitment_event() {
        StoreEvent::Committed {
            transaction_uid,
            requester_ae_title,
            instance_count,
        } => {
            assert_eq!(transaction_uid, committed);
            assert_eq!(requester_ae_title, SCU_AE);
            assert_eq!(instance_count, 2);
        }
        other => panic!("expected Committed, got {other:?}"),
    }

    let out = scu(&[
        "--instances",
        "2",
        "--store-before",
        "0",
        "--wait-report",
        "60",
    ]);
    let failed_uid = out.string("transaction_uid").unwrap();
    match next_commitment_event() {
        StoreEvent::CommitmentFailed {
            transaction_uid,
            committed_count,
            failed,
            ..
        } => {
            assert_eq!(transaction_uid, failed_uid);
            assert_eq!(committed_count, 1);
            assert_eq!(failed, vec![(format!("{failed_uid}.2"), 0x0112)]);
        }
        other => panic!("expected CommitmentFailed, got {other:?}"),
    }
    server.shutdown(Duration::from_secs(10)).unwrap();
}

/// A separate commitment AE on its own port (the seed's SCServer on 1104):
/// N-ACTION there, instances stored on the main AE and port; the storage AE
/// does not accept the commitment SOP class, the commitment AE no storage.
#[test]
fn separate_commitment_ae_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let commitment_port = free_port();
    let commitment_port_text = commitment_port.to_string();
    let server = Server::start(
        dir.path(),
        free_port(),
        "portable",
        &[
            "--commitment-ae-title",
            "SCSERVER",
            "--commitment-port",
            &commitment_port_text,
        ],
    );
    let main_port = server.port.to_string();
    let out = python_peer(
        "commit_scu.py",
        &[
            &commitment_port_text,
            "SCSERVER",
            SCU_AE,
            "--instances",
            "2",
            "--store-port",
            &main_port,
            "--store-called",
            AE,
            "--store-before",
            "0",
            "--store-after",
            "1",
            "--wait-report",
            "60",
        ],
        PEER_TIMEOUT,
    );
    assert_has(&out, "\"action_status\": \"0000\"", &server);
    assert_has(&out, "\"via\": \"same\", \"event_type\": 1", &server);
    assert_has(&out, "\"committed\": 2, \"failed\": []", &server);
    // Storage Commitment is not offered on the storage AE, storage not on
    // the commitment AE.
    let scu = |port: &str, called: &str, class: &str| {
        python_peer(
            "pynetdicom_scu.py",
            &[port, called, SCU_AE, "propose", class],
            PEER_TIMEOUT,
        )
    };
    let out = scu(&main_port, AE, "1.2.840.10008.1.20.1");
    assert!(out.has("\"associated\": false"), "{}", out.0);
    let out = scu(
        &commitment_port_text,
        "SCSERVER",
        "1.2.840.10008.5.1.4.1.1.2",
    );
    assert!(out.has("\"associated\": false"), "{}", out.0);
}
