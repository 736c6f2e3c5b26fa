//! Helpers shared by the CLI's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every artifact folder of the store under `dir/work` holding output `port` (one folder per key), sorted.
pub fn artifacts(dir: &Path, port: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("work/store"))
        .expect("store")
        .map(|e| e.expect("entry").path().join(port))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// `lrf-flow run p.yaml` in `dir`: the output, and stdout and stderr as one text.
#[allow(dead_code)] // not every test binary runs pipelines
pub fn run_pipeline(dir: &Path) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lrf-flow"))
        .args(["run", "p.yaml"])
        .current_dir(dir)
        .output()
        .expect("run lrf-flow");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}
