//! C-FIND by Patient's Name end to end, exact (the default) and
//! case-insensitive (`query.person_name_matching`), at STUDY level (Study
//! Root) and PATIENT level (Patient Root): DCMTK findscu with UTF-8 keys and
//! pynetdicom with ISO 8859-1, ISO 2022 IR 87 and UTF-8 keys, against names
//! stored in ISO 8859-1 (two patients whose names differ only in case), ISO
//! 2022 IR 87 and UTF-8 (tests/fixtures/qr_corpus.py `--names`).

use sluice_tests::{python_peer, PeerOutput};

use crate::qr_corpus::{corpus_with_names, store_instances, AE, PEER_TIMEOUT};
use crate::query::findscu;
use crate::serve::Served;

fn served(extra: &[&str]) -> (Served, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let instances = corpus_with_names(&files.path().join("corpus"));
    let mut flags = vec!["--transfer-syntaxes", "all"];
    flags.extend_from_slice(extra);
    let served = Served::start("uring", &flags);
    store_instances(served.port, &instances);
    (served, files)
}

/// The Patient IDs of the answers (one per answer, sorted).
fn patient_ids<'a>(answers: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ids: Vec<String> = answers
        .flat_map(|answer| answer.split("\"PatientID\": \"").skip(1))
        .filter_map(|rest| rest.split_once('"').map(|(id, _)| id.to_owned()))
        .collect();
    ids.sort();
    ids
}

/// findscu at `level` by a UTF-8 name: Study Root for STUDY, Patient Root
/// for PATIENT.
fn findscu_by_name(port: u16, level: &str, name: &str) -> Vec<String> {
    let root = if level == "PATIENT" { "-P" } else { "-S" };
    let (answers, log) = findscu(
        port,
        &[
            root,
            "-k",
            &format!("QueryRetrieveLevel={level}"),
            "-k",
            "SpecificCharacterSet=ISO_IR 192",
            "-k",
            &format!("PatientName={name}"),
            "-k",
            "PatientID",
        ],
    );
    assert!(
        log.contains("Received Final Find Response (Success)"),
        "{log}"
    );
    patient_ids(answers.iter().map(String::as_str))
}

/// pynetdicom at `level` by a name pydicom encodes in `charset`.
fn pynetdicom_by_name(
    port: u16,
    level: &str,
    name: &str,
    charset: &str,
) -> (Vec<String>, PeerOutput) {
    let model = if level == "PATIENT" {
        "patient"
    } else {
        "study"
    };
    let keys = format!(
        r#"{{"QueryRetrieveLevel": "{level}", "PatientName": "{name}", "PatientID": null}}"#
    );
    let port = port.to_string();
    let result = python_peer(
        "qr_scu.py",
        &[
            "find",
            &port,
            AE,
            "PYFIND",
            model,
            &keys,
            "--charset",
            charset,
        ],
        PEER_TIMEOUT,
    );
    assert_eq!(
        result.string("status_hex").as_deref(),
        Some("0000"),
        "{result:?}"
    );
    let answers = result
        .0
        .split_once("\"answers\": [")
        .map_or("", |(_, rest)| rest);
    (patient_ids(std::iter::once(answers)), result)
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| id.to_string()).collect()
}

#[test]
fn exact_and_case_insensitive_names_at_study_and_patient_level() {
    let (exact, _files) = served(&[]);
    let port = exact.port;
    assert_eq!(
        findscu_by_name(port, "STUDY", "MÜLLER*"),
        ids(&["QR-PAT-L", "QR-PAT-L"])
    );
    assert_eq!(findscu_by_name(port, "STUDY", "müller*"), ids(&[]));
    assert_eq!(
        findscu_by_name(port, "PATIENT", "MÜLLER*"),
        ids(&["QR-PAT-L"])
    );
    assert_eq!(findscu_by_name(port, "PATIENT", "DOE*"), ids(&[]));
    let (found, _) = pynetdicom_by_name(port, "STUDY", "Müller*", "ISO_IR 100");
    assert_eq!(found, ids(&["QR-PAT-M"]));
    let (found, _) = pynetdicom_by_name(port, "PATIENT", "müller*", "ISO_IR 100");
    assert_eq!(found, ids(&[]));
    let (found, _) = pynetdicom_by_name(port, "STUDY", "yamada*", "ISO_IR 192");
    assert_eq!(found, ids(&[]));
    drop(exact);

    let (insensitive, _files) = served(&["--query-person-name-matching", "case-insensitive"]);
    let port = insensitive.port;
    assert_eq!(
        findscu_by_name(port, "STUDY", "müller*"),
        ids(&["QR-PAT-L", "QR-PAT-L", "QR-PAT-M"])
    );
    assert_eq!(
        findscu_by_name(port, "PATIENT", "MÜLLER^J*"),
        ids(&["QR-PAT-L"])
    );
    assert_eq!(
        findscu_by_name(port, "STUDY", "yamada^tarou"),
        ids(&["QR-PAT-J"])
    );
    assert_eq!(findscu_by_name(port, "PATIENT", "DOE*"), ids(&["QR-PAT-A"]));
    let (found, _) = pynetdicom_by_name(port, "STUDY", "m?ller*", "ISO_IR 100");
    assert_eq!(found, ids(&["QR-PAT-L", "QR-PAT-L", "QR-PAT-M"]));
    // The answers carry the names as stored (ISO 8859-1, decoded).
    let (found, result) = pynetdicom_by_name(port, "PATIENT", "müller*", "ISO_IR 100");
    assert_eq!(found, ids(&["QR-PAT-L", "QR-PAT-M"]));
    assert!(
        result.has("M\\u00dcLLER^J\\u00dcRGEN") && result.has("M\\u00fcller^Anna"),
        "{result:?}"
    );
    let (found, _) = pynetdicom_by_name(port, "PATIENT", "やまだ*", "\\ISO 2022 IR 87");
    assert_eq!(found, ids(&["QR-PAT-J"]));
    let (found, _) = pynetdicom_by_name(port, "STUDY", "王*", "ISO_IR 192");
    assert_eq!(found, ids(&["QR-PAT-U"]));
}
