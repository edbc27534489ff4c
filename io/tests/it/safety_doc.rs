//! docs/safety.md lists every file of `io/src` with `unsafe` code and every
//! call site that states a caller guarantee (`caller_guarantees(`): this
//! keeps the list from going stale when code moves.

use std::path::{Path, PathBuf};

use crate::support::shared_lock;

/// The workspace root (this crate is `io/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("io/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, skipping build output and hidden folders.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{dir:?}: {error}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// Workspace-relative paths of the `.rs` files under `dir` whose text
/// matches `contains`.
fn files_matching(root: &Path, dir: &str, contains: impl Fn(&str) -> bool) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root.join(dir), &mut files);
    let mut matching: Vec<String> = files
        .iter()
        .filter(|path| contains(&std::fs::read_to_string(path).expect("readable source")))
        .map(|path| {
            path.strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    matching.sort();
    matching
}

fn safety_doc(root: &Path) -> String {
    std::fs::read_to_string(root.join("docs/safety.md")).expect("docs/safety.md")
}

#[test]
fn every_io_file_with_unsafe_code_is_listed() {
    // Reads files: held shared, so the descriptor-counting shutdown test
    // (exclusive) never counts this test's open files as its own leak.
    let _lock = shared_lock();
    let root = workspace_root();
    let doc = safety_doc(&root);
    let with_unsafe = files_matching(&root, "io/src", |text| {
        text.contains("unsafe {") || text.contains("unsafe impl") || text.contains("unsafe fn")
    });
    assert!(
        with_unsafe.len() >= 8,
        "the scan found too few files: {with_unsafe:?}"
    );
    let missing: Vec<&String> = with_unsafe
        .iter()
        .filter(|path| !doc.contains(&format!("`{path}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/safety.md does not list these files with unsafe code: {missing:?}"
    );
}

#[test]
fn every_caller_guarantee_is_listed() {
    // Reads files: held shared, so the descriptor-counting shutdown test
    // (exclusive) never counts this test's open files as its own leak.
    let _lock = shared_lock();
    let root = workspace_root();
    let doc = safety_doc(&root);
    let mut sites = Vec::new();
    for dir in ["engine", "index", "io", "loadgen", "net", "bench", "tests"] {
        if root.join(dir).is_dir() {
            // Spelt in two halves so this file is not a site itself.
            sites.extend(files_matching(&root, dir, |text| {
                text.contains(concat!("::caller", "_guarantees("))
            }));
        }
    }
    assert!(
        sites.iter().any(|site| site.starts_with("index/src/")),
        "the scan missed the index's open: {sites:?}"
    );
    let missing: Vec<&String> = sites
        .iter()
        .filter(|site| !doc.contains(&format!("`{site}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/safety.md does not list these caller-guarantee sites: {missing:?}"
    );
}
