//! Request identifiers: decoding, the hierarchical and relational rules,
//! retrieve identifiers, character sets, and the refusals with their status
//! and reason.

use sluice_net::dimse::dataset::{DatasetError, SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::{Status, Tag};
use sluice_net::query::model::tags;
use sluice_net::query::{
    FindNegotiation, IdentifierBuilder, IdentifierError, Ignored, InformationModel, KeyType, Level,
    Operation, Query, QueryContext, RetrieveNegotiation,
};

use super::{decode, query, study_root_find, Stored, YAMADA_IR_87};

const IMPLICIT: SmallDatasetEncoding = SmallDatasetEncoding::ImplicitVrLittleEndian;
const EXPLICIT: SmallDatasetEncoding = SmallDatasetEncoding::ExplicitVrLittleEndian;

fn patient_root(operation: Operation) -> QueryContext {
    QueryContext::new(InformationModel::PatientRoot, operation)
}

fn study_root(operation: Operation) -> QueryContext {
    QueryContext::new(InformationModel::StudyRoot, operation)
}

/// An Explicit VR LE element, written by hand (odd lengths included).
fn explicit_element(tag: Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&tag.0.to_le_bytes());
    bytes.extend_from_slice(&tag.1.to_le_bytes());
    bytes.extend_from_slice(vr);
    bytes.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// An Implicit VR LE element with a defined length.
fn implicit_element(tag: Tag, value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&tag.0.to_le_bytes());
    bytes.extend_from_slice(&tag.1.to_le_bytes());
    bytes.extend_from_slice(&u32::try_from(value.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

#[test]
fn a_study_level_identifier_as_scus_send_it() {
    let query = query(
        Level::Study,
        &[
            (tags::PATIENT_NAME, "DOE*"),
            (tags::PATIENT_ID, ""),
            (tags::STUDY_DATE, "20240101-20240131"),
            (tags::STUDY_INSTANCE_UID, ""),
            (tags::MODALITIES_IN_STUDY, ""),
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, ""),
            (tags::RETRIEVE_AE_TITLE, ""),
            (Tag(0x0008, 0x0080), "General*"),
        ],
    );
    assert_eq!(query.level(), Level::Study);
    assert!(query.charset().is_default());
    assert_eq!(query.keys().len(), 8);
    let name = query.key(tags::PATIENT_NAME).unwrap();
    assert_eq!(
        (name.vr, name.level, name.key_type),
        (Vr::PN, Some(Level::Study), Some(KeyType::Required))
    );
    assert!(!name.is_universal());
    assert!(query.key(tags::PATIENT_ID).unwrap().is_universal());
    assert!(
        query
            .key(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
            .unwrap()
            .computed
    );
    assert_eq!(
        query.key(tags::RETRIEVE_AE_TITLE).unwrap().ignored,
        Some(Ignored::ReturnedByScp)
    );
    // Institution Name is outside the key table: known VR, unknown level.
    let institution = query.key(Tag(0x0008, 0x0080)).unwrap();
    assert_eq!(
        (institution.vr, institution.keyword, institution.level),
        (Vr::LO, "InstitutionName", None)
    );
    // An index holding everything but Institution Name answers FF01 for it.
    let holds = |tag: Tag| tag != Tag(0x0008, 0x0080);
    assert_eq!(query.unsupported_keys(&holds), vec![Tag(0x0008, 0x0080)]);
    let constraints: Vec<Tag> = query.constraints().map(|(key, _)| key.tag).collect();
    assert_eq!(
        constraints,
        vec![tags::STUDY_DATE, Tag(0x0008, 0x0080), tags::PATIENT_NAME]
    );
}

#[test]
fn refusals_carry_status_reason_and_offending_element() {
    let context = study_root_find();
    let a900 = Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS;
    let c000 = Status::CANNOT_UNDERSTAND;
    let level = |value: &str| explicit_element(tags::QUERY_RETRIEVE_LEVEL, b"CS", value.as_bytes());
    // case, identifier, status, offending element, reason
    type Refusal = (&'static str, Vec<u8>, Status, Option<Tag>, &'static str);
    let cases: Vec<Refusal> = vec![
        (
            "no level",
            explicit_element(tags::PATIENT_ID, b"LO", b"P1"),
            a900,
            Some(tags::QUERY_RETRIEVE_LEVEL),
            "Query/Retrieve Level (0008,0052) is missing",
        ),
        (
            "unknown level",
            level("FRAME "),
            a900,
            Some(tags::QUERY_RETRIEVE_LEVEL),
            "\"FRAME\" is not PATIENT",
        ),
        (
            "PATIENT in Study Root",
            level("PATIENT "),
            a900,
            Some(tags::QUERY_RETRIEVE_LEVEL),
            "not in the Study Root model",
        ),
        (
            "odd length",
            [
                level("STUDY "),
                explicit_element(tags::PATIENT_ID, b"LO", b"ABC"),
            ]
            .concat(),
            c000,
            Some(tags::PATIENT_ID),
            "PatientID (0010,0020) has an odd length (3 bytes)",
        ),
        (
            "wrong VR",
            [
                level("STUDY "),
                explicit_element(tags::PATIENT_NAME, b"LO", b"DOE*"),
            ]
            .concat(),
            a900,
            Some(tags::PATIENT_NAME),
            "PatientName (0010,0010) has VR LO, expected PN",
        ),
        (
            "bad date",
            [
                level("STUDY "),
                explicit_element(tags::STUDY_DATE, b"DA", b"2024-13 "),
            ]
            .concat(),
            a900,
            Some(tags::STUDY_DATE),
            "StudyDate (0008,0020) \"2024-13\": not a valid date",
        ),
        (
            "wild card in a UID",
            [
                level("STUDY "),
                explicit_element(tags::STUDY_INSTANCE_UID, b"UI", b"1.2.3*"),
            ]
            .concat(),
            a900,
            Some(tags::STUDY_INSTANCE_UID),
            "wild cards are not allowed in UIDs",
        ),
        (
            "unknown character set",
            [
                explicit_element(tags::SPECIFIC_CHARACTER_SET, b"CS", b"ISO_IR 999"),
                level("STUDY "),
            ]
            .concat(),
            c000,
            Some(tags::SPECIFIC_CHARACTER_SET),
            "Specific Character Set not supported",
        ),
        (
            "cut short",
            [
                level("STUDY "),
                explicit_element(tags::PATIENT_ID, b"LO", b"P1")[..9].to_vec(),
            ]
            .concat(),
            c000,
            None,
            "identifier cannot be parsed",
        ),
    ];
    for (case, bytes, status, offending, reason) in cases {
        let error = Query::decode(&bytes, EXPLICIT, &context).expect_err(case);
        assert_eq!(error.status(), status, "{case}: {error}");
        assert_eq!(error.offending_element(), offending, "{case}: {error}");
        assert!(error.to_string().contains(reason), "{case}: {error}");
    }
}

#[test]
fn a_sequence_key_has_one_item_at_most() {
    let item = sluice_net::query::builder::item(&[(tags::CODE_VALUE, "X")]);
    let mut identifier = IdentifierBuilder::new(Level::Study).dataset().clone();
    identifier.put_sequence(tags::PROCEDURE_CODE_SEQUENCE, vec![item.clone(), item]);
    let bytes = identifier.encode(IMPLICIT).unwrap();
    let error = Query::decode(&bytes, IMPLICIT, &study_root_find()).unwrap_err();
    assert!(
        matches!(error, IdentifierError::SequenceItems { items: 2, .. }),
        "{error}"
    );
    assert_eq!(error.status(), Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS);
}

#[test]
fn hierarchical_queries_need_the_unique_keys_above() {
    let context = study_root_find();
    // Study Root SERIES: Study Instance UID, one value.
    let error = decode(&context, Level::Series, &[(tags::MODALITY, "CT")]).unwrap_err();
    assert!(
        matches!(error, IdentifierError::MissingUniqueKey { tag, level: Level::Series, .. } if tag == tags::STUDY_INSTANCE_UID)
    );
    assert_eq!(error.status(), Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS);
    assert_eq!(
        error.to_string(),
        "a hierarchical SERIES request needs StudyInstanceUID (0020,000D) with a single value"
    );
    let error = decode(
        &context,
        Level::Series,
        &[(tags::STUDY_INSTANCE_UID, "1.2\\1.3")],
    )
    .unwrap_err();
    assert!(matches!(error, IdentifierError::MissingUniqueKey { .. }));
    assert!(decode(
        &context,
        Level::Series,
        &[(tags::STUDY_INSTANCE_UID, "1.2")]
    )
    .is_ok());
    // Study Root IMAGE: study and series.
    let error = decode(&context, Level::Image, &[(tags::STUDY_INSTANCE_UID, "1.2")]).unwrap_err();
    assert!(
        matches!(error, IdentifierError::MissingUniqueKey { tag, .. } if tag == tags::SERIES_INSTANCE_UID)
    );
    // Patient Root STUDY: Patient ID, a single value (no wild card).
    let patient_root = patient_root(Operation::Find);
    let error = decode(&patient_root, Level::Study, &[(tags::PATIENT_ID, "P*")]).unwrap_err();
    assert!(
        matches!(error, IdentifierError::MissingUniqueKey { tag, .. } if tag == tags::PATIENT_ID)
    );
    let study = decode(
        &patient_root,
        Level::Study,
        &[(tags::PATIENT_ID, "P1"), (tags::PATIENT_NAME, "")],
    )
    .unwrap();
    assert_eq!(
        study.key(tags::PATIENT_NAME).unwrap().level,
        Some(Level::Patient)
    );
    assert!(decode(&patient_root, Level::Patient, &[(tags::PATIENT_NAME, "D*")]).is_ok());
    // Relational queries (negotiated): no unique keys needed above.
    let relational = context.with_find_negotiation(&FindNegotiation {
        relational_queries: true,
        ..FindNegotiation::default()
    });
    let series = decode(
        &relational,
        Level::Series,
        &[(tags::PATIENT_NAME, "DOE*"), (tags::MODALITY, "CT")],
    )
    .unwrap();
    assert_eq!(
        series.key(tags::PATIENT_NAME).unwrap().level,
        Some(Level::Study)
    );
    let relational_image = patient_root.with_find_negotiation(&FindNegotiation {
        relational_queries: true,
        ..FindNegotiation::default()
    });
    assert!(decode(
        &relational_image,
        Level::Image,
        &[(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2")]
    )
    .is_ok());
}

#[test]
fn keys_the_scp_cannot_use_are_kept_and_marked() {
    let query = query(
        Level::Study,
        &[
            (tags::MODALITY, "CT"),
            (tags::SERIES_INSTANCE_UID, ""),
            (Tag(0x0009, 0x0010), "ACME"),
            (Tag(0x0009, 0x1001), "x"),
            (Tag(0x0028, 0x0010), "512"),
        ],
    );
    let ignored = |tag: Tag| query.key(tag).unwrap().ignored;
    assert_eq!(ignored(tags::MODALITY), Some(Ignored::BelowQueryLevel));
    assert_eq!(
        ignored(tags::SERIES_INSTANCE_UID),
        Some(Ignored::BelowQueryLevel)
    );
    assert_eq!(ignored(Tag(0x0009, 0x1001)), Some(Ignored::Private));
    assert_eq!(ignored(Tag(0x0028, 0x0010)), Some(Ignored::BelowQueryLevel));
    // They constrain nothing...
    let stored = Stored::new(&[(tags::MODALITY, "MR")]);
    assert!(query.matches(&stored.candidate()));
    // ...and make FF01, the universal one too: the SCP returns it empty.
    let unsupported = query.unsupported_keys(&|_| true);
    assert_eq!(
        unsupported,
        vec![
            tags::MODALITY,
            Tag(0x0009, 0x0010),
            Tag(0x0009, 0x1001),
            tags::SERIES_INSTANCE_UID,
            Tag(0x0028, 0x0010)
        ]
    );
    // A binary VR with a value at its own level cannot be matched.
    let relational = study_root_find().with_find_negotiation(&FindNegotiation {
        relational_queries: true,
        ..FindNegotiation::default()
    });
    let image = decode(&relational, Level::Image, &[(Tag(0x0028, 0x0010), "512")]).unwrap();
    assert_eq!(
        image.key(Tag(0x0028, 0x0010)).unwrap().ignored,
        Some(Ignored::NotMatchable)
    );
}

#[test]
fn retrieve_identifiers_carry_the_unique_keys() {
    let context = study_root(Operation::Move);
    let study = decode(
        &context,
        Level::Study,
        &[
            (tags::STUDY_INSTANCE_UID, "1.2.3\\1.2.4"),
            (tags::PATIENT_NAME, "DOE"),
        ],
    )
    .unwrap();
    let unique = study.unique_keys();
    assert_eq!(unique.level, Level::Study);
    assert_eq!(unique.study_instance_uids, ["1.2.3", "1.2.4"]);
    assert!(unique.series_instance_uids.is_empty());
    assert_eq!(
        study.key(tags::PATIENT_NAME).unwrap().ignored,
        Some(Ignored::NotARetrieveKey)
    );
    let error = decode(&context, Level::Study, &[(tags::PATIENT_ID, "P1")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "a STUDY retrieve needs StudyInstanceUID (0020,000D)"
    );
    assert_eq!(error.offending_element(), Some(tags::STUDY_INSTANCE_UID));
    // Hierarchical IMAGE retrieve: study, series, then a list of instances.
    let get = study_root(Operation::Get);
    let image = decode(
        &get,
        Level::Image,
        &[
            (tags::STUDY_INSTANCE_UID, "1.2"),
            (tags::SERIES_INSTANCE_UID, "1.2.1"),
            (tags::SOP_INSTANCE_UID, "1.2.1.1\\1.2.1.2\\1.2.1.3"),
        ],
    )
    .unwrap();
    assert_eq!(image.unique_keys().sop_instance_uids.len(), 3);
    assert!(decode(&get, Level::Image, &[(tags::SOP_INSTANCE_UID, "1.2.1.1")]).is_err());
    let relational = get.with_retrieve_negotiation(&RetrieveNegotiation {
        relational_retrieval: true,
        ..RetrieveNegotiation::default()
    });
    assert!(decode(
        &relational,
        Level::Image,
        &[(tags::SOP_INSTANCE_UID, "1.2.1.1")]
    )
    .is_ok());
    // Patient Root PATIENT: one Patient ID, no wild card.
    let patient = patient_root(Operation::Move);
    let moved = decode(&patient, Level::Patient, &[(tags::PATIENT_ID, "P1 ")]).unwrap();
    assert_eq!(moved.unique_keys().patient_id, Some("P1"));
    assert!(decode(&patient, Level::Patient, &[(tags::PATIENT_ID, "P*")]).is_err());
}

#[test]
fn implicit_vr_sequences_with_defined_lengths_and_group_lengths() {
    // Procedure Code Sequence, defined length, one defined-length item: in
    // Implicit VR only the dictionary says it is a sequence.
    let code_value = implicit_element(tags::CODE_VALUE, b"RPID16");
    let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
    item.extend_from_slice(&u32::try_from(code_value.len()).unwrap().to_le_bytes());
    item.extend_from_slice(&code_value);
    let bytes = [
        implicit_element(Tag(0x0008, 0x0000), &16u32.to_le_bytes()),
        implicit_element(tags::QUERY_RETRIEVE_LEVEL, b"STUDY "),
        implicit_element(tags::PROCEDURE_CODE_SEQUENCE, &item),
        implicit_element(tags::TIMEZONE_OFFSET_FROM_UTC, b"+0100"),
    ]
    .concat();
    let query = Query::decode(&bytes, IMPLICIT, &study_root_find()).unwrap();
    let sequence = query.key(tags::PROCEDURE_CODE_SEQUENCE).unwrap();
    assert_eq!(sequence.vr, Vr::SQ);
    let items = sequence.item_keys().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].tag, items[0].value.as_str()),
        (tags::CODE_VALUE, "RPID16")
    );
    assert_eq!(query.timezone_offset(), Some("+0100"));
    assert!(query.key(Tag(0x0008, 0x0000)).is_none());
}

#[test]
fn decoding_is_bounded() {
    let mut context = study_root_find();
    context.limits.length_max = 64;
    let long = "1.2.3\\".repeat(20);
    let error = decode(&context, Level::Study, &[(tags::STUDY_INSTANCE_UID, &long)]).unwrap_err();
    assert!(matches!(
        error,
        IdentifierError::Malformed(DatasetError::TooLong { .. })
    ));
    // Sequences nested past the limit.
    let mut item = SmallDataset::new();
    for _ in 0..8 {
        let mut outer = SmallDataset::new();
        outer.put_sequence(tags::PROCEDURE_CODE_SEQUENCE, vec![item]);
        item = outer;
    }
    let mut identifier = IdentifierBuilder::new(Level::Study).dataset().clone();
    identifier.put_sequence(tags::PROCEDURE_CODE_SEQUENCE, vec![item]);
    let bytes = identifier.encode(EXPLICIT).unwrap();
    let error = Query::decode(&bytes, EXPLICIT, &study_root_find()).unwrap_err();
    assert!(
        matches!(
            error,
            IdentifierError::Malformed(DatasetError::TooDeep { .. })
        ),
        "{error}"
    );
}

/// PS3.5 H.3.2: the same name with its alphabetic group in JIS X 0201
/// katakana (ISO 2022 IR 13).
const YAMADA_IR_13_87: &[u8] = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
const YAMADA: &str = "Yamada^Tarou=山田^太郎=やまだ^たろう";

fn name_query(term: &str, name: &[u8], encoding: SmallDatasetEncoding) -> Query {
    let bytes = IdentifierBuilder::new(Level::Study)
        .character_set(term)
        .key_bytes(tags::PATIENT_NAME, name.to_vec())
        .encode(encoding)
        .unwrap();
    Query::decode(&bytes, encoding, &study_root_find()).unwrap()
}

fn stored_name(term: &str, name: &[u8]) -> Stored {
    Stored::encoded(term, &[(tags::PATIENT_NAME, name)])
}

#[test]
fn japanese_requests_match_names_stored_in_any_character_set() {
    for encoding in [IMPLICIT, EXPLICIT] {
        let full = name_query("\\ISO 2022 IR 87", YAMADA_IR_87, encoding);
        assert_eq!(full.key(tags::PATIENT_NAME).unwrap().value, YAMADA);
        assert_eq!(full.charset().term(), b"\\ISO 2022 IR 87");
        let katakana = name_query("ISO 2022 IR 13\\ISO 2022 IR 87", YAMADA_IR_13_87, encoding);
        assert_eq!(
            katakana.key(tags::PATIENT_NAME).unwrap().value,
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        );
        // 山田* alone, in JIS X 0208: the ideographic group of any name.
        let family = name_query("\\ISO 2022 IR 87", b"\x1b$B;3ED\x1b(B*", encoding);
        assert_eq!(family.key(tags::PATIENT_NAME).unwrap().value, "山田*");
        let stored = [
            stored_name("\\ISO 2022 IR 87", YAMADA_IR_87),
            stored_name("ISO_IR 192", YAMADA.as_bytes()),
            stored_name("ISO 2022 IR 13\\ISO 2022 IR 87", YAMADA_IR_13_87),
        ];
        for entity in &stored {
            assert!(
                family.matches(&entity.candidate()),
                "{:?}",
                entity.candidate()
            );
        }
        // Keys with "=" match group by group: the katakana-stored name
        // differs in its alphabetic group.
        let outcomes = |query: &Query| {
            stored
                .iter()
                .map(|entity| query.matches(&entity.candidate()))
                .collect::<Vec<_>>()
        };
        assert_eq!(outcomes(&full), [true, true, false]);
        assert_eq!(outcomes(&katakana), [false, false, true]);
        let other = stored_name("ISO_IR 192", "Tanaka^Hanako=田中^花子".as_bytes());
        assert!(!family.matches(&other.candidate()));
    }
}

#[test]
fn utf8_and_latin1_requests() {
    let chinese = name_query("ISO_IR 192", "Wang^XiaoDong=王^小東".as_bytes(), EXPLICIT);
    assert_eq!(
        chinese.key(tags::PATIENT_NAME).unwrap().value,
        "Wang^XiaoDong=王^小東"
    );
    assert!(chinese
        .matches(&stored_name("ISO_IR 192", "Wang^XiaoDong=王^小東=".as_bytes()).candidate()));
    // PS3.5 J.3: the simplified form in GB18030 is another name.
    let simplified = name_query("ISO_IR 192", "Wang^XiaoDong=王^小东".as_bytes(), EXPLICIT);
    let stored_gb18030 = stored_name("GB18030", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=");
    assert!(simplified.matches(&stored_gb18030.candidate()));
    assert!(!chinese.matches(&stored_gb18030.candidate()));
    let latin = name_query("ISO_IR 100", b"Buc^J\xe9r*", IMPLICIT);
    assert_eq!(latin.key(tags::PATIENT_NAME).unwrap().value, "Buc^Jér*");
    assert!(latin.matches(&stored_name("ISO_IR 192", "Buc^Jérôme".as_bytes()).candidate()));
    assert!(latin.matches(&stored_name("ISO_IR 100", b"Buc^J\xe9r\xf4me").candidate()));
    assert!(!latin.matches(&stored_name("ISO_IR 100", b"Buc^Jerome").candidate()));
}
