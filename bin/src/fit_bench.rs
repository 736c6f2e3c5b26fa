//! `lrf-flow bench fit`: the real latent and RGB fits of one scene, timed per iteration and per phase.
//!
//! The scene is ingested and encoded by a two-stage pipeline kept in `--cache`, so the latents are computed
//! once and every later bench (of any binary) reuses them; then the fit runs a warm-up (densifying, to
//! reach the Gaussian count of a fit well into its schedule) and the measured iterations, at the schedule's
//! highest SH degree from the first step.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use lrf_graph::{RunOptions, Session};
use lrf_splat::train::StepPhases;
use lrf_stages::fit::{FitRun, LatentFit, RgbFit};
use lrf_stages::training::SingleThreadedLibtorch;

use crate::cli::print;
use crate::flow::registry;

/// Time the real latent and RGB fits of one scene, per iteration and per phase.
///
/// The scene is ingested and encoded once into --cache (a pipeline store: later benches, by any binary,
/// reuse it). Each fit then runs --warmup iterations of the 3DGS schedule (densifying from iteration 500
/// every 100, so the field grows to a mid-schedule size), then --iterations measured ones, at the highest
/// SH degree from the first step. It prints the milliseconds per iteration in each phase (projection + SH,
/// rasterize forward, loss, rasterize backward, the hand-off of the kernel's gradients, densification, the
/// optimiser, the rest), the peak memory of the fit, and one `fit-bench` line per fit for scripts.
///
/// Example: lrf-flow bench fit ../shared/data/real/llff_fern --images images_8 --sh-degree 3
#[derive(Args, Debug)]
pub struct FitBenchArgs {
    /// COLMAP scene folder (<scene>/images*/ and <scene>/sparse/0/).
    scene: PathBuf,
    /// Image folder of the scene to fit (as the ingest stage's `images`).
    #[arg(long, default_value = "images")]
    images: String,
    /// Which fits to time.
    #[arg(long, value_enum, default_value_t = Space::Both)]
    space: Space,
    /// SH degree of the fitted fields.
    #[arg(long, default_value_t = 3)]
    sh_degree: usize,
    /// Iterations run before measuring (the field densifies meanwhile; on the fern at images_8, 1000 reach
    /// about 20k Gaussians, the size of a fit of the paper's schedule).
    #[arg(long, default_value_t = 1000)]
    warmup: u32,
    /// Iterations measured.
    #[arg(long, default_value_t = 300)]
    iterations: u32,
    /// Store of the ingested views and the latents, reused across runs.
    #[arg(long, default_value = "work/bench-fit")]
    cache: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Space {
    Latent,
    Rgb,
    Both,
}

/// The measured iterations' phases, summed.
#[derive(Default)]
struct Totals {
    phases: StepPhases,
    steps: u32,
}

impl Totals {
    fn add(&mut self, p: &StepPhases) {
        self.phases += p;
        self.steps += 1;
    }

