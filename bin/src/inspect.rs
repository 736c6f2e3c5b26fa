use std::path::PathBuf;

use std::fmt::Write as _;

use anyhow::Context;
use clap::Args;
use lrf_formats::scene::{DistortionPolicy, Scene, SceneOptions, Split};

/// Load a COLMAP scene as the pipeline would and summarise it.
///
/// Reads sparse/0 (binary or text), checks every image file named in images.bin, rescales the
/// intrinsics to the image folder's resolution and applies the train/test split. Prints one line
/// per camera and view, or JSON with --json. Any problem is reported with the file and record.
#[derive(Args)]
pub struct InspectArgs {
    /// Scene folder (holding images*/ and sparse/0/).
    scene: PathBuf,
    /// Image folder inside the scene, e.g. images_8 for 1/8 resolution.
    #[arg(long, default_value = "images")]
    images: String,
    /// What to do with lens distortion: undistort (resample to PINHOLE), ignore (treat as
    /// PINHOLE, as the official LRF code does) or reject.
    #[arg(long, value_enum, default_value = "undistort")]
    distortion: Policy,
    /// Hold out every N-th view (in name order) for testing; 0 holds out none.
    #[arg(long, default_value_t = 8)]
    test_every: usize,
    /// Print the views as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Policy {
    Undistort,
    Ignore,
    Reject,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let distortion = match args.distortion {
        Policy::Undistort => DistortionPolicy::Undistort,
        Policy::Ignore => DistortionPolicy::Ignore,
        Policy::Reject => DistortionPolicy::Reject,
    };
    let options = SceneOptions {
        images: args.images,
        distortion,
        test_every: args.test_every,
    };
    let scene =
        Scene::load(&args.scene, &options).with_context(|| format!("loading scene {}", args.scene.display()))?;
    if args.json {
        let views: Vec<_> = scene
            .views
            .iter()
            .map(|v| {
                serde_json::json!({
                    "image_id": v.image_id, "name": v.name, "split": v.split,
                    "width": v.camera.width, "height": v.camera.height,
                    "fx": v.camera.fx, "fy": v.camera.fy, "cx": v.camera.cx, "cy": v.camera.cy,
                    "center": v.camera.center().to_array(),
                })
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&serde_json::json!({ "scene": scene.name, "views": views }))?;
        text.push('\n');
        return crate::print(&text);
    }
    let model = &scene.model;
    let mut out = String::new();
    let observations: usize = model.points.values().map(|p| p.track.len()).sum();
    writeln!(
        out,
        "scene {}: {} views ({} train, {} test), {} cameras, {} points, {} observations",
        scene.name,
        scene.views.len(),
        scene.views_in(Split::Train).count(),
        scene.views_in(Split::Test).count(),
        model.cameras.len(),
        model.points.len(),
        observations
    )?;
    for camera in model.cameras.values() {
        writeln!(
            out,
            "  camera {}: {} {}x{} {:?}",
            camera.id,
            camera.model.name(),
            camera.width,
            camera.height,
            camera.params
        )?;
    }
    for view in &scene.views {
        let c = &view.camera;
        writeln!(
            out,
            "  {:<5} {:<28} {}x{} fx {:.2} fy {:.2} cx {:.2} cy {:.2}",
            format!("{:?}", view.split).to_lowercase(),
            view.name,
            c.width,
            c.height,
            c.fx,
            c.fy,
            c.cx,
            c.cy
        )?;
    }
    crate::print(&out)
}
