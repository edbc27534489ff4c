//! `sluice serve` as a process: its descriptor limit (issue #19, item 3)
//! and its shutdown on SIGTERM (item 6).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{free_port, python, scripts_dir, ChildGuard};

/// The soft and hard "Max open files" of a process.
fn descriptor_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no descriptor limit in {limits}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Starts `sluice serve` through `sh`, with `shell` run first (a `ulimit`),
/// and `extra` arguments, and waits until it listens.
fn spawn_serve_after(
    shell: &str,
    data: &Path,
    port: u16,
    log: &Path,
    extra: &[&str],
) -> ChildGuard {
    let script = format!("{shell} && exec \"$0\" \"$@\"");
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cores", "2", "--free-space-floor", "0"])
        .args(["--segment-size-mib", crate::serve::TEST_SEGMENT_MIB])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "did not listen: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}

#[test]
fn serve_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let (_, hard) = descriptor_limits(std::process::id());
    assert!(hard > 256, "the hard limit here is {hard}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = spawn_serve_after(
        "ulimit -Sn 256",
        &dir.path().join("data"),
        free_port(),
        &log,
        &[],
    );
    let (soft, server_hard) = descriptor_limits(server.id());
    assert_eq!((soft, server_hard), (hard, hard));
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("descriptor limit") && log.contains(&format!("from 256 to {hard}")),
        "{log}"
    );
}

/// Sends `signal` to `pid` (by PID, through kill(1)).
pub(crate) fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM under load: in-flight instances are answered, every association
/// ends with an answer and an A-ABORT (none just closed), the process exits
/// 0 within the drain time, and the data directory it leaves passes
/// `sluice verify` and the load generator's check before any restart.
#[test]
fn sigterm_under_load_answers_in_flight_stores_and_leaves_a_verified_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut server = spawn_serve_after("true", &data, port, &log, &[]);
    let loadgen = sluice_tests::binaries::workspace_binary("sluice-loadgen", "sluice-loadgen");
    let history = dir.path().join("history.jsonl");
    let result = dir.path().join("loadgen.json");
    let mut load = ChildGuard::new(
        Command::new(&loadgen)
            .args(["run", "--target", &format!("127.0.0.1:{port}"), "--quiet"])
            .args(["--associations", "8", "--duration", "8", "--cores", "1"])
            .args(["--mix", "ct=3,mr=1", "--response-timeout", "30"])
            .arg("--history")
            .arg(&history)
            .arg("--out")
            .arg(&result)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("loadgen.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Stop the server in the middle of the load (the history is written
    // at the end: count what the server's index holds).
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::serve::stored_sops(&data).len() < 100 {
        assert!(Instant::now() < deadline, "no load reached the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopping = Instant::now();
    signal(server.id(), "TERM");
    let status = loop {
        if let Some(status) = server.child_mut().try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(20),
            "no exit 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_after = stopping.elapsed();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}\n{log_text}");
    // Within the default drain time (5 s) and a margin for the cores.
    assert!(stopped_after < Duration::from_secs(8), "{stopped_after:?}");
    assert!(log_text.contains("drain"), "{log_text}");
    assert!(
        !log_text.contains("did not take an index result") && !log_text.contains(" ERROR "),
        "{log_text}"
    );
    let load_status = load.child_mut().wait().unwrap();
    assert!(load_status.success());
    let result_text = std::fs::read_to_string(&result).unwrap();
    // Every association ended by an A-ABORT, a refusal or a release, none
    // by a connection just closed under it.
    assert!(
        !result_text.contains("connection closed without release"),
        "{result_text}"
    );
    let stored = std::fs::read_to_string(&history)
        .unwrap()
        .matches("\"outcome\":\"stored\"")
        .count();

    // The check reads a directory of Part 10 files: what export writes.
    let exported = tempfile::tempdir().unwrap();
    crate::serve::export_stored(&data, exported.path());
    let check = sluice_tests::run(
        Command::new(&loadgen)
            .args(["check", "--hashes", "--history"])
            .arg(&history)
            .arg("--dir")
            .arg(exported.path()),
        Duration::from_secs(120),
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let verify = sluice_tests::run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("verify")
            .arg("--data-dir")
            .arg(&data),
        Duration::from_secs(120),
    );
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let stats = sluice_tests::run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("stats")
            .arg("--data-dir")
            .arg(&data),
        Duration::from_secs(60),
    );
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    let in_doubt = stats
        .lines()
        .find(|line| line.trim_start().starts_with("in_doubt"))
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(in_doubt.split_whitespace().nth(1), Some("0"), "{stats}");
    eprintln!("stored {stored} instances; stopped {stopped_after:?} after SIGTERM");
}

/// A Query/Retrieve request that arrives after SIGTERM, on an association
/// kept open by a C-STORE in flight, is refused (A700 for a C-FIND) instead
/// of served: a retrieval started then would hold the drain up. The C-STORE
/// begun before is finished and answered success; then the association is
/// aborted.
#[test]
fn sigterm_refuses_a_query_that_arrives_during_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = free_port();
    // One core: once a probe association is refused (transient), that
    // core has begun its drain. A drain time far beyond the probes' (its
    // deadline would abort the association, the C-STORE unanswered).
    let mut server = crate::serve::spawn_serve(
        &data,
        port,
        "auto",
        &["--cores", "1", "--shutdown-drain-ms", "120000"],
        &log,
    );
    let mut peer = ChildGuard::new(
        Command::new(python())
            .arg(scripts_dir().join("sluice_peer.py"))
            .args(["drain_pipeline", &port.to_string(), "SLUICE"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(peer.child_mut().stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"holding\": true"), "peer said {line:?}");
    signal(server.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = sluice_tests::python_peer(
            "sluice_peer.py",
            &["hold", &port.to_string(), "SLUICE", "PROBE", "0"],
            Duration::from_secs(30),
        );
        if probe.has("\"held\": false") {
            break;
        }
        assert!(Instant::now() < deadline, "no drain began: {probe:?}");
    }
    // The rest of the data set, and the C-FIND right behind it.
    writeln!(peer.child_mut().stdin.as_mut().unwrap()).unwrap();
    let mut output = String::new();
    stdout.read_to_string(&mut output).unwrap();
    let status = server.child_mut().wait().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}\n{log_text}");
    // C-FIND-RSP (8020) refused A700; C-STORE-RSP (8001) success; A-ABORT.
    assert!(
        output.contains("[\"8020\", \"A700\"]")
            && output.contains("[\"8001\", \"0000\"]")
            && output.contains("\"aborted\": true"),
        "{output}\n{log_text}"
    );
    assert!(
        log_text.lines().any(|line| line.contains("C-FIND refused")
            && line.contains("status=A700")
            && line.contains("the server is shutting down")),
        "{log_text}"
    );
}
