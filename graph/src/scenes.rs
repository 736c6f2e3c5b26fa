//! The scene collection: folders matched by the pipeline's globs or written by its generators,
//! each with a role and a content key (name + every file's path, size and blake3), so an edited
//! scene is a changed scene.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::file_hashes::FileHashes;
use crate::key::{ArtifactKey, KeyHasher};
use crate::pipeline::{GenerateSource, Origin, SourceNode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// The folder's name; unique over the pipeline.
    pub name: String,
    pub role: String,
    pub dir: PathBuf,
    pub key: ArtifactKey,
}

/// A scene folder that matched but cannot be used; the other scenes go on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedScene {
    pub dir: PathBuf,
    /// What is wrong, and how to fix it.
    pub reason: String,
}

impl std::fmt::Display for RejectedScene {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scene folder {} is left out: {}", self.dir.display(), self.reason)
    }
}

/// What a pipeline's sources hold: the usable scenes, sorted by name, and the folders left out.
#[derive(Debug, Default)]
pub struct Collected {
    pub scenes: Vec<Scene>,
    pub rejected: Vec<RejectedScene>,
}

/// The scenes of a pipeline's sources: what `plan`, `run`, `gc` and `watch` all start from. A
/// `generate:` source's folder is generated first when missing (see [`materialise`]); its
/// subfolders are then scenes as if by the glob `<folder>/*`. A folder whose content cannot be read
/// (a broken link, a link loop, a file without permission) is rejected alone.
pub fn collect(sources: &[SourceNode], hashes: &FileHashes) -> anyhow::Result<Collected> {
    let mut patterns = Vec::new();
    for source in sources {
        let pattern = match &source.origin {
            Origin::Glob(pattern) => pattern.clone(),
            Origin::Generate(generate) => {
                materialize(generate, &source.role)?;
                format!("{}/*", glob::Pattern::escape(&generate.dir.to_string_lossy()))
            }
        };
        patterns.push(Pattern {
            glob: pattern,
            role: source.role.clone(),
            allow_empty: source.allow_empty,
        });
    }
    discover(&patterns, hashes)
}

/// A glob over scene folders with the role its scenes get.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub glob: String,
    pub role: String,
    /// Matching no scene folder is fine; otherwise an error.
    pub allow_empty: bool,
}

/// Makes sure a generated source's folder exists: an existing folder is reused as it is (so
/// reruns are incremental and scene keys unchanged); otherwise the generator writes into a hidden
/// temporary sibling that is renamed into place once complete, so a failed or killed run never
/// leaves a half folder. Returns whether it generated now. Another process generating the same
/// folder at the same time is fine: the first rename wins and the other's copy is dropped.
pub fn materialize(source: &GenerateSource, role: &str) -> anyhow::Result<bool> {
    if source.dir.is_dir() {
        return Ok(false);
    }
    let name = &source.generator.name;
    let what = || format!("{}: scene source `generate: {name}` (role {role})", source.at);
    let parent = source.dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("{}: creating {}", what(), parent.display()))?;
    let folder = source.dir.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let partial = Partial(parent.join(format!(".{folder}.partial-{}-{nanos}", std::process::id())));
    std::fs::create_dir(&partial.0).with_context(|| format!("{}: creating {}", what(), partial.0.display()))?;
    eprintln!(
        "scenes: generating `{name}` {} into {}",
        crate::key::canonical_json(&source.params),
        source.dir.display()
    );
    let start = Instant::now();
    source
        .generator
        .generate(&source.params, &partial.0)
        .with_context(|| format!("{}: generator `{name}` failed", what()))?;
    let scenes = scene_folders(&partial.0).with_context(|| format!("{}: reading what `{name}` wrote", what()))?;
    anyhow::ensure!(scenes > 0, "{}: generator `{name}` wrote no scene folder", what());
    if let Err(error) = std::fs::rename(&partial.0, &source.dir) {
        if source.dir.is_dir() {
            return Ok(false); // another process put it in place first; `partial` is removed
        }
        return Err(error).with_context(|| format!("{}: moving the scenes into {}", what(), source.dir.display()));
    }
    eprintln!(
        "scenes: generated {scenes} scene folder(s) in {} ({:.1} s)",
        source.dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// A folder being generated, removed when dropped unless it was moved into place.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The number of subfolders of `dir` that are scenes (not hidden).
fn scene_folders(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        n += usize::from(entry.file_type()?.is_dir() && !entry.file_name().to_string_lossy().starts_with('.'));
    }
    Ok(n)
}

