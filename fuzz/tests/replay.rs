//! Replays every stored input of every fuzz target through its harness:
//! the minimised corpus (`fuzz/corpus/<target>/`) and the inputs of past
//! findings (`fuzz/regressions/<target>/`). Needs no fuzzer; runs in
//! `cargo test` and so in `scripts/test`.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use sluice_fuzz::{target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The files directly in `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every file of the target's corpus and regressions; returns how many
/// ran from the corpus. Fails listing every input whose harness panicked.
fn replay(name: &str) -> usize {
    let target = target(name).expect("a known target");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let input = fs::read(path).expect("readable corpus file");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    corpus.len()
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let ran = replay(stringify!($name));
                assert!(ran >= 10, "the {} corpus has only {ran} inputs", stringify!($name));
            }
        )*

        /// Every target has a replay test above and a corpus, and every
        /// corpus or regression directory belongs to a target.
        #[test]
        fn every_target_is_replayed_and_every_directory_is_a_target() {
            let tested: BTreeSet<&str> = [$(stringify!($name)),*].into_iter().collect();
            let targets: BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
            assert_eq!(tested, targets, "replay tests and targets differ");
            for area in ["corpus", "regressions"] {
                let Ok(entries) = fs::read_dir(fuzz_dir().join(area)) else {
                    assert_eq!(area, "regressions", "fuzz/corpus is missing");
                    continue;
                };
                for entry in entries {
                    let name = entry.expect("readable directory entry").file_name();
                    let name = name.to_string_lossy();
                    assert!(targets.contains(name.as_ref()), "fuzz/{area}/{name} is not a target");
                }
            }
        }
    };
}

replay_tests!(
    pdata_stream,
    pdu,
    association,
    dimse_command,
    head_scan,
    small_dataset,
    commitment,
);
