//! The ingest path's failure answers end to end (issue #19): refused and
//! failed C-STOREs leave nothing behind (no descriptor, no temporary file),
//! an empty data set gets the head checks' status, and a store that ran out
//! of descriptors or space keeps serving once the cause is gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::{python, python_peer, run, scripts_dir, PeerOutput};

use crate::serve::spawn_serve;

const AE: &str = "SLUICE";
const PEER_TIMEOUT: Duration = Duration::from_secs(180);

fn peer(args: &[&str]) -> PeerOutput {
    python_peer("sluice_peer.py", args, PEER_TIMEOUT)
}

/// The open descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count()
}

/// Every file under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Waits until `condition` holds (what the server does after its answers,
/// closes and unlinks, completes asynchronously); false after `timeout`.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `count` generated CT files in `dir`.
pub(crate) fn generated_files(dir: &Path, count: usize) -> Vec<PathBuf> {
    generated_files_of(dir, count, 16)
}

/// [`generated_files`] of `rows` x `rows` pixels (16-bit).
pub(crate) fn generated_files_of(dir: &Path, count: usize, rows: u32) -> Vec<PathBuf> {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("sluice_peer.py"))
            .args([
                "write",
                dir.to_str().unwrap(),
                &count.to_string(),
                &rows.to_string(),
            ]),
        PEER_TIMEOUT,
    );
    assert!(output.status.success());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Stores `files` on one pynetdicom association; its output.
fn store(port: u16, files: &[PathBuf]) -> String {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("pynetdicom_scu.py"))
            .args([&port.to_string(), AE, "INGEST", "store"])
            .args(files),
        PEER_TIMEOUT,
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const REFUSALS: usize = 400;

/// 400 C-STOREs refused by the head checks (A900 and C011), each data set
/// arriving whole with its command, so before its temporary file's open
/// completed: the answer used to finish the job without waiting for the
/// open, whose descriptor and file were then left behind (365 descriptors
/// and 371 files in tmp/ after 400 refusals).
fn refusals_leave_nothing_behind(backend: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = sluice_tests::free_port();
    let server = spawn_serve(
        &data,
        port,
        backend,
        &[&["--cores", "1"][..], extra].concat(),
        &dir.path().join("server.log"),
    );
    let pid = server.id();
    // One instance stored first, so the descriptors the store keeps open
    // (index, directories) are counted before the refusals.
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 1);
    assert!(store(port, &files).contains("\"statuses\": [0]"));
    let before = descriptors(pid);

    let out = peer(&["refused", &port.to_string(), AE, &REFUSALS.to_string()]);
    assert!(
        out.has(&format!("\"A900\": {}", REFUSALS / 2))
            && out.has(&format!("\"C011\": {}", REFUSALS / 2)),
        "{backend}: {out:?}"
    );
    let settled = eventually(Duration::from_secs(10), || {
        descriptors(pid) <= before + 4 && files_under(&data.join("tmp")).is_empty()
    });
    assert!(
        settled,
        "{backend}: after {REFUSALS} refusals: {} descriptors open (was {before}), {} files in tmp/",
        descriptors(pid),
        files_under(&data.join("tmp")).len()
    );
}

#[test]
fn uring_refusals_leave_no_descriptor_and_no_temporary_file() {
    refusals_leave_nothing_behind("uring", &[]);
}

#[test]
fn portable_refusals_leave_no_descriptor_and_no_temporary_file() {
    refusals_leave_nothing_behind("portable", &[]);
}

/// The files layout opens a temporary file for every C-STORE (where the
/// leak was).
#[test]
fn files_refusals_leave_no_descriptor_and_no_temporary_file() {
    refusals_leave_nothing_behind("uring", &["--storage-layout", "files"]);
}

/// Under a 256-descriptor limit (soft and hard, set on the running
/// server), 400 refusals and then ordinary stores: every store succeeds
/// (before the fix every store failed A700 "Too many open files").
#[test]
fn stores_go_on_after_refusals_under_a_256_descriptor_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = sluice_tests::free_port();
    let server = spawn_serve(
        &data,
        port,
        "auto",
        &["--cores", "1"],
        &dir.path().join("server.log"),
    );
    let limited = run(
        Command::new("prlimit")
            .arg(format!("--pid={}", server.id()))
            .arg("--nofile=256:256"),
        PEER_TIMEOUT,
    );
    assert!(
        limited.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&limited.stderr)
    );
    let out = peer(&["refused", &port.to_string(), AE, &REFUSALS.to_string()]);
    assert!(
        out.has(&format!("\"A900\": {}", REFUSALS / 2))
            && out.has(&format!("\"C011\": {}", REFUSALS / 2)),
        "every refusal answered with its own status (before the fix, A700 \"Too many open files\" once the descriptors ran out): {out:?}"
    );
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 20);
    let answered = store(port, &files);
    assert!(
        answered.contains(&format!("\"statuses\": [{}]", vec!["0"; 20].join(", "))),
        "{answered}\n{}",
        std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
    );
    drop(server);
}

