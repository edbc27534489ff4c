//! The object store (`[objects]`, docs/design/scale-out.md, "Object
//! store") against a real 3-node Garage cluster on loopback ports: sealed
//! segments (written with the segment writer and indexed with their record
//! places, as the ingest path will) uploaded, verified, evicted, and their
//! records read back with ranged GETs through the embedding API,
//! `export-instance`, `verify`, and a C-GET (DCMTK getscu) through `sluice
//! serve`; one Garage node killed during reads; the store unreachable.
//!
//! Garage is `garage` 2.5.0 (`cargo install garage`, which `scripts/test`
//! does when it is missing): `$SLUICE_GARAGE`, else `~/.cargo/bin/garage`,
//! else `garage` on PATH. A missing binary fails the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::config::Config;
use sluice_engine::objects::Uploader;
use sluice_engine::store::segment::{encode_record, RecordUids, SegmentWriter};
use sluice_engine::store::Store;
use sluice_index::{Location, RecordPlace, StoreOutcome, StoreRequest, Triplet, WriteOp};
use sluice_tests::{dcmtk, free_port, run, ChildGuard};

use crate::operator::{sluice, sluice_ok, StoreFixture, CT};
use crate::segment_recovery::element;

/// How long Garage may take to start and settle its layout.
const GARAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// The segments the tests seal (and upload) and leave open.
pub(crate) const SEALED: u64 = 0x0002_0000_0000_0001;
const OPEN: u64 = 0x0002_0000_0000_0002;
const EPOCH: u64 = 1_700_000_000_000_000_000;
const BUCKET: &str = "sluice-test";

/// The garage binary.
fn garage_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_GARAGE") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let installed = Path::new(&home).join(".cargo/bin/garage");
        if installed.is_file() {
            return installed;
        }
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("garage"))
        .find(|path| path.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "garage is not installed: scripts/test installs it \
             (cargo install garage --locked --version 2.5.0 --debug --no-default-features --features lmdb), \
             or set SLUICE_GARAGE"
        )
    })
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut buffer))
        .unwrap();
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// One Garage node: its configuration, its process.
pub(crate) struct GarageNode {
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    pub(crate) guard: Option<ChildGuard>,
}

impl GarageNode {
    fn command(&self) -> Command {
        let mut command = Command::new(garage_binary());
        command.arg("-c").arg(&self.config);
        command
    }

    /// Runs a CLI command against this node; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let output = run(self.command().args(args), Duration::from_secs(60));
        assert!(
            output.status.success(),
            "garage {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// SIGKILL by PID, and reap.
    fn kill(&mut self) {
        let mut guard = self.guard.take().expect("a running garage node");
        guard.child_mut().kill().unwrap();
        guard.child_mut().wait().unwrap();
    }
}

/// A 3-node Garage cluster on loopback ports (replication factor 3, one
/// zone per node), a key and a bucket; the nodes are stopped by PID when
/// it is dropped (`ChildGuard`).
pub(crate) struct Garage {
    _dir: tempfile::TempDir,
    /// Where the S3 API listens (and the nodes reach it).
    s3_host: String,
    pub(crate) nodes: Vec<GarageNode>,
    key_id: String,
    secret_file: PathBuf,
}

impl Garage {
    pub(crate) fn start() -> Garage {
        Garage::start_at("127.0.0.1")
    }

