//! The Query/Retrieve test corpus (tests/fixtures/qr_corpus.py): written,
//! read back as [`Instance`]s, and stored into a server.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::{python, python_peer, run, scripts_dir};

/// The Called AE Title of the servers the Q/R tests start.
pub(crate) const AE: &str = "SLUICE";
/// How long a peer of the Q/R tests may take.
pub(crate) const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// One instance of the corpus.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) sop: String,
    pub(crate) study: String,
    pub(crate) series: String,
    pub(crate) patient_id: String,
    pub(crate) modality: String,
    pub(crate) syntax: String,
    pub(crate) file: PathBuf,
}

/// Writes the corpus (with `bulk` more instances of one study) into `dir`.
pub(crate) fn corpus(dir: &Path, bulk: usize) -> Vec<Instance> {
    corpus_with(dir, bulk, None)
}

/// The corpus with `bulk` more instances of `bulk_bytes` each (the
/// script's default size when `None`).
pub(crate) fn corpus_with(dir: &Path, bulk: usize, bulk_bytes: Option<usize>) -> Vec<Instance> {
    let mut args = vec!["--bulk".to_owned(), bulk.to_string()];
    if let Some(bytes) = bulk_bytes {
        args.extend(["--bulk-bytes".to_owned(), bytes.to_string()]);
    }
    corpus_args(dir, &args)
}

/// The corpus with the named patients (`--names`: names that differ only
/// in case, in ISO 8859-1) besides the usual ones.
pub(crate) fn corpus_with_names(dir: &Path) -> Vec<Instance> {
    corpus_args(dir, &["--names".to_owned()])
}

fn corpus_args(dir: &Path, args: &[String]) -> Vec<Instance> {
    let mut command = Command::new(python());
    command
        .arg(scripts_dir().join("qr_corpus.py"))
        .arg(dir)
        .arg("--lines")
        .args(args);
    let output = run(&mut command, PEER_TIMEOUT);
    assert!(
        output.status.success(),
        "qr_corpus.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 7, "corpus line {line:?}");
            Instance {
                sop: fields[0].into(),
                study: fields[1].into(),
                series: fields[2].into(),
                patient_id: fields[3].into(),
                modality: fields[4].into(),
                syntax: fields[5].into(),
                file: fields[6].into(),
            }
        })
        .collect()
}

/// Stores `instances` into the server on `port`, each in the transfer
/// syntax it is written in (pynetdicom sends files as they are), and
/// checks every one was answered success.
pub(crate) fn store_instances(port: u16, instances: &[Instance]) {
    for batch in instances.chunks(200) {
        let mut args = vec![port.to_string(), AE.into(), "LOADER".into(), "store".into()];
        args.extend(batch.iter().map(|i| i.file.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = python_peer("pynetdicom_scu.py", &args, PEER_TIMEOUT);
        let statuses: Vec<String> = output
            .0
            .split_once("\"statuses\": [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list.split(", ").map(str::to_owned).collect())
            .unwrap_or_default();
        assert!(
            output.has("\"associated\": true")
                && statuses.len() == batch.len()
                && statuses.iter().all(|status| status == "0"),
            "every instance stored: {output:?}"
        );
    }
}
