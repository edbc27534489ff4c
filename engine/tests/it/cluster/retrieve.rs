//! Cluster-wide C-MOVE and C-GET of one study split over two nodes, most of
//! it on the node not asked: the requester's pending responses count the
//! whole retrieve, a C-CANCEL reaches the holder and the FE00 answer
//! counts what was done and what remains, and a C-GET streams the holder's
//! instances instead of fetching them all first (docs/design/scale-out.md,
//! "Cluster-wide C-MOVE and C-GET").

use sluice_tests::{python_peer, PeerOutput};

use super::*;

const STUDY: &str = "1.2.826.0.1.3680043.8.498.78.1";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.78.1.1";
/// Instances stored on node-1 (the node asked).
const ON_ONE: usize = 4;
/// Instances stored on node-2 (the holder): three times what a C-GET
/// fetches ahead of what it sent (the engine's `STREAM_WINDOW`, 4, twice,
/// plus the one being written).
const ON_TWO: usize = 28;
const TOTAL: usize = ON_ONE + ON_TWO;
/// The nodes log their forwarded retrieves' steps at debug.
const LOG: &str = "info,sluice_engine::cluster::forward=debug,sluice_engine::scp::query=debug";
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// Writes instances `first..first + count` of the study (8 KB of pixel
/// data each, different in each) into `dir`, named `<SOP Instance UID>.dcm`.
fn write_instances(dir: &Path, first: usize, count: usize) {
    let sops: Vec<String> = (first..first + count)
        .map(|n| format!("{SERIES}.{}", n + 1))
        .collect();
    let instances: Vec<Ct> = sops
        .iter()
        .zip(first..)
        .map(|(sop, n)| Ct {
            name: sop.clone(),
            uids: (STUDY, SERIES, sop),
            patient_name: "SPLIT^STUDY",
            size: 64,
            seed: n,
        })
        .collect();
    write_ct(dir, &instances);
}

/// Two nodes, the study split over them: [`ON_ONE`] instances stored on
/// node-1, [`ON_TWO`] on node-2.
struct Split {
    _postgres: Postgres,
    work: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Split {
    fn start(extra: &[String]) -> Split {
        let postgres = Postgres::start();
        let work = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = ["node-1", "node-2"]
            .iter()
            .map(|name| Node::new(work.path(), name, postgres.conninfo(), "after-answer"))
            .collect();
        for node in &mut nodes {
            node.extra = extra.to_vec();
            node.env = vec![("RUST_LOG".to_owned(), LOG.to_owned())];
            node.start();
        }
        for (node, first, count) in [(&nodes[0], 0, ON_ONE), (&nodes[1], ON_ONE, ON_TWO)] {
            let dir = work.path().join("files").join(&node.name);
            write_instances(&dir, first, count);
            let output = Command::new(dcmtk("storescu"))
                .args(["-aec", AE, "+sd"])
                .args(["127.0.0.1", &node.port.to_string()])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "storescu to {}: {output:?}",
                node.name
            );
        }
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let rows = postgres.rows();
            let on = |name: &str| rows.values().filter(|node| *node == name).count();
            if (on("node-1"), on("node-2")) == (ON_ONE, ON_TWO) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the catalogue never held the split study: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Split {
            _postgres: postgres,
            work,
            nodes,
        }
    }

    /// The file sent of instance `sop`.
    fn original(&self, sop: &str) -> Vec<u8> {
        let files = self.work.path().join("files");
        ["node-1", "node-2"]
            .iter()
            .find_map(|node| std::fs::read(files.join(node).join(format!("{sop}.dcm"))).ok())
            .unwrap_or_else(|| panic!("{sop} was never sent"))
    }

