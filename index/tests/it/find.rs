//! Query/Retrieve's `ReadTxn::find`: entities of every level, matched by
//! net's rules over the records, and the same set whether read in one page
//! or in pages of any size (never a duplicate, never a gap).

use std::collections::BTreeSet;

use sluice_index::{FindBudget, FindMatch, ReadTxn};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::query::model::tags;
use sluice_net::query::{
    IdentifierBuilder, InformationModel, Level, Operation, Query, QueryContext,
};

use crate::common::{open, series_attributes, store, study_attributes};

const STUDIES: u32 = 12;
const SERIES_PER_STUDY: u32 = 3;
const INSTANCES_PER_SERIES: u32 = 4;

fn query(model: InformationModel, relational: bool, builder: IdentifierBuilder) -> Query {
    let mut context = QueryContext::new(model, Operation::Find);
    context.relational = relational;
    let bytes = builder
        .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
        .expect("encode");
    Query::decode(
        &bytes,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
        &context,
    )
    .expect("decode")
}

/// The entity a match names, as one string.
fn name(found: &FindMatch) -> String {
    match found.level {
        Level::Patient => found.patient.as_ref().expect("patient").patient_id.clone(),
        Level::Study => found.study_instance_uid().expect("study").to_owned(),
        Level::Series => found.series_instance_uid().expect("series").to_owned(),
        Level::Image => found
            .instance
            .as_ref()
            .expect("instance")
            .triplet
            .sop_instance_uid
            .clone(),
    }
}

/// Every match, collected over pages of `budget`.
fn all_pages(read: &ReadTxn<'_>, query: &Query, budget: FindBudget) -> Vec<String> {
    let mut names = Vec::new();
    let mut resume = None;
    for _ in 0..10_000 {
        let page = read.find(query, resume.as_ref(), budget).expect("find");
        assert!(page.matches.len() <= budget.matches_max);
        names.extend(page.matches.iter().map(name));
        match page.resume {
            Some(next) => resume = Some(next),
            None => return names,
        }
    }
    panic!("the pages never ended");
}

/// The matches of `query`, checked to be the same in one page and in pages
/// of several sizes, without duplicates.
fn run(read: &ReadTxn<'_>, query: &Query) -> BTreeSet<String> {
    let whole = all_pages(
        read,
        query,
        FindBudget {
            matches_max: 1_000_000,
            scanned_max: 1_000_000,
        },
    );
    let set: BTreeSet<String> = whole.iter().cloned().collect();
    assert_eq!(set.len(), whole.len(), "a duplicate in one page");
    for (matches_max, scanned_max) in [(1, 1), (1, 1000), (1000, 1), (3, 7), (5, 2)] {
        let paged = all_pages(
            read,
            query,
            FindBudget {
                matches_max,
                scanned_max,
            },
        );
        assert_eq!(paged, whole, "pages of {matches_max}/{scanned_max}");
    }
    set
}

struct Stored {
    study: String,
    series: String,
    sop: String,
}

fn stored() -> Vec<Stored> {
    let mut all = Vec::new();
    for study in 0..STUDIES {
        for series in 0..SERIES_PER_STUDY {
            for instance in 0..INSTANCES_PER_SERIES {
                all.push(Stored {
                    study: format!("7.{study}"),
                    series: format!("7.{study}.{series}"),
                    sop: format!("7.{study}.{series}.{instance}"),
                });
            }
        }
    }
    all
}

fn expected(filter: impl Fn(&Stored) -> Option<String>) -> BTreeSet<String> {
    stored().iter().filter_map(filter).collect()
}

