//! The report renders from committed result files (recorded by a real
//! sweep): a golden check of its structure, not of its numbers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_tests::run;

#[test]
fn report_renders_from_recorded_results() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut inputs: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 4,
        "recorded results missing in {}",
        data.display()
    );
    let out = tempfile::tempdir().unwrap();
    let output = run(
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
            .arg("report")
            .args(&inputs)
            .arg("--out-dir")
            .arg(out.path())
            .args(["--slo-p99-ms", "200"]),
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for section in [
        "capacity",
        "throughput-vs-load",
        "latency-vs-load",
        "throughput-over-time",
        "runs",
        "errors",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{section}\">")),
            "section {section} missing"
        );
    }
    for chart in [
        "chart-instances",
        "chart-megabytes",
        "chart-latency",
        "chart-setup",
        "chart-timeline-0",
    ] {
        assert!(
            html.contains(&format!("<svg id=\"{chart}\"")),
            "chart {chart} missing"
        );
    }
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    // One row per run in the runs table and in the errors table, plus headers.
    assert_eq!(html.matches("<tr>").count(), 2 * inputs.len() + 2);
    // Both targets of the recorded sweep get a capacity sentence.
    let labels: std::collections::BTreeSet<String> = inputs
        .iter()
        .map(|path| {
            let value: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            value["target"]["label"].as_str().unwrap().to_string()
        })
        .collect();
    for label in &labels {
        assert!(
            markdown.contains(&format!("- **{label}**:")),
            "no capacity line for {label}"
        );
    }
    assert!(markdown.starts_with("# "));
    assert!(markdown.contains("## Capacity") && markdown.contains("## Runs"));
    assert_eq!(
        markdown
            .lines()
            .filter(|line| line.starts_with("| ") && !line.starts_with("| target"))
            .count(),
        inputs.len()
    );
}
