//! The smaller protocol defects of issue #19 (item 9): what a rejection
//! says in the log, what the server does with bytes after it aborted and
//! with P-DATA on a context never proposed, the Implementation Class UID
//! and the seal's creator UID it writes, and the level of start-up
//! recovery's summary.

use serde_json::json;
use sluice_tests::part10_meta_value;

use crate::answers::raw_scu;
use crate::serve::Served;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Sluice's Implementation Class UID root: a UUID-derived UID (ISO/IEC
/// 9834-8, PS3.5 B.2), not the placeholder `1.2.826.0.1.3680043.10.1234`.
const ROOT: &str = "2.25.162214243095143185867674759057077105243";

#[test]
fn rejections_say_which_contexts_were_refused_and_why() {
    let served = Served::start("auto", &[]);
    // The called AE title is not served.
    let out = raw_scu(
        served.port,
        &json!({"called": "NOT_SLUICE", "stores": [], "contexts": [[CT, EXPLICIT_LE]]}),
    );
    assert_eq!(out["rejected"], json!([1, 1, 7]), "{out}");
    // The seed's misprinted CT Image Storage UID, alone: no context is
    // acceptable.
    let out = raw_scu(
        served.port,
        &json!({"stores": [], "contexts": [["1.2.840.10008.5.1.4.1.2", EXPLICIT_LE]]}),
    );
    assert_eq!(out["associated"], json!(false), "{out}");
    // A transfer syntax the seed's list does not have, beside a good
    // context: accepted, the refused one logged.
    let out = raw_scu(
        served.port,
        &json!({"stores": [], "contexts": [
            [CT, EXPLICIT_LE],
            ["1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.4.80"]
        ]}),
    );
    assert_eq!(out["associated"], json!(true), "{out}");
    let log = served.stop();
    let line = |needle: &str| {
        log.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{log}"))
            .to_owned()
    };
    let called = line("reason 7");
    assert!(
        called.contains("NOT_SLUICE") && called.contains("SLUICE"),
        "{called}"
    );
    let misprint = line("1.2.840.10008.5.1.4.1.2 ");
    assert!(
        misprint.contains("not accepted")
            && misprint.contains("did you mean 1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)"),
        "{misprint}"
    );
    let refused = line("presentation contexts refused");
    assert!(
        refused.contains("1.2.840.10008.5.1.4.1.1.4")
            && refused.contains("MR Image Storage")
            && refused.contains("1.2.840.10008.1.2.4.80"),
        "{refused}"
    );
}

#[test]
fn after_an_abort_further_pdus_get_no_answer() {
    let served = Served::start("auto", &[]);
    let out = raw_scu(
        served.port,
        &json!({"stores": [], "contexts": [[CT, EXPLICIT_LE]], "after": "garbage_after_abort"}),
    );
    // One A-ABORT (PDU type 7) for the malformed PDU, nothing for the ten
    // P-DATA-TF after it.
    assert_eq!(out["after"]["pdus"], json!({"7": 1}), "{out}");
    let log = served.stop();
    assert_eq!(log.matches("malformed PDU").count(), 1, "{log}");
}

#[test]
fn after_a_rejection_further_pdus_get_no_answer() {
    let served = Served::start("auto", &[]);
    let out = raw_scu(
        served.port,
        &json!({"called": "NOT_SLUICE", "stores": [], "contexts": [[CT, EXPLICIT_LE]],
                "after": "pdata_after_reject"}),
    );
    assert_eq!(out["rejected"], json!([1, 1, 7]), "{out}");
    // The A-ASSOCIATE-RJ was read; the ten P-DATA-TF after it get nothing.
    assert_eq!(out["after"]["pdus"], json!({}), "{out}");
    served.stop();
}

#[test]
fn a_command_on_a_context_never_proposed_is_aborted_not_served() {
    let served = Served::start("auto", &[]);
    let out = raw_scu(
        served.port,
        &json!({"stores": [], "contexts": [[CT, EXPLICIT_LE]], "after": "pdata_unknown_context"}),
    );
    assert_eq!(out["after"]["answer"], json!("aborted"), "{out}");
    let log = served.stop();
    assert!(
        log.contains("presentation context 99, which was not accepted"),
        "{log}"
    );
}

#[test]
fn the_implementation_class_uid_and_the_seal_creator_are_real_uids() {
    let served = Served::start("auto", &[]);
    let sop = "1.2.826.0.1.3680043.10.1234.85.1";
    let out = raw_scu(
        served.port,
        &json!({"stores": [{
            "name": "one", "abstract": CT, "ts": EXPLICIT_LE,
            "command_instance": sop, "ct": {"sop": sop},
        }]}),
    );
    assert_eq!(out["implementation_class_uid"], json!(format!("{ROOT}.1")));
    let stored = served.stored();
    let file = &stored[sop];
    assert_eq!(part10_meta_value(file, 0x0002, 0x0012), format!("{ROOT}.1"));
    assert_eq!(part10_meta_value(file, 0x0002, 0x0100), format!("{ROOT}.2"));
}

#[test]
fn recovery_that_removed_files_logs_its_summary_at_warn() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmp = data.join("tmp/0");
    std::fs::create_dir_all(&tmp).unwrap();
    for index in 0..3 {
        std::fs::write(tmp.join(format!("{index:032x}.dcm")), b"half an instance").unwrap();
    }
    let served = Served::start_in(dir, data, "auto", &[]);
    let log = served.stop();
    let summary = log
        .lines()
        .find(|line| line.contains("recovery: 3 temporary files removed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(summary.contains("WARN"), "{summary}");
}
