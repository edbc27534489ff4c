//! DICOM TLS end to end: a real `sluice serve` with a TLS listener
//! (`network.tls_port`) beside its plain one, mutual TLS against a CA made
//! fresh by tests/fixtures/make_tls_certs.py, and DCMTK (`echoscu +tls`,
//! `storescu +tls`, built with OpenSSL) and pynetdicom (an
//! `ssl.SSLContext`) as the peers. A client certificate from another CA,
//! an expired one, and a plain client on the TLS port are each refused
//! with a log line, and nothing of theirs is stored. A C-MOVE to a remote
//! AE written `tls://` sends its sub-operations over TLS (to DCMTK
//! storescp +tls, which requires Sluice's certificate). TLS-only mode
//! (`network.plain_listener = "off"`) binds no plain port. Storage
//! Commitment reports to a remote AE written `tls://` go over TLS to a
//! pynetdicom listener with an SSL context (tests/fixtures/commit_scu.py
//! `--listen-tls`), and not to one whose certificate Sluice does not trust.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_tests::{
    dcmtk, free_port, make_fixtures, python, python_peer, run, scripts_dir, ChildGuard, PeerOutput,
};

use crate::serve::Served;

const AE: &str = "SLUICE";
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The certificates, made in `dir`.
pub(crate) fn certificates(dir: &Path) -> PathBuf {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("make_tls_certs.py"))
            .arg(dir),
        PEER_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output));
    dir.to_owned()
}

/// A DCMTK tool over TLS with `identity` (its .key and .pem), trusting
/// the test CA.
pub(crate) fn dcmtk_tls(
    tool: &str,
    certs: &Path,
    identity: &str,
    port: u16,
    files: &[&Path],
) -> Output {
    run(
        Command::new(dcmtk(tool))
            .args(["-v", "+tls"])
            .arg(certs.join(format!("{identity}.key")))
            .arg(certs.join(format!("{identity}.pem")))
            .arg("+cf")
            .arg(certs.join("ca.pem"))
            .args([
                "-aec",
                AE,
                "-aet",
                "MODALITY",
                "127.0.0.1",
                &port.to_string(),
            ])
            .args(files),
        PEER_TIMEOUT,
    )
}

/// pynetdicom over TLS (`identity`: its certificate and key, or none).
fn pynetdicom_tls(certs: &Path, identity: Option<&str>, port: u16, args: &[&str]) -> PeerOutput {
    let ca = certs.join("ca.pem");
    let mut tls = ca.to_string_lossy().into_owned();
    if let Some(identity) = identity {
        for extension in ["pem", "key"] {
            tls.push(':');
            tls.push_str(
                &certs
                    .join(format!("{identity}.{extension}"))
                    .to_string_lossy(),
            );
        }
    }
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("pynetdicom_scu.py"))
            .args([&port.to_string(), AE, "MODALITY"])
            .args(args)
            .env("SLUICE_TLS", tls),
        PEER_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output));
    PeerOutput(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The certificates (in `dir/certs`) and two fixtures: Explicit and
/// Implicit VR Little Endian.
pub(crate) fn certificates_and_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let certs = certificates(&dir.join("certs"));
    let fixtures = make_fixtures(&dir.join("fixtures"));
    let file = |syntax: &str| {
        fixtures
            .iter()
            .find(|fixture| fixture.transfer_syntax_uid == syntax)
            .map(|fixture| fixture.path.clone())
            .expect("a fixture of that syntax")
    };
    (
        certs,
        file("1.2.840.10008.1.2.1"),
        file("1.2.840.10008.1.2"),
    )
}

/// DCMTK storescp's TLS arguments: Sluice's test identity, the test CA
/// trusted (and a certificate required of the peer, storescp's default).
pub(crate) fn storescp_tls_args(certs: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "+tls".into(),
        certs.join("server.key").into_os_string(),
        certs.join("server.pem").into_os_string(),
        "+cf".into(),
        certs.join("ca.pem").into_os_string(),
    ]
}

