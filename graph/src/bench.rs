//! Engine overhead, measured on the counting test stages (which do almost nothing): a cold run,
//! a no-op rerun (scene hashing, planning and the dataflow, everything cached), and the same
//! stages called in a plain loop, so the difference is what the engine costs per record.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::dataflow::RunOptions;
use crate::plan::Plan;
use crate::session::Session;
use crate::stage::{Job, Scope};
use crate::testing::{Counter, registry};

/// Six stages: three per-scene in a chain, a global over train scenes, a per-scene stage using
/// it, and a global over everything.
const PIPELINE: &str = r#"
pipeline: bench
work_dir: work
scenes:
  - {glob: "scenes/train/*", role: train}
  - {glob: "scenes/eval/*", role: eval}
stages:
  - {id: ingest, kind: test-source, inputs: {scene: scenes}}
  - {id: encode, kind: test-map, inputs: {data: ingest}}
  - {id: mine, kind: test-map, inputs: {data: encode}}
  - {id: finetune, kind: test-reduce, roles: [train], inputs: {items: mine}}
  - {id: fit, kind: test-apply, inputs: {data: encode, model: finetune}}
  - {id: report, kind: test-reduce, inputs: {items: fit}}
"#;

pub struct BenchReport {
    pub scenes: usize,
    pub instances: usize,
    pub workers: usize,
    /// Cold run: every instance computed and committed to the store.
    pub cold_seconds: f64,
    /// Rerun with nothing changed: open (hash scenes, plan) + dataflow, all cached.
    pub noop_seconds: f64,
    /// Of which opening the session (scene hashing, validation, planning).
    pub noop_open_seconds: f64,
    /// The same stage runs called in a plain loop, without store or dataflow.
    pub loop_seconds: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |s: f64| s / self.instances as f64 * 1e6;
        writeln!(
            f,
            "engine bench: 6 stages × {} scenes = {} instances, {} workers",
            self.scenes, self.instances, self.workers
        )?;
        writeln!(
            f,
            "  plain loop (stages only)   {:8.3} s  {:8.1} µs/instance",
            self.loop_seconds,
            per(self.loop_seconds)
        )?;
        writeln!(
            f,
            "  cold run (dataflow+store)  {:8.3} s  {:8.1} µs/instance",
            self.cold_seconds,
            per(self.cold_seconds)
        )?;
        writeln!(
            f,
            "  engine overhead, cold      {:8.3} s  {:8.1} µs/instance",
            self.cold_seconds - self.loop_seconds,
            per(self.cold_seconds - self.loop_seconds)
        )?;
        writeln!(
            f,
            "  no-op rerun                {:8.3} s  (open {:.3} s + dataflow {:.3} s; {:.1} µs/instance)",
            self.noop_seconds,
            self.noop_open_seconds,
            self.noop_seconds - self.noop_open_seconds,
            per(self.noop_seconds - self.noop_open_seconds)
        )
    }
}

/// One row per size: µs per instance of the no-op rerun (open and dataflow) and of the cold run's engine
/// overhead, with the peak RSS so far: flat rows mean the engine scales linearly.
pub fn sweep_table(rows: &[BenchReport]) -> String {
    let mut text =
        String::from("scenes  instances  no-op open µs/inst  no-op dataflow µs/inst  cold overhead µs/inst\n");
    for r in rows {
        let per = |s: f64| s / r.instances as f64 * 1e6;
        text.push_str(&format!(
            "{:6}  {:9}  {:18.1}  {:22.1}  {:21.1}\n",
            r.scenes,
            r.instances,
            per(r.noop_open_seconds),
            per(r.noop_seconds - r.noop_open_seconds),
            per(r.cold_seconds - r.loop_seconds)
        ));
    }
    text
}

/// Runs the benchmark in `dir` (which it fills with scenes and a store).
pub fn run(dir: &Path, scenes: usize, workers: usize) -> anyhow::Result<BenchReport> {
    for i in 0..scenes {
        let role = if i % 4 == 3 { "eval" } else { "train" };
        let scene = dir.join("scenes").join(role).join(format!("scene{i:04}"));
        std::fs::create_dir_all(scene.join("images"))?;
        std::fs::write(scene.join("images/0.txt"), format!("scene {i}"))?;
    }
    let file = dir.join("bench.yaml");
    std::fs::write(&file, PIPELINE)?;
    let registry = registry(&Counter::new());
    let options = || RunOptions {
        workers,
        ..RunOptions::default()
    };

    let session = Session::open(&file, &registry)?;
    let instances = session.plan.keys().count();
    let started = Instant::now();
    let report = session.run(options())?;
    let cold_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.failed() == 0, "bench run failed:\n{}", report.summary());
    let loop_seconds = plain_loop(&session, &dir.join("loop"))?;

    let started = Instant::now();
    let session = Session::open(&file, &registry)?;
    let noop_open_seconds = started.elapsed().as_secs_f64();
    let report = session.run(options())?;
    let noop_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.computed().is_empty(),
        "the no-op rerun computed {:?}",
        report.computed()
    );
    Ok(BenchReport {
        scenes,
        instances,
        workers,
        cold_seconds,
        noop_seconds,
        noop_open_seconds,
        loop_seconds,
    })
}

/// Every instance's stage run, in plan order, each into its own folder under `dir`, reading the
/// inputs the cold run stored: the same work as the engine's stage calls, on one thread.
fn plain_loop(session: &Session, dir: &Path) -> anyhow::Result<f64> {
    let plan: &Plan = &session.plan;
    let mut outs = Vec::new();
    for (s, stage) in plan.stages.iter().enumerate() {
        for (i, _) in stage.instances.iter().enumerate() {
            let out = dir.join(format!("{s}-{i}"));
            std::fs::create_dir_all(&out)?;
            outs.push(out);
        }
    }
    let started = Instant::now();
    let mut outs = outs.iter();
    for (stage, node) in plan.stages.iter().zip(&session.pipeline.stages) {
        for instance in &stage.instances {
            let inputs = plan.job_inputs(instance, node.scope() == Scope::PerScene);
            let scene = instance.scene.map(|s| plan.scenes[s].name.as_str());
            let out = outs.next().expect("one folder per instance");
            let job = Job {
                stage_id: &node.id,
                scene,
                inputs: &inputs,
                missing: &[],
                out,
                status: &crate::stage::no_status,
            };
            node.stage.run(&job)?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}
