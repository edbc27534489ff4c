//! A holder down: its instances whose segments were uploaded are retrieved
//! through another node from the object store, byte-exact; those not
//! uploaded fail, named in the Failed SOP Instance UID List and in `sluice
//! cluster status` (docs/design/scale-out.md, "A holder down").

use sluice_tests::{python_peer, PeerOutput};

use super::*;
use crate::objects::Garage;

/// pynetdicom stores 600 C-GET sub-operations slowly on a loaded machine.
const PEER_TIMEOUT: Duration = Duration::from_secs(480);

/// pynetdicom's `qr_scu.py` against `node` (for the Failed SOP Instance
/// UID List, which DCMTK's tools do not print).
fn qr_scu(node: &Node, mode: &str, keys: &str, extra: &str) -> PeerOutput {
    let port = node.port.to_string();
    python_peer(
        "qr_scu.py",
        &[
            mode, &port, AE, "QRSCU", "study", keys, extra, "--host", &node.host,
        ],
        PEER_TIMEOUT,
    )
}

/// Three nodes in network namespaces on the segments layout with an
/// object store (a 3-node Garage) evicting after upload. Node-1 takes
/// every instance; its sealed segments are uploaded and evicted; then it is
/// killed (kill -9). Node-2 is asked for everything: C-MOVE and C-GET
/// deliver the uploaded instances byte-exact, read from the object store,
/// and fail the rest (the open segment's, never uploaded) with their UIDs;
/// `sluice cluster status` names node-1 down and those instances
/// unavailable.
#[test]
fn a_down_holders_uploaded_instances_are_retrieved_from_the_object_store() {
    let mut network = netns::Network::new();
    let postgres = Postgres::start_for(Some(&network));
    let garage = Garage::start_at(&network.gateway());
    let work = tempfile::tempdir().unwrap();
    let destination = tempfile::tempdir().unwrap();
    let (_storescp, storescp_port) = storescp(destination.path());
    let mut nodes = three_placed(work.path(), &postgres, &mut network);
    for node in &mut nodes {
        node.extra = uploading_flags(work.path(), &garage);
        node.extra.extend([
            "--remote-ae".to_owned(),
            format!("STORESCP={}:{storescp_port}", network.gateway()),
        ]);
        node.start();
    }
    let sent = tempfile::tempdir().unwrap();
    // 600 small instances fill two 1 MiB segments and part of a third.
    let files = crate::ingest::generated_files(sent.path(), 600);
    let output = Command::new(dcmtk("storescu"))
        .args(["-aec", AE, &nodes[0].host, &nodes[0].port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    assert!(output.status.success(), "storescu: {output:?}");
    let mut client = postgres.client();
    // Every row published with its place, the sealed segments uploaded
    // (their key published) and evicted on node-1.
    wait_placed(&mut client, &nodes[0], 600, 2, &|| {
        nodes[0].metric("sluice_objects_evicted_segments") >= 2
    });
    let rows = client
        .query(
            "SELECT sop_instance_uid, study_instance_uid, object_key IS NOT NULL
             FROM sluice_instances WHERE node = 'node-1'",
            &[],
        )
        .unwrap();
    // A stale place (what a relocation not yet published leaves): one
    // uploaded row made to name the place of another record of its
    // segment. The reader checks the record's header: that instance fails,
    // no other instance's bytes are sent in its name.
    let stale: String = client
        .query_one(
            "WITH pair AS (
                 SELECT a.sop_instance_uid AS sop, b.record_offset, b.record_length
                 FROM sluice_instances a JOIN sluice_instances b
                   ON a.node = b.node AND a.segment = b.segment
                  AND a.sop_instance_uid <> b.sop_instance_uid
                 WHERE a.node = 'node-1' AND a.object_key IS NOT NULL
                 LIMIT 1)
             UPDATE sluice_instances i SET record_offset = pair.record_offset,
                    record_length = pair.record_length
             FROM pair WHERE i.sop_instance_uid = pair.sop
             RETURNING i.sop_instance_uid",
            &[],
        )
        .unwrap()
        .get(0);
    let uploaded: BTreeSet<String> = rows
        .iter()
        .filter(|row| row.get::<_, bool>(2))
        .map(|row| row.get(0))
        .filter(|sop| *sop != stale)
        .collect();
    let not_uploaded: BTreeSet<String> = rows
        .iter()
        .filter(|row| !row.get::<_, bool>(2))
        .map(|row| row.get(0))
        .collect();
    assert!(!not_uploaded.is_empty(), "the open segment's instances");
    // Those a retrieve fails while node-1 is down.
    let failed: BTreeSet<String> = not_uploaded
        .iter()
        .cloned()
        .chain([stale.clone()])
        .collect();
    let studies: BTreeSet<String> = rows.iter().map(|row| row.get(1)).collect();
    let study_list: Vec<&String> = studies.iter().collect();
    // The sent files by SOP Instance UID (the catalogue's rows name them).
    let sent_by_sop: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let sop = rows
                .iter()
                .map(|row| row.get::<_, String>(0))
                .find(|sop| {
                    let needle = sop.as_bytes();
                    bytes.windows(needle.len()).any(|window| window == needle)
                })
                .expect("a sent file the catalogue names");
            (sop, bytes)
        })
        .collect();
    assert_eq!(sent_by_sop.len(), 600);

    nodes[0].kill();

    // The status names node-1 down and what is unavailable meanwhile.
    let status = cluster_status(&postgres);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|line| line.starts_with("node-1") && line.contains("down")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "unavailable while node-1 is down: {} instances not in the object store",
            not_uploaded.len()
        )),
        "{text}"
    );
    let listed: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|line| !line.starts_with("..."))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed.len(), not_uploaded.len().min(100), "{text}");
    assert!(listed.is_subset(&not_uploaded), "{text}");

    let keys = format!(
        "{{\"QueryRetrieveLevel\": \"STUDY\", \"StudyInstanceUID\": \"{}\"}}",
        studies.iter().cloned().collect::<Vec<_>>().join("\\\\")
    );
    // The Failed SOP Instance UID List, as a set (JSON: `\\` between).
    let failed_uids = |output: &PeerOutput| -> BTreeSet<String> {
        output
            .string("failed_uids")
            .unwrap_or_default()
            .split("\\\\")
            .filter(|uid| !uid.is_empty())
            .map(str::to_owned)
            .collect()
    };
    // C-MOVE through node-2: the uploaded ones arrive byte-exact, read from
    // the object store; the others (and the stale one) fail, each named.
    let asked = &nodes[1];
    let log = movescu(asked, &study_list);
    assert!(
        log.contains("Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)"),
        "{log}\n{}",
        asked.log()
    );
    let arrived = wait_received(destination.path(), uploaded.len());
    assert_eq!(
        arrived.keys().cloned().collect::<BTreeSet<_>>(),
        uploaded,
        "{}",
        asked.log()
    );
    for (sop, bytes) in &arrived {
        assert!(
            dataset(bytes) == dataset(&sent_by_sop[sop]),
            "{sop} arrived changed"
        );
    }
    for file in std::fs::read_dir(destination.path()).unwrap() {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    let moved = qr_scu(asked, "move", &keys, "STORESCP");
    assert!(moved.has("\"status_hex\": \"B000\""), "{}", moved.0);
    assert!(
        moved.has(&format!(
            "\"final_counts\": \"-/{}/{}/0\"",
            uploaded.len(),
            failed.len()
        )),
        "{}",
        moved.0
    );
    assert_eq!(failed_uids(&moved), failed, "{}", moved.0);
    // C-GET through node-2: the same on the requester's association.
    let got = tempfile::tempdir().unwrap();
    let log = getscu(asked, &study_list, got.path());
    assert!(
        log.contains("SubOperationsCompleteOneOrMoreFailures"),
        "{log}\n{}",
        asked.log()
    );
    let arrived = received(got.path());
    assert_eq!(arrived.keys().cloned().collect::<BTreeSet<_>>(), uploaded);
    for (sop, bytes) in &arrived {
        assert!(
            dataset(bytes) == dataset(&sent_by_sop[sop]),
            "{sop} arrived changed"
        );
    }
    // pynetdicom's C-GET of all 600 can outlast its own process on a loaded
    // machine: the studies of the failed ones and of 20 uploaded ones.
    let rows_study: BTreeMap<String, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let some_uploaded: BTreeSet<String> = uploaded.iter().take(20).cloned().collect();
    let get_studies: BTreeSet<&String> = failed
        .iter()
        .chain(&some_uploaded)
        .map(|sop| &rows_study[sop])
        .collect();
    let get_keys = format!(
        "{{\"QueryRetrieveLevel\": \"STUDY\", \"StudyInstanceUID\": \"{}\"}}",
        get_studies
            .iter()
            .map(|study| study.as_str())
            .collect::<Vec<_>>()
            .join("\\\\")
    );
    let get_completed = rows_study
        .iter()
        .filter(|(sop, study)| get_studies.contains(study) && uploaded.contains(*sop))
        .count();
    let out = tempfile::tempdir().unwrap();
    let gotten = qr_scu(asked, "get", &get_keys, out.path().to_str().unwrap());
    assert!(gotten.has("\"status_hex\": \"B000\""), "{}", gotten.0);
    assert!(
        gotten.has(&format!(
            "\"final_counts\": \"-/{get_completed}/{}/0\"",
            failed.len()
        )),
        "{}",
        gotten.0
    );
    assert_eq!(failed_uids(&gotten), failed, "{}", gotten.0);
    // Node-2 logged the holder down, and the stale place's refusal.
    let log = asked.log();
    assert!(log.contains("a holder does not answer"), "{log}");
    assert!(
        log.contains("the header names another instance than the index entry"),
        "{log}"
    );
    drop(nodes);
    drop(network);
}