/// DCMTK storescp as the C-MOVE destination DEST on a free port (with
/// `extra` arguments, such as its TLS ones), storing into `dir` (created).
pub(crate) fn storescp_destination(dir: &Path, extra: &[std::ffi::OsString]) -> (ChildGuard, u16) {
    std::fs::create_dir(dir).unwrap();
    let port = free_port();
    let guard = ChildGuard::new(
        Command::new(dcmtk("storescp"))
            .args(extra)
            .args(["-aet", "DEST", "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp"),
    );
    (guard, port)
}

/// The Study Instance UIDs stored (a C-FIND by pynetdicom as VIEWER).
pub(crate) fn study_uids(port: &str) -> Vec<String> {
    let keys = r#"{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": null}"#;
    let found = python_peer(
        "qr_scu.py",
        &["find", port, AE, "VIEWER", "study", keys],
        PEER_TIMEOUT,
    );
    let studies: Vec<String> = found
        .string("uids")
        .unwrap_or_default()
        .split('|')
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(!studies.is_empty(), "{found:?}");
    studies
}

/// A C-MOVE of `study` to `destination` by pynetdicom as VIEWER, answered
/// success.
pub(crate) fn move_study(port: &str, study: &str, destination: &str) {
    let keys = format!(r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{study}"}}"#);
    let moved = python_peer(
        "qr_scu.py",
        &["move", port, AE, "VIEWER", "study", &keys, destination],
        PEER_TIMEOUT,
    );
    assert_eq!(
        moved.string("status_hex").as_deref(),
        Some("0000"),
        "{moved:?}"
    );
}

#[test]
fn dcmtk_and_pynetdicom_store_over_mutual_tls_and_bad_peers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, explicit, implicit) = certificates_and_files(dir.path());
    // A C-MOVE destination reached over TLS: DCMTK storescp, requiring
    // Sluice's certificate (storescp's default, -rc).
    let destination_dir = dir.path().join("destination");
    let tls_args = storescp_tls_args(&certs);
    let (_destination, destination_port) = storescp_destination(&destination_dir, &tls_args);
    let tls_port = free_port();
    let mut args = tls_flags(&certs, tls_port);
    args.extend([
        "--remote-ae".to_owned(),
        format!("DEST=tls://127.0.0.1:{destination_port}"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let served = Served::start("uring", &args);

    // DCMTK: C-ECHO and C-STORE over TLS.
    let output = dcmtk_tls("echoscu", &certs, "client", tls_port, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let output = dcmtk_tls("storescu", &certs, "client", tls_port, &[&explicit]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("Success"), "{}", text(&output));
    // pynetdicom with an SSLContext.
    let output = pynetdicom_tls(
        &certs,
        Some("client"),
        tls_port,
        &["store", implicit.to_str().unwrap()],
    );
    assert!(output.has("\"statuses\": [0]"), "{output:?}");
    assert_eq!(served.stored_sops().len(), 2, "both stored over TLS");
    // The plain listener serves beside it.
    let output = run(
        Command::new(dcmtk("echoscu")).args(["-aec", AE, "127.0.0.1", &served.port.to_string()]),
        PEER_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output));

    // C-MOVE of what was stored to DEST: the sub-operations go over TLS.
    let port = served.port.to_string();
    for study in study_uids(&port) {
        move_study(&port, &study, "DEST");
    }
    let arrived = std::fs::read_dir(&destination_dir).unwrap().count();
    assert_eq!(arrived, 2, "both instances moved over TLS");

    // Refused: a certificate from another CA, an expired one, none, and a
    // plain client on the TLS port. Nothing of theirs is stored.
    let output = dcmtk_tls("storescu", &certs, "stranger", tls_port, &[&explicit]);
    assert!(!output.status.success(), "{}", text(&output));
    let output = pynetdicom_tls(&certs, Some("expired"), tls_port, &["echo"]);
    assert!(output.has("\"associated\": false"), "{output:?}");
    let output = pynetdicom_tls(&certs, None, tls_port, &["echo"]);
    assert!(output.has("\"associated\": false"), "{output:?}");
    let output = run(
        Command::new(dcmtk("storescu"))
            .args(["-aec", AE, "127.0.0.1", &tls_port.to_string()])
            .arg(&explicit),
        PEER_TIMEOUT,
    );
    assert!(!output.status.success(), "{}", text(&output));
    assert_eq!(served.stored_sops().len(), 2, "nothing more stored");

    let log = served.stop();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("TLS refused: closing the connection"))
        .collect();
    assert_eq!(refusals.len(), 4, "one line per refused peer:\n{log}");
    for line in &refusals {
        assert!(line.contains("peer=Some(127.0.0.1:"), "{line}");
    }
    for cause in [
        "invalid peer certificate: UnknownIssuer",
        "invalid peer certificate: certificate expired",
        "peer sent no certificates",
        "received corrupt message",
    ] {
        assert!(
            refusals.iter().any(|line| line.contains(cause)),
            "{cause:?} among the refusals:\n{}",
            refusals.join("\n")
        );
    }
}

/// The server's TLS flags: its certificate and key, clients verified
/// against the test CA, remotes reached over TLS verified against it too.
pub(crate) fn tls_flags(certs: &Path, tls_port: u16) -> Vec<String> {
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-certificate".into(),
        path("server.pem"),
        "--tls-private-key".into(),
        path("server.key"),
        "--tls-client-ca".into(),
        path("ca.pem"),
        "--tls-remote-ca".into(),
        path("ca.pem"),
    ]
}

/// TLS-only (`network.plain_listener = "off"`): the TLS listener serves
/// DCMTK and pynetdicom, the plain port is not bound, and a plain client
/// on the TLS port is refused.
#[test]
fn tls_only_serves_on_the_tls_port_and_binds_no_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, explicit, _) = certificates_and_files(dir.path());
    let plain_port = free_port();
    let tls_port = free_port();
    let log = dir.path().join("server.log");
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        dir.path().join("data").to_string_lossy().into_owned(),
        "--port".into(),
        plain_port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--cores".into(),
        "2".into(),
        "--free-space-floor".into(),
        "0".into(),
        "--plain-listener".into(),
        "off".into(),
    ];
    args.extend(tls_flags(&certs, tls_port));
    let _server = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS listener within 20 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", plain_port)).is_err(),
        "the plain port is bound in TLS-only mode"
    );
    let output = dcmtk_tls("echoscu", &certs, "client", tls_port, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let output = dcmtk_tls("storescu", &certs, "client", tls_port, &[&explicit]);
    assert!(output.status.success(), "{}", text(&output));
    let output = pynetdicom_tls(&certs, Some("client"), tls_port, &["echo"]);
    assert!(output.has("\"associated\": true"), "{output:?}");
    let output = run(
        Command::new(dcmtk("echoscu")).args(["-aec", AE, "127.0.0.1", &tls_port.to_string()]),
        PEER_TIMEOUT,
    );
    assert!(!output.status.success(), "{}", text(&output));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("DICOM TLS listening"), "{log_text}");
    assert!(
        log_text.contains(&format!("address=127.0.0.1:{tls_port}")),
        "the TLS listener is the first: {log_text}"
    );

    // Off without a TLS port: refused at start (exit 2), naming the option.
    let output = run(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args([
            "serve",
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
            "--plain-listener",
            "off",
        ]),
        PEER_TIMEOUT,
    );
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("`--plain-listener`: \"off\" needs network.tls_port"),
        "{}",
        text(&output)
    );
}