#[test]
fn every_level_matches_and_pages_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let ops = stored()
        .iter()
        .enumerate()
        .map(|(n, s)| store(&s.study, &s.series, &s.sop, n as u128 + 1, 1))
        .collect();
    index.writer().execute(ops).expect("store");
    let read = index.read().expect("read");
    let study = |s: &Stored| study_attributes(&s.study);
    let builder = IdentifierBuilder::new;

    // STUDY level by exact Patient ID (a secondary table), by a name
    // wildcard (every study), by a date range, by a UID list.
    let pid = study_attributes("7.4").patient_id;
    let q = query(
        InformationModel::StudyRoot,
        false,
        builder(Level::Study).key(tags::PATIENT_ID, &pid),
    );
    assert_eq!(
        run(&read, &q),
        expected(|s| (study(s).patient_id == pid).then(|| s.study.clone()))
    );
    let q = query(
        InformationModel::StudyRoot,
        false,
        builder(Level::Study)
            .key(tags::PATIENT_NAME, "Name1*")
            .key(tags::PATIENT_ID, "PID*"),
    );
    let by_name = run(&read, &q);
    assert!(!by_name.is_empty());
    assert_eq!(
        by_name,
        expected(|s| study(s)
            .patient_name
            .starts_with("Name1")
            .then(|| s.study.clone()))
    );
    let q = query(
        InformationModel::StudyRoot,
        false,
        builder(Level::Study).key(tags::STUDY_DATE, "20240102-20240104"),
    );
    assert_eq!(
        run(&read, &q),
        expected(|s| ("20240102".."20240105")
            .contains(&study(s).study_date.as_str())
            .then(|| s.study.clone()))
    );
    let q = query(
        InformationModel::StudyRoot,
        false,
        builder(Level::Study).key(tags::STUDY_INSTANCE_UID, "7.3\\7.99\\7.1"),
    );
    assert_eq!(
        run(&read, &q),
        ["7.1", "7.3"].iter().map(|uid| uid.to_string()).collect()
    );

    // SERIES level: hierarchical under one study, and relational by
    // modality across every study.
    let q = query(
        InformationModel::StudyRoot,
        false,
        builder(Level::Series)
            .key(tags::STUDY_INSTANCE_UID, "7.5")
            .key(tags::MODALITY, "CT"),
    );
    assert_eq!(
        run(&read, &q),
        expected(
            |s| (s.study == "7.5" && series_attributes(&s.series).modality == "CT")
                .then(|| s.series.clone())
        )
    );
    let q = query(
        InformationModel::StudyRoot,
        true,
        builder(Level::Series).key(tags::MODALITY, "MR"),
    );
    let mr = run(&read, &q);
    assert!(mr.len() > 1);
    assert_eq!(
        mr,
        expected(|s| (series_attributes(&s.series).modality == "MR").then(|| s.series.clone()))
    );

    // IMAGE level: hierarchical, relational by SOP Instance UIDs alone, and
    // relational by a study key only.
    let q = query(
        InformationModel::StudyRoot,
        false,
        builder(Level::Image)
            .key(tags::STUDY_INSTANCE_UID, "7.2")
            .key(tags::SERIES_INSTANCE_UID, "7.2.1")
            .key(tags::SOP_INSTANCE_UID, ""),
    );
    assert_eq!(
        run(&read, &q),
        expected(|s| (s.series == "7.2.1").then(|| s.sop.clone()))
    );
    let q = query(
        InformationModel::StudyRoot,
        true,
        builder(Level::Image).key(tags::SOP_INSTANCE_UID, "7.9.2.3\\7.0.0.0\\9.9"),
    );
    assert_eq!(
        run(&read, &q),
        ["7.0.0.0", "7.9.2.3"]
            .iter()
            .map(|uid| uid.to_string())
            .collect()
    );
    let q = query(
        InformationModel::StudyRoot,
        true,
        builder(Level::Image).key(
            tags::ACCESSION_NUMBER,
            &study_attributes("7.8").accession_number,
        ),
    );
    let accession = study_attributes("7.8").accession_number;
    assert_eq!(
        run(&read, &q),
        expected(|s| (study(s).accession_number == accession).then(|| s.sop.clone()))
    );

    // PATIENT level (Patient Root): one entity per Patient ID, with counts.
    let q = query(
        InformationModel::PatientRoot,
        false,
        builder(Level::Patient)
            .key(tags::PATIENT_ID, "")
            .key(tags::NUMBER_OF_PATIENT_RELATED_INSTANCES, ""),
    );
    let patients = run(&read, &q);
    assert_eq!(patients, expected(|s| Some(study(s).patient_id)));
    let page = read
        .find(
            &q,
            None,
            FindBudget {
                matches_max: 100,
                scanned_max: 100,
            },
        )
        .expect("find");
    for found in &page.matches {
        let patient = found.patient.as_ref().expect("patient");
        let studies: BTreeSet<String> =
            expected(|s| (study(s).patient_id == patient.patient_id).then(|| s.study.clone()));
        assert_eq!(patient.studies, studies.len() as u64);
        assert_eq!(
            patient.instances,
            studies.len() as u64 * u64::from(SERIES_PER_STUDY * INSTANCES_PER_SERIES)
        );
    }
}

