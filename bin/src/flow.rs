//! `lrf-flow run | plan | gc | bench`: the engine's commands. The work lives in lrf-graph.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use lrf_graph::report::RunReport;
use lrf_graph::{Cluster, GcOptions, OpenOptions, Registry, RejectedScene, RunOptions, Session, Status, WorkerInit};
use lrf_stages::report::{INDEX_FILE, RUN_FILE, run_page};

use crate::print;

/// The stage kinds and scene generators this binary knows: `exec`, the built-in stages of
/// lrf-stages, the `synth` scene generator, and what plugins add ([`crate::cli::main_with`]).
pub fn registry() -> Registry {
    use crate::synth;
    let mut registry = Registry::builtin();
    lrf_stages::register(&mut registry);
    registry.register_generator(
        synth::GENERATOR,
        synth::GENERATOR_VERSION,
        synth::check_params,
        synth::generate_into,
    );
    crate::cli::add_plugins(&mut registry);
    registry
}

/// Run a pipeline: compute every artifact missing from its store, reuse the rest.
///
/// Each stage output is stored under a key that hashes the stage's kind, version, parameters
/// and the keys of its inputs (scene folders are keyed by their content), so a rerun with
/// nothing changed computes nothing, a new scene computes only its own work and what collects
/// over it, and a changed parameter recomputes that stage and what depends on it. A killed run
/// leaves no half-written artifact; run again to resume.
///
/// A stage failing on one scene does not stop the others: the run goes on, the summary lists
/// every failure, the JSON report goes to <work_dir>/reports/, and the exit status is 1.
///
/// Cluster mode: start the same command once per process (on one machine or several), each
/// with its own --process, all sharing one work directory; hosts.txt lists host:port per line:
///
///   lrf-flow run p.yaml -w 4 --processes 2 --process 0 --hostfile hosts.txt
///
///   lrf-flow run p.yaml -w 4 --processes 2 --process 1 --hostfile hosts.txt
///
/// Example: lrf-flow run pipelines/example-exec.yaml -w 2
#[derive(Args)]
pub struct RunArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
    /// Worker threads in this process (default: the pipeline's `workers`, else 1).
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Do not draw progress bars (they are never drawn when stderr is not a terminal).
    #[arg(short, long)]
    quiet: bool,
    /// Re-hash every stored artifact against its manifest before reusing it; damaged ones (any byte
    /// changed) are computed again. Without it, only missing or cut-short files are noticed. Costs a
    /// read of everything the run reuses.
    #[arg(long)]
    verify: bool,
    /// Hash every scene file again. By default a file whose size, modification and status-change times
    /// and inode are unchanged since the last open keeps its cached hash (<work_dir>/file-hashes.bin).
    #[arg(long)]
    rehash: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args)]
struct ClusterArgs {
    /// Number of processes in a cluster run; each is started with its own --process.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// This process's index, 0 to processes-1. Process 0 feeds the scenes.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// File with one host:port per process, in process order
    /// (default: 127.0.0.1:2101, 127.0.0.1:2102, ...).
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// Seconds to wait for every process to connect before giving up.
    #[arg(long, default_value_t = 60)]
    startup_timeout: u64,
}

impl ClusterArgs {
    fn cluster(&self) -> anyhow::Result<Option<Cluster>> {
        let processes = usize::from(self.processes);
        if processes == 1 && self.hostfile.is_none() {
            anyhow::ensure!(
                self.process == 0,
                "--process {} needs --processes above it",
                self.process
            );
            return Ok(None);
        }
        let addresses = match &self.hostfile {
            Some(file) => read_hostfile(file)?,
            None => (0..processes).map(|i| format!("127.0.0.1:{}", 2101 + i)).collect(),
        };
        anyhow::ensure!(
            addresses.len() == processes,
            "--processes is {processes} but the hostfile lists {} addresses",
            addresses.len()
        );
        anyhow::ensure!(
            self.process < processes,
            "--process {} is not below --processes {processes}",
            self.process
        );
        Ok(Some(Cluster {
            process: self.process,
            addresses,
        }))
    }
}

