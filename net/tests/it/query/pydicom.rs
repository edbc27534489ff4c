//! Differential tests against pydicom: identifiers pydicom writes (its own
//! character-set encoders, ISO 2022 IR 87 included, and its defined-length
//! Implicit VR sequences) decode to the values pydicom was given; response
//! identifiers Sluice writes decode, in pydicom, to the values Sluice meant.
//! pydicom runs as a child process (`python3`); a missing pydicom fails.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::Tag;
use sluice_net::query::model::tags;
use sluice_net::query::{
    build_response, Attribute, Candidate, ComputedAttributes, Query, QueryKey, ResponseContext,
};

use super::{code_item, study_root_find, Stored, YAMADA_IR_87};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/query/pydicom_identifiers.py"
);

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "sluice-query-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python(args: &[&str]) -> Vec<Vec<String>> {
    let output = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("python3 must be installed (with pydicom)");
    assert!(
        output.status.success(),
        "pydicom script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

fn unhex(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn parse_tag(text: &str) -> Tag {
    let (group, element) = text.split_once(',').unwrap();
    Tag(
        u16::from_str_radix(group, 16).unwrap(),
        u16::from_str_radix(element, 16).unwrap(),
    )
}

fn encoding(name: &str) -> SmallDatasetEncoding {
    match name {
        "implicit" => SmallDatasetEncoding::ImplicitVrLittleEndian,
        "explicit" => SmallDatasetEncoding::ExplicitVrLittleEndian,
        other => panic!("encoding {other}"),
    }
}

/// The key at `path` ("gggg,eeee" or "gggg,eeee/gggg,eeee").
fn key_at<'a>(query: &'a Query, path: &str) -> &'a QueryKey {
    let mut steps = path.split('/');
    let mut key = query.key(parse_tag(steps.next().unwrap())).unwrap();
    for step in steps {
        let tag = parse_tag(step);
        key = key
            .item_keys()
            .unwrap()
            .iter()
            .find(|item_key| item_key.tag == tag)
            .unwrap_or_else(|| panic!("item key {path}"));
    }
    key
}

fn read_fixture(directory: &Path, name: &str, encoding_name: &str) -> Query {
    let bytes = std::fs::read(directory.join(format!("{name}.{encoding_name}"))).unwrap();
    Query::decode(&bytes, encoding(encoding_name), &study_root_find())
        .unwrap_or_else(|error| panic!("{name}.{encoding_name}: {error}"))
}

#[test]
fn identifiers_written_by_pydicom_decode_to_their_values() {
    let scratch = Scratch::new("identifiers");
    let lines = python(&["identifiers", scratch.0.to_str().unwrap()]);
    assert!(lines.len() > 30, "pydicom wrote {} keys", lines.len());
    for line in &lines {
        let [name, encoding_name, level, path, value] = line.as_slice() else {
            panic!("line {line:?}");
        };
        let query = read_fixture(&scratch.0, name, encoding_name);
        assert_eq!(query.level().as_str(), level);
        let key = key_at(&query, path);
        assert_eq!(key.value, unhex(value), "{name}.{encoding_name} {path}");
    }
    // Same number of top-level keys as pydicom wrote, per fixture.
    for name in ["japanese", "utf8", "latin1"] {
        for encoding_name in ["implicit", "explicit"] {
            let query = read_fixture(&scratch.0, name, encoding_name);
            let written = lines
                .iter()
                .filter(|line| {
                    line[0] == name && line[1] == encoding_name && !line[3].contains('/')
                })
                .count();
            let sequences = query
                .keys()
                .iter()
                .filter(|key| key.item_keys().is_some())
                .count();
            assert_eq!(
                query.keys().len() - sequences,
                written,
                "{name}.{encoding_name}"
            );
        }
    }
    // The Japanese identifier matches a study stored in UTF-8.
    let japanese = read_fixture(&scratch.0, "japanese", "implicit");
    let stored = Stored::encoded(
        "ISO_IR 192",
        &[
            (
                tags::PATIENT_NAME,
                "Yamada^Tarou=山田^太郎=やまだ^たろう".as_bytes(),
            ),
            (tags::STUDY_DATE, b"20240115"),
            (tags::STUDY_INSTANCE_UID, b"1.2.840.1.2"),
            (tags::MODALITIES_IN_STUDY, b"MR\\SR"),
            (tags::STUDY_DESCRIPTION, "胸部CT".as_bytes()),
        ],
    )
    .with_sequence(
        tags::PROCEDURE_CODE_SEQUENCE,
        vec![code_item("RPID16", "RADLEX")],
    );
    assert!(japanese.matches(&stored.candidate()));
}