/// Stores one instance of `study` whose Patient's Name is `name`.
fn store_named(study: &str, sop_suffix: u32, name: &str, file_id: u128) -> sluice_index::WriteOp {
    let mut new = crate::common::instance(
        study,
        &format!("{study}.1"),
        &format!("{study}.1.{sop_suffix}"),
        file_id,
        1,
    );
    new.study.patient_name = name.to_owned();
    new.study.patient_id = String::new();
    sluice_index::WriteOp::Store(sluice_index::StoreRequest::new(new))
}

/// Stores one study per `(study, name)`, then `count` filler studies
/// `<prefix>.<n>` named `filler` (file ids from 100).
fn store_names(
    index: &sluice_index::Index,
    names: &[(&str, &str)],
    (prefix, filler, count): (&str, &str, u128),
) {
    let mut ops: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(n, (study, name))| store_named(study, 1, name, n as u128 + 1))
        .collect();
    ops.extend((0..count).map(|n| store_named(&format!("{prefix}.{n}"), 1, filler, 100 + n)));
    index.writer().execute(ops).expect("store");
}

fn by_name(pattern: &str) -> Query {
    query(
        InformationModel::StudyRoot,
        false,
        IdentifierBuilder::new(Level::Study)
            .character_set("ISO_IR 192")
            .key(tags::PATIENT_NAME, pattern),
    )
}

/// STUDY level by Patient's Name goes through `study_by_patient_name`: it
/// looks at the studies whose name can match, not at every study, and finds
/// a study whose several component groups match once, on every page size;
/// the table follows a name filled in later and a study removed.
#[test]
fn patient_name_table_narrows_and_answers_each_study_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let names = [
        ("8.1", "Abc^X=Abd^Y"),
        ("8.2", "Abe^Ken=Abe^Ken"),
        ("8.3", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("8.4", "abx^lower"),
        ("8.5", "Zed^Abc"),
        ("8.6", ""),
    ];
    // Filler studies no name query here matches.
    store_names(&index, &names, ("8.9", "Other^Name", 40));
    let total_studies = names.len() + 40;
    {
        let read = index.read().expect("read");
        let set = |uids: &[&str]| uids.iter().map(|uid| uid.to_string()).collect();
        assert_eq!(run(&read, &by_name("Ab*")), set(&["8.1", "8.2"]));
        assert_eq!(run(&read, &by_name("Abd^Y")), set(&["8.1"]));
        assert_eq!(run(&read, &by_name("山田*")), set(&["8.3"]));
        assert_eq!(run(&read, &by_name("やまだ^たろう")), set(&["8.3"]));
        assert_eq!(run(&read, &by_name("ab*")), set(&["8.4"]));
        assert_eq!(run(&read, &by_name("Zed*")), set(&["8.5"]));
        let page = read
            .find(
                &by_name("Ab*"),
                None,
                FindBudget {
                    matches_max: 1000,
                    scanned_max: 1000,
                },
            )
            .expect("find");
        // `abc`, `abd` (8.1), `abe` (8.2) and `abx` (8.4: the table's keys
        // are folded, the exact comparison is the matcher's).
        assert_eq!(
            page.scanned, 3,
            "the name table narrowed the scan (of {total_studies} studies)"
        );
    }
    // A name filled in by a later instance, and a removed study.
    index
        .writer()
        .execute(vec![
            store_named("8.6", 2, "Late^Comer", 60),
            sluice_index::WriteOp::Remove(sluice_index::Triplet::new("8.2", "8.2.1", "8.2.1.1")),
        ])
        .expect("update");
    let read = index.read().expect("read");
    assert_eq!(
        run(&read, &by_name("Late*")),
        ["8.6".to_string()].into_iter().collect()
    );
    assert_eq!(
        run(&read, &by_name("Ab*")),
        ["8.1".to_string()].into_iter().collect()
    );
    drop(read);
    crate::common::assert_consistent(&index);
}

