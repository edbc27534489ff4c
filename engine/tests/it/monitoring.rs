//! The monitoring endpoint and systemd's notify protocol end to end, on
//! `sluice serve` processes (issue #16):
//!
//! - `/metrics` read by the Prometheus project's own OpenMetrics parser
//!   (`prometheus_client`, tests/fixtures/metrics_read.py) while DCMTK's
//!   storescu and sluice-loadgen send, then its counters matched against
//!   what they sent: instances and data-set bytes per calling AE, answers
//!   by status, latency histogram counts, associations;
//! - `/readyz` 503 below the free-space floor (a tmpfs resized under the
//!   server, as disk_full.rs does) and 200 again once space is back;
//!   `/healthz`; what the endpoint answers to other methods, paths and an
//!   oversized request;
//! - READY=1, WATCHDOG=1 keep-alives and STOPPING=1 on a NOTIFY_SOCKET the
//!   test binds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_tests::{dcmtk, free_port, part10_meta_length, part10_meta_value, run, ChildGuard};

use crate::disk_full::resize;
use crate::ingest::generated_files;
use crate::process::signal;
use crate::serve::{Served, SmallFilesystem};

const TIMEOUT: Duration = Duration::from_secs(300);
const MIB: u64 = 1024 * 1024;

/// One sample: name, labels, value.
pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

