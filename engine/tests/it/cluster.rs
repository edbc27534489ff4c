//! Cluster mode end to end, on one machine with real components: a
//! PostgreSQL server (Debian's, initdb'd into a temporary directory on a
//! free loopback port), several `sluice serve` nodes publishing to it, and
//! HAProxy in TCP mode (leastconn, health from each node's `/readyz`) in
//! front. Loopback ports, not network namespaces: every component binds
//! 127.0.0.1 on its own port, which is what the catalogue and the balancer
//! see of a multi-host cluster (docs/design/scale-out.md, "Tests").
//! `scripts/test` installs PostgreSQL and HAProxy when missing; a missing
//! one fails these tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{dcmtk, free_port, python, scripts_dir, ChildGuard};

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
}

impl Postgres {
    fn start() -> Postgres {
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
        let postgres = Postgres {
            _dir: dir,
            data,
            log,
            port: free_port(),
        };
        postgres.up();
        postgres
    }

    fn up(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
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

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls).unwrap()
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
        }
    }

    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--metrics-port", &self.metrics_port.to_string()])
            .args(["--cores", "1", "--free-space-floor", "0"])
            .args(["--cluster-catalogue", &self.catalogue])
            .args(["--cluster-node", &self.name])
            .args(["--cluster-publish", self.publish])
            .args(["--cluster-retry-interval", "200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice serve");
        let mut guard = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
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

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
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
                "    server {} 127.0.0.1:{} check port {}\n",
                node.name, node.port, node.metrics_port
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

#[test]
fn through_haproxy_every_acknowledged_instance_is_published_once_even_across_a_kill() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|name| Node::new(work.path(), name, postgres.conninfo(), "after-answer"))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let haproxy = Haproxy::start(work.path(), &nodes);
    let sender = Sender::start(work.path(), haproxy.port, 6);
    sender.wait_for_acks(60);
    // The catalogue goes away, so that what node-2 acknowledges from now
    // on waits in its outbox; then node-2 is killed (kill -9) with that
    // backlog. HAProxy takes it out (its /readyz is gone) and the sender's
    // associations reopen on the others.
    postgres.down();
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes[1].metric("sluice_cluster_backlog_bytes") == 0 {
        assert!(
            Instant::now() < deadline,
            "node-2 never had a backlog:\n{}",
            nodes[1].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[1].kill();
    let acknowledged_before_kill = sender.acknowledged().len();
    sender.wait_for_acks(acknowledged_before_kill + 60);
    nodes[1].start();
    postgres.up();
    sender.wait_for_acks(acknowledged_before_kill + 120);
    let (acknowledged, _) = sender.stop();
    let rows = caught_up(&postgres, &acknowledged, &nodes);
    // Unique instances: each row is one the sender had acknowledged, and
    // the primary key makes each appear once.
    let unacknowledged = rows
        .keys()
        .filter(|sop| !acknowledged.contains(*sop))
        .count();
    // A store answered while the sender was being killed can be in the
    // catalogue without an acknowledgement on record: at most one per
    // association.
    assert!(
        unacknowledged <= 6,
        "{unacknowledged} rows never acknowledged"
    );
    let per_node: BTreeMap<&String, usize> =
        rows.values().fold(BTreeMap::new(), |mut map, node| {
            *map.entry(node).or_default() += 1;
            map
        });
    assert!(
        per_node.len() == 3,
        "leastconn spreads 6 associations over the 3 nodes: {per_node:?}"
    );
    for node in &nodes {
        let (status, body) = node.get("/readyz");
        assert_eq!((status, body.as_str()), (200, "ready\n"), "{}", node.name);
    }
    // `sluice cluster status` lists the three nodes with their rows (read
    // again: a store in flight when the sender was killed may land late).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let per_node_now: BTreeMap<String, usize> =
            postgres
                .rows()
                .into_values()
                .fold(BTreeMap::new(), |mut map, node| {
                    *map.entry(node).or_default() += 1;
                    map
                });
        let status = cluster_status(&postgres);
        assert!(status.status.success(), "{status:?}");
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(
            text.starts_with("catalogue: reachable, 3 nodes\n"),
            "{text}"
        );
        let listed: BTreeMap<String, usize> = text
            .lines()
            .skip(2)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some((fields.first()?.to_string(), fields.get(1)?.parse().ok()?))
            })
            .collect();
        if listed == per_node_now {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status {listed:?} against the catalogue's {per_node_now:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "cluster through HAProxy: {} acknowledged, catalogue rows per node {per_node:?}",
        acknowledged.len()
    );
}

