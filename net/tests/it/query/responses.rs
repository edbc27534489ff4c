//! Response identifiers: the requested keys of a matching entity, the
//! SCP's own attributes, the computed keys, FF01 for what cannot be
//! supplied, and the character set of the answer.

use std::borrow::Cow;

use sluice_net::dimse::dataset::{
    DatasetLimits, Element, SmallDataset, SmallDatasetEncoding, Value, Vr,
};
use sluice_net::dimse::{Status, Tag};
use sluice_net::query::model::tags;
use sluice_net::query::{
    build_response, builder, Attribute, Candidate, CharacterSet, ComputedAttributes,
    IdentifierBuilder, Level, Query, ResponseContext,
};

use super::{query, study_root_find, Stored, YAMADA_IR_87};

const CONTEXT: ResponseContext<'static> = ResponseContext {
    retrieve_ae_title: Some("SLUICE"),
    instance_availability: Some("ONLINE"),
};

/// A source like the index: Unicode text for the attributes it holds,
/// nothing for the others.
struct IndexLike(Vec<(Tag, &'static str)>);

impl Candidate for IndexLike {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        match self.0.iter().find(|(held, _)| *held == tag) {
            None => Attribute::Unavailable,
            Some((_, "")) => Attribute::Empty,
            Some((_, value)) => Attribute::Text(Cow::Borrowed(value)),
        }
    }
}

/// A source whose attributes come from objects in different character sets.
struct TwoCharsets {
    latin1: CharacterSet,
    japanese: CharacterSet,
}

impl Candidate for TwoCharsets {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        match tag {
            tags::PATIENT_NAME => Attribute::Encoded {
                bytes: b"B\xfcrger^Ren\xe9",
                charset: &self.latin1,
            },
            tags::STUDY_DESCRIPTION => Attribute::Encoded {
                bytes: b"\x1b$B;3ED\x1b(B",
                charset: &self.japanese,
            },
            _ => Attribute::Empty,
        }
    }
}

fn text(dataset: &SmallDataset, tag: Tag) -> Option<&[u8]> {
    let bytes = dataset.bytes(tag)?;
    let end = bytes
        .iter()
        .rposition(|byte| *byte != b' ' && *byte != 0)
        .map_or(0, |last| last + 1);
    Some(&bytes[..end])
}

#[test]
fn requested_keys_computed_keys_and_the_scps_own() {
    let query = query(
        Level::Study,
        &[
            (tags::PATIENT_NAME, "Doe*"),
            (tags::PATIENT_ID, ""),
            (tags::STUDY_DATE, "20240101-"),
            (tags::STUDY_INSTANCE_UID, ""),
            (tags::MODALITIES_IN_STUDY, ""),
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, ""),
            (tags::INSTANCE_AVAILABILITY, ""),
            (tags::ACCESSION_NUMBER, ""),
        ],
    );
    let stored = Stored::new(&[
        (tags::PATIENT_NAME, "Doe^John"),
        (tags::PATIENT_ID, "PID-1"),
        (tags::STUDY_DATE, "20240115"),
        (tags::STUDY_INSTANCE_UID, "1.2.3"),
        (tags::STUDY_DESCRIPTION, "not requested"),
    ]);
    let mut computed = ComputedAttributes::new();
    computed.set_count(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, 12);
    computed.set_values(tags::MODALITIES_IN_STUDY, ["CT", "SR"]);
    let candidate = stored.candidate();
    let entity = computed.over(&candidate);
    assert!(query.matches(&entity));
    let response = build_response(&query, &entity, &CONTEXT);
    assert_eq!(response.status(), Status::PENDING);
    for encoding in [
        SmallDatasetEncoding::ImplicitVrLittleEndian,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
    ] {
        let bytes = response.encode(encoding).unwrap();
        let identifier = SmallDataset::decode(&bytes, encoding, DatasetLimits::default()).unwrap();
        let expected: &[(Tag, &[u8])] = &[
            (tags::ACCESSION_NUMBER, b""),
            (tags::QUERY_RETRIEVE_LEVEL, b"STUDY"),
            (tags::RETRIEVE_AE_TITLE, b"SLUICE"),
            (tags::INSTANCE_AVAILABILITY, b"ONLINE"),
            (tags::MODALITIES_IN_STUDY, b"CT\\SR"),
            (tags::PATIENT_NAME, b"Doe^John"),
            (tags::PATIENT_ID, b"PID-1"),
            (tags::STUDY_INSTANCE_UID, b"1.2.3"),
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, b"12"),
        ];
        let mut tags_found: Vec<Tag> = identifier.elements().iter().map(|e| e.tag).collect();
        tags_found.retain(|tag| *tag != tags::STUDY_DATE);
        let mut tags_expected: Vec<Tag> = expected.iter().map(|(tag, _)| *tag).collect();
        tags_expected.sort();
        assert_eq!(
            tags_found, tags_expected,
            "only the requested keys and the SCP's own"
        );
        for (tag, value) in expected {
            assert_eq!(text(&identifier, *tag), Some(*value), "{tag}");
        }
        assert_eq!(text(&identifier, tags::STUDY_DATE), Some(&b"20240115"[..]));
        assert!(
            identifier.get(tags::SPECIFIC_CHARACTER_SET).is_none(),
            "ASCII needs none"
        );
        assert!(identifier.get(tags::STUDY_DESCRIPTION).is_none());
    }
}