    /// (label, key for the summary line, milliseconds per iteration), the rest and the total last.
    fn rows(&self) -> Vec<(&'static str, &'static str, f64)> {
        let p = &self.phases;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / self.steps.max(1) as f64;
        vec![
            ("projection + SH + tile lists", "projection_ms", ms(p.projection)),
            ("rasterize forward", "forward_ms", ms(p.rasterize_forward)),
            ("loss forward + backward", "loss_ms", ms(p.loss)),
            ("rasterize backward", "backward_ms", ms(p.rasterize_backward)),
            ("gradient hand-off", "hand_off_ms", ms(p.gradient_hand_off)),
            ("densification bookkeeping", "densification_ms", ms(p.densification)),
            ("optimizer", "optimizer_ms", ms(p.optimizer)),
            ("rest", "rest_ms", ms(p.rest())),
            ("total", "ms_per_iteration", ms(p.total)),
        ]
    }
}

pub fn run(args: FitBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(args.sh_degree <= 3, "--sh-degree must be 0 to 3");
    let inputs = cached_inputs(&args)?;
    let train = lrf_splat::train::TrainConfig {
        sh_degree: args.sh_degree,
        iterations: args.warmup + args.iterations + 1,
        ..Default::default()
    };
    if matches!(args.space, Space::Latent | Space::Both) {
        let fit = LatentFit {
            train: train.clone(),
            ..Default::default()
        };
        let run = fit.start(&inputs.views, &inputs.latents)?;
        measure(&args, "latent", &inputs.scene, run)?;
    }
    if matches!(args.space, Space::Rgb | Space::Both) {
        let fit = RgbFit {
            train,
            ..Default::default()
        };
        let run = fit.start(&inputs.views)?;
        measure(&args, "rgb", &inputs.scene, run)?;
    }
    Ok(())
}

/// Where the cached pipeline left one scene's views and latents.
struct CachedInputs {
    scene: String,
    views: PathBuf,
    latents: PathBuf,
}

/// Ingests and encodes the scene with a pipeline in `args.cache` (computed once, then reused).
fn cached_inputs(args: &FitBenchArgs) -> anyhow::Result<CachedInputs> {
    let scene = std::fs::canonicalize(&args.scene)
        .with_context(|| format!("scene folder {}: cannot open it", args.scene.display()))?;
    if !scene.join("sparse").is_dir() {
        bail!(
            "{} is not a COLMAP scene folder: it has no sparse/ (expected <scene>/images*/ and <scene>/sparse/0/)",
            scene.display()
        );
    }
    std::fs::create_dir_all(&args.cache).with_context(|| format!("creating {}", args.cache.display()))?;
    let cache = std::fs::canonicalize(&args.cache)?;
    let yaml = format!(
        "pipeline: bench-fit\nwork_dir: {cache}\nworkers: 1\nscenes:\n  - {{glob: {scene}, role: eval}}\nstages:\n  \
         - {{id: ingest, kind: colmap-ingest, inputs: {{scene: scenes}}, params: {{images: {images}}}}}\n  \
         - {{id: encode, kind: vae-encode, inputs: {{views: ingest}}}}\n",
        cache = json(&cache),
        scene = json(&scene),
        images = serde_json::to_string(&args.images)?,
    );
    let file = cache.join("bench-fit.yaml");
    lrf_formats::atomic::write_atomic(&file, yaml.as_bytes()).with_context(|| format!("writing {}", file.display()))?;
    let session = Session::open(&file, &registry())?;
    let report = session.run(RunOptions {
        progress: true,
        ..Default::default()
    })?;
    if report.failed() > 0 {
        print(&report.summary())?;
        bail!("ingesting or encoding {} failed; see above", scene.display());
    }
    let artifact = |stage: &str, port: &str| -> anyhow::Result<PathBuf> {
        let index = session
            .pipeline
            .stages
            .iter()
            .position(|s| s.id == stage)
            .context("the bench pipeline lost a stage")?;
        let instance = session.plan.stages[index]
            .instance(Some(0))
            .context("the bench pipeline found no scene")?;
        Ok(session.store.path(&instance.key).join(port))
    };
    Ok(CachedInputs {
        scene: session.plan.scenes[0].name.clone(),
        views: artifact("ingest", "views")?,
        latents: artifact("encode", "latents")?,
    })
}

/// A path as a YAML (JSON) string.
fn json(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("a string serialises")
}

fn measure(args: &FitBenchArgs, space: &str, scene: &str, run: FitRun) -> anyhow::Result<()> {
    let _threads = SingleThreadedLibtorch::enter();
    let mut run = run.at_full_sh_degree();
    let warmup_started = Instant::now();
    let bar = progress_bar(args.warmup + args.iterations, &format!("{space} fit"));
    for _ in 0..args.warmup {
        run.step()?;
        bar.inc(1);
    }
    let warmup_seconds = warmup_started.elapsed().as_secs_f64();
    let peak_reset = reset_peak_memory();
    let gaussians_before = run.trainer().field().len();
    let mut totals = Totals::default();
    for _ in 0..args.iterations {
        let report = run.step()?;
        totals.add(&report.phases);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let field = run.trainer().field();
    let (gaussians, channels) = (field.len(), field.channels());
    let peak = lrf_stages::artifacts::peak_memory_mib();
    let rows = totals.rows();
    let total = rows.last().expect("a total row").2;
    let mut text = format!(
        "{space} fit of {scene}: {channels} channels, SH degree {}, {gaussians_before} → {gaussians} Gaussians over \
         {} measured iterations (after {} warm-up iterations, {warmup_seconds:.0} s)\n",
        args.sh_degree, args.iterations, args.warmup
    );
    text += &format!("  {:<30} {:>10} {:>7}\n", "phase", "ms/iter", "share");
    for (label, _, ms) in &rows {
        text += &format!("  {label:<30} {ms:>10.2} {:>6.1}%\n", 100.0 * ms / total);
    }
    let peak_text = peak.map_or("unknown".into(), |mib| format!("{mib:.0} MiB"));
    text += &format!(
        "  peak memory: {peak_text} ({})\n",
        if peak_reset {
            "during the measured iterations"
        } else {
            "of the whole process: this kernel cannot reset the peak"
        }
    );
    text += &format!(
        "  30,000 iterations at this speed: {:.1} min\n",
        total * 30_000.0 / 60_000.0
    );
    let fields: Vec<String> = rows.iter().map(|(_, key, ms)| format!("{key}={ms:.3}")).collect();
    text += &format!(
        "fit-bench space={space} scene={scene} channels={channels} sh_degree={} gaussians={gaussians} iterations={} \
         {} peak_mib={}\n",
        args.sh_degree,
        args.iterations,
        fields.join(" "),
        peak.map_or("nan".into(), |mib| format!("{mib:.0}")),
    );
    print(&text)
}

/// Resets the process's peak resident memory to its current size (Linux), so the peak read after the
/// measured iterations is theirs and not the encoder's; false where the kernel does not allow it.
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn progress_bar(length: u32, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(length as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} iterations, {eta} left")
            .expect("a valid template"),
    );
    bar.set_message(label.to_string());
    bar
}