/// Stores one instance of `study` for patient `patient_id` named `name`.
fn store_patient(
    study: &str,
    name: &str,
    patient_id: &str,
    file_id: u128,
) -> sluice_index::WriteOp {
    let mut new = crate::common::instance(
        study,
        &format!("{study}.1"),
        &format!("{study}.1.1"),
        file_id,
        1,
    );
    new.study.patient_name = name.to_owned();
    new.study.patient_id = patient_id.to_owned();
    sluice_index::WriteOp::Store(sluice_index::StoreRequest::new(new))
}

/// A query at `level` (Patient Root at PATIENT level, Study Root else) by a
/// Patient's Name encoded in `character_set`, optionally with a Patient ID
/// key, exact or case-insensitive.
fn name_query(
    level: Level,
    (character_set, name): (&str, Vec<u8>),
    patient_id: Option<&str>,
    case_insensitive: bool,
) -> Query {
    let model = match level {
        Level::Patient => InformationModel::PatientRoot,
        _ => InformationModel::StudyRoot,
    };
    let mut context = QueryContext::new(model, Operation::Find);
    context.options.person_name_case_insensitive = case_insensitive;
    let mut builder = IdentifierBuilder::new(level)
        .character_set(character_set)
        .key_bytes(tags::PATIENT_NAME, name);
    if let Some(patient_id) = patient_id {
        builder = builder.key(tags::PATIENT_ID, patient_id);
    }
    let bytes = builder
        .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
        .expect("encode");
    Query::decode(
        &bytes,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
        &context,
    )
    .expect("decode")
}