/// Finds the scenes of the patterns, sorted by name. Hidden folders are skipped; a pattern matching no
/// folder is an error unless it allows that.
pub fn discover(sources: &[Pattern], hashes: &FileHashes) -> anyhow::Result<Collected> {
    let mut scenes: BTreeMap<String, Scene> = BTreeMap::new();
    let mut rejected = Vec::new();
    for Pattern {
        glob: pattern,
        role,
        allow_empty,
    } in sources
    {
        let paths = glob::glob(pattern).map_err(|e| anyhow::anyhow!("scene glob {pattern:?}: {e}"))?;
        let mut matched = 0;
        for dir in paths {
            let dir = dir?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !dir.is_dir() || name.starts_with('.') {
                continue;
            }
            matched += 1;
            if let Some(other) = scenes.get(&name) {
                anyhow::bail!(
                    "two scene folders are named {name:?} ({} and {}); scene names must be unique",
                    other.dir.display(),
                    dir.display()
                );
            }
            let key = match scene_key(&name, &dir, hashes) {
                Ok(key) => key,
                Err(error) => {
                    rejected.push(RejectedScene {
                        dir,
                        reason: format!("{error:#}"),
                    });
                    continue;
                }
            };
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
        if matched == 0 && !allow_empty {
            anyhow::bail!(
                "scene glob {pattern:?} (role {role}) matches no scene folder; check the path (globs are relative \
                 to the pipeline file), or give the source `allow_empty: true` if it fills later"
            );
        }
    }
    Ok(Collected {
        scenes: scenes.into_values().collect(),
        rejected,
    })
}

fn scene_key(name: &str, dir: &Path, hashes: &FileHashes) -> anyhow::Result<ArtifactKey> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = KeyHasher::new("lrf-scene");
    hasher.field(name.as_bytes());
    for relative in files {
        let path = dir.join(&relative);
        let hash = hashes
            .hash(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        hasher
            .field(relative.to_string_lossy().as_bytes())
            .field(hash.as_bytes());
    }
    Ok(hasher.finish())
}

/// Every file under `dir`, relative to `root`, skipping hidden entries. Symbolic links to folders are
/// followed (a scene may keep its images elsewhere); a link back to a folder being walked is an error,
/// as is a broken link. Errors name the path.
pub fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    walk(root, dir, Hidden::Skip, &mut Vec::new(), out)
}

