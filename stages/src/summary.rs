//! `summary` (global): the evaluations of several methods over every scene, as one table (`summary.md`, the
//! figures a paper's table would hold) and one JSON file. Each method is an input port named in `methods`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::bail;
use lrf_formats::atomic::write_atomic;
use lrf_formats::scene::Split;
use lrf_graph::{Input, Job, Port, Scope, Signature, StageKind};
use serde::{Deserialize, Serialize};

use crate::ResolvePaths;
use crate::artifacts::{output_dir, read_json, write_json};
use crate::evaluate::{Evaluation, METRICS_FILE, Scores};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Summary {
    /// Input port names, one per method, in table order (e.g. `[3dgs-vae, 3dgs-8]`).
    pub methods: Vec<String>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            methods: vec!["latent".into()],
        }
    }
}

impl ResolvePaths for Summary {}

/// One row of the table.
#[derive(Debug, Serialize)]
struct Row<'a> {
    method: &'a str,
    scene: &'a str,
    evaluation: Evaluation,
    /// Where the per-view images are.
    images: String,
}

impl StageKind for Summary {
    const KIND: &'static str = "summary";
    const VERSION: u32 = 1;

    fn signature(&self) -> Signature {
        Signature {
            scope: Scope::Global,
            inputs: self.methods.iter().map(|m| Port::new(m, "evaluation")).collect(),
            outputs: vec![Port::new("report", "report")],
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.methods.is_empty() {
            return Err("methods must name at least one input".into());
        }
        Ok(())
    }

    fn run(&self, job: &Job) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        for method in &self.methods {
            let Input::PerScene(scenes) = job.input(method)? else {
                bail!("summary input `{method}` must come from a per-scene evaluate stage");
            };
            let scenes: BTreeMap<_, _> = scenes.iter().collect();
            for (scene, dir) in scenes {
                rows.push(Row {
                    method,
                    scene,
                    evaluation: read_json(&dir.join(METRICS_FILE))?,
                    images: dir.display().to_string(),
                });
            }
        }
        let out = output_dir(job, "report")?;
        write_json(&out.join("summary.json"), &rows)?;
        write_atomic(&out.join("summary.md"), table(&rows).as_bytes())?;
        Ok(())
    }
}

fn table(rows: &[Row]) -> String {
    let fmt = |s: &Scores| format!("{:.2} | {:.4} | {}", s.psnr, s.ssim, s.lpips);
    let mut text = String::from(
        "# Test views\n\n| method | scene | views | PSNR | SSIM | LPIPS | autoencoder ceiling PSNR | SSIM | LPIPS | \
         Gaussians | fit s | s/iteration |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let e = &row.evaluation;
        let Some(test) = e.summary.iter().find(|s| s.split == Split::Test) else {
            continue;
        };
        let ceiling = test.reconstruction.as_ref().map_or("– | – | –".to_string(), fmt);
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.4} |",
            row.method,
            row.scene,
            test.views,
            fmt(&test.render),
            ceiling,
            e.gaussians,
            e.fit_seconds,
            e.fit_seconds_per_iteration
        );
    }
    text.push_str(
        "\nSide-by-side images (ground truth | render | autoencoder reconstruction | latent false colour):\n\n",
    );
    for row in rows {
        let _ = writeln!(text, "- {} / {}: {}", row.method, row.scene, row.images);
    }
    text
}
