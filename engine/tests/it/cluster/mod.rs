//! Cluster mode end to end, on one machine with real components: a
//! PostgreSQL server (Debian's, initdb'd into a temporary directory on a
//! free port), several `sluice serve` nodes publishing to it, and HAProxy
//! in TCP mode (leastconn, health from each node's `/readyz`) in front.
//! The tests through HAProxy across a kill -9 (publishing, and the issue's
//! end-to-end scenario), of a holder down and of the services give each
//! node a network namespace of its own on a private bridge (`netns`: no address outside the machine, and no node
//! reaches another's or the test's loopback); the others bind 127.0.0.1,
//! each component on its own port (docs/design/scale-out.md, "Tests"). `scripts/test` installs
//! PostgreSQL and HAProxy when missing; a missing one fails these tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::migrate::files_under as walk;
use sluice_tests::{dcmtk, free_port, python, scripts_dir, ChildGuard};

mod changes;
mod down;
mod netns;
mod places;
mod publish;
mod retrieve;
mod scenario;
mod services;
mod tls;

const AE: &str = "SLUICE";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long the catalogue may take to catch up in these tests.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a PostgreSQL tool, as the `postgres` user when the test runs as
/// root (PostgreSQL refuses to run as root).
fn pg_command(tool: &str) -> Command {
    let path = Path::new(PG_BIN).join(tool);
    assert!(
        path.is_file(),
        "{} is missing: install Debian's postgresql (scripts/test does)",
        path.display()
    );
    if rustix::process::geteuid().is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// A PostgreSQL server of its own, in a temporary directory.
struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// The address the nodes reach it at: loopback, or the bridge of a
    /// [`netns::Network`].
    host: String,
    /// TCP connections must be TLS (the test's own client uses the Unix
    /// socket).
    tls: bool,
}

impl Postgres {
    fn start() -> Postgres {
        Postgres::start_with(None, None)
    }

    /// Listening on loopback and, with a network, on its bridge's address
    /// too, trusting the network's addresses.
    fn start_for(network: Option<&netns::Network>) -> Postgres {
        Postgres::start_with(network, None)
    }

    /// Accepting TCP connections over TLS only (`hostssl`), its certificate
    /// `server.pem` and key `server.key` of `certificates`
    /// (tests/fixtures/make_tls_certs.py).
    fn start_tls(certificates: &Path) -> Postgres {
        Postgres::start_with(None, Some(certificates))
    }

