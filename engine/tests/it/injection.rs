//! Log and terminal injection (issue #19, item 8): UIDs and names a sender
//! controls, with newlines, ESC sequences, NUL and bytes that are not UTF-8,
//! reach neither the log nor an operator's terminal raw.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sluice_tests::run;

use crate::answers::raw_scu;
use crate::serve::Served;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// No byte a terminal or a log parser would act on: C0 controls other than
/// the line ends of the output itself, DEL, C1 controls.
fn assert_inert(what: &str, text: &str) {
    for (number, line) in text.lines().enumerate() {
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || ('\u{7f}'..='\u{9f}').contains(&c)),
            "{what}, line {}: control character in {line:?}",
            number + 1
        );
    }
}

fn sluice(args: &[&str], data: &std::path::Path) -> String {
    let output = run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--data-dir")
            .arg(data),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the output is UTF-8")
}

#[test]
fn peer_values_with_newlines_and_escapes_reach_logs_and_terminals_escaped() {
    let served = Served::start("auto", &[]);
    let forged = "\n2026-01-01T00:00:00.000000Z ERROR sluice: FORGED by the sender";
    let study = "1.2.826.0.1.3680043.10.1234.84.1";
    let stores = vec![
        // A data set whose SOP Instance UID differs from the command's and
        // carries a newline and a forged log line: refused A900, and its
        // reason quotes the data set's UID.
        json!({
            "name": "forged_line",
            "abstract": CT,
            "ts": EXPLICIT_LE,
            "command_instance": "1.2.826.0.1.3680043.10.1234.84.2",
            "ct": {"sop": format!("1.2.3{forged}"), "study": study},
        }),
        // The command's own UID with ESC and NUL: refused A900.
        json!({
            "name": "escape_in_command",
            "abstract": CT,
            "ts": EXPLICIT_LE,
            "command_instance": "1.2.3\u{1b}[2J\u{1b}]0;owned\u{7}\u{0}4",
            "ct": {"sop": "1.2.3.4"},
        }),
        // Stored: a patient name that recolours the terminal, a NUL and a
        // right-to-left override; another with bytes that are not UTF-8.
        json!({
            "name": "name_with_escapes",
            "abstract": CT,
            "ts": EXPLICIT_LE,
            "command_instance": "1.2.826.0.1.3680043.10.1234.84.3",
            "ct": {
                "sop": "1.2.826.0.1.3680043.10.1234.84.3",
                "study": study,
                "charset": "ISO_IR 192",
                // Doe^ ESC [31m John NUL X U+202E evil U+009B, in UTF-8.
                "patient_name_hex": "446f655e1b5b33316d4a6f686e0058e280ae6576696cc29b",
            },
        }),
        json!({
            "name": "name_not_utf8",
            "abstract": CT,
            "ts": EXPLICIT_LE,
            "command_instance": "1.2.826.0.1.3680043.10.1234.84.4",
            "ct": {
                "sop": "1.2.826.0.1.3680043.10.1234.84.4",
                "study": "1.2.826.0.1.3680043.10.1234.84.5",
                "charset": "ISO_IR 192",
                "patient_name_hex": "446f655e1b5b33316dff4a6f686e",
            },
        }),
    ];
    let out = raw_scu(served.port, &json!({"calling": "INJECT", "stores": stores}));
    let statuses: Vec<&str> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["status"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(statuses, ["A900", "A900", "0000", "0000"], "{out}");

    let data = served.data();
    let listing = sluice(&["ls"], &data);
    assert_inert("sluice ls", &listing);
    assert!(
        listing.contains("Doe^\\x1b[31mJohn") && listing.contains("\\u{202e}evil\\u{9b}"),
        "{listing}"
    );
    for args in [
        &["ls", study][..],
        &["show", "1.2.826.0.1.3680043.10.1234.84.3"],
        &["quarantine", "list"],
        &["verify"],
    ] {
        let text = sluice(args, &data);
        assert_inert(&format!("sluice {args:?}"), &text);
    }

    let log = served.stop();
    assert_inert("the server's log", &log);
    // The forged line is inside the refusal's line, escaped, never a line
    // of its own.
    for line in log.lines().filter(|line| line.contains("FORGED")) {
        assert!(
            line.contains("C-STORE refused")
                && line.contains("\\n2026-01-01T00:00:00.000000Z ERROR"),
            "{line}"
        );
    }
    assert!(log.contains("FORGED"), "{log}");
    assert!(log.contains("\\x1b[2J\\x1b]0;owned\\x07\\0"), "{log}");
}
