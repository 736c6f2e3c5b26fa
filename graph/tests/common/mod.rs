//! Shared helpers: a temporary project with scene folders and a pipeline file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lrf_graph::testing::{Counter, registry};
use lrf_graph::{Pipeline, Plan, RunOptions, RunReport, Session, Store};

/// Five stages over train and eval scenes: per-scene ingest and features, a global finetune over
/// train scenes, a per-scene fit that reads the finetuned model, and a global summary.
pub const PIPELINE: &str = r#"
pipeline: test
work_dir: work
scenes:
  - {glob: "scenes/train/*", role: train}
  - {glob: "scenes/eval/*", role: eval}
stages:
  - id: ingest
    kind: test-source
    inputs: {scene: scenes}
  - id: features
    kind: test-map
    inputs: {data: ingest}
    params: {salt: 0}
  - id: finetune
    kind: test-reduce
    roles: [train]
    inputs: {items: features}
  - id: fit
    kind: test-apply
    inputs: {data: features, model: finetune}
    params: {salt: 0, fail_on: []}
  - id: summary
    kind: test-reduce
    inputs: {items: fit}
"#;

pub struct Project {
    pub dir: tempfile::TempDir,
    pub counter: Counter,
}

impl Project {
    /// A project with `train` and `eval` scenes and the pipeline text.
    pub fn new(pipeline: &str, train: &[&str], eval: &[&str]) -> Self {
        let project = Project {
            dir: tempfile::tempdir().expect("temp dir"),
            counter: Counter::new(),
        };
        for name in train {
            project.add_scene("train", name);
        }
        for name in eval {
            project.add_scene("eval", name);
        }
        project.write_pipeline(pipeline);
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pipeline_file(&self) -> PathBuf {
        self.path().join("pipeline.yaml")
    }

    pub fn write_pipeline(&self, text: &str) {
        std::fs::write(self.pipeline_file(), text).expect("write pipeline");
    }

    pub fn add_scene(&self, role: &str, name: &str) {
        let dir = self.path().join("scenes").join(role).join(name).join("images");
        std::fs::create_dir_all(&dir).expect("scene dir");
        std::fs::write(dir.join("0.txt"), format!("pixels of {name}")).expect("scene file");
    }

    pub fn plan(&self) -> (Arc<Pipeline>, Arc<Plan>, Store) {
        let session =
            Session::open(&self.pipeline_file(), &registry(&self.counter)).unwrap_or_else(|e| panic!("{e:#}"));
        (session.pipeline, session.plan, session.store)
    }

    /// Runs the pipeline with `workers` threads; returns the report and the executions it caused.
    pub fn run(&self, workers: usize) -> (RunReport, Vec<(String, Option<String>)>) {
        self.run_with(RunOptions {
            workers,
            ..RunOptions::default()
        })
    }

    pub fn run_with(&self, options: RunOptions) -> (RunReport, Vec<(String, Option<String>)>) {
        self.counter.clear();
        let (pipeline, plan, store) = self.plan();
        let report = lrf_graph::run(pipeline, plan, store, options).expect("run");
        (report, self.counter.runs())
    }
}

/// (stage, scene) pairs as the counter records them.
pub fn runs(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    let mut runs: Vec<_> = list
        .iter()
        .map(|(s, c)| (s.to_string(), c.map(str::to_string)))
        .collect();
    runs.sort();
    runs
}