    /// Waits until node-1 holds no staging file of a C-GET (the retrieve's
    /// directory goes right after its final answer).
    fn assert_nothing_staged_on_one(&self) {
        let staging = self.nodes[0].data.join("cluster").join("staging");
        let deadline = Instant::now() + Duration::from_secs(10);
        while walk(&staging) > 0 {
            assert!(
                Instant::now() < deadline,
                "staging files left behind under {}",
                staging.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `qr_scu.py` (pynetdicom) `mode` of the study on node `port`, `extra`
/// its last arguments.
fn qr_scu(mode: &str, port: u16, extra: &[&str]) -> PeerOutput {
    let keys = format!(r#"{{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "{STUDY}"}}"#);
    let port = port.to_string();
    let mut args = vec![mode, &port, AE, "REQUESTER", "study", &keys];
    args.extend_from_slice(extra);
    python_peer("qr_scu.py", &args, PEER_TIMEOUT)
}

/// The counts (remaining, completed, failed, warning) of each pending
/// response `qr_scu.py` heard.
fn pending_counts(output: &PeerOutput) -> Vec<[Option<usize>; 4]> {
    let text = &output.0;
    let start = text.find("\"pending_counts\": [").expect("pending_counts") + 19;
    let rest = &text[start..];
    let end = rest.find("]]").map_or(0, |end| end + 1);
    rest[..end]
        .split(']')
        .filter_map(|item| {
            let item = item.trim_start_matches([',', ' ', '[']);
            (!item.is_empty()).then(|| {
                let values: Vec<Option<usize>> =
                    item.split(", ").map(|value| value.parse().ok()).collect();
                values.try_into().expect("four counts")
            })
        })
        .collect()
}

/// The final counts (remaining, completed, failed, warning; absent: 0 for
/// remaining) `qr_scu.py` heard.
fn final_counts(output: &PeerOutput) -> [usize; 4] {
    let text = output.string("final_counts").expect("final_counts");
    let values: Vec<usize> = text
        .split('/')
        .map(|value| value.parse().unwrap_or(0))
        .collect();
    values.try_into().expect("four counts")
}

/// Every pending response counts the whole retrieve: remaining, completed,
/// failed and warning add up to [`TOTAL`].
fn assert_pending_counts_the_whole_retrieve(output: &PeerOutput) {
    let pending = pending_counts(output);
    assert!(!pending.is_empty(), "no pending response: {output:?}");
    for counts in &pending {
        let sum: usize = counts.iter().map(|count| count.unwrap_or(0)).sum();
        assert_eq!(
            sum, TOTAL,
            "a pending response counts {counts:?}: {pending:?}"
        );
    }
}

/// A retrieve `qr_scu.py` cancelled: FE00, every pending response
/// counting the whole retrieve, the final one what was completed and what
/// remains (nothing failed); what it completed.
fn assert_cancelled(output: &PeerOutput) -> usize {
    assert_eq!(
        output.string("status_hex").as_deref(),
        Some("FE00"),
        "{output:?}"
    );
    assert_pending_counts_the_whole_retrieve(output);
    let [remaining, completed, failed, warning] = final_counts(output);
    assert_eq!(
        (remaining + completed, failed, warning),
        (TOTAL, 0, 0),
        "{output:?}"
    );
    assert!(remaining > 0, "cancelled too late to test: {output:?}");
    completed
}

#[test]
fn a_cross_node_c_get_streams_the_holders_instances_byte_exact_and_counts_the_whole_study() {
    let split = Split::start(&[]);
    let one = &split.nodes[0];
    let got = tempfile::tempdir().unwrap();
    let log = getscu(one, &[&STUDY.to_owned()], got.path());
    assert!(
        log.contains("Received C-GET Response (Success)"),
        "{log}\n{}",
        one.log()
    );
    let arrived = received(got.path());
    assert_eq!(arrived.len(), TOTAL, "{log}");
    for (sop, bytes) in &arrived {
        assert!(
            dataset(bytes) == dataset(&split.original(sop)),
            "{sop} arrived changed"
        );
    }
    // Streamed, not staged whole: node-1 answered sub-operations of
    // node-2's instances before it had fetched the last of them (it cannot
    // fetch more than a window ahead of what it sent).
    let node_log = one.log();
    let lines: Vec<&str> = node_log.lines().collect();
    let at = |text: &str| -> Vec<usize> {
        (0..lines.len())
            .filter(|&line| lines[line].contains(text))
            .collect()
    };
    let fetched = at("a remote instance fetched for a C-GET");
    let sent = at("a remote instance sent on the C-GET association");
    assert_eq!((fetched.len(), sent.len()), (ON_TWO, ON_TWO), "{node_log}");
    assert!(
        sent[0] < fetched[ON_TWO - 1],
        "every remote instance was fetched before the first was sent:\n{node_log}"
    );
    split.assert_nothing_staged_on_one();

    // The pending responses count the whole study, node-2's part included.
    let got = tempfile::tempdir().unwrap();
    let output = qr_scu("get", one.port, &[got.path().to_str().unwrap()]);
    assert_eq!(
        output.string("status_hex").as_deref(),
        Some("0000"),
        "{output:?}"
    );
    assert_eq!(output.string("stored_count"), Some(TOTAL.to_string()));
    assert_pending_counts_the_whole_retrieve(&output);
    assert_eq!(final_counts(&output), [0, TOTAL, 0, 0]);
}

#[test]
fn a_c_cancel_of_a_cross_node_retrieve_reaches_the_holder_and_fe00_counts_the_whole_retrieve() {
    // A destination that takes half a second per instance, so the cancel
    // comes while node-2 still moves its part.
    let destination = tempfile::tempdir().unwrap();
    let destination_port = free_port();
    let _destination = ChildGuard::new(
        Command::new(python())
            .arg(scripts_dir().join("qr_dest.py"))
            .arg(destination_port.to_string())
            .arg(destination.path())
            .args(["--ae", "SLOWDEST", "--delay", "0.5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qr_dest.py"),
    );
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", destination_port)).is_err() {
        assert!(Instant::now() < deadline, "qr_dest.py did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let split = Split::start(&[
        "--remote-ae".to_owned(),
        format!("SLOWDEST=127.0.0.1:{destination_port}"),
    ]);
    let one = &split.nodes[0];
    let stored = || std::fs::read_dir(destination.path()).unwrap().count();
    let clear = || {
        for file in std::fs::read_dir(destination.path()).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
    };

    // DCMTK movescu cancels after its third response: node-1 answers
    // FE00 once node-2's sub-move stopped too; what it counts completed is
    // what the destination holds.
    let output = Command::new(dcmtk("movescu"))
        .args(["-v", "-S", "-aec", AE, "-aem", "SLOWDEST", "--cancel", "3"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={STUDY}")])
        .args(["127.0.0.1", &one.port.to_string()])
        .output()
        .unwrap();
    let movescu_log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let node_log = one.log();
    let answered = node_log
        .lines()
        .rfind(|line| line.contains("retrieve answered"))
        .unwrap_or_default();
    assert!(
        answered.contains("status=FE00") && answered.contains(" failed=0"),
        "{answered}\n{movescu_log}\n{node_log}"
    );
    let completed: usize = answered
        .split(" completed=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .expect("completed=");
    assert!(completed < TOTAL, "cancelled too late to test: {answered}");
    assert_eq!(stored(), completed, "{answered}");
    assert!(
        split.nodes[1].log().contains("retrieve cancelled"),
        "node-2's sub-move was not cancelled:\n{}",
        split.nodes[1].log()
    );

    // pynetdicom: every pending response counts the whole move, and the
    // FE00 answer what was done and what remains.
    clear();
    let output = qr_scu("move", one.port, &["SLOWDEST", "--cancel-after", "3"]);
    let completed = assert_cancelled(&output);
    assert_eq!(stored(), completed, "{output:?}");

    // The same with C-GET, from a requester that takes a fifth of a second
    // per instance: node-1 stops fetching from node-2 and leaves no
    // staging file.
    let got = tempfile::tempdir().unwrap();
    let output = qr_scu(
        "get",
        one.port,
        &[
            got.path().to_str().unwrap(),
            "--cancel-after",
            "3",
            "--store-delay",
            "0.2",
        ],
    );
    let completed = assert_cancelled(&output);
    assert_eq!(output.string("stored_count"), Some(completed.to_string()));
    split.assert_nothing_staged_on_one();
}
