//! A full disk end to end (issue #19, items 1 and 5), on a small tmpfs
//! (root: CI runs as root) under `sluice serve` with real senders
//! (`sluice-loadgen`, four associations of 128 KiB instances):
//!
//! - filled with `--free-space-floor 0`, the store answers the instances it
//!   cannot keep with A711 and keeps serving; once space is freed the same
//!   senders' retries are stored without a restart;
//! - no instance answered 0000 is lost, across a restart: an instance that
//!   failed after its entry committed (its undo failing too, the disk being
//!   full) must not leave an entry that a retry is then matched against as
//!   a byte-identical duplicate (answered 0000, dropped, and the stale
//!   entry removed by the next start's recovery);
//! - with a floor, the instances in flight count against it: four senders
//!   must not drive the free space far below the floor;
//! - on the default layout, segments larger than the whole file system are
//!   refused at start, with the way out;
//! - the disk full to the last byte under the SOP Instance UID index (its
//!   journal poisoned): A711, and stored again once space returns, without
//!   a restart.
//!
//! The fills above name the files layout: their subject is the files
//! layout's full disk (the loadgen check reads `objects/`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_tests::run;

use crate::serve::{spawn_serve, SmallFilesystem};

const TIMEOUT: Duration = Duration::from_secs(300);
const MIB: u64 = 1024 * 1024;

fn loadgen() -> PathBuf {
    sluice_tests::binaries::workspace_binary("sluice-loadgen", "sluice-loadgen")
}

