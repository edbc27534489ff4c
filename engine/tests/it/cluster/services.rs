//! Cluster-wide services: any node answers for the whole cluster. Instances
//! sent through HAProxy land on several nodes, each in a network namespace
//! of its own (`netns`); then each node is asked directly, at its address
//! on the private bridge, by DCMTK.

use super::*;

/// One catalogue row.
#[derive(Debug, Clone)]
struct Placed {
    sop: String,
    study: String,
    series: String,
    node: String,
}

/// Three nodes behind HAProxy with instances spread over them, each in a
/// network namespace of its own.
struct Spread {
    postgres: Postgres,
    _work: tempfile::TempDir,
    nodes: Vec<Node>,
    _haproxy: Haproxy,
    rows: Vec<Placed>,
    sent: PathBuf,
    /// Last: dropped after the nodes that run in it.
    _network: netns::Network,
}

impl Spread {
    /// The nodes started with the flags `extra` gives for their network
    /// (the test's namespace is its gateway).
    fn start_with(extra: &dyn Fn(&netns::Network) -> Vec<String>) -> Spread {
        let mut network = netns::Network::new();
        let postgres = Postgres::start_for(Some(&network));
        let work = tempfile::tempdir().unwrap();
        let mut nodes = three_placed(work.path(), &postgres, &mut network);
        for node in &mut nodes {
            node.extra = extra(&network);
            node.start();
        }
        let haproxy = Haproxy::start(work.path(), &nodes);
        let sender = Sender::start(work.path(), haproxy.port, 6);
        sender.wait_for_acks(90);
        let (acknowledged, sent) = sender.stop();
        caught_up(&postgres, &acknowledged, &nodes);
        // A store in flight when the sender stopped may land a moment later.
        std::thread::sleep(Duration::from_millis(500));
        let rows: Vec<Placed> = postgres
            .client()
            .query(
                "SELECT sop_instance_uid, study_instance_uid, series_instance_uid, node
                 FROM sluice_instances",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| Placed {
                sop: row.get(0),
                study: row.get(1),
                series: row.get(2),
                node: row.get(3),
            })
            .collect();
        let holders: BTreeSet<&str> = rows.iter().map(|row| row.node.as_str()).collect();
        assert!(
            holders.len() >= 2,
            "instances on several nodes: {holders:?}"
        );
        Spread {
            postgres,
            _work: work,
            nodes,
            _haproxy: haproxy,
            rows,
            sent,
            _network: network,
        }
    }

    fn start() -> Spread {
        Spread::start_with(&|_| Vec::new())
    }

    fn studies(&self) -> BTreeMap<String, usize> {
        self.rows.iter().fold(BTreeMap::new(), |mut map, row| {
            *map.entry(row.study.clone()).or_default() += 1;
            map
        })
    }

    fn series(&self) -> BTreeMap<(String, String), usize> {
        self.rows.iter().fold(BTreeMap::new(), |mut map, row| {
            *map.entry((row.study.clone(), row.series.clone()))
                .or_default() += 1;
            map
        })
    }
}

