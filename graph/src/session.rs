//! One pipeline opened for work: validated graph, discovered scenes, store and plan together,
//! which is what `run`, `plan` and `gc` each start from.

use std::path::Path;
use std::sync::Arc;

use crate::dataflow::{RunOptions, run};
use crate::pipeline::Pipeline;
use crate::plan::Plan;
use crate::registry::Registry;
use crate::report::RunReport;
use crate::store::{GcReport, Store};

pub struct Session {
    pub pipeline: Arc<Pipeline>,
    pub plan: Arc<Plan>,
    pub store: Store,
}

impl Session {
    /// Loads and validates the pipeline file, finds its scenes and computes every key.
    pub fn open(file: &Path, registry: &Registry) -> anyhow::Result<Self> {
        let pipeline = Pipeline::load(file, registry)?;
        let store = Store::open(&pipeline.work_dir)
            .map_err(|e| anyhow::anyhow!("opening the store in {}: {e}", pipeline.work_dir.display()))?;
        let scenes = crate::scenes::collect(&pipeline.sources)?;
        if scenes.is_empty() {
            let sources: Vec<String> = pipeline.sources.iter().map(|s| s.describe()).collect();
            tracing::warn!("no scene folder from {sources:?} (globs are relative to the pipeline file)");
        }
        let plan = Plan::new(&pipeline, scenes, &store).map_err(anyhow::Error::msg)?;
        Ok(Session {
            pipeline: Arc::new(pipeline),
            plan: Arc::new(plan),
            store,
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

    /// Removes every artifact this pipeline does not reference now (pins are referenced).
    pub fn gc(&self) -> std::io::Result<GcReport> {
        self.store.gc(&self.plan.keys().collect())
    }
}
