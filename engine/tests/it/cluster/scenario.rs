//! Issue 18's end-to-end scenario as one test: sluice-loadgen through
//! HAProxy with a history, one node killed (kill -9) mid-run and restarted;
//! afterwards every acknowledged instance is found by C-FIND on every node
//! and retrieved byte-exact through every node, some of them read from the
//! object store (docs/design/scale-out.md, "Tests").

use super::*;
use crate::objects::Garage;

/// The load: open loop at this rate (instances/s) for this long (s), so
/// that the kill and the restart fall inside the run whatever the machine's
/// speed, and the instance count stays near their product.
const RATE: u32 = 20;
const DURATION: u32 = 25;

/// One line of the load generator's history.
struct Sent {
    sop: String,
    study: String,
    series: String,
    /// Answered with success: the cluster holds it.
    acknowledged: bool,
}

/// The lines of a `sluice-loadgen run --history` file.
fn history(path: &Path) -> Vec<Sent> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
            Sent {
                sop: field("sop_instance_uid"),
                study: field("study_instance_uid"),
                series: field("series_instance_uid"),
                acknowledged: field("outcome") == "stored",
            }
        })
        .collect()
}

/// A labelled counter of `node`'s `/metrics`, summed over its labels.
fn labelled_sum(node: &Node, name: &str) -> u64 {
    let (_, body) = node.get("/metrics");
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = rest.strip_prefix("_total").unwrap_or(rest);
            let (_, value) = rest.strip_prefix('{')?.rsplit_once("} ")?;
            value.trim().parse::<f64>().ok()
        })
        .map(|value| value as u64)
        .sum()
}

