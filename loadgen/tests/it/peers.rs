//! The receivers under test, started as processes and ended by PID (their
//! `ChildGuard`s): `sluice serve`, DCMTK `storescp`, the pynetdicom SCP.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{binaries, dcmtk, free_port, python, scripts_dir, ChildGuard};

/// A receiving process on a loopback port, storing under `dir`.
pub struct Peer {
    _guard: ChildGuard,
    /// Its port.
    pub port: u16,
    /// Where it stores.
    pub store: PathBuf,
    /// Its log file, if any.
    pub log: PathBuf,
}

impl Peer {
    /// `127.0.0.1:port`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sluice serve` with its own data directory under `dir`.
pub fn sluice(dir: &Path) -> Peer {
    sluice_with(dir, &[])
}

/// `sluice serve` with extra flags.
pub fn sluice_with(dir: &Path, extra: &[&str]) -> Peer {
    let port = free_port();
    let store = dir.join("data");
    let log = dir.join("sluice.log");
    let child = Command::new(binaries::workspace_binary("sluice-engine", "sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&store)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cores", "2", "--free-space-floor", "0"])
        // Files: the tests check what was stored in objects/.
        .args(["--storage-layout", "files"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("start sluice serve");
    let guard = ChildGuard::new(child);
    wait_listening(port, "sluice serve");
    Peer {
        _guard: guard,
        port,
        store: store.join("objects"),
        log,
    }
}

/// DCMTK `storescp` (forking: one process per association), Nagle off.
pub fn storescp(dir: &Path) -> Peer {
    let port = free_port();
    let store = dir.join("storescp");
    std::fs::create_dir_all(&store).expect("create the storescp directory");
    let mut command = Command::new(dcmtk("storescp"));
    command
        .env("TCP_NODELAY", "1")
        .args(["--fork", "-od"])
        .arg(&store)
        .arg(port.to_string());
    start(command, port, store, dir.join("storescp.log"), "storescp")
}

/// The pynetdicom SCP of tests/fixtures/pynetdicom_scp.py with `extra` flags.
pub fn pynetdicom(dir: &Path, extra: &[&str]) -> Peer {
    let port = free_port();
    let store = dir.join("pynetdicom");
    let log = dir.join("pynetdicom.log");
    let mut child = Command::new(python())
        .arg(scripts_dir().join("pynetdicom_scp.py"))
        .arg(port.to_string())
        .arg(&store)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("start the pynetdicom SCP");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = ChildGuard::new(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the SCP's first line");
    assert!(
        line.starts_with("listening"),
        "pynetdicom SCP did not start: {line:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Peer {
        _guard: guard,
        port,
        store,
        log,
    }
}

/// DCMTK `dcmqrscp`, Query/Retrieve SCP (AE `QRSCP`) over a fresh
/// database under `dir`, configured by this test: it stores what it is
/// sent and knows the loadgen's calling AE `LOADGEN` as a move destination
/// at `127.0.0.1:move_port`. Nagle off, as DCMTK otherwise stalls on it.
pub fn dcmqrscp(dir: &Path, move_port: u16) -> Peer {
    let port = free_port();
    let store = dir.join("dcmqrscp");
    std::fs::create_dir_all(&store).expect("create the dcmqrscp database");
    let config = dir.join("dcmqrscp.cfg");
    std::fs::write(
        &config,
        format!(
            "NetworkTCPPort  = {port}\n\
             MaxPDUSize      = 16384\n\
             MaxAssociations = 16\n\
             HostTable BEGIN\n\
             loadgen = (LOADGEN, 127.0.0.1, {move_port})\n\
             HostTable END\n\
             VendorTable BEGIN\n\
             VendorTable END\n\
             AETable BEGIN\n\
             QRSCP {} RW (500, 1024mb) ANY\n\
             AETable END\n",
            store.display()
        ),
    )
    .expect("write the dcmqrscp configuration");
    let mut command = Command::new(dcmtk("dcmqrscp"));
    command.env("TCP_NODELAY", "1").arg("-c").arg(&config);
    start(command, port, store, dir.join("dcmqrscp.log"), "dcmqrscp")
}

/// Orthanc (DICOM AE `ORTHANC`, HTTP on another free port) over a fresh
/// storage under `dir`, knowing `LOADGEN` at `127.0.0.1:move_port` as a
/// modality (C-FIND, C-MOVE to it, C-GET allowed).
pub fn orthanc(dir: &Path, move_port: u16) -> Peer {
    let port = free_port();
    let store = dir.join("orthanc");
    std::fs::create_dir_all(&store).expect("create the Orthanc storage");
    let config = dir.join("orthanc.json");
    let settings = serde_json::json!({
        "Name": "loadgen-test",
        "StorageDirectory": store,
        "IndexDirectory": store,
        "StorageCompression": false,
        "HttpServerEnabled": true,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": false,
        "DicomServerEnabled": true,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": false,
        "DicomAlwaysAllowStore": true,
        "DicomAlwaysAllowFind": true,
        "DicomAlwaysAllowGet": true,
        "DicomAlwaysAllowMove": true,
        "DicomModalities": { "loadgen": ["LOADGEN", "127.0.0.1", move_port] },
        "Plugins": [],
        "LuaScripts": [],
    });
    std::fs::write(&config, settings.to_string()).expect("write the Orthanc configuration");
    let mut command = Command::new("/usr/sbin/Orthanc");
    command.env("TCP_NODELAY", "1").arg(&config);
    start(command, port, store, dir.join("orthanc.log"), "Orthanc")
}

/// Starts `command` (stderr into `log`) and waits until it listens on `port`.
fn start(mut command: Command, port: u16, store: PathBuf, log: PathBuf, what: &str) -> Peer {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .unwrap_or_else(|error| panic!("start {what}: {error}"));
    let guard = ChildGuard::new(child);
    wait_listening(port, what);
    Peer {
        _guard: guard,
        port,
        store,
        log,
    }
}
