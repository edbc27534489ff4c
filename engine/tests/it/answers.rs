//! Every C-STORE gets exactly one answer (issue #19, item 2): SOP Instance
//! UIDs of digits and dots that are not strictly valid, in the command or in
//! the data set, sent by a raw-socket peer (`tests/fixtures/raw_scu.py`)
//! that puts exactly these bytes on the wire.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::{part10_meta_value, python_peer};

use crate::serve::Served;

const AE: &str = "SLUICE";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Runs `tests/fixtures/raw_scu.py` with `plan`; its JSON line.
pub fn raw_scu(port: u16, plan: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let out = python_peer(
        "raw_scu.py",
        &[&port.to_string(), AE, plan_path.to_str().unwrap()],
        Duration::from_secs(300),
    );
    serde_json::from_str(&out.0).unwrap_or_else(|error| panic!("{error}: {}", out.0))
}

/// A store of a generated CT whose command carries `command_instance` and
/// whose data set carries `ct` (SOP Instance UID, Study, Series...).
fn ct_store(name: &str, command_instance: &str, ct: Value) -> Value {
    json!({
        "name": name,
        "abstract": CT,
        "ts": EXPLICIT_LE,
        "command_instance": command_instance,
        "ct": ct,
    })
}

/// What the raw peer saw of one C-STORE.
#[derive(Debug, Clone)]
pub struct Answer {
    pub name: String,
    /// The status in hex, `None` when no C-STORE-RSP came.
    pub status: Option<String>,
    /// The response's Affected SOP Instance UID.
    pub rsp_instance: Option<String>,
    /// The response's Error Comment.
    pub error_comment: Option<String>,
}

/// The answers of a plan, in order.
pub fn answers(out: &Value) -> Vec<Answer> {
    out["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {out}"))
        .iter()
        .map(|result| {
            let text = |key: &str| result[key].as_str().map(str::to_owned);
            Answer {
                name: text("name").unwrap_or_default(),
                status: text("status"),
                rsp_instance: text("rsp_instance"),
                error_comment: text("error_comment"),
            }
        })
        .collect()
}

#[test]
fn every_c_store_with_a_non_conformant_uid_gets_one_answer() {
    let served = Served::start("auto", &[]);
    let leading_zero = "1.2.840.113619.2.55.3.0123";
    let too_long = format!("1.2.{}", "3".repeat(61));
    assert_eq!(too_long.len(), 65);
    let valid_study = "1.2.826.0.1.3680043.10.1234.79.20";
    let stores = vec![
        // Real modalities send components with a leading zero: stored,
        // with a warning, and the answer echoes the UID as received.
        ct_store("leading_zero", leading_zero, json!({"sop": leading_zero})),
        ct_store(
            "leading_zero_study",
            "1.2.826.0.1.3680043.10.1234.79.21",
            json!({"sop": "1.2.826.0.1.3680043.10.1234.79.21", "study": "1.2.03.4"}),
        ),
        // Malformed: A900 with the reason, in the command and the data set alike.
        ct_store("double_dot", "1.2..3", json!({"sop": "1.2..3"})),
        ct_store("leading_dot", ".1.2.3", json!({"sop": ".1.2.3"})),
        ct_store("trailing_dot", "1.2.3.", json!({"sop": "1.2.3."})),
        ct_store("too_long", &too_long, json!({"sop": too_long})),
        ct_store(
            "too_long_study",
            "1.2.826.0.1.3680043.10.1234.79.22",
            json!({"sop": "1.2.826.0.1.3680043.10.1234.79.22", "study": too_long}),
        ),
        ct_store(
            "letter_in_series",
            "1.2.826.0.1.3680043.10.1234.79.23",
            json!({"sop": "1.2.826.0.1.3680043.10.1234.79.23", "series": "1.2.3a"}),
        ),
        // The retry of a refused instance is refused again: nothing piles up.
        ct_store("double_dot_again", "1.2..3", json!({"sop": "1.2..3"})),
        // The association is still alive.
        ct_store(
            "good",
            "1.2.826.0.1.3680043.10.1234.79.24",
            json!({"sop": "1.2.826.0.1.3680043.10.1234.79.24", "study": valid_study}),
        ),
    ];
    let out = raw_scu(
        served.port,
        &json!({"calling": "UIDTEST", "stores": stores}),
    );
    let answers = answers(&out);
    let answer = |name: &str| {
        answers
            .iter()
            .find(|answer| answer.name == name)
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .clone()
    };
    let log = served.log();
    for (name, expected) in [
        ("leading_zero", "0000"),
        ("leading_zero_study", "0000"),
        ("double_dot", "A900"),
        ("leading_dot", "A900"),
        ("trailing_dot", "A900"),
        ("too_long", "A900"),
        ("too_long_study", "A900"),
        ("letter_in_series", "A900"),
        ("double_dot_again", "A900"),
        ("good", "0000"),
    ] {
        let Answer {
            status,
            error_comment,
            ..
        } = answer(name);
        assert_eq!(status.as_deref(), Some(expected), "{name}: {out}\n{log}");
        if expected == "A900" {
            let comment = error_comment.unwrap_or_default();
            assert!(
                comment.contains("UID"),
                "{name}: the Error Comment says why: {comment:?}"
            );
        }
    }
    // The answer names the instance as the sender named it.
    assert_eq!(
        answer("leading_zero").rsp_instance.as_deref(),
        Some(leading_zero)
    );
    assert_eq!(answer("double_dot").rsp_instance.as_deref(), Some("1.2..3"));
    // A value that is not a UI value (65 characters) is not echoed.
    assert_eq!(answer("too_long").rsp_instance, None);

    let stored = served.stored();
    let names: Vec<&str> = stored.keys().map(String::as_str).collect();
    let mut expected = vec![
        leading_zero,
        "1.2.826.0.1.3680043.10.1234.79.21",
        "1.2.826.0.1.3680043.10.1234.79.24",
    ];
    expected.sort_unstable();
    assert_eq!(names, expected, "{log}");
    assert_eq!(
        part10_meta_value(&stored[leading_zero], 0x0002, 0x0003),
        leading_zero
    );
    assert!(served.all_files("quarantine").is_empty(), "{log}");
    // (What refused data sets leave in tmp/ is issue #19 item 3, another
    // branch's.)

    // Both are flagged for review.
    let flagged = served.flagged();
    for sop in [leading_zero, "1.2.826.0.1.3680043.10.1234.79.21"] {
        assert!(
            flagged
                .lines()
                .any(|line| line.starts_with(sop) && line.contains("leading zero")),
            "{flagged}"
        );
    }

    let log = served.stop();
    // The leading zeros are logged at warn, once per instance.
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("WARN") && line.contains("leading zero"))
            .count(),
        2,
        "{log}"
    );
    // Each refusal is logged with its reason.
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("C-STORE refused") && line.contains("A900"))
            .count(),
        7,
        "{log}"
    );
    assert!(!log.contains("aborting"), "{log}");
}

