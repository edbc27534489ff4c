//! Changes to what a node stores after it published it: a replacement at
//! ingest and a quarantine release reach the catalogue, so every node's
//! C-FIND answers the new version.

use super::*;

const STUDY: &str = "1.2.826.0.1.3680043.8.498.77.1";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.77.1.1";
const SOP: &str = "1.2.826.0.1.3680043.8.498.77.1.1.1";

/// One version of the instance, its Patient's Name `name`.
fn version(dir: &Path, name: &str) -> PathBuf {
    instance(dir, name, (STUDY, SERIES, SOP))
}

/// An instance of `uids` (study, series, SOP), its Patient's Name `name`.
pub(super) fn instance(dir: &Path, name: &str, uids: (&str, &str, &str)) -> PathBuf {
    let mut written = write_ct(
        dir,
        &[Ct {
            name: name.to_owned(),
            uids,
            patient_name: name,
            size: 2,
            seed: 0,
        }],
    );
    written.remove(0)
}

/// Stores `file` on `node`; whether the C-STORE succeeded.
pub(super) fn store(node: &Node, file: &Path) -> bool {
    let output = Command::new(dcmtk("storescu"))
        .args(["-v", "-aec", AE, "127.0.0.1", &node.port.to_string()])
        .arg(file)
        .output()
        .unwrap();
    eprintln!(
        "storescu {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.success()
}

/// What node `node` answers for the study: `None` when the C-FIND failed,
/// else the Patient's Name and the number of instances of each answer.
fn answer(node: &Node) -> Option<Vec<(Option<String>, Option<String>)>> {
    answer_of(node, STUDY)
}

/// The Patient's Name node `node` answers for the study.
fn patient_name(node: &Node) -> Option<String> {
    patient_name_of(node, STUDY)
}

/// The Patient's Name node `node` answers for study `study` (`None`: no
/// answer), from a STUDY-level C-FIND that must succeed with at most one
/// answer of one instance.
fn patient_name_of(node: &Node, study: &str) -> Option<String> {
    let answers = answer_of(node, study).expect("findscu succeeds");
    assert!(answers.len() <= 1, "one study: {answers:?}");
    let (name, count) = answers.into_iter().next()?;
    assert_eq!(count.as_deref(), Some("1"), "one instance");
    name
}

/// The Patient's Name and Number of Study Related Instances of each
/// answer of a STUDY-level C-FIND of `study` on `node`; `None` when
/// `findscu` fails.
fn answer_of(node: &Node, study: &str) -> Option<Vec<(Option<String>, Option<String>)>> {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(dcmtk("findscu"))
        .current_dir(out.path())
        .args(["-S", "-aec", AE, "-X"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .args(["-k", "PatientName", "-k", "NumberOfStudyRelatedInstances"])
        .args(["127.0.0.1", &node.port.to_string()])
        .output()
        .unwrap();
    if !output.status.success() {
        eprintln!("findscu on {}: {output:?}", node.name);
        return None;
    }
    let answers = dumped_answers(out.path())
        .into_iter()
        .map(|answer| {
            // dcmdump shows an empty value without brackets: absent here.
            let value = |tag: &str| answer.get(tag).filter(|value| !value.is_empty()).cloned();
            (value("0010,0010"), value("0020,1208"))
        })
        .collect();
    Some(answers)
}

/// The id of the instance's quarantine entry in data directory `data`.
fn quarantine_id(data: &str) -> String {
    let list = crate::operator::sluice_ok(&["quarantine", "list", "--data-dir", data]);
    list.lines()
        .find(|line| line.contains(SOP))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("a quarantine entry: {list}"))
        .to_owned()
}

/// Waits until `node` answers one study of one instance named `name`. A
/// C-FIND that fails or answers otherwise meanwhile (the catalogue caught
/// mid-change, the node busy under load) is asked again; the last answer
/// and the nodes' logs are in the failure.
fn wait_name(node: &Node, name: &str) {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let answered = answer(node);
        let expected = vec![(Some(name.to_owned()), Some("1".to_owned()))];
        if answered.as_ref() == Some(&expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} answers {answered:?}, not {expected:?}:\n{}",
            node.name,
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_replacement_and_a_quarantine_release_reach_every_nodes_c_find() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut one = Node::new(work.path(), "node-1", postgres.conninfo(), "after-answer");
    let mut two = Node::new(work.path(), "node-2", postgres.conninfo(), "after-answer");
    one.start();
    two.start();

    assert!(store(&one, &version(work.path(), "ALPHA")));
    wait_name(&two, "ALPHA");

    // A second version on the same node, quarantined (the default policy),
    // then released by the operator while the node is stopped: the release
    // reaches the catalogue at the next start.
    // Answered with a warning (quarantined): not asserted on.
    store(&one, &version(work.path(), "BRAVO"));
    one.stop();
    let data = one.data.to_str().unwrap().to_owned();
    let id = quarantine_id(&data);
    crate::operator::sluice_ok(&["quarantine", "release", &id, "--data-dir", &data]);
    one.start();
    wait_name(&two, "BRAVO");
    wait_name(&one, "BRAVO");

    // A replacement at ingest (`duplicate_policy = "replace"`).
    one.stop();
    one.extra = vec!["--duplicate-policy".into(), "replace".into()];
    one.start();
    assert!(store(&one, &version(work.path(), "CHARLIE")));
    wait_name(&two, "CHARLIE");
    let rows = postgres.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows.get(SOP).map(String::as_str), Some("node-1"));
}

/// The file id (32 hex digits) the instance's catalogue row names
/// (`None`: no row).
fn catalogue_location(postgres: &Postgres) -> Option<String> {
    postgres
        .client()
        .query_opt(
            "SELECT location FROM sluice_instances WHERE sop_instance_uid = $1",
            &[&SOP],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// The file id (32 hex digits) under which the index of data directory
/// `data` stores the instance.
fn indexed_location(data: &Path) -> String {
    let index =
        sluice_index::Index::open(data.join("index"), sluice_index::IndexOptions::default())
            .unwrap();
    let file_id = index.read().unwrap().file_id_of_sop(SOP).unwrap();
    index.close();
    format!("{:032x}", file_id.expect("the instance is stored").0)
}

/// A quarantine release whose outbox line a kill took (between the
/// release's commit and its append: the command takes the outbox's
/// clean-stop marker before its commit, so none is left; the unit tests of
/// `cli/quarantine.rs` see it gone at that point) reaches the catalogue
/// through the reconciliation of the node's next start.
#[test]
fn a_release_whose_outbox_line_a_kill_took_reaches_the_catalogue() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut one = Node::new(work.path(), "node-1", postgres.conninfo(), "after-answer");
    one.start();
    assert!(store(&one, &version(work.path(), "ALPHA")));
    // Answered with a warning (quarantined): not asserted on.
    store(&one, &version(work.path(), "BRAVO"));
    // A clean stop publishes the backlog first.
    one.stop();
    let published = catalogue_location(&postgres);
    assert_eq!(published, Some(indexed_location(&one.data)));
    let data = one.data.to_str().unwrap().to_owned();
    let id = quarantine_id(&data);
    let cluster = one.data.join("cluster");
    let outbox = cluster.join("outbox.jsonl");
    let before = std::fs::read(&outbox).unwrap();
    crate::operator::sluice_ok(&["quarantine", "release", &id, "--data-dir", &data]);
    let released = indexed_location(&one.data);
    assert_ne!(Some(&released), published.as_ref());
    assert!(cluster.join("clean-stop").exists());
    assert_ne!(
        std::fs::read(&outbox).unwrap(),
        before,
        "the release's line"
    );
    // What the kill leaves: the outbox without the line, and no marker.
    std::fs::write(&outbox, &before).unwrap();
    std::fs::remove_file(cluster.join("clean-stop")).unwrap();
    let earlier = one.log().len();
    one.start();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while catalogue_location(&postgres).as_ref() != Some(&released) {
        assert!(
            Instant::now() < deadline,
            "the catalogue names {:?}, not the released {released}:\n{}",
            catalogue_location(&postgres),
            one.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    one.stop();
    let log = one.log();
    assert!(
        log[earlier..].contains("the local index was reconciled"),
        "{log}"
    );
}

#[test]
fn cluster_find_local_answers_the_local_index_only() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut one = Node::new(work.path(), "node-1", postgres.conninfo(), "after-answer");
    let mut two = Node::new(work.path(), "node-2", postgres.conninfo(), "after-answer");
    two.extra = vec!["--cluster-find".into(), "local".into()];
    one.start();
    two.start();
    let other = "1.2.826.0.1.3680043.8.498.77.2";
    assert!(store(&one, &version(work.path(), "ALPHA")));
    assert!(store(
        &two,
        &instance(
            work.path(),
            "LOCAL",
            (other, &format!("{other}.1"), &format!("{other}.1.1"))
        )
    ));
    // Both published: node-1 (cluster) finds both studies.
    wait_name(&one, "ALPHA");
    let deadline = Instant::now() + Duration::from_secs(30);
    while patient_name_of(&one, other).as_deref() != Some("LOCAL") {
        assert!(
            Instant::now() < deadline,
            "node-1 never found node-2's study"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(postgres.rows().len(), 2);
    // node-2 (local) finds its own, not node-1's, and never said it asked
    // the catalogue (nor fell back from it).
    assert_eq!(patient_name_of(&two, other).as_deref(), Some("LOCAL"));
    assert_eq!(patient_name(&two), None);
    // With the catalogue gone, the same answers and no fallback warning.
    postgres.down();
    assert_eq!(patient_name_of(&two, other).as_deref(), Some("LOCAL"));
    assert_eq!(patient_name(&two), None);
    let log = two.log();
    assert!(
        !log.contains("answers from the local index only"),
        "node-2 went to the catalogue:\n{log}"
    );
}

#[test]
fn more_concurrent_c_finds_than_catalogue_connections_are_all_answered_from_the_catalogue() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let mut one = Node::new(work.path(), "node-1", postgres.conninfo(), "after-answer");
    let mut two = Node::new(work.path(), "node-2", postgres.conninfo(), "after-answer");
    two.extra = vec!["--cluster-find-connections".into(), "2".into()];
    one.start();
    two.start();
    assert!(store(&one, &version(work.path(), "ALPHA")));
    wait_name(&two, "ALPHA");
    // 12 C-FINDs at once on node-2, which may use 2 connections: each is
    // answered from the catalogue (node-2 holds nothing itself).
    let answers: Vec<Option<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| patient_name(&two)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    assert!(
        answers
            .iter()
            .all(|answer| answer.as_deref() == Some("ALPHA")),
        "{answers:?}\n{}",
        two.log()
    );
    let log = two.log();
    assert!(
        !log.contains("answers from the local index only"),
        "a C-FIND fell back:\n{log}"
    );
    // The connections are kept and reused: never more than the cap.
    let open: i64 = postgres
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice find'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!((1..=2).contains(&open), "{open} C-FIND connections open");
}
