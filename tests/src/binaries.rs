//! Paths of the workspace's binaries for tests of other crates: a crate's
//! integration tests get `CARGO_BIN_EXE_*` only for its own binaries, so a
//! test that needs another package's binary (the load generator's tests
//! start `sluice serve`) asks here.
//!
//! The binary is looked up in the profile directory of the running test
//! (`target/<profile>/`, the parent of `deps/`). If it is not there, it is
//! built once per test process with `$CARGO build -p <package> --bin <name>`
//! into that same target directory and profile. An existing binary is used
//! as it is: run `cargo build -p <package>` first to refresh a stale one
//! (the README's test command builds the workspace before testing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serialises builds within one test process.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The profile directory of the running test executable (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test");
    let deps = exe.parent().expect("test executable has a directory");
    if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The path of binary `name` of workspace package `package`, built first if missing.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(name);
    if path.is_file() {
        return path;
    }
    let _guard = BUILD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if path.is_file() {
        return path;
    }
    build(&dir, package, name);
    assert!(
        path.is_file(),
        "`cargo build -p {package} --bin {name}` succeeded but {} is missing",
        path.display()
    );
    path
}

fn build(profile_dir: &Path, package: &str, name: &str) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile = profile_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "debug".into());
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", package, "--bin", name, "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run cargo to build {name}: {error}"));
    assert!(status.success(), "building {package}/{name} failed");
}