#[test]
fn what_the_source_cannot_supply_is_empty_and_makes_ff01() {
    let query = query(
        Level::Study,
        &[
            (tags::PATIENT_NAME, ""),
            (tags::STUDY_INSTANCE_UID, ""),
            (Tag(0x0008, 0x0080), ""),
            (tags::MODALITY, ""),
            (Tag(0x0009, 0x0010), "ACME"),
        ],
    );
    let index = IndexLike(vec![
        (tags::PATIENT_NAME, "Doe^John"),
        (tags::STUDY_INSTANCE_UID, "1.2.3"),
    ]);
    let response = build_response(&query, &index, &ResponseContext::default());
    assert_eq!(response.status(), Status::PENDING_WARNING);
    assert_eq!(
        response.unsupported,
        vec![tags::MODALITY, Tag(0x0008, 0x0080), Tag(0x0009, 0x0010)]
    );
    for tag in [tags::MODALITY, Tag(0x0008, 0x0080), Tag(0x0009, 0x0010)] {
        assert_eq!(response.identifier.bytes(tag), Some(&[][..]), "{tag}");
    }
    assert_eq!(
        text(&response.identifier, tags::PATIENT_NAME),
        Some(&b"Doe^John"[..])
    );
    // The same answer the query gives up front for this source.
    let holds = |tag: Tag| tag == tags::PATIENT_NAME || tag == tags::STUDY_INSTANCE_UID;
    let mut up_front = query.unsupported_keys(&holds);
    up_front.sort();
    let mut found = response.unsupported.clone();
    found.sort();
    assert_eq!(up_front, found);
}

#[test]
fn answers_are_in_the_character_set_of_the_stored_data() {
    let query = query(
        Level::Study,
        &[
            (tags::PATIENT_NAME, ""),
            (tags::PATIENT_ID, ""),
            (tags::STUDY_DESCRIPTION, ""),
        ],
    );
    // One stored set: bytes unchanged, the stored term.
    let japanese = Stored::encoded(
        "\\ISO 2022 IR 87",
        &[
            (tags::PATIENT_ID, b"P1"),
            (tags::STUDY_DESCRIPTION, b"CT"),
            (tags::PATIENT_NAME, YAMADA_IR_87),
        ],
    );
    let response = build_response(&query, &japanese.candidate(), &CONTEXT);
    assert_eq!(
        text(&response.identifier, tags::SPECIFIC_CHARACTER_SET),
        Some(&b"\\ISO 2022 IR 87"[..])
    );
    assert_eq!(
        text(&response.identifier, tags::PATIENT_NAME),
        Some(YAMADA_IR_87)
    );
    // Stored Latin-1 beside Unicode text from the index: UTF-8.
    let latin = Stored::encoded("ISO_IR 100", &[(tags::PATIENT_NAME, b"B\xfcrger^Ren\xe9")]);
    let mut computed = ComputedAttributes::new();
    computed.set_values(tags::STUDY_DESCRIPTION, ["Thorax ü"]);
    let candidate = latin.candidate();
    let response = build_response(&query, &computed.over(&candidate), &CONTEXT);
    assert_eq!(
        text(&response.identifier, tags::SPECIFIC_CHARACTER_SET),
        Some(&b"ISO_IR 192"[..])
    );
    assert_eq!(
        text(&response.identifier, tags::PATIENT_NAME),
        Some("Bürger^René".as_bytes())
    );
    // Only Latin-1: the stored bytes and term.
    let response = build_response(&query, &latin.candidate(), &CONTEXT);
    assert_eq!(
        text(&response.identifier, tags::SPECIFIC_CHARACTER_SET),
        Some(&b"ISO_IR 100"[..])
    );
    assert_eq!(
        text(&response.identifier, tags::PATIENT_NAME),
        Some(&b"B\xfcrger^Ren\xe9"[..])
    );
    // Two stored sets: UTF-8.
    let two = TwoCharsets {
        latin1: CharacterSet::stored(b"ISO_IR 100"),
        japanese: CharacterSet::stored(b"\\ISO 2022 IR 87"),
    };
    let response = build_response(&query, &two, &CONTEXT);
    assert_eq!(
        text(&response.identifier, tags::SPECIFIC_CHARACTER_SET),
        Some(&b"ISO_IR 192"[..])
    );
    assert_eq!(
        text(&response.identifier, tags::PATIENT_NAME),
        Some("Bürger^René".as_bytes())
    );
    assert_eq!(
        text(&response.identifier, tags::STUDY_DESCRIPTION),
        Some("山田".as_bytes())
    );
}