fn values(answers: &[Answer], tag: &str) -> BTreeMap<String, String> {
    answers
        .iter()
        .map(|answer| {
            (
                answer.get(tag).cloned().unwrap_or_default(),
                answer
                    .get("0020,1208")
                    .or(answer.get("0020,1209"))
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn every_node_finds_every_instance_of_the_cluster_at_every_level() {
    let spread = Spread::start();
    let studies = spread.studies();
    let series = spread.series();
    let study_list: Vec<&String> = studies.keys().collect();
    for node in &spread.nodes {
        // PATIENT (Patient Root): the sender's one patient, counted over
        // every node.
        let (answers, log) = findscu(
            node,
            &[
                "-P",
                "-k",
                "QueryRetrieveLevel=PATIENT",
                "-k",
                "PatientID",
                "-k",
                "NumberOfPatientRelatedInstances",
                "-k",
                "NumberOfPatientRelatedStudies",
            ],
        );
        assert_eq!(answers.len(), 1, "{}: {log}", node.name);
        assert_eq!(
            answers[0].get("0010,0020").map(String::as_str),
            Some("CRASH1")
        );
        assert_eq!(
            answers[0].get("0020,1204"),
            Some(&spread.rows.len().to_string()),
            "{}: {answers:?}",
            node.name
        );
        assert_eq!(
            answers[0].get("0020,1200"),
            Some(&studies.len().to_string())
        );
        // STUDY (Study Root): every study, its instances counted.
        let (answers, log) = findscu(
            node,
            &[
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID",
                "-k",
                "PatientName=Crash*",
                "-k",
                "NumberOfStudyRelatedInstances",
            ],
        );
        let found = values(&answers, "0020,000d");
        let expected: BTreeMap<String, String> = studies
            .iter()
            .map(|(study, count)| (study.clone(), count.to_string()))
            .collect();
        assert_eq!(found, expected, "{}: {log}", node.name);
        // SERIES: each study's series, counted (hierarchical: one study
        // at a time).
        let mut found = BTreeMap::new();
        for study in &study_list {
            let (answers, log) = findscu(
                node,
                &[
                    "-S",
                    "-k",
                    "QueryRetrieveLevel=SERIES",
                    "-k",
                    &format!("StudyInstanceUID={study}"),
                    "-k",
                    "SeriesInstanceUID",
                    "-k",
                    "Modality=CT",
                    "-k",
                    "NumberOfSeriesRelatedInstances",
                ],
            );
            assert!(!answers.is_empty(), "{}: {log}", node.name);
            found.extend(values(&answers, "0020,000e"));
        }
        let expected: BTreeMap<String, String> = series
            .iter()
            .map(|((_, series), count)| (series.clone(), count.to_string()))
            .collect();
        assert_eq!(found, expected, "{}", node.name);
        // IMAGE: each series' instances, whichever node holds them.
        for (study, series_uid) in series.keys() {
            let (found, log) = find_images(node, study, series_uid);
            let expected: BTreeSet<String> = spread
                .rows
                .iter()
                .filter(|row| &row.series == series_uid)
                .map(|row| row.sop.clone())
                .collect();
            assert_eq!(found, expected, "{}: {log}", node.name);
        }
    }
    // The catalogue gone: a node answers from its own index, and says so.
    spread.postgres.down();
    let node = &spread.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.metric("sluice_cluster_catalogue_reachable") != 0 {
        assert!(Instant::now() < deadline, "{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (answers, log) = findscu(
        node,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
        ],
    );
    let found: BTreeSet<String> = values(&answers, "0020,000d").into_keys().collect();
    let local: BTreeSet<String> = spread
        .rows
        .iter()
        .filter(|row| row.node == node.name)
        .map(|row| row.study.clone())
        .collect();
    assert_eq!(found, local, "{log}");
    assert!(
        node.log().contains("answers from the local index only"),
        "{}",
        node.log()
    );
    for line in node
        .log()
        .lines()
        .filter(|line| line.contains("C-FIND answered"))
    {
        eprintln!("{line}");
    }
}

#[test]
fn every_node_moves_and_gets_every_instance_whichever_node_holds_it_and_counts_a_dead_holder() {
    let destination = tempfile::tempdir().unwrap();
    let (_storescp, storescp_port) = storescp(destination.path());
    // storescp listens on every address of the test's namespace: the nodes
    // reach it at the bridge's.
    let mut spread = Spread::start_with(&|network| {
        vec![
            "--remote-ae".to_owned(),
            format!("STORESCP={}:{storescp_port}", network.gateway()),
        ]
    });
    let studies = spread.studies();
    let study_list: Vec<&String> = studies.keys().collect();
    let sent = |sop: &str| std::fs::read(spread.sent.join(format!("{sop}.dcm"))).unwrap();
    for node in &spread.nodes {
        for file in std::fs::read_dir(destination.path()).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
        let log = movescu(node, &study_list);
        assert!(
            log.contains("Final Move Response (Success)"),
            "{}: {log}\n{}",
            node.name,
            node.log()
        );
        let arrived = wait_received(destination.path(), spread.rows.len());
        assert_eq!(arrived.len(), spread.rows.len(), "{}: {log}", node.name);
        for row in &spread.rows {
            let bytes = arrived
                .get(&row.sop)
                .unwrap_or_else(|| panic!("{} did not arrive", row.sop));
            assert!(
                dataset(bytes) == dataset(&sent(&row.sop)),
                "{} arrived changed",
                row.sop
            );
        }
    }
    // C-GET on every node: every instance comes back on the requester's
    // association, byte-exact, whichever node holds it.
    for node in &spread.nodes {
        let got = get_all(node, &study_list);
        let arrived = received(got.path());
        assert_eq!(
            arrived.len(),
            spread.rows.len(),
            "{}: {}",
            node.name,
            node.log()
        );
        for row in &spread.rows {
            let bytes = arrived
                .get(&row.sop)
                .unwrap_or_else(|| panic!("{} did not arrive", row.sop));
            assert!(
                dataset(bytes) == dataset(&sent(&row.sop)),
                "{} arrived changed",
                row.sop
            );
        }
    }
    // A holder killed (kill -9): its instances fail, counted and listed;
    // the others arrive.
    let dead = spread
        .nodes
        .iter()
        .position(|node| {
            node.name != "node-1" && spread.rows.iter().any(|row| row.node == node.name)
        })
        .expect("a holder besides node-1");
    spread.nodes[dead].kill();
    let dead_name = spread.nodes[dead].name.clone();
    let lost: BTreeSet<String> = spread
        .rows
        .iter()
        .filter(|row| row.node == dead_name)
        .map(|row| row.sop.clone())
        .collect();
    for file in std::fs::read_dir(destination.path()).unwrap() {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    let log = movescu(&spread.nodes[0], &study_list);
    assert!(
        log.contains("Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)"),
        "{log}"
    );
    // The counts of the final answer, as node-1 logged them.
    let node_log = spread.nodes[0].log();
    let answered = node_log
        .lines()
        .rfind(|line| line.contains("retrieve answered"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        answered.contains(&format!("completed={}", spread.rows.len() - lost.len()))
            && answered.contains(&format!("failed={}", lost.len())),
        "{answered}"
    );
    let arrived = wait_received(destination.path(), spread.rows.len() - lost.len());
    let expected: BTreeSet<String> = spread
        .rows
        .iter()
        .filter(|row| row.node != dead_name)
        .map(|row| row.sop.clone())
        .collect();
    assert_eq!(arrived.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // The same with C-GET.
    let got = tempfile::tempdir().unwrap();
    let log = getscu(&spread.nodes[0], &study_list, got.path());
    assert!(
        log.contains("SubOperationsCompleteOneOrMoreFailures"),
        "{log}"
    );
    let answered = spread.nodes[0]
        .log()
        .lines()
        .rfind(|line| line.contains("retrieve answered"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        answered.contains("operation=Get")
            && answered.contains(&format!("completed={}", expected.len()))
            && answered.contains(&format!("failed={}", lost.len())),
        "{answered}"
    );
    assert_eq!(
        received(got.path()).into_keys().collect::<BTreeSet<_>>(),
        expected
    );
}

/// Storage Commitment on node-1 for instances received by every node:
/// committed, those of the other nodes from the catalogue. Then a
/// reference to an instance no node holds fails (0112), the rest commit.
#[test]
fn commitment_on_one_node_commits_instances_received_by_the_others() {
    let spread = Spread::start();
    let node = &spread.nodes[0];
    assert!(
        spread.rows.iter().any(|row| row.node != node.name),
        "instances on other nodes"
    );
    let refs = spread._work.path().join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    for row in &spread.rows {
        std::fs::copy(
            spread.sent.join(format!("{}.dcm", row.sop)),
            refs.join(format!("{}.dcm", row.sop)),
        )
        .unwrap();
    }
    let port = node.port.to_string();
    let refs_arg = refs.to_string_lossy().into_owned();
    let args = [
        port.as_str(),
        AE,
        "COMMITSCU",
        "--host",
        &node.host,
        "--refs-from",
        &refs_arg,
        "--wait-report",
        "60",
    ];
    let output = sluice_tests::python_peer("commit_scu.py", &args, Duration::from_secs(120));
    assert!(output.has("\"action_status\": \"0000\""), "{}", output.0);
    assert!(
        output.has(&format!("\"committed\": {}", spread.rows.len())),
        "{}\n{}",
        output.0,
        node.log()
    );
    assert!(output.has("\"failed\": []"), "{}", output.0);
}
