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

/// `sluice serve` (uring) started at once, with no wait for the port: as
/// systemd restarts a server that died.
fn spawn_at_once(data: &Path, port: u16, log: &Path) -> ChildGuard {
    ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--io-backend", "uring", "--cores", "2"])
            .args(["--free-space-floor", "0", "--segment-size-mib", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits until `log` has `fragment`, failing at once if `server` exited.
fn wait_for_log(server: &mut ChildGuard, log: &Path, fragment: &str) -> String {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(fragment) {
            return text;
        }
        if let Some(status) = server.child_mut().try_wait().unwrap() {
            panic!("sluice serve exited ({status}) before {fragment:?}:\n{text}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {fragment:?} within {START_TIMEOUT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo(port: u16) {
    let echo = run(
        Command::new(sluice_tests::dcmtk("echoscu")).args([
            "-aec",
            "SLUICE",
            "127.0.0.1",
            &port.to_string(),
        ]),
        START_TIMEOUT,
    );
    assert!(echo.status.success(), "{}", stderr(&echo));
}

/// A port another program holds is waited for (the log says so at once),
/// and the server comes up on it as soon as it is released: what a server
/// started right after another died on the port meets (a killed server's
/// io_uring listeners stay bound a moment after its process is gone).
#[test]
fn a_port_released_while_the_server_waits_is_taken() {
    let port = free_port();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = spawn_at_once(&dir.path().join("data"), port, &log);
    wait_for_log(&mut server, &log, "the port is still bound");
    drop(holder);
    let text = wait_for_log(&mut server, &log, "storage SCP listening");
    assert!(text.contains("the port was released"), "{text}");
    echo(port);
}

/// A port held past the wait: refused within seconds, naming the port.
#[test]
fn a_port_held_by_another_program_is_refused_naming_it() {
    let port = free_port();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let refused = serve_refused(&dir.path().join("data"), port);
    assert!(!refused.status.success(), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains(&format!("127.0.0.1:{port}: another process listens there")),
        "{message}"
    );
    assert!(message.contains("the port is still bound"), "{message}");
    assert!(started.elapsed() < START_TIMEOUT, "{:?}", started.elapsed());
}

/// `kill -9` of a server under load (uring: listeners, stores and flushes in
/// flight), then a new server on the same port and data directory at once,
/// three times: each comes up and serves (the commitment test's restart
/// once failed on CI this way: its listeners' port was still bound).
#[test]
fn a_server_started_at_once_after_kill_9_under_load_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut waited = 0;
    for round in 0..4 {
        let log = dir.path().join(format!("server-{round}.log"));
        let mut server = spawn_at_once(&data, port, &log);
        let text = wait_for_log(&mut server, &log, "storage SCP listening");
        waited += usize::from(text.contains("the port was released"));
        echo(port);
        if round == 3 {
            break;
        }
        let mut load = crate::serve::background_load(port, 16, 30, None);
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            load.child_mut().try_wait().unwrap().is_none(),
            "the load ended early"
        );
        // SIGKILL and reap (the guard's drop), then at once the next round.
        drop(server);
        drop(load);
    }
    // How often the port was still bound is the kernel's timing, not
    // asserted; printed for whoever reads the test's output.
    println!("{waited} of 3 restarts waited for the port");
}