    fn start_with(network: Option<&netns::Network>, certificates: Option<&Path>) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).unwrap();
        let log = dir.path().join("pg.log");
        File::create(&log).unwrap();
        if rustix::process::geteuid().is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the PostgreSQL directory");
        }
        let output = pg_command("initdb")
            .args([
                "--auth=trust",
                "-U",
                "sluice",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(network) = network {
            let mut hba = File::options()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .unwrap();
            writeln!(hba, "host all all {} trust", network.cidr()).unwrap();
        }
        if let Some(certificates) = certificates {
            for (from, to) in [("server.pem", "server.crt"), ("server.key", "server.key")] {
                std::fs::copy(certificates.join(from), data.join(to)).unwrap();
            }
            std::fs::set_permissions(
                data.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            if rustix::process::geteuid().is_root() {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .status()
                    .unwrap();
                assert!(status.success(), "chown the certificate and key");
            }
            let mut conf = File::options()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(conf, "ssl = on").unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        }
        let postgres = Postgres {
            _dir: dir,
            data,
            log,
            port: free_port(),
            host: network.map_or_else(|| "127.0.0.1".to_owned(), netns::Network::gateway),
            tls: certificates.is_some(),
        };
        postgres.up();
        postgres
    }

    fn up(&self) {
        // Loopback for the test's own client, and the nodes' address.
        let listen = if self.host == "127.0.0.1" {
            self.host.clone()
        } else {
            format!("127.0.0.1,{}", self.host)
        };
        let options = format!(
            "-c listen_addresses={listen} -c port={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.data.display()
        );
        let output = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-o", &options, "-w", "start"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn down(&self) {
        let output = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=sluice dbname=postgres",
            self.port
        )
    }

    /// The connection string the nodes use.
    fn conninfo_for_nodes(&self) -> String {
        format!(
            "host={} port={} user=sluice dbname=postgres",
            self.host, self.port
        )
    }

    fn client(&self) -> postgres::Client {
        let conninfo = if self.tls {
            format!(
                "host={} port={} user=sluice dbname=postgres",
                self.data.display(),
                self.port
            )
        } else {
            self.conninfo()
        };
        postgres::Client::connect(&conninfo, postgres::NoTls).unwrap()
    }

    /// SOP Instance UID -> node, for every catalogue row.
    fn rows(&self) -> BTreeMap<String, String> {
        let mut client = self.client();
        let exists: bool = client
            .query_one("SELECT to_regclass('sluice_instances') IS NOT NULL", &[])
            .unwrap()
            .get(0);
        if !exists {
            return BTreeMap::new();
        }
        client
            .query("SELECT sop_instance_uid, node FROM sluice_instances", &[])
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A CT instance the cluster tests write ([`write_ct`]).
struct Ct<'a> {
    /// Its file: `<name>.dcm`.
    name: String,
    /// Study, series and SOP Instance UIDs.
    uids: (&'a str, &'a str, &'a str),
    patient_name: &'a str,
    /// Rows and columns (16-bit pixels, a pattern of `seed`).
    size: u16,
    seed: usize,
}

/// Writes `instances` into `dir` (one pydicom run); their files, in order.
fn write_ct(dir: &Path, instances: &[Ct]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let script = "
import sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
out, rest = sys.argv[1], sys.argv[2:]
for at in range(0, len(rest), 7):
    name, study, series, sop, patient, size, seed = rest[at:at + 7]
    size, seed = int(size), int(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.2'
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = '1.2.840.10008.5.1.4.1.1.2'
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = patient
    ds.PatientID = 'CLUSTER'
    ds.Modality = 'CT'
    ds.Rows = size
    ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((seed * 7 + i) % 251 for i in range(size * size * 2))
    ds.save_as(f'{out}/{name}.dcm', enforce_file_format=True)
";
    let mut command = Command::new(python());
    command.args(["-c", script]).arg(dir);
    for instance in instances {
        let (study, series, sop) = instance.uids;
        command.args([&instance.name, study, series, sop, instance.patient_name]);
        command.args([instance.size.to_string(), instance.seed.to_string()]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    instances
        .iter()
        .map(|instance| dir.join(format!("{}.dcm", instance.name)))
        .collect()
}

/// One `sluice serve` node on a data directory that outlives it.
struct Node {
    name: String,
    guard: Option<ChildGuard>,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    metrics_port: u16,
    catalogue: String,
    publish: &'static str,
    /// More `sluice serve` flags.
    extra: Vec<String>,
    /// Its environment besides the test's (`RUST_LOG`).
    env: Vec<(String, String)>,
    /// Its address (DICOM and metrics ports), and the network namespace it
    /// runs in (`None`: the test's, on loopback).
    host: String,
    netns: Option<String>,
}

impl Node {
    fn new(work: &Path, name: &str, catalogue: String, publish: &'static str) -> Node {
        Node {
            name: name.to_owned(),
            guard: None,
            data: work.join(name),
            log: work.join(format!("{name}.log")),
            port: free_port(),
            metrics_port: free_port(),
            catalogue,
            publish,
            extra: Vec::new(),
            env: Vec::new(),
            host: "127.0.0.1".to_owned(),
            netns: None,
        }
    }

    /// The node runs in `host`'s network namespace, at its address.
    fn place(&mut self, host: &netns::Host) {
        self.host = host.address.clone();
        self.netns = Some(host.namespace.clone());
    }

    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // `ip netns exec` execs the program in the namespace: the child's
        // PID is the node's, for kill -9.
        let mut command = match &self.netns {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, env!("CARGO_BIN_EXE_sluice")]);
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_sluice")),
        };
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--port", &self.port.to_string(), "--bind", &self.host])
            .args(["--metrics-port", &self.metrics_port.to_string()])
            .args(["--metrics-bind", &self.host])
            .args(["--cores", "1", "--free-space-floor", "0"])
            // 64 MiB segments unless the test names a size, as `spawn_serve`
            // does: three nodes allocating 1 GiB each per run fill a test
            // machine's disk for nothing.
            .args(
                if self.extra.iter().any(|arg| arg == "--segment-size-mib") {
                    &[][..]
                } else {
                    &["--segment-size-mib", "64"][..]
                },
            )
            .args(["--cluster-catalogue", &self.catalogue])
            .args(["--cluster-node", &self.name])
            .args(["--cluster-publish", self.publish])
            .args(["--cluster-retry-interval", "200"])
            .args(&self.extra)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice serve");
        let mut guard = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            if let Some(status) = guard.child_mut().try_wait().unwrap() {
                panic!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.guard = Some(guard);
    }

    /// SIGKILL by PID, and reap.
    fn kill(&mut self) {
        let mut guard = self.guard.take().expect("a running node");
        guard.child_mut().kill().unwrap();
        guard.child_mut().wait().unwrap();
    }

    /// A clean stop: SIGTERM by PID, and reap.
    fn stop(&mut self) {
        let mut guard = self.guard.take().expect("a running node");
        let pid = guard.child_mut().id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = guard.child_mut().wait().unwrap();
        assert!(status.success(), "{} stopped with {status}", self.name);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.host, self.metrics_port, path)
    }

    /// A metric's value from `/metrics` (0 when absent).
    fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?;
                let rest = rest.strip_prefix("_total").unwrap_or(rest);
                rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
            })
            .map_or(0, |value| value as u64)
    }
}

