//! `custom-flow`: lrf-flow with one more stage kind, `image-stats`, registered through
//! `lrf_flow::cli::main_with`. Every built-in command and stage works as in `lrf-flow`, so a pipeline can
//! mix both:
//!
//! ```yaml
//! stages:
//!   - {id: ingest, kind: colmap-ingest, inputs: {scene: scenes}}        # built in
//!   - {id: stats, kind: image-stats, inputs: {views: ingest}}           # this crate
//! ```

use anyhow::Context;
use lrf_formats::views::{ViewSet, open_images, read_image};
use lrf_graph::{Input, Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};

/// Per scene: the mean and the darkest/brightest channel mean of every ingested image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageStats {
    /// Report images whose mean is below this as too dark (0 to 1).
    pub dark_below: f64,
}

#[derive(Serialize)]
struct ViewStats {
    name: String,
    mean_rgb: [f64; 3],
    too_dark: bool,
}

impl StageKind for ImageStats {
    const KIND: &'static str = "image-stats";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::PerScene,
            inputs: vec![Port::new("views", "views")],
            outputs: vec![Port::new("stats", "image-stats")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.dark_below) {
            return Err(format!("dark_below = {} is outside 0..=1", self.dark_below));
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let Some(Input::One(dir)) = job.inputs.get("views") else {
            anyhow::bail!("image-stats needs its `views` input");
        };
        let views = ViewSet::read(dir)?;
        let images = open_images(dir)?;
        let mut stats = Vec::new();
        for (index, view) in views.views.iter().enumerate() {
            let image = read_image(&images, index).with_context(|| format!("view {}", view.name))?;
            let plane = (image.width * image.height) as usize;
            let mean_rgb = [0, 1, 2].map(|c| {
                image.data[c * plane..(c + 1) * plane]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / plane as f64
            });
            let mean = mean_rgb.iter().sum::<f64>() / 3.0;
            stats.push(ViewStats {
                name: view.name.clone(),
                mean_rgb,
                too_dark: mean < self.dark_below,
            });
        }
        let out = job.out.join("stats");
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("stats.json"), serde_json::to_vec_pretty(&stats)?)?;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    lrf_flow::cli::main_with(|registry| {
        registry.register::<ImageStats>();
    })
}
