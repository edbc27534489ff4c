//! `sluice serve` as a process: its descriptor limit (issue #19, item 3)
//! and its shutdown on SIGTERM (item 6).

use std::fs::File;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{free_port, ChildGuard};

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
/// and waits until it listens.
fn spawn_serve_after(shell: &str, data: &Path, port: u16, log: &Path) -> ChildGuard {
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
