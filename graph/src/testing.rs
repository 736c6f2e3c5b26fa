//! Tiny stages for tests and the engine benchmark: they derive their output from their inputs
//! deterministically and record every execution in a `Counter`, so tests can assert exactly what
//! a run computed. Not for pipelines that do real work.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::registry::Registry;
use crate::stage::{Input, Job, Port, SCENE_TYPE, Scope, Signature, Stage};

/// One stage execution: (stage id, scene; none for global stages).
pub type Execution = (String, Option<String>);

/// Executions as (stage id, scene), in memory and optionally appended to a file (one
/// `stage<TAB>scene` line each) so executions survive a killed process.
#[derive(Clone, Default)]
pub struct Counter {
    runs: Arc<Mutex<Vec<Execution>>>,
    log: Option<PathBuf>,
}

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_log(log: &Path) -> Self {
        Counter {
            runs: Arc::default(),
            log: Some(log.to_owned()),
        }
    }

    fn record(&self, job: &Job) {
        let run = (job.stage_id.to_owned(), job.scene.map(str::to_owned));
        if let Some(log) = &self.log
            && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log)
        {
            // One write per line: appends of a few bytes are atomic, so a kill never tears a line.
            let _ = file.write_all(format!("{}\t{}\n", run.0, run.1.as_deref().unwrap_or("-")).as_bytes());
        }
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).push(run);
    }

    /// Executions so far, sorted.
    pub fn runs(&self) -> Vec<Execution> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        runs.sort();
        runs
    }

    /// Forgets the executions so far (between runs of one test).
    pub fn clear(&self) {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The shapes the test kinds come in.
#[derive(Clone, Copy)]
enum Shape {
    /// per-scene: `scene` (scene) → `data` (blob)
    Source,
    /// per-scene: `data` (blob) → `data` (blob)
    Map,
    /// global: `items` (blob, one per scene) → `model` (model)
    Reduce,
    /// per-scene: `data` (blob) + `model` (model) → `data` (blob)
    Apply,
}

/// Parameters shared by every test kind.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TestParams {
    /// Changes the output (and the key) without changing anything else.
    salt: u32,
    /// Scenes on which the stage fails.
    fail_on: Vec<String>,
    /// Sleeps this long per run (for crash tests), at most 10 000.
    sleep_ms: u64,
    /// Waits (up to 10 s, then fails) until this stage has run `await_count` times: shows that the
    /// engine goes on with other work while this instance runs.
    await_stage: Option<String>,
    await_count: usize,
    /// A reduce that runs over the scenes that succeeded (`StageKind::PARTIAL_INPUTS`).
    partial: bool,
}

struct TestStage {
    kind: &'static str,
    shape: Shape,
    params: TestParams,
    counter: Counter,
}

/// A registry with the built-in kinds plus `test-source`, `test-map`, `test-reduce` and
/// `test-apply`, all counting into `counter`.
pub fn registry(counter: &Counter) -> Registry {
    let mut registry = Registry::builtin();
    for (kind, shape) in [
        ("test-source", Shape::Source),
        ("test-map", Shape::Map),
        ("test-reduce", Shape::Reduce),
        ("test-apply", Shape::Apply),
    ] {
        let counter = counter.clone();
        registry.insert(kind, move |params, _| {
            let params: TestParams = serde_json::from_value(params).map_err(|e| e.to_string())?;
            if params.sleep_ms > 10_000 {
                return Err(format!("sleep_ms = {} is out of range 0..=10000", params.sleep_ms));
            }
            Ok(Arc::new(TestStage {
                kind,
                shape,
                params,
                counter: counter.clone(),
            }) as Arc<dyn Stage>)
        });
    }
    registry
}

impl Stage for TestStage {
    fn kind(&self) -> &str {
        self.kind
    }

    fn version(&self) -> u32 {
        1
    }

    fn signature(&self) -> Signature {
        let (scope, inputs, output) = match self.shape {
            Shape::Source => (
                Scope::PerScene,
                vec![Port::new("scene", SCENE_TYPE)],
                Port::new("data", "blob"),
            ),
            Shape::Map => (
                Scope::PerScene,
                vec![Port::new("data", "blob")],
                Port::new("data", "blob"),
            ),
            Shape::Reduce => (
                Scope::Global,
                vec![Port::new("items", "blob")],
                Port::new("model", "model"),
            ),
            Shape::Apply => (
                Scope::PerScene,
                vec![Port::new("data", "blob"), Port::new("model", "model")],
                Port::new("data", "blob"),
            ),
        };
        Signature {
            scope,
            inputs,
            outputs: vec![output],
        }
    }

    fn params(&self) -> Result<serde_json::Value, String> {
        serde_json::to_value(&self.params).map_err(|e| e.to_string())
    }

    fn accepts_partial_inputs(&self) -> bool {
        self.params.partial
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        self.counter.record(job);
        std::thread::sleep(std::time::Duration::from_millis(self.params.sleep_ms));
        if let Some(stage) = &self.params.await_stage {
            let started = std::time::Instant::now();
            let count = || self.counter.runs().iter().filter(|(s, _)| s == stage).count();
            while count() < self.params.await_count {
                if started.elapsed().as_secs() >= 10 {
                    anyhow::bail!(
                        "waited 10 s for {} runs of {stage} and saw {}: they did not run meanwhile",
                        self.params.await_count,
                        count()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if let Some(scene) = job.scene.filter(|s| self.params.fail_on.iter().any(|f| f == s)) {
            anyhow::bail!("test stage asked to fail on scene {scene}");
        }
        let mut text = format!(
            "{} {} salt={} scene={:?}\n",
            job.stage_id, self.kind, self.params.salt, job.scene
        );
        for (port, input) in job.inputs {
            match input {
                Input::One(path) => text += &format!("{port}: {}\n", describe(path)?),
                Input::PerScene(paths) => {
                    for (scene, path) in paths {
                        text += &format!("{port}[{scene}]: {}\n", describe(path)?);
                    }
                }
            }
        }
        for failed in job.missing {
            text += &format!(
                "missing {}[{}]: {failed}\n",
                failed.port,
                failed.scene.as_deref().unwrap_or("-")
            );
        }
        let output = &self.signature().outputs[0].name;
        std::fs::write(job.out.join(output), text)?;
        Ok(())
    }
}

/// A scene folder by its file names and sizes, a file by its first line.
fn describe(path: &Path) -> anyhow::Result<String> {
    if path.is_dir() {
        let mut files = Vec::new();
        crate::scenes::collect_files(path, path, &mut files)?;
        files.sort();
        Ok(files
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    f.display(),
                    std::fs::metadata(path.join(f)).map(|m| m.len()).unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(","))
    } else {
        let text = std::fs::read_to_string(path)?;
        Ok(blake3::hash(text.as_bytes()).to_hex()[..16].to_owned())
    }
}
