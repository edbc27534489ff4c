//! Crash consistency of `sluice serve`: SIGKILL at seeded random moments
//! during ingest over many associations, then restart and check the
//! durability contract: every acknowledged instance is indexed and its file's
//! data set is byte-identical to what was sent; no index entry lacks its file
//! (start-up recovery's summary and `sluice verify`).
//!
//! Both storage layouts: files, and records in segments (64 MiB segments,
//! so a run fills some; every restart recovers and seals the open ones).
//!
//! The sender (tests/fixtures/crash_sender.py) records each 0000 it receives
//! with one O_APPEND write, so the acknowledgement file is exactly the set of
//! promises the server made. A failing round prints its seed and round; set
//! `SLUICE_CRASH_SEED` to rerun with it: the kill delays and the sender's
//! instance sizes follow from the seed (which transfer a kill interrupts
//! still depends on scheduling).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_engine::config::Config;
use sluice_engine::store::Store;
use sluice_tests::{free_port, part10_dataset, python, run, scripts_dir, ChildGuard};

const AE: &str = "SLUICE";
const ASSOCIATIONS: u32 = 8;
const SEED_DEFAULT: u64 = 0x5EED_C4A5_0001;
/// Range of the delay between the first acknowledgement and the SIGKILL.
const KILL_DELAY_MS_MIN: u64 = 200;
const KILL_DELAY_MS_MAX: u64 = 1500;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A small, seeded pseudo-random sequence (SplitMix64): enough for kill
/// delays, and it replays exactly from a printed seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// Start-up recovery's summary line, as numbers.
#[derive(Debug, Default, Clone, Copy)]
struct RecoverySummary {
    temporary_removed: u64,
    orphans_moved: u64,
    entries_checked: u64,
    files_missing: u64,
    files_wrong_size: u64,
    in_doubt_kept: u64,
    in_doubt_removed: u64,
    reindexed: u64,
    records_reindexed: u64,
}

/// Parses `recovery: T temporary files removed, O unindexed files moved to
/// orphans/, C index entries checked: M files missing, W of the wrong size[,
/// K in-doubt entries verified and kept, R incomplete and removed][, S sealed
/// files without an entry indexed again][, P misplaced files moved into
/// place][, G open segments sealed: R records indexed again, ...] (0.004 s)`: each count is the number that opens its clause.
fn recovery_summary(log: &str) -> Option<RecoverySummary> {
    let line = log
        .lines()
        .find(|line| line.contains("recovery: ") && line.contains("temporary file"))?;
    let text = &line[line.find("recovery: ")? + "recovery: ".len()..];
    let mut summary = RecoverySummary::default();
    let mut seen = 0;
    for clause in text.split([',', ':']) {
        let clause = clause.trim();
        let Some(count) = clause
            .split_whitespace()
            .next()
            .and_then(|word| word.parse::<u64>().ok())
        else {
            continue;
        };
        let slot = if clause.contains("temporary file") {
            &mut summary.temporary_removed
        } else if clause.contains("moved to orphans/") {
            &mut summary.orphans_moved
        } else if clause.contains("index entr") {
            &mut summary.entries_checked
        } else if clause.contains("missing") {
            &mut summary.files_missing
        } else if clause.contains("of the wrong size") {
            &mut summary.files_wrong_size
        } else if clause.contains("verified and kept") {
            &mut summary.in_doubt_kept
        } else if clause.contains("incomplete and removed") {
            &mut summary.in_doubt_removed
        } else if clause.contains("record") && clause.contains("indexed again") {
            &mut summary.records_reindexed
        } else if clause.contains("indexed again") {
            &mut summary.reindexed
        } else {
            continue;
        };
        *slot = count;
        seen += 1;
    }
    // The five clauses every summary has.
    (seen >= 5).then_some(summary)
}

/// One `sluice serve` process on a data directory that outlives it.
struct Server {
    guard: ChildGuard,
    log_path: PathBuf,
    port: u16,
}

