//! Engine overhead, measured on the counting test stages (which do almost nothing): a cold run,
//! a no-op rerun (scene hashing, planning and the dataflow, everything cached), and the same
//! stages called in a plain loop, so the difference is what the engine costs per record; and
//! [`watch`], the rounds of `lrf-flow watch` over a large corpus when a few scenes change.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::dataflow::RunOptions;
use crate::plan::Plan;
use crate::session::Session;
use crate::stage::{Job, Scope};
use crate::testing::{Counter, registry};
use crate::watch::{Round, RoundTimes};

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

/// Scene `i` of the bench corpus: one in four is an eval scene.
fn scene_folder(dir: &Path, i: usize) -> std::path::PathBuf {
    let role = if i % 4 == 3 { "eval" } else { "train" };
    dir.join("scenes").join(role).join(format!("scene{i:04}"))
}

/// Writes a one-file scene folder whose content is `text`.
fn write_scene(folder: &Path, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(folder.join("images"))?;
    std::fs::write(folder.join("images/0.txt"), text)
}

/// Runs the benchmark in `dir` (which it fills with scenes and a store).
pub fn run(dir: &Path, scenes: usize, workers: usize) -> anyhow::Result<BenchReport> {
    for i in 0..scenes {
        write_scene(&scene_folder(dir, i), &format!("scene {i}"))?;
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

/// One round of [`watch`]: what changed, the instances it computed and how long its parts took.
pub struct WatchRound {
    pub label: String,
    pub computed: usize,
    /// What a round that computes exactly the changed scenes' work computes.
    pub expected: usize,
    pub times: RoundTimes,
}

pub struct WatchReport {
    pub scenes: usize,
    pub workers: usize,
    pub rounds: Vec<WatchRound>,
}

impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "watch bench: 6 stages over {} scenes, {} workers; after the cold round, eval scenes are added, \
             removed and edited",
            self.scenes, self.workers
        )?;
        writeln!(
            f,
            "  {:<12} {:>9} {:>9} {:>8} {:>12} {:>10} {:>8}",
            "round", "computed", "expected", "scan s", "change set s", "planning s", "run s"
        )?;
        for r in &self.rounds {
            let t = &r.times;
            writeln!(
                f,
                "  {:<12} {:>9} {:>9} {:>8.3} {:>12.3} {:>10.3} {:>8.3}",
                r.label,
                r.computed,
                r.expected,
                t.scan.as_secs_f64(),
                t.changes.as_secs_f64(),
                t.planning.as_secs_f64(),
                t.run.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// `lrf-flow watch` over `scenes` scenes in `dir`: the cold round, then rounds that add `change` new eval
/// scenes, remove `change` eval scenes and edit `change` others. Each round must compute exactly the changed
/// scenes' four per-scene instances and the global report (eval scenes feed no other global stage), or this
/// fails.
pub fn watch(dir: &Path, scenes: usize, change: usize, workers: usize) -> anyhow::Result<WatchReport> {
    let eval: Vec<usize> = (0..scenes).filter(|i| i % 4 == 3).collect();
    anyhow::ensure!(
        eval.len() >= 2 * change,
        "{scenes} scenes hold {} eval scenes, too few to remove {change} and edit {change} others",
        eval.len()
    );
    for i in 0..scenes {
        write_scene(&scene_folder(dir, i), &format!("scene {i}"))?;
    }
    let file = dir.join("bench.yaml");
    std::fs::write(&file, PIPELINE)?;
    let registry = registry(&Counter::new());
    let instances = Session::open(&file, &registry)?.plan.keys().count();
    let per_change = 4 * change + 1;
    // (label, expected instances computed, what to do to the corpus after the round).
    type Edit<'a> = Box<dyn Fn() -> std::io::Result<()> + 'a>;
    let script: Vec<(String, usize, Edit)> = vec![
        (
            "cold".into(),
            instances,
            Box::new(|| {
                (0..change).try_for_each(|j| write_scene(&dir.join(format!("scenes/eval/added{j:04}")), "new"))
            }),
        ),
        (
            format!("add {change}"),
            per_change,
            Box::new(|| {
                eval[..change]
                    .iter()
                    .try_for_each(|&i| std::fs::remove_dir_all(scene_folder(dir, i)))
            }),
        ),
        (
            format!("remove {change}"),
            1,
            Box::new(|| {
                eval[change..2 * change]
                    .iter()
                    .try_for_each(|&i| write_scene(&scene_folder(dir, i), &format!("edited {i}")))
            }),
        ),
        (format!("edit {change}"), per_change, Box::new(|| Ok(()))),
    ];
    let mut rounds = Vec::new();
    let mut failure = None;
    crate::watch::watch(
        &file,
        &registry,
        std::time::Duration::ZERO,
        |_| RunOptions {
            workers,
            ..RunOptions::default()
        },
        |round| {
            let (report, times) = match round {
                None => return true,
                Some(Round::Invalid(message)) => {
                    failure = Some(anyhow::anyhow!("a round failed: {message}"));
                    return false;
                }
                Some(Round::Ran { report, times, .. }) => (report, times),
            };
            let (label, expected, edit) = &script[rounds.len()];
            if report.failed() > 0 {
                failure = Some(anyhow::anyhow!("round {label} failed:\n{}", report.summary()));
                return false;
            }
            rounds.push(WatchRound {
                label: label.clone(),
                computed: report.computed().len(),
                expected: *expected,
                times,
            });
            if let Err(error) = edit() {
                failure = Some(error.into());
                return false;
            }
            rounds.len() < script.len()
        },
    );
    if let Some(error) = failure {
        return Err(error);
    }
    let report = WatchReport {
        scenes,
        workers,
        rounds,
    };
    anyhow::ensure!(
        report.rounds.iter().all(|r| r.computed == r.expected),
        "a round computed more or less than its changes:\n{report}"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    /// A watch over 40 scenes: adding, removing and editing 3 eval scenes computes only their work.
    #[test]
    fn watch_rounds_compute_only_the_changed_scenes() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::watch(dir.path(), 40, 3, 1).unwrap();
        let computed: Vec<(&str, usize)> = report.rounds.iter().map(|r| (r.label.as_str(), r.computed)).collect();
        assert_eq!(
            computed,
            [("cold", 4 * 40 + 2), ("add 3", 13), ("remove 3", 1), ("edit 3", 13)]
        );
    }
}