fn read_hostfile(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the hostfile {}", file.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for address in &addresses {
        anyhow::ensure!(
            address.contains(':'),
            "hostfile {}: {address:?} is not host:port",
            file.display()
        );
    }
    Ok(addresses)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let session = Session::open_with(&args.pipeline, &registry(), OpenOptions { rehash: args.rehash })?;
    let workers = args.workers.or(session.pipeline.workers).unwrap_or(1);
    anyhow::ensure!(workers > 0, "-w must be at least 1");
    let options = RunOptions {
        workers,
        progress: !args.quiet,
        cluster: args.cluster.cluster()?,
        startup_timeout: Duration::from_secs(args.cluster.startup_timeout),
        worker_init: Some(libtorch_threads(workers)),
        verify: args.verify,
    };
    let helper = options.cluster.as_ref().is_some_and(|c| c.process != 0);
    let report = session.run(options)?;
    // The outcome goes to the terminal first, so that a report folder that cannot be written hides nothing.
    print(&report.summary())?;
    print(&rejected_lines(&session.rejected))?;
    if helper {
        // Process 0 gathers every process's instances and writes the run's report.
        print("the instances this process ran; process 0 reports the whole run\n")?;
        return match report.failed() {
            0 => Ok(()),
            n => anyhow::bail!("{n} stage instance(s) failed or were skipped here; see the summary above"),
        };
    }
    // Global stages gather results over every scene (the demo's summary table): show where they are.
    for outcome in &report.outcomes {
        if outcome.scene.is_none() && matches!(outcome.status, Status::Cached | Status::Computed) {
            print(&format!(
                "{}: {}\n",
                outcome.stage,
                session.store.path(&outcome.key).display()
            ))?;
        }
    }
    let path = report
        .write(&session.pipeline.work_dir)
        .context("writing the run report")?;
    print(&format!("run record: {}\n", path.display()))?;
    if let Some(index) = publish_report(&session, &report).context("publishing the HTML report")? {
        print(&format!("HTML report: {}\n", index.display()))?;
    }
    match (report.failed(), session.rejected.len()) {
        (0, 0) => Ok(()),
        (0, n) => anyhow::bail!("{n} scene folder(s) were left out; see above"),
        (n, _) => anyhow::bail!("{n} stage instance(s) failed or were skipped; see the summary above"),
    }
}

/// Copies the HTML report of the pipeline's last `summary` stage to `<work_dir>/report/latest/`, with this
/// run's stage timings beside it, and returns its index page; `None` when no summary was produced.
fn publish_report(session: &Session, report: &RunReport) -> anyhow::Result<Option<PathBuf>> {
    let Some(summary) = session
        .pipeline
        .stages
        .iter()
        .rev()
        .find(|s| s.stage.kind() == "summary")
    else {
        return Ok(None);
    };
    let Some(outcome) = report
        .outcomes
        .iter()
        .find(|o| o.stage == summary.id && o.scene.is_none() && matches!(o.status, Status::Cached | Status::Computed))
    else {
        return Ok(None);
    };
    let source = session.store.path(&outcome.key).join("report");
    if !source.join(INDEX_FILE).is_file() {
        return Ok(None); // a summary made before the HTML report existed
    }
    let root = session.pipeline.work_dir.join("report");
    let staging = root.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    copy_tree(&source, &staging).with_context(|| format!("copying {}", source.display()))?;
    std::fs::write(staging.join(RUN_FILE), run_page(report))?;
    // Swap folders, so a reader sees the old report or the new one, never half of one.
    let latest = root.join("latest");
    let retired = root.join(format!(".retired-{}", std::process::id()));
    if latest.exists() {
        std::fs::rename(&latest, &retired).with_context(|| format!("moving {} aside", latest.display()))?;
    }
    std::fs::rename(&staging, &latest).with_context(|| format!("renaming into {}", latest.display()))?;
    let _ = std::fs::remove_dir_all(&retired);
    Ok(Some(latest.join(INDEX_FILE)))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// One line per scene folder left out.
fn rejected_lines(rejected: &[RejectedScene]) -> String {
    rejected.iter().map(|r| format!("REJECTED {r}\n")).collect()
}

/// Show what `run` would compute and what is cached, per stage, without running anything.
///
/// Keys are computed from the scene folders' content and the parameters alone, so the plan is
/// exact: the "compute" column is what the next run will compute.
///
/// Example: lrf-flow plan pipelines/example-exec.yaml
#[derive(Args)]
pub struct PlanArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
}

pub fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let session = Session::open(&args.pipeline, &registry())?;
    print(&session.plan_summary())?;
    print(&rejected_lines(&session.rejected))
}

/// Re-hash the pipeline's stored artifacts against their manifests, to find damaged ones.
///
/// Every artifact the pipeline references and the store holds is read whole and compared, file by
/// file, with the sizes and blake3 hashes its manifest recorded when it was made. A run already
/// recomputes artifacts whose files are missing or cut short; flipped bytes are found only here
/// (and by `run --verify`, which recomputes them). Exits with status 1 when something is damaged.
///
/// Example: lrf-flow verify pipelines/demo.yaml --repair
#[derive(Args)]
pub struct VerifyArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
    /// Remove damaged artifacts from the store, so that the next run computes them again.
    #[arg(long)]
    repair: bool,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let session = Session::open(&args.pipeline, &registry())?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("verifying {bar:30} {pos}/{len} artifacts")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = session.verify(args.repair, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut text = String::new();
    for damaged in &report.damaged {
        text += &format!("DAMAGED {damaged}\n");
    }
    text += &format!(
        "{} artifact(s) verified, {} damaged{}\n",
        report.checked,
        report.damaged.len(),
        if args.repair {
            format!(", {} removed", report.removed)
        } else {
            String::new()
        }
    );
    print(&text)?;
    match (report.damaged.len(), args.repair) {
        (0, _) => Ok(()),
        (n, true) => anyhow::bail!("{n} damaged artifact(s); run the pipeline again to recompute what was removed"),
        (n, false) => anyhow::bail!("{n} damaged artifact(s); give --repair to remove them, then run again"),
    }
}