    /// The S3 API listening on `s3_host` (an address of the test's
    /// namespace: the cluster tests' nodes reach it on the bridge).
    pub(crate) fn start_at(s3_host: &str) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let rpc_secret = random_hex(32);
        let mut nodes = Vec::new();
        for n in 0..3 {
            let root = dir.path().join(format!("garage-{n}"));
            std::fs::create_dir_all(&root).unwrap();
            let (rpc_port, s3_port) = (free_port(), free_port());
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{root}/meta\"\n\
                     data_dir = \"{root}/data\"\n\
                     db_engine = \"lmdb\"\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"garage\"\n\
                     api_bind_addr = \"{s3_host}:{s3_port}\"\n\
                     root_domain = \".s3.garage.localhost\"\n",
                    root = root.display()
                ),
            )
            .unwrap();
            let log = root.join("garage.log");
            let child = Command::new(garage_binary())
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "garage=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start garage server");
            nodes.push(GarageNode {
                config,
                log,
                s3_port,
                guard: Some(ChildGuard::new(child)),
            });
        }
        // Each node answers over RPC as itself (`status` connects to its
        // own address with its own key: a port another process took fails
        // here, not later), then its id (`<public key>@<address>`).
        let deadline = Instant::now() + GARAGE_TIMEOUT;
        let mut ids = Vec::new();
        for node in &nodes {
            loop {
                let status = run(node.command().arg("status"), GARAGE_TIMEOUT);
                if status.status.success() {
                    ids.push(node.cli(&["node", "id", "-q"]).trim().to_owned());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "garage did not start:\n{}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for id in &ids[1..] {
            nodes[0].cli(&["node", "connect", id]);
        }
        for (n, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            nodes[0].cli(&[
                "layout",
                "assign",
                short,
                "-z",
                &format!("zone-{n}"),
                "-c",
                "1G",
            ]);
        }
        nodes[0].cli(&["layout", "apply", "--version", "1"]);
        let key_id = format!("GK{}", random_hex(12));
        let secret = random_hex(32);
        nodes[0].cli(&["key", "import", &key_id, &secret, "-n", "sluice", "--yes"]);
        nodes[0].cli(&["bucket", "create", BUCKET]);
        nodes[0].cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &key_id,
        ]);
        let secret_file = dir.path().join("s3-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        Garage {
            _dir: dir,
            s3_host: s3_host.to_owned(),
            nodes,
            key_id,
            secret_file,
        }
    }

    /// The `[objects]` section for a store uploading to this cluster
    /// (through node 0's S3 endpoint).
    pub(crate) fn objects_toml(&self, evict: &str) -> String {
        format!(
            "[objects]\n\
             endpoint = \"http://{host}:{port}\"\n\
             region = \"garage\"\n\
             bucket = \"{BUCKET}\"\n\
             key_id = \"{key_id}\"\n\
             secret_file = \"{secret}\"\n\
             evict = \"{evict}\"\n\
             evict_grace_ms = 0\n\
             part_size_mib = 5\n\
             upload_interval_ms = 100\n\
             upload_retry_interval_ms = 200\n\
             request_timeout_ms = 20000\n",
            host = self.s3_host,
            port = self.nodes[0].s3_port,
            key_id = self.key_id,
            secret = self.secret_file.display(),
        )
    }
}

/// A minimal valid data set (Explicit VR Little Endian) of `triplet`, with
/// `filler` bytes of private OB data so records span more than a page;
/// elements in tag order, as DCMTK writes what it receives.
fn dataset(triplet: &Triplet, filler: usize) -> Vec<u8> {
    let mut out = Vec::new();
    element(&mut out, 0x0008, 0x0016, b"UI", CT.as_bytes());
    element(
        &mut out,
        0x0008,
        0x0018,
        b"UI",
        triplet.sop_instance_uid.as_bytes(),
    );
    element(&mut out, 0x0008, 0x0060, b"CS", b"CT");
    // A private block (creator, then its OB element), in tag order.
    element(&mut out, 0x0009, 0x0010, b"LO", b"SLUICE TEST");
    let filler: Vec<u8> = (0..filler).map(|i| (i * 7 % 251) as u8).collect();
    element(&mut out, 0x0009, 0x1010, b"OB", &filler);
    element(&mut out, 0x0010, 0x0010, b"PN", b"Objects^Jane");
    element(&mut out, 0x0010, 0x0020, b"LO", b"PID-Objects");
    element(
        &mut out,
        0x0020,
        0x000d,
        b"UI",
        triplet.study_instance_uid.as_bytes(),
    );
    element(
        &mut out,
        0x0020,
        0x000e,
        b"UI",
        triplet.series_instance_uid.as_bytes(),
    );
    out
}

/// One instance stored as a record.
struct Stored {
    triplet: Triplet,
    part10: Vec<u8>,
    dataset: Vec<u8>,
}

/// A store with three instances as records of segment `SEALED` (sealed in
/// the index) and one of `OPEN` (not sealed), and a configuration file
/// with `[objects]`.
fn record_store(garage: &Garage, evict: &str) -> (StoreFixture, Vec<Stored>, PathBuf) {
    let mut fixture = StoreFixture::new();
    std::fs::create_dir_all(fixture.layout.segments_dir()).unwrap();
    let mut stored = Vec::new();
    for (segment, instances) in [
        (
            SEALED,
            &[
                ("1.7.1", "1.7.1.1", 9000),
                ("1.7.1", "1.7.1.2", 100),
                ("1.7.2", "1.7.2.1", 20_000),
            ][..],
        ),
        (OPEN, &[("1.7.2", "1.7.2.2", 3000)][..]),
    ] {
        let mut writer =
            SegmentWriter::create(&fixture.layout.segment_path(segment), 1 << 20).unwrap();
        for &(series, sop, filler) in instances {
            let triplet = Triplet::new("1.7", series, sop);
            let (_, mut part10, mut record) = fixture.part10(&triplet, "x");
            let data = dataset(&triplet, filler);
            part10.truncate(record.dataset_offset_bytes as usize);
            part10.extend_from_slice(&data);
            record.file_size_bytes = part10.len() as u64;
            record.checksum = sluice_engine::store::layout::dataset_checksum(&data);
            let uids = RecordUids {
                study: triplet.study_instance_uid.clone(),
                series: triplet.series_instance_uid.clone(),
                sop: triplet.sop_instance_uid.clone(),
            };
            let encoded = encode_record(EPOCH, &uids, &part10).unwrap();
            let offset = writer.append(&encoded).unwrap();
            let mut request =
                StoreRequest::new(StoreFixture::new_instance(triplet.clone(), record, "Obj"));
            request.location = Location::Record(RecordPlace {
                segment,
                offset,
                length: encoded.as_slice().len() as u64,
            });
            assert_eq!(fixture.store_request(request), StoreOutcome::Stored);
            stored.push(Stored {
                triplet,
                part10,
                dataset: data,
            });
        }
        writer.sync().unwrap();
    }
    fixture
        .index()
        .writer()
        .execute(vec![WriteOp::SealSegment(SEALED)])
        .unwrap();
    fixture.close();
    let config = fixture.data_dir().parent().unwrap().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_directory = \"{}\"\n[storage]\nfree_space_floor = 0\n{}",
            fixture.data_dir().display(),
            garage.objects_toml(evict)
        ),
    )
    .unwrap();
    (fixture, stored, config)
}