/// Catalogue rows per node.
fn rows_per_node(client: &mut postgres::Client) -> BTreeMap<String, i64> {
    client
        .query(
            "SELECT node, count(*) FROM sluice_instances GROUP BY node",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Waits until `ready` holds of the catalogue's rows per node.
fn wait_rows(
    client: &mut postgres::Client,
    what: &str,
    ready: &dyn Fn(&BTreeMap<String, i64>) -> bool,
) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = rows_per_node(client);
        if ready(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: rows per node {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three nodes in network namespaces, each uploading its sealed segments
/// (1 MiB) to a 3-node Garage and evicting them after upload, publishing
/// to PostgreSQL, behind HAProxy. sluice-loadgen sends MR instances
/// through HAProxy (3 associations at most, re-associating every 10
/// instances so that HAProxy spreads them), writing its history; node-2 is
/// killed (kill -9) while it runs and restarted while it still runs. Then,
/// for every instance the history says was acknowledged: found by an
/// IMAGE-level C-FIND on every node, and retrieved by a C-GET through every
/// node with the data set byte-exact as sent (`sluice-loadgen check
/// --hashes`), while segments of every node are in the object store and
/// evicted, so that some instances are read from there.
#[test]
fn loadgen_through_haproxy_across_a_kill_every_acknowledged_instance_is_found_and_retrieved_on_every_node(
) {
    // Built first if missing, so that no build runs while the cluster does.
    let loadgen = sluice_tests::binaries::workspace_binary("sluice-loadgen", "sluice-loadgen");
    let started = Instant::now();
    let mut network = netns::Network::new();
    let postgres = Postgres::start_for(Some(&network));
    let garage = Garage::start_at(&network.gateway());
    let work = tempfile::tempdir().unwrap();
    let mut nodes = three_placed(work.path(), &postgres, &mut network);
    for node in &mut nodes {
        node.extra = uploading_flags(work.path(), &garage);
        node.start();
    }
    let haproxy = Haproxy::start(work.path(), &nodes);
    let mut client = postgres.client();

    let history_file = work.path().join("history.jsonl");
    let loadgen_log = work.path().join("loadgen.log");
    let mut load = ChildGuard::new(
        Command::new(&loadgen)
            .args(["run", "--quiet", "--cores", "1"])
            .args(["--target", &format!("127.0.0.1:{}", haproxy.port)])
            .args(["--called-ae", AE, "--mix", "mr", "--study-size", "50"])
            .args(["--associations", "3", "--instances-per-association", "10"])
            .args(["--rate", &RATE.to_string()])
            .args(["--duration", &DURATION.to_string()])
            .args(["--response-timeout", "30"])
            .arg("--history")
            .arg(&history_file)
            .arg("--out")
            .arg(work.path().join("loadgen.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&loadgen_log).unwrap())
            .spawn()
            .expect("start sluice-loadgen"),
    );
    let running = |load: &mut ChildGuard, when: &str| {
        let exited = load.child_mut().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "sluice-loadgen ended ({exited:?}) before {when}: {}",
            std::fs::read_to_string(&loadgen_log).unwrap_or_default()
        );
    };

    // Node-2 killed once it has taken some instances; restarted once the
    // others have taken more without it; loadgen sends throughout.
    let before_kill = wait_rows(&mut client, "node-2 takes instances", &|rows| {
        rows.get("node-2").is_some_and(|&count| count >= 15)
    });
    running(&mut load, "the kill");
    nodes[1].kill();
    let others = |rows: &BTreeMap<String, i64>| {
        rows.get("node-1").copied().unwrap_or(0) + rows.get("node-3").copied().unwrap_or(0)
    };
    let others_at_kill = others(&before_kill);
    wait_rows(&mut client, "the others take instances", &|rows| {
        others(rows) >= others_at_kill + 60
    });
    running(&mut load, "the restart");
    nodes[1].start();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = load.child_mut().try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sluice-loadgen did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "sluice-loadgen: {status:?}\n{}",
        std::fs::read_to_string(&loadgen_log).unwrap_or_default()
    );
    // HAProxy took node-2 back: it stored instances after its restart.
    assert!(
        labelled_sum(&nodes[1], "sluice_store_instances_received") > 0,
        "node-2 took nothing after its restart:\n{}",
        nodes[1].log()
    );

    let sent = history(&history_file);
    let acknowledged: BTreeSet<String> = sent
        .iter()
        .filter(|line| line.acknowledged)
        .map(|line| line.sop.clone())
        .collect();
    let all_sent: BTreeSet<&str> = sent.iter().map(|line| line.sop.as_str()).collect();
    assert!(
        acknowledged.len() as u32 >= RATE * DURATION / 2,
        "{} of {} acknowledged",
        acknowledged.len(),
        sent.len()
    );
    // Node-2's backlog (acknowledged, not yet published when killed)
    // reaches the catalogue after its restart; every node holds some.
    let rows = caught_up(&postgres, &acknowledged, &nodes);
    let holders: BTreeSet<&String> = rows.values().collect();
    assert_eq!(holders.len(), 3, "{holders:?}");

    // Every node's sealed segments uploaded (their key in the catalogue),
    // and segments evicted: their instances are read from the object store.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let uploaded: BTreeSet<String> = client
            .query(
                "SELECT DISTINCT node FROM sluice_instances WHERE object_key IS NOT NULL",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let evicted: u64 = nodes
            .iter()
            .map(|node| node.metric("sluice_objects_evicted_segments"))
            .sum();
        if uploaded.len() == 3 && evicted >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes with uploaded segments {uploaded:?}, {evicted} segments evicted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let uploaded_instances: i64 = client
        .query_one(
            "SELECT count(*) FROM sluice_instances WHERE object_key IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    let fetched = |nodes: &[Node]| -> u64 {
        nodes
            .iter()
            .map(|node| node.metric("sluice_objects_fetched_records"))
            .sum()
    };
    let fetched_before = fetched(&nodes);
    let loaded_at = started.elapsed();

    // C-FIND at IMAGE level on every node, series by series: every
    // acknowledged instance, whichever node holds it, and nothing that was
    // not sent.
    let series: BTreeSet<(&str, &str)> = sent
        .iter()
        .filter(|line| line.acknowledged)
        .map(|line| (line.study.as_str(), line.series.as_str()))
        .collect();
    for node in &nodes {
        let mut found = BTreeSet::new();
        for (study, series_uid) in &series {
            let (images, log) = find_images(node, study, series_uid);
            assert!(!images.is_empty(), "{}: {log}", node.name);
            found.extend(images);
        }
        let missing: Vec<&String> = acknowledged.difference(&found).collect();
        assert!(
            missing.is_empty(),
            "{}: {} acknowledged instances not found (first {:?})",
            node.name,
            missing.len(),
            missing.first()
        );
        let unknown: Vec<&String> = found
            .iter()
            .filter(|sop| !all_sent.contains(sop.as_str()))
            .collect();
        assert!(unknown.is_empty(), "{}: {unknown:?}", node.name);
    }
    let found_at = started.elapsed();

    // C-GET through every node of every study: each acknowledged instance
    // comes back with the data set loadgen sent (its SHA-256 in the
    // history), read locally, from another node or from the object store.
    let studies: BTreeSet<&String> = sent
        .iter()
        .filter(|line| line.acknowledged)
        .map(|line| &line.study)
        .collect();
    let study_list: Vec<&String> = studies.into_iter().collect();
    for node in &nodes {
        let got = get_all(node, &study_list);
        let check = sluice_tests::run(
            Command::new(&loadgen)
                .args(["check", "--hashes", "--history"])
                .arg(&history_file)
                .arg("--dir")
                .arg(got.path()),
            Duration::from_secs(120),
        );
        let report = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(check.status.success(), "through {}: {report}", node.name);
        assert!(
            report.starts_with(&format!(
                "acknowledged {0} present {0} missing 0 different 0",
                acknowledged.len()
            )),
            "through {}: {report}",
            node.name
        );
    }
    // Some of them were read from the object store (their segments evicted).
    let fetched_after = fetched(&nodes);
    assert!(
        fetched_after > fetched_before,
        "no record read from the object store ({fetched_before} before, {fetched_after} after)"
    );
    eprintln!(
        "scenario: {} sent, {} acknowledged, catalogue rows per node {:?}, {uploaded_instances} \
         instances in uploaded segments, {} records read from the object store; loaded at \
         {loaded_at:?}, found at {found_at:?}, retrieved at {:?}",
        sent.len(),
        acknowledged.len(),
        rows_per_node(&mut client),
        fetched_after - fetched_before,
        started.elapsed()
    );
    drop(haproxy);
    drop(nodes);
    drop(network);
}