/// Delete artifacts the pipeline no longer references, and temporaries left by killed runs.
///
/// Keeps exactly what the pipeline references now (pinned artifacts included). Other
/// pipelines sharing the same work directory are not consulted: their artifacts are removed
/// too. gc refuses while a run is using the store, and refuses to empty a store (a pipeline
/// that finds no scene, or references none of the stored artifacts) unless given --force.
///
/// Example: lrf-flow gc pipelines/example-exec.yaml --dry-run
#[derive(Args)]
pub struct GcArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
    /// Only list what would be removed: stage, scene, size and key of each artifact.
    #[arg(long)]
    dry_run: bool,
    /// Remove even when the pipeline finds no scene or references nothing in the store.
    #[arg(long)]
    force: bool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn gc(args: GcArgs) -> anyhow::Result<()> {
    let session = Session::open(&args.pipeline, &registry())?;
    if args.dry_run {
        let unreferenced = session.unreferenced()?;
        let total: u64 = unreferenced.iter().map(|a| a.bytes).sum();
        let mut text = format!(
            "{} unreferenced artifact(s), {:.1} MiB, would be removed:\n",
            unreferenced.len(),
            mib(total)
        );
        let width = unreferenced
            .iter()
            .map(|a| a.stage.as_deref().map_or(0, str::len))
            .max()
            .unwrap_or(0)
            .max(5);
        for artifact in unreferenced {
            text += &format!(
                "  {:width$}  {:20}  {:>9.1} MiB  {}\n",
                artifact.stage.as_deref().unwrap_or("(no manifest)"),
                artifact.scene.as_deref().unwrap_or("(global)"),
                mib(artifact.bytes),
                artifact.key
            );
        }
        return print(&text);
    }
    let report = session.gc(GcOptions { force: args.force })?;
    print(&format!(
        "removed {} artifact(s) and {} temporary folder(s), {:.1} MiB\n",
        report.removed.len(),
        report.temporaries,
        mib(report.bytes)
    ))
}

/// Measure the engine's own overhead, or with `bench fit`, the speed of a scene's fits.
///
/// Without a subcommand: builds 6 stages over N tiny scenes in a temporary folder and times a cold
/// run, a no-op rerun (everything cached: hashing scenes, planning, the dataflow) and the same stage
/// calls in a plain loop; the difference is the engine's cost per stage instance.
///
/// Example: lrf-flow bench --scenes 200 -w 2
///
/// `lrf-flow bench fit <SCENE>` times the latent and RGB fits per phase (see `lrf-flow bench fit --help`);
/// `lrf-flow bench watch` times watch rounds over a large corpus (`lrf-flow bench watch --help`).
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchCommand>,
    /// Numbers of tiny scenes (3 of 4 train, 1 of 4 eval), comma-separated for a sweep that prints
    /// µs per instance at each size: `--scenes 200,2000,20000`.
    #[arg(long, default_value = "200", value_delimiter = ',')]
    scenes: Vec<usize>,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 2)]
    workers: usize,
}

#[derive(Subcommand)]
enum BenchCommand {
    Fit(crate::fit_bench::FitBenchArgs),
    Watch(WatchBenchArgs),
}

/// Time `lrf-flow watch` over a large corpus of tiny scenes when a few change.
///
/// Builds the engine bench's 6 stages over --scenes tiny scenes in a temporary folder and watches
/// them: the cold round, then rounds that add --change new eval scenes, remove --change and edit
/// --change others. Each round prints the instances it computed (it fails unless that is exactly
/// the changed scenes' work and the global report) and its scan, change-set, planning and run time.
///
/// Example: lrf-flow bench watch --scenes 10000 --change 10 -w 2
#[derive(Args)]
struct WatchBenchArgs {
    #[arg(long, default_value_t = 10_000)]
    scenes: usize,
    /// Eval scenes added, removed and edited, in three rounds.
    #[arg(long, default_value_t = 10)]
    change: usize,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 2)]
    workers: usize,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Some(BenchCommand::Fit(args)) => return crate::fit_bench::run(args),
        Some(BenchCommand::Watch(args)) => {
            let dir = tempfile::tempdir().context("creating a temporary folder")?;
            let report = lrf_graph::bench::watch(dir.path(), args.scenes, args.change, args.workers.max(1))?;
            let peak = lrf_stages::artifacts::peak_memory_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"));
            return print(&format!("{report}  peak memory: {peak}\n"));
        }
        None => {}
    }
    let mut rows = Vec::new();
    for &scenes in &args.scenes {
        let dir = tempfile::tempdir().context("creating a temporary folder")?;
        let report = lrf_graph::bench::run(dir.path(), scenes, args.workers.max(1))?;
        print(&report.to_string())?;
        rows.push(report);
    }
    if rows.len() > 1 {
        print(&lrf_graph::bench::sweep_table(&rows))?;
    }
    Ok(())
}