/// A name query row: the key in its character set, case-insensitive or not,
/// and what it finds.
type NameRow = ((&'static str, Vec<u8>), bool, BTreeSet<String>);

fn utf8(name: &str) -> (&'static str, Vec<u8>) {
    ("ISO_IR 192", name.as_bytes().to_vec())
}

/// ISO 8859-1 (`ISO_IR 100`) bytes of a Latin-1 name.
fn latin1(name: &str) -> (&'static str, Vec<u8>) {
    let bytes = name
        .chars()
        .map(|character| u8::try_from(u32::from(character)).expect("Latin-1"))
        .collect();
    ("ISO_IR 100", bytes)
}

/// Case-insensitive name queries use the (folded) name table at STUDY and
/// PATIENT level, exact ones still compare exactly, and both agree with
/// the same query answered without the table: names in UTF-8, ISO 8859-1
/// and ISO 2022 IR 87 (JIS X 0208), Greek with its final sigma.
#[test]
fn case_insensitive_names_use_the_name_table_at_study_and_patient_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let named = [
        ("9.1", "MÜLLER^JÜRGEN", "PIDM"),
        ("9.2", "Müller^Jürgen", "PIDM"),
        ("9.3", "müller^anna", "PIDA"),
        ("9.4", "Yamada^Tarou=山田^太郎=やまだ^たろう", "PIDY"),
        ("9.5", "ΟΔΥΣΣΕΥΣ^ΝΙΚΟΣ", "PIDG"),
        ("9.6", "Mueller^Hans", "PIDH"),
    ];
    let mut ops: Vec<_> = named
        .iter()
        .enumerate()
        .map(|(n, (study, name, pid))| store_patient(study, name, pid, n as u128 + 1))
        .collect();
    ops.extend((0..40).map(|n| {
        store_patient(
            &format!("9.9.{n}"),
            "Other^Name",
            &format!("PIDO{n}"),
            100 + n,
        )
    }));
    index.writer().execute(ops).expect("store");
    let read = index.read().expect("read");
    let set = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<BTreeSet<_>>();
    let scanned = |query: &Query| {
        read.find(
            query,
            None,
            FindBudget {
                matches_max: 1000,
                scanned_max: 1000,
            },
        )
        .expect("find")
        .scanned
    };
    // ISO 2022 IR 87: `山田` in JIS X 0208 between ESC $ B and ESC ( B.
    let jis = |tail: &[u8]| {
        let mut bytes = b"\x1b$B\x3b\x33\x45\x44\x1b(B".to_vec();
        bytes.extend_from_slice(tail);
        ("\\ISO 2022 IR 87", bytes)
    };
    #[rustfmt::skip]
    let study_rows: Vec<NameRow> = vec![
        (latin1("Müller*"), false, set(&["9.2"])),
        (latin1("Müller*"), true, set(&["9.1", "9.2", "9.3"])),
        (latin1("MÜLLER^JÜRGEN"), false, set(&["9.1"])),
        (latin1("müller^jürgen"), true, set(&["9.1", "9.2"])),
        (utf8("m?ller^j*"), true, set(&["9.1", "9.2"])),
        (utf8("m?ller^j*"), false, set(&[])),
        (utf8("MU*"), true, set(&["9.6"])),
        (utf8("YAMADA*"), true, set(&["9.4"])),
        (utf8("YAMADA*"), false, set(&[])),
        (jis(b"*"), true, set(&["9.4"])),
        (jis(b"^*"), false, set(&["9.4"])),
        (utf8("やまだ^たろう"), true, set(&["9.4"])),
        (utf8("οδυσσευς*"), true, set(&["9.5"])),
        (utf8("Οδυσσευς^Νικος"), true, set(&["9.5"])),
        (utf8("οδυσσευς*"), false, set(&[])),
    ];
    for (name, case_insensitive, expected) in &study_rows {
        let query = name_query(Level::Study, name.clone(), None, *case_insensitive);
        assert_eq!(&run(&read, &query), expected, "{name:?} {case_insensitive}");
        // The table narrowed the scan: no more studies looked at than
        // names start with the key's first letter (of 46).
        assert!(scanned(&query) <= 4, "{name:?} {case_insensitive}");
        // The same query where Patient ID plans the scan (the name is then
        // only matched): the same studies.
        let unplanned = name_query(Level::Study, name.clone(), Some("PID*"), *case_insensitive);
        assert_eq!(
            &run(&read, &unplanned),
            expected,
            "{name:?} {case_insensitive}"
        );
    }
    #[rustfmt::skip]
    let patient_rows: Vec<NameRow> = vec![
        // PIDM's attributes are its first study's (9.1, `MÜLLER^JÜRGEN`).
        (latin1("Müller*"), true, set(&["PIDM", "PIDA"])),
        (latin1("MÜLLER*"), false, set(&["PIDM"])),
        (latin1("Müller*"), false, set(&[])),
        (utf8("m?ller^j*"), true, set(&["PIDM"])),
        (jis(b"*"), true, set(&["PIDY"])),
        (utf8("yamada^tarou"), true, set(&["PIDY"])),
        (utf8("οδυσσευσ*"), true, set(&["PIDG"])),
    ];
    for (name, case_insensitive, expected) in &patient_rows {
        let query = name_query(Level::Patient, name.clone(), None, *case_insensitive);
        assert_eq!(&run(&read, &query), expected, "{name:?} {case_insensitive}");
        assert!(scanned(&query) <= 4, "{name:?} {case_insensitive}");
        let unplanned = name_query(
            Level::Patient,
            name.clone(),
            Some("PID*"),
            *case_insensitive,
        );
        assert_eq!(
            &run(&read, &unplanned),
            expected,
            "{name:?} {case_insensitive}"
        );
    }
    // The patient is summarised over both its studies, whichever name found it.
    let page = read
        .find(
            &name_query(Level::Patient, utf8("müller^jürgen"), None, true),
            None,
            FindBudget {
                matches_max: 10,
                scanned_max: 10,
            },
        )
        .expect("find");
    let [found] = page.matches.as_slice() else {
        panic!("one patient: {:?}", page.matches);
    };
    let patient = found.patient.as_ref().expect("patient");
    assert_eq!((patient.patient_id.as_str(), patient.studies), ("PIDM", 2));
    drop(read);
    crate::common::assert_consistent(&index);
}

/// The embedding API's `StudyQuery` plans as C-FIND does: a name wildcard
/// goes through `study_by_patient_name` (answers in the folded names'
/// order, not the Study Instance UIDs'), with the answers of a
/// case-insensitive C-FIND, and of an exact one where the case is right.
#[test]
fn study_query_uses_the_c_find_planner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = open(dir.path());
    let names = [
        ("9.1", "Moz^Last"),
        ("9.2", "Moa^First"),
        ("9.3", "MOM^Middle"),
        ("9.4", "Other^Name"),
    ];
    store_names(&index, &names, ("9.9", "Filler^Name", 20));
    let read = index.read().expect("read");
    let study_query = |pattern: &str| -> Vec<String> {
        read.query_studies(
            &sluice_index::StudyQuery {
                patient_name: Some(pattern.to_owned()),
                ..Default::default()
            },
            100,
        )
        .expect("query studies")
        .items
        .into_iter()
        .map(|study| study.study_instance_uid)
        .collect()
    };
    let c_find = |pattern: &str, case_insensitive: bool| -> Vec<String> {
        let mut context = QueryContext::new(InformationModel::StudyRoot, Operation::Find);
        context.options.person_name_case_insensitive = case_insensitive;
        let bytes = IdentifierBuilder::new(Level::Study)
            .character_set("ISO_IR 192")
            .key(tags::PATIENT_NAME, pattern)
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .expect("encode");
        let query = Query::decode(
            &bytes,
            SmallDatasetEncoding::ExplicitVrLittleEndian,
            &context,
        )
        .expect("decode");
        all_pages(
            &read,
            &query,
            FindBudget {
                matches_max: 1000,
                scanned_max: 1000,
            },
        )
    };
    // moa, mom, moz: the name table's order.
    let folded_order = ["9.2", "9.3", "9.1"].map(String::from).to_vec();
    assert_eq!(study_query("mo*"), folded_order);
    assert_eq!(study_query("MO*"), folded_order);
    assert_eq!(study_query("mo*"), c_find("mo*", true));
    assert_eq!(
        c_find("Mo*", false),
        ["9.2", "9.1"].map(String::from).to_vec()
    );
    assert_eq!(study_query("Moz^Last"), c_find("Moz^Last", false));
    assert_eq!(study_query("moz^last"), ["9.1".to_string()].to_vec());
    // Without a name key the walk is the Study Instance UIDs' (all 24).
    let all = read
        .query_studies(&sluice_index::StudyQuery::default(), 100)
        .expect("all");
    assert_eq!(all.items.len(), 24);
    assert!(!all.truncated);
    let limited = read
        .query_studies(&sluice_index::StudyQuery::default(), 5)
        .expect("limited");
    assert_eq!(limited.items.len(), 5);
    assert!(limited.truncated);
}
