//! One pipeline opened for work: validated graph, discovered scenes, store and plan together,
//! which is what `run`, `plan` and `gc` each start from.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::dataflow::{RunOptions, run};
use crate::file_hashes::FileHashes;
use crate::key::ArtifactKey;
use crate::pipeline::Pipeline;
use crate::plan::Plan;
use crate::registry::Registry;
use crate::report::RunReport;
use crate::scenes::{Collected, RejectedScene};
use crate::store::{GcReport, Store};

/// What `gc` may do beyond its checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Remove even when the pipeline finds no scene or references nothing in the store.
    pub force: bool,
}

/// A stored artifact as `gc --dry-run` lists it (stage and scene from its manifest; `None` when the
/// manifest cannot be read).
#[derive(Debug, Clone)]
pub struct StoredArtifact {
    pub key: ArtifactKey,
    pub stage: Option<String>,
    pub scene: Option<String>,
    pub bytes: u64,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Stored artifacts of the pipeline that were re-hashed.
    pub checked: usize,
    /// One message per damaged artifact, naming its stage, scene and files.
    pub damaged: Vec<String>,
    /// How many damaged artifacts were removed (with `repair`).
    pub removed: usize,
}

/// How [`Session::open_with`] opens a pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Hash every scene file, ignoring (and refreshing) the file hash cache.
    pub rehash: bool,
}

pub struct Session {
    pub pipeline: Arc<Pipeline>,
    pub plan: Arc<Plan>,
    pub store: Store,
    /// Scene folders that matched but cannot be used (the plan goes on without them).
    pub rejected: Vec<RejectedScene>,
}

impl Session {
    /// Loads and validates the pipeline file, finds its scenes and computes every key.
    pub fn open(file: &Path, registry: &Registry) -> anyhow::Result<Self> {
        Self::open_with(file, registry, OpenOptions::default())
    }

    /// [`Session::open`] with options: `rehash` reads every scene file rather than trusting the file hash
    /// cache ([`crate::file_hashes`]).
    pub fn open_with(file: &Path, registry: &Registry, options: OpenOptions) -> anyhow::Result<Self> {
        let pipeline = Pipeline::load(file, registry)?;
        let store = Store::open(&pipeline.work_dir)
            .map_err(|e| anyhow::anyhow!("opening the store in {}: {e}", pipeline.work_dir.display()))?;
        let hashes = FileHashes::open(&pipeline.work_dir, options.rehash);
        let Collected { scenes, rejected } = crate::scenes::collect(&pipeline.sources, &hashes)?;
        hashes.save();
        if scenes.is_empty() {
            let sources: Vec<String> = pipeline.sources.iter().map(|s| s.describe()).collect();
            tracing::warn!("no scene folder from {sources:?} (globs are relative to the pipeline file)");
        }
        let plan = Plan::new(&pipeline, scenes, &store).map_err(anyhow::Error::msg)?;
        Ok(Session {
            pipeline: Arc::new(pipeline),
            plan: Arc::new(plan),
            store,
            rejected,
        })
    }

    /// Computes what is missing; see `dataflow::run`.
    pub fn run(&self, options: RunOptions) -> anyhow::Result<RunReport> {
        run(self.pipeline.clone(), self.plan.clone(), self.store.clone(), options)
    }

    /// `lrf-flow plan`'s table: per stage, cached and to compute.
    pub fn plan_summary(&self) -> String {
        self.plan.summary(&self.pipeline, &self.store)
    }

    /// Re-hashes every stored artifact this pipeline references against its manifest, calling `progress`
    /// with (done, total). With `repair`, damaged artifacts are removed, so that the next run computes them;
    /// that waits for no run, and is refused while one holds the store.
    pub fn verify(&self, repair: bool, mut progress: impl FnMut(usize, usize)) -> anyhow::Result<VerifyReport> {
        let _lock = match repair {
            true => Some(
                self.store
                    .lock_exclusive()
                    .map_err(|e| anyhow::anyhow!("verify --repair: {e}"))?,
            ),
            false => None,
        };
        let keys: BTreeSet<ArtifactKey> = self.plan.keys().filter(|k| self.store.contains(k)).collect();
        let mut report = VerifyReport::default();
        for (done, key) in keys.iter().enumerate() {
            progress(done, keys.len());
            report.checked += 1;
            if let Err(why) = self.store.verify(key) {
                let message = match repair.then(|| self.store.discard(key)) {
                    Some(Err(e)) => format!("{why} (removing it failed: {e})"),
                    Some(Ok(())) => {
                        report.removed += 1;
                        why
                    }
                    None => why,
                };
                report.damaged.push(message);
            }
        }
        progress(keys.len(), keys.len());
        Ok(report)
    }

    /// The stored artifacts this pipeline does not reference now (pins are referenced): what `gc` removes.
    pub fn unreferenced(&self) -> anyhow::Result<Vec<StoredArtifact>> {
        let keep: BTreeSet<ArtifactKey> = self.plan.keys().collect();
        let keys = self
            .store
            .keys()
            .map_err(|e| anyhow::anyhow!("reading the store {}: {e}", self.store.root().display()))?;
        Ok(keys
            .into_iter()
            .filter(|key| !keep.contains(key))
            .map(|key| match self.store.manifest(&key) {
                Ok(manifest) => StoredArtifact {
                    key,
                    stage: Some(manifest.stage),
                    scene: manifest.scene,
                    bytes: manifest.files.iter().map(|f| f.size).sum(),
                },
                Err(_) => StoredArtifact {
                    key,
                    stage: None,
                    scene: None,
                    bytes: 0,
                },
            })
            .collect())
    }

    /// Removes every artifact this pipeline does not reference now, and the temporaries of killed runs.
    /// Unless `options.force`, refuses when that would empty a non-empty store, or when the pipeline finds
    /// no scene: a mistyped glob or the wrong pipeline file must not delete the corpus's work.
    pub fn gc(&self, options: GcOptions) -> anyhow::Result<GcReport> {
        if !options.force {
            let stored = self
                .store
                .keys()
                .map_err(|e| anyhow::anyhow!("reading the store: {e}"))?;
            let unreferenced = self.unreferenced()?;
            if self.plan.scenes.is_empty() && !unreferenced.is_empty() {
                let sources: Vec<String> = self.pipeline.sources.iter().map(|s| s.describe()).collect();
                anyhow::bail!(
                    "the pipeline finds no scene ({}), so gc would remove all {} artifact(s) of {}; fix the \
                     scenes, or give --force to remove them",
                    sources.join(", "),
                    unreferenced.len(),
                    self.store.root().display()
                );
            }
            if !stored.is_empty() && unreferenced.len() == stored.len() {
                anyhow::bail!(
                    "this pipeline references none of the {} artifact(s) in {}, so gc would empty the store; \
                     is it the pipeline that made them? Give --force to remove them",
                    stored.len(),
                    self.store.root().display()
                );
            }
        }
        self.store
            .gc(&self.plan.keys().collect())
            .map_err(|e| anyhow::anyhow!("gc in {}: {e}", self.store.root().display()))
    }
}
