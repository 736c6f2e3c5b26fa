//! The content-addressed artifact store: `<work_dir>/store/<key>/` holds a stage's outputs and
//! `manifest.json`. Outputs are written in `store/.tmp/` and renamed into place with their
//! manifest, so a directory under its key is always complete and a killed run leaves only
//! temporary folders behind (which `gc` removes). The guarantee is against killed processes;
//! nothing is fsynced, so a power loss may need `gc` and a rerun.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::key::{ArtifactKey, hash_file};
use crate::scenes::collect_all_files;

pub const MANIFEST: &str = "manifest.json";
const TMP: &str = ".tmp";
/// The lock file: runs hold it shared while they write, gc exclusively.
const LOCK: &str = ".lock";

/// What produced an artifact, what it holds, and how long it took; readable JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub key: ArtifactKey,
    pub stage: String,
    pub kind: String,
    pub version: u32,
    pub scene: Option<String>,
    pub params: serde_json::Value,
    /// Input port → keys it read (one, or one per scene in name order).
    pub inputs: BTreeMap<String, Vec<ArtifactKey>>,
    pub files: Vec<FileEntry>,
    /// Seconds since the Unix epoch when the run started.
    pub started: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the artifact folder, `/`-separated.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// Whether the store holds an artifact, as far as a check without hashing can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Absent,
    Whole,
    /// A folder is there but cannot be reused: why, naming the artifact.
    Damaged(String),
}

/// An artifact as messages name it: key, stage and scene.
fn describe(manifest: &Manifest) -> String {
    match &manifest.scene {
        Some(scene) => format!("{} ({} on {scene})", manifest.key, manifest.stage),
        None => format!("{} ({})", manifest.key, manifest.stage),
    }
}

/// A temporary folder being filled by one stage run.
pub struct Pending {
    pub key: ArtifactKey,
    pub dir: PathBuf,
}

/// What `gc` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<ArtifactKey>,
    pub temporaries: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A hold on a store's lock file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