#[test]
fn one_sop_instance_uid_sent_to_two_nodes_at_once_ends_stored_once_and_quarantined_once() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = ["node-a", "node-b"]
        .iter()
        .map(|name| Node::new(work.path(), name, postgres.conninfo(), "before-answer"))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    // Instances to send: a few from the sender, against node-a, then the
    // same files to both nodes at once.
    let sender_dir = work.path().join("sender");
    std::fs::create_dir_all(&sender_dir).unwrap();
    let sender = Sender::start(&sender_dir, nodes[0].port, 1);
    sender.wait_for_acks(1);
    let (_, sent) = sender.stop();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sent)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let file = files.first().expect("a sent instance").clone();
    // A fresh SOP Instance UID (the sender's first copy went to node-a):
    // rewrite the file with a new one, with pydicom.
    let twin = work.path().join("twin.dcm");
    let sop = "1.2.826.0.1.3680043.10.1234.79.999.1";
    let output = Command::new(python())
        .arg("-c")
        .arg(format!(
            "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); d.SOPInstanceUID='{sop}'; \
             d.file_meta.MediaStorageSOPInstanceUID='{sop}'; d.save_as(sys.argv[2], enforce_file_format=True)"
        ))
        .arg(&file)
        .arg(&twin)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let send = |node: &Node| {
        Command::new(dcmtk("storescu"))
            .args(["-aec", AE, "127.0.0.1", &node.port.to_string()])
            .arg(&twin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (send(&nodes[0]), send(&nodes[1]));
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "storescu: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rows = caught_up(&postgres, &BTreeSet::from([sop.to_owned()]), &nodes);
    let holder = rows.get(sop).unwrap();
    let quarantined: Vec<u64> = nodes
        .iter()
        .map(|node| node.metric("sluice_cluster_quarantined_instances"))
        .collect();
    assert_eq!(quarantined.iter().sum::<u64>(), 1, "{quarantined:?}");
    let loser = nodes.iter().find(|node| &node.name != holder).unwrap();
    assert_eq!(loser.metric("sluice_cluster_quarantined_instances"), 1);
    // The loser's file is in its quarantine area, the holder's in objects.
    let count = |dir: PathBuf| walk(&dir);
    assert_eq!(count(loser.data.join("quarantine")), 1, "{}", loser.log());
    let winner = nodes.iter().find(|node| &node.name == holder).unwrap();
    assert_eq!(count(winner.data.join("quarantine")), 0);
}

/// `sluice cluster status` against the test's catalogue.
fn cluster_status(postgres: &Postgres) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "status", "--catalogue", &postgres.conninfo()])
        .output()
        .unwrap()
}

/// Files under `dir`, recursively.
fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn postgres_stopped_mid_run_degrades_to_local_ingest_and_catches_up() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut nodes = vec![Node::new(
        work.path(),
        "node-x",
        postgres.conninfo(),
        "before-answer",
    )];
    nodes[0].start();
    let sender = Sender::start(work.path(), nodes[0].port, 2);
    sender.wait_for_acks(30);
    postgres.down();
    let acknowledged_at_stop = sender.acknowledged().len();
    // Ingest goes on, locally.
    sender.wait_for_acks(acknowledged_at_stop + 60);
    let (status, body) = nodes[0].get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("local-only"), "{body}");
    assert_eq!(nodes[0].metric("sluice_cluster_catalogue_reachable"), 0);
    let status = cluster_status(&postgres);
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    assert!(
        String::from_utf8_lossy(&status.stdout).starts_with("catalogue: unreachable"),
        "{status:?}"
    );
    assert!(
        nodes[0].log().contains("cluster catalogue is unreachable"),
        "{}",
        nodes[0].log()
    );
    postgres.up();
    sender.wait_for_acks(acknowledged_at_stop + 90);
    let (acknowledged, _) = sender.stop();
    caught_up(&postgres, &acknowledged, &nodes);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while nodes[0].get("/readyz").1 != "ready\n" {
        assert!(Instant::now() < deadline, "{:?}", nodes[0].get("/readyz"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A power loss takes the outbox's unflushed tail while LMDB (flushed
/// before the answer) keeps the entries. Simulated here, without the crash
/// file system (it would need PostgreSQL beside it): the node killed
/// (kill -9) with a backlog, then its outbox cut back to the published
/// cursor, which is what the lost write leaves. The start without a clean
/// stop reconciles the index with the catalogue: every acknowledged
/// instance is published all the same.
#[test]
fn entries_a_power_loss_took_from_the_outbox_are_published_after_reconciliation() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut nodes = vec![Node::new(
        work.path(),
        "node-p",
        postgres.conninfo(),
        "after-answer",
    )];
    nodes[0].start();
    let sender = Sender::start(work.path(), nodes[0].port, 2);
    sender.wait_for_acks(20);
    postgres.down();
    let acknowledged_at_stop = sender.acknowledged().len();
    sender.wait_for_acks(acknowledged_at_stop + 40);
    let (acknowledged, _) = sender.stop();
    nodes[0].kill();
    let cluster = nodes[0].data.join("cluster");
    let cursor: u64 = std::fs::read_to_string(cluster.join("outbox.cursor"))
        .map(|text| text.trim().parse().unwrap())
        .unwrap_or(0);
    let outbox = File::options()
        .write(true)
        .open(cluster.join("outbox.jsonl"))
        .unwrap();
    let length = outbox.metadata().unwrap().len();
    assert!(length > cursor, "a backlog of entries to lose");
    outbox.set_len(cursor).unwrap();
    drop(outbox);
    postgres.up();
    nodes[0].start();
    let rows = caught_up(&postgres, &acknowledged, &nodes);
    assert!(rows.len() >= acknowledged.len());
    let log = nodes[0].log();
    assert!(
        log.contains("the local index was reconciled with the cluster catalogue"),
        "{log}"
    );
}