#[test]
fn leading_zeros_are_refused_a900_when_the_check_is_strict() {
    let served = Served::start("auto", &["--validation-uid-leading-zero", "strict"]);
    let leading_zero = "1.2.840.113619.2.55.3.0123";
    let out = raw_scu(
        served.port,
        &json!({"stores": [
            ct_store("in_command", leading_zero, json!({"sop": leading_zero})),
            ct_store(
                "in_study",
                "1.2.826.0.1.3680043.10.1234.79.30",
                json!({"sop": "1.2.826.0.1.3680043.10.1234.79.30", "study": "1.2.03.4"}),
            ),
        ]}),
    );
    let answers = answers(&out);
    assert_eq!(answers.len(), 2, "{out}");
    for answer in &answers {
        assert_eq!(answer.status.as_deref(), Some("A900"), "{out}");
        let comment = answer.error_comment.as_deref().unwrap_or_default();
        assert!(comment.contains("leading zero"), "{answer:?}");
    }
    assert!(served.stored_sops().is_empty());
}

#[test]
fn sop_uids_only_in_the_command_are_stored_and_flagged_unless_strict() {
    // The data set has no SOP Class UID nor SOP Instance UID; the command
    // carries both (issue #19 item 10: UN_sequence.dcm, priv_SQ.dcm).
    let sop = "1.2.826.0.1.3680043.10.1234.79.40";
    let store = ct_store("no_sop_uids", sop, json!({"class": null, "sop": null}));

    let served = Served::start("auto", &[]);
    let out = raw_scu(served.port, &json!({"stores": [store.clone()]}));
    let lenient = answers(&out);
    assert_eq!(lenient.len(), 1, "{out}");
    assert_eq!(lenient[0].status.as_deref(), Some("0000"), "{out}");
    // Filed under the command's UID (the file meta group takes it).
    assert!(served.stored_sops().iter().any(|stored| stored == sop));
    let flagged = served.flagged();
    let row = flagged
        .lines()
        .find(|line| line.starts_with(sop))
        .unwrap_or_else(|| panic!("{sop} not flagged:\n{flagged}"));
    assert!(
        row.contains("(0008,0016)") && row.contains("(0008,0018)"),
        "{row}"
    );
    let log = served.stop();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("stored with warnings")),
        "{log}"
    );

    let served = Served::start("auto", &["--validation-sop-uids-missing", "strict"]);
    let out = raw_scu(served.port, &json!({"stores": [store]}));
    let strict = answers(&out);
    assert_eq!(strict[0].status.as_deref(), Some("A900"), "{out}");
    assert!(
        strict[0]
            .error_comment
            .as_deref()
            .is_some_and(|comment| comment.contains("(0008,0016)")),
        "{out}"
    );
    assert!(served.stored_sops().is_empty());
    assert!(served.flagged().starts_with("no flagged instances"));
    served.stop();
}