fn open_store(config: &Path) -> Store {
    Store::open(Config::from_file(config).unwrap()).unwrap()
}

/// Runs upload rounds until one succeeds (Garage settles its new layout
/// for a few seconds after it is applied).
fn upload(store: &Store) -> sluice_engine::objects::Round {
    let mut uploader = Uploader::new(store).expect("[objects] is configured");
    let deadline = Instant::now() + GARAGE_TIMEOUT;
    loop {
        match uploader.run_once() {
            Ok(round) => return round,
            Err(error) if Instant::now() < deadline => {
                eprintln!("upload round failed (retrying): {error}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => panic!("no upload round succeeded: {error}"),
        }
    }
}

/// The sealed segment is uploaded, verified and evicted (the open one is
/// left alone), and its records read back byte-exact through the embedding
/// API, `export-instance` and `verify` from the object store, also with one
/// Garage node killed; a second round has nothing to do; with the store
/// down, a round fails as an outage and the local data is untouched.
#[test]
fn sealed_segments_are_uploaded_evicted_and_read_back_with_ranged_gets() {
    let mut garage = Garage::start();
    let (fixture, stored, config) = record_store(&garage, "after-upload");
    let sealed_path = fixture.layout.segment_path(SEALED);
    let sealed_bytes = std::fs::metadata(&sealed_path).unwrap().len();
    let store = open_store(&config);
    // A sealed segment whose file is missing is skipped (said once), not a
    // failed round: it stays in the backlog.
    let missing = SEALED + 0x100;
    store
        .index()
        .writer()
        .execute(vec![WriteOp::SealSegment(missing)])
        .unwrap();
    let round = upload(&store);
    assert_eq!(
        (
            round.uploaded,
            round.uploaded_bytes,
            round.evicted,
            round.deleted,
            round.backlog
        ),
        (1, sealed_bytes, 1, 1, 1),
        "{round:?}"
    );
    assert!(
        !sealed_path.exists(),
        "the evicted segment's file is still there"
    );
    assert!(fixture.layout.segment_path(OPEN).exists());
    {
        let read = store.index().read().unwrap();
        let object = read.segment_object(SEALED).unwrap().expect("recorded");
        assert!(object.evicted);
        assert_eq!(object.size_bytes, sealed_bytes);
        assert_eq!(object.key, format!("sluice/local/{SEALED:016x}.seg"));
        assert_eq!(read.segment_object(OPEN).unwrap(), None);
    }

    // The embedding API: every instance, evicted or not, byte-exact.
    for instance in &stored {
        let sop = &instance.triplet.sop_instance_uid;
        assert!(
            store.read_instance(sop).unwrap().unwrap() == instance.part10,
            "{sop}"
        );
        assert!(
            store.read_dataset(sop).unwrap().unwrap() == instance.dataset,
            "{sop}"
        );
    }
    let cache = fixture.data_dir().join("cache");
    assert_eq!(files_under(&cache), 3, "one cached file per evicted record");

    // Nothing left to do; a new uploader (a restart) agrees.
    let round = upload(&store);
    assert_eq!((round.uploaded, round.evicted, round.deleted), (0, 0, 0));
    drop(store);

    // One Garage node killed (not the one the endpoint names): reads still
    // served from the other two (replication factor 3, quorum 2).
    garage.nodes[2].kill();
    std::fs::remove_dir_all(&cache).unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    for (n, instance) in stored.iter().enumerate() {
        let path = out.path().join(format!("{n}.dcm"));
        let output = sluice_ok(&[
            "export-instance",
            "--config",
            &config_arg,
            &instance.triplet.sop_instance_uid,
            path.to_str().unwrap(),
        ]);
        assert!(output.contains("exported"), "{output}");
        assert!(std::fs::read(&path).unwrap() == instance.part10);
    }
    std::fs::remove_dir_all(&cache).unwrap();
    let output = sluice_ok(&["verify", "--config", &config_arg]);
    assert!(
        output.contains("verified 4 files (4 stored, 0 quarantined): 0 missing")
            && output.contains("0 damaged records"),
        "{output}"
    );

    // `sluice stats` names the evicted segment (its size the object's) and
    // the open one.
    let stats = sluice_ok(&["stats", "--config", &config_arg]);
    let row = |id: u64| {
        stats
            .lines()
            .find(|line| line.starts_with(&format!("{id:016x}")))
            .unwrap_or_else(|| panic!("no segment {id:016x} in\n{stats}"))
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row(SEALED), format!("{SEALED:016x} evicted {sealed_bytes}"));
    assert!(
        row(OPEN).starts_with(&format!("{OPEN:016x} open ")),
        "{stats}"
    );

    // Without [objects], an evicted record is refused with the reason.
    let (result, output) = sluice(&[
        "export-instance",
        "--data-dir",
        fixture.data_dir().to_str().unwrap(),
        &stored[0].triplet.sop_instance_uid,
        out.path().join("refused.dcm").to_str().unwrap(),
    ]);
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("evicted to the object store") && error.contains("[objects]"),
        "{error}\n{output}"
    );

    // The store down: the open segment sealed now cannot be uploaded; the
    // round fails as an outage, nothing is recorded or evicted.
    garage.nodes[0].kill();
    garage.nodes[1].kill();
    let store = open_store(&config);
    store
        .index()
        .writer()
        .execute(vec![WriteOp::SealSegment(OPEN)])
        .unwrap();
    let error = Uploader::new(&store)
        .unwrap()
        .run_once()
        .expect_err("the store is down");
    assert!(error.is_store_outage(), "{error}");
    assert!(fixture.layout.segment_path(OPEN).exists());
    assert_eq!(
        store.index().read().unwrap().segment_object(OPEN).unwrap(),
        None
    );
}

/// How many files are under `dir` (recursively).
fn files_under(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
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

/// `sluice serve --cores 1` on the store of `config`: the server, its
/// DICOM port, its log file.
fn serve_one_core(config: &Path, data_dir: &Path) -> (ChildGuard, u16, PathBuf) {
    let port = free_port();
    let log_path = data_dir.parent().unwrap().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cores", "1", "--free-space-floor", "0"])
        .env("RUST_LOG", "sluice=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start sluice serve");
    let mut guard = ChildGuard::new(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = guard.child_mut().try_wait().unwrap() {
            panic!(
                "sluice serve exited ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "sluice serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (guard, port, log_path)
}

/// DCMTK getscu of `keys` (study root) from `port` into `out`, started.
fn getscu(port: u16, keys: &[&str], out: &Path) -> ChildGuard {
    let mut command = Command::new(dcmtk("getscu"));
    command.args(["-v", "-S", "-aec", "SLUICE", "-od"]).arg(out);
    for key in keys {
        command.args(["-k", key]);
    }
    command
        .args(["127.0.0.1", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::new(command.spawn().expect("start getscu"))
}

/// The keys of a C-GET of series `series` of study 1.7.
fn series_keys(series: &str) -> Vec<String> {
    vec![
        "QueryRetrieveLevel=SERIES".to_owned(),
        "StudyInstanceUID=1.7".to_owned(),
        format!("SeriesInstanceUID={series}"),
    ]
}

/// The files getscu wrote to `out`, each matched byte-exact to a stored
/// data set: their SOP Instance UIDs.
fn received(out: &Path, stored: &[Stored]) -> Vec<String> {
    let mut arrived = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let instance = stored
            .iter()
            .find(|i| bytes.ends_with(&i.dataset))
            .unwrap_or_else(|| {
                let tail = &bytes[bytes.len().saturating_sub(200)..];
                panic!(
                    "a received file of {} bytes ends with no stored data set; its tail: {tail:02x?}\nstored tails: {:02x?}",
                    bytes.len(),
                    stored.iter().map(|i| &i.dataset[..i.dataset.len().min(200)]).collect::<Vec<_>>()
                )
            });
        arrived.push(instance.triplet.sop_instance_uid.clone());
    }
    arrived.sort();
    arrived
}

/// [`record_store`] (evicting after upload) with its sealed segment
/// uploaded and evicted.
fn evicted_record_store(garage: &Garage) -> (StoreFixture, Vec<Stored>, PathBuf) {
    let (fixture, stored, config) = record_store(garage, "after-upload");
    let store = open_store(&config);
    let round = upload(&store);
    assert_eq!((round.uploaded, round.evicted), (1, 1), "{round:?}");
    drop(store);
    (fixture, stored, config)
}

/// A C-GET (DCMTK getscu) through `sluice serve` retrieves instances whose
/// segment was evicted, byte-exact, fetched from Garage by ranged GETs.
#[test]
fn getscu_retrieves_evicted_instances_through_sluice_serve() {
    let garage = Garage::start();
    let (fixture, stored, config) = evicted_record_store(&garage);
    assert!(!fixture.layout.segment_path(SEALED).exists());

    let (guard, port, log_path) = serve_one_core(&config, fixture.data_dir());
    let out = tempfile::tempdir().unwrap();
    let keys = series_keys("1.7.1");
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let output = getscu(port, &keys, out.path()).wait_with_output(Duration::from_secs(120));
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        log.contains("Number of Completed Suboperations : 2"),
        "{log}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    assert_eq!(received(out.path(), &stored), ["1.7.1.1", "1.7.1.2"]);
    drop(guard);
}

/// A TCP proxy in front of Garage's S3 port, so a test can make the store
/// slow or stop it under a running server: while `hold` is set, each
/// connection it accepts waits before anything is forwarded (a store that
/// answers late); while `down` is set, it closes what it accepts and every
/// connection it forwards (a store stopped). Stopped when dropped.
struct Proxy {
    port: u16,
    hold: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            hold: Arc::new(AtomicBool::new(false)),
            down: Arc::new(AtomicBool::new(false)),
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (hold, down, accepted, stop) = (
            proxy.hold.clone(),
            proxy.down.clone(),
            proxy.accepted.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(error) => panic!("the proxy cannot accept: {error}"),
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (hold, down) = (hold.clone(), down.clone());
                std::thread::spawn(move || {
                    client.set_nonblocking(false).unwrap();
                    while hold.load(Ordering::SeqCst) && !down.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if down.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    let (client2, upstream2) =
                        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    let down2 = down.clone();
                    std::thread::spawn(move || pipe(client2, upstream2, &down2));
                    pipe(upstream, client, &down);
                });
            }
        });
        proxy
    }
}

impl Proxy {
    /// `garage`'s `[objects]` section (evicting by `evict`), through this
    /// proxy.
    fn objects_toml(&self, garage: &Garage, evict: &str) -> String {
        let direct = format!("127.0.0.1:{}", garage.nodes[0].s3_port);
        let text = garage.objects_toml(evict);
        assert!(text.contains(&direct), "{text}");
        text.replace(&direct, &format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either ends, or `down` is set (then both
/// are cut).
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream, down: &AtomicBool) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if down.load(Ordering::SeqCst) {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Reads of evicted records happen off the io core: with the store
/// answering late (a proxy holding the S3 connection), a C-GET of evicted
/// instances waits while another association's C-FIND on the same core
/// (`--cores 1`) is answered; two C-GETs of the same records share one
/// fetch; once the store answers, both deliver byte-exact. With the store
/// stopped, the evicted instance of a C-GET fails (counted, named, the log
/// naming its object key) and the local one is sent.
#[test]
fn a_slow_or_stopped_object_store_holds_no_io_core() {
    let garage = Garage::start();
    let (fixture, stored, config) = evicted_record_store(&garage);
    let proxy = Proxy::start(garage.nodes[0].s3_port);
    // Through the proxy; the segment the server seals at start (the open
    // one) stays local.
    let text = std::fs::read_to_string(&config).unwrap();
    let objects = garage.objects_toml("after-upload");
    assert!(text.ends_with(&objects), "{text}");
    let text = text.replace(&objects, &proxy.objects_toml(&garage, "never"));
    std::fs::write(&config, text).unwrap();

    let (guard, port, log_path) = serve_one_core(&config, fixture.data_dir());
    let server_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    proxy.hold.store(true, Ordering::SeqCst);
    let keys = series_keys("1.7.1");
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (out_a, out_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut get_a = getscu(port, &keys, out_a.path());
    let mut get_b = getscu(port, &keys, out_b.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Both retrieves listed their instances (a core that fetched while
    // listing would wait for the store here) and their first record's fetch
    // reached the store.
    while server_log().matches("retrieve started").count() < 2
        || proxy.accepted.load(Ordering::SeqCst) == 0
    {
        assert!(
            Instant::now() < deadline,
            "the C-GETs did not start:\n{}",
            server_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The core answers another association's C-FIND meanwhile.
    let find = run(
        Command::new(dcmtk("findscu"))
            .args(["-v", "-S", "-aec", "SLUICE"])
            .args([
                "-k",
                "QueryRetrieveLevel=SERIES",
                "-k",
                "StudyInstanceUID=1.7",
            ])
            .args(["-k", "SeriesInstanceUID"])
            .args(["127.0.0.1", &port.to_string()]),
        Duration::from_secs(30),
    );
    let find_log = format!(
        "{}{}",
        String::from_utf8_lossy(&find.stdout),
        String::from_utf8_lossy(&find.stderr)
    );
    assert!(find.status.success(), "{find_log}\n{}", server_log());
    assert!(
        find_log.contains("1.7.1") && find_log.contains("1.7.2"),
        "{find_log}"
    );
    // Answered while the fetch was held: no retrieve has ended (a core
    // waiting for the store would have answered the C-FIND only after the
    // fetch failed at its timeout, and the C-GETs with it).
    assert!(
        !server_log().contains("retrieve answered"),
        "{}",
        server_log()
    );
    for get in [&mut get_a, &mut get_b] {
        assert!(
            get.child_mut().try_wait().unwrap().is_none(),
            "a C-GET ended while its record's fetch was held:\n{}",
            server_log()
        );
    }

    proxy.hold.store(false, Ordering::SeqCst);
    for (get, out) in [(get_a, &out_a), (get_b, &out_b)] {
        let output = get.wait_with_output(Duration::from_secs(120));
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            log.contains("Number of Completed Suboperations : 2"),
            "{log}\n{}",
            server_log()
        );
        assert_eq!(received(out.path(), &stored), ["1.7.1.1", "1.7.1.2"]);
    }
    // Both C-GETs' lanes asked for the first record while its fetch was
    // held: they shared it. One fetch per record.
    let fetches = server_log()
        .lines()
        .filter(|line| line.contains("record fetch ended"))
        .count();
    assert_eq!(fetches, 2, "{}", server_log());

    // The store stopped: series 1.7.2 has one evicted instance (fails) and
    // one in the open segment (sent).
    proxy.down.store(true, Ordering::SeqCst);
    let out = tempfile::tempdir().unwrap();
    let keys = series_keys("1.7.2");
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let output = getscu(port, &keys, out.path()).wait_with_output(Duration::from_secs(120));
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        log.contains("Number of Completed Suboperations : 1")
            && log.contains("Number of Failed Suboperations    : 1"),
        "{log}\n{}",
        server_log()
    );
    assert_eq!(received(out.path(), &stored), ["1.7.2.2"]);
    let server = server_log();
    let failure = server
        .lines()
        .find(|line| line.contains("cannot fetch a record of an evicted segment"))
        .unwrap_or_else(|| panic!("no fetch failure logged:\n{server}"));
    assert!(
        failure.contains(&format!("{SEALED:016x}.seg")) && failure.contains("1.7.2.1"),
        "{failure}"
    );
    drop(guard);
}

/// End to end: `sluice serve` on the segments layout with `[objects]`
/// stores what DCMTK storescu sends into 1 MiB segments; the ones it seals
/// are uploaded and evicted by its uploader thread while it runs; after it
/// stops, every instance reads back byte-exact (the evicted ones from
/// Garage) and `verify` finds every record intact.
#[test]
fn sluice_serve_uploads_and_evicts_the_segments_it_seals() {
    let garage = Garage::start();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("objects.toml");
    std::fs::write(&config, garage.objects_toml("after-upload")).unwrap();
    let sent = tempfile::tempdir().unwrap();
    // Small instances: each record takes at least 4 KiB (its padding), so
    // 600 of them fill two 1 MiB segments.
    let files = crate::ingest::generated_files(sent.path(), 600);
    let total: u64 = files
        .iter()
        .map(|file| std::fs::metadata(file).unwrap().len().div_ceil(4096) * 4096)
        .sum();
    assert!(
        total > 2 << 20,
        "{total} bytes of records fill no 1 MiB segment"
    );
    let data = work.path().join("data");
    let metrics_port = free_port().to_string();
    let served = serve_segments_and_send(&config, &data, &metrics_port, &files);
    // The uploader works beside ingest: wait for its evictions.
    let deadline = Instant::now() + GARAGE_TIMEOUT;
    while !served.log().contains("segment evicted") {
        assert!(
            Instant::now() < deadline,
            "no segment evicted:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = metrics_text(&metrics_port);
    let value = |name: &str| metric(&metrics, name);
    assert!(
        value("sluice_objects_uploaded_segments_total") >= 1,
        "{metrics}"
    );
    assert!(
        value("sluice_objects_uploaded_bytes_total") >= 1 << 20,
        "{metrics}"
    );
    assert!(
        value("sluice_objects_evicted_segments_total") >= 1,
        "{metrics}"
    );
    assert_eq!(value("sluice_objects_store_reachable"), 1, "{metrics}");
    let log = served.stop();
    assert!(!log.contains("ERROR"), "{log}");
    assert_read_back(&config, &data, &files);
}

/// `sluice serve` on the segments layout (1 MiB segments, one core) with
/// `config` and its metrics on `metrics_port`, storing into `data`, and
/// every file of `files` sent to it by DCMTK storescu (all stored).
fn serve_segments_and_send(
    config: &Path,
    data: &Path,
    metrics_port: &str,
    files: &[PathBuf],
) -> crate::serve::Served {
    let mut args = vec!["--metrics-port", metrics_port, "--config"];
    args.push(config.to_str().unwrap());
    args.extend(crate::segment_ingest::SEGMENTS);
    let served = crate::serve::Served::start_in(
        tempfile::tempdir().unwrap(),
        data.to_owned(),
        "uring",
        &args,
    );
    let output = run(
        Command::new(dcmtk("storescu"))
            .args(["-aec", "SLUICE", "127.0.0.1", &served.port.to_string()])
            .args(files),
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "storescu: {output:?}");
    served
}

/// Every instance of `files` reads back byte-exact from the store in
/// `data` (the evicted ones from the object store), at least one segment
/// was evicted, and `verify` finds every record intact.
fn assert_read_back(config: &Path, data: &Path, files: &[PathBuf]) {
    let mut config_all = Config::from_file(config).unwrap();
    config_all.server.data_directory = data.to_owned();
    let store = Store::open(config_all).unwrap();
    let evicted: Vec<u64> = store
        .index()
        .read()
        .unwrap()
        .segment_objects()
        .unwrap()
        .into_iter()
        .filter(|(_, object)| object.evicted)
        .map(|(id, _)| id)
        .collect();
    assert!(!evicted.is_empty());
    for segment in &evicted {
        assert!(!store.layout().segment_path(*segment).exists());
    }
    for file in files {
        let original = std::fs::read(file).unwrap();
        let sop = sluice_tests::part10_meta_value(&original, 0x0002, 0x0003);
        let stored = store.read_instance(&sop).unwrap().expect("stored");
        assert_eq!(
            sluice_tests::part10_dataset(&stored),
            sluice_tests::part10_dataset(&original),
            "{sop}"
        );
    }
    drop(store);
    let output = sluice_ok(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        output.contains(&format!("verified {} files", files.len()))
            && output.contains("0 damaged records"),
        "{output}"
    );
}

/// The object store unreachable while `sluice serve` ingests (a proxy in
/// front of Garage closing every connection): every C-STORE is answered
/// success from the local store, the log says the uploads fail, `/readyz`
/// stays 200 and says so, the metrics show it (store unreachable, a
/// backlog, failed rounds, nothing uploaded); once the store answers again
/// the uploads resume by themselves, the backlog drains, and afterwards
/// every instance reads back byte-exact (the evicted ones from Garage).
#[test]
fn an_object_store_outage_keeps_ingest_local_and_uploads_resume() {
    let garage = Garage::start();
    let proxy = Proxy::start(garage.nodes[0].s3_port);
    proxy.down.store(true, Ordering::SeqCst);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("objects.toml");
    std::fs::write(&config, proxy.objects_toml(&garage, "after-upload")).unwrap();
    let sent = tempfile::tempdir().unwrap();
    // As above: 600 small instances fill two 1 MiB segments.
    let files = crate::ingest::generated_files(sent.path(), 600);
    let data = work.path().join("data");
    let metrics_port = free_port().to_string();
    let served = serve_segments_and_send(&config, &data, &metrics_port, &files);
    // Sealed segments wait locally, and every way of looking says so.
    let metrics = wait_for_metrics(&served, &metrics_port, "a backlog", |metrics| {
        metric(metrics, "sluice_objects_backlog_segments") >= 1
            && metric(metrics, "sluice_objects_store_reachable") == 0
    });
    assert!(
        metric(&metrics, "sluice_objects_failed_rounds_total") >= 1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sluice_objects_uploaded_segments_total"),
        0,
        "{metrics}"
    );
    let ready = http_get(&metrics_port, "/readyz");
    assert!(
        ready.starts_with("HTTP/1.1 200")
            && ready.contains("object store unreachable: uploads fail"),
        "{ready}"
    );
    let log = served.log();
    assert_eq!(
        log.matches("the object store round failed").count(),
        1,
        "one error line per outage:\n{log}"
    );

    // The store answers again: the backlog goes up by itself. (The first
    // round after may still fail, on a connection the outage closed: the
    // gauge says so until a round succeeds.)
    proxy.down.store(false, Ordering::SeqCst);
    wait_for_metrics(&served, &metrics_port, "the backlog drained", |metrics| {
        metric(metrics, "sluice_objects_backlog_segments") == 0
            && metric(metrics, "sluice_objects_evicted_segments_total") >= 1
            && metric(metrics, "sluice_objects_store_reachable") == 1
    });
    let ready = http_get(&metrics_port, "/readyz");
    assert!(ready.ends_with("\r\n\r\nready\n"), "{ready}");
    let log = served.stop();
    assert!(
        log.contains("the object store works again; uploads go on"),
        "{log}"
    );
    assert_read_back(&config, &data, &files);
}

/// The metrics of `served` (on `port`) once `seen` holds of them (`what`
/// names it in the failure).
fn wait_for_metrics(
    served: &crate::serve::Served,
    port: &str,
    what: &str,
    seen: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + GARAGE_TIMEOUT;
    loop {
        let metrics = metrics_text(port);
        if seen(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}:\n{metrics}\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes in use on the file system of `path`.
fn used_bytes(path: &Path) -> u64 {
    let output = run(
        Command::new("df").args(["--output=used", "-B1"]).arg(path),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("df: {output:?}"))
}

/// `evict = "when-disk-above"` with the disk filling (a small tmpfs, shrunk
/// under the running server until it is 70% full, the threshold 50%): while
/// the object store is unreachable no segment is evicted (none is
/// uploaded) and every sealed segment's file stays; once the store answers,
/// uploaded segments are evicted, oldest first, until the fill is under the
/// threshold, never one that is not uploaded, never the open one; every
/// instance reads back byte-exact.
#[test]
fn when_disk_above_evicts_only_uploaded_segments_as_the_disk_fills() {
    let garage = Garage::start();
    let proxy = Proxy::start(garage.nodes[0].s3_port);
    proxy.down.store(true, Ordering::SeqCst);
    let filesystem = crate::serve::SmallFilesystem::mount(64);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("objects.toml");
    let text = proxy.objects_toml(&garage, "when-disk-above") + "evict_disk_above_percent = 50\n";
    std::fs::write(&config, text).unwrap();
    let sent = tempfile::tempdir().unwrap();
    // 600 small instances fill two 1 MiB segments (and start a third).
    let files = crate::ingest::generated_files(sent.path(), 600);
    let data = filesystem.path().join("data");
    let served = serve_segments_and_send(&config, &data, &free_port().to_string(), &files);
    let segments = || -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(data.join("segments"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        paths.sort();
        paths
    };
    let before = segments();
    assert!(before.len() >= 3, "{before:?}");
    // The disk fills: 70% in use.
    let used = used_bytes(filesystem.path());
    let size_mib = (used * 10 / 7).div_ceil(1 << 20);
    crate::disk_full::resize(filesystem.path(), size_mib);
    // The store unreachable: rounds fail, nothing is evicted.
    let deadline = Instant::now() + GARAGE_TIMEOUT;
    while served
        .log()
        .matches("the object store round failed")
        .count()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "no round failed:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(segments(), before, "a segment left while none was uploaded");
    assert!(
        !served.log().contains("segment evicted"),
        "{}",
        served.log()
    );

    // The store answers: uploaded segments go until the fill is under 50%.
    proxy.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + GARAGE_TIMEOUT;
    while !served.log().contains("segment evicted") {
        assert!(
            Instant::now() < deadline,
            "nothing evicted:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let log = served.stop();
    let size = size_mib << 20;
    let used = used_bytes(filesystem.path());
    let after = segments();
    assert!(after.len() < before.len(), "{after:?}");
    // The kill leaves the segment prepared beside the open one (unused:
    // zeros only; the next start's recovery removes it). Neither it nor
    // the open one can be evicted: every other segment must be gone unless
    // the fill is under the threshold.
    let unused = |path: &PathBuf| std::fs::read(path).unwrap().iter().all(|&byte| byte == 0);
    let holding: Vec<&PathBuf> = after.iter().filter(|path| !unused(path)).collect();
    assert!(
        used * 100 <= size * 50 || holding.len() == 1,
        "{used} of {size} bytes in use, segments left: {after:?}\n{log}"
    );
    // The newest (open) segment stays; the evicted ones are the oldest.
    assert_eq!(after.last(), before.last());
    assert_eq!(after[..], before[before.len() - after.len()..]);

    let mut config_all = Config::from_file(&config).unwrap();
    config_all.server.data_directory = data.clone();
    let store = Store::open(config_all).unwrap();
    let read = store.index().read().unwrap();
    let objects = read.segment_objects().unwrap();
    let states = read.segments().unwrap();
    for (id, state) in &states {
        let object = objects.iter().find(|(object_id, _)| object_id == id);
        match object {
            Some((_, object)) if object.evicted => {
                assert!(state.sealed, "segment {id:016x} evicted unsealed");
                assert!(!store.layout().segment_path(*id).exists());
            }
            // Not evicted: its file is there.
            _ => assert!(store.layout().segment_path(*id).exists(), "{id:016x}"),
        }
    }
    drop(read);
    drop(store);
    assert_read_back(&config, &data, &files);
}

/// The metrics endpoint's text.
fn metrics_text(port: &str) -> String {
    http_get(port, "/metrics")
}

/// The answer (status line, headers, body) of the metrics endpoint to a
/// GET of `path`.
fn http_get(port: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of the metric `name` in `metrics`.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}
