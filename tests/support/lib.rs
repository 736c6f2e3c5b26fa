//! Shared helpers of lrf-flow's integration and acceptance tests: where the real scenes are, and
//! the Python interpreter (with pycolmap) used for independent cross-checks.
//!
//! Missing prerequisites fail the tests with a message saying how to set them up; they never skip
//! silently, so a green `make test` means the cross-checks actually ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// What to tell someone whose environment is not set up.
const SETUP_HINT: &str =
    "run `make test` (which runs scripts/setup.sh first) or `bash scripts/setup.sh` once, then retry";

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The real-scene data folder: `$LRF_DATA`, by default `<workspace>/../shared/data`. Panics with
/// a clear message if it does not exist.
pub fn data_dir() -> PathBuf {
    let (dir, source) = match std::env::var_os("LRF_DATA") {
        Some(dir) if !dir.is_empty() => (PathBuf::from(dir), "from the LRF_DATA environment variable"),
        _ => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
            "the default, as LRF_DATA is not set",
        ),
    };
    if !dir.is_dir() {
        panic!(
            "test data folder {} ({source}) does not exist; set LRF_DATA to the folder holding real/<scene>/sparse/0",
            dir.display()
        );
    }
    dir.canonicalize().unwrap_or(dir)
}

/// The Python interpreter for the pycolmap cross-checks: see [`python_with`].
pub fn python() -> PathBuf {
    python_with(&["pycolmap", "numpy"])
}

/// The Python interpreter for cross-checks that import `modules`: `$LRF_PYTHON`, by default
/// `<workspace>/.venv/bin/python`. Checked once per module set and test binary: a missing
/// interpreter or a failing import panics (fails the test) with setup instructions.
pub fn python_with(modules: &[&str]) -> PathBuf {
    static CHECKED: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let imports = modules.join(", ");
    let mut checked = CHECKED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match checked.entry(imports.clone()).or_insert_with(|| check_python(&imports)) {
        Ok(python) => python.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn check_python(imports: &str) -> Result<PathBuf, String> {
    let (python, source) = match std::env::var_os("LRF_PYTHON") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "from LRF_PYTHON"),
        _ => (
            workspace_dir().join(".venv/bin/python"),
            "the default, as LRF_PYTHON is not set",
        ),
    };
    if !python.exists() {
        return Err(format!(
            "Python interpreter {} ({source}) does not exist; {SETUP_HINT}",
            python.display()
        ));
    }
    let output = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .map_err(|e| {
            format!(
                "cannot run Python interpreter {} ({source}): {e}; {SETUP_HINT}",
                python.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`import {imports}` fails with {} ({source}): {}\n{SETUP_HINT}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(python)
}

/// A Python script of this crate's `python/` folder.
pub fn python_script(name: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name);
    assert!(script.is_file(), "test script {} is missing", script.display());
    script
}

/// Runs `python/<script>` with `args` under [`python()`] and parses its stdout as JSON. Panics
/// with the script's stderr if it fails.
pub fn run_python_json(script: &str, args: &[&Path]) -> serde_json::Value {
    run_script_json(&python(), script, args)
}

/// Runs `python/<script>` with `args` under `interpreter` (from [`python`] or [`python_with`]) and parses
/// its stdout as JSON. Panics with the script's stderr if it fails.
pub fn run_script_json(
    interpreter: &Path,
    script: &str,
    args: &[impl AsRef<std::ffi::OsStr> + std::fmt::Debug],
) -> serde_json::Value {
    let script = python_script(script);
    let output = Command::new(interpreter)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !output.status.success() {
        panic!(
            "{} {:?} failed ({}):\n{}",
            script.display(),
            args,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{} printed invalid JSON: {e}", script.display()))
}

/// A COLMAP model folder as pycolmap reads it (see `python/colmap_dump.py` for the layout).
pub fn pycolmap_dump(model_dir: &Path) -> serde_json::Value {
    run_python_json("colmap_dump.py", &[model_dir])
}
