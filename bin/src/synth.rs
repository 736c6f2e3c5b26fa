use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lrf_synth::{CameraPath, GeneratedScene, Progress, SynthOptions, generate};
use serde_json::Value;

/// Generate procedural test scenes with exact geometry.
///
/// Ray traces textured spheres and boxes on a ground plane under a sky, seen from cameras on an
/// orbit or a forward-facing spiral, or inside a textured room, seen from cameras in its middle
/// looking outwards. Each scene draws its own sun direction and colour temperature, ambient light,
/// sky, exposure, palette and textures (checker, stripes, blotches, marble, gradients, bricks,
/// text-like glyphs). It writes each scene in the COLMAP/3DGS layout:
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
    /// Camera path: orbit, forward-facing, room (inside a closed room, looking outwards), or
    /// alternate (orbit, forward-facing and room in turn: scene000 orbit, scene001 forward-facing,
    /// scene002 room, scene003 orbit, ...).
    #[arg(long, value_enum, default_value = "alternate")]
    path: PathArg,
    /// 3D points to sample per scene.
    #[arg(long, default_value_t = 2000)]
    points: usize,
    /// Scene folder names: <PREFIX>000, <PREFIX>001, ... (two generated sets in one pipeline need
    /// different prefixes).
    #[arg(long, default_value = lrf_synth::SCENE_PREFIX)]
    prefix: String,
    /// Index of the first scene: writes scenes FIRST .. FIRST+SCENES-1, each identical to the scene of
    /// that index in a generation from 0 with the same seed (to split one corpus into parts).
    #[arg(long, default_value_t = 0)]
    first: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PathArg {
    Orbit,
    ForwardFacing,
    Room,
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

impl SynthArgs {
    fn options(&self) -> SynthOptions {
        let path = match self.path {
            PathArg::Orbit => CameraPath::Orbit,
            PathArg::ForwardFacing => CameraPath::ForwardFacing,
            PathArg::Room => CameraPath::Room,
            PathArg::Alternate => CameraPath::Alternate,
        };
        SynthOptions {
            scenes: self.scenes,
            views: self.views,
            width: self.size.0,
            height: self.size.1,
            seed: self.seed,
            path,
            points_per_scene: self.points,
            prefix: self.prefix.clone(),
            first: self.first,
        }
    }
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let scenes = write_scenes(&args.out, &args.options(), true)?;
    crate::print(&format!("wrote {} scenes to {}\n", scenes.len(), args.out.display()))
}

/// What `lrf-flow synth` does, also for the `synth` scene generator: validates the options and
/// writes the scenes into `out` with a progress bar; `announce` prints a line per scene.
fn write_scenes(out: &Path, options: &SynthOptions, announce: bool) -> anyhow::Result<Vec<GeneratedScene>> {
    options.validate()?;
    let bar = ProgressBar::with_draw_target(
        Some((options.scenes * options.views) as u64),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} views {elapsed} ({per_sec}) {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("synth");
    let scenes = generate(out, options, |progress| match progress {
        Progress::View { scene, .. } => {
            bar.set_message(scene.to_string());
            bar.inc(1);
        }
        Progress::Scene(scene) if announce => bar.suspend(|| {
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
        Progress::Scene(_) => {}
    })
    .with_context(|| format!("generating scenes into {}", out.display()))?;
    bar.finish_and_clear();
    Ok(scenes)
}

/// The `synth` scene generator, for a pipeline's `scenes:`:
///
/// ```yaml
/// scenes:
///   - generate: synth
///     params: {scenes: 2, views: 24, size: 256x192, seed: 7, path: alternate, points: 2000}
///     role: train
/// ```
///
/// It writes the same scenes as `lrf-flow synth` with the flags of the same names, and each
/// parameter defaults to its flag's default. Register it with [`GENERATOR`], [`GENERATOR_VERSION`],
/// [`check_params`] and [`generate_into`].
pub const GENERATOR: &str = "synth";
/// Bump it when lrf-synth writes different files for the same options, so that pipelines
/// generate their scenes again instead of reusing the old ones.
pub const GENERATOR_VERSION: u32 = 2;

/// The generator's parameters, named as the command's flags.
const PARAMS: [&str; 8] = ["scenes", "views", "size", "seed", "path", "points", "prefix", "first"];

/// The parameters as written → canonical parameters (every one, defaults filled in, except `prefix` and
/// `first` at their defaults, so that pipelines written before they existed keep their generated folders),
/// or what is wrong with them.
pub fn check_params(params: Value) -> Result<Value, String> {
    let options = options_from_params(&params)?;
    let mut canonical = serde_json::json!({
        "scenes": options.scenes,
        "views": options.views,
        "size": format!("{}x{}", options.width, options.height),
        "seed": options.seed,
        "path": options.path,
        "points": options.points_per_scene,
    });
    if options.prefix != lrf_synth::SCENE_PREFIX {
        canonical["prefix"] = options.prefix.clone().into();
    }
    if options.first != 0 {
        canonical["first"] = options.first.into();
    }
    Ok(canonical)
}

/// Writes the scenes of (canonical) `params` into `out`, as `lrf-flow synth --out OUT` would.
pub fn generate_into(params: &Value, out: &Path) -> anyhow::Result<()> {
    let options = options_from_params(params).map_err(anyhow::Error::msg)?;
    write_scenes(out, &options, false)?;
    Ok(())
}

fn options_from_params(params: &Value) -> Result<SynthOptions, String> {
    let Value::Object(map) = params else {
        return Err(format!("expected a mapping with {}, got {params}", PARAMS.join(", ")));
    };
    let mut options = default_options();
    for (name, value) in map {
        let count = || {
            value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("{name}: expected a whole number, got {value}"))
        };
        match name.as_str() {
            "scenes" => options.scenes = count()?,
            "views" => options.views = count()?,
            "points" => options.points_per_scene = count()?,
            "first" => options.first = count()?,
            "prefix" => {
                options.prefix = value
                    .as_str()
                    .ok_or_else(|| format!("prefix: expected a name such as heldout, got {value}"))?
                    .to_string()
            }
            "seed" => {
                options.seed = value
                    .as_u64()
                    .ok_or_else(|| format!("seed: expected a whole number, got {value}"))?
            }
            "size" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("size: expected WIDTHxHEIGHT such as 256x192, got {value}"))?;
                (options.width, options.height) = parse_size(text).map_err(|e| format!("size: {e}"))?;
            }
            "path" => {
                options.path = serde_json::from_value(value.clone())
                    .map_err(|_| format!("path: expected orbit, forward-facing, room or alternate, got {value}"))?
            }
            other => {
                return Err(format!(
                    "unknown field `{other}`, expected one of {}",
                    PARAMS.join(", ")
                ));
            }
        }
    }
    options.validate().map_err(|e| e.to_string())?;
    Ok(options)
}

/// The command's defaults, read from its flag definitions so that the two never differ.
fn default_options() -> SynthOptions {
    use clap::FromArgMatches;
    let command = <SynthArgs as Args>::augment_args(clap::Command::new("synth"));
    let matches = command
        .try_get_matches_from(["synth", "--out", "."])
        .expect("the defaults parse");
    SynthArgs::from_arg_matches(&matches)
        .expect("the defaults parse")
        .options()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn generator_params_default_to_the_flags_and_are_checked() {
        let all = check_params(json!({})).unwrap();
        assert_eq!(
            all,
            json!({"scenes": 2, "views": 24, "size": "256x192", "seed": 0, "path": "alternate", "points": 2000})
        );
        let options = options_from_params(&all).unwrap();
        assert_eq!(options, SynthOptions::default());
        let some = check_params(json!({"size": "64x48", "seed": 7, "path": "room"})).unwrap();
        assert_eq!(some["size"], "64x48");
        assert_eq!(some["seed"], 7);
        assert_eq!(some["path"], "room");
        assert_eq!(options_from_params(&some).unwrap().path, CameraPath::Room);
        assert_eq!(
            check_params(some.clone()).unwrap(),
            some,
            "canonical params are a fixed point"
        );
        let error = check_params(json!({"view": 3})).unwrap_err();
        assert_eq!(
            error,
            "unknown field `view`, expected one of scenes, views, size, seed, path, points, prefix, first"
        );
        let named = check_params(json!({"prefix": "heldout"})).unwrap();
        assert_eq!(
            named["prefix"], "heldout",
            "a prefix other than the default is part of the params"
        );
        assert_eq!(options_from_params(&named).unwrap().prefix, "heldout");
        let later = check_params(json!({"first": 12})).unwrap();
        assert_eq!(later["first"], 12, "a first index other than 0 is part of the params");
        assert_eq!(options_from_params(&later).unwrap().first, 12);
        assert!(check_params(json!({"prefix": "a/b"})).unwrap_err().contains("prefix"));
        assert!(
            check_params(json!({"size": "60x48"}))
                .unwrap_err()
                .contains("multiples of 8")
        );
        assert!(
            check_params(json!({"size": 64}))
                .unwrap_err()
                .starts_with("size: expected WIDTHxHEIGHT")
        );
        assert!(
            check_params(json!({"views": -1}))
                .unwrap_err()
                .starts_with("views: expected a whole number")
        );
        assert!(
            check_params(json!({"path": "spiral"}))
                .unwrap_err()
                .starts_with("path: expected orbit")
        );
        assert!(check_params(json!([1])).unwrap_err().starts_with("expected a mapping"));
    }

    #[test]
    fn size_parses_and_explains_mistakes() {
        assert_eq!(parse_size("256x192"), Ok((256, 192)));
        assert!(parse_size("256").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_size("25.6x192").unwrap_err().contains("whole number"));
    }
}