static PENDING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store under a pipeline's work directory.
    pub fn open(work_dir: &Path) -> std::io::Result<Self> {
        let root = work_dir.join("store");
        std::fs::create_dir_all(root.join(TMP))?;
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, key: &ArtifactKey) -> PathBuf {
        self.root.join(key.hex())
    }

    /// An artifact exists once its folder is in place (the rename is the commit).
    pub fn contains(&self, key: &ArtifactKey) -> bool {
        self.path(key).join(MANIFEST).is_file()
    }

    /// A fresh temporary folder for computing `key`; unique per process and call, so concurrent
    /// runs (threads or processes) never share one.
    pub fn begin(&self, key: ArtifactKey) -> std::io::Result<Pending> {
        let seq = PENDING_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join(TMP)
            .join(format!("{}.{}.{seq}", key.hex(), std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Pending { key, dir })
    }

    /// Hashes the files the stage wrote, writes the manifest and renames the folder into place.
    /// When another run committed the same key first, its artifact is kept and ours dropped. A commit
    /// that fails removes its temporary folder; the error names the folder.
    pub fn commit(&self, pending: Pending, manifest: Manifest) -> std::io::Result<Manifest> {
        let dir = pending.dir.clone();
        self.try_commit(&pending, manifest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            std::io::Error::new(e.kind(), format!("committing {}: {e}", dir.display()))
        })
    }

    fn try_commit(&self, pending: &Pending, mut manifest: Manifest) -> std::io::Result<Manifest> {
        manifest.key = pending.key;
        manifest.files = list_files(&pending.dir)?;
        let text = serde_json::to_string_pretty(&manifest).map_err(std::io::Error::other)?;
        std::fs::write(pending.dir.join(MANIFEST), text)?;
        let target = self.path(&pending.key);
        match std::fs::rename(&pending.dir, &target) {
            Ok(()) => Ok(manifest),
            Err(_) if self.contains(&pending.key) => {
                std::fs::remove_dir_all(&pending.dir)?;
                self.manifest(&pending.key)
            }
            Err(e) => Err(e),
        }
    }

    /// Drops a temporary folder after a failed run.
    pub fn abort(&self, pending: Pending) {
        let _ = std::fs::remove_dir_all(pending.dir);
    }

    pub fn manifest(&self, key: &ArtifactKey) -> std::io::Result<Manifest> {
        let text = std::fs::read_to_string(self.path(key).join(MANIFEST))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Re-hashes an artifact's files against its manifest; the error names the artifact and every file that
    /// differs.
    pub fn verify(&self, key: &ArtifactKey) -> Result<(), String> {
        let manifest = self
            .manifest(key)
            .map_err(|e| format!("{key}: manifest unreadable: {e}"))?;
        let what = describe(&manifest);
        let actual = list_files(&self.path(key)).map_err(|e| format!("{what}: {e}"))?;
        if manifest.key != *key {
            return Err(format!("{what}: its manifest names another key, {}", manifest.key));
        }
        let expected: BTreeMap<&str, &FileEntry> = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let found: BTreeMap<&str, &FileEntry> = actual.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut problems = Vec::new();
        for (path, entry) in &expected {
            match found.get(path) {
                None => problems.push(format!("{path} is missing")),
                Some(f) if f.size != entry.size => {
                    problems.push(format!("{path} has {} bytes, not {}", f.size, entry.size))
                }
                Some(f) if f.blake3 != entry.blake3 => problems.push(format!("{path} has other content")),
                Some(_) => {}
            }
        }
        problems.extend(
            found
                .keys()
                .filter(|p| !expected.contains_key(*p))
                .map(|p| format!("{p} is extra")),
        );
        match problems.is_empty() {
            true => Ok(()),
            false => Err(format!("{what}: {}", problems.join(", "))),
        }
    }

    /// Whether `key`'s artifact can be reused, checked without hashing: its manifest reads, and every file it
    /// lists is there at its size. Flipped bytes are found by [`Store::verify`] only.
    pub fn presence(&self, key: &ArtifactKey) -> Presence {
        let dir = self.path(key);
        if !dir.exists() {
            return Presence::Absent;
        }
        let manifest = match self.manifest(key) {
            Ok(manifest) => manifest,
            Err(e) => return Presence::Damaged(format!("{key}: manifest unreadable: {e}")),
        };
        for file in &manifest.files {
            match std::fs::metadata(dir.join(&file.path)) {
                Ok(meta) if meta.len() == file.size => {}
                Ok(meta) => {
                    return Presence::Damaged(format!(
                        "{}: {} has {} bytes, not {}",
                        describe(&manifest),
                        file.path,
                        meta.len(),
                        file.size
                    ));
                }
                Err(_) => return Presence::Damaged(format!("{}: {} is missing", describe(&manifest), file.path)),
            }
        }
        Presence::Whole
    }

    /// Takes a damaged artifact out of the store (moved aside, then deleted), so that it is computed again.
    pub fn discard(&self, key: &ArtifactKey) -> std::io::Result<()> {
        let seq = PENDING_SEQ.fetch_add(1, Ordering::Relaxed);
        let aside = self
            .root
            .join(TMP)
            .join(format!("{}.damaged.{}.{seq}", key.hex(), std::process::id()));
        let path = self.path(key);
        std::fs::rename(&path, &aside)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::fs::remove_dir_all(&aside).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", aside.display())))
    }

    /// Keys of every committed artifact.
    pub fn keys(&self) -> std::io::Result<Vec<ArtifactKey>> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            if let Some(key) = ArtifactKey::parse(&entry?.file_name().to_string_lossy()) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The stored artifact whose key starts with `prefix` (at least 8 hex digits), for pins.
    pub fn resolve(&self, prefix: &str) -> Result<ArtifactKey, String> {
        if prefix.len() < 8 {
            return Err(format!(
                "pin {prefix:?} is too short: give at least 8 hex digits of the key"
            ));
        }
        let keys = self
            .keys()
            .map_err(|e| format!("reading the store {}: {e}", self.root.display()))?;
        let matches: Vec<_> = keys.into_iter().filter(|k| k.hex().starts_with(prefix)).collect();
        match matches.as_slice() {
            [key] if self.contains(key) => Ok(*key),
            [] | [_] => Err(format!("pin {prefix:?}: no such artifact in {}", self.root.display())),
            _ => Err(format!(
                "pin {prefix:?} matches {} artifacts; give more digits",
                matches.len()
            )),
        }
    }

    fn lock_file(&self) -> std::io::Result<std::fs::File> {
        let path = self.root.join(LOCK);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Held by a run while it may write: shared, so runs (threads, processes) share a store; waits while
    /// a gc is removing artifacts.
    pub fn lock_for_run(&self) -> std::io::Result<StoreLock> {
        let file = self.lock_file()?;
        file.lock_shared()?;
        Ok(StoreLock { _file: file })
    }

    /// Held while artifacts are removed (gc, verify --repair): exclusive, and refused (`WouldBlock`) while a
    /// run holds the store, whose artifacts and temporary folders are in use.
    pub fn lock_exclusive(&self) -> std::io::Result<StoreLock> {
        let file = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "a run is using the store {} (it holds {}); try again once it has finished",
                    self.root.display(),
                    self.root.join(LOCK).display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Removes every artifact not in `keep`, and every temporary folder. Refuses (`WouldBlock`) while a
    /// run holds the store, whose temporary folders are its work in progress.
    pub fn gc(&self, keep: &BTreeSet<ArtifactKey>) -> std::io::Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let mut report = GcReport::default();
        for key in self.keys()? {
            if !keep.contains(&key) {
                report.bytes += remove_counting(&self.path(&key))?;
                report.removed.push(key);
            }
        }
        for entry in std::fs::read_dir(self.root.join(TMP))? {
            report.bytes += remove_counting(&entry?.path())?;
            report.temporaries += 1;
        }
        Ok(report)
    }
}

/// Every file in an artifact folder except the manifest, hidden ones included, with size and content hash,
/// sorted.
fn list_files(dir: &Path) -> std::io::Result<Vec<FileEntry>> {
    let mut paths = Vec::new();
    collect_all_files(dir, dir, &mut paths)?;
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p != Path::new(MANIFEST))
        .map(|relative| {
            let path = dir.join(&relative);
            Ok(FileEntry {
                path: relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: std::fs::metadata(&path)?.len(),
                blake3: hash_file(&path)?.to_hex().to_string(),
            })
        })
        .collect()
}

