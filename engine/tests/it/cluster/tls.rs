//! TLS to the catalogue: a PostgreSQL that takes TCP connections over TLS
//! only, its certificate issued by a CA made for the test
//! (tests/fixtures/make_tls_certs.py). A node whose connection string says
//! `sslmode=verify-full sslrootcert=<the CA>` publishes over TLS; a string
//! without TLS, or trusting another CA, is refused.

use super::changes::{instance, store};
use super::*;

/// `sluice cluster status` against `catalogue`.
fn status(catalogue: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "status", "--catalogue", catalogue])
        .output()
        .unwrap()
}

/// Certificates from a CA made for the test, and a PostgreSQL taking TCP
/// over TLS only with the server's.
fn tls_catalogue() -> (tempfile::TempDir, Postgres) {
    let certificates = tempfile::tempdir().unwrap();
    let made = Command::new(python())
        .arg(scripts_dir().join("make_tls_certs.py"))
        .arg(certificates.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "make_tls_certs.py: {made:?}");
    let postgres = Postgres::start_tls(certificates.path());
    (certificates, postgres)
}

#[test]
fn a_node_publishes_to_a_tls_only_catalogue_with_verify_full_and_other_trust_is_refused() {
    let (certificates, postgres) = tls_catalogue();
    let with = |tls: &str| format!("{} {tls}", postgres.conninfo());
    let ca = certificates.path().join("ca.pem");
    let stranger_ca = certificates.path().join("stranger_ca.pem");
    let verified = with(&format!("sslmode=verify-full sslrootcert={}", ca.display()));

    // The server takes no plain TCP connection; verify-full against a CA
    // that did not issue its certificate fails the handshake.
    let plain = status(&with("sslmode=disable"));
    assert!(!plain.status.success(), "{plain:?}");
    let stranger = status(&with(&format!(
        "sslmode=verify-full sslrootcert={}",
        stranger_ca.display()
    )));
    assert!(!stranger.status.success(), "{stranger:?}");
    // The cause is named, not only the step.
    assert!(
        String::from_utf8_lossy(&stranger.stdout)
            .contains("TLS handshake: invalid peer certificate"),
        "{stranger:?}"
    );
    // `require` without a CA: encrypted, not authenticated (libpq's).
    let required = status(&with("sslmode=require"));
    assert!(required.status.success(), "{required:?}");
    // verify-full with the CA that issued it.
    let listed = status(&verified);
    assert!(listed.status.success(), "{listed:?}");

    // A node on verify-full publishes what it stores, over TLS.
    let work = tempfile::tempdir().unwrap();
    let mut node = Node::new(work.path(), "node-1", verified, "after-answer");
    node.start();
    let sop = "1.2.826.0.1.3680043.8.498.79.1.1.1";
    let file = instance(
        work.path(),
        "TLS",
        (
            "1.2.826.0.1.3680043.8.498.79.1",
            "1.2.826.0.1.3680043.8.498.79.1.1",
            sop,
        ),
    );
    assert!(store(&node, &file));
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while postgres.rows().get(sop).map(String::as_str) != Some("node-1") {
        assert!(
            Instant::now() < deadline,
            "the instance never reached the catalogue:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let encrypted: i64 = postgres
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'sluice' AND s.ssl",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(encrypted, 1, "the publisher's connection is not TLS");
}

/// A catalogue that asks every TCP client for a certificate issued by the
/// test CA (`clientcert=verify-ca`): refused without one or with another
/// CA's, taken with `sslcert`/`sslkey` of the test CA's client.
#[test]
fn a_catalogue_asking_for_client_certificates_takes_sslcert_and_sslkey() {
    let (certificates, postgres) = tls_catalogue();
    // Client certificates from the test CA, asked of every TCP client.
    std::fs::copy(
        certificates.path().join("ca.pem"),
        postgres.data.join("client_ca.crt"),
    )
    .unwrap();
    if rustix::process::geteuid().is_root() {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(postgres.data.join("client_ca.crt"))
            .status()
            .unwrap();
        assert!(status.success(), "chown the client CA");
    }
    let mut conf = File::options()
        .append(true)
        .open(postgres.data.join("postgresql.conf"))
        .unwrap();
    writeln!(conf, "ssl_ca_file = 'client_ca.crt'").unwrap();
    std::fs::write(
        postgres.data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n",
    )
    .unwrap();
    let reloaded = pg_command("pg_ctl")
        .arg("-D")
        .arg(&postgres.data)
        .args(["-w", "reload"])
        .output()
        .unwrap();
    assert!(reloaded.status.success(), "pg_ctl reload: {reloaded:?}");
    // The reload is a signal: wait until a client without a certificate
    // is refused.
    let ca = certificates.path().join("ca.pem");
    let with = |tls: &str| {
        format!(
            "{} sslmode=verify-full sslrootcert={} {tls}",
            postgres.conninfo(),
            ca.display()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let without = loop {
        let without = status(&with(""));
        if !without.status.success() || Instant::now() > deadline {
            break without;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!without.status.success(), "{without:?}");
    let identity = |stem: &str| {
        format!(
            "sslcert={} sslkey={}",
            certificates.path().join(format!("{stem}.pem")).display(),
            certificates.path().join(format!("{stem}.key")).display()
        )
    };
    let stranger = status(&with(&identity("stranger")));
    assert!(!stranger.status.success(), "{stranger:?}");
    let client = status(&with(&identity("client")));
    assert!(client.status.success(), "{client:?}");
    assert!(
        String::from_utf8_lossy(&client.stdout).contains("catalogue: reachable"),
        "{client:?}"
    );
    // Half an identity is refused before connecting.
    let half = status(&with(&format!(
        "sslcert={}",
        certificates.path().join("client.pem").display()
    )));
    assert!(
        String::from_utf8_lossy(&half.stdout).contains("sslcert and sslkey go together"),
        "{half:?}"
    );
}