/// Index-held Unicode text over a stored data set.
struct Layered<'a> {
    description: &'static str,
    stored: sluice_net::query::DatasetCandidate<'a>,
}

impl Candidate for Layered<'_> {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        if tag == tags::STUDY_DESCRIPTION {
            return Attribute::Text(Cow::Borrowed(self.description));
        }
        self.stored.attribute(tag)
    }
}

#[test]
fn responses_decode_in_pydicom_to_what_sluice_meant() {
    let scratch = Scratch::new("responses");
    python(&["identifiers", scratch.0.to_str().unwrap()]);
    let query = read_fixture(&scratch.0, "japanese", "explicit");
    let context = ResponseContext {
        retrieve_ae_title: Some("SLUICE"),
        instance_availability: None,
    };
    let mut computed = ComputedAttributes::new();
    computed.set_count(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, 3);
    computed.set_values(tags::MODALITIES_IN_STUDY, ["MR", "SR"]);

    // Stored in ISO 2022 IR 87: sent as stored.
    let japanese = Stored::encoded(
        "\\ISO 2022 IR 87",
        &[
            (tags::STUDY_DATE, b"20240115"),
            (tags::STUDY_INSTANCE_UID, b"1.2.840.1.2"),
            (tags::STUDY_DESCRIPTION, b"CT"),
            (tags::PATIENT_NAME, YAMADA_IR_87),
        ],
    )
    .with_sequence(
        tags::PROCEDURE_CODE_SEQUENCE,
        vec![code_item("RPID16", "RADLEX")],
    );
    // Stored in Latin-1, with Unicode text from the index: UTF-8.
    let latin = Stored::encoded("ISO_IR 100", &[(tags::PATIENT_NAME, b"B\xfcrger^Ren\xe9")]);

    let japanese_candidate = japanese.candidate();
    let japanese_entity = computed.over(&japanese_candidate);
    let mixed = Layered {
        description: "胸部 über",
        stored: latin.candidate(),
    };
    let responses = [
        (
            "stored_ir87",
            build_response(&query, &japanese_entity, &context),
        ),
        ("mixed_utf8", build_response(&query, &mixed, &context)),
    ];
    for (name, response) in &responses {
        for encoding_name in ["implicit", "explicit"] {
            let bytes = response.encode(encoding(encoding_name)).unwrap();
            std::fs::write(scratch.0.join(format!("{name}.{encoding_name}")), bytes).unwrap();
        }
    }
    let lines = python(&[
        "read",
        scratch.0.to_str().unwrap(),
        "stored_ir87",
        "mixed_utf8",
    ]);
    let value = |name: &str, encoding_name: &str, path: &str| {
        lines
            .iter()
            .find(|line| line[0] == name && line[1] == encoding_name && line[2] == path)
            .map(|line| unhex(&line[3]))
    };
    for encoding_name in ["implicit", "explicit"] {
        let expected_ir87: &[(&str, &str)] = &[
            ("0010,0010", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
            ("0008,1030", "CT"),
            ("0008,0054", "SLUICE"),
            ("0008,0061", "MR\\SR"),
            ("0020,1208", "3"),
            ("0020,000D", "1.2.840.1.2"),
            ("0008,1032/0008,0100", "RPID16"),
            ("0008,1032/0008,0102", "RADLEX"),
            ("0010,0020", ""),
        ];
        for (path, expected) in expected_ir87 {
            assert_eq!(
                value("stored_ir87", encoding_name, path).as_deref(),
                Some(*expected),
                "stored_ir87.{encoding_name} {path}"
            );
        }
        assert_eq!(
            value("mixed_utf8", encoding_name, "0010,0010").as_deref(),
            Some("Bürger^René")
        );
        assert_eq!(
            value("mixed_utf8", encoding_name, "0008,1030").as_deref(),
            Some("胸部 über")
        );
    }
    // The IR 87 answer carries the stored bytes and term unchanged.
    let identifier = &responses[0].1.identifier;
    assert_eq!(identifier.bytes(tags::PATIENT_NAME), Some(YAMADA_IR_87));
    assert_eq!(
        identifier.bytes(tags::SPECIFIC_CHARACTER_SET),
        Some(&b"\\ISO 2022 IR 87"[..])
    );
}