fn remove_counting(path: &Path) -> std::io::Result<u64> {
    let mut files = Vec::new();
    let bytes = if path.is_dir() {
        collect_all_files(path, path, &mut files)?;
        files
            .iter()
            .filter_map(|f| std::fs::metadata(path.join(f)).ok())
            .map(|m| m.len())
            .sum()
    } else {
        0
    };
    if path.is_dir() {
        std::fs::remove_dir_all(path)?
    } else {
        std::fs::remove_file(path)?
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyHasher;

    fn manifest() -> Manifest {
        Manifest {
            key: KeyHasher::new("t").finish(),
            stage: "s".into(),
            kind: "k".into(),
            version: 1,
            scene: None,
            params: serde_json::json!({}),
            inputs: BTreeMap::new(),
            files: Vec::new(),
            started: 0.0,
            seconds: 0.0,
        }
    }

    #[test]
    fn hidden_files_a_stage_writes_are_in_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = KeyHasher::new("hidden").finish();
        let pending = store.begin(key).unwrap();
        std::fs::create_dir(pending.dir.join("out")).unwrap();
        std::fs::write(pending.dir.join("out/.view.png"), b"pixels").unwrap();
        let committed = store.commit(pending, manifest()).unwrap();
        let paths: Vec<&str> = committed.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["out/.view.png"]);
        std::fs::write(store.path(&key).join("out/.view.png"), b"other!").unwrap();
        assert!(
            store
                .verify(&key)
                .unwrap_err()
                .contains("out/.view.png has other content")
        );
    }

    #[test]
    fn an_artifact_appears_only_when_committed_and_a_second_commit_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = KeyHasher::new("artifact").finish();
        let first = store.begin(key).unwrap();
        std::fs::create_dir_all(first.dir.join("out")).unwrap();
        std::fs::write(first.dir.join("out/a.bin"), b"first").unwrap();
        assert!(!store.contains(&key), "nothing is visible before the commit");
        let second = store.begin(key).unwrap();
        std::fs::write(second.dir.join("b.bin"), b"second").unwrap();
        let committed = store.commit(first, manifest()).unwrap();
        assert_eq!(committed.files[0].path, "out/a.bin");
        assert_eq!(committed.files[0].size, 5);
        let again = store.commit(second, manifest()).unwrap();
        assert_eq!(again, committed, "the first commit wins");
        store.verify(&key).unwrap();
        std::fs::write(store.path(&key).join("out/a.bin"), b"tampered").unwrap();
        assert!(store.verify(&key).is_err());
    }

    #[test]
    fn a_failed_commit_removes_its_temporary_folder_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = KeyHasher::new("blocked").finish();
        // A file where the artifact's folder goes: the rename into place fails.
        std::fs::write(store.path(&key), b"in the way").unwrap();
        let pending = store.begin(key).unwrap();
        std::fs::write(pending.dir.join("a.bin"), b"work").unwrap();
        let temporary = pending.dir.clone();
        let error = store.commit(pending, manifest()).unwrap_err().to_string();
        assert!(error.contains(&temporary.display().to_string()), "{error}");
        assert!(!temporary.exists(), "the failed commit left {}", temporary.display());
    }

    #[test]
    fn pins_resolve_unique_prefixes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = KeyHasher::new("pinned").finish();
        let pending = store.begin(key).unwrap();
        store.commit(pending, manifest()).unwrap();
        assert_eq!(store.resolve(&key.hex()[..10]), Ok(key));
        assert!(store.resolve(&key.hex()[..6]).unwrap_err().contains("at least 8"));
        assert!(store.resolve("00000000").unwrap_err().contains("no such artifact"));
    }

    #[test]
    fn gc_removes_unkept_artifacts_and_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (keep, drop) = (KeyHasher::new("keep").finish(), KeyHasher::new("drop").finish());
        for key in [keep, drop] {
            let pending = store.begin(key).unwrap();
            store.commit(pending, manifest()).unwrap();
        }
        let _abandoned = store.begin(drop).unwrap();
        let report = store.gc(&[keep].into()).unwrap();
        assert_eq!(report.removed, [drop]);
        assert_eq!(report.temporaries, 1);
        assert_eq!(store.keys().unwrap(), [keep]);
    }
}