#[test]
fn sequence_keys_return_the_matching_items_with_the_requested_item_keys() {
    let code = |value: &str, scheme: &str, meaning: &str| {
        builder::item(&[
            (tags::CODE_VALUE, value),
            (tags::CODING_SCHEME_DESIGNATOR, scheme),
            (tags::CODE_MEANING, meaning),
        ])
    };
    let mut stored = builder::item(&[(tags::STUDY_INSTANCE_UID, "1.2.3")]);
    stored.put_str(tags::SPECIFIC_CHARACTER_SET, None, "ISO_IR 100");
    stored.put_sequence(
        tags::PROCEDURE_CODE_SEQUENCE,
        vec![
            code("P1", "SRT", "Thorax"),
            code("R2", "RADLEX", "Th\u{e9}"),
        ],
    );
    // The item's meaning is Latin-1 in the stored object.
    let mut items = stored
        .sequence(tags::PROCEDURE_CODE_SEQUENCE)
        .unwrap()
        .to_vec();
    items[1].put(Element {
        tag: tags::CODE_MEANING,
        vr: Vr::LO,
        value: Value::Bytes(b"Th\xe9".to_vec()),
    });
    stored.put_sequence(tags::PROCEDURE_CODE_SEQUENCE, items);
    let stored = Stored::from_dataset(stored);
    let find = |item: Option<SmallDataset>| {
        let bytes = IdentifierBuilder::new(Level::Study)
            .sequence(tags::PROCEDURE_CODE_SEQUENCE, item)
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .unwrap();
        Query::decode(
            &bytes,
            SmallDatasetEncoding::ExplicitVrLittleEndian,
            &study_root_find(),
        )
        .unwrap()
    };
    let query = find(Some(builder::item(&[
        (tags::CODE_VALUE, ""),
        (tags::CODING_SCHEME_DESIGNATOR, "RADLEX"),
    ])));
    let response = build_response(&query, &stored.candidate(), &CONTEXT);
    let items = response
        .identifier
        .sequence(tags::PROCEDURE_CODE_SEQUENCE)
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(text(&items[0], tags::CODE_VALUE), Some(&b"R2"[..]));
    assert!(
        items[0].get(tags::CODE_MEANING).is_none(),
        "only the requested item keys"
    );
    assert!(response
        .identifier
        .get(tags::SPECIFIC_CHARACTER_SET)
        .is_none());
    // No item: the whole sequence, as stored, in the stored character set.
    let response = build_response(&find(None), &stored.candidate(), &CONTEXT);
    let items = response
        .identifier
        .sequence(tags::PROCEDURE_CODE_SEQUENCE)
        .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(text(&items[1], tags::CODE_MEANING), Some(&b"Th\xe9"[..]));
    assert_eq!(
        text(&response.identifier, tags::SPECIFIC_CHARACTER_SET),
        Some(&b"ISO_IR 100"[..])
    );
    // Beside Unicode text, the whole items are decoded to UTF-8 too.
    let mut computed = ComputedAttributes::new();
    computed.set_values(tags::MODALITIES_IN_STUDY, ["CT"]);
    let with_description = {
        let bytes = IdentifierBuilder::new(Level::Study)
            .sequence(tags::PROCEDURE_CODE_SEQUENCE, None)
            .key(tags::STUDY_DESCRIPTION, "")
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .unwrap();
        Query::decode(
            &bytes,
            SmallDatasetEncoding::ExplicitVrLittleEndian,
            &study_root_find(),
        )
        .unwrap()
    };
    let index = IndexLike(vec![(tags::STUDY_DESCRIPTION, "Thorax ü")]);
    struct Both<'a>(&'a IndexLike, sluice_net::query::DatasetCandidate<'a>);
    impl Candidate for Both<'_> {
        fn attribute(&self, tag: Tag) -> Attribute<'_> {
            match self.0.attribute(tag) {
                Attribute::Unavailable => self.1.attribute(tag),
                held => held,
            }
        }
    }
    let response = build_response(
        &with_description,
        &Both(&index, stored.candidate()),
        &CONTEXT,
    );
    let items = response
        .identifier
        .sequence(tags::PROCEDURE_CODE_SEQUENCE)
        .unwrap();
    assert_eq!(text(&items[1], tags::CODE_MEANING), Some("Thé".as_bytes()));
    assert_eq!(
        text(&response.identifier, tags::SPECIFIC_CHARACTER_SET),
        Some(&b"ISO_IR 192"[..])
    );
}
