//! Access control per remote AE (`access.rule`) end to end: a real `sluice
//! serve` with a rule table, DCMTK (echoscu, storescu, findscu) and
//! pynetdicom as the peers. An AE no rule admits is rejected at
//! association (1/1/3); an admitted AE's requests for a service its rule
//! does not grant are refused with 0124 and nothing is stored; every
//! refusal is logged with the peer and the rule.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sluice_tests::{dcmtk, make_fixtures, python_peer, run};

use crate::serve::Served;

const AE: &str = "SLUICE";
const PEER_TIMEOUT: Duration = Duration::from_secs(120);
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn echoscu(port: u16, calling: &str) -> Output {
    run(
        Command::new(dcmtk("echoscu"))
            .args(["-v", "-aec", AE, "-aet", calling, "127.0.0.1"])
            .arg(port.to_string()),
        PEER_TIMEOUT,
    )
}

fn storescu(port: u16, calling: &str, file: &Path) -> Output {
    run(
        Command::new(dcmtk("storescu"))
            .args(["-v", "-aec", AE, "-aet", calling, "127.0.0.1"])
            .arg(port.to_string())
            .arg(file),
        PEER_TIMEOUT,
    )
}

fn findscu(port: u16, calling: &str) -> Output {
    run(
        Command::new(dcmtk("findscu"))
            .args(["-v", "-S", "-aec", AE, "-aet", calling])
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"])
            .args(["127.0.0.1", &port.to_string()]),
        PEER_TIMEOUT,
    )
}

#[test]
fn access_rules_admit_refuse_and_log_with_dcmtk_and_pynetdicom() {
    let files = tempfile::tempdir().unwrap();
    let fixtures = make_fixtures(files.path());
    let fixture = fixtures
        .iter()
        .find(|fixture| fixture.transfer_syntax_uid == EXPLICIT_VR_LITTLE_ENDIAN)
        .expect("an Explicit VR Little Endian fixture");
    let served = Served::start(
        "uring",
        &[
            "--access-rule",
            "MODALITY@127.0.0.0/8=store,commitment",
            "--access-rule",
            "VIEWER=query",
            "--access-rule",
            "FAR@10.9.9.0/24=store",
        ],
    );
    let port = served.port;

    // No rule names STRANGER: A-ASSOCIATE-RJ 1/1/3, DCMTK and pynetdicom.
    let output = echoscu(port, "STRANGER");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&output)
    );
    let output = python_peer(
        "pynetdicom_scu.py",
        &[&port.to_string(), AE, "STRANGER", "echo"],
        PEER_TIMEOUT,
    );
    assert!(output.has("\"rejected\": [1, 1, 3]"), "{output:?}");
    // FAR is named, but only from 10.9.9.0/24: rejected from 127.0.0.1.
    let output = echoscu(port, "FAR");
    assert!(
        text(&output).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&output)
    );

    // VIEWER may echo and query, not store: 0124, nothing stored.
    let output = echoscu(port, "VIEWER");
    assert!(output.status.success(), "{}", text(&output));
    let output = storescu(port, "VIEWER", &fixture.path);
    assert!(
        text(&output).contains("0x124"),
        "storescu sees the refusal: {}",
        text(&output)
    );
    let output = python_peer(
        "pynetdicom_scu.py",
        &[
            &port.to_string(),
            AE,
            "VIEWER",
            "store",
            fixture.path.to_str().unwrap(),
        ],
        PEER_TIMEOUT,
    );
    assert!(output.has("\"statuses\": [292]"), "{output:?}");
    assert!(served.stored_sops().is_empty(), "nothing stored");
    let output = findscu(port, "VIEWER");
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("0x124"), "{}", text(&output));

    // MODALITY may store (from 127.0.0.0/8), not query: 0124 on C-FIND.
    let output = storescu(port, "MODALITY", &fixture.path);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(served.stored_sops().len(), 1, "stored by MODALITY");
    let output = findscu(port, "MODALITY");
    assert!(
        text(&output).contains("0x124"),
        "findscu sees the refusal: {}",
        text(&output)
    );
    let keys = r#"{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": null}"#;
    let output = python_peer(
        "qr_scu.py",
        &["find", &port.to_string(), AE, "MODALITY", "study", keys],
        PEER_TIMEOUT,
    );
    assert_eq!(
        output.string("status_hex").as_deref(),
        Some("0124"),
        "{output:?}"
    );

    // Storage Commitment: MODALITY's rule grants it (the request is
    // recorded: 0000), VIEWER's does not (0124).
    for (calling, expected) in [("MODALITY", "0000"), ("VIEWER", "0124")] {
        let output = python_peer(
            "commit_scu.py",
            &[&port.to_string(), AE, calling, "--instances", "1"],
            PEER_TIMEOUT,
        );
        assert_eq!(
            output.string("action_status").as_deref(),
            Some(expected),
            "{calling}: {output:?}"
        );
    }

    let log = served.stop();
    for expected in [
        "association rejected: result 1, source 1, reason 3: calling AE title STRANGER matches no access rule",
        "calling AE title FAR from 127.0.0.1 is not admitted by access rule 3 (FAR@10.9.9.0/24=store): the address is not listed",
        "not authorized: access rule 2 (VIEWER=query) grants query, not store",
        "not authorized: access rule 1 (MODALITY@127.0.0.0/8=store,commitment) grants store, commitment, not query",
        "not authorized: access rule 2 (VIEWER=query) grants query, not commitment",
    ] {
        assert!(log.contains(expected), "{expected:?} in the log:\n{log}");
    }
    assert!(log.contains("peer=Some(127.0.0.1:"), "{log}");
}
