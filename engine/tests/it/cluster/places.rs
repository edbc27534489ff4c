//! Where a record lives, in the catalogue: a node on the segments layout
//! with an object store publishes each instance's segment, record offset
//! and length, and the object key of its segment once it is uploaded
//! (docs/design/scale-out.md, "What the catalogue says of a record").

use super::*;
use crate::objects::Garage;
use sluice_engine::config::Config;
use sluice_engine::store::Store;
use sluice_index::Location;

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
    let mut node = Node::new(work.path(), "node-1", postgres.conninfo(), "after-answer");
    node.extra = [
        "--config",
        objects.to_str().unwrap(),
        "--storage-layout",
        "segments",
        "--segment-size-mib",
        "1",
    ]
    .map(str::to_owned)
    .to_vec();
    node.start();
    let sent = tempfile::tempdir().unwrap();
    // 600 small instances fill two 1 MiB segments.
    let files = crate::ingest::generated_files(sent.path(), 600);
    let output = Command::new(dcmtk("storescu"))
        .args(["-aec", AE, "127.0.0.1", &node.port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    assert!(output.status.success(), "storescu: {output:?}");
    let mut client = postgres.client();
    wait_placed(&mut client, &node, 600, 2, &|| true);
    node.stop();
    let rows = client
        .query(
            "SELECT sop_instance_uid, segment, record_offset, record_length, object_key
             FROM sluice_instances WHERE node = 'node-1'",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 600);
    let mut config = Config::from_file(&objects).unwrap();
    config.server.data_directory = node.data.clone();
    let store = Store::open(config).unwrap();
    let read = store.index().read().unwrap();
    let keys: BTreeMap<u64, String> = read
        .segment_objects()
        .unwrap()
        .into_iter()
        .map(|(id, object)| (id, object.key))
        .collect();
    for row in &rows {
        let sop: String = row.get(0);
        let entry = read.instance_by_sop(&sop).unwrap().expect("indexed");
        let Location::Record(place) = read.location(entry.record.file_id).unwrap() else {
            panic!("{sop} is not a record");
        };
        let at = |column| u64::try_from(row.get::<_, i64>(column)).unwrap();
        assert_eq!(
            (at(1), at(2), at(3)),
            (place.segment, place.offset, place.length),
            "{sop}"
        );
        assert_eq!(
            row.get::<_, Option<String>>(4),
            keys.get(&place.segment).cloned(),
            "{sop}"
        );
    }
}
