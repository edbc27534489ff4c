//! One server per data directory and per port (issue #19, item 4): a second
//! `sluice serve` on the same data directory or the same port refuses to
//! start and names the holder; operator commands that write respect the
//! lock, those that read work beside the running server.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_tests::{free_port, run, ChildGuard};

use crate::serve::Served;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `sluice serve` expecting it to refuse to start: its output.
fn serve_refused(data: &Path, port: u16) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cores", "2", "--free-space-floor", "0"]),
        START_TIMEOUT,
    )
}

fn sluice(args: &[&str], data: &Path) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--data-dir")
            .arg(data),
        START_TIMEOUT,
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_second_server_on_the_same_data_directory_or_port_refuses_to_start() {
    let served = Served::start("auto", &[]);
    let pid = served.pid();
    let other = tempfile::tempdir().unwrap();

    // The same data directory, another port: refused, naming the holder,
    // before it touches anything (no recovery under the running server).
    let refused = serve_refused(&served.data(), free_port());
    assert!(!refused.status.success(), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("data directory") && message.contains(&format!("process {pid}")),
        "{message}"
    );
    assert!(!message.contains("recovery:"), "{message}");

    // Another data directory, the same port: refused, naming the port.
    let refused = serve_refused(&other.path().join("data"), served.port);
    assert!(!refused.status.success(), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains(&format!("127.0.0.1:{}", served.port))
            && message.contains(&format!("process {pid}")),
        "{message}"
    );

    // The first server still serves, alone.
    let echo = run(
        Command::new(sluice_tests::dcmtk("echoscu")).args([
            "-aec",
            "SLUICE",
            "127.0.0.1",
            &served.port.to_string(),
        ]),
        START_TIMEOUT,
    );
    assert!(echo.status.success(), "{}", stderr(&echo));

    // Reading commands work beside it; writing ones are refused, naming it.
    for args in [
        &["ls"][..],
        &["stats"],
        &["verify"],
        &["quarantine", "list"],
    ] {
        let output = sluice(args, &served.data());
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    for args in [
        &["quarantine", "purge", "1"][..],
        &["quarantine", "release", "1"],
    ] {
        let output = sluice(args, &served.data());
        assert!(!output.status.success(), "{args:?}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("process {pid}")) && message.contains("sluice serve"),
            "{args:?}: {message}"
        );
    }
    let log = served.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn two_servers_started_at_once_on_one_port_one_runs() {
    let port = free_port();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut children: Vec<ChildGuard> = dirs
        .iter()
        .map(|dir| {
            ChildGuard::new(
                Command::new(env!("CARGO_BIN_EXE_sluice"))
                    .arg("serve")
                    .arg("--data-dir")
                    .arg(dir.path().join("data"))
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cores", "2", "--free-space-floor", "0"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    // Give both time to start (or refuse).
    std::thread::sleep(Duration::from_secs(5));
    let running: Vec<bool> = children
        .iter_mut()
        .map(|child| child.child_mut().try_wait().unwrap().is_none())
        .collect();
    assert_eq!(
        running.iter().filter(|running| **running).count(),
        1,
        "{running:?}"
    );
}
