//! Helpers shared by the CLI's integration tests.

use std::path::{Path, PathBuf};

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
