//! Helpers shared by the end-to-end tests: where the real peers live, free
//! loopback ports, child processes ended by PID, fixtures, and Part 10 file
//! surgery.
//!
//! A missing peer is a test failure with a message saying how to install it
//! (`scripts/test` does); nothing here ever skips a test.

pub mod acceptor;
pub mod binaries;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// DCMTK's tools are called by absolute path: pynetdicom installs console
/// scripts named `storescu`, `echoscu`, `storescp` that shadow them on PATH.
/// `SLUICE_DCMTK_BIN` overrides the directory.
pub fn dcmtk(tool: &str) -> PathBuf {
    let dir = std::env::var_os("SLUICE_DCMTK_BIN").unwrap_or_else(|| "/usr/bin".into());
    let path = Path::new(&dir).join(tool);
    assert!(
        path.is_file(),
        "DCMTK `{tool}` not found at {}: run scripts/test (installs Debian's dcmtk) \
         or set SLUICE_DCMTK_BIN",
        path.display()
    );
    path
}

/// The Python interpreter with pynetdicom and pydicom (`PYTHON`, default
/// `python3`). Fails the test when they cannot be imported.
pub fn python() -> PathBuf {
    let python: PathBuf = std::env::var_os("PYTHON")
        .unwrap_or_else(|| "python3".into())
        .into();
    let status = Command::new(&python)
        .args(["-c", "import pynetdicom, pydicom"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    assert!(
        status.success(),
        "{} cannot import pynetdicom and pydicom: run scripts/test (installs them from PyPI)",
        python.display()
    );
    python
}

/// The directory of this crate's Python peers and fixture scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A loopback port that is free now, for a server a test starts and may
/// stop and start again on it (PostgreSQL, a node, a peer).
///
/// Picked below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), at random, never twice in one test
/// process: a port the kernel picked for a `bind(:0)` is free for the
/// kernel to give the next `bind(:0)` of any process the moment it is
/// released, so between this call and the server's bind (or while a
/// stopped server is down) another test could take it; below the range
/// only a test that names it can.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOWEST: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > LOWEST + 1_000)
        .expect("an ephemeral port range above 11000 (net.ipv4.ip_local_port_range)");
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        // A random number: std's hasher keys are random per process and
        // differ per `RandomState`.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos()),
        );
        let port = LOWEST + (hasher.finish() % u64::from(ephemeral_low - LOWEST)) as u16;
        if given.contains(&port) {
            continue;
        }
        // Free on loopback and on every address (a server may bind either).
        // (One at a time: each listener is dropped at its statement's end.)
        let loopback = TcpListener::bind(("127.0.0.1", port)).is_ok();
        let any = loopback && TcpListener::bind(("0.0.0.0", port)).is_ok();
        if any {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOWEST}..{ephemeral_low}");
}