fn http_get(host: &str, port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((host, port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// HAProxy in TCP mode in front of the nodes' DICOM ports.
struct Haproxy {
    _guard: ChildGuard,
    port: u16,
}

impl Haproxy {
    fn start(work: &Path, nodes: &[Node]) -> Haproxy {
        let binary = Path::new("/usr/sbin/haproxy");
        assert!(
            binary.is_file(),
            "/usr/sbin/haproxy is missing: install Debian's haproxy (scripts/test does)"
        );
        let port = free_port();
        let mut config = format!(
            "global\n    maxconn 2000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 120s\n    timeout server 120s\n\
             frontend dicom\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
             backend nodes\n    balance leastconn\n    option httpchk GET /readyz\n    http-check expect status 200\n\
             \x20   default-server inter 200ms fall 2 rise 1\n"
        );
        for node in nodes {
            config.push_str(&format!(
                "    server {} {}:{} check port {}\n",
                node.name, node.host, node.port, node.metrics_port
            ));
        }
        let path = work.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(work.join("haproxy.log")).unwrap())
            .spawn()
            .expect("start haproxy");
        let guard = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            _guard: guard,
            port,
        }
    }
}

/// The crash test's sender (unique instances, every success recorded).
struct Sender {
    guard: ChildGuard,
    sent: PathBuf,
    acks: PathBuf,
}

impl Sender {
    fn start(work: &Path, port: u16, associations: u32) -> Sender {
        let sent = work.join("sent");
        std::fs::create_dir_all(&sent).unwrap();
        let acks = work.join("acks");
        let mut guard = ChildGuard::new(
            Command::new(python())
                .arg(scripts_dir().join("crash_sender.py"))
                .args([&port.to_string(), AE, &associations.to_string()])
                .arg(&sent)
                .arg(&acks)
                .arg("7")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(File::create(work.join("sender.err")).unwrap())
                .spawn()
                .expect("start crash_sender.py"),
        );
        let stdout = guard.child_mut().stdout.take().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        assert_eq!(
            line.trim(),
            "ingesting",
            "the sender did not start: {}",
            std::fs::read_to_string(work.join("sender.err")).unwrap_or_default()
        );
        Sender { guard, sent, acks }
    }

    fn acknowledged(&self) -> BTreeSet<String> {
        std::fs::read_to_string(&self.acks)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').next().map(str::to_owned))
            .collect()
    }

    fn wait_for_acks(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acknowledged().len() < count {
            assert!(Instant::now() < deadline, "fewer than {count} acknowledged");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) -> (BTreeSet<String>, PathBuf) {
        self.guard.child_mut().kill().unwrap();
        self.guard.child_mut().wait().unwrap();
        (self.acknowledged(), self.sent.clone())
    }
}

/// Three nodes (not started), each in a namespace of its own on `network`,
/// publishing after the answer.
fn three_placed(work: &Path, postgres: &Postgres, network: &mut netns::Network) -> Vec<Node> {
    ["node-1", "node-2", "node-3"]
        .iter()
        .map(|name| {
            let mut node = Node::new(work, name, postgres.conninfo_for_nodes(), "after-answer");
            node.place(&network.host());
            node
        })
        .collect()
}

/// DCMTK `storescp` as `STORESCP` on a free port (every address of the
/// test's namespace), storing into `dir`; the process and its port.
fn storescp(dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let child = Command::new(dcmtk("storescp"))
        .args(["-aet", "STORESCP", "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start storescp");
    (ChildGuard::new(child), port)
}

/// Waits until `node`'s `count` catalogue rows name their segment and at
/// least `segments` segments have an object key, and `also` holds.
fn wait_placed(
    client: &mut postgres::Client,
    node: &Node,
    count: i64,
    segments: i64,
    also: &dyn Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE segment IS NOT NULL),
                        count(DISTINCT segment) FILTER (WHERE object_key IS NOT NULL)
                 FROM sluice_instances WHERE node = $1",
                &[&node.name],
            )
            .unwrap();
        let (placed, uploaded): (i64, i64) = (row.get(0), row.get(1));
        if placed == count && uploaded >= segments && also() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{placed} rows placed, {uploaded} segments with a key:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every acknowledged instance is in the catalogue; the rows.
fn caught_up(
    postgres: &Postgres,
    acknowledged: &BTreeSet<String>,
    nodes: &[Node],
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let rows = postgres.rows();
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|sop| !rows.contains_key(*sop))
            .collect();
        if missing.is_empty() {
            return rows;
        }
        if Instant::now() >= deadline {
            let logs: String = nodes
                .iter()
                .map(|node| format!("--- {}\n{}", node.name, node.log()))
                .collect();
            panic!(
                "{} of {} acknowledged instances never reached the catalogue (first {:?})\n{logs}",
                missing.len(),
                acknowledged.len(),
                missing.first()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sluice cluster status` against the test's catalogue.
fn cluster_status(postgres: &Postgres) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "status", "--catalogue", &postgres.conninfo()])
        .output()
        .unwrap()
}

/// The data set of a Part 10 file (after the file meta group).
fn dataset(bytes: &[u8]) -> &[u8] {
    assert_eq!(bytes.get(128..132), Some(&b"DICM"[..]), "not Part 10");
    let group_length = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    &bytes[144 + group_length..]
}

/// The Part 10 files under `dir` by SOP Instance UID (`storescp` names
/// them `MODALITY.SOP-INSTANCE-UID`).
fn received(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let (_, sop) = name.split_once('.')?;
            Some((sop.to_owned(), std::fs::read(&path).ok()?))
        })
        .collect()
}

fn wait_received(dir: &Path, count: usize) -> BTreeMap<String, Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = received(dir);
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// DCMTK `getscu` of `studies` from `node`, the instances stored under
/// `dir`; its log.
fn getscu(node: &Node, studies: &[&String], dir: &Path) -> String {
    let list: Vec<&str> = studies.iter().map(|study| study.as_str()).collect();
    let output = Command::new(dcmtk("getscu"))
        .args(["-v", "-S", "-aec", AE, "-od"])
        .arg(dir)
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={}", list.join("\\"))])
        .args([node.host.as_str(), &node.port.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

/// DCMTK `getscu` of `studies` from `node`, which must answer Success;
/// the directory the instances were stored in.
fn get_all(node: &Node, studies: &[&String]) -> tempfile::TempDir {
    let got = tempfile::tempdir().unwrap();
    let log = getscu(node, studies, got.path());
    assert!(
        log.contains("Received C-GET Response (Success)"),
        "{}: {log}\n{}",
        node.name,
        node.log()
    );
    got
}

/// DCMTK `movescu` of `studies` from `node` to `STORESCP`; its log.
fn movescu(node: &Node, studies: &[&String]) -> String {
    let list: Vec<&str> = studies.iter().map(|study| study.as_str()).collect();
    let output = Command::new(dcmtk("movescu"))
        .args(["-v", "-S", "-aec", AE, "-aem", "STORESCP"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={}", list.join("\\"))])
        .args([node.host.as_str(), &node.port.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

/// One answer: tag (`gggg,eeee`, lower case) -> value.
type Answer = BTreeMap<String, String>;

/// The answers of a DCMTK `findscu` run against `node` (each response
/// identifier extracted with `-X` and read back with `dcmdump`), and its log.
fn findscu(node: &Node, args: &[&str]) -> (Vec<Answer>, String) {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(dcmtk("findscu"))
        .current_dir(out.path())
        .args(["-v", "-aec", AE, "-X"])
        .args(args)
        .args([node.host.as_str(), &node.port.to_string()])
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (dumped_answers(out.path()), log)
}

/// Every response identifier `findscu -X` wrote into `dir`, in file name
/// order, read back with one `dcmdump +F` run (one process for all of them,
/// not one per answer).
fn dumped_answers(dir: &Path) -> Vec<Answer> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    if files.is_empty() {
        return Vec::new();
    }
    files.sort();
    let dumped = Command::new(dcmtk("dcmdump"))
        .arg("+F")
        .args(&files)
        .output()
        .unwrap();
    assert!(dumped.status.success(), "dcmdump {files:?}");
    let mut answers: Vec<Answer> = Vec::new();
    for line in String::from_utf8_lossy(&dumped.stdout).lines() {
        // `+F` heads each file's dump with `# dcmdump (k/n): <file>`.
        if line.starts_with("# dcmdump (") {
            answers.push(Answer::new());
            continue;
        }
        let (Some(answer), Some(tag)) = (answers.last_mut(), line.get(1..10)) else {
            continue;
        };
        let value = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map_or("", |(value, _)| value);
        answer.insert(tag.to_owned(), value.to_owned());
    }
    assert_eq!(answers.len(), files.len(), "one dump per answer file");
    answers
}

/// The SOP Instance UIDs an IMAGE-level C-FIND (Study Root) of one series
/// finds on `node`, and the `findscu` log.
fn find_images(node: &Node, study: &str, series: &str) -> (BTreeSet<String>, String) {
    let (answers, log) = findscu(
        node,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "-k",
            &format!("SeriesInstanceUID={series}"),
            "-k",
            "SOPInstanceUID",
        ],
    );
    let found = answers
        .iter()
        .filter_map(|answer| answer.get("0008,0018").cloned())
        .collect();
    (found, log)
}

/// The `sluice serve` flags of a node on the segments layout with 1 MiB
/// segments (they seal, and so upload, after a few instances), uploading to
/// `garage` and evicting after upload; its configuration file is written
/// into `work`.
fn uploading_flags(work: &Path, garage: &crate::objects::Garage) -> Vec<String> {
    let objects = work.join("objects.toml");
    std::fs::write(&objects, garage.objects_toml("after-upload")).unwrap();
    vec![
        "--config".to_owned(),
        objects.to_str().unwrap().to_owned(),
        "--storage-layout".to_owned(),
        "segments".to_owned(),
        "--segment-size-mib".to_owned(),
        "1".to_owned(),
    ]
}
