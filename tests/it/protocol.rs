//! The protocol core (`sluice-net`) against real peers, through the
//! test-only acceptor: DCMTK `echoscu`/`storescu` and pynetdicom associate,
//! are accepted or rejected exactly as the policy says, C-ECHO is answered,
//! and every data set `storescu` sends arrives byte-identical to the data set
//! of the file it was read from.

use std::process::Command;
use std::time::Duration;

use sluice_net::assoc::AeTitleFilter;
use sluice_tests::acceptor::{storage_policy, AcceptorSettings, AssociationOutcome, TestAcceptor};
use sluice_tests::{
    dcmtk, make_fixtures, part10_dataset, part10_transfer_syntax, python_peer, run,
    storescu_profile, PeerOutput,
};

const AE: &str = "SLUICE";
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

fn acceptor(configure: impl FnOnce(&mut AcceptorSettings)) -> TestAcceptor {
    let mut settings = AcceptorSettings::new(storage_policy(AE));
    configure(&mut settings);
    TestAcceptor::start(settings)
}

fn echoscu(port: u16, called: &str, calling: &str) -> std::process::Output {
    run(
        Command::new(dcmtk("echoscu"))
            .args([
                "-aec",
                called,
                "-aet",
                calling,
                "127.0.0.1",
                &port.to_string(),
            ])
            .env("TCP_NODELAY", "1"),
        PEER_TIMEOUT,
    )
}

fn pynetdicom(port: u16, called: &str, action: &str, args: &[&str]) -> PeerOutput {
    let port = port.to_string();
    let mut all = vec![port.as_str(), called, "PYNETDICOM", action];
    all.extend_from_slice(args);
    python_peer("pynetdicom_scu.py", &all, PEER_TIMEOUT)
}

#[test]
fn echoscu_is_accepted_and_answered() {
    let acceptor = acceptor(|_| {});
    let output = echoscu(acceptor.port(), AE, "ECHOSCU");
    assert!(
        output.status.success(),
        "echoscu failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let observed = acceptor.wait_for_outcomes(1, PEER_TIMEOUT);
    assert_eq!(observed.echoes, 1);
    assert_eq!(
        observed.outcomes,
        vec![AssociationOutcome::Released {
            calling_ae_title: "ECHOSCU".into()
        }]
    );
    let negotiated = &observed.accepted[0];
    assert_eq!(negotiated.called_ae_title, AE);
    assert_eq!(negotiated.presentation_contexts.len(), 1);
    assert_eq!(
        negotiated.presentation_contexts[0].abstract_syntax,
        sluice_net::uid::VERIFICATION
    );
    let implementation = negotiated
        .peer_implementation_class_uid
        .as_deref()
        .unwrap_or("");
    assert!(
        implementation.starts_with("1.2.276.0.7230010"),
        "DCMTK's root, got {implementation}"
    );
}

#[test]
fn echoscu_calling_an_unserved_ae_is_rejected_1_1_7() {
    let acceptor = acceptor(|_| {});
    let output = echoscu(acceptor.port(), "NOTSLUICE", "ECHOSCU");
    assert!(
        !output.status.success(),
        "echoscu should fail when rejected"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Called AE Title Not Recognized"),
        "echoscu said: {stderr}"
    );
    let observed = acceptor.wait_for_outcomes(1, PEER_TIMEOUT);
    assert_eq!(
        observed.outcomes,
        vec![AssociationOutcome::Rejected { codes: (1, 1, 7) }]
    );
    assert_eq!(observed.echoes, 0);
}

#[test]
fn calling_ae_off_the_allow_list_is_rejected_1_1_3() {
    let acceptor = acceptor(|settings| {
        settings.policy.calling_ae_titles = AeTitleFilter::Only(vec!["MODALITY1".into()]);
    });
    let refused = echoscu(acceptor.port(), AE, "INTRUDER");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Calling AE Title Not Recognized"));
    let allowed = echoscu(acceptor.port(), AE, "MODALITY1");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let observed = acceptor.wait_for_outcomes(2, PEER_TIMEOUT);
    assert!(observed
        .outcomes
        .contains(&AssociationOutcome::Rejected { codes: (1, 1, 3) }));
    assert!(observed.outcomes.contains(&AssociationOutcome::Released {
        calling_ae_title: "MODALITY1".into()
    }));
}

#[test]
fn association_limit_rejects_transient_2_3_2() {
    let acceptor = acceptor(|settings| settings.association_limit = 0);
    let output = echoscu(acceptor.port(), AE, "ECHOSCU");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Rejected Transient") && stderr.contains("Local Limit Exceeded"),
        "{stderr}"
    );
    let observed = acceptor.wait_for_outcomes(1, PEER_TIMEOUT);
    assert_eq!(
        observed.outcomes,
        vec![AssociationOutcome::Rejected { codes: (2, 3, 2) }]
    );
}