/// A child process that is killed (by its PID, through `Child::kill`) and
/// reaped when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// Waits for the process to exit by itself within `timeout`; kills it and
    /// fails the test otherwise.
    pub fn wait_with_output(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("child present until drop");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait().expect("try_wait") {
                Some(_) => return child.wait_with_output().expect("collect child output"),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let output = child.wait_with_output().expect("collect child output");
                    panic!(
                        "process {} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                        child_name(&output),
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn child_name(_output: &Output) -> &'static str {
    "under test"
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command to completion within `timeout` and returns its output.
pub fn run(command: &mut Command, timeout: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    ChildGuard::new(child).wait_with_output(timeout)
}

/// One fixture file and the transfer syntax it is encoded in.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub transfer_syntax_uid: String,
    pub path: PathBuf,
}

/// Writes the Part 10 fixtures (one per transfer syntax of requirements §1,
/// plus big endian and deflated) into `dir` with `fixtures/make_fixtures.py`.
pub fn make_fixtures(dir: &Path) -> Vec<Fixture> {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join("make_fixtures.py"))
            .arg(dir)
            .env("DCMCONV", dcmtk("dcmconv")),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "make_fixtures.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fixtures: Vec<Fixture> = BufReader::new(&output.stdout[..])
        .lines()
        .map(|line| {
            let line = line.expect("utf-8 line");
            let (uid, path) = line.split_once(' ').expect("`uid path` line");
            Fixture {
                transfer_syntax_uid: uid.to_owned(),
                path: path.into(),
            }
        })
        .collect();
    assert!(
        fixtures.len() >= 11,
        "expected a fixture per transfer syntax, got {fixtures:?}"
    );
    fixtures
}

/// The data set of a Part 10 file: everything after the 128-byte preamble,
/// `DICM`, and the file meta group (whose length (0002,0000) is read, not
/// guessed). Panics with a clear message on a file that is not Part 10.
pub fn part10_dataset(file: &[u8]) -> &[u8] {
    assert!(
        file.len() >= 144 && &file[128..132] == b"DICM",
        "not a DICOM Part 10 file"
    );
    // (0002,0000) UL, explicit VR LE: tag(4) 'UL' len(2) value(4).
    assert_eq!(
        &file[132..138],
        &[0x02, 0x00, 0x00, 0x00, b'U', b'L'],
        "no group length first"
    );
    let group_length = u32::from_le_bytes(file[140..144].try_into().unwrap()) as usize;
    &file[144 + group_length..]
}

/// The transfer syntax UID (0002,0010) of a Part 10 file.
pub fn part10_transfer_syntax(file: &[u8]) -> String {
    part10_meta_value(file, 0x0002, 0x0010)
}

/// A text value of the file meta group, padding trimmed.
pub fn part10_meta_value(file: &[u8], wanted_group: u16, wanted_element: u16) -> String {
    let mut offset = 144;
    let end = 144 + part10_meta_length(file);
    while offset + 8 <= end {
        let group = u16::from_le_bytes([file[offset], file[offset + 1]]);
        let element = u16::from_le_bytes([file[offset + 2], file[offset + 3]]);
        let vr = &file[offset + 4..offset + 6];
        let (length, header) =
            if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC" | b"UR") {
                (
                    u32::from_le_bytes(file[offset + 8..offset + 12].try_into().unwrap()) as usize,
                    12,
                )
            } else {
                (
                    u16::from_le_bytes([file[offset + 6], file[offset + 7]]) as usize,
                    8,
                )
            };
        let value = &file[offset + header..offset + header + length];
        if (group, element) == (wanted_group, wanted_element) {
            return String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned();
        }
        offset += header + length;
    }
    panic!("no ({wanted_group:04X},{wanted_element:04X}) in file meta");
}

/// The length of a Part 10 file's meta group (its group length value): the data set starts 144 bytes past it.
pub fn part10_meta_length(file: &[u8]) -> usize {
    u32::from_le_bytes(file[140..144].try_into().unwrap()) as usize
}

/// What a Python peer script printed: one JSON object on one line. Tests
/// check it with exact substrings (the scripts print `json.dumps` output),
/// which keeps a JSON dependency out of the test crates.
#[derive(Debug)]
pub struct PeerOutput(pub String);

impl PeerOutput {
    /// Whether the output contains `fragment` verbatim.
    pub fn has(&self, fragment: &str) -> bool {
        self.0.contains(fragment)
    }

    /// The string value of `"key": "value"`.
    pub fn string(&self, key: &str) -> Option<String> {
        let start = self.0.find(&format!("\"{key}\": \""))? + key.len() + 5;
        let rest = &self.0[start..];
        Some(rest[..rest.find('"')?].to_owned())
    }
}

/// Runs the Python peer `script` (in [`scripts_dir`]) with `args`; fails the
/// test if it exits non-zero or takes longer than `timeout`.
pub fn python_peer(script: &str, args: &[&str], timeout: Duration) -> PeerOutput {
    let output = run(
        Command::new(python())
            .arg(scripts_dir().join(script))
            .args(args),
        timeout,
    );
    assert!(
        output.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PeerOutput(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A DCMTK `storescu -xf` association profile proposing exactly one
/// context: the file's SOP class with `transfer_syntax_uid`, so storescu
/// sends the file as it is (its own flags cannot propose every syntax).
pub fn storescu_profile(path: &Path, transfer_syntax_uid: &str) -> String {
    let file = std::fs::read(path).expect("read the file to propose");
    let sop_class_uid = part10_meta_value(&file, 0x0002, 0x0002);
    format!(
        "[[TransferSyntaxes]]\n[Only]\nTransferSyntax1 = {transfer_syntax_uid}\n\n\
         [[PresentationContexts]]\n[Contexts]\nPresentationContext1 = {sop_class_uid}\\Only\n\n\
         [[Profiles]]\n[Default]\nPresentationContexts = Contexts\n"
    )
}

#[cfg(test)]
mod tests {
    /// Ports below the ephemeral range, each free, none given twice.
    #[test]
    fn free_ports_are_outside_the_ephemeral_range_and_never_given_twice() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        let ports: Vec<u16> = (0..200).map(|_| super::free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!((10_000..low).contains(&port), "{port}");
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
