//! What a stage is to the engine: a kind with a version, typed ports, canonical parameters, a
//! scope (per scene or global) and a run function that fills an output directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Whether a stage runs once per scene or once over all scenes of its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    PerScene,
    Global,
}

/// A named, typed input or output. Types are names (`scene`, `latents`, `checkpoint`, ...): an
/// input accepts exactly the output type it names, so mis-wired graphs fail before running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub ty: String,
}

impl Port {
    pub fn new(name: &str, ty: &str) -> Self {
        Port {
            name: name.to_owned(),
            ty: ty.to_owned(),
        }
    }
}

/// The type of the `scenes` source: a scene folder in the COLMAP/3DGS layout.
pub const SCENE_TYPE: &str = "scene";

/// A stage's shape, as the graph sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub scope: Scope,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

/// One input as a stage receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Input {
    /// A per-scene stage's input, or a global stage's input from another global stage.
    One(PathBuf),
    /// A global stage's input from a per-scene source: scene name → path.
    PerScene(BTreeMap<String, PathBuf>),
}

/// An input that failed upstream: the port that would have carried it, the stage that failed, and
/// the scene (for per-scene sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedInput {
    pub port: String,
    pub stage: String,
    pub scene: Option<String>,
}

impl std::fmt::Display for FailedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scene {
            Some(scene) => write!(f, "{} on {scene}", self.stage),
            None => f.write_str(&self.stage),
        }
    }
}

/// Everything a stage run gets: its scene (per-scene stages), inputs by port, and the directory
/// to write its outputs into (each output port `p` as the file or folder `out/p`).
pub struct Job<'a> {
    pub stage_id: &'a str,
    pub scene: Option<&'a str>,
    pub inputs: &'a BTreeMap<String, Input>,
    /// Scenes left out of `inputs` because they failed upstream; only a stage that accepts partial
    /// inputs ([`StageKind::PARTIAL_INPUTS`]) runs with any, and should say which are missing.
    pub missing: &'a [FailedInput],
    pub out: &'a Path,
    /// Where a long-running stage says how far it is (shown beside its progress bar).
    pub status: &'a (dyn Fn(&str) + Sync),
}

impl std::fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("stage_id", &self.stage_id)
            .field("scene", &self.scene)
            .field("inputs", &self.inputs)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

/// A status sink that shows nothing (for jobs run outside a progress display).
pub fn no_status(_: &str) {}

impl Job<'_> {
    /// Reports progress, e.g. `iteration 1200/7000, loss 0.012`; the scene is added by the engine.
    pub fn status(&self, message: &str) {
        (self.status)(message);
    }

    /// The input on `port`, or an error naming the port (for stages reading their inputs).
    pub fn input(&self, port: &str) -> anyhow::Result<&Input> {
        self.inputs
            .get(port)
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no input `{port}`", self.stage_id))
    }
}

/// A configured stage, ready to run. Built by the registry from a kind and its parameters.
pub trait Stage: Send + Sync {
    fn kind(&self) -> &str;
    /// Bump when the stage's output changes for the same inputs: it is part of every artifact key.
    fn version(&self) -> u32;
    fn signature(&self) -> Signature;
    /// Canonical parameters (defaults filled in): part of every artifact key and manifest. Asked once, when
    /// the pipeline is validated; an error there is an invalid stage.
    fn params(&self) -> Result<serde_json::Value, String>;
    /// See [`StageKind::PARTIAL_INPUTS`].
    fn accepts_partial_inputs(&self) -> bool;
    fn run(&self, job: &Job) -> anyhow::Result<()>;
}

/// A stage written as a Rust type whose fields are its parameters (`#[serde(default)]` gives
/// defaults, `deny_unknown_fields` catches typos). Register it with `Registry::register::<T>()`.
pub trait StageKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
    const VERSION: u32;
    /// A global stage that gathers results (a summary table) may run over the scenes that succeeded when
    /// others failed upstream, rather than be skipped: one broken scene must not hide the corpus. Its
    /// artifact is then keyed by what was missing, so a later complete run computes the whole one, and
    /// stages after it are skipped.
    const PARTIAL_INPUTS: bool = false;
    fn signature(&self) -> Signature;
    /// Checks parameter values; the error should state the allowed range.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// For parameters that name files: resolves them against the pipeline file's folder when the stage is
    /// built, and puts their content (a hash) into fields that serialize, so that the artifact key
    /// changes when a file does.
    fn resolve_paths(&mut self, _base_dir: &Path) -> Result<(), String> {
        Ok(())
    }
    fn run(&self, job: &Job) -> anyhow::Result<()>;
}

impl<T: StageKind> Stage for T {
    fn kind(&self) -> &str {
        T::KIND
    }
    fn version(&self) -> u32 {
        T::VERSION
    }
    fn signature(&self) -> Signature {
        StageKind::signature(self)
    }
    fn params(&self) -> Result<serde_json::Value, String> {
        serde_json::to_value(self).map_err(|e| format!("the parameters cannot be written as JSON: {e}"))
    }
    fn accepts_partial_inputs(&self) -> bool {
        T::PARTIAL_INPUTS
    }
    fn run(&self, job: &Job) -> anyhow::Result<()> {
        StageKind::run(self, job)
    }
}
