//! Where a record lives, in the catalogue: a node on the segments layout
//! with an object store publishes each instance's segment, record offset
//! and length, and the object key of its segment once it is uploaded
//! (docs/design/scale-out.md, "What the catalogue says of a record"); a
//! record compaction moves takes its new place there ("Relocated records").

use super::*;
use crate::objects::Garage;
use sluice_engine::config::Config;
use sluice_engine::store::Store;
use sluice_index::Location;

/// A record's place: segment, offset, length.
type Place = (u64, u64, u64);

/// One node, segments layout, `[objects]` evicting after upload: every
/// catalogue row names its record's place exactly as the node's index
/// does, and the rows of uploaded segments their object key.
#[test]
fn the_catalogue_names_each_records_segment_place_and_object_key() {
    let postgres = Postgres::start();
    let garage = Garage::start();
    let work = tempfile::tempdir().unwrap();
    let objects = work.path().join("objects.toml");
    std::fs::write(&objects, garage.objects_toml("after-upload")).unwrap();
    // 600 small instances fill two 1 MiB segments.
    let (mut node, mut client, _) = node_with_600(
        work.path(),
        &postgres,
        &[
            "--config",
            objects.to_str().unwrap(),
            "--storage-layout",
            "segments",
            "--segment-size-mib",
            "1",
        ],
        2,
    );
    node.stop();
    assert_eq!(catalogue_places(&mut client, &node).len(), 600);
    assert_rows_as_indexed(&mut client, &node, &objects);
}

/// A node stores 600 instances, the first 200 are replaced (their first
/// records die), `sluice compact` (the node stopped) moves the live records
/// of the mostly dead segment, and the node runs again with an object
/// store: each moved instance's row names its new place, and its new
/// segment's object key once uploaded.
#[test]
fn a_record_compaction_moved_takes_its_new_place_in_the_catalogue() {
    relocated_rows_follow(false);
}

/// As above, but the compaction's outbox lines are lost (a crash between
/// the relocation's commit and the append, which leaves no clean-stop
/// marker): the next start's reconciliation finds the stale places.
#[test]
fn a_relocation_the_outbox_lost_is_found_by_the_reconciliation() {
    relocated_rows_follow(true);
}