/// `/metrics` of the endpoint at `port`, parsed by prometheus_client's
/// OpenMetrics parser (which fails on a malformed exposition).
pub(crate) fn scrape(port: u16) -> Vec<Sample> {
    let output = run(
        Command::new(sluice_tests::python())
            .arg(sluice_tests::scripts_dir().join("metrics_read.py"))
            .arg(format!("http://127.0.0.1:{port}/metrics")),
        TIMEOUT,
    );
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused /metrics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| {
            let labels = sample[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap().to_owned()))
                .collect();
            (
                sample[0].as_str().unwrap().to_owned(),
                labels,
                sample[2].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels` (0 when
/// there is none).
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(sample, sample_labels, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(key, value)| sample_labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|(_, _, value)| *value)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied().unwrap_or(0.0)
}

/// One HTTP/1.1 exchange on the endpoint: the status code and the body.
fn http(port: u16, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(crate) fn get(port: u16, path: &str) -> (u16, String) {
    http(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
}

/// `count` generated CT files in a new directory `name` under `dir`.
fn instances(dir: &Path, name: &str, count: usize) -> (PathBuf, Vec<PathBuf>) {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let files = generated_files(&out, count);
    (out, files)
}

#[test]
fn metrics_count_what_storescu_and_loadgen_sent_while_they_send() {
    const FROM_STORESCU: usize = 12;
    const FROM_LOADGEN: usize = 40;
    let metrics_port = free_port();
    let served = Served::start("auto", &["--metrics-port", &metrics_port.to_string()]);
    let (_, storescu_files) = instances(served.dir.path(), "storescu", FROM_STORESCU);
    let (loadgen_files, _) = instances(served.dir.path(), "loadgen", FROM_LOADGEN);

    // Nothing sent yet: the endpoint answers, every counter at zero.
    let before = scrape(metrics_port);
    assert_eq!(value(&before, "sluice_store_answers_total", &[]), 0.0);
    assert_eq!(value(&before, "sluice_ready", &[]), 1.0);
    assert!(
        before
            .iter()
            .any(|(name, labels, _)| name == "sluice_io_backend_info"
                && labels.contains_key("backend")),
        "{before:?}"
    );

    let port = served.port;
    let sending = Arc::new(AtomicBool::new(true));
    let loadgen = {
        let files = loadgen_files.clone();
        std::thread::spawn(move || {
            run(
                Command::new(sluice_tests::binaries::workspace_binary(
                    "sluice-loadgen",
                    "sluice-loadgen",
                ))
                .args(["run", "--target", &format!("127.0.0.1:{port}"), "--quiet"])
                .args([
                    "--calling-ae",
                    "LOADGEN_B",
                    "--associations",
                    "2",
                    "--cores",
                    "1",
                ])
                .arg("--dir")
                .arg(&files)
                .args(["--count", &FROM_LOADGEN.to_string()]),
                TIMEOUT,
            )
        })
    };
    let storescu = {
        let files = storescu_files;
        let sending = sending.clone();
        std::thread::spawn(move || {
            let output = run(
                Command::new(dcmtk("storescu"))
                    .args(["-aec", "SLUICE", "-aet", "STORESCU_A", "127.0.0.1"])
                    .arg(port.to_string())
                    .args(&files)
                    .env("TCP_NODELAY", "1"),
                TIMEOUT,
            );
            sending.store(false, Ordering::SeqCst);
            output
        })
    };
    // Scrapes while they send: each must parse.
    let mut scrapes_during = 0;
    while sending.load(Ordering::SeqCst) || !loadgen.is_finished() {
        let during = scrape(metrics_port);
        assert!(
            value(&during, "sluice_store_answers_total", &[("status", "0000")])
                <= (FROM_STORESCU + FROM_LOADGEN) as f64
        );
        scrapes_during += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let storescu = storescu.join().unwrap();
    assert!(storescu.status.success(), "storescu: {storescu:?}");
    let loadgen = loadgen.join().unwrap();
    assert!(loadgen.status.success(), "loadgen: {loadgen:?}");
    assert!(scrapes_during >= 1);

    let after = scrape(metrics_port);
    let total = (FROM_STORESCU + FROM_LOADGEN) as f64;
    assert_eq!(
        value(
            &after,
            "sluice_store_instances_received_total",
            &[("calling_ae", "STORESCU_A")]
        ),
        FROM_STORESCU as f64
    );
    assert_eq!(
        value(
            &after,
            "sluice_store_instances_received_total",
            &[("calling_ae", "LOADGEN_B")]
        ),
        FROM_LOADGEN as f64
    );
    assert_eq!(
        value(&after, "sluice_store_answers_total", &[("status", "0000")]),
        total
    );
    assert_eq!(
        value(
            &after,
            "sluice_dimse_requests_total",
            &[("command", "C-STORE")]
        ),
        total
    );
    assert_eq!(
        value(
            &after,
            "sluice_store_outcomes_total",
            &[("outcome", "stored")]
        ),
        total
    );
    // Records (the default layout) have no directory sync of their own.
    assert_eq!(
        value(&after, "sluice_store_directory_sync_seconds_count", &[]),
        0.0
    );
    for histogram in [
        "sluice_store_latency_seconds",
        "sluice_store_file_sync_seconds",
        "sluice_store_index_commit_seconds",
    ] {
        assert_eq!(
            value(&after, &format!("{histogram}_count"), &[]),
            total,
            "{histogram}"
        );
        assert_eq!(
            value(&after, &format!("{histogram}_bucket"), &[("le", "+Inf")]),
            total,
            "{histogram}"
        );
        assert!(
            value(&after, &format!("{histogram}_sum"), &[]) > 0.0,
            "{histogram}"
        );
    }
    // storescu: one association; loadgen: two.
    assert!(value(&after, "sluice_associations_accepted_total", &[]) >= 3.0);
    assert_eq!(value(&after, "sluice_store_instances_in_flight", &[]), 0.0);
    assert_eq!(
        value(&after, "sluice_index_entries", &[("table", "instances")]),
        total
    );

    // The bytes: what the store holds of each sender's data sets, which
    // it keeps byte for byte behind its own meta group.
    let mut bytes_by_ae: BTreeMap<String, u64> = BTreeMap::new();
    for file in served.stored().values() {
        let source_ae = part10_meta_value(file, 0x0002, 0x0016);
        let data_set = (file.len() - 144 - part10_meta_length(file)) as u64;
        *bytes_by_ae.entry(source_ae.trim().to_owned()).or_default() += data_set;
    }
    for ae in ["STORESCU_A", "LOADGEN_B"] {
        assert_eq!(
            value(
                &after,
                "sluice_store_bytes_received_total",
                &[("calling_ae", ae)]
            ),
            bytes_by_ae[ae] as f64,
            "{ae}"
        );
    }
}

#[test]
fn readyz_is_503_below_the_free_space_floor_and_200_again_once_space_is_back() {
    let filesystem = SmallFilesystem::mount(64);
    let metrics_port = free_port();
    let served = Served::start_in(
        tempfile::tempdir().unwrap(),
        filesystem.path().join("data"),
        "auto",
        &[
            "--metrics-port",
            &metrics_port.to_string(),
            "--free-space-floor",
            "24MiB",
        ],
    );
    assert_eq!(get(metrics_port, "/healthz"), (200, "ok\n".to_owned()));
    // The DICOM port accepts a moment before the server calls itself ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(metrics_port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {}", served.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(metrics_port, "/readyz"), (200, "ready\n".to_owned()));

    // Below the floor: not ready, and the reason says so.
    resize(filesystem.path(), 16);
    assert!(filesystem.free_bytes() < 24 * MIB);
    let (status, body) = get(metrics_port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("below the floor"), "{body}");
    let samples = scrape(metrics_port);
    assert_eq!(value(&samples, "sluice_ready", &[]), 0.0);
    assert_eq!(
        value(&samples, "sluice_free_space_floor_bytes", &[]),
        (24 * MIB) as f64
    );
    assert!(value(&samples, "sluice_free_space_bytes", &[]) < (24 * MIB) as f64);
    // Still alive.
    assert_eq!(get(metrics_port, "/healthz").0, 200);

    // Space back: ready again, without a restart.
    resize(filesystem.path(), 64);
    assert_eq!(get(metrics_port, "/readyz"), (200, "ready\n".to_owned()));

    // What the endpoint answers to anything else.
    let (status, _) = http(
        metrics_port,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert_eq!(get(metrics_port, "/").0, 404);
    assert_eq!(http(metrics_port, b"\x16\x03\x01 not http\r\n\r\n").0, 400);
    let oversized = format!(
        "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    // It may close before reading all of it: the answer comes first.
    let mut stream = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(oversized.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    // And it still serves.
    assert_eq!(get(metrics_port, "/healthz").0, 200);
    drop(served);
}

/// The datagrams a NOTIFY_SOCKET received, one per element.
fn receive_until(
    socket: &UnixDatagram,
    received: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buffer = [0u8; 4096];
    while !done(received) {
        assert!(
            Instant::now() < deadline,
            "notify datagrams so far: {received:?}"
        );
        if let Ok(length) = socket.recv(&mut buffer) {
            received.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
    }
}

#[test]
fn notify_socket_receives_ready_watchdog_keep_alives_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cores", "2", "--free-space-floor", "0"])
        .env("NOTIFY_SOCKET", &socket_path)
        // 200 ms: a keep-alive every 100 ms.
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child);
    let mut received = Vec::new();
    receive_until(&socket, &mut received, |received| {
        received.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 5
    });
    let ready = received
        .iter()
        .position(|message| message.lines().any(|line| line == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {received:?}"));
    let first_keep_alive = received
        .iter()
        .position(|message| message.lines().any(|line| line == "WATCHDOG=1"))
        .unwrap();
    assert!(ready < first_keep_alive, "{received:?}");
    assert!(received[ready].contains(&format!(
        "STATUS=accepting associations on 127.0.0.1:{port}"
    )));
    // READY=1 means it serves.
    let echo = run(
        Command::new(dcmtk("echoscu")).args(["-aec", "SLUICE", "127.0.0.1", &port.to_string()]),
        TIMEOUT,
    );
    assert!(echo.status.success(), "{echo:?}");

    signal(guard.id(), "TERM");
    receive_until(&socket, &mut received, |received| {
        received
            .iter()
            .any(|message| message.lines().any(|line| line == "STOPPING=1"))
    });
    let output = guard.wait_with_output(Duration::from_secs(60));
    assert!(output.status.success(), "{output:?}");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains("keep-alives withheld"), "{log}");
}