/// Grows (or shrinks) the tmpfs at `path` to `size_mib`: space freed or
/// taken without touching a file.
pub(crate) fn resize(path: &Path, size_mib: u64) {
    let output = run(
        Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(path),
        TIMEOUT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `count` generated CT files of 128 KiB of pixel data in `dir`.
fn instances(dir: &Path, count: u64) {
    let output = run(
        Command::new(sluice_tests::python())
            .arg(sluice_tests::scripts_dir().join("sluice_peer.py"))
            .args(["write", dir.to_str().unwrap(), &count.to_string(), "256"]),
        TIMEOUT,
    );
    assert!(output.status.success());
}

/// One load generator run: each file of `files` sent once, as it is, on
/// four associations, every answer in `history`. A second run over the
/// same files is the senders' retry: the same instances, byte for byte.
fn send(port: u16, files: &Path, count: u64, history: &Path) -> String {
    let output = run(
        Command::new(loadgen())
            .args(["run", "--target", &format!("127.0.0.1:{port}"), "--quiet"])
            .args(["--associations", "4", "--cores", "1"])
            .arg("--dir")
            .arg(files)
            .args(["--count", &count.to_string()])
            .arg("--history")
            .arg(history),
        TIMEOUT,
    );
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// One load generator run of `count` synthetic instances of `mix` from
/// `seed` on `associations` associations, every answer in `history`.
fn send_mix(
    port: u16,
    seed: u64,
    count: u64,
    history: &Path,
    mix: &str,
    associations: u32,
) -> String {
    let output = run(
        Command::new(loadgen())
            .args(["run", "--target", &format!("127.0.0.1:{port}"), "--quiet"])
            .args(["--associations", &associations.to_string(), "--mix", mix])
            .args(["--cores", "1"])
            .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
            .arg("--history")
            .arg(history),
        TIMEOUT,
    );
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The statuses of a history, with their counts.
fn statuses(history: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(history).unwrap().lines() {
        let status = line
            .split("\"status\":\"")
            .nth(1)
            .and_then(|rest| rest.get(..4))
            .unwrap_or("none")
            .to_owned();
        *counts.entry(status).or_insert(0) += 1;
    }
    counts
}

/// `sluice-loadgen check --hashes`: every instance a history saw answered
/// 0000 is in `objects/`, its data set byte for byte.
fn check(history: &Path, data: &Path) -> (bool, String) {
    let output = run(
        Command::new(loadgen())
            .args(["check", "--hashes", "--history"])
            .arg(history)
            .arg("--dir")
            .arg(data.join("objects")),
        TIMEOUT,
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// Filled, refused, freed, retried without a restart; then a restart and
/// every acknowledged instance (of both runs) present byte for byte. The
/// defect this reproduces needs instances to fail after their entry
/// committed, a timing window the fill usually opens (16 undos in a run)
/// but a loaded machine once did not: a fill that did not open it is
/// tried again on a fresh file system, up to three times.
fn full_then_freed_then_retried(policy: &str) {
    const ATTEMPTS: u32 = 3;
    for attempt in 1..=ATTEMPTS {
        if full_then_freed_then_retried_once(policy, attempt) {
            return;
        }
    }
    panic!(
        "{policy}: in {ATTEMPTS} fills no instance failed after its entry committed: the test no longer reproduces item 1"
    );
}

/// One attempt of [`full_then_freed_then_retried`]: false when the fill
/// opened no window (nothing else checked then).
fn full_then_freed_then_retried_once(policy: &str, attempt: u32) -> bool {
    let filesystem = SmallFilesystem::mount(40);
    let dir = tempfile::tempdir().unwrap();
    let data = filesystem.path().join("data");
    let port = sluice_tests::free_port();
    let log = dir.path().join("server.log");
    let extra = ["--duplicate-policy", policy, "--storage-layout", "files"];
    let server = spawn_serve(&data, port, "auto", &extra, &log);
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let (first, retry) = (
        dir.path().join("first.jsonl"),
        dir.path().join("retry.jsonl"),
    );
    let count = 400;
    let files = tempfile::tempdir().unwrap();
    instances(files.path(), count);
    send(port, files.path(), count, &first);
    let refused = statuses(&first);
    assert!(
        refused.get("0000").copied().unwrap_or(0) > 0
            && refused.get("A711").copied().unwrap_or(0) > 0,
        "{policy}: the disk filled up under the senders: {refused:?}"
    );
    assert!(
        refused.keys().all(|status| status == "0000" || status == "A711"),
        "{policy}: a full disk is answered A711 (out of resources), not as a durability failure: {refused:?}\n{}",
        server_log()
            .lines()
            .filter(|line| line.contains("A700") || line.contains("ERROR"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The defect's precondition happened: instances failed after their
    // entry committed (their last writes, or the index itself, out of
    // space), so their entries were undone while the disk was full (16
    // undos and 4 failed index commits in a run of this test).
    if !server_log()
        .contains("removing the index entry of an instance that failed to become durable")
    {
        eprintln!(
            "{policy}: fill {attempt}: no instance failed after its entry committed; again on a fresh file system"
        );
        return false;
    }

    resize(filesystem.path(), 512);
    // The free-space reading is cached for 100 ms per core.
    std::thread::sleep(Duration::from_millis(300));
    send(port, files.path(), count, &retry);
    let retried = statuses(&retry);
    assert_eq!(
        retried.get("0000").copied(),
        Some(count),
        "{policy}: every retry answered 0000 once space returned, without a restart: {retried:?}\n{}",
        server_log()
    );
    drop(server);

    // The next start's recovery: nothing acknowledged may go.
    let restart_log = dir.path().join("restart.log");
    let restarted = spawn_serve(&data, port, "auto", &extra, &restart_log);
    drop(restarted);
    for history in [&first, &retry] {
        let (passed, report) = check(history, &data);
        assert!(
            passed,
            "{policy}: an acknowledged instance is missing after the restart ({}): {report}\nrecovery: {}",
            history.display(),
            std::fs::read_to_string(&restart_log).unwrap_or_default()
        );
    }
    true
}

#[test]
fn full_disk_drop_if_identical_retries_are_stored_and_survive_a_restart() {
    full_then_freed_then_retried("drop-if-identical");
}

#[test]
fn full_disk_quarantine_retries_are_stored_and_survive_a_restart() {
    full_then_freed_then_retried("quarantine");
}

/// Eight senders of 512 KiB CT instances against a 20 MiB floor: the
/// instances in flight are reserved against it, so the free space stays
/// within 1 MiB of the floor. When only the last statvfs reading (cached
/// 100 ms) counted, it went 2.3 MiB under in this test's debug build, and
/// down to 2 MiB free (18 MiB under) in the attack's release build.
#[test]
fn the_free_space_floor_counts_the_instances_in_flight() {
    let filesystem = SmallFilesystem::mount(96);
    let dir = tempfile::tempdir().unwrap();
    let data = filesystem.path().join("data");
    let port = sluice_tests::free_port();
    let floor = 20 * MIB;
    let _server = spawn_serve(
        &data,
        port,
        "auto",
        &[
            "--free-space-floor",
            &floor.to_string(),
            "--storage-layout",
            "files",
        ],
        &dir.path().join("server.log"),
    );
    let lowest = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (lowest, done) = (Arc::clone(&lowest), Arc::clone(&done));
        let path = filesystem.path().to_owned();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let free = rustix_free_bytes(&path);
                lowest.fetch_min(free, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let history = dir.path().join("history.jsonl");
    send_mix(port, 5, 300, &history, "ct=1", 8);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let answered = statuses(&history);
    assert!(
        answered.get("A711").copied().unwrap_or(0) > 0,
        "the senders reached the floor: {answered:?}"
    );
    let lowest = lowest.load(Ordering::Relaxed);
    eprintln!(
        "lowest free space {:.2} MiB, floor {} MiB: {answered:?}",
        lowest as f64 / MIB as f64,
        floor / MIB
    );
    // Slack for what the reservation cannot see: the index's growth, and
    // instances larger than the sizes seen so far.
    assert!(
        lowest + MIB >= floor,
        "free space went down to {:.1} MiB under a floor of {} MiB",
        lowest as f64 / MIB as f64,
        floor / MIB
    );
}

/// `sluice serve` on its default layout (segments, 1 GiB each) on a 32 MiB
/// file system: refused at start, saying why and what to set; with
/// segments that fit, it listens.
#[test]
fn segments_larger_than_the_file_system_are_refused_at_start() {
    let filesystem = SmallFilesystem::mount(32);
    let dir = tempfile::tempdir().unwrap();
    let data = filesystem.path().join("data");
    let port = sluice_tests::free_port();
    let refused = run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cores", "2", "--free-space-floor", "0"]),
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("storage.segment_size_mib = 1024 is larger than the file system")
            && stderr.contains("storage.layout = \"files\""),
        "{stderr}"
    );
    let _server = spawn_serve(
        &data,
        port,
        "auto",
        &["--storage-layout", "segments", "--segment-size-mib", "4"],
        &dir.path().join("server.log"),
    );
    let history = dir.path().join("history.jsonl");
    send_mix(port, 2, 4, &history, "ct=1", 2);
    assert_eq!(statuses(&history).get("0000").copied(), Some(4));
}

/// Free bytes of the file system at `path` (what `statvfs` says).
fn rustix_free_bytes(path: &Path) -> u64 {
    let stats = rustix::fs::statvfs(path).expect("statvfs");
    stats.f_bavail.saturating_mul(stats.f_frsize)
}

/// Writes `path` until the file system holding it is full, to the last
/// byte.
fn fill_to_the_last_byte(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write(&chunk).is_ok_and(|written| written > 0) {}
    while file.write(&[0]).is_ok_and(|written| written == 1) {}
}

/// The statuses of `files`, each sent on an association of its own.
fn statuses_of(port: u16, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|file| {
            crate::serve::store_statuses(port, std::slice::from_ref(file))
                .trim_matches(|c| c == '[' || c == ']')
                .to_owned()
        })
        .collect()
}

/// 0xA711 as pynetdicom prints it.
const A711: &str = "42769";

/// The disk full to the last byte under the segments layout, whose core
/// writes into a segment allocated beforehand: the instance's record fits,
/// the index does not. The SOP Instance UID index's journal then fails its
/// flush, and fjall refuses every later write to it (it is "poisoned"):
/// before the fix every store after that was A700 until a restart (the
/// "FjallError: Poisoned" of a flaky run of the fills above). Now the
/// stores are A711 while the disk is full, stored again without a restart
/// once space returns, and every instance answered 0000 is there byte for
/// byte, before and after a restart.
#[test]
fn a_full_disk_under_the_sop_index_is_a711_and_recovers_without_a_restart() {
    use crate::segment_space::serve_on;
    use crate::serve::{Served, SmallFilesystem};
    let filesystem = SmallFilesystem::mount(48);
    let served = serve_on(&filesystem, &["--free-space-floor", "0"]);
    let sent_dir = tempfile::tempdir().unwrap();
    let files = crate::ingest::generated_files(sent_dir.path(), 200);
    let mut stored: Vec<PathBuf> = Vec::new();
    // Acknowledged before the disk fills (the first allocates the segment).
    for (file, status) in files[..4].iter().zip(statuses_of(served.port, &files[..4])) {
        assert_eq!(status, "0");
        stored.push(file.clone());
    }
    let filler = filesystem.path().join("filler");
    fill_to_the_last_byte(&filler);
    // Full: the records fit the segment, the SOP index's journal outgrows
    // its last page (a few tens of bytes per instance) and its flush (once
    // a second) fails; then more. Nothing but 0000 or A711 (before the
    // fix: A700 from then on).
    let answered = |statuses: String, sent: &[PathBuf], stored: &mut Vec<PathBuf>| {
        let statuses: Vec<&str> = statuses
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .collect();
        assert_eq!(statuses.len(), sent.len(), "{statuses:?}");
        for (file, status) in sent.iter().zip(&statuses) {
            match *status {
                "0" => stored.push(file.clone()),
                A711 => {}
                other => panic!("a full disk is A711, not {other}:\n{}", served.log()),
            }
        }
    };
    answered(
        crate::serve::store_statuses(served.port, &files[4..164]),
        &files[4..164],
        &mut stored,
    );
    std::thread::sleep(Duration::from_millis(1500));
    answered(
        crate::serve::store_statuses(served.port, &files[164..180]),
        &files[164..180],
        &mut stored,
    );
    // Space returns: stored again within a few seconds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for file in &files[180..] {
        loop {
            let status = statuses_of(served.port, std::slice::from_ref(file)).remove(0);
            if status == "0" {
                stored.push(file.clone());
                break;
            }
            assert!(
                status == A711 && std::time::Instant::now() < deadline,
                "still refused ({status}) after space returned:\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let assert_stored = |served: &Served| {
        let exported = served.stored();
        assert_eq!(exported.len(), stored.len(), "{:?}", exported.keys());
        for file in &stored {
            let sop = crate::segment_ingest::sop_of(file);
            let bytes = exported
                .get(&sop)
                .unwrap_or_else(|| panic!("{sop} not stored"));
            assert!(
                sluice_tests::part10_dataset(bytes)
                    == sluice_tests::part10_dataset(&std::fs::read(file).unwrap())
            );
        }
    };
    assert_stored(&served);
    let log = crate::segment_ingest::terminate(served);
    // The path this test is about was taken: the tree was let go and
    // reopened.
    assert!(
        log.contains("the SOP Instance UID index refused a write") && log.contains("reopened=true"),
        "{log}"
    );
    let restarted = serve_on(&filesystem, &["--free-space-floor", "0"]);
    assert_stored(&restarted);
    drop(restarted);
}