/// The online compactor of a cluster node (no object store) moves the
/// live records of the segments replacements emptied while the node runs:
/// after a clean stop every row names the place the index holds.
#[test]
fn the_online_compactor_s_moves_reach_the_catalogue() {
    let postgres = Postgres::start();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("storage.toml");
    std::fs::write(&config, "[storage]\nsegment_size_mib = 1\n").unwrap();
    let (mut node, mut client, files) = node_with_600(
        work.path(),
        &postgres,
        &[
            "--segment-size-mib",
            "1",
            "--duplicate-policy",
            "replace",
            "--compaction-rate-mib-s",
            "64",
            "--compaction-dead-percent",
            "25",
            "--compaction-dead-min",
            "0",
        ],
        0,
    );
    let before = catalogue_places(&mut client, &node);
    storescu(&node, &files[..200]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.metric("sluice_compaction_relocated_records") == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing compacted:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let a pass in hand finish; a clean stop publishes the backlog.
    std::thread::sleep(Duration::from_secs(3));
    node.stop();
    let rows = assert_rows_as_indexed(&mut client, &node, &config);
    let replaced: BTreeSet<String> = files[..200]
        .iter()
        .map(|file| crate::segment_ingest::sop_of(file))
        .collect();
    let moved = rows
        .iter()
        .filter(|(sop, place)| !replaced.contains(*sop) && before.get(*sop) != Some(place))
        .count();
    assert!(
        moved > 0,
        "no record kept its file and moved:\n{}",
        node.log()
    );
}

fn relocated_rows_follow(lose_the_outbox_lines: bool) {
    let postgres = Postgres::start();
    let garage = Garage::start();
    let work = tempfile::tempdir().unwrap();
    let objects = work.path().join("objects.toml");
    std::fs::write(&objects, garage.objects_toml("after-upload")).unwrap();
    let flags = [
        "--storage-layout",
        "segments",
        "--segment-size-mib",
        "1",
        "--duplicate-policy",
        "replace",
        // No online compaction: `sluice compact` moves the records.
        "--compaction-rate-mib-s",
        "0",
    ];
    let (mut node, mut client, files) = node_with_600(work.path(), &postgres, &flags, 0);
    storescu(&node, &files[..200]);
    wait_placed(&mut client, &node, 600, 0, &|| true);
    // A clean stop publishes the backlog (the replacements) first.
    node.stop();
    assert_rows_as_indexed(&mut client, &node, &objects);
    let before = catalogue_places(&mut client, &node);

    let config = work.path().join("compact.toml");
    std::fs::write(
        &config,
        "[storage]\nlayout = \"segments\"\nsegment_size_mib = 1\n\
         compaction_dead_percent = 25\ncompaction_dead_min = 0\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("compact")
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&node.data)
        .output()
        .unwrap();
    assert!(output.status.success(), "sluice compact: {output:?}");
    let (after, _) = index_places(&node, &objects, before.keys());
    let moved: BTreeSet<&String> = after
        .iter()
        .filter(|(sop, place)| before.get(*sop) != Some(&Some(**place)))
        .map(|(sop, _)| sop)
        .collect();
    assert!(
        moved.len() >= 50,
        "compaction moved {} records: {}",
        moved.len(),
        String::from_utf8_lossy(&output.stdout)
    );
    let cluster = node.data.join("cluster");
    let outbox = std::fs::read_to_string(cluster.join("outbox.jsonl")).unwrap();
    let relocated = |line: &&str| line.contains("\"relocated\":true");
    assert_eq!(outbox.lines().filter(relocated).count(), moved.len());
    // The node stopped cleanly and the command flushed what it appended.
    assert!(cluster.join("clean-stop").exists());
    if lose_the_outbox_lines {
        let kept: String = outbox
            .lines()
            .filter(|line| !relocated(line))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(cluster.join("outbox.jsonl"), kept).unwrap();
        std::fs::remove_file(cluster.join("clean-stop")).unwrap();
    }

    node.extra = flags.map(str::to_owned).to_vec();
    node.extra
        .extend(["--config".to_owned(), objects.to_str().unwrap().to_owned()]);
    node.start();
    // Every sealed segment is uploaded; a row still naming a record's old
    // place names a segment compaction deleted, never uploaded: no key.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let without: i64 = client
            .query_one(
                "SELECT count(*) FROM sluice_instances
                 WHERE node = $1 AND (segment IS NULL OR object_key IS NULL)",
                &[&node.name],
            )
            .unwrap()
            .get(0);
        if without == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{without} rows without a place or an object key:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.stop();
    if lose_the_outbox_lines {
        assert!(
            node.log().contains(&format!("relocated={}", moved.len())),
            "{}",
            node.log()
        );
    }
    let rows = assert_rows_as_indexed(&mut client, &node, &objects);
    for sop in moved {
        assert_ne!(rows.get(sop.as_str()), before.get(sop), "{sop}");
    }
}

/// node-1 started with `flags` (and `postgres`'s catalogue), given 600
/// generated instances, once their rows name their segment and at least
/// `uploaded` segments have an object key; a catalogue client, the files.
fn node_with_600(
    work: &Path,
    postgres: &Postgres,
    flags: &[&str],
    uploaded: i64,
) -> (Node, postgres::Client, Vec<PathBuf>) {
    let mut node = Node::new(work, "node-1", postgres.conninfo(), "after-answer");
    node.extra = flags.iter().map(|flag| (*flag).to_owned()).collect();
    node.start();
    let sent = work.join("sent");
    std::fs::create_dir_all(&sent).unwrap();
    let files = crate::ingest::generated_files(&sent, 600);
    storescu(&node, &files);
    let mut client = postgres.client();
    wait_placed(&mut client, &node, 600, uploaded, &|| true);
    (node, client, files)
}

/// storescu of `files` to `node`, which must succeed.
fn storescu(node: &Node, files: &[PathBuf]) {
    let output = Command::new(dcmtk("storescu"))
        .args(["-aec", AE, "127.0.0.1", &node.port.to_string()])
        .args(files)
        .output()
        .unwrap();
    assert!(output.status.success(), "storescu: {output:?}");
}

/// `node`'s catalogue rows: SOP Instance UID -> record place (`None`: NULL).
fn catalogue_places(client: &mut postgres::Client, node: &Node) -> BTreeMap<String, Option<Place>> {
    let at = |row: &postgres::Row, column| {
        row.get::<_, Option<i64>>(column)
            .map(|value| u64::try_from(value).unwrap())
    };
    client
        .query(
            "SELECT sop_instance_uid, segment, record_offset, record_length
             FROM sluice_instances WHERE node = $1",
            &[&node.name],
        )
        .unwrap()
        .iter()
        .map(|row| {
            let place = match (at(row, 1), at(row, 2), at(row, 3)) {
                (Some(segment), Some(offset), Some(length)) => Some((segment, offset, length)),
                _ => None,
            };
            (row.get(0), place)
        })
        .collect()
}

/// The stopped `node`'s index: each SOP Instance UID of `sops` -> its
/// record place; and the object key of each uploaded segment.
fn index_places<'a>(
    node: &Node,
    objects: &Path,
    sops: impl Iterator<Item = &'a String>,
) -> (BTreeMap<String, Place>, BTreeMap<u64, String>) {
    let mut config = Config::from_file(objects).unwrap();
    config.server.data_directory = node.data.clone();
    let store = Store::open(config).unwrap();
    let read = store.index().read().unwrap();
    let places = sops
        .map(|sop| {
            let entry = read.instance_by_sop(sop).unwrap().expect("indexed");
            let Location::Record(place) = read.location(entry.record.file_id).unwrap() else {
                panic!("{sop} is not a record");
            };
            (sop.clone(), (place.segment, place.offset, place.length))
        })
        .collect();
    let keys = read
        .segment_objects()
        .unwrap()
        .into_iter()
        .map(|(id, object)| (id, object.key))
        .collect();
    (places, keys)
}

/// Asserts that each of the stopped `node`'s catalogue rows names its
/// record's place as the node's index does, and its segment's object key
/// when the index records one (NULL otherwise); the rows' places.
fn assert_rows_as_indexed(
    client: &mut postgres::Client,
    node: &Node,
    objects: &Path,
) -> BTreeMap<String, Option<Place>> {
    let places = catalogue_places(client, node);
    let keys: BTreeMap<String, Option<String>> = client
        .query(
            "SELECT sop_instance_uid, object_key FROM sluice_instances WHERE node = $1",
            &[&node.name],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let (indexed, uploaded) = index_places(node, objects, places.keys());
    for (sop, place) in &indexed {
        assert_eq!(places.get(sop), Some(&Some(*place)), "{sop}");
        assert_eq!(
            keys.get(sop),
            Some(&uploaded.get(&place.0).cloned()),
            "{sop}"
        );
    }
    places
}
