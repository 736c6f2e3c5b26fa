//! The scene collection: folders matched by the pipeline's globs, each with a role and a content
//! key (name + every file's path, size and blake3), so an edited scene is a changed scene.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::key::{ArtifactKey, KeyHasher, hash_file};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// The folder's name; unique over the pipeline.
    pub name: String,
    pub role: String,
    pub dir: PathBuf,
    pub key: ArtifactKey,
}

/// Finds the scenes of `(glob, role)` sources, sorted by name. Hidden folders are skipped.
pub fn discover(sources: &[(String, String)]) -> anyhow::Result<Vec<Scene>> {
    let mut scenes: BTreeMap<String, Scene> = BTreeMap::new();
    for (pattern, role) in sources {
        let paths = glob::glob(pattern).map_err(|e| anyhow::anyhow!("scene glob {pattern:?}: {e}"))?;
        for dir in paths {
            let dir = dir?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !dir.is_dir() || name.starts_with('.') {
                continue;
            }
            if let Some(other) = scenes.get(&name) {
                anyhow::bail!(
                    "two scene folders are named {name:?} ({} and {}); scene names must be unique",
                    other.dir.display(),
                    dir.display()
                );
            }
            let key = scene_key(&name, &dir)?;
            scenes.insert(
                name.clone(),
                Scene {
                    name,
                    role: role.clone(),
                    dir,
                    key,
                },
            );
        }
    }
    Ok(scenes.into_values().collect())
}

fn scene_key(name: &str, dir: &Path) -> anyhow::Result<ArtifactKey> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = KeyHasher::new("lrf-scene");
    hasher.field(name.as_bytes());
    for relative in files {
        let path = dir.join(&relative);
        let hash = hash_file(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        hasher
            .field(relative.to_string_lossy().as_bytes())
            .field(hash.as_bytes());
    }
    Ok(hasher.finish())
}

/// Every file under `dir`, relative to `root`, skipping hidden entries.
pub fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}
