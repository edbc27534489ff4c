//! The audit trail end to end (`[audit]`): a real `sluice serve`, real
//! peers causing each audited event (DCMTK storescu, findscu, getscu and
//! storescp; pynetdicom's C-MOVE; a client certificate from another CA),
//! and every message it writes validated against the PS3.15 A.5.1 audit
//! message schema (tests/fixtures/audit-message.rng, checked by
//! `xmllint --relaxng`). Syslog goes to a real rsyslogd started on random
//! ports: it parses each message as RFC 5424 (version, facility, severity,
//! APP-NAME, PROCID, MSGID are its fields, not ours) and takes TCP in
//! RFC 6587 octet-counting frames, so what it writes to its file is what a
//! collector received.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sluice_tests::{dcmtk, free_port, run, scripts_dir, ChildGuard};

use crate::serve::spawn_serve;
use crate::tls::{
    certificates, certificates_and_files, dcmtk_tls, move_study, storescp_destination, study_uids,
    text, tls_flags,
};

const AE: &str = "SLUICE";
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// A real rsyslogd on two free loopback ports (UDP and TCP; with `tls`,
/// the certificates directory, TCP is TLS with the test CA's server
/// certificate, RFC 5425), writing each message it parsed as `VERSION
/// FACILITY SEVERITY APP-NAME PROCID MSGID MSG`, one a line.
struct Rsyslog {
    _daemon: ChildGuard,
    udp_port: u16,
    tcp_port: u16,
    out: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, tls: Option<&Path>) -> Rsyslog {
        std::fs::create_dir_all(dir).unwrap();
        let udp_port = free_port();
        let tcp_port = free_port();
        let out = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        let (global_tls, imtcp) = match tls {
            Some(certs) => (
                format!(
                    r#" defaultNetstreamDriverCAFile="{}" defaultNetstreamDriverCertFile="{}" defaultNetstreamDriverKeyFile="{}""#,
                    certs.join("ca.pem").display(),
                    certs.join("server.pem").display(),
                    certs.join("server.key").display()
                ),
                r#"module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")"#,
            ),
            None => (String::new(), r#"module(load="imtcp")"#),
        };
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="64k"{global_tls})
module(load="imudp")
{imtcp}
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
template(name="audit" type="string" string="%protocol-version% %syslogfacility% %syslogseverity% %app-name% %procid% %msgid% %msg%\n")
action(type="omfile" file="{out}" template="audit")
"#,
                dir = dir.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let daemon = ChildGuard::new(
            Command::new("/usr/sbin/rsyslogd")
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start /usr/sbin/rsyslogd (Debian's rsyslog; scripts/test installs it)"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", tcp_port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Rsyslog {
            _daemon: daemon,
            udp_port,
            tcp_port,
            out,
        }
    }

    /// The messages received, once there are at least `count` (rsyslog
    /// writes asynchronously).
    fn received(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines: Vec<String> = std::fs::read_to_string(&self.out)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Validates every message against the PS3.15 A.5.1 schema with xmllint;
/// panics naming the first that fails.
fn validate(messages: &[String], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let files: Vec<PathBuf> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let path = dir.join(format!("message-{index:03}.xml"));
            std::fs::write(&path, message).unwrap();
            path
        })
        .collect();
    let schema = scripts_dir().join("audit-message.rng");
    let output = run(
        Command::new("xmllint")
            .args(["--noout", "--relaxng"])
            .arg(&schema)
            .args(&files),
        PEER_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "audit messages do not validate against the A.5.1 schema:\n{}",
        text(&output)
    );
    // The validation can fail: an outcome the schema does not list (1) is
    // refused.
    let broken = dir.join("broken.xml");
    let first = messages.first().expect("a message");
    assert!(first.contains(r#"EventOutcomeIndicator="0""#), "{first}");
    std::fs::write(
        &broken,
        first.replace(
            r#"EventOutcomeIndicator="0""#,
            r#"EventOutcomeIndicator="1""#,
        ),
    )
    .unwrap();
    let output = run(
        Command::new("xmllint")
            .args(["--noout", "--relaxng"])
            .arg(&schema)
            .arg(&broken),
        PEER_TIMEOUT,
    );
    assert!(!output.status.success(), "{}", text(&output));
}

/// The JSON lines of the audit file: (event, outcome, XML).
fn audit_file(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
            assert!(humantime::parse_rfc3339(&field("time")).is_ok(), "{line}");
            (field("event"), field("outcome"), field("message"))
        })
        .collect()
}

