//! Runs one stage instance: reuse the stored artifact when its key exists, otherwise run the
//! stage in a temporary folder, check its declared outputs and commit. Failures (errors and
//! panics) become outcomes; they never stop the worker.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::key::ArtifactKey;
use crate::pipeline::Pipeline;
use crate::plan::{Instance, Plan};
use crate::progress::Progress;
use crate::report::{Outcome, Status};
use crate::stage::{FailedInput, Job, Scope};
use crate::store::{Manifest, Presence, Store};

/// Shared by the workers of one process.
pub struct Executor {
    pub pipeline: Arc<Pipeline>,
    pub plan: Arc<Plan>,
    pub store: Store,
    pub progress: Progress,
    /// Re-hash every stored artifact against its manifest before reusing it.
    verify: bool,
    outcomes: Mutex<Vec<Outcome>>,
}

impl Executor {
    pub fn new(pipeline: Arc<Pipeline>, plan: Arc<Plan>, store: Store, progress: Progress, verify: bool) -> Self {
        Executor {
            pipeline,
            plan,
            store,
            progress,
            verify,
            outcomes: Mutex::new(Vec::new()),
        }
    }

    /// Brings one instance into the store; `blocked` names failed inputs. Returns success: whether the
    /// planned artifact is in the store, which a run over partial inputs does not make.
    pub fn execute(&self, stage: usize, scene: Option<usize>, blocked: &[FailedInput]) -> bool {
        let Some(planned) = self.plan.stages[stage].instance(scene) else {
            return false;
        };
        let node = &self.pipeline.stages[stage];
        let scene_name = scene.map(|s| self.plan.scenes[s].name.clone());
        // A stage gathering per-scene results runs over the scenes that succeeded; a failed global input
        // still blocks it.
        let partial = !blocked.is_empty()
            && node.scope() == Scope::Global
            && node.stage.accepts_partial_inputs()
            && blocked.iter().all(|b| b.scene.is_some());
        let instance = if partial {
            Cow::Owned(planned.without_scenes(blocked, &self.plan.scenes))
        } else {
            Cow::Borrowed(planned)
        };
        let missing = if partial { blocked } else { &[] };
        let started = Instant::now();
        let status = if !blocked.is_empty() && !partial {
            Status::Skipped {
                reason: format!("input from {} failed", join(blocked)),
            }
        } else if self.reusable(&instance.key) {
            Status::Cached
        } else {
            self.progress.started(stage, scene_name.as_deref().unwrap_or("global"));
            match self.compute(&instance, scene_name.as_deref(), missing) {
                Ok(()) => Status::Computed,
                Err(error) => {
                    tracing::warn!(stage = %node.id, scene = ?scene_name, "failed: {error:#}");
                    Status::Failed {
                        error: format!("{error:#}"),
                    }
                }
            }
        };
        let ok = matches!(status, Status::Cached | Status::Computed) && !partial;
        let seconds = if status == Status::Computed {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        };
        tracing::debug!(stage = %node.id, scene = ?scene_name, ?status, "instance done");
        self.progress.finished(stage);
        let outcome = Outcome {
            stage: node.id.clone(),
            scene: scene_name,
            key: instance.key,
            status,
            missing: missing.iter().map(FailedInput::to_string).collect(),
            seconds,
        };
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
        ok
    }

    /// Whether the stored artifact can be reused; a damaged one (a file missing or cut short, or with `verify`
    /// any byte changed) is taken out of the store, so that it is computed again.
    fn reusable(&self, key: &ArtifactKey) -> bool {
        let presence = match self.store.presence(key) {
            Presence::Whole if self.verify => match self.store.verify(key) {
                Ok(()) => Presence::Whole,
                Err(why) => Presence::Damaged(why),
            },
            presence => presence,
        };
        match presence {
            Presence::Whole => true,
            Presence::Absent => false,
            Presence::Damaged(why) => {
                tracing::warn!("recomputing a damaged artifact: {why}");
                if let Err(error) = self.store.discard(key) {
                    tracing::warn!("could not remove the damaged artifact: {error}");
                }
                false
            }
        }
    }

    fn compute(&self, instance: &Instance, scene_name: Option<&str>, missing: &[FailedInput]) -> anyhow::Result<()> {
        let stage = instance.stage;
        let node = &self.pipeline.stages[stage];
        let inputs = self.plan.job_inputs(instance, node.scope() == Scope::PerScene);
        let pending = self.store.begin(instance.key)?;
        let started = (
            Instant::now(),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
        );
        let label = scene_name.unwrap_or("global");
        let status = |message: &str| self.progress.started(stage, &format!("{label}: {message}"));
        let job = Job {
            stage_id: &node.id,
            scene: scene_name,
            inputs: &inputs,
            missing,
            out: &pending.dir,
            status: &status,
        };
        let result = match catch_unwind(AssertUnwindSafe(|| node.stage.run(&job))) {
            Ok(result) => result,
            Err(panic) => Err(anyhow::anyhow!("stage panicked: {}", panic_message(&panic))),
        };
        let missing: Vec<&str> = node
            .signature
            .outputs
            .iter()
            .filter(|p| !pending.dir.join(&p.name).exists())
            .map(|p| p.name.as_str())
            .collect();
        let result = result.and_then(|()| match missing.as_slice() {
            [] => Ok(()),
            _ => Err(anyhow::anyhow!(
                "the stage did not write its output(s) {}",
                missing.join(", ")
            )),
        });
        if let Err(error) = result {
            self.store.abort(pending);
            return Err(error);
        }
        let manifest = Manifest {
            key: instance.key,
            stage: node.id.clone(),
            kind: node.stage.kind().to_owned(),
            version: node.stage.version(),
            scene: scene_name.map(str::to_owned),
            params: node.params.clone(),
            inputs: instance
                .inputs
                .iter()
                .map(|(port, s)| (port.clone(), s.iter().map(|i| i.key).collect()))
                .collect(),
            files: Vec::new(),
            started: started.1.as_secs_f64(),
            seconds: started.0.elapsed().as_secs_f64(),
        };
        self.store.commit(pending, manifest)?;
        Ok(())
    }

    /// A copy of the outcomes so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn take_outcomes(&self) -> Vec<Outcome> {
        std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn join(inputs: &[FailedInput]) -> String {
    inputs.iter().map(FailedInput::to_string).collect::<Vec<_>>().join(", ")
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