/// A Storage Commitment request of `instances` instances (all stored
/// first) from commit_scu.py, whose report listener speaks TLS with
/// `identity`'s certificate and waits `wait_s` for the report; Sluice
/// reaches it as `tls://localhost`. Its output and the server's log.
fn commitment_to_a_tls_listener(
    backend: &str,
    identity: &str,
    instances: usize,
    wait_s: u32,
) -> (PeerOutput, String) {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(&dir.path().join("certs"));
    let listen_port = free_port();
    let mut args = tls_flags(&certs, free_port());
    args.extend([
        "--remote-ae".to_owned(),
        format!("COMMITSCU=tls://localhost:{listen_port}"),
        "--commitment-report-delivery".to_owned(),
        "new-association".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let served = Served::start(backend, &args);
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let listen_tls = format!(
        "{}:{}:{}",
        path("ca.pem"),
        path(&format!("{identity}.pem")),
        path(&format!("{identity}.key"))
    );
    let out = python_peer(
        "commit_scu.py",
        &[
            &served.port.to_string(),
            AE,
            "COMMITSCU",
            "--instances",
            &instances.to_string(),
            "--store-before",
            "all",
            "--listen",
            &listen_port.to_string(),
            "--listen-tls",
            &listen_tls,
            "--listen-wait",
            &wait_s.to_string(),
        ],
        PEER_TIMEOUT,
    );
    (out, served.stop())
}

/// Storage Commitment reports to a remote AE written `tls://`: the
/// N-EVENT-REPORT goes on a new association over TLS to a pynetdicom
/// listener with an SSL context that requires Sluice's certificate.
#[test]
fn commitment_reports_reach_a_tls_remote_over_tls() {
    let (out, log) = commitment_to_a_tls_listener("uring", "server", 2, 60);
    assert!(out.has("\"action_status\": \"0000\""), "{out:?}\n{log}");
    assert!(
        out.has("\"via\": \"new\", \"event_type\": 1"),
        "{out:?}\n{log}"
    );
    assert!(out.has("\"committed\": 2, \"failed\": []"), "{out:?}");
    assert!(log.contains("commitment report delivered"), "{log}");
}

/// The same remote with a certificate Sluice does not trust: the report
/// is not delivered (it is retried, as for an unreachable requester).
#[test]
fn a_commitment_report_is_not_sent_to_an_untrusted_tls_remote() {
    // The listener presents "stranger" (another CA, a client certificate).
    let (out, log) = commitment_to_a_tls_listener("portable", "stranger", 1, 5);
    assert!(out.has("\"action_status\": \"0000\""), "{out:?}");
    assert!(out.has("\"report_count\": 0"), "{out:?}");
    assert!(
        log.contains("TLS refused: invalid peer certificate"),
        "{log}"
    );
    assert!(
        log.contains("commitment report delivery failed; will retry"),
        "{log}"
    );
    assert!(!log.contains("commitment report delivered"), "{log}");
}