/// Sends every fixture with DCMTK `storescu`, proposing exactly the file's
/// SOP class and transfer syntax (a `-xf` association profile: storescu's
/// own flags cannot propose every syntax, JPEG Lossless Process 14 among
/// them), so nothing is converted, and checks that the data set that arrived
/// is the file's data set, byte for byte, in the same syntax.
fn storescu_every_transfer_syntax(pdu_length_max_receive: u32) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = make_fixtures(dir.path());
    let acceptor =
        acceptor(|settings| settings.policy.pdu_length_max_receive = pdu_length_max_receive);
    for fixture in &fixtures {
        let profile = dir.path().join("storescu.cfg");
        std::fs::write(
            &profile,
            storescu_profile(&fixture.path, &fixture.transfer_syntax_uid),
        )
        .unwrap();
        let output = run(
            Command::new(dcmtk("storescu"))
                .arg("-xf")
                .arg(&profile)
                .arg("Default")
                .args([
                    "-aec",
                    AE,
                    "-aet",
                    "STORESCU",
                    "127.0.0.1",
                    &acceptor.port().to_string(),
                ])
                .arg(&fixture.path)
                .env("TCP_NODELAY", "1"),
            PEER_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "storescu {} failed: {}",
            fixture.path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let observed = acceptor.wait_for_outcomes(fixtures.len(), PEER_TIMEOUT);
    assert_eq!(
        observed.instances.len(),
        fixtures.len(),
        "{:?}",
        observed.outcomes
    );
    for (fixture, received) in fixtures.iter().zip(&observed.instances) {
        let file = std::fs::read(&fixture.path).unwrap();
        assert_eq!(part10_transfer_syntax(&file), fixture.transfer_syntax_uid);
        assert_eq!(
            received.transfer_syntax_uid,
            fixture.transfer_syntax_uid,
            "{}",
            fixture.path.display()
        );
        assert_eq!(received.calling_ae_title, "STORESCU");
        let sent = part10_dataset(&file);
        // PS3.5 A.5: a deflated bit stream of odd length is padded with one
        // trailing NUL on the wire. dcmconv writes the file unpadded and
        // storescu pads when it sends; that byte is the sender's, not ours.
        let padded_deflate = fixture.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
            && sent.len() % 2 == 1
            && received.dataset.len() == sent.len() + 1
            && received.dataset.last() == Some(&0);
        let received_dataset = if padded_deflate {
            &received.dataset[..sent.len()]
        } else {
            &received.dataset[..]
        };
        assert!(
            received_dataset == sent,
            "{}: received {} bytes, file's data set is {} bytes; first difference at {:?}",
            fixture.path.display(),
            received.dataset.len(),
            sent.len(),
            received.dataset.iter().zip(sent).position(|(a, b)| a != b)
        );
    }
}

#[test]
fn storescu_data_sets_arrive_byte_identical_in_every_transfer_syntax() {
    storescu_every_transfer_syntax(16384);
}

#[test]
fn storescu_data_sets_arrive_byte_identical_across_many_small_pdus() {
    // 4096 is the smallest maximum DCMTK accepts: every data set spans PDUs.
    storescu_every_transfer_syntax(4096);
}

#[test]
fn pynetdicom_echo_and_store_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = make_fixtures(dir.path());
    let acceptor = acceptor(|_| {});
    let echo = pynetdicom(acceptor.port(), AE, "echo", &[]);
    assert!(
        echo.has(r#""associated": true"#) && echo.has(r#""statuses": [0]"#),
        "{echo:?}"
    );

    // pynetdicom's default contexts cover the native syntaxes; send those.
    let native: Vec<_> = fixtures
        .iter()
        .filter(|f| {
            [
                "1.2.840.10008.1.2",
                "1.2.840.10008.1.2.1",
                "1.2.840.10008.1.2.5",
            ]
            .contains(&f.transfer_syntax_uid.as_str())
        })
        .collect();
    let paths: Vec<&str> = native.iter().map(|f| f.path.to_str().unwrap()).collect();
    let store = pynetdicom(acceptor.port(), AE, "store", &paths);
    assert!(store.has(r#""statuses": [0, 0, 0]"#), "{store:?}");

    let observed = acceptor.wait_for_outcomes(2, PEER_TIMEOUT);
    assert_eq!(observed.echoes, 1);
    assert_eq!(observed.instances.len(), native.len());
    for (fixture, received) in native.iter().zip(&observed.instances) {
        let file = std::fs::read(&fixture.path).unwrap();
        assert_eq!(received.transfer_syntax_uid, fixture.transfer_syntax_uid);
        assert!(
            received.dataset == part10_dataset(&file),
            "{} differs",
            fixture.path.display()
        );
    }
}

#[test]
fn pynetdicom_rejections_carry_the_policy_codes() {
    let acceptor = acceptor(|_| {});
    let wrong_called = pynetdicom(acceptor.port(), "ELSEWHERE", "echo", &[]);
    assert!(
        wrong_called.has(r#""rejected": [1, 1, 7]"#),
        "{wrong_called:?}"
    );
    // An abstract syntax nobody serves: no acceptable presentation context.
    let unknown = pynetdicom(
        acceptor.port(),
        AE,
        "propose",
        &["1.2.826.0.1.3680043.10.1234.777"],
    );
    assert!(
        unknown.has(r#""associated": false"#) && unknown.has(r#""rejected": [1, 1, 1]"#),
        "{unknown:?}"
    );
    let observed = acceptor.wait_for_outcomes(2, PEER_TIMEOUT);
    assert!(observed
        .outcomes
        .contains(&AssociationOutcome::Rejected { codes: (1, 1, 7) }));
    assert!(observed
        .outcomes
        .contains(&AssociationOutcome::Rejected { codes: (1, 1, 1) }));
}