/// Every file under `dir`, relative to `root`, hidden ones included (what an artifact folder holds).
pub fn collect_all_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    walk(root, dir, Hidden::Include, &mut Vec::new(), out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hidden {
    Skip,
    Include,
}

fn walk(
    root: &Path,
    dir: &Path,
    hidden: Hidden,
    walking: &mut Vec<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let named = |path: &Path, e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let real = std::fs::canonicalize(dir).map_err(|e| named(dir, e))?;
    if walking.contains(&real) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link back to {}, which contains it (a loop); remove the link",
                dir.display(),
                real.display()
            ),
        ));
    }
    walking.push(real);
    for entry in std::fs::read_dir(dir).map_err(|e| named(dir, e))? {
        let entry = entry.map_err(|e| named(dir, e))?;
        if hidden == Hidden::Skip && entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let mut kind = entry.file_type().map_err(|e| named(&path, e))?;
        if kind.is_symlink() {
            kind = std::fs::metadata(&path)
                .map_err(|e| {
                    named(
                        &path,
                        std::io::Error::new(e.kind(), format!("a broken symbolic link ({e})")),
                    )
                })?
                .file_type();
        }
        if kind.is_dir() {
            walk(root, &path, hidden, walking, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    walking.pop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::registry::Registry;
    use crate::session::Session;
    use crate::testing::{Counter, registry};

    /// The test kinds plus the generator `pair`: scene folders `a` and `b` holding `text`, or
    /// none with `empty`, or a failure with `fail`; every call counted.
    fn with_generator(calls: &Arc<AtomicUsize>) -> Registry {
        let mut registry = registry(&Counter::new());
        let calls = calls.clone();
        registry.register_generator(
            "pair",
            1,
            |params| {
                let text = params.get("text").cloned().unwrap_or(json!("hi"));
                let flag = |name: &str| params.get(name).cloned().unwrap_or(json!(false));
                Ok(json!({"text": text, "fail": flag("fail"), "empty": flag("empty")}))
            },
            move |params, out| {
                calls.fetch_add(1, Ordering::SeqCst);
                if params["empty"] == true {
                    return Ok(());
                }
                for name in ["a", "b"] {
                    std::fs::create_dir(out.join(name))?;
                    std::fs::write(out.join(name).join("x.txt"), params["text"].to_string())?;
                    if params["fail"] == true {
                        anyhow::bail!("out of paint");
                    }
                }
                Ok(())
            },
        );
        registry
    }

    /// A pipeline file in `dir` whose scenes `pair` generates with `params`.
    fn pipeline(dir: &Path, params: &str) -> PathBuf {
        let file = dir.join("p.yaml");
        let text = format!(
            "pipeline: g\nwork_dir: work\nscenes:\n  - generate: pair\n    params: {params}\n    role: train\nstages:\n  - {{id: s, kind: test-source, inputs: {{scene: scenes}}}}\n"
        );
        std::fs::write(&file, text).unwrap();
        file
    }

    /// The entries of `<dir>/work/scenes`, hidden ones included.
    fn generated(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("work/scenes"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn a_generated_source_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let registry = with_generator(&calls);
        let file = pipeline(dir.path(), "{text: hi}");
        let first = Session::open(&file, &registry).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let names: Vec<_> = first.plan.scenes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let folders = generated(dir.path());
        assert_eq!(folders.len(), 1, "no temporary left: {folders:?}");
        assert!(folders[0].starts_with("pair-"), "{folders:?}");
        assert_eq!(
            first.plan.scenes[0].dir,
            dir.path().join("work/scenes").join(&folders[0]).join("a")
        );
        assert!(
            first.plan_summary().contains(&format!(
                "train scenes generated by `pair` in {}",
                dir.path().join("work/scenes").join(&folders[0]).display()
            )),
            "{}",
            first.plan_summary()
        );

        let second = Session::open(&file, &registry).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the folder is reused");
        assert_eq!(second.plan.scenes, first.plan.scenes, "same scenes, same keys");

        pipeline(dir.path(), "{text: ho}");
        let third = Session::open(&file, &registry).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "changed params generate again");
        assert_eq!(generated(dir.path()).len(), 2, "into a new folder");
        assert_ne!(third.plan.scenes[0].dir, first.plan.scenes[0].dir);
        assert_ne!(third.plan.scenes[0].key, first.plan.scenes[0].key);
    }

    #[test]
    fn a_failing_generator_leaves_no_folder_and_names_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let registry = with_generator(&calls);
        let file = pipeline(dir.path(), "{fail: true}");
        let error = format!("{:#}", Session::open(&file, &registry).err().expect("fails"));
        assert!(
            error.starts_with(&format!(
                "{}:4:5: scene source `generate: pair` (role train): generator `pair` failed: out of paint",
                file.display()
            )),
            "{error}"
        );
        assert!(generated(dir.path()).is_empty(), "{:?}", generated(dir.path()));

        pipeline(dir.path(), "{empty: true}");
        let error = format!("{:#}", Session::open(&file, &registry).err().expect("fails"));
        assert!(error.ends_with("generator `pair` wrote no scene folder"), "{error}");
        assert!(generated(dir.path()).is_empty(), "{:?}", generated(dir.path()));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a failure is retried on the next open");
    }
}
