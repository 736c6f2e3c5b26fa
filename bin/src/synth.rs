use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lrf_synth::{CameraPath, Progress, SynthOptions, generate};

/// Generate procedural test scenes with exact geometry.
///
/// Ray traces textured spheres, boxes and a ground plane under a sky and a sun, from cameras on an
/// orbit or a forward-facing spiral, and writes each scene in the COLMAP/3DGS layout:
/// images/ (PNG), images_2/, images_4/, images_8/ (exact box downsamples), depth/ (f32 z-depth per
/// view as safetensors), sparse/0/*.bin (true PINHOLE cameras and poses; 3D points on visible
/// surfaces with tracks at their exact sub-pixel projections) and synth.json.
///
/// Everything follows from the seed: the same command writes byte-identical files.
///
/// Example: lrf-flow synth --out work/synth --scenes 2 --views 24 --size 256x192 --seed 7
#[derive(Args)]
pub struct SynthArgs {
    /// Output folder; scenes go to <OUT>/scene000, <OUT>/scene001, ... Existing scene folders
    /// written by lrf-flow synth are replaced; any other existing folder is an error.
    #[arg(long)]
    out: PathBuf,
    /// Number of scenes.
    #[arg(long, default_value_t = 2)]
    scenes: usize,
    /// Views per scene (at least 2).
    #[arg(long, default_value_t = 24)]
    views: usize,
    /// Full-resolution image size WIDTHxHEIGHT; both multiples of 8.
    #[arg(long, default_value = "256x192", value_parser = parse_size)]
    size: (u32, u32),
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Camera path: orbit, forward-facing, or alternate (orbit for even scenes, forward-facing
    /// for odd ones).
    #[arg(long, value_enum, default_value = "alternate")]
    path: PathArg,
    /// 3D points to sample per scene.
    #[arg(long, default_value_t = 2000)]
    points: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PathArg {
    Orbit,
    ForwardFacing,
    Alternate,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT, e.g. 256x192"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?} in {text:?} is not a whole number"))
    };
    Ok((number(w)?, number(h)?))
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let path = match args.path {
        PathArg::Orbit => CameraPath::Orbit,
        PathArg::ForwardFacing => CameraPath::ForwardFacing,
        PathArg::Alternate => CameraPath::Alternate,
    };
    let options = SynthOptions {
        scenes: args.scenes,
        views: args.views,
        width: args.size.0,
        height: args.size.1,
        seed: args.seed,
        path,
        points_per_scene: args.points,
    };
    options.validate()?;
    let bar = ProgressBar::with_draw_target(Some((args.scenes * args.views) as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} views {elapsed} ({per_sec}) {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("synth");
    let scenes = generate(&args.out, &options, |progress| match progress {
        Progress::View { scene, .. } => {
            bar.set_message(scene.to_string());
            bar.inc(1);
        }
        Progress::Scene(scene) => bar.suspend(|| {
            eprintln!(
                "{}: {} views ({:?}), {} points, {} observations -> {}",
                scene.name,
                scene.views,
                scene.camera_path,
                scene.points,
                scene.observations,
                scene.path.display()
            )
        }),
    })
    .with_context(|| format!("generating scenes into {}", args.out.display()))?;
    bar.finish_and_clear();
    crate::print(&format!("wrote {} scenes to {}\n", scenes.len(), args.out.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn size_parses_and_explains_mistakes() {
        assert_eq!(parse_size("256x192"), Ok((256, 192)));
        assert!(parse_size("256").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_size("25.6x192").unwrap_err().contains("whole number"));
    }
}