impl Server {
    fn start(backend: &str, layout: &str, data: &Path, log_path: PathBuf, context: &str) -> Server {
        let port = free_port();
        let log = File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--io-backend", backend, "--cores", "2"])
            .args(["--free-space-floor", "0"])
            .args(["--storage-layout", layout, "--segment-size-mib", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice serve");
        let mut server = Server {
            guard: ChildGuard::new(child),
            log_path,
            port,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.guard.child_mut().try_wait().unwrap() {
                panic!(
                    "{context}: sluice serve exited at start ({status}):\n{}",
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{context}: sluice serve did not listen within {START_TIMEOUT:?}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL (through `Child::kill`, by PID) and reap.
    fn kill(mut self) {
        self.guard.child_mut().kill().unwrap();
        self.guard.child_mut().wait().unwrap();
    }
}

/// The acknowledgement file: SOP Instance UID -> data set length. A last line
/// without its newline (the sender killed inside the write) is not counted:
/// the write is a single write(2) of the whole line, so it cannot happen,
/// but a half line must never pass for a promise.
fn acknowledgements(path: &Path) -> BTreeMap<String, u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|line| {
            let (uid, length) = line.split_once(' ').expect("`uid length` line");
            (uid.to_owned(), length.parse().expect("data set length"))
        })
        .collect()
}

fn files_under(dir: &Path) -> usize {
    let mut count = 0;
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
                count += 1;
            }
        }
    }
    count
}

/// What the rounds of one backend saw, for the closing summary line.
#[derive(Debug, Default)]
struct Totals {
    acknowledged: usize,
    temporary_removed: u64,
    orphans_moved: u64,
    in_doubt_settled: u64,
    reindexed: u64,
    records_reindexed: u64,
}

fn crash_rounds(backend: &str, layout: &str, rounds: u32) {
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(SEED_DEFAULT);
    let mut rng = SplitMix64(seed);
    let python = python();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let started = Instant::now();
    let mut totals = Totals::default();
    // Acknowledged in earlier rounds: still indexed after every later crash.
    let mut earlier: Vec<String> = Vec::new();

    for round in 0..rounds {
        let context = format!("backend {backend}, layout {layout}, seed {seed}, round {round}");
        let kill_delay = Duration::from_millis(rng.between(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX));
        let sender_seed = rng.next() % 1_000_000_007;
        let round_dir = work.path().join(format!("round-{round}"));
        let sent_dir = round_dir.join("sent");
        std::fs::create_dir_all(&sent_dir).unwrap();
        let ack_path = round_dir.join("acks");

        let server = Server::start(
            backend,
            layout,
            &data,
            round_dir.join("serve.log"),
            &context,
        );
        let mut sender = ChildGuard::new(
            Command::new(&python)
                .arg(scripts_dir().join("crash_sender.py"))
                .args([&server.port.to_string(), AE, &ASSOCIATIONS.to_string()])
                .arg(&sent_dir)
                .arg(&ack_path)
                .arg(sender_seed.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(File::create(round_dir.join("sender.err")).unwrap())
                .spawn()
                .expect("start crash_sender.py"),
        );
        let stdout = sender.child_mut().stdout.take().unwrap();
        let (line_sender, line_receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_sender.send(line);
        });
        let line = line_receiver
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_default();
        assert_eq!(
            line.trim(),
            "ingesting",
            "{context}: the sender never got a success:\n{}\n{}",
            std::fs::read_to_string(round_dir.join("sender.err")).unwrap_or_default(),
            server.log()
        );
        std::thread::sleep(kill_delay);
        server.kill();
        // The sender outlives the server by a moment: whatever it records now
        // was answered before the kill.
        drop(sender);
        let acknowledged = acknowledgements(&ack_path);
        assert!(
            !acknowledged.is_empty(),
            "{context}: no acknowledgement on record"
        );

        // Restart on the same data directory: recovery runs at start.
        let restarted = Server::start(
            backend,
            layout,
            &data,
            round_dir.join("restart.log"),
            &context,
        );
        let log = restarted.log();
        let summary = recovery_summary(&log)
            .unwrap_or_else(|| panic!("{context}: no recovery summary line:\n{log}"));
        assert_eq!(summary.files_missing, 0, "{context}: {summary:?}\n{log}");
        assert_eq!(summary.files_wrong_size, 0, "{context}: {summary:?}\n{log}");
        let expected_entries = earlier.len() + acknowledged.len();
        assert!(
            summary.entries_checked as usize >= expected_entries,
            "{context}: recovery checked {} entries, {expected_entries} acknowledged\n{log}",
            summary.entries_checked
        );
        // Idle now (no sender): a second kill is harmless, and unlike SIGTERM
        // it cannot race the installation of the server's signal handler.
        restarted.kill();
        assert_eq!(
            files_under(&data.join("tmp")),
            0,
            "{context}: tmp/ not cleared"
        );
        // Every UID is sent once: a crash must not turn anything into a
        // duplicate.
        assert_eq!(
            files_under(&data.join("quarantine")),
            0,
            "{context}: quarantine/ not empty"
        );

        check_acknowledged(&data, layout, &acknowledged, &earlier, &sent_dir, &context);
        let verify = run(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("verify")
                .arg("--data-dir")
                .arg(&data),
            Duration::from_secs(60),
        );
        assert!(
            verify.status.success(),
            "{context}: sluice verify failed:\n{}\n{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );

        totals.acknowledged += acknowledged.len();
        totals.temporary_removed += summary.temporary_removed;
        totals.orphans_moved += summary.orphans_moved;
        totals.in_doubt_settled += summary.in_doubt_kept + summary.in_doubt_removed;
        totals.reindexed += summary.reindexed;
        totals.records_reindexed += summary.records_reindexed;
        earlier.extend(acknowledged.into_keys());
        // The sent copies were only needed for this round's comparison.
        std::fs::remove_dir_all(&sent_dir).unwrap();
    }
    println!(
        "crash ({backend}, {layout}): seed {seed}, {rounds} rounds in {:.1} s: {} instances acknowledged, \
         all present and identical; recovery removed {} temporary files, moved {} orphans, \
         settled {} entries committed in doubt and indexed {} sealed files and {} records again",
        started.elapsed().as_secs_f64(),
        totals.acknowledged,
        totals.temporary_removed,
        totals.orphans_moved,
        totals.in_doubt_settled,
        totals.reindexed,
        totals.records_reindexed
    );
    // Kills landed between receiving and indexing (a temporary file being
    // received, a file renamed into place whose index batch never
    // committed (indexed again if sealed), or an entry committed while its
    // file's syncs ran) in at least one round: the test exercised a crash inside
    // the durability sequence, not only between instances.
    assert!(
        totals.temporary_removed
            + totals.orphans_moved
            + totals.in_doubt_settled
            + totals.reindexed
            + totals.records_reindexed
            > 0,
        "backend {backend}, seed {seed}: no kill ever landed inside a transfer"
    );
}

/// Every instance acknowledged in this round is indexed, its file's data set
/// is byte-identical to the sent file's and hashes to the indexed checksum;
/// every instance acknowledged earlier is still indexed.
fn check_acknowledged(
    data: &Path,
    layout: &str,
    acknowledged: &BTreeMap<String, u64>,
    earlier: &[String],
    sent_dir: &Path,
    context: &str,
) {
    let config = Config::from_args([
        "sluice".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--storage-layout".as_ref(),
        layout.as_ref(),
    ])
    .expect("config");
    let store = Store::open(config).expect("open the store");
    for (uid, length) in acknowledged {
        let entry = store
            .instance_by_sop(uid)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: acknowledged {uid} is not indexed"));
        // A file or a record: the embedding API reads either.
        let stored = store
            .read_instance(uid)
            .unwrap_or_else(|error| panic!("{context}: bytes of acknowledged {uid}: {error}"))
            .unwrap_or_else(|| panic!("{context}: acknowledged {uid} is not readable"));
        let sent = std::fs::read(sent_dir.join(format!("{uid}.dcm"))).unwrap();
        let stored_dataset = part10_dataset(&stored);
        assert_eq!(
            stored_dataset.len() as u64,
            *length,
            "{context}: {uid} length"
        );
        assert!(
            stored_dataset == part10_dataset(&sent),
            "{context}: stored data set of {uid} differs from the sent one"
        );
        assert_eq!(
            entry.record.dataset_size_bytes(),
            *length,
            "{context}: {uid} indexed data set length"
        );
        assert_eq!(
            xxhash_rust::xxh3::xxh3_128(stored_dataset).to_be_bytes(),
            entry.record.checksum.0,
            "{context}: {uid} checksum in the index"
        );
    }
    for uid in earlier {
        assert!(
            store.instance_by_sop(uid).unwrap().is_some(),
            "{context}: {uid}, acknowledged in an earlier round, is no longer indexed"
        );
    }
}

#[test]
fn uring_sigkill_during_ingest_loses_no_acknowledged_instance() {
    crash_rounds("uring", "files", 20);
}

#[test]
fn portable_sigkill_during_ingest_loses_no_acknowledged_instance() {
    crash_rounds("portable", "files", 5);
}

#[test]
fn uring_sigkill_during_ingest_on_segments_loses_no_acknowledged_instance() {
    crash_rounds("uring", "segments", 10);
}