/// An empty data set is refused by the head checks (A900: no SOP Class
/// UID, no SOP Instance UID), every time. It used to get A710 when the
/// temporary file's open completed before the empty fragment came: the
/// fragment became a write of no bytes, which the io layer refuses.
fn empty_data_sets_get_a900(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = sluice_tests::free_port();
    let _server = spawn_serve(
        &data,
        port,
        backend,
        &["--cores", "1"],
        &dir.path().join("server.log"),
    );
    let count = 200;
    let out = peer(&["empty", &port.to_string(), AE, &count.to_string()]);
    assert!(
        out.0 == format!("{{\"statuses\": {{\"A900\": {count}}}}}"),
        "{backend}: {out:?}"
    );
    assert!(eventually(Duration::from_secs(10), || files_under(
        &data.join("tmp")
    )
    .is_empty()));
}

#[test]
fn uring_empty_data_sets_get_a900() {
    empty_data_sets_get_a900("uring");
}

#[test]
fn portable_empty_data_sets_get_a900() {
    empty_data_sets_get_a900("portable");
}

/// A duplicate held in quarantine is answered 0000 but is not where `ls`
/// and `show` look: the server logs it at warn (peer, calling AE, SOP
/// Instance UID, quarantine id) and counts it apart in the association's
/// line (it used to count as stored, and log nothing).
#[test]
fn a_quarantined_instance_is_logged_and_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = sluice_tests::free_port();
    let log = dir.path().join("server.log");
    let server = spawn_serve(&data, port, "auto", &["--cores", "1"], &log);
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 1);
    let twice = [files[0].clone(), files[0].clone()];
    assert!(store(port, &twice).contains("\"statuses\": [0, 0]"));
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    let sop = sluice_tests::part10_meta_value(&std::fs::read(&files[0]).unwrap(), 0x0002, 0x0003);
    let held = log
        .lines()
        .find(|line| line.contains("held in quarantine"))
        .unwrap_or_else(|| panic!("no quarantine line:\n{log}"));
    assert!(held.contains("WARN"), "{held}");
    assert!(held.contains("calling_ae=INGEST"), "{held}");
    assert!(held.contains(&format!("sop_instance_uid={sop}")), "{held}");
    assert!(held.contains("quarantine_id=1"), "{held}");
    assert!(held.contains("peer=Some(127.0.0.1:"), "{held}");
    let ended = log
        .lines()
        .find(|line| line.contains("association ended") && line.contains("calling_ae=INGEST"))
        .unwrap_or_else(|| panic!("no association line:\n{log}"));
    assert!(
        ended.contains("instances_stored=1 instances_quarantined=1 instances_failed=0"),
        "{ended}"
    );
}

/// The store's counters, through the embedding API: the duplicate is
/// counted as quarantined, not as stored.
#[test]
fn the_store_counts_quarantined_instances_apart() {
    use sluice_engine::config::Config;
    use sluice_engine::scp::Server;
    use sluice_engine::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let port = sluice_tests::free_port();
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cores",
        "1",
        "--free-space-floor",
        "0",
    ])
    .unwrap();
    let opened = Store::open(config).unwrap();
    let server = Server::start(&opened).unwrap();
    let sent = tempfile::tempdir().unwrap();
    let files = generated_files(sent.path(), 1);
    let twice = [files[0].clone(), files[0].clone()];
    assert!(store(port, &twice).contains("\"statuses\": [0, 0]"));
    server.shutdown(Duration::from_secs(10)).unwrap();
    let counts = opened.counts();
    assert_eq!(
        (counts.stored, counts.quarantined, counts.failed),
        (1, 1, 0),
        "{counts:?}"
    );
}

/// ARTIM runs after the SCP's A-RELEASE-RP (Sta13) while the idle timer
/// the association armed is still pending: the transport must close at the
/// ARTIM deadline (1 s here), not at the idle one (30 s). The connection
/// kept one io timer, armed for the earliest deadline when armed, and did
/// not re-arm it for an earlier one.
#[test]
fn artim_after_a_release_fires_on_time_while_the_idle_timer_is_armed() {
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_tests::free_port();
    let _server = spawn_serve(
        &dir.path().join("data"),
        port,
        "auto",
        &["--artim-timeout-ms", "1000", "--idle-timeout-ms", "30000"],
        &dir.path().join("server.log"),
    );
    // Released 2 s after associating: by then the connection's one io
    // timer has fired for the ARTIM deadline of the association's start
    // and been armed again for the idle deadline.
    let out = peer(&["release_and_hold", &port.to_string(), AE, "2", "20"]);
    let closed_after: f64 = out
        .0
        .split("\"closed_after_s\": ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches('}').trim().parse().ok())
        .unwrap_or_else(|| panic!("the SCP did not close the transport within 20 s: {out:?}"));
    assert!(
        closed_after < 10.0,
        "closed {closed_after:.1} s after the release, ARTIM is 1 s"
    );
}