/// Keep a pipeline up to date while scene folders are added, removed or edited.
///
/// Scans the scene globs (and the pipeline file) every --interval seconds. Once a change has held
/// still for one interval, it is fed to a differential-dataflow collection of scenes, which says
/// which instances the change fires (a new scene's own work and the global stages over its role)
/// and retracts (a removed scene's work; the global stages that collected it fire again); the
/// pipeline then runs and computes exactly that. Stop with Ctrl-C (safe at any moment: a killed run leaves
/// no half-written artifact). Failures are printed and watching goes on.
///
/// Example: lrf-flow watch pipelines/example-exec.yaml -w 2 --interval 5
#[derive(Args)]
pub struct WatchArgs {
    /// Pipeline file (YAML).
    pipeline: PathBuf,
    /// Worker threads (default: the pipeline's `workers`, else 1).
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Seconds between scans of the scene folders.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
}

pub fn watch(args: WatchArgs) -> anyhow::Result<()> {
    use lrf_graph::watch::Round;
    anyhow::ensure!(
        args.interval > 0.0 && args.interval.is_finite(),
        "--interval must be a positive number of seconds"
    );
    let registry = registry();
    let options = |pipeline: &lrf_graph::Pipeline| {
        let workers = args.workers.or(pipeline.workers).unwrap_or(1).max(1);
        RunOptions {
            workers,
            worker_init: Some(libtorch_threads(workers)),
            ..RunOptions::default()
        }
    };
    let mut result = Ok(());
    lrf_graph::watch::watch(
        &args.pipeline,
        &registry,
        Duration::from_secs_f64(args.interval),
        options,
        |round| {
            let text = match round {
                None => return true,
                Some(Round::Invalid(error)) => format!("error: {error}\nwatching on\n"),
                Some(Round::Ran {
                    changes,
                    report,
                    work_dir,
                    rejected,
                    times,
                }) => {
                    let mut text = rejected_lines(&rejected);
                    text += &format!(
                        "scenes: {} added, {} removed, {} changed; {} instances fired, {} retracted\n",
                        changes.added.len(),
                        changes.removed.len(),
                        changes.changed.len(),
                        changes.fired.len(),
                        changes.retracted.len()
                    );
                    text += &format!(
                        "round: scan {:.3} s, change set {:.3} s, planning {:.3} s, run {:.3} s\n",
                        times.scan.as_secs_f64(),
                        times.changes.as_secs_f64(),
                        times.planning.as_secs_f64(),
                        times.run.as_secs_f64()
                    );
                    text += &report.summary();
                    if let Err(error) = report.write(&work_dir) {
                        text += &format!("could not write the report: {error}\n");
                    }
                    text
                }
            };
            result = print(&text);
            result.is_ok()
        },
    );
    result
}

/// Sizes libtorch's intra-op thread pool on each worker thread so that this process's workers
/// times libtorch's threads does not oversubscribe the cores (timely threads are the outer level).
fn libtorch_threads(local_workers: usize) -> WorkerInit {
    let threads = lrf_graph::threads_per_worker(local_workers);
    Arc::new(move |_, _| tch::set_num_threads(threads as i32))
}

#[cfg(test)]
mod tests {
    use super::{libtorch_threads, registry};

    /// A wrong stage kind, port or parameter in a shipped pipeline fails here, not in a user's run.
    #[test]
    fn every_shipped_pipeline_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let registry = registry();
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                if let Err(errors) = lrf_graph::Pipeline::load(&path, &registry) {
                    panic!("{}: {errors}", path.display());
                }
                checked.push(path);
            }
        }
        assert!(checked.len() >= 10, "only {checked:?}");
    }

    #[test]
    fn each_worker_gets_its_share_of_the_cores() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        for workers in [1, 2, cores + 1] {
            let init = libtorch_threads(workers);
            let seen = std::thread::spawn(move || {
                init(0, workers);
                tch::get_num_threads()
            })
            .join()
            .unwrap();
            assert_eq!(
                seen as usize,
                (cores / workers).max(1),
                "{workers} workers on {cores} cores"
            );
        }
    }
}