/// Stops the server with SIGTERM (a graceful stop: Application Stop is
/// written) and waits for it to exit.
fn stop_gracefully(mut server: ChildGuard, log: &Path) {
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child_mut().try_wait().unwrap() {
            assert!(
                status.success(),
                "{status:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The XML messages of `event`.
fn of<'a>(messages: &'a [(String, String, String)], event: &str) -> Vec<&'a str> {
    messages
        .iter()
        .filter(|(name, _, _)| name == event)
        .map(|(_, _, xml)| xml.as_str())
        .collect()
}

/// The sum of NumberOfInstances in `xml`.
fn instances(xml: &str) -> u64 {
    xml.split("NumberOfInstances=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn every_audited_event_of_real_peers_validates_against_the_schema_in_the_file_and_through_rsyslog_over_tcp(
) {
    let dir = tempfile::tempdir().unwrap();
    let (certs, explicit, implicit) = certificates_and_files(dir.path());
    let rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), None);
    // The C-MOVE destination: DCMTK storescp.
    let destination_dir = dir.path().join("destination");
    let (_destination, destination_port) = storescp_destination(&destination_dir, &[]);
    let port = free_port();
    let tls_port = free_port();
    let audit_path = dir.path().join("audit.jsonl");
    let log = dir.path().join("server.log");
    let mut args = tls_flags(&certs, tls_port);
    args.extend(
        [
            "--audit-file",
            audit_path.to_str().unwrap(),
            "--audit-syslog",
            &format!("tcp://127.0.0.1:{}", rsyslog.tcp_port),
            "--access-rule",
            "MODALITY=store",
            "--access-rule",
            "VIEWER=query,retrieve",
            "--remote-ae",
            &format!("DEST=127.0.0.1:{destination_port}"),
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = spawn_serve(&dir.path().join("data"), port, "uring", &args, &log);
    let port_text = port.to_string();
    let dcmtk_tool = |tool: &str, calling: &str, args: &[&str]| {
        run(
            Command::new(dcmtk(tool))
                .args(["-aec", AE, "-aet", calling])
                .args(args)
                .args(["127.0.0.1", &port_text]),
            PEER_TIMEOUT,
        )
    };

    // DICOM Instances Transferred (stored): DCMTK storescu, two instances.
    let output = run(
        Command::new(dcmtk("storescu"))
            .args(["-aec", AE, "-aet", "MODALITY", "127.0.0.1", &port_text])
            .arg(&explicit)
            .arg(&implicit),
        PEER_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output));
    // Query: DCMTK findscu.
    let output = dcmtk_tool(
        "findscu",
        "VIEWER",
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID",
            "-k",
            "StudyInstanceUID",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let studies = study_uids(&port_text);
    // Instances sent: DCMTK getscu (C-GET) and pynetdicom's C-MOVE to DEST.
    let got_dir = dir.path().join("got");
    std::fs::create_dir(&got_dir).unwrap();
    for study in &studies {
        let output = dcmtk_tool(
            "getscu",
            "VIEWER",
            &[
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &format!("StudyInstanceUID={study}"),
                "-od",
                got_dir.to_str().unwrap(),
            ],
        );
        assert!(output.status.success(), "{}", text(&output));
        move_study(&port_text, study, "DEST");
    }
    assert_eq!(std::fs::read_dir(&got_dir).unwrap().count(), 2);
    assert_eq!(std::fs::read_dir(&destination_dir).unwrap().count(), 2);
    // Security alerts: an AE no access rule admits; a service its rule
    // does not grant (C-FIND by MODALITY: 0124); a TLS client certificate
    // from another CA.
    let output = dcmtk_tool("echoscu", "STRANGER", &[]);
    assert!(!output.status.success(), "{}", text(&output));
    // (findscu exits 0 on a failure status: the refusal shows in the
    // audit trail, checked below, and in the log.)
    let output = dcmtk_tool(
        "findscu",
        "MODALITY",
        &["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID"],
    );
    assert!(output.status.success(), "{}", text(&output));
    let output = dcmtk_tls("echoscu", &certs, "stranger", tls_port, &[]);
    assert!(!output.status.success(), "{}", text(&output));
    stop_gracefully(server, &log);

    let messages = audit_file(&audit_path);
    let events: BTreeMap<&str, usize> =
        messages
            .iter()
            .fold(BTreeMap::new(), |mut counts, (event, _, _)| {
                *counts.entry(event.as_str()).or_default() += 1;
                counts
            });
    eprintln!("audit events: {events:?}");
    let xml: Vec<String> = messages.iter().map(|(_, _, xml)| xml.clone()).collect();
    validate(&xml, &dir.path().join("validated-file"));

    // Application Activity: started first, stopped last.
    assert!(messages.first().unwrap().2.contains(r#"csd-code="110120""#));
    assert!(messages.last().unwrap().2.contains(r#"csd-code="110121""#));
    // Associations: a Login per association accepted, a Logout per one
    // ended, a failed Login for STRANGER.
    let logins = of(&messages, "Login");
    assert!(logins
        .iter()
        .any(|xml| xml.contains(r#"UserID="MODALITY""#)
            && xml.contains(r#"EventOutcomeIndicator="0""#)));
    assert!(logins.iter().any(|xml| xml.contains(r#"UserID="STRANGER""#)
        && xml.contains(r#"EventOutcomeIndicator="4""#)
        && xml.contains("A-ASSOCIATE-RJ 1/1/3")));
    let accepted_logins = logins
        .iter()
        .filter(|xml| xml.contains(r#"EventOutcomeIndicator="0""#))
        .count();
    assert_eq!(of(&messages, "Logout").len(), accepted_logins);
    // Stored: action Create, MODALITY the source, both instances counted.
    let transferred = of(&messages, "DICOM Instances Transferred");
    let stored: Vec<&&str> = transferred
        .iter()
        .filter(|xml| xml.contains(r#"EventActionCode="C""#))
        .collect();
    assert_eq!(stored.iter().map(|xml| instances(xml)).sum::<u64>(), 2);
    for xml in &stored {
        assert!(
            xml.contains(
                r#"UserID="MODALITY" UserIsRequestor="true" NetworkAccessPointID="127.0.0.1""#
            ),
            "{xml}"
        );
        assert!(xml.contains(r#"csd-code="110153""#), "{xml}");
        assert!(
            xml.contains(r#"ParticipantObjectTypeCodeRole="1""#),
            "a patient: {xml}"
        );
    }
    // Sent: action Read, to VIEWER (C-GET) and DEST (C-MOVE), two each.
    let sent_to = |ae: &str| {
        transferred
            .iter()
            .filter(|xml| xml.contains(r#"EventActionCode="R""#))
            .filter(|xml| xml.contains(&format!(r#"UserID="{ae}""#)))
            .map(|xml| instances(xml))
            .sum::<u64>()
    };
    assert_eq!(sent_to("VIEWER"), 2);
    assert_eq!(sent_to("DEST"), 2);
    // Query: the C-FIND identifier, base64, with its transfer syntax.
    let queries = of(&messages, "Query");
    assert!(queries.len() >= 2, "{queries:?}");
    let query = queries
        .iter()
        .find(|xml| xml.contains(r#"UserID="VIEWER""#))
        .unwrap();
    let encoded = query
        .split("<ParticipantObjectQuery>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let identifier = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    // (0010,0020) Patient ID and (0008,0052) Query/Retrieve Level, little
    // endian, as findscu encoded them.
    assert!(identifier
        .windows(4)
        .any(|tag| tag == [0x10, 0x00, 0x20, 0x00]));
    assert!(identifier
        .windows(4)
        .any(|tag| tag == [0x08, 0x00, 0x52, 0x00]));
    assert!(query.contains(r#"ParticipantObjectID="1.2.840.10008.5.1.4.1.2.2.1""#));
    assert!(query.contains(r#"type="TransferSyntax""#));
    // Security alerts: the access table, the rule, the certificate.
    let node_alerts = of(&messages, "Node Authentication");
    assert!(node_alerts
        .iter()
        .any(|xml| xml.contains(r#"UserID="STRANGER""#) && xml.contains("matches no access rule")));
    assert!(node_alerts
        .iter()
        .any(|xml| xml.contains("TLS refused") && xml.contains("UnknownIssuer")));
    let restricted = of(&messages, "Use of Restricted Function");
    assert!(restricted
        .iter()
        .any(|xml| xml.contains(r#"UserID="MODALITY""#) && xml.contains("not authorized")));
    for xml in node_alerts.iter().chain(&restricted) {
        assert!(xml.contains(r#"csd-code="110113""#), "{xml}");
        assert!(xml.contains(r#"EventOutcomeIndicator="4""#), "{xml}");
    }

    // rsyslog received the same messages over TCP, each parsed as RFC 5424
    // from Sluice, facility authpriv (10), notice or warning.
    let received = rsyslog.received(messages.len());
    assert_eq!(received.len(), messages.len(), "{received:#?}");
    let pid_field = |line: &str| line.split(' ').nth(4).unwrap_or_default().to_owned();
    let mut from_syslog = Vec::new();
    for (line, (_, outcome, xml)) in received.iter().zip(&messages) {
        let severity = if outcome == "0" { "5" } else { "4" };
        let header = format!("1 10 {severity} sluice ");
        assert!(line.starts_with(&header), "{line}");
        assert!(pid_field(line).parse::<u32>().is_ok(), "{line}");
        let message = line
            .split_once(" IHE+RFC-3881 ")
            .map(|(_, message)| message.trim_start_matches('\u{feff}'))
            .unwrap_or_else(|| panic!("no MSGID: {line}"));
        assert_eq!(message, xml);
        from_syslog.push(message.to_owned());
    }
    validate(&from_syslog, &dir.path().join("validated-syslog"));
}

/// A short run (start, one C-ECHO, stop: Application Start, Login,
/// Logout, Application Stop) whose messages `rsyslog` receives, checked
/// and validated; `extra` says how they are sent.
fn four_messages_through(rsyslog: &Rsyslog, dir: &Path, extra: &[&str]) {
    let port = free_port();
    let log = dir.join("server.log");
    let server = spawn_serve(&dir.join("data"), port, "portable", extra, &log);
    let output = run(
        Command::new(dcmtk("echoscu")).args([
            "-aec",
            AE,
            "-aet",
            "PROBE",
            "127.0.0.1",
            &port.to_string(),
        ]),
        PEER_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output));
    stop_gracefully(server, &log);
    let received = rsyslog.received(4);
    assert_eq!(
        received.len(),
        4,
        "{received:#?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let messages: Vec<String> = received
        .iter()
        .map(|line| {
            assert!(line.starts_with("1 10 5 sluice "), "{line}");
            line.split_once(" IHE+RFC-3881 ")
                .map(|(_, message)| message.trim_start_matches('\u{feff}').to_owned())
                .unwrap()
        })
        .collect();
    for (message, code) in messages
        .iter()
        .zip(["110120", "110122", "110123", "110121"])
    {
        assert!(
            message.contains(&format!(r#"csd-code="{code}""#)),
            "{message}"
        );
    }
    assert!(messages[1].contains(r#"UserID="PROBE""#));
    validate(&messages, &dir.join("validated"));
}

#[test]
fn audit_messages_reach_rsyslog_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), None);
    let target = format!("udp://127.0.0.1:{}", rsyslog.udp_port);
    four_messages_through(&rsyslog, dir.path(), &["--audit-syslog", &target]);
}

/// RFC 5425: syslog over TLS to rsyslog's OpenSSL driver, its certificate
/// verified against the test CA (and a collector whose CA is another is
/// not sent to).
#[test]
fn audit_messages_reach_rsyslog_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(&dir.path().join("certs"));
    let rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), Some(&certs));
    let target = format!("tls://localhost:{}", rsyslog.tcp_port);
    let ca = certs.join("ca.pem");
    four_messages_through(
        &rsyslog,
        dir.path(),
        &[
            "--audit-syslog",
            &target,
            "--audit-syslog-ca",
            ca.to_str().unwrap(),
        ],
    );
    // Trusting another CA: nothing reaches the collector, the loss is
    // logged once.
    let other = dir.path().join("other");
    let port = free_port();
    let log = other.join("server.log");
    std::fs::create_dir(&other).unwrap();
    let stranger_ca = certs.join("stranger_ca.pem");
    let metrics_port = free_port();
    let server = spawn_serve(
        &other.join("data"),
        port,
        "portable",
        &[
            "--audit-syslog",
            &target,
            "--audit-syslog-ca",
            stranger_ca.to_str().unwrap(),
            "--metrics-port",
            &metrics_port.to_string(),
        ],
        &log,
    );
    // Application Start was not written: counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = crate::monitoring::get(metrics_port, "/metrics");
        assert_eq!(status, 200, "{body}");
        if body.contains("sluice_audit_messages_dropped_total 1\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no drop counted:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_gracefully(server, &log);
    assert_eq!(rsyslog.received(5).len(), 4, "nothing more received");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log_text.matches("an audit message was not written").count(),
        1,
        "{log_text}"
    );
    assert!(log_text.contains("UnknownIssuer"), "{log_text}");
}
